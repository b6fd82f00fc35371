package pebblestore

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
)

func benchBatch(n int, keep float64) *otelanalytics.Batch {
	g := traffic.NewGenerator(traffic.NewModel(500), 1)
	recs := make([]otelanalytics.Record, n)
	for i := range recs {
		r := g.Next(t0.Add(time.Duration(i) * time.Millisecond))
		recs[i] = r.Record()
	}
	d := otelanalytics.NewDict(0)
	refs := make([]otelanalytics.Refs, n)
	d.Intern(recs, refs, nil)
	kept := make([]bool, n)
	for i := range kept {
		kept[i] = g.Rand().Float64() < keep
	}
	return &otelanalytics.Batch{Seq: 1, Records: recs, Refs: refs, Kept: kept, Probability: keep}
}

// BenchmarkCommitBatch: durable journal appends of 512-span batches from
// parallel writers, which share fsyncs.
func BenchmarkCommitBatch(b *testing.B) {
	for _, writers := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			db, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Second, nil)); err != nil {
				b.Fatal(err)
			}
			batch := benchBatch(512, 0.1)
			var seq atomic.Uint64
			b.SetParallelism(writers)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				bb := *batch
				var entry []byte
				for pb.Next() {
					bb.Seq = seq.Add(1)
					entry = bb.AppendEntry(entry[:0])
					if err := db.CommitBatch(entry, nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*512)/b.Elapsed().Seconds(), "spans/s")
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkMaterialize: writing a sealed journal segment's kept records
// into Pebble at a cut, per journal record: 100 batches of 512 spans, all
// kept or one in ten (the sampler's floor, flat out), new records each
// time (later in time than the last cut's).
func BenchmarkMaterialize(b *testing.B) {
	for _, keep := range []float64{1, 0.1} {
		b.Run(fmt.Sprintf("kept=%g", keep), func(b *testing.B) {
			db, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if _, err := otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Second, nil)); err != nil {
				b.Fatal(err)
			}
			batch := benchBatch(512, keep)
			cut := otelanalytics.NewStoreCut(&otelanalytics.Cut{}, nil, nil, 0)
			seq := uint64(0)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				for j := range batch.Records {
					batch.Records[j].EndTime += int64(time.Minute)
				}
				for range 100 {
					seq++
					batch.Seq = seq
					if err := db.CommitBatch(batch.AppendEntry(nil), nil); err != nil {
						b.Fatal(err)
					}
				}
				seg, err := db.Seal()
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				db.cutMu.Lock()
				err = db.materializeLocked(cut, seg, false)
				db.cutMu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*51200), "ns/record")
		})
	}
}

