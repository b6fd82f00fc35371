package otelanalytics

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// mtNow is the mappers' current time in these tests.
var mtNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// mtKV is one attribute of a span or resource, in the order a decoder sees it.
type mtKV struct {
	key string
	val Value
}

func mtS(k, v string) mtKV         { return mtKV{k, StringValue(v)} }
func mtI(k string, v int64) mtKV   { return mtKV{k, IntValue(v)} }
func mtD(k string, v float64) mtKV { return mtKV{k, DoubleValue(v)} }

// mtSelected is the minimal span attribute list that makes a span a proxied
// request under the default selector.
var mtSelected = []mtKV{mtS(AttrProxySource, "dc-eu")}

func mtMapper(cfg MappingConfig) *Mapper {
	return NewMapper(cfg, func() time.Time { return mtNow })
}

func mtAttrs(m *Mapper, kvs []mtKV) *SpanAttrs {
	var a SpanAttrs
	for _, kv := range kvs {
		m.SetAttr(&a, kv.key, kv.val)
	}
	return &a
}

// mtInfo is a span that ended half a second before mtNow after running for
// one second.
func mtInfo() SpanInfo {
	end := uint64(mtNow.UnixNano()) - uint64(500*time.Millisecond)
	return SpanInfo{StartTime: end - uint64(time.Second), EndTime: end}
}

func mtMapWith(m *Mapper, res, span []mtKV, info SpanInfo) (Record, Rejection) {
	return m.Map(mtAttrs(m, res), mtAttrs(m, span), &info, m.Now())
}

// mtMapOK maps a span with default config and requires it to be accepted.
func mtMapOK(t *testing.T, res, span []mtKV) Record {
	t.Helper()
	r, rej := mtMapWith(mtMapper(DefaultMappingConfig()), res, span, mtInfo())
	require.Equal(t, Accepted, rej, "rejection %q", rej)
	return r
}

func mtJoin(lists ...[]mtKV) []mtKV {
	var out []mtKV
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func TestDefaultMappingConfig(t *testing.T) {
	cfg := DefaultMappingConfig()
	require.Equal(t, []string{"proxy.source", "proxy.url"}, cfg.Selector)
	require.Equal(t, 10*time.Minute, cfg.MaxClockSkew)
	require.NoError(t, cfg.Validate())

	// Each call returns its own slice: changing one must not change the next.
	cfg.Selector[0] = "changed"
	require.Equal(t, "proxy.source", DefaultMappingConfig().Selector[0])
}

func TestMappingConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  MappingConfig
		want []string // every message, in order; nil means valid
	}{
		{name: "default", cfg: DefaultMappingConfig()},
		{name: "custom selector, zero skew means default", cfg: MappingConfig{Selector: []string{"my.proxy"}}},
		{name: "custom skew", cfg: MappingConfig{Selector: []string{"my.proxy"}, MaxClockSkew: time.Second}},
		{
			name: "nil selector",
			cfg:  MappingConfig{MaxClockSkew: time.Minute},
			want: []string{"mapping.selector: must list at least one attribute key"},
		},
		{
			name: "empty selector",
			cfg:  MappingConfig{Selector: []string{}},
			want: []string{"mapping.selector: must list at least one attribute key"},
		},
		{
			name: "empty key",
			cfg:  MappingConfig{Selector: []string{"proxy.source", ""}},
			want: []string{"mapping.selector[1]: empty attribute key"},
		},
		{
			name: "blank keys",
			cfg:  MappingConfig{Selector: []string{" ", "ok", "\t\n"}},
			want: []string{"mapping.selector[0]: empty attribute key", "mapping.selector[2]: empty attribute key"},
		},
		{
			name: "negative skew",
			cfg:  MappingConfig{Selector: []string{"proxy.url"}, MaxClockSkew: -time.Second},
			want: []string{`mapping.max_clock_skew: must not be negative, got "-1s"`},
		},
		{
			name: "every problem at once",
			cfg:  MappingConfig{MaxClockSkew: -90 * time.Second},
			want: []string{
				"mapping.selector: must list at least one attribute key",
				"mapping.max_clock_skew: must not be negative, got \"-1m30s\"",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Equal(t, strings.Join(tc.want, "\n"), err.Error())
			var joined interface{ Unwrap() []error }
			require.True(t, errors.As(err, &joined), "Validate must join its errors")
			require.Len(t, joined.Unwrap(), len(tc.want))
			for _, msg := range tc.want {
				require.True(t, strings.HasPrefix(msg, "mapping."), "message %q must name the field", msg)
			}
		})
	}
}

