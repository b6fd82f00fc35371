package otelanalytics

import (
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

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
