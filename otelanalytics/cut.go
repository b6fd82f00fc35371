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

	// The increments, as the aggregator held them (and the overlay
	// shares them): a cut of a backfill copies neither their values nor
	// their keys.
	rawFamily
}

// NumIncs returns the number of increments.
func (fc *FamilyCut) NumIncs() int { return fc.incs.len() }

// IncKey returns the series of increment i.
func (fc *FamilyCut) IncKey(i int) SeriesKey { return fc.keys[fc.incs.key(uint32(i)).series] }

// IncTime returns the end of increment i's interval, Unix ns.
func (fc *FamilyCut) IncTime(i int) int64 { return fc.incs.key(uint32(i)).t }

// Inc returns the values of increment i: the family's Width of them.
func (fc *FamilyCut) Inc(i int) []float64 { return fc.incs.at(uint32(i)) }

// Empty reports whether the cut carries nothing to write.
func (c *Cut) Empty() bool {
	for i := range c.Families {
		if len(c.Families[i].Keys) > 0 || c.Families[i].NumIncs() > 0 {
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
		raw   rawFamily
		dirty []uint32
		pend  *pendIndex
	}
	var tk [NumFamilies]taken

	// Apply waits while the lock is held: take the increments and the
	// dirty list whole, and copy only the totals, which Apply goes on
	// changing.
	a.mu.Lock()
	if sealed > 0 {
		a.taken.Store(int64(a.pending))
	}
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
		tk[f] = taken{raw: rawFamily{keys: fam.keys, incs: fam.incs}, dirty: fam.dirty, pend: fam.pend}
		if sealed > 0 { // not changed from here on: no copy
			a.inflight.fams[f] = tk[f].raw
		}
		fam.dirty, fam.spareDirty = fam.spareDirty[:0], nil
		fam.pend, fam.sparePend = fam.sparePend, nil
		if fam.pend == nil {
			fam.pend = newPendIndex(a.resolution, min(tk[f].pend.len(), presizedPend))
		}
		fam.incs = newPendBlocks(w)
	}
	a.mu.Unlock()

	// Series keys are append-only, so tk[f].raw.keys stays valid for the
	// indexes taken above while Apply goes on.
	for f := range tk {
		fc := &c.Families[f]
		t := &tk[f]
		fc.Keys = make([]SeriesKey, len(t.dirty))
		for i, idx := range t.dirty {
			fc.Keys[i] = t.raw.keys[idx]
		}
		fc.rawFamily = t.raw
		if t.pend.reusable() {
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

// retainedPend is the largest increment table a cut keeps for reuse:
// live traffic fills a few intervals of each series, a backfill millions
// of them. presizedPend is the most a new one is sized for: one sized for
// a backfill's last cut would stay, empty, while the server is idle after
// it (a map grows in steps, a split of one of its tables at a time).
const (
	retainedPend = 1 << 16
	presizedPend = 1 << 12
)

// Restore puts back a cut that could not be written, so that the next cut
// carries its totals and increments.
func (a *Aggregator) Restore(c *Cut) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.version++
	a.inflight = nil // back among the pending increments
	a.taken.Store(0)
	for f := range a.fams {
		fam := &a.fams[f]
		fc := &c.Families[f]
		for _, k := range fc.Keys {
			if idx, ok := fam.index[k]; ok && !fam.meta[idx].dirty {
				fam.meta[idx].dirty = true
				fam.dirty = append(fam.dirty, idx)
			}
		}
		for i := range fc.NumIncs() {
			idx, ok := fam.index[fc.IncKey(i)]
			if !ok {
				continue // cannot happen: series are never removed
			}
			inc := fam.incs.mut(a.incSlot(fam, idx, fc.IncTime(i)))
			for j, v := range fc.Inc(i) {
				inc[j] += v
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
	a.taken.Store(0)
	written := a.written
	a.mu.Unlock()
	if written != nil {
		written() // takes the Overlay's lock, which comes before a.mu
	}
}
