package jsonstr

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "é", "日", "\x00", "\x01", "\x1f", "\x7f", "\"", "\\", "/", "\n", "\r", "\t", "\b", "\f",
		"\u2028", "\u2029", "\xff", "\xe2\x82", "😀", "<", ">", "&", " "}
	for range 2000 {
		var sb strings.Builder
		for range rng.IntN(12) {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		s := sb.String()
		got := AppendString(nil, s)
		require.True(t, json.Valid(got), "%q -> %s", s, got)
		var back string
		require.NoError(t, json.Unmarshal(got, &back))
		require.Equal(t, jsonRoundTrip(t, s), back, "%q", s)
		if utf8.ValidString(s) {
			require.Equal(t, s, back)
		}
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
