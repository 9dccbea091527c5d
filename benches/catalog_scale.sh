#!/usr/bin/env bash
# A city-sized catalog, in one run: what each everyday request costs with the sample catalog
# alone, then again after DATASETS more datasets are registered (across 40 departments, a third
# each open, conditional and shared, each of twelve described columns and one small version),
# on the same server. Prints
# the median of 9 requests (3 for the DCAT catalog) as the anonymous caller and as an admin, at
# both sizes, and the ratio of the large catalog's figure to the small one's: a request whose
# cost does not depend on the catalog's size stays near 1x.
#
#   benches/catalog_scale.sh [DATASETS=5000]
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
DATASETS="${1:-5000}"
bench_build
bench_work

port=$(free_port)
start_server "$port" "${UNLIMITED_ANONYMOUS[@]}" \
  DATAGATE_TIERS__INTERNAL__REQUESTS=100000000 DATAGATE_TIERS__INTERNAL__BURST=100000000
BASE="http://127.0.0.1:$port" KEY="$KEY" DATASETS="$DATASETS" python3 - <<'EOF'
import concurrent.futures as cf, json, os, statistics, time, urllib.error, urllib.request
base, key, n = os.environ["BASE"], os.environ["KEY"], int(os.environ["DATASETS"])

def call(method, path, body=None, ctype="application/json", auth=True):
    headers = {"content-type": ctype}
    if auth:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

QUERY = lambda sql: json.dumps({"sql": sql}).encode()
REQUESTS = [
    ("GET", "/api/v1/datasets?limit=20", None),
    ("GET", "/api/v1/datasets?limit=20&q=roads", None),
    ("GET", "/api/v1/datasets?limit=20&sort=reads", None),
    ("GET", "/api/v1/datasets?limit=1000&schema=false", None),
    ("GET", "/api/v1/departments", None),
    ("GET", "/api/v1/datasets/transport/bus_stops", None),
    ("GET", "/api/v1/datasets/transport/bus_stops/rows?limit=10", None),
    ("POST", "/api/v1/query", QUERY("SELECT 1")),
    ("POST", "/api/v1/query", QUERY("SELECT district, count(*) FROM transport.bus_stops GROUP BY 1")),
    ("POST", "/api/v1/query", QUERY("SELECT count(*) FROM information_schema.tables")),
    ("GET", "/", None),
    ("GET", "/catalog/data.json", None),
]

def measure():
    out = {}
    for auth in (False, True):
        for method, path, body in REQUESTS:
            times, size = [], 0
            for _ in range(3 if path.startswith("/catalog/") else 9):
                t = time.perf_counter()
                status, answer = call(method, path, body, auth=auth)
                times.append(time.perf_counter() - t)
                if status == 400 and b"unknown parameter" in answer:
                    break  # a build before the parameter (DATAGATE_BIN=...): no figure
                assert status == 200, (path, status, answer[:300])
                size = len(answer)
            what = ("admin " if auth else "anonymous ") + method + " " + path
            if body:
                what += " " + json.loads(body)["sql"]
            if size:
                out[what] = (statistics.median(times) * 1000, size)
    return out

small = measure()
departments = [f"dept{i:02d}" for i in range(40)]
for d in departments:
    call("POST", "/api/v1/departments", json.dumps({"id": d, "name": d, "description": "d"}).encode())

# Twelve described columns, as a typical published table has (the sample catalog's have 6-15).
COLUMNS = [{"name": "id", "type": "int64", "description": "记录编号 row id"},
           {"name": "v", "type": "utf8", "description": "取值 value"}] + [
    {"name": f"c{k}", "type": t, "description": f"第{k}列 column {k} of the published table"}
    for k, t in enumerate(["utf8", "int64", "float64", "date32", "utf8", "boolean", "utf8",
                           "decimal128(12,2)", "timestamp(us)", "utf8"])]

ROWS = ("id,v," + ",".join(f"c{k}" for k in range(10)) + "\n" + "".join(
    f"{n},a,x,{n},1.5,2024-01-0{n},y,true,z,10.50,2024-01-01 08:00:00,w\n" for n in (1, 2))).encode()

def register(i):
    d, name = departments[i % len(departments)], f"ds{i:05d}"
    st, b = call("POST", "/api/v1/datasets", json.dumps({
        "department": d, "name": name,
        "title": f"Dataset {i} about roads" if i % 10 == 0 else f"Dataset {i}",
        "description": "A synthetic dataset of the catalog-scale benchmark",
        "access_level": ["open", "conditional", "shared"][i % 3], "license": "CC-BY-4.0",
        "tags": ["scale", f"t{i % 50}"], "update_frequency": "daily",
        "columns": COLUMNS}).encode())
    assert st == 201, b
    st, b = call("POST", f"/api/v1/datasets/{d}/{name}/versions?mode=replace",
                 ROWS, "text/csv")
    assert st == 201, b

t = time.perf_counter()
with cf.ThreadPoolExecutor(8) as ex:
    list(ex.map(register, range(n)))
print(f"registered {n} datasets with a version each in {time.perf_counter() - t:.1f} s")
large = measure()
print(f"| request | sample catalog: ms (bytes) | +{n:,} datasets: ms (bytes) | ratio |")
print("| --- | ---: | ---: | ---: |")
for what, (ms, size) in small.items():
    if what not in large:
        continue
    ms2, size2 = large[what]
    print(f"| {what} | {ms:.1f} ({size:,}) | {ms2:.1f} ({size2:,}) | {ms2 / ms:.1f}x |")
EOF
