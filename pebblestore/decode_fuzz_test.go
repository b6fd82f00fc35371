package pebblestore

import (
	"bytes"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// FuzzDecodeStoredValues feeds the decoders of the store's values (series
// labels, window chunks, packed ones included, and summaries, counter
// summaries, window bases, hourly summaries, the series feed's header and
// positions) bytes that a damaged disk or a doctored backup could hold.
// Each must refuse or decode without panicking; the chunks a window
// decodes to are iterated, as a query would, and what decodes re-encodes
// to a value that decodes the same.
func FuzzDecodeStoredValues(f *testing.F) {
	f.Add(appendLabels(nil, labels.FromStrings("__name__", "proxy_requests_total", "source", "dc-eu")))
	f.Add(appendBase(nil, windowBase{base: 1, total: 2}))
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		f.Fatal(err)
	}
	for i := range 5 {
		app.Append(0, int64(i)*60_000, float64(i*i))
	}
	f.Add(appendWindow(nil, []timedChunk{{c: c, minT: 0, maxT: 240_000}}))
	var p packer // the same samples, packed (packed.go)
	f.Add(appendWindow(nil, p.pack([]timedChunk{{c: c, minT: 0, maxT: 240_000}})))
	f.Add(appendSummaries(nil, []summary{{res: 300_000, c: c}}))
	f.Add(appendCounterSummary(nil, 0, counterSummary{n: 5, firstT: 0, lastT: 240_000, firstF: 0, lastF: 16, resets: []float64{9}}))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		if lset, err := decodeLabels(b); err == nil {
			again, err := decodeLabels(appendLabels(nil, lset))
			if err != nil || !labels.Equal(lset, again) {
				t.Fatalf("labels %v re-encode to %v, %v", lset, again, err)
			}
		}
		if chunks, err := decodeWindow(b, nil); err == nil {
			for _, tc := range chunks {
				iterate(tc.c)
			}
			again, err := decodeWindow(appendWindow(nil, chunks), nil)
			if err != nil || len(again) != len(chunks) {
				t.Fatalf("%d chunks re-encode to %d, %v", len(chunks), len(again), err)
			}
			for i := range chunks {
				if !bytes.Equal(chunks[i].c.Bytes(), again[i].c.Bytes()) || chunks[i].minT != again[i].minT || chunks[i].maxT != again[i].maxT {
					t.Fatalf("chunk %d re-encodes differently", i)
				}
			}
		}
		if sums, err := decodeSummaries(b, nil); err == nil {
			for _, s := range sums {
				iterate(s.c)
			}
		}
		if cs, err := decodeCounterSummary(b, 1_700_000_000_000, nil); err == nil {
			// NaN values compare unequal: only the shape is checked.
			again, err := decodeCounterSummary(appendCounterSummary(nil, 1_700_000_000_000, cs), 1_700_000_000_000, nil)
			if err != nil || again.n != cs.n || len(again.resets) != len(cs.resets) {
				t.Fatalf("counter summary %+v re-encodes to %+v, %v", cs, again, err)
			}
		}
		if base, err := decodeBase(b); err == nil && !bytes.Equal(appendBase(nil, base), b) {
			t.Fatalf("base %+v re-encodes differently", base)
		}
		_, _ = decodeHourDay(b, 20_000)
		_, _ = decodeFeedHeader(b)
		_, _ = decodeFeedPosition(b)
	})
}

// iterate reads a chunk to its end, a bounded number of samples, as a
// query does.
func iterate(c chunkenc.Chunk) {
	it := c.Iterator(nil)
	for i := 0; i < 1<<16; i++ {
		switch it.Next() {
		case chunkenc.ValNone:
			_ = it.Err()
			return
		case chunkenc.ValFloat:
			it.At()
		case chunkenc.ValHistogram:
			it.AtHistogram(nil)
		case chunkenc.ValFloatHistogram:
			it.AtFloatHistogram(nil)
		}
		it.AtT()
	}
}
