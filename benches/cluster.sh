#!/usr/bin/env bash
# Cluster figures, each against its baseline in the same run (release build, loopback, this
# machine's cores shared by every server and the load generator):
#   1. catalog round trips on the rows path: `rows?limit=10` latency (one client, sequential,
#      p50/p99) and throughput (CLIENTS clients) with the embedded SQLite catalog vs a
#      PostgreSQL catalog, same local warehouse; throughput both as one anonymous caller (every
#      request takes from one shared rate-state row) and as 1,000 callers (X-Forwarded-For from
#      a trusted proxy, as behind a load balancer);
#   2. the warehouse: a point lookup and a filtered aggregate over ROWS generated market
#      entities, median of REPEAT runs, local disk vs S3 (moto on loopback), and the S3
#      requests one more (warm) run of each makes (moto's request log);
#   3. replicas: `rows?limit=10` throughput of three gateways vs one on PostgreSQL + S3
#      (CLIENTS clients spread over the gateways).
# Prints one table; the figures quoted in the README, benches/RESULTS.md and docs/scale.md come from it.
#
#   benches/cluster.sh                 (ROWS=2000000 REPEAT=9 CLIENTS=32 SECS=8)
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
ROWS="${ROWS:-2000000}"
REPEAT="${REPEAT:-9}"
CLIENTS="${CLIENTS:-32}"
SECS="${SECS:-8}"
bench_build
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
# The gateways, PostgreSQL and moto are stopped, and WORK removed, by the services' own exit.
WORK="$(mktemp -d /tmp/datagate-cluster-bench.XXXXXX)"
PG_PORT=$(free_port)
S3_PORT=$(free_port)
. scripts/lib/services.sh
PIDS=()
trap 'stop_services "$WORK"' EXIT

start_postgres "$WORK" "$PG_PORT" 300
start_moto "$WORK" "$S3_PORT" bench

KEY=$(new_key)
S3_ENV=(AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
        AWS_ENDPOINT="http://127.0.0.1:$S3_PORT" AWS_ALLOW_HTTP=true)
# Generous tiers: the figures are the path's, not the limiter's.
LIMITS=(DATAGATE_TIERS__ANONYMOUS__REQUESTS=100000000 DATAGATE_TIERS__ANONYMOUS__BURST=1000000
        DATAGATE_TIERS__ANONYMOUS__MAX_CONCURRENT_QUERIES=0 DATAGATE_TIERS__ANONYMOUS__DAILY_BYTES=0
        DATAGATE_TIERS__INTERNAL__REQUESTS=100000000 DATAGATE_TIERS__INTERNAL__BURST=1000000
        DATAGATE_ADMISSION__MAX_IN_FLIGHT_QUERIES=1000 DATAGATE_LIMITS__QUERY_TIMEOUT_MS=600000
        DATAGATE_LOG__LEVEL=warn DATAGATE_ADMIN_KEY="$KEY"
        DATAGATE_RATE_LIMITS__TRUSTED_PROXIES='["127.0.0.1/32"]')
# wrk: every request from one of 1,000 addresses, as a trusted proxy forwards them.
cat >"$WORK/callers.lua" <<'LUA'
request = function()
  local ip = "10.7." .. math.random(0, 3) .. "." .. math.random(1, 250)
  return wrk.format(nil, nil, {["X-Forwarded-For"] = ip})
end
LUA

