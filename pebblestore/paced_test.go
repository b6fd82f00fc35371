package pebblestore

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
)

// syncSpy is a file system whose files report each SyncData, with the
// file's size at that moment, and fail it when fail is set.
type syncSpy struct {
	vfs.FS
	sizes []int64
	fail  error
}

func (s *syncSpy) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := s.FS.Create(name, category)
	if err != nil {
		return nil, err
	}
	return &spiedFile{File: f, spy: s}, nil
}

type spiedFile struct {
	vfs.File
	spy *syncSpy
}

func (f *spiedFile) SyncData() error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	f.spy.sizes = append(f.spy.sizes, fi.Size())
	if f.spy.fail != nil {
		return f.spy.fail
	}
	return f.File.SyncData()
}

// TestPacedFile checks that a paced file is synced every writebackPiece
// bytes, by Write and by WriteAt, and holds what was written.
func TestPacedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	spy := &syncSpy{FS: vfs.Default}
	f, err := pacedFS{spy}.Create(path, vfs.WriteCategoryUnspecified)
	require.NoError(t, err)

	rng := rand.New(rand.NewPCG(1, 2))
	want := make([]byte, 3*writebackPiece+12345)
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	// Uneven writes: some within a piece, some across several.
	written := 0
	for p := want[:2*writebackPiece+777]; len(p) > 0; {
		n := min(len(p), 1+rng.IntN(writebackPiece/3*4))
		m, err := f.Write(p[:n])
		require.NoError(t, err)
		require.Equal(t, n, m)
		p = p[n:]
		written += n
		require.Len(t, spy.sizes, written/writebackPiece, "syncs after %d bytes", written)
	}
	m, err := f.WriteAt(want[written:], int64(written))
	require.NoError(t, err)
	require.Equal(t, len(want)-written, m)
	require.Len(t, spy.sizes, len(want)/writebackPiece)
	// Each sync came when exactly one more piece was in the file.
	for i, size := range spy.sizes {
		require.Equal(t, int64(i+1)*writebackPiece, size, "sync %d", i)
	}
	require.NoError(t, f.Close())

	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "file contents differ from what was written")
}

// TestPacedFileSyncFails checks that a failed sync fails the write that
// made it: the data may not have reached the disk, and Linux may report the
// file's next sync as successful.
func TestPacedFileSyncFails(t *testing.T) {
	spy := &syncSpy{FS: vfs.Default, fail: errors.New("EIO")}
	f, err := pacedFS{spy}.Create(filepath.Join(t.TempDir(), "f"), vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	_, err = f.Write(make([]byte, writebackPiece-1))
	require.NoError(t, err, "no sync yet")
	n, err := f.Write(make([]byte, 3))
	require.ErrorIs(t, err, spy.fail)
	require.Equal(t, 1, n, "the write stops at the piece whose sync failed")
	_, err = f.WriteAt(make([]byte, 2*writebackPiece), 0)
	require.ErrorIs(t, err, spy.fail)
	require.NoError(t, f.Close())
}

// TestPacedFSOpens checks that every way Pebble opens a file for writing
// is paced, that reading is not, and that errors pass through.
func TestPacedFSOpens(t *testing.T) {
	dir := t.TempDir()
	fs := pacedFS{vfs.Default}
	a := filepath.Join(dir, "a")
	f, err := fs.Create(a, vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	require.IsType(t, &pacedFile{}, f)
	require.NoError(t, f.Close())

	f, err = fs.OpenReadWrite(a, vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	require.IsType(t, &pacedFile{}, f)
	require.NoError(t, f.Close())

	b := filepath.Join(dir, "b")
	f, err = fs.ReuseForWrite(a, b, vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	require.IsType(t, &pacedFile{}, f)
	require.NoError(t, f.Close())

	f, err = fs.Open(b)
	require.NoError(t, err)
	_, paced := f.(*pacedFile)
	require.False(t, paced, "reads are not paced")
	require.NoError(t, f.Close())

	f, err = fs.Create(filepath.Join(dir, "missing", "c"), vfs.WriteCategoryUnspecified)
	require.Error(t, err)
	require.Nil(t, f)
}
