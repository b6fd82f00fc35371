package pebblestore

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"
)

// packWindow packs the samples, given as two groups of chunks as a window
// with a Merge operand has them, and returns the window's value.
func packWindow(t *testing.T, p *packer, ss []sample) ([]timedChunk, []byte) {
	t.Helper()
	half := len(ss) / 2
	var chunks []timedChunk
	for _, part := range [][]sample{ss[:half], ss[half:]} {
		if len(part) == 0 {
			continue
		}
		w, err := encodeSamples(part)
		require.NoError(t, err)
		chunks = append(chunks, w.chunks...)
	}
	packed := p.pack(chunks)
	return packed, appendWindow(nil, packed)
}

func TestPackedRoundTrip(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	counter := func(n int, step, jitter int64, inc func() float64) []sample {
		ss := make([]sample, n)
		tt, v := int64(1_764_331_200_000), 0.0
		for i := range ss {
			tt += step + rnd.Int64N(jitter+1)
			v += inc()
			ss[i] = sample{t: tt, f: v}
		}
		return ss
	}
	cases := map[string][]sample{
		"one sample":            {{t: 5, f: 7}},
		"regular, small steps":  counter(120, 60_000, 0, func() float64 { return float64(rnd.IntN(50)) }),
		"jittered times":        counter(720, 10_000, 25, func() float64 { return float64(rnd.IntN(1000)) }),
		"constant":              counter(480, 15_000, 0, func() float64 { return 0 }),
		"resets and negatives":  counter(200, 30_000, 3, func() float64 { return float64(rnd.IntN(2001) - 1000) }),
		"near 2^53":             counter(120, 60_000, 0, func() float64 { return float64(rnd.IntN(40)) }),
		"gaps of whole steps":   counter(300, 15_000, 0, func() float64 { return float64(rnd.IntN(3)) }),
		"large, sparse samples": counter(40, 7_000_000, 1_000_000, func() float64 { return float64(rnd.Int64N(1 << 40)) }),
	}
	for i := range cases["near 2^53"] {
		cases["near 2^53"][i].f += packedMaxInteger - 5000
	}
	for i := range cases["gaps of whole steps"] {
		cases["gaps of whole steps"][i].t += int64(i/7) * 15_000 // a step missed every 7 samples
	}
	var p packer
	for name, ss := range cases {
		t.Run(name, func(t *testing.T) {
			packed, val := packWindow(t, &p, ss)
			require.Len(t, packed, 1)
			require.Equal(t, encPacked, packed[0].c.Encoding())
			require.Equal(t, ss[0].t, packed[0].minT)
			require.Equal(t, ss[len(ss)-1].t, packed[0].maxT)
			decoded, err := decodeWindow(val, nil)
			require.NoError(t, err)
			got, err := windowSamples(decoded, nil)
			require.NoError(t, err)
			require.Equal(t, ss, got)
			require.Equal(t, len(ss), decoded[0].c.NumSamples())

			// Seek agrees with XOR's on the same samples, from any
			// position, and never goes back.
			xor, err := encodeSamples(ss)
			require.NoError(t, err)
			var pit, xit chunkenc.Iterator
			for range 50 {
				pit, xit = decoded[0].c.Iterator(pit), xor.chunks[0].c.Iterator(xit)
				for range 3 {
					target := ss[0].t - 10 + rnd.Int64N(ss[len(ss)-1].t-ss[0].t+20)
					pv, xv := pit.Seek(target), xit.Seek(target)
					require.Equal(t, xv, pv, "seek %d", target)
					if xv == chunkenc.ValFloat {
						pt, pf := pit.At()
						xt, xf := xit.At()
						require.Equal(t, [2]float64{float64(xt), xf}, [2]float64{float64(pt), pf})
						require.Equal(t, xt, pit.AtT())
					}
				}
				require.NoError(t, pit.Err())
			}
			// Exhausted, it stays so.
			it := decoded[0].c.Iterator(nil)
			for it.Next() != chunkenc.ValNone {
			}
			require.Equal(t, chunkenc.ValNone, it.Next())
			require.Equal(t, chunkenc.ValNone, it.Seek(math.MaxInt64))
		})
	}
}

