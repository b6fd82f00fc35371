package otelanalytics

import (
	"hash/maphash"
	"strings"
	"unsafe"
)

// HostCache memoises DomainOf and ProxyOf for one decoder: flat out, most
// spans repeat a few hundred targets and a few thousand proxy URLs, and a
// lookup costs less than parsing them again. It returns exactly what
// DomainOf and ProxyOf return, so never a URL's credentials.
//
// It keeps no credentials either: an entry is keyed by the part of the
// value its result depends on, without userinfo, path or query — for a
// target the authority after its last '@', for a proxy URL its scheme and
// host:port (DomainOf and ProxyOf read nothing else) — and holds copies, since
// the values it is given alias request buffers that are reused.
//
// It is bounded by construction: two direct-mapped tables, 4,096 proxy and
// 1,024 domain entries, whose slots a new key overwrites; keys longer than
// 256 bytes are not kept. At most about 3 MiB, typically a few hundred
// KiB.
//
// A HostCache is not safe for concurrent use; the zero value is not
// usable, NewHostCache makes one. A nil *HostCache computes every value.
type HostCache struct {
	seed    maphash.Seed
	proxies []proxyEntry
	domains []domainEntry
}

type proxyEntry struct{ scheme, tail, out string }
type domainEntry struct{ key, out string }

// The sizes of the HostCache tables (powers of two), and the longest key
// it keeps.
const (
	hostCacheProxies = 1 << 12
	hostCacheDomains = 1 << 10
	hostCacheMaxKey  = maxLabelLen
)

// NewHostCache returns an empty cache.
func NewHostCache() *HostCache {
	return &HostCache{
		seed:    maphash.MakeSeed(),
		proxies: make([]proxyEntry, hostCacheProxies),
		domains: make([]domainEntry, hostCacheDomains),
	}
}

// domainKey is what DomainOf(s) depends on: the authority without its
// userinfo.
func domainKey(s string) string {
	_, auth := authority(s)
	return stripUserinfo(auth)
}

// Domain returns DomainOf(s).
func (c *HostCache) Domain(s string) string {
	k := domainKey(s)
	if c == nil || len(k) > hostCacheMaxKey {
		return DomainOf(s)
	}
	e := &c.domains[maphash.String(c.seed, k)&(hostCacheDomains-1)]
	if e.key == k { // an unused slot matches only "", whose domain is ""
		return e.out
	}
	out := DomainOf(s)
	c1 := copies(k, out)
	e.key, e.out = c1[0], c1[1]
	return e.out
}

// proxyKey splits a proxy URL with a scheme into the scheme and the host
// and port, found as ProxyOf finds them (after the last '@' before any
// '?' or '#', up to the path); ProxyOf(s) depends on nothing else. ok is
// false without a scheme.
func proxyKey(s string) (scheme, tail string, ok bool) {
	i := strings.Index(s, "://")
	if i <= 0 || !validScheme(s[:i]) {
		return "", "", false
	}
	scheme, rest := s[:i], s[i+3:]
	start, end := 0, len(rest)
	for j := 0; j < len(rest); j++ {
		switch rest[j] {
		case '@':
			start, end = j+1, len(rest)
		case '/':
			if end == len(rest) {
				end = j
			}
		case '?', '#':
			end = min(end, j)
			j = len(rest)
		}
	}
	return scheme, rest[start:end], true
}

// Proxy returns ProxyOf(s).
func (c *HostCache) Proxy(s string) string {
	scheme, tail, ok := proxyKey(s)
	if c == nil || !ok || len(scheme)+len(tail) > hostCacheMaxKey {
		return ProxyOf(s)
	}
	h := maphash.String(c.seed, tail) ^ uint64(len(scheme))*0x9e3779b97f4a7c15
	e := &c.proxies[h&(hostCacheProxies-1)]
	if e.tail == tail && e.scheme == scheme { // an unused slot has no scheme
		return e.out
	}
	out := ProxyOf(s)
	c3 := copies(scheme, tail, out)
	e.scheme, e.tail, e.out = c3[0], c3[1], c3[2]
	return e.out
}

// copies copies strings into one new allocation: the entries of a
// HostCache never alias the values they were made from.
func copies(ss ...string) [3]string {
	n := 0
	for _, s := range ss {
		n += len(s)
	}
	var out [3]string
	if n == 0 {
		return out
	}
	buf := make([]byte, 0, n)
	for _, s := range ss {
		buf = append(buf, s...)
	}
	all := unsafe.String(&buf[0], n)
	for i, s := range ss {
		out[i], all = all[:len(s)], all[len(s):]
	}
	return out
}
