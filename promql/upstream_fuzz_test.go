package promql

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeUpstreamValue: in proxy mode the data of a query answer comes
// from the upstream. Any bytes decode to a value or an error, without a
// panic.
func FuzzDecodeUpstreamValue(f *testing.F) {
	for _, s := range []string{
		`{"resultType":"vector","result":[{"metric":{"__name__":"up"},"value":[1700000000.5,"1"]}]}`,
		`{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1,"1"],[2,"NaN"]]}]}`,
		`{"resultType":"scalar","result":[1,"2"]}`,
		`{"resultType":"string","result":[1,"x"]}`,
		`{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"1","sum":"1"}]}]}`,
		`{"resultType":"nope"}`, `null`, `[]`, `{"resultType":"matrix","result":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeValue(json.RawMessage(b))
		if err == nil && v == nil {
			t.Fatalf("decodeValue(%s): no value and no error", b)
		}
	})
}
