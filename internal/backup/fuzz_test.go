package backup

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeManifest: any bytes decode to an error or to a manifest that
// passes its own checks and survives a round trip.
func FuzzDecodeManifest(f *testing.F) {
	b := create(f, f.TempDir(), false, t0)
	raw, err := os.ReadFile(filepath.Join(b.Path, ManifestName))
	require.NoError(f, err)
	f.Add(raw)
	f.Add([]byte(`{"version":1,"id":"20261129T023000Z","created":"2026-11-29T02:30:00Z","size":0,"dirs":["data"],"files":[]}`))
	f.Add([]byte(`{"version":1,"files":[{"path":"data/../x"}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := decodeManifest(in)
		if err != nil {
			return
		}
		out, err := m.encode()
		require.NoError(t, err)
		again, err := decodeManifest(out)
		require.NoError(t, err)
		require.Equal(t, m.Files, again.Files)
	})
}

// FuzzRestoreArchive: whatever an archive holds, listing, verifying and
// restoring it never panic, and a restore writes nothing outside its
// target.
func FuzzRestoreArchive(f *testing.F) {
	b := create(f, f.TempDir(), true, t0)
	raw, err := os.ReadFile(b.Path)
	require.NoError(f, err)
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add([]byte("not an archive at all, but longer than a footer"))
	f.Fuzz(func(t *testing.T, in []byte) {
		root := t.TempDir()
		p := filepath.Join(root, "backups", "20261129T023000Z.tar.zst")
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, in, 0o644))
		_, _ = List(filepath.Dir(p))
		_, verr := Verify(p)
		rerr := Restore(p, filepath.Join(root, "restore", "data"), nil)
		if verr == nil {
			require.NoError(t, rerr)
		} else {
			require.Error(t, rerr)
			require.Empty(t, entries(t, filepath.Join(root, "restore")))
		}
		require.ElementsMatch(t, []string{"backups", "restore"}, entries(t, root))
	})
}