func TestNewMapperDefaults(t *testing.T) {
	m := NewMapper(MappingConfig{}, nil)

	// nil now means time.Now.
	before := time.Now().UnixNano()
	got := m.Now()
	after := time.Now().UnixNano()
	require.GreaterOrEqual(t, got, before)
	require.LessOrEqual(t, got, after)

	// An empty selector means the default one.
	var a SpanAttrs
	m.SetAttr(&a, AttrProxyURL, StringValue("http://10.0.0.1:3128"))
	info := mtInfo()
	now := int64(info.EndTime) + int64(time.Second)
	_, rej := m.Map(&SpanAttrs{}, &a, &info, now)
	require.Equal(t, Accepted, rej)

	// A zero skew means ten minutes.
	info.EndTime = uint64(now + int64(10*time.Minute))
	_, rej = m.Map(&SpanAttrs{}, &a, &info, now)
	require.Equal(t, Accepted, rej)
	info.EndTime++
	_, rej = m.Map(&SpanAttrs{}, &a, &info, now)
	require.Equal(t, RejectFuture, rej)
}

func TestMapperNowIsInjected(t *testing.T) {
	m := mtMapper(DefaultMappingConfig())
	require.Equal(t, mtNow.UnixNano(), m.Now())
}

func TestMapperDoesNotKeepConfigSlice(t *testing.T) {
	cfg := MappingConfig{Selector: []string{"my.proxy"}}
	m := mtMapper(cfg)
	cfg.Selector[0] = "other.key"
	_, rej := mtMapWith(m, nil, []mtKV{mtS("my.proxy", "x")}, mtInfo())
	require.Equal(t, Accepted, rej)
}

func TestMapSelection(t *testing.T) {
	custom := MappingConfig{Selector: []string{"my.proxy"}}
	for _, tc := range []struct {
		name      string
		cfg       MappingConfig
		res, span []mtKV
		want      Rejection
	}{
		{name: "no attributes", cfg: DefaultMappingConfig(), want: NotSelected},
		{
			name: "unrelated attributes",
			cfg:  DefaultMappingConfig(),
			res:  []mtKV{mtS(AttrServiceName, "svc"), mtS(AttrAppID, "app")},
			span: []mtKV{mtS(AttrServerAddress, "example.com"), mtS(AttrProxyTier, "free"), mtS(AttrMethod, "GET")},
			want: NotSelected,
		},
		{name: "span proxy.source", cfg: DefaultMappingConfig(), span: []mtKV{mtS(AttrProxySource, "dc")}, want: Accepted},
		{name: "span proxy.url", cfg: DefaultMappingConfig(), span: []mtKV{mtS(AttrProxyURL, "http://p:1")}, want: Accepted},
		{name: "resource proxy.source", cfg: DefaultMappingConfig(), res: []mtKV{mtS(AttrProxySource, "dc")}, want: Accepted},
		{name: "resource proxy.url", cfg: DefaultMappingConfig(), res: []mtKV{mtS(AttrProxyURL, "http://p:1")}, want: Accepted},
		{name: "presence counts, not type", cfg: DefaultMappingConfig(), span: []mtKV{mtI(AttrProxySource, 7)}, want: Accepted},
		{name: "empty string counts", cfg: DefaultMappingConfig(), span: []mtKV{mtS(AttrProxyURL, "")}, want: Accepted},
		{name: "zero config is the default", span: []mtKV{mtS(AttrProxySource, "dc")}, want: Accepted},

		{name: "custom: span key", cfg: custom, span: []mtKV{mtS("my.proxy", "yes")}, want: Accepted},
		{name: "custom: resource key", cfg: custom, res: []mtKV{mtS("my.proxy", "yes")}, want: Accepted},
		{name: "custom: any type", cfg: custom, span: []mtKV{mtKV{"my.proxy", Value{Kind: KindBool, Int: 1}}}, want: Accepted},
		{name: "custom: proxy.source no longer selects", cfg: custom, span: []mtKV{mtS(AttrProxySource, "dc")}, want: NotSelected},
		{name: "custom: proxy.url no longer selects", cfg: custom, res: []mtKV{mtS(AttrProxyURL, "http://p:1")}, want: NotSelected},
		{name: "custom: similar key", cfg: custom, span: []mtKV{mtS("my.proxy2", "x"), mtS("my", "x")}, want: NotSelected},

		{
			name: "reversed default keys: url",
			cfg:  MappingConfig{Selector: []string{AttrProxyURL, AttrProxySource}},
			span: []mtKV{mtS(AttrProxyURL, "http://p:1")},
			want: Accepted,
		},
		{
			name: "reversed default keys: source",
			cfg:  MappingConfig{Selector: []string{AttrProxyURL, AttrProxySource}},
			res:  []mtKV{mtS(AttrProxySource, "dc")},
			want: Accepted,
		},
		{
			name: "only proxy.source: url does not select",
			cfg:  MappingConfig{Selector: []string{AttrProxySource}},
			span: []mtKV{mtS(AttrProxyURL, "http://p:1")},
			want: NotSelected,
		},
		{
			name: "only proxy.source: source selects",
			cfg:  MappingConfig{Selector: []string{AttrProxySource}},
			span: []mtKV{mtS(AttrProxySource, "dc")},
			want: Accepted,
		},
		{
			name: "two keys, one custom",
			cfg:  MappingConfig{Selector: []string{AttrProxySource, "vendor.proxy"}},
			span: []mtKV{mtS("vendor.proxy", "x")},
			want: Accepted,
		},
		{
			name: "two keys, one custom: proxy.url does not select",
			cfg:  MappingConfig{Selector: []string{AttrProxySource, "vendor.proxy"}},
			span: []mtKV{mtS(AttrProxyURL, "http://p:1")},
			want: NotSelected,
		},
		{
			name: "three keys",
			cfg:  MappingConfig{Selector: []string{AttrProxySource, AttrProxyURL, "vendor.proxy"}},
			res:  []mtKV{mtS("vendor.proxy", "x")},
			want: Accepted,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rej := mtMapWith(mtMapper(tc.cfg), tc.res, tc.span, mtInfo())
			require.Equal(t, tc.want, rej)
			if rej != Accepted {
				require.Equal(t, Record{}, r, "a rejected span gives the zero record")
			}
		})
	}
}

