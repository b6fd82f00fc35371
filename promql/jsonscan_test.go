package promql

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// members decodes a JSON object into its members, keys compared
// exactly (encoding/json's struct decoding ignores case); ok is false
// if it is not an object or a key repeats (which member counts is then
// a matter of taste).
func members(b []byte) (map[string]json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		k, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		if _, dup := out[k]; dup {
			return nil, false
		}
		out[k] = v
	}
	return out, json.Valid(b)
}

// refStatusCount is what answerStatus and answerCount must agree with on
// valid JSON: encoding/json's reading of the envelope.
func refStatusCount(b []byte) (status string, count int, ok bool) {
	env, ok := members(b)
	if !ok || env["status"] == nil || json.Unmarshal(env["status"], &status) != nil {
		return "", 0, false
	}
	count = -1
	d := bytes.TrimSpace(env["data"])
	var list []json.RawMessage
	switch {
	case len(d) == 0:
	case d[0] == '[':
		if json.Unmarshal(d, &list) == nil {
			count = len(list)
		}
	case d[0] == '{':
		qd, ok := members(d)
		if !ok {
			return "", 0, false
		}
		var rt string
		if json.Unmarshal(qd["resultType"], &rt) != nil {
			count = len(qd) // metadata
			break
		}
		switch rt {
		case "matrix", "vector":
			r := bytes.TrimSpace(qd["result"])
			if json.Unmarshal(r, &list) == nil {
				count = len(list)
			} else if m, ok := members(r); ok {
				count = len(m)
			} else if len(r) > 0 && r[0] == '{' {
				return "", 0, false
			}
		default:
			count = 1
		}
	}
	return status, count, true
}

var scanSeeds = []string{
	`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[4,"2"]}]},"stats":{"seriesFetched": "0"}}`,
	`{"status":"success","isPartial":false,"data":{"resultType":"matrix","result":[{"metric":{"a":"x\"]"},"values":[[1,"1"],[2,"2"]]},{"metric":{},"values":[]}]}}`,
	`{"status":"success","data":{"resultType":"scalar","result":[4,"2"]}}`,
	`{"status":"success","data":{"resultType":"string","result":[4,"x"]}}`,
	`{"status":"success","data":[]}`,
	`{"status":"success","data":["a","b\\","c,]"]}`,
	`{"status":"success","data":[{"__name__":"up"},{"__name__":"x"}]}`,
	`{"status":"success","data":{}}`,
	`{"status":"success","data":{"up":[{"type":"gauge"}],"x":[]}}`,
	`{"data":["a"], "status" : "success"}`,
	` { "status" : "error" , "errorType":"bad_data","error":"x"}`,
	`{"status":"error","errorType":"422","error":"cannot evaluate"}`,
	`{"status":"succ\u0065ss","data":[]}`,
	`<html>502 Bad Gateway</html>`,
	`{"status":"success","data":[1,2`,
	`{"status":`,
	``,
	`[]`,
}

// TestAnswerScan: the scan reads status and count as encoding/json does.
func TestAnswerScan(t *testing.T) {
	for _, s := range scanSeeds {
		checkScan(t, []byte(s))
	}
	require.Equal(t, 2, answerCount([]byte(scanSeeds[1])))
	require.Equal(t, 3, answerCount([]byte(scanSeeds[5])))
	require.Equal(t, 2, answerCount([]byte(scanSeeds[8])))
	require.Equal(t, 1, answerCount([]byte(scanSeeds[9])))
}

func checkScan(t *testing.T, b []byte) {
	t.Helper()
	status, count, ok := refStatusCount(b)
	got, gotOK := answerStatus(b)
	if gotOK && ok {
		// The scan may give up (escapes), never disagree. On invalid JSON
		// it may still find a status: the answer is then passed on as the
		// upstream wrote it, and Exec's decoding reports the error.
		require.Equal(t, status, got, "%q", b)
	}
	if ok && gotOK && got == "success" {
		require.Equal(t, count, answerCount(b), "%q", b)
	}
}

// FuzzAnswerScan: on any bytes the scan does not panic, and on valid
// JSON it agrees with encoding/json.
func FuzzAnswerScan(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkScan(t, b)
	})
}
