#!/usr/bin/env bash
# A whole 10M-row table read three ways in one run, each into an Arrow table in the client
# (this machine is shared and noisy: only same-run ratios count):
#   - Flight SQL through the real ADBC driver: `SELECT * FROM market.entities`, fetch_arrow_table;
#   - the HTTP Arrow export of the same version (`/export?format=arrow`), read by pyarrow;
#   - DuckDB in-process reading the same Parquet files.
# Targets: Flight >= 1.5x the HTTP Arrow export and >= 0.8x DuckDB (rows/s), server peak RSS
# < 256 MiB. Median of RUNS runs each.
#
#   benches/flight_vs_http.sh [ROWS]      (default 10,000,000; RUNS=3)
#
# Each reader starts once the server's RSS has settled after the upload (the peak is the
# reader's own), and a second table says where each reader's CPU went (client and server).
#
# Needs python3 with the packages of tests/requirements.txt and duckdb (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
ROWS="${1:-10000000}"
RUNS="${RUNS:-3}"
python3 -c 'import duckdb' 2>/dev/null || pip install -q duckdb==2.0.1
python3 -c 'import adbc_driver_flightsql, pyarrow' 2>/dev/null ||
  pip install -q --root-user-action=ignore -r tests/requirements.txt
bench_build
bench_work
DATA="$WORK/data"
PORT=$(free_port)
FLIGHT_PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"

start_server "$PORT" DATAGATE_FLIGHT_LISTEN="127.0.0.1:$FLIGHT_PORT" \
  DATAGATE_LIMITS__QUERY_TIMEOUT_MS=600000

echo "generating and publishing $ROWS market_entities rows..." >&2
"$BIN" gen market_entities --rows "$ROWS" --out "$WORK/entities.csv" 2>/dev/null
register_entities "$BASE" entities
upload_entities "$BASE" entities "$WORK/entities.csv"
rm -f "$WORK/entities.csv"
FILES=$(find "$DATA/warehouse/datasets/market/entities" -name '*.parquet' | sort | paste -sd,)

python3 - "$BASE" "grpc://127.0.0.1:$FLIGHT_PORT" "$KEY" "$FILES" "$ROWS" "$RUNS" "$SERVER_PID" <<'PY'
import os, resource, statistics, sys, time, urllib.request
import adbc_driver_flightsql.dbapi as flightsql
import duckdb, pyarrow as pa, pyarrow.ipc

base, flight_uri, key, files, rows, runs, pid = sys.argv[1:]
rows, runs = int(rows), int(runs)
files = files.split(",")

def peak_rss_mib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024

def rss_mib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

def settle():
    # The upload's freed memory goes back to the system a few seconds after it (jemalloc's
    # decay): wait until the server's RSS stops falling, so each reader's peak is its own.
    last, still, deadline = rss_mib(), 0, time.time() + 60
    while still < 4 and time.time() < deadline:
        time.sleep(0.5)
        now = rss_mib()
        still = still + 1 if now >= last - 1 else 0
        last = now

def server_cpu_s():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def reset_peak_rss():
    # Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")

def http_export():
    req = urllib.request.Request(f"{base}/api/v1/datasets/market/entities/export?format=arrow",
                                 headers={"Authorization": "Bearer " + key})
    with urllib.request.urlopen(req) as r:
        return pa.ipc.open_stream(r).read_all()

conn = flightsql.connect(flight_uri, db_kwargs={"adbc.flight.sql.authorization_header": "Bearer " + key},
                         autocommit=True)
def flight():
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM market.entities")
        return cur.to_arrow_table() if hasattr(cur, "to_arrow_table") else cur.fetch_arrow_table()

def flight_cpp():
    """The same statement through pyarrow's C++ Flight client (no ADBC), for comparison."""
    import pyarrow.flight as fl
    def field(num, data):
        def varint(n):
            out = b""
            while True:
                b, n = n & 0x7F, n >> 7
                if not n:
                    return out + bytes([b])
                out += bytes([b | 0x80])
        return varint(num << 3 | 2) + varint(len(data)) + data
    command = field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + \
        field(2, field(1, b"SELECT * FROM market.entities"))
    client = fl.FlightClient(flight_uri)
    options = fl.FlightCallOptions(headers=[(b"authorization", ("Bearer " + key).encode())])
    info = client.get_flight_info(fl.FlightDescriptor.for_command(command), options)
    return client.do_get(info.endpoints[0].ticket, options).read_all()

duck = duckdb.connect()
def duckdb_read():
    rel = duck.sql(f"SELECT * FROM read_parquet({files!r})")
    return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()

cpu = {}
def timed(name, fn):
    # Wall time, and where the CPU went: this client's user and system time (most of the
    # system time is page faults of the fresh memory the table lands in) and the server's.
    out, user, system, server = [], [], [], []
    for _ in range(runs):
        before, server_before = resource.getrusage(resource.RUSAGE_SELF), server_cpu_s()
        t = time.perf_counter()
        table = fn()
        out.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_SELF)
        user.append(after.ru_utime - before.ru_utime)
        system.append(after.ru_stime - before.ru_stime)
        server.append(server_cpu_s() - server_before)
        assert table.num_rows == rows, (fn.__name__, table.num_rows)
        del table
    cpu[name] = tuple(statistics.median(x) for x in (user, system, server))
    return statistics.median(out)

results, rss, rss_before = {}, {}, {}
for name, fn in [("http", http_export), ("flight", flight), ("flight_cpp", flight_cpp),
                 ("duckdb", duckdb_read)]:
    settle()
    rss_before[name] = rss_mib()
    reset_peak_rss()
    results[name] = timed(name, fn)
    rss[name] = peak_rss_mib()
rate = {k: rows / v for k, v in results.items()}
print(f"\n{rows:,} rows, median of {runs} runs, each read into an Arrow table in the client\n")
print("| reader | seconds | rows/s | Flight ratio | target | server peak RSS |")
print("| --- | ---: | ---: | ---: | --- | ---: |")
print(f"| Flight SQL (ADBC) | {results['flight']:.2f} | {rate['flight']:,.0f} | — | — | {rss['flight']} MiB (< 256) |")
print(f"| Flight SQL (pyarrow C++ Flight client) | {results['flight_cpp']:.2f} | {rate['flight_cpp']:,.0f} | — | — | {rss['flight_cpp']} MiB |")
print(f"| HTTP Arrow export | {results['http']:.2f} | {rate['http']:,.0f} | {rate['flight'] / rate['http']:.2f}x | >= 1.5x | {rss['http']} MiB |")
print(f"| DuckDB over the Parquet files | {results['duckdb']:.2f} | {rate['duckdb']:,.0f} | {rate['flight'] / rate['duckdb']:.2f}x | >= 0.8x | — |")
print("\n| reader | client user s | client system s | server CPU s |")
print("| --- | ---: | ---: | ---: |")
for name, label in [("flight", "Flight SQL (ADBC)"), ("flight_cpp", "Flight SQL (C++ client)"),
                    ("http", "HTTP Arrow export"), ("duckdb", "DuckDB (in the client)")]:
    u, s, srv = cpu[name]
    print(f"| {label} | {u:.2f} | {s:.2f} | {srv:.2f} |")
print(f"\nserver RSS before each reader (the peak is measured from there): "
      + ", ".join(f"{k} {v} MiB" for k, v in rss_before.items()))
PY
