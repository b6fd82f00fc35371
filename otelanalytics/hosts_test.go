package otelanalytics

import (
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func TestDomainOf(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		// Bare hosts.
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"localhost", "localhost"},
		{"10.1.2.3", "10.1.2.3"},
		{"bücher.de", "bücher.de"},
		{"xn--bcher-kva.de", "xn--bcher-kva.de"},
		{"under_score.example", "under_score.example"},

		// Authorities.
		{"example.com:8080", "example.com"},
		{"EXAMPLE.com:443", "example.com"},
		{"example.com:", "example.com"},
		{"example.com:65535", "example.com"},
		{"user@example.com", "example.com"},
		{"user:pw@example.com:8080", "example.com"},
		{"@example.com", "example.com"},
		{"a@b@example.com", "example.com"},
		{"[2001:db8::1]:8443", "2001:db8::1"},
		{"[2001:DB8::1]", "2001:db8::1"},
		{"2001:db8::1", "2001:db8::1"},
		{"::1", "::1"},
		{"[fe80::1%25eth0]:80", "fe80::1%25eth0"},

		// URLs.
		{"https://example.com", "example.com"},
		{"https://example.com/", "example.com"},
		{"https://example.com/a/b?c=d#e", "example.com"},
		{"https://example.com?q=1", "example.com"},
		{"https://example.com#frag", "example.com"},
		{"https://user:s3cret@Example.COM:8443/path?token=s3cret#frag", "example.com"},
		{"http://user@example.com/x@y", "example.com"},
		{"http://[2001:db8::1]:8080/x", "2001:db8::1"},
		{"HTTPS://WWW.EXAMPLE.COM./", "www.example.com"},
		{"//example.com/path", "example.com"},
		{"example.com/path", "example.com"},
		{"example.com?x", "example.com"},
		{"ws://example.com:80", "example.com"},

		// Nothing host-like.
		{"", ""},
		{".", ""},
		{"https://", ""},
		{"https:///path", ""},
		{"/path/only", ""},
		{"?q=1", ""},
		{"user@", ""},
		{"https://user:pw@/x", ""},
		{":8080", ""},
		{"example.com:http", ""},
		{"example.com:65536", ""},
		{"example.com:123456", ""},
		{"example.com:-1", ""},
		{"[2001:db8::1", ""},
		{"[]", ""},
		{"[]:80", ""},
		{"[::1]x", ""},
		{"[::1]:x", ""},
		{"[::1]:123456", ""},
		{"exa mple.com", ""},
		{"example.com\t", ""},
		{"exa\nmple.com", ""},
		{"example\x00.com", ""},
		{"example\x7f.com", ""},
		{`exa"mple.com`, ""},
		{`exa\mple.com`, ""},
		{"b\xffcher.de", ""},
		{strings.Repeat("a", 257), ""},
		{strings.Repeat("a", 256) + ":80", strings.Repeat("a", 256)},
		{strings.Repeat("a", 256) + ".", strings.Repeat("a", 256)},
	} {
		t.Run(tc.in, func(t *testing.T) {
			require.Equal(t, tc.want, DomainOf(tc.in))
		})
	}
}

// TestDomainOfInvalidUTF8WithUpperCase: a host that is not valid UTF-8 is
// refused whether or not it has upper-case letters.
func TestDomainOfInvalidUTF8WithUpperCase(t *testing.T) {
	for _, in := range []string{"b\xffcher.de", "B\xffcher.de", "https://B\xffCHER.DE/", "A" + strings.Repeat("\xff", 255)} {
		require.Empty(t, DomainOf(in), "DomainOf(%q)", in)
		require.Empty(t, ProxyOf(in), "ProxyOf(%q)", in)
	}
}

// TestDomainOfNonASCIIUpperCase: non-ASCII upper-case letters are
// lower-cased too.
func TestDomainOfNonASCIIUpperCase(t *testing.T) {
	require.Equal(t, "münchen.de", DomainOf("MÜNCHEN.de"))
	require.Equal(t, "ü.de", DomainOf("Ü.de"))
	require.Equal(t, DomainOf("ÄBC.de"), DomainOf("Äbc.de"))
}

