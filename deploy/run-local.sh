#!/usr/bin/env bash
# Starts the scaling topology of docs/scaling.md on one machine, on
# loopback, sends proxy spans through it and checks the fleet-wide answer:
#
#   loadgen (the proxies) → Collector, loadbalancing exporter
#     → N proxylens instances (each with external_labels proxylens_instance)
#     → remote write → VictoriaMetrics, or a Thanos Receive hashring of two
#     → proxylens as the query proxy (query.upstream) ← Grafana, curl
#
# Usage: deploy/run-local.sh [--tsdb vm|thanos] [--instances N]
#                            [--rate SPANS_PER_S] [--duration 30s] [--keep]
#
# Everything it builds comes from this checkout and the Go module proxy:
# proxylens (go build), the Collector of deploy/collector (its own module,
# cached by its go.sum), and the engines of .ci/engines (VictoriaMetrics;
# Thanos with --tsdb thanos). State and logs go to $WORK (default
# /tmp/proxylens-topology, emptied first); ports from $PORT_BASE (default
# 19000). Without --keep, it stops everything it started and exits 0 only
# when the query proxy's sum(proxy_requests_total) equals the spans the
# Collector acknowledged. With --keep it leaves the topology running and
# prints where Grafana should point.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TSDB=vm
INSTANCES=2
RATE=2000
DURATION=30s
KEEP=0
while [ $# -gt 0 ]; do
	case $1 in
	--tsdb) TSDB=$2; shift 2 ;;
	--instances) INSTANCES=$2; shift 2 ;;
	--rate) RATE=$2; shift 2 ;;
	--duration) DURATION=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) sed -n '2,21p' "$0"; exit 0 ;;
	*) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
case $TSDB in vm | thanos) ;; *) echo "--tsdb must be vm or thanos" >&2; exit 2 ;; esac
[ "$INSTANCES" -ge 1 ] 2>/dev/null || { echo "--instances must be a positive number" >&2; exit 2; }

WORK=${WORK:-/tmp/proxylens-topology}
PORT_BASE=${PORT_BASE:-19000}
ENGINES=${PROXYLENS_ENGINES_DIR:-$HOME/.cache/proxylens/engines}
export PROXYLENS_ENGINES_DIR=$ENGINES
rm -rf "$WORK"
mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/data"
: >"$WORK/pids"

log() { printf '%s %s\n' "$(date +%T)" "$*"; }

# start NAME CMD…: runs CMD in the background, logging to $WORK/logs/NAME.log.
start() {
	local name=$1
	shift
	"$@" >"$WORK/logs/$name.log" 2>&1 &
	echo "$! $name" >>"$WORK/pids"
}

stop_all() {
	[ -s "$WORK/pids" ] || return 0
	while read -r pid _; do kill "$pid" 2>/dev/null || true; done <"$WORK/pids"
	while read -r pid _; do wait "$pid" 2>/dev/null || true; done <"$WORK/pids"
	: >"$WORK/pids"
}
if [ "$KEEP" = 0 ]; then trap stop_all EXIT; fi

# wait_http NAME URL: waits up to 60 s for URL to answer 2xx.
wait_http() {
	for _ in $(seq 600); do
		if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "$1 did not come up at $2; its log:" >&2
	tail -20 "$WORK/logs/$1.log" >&2
	exit 1
}

# Builds.
log "building proxylens"
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$WORK/bin/proxylens" ./cmd/proxylens)
"$ROOT/.ci/engines"
COLLECTOR=$ENGINES/otelcol-lb
sum=$(sha256sum "$ROOT/deploy/collector/go.sum" "$ROOT/deploy/collector/main.go" | sha256sum | cut -c1-16)
if [ ! -x "$COLLECTOR" ] || [ "$(cat "$COLLECTOR.version" 2>/dev/null)" != "$sum" ]; then
	log "building the Collector (deploy/collector; a few minutes the first time)"
	(cd "$ROOT/deploy/collector" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$COLLECTOR.tmp" .)
	mv "$COLLECTOR.tmp" "$COLLECTOR"
	echo "$sum" >"$COLLECTOR.version"
fi

# The TSDB.
case $TSDB in
vm)
	vm=127.0.0.1:$((PORT_BASE + 1))
	start victoria-metrics "$ENGINES/victoria-metrics" -httpListenAddr="$vm" -storageDataPath="$WORK/data/vm" \
		-search.latencyOffset=0s -retentionPeriod=100y
	wait_http victoria-metrics "http://$vm/health"
	WRITE_URL=http://$vm/api/v1/write
	QUERY_URL=http://$vm
	;;
