package receiver

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// TestSeriesWriterBudget: a series writer bounds the bytes it holds from
// its first request, under a budget of its own until a receiver shares
// its budget with it (ServeMetricsTo): the server's API takes writes
// before its OTLP receiver exists.
func TestSeriesWriterBudget(t *testing.T) {
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	require.EqualValues(t, 256<<20, NewSeriesWriter(db.Series(), SeriesWriterOptions{}).budget.Load().max, "the default")

	w := NewSeriesWriter(db.Series(), SeriesWriterOptions{MaxInflightBytes: 1 << 20, RetryAfter: 2 * time.Second})
	own := w.budget.Load()
	require.NotNil(t, own)
	raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
	}}}).Marshal()
	require.NoError(t, err)
	write := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
		req.Header.Set("Content-Encoding", "snappy")
		rec := httptest.NewRecorder()
		w.ServeRemoteWrite(rec, req)
		return rec
	}

	require.True(t, own.acquire(1<<20, 0), "another request holds the whole budget")
	rec := write()
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
	require.Equal(t, "2", rec.Header().Get("Retry-After"))
	own.release(1 << 20)
	rec = write()
	require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
	require.Zero(t, own.inflight.Load())

	r, err := New(Config{GRPCAddr: "", HTTPAddr: ""}, otelanalytics.NewMapper(otelanalytics.MappingConfig{}, nil), nil, nil, nil)
	require.NoError(t, err)
	r.ServeMetricsTo(w)
	require.Same(t, &r.budget, w.budget.Load(), "the receiver's, shared with its exports")
}
