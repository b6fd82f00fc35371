package promql

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

// subqueryPointsPerSample bounds, as a multiple of MaxSamples, the points a
// range function may visit for one series of a subquery; see preflight.
const subqueryPointsPerSample = 20

// preflight refuses, before the engine starts, what its limits would not
// stop in time:
//
//   - a query covering more than MaxQueryLength: its evaluation span plus
//     the longest reach of its selectors back in time (ranges, offsets, the
//     lookback, and the ranges and offsets of the subqueries around them);
//   - a subquery of more steps than MaxSamples: the engine evaluates a
//     step-invariant subquery's steps before it counts their samples, so
//     [30d:1ms] would run for minutes and take gigabytes first;
//   - a range function over a subquery that would visit more than
//     20 × MaxSamples points for one series: the engine checks the timeout
//     between series but not between the steps of one series, so
//     max_over_time(max_over_time(x[1d:1s])[7d:1s]) would run for minutes
//     past any timeout.
//
// span is the evaluation range (end − start) and step the resolution of a
// range query; both are 0 for an instant query.
func (a *API) preflight(expr parser.Expr, span, step time.Duration) *apiError {
	var aerr *apiError
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		// The subqueries around n, innermost last, set how far back n
		// reaches and at how many steps n is evaluated.
		var around time.Duration
		steps := int64(1)
		if step > 0 {
			steps = int64(span/step) + 1
		}
		for _, p := range path {
			if sq, ok := p.(*parser.SubqueryExpr); ok {
				around += sq.Range + sq.OriginalOffset
				steps = int64((span+around)/subqueryStep(sq)) + 1
			}
		}
		var reach time.Duration
		switch n := n.(type) {
		case *parser.MatrixSelector:
			reach = n.Range + offsetOf(n.VectorSelector)
		case *parser.VectorSelector:
			reach = a.cfg.LookbackDelta + n.OriginalOffset
		case *parser.SubqueryExpr:
			evaluated := int64((span+around+n.Range)/subqueryStep(n)) + 1
			if evaluated > int64(a.cfg.MaxSamples) {
				aerr = &apiError{typ: errorExec, err: fmt.Errorf("the subquery %s would be evaluated at %s steps, more than the %s samples a query may load; use a longer subquery step",
					n, thousands(evaluated), thousands(int64(a.cfg.MaxSamples)))}
				return aerr
			}
		case *parser.Call:
			for _, arg := range n.Args {
				sq, ok := unparen(arg).(*parser.SubqueryExpr)
				if !ok {
					continue
				}
				window := int64(sq.Range / subqueryStep(sq))
				limit := subqueryPointsPerSample * int64(a.cfg.MaxSamples)
				if window > 0 && steps > limit/window {
					aerr = &apiError{typ: errorExec, err: fmt.Errorf("%s over the subquery %s would visit %s points per series, more than %s (%d × the samples a query may load); use a longer subquery step or a shorter range",
						n.Func.Name, sq, thousands(steps*window), thousands(limit), subqueryPointsPerSample)}
					return aerr
				}
			}
		}
		if a.cfg.MaxQueryLength > 0 && span+around+reach > a.cfg.MaxQueryLength {
			aerr = badData("the query covers %s, more than the limit of %s", model.Duration(span+around+reach), model.Duration(a.cfg.MaxQueryLength))
			return aerr
		}
		return nil
	})
	return aerr
}

func subqueryStep(sq *parser.SubqueryExpr) time.Duration {
	if sq.Step > 0 {
		return sq.Step
	}
	return time.Duration(noStepInterval(0)) * time.Millisecond
}

func unparen(e parser.Expr) parser.Expr {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			return e
		}
		e = p.Expr
	}
}

// noStepInterval is the step of a subquery without one, as Prometheus'
// default evaluation interval.
func noStepInterval(int64) int64 { return time.Minute.Milliseconds() }

func offsetOf(e parser.Expr) time.Duration {
	if vs, ok := e.(*parser.VectorSelector); ok {
		return vs.OriginalOffset
	}
	return 0
}

func thousands[T int | int64](n T) string {
	s := strconv.FormatInt(int64(n), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// gate is the engine's query tracker: it bounds concurrent queries, and
// the others wait for a slot until their context ends.
type gate struct{ slots chan struct{} }

func newGate(n int) *gate { return &gate{slots: make(chan struct{}, n)} }

func (g *gate) GetMaxConcurrent() int { return cap(g.slots) }

func (g *gate) Insert(ctx context.Context, _ string) (int, error) {
	select {
	case g.slots <- struct{}{}:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (g *gate) Delete(int) { <-g.slots }

func (g *gate) Close() error { return nil }
