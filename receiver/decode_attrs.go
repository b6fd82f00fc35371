package receiver

import (
	"math"

	"github.com/proxylens/proxylens/otelanalytics"
)

// attribute hands one attribute, a KeyValue, to the mapper to set in attrs.
func (d *decoder) attribute(src []byte, attrs *otelanalytics.SpanAttrs) error {
	key, val, ok := plainKeyValue(src)
	if !ok {
		var err error
		if key, val, err = keyValue(src, 0); err != nil {
			return err
		}
	}
	d.m.SetAttr(attrs, key, val)
	return nil
}

// keyValue decodes an attribute nested depth values deep (0 for the
// attributes of a resource, scope, span, event or link), as pdata counts
// nesting for its recursion limit. The key aliases src.
//
//	message KeyValue {
//	  string key = 1;
//	  AnyValue value = 2;
//	  int32 key_strindex = 3;
//	}
func keyValue(src []byte, depth int) (key string, val otelanalytics.Value, err error) {
	if depth >= recursionLimit {
		return "", otelanalytics.Value{}, errRecursionDepth
	}
	depth++
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return "", otelanalytics.Value{}, err
		}
		switch f.num {
		case 1:
			b, ok := f.bytes()
			if !ok {
				return "", otelanalytics.Value{}, f.wrongType("KeyValue", "key")
			}
			key = str(b)
		case 2:
			b, ok := f.bytes()
			if !ok {
				return "", otelanalytics.Value{}, f.wrongType("KeyValue", "value")
			}
			if err := anyValue(b, &val, depth); err != nil {
				return "", otelanalytics.Value{}, err
			}
		case 3:
			if _, ok := f.varint(); !ok {
				return "", otelanalytics.Value{}, f.wrongType("KeyValue", "key_strindex")
			}
		}
	}
	return key, val, nil
}

// plainKeyValue reads the layouts senders write, a key and a value that
// holds exactly one string or int, in one pass: the key first (the SDKs,
// which marshal with google.golang.org/protobuf) or the value first (the
// Collector and anything else built on pdata, whose marshaler writes
// fields backwards). Anything else, including any malformation, reports
// !ok and goes through keyValue, which gives the same result for these
// layouts.
func plainKeyValue(buf []byte) (string, otelanalytics.Value, bool) {
	if len(buf) < 4 {
		return "", otelanalytics.Value{}, false
	}
	var kstart, kend, vstart, vend int
	var err error
	switch buf[0] {
	case 0x0a: // key (field 1, length-delimited), then value (field 2)
		if kstart, kend, err = consumeLen(buf, 1); err != nil || kend >= len(buf) || buf[kend] != 0x12 {
			return "", otelanalytics.Value{}, false
		}
		if vstart, vend, err = consumeLen(buf, kend+1); err != nil || vend != len(buf) {
			return "", otelanalytics.Value{}, false
		}
	case 0x12: // value, then key
		if vstart, vend, err = consumeLen(buf, 1); err != nil || vend >= len(buf) || buf[vend] != 0x0a {
			return "", otelanalytics.Value{}, false
		}
		if kstart, kend, err = consumeLen(buf, vend+1); err != nil || kend != len(buf) {
			return "", otelanalytics.Value{}, false
		}
	default:
		return "", otelanalytics.Value{}, false
	}
	if vstart == vend {
		return "", otelanalytics.Value{}, false
	}
	v := buf[vstart:vend]
	switch v[0] {
	case 0x0a: // string_value
		if s, e, err := consumeLen(v, 1); err == nil && e == len(v) {
			return strAt(buf, kstart, kend), otelanalytics.Value{Kind: otelanalytics.KindString, Str: strAt(v, s, e)}, true
		}
	case 0x18: // int_value
		if n, e, err := consumeVarint(v, 1); err == nil && e == len(v) {
			return strAt(buf, kstart, kend), otelanalytics.Value{Kind: otelanalytics.KindInt, Int: int64(n)}, true
		}
	}
	return "", otelanalytics.Value{}, false
}

// anyValue decodes an attribute value into v; repeated value fields merge
// as pdata merges them: the last one set wins. Arrays, maps, bytes and
// string table indexes are validated and reported as KindOther.
//
//	message AnyValue {
//	  oneof value {
//	    string string_value = 1;
//	    bool bool_value = 2;
//	    int64 int_value = 3;
//	    double double_value = 4;
//	    ArrayValue array_value = 5;
//	    KeyValueList kvlist_value = 6;
//	    bytes bytes_value = 7;
//	    int32 string_value_strindex = 8;
//	  }
//	}
func anyValue(src []byte, v *otelanalytics.Value, depth int) (err error) {
	if depth >= recursionLimit {
		return errRecursionDepth
	}
	depth++
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("AnyValue", "string_value")
			}
			*v = otelanalytics.Value{Kind: otelanalytics.KindString, Str: str(b)}
		case 2:
			n, ok := f.varint()
			if !ok {
				return f.wrongType("AnyValue", "bool_value")
			}
			*v = otelanalytics.Value{Kind: otelanalytics.KindBool}
			if n != 0 {
				v.Int = 1
			}
		case 3:
			n, ok := f.varint()
			if !ok {
				return f.wrongType("AnyValue", "int_value")
			}
			*v = otelanalytics.Value{Kind: otelanalytics.KindInt, Int: int64(n)}
		case 4:
			n, ok := f.fixed64()
			if !ok {
				return f.wrongType("AnyValue", "double_value")
			}
			*v = otelanalytics.Value{Kind: otelanalytics.KindDouble, Float: math.Float64frombits(n)}
		case 5:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("AnyValue", "array_value")
			}
			if err := arrayValue(b, depth); err != nil {
				return err
			}
			*v = otelanalytics.Value{Kind: otelanalytics.KindOther}
		case 6:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("AnyValue", "kvlist_value")
			}
			if err := kvList(b, depth); err != nil {
				return err
			}
			*v = otelanalytics.Value{Kind: otelanalytics.KindOther}
		case 7:
			if _, ok := f.bytes(); !ok {
				return f.wrongType("AnyValue", "bytes_value")
			}
			*v = otelanalytics.Value{Kind: otelanalytics.KindOther}
		case 8:
			if _, ok := f.varint(); !ok {
				return f.wrongType("AnyValue", "string_value_strindex")
			}
			*v = otelanalytics.Value{Kind: otelanalytics.KindOther}
		}
	}
	return nil
}

// arrayValue validates an array value, which the mapping does not read.
//
//	message ArrayValue {
//	  repeated AnyValue values = 1;
//	}
func arrayValue(src []byte, depth int) (err error) {
	if depth >= recursionLimit {
		return errRecursionDepth
	}
	depth++
	var scratch otelanalytics.Value
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("ArrayValue", "values")
			}
			if err := anyValue(b, &scratch, depth); err != nil {
				return err
			}
		}
	}
	return nil
}

// kvList validates a map value, which the mapping does not read.
//
//	message KeyValueList {
//	  repeated KeyValue values = 1;
//	}
func kvList(src []byte, depth int) (err error) {
	if depth >= recursionLimit {
		return errRecursionDepth
	}
	depth++
	var f field
	for len(src) > 0 {
		if src, err = f.next(src); err != nil {
			return err
		}
		switch f.num {
		case 1:
			b, ok := f.bytes()
			if !ok {
				return f.wrongType("KeyValueList", "values")
			}
			if _, _, err := keyValue(b, depth); err != nil {
				return err
			}
		}
	}
	return nil
}
