package otelanalytics

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

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
