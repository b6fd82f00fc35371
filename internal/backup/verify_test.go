package backup

import (
	"archive/tar"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVerifyDirectoryDetects(t *testing.T) {
	editManifest := func(f func(m map[string]any)) func(t *testing.T, p string) {
		return func(t *testing.T, p string) {
			mp := filepath.Join(p, ManifestName)
			b, err := os.ReadFile(mp)
			require.NoError(t, err)
			var m map[string]any
			require.NoError(t, json.Unmarshal(b, &m))
			f(m)
			b, err = json.Marshal(m)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(mp, b, 0o644))
		}
	}
	tests := []struct {
		name    string
		mutate  func(t *testing.T, p string)
		wantIs  error
		wantMsg string
	}{
		{"one byte changed", func(t *testing.T, p string) {
			f, err := os.OpenFile(filepath.Join(p, "data/pebble/000004.sst"), os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteAt([]byte{'X'}, 1<<20+7)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}, ErrCorrupt, "data/pebble/000004.sst: SHA-256 "},
		{"file removed", func(t *testing.T, p string) {
			require.NoError(t, os.Remove(filepath.Join(p, "data/journal/00000000000000000007.log")))
		}, ErrCorrupt, "data/journal/00000000000000000007.log: missing"},
		{"file added", func(t *testing.T, p string) {
			require.NoError(t, os.WriteFile(filepath.Join(p, "data/pebble/000009.sst"), []byte("x"), 0o644))
		}, ErrCorrupt, "data/pebble/000009.sst: not in the manifest"},
		{"file added beside data", func(t *testing.T, p string) {
			require.NoError(t, os.WriteFile(filepath.Join(p, "notes.txt"), []byte("x"), 0o644))
		}, ErrCorrupt, "notes.txt: not in the manifest"},
		{"directory added beside data", func(t *testing.T, p string) {
			writeTree(t, p, map[string]string{"more/inside": "x"})
		}, ErrCorrupt, "directory more: not in the manifest"},
		{"directory added", func(t *testing.T, p string) {
			require.NoError(t, os.Mkdir(filepath.Join(p, "data/extra"), 0o755))
		}, ErrCorrupt, "directory data/extra: not in the manifest"},
		{"directory removed", func(t *testing.T, p string) {
			require.NoError(t, os.Remove(filepath.Join(p, "data/empty")))
		}, ErrCorrupt, "directory data/empty: missing"},
		{"file truncated", func(t *testing.T, p string) {
			require.NoError(t, os.Truncate(filepath.Join(p, "data/pebble/CURRENT"), 5))
		}, ErrCorrupt, "data/pebble/CURRENT: 5 bytes, the manifest says 16"},
		{"file replaced by a directory", func(t *testing.T, p string) {
			require.NoError(t, os.Remove(filepath.Join(p, "data/pebble/CURRENT")))
			require.NoError(t, os.Mkdir(filepath.Join(p, "data/pebble/CURRENT"), 0o755))
		}, ErrCorrupt, "data/pebble/CURRENT: not a regular file, the manifest lists a file"},
		{"symbolic link added", func(t *testing.T, p string) {
			require.NoError(t, os.Symlink("CURRENT", filepath.Join(p, "data/pebble/LINK")))
		}, ErrCorrupt, "data/pebble/LINK: a symbolic link, not in the manifest"},
		{"manifest truncated", func(t *testing.T, p string) {
			mp := filepath.Join(p, ManifestName)
			st, err := os.Stat(mp)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(mp, st.Size()/2))
		}, ErrCorrupt, "parse MANIFEST.json: unexpected end of JSON input"},
		{"manifest removed", func(t *testing.T, p string) {
			require.NoError(t, os.Remove(filepath.Join(p, ManifestName)))
		}, ErrIncomplete, "no MANIFEST.json"},
		{"manifest of another version", editManifest(func(m map[string]any) { m["version"] = 2 }),
			ErrCorrupt, "MANIFEST.json: unsupported version 2 (this proxylens reads version 1)"},
		{"manifest lists a path outside data", editManifest(func(m map[string]any) {
			m["files"].([]any)[0].(map[string]any)["path"] = "data/../../etc/passwd"
		}), ErrCorrupt, `file "data/../../etc/passwd": not a path under data/`},
		{"manifest size does not add up", editManifest(func(m map[string]any) { m["size"] = 1 }),
			ErrCorrupt, "size 1 is not the sum of the files' sizes"},
		{"manifest with a bad hash", editManifest(func(m map[string]any) {
			m["files"].([]any)[0].(map[string]any)["sha256"] = "ABC"
		}), ErrCorrupt, `sha256 "ABC" is not 64 lowercase hex digits`},
		{"manifest without data", editManifest(func(m map[string]any) { m["dirs"] = []any{} }),
			ErrCorrupt, "the data directory is not listed"},
		{"manifest with a bad id", editManifest(func(m map[string]any) { m["id"] = "yesterday" }),
			ErrCorrupt, `id "yesterday" is not a backup id`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := create(t, t.TempDir(), false, t0)
			tt.mutate(t, b.Path)
			_, err := Verify(b.Path)
			require.ErrorIs(t, err, tt.wantIs)
			require.ErrorContains(t, err, tt.wantMsg)
			require.ErrorContains(t, err, b.Path)
		})
	}
}

