package export

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzParseRange: an export request's range is client JSON. Anything is
// refused, or gives start before end, in UTC, at most maxRangeDays apart.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{`"24h"`, `"7d"`, `"30d"`, `"1y"`, `null`, `{}`, `7`,
		`{"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00+02:00"}`,
		`{"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}`,
		`{"start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"}`,
		`{"start": "2026-01-01T00:00:00Z"}`} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		start, end, err := ParseRange(json.RawMessage(b), now)
		if err != nil {
			return
		}
		if !end.After(start) || end.Sub(start) > maxRangeDays*24*time.Hour || start.Location() != time.UTC || end.Location() != time.UTC {
			t.Fatalf("ParseRange(%s) = %v, %v", b, start, end)
		}
	})
}
