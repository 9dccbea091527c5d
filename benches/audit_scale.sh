#!/usr/bin/env bash
# The audit log at city scale (85 million records a year), in one run (this machine is shared
# and noisy: only same-run ratios count):
#   1. generate RECORDS records over a year with the audit crate's own encoding and chain
#      (`datagate audit gen`: 5,000 principals, 300 datasets, begin/end pairs, refusals...);
#   2. convert them to Parquet (`datagate audit index`, what the gateway's converter does on
#      every seal) — records/s, and again over a million records of one day (the shape of the
#      segments a 256-writer load seals), beside the durable append rate through the log's
#      writer at 256 concurrent writers measured in the same run (target: conversion >= 10x
#      appends);
#   3. verify the whole log, JSON chain and Parquet copy (`datagate audit verify`) — records/s
#      (target >= 1M/s on 2 cores) and peak RSS;
#   4. start the gateway on that log and time, as an auditor, beside DuckDB in-process over the
#      same Parquet partitions (median of RUNS): a month's bytes per principal for one dataset,
#      a full year's records and bytes per dataset (targets < 1.5x DuckDB, a month < 2 s), and a
#      newest-first page of 100 events of one principal (target < 100 ms); server peak RSS
#      (target < 512 MiB);
#   5. the log's size on disk, JSON lines against Parquet.
#
#   benches/audit_scale.sh [RECORDS]     (default 85,000,000; RUNS=3; about 720 bytes a record
#                                         of JSON plus ~14% for Parquet must fit on the disk:
#                                         66 GiB at 85M)
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
RECORDS="${1:-85000000}"
RUNS="${RUNS:-3}"
python3 -c 'import duckdb' 2>/dev/null || pip install -q duckdb==2.0.1
need=$((RECORDS * 830 / 1024))
bench_work "${BENCH_DIR:-/var/tmp}"
free=$(df -k --output=avail "$WORK" | tail -1)
if [ "$free" -lt "$need" ]; then
  echo "need about $((need / 1024 / 1024)) GiB free under $WORK for $RECORDS records, have $((free / 1024 / 1024)) GiB; give fewer records" >&2
  exit 2
fi
bench_build
DATA="$WORK/data"
AUDIT="$DATA/audit"
export DATAGATE_DATA_DIR="$DATA"

peak_rss_mib() { # command... -> prints "seconds peak_rss_mib" of the command on stderr's last line
  /usr/bin/env python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.perf_counter()
out = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{dt:.3f} {rss:.0f} {out.returncode}")
PY
}

echo "generating $RECORDS records..." >&2
read -r GEN_S _ _ < <(peak_rss_mib "$BIN" audit gen --dir "$AUDIT" --records "$RECORDS" \
  --from 2025-01-01T00:00:00Z --to 2026-01-01T00:00:00Z)
echo "converting to Parquet..." >&2
read -r INDEX_S INDEX_RSS _ < <(peak_rss_mib "$BIN" audit index --dir "$AUDIT")
# Under a 256-writer load a segment fills in seconds, so each converts into one day's file;
# the year-long log above spreads a segment over days (at 10M records, about four). The same
# conversion over segments of one day each (a million records, or RECORDS if fewer):
echo "converting one-day segments to Parquet..." >&2
DAY_RECORDS=$((RECORDS < 1000000 ? RECORDS : 1000000))
"$BIN" audit gen --dir "$WORK/oneday" --records "$DAY_RECORDS" \
  --from 2025-06-01T00:00:00Z --to 2025-06-01T12:00:00Z >/dev/null
read -r DAY_INDEX_S DAY_INDEX_RSS _ < <(peak_rss_mib "$BIN" audit index --dir "$WORK/oneday")
rm -rf "$WORK/oneday"
echo "measuring durable appends at 256 writers..." >&2
APPEND_RATE=$("$BIN" audit append-rate --dir "$WORK/append" --writers 256 --seconds 5 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["records_per_sec"])')
rm -rf "$WORK/append"
echo "verifying..." >&2
read -r VERIFY_S VERIFY_RSS VERIFY_RC < <(peak_rss_mib "$BIN" audit verify --dir "$AUDIT")
JSON_BYTES=$(find "$AUDIT" -maxdepth 1 -name 'segment-*.jsonl' -printf '%s\n' | awk '{s+=$1} END {print s}')
PARQUET_BYTES=$(find "$AUDIT/columnar" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END {print s}')

PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
SERVER_START_SECS=60 start_server "$PORT" DATAGATE_LIMITS__QUERY_TIMEOUT_MS=600000

python3 - "$BASE" "$KEY" "$AUDIT" "$RUNS" "$SERVER_PID" <<PY
import json, statistics, sys, time, urllib.request
import duckdb
base, key, audit, runs, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]