func TestProxyOf(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		// Credentials never survive.
		{"http://user:s3cret@10.1.2.3:8080", "10.1.2.3:8080"},
		{"socks5://u:p@host", "host:1080"},
		{"user:pw@1.2.3.4:3128", "1.2.3.4:3128"},
		{"https://user:s3cret@[2001:db8::1]:8443", "[2001:db8::1]:8443"},
		{"http://user:p@ss@proxy.example:3128", "proxy.example:3128"},
		{"http://user@proxy.example", "proxy.example:80"},
		{"//user:pw@proxy.example:3128", "proxy.example:3128"},

		// Host and port.
		{"https://[2001:db8::1]:8443", "[2001:db8::1]:8443"},
		{"https://[2001:DB8::1]:8443", "[2001:db8::1]:8443"},
		{"http://10.1.2.3:8080", "10.1.2.3:8080"},
		{"http://10.1.2.3:8080/", "10.1.2.3:8080"},
		{"http://[::1]:8080/path?x#y", "[::1]:8080"},
		{"10.1.2.3:8080", "10.1.2.3:8080"},
		{"Proxy.Example:3128", "proxy.example:3128"},
		{"proxy.example.:3128", "proxy.example:3128"},
		{"HTTP://Proxy.Example:3128", "proxy.example:3128"},

		// Default ports.
		{"http://proxy.example", "proxy.example:80"},
		{"http://proxy.example:", "proxy.example:80"},
		{"https://proxy.example", "proxy.example:443"},
		{"HTTPS://Proxy.Example", "proxy.example:443"},
		{"socks://proxy.example", "proxy.example:1080"},
		{"socks4://proxy.example", "proxy.example:1080"},
		{"socks4a://proxy.example", "proxy.example:1080"},
		{"socks5://proxy.example", "proxy.example:1080"},
		{"socks5h://proxy.example", "proxy.example:1080"},
		{"SOCKS5H://proxy.example/", "proxy.example:1080"},
		{"https://[2001:db8::1]", "[2001:db8::1]:443"},
		{"https://[2001:db8::1]:", "[2001:db8::1]:443"},
		{"http://2001:db8::1", "[2001:db8::1]:80"},
		{"http://proxy.example.", "proxy.example:80"},

		// No port known.
		{"proxy.example", "proxy.example"},
		{"ftp://proxy.example", "proxy.example"},
		{"2001:db8::1", "[2001:db8::1]"},
		{"[2001:db8::1]", "[2001:db8::1]"},

		// Nothing host-like.
		{"", ""},
		{"http://", ""},
		{"http://user:pw@", ""},
		{"http://:8080", ""},
		{"http://proxy.example:port", ""},
		{"http://proxy.example:99999", ""},
		{"http://[::1", ""},
		{"http://[::1]junk", ""},
		{"http://bad host:80", ""},
		{"http://bad\x7fhost:80", ""},
		{"http://b\xffd:80", ""},
		{"http://" + strings.Repeat("p", 257) + ":80", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			require.Equal(t, tc.want, ProxyOf(tc.in))
		})
	}
}

func TestSplitHostPort(t *testing.T) {
	for _, tc := range []struct {
		in, host, port string
		ok             bool
	}{
		{in: "host", host: "host", ok: true},
		{in: "host:80", host: "host", port: "80", ok: true},
		{in: "host:", host: "host", ok: true},
		{in: "host:0", host: "host", port: "0", ok: true},
		{in: "host:65535", host: "host", port: "65535", ok: true},
		{in: "host:00080", host: "host", port: "00080", ok: true},
		{in: "host:65536"},
		{in: "host:123456"},
		{in: "host:8o"},
		{in: "host:+80"},
		{in: ":80"},
		{in: ":"},
		{in: ""},
		{in: "[::1]", host: "::1", ok: true},
		{in: "[::1]:443", host: "::1", port: "443", ok: true},
		{in: "[::1]:", host: "::1", ok: true},
		{in: "[10.0.0.1]:1", host: "10.0.0.1", port: "1", ok: true},
		{in: "[::1]:99999"},
		{in: "[::1]:x"},
		{in: "[::1]x"},
		{in: "[::1"},
		{in: "[]"},
		{in: "[]:80"},
		{in: "::1", host: "::1", ok: true},
		{in: "2001:db8::1:8080", host: "2001:db8::1:8080", ok: true},
		{in: "a:b:c", host: "a:b:c", ok: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			host, port, ok := splitHostPort(tc.in)
			require.Equal(t, tc.ok, ok)
			if ok {
				require.Equal(t, tc.host, host)
				require.Equal(t, tc.port, port)
			}
		})
	}
}

