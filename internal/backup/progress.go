package backup

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// ProgressBar returns a Progress function that draws a bar on w, such as
//
//	[==============>               ]  48.0%  1.2 GiB / 2.5 GiB
//
// when w is a terminal, and does nothing otherwise (a file, a pipe, a
// log). It redraws only when the tenth of a percent changes and ends the
// line when done reaches total. It is not safe for concurrent use.
func ProgressBar(w io.Writer) func(done, total int64) {
	if !isTerminal(w) {
		return func(int64, int64) {}
	}
	return (&bar{w: w, width: 30, last: -1}).update
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

type bar struct {
	w        io.Writer
	width    int
	last     int64 // per mille drawn last
	finished bool
}

func (b *bar) update(done, total int64) {
	if b.finished || total <= 0 {
		return
	}
	done = min(max(done, 0), total)
	pm := done * 1000 / total
	if pm == b.last {
		return
	}
	b.last = pm
	filled := int(pm) * b.width / 1000
	head := ""
	if filled < b.width {
		head = ">"
	}
	fmt.Fprintf(b.w, "\r[%s%s%s] %5.1f%%  %s / %s", strings.Repeat("=", filled), head,
		strings.Repeat(" ", max(b.width-filled-1, 0)), float64(pm)/10, humanBytes(done), humanBytes(total))
	if done == total {
		fmt.Fprintln(b.w)
		b.finished = true
	}
}

// humanBytes formats n in binary units: 512 B, 1.5 KiB, 2.3 GiB.
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := -1
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
