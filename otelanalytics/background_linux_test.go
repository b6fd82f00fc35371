package otelanalytics

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestBackgroundRunsAtLowestPriority(t *testing.T) {
	mine, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	require.NoError(t, err)
	var got int
	var gerr error
	boom := errors.New("boom")
	err = background(func() error {
		got, gerr = unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
		return boom
	})
	require.ErrorIs(t, err, boom, "fn's error is returned")
	require.NoError(t, gerr)
	// The raw getpriority system call returns 20 - nice: 1 for nice 19.
	require.Equal(t, 1, got, "fn runs at nice 19")
	after, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	require.NoError(t, err)
	require.Equal(t, mine, after, "the caller's thread keeps its priority")
}
