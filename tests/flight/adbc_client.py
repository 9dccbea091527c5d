"""Flight SQL through the real ADBC driver (adbc-driver-flightsql, Go), against a running gateway.

Run by `tests/it/flight.rs`, which starts the server and passes its addresses and keys in the
environment. Every check compares what Flight SQL answers with what the HTTP API answers for the
same key, so both front doors are held to one behaviour. Exits non-zero on the first failure.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.ipc

FLIGHT = os.environ["FLIGHT_URI"]
HTTP = os.environ["HTTP_BASE"]
ADMIN = os.environ["ADMIN_KEY"]
CONSUMER = os.environ["CONSUMER_KEY"]
OUTSIDER = os.environ["OUTSIDER_KEY"]  # a publisher of `market`
PID = int(os.environ["SERVER_PID"])


def http(method, path, key, body=None):
    req = urllib.request.Request(HTTP + path, method=method)
    req.add_header("Authorization", "Bearer " + key)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data=data, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_arrow(key, sql, params=None):
    status, body = http("POST", "/api/v1/query", key, {"sql": sql, "format": "arrow", "params": params or []})
    assert status == 200, (status, body[:300])
    return pa.ipc.open_stream(body).read_all()


def bearer(key):
    return flightsql.connect(FLIGHT, db_kwargs={"adbc.flight.sql.authorization_header": "Bearer " + key},
                             autocommit=True)


def password(key):
    return flightsql.connect(FLIGHT, db_kwargs={"username": "any-name", "password": key}, autocommit=True)


def query(conn, sql, params=None):
    with conn.cursor() as cur:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, params)
        return cur.fetch_arrow_table()


def error_of(conn, sql):
    try:
        query(conn, sql)
    except adbc_driver_manager.Error as e:
        return str(e)
    raise AssertionError(f"expected an error for {sql!r}")


def readable_tables(conn):
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    found = set()
    for catalog in objects:
        assert catalog["catalog_name"] == "datagate", catalog["catalog_name"]
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                found.add(schema["db_schema_name"] + "." + table["table_name"])
    return found


def http_readable(key):
    """Datasets the key can read over HTTP: every listed dataset whose rows it may fetch."""
    status, body = http("GET", "/api/v1/datasets?limit=1000", key)
    assert status == 200
    out = set()
    for d in json.loads(body)["datasets"]:
        st, _ = http("GET", f"/api/v1/datasets/{d['department']}/{d['name']}/rows?limit=1", key)
        if st == 200:
            out.add(d["department"] + "." + d["name"])
    return out


def audit_events(request_ids=None):
    status, body = http("GET", "/api/v1/audit/events?limit=1000&format=ndjson", ADMIN)
    assert status == 200, (status, body[:300])
    events = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    return events


def rss_peak_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def check(name, fn):
    started = time.time()
    fn()
    print(f"ok  {name} ({time.time() - started:.1f} s)", flush=True)


def connects_with_bearer_and_password():
    for conn in (bearer(ADMIN), password(ADMIN), password(CONSUMER)):
        t = query(conn, "SELECT 1 AS one")
        assert t.column("one").to_pylist() == [1]
        conn.close()
    try:
        password("dg_nobody_" + "0" * 64)
    except adbc_driver_manager.Error as e:
        assert "UNAUTHENTICATED" in str(e).upper(), str(e)
    else:
        raise AssertionError("a bad key connected")


def get_objects_lists_exactly_the_readable_tables():
    for key in (CONSUMER, OUTSIDER, ADMIN):
        with bearer(key) as conn:
            assert readable_tables(conn) == http_readable(key), key[:10]
    with bearer(CONSUMER) as conn:
        tables = readable_tables(conn)
        assert "justice.legal_aid_cases" not in tables and "justice.mediation_cases" not in tables


def results_equal_the_http_arrow_export():
    sqls = [
        "SELECT * FROM transport.bus_lines ORDER BY line_id",
        "SELECT district, count(*) AS n, avg(registered_capital) AS avg_capital "
        "FROM market.market_entities GROUP BY district ORDER BY district",
        "SELECT * FROM govservice.public_facilities WHERE false",
    ]
    with bearer(CONSUMER) as conn:
        for sql in sqls:
            flight = query(conn, sql)
            web = http_arrow(CONSUMER, sql)
            assert flight.schema.equals(web.schema), (sql, flight.schema, web.schema)
            assert flight.equals(web), sql
            assert flight.num_rows == web.num_rows


def parameters_bind_like_http_params():
    sql = "SELECT line_id, line_name, fare FROM transport.bus_lines WHERE stop_count > $1 AND night_line = $2 ORDER BY line_id"
    with bearer(CONSUMER) as conn:
        flight = query(conn, sql, (20, False))
        web = http_arrow(CONSUMER, sql, [20, False])
        assert flight.num_rows > 0
        assert flight.equals(web), (flight.num_rows, web.num_rows)
        # The same prepared statement with other values.
        with conn.cursor() as cur:
            cur.execute(sql, (40, True))
            again = cur.fetch_arrow_table()
        assert again.equals(http_arrow(CONSUMER, sql, [40, True]))
        # `?` placeholders, as JDBC and BI tools write them, bind by position too.
        marks = sql.replace("$1", "?").replace("$2", "?")
        assert query(conn, marks, (20, False)).equals(flight)


def masked_values_are_masked():
    sql = "SELECT * FROM justice.mediation_cases ORDER BY case_no LIMIT 50"
    with bearer(OUTSIDER) as conn:
        flight = query(conn, sql)
    assert "party_a_phone" not in flight.schema.names, flight.schema
    names = flight.column("party_a_name").to_pylist()
    assert names and all(n is None or "*" in n for n in names), names[:5]
    assert flight.equals(http_arrow(OUTSIDER, sql))
    with bearer(ADMIN) as conn:
        own = query(conn, sql)
    assert "party_a_phone" in own.schema.names
    assert any("*" not in (n or "*") for n in own.column("party_a_name").to_pylist())


def unseen_datasets_are_not_found_like_missing_ones():
    with bearer(CONSUMER) as conn:
        unseen = error_of(conn, "SELECT * FROM justice.legal_aid_cases")
        missing = error_of(conn, "SELECT * FROM justice.no_such_dataset")
    assert "not found" in unseen.lower(), unseen
    assert unseen.replace("legal_aid_cases", "X") == missing.replace("no_such_dataset", "X"), (unseen, missing)


def refused_statements_raise_with_a_message():
    with bearer(ADMIN) as conn:
        for sql in ["DELETE FROM transport.bus_lines", "CREATE TABLE t AS SELECT 1",
                    "COPY transport.bus_lines TO '/tmp/x.csv'"]:
            message = error_of(conn, sql)
            assert "INVALID_ARGUMENT" in message.upper(), message
            assert "read-only" in message or "refused" in message, message
        message = error_of(conn, "SELECT line_id FROM transport.bus_lines WHERE WHERE")
        assert "INVALID_ARGUMENT" in message.upper() and "line" in message, message


def one_audit_pair_per_statement():
    marker = f"audit-probe-{time.time_ns()}"
    sql = f"SELECT line_id, '{marker}' AS m FROM transport.bus_lines"
    with bearer(CONSUMER) as conn:
        rows = query(conn, sql).num_rows
    deadline = time.time() + 15
    while True:
        events = [e for e in audit_events() if marker in (e.get("query_text") or "")]
        kinds = sorted(e["kind"] for e in events)
        if kinds == ["begin", "end"] or time.time() > deadline:
            break
        time.sleep(0.2)
    assert kinds == ["begin", "end"], kinds
    begin, end = sorted(events, key=lambda e: e["kind"])
    assert begin["request_id"] == end["request_id"] and begin["request_id"]
    assert begin["method"] == "GRPC" and begin["action"] == "data.query", begin
    assert end["outcome"] == "completed" and end["rows_returned"] == rows, end
    assert end["bytes_returned"] > 0
    assert begin["datasets"] == "transport.bus_lines@1", begin["datasets"]


BIG = ("SELECT m.uscc, m.entity_name, f.facility_id, f.name AS facility FROM market.market_entities m "
       "CROSS JOIN govservice.public_facilities f")


def ten_million_rows_stream_in_bounded_memory():
    before = rss_peak_kib()
    rows = 0
    with bearer(ADMIN) as conn, conn.cursor() as cur:
        cur.execute(BIG)
        reader = cur.fetch_record_batch()
        for batch in reader:
            rows += batch.num_rows
    assert rows == 10_000_000, rows
    peak = rss_peak_kib()
    print(f"    10M rows; server peak RSS {before // 1024} -> {peak // 1024} MiB", flush=True)
    assert peak < 256 * 1024, f"server peak RSS {peak // 1024} MiB"


def cancelling_the_cursor_stops_the_query():
    marker = f"cancel-probe-{time.time_ns()}"
    conn = bearer(ADMIN)
    cur = conn.cursor()
    cur.execute(BIG.replace("SELECT m.uscc", f"SELECT '{marker}' AS probe, m.uscc"))
    reader = cur.fetch_record_batch()
    next(iter(reader))
    reader.close()
    cur.close()
    conn.close()
    deadline = time.time() + 20
    while time.time() < deadline:
        ends = [e for e in audit_events() if marker in (e.get("query_text") or "") and e["kind"] == "end"]
        if ends:
            assert ends[0]["outcome"] == "cancelled", ends[0]
            assert ends[0]["rows_returned"] < 10_000_000, ends[0]
            return
        time.sleep(0.2)
    raise AssertionError("no end record for the cancelled query")


CHECKS = [
    connects_with_bearer_and_password,
    get_objects_lists_exactly_the_readable_tables,
    results_equal_the_http_arrow_export,
    parameters_bind_like_http_params,
    masked_values_are_masked,
    unseen_datasets_are_not_found_like_missing_ones,
    refused_statements_raise_with_a_message,
    one_audit_pair_per_statement,
    ten_million_rows_stream_in_bounded_memory,
    cancelling_the_cursor_stops_the_query,
]

if __name__ == "__main__":
    only = sys.argv[1:]
    for check_fn in CHECKS:
        if not only or check_fn.__name__ in only:
            check(check_fn.__name__, check_fn)
