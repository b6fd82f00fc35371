package backup

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// loadConfig decodes a file holding a backup: section over the defaults,
// strictly, as the server's config loader does.
func loadConfig(t *testing.T, name string) (Config, error) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "config", name))
	require.NoError(t, err)
	file := struct {
		Backup Config `yaml:"backup"`
	}{DefaultConfig()}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		return file.Backup, err
	}
	return file.Backup, file.Backup.Validate()
}

func TestConfig(t *testing.T) {
	require.NoError(t, DefaultConfig().Validate())
	require.Equal(t, Config{Dir: "./backups", Interval: 24 * time.Hour}, DefaultConfig())

	c, err := loadConfig(t, "good.yaml")
	require.NoError(t, err)
	require.Equal(t, Config{
		Dir: "/var/backups/proxylens", Interval: 6 * time.Hour, Archive: true,
		Upload: []UploadCommand{
			{Name: "git-lfs", Command: []string{"/etc/proxylens/backup-git-lfs.sh", "git@github.com:me/proxylens-backups.git"}, Timeout: 30 * time.Minute},
			{Command: []string{"sh", "-c", `rclone copy "$PROXYLENS_BACKUP_PATH" remote:backups`}},
		},
	}, c)

	// Interval 0 turns scheduled backups off.
	require.NoError(t, Config{Dir: "b"}.Validate())
}

func TestConfigBad(t *testing.T) {
	want := map[string]string{
		"empty-dir.bad.yaml": "backup.dir: must not be empty",
		"interval.bad.yaml":  `backup.interval: must be 0 (no scheduled backups) or at least 1m0s, got "30s"`,
		"negative.bad.yaml":  `backup.interval: must be 0 (no scheduled backups) or at least 1m0s, got "-1h0m0s"`,
		"upload.bad.yaml": "backup.upload[0].command: must name a program to run, got none\n" +
			"backup.upload[1].command[0]: the program must not be empty\n" +
			`backup.upload[1].timeout: must not be negative (0 means 10m0s), got "-1s"` + "\n" +
			`backup.upload[3].name: "push" is also the name of backup.upload[2]; give each a different name` + "\n" +
			`backup.upload[4].name: "push" is also the name of backup.upload[2]; give each a different name`,
		// How long backups are kept is the retention policy's backup_days.
		"retention.bad.yaml":     "yaml: unmarshal errors:\n  line 2: field retention not found in type backup.Config",
		"unknown-key.bad.yaml":   "yaml: unmarshal errors:\n  line 2: field directory not found in type backup.Config",
		"upload-string.bad.yaml": "yaml: unmarshal errors:\n  line 3: cannot unmarshal !!str `git lfs...` into []string",
	}
	files, err := filepath.Glob(filepath.Join("testdata", "config", "*.bad.yaml"))
	require.NoError(t, err)
	require.Len(t, files, len(want))
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			_, err := loadConfig(t, name)
			require.EqualError(t, err, want[name])
		})
	}
}

func TestCheckDirs(t *testing.T) {
	require.NoError(t, CheckDirs("./backups", "./data"))
	require.NoError(t, CheckDirs("/srv/data-backups", "/srv/data"))
	require.NoError(t, CheckDirs("/srv/data/../backups", "/srv/data"))
	require.NoError(t, CheckDirs("/var/lib/proxylens", "/var/lib/proxylens/data"))
	for _, c := range [][2]string{{"./data", "./data"}, {"data/backups", "data"}, {"/srv/data/x/..", "/srv/data"}} {
		require.ErrorContains(t, CheckDirs(c[0], c[1]), "must be outside the data directory", c)
	}
}

// TestCheckDirsSymlinks is attack 8 of issue 17: a backup dir that is a
// symbolic link into the data directory, or a data directory reached
// through one, passed the check on the paths as written.
func TestCheckDirsSymlinks(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	outside := filepath.Join(tmp, "elsewhere")
	require.NoError(t, os.MkdirAll(filepath.Join(data, "sub"), 0o755))
	require.NoError(t, os.MkdirAll(outside, 0o755))
	link := func(name, target string) string {
		p := filepath.Join(tmp, name)
		require.NoError(t, os.Symlink(target, p))
		return p
	}
	toData := link("to-data", data)                                  // the data directory itself
	toSub := link("to-sub", filepath.Join(data, "sub"))              // a directory inside it
	dangling := link("dangling", filepath.Join(data, "backups"))     // inside it, not created yet
	relative := link("relative", "data/sub")                         // a relative link
	chain := link("chain", toSub)                                    // a link to a link
	toOutside := link("to-outside", outside)                         // elsewhere: fine
	danglingOut := link("dangling-out", filepath.Join(outside, "b")) // elsewhere, not created yet
	dataLink := link("data-link", data)                              // the data directory through a link

	for _, c := range []struct{ root, data string }{
		{toData, data},
		{toSub, data},
		{dangling, data},
		{filepath.Join(dangling, "x", "y"), data}, // below a dangling link
		{relative, data},
		{chain, data},
		{filepath.Join(toData, "backups"), data}, // not there yet, below a link into it
		{filepath.Join(data, "backups"), dataLink},
		{toSub, dataLink},
	} {
		err := CheckDirs(c.root, c.data)
		require.ErrorIs(t, err, ErrInsideDataDir, c)
		require.ErrorContains(t, err, fmt.Sprintf("%q", c.root), "the message names the dir as configured")
	}
	for _, root := range []string{toOutside, danglingOut, filepath.Join(toOutside, "new"), filepath.Join(tmp, "new", "backups")} {
		require.NoError(t, CheckDirs(root, data), root)
		require.NoError(t, CheckDirs(root, dataLink), root)
	}

	// A loop of links is an error, not a hang.
	a, b := filepath.Join(tmp, "loop-a"), filepath.Join(tmp, "loop-b")
	require.NoError(t, os.Symlink(b, a))
	require.NoError(t, os.Symlink(a, b))
	require.ErrorContains(t, CheckDirs(filepath.Join(a, "x"), data), "backup.dir: resolve")
}
