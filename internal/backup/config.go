package backup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
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
// of it would lose them. Both paths are compared with their symbolic links
// resolved, so a root that is a link into the data directory (or a data
// directory reached through a link) is refused too; a path that does not
// exist yet is resolved through its nearest existing parent.
func CheckDirs(root, dataDir string) error {
	r, err := resolvePath(root)
	if err != nil {
		return fmt.Errorf("backup.dir: %w", err)
	}
	d, err := resolvePath(dataDir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if r == d || within(r, d) {
		var via string
		if abs, _ := filepath.Abs(root); abs != r {
			via = fmt.Sprintf(" (it resolves to %q)", r)
		}
		return fmt.Errorf("backup.dir: %q %w %q%s", root, ErrInsideDataDir, dataDir, via)
	}
	return nil
}

// maxLinks bounds the symbolic links followed through dangling links, as
// the kernel's ELOOP does.
const maxLinks = 40

// resolvePath returns p absolute, with the symbolic links of its longest
// existing prefix resolved and the rest (what does not exist yet) appended.
// A dangling link in the path is followed to where it points.
func resolvePath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %q: %w", p, err)
	}
	for links := 0; ; links++ {
		next, done, err := resolveExisting(abs)
		if err != nil {
			return "", fmt.Errorf("resolve %q: %w", p, err)
		}
		if done {
			return next, nil
		}
		if links == maxLinks {
			return "", fmt.Errorf("resolve %q: more than %d symbolic links", p, maxLinks)
		}
		abs = next
	}
}

// resolveExisting resolves the longest existing prefix of the absolute
// path abs and appends the rest. If a component of the rest is a dangling
// symbolic link, it returns the path with that link replaced by its
// target, not done: the caller resolves that again.
func resolveExisting(abs string) (path string, done bool, err error) {
	var rest []string
	for dir := abs; ; {
		real, err := filepath.EvalSymlinks(dir)
		if err == nil {
			return filepath.Join(append([]string{real}, rest...)...), true, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", false, err
		}
		if fi, lerr := os.Lstat(dir); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(dir)
			if err != nil {
				return "", false, err
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(dir), target)
			}
			return filepath.Join(append([]string{target}, rest...)...), false, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return abs, true, nil // nothing of it exists
		}
		rest = append([]string{filepath.Base(dir)}, rest...)
		dir = parent
	}
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
