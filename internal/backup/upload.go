package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const (
	// outputLimit bounds the output kept of each stream of an upload command:
	// its last bytes.
	outputLimit = 16 << 10
	// errorTail bounds the standard error quoted in an error.
	errorTail = 1 << 10
	// waitDelay is how long a killed command's output may stay open.
	waitDelay = 5 * time.Second
)

// Upload runs each command once, in order, to copy backup b elsewhere. A
// command is run without a shell, with the caller's environment plus
// PROXYLENS_BACKUP_ID (b.ID), PROXYLENS_BACKUP_PATH (b.Path, absolute) and
// PROXYLENS_BACKUP_DIR (the root it is in), no standard input, and its
// timeout (DefaultUploadTimeout if 0); on timeout it and the processes it
// started are killed. The last 16 KiB of its standard output and error are
// logged. A failure does not stop the other commands; the error joins one
// error per failed command, naming it, its exit status and the tail of its
// standard error. logger nil means no logs.
func Upload(ctx context.Context, cmds []UploadCommand, b *Backup, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	for _, c := range cmds {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("upload %q: %w", c.name(), err))
			break
		}
		if err := runUpload(ctx, c, b, logger); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func runUpload(ctx context.Context, c UploadCommand, b *Backup, logger *slog.Logger) error {
	name := c.name()
	if len(c.Command) == 0 || c.Command[0] == "" {
		return fmt.Errorf("upload %q: no command", name)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultUploadTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, c.Command[0], c.Command[1:]...)
	path, err := filepath.Abs(b.Path)
	if err != nil {
		return fmt.Errorf("upload %q: %w", name, err)
	}
	cmd.Env = append(os.Environ(),
		"PROXYLENS_BACKUP_ID="+b.ID,
		"PROXYLENS_BACKUP_PATH="+path,
		"PROXYLENS_BACKUP_DIR="+filepath.Dir(path),
	)
	stdout, stderr := &tailBuffer{limit: outputLimit}, &tailBuffer{limit: outputLimit}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = waitDelay
	killGroup(cmd)

	start := time.Now()
	err = cmd.Run()
	attrs := []any{"upload", name, "backup", b.ID, "duration", time.Since(start).Round(time.Millisecond)}
	if s := stdout.String(); s != "" {
		attrs = append(attrs, "stdout", s)
	}
	if s := stderr.String(); s != "" {
		attrs = append(attrs, "stderr", s)
	}
	if err == nil {
		logger.Info("backup uploaded", attrs...)
		return nil
	}
	switch {
	case ctx.Err() != nil:
		err = fmt.Errorf("upload %q: %w", name, ctx.Err())
	case errors.Is(cctx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("upload %q (%s): timed out after %s and was killed%s", name, c.Command[0], timeout, quoteTail(stderr))
	default:
		err = fmt.Errorf("upload %q (%s): %w%s", name, c.Command[0], err, quoteTail(stderr))
	}
	logger.Warn("backup upload failed, the backup stays in place", append(attrs, "err", err)...)
	return err
}

func quoteTail(t *tailBuffer) string {
	s := strings.TrimSpace(t.String())
	if s == "" {
		return ""
	}
	if len(s) > errorTail {
		s = "…" + s[len(s)-errorTail:]
	}
	return ": " + s
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	limit   int
	b       []byte
	dropped bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > t.limit {
		p = p[len(p)-t.limit:]
		t.dropped = true
	}
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.limit {
		t.b = append(t.b[:0], t.b[len(t.b)-t.limit:]...)
		t.dropped = true
	}
	return n, nil
}

func (t *tailBuffer) String() string {
	b := t.b
	if len(b) > t.limit {
		b = b[len(b)-t.limit:]
	}
	if t.dropped || len(t.b) > t.limit {
		return "…" + string(b)
	}
	return string(b)
}
