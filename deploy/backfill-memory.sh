#!/usr/bin/env bash
# C26 in docs/benchmarks.md: memory during and after a backfill. Starts a
# fresh proxylens on its defaults (binary from $PROXYLENS, default
# /tmp/proxylens) on 127.0.0.1:25317/25464, sends spans whose end times
# spread over the past 30 days with the bench load generator ($LOADGEN,
# default /tmp/loadgen/loadgen; ../shared/bench/loadgen) for $DUR (default
# 5s, about 0.4–0.8 M spans here), waits until the server is idle (under
# 0.3 s of CPU in 10 s, at least one cut written), and prints one JSON
# line: loadgen's, the peak RSS (VmHWM), the idle RSS, the Go heap in use
# and allocated (live objects) just after a forced GC, the spans counted, the
# cuts and their seconds. Run the anchor binary and this one alternately.
# BACKFILL=0 sends live spans the same way (the live figure the historical
# one is compared with); PORT (default 25317) moves the ports: PORT,
# PORT+1 and PORT+2.
# WORK_PREFIX (default /tmp/backfill-memory) names the data directory;
# HEAP_PROFILE=FILE keeps the idle heap profile (go tool pprof FILE).
# Usage: PROXYLENS=… deploy/backfill-memory.sh LABEL
set -uo pipefail
PL=${PROXYLENS:-/tmp/proxylens}; LOADGEN=${LOADGEN:-/tmp/loadgen/loadgen}; dur=${DUR:-5s}
backfill=${BACKFILL:-720h}; port=${PORT:-25317}
grpc=127.0.0.1:$port; otlphttp=127.0.0.1:$((port + 1)); web=127.0.0.1:$((port + 2))
label=${1:?a label}
work=$(mktemp -d "${WORK_PREFIX:-/tmp/backfill-memory}-XXXX")
# /debug/pprof (the forced GC below) is an admin's: a bootstrap admin token.
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'); printf '%s' "$token" >"$work/admin.token"
"$PL" serve --data-dir "$work/data" --otlp-grpc-addr "$grpc" --otlp-http-addr "$otlphttp" \
  --http-addr "$web" --log-level warn --admin-token-file "$work/admin.token" >"$work/log" 2>&1 &
PID=$!
trap 'kill -9 $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf http://$web/-/ready >/dev/null && break; sleep 0.2; done
t0=$(date +%s)
lg=$("$LOADGEN" --endpoint "$grpc" --backfill "$backfill" --duration "$dur" --conns 4)
m() { curl -s http://$web/metrics; }
tck=$(getconf CLK_TCK)
cpu() { awk -v t="$tck" '{printf "%.2f", ($14+$15)/t}' "/proc/$PID/stat"; }
for _ in $(seq 120); do
  a=$(cpu); sleep 10; b=$(cpu)
  n=$(m | awk '$1=="proxylens_flush_duration_seconds_count"{print $2}')
  awk -v a="$a" -v b="$b" -v n="$n" 'BEGIN{exit !((b-a) < 0.3 && n >= 1)}' && break
done
idle_s=$(( $(date +%s) - t0 ))
curl -s -H "Authorization: Bearer $token" "http://$web/debug/pprof/heap?gc=1" -o "${HEAP_PROFILE:-/dev/null}"
hwm=$(awk '/^VmHWM/{printf "%.0f", $2/1024}' /proc/$PID/status)
rss=$(awk '/^VmRSS/{printf "%.0f", $2/1024}' /proc/$PID/status)
# The heap right after a forced GC, from the heap profile's own memory
# statistics: a /metrics scrape allocates megabytes of its own (tens at
# 20,000 series), which the go_memstats_* gauges it returns would count.
stats=$(curl -s -H "Authorization: Bearer $token" "http://$web/debug/pprof/heap?gc=1&debug=1")
heap=$(awk '$2=="HeapInuse"{printf "%.0f", $4/1048576}' <<<"$stats")
live=$(awk '$2=="HeapAlloc"{printf "%.0f", $4/1048576}' <<<"$stats")
counted=$(m | awk '$1 ~ /^proxy_requests_total/ {s+=$2} END {printf "%.0f", s}')
cuts=$(m | awk '$1=="proxylens_flush_duration_seconds_count"{c=$2} $1=="proxylens_flush_duration_seconds_sum"{s=$2} END{printf "\"cuts\":%d,\"cut_s\":%.1f", c, s}')
echo "{\"label\":\"$label\",\"loadgen\":$lg,\"hwm_mib\":$hwm,\"idle_rss_mib\":$rss,\"idle_heap_inuse_mib\":$heap,\"idle_heap_alloc_mib\":$live,\"counted\":$counted,$cuts,\"idle_after_s\":$idle_s}"
