package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// nestedJSON is an OTLP/JSON trace request with one span attribute whose
// value is arrays nested levels deep, the shape of the depth bomb of issue
// 17 (attack 5).
func nestedJSON(levels int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",` +
		`"spanId":"eee19b7ec3c1b174","name":"GET","attributes":[{"key":"deep","value":`)
	b.WriteString(strings.Repeat(`{"arrayValue":{"values":[`, levels))
	b.WriteString(`{"stringValue":"x"}`)
	b.WriteString(strings.Repeat(`]}}`, levels))
	b.WriteString(`}]}]}]}]}`)
	return b.Bytes()
}

// TestJSONDepthAndTrailingData sends the OTLP/JSON attacks of issue 17 to
// the real receiver: a gzip-compressed body of nested arrayValues (the
// issue's took 15 s and 1.25 GB to refuse) and a request object followed by
// more data. Both are refused with 400 and a message that says what was
// wrong; shallow nesting and trailing white space are accepted, and the
// receiver answers normally afterwards.
func TestJSONDepthAndTrailingData(t *testing.T) {
	s := startStack(t, Config{})
	deep := gzipped(t, nestedJSON(200_000))
	require.Less(t, len(deep), 200<<10, "a small compressed body")
	for name, c := range map[string]struct {
		encoding string
		body     []byte
		code     int
		msg      string
	}{
		"depth bomb":           {"gzip", deep, http.StatusBadRequest, "JSON nested more than 64 levels deep"},
		"just too deep":        {"", nestedJSON(19), http.StatusBadRequest, "JSON nested more than 64 levels deep"},
		"nested attributes":    {"", nestedJSON(18), http.StatusOK, ""},
		"trailing object":      {"", append(jsonBody(), `{"resourceSpans":[]}`...), http.StatusBadRequest, "trailing data after the request object"},
		"trailing garbage":     {"", append(jsonBody(), "x"...), http.StatusBadRequest, "trailing data after the request object"},
		"trailing white space": {"", append(jsonBody(), " \r\n\t"...), http.StatusOK, ""},
	} {
		t.Run(name, func(t *testing.T) {
			r := s.post(t, contentJSON, c.encoding, c.body)
			require.Equal(t, c.code, r.code, "body: %.200s", r.body)
			if c.msg != "" {
				require.Contains(t, decodeStatus(t, r).GetMessage(), c.msg)
			}
		})
	}
	r := s.post(t, contentJSON, "", jsonBody())
	require.Equal(t, http.StatusOK, r.code, "served afterwards: %s", r.body)
}

// jsonDepth is the nesting depth of one JSON value read by encoding/json,
// and whether anything but white space follows it.
func jsonDepth(data []byte) (depth int, trailing bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	cur := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return 0, false, err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			cur++
			depth = max(depth, cur)
		case json.Delim('}'), json.Delim(']'):
			cur--
		}
		if cur == 0 {
			break
		}
	}
	_, err = dec.Token()
	return depth, !errors.Is(err, io.EOF), nil
}

// FuzzDecodeJSON checks the OTLP/JSON path before protobuf: checkJSON
// refuses exactly the well-formed objects that nest deeper than
// maxJSONDepth or have data after them, and what it lets through parses
// (or is refused by pdata) without a panic, as traces and as metrics.
func FuzzDecodeJSON(f *testing.F) {
	f.Add(jsonBody())
	f.Add(nestedJSON(18))
	f.Add(nestedJSON(19))
	f.Add(append(jsonBody(), `{}`...))
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a\"}]]}"}]}]}]} `))
	f.Add([]byte(`{"a":"\\"}x`))
	f.Add([]byte(`{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeMetrics":[{"metrics":[{"name":"queue.depth","gauge":{"dataPoints":[{"asInt":"7","timeUnixNano":"1700000000000000000"}]}}]}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := checkJSON(data)
		if err != nil {
			require.ErrorIs(t, err, errMalformed)
		}
		if trimmed := bytes.TrimLeft(data, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '{' {
			if depth, trailing, jerr := jsonDepth(data); jerr == nil {
				require.Equal(t, depth > maxJSONDepth || trailing, err != nil, "depth %d, trailing %v: %v", depth, trailing, err)
			}
		}
		if err == nil {
			er := ptraceotlp.NewExportRequest()
			if er.UnmarshalJSON(data) == nil {
				_, err := er.MarshalProto()
				require.NoError(t, err)
			}
			// The metrics signal takes the same path, then converts.
			mr := pmetricotlp.NewExportRequest()
			if mr.UnmarshalJSON(data) == nil {
				convertOTLP(mr.Metrics(), ReservedName)
			}
		}
	})
}
