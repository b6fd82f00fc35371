package otelanalytics

import "strings"

// maxThreshold is 2^56, the size of the OpenTelemetry sampling randomness
// space.
const maxThreshold = 1 << 56

// AdjustedCount returns how many spans a span stands for after sampling
// upstream of proxylens, from the OpenTelemetry rejection threshold in its
// W3C tracestate (`ot=th:<hex>`): 2^56 / (2^56 − th). A tracestate without a
// valid threshold gives 1.
func AdjustedCount(tracestate string) float64 {
	th, ok := threshold(tracestate)
	if !ok || th == 0 {
		return 1
	}
	return float64(maxThreshold) / float64(maxThreshold-th)
}

// threshold extracts th from the "ot" member of a tracestate. th is 1 to 14
// lower-case hex digits with trailing zeros omitted.
func threshold(ts string) (uint64, bool) {
	for ts != "" {
		var member string
		if i := strings.IndexByte(ts, ','); i >= 0 {
			member, ts = ts[:i], ts[i+1:]
		} else {
			member, ts = ts, ""
		}
		member = strings.TrimLeft(member, " \t")
		if !strings.HasPrefix(member, "ot=") {
			continue
		}
		for rest := strings.TrimRight(member[3:], " \t"); rest != ""; {
			var kv string
			kv, rest, _ = strings.Cut(rest, ";")
			if hex, ok := strings.CutPrefix(kv, "th:"); ok {
				return parseThreshold(hex)
			}
		}
		return 0, false
	}
	return 0, false
}

func parseThreshold(hex string) (uint64, bool) {
	if len(hex) == 0 || len(hex) > 14 {
		return 0, false
	}
	var t uint64
	for i := 0; i < 14; i++ {
		var d byte
		if i < len(hex) {
			c := hex[i]
			switch {
			case '0' <= c && c <= '9':
				d = c - '0'
			case 'a' <= c && c <= 'f':
				d = c - 'a' + 10
			default:
				return 0, false
			}
		}
		t = t<<4 | uint64(d)
	}
	return t, true
}
