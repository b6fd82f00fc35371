package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/proxylens/proxylens/otelanalytics"
	"github.com/proxylens/proxylens/pebblestore"
)

// errAuditBroken is a verification that found a break: exit status 1.
var errAuditBroken = errors.New("the audit log's chain is broken")

// auditCmd runs `proxylens audit verify`: it checks the audit log's hash
// chain, of a stopped data directory (--data-dir) or of a running server
// through its admin API.
func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "Usage: proxylens audit verify [--data-dir DIR | --server URL --admin-token-file FILE]")
		return errUsage
	}
	fs := flag.NewFlagSet("proxylens audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "check this stopped data directory")
	serverURL := fs.String("server", envOr("PROXYLENS_SERVER", "http://127.0.0.1:9464"), "else ask this running proxylens (env PROXYLENS_SERVER)")
	tokenFile := fs.String("admin-token-file", os.Getenv("PROXYLENS_ADMIN_TOKEN_FILE"), "file holding the admin bearer token (env PROXYLENS_ADMIN_TOKEN_FILE)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	var entries int
	var broken string
	if *dataDir != "" {
		db, err := pebblestore.Open(*dataDir, pebblestore.Options{})
		if err != nil {
			return fmt.Errorf("%w (is proxylens running? then leave out --data-dir to ask it)", err)
		}
		defer db.Close()
		if _, err := otelanalytics.Restore(db, otelanalytics.NewDict(0), otelanalytics.NewAggregator(otelanalytics.AggregationConfig{}, 15*time.Second, nil)); err != nil {
			return err
		}
		n, err := db.VerifyAudit()
		var ab *pebblestore.AuditBreak
		switch {
		case errors.As(err, &ab):
			entries, broken = n, ab.Error()
		case err != nil:
			return err
		default:
			entries = n
		}
	} else {
		if *tokenFile == "" {
			return errors.New("--admin-token-file is required to ask a server (or give --data-dir for a stopped one)")
		}
		c, err := newAPIClient(*serverURL, *tokenFile)
		if err != nil {
			return err
		}
		var v struct {
			Entries int    `json:"entries"`
			Break   string `json:"break"`
		}
		if err := c.call(ctx, http.MethodGet, "/api/v1/admin/audit/verify", nil, &v); err != nil {
			return fmt.Errorf("ask %s to verify the audit log: %w", *serverURL, err)
		}
		entries, broken = v.Entries, v.Break
	}
	if broken != "" {
		fmt.Fprintf(stdout, "BROKEN after %d good entries: %s\n", entries, broken)
		return errAuditBroken
	}
	fmt.Fprintf(stdout, "ok: %d entries, every link and hash checks\n", entries)
	return nil
}