func TestNormHost(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"example.com", "example.com"},
		{"EXAMPLE.Com", "example.com"},
		{"example.com.", "example.com"},
		{"example.com..", "example.com."},
		{".", ""},
		{"", ""},
		{"bücher.de", "bücher.de"},
		{"BÜCHER.de", "bücher.de"},
		{"b\xffcher.de", ""},
		{"a b", ""},
		{"a\tb", ""},
		{"a\x00", ""},
		{"a\x1f", ""},
		{"a\x7f", ""},
		{"a@b", ""},
		{"a/b", ""},
		{"a?b", ""},
		{"a#b", ""},
		{`a\b`, ""},
		{`a"b`, ""},
		{"a:b", "a:b"},
		{"a%b", "a%b"},
		{strings.Repeat("x", 256), strings.Repeat("x", 256)},
		{strings.Repeat("X", 256), strings.Repeat("x", 256)},
		{strings.Repeat("x", 256) + ".", strings.Repeat("x", 256)},
		{strings.Repeat("x", 257), ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			require.Equal(t, tc.want, normHost(tc.in))
		})
	}
}

func TestCleanLabel(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, tc := range []struct {
		name, in, want string
	}{
		{name: "empty", in: "", want: ""},
		{name: "ascii", in: "dc-eu", want: "dc-eu"},
		{name: "utf-8", in: "zürich-€-😀", want: "zürich-€-😀"},
		{name: "exactly 256", in: long[:256], want: long[:256]},
		{name: "257", in: long[:257], want: long[:256]},
		{name: "long", in: long, want: long[:256]},
		{name: "invalid byte", in: "a\xffb", want: "a\uFFFDb"},
		{name: "invalid run", in: "a\xff\xfe\xfdb", want: "a\uFFFDb"},
		{name: "truncated rune at end", in: "abc\xe2\x82", want: "abc\uFFFD"},
		{name: "surrogate", in: "a\xed\xa0\x80b", want: "a\uFFFDb"},
		{name: "overlong", in: "a\xc0\xafb", want: "a\uFFFDb"},
		{name: "replacement character kept", in: "a\uFFFD", want: "a\uFFFD"},
		{name: "long with replacement character at the cut", in: long[:253] + "\uFFFD" + "b", want: long[:253] + "\uFFFD"},

		// Cutting at 256 bytes never splits a rune.
		{name: "2-byte rune split after 1 byte", in: long[:255] + "é", want: long[:255]},
		{name: "2-byte rune ends at 256", in: long[:254] + "é" + "b", want: long[:254] + "é"},
		{name: "3-byte rune split after 1 byte", in: long[:255] + "€", want: long[:255]},
		{name: "3-byte rune split after 2 bytes", in: long[:254] + "€", want: long[:254]},
		{name: "3-byte rune ends at 256", in: long[:253] + "€" + "b", want: long[:253] + "€"},
		{name: "4-byte rune split after 1 byte", in: long[:255] + "😀", want: long[:255]},
		{name: "4-byte rune split after 2 bytes", in: long[:254] + "😀", want: long[:254]},
		{name: "4-byte rune split after 3 bytes", in: long[:253] + "😀", want: long[:253]},
		{name: "4-byte rune ends at 256", in: long[:252] + "😀" + "b", want: long[:252] + "😀"},
		{name: "all 3-byte runes", in: strings.Repeat("€", 100), want: strings.Repeat("€", 85)},
		{name: "all 4-byte runes", in: strings.Repeat("😀", 100), want: strings.Repeat("😀", 64)},
		{name: "all 2-byte runes", in: strings.Repeat("é", 200), want: strings.Repeat("é", 128)},
		{name: "invalid bytes at the cut", in: long[:250] + "\xff\xff\xff\xff\xff\xff\xff\xff", want: long[:250] + "\uFFFD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cleanLabel(tc.in)
			require.Equal(t, tc.want, got)
			require.True(t, utf8.ValidString(got))
			require.LessOrEqual(t, len(got), maxLabelLen)
		})
	}
}

