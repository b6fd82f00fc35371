package pebblestore

import "github.com/prometheus/prometheus/model/labels"

// AppendIncrementsForTest commits increments of one series in one appender.
func AppendIncrementsForTest(s *SeriesStore, ls labels.Labels, fill func(add func(t int64, v float64) error) error) error {
	app := s.newAppender()
	if err := fill(func(t int64, v float64) error { return app.AppendIncrement(ls, t, v) }); err != nil {
		return err
	}
	return app.Commit()
}
