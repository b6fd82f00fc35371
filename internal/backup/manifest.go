package backup

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	// ManifestName is the manifest's file name in a directory backup and its
	// entry name (the last one) in an archive.
	ManifestName = "MANIFEST.json"
	// ManifestVersion is the version of the manifest format written.
	ManifestVersion = 1
	// DataDir is the directory of a backup that holds the data directory's
	// files; a restore yields exactly its tree.
	DataDir = "data"
	// ArchiveExt ends the name of an archive backup.
	ArchiveExt = ".tar.zst"

	idLayout = "20060102T150405Z"
	// maxManifestBytes bounds the manifest read into memory: about 300,000
	// files.
	maxManifestBytes = 64 << 20
)

// Manifest describes a complete backup. Its JSON form is MANIFEST.json:
//
//	{"version":1,"id":"20261129T023000Z","created":"2026-11-29T02:30:00.123Z",
//	 "size":12345,"dirs":["data","data/journal","data/pebble"],
//	 "files":[{"path":"data/pebble/000001.sst","size":123,"sha256":"…"}]}
type Manifest struct {
	// Version is ManifestVersion.
	Version int `json:"version"`
	// ID is the backup's id.
	ID string `json:"id"`
	// Created is when the backup was started, UTC.
	Created time.Time `json:"created"`
	// Size is the sum of the files' sizes.
	Size int64 `json:"size"`
	// Meta is free-form information from CreateOptions.Meta, such as the
	// proxylens version and the data format version.
	Meta map[string]string `json:"meta,omitempty"`
	// Dirs lists every directory, DataDir included, sorted; paths are
	// slash-separated and relative to the backup.
	Dirs []string `json:"dirs"`
	// Files lists every file but the manifest, sorted by path.
	Files []File `json:"files"`
}

// File is one file of a backup.
type File struct {
	// Path is slash-separated, relative to the backup, under DataDir.
	Path string `json:"path"`
	// Size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the lowercase hex SHA-256 of the contents.
	SHA256 string `json:"sha256"`
}

var idPattern = regexp.MustCompile(`^([0-9]{8}T[0-9]{6}Z)(?:-([1-9][0-9]{0,5}))?$`)

// NewID returns the id of a backup started at t, with suffix n (0 for none).
func NewID(t time.Time, n int) string {
	id := t.UTC().Format(idLayout)
	if n > 0 {
		id += "-" + strconv.Itoa(n)
	}
	return id
}

// ParseID returns the time and suffix of a backup id; ok is false if s is
// not one.
func ParseID(s string) (t time.Time, n int, ok bool) {
	m := idPattern.FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, 0, false
	}
	t, err := time.Parse(idLayout, m[1])
	if err != nil {
		return time.Time{}, 0, false
	}
	if m[2] != "" {
		n, _ = strconv.Atoi(m[2])
	}
	return t, n, true
}

// decodeManifest parses and checks a manifest.
func decodeManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse %s: %w", ManifestName, err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	return &m, nil
}

// sort puts the directories and files in path order.
func (m *Manifest) sort() {
	slices.Sort(m.Dirs)
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
}

func (m *Manifest) encode() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// check reports the first inconsistency of a decoded manifest.
func (m *Manifest) check() error {
	if m.Version != ManifestVersion {
		return fmt.Errorf("unsupported version %d (this proxylens reads version %d)", m.Version, ManifestVersion)
	}
	if _, _, ok := ParseID(m.ID); !ok {
		return fmt.Errorf("id %q is not a backup id", m.ID)
	}
	if m.Created.IsZero() {
		return fmt.Errorf("no creation time")
	}
	dirs := make(map[string]bool, len(m.Dirs))
	for _, d := range m.Dirs {
		if err := checkPath(d); err != nil {
			return fmt.Errorf("directory %q: %w", d, err)
		}
		if dirs[d] {
			return fmt.Errorf("directory %q is listed twice", d)
		}
		dirs[d] = true
	}
	if !dirs[DataDir] {
		return fmt.Errorf("the %s directory is not listed", DataDir)
	}
	for _, d := range m.Dirs {
		if d != DataDir && !dirs[path.Dir(d)] {
			return fmt.Errorf("directory %q: its parent is not listed", d)
		}
	}
	files := make(map[string]bool, len(m.Files))
	var sum int64
	for _, f := range m.Files {
		if err := checkPath(f.Path); err != nil || f.Path == DataDir {
			return fmt.Errorf("file %q: not a path under %s/", f.Path, DataDir)
		}
		if files[f.Path] || dirs[f.Path] {
			return fmt.Errorf("file %q is listed twice", f.Path)
		}
		files[f.Path] = true
		if !dirs[path.Dir(f.Path)] {
			return fmt.Errorf("file %q: its directory is not listed", f.Path)
		}
		if f.Size < 0 {
			return fmt.Errorf("file %q: negative size %d", f.Path, f.Size)
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != 32 || strings.ToLower(f.SHA256) != f.SHA256 {
			return fmt.Errorf("file %q: sha256 %q is not 64 lowercase hex digits", f.Path, f.SHA256)
		}
		sum += f.Size
	}
	if sum != m.Size {
		return fmt.Errorf("size %d is not the sum of the files' sizes, %d", m.Size, sum)
	}
	return nil
}

// checkPath accepts DataDir and clean, relative, slash-separated paths
// under it.
func checkPath(p string) error {
	if p == DataDir {
		return nil
	}
	if !strings.HasPrefix(p, DataDir+"/") || path.Clean(p) != p || strings.Contains(p, "\\") || strings.ContainsRune(p, 0) {
		return fmt.Errorf("not a clean path under %s/", DataDir)
	}
	if slices.Contains(strings.Split(p, "/"), "..") {
		return fmt.Errorf("not a clean path under %s/", DataDir)
	}
	return nil
}
