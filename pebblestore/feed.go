package pebblestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/proxylens/proxylens/internal/varint"
)

// This file is the series feed: with SeriesOptions.Feed set, every series
// commit also writes, in the same synced batch, one feed entry that lists
// the samples it committed (increments as increments), under a sequence
// number. Consumers (remote write out) follow the feed as Prometheus'
// WAL watcher follows its WAL, each with a persisted position and state of
// its own (SaveFeedConsumer), so that what they send survives restarts
// and kill -9 without loss: an entry and the samples it names are
// committed together, and a consumer's position moves only after what it
// read was handled. The store decides nothing about what consumers send.

// FeedPosition is a place in the feed: the entry to read next (Seq), how
// many of its samples were read (Sample), and how many samples the feed
// holds before that place (Cum), which makes pending counts exact.
type FeedPosition struct {
	Seq, Sample, Cum uint64
}

// FeedSample is one sample of a feed entry. Of an increment series, F is
// the increment at T.
type FeedSample struct {
	T  int64
	F  float64
	H  *histogram.Histogram
	FH *histogram.FloatHistogram
}

// FeedSeries is the samples of one series read from the feed, in time
// order within one entry.
type FeedSeries struct {
	Ref       uint64
	Labels    labels.Labels
	Kind      SeriesKind
	Committed int64 // when the entry was committed, Unix ms
	Samples   []FeedSample
}

// FeedRead is what one ReadFeed returns.
type FeedRead struct {
	Series  []FeedSeries
	Samples int          // samples in Series
	Next    FeedPosition // the position after them
	// First is the commit time of the first entry read from.
	First time.Time
	// Oldest is the commit time of the entry at Next, zero when Next is
	// past the newest entry (nothing left to read).
	Oldest time.Time
}

// feedState is the feed's head, guarded by SeriesStore.commitMu.
type feedState struct {
	seq        uint64        // the newest entry, 0 before the first
	samples    uint64        // samples written through it
	bytes      uint64        // entry bytes (keys and values) written through it
	notify     chan struct{} // closed when an entry is committed
	total      atomic.Uint64 // samples, for readers that do not lock
	totalBytes atomic.Uint64 // bytes, for readers that do not lock
}

// feed entry value: uvarint commit time (Unix ms), uvarint samples before
// the entry, uvarint bytes of the entries before it (keys and values,
// counted since the feed was last empty), uvarint samples in it, uvarint
// series count, then per series
// uvarint id, uvarint sample count, uvarint length and a window value
// (appendWindow) of its samples. The count lets a read resume in the
// middle of an entry without decoding the series before it.

func feedKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixFeed}, seq)
}

// consumerKey is the key of a feed consumer's position; its per-series
// state follows it, with the series id appended.
func consumerKey(name string) []byte {
	k := binary.AppendUvarint([]byte{prefixFeedConsumer}, uint64(len(name)))
	return append(k, name...)
}

// loadFeed resumes the feed's head, or, without a feed, deletes any left
// from a run that had one.
func (s *SeriesStore) loadFeed(enabled bool) error {
	s.feed.notify = make(chan struct{})
	if !enabled {
		for _, p := range []byte{prefixFeed, prefixFeedConsumer} {
			if err := s.db.DeleteRange([]byte{p}, []byte{p + 1}, pebble.Sync); err != nil {
				return fmt.Errorf("delete the series feed: %w", err)
			}
		}
		return nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixFeed}, UpperBound: []byte{prefixFeed + 1}})
	if err != nil {
		return err
	}
	if it.Last() {
		h, err := decodeFeedHeader(it.Value())
		if err != nil {
			return errors.Join(fmt.Errorf("feed entry: %w", err), it.Close())
		}
		s.feed.seq = binary.BigEndian.Uint64(it.Key()[1:])
		s.feed.samples = h.cum + h.n
		s.feed.bytes = h.bytes + uint64(len(it.Key())+len(it.Value()))
	}
	if err := it.Close(); err != nil {
		return err
	}
	// With every entry pruned, the consumers' positions say where the
	// feed stood.
	defer func() {
		s.feed.total.Store(s.feed.samples)
		s.feed.totalBytes.Store(s.feed.bytes)
	}()
	return scan(s.db, []byte{prefixFeedConsumer}, func(k, v []byte) error {
		if name, id := splitConsumerKey(k); name != nil && id == nil {
			pos, err := decodeFeedPosition(v)
			if err != nil {
				return err
			}
			if pos.Seq > 0 && pos.Seq-1 > s.feed.seq {
				s.feed.seq, s.feed.samples = pos.Seq-1, pos.Cum
			}
		}
		return nil
	})
}

