package otelanalytics

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func rec(source, domain string) Record {
	return Record{Source: source, Tier: "free", Application: "app", Domain: domain, Weight: 1}
}

func TestDictIntern(t *testing.T) {
	d := NewDict(0)
	recs := []Record{rec("a", "x.com"), rec("b", "x.com"), rec("a", "")}
	refs := make([]Refs, len(recs))
	pending := d.Intern(recs, refs, nil)
	// "free" and "app" are shared; every new string is pending exactly once.
	require.Len(t, pending, 5) // a, free, app, x.com, b
	require.Equal(t, refs[0][RefSource], refs[2][RefSource])
	require.Equal(t, refs[0][RefDomain], refs[1][RefDomain])
	require.Equal(t, uint32(0), refs[2][RefDomain], "the empty string is id 0")
	require.Equal(t, uint32(0), refs[0][RefProxy])
	for i, r := range recs {
		var s [NumRefs]string
		d.Strings(&refs[i], &s)
		require.Equal(t, r.Strings(), s)
	}

	// Until marked durable, entries stay pending for every batch using them.
	again := d.Intern(recs[:1], refs[:1], nil)
	require.Len(t, again, 4)
	d.MarkDurable(pending)
	require.Empty(t, d.Intern(recs, refs, nil))
	require.Equal(t, 6, d.Len())

	id, ok := d.Lookup("x.com")
	require.True(t, ok)
	require.Equal(t, "x.com", d.String(id))
	_, ok = d.Lookup("nope")
	require.False(t, ok)
	require.Equal(t, "", d.String(12345))
	require.Equal(t, "", d.String(NoID))
}

func TestDictFullGivesNoID(t *testing.T) {
	d := NewDict(3) // "", and two more
	recs := []Record{{Source: "s1", Domain: "d1"}, {Source: "s2", Domain: "d2"}}
	refs := make([]Refs, 2)
	d.Intern(recs, refs, nil)
	require.Equal(t, NoID, refs[1][RefSource])
	require.Equal(t, NoID, refs[1][RefDomain])
	require.NotEqual(t, NoID, refs[0][RefSource])
	var s [NumRefs]string
	d.Strings(&refs[1], &s)
	require.Equal(t, "", s[RefSource], "strings without an id are not in the dictionary")
}

func TestDictLoad(t *testing.T) {
	d := NewDict(0)
	require.NoError(t, d.Load(DictEntry{ID: 5, Str: "five"}))
	require.NoError(t, d.Load(DictEntry{ID: 5, Str: "five"}), "loading the same entry twice is harmless")
	require.Error(t, d.Load(DictEntry{ID: 0, Str: "zero"}))
	require.Error(t, d.Load(DictEntry{ID: NoID, Str: "none"}))
	require.Error(t, d.Load(DictEntry{ID: 6, Str: "five"}))
	require.Error(t, d.Load(DictEntry{ID: 5, Str: "other"}))
	// New strings get ids after the highest loaded one.
	refs := make([]Refs, 1)
	pending := d.Intern([]Record{{Source: "new"}}, refs, nil)
	require.Equal(t, []DictEntry{{ID: 6, Str: "new"}}, pending)
	d.MarkDurable(nil)
	d.MarkDurable([]DictEntry{{ID: 999}}) // unknown ids are ignored
}

func TestDictConcurrent(t *testing.T) {
	d := NewDict(0)
	var wg sync.WaitGroup
	ids := make([][]Refs, 4)
	for g := range 4 {
		wg.Go(func() {
			recs := make([]Record, 200)
			for i := range recs {
				recs[i] = rec("src", "d"+string(rune('a'+i%26)))
			}
			ids[g] = make([]Refs, len(recs))
			d.MarkDurable(d.Intern(recs, ids[g], nil))
		})
	}
	wg.Wait()
	for g := 1; g < 4; g++ {
		require.Equal(t, ids[0], ids[g], "every goroutine sees the same ids")
	}
	require.Equal(t, 1+3+26, d.Len())
}
