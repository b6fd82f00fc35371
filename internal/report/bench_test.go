package report

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"

	"github.com/proxylens/proxylens/promql"
)

// BenchmarkReport30Days builds and writes a 30-day report (and its
// previous 30 days) over 100,000 proxy_requests_total series (50 sources
// × 20 applications × 50 domains × 2 outcomes, plus their histograms,
// byte and cost counters) with an increment every 6 hours: the queries
// through the query API's entry point, the charts, the HTML and the PDF.
func BenchmarkReport30Days(b *testing.B) {
	sh := shape{sources: 50, apps: 20, domains: 50, interval: 6 * time.Hour, days: 60, end: testEnd}
	dir, err := os.MkdirTemp("", "proxylens-report-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	start := time.Now()
	db := buildStore(b, dir, sh)
	b.Logf("history of %d request series built in %s", sh.sources*sh.apps*sh.domains*2, time.Since(start).Round(time.Second))
	api := promql.New(promql.Config{}, db.Series(), promql.Options{})
	b.Cleanup(func() { _ = api.Close() })
	spec := Spec{Start: testEnd.Add(-30 * 24 * time.Hour), End: testEnd}
	for _, format := range []string{HTML, PDF} {
		b.Run("format="+format, func(b *testing.B) {
			b.ReportAllocs()
			var out bytes.Buffer
			for b.Loop() {
				rep, err := Build(b.Context(), queryFunc(api), "bench", spec, nil)
				if err != nil {
					b.Fatal(err)
				}
				out.Reset()
				w := io.Writer(&out)
				if format == PDF {
					err = WritePDF(w, rep)
				} else {
					err = WriteHTML(w, rep)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(out.Len())/1024, "file-KiB")
		})
	}
}
