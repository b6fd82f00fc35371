package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The upload recipes of docs/operations.md, run as documented.

// docRecipe returns the sh block that follows "<!-- recipe: NAME" in
// docs/operations.md.
func docRecipe(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	require.NoError(t, err)
	doc := string(b)
	i := strings.Index(doc, "<!-- recipe: "+name+" ")
	require.GreaterOrEqual(t, i, 0, "docs/operations.md has no recipe %s", name)
	rest := doc[i:]
	const open = "```sh\n"
	j := strings.Index(rest, open)
	require.GreaterOrEqual(t, j, 0)
	rest = rest[j+len(open):]
	k := strings.Index(rest, "\n```\n")
	require.GreaterOrEqual(t, k, 0)
	return rest[:k+1]
}

// writeScript writes an executable script into a new directory.
func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(body), 0o755))
	return p
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	skipWithoutSh(t)
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
}

// isolateGit keeps git from reading this machine's and this user's config
// (where `git lfs install` may have run): the recipe must set up Git LFS
// itself.
func isolateGit(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", home)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	for _, v := range []string{"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_LFS_SKIP_SMUDGE"} {
		t.Setenv(v, "")
		require.NoError(t, os.Unsetenv(v))
	}
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git %s: %s", strings.Join(args, " "), out)
	return string(out)
}

