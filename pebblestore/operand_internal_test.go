package pebblestore

import (
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/require"
)

// TestOperandEncoder: the reused chunk gives the bytes encodeSamples
// gives, for float samples and for those it leaves to encodeSamples.
func TestOperandEncoder(t *testing.T) {
	floats := func(n int, from int64) []sample {
		out := make([]sample, n)
		for i := range out {
			out[i] = sample{t: from + int64(i)*60_000, f: float64(i * i)}
		}
		return out
	}
	odd := []sample{{t: 1, f: math.NaN()}, {t: 2, f: math.Float64frombits(value.StaleNaN)}, {t: 3, f: math.Inf(1)}, {t: 4, f: -1e300}}
	cases := map[string][]sample{
		"one":        floats(1, 0),
		"twenty":     floats(20, 1_795_000_000_000),
		"long":       floats(500, -5_000_000),
		"odd values": odd,
		"with st":    {{st: 5, t: 10, f: 1}, {t: 20, f: 2}},
		"histogram":  {{t: 10, f: 1}, {t: 20, h: &histogram.Histogram{Count: 1, ZeroCount: 1}}},
	}
	var e operandEncoder
	for _, round := range []int{1, 2} { // the second round reuses the chunk
		for name, samples := range cases {
			want, err := encodeSamples(samples)
			require.NoError(t, err)
			got, err := e.encode(samples)
			require.NoError(t, err)
			require.Equal(t, appendWindow(nil, want.chunks), appendWindow(nil, got), "%s, round %d", name, round)
		}
	}
}