func TestMapCustomSelectorStillMapsProxyAttributes(t *testing.T) {
	m := mtMapper(MappingConfig{Selector: []string{"my.proxy"}})
	r, rej := mtMapWith(m, nil, []mtKV{
		mtS("my.proxy", "1"),
		mtS(AttrProxySource, "resi"),
		mtS(AttrProxyURL, "http://10.0.0.1:3128"),
	}, mtInfo())
	require.Equal(t, Accepted, rej)
	require.Equal(t, "resi", r.Source)
	require.Equal(t, "10.0.0.1:3128", r.Proxy)

	r, rej = mtMapWith(m, nil, []mtKV{mtS("my.proxy", "1")}, mtInfo())
	require.Equal(t, Accepted, rej)
	require.Equal(t, "unknown", r.Source)
	require.Empty(t, r.Proxy)
}

func TestMapTimestamps(t *testing.T) {
	nowNs := uint64(mtNow.UnixNano())
	skew := uint64(10 * time.Minute)
	for _, tc := range []struct {
		name       string
		cfg        MappingConfig
		start, end uint64
		want       Rejection
	}{
		{name: "ordinary", start: nowNs - 3e9, end: nowNs - 1e9, want: Accepted},
		{name: "zero duration", start: nowNs - 1e9, end: nowNs - 1e9, want: Accepted},
		{name: "ends now", start: nowNs - 1, end: nowNs, want: Accepted},
		{name: "long ago", start: 1, end: 2, want: Accepted},
		{name: "no start", start: 0, end: nowNs, want: RejectNoTimestamps},
		{name: "no end", start: nowNs, end: 0, want: RejectNoTimestamps},
		{name: "neither", want: RejectNoTimestamps},
		{name: "end beyond int64", start: 1, end: 1 << 63, want: RejectNoTimestamps},
		{name: "end max uint64", start: 1, end: math.MaxUint64, want: RejectNoTimestamps},
		{name: "end before start", start: nowNs - 1e9, end: nowNs - 1e9 - 1, want: RejectEndBeforeStart},
		{name: "end long before start", start: nowNs, end: 1, want: RejectEndBeforeStart},
		{name: "at the skew limit", start: nowNs, end: nowNs + skew, want: Accepted},
		{name: "past the skew limit", start: nowNs, end: nowNs + skew + 1, want: RejectFuture},
		{name: "far future", start: 1, end: 1<<63 - 1, want: RejectFuture},
		{
			name:  "custom skew: at the limit",
			cfg:   MappingConfig{Selector: DefaultMappingConfig().Selector, MaxClockSkew: time.Second},
			start: nowNs, end: nowNs + 1e9, want: Accepted,
		},
		{
			name:  "custom skew: past the limit",
			cfg:   MappingConfig{Selector: DefaultMappingConfig().Selector, MaxClockSkew: time.Second},
			start: nowNs, end: nowNs + 1e9 + 1, want: RejectFuture,
		},
		{
			name:  "custom skew: within default",
			cfg:   MappingConfig{Selector: DefaultMappingConfig().Selector, MaxClockSkew: time.Second},
			start: nowNs, end: nowNs + 2e9, want: RejectFuture,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := SpanInfo{StartTime: tc.start, EndTime: tc.end}
			r, rej := mtMapWith(mtMapper(tc.cfg), nil, mtSelected, info)
			require.Equal(t, tc.want, rej)
			if rej != Accepted {
				require.Equal(t, Record{}, r)
				return
			}
			require.Equal(t, int64(tc.end), r.EndTime)
			require.Equal(t, int64(tc.end-tc.start), r.Duration)
			require.Equal(t, time.Unix(0, int64(tc.end)).UTC(), r.Time())
			require.Equal(t, time.UTC, r.Time().Location())
		})
	}
}

