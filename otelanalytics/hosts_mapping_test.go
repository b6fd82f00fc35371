package otelanalytics

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/selfmetrics"
)

// TestMapperCountsDroppedHosts: a span whose proxy URL or target is
// ambiguous about its userinfo (attack 4 of issue 17) or unparsable is
// accepted with an empty label, and counted; a span with no such
// attribute, or a good one, is not.
func TestMapperCountsDroppedHosts(t *testing.T) {
	reg := selfmetrics.New()
	m := mtMapper(MappingConfig{})
	m.CountDroppedHosts(reg)
	info := mtInfo()
	mapOne := func(kvs ...mtKV) Record {
		t.Helper()
		r, rej := m.Map(mtAttrs(m, nil), mtAttrs(m, append(append([]mtKV(nil), mtSelected...), kvs...)), &info, mtNow.UnixNano())
		require.Equal(t, Accepted, rej)
		return r
	}
	r := mapOne(mtS(AttrProxyURL, "http://user:12345#f@10.9.9.9:3128"), mtS(AttrURLFull, "https://s3cretUSERtok?@shop.example/"))
	require.Empty(t, r.Proxy)
	require.Empty(t, r.Domain)
	r = mapOne(mtS(AttrProxyURL, "http://bad host:1"))
	require.Empty(t, r.Proxy)
	r = mapOne(mtS(AttrProxyURL, "http://u:p@10.9.9.9:3128"), mtS(AttrURLFull, "https://shop.example/@u?m=a@b"))
	require.Equal(t, "10.9.9.9:3128", r.Proxy)
	require.Equal(t, "shop.example", r.Domain)
	mapOne() // no proxy URL, no target: nothing to drop

	require.Equal(t, uint64(2), m.proxyDropped.Get())
	require.Equal(t, uint64(1), m.domainDropped.Get())
	families, err := reg.Gather()
	require.NoError(t, err)
	var found bool
	for _, f := range families {
		found = found || f.GetName() == "proxylens_span_hosts_dropped_total"
	}
	require.True(t, found)
}
