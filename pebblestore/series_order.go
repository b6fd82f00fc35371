package pebblestore

import (
	"cmp"
	"slices"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
)

// labelOrder ranks the series by their labels, so that a query sorts the
// series it selects by comparing two numbers instead of two label sets:
// 16,000 series sort in about a millisecond instead of 20, which was a
// fifth of a 30-day query over proxylens' own aggregates, paid on one
// core. Series are never removed; those added since the last ranking
// wait in fresh, and the next sort merges them in (a linear pass once
// after each burst of new series; the first sort ranks them all).
type labelOrder struct {
	mu     sync.RWMutex // guards sorted and every ranked memSeries' rank
	sorted []*memSeries // the ranked series, in label order
	fresh  []*memSeries // added since the last ranking, guarded by SeriesStore.mu
}

// add queues a new series for ranking; the caller holds SeriesStore.mu
// for writing or owns the store.
func (o *labelOrder) add(ms *memSeries) { o.fresh = append(o.fresh, ms) }

// sort sorts series (all of them indexed) by their labels; the caller
// holds SeriesStore.mu for reading, so that fresh does not change.
func (o *labelOrder) sort(series []*memSeries) {
	if len(series) < 2 {
		return
	}
	o.mu.RLock()
	if len(o.fresh) > 0 {
		o.mu.RUnlock()
		if len(series) < rankMin {
			// A small selection while series are being created: ranking
			// them all would cost more than comparing these.
			slices.SortFunc(series, byLabels)
			return
		}
		o.rank()
		o.mu.RLock()
	}
	defer o.mu.RUnlock()
	slices.SortFunc(series, func(a, b *memSeries) int { return cmp.Compare(a.rank, b.rank) })
}

// rankMin is the smallest selection that merges fresh series into the
// ranking rather than sorting itself by labels.
const rankMin = 256

func byLabels(a, b *memSeries) int { return labels.Compare(a.lset, b.lset) }

// rank merges the fresh series into the ranked ones and renumbers them.
// Concurrent sorts may both see fresh series; the first to get here
// merges them, the others find fresh empty (it is read under mu, and
// cleared only here, under mu, while every sort holds SeriesStore.mu for
// reading: no add runs).
func (o *labelOrder) rank() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.fresh) == 0 {
		return
	}
	fresh := slices.SortedFunc(slices.Values(o.fresh), byLabels)
	merged := make([]*memSeries, 0, len(o.sorted)+len(fresh))
	i, j := 0, 0
	for i < len(o.sorted) || j < len(fresh) {
		if j == len(fresh) || (i < len(o.sorted) && byLabels(o.sorted[i], fresh[j]) < 0) {
			merged = append(merged, o.sorted[i])
			i++
		} else {
			merged = append(merged, fresh[j])
			j++
		}
	}
	for r, ms := range merged {
		ms.rank = uint32(r)
	}
	o.sorted, o.fresh = merged, nil
}
