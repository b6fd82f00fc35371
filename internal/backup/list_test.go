package backup

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const day = 24 * time.Hour

func TestList(t *testing.T) {
	root := t.TempDir()
	at := func(d int) time.Time { return t0.Add(time.Duration(d) * day) }
	dir := create(t, root, false, at(1))
	arch := create(t, root, true, at(2))
	writeTree(t, root, map[string]string{
		".20261202T023000Z.partial/data/pebble/000001.sst": "abc",
		"20261203T023000Z/data/x":                          "no manifest",
		"20261204T023000Z/MANIFEST.json":                   "{garbage",
		"20261205T023000Z.tar.zst":                         "not zstd at all, but long enough for a footer",
		".20261207T023000Z.deleting/data/x":                "y",
		// Not backups: ignored.
		"README":                      "x",
		".git-lfs-worktree/x":         "x",
		"2026-backup/x":               "x",
		"20261208T023000Z":            "a file named like a directory backup",
		"20261209T023000Z.tar.zst/x":  "a directory named like an archive",
		".20261210T023000Z.partial":   "a file named like a staging directory",
		".notanid.partial/x":          "x",
		"20261211T023000Z.tar.zst.gz": "x",
	})
	// An archive written by another tool, without the footer.
	plain := filepath.Join(root, "20261206T023000Z.tar.zst")
	writeArchivePlain(t, plain, readArchive(t, arch.Path))

	infos, err := List(root)
	require.NoError(t, err)
	type row struct {
		id     string
		status Status
		arch   bool
	}
	var rows []row
	for _, in := range infos {
		rows = append(rows, row{in.ID, in.Status, in.Archive})
		require.Equal(t, root, filepath.Dir(in.Path))
	}
	require.Equal(t, []row{
		{"20261130T023000Z", StatusComplete, false},
		{"20261201T023000Z", StatusComplete, true},
		{"20261202T023000Z", StatusIncomplete, false},
		{"20261203T023000Z", StatusIncomplete, false},
		{"20261204T023000Z", StatusCorrupt, false},
		{"20261205T023000Z", StatusCorrupt, true},
		{"20261206T023000Z", StatusCorrupt, true}, // a copy of arch
		{"20261207T023000Z", StatusIncomplete, false},
	}, rows)

	require.Equal(t, dir.Info, infos[0])
	require.Equal(t, arch.Info, infos[1])
	require.Equal(t, int64(3), infos[2].Size)
	require.Equal(t, "not finished: being written, or interrupted", infos[2].Problem)
	require.Equal(t, int64(len("no manifest")), infos[3].Size)
	require.Contains(t, infos[3].Problem, "no MANIFEST.json")
	require.Contains(t, infos[4].Problem, "parse MANIFEST.json")
	require.Equal(t, at(5), infos[4].Created)
	require.Contains(t, infos[6].Problem, "MANIFEST.json is of backup 20261201T023000Z, not 20261206T023000Z")
	require.Equal(t, "being deleted", infos[7].Problem)

	none, err := List(filepath.Join(root, "missing"))
	require.NoError(t, err)
	require.Empty(t, none)
}

// TestListArchiveWithoutFooter: an archive recompressed by another tool
// is complete if its last entry is the manifest.
func TestListArchiveWithoutFooter(t *testing.T) {
	root := t.TempDir()
	b := create(t, root, true, t0)
	es := readArchive(t, b.Path)
	writeArchivePlain(t, b.Path, es)
	infos, err := List(root)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	require.Equal(t, StatusComplete, infos[0].Status, infos[0].Problem)

	writeArchivePlain(t, b.Path, es[:len(es)-1])
	infos, err = List(root)
	require.NoError(t, err)
	require.Equal(t, StatusIncomplete, infos[0].Status)
	require.Contains(t, infos[0].Problem, "does not end with MANIFEST.json")
}

