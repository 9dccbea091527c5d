#!/usr/bin/env bash
# Auditing as shipped, end to end: rows?limit=10 requests/s (each writes a begin record that is
# fdatasync'ed before the first byte, and an end record) beside /healthz (not audited) in the
# same run, and the share of request time spent waiting for the audit log (from the server's
# own metrics: datagate_audit_wait_seconds over datagate_http_request_duration_seconds).
#
#   benches/audit_e2e.sh [CLIENTS=64] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
CLIENTS="${1:-64}"
SECS="${2:-10}"
bench_build
http_load_build
bench_work
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
start_server "$PORT" "${UNLIMITED_ANONYMOUS[@]}"
load() { http_load "$1" "$CLIENTS" "$SECS" 200; }
HEALTH=$(load "$BASE/healthz")
ROWS=$(load "$BASE/api/v1/datasets/transport/bus_lines/rows?limit=10")
METRICS=$(curl -sf "$BASE/metrics")
SHARE=$(python3 - "$METRICS" <<'PY'
import re, sys
m = sys.argv[1]
def val(pattern):
    return sum(float(x) for x in re.findall(pattern + r"\s+([0-9.eE+-]+)$", m, re.M))
wait_sum = val(r"^datagate_audit_wait_seconds_sum")
wait_n = val(r"^datagate_audit_wait_seconds_count")
req_sum = val(r'^datagate_http_request_duration_seconds_sum\{route="/api/v1/datasets/\{dept\}/\{name\}/rows"\}')
print(f"{100*wait_sum/req_sum:.1f}% {1000*wait_sum/max(wait_n,1):.2f}")
PY
)
RECORDS=$(curl -s "$BASE/api/v1/audit/verify" -o /dev/null -w '%{http_code}')
echo
echo "auditing as shipped, $CLIENTS clients x ${SECS} s, client and server on this machine ($(nproc) cores):"
echo "| path | req/s | p50 ms | p99 ms | errors | vs /healthz |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
row() { read -r rps p50 p99 err <<<"$2"; printf "| %s | %.0f | %.2f | %.2f | %s | %.2fx |\n" "$1" "$rps" "$p50" "$p99" "$err" "$(python3 -c "print($rps / ${HEALTH%% *})")"; }
row "/healthz (not audited)" "$HEALTH"
row "rows?limit=10 (begin + end records)" "$ROWS"
read -r SHARE_PCT WAIT_MS <<<"$SHARE"
echo "time waiting for the audit log: $SHARE_PCT of rows request time (mean wait $WAIT_MS ms per record)"
