//go:build ignore

// C28 (docs/benchmarks.md), not part of proxylens: bytes a sample of seriesgen's C7 data
// (--series-target 1000 --days 30 --interval 60s --seed 1) in two-hour
// chunks, as proxylens and Prometheus cut them, under Prometheus' XOR
// encoding and under two integer encodings of the values (the timestamps
// cost the same in all three: XOR's delta-of-delta, one bit a sample at a
// fixed interval). Non-integer windows fall back to XOR in both.
package main

import (
	"flag"
	"fmt"
	"math"
	"math/bits"

	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

type win struct {
	t []int64
	v []float64
}

func zig(x int64) uint64 { return uint64((x << 1) ^ (x >> 63)) }

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// tsBits is what XOR spends on the timestamps of a chunk: the first as a
// varint, the second as a uvarint delta, then delta-of-delta buckets.
func tsBits(t []int64) int {
	b := 8 * uvarintLen(zig(t[0]))
	if len(t) > 1 {
		b += 8 * uvarintLen(uint64(t[1]-t[0]))
	}
	for i := 2; i < len(t); i++ {
		b += dodCost((t[i]-t[i-1])-(t[i-1]-t[i-2]), 14, 17, 20)
	}
	return b
}

// dodCost is the bits of one delta-of-delta in Gorilla's buckets: a
// single 0 bit for none, else a unary bucket number and the value in the
// bucket's width, or in 64 bits past the last.
func dodCost(d int64, widths ...uint8) int {
	if d == 0 {
		return 1
	}
	for i, w := range widths {
		if bitRange(d, w) {
			return i + 2 + int(w)
		}
	}
	return len(widths) + 1 + 64
}

func bitRange(x int64, nbits uint8) bool {
	return -((1<<(nbits-1))-1) <= x && x <= 1<<(nbits-1)
}

func integral(v []float64) bool {
	for _, x := range v {
		if x != math.Trunc(x) || math.Abs(x) > 1<<52 {
			return false
		}
	}
	return true
}

// dodBits: the first value as a zigzag varint, the first delta as a
// zigzag varint, then the delta-of-delta in Gorilla's buckets.
func dodBits(v []float64) int {
	b := 8 * uvarintLen(zig(int64(v[0])))
	if len(v) > 1 {
		b += 8 * uvarintLen(zig(int64(v[1])-int64(v[0])))
	}
	for i := 2; i < len(v); i++ {
		b += dodCost((int64(v[i])-int64(v[i-1]))-(int64(v[i-1])-int64(v[i-2])), 7, 9, 12, 20)
	}
	return b
}

// forBits: the first value as a zigzag varint, then the deltas packed at
// one bit width for the chunk, above their minimum (frame of reference):
// a byte for the width, a varint for the minimum.
func forBits(v []float64) int {
	b := 8 * uvarintLen(zig(int64(v[0])))
	if len(v) < 2 {
		return b
	}
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for i := 1; i < len(v); i++ {
		d := int64(v[i]) - int64(v[i-1])
		lo, hi = min(lo, d), max(hi, d)
	}
	w := bits.Len64(uint64(hi - lo))
	return b + 8 + 8*uvarintLen(zig(lo)) + w*(len(v)-1)
}

func main() {
	target := flag.Int("series-target", 1000, "")
	days := flag.Float64("days", 30, "")
	winH := flag.Int64("window-hours", 2, "hours a chunk")
	flag.Parse()
	const interval = 60.0
	end := int64(1796000400) / 3600 * 3600 * 1000
	start := end - int64(*days*86400*1000)
	g := NewGen(1, *target, start, end, interval, true)
	n := len(g.Series)
	wins := make([]win, n)
	kinds := []string{"requests", "bucket", "sum", "count", "bytes"}
	var xorB, dodB, forB, bestB, samples [5]float64
	var chunks float64
	flush := func(i int) {
		w := &wins[i]
		if len(w.t) == 0 {
			return
		}
		k := g.Series[i].Kind
		c := chunkenc.NewXORChunk()
		app, _ := c.Appender()
		for j := range w.t {
			app.Append(0, w.t[j], w.v[j])
		}
		x := float64(len(c.Bytes()))
		xorB[k] += x
		if integral(w.v) {
			ts := tsBits(w.t)
			d := float64(2 + (ts+dodBits(w.v)+7)/8) // 2: the sample count, as XOR's header
			f := float64(2 + (ts+forBits(w.v)+7)/8)
			dodB[k] += d
			forB[k] += f
			bestB[k] += 1 + min(x, d, f) // 1: which encoding
		} else {
			dodB[k] += x
			forB[k] += x
			bestB[k] += 1 + x
		}
		samples[k] += float64(len(w.t))
		chunks++
		w.t, w.v = w.t[:0], w.v[:0]
	}
	windowMs := *winH * 3600 * 1000
	// The empirical entropy of each integer series' increments over the
	// whole 30 days: a bound below any encoding of them one at a time.
	hist := make([]map[int64]int, n)
	prev := make([]float64, n)
	first := true
	for t := start + interval*1000; t <= end; t += interval * 1000 {
		vals := g.Step(t)
		for i, v := range vals {
			if !first && g.Series[i].Kind != kindSum {
				if hist[i] == nil {
					hist[i] = map[int64]int{}
				}
				hist[i][int64(v)-int64(prev[i])]++
			}
			prev[i] = v
		}
		first = false
		for i, v := range vals {
			w := &wins[i]
			if len(w.t) > 0 && w.t[0]/windowMs != t/windowMs {
				flush(i)
			}
			w.t = append(w.t, t)
			w.v = append(w.v, v)
		}
	}
	for i := range wins {
		flush(i)
	}
	var ent [5]float64
	for i, h := range hist {
		tot := 0
		for _, c := range h {
			tot += c
		}
		for _, c := range h {
			p := float64(c) / float64(tot)
			ent[g.Series[i].Kind] -= float64(c) * math.Log2(p) / 8
		}
	}
	defer func() {
		var e, sm float64
		for k := range kinds {
			if samples[k] > 0 && k != kindSum {
				fmt.Printf("entropy of the increments, %-9s %.3f bytes a sample\n", kinds[k], ent[k]/samples[k])
				e += ent[k]
			}
			sm += samples[k]
		}
		fmt.Printf("entropy of the integer increments + sum series at XOR, over all samples: %.3f bytes a sample (timestamps not counted)\n", (e+xorB[kindSum])/sm)
	}()
	var tx, td, tf, tb, ts float64
	fmt.Printf("%d series, %.0f chunks\n", n, chunks)
	fmt.Printf("%-9s %12s %9s %9s %9s %9s\n", "kind", "samples", "XOR", "int-dod", "int-FOR", "best")
	for k := range kinds {
		if samples[k] == 0 {
			continue
		}
		fmt.Printf("%-9s %12.0f %9.3f %9.3f %9.3f %9.3f\n", kinds[k], samples[k], xorB[k]/samples[k], dodB[k]/samples[k], forB[k]/samples[k], bestB[k]/samples[k])
		tx, td, tf, tb, ts = tx+xorB[k], td+dodB[k], tf+forB[k], tb+bestB[k], ts+samples[k]
	}
	fmt.Printf("%-9s %12.0f %9.3f %9.3f %9.3f %9.3f  (chunk bytes a sample, no key or index)\n", "all", ts, tx/ts, td/ts, tf/ts, tb/ts)
}
