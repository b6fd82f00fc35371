package pebblestore

// A cut's series samples reach the series store in bounded pieces. A cut
// of spans whose end times spread over weeks touches hundreds of windows,
// bases and daily rollups of every series: written as one batch, it grew
// to gigabytes (and Pebble's WAL writer keeps the blocks of the largest
// batch it ever wrote until the WAL rotates). So WriteCut
//
//  1. stages the samples (Cut.Write's increment and sample calls) under
//     the z key space, grouped by series, in batches of stageFlushBytes,
//     not synced;
//  2. commits, in one synced batch, the totals, the journal checkpoint
//     and keyCutApply, which says that staged samples wait to be applied:
//     from here on the journal segments are not needed, the staged
//     samples hold what they added to the series;
//  3. applies the staged samples, series by series in key order, in
//     pieces of at most pieceSamples samples or pieceSeries series (one
//     series is never split): each piece is one Pebble batch with the
//     windows, bases, rollups and feed entry of its series and the
//     deletion of the staged keys it applied; the last one also deletes
//     keyCutApply and is synced.
//
// Each piece is atomic, and deletes what it applied: a crash between two
// pieces leaves exactly the staged keys not applied yet, and Load applies
// them before anything else. Nothing acknowledged is lost, nothing is
// counted twice. Queries do not wait for the apply: they read the cut's
// series from a snapshot taken before it, with its increments from the
// overlay, until the last piece is committed (cut_view.go).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/proxylens/proxylens/internal/varint"
)

// pieceLimits bounds what a cut holds at once.
type pieceLimits struct {
	// stageBytes bounds the staged samples held in memory: past it they
	// are written to the z key space.
	stageBytes int
	// samples and series bound one applied piece (a series is never
	// split, so a piece holds more when one series has more).
	samples, series int
	// fail, in tests, is called before piece n (from 1) is committed,
	// and with 0 before each staging batch; an error fails it, as a
	// crash there would.
	fail func(n int) error
}

var defaultPieces = pieceLimits{stageBytes: 8 << 20, samples: 16384, series: 1024}

// stageKey is the key of chunk n of staged series sid: chunk 0 holds
// the series' kind and labels, the others its samples.
func stageKey(sid, n uint32) []byte {
	k := binary.BigEndian.AppendUint32([]byte{prefixCutStage}, sid)
	return binary.BigEndian.AppendUint32(k, n)
}

// stager collects a cut's samples by series and writes them to the z key
// space in bounded batches.
type stager struct {
	d        *DB
	byHash   map[uint64][]*stagedSeries
	series   []*stagedSeries
	buffered int
	flushed  bool // the first batch, which clears the z key space, is written
	samples  int
}

type stagedSeries struct {
	sid    uint32
	ls     labels.Labels
	kind   SeriesKind
	chunks uint32 // chunks written, the header included
	buf    []byte // samples not written yet: varint t, 8 bytes LE float bits
}

// labels returns the labels of every series staged.
func (g *stager) labels() []labels.Labels {
	out := make([]labels.Labels, len(g.series))
	for i, ss := range g.series {
		out[i] = ss.ls
	}
	return out
}

func newStager(d *DB) *stager {
	return &stager{d: d, byHash: map[uint64][]*stagedSeries{}}
}

func (g *stager) increment(ls labels.Labels, t int64, v float64) error {
	return g.add(ls, KindIncrements, t, v)
}

func (g *stager) sample(ls labels.Labels, t int64, v float64) error {
	return g.add(ls, KindSamples, t, v)
}

func (g *stager) add(ls labels.Labels, kind SeriesKind, t int64, v float64) error {
	h := ls.Hash()
	var ss *stagedSeries
	for _, c := range g.byHash[h] {
		if labels.Equal(c.ls, ls) {
			ss = c
			break
		}
	}
	if ss == nil {
		if ls.IsEmpty() {
			return errors.New("series without labels")
		}
		if len(g.series) == math.MaxUint32 {
			return errors.New("cut has more series than can be staged")
		}
		ss = &stagedSeries{sid: uint32(len(g.series)), ls: ls.Copy(), kind: kind}
		g.byHash[h] = append(g.byHash[h], ss)
		g.series = append(g.series, ss)
	} else if ss.kind != kind {
		return fmt.Errorf("series %s: handed over as increments and as samples", ls)
	}
	n := len(ss.buf)
	ss.buf = appendStagedSample(ss.buf, t, v)
	g.buffered += len(ss.buf) - n
	g.samples++
	if g.buffered >= g.d.pieces.stageBytes {
		return g.flush()
	}
	return nil
}