// splitConsumerKey returns a consumer key's name and, for a per-series
// state key, its 8-byte series id.
func splitConsumerKey(k []byte) (name, id []byte) {
	rd := varint.Reader{B: k[1:]}
	n := rd.Uvarint()
	if rd.Err != nil || n > uint64(len(rd.B)) {
		return nil, nil
	}
	name, rest := rd.B[:n], rd.B[n:]
	if len(rest) == 8 {
		return name, rest
	}
	return name, nil
}

type feedHeader struct{ time, cum, bytes, n, series uint64 }

// feedHeaderFields is the number of uvarints before an entry's series.
const feedHeaderFields = 5

func decodeFeedHeader(v []byte) (feedHeader, error) {
	rd := varint.Reader{B: v}
	h := feedHeader{time: rd.Uvarint(), cum: rd.Uvarint(), bytes: rd.Uvarint(), n: rd.Uvarint(), series: rd.Uvarint()}
	if rd.Err != nil {
		return h, errCorrupt
	}
	return h, nil
}

// feedEntry collects the samples of one commit for the feed.
type feedEntry struct {
	body   []byte
	n      uint64
	series uint64
}

func (e *feedEntry) add(id uint64, samples []sample) error {
	w, err := encodeSamples(samples)
	if err != nil {
		return err
	}
	win := appendWindow(nil, w.chunks)
	e.body = binary.AppendUvarint(e.body, id)
	e.body = binary.AppendUvarint(e.body, uint64(len(samples)))
	e.body = binary.AppendUvarint(e.body, uint64(len(win)))
	e.body = append(e.body, win...)
	e.n += uint64(len(samples))
	e.series++
	return nil
}

// writeFeedLocked adds the entry to b as the next one; the caller holds
// commitMu. It returns the function that moves the head once b is
// committed.
func (s *SeriesStore) writeFeedLocked(b *pebble.Batch, e *feedEntry) (func(), error) {
	if e == nil || e.n == 0 {
		return func() {}, nil
	}
	seq := s.feed.seq + 1
	v := binary.AppendUvarint(nil, uint64(s.now().UnixMilli()))
	v = binary.AppendUvarint(v, s.feed.samples)
	v = binary.AppendUvarint(v, s.feed.bytes)
	v = binary.AppendUvarint(v, e.n)
	v = binary.AppendUvarint(v, e.series)
	v = append(v, e.body...)
	k := feedKey(seq)
	if err := b.Set(k, v, nil); err != nil {
		return nil, err
	}
	return func() {
		s.feed.seq, s.feed.samples = seq, s.feed.samples+e.n
		s.feed.bytes += uint64(len(k) + len(v))
		s.feed.total.Store(s.feed.samples)
		s.feed.totalBytes.Store(s.feed.bytes)
		close(s.feed.notify)
		s.feed.notify = make(chan struct{})
	}, nil
}

// FeedHead returns the position after the newest feed entry, and a
// channel closed when the next entry is committed.
func (s *SeriesStore) FeedHead() (FeedPosition, <-chan struct{}) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	return FeedPosition{Seq: s.feed.seq + 1, Cum: s.feed.samples}, s.feed.notify
}