func TestMapUsesGivenNow(t *testing.T) {
	// Map judges the future against its now argument, not the mapper's clock.
	m := mtMapper(DefaultMappingConfig())
	info := mtInfo()
	a := mtAttrs(m, mtSelected)
	_, rej := m.Map(&SpanAttrs{}, a, &info, int64(info.EndTime)-int64(10*time.Minute))
	require.Equal(t, Accepted, rej)
	_, rej = m.Map(&SpanAttrs{}, a, &info, int64(info.EndTime)-int64(10*time.Minute)-1)
	require.Equal(t, RejectFuture, rej)
}

func TestMapSelectionBeforeTimestamps(t *testing.T) {
	_, rej := mtMapWith(mtMapper(DefaultMappingConfig()), nil, nil, SpanInfo{})
	require.Equal(t, NotSelected, rej)
}

func TestRejection(t *testing.T) {
	for _, tc := range []struct {
		r           Rejection
		text, label string
	}{
		{Accepted, "accepted", "accepted"},
		{NotSelected, "not a proxied request", "not_selected"},
		{RejectNoTimestamps, "missing start or end time", "no_timestamps"},
		{RejectEndBeforeStart, "end time before start time", "end_before_start"},
		{RejectFuture, "end time too far in the future", "future"},
	} {
		t.Run(tc.label, func(t *testing.T) {
			require.Equal(t, tc.text, tc.r.String())
			require.Equal(t, tc.label, tc.r.Label())
		})
	}
	require.Equal(t, Rejection(5), NumRejections, "add the new rejection to this test")
}

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

func TestSpanAttrsReset(t *testing.T) {
	m := mtMapper(DefaultMappingConfig())
	a := mtAttrs(m, []mtKV{mtS(AttrProxySource, "dc"), mtS(AttrAppID, "old"), mtI(AttrStatusCode, 500)})
	a.Reset()
	require.Equal(t, SpanAttrs{}, *a)

	info := mtInfo()
	_, rej := m.Map(&SpanAttrs{}, a, &info, m.Now())
	require.Equal(t, NotSelected, rej)

	// After a reset the first occurrence is the new one.
	m.SetAttr(a, AttrProxySource, StringValue("new"))
	m.SetAttr(a, AttrStatusCode, IntValue(201))
	r, rej := m.Map(&SpanAttrs{}, a, &info, m.Now())
	require.Equal(t, Accepted, rej)
	require.Equal(t, "new", r.Source)
	require.Equal(t, uint16(201), r.StatusCode)
	require.Empty(t, r.Application)
}

