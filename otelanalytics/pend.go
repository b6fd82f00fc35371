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
	// most is the most entries it has been sized for or has held: a map
	// keeps its buckets when cleared.
	most int
}

func newPendIndex(res int64, n int) *pendIndex {
	return &pendIndex{res: res, packed: make(map[uint64]uint32, n), most: n}
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
	p.most = max(p.most, p.len())
	clear(p.packed)
	p.wide = nil
}

// reusable reports whether the table, holding a cut's increments, is
// worth clearing for a later cut rather than dropped: one that holds more
// than retainedPend, or was sized for four times what it holds now (a
// backfill's, then live traffic), would keep megabytes that the next cuts
// do not need.
func (p *pendIndex) reusable() bool {
	n := p.len()
	return n <= retainedPend && max(p.most, n) <= 4*max(n, presizedPend)
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
//
// The overlay's view of the pending increments shares their blocks too
// (share): a block's values are copied only when Apply changes one of
// them after a view was taken (mut). A backfill's Apply mostly adds
// increments, so the view of its millions costs their block headers,
// where a copy of them all was a quarter of the heap.
type pendBlocks struct {
	w    int
	n    int
	keys [][]pendKey
	vals [][]float64
	// made is, by block, the view epoch in which its values became this
	// pendBlocks' own; a block made before the current epoch may be held
	// by a view, and is copied before a change.
	made  []uint64
	epoch uint64
	// shared is the increments the newest view holds: those after it
	// are in no view, whatever their block.
	shared int
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
		p.made = append(p.made, p.epoch)
	}
	// Appending writes past the end of what a view holds: a view keeps
	// the lengths it was taken with.
	p.keys[b] = append(p.keys[b], k)
	p.vals[b] = append(p.vals[b], make([]float64, p.w)...)
	p.n++
	return uint32(p.n - 1)
}

func (p *pendBlocks) len() int { return p.n }

// key returns the key of the increment at off.
func (p *pendBlocks) key(off uint32) pendKey { return p.keys[off/pendBlockLen][off%pendBlockLen] }

// at returns the values of the increment at off, to read.
func (p *pendBlocks) at(off uint32) []float64 {
	i := int(off%pendBlockLen) * p.w
	return p.vals[off/pendBlockLen][i : i+p.w : i+p.w]
}

// mut returns the values of the increment at off, to change: its block is
// copied first if a view may hold the increment.
func (p *pendBlocks) mut(off uint32) []float64 {
	if b := off / pendBlockLen; p.made[b] != p.epoch && int(off) < p.shared {
		v := p.vals[b]
		p.vals[b] = append(make([]float64, 0, cap(v)), v...)
		p.made[b] = p.epoch
	}
	return p.at(off)
}

// share returns a view of p that later changes to p do not change. Keys
// are only ever appended, so the view shares them as they are.
func (p *pendBlocks) share() pendBlocks {
	p.epoch++
	p.shared = p.n
	return pendBlocks{w: p.w, n: p.n, keys: slices.Clone(p.keys), vals: slices.Clone(p.vals)}
}