// appendStagedSample encodes one staged sample: varint t (Unix ms), then
// v as float64 LE.
func appendStagedSample(dst []byte, t int64, v float64) []byte {
	dst = binary.AppendVarint(dst, t)
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

// flush writes the samples buffered, and the header of every series not
// written yet, in one batch that is not synced (the checkpoint's batch
// syncs it). The first batch also clears what a cut that crashed while
// staging left behind.
func (g *stager) flush() error {
	if f := g.d.pieces.fail; f != nil {
		if err := f(0); err != nil {
			return err
		}
	}
	if err := g.d.guard.refuseChecked(); err != nil {
		return err // before the checkpoint: the cut waits for space
	}
	b := g.d.db.NewBatch()
	defer b.Close()
	if !g.flushed {
		if err := b.DeleteRange([]byte{prefixCutStage}, []byte{prefixCutStage + 1}, nil); err != nil {
			return fmt.Errorf("clear staged samples: %w", err)
		}
	}
	var hdr []byte
	for _, ss := range g.series {
		if ss.chunks == 0 {
			hdr = appendLabels(append(hdr[:0], byte(ss.kind)), ss.ls)
			if err := b.Set(stageKey(ss.sid, 0), hdr, nil); err != nil {
				return fmt.Errorf("stage series: %w", err)
			}
			ss.chunks = 1
		}
		if len(ss.buf) == 0 {
			continue
		}
		if err := b.Set(stageKey(ss.sid, ss.chunks), ss.buf, nil); err != nil {
			return fmt.Errorf("stage samples: %w", err)
		}
		ss.chunks++
		ss.buf = ss.buf[:0]
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("stage samples: %w", err)
	}
	g.buffered, g.flushed = 0, true
	return nil
}

// applyStagedLocked applies the staged samples of the last cut to the
// series, in pieces (see above). The caller holds cutMu and
// SeriesStore.applyMu, the latter since before keyCutApply was committed,
// so that a querier that sees it waits for the end. On error, the pieces
// written stay written, and what is left stays staged for the next call.
func (d *DB) applyStagedLocked() (err error) {
	s := d.series
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixCutStage}, UpperBound: []byte{prefixCutStage + 1}})
	if err != nil {
		return fmt.Errorf("read staged samples: %w", err)
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("read staged samples: %w", cerr)
		}
	}()
	var (
		app              = s.newAppender()
		cur              labels.Labels
		kind             SeriesKind
		nSamples, nSerie int
		dropped          int
		piece            int
	)
	app.anyAge = true
	for valid := it.First(); valid; valid = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 9 {
			return fmt.Errorf("staged sample key of %d bytes: %w", len(k), errCorrupt)
		}
		sid, chunk := binary.BigEndian.Uint32(k[1:]), binary.BigEndian.Uint32(k[5:])
		if chunk == 0 {
			if nSamples >= d.pieces.samples || nSerie >= d.pieces.series {
				piece++
				if err := d.commitPiece(app, piece, stageKey(sid, 0), false); err != nil {
					return err
				}
				app = s.newAppender()
				app.anyAge = true
				nSamples, nSerie = 0, 0
			}
			if len(v) == 0 {
				return fmt.Errorf("staged series: %w", errCorrupt)
			}
			kind = SeriesKind(v[0])
			if cur, err = decodeLabels(v[1:]); err != nil {
				return fmt.Errorf("staged series: %w", err)
			}
			nSerie++
			continue
		}
		if cur.IsEmpty() {
			return fmt.Errorf("staged samples without their series: %w", errCorrupt)
		}
		rd := varint.Reader{B: v}
		for len(rd.B) > 0 {
			t := rd.Varint()
			if rd.Err != nil || len(rd.B) < 8 {
				return fmt.Errorf("staged samples: %w", errCorrupt)
			}
			f := math.Float64frombits(binary.LittleEndian.Uint64(rd.B))
			rd.B = rd.B[8:]
			nSamples++
			if kind == KindIncrements {
				err = app.AppendIncrement(cur, t, f)
			} else {
				_, err = app.Append(0, cur, 0, t, f, nil, nil, storage.AppendV2Options{})
			}
			if err != nil {
				// Already past the checkpoint: a sample the store refuses
				// (another value at a stored time) cannot fail the cut.
				dropped++
			}
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("read staged samples: %w", err)
	}
	if dropped > 0 {
		d.log.Warn("cut samples refused by their series, dropped", "samples", dropped)
	}
	if err := d.commitPiece(app, piece+1, nil, true); err != nil {
		return err
	}
	return d.series.endCutView()
}

// commitPiece commits what app holds, piece n of the apply, with the
// deletion of the staged keys before upTo (nil: all, and keyCutApply with
// them, synced).
func (d *DB) commitPiece(app *appender, n int, upTo []byte, last bool) (err error) {
	if d.pieces.fail != nil {
		if err := d.pieces.fail(n); err != nil {
			return err
		}
	}
	if err := d.guard.refuseChecked(); err != nil {
		return err // the piece stays staged for the next cut
	}
	b := d.db.NewBatch()
	defer b.Close() // a piece's buffer is not kept: the next may be smaller
	if upTo == nil {
		upTo = []byte{prefixCutStage + 1}
	}
	app.done = true
	// The windows the piece rewrites, read by one iterator: it sees the
	// pieces committed before this one, and the cut holds cutMu.
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixChunks}, UpperBound: []byte{prefixChunks + 1}})
	if err != nil {
		return fmt.Errorf("read the windows of a cut piece: %w", err)
	}
	bases, err := d.db.NewIter(nil)
	if err != nil {
		return errors.Join(fmt.Errorf("read the bases of a cut piece: %w", err), it.Close())
	}
	app.windows, app.bases = it, bases
	defer func() {
		app.windows, app.bases = nil, nil
		if cerr := errors.Join(it.Close(), bases.Close()); err == nil && cerr != nil {
			err = fmt.Errorf("read the windows of a cut piece: %w", cerr)
		}
	}()
	return d.series.commit(app, b, func() error {
		if err := b.DeleteRange([]byte{prefixCutStage}, upTo, nil); err != nil {
			return fmt.Errorf("delete applied staged samples: %w", err)
		}
		opt := pebble.NoSync
		if last {
			if err := b.Delete(keyCutApply, nil); err != nil {
				return fmt.Errorf("delete cut apply marker: %w", err)
			}
			opt = pebble.Sync
		}
		if err := b.Commit(opt); err != nil {
			return fmt.Errorf("commit cut piece: %w", err)
		}
		return nil
	})
}

// stagedPending reports whether a cut's staged samples wait to be applied.
func (d *DB) stagedPending() (bool, error) {
	_, closer, err := d.db.Get(keyCutApply)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read cut apply marker: %w", err)
	}
	return true, closer.Close()
}
