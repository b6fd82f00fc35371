package export

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/xuri/excelize/v2"
)

var testCols = []Column{
	{Name: "time", Kind: Time},
	{Name: "source", Kind: String},
	{Name: "duration", Kind: Float},
	{Name: "status", Kind: Int},
	{Name: "cached", Kind: Bool},
}

var (
	t0 = time.Date(2026, 11, 29, 4, 11, 18, 123_000_000, time.FixedZone("CET", 3600))
	// testRows covers every kind, nil in every column and awkward floats.
	testRows = [][]any{
		{t0, "api.example.com", 0.123456789012345, int64(200), true},
		{t0.Add(time.Second), "a,b \"quoted\"\nline2", 1234.5, int64(-1), false},
		{nil, nil, nil, nil, nil},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "ünïcødé ✓ 日本", 1e-7, int64(math.MaxInt64), true},
		{time.Date(2026, 1, 2, 3, 4, 5, 987_654_321, time.UTC), "tab\there\r\nctl\x01\x1f", 3.0, int64(0), false},
	}
)

func writeAll(t *testing.T, f Format, cols []Column, rows [][]any) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, f, cols)
	require.NoError(t, err)
	for _, r := range rows {
		require.NoError(t, w.Write(r))
	}
	require.NoError(t, w.Close())
	require.NoError(t, w.Close(), "second Close")
	require.Equal(t, int64(len(rows)), w.Rows())
	return buf.Bytes()
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"csv": CSV, " JSON ": JSON, "ndjson": JSON, "XLSX": XLSX} {
		got, err := ParseFormat(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := ParseFormat("xls")
	require.ErrorIs(t, err, ErrUnknownFormat)
	require.EqualError(t, err, `unknown export format "xls": valid formats are csv, json, xlsx`)

	require.Equal(t, ".csv", CSV.Extension())
	require.Equal(t, ".ndjson", JSON.Extension())
	require.Equal(t, ".xlsx", XLSX.Extension())
	require.Equal(t, "text/csv; charset=utf-8", CSV.ContentType())
	require.Equal(t, "application/x-ndjson", JSON.ContentType())
	require.Equal(t, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", XLSX.ContentType())

	_, err = NewWriter(&bytes.Buffer{}, "pdf", testCols)
	require.ErrorIs(t, err, ErrUnknownFormat)
}

func TestNewWriterBadColumns(t *testing.T) {
	_, err := NewWriter(&bytes.Buffer{}, CSV, nil)
	require.ErrorIs(t, err, ErrBadColumns)
	_, err = NewWriter(&bytes.Buffer{}, JSON, []Column{{Name: "a"}, {Name: "a"}, {Name: ""}, {Name: "k", Kind: 9}})
	require.ErrorIs(t, err, ErrBadColumns)
	for _, want := range []string{`columns 0 and 1 are both named "a"`, "column 2 has no name", `column "k" has unknown kind 9`} {
		require.ErrorContains(t, err, want)
	}
}

func TestWriteBadRow(t *testing.T) {
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, f, testCols)
			require.NoError(t, err)
			require.NoError(t, w.Write(testRows[0]))

			err = w.Write([]any{t0, "x"})
			require.ErrorIs(t, err, ErrBadRow)
			require.EqualError(t, err, "bad export row 2: 2 values for 5 columns")

			err = w.Write([]any{t0, "x", 1.5, 200, true}) // int, not int64
			require.ErrorIs(t, err, ErrBadRow)
			require.EqualError(t, err, `bad export row 2: column "status" (int) got int`)

			err = w.Write([]any{"2026-01-01", "x", 1.5, int64(200), true})
			require.EqualError(t, err, `bad export row 2: column "time" (time) got string`)

			require.Equal(t, int64(1), w.Rows())
			require.NoError(t, w.Close())
			require.ErrorIs(t, w.Write(testRows[0]), ErrClosed)
		})
	}
}

// wantCSV is the text each test row's values must read back as in CSV.
func csvText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case int64:
		return strconv.FormatInt(v, 10)
	case bool:
		return strconv.FormatBool(v)
	}
	panic("unreachable")
}

