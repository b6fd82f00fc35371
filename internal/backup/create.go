package backup

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// CreateOptions configures Create.
type CreateOptions struct {
	// Snapshot fills dir, an empty directory that exists, with a consistent
	// copy of the data directory: everything acknowledged before the call
	// must be in it. Only regular files and directories are allowed; hard
	// links (as a Pebble checkpoint makes) are fine. Required.
	Snapshot func(ctx context.Context, dir string) error
	// Archive writes <root>/<id>.tar.zst instead of the directory <root>/<id>.
	Archive bool
	// Now returns the current time; nil means time.Now. It names the backup.
	Now func() time.Time
	// Progress, if not nil, is called as the snapshot's bytes are hashed (and
	// archived), with the bytes done and the total, from Create's goroutine.
	Progress func(done, total int64)
	// Meta is copied into the manifest (e.g. the proxylens version and the
	// data format version).
	Meta map[string]string
}

// Status is the state of a backup found by List.
type Status string

// Statuses of a backup.
const (
	// StatusComplete: the manifest is present and parses. Verify checks the
	// files themselves.
	StatusComplete Status = "complete"
	// StatusIncomplete: being written, interrupted, or being deleted; never
	// usable.
	StatusIncomplete Status = "incomplete"
	// StatusCorrupt: the manifest is there but unreadable.
	StatusCorrupt Status = "corrupt"
)

// Info describes a backup in a root directory.
type Info struct {
	// ID names the backup; it sorts by time.
	ID string `json:"id"`
	// Path is the backup's directory or archive.
	Path string `json:"path"`
	// Status tells whether the backup is usable.
	Status Status `json:"status"`
	// Archive is true for a .tar.zst backup.
	Archive bool `json:"archive"`
	// Size is the bytes the backup takes: the archive's size, or the sizes
	// of a directory backup's files, manifest included.
	Size int64 `json:"size"`
	// Created is when the backup was started.
	Created time.Time `json:"created"`
	// Problem says why a backup is not complete.
	Problem string `json:"problem,omitempty"`
}

// Backup is a backup that Create finished.
type Backup struct {
	Info
	Manifest *Manifest `json:"-"`
}

// Root returns the directory the backup is in.
func (b *Backup) Root() string { return filepath.Dir(b.Path) }

const maxIDSuffix = 999

// Create takes a backup into root (created if missing): it reserves an id,
// has opts.Snapshot fill <root>/.<id>.partial/data, hashes every file,
// writes the manifest last, fsyncs everything and only then renames the
// result to <root>/<id> or <root>/<id>.tar.zst. On any error, or when ctx
// is done, it removes what it wrote and no backup appears.
func Create(ctx context.Context, root string, opts CreateOptions) (_ *Backup, err error) {
	if opts.Snapshot == nil {
		return nil, errors.New("create backup: no Snapshot function")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	created := now().UTC()
	if root, err = filepath.Abs(root); err != nil {
		return nil, fmt.Errorf("create backup: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("create backup: %w", err)
	}
	id, staging, err := reserve(root, created)
	if err != nil {
		return nil, fmt.Errorf("create backup in %s: %w", root, err)
	}
	defer func() {
		// After a success, a staging directory that could not be removed is
		// an incomplete backup, which Prune removes.
		if rerr := os.RemoveAll(staging); rerr != nil && err != nil {
			err = errors.Join(err, rerr)
		}
	}()

	data := filepath.Join(staging, DataDir)
	if err := os.Mkdir(data, 0o755); err != nil {
		return nil, fmt.Errorf("create backup %s: %w", id, err)
	}
	if err := opts.Snapshot(ctx, data); err != nil {
		return nil, fmt.Errorf("create backup %s: snapshot: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create backup %s: %w", id, err)
	}
	entries, err := walkTree(data)
	if err != nil {
		return nil, fmt.Errorf("create backup %s: %w", id, err)
	}
	m := &Manifest{Version: ManifestVersion, ID: id, Created: created, Meta: opts.Meta, Dirs: []string{}, Files: []File{}}
	for _, e := range entries {
		if e.dir {
			m.Dirs = append(m.Dirs, e.rel)
		} else {
			m.Size += e.size
		}
	}
	p := newProgress(opts.Progress, m.Size)
	b := &Backup{Info: Info{ID: id, Status: StatusComplete, Archive: opts.Archive, Created: created}, Manifest: m}
	if opts.Archive {
		b.Path = filepath.Join(root, id+ArchiveExt)
		b.Size, err = writeArchive(ctx, staging, b.Path, entries, m, p)
	} else {
		b.Path = filepath.Join(root, id)
		b.Size, err = writeDirectory(ctx, staging, b.Path, entries, m, p)
	}
	if err != nil {
		return nil, fmt.Errorf("create backup %s: %w", id, err)
	}
	if err := syncDir(root); err != nil {
		return nil, fmt.Errorf("create backup %s: sync %s: %w", id, root, err)
	}
	return b, nil
}

// reserve picks the first free id for t and creates its staging directory.
// A name is free when neither the staging directory, the directory nor the
// archive exists; creating the staging directory is the atomic claim, so
// concurrent Creates get different ids.
func reserve(root string, t time.Time) (id, staging string, err error) {
	for n := 0; n <= maxIDSuffix; n++ {
		id = NewID(t, n)
		staging = filepath.Join(root, "."+id+partialSuffix)
		if err := os.Mkdir(staging, 0o755); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return "", "", err
		}
		if !exists(filepath.Join(root, id)) && !exists(filepath.Join(root, id+ArchiveExt)) {
			return id, staging, nil
		}
		if err := os.Remove(staging); err != nil {
			return "", "", err
		}
	}
	return "", "", fmt.Errorf("more than %d backups at %s", maxIDSuffix+1, t.Format(time.RFC3339))
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, fs.ErrNotExist)
}

