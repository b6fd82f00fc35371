package receiver

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/otlptranslator"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/value"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// The OTLP conversion follows Prometheus 3's OTLP endpoint with its default
// settings (storage/remote/otlptranslator/prometheusremotewrite, written
// again here because that package pulls Kubernetes and cloud SDKs in):
//
//   - names translated with otlptranslator's UnderscoreEscapingWithSuffixes
//     strategy: unit and type suffixes (_seconds, _bytes, _total, _ratio),
//     invalid characters escaped to _;
//   - job from service.namespace/service.name, instance from
//     service.instance.id; other resource attributes go to target_info,
//     which gets a sample every 2m30s over the request's time span;
//   - cumulative sums: monotonic ones are counters (_total), others
//     gauges; delta temporality is refused;
//   - explicit-bucket histograms as classic _bucket{le}, _sum and _count
//     series; exponential histograms as native histograms; summaries as
//     {quantile}, _sum and _count series;
//   - points flagged as having no recorded value become staleness markers;
//   - metrics whose translated name is reserved (ReservedName: proxy_*,
//     proxylens_*) are refused, their points counted as rejected.
//
// Start timestamps are not stored (Prometheus stores them only behind a
// feature flag), so samples keep the cheaper XOR encoding.

const (
	targetInfoInterval   = 150 * time.Second // half the default lookback delta
	defaultZeroThreshold = 1e-128
)

// otlpSample is one converted sample.
type otlpSample struct {
	ls labels.Labels
	t  int64
	f  float64
	h  *histogram.Histogram
}

// otlpConversion is the result of converting one request.
type otlpConversion struct {
	samples  []otlpSample
	metadata map[string]metadata.Metadata
	rejected int64    // data points that could not be converted
	reserved int64    // of them, those of metrics with a reserved name
	errs     []string // why, at most a few distinct messages
}

func (c *otlpConversion) reject(n int, format string, args ...any) {
	c.rejected += int64(n)
	if len(c.errs) < 5 {
		msg := fmt.Sprintf(format, args...)
		for _, e := range c.errs {
			if e == msg {
				return
			}
		}
		c.errs = append(c.errs, msg)
	}
}

// convertOTLP converts metrics as Prometheus' OTLP endpoint does; the
// names refused says are refused (nil: none).
func convertOTLP(md pmetric.Metrics, refused func(name string) bool) *otlpConversion {
	conv := &otlpConversion{metadata: map[string]metadata.Metadata{}}
	namer := otlptranslator.MetricNamer{WithMetricSuffixes: true}
	unitNamer := otlptranslator.UnitNamer{}
	labelNamer := otlptranslator.LabelNamer{}
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		rm := rms.At(i)
		res := rm.Resource().Attributes()
		var job, instance string
		if v, ok := res.Get("service.name"); ok {
			job = v.AsString()
			if ns, ok := res.Get("service.namespace"); ok {
				job = ns.AsString() + "/" + job
			}
		}
		if v, ok := res.Get("service.instance.id"); ok {
			instance = v.AsString()
		}
		b := &labelBuilder{namer: &labelNamer, job: job, instance: instance}
		minT, maxT := int64(math.MaxInt64), int64(math.MinInt64)
		sms := rm.ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				m := ms.At(k)
				name, err := namer.Build(translatorMetric(m))
				if err != nil {
					conv.reject(dataPoints(m), "metric %q: %v", m.Name(), err)
					continue
				}
				if refused != nil && refused(name) {
					n := dataPoints(m)
					conv.reserved += int64(n)
					conv.reject(n, "metric %q: the name %s is written by proxylens only (proxy_*, proxylens_*)", m.Name(), name)
					continue
				}
				if temporality, ok := temporalityOf(m); ok && temporality != pmetric.AggregationTemporalityCumulative {
					conv.reject(dataPoints(m), "invalid temporality and type combination for metric %q", m.Name())
					continue
				}
				conv.metadata[name] = metadata.Metadata{Type: promType(m), Help: m.Description(), Unit: unitNamer.Build(m.Unit())}
				before := len(conv.samples)
				conv.convertMetric(m, name, b)
				for _, s := range conv.samples[before:] {
					minT, maxT = min(minT, s.t), max(maxT, s.t)
				}
			}
		}
		if maxT >= minT {
			conv.targetInfo(rm.Resource(), b, minT, maxT)
		}
	}
	return conv
}

