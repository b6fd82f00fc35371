package server

import (
	"crypto/sha256"
	"net/http"
	"net/http/pprof"
)

// pprofHandler serves /debug/pprof/: profiles, goroutine dumps and traces
// are an admin's tool. With users, the authenticator lets only the admin
// role through (requiredRole); without users, it needs the bootstrap
// admin token, as the admin API does, and without any admin credential it
// is off (404).
func (s *Server) pprofHandler(token *[sha256.Size]byte) http.Handler {
	if token == nil && !s.cfg.Auth.hasAdmin() {
		return http.NotFoundHandler()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return s.requireAdmin(token, mux)
}
