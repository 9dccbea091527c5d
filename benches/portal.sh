#!/usr/bin/env bash
# Portal page times beside /healthz in the same run (release build, sample catalog, one
# keep-alive client on loopback, sequential requests so each figure is the server's time for one
# page, not queueing): the catalog page, a dataset page (which reads its preview through the
# rows API, audited), the SQL console with a query, and a signed-in department page. Prints
# p50/p99 per page and the ratio to /healthz; the target is < 50 ms for the catalog and dataset
# pages (issue "Portal").
#
#   benches/portal.sh [REQUESTS]       (default 300 per page; BENCH_PROFILE=debug measures the
#                                       debug binary the tests build: slower, so an upper bound)
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
N="${1:-300}"
python3 -c 'import requests' 2>/dev/null || pip install -q requests==2.34.2
bench_build
bench_work
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
start_server "$PORT" DATAGATE_TIERS__ANONYMOUS__REQUESTS=100000000 \
  DATAGATE_TIERS__ANONYMOUS__BURST=1000000 DATAGATE_TIERS__INTERNAL__REQUESTS=100000000 \
  DATAGATE_TIERS__INTERNAL__BURST=1000000
python3 - "$BASE" "$KEY" "$N" <<'PY'
import sys, time, requests
base, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
anon = requests.Session()
admin = requests.Session()
r = admin.post(base + "/signin", data={"key": key, "next": "/"}, headers={"Origin": base}, allow_redirects=False)
assert r.status_code == 303, r.status_code
pages = [
    ("/healthz", anon),
    ("/", anon),
    ("/?q=%E5%85%AC%E4%BA%A4&access_level=open&sort=reads", anon),
    ("/datasets/transport/bus_lines", anon),
    ("/datasets/market/market_entities", anon),
    ("/sql?q=SELECT+district%2C+count(*)+FROM+market.market_entities+GROUP+BY+district", anon),
    ("/publish/transport", admin),
]
def measure(path, s):
    for _ in range(20):
        s.get(base + path).raise_for_status()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = s.get(base + path)
        r.raise_for_status()
        _ = r.content
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]
results = [(p, *measure(p, s)) for p, s in pages]
h50 = results[0][1]
print(f"{'page':<90} {'p50 ms':>8} {'p99 ms':>8} {'p50 / healthz':>14}")
for p, p50, p99 in results:
    print(f"{p:<90} {p50:>8.2f} {p99:>8.2f} {p50 / h50:>13.1f}x")
for p, p50, p99 in results[1:5]:
    if p99 >= 50:
        print(f"TARGET MISSED: {p} p99 {p99:.1f} ms >= 50 ms")
PY
