package receiver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/proxylens/proxylens/otelanalytics"
)

// failingConsumer refuses every batch with err.
type failingConsumer struct{ err error }

func (c failingConsumer) Consume(context.Context, []otelanalytics.Record) error { return c.err }

// blockingConsumer holds every batch until release is closed (or the
// request's context ends), announcing each on entered.
type blockingConsumer struct {
	entered chan int
	release chan struct{}
	once    sync.Once
}

func newBlockingConsumer() *blockingConsumer {
	return &blockingConsumer{entered: make(chan int, 64), release: make(chan struct{})}
}

func (c *blockingConsumer) Consume(ctx context.Context, recs []otelanalytics.Record) error {
	select {
	case c.entered <- len(recs):
	default:
	}
	select {
	case <-c.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *blockingConsumer) unblock() { c.once.Do(func() { close(c.release) }) }

// requireRetryableHTTP checks a 503 that tells the client to retry.
func requireRetryableHTTP(t *testing.T, r reply, ctype, retryAfter string) {
	t.Helper()
	require.Equal(t, http.StatusServiceUnavailable, r.code, "body: %q", r.body)
	require.Equal(t, retryAfter, r.header.Get("Retry-After"))
	require.Equal(t, ctype, r.header.Get("Content-Type"))
	require.Equal(t, int32(codes.Unavailable), decodeStatus(t, r).GetCode())
}

// requireRetryableGRPC checks an Unavailable status with a RetryInfo detail.
func requireRetryableGRPC(t *testing.T, err error, delay time.Duration) {
	t.Helper()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	ri := retryInfo(err)
	require.NotNil(t, ri, "Unavailable carries a RetryInfo detail")
	require.Equal(t, delay, ri.GetRetryDelay().AsDuration())
}

// TestConsumerRefusals checks the statuses of a request whose batch the
// consumer refuses: the client must retry it later.
func TestConsumerRefusals(t *testing.T) {
	body := marshal(t, proxySpans(10, 1))
	jsonReq, err := ptraceotlp.NewExportRequestFromTraces(proxySpans(10, 1)).MarshalJSON()
	require.NoError(t, err)
	cases := []struct {
		name     string
		err      error
		outcome  string
		grpcCode codes.Code // Unavailable means: with RetryInfo
	}{
		{"overloaded", otelanalytics.ErrOverloaded, "overloaded", codes.Unavailable},
		{"stopped", otelanalytics.ErrStopped, "unavailable", codes.Unavailable},
		{"store failed", fmt.Errorf("commit ingest batch: %w", errors.New("disk full")), "unavailable", codes.Unavailable},
		{"canceled", fmt.Errorf("wait: %w", context.Canceled), "unavailable", codes.Canceled},
		{"deadline", context.DeadlineExceeded, "unavailable", codes.DeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startReceiver(t, Config{RetryAfter: 3 * time.Second}, failingConsumer{err: tc.err})

			r := s.post(t, contentProtobuf, "", body)
			requireRetryableHTTP(t, r, contentProtobuf, "3")
			require.Contains(t, decodeStatus(t, r).GetMessage(), tc.err.Error())
			r = s.post(t, "application/json", "gzip", gzipped(t, jsonReq))
			requireRetryableHTTP(t, r, contentJSON, "3")

			_, err := s.export(t.Context(), proxySpans(10, 1))
			if tc.grpcCode == codes.Unavailable {
				requireRetryableGRPC(t, err, 3*time.Second)
			} else {
				require.Equal(t, tc.grpcCode, status.Code(err), "%v", err)
			}
			require.Contains(t, status.Convert(err).Message(), tc.err.Error())

			require.EqualValues(t, 2, s.counter(fmt.Sprintf(`proxylens_otlp_requests_total{transport="http",outcome=%q}`, tc.outcome)))
			require.EqualValues(t, 1, s.counter(fmt.Sprintf(`proxylens_otlp_requests_total{transport="grpc",outcome=%q}`, tc.outcome)))
			reason := "unavailable"
			if tc.outcome == "overloaded" {
				reason = "overloaded"
			}
			require.EqualValues(t, 30, s.counter(fmt.Sprintf(`proxylens_spans_refused_total{reason=%q}`, reason)))
		})
	}
}

// saturatedConsumer is a recordingConsumer that is saturated while full
// is set.
type saturatedConsumer struct {
	recordingConsumer
	full atomic.Bool
}

func (c *saturatedConsumer) Saturated() bool { return c.full.Load() }

