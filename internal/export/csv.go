package export

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"time"
)

// bufSize is the output buffer of the CSV and NDJSON encoders.
const bufSize = 64 << 10

// csvEncoder writes RFC 4180 CSV with a header row.
type csvEncoder struct {
	cols    []Column
	cw      *csv.Writer
	record  []string
	scratch []byte
}

func newCSVEncoder(w io.Writer, cols []Column) (*csvEncoder, error) {
	// csv.NewWriter reuses a *bufio.Writer of at least 4 KiB as its buffer.
	e := &csvEncoder{cols: cols, cw: csv.NewWriter(bufio.NewWriterSize(w, bufSize)), record: make([]string, len(cols))}
	for i, c := range cols {
		e.record[i] = c.Name
	}
	if err := e.cw.Write(e.record); err != nil {
		return nil, fmt.Errorf("write csv header: %w", err)
	}
	return e, nil
}

func (e *csvEncoder) writeRow(row []any) error {
	for i, v := range row {
		switch v := v.(type) {
		case nil:
			e.record[i] = ""
		case string:
			e.record[i] = v
		case time.Time:
			e.scratch = v.UTC().AppendFormat(e.scratch[:0], time.RFC3339Nano)
			e.record[i] = string(e.scratch)
		case float64:
			e.record[i] = strconv.FormatFloat(v, 'g', -1, 64)
		case int64:
			e.record[i] = strconv.FormatInt(v, 10)
		case bool:
			e.record[i] = strconv.FormatBool(v)
		}
	}
	return e.cw.Write(e.record)
}

func (e *csvEncoder) close() error {
	e.cw.Flush()
	if err := e.cw.Error(); err != nil {
		return fmt.Errorf("flush csv: %w", err)
	}
	return nil
}
