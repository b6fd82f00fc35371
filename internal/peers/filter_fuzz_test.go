package peers

import (
	"net/url"
	"testing"
)

// FuzzParseFilter: a records stream's filter comes from the query string
// of a peer's request. Any query string is parsed or refused without a
// panic.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"", "start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z",
		"source=a&source=b&domain=x.example&status_code=200&success=true",
		"min_duration=0.5&max_duration=1e9", "success=maybe", "nope=1", "start=x&start=y", "%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := url.ParseQuery(s)
		if err != nil {
			return
		}
		_, _ = ParseFilter(q)
	})
}
