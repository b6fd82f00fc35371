package pebblestore

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
)

// BenchmarkBackfillCut writes one cut of spans whose end times spread
// over the past 30 days (a backfill), into a store that already holds
// the spans' series, and reports the peak heap while the cut is written
// (peak-heap-MiB: heap objects, live and garbage, sampled every
// millisecond; the spans' increments held before the cut included) and
// what the cut leaves held once collected (held-MiB: heap objects after
// the cut minus before it; negative when the cut frees more than it
// keeps).
//
//	go test ./pebblestore/ -run '^$' -bench BackfillCut -benchtime 1x -count 3
func BenchmarkBackfillCut(b *testing.B) {
	for _, spans := range []int{100_000, 300_000} {
		b.Run(fmt.Sprintf("spans=%d", spans), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				e := benchEnv(b)
				g := traffic.NewGenerator(traffic.NewModel(500), 7)
				// A first cut creates the series, as a store in use has them.
				commitHistory(b, e, g, 20_000)
				benchCut(b, e)
				commitHistory(b, e, g, spans)
				runtime.GC()
				before := heapInUse()

				stop := samplePeak()
				b.StartTimer()
				benchCut(b, e)
				b.StopTimer()
				p := stop()
				runtime.GC()
				held := int64(heapInUse()) - int64(before)
				b.ReportMetric(float64(p)/(1<<20), "peak-heap-MiB")
				b.ReportMetric(float64(held)/(1<<20), "held-MiB")
				if err := e.db.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchEnv(b *testing.B) *env {
	db, err := Open(b.TempDir(), Options{Logger: discard()})
	if err != nil {
		b.Fatal(err)
	}
	e := &env{db: db, dict: otelanalytics.NewDict(0), agg: otelanalytics.NewAggregator(otelanalytics.AggregationConfig{MaxPendingIncrements: 1 << 30}, 15*time.Second, nil)}
	if e.next, err = otelanalytics.Restore(db, e.dict, e.agg); err != nil {
		b.Fatal(err)
	}
	return e
}

// commitHistory commits n spans ending uniformly over the 30 days before
// t0, in batches of 512 of which sampling keeps 10%.
func commitHistory(b *testing.B, e *env, g *traffic.Generator, n int) {
	const window = int64(30 * 24 * time.Hour)
	for done := 0; done < n; done += 512 {
		recs := make([]otelanalytics.Record, min(512, n-done))
		for i := range recs {
			r := g.Next(t0.Add(-time.Duration(g.Rand().Int64N(window))))
			recs[i] = r.Record()
		}
		refs := make([]otelanalytics.Refs, len(recs))
		pending := e.dict.Intern(recs, refs, nil)
		kept := make([]bool, len(recs))
		for i := range kept {
			kept[i] = i%10 == 0
		}
		batch := &otelanalytics.Batch{Seq: e.next, Records: recs, Refs: refs, Kept: kept, Probability: 0.1, Dict: pending}
		e.next++
		if err := e.db.CommitBatch(batch.AppendEntry(nil), func() { e.agg.Apply(recs, refs) }); err != nil {
			b.Fatal(err)
		}
		e.dict.MarkDurable(pending)
	}
}

func benchCut(b *testing.B, e *env) {
	sealed, err := e.db.Seal()
	if err != nil {
		b.Fatal(err)
	}
	if err := e.db.WriteCut(sealed, otelanalytics.NewStoreCut(e.agg.Cut(), e.dict, nil, e.next-1)); err != nil {
		b.Fatal(err)
	}
}

var heapSample = []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}

// heapInUse returns the bytes of heap objects, live and not yet collected.
func heapInUse() uint64 {
	metrics.Read(heapSample)
	return heapSample[0].Value.Uint64()
}

// samplePeak samples heapInUse every millisecond until stop, which
// returns the highest value seen.
func samplePeak() (stop func() uint64) {
	var (
		mu   sync.Mutex
		high uint64
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	wg.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			mu.Lock()
			high = max(high, s[0].Value.Uint64())
			mu.Unlock()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		return high
	}
}
