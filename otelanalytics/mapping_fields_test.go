package otelanalytics

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMapSource(t *testing.T) {
	long := strings.Repeat("s", 300)
	for _, tc := range []struct {
		name      string
		res, span []mtKV
		want      string
	}{
		{name: "span", span: []mtKV{mtS(AttrProxySource, "dc-eu")}, want: "dc-eu"},
		{name: "resource", res: []mtKV{mtS(AttrProxySource, "resi")}, want: "resi"},
		{name: "span wins", res: []mtKV{mtS(AttrProxySource, "resi")}, span: []mtKV{mtS(AttrProxySource, "dc")}, want: "dc"},
		{name: "absent", span: []mtKV{mtS(AttrProxyURL, "http://p:1")}, want: "unknown"},
		{name: "empty", span: []mtKV{mtS(AttrProxySource, "")}, want: "unknown"},
		{name: "not a string", span: []mtKV{mtI(AttrProxySource, 3)}, want: "unknown"},
		{name: "empty span falls back", res: []mtKV{mtS(AttrProxySource, "resi")}, span: []mtKV{mtS(AttrProxySource, "")}, want: "resi"},
		{name: "case kept", span: []mtKV{mtS(AttrProxySource, "DC-EU")}, want: "DC-EU"},
		{name: "cut", span: []mtKV{mtS(AttrProxySource, long)}, want: long[:256]},
		{name: "invalid UTF-8", span: []mtKV{mtS(AttrProxySource, "dc\xffeu")}, want: "dc\uFFFDeu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, mtMapOK(t, tc.res, tc.span).Source)
		})
	}
}

func TestMapTier(t *testing.T) {
	for _, tc := range []struct {
		name      string
		res, span []mtKV
		want      string
	}{
		{name: "absent", span: mtSelected, want: ""},
		{name: "span", span: mtJoin(mtSelected, []mtKV{mtS(AttrProxyTier, "free")}), want: "free"},
		{name: "lower-cased", span: mtJoin(mtSelected, []mtKV{mtS(AttrProxyTier, "PREMIUM")}), want: "premium"},
		{name: "resource", res: []mtKV{mtS(AttrProxyTier, "Free")}, span: mtSelected, want: "free"},
		{
			name: "span wins",
			res:  []mtKV{mtS(AttrProxyTier, "free")},
			span: mtJoin(mtSelected, []mtKV{mtS(AttrProxyTier, "Premium")}),
			want: "premium",
		},
		{name: "not a string", span: mtJoin(mtSelected, []mtKV{mtI(AttrProxyTier, 1)}), want: ""},
		{name: "invalid UTF-8", span: mtJoin(mtSelected, []mtKV{mtS(AttrProxyTier, "FREE\xc3")}), want: "free\uFFFD"},
		{name: "cut", span: mtJoin(mtSelected, []mtKV{mtS(AttrProxyTier, strings.Repeat("T", 999))}), want: strings.Repeat("t", 256)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, mtMapOK(t, tc.res, tc.span).Tier)
		})
	}
}

func TestMapProxy(t *testing.T) {
	for _, tc := range []struct {
		name      string
		res, span []mtKV
		want      string
	}{
		{name: "absent", span: mtSelected, want: ""},
		{name: "span", span: []mtKV{mtS(AttrProxyURL, "http://10.1.2.3:8080")}, want: "10.1.2.3:8080"},
		{name: "resource", res: []mtKV{mtS(AttrProxyURL, "http://10.1.2.3:8080")}, span: mtSelected, want: "10.1.2.3:8080"},
		{
			name: "span wins",
			res:  []mtKV{mtS(AttrProxyURL, "http://10.9.9.9:1")},
			span: []mtKV{mtS(AttrProxyURL, "http://10.1.2.3:8080")},
			want: "10.1.2.3:8080",
		},
		{name: "credentials stripped", span: []mtKV{mtS(AttrProxyURL, "http://user:pw@10.1.2.3:8080")}, want: "10.1.2.3:8080"},
		{name: "http default port", span: []mtKV{mtS(AttrProxyURL, "http://proxy.example")}, want: "proxy.example:80"},
		{name: "https default port", span: []mtKV{mtS(AttrProxyURL, "https://proxy.example/")}, want: "proxy.example:443"},
		{name: "socks5 default port", span: []mtKV{mtS(AttrProxyURL, "socks5://proxy.example")}, want: "proxy.example:1080"},
		{name: "IPv6", span: []mtKV{mtS(AttrProxyURL, "https://[2001:DB8::1]:8443")}, want: "[2001:db8::1]:8443"},
		{name: "upper case host", span: []mtKV{mtS(AttrProxyURL, "HTTP://Proxy.Example:3128")}, want: "proxy.example:3128"},
		{name: "not a host", span: []mtKV{mtS(AttrProxyURL, "http://proxy.example:port")}, want: ""},
		{name: "not a string", span: []mtKV{mtI(AttrProxyURL, 8080)}, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, mtMapOK(t, tc.res, tc.span).Proxy)
		})
	}
}

