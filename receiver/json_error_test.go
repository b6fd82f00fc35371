package receiver

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestJSONErrorDoesNotQuoteBody: the JSON parser quotes the body around a
// syntax error; the 400 answer must not pass that on.
func TestJSONErrorDoesNotQuoteBody(t *testing.T) {
	s := startStack(t, Config{})
	body := `{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"proxy.url","value":{"stringValue":"http://u:s3cret@h:1"}}]` +
		`,"name": oops}]}]}]}`
	resp, err := http.Post("http://"+s.rcv.HTTPAddr().String()+"/v1/traces", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	msg := string(b)
	require.Contains(t, msg, "not a valid OTLP/JSON ExportTraceServiceRequest")
	require.NotContains(t, msg, "s3cret")
}
