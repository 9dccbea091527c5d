#!/usr/bin/env bash
# Query isolation under load, in one run:
#   - rows?limit=10 for a well-behaved key (internal tier, reserved query pool): alone, then
#     while 4 and while 8 hostile anonymous queries run (each a recursive CTE without a stop —
#     the iteration budget lifted — or a cross join within the anonymous budget, re-sent as soon
#     as it is answered, 5 s limit);
#   - /healthz under the same loads.
# Targets: rows p99 under load at most 3x its p99 alone; /healthz p99 under 50 ms.
#
# The load generator is built in the test profile (dependencies optimised; no release build of
# the test package's dependencies needed); the server in release.
#
#   benches/isolation.sh [CLIENTS=16] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
CLIENTS="${1:-16}"
SECS="${2:-10}"
bench_build
http_load_build
bench_work
HOSTILE_PIDS=()
stop_hostile() { for p in "${HOSTILE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; HOSTILE_PIDS=(); }
BENCH_ON_EXIT=stop_hostile
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"

start_server "$PORT" DATAGATE_LIMITS__MAX_RECURSION_DEPTH=1000000000000 \
  DATAGATE_TIERS__ANONYMOUS__REQUESTS=100000000 DATAGATE_TIERS__ANONYMOUS__BURST=100000000 \
  DATAGATE_TIERS__ANONYMOUS__MAX_CONCURRENT_QUERIES=0 \
  DATAGATE_TIERS__INTERNAL__REQUESTS=100000000 DATAGATE_TIERS__INTERNAL__BURST=100000000 \
  DATAGATE_TIERS__INTERNAL__DAILY_BYTES=0 \
  DATAGATE_TIERS__INTERNAL__MAX_CONCURRENT_QUERIES=0 DATAGATE_ADMISSION__MAX_IN_FLIGHT_QUERIES=1000
USER_KEY=$(curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
  "$BASE/api/v1/keys" -d '{"name":"bench","role":"consumer","tier":"internal"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

hostile() { # n: start n hostile anonymous loops
  for i in $(seq "$1"); do
    if [ $((i % 2)) -eq 0 ]; then
      SQL='WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r'
    else
      SQL='SELECT count(*) FROM market.market_entities a, market.market_entities b WHERE a.registered_capital + b.registered_capital < 0'
    fi
    BODY=$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1], "timeout_ms": 5000}))' "$SQL")
    ( while true; do curl -s -o /dev/null -H 'content-type: application/json' "$BASE/api/v1/query" -d "$BODY"; done ) &
    HOSTILE_PIDS+=($!)
  done
  sleep 1
}

load() { http_load "$1" "$CLIENTS" "$SECS" 200 "${2:-}"; } # url [key] → "rps p50 p99 errors"
ROWS_URL="$BASE/api/v1/datasets/transport/bus_lines/rows?limit=10"
ROWS0=$(load "$ROWS_URL" "$USER_KEY"); HEALTH0=$(load "$BASE/healthz")
hostile 4
ROWS4=$(load "$ROWS_URL" "$USER_KEY"); HEALTH4=$(load "$BASE/healthz")
stop_hostile; hostile 8
ROWS8=$(load "$ROWS_URL" "$USER_KEY"); HEALTH8=$(load "$BASE/healthz")
stop_hostile

echo
echo "query isolation, $CLIENTS clients x ${SECS} s each, client and server on this machine ($(nproc) cores):"
echo "| path | hostile queries | req/s | p50 ms | p99 ms | errors | p99 vs alone |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
row() { read -r rps p50 p99 err <<<"$3"; read -r _ _ base _ <<<"$4";
  printf "| %s | %s | %.0f | %.2f | %.2f | %s | %.2fx |\n" "$1" "$2" "$rps" "$p50" "$p99" "$err" "$(python3 -c "print($p99 / max($base, 0.001))")"; }
row "rows?limit=10, internal key" 0 "$ROWS0" "$ROWS0"
row "rows?limit=10, internal key" 4 "$ROWS4" "$ROWS0"
row "rows?limit=10, internal key" 8 "$ROWS8" "$ROWS0"
row "/healthz" 0 "$HEALTH0" "$HEALTH0"
row "/healthz" 4 "$HEALTH4" "$HEALTH0"
row "/healthz" 8 "$HEALTH8" "$HEALTH0"
for r in "$ROWS0" "$ROWS4" "$ROWS8" "$HEALTH0" "$HEALTH4" "$HEALTH8"; do
  read -r _ _ _ err <<<"$r"
  if [ "$err" != "0" ]; then echo "INVALID RUN: some requests failed (see the errors column)"; exit 1; fi
done