func TestMapApplication(t *testing.T) {
	for _, tc := range []struct {
		name      string
		res, span []mtKV
		want      string
	}{
		{name: "absent", span: mtSelected, want: ""},
		{name: "span app.id", span: mtJoin(mtSelected, []mtKV{mtS(AttrAppID, "crawler")}), want: "crawler"},
		{name: "resource app.id", res: []mtKV{mtS(AttrAppID, "crawler")}, span: mtSelected, want: "crawler"},
		{name: "resource service.name", res: []mtKV{mtS(AttrServiceName, "checkout")}, span: mtSelected, want: "checkout"},
		{
			name: "span app.id wins over resource app.id",
			res:  []mtKV{mtS(AttrAppID, "res-app")},
			span: mtJoin(mtSelected, []mtKV{mtS(AttrAppID, "span-app")}),
			want: "span-app",
		},
		{
			name: "span app.id wins over service.name",
			res:  []mtKV{mtS(AttrServiceName, "svc")},
			span: mtJoin(mtSelected, []mtKV{mtS(AttrAppID, "span-app")}),
			want: "span-app",
		},
		{
			name: "resource app.id wins over service.name",
			res:  []mtKV{mtS(AttrServiceName, "svc"), mtS(AttrAppID, "res-app")},
			span: mtSelected,
			want: "res-app",
		},
		{
			name: "span service.name is not an application",
			span: mtJoin(mtSelected, []mtKV{mtS(AttrServiceName, "span-svc")}),
			want: "",
		},
		{name: "case kept", res: []mtKV{mtS(AttrServiceName, "Checkout")}, span: mtSelected, want: "Checkout"},
		{name: "cut", res: []mtKV{mtS(AttrAppID, strings.Repeat("€", 100))}, span: mtSelected, want: strings.Repeat("€", 85)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, mtMapOK(t, tc.res, tc.span).Application)
		})
	}
}

func TestMapDomain(t *testing.T) {
	for _, tc := range []struct {
		name      string
		res, span []mtKV
		want      string
	}{
		{name: "absent", span: mtSelected, want: ""},
		{name: "server.address", span: []mtKV{mtS(AttrServerAddress, "example.com")}, want: "example.com"},
		{name: "url.full", span: []mtKV{mtS(AttrURLFull, "https://example.com/a?b=c")}, want: "example.com"},
		{name: "http.url", span: []mtKV{mtS("http.url", "http://example.com:8080/x")}, want: "example.com"},
		{name: "http.host", span: []mtKV{mtS("http.host", "example.com:8080")}, want: "example.com"},
		{name: "net.peer.name", span: []mtKV{mtS("net.peer.name", "example.com")}, want: "example.com"},
		{
			name: "server.address before url.full",
			span: []mtKV{mtS(AttrURLFull, "https://b.example/"), mtS(AttrServerAddress, "a.example")},
			want: "a.example",
		},
		{
			name: "url.full before http.url",
			span: []mtKV{mtS("http.url", "https://b.example/"), mtS(AttrURLFull, "https://a.example/")},
			want: "a.example",
		},
		{
			name: "http.url before http.host",
			span: []mtKV{mtS("http.host", "b.example"), mtS("http.url", "https://a.example/")},
			want: "a.example",
		},
		{
			name: "http.host before net.peer.name",
			span: []mtKV{mtS("net.peer.name", "b.example"), mtS("http.host", "a.example")},
			want: "a.example",
		},
		{
			name: "unusable server.address falls back to url.full",
			span: []mtKV{mtS(AttrServerAddress, "bad host"), mtS(AttrURLFull, "https://a.example/")},
			want: "a.example",
		},
		{
			name: "unusable attributes fall back to net.peer.name",
			span: []mtKV{mtS(AttrServerAddress, ""), mtS(AttrURLFull, "https://"), mtS("http.url", "http://x:y/"), mtS("http.host", "a b"), mtS("net.peer.name", "a.example")},
			want: "a.example",
		},
		{name: "resource", res: []mtKV{mtS(AttrServerAddress, "a.example")}, span: mtSelected, want: "a.example"},
		{
			name: "any span attribute wins over resource",
			res:  []mtKV{mtS(AttrServerAddress, "res.example")},
			span: []mtKV{mtS("net.peer.name", "span.example")},
			want: "span.example",
		},
		{
			name: "unusable span attributes fall back to resource",
			res:  []mtKV{mtS(AttrURLFull, "https://res.example/")},
			span: []mtKV{mtS(AttrServerAddress, "bad host")},
			want: "res.example",
		},
		{name: "lower case", span: []mtKV{mtS(AttrServerAddress, "WWW.Example.COM")}, want: "www.example.com"},
		{name: "no port", span: []mtKV{mtS(AttrServerAddress, "example.com:443")}, want: "example.com"},
		{name: "no trailing dot", span: []mtKV{mtS(AttrServerAddress, "example.com.")}, want: "example.com"},
		{name: "no userinfo", span: []mtKV{mtS(AttrURLFull, "https://u:p@example.com/")}, want: "example.com"},
		{name: "no query", span: []mtKV{mtS(AttrURLFull, "https://example.com?q=1")}, want: "example.com"},
		{name: "no fragment", span: []mtKV{mtS(AttrURLFull, "https://example.com#top")}, want: "example.com"},
		{name: "IPv6", span: []mtKV{mtS(AttrURLFull, "http://[2001:DB8::1]:8080/")}, want: "2001:db8::1"},
		{name: "not a string", span: []mtKV{mtI(AttrServerAddress, 42)}, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, mtMapOK(t, tc.res, mtJoin(mtSelected, tc.span)).Domain)
		})
	}
}

