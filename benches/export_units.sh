#!/usr/bin/env bash
# Exports in storage order, decoded in units side by side (`query.export_unit_rows`, the
# default) against the same build decoding each export in one piece (`export_unit_rows = 0`),
# in the same command, servers alternated over the same data directory.
#
#   benches/export_units.sh [ROWS_PER_FILE] [FILES] [ROUNDS]
#   (UNITS="0 65536" the export_unit_rows compared, FORMATS="arrow csv json" the formats)
#
# Publishes FILES appends of one ROWS_PER_FILE-row `datagate gen market_entities` CSV (default
# 4 x 2.5M = 10M rows, 4 files), then, per round, for each mode: the whole export as CSV, Arrow
# and JSON, 3 times each (seconds; the server's CPU seconds for the three), and a digest of the
# CSV export's key column, which must be the same in both modes (the rows and their order).
# Peak RSS of each server (started fresh for its mode) is printed when it stops.
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
ROWS=${1:-2500000}
FILES=${2:-4}
ROUNDS=${3:-2}
bench_build
bench_work "${BENCH_DIR:-/var/tmp}"
"$BIN" gen market_entities --rows "$ROWS" --out "$WORK/e.csv" 2>/dev/null

cpu_seconds() {
  awk '{print $14 + $15}' "/proc/$SERVER_PID/stat" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", $1 / hz}'
}

run() { # export_unit_rows
  local unit_rows=$1
  PORT=$(free_port)
  start_server "$PORT" "${UNLIMITED_ANONYMOUS[@]}" DATAGATE_QUERY__EXPORT_UNIT_ROWS=$unit_rows
  local base=http://127.0.0.1:$PORT
  for format in ${FORMATS:-arrow csv json}; do
    local times="" before after
    before=$(cpu_seconds)
    for _ in 1 2 3; do
      times="$times $(curl -sf -o /dev/null -w '%{time_total}' \
        "$base/api/v1/datasets/market/big/export?format=$format")"
    done
    after=$(cpu_seconds)
    echo "$1 $format s:$times cpu: $(awk -v a="$after" -v b="$before" 'BEGIN {printf "%.1f", a - b}')"
  done
  echo "$1 digest $(curl -sf "$base/api/v1/datasets/market/big/export?format=csv" |
    cut -d, -f1 | md5sum | cut -c1-16)"
  echo "$1 peak rss MiB $(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$SERVER_PID/status")"
  stop_server
}

# The data, published by a server of its own (each mode's server then starts fresh).
PORT=$(free_port)
start_server "$PORT"
register_entities "http://127.0.0.1:$PORT" big
for _ in $(seq "$FILES"); do
  curl -sf -X POST -H "Authorization: Bearer $KEY" -H "content-type: text/csv" \
    -T "$WORK/e.csv" "http://127.0.0.1:$PORT/api/v1/datasets/market/big/versions?mode=append" >/dev/null
done
stop_server
echo "rows: $((ROWS * FILES)) in $FILES files"
for _ in $(seq "$ROUNDS"); do
  for unit_rows in ${UNITS:-0 65536}; do
    run "$unit_rows"
  done
done
