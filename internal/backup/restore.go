package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Restore writes the data directory held by the backup at from (a
// directory or a .tar.zst archive) to dataDir, which must not exist or be
// an empty directory (else ErrNotEmpty), and must not hold a database that
// a running process has open (else ErrLocked, detected through Pebble's
// lock on <dataDir>/pebble/LOCK).
//
// It copies the backup into a new hidden directory, hashing every byte as
// it goes; only if everything matches the manifest (else ErrIncomplete or
// ErrCorrupt, naming the files) and is fsynced does it move the copy into
// place, and else it removes it. The hidden directory is a sibling,
// .<name>.restore-*, renamed to dataDir; if dataDir exists (it may be a
// mount point), it is dataDir/.restore-*, whose entries are then renamed
// into dataDir, and which is removed last: should a crash interrupt those
// renames, it is still there, and dataDir is not empty for a new restore.
// The result holds exactly the backup's data/ tree. progress, if not nil,
// is called with the bytes done and the total: of the files for a
// directory backup, of the compressed archive for an archive.
//
// Do not restore over the data directory of a Pebble database that this
// same process has open under another spelling of its path: POSIX locks
// cannot tell a process its own lock, and probing it would release it.
func Restore(from, dataDir string, progress func(done, total int64)) (err error) {
	if from, err = filepath.Abs(from); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if dataDir == from || within(dataDir, from) {
		return fmt.Errorf("restore %s: the data directory %s is inside the backup", from, dataDir)
	}
	exists, err := checkTarget(dataDir, "")
	if err != nil {
		return err
	}
	parent := filepath.Dir(dataDir)
	var tmp string
	if exists {
		tmp, err = os.MkdirTemp(dataDir, ".restore-")
	} else if err = os.MkdirAll(parent, 0o755); err == nil {
		tmp, err = os.MkdirTemp(parent, "."+filepath.Base(dataDir)+".restore-")
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, os.RemoveAll(tmp))
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	sk := &restoreSink{root: tmp, dirs: []string{tmp}}
	if _, err := verify(context.Background(), from, sk, progress); err != nil {
		return fmt.Errorf("restore %s: %w", from, err)
	}
	if err := syncDirs(sk.dirs); err != nil {
		return fmt.Errorf("restore %s: %w", from, err)
	}
	// Check again: something may have appeared while we copied.
	if exists2, err := checkTarget(dataDir, filepath.Base(tmp)); err != nil {
		return err
	} else if exists2 != exists {
		return fmt.Errorf("restore: %s was removed during the restore", dataDir)
	}
	if !exists {
		if err := os.Rename(tmp, dataDir); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if err := syncDir(parent); err != nil {
			return fmt.Errorf("restore: sync %s: %w", parent, err)
		}
		return nil
	}
	names, err := readDirNames(tmp)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, name := range names {
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dataDir, name)); err != nil {
			return fmt.Errorf("restore: %w (%s is partly restored: empty it and restore again)", err, dataDir)
		}
	}
	if err := syncDir(dataDir); err != nil {
		return fmt.Errorf("restore: sync %s: %w", dataDir, err)
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := syncDir(dataDir); err != nil {
		return fmt.Errorf("restore: sync %s: %w", dataDir, err)
	}
	return nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// checkTarget refuses a data directory that is locked or not empty (but
// for an entry named allow), and tells whether it exists.
func checkTarget(dataDir, allow string) (exists bool, _ error) {
	lock := filepath.Join(dataDir, "pebble", "LOCK")
	if _, err := os.Lstat(lock); err == nil {
		l, err := vfs.Default.Lock(lock)
		if err != nil {
			return true, fmt.Errorf("%w: %s: a running process holds %s (%v); stop proxylens, or restore into another directory", ErrLocked, dataDir, lock, err)
		}
		if err := l.Close(); err != nil {
			return true, fmt.Errorf("restore: unlock %s: %w", lock, err)
		}
	}
	st, err := os.Stat(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("restore: %w", err)
	}
	if !st.IsDir() {
		return true, fmt.Errorf("%w: %s is a file, not a directory", ErrNotEmpty, dataDir)
	}
	f, err := os.Open(dataDir)
	if err != nil {
		return true, fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return true, fmt.Errorf("restore: %w", err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == allow })
	if len(names) == 0 {
		return true, nil
	}
	slices.Sort(names)
	name, hint := names[0], "move the old data directory aside first"
	for _, n := range names {
		if strings.HasPrefix(n, ".restore-") {
			name, hint = n, "an earlier restore was interrupted: empty the directory"
		}
	}
	return true, fmt.Errorf("%w: %s holds %s; restore into a new or empty directory (%s)", ErrNotEmpty, dataDir, name, hint)
}

// restoreSink writes a backup's data/ tree under root.
type restoreSink struct {
	root string
	dirs []string
	buf  []byte
}

// sinkWriter marks write errors with errSink.
type sinkWriter struct {
	f    *os.File
	name string
}

func (w sinkWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	if err != nil {
		err = fmt.Errorf("%w %s: %w", errSink, w.name, err)
	}
	return n, err
}

func (s *restoreSink) target(rel string) string {
	if rel == DataDir {
		return s.root
	}
	return filepath.Join(s.root, filepath.FromSlash(strings.TrimPrefix(rel, DataDir+"/")))
}

func (s *restoreSink) dir(rel string, mode fs.FileMode) error {
	t := s.target(rel)
	if t == s.root {
		return nil
	}
	if err := os.MkdirAll(t, mode|0o700); err != nil {
		return fmt.Errorf("%w %s: %w", errSink, t, err)
	}
	s.dirs = append(s.dirs, t)
	return nil
}

func (s *restoreSink) file(rel string, mode fs.FileMode, r io.Reader) (err error) {
	t := s.target(rel)
	if err := os.MkdirAll(filepath.Dir(t), 0o755); err != nil {
		return fmt.Errorf("%w %s: %w", errSink, t, err)
	}
	f, err := os.OpenFile(t, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
	if err != nil {
		return fmt.Errorf("%w %s: %w", errSink, t, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%w %s: %w", errSink, t, cerr)
		}
	}()
	if s.buf == nil {
		s.buf = make([]byte, copyChunk)
	}
	if _, err := io.CopyBuffer(sinkWriter{f: f, name: t}, r, s.buf); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%w %s: %w", errSink, t, err)
	}
	return nil
}
