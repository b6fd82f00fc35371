package otelanalytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/proxylens/proxylens/internal/changes"
	"github.com/proxylens/proxylens/selfmetrics"
)

// Batch is one ingest batch as the journal keeps it (see AppendEntry).
type Batch struct {
	Seq     uint64   // sequence number, unique and increasing
	Records []Record // mapped records; Weight is the upstream adjusted count
	Refs    []Refs   // dictionary ids of each record's strings
	// Kept tells, per record, whether sampling kept it.
	Kept []bool
	// Probability is the keep probability of this batch: a kept record is
	// stored with weight Weight/Probability.
	Probability float64
	// Dict lists dictionary entries to write with the batch.
	Dict []DictEntry
}

// PipelineConfig configures the ingest pipeline.
type PipelineConfig struct {
	// FlushInterval is how often the aggregates are cut and written; it is
	// also the event-time resolution of their history. Default 15s.
	FlushInterval time.Duration
	// MaxInflightRecords bounds the records being committed at once; past
	// it, Consume refuses with ErrOverloaded. A single larger batch is still
	// taken when nothing else is in flight. Default 1048576.
	MaxInflightRecords int
	// MaxJournalBytes is the journal segment size past which a cut comes
	// early. Default 256 MiB.
	MaxJournalBytes int64
	// Costs prices every cut: the proxy_cost_total and
	// proxy_cost_allocated_total increments and the
	// proxy_subscription_cost gauges are written with it (nil: no cost
	// series).
	Costs *Costs
	// CostAllocation is what fixed costs are allocated to applications
	// by: AllocateByRequests (the default) or AllocateByBytes.
	CostAllocation string
	// SkipFixedCosts leaves the fixed costs to another instance: no
	// subscription accrues here (proxy_cost_allocated_total's
	// subscription component) and no subscription or budget gauge is
	// written; usage costs still are. In a fleet writing into one TSDB,
	// every instance but one sets it, or each would count the fleet's
	// subscriptions once more.
	SkipFixedCosts bool
	// Changes, if set, is told the times of the increments each batch
	// changes, once they are in the aggregates: a cache of query results
	// learns from it that a late span changed a past day
	// (internal/changes.Tracker). The series a cut writes are told by the
	// store.
	Changes interface{ Note(minMs, maxMs int64) }
	// PeakZones are the time zones the hour-of-week counters are written
	// in (see PeakZones; nil: none are written).
	PeakZones []*time.Location
	// AfterCut, if set, is called with every cut once it is written, on
	// the flush goroutine, with the time the cut was taken: the
	// degradation detector follows the aggregates through it.
	AfterCut func(c *Cut, now time.Time)
}

// Pipeline takes batches of mapped records, commits them durably, and keeps
// the aggregates. Consume is safe for concurrent use; concurrent batches
// share fsyncs (Pebble's group commit).
type Pipeline struct {
	cfg     PipelineConfig
	log     *slog.Logger
	dict    *Dict
	sampler *Sampler
	agg     *Aggregator
	store   Store
	now     func() time.Time
	seq     atomic.Uint64
	maxSeq  atomic.Uint64 // highest sequence number committed

	mu       sync.Mutex
	inflight int
	stopped  bool
	active   sync.WaitGroup

	// commitMu is held shared from a batch's commit to its Apply, and
	// exclusively to seal the journal and cut the aggregates together.
	commitMu  sync.RWMutex
	committed atomic.Int64 // batches committed since the last seal
	unwritten bool         // a sealed cut failed to write; under flushMu
	cutSoon   chan struct{}

	flushMu  sync.Mutex // one cut at a time
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{} // closed when the flush loop exits; nil before Start

	scratch sync.Pool
	m       pipelineMetrics
}

type pipelineMetrics struct {
	received       *metrics.Counter
	refused        *metrics.Counter
	stored         *metrics.Counter
	sampledOut     *metrics.Counter
	commitFailures *metrics.Counter
	commitSeconds  *metrics.PrometheusHistogram
	flushes        *metrics.Counter
	flushFailures  *metrics.Counter
	flushSeconds   *metrics.PrometheusHistogram
}

