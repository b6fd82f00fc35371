package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// reportCmd asks a running server for a formatted report, follows its
// progress and downloads the file.
func reportCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxylens report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rng := fs.String("range", "30d", `time range: 24h, 7d, 30d, or START,END in RFC 3339`)
	format := fs.String("format", "pdf", "pdf or html")
	sources := fs.String("sources", "", "only these sources (comma-separated)")
	apps := fs.String("applications", "", "only these applications (comma-separated)")
	out := fs.String("out", "", "the file to write (required; - for standard output)")
	serverURL := fs.String("server", envOr("PROXYLENS_SERVER", "http://127.0.0.1:9464"), "the running proxylens (env PROXYLENS_SERVER)")
	tokenFile := fs.String("token-file", os.Getenv("PROXYLENS_TOKEN_FILE"), "file holding a bearer token of an analyst or admin, or the admin token (env PROXYLENS_TOKEN_FILE)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: proxylens report --range 30d --format pdf --out FILE [flags]\n\nA formatted report from a running proxylens. Flags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "proxylens report: --out is required")
		return errUsage
	}
	req := map[string]any{"format": *format}
	req["range"] = rangeValue(*rng)
	if *sources != "" {
		req["sources"] = strings.Split(*sources, ",")
	}
	if *apps != "" {
		req["applications"] = strings.Split(*apps, ",")
	}
	c, err := newAPIClient(*serverURL, *tokenFile)
	if err != nil {
		return err
	}
	return runJob(ctx, c, "report", "/api/v1/reports", req, *out, stdout, stderr)
}
