package otelanalytics

import "math"

// pendIndex finds a series' pending increment at an interval end: the
// offset of its values in family.pvals. Interval ends are multiples of
// the resolution, so a key packs the series and the end's multiple into
// one uint64; a map of those takes half the time of one of pendKey when
// it outgrows the CPU caches, as a backfill's does (an increment for
// nearly every span). An end whose multiple does not fit 32 bits (a
// resolution under half a second, a time before 1970) goes to a map of
// pendKey.
type pendIndex struct {
	res    int64
	packed map[uint64]uint32
	wide   map[pendKey]uint32 // nil until needed
}

func newPendIndex(res int64, n int) *pendIndex {
	return &pendIndex{res: res, packed: make(map[uint64]uint32, n)}
}

func (p *pendIndex) pack(k pendKey) (uint64, bool) {
	q := k.t / p.res
	if q*p.res != k.t || q < 0 || q > math.MaxUint32 {
		return 0, false
	}
	return uint64(k.series)<<32 | uint64(q), true
}

// find returns the offset of k's increment, or, if it has none, records
// next as its offset and reports added.
func (p *pendIndex) find(k pendKey, next uint32) (off uint32, added bool) {
	if key, ok := p.pack(k); ok {
		if off, found := p.packed[key]; found {
			return off, false
		}
		p.packed[key] = next
		return next, true
	}
	if off, found := p.wide[k]; found {
		return off, false
	}
	if p.wide == nil {
		p.wide = map[pendKey]uint32{}
	}
	p.wide[k] = next
	return next, true
}

func (p *pendIndex) len() int { return len(p.packed) + len(p.wide) }

func (p *pendIndex) clear() {
	clear(p.packed)
	p.wide = nil
}
