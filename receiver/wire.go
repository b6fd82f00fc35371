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

// A field is one field of a protobuf message, as field.next reads it. It is
// modelled on github.com/VictoriaMetrics/easyproto's FieldContext, which
// this package does not use because it accepts other messages than pdata
// (go.opentelemetry.io/collector/pdata) does, and the decoder must accept
// exactly what pdata accepts:
//   - easyproto refuses the group wire types 3 and 4; pdata skips a group as
//     an unknown field (up to its first scalar field, see consumeUnknown);
//   - easyproto accepts field number 0, which pdata refuses;
//   - easyproto refuses field numbers above 2³²-1, where pdata keeps the
//     low 32 bits of the number (so field 2³²+1 is field 1 to it);
//   - easyproto refuses a 10-byte varint whose last byte is above 1, where
//     pdata drops the bits that overflow.
//
// A message function reads its fields in a loop and switches on f.num:
//
//	var f field
//	for len(src) > 0 {
//		if src, err = f.next(src); err != nil {
//			return err
//		}
//		switch f.num {
//		case 1:
//			b, ok := f.bytes()
//			if !ok {
//				return f.wrongType("Message", "name")
//			}
//			...
//		}
//	}
//
// Fields it does not name are skipped already: the default case is empty.
type field struct {
	num  int32  // field number
	wt   int    // wire type
	u64  uint64 // value of a varint, fixed64 or fixed32 field
	data []byte // value of a length-delimited field; aliases the message
}

// next reads the field at the start of src, which must not be empty, into
// f and returns the rest of src. Fields of the group wire types, and of the
// wire types protobuf does not define, are skipped as pdata skips unknown
// fields: no OTLP field has those types, so a message function reports them
// as a wrong wire type if the field is one it knows.
//
// The value is read before the message function sees the field number.
// For a known field sent with the wrong wire type, pdata reports the wire
// type before it reads the value; here a value that cannot be read is
// reported first. The message is refused either way.
func (f *field) next(src []byte) ([]byte, error) {
	// The common case, as in easyproto: a one-byte tag of a field number
	// above 0 and a length-delimited value shorter than 128 bytes.
	if len(src) >= 2 {
		tag, n := src[0], src[1]
		if tag < 0x80 && tag >= 1<<3 && tag&7 == wireLen && n < 0x80 && int(n) <= len(src)-2 {
			f.num, f.wt, f.data = int32(tag>>3), wireLen, src[2:2+n]
			return src[2+n:], nil
		}
	}
	num, wt, pos, err := consumeTag(src, 0)
	if err != nil {
		return nil, err
	}
	f.num, f.wt = num, wt
	switch wt {
	case wireVarint:
		f.u64, pos, err = consumeVarint(src, pos)
	case wireI64:
		f.u64, pos, err = consumeI64(src, pos)
	case wireLen:
		var start int
		start, pos, err = consumeLen(src, pos)
		if err == nil {
			f.data = src[start:pos]
		}
	case wireI32:
		var v uint32
		v, pos, err = consumeI32(src, pos)
		f.u64 = uint64(v)
	default:
		pos, err = consumeUnknown(src, pos, wt)
	}
	if err != nil {
		return nil, err
	}
	return src[pos:], nil
}

// bytes returns the value of a length-delimited field (string, bytes or
// message); ok is false if the field has another wire type.
func (f *field) bytes() (b []byte, ok bool) { return f.data, f.wt == wireLen }

// varint returns the value of a varint field (intN, uintN, bool or enum).
func (f *field) varint() (v uint64, ok bool) { return f.u64, f.wt == wireVarint }

// fixed64 returns the value of a fixed64, sfixed64 or double field.
func (f *field) fixed64() (v uint64, ok bool) { return f.u64, f.wt == wireI64 }

// fixed32 returns the value of a fixed32, sfixed32 or float field.
func (f *field) fixed32() (v uint32, ok bool) { return uint32(f.u64), f.wt == wireI32 }

// wrongType reports that f, field name of message msg, has a wire type
// other than its type's. pdata refuses such a message.
func (f *field) wrongType(msg, name string) error {
	return fmt.Errorf("proto: wrong wire type %d for %s.%s", f.wt, msg, name)
}

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
// included. Like pdata's ConsumeUnknown, it ends a group at the first field
// inside it that is not a group itself (whatever follows that field is read
// as fields of the enclosing message), and refuses a group that reaches the
// end of the message, even one closed by its last byte.
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

// str returns b as a string without copying: it aliases the request buffer
// and must not outlive it.
func str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// strAt is str(buf[start:end]) without slicing first, which costs twice as
// many instructions: for plainKeyValue, which tracks positions.
func strAt(buf []byte, start, end int) string {
	if start == end {
		return ""
	}
	return unsafe.String(&buf[start], end-start)
}
