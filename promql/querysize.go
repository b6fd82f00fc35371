package promql

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"unsafe"

	"github.com/prometheus/prometheus/promql/parser"
)

// The query's size and nesting, bounded before the parser sees it.
// Prometheus' parser takes time quadratic in the depth of the expression
// tree (a node's position is computed from its children's, down to the
// leaves), and Expr.Pretty, which format_query calls, cubic: 100,000
// nested parentheses parse for tens of seconds, `sum(` × 3,000 formats
// for minutes, and neither can be interrupted by a timeout. scanQuery
// bounds both in one linear pass without allocating more than the depth
// it allows, so that every parse proxylens (and the engine) does of a
// query it accepted is cheap.

// queryShape is what scanQuery measured of a query.
type queryShape struct {
	// depth bounds the depth of the query's expression tree from above:
	// each bracket (`(`, `[`, `{`) is one level, and each operator
	// (binary, unary sign, and the `[` of a range or subquery, which wraps
	// what comes before it) adds a level over the operands beside it. It
	// is exact for a chain of nested brackets or operators, and a few
	// levels more than the tree's depth for most queries (a selector's
	// braces count one).
	depth int
	// deeper is set when the scan stopped at maxDepth open brackets:
	// depth is then a lower bound.
	deeper bool
}

// scanQuery measures q's depth, stopping once more than maxDepth brackets
// are open. Strings (double, single or back quoted) and comments (# to the
// end of the line) are skipped as the lexer skips them. It is the upper
// bound of depth the parser cares about: a query scanQuery measures at
// depth d parses into a tree at most d deep.
func scanQuery(q string, maxDepth int) queryShape {
	// A frame is one open bracket: the operators seen in it so far, and
	// the deepest operand (a leaf, or a closed bracket) in it.
	type frame struct{ ops, child int }
	stack := make([]frame, 1, 16) // stack[0]: the query's top level
	stack[0].child = 1
	closeFrame := func() {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d := 1 + f.ops + f.child
		p := &stack[len(stack)-1]
		p.child = max(p.child, d)
	}
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch c {
		case '"', '\'':
			// A quoted string ends at its quote; a backslash escapes the
			// next byte. A line end ends it too: the lexer refuses the
			// string at \n, and reading on as code only counts more.
			for i++; i < len(q) && q[i] != c && q[i] != '\n' && q[i] != '\r'; i++ {
				if q[i] == '\\' {
					i++
				}
			}
		case '`':
			if j := strings.IndexByte(q[i+1:], '`'); j >= 0 {
				i += j + 1
			} else {
				i = len(q)
			}
		case '#':
			// To the end of the line, \n or \r as the lexer ends it.
			if j := strings.IndexAny(q[i:], "\n\r"); j >= 0 {
				i += j
			} else {
				i = len(q)
			}
		case '[':
			// A range or subquery wraps the operand before it: an
			// operator at this level, then a bracket.
			stack[len(stack)-1].ops++
			fallthrough
		case '(', '{':
			if len(stack) > maxDepth {
				// More brackets open than allowed: the depth is past
				// maxDepth whatever follows.
				return queryShape{depth: len(stack), deeper: true}
			}
			stack = append(stack, frame{child: 1})
		case ')', ']', '}':
			if len(stack) > 1 {
				closeFrame()
			}
		case '+', '-', '*', '/', '%', '^', '<', '>':
			stack[len(stack)-1].ops++
			if i+1 < len(q) && q[i+1] == '=' {
				i++ // <=, >=
			}
		case '=', '!':
			if i+1 < len(q) && q[i+1] == '=' {
				stack[len(stack)-1].ops++ // ==, !=
				i++
			}
		default:
			if !isIdentStart(c) {
				continue
			}
			j := i + 1
			for j < len(q) && isIdentChar(q[j]) {
				j++
			}
			switch w := q[i:j]; {
			case strings.EqualFold(w, "and"), strings.EqualFold(w, "or"), strings.EqualFold(w, "unless"), strings.EqualFold(w, "atan2"):
				stack[len(stack)-1].ops++
			}
			i = j - 1
		}
	}
	for len(stack) > 1 { // unclosed brackets: the parser refuses them
		closeFrame()
	}
	return queryShape{depth: stack[0].ops + stack[0].child}
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdentChar(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == ':' || c == '.'
}

