package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/proxylens/proxylens/internal/backup"
	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// backupCmd takes a backup: through a running server's admin API, or, with
// --data-dir, by opening a stopped data directory itself.
func backupCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxylens backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	to := fs.String("to", "", "directory to write the backup into (required)")
	serverURL := fs.String("server", envOr("PROXYLENS_SERVER", "http://127.0.0.1:9464"), "a running proxylens to ask for the backup (env PROXYLENS_SERVER)")
	tokenFile := fs.String("admin-token-file", os.Getenv("PROXYLENS_ADMIN_TOKEN_FILE"), "file holding the admin bearer token (env PROXYLENS_ADMIN_TOKEN_FILE)")
	dataDir := fs.String("data-dir", "", "copy this stopped data directory instead of asking a server")
	archive := fs.Bool("archive", false, "with --data-dir: write one .tar.zst file instead of a directory")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: proxylens backup --to DIR [--server URL --admin-token-file FILE | --data-dir DIR]\n\nTake a consistent backup. Flags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *to == "" {
		fmt.Fprintln(stderr, "proxylens backup: --to is required")
		return errUsage
	}
	root, err := filepath.Abs(*to)
	if err != nil {
		return err
	}
	var b *backup.Backup
	if *dataDir != "" {
		b, err = offlineBackup(ctx, *dataDir, root, *archive, backup.ProgressBar(stderr))
	} else {
		b, err = serverBackup(ctx, *serverURL, *tokenFile, root)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup %s written to %s (%d bytes)\n", b.ID, b.Path, b.Size)
	return nil
}

// offlineBackup opens a stopped data directory (Pebble's lock refuses a
// running one) and backs it up.
func offlineBackup(ctx context.Context, dataDir, root string, archive bool, progress func(done, total int64)) (*backup.Backup, error) {
	if err := backup.CheckDirs(root, dataDir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dataDir, "pebble")); err != nil {
		return nil, fmt.Errorf("%s is not a proxylens data directory: %w", dataDir, err)
	}
	db, err := pebblestore.Open(dataDir, pebblestore.Options{})
	if err != nil {
		return nil, fmt.Errorf("%w (is proxylens running? then leave out --data-dir to ask it through its admin API)", err)
	}
	defer db.Close()
	if _, err := otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)); err != nil {
		return nil, err
	}
	return backup.Create(ctx, root, backup.CreateOptions{
		Snapshot: db.Snapshot,
		Archive:  archive,
		Progress: progress,
		Meta:     map[string]string{"proxylens_version": version(), "format_version": strconv.Itoa(pebblestore.FormatVersion)},
	})
}

// serverBackup asks a running server for a backup into root.
func serverBackup(ctx context.Context, serverURL, tokenFile, root string) (*backup.Backup, error) {
	if tokenFile == "" {
		return nil, errors.New("--admin-token-file is required to ask a server (or give --data-dir for a stopped one)")
	}
	c, err := newAPIClient(serverURL, tokenFile)
	if err != nil {
		return nil, err
	}
	var b backup.Backup
	if err := c.call(ctx, http.MethodPost, "/api/v1/admin/backup", map[string]string{"dir": root}, &b); err != nil {
		return nil, fmt.Errorf("ask %s for a backup: %w", serverURL, err)
	}
	return &b, nil
}

// restoreCmd restores a backup into a new data directory.
func restoreCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxylens restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "the backup: a directory with a MANIFEST.json or a .tar.zst archive (required)")
	dataDir := fs.String("data-dir", "", "the data directory to restore into; must not exist or be empty (required)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: proxylens restore --from BACKUP --data-dir DIR\n\nVerify a backup and restore it into a new data directory. Flags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *from == "" || *dataDir == "" {
		fmt.Fprintln(stderr, "proxylens restore: --from and --data-dir are required")
		return errUsage
	}
	if err := backup.Restore(*from, *dataDir, backup.ProgressBar(stderr)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s into %s; start proxylens with --data-dir %s\n", *from, *dataDir, *dataDir)
	return nil
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
