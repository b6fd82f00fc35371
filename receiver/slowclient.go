package receiver

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/proxylens/proxylens/selfmetrics"
)

// Slow clients: a request's headers must arrive within
// Config.ReadHeaderTimeout (http.Server's ReadHeaderTimeout) and its body
// within Config.ReadTimeout of the handler starting. The body's bound is a
// read deadline set per request and cleared once the body is read to its
// end, rather than http.Server's ReadTimeout: that one also stays on the
// connection while the handler runs, and when it passes the server's
// background read cancels the request's context, which would cut off the
// query API's long queries and streamed exports. Writing responses is not
// bounded here.

// ErrReadTimeout is what reading a request body returns when the body did
// not arrive within the read timeout.
var ErrReadTimeout = errors.New("request body not received in time")

// BoundReads makes h's request bodies fail with ErrReadTimeout when they
// do not arrive within timeout (0: no bound), counted in
// proxylens_http_read_timeouts_total{listener=listener}. Wrap the whole
// handler of an http.Server with it, outside anything that wraps the
// ResponseWriter. reg may be nil.
func BoundReads(h http.Handler, timeout time.Duration, reg *selfmetrics.Registry, listener string) http.Handler {
	if timeout <= 0 {
		return h
	}
	timeouts := selfmetrics.OrNew(reg).Counter(fmt.Sprintf(`proxylens_http_read_timeouts_total{listener=%q}`, listener),
		"HTTP requests whose body did not arrive within receiver.read_timeout; the client got 408 or the connection was closed.")
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// Without a body the server is already watching the connection for
		// the client going away; a deadline would cancel the request.
		if req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0 {
			rc := http.NewResponseController(w)
			if err := rc.SetReadDeadline(time.Now().Add(timeout)); err == nil {
				req.Body = &deadlineBody{ReadCloser: req.Body, rc: rc, timeout: timeout, timeouts: timeouts}
			}
		}
		h.ServeHTTP(w, req)
	})
}

// deadlineBody clears the read deadline once the body has been read to its
// end, so that the server's watch for a closed connection, which starts
// then, does not run into it while the handler works.
type deadlineBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	timeout  time.Duration
	timeouts *metrics.Counter
	done     bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.done {
		return n, err
	}
	switch {
	case errors.Is(err, io.EOF):
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.done = true
		b.timeouts.Inc()
		err = fmt.Errorf("%w: the body did not arrive within %s (receiver.read_timeout)", ErrReadTimeout, b.timeout)
	}
	return n, err
}
