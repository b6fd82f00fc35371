package backup

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

const copyChunk = 1 << 20

// progress counts bytes for a Progress callback.
type progress struct {
	fn          func(done, total int64)
	done, total int64
}

func newProgress(fn func(done, total int64), total int64) *progress {
	p := &progress{fn: fn, total: total}
	p.add(0)
	return p
}

func (p *progress) add(n int64) {
	if p == nil || p.fn == nil {
		return
	}
	p.done += n
	p.fn(p.done, p.total)
}

// copyHash copies src to dst (nil: nowhere) in chunks, feeding h and
// counting progress, and stops when ctx is done.
func copyHash(ctx context.Context, dst io.Writer, src io.Reader, h hash.Hash, p *progress, buf []byte) (int64, error) {
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, rerr := io.ReadFull(src, buf)
		if k > 0 {
			h.Write(buf[:k])
			if dst != nil {
				if _, err := dst.Write(buf[:k]); err != nil {
					return n, err
				}
			}
			n += int64(k)
			p.add(int64(k))
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF):
			return n, nil
		default:
			return n, rerr
		}
	}
}

// treeEntry is a file or directory found under a directory, by its
// slash-separated path relative to the directory's parent-to-be (prefixed
// with DataDir).
type treeEntry struct {
	rel  string
	abs  string
	dir  bool
	size int64
	mode fs.FileMode
}

// walkTree lists dir as the DataDir of a backup, in lexical walk order
// (every directory before what it holds). Anything but regular files and
// directories is an error.
func walkTree(dir string) ([]treeEntry, error) {
	var out []treeEntry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			rel = DataDir
		} else {
			rel = DataDir + "/" + rel
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			out = append(out, treeEntry{rel: rel, abs: p, dir: true, mode: info.Mode().Perm()})
		case d.Type().IsRegular():
			out = append(out, treeEntry{rel: rel, abs: p, size: info.Size(), mode: info.Mode().Perm()})
		default:
			return fmt.Errorf("%s: %s is not a regular file or directory but a %s", dir, rel, kindOf(d.Type()))
		}
		return nil
	})
	return out, err
}

// syncDir fsyncs a directory, so that the names in it are durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be fsynced there
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}

// syncDirs fsyncs directories deepest first.
func syncDirs(dirs []string) error {
	dirs = slices.Clone(dirs)
	slices.SortFunc(dirs, func(a, b string) int {
		return strings.Count(b, string(filepath.Separator)) - strings.Count(a, string(filepath.Separator))
	})
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("sync %s: %w", d, err)
		}
	}
	return nil
}

// treeSize adds up the sizes of the regular files under p (p itself if it
// is a file) and returns the newest modification time seen. Errors are
// ignored: it describes leftovers, which may vanish while it runs.
func treeSize(p string) (size int64, newest int64) {
	_ = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if info.Mode().IsRegular() {
			size += info.Size()
		}
		if t := info.ModTime().UnixNano(); t > newest {
			newest = t
		}
		return nil
	})
	return size, newest
}