func TestListArchiveBadFooter(t *testing.T) {
	root := t.TempDir()
	b := create(t, root, true, t0)
	raw, err := os.ReadFile(b.Path)
	require.NoError(t, err)
	// Point the footer at the start of the archive: the data entries.
	copy(raw[len(raw)-8:], make([]byte, 8))
	require.NoError(t, os.WriteFile(b.Path, raw, 0o644))
	infos, err := List(root)
	require.NoError(t, err)
	require.Equal(t, StatusCorrupt, infos[0].Status)
	require.Contains(t, infos[0].Problem, `the entry the footer points to is "data/", not MANIFEST.json`)

	require.NoError(t, os.WriteFile(b.Path, raw[:10], 0o644))
	infos, err = List(root)
	require.NoError(t, err)
	require.Equal(t, StatusCorrupt, infos[0].Status)
	require.Contains(t, infos[0].Problem, "10 bytes is too short for an archive")
}

func TestPrune(t *testing.T) {
	now := t0
	root := t.TempDir()
	var complete []*Backup
	for i, d := range []int{-50, -40, -10, -1} {
		complete = append(complete, create(t, root, i%2 == 1, now.Add(time.Duration(d)*day)))
	}
	writeTree(t, root, map[string]string{
		".20261129T003000Z.partial/data/a": "stale: nothing written for 2h",
		".20261129T022000Z.partial/data/a": "busy: written 10m ago",
		"20261014T000000Z/MANIFEST.json":   "corrupt and 46 days old",
		"20261124T000000Z/MANIFEST.json":   "corrupt and 5 days old",
		"20261001T000000Z-keep-me":         "not a backup",
	})
	touch := func(rel string, at time.Time) {
		require.NoError(t, filepath.Walk(filepath.Join(root, rel), func(p string, _ os.FileInfo, err error) error {
			require.NoError(t, err)
			return os.Chtimes(p, at, at)
		}))
	}
	touch(".20261129T003000Z.partial", now.Add(-2*time.Hour))
	touch(".20261129T022000Z.partial", now.Add(-10*time.Minute))

	removed, err := Prune(root, 30*day, now)
	require.NoError(t, err)
	require.Equal(t, []string{
		complete[0].Path,
		filepath.Join(root, "20261014T000000Z"),
		complete[1].Path,
		filepath.Join(root, ".20261129T003000Z.partial"),
	}, removed)
	require.ElementsMatch(t, []string{
		filepath.Base(complete[2].Path), filepath.Base(complete[3].Path),
		".20261129T022000Z.partial", "20261124T000000Z", "20261001T000000Z-keep-me",
	}, entries(t, root))

	// Nothing more to do.
	removed, err = Prune(root, 30*day, now)
	require.NoError(t, err)
	require.Empty(t, removed)

	// Long after: the newest complete backup stays.
	removed, err = Prune(root, 30*day, now.Add(365*day))
	require.NoError(t, err)
	require.Equal(t, []string{
		complete[2].Path,
		filepath.Join(root, "20261124T000000Z"),
		filepath.Join(root, ".20261129T022000Z.partial"),
	}, removed)
	infos, err := List(root)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	require.Equal(t, complete[3].Info, infos[0])
}

func TestPruneKeepForever(t *testing.T) {
	root := t.TempDir()
	create(t, root, false, t0.Add(-1000*day))
	create(t, root, true, t0.Add(-900*day))
	removed, err := Prune(root, 0, t0)
	require.NoError(t, err)
	require.Empty(t, removed)

	removed, err = Prune(filepath.Join(root, "missing"), day, t0)
	require.NoError(t, err)
	require.Empty(t, removed)
}

func TestIDs(t *testing.T) {
	require.Equal(t, "20261129T023000Z", NewID(t0.In(time.FixedZone("x", 3600)), 0))
	require.Equal(t, "20261129T023000Z-12", NewID(t0, 12))
	for _, bad := range []string{"", "20261129T023000", "20261129T023000Z-0", "20261129T023000Z-01", "20261399T023000Z", "x20261129T023000Z"} {
		_, _, ok := ParseID(bad)
		require.False(t, ok, bad)
	}
	tm, n, ok := ParseID("20261129T023000Z-3")
	require.True(t, ok)
	require.Equal(t, t0, tm)
	require.Equal(t, 3, n)
}
