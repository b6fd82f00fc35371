package receiver

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDirtyPool(t *testing.T) {
	p := &dirtyPool{}
	for _, n := range []int{0, 1, 256, 257, 100_000, 1 << 26} {
		b := p.Get(n)
		require.Len(t, *b, n)
		require.GreaterOrEqual(t, cap(*b), n)
		require.Zero(t, cap(*b)&(cap(*b)-1), "capacity is a power of two")
		p.Put(b)
	}
	big := p.Get(1<<26 + 1)
	require.Len(t, *big, 1<<26+1)
	p.Put(big) // dropped: larger than the largest tier
	odd := make([]byte, 300)
	p.Put(&odd) // dropped: not from the pool
	// A reused buffer comes back at the asked length.
	b := p.Get(1000)
	(*b)[0] = 7
	p.Put(b)
	b = p.Get(900)
	require.Len(t, *b, 900)
}
