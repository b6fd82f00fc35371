package varint

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReader(t *testing.T) {
	b := binary.AppendUvarint(nil, 300)
	b = binary.AppendVarint(b, -5)
	b = append(b, 7)
	b = binary.AppendUvarint(b, 3)
	b = append(b, "abc"...)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(2.5))
	r := Reader{B: b}
	require.Equal(t, uint64(300), r.Uvarint())
	require.Equal(t, int64(-5), r.Varint())
	require.Equal(t, byte(7), r.Byte())
	require.Equal(t, "abc", string(r.LenBytes()))
	require.Equal(t, 2.5, r.Float())
	require.NoError(t, r.Err)
	require.Empty(t, r.B)

	// Past the end every read fails, and the first error stays.
	require.Zero(t, r.Byte())
	require.ErrorIs(t, r.Err, ErrCorrupt)
	require.Zero(t, r.Uvarint())
	require.Zero(t, r.Varint())
	require.Nil(t, r.Bytes(0))
	require.Zero(t, r.Float())
	for _, bad := range [][]byte{{0x80}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		r := Reader{B: bad}
		r.Uvarint()
		require.ErrorIs(t, r.Err, ErrCorrupt)
		r = Reader{B: bad}
		r.Varint()
		require.ErrorIs(t, r.Err, ErrCorrupt)
	}
	r = Reader{B: []byte{5, 'a'}}
	require.Nil(t, r.LenBytes(), "a length past the end")
	require.ErrorIs(t, r.Err, ErrCorrupt)
}
