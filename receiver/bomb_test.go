package receiver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rleFrame is a zstd frame of blocks RLE blocks of 128 KiB of zeros (4
// bytes each) whose header asks for a window of 1<<windowLog bytes, or,
// with windowLog 0, a single-segment frame declaring its content size.
func rleFrame(windowLog, blocks int) []byte {
	const block = 128 << 10
	b := binary.LittleEndian.AppendUint32(nil, 0xFD2FB528)
	if windowLog == 0 {
		b = append(b, 0xE0) // single segment, 8-byte content size
		b = binary.LittleEndian.AppendUint64(b, uint64(blocks)*block)
	} else {
		b = append(b, 0x00, byte(windowLog-10)<<3)
	}
	for i := range blocks {
		h := uint32(block)<<3 | 1<<1 // RLE
		if i == blocks-1 {
			h |= 1 // last block
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return b
}

// heapHighWater samples the Go heap's live and unswept objects until
// stop is called, and returns the highest figure seen.
func heapHighWater() (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var high uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			high = max(high, sample[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		return high
	}
}

// bombs are the compressed bodies of the memory attack (issue 17, attack
// 5): each small, each inflating far past the request limit, or asking
// for a window far past what the receiver holds for a frame.
func bombs(t *testing.T) map[string]struct {
	encoding string
	body     []byte
} {
	return map[string]struct {
		encoding string
		body     []byte
	}{
		"zstd 128 MiB window":  {"zstd", rleFrame(27, 1024)},
		"zstd 1 MiB window":    {"zstd", rleFrame(20, 1024)},
		"zstd content 128 MiB": {"zstd", rleFrame(0, 1024)},
		"zstd frames":          {"zstd", bomb(t, "zstd")},
		"gzip":                 {"gzip", bomb(t, "gzip")},
	}
}

// bombLimits are the test's small budget and request limit: a bomb alone
// may take the request limit (a single request larger than the budget is
// taken when nothing else is in flight), several at once the budget.
const (
	bombBudget  = 4 << 20
	bombRequest = 16 << 20
	bombMargin  = 48 << 20 // the test process' own churn and garbage
	bombBound   = bombRequest + 2<<20
)

// TestHTTPBombsStayWithinBudget sends 32 compression bombs at once over
// OTLP/HTTP: each is refused (413, or 503 when the budget is full), the
// bytes held never pass the budget, the Go heap stays within the budget and
// a margin, and a normal export is served afterwards.
func TestHTTPBombsStayWithinBudget(t *testing.T) {
	s := startStack(t, Config{MaxInflightBytes: bombBudget, MaxRequestBytes: bombRequest})
	bs := bombs(t)
	valid := marshal(t, proxySpans(20, 1))
	runtime.GC()
	base := heapHighWater()()
	stop := heapHighWater()

	var wg sync.WaitGroup
	codesSeen := make(chan string, 64)
	for i := range 32 {
		for name, b := range bs {
			if (i+len(name))%len(bs) != 0 { // 32 in all, every kind
				continue
			}
			wg.Go(func() {
				r, err := s.send(t.Context(), http.MethodPost, contentProtobuf, b.encoding, b.body, false)
				if err != nil {
					codesSeen <- fmt.Sprintf("%s: %v", name, err)
					return
				}
				codesSeen <- fmt.Sprintf("%s: %d", name, r.code)
				if r.code != http.StatusRequestEntityTooLarge && r.code != http.StatusServiceUnavailable {
					t.Errorf("%s: %d %q", name, r.code, r.body)
				}
			})
		}
	}
	wg.Wait()
	high := stopAndLog(t, stop, base)
	close(codesSeen)
	require.NotEmpty(t, codesSeen)
	require.LessOrEqual(t, s.rcv.budget.peak.Load(), int64(bombBound), "bytes held never passed the budget, or one request alone")
	require.Less(t, high, base+bombBudget+bombBound+bombMargin, "the heap stayed within the budget and a margin")
	require.Zero(t, s.rcv.budget.inflight.Load())

	require.Equal(t, http.StatusRequestEntityTooLarge, s.post(t, contentProtobuf, "zstd", bs["zstd 128 MiB window"].body).code)
	r := s.post(t, contentProtobuf, "zstd", zstded(t, valid))
	require.Equal(t, http.StatusOK, r.code, "body: %q", r.body)
	r = s.post(t, contentProtobuf, "gzip", gzipped(t, valid))
	require.Equal(t, http.StatusOK, r.code, "body: %q", r.body)
}

func stopAndLog(t *testing.T, stop func() uint64, base uint64) uint64 {
	high := stop()
	t.Logf("heap: %d MiB before, %d MiB at most", base>>20, high>>20)
	return high
}

// grpcRaw sends msg, compressed with encoding, as one OTLP/gRPC trace
// export over HTTP/2 without TLS, as a gRPC client puts it on the wire, and
// returns the call's status. (A gRPC client would compress the message
// itself, and hold the 128 MiB it inflates to.)
func grpcRaw(t *testing.T, client *http.Client, addr, encoding string, msg []byte) (codes.Code, string, error) {
	frame := make([]byte, 5, 5+len(msg))
	frame[0] = 1 // compressed
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	frame = append(frame, msg...)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
		"http://"+addr+"/opentelemetry.proto.collector.trace.v1.TraceService/Export", bytes.NewReader(frame))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("Grpc-Encoding", encoding)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, "", err
	}
	get := func(k string) string {
		if v := resp.Trailer.Get(k); v != "" {
			return v
		}
		return resp.Header.Get(k) // a trailers-only answer
	}
	var code int
	if _, err := fmt.Sscan(get("Grpc-Status"), &code); err != nil {
		return 0, "", fmt.Errorf("no grpc-status: %w", err)
	}
	m, _ := url.PathUnescape(get("Grpc-Message"))
	return codes.Code(code), m, nil
}

// TestGRPCBombsStayWithinBudget sends 40 compression bombs at once over
// OTLP/gRPC: gRPC decompresses a message before the handler sees it, so the
// decompressor itself reserves what it produces. Each is refused
// (ResourceExhausted past the request limit or for a window too large,
// Unavailable when the budget is full), the bytes held never pass the
// budget, the Go heap stays within the budget and a margin, and normal
// compressed exports are served afterwards.
func TestGRPCBombsStayWithinBudget(t *testing.T) {
	s := startStack(t, Config{MaxInflightBytes: bombBudget, MaxRequestBytes: bombRequest})
	bs := bombs(t)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	runtime.GC()
	base := heapHighWater()()
	stop := heapHighWater()

	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[codes.Code]int{}
	for i := range 40 {
		for name, b := range bs {
			if (i+len(name))%len(bs) != 0 {
				continue
			}
			wg.Go(func() {
				code, msg, err := grpcRaw(t, client, s.grpcAddr, b.encoding, b.body)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				mu.Lock()
				seen[code]++
				mu.Unlock()
				if code != codes.ResourceExhausted && code != codes.Unavailable {
					t.Errorf("%s: %s %q", name, code, msg)
				}
			})
		}
	}
	wg.Wait()
	high := stopAndLog(t, stop, base)
	t.Logf("statuses: %v", seen)
	require.LessOrEqual(t, s.rcv.budget.peak.Load(), int64(bombBound), "bytes held never passed the budget, or one request alone")
	require.Less(t, high, base+bombBudget+bombBound+bombMargin, "the heap stayed within the budget and a margin")
	require.Zero(t, s.rcv.budget.inflight.Load())

	code, msg, err := grpcRaw(t, client, s.grpcAddr, "zstd", bs["zstd 128 MiB window"].body)
	require.NoError(t, err)
	require.Equal(t, codes.ResourceExhausted, code, msg)
	require.Contains(t, msg, "zstd window larger than")

	for _, enc := range []string{"gzip", "zstd"} {
		_, err := s.export(t.Context(), proxySpans(20, 1), grpc.UseCompressor(enc))
		require.NoError(t, err, enc)
	}
	require.Positive(t, s.requests())
}

// TestGRPCCompressedRefusalIsRetryable: a compressed gRPC export that
// arrives while the budget is full is refused while it is decompressed,
// and must still be answered Unavailable with RetryInfo, which clients
// retry, not gRPC's own Internal, which they drop.
func TestGRPCCompressedRefusalIsRetryable(t *testing.T) {
	td := proxySpans(8, 1)
	body := marshal(t, td)
	c := newBlockingConsumer()
	s := startReceiver(t, Config{MaxInflightBytes: 4096}, c)
	t.Cleanup(c.unblock)

	done := make(chan error, 1)
	go func() {
		_, err := s.send(t.Context(), http.MethodPost, contentProtobuf, "", body, false)
		done <- err
	}()
	require.Equal(t, 8, <-c.entered, "the first request holds the budget")

	for _, enc := range []string{"gzip", "zstd"} {
		_, err := s.export(t.Context(), td, grpc.UseCompressor(enc))
		requireRetryableGRPC(t, err, time.Second)
		require.Contains(t, status.Convert(err).Message(), errInflateBudget.Error(), enc)
	}
	require.EqualValues(t, 2, s.counter(`proxylens_otlp_requests_total{transport="grpc",outcome="overloaded"}`))

	c.unblock()
	require.NoError(t, <-done)
	require.Zero(t, s.rcv.budget.inflight.Load())
	for _, enc := range []string{"gzip", "zstd"} {
		_, err := s.export(t.Context(), td, grpc.UseCompressor(enc))
		require.NoError(t, err, enc)
	}
}

// TestGRPCInflateBudgetFollowsRunningReceivers: gRPC decompression is
// bounded by the budget of the receiver started last among those running,
// and falls back to the one before when it shuts down.
func TestGRPCInflateBudgetFollowsRunningReceivers(t *testing.T) {
	a := startReceiver(t, Config{}, failingConsumer{err: errors.New("not reached")})
	require.Same(t, &a.rcv.budget, grpcInflateBudget.Load())

	b, err := New(Config{GRPCAddr: "127.0.0.1:0"}, testMapper(), failingConsumer{err: errors.New("not reached")}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, b.Start(t.Context()))
	require.Same(t, &b.budget, grpcInflateBudget.Load())
	require.NoError(t, b.Shutdown(t.Context()))
	require.NoError(t, b.Shutdown(t.Context()), "twice")
	require.Same(t, &a.rcv.budget, grpcInflateBudget.Load())
}
