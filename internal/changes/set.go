package changes

import "slices"

// maxSetHours bounds the distinct hours a Set keeps; past it, it notes
// the one range from its oldest to its newest sample time.
const maxSetHours = 1024

// Set collects the hours of the sample times a writer changes, so that
// it notes them as runs of hours: a commit with one late sample from
// yesterday and the rest from now notes two hours, not every hour
// between. The zero value is empty. A Set is not safe for concurrent
// use.
type Set struct {
	hours      []int64 // hour numbers, unsorted, with repeats
	minT, maxT int64
	n          int
	wide       bool // more than maxSetHours distinct hours: note [minT, maxT]
}

// Add adds the sample time t (ms).
func (s *Set) Add(t int64) {
	if s.n == 0 || t < s.minT {
		s.minT = t
	}
	if s.n == 0 || t > s.maxT {
		s.maxT = t
	}
	s.n++
	if s.wide {
		return
	}
	h := hourOf(t)
	if len(s.hours) > 0 && s.hours[len(s.hours)-1] == h {
		return
	}
	s.hours = append(s.hours, h)
	if len(s.hours) > 2*maxSetHours {
		slices.Sort(s.hours)
		s.hours = slices.Compact(s.hours)
		if len(s.hours) > maxSetHours {
			s.wide, s.hours = true, nil
		}
	}
}

// Reset empties s, keeping its memory.
func (s *Set) Reset() { *s = Set{hours: s.hours[:0]} }

// Empty reports whether no time was added.
func (s *Set) Empty() bool { return s.n == 0 }

// NoteTo notes the runs of consecutive hours added, one Note a run.
func (s *Set) NoteTo(n interface{ Note(minMs, maxMs int64) }) {
	if s.n == 0 {
		return
	}
	if s.wide {
		n.Note(s.minT, s.maxT)
		return
	}
	slices.Sort(s.hours)
	hs := slices.Compact(s.hours)
	for i := 0; i < len(hs); {
		j := i + 1
		for j < len(hs) && hs[j] == hs[j-1]+1 {
			j++
		}
		n.Note(hs[i]*BucketMs, hs[j-1]*BucketMs+BucketMs-1)
		i = j
	}
}
