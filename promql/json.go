package promql

import (
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
)

// Query results are written as Prometheus' web API writes them (its
// jsonutil package): timestamps as seconds with up to three decimals,
// values as strings in the shortest exact form ('e' notation below 1e-6 and
// from 1e21), straight into one buffer. encoding/json would call each
// point's MarshalJSON, allocating several times per point: a day of
// one-minute points for a dozen series took most of a query's allocations.

// appendQueryData appends {"resultType":…,"result":…[,"stats":…]}.
func appendQueryData(b []byte, d queryData) ([]byte, error) {
	b = append(b, `{"resultType":"`...)
	b = append(b, d.ResultType...)
	b = append(b, `","result":`...)
	switch v := d.Result.(type) {
	case promql.Matrix:
		b = append(b, '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"metric":`...)
			b = appendLabels(b, s.Metric)
			if len(s.Floats) > 0 {
				b = append(b, `,"values":[`...)
				for j, p := range s.Floats {
					if j > 0 {
						b = append(b, ',')
					}
					b = appendFPoint(b, p.T, p.F)
				}
				b = append(b, ']')
			}
			if len(s.Histograms) > 0 {
				b = append(b, `,"histograms":[`...)
				for j, p := range s.Histograms {
					if j > 0 {
						b = append(b, ',')
					}
					var err error
					if b, err = appendHPoint(b, p); err != nil {
						return nil, err
					}
				}
				b = append(b, ']')
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	case promql.Vector:
		b = append(b, '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"metric":`...)
			b = appendLabels(b, s.Metric)
			if s.H == nil {
				b = append(b, `,"value":`...)
				b = appendFPoint(b, s.T, s.F)
			} else {
				b = append(b, `,"histogram":`...)
				var err error
				if b, err = appendHPoint(b, promql.HPoint{T: s.T, H: s.H}); err != nil {
					return nil, err
				}
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	case promql.Scalar:
		b = appendFPoint(b, v.T, v.V)
	case promql.String:
		b = append(b, '[')
		b = appendTimestamp(b, v.T)
		b = append(b, ',')
		b = appendString(b, v.V)
		b = append(b, ']')
	default:
		raw, err := json.Marshal(d.Result)
		if err != nil {
			return nil, err
		}
		b = append(b, raw...)
	}
	if d.Stats != nil {
		raw, err := json.Marshal(d.Stats)
		if err != nil {
			return nil, err
		}
		b = append(b, `,"stats":`...)
		b = append(b, raw...)
	}
	return append(b, '}'), nil
}

func appendFPoint(b []byte, t int64, f float64) []byte {
	b = append(b, '[')
	b = appendTimestamp(b, t)
	b = append(b, ',', '"')
	b = appendFloat(b, f)
	return append(b, '"', ']')
}

// appendTimestamp writes milliseconds as seconds, as Prometheus does.
func appendTimestamp(b []byte, t int64) []byte {
	if t < 0 {
		b = append(b, '-')
		t = -t
	}
	b = strconv.AppendInt(b, t/1000, 10)
	if frac := t % 1000; frac != 0 {
		b = append(b, '.')
		if frac < 100 {
			b = append(b, '0')
		}
		if frac < 10 {
			b = append(b, '0')
		}
		b = strconv.AppendInt(b, frac, 10)
	}
	return b
}

// appendFloat writes a value as Prometheus does (without the quotes).
func appendFloat(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, 1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64)
}

func appendLabels(b []byte, ls labels.Labels) []byte {
	b = append(b, '{')
	first := true
	ls.Range(func(l labels.Label) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, l.Name)
		b = append(b, ':')
		b = appendString(b, l.Value)
	})
	return append(b, '}')
}

// appendString writes s as a JSON string, escaped as encoding/json escapes.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= utf8.RuneSelf {
			raw, _ := json.Marshal(s)
			return append(b, raw...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendHPoint writes a histogram point as Prometheus' API does.
func appendHPoint(b []byte, p promql.HPoint) ([]byte, error) {
	b = append(b, '[')
	b = appendTimestamp(b, p.T)
	b = append(b, `,{"count":"`...)
	b = appendFloat(b, p.H.Count)
	b = append(b, `","sum":"`...)
	b = appendFloat(b, p.H.Sum)
	b = append(b, '"')
	first := true
	it := p.H.AllBucketIterator()
	for it.Next() {
		bk := it.At()
		if bk.Count == 0 {
			continue
		}
		if first {
			b = append(b, `,"buckets":[`...)
		} else {
			b = append(b, ',')
		}
		first = false
		boundaries := 2 // open interval
		switch {
		case bk.LowerInclusive && bk.UpperInclusive:
			boundaries = 3
		case bk.LowerInclusive:
			boundaries = 1
		case bk.UpperInclusive:
			boundaries = 0
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(boundaries), 10)
		b = append(b, ',', '"')
		b = appendFloat(b, bk.Lower)
		b = append(b, '"', ',', '"')
		b = appendFloat(b, bk.Upper)
		b = append(b, '"', ',', '"')
		b = appendFloat(b, bk.Count)
		b = append(b, '"', ']')
	}
	if !first {
		b = append(b, ']')
	}
	return append(b, '}', ']'), nil
}
