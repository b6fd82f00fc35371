package export

import (
	"fmt"
	"io"
	"time"
)

// encoder writes rows already checked against the columns.
type encoder interface {
	writeRow(row []any) error
	close() error
}

// Writer writes rows of fixed columns in one format. Create it with
// NewWriter, call Write for each row and Close once at the end.
type Writer struct {
	cols   []Column
	enc    encoder
	rows   int64
	closed bool
}

// NewWriter writes rows of cols to w in format f. The header (the column
// names) is written at once for CSV and NDJSON writes nothing until the first
// row. Output is buffered: nothing is complete in w before Close. For XLSX the
// workbook is written to w by Close; rows are spooled to temporary files in
// os.TempDir until then.
func NewWriter(w io.Writer, f Format, cols []Column) (*Writer, error) {
	if _, err := ParseFormat(string(f)); err != nil || f.Extension() == "" {
		return nil, fmt.Errorf("%w %q: valid formats are csv, json, xlsx", ErrUnknownFormat, string(f))
	}
	if err := validateColumns(f, cols); err != nil {
		return nil, err
	}
	cols = append([]Column(nil), cols...)
	var (
		enc encoder
		err error
	)
	switch f {
	case CSV:
		enc, err = newCSVEncoder(w, cols)
	case JSON:
		enc = newNDJSONEncoder(w, cols)
	case XLSX:
		enc, err = newXLSXEncoder(w, cols)
	}
	if err != nil {
		return nil, err
	}
	return &Writer{cols: cols, enc: enc}, nil
}

// Write writes one row: one value per column, of the column's kind (string,
// time.Time, float64, int64, bool) or nil. A row of the wrong length or with
// a value of the wrong type is refused with an error wrapping ErrBadRow that
// names the column; nothing of it is written.
func (w *Writer) Write(row []any) error {
	if w.closed {
		return ErrClosed
	}
	if err := w.check(row); err != nil {
		return err
	}
	if err := w.enc.writeRow(row); err != nil {
		return fmt.Errorf("write row %d: %w", w.rows+1, err)
	}
	w.rows++
	return nil
}

// check reports the first value of row that does not fit its column.
func (w *Writer) check(row []any) error {
	if len(row) != len(w.cols) {
		return fmt.Errorf("%w %d: %d values for %d columns", ErrBadRow, w.rows+1, len(row), len(w.cols))
	}
	for i, v := range row {
		if v == nil {
			continue
		}
		var ok bool
		switch w.cols[i].Kind {
		case String:
			_, ok = v.(string)
		case Time:
			_, ok = v.(time.Time)
		case Float:
			_, ok = v.(float64)
		case Int:
			_, ok = v.(int64)
		case Bool:
			_, ok = v.(bool)
		}
		if !ok {
			return fmt.Errorf("%w %d: column %q (%s) got %T", ErrBadRow, w.rows+1, w.cols[i].Name, w.cols[i].Kind, v)
		}
	}
	return nil
}

// Rows returns the number of rows written, not counting the header.
func (w *Writer) Rows() int64 { return w.rows }

// Close flushes the output; for XLSX it writes the workbook to w and removes
// its temporary files. Closing again does nothing and returns nil. Close does
// not close the io.Writer given to NewWriter.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	return w.enc.close()
}
