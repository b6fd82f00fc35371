package receiver

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestAuthorize: with Config.Authorize, a request whose authorization the
// function refuses gets 401 over HTTP and Unauthenticated over gRPC, and
// nothing is counted; an accepted one goes through.
func TestAuthorize(t *testing.T) {
	s := startStack(t, Config{Authorize: func(auth string) bool { return auth == "Bearer good" }})
	body := marshal(t, proxySpans(3, 1))
	r := s.post(t, contentProtobuf, "", body)
	require.Equal(t, http.StatusUnauthorized, r.code)
	require.Equal(t, `Bearer realm="proxylens OTLP"`, r.header.Get("WWW-Authenticate"))
	_, err := s.export(t.Context(), proxySpans(3, 1))
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer bad")
	_, err = s.export(ctx, proxySpans(3, 1))
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.Zero(t, s.requests())

	ctx = metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer good")
	_, err = s.export(ctx, proxySpans(3, 1))
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.url, bytesReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentProtobuf)
	req.Header.Set("Authorization", "Bearer good")
	resp, err := s.client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 6.0, s.requests())
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
