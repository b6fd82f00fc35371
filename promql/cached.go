package promql

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/annotations"
)

// The result cache, as Thanos' and Mimir's query frontends have one: a
// range query is split at UTC midnights into days, and today into hours,
// whose evaluation times stay on the query's grid (start + k·step). A
// piece that has ended, and whose data reaches no later than now, is
// looked up in the cache; the others (the live part, the current hour)
// are evaluated every time. Consecutive pieces to evaluate go to the
// engine as one range query, whose answer is split back into pieces.
// Under event time any past hour can change (a late span), so a cached
// piece is reused only while the ChangeTracker says that nothing in the
// data it read (its selectors' ranges, offsets and lookback, from
// promql.FindMinMaxTime, widened by the store's window; everything
// before it when it reads counter levels) changed after the epoch taken
// before it was evaluated. The pieces' matrices merge into exactly what one evaluation
// returns: a range query's steps are evaluated independently.
//
// Never cached: queries with @ or start()/end() (their steps depend on
// the query's range), sort functions and subqueries (see splittable),
// steps longer than a day or not whole milliseconds, times with sub-millisecond parts,
// answers with warnings or infos, and HTTP queries asking for stats.
//
// One more condition makes the merge exact. The series store's answer for
// a step does not depend on that step alone: a selector returns every
// series with data anywhere in the query's range, and an increment series
// reads 0, not nothing, where it was silent. So a source that stopped
// sending ten days ago has zeros in a 30-day answer but is absent from an
// answer of the last day alone. Each piece is therefore evaluated alone,
// and the cache keeps with it a fingerprint of the series the store
// returned for each selector. Merging is exact when every piece had the
// same ones: then each piece saw what one evaluation of the whole range
// sees (the union of the pieces' series). Otherwise the query is
// evaluated whole, as without the cache.

const (
	hourMs = 60 * 60 * 1000
	dayMs  = 24 * hourMs
)

// cachePlan is a cacheable range query split into pieces: days, and the
// hours of today.
type cachePlan struct {
	expr   parser.Expr
	query  string // the expression as the parser prints it
	step   int64  // ms
	pieces []piece
	levels bool // reads counter levels (see readsLevels)
}

// storeWindow widens the data range a piece reads: the series store
// selects series, and reads them, by two-hour windows aligned to the
// epoch, so a write in the window of the range's end, or up to a window
// before the window of its start, can change which series it returns.
const storeWindow = 2 * hourMs

// readsLevels reports whether expr reads a counter's level rather than
// only its changes: a selector outside rate(), increase(), delta(),
// irate() and idelta(). A proxy_* series is the running sum of its
// increments, so its level at any time changes with a late increment
// before it, however long before: such a piece reads all the data before
// it.
func readsLevels(expr parser.Expr) bool {
	levels := false
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		if _, ok := n.(*parser.VectorSelector); !ok || levels {
			return nil
		}
		if len(path) >= 2 {
			if _, ok := path[len(path)-1].(*parser.MatrixSelector); ok {
				if c, ok := path[len(path)-2].(*parser.Call); ok {
					switch c.Func.Name {
					case "rate", "increase", "delta", "irate", "idelta":
						return nil
					}
				}
			}
		}
		levels = true
		return nil
	})
	return levels
}

// piece is one day or hour of a plan: the grid times from start to end (ms,
// inclusive), the data range their evaluation reads, and whether it may
// be cached.
type piece struct {
	key              cacheKey
	start, end       int64
	dataMin, dataMax int64
	cacheable        bool
}