func TestCSVRoundTrip(t *testing.T) {
	rows := append(testRows, []any{t0, "", 0.1 + 0.2, int64(math.MinInt64), nil})
	out := writeAll(t, CSV, testCols, rows)
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	require.NoError(t, err)
	require.Len(t, recs, len(rows)+1)
	require.Equal(t, []string{"time", "source", "duration", "status", "cached"}, recs[0])
	for i, r := range rows {
		for j, v := range r {
			// encoding/csv's reader turns \r\n inside a quoted field into \n.
			require.Equal(t, strings.ReplaceAll(csvText(v), "\r\n", "\n"), recs[i+1][j], "row %d column %d", i, j)
		}
	}
	require.Equal(t, "2026-11-29T03:11:18.123Z", recs[1][0], "UTC, trailing zeros trimmed")
	require.Equal(t, "2026-01-02T03:04:05Z", recs[4][0])
	f, err := strconv.ParseFloat(recs[len(recs)-1][2], 64)
	require.NoError(t, err)
	require.Equal(t, 0.1+0.2, f, "full precision")
	require.Contains(t, string(out), "\"tab\there\r\nctl\x01\x1f\"")
}

func TestNDJSONRoundTrip(t *testing.T) {
	rows := append(testRows, []any{t0, "<&>\u2028\u2029\"\\/", 0.1 + 0.2, int64(-7), nil},
		[]any{nil, "bad utf8 \xff\xfe", math.NaN(), nil, nil},
		[]any{nil, nil, math.Inf(-1), nil, nil})
	out := writeAll(t, JSON, testCols, rows)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	require.Len(t, lines, len(rows))
	for i, line := range lines {
		require.True(t, json.Valid([]byte(line)), line)
		// Keys in column order.
		pos := -1
		for _, c := range testCols {
			p := strings.Index(line, `"`+c.Name+`":`)
			require.Greater(t, p, pos, "key %q in order in %s", c.Name, line)
			pos = p
		}
		var got map[string]any
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		require.NoError(t, dec.Decode(&got))
		require.Len(t, got, len(testCols))
		for j, c := range testCols {
			v := rows[i][j]
			switch v := v.(type) {
			case nil:
				require.Nil(t, got[c.Name])
			case string:
				require.Equal(t, jsonRoundTrip(t, v), got[c.Name])
			case time.Time:
				ts, err := time.Parse(time.RFC3339Nano, got[c.Name].(string))
				require.NoError(t, err)
				require.True(t, v.Equal(ts))
				require.Equal(t, time.UTC, ts.Location())
			case float64:
				if math.IsNaN(v) || math.IsInf(v, 0) {
					require.Nil(t, got[c.Name])
					continue
				}
				f, err := got[c.Name].(json.Number).Float64()
				require.NoError(t, err)
				require.Equal(t, v, f)
			case int64:
				n, err := got[c.Name].(json.Number).Int64()
				require.NoError(t, err)
				require.Equal(t, v, n)
			case bool:
				require.Equal(t, v, got[c.Name])
			}
		}
	}
}

// excelEpoch is day 0 of Excel's 1900 date system for dates after 1900-03-01.
var excelEpoch = time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC)

func openXLSX(t *testing.T, b []byte) *excelize.File {
	t.Helper()
	f, err := excelize.OpenReader(bytes.NewReader(b))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	return f
}

func cellName(t *testing.T, col, row int) string {
	t.Helper()
	n, err := excelize.CoordinatesToCellName(col, row)
	require.NoError(t, err)
	return n
}

