#!/usr/bin/env bash
# Queries and exports through the gateway, beside DuckDB (PyPI, in-process) and DataFusion
# in-process in the same binary (`datagate query`), on the same Parquet files of a generated
# market-entity dataset published through ingest, in the same run:
#   - point lookup by primary key, filtered aggregate (GROUP BY district over a date range),
#     top-N: median latency of RUNS runs each, DuckDB and the gateway alternately (targets:
#     point < 2x DuckDB, aggregate < 1.5x DuckDB, HTTP over in-process DataFusion < 1.2x for
#     the aggregate);
#   - full CSV and Parquet export: rows/s beside DuckDB COPY ... TO of the same query (target
#     >= 0.7x) and the server's peak RSS during each export (target < 256 MiB);
#   - 64 concurrent clients asking rows?limit=10 of a small dataset: requests/s, p50, p99.
#
#   benches/query_vs_duckdb.sh [ROWS]        (default 10,000,000; RUNS=7 in the environment)
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
ROWS="${1:-10000000}"
RUNS="${RUNS:-7}"
python3 -c 'import duckdb' 2>/dev/null || pip install -q duckdb
bench_build
# /healthz and rows are measured with the same client.
http_load_build
bench_work
DATA="$WORK/data"
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"

gateway() { start_server "$PORT" DATAGATE_LIMITS__QUERY_TIMEOUT_MS=600000 "${UNLIMITED_ANONYMOUS[@]}"; }
peak_rss_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$SERVER_PID/status"; }

echo "generating and publishing $ROWS rows..." >&2
"$BIN" gen market_entities --rows "$ROWS" --out "$WORK/entities.csv" 2>/dev/null
POINT_KEY=$(awk -F, -v n=$(( ROWS * 7 / 10 + 2 )) 'NR == n {print $1; exit}' "$WORK/entities.csv")
gateway
register_entities "$BASE" entities
upload_entities "$BASE" entities "$WORK/entities.csv"
rm -f "$WORK/entities.csv"
stop_server
FILES=$(find "$DATA/warehouse/datasets/market/entities" -name '*.parquet' | sort | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))')

POINT="SELECT * FROM market.entities WHERE uscc = '$POINT_KEY'"
AGG="SELECT district, count(*) AS n, sum(registered_capital) AS capital FROM market.entities WHERE established_date BETWEEN DATE '2010-01-01' AND DATE '2015-12-31' GROUP BY district ORDER BY district"
TOPN="SELECT uscc, entity_name, registered_capital FROM market.entities ORDER BY registered_capital DESC, uscc LIMIT 10"

# In-process DataFusion, the same planner and encoders, no HTTP (server stopped: no contention).
inproc() { "$BIN" query --data-dir "$DATA" --repeat "$RUNS" --format json "$1" 2>&1 >/dev/null | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p'; }
IN_POINT=$(inproc "$POINT"); IN_AGG=$(inproc "$AGG"); IN_TOPN=$(inproc "$TOPN")

# Each statement alternately in DuckDB and through the gateway (benches/pair_query.py), so the
# two sides of a ratio share the same minutes: "duckdb_ms gateway_ms".
gateway
for q in POINT AGG TOPN; do
  pair=$(python3 benches/pair_query.py "$FILES" "$RUNS" "$PORT" "${!q}")
  printf -v "DUCK_$q" '%s' "${pair% *}"; printf -v "HTTP_$q" '%s' "${pair#* }"
done
stop_server

export_run() { # format → "seconds peak_rss_mib bytes" (a fresh server per export)
  gateway
  local t0 t1 bytes
  t0=$(date +%s.%N)
  bytes=$(curl -sf "$BASE/api/v1/datasets/market/entities/export?format=$1" | wc -c)
  t1=$(date +%s.%N)
  local rss; rss=$(peak_rss_mib)
  stop_server
  echo "$(python3 -c "print($t1-$t0)") $rss $bytes"
}
read -r CSV_S CSV_RSS CSV_BYTES < <(export_run csv)
read -r PQ_S PQ_RSS PQ_BYTES < <(export_run parquet)
read -r DUCK_CSV_S DUCK_PQ_S < <(python3 - "$FILES" "$WORK" <<'PY'
import duckdb, json, sys, time
files, work = json.loads(sys.argv[1]), sys.argv[2]
con = duckdb.connect()
out = []
for fmt, opts in (("csv", "(HEADER)"), ("parquet", "(FORMAT parquet, COMPRESSION zstd)")):
    t = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM read_parquet({files!r})) TO '{work}/duck.{fmt}' {opts}")
    out.append(time.perf_counter() - t)
print(*out)
PY
)

gateway
LOAD=$(cargo test -q -p datagate-tests --bench http_load -- "$BASE/api/v1/datasets/transport/bus_lines/rows?limit=10" 64 10)
HEALTH=$(cargo test -q -p datagate-tests --bench http_load -- "$BASE/healthz" 64 5)
stop_server

python3 - "$ROWS" "$RUNS" "$IN_POINT" "$IN_AGG" "$IN_TOPN" "$DUCK_POINT" "$DUCK_AGG" "$DUCK_TOPN" \
  "$HTTP_POINT" "$HTTP_AGG" "$HTTP_TOPN" "$CSV_S" "$CSV_RSS" "$CSV_BYTES" "$PQ_S" "$PQ_RSS" "$PQ_BYTES" \
  "$DUCK_CSV_S" "$DUCK_PQ_S" "$LOAD" "$HEALTH" <<'PY'
import sys
a = sys.argv[1:]
rows, runs = int(a[0]), int(a[1])
inp, duck, http = [float(x) for x in a[2:5]], [float(x) for x in a[5:8]], [float(x) for x in a[8:11]]
csv_s, csv_rss, csv_bytes, pq_s, pq_rss, pq_bytes = float(a[11]), int(a[12]), int(a[13]), float(a[14]), int(a[15]), int(a[16])
duck_csv, duck_pq = float(a[17]), float(a[18])
load, health = a[19], a[20]
print(f"market_entities, {rows:,} rows, median of {runs} runs (ms)")
print(f"{'query':18} {'gateway HTTP':>13} {'DataFusion':>11} {'DuckDB':>9} {'HTTP/DuckDB':>12} {'HTTP/in-proc':>13}")
for name, h, i, d, target in zip(("point lookup", "filtered agg", "top-N"), http, inp, duck, ("< 2x", "< 1.5x", "")):
    print(f"{name:18} {h:13.2f} {i:11.2f} {d:9.2f} {h/d:11.2f}x {h/i:12.2f}x  {target}")
print("(targets: point < 2x DuckDB, aggregate < 1.5x DuckDB, aggregate HTTP/in-process < 1.2x)")
print()
print(f"{'full export':18} {'seconds':>9} {'rows/s':>12} {'MiB':>8} {'peak RSS MiB':>13} {'DuckDB s':>9} {'ratio':>7}")
for name, s, rss, b, d in (("CSV", csv_s, csv_rss, csv_bytes, duck_csv), ("Parquet", pq_s, pq_rss, pq_bytes, duck_pq)):
    print(f"{name:18} {s:9.2f} {rows/s:12,.0f} {b/2**20:8.0f} {rss:13} {d:9.2f} {d/s:6.2f}x")
print("(ratio = gateway rows/s over DuckDB COPY rows/s, target >= 0.7x; peak RSS target < 256 MiB)")
print()
print(f"64 clients, rows?limit=10 of transport.bus_lines, 10 s: {load}")
print(f"64 clients, /healthz (HTTP ceiling, same machine), 5 s: {health}")
PY