// mtStringFields returns every string field of r, by name.
func mtStringFields(r Record) map[string]string {
	out := map[string]string{}
	v := reflect.ValueOf(r)
	for i := 0; i < v.NumField(); i++ {
		if v.Field(i).Kind() == reflect.String {
			out[v.Type().Field(i).Name] = v.Field(i).String()
		}
	}
	return out
}

func TestMapNeverKeepsCredentials(t *testing.T) {
	for _, tc := range []struct {
		name       string
		res, span  []mtKV
		secrets    []string
		wantProxy  string
		wantDomain string
	}{
		{
			name:      "http proxy with user and password",
			span:      []mtKV{mtS(AttrProxyURL, "http://user:s3cret@10.1.2.3:8080")},
			secrets:   []string{"user", "s3cret"},
			wantProxy: "10.1.2.3:8080",
		},
		{
			name:      "socks5 proxy",
			span:      []mtKV{mtS(AttrProxyURL, "socks5://u:p@host")},
			secrets:   []string{"u:p", "@"},
			wantProxy: "host:1080",
		},
		{
			name:      "proxy without scheme",
			span:      []mtKV{mtS(AttrProxyURL, "user:pw@1.2.3.4:3128")},
			secrets:   []string{"user", "pw"},
			wantProxy: "1.2.3.4:3128",
		},
		{
			name:      "IPv6 proxy with credentials",
			span:      []mtKV{mtS(AttrProxyURL, "https://user:s3cret@[2001:db8::1]:8443")},
			secrets:   []string{"user", "s3cret"},
			wantProxy: "[2001:db8::1]:8443",
		},
		{
			name:      "IPv6 proxy",
			span:      []mtKV{mtS(AttrProxyURL, "https://[2001:db8::1]:8443")},
			wantProxy: "[2001:db8::1]:8443",
		},
		{
			name:      "password with @",
			span:      []mtKV{mtS(AttrProxyURL, "http://user:s3c@ret@proxy.example:3128")},
			secrets:   []string{"user", "s3c", "ret@"},
			wantProxy: "proxy.example:3128",
		},
		{
			name:      "resource proxy",
			res:       []mtKV{mtS(AttrProxyURL, "http://user:s3cret@proxy.example")},
			span:      mtSelected,
			secrets:   []string{"user", "s3cret"},
			wantProxy: "proxy.example:80",
		},
		{
			name:       "url.full",
			span:       mtJoin(mtSelected, []mtKV{mtS(AttrURLFull, "https://user:s3cret@Example.COM:8443/path?token=s3cret#frag")}),
			secrets:    []string{"user", "s3cret", "path", "token", "frag", "8443"},
			wantDomain: "example.com",
		},
		{
			name:       "http.url",
			span:       mtJoin(mtSelected, []mtKV{mtS("http.url", "http://user:s3cret@example.com/?password=s3cret")}),
			secrets:    []string{"user", "s3cret"},
			wantDomain: "example.com",
		},
		{
			name:       "http.host with userinfo",
			span:       mtJoin(mtSelected, []mtKV{mtS("http.host", "user:s3cret@example.com:80")}),
			secrets:    []string{"user", "s3cret"},
			wantDomain: "example.com",
		},
		{
			name:       "server.address with userinfo",
			span:       mtJoin(mtSelected, []mtKV{mtS(AttrServerAddress, "user:s3cret@example.com")}),
			secrets:    []string{"user", "s3cret"},
			wantDomain: "example.com",
		},
		{
			name:       "resource url.full",
			res:        []mtKV{mtS(AttrURLFull, "https://user:s3cret@example.com/")},
			span:       mtSelected,
			secrets:    []string{"user", "s3cret"},
			wantDomain: "example.com",
		},
		{
			name: "everything at once",
			span: []mtKV{
				mtS(AttrProxyURL, "socks5h://user:s3cret@proxy.example"),
				mtS(AttrURLFull, "https://user:s3cret@Example.COM:8443/path?token=s3cret#frag"),
				mtS("http.url", "https://user:s3cret@old.example/"),
				mtS("http.host", "user:s3cret@host.example"),
			},
			secrets:    []string{"user", "s3cret"},
			wantProxy:  "proxy.example:1080",
			wantDomain: "example.com",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mtMapOK(t, tc.res, tc.span)
			require.Equal(t, tc.wantProxy, r.Proxy)
			require.Equal(t, tc.wantDomain, r.Domain)
			fields := mtStringFields(r)
			require.Contains(t, fields, "Proxy", "the field list must cover the record")
			for name, v := range fields {
				for _, secret := range tc.secrets {
					require.NotContains(t, v, secret, "field %s", name)
				}
				require.NotContains(t, v, "@", "field %s", name)
			}
		})
	}
}

