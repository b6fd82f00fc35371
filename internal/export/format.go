package export

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrUnknownFormat is returned by ParseFormat and NewWriter for a format
	// other than csv, json and xlsx.
	ErrUnknownFormat = errors.New("unknown export format")
	// ErrBadColumns is returned by NewWriter for an unusable column list.
	ErrBadColumns = errors.New("bad export columns")
	// ErrBadRow is returned by Writer.Write for a row of the wrong length or
	// with a value of the wrong type for its column.
	ErrBadRow = errors.New("bad export row")
	// ErrClosed is returned by Writer.Write after Close.
	ErrClosed = errors.New("export writer closed")
)

// Format is an export file format.
type Format string

// The export formats.
const (
	CSV  Format = "csv"
	JSON Format = "json" // NDJSON: one JSON object per line.
	XLSX Format = "xlsx"
)

// formats lists the valid formats in the order error messages name them.
var formats = []Format{CSV, JSON, XLSX}

// ParseFormat returns the Format named s (case-insensitive, surrounding
// spaces ignored). "ndjson" is accepted as JSON.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case CSV, JSON, XLSX:
		return f, nil
	case "ndjson":
		return JSON, nil
	}
	return "", fmt.Errorf("%w %q: valid formats are csv, json, xlsx", ErrUnknownFormat, s)
}

// Extension returns the file name extension of f, with its dot, or "" for an
// unknown format.
func (f Format) Extension() string {
	switch f {
	case CSV:
		return ".csv"
	case JSON:
		return ".ndjson"
	case XLSX:
		return ".xlsx"
	}
	return ""
}

// ContentType returns the HTTP Content-Type of f, or
// "application/octet-stream" for an unknown format.
func (f Format) ContentType() string {
	switch f {
	case CSV:
		return "text/csv; charset=utf-8"
	case JSON:
		return "application/x-ndjson"
	case XLSX:
		return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	}
	return "application/octet-stream"
}

// Kind is the type of a column's values.
type Kind int

// The column kinds and the Go type of their row values. A nil value is an
// empty cell (CSV, XLSX) or null (NDJSON) in a column of any kind.
const (
	String Kind = iota // string
	Time               // time.Time, written in UTC
	Float              // float64
	Int                // int64
	Bool               // bool
)

// String returns the name of k.
func (k Kind) String() string {
	switch k {
	case String:
		return "string"
	case Time:
		return "time"
	case Float:
		return "float"
	case Int:
		return "int"
	case Bool:
		return "bool"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Column names and types one column of an export.
type Column struct {
	Name string
	Kind Kind
}

// validateColumns reports every problem with cols at once.
func validateColumns(f Format, cols []Column) error {
	var errs []error
	if len(cols) == 0 {
		errs = append(errs, errors.New("no columns"))
	}
	if f == XLSX && len(cols) > maxSheetCols {
		errs = append(errs, fmt.Errorf("%d columns, xlsx allows at most %d", len(cols), maxSheetCols))
	}
	seen := make(map[string]int, len(cols))
	for i, c := range cols {
		if c.Name == "" {
			errs = append(errs, fmt.Errorf("column %d has no name", i))
		}
		if j, ok := seen[c.Name]; ok {
			errs = append(errs, fmt.Errorf("columns %d and %d are both named %q", j, i, c.Name))
		} else {
			seen[c.Name] = i
		}
		if c.Kind < String || c.Kind > Bool {
			errs = append(errs, fmt.Errorf("column %q has unknown kind %d", c.Name, int(c.Kind)))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrBadColumns, errors.Join(errs...))
}