func TestMapMethod(t *testing.T) {
	for _, tc := range []struct {
		name      string
		res, span []mtKV
		want      Method
	}{
		{name: "absent", want: MethodNone},
		{name: "new", span: []mtKV{mtS(AttrMethod, "GET")}, want: MethodGet},
		{name: "old", span: []mtKV{mtS("http.method", "POST")}, want: MethodPost},
		{name: "new wins", span: []mtKV{mtS("http.method", "POST"), mtS(AttrMethod, "PUT")}, want: MethodPut},
		{name: "lower case", span: []mtKV{mtS(AttrMethod, "delete")}, want: MethodDelete},
		{name: "unknown", span: []mtKV{mtS(AttrMethod, "PROPFIND")}, want: MethodOther},
		{name: "unknown short", span: []mtKV{mtS(AttrMethod, "FOO")}, want: MethodOther},
		{name: "empty", span: []mtKV{mtS(AttrMethod, "")}, want: MethodNone},
		{name: "not a string", span: []mtKV{mtI(AttrMethod, 1)}, want: MethodNone},
		{name: "resource", res: []mtKV{mtS(AttrMethod, "HEAD")}, want: MethodHead},
		{name: "resource old", res: []mtKV{mtS("http.method", "options")}, want: MethodOptions},
		{name: "span old wins over resource new", res: []mtKV{mtS(AttrMethod, "HEAD")}, span: []mtKV{mtS("http.method", "PATCH")}, want: MethodPatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mtMapOK(t, tc.res, mtJoin(mtSelected, tc.span))
			require.Equal(t, tc.want, r.Method)
		})
	}
}

func TestMapStatusCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		span []mtKV
		want uint16
	}{
		{name: "absent", want: 0},
		{name: "int", span: []mtKV{mtI(AttrStatusCode, 200)}, want: 200},
		{name: "integral double", span: []mtKV{mtD(AttrStatusCode, 404)}, want: 404},
		{name: "decimal string", span: []mtKV{mtS(AttrStatusCode, "503")}, want: 503},
		{name: "fractional double", span: []mtKV{mtD(AttrStatusCode, 404.5)}, want: 0},
		{name: "NaN", span: []mtKV{mtD(AttrStatusCode, math.NaN())}, want: 0},
		{name: "huge double", span: []mtKV{mtD(AttrStatusCode, 1e300)}, want: 0},
		{name: "non-decimal string", span: []mtKV{mtS(AttrStatusCode, "OK")}, want: 0},
		{name: "string with space", span: []mtKV{mtS(AttrStatusCode, " 200")}, want: 0},
		{name: "bool", span: []mtKV{mtKV{AttrStatusCode, Value{Kind: KindBool, Int: 1}}}, want: 0},
		{name: "lowest", span: []mtKV{mtI(AttrStatusCode, 100)}, want: 100},
		{name: "highest", span: []mtKV{mtI(AttrStatusCode, 599)}, want: 599},
		{name: "below range", span: []mtKV{mtI(AttrStatusCode, 99)}, want: 0},
		{name: "above range", span: []mtKV{mtI(AttrStatusCode, 600)}, want: 0},
		{name: "zero", span: []mtKV{mtI(AttrStatusCode, 0)}, want: 0},
		{name: "negative", span: []mtKV{mtI(AttrStatusCode, -200)}, want: 0},
		{name: "wraps uint16", span: []mtKV{mtI(AttrStatusCode, 65536+200)}, want: 0},
		{name: "old", span: []mtKV{mtI("http.status_code", 302)}, want: 302},
		{name: "old as string", span: []mtKV{mtS("http.status_code", "201")}, want: 201},
		{name: "new wins", span: []mtKV{mtI("http.status_code", 302), mtI(AttrStatusCode, 204)}, want: 204},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mtMapOK(t, nil, mtJoin(mtSelected, tc.span))
			require.Equal(t, tc.want, r.StatusCode)
		})
	}
}

func TestMapErrorTypeAndSuccess(t *testing.T) {
	for _, tc := range []struct {
		name      string
		span      []mtKV
		status    int32
		wantError string
	}{
		{name: "nothing", wantError: ""},
		{name: "200", span: []mtKV{mtI(AttrStatusCode, 200)}, wantError: ""},
		{name: "399", span: []mtKV{mtI(AttrStatusCode, 399)}, wantError: ""},
		{name: "span status ok", status: StatusOK, wantError: ""},
		{name: "400", span: []mtKV{mtI(AttrStatusCode, 400)}, wantError: "400"},
		{name: "404 old", span: []mtKV{mtI("http.status_code", 404)}, wantError: "404"},
		{name: "599", span: []mtKV{mtS(AttrStatusCode, "599")}, wantError: "599"},
		{name: "500 with span status ok", span: []mtKV{mtI(AttrStatusCode, 500)}, status: StatusOK, wantError: "500"},
		{name: "error.type", span: []mtKV{mtS(AttrErrorType, "timeout")}, wantError: "timeout"},
		{name: "error.type wins over status code", span: []mtKV{mtI(AttrStatusCode, 503), mtS(AttrErrorType, "upstream_reset")}, wantError: "upstream_reset"},
		{name: "error.type wins over span status", span: []mtKV{mtS(AttrErrorType, "dns")}, status: StatusError, wantError: "dns"},
		{name: "error.type with 200", span: []mtKV{mtI(AttrStatusCode, 200), mtS(AttrErrorType, "java.net.SocketException")}, wantError: "java.net.SocketException"},
		{name: "error.type as int", span: []mtKV{mtI(AttrErrorType, 429)}, wantError: "429"},
		{name: "error.type as double is ignored", span: []mtKV{mtD(AttrErrorType, 1.5)}, wantError: ""},
		{name: "empty error.type", span: []mtKV{mtS(AttrErrorType, "")}, wantError: ""},
		{name: "span status error", status: StatusError, wantError: "_OTHER"},
		{name: "span status error with 200", span: []mtKV{mtI(AttrStatusCode, 200)}, status: StatusError, wantError: "_OTHER"},
		{name: "status code wins over span status", span: []mtKV{mtI(AttrStatusCode, 502)}, status: StatusError, wantError: "502"},
		{name: "out of range status is absent", span: []mtKV{mtI(AttrStatusCode, 999)}, wantError: ""},
		{name: "error.type made valid UTF-8", span: []mtKV{mtS(AttrErrorType, "bad\xfe")}, wantError: "bad\uFFFD"},
		{name: "error.type cut", span: []mtKV{mtS(AttrErrorType, strings.Repeat("e", 300))}, wantError: strings.Repeat("e", 256)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := mtInfo()
			info.StatusCode = tc.status
			r, rej := mtMapWith(mtMapper(DefaultMappingConfig()), nil, mtJoin(mtSelected, tc.span), info)
			require.Equal(t, Accepted, rej)
			require.Equal(t, tc.wantError, r.ErrorType)
			require.Equal(t, tc.wantError == "", r.Success)
			if r.Success {
				require.Equal(t, "success", r.Outcome())
			} else {
				require.Equal(t, "failure", r.Outcome())
			}
		})
	}
}