func dataPoints(m pmetric.Metric) int {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return m.Gauge().DataPoints().Len()
	case pmetric.MetricTypeSum:
		return m.Sum().DataPoints().Len()
	case pmetric.MetricTypeHistogram:
		return m.Histogram().DataPoints().Len()
	case pmetric.MetricTypeExponentialHistogram:
		return m.ExponentialHistogram().DataPoints().Len()
	case pmetric.MetricTypeSummary:
		return m.Summary().DataPoints().Len()
	}
	return 0
}

func translatorMetric(m pmetric.Metric) otlptranslator.Metric {
	tm := otlptranslator.Metric{Name: m.Name(), Unit: m.Unit(), Type: otlptranslator.MetricTypeUnknown}
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		tm.Type = otlptranslator.MetricTypeGauge
	case pmetric.MetricTypeSum:
		tm.Type = otlptranslator.MetricTypeNonMonotonicCounter
		if m.Sum().IsMonotonic() {
			tm.Type = otlptranslator.MetricTypeMonotonicCounter
		}
	case pmetric.MetricTypeSummary:
		tm.Type = otlptranslator.MetricTypeSummary
	case pmetric.MetricTypeHistogram:
		tm.Type = otlptranslator.MetricTypeHistogram
	case pmetric.MetricTypeExponentialHistogram:
		tm.Type = otlptranslator.MetricTypeExponentialHistogram
	}
	return tm
}

func temporalityOf(m pmetric.Metric) (pmetric.AggregationTemporality, bool) {
	switch m.Type() {
	case pmetric.MetricTypeSum:
		return m.Sum().AggregationTemporality(), true
	case pmetric.MetricTypeHistogram:
		return m.Histogram().AggregationTemporality(), true
	case pmetric.MetricTypeExponentialHistogram:
		return m.ExponentialHistogram().AggregationTemporality(), true
	}
	return 0, false
}

func promType(m pmetric.Metric) model.MetricType {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return model.MetricTypeGauge
	case pmetric.MetricTypeSum:
		if m.Sum().IsMonotonic() {
			return model.MetricTypeCounter
		}
		return model.MetricTypeGauge
	case pmetric.MetricTypeHistogram, pmetric.MetricTypeExponentialHistogram:
		return model.MetricTypeHistogram
	case pmetric.MetricTypeSummary:
		return model.MetricTypeSummary
	}
	return model.MetricTypeUnknown
}

// labelBuilder turns attributes into labels as Prometheus does: sorted by
// key, names sanitized, values of keys that collide once sanitized joined
// with ";", then job and instance.
type labelBuilder struct {
	namer         *otlptranslator.LabelNamer
	job, instance string
	scratch       labels.ScratchBuilder
	b             labels.Builder
}

func (lb *labelBuilder) base(attrs pcommon.Map, ignore ...string) (labels.Labels, error) {
	lb.scratch.Reset()
	attrs.Range(func(k string, v pcommon.Value) bool {
		for _, ig := range ignore {
			if k == ig {
				return true
			}
		}
		if k != model.MetricNameLabel {
			lb.scratch.Add(k, v.AsString())
		}
		return true
	})
	lb.scratch.Sort()
	sorted := lb.scratch.Labels()
	lb.b.Reset(labels.EmptyLabels())
	var err error
	sorted.Range(func(l labels.Label) {
		if err != nil {
			return
		}
		var name string
		if name, err = lb.namer.Build(l.Name); err != nil {
			return
		}
		if prev := lb.b.Get(name); prev != "" {
			lb.b.Set(name, prev+";"+l.Value)
		} else {
			lb.b.Set(name, l.Value)
		}
	})
	if err != nil {
		return labels.EmptyLabels(), err
	}
	if lb.job != "" {
		lb.b.Set(model.JobLabel, lb.job)
	}
	if lb.instance != "" {
		lb.b.Set(model.InstanceLabel, lb.instance)
	}
	return lb.b.Labels(), nil
}

// with returns base with the metric name and extra label pairs.
func (lb *labelBuilder) with(base labels.Labels, name string, extra ...string) labels.Labels {
	lb.b.Reset(base)
	for i := 0; i+1 < len(extra); i += 2 {
		lb.b.Set(extra[i], extra[i+1])
	}
	lb.b.Set(model.MetricNameLabel, name)
	return lb.b.Labels()
}

func ms(ts pcommon.Timestamp) int64 { return int64(ts) / 1_000_000 }

var staleNaN = math.Float64frombits(value.StaleNaN)

