package server

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
)

// TestRemoteWriteUnderTheBudget reproduces attacks 1 and 5 of issue 17 on
// the query API's write endpoints, with a small in-flight budget: uploads
// to /api/v1/write and /api/v1/otlp/v1/metrics that announce a large body
// and trickle hold what they sent (a first chunk), not what they
// announced, and do not keep a normal remote write from succeeding; snappy
// bombs (a few bytes that claim megabytes decoded) are refused with 503
// and Retry-After while the budget cannot take what they claim, or 400,
// and the bytes held never pass the budget; afterwards a normal remote
// write succeeds and its samples are there exactly once.
func TestRemoteWriteUnderTheBudget(t *testing.T) {
	const (
		budget    = 1 << 20
		chunk     = 64 << 10 // the first reservation of a body (receiver's readChunk)
		tricklers = 4
	)
	cfg := testConfig(t)
	cfg.Receiver.MaxInflightBytes = budget
	cfg.Receiver.MaxRequestBytes = 8 << 20
	s := start(t, cfg, Options{})
	addr := s.HTTPAddr().String()
	inflight := func() float64 { return scrape(t, s, "proxylens_inflight_request_bytes") }
	peak := func() float64 { return scrape(t, s, "proxylens_inflight_request_bytes_peak") }

	// Slow uploads: each announces the largest request allowed and sends
	// one byte.
	var conns []net.Conn
	for i := range tricklers {
		path, ctype := "/api/v1/write", "application/x-protobuf\r\nContent-Encoding: snappy"
		if i == 0 {
			path, ctype = "/api/v1/otlp/v1/metrics", "application/x-protobuf"
		}
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		_, err = fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\nx", path, addr, ctype, cfg.Receiver.MaxRequestBytes)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	require.Eventually(t, func() bool { return inflight() == tricklers*chunk }, 10*time.Second, 10*time.Millisecond,
		"each slow upload holds its first chunk, not the 8 MiB it announced")

	// A normal remote write meanwhile.
	now := time.Now()
	normal := func(name string) *prompb.WriteRequest {
		return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels: series(name, "job", "node"),
			Samples: []prompb.Sample{
				{Value: 1, Timestamp: now.Add(-2 * time.Minute).UnixMilli()},
				{Value: 2, Timestamp: now.Add(-time.Minute).UnixMilli()},
				{Value: 3, Timestamp: now.UnixMilli()},
			},
		}}}
	}
	code, body := postWrite(t, s, normal("rw_during_trickle"), "")
	require.Equal(t, http.StatusNoContent, code, body)
	require.LessOrEqual(t, peak(), float64(tricklers*chunk+chunk+4<<10),
		"the slow uploads and the normal write held what they sent and decoded")

	// Snappy bombs that claim more than the budget has left: refused
	// before their decoded size is allocated.
	for _, c := range sendBombs(t, addr, 8, 4<<20) {
		require.Equal(t, http.StatusServiceUnavailable, c.code, c.body)
		require.NotEmpty(t, c.retryAfter, "503 says when to retry")
		require.Contains(t, c.body, "receiver.max_inflight_bytes")
	}
	require.Equal(t, 8.0, scrape(t, s, `proxylens_write_requests_total{api="remote_write",outcome="overloaded"}`), "the refusals are counted")
	// Bombs that each fit what is left, but not together: each decoded
	// alone (400: they are corrupt) or refused (503).
	for _, c := range sendBombs(t, addr, 8, 700<<10) {
		require.Contains(t, []int{http.StatusBadRequest, http.StatusServiceUnavailable}, c.code, c.body)
	}
	require.GreaterOrEqual(t, peak(), float64(tricklers*chunk+700<<10), "the decoded size was reserved")
	require.LessOrEqual(t, peak(), float64(budget), "the bytes held never passed the budget")

	// The slow uploads go away; everything they held is released.
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	require.Eventually(t, func() bool { return inflight() == 0 }, 10*time.Second, 10*time.Millisecond)

	code, body = postWrite(t, s, normal("rw_after_bombs"), "")
	require.Equal(t, http.StatusNoContent, code, body)
	for _, name := range []string{"rw_during_trickle", "rw_after_bombs"} {
		require.Equal(t, "3", queryOne(t, addr, "count_over_time("+name+"[10m])", now), "%s: every sample exactly once", name)
		require.Equal(t, "6", queryOne(t, addr, "sum_over_time("+name+"[10m])", now), name)
	}
}

type bombAnswer struct {
	code       int
	body       string
	retryAfter string
}

// sendBombs posts n snappy bodies at once to /api/v1/write that claim to
// decode to claimed bytes but hold a few.
func sendBombs(t *testing.T, addr string, n int, claimed uint64) []bombAnswer {
	t.Helper()
	bomb := binary.AppendUvarint(nil, claimed)
	bomb = append(bomb, 0x0c, 'b', 'o', 'm', 'b') // a literal of 4 bytes, then nothing
	out := make([]bombAnswer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/api/v1/write", bytes.NewReader(bomb))
			if err != nil {
				out[i].body = err.Error()
				return
			}
			req.Header.Set("Content-Encoding", "snappy")
			req.Header.Set("Content-Type", "application/x-protobuf")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				out[i].body = err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			out[i] = bombAnswer{code: resp.StatusCode, body: string(b), retryAfter: resp.Header.Get("Retry-After")}
		})
	}
	wg.Wait()
	return out
}

// queryOne answers an instant query at ts as its values, space-separated.
func queryOne(t *testing.T, addr, q string, ts time.Time) string {
	t.Helper()
	code, body, _ := get(t, fmt.Sprintf("http://%s/api/v1/query?query=%s&time=%d", addr, url.QueryEscape(q), ts.Unix()+1))
	require.Equal(t, http.StatusOK, code, body)
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &r), body)
	var out bytes.Buffer
	for i, v := range r.Data.Result {
		if i > 0 {
			out.WriteByte(' ')
		}
		fmt.Fprint(&out, v.Value[1])
	}
	return out.String()
}
