package otelanalytics

import (
	"math"
	"slices"
)

// pendIndex finds a series' pending increment at an interval end: the
// offset of its values in family.incs. Interval ends are multiples of
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

// pendBlocks holds a family's pending increments by offset: each one's key
// and its width values, in blocks of pendBlockLen increments. Blocks after
// the first never move; the first grows as a slice until it is full, so a
// slice that at returns is valid only until the next add. A backfill holds
// millions of increments (one for nearly every span); in one slice each,
// every doubling copied tens of MB while Apply held the aggregator's lock,
// which was 9% of a history run's CPU and its longest waits. A taken
// pendBlocks (a cut's) is not changed again, so a cut and the overlay
// share its blocks.
type pendBlocks struct {
	w    int
	n    int
	keys [][]pendKey
	vals [][]float64
}

// pendBlockLen is the increments a block holds: with the widest family's
// values (16 floats), a block is half a megabyte.
const pendBlockLen = 1 << 12

func newPendBlocks(w int) pendBlocks { return pendBlocks{w: w} }

// add appends an increment of key k, its values zero, and returns its
// offset.
func (p *pendBlocks) add(k pendKey) uint32 {
	b := p.n / pendBlockLen
	if b == len(p.keys) {
		// The first block grows as the slices do, so that a few
		// increments take a few bytes; the others are made whole.
		c := 0
		if b > 0 {
			c = pendBlockLen
		}
		p.keys = append(p.keys, make([]pendKey, 0, c))
		p.vals = append(p.vals, make([]float64, 0, c*p.w))
	}
	p.keys[b] = append(p.keys[b], k)
	p.vals[b] = append(p.vals[b], make([]float64, p.w)...)
	p.n++
	return uint32(p.n - 1)
}

func (p *pendBlocks) len() int { return p.n }

// key returns the key of the increment at off.
func (p *pendBlocks) key(off uint32) pendKey { return p.keys[off/pendBlockLen][off%pendBlockLen] }

// at returns the values of the increment at off.
func (p *pendBlocks) at(off uint32) []float64 {
	i := int(off%pendBlockLen) * p.w
	return p.vals[off/pendBlockLen][i : i+p.w : i+p.w]
}

// clone returns a copy that later adds to p do not change.
func (p *pendBlocks) clone() pendBlocks {
	c := pendBlocks{w: p.w, n: p.n, keys: make([][]pendKey, len(p.keys)), vals: make([][]float64, len(p.vals))}
	for i := range p.keys {
		c.keys[i], c.vals[i] = slices.Clone(p.keys[i]), slices.Clone(p.vals[i])
	}
	return c
}
