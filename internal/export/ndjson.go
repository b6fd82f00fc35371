package export

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/proxylens/proxylens/internal/jsonstr"
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
		e.keys[i] = append(jsonstr.AppendString([]byte{sep}, c.Name), ':')
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
			b = jsonstr.AppendString(b, v)
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