// FeedSamples returns how many samples the feed has held, through its
// newest entry, without waiting for a commit in progress.
func (s *SeriesStore) FeedSamples() uint64 { return s.feed.total.Load() }

// FeedBytes returns the bytes (keys and values) of the feed's entries
// through its newest, counted since the feed was last empty, without
// waiting for a commit in progress.
func (s *SeriesStore) FeedBytes() uint64 { return s.feed.totalBytes.Load() }

// FeedBytesBefore returns FeedBytes as it stood before entry seq was
// written: FeedBytes minus FeedBytesBefore(pos.Seq) is what the feed
// holds from pos on (the entry pos is in counts whole). Past the newest
// entry, it is FeedBytes.
func (s *SeriesStore) FeedBytesBefore(seq uint64) (uint64, error) {
	head := s.FeedBytes()
	v, closer, err := s.db.Get(feedKey(seq))
	if errors.Is(err, pebble.ErrNotFound) {
		return head, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	h, err := decodeFeedHeader(v)
	if err != nil {
		return 0, fmt.Errorf("feed entry %d: %w", seq, err)
	}
	return h.bytes, nil
}

// FeedEnabled reports whether commits write the feed.
func (s *SeriesStore) FeedEnabled() bool { return s.feedOn }

// ReadFeed reads the samples after pos, entry by entry, up to max samples
// (at least one entry's series is split to respect it), with each series'
// labels and kind.
func (s *SeriesStore) ReadFeed(pos FeedPosition, max int) (FeedRead, error) {
	out := FeedRead{Next: pos}
	if !s.feedOn {
		return out, errors.New("the series feed is off")
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: feedKey(pos.Seq), UpperBound: []byte{prefixFeed + 1}})
	if err != nil {
		return out, err
	}
	defer it.Close()
	var chunks []timedChunk
	var smps []sample
	for it.First(); it.Valid(); it.Next() {
		seq := binary.BigEndian.Uint64(it.Key()[1:])
		v, err := it.ValueAndErr()
		if err != nil {
			return out, err
		}
		h, err := decodeFeedHeader(v)
		if err != nil {
			return out, fmt.Errorf("feed entry %d: %w", seq, err)
		}
		if out.First.IsZero() {
			out.First = time.UnixMilli(int64(h.time))
		}
		skip := uint64(0)
		if seq == out.Next.Seq {
			skip = out.Next.Sample
		}
		if out.Samples >= max {
			out.Oldest = time.UnixMilli(int64(h.time))
			return out, nil
		}
		rd := varint.Reader{B: v}
		for range feedHeaderFields {
			rd.Uvarint()
		}
		read := uint64(0) // samples of this entry before the current series
		for range h.series {
			id := rd.Uvarint()
			n := rd.Uvarint()
			win := rd.LenBytes()
			if rd.Err != nil {
				return out, fmt.Errorf("feed entry %d: %w", seq, errCorrupt)
			}
			if read+n <= skip { // read before
				read += n
				continue
			}
			if chunks, err = decodeWindow(win, chunks[:0]); err != nil {
				return out, fmt.Errorf("feed entry %d: %w", seq, err)
			}
			if smps, err = windowSamples(chunks, smps[:0]); err != nil {
				return out, fmt.Errorf("feed entry %d: %w", seq, err)
			}
			if uint64(len(smps)) != n {
				return out, fmt.Errorf("feed entry %d: series %d: %d samples, header says %d: %w", seq, id, len(smps), n, errCorrupt)
			}
			from, to := uint64(0), uint64(len(smps))
			if skip > read {
				from = min(skip-read, to)
			}
			read += uint64(len(smps))
			if from == to {
				continue
			}
			room := uint64(max - out.Samples)
			if room == 0 {
				out.Oldest = time.UnixMilli(int64(h.time))
				return out, nil
			}
			to = min(to, from+room)
			ms := s.seriesByID(id)
			if ms == nil {
				return out, fmt.Errorf("feed entry %d: series %d: %w", seq, id, errCorrupt)
			}
			fs := FeedSeries{Ref: id, Labels: ms.lset, Kind: ms.kind, Committed: int64(h.time), Samples: make([]FeedSample, 0, to-from)}
			for _, smp := range smps[from:to] {
				fs.Samples = append(fs.Samples, FeedSample{T: smp.t, F: smp.f, H: smp.h, FH: smp.fh})
			}
			out.Series = append(out.Series, fs)
			out.Samples += int(to - from)
			done := read - uint64(len(smps)) + to
			out.Next = FeedPosition{Seq: seq, Sample: done, Cum: h.cum + done}
			if out.Samples >= max && done < h.n {
				out.Oldest = time.UnixMilli(int64(h.time))
				return out, nil
			}
		}
		out.Next = FeedPosition{Seq: seq + 1, Cum: h.cum + h.n}
	}
	return out, it.Error()
}

