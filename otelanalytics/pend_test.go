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
