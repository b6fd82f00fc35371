package backup

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProgressBarSilentOffTerminal(t *testing.T) {
	var buf bytes.Buffer
	ProgressBar(&buf)(5, 10)
	f, err := os.Create(t.TempDir() + "/log")
	require.NoError(t, err)
	ProgressBar(f)(5, 10)
	require.NoError(t, f.Close())
	b, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	require.Empty(t, b)
	require.Empty(t, buf.String())
}

func TestProgressBarDraws(t *testing.T) {
	var buf bytes.Buffer
	update := (&bar{w: &buf, width: 10, last: -1}).update
	update(0, 3<<30)
	update(1, 3<<30) // same tenth of a percent: no redraw
	update(3<<29, 3<<30)
	update(3<<30, 3<<30)
	update(3<<30, 3<<30) // finished: nothing more
	frames := strings.Split(buf.String(), "\r")
	require.Equal(t, []string{
		"",
		"[>         ]   0.0%  0 B / 3.0 GiB",
		"[=====>    ]  50.0%  1.5 GiB / 3.0 GiB",
		"[==========] 100.0%  3.0 GiB / 3.0 GiB\n",
	}, frames)

	buf.Reset()
	update = (&bar{w: &buf, width: 10, last: -1}).update
	update(0, 0) // unknown total: nothing
	require.Empty(t, buf.String())
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 1 << 62: "4.0 EiB"} {
		require.Equal(t, want, humanBytes(n))
	}
}
