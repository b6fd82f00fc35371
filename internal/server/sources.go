package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// The series the server writes about sources and itself.
const (
	// retiredMetric is the Unix time a retired source was retired from:
	// label source, written every flush interval.
	retiredMetric = "proxy_source_retired"
	// upMetric is 1, written every flush interval while proxylens runs:
	// where it is absent, proxylens was not running.
	upMetric = "proxylens_up"
)

// RetiredSource is a source an admin retired: it leaves the degradation
// detector and the dashboards' degraded and missing views from From on;
// its history stays.
type RetiredSource struct {
	Source string    `json:"source"`
	From   time.Time `json:"from"`
}

// retired is the set of retired sources, read on every cut.
type retired struct {
	mu sync.RWMutex
	m  map[string]time.Time
}

func (r *retired) lookup(source string) (time.Time, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.m[source]
	return t, ok
}

func (r *retired) list() []RetiredSource {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]RetiredSource, 0, len(r.m))
	for _, name := range slices.Sorted(maps.Keys(r.m)) {
		out = append(out, RetiredSource{Source: name, From: r.m[name]})
	}
	return out
}

// loadRetired reads the retired sources the admin API stored.
func (s *Server) loadRetired() error {
	s.retired.m = map[string]time.Time{}
	v, err := s.store.RetiredSources()
	if err != nil || v == nil {
		return err
	}
	var list []RetiredSource
	if err := json.Unmarshal(v, &list); err != nil {
		return fmt.Errorf("stored retired sources: %w", err)
	}
	for _, rs := range list {
		s.retired.m[rs.Source] = rs.From
	}
	return nil
}

// getRetired answers the retired sources.
func (h *adminHandler) getRetired(w http.ResponseWriter, _ *http.Request) {
	writeAdminJSON(w, h.s.retired.list())
}

// putRetired retires the source of the path from the body's "from" (RFC
// 3339; now if left out), or moves its date.
func (h *adminHandler) putRetired(w http.ResponseWriter, r *http.Request) {
	source := r.PathValue("source")
	var req struct {
		From time.Time `json:"from"`
	}
	if r.ContentLength != 0 {
		if err := decodeStrict(r, &req); err != nil {
			writeAdminError(w, http.StatusBadRequest, "bad_data", err)
			return
		}
	}
	if req.From.IsZero() {
		req.From = h.s.opts.Now()
	}
	h.changeRetired(w, r, func(m map[string]time.Time) error {
		if strings.TrimSpace(source) == "" {
			return errors.New("the source to retire is empty")
		}
		m[source] = req.From.UTC()
		return nil
	})
}

// deleteRetired brings a retired source back.
func (h *adminHandler) deleteRetired(w http.ResponseWriter, r *http.Request) {
	source := r.PathValue("source")
	h.changeRetired(w, r, func(m map[string]time.Time) error {
		if _, ok := m[source]; !ok {
			return errNotRetired
		}
		delete(m, source)
		return nil
	})
}

var errNotRetired = errors.New("the source is not retired")

// changeRetired applies change to a copy of the retired sources, stores
// the result (audited in the same batch) and then uses it.
func (h *adminHandler) changeRetired(w http.ResponseWriter, r *http.Request, change func(map[string]time.Time) error) {
	s := h.s
	s.retiredMu.Lock()
	defer s.retiredMu.Unlock()
	s.retired.mu.RLock()
	m := maps.Clone(s.retired.m)
	s.retired.mu.RUnlock()
	entry := pebblestore.AuditEntry{Time: s.opts.Now(), User: adminUser(r), Action: "sources.retire", Resource: "sources", ClientIP: clientIP(r)}
	if err := change(m); err != nil {
		entry.Error = err.Error()
		_ = s.store.Audit(entry)
		code, typ := http.StatusBadRequest, "bad_data"
		if errors.Is(err, errNotRetired) {
			code, typ = http.StatusNotFound, "not_found"
		}
		writeAdminError(w, code, typ, err)
		return
	}
	next := &retired{m: m}
	v, err := json.Marshal(next.list())
	if err == nil {
		err = s.store.SetRetiredSources(v, entry)
	}
	if err != nil {
		writeAdminError(w, http.StatusInternalServerError, "internal", err)
		return
	}
	s.retired.mu.Lock()
	s.retired.m = m
	s.retired.mu.Unlock()
	s.log.Info("retired sources changed", "by", adminUser(r), "retired", len(m))
	writeAdminJSON(w, next.list())
}

// appendSourceState adds to a self-metrics commit the retired sources and
// proxylens_up.
func (s *Server) appendSourceState(app storage.Appender, ts int64) error {
	if _, err := app.Append(0, labels.FromStrings("__name__", upMetric), ts, 1); err != nil {
		return err
	}
	for _, rs := range s.retired.list() {
		if _, err := app.Append(0, labels.FromStrings("__name__", retiredMetric, "source", rs.Source), ts, float64(rs.From.UnixMilli())/1e3); err != nil {
			return err
		}
	}
	return nil
}

// judgeSources hands a written cut to the degradation detector and stores
// its verdicts. Verdicts for times the store holds already (after a
// restart, the journal's batches are judged again) are skipped.
func (s *Server) judgeSources(c *otelanalytics.Cut, now time.Time) {
	app := s.store.Series().Appender(context.Background())
	err := s.detector.Observe(c, s.dict, now, func(ls labels.Labels, t int64, v float64) error {
		_, err := app.Append(0, ls, t, v)
		if errors.Is(err, storage.ErrOutOfOrderSample) || errors.Is(err, storage.ErrTooOldSample) ||
			errors.Is(err, storage.ErrDuplicateSampleForTimestamp) {
			return nil
		}
		return err
	})
	if err == nil {
		err = app.Commit()
	} else {
		err = errors.Join(err, app.Rollback())
	}
	if err != nil {
		s.log.Warn("store the degradation verdicts, skipping this cut's", "err", err)
	}
}
