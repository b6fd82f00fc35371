package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// holdEnv makes the test binary a helper process that opens the Pebble
// database in the named directory, says "locked", and holds it until its
// standard input closes.
const holdEnv = "PROXYLENS_BACKUP_TEST_HOLD_PEBBLE"

func TestMain(m *testing.M) {
	if dir := os.Getenv(holdEnv); dir != "" {
		os.Exit(holdPebble(dir))
	}
	goleak.VerifyTestMain(m)
}

func holdPebble(dir string) int {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := db.Close(); err != nil {
		return 1
	}
	return 0
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

var t0 = time.Date(2026, 11, 29, 2, 30, 0, 0, time.UTC)

func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

// bigFile is larger than two copy chunks, so that cancellation and
// progress happen midway.
var bigFile = strings.Repeat("0123456789abcdef", 3*copyChunk/16+100)

// fixture is a data directory: paths relative to it, a trailing slash for
// a directory.
func fixture() map[string]string {
	return map[string]string{
		"pebble/":                          "",
		"pebble/000004.sst":                bigFile,
		"pebble/MANIFEST-000001":           "manifest bytes",
		"pebble/OPTIONS-000003":            "[Version]\n",
		"pebble/CURRENT":                   "MANIFEST-000001\n",
		"journal/":                         "",
		"journal/00000000000000000007.log": "journal segment",
		"journal/00000000000000000008.log": "",
		"empty/":                           "",
	}
}

// writeTree writes a fixture under dir.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if strings.HasSuffix(p, "/") {
			require.NoError(t, os.MkdirAll(full, 0o755))
			continue
		}
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(content), 0o644))
	}
}

// readTree reads a directory back into a fixture.
func readTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		rel, err := filepath.Rel(dir, p)
		require.NoError(t, err)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			out[rel+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		out[rel] = string(b)
		return nil
	}))
	return out
}

func snapshotOf(files map[string]string) func(context.Context, string) error {
	return func(_ context.Context, dir string) error {
		for p, content := range files {
			full := filepath.Join(dir, filepath.FromSlash(p))
			if strings.HasSuffix(p, "/") {
				if err := os.MkdirAll(full, 0o755); err != nil {
					return err
				}
				continue
			}
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
}

// create takes a backup of the fixture into root.
func create(t testing.TB, root string, archive bool, now time.Time) *Backup {
	t.Helper()
	b, err := Create(context.Background(), root, CreateOptions{Snapshot: snapshotOf(fixture()), Archive: archive, Now: clock(now)})
	require.NoError(t, err)
	return b
}

func forms(t *testing.T, f func(t *testing.T, archive bool)) {
	for _, archive := range []bool{false, true} {
		name := "form=directory"
		if archive {
			name = "form=archive"
		}
		t.Run(name, func(t *testing.T) { f(t, archive) })
	}
}

// entry is one tar entry of an archive.
type entry struct {
	name string
	typ  byte
	body []byte
}

func readArchive(t testing.TB, path string) []entry {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	dec, err := zstd.NewReader(f)
	require.NoError(t, err)
	defer dec.Close()
	tr := tar.NewReader(dec)
	var out []entry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		out = append(out, entry{name: hdr.Name, typ: hdr.Typeflag, body: b})
	}
}

// writeArchivePlain writes entries as a plain .tar.zst, without the
// manifest footer, as another tool would.
func writeArchivePlain(t testing.TB, path string, entries []entry) {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf)
	require.NoError(t, err)
	tw := tar.NewWriter(enc)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == tar.TypeSymlink {
			hdr.Linkname, hdr.Size = "elsewhere", 0
		}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		require.NoError(t, tw.WriteHeader(hdr))
		if e.typ == tar.TypeReg {
			_, err := tw.Write(e.body)
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	require.NoError(t, enc.Close())
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
}

func entries(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}
