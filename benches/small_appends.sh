#!/usr/bin/env bash
# Small appends (`crates/datagate-ingest/src/compaction.rs`), in one run: a dataset appended to
# APPENDS times with ROWS rows each (an hourly feed of 24 stations), once with compaction off
# (ingest.compact_after_files = 0: one file per append, as before compaction) and once with
# the default (16), on fresh servers. Prints the time the appends took, the current version's
# files, and the median of 7 runs of: count(*), a GROUP BY over every row, a filtered rows
# page and a whole CSV export; then each figure with compaction as a ratio of the one without.
#
#   benches/small_appends.sh [APPENDS=1000] [ROWS=24]
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
APPENDS="${1:-1000}"
ROWS="${2:-24}"
bench_build
bench_work

run_one() { # compact_after_files -> one line of figures
  local port
  port=$(free_port)
  rm -rf "$WORK/data"
  start_server "$port" "${UNLIMITED_ANONYMOUS[@]}" \
    DATAGATE_TIERS__INTERNAL__REQUESTS=100000000 DATAGATE_TIERS__INTERNAL__BURST=100000000 \
    DATAGATE_CATALOG_MANIFESTS= DATAGATE_INGEST__COMPACT_AFTER_FILES="$1"
  BASE="http://127.0.0.1:$port" KEY="$KEY" APPENDS="$APPENDS" ROWS="$ROWS" python3 - <<'EOF'
import json, os, statistics, time, urllib.request
base, key = os.environ["BASE"], os.environ["KEY"]
appends, rows = int(os.environ["APPENDS"]), int(os.environ["ROWS"])
def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(base + path, data=body, method=method,
                                 headers={"Authorization": "Bearer " + key, "content-type": ctype})
    with urllib.request.urlopen(req) as r:
        return r.read()
call("POST", "/api/v1/departments", json.dumps({"id": "env", "name": "E", "description": "d"}).encode())
call("POST", "/api/v1/datasets", json.dumps({
    "department": "env", "name": "aq", "title": "AQ", "description": "d", "access_level": "open",
    "license": "CC0-1.0", "tags": [], "update_frequency": "hourly", "primary_key": ["station", "ts"]}).encode())
t = time.perf_counter()
for h in range(appends):
    day, hour = divmod(h, 24)
    body = "station,ts,aqi\n" + "".join(
        f"s{i:02d},2024-{1 + day // 28:02d}-{1 + day % 28:02d}T{hour:02d}:00:00Z,{(h * 7 + i) % 300}\n"
        for i in range(rows))
    call("POST", "/api/v1/datasets/env/aq/versions?mode=append", body.encode(), "text/csv")
append_s = time.perf_counter() - t
files = json.loads(call("GET", "/api/v1/datasets/env/aq/versions"))[0]["files"]
def median_ms(method, path, body=None):
    times = []
    for _ in range(7):
        t = time.perf_counter()
        call(method, path, body)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
q = lambda sql: json.dumps({"sql": sql}).encode()
figures = [
    median_ms("POST", "/api/v1/query", q("SELECT count(*) FROM env.aq")),
    median_ms("POST", "/api/v1/query", q("SELECT station, avg(aqi) FROM env.aq GROUP BY station")),
    median_ms("GET", "/api/v1/datasets/env/aq/rows?limit=10&where=aqi%20%3E%20298"),
    median_ms("GET", "/api/v1/datasets/env/aq/export?format=csv"),
]
print(f"{append_s:.2f} {files} " + " ".join(f"{f:.2f}" for f in figures))
EOF
  stop_server
}

OFF=$(run_one 0)
ON=$(run_one 16)
echo
echo "small appends: $APPENDS appends of $ROWS rows, then queries of the current version (median of 7, ms)"
echo "| compaction | appends s | files | count(*) | GROUP BY | rows page, where | CSV export |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
echo "$OFF" | awk '{printf "| off (0) | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}'
echo "$ON" | awk '{printf "| on (16) | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}'
paste -d' ' <(echo "$ON") <(echo "$OFF") | awk '{printf "| on / off | %.2fx | %.3fx | %.2fx | %.2fx | %.2fx | %.2fx |\n", $1/$7, $2/$8, $3/$9, $4/$10, $5/$11, $6/$12}'
