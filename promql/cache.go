package promql

import (
	"container/list"
	"sync"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
)

// ChangeTracker says which sample times changed after an epoch:
// internal/changes.Tracker, told by the store and the ingest pipeline.
// The result cache takes an epoch before it evaluates a piece and reuses
// the piece's answer only while nothing its evaluation read has changed
// since.
type ChangeTracker interface {
	Epoch() uint64
	ChangedSince(epoch uint64, minMs, maxMs int64) bool
}

// cacheKey names one piece of one range query's answer: the query as the
// parser prints it, the grid of evaluation times (step and start modulo
// step), what else changes the answer (lookback, raw data) and the UTC
// day or hour (its start and width, ms).
type cacheKey struct {
	query      string
	stepMs     int64
	phaseMs    int64
	lookbackMs int64
	raw        bool
	from       int64
	width      int64
}

// cacheEntry is one piece's answer: the matrix at the grid times from start
// to end (ms, inclusive), evaluated at epoch over data in [dataMin,
// dataMax].
type cacheEntry struct {
	key              cacheKey
	start, end       int64
	dataMin, dataMax int64
	epoch            uint64
	mat              promql.Matrix
	fp               fingerprint // the series the store returned (see cached.go)
	size             int64
}

// resultCache holds pieces' answers up to maxBytes (estimated), dropping the
// least recently used first. All methods are safe for concurrent use.
type resultCache struct {
	maxBytes int64
	changes  ChangeTracker

	mu      sync.Mutex
	lru     list.List // of *cacheEntry, most recently used first
	entries map[cacheKey]*list.Element
	bytes   int64

	hits, misses, invalidations, evictions, mixed prometheus.Counter
	bytesG, entriesG                              prometheus.Gauge
}

func newResultCache(maxBytes int64, changes ChangeTracker, reg prometheus.Registerer) *resultCache {
	c := &resultCache{
		maxBytes: maxBytes,
		changes:  changes,
		entries:  map[cacheKey]*list.Element{},
		hits: prometheus.NewCounter(prometheus.CounterOpts{Name: "proxylens_query_result_cache_hits_total",
			Help: "Pieces (days, hours of today) of range queries answered from the result cache."}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "proxylens_query_result_cache_misses_total",
			Help: "Pieces of range queries that could be cached but were evaluated: not cached, or stale."}),
		invalidations: prometheus.NewCounter(prometheus.CounterOpts{Name: "proxylens_query_result_cache_invalidations_total",
			Help: "Cached pieces found stale: data they read changed after they were evaluated."}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "proxylens_query_result_cache_evictions_total",
			Help: "Cached pieces dropped to stay within query.result_cache.max_bytes."}),
		mixed: prometheus.NewCounter(prometheus.CounterOpts{Name: "proxylens_query_result_cache_uncached_total",
			Help: "Range queries evaluated whole after all, because the store returned other series for some of their pieces than for others."}),
		bytesG: prometheus.NewGauge(prometheus.GaugeOpts{Name: "proxylens_query_result_cache_bytes",
			Help: "Estimated memory held by the result cache."}),
		entriesG: prometheus.NewGauge(prometheus.GaugeOpts{Name: "proxylens_query_result_cache_entries",
			Help: "Pieces of range queries held by the result cache."}),
	}
	if reg != nil {
		reg.MustRegister(c.hits, c.misses, c.invalidations, c.evictions, c.mixed, c.bytesG, c.entriesG)
	}
	return c
}

// get returns the cached entry of key if it holds the grid times from
// start to end and nothing it read has changed since it was evaluated.
// The entry is shared: read it, never change it.
func (c *resultCache) get(key cacheKey, start, end int64) (*cacheEntry, bool) {
	c.mu.Lock()
	el, ok := c.entries[key]
	if !ok {
		c.mu.Unlock()
		c.misses.Inc()
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if e.start > start || e.end < end {
		c.mu.Unlock()
		c.misses.Inc()
		return nil, false
	}
	c.lru.MoveToFront(el)
	c.mu.Unlock()
	// Asked outside c.mu: the tracker has its own lock, taken on every
	// ingest batch.
	if c.changes.ChangedSince(e.epoch, e.dataMin, e.dataMax) {
		c.invalidations.Inc()
		c.misses.Inc()
		c.remove(e)
		return nil, false
	}
	c.hits.Inc()
	return e, true
}

// remove drops e if it is still the entry of its key.
func (c *resultCache) remove(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[e.key]; ok && el.Value.(*cacheEntry) == e {
		c.removeLocked(el)
	}
}

func (c *resultCache) removeLocked(el *list.Element) {
	e := el.Value.(*cacheEntry)
	c.lru.Remove(el)
	delete(c.entries, e.key)
	c.bytes -= e.size
	c.bytesG.Set(float64(c.bytes))
	c.entriesG.Set(float64(len(c.entries)))
}

// put stores e (its matrix owned by the cache from now on), replacing the
// entry of its key, and evicts the least recently used entries past
// maxBytes. An entry larger than a quarter of the cache is not kept.
func (c *resultCache) put(e *cacheEntry) {
	e.size = matrixSize(e.mat) + int64(len(e.key.query)) + entryOverhead + 16*int64(len(e.fp))
	if e.size > c.maxBytes/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[e.key]; ok {
		c.removeLocked(el)
	}
	c.entries[e.key] = c.lru.PushFront(e)
	c.bytes += e.size
	for c.bytes > c.maxBytes {
		c.removeLocked(c.lru.Back())
		c.evictions.Inc()
	}
	c.bytesG.Set(float64(c.bytes))
	c.entriesG.Set(float64(len(c.entries)))
}

// Estimated sizes, in bytes, of what an entry holds besides its points.
const (
	entryOverhead  = int64(unsafe.Sizeof(cacheEntry{})) + 64 // the entry, its list element and map slot
	seriesOverhead = int64(unsafe.Sizeof(promql.Series{}))
	fpointSize     = int64(unsafe.Sizeof(promql.FPoint{}))
	hpointSize     = int64(unsafe.Sizeof(promql.HPoint{}))
)

// matrixSize estimates the memory m holds.
func matrixSize(m promql.Matrix) int64 {
	n := int64(len(m)) * seriesOverhead
	for _, s := range m {
		n += labelsSize(s.Metric)
		n += int64(cap(s.Floats)) * fpointSize
		n += int64(cap(s.Histograms)) * hpointSize
		for _, p := range s.Histograms {
			n += histogramSize(p.H)
		}
	}
	return n
}

func labelsSize(ls labels.Labels) int64 {
	n := int64(0)
	ls.Range(func(l labels.Label) { n += int64(len(l.Name)+len(l.Value)) + 2*16 })
	return n
}

func histogramSize(h *histogram.FloatHistogram) int64 {
	if h == nil {
		return 0
	}
	return int64(unsafe.Sizeof(*h)) + 8*int64(len(h.PositiveSpans)+len(h.NegativeSpans)+
		len(h.PositiveBuckets)+len(h.NegativeBuckets)+len(h.CustomValues))
}
