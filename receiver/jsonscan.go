package receiver

import "fmt"

// maxJSONDepth bounds the nesting of an OTLP/JSON request: objects and
// arrays inside each other. The request's own structure takes about 10
// levels down to an attribute's value (resourceSpans, scopeSpans, spans,
// attributes, value) and each nested arrayValue or kvlistValue 3 or 4
// more, so it leaves room for about a dozen levels of nested attribute
// values, far more than real traffic has. OTLP/JSON's parser recurses
// without a bound, which is what a deeper body would exploit.
const maxJSONDepth = 64

// checkJSON refuses, before parsing, an OTLP/JSON body that nests deeper
// than maxJSONDepth or has anything but white space after its top-level
// value. It scans the body once, skipping strings; anything else malformed
// is left to the parser.
func checkJSON(b []byte) error {
	depth := 0
	i := 0
	// Skip to the top-level value and through it.
	for ; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			j := skipString(b, i+1)
			if j < 0 {
				return nil // unterminated: the parser says so
			}
			i = j
		case '{', '[':
			depth++
			if depth > maxJSONDepth {
				return fmt.Errorf("%w: JSON nested more than %d levels deep", errMalformed, maxJSONDepth)
			}
		case '}', ']':
			depth--
			if depth < 0 {
				return nil // unbalanced: the parser says so
			}
			if depth == 0 {
				return trailing(b[i+1:])
			}
		case ' ', '\t', '\n', '\r':
		default:
			if depth == 0 {
				return nil // not an object: the parser says so
			}
		}
	}
	return nil
}

// skipString returns the index of the quote that ends the string whose
// content starts at b[i], or -1.
func skipString(b []byte, i int) int {
	for ; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

func trailing(rest []byte) error {
	for _, c := range rest {
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			return fmt.Errorf("%w: trailing data after the request object", errMalformed)
		}
	}
	return nil
}
