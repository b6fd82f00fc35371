package server

import (
	"context"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promqlengine "github.com/prometheus/prometheus/promql"

	"github.com/proxylens/proxylens/internal/ruler"
)

// newRuler builds the ruler (started after the HTTP server, whose address
// its alerts link to). Its queries go through the query API, which is
// created after it (it serves the ruler's /api/v1/rules) and before it
// starts.
func (s *Server) newRuler() {
	s.ruleReg = prometheus.NewRegistry()
	s.ruler = ruler.New(s.cfg.Rules, ruler.Options{
		QueryFunc: func(ctx context.Context, q string, t time.Time) (promqlengine.Vector, error) {
			return ruler.QueryFunc(s.api)(ctx, q, t)
		},
		Appendable:  s.store.Series(),
		Queryable:   s.store.Series(),
		ExternalURL: s.externalURL,
		Registerer:  s.ruleReg,
		Logger:      s.log,
	})
}

// externalURL is the URL alerts link back to (their generatorURL): the
// HTTP listener's address, with the host name when it listens on every
// interface.
func (s *Server) externalURL() *url.URL {
	u := &url.URL{Scheme: "http", Host: s.httpLn.Addr().String()}
	if s.tls != nil {
		u.Scheme = "https"
	}
	if host, port, err := net.SplitHostPort(u.Host); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			if name, err := os.Hostname(); err == nil {
				u.Host = net.JoinHostPort(name, port)
			}
		}
	}
	return u
}
