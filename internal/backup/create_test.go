package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCreateDirectory(t *testing.T) {
	root := filepath.Join(t.TempDir(), "backups") // created by Create
	var calls, last [2]int64
	b, err := Create(context.Background(), root, CreateOptions{
		Snapshot: snapshotOf(fixture()),
		Now:      clock(t0),
		Meta:     map[string]string{"format_version": "3"},
		Progress: func(done, total int64) { calls[0]++; last = [2]int64{done, total} },
	})
	require.NoError(t, err)
	require.Equal(t, "20261129T023000Z", b.ID)
	require.Equal(t, filepath.Join(root, "20261129T023000Z"), b.Path)
	require.Equal(t, root, b.Root())
	require.Equal(t, StatusComplete, b.Status)
	require.False(t, b.Archive)
	require.Equal(t, t0, b.Created)

	m := b.Manifest
	require.Equal(t, 1, m.Version)
	require.Equal(t, []string{"data", "data/empty", "data/journal", "data/pebble"}, m.Dirs)
	var paths []string
	var sum int64
	for _, f := range m.Files {
		paths = append(paths, f.Path)
		sum += f.Size
	}
	require.Equal(t, []string{
		"data/journal/00000000000000000007.log", "data/journal/00000000000000000008.log",
		"data/pebble/000004.sst", "data/pebble/CURRENT", "data/pebble/MANIFEST-000001", "data/pebble/OPTIONS-000003",
	}, paths)
	require.Equal(t, sum, m.Size)
	require.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", m.Files[1].SHA256) // empty file
	require.Equal(t, [2]int64{sum, sum}, last)
	require.Greater(t, calls[0], int64(3))

	// The manifest on disk is the one returned, in the documented form.
	raw, err := os.ReadFile(filepath.Join(b.Path, ManifestName))
	require.NoError(t, err)
	require.Equal(t, b.Size, sum+int64(len(raw)))
	var doc map[string]any
	require.NoError(t, json.Unmarshal(raw, &doc))
	require.Equal(t, "2026-11-29T02:30:00Z", doc["created"])
	require.Equal(t, map[string]any{"format_version": "3"}, doc["meta"])
	sum256 := sha256.Sum256([]byte("MANIFEST-000001\n"))
	require.Equal(t, map[string]any{"path": "data/pebble/CURRENT", "size": float64(16), "sha256": hex.EncodeToString(sum256[:])},
		doc["files"].([]any)[3])

	got, err := Verify(b.Path)
	require.NoError(t, err)
	require.Equal(t, m, got)
	require.Equal(t, fixture(), readTree(t, filepath.Join(b.Path, DataDir)))
	require.Equal(t, []string{"20261129T023000Z"}, entries(t, root)) // no staging left
}

func TestCreateArchive(t *testing.T) {
	root := t.TempDir()
	b := create(t, root, true, t0)
	require.Equal(t, filepath.Join(root, "20261129T023000Z.tar.zst"), b.Path)
	require.True(t, b.Archive)
	st, err := os.Stat(b.Path)
	require.NoError(t, err)
	require.Equal(t, st.Size(), b.Size)
	require.Equal(t, []string{"20261129T023000Z.tar.zst"}, entries(t, root))

	es := readArchive(t, b.Path)
	last := es[len(es)-1]
	require.Equal(t, ManifestName, last.name, "the manifest is the last entry")
	require.Equal(t, "data/", es[0].name)
	var m Manifest
	require.NoError(t, json.Unmarshal(last.body, &m))
	require.Equal(t, b.Manifest.Files, m.Files)

	// The footer points at the manifest.
	got, err := readArchiveManifest(b.Path)
	require.NoError(t, err)
	require.Equal(t, b.Manifest, got)

	got, err = Verify(b.Path)
	require.NoError(t, err)
	require.Equal(t, b.Manifest, got)
}

// TestArchiveReadsWithTar: the archive is an ordinary .tar.zst to the
// zstd and tar tools.
func TestArchiveReadsWithTar(t *testing.T) {
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("zstd is not installed")
	}
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar is not installed")
	}
	b := create(t, t.TempDir(), true, t0)
	out := t.TempDir()
	cmd := exec.Command("sh", "-c", `zstd -q -d -c "$1" | tar -x -f - -C "$2"`, "sh", b.Path, out)
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, string(msg))
	require.Equal(t, fixture(), readTree(t, filepath.Join(out, DataDir)))
	_, err = os.Stat(filepath.Join(out, ManifestName))
	require.NoError(t, err)
}

