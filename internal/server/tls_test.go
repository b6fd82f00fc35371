package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/credentials"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "proxylens test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSOnEveryListener: with tls configured, OTLP/gRPC, OTLP/HTTP and the
// query API are served over TLS 1.2 or later only; the SDK exporters and
// the Prometheus client work through it.
func TestTLSOnEveryListener(t *testing.T) {
	cfg := testConfig(t)
	var pool *x509.CertPool
	cfg.TLS.CertFile, cfg.TLS.KeyFile, pool = selfSigned(t)
	require.NoError(t, cfg.Validate())
	s := start(t, cfg, Options{})
	now := time.Now().UTC().Truncate(time.Minute)

	gexp, err := otlptracegrpc.New(t.Context(), otlptracegrpc.WithEndpoint(s.OTLPGRPCAddr().String()),
		otlptracegrpc.WithTLSCredentials(credentials.NewClientTLSFromCert(pool, "")))
	require.NoError(t, err)
	require.NoError(t, gexp.ExportSpans(t.Context(), tracetest.SpanStubs{proxySpan(1, now.Add(-time.Minute)), proxySpan(2, now.Add(-time.Minute))}.Snapshots()))
	require.NoError(t, gexp.Shutdown(context.Background()))
	hexp, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpoint(s.OTLPHTTPAddr().String()),
		otlptracehttp.WithTLSClientConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	require.NoError(t, err)
	require.NoError(t, hexp.ExportSpans(t.Context(), tracetest.SpanStubs{proxySpan(3, now.Add(-time.Minute))}.Snapshots()))
	require.NoError(t, hexp.Shutdown(context.Background()))
	require.NoError(t, s.Pipeline().Flush())

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	c, err := api.NewClient(api.Config{Address: "https://" + s.HTTPAddr().String(), Client: client})
	require.NoError(t, err)
	v, _, _, err := v1.NewAPI(c).Query(t.Context(), `sum(increase(proxy_requests_total[3h]))`, now.Add(2*time.Hour))
	require.NoError(t, err)
	require.InEpsilon(t, 3, float64(v.(model.Vector)[0].Value), 1e-6)

	// TLS 1.1, and plain HTTP, are refused.
	for _, addr := range []net.Addr{s.HTTPAddr(), s.OTLPHTTPAddr(), s.OTLPGRPCAddr()} {
		conn, err := tls.Dial("tcp", addr.String(), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
		}
		require.Error(t, err, addr.String())
	}
	resp, err := http.Get("http://" + s.HTTPAddr().String() + "/-/healthy")
	if err == nil {
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	cfg := testConfig(t)
	cfg.TLS.CertFile = "cert.pem"
	require.EqualError(t, cfg.Validate(), "tls: cert_file and key_file go together")
	cfg.TLS.KeyFile = "missing.pem"
	require.ErrorContains(t, cfg.Validate(), "tls: load cert_file cert.pem and key_file missing.pem: open cert.pem: no such file or directory")
}
