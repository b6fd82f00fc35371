package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func skipWithoutSh(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the upload tests run sh")
	}
}

// logRecords returns a logger and a function that reads back what it
// logged as JSON objects.
func logRecords(t *testing.T) (*slog.Logger, func() []map[string]any) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	return logger, func() []map[string]any {
		var out []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if line == "" {
				continue
			}
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(line), &m))
			out = append(out, m)
		}
		return out
	}
}

func TestUploadEnvironment(t *testing.T) {
	skipWithoutSh(t)
	t.Setenv("PROXYLENS_TEST_INHERITED", "yes")
	root := t.TempDir()
	b := create(t, root, true, t0)
	out := filepath.Join(t.TempDir(), "env")
	logger, records := logRecords(t)
	err := Upload(context.Background(), []UploadCommand{{
		Name: "record",
		// No shell: the arguments arrive as they are, spaces and all.
		Command: []string{"sh", "-c", `printf '%s\n' "$PROXYLENS_BACKUP_ID" "$PROXYLENS_BACKUP_PATH" "$PROXYLENS_BACKUP_DIR" "$PROXYLENS_TEST_INHERITED" "$1" > "$2"; echo pushed; echo note >&2`, "sh", "two words", out},
	}}, b, logger)
	require.NoError(t, err)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, strings.Join([]string{b.ID, b.Path, root, "yes", "two words"}, "\n")+"\n", string(got))

	recs := records()
	require.Len(t, recs, 1)
	require.Equal(t, "backup uploaded", recs[0]["msg"])
	require.Equal(t, "record", recs[0]["upload"])
	require.Equal(t, b.ID, recs[0]["backup"])
	require.Equal(t, "pushed\n", recs[0]["stdout"])
	require.Equal(t, "note\n", recs[0]["stderr"])
}

func TestUploadFailures(t *testing.T) {
	skipWithoutSh(t)
	b := create(t, t.TempDir(), false, t0)
	marker := filepath.Join(t.TempDir(), "ran")
	logger, records := logRecords(t)
	err := Upload(context.Background(), []UploadCommand{
		{Name: "fails", Command: []string{"sh", "-c", "echo progress; echo 'remote: permission denied' >&2; exit 3"}},
		{Command: []string{"/no/such/program"}},
		{Name: "slow", Command: []string{"sh", "-c", "echo started >&2; sleep 60 & sleep 60"}, Timeout: 200 * time.Millisecond},
		{Name: "runs anyway", Command: []string{"sh", "-c", `touch "$0"`, marker}},
	}, b, logger)
	require.Error(t, err)
	msg := err.Error()
	require.Contains(t, msg, `upload "fails" (sh): exit status 3: remote: permission denied`)
	require.Contains(t, msg, `upload "program" (/no/such/program): fork/exec /no/such/program: no such file or directory`)
	require.Contains(t, msg, `upload "slow" (sh): timed out after 200ms and was killed: started`)
	require.FileExists(t, marker, "a failure does not stop the other uploads")

	recs := records()
	require.Len(t, recs, 4)
	require.Equal(t, "backup upload failed, the backup stays in place", recs[0]["msg"])
	require.Equal(t, "WARN", recs[0]["level"])
	require.Equal(t, "progress\n", recs[0]["stdout"])
	require.Contains(t, recs[0]["err"], "exit status 3")
	require.Equal(t, "backup uploaded", recs[3]["msg"])
}

func TestUploadCancelled(t *testing.T) {
	skipWithoutSh(t)
	b := create(t, t.TempDir(), false, t0)
	marker := filepath.Join(t.TempDir(), "ran")

	// The caller's deadline passes during a command: it is killed, and the
	// commands after it do not run.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := Upload(ctx, []UploadCommand{
		{Name: "slow", Command: []string{"sleep", "60"}},
		{Name: "never", Command: []string{"touch", marker}},
	}, b, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, `upload "slow": context deadline exceeded`)
	require.ErrorContains(t, err, `upload "never": context deadline exceeded`)
	require.NoFileExists(t, marker)

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	err = Upload(ctx, []UploadCommand{{Name: "never", Command: []string{"touch", marker}}}, b, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.NoFileExists(t, marker)

	err = Upload(context.Background(), []UploadCommand{{Name: "empty"}}, b, nil)
	require.EqualError(t, err, `upload "empty": no command`)
}

func TestUploadOutputBounded(t *testing.T) {
	skipWithoutSh(t)
	b := create(t, t.TempDir(), false, t0)
	logger, records := logRecords(t)
	err := Upload(context.Background(), []UploadCommand{{
		Name:    "chatty",
		Command: []string{"sh", "-c", `i=0; while [ $i -lt 5000 ]; do echo "line $i of chatter"; echo "error $i of chatter" >&2; i=$((i+1)); done; exit 1`},
	}}, b, logger)
	require.Error(t, err)
	require.Less(t, len(err.Error()), errorTail+200)
	require.True(t, strings.HasSuffix(err.Error(), "error 4999 of chatter"), err.Error())
	rec := records()[0]
	for _, k := range []string{"stdout", "stderr"} {
		s := rec[k].(string)
		require.LessOrEqual(t, len(s), outputLimit+len("…"))
		require.True(t, strings.HasPrefix(s, "…"))
		require.Contains(t, s, "4999 of chatter\n")
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{limit: 4}
	tb.Write([]byte("ab"))
	require.Equal(t, "ab", tb.String())
	tb.Write([]byte("cd"))
	require.Equal(t, "abcd", tb.String())
	tb.Write([]byte("e"))
	require.Equal(t, "…bcde", tb.String())
	tb.Write([]byte("0123456789"))
	require.Equal(t, "…6789", tb.String())
	for range 10 {
		tb.Write([]byte("xyz"))
	}
	require.Equal(t, "…zxyz", tb.String())
	require.LessOrEqual(t, len(tb.b), 8)
}
