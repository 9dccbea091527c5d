#!/usr/bin/env bash
# CSV → published Parquet version over HTTP, beside DuckDB's
#   COPY (SELECT * FROM read_csv('f.csv')) TO 'f.parquet'
# on the same generated market-entity file in the same run. Prints rows/s of both and their
# ratio (target: datagate >= 0.6x DuckDB), the server's peak RSS during the upload for two file
# sizes (target: < 512 MiB and not growing with the file), and the Parquet sizes (target:
# datagate <= 1.2x DuckDB).
#
#   benches/ingest_vs_duckdb.sh [ROWS]      (default 5,000,000; a fifth of it is the small size)
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
ROWS="${1:-5000000}"
SMALL=$(( ROWS / 5 ))
python3 -c 'import duckdb' 2>/dev/null || pip install -q duckdb
bench_build
bench_work
PORT=$(free_port)

"$BIN" gen market_entities --rows "$ROWS" --out "$WORK/big.csv" 2>/dev/null
"$BIN" gen market_entities --rows "$SMALL" --out "$WORK/small.csv" 2>/dev/null

upload() { # file → "seconds peak_rss_kib parquet_bytes"
  local file=$1 data="$WORK/data-$RANDOM"
  mkdir -p "$WORK/cat/market" && echo 'name = "市场监督管理局"' > "$WORK/cat/market/department.toml"
  start_server "$PORT" DATAGATE_DATA_DIR="$data" DATAGATE_CATALOG_MANIFESTS="$WORK/cat"
  register_entities "http://127.0.0.1:$PORT" entities
  local t0 t1
  t0=$(date +%s.%N)
  curl -sf -X POST -H "Authorization: Bearer $KEY" -H 'content-type: text/csv' -T "$file" \
    "127.0.0.1:$PORT/api/v1/datasets/market/entities/versions?mode=replace" >"$WORK/answer.json"
  t1=$(date +%s.%N)
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
  stop_server
  local bytes; bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$WORK/answer.json")
  echo "$(python3 -c "print($t1-$t0)") $hwm $bytes"
}

duck() { # file → "seconds parquet_bytes"
  python3 - "$1" "$WORK/duck.parquet" <<'PY'
import duckdb, os, sys, time
src, dst = sys.argv[1:]
con = duckdb.connect()
t0 = time.time()
con.execute(f"COPY (SELECT * FROM read_csv('{src}')) TO '{dst}' (FORMAT parquet)")
print(time.time() - t0, os.path.getsize(dst))
PY
}

read -r big_s big_rss big_bytes < <(upload "$WORK/big.csv")
read -r small_s small_rss small_bytes < <(upload "$WORK/small.csv")
read -r duck_s duck_bytes < <(duck "$WORK/big.csv")
python3 - "$ROWS" "$SMALL" "$big_s" "$big_rss" "$big_bytes" "$small_s" "$small_rss" "$duck_s" "$duck_bytes" "$(stat -c %s "$WORK/big.csv")" <<'PY'
import sys
rows, small, big_s, big_rss, big_bytes, small_s, small_rss, duck_s, duck_bytes, csv_bytes = sys.argv[1:]
rows, small = int(rows), int(small)
big_s, small_s, duck_s = float(big_s), float(small_s), float(duck_s)
print(f"CSV → Parquet, market_entities, {rows:,} rows ({int(csv_bytes)/2**20:.0f} MiB of CSV)")
print(f"{'':34} {'seconds':>9} {'rows/s':>12} {'Parquet MiB':>12} {'peak RSS MiB':>13}")
print(f"{'datagate HTTP upload':34} {big_s:9.2f} {rows/big_s:12,.0f} {int(big_bytes)/2**20:12.1f} {int(big_rss)/1024:13.0f}")
print(f"{'datagate HTTP upload (1/5 size)':34} {small_s:9.2f} {small/small_s:12,.0f} {'':>12} {int(small_rss)/1024:13.0f}")
print(f"{'DuckDB COPY read_csv → parquet':34} {duck_s:9.2f} {rows/duck_s:12,.0f} {int(duck_bytes)/2**20:12.1f} {'':>13}")
print(f"throughput ratio datagate/DuckDB: {(rows/big_s)/(rows/duck_s):.2f}x (target >= 0.6x)")
print(f"Parquet size ratio datagate/DuckDB: {int(big_bytes)/int(duck_bytes):.2f}x (target <= 1.2x)")
print(f"peak RSS big/small: {int(big_rss)/int(small_rss):.2f}x (flat = bounded memory; target < 512 MiB)")
PY
