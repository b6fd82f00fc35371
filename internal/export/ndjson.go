package export

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// ndjsonEncoder writes one JSON object per row, keys in column order.
type ndjsonEncoder struct {
	bw   *bufio.Writer
	keys [][]byte // `{"name":` for the first column, `,"name":` for the others
	line []byte
}

func newNDJSONEncoder(w io.Writer, cols []Column) *ndjsonEncoder {
	e := &ndjsonEncoder{bw: bufio.NewWriterSize(w, bufSize), keys: make([][]byte, len(cols))}
	for i, c := range cols {
		sep := byte(',')
		if i == 0 {
			sep = '{'
		}
		e.keys[i] = append(appendJSONString([]byte{sep}, c.Name), ':')
	}
	return e
}

func (e *ndjsonEncoder) writeRow(row []any) error {
	b := e.line[:0]
	for i, v := range row {
		b = append(b, e.keys[i]...)
		switch v := v.(type) {
		case nil:
			b = append(b, "null"...)
		case string:
			b = appendJSONString(b, v)
		case time.Time:
			b = append(b, '"')
			b = v.UTC().AppendFormat(b, time.RFC3339Nano)
			b = append(b, '"')
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				b = append(b, "null"...)
			} else {
				b = strconv.AppendFloat(b, v, 'g', -1, 64)
			}
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case bool:
			b = strconv.AppendBool(b, v)
		}
	}
	b = append(b, '}', '\n')
	e.line = b
	_, err := e.bw.Write(b)
	return err
}

func (e *ndjsonEncoder) close() error {
	if err := e.bw.Flush(); err != nil {
		return fmt.Errorf("flush ndjson: %w", err)
	}
	return nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string with encoding/json's escaping
// rules, HTML escaping aside: quote, backslash and control characters are
// escaped, invalid UTF-8 becomes U+FFFD, and U+2028 and U+2029 are escaped
// so the output is also valid JavaScript.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