// TestPackedWidest encodes deltas of the widest width packing takes: values
// from −2⁵³ to 2⁵³ and back, and times a day apart but for a millisecond.
func TestPackedWidest(t *testing.T) {
	var p packer
	p.ts = []int64{-dayMs, 0, 1, dayMs}
	p.vs = []int64{-packedMaxInteger, packedMaxInteger, -packedMaxInteger, 0}
	b, ok := p.encode(nil)
	require.True(t, ok)
	c, err := chunkFromData(encPacked, b)
	require.NoError(t, err)
	require.Equal(t, uint(packedMaxWidth), c.(*packedChunk).vWidth)
	got, err := windowSamples([]timedChunk{{c: c}}, nil)
	require.NoError(t, err)
	require.Equal(t, []sample{{t: -dayMs, f: -packedMaxInteger}, {t: 0, f: packedMaxInteger}, {t: 1, f: -packedMaxInteger}, {t: dayMs, f: 0}}, got)
}

// TestPackedOnlyWhereExact leaves a window as it is wherever packing would
// change a sample or a start time, or take more bytes.
func TestPackedOnlyWhereExact(t *testing.T) {
	var p packer
	for name, ss := range map[string][]sample{
		"a fraction":       {{t: 1, f: 1}, {t: 2, f: 1.5}},
		"a stale marker":   {{t: 1, f: 1}, {t: 2, f: math.Float64frombits(value.StaleNaN)}},
		"negative zero":    {{t: 1, f: 1}, {t: 2, f: math.Copysign(0, -1)}},
		"past 2^53":        {{t: 1, f: 1}, {t: 2, f: packedMaxInteger + 2}},
		"infinity":         {{t: 1, f: 1}, {t: 2, f: math.Inf(1)}},
		"a start time":     {{t: 1, f: 1}, {st: 1, t: 2, f: 2}},
		"random big steps": {{t: 1, f: 0}, {t: 2, f: 1 << 52}, {t: 3, f: 7}, {t: 4, f: -(1 << 52)}},
	} {
		packed, _ := packWindow(t, &p, ss)
		for _, c := range packed {
			require.NotEqual(t, encPacked, c.c.Encoding(), name)
		}
	}
	h, err := encodeSamples([]sample{{t: 1, h: &histogram.Histogram{Count: 1, ZeroCount: 1}}})
	require.NoError(t, err)
	require.Equal(t, h.chunks, p.pack(h.chunks), "histograms")
	// Packing a packed window gives it back as it is.
	_, val := packWindow(t, &p, []sample{{t: 1, f: 1}, {t: 2, f: 2}, {t: 3, f: 3}})
	chunks, err := decodeWindow(val, nil)
	require.NoError(t, err)
	require.Same(t, chunks[0].c, p.pack(chunks)[0].c)
}

// TestPackedCorrupt refuses bytes that are not a whole packed chunk, so
// that no read of a damaged value goes past its bytes.
func TestPackedCorrupt(t *testing.T) {
	var p packer
	ss := make([]sample, 100)
	for i := range ss {
		ss[i] = sample{t: int64(i)*60_000 + int64(i%7), f: float64(i * i)}
	}
	packed, _ := packWindow(t, &p, ss)
	b := append([]byte(nil), packed[0].c.Bytes()...)
	for n := range len(b) {
		_, err := chunkFromData(encPacked, b[:n])
		require.ErrorIs(t, err, errCorrupt, "cut to %d bytes", n)
	}
	_, err := chunkFromData(encPacked, append(b, 0))
	require.ErrorIs(t, err, errCorrupt, "a byte too many")
	// Any bytes at all: refused, or read to the end without a panic.
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		junk := make([]byte, rnd.IntN(40))
		for i := range junk {
			junk[i] = byte(rnd.IntN(256))
		}
		if rnd.IntN(2) == 0 && len(junk) > 0 {
			junk[0] = byte(rnd.IntN(4)) // a small sample count, more often accepted
		}
		c, err := chunkFromData(encPacked, junk)
		if err != nil {
			require.ErrorIs(t, err, errCorrupt)
			continue
		}
		it := c.Iterator(nil)
		n := 0
		for it.Next() == chunkenc.ValFloat {
			n++
		}
		require.Equal(t, c.NumSamples(), n)
	}
	// Header fields out of bounds: n, first time, unit, least time delta,
	// its width, first value, least value delta, its width.
	for name, hdr := range map[string][]byte{
		"time width 57":  {1, 2, 1, 0, 57, 2, 0, 0},
		"value width 57": {1, 2, 1, 0, 0, 2, 0, 57},
		"no samples":     {0, 2, 1, 0, 0, 2, 0, 0},
		"time unit 0":    {2, 2, 0, 1, 0, 2, 0, 0},
		"time delta 0":   {2, 2, 1, 0, 0, 2, 0, 0},
	} {
		_, err = chunkFromData(encPacked, hdr)
		require.ErrorIs(t, err, errCorrupt, name)
	}
	c, err := chunkFromData(encPacked, []byte{2, 2, 1, 1, 0, 2, 0, 0})
	require.NoError(t, err, "two samples, a unit apart, the same value")
	got, err := windowSamples([]timedChunk{{c: c}}, nil)
	require.NoError(t, err)
	require.Equal(t, []sample{{t: 1, f: 1}, {t: 2, f: 1}}, got)
	// Reset to bad bytes leaves an empty chunk.
	pc := &packedChunk{}
	require.NoError(t, pc.parse(b))
	pc.Reset([]byte{1})
	require.Equal(t, chunkenc.ValNone, pc.Iterator(nil).Next())
	_, err = pc.Appender()
	require.ErrorIs(t, err, errNotAppendable)
}

