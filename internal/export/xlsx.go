package export

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/xuri/excelize/v2"
)

// maxSheetRows is the number of rows per sheet, header included, after which
// the XLSX encoder continues on a new sheet. It is Excel's limit; a variable
// so tests can lower it.
var maxSheetRows = excelize.TotalRows

// maxSheetCols is Excel's column limit.
const maxSheetCols = excelize.MaxColumns

// sheetName is the name of the first sheet; later ones are "data 2", ….
const sheetName = "data"

// dateNumFmt is the number format of Time cells.
const dateNumFmt = "yyyy-mm-dd hh:mm:ss.000"

// xlsxEncoder streams rows into a workbook, one sheet per maxSheetRows rows.
type xlsxEncoder struct {
	w         io.Writer
	cols      []Column
	f         *excelize.File
	sw        *excelize.StreamWriter
	sheets    int
	sheetRow  int // last row written to the current sheet, header included
	headStyle int
	dateStyle int
	header    []any
	vals      []any
	timeCells []excelize.Cell
	ref       []byte
}

func newXLSXEncoder(w io.Writer, cols []Column) (_ *xlsxEncoder, err error) {
	f := excelize.NewFile()
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Close())
		}
	}()
	if err := f.SetSheetName(f.GetSheetName(0), sheetName); err != nil {
		return nil, fmt.Errorf("name xlsx sheet: %w", err)
	}
	e := &xlsxEncoder{
		w:         w,
		cols:      cols,
		f:         f,
		header:    make([]any, len(cols)),
		vals:      make([]any, len(cols)),
		timeCells: make([]excelize.Cell, len(cols)),
	}
	if e.headStyle, err = f.NewStyle(&excelize.Style{Font: &excelize.Font{Bold: true}}); err != nil {
		return nil, fmt.Errorf("create xlsx header style: %w", err)
	}
	numFmt := dateNumFmt
	if e.dateStyle, err = f.NewStyle(&excelize.Style{CustomNumFmt: &numFmt}); err != nil {
		return nil, fmt.Errorf("create xlsx date style: %w", err)
	}
	for i, c := range cols {
		e.header[i] = excelize.Cell{StyleID: e.headStyle, Value: c.Name}
		e.timeCells[i].StyleID = e.dateStyle
	}
	if err := e.startSheet(); err != nil {
		return nil, err
	}
	return e, nil
}

// startSheet flushes the current sheet, if any, and starts the next one with
// the header row.
func (e *xlsxEncoder) startSheet() error {
	name := sheetName
	if e.sw != nil {
		if err := e.sw.Flush(); err != nil {
			return fmt.Errorf("flush xlsx sheet %q: %w", e.sw.Sheet, err)
		}
		name = sheetName + " " + strconv.Itoa(e.sheets+1)
		if _, err := e.f.NewSheet(name); err != nil {
			return fmt.Errorf("add xlsx sheet %q: %w", name, err)
		}
	}
	sw, err := e.f.NewStreamWriter(name)
	if err != nil {
		return fmt.Errorf("stream xlsx sheet %q: %w", name, err)
	}
	for i, c := range e.cols {
		if c.Kind == Time {
			if err := sw.SetColWidth(i+1, i+1, 24); err != nil {
				return fmt.Errorf("size xlsx column %q: %w", c.Name, err)
			}
		}
	}
	if err := sw.SetPanes(&excelize.Panes{Freeze: true, YSplit: 1, TopLeftCell: "A2", ActivePane: "bottomLeft"}); err != nil {
		return fmt.Errorf("freeze xlsx header: %w", err)
	}
	if err := sw.SetRow("A1", e.header); err != nil {
		return fmt.Errorf("write xlsx header on sheet %q: %w", name, err)
	}
	e.sw, e.sheetRow = sw, 1
	e.sheets++
	return nil
}

func (e *xlsxEncoder) writeRow(row []any) error {
	if e.sheetRow >= maxSheetRows {
		if err := e.startSheet(); err != nil {
			return err
		}
	}
	for i, v := range row {
		switch x := v.(type) {
		case time.Time:
			e.timeCells[i].Value = x.UTC()
			e.vals[i] = &e.timeCells[i]
		case float64:
			e.vals[i] = xlsxFloat(x, v)
		default: // nil, string, int64, bool
			e.vals[i] = v
		}
	}
	e.ref = strconv.AppendInt(append(e.ref[:0], 'A'), int64(e.sheetRow+1), 10)
	if err := e.sw.SetRow(string(e.ref), e.vals); err != nil {
		return fmt.Errorf("xlsx sheet %q: %w", e.sw.Sheet, err)
	}
	e.sheetRow++
	return nil
}

// xlsxFloat returns the cell value of v (boxed as orig): nil for NaN and
// infinities, which a spreadsheet cannot hold as numbers, and otherwise v
// rounded to the 15 significant digits Excel keeps. excelize truncates to 15
// digits; rounding first keeps the nearest value instead.
func xlsxFloat(v float64, orig any) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	var buf [32]byte
	r, err := strconv.ParseFloat(string(strconv.AppendFloat(buf[:0], v, 'g', 15, 64)), 64)
	if err != nil || r == v {
		return orig
	}
	return r
}

func (e *xlsxEncoder) close() error {
	err := e.sw.Flush()
	if err != nil {
		err = fmt.Errorf("flush xlsx sheet %q: %w", e.sw.Sheet, err)
	} else if err = e.f.Write(e.w); err != nil {
		err = fmt.Errorf("write xlsx workbook: %w", err)
	}
	if cerr := e.f.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("remove xlsx temporary files: %w", cerr))
	}
	return err
}
