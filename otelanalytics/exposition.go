package otelanalytics

import (
	"context"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/metadata"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// OverflowLabel marks the overflow series of a family, as the OpenTelemetry
// SDK marks its own.
const OverflowLabel = "otel_metric_overflow"

var familyLabels = [NumFamilies][]string{
	FamilyRequests: {"source", "tier", "application", "domain", "method", "status_code", "outcome", "error_type"},
	FamilyDuration: {"source", "tier", "application", "outcome"},
	FamilyTransfer: {"source", "application"},
	FamilyEndpoint: {"source", "proxy", "outcome"},
	FamilyAdjusted: {"source"},
}

var familyHelp = [NumFamilies]string{
	FamilyRequests: "Proxied requests, weighted by upstream sampling, by source, tier, application, target domain, method, status code, outcome and error type.",
	FamilyDuration: "Duration of proxied requests in seconds, by source, tier, application and outcome.",
	FamilyTransfer: "Bytes sent and received through proxies, by source, application and direction.",
	FamilyEndpoint: "Proxied requests by source, individual proxy (host:port) and outcome.",
	FamilyAdjusted: "Proxied requests counted with an upstream sampler's adjusted count (a weight other than 1), by source: where they are, counts are estimates.",
}

var familyUnit = [NumFamilies]string{
	FamilyRequests: "{request}",
	FamilyDuration: "s",
	FamilyTransfer: "By",
	FamilyEndpoint: "{request}",
	FamilyAdjusted: "{request}",
}

// Labels returns the label names of family f, in the order LabelValues
// gives the values.
func (f Family) Labels() []string { return familyLabels[f] }

// Metadata returns the family's type and unit as Prometheus' metadata
// API names them: "counter" or "histogram", and "seconds", "bytes" or "".
func (f Family) Metadata() (typ, unit string) {
	switch f {
	case FamilyDuration:
		return "histogram", "seconds"
	case FamilyTransfer:
		return "counter", "bytes"
	}
	return "counter", ""
}

// Help returns the family's help text.
func (f Family) Help() string { return familyHelp[f] }

// Metadata describes every metric family this package writes to the
// series store, for the query API's /api/v1/metadata: the proxy_*
// aggregates and the cost series.
func Metadata() map[string]metadata.Metadata {
	out := map[string]metadata.Metadata{}
	for f := range NumFamilies {
		typ, unit := f.Metadata()
		out[f.Name()] = metadata.Metadata{Type: model.MetricType(typ), Help: f.Help(), Unit: unit}
	}
	out[CostMetric] = metadata.Metadata{Type: model.MetricTypeCounter, Help: "Usage cost of proxied requests, in the cost model's currency, by event time."}
	out[AllocatedCostMetric] = metadata.Metadata{Type: model.MetricTypeCounter, Help: "All spend, usage and subscriptions, allocated to applications, in the cost model's currency, by event time."}
	out[SubscriptionCostMetric] = metadata.Metadata{Type: model.MetricTypeGauge, Help: "Price of a source's subscription per billing period."}
	out[SubscriptionPeriodMetric] = metadata.Metadata{Type: model.MetricTypeGauge, Help: "Length of a source's subscription billing period.", Unit: "seconds"}
	out[BudgetMetric] = metadata.Metadata{Type: model.MetricTypeGauge, Help: "A source's budget, all spend counted, per budget period."}
	out[BudgetPeriodMetric] = metadata.Metadata{Type: model.MetricTypeGauge, Help: "Length of a source's budget period.", Unit: "seconds"}
	return out
}

// LabelValues resolves the values of k's labels, in Labels order. The
// overflow key has no labels but OverflowLabel.
func (f Family) LabelValues(k SeriesKey, d *Dict) []string {
	var ids Refs
	ids[RefSource], ids[RefTier], ids[RefProxy] = k.Source, k.Tier, k.Proxy
	ids[RefApplication], ids[RefDomain], ids[RefErrorType] = k.Application, k.Domain, k.ErrorType
	var s [NumRefs]string
	d.Strings(&ids, &s)
	outcome := OutcomeFailure
	if k.Success {
		outcome = OutcomeSuccess
	}
	switch f {
	case FamilyRequests:
		status := ""
		if k.StatusCode != 0 {
			status = statusText(k.StatusCode)
		}
		return []string{s[RefSource], s[RefTier], s[RefApplication], s[RefDomain], k.Method.String(), status, outcome, s[RefErrorType]}
	case FamilyDuration:
		return []string{s[RefSource], s[RefTier], s[RefApplication], outcome}
	case FamilyTransfer:
		return []string{s[RefSource], s[RefApplication]}
	case FamilyAdjusted:
		return []string{s[RefSource]}
	default:
		return []string{s[RefSource], s[RefProxy], outcome}
	}
}

// Collector exposes the aggregates to client_golang as the proxy_* metric
// families. It is an unchecked collector: the series are only known when
// collected.
type Collector struct {
	agg  *Aggregator
	dict *Dict
}

// NewCollector returns a collector of agg's aggregates.
func NewCollector(agg *Aggregator, dict *Dict) *Collector { return &Collector{agg: agg, dict: dict} }

// Describe implements prometheus.Collector; it describes nothing, which
// makes the collector unchecked.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	overflowLabels := []string{OverflowLabel}
	for f := range NumFamilies {
		keys, totals := c.agg.Snapshot(f)
		if len(keys) == 0 {
			continue
		}
		w := f.Width()
		var desc, overDesc *prometheus.Desc
		switch f {
		case FamilyDuration:
			desc = prometheus.NewDesc(f.Name(), f.Help(), f.Labels(), nil)
			overDesc = prometheus.NewDesc(f.Name(), f.Help(), overflowLabels, nil)
		case FamilyTransfer:
			desc = prometheus.NewDesc(f.Name(), f.Help(), append(f.Labels(), "direction"), nil)
			overDesc = prometheus.NewDesc(f.Name(), f.Help(), []string{"direction", OverflowLabel}, nil)
		default:
			desc = prometheus.NewDesc(f.Name(), f.Help(), f.Labels(), nil)
			overDesc = prometheus.NewDesc(f.Name(), f.Help(), overflowLabels, nil)
		}
		for i, k := range keys {
			v := totals[i*w : (i+1)*w]
			d, lv := desc, []string(nil)
			if k.Overflow {
				d, lv = overDesc, nil
			} else {
				lv = f.LabelValues(k, c.dict)
			}
			switch f {
			case FamilyDuration:
				if k.Overflow {
					lv = []string{"true"}
				}
				ch <- newHistogram(d, v, lv)
			case FamilyTransfer:
				for dir, name := range [2]string{"sent", "received"} {
					if k.Overflow {
						ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v[dir], name, "true")
					} else {
						ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v[dir], append(lv, name)...)
					}
				}
			default:
				if k.Overflow {
					lv = []string{"true"}
				}
				ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v[0], lv...)
			}
		}
	}
}