// TestSaturatedRefusedBeforeDecoding: while the consumer says it is
// saturated, requests on both transports are refused as overloaded and
// retryable without being decoded (no spans received, none consumed); a
// malformed body too, protobuf or JSON. Once it is not, they are taken.
func TestSaturatedRefusedBeforeDecoding(t *testing.T) {
	c := &saturatedConsumer{}
	c.full.Store(true)
	s := startReceiver(t, Config{RetryAfter: 2 * time.Second}, c)
	requireRetryableHTTP(t, s.post(t, contentProtobuf, "", marshal(t, proxySpans(10, 1))), contentProtobuf, "2")
	requireRetryableHTTP(t, s.post(t, contentProtobuf, "", []byte{0xff, 0xff}), contentProtobuf, "2")
	requireRetryableHTTP(t, s.post(t, "application/json", "", []byte(`{"resourceSpans": [`)), contentJSON, "2")
	_, err := s.export(t.Context(), proxySpans(10, 1))
	requireRetryableGRPC(t, err, 2*time.Second)
	require.EqualValues(t, 3, s.counter(`proxylens_otlp_requests_total{transport="http",outcome="overloaded"}`))
	require.EqualValues(t, 1, s.counter(`proxylens_otlp_requests_total{transport="grpc",outcome="overloaded"}`))
	require.Zero(t, s.counter(`proxylens_spans_received_total{transport="http"}`)+s.counter(`proxylens_spans_received_total{transport="grpc"}`))
	require.Zero(t, s.counter(`proxylens_spans_refused_total{reason="overloaded"}`), "not decoded: not counted as spans")
	require.Empty(t, c.take())

	c.full.Store(false)
	_, err = s.export(t.Context(), proxySpans(10, 1))
	require.NoError(t, err)
	require.Equal(t, 200, s.post(t, contentProtobuf, "", marshal(t, proxySpans(10, 1))).code)
	require.Len(t, c.take(), 20)
}

// TestPipelineStopped refuses requests as retryable once the real pipeline
// has stopped, as during shutdown.
func TestPipelineStopped(t *testing.T) {
	s := startStack(t, Config{})
	require.NoError(t, s.pipe.Shutdown(t.Context()))

	r := s.post(t, contentProtobuf, "", marshal(t, proxySpans(5, 1)))
	requireRetryableHTTP(t, r, contentProtobuf, "1")
	require.Contains(t, decodeStatus(t, r).GetMessage(), otelanalytics.ErrStopped.Error())

	_, err := s.export(t.Context(), proxySpans(5, 2))
	requireRetryableGRPC(t, err, time.Second)

	// The SDK exporter reports the refusal (retries are off).
	exp, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpoint(s.rcv.HTTPAddr().String()), otlptracehttp.WithInsecure(), noRetryHTTP)
	require.NoError(t, err)
	defer func() { require.NoError(t, exp.Shutdown(context.Background())) }()
	err = exp.ExportSpans(t.Context(), sdkSpans(3, 1))
	require.ErrorContains(t, err, "retry-able request failure")
	require.ErrorContains(t, err, otelanalytics.ErrStopped.Error())
	require.Zero(t, s.requests())
}

// TestInflightBytesBound holds one request inside the consumer and checks
// that a second one is refused as retryable while the in-flight bound is
// reached, and that the first succeeds once released.
func TestInflightBytesBound(t *testing.T) {
	td := proxySpans(8, 1)
	body := marshal(t, td)
	require.Greater(t, len(body), 2048, "two requests pass the 4096-byte bound")

	type result struct {
		code int
		err  error
	}
	hold := map[string]func(s *server, ctx context.Context) result{
		"http": func(s *server, ctx context.Context) result {
			r, err := s.send(ctx, http.MethodPost, contentProtobuf, "", body, false)
			return result{code: r.code, err: err}
		},
		"grpc": func(s *server, ctx context.Context) result {
			_, err := s.export(ctx, td)
			return result{code: int(status.Code(err)), err: err}
		},
	}
	for _, first := range []string{"http", "grpc"} {
		for _, second := range []string{"http", "grpc"} {
			t.Run(first+"+"+second, func(t *testing.T) {
				c := newBlockingConsumer()
				s := startReceiver(t, Config{MaxInflightBytes: 4096}, c)
				t.Cleanup(c.unblock) // runs before the receiver's shutdown

				done := make(chan result, 1)
				go func() { done <- hold[first](s, t.Context()) }()
				require.Equal(t, 8, <-c.entered, "the first request is inside the consumer")
				require.Positive(t, s.rcv.budget.inflight.Load())

				switch second {
				case "http":
					requireRetryableHTTP(t, s.post(t, contentProtobuf, "", body), contentProtobuf, "1")
				case "grpc":
					_, err := s.export(t.Context(), td)
					requireRetryableGRPC(t, err, time.Second)
				}
				require.Empty(t, c.entered, "the refused request never reached the consumer")

				c.unblock()
				res := <-done
				require.NoError(t, res.err)
				if first == "http" {
					require.Equal(t, http.StatusOK, res.code)
				}
				require.Zero(t, s.rcv.budget.inflight.Load())

				// With the first request gone, both transports are served again.
				require.Equal(t, http.StatusOK, s.post(t, contentProtobuf, "", body).code)
				_, err := s.export(t.Context(), td)
				require.NoError(t, err)
				require.EqualValues(t, 1, s.counter(fmt.Sprintf(`proxylens_otlp_requests_total{transport=%q,outcome="overloaded"}`, second)))
			})
		}
	}
}

// TestInflightBytesSingleLargeRequest checks that a request larger than the
// in-flight bound is still taken when nothing else is in flight.
func TestInflightBytesSingleLargeRequest(t *testing.T) {
	s := startStack(t, Config{MaxInflightBytes: 4096})
	td := proxySpans(100, 1)
	require.Greater(t, len(marshal(t, td)), 4096)
	require.Equal(t, http.StatusOK, s.post(t, contentProtobuf, "", marshal(t, td)).code)
	_, err := s.export(t.Context(), td)
	require.NoError(t, err)
	require.Positive(t, s.requests())
}