// planCached splits req into pieces, or says that it is not to be cached.
func (a *API) planCached(req Request, expr parser.Expr) (*cachePlan, bool) {
	if req.Step%time.Millisecond != 0 || req.Step > 24*time.Hour ||
		req.Start.Nanosecond()%int(time.Millisecond) != 0 || req.End.Nanosecond()%int(time.Millisecond) != 0 {
		return nil, false
	}
	if !splittable(expr) {
		return nil, false
	}
	lookback := req.LookbackDelta
	if lookback == 0 {
		lookback = a.cfg.LookbackDelta
	}
	step := req.Step.Milliseconds()
	start, end := req.Start.UnixMilli(), req.End.UnixMilli()
	now := a.now().UnixMilli()
	p := &cachePlan{expr: expr, query: expr.String(), step: step, levels: readsLevels(expr)}
	key := cacheKey{query: p.query, stepMs: step, phaseMs: mod(start, step), lookbackMs: lookback.Milliseconds(), raw: req.RawData}
	for d := floorDiv(start, dayMs); d <= floorDiv(end, dayMs); d++ {
		width := int64(dayMs)
		if (d+1)*dayMs > now {
			width = hourMs // today: its past hours can be cached
		}
		for from := d * dayMs; from < (d+1)*dayMs && from <= end; from += width {
			lo, hi := max(start, from), min(end, from+width-1)
			ps := start + ceilDiv(lo-start, step)*step
			pe := start + floorDiv(hi-start, step)*step
			if ps > pe {
				continue // no evaluation time in this piece
			}
			dmin, dmax := promql.FindMinMaxTime(&parser.EvalStmt{Expr: expr, Start: time.UnixMilli(ps), End: time.UnixMilli(pe),
				Interval: req.Step, LookbackDelta: lookback})
			key.from, key.width = from, width
			pc := piece{key: key, start: ps, end: pe, dataMin: dmin - 2*storeWindow, dataMax: floorDiv(dmax, storeWindow)*storeWindow + storeWindow - 1,
				cacheable: from+width <= now && dmax <= now}
			if p.levels {
				pc.dataMin = math.MinInt64
			}
			p.pieces = append(p.pieces, pc)
		}
	}
	return p, len(p.pieces) > 0
}

// splittable reports whether expr's steps evaluate the same in a range
// query of any start and end: it has no @ modifier, no start() or end(),
// no sort function (whose warning depends on the range having more than
// one step) and no subquery. A subquery's steps are aligned to absolute time, but
// the engine tells the store the subquery's step with the outer query's
// start (storage.SelectHints), and the series store places the exact
// window boundaries of rate(), increase() and delta() on that grid (see
// pebblestore's boundaries): the answer then depends on the query's
// start, and a split would change it.
func splittable(expr parser.Expr) bool {
	ok := true
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			ok = ok && n.Timestamp == nil && n.StartOrEnd == 0
		case *parser.SubqueryExpr:
			ok = false
		case *parser.Call:
			// The engine warns that these are ineffective in a range
			// query, but not in a piece of one step.
			switch n.Func.Name {
			case "sort", "sort_desc", "sort_by_label", "sort_by_label_desc":
				ok = false
			}
		}
		return nil
	})
	return ok
}

// execCached answers req piece by piece from the cache, evaluating the
// pieces it lacks one by one. The configured timeout bounds the
// whole; a failing run fails the query.
func (a *API) execCached(ctx context.Context, req Request, p *cachePlan) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	parts := make([]promql.Matrix, len(p.pieces))
	have := make([]bool, len(p.pieces))
	entries := make([]*cacheEntry, len(p.pieces))
	for i, pc := range p.pieces {
		if pc.cacheable {
			if e, ok := a.cache.get(pc.key, pc.start, pc.end); ok {
				parts[i], have[i], entries[i] = viewRange(e.mat, pc.start, pc.end), true, e
			}
		}
	}
	fps := make([]fingerprint, len(p.pieces))
	for i := range p.pieces {
		if have[i] {
			fps[i] = entries[i].fp
		}
	}
	var warnings annotations.Annotations
	for i := range p.pieces {
		if have[i] {
			continue
		}
		w, err := a.runPiece(ctx, req, p, i, parts, fps)
		warnings = warnings.Merge(w)
		if err != nil {
			return &Result{Warnings: warnings}, err
		}
	}
	for i := range fps {
		if !fps[i].equal(fps[0]) {
			// The store selected other series for some pieces than for
			// others: one evaluation selects them all for every step (see
			// fingerprint). Answer as it does.
			a.cache.mixed.Inc()
			res, err := a.run(ctx, req, a.queryable, nil)
			if err != nil {
				return res, err
			}
			return res, nil
		}
	}
	out := mergeParts(parts)
	if out.TotalSamples() > a.cfg.MaxSamples {
		// One evaluation would have held them all at once.
		return &Result{Warnings: warnings}, engineError(promql.ErrTooManySamples("query execution"))
	}
	return &Result{Value: out, Warnings: warnings}, nil
}

