package otelanalytics

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// background runs fn on an OS thread of its own at the lowest scheduling
// priority (nice 19), so that the CPU goes to ingest first whenever both
// want it, and returns its error. The thread ends with fn: an unprivileged
// process cannot raise a thread's priority back.
func background(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
		_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
		done <- fn()
	}()
	return <-done
}