func TestCreateIDSuffix(t *testing.T) {
	root := t.TempDir()
	a := create(t, root, false, t0)
	b := create(t, root, true, t0)
	c := create(t, root, false, t0)
	require.Equal(t, []string{"20261129T023000Z", "20261129T023000Z-1", "20261129T023000Z-2"}, []string{a.ID, b.ID, c.ID})
	// A leftover staging directory takes its id too.
	require.NoError(t, os.Mkdir(filepath.Join(root, ".20261129T023000Z-3.partial"), 0o755))
	d := create(t, root, false, t0)
	require.Equal(t, "20261129T023000Z-4", d.ID)

	infos, err := List(root)
	require.NoError(t, err)
	var ids []string
	for _, in := range infos {
		ids = append(ids, in.ID)
	}
	require.Equal(t, []string{"20261129T023000Z", "20261129T023000Z-1", "20261129T023000Z-2", "20261129T023000Z-3", "20261129T023000Z-4"}, ids)
}

func TestCreateConcurrent(t *testing.T) {
	root := t.TempDir()
	ids := make(chan string, 4)
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			b, err := Create(context.Background(), root, CreateOptions{Snapshot: snapshotOf(fixture()), Archive: i%2 == 1, Now: clock(t0)})
			if err != nil {
				errs <- err
				return
			}
			ids <- b.ID
		}()
	}
	seen := map[string]bool{}
	for range 4 {
		select {
		case err := <-errs:
			t.Fatal(err)
		case id := <-ids:
			require.False(t, seen[id], id)
			seen[id] = true
		}
	}
	infos, err := List(root)
	require.NoError(t, err)
	require.Len(t, infos, 4)
	for _, in := range infos {
		require.Equal(t, StatusComplete, in.Status)
	}
}

func TestCreateFailures(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		opts    func(cancel context.CancelFunc) CreateOptions
		wantIs  error
		wantMsg string
	}{
		{"snapshot fails", func(context.CancelFunc) CreateOptions {
			return CreateOptions{Snapshot: func(ctx context.Context, dir string) error {
				_ = snapshotOf(fixture())(ctx, dir)
				return boom
			}}
		}, boom, "create backup 20261129T023000Z: snapshot: boom"},
		{"cancelled during the snapshot", func(cancel context.CancelFunc) CreateOptions {
			return CreateOptions{Snapshot: func(ctx context.Context, dir string) error {
				cancel()
				return snapshotOf(fixture())(ctx, dir)
			}}
		}, context.Canceled, "context canceled"},
		{"cancelled while hashing", func(cancel context.CancelFunc) CreateOptions {
			return CreateOptions{Snapshot: snapshotOf(fixture()), Progress: func(done, total int64) {
				if done > 0 {
					cancel()
				}
			}}
		}, context.Canceled, "context canceled"},
		{"symlink in the snapshot", func(context.CancelFunc) CreateOptions {
			return CreateOptions{Snapshot: func(_ context.Context, dir string) error {
				return os.Symlink("/etc/passwd", filepath.Join(dir, "link"))
			}}
		}, nil, "data/link is not a regular file or directory"},
	}
	for _, tt := range tests {
		forms(t, func(t *testing.T, archive bool) {
			t.Run(tt.name, func(t *testing.T) {
				root := t.TempDir()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				opts := tt.opts(cancel)
				opts.Archive, opts.Now = archive, clock(t0)
				b, err := Create(ctx, root, opts)
				require.Nil(t, b)
				require.ErrorContains(t, err, tt.wantMsg)
				if tt.wantIs != nil {
					require.ErrorIs(t, err, tt.wantIs)
				}
				require.Empty(t, entries(t, root), "nothing is left behind")
				infos, err := List(root)
				require.NoError(t, err)
				require.Empty(t, infos)
			})
		})
	}
	_, err := Create(context.Background(), t.TempDir(), CreateOptions{})
	require.ErrorContains(t, err, "no Snapshot function")
}

func TestCreateEmptySnapshot(t *testing.T) {
	b, err := Create(context.Background(), t.TempDir(), CreateOptions{Snapshot: func(context.Context, string) error { return nil }, Now: clock(t0)})
	require.NoError(t, err)
	require.Equal(t, []string{"data"}, b.Manifest.Dirs)
	require.Empty(t, b.Manifest.Files)
	_, err = Verify(b.Path)
	require.NoError(t, err)
}

// TestManifestSorted: the manifest lists paths in byte order, which is not
// the walk's order ("a-c" sorts before "a/b").
func TestManifestSorted(t *testing.T) {
	forms(t, func(t *testing.T, archive bool) {
		b, err := Create(context.Background(), t.TempDir(), CreateOptions{
			Snapshot: snapshotOf(map[string]string{"a/b": "1", "a-c": "2", "a/": ""}), Archive: archive, Now: clock(t0),
		})
		require.NoError(t, err)
		require.Equal(t, []string{"data", "data/a"}, b.Manifest.Dirs)
		require.Equal(t, "data/a-c", b.Manifest.Files[0].Path)
		require.Equal(t, "data/a/b", b.Manifest.Files[1].Path)
		_, err = Verify(b.Path)
		require.NoError(t, err)
	})
}
