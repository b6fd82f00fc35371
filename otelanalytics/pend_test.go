package otelanalytics

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPendIndex checks that keys packed into one uint64 and those that
// do not pack (off the grid, before 1970, a multiple past 32 bits) are
// each found again, and never as one another.
func TestPendIndex(t *testing.T) {
	const res = int64(1000) // a microsecond, for multiples past 32 bits
	p := newPendIndex(res, 0)
	keys := []pendKey{
		{series: 0, t: 0},
		{series: 1, t: 0},
		{series: 0, t: res},
		{series: math.MaxUint32, t: 1_796_529 * res},
		{series: 7, t: math.MaxUint32 * res},       // the largest that packs
		{series: 7, t: (math.MaxUint32 + 1) * res}, // does not
		{series: 7, t: -res},                       // before 1970
		{series: 7, t: res + 1},                    // off the grid
		{series: 8, t: res + 1},
	}
	packed := 0
	for i, k := range keys {
		off, added := p.find(k, uint32(i))
		require.True(t, added, "%+v before it is added", k)
		require.Equal(t, uint32(i), off, "%+v", k)
		if _, ok := p.pack(k); ok {
			packed++
		}
	}
	require.Equal(t, 5, packed)
	require.Equal(t, len(keys), p.len())
	for i, k := range keys {
		off, added := p.find(k, 1000)
		require.False(t, added, "%+v", k)
		require.Equal(t, uint32(i), off, "%+v", k)
	}
	p.clear()
	require.Zero(t, p.len())
	for _, k := range keys {
		_, added := p.find(k, 1000)
		require.True(t, added, "%+v after clear", k)
	}
}

// TestPendBlocks checks offsets, keys and values across block boundaries,
// and the flat copy in offset order.
func TestPendBlocks(t *testing.T) {
	const w = 3
	p := newPendBlocks(w)
	n := 2*pendBlockLen + 5
	for i := range n {
		off := p.add(pendKey{series: uint32(i), t: int64(i) * 10})
		require.Equal(t, uint32(i), off)
		v := p.mut(off)
		require.Len(t, v, w)
		require.Equal(t, []float64{0, 0, 0}, v, "a new increment's values are zero")
		v[0], v[2] = float64(i), -float64(i)
	}
	require.Equal(t, n, p.len())
	require.Len(t, p.keys, 3)
	flat := p.flat()
	require.Len(t, flat, n*w)
	for i := range n {
		require.Equal(t, pendKey{series: uint32(i), t: int64(i) * 10}, p.key(uint32(i)))
		require.Equal(t, []float64{float64(i), 0, -float64(i)}, flat[i*w:(i+1)*w])
	}
	// One block is its own flat copy.
	one := newPendBlocks(w)
	one.add(pendKey{})
	one.mut(0)[1] = 5
	require.Equal(t, []float64{0, 5, 0}, one.flat())
}

// TestPendBlocksShare checks that a view sees none of the changes made
// after it (values changed, increments added, to a full block or to the
// growing first one), and that only the blocks changed after a view are
// copied, once per view.
func TestPendBlocksShare(t *testing.T) {
	const w = 2
	for _, n := range []int{5, pendBlockLen + 5} {
		p := newPendBlocks(w)
		for i := range n {
			p.mut(p.add(pendKey{series: uint32(i)}))[0] = float64(i)
		}
		v := p.share()
		want := v.flat()
		p.mut(0)[0] = -1
		p.mut(uint32(n - 1))[1] = -1
		p.add(pendKey{series: 99})
		p.mut(uint32(n))[0] = -1
		require.Equal(t, want, v.flat(), "%d increments: the view is unchanged", n)
		require.Equal(t, n, v.len())
		require.Equal(t, []float64{-1, 0}, p.at(0))
		require.Equal(t, []float64{float64(n - 1), -1}, p.at(uint32(n-1)))
		require.Equal(t, []float64{-1, 0}, p.at(uint32(n)))

		// A block already copied since the view is changed in place;
		// a new view makes it shared again.
		b0 := &p.vals[0][0]
		p.mut(1)[0] = -2
		require.Same(t, b0, &p.vals[0][0], "copied once per view")
		v2 := p.share()
		p.mut(1)[0] = -3
		require.NotSame(t, b0, &p.vals[0][0], "shared by the new view")
		require.Equal(t, []float64{-2, 0}, v2.at(1))
		require.Equal(t, []float64{1, 0}, v.at(1))
	}

	// An increment added after the newest view is in no view: its block
	// (shared for the increments before it) is not copied for it.
	p := newPendBlocks(w)
	for range pendBlockLen + 5 {
		p.add(pendKey{})
	}
	v := p.share()
	off := p.add(pendKey{series: 1})
	tail := &p.vals[1][0]
	p.mut(off)[0] = 7
	require.Same(t, tail, &p.vals[1][0], "not copied for an increment no view holds")
	p.mut(off - 1)[0] = 8
	require.NotSame(t, tail, &p.vals[1][0], "copied for one a view holds")
	require.Equal(t, 7.0, p.at(off)[0])
	require.Equal(t, pendBlockLen+5, v.len())
	require.Zero(t, v.at(off - 1)[0])
}

// flat returns the values of every increment in offset order.
func (p *pendBlocks) flat() []float64 {
	out := []float64{}
	for _, v := range p.vals {
		out = append(out, v...)
	}
	return out
}

// incValues returns the values of every increment of the cut, in order.
func (fc *FamilyCut) incValues() []float64 { return fc.incs.flat() }

// addInc appends an increment of series k at t with values v.
func (fc *FamilyCut) addInc(k SeriesKey, t int64, v []float64) {
	if fc.incs.w == 0 {
		fc.incs = newPendBlocks(len(v))
	}
	fc.keys = append(fc.keys, k)
	copy(fc.incs.mut(fc.incs.add(pendKey{series: uint32(len(fc.keys) - 1), t: t})), v)
}

// incTimes returns the time of every increment of the cut, in order.
func (fc *FamilyCut) incTimes() []int64 {
	out := make([]int64, fc.NumIncs())
	for i := range out {
		out[i] = fc.IncTime(i)
	}
	return out
}

// setIncTime moves increment i to t.
func (fc *FamilyCut) setIncTime(i int, t int64) {
	fc.incs.keys[i/pendBlockLen][i%pendBlockLen].t = t
}
