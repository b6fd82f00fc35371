package backup

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// DefaultUploadTimeout bounds one upload command that sets no timeout.
const DefaultUploadTimeout = 10 * time.Minute

// minInterval is the shortest interval between scheduled backups.
const minInterval = time.Minute

// Config is the backup section of the config file (key backup).
type Config struct {
	// Dir is the root directory backups are written to. Default ./backups.
	// Must not be empty, nor the data directory or inside it (CheckDirs).
	Dir string `yaml:"dir"`
	// Interval is the time between scheduled backups. Default 24h. 0
	// disables them; on-demand backups still work. At least 1m otherwise.
	Interval time.Duration `yaml:"interval"`
	// Archive writes each backup as one <id>.tar.zst file instead of a
	// directory. Default false.
	Archive bool `yaml:"archive"`
	// Upload lists the commands run, in order, after each backup. Default
	// none.
	Upload []UploadCommand `yaml:"upload"`
}

// UploadCommand is a program run after each backup to copy it elsewhere.
type UploadCommand struct {
	// Name identifies the command in logs and errors. Default: the
	// program's base name.
	Name string `yaml:"name" json:"name,omitempty"`
	// Command is the program and its arguments, run without a shell (use
	// ["sh", "-c", "…"] for one). It gets the server's environment plus
	// PROXYLENS_BACKUP_ID, PROXYLENS_BACKUP_PATH and PROXYLENS_BACKUP_DIR.
	// Required.
	Command []string `yaml:"command" json:"command"`
	// Timeout bounds one run; the command and its children are killed
	// then. Default 10m (0 means the default).
	Timeout time.Duration `yaml:"timeout" json:"timeout,omitempty"`
}

// DefaultConfig returns the defaults: daily directory backups into
// ./backups, uploaded nowhere. (How long they are kept is the retention
// policy's backup_days.)
func DefaultConfig() Config {
	return Config{Dir: "./backups", Interval: 24 * time.Hour}
}

// Validate reports every problem at once, each naming the field (as
// backup.upload[0].command) and the value.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if strings.TrimSpace(c.Dir) == "" {
		add("backup.dir: must not be empty")
	}
	if c.Interval < 0 || c.Interval > 0 && c.Interval < minInterval {
		add("backup.interval: must be 0 (no scheduled backups) or at least %s, got %q", minInterval, c.Interval.String())
	}
	names := map[string]int{}
	for i, u := range c.Upload {
		field := fmt.Sprintf("backup.upload[%d]", i)
		switch {
		case len(u.Command) == 0:
			add("%s.command: must name a program to run, got none", field)
		case strings.TrimSpace(u.Command[0]) == "":
			add("%s.command[0]: the program must not be empty", field)
		}
		if u.Timeout < 0 {
			add("%s.timeout: must not be negative (0 means %s), got %q", field, DefaultUploadTimeout, u.Timeout.String())
		}
		if len(u.Command) > 0 {
			name := u.name()
			if j, dup := names[name]; dup {
				add("%s.name: %q is also the name of backup.upload[%d]; give each a different name", field, name, j)
			} else {
				names[name] = i
			}
		}
	}
	return errors.Join(errs...)
}

// CheckDirs refuses a backup root that is the data directory or inside it:
// copies of the data directory would then hold the backups, and a restore
// of it would lose them.
func CheckDirs(root, dataDir string) error {
	r, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	d, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	if r == d || within(r, d) {
		return fmt.Errorf("backup.dir: %q must be outside the data directory %q", root, dataDir)
	}
	return nil
}

// within reports whether p is strictly inside dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

func (u UploadCommand) name() string {
	if u.Name != "" {
		return u.Name
	}
	if len(u.Command) == 0 {
		return ""
	}
	return filepath.Base(u.Command[0])
}
