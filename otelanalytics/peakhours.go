package otelanalytics

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// The hour-of-week counters (docs/analytics.md): requests and the sum of
// their durations by the hour of the day and the day of the week they
// ended in, per source and per application. increase() over any range
// gives that range's load for each of the 168 hours of the week.
const (
	PeakSourceRequestsMetric      = "proxy_peak_source_requests_total"
	PeakSourceDurationMetric      = "proxy_peak_source_duration_seconds_total"
	PeakApplicationRequestsMetric = "proxy_peak_application_requests_total"
	PeakApplicationDurationMetric = "proxy_peak_application_duration_seconds_total"
)

// weekdays are the values of the weekday label, Monday first, numbered so
// that they sort in order.
var weekdays = [7]string{"1-Mon", "2-Tue", "3-Wed", "4-Thu", "5-Fri", "6-Sat", "7-Sun"}

var hourNames = func() (h [24]string) {
	for i := range h {
		h[i] = fmt.Sprintf("%02d", i)
	}
	return h
}()

// PeakZones parses the time zones of the hour-of-week counters: UTC always
// comes first, then each extra IANA zone name once.
func PeakZones(extra []string) ([]*time.Location, error) {
	out := []*time.Location{time.UTC}
	for _, name := range extra {
		loc, err := time.LoadLocation(name)
		if err != nil {
			return nil, fmt.Errorf("time zone %q: %w", name, err)
		}
		dup := false
		for _, l := range out {
			dup = dup || l.String() == loc.String()
		}
		if !dup {
			out = append(out, loc)
		}
	}
	return out, nil
}

type peakKey struct {
	entity  uint32
	app     bool // entity is an application, not a source
	success bool
	zone    int
	weekday int
	hour    int
}

// peakHours hands over the cut's increments of the hour-of-week counters,
// in every zone of zones: an interval's requests count in the hour its end
// falls in.
func (c *Cut) peakHours(d *Dict, zones []*time.Location, fn func(ls labels.Labels, tMs int64, v float64) error) error {
	fc := &c.Families[FamilyDuration]
	cache := map[peakKey][2]labels.Labels{}
	b := labels.NewScratchBuilder(6)
	for i := range fc.NumIncs() {
		k := fc.IncKey(i)
		if k.Overflow {
			continue
		}
		v := fc.Inc(i)
		var n float64
		for _, c := range v[:durationBuckets] {
			n += c
		}
		if n == 0 {
			continue
		}
		// The interval (t−res, t] ends at t: count it in the hour of its last
		// instant, so that the interval ending at 10:00 is in hour 9.
		tNs := fc.IncTime(i)
		at := time.Unix(0, tNs-1)
		for z, loc := range zones {
			lt := at.In(loc)
			for _, app := range [2]bool{false, true} {
				entity := k.Source
				if app {
					entity = k.Application
				}
				pk := peakKey{entity: entity, app: app, success: k.Success, zone: z, weekday: (int(lt.Weekday()) + 6) % 7, hour: lt.Hour()}
				ls, ok := cache[pk]
				if !ok {
					ls = peakLabels(&b, &pk, d.String(entity), loc.String())
					cache[pk] = ls
				}
				if err := fn(ls[0], tNs/1e6, n); err != nil {
					return err
				}
				if err := fn(ls[1], tNs/1e6, v[durationSum]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// peakLabels returns the requests and the duration series of pk.
func peakLabels(b *labels.ScratchBuilder, pk *peakKey, entity, zone string) [2]labels.Labels {
	reqName, durName, entityLabel := PeakSourceRequestsMetric, PeakSourceDurationMetric, "source"
	if pk.app {
		reqName, durName, entityLabel = PeakApplicationRequestsMetric, PeakApplicationDurationMetric, "application"
	}
	outcome := "failure"
	if pk.success {
		outcome = "success"
	}
	build := func(name string, withOutcome bool) labels.Labels {
		b.Reset()
		b.Add(model.MetricNameLabel, name)
		if entity != "" {
			b.Add(entityLabel, entity)
		}
		b.Add("weekday", weekdays[pk.weekday])
		b.Add("hour", hourNames[pk.hour])
		b.Add("tz", zone)
		if withOutcome {
			b.Add("outcome", outcome)
		}
		b.Sort()
		return b.Labels()
	}
	return [2]labels.Labels{build(reqName, true), build(durName, true)}
}