// BenchmarkRecordBytes reports the disk space of a stored record: 200,000
// records of realistic traffic, all kept, written by cuts, flushed and
// compacted (Pebble's balanced compression), divided by their number.
func BenchmarkRecordBytes(b *testing.B) {
	for b.Loop() {
		db, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		dict := otelanalytics.NewDict(0)
		if _, err := otelanalytics.Restore(db, dict, otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, time.Second, nil)); err != nil {
			b.Fatal(err)
		}
		g := traffic.NewGenerator(traffic.NewModel(500), 9)
		const n, per = 200_000, 500
		for i := 0; i < n; i += per {
			recs := make([]otelanalytics.Record, per)
			for j := range recs {
				r := g.Next(t0.Add(time.Duration(i+j) * 10 * time.Millisecond))
				recs[j] = r.Record()
			}
			refs := make([]otelanalytics.Refs, per)
			pending := dict.Intern(recs, refs, nil)
			kept := make([]bool, per)
			for j := range kept {
				kept[j] = true
			}
			batch := &otelanalytics.Batch{Seq: uint64(i/per + 1), Records: recs, Refs: refs, Kept: kept, Probability: 1, Dict: pending}
			if err := db.CommitBatch(batch.AppendEntry(nil), nil); err != nil {
				b.Fatal(err)
			}
			dict.MarkDurable(pending)
		}
		seg, err := db.Seal()
		if err != nil {
			b.Fatal(err)
		}
		if err := db.WriteCut(seg, otelanalytics.NewStoreCut(&otelanalytics.Cut{}, dict, nil, n/per)); err != nil {
			b.Fatal(err)
		}
		bytes, err := db.recordBytes()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(bytes)/n, "bytes/record")
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendFlush: one flush of 100,000 increment series (an increment
// each, one synced commit), as a cut writes them every flush interval.
// window-close flushes are the ones that cross a two-hour window, where
// every series' closed window is summarized.
func BenchmarkAppendFlush(b *testing.B) {
	const n = 100_000
	series := make([]labels.Labels, n)
	for i := range series {
		series[i] = labels.FromStrings("__name__", "proxy_requests_total", "application", fmt.Sprintf("app-%d", i%10),
			"domain", fmt.Sprintf("d%d.example.com", i/10%1000), "source", fmt.Sprintf("source-%02d", i/10000), "status_code", "200")
	}
	for _, crossing := range []bool{false, true} {
		name := "steady"
		if crossing {
			name = "window-close"
		}
		b.Run(name, func(b *testing.B) {
			db, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			s := db.Series()
			t := int64(1_800_000_000_000) / windowMs * windowMs
			flush := func() {
				k := int(t / 15000)
				if err := s.AppendIncrements(func(add func(labels.Labels, int64, float64) error) error {
					for i, ls := range series {
						// Counts that vary from flush to flush, as real ones do.
						if err := add(ls, t, float64(1+(i+7*k)%23)); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			for range 240 { // an hour of history in the head windows first
				t += 15000
				flush()
			}
			walBytes := db.db.Metrics().WAL.BytesIn
			b.ResetTimer()
			for b.Loop() {
				if crossing {
					t = windowOf(t) + windowMs + 15000
				} else {
					t += 15000
				}
				flush()
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/flush")
			b.ReportMetric(float64(db.db.Metrics().WAL.BytesIn-walBytes)/float64(b.N)/n, "WAL-bytes/series")
		})
	}
}

// BenchmarkFlush: one aggregate cut as the server writes it every flush
// interval at 20,000 spans/s: 300,000 spans committed through the
// pipeline (10% of the records kept), then the cut timed. The spans cycle
// through 32,768 generated requests, as the load generator's do (about
// 21,000 series), and end as they are sent. The first cut, which creates
// the series, is not timed.
func BenchmarkFlush(b *testing.B) {
	const (
		rate     = 20_000
		interval = 15 * time.Second
		batch    = 512
		perCut   = rate * int(interval/time.Second)
	)
	now := t0
	clock := func() time.Time { return now } // the store's and the pipeline's: the traffic is live
	db, err := Open(b.TempDir(), Options{Series: SeriesOptions{Now: clock}})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	dict := otelanalytics.NewDict(0)
	agg := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, interval, nil)
	next, err := otelanalytics.Restore(db, dict, agg)
	if err != nil {
		b.Fatal(err)
	}
	p := otelanalytics.NewPipeline(otelanalytics.PipelineConfig{FlushInterval: interval}, dict,
		otelanalytics.NewSampler(otelanalytics.DefaultSamplingConfig()), agg, db, next, nil, nil, func() time.Time { return now })
	g := traffic.NewGenerator(traffic.NewModel(500), 1)
	pool := make([]otelanalytics.Record, 64*batch)
	for i := range pool {
		r := g.Next(now)
		pool[i] = r.Record()
	}
	recs := make([]otelanalytics.Record, batch)
	n := 0
	ingest := func() {
		for i := 0; i < perCut; i += batch {
			for j := range recs {
				recs[j] = pool[n%len(pool)]
				recs[j].EndTime = now.UnixNano()
				n++
				now = now.Add(time.Second / rate)
			}
			if err := p.Consume(b.Context(), recs); err != nil {
				b.Fatal(err)
			}
		}
	}
	ingest()
	if err := p.Flush(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		ingest()
		b.StartTimer()
		if err := p.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(agg.SeriesCount(otelanalytics.FamilyRequests)), "request-series")
}
