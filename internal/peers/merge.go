package peers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"sync"

	"github.com/proxylens/proxylens/otelanalytics"
)

// ScanFunc scans the records f selects in end-time order, as
// otelanalytics.ScanRecords does: the record passed to fn is reused
// between calls.
type ScanFunc func(ctx context.Context, f otelanalytics.RecordFilter, fn func(*otelanalytics.Record) error) error

// Source is one ordered stream of records of a merge: Next returns the
// next record (valid until the next call) or io.EOF.
type Source interface {
	Next() (*otelanalytics.Record, error)
	Close() error
}

// errStop ends a local scan the merge no longer reads.
var errStop = errors.New("merge stopped")

// localSource is the local scan turned from push to pull.
type localSource struct {
	next func() (*otelanalytics.Record, error, bool)
	stop func()
}

// LocalSource is the records of scan as a Source. The scan runs in a
// coroutine (iter.Pull2) that is suspended while the merge holds its
// record, so the record it reuses stays valid until Next is called again.
func LocalSource(ctx context.Context, scan ScanFunc, f otelanalytics.RecordFilter) Source {
	seq := func(yield func(*otelanalytics.Record, error) bool) {
		err := scan(ctx, f, func(r *otelanalytics.Record) error {
			if !yield(r, nil) {
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			yield(nil, err)
		}
	}
	next, stop := iter.Pull2(iter.Seq2[*otelanalytics.Record, error](seq))
	return &localSource{next: next, stop: stop}
}

func (l *localSource) Next() (*otelanalytics.Record, error) {
	r, err, ok := l.next()
	switch {
	case !ok:
		return nil, io.EOF
	case err != nil:
		return nil, fmt.Errorf("this instance's records: %w", err)
	}
	return r, nil
}

func (l *localSource) Close() error {
	l.stop()
	return nil
}

// Merge calls fn with the records of every source in end-time order;
// records that ended at the same nanosecond come in the sources' order.
// It holds one record of each source at a time. The first error of a
// source or of fn ends it with that error. It closes every source.
func Merge(sources []Source, fn func(*otelanalytics.Record) error) (err error) {
	defer func() {
		for _, s := range sources {
			if cerr := s.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}
	}()
	heads := make([]*otelanalytics.Record, len(sources))
	advance := func(i int) error {
		r, err := sources[i].Next()
		if errors.Is(err, io.EOF) {
			heads[i] = nil
			return nil
		}
		heads[i] = r
		return err
	}
	for i := range sources {
		if err := advance(i); err != nil {
			return err
		}
	}
	// A linear pick: peers are a handful, and the scan and the network
	// cost far more than comparing a few times.
	for {
		lo := -1
		for i, h := range heads {
			if h != nil && (lo < 0 || h.EndTime < heads[lo].EndTime) {
				lo = i
			}
		}
		if lo < 0 {
			return nil
		}
		if err := fn(heads[lo]); err != nil {
			return err
		}
		if err := advance(lo); err != nil {
			return err
		}
	}
}

// Scan calls fn with the records f selects of this instance (local) and
// of every peer, merged in end-time order. It asks the peers at once and
// fails, naming each peer that could not answer, before the first record
// if any cannot; a peer that fails later fails the scan with an error
// naming it. Without peers it is the local scan.
func (ps *Peers) Scan(ctx context.Context, local ScanFunc, f otelanalytics.RecordFilter, fn func(*otelanalytics.Record) error) error {
	if ps.Len() == 0 {
		return local(ctx, f, fn)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	streams := make([]*Stream, len(ps.peers))
	errs := make([]error, len(ps.peers))
	var wg sync.WaitGroup
	for i, p := range ps.peers {
		wg.Go(func() { streams[i], errs[i] = p.Open(ctx, f) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, s := range streams {
			if s != nil {
				_ = s.Close()
			}
		}
		return err
	}
	sources := []Source{LocalSource(ctx, local, f)}
	for _, s := range streams {
		sources = append(sources, s)
	}
	return Merge(sources, fn)
}
