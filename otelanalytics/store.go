package otelanalytics

import (
	"fmt"
	"math"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// Store keeps the pipeline's bytes: the journal of ingest batches, and
// what a cut writes. Package pebblestore implements it. Its methods take
// byte slices, Prometheus labels and the StoreCut below, never a type of
// this package, so that the store knows nothing of records, aggregates or
// prices and neither package imports the other.
type Store interface {
	// CommitBatch durably appends one journal entry: an ingest batch as
	// Batch.AppendEntry encodes it. It returns once the journal is
	// synced to disk. Safe for concurrent use.
	//
	// written, if not nil, is called once the entry is written to the
	// journal and before its sync is done, so that the caller's work
	// overlaps the sync; it is not called when the entry could not be
	// written (an error that wraps syscall.ENOSPC says the store is short
	// of disk space: the batch is refused as retryable, and later ones
	// are taken once space is back). An error after written means the
	// sync failed: the entry may or may not be in the journal, and the
	// journal refuses every later entry and seal, so no cut is written
	// after it.
	CommitBatch(entry []byte, written func()) error
	// Seal closes the journal segment being written and starts the next,
	// returning the sealed segment. The pipeline calls it with no
	// CommitBatch in progress and takes the aggregator's Cut at the same
	// moment, so that the cut accounts for exactly the sealed segments.
	Seal() (uint64, error)
	// WriteCut writes what the journal segments up to sealed hold for the
	// database (c.Records) and then, in one synced batch, the cut itself
	// (c.Write) with the journal checkpoint, and drops those segments, so
	// that a crash at any point loses nothing and counts nothing twice.
	WriteCut(sealed uint64, c StoreCut) error
	// JournalBytes returns the size of the segment being written.
	JournalBytes() int64
	// Replayed reports whether the journal held batches from before the
	// last start that no cut has written yet.
	Replayed() bool
}

// StoreCut is what a cut hands the store to write. It is an alias of an
// interface literal, not a named interface: pebblestore declares the very
// same literal as pebblestore.Cut, and Go treats the two as one type, so
// that *pebblestore.DB implements Store without importing this package.
type StoreCut = interface {
	// Seq is the highest batch sequence number committed so far; the store
	// keeps it with the journal checkpoint and hands it back at Load.
	Seq() uint64
	// Records calls dict for every dictionary entry and record for every
	// record to store that one journal entry holds: its end time (Unix
	// ns), batch sequence number and index in the batch, which make its
	// key, and its encoded value (valid during the call only).
	Records(entry []byte, dict func(id uint32, s string) error, record func(end int64, seq uint64, idx uint32, value []byte) error) error
	// Write hands over the cut: totals for the cumulative totals of every
	// series that changed (key and value as codec.go encodes them),
	// increment for every increment of an increment series and sample for
	// every sample of a sample series (times in Unix milliseconds; ls is
	// valid during the call only).
	Write(totals func(key, value []byte) error, increment, sample func(ls labels.Labels, t int64, v float64) error) error
}

// NewStoreCut returns what the store writes of cut c: the records of the
// journal entries, the aggregates' totals and increments as series, with
// their prices under book (nil: none), and seq, the highest batch
// sequence number committed. The pipeline's Flush hands it to
// Store.WriteCut; tools and tests that write cuts without a pipeline can
// too.
func NewStoreCut(c *Cut, dict *Dict, book *CostBook, seq uint64) StoreCut {
	return &storeCut{c: c, dict: dict, book: book, seq: seq}
}

// storeCut is a Cut as the store writes it: its records come from the
// journal entries, its increments are the aggregates' and their prices.
type storeCut struct {
	c    *Cut
	dict *Dict
	book *CostBook // nil: no cost series
	// noFixed: the subscription and budget gauges are another
	// instance's (PipelineConfig.SkipFixedCosts).
	noFixed bool
	seq     uint64
	// zones are the time zones of the hour-of-week counters (nil: none).
	zones []*time.Location

	usage map[costKey]*costUsage // what the cut used, priced; nil: not worked out yet
	alloc *allocPlan             // the fixed costs it writes; nil: none

	e   journalEntry // the last journal entry decoded, its memory reused
	val []byte       // the last record value encoded
}

func (s *storeCut) Seq() uint64 { return s.seq }

// Records decodes a journal entry and hands over its dictionary entries and
// the records sampling kept, with their final weights: the upstream
// adjusted count divided by the probability they were kept with.
func (s *storeCut) Records(entry []byte, dict func(id uint32, s string) error, record func(end int64, seq uint64, idx uint32, value []byte) error) error {
	e := &s.e
	if err := decodeJournalEntry(entry, e); err != nil {
		return err
	}
	for _, de := range e.dict {
		if err := dict(de.ID, de.Str); err != nil {
			return err
		}
	}
	for i := range e.recs {
		if !e.kept[i] {
			continue
		}
		r := &e.recs[i]
		r.SetStrings(&e.inline[i])
		s.val = appendRecord(s.val[:0], r, &e.refs[i], r.Weight/e.prob, 0, true)
		if err := record(r.EndTime, e.seq, uint32(i), s.val); err != nil {
			return err
		}
	}
	return nil
}

// MinTime is the oldest time (Unix ms) Write hands over: the store writes
// a cut with nothing older than its out-of-order window in one batch, and
// stages an older one (pebblestore.DB.WriteCut).
func (s *storeCut) MinTime() int64 {
	m := int64(math.MaxInt64)
	for f := range s.c.Families {
		fc := &s.c.Families[f]
		for i := range fc.NumIncs() {
			m = min(m, fc.IncTime(i)/1e6)
		}
	}
	if s.alloc != nil {
		for _, inc := range s.alloc.incs {
			m = min(m, inc.t)
		}
	}
	return m
}

// Write hands over the cut's totals, its increments as Prometheus series
// (see Cut.Increments), the usage costs they come to, and the
// subscription prices at every interval end the cut has increments for.
func (s *storeCut) Write(totals func(key, value []byte) error, increment, sample func(ls labels.Labels, t int64, v float64) error) error {
	if err := s.c.Increments(s.dict, increment); err != nil {
		return fmt.Errorf("cut increments: %w", err)
	}
	if err := s.c.peakHours(s.dict, s.zones, increment); err != nil {
		return fmt.Errorf("cut hour-of-week counters: %w", err)
	}
	if err := s.price(increment, sample); err != nil {
		return fmt.Errorf("cut costs: %w", err)
	}
	if s.alloc != nil {
		if err := s.alloc.write(totals, increment); err != nil {
			return fmt.Errorf("cut fixed costs: %w", err)
		}
	}
	var key, val []byte
	for f := range s.c.Families {
		fc := &s.c.Families[f]
		w := Family(f).Width()
		for i := range fc.Keys {
			key = appendTotalsKey(key[:0], Family(f), &fc.Keys[i])
			val = appendFloats(val[:0], fc.Totals[i*w:(i+1)*w])
			if err := totals(key, val); err != nil {
				return fmt.Errorf("add totals: %w", err)
			}
		}
	}
	return nil
}

// Loader is the store's side of Restore: Load calls dict for every stored
// dictionary entry, totals for every stored series total and replay for
// every journal entry no cut has written yet, in order, and returns the
// sequence number kept with the last checkpoint (see StoreCut.Seq).
// *pebblestore.DB implements it.
type Loader interface {
	Load(dict func(id uint32, s string) error, totals func(key, value []byte) error, replay func(entry []byte) error) (uint64, error)
}

// Restore loads the dictionary and the aggregate totals the store holds
// into dict and agg, then replays the journal entries no cut has written
// yet, so that the aggregates hold every batch acknowledged before the
// last stop or crash. It returns the next batch sequence number. Call it
// once, before ingest starts.
func Restore(l Loader, dict *Dict, agg *Aggregator) (uint64, error) {
	var (
		vals   []float64
		e      journalEntry
		maxSeq uint64
	)
	seq, err := l.Load(
		func(id uint32, s string) error { return dict.Load(DictEntry{ID: id, Str: s}) },
		func(key, value []byte) error {
			if isLedgerKey(key) {
				return agg.ledger.load(key, value)
			}
			f, k, err := decodeTotalsKey(key)
			if err != nil {
				return err
			}
			if vals, err = decodeFloats(value, vals[:0]); err != nil {
				return err
			}
			return agg.LoadTotals(f, k, vals)
		},
		func(entry []byte) error {
			if err := decodeJournalEntry(entry, &e); err != nil {
				return err
			}
			for _, de := range e.dict {
				if err := dict.Load(de); err != nil {
					return err
				}
			}
			agg.Apply(e.recs, e.refs)
			maxSeq = max(maxSeq, e.seq)
			return nil
		})
	if err != nil {
		return 0, err
	}
	return max(seq, maxSeq) + 1, nil
}
