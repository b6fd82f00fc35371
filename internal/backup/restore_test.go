package backup

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
)

func TestRestoreRoundTrip(t *testing.T) {
	forms(t, func(t *testing.T, archive bool) {
		b := create(t, t.TempDir(), archive, t0)
		for _, existing := range []bool{false, true} {
			parent := t.TempDir()
			dataDir := filepath.Join(parent, "restored", "data") // parents are created
			if existing {
				require.NoError(t, os.MkdirAll(dataDir, 0o755)) // empty: fine
			}
			var last [2]int64
			require.NoError(t, Restore(b.Path, dataDir, func(done, total int64) { last = [2]int64{done, total} }))
			require.Equal(t, fixture(), readTree(t, dataDir), "exactly the data/ tree, byte for byte")
			require.Equal(t, last[0], last[1])
			require.Positive(t, last[1])
			require.Equal(t, []string{"data"}, entries(t, filepath.Dir(dataDir)), "no temporary directory left")
			// The backup is untouched.
			_, err := Verify(b.Path)
			require.NoError(t, err)
		}
	})
}

func TestRestoreRefuses(t *testing.T) {
	forms(t, func(t *testing.T, archive bool) {
		b := create(t, t.TempDir(), archive, t0)

		parent := t.TempDir()
		full := filepath.Join(parent, "data")
		writeTree(t, full, map[string]string{"journal/x.log": "x"})
		err := Restore(b.Path, full, nil)
		require.ErrorIs(t, err, ErrNotEmpty)
		require.ErrorContains(t, err, full+" holds journal; restore into a new or empty directory")
		require.Equal(t, map[string]string{"journal/": "", "journal/x.log": "x"}, readTree(t, full))

		file := filepath.Join(parent, "file")
		require.NoError(t, os.WriteFile(file, nil, 0o644))
		require.ErrorIs(t, Restore(b.Path, file, nil), ErrNotEmpty)

		require.ErrorContains(t, Restore(b.Path, filepath.Join(b.Path, "sub"), nil), "is inside the backup")

		interrupted := filepath.Join(parent, "interrupted")
		writeTree(t, interrupted, map[string]string{".restore-123/": "", "pebble/": ""})
		require.ErrorContains(t, Restore(b.Path, interrupted, nil), "an earlier restore was interrupted: empty the directory")
		require.ErrorIs(t, Restore(filepath.Join(parent, "missing"), filepath.Join(parent, "new"), nil), os.ErrNotExist)
		require.ElementsMatch(t, []string{"data", "file", "interrupted"}, entries(t, parent))
	})
}

// TestRestoreRefusesDamaged: a damaged backup restores nothing.
func TestRestoreRefusesDamaged(t *testing.T) {
	tests := []struct {
		name    string
		archive bool
		mutate  func(t *testing.T, p string)
		wantIs  error
		wantMsg string
	}{
		{"directory: byte changed", false, func(t *testing.T, p string) {
			writeTree(t, p, map[string]string{"data/pebble/CURRENT": "MANIFEST-000002\n"})
		}, ErrCorrupt, "data/pebble/CURRENT: SHA-256"},
		{"directory: file added", false, func(t *testing.T, p string) {
			writeTree(t, p, map[string]string{"data/pebble/000005.sst": "x"})
		}, ErrCorrupt, "data/pebble/000005.sst: not in the manifest"},
		{"directory: manifest removed", false, func(t *testing.T, p string) {
			require.NoError(t, os.Remove(filepath.Join(p, ManifestName)))
		}, ErrIncomplete, "no MANIFEST.json"},
		{"archive: byte changed", true, func(t *testing.T, p string) {
			es := readArchive(t, p)
			for i := range es {
				if es[i].name == "data/pebble/000004.sst" {
					es[i].body[0] ^= 1
				}
			}
			writeArchivePlain(t, p, es)
		}, ErrCorrupt, "data/pebble/000004.sst: SHA-256"},
		{"archive: escaping path", true, func(t *testing.T, p string) {
			es := readArchive(t, p)
			es = append([]entry{{name: "data/../../evil", typ: '0', body: []byte("x")}}, es...)
			writeArchivePlain(t, p, es)
		}, ErrCorrupt, "data/../../evil: not in the manifest"},
		{"archive: truncated", true, func(t *testing.T, p string) {
			st, err := os.Stat(p)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(p, st.Size()/2))
		}, ErrCorrupt, "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := create(t, t.TempDir(), tt.archive, t0)
			tt.mutate(t, b.Path)
			parent := t.TempDir()
			err := Restore(b.Path, filepath.Join(parent, "data"), nil)
			require.ErrorIs(t, err, tt.wantIs)
			require.ErrorContains(t, err, tt.wantMsg)
			require.Empty(t, entries(t, parent), "nothing restored, no temporary directory left")
			require.NoFileExists(t, filepath.Join(filepath.Dir(parent), "evil"))

			// Into an existing empty directory (a mount point, say): it stays empty.
			err = Restore(b.Path, parent, nil)
			require.ErrorIs(t, err, tt.wantIs)
			require.Empty(t, entries(t, parent))
		})
	}
}