def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=900) as r:
        data = r.read()
    return time.perf_counter() - t, json.loads(data)

def median(f):
    times, out = [], None
    for _ in range(runs):
        t, out = f()
        times.append(t)
    return statistics.median(times), out

month = ("SELECT key_id, sum(bytes_returned) AS b FROM {t} WHERE ts >= TIMESTAMPTZ '2025-11-01 00:00:00+00' "
         "AND ts < TIMESTAMPTZ '2025-12-01 00:00:00+00' AND datasets = 'dept05.set0005@1' AND kind = 'end' GROUP BY 1")
year = "SELECT datasets, count(*) AS n, sum(bytes_returned) AS b FROM {t} GROUP BY 1"
month_df = month.replace("TIMESTAMPTZ '2025-11-01 00:00:00+00'", "'2025-11-01T00:00:00Z'").replace(
    "TIMESTAMPTZ '2025-12-01 00:00:00+00'", "'2025-12-01T00:00:00Z'")
files = audit + "/columnar/*/*.parquet"
con = duckdb.connect()
con.execute("SET threads TO 2")
def duck(sql):
    def run():
        t = time.perf_counter()
        rows = con.execute(sql.format(t=f"read_parquet('{files}')")).fetchall()
        return time.perf_counter() - t, rows
    return run
def gate(sql):
    return lambda: call("POST", "/api/v1/audit/query", {"sql": sql.format(t="audit.events")})

print(f"| figure | datagate | DuckDB (same run) | ratio |")
print(f"| --- | ---: | ---: | ---: |")
for name, q_gate, q_duck in [("a month, one dataset: bytes per principal", month_df, month),
                             ("a full year: records and bytes per dataset", year, year)]:
    dg, out = median(gate(q_gate))
    dk, rows = median(duck(q_duck))
    assert len(out["rows"]) == len(rows), (len(out["rows"]), len(rows))
    print(f"| {name} | {dg*1000:.0f} ms | {dk*1000:.0f} ms | {dg/dk:.2f}x |")
page, out = median(lambda: call("GET", "/api/v1/audit/events?principal=k00008&limit=100"))
# A small log holds fewer than 100 of that principal's events (the Parquet copy all but the
# open segment's): the page then holds every one of them.
have = con.execute(f"SELECT count(*) FROM read_parquet('{files}') WHERE key_id = 'k00008'").fetchone()[0]
assert len(out["rows"]) == 100 if have >= 100 else have <= len(out["rows"]) < 100, (len(out["rows"]), have)
print(f"| newest {len(out['rows'])} events of one principal | {page*1000:.0f} ms | - | - |")
hwm = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")][0].split()[1]
print(f"| gateway peak RSS | {int(hwm)/1024:.0f} MiB | - | - |")
PY

python3 - <<PY
records = $RECORDS
gen, index, verify = $GEN_S, $INDEX_S, $VERIFY_S
day_records, day_index = $DAY_RECORDS, $DAY_INDEX_S
append = float("${APPEND_RATE:-0}" or 0)
json_b, pq_b = $JSON_BYTES, $PARQUET_BYTES
print(f"| records | {records:,} |")
print(f"| --- | ---: |")
print(f"| generate (encode + chain + write) | {records/gen:,.0f} records/s |")
print(f"| Parquet conversion | {records/index:,.0f} records/s, peak RSS {$INDEX_RSS} MiB |")
print(f"| Parquet conversion, one-day segments ({day_records:,} records) | {day_records/day_index:,.0f} records/s, peak RSS {$DAY_INDEX_RSS} MiB |")
if append:
    print(f"| durable appends, 256 writers | {append:,.0f} records/s -> conversion {records/index/append:.1f}x (one-day segments {day_records/day_index/append:.1f}x) |")
print(f"| verify (chain + every Parquet row re-encoded) | {records/verify:,.0f} records/s, peak RSS {$VERIFY_RSS} MiB, exit {$VERIFY_RC} |")
print(f"| size on disk | JSON lines {json_b/2**30:.2f} GiB, Parquet {pq_b/2**30:.2f} GiB ({pq_b/json_b:.1%}) |")
PY