thanos)
	[ -x "$ENGINES/thanos" ] || { echo "no Thanos in $ENGINES: build it with PROXYLENS_ENGINES_THANOS=1 .ci/engines (about 4 minutes)" >&2; exit 1; }
	r0=127.0.0.1:$((PORT_BASE + 11)) r1=127.0.0.1:$((PORT_BASE + 12))
	printf '[{"hashring": "default", "endpoints": ["%s", "%s"]}]\n' "$r0" "$r1" >"$WORK/hashring.json"
	for i in 0 1; do
		grpc=127.0.0.1:$((PORT_BASE + 11 + i))
		start "thanos-receive-$i" "$ENGINES/thanos" receive --tsdb.path="$WORK/data/receive-$i" \
			--grpc-address="$grpc" --http-address=127.0.0.1:$((PORT_BASE + 21 + i)) \
			--remote-write.address=127.0.0.1:$((PORT_BASE + 31 + i)) \
			--receive.capnproto-address=127.0.0.1:$((PORT_BASE + 41 + i)) \
			--receive.hashrings-file="$WORK/hashring.json" --receive.local-endpoint="$grpc" \
			--receive.replication-factor=1 --label="receive_replica=\"$i\"" \
			--tsdb.out-of-order.time-window=2h --tsdb.retention=1d
	done
	for i in 0 1; do wait_http "thanos-receive-$i" "http://127.0.0.1:$((PORT_BASE + 21 + i))/-/ready"; done
	tq=127.0.0.1:$((PORT_BASE + 2))
	start thanos-query "$ENGINES/thanos" query --http-address="$tq" --grpc-address=127.0.0.1:$((PORT_BASE + 3)) \
		--endpoint="$r0" --endpoint="$r1" --query.replica-label=replica --query.replica-label=receive_replica
	wait_http thanos-query "http://$tq/-/ready"
	WRITE_URL=http://127.0.0.1:$((PORT_BASE + 31))/api/v1/receive
	QUERY_URL=http://$tq
	;;
esac

# N proxylens instances, each writing into the TSDB with its own label.
lb_hosts=""
for i in $(seq 0 $((INSTANCES - 1))); do
	cat >"$WORK/proxylens-$i.yaml" <<EOF
otlp_grpc_addr: 127.0.0.1:$((PORT_BASE + 100 + i))
otlp_http_addr: ""
http_addr: 127.0.0.1:$((PORT_BASE + 200 + i))
data_dir: $WORK/data/proxylens-$i
external_labels:
  proxylens_instance: i$i
fixed_costs: $([ "$i" = 0 ] && echo accrue || echo skip)  # subscriptions are the fleet's: one instance accrues them
remote_write:
  - url: $WRITE_URL
    name: $TSDB
EOF
	start "proxylens-$i" "$WORK/bin/proxylens" serve --config "$WORK/proxylens-$i.yaml"
	lb_hosts="$lb_hosts, 127.0.0.1:$((PORT_BASE + 100 + i))"
done
for i in $(seq 0 $((INSTANCES - 1))); do wait_http "proxylens-$i" "http://127.0.0.1:$((PORT_BASE + 200 + i))/-/ready"; done

# proxylens as the query proxy in front of the TSDB: what Grafana talks to.
QP=127.0.0.1:$((PORT_BASE + 90))
cat >"$WORK/query-proxy.yaml" <<EOF
otlp_grpc_addr: ""
otlp_http_addr: ""
http_addr: $QP
data_dir: $WORK/data/query-proxy
query:
  upstream:
    url: $QUERY_URL
EOF
start query-proxy "$WORK/bin/proxylens" serve --config "$WORK/query-proxy.yaml"
wait_http query-proxy "http://$QP/-/ready"

# The Collector in front of the instances.
OTLP=127.0.0.1:$((PORT_BASE + 50))
cat >"$WORK/collector.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "$OTLP"}
processors:
  batch: {}
exporters:
  loadbalancing:
    routing_key: traceID
    protocol:
      otlp:
        tls: {insecure: true}
        retry_on_failure: {enabled: true, max_elapsed_time: 0}
    resolver:
      static:
        hostnames: [${lb_hosts#, }]
service:
  telemetry:
    metrics: {level: none}
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [loadbalancing]}
EOF
start collector "$COLLECTOR" --config "$WORK/collector.yaml"
for _ in $(seq 300); do
	if (exec 3<>"/dev/tcp/${OTLP%:*}/${OTLP#*:}") 2>/dev/null; then break; fi
	sleep 0.1
done

log "sending $RATE spans/s for $DURATION to the Collector at $OTLP ($INSTANCES proxylens instances, $TSDB)"
"$WORK/bin/proxylens" loadgen --endpoint "$OTLP" --rate "$RATE" --duration "$DURATION" --connections 2 | tee "$WORK/loadgen.txt"
sent=$(sed -n 's/^sent \([0-9]*\) spans.*/\1/p' "$WORK/loadgen.txt")

# query ADDR PROMQL: the first value of an instant query's answer, or empty.
query() {
	curl -fsS "http://$1/api/v1/query" --data-urlencode "query=$2" 2>/dev/null |
		sed -n 's/.*"value":\[[^,]*,"\([^"]*\)"\].*/\1/p'
}
log "waiting for the upstream to count all $sent spans (each instance's next cut, then remote write)"
got=""
for _ in $(seq 120); do
	got=$(query "$QP" 'sum(proxy_requests_total)')
	[ "$got" = "$sent" ] && break
	sleep 1
done
for i in $(seq 0 $((INSTANCES - 1))); do
	log "instance i$i: $(query "$QP" "sum(proxy_requests_total{proxylens_instance=\"i$i\"})") spans"
done
log "query proxy http://$QP: sum(proxy_requests_total) = ${got:-nothing}; the Collector acknowledged $sent"
if [ "$KEEP" = 1 ]; then
	cat <<EOF

The topology is running (PIDs and names in $WORK/pids, logs in $WORK/logs):
  OTLP/gRPC for the proxies:   $OTLP (the Collector)
  Grafana's Prometheus URL:    http://$QP (proxylens, query proxy)
  the TSDB:                    $QUERY_URL
Stop it with: kill \$(cut -d' ' -f1 $WORK/pids)
EOF
fi
[ "$got" = "$sent" ] || { echo "MISMATCH: the upstream counts ${got:-nothing}, the Collector acknowledged $sent" >&2; exit 1; }
log "OK"
