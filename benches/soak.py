"""Mixed traffic against a running gateway for a while, with a report every minute.

Run by benches/soak.sh, which starts the server; see there. Traffic, from WORKERS threads:
catalog listings and details, rows pages with filters and paging, read-only SQL, whole
exports (CSV, Parquet), CSV uploads (new versions of a scratch dataset), and refusals (bad
keys, forbidden operations, bad SQL, unknown datasets). Every minute one line: requests,
5xx answers (must stay 0), p50/p99 latency of the minute, the server's RSS and open file
descriptors, and the audit log's size on disk.
"""

import json
import os
import random
import sys
import threading
import time

import requests

BASE, ADMIN, PID, AUDIT_DIR = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
MINUTES = float(sys.argv[5])
WORKERS = int(os.environ.get("WORKERS", "8"))
REPORT = os.environ.get("REPORT", "")
# To find what a drift comes from: ONLY=rows,sql keeps those kinds of traffic, SKIP=upload drops them.
ONLY = {k for k in os.environ.get("ONLY", "").split(",") if k}
SKIP = {k for k in os.environ.get("SKIP", "").split(",") if k}

H = {"Authorization": f"Bearer {ADMIN}"}


def setup():
    r = requests.post(f"{BASE}/api/v1/keys", headers=H,
                      json={"name": "soak publisher", "role": "publisher", "department": "transport"})
    r.raise_for_status()
    publisher = r.json()["key"]
    r = requests.post(f"{BASE}/api/v1/keys", headers=H, json={"name": "soak consumer", "role": "consumer"})
    r.raise_for_status()
    consumer = r.json()["key"]
    body = {
        "department": "transport", "name": "soak_counts", "title": "soak counts",
        "description": "scratch dataset of the soak run", "access_level": "open",
        "license": "CC-BY-4.0", "update_frequency": "hourly", "tags": ["soak"],
        "contact": {"name": "soak", "email": "soak@example.org"}, "primary_key": ["id"],
        "columns": [
            {"name": "id", "type": "int64"}, {"name": "district", "type": "utf8"},
            {"name": "count", "type": "int64"},
        ],
    }
    r = requests.post(f"{BASE}/api/v1/datasets", headers={"Authorization": f"Bearer {publisher}"}, json=body)
    if r.status_code not in (201, 409):
        raise SystemExit(f"register failed: {r.status_code} {r.text}")
    return publisher, consumer


def operations(publisher, consumer):
    pub = {"Authorization": f"Bearer {publisher}"}
    con = {"Authorization": f"Bearer {consumer}"}
    seq = [0]

    def upload(s):
        seq[0] += 1
        n = random.randint(100, 2000)
        lines = ["id,district,count"] + [f"{i},d{i % 13},{random.randint(0, 999)}" for i in range(n)]
        return s.post(f"{BASE}/api/v1/datasets/transport/soak_counts/versions?mode=replace",
                      headers={**pub, "Content-Type": "text/csv"}, data="\n".join(lines).encode())

    def rows_paged(s):
        r = s.get(f"{BASE}/api/v1/datasets/transport/bus_lines/rows?limit=50")
        if r.ok and r.json().get("next"):
            r = s.get(r.json()["next"])
        return r

    ops = [
        # (weight, name, function)
        (20, "catalog", lambda s: s.get(f"{BASE}/api/v1/datasets?limit=20&sort=reads")),
        (10, "detail", lambda s: s.get(f"{BASE}/api/v1/datasets/environment/air_quality")),
        (25, "rows", rows_paged),
        (10, "rows-where", lambda s: s.get(
            f"{BASE}/api/v1/datasets/environment/air_quality/rows",
            params={"where": "aqi > 100 and district = '东城区'", "limit": 20})),
        (10, "sql", lambda s: s.post(f"{BASE}/api/v1/query", headers=con, json={
            "sql": "select district, count(*) n, avg(aqi) a from environment.air_quality group by district order by n desc"})),
        (4, "export-csv", lambda s: s.get(f"{BASE}/api/v1/datasets/environment/air_quality/export?format=csv",
                                          headers={"Accept-Encoding": "gzip, deflate, zstd"})),
        (3, "export-parquet", lambda s: s.get(f"{BASE}/api/v1/datasets/transport/bus_lines/export?format=parquet")),
        (2, "upload", upload),
        (4, "bad-key", lambda s: s.get(f"{BASE}/api/v1/me", headers={"Authorization": "Bearer dg_nope_00"})),
        (3, "forbidden", lambda s: s.get(f"{BASE}/api/v1/audit/events", headers=con)),
        (4, "bad-sql", lambda s: s.get(f"{BASE}/api/v1/query", params={"sql": "select * from nowhere.nothing"})),
        (3, "unknown", lambda s: s.get(f"{BASE}/api/v1/datasets/nobody/nothing/rows")),
        (2, "audit", lambda s: s.get(f"{BASE}/api/v1/audit/events?limit=50", headers=H)),
        (5, "anon", lambda s: s.get(f"{BASE}/api/v1/datasets/transport/bus_lines/rows?limit=10",
                                    headers={"Authorization": None})),
    ]
    return [op for op in ops if (not ONLY or op[1] in ONLY) and op[1] not in SKIP]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.lat = []
        self.count = 0
        self.errors5xx = 0
        self.failures = 0
        self.by_status = {}

    def add(self, secs, status):
        with self.lock:
            self.lat.append(secs)
            self.count += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1
            if status >= 500 and status != 503:
                self.errors5xx += 1
            if status == 0:
                self.failures += 1

    def take(self):
        with self.lock:
            out = (self.lat, self.count, self.errors5xx, self.failures, self.by_status)
            self.lat, self.count, self.errors5xx, self.failures, self.by_status = [], 0, 0, 0, {}
            return out