// TestClosedWindowsPacked writes a remote-written counter, a gauge of
// fractions and a counter with a stale marker in 30-minute slices, as
// remote write sends them: the counter's closed windows are packed, the
// open one, the gauge's and the stale marker's stay XOR, and every sample
// reads back as written, after a late sample rewrites a packed window and
// after a restart.
func TestClosedWindowsPacked(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	counter := labels.FromStrings("__name__", "c_total", "job", "a")
	gauge := labels.FromStrings("__name__", "g", "job", "a")
	stale := labels.FromStrings("__name__", "s_total", "job", "a")
	want := map[string][]point{}
	rnd := rand.New(rand.NewPCG(5, 6))
	cv := 0.0
	const end = 6*h + 30*60_000
	for slice := int64(0); slice < end; slice += 30 * 60_000 {
		app := s.AppenderV2(context.Background())
		for tt := slice; tt < slice+30*60_000 && tt < end; tt += 60_000 {
			if tt == 5*h+45*60_000 {
				continue // sent late, below
			}
			cv += float64(rnd.IntN(100))
			for _, x := range []struct {
				ls labels.Labels
				v  float64
			}{{counter, cv}, {gauge, float64(rnd.IntN(1000)) / 8}, {stale, cv}} {
				v := x.v
				if x.ls.Get("__name__") == "s_total" && tt == 3*h {
					v = math.Float64frombits(value.StaleNaN)
				}
				_, err := app.Append(0, x.ls, 0, tt, v, nil, nil, storage.AppendV2Options{})
				require.NoError(t, err)
				if value.IsStaleNaN(v) {
					v = -1 // as readStale reads it
				}
				want[x.ls.String()] = append(want[x.ls.String()], point{tt, v})
			}
		}
		require.NoError(t, app.Commit())
	}
	encodings := func() map[string][]chunkenc.Encoding {
		out := map[string][]chunkenc.Encoding{}
		for _, ls := range []labels.Labels{counter, gauge, stale} {
			ms := s.lookup(ls, ls.Hash())
			require.NotNil(t, ms, ls.String())
			for w := int64(0); w <= 6*h; w += windowMs {
				v, closer, err := db.db.Get(chunkKey(ms.id, w))
				require.NoError(t, err)
				chunks, err := decodeWindow(v, nil)
				require.NoError(t, err)
				out[ls.String()] = append(out[ls.String()], chunks[0].c.Encoding())
				require.NoError(t, closer.Close())
			}
		}
		return out
	}
	x, p := chunkenc.EncXOR, encPacked
	require.Equal(t, map[string][]chunkenc.Encoding{
		counter.String(): {p, p, p, x},
		gauge.String():   {x, x, x, x},
		stale.String():   {p, x, p, x},
	}, encodings())

	// The late sample rewrites its packed window, packed again.
	app := s.AppenderV2(context.Background())
	late := int64(5*h + 45*60_000)
	_, err := app.Append(0, counter, 0, late, want[counter.String()][344].V, nil, nil, storage.AppendV2Options{})
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	pts := want[counter.String()]
	i := 345 // the samples before 5h45m
	want[counter.String()] = append(pts[:i:i], append([]point{{late, pts[i-1].V}}, pts[i:]...)...)
	require.Equal(t, want, readStale(t, s, end))
	require.Equal(t, []chunkenc.Encoding{p, p, p, x}, encodings()[counter.String()])

	require.NoError(t, db.Close())
	db, s = openStore(t, dir)
	defer db.Close()
	require.Equal(t, want, readStale(t, s, end))
}

