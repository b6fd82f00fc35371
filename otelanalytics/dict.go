package otelanalytics

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// NoID is the id of a string the dictionary had no room for. Records keep
// such strings inline; aggregates send them to the overflow series.
const NoID = ^uint32(0)

// DefaultDictSize is the default bound on interned strings.
const DefaultDictSize = 1 << 20

// Ref indexes the strings of a record in Refs.
const (
	RefSource = iota
	RefTier
	RefProxy
	RefApplication
	RefDomain
	RefErrorType
	NumRefs
)

// Refs holds the dictionary ids of a record's strings, indexed by RefSource
// and the other Ref constants.
type Refs [NumRefs]uint32

// Strings returns a record's strings in Refs order.
func (r *Record) Strings() [NumRefs]string {
	return [NumRefs]string{r.Source, r.Tier, r.Proxy, r.Application, r.Domain, r.ErrorType}
}

// SetStrings sets a record's strings from Refs order.
func (r *Record) SetStrings(s *[NumRefs]string) {
	r.Source, r.Tier, r.Proxy, r.Application, r.Domain, r.ErrorType = s[0], s[1], s[2], s[3], s[4], s[5]
}

// DictEntry is one interned string and its id.
type DictEntry struct {
	ID  uint32
	Str string
}

// Dict interns the label strings of records (sources, applications,
// domains…) under small integer ids. Id 0 is the empty string. Ids are
// never reused, so an id written to disk keeps its meaning; the store persists
// every entry in the same write as the first record that uses it.
type Dict struct {
	mu      sync.RWMutex
	ids     map[string]uint32
	strs    []string // by id
	durable []bool   // by id: known to be on disk
	max     int
}

// NewDict returns a dictionary holding at most max strings (0 means
// DefaultDictSize).
func NewDict(max int) *Dict {
	if max <= 0 {
		max = DefaultDictSize
	}
	return &Dict{
		ids:     map[string]uint32{"": 0},
		strs:    []string{""},
		durable: []bool{true},
		max:     max,
	}
}

// Len returns the number of interned strings, the empty one included.
func (d *Dict) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.strs)
}

// Load adds a persisted entry while the store opens.
func (d *Dict) Load(e DictEntry) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.ID == 0 || e.ID == NoID {
		return fmt.Errorf("dictionary entry with reserved id %d", e.ID)
	}
	if old, ok := d.ids[e.Str]; ok && old != e.ID {
		return fmt.Errorf("dictionary string interned twice, as %d and %d", old, e.ID)
	}
	for uint32(len(d.strs)) <= e.ID {
		d.strs = append(d.strs, "")
		d.durable = append(d.durable, false)
	}
	if d.strs[e.ID] != "" && d.strs[e.ID] != e.Str {
		return fmt.Errorf("dictionary id %d holds two strings", e.ID)
	}
	d.strs[e.ID] = e.Str
	d.durable[e.ID] = true
	d.ids[e.Str] = e.ID
	return nil
}

// String returns the string of id; NoID and unknown ids give "".
func (d *Dict) String(id uint32) string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if id < uint32(len(d.strs)) {
		return d.strs[id]
	}
	return ""
}

// Strings resolves ids in place into dst.
func (d *Dict) Strings(ids *Refs, dst *[NumRefs]string) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for i, id := range ids {
		if id < uint32(len(d.strs)) {
			dst[i] = d.strs[id]
		} else {
			dst[i] = ""
		}
	}
}

// Lookup returns the id of s, if interned.
func (d *Dict) Lookup(s string) (uint32, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	id, ok := d.ids[s]
	return id, ok
}

// Intern assigns ids to the strings of recs into refs (which must be as long)
// and appends to pending every entry the batch uses that is not known to be
// durable yet: the caller writes them with the batch and then calls
// MarkDurable. Strings are copied, so recs may alias a request buffer.
func (d *Dict) Intern(recs []Record, refs []Refs, pending []DictEntry) []DictEntry {
	var missing bool
	d.mu.RLock()
	for i := range recs {
		ss := recs[i].Strings()
		for j, s := range ss {
			id, ok := d.ids[s]
			if !ok {
				id, missing = NoID, true
			} else if !d.durable[id] {
				pending = appendPending(pending, id, d.strs[id])
			}
			refs[i][j] = id
		}
	}
	d.mu.RUnlock()
	if !missing {
		return dedupe(pending)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range recs {
		for j := range refs[i] {
			if refs[i][j] != NoID {
				continue
			}
			s := recs[i].Strings()[j]
			id, ok := d.ids[s]
			if !ok {
				if len(d.strs) >= d.max {
					continue // stays NoID
				}
				id = uint32(len(d.strs))
				s = strings.Clone(s)
				d.ids[s] = id
				d.strs = append(d.strs, s)
				d.durable = append(d.durable, false)
			}
			if !d.durable[id] {
				pending = appendPending(pending, id, d.strs[id])
			}
			refs[i][j] = id
		}
	}
	return dedupe(pending)
}

// appendPending adds an entry unless it repeats the previous one; dedupe
// removes the other repeats.
func appendPending(p []DictEntry, id uint32, s string) []DictEntry {
	if len(p) > 0 && p[len(p)-1].ID == id {
		return p
	}
	return append(p, DictEntry{ID: id, Str: s})
}

// dedupe sorts entries by id and drops repeats.
func dedupe(p []DictEntry) []DictEntry {
	if len(p) < 2 {
		return p
	}
	slices.SortFunc(p, func(a, b DictEntry) int { return cmp.Compare(a.ID, b.ID) })
	return slices.CompactFunc(p, func(a, b DictEntry) bool { return a.ID == b.ID })
}

// MarkDurable records that entries are on disk.
func (d *Dict) MarkDurable(entries []DictEntry) {
	if len(entries) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range entries {
		if e.ID < uint32(len(d.durable)) {
			d.durable[e.ID] = true
		}
	}
}
