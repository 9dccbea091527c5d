"""Times one SQL statement alternately in DuckDB (in-process, over the given Parquet files) and
through a running gateway (POST /api/v1/query, keep-alive, JSON), RUNS times after one warm-up of
each, and prints "duckdb_ms gateway_ms" (the medians). The two sides of a ratio share the same
minutes of a noisy host: one side's runs after the other's had put 0.94x-1.25x on an unchanged
aggregate (benches/RESULTS.md, runs 18 and 19).

    python3 benches/pair_query.py FILES_JSON RUNS PORT SQL

SQL names the dataset `market.entities`; DuckDB reads it as a view of FILES_JSON."""

import duckdb
import http.client
import json
import statistics
import sys
import time

files, runs, port, sql = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
con = duckdb.connect()
con.execute(f"CREATE VIEW entities AS SELECT * FROM read_parquet({files!r})")
duck_sql = sql.replace("market.entities", "entities")
c = http.client.HTTPConnection("127.0.0.1", port)
body = json.dumps({"sql": sql})


def duck():
    con.execute(duck_sql).fetchall()


def gateway():
    c.request("POST", "/api/v1/query", body, {"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    assert r.status == 200, data


def ms(f):
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1000


duck()
gateway()
times = [(ms(duck), ms(gateway)) for _ in range(runs)]
print(f"{statistics.median(d for d, _ in times):.2f} {statistics.median(g for _, g in times):.2f}")
