package export

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// proxyCols is shaped like a proxy request record.
var proxyCols = []Column{
	{Name: "time", Kind: Time},
	{Name: "duration_seconds", Kind: Float},
	{Name: "source", Kind: String},
	{Name: "destination", Kind: String},
	{Name: "method", Kind: String},
	{Name: "host", Kind: String},
	{Name: "path", Kind: String},
	{Name: "outcome", Kind: String},
	{Name: "user_agent", Kind: String},
	{Name: "region", Kind: String},
	{Name: "status", Kind: Int},
	{Name: "request_bytes", Kind: Int},
	{Name: "response_bytes", Kind: Int},
	{Name: "retries", Kind: Int},
	{Name: "cached", Kind: Bool},
	{Name: "weight", Kind: Float},
}

// proxyRows returns n distinct rows, reused round-robin by the benchmarks.
func proxyRows(n int) [][]any {
	rows := make([][]any, n)
	base := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	for i := range rows {
		rows[i] = []any{
			base.Add(time.Duration(i) * 1234567 * time.Nanosecond),
			0.001 * float64(i%9973) / 7,
			"source-" + strconv.Itoa(i%50),
			"upstream-" + strconv.Itoa(i%20) + ".internal:8443",
			[]string{"GET", "POST", "PUT", "DELETE"}[i%4],
			"api" + strconv.Itoa(i%7) + ".example.com",
			"/v1/items/" + strconv.Itoa(i) + "?q=a,b",
			[]string{"ok", "error", "timeout", "refused"}[i%4],
			`Mozilla/5.0 (X11; Linux x86_64) "quoted"`,
			"eu-west-" + strconv.Itoa(i%3),
			int64(200 + i%5*100),
			int64(512 + i%4096),
			int64(i * 37 % 1_000_000),
			int64(i % 3),
			i%2 == 0,
			1.0 / float64(1+i%100),
		}
	}
	return rows
}

const benchRows = 1_000_000

func benchmarkWrite(b *testing.B, f Format, open func(b *testing.B) io.Writer) {
	rows := proxyRows(4096)
	b.ReportAllocs()
	var ms runtime.MemStats
	var heapEnd, heapMid float64
	var out countingWriter
	for b.Loop() {
		out = countingWriter{w: open(b)}
		w, err := NewWriter(&out, f, proxyCols)
		if err != nil {
			b.Fatal(err)
		}
		for i := range benchRows {
			if err := w.Write(rows[i%len(rows)]); err != nil {
				b.Fatal(err)
			}
			if i == benchRows/10 {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				heapMid = float64(ms.HeapInuse) / (1 << 20)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heapEnd = float64(ms.HeapInuse) / (1 << 20)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(heapMid, "heap-inuse-MiB@100k")
	b.ReportMetric(heapEnd, "heap-inuse-MiB@1M")
	b.ReportMetric(float64(out.n)/(1<<20), "out-MiB")
}

func BenchmarkWriteCSV(b *testing.B) {
	benchmarkWrite(b, CSV, func(*testing.B) io.Writer { return io.Discard })
}

func BenchmarkWriteNDJSON(b *testing.B) {
	benchmarkWrite(b, JSON, func(*testing.B) io.Writer { return io.Discard })
}

func BenchmarkWriteXLSX(b *testing.B) {
	benchmarkWrite(b, XLSX, func(b *testing.B) io.Writer {
		f, err := os.Create(filepath.Join(b.TempDir(), "export.xlsx"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if err := f.Close(); err != nil {
				b.Error(err)
			}
		})
		return f
	})
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
