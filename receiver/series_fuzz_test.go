package receiver

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// FuzzConvertOTLP: any request that decodes converts without panicking,
// and every sample it yields has a metric name.
func FuzzConvertOTLP(f *testing.F) {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "svc")
	rm.Resource().Attributes().PutStr("host.name", "h")
	ms := rm.ScopeMetrics().AppendEmpty().Metrics()
	g := ms.AppendEmpty()
	g.SetName("a.b")
	g.SetEmptyGauge().DataPoints().AppendEmpty().SetIntValue(3)
	h := ms.AppendEmpty()
	h.SetName("lat")
	h.SetUnit("ms")
	hp := h.SetEmptyHistogram().DataPoints().AppendEmpty()
	hp.ExplicitBounds().FromRaw([]float64{1, 2})
	hp.BucketCounts().FromRaw([]uint64{1, 2, 3})
	hp.SetCount(6)
	hp.SetTimestamp(pcommon.Timestamp(1e18))
	e := ms.AppendEmpty()
	e.SetName("exp")
	ep := e.SetEmptyExponentialHistogram().DataPoints().AppendEmpty()
	ep.SetScale(30)
	ep.Positive().BucketCounts().FromRaw([]uint64{1, 0, 0, 0, 4})
	ep.SetCount(5)
	s := ms.AppendEmpty()
	s.SetName("sum")
	sp := s.SetEmptySummary().DataPoints().AppendEmpty()
	sp.QuantileValues().AppendEmpty().SetQuantile(0.5)
	b, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		req := pmetricotlp.NewExportRequest()
		if req.UnmarshalProto(data) != nil {
			return
		}
		conv := convertOTLP(req.Metrics())
		for _, s := range conv.samples {
			if s.ls.Get("__name__") == "" {
				t.Fatalf("sample without a name: %s", s.ls)
			}
		}
	})
}

// FuzzRemoteWrite: any decodable write request is appended or refused
// without panicking, against a real store.
func FuzzRemoteWrite(f *testing.F) {
	req := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:     []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}},
		Samples:    []prompb.Sample{{Value: 1, Timestamp: 1}, {Value: 2, Timestamp: 0}},
		Histograms: []prompb.Histogram{prompb.FromIntHistogram(5, &histogram.Histogram{Count: 1, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []int64{1}})},
	}}}
	b, err := req.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	db, err := pebblestore.Open(f.TempDir(), pebblestore.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	if _, err := otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Second, nil)); err != nil {
		f.Fatal(err)
	}
	w := NewSeriesWriter(db.Series(), SeriesWriterOptions{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req prompb.WriteRequest
		if req.Unmarshal(data) != nil {
			return
		}
		app := db.Series().AppenderV2(context.Background())
		if _, err := w.appendRemoteWrite(app, &req, time.Now().Add(maxAhead).UnixMilli()); err == nil {
			_ = app.Commit()
		} else {
			_ = app.Rollback()
		}
	})
}
