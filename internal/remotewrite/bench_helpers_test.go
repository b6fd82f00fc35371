package remotewrite

import (
	"syscall"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
)

func remoteapiMessage(s string) remoteapi.WriteMessageType { return remoteapi.WriteMessageType(s) }

// cpuTime is the process' user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
