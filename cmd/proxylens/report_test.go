package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/report"
	"github.com/proxylens/proxylens/internal/report/reporttest"
)

// TestReportCommand: proxylens report writes an HTML and a PDF report
// whose request figures are the query API's answers for the range.
func TestReportCommand(t *testing.T) {
	s := startServer(t)
	require.NoError(t, run(t.Context(), []string{"demo", "--endpoint", s.OTLPGRPCAddr().String(),
		"--backfill", "1d", "--spans", "500", "--rate", "0"}, io.Discard, io.Discard))
	require.NoError(t, s.Pipeline().Flush())
	base := "http://" + s.HTTPAddr().String()
	end := time.Now().UTC().Truncate(time.Second).Add(time.Second)
	rng := end.Add(-24*time.Hour).Format(time.RFC3339) + "," + end.Format(time.RFC3339)

	// The API's answer for the same range.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/api/v1/query?"+url.Values{
		"query": {`sum(increase(proxy_requests_total[1d]))`}, "time": {strconv.FormatInt(end.Unix(), 10)}}.Encode(), nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var env struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
	resp.Body.Close()
	require.Len(t, env.Data.Result, 1)
	total, err := strconv.ParseFloat(env.Data.Result[0].Value[1].(string), 64)
	require.NoError(t, err)
	require.Positive(t, total)

	dir := t.TempDir()
	for _, format := range []string{"html", "pdf"} {
		out := filepath.Join(dir, "report."+format)
		var stdout bytes.Buffer
		require.NoError(t, run(t.Context(), []string{"report", "--range", rng, "--format", format, "--out", out,
			"--server", base, "--token-file", "testdata/admin.token"}, &stdout, io.Discard))
		require.Contains(t, stdout.String(), "written to "+out)
		b, err := os.ReadFile(out)
		require.NoError(t, err)
		if format == "html" {
			require.Contains(t, string(b), "<tr><td>Requests</td><td>"+report.Count(total)+"</td>")
			continue
		}
		require.True(t, bytes.HasPrefix(b, []byte("%PDF-")))
		text := reporttest.PDFText(t, b)
		require.Regexp(t, `(?m)^Requests\s+`+regexp.QuoteMeta(report.Count(total))+`\s`, text)
	}
	err = run(t.Context(), []string{"report", "--format", "docx", "--out", filepath.Join(dir, "x"), "--server", base, "--token-file", "testdata/admin.token"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "the report was refused")
	require.True(t, strings.Contains(err.Error(), "docx"))
}
