package receiver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// FuzzReadReserving: a body read under a budget comes out whole or is
// refused as too large or overloaded; the budget never holds more than
// the bytes read could need (one chunk, or twice what arrived, within its
// announced length rounded to a page), and a body that arrives slowly
// holds no more than one that arrives at once. The attack of issue 17:
// a body that announces 64 MiB and sends a byte.
func FuzzReadReserving(f *testing.F) {
	f.Add([]byte("x"), int64(64<<20), int64(64<<20), int64(1<<20), true)
	f.Add(bytes.Repeat([]byte("abc"), 50_000), int64(-1), int64(1<<20), int64(1<<20), false)
	f.Add(bytes.Repeat([]byte{0}, 200_000), int64(200_000), int64(100_000), int64(64<<10), true)
	f.Add([]byte{}, int64(0), int64(1024), int64(1024), false)
	f.Fuzz(func(t *testing.T, data []byte, announced, limit, maxInflight int64, slow bool) {
		if limit <= 0 || limit > 1<<30 || maxInflight <= 0 || announced > limit {
			return
		}
		size := limit + 1
		if announced >= 0 {
			if int64(len(data)) > announced {
				data = data[:announced] // what net/http's body gives at most
			}
			size = announced + 1
		}
		b := &budget{max: maxInflight}
		held := int64(0)
		var r io.Reader = bytes.NewReader(data)
		if slow {
			r = iotest.OneByteReader(r)
		}
		bp := new([]byte)
		got, err := readReserving(r, bp, size, limit, func(n int64) bool {
			if !b.acquireArriving(n, held) {
				return false
			}
			held += n
			return true
		})
		switch {
		case err == nil:
			if !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, sent %d", len(got), len(data))
			}
		case errors.Is(err, errTooLarge):
			if int64(len(data)) <= limit {
				t.Fatalf("%d bytes refused as larger than %d", len(data), limit)
			}
		case errors.Is(err, otelanalytics.ErrOverloaded):
		default:
			t.Fatalf("unexpected error %v", err)
		}
		bound := max(int64(readChunk), 2*int64(len(data)))
		if page := (size + pageSize - 1) / pageSize * pageSize; bound > page {
			bound = page
		}
		if held > bound {
			t.Fatalf("held %d bytes for a body of %d (announced %d), more than %d", held, len(data), announced, bound)
		}
		if held != b.inflight.Load() || held != b.arriving.Load() {
			t.Fatalf("held %d, the budget says %d in flight, %d arriving", held, b.inflight.Load(), b.arriving.Load())
		}
	})
}

// FuzzRemoteWriteBody: any remote write body, snappy bombs included, is
// written (204) or refused (400, or 503 when the budget cannot take what
// it claims decoded), and the request holds nothing of the budget once
// answered. A small budget with another request's bytes held makes the
// bombs' refusal reachable.
func FuzzRemoteWriteBody(f *testing.F) {
	raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: 1}},
	}}}).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snappy.Encode(nil, raw), false)
	f.Add(append(binary.AppendUvarint(nil, 4<<20), 0x0c, 'b', 'o', 'm', 'b'), true)
	f.Add(snappy.Encode(nil, make([]byte, 100_000)), true)
	db, err := pebblestore.Open(f.TempDir(), pebblestore.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	w := NewSeriesWriter(db.Series(), SeriesWriterOptions{MaxRequestBytes: 8 << 20})
	b := &budget{max: 1 << 20}
	w.budget.Store(b)
	f.Fuzz(func(t *testing.T, body []byte, busy bool) {
		other := int64(0)
		if busy {
			other = 300 << 10
			b.acquire(other, 0)
		}
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
		req.Header.Set("Content-Encoding", "snappy")
		rec := httptest.NewRecorder()
		w.ServeRemoteWrite(rec, req)
		b.release(other)
		switch rec.Code {
		case http.StatusNoContent, http.StatusBadRequest:
		case http.StatusServiceUnavailable:
			if !busy {
				t.Fatalf("503 with nothing else in flight: %s", rec.Body)
			}
		default:
			t.Fatalf("answered %d: %s", rec.Code, rec.Body)
		}
		if n := b.inflight.Load(); n != 0 {
			t.Fatalf("%d bytes still held after the answer", n)
		}
	})
}
