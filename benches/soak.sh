#!/usr/bin/env bash
# Soak: mixed traffic (catalog, rows pages, SQL, exports, uploads, refusals) against the release
# binary for MINUTES (default 30), with a line every minute: requests, 5xx (must stay 0), p50 and
# p99 latency, the server's RSS and open file descriptors, and the audit log's size. It ends with
# the drift after warm-up (second half against first half) and fails on any 5xx or failed
# request. Not part of the test suite; run on demand:
#
#   benches/soak.sh [MINUTES]        (WORKERS=8 client threads; REPORT=file.json keeps the rows;
#                                     ONLY=rows,sql or SKIP=upload pick the kinds of traffic;
#                                     SERVER_WRAP="heaptrack -o /tmp/dg" runs the server under a tool)
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
MINUTES="${1:-30}"
python3 -c 'import requests' 2>/dev/null || pip install -q requests==2.34.2
bench_build
bench_work
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
# Generous tiers for the keys (reads go out with a consumer key, `standard`); the anonymous
# tier keeps its shipped limits, so refusals (429) are part of the traffic. Versions are kept to 5 per dataset so uploads do not fill the disk.
start_server "$PORT" DATAGATE_INGEST__RETAIN_VERSIONS=5 \
  DATAGATE_TIERS__INTERNAL__REQUESTS=10000000 DATAGATE_TIERS__INTERNAL__BURST=100000 \
  DATAGATE_TIERS__INTERNAL__DAILY_BYTES=0 \
  DATAGATE_TIERS__STANDARD__REQUESTS=10000000 DATAGATE_TIERS__STANDARD__BURST=100000 \
  DATAGATE_TIERS__STANDARD__DAILY_BYTES=0 DATAGATE_TIERS__STANDARD__MAX_CONCURRENT_QUERIES=16
echo "soak: $MINUTES min of mixed traffic against $BASE (pid $SERVER_PID), $(nproc) cores"
python3 benches/soak.py "$BASE" "$KEY" "$SERVER_PID" "$WORK/data/audit" "$MINUTES"
kill -0 "$SERVER_PID" || { echo "the server died" >&2; tail -50 "$WORK/server.log" >&2; exit 1; }
