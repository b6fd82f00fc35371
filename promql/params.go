package promql

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// Times and durations, parsed as Prometheus parses them.
var (
	minTime          = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime          = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()
	minTimeFormatted = minTime.Format(time.RFC3339Nano)
	maxTimeFormatted = maxTime.Format(time.RFC3339Nano)
)

func parseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		sec, ns := math.Modf(t)
		ns = math.Round(ns*1000) / 1000
		return time.Unix(int64(sec), int64(ns*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	switch s {
	case minTimeFormatted:
		return minTime, nil
	case maxTimeFormatted:
		return maxTime, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

func parseDuration(s string) (time.Duration, error) {
	if d, err := strconv.ParseFloat(s, 64); err == nil {
		ts := d * float64(time.Second)
		if ts > float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}

func parseTimeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	v := r.Form.Get(name)
	if v == "" {
		return def, nil
	}
	t, err := parseTime(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid parameter %q: %w", name, err)
	}
	return t, nil
}

func parseLimit(r *http.Request) (int, *apiError) {
	v := r.Form.Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, badData("limit must be a non-negative number, got %q", v)
	}
	return n, nil
}

// checkMatchSizes refuses match[] selectors past the query bounds, before
// anything parses them.
func (a *API) checkMatchSizes(r *http.Request) *apiError {
	for _, s := range r.Form["match[]"] {
		if aerr := a.checkQuerySize("match[]", s); aerr != nil {
			return aerr
		}
	}
	return nil
}

// matcherSets parses match[] parameters.
func (a *API) matcherSets(r *http.Request) ([][]*labels.Matcher, *apiError) {
	if aerr := a.checkMatchSizes(r); aerr != nil {
		return nil, aerr
	}
	var sets [][]*labels.Matcher
	for _, s := range r.Form["match[]"] {
		ms, err := a.parser.ParseMetricSelector(s)
		if err != nil {
			return nil, badData("invalid parameter %q: %v", "match[]", err)
		}
		sets = append(sets, ms)
	}
	return sets, nil
}

func (a *API) timeRange(r *http.Request) (time.Time, time.Time, *apiError) {
	start, err := parseTimeParam(r, "start", minTime)
	if err != nil {
		return start, start, badData("%v", err)
	}
	end, err := parseTimeParam(r, "end", maxTime)
	if err != nil {
		return start, end, badData("%v", err)
	}
	return start, end, nil
}

func (a *API) lookback(r *http.Request) time.Duration {
	if v := r.Form.Get("lookback_delta"); v != "" {
		if d, err := parseDuration(v); err == nil {
			return d
		}
	}
	return 0
}
