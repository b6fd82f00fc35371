package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/proxylens/proxylens/internal/backup"
)

// TestBackupAndRestore: a backup taken through the admin API while spans
// keep arriving holds everything acknowledged before it started (also
// spans not yet cut, still only in the journal); restored into a new data
// directory, queries answer exactly as the original answered then.
func TestBackupAndRestore(t *testing.T) {
	cfg := adminConfig(t)
	s := start(t, cfg, Options{})
	now := time.Now().UTC().Truncate(time.Minute)

	spans := func(from, n int, end time.Time) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for i := range n {
			out = append(out, proxySpan(from+i, end.Add(-time.Duration(i)*time.Second)))
		}
		return out
	}
	// Cut and stored; then acknowledged but only in the journal.
	exportGRPC(t, s, spans(0, 300, now.Add(-2*time.Hour))...)
	require.NoError(t, s.Pipeline().Flush())
	exportGRPC(t, s, spans(300, 200, now.Add(-time.Hour))...)

	// The spans that arrive during the backup (source "late") may or may
	// not be in it; the queries leave them out.
	queries := []string{
		`sum by (source) (increase(proxy_requests_total{source!="late"}[5h]))`,
		`sum by (le) (increase(proxy_request_duration_seconds_bucket{source!="late"}[5h]))`,
		`sum by (source, direction) (increase(proxy_transfer_bytes_total{source!="late"}[5h]))`,
	}
	answers := func(api v1.API) []string {
		var out []string
		for _, q := range queries {
			v, _, _, err := api.Query(t.Context(), q, now.Add(2*time.Hour))
			require.NoError(t, err)
			out = append(out, v.String())
		}
		return out
	}
	// Spans keep arriving during the backup, at event times the queries
	// do not cover.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			late := spans(1000+i*10, 10, now.Add(-10*time.Hour))
			for _, st := range late {
				for j, a := range st.Attributes {
					if a.Key == "proxy.source" {
						st.Attributes[j] = attribute.String("proxy.source", "late")
					}
				}
			}
			exportGRPC(t, s, late...)
		}
	})
	var b backup.Backup
	code, msg := call(t, s, http.MethodPost, "/api/v1/admin/backup", testAdminToken, "", &b)
	close(stop)
	wg.Wait()
	require.Equal(t, http.StatusOK, code, msg)
	require.NoError(t, s.Pipeline().Flush())
	want := answers(queryClient(t, s))
	require.Contains(t, want[0], "brightdata")

	var list []backup.Info
	code, _ = call(t, s, http.MethodGet, "/api/v1/admin/backups", testAdminToken, "", &list)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, list, 1)
	require.Equal(t, b.ID, list[0].ID)
	require.Equal(t, backup.StatusComplete, list[0].Status)
	_, err := backup.Verify(b.Path)
	require.NoError(t, err)

	// Restore: refused over a live database, then into a new directory.
	require.ErrorIs(t, backup.Restore(b.Path, cfg.DataDir, nil), backup.ErrLocked)
	require.ErrorIs(t, backup.Restore(b.Path, filepath.Dir(b.Path), nil), backup.ErrNotEmpty)
	restored := cfg
	restored.DataDir = filepath.Join(t.TempDir(), "restored")
	require.NoError(t, backup.Restore(b.Path, restored.DataDir, nil))
	require.NoError(t, s.Shutdown(context.Background()))
	r := start(t, restored, Options{})
	require.Equal(t, want, answers(queryClient(t, r)))
	// And the 500 spans acknowledged before the backup are all there.
	v, _, _, err := queryClient(t, r).Query(t.Context(), `sum(increase(proxy_requests_total{source!="late"}[5h]))`, now.Add(2*time.Hour))
	require.NoError(t, err)
	require.InEpsilon(t, 500, float64(v.(model.Vector)[0].Value), 1e-6) // the engine extrapolates over the first millisecond
}

// TestBackupDirSymlinkIntoData is attack 8 of issue 17 against the real
// server: a backup dir that is a symbolic link into the data directory
// (given to the admin API, or in the config) is refused with 400 naming
// the data directory, nothing is written through it, and backups into a
// proper directory still work.
func TestBackupDirSymlinkIntoData(t *testing.T) {
	cfg := adminConfig(t)
	tmp := t.TempDir()
	link := filepath.Join(tmp, "backups-link")
	require.NoError(t, os.Symlink(cfg.DataDir, link))
	below := filepath.Join(tmp, "sub-link")
	require.NoError(t, os.Symlink(filepath.Join(cfg.DataDir, "not-yet"), below)) // dangling: inside, not created

	bad := cfg
	bad.Backup.Dir = link
	require.ErrorIs(t, bad.Validate(), backup.ErrInsideDataDir, "the config is refused before start")

	s := start(t, cfg, Options{})
	before, err := os.ReadDir(cfg.DataDir)
	require.NoError(t, err)
	for dir, resolved := range map[string]string{
		link:                          cfg.DataDir,
		below:                         filepath.Join(cfg.DataDir, "not-yet"),
		filepath.Join(link, "nested"): filepath.Join(cfg.DataDir, "nested"),
	} {
		body, _ := json.Marshal(map[string]string{"dir": dir})
		code, msg := call(t, s, http.MethodPost, "/api/v1/admin/backup", testAdminToken, string(body), nil)
		require.Equal(t, http.StatusBadRequest, code, msg)
		require.Contains(t, msg, "must be outside the data directory", dir)
		require.Contains(t, msg, fmt.Sprintf("it resolves to %q", resolved))
	}
	after, err := os.ReadDir(cfg.DataDir)
	require.NoError(t, err)
	require.Equal(t, names(before), names(after), "nothing written into the data directory")
	_, err = os.Lstat(filepath.Join(cfg.DataDir, "not-yet"))
	require.ErrorIs(t, err, os.ErrNotExist)

	var b backup.Backup
	code, msg := call(t, s, http.MethodPost, "/api/v1/admin/backup", testAdminToken, "", &b)
	require.Equal(t, http.StatusOK, code, msg)
	require.Equal(t, cfg.Backup.Dir, filepath.Dir(b.Path))
}

func names(es []os.DirEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}
