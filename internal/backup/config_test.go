package backup

import (
	"bytes"
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
