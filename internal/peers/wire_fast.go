package peers

import (
	"encoding/hex"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/proxylens/proxylens/otelanalytics"
)

// The fast path of decodeLine: a record line exactly as AppendRecord
// writes it (its keys in its order, strings without escapes, numbers as
// strconv formats them) is read without encoding/json, its repeating
// strings interned; anything else, escapes, another key order, an end or
// error line, goes to encoding/json. The fast path only accepts what
// encoding/json reads the same way (FuzzDecodeLine holds it to that).
// encoding/json cost 85% of a merged record's time.

// maxInterned bounds the strings a stream interns.
const maxInterned = 4096

// interner returns one string for repeated byte slices, up to
// maxInterned of them; a map lookup by string(b) does not allocate.
type interner map[string]string

func (in interner) get(b []byte) string {
	if s, ok := in[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in) < maxInterned {
		in[s] = s
	}
	return s
}

// fastLine is a cursor over one line.
type fastLine struct {
	b  []byte
	i  int
	ok bool
}

func (p *fastLine) lit(s string) {
	if !p.ok || len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		p.ok = false
		return
	}
	p.i += len(s)
}

// number returns the bytes of a JSON number at the cursor, or nil.
func (p *fastLine) number() []byte {
	if !p.ok {
		return nil
	}
	b, i := p.b, p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digitsEnd(b, i)
	default:
		p.ok = false
		return nil
	}
	if i < len(b) && b[i] == '.' {
		j := digitsEnd(b, i+1)
		if j == i+1 {
			p.ok = false
			return nil
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digitsEnd(b, i)
		if j == i {
			p.ok = false
			return nil
		}
		i = j
	}
	n := b[p.i:i]
	p.i = i
	return n
}

// digitsEnd returns the index after the decimal digits at b[i:].
func digitsEnd(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// uint reads a JSON integer that fits in max (no sign, fraction or
// exponent; those go to encoding/json).
func (p *fastLine) uint(max uint64) uint64 {
	n := p.number()
	if !p.ok || len(n) == 0 || len(n) > 20 {
		p.ok = false
		return 0
	}
	var v uint64
	for _, c := range n {
		if c < '0' || c > '9' {
			p.ok = false
			return 0
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			p.ok = false
			return 0
		}
		v = v*10 + d
	}
	if v > max {
		p.ok = false
		return 0
	}
	return v
}

func (p *fastLine) int() int64 {
	neg := p.ok && p.i < len(p.b) && p.b[p.i] == '-'
	if neg {
		p.i++
	}
	v := p.uint(math.MaxInt64)
	if neg {
		return -int64(v)
	}
	return int64(v)
}

// str reads a string without escapes or control characters, valid UTF-8.
func (p *fastLine) str() []byte {
	p.lit(`"`)
	if !p.ok {
		return nil
	}
	j := p.i
	ascii := true
	for ; j < len(p.b); j++ {
		c := p.b[j]
		if c == '"' {
			break
		}
		if c == '\\' || c < 0x20 {
			p.ok = false
			return nil
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if j == len(p.b) || (!ascii && !utf8.Valid(p.b[p.i:j])) {
		p.ok = false
		return nil
	}
	s := p.b[p.i:j]
	p.i = j + 1
	return s
}

// fastRecord reads a record line as AppendRecord writes it into r; false
// leaves r undefined and the line to encoding/json.
func fastRecord(line []byte, r *otelanalytics.Record, in interner) bool {
	p := fastLine{b: line, ok: true}
	p.lit(`{"t":`)
	r.EndTime = p.int()
	p.lit(`,"d":`)
	r.Duration = p.int()
	for _, f := range [...]struct {
		key string
		dst *string
	}{
		{`,"source":`, &r.Source}, {`,"tier":`, &r.Tier}, {`,"proxy":`, &r.Proxy},
		{`,"application":`, &r.Application}, {`,"domain":`, &r.Domain},
	} {
		p.lit(f.key)
		*f.dst = in.get(p.str())
	}
	p.lit(`,"method":`)
	r.Method = otelanalytics.ParseMethod(string(p.str())) // ParseMethod keeps nothing of it
	p.lit(`,"status_code":`)
	r.StatusCode = uint16(p.uint(math.MaxUint16))
	p.lit(`,"success":`)
	switch {
	case !p.ok:
	case len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "true":
		r.Success, p.i = true, p.i+4
	case len(p.b)-p.i >= 5 && string(p.b[p.i:p.i+5]) == "false":
		r.Success, p.i = false, p.i+5
	default:
		p.ok = false
	}
	p.lit(`,"error_type":`)
	r.ErrorType = in.get(p.str())
	p.lit(`,"bytes_sent":`)
	r.BytesSent = p.uint(math.MaxUint64)
	p.lit(`,"bytes_received":`)
	r.BytesReceived = p.uint(math.MaxUint64)
	p.lit(`,"weight":`)
	if p.ok && len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "null" {
		r.Weight, p.i = 0, p.i+4
	} else if n := p.number(); p.ok {
		w, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			return false // out of range: encoding/json says so
		}
		r.Weight = w
	}
	r.TraceID, r.SpanID = [16]byte{}, [8]byte{}
	if p.ok && len(p.b)-p.i > 12 && string(p.b[p.i:p.i+12]) == `,"trace_id":` {
		p.i += 12
		if h := p.str(); !p.ok || len(h) != 32 || hexInto(r.TraceID[:], h) != nil {
			return false
		}
	}
	if p.ok && len(p.b)-p.i > 11 && string(p.b[p.i:p.i+11]) == `,"span_id":` {
		p.i += 11
		if h := p.str(); !p.ok || len(h) != 16 || hexInto(r.SpanID[:], h) != nil {
			return false
		}
	}
	p.lit("}")
	return p.ok && p.i == len(p.b)
}

func hexInto(dst, src []byte) error {
	_, err := hex.Decode(dst, src)
	return err
}