// cumulativeCounts rounds the cumulative bucket counts of a duration series
// to whole numbers (upstream sampling can make them fractional, which
// OpenMetrics 1.0 and OTLP cannot carry); rounding keeps them monotonic.
func cumulativeCounts(v []float64) []uint64 {
	out := make([]uint64, durationBuckets)
	var cum float64
	for i := range durationBuckets {
		cum += v[i]
		out[i] = uint64(math.Round(cum))
	}
	return out
}

func newHistogram(d *prometheus.Desc, v []float64, lv []string) prometheus.Metric {
	cum := cumulativeCounts(v)
	buckets := make(map[float64]uint64, len(DurationBuckets))
	for i, ub := range DurationBuckets {
		buckets[ub] = cum[i]
	}
	return prometheus.MustNewConstHistogram(d, cum[durationBuckets-1], v[durationSum], buckets, lv...)
}

// Producer hands the aggregates to the OpenTelemetry metric SDK, which pushes
// them over OTLP (see sdk/metric.WithProducer). It emits cumulative sums and
// histograms under the same names, labels and units as /metrics.
type Producer struct {
	agg   *Aggregator
	dict  *Dict
	start time.Time
}

// NewProducer returns a producer; start is when the counters began (the
// store's creation), the start time of every cumulative point.
func NewProducer(agg *Aggregator, dict *Dict, start time.Time) *Producer {
	return &Producer{agg: agg, dict: dict, start: start}
}

// Produce implements sdk/metric.Producer.
func (p *Producer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	sm := metricdata.ScopeMetrics{Scope: instrumentation.Scope{Name: "github.com/proxylens/proxylens/otelanalytics"}}
	for f := range NumFamilies {
		keys, totals := p.agg.Snapshot(f)
		if len(keys) == 0 {
			continue
		}
		w := f.Width()
		m := metricdata.Metrics{Name: f.Name(), Description: f.Help(), Unit: familyUnit[f]}
		switch f {
		case FamilyDuration:
			h := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
			for i, k := range keys {
				v := totals[i*w : (i+1)*w]
				cum := cumulativeCounts(v)
				counts := make([]uint64, durationBuckets)
				var prev uint64
				for j, c := range cum {
					counts[j], prev = c-prev, c
				}
				h.DataPoints = append(h.DataPoints, metricdata.HistogramDataPoint[float64]{
					Attributes: p.attrs(f, k, ""), StartTime: p.start, Time: now,
					Count: cum[durationBuckets-1], Bounds: DurationBuckets[:], BucketCounts: counts, Sum: v[durationSum],
				})
			}
			m.Data = h
		default:
			s := metricdata.Sum[float64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
			for i, k := range keys {
				v := totals[i*w : (i+1)*w]
				if f == FamilyTransfer {
					for dir, name := range [2]string{"sent", "received"} {
						s.DataPoints = append(s.DataPoints, metricdata.DataPoint[float64]{
							Attributes: p.attrs(f, k, name), StartTime: p.start, Time: now, Value: v[dir],
						})
					}
					continue
				}
				s.DataPoints = append(s.DataPoints, metricdata.DataPoint[float64]{
					Attributes: p.attrs(f, k, ""), StartTime: p.start, Time: now, Value: v[0],
				})
			}
			m.Data = s
		}
		sm.Metrics = append(sm.Metrics, m)
	}
	return []metricdata.ScopeMetrics{sm}, nil
}

func (p *Producer) attrs(f Family, k SeriesKey, direction string) attribute.Set {
	var kvs []attribute.KeyValue
	if k.Overflow {
		kvs = append(kvs, attribute.Bool(OverflowLabel, true))
	} else {
		for i, v := range f.LabelValues(k, p.dict) {
			if v != "" {
				kvs = append(kvs, attribute.String(f.Labels()[i], v))
			}
		}
	}
	if direction != "" {
		kvs = append(kvs, attribute.String("direction", direction))
	}
	return attribute.NewSet(kvs...)
}
