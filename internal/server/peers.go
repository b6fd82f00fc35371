package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/proxylens/proxylens/internal/peers"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// maxPeerStreams bounds the peer records streams this instance serves at
// once; one more is refused with 503 and Retry-After.
const maxPeerStreams = 4

// scanFleet scans the records f selects of this instance and of its
// peers, merged in end-time order: the records dataset of exports.
func (s *Server) scanFleet(ctx context.Context, f otelanalytics.RecordFilter, fn func(*otelanalytics.Record) error) error {
	return s.peers.Scan(ctx, s.ScanRecords, f, fn)
}

// peerRecordsHandler serves GET /api/v1/peer/records: this instance's
// own records, never its peers' (so that a fan-out never fans out again),
// as the NDJSON stream of internal/peers. It needs the exports' role
// (analyst) and is audited as export.peer.
func (s *Server) peerRecordsHandler() http.Handler {
	s.peerStreams = make(chan struct{}, maxPeerStreams)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+peers.RecordsPath, func(w http.ResponseWriter, r *http.Request) {
		f, err := peers.ParseFilter(r.URL.Query())
		if err != nil {
			writeAdminError(w, http.StatusBadRequest, "bad_data", err)
			return
		}
		select {
		case s.peerStreams <- struct{}{}:
			defer func() { <-s.peerStreams }()
		default:
			w.Header().Set("Retry-After", "10")
			writeAdminError(w, http.StatusServiceUnavailable, "unavailable",
				fmt.Errorf("%d peer records streams are being served; retry later", maxPeerStreams))
			return
		}
		began := time.Now()
		n, err := s.streamRecords(r.Context(), w, f)
		entry := pebblestore.AuditEntry{Time: s.opts.Now(), User: adminUser(r), Action: "export.peer", Resource: "records",
			Filters: r.URL.RawQuery, ClientIP: clientIP(r), UserAgent: r.UserAgent(), Results: n,
			Duration: time.Since(began).Seconds(), Success: err == nil}
		if !f.Start.IsZero() {
			entry.Start = f.Start.Format(time.RFC3339Nano)
		}
		if !f.End.IsZero() {
			entry.End = f.End.Format(time.RFC3339Nano)
		}
		if err != nil {
			entry.Error = err.Error()
		}
		if err := s.store.Audit(entry); err != nil {
			s.log.Warn("audit a peer records stream, going on", "err", err)
		}
	})
	return mux
}

// streamRecords writes the local records f selects to w, then the end
// line, or the error line if the scan fails; it returns the records sent.
func (s *Server) streamRecords(ctx context.Context, w http.ResponseWriter, f otelanalytics.RecordFilter) (int64, error) {
	w.Header().Set("Content-Type", peers.ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush() // the headers now: the asking side times a silent peer out
	bw := bufio.NewWriterSize(w, 64<<10)
	var (
		n    int64
		line []byte
	)
	err := s.ScanRecords(ctx, f, func(r *otelanalytics.Record) error {
		line = peers.AppendRecord(line[:0], r)
		n++
		_, err := bw.Write(line)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return n, fmt.Errorf("the peer went away: %w", err)
		}
		line = peers.AppendError(line[:0], errors.New("scan records: "+err.Error()))
	} else {
		line = peers.AppendEnd(line[:0], n)
	}
	if _, werr := bw.Write(line); werr == nil {
		err = errors.Join(err, bw.Flush())
	} else {
		err = errors.Join(err, werr)
	}
	return n, err
}
