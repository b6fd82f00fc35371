package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
)

// TestHardeningAgainstTheBinary runs issue 17's attacks that need no
// configuration against the built binary on its defaults, one after
// another, while spans keep being acknowledged: a stalled upload, a
// forged proxy_* counter, a query of death and an anonymous profile. Each
// gets a clear refusal, and the server keeps counting exactly. The
// packages' tests go through each attack in depth.
func TestHardeningAgainstTheBinary(t *testing.T) {
	p := runBinary(t, t.TempDir())
	api := "http://" + p.http
	sendSpans(t, p.grpc, 100, 0)

	// A stalled upload that announces 64 MiB holds nothing that others
	// need: spans and queries go on while it is open.
	stalled, err := net.Dial("tcp", p.http)
	require.NoError(t, err)
	defer stalled.Close()
	_, err = fmt.Fprintf(stalled, "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\nContent-Length: %d\r\n\r\nx", 64<<20-1)
	require.NoError(t, err)
	sendSpans(t, p.grpc, 100, 100)

	// A forged counter: refused, and never seen by queries.
	wr := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "proxy_requests_total"}, {Name: "source", Value: "forged"}},
		Samples: []prompb.Sample{{Timestamp: time.Now().UnixMilli(), Value: 1e6}},
	}}}
	body, err := wr.Marshal()
	require.NoError(t, err)
	resp, err := http.Post(api+"/api/v1/write", "application/x-protobuf", bytes.NewReader(snappy.Encode(nil, body)))
	require.NoError(t, err)
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(msg))
	require.Contains(t, string(msg), "names starting with proxy_ or proxylens_ are written by proxylens only")

	// A query of death: refused at once, whatever its timeout.
	deep := strings.Repeat("(", 50_000) + "1" + strings.Repeat(")", 50_000)
	resp, err = http.PostForm(api+"/api/v1/query", url.Values{"query": {deep}, "timeout": {"1s"}})
	require.NoError(t, err)
	msg, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(msg))
	require.Contains(t, string(msg), "query.max_query_depth")

	// Profiles are an admin's: without one configured, there are none.
	resp, err = http.Get(api + "/debug/pprof/goroutine?debug=2")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	// Still counting exactly, the forged series nowhere.
	sendSpans(t, p.grpc, 100, 200)
	require.Equal(t, 300.0, p.metric(t, "proxy_requests_total"))
	resp, err = http.Get(api + "/api/v1/query?" + url.Values{"query": {`proxy_requests_total{source="forged"}`}}.Encode())
	require.NoError(t, err)
	msg, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(msg), `"result":[]`)
}