// checkQuerySize refuses q, before anything parses it, when it is longer
// than MaxQueryBytes or nested deeper than MaxQueryDepth. what names the
// parameter in the message ("query", "match[]").
func (a *API) checkQuerySize(what, q string) *apiError {
	if n := len(q); n > a.cfg.MaxQueryBytes {
		a.refused.WithLabelValues("too_long").Inc()
		return badData("invalid parameter %q: %s bytes long, more than the limit of %s bytes (query.max_query_bytes)",
			what, thousands(n), thousands(a.cfg.MaxQueryBytes))
	}
	if s := scanQuery(q, a.cfg.MaxQueryDepth); s.depth > a.cfg.MaxQueryDepth {
		a.refused.WithLabelValues("too_deep").Inc()
		return badData("invalid parameter %q: nested deeper than the limit of %s levels of brackets and operators (query.max_query_depth)",
			what, thousands(a.cfg.MaxQueryDepth))
	}
	return nil
}

// parseQuery parses q after checkQuerySize: the one parse of a query,
// whose tree the preflight, the cache's plan, the store's pushdown and the
// engine share (see handoffParser).
func (a *API) parseQuery(q string) (parser.Expr, *apiError) {
	if aerr := a.checkQuerySize("query", q); aerr != nil {
		return nil, aerr
	}
	expr, err := a.parser.ParseExpr(q)
	if err != nil {
		return nil, badData("invalid parameter %q: %v", "query", err)
	}
	return expr, nil
}

// maxFormatCost bounds the work of format_query's pretty-printing,
// estimated as the sum over the tree's nodes of their depth squared:
// Expr.Pretty prints each node's subtree again at every level above it.
// 20,000,000 is about a tenth of a second here; a dashboard's query costs
// a few thousand, a chain of 256 operators (the depth limit) 5,600,000.
const maxFormatCost = 20_000_000

// formatCost is the estimated work of expr.Pretty (see maxFormatCost),
// counted up to just past maxFormatCost.
func formatCost(expr parser.Expr) int64 {
	var cost int64
	parser.Inspect(expr, func(_ parser.Node, path []parser.Node) error {
		d := int64(len(path) + 1)
		cost += d * d
		if cost > maxFormatCost {
			return errFormatCost
		}
		return nil
	})
	return cost
}

var errFormatCost = errors.New("format cost exceeded")

// handoffParser is the engine's parser. The engine's API takes a query as
// a string and parses it again; run hands it the tree it already parsed
// (and the store rewrote) instead, under the address of a string made for
// that one query, and the engine's ParseExpr of that string takes it.
// Any other string is parsed.
type handoffParser struct {
	parser.Parser
	mu    sync.Mutex
	exprs map[handoffKey]parser.Expr
}

type handoffKey struct {
	p *byte
	n int
}

func newHandoffParser(p parser.Parser) *handoffParser {
	return &handoffParser{Parser: p, exprs: map[handoffKey]parser.Expr{}}
}

// put returns a string equal to q for the engine, whose parse is expr,
// and a function to call once the engine has built its query.
func (h *handoffParser) put(q string, expr parser.Expr) (string, func()) {
	s := strings.Clone(q) // its own address, for this query alone
	if s == "" {
		return s, func() {}
	}
	k := handoffKey{unsafe.StringData(s), len(s)}
	h.mu.Lock()
	h.exprs[k] = expr
	h.mu.Unlock()
	return s, func() {
		h.mu.Lock()
		delete(h.exprs, k)
		h.mu.Unlock()
	}
}

func (h *handoffParser) ParseExpr(q string) (parser.Expr, error) {
	if q != "" {
		k := handoffKey{unsafe.StringData(q), len(q)}
		h.mu.Lock()
		expr, ok := h.exprs[k]
		delete(h.exprs, k)
		h.mu.Unlock()
		if ok {
			return expr, nil
		}
	}
	return h.Parser.ParseExpr(q)
}

// Go's net/http and net/url limits on a request's form, which ParseForm
// enforces: an urlencoded body is read up to 10 MB (unless the server
// bounded it with http.MaxBytesReader), and a URL's query or a body holds
// at most 10,000 parameters.
const (
	maxFormBody   = 10 << 20
	maxFormParams = 10000
)

// formError says what ParseForm refused, naming the limit, rather than
// leaving the handler to find no query or no match[] in what was parsed.
func (a *API) formError(err error) *apiError {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		a.refused.WithLabelValues("body_too_large").Inc()
		return badData("request body too large: at most %s bytes", thousands(mbe.Limit))
	case err.Error() == "http: POST too large":
		a.refused.WithLabelValues("body_too_large").Inc()
		return badData("request body too large: at most 10 MB (%s bytes) of form", thousands(int64(maxFormBody)))
	case strings.Contains(err.Error(), "number of URL query parameters exceeded limit"):
		a.refused.WithLabelValues("too_many_params").Inc()
		return badData("too many parameters (such as match[]): at most %s in the URL and %s in the form body", thousands(maxFormParams), thousands(maxFormParams))
	}
	return badData("error parsing form values: %v", err)
}
