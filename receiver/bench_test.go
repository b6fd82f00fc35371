package receiver

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/proxylens/proxylens/internal/traffic"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// BenchmarkIngest is the per-span pipeline: decode and map a 512-span OTLP
// request, intern, sample (at 10%, as at high traffic), commit to the
// journal with a shared fsync, and aggregate; writers in parallel. The
// cut that writes kept records to Pebble runs every 1000 batches.
func BenchmarkIngest(b *testing.B) {
	for _, writers := range []int{1, 16} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			db, err := pebblestore.Open(b.TempDir(), pebblestore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			dict := otelanalytics.NewDict(0)
			agg := otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)
			next, err := otelanalytics.Restore(db, dict, agg)
			if err != nil {
				b.Fatal(err)
			}
			s := otelanalytics.NewSampler(otelanalytics.SamplingConfig{LowPerMinute: 0, HighPerMinute: 0, Floor: 0.1})
			p := otelanalytics.NewPipeline(otelanalytics.PipelineConfig{FlushInterval: time.Hour}, dict, s, agg, db, next, nil, nil, nil)
			mapper := otelanalytics.NewMapper(otelanalytics.DefaultMappingConfig(), nil)
			r, err := New(Config{}, mapper, p, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			model := traffic.NewModel(500)
			var payloads [][]byte
			for i := range 16 {
				g := traffic.NewGenerator(model, uint64(i))
				reqs := make([]traffic.Request, 512)
				for j := range reqs {
					reqs[j] = g.Next(time.Now().Add(-time.Duration(j) * time.Millisecond))
				}
				body, err := ptraceotlp.NewExportRequestFromTraces(traffic.Traces("bench", reqs)).MarshalProto()
				if err != nil {
					b.Fatal(err)
				}
				payloads = append(payloads, body)
			}
			b.SetParallelism(writers)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, err := r.export(context.Background(), transportGRPC, payloads[i%len(payloads)]); err != nil {
						b.Error(err)
						return
					}
					if i++; i%1000 == 0 {
						if err := p.Flush(); err != nil {
							b.Error(err)
						}
					}
				}
			})
			b.ReportMetric(float64(b.N*512)/b.Elapsed().Seconds(), "spans/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*512), "ns/span")
			if err := p.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
