package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promqlengine "github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/promql"
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
	// A cut of history (a backfill) is judged interval by interval, weeks
	// of them: the verdicts are committed every verdictBatch samples, so
	// that the appender does not hold them all.
	n := 0
	err := s.detector.Observe(c, s.dict, now, func(ls labels.Labels, t int64, v float64) error {
		_, err := app.Append(0, ls, t, v)
		if errors.Is(err, storage.ErrOutOfOrderSample) || errors.Is(err, storage.ErrTooOldSample) ||
			errors.Is(err, storage.ErrDuplicateSampleForTimestamp) {
			return nil
		}
		if err != nil {
			return err
		}
		if n++; n >= verdictBatch {
			n = 0
			if err := app.Commit(); err != nil {
				return err
			}
			app = s.store.Series().Appender(context.Background())
		}
		return nil
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

// verdictBatch is how many verdict samples one commit holds at most.
const verdictBatch = 65536

// seedQuery is every source's hourly requests by outcome and latency
// bucket, as the detector keeps its baseline.
const seedQuery = `sum by (source, outcome, le) (increase(proxy_request_duration_seconds_bucket{otel_metric_overflow!="true"}[1h]))`

// seedDetector fills the degradation detector's baselines from the stored
// series: the hours of the baseline before the last full hour, which the
// detector will not judge again.
func (s *Server) seedDetector(ctx context.Context) error {
	end := s.opts.Now().Truncate(time.Hour).Add(-time.Hour)
	res, err := s.api.Exec(ctx, promql.Request{
		Query: seedQuery, Start: end.Add(-s.cfg.Degradation.Baseline + time.Hour), End: end, Step: time.Hour, Unaudited: true,
		Local: true, // this instance's traffic, also in front of a query upstream
	})
	if err != nil {
		return err
	}
	defer res.Close()
	m, ok := res.Value.(promqlengine.Matrix)
	if !ok {
		return fmt.Errorf("seed query answered a %s", res.Value.Type())
	}
	type hour struct {
		source string
		t      int64
	}
	type counts struct {
		req, ok float64
		cum     [len(otelanalytics.DurationBuckets) + 1]float64 // successes, cumulative
	}
	hours := map[hour]*counts{}
	for _, series := range m {
		le, err := strconv.ParseFloat(series.Metric.Get("le"), 64)
		if err != nil {
			continue
		}
		i, found := slices.BinarySearch(otelanalytics.DurationBuckets[:], le)
		if !found && !math.IsInf(le, 1) {
			continue // not a bound of proxylens' own histogram
		}
		success := series.Metric.Get("outcome") == "success"
		for _, p := range series.Floats {
			k := hour{series.Metric.Get("source"), p.T}
			c := hours[k]
			if c == nil {
				c = new(counts)
				hours[k] = c
			}
			if math.IsInf(le, 1) {
				c.req += p.F
				if success {
					c.ok += p.F
				}
			}
			if success {
				c.cum[i] += p.F
			}
		}
	}
	for k, c := range hours {
		lat := make([]float64, len(c.cum))
		prev := 0.0
		for i, v := range c.cum {
			lat[i], prev = max(v-prev, 0), v
		}
		s.detector.Seed(k.source, time.UnixMilli(k.t), c.req, c.ok, lat)
	}
	s.log.Info("degradation baselines seeded from the store", "hours", len(hours))
	return nil
}
