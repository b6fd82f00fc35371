package server

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
	"github.com/proxylens/proxylens/selfmetrics"
)

// metadata lists the families the series store holds, for
// /api/v1/metadata: those written by remote write and OTLP metrics, the
// proxy_* aggregates and cost series, and the proxylens_* self-metrics.
func (s *Server) metadata() map[string][]metadata.Metadata {
	all := s.store.Series().Metadata()
	maps.Copy(all, otelanalytics.Metadata())
	self, err := s.self.Metadata()
	if err != nil {
		s.log.Warn("gather self-metrics for metadata, leaving them out", "err", err)
	}
	maps.Copy(all, self)
	out := make(map[string][]metadata.Metadata, len(all))
	for name, md := range all {
		out[name] = []metadata.Metadata{md}
	}
	return out
}

// recordSelfMetrics appends the self-metrics and the subscription prices
// to the series store every flush interval, until ctx ends.
func (s *Server) recordSelfMetrics(ctx context.Context) {
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// While the disk is full the store says so once; no line each interval.
			if err := s.appendSelfMetrics(ctx, s.opts.Now()); err != nil && !errors.Is(err, pebblestore.ErrDiskFull) {
				s.log.Warn("store self-metrics, skipping this interval", "err", err)
			}
		}
	}
}

// appendSelfMetrics appends, in one commit, a sample of every self-metric
// at now and the subscriptions' prices, so that PromQL can amortise them
// over any range where proxylens ran, traffic or not.
func (s *Server) appendSelfMetrics(ctx context.Context, now time.Time) error {
	ts := now.UnixMilli()
	app := s.store.Series().Appender(ctx)
	err := s.self.AppendTo(app, ts)
	if err == nil && s.ruleReg != nil {
		err = selfmetrics.AppendGathered(app, s.ruleReg, ts)
	}
	if err == nil {
		err = s.appendSourceState(app, ts)
	}
	if err == nil && s.cfg.FixedCosts != FixedCostsSkip {
		err = s.costs.Book().AppendSubscriptions(ts, func(ls labels.Labels, t int64, v float64) error {
			_, err := app.Append(0, ls, t, v)
			return err
		})
	}
	if err != nil {
		return errors.Join(err, app.Rollback())
	}
	return app.Commit()
}