// NewPipeline wires a pipeline. nextSeq is the first journal sequence number
// to use (from the store). reg and log may be nil.
func NewPipeline(cfg PipelineConfig, dict *Dict, sampler *Sampler, agg *Aggregator, store Store,
	nextSeq uint64, reg *selfmetrics.Registry, log *slog.Logger, now func() time.Time) *Pipeline {
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 15 * time.Second
	}
	if cfg.MaxInflightRecords <= 0 {
		cfg.MaxInflightRecords = 1 << 20
	}
	if cfg.MaxJournalBytes <= 0 {
		cfg.MaxJournalBytes = 256 << 20
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	reg = selfmetrics.OrNew(reg)
	p := &Pipeline{
		cfg: cfg, log: log, dict: dict, sampler: sampler, agg: agg, store: store, now: now,
		stop:    make(chan struct{}),
		cutSoon: make(chan struct{}, 1),
		scratch: sync.Pool{New: func() any { return new(scratch) }},
	}
	p.seq.Store(nextSeq - 1)
	p.maxSeq.Store(nextSeq - 1)
	latency := selfmetrics.LatencyBuckets
	p.m = pipelineMetrics{
		received:       reg.Counter("proxylens_records_received_total", "Mapped records that entered the ingest pipeline."),
		refused:        reg.Counter("proxylens_records_refused_total", "Mapped records refused by the pipeline (saturated or stopping); the client retries them."),
		stored:         reg.Counter("proxylens_records_stored_total", "Records kept by sampling and committed to disk."),
		sampledOut:     reg.Counter("proxylens_records_sampled_out_total", "Records counted in the aggregates but not kept by sampling."),
		commitFailures: reg.Counter("proxylens_batch_commit_failures_total", "Ingest batches whose durable commit failed."),
		commitSeconds:  reg.Histogram("proxylens_batch_commit_duration_seconds", "Time to commit one ingest batch durably (fsync included).", latency),
		flushes:        reg.Counter("proxylens_flushes_total", "Aggregate cuts written to disk."),
		flushFailures:  reg.Counter("proxylens_flush_failures_total", "Aggregate cuts that could not be written; their data is carried to the next cut."),
		flushSeconds:   reg.Histogram("proxylens_flush_duration_seconds", "Time to write one aggregate cut.", latency),
	}
	reg.Gauge("proxylens_inflight_records", "Records being committed right now.", func() float64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return float64(p.inflight)
	})
	reg.Gauge("proxylens_sampling_probability", "Keep probability given to the last batch.", sampler.LastProbability)
	reg.Gauge("proxylens_ingest_rate_per_minute", "Measured span rate that drives the sampler, per minute.", sampler.Rate)
	reg.Gauge("proxylens_pending_increments", "Per-interval aggregate increments waiting for the next cut.", func() float64 {
		return float64(agg.Pending())
	})
	return p
}

type scratch struct {
	refs    []Refs
	kept    []bool
	dict    []DictEntry
	changed changes.Set // the hours the batch changed, for PipelineConfig.Changes
	entry   []byte      // the journal entry
}

// Start starts the flush loop.
func (p *Pipeline) Start(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return ErrStopped
	}
	if p.done != nil {
		return nil
	}
	p.done = make(chan struct{})
	go p.loop(p.done)
	return nil
}

func (p *Pipeline) loop(done chan struct{}) {
	defer close(done)
	t := time.NewTicker(p.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		case <-p.agg.CutRequested():
		case <-p.cutSoon:
		}
		_ = p.Flush() // logged and counted in Flush; the data waits for the next cut
	}
}

// Consume commits a batch of mapped records and adds them to the aggregates.
// When it returns nil, the batch is durable and counted. recs may alias a
// request buffer; Consume does not keep them.
func (p *Pipeline) Consume(ctx context.Context, recs []Record) error {
	n := len(recs)
	if n == 0 {
		return nil
	}
	if err := p.admit(n); err != nil {
		p.m.refused.Add(n)
		return err
	}
	defer p.release(n)
	if err := ctx.Err(); err != nil {
		p.m.refused.Add(n)
		return err
	}
	p.m.received.Add(n)

	sc := p.scratch.Get().(*scratch)
	defer p.scratch.Put(sc)
	if cap(sc.refs) < n {
		sc.refs = make([]Refs, n)
	}
	refs := sc.refs[:n]
	sc.dict = p.dict.Intern(recs, refs, sc.dict[:0])

	prob := p.sampler.Observe(p.now().UnixNano(), n)
	if cap(sc.kept) < n {
		sc.kept = make([]bool, n)
	}
	kept, nkept := sc.kept[:n], 0
	for i := range kept {
		kept[i] = p.sampler.Keep(prob)
		if kept[i] {
			nkept++
		}
	}
	b := Batch{Seq: p.seq.Add(1), Records: recs, Refs: refs, Kept: kept, Probability: prob, Dict: sc.dict}
	start := time.Now()
	p.commitMu.RLock()
	// The batch is added to the aggregates while the journal syncs it. If
	// the sync fails, the batch is refused but stays counted in memory
	// until a restart, which counts what the journal holds; no cut can be
	// written meanwhile (see Store.CommitBatch).
	sc.entry = b.AppendEntry(sc.entry[:0])
	err := p.store.CommitBatch(sc.entry, func() {
		p.agg.Apply(recs, refs)
		p.committed.Add(1)
		if p.cfg.Changes != nil {
			p.noteChanges(&sc.changed, recs)
		}
	})
	p.commitMu.RUnlock()
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			// The store is read-only for lack of disk space (it logs
			// that once): refused like an overload, the client retries.
			p.m.refused.Add(n)
			return fmt.Errorf("commit ingest batch: %w", err)
		}
		p.m.commitFailures.Inc()
		p.log.Error("ingest batch not committed, refusing it", "records", n, "err", err)
		return fmt.Errorf("commit ingest batch: %w", err)
	}
	p.m.commitSeconds.UpdateDuration(start)
	raise(&p.maxSeq, b.Seq)
	p.dict.MarkDurable(sc.dict)
	p.m.stored.Add(nkept)
	p.m.sampledOut.Add(n - nkept)
	if p.store.JournalBytes() > p.cfg.MaxJournalBytes {
		select {
		case p.cutSoon <- struct{}{}:
		default:
		}
	}
	return nil
}

