package peers

import (
	"fmt"
	"testing"

	"github.com/proxylens/proxylens/otelanalytics"
)

// BenchmarkScan merges the local records with those of two peers on
// loopback, each holding the same number: the wire encoding, HTTP and
// the decoding per record. ns/op is per merged record.
func BenchmarkScan(b *testing.B) {
	for _, n := range []int{10_000} {
		b.Run(fmt.Sprintf("records=%d", 3*n), func(b *testing.B) {
			rs := make([]otelanalytics.Record, n)
			for i := range rs {
				rs[i] = sampleRecords()[0]
				rs[i].EndTime = int64(i)
			}
			srv1, srv2 := servePeer(b, "t", localScan(rs, nil)).URL, servePeer(b, "t", localScan(rs, nil)).URL
			ps, err := New([]Config{peerConfig("p1", srv1, "t"), peerConfig("p2", srv2, "t")}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer ps.Close()
			b.ReportAllocs()
			b.ResetTimer()
			total := 0
			for b.Loop() {
				err := ps.Scan(b.Context(), localScan(rs, nil), otelanalytics.RecordFilter{}, func(*otelanalytics.Record) error { total++; return nil })
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/record")
		})
	}
}