func TestMapBodySizes(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		span                   []mtKV
		wantSent, wantReceived uint64
	}{
		{name: "absent"},
		{name: "new", span: []mtKV{mtI(AttrRequestSize, 10), mtI(AttrResponseSize, 2000)}, wantSent: 10, wantReceived: 2000},
		{name: "old", span: []mtKV{mtI("http.request_content_length", 11), mtI("http.response_content_length", 22)}, wantSent: 11, wantReceived: 22},
		{
			name:     "new wins",
			span:     []mtKV{mtI("http.request_content_length", 11), mtI("http.response_content_length", 22), mtI(AttrRequestSize, 1), mtI(AttrResponseSize, 2)},
			wantSent: 1, wantReceived: 2,
		},
		{name: "mixed", span: []mtKV{mtI(AttrRequestSize, 5), mtI("http.response_content_length", 6)}, wantSent: 5, wantReceived: 6},
		{name: "negative", span: []mtKV{mtI(AttrRequestSize, -1), mtI(AttrResponseSize, math.MinInt64)}},
		{name: "negative new does not fall back", span: []mtKV{mtI(AttrRequestSize, -1), mtI("http.request_content_length", 7)}},
		{name: "negative old", span: []mtKV{mtI("http.request_content_length", -7), mtI("http.response_content_length", -8)}},
		{name: "strings", span: []mtKV{mtS(AttrRequestSize, "123"), mtS(AttrResponseSize, "9223372036854775807")}, wantSent: 123, wantReceived: math.MaxInt64},
		{name: "doubles", span: []mtKV{mtD(AttrRequestSize, 4096), mtD(AttrResponseSize, 1e15)}, wantSent: 4096, wantReceived: 1e15},
		{name: "unusable values", span: []mtKV{mtD(AttrRequestSize, 0.5), mtS(AttrResponseSize, "1k")}},
		{name: "unusable new falls back to old", span: []mtKV{mtS(AttrRequestSize, "n/a"), mtI("http.request_content_length", 9)}, wantSent: 9},
		{name: "zero", span: []mtKV{mtI(AttrRequestSize, 0), mtI(AttrResponseSize, 0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mtMapOK(t, nil, mtJoin(mtSelected, tc.span))
			require.Equal(t, tc.wantSent, r.BytesSent, "bytes sent")
			require.Equal(t, tc.wantReceived, r.BytesReceived, "bytes received")
		})
	}
}