// noteChanges tells the change tracker the hours of the increments recs
// changed: each counts at the end of its flush interval.
func (p *Pipeline) noteChanges(set *changes.Set, recs []Record) {
	set.Reset()
	const ms = int64(time.Millisecond)
	for i := range recs {
		set.Add(p.agg.IntervalEnd(recs[i].EndTime) / ms)
	}
	set.NoteTo(p.cfg.Changes)
}

// Saturated reports whether Consume refuses every batch now because the
// increments of history held are at their bound, until a cut takes them.
// A receiver asks before it decodes a request: decoding and mapping what
// would be refused took a seventh of the CPU a backfill's cut needed.
func (p *Pipeline) Saturated() bool { return p.agg.Saturated() }

func (p *Pipeline) admit(n int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return ErrStopped
	}
	if p.inflight > 0 && p.inflight+n > p.cfg.MaxInflightRecords {
		return ErrOverloaded
	}
	if p.agg.Saturated() {
		// History arrives faster than cuts write it: the increments held
		// are bounded, the client retries.
		return ErrOverloaded
	}
	p.inflight += n
	p.active.Add(1)
	return nil
}

func (p *Pipeline) release(n int) {
	p.mu.Lock()
	p.inflight -= n
	p.mu.Unlock()
	p.active.Done()
}

// Flush seals the journal, cuts the aggregates and writes the cut. On
// failure the cut is put back, and the sealed journal segments stay, for
// the next attempt.
func (p *Pipeline) Flush() error {
	p.flushMu.Lock()
	defer p.flushMu.Unlock()
	var book *CostBook
	if p.cfg.Costs != nil {
		book = p.cfg.Costs.Book()
	}
	fixed := book // the fixed costs this instance accrues
	if p.cfg.SkipFixedCosts {
		fixed = nil
	}
	if ws, ok := p.store.(interface{ Writable() error }); ok {
		// The store is read-only (a full disk): the cut waits, the
		// journal keeps what it would write. Not sealing spares the disk
		// a new segment each interval.
		if err := ws.Writable(); err != nil {
			return fmt.Errorf("cut postponed: %w", err)
		}
	}
	now := p.now()
	p.commitMu.Lock()
	if p.committed.Load() == 0 && !p.unwritten && !p.store.Replayed() && !p.agg.ledger.due(fixed, now) {
		p.commitMu.Unlock()
		return nil
	}
	sealed, err := p.store.Seal()
	if err != nil {
		p.commitMu.Unlock()
		p.m.flushFailures.Inc()
		p.log.Error("journal not sealed; the cut waits", "err", err)
		return fmt.Errorf("seal journal: %w", err)
	}
	c := p.agg.cut(sealed)
	p.committed.Store(0)
	p.commitMu.Unlock()

	start := time.Now()
	// Ingest goes on while the cut is written, at a lower priority.
	sc := &storeCut{c: c, dict: p.dict, book: book, noFixed: p.cfg.SkipFixedCosts, seq: p.maxSeq.Load(), zones: p.cfg.PeakZones}
	if book != nil {
		sc.usage = c.usage()
	}
	if fixed != nil {
		sc.alloc = p.agg.ledger.plan(sc.usage, p.dict, fixed, p.cfg.CostAllocation, now)
	}
	if err := background(func() error { return p.store.WriteCut(sealed, sc) }); err != nil {
		p.agg.Restore(c)
		p.unwritten = true
		p.m.flushFailures.Inc()
		p.log.Warn("aggregate cut not written, keeping it for the next flush", "err", err)
		return fmt.Errorf("write aggregate cut: %w", err)
	}
	p.unwritten = false
	p.agg.cutWritten()
	if sc.alloc != nil {
		p.agg.ledger.commit(sc.alloc)
	}
	if p.cfg.AfterCut != nil {
		p.cfg.AfterCut(c, now)
	}
	p.m.flushSeconds.UpdateDuration(start)
	p.m.flushes.Inc()
	return nil
}

// Shutdown stops accepting batches, waits for those in flight, stops the
// flush loop and writes a final cut. It may be called more than once, and
// without Start.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.stopped = true
	done := p.done
	p.mu.Unlock()

	drained := make(chan struct{})
	go func() {
		p.active.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		return fmt.Errorf("wait for in-flight batches: %w", ctx.Err())
	}
	p.stopOnce.Do(func() { close(p.stop) })
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("stop flush loop: %w", ctx.Err())
		}
	}
	if err := p.Flush(); err != nil {
		return errors.Join(err, errors.New("the journal still holds the data; it is replayed at the next start"))
	}
	return nil
}

// raise sets v to at least x.
func raise(v *atomic.Uint64, x uint64) {
	for old := v.Load(); x > old; old = v.Load() {
		if v.CompareAndSwap(old, x) {
			return
		}
	}
}
