package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"

	"github.com/proxylens/proxylens/internal/traffic"
)

type loadgenConfig struct {
	endpoint    string
	connections int
	concurrency int
	batch       int
	payloads    int
	rate        float64
	duration    time.Duration
	metricsURL  string
	compression string
	domains     int
}

// loadgen sends pre-encoded OTLP/gRPC export requests flat out or at a rate,
// over several connections, and reports throughput and export latency (and,
// with --metrics-url, the server's spans per CPU-second).
func loadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxylens loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c loadgenConfig
	fs.StringVar(&c.endpoint, "endpoint", "127.0.0.1:4317", "OTLP/gRPC endpoint")
	fs.IntVar(&c.connections, "connections", 4, "gRPC connections")
	fs.IntVar(&c.concurrency, "concurrency", 0, "requests in flight at once, over all connections (default: 2 per connection)")
	fs.IntVar(&c.batch, "batch", 512, "spans per export request")
	fs.IntVar(&c.payloads, "payloads", 64, "distinct pre-encoded requests to cycle through")
	fs.Float64Var(&c.rate, "rate", 0, "spans per second (0: flat out)")
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "how long to send")
	fs.StringVar(&c.metricsURL, "metrics-url", "", "the server's /metrics URL, to report its CPU time (process_cpu_seconds_total)")
	fs.StringVar(&c.compression, "compression", "none", "none or gzip")
	fs.IntVar(&c.domains, "domains", 500, "target domains in the traffic (more domains, more series)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: proxylens loadgen [flags]\n\nLoad-test an OTLP/gRPC endpoint with pre-encoded proxy spans.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "proxylens loadgen: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if c.concurrency == 0 {
		c.concurrency = 2 * c.connections
	}
	var errs []string
	if c.connections < 1 || c.concurrency < 1 || c.batch < 1 || c.payloads < 1 || c.domains < 1 {
		errs = append(errs, "--connections, --concurrency, --batch, --payloads and --domains must be at least 1")
	}
	if c.rate < 0 || math.IsNaN(c.rate) {
		errs = append(errs, fmt.Sprintf("--rate: must be >= 0, got %v", c.rate))
	}
	if c.duration <= 0 {
		errs = append(errs, fmt.Sprintf("--duration: must be positive, got %s", c.duration))
	}
	if c.compression != "none" && c.compression != "gzip" {
		errs = append(errs, fmt.Sprintf("--compression: must be none or gzip, got %q", c.compression))
	}
	if len(errs) > 0 {
		fmt.Fprintln(stderr, "proxylens loadgen: "+strings.Join(errs, "\n  "))
		return errUsage
	}
	rep, err := runLoadgen(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, rep)
	return nil
}

// encodePayloads pre-encodes export requests of realistic spans ending
// around now, as a batching SDK would send them.
func encodePayloads(c loadgenConfig) ([][]byte, error) {
	model := traffic.NewModel(c.domains)
	out := make([][]byte, c.payloads)
	now := time.Now()
	for i := range out {
		gen := traffic.NewGenerator(model, uint64(i+1))
		reqs := make([]traffic.Request, c.batch)
		for j := range reqs {
			reqs[j] = gen.Next(now.Add(-time.Duration(c.batch-j) * time.Millisecond))
		}
		b, err := ptraceotlp.NewExportRequestFromTraces(traffic.Traces("loadgen-"+strconv.Itoa(i%4), reqs)).MarshalProto()
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

// rawBytes is a pre-encoded request; rawResponse swallows the response.
type (
	rawBytes    []byte
	rawResponse struct{}
)

// bytesCodec sends rawBytes as they are and ignores responses.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "proto" }

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(rawBytes)
	if !ok {
		return nil, fmt.Errorf("bytesCodec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (bytesCodec) Unmarshal(mem.BufferSlice, any) error { return nil }

var _ encoding.CodecV2 = bytesCodec{}

func runLoadgen(ctx context.Context, c loadgenConfig) (string, error) {
	payloads, err := encodePayloads(c)
	if err != nil {
		return "", fmt.Errorf("encode payloads: %w", err)
	}
	conns := make([]*grpc.ClientConn, c.connections)
	for i := range conns {
		conns[i], err = grpc.NewClient(c.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return "", fmt.Errorf("connect to %s: %w", c.endpoint, err)
		}
		defer conns[i].Close()
	}
	callOpts := []grpc.CallOption{grpc.ForceCodecV2(bytesCodec{})}
	if c.compression == "gzip" {
		callOpts = append(callOpts, grpc.UseCompressor(gzip.Name))
	}
	cpuBefore, cpuErr := serverCPU(ctx, c.metricsURL)

	ctx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	var (
		next     atomic.Int64 // request number, for pacing and payload choice
		okSpans  atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
		mu       sync.Mutex
		lat      []time.Duration
		wg       sync.WaitGroup
	)
	start := time.Now()
	for w := range c.concurrency {
		wg.Go(func() {
			conn := conns[w%len(conns)]
			var mine []time.Duration
			for ctx.Err() == nil {
				n := next.Add(1) - 1
				if c.rate > 0 {
					due := start.Add(time.Duration(float64(n) * float64(c.batch) / c.rate * float64(time.Second)))
					if wait := time.Until(due); wait > 0 {
						select {
						case <-time.After(wait):
						case <-ctx.Done():
							continue
						}
					}
				}
				t := time.Now()
				err := conn.Invoke(ctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
					rawBytes(payloads[n%int64(len(payloads))]), &rawResponse{}, callOpts...)
				if err != nil {
					// Requests cut off by the end of the run are not failures.
					if ctx.Err() == nil && time.Since(start) < c.duration {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				mine = append(mine, time.Since(t))
				okSpans.Add(int64(c.batch))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	var b strings.Builder
	spans := okSpans.Load()
	fmt.Fprintf(&b, "sent %d spans in %d requests over %d connections (%d in flight) in %s\n",
		spans, len(lat), c.connections, c.concurrency, elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "throughput: %.0f spans/s\n", float64(spans)/elapsed.Seconds())
	if len(lat) > 0 {
		slices.Sort(lat)
		q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
		fmt.Fprintf(&b, "export latency: p50 %s, p90 %s, p99 %s, max %s\n", q(0.5), q(0.9), q(0.99), lat[len(lat)-1])
	}
	if f := failures.Load(); f > 0 {
		fmt.Fprintf(&b, "failed requests: %d (first: %v)\n", f, firstErr.Load())
	}
	if c.metricsURL != "" {
		cpuAfter, err := serverCPU(context.Background(), c.metricsURL)
		if err == nil && cpuErr == nil {
			cpu := cpuAfter - cpuBefore
			fmt.Fprintf(&b, "server CPU: %.2f s (%.2f cores): %.0f spans per CPU-second\n", cpu, cpu/elapsed.Seconds(), float64(spans)/cpu)
		} else {
			fmt.Fprintf(&b, "server CPU: unavailable (%v)\n", errors.Join(cpuErr, err))
		}
	}
	return b.String(), nil
}

// serverCPU reads process_cpu_seconds_total from a /metrics endpoint.
func serverCPU(ctx context.Context, url string) (float64, error) {
	if url == "" {
		return 0, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	defer func() { _, _ = io.Copy(io.Discard, resp.Body) }() // read it all: the server logs cut-off scrapes
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_cpu_seconds_total "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, errors.New("no process_cpu_seconds_total in " + url)
}
