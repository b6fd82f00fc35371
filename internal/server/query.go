package server

import (
	"context"
	"errors"
	"math"
	"runtime/debug"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/promql"
)

// buildInfo describes this binary for /api/v1/status/buildinfo.
func buildInfo() promql.BuildInfo {
	bi := promql.BuildInfo{Version: Version}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return bi
	}
	bi.GoVersion = info.GoVersion
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			bi.Revision = s.Value
		case "vcs.time":
			bi.BuildDate = s.Value
		}
	}
	return bi
}

// metadata lists the families the series store holds: those written by
// remote write and OTLP metrics, the proxy_* aggregates and the
// proxylens_* self-metrics.
func (s *Server) metadata() map[string][]promql.Metadata {
	out := map[string][]promql.Metadata{}
	for name, md := range s.store.Series().Metadata() {
		out[name] = []promql.Metadata{{Type: string(md.Type), Help: md.Help, Unit: md.Unit}}
	}
	for f := range otelanalytics.NumFamilies {
		typ, unit := f.Metadata()
		out[f.Name()] = []promql.Metadata{{Type: typ, Help: f.Help(), Unit: unit}}
	}
	out[otelanalytics.CostMetric] = []promql.Metadata{{Type: "counter", Help: "Usage cost of proxied requests, in the cost model's currency, by event time."}}
	out[otelanalytics.SubscriptionCostMetric] = []promql.Metadata{{Type: "gauge", Help: "Price of a source's subscription per billing period."}}
	out[otelanalytics.SubscriptionPeriodMetric] = []promql.Metadata{{Type: "gauge", Help: "Length of a source's subscription billing period.", Unit: "seconds"}}
	mfs, err := s.self.Gather()
	if err != nil {
		s.log.Warn("gather self-metrics for metadata", "err", err)
		return out
	}
	for _, mf := range mfs {
		out[mf.GetName()] = []promql.Metadata{{
			Type: strings.ToLower(mf.GetType().String()),
			Help: mf.GetHelp(),
			Unit: unitOf(mf.GetName()),
		}}
	}
	return out
}

// setMetadata records the metadata of written families.
func (s *Server) setMetadata(mds map[string]promql.Metadata) error {
	conv := make(map[string]metadata.Metadata, len(mds))
	for name, md := range mds {
		conv[name] = metadata.Metadata{Type: model.MetricType(md.Type), Help: md.Help, Unit: md.Unit}
	}
	return s.store.Series().SetMetadata(conv)
}

// otlpMetrics hands the OTLP receiver's metrics to the writer.
type otlpMetrics struct{ w *promql.Writer }

func (o otlpMetrics) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) (int64, string, error) {
	res, err := o.w.WriteOTLP(ctx, md)
	return res.Rejected, res.Message, err
}

// unitOf returns the unit a self-metric's name ends with, as Prometheus
// reads units from names.
func unitOf(name string) string {
	name = strings.TrimSuffix(name, "_total")
	for _, u := range []string{"seconds", "bytes"} {
		if strings.HasSuffix(name, "_"+u) {
			return u
		}
	}
	return ""
}

// recordSelfMetrics appends the proxylens_* self-metrics to the series
// store every flush interval, so that proxylens' health can be graphed from
// the same data source as the traffic, until ctx ends.
func (s *Server) recordSelfMetrics(ctx context.Context) {
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.appendSelfMetrics(ctx, s.opts.Now()); err != nil {
				s.log.Warn("store self-metrics", "err", err)
			}
		}
	}
}

// appendSelfMetrics appends one sample of every self-metric at now:
// counters and gauges as they are, histograms as classic _bucket, _sum and
// _count series.
func (s *Server) appendSelfMetrics(ctx context.Context, now time.Time) error {
	mfs, err := s.self.Gather()
	if err != nil {
		return err
	}
	ts := now.UnixMilli()
	app := s.store.Series().Appender(ctx)
	var b labels.ScratchBuilder
	add := func(name string, m *dto.Metric, v float64, extra ...string) error {
		b.Reset()
		b.Add(model.MetricNameLabel, name)
		for _, lp := range m.GetLabel() {
			b.Add(lp.GetName(), lp.GetValue())
		}
		for i := 0; i+1 < len(extra); i += 2 {
			b.Add(extra[i], extra[i+1])
		}
		b.Sort()
		_, err := app.Append(0, b.Labels(), ts, v)
		return err
	}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				err = add(name, m, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				err = add(name, m, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				err = add(name, m, m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				inf := false
				for _, bk := range h.GetBucket() {
					inf = math.IsInf(bk.GetUpperBound(), 1)
					if err = add(name+"_bucket", m, float64(bk.GetCumulativeCount()), model.BucketLabel, labels.FormatOpenMetricsFloat(bk.GetUpperBound())); err != nil {
						break
					}
				}
				if err == nil && !inf {
					err = add(name+"_bucket", m, float64(h.GetSampleCount()), model.BucketLabel, "+Inf")
				}
				if err == nil {
					err = add(name+"_sum", m, h.GetSampleSum())
				}
				if err == nil {
					err = add(name+"_count", m, float64(h.GetSampleCount()))
				}
			}
			if err != nil {
				_ = app.Rollback()
				return err
			}
		}
	}
	// The subscriptions' prices, so that PromQL can amortise them over
	// any range where proxylens ran, traffic or not.
	if book := s.costs.Book(); book != nil {
		err := book.SubscriptionSamples(ts, func(ls labels.Labels, v float64) error {
			_, err := app.Append(0, ls, ts, v)
			if errors.Is(err, storage.ErrDuplicateSampleForTimestamp) {
				return nil
			}
			return err
		})
		if err != nil {
			_ = app.Rollback()
			return err
		}
	}
	return app.Commit()
}
