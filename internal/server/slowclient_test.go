package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSlowClientsOnTheAPI reproduces attack 1 of issue 17 on the query
// API's listener, which also takes remote write: uploads that announce a
// body and trickle it, and a client that never finishes its headers, are
// cut off after receiver.read_timeout and receiver.read_header_timeout
// (short here), while queries are answered meanwhile and afterwards.
func TestSlowClientsOnTheAPI(t *testing.T) {
	cfg := testConfig(t)
	cfg.Receiver.ReadTimeout, cfg.Receiver.ReadHeaderTimeout = time.Second, time.Second
	s := start(t, cfg, Options{})
	addr := s.HTTPAddr().String()
	dial := func(request string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		_, err = io.WriteString(c, request)
		require.NoError(t, err)
		// A bound for a broken server, not a timing assertion.
		require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
		return c, bufio.NewReader(c)
	}
	bodies := map[string]string{
		"/api/v1/write": "Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: 67108864",
		"/api/v1/query": "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000",
	}
	slow := map[string]*bufio.Reader{}
	for path, headers := range bodies {
		c, br := dial(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\nq", path, addr, headers))
		_, err := c.Write([]byte("u")) // the trickle
		require.NoError(t, err)
		slow[path] = br
	}
	_, headers := dial("GET /api/v1/query?query=1 HTTP/1.1\r\nHost: " + addr + "\r\n")

	code, body, _ := get(t, "http://"+addr+"/api/v1/query?query=1%2B1")
	require.Equal(t, http.StatusOK, code, "answered meanwhile: %s", body)

	for path, br := range slow {
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err, path)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		if path == "/api/v1/write" {
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", path, b)
			require.Contains(t, string(b), "receiver.read_timeout", path)
		} else {
			// net/http cancels the request's context when reading its body
			// fails; the query handler answers that (499) unless it reports
			// the form's error first.
			require.Contains(t, []int{http.StatusBadRequest, 499}, resp.StatusCode, "%s: %s", path, b)
		}
		_, err = br.ReadByte()
		require.ErrorIs(t, err, io.EOF, "%s: the connection is closed", path)
	}
	_, err := headers.ReadByte()
	require.ErrorIs(t, err, io.EOF, "a request whose headers do not arrive is closed unanswered")

	require.Equal(t, 2.0, scrape(t, s, `proxylens_http_read_timeouts_total{listener="api"}`))
	code, body, _ = get(t, "http://"+addr+"/api/v1/query?query=1%2B1")
	require.Equal(t, http.StatusOK, code, "answered afterwards: %s", body)
}