func TestVerifyArchiveDetects(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(es []entry) []entry
		wantIs  error
		wantMsg string
	}{
		{"unchanged, without the footer", func(es []entry) []entry { return es }, nil, ""},
		{"one byte changed", func(es []entry) []entry {
			i := slices.IndexFunc(es, func(e entry) bool { return e.name == "data/pebble/000004.sst" })
			es[i].body[12345] ^= 1
			return es
		}, ErrCorrupt, "data/pebble/000004.sst: SHA-256 "},
		{"file removed", func(es []entry) []entry {
			return slices.DeleteFunc(es, func(e entry) bool { return e.name == "data/pebble/CURRENT" })
		}, ErrCorrupt, "data/pebble/CURRENT: missing"},
		{"file added", func(es []entry) []entry {
			return slices.Insert(es, len(es)-1, entry{name: "data/pebble/000010.sst", typ: tar.TypeReg, body: []byte("x")})
		}, ErrCorrupt, "data/pebble/000010.sst: not in the manifest"},
		{"entry after the manifest", func(es []entry) []entry {
			return append(es, entry{name: "data/late", typ: tar.TypeReg, body: []byte("x")})
		}, ErrCorrupt, "data/late: entry after MANIFEST.json"},
		{"entry twice", func(es []entry) []entry {
			return slices.Insert(es, len(es)-1, entry{name: "data/pebble/CURRENT", typ: tar.TypeReg, body: []byte("x")})
		}, ErrCorrupt, "data/pebble/CURRENT: appears twice"},
		{"path escaping", func(es []entry) []entry {
			return slices.Insert(es, 1, entry{name: "../evil", typ: tar.TypeReg, body: []byte("x")})
		}, ErrCorrupt, "../evil: not in the manifest"},
		{"symbolic link", func(es []entry) []entry {
			return slices.Insert(es, 1, entry{name: "data/link", typ: tar.TypeSymlink})
		}, ErrCorrupt, "data/link: a symbolic link, not in the manifest"},
		{"directory removed", func(es []entry) []entry {
			return slices.DeleteFunc(es, func(e entry) bool { return e.name == "data/empty/" })
		}, ErrCorrupt, "directory data/empty: missing"},
		{"manifest removed", func(es []entry) []entry { return es[:len(es)-1] },
			ErrIncomplete, "the archive does not end with MANIFEST.json"},
		{"manifest truncated", func(es []entry) []entry {
			m := &es[len(es)-1]
			m.body = m.body[:len(m.body)/2]
			return es
		}, ErrCorrupt, "parse MANIFEST.json: unexpected end of JSON input"},
	}
	b := create(t, t.TempDir(), true, t0)
	orig := readArchive(t, b.Path)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := make([]entry, len(orig))
			for i, e := range orig {
				es[i] = entry{name: e.name, typ: e.typ, body: slices.Clone(e.body)}
			}
			p := filepath.Join(t.TempDir(), "20261129T023000Z.tar.zst")
			writeArchivePlain(t, p, tt.mutate(es))
			_, err := Verify(p)
			if tt.wantIs == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.wantIs)
			require.ErrorContains(t, err, tt.wantMsg)
			require.ErrorContains(t, err, p)
		})
	}
}

func TestVerifyArchiveTruncated(t *testing.T) {
	b := create(t, t.TempDir(), true, t0)
	raw, err := os.ReadFile(b.Path)
	require.NoError(t, err)
	for _, n := range []int{len(raw) / 2, len(raw) - 30, len(raw) - footerSize, 3} {
		p := filepath.Join(t.TempDir(), "x.tar.zst")
		require.NoError(t, os.WriteFile(p, raw[:n], 0o644))
		_, err := Verify(p)
		if n == len(raw)-footerSize {
			// Only the footer is gone: every byte of the backup is there.
			require.NoError(t, err)
			continue
		}
		require.ErrorIs(t, err, ErrCorrupt, "cut at %d of %d", n, len(raw))
	}
}

func TestVerifyManyProblems(t *testing.T) {
	b := create(t, t.TempDir(), false, t0)
	for i := range 15 {
		require.NoError(t, os.WriteFile(filepath.Join(b.Path, "data", "extra"+strings.Repeat("x", i)), nil, 0o644))
	}
	_, err := Verify(b.Path)
	require.ErrorContains(t, err, "; and 5 more")
}

func TestVerifyMissing(t *testing.T) {
	_, err := Verify(filepath.Join(t.TempDir(), "nope"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestVerifyName: a backup renamed to another id is refused; to a name
// that is not an id, it verifies.
func TestVerifyName(t *testing.T) {
	forms(t, func(t *testing.T, archive bool) {
		b := create(t, t.TempDir(), archive, t0)
		ext := ""
		if archive {
			ext = ArchiveExt
		}
		other := filepath.Join(filepath.Dir(b.Path), "20261129T023001Z"+ext)
		require.NoError(t, os.Rename(b.Path, other))
		_, err := Verify(other)
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, "MANIFEST.json is of backup 20261129T023000Z, but the backup is named 20261129T023001Z")

		latest := filepath.Join(filepath.Dir(b.Path), "latest"+ext)
		require.NoError(t, os.Rename(other, latest))
		_, err = Verify(latest)
		require.NoError(t, err)
	})
}