// readStale reads every series of job a, a stale marker as -1, which
// compares equal where NaN does not.
func readStale(t *testing.T, s *SeriesStore, end int64) map[string][]point {
	got := read(t, s, 0, end, eq("job", "a"))
	for _, pts := range got {
		for i := range pts {
			if value.IsStaleNaN(pts[i].V) {
				pts[i].V = -1
			}
		}
	}
	return got
}

// BenchmarkWindowRead decodes a closed window of 120 counter samples at
// 60 s, XOR as written before packing, and packed, and reads every sample
// (docs/benchmarks.md, C7 bytes).
func BenchmarkWindowRead(b *testing.B) {
	rnd := rand.New(rand.NewPCG(7, 8))
	ss := make([]sample, 120)
	v := 0.0
	for i := range ss {
		v += float64(rnd.IntN(200))
		ss[i] = sample{t: 1_764_331_200_000 + int64(i)*60_000, f: v}
	}
	w, err := encodeSamples(ss)
	if err != nil {
		b.Fatal(err)
	}
	var p packer
	vals := map[string][]byte{"xor": appendWindow(nil, w.chunks), "packed": appendWindow(nil, p.pack(w.chunks))}
	for _, name := range []string{"xor", "packed"} {
		val := vals[name]
		b.Run(name, func(b *testing.B) {
			var chunks []timedChunk
			var it chunkenc.Iterator
			sum := 0.0
			for b.Loop() {
				chunks, err = decodeWindow(val, chunks[:0])
				if err != nil {
					b.Fatal(err)
				}
				it = chunks[0].c.Iterator(it)
				for it.Next() == chunkenc.ValFloat {
					_, f := it.At()
					sum += f
				}
			}
			b.ReportMetric(float64(len(val))/float64(len(ss)), "bytes/sample")
			if sum == 0 {
				b.Fatal("no samples")
			}
		})
	}
}

// TestFastSeries stores a series sampled at 10 Hz: 72,000 samples a
// window, past the 65,535 a Prometheus chunk counts, in commits of 1,000
// (the window new), 70,000 (a Merge operand), 1,000 and 20,000 (the next
// window, which closes the first). Nothing panics; every sample reads
// back, with the closed window packed into one chunk, and after a
// restart.
func TestFastSeries(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	ls := labels.FromStrings("__name__", "fast_total", "job", "a")
	var want []point
	tt := int64(0)
	for _, n := range []int{1000, 70_000, 1000, 20_000} {
		app := s.AppenderV2(context.Background())
		for range n {
			_, err := app.Append(0, ls, 0, tt, float64(tt/100), nil, nil, storage.AppendV2Options{})
			require.NoError(t, err)
			want = append(want, point{tt, float64(tt / 100)})
			tt += 100
		}
		require.NoError(t, app.Commit())
	}
	end := tt
	require.Equal(t, map[string][]point{ls.String(): want}, read(t, s, 0, end, eq("job", "a")))
	v, closer, err := db.db.Get(chunkKey(s.lookup(ls, ls.Hash()).id, 0))
	require.NoError(t, err)
	chunks, err := decodeWindow(v, nil)
	require.NoError(t, err)
	require.NoError(t, closer.Close())
	require.Len(t, chunks, 1)
	require.Equal(t, encPacked, chunks[0].c.Encoding())
	require.Equal(t, int(windowMs/100), chunks[0].c.NumSamples())
	require.NoError(t, db.Close())
	db, s = openStore(t, dir)
	defer db.Close()
	require.Equal(t, map[string][]point{ls.String(): want}, read(t, s, 0, end, eq("job", "a")))
}
