package promql

import (
	"context"
	"slices"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// fingerprint says which series the store returned to each Select of one
// evaluation, in the order of the Selects: how many, and the sum of their
// label hashes mixed. Two evaluations of the same query over different
// ranges with equal fingerprints saw the same series (up to a hash
// collision).
type fingerprint []selectPrint

type selectPrint struct {
	n int
	h uint64
}

func (f fingerprint) equal(g fingerprint) bool { return slices.Equal(f, g) }

// recorder collects a fingerprint; the engine may select from several
// goroutines.
type recorder struct {
	mu   sync.Mutex
	sels []selectPrint
}

func (r *recorder) newSelect() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sels = append(r.sels, selectPrint{})
	return len(r.sels) - 1
}

func (r *recorder) add(i int, ls labels.Labels) {
	h := ls.Hash()
	h ^= h >> 33 // mixed, so that a sum of hashes does not cancel out
	h *= 0xff51afd7ed558ccd
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sels[i].n++
	r.sels[i].h += h
}

func (r *recorder) fingerprint() fingerprint {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sels)
}

// recordingQueryable is the store as the cache's evaluations see it: its
// queriers record which series each Select returned.
type recordingQueryable struct {
	storage.Queryable
	rec *recorder
}

func (q recordingQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	qr, err := q.Queryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return recordingQuerier{Querier: qr, rec: q.rec}, nil
}

type recordingQuerier struct {
	storage.Querier
	rec *recorder
}

func (q recordingQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	return &recordingSet{SeriesSet: q.Querier.Select(ctx, sortSeries, hints, ms...), rec: q.rec, i: q.rec.newSelect()}
}

type recordingSet struct {
	storage.SeriesSet
	rec *recorder
	i   int
}

func (s *recordingSet) Next() bool {
	if !s.SeriesSet.Next() {
		return false
	}
	s.rec.add(s.i, s.SeriesSet.At().Labels())
	return true
}

func (s *recordingSet) Warnings() annotations.Annotations { return s.SeriesSet.Warnings() }
