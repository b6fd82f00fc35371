package receiver

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/proxylens/proxylens/otelanalytics"
)

// budget bounds the request bytes held at once (Config.MaxInflightBytes):
// bodies as they are read and decompressed, and messages while they are
// decoded and committed. A nil budget bounds nothing.
//
// Bytes are reserved as they arrive, never from what a client announces,
// so a client that announces a large body and sends it slowly holds only
// what it has sent. Bodies still arriving may hold at most half of the
// budget between them (arriving): the other half stays for requests that
// are complete, so slow uploads cannot starve gRPC exports or the decoding
// and commit of requests already read.
type budget struct {
	inflight atomic.Int64
	arriving atomic.Int64 // part of inflight held by bodies still being read
	peak     atomic.Int64 // highest inflight since start
	max      int64
}

// acquire reserves n more bytes for a request that already holds held
// bytes of the budget. It fails when the bound would be passed, unless
// nothing but the request itself is in flight: a single request larger than
// the budget is still taken alone (Config.MaxInflightBytes).
func (b *budget) acquire(n, held int64) bool {
	if b == nil {
		return true
	}
	v, ok := addWithin(&b.inflight, n, held, b.max)
	if ok {
		b.notePeak(v)
	}
	return ok
}

// addWithin adds n to c, which holds held of it already, unless that would
// take c past bound while anything else holds some: the one rule both of
// the budget's counters keep. It returns c's new value.
func addWithin(c *atomic.Int64, n, held, bound int64) (int64, bool) {
	for {
		cur := c.Load()
		if cur-held > 0 && cur+n > bound {
			return cur, false
		}
		if c.CompareAndSwap(cur, cur+n) {
			return cur + n, true
		}
	}
}

// acquireArriving is acquire for the bytes of a body still being read:
// besides the whole budget, bodies still arriving may hold at most half of
// it, unless the request is alone.
func (b *budget) acquireArriving(n, held int64) bool {
	if b == nil {
		return true
	}
	if _, ok := addWithin(&b.arriving, n, held, b.max/2); !ok {
		return false
	}
	if !b.acquire(n, held) {
		b.arriving.Add(-n)
		return false
	}
	return true
}

// arrivingInto is acquireArriving for one request's body, which holds
// *reserved of the budget: what it reserves is added to *reserved.
func (b *budget) arrivingInto(reserved *int64) func(n int64) bool {
	return func(n int64) bool {
		if !b.acquireArriving(n, *reserved) {
			return false
		}
		*reserved += n
		return true
	}
}

// arrived marks n bytes reserved with acquireArriving as no longer
// arriving: their body is complete (or refused).
func (b *budget) arrived(n int64) {
	if b != nil {
		b.arriving.Add(-n)
	}
}

func (b *budget) release(n int64) {
	if b != nil {
		b.inflight.Add(-n)
	}
}

func (b *budget) notePeak(v int64) {
	for {
		p := b.peak.Load()
		if v <= p || b.peak.CompareAndSwap(p, v) {
			return
		}
	}
}

// readChunk is the step in which a body's reservation grows as it is
// read: the first reservation, and the least it grows by.
const readChunk = 64 << 10

// pageSize is the unit a body's last reservation is rounded up to.
const pageSize = 4 << 10

// readReserving reads src to its end into *bp, reserving the buffer's
// bytes with reserve before they are read: in steps that start at
// readChunk and double, never more than size rounded up to pageSize (a
// body of known length: that length + 1, to see EOF without growing), so
// that a body holds about what it has sent, not what it announced. It
// returns what was read; an error wrapping errTooLarge past limit bytes,
// otelanalytics.ErrOverloaded when reserve refuses, or src's own error
// unwrapped, for the caller to classify. *bp is left holding the buffer
// (for reuse) in every case.
func readReserving(src io.Reader, bp *[]byte, size, limit int64, reserve func(n int64) bool) ([]byte, error) {
	buf := (*bp)[:0]
	defer func() { *bp = buf }()
	// The last step rounds up to whole pages, so that a reused buffer
	// fits the next body of about the same length without growing.
	size = (size + pageSize - 1) / pageSize * pageSize
	held := int64(0) // of the budget, for buf's bytes
	for {
		if int64(len(buf)) == held {
			step := min(max(held, readChunk), size-held)
			if step <= 0 {
				return nil, fmt.Errorf("%w: more than %d bytes", errTooLarge, limit)
			}
			if !reserve(step) {
				return nil, otelanalytics.ErrOverloaded
			}
			held += step
			if int64(cap(buf)) < held {
				grown := make([]byte, len(buf), held)
				copy(grown, buf)
				buf = grown
			}
		}
		n, err := src.Read(buf[len(buf):held])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, fmt.Errorf("%w: more than %d bytes", errTooLarge, limit)
		}
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
