package backup

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxProblems bounds the problems an error spells out.
const maxProblems = 10

// Verify checks a backup, a directory or a .tar.zst archive: that its
// manifest is valid, that every file it lists is there with the listed size
// and SHA-256, that every listed directory is there and that nothing else
// is. The error wraps ErrIncomplete (no manifest) or ErrCorrupt and names
// the files at fault. The manifest is returned whenever it could be read,
// even with an error.
func Verify(path string) (*Manifest, error) {
	return verify(context.Background(), path, discardSink{}, nil)
}

// sink receives the entries of a backup's data directory as they are
// scanned, before they are checked against the manifest. Paths are valid
// (checkPath).
type sink interface {
	dir(rel string, mode fs.FileMode) error
	// file may read r up to its end; the scan reads what it leaves.
	file(rel string, mode fs.FileMode, r io.Reader) error
}

type discardSink struct{}

func (discardSink) dir(string, fs.FileMode) error             { return nil }
func (discardSink) file(string, fs.FileMode, io.Reader) error { return nil }

// observed is what the scan found at a path.
type observed struct {
	dir  bool
	size int64
	sum  string
	kind string // not empty: neither a file nor a directory
}

// scan is the state of one verification.
type scan struct {
	path     string
	seen     map[string]observed
	order    []string
	problems []string
	buf      []byte
}

func (s *scan) problem(format string, args ...any) {
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

func (s *scan) observe(rel string, o observed) {
	if _, dup := s.seen[rel]; dup {
		s.problem("%s: appears twice", rel)
		return
	}
	s.seen[rel] = o
	s.order = append(s.order, rel)
}

// readFile hands r to the sink, hashes all of it and records it.
func (s *scan) readFile(ctx context.Context, sk sink, rel string, mode fs.FileMode, r io.Reader, p *progress) error {
	hr := &hashReader{ctx: ctx, r: r, h: sha256.New(), p: p}
	if err := sk.file(rel, mode, hr); err != nil {
		if errors.Is(err, errSink) {
			return err
		}
		return fmt.Errorf("read %s: %w", rel, err)
	}
	if err := drain(hr, s.buf); err != nil {
		return fmt.Errorf("read %s: %w", rel, err)
	}
	s.observe(rel, observed{size: hr.n, sum: hex.EncodeToString(hr.h.Sum(nil))})
	return nil
}

// drain reads r to its end. (io.Copy to io.Discard would read 8 KiB at a
// time.)
func drain(r io.Reader, buf []byte) error {
	for {
		_, err := r.Read(buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

type hashReader struct {
	ctx context.Context
	r   io.Reader
	h   hash.Hash
	n   int64
	p   *progress
}

func (r *hashReader) Read(b []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(b)
	r.h.Write(b[:n])
	r.n += int64(n)
	r.p.add(int64(n))
	return n, err
}

// verify scans the backup at path into sk, reporting progress, and checks
// what it saw against the manifest.
func verify(ctx context.Context, path string, sk sink, progressFn func(done, total int64)) (*Manifest, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("verify backup: %w", err)
	}
	s := &scan{path: path, seen: map[string]observed{}, buf: make([]byte, copyChunk)}
	var m *Manifest
	if st.IsDir() {
		m, err = s.scanDir(ctx, sk, progressFn)
	} else {
		m, err = s.scanArchive(ctx, sk, progressFn, st.Size())
	}
	if err != nil {
		return m, err
	}
	if id := strings.TrimSuffix(filepath.Base(path), ArchiveExt); id != m.ID {
		if _, _, ok := ParseID(id); ok {
			s.problem("%s is of backup %s, but the backup is named %s", ManifestName, m.ID, id)
		}
	}
	s.compare(m)
	if len(s.problems) > 0 {
		return m, s.err()
	}
	return m, nil
}

func (s *scan) err() error {
	ps := s.problems
	more := ""
	if len(ps) > maxProblems {
		more = fmt.Sprintf("; and %d more", len(ps)-maxProblems)
		ps = ps[:maxProblems]
	}
	return fmt.Errorf("%w: %s: %s%s", ErrCorrupt, s.path, strings.Join(ps, "; "), more)
}

// scanDir reads a directory backup's manifest, then walks it.
func (s *scan) scanDir(ctx context.Context, sk sink, progressFn func(done, total int64)) (*Manifest, error) {
	b, err := readLimited(filepath.Join(s.path, ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: no %s", ErrIncomplete, s.path, ManifestName)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, s.path, err)
	}
	m, err := decodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, s.path, err)
	}
	listed := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		listed[f.Path] = true
	}
	p := newProgress(progressFn, m.Size)
	err = filepath.WalkDir(s.path, func(abs string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(s.path, abs)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case rel == "." || rel == ManifestName && d.Type().IsRegular():
			return nil
		case d.IsDir():
			s.observe(rel, observed{dir: true})
			if checkPath(rel) != nil {
				return fs.SkipDir // reported as not in the manifest
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			return sk.dir(rel, info.Mode().Perm())
		case !d.Type().IsRegular():
			s.observe(rel, observed{kind: kindOf(d.Type())})
			return nil
		case !listed[rel]:
			s.observe(rel, observed{size: -1})
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		f, err := os.Open(abs)
		if err != nil {
			return err
		}
		defer f.Close()
		return s.readFile(ctx, sk, rel, info.Mode().Perm(), f, p)
	})
	if err != nil {
		return m, fmt.Errorf("verify backup %s: %w", s.path, err)
	}
	return m, nil
}

func readLimited(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxManifestBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", ManifestName, maxManifestBytes)
	}
	return b, nil
}

// scanArchive reads an archive from start to end; the manifest is its last
// entry.
func (s *scan) scanArchive(ctx context.Context, sk sink, progressFn func(done, total int64), size int64) (*Manifest, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("verify backup: %w", err)
	}
	defer f.Close()
	p := newProgress(progressFn, size)
	dec, err := newDecoder(bufio.NewReaderSize(&countingReader{r: f, p: p}, copyChunk))
	if err != nil {
		return nil, fmt.Errorf("verify backup %s: %w", s.path, err)
	}
	defer dec.Close()
	tr := tar.NewReader(dec)
	var mb []byte
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("verify backup %s: %w", s.path, ctx.Err())
			}
			return nil, fmt.Errorf("%w: %s: read archive: %w", ErrCorrupt, s.path, err)
		}
		rel := strings.TrimSuffix(hdr.Name, "/")
		if mb != nil {
			s.problem("%s: entry after %s", rel, ManifestName)
		}
		if rel == ManifestName && hdr.Typeflag == tar.TypeReg {
			if mb, err = readManifestEntry(tr, hdr); err != nil {
				return nil, fmt.Errorf("%s: %w", s.path, err)
			}
			continue
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch {
		case checkPath(rel) != nil:
			s.observe(rel, observed{size: -1})
		case hdr.Typeflag == tar.TypeDir:
			s.observe(rel, observed{dir: true})
			if err := sk.dir(rel, mode); err != nil {
				return nil, err
			}
		case hdr.Typeflag == tar.TypeReg:
			if err := s.readFile(ctx, sk, rel, mode, tr, nil); err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("verify backup %s: %w", s.path, ctx.Err())
				}
				if errors.Is(err, errSink) {
					return nil, err
				}
				return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, s.path, err)
			}
		default:
			s.observe(rel, observed{kind: kindOf(hdr.FileInfo().Mode())})
		}
	}
	if mb == nil {
		return nil, fmt.Errorf("%w: %s: the archive does not end with %s", ErrIncomplete, s.path, ManifestName)
	}
	m, err := decodeManifest(mb)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, s.path, err)
	}
	return m, nil
}

