package backup

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	partialSuffix  = ".partial"
	deletingSuffix = ".deleting"
)

// IncompleteGrace is how long an incomplete backup must have gone without
// a write before Prune removes it: until then it may still be being
// written.
const IncompleteGrace = time.Hour

// List returns the backups in root, oldest first: complete ones, and the
// incomplete and corrupt ones that a crash or damage left. Other files in
// root are ignored. A missing root holds no backups. The status comes from
// the manifest alone (for an archive, read through its footer); Verify
// checks the files.
func List(root string) ([]Info, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	des, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	var out []Info
	for _, de := range des {
		if info, ok := describe(root, de); ok {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b Info) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		_, na, _ := ParseID(a.ID)
		_, nb, _ := ParseID(b.ID)
		return cmp.Or(cmp.Compare(na, nb), strings.Compare(a.Path, b.Path))
	})
	return out, nil
}

// describe tells whether a root entry is a backup, and which.
func describe(root string, de fs.DirEntry) (Info, bool) {
	name := de.Name()
	p := filepath.Join(root, name)
	if strings.HasPrefix(name, ".") && de.IsDir() {
		for _, suffix := range []string{partialSuffix, deletingSuffix} {
			id, ok := strings.CutSuffix(name[1:], suffix)
			if !ok {
				continue
			}
			t, _, ok := ParseID(id)
			if !ok {
				return Info{}, false
			}
			size, _ := treeSize(p)
			problem := "not finished: being written, or interrupted"
			if suffix == deletingSuffix {
				problem = "being deleted"
			}
			return Info{ID: id, Path: p, Status: StatusIncomplete, Size: size, Created: t, Problem: problem}, true
		}
		return Info{}, false
	}
	id, archive := strings.CutSuffix(name, ArchiveExt)
	t, _, ok := ParseID(id)
	if !ok || archive == de.IsDir() {
		return Info{}, false
	}
	info := Info{ID: id, Path: p, Archive: archive, Created: t}
	var m *Manifest
	var err error
	if archive {
		m, err = readArchiveManifest(p)
		if st, serr := os.Stat(p); serr == nil {
			info.Size = st.Size()
		}
	} else {
		var b []byte
		b, err = readLimited(filepath.Join(p, ManifestName))
		if err == nil {
			m, err = decodeManifest(b)
			info.Size = m.sizeWith(len(b))
		} else if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w: no %s", ErrIncomplete, ManifestName)
		}
		if m == nil {
			info.Size, _ = treeSize(p)
		}
	}
	if err == nil && m.ID != id {
		err = fmt.Errorf("%s is of backup %s, not %s", ManifestName, m.ID, id)
	}
	switch {
	case err == nil:
		info.Status, info.Created = StatusComplete, m.Created
	case errors.Is(err, ErrIncomplete):
		info.Status, info.Problem = StatusIncomplete, err.Error()
	default:
		info.Status, info.Problem = StatusCorrupt, err.Error()
	}
	return info, true
}

func (m *Manifest) sizeWith(manifestBytes int) int64 {
	if m == nil {
		return 0
	}
	return m.Size + int64(manifestBytes)
}

// Prune deletes from root the complete and corrupt backups created more
// than keep before now, except the newest complete one, and the incomplete
// ones that nothing has written to for IncompleteGrace. keep <= 0 keeps
// every complete and corrupt backup. It returns the paths it removed; it
// goes on after an error and returns them all.
//
// A backup directory is first renamed to .<id>.deleting, so that a crash
// halfway leaves an incomplete backup, never a complete one with files
// missing.
func Prune(root string, keep time.Duration, now time.Time) ([]string, error) {
	infos, err := List(root)
	if err != nil {
		return nil, fmt.Errorf("prune backups: %w", err)
	}
	newest := -1
	for i, in := range infos {
		if in.Status == StatusComplete {
			newest = i
		}
	}
	var removed []string
	var errs []error
	for i, in := range infos {
		var drop bool
		switch in.Status {
		case StatusIncomplete:
			_, last := treeSize(in.Path)
			drop = now.Sub(time.Unix(0, last)) > IncompleteGrace
		default:
			drop = keep > 0 && i != newest && now.Sub(in.Created) > keep
		}
		if !drop {
			continue
		}
		if err := remove(in); err != nil {
			errs = append(errs, fmt.Errorf("prune backup %s: %w", in.ID, err))
			continue
		}
		removed = append(removed, in.Path)
	}
	return removed, errors.Join(errs...)
}

func remove(in Info) error {
	st, err := os.Lstat(in.Path)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return os.Remove(in.Path)
	}
	p := in.Path
	if in.Status != StatusIncomplete {
		p = filepath.Join(filepath.Dir(in.Path), "."+in.ID+deletingSuffix)
		if err := os.Rename(in.Path, p); err != nil {
			return err
		}
	}
	return os.RemoveAll(p)
}
