#!/usr/bin/env bash
# C28 in docs/benchmarks.md: bytes a sample of seriesgen's C7 data under
# Prometheus' XOR chunks and two integer encodings, and the entropy of the
# increments. It runs seriesgen's own generator (model.go from
# ../shared/bench/seriesgen, the same samples C7 pushes), so it is built
# beside a copy of it, outside this module.
#
#   docs/bench/chunkbytes/run.sh [-window-hours 2] [-series-target 1000] [-days 30]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
gen="${SERIESGEN_DIR:-$here/../../../../shared/bench/seriesgen}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$gen/model.go" "$gen/go.mod" "$gen/go.sum" "$work/"
sed '1{/^\/\/go:build ignore$/d}' "$here/main.go" > "$work/chunkbytes.go"
cd "$work" && go run . "$@"
