// Package varint reads the varints, length-prefixed bytes and floats that
// proxylens' stored encodings are made of (docs/format.md): Go's
// encoding/binary varints, little-endian IEEE 754 floats.
//
// A Reader is not safe for concurrent use.
package varint

import (
	"encoding/binary"
	"errors"
	"math"
)

// ErrCorrupt is the error of a Reader that ran out of bytes or met a
// malformed varint.
var ErrCorrupt = errors.New("corrupt value")

// Reader decodes B from the front, remembering the first error: after one,
// every read returns zero and Err stays set.
type Reader struct {
	B   []byte // what is left to read
	Err error
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	if r.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.B)
	if n <= 0 {
		r.Err = ErrCorrupt
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Varint reads a signed (zigzag) varint.
func (r *Reader) Varint() int64 {
	if r.Err != nil {
		return 0
	}
	v, n := binary.Varint(r.B)
	if n <= 0 {
		r.Err = ErrCorrupt
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if r.Err != nil || len(r.B) < 1 {
		r.Err = ErrCorrupt
		return 0
	}
	c := r.B[0]
	r.B = r.B[1:]
	return c
}

// Bytes reads n bytes; the result aliases B.
func (r *Reader) Bytes(n uint64) []byte {
	if r.Err != nil || uint64(len(r.B)) < n {
		r.Err = ErrCorrupt
		return nil
	}
	b := r.B[:n]
	r.B = r.B[n:]
	return b
}

// LenBytes reads a uvarint length and that many bytes.
func (r *Reader) LenBytes() []byte { return r.Bytes(r.Uvarint()) }

// Float reads a little-endian float64.
func (r *Reader) Float() float64 {
	b := r.Bytes(8)
	if b == nil {
		return 0
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(b))
}