func (c *otlpConversion) add(ls labels.Labels, t int64, f float64, stale bool) {
	if stale {
		f = staleNaN
	}
	c.samples = append(c.samples, otlpSample{ls: ls, t: t, f: f})
}

func numberValue(p pmetric.NumberDataPoint) float64 {
	if p.ValueType() == pmetric.NumberDataPointValueTypeInt {
		return float64(p.IntValue())
	}
	return p.DoubleValue()
}

// dataPoint is what every kind of OTLP data point has.
type dataPoint interface {
	Attributes() pcommon.Map
	Timestamp() pcommon.Timestamp
	Flags() pmetric.DataPointFlags
}

// eachPoint calls fn for each of the n points of m (at(i) is the i-th),
// with the labels of its series but the name, its time in milliseconds and
// whether it is flagged as having no recorded value (a staleness marker);
// a point whose attributes do not make labels is rejected.
func eachPoint[P dataPoint](c *otlpConversion, m pmetric.Metric, lb *labelBuilder, n int, at func(int) P, fn func(p P, base labels.Labels, t int64, stale bool)) {
	for i := range n {
		p := at(i)
		base, err := lb.base(p.Attributes())
		if err != nil {
			c.reject(1, "metric %q: %v", m.Name(), err)
			continue
		}
		fn(p, base, ms(p.Timestamp()), p.Flags().NoRecordedValue())
	}
}

func (c *otlpConversion) convertMetric(m pmetric.Metric, name string, lb *labelBuilder) {
	switch m.Type() {
	case pmetric.MetricTypeGauge, pmetric.MetricTypeSum:
		var pts pmetric.NumberDataPointSlice
		if m.Type() == pmetric.MetricTypeSum {
			pts = m.Sum().DataPoints()
		} else {
			pts = m.Gauge().DataPoints()
		}
		eachPoint(c, m, lb, pts.Len(), pts.At, func(p pmetric.NumberDataPoint, base labels.Labels, t int64, stale bool) {
			c.add(lb.with(base, name), t, numberValue(p), stale)
		})
	case pmetric.MetricTypeHistogram:
		pts := m.Histogram().DataPoints()
		eachPoint(c, m, lb, pts.Len(), pts.At, func(p pmetric.HistogramDataPoint, base labels.Labels, t int64, stale bool) {
			if p.HasSum() {
				c.add(lb.with(base, name+"_sum"), t, p.Sum(), stale)
			}
			c.add(lb.with(base, name+"_count"), t, float64(p.Count()), stale)
			var cum uint64
			for j := 0; j < p.ExplicitBounds().Len() && j < p.BucketCounts().Len(); j++ {
				bound := p.ExplicitBounds().At(j)
				cum += p.BucketCounts().At(j)
				if math.IsInf(bound, 1) {
					continue // le="+Inf" is taken from the count below
				}
				c.add(lb.with(base, name+"_bucket", model.BucketLabel, strconv.FormatFloat(bound, 'f', -1, 64)), t, float64(cum), stale)
			}
			c.add(lb.with(base, name+"_bucket", model.BucketLabel, "+Inf"), t, float64(p.Count()), stale)
		})
	case pmetric.MetricTypeExponentialHistogram:
		pts := m.ExponentialHistogram().DataPoints()
		eachPoint(c, m, lb, pts.Len(), pts.At, func(p pmetric.ExponentialHistogramDataPoint, base labels.Labels, t int64, _ bool) {
			h, err := exponentialToNative(p)
			if err != nil {
				c.reject(1, "metric %q: %v", m.Name(), err)
				return
			}
			c.samples = append(c.samples, otlpSample{ls: lb.with(base, name), t: t, h: h})
		})
	case pmetric.MetricTypeSummary:
		pts := m.Summary().DataPoints()
		eachPoint(c, m, lb, pts.Len(), pts.At, func(p pmetric.SummaryDataPoint, base labels.Labels, t int64, stale bool) {
			c.add(lb.with(base, name+"_sum"), t, p.Sum(), stale)
			c.add(lb.with(base, name+"_count"), t, float64(p.Count()), stale)
			for j := range p.QuantileValues().Len() {
				q := p.QuantileValues().At(j)
				c.add(lb.with(base, name, model.QuantileLabel, strconv.FormatFloat(q.Quantile(), 'f', -1, 64)), t, q.Value(), stale)
			}
		})
	default:
		c.reject(0, "metric %q: unsupported metric type %s", m.Name(), m.Type())
	}
}