def worker(ops, stats, stop, consumer):
    # Reads go out with a consumer key (a generous tier, so they are served); the "anon"
    # operations drop it and meet the anonymous tier's shipped limits.
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {consumer}"
    weights = [w for w, _, _ in ops]
    while not stop.is_set():
        _, _, fn = random.choices(ops, weights)[0]
        t = time.perf_counter()
        try:
            r = fn(s)
            _ = r.content
            status = r.status_code
        except requests.RequestException:
            status = 0
        stats.add(time.perf_counter() - t, status)


def rss_kib(field="VmRSS"):
    """The server's resident memory in KiB: VmRSS (all), RssAnon (heap, stacks) or RssFile
    (mapped files: the binary, and what the kernel counts of files it maps)."""
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def caches_mib():
    """What the server's bounded caches hold (its /metrics): DataFusion's Parquet metadata,
    file statistics and listings caches, the page cache, and the audit log's decoded records
    of segments not converted yet."""
    try:
        text = requests.get(f"{BASE}/metrics", timeout=10).text
    except requests.RequestException:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("datagate_query_cache_bytes{", "datagate_page_cache_bytes ",
                            "datagate_audit_decoded_bytes ")):
            total += float(line.rsplit(" ", 1)[1])
    return total / 2**20


def fds():
    return len(os.listdir(f"/proc/{PID}/fd"))


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def pct(values, q):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    publisher, consumer = setup()
    ops = operations(publisher, consumer)
    stats, stop = Stats(), threading.Event()
    threads = [threading.Thread(target=worker, args=(ops, stats, stop, consumer), daemon=True)
               for _ in range(WORKERS)]
    for t in threads:
        t.start()
    rows = []
    print(f"{'min':>4} {'requests':>9} {'req/s':>7} {'5xx':>4} {'fail':>4} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'RSS MiB':>8} {'anon MiB':>8} {'cache MiB':>9} {'fds':>5} {'audit MiB':>9}  statuses", flush=True)
    start = time.time()
    minute = 0
    while time.time() - start < MINUTES * 60:
        time.sleep(max(0.0, start + (minute + 1) * 60 - time.time()))
        minute += 1
        lat, count, e5, fail, by_status = stats.take()
        row = {
            "minute": minute, "requests": count, "rps": count / 60, "errors_5xx": e5, "failures": fail,
            "p50_ms": pct(lat, 0.50) * 1000, "p99_ms": pct(lat, 0.99) * 1000,
            "rss_mib": rss_kib() / 1024, "anon_mib": rss_kib("RssAnon") / 1024, "cache_mib": caches_mib(), "fds": fds(), "audit_mib": dir_bytes(AUDIT_DIR) / 2**20,
            "statuses": by_status,
        }
        rows.append(row)
        print(f"{minute:>4} {count:>9} {row['rps']:>7.0f} {e5:>4} {fail:>4} {row['p50_ms']:>8.1f} "
              f"{row['p99_ms']:>8.1f} {row['rss_mib']:>8.1f} {row['anon_mib']:>8.1f} {row['cache_mib']:>9.1f} {row['fds']:>5} {row['audit_mib']:>9.1f}  "
              + " ".join(f"{k}:{v}" for k, v in sorted(by_status.items())), flush=True)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    # Drift after warm-up: the second half's mean against the first half's (from minute 3 on).
    settled = rows[2:] if len(rows) > 4 else rows
    half = len(settled) // 2
    first, second = settled[:half] or settled, settled[half:] or settled

    def mean(rs, k):
        return sum(r[k] for r in rs) / len(rs)

    summary = {
        "minutes": len(rows),
        "requests": sum(r["requests"] for r in rows),
        "errors_5xx": sum(r["errors_5xx"] for r in rows),
        "failures": sum(r["failures"] for r in rows),
        "rss_mib_first_half": mean(first, "rss_mib"), "rss_mib_second_half": mean(second, "rss_mib"),
        "rss_mib_max": max(r["rss_mib"] for r in rows),
        # What is left when the bounded caches are taken out: a leak shows here.
        "rss_less_caches_mib_first_half": mean(first, "rss_mib") - mean(first, "cache_mib"),
        "rss_less_caches_mib_second_half": mean(second, "rss_mib") - mean(second, "cache_mib"),
        "fds_first_half": mean(first, "fds"), "fds_second_half": mean(second, "fds"),
        "p99_ms_first_half": mean(first, "p99_ms"), "p99_ms_second_half": mean(second, "p99_ms"),
    }
    print(json.dumps(summary, indent=2))
    if REPORT:
        with open(REPORT, "w") as f:
            json.dump({"minutes": rows, "summary": summary}, f, indent=2)
    if summary["errors_5xx"] or summary["failures"]:
        print("FAIL: 5xx answers or failed requests during the soak", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
