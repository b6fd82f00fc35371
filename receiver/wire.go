package receiver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unsafe"
)

// Protobuf wire types.
const (
	wireVarint     = 0
	wireI64        = 1
	wireLen        = 2
	wireStartGroup = 3
	wireEndGroup   = 4
	wireI32        = 5
)

// recursionLimit is pdata's bound on nested attribute values.
const recursionLimit = 100

var (
	errIntOverflow     = errors.New("proto: integer overflow")
	errInvalidLength   = errors.New("proto: negative length")
	errRecursionDepth  = errors.New("proto: exceeded max recursion depth")
	errUnexpectedGroup = errors.New("proto: unexpected end of group")
)

// The functions below follow go.opentelemetry.io/collector/pdata's
// internal/proto rules exactly, so that this decoder accepts what the
// Collector accepts and refuses what it refuses.

func consumeVarint(buf []byte, pos int) (uint64, int, error) {
	var num uint64
	for shift := uint(0); ; shift += 7 {
		if shift >= 64 {
			return 0, 0, errIntOverflow
		}
		if pos >= len(buf) {
			return 0, 0, io.ErrUnexpectedEOF
		}
		b := buf[pos]
		pos++
		num |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return num, pos, nil
		}
	}
}

func consumeTag(buf []byte, pos int) (int32, int, int, error) {
	if pos < len(buf) && buf[pos] < 0x80 { // one-byte tag: the common case
		tag := buf[pos]
		if tag>>3 == 0 {
			return 0, 0, 0, fmt.Errorf("proto: illegal field 0 at byte %d", pos)
		}
		return int32(tag >> 3), int(tag & 7), pos + 1, nil
	}
	tag, pos, err := consumeVarint(buf, pos)
	if err != nil {
		return 0, 0, 0, err
	}
	field := int32(tag >> 3)
	if field <= 0 {
		return 0, 0, 0, fmt.Errorf("proto: illegal field %d at byte %d", field, pos)
	}
	return field, int(tag & 7), pos, nil
}

// consumeLen returns the bounds [start, end) of a length-delimited field.
func consumeLen(buf []byte, pos int) (int, int, error) {
	num, pos, err := consumeVarint(buf, pos)
	if err != nil {
		return 0, 0, err
	}
	length := int(num)
	if length < 0 {
		return 0, 0, errInvalidLength
	}
	end := pos + length
	if end < 0 || end > len(buf) {
		return 0, 0, io.ErrUnexpectedEOF
	}
	return pos, end, nil
}

func consumeI64(buf []byte, pos int) (uint64, int, error) {
	if pos+8 < 0 || pos+8 > len(buf) {
		return 0, 0, io.ErrUnexpectedEOF
	}
	return binary.LittleEndian.Uint64(buf[pos:]), pos + 8, nil
}

func consumeI32(buf []byte, pos int) (uint32, int, error) {
	if pos+4 < 0 || pos+4 > len(buf) {
		return 0, 0, io.ErrUnexpectedEOF
	}
	return binary.LittleEndian.Uint32(buf[pos:]), pos + 4, nil
}

// consumeUnknown skips a field of a type the decoder does not read, groups
// included.
func consumeUnknown(buf []byte, pos, wt int) (int, error) {
	var err error
	depth := 0
	for pos < len(buf) {
		switch wt {
		case wireVarint:
			_, pos, err = consumeVarint(buf, pos)
			return pos, err
		case wireI64:
			_, pos, err = consumeI64(buf, pos)
			return pos, err
		case wireLen:
			_, pos, err = consumeLen(buf, pos)
			return pos, err
		case wireStartGroup:
			depth++
		case wireEndGroup:
			if depth == 0 {
				return 0, errUnexpectedGroup
			}
			depth--
		case wireI32:
			_, pos, err = consumeI32(buf, pos)
			return pos, err
		default:
			return 0, fmt.Errorf("proto: illegal wire type %d", wt)
		}
		if depth == 0 {
			return pos, nil
		}
		if _, wt, pos, err = consumeTag(buf, pos); err != nil {
			return 0, err
		}
	}
	return 0, io.ErrUnexpectedEOF
}

// wrongType reports a known field sent with the wrong wire type.
func wrongType(msg, field string, wt int) error {
	return fmt.Errorf("proto: wrong wire type %d for %s.%s", wt, msg, field)
}

// str returns buf[start:end] as a string without copying: it aliases the
// request buffer and must not outlive it.
func str(buf []byte, start, end int) string {
	if start == end {
		return ""
	}
	return unsafe.String(&buf[start], end-start)
}
