#!/usr/bin/env bash
# C22 in docs/benchmarks.md: remote write out under load. Starts a
# VictoriaMetrics (from .ci/engines) and a fresh proxylens on its defaults
# (binary from $PROXYLENS, default: built from this checkout), with
# remote_write to it when MODE is "on" and without when "off" (the anchor),
# sends 20,000 spans/s with `proxylens loadgen` for $DUR (default 60s), and
# samples /metrics about once a second:
#   queue_lag_seconds        how long the oldest unsent sample has waited
#   age of the newest sample upstream: now − highest_sent_timestamp_seconds
#   samples_pending
# then prints loadgen's export latency and the server's CPU.
# Usage: deploy/remote-write-lag.sh on|off LABEL   (alternate on and off runs)
set -euo pipefail
mode=${1:?on or off}
label=${2:?a label}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
E=${PROXYLENS_ENGINES_DIR:-$HOME/.cache/proxylens/engines}
W=${WORK:-/tmp/proxylens-lag}/$label
rm -rf "$W"
mkdir -p "$W"
PL=${PROXYLENS:-$W/proxylens}
[ -x "$PL" ] || (cd "$ROOT" && go build -o "$PL" ./cmd/proxylens)
PROXYLENS_ENGINES_DIR=$E "$ROOT/.ci/engines" >/dev/null

"$E/victoria-metrics" -httpListenAddr=127.0.0.1:18428 -storageDataPath="$W/vm" -search.latencyOffset=0s >"$W/vm.log" 2>&1 &
vmpid=$!
echo "data_dir: $W/pl" >"$W/p.yaml"
if [ "$mode" = on ]; then
	printf 'external_labels: {proxylens_instance: a}\nremote_write:\n  - url: http://127.0.0.1:18428/api/v1/write\n    name: vm\n' >>"$W/p.yaml"
fi
"$PL" serve --config "$W/p.yaml" --log-level warn >"$W/pl.log" 2>&1 &
plpid=$!
trap 'kill $plpid $vmpid 2>/dev/null; wait $plpid $vmpid 2>/dev/null || true' EXIT
until curl -fs -o /dev/null http://127.0.0.1:9464/-/ready && curl -fs -o /dev/null http://127.0.0.1:18428/health; do sleep 0.2; done

"$PL" loadgen --rate 20000 --duration "${DUR:-60s}" --batch 512 --connections 4 \
	--metrics-url http://127.0.0.1:9464/metrics >"$W/loadgen.txt" &
lg=$!
: >"$W/samples"
while kill -0 $lg 2>/dev/null; do
	now=$(date +%s.%N)
	curl -fs http://127.0.0.1:9464/metrics | awk -v now="$now" '
		/^proxylens_remote_storage_(queue_lag_seconds|samples_pending|highest_sent_timestamp_seconds)\{/ { split($1, a, "{"); v[a[1]] = $2 }
		END { h = v["proxylens_remote_storage_highest_sent_timestamp_seconds"]
		      if (h > 0) printf "%s %s %.3f\n", v["proxylens_remote_storage_queue_lag_seconds"], v["proxylens_remote_storage_samples_pending"], now - h }' >>"$W/samples" || true
	sleep 1
done
wait $lg
grep -E "throughput|latency|CPU|failed" "$W/loadgen.txt"
if [ "$mode" = on ]; then
	sort -n "$W/samples" | awk '{l[NR] = $1} END {printf "queue_lag_seconds: %d samples, p50 %s, max %s\n", NR, l[int(NR/2) + 1], l[NR]}'
	sort -k3 -n "$W/samples" | awk '{f[NR] = $3} END {printf "age of the newest sample upstream: p50 %s s, max %s s\n", f[int(NR/2) + 1], f[NR]}'
	sort -k2 -n "$W/samples" | awk '{p[NR] = $2} END {printf "samples_pending: max %s\n", p[NR]}'
fi
