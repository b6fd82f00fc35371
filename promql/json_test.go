package promql

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
)

// TestQueryJSON: results are written as Prometheus' API writes them, and
// read back by client_golang's model types.
func TestQueryJSON(t *testing.T) {
	m := promql.Matrix{
		{Metric: labels.FromStrings("__name__", "a", "q", `x"<y>&\`, "u", "ü"), Floats: []promql.FPoint{
			{T: 1500, F: 1}, {T: 2050, F: math.NaN()}, {T: 3007, F: math.Inf(1)}, {T: 4000, F: math.Inf(-1)},
			{T: -1250, F: 1e-7}, {T: 0, F: 1e21}, {T: 123456789, F: -0.000001}, {T: 5, F: 123456.789},
		}},
		{Metric: labels.EmptyLabels(), Histograms: []promql.HPoint{{T: 1000, H: (&histogram.Histogram{
			Count: 3, Sum: 4.5, ZeroThreshold: 0.001, ZeroCount: 1, Schema: 0,
			PositiveSpans: []histogram.Span{{Offset: 1, Length: 1}}, PositiveBuckets: []int64{2},
		}).ToFloat(nil)}}},
	}
	b, err := appendQueryData(nil, queryData{ResultType: parser.ValueTypeMatrix, Result: m})
	require.NoError(t, err)
	require.JSONEq(t, `{"resultType":"matrix","result":[
		{"metric":{"__name__":"a","q":"x\"\u003cy\u003e\u0026\\","u":"ü"},"values":[
			[1.500,"1"],[2.050,"NaN"],[3.007,"+Inf"],[4,"-Inf"],[-1.250,"1e-07"],[0,"1e+21"],[123456.789,"-0.000001"],[0.005,"123456.789"]]},
		{"metric":{},"histograms":[[1,{"count":"3","sum":"4.5","buckets":[[3,"-0.001","0.001","1"],[0,"1","2","2"]]}]]}]}`, string(b))
	require.Contains(t, string(b), `[1.500,"1"]`, "three decimals, as Prometheus writes them")
	require.Contains(t, string(b), `[0.005,"123456.789"]`)

	var got struct {
		Result model.Matrix `json:"result"`
	}
	require.NoError(t, json.Unmarshal(b, &got))
	require.Equal(t, model.Time(3007), got.Result[0].Values[2].Timestamp)
	require.Equal(t, model.SampleValue(1e-7), got.Result[0].Values[4].Value)
	require.Equal(t, model.FloatString(3), got.Result[1].Histograms[0].Histogram.Count)

	v := promql.Vector{{Metric: labels.FromStrings("a", "b"), T: 10, F: 2}}
	b, err = appendQueryData(nil, queryData{ResultType: parser.ValueTypeVector, Result: v})
	require.NoError(t, err)
	require.JSONEq(t, `{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[0.010,"2"]}]}`, string(b))
	b, err = appendQueryData(nil, queryData{ResultType: parser.ValueTypeString, Result: promql.String{T: 1000, V: "hi"}})
	require.NoError(t, err)
	require.JSONEq(t, `{"resultType":"string","result":[1,"hi"]}`, string(b))
}
