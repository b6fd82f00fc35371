package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/VictoriaMetrics/metrics"
	"google.golang.org/grpc/peer"

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
//
// On OTLP/gRPC a call's handler starts when its headers arrive and reads
// the message itself; a message not in within Config.ReadTimeout of that
// closes the client's connection (grpcConns), the one handle on a call
// that gRPC's server offers before its message is in.

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
	timeouts := readTimeouts(reg, listener)
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

// readTimeouts is the count of requests cut off by the read timeout on a
// listener.
func readTimeouts(reg *selfmetrics.Registry, listener string) *metrics.Counter {
	return selfmetrics.OrNew(reg).Counter(fmt.Sprintf(`proxylens_http_read_timeouts_total{listener=%q}`, listener),
		"HTTP requests whose body, and OTLP/gRPC calls whose message, did not arrive within receiver.read_timeout; the client got 408 or the connection was closed.")
}

// grpcConns finds the connection of a gRPC call by its two ends'
// addresses. The listener hands gRPC its connections unwrapped (gRPC reads
// a bare *net.TCPConn without pinning a buffer, and sets its TCP user
// timeout), so the table cannot see them close: it holds them weakly, and
// drops an entry once its connection is garbage.
type grpcConns struct {
	mu sync.Mutex
	m  map[connEnds]*grpcConn
}

// connEnds are a TCP connection's local and remote addresses: with a
// wildcard listener or behind a NAT, two clients may share a remote one.
type connEnds struct{ local, remote netip.AddrPort }

// grpcConn is an entry of grpcConns.
type grpcConn struct {
	conn   weak.Pointer[net.TCPConn]
	closed atomic.Bool // by a read timeout
}

// grpcListener adds every connection it accepts to conns.
type grpcListener struct {
	net.Listener
	conns *grpcConns
}

func (l grpcListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		l.conns.add(tc)
	}
	return c, err
}

func endsOf(local, remote net.Addr) (connEnds, bool) {
	la, ok1 := local.(*net.TCPAddr)
	ra, ok2 := remote.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return connEnds{}, false
	}
	return connEnds{la.AddrPort(), ra.AddrPort()}, true
}

func (g *grpcConns) add(c *net.TCPConn) {
	ends, ok := endsOf(c.LocalAddr(), c.RemoteAddr())
	if !ok {
		return
	}
	e := &grpcConn{conn: weak.Make(c)}
	g.mu.Lock()
	if g.m == nil {
		g.m = map[connEnds]*grpcConn{}
	}
	g.m[ends] = e
	g.mu.Unlock()
	runtime.AddCleanup(c, func(ends connEnds) {
		g.mu.Lock()
		if g.m[ends] == e { // not a newer connection between the same ends
			delete(g.m, ends)
		}
		g.mu.Unlock()
	}, ends)
}

// of returns the entry and connection of the call ctx belongs to, or nil.
func (g *grpcConns) of(ctx context.Context) (*grpcConn, *net.TCPConn) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, nil
	}
	ends, ok := endsOf(p.LocalAddr, p.Addr)
	if !ok {
		return nil, nil
	}
	g.mu.Lock()
	e := g.m[ends]
	g.mu.Unlock()
	if e == nil {
		return nil, nil
	}
	if c := e.conn.Value(); c != nil {
		return e, c
	}
	return nil, nil
}

// boundGRPCRead starts the read timeout of the gRPC call ctx belongs to:
// unless stopped, it closes the call's connection when it passes (the
// first of the connection's calls to time out counts and logs it). nil
// when there is no bound. A caller whose Stop finds the timer fired must
// drop the call's message: its connection is closed, so the client
// cannot be told it was taken, and will send it again.
func (r *Receiver) boundGRPCRead(ctx context.Context) *time.Timer {
	if r.grpcConns == nil { // Config.ReadTimeout is at least 1s
		return nil
	}
	e, c := r.grpcConns.of(ctx)
	if c == nil {
		return nil
	}
	return time.AfterFunc(r.cfg.ReadTimeout, func() {
		if !e.closed.CompareAndSwap(false, true) {
			return
		}
		r.m.grpcReadTimeouts.Inc()
		r.log.Warn("closing an OTLP/gRPC connection: a message did not arrive within receiver.read_timeout",
			"remote", c.RemoteAddr().String(), "read_timeout", r.cfg.ReadTimeout)
		_ = c.Close()
	})
}
