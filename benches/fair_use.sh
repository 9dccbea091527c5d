#!/usr/bin/env bash
# The refusal path of fair use end to end, beside the HTTP ceiling in the same run:
#   - /healthz (no auth, no limiter, no body work): the most requests/s this server and
#     client pair reach on this machine;
#   - an anonymous caller over its tier (the tier made 1 request per hour, so every request
#     after the first is refused): 429 problem+json with RateLimit headers and Retry-After;
#   - a caller whose key is over its tier: the same, after a catalog lookup of the key;
#   - for scale, rows?limit=10 of a small dataset under a generous tier (the admitted path).
# Target: the refusal path at least 0.5x the /healthz rate.
#
#   [DATAGATE_BIN=path] benches/fair_use.sh [CLIENTS=64] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
CLIENTS="${1:-64}"
SECS="${2:-10}"
# DATAGATE_BIN: another build of the server to measure (e.g. a baseline), instead of this tree's.
bench_build
http_load_build
bench_work
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"

start_server "$PORT" \
  DATAGATE_TIERS__ANONYMOUS__REQUESTS=1 DATAGATE_TIERS__ANONYMOUS__WINDOW_SECS=3600 \
  DATAGATE_TIERS__ANONYMOUS__BURST=1 \
  DATAGATE_TIERS__STANDARD__REQUESTS=1 DATAGATE_TIERS__STANDARD__WINDOW_SECS=3600 \
  DATAGATE_TIERS__STANDARD__BURST=1 \
  DATAGATE_TIERS__PREMIUM__REQUESTS=100000000 DATAGATE_TIERS__PREMIUM__BURST=100000000 \
  DATAGATE_TIERS__PREMIUM__MAX_CONCURRENT_QUERIES=0 DATAGATE_ADMISSION__MAX_IN_FLIGHT_QUERIES=1000
key() { curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
  "$BASE/api/v1/keys" -d "{\"name\":\"bench\",\"role\":\"consumer\",\"tier\":\"$1\"}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'; }
LIMITED_KEY=$(key standard)
FREE_KEY=$(key premium)

load() { http_load "$1" "$CLIENTS" "$SECS" "$2" "${3:-}"; } # url status [key] → "rps p50 p99 errors"
HEALTH=$(load "$BASE/healthz" 200)
ANON=$(load "$BASE/api/v1/datasets" 429)
KEYED=$(load "$BASE/api/v1/datasets" 429 "$LIMITED_KEY")
ROWS=$(load "$BASE/api/v1/datasets/transport/bus_lines/rows?limit=10" 200 "$FREE_KEY")

echo
echo "fair use, $CLIENTS clients x ${SECS} s each, client and server on this machine ($(nproc) cores):"
echo "| path | req/s | p50 ms | p99 ms | errors | vs /healthz |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
row() { read -r rps p50 p99 err <<<"$2"; printf "| %s | %.0f | %.2f | %.2f | %s | %.2fx |\n" "$1" "$rps" "$p50" "$p99" "$err" "$(python3 -c "print($rps / ${HEALTH%% *})")"; }
row "/healthz (ceiling)" "$HEALTH"
row "429, anonymous over its tier" "$ANON"
row "429, key over its tier" "$KEYED"
row "200, rows?limit=10 (admitted)" "$ROWS"
