package otelanalytics

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAdjustedCount(t *testing.T) {
	for _, tc := range []struct {
		name, ts string
		want     float64
	}{
		// No threshold: the span stands for itself.
		{name: "empty", ts: "", want: 1},
		{name: "other vendor only", ts: "vendor=x", want: 1},
		{name: "ot without th", ts: "ot=rv:abcdef", want: 1},
		{name: "empty ot", ts: "ot=", want: 1},
		{name: "th zero", ts: "ot=th:0", want: 1},
		{name: "th all zeros", ts: "ot=th:00000000000000", want: 1},

		// Thresholds: 2^56 / (2^56 - th).
		{name: "half", ts: "ot=th:8", want: 2},
		{name: "quarter", ts: "ot=th:c", want: 4},
		{name: "eighth", ts: "ot=th:e", want: 8},
		{name: "sixteenth", ts: "ot=th:f", want: 16},
		{name: "th with trailing zeros", ts: "ot=th:80000000000000", want: 2},
		{name: "th of 4", ts: "ot=th:4", want: 4.0 / 3},
		{name: "two digits", ts: "ot=th:fc", want: 64},
		{name: "14 digits", ts: "ot=th:ffffffffffffff", want: 1 << 56},
		{name: "rv before th", ts: "ot=rv:abcdef;th:e", want: 8},
		{name: "th before rv", ts: "ot=th:e;rv:abcdef", want: 8},
		{name: "other ot keys", ts: "ot=p:8;th:8;x:y", want: 2},

		// Other members of the tracestate.
		{name: "vendor before", ts: "vendor=x,ot=th:8", want: 2},
		{name: "vendor after", ts: "ot=th:8,vendor=x", want: 2},
		{name: "vendors around", ts: "a=1,b=th:8,ot=th:c,rojo=00f067aa0ba902b7", want: 4},
		{name: "vendor key ending in ot", ts: "xot=th:8", want: 1},
		{name: "vendor value with th", ts: "vendor=th:8", want: 1},
		{name: "tenant key", ts: "t@ot=th:8", want: 1},
		{name: "first ot member wins", ts: "ot=th:8,ot=th:c", want: 2},
		{name: "first ot member without th", ts: "ot=rv:01,ot=th:c", want: 1},
		{name: "empty members", ts: ",,ot=th:8,", want: 2},

		// Optional whitespace around members.
		{name: "space after comma", ts: "vendor=x, ot=th:8", want: 2},
		{name: "tab after comma", ts: "vendor=x,\tot=th:8", want: 2},
		{name: "space before comma", ts: "ot=th:8 ,vendor=x", want: 2},
		{name: "leading and trailing", ts: "  ot=th:c\t ", want: 4},
		{name: "space after last sub-key", ts: "ot=rv:01;th:e ", want: 8},

		// Invalid thresholds.
		{name: "empty th", ts: "ot=th:", want: 1},
		{name: "invalid hex", ts: "ot=th:g", want: 1},
		{name: "upper-case hex", ts: "ot=th:C", want: 1},
		{name: "sign", ts: "ot=th:-8", want: 1},
		{name: "hex prefix", ts: "ot=th:0x8", want: 1},
		{name: "15 digits", ts: "ot=th:800000000000000", want: 1},
		{name: "space inside", ts: "ot=th: 8", want: 1},
		{name: "space before sub-key separator", ts: "ot=th:8 ;rv:01", want: 1},
		{name: "space around equals", ts: "ot = th:8", want: 1},
		{name: "upper-case key", ts: "OT=th:8", want: 1},
		{name: "upper-case sub-key", ts: "ot=TH:8", want: 1},
		{name: "th without colon", ts: "ot=th8", want: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, AdjustedCount(tc.ts), "AdjustedCount(%q)", tc.ts)
		})
	}
}

func TestAdjustedCountOneThird(t *testing.T) {
	// th = (2^56-1)/3 keeps two spans in three: each stands for 1.5.
	got := AdjustedCount("ot=th:55555555555555")
	require.InDelta(t, 1.5, got, 1e-12)
	require.Greater(t, got, 1.0)

	// Rounded to fewer digits, as samplers may write it.
	require.InDelta(t, 1.5, AdjustedCount("ot=th:5555"), 1e-4)
	require.InDelta(t, 1.5, AdjustedCount("ot=th:555555555555"), 1e-12)
}

func TestAdjustedCountIsFiniteAndAtLeastOne(t *testing.T) {
	for _, ts := range []string{"ot=th:1", "ot=th:00000000000001", "ot=th:fffffffffffffe", "ot=th:ffffffffffffff"} {
		got := AdjustedCount(ts)
		require.False(t, math.IsInf(got, 0) || math.IsNaN(got), "AdjustedCount(%q) = %v", ts, got)
		require.GreaterOrEqual(t, got, 1.0, "AdjustedCount(%q)", ts)
	}
	require.Equal(t, float64(1<<55), AdjustedCount("ot=th:fffffffffffffe"))
}

func TestParseThreshold(t *testing.T) {
	for _, tc := range []struct {
		hex    string
		want   uint64
		wantOK bool
	}{
		{hex: "0", want: 0, wantOK: true},
		{hex: "8", want: 1 << 55, wantOK: true},
		{hex: "c", want: 3 << 54, wantOK: true},
		{hex: "1", want: 1 << 52, wantOK: true},
		{hex: "01", want: 1 << 48, wantOK: true},
		{hex: "abcdef", want: 0xabcdef << 32, wantOK: true},
		{hex: "0123456789abcd", want: 0x0123456789abcd, wantOK: true},
		{hex: "ffffffffffffff", want: 1<<56 - 1, wantOK: true},
		{hex: "00000000000001", want: 1, wantOK: true},
		{hex: ""},
		{hex: "fffffffffffffff"},
		{hex: "000000000000000"},
		{hex: "A"},
		{hex: "g"},
		{hex: "8 "},
		{hex: "8;"},
		{hex: "\xff"},
	} {
		t.Run(tc.hex, func(t *testing.T) {
			got, ok := parseThreshold(tc.hex)
			require.Equal(t, tc.wantOK, ok)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestThreshold(t *testing.T) {
	for _, tc := range []struct {
		ts     string
		want   uint64
		wantOK bool
	}{
		{ts: "ot=th:8", want: 1 << 55, wantOK: true},
		{ts: "ot=th:0", want: 0, wantOK: true},
		{ts: "a=b, ot=rv:00;th:4", want: 1 << 54, wantOK: true},
		{ts: ""},
		{ts: "ot="},
		{ts: "ot=rv:0"},
		{ts: "a=b"},
		{ts: "ot=th:x"},
	} {
		t.Run(tc.ts, func(t *testing.T) {
			got, ok := threshold(tc.ts)
			require.Equal(t, tc.wantOK, ok)
			require.Equal(t, tc.want, got)
		})
	}
}