// kindOf names a type of file that is neither regular nor a directory.
func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// errSink marks errors of the sink (writing a restore), which are not the
// backup's fault.
var errSink = errors.New("write")

// compare checks what the scan saw against the manifest.
func (s *scan) compare(m *Manifest) {
	listed := make(map[string]bool, len(m.Dirs)+len(m.Files))
	for _, d := range m.Dirs {
		listed[d] = true
		o, ok := s.seen[d]
		switch {
		case !ok:
			s.problem("directory %s: missing", d)
		case !o.dir:
			s.problem("%s: not a directory, the manifest lists a directory", d)
		}
	}
	for _, f := range m.Files {
		listed[f.Path] = true
		o, ok := s.seen[f.Path]
		switch {
		case !ok:
			s.problem("%s: missing", f.Path)
		case o.dir || o.kind != "":
			s.problem("%s: not a regular file, the manifest lists a file", f.Path)
		case o.size != f.Size:
			s.problem("%s: %d bytes, the manifest says %d", f.Path, o.size, f.Size)
		case o.sum != f.SHA256:
			s.problem("%s: SHA-256 %s, the manifest says %s", f.Path, o.sum, f.SHA256)
		}
	}
	for _, rel := range s.order {
		if listed[rel] {
			continue
		}
		o := s.seen[rel]
		switch {
		case o.kind != "":
			s.problem("%s: a %s, not in the manifest", rel, o.kind)
		case o.dir:
			s.problem("directory %s: not in the manifest", rel)
		default:
			s.problem("%s: not in the manifest", rel)
		}
	}
}
