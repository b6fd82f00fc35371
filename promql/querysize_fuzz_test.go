package promql

import (
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// treeDepth is the depth of expr's tree: the nodes on its longest path
// from the root to a leaf.
func treeDepth(expr parser.Expr) int {
	depth := 0
	parser.Inspect(expr, func(_ parser.Node, path []parser.Node) error {
		depth = max(depth, len(path)+1)
		return nil
	})
	return depth
}

// FuzzScanQuery checks the pre-parse bound against the parser: a query
// that parses is never deeper than scanQuery measured, so a query accepted
// at a limit is never deeper than the limit; a scan stopped early is past
// the limit; nothing panics.
func FuzzScanQuery(f *testing.F) {
	for _, q := range []string{
		`sum by (source) (rate(proxy_requests_total{outcome="success"}[5m]))`,
		`histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))`,
		`(a + b)[5m:1m] offset 1h`,
		`max_over_time(sum(x)[1h:])`,
		`a or b unless c and d`,
		`x ^ x ^ x ^ x`,
		`- - -x`,
		`x{a="(((("} + y{b='))'} # ((((` + "\n" + ` + z`,
		"x # (\r + y",
		"`(((` + ((x))",
		strings.Repeat("(", 50) + "1" + strings.Repeat(")", 50),
		strings.Repeat("sum(", 30) + "x" + strings.Repeat(")", 30),
		"x" + strings.Repeat(" + x", 40),
		`1e-3 - 0x1f * -Inf`,
		`a == bool on(x) group_left(y) b`,
		`rate(x[5m:1m] @ start())`,
	} {
		f.Add(q)
	}
	p := parser.NewParser(parser.Options{})
	f.Fuzz(func(t *testing.T, q string) {
		if len(q) > 4096 {
			return // the parser is quadratic in depth: keep each input fast
		}
		s := scanQuery(q, len(q)+1)
		if s.deeper {
			t.Fatalf("stopped early at %d with a limit of %d", s.depth, len(q)+1)
		}
		for _, limit := range []int{1, 4, 16} {
			if ls := scanQuery(q, limit); ls.deeper && ls.depth <= limit {
				t.Fatalf("stopped early at depth %d, within the limit %d", ls.depth, limit)
			} else if !ls.deeper && ls.depth != s.depth {
				t.Fatalf("depth %d at limit %d, %d without", ls.depth, limit, s.depth)
			}
		}
		expr, err := p.ParseExpr(q)
		if err != nil {
			return
		}
		if d := treeDepth(expr); d > s.depth {
			t.Fatalf("%q parses %d deep, scanned as %d", q, d, s.depth)
		}
	})
}

// TestHandoffParser: the engine's parse of the string run made for a
// query is the tree run handed over, once; any other string, equal or
// not, is parsed.
func TestHandoffParser(t *testing.T) {
	h := newHandoffParser(parser.NewParser(parser.Options{}))
	expr := &parser.NumberLiteral{Val: 42}
	q, done := h.put("1 + 1", expr)
	got, err := h.ParseExpr("1 + 1") // equal text, another string
	if err != nil || got == parser.Expr(expr) {
		t.Fatalf("another string equal to the query got the handed tree: %v, %v", got, err)
	}
	if got, err := h.ParseExpr(q); err != nil || got != parser.Expr(expr) {
		t.Fatalf("the query's string parsed to %v, %v, not the handed tree", got, err)
	}
	if got, err := h.ParseExpr(q); err != nil || got == parser.Expr(expr) {
		t.Fatalf("the handed tree was taken twice: %v, %v", got, err)
	}
	done()
	if len(h.exprs) != 0 {
		t.Fatalf("%d trees left behind", len(h.exprs))
	}
}