// writeDirectory hashes and fsyncs the staged files, writes the manifest
// into staging and renames staging to dst. It returns the backup's size.
func writeDirectory(ctx context.Context, staging, dst string, entries []treeEntry, m *Manifest, p *progress) (int64, error) {
	buf := make([]byte, copyChunk)
	var dirs []string
	for _, e := range entries {
		if e.dir {
			dirs = append(dirs, e.abs)
			continue
		}
		f, err := hashFile(ctx, e, nil, time.Time{}, p, buf)
		if err != nil {
			return 0, err
		}
		m.Files = append(m.Files, f)
	}
	m.sort()
	mb, err := m.encode()
	if err != nil {
		return 0, err
	}
	if err := writeFileSync(filepath.Join(staging, ManifestName), mb); err != nil {
		return 0, err
	}
	if err := syncDirs(append(dirs, staging)); err != nil {
		return 0, err
	}
	if err := os.Rename(staging, dst); err != nil {
		return 0, err
	}
	return m.Size + int64(len(mb)), nil
}

// hashFile hashes one staged file (copying it into tw if not nil), checks
// that its size did not change and fsyncs it.
func hashFile(ctx context.Context, e treeEntry, tw *tar.Writer, mtime time.Time, p *progress, buf []byte) (File, error) {
	f, err := os.Open(e.abs)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	var n int64
	if tw != nil {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.rel, Size: e.size, Mode: int64(e.mode), ModTime: mtime}
		if err := tw.WriteHeader(hdr); err != nil {
			return File{}, fmt.Errorf("archive %s: %w", e.rel, err)
		}
		n, err = copyHash(ctx, tw, f, h, p, buf)
	} else {
		n, err = copyHash(ctx, nil, f, h, p, buf)
	}
	if err != nil {
		return File{}, fmt.Errorf("read %s: %w", e.rel, err)
	}
	if n != e.size {
		return File{}, fmt.Errorf("%s changed while the backup was taken: %d bytes, then %d", e.rel, e.size, n)
	}
	if tw == nil {
		if err := f.Sync(); err != nil {
			return File{}, fmt.Errorf("sync %s: %w", e.rel, err)
		}
	}
	return File{Path: e.rel, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func writeFileSync(name string, b []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// writeArchive writes the staged entries and then the manifest as a
// .tar.zst in staging, fsyncs it and renames it to dst. It returns the
// archive's size.
func writeArchive(ctx context.Context, staging, dst string, entries []treeEntry, m *Manifest, p *progress) (_ int64, err error) {
	tmp := filepath.Join(staging, filepath.Base(dst))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	defer func() {
		if f != nil {
			err = errors.Join(err, f.Close())
		}
	}()
	bw := bufio.NewWriterSize(f, copyChunk)
	cw := &countingWriter{w: bw}
	enc, err := newEncoder(cw)
	if err != nil {
		return 0, err
	}
	defer enc.Close()
	tw := tar.NewWriter(enc)
	mtime := m.Created.Truncate(time.Second)
	buf := make([]byte, copyChunk)
	for _, e := range entries {
		if e.dir {
			hdr := &tar.Header{Typeflag: tar.TypeDir, Name: e.rel + "/", Mode: int64(e.mode), ModTime: mtime}
			if err := tw.WriteHeader(hdr); err != nil {
				return 0, fmt.Errorf("archive %s: %w", e.rel, err)
			}
			continue
		}
		file, err := hashFile(ctx, e, tw, mtime, p, buf)
		if err != nil {
			return 0, err
		}
		m.Files = append(m.Files, file)
	}
	// The manifest goes in frames of its own, from a tar block boundary, so
	// that the footer can point at it.
	if err := tw.Flush(); err != nil {
		return 0, err
	}
	if err := enc.Close(); err != nil {
		return 0, err
	}
	offset := cw.n
	enc.Reset(cw)
	m.sort()
	mb, err := m.encode()
	if err != nil {
		return 0, err
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Size: int64(len(mb)), Mode: 0o644, ModTime: mtime}
	if err := tw.WriteHeader(hdr); err != nil {
		return 0, err
	}
	if _, err := tw.Write(mb); err != nil {
		return 0, err
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if err := enc.Close(); err != nil {
		return 0, err
	}
	if _, err := cw.Write(appendFooter(nil, offset)); err != nil {
		return 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return 0, cerr
	}
	if err := os.Rename(tmp, dst); err != nil {
		return 0, err
	}
	return cw.n, nil
}
