#!/usr/bin/env bash
# Distributed query overhead on one machine: the same filtered aggregate over a generated
# market-entity dataset, run in-process by `datagate query` (the gateway's planner, masking view
# and limits, as an admin) locally and then distributed over 2 `datagate worker` processes on the
# same cores, in the same run. On 2 cores a speed-up cannot show; the figures are the overhead
# (distributed / local median time) and the bytes the workers send per query (their write
# syscalls, /proc/PID/io wchar: batches to the gateway and to each other) — for a GROUP BY only
# partial aggregates should travel, not rows.
#
#   benches/distributed.sh [ROWS]        (default 10,000,000; RUNS=7 in the environment)
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
ROWS="${1:-10000000}"
RUNS="${RUNS:-7}"
bench_build
bench_work
DATA="$WORK/data"
export DATAGATE_DATA_DIR="$DATA" DATAGATE_LOG__LEVEL=warn DATAGATE_LIMITS__QUERY_TIMEOUT_MS=600000
export DATAGATE_WORKER_SECRET="bench-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

echo "generating and loading $ROWS rows..." >&2
"$BIN" gen market_entities --rows "$ROWS" --out "$WORK/entities.csv" 2>/dev/null
# The sample catalog registers market/market_entities; replace its data with the generated rows.
PORT=$(free_port)
start_server "$PORT"
curl -sf -X POST -H "Authorization: Bearer $KEY" -H 'content-type: text/csv' -T "$WORK/entities.csv" \
  "http://127.0.0.1:$PORT/api/v1/datasets/market/market_entities/versions?mode=replace" >/dev/null
stop_server
rm -f "$WORK/entities.csv"
PARQUET_MIB=$(du -sm "$DATA/warehouse" | cut -f1)

SQL="SELECT district, count(*) AS n, sum(registered_capital) AS capital FROM market.market_entities WHERE established_date BETWEEN DATE '2010-01-01' AND DATE '2020-12-31' GROUP BY district ORDER BY district"

median_of() { sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' "$1"; }

"$BIN" query --repeat "$RUNS" --format csv "$SQL" >"$WORK/local.csv" 2>"$WORK/local.err"
LOCAL=$(median_of "$WORK/local.err")

W1=$(free_port); W2=$(free_port)
"$BIN" worker --listen "127.0.0.1:$W1" 2>>"$WORK/w1.log" & PIDS+=($!)
"$BIN" worker --listen "127.0.0.1:$W2" 2>>"$WORK/w2.log" & PIDS+=($!)
sleep 1
export DATAGATE_QUERY__WORKERS="[\"http://127.0.0.1:$W1\",\"http://127.0.0.1:$W2\"]"
export DATAGATE_QUERY__DISTRIBUTE_ABOVE_BYTES=0
wchar() { awk '/^wchar/ {print $2}' "/proc/$1/io"; }
before=$(( $(wchar "${PIDS[0]}") + $(wchar "${PIDS[1]}") ))
"$BIN" query --repeat 1 --format csv "$SQL" >"$WORK/dist1.csv" 2>/dev/null
after=$(( $(wchar "${PIDS[0]}") + $(wchar "${PIDS[1]}") ))
SHIPPED=$(( after - before ))
"$BIN" query --repeat "$RUNS" --format csv "$SQL" >"$WORK/dist.csv" 2>"$WORK/dist.err"
DIST=$(median_of "$WORK/dist.err")
cmp -s "$WORK/local.csv" "$WORK/dist.csv" && SAME=yes || SAME=NO
NGROUPS=$(( $(wc -l <"$WORK/local.csv") - 1 ))
# Proof that it ran distributed: the stages EXPLAIN shows.
STAGES=$("$BIN" query --format csv "EXPLAIN $SQL" 2>/dev/null | grep -o "Stage [0-9]* ── tasks=[0-9]*" | sort -u | tr "\n" " " || true)
# The same query's result as rows would weigh at least this (uscc alone is 18 bytes a row).
ROW_BYTES=$(( ROWS * 18 ))

python3 - "$ROWS" "$PARQUET_MIB" "$LOCAL" "$DIST" "$SHIPPED" "$NGROUPS" "$SAME" "$ROW_BYTES" "$RUNS" "$STAGES" <<'PY'
import sys
rows, mib, local, dist, shipped, groups, same, row_bytes, runs, stages = sys.argv[1:]
local, dist = float(local), float(dist)
print(f"\nDistributed query overhead: {int(rows):,} rows ({mib} MiB Parquet), 2 workers on the same cores, median of {runs}")
print("| figure | local | distributed (2 workers) | ratio |")
print("|---|---|---|---|")
print(f"| filtered aggregate (GROUP BY district, date range), ms | {local:.0f} | {dist:.0f} | {dist/local:.2f}x |")
print(f"| bytes the workers sent for it | - | {int(shipped):,} ({groups} groups) | {int(shipped)/int(row_bytes):.5f} of one 18-byte column of every row |")
print(f"| same answer | | {same} | |")
print(f"stages: {stages or 'NONE (the plan stayed in the gateway)'}")
PY