# start NAME PORT ENV... → a gateway in the background, ready.
start() {
    local name=$1 port=$2; shift 2
    env "${LIMITS[@]}" DATAGATE_LISTEN="127.0.0.1:$port" DATAGATE_DATA_DIR="$WORK/$name" \
        "$@" "$BIN" serve >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return; sleep 0.1; done
    echo "gateway $name did not start:"; tail -20 "$WORK/$name.log"; exit 1
}
stop_all() { for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null || true; done; sleep 1; PIDS=("${PIDS[0]}"); }
load() { # URL CLIENTS [LUA] → "rps p50 p99" (wrk, 2 threads; non-2xx answers fail the run)
    local out="$WORK/wrk-$RANDOM.txt" script=()
    [ -n "${3:-}" ] && script=(-s "$3")
    wrk -t2 -c"$2" -d"${SECS}s" --latency "${script[@]}" "$1" >"$out" 2>&1 || true
    python3 - "$out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
if "Non-2xx" in t:
    sys.exit("non-2xx answers under load:\n" + t)
rps = float(re.search(r"Requests/sec:\s*([\d.]+)", t).group(1))
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", t)
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
print(f"{rps:.0f} {ms(*p50.groups()):.2f} {ms(*p99.groups()):.2f}")
PY
}
sequential() { # URL N → "p50 p99" of one client's back-to-back requests (ms)
    python3 - "$1" "$2" <<'PY'
import sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
for _ in range(50): urllib.request.urlopen(url).read()
t = []
for _ in range(n):
    s = time.perf_counter(); urllib.request.urlopen(url).read(); t.append((time.perf_counter() - s) * 1000)
t.sort(); print(f"{t[len(t)//2]:.2f} {t[int(len(t)*0.99)]:.2f}")
PY
}
query_median() { # BASE SQL → median seconds of REPEAT runs
    python3 - "$1" "$2" "$KEY" "$REPEAT" <<'PY'
import json, sys, time, urllib.request
base, sql, key, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def run():
    req = urllib.request.Request(base + "/api/v1/query", data=json.dumps({"sql": sql}).encode(),
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    s = time.perf_counter(); urllib.request.urlopen(req).read(); return time.perf_counter() - s
run()
t = sorted(run() for _ in range(n)); print(f"{t[len(t)//2]:.4f}")
PY
}
query_once() { # BASE SQL → one run, its answer dropped
    curl -sf -X POST "$1/api/v1/query" -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' \
        -d "$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$2")" >/dev/null
}
ROWS_URL=/api/v1/datasets/transport/bus_lines/rows?limit=10

# 1. SQLite vs PostgreSQL catalog, local warehouse.
start sqlite 18101
read -r SQ_P50 SQ_P99 < <(sequential "http://127.0.0.1:18101$ROWS_URL" 2000)
read -r SQ_RPS _ _ < <(load "http://127.0.0.1:18101$ROWS_URL" "$CLIENTS")
read -r SQ_MANY _ _ < <(load "http://127.0.0.1:18101$ROWS_URL" "$CLIENTS" "$WORK/callers.lua")
stop_all
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres local_pg
start pg 18102 DATAGATE_CATALOG_URL="postgres://postgres@127.0.0.1:$PG_PORT/local_pg" DATAGATE_AUDIT__NODE_ID=pg
read -r PG_P50 PG_P99 < <(sequential "http://127.0.0.1:18102$ROWS_URL" 2000)
read -r PG_RPS _ _ < <(load "http://127.0.0.1:18102$ROWS_URL" "$CLIENTS")
read -r PG_MANY _ _ < <(load "http://127.0.0.1:18102$ROWS_URL" "$CLIENTS" "$WORK/callers.lua")
stop_all

# 2. Local disk vs S3: the same generated rows loaded into each.
"$BIN" gen market_entities --rows "$ROWS" --out "$WORK/entities.csv" 2>/dev/null
POINT_KEY=$(awk -F, -v n=$(( ROWS * 7 / 10 + 2 )) 'NR == n {print $1; exit}' "$WORK/entities.csv")
register() { # BASE
    register_entities "$1" entities_bench
    upload_entities "$1" entities_bench "$WORK/entities.csv"
}
POINT="SELECT * FROM market.entities_bench WHERE uscc = '$POINT_KEY'"
AGG="SELECT district, count(*) AS n, sum(registered_capital) AS capital FROM market.entities_bench WHERE established_date BETWEEN DATE '2010-01-01' AND DATE '2015-12-31' GROUP BY district ORDER BY district"
start disk 18103
register http://127.0.0.1:18103
DISK_POINT=$(query_median http://127.0.0.1:18103 "$POINT")
DISK_AGG=$(query_median http://127.0.0.1:18103 "$AGG")
stop_all
start s3 18104 "${S3_ENV[@]}" DATAGATE_STORAGE__WAREHOUSE_URL=s3://bench/one/
register http://127.0.0.1:18104
# S3 requests of each query's first run (cold) and of a later one (warm: Parquet footers and
# page indexes in DataFusion's file metadata cache, which every request's session shares).
s3_requests() { grep -cE '"(GET|HEAD|PUT|POST) /bench/' "$WORK/moto.log" || true; }
requests_of() { # SQL → S3 requests of one run
    local before; before=$(s3_requests)
    query_once http://127.0.0.1:18104 "$1"
    echo $(( $(s3_requests) - before ))
}
S3_COLD_POINT=$(requests_of "$POINT"); S3_COLD_AGG=$(requests_of "$AGG")
S3_POINT=$(query_median http://127.0.0.1:18104 "$POINT")
S3_AGG=$(query_median http://127.0.0.1:18104 "$AGG")
S3_WARM_POINT=$(requests_of "$POINT"); S3_WARM_AGG=$(requests_of "$AGG")
stop_all

# 3. One gateway vs three on PostgreSQL + S3.
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres shared
SHARED=("${S3_ENV[@]}" DATAGATE_CATALOG_URL="postgres://postgres@127.0.0.1:$PG_PORT/shared"
        DATAGATE_STORAGE__WAREHOUSE_URL=s3://bench/shared/)
start r1 18111 "${SHARED[@]}" DATAGATE_AUDIT__NODE_ID=r1
read -r ONE_RPS ONE_P50 ONE_P99 < <(load "http://127.0.0.1:18111$ROWS_URL" "$CLIENTS")
start r2 18112 "${SHARED[@]}" DATAGATE_AUDIT__NODE_ID=r2
start r3 18113 "${SHARED[@]}" DATAGATE_AUDIT__NODE_ID=r3
per=$(( (CLIENTS + 2) / 3 )); per=$(( per < 2 ? 2 : per ))
LOADS=()
for port in 18111 18112 18113; do
    load "http://127.0.0.1:$port$ROWS_URL" "$per" >"$WORK/three-$port" &
    LOADS+=($!)
done
wait "${LOADS[@]}"
THREE=$(cat "$WORK"/three-* | awk '{s += $1} END {printf "%.0f", s}')

python3 - "$SQ_P50" "$SQ_P99" "$SQ_RPS" "$PG_P50" "$PG_P99" "$PG_RPS" "$DISK_POINT" "$S3_POINT" \
    "$DISK_AGG" "$S3_AGG" "$ONE_RPS" "$THREE" "$ROWS" "$CLIENTS" "$(nproc)" \
    "$SQ_MANY" "$PG_MANY" "$S3_COLD_POINT" "$S3_WARM_POINT" "$S3_COLD_AGG" "$S3_WARM_AGG" <<'PY'
import sys
(sq50, sq99, sqr, pg50, pg99, pgr, dp, sp, da, sa, one, three, rows, clients, cores,
 sqm, pgm, cold_p, warm_p, cold_a, warm_a) = sys.argv[1:]
f = float
print(f"cluster figures ({cores} cores shared by every server and the clients; {rows} rows; {clients} clients)")
print(f"| figure | baseline | measured | ratio |")
print(f"|---|---|---|---|")
print(f"| rows?limit=10 p50, one client | SQLite catalog {f(sq50):.2f} ms | PostgreSQL catalog {f(pg50):.2f} ms | +{f(pg50)-f(sq50):.2f} ms |")
print(f"| rows?limit=10 p99, one client | SQLite {f(sq99):.2f} ms | PostgreSQL {f(pg99):.2f} ms | {f(pg99)/f(sq99):.2f}x |")
print(f"| rows?limit=10 req/s, {clients} clients, one caller | SQLite {f(sqr):.0f} | PostgreSQL {f(pgr):.0f} | {f(pgr)/f(sqr):.2f}x |")
print(f"| rows?limit=10 req/s, {clients} clients, 1,000 callers | SQLite {f(sqm):.0f} | PostgreSQL {f(pgm):.0f} | {f(pgm)/f(sqm):.2f}x |")
print(f"| point lookup (median) | local disk {f(dp)*1000:.1f} ms | S3 (moto) {f(sp)*1000:.1f} ms | {f(sp)/f(dp):.2f}x |")
print(f"| filtered aggregate (median) | local disk {f(da)*1000:.1f} ms | S3 (moto) {f(sa)*1000:.1f} ms | {f(sa)/f(da):.2f}x |")
print(f"| S3 requests, point lookup | first run {cold_p} | a later run {warm_p} | {f(warm_p)/max(f(cold_p),1):.2f}x |")
print(f"| S3 requests, filtered aggregate | first run {cold_a} | a later run {warm_a} | {f(warm_a)/max(f(cold_a),1):.2f}x |")
print(f"| rows?limit=10 req/s, PostgreSQL + S3 | one gateway {f(one):.0f} | three gateways {f(three):.0f} | {f(three)/f(one):.2f}x |")
PY