func TestCleanLabelAliasesCleanInput(t *testing.T) {
	in := strings.Repeat("x", 300)
	got := cleanLabel(in)
	require.Equal(t, in[:256], got)
	require.True(t, sameData(in, got), "a cut must not copy")
	short := "dc-eu"
	require.True(t, sameData(short, cleanLabel(short)), "a clean label must not be copied")
}

// sameData reports whether b starts where a starts in memory.
func sameData(a, b string) bool {
	return len(a) > 0 && len(b) > 0 && unsafe.StringData(a) == unsafe.StringData(b)
}

// TestCleanLabelBoundWithInvalidUTF8 checks the documented bound on inputs
// that need replacement characters.
func TestCleanLabelBoundWithInvalidUTF8(t *testing.T) {
	for _, in := range []string{
		strings.Repeat("\xffa", 128),
		strings.Repeat("\xff", 300),
		"bad\xfe" + strings.Repeat("e", 300),
	} {
		got := cleanLabel(in)
		require.True(t, utf8.ValidString(got))
		require.LessOrEqual(t, len(got), maxLabelLen, "cleanLabel(%q)", in)
	}
}

// htUserinfoParts returns the parts of what any reader could take for the
// userinfo of s (split at ':', '@', '/', '?', '#', '[' and ']'), and the
// input with that userinfo cut out. It is deliberately wider than the code
// under test: the userinfo is everything before the last '@' after
// "scheme://" or "//" (or the start) — up to the path (the first '/') for a
// target, anywhere for a proxy URL, which has no path — so a '?' or '#' in
// a password, which RFC 3986 parsers take for the end of the authority, is
// no excuse. The only parts not returned are digits that could be a default
// port ProxyOf adds (80, 443, 1080).
func htUserinfoParts(s string, proxy bool) (parts []string, rest string) {
	start := 0
	if i := strings.Index(s, "://"); i > 0 && htIsScheme(s[:i]) {
		start = i + 3
	} else if strings.HasPrefix(s, "//") {
		start = 2
	}
	region := s[start:]
	if i := strings.IndexByte(region, '/'); i >= 0 && !proxy {
		region = region[:i]
	}
	at := strings.LastIndexByte(region, '@')
	if at < 0 {
		return nil, s
	}
	for _, p := range strings.FieldsFunc(region[:at], func(r rune) bool { return strings.ContainsRune(":@/?#[]", r) }) {
		if strings.Trim(p, "0123456789") == "" && (strings.Contains("80", p) || strings.Contains("443", p) || strings.Contains("1080", p)) {
			continue
		}
		parts = append(parts, p)
	}
	return parts, s[:start] + "\x00" + s[start+at:]
}

// htLeak returns the first part of the userinfo of s that out holds and
// the rest of s does not, or "".
func htLeak(s, out string, proxy bool) string {
	parts, rest := htUserinfoParts(s, proxy)
	lowerRest, lowerOut := strings.ToLower(rest), strings.ToLower(out)
	for _, p := range parts {
		lp := strings.ToLower(p)
		if !strings.Contains(lowerRest, lp) && strings.Contains(lowerOut, lp) {
			return p
		}
	}
	return ""
}

func htIsScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// TestUserinfoOracle checks the fuzz test's own view of the userinfo, so
// that the fuzz test cannot pass by finding nothing to look for.
func TestUserinfoOracle(t *testing.T) {
	for _, tc := range []struct {
		in, rest string
		proxy    bool
		parts    []string
	}{
		{in: "http://user:s3cret@10.1.2.3:8080", parts: []string{"user", "s3cret"}, rest: "http://\x00@10.1.2.3:8080"},
		{in: "user:pw@1.2.3.4:3128", parts: []string{"user", "pw"}, rest: "\x00@1.2.3.4:3128"},
		{in: "//admin:hunter22@h", parts: []string{"admin", "hunter22"}, rest: "//\x00@h"},
		{in: "http://user:p@ss@h/x@y", parts: []string{"user", "p", "ss"}, rest: "http://\x00@h/x@y"},
		{in: "http://user:p@ss@h/x@y", proxy: true, parts: []string{"user", "p", "ss", "h", "x"}, rest: "http://\x00@y"},
		{in: "socks5://1080:abcd@h", parts: []string{"abcd"}, rest: "socks5://\x00@h"},
		{in: "a b://user1@h", rest: "a b://user1@h"},
		{in: "a b://user1@h", proxy: true, parts: []string{"a b", "user1"}, rest: "\x00@h"},
		{in: "https://[2001:db8::1]:8443", rest: "https://[2001:db8::1]:8443"},
		{in: "host/path@x", rest: "host/path@x"},
		{in: "host/path@x", proxy: true, parts: []string{"host", "path"}, rest: "\x00@x"},
		// The attacks of issue 17: '?' and '#' in a password, digits too.
		{in: "http://user:12345#f@10.9.9.9:3128", parts: []string{"user", "12345", "f"}, rest: "http://\x00@10.9.9.9:3128"},
		{in: "http://s3cretUSERtok?@10.9.9.9", proxy: true, parts: []string{"s3cretUSERtok"}, rest: "http://\x00@10.9.9.9"},
		{in: "https://u:1080@h", parts: []string{"u"}, rest: "https://\x00@h"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			parts, rest := htUserinfoParts(tc.in, tc.proxy)
			require.Equal(t, tc.parts, parts)
			require.Equal(t, tc.rest, rest)
		})
	}
	// What the code before issue 17 returned for the attacks: the oracle
	// calls each a leak.
	require.Equal(t, "user", htLeak("http://user:12345#f@10.9.9.9:3128", "user:12345", true))
	require.Equal(t, "s3cretUSERtok", htLeak("http://s3cretUSERtok?@10.9.9.9:3128", "s3cretusertok:80", true))
	require.Equal(t, "s3cretUSERtok", htLeak("https://s3cretUSERtok?@shop.example/", "s3cretusertok", false))
	require.Equal(t, "12345", htLeak("http://ab:12345#@h", "h:12345", true), "digits too")
	require.Empty(t, htLeak("socks5://u:1080@h", "h:1080", true), "a default port is not a leak")
}

// FuzzProxyAndDomainNeverLeakUserinfo: no part of what any reader could
// take for userinfo reaches the proxy or domain label, and the labels hold
// nothing a host name cannot. Before issue 17 it missed passwords holding
// '?' or '#': its oracle ended the userinfo where RFC 3986 ends the
// authority, as the code did, and skipped parts of digits and parts
// shorter than four bytes; its seeds had no such password.
func FuzzProxyAndDomainNeverLeakUserinfo(f *testing.F) {
	for _, s := range []string{
		"http://user:s3cret@10.1.2.3:8080",
		"socks5://u:p@host",
		"user:pw@1.2.3.4:3128",
		"https://[2001:db8::1]:8443",
		"https://user:s3cret@Example.COM:8443/path?token=s3cret#frag",
		"http://user:p@ss@proxy.example:3128",
		"//user:password@proxy.example",
		"https://user:s3cret@[2001:db8::1]",
		"USER:S3CRET@HOST",
		"http://user@host/x@y?z=a@b#c@d",
		"user:s3cret@host/redirect?to=http://other.example",
		"socks5h://admin:hunter22@[::1]:1080",
		"http://user:pw@host:port@real.example:80",
		"http://user:12345#f@10.9.9.9:3128",
		"http://s3cretUSERtok?@10.9.9.9:3128",
		"http://alice:12/34@proxy.example:8080",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []struct {
			name  string
			out   string
			proxy bool
		}{{"ProxyOf", ProxyOf(s), true}, {"DomainOf", DomainOf(s), false}} {
			if !utf8.ValidString(c.out) {
				t.Fatalf("%s(%q) = %q: invalid UTF-8", c.name, s, c.out)
			}
			if i := strings.IndexFunc(c.out, func(r rune) bool {
				return r <= ' ' || r == 0x7f || strings.ContainsRune(`@/?#\"`, r)
			}); i >= 0 {
				t.Fatalf("%s(%q) = %q: has %q", c.name, s, c.out, c.out[i])
			}
			if p := htLeak(s, c.out, c.proxy); p != "" {
				t.Fatalf("%s(%q) = %q: has %q of the userinfo", c.name, s, c.out, p)
			}
		}
	})
}

