package otelanalytics_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
)

// benchRecords draws n records from the standard traffic model over domains
// domains, ending within the last second.
func benchRecords(n, domains int) []otelanalytics.Record {
	g := traffic.NewGenerator(traffic.NewModel(domains), 1)
	out := make([]otelanalytics.Record, n)
	end := time.Now()
	for i := range out {
		r := g.Next(end.Add(-time.Duration(i) * time.Millisecond))
		out[i] = r.Record()
	}
	return out
}

// BenchmarkAggregatorApply: exact aggregation of one span (four families,
// event-time increments), in batches of 512, with series already known.
func BenchmarkAggregatorApply(b *testing.B) {
	for _, domains := range []int{500, 5000} {
		b.Run(fmt.Sprintf("domains=%d", domains), func(b *testing.B) {
			recs := benchRecords(512*64, domains)
			d := otelanalytics.NewDict(0)
			refs := make([]otelanalytics.Refs, len(recs))
			d.MarkDurable(d.Intern(recs, refs, nil))
			a := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)
			a.Apply(recs, refs) // warm: every series exists
			a.Cut()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				lo := (i % 64) * 512
				a.Apply(recs[lo:lo+512], refs[lo:lo+512])
				if i++; i%1000 == 0 {
					a.Cut()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*512), "ns/span")
			b.ReportMetric(float64(a.SeriesCount(otelanalytics.FamilyRequests)), "series")
		})
	}
}

// BenchmarkDictIntern: dictionary ids for the six strings of a span.
func BenchmarkDictIntern(b *testing.B) {
	recs := benchRecords(512, 500)
	d := otelanalytics.NewDict(0)
	refs := make([]otelanalytics.Refs, len(recs))
	d.MarkDurable(d.Intern(recs, refs, nil))
	var pending []otelanalytics.DictEntry
	b.ReportAllocs()
	for b.Loop() {
		pending = d.Intern(recs, refs, pending[:0])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*512), "ns/span")
}

// BenchmarkSamplerKeep: the sampling decision of one span at p=0.1.
func BenchmarkSamplerKeep(b *testing.B) {
	s := otelanalytics.NewSampler(otelanalytics.DefaultSamplingConfig())
	kept := 0
	for b.Loop() {
		if s.Keep(0.1) {
			kept++
		}
	}
	_ = kept
}

// BenchmarkAggregatorCut: one cut after 15 s of traffic at 20,000 spans/s
// (300,000 spans over the series of 500 domains). Apply waits while Cut
// holds the aggregator's lock, so this bounds the stall a cut causes.
func BenchmarkAggregatorCut(b *testing.B) {
	recs := benchRecords(512*64, 500)
	d := otelanalytics.NewDict(0)
	refs := make([]otelanalytics.Refs, len(recs))
	d.MarkDurable(d.Intern(recs, refs, nil))
	a := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for i := range 600 {
			lo := (i % 64) * 512
			a.Apply(recs[lo:lo+512], refs[lo:lo+512])
		}
		b.StartTimer()
		a.Cut()
	}
	b.ReportMetric(float64(a.SeriesCount(otelanalytics.FamilyRequests)), "series")
}

// BenchmarkJournalEncode: the journal entry of a 512-span batch, 10% kept.
func BenchmarkJournalEncode(b *testing.B) {
	g := traffic.NewGenerator(traffic.NewModel(500), 1)
	start := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	recs := make([]otelanalytics.Record, 512)
	for i := range recs {
		r := g.Next(start.Add(time.Duration(i) * time.Millisecond))
		recs[i] = r.Record()
	}
	refs := make([]otelanalytics.Refs, len(recs))
	otelanalytics.NewDict(0).Intern(recs, refs, nil)
	kept := make([]bool, len(recs))
	for i := range kept {
		kept[i] = g.Rand().Float64() < 0.1
	}
	batch := &otelanalytics.Batch{Seq: 1, Records: recs, Refs: refs, Kept: kept, Probability: 0.1}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = batch.AppendEntry(buf[:0])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*512), "ns/span")
	b.ReportMetric(float64(len(buf))/512, "bytes/span")
}
