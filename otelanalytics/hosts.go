package otelanalytics

import (
	"strings"
	"unicode/utf8"
)

// maxLabelLen bounds every string that becomes a label value or a record
// field, so that one attribute cannot blow up memory or disk.
const maxLabelLen = 256

// hostPort finds the host and port of s, a URL
// ("scheme://userinfo@host:port/path?query#fragment"), an authority or a
// bare host, and the scheme before "://" when s has one. The authority
// starts after "scheme://" or "//" (or at the start) and ends where curl,
// Go's net/url and browsers end it: at the first '/', '?' or '#'. Its
// userinfo ends at its last '@'. hostport aliases s and never holds
// userinfo.
//
// ok is false when s is ambiguous about where its userinfo ends: an '@'
// follows the end of the authority. A password with an unescaped '/', '?'
// or '#' ("http://user:12345#f@10.9.9.9:3128", what string concatenation
// makes) reads as host "user", port 12345 to curl and Go, while a reader
// that takes everything up to the last '@' for userinfo (Python's urllib
// reads proxy URLs so) finds 10.9.9.9:3128: either guess may put a piece of
// a credential in a label, so there is no host. A proxy URL (proxy true)
// has no path, and any later '@' makes it ambiguous; in a target URL only
// an '@' before the path (the first '/') does, so that
// "https://example.com/@user?mail=a@b.example" keeps its domain.
func hostPort(s string, proxy bool) (scheme, hostport string, ok bool) {
	// A scheme is letters, digits, '+', '-' and '.' before "://"; a "://"
	// later in the path or query is not one.
	rest := s
	if i := strings.Index(s, "://"); i > 0 && validScheme(s[:i]) {
		scheme, rest = s[:i], s[i+3:]
	} else {
		rest = strings.TrimPrefix(s, "//")
	}
	end := len(rest)
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; c == '/' || c == '?' || c == '#' {
			end = i
			break
		}
	}
	hostport, after := rest[:end], rest[end:]
	if at := strings.LastIndexByte(hostport, '@'); at >= 0 {
		hostport = hostport[at+1:]
	}
	if !proxy {
		if i := strings.IndexByte(after, '/'); i >= 0 {
			after = after[:i] // the path: an '@' there is not userinfo
		}
	}
	if strings.IndexByte(after, '@') >= 0 {
		return scheme, "", false
	}
	return scheme, hostport, true
}

func validScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

// splitHostPort splits an authority without userinfo into host and port. It
// accepts "host", "host:port", "[v6]", "[v6]:port" and a bare IPv6 address.
// ok is false when the authority cannot be a host.
func splitHostPort(auth string) (host, port string, ok bool) {
	if auth == "" {
		return "", "", false
	}
	if auth[0] == '[' {
		end := strings.IndexByte(auth, ']')
		if end < 0 {
			return "", "", false
		}
		host, rest := auth[1:end], auth[end+1:]
		switch {
		case rest == "":
		case rest[0] == ':' && validPort(rest[1:]):
			port = rest[1:]
		default:
			return "", "", false
		}
		return host, port, host != ""
	}
	i := strings.LastIndexByte(auth, ':')
	if i < 0 {
		return auth, "", true
	}
	if strings.IndexByte(auth[:i], ':') >= 0 {
		// More than one colon and no brackets: a bare IPv6 address.
		return auth, "", true
	}
	if !validPort(auth[i+1:]) {
		return "", "", false
	}
	return auth[:i], auth[i+1:], auth[:i] != ""
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return p == ""
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

// normHost lower-cases a host name and drops a trailing dot. Hosts that
// are not valid UTF-8, hold characters no host name has, or are longer than
// maxLabelLen give "".
func normHost(h string) string {
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return ""
	}
	lower := false
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c >= utf8.RuneSelf, 'A' <= c && c <= 'Z':
			lower = true
		case c <= ' ' || c == '@' || c == '/' || c == '?' || c == '#' || c == '\\' || c == '"' || c == 0x7f:
			return ""
		}
	}
	if lower {
		if !utf8.ValidString(h) {
			return ""
		}
		h = strings.ToLower(h)
	}
	if len(h) > maxLabelLen {
		return ""
	}
	return h
}

// DomainOf returns the domain of a target given as a URL, an authority or a
// bare host: lower case, without userinfo, port, path or query. It returns ""
// when nothing host-like can be found, or when s is ambiguous about where
// its userinfo ends (see hostPort).
func DomainOf(s string) string {
	_, hp, ok := hostPort(s, false)
	if !ok {
		return ""
	}
	return domainOfHostPort(hp)
}

// domainOfHostPort is DomainOf of the host and port hostPort found.
func domainOfHostPort(hp string) string {
	host, _, ok := splitHostPort(hp)
	if !ok {
		return ""
	}
	return normHost(host)
}

// defaultPorts are the ports assumed for a proxy URL without one.
var defaultPorts = map[string]string{
	"http":    "80",
	"https":   "443",
	"socks":   "1080",
	"socks4":  "1080",
	"socks4a": "1080",
	"socks5":  "1080",
	"socks5h": "1080",
}

// ProxyOf returns host:port of a proxy URL such as
// "http://user:pw@10.1.2.3:8080": never its credentials. Without a port the
// scheme's default port is used. It returns "" when no host can be found,
// or when s is ambiguous about where its userinfo ends (an '@' after the
// first '/', '?' or '#', see hostPort).
func ProxyOf(s string) string {
	scheme, hp, ok := hostPort(s, true)
	if !ok {
		return ""
	}
	return proxyOfHostPort(scheme, hp)
}

// proxyOfHostPort is ProxyOf of the scheme and the host and port hostPort
// found.
func proxyOfHostPort(scheme, hostport string) string {
	raw, port, ok := splitHostPort(hostport)
	if !ok {
		return ""
	}
	host := normHost(raw)
	if host == "" {
		return ""
	}
	if port != "" && host == raw && len(hostport) <= maxLabelLen {
		return hostport // already host:port in canonical form: no allocation
	}
	if port == "" {
		port = defaultPorts[strings.ToLower(scheme)]
	}
	if strings.IndexByte(host, ':') >= 0 {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	if len(host) > maxLabelLen {
		return ""
	}
	return host
}

// cleanLabel makes s fit to be a label value: valid UTF-8 (invalid bytes
// become U+FFFD), at most maxLabelLen bytes, cut between characters. The
// result aliases s when s needs no change.
func cleanLabel(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			if !utf8.ValidString(s) {
				s = strings.ToValidUTF8(s, "\uFFFD")
			}
			break
		}
	}
	if len(s) > maxLabelLen {
		cut := maxLabelLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}
