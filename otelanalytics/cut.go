package otelanalytics

// Cut is what the aggregator hands to the store every flush interval: the
// new totals of the series that changed, and their increments by event time.
type Cut struct {
	// Families holds one FamilyCut per family, indexed by Family.
	Families [NumFamilies]FamilyCut
}

// FamilyCut is one family's part of a Cut. Values of series i are
// Totals[i*w:(i+1)*w] with w the family's Width; likewise for increments.
type FamilyCut struct {
	Keys   []SeriesKey // series whose totals changed
	Totals []float64   // their cumulative values

	IncKeys   []SeriesKey // series of each increment
	IncTimes  []int64     // end of each increment's interval, Unix ns
	IncValues []float64   // each increment's values
}

// Empty reports whether the cut carries nothing to write.
func (c *Cut) Empty() bool {
	for i := range c.Families {
		if len(c.Families[i].Keys) > 0 || len(c.Families[i].IncKeys) > 0 {
			return false
		}
	}
	return true
}

// Cut takes the increments accumulated since the last cut and the totals of
// the series they touched. If the cut cannot be written, Restore puts it back.
func (a *Aggregator) Cut() *Cut { return a.cut(0) }

// cut is Cut for the pipeline, which sealed journal segment sealed (0:
// none) with it: until cutWritten or Restore, the Overlay serves the
// cut's increments as committed once the journal checkpoint reaches
// sealed.
func (a *Aggregator) cut(sealed uint64) *Cut {
	c := &Cut{}
	type taken struct {
		keys  []SeriesKey
		dirty []uint32
		pend  *pendIndex
		pkeys []pendKey
		pvals []float64
	}
	var tk [NumFamilies]taken

	// Apply waits while the lock is held: take the increments and the
	// dirty list whole, and copy only the totals, which Apply goes on
	// changing.
	a.mu.Lock()
	a.pending = 0
	a.held.Store(0)
	a.gen++
	a.version++
	if sealed > 0 {
		a.inflight, a.lastSealed = &rawPart{sealed: sealed}, sealed
	}
	for f := range a.fams {
		fam := &a.fams[f]
		fc := &c.Families[f]
		w := fam.width
		fc.Totals = make([]float64, len(fam.dirty)*w)
		for i, idx := range fam.dirty {
			copy(fc.Totals[i*w:], fam.totals[int(idx)*w:int(idx+1)*w])
			fam.meta[idx].dirty = false
		}
		tk[f] = taken{keys: fam.keys, dirty: fam.dirty, pend: fam.pend, pkeys: fam.pkeys, pvals: fam.pvals}
		if sealed > 0 { // not changed from here on: no copy
			a.inflight.fams[f] = rawFamily{keys: fam.keys, pkeys: fam.pkeys, pvals: fam.pvals}
		}
		fam.dirty, fam.spareDirty = fam.spareDirty[:0], nil
		fam.pend, fam.sparePend = fam.sparePend, nil
		if fam.pend == nil {
			fam.pend = newPendIndex(a.resolution, min(tk[f].pend.len(), retainedPend))
		}
		fam.pkeys, fam.pvals = nil, nil
	}
	a.mu.Unlock()

	// Series keys are append-only, so tk[f].keys stays valid for the indexes
	// taken above while Apply goes on.
	for f := range tk {
		fc := &c.Families[f]
		t := &tk[f]
		fc.Keys = make([]SeriesKey, len(t.dirty))
		for i, idx := range t.dirty {
			fc.Keys[i] = t.keys[idx]
		}
		fc.IncKeys = make([]SeriesKey, len(t.pkeys))
		fc.IncTimes = make([]int64, len(t.pkeys))
		for i, pk := range t.pkeys {
			fc.IncKeys[i] = t.keys[pk.series]
			fc.IncTimes[i] = pk.t
		}
		fc.IncValues = t.pvals
		if t.pend.len() <= retainedPend {
			t.pend.clear()
		} else {
			t.pend = nil // a map keeps its buckets when cleared: drop a big one
		}
	}
	a.mu.Lock()
	for f := range tk {
		fam := &a.fams[f]
		if fam.sparePend == nil && fam.spareDirty == nil {
			fam.sparePend = tk[f].pend // nil if dropped above
			fam.spareDirty = tk[f].dirty[:0]
		}
	}
	a.mu.Unlock()
	return c
}

// retainedPend is the largest increment table a cut keeps for reuse (and
// the most a new one is sized for): live traffic fills a few intervals of
// each series, a backfill millions of them.
const retainedPend = 1 << 16

// Restore puts back a cut that could not be written, so that the next cut
// carries its totals and increments.
func (a *Aggregator) Restore(c *Cut) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.version++
	a.inflight = nil // back among the pending increments
	for f := range a.fams {
		fam := &a.fams[f]
		fc := &c.Families[f]
		w := fam.width
		for _, k := range fc.Keys {
			if idx, ok := fam.index[k]; ok && !fam.meta[idx].dirty {
				fam.meta[idx].dirty = true
				fam.dirty = append(fam.dirty, idx)
			}
		}
		for i, k := range fc.IncKeys {
			idx, ok := fam.index[k]
			if !ok {
				continue // cannot happen: series are never removed
			}
			off := a.incSlot(fam, idx, fc.IncTimes[i])
			for j := range w {
				fam.pvals[int(off)+j] += fc.IncValues[i*w+j]
			}
		}
	}
	a.held.Store(int64(a.pending))
}

// cutWritten tells that the cut being written is committed: the store
// serves its increments from now on.
func (a *Aggregator) cutWritten() {
	a.mu.Lock()
	a.version++
	a.inflight = nil
	written := a.written
	a.mu.Unlock()
	if written != nil {
		written() // takes the Overlay's lock, which comes before a.mu
	}
}
