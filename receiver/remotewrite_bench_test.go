//go:build unix

package receiver_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/receiver"
)

// proxySeries returns n label sets shaped as ../shared/bench/seriesgen
// draws its proxy_requests_total (20 sources, 10 applications, 200
// domains, methods, status codes and their outcome and error type), all
// distinct, labels sorted by name as Prometheus sends them; seed picks
// the series. Their name is squid_requests_total, as long as
// proxy_requests_total: proxylens refuses remote-written proxy_* names.
func proxySeries(n int, seed uint64) [][]prompb.Label {
	rng := rand.New(rand.NewPCG(seed, 1))
	methods := []string{"GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS"}
	statuses := []struct{ code, outcome, errType string }{
		{"200", "success", "none"}, {"204", "success", "none"}, {"301", "success", "none"}, {"304", "success", "none"},
		{"400", "failure", "bad_request"}, {"403", "failure", "forbidden"}, {"404", "failure", "not_found"},
		{"429", "failure", "rate_limited"}, {"502", "failure", "bad_gateway"}, {"504", "failure", "upstream_timeout"},
		{"0", "failure", "connect_error"},
	}
	seen := map[string]bool{}
	var out [][]prompb.Label
	for len(out) < n {
		src := rng.IntN(20) + 1
		dom := rng.IntN(200)
		st := statuses[rng.IntN(len(statuses))]
		m := methods[rng.IntN(len(methods))]
		tier := "free"
		if src%3 == 0 {
			tier = "premium"
		}
		ls := []prompb.Label{
			{Name: "__name__", Value: "squid_requests_total"},
			{Name: "application", Value: fmt.Sprintf("app-%02d", dom%10)},
			{Name: "domain", Value: fmt.Sprintf("d%03d.example.com", dom)},
			{Name: "error_type", Value: st.errType},
			{Name: "method", Value: m},
			{Name: "outcome", Value: st.outcome},
			{Name: "source", Value: fmt.Sprintf("src-%02d", src)},
			{Name: "status_code", Value: st.code},
			{Name: "tier", Value: tier},
		}
		key := fmt.Sprint(ls)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, ls)
	}
	return out
}

// rwRequests pre-encodes count remote write 1.0 requests (snappy'd
// protobuf) over the series in lset, each carrying perSeries samples of
// every series at step ms, time moving forward request after request from
// start; counters grow by a random increment a step.
func rwRequests(tb testing.TB, lset [][]prompb.Label, count, perSeries int, start, step int64) [][]byte {
	tb.Helper()
	rng := rand.New(rand.NewPCG(uint64(len(lset)), uint64(start)))
	vals := make([]float64, len(lset))
	ts := make([]prompb.TimeSeries, len(lset))
	for i := range ts {
		ts[i] = prompb.TimeSeries{Labels: lset[i], Samples: make([]prompb.Sample, perSeries)}
	}
	var raw []byte
	out := make([][]byte, count)
	t := start
	for r := range out {
		for j := range perSeries {
			for i := range ts {
				vals[i] += float64(rng.IntN(50))
				ts[i].Samples[j] = prompb.Sample{Timestamp: t, Value: vals[i]}
			}
			t += step
		}
		req := prompb.WriteRequest{Timeseries: ts}
		n := req.Size()
		if cap(raw) < n {
			raw = make([]byte, n)
		}
		raw = raw[:n]
		if _, err := req.MarshalToSizedBuffer(raw); err != nil {
			tb.Fatal(err)
		}
		out[r] = snappy.Encode(nil, raw)
	}
	return out
}

// BenchmarkRemoteWriteIn is remote write in, end to end: one client
// keeping two requests in flight over loopback HTTP to the real handler,
// which decodes and appends into a real store with synced commits. Each
// request carries 20,000 samples, 1,000 proxy-shaped series × 20 samples
// at 60 s; the two requests in flight are series-disjoint (each sender
// has its 1,000 series, as seriesgen's push splits a time slice), and
// time moves forward request after request. One b.N is one request.
func BenchmarkRemoteWriteIn(b *testing.B) {
	const (
		inflight  = 2
		series    = 1000
		perSeries = 20
		step      = int64(60_000)
	)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	db, err := pebblestore.Open(b.TempDir(), pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}()
	w := receiver.NewSeriesWriter(db.Series(), receiver.SeriesWriterOptions{
		Now:         func() time.Time { return now },
		SetMetadata: db.Series().SetMetadata,
	})
	mux := http.NewServeMux()
	w.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: inflight}}

	// Each sender's requests, time moving forward, ending before now.
	perSender := (b.N + inflight - 1) / inflight
	start := now.UnixMilli() - int64(perSender*perSeries)*step
	all := proxySeries(inflight*series, 1)
	bodies := make([][][]byte, inflight)
	for s := range bodies {
		bodies[s] = rwRequests(b, all[s*series:(s+1)*series], perSender, perSeries, start, step)
	}
	send := func(body []byte) error {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/write", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		msg, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
		}
		return nil
	}
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make([]error, inflight)
	for s := range inflight {
		wg.Go(func() {
			for i := s; i < b.N; i += inflight {
				if err := send(bodies[s][i/inflight]); err != nil {
					errs[s] = err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*series*perSeries)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*series*perSeries), "ns/sample")
	// On a shared machine the rate follows the CPU the process gets; the
	// samples per CPU-second of the process (server and client) do less.
	b.ReportMetric(float64(b.N*series*perSeries)/cpu.Seconds(), "samples/cpu-s")
}

// cpuTime returns the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