// seriesByID returns the series of id. A series created by a commit
// enters the index just after its batch (and feed entry) is committed:
// wait for that commit to finish before giving up.
func (s *SeriesStore) seriesByID(id uint64) *memSeries {
	s.mu.RLock()
	ms := s.byID[id]
	s.mu.RUnlock()
	if ms != nil {
		return ms
	}
	s.waitForCommit()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byID[id]
}

// FeedConsumer returns a consumer's saved position and per-series state;
// ok is false for a consumer never saved.
func (s *SeriesStore) FeedConsumer(name string) (pos FeedPosition, state map[uint64][]byte, ok bool, err error) {
	state = map[uint64][]byte{}
	prefix := consumerKey(name)
	err = scan(s.db, prefix, func(k, v []byte) error {
		n, id := splitConsumerKey(k)
		if !bytes.Equal(n, []byte(name)) {
			return nil // another consumer whose name starts the same
		}
		if id == nil {
			ok = true
			var err error
			pos, err = decodeFeedPosition(v)
			return err
		}
		state[binary.BigEndian.Uint64(id)] = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return FeedPosition{}, nil, false, fmt.Errorf("load feed consumer %q: %w", name, err)
	}
	return pos, state, ok, nil
}

// SaveFeedConsumer saves, in one synced batch, a consumer's position and
// the per-series state that changed.
func (s *SeriesStore) SaveFeedConsumer(name string, pos FeedPosition, changed map[uint64][]byte) error {
	b := s.db.NewBatch()
	defer b.Close()
	k := consumerKey(name)
	v := binary.AppendUvarint(binary.AppendUvarint(binary.AppendUvarint(nil, pos.Seq), pos.Sample), pos.Cum)
	if err := b.Set(k, v, nil); err != nil {
		return err
	}
	for id, st := range changed {
		if err := b.Set(binary.BigEndian.AppendUint64(bytes.Clone(k), id), st, nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("save feed consumer %q: %w", name, err)
	}
	return nil
}

func decodeFeedPosition(v []byte) (FeedPosition, error) {
	rd := varint.Reader{B: v}
	p := FeedPosition{Seq: rd.Uvarint(), Sample: rd.Uvarint(), Cum: rd.Uvarint()}
	if rd.Err != nil || len(rd.B) != 0 {
		return p, fmt.Errorf("feed position: %w", errCorrupt)
	}
	return p, nil
}

// DropFeedConsumers deletes the position and state of every consumer not
// in keep (a remote removed from the configuration).
func (s *SeriesStore) DropFeedConsumers(keep []string) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := scan(s.db, []byte{prefixFeedConsumer}, func(k, _ []byte) error {
		name, _ := splitConsumerKey(k)
		for _, n := range keep {
			if string(name) == n {
				return nil
			}
		}
		return b.Delete(k, nil)
	}); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// PruneFeed deletes the feed entries before seq (those every consumer has
// read).
func (s *SeriesStore) PruneFeed(seq uint64) error {
	if seq == 0 {
		return nil
	}
	return s.db.DeleteRange(feedKey(0), feedKey(seq), pebble.NoSync)
}
