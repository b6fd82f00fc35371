package otelanalytics

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestValueInt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		v      Value
		want   int64
		wantOK bool
	}{
		{name: "int", v: IntValue(-42), want: -42, wantOK: true},
		{name: "max int", v: IntValue(math.MaxInt64), want: math.MaxInt64, wantOK: true},
		{name: "integral double", v: DoubleValue(7), want: 7, wantOK: true},
		{name: "negative double", v: DoubleValue(-3), want: -3, wantOK: true},
		{name: "fractional double", v: DoubleValue(7.25)},
		{name: "infinite double", v: DoubleValue(math.Inf(1))},
		{name: "NaN", v: DoubleValue(math.NaN())},
		{name: "decimal string", v: StringValue("123"), want: 123, wantOK: true},
		{name: "signed string", v: StringValue("-5"), want: -5, wantOK: true},
		{name: "hex string", v: StringValue("0x10")},
		{name: "float string", v: StringValue("1.0")},
		{name: "empty string", v: StringValue("")},
		{name: "overflowing string", v: StringValue("9223372036854775808")},
		{name: "bool", v: Value{Kind: KindBool, Int: 1}},
		{name: "other", v: Value{Kind: KindOther, Int: 1}},
		{name: "empty", v: Value{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.v.int()
			require.Equal(t, tc.wantOK, ok)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestValueConstructors(t *testing.T) {
	require.Equal(t, Value{Kind: KindString, Str: "x"}, StringValue("x"))
	require.Equal(t, Value{Kind: KindInt, Int: 3}, IntValue(3))
	require.Equal(t, Value{Kind: KindDouble, Float: 2.5}, DoubleValue(2.5))

	s, ok := StringValue("abc").str()
	require.True(t, ok)
	require.Equal(t, "abc", s)
	_, ok = IntValue(1).str()
	require.False(t, ok)
}

func TestStatusText(t *testing.T) {
	for code, want := range map[uint16]string{100: "100", 404: "404", 599: "599", 600: "600", 65535: "65535"} {
		require.Equal(t, want, statusText(code))
	}
}

func TestRecordOutcome(t *testing.T) {
	require.Equal(t, "success", (&Record{Success: true}).Outcome())
	require.Equal(t, "failure", (&Record{Success: false}).Outcome())
	require.Equal(t, OutcomeSuccess, (&Record{Success: true}).Outcome())
	require.Equal(t, OutcomeFailure, (&Record{}).Outcome())
}

func TestRecordTime(t *testing.T) {
	r := Record{EndTime: mtNow.UnixNano() + 123}
	require.Equal(t, mtNow.Add(123), r.Time())
	require.Equal(t, time.Unix(0, 0).UTC(), (&Record{}).Time())
}

func TestMethodStringAndValid(t *testing.T) {
	for _, tc := range []struct {
		m         Method
		want      string
		wantValid bool
	}{
		{MethodNone, "", true},
		{MethodOther, "_OTHER", true},
		{MethodConnect, "CONNECT", true},
		{MethodDelete, "DELETE", true},
		{MethodGet, "GET", true},
		{MethodHead, "HEAD", true},
		{MethodOptions, "OPTIONS", true},
		{MethodPatch, "PATCH", true},
		{MethodPost, "POST", true},
		{MethodPut, "PUT", true},
		{MethodTrace, "TRACE", true},
		{MethodQuery, "QUERY", true},
		{numMethods, "_OTHER", false},
		{Method(200), "_OTHER", false},
		{Method(255), "_OTHER", false},
	} {
		t.Run(tc.want, func(t *testing.T) {
			require.Equal(t, tc.want, tc.m.String())
			require.Equal(t, tc.wantValid, tc.m.Valid())
		})
	}
}

func TestParseMethod(t *testing.T) {
	known := map[string]Method{
		"CONNECT": MethodConnect,
		"DELETE":  MethodDelete,
		"GET":     MethodGet,
		"HEAD":    MethodHead,
		"OPTIONS": MethodOptions,
		"PATCH":   MethodPatch,
		"POST":    MethodPost,
		"PUT":     MethodPut,
		"TRACE":   MethodTrace,
		"QUERY":   MethodQuery,
	}
	for name, want := range known {
		t.Run(name, func(t *testing.T) {
			mixed := []byte(strings.ToLower(name))
			for i := 0; i < len(mixed); i += 2 {
				mixed[i] -= 'a' - 'A'
			}
			for _, s := range []string{name, strings.ToLower(name), string(mixed)} {
				got := ParseMethod(s)
				require.Equal(t, want, got, "ParseMethod(%q)", s)
				require.Equal(t, name, got.String(), "the label is upper case")
			}
		})
	}
	for _, tc := range []struct {
		in   string
		want Method
	}{
		{"", MethodNone},
		{"_OTHER", MethodOther},
		{"PROPFIND", MethodOther},
		{"CONNECTX", MethodOther},
		{"GETS", MethodOther},
		{"GE", MethodOther},
		{" GET", MethodOther},
		{"GET ", MethodOther},
		{"G\x00T", MethodOther},
		{"GÉT", MethodOther},
		{"ＧＥＴ", MethodOther},
		{"\xff", MethodOther},
		{strings.Repeat("GET", 100), MethodOther},
	} {
		t.Run("other/"+tc.in, func(t *testing.T) {
			require.Equal(t, tc.want, ParseMethod(tc.in))
		})
	}
}
