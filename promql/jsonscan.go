package promql

// A minimal walk over the JSON of an upstream's answer, for what the
// proxy needs of an answer it passes on unchanged: the envelope's status
// and how many results it holds (for the audit log). Decoding a large
// answer with encoding/json to learn that costs several times what
// forwarding it does; these functions look at each byte once and
// allocate nothing. They never fail on bad input: a malformed answer
// reads as not found, and is then decoded with encoding/json, which
// says what is wrong.

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that starts at b[i]
// (a quote), or -1 if it does not end.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the value that starts at b[i], or
// -1 if it does not end.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				if i = skipString(b, i); i < 0 {
					return -1
				}
				i--
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	for ; i < len(b); i++ { // a number, true, false or null
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return i
}

// objectValue returns the index of the value of key in the object that
// starts at b[i], or -1 if there is none (or b[i] is not an object).
func objectValue(b []byte, i int, key string) int {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '{' {
		return -1
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return -1
	}
	for i < len(b) && b[i] == '"' {
		end := skipString(b, i)
		if end < 0 {
			return -1
		}
		k := b[i+1 : end-1]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return -1
		}
		v := skipSpace(b, i+1)
		if string(k) == key {
			return v
		}
		if i = skipValue(b, v); i < 0 {
			return -1
		}
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ',' {
			return -1
		}
		i = skipSpace(b, i+1)
	}
	return -1
}

// stringValue returns the plain ASCII string (no escapes) that starts
// at b[i]: the status and result types are such.
func stringValue(b []byte, i int) (string, bool) {
	if i < 0 || i >= len(b) || b[i] != '"' {
		return "", false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '\\' || c >= 0x80 || c < 0x20:
			return "", false
		case c == '"':
			return string(b[i+1 : j]), true
		}
	}
	return "", false
}

// elements returns how many elements the array, or members the object,
// that starts at b[i] holds, or -1 if it is neither or does not end.
func elements(b []byte, i int) int {
	if i < 0 || i >= len(b) || (b[i] != '[' && b[i] != '{') {
		return -1
	}
	obj := b[i] == '{'
	i = skipSpace(b, i+1)
	if i < len(b) && (b[i] == ']' || b[i] == '}') {
		return 0
	}
	n := 0
	for i < len(b) {
		if obj {
			if b[i] != '"' {
				return -1
			}
			end := skipString(b, i)
			if end < 0 {
				return -1
			}
			i = skipSpace(b, end)
			if i >= len(b) || b[i] != ':' {
				return -1
			}
			i = skipSpace(b, i+1)
		}
		if i = skipValue(b, i); i < 0 {
			return -1
		}
		n++
		i = skipSpace(b, i)
		if i >= len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']', '}':
			return n
		default:
			return -1
		}
	}
	return -1
}

// answerStatus returns the envelope's status, if the answer is a JSON
// object with a plain string status.
func answerStatus(b []byte) (string, bool) {
	return stringValue(b, objectValue(b, 0, "status"))
}

// answerCount returns how many series, samples, names or metric
// families the envelope's data holds: the elements of data.result for
// a query (1 for a scalar or string), of data for a list, the members
// of data for metadata. -1 if the answer has none of these shapes.
func answerCount(b []byte) int {
	d := objectValue(b, 0, "data")
	if d < 0 || d >= len(b) {
		return -1
	}
	if b[d] == '[' {
		return elements(b, d)
	}
	rtAt := objectValue(b, d, "resultType")
	if rtAt < 0 || rtAt >= len(b) || b[rtAt] != '"' {
		return elements(b, d) // metadata: metric families
	}
	if rt, _ := stringValue(b, rtAt); rt == "matrix" || rt == "vector" {
		return elements(b, objectValue(b, d, "result"))
	}
	return 1
}
