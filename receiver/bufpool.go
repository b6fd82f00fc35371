package receiver

import (
	"math/bits"
	"sync"
)

// dirtyPool is a gRPC buffer pool that does not zero buffers when it hands
// them out again. gRPC's default pool clears every buffer it reuses; for
// request buffers of a few hundred kilobytes that cost 7% of the CPU of a
// flat-out ingest, and gRPC overwrites every byte it passes on anyway.
// Buffers are kept in power-of-two tiers from 256 B to 64 MiB.
type dirtyPool struct {
	tiers [maxTier + 1]sync.Pool
}

const (
	minTier = 8
	maxTier = 26
)

var requestBuffers = &dirtyPool{}

func tierOf(n int) int {
	if n <= 1<<minTier {
		return minTier
	}
	return bits.Len(uint(n - 1))
}

func (p *dirtyPool) Get(n int) *[]byte {
	t := tierOf(n)
	if t > maxTier {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<t)
	return &b
}

func (p *dirtyPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minTier || c&(c-1) != 0 {
		return // not one of ours
	}
	if t := bits.Len(uint(c)) - 1; t <= maxTier {
		p.tiers[t].Put(b)
	}
}
