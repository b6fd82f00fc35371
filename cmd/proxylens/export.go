package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/proxylens/proxylens/internal/backup"
)

// exportCmd asks a running server for an export, follows its progress and
// downloads the file.
func exportCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxylens export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rng := fs.String("range", "24h", `time range: 24h, 7d, 30d, or START,END in RFC 3339`)
	format := fs.String("format", "csv", "csv, json (NDJSON) or xlsx")
	dataset := fs.String("dataset", "records", "records, hourly, daily or costs")
	fields := fs.String("fields", "", "comma-separated fields (default: all)")
	source := fs.String("source", "", "only these sources (comma-separated)")
	out := fs.String("out", "", "the file to write (required; - for standard output)")
	serverURL := fs.String("server", envOr("PROXYLENS_SERVER", "http://127.0.0.1:9464"), "the running proxylens (env PROXYLENS_SERVER)")
	tokenFile := fs.String("token-file", os.Getenv("PROXYLENS_TOKEN_FILE"), "file holding a bearer token of an analyst or admin, or the admin token (env PROXYLENS_TOKEN_FILE)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: proxylens export --range 7d --format csv --out FILE [flags]\n\nExport data from a running proxylens. Flags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "proxylens export: --out is required")
		return errUsage
	}
	req := map[string]any{"format": *format, "dataset": *dataset}
	req["range"] = rangeValue(*rng)
	if *fields != "" {
		req["fields"] = strings.Split(*fields, ",")
	}
	if *source != "" {
		req["filters"] = map[string]any{"source": strings.Split(*source, ",")}
	}
	c, err := newAPIClient(*serverURL, *tokenFile)
	if err != nil {
		return err
	}
	return runJob(ctx, c, "export", "/api/v1/exports", req, *out, stdout, stderr)
}

// runJob creates a job (an export or a report) with req at path, draws
// its progress on stderr, and downloads its file to out (- for stdout).
func runJob(ctx context.Context, c *apiClient, kind, path string, req any, out string, stdout, stderr io.Writer) error {
	var created struct {
		ID string `json:"id"`
	}
	if err := c.call(ctx, http.MethodPost, path, req, &created); err != nil {
		return fmt.Errorf("the %s was refused: %w", kind, err)
	}
	bar := backup.ProgressBar(stderr)
	for {
		var job struct {
			Status   string  `json:"status"`
			Progress float64 `json:"progress"`
			Error    string  `json:"error"`
		}
		if err := c.call(ctx, http.MethodGet, path+"/"+created.ID, nil, &job); err != nil {
			return err
		}
		bar(int64(job.Progress*1000), 1000)
		if job.Status == "failed" {
			return fmt.Errorf("%s %s failed: %s", kind, created.ID, job.Error)
		}
		if job.Status == "completed" {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	resp, err := c.do(ctx, http.MethodGet, path+"/"+created.ID+"/download", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download %s %s: %s", kind, created.ID, resp.Status)
	}
	if out == "-" {
		_, err := io.Copy(stdout, resp.Body)
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	fmt.Fprintf(stdout, "%s %s: %d bytes written to %s\n", kind, created.ID, n, out)
	return nil
}

// rangeValue is the range flag as the job APIs take it: a duration such
// as 7d, or START,END as an object.
func rangeValue(flag string) any {
	if start, end, ok := strings.Cut(flag, ","); ok {
		return map[string]string{"start": start, "end": end}
	}
	return flag
}