// TestMapLabelsAtMost256Bytes checks the contract that every label string of
// a record is valid UTF-8 of at most 256 bytes, whatever the attributes.
func TestMapLabelsAtMost256Bytes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		span  []mtKV
		field string // the field the attribute ends up in; must not be empty
		bug   string // the regression this row guards against
	}{
		{name: "long source", span: []mtKV{mtS(AttrProxySource, strings.Repeat("ä", 200))}, field: "Source"},
		{name: "long application", span: []mtKV{mtS(AttrAppID, strings.Repeat("x", 1000))}, field: "Application"},
		{name: "long error type", span: []mtKV{mtS(AttrErrorType, strings.Repeat("😀", 100))}, field: "ErrorType"},
		{name: "long domain", span: []mtKV{mtS(AttrServerAddress, strings.Repeat("a", 256)+":443")}, field: "Domain"},
		{name: "long tier", span: []mtKV{mtS(AttrProxyTier, strings.Repeat("T", 300))}, field: "Tier"},
		{name: "long proxy", span: []mtKV{mtS(AttrProxyURL, strings.Repeat("p", 250)+":8080")}, field: "Proxy"},
		{
			name:  "invalid UTF-8 source",
			span:  []mtKV{mtS(AttrProxySource, strings.Repeat("\xffa", 128))},
			field: "Source",
			bug:   "cleanLabel replaced each invalid byte by the 3-byte U+FFFD after cutting at 256 bytes, so 256 bytes of alternating invalid bytes became 512",
		},
		{
			name:  "tier that grows when lower-cased",
			span:  []mtKV{mtS(AttrProxyTier, strings.Repeat("Ⱥ", 128))},
			field: "Tier",
			bug:   "Map lower-cased the tier after cleanLabel; U+023A (2 bytes) lower-cases to U+2C65 (3 bytes), so a 256-byte tier became 384 bytes",
		},
		{
			name:  "domain with upper case and invalid UTF-8",
			span:  []mtKV{mtS(AttrServerAddress, "A"+strings.Repeat("\xff", 255))},
			field: "", // refused: not valid UTF-8
			bug:   "normHost checked the length before strings.ToLower, which replaces every invalid byte by a 3-byte U+FFFD: the domain became 766 bytes",
		},
		{
			name:  "proxy host of 256 bytes with a port",
			span:  []mtKV{mtS(AttrProxyURL, "http://"+strings.Repeat("p", 256)+":8080")},
			field: "", // refused: too long for a host:port label
			bug:   "ProxyOf bounded the host at 256 bytes but then appended the port, giving 261 bytes",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mtMapOK(t, nil, mtJoin(tc.span, mtSelected)) // the first proxy.source wins
			fields := mtStringFields(r)
			if tc.field != "" {
				require.NotEmpty(t, fields[tc.field], "field %s", tc.field)
			}
			for name, v := range fields {
				require.LessOrEqual(t, len(v), maxLabelLen, "field %s", name)
				require.True(t, utf8.ValidString(v), "field %s: %q", name, v)
			}
		})
	}
}

func TestMapperConcurrentUse(t *testing.T) {
	m := mtMapper(MappingConfig{Selector: []string{"my.proxy", AttrProxyURL}})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				var res, span SpanAttrs
				m.SetAttr(&res, AttrServiceName, StringValue("svc"))
				m.SetAttr(&span, "my.proxy", IntValue(int64(g)))
				m.SetAttr(&span, AttrStatusCode, IntValue(int64(200+i%300)))
				info := mtInfo()
				r, rej := m.Map(&res, &span, &info, m.Now())
				if rej != Accepted || r.Application != "svc" || r.StatusCode != uint16(200+i%300) {
					t.Errorf("goroutine %d, span %d: got %v %+v", g, i, rej, r)
					return
				}
			}
		})
	}
	wg.Wait()
}

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
