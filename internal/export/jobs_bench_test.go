package export

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// BenchmarkExportRecords exports 1,000,000 stored records (PROXYLENS_BENCH_RECORDS
// sets another count) end to end, from the scan of the store to the file,
// as an export job does, in each format: the targets are CSV under
// 10 s and xlsx under 60 s. (That memory does not grow with the rows is
// measured on the writers, bench_test.go: here the heap also holds
// Pebble's block cache, which the scan fills.)
func BenchmarkExportRecords(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("PROXYLENS_BENCH_RECORDS"); v != "" {
		_, _ = fmt.Sscan(v, &n)
	}
	dir := b.TempDir()
	db, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	dict := otelanalytics.NewDict(0)
	agg := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)
	seq, err := otelanalytics.Restore(db, dict, agg)
	if err != nil {
		b.Fatal(err)
	}
	end := time.Now().UTC()
	start := end.Add(-24 * time.Hour)
	g := traffic.NewGenerator(traffic.NewModel(50), 1)
	const batch = 10_000
	for i := 0; i < n; i += batch {
		recs := make([]otelanalytics.Record, min(batch, n-i))
		keep := make([]bool, len(recs))
		for j := range recs {
			req := g.Next(start.Add(time.Duration(float64(i+j) / float64(n) * float64(24*time.Hour))))
			recs[j], keep[j] = req.Record(), true
		}
		refs := make([]otelanalytics.Refs, len(recs))
		pending := dict.Intern(recs, refs, nil)
		entry := (&otelanalytics.Batch{Seq: seq, Records: recs, Refs: refs, Kept: keep, Probability: 1, Dict: pending}).AppendEntry(nil)
		if err := db.CommitBatch(entry, nil); err != nil {
			b.Fatal(err)
		}
		seq++
		dict.MarkDurable(pending)
		agg.Apply(recs, refs)
	}
	sealed, err := db.Seal()
	if err != nil {
		b.Fatal(err)
	}
	if err := db.WriteCut(sealed, otelanalytics.NewStoreCut(agg.Cut(), dict, nil, seq-1)); err != nil {
		b.Fatal(err)
	}
	e := &Jobs{opts: Options{Dir: b.TempDir(), Now: time.Now, Records: func(ctx context.Context, f otelanalytics.RecordFilter, fn func(*otelanalytics.Record) error) error {
		return otelanalytics.ScanRecords(ctx, db, dict, f, fn)
	}}, jobs: map[string]*Job{}}
	for _, format := range []string{"csv", "json", "xlsx"} {
		b.Run(format, func(b *testing.B) {
			var rows, size int64
			for b.Loop() {
				j := &Job{ID: "bench", Format: format, Dataset: "records", Start: start, End: end.Add(time.Hour), fields: columnNamesOf(recordColumns)}
				j.path = e.opts.Dir + "/bench." + format
				rows, size, err = e.write(context.Background(), j)
				if err != nil {
					b.Fatal(err)
				}
			}
			if rows != int64(n) {
				b.Fatalf("%d rows, want %d", rows, n)
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds()*float64(b.N), "records/s")
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/export")
			b.ReportMetric(float64(size)/(1<<20), "MiB-file")
		})
	}
}

func columnNamesOf(cols []Column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.Name
	}
	return out
}