// runPiece evaluates piece i of p alone, puts its answer in parts[i] and
// the fingerprint of the series the store selected for it in fps[i], and
// caches it if it may be cached and carries no warnings.
func (a *API) runPiece(ctx context.Context, req Request, p *cachePlan, i int, parts []promql.Matrix, fps []fingerprint) (annotations.Annotations, error) {
	pc := p.pieces[i]
	epoch := a.cache.changes.Epoch() // before the evaluation reads anything
	sub := req
	sub.Start, sub.End = time.UnixMilli(pc.start).UTC(), time.UnixMilli(pc.end).UTC()
	rec := &recorder{}
	res, err := a.run(ctx, sub, recordingQueryable{Queryable: a.queryable, rec: rec}, nil)
	if err != nil {
		res.Close()
		return res.Warnings, err
	}
	defer res.Close()
	mat, ok := res.Value.(promql.Matrix)
	if !ok {
		return res.Warnings, engineError(fmt.Errorf("range query returned a %s", res.Value.Type()))
	}
	parts[i], fps[i] = copyRange(mat, pc.start, pc.end), rec.fingerprint()
	if pc.cacheable && len(res.Warnings) == 0 {
		a.cache.put(&cacheEntry{key: pc.key, start: pc.start, end: pc.end, dataMin: pc.dataMin, dataMax: pc.dataMax,
			epoch: epoch, mat: parts[i], fp: fps[i]})
	}
	return res.Warnings, nil
}

// copyRange copies the points of m from start to end (ms, inclusive),
// leaving out series without any: the engine reuses m's memory once its
// query is closed.
func copyRange(m promql.Matrix, start, end int64) promql.Matrix {
	out := make(promql.Matrix, 0, len(m))
	for _, s := range m {
		fs := sliceFloats(s.Floats, start, end)
		hs := sliceHistograms(s.Histograms, start, end)
		if len(fs) == 0 && len(hs) == 0 {
			continue
		}
		c := promql.Series{Metric: s.Metric, DropName: s.DropName}
		if len(fs) > 0 {
			c.Floats = append(make([]promql.FPoint, 0, len(fs)), fs...)
		}
		if len(hs) > 0 {
			c.Histograms = make([]promql.HPoint, len(hs))
			for i, h := range hs {
				c.Histograms[i] = promql.HPoint{T: h.T, H: h.H.Copy()}
			}
		}
		out = append(out, c)
	}
	return out
}

// viewRange is copyRange without the copy: its series share m's points.
func viewRange(m promql.Matrix, start, end int64) promql.Matrix {
	out := make(promql.Matrix, 0, len(m))
	for _, s := range m {
		fs := sliceFloats(s.Floats, start, end)
		hs := sliceHistograms(s.Histograms, start, end)
		if len(fs) > 0 || len(hs) > 0 {
			out = append(out, promql.Series{Metric: s.Metric, DropName: s.DropName, Floats: fs, Histograms: hs})
		}
	}
	return out
}

func sliceFloats(ps []promql.FPoint, start, end int64) []promql.FPoint {
	i := sort.Search(len(ps), func(i int) bool { return ps[i].T >= start })
	j := sort.Search(len(ps), func(i int) bool { return ps[i].T > end })
	return ps[i:j]
}

func sliceHistograms(ps []promql.HPoint, start, end int64) []promql.HPoint {
	i := sort.Search(len(ps), func(i int) bool { return ps[i].T >= start })
	j := sort.Search(len(ps), func(i int) bool { return ps[i].T > end })
	return ps[i:j]
}

// mergeParts joins pieces' matrices, in time order, into one matrix
// sorted by labels, as the engine returns a range query's: a series'
// points are its points of each piece, one piece after the other. The parts are read,
// never changed (cached ones are shared).
func mergeParts(parts []promql.Matrix) promql.Matrix {
	out := make(promql.Matrix, 0)
	byHash := map[uint64][]int{}
	var floats, hists []int // points per output series
	at := make([][]int, len(parts))
	for p, part := range parts {
		at[p] = make([]int, len(part))
		for i, s := range part {
			h := s.Metric.Hash()
			idx := -1
			for _, k := range byHash[h] {
				if labels.Equal(out[k].Metric, s.Metric) {
					idx = k
					break
				}
			}
			if idx < 0 {
				idx = len(out)
				byHash[h] = append(byHash[h], idx)
				out = append(out, promql.Series{Metric: s.Metric, DropName: s.DropName})
				floats, hists = append(floats, 0), append(hists, 0)
			}
			at[p][i] = idx
			floats[idx] += len(s.Floats)
			hists[idx] += len(s.Histograms)
		}
	}
	for i := range out {
		if floats[i] > 0 {
			out[i].Floats = make([]promql.FPoint, 0, floats[i])
		}
		if hists[i] > 0 {
			out[i].Histograms = make([]promql.HPoint, 0, hists[i])
		}
	}
	for p, part := range parts {
		for i, s := range part {
			o := &out[at[p][i]]
			o.Floats = append(o.Floats, s.Floats...)
			o.Histograms = append(o.Histograms, s.Histograms...)
		}
	}
	sort.Sort(out)
	return out
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }
