package otelanalytics

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// hostCorpus: the inputs of the mapping tests, the fuzz seeds and odd
// values, credentials in many places.
var hostCorpus = []string{
	"", "example.com", "Example.COM", "example.com.", "localhost", "10.1.2.3", "bücher.de",
	"xn--bcher-kva.de", "under_score.example", "example.com:8080", "EXAMPLE.com:443", "example.com:",
	"2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:8443", "http://", "http://user:pw@", "http://:8080",
	"http://proxy.example:port", "http://proxy.example:99999", "http://[::1", "http://[::1]junk",
	"http://bad host:80", "http://bad\x7fhost:80", "http://b\xffd:80", "http://" + strings.Repeat("p", 257) + ":80",
	"http://" + strings.Repeat("p", 250) + ":80", "https://" + strings.Repeat("u", 300) + "@h.example:1",
	"http://user:s3cret@10.1.2.3:8080", "socks5://u:p@host", "user:pw@1.2.3.4:3128",
	"https://user:s3cret@Example.COM:8443/path?token=s3cret#frag", "http://user:p@ss@proxy.example:3128",
	"//user:password@proxy.example", "https://user:s3cret@[2001:db8::1]", "USER:S3CRET@HOST",
	"http://user@host/x@y?z=a@b#c@d", "user:s3cret@host/redirect?to=http://other.example",
	"socks5h://admin:hunter22@[::1]:1080", "http://user:pw@host:port@real.example:80",
	"example.com/r?to=http://evil.example", "//example.com/r?to=https://evil.example",
	"10.0.0.1:8080/x?u=http://user:s3cret@evil:1", "SOCKS5://h.example", "socks4://h.example",
	"http://alice:12/34@proxy.example:8080", "http://alice:p/a/ss@10.0.0.1:3128/", "alice:12/34@10.0.0.1:3128",
	"socks5://u:x/y@h.example", "http://h.example:8080/path?next=a@b", "a@http://h:1", "1http://h:1",
	"http://h.example?x@y", "http://@", "http://@@@", "http://u@h#@", "HTTP://U:P@H.EXAMPLE", "ftp://proxy.example",
	"http://h.example:8080", "https://h.example:8080", "http://[::1]:80", "http://u:p@[::1]:80/",
	"https://shop.example.com/p?token=s3cret", "http://x/y", "x://", "://h", "-://h", "a+b.c-d://u:p@h:1",
}

// TestHostCacheSameAsUncached: the cache returns exactly what DomainOf and
// ProxyOf return, on a miss and on a hit, and when other values share a
// slot.
func TestHostCacheSameAsUncached(t *testing.T) {
	c := NewHostCache()
	for round := range 3 {
		for _, s := range hostCorpus {
			require.Equal(t, DomainOf(s), c.Domain(s), "round %d: Domain(%q)", round, s)
			require.Equal(t, ProxyOf(s), c.Proxy(s), "round %d: Proxy(%q)", round, s)
		}
	}
	var nilCache *HostCache
	for _, s := range hostCorpus {
		require.Equal(t, DomainOf(s), nilCache.Domain(s), s)
		require.Equal(t, ProxyOf(s), nilCache.Proxy(s), s)
	}
}

// TestHostCacheKeyDecides: values with the same key map alike, so a hit
// for one value answers for another correctly; the same credentials-free
// host behind different userinfo is one entry.
func TestHostCacheKeyDecides(t *testing.T) {
	c := NewHostCache()
	require.Equal(t, "10.0.0.1:8080", c.Proxy("http://alice:one@10.0.0.1:8080"))
	require.Equal(t, "10.0.0.1:8080", c.Proxy("http://bob:two@10.0.0.1:8080"))
	require.Equal(t, "10.0.0.1:80", c.Proxy("http://10.0.0.1"))
	require.Equal(t, "10.0.0.1:443", c.Proxy("https://10.0.0.1"))
	require.Equal(t, "shop.example", c.Domain("https://u:p@SHOP.example/a"))
	require.Equal(t, "shop.example", c.Domain("https://SHOP.example/b?c"))
	require.Equal(t, "", c.Domain("/path/only"))
	require.Equal(t, "", c.Domain("http://bad host/"))
	require.Equal(t, "", c.Domain("http://bad host/"))
}

// TestHostCacheNoAliasNoCredentials: entries are copies (the request
// buffer a value came from is reused), and hold no userinfo.
func TestHostCacheNoAliasNoCredentials(t *testing.T) {
	c := NewHostCache()
	buf := []byte("http://user:s3cret@proxy.example:3128")
	s := unsafe.String(&buf[0], len(buf))
	require.Equal(t, "proxy.example:3128", c.Proxy(s))
	dom := []byte("https://user:s3cret@Shop.Example/p?token=s3cret")
	require.Equal(t, "shop.example", c.Domain(unsafe.String(&dom[0], len(dom))))
	copy(buf, "http://user:s3cret@proxy.EXAMPLE:3129")
	copy(dom, "https://user:s3cret@Shop.Exampla/p?token=s3cret")
	require.Equal(t, "proxy.example:3128", c.Proxy("http://proxy.example:3128"))
	require.Equal(t, "shop.example", c.Domain("shop.example"))
	for _, s := range hostCorpus {
		c.Proxy(s)
		c.Domain(s)
	}
	for _, e := range c.proxies {
		for _, v := range []string{e.scheme, e.tail, e.out} {
			require.NotContains(t, v, "s3cret")
			require.NotContains(t, v, "hunter22")
		}
	}
	for _, e := range c.domains {
		require.NotContains(t, e.key, "s3cret")
		require.NotContains(t, e.out, "s3cret")
	}
}

// TestHostCacheBounded: many distinct values leave the tables at their
// size, each entry within the key bound, and answers right.
func TestHostCacheBounded(t *testing.T) {
	c := NewHostCache()
	for i := range 100_000 {
		p := fmt.Sprintf("http://user%d:pw@10.%d.%d.%d:%d", i, i>>16&255, i>>8&255, i&255, 1024+i%5000)
		d := fmt.Sprintf("https://www.site%d.example/%d", i, i)
		require.Equal(t, ProxyOf(p), c.Proxy(p))
		require.Equal(t, DomainOf(d), c.Domain(d))
	}
	long := "http://" + strings.Repeat("a", 1000) + ".example:1"
	require.Equal(t, ProxyOf(long), c.Proxy(long))
	require.Equal(t, DomainOf(long), c.Domain(long))
	require.Len(t, c.proxies, hostCacheProxies)
	require.Len(t, c.domains, hostCacheDomains)
	for _, e := range c.proxies {
		require.LessOrEqual(t, len(e.scheme)+len(e.tail), hostCacheMaxKey)
	}
	for _, e := range c.domains {
		require.LessOrEqual(t, len(e.key), hostCacheMaxKey)
	}
}

// FuzzHostCache: for any value, the cache answers as the functions do,
// and the key alone decides the answer (what makes a hit for another
// value with the same key right).
func FuzzHostCache(f *testing.F) {
	for _, s := range hostCorpus {
		f.Add(s)
	}
	c := NewHostCache()
	f.Fuzz(func(t *testing.T, s string) {
		for range 2 {
			if got, want := c.Domain(s), DomainOf(s); got != want {
				t.Fatalf("Domain(%q) = %q, DomainOf: %q", s, got, want)
			}
			if got, want := c.Proxy(s), ProxyOf(s); got != want {
				t.Fatalf("Proxy(%q) = %q, ProxyOf: %q", s, got, want)
			}
		}
		if k := domainKey(s); DomainOf(k) != DomainOf(s) {
			t.Fatalf("DomainOf(%q) = %q, of its key %q: %q", s, DomainOf(s), k, DomainOf(k))
		}
		if scheme, tail, ok := proxyKey(s); ok {
			if k := scheme + "://" + tail; ProxyOf(k) != ProxyOf(s) {
				t.Fatalf("ProxyOf(%q) = %q, of its key %q: %q", s, ProxyOf(s), k, ProxyOf(k))
			}
		}
	})
}