func fileSHA256(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestRecipeGitLFS pushes archives to a local bare repository with the
// documented script, and finds them there as Git LFS objects.
func TestRecipeGitLFS(t *testing.T) {
	requireTools(t, "git")
	if out, err := exec.Command("git", "lfs", "version").CombinedOutput(); err != nil {
		t.Skipf("git-lfs is not installed (apt-get install git-lfs): %v: %s", err, out)
	}
	isolateGit(t)
	script := writeScript(t, "backup-git-lfs.sh", docRecipe(t, "backup-git-lfs.sh"))
	bare := filepath.Join(t.TempDir(), "backups.git")
	git(t, ".", "init", "--quiet", "--bare", bare)

	root := t.TempDir()
	upload := []UploadCommand{{Name: "git-lfs", Command: []string{script, bare, "main"}, Timeout: 5 * time.Minute}}
	ctx := context.Background()
	first := create(t, root, true, t0)
	require.NoError(t, Upload(ctx, upload, first, nil))
	second := create(t, root, true, t0.Add(day))
	require.NoError(t, Upload(ctx, upload, second, nil))
	require.NoError(t, Upload(ctx, upload, second, nil), "uploading the same backup again is a no-op")

	dir := create(t, root, false, t0.Add(2*day))
	err := Upload(ctx, upload, dir, nil)
	require.ErrorContains(t, err, `upload "git-lfs" (`+script+`): exit status 2: backup-git-lfs.sh: `+dir.Path+` is a directory: set backup.archive to true`)
	require.ElementsMatch(t, []string{filepath.Base(first.Path), filepath.Base(second.Path), filepath.Base(dir.Path)}, entries(t, root),
		"the script cleans up its work directory")

	// The bare repository holds both archives as LFS objects.
	for _, b := range []*Backup{first, second} {
		oid := fileSHA256(t, b.Path)
		require.FileExists(t, filepath.Join(bare, "lfs", "objects", oid[:2], oid[2:4], oid))
	}
	require.Equal(t, 2, strings.Count(git(t, bare, "log", "--oneline", "main"), "proxylens backup "))

	// A fresh clone has the newest archive in its tree, tracked by LFS, and
	// gets its bytes back.
	clone := filepath.Join(t.TempDir(), "clone")
	git(t, ".", "clone", "--quiet", "--branch", "main", bare, clone)
	git(t, clone, "lfs", "install", "--local")
	git(t, clone, "lfs", "pull")
	require.Equal(t, filepath.Base(second.Path)+"\n", git(t, clone, "lfs", "ls-files", "--name-only"))
	all := git(t, clone, "lfs", "ls-files", "--all", "--name-only")
	require.Contains(t, all, filepath.Base(first.Path))
	require.Contains(t, all, filepath.Base(second.Path))
	got := filepath.Join(clone, filepath.Base(second.Path))
	require.Equal(t, fileSHA256(t, second.Path), fileSHA256(t, got))
	m, err := Verify(got)
	require.NoError(t, err)
	require.Equal(t, second.ID, m.ID)

	// And it restores.
	require.NoError(t, Restore(got, filepath.Join(t.TempDir(), "data"), nil))
}

// TestRecipeKaggle runs the documented script with a stand-in for the
// kaggle tool (Kaggle cannot be reached from tests).
func TestRecipeKaggle(t *testing.T) {
	requireTools(t)
	script := writeScript(t, "backup-kaggle.sh", docRecipe(t, "backup-kaggle.sh"))
	out := t.TempDir()
	bin := filepath.Dir(writeScript(t, "kaggle", `#!/bin/sh
printf '%s\n' "$@" > "$KAGGLE_STUB_OUT/args"
while [ $# -gt 0 ]; do
	if [ "$1" = -p ]; then dir=$2; fi
	shift
done
ls -A "$dir" > "$KAGGLE_STUB_OUT/files"
cp "$dir/dataset-metadata.json" "$KAGGLE_STUB_OUT/metadata"
cp "$dir/$(basename "$PROXYLENS_BACKUP_PATH")" "$KAGGLE_STUB_OUT/archive"
if [ -n "${KAGGLE_STUB_FAIL:-}" ]; then echo "401 - Unauthorized" >&2; exit 1; fi
`))
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("KAGGLE_STUB_OUT", out)

	root := t.TempDir()
	b := create(t, root, true, t0)
	upload := []UploadCommand{{Name: "kaggle", Command: []string{script, "example/proxylens-backups"}}}
	require.NoError(t, Upload(context.Background(), upload, b, nil))

	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(out, name))
		require.NoError(t, err)
		return string(b)
	}
	args := strings.Split(strings.TrimSuffix(read("args"), "\n"), "\n")
	require.Len(t, args, 6)
	require.Equal(t, []string{"datasets", "version", "-p"}, args[:3])
	require.Equal(t, root, filepath.Dir(args[3]), "works beside the backups")
	require.Equal(t, []string{"-m", "proxylens backup 20261129T023000Z"}, args[4:])
	require.Equal(t, "20261129T023000Z.tar.zst\ndataset-metadata.json\n", read("files"))
	var meta map[string]any
	require.NoError(t, json.Unmarshal([]byte(read("metadata")), &meta))
	require.Equal(t, "example/proxylens-backups", meta["id"])
	require.Equal(t, fileSHA256(t, b.Path), fileSHA256(t, filepath.Join(out, "archive")))
	require.Equal(t, []string{filepath.Base(b.Path)}, entries(t, root), "the script cleans up")

	t.Setenv("KAGGLE_STUB_FAIL", "1")
	err := Upload(context.Background(), upload, b, nil)
	require.ErrorContains(t, err, `upload "kaggle" (`+script+`): exit status 1: 401 - Unauthorized`)
	require.Equal(t, []string{filepath.Base(b.Path)}, entries(t, root))
}

// TestRecipeVerify: the documented jq and sha256sum check passes on a
// backup and fails on a damaged one.
func TestRecipeVerify(t *testing.T) {
	requireTools(t, "jq", "sha256sum")
	recipe := docRecipe(t, "verify")
	lines := strings.SplitN(recipe, "\n", 2)
	require.True(t, strings.HasPrefix(lines[0], "cd "))
	b := create(t, t.TempDir(), false, t0)
	check := func() error {
		cmd := exec.Command("sh", "-c", lines[1])
		cmd.Dir = b.Path
		return cmd.Run()
	}
	require.NoError(t, check())
	writeTree(t, b.Path, map[string]string{"data/pebble/CURRENT": "MANIFEST-000009\n"})
	require.Error(t, check())
}
