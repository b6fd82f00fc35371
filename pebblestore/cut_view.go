package pebblestore

// What a query reads while a cut of history is applied in pieces
// (cut_pieces.go). Between the first piece and the last, Pebble holds the
// cut half written; a query must neither see that nor wait for the end (a
// history cut's apply takes seconds to minutes). So, before the cut
// commits its checkpoint, it publishes a cutView: a Pebble snapshot of
// the store without the cut, and the cut's series. A querier that starts
// while the view is published reads
//
//   - the cut's series from the view's snapshot, with the cut's
//     increments from the overlay: the aggregator keeps them there until
//     WriteCut has returned (otelanalytics' cutWritten), and the
//     querier takes the overlay's parts by the view snapshot's journal
//     checkpoint, which does not hold the cut yet;
//   - every other series (remote-written ones, say, visible the moment
//     they are acknowledged) from its own snapshot, taken now.
//
// The view is taken down under viewMu after the last piece is committed:
// a querier takes its snapshot and the view together under viewMu, so
// that a snapshot holding any piece comes with the view, and one without
// the view holds every piece. A querier that got the view after the last
// piece reads the cut's series as before it, with the cut's increments
// from the overlay: the same counts. The view's snapshot is closed when
// the last querier using it is closed.

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/labels"
)

// cutView is a cut of history being applied, as queries read it.
type cutView struct {
	snap *pebble.Snapshot // the store before the cut's first piece
	refs atomic.Int64     // the store's reference and one per querier

	// The cut's series: ids of those in the index when the view was
	// made, and the labels of all of them, for series created after
	// (ids from firstNew on).
	ids      map[uint64]struct{}
	firstNew uint64
	byHash   map[uint64][]labels.Labels

	mu  sync.Mutex
	new map[uint64]bool // ids from firstNew on: a cut series or not
}

// release drops one reference; the last closes the snapshot.
func (v *cutView) release() error {
	if v.refs.Add(-1) == 0 {
		return v.snap.Close()
	}
	return nil
}

// has reports whether series id is one of the cut's.
func (v *cutView) has(s *SeriesStore, id uint64) bool {
	if _, ok := v.ids[id]; ok {
		return true
	}
	if id < v.firstNew || id == 0 {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if in, ok := v.new[id]; ok {
		return in
	}
	s.mu.RLock()
	ms := s.byID[id]
	s.mu.RUnlock()
	in := false
	if ms != nil {
		for _, ls := range v.byHash[ms.lset.Hash()] {
			if labels.Equal(ls, ms.lset) {
				in = true
				break
			}
		}
	}
	if len(v.new) < 1<<20 { // bounded: past it, each lookup is redone
		v.new[id] = in
	}
	return in
}

// beginCutView publishes the view of a cut whose series are series,
// before the cut commits anything that queries read. The caller holds
// cutMu.
func (s *SeriesStore) beginCutView(series []labels.Labels) {
	s.mu.RLock()
	firstNew := s.nextID
	s.mu.RUnlock()
	v := &cutView{
		ids:      make(map[uint64]struct{}, len(series)),
		firstNew: firstNew,
		byHash:   make(map[uint64][]labels.Labels, len(series)),
		new:      map[uint64]bool{},
	}
	for _, ls := range series {
		h := ls.Hash()
		v.byHash[h] = append(v.byHash[h], ls)
		if ms := s.lookup(ls, h); ms != nil && ms.id < firstNew {
			v.ids[ms.id] = struct{}{}
		}
	}
	v.refs.Store(1)
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	// Taken under viewMu, after every commit before it: the snapshot of a
	// querier that gets no view holds nothing of the cut.
	v.snap = s.db.NewSnapshot()
	old := s.view
	s.view = v
	if old != nil { // a cut whose apply failed: its series are the old
		// view's too, but the next cut applies the rest first (WriteCut)
		// and takes the view down before it makes its own.
		_ = old.release()
	}
}

// endCutView takes the view down once every piece of the cut is
// committed (nothing if none is published).
func (s *SeriesStore) endCutView() error {
	s.viewMu.Lock()
	v := s.view
	s.view = nil
	s.viewMu.Unlock()
	if v == nil {
		return nil
	}
	return v.release()
}

// snapshotAndView takes a snapshot of the store now and the cut view
// published (nil: none), with a reference the caller releases.
func (s *SeriesStore) snapshotAndView() (*pebble.Snapshot, *cutView) {
	s.viewMu.RLock()
	defer s.viewMu.RUnlock()
	snap := s.db.NewSnapshot()
	v := s.view
	if v != nil {
		v.refs.Add(1)
	}
	return snap, v
}

// snapFor returns the snapshot that series id is read from.
func (q *querier) snapFor(id uint64) *pebble.Snapshot {
	if q.view != nil && q.view.has(q.s, id) {
		return q.view.snap
	}
	return q.snap
}

// closeView releases the querier's reference to the cut view.
func (q *querier) closeView() error {
	if q.view == nil {
		return nil
	}
	v := q.view
	q.view = nil
	if err := v.release(); err != nil {
		return errors.Join(errors.New("close the snapshot of a cut's view"), err)
	}
	return nil
}