// TestSchemeInQuery: a "://" in the path or query of a URL without a scheme
// is not a scheme; the host is still the one before the path.
func TestSchemeInQuery(t *testing.T) {
	require.Equal(t, "example.com", DomainOf("example.com/r?to=http://evil.example"))
	require.Equal(t, "example.com", DomainOf("//example.com/r?to=https://evil.example"))
	require.Equal(t, "example.com", DomainOf("https://example.com/r?to=http://evil.example"))
	require.Equal(t, "example.com", DomainOf("example.com/x?u=http://user:s3cret@evil:1"))
	require.Equal(t, "10.0.0.1:8080", ProxyOf("10.0.0.1:8080/x?u=http://evil:1"))
	require.Equal(t, "h.example:1080", ProxyOf("SOCKS5://h.example"))
}

// TestAmbiguousUserinfo is attack 4 of issue 17: a password with an
// unescaped '/', '?' or '#' (not a valid URL, but what string
// concatenation produces) is read by curl and Go's net/url as the end of
// the host, by a reader that takes userinfo up to the last '@' (Python's
// urllib for proxy URLs) as part of the userinfo. Either guess may put a
// credential in a label, so such a URL gives no proxy and no domain.
func TestAmbiguousUserinfo(t *testing.T) {
	for _, in := range []string{
		"http://user:12345#f@10.9.9.9:3128",
		"http://s3cretUSERtok?@10.9.9.9:3128",
		"http://s3cretUSERtok?@10.9.9.9",
		"https://user:pw?x#y@shop.example/path",
		"user:12345#f@10.9.9.9:3128",
		"//user:12345?@10.9.9.9:3128",
		"socks5://u:x?y@h.example",
		"http://user:p#w@h.example/x@y",
	} {
		require.Empty(t, ProxyOf(in), "ProxyOf(%q)", in)
		require.Empty(t, DomainOf(in), "DomainOf(%q)", in)
	}
	// Proxy URLs have no path: an '@' anywhere after the authority's end
	// makes one ambiguous.
	for _, in := range []string{
		"http://alice:12/34@proxy.example:8080",
		"http://alice:p/a/ss@10.0.0.1:3128/",
		"alice:12/34@10.0.0.1:3128",
		"socks5://u:x/y@h.example",
		"http://h.example:8080/path?next=a@b",
		"http://user@host/x@y?z=a@b#c@d",
		"10.0.0.1:8080/x?u=http://user:s3cret@evil:1",
	} {
		require.Empty(t, ProxyOf(in), "ProxyOf(%q)", in)
	}
	// A target's path begins at the first '/': an '@' after it is no
	// userinfo, and the host before it is what every client connects to.
	for in, want := range map[string]string{
		"https://example.com/@user":                "example.com",
		"https://example.com/p?mail=a@b.example":   "example.com",
		"https://u:p@example.com/x?next=a@b#c@d":   "example.com",
		"https://example.com/?q=a#user:12345#f@x":  "example.com",
		"https://example.com:8443/a?b@c/d":         "example.com",
		"example.com/login?user=bob@corp.example":  "example.com",
		"http://user:pw@h.example/redirect@x?y#@z": "h.example",
	} {
		require.Equal(t, want, DomainOf(in), in)
	}
	// Nothing changes for URLs without an '@' past the authority.
	require.Equal(t, "10.9.9.9:3128", ProxyOf("http://user:12345%23f@10.9.9.9:3128"))
	require.Equal(t, "10.9.9.9:80", ProxyOf("http://s3cretUSERtok%3F@10.9.9.9"))
	require.Equal(t, "h.example:8080", ProxyOf("http://h.example:8080/path?q#f"))
	require.Equal(t, "shop.example", DomainOf("https://shop.example?q=1#f"))
}