func TestXLSXRoundTrip(t *testing.T) {
	rows := append(testRows, []any{t0, "_x0041_ literal", 0.1 + 0.2, int64(-7), nil},
		[]any{nil, nil, math.NaN(), nil, nil})
	f := openXLSX(t, writeAll(t, XLSX, testCols, rows))
	require.Equal(t, []string{"data"}, f.GetSheetList())

	// Header: the names, in bold.
	for j, c := range testCols {
		ref := cellName(t, j+1, 1)
		v, err := f.GetCellValue("data", ref)
		require.NoError(t, err)
		require.Equal(t, c.Name, v)
		id, err := f.GetCellStyle("data", ref)
		require.NoError(t, err)
		st, err := f.GetStyle(id)
		require.NoError(t, err)
		require.NotNil(t, st.Font)
		require.True(t, st.Font.Bold, "header %q bold", c.Name)
	}
	panes, err := f.GetPanes("data")
	require.NoError(t, err)
	require.True(t, panes.Freeze)

	raw := excelize.Options{RawCellValue: true}
	for i, r := range rows {
		for j, v := range r {
			ref := cellName(t, j+1, i+2)
			typ, err := f.GetCellType("data", ref)
			require.NoError(t, err)
			got, err := f.GetCellValue("data", ref, raw)
			require.NoError(t, err)
			switch v := v.(type) {
			case nil:
				require.Empty(t, got, ref)
			case string:
				require.Equal(t, xlsxString(v), got, ref)
				require.Equal(t, excelize.CellTypeInlineString, typ, ref)
			case time.Time:
				// A number with a date format: a real date cell.
				require.Equal(t, excelize.CellTypeUnset, typ, ref)
				serial, err := strconv.ParseFloat(got, 64)
				require.NoError(t, err, ref)
				back := excelEpoch.Add(time.Duration(serial * float64(24*time.Hour)))
				require.WithinDuration(t, v.UTC(), back, time.Millisecond, ref)
				shown, err := f.GetCellValue("data", ref)
				require.NoError(t, err)
				// excelize renders the format but rounds to whole seconds
				// (Excel shows the milliseconds); the serial above is exact.
				require.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.000$`, shown, ref)
				require.Equal(t, v.UTC().Format("2006-01-02"), shown[:10], ref)
				id, err := f.GetCellStyle("data", ref)
				require.NoError(t, err)
				st, err := f.GetStyle(id)
				require.NoError(t, err)
				require.NotNil(t, st.CustomNumFmt)
				require.Equal(t, dateNumFmt, *st.CustomNumFmt)
			case float64:
				if math.IsNaN(v) {
					require.Empty(t, got, ref)
					continue
				}
				require.Equal(t, excelize.CellTypeUnset, typ, ref)
				f, err := strconv.ParseFloat(got, 64)
				require.NoError(t, err, ref)
				want, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 15, 64), 64)
				require.Equal(t, want, f, ref) // exact for values with at most 15 significant digits
			case int64:
				require.Equal(t, strconv.FormatInt(v, 10), got, ref)
				require.Equal(t, excelize.CellTypeUnset, typ, ref)
			case bool:
				require.Equal(t, excelize.CellTypeBool, typ, ref)
				want := "0"
				if v {
					want = "1"
				}
				require.Equal(t, want, got, ref)
			}
		}
	}
	// Floats with up to 15 significant digits read back exactly.
	got, err := f.GetCellValue("data", "C2", raw)
	require.NoError(t, err)
	require.Equal(t, "0.123456789012345", got)
}

// xlsxString is s as XML 1.0 can carry it: control characters other than tab,
// newline and carriage return become U+FFFD.
func xlsxString(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' {
			return '\ufffd'
		}
		return r
	}, s)
}

func TestXLSXSplitsSheets(t *testing.T) {
	old := maxSheetRows
	maxSheetRows = 4 // header + 3 rows per sheet
	t.Cleanup(func() { maxSheetRows = old })

	cols := []Column{{Name: "n", Kind: Int}, {Name: "at", Kind: Time}}
	var rows [][]any
	for i := range 10 {
		rows = append(rows, []any{int64(i), t0.Add(time.Duration(i) * time.Minute)})
	}
	f := openXLSX(t, writeAll(t, XLSX, cols, rows))
	require.Equal(t, []string{"data", "data 2", "data 3", "data 4"}, f.GetSheetList())
	n := 0
	for _, sheet := range f.GetSheetList() {
		got, err := f.GetRows(sheet, excelize.Options{RawCellValue: true})
		require.NoError(t, err)
		require.LessOrEqual(t, len(got), 4, sheet)
		require.Equal(t, []string{"n", "at"}, got[0], sheet)
		for _, r := range got[1:] {
			require.Equal(t, strconv.Itoa(n), r[0], sheet)
			n++
		}
	}
	require.Equal(t, 10, n)
}

func TestEmptyExport(t *testing.T) {
	out := writeAll(t, CSV, testCols, nil)
	require.Equal(t, "time,source,duration,status,cached\n", string(out))

	require.Empty(t, writeAll(t, JSON, testCols, nil))

	f := openXLSX(t, writeAll(t, XLSX, testCols, nil))
	got, err := f.GetRows("data")
	require.NoError(t, err)
	require.Equal(t, [][]string{{"time", "source", "duration", "status", "cached"}}, got)
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

func TestWriteErrorsSurface(t *testing.T) {
	boom := bufio.ErrTooLong // any error value
	for _, f := range formats {
		w, err := NewWriter(failWriter{boom}, f, testCols)
		require.NoError(t, err, f)
		require.NoError(t, w.Write(testRows[0]), f) // buffered
		require.ErrorIs(t, w.Close(), boom, f)
	}
}

// jsonRoundTrip is s after encoding/json's Marshal and Unmarshal: invalid
// UTF-8 bytes become U+FFFD.
func jsonRoundTrip(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	require.NoError(t, err)
	var back string
	require.NoError(t, json.Unmarshal(b, &back))
	return back
}