// TestRestoreRefusesLocked: a data directory whose Pebble database is
// open, in this process or another, is refused as locked.
func TestRestoreRefusesLocked(t *testing.T) {
	b := create(t, t.TempDir(), false, t0)

	t.Run("this process", func(t *testing.T) {
		dataDir := t.TempDir()
		db, err := pebble.Open(filepath.Join(dataDir, "pebble"), &pebble.Options{Logger: quietLogger{}})
		require.NoError(t, err)
		err = Restore(b.Path, dataDir, nil)
		require.ErrorIs(t, err, ErrLocked)
		require.ErrorContains(t, err, "stop proxylens, or restore into another directory")
		// Probing did not release the database's lock.
		require.ErrorIs(t, Restore(b.Path, dataDir, nil), ErrLocked)
		require.NoError(t, db.Close())
		require.ErrorIs(t, Restore(b.Path, dataDir, nil), ErrNotEmpty)
	})

	t.Run("another process", func(t *testing.T) {
		dataDir := t.TempDir()
		exe, err := os.Executable()
		require.NoError(t, err)
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), holdEnv+"="+filepath.Join(dataDir, "pebble"))
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(stdout).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "locked\n", line)

		err = Restore(b.Path, dataDir, nil)
		require.ErrorIs(t, err, ErrLocked)
		require.ErrorContains(t, err, filepath.Join(dataDir, "pebble", "LOCK"))

		require.NoError(t, stdin.Close())
		require.NoError(t, cmd.Wait())
		require.ErrorIs(t, Restore(b.Path, dataDir, nil), ErrNotEmpty)
	})
}

// TestRestorePebble: a backup of a Pebble checkpoint taken while writes go
// on restores to a database that answers as the original did when the
// backup started.
func TestRestorePebble(t *testing.T) {
	forms(t, func(t *testing.T, archive bool) {
		src := filepath.Join(t.TempDir(), "pebble")
		db, err := pebble.Open(src, &pebble.Options{Logger: quietLogger{}})
		require.NoError(t, err)
		defer func() { require.NoError(t, db.Close()) }()
		want := map[string]string{}
		for i := range 2000 {
			k, v := fmt.Sprintf("key%05d", i), strings.Repeat(fmt.Sprint(i), 20)
			require.NoError(t, db.Set([]byte(k), []byte(v), pebble.Sync))
			want[k] = v
			if i == 1000 {
				require.NoError(t, db.Flush()) // some in an sstable, some in the WAL
			}
		}
		b, err := Create(context.Background(), t.TempDir(), CreateOptions{
			Archive: archive,
			Snapshot: func(ctx context.Context, dir string) error {
				if err := db.Checkpoint(filepath.Join(dir, "pebble"), pebble.WithFlushedWAL()); err != nil {
					return err
				}
				// Written after the snapshot: not in the backup.
				return db.Set([]byte("later"), []byte("x"), pebble.Sync)
			},
		})
		require.NoError(t, err)

		dataDir := filepath.Join(t.TempDir(), "data")
		require.NoError(t, Restore(b.Path, dataDir, nil))
		rdb, err := pebble.Open(filepath.Join(dataDir, "pebble"), &pebble.Options{Logger: quietLogger{}})
		require.NoError(t, err)
		got := map[string]string{}
		it, err := rdb.NewIter(nil)
		require.NoError(t, err)
		for it.First(); it.Valid(); it.Next() {
			got[string(it.Key())] = string(it.Value())
		}
		require.NoError(t, it.Close())
		require.NoError(t, rdb.Close())
		require.Equal(t, want, got)
	})
}