// targetInfo adds the target_info series of a resource: its non-identifying
// attributes as labels, 1 at every 2m30s from minT and at maxT.
func (c *otlpConversion) targetInfo(res pcommon.Resource, lb *labelBuilder, minT, maxT int64) {
	attrs := res.Attributes()
	n := attrs.Len()
	for _, k := range []string{"service.namespace", "service.name", "service.instance.id"} {
		if _, ok := attrs.Get(k); ok {
			n--
		}
	}
	if n == 0 || (lb.job == "" && lb.instance == "") {
		return
	}
	base, err := lb.base(attrs, "service.namespace", "service.name", "service.instance.id")
	if err != nil {
		c.reject(0, "target_info: %v", err)
		return
	}
	ls := lb.with(base, otlptranslator.TargetInfoMetricName)
	c.metadata[otlptranslator.TargetInfoMetricName] = metadata.Metadata{Type: model.MetricTypeGauge, Help: "Target metadata"}
	step := targetInfoInterval.Milliseconds()
	for t := minT; t < maxT; t += step {
		c.samples = append(c.samples, otlpSample{ls: ls, t: t, f: 1})
	}
	c.samples = append(c.samples, otlpSample{ls: ls, t: maxT, f: 1})
}

// exponentialToNative converts an exponential histogram point to a native
// histogram as Prometheus does, scaling down beyond the largest schema.
func exponentialToNative(p pmetric.ExponentialHistogramDataPoint) (*histogram.Histogram, error) {
	scale := p.Scale()
	if scale < histogram.ExponentialSchemaMin {
		return nil, fmt.Errorf("cannot convert exponential to native histogram: scale must be >= %d, was %d", histogram.ExponentialSchemaMin, scale)
	}
	var scaleDown int32
	if scale > histogram.ExponentialSchemaMax {
		scaleDown = scale - histogram.ExponentialSchemaMax
		scale = histogram.ExponentialSchemaMax
	}
	pSpans, pDeltas := bucketsLayout(p.Positive().BucketCounts().AsRaw(), p.Positive().Offset(), scaleDown)
	nSpans, nDeltas := bucketsLayout(p.Negative().BucketCounts().AsRaw(), p.Negative().Offset(), scaleDown)
	h := &histogram.Histogram{
		CounterResetHint: histogram.UnknownCounterReset,
		Schema:           scale,
		ZeroThreshold:    defaultZeroThreshold,
		ZeroCount:        p.ZeroCount(),
		PositiveSpans:    pSpans,
		PositiveBuckets:  pDeltas,
		NegativeSpans:    nSpans,
		NegativeBuckets:  nDeltas,
	}
	if p.Flags().NoRecordedValue() {
		h.Sum, h.Count = staleNaN, value.StaleNaN
	} else {
		if p.HasSum() {
			h.Sum = p.Sum()
		}
		h.Count = p.Count()
	}
	if err := h.Validate(); err != nil && !p.Flags().NoRecordedValue() {
		return nil, err
	}
	return h, nil
}

// bucketsLayout turns OTLP's dense exponential buckets into Prometheus'
// spans and deltas, merging 2^scaleDown buckets into one and shifting the
// index by one (OTLP's bucket 0 is (1, base], Prometheus' is (base⁻¹, 1]).
func bucketsLayout(counts []uint64, offset, scaleDown int32) ([]histogram.Span, []int64) {
	if len(counts) == 0 {
		return nil, nil
	}
	var (
		spans     = []histogram.Span{{Offset: offset>>scaleDown + 1}}
		deltas    []int64
		count     int64
		prevCount int64
		bucketIdx = offset>>scaleDown + 1
		lastIdx   = bucketIdx - 1
	)
	appendDelta := func(n int64) {
		spans[len(spans)-1].Length++
		deltas = append(deltas, n-prevCount)
		prevCount = n
	}
	appendBucket := func() {
		if gap := bucketIdx - lastIdx - 1; gap > 2 {
			spans = append(spans, histogram.Span{Offset: gap})
		} else {
			for range gap {
				appendDelta(0)
			}
		}
		appendDelta(count)
		lastIdx = bucketIdx
	}
	for i, c := range counts {
		next := (int32(i)+offset)>>scaleDown + 1
		if next == bucketIdx {
			count += int64(c)
			continue
		}
		if count != 0 {
			appendBucket()
		}
		count, bucketIdx = int64(c), next
	}
	appendBucket()
	return spans, deltas
}

// errList joins a conversion's messages for a partial-success answer.
func errList(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}