func TestMapIDsAndWeight(t *testing.T) {
	for _, tc := range []struct {
		traceState string
		want       float64
	}{
		{"", 1},
		{"ot=th:8", 2},
		{"vendor=x,ot=th:c", 4},
		{"ot=th:zz", 1},
	} {
		t.Run(tc.traceState, func(t *testing.T) {
			info := mtInfo()
			info.TraceID = [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
			info.SpanID = [8]byte{0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x10, 0x11}
			info.TraceState = tc.traceState
			r, rej := mtMapWith(mtMapper(DefaultMappingConfig()), nil, mtSelected, info)
			require.Equal(t, Accepted, rej)
			require.Equal(t, info.TraceID, r.TraceID)
			require.Equal(t, info.SpanID, r.SpanID)
			require.Equal(t, tc.want, r.Weight)
		})
	}
}

// TestMapFullRecord maps one span with every attribute and checks the whole
// record, so that a field the other tests miss cannot go unnoticed.
func TestMapFullRecord(t *testing.T) {
	info := mtInfo()
	info.TraceID = [16]byte{0: 0xaa, 15: 0xbb}
	info.SpanID = [8]byte{0: 0xcc, 7: 0xdd}
	info.TraceState = "ot=th:8"
	res := []mtKV{mtS(AttrServiceName, "checkout"), mtS(AttrProxyTier, "Free")}
	span := []mtKV{
		mtS(AttrProxySource, "resi-us"),
		mtS(AttrProxyURL, "http://user:pw@10.1.2.3:8080"),
		mtS(AttrURLFull, "https://API.example.com:8443/v1/items?id=1"),
		mtS(AttrMethod, "post"),
		mtI(AttrStatusCode, 429),
		mtI(AttrRequestSize, 512),
		mtS(AttrResponseSize, "64"),
		mtS("unrelated", "ignored"),
	}
	r, rej := mtMapWith(mtMapper(DefaultMappingConfig()), res, span, info)
	require.Equal(t, Accepted, rej)
	require.Equal(t, Record{
		EndTime:       int64(info.EndTime),
		Duration:      int64(time.Second),
		Source:        "resi-us",
		Tier:          "free",
		Proxy:         "10.1.2.3:8080",
		Application:   "checkout",
		Domain:        "api.example.com",
		ErrorType:     "429",
		Method:        MethodPost,
		StatusCode:    429,
		Success:       false,
		BytesSent:     512,
		BytesReceived: 64,
		TraceID:       info.TraceID,
		SpanID:        info.SpanID,
		Weight:        2,
	}, r)
}

func TestMapDuplicateKeysFirstWins(t *testing.T) {
	for _, tc := range []struct {
		name  string
		span  []mtKV
		check func(t *testing.T, r Record)
	}{
		{
			name:  "proxy.source",
			span:  []mtKV{mtS(AttrProxySource, "first"), mtS(AttrProxySource, "second")},
			check: func(t *testing.T, r Record) { require.Equal(t, "first", r.Source) },
		},
		{
			name:  "proxy.url",
			span:  []mtKV{mtS(AttrProxyURL, "http://a:1"), mtS(AttrProxyURL, "http://b:2")},
			check: func(t *testing.T, r Record) { require.Equal(t, "a:1", r.Proxy) },
		},
		{
			name:  "proxy.tier",
			span:  []mtKV{mtS(AttrProxyTier, "free"), mtS(AttrProxyTier, "premium")},
			check: func(t *testing.T, r Record) { require.Equal(t, "free", r.Tier) },
		},
		{
			name:  "app.id",
			span:  []mtKV{mtS(AttrAppID, "first"), mtS(AttrAppID, "second")},
			check: func(t *testing.T, r Record) { require.Equal(t, "first", r.Application) },
		},
		{
			name:  "server.address",
			span:  []mtKV{mtS(AttrServerAddress, "first.example"), mtS(AttrServerAddress, "second.example")},
			check: func(t *testing.T, r Record) { require.Equal(t, "first.example", r.Domain) },
		},
		{
			name:  "url.full",
			span:  []mtKV{mtS(AttrURLFull, "http://first.example/"), mtS(AttrURLFull, "http://second.example/")},
			check: func(t *testing.T, r Record) { require.Equal(t, "first.example", r.Domain) },
		},
		{
			name:  "http.request.method",
			span:  []mtKV{mtS(AttrMethod, "GET"), mtS(AttrMethod, "POST")},
			check: func(t *testing.T, r Record) { require.Equal(t, MethodGet, r.Method) },
		},
		{
			name:  "http.response.status_code",
			span:  []mtKV{mtI(AttrStatusCode, 201), mtI(AttrStatusCode, 500)},
			check: func(t *testing.T, r Record) { require.Equal(t, uint16(201), r.StatusCode) },
		},
		{
			name:  "http.response.status_code out of range first",
			span:  []mtKV{mtI(AttrStatusCode, 0), mtI(AttrStatusCode, 500)},
			check: func(t *testing.T, r Record) { require.Equal(t, uint16(0), r.StatusCode) },
		},
		{
			name:  "error.type",
			span:  []mtKV{mtS(AttrErrorType, "first"), mtS(AttrErrorType, "second")},
			check: func(t *testing.T, r Record) { require.Equal(t, "first", r.ErrorType) },
		},
		{
			name:  "http.request.body.size",
			span:  []mtKV{mtI(AttrRequestSize, 1), mtI(AttrRequestSize, 2)},
			check: func(t *testing.T, r Record) { require.Equal(t, uint64(1), r.BytesSent) },
		},
		{
			name:  "http.response.body.size",
			span:  []mtKV{mtI(AttrResponseSize, 3), mtI(AttrResponseSize, 4)},
			check: func(t *testing.T, r Record) { require.Equal(t, uint64(3), r.BytesReceived) },
		},
		{
			name:  "http.request_content_length",
			span:  []mtKV{mtI("http.request_content_length", 5), mtI("http.request_content_length", 6)},
			check: func(t *testing.T, r Record) { require.Equal(t, uint64(5), r.BytesSent) },
		},
		{
			name:  "http.response_content_length",
			span:  []mtKV{mtI("http.response_content_length", 7), mtI("http.response_content_length", 8)},
			check: func(t *testing.T, r Record) { require.Equal(t, uint64(7), r.BytesReceived) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Selected by the resource, so that the span may repeat proxy.source.
			tc.check(t, mtMapOK(t, mtSelected, tc.span))
		})
	}
}
