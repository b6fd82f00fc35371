package otelanalytics

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// FuzzDecodeCostModelsJSON: the admin API's cost models body. Anything
// either decodes to models that pass Validate and survive a JSON round
// trip, or is refused with an error; nothing panics.
func FuzzDecodeCostModelsJSON(f *testing.F) {
	for _, s := range []string{
		`[]`, `null`, `[{}]`, `{}`, `[1]`, `[] []`, `[`,
		`[{"source":"brightdata","model":"hybrid","currency":"eur","from":"2026-01-01T00:00:00Z","per_request":0.001,"per_gb":8.4,"subscription":50,"period":"month"}]`,
		`[{"source":"free","model":"per_request","from":"2026-01-01T00:00:00Z","per_request":0,"until":null}]`,
		`[{"source":"a","model":"data_transfer","from":"2026-01-01T00:00:00Z","until":"2026-02-01T00:00:00Z","per_gb":1}]`,
		`[{"source":"a","model":"subscription","from":"2026-01-01T00:00:00Z","subscription":5,"period":"720h"}]`,
		`[{"source":"a","model":"per_request","from":"2026-01-01T00:00:00Z","per_request":-1}]`,
		`[{"source":"a","model":"per_request","from":"2026-01-01T00:00:00Z","per_request":1e999}]`,
		`[{"source":"a","model":"per_request","from":"yesterday","per_request":1}]`,
		`[{"source":"a","model":"per_request","from":"2026-01-01T00:00:00Z","per_request":1,"nope":1}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		models, err := DecodeCostModelsJSON(bytes.NewReader(b))
		if err != nil {
			if models != nil {
				t.Fatalf("models with an error: %v", err)
			}
			return
		}
		if err := ValidateCostModels(models); err != nil {
			t.Fatalf("decoded models do not validate: %v", err)
		}
		again, err := json.Marshal(models)
		if err != nil {
			t.Fatalf("marshal %+v: %v", models, err)
		}
		if _, err := DecodeCostModelsJSON(bytes.NewReader(again)); err != nil {
			t.Fatalf("%s decoded, its re-encoding %s does not: %v", b, again, err)
		}
	})
}

// FuzzAdjustedCount: a span's W3C tracestate is client input. Any gives a
// count of at least 1 that is finite.
func FuzzAdjustedCount(f *testing.F) {
	for _, s := range []string{"", "ot=th:8", "ot=th:c;rv:abcdef01234567", "vendor=x, ot=th:fffffffffffff", "ot=th:", "ot=th:0", "ot=th:G", "ot=th:ffffffffffffff", "ot=;;th:1", strings.Repeat("a=b,", 40) + "ot=th:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ts string) {
		n := AdjustedCount(ts)
		if !(n >= 1) || math.IsInf(n, 0) {
			t.Fatalf("AdjustedCount(%q) = %v", ts, n)
		}
	})
}

// FuzzDecodeTotals: the totals keys and float vectors the store hands back
// at start (from disk, or a restored backup). What decodes re-encodes to
// the same bytes.
func FuzzDecodeTotals(f *testing.F) {
	f.Add(appendTotalsKey(nil, FamilyRequests, &SeriesKey{Source: 1, Domain: 7, StatusCode: 200, Method: MethodGet, Success: true}))
	f.Add(appendFloats(nil, []float64{1, 2.5, math.Inf(1)}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if fam, k, err := decodeTotalsKey(b); err == nil {
			if again := appendTotalsKey(nil, fam, &k); !bytes.Equal(again, b) {
				t.Fatalf("totals key %x decodes to %v %+v, which encodes to %x", b, fam, k, again)
			}
		}
		if vs, err := decodeFloats(b, nil); err == nil {
			if again := appendFloats(nil, vs); !bytes.Equal(again, b) {
				t.Fatalf("floats %x re-encode to %x", b, again)
			}
		}
	})
}
