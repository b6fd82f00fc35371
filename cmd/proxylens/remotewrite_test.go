package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/internal/upstreamtest"
)

// TestRemoteWriteOutExact: spans over OTLP → the proxylens binary →
// remote write → VictoriaMetrics (and Prometheus when its binary was
// built): the upstream sum(proxy_requests_total) equals the spans
// proxylens acknowledged, exactly, through a receiver crash and restart,
// a graceful restart of proxylens and a kill -9 of it.
func TestRemoteWriteOutExact(t *testing.T) {
	t.Parallel() // beside the fleet tests, which mostly wait
	engines := []upstreamtest.Engine{upstreamtest.StartVictoriaMetrics(t)}
	switch built, required := upstreamtest.Available(upstreamtest.Prometheus); {
	case built || required:
		engines = append(engines, upstreamtest.StartPrometheus(t)) // fails if required and missing
	default:
		t.Logf("%s not in %s: testing against VictoriaMetrics only", upstreamtest.Prometheus, upstreamtest.EnginesDir())
	}
	vm := engines[0]

	var cfg strings.Builder
	cfg.WriteString("flush_interval: 1s\nexternal_labels:\n  proxylens_instance: a\nremote_write:\n")
	const queue = "    queue_config: {batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 500ms}\n"
	for _, e := range engines {
		fmt.Fprintf(&cfg, "  - url: %s\n    name: %s\n"+queue, e.WriteURL(), e.Name())
	}
	// Prometheus takes RW 2.0 too: a second remote to it sends the same
	// counters with it, told apart by a label.
	queries := map[upstreamtest.Engine][]string{}
	for _, e := range engines {
		queries[e] = []string{`sum(proxy_requests_total{proxylens_instance="a",rw=""})`}
		if e.Name() == upstreamtest.Prometheus {
			fmt.Fprintf(&cfg, "  - url: %s\n    name: %s-v2\n    protobuf_message: io.prometheus.write.v2.Request\n"+queue+
				"    write_relabel_configs: [{target_label: rw, replacement: v2}]\n", e.WriteURL(), e.Name())
			queries[e] = append(queries[e], `sum(proxy_requests_total{proxylens_instance="a",rw="v2"})`)
		}
	}
	cfgFile := filepath.Join(t.TempDir(), "proxylens.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg.String()), 0o600))
	dir := t.TempDir()

	acked := 0
	send := func(p *proc, n int) {
		sendSpans(t, p.grpc, n, acked)
		acked += n
	}
	// upstream waits until every engine answers the acknowledged total.
	var p *proc
	upstream := func(why string) {
		t.Helper()
		for _, e := range engines {
			for _, q := range queries[e] {
				var (
					last    float64
					lastErr error
				)
				if !assert.Eventually(t, func() bool {
					v, ok, err := e.Query(q)
					last, lastErr = v, err
					return ok && err == nil && v == float64(acked)
				}, 60*time.Second, 100*time.Millisecond) {
					t.Fatalf("%s: %s answers %s = %v (err %v), want %d\nproxylens:\n%s", why, e.Name(), q, last, lastErr, acked, p.stderr.String())
				}
			}
		}
	}

	p = runBinary(t, dir, "--config", cfgFile)
	send(p, 500)
	upstream("first spans")

	// The receiver crashes: proxylens keeps what it cannot send (pending)
	// and sends it when the receiver is back.
	vm.Kill()
	send(p, 300)
	pending := `proxylens_remote_storage_samples_pending{remote_name="` + vm.Name() + `"`
	require.Eventually(t, func() bool { return p.metric(t, pending) > 0 }, 30*time.Second, 50*time.Millisecond)
	vm.Restart()
	send(p, 100) // VictoriaMetrics may have lost its newest samples to the crash: the next ones carry the total
	upstream("after the receiver's crash and restart")

	// A graceful restart of proxylens.
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, <-p.exited, p.stderr.String())
	p = runBinary(t, dir, "--config", cfgFile)
	send(p, 200)
	upstream("after a restart of proxylens")

	// kill -9 of proxylens right after the acknowledgement: the batch is
	// in the journal, its cut and feed entry are written after the next
	// start, and sent then; what was sent but not yet marked sent goes
	// again, the same samples.
	send(p, 200)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.exited
	p = runBinary(t, dir, "--config", cfgFile)
	upstream("after kill -9 of proxylens")
	require.Eventually(t, func() bool { return p.metric(t, "proxylens_remote_storage_samples_pending") == 0 }, 30*time.Second, 50*time.Millisecond)
	upstream("once nothing is pending: no double count")
	require.Zero(t, p.metric(t, "proxylens_remote_storage_samples_failed_total"))

	// The self-metrics are in proxylens' own store too, for PromQL.
	self := upstreamtest.Engine{URL: "http://" + p.http}
	require.Eventually(t, func() bool {
		v, ok, err := self.Query(`sum(proxylens_remote_storage_samples_total{remote_name="victoria-metrics"})`)
		return err == nil && ok && v > 0
	}, 30*time.Second, 100*time.Millisecond)
}
