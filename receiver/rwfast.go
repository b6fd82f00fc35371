package receiver

// The fast path of remote write 1.0: a reader of prometheus.WriteRequest
// that builds no prompb structs and finds each series' labels by the raw
// bytes it came with (seriesCache). It takes the requests every sender
// sends (float samples of labelled series) and leaves everything else
// (histograms, exemplars, metadata, unknown fields, anything malformed or
// refused) to prompb's decoder and the path that has always handled them
// (appendRemoteWrite), which then gives the verdict: the fast path accepts
// nothing that path would not accept in the same way, and a differential
// fuzz test (FuzzRemoteWriteFast) holds it to that.

import (
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// Tags of the fields the fast path reads: field number << 3 | wire type.
const (
	tagTimeSeries = 1<<3 | wireLen // WriteRequest.timeseries
	tagLabels     = 1<<3 | wireLen // TimeSeries.labels
	tagSamples    = 2<<3 | wireLen // TimeSeries.samples
	tagLabelName  = 1<<3 | wireLen // Label.name
	tagLabelValue = 2<<3 | wireLen // Label.value
	tagSampleVal  = 1<<3 | wireI64 // Sample.value
	tagSampleTime = 2<<3 | wireVarint
)

// rwLabel is one label as the request holds it.
type rwLabel struct{ name, value []byte }

// fastState is one request's scratch space, pooled.
type fastState struct {
	labels []rwLabel
	b      labels.ScratchBuilder
}

var fastStates = sync.Pool{New: func() any { return &fastState{} }}

// maxPooledLabels bounds the label scratch a pooled state keeps.
const maxPooledLabels = 1024

// appendFast appends the samples of the remote write 1.0 request raw to
// app and returns their number. ok is false if the request is not one it
// takes, or anything in it is refused: the caller then rolls app back and
// hands the request to prompb's decoder and appendRemoteWrite.
//
//	message WriteRequest {
//	  repeated prometheus.TimeSeries timeseries = 1;
//	  reserved 2;
//	  repeated prometheus.MetricMetadata metadata = 3;  // not here: slow path
//	}
func (w *SeriesWriter) appendFast(app storage.AppenderV2, raw []byte, limit int64) (n int, ok bool) {
	st := fastStates.Get().(*fastState)
	defer func() {
		if cap(st.labels) <= maxPooledLabels {
			st.labels = st.labels[:0]
			fastStates.Put(st)
		}
	}()
	for pos := 0; pos < len(raw); {
		if raw[pos] != tagTimeSeries {
			return 0, false
		}
		start, end, err := consumeLen(raw, pos+1)
		if err != nil {
			return 0, false
		}
		m, ok := w.appendFastSeries(app, st, raw[start:end], limit)
		if !ok {
			return 0, false
		}
		n += m
		pos = end
	}
	return n, true
}

// appendFastSeries appends one TimeSeries.
//
//	message TimeSeries {
//	  repeated Label labels = 1;
//	  repeated Sample samples = 2;
//	  repeated Exemplar exemplars = 3;   // not here: slow path
//	  repeated Histogram histograms = 4; // not here: slow path
//	}
func (w *SeriesWriter) appendFastSeries(app storage.AppenderV2, st *fastState, ts []byte, limit int64) (int, bool) {
	st.labels = st.labels[:0]
	keyStart, keyEnd, contiguous := -1, -1, true
	firstSample, nSamples := -1, 0
	for pos := 0; pos < len(ts); {
		tag := ts[pos]
		start, end, err := consumeLen(ts, pos+1)
		if err != nil {
			return 0, false
		}
		switch tag {
		case tagLabels:
			l, ok := readLabel(ts[start:end])
			if !ok {
				return 0, false
			}
			st.labels = append(st.labels, l)
			if keyStart < 0 {
				keyStart = pos
			} else if keyEnd != pos {
				contiguous = false
			}
			keyEnd = end
		case tagSamples:
			if _, _, ok := readSample(ts[start:end]); !ok {
				return 0, false
			}
			if firstSample < 0 {
				firstSample = pos
			}
			nSamples++
		default:
			return 0, false
		}
		pos = end
	}
	if nSamples == 0 {
		// Labels alone: the slow path validates them (a series without
		// samples is still refused if its labels are invalid).
		return 0, false
	}
	var e *cachedSeries
	var key []byte
	if contiguous && keyStart >= 0 {
		key = ts[keyStart:keyEnd]
		e = w.cache.get(key)
	}
	if e == nil {
		st.b.Reset()
		for _, l := range st.labels {
			if len(l.value) > 0 {
				st.b.Add(string(l.name), string(l.value))
			}
		}
		st.b.Sort()
		ls := st.b.Labels()
		if validSeries(ls) != nil || w.refuses(ls.Get(model.MetricNameLabel)) {
			return 0, false // the slow path refuses them; reserved names never enter the cache
		}
		e = &cachedSeries{ls: ls}
		if key != nil {
			w.cache.put(key, e)
		}
	}
	ref := storage.SeriesRef(e.ref.Load())
	startRef := ref
	for pos := firstSample; pos < len(ts); {
		tag := ts[pos]
		start, end, _ := consumeLen(ts, pos+1) // read once above
		pos = end
		if tag != tagSamples {
			continue
		}
		t, v, _ := readSample(ts[start:end])
		if t > limit {
			return 0, false
		}
		var err error
		if ref, err = app.Append(ref, e.ls, 0, t, v, nil, nil, storage.AOptions{}); err != nil {
			return 0, false
		}
	}
	if ref != startRef {
		e.ref.Store(uint64(ref))
	}
	return nSamples, true
}

// readLabel reads a Label.
//
//	message Label {
//	  string name  = 1;
//	  string value = 2;
//	}
func readLabel(b []byte) (rwLabel, bool) {
	var l rwLabel
	for pos := 0; pos < len(b); {
		tag := b[pos]
		if tag != tagLabelName && tag != tagLabelValue {
			return l, false
		}
		start, end, err := consumeLen(b, pos+1)
		if err != nil {
			return l, false
		}
		if tag == tagLabelName {
			l.name = b[start:end]
		} else {
			l.value = b[start:end]
		}
		pos = end
	}
	return l, true
}

// readSample reads a Sample; a field that is absent is zero, one that
// repeats takes its last value, as in prompb.
//
//	message Sample {
//	  double value    = 1;
//	  int64 timestamp = 2;
//	}
func readSample(b []byte) (t int64, v float64, ok bool) {
	for pos := 0; pos < len(b); {
		switch b[pos] {
		case tagSampleVal:
			if len(b)-pos-1 < 8 {
				return 0, 0, false
			}
			v = math.Float64frombits(binary.LittleEndian.Uint64(b[pos+1:]))
			pos += 9
		case tagSampleTime:
			u, next, err := consumeVarint(b, pos+1)
			if err != nil {
				return 0, 0, false
			}
			t, pos = int64(u), next
		default:
			return 0, 0, false
		}
	}
	return t, v, true
}

// seriesCache memoises the labels of written series by the bytes of their
// label fields on the wire, with the ref the store gave them: a series
// seen before costs a map lookup, not building, sorting and validating its
// labels and hashing them in the store. Only valid label sets enter it.
// It is bounded by two generations of size/2 entries: when the newer is
// full, the older is dropped, and an entry found in the older moves to the
// newer (the series still written stay).
//
// All methods are safe for concurrent use.
type seriesCache struct {
	mu        sync.RWMutex
	cur, prev map[string]*cachedSeries
	half      int
}

// cachedSeries is a series' labels, valid, and the ref of its last append
// (a hint: the store checks it against the labels).
type cachedSeries struct {
	ls  labels.Labels
	ref atomic.Uint64
}

func newSeriesCache(size int) *seriesCache {
	half := max(size/2, 1)
	return &seriesCache{cur: make(map[string]*cachedSeries), half: half}
}

func (c *seriesCache) get(key []byte) *cachedSeries {
	c.mu.RLock()
	e, fresh := c.cur[string(key)]
	if !fresh {
		e = c.prev[string(key)]
	}
	c.mu.RUnlock()
	if e != nil && !fresh {
		c.put(key, e)
	}
	return e
}

func (c *seriesCache) put(key []byte, e *cachedSeries) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cur) >= c.half {
		c.prev, c.cur = c.cur, make(map[string]*cachedSeries, c.half)
	}
	c.cur[string(key)] = e
}

// len returns the number of entries, both generations.
func (c *seriesCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.cur) + len(c.prev)
}
