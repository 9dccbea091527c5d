//! The deny corpus: statements and parameters that must be refused with 400 before anything
//! runs, writing nothing and opening nothing outside the warehouse; and inputs built to crash
//! or starve the server, which it answers and survives.

use crate::harness::{Options, Server, admin_env};
use reqwest::Client;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// Statements refused before execution.
const DENIED: &[&str] = &[
    // DDL
    "CREATE TABLE t (a INT)",
    "CREATE TABLE t AS SELECT * FROM transport.bus_lines",
    "CREATE OR REPLACE TABLE transport.bus_lines AS SELECT 1",
    "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
    "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://bucket/x/'",
    "CREATE VIEW v AS SELECT * FROM transport.bus_lines",
    "CREATE SCHEMA evil",
    "CREATE FUNCTION f(a INT) RETURNS INT RETURN a",
    "DROP TABLE transport.bus_lines",
    "DROP VIEW v",
    "DROP SCHEMA transport CASCADE",
    "ALTER TABLE transport.bus_lines ADD COLUMN x INT",
    "TRUNCATE TABLE transport.bus_lines",
    // DML
    "INSERT INTO transport.bus_lines VALUES ('x')",
    "INSERT INTO transport.bus_lines SELECT * FROM transport.bus_lines",
    "UPDATE transport.bus_lines SET line_name = 'x'",
    "DELETE FROM transport.bus_lines",
    "MERGE INTO transport.bus_lines t USING transport.bus_lines s ON t.line_id = s.line_id WHEN MATCHED THEN DELETE",
    "COPY transport.bus_lines TO '/tmp/datagate-deny-copy.csv'",
    "COPY (SELECT * FROM transport.bus_lines) TO '/tmp/datagate-deny-copy.parquet' STORED AS PARQUET",
    "EXPLAIN INSERT INTO transport.bus_lines VALUES ('x')",
    "EXPLAIN COPY transport.bus_lines TO '/tmp/datagate-deny-copy.csv'",
    // Session and prepared statements
    "SET datafusion.execution.batch_size = 1",
    "SET datafusion.catalog.information_schema = false",
    "RESET datafusion.execution.batch_size",
    "PREPARE p AS SELECT * FROM transport.bus_lines",
    "EXECUTE p",
    "DEALLOCATE p",
    "SHOW ALL",
    "BEGIN",
    "COMMIT",
    // Plans with file statistics (raw minima and maxima)
    "EXPLAIN VERBOSE SELECT * FROM transport.bus_lines",
    "EXPLAIN ANALYZE VERBOSE SELECT * FROM transport.bus_lines",
    // Several statements
    "SELECT 1; SELECT 2",
    "SELECT * FROM transport.bus_lines; DROP TABLE transport.bus_lines",
    // Files and URLs as tables
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM 'file:///etc/passwd'",
    "SELECT * FROM 's3://bucket/data.parquet'",
    "SELECT * FROM 'https://example.com/data.csv'",
    "SELECT * FROM \"/etc/passwd\"",
    "SELECT * FROM transport.bus_lines JOIN '/etc/hosts' ON true",
    // Table functions
    "SELECT * FROM read_parquet('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM generate_series(1, 1000000000000)",
    "SELECT * FROM range(10)",
    "SELECT * FROM parquet_metadata('/etc/passwd')",
    "SELECT * FROM transport.bus_lines WHERE line_id IN (SELECT value FROM generate_series(1, 3))",
    // Unpublished, invisible or unknown datasets
    "SELECT * FROM justice.mediation_cases",
    "SELECT * FROM justice.legal_aid_cases",
    "SELECT count(*) FROM transport.bus_lines b JOIN justice.mediation_cases m ON true",
    "SELECT * FROM transport.gone",
    "SELECT * FROM bus_lines",
    "SELECT * FROM other_catalog.transport.bus_lines",
    "SELECT * FROM datafusion.public.t",
    // information_schema probes of what is not readable
    "SELECT * FROM datagate.information_schema.columns c JOIN justice.mediation_cases m ON true",
    "SHOW COLUMNS FROM justice.mediation_cases",
    "DESCRIBE justice.mediation_cases",
    // Malformed
    "",
    "SELEC 1",
    "SELECT * FROM",
];

fn files_under(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().contains("catalog.sqlite") {
                out.insert(
                    p.to_string_lossy().into_owned(),
                    e.metadata().map(|m| m.len()).unwrap_or(0),
                );
            }
        }
    }
    out
}

async fn post(c: &Client, s: &Server, body: Value) -> (u16, Value) {
    let r = c
        .post(s.url("/api/v1/query"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_deny_corpus_is_refused_before_anything_runs() {
    assert!(DENIED.len() >= 40);
    let s = Server::start(Options::default()).await;
    let c = Client::new();
    let before = files_under(&s.data_dir());
    for sql in DENIED {
        let (st, body) = post(&c, &s, json!({"sql": sql})).await;
        assert_eq!(st, 400, "{sql}: {body}");
        assert_eq!(body["status"], 400);
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{sql}"
        );
        // The same through GET.
        let r = c
            .get(s.url("/api/v1/query"))
            .query(&[("sql", sql)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "GET {sql}");
    }
    // Nothing written but the audit records of the refusals (which must be written).
    let outside_audit = |files: std::collections::BTreeMap<String, u64>| {
        files
            .into_iter()
            .filter(|(path, _)| !path.contains("/audit/"))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(
        outside_audit(files_under(&s.data_dir())),
        outside_audit(before),
        "nothing written"
    );
    for f in [
        "/tmp/datagate-deny-copy.csv",
        "/tmp/datagate-deny-copy.parquet",
    ] {
        assert!(!Path::new(f).exists(), "{f} written");
    }
    // The information schema lists only what the caller may read.
    let (st, body) = post(
        &c,
        &s,
        json!({"sql": "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables \
                       WHERE table_schema <> 'information_schema'"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let tables: Vec<&str> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["t"].as_str().unwrap())
        .collect();
    assert!(tables.contains(&"transport.bus_lines"), "{tables:?}");
    assert!(
        !tables.iter().any(|t| t.starts_with("justice.")),
        "{tables:?}"
    );
    // The server still serves.
    let (st, _) = post(
        &c,
        &s,
        json!({"sql": "SELECT count(*) FROM transport.bus_lines"}),
    )
    .await;
    assert_eq!(st, 200);
}

/// Functions that would build values of any size outside the memory limit (arrays) are not in
/// the engine, nor the hashing ones: a call is a 400 naming the function, not a gateway
/// allocating gigabytes. `array_agg`, an aggregate accounted like any other, answers.
#[tokio::test]
async fn functions_left_out_of_the_engine_are_400s_naming_them() {
    let s = Server::start(Options::default()).await;
    let c = Client::new();
    for (sql, named) in [
        ("SELECT unnest(range(1, 1000000000))", "range"),
        ("SELECT array_repeat('x', 1000000000)", "array_repeat"),
        ("SELECT make_array(1, 2)", "make_array"),
        (
            "SELECT string_to_array(line_name, ' ') FROM transport.bus_lines",
            "string_to_array",
        ),
        ("SELECT [1, 2]", "array literal"),
        ("SELECT md5(line_id) FROM transport.bus_lines", "md5"),
        ("SELECT sha256('x')", "sha256"),
    ] {
        let (st, body) = post(&c, &s, json!({ "sql": sql })).await;
        assert_eq!(st, 400, "{sql}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(named), "{sql}: {body}");
        assert!(!detail.contains("feature"), "{sql}: {body}");
    }
    let (st, body) = post(
        &c,
        &s,
        json!({"sql": "SELECT array_agg(line_id ORDER BY line_id) AS ids FROM transport.bus_lines"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["rows"][0]["ids"].as_array().map(Vec::len), Some(1200));
}

#[tokio::test]
async fn injection_through_rows_parameters_is_refused() {
    let s = Server::start(Options::default()).await;
    let c = Client::new();
    let rows = s.url("/api/v1/datasets/transport/bus_lines/rows");
    for (param, value) in [
        ("where", "1=1; DROP TABLE transport.bus_lines"),
        ("where", "1=1 UNION SELECT * FROM justice.mediation_cases"),
        (
            "where",
            "line_id IN (SELECT case_no FROM justice.mediation_cases)",
        ),
        ("where", "EXISTS (SELECT 1 FROM justice.mediation_cases)"),
        ("where", "read_parquet('/etc/passwd') IS NULL"),
        (
            "where",
            "line_id = 'x' UNION ALL SELECT * FROM justice.mediation_cases --",
        ),
        ("where", "line_id = 'x' ) OR (1=1"),
        ("where", "justice.mediation_cases.case_no = 'x'"),
        ("where", "sum(stop_count) > 1"),
        ("where", "stop_count > 1 ORDER BY 1"),
        ("select", "line_id; DROP TABLE transport.bus_lines"),
        ("select", "line_id, (SELECT 1)"),
        ("select", "*"),
        ("select", "count(*)"),
        ("order", "line_id; DROP TABLE x"),
        ("order", "(SELECT 1)"),
        ("order", "line_id desc, random()"),
        ("limit", "10; DROP TABLE x"),
        ("limit", "1e9"),
        ("offset", "0 OR 1=1"),
        ("version", "1 OR 1=1"),
        ("format", "json; DROP"),
    ] {
        let r = c.get(&rows).query(&[(param, value)]).send().await.unwrap();
        let st = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(st, 400, "{param}={value}: {body}");
        assert_eq!(body["parameter"], param, "{param}={value}: {body}");
    }
    // A string that looks like SQL is just a value.
    let r = c
        .get(&rows)
        .query(&[("where", "line_name = 'x''; DROP TABLE y; --'")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["row_count"], 0);
}

#[tokio::test]
async fn deep_and_huge_inputs_are_400s_not_crashes() {
    let s = Server::start(Options::default()).await;
    let c = Client::new();
    let deep_parens = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let long_chain = format!("SELECT {}", vec!["1"; 10_000].join(" + "));
    let deep_not = format!("SELECT {}true", "NOT ".repeat(10_000));
    let deep_case = format!(
        "SELECT {} 1 {}",
        "CASE WHEN true THEN ".repeat(5_000),
        " END".repeat(5_000)
    );
    let deep_fn = format!("SELECT {}1{}", "abs(".repeat(10_000), ")".repeat(10_000));
    let deep_subquery = format!(
        "SELECT * FROM {}transport.bus_lines{}",
        "(SELECT * FROM ".repeat(3_000),
        ") t".repeat(3_000)
    );
    let huge = format!("SELECT '{}'", "x".repeat(1_000_000));
    for sql in [
        deep_parens,
        long_chain,
        deep_not,
        deep_case,
        deep_fn,
        deep_subquery,
        huge,
    ] {
        let (st, body) = post(&c, &s, json!({"sql": sql})).await;
        assert_eq!(st, 400, "{}: {body}", &sql[..40]);
    }
    let rows = s.url("/api/v1/datasets/transport/bus_lines/rows");
    for w in [
        format!("{}stop_count = 1{}", "(".repeat(10_000), ")".repeat(10_000)),
        vec!["stop_count = 1"; 2_000].join(" OR "),
        format!("{}stop_count = 1", "NOT ".repeat(10_000)),
    ] {
        let r = c
            .post(s.url("/api/v1/query"))
            .json(&json!({"sql": "SELECT 1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Long `where` values travel in the query string of a GET.
        let r = c.get(&rows).query(&[("where", &w)]).send().await.unwrap();
        assert!(
            r.status() == 400 || r.status() == 414 || r.status() == 431,
            "{}",
            r.status()
        );
    }
    let (st, _) = post(&c, &s, json!({"sql": "SELECT 1"})).await;
    assert_eq!(st, 200, "still serving");
}

#[tokio::test]
async fn integer_overflow_is_a_400_not_a_wrapped_number() {
    let s = Server::start(Options::default()).await;
    let c = Client::new();
    for (sql, names) in [
        (
            "SELECT 9223372036854775807 + 1 AS n",
            "9223372036854775807 + 1",
        ),
        (
            "SELECT sum(CAST(9000000000000000000 AS BIGINT)) AS n FROM transport.bus_stops",
            "sum(",
        ),
        (
            "SELECT operator, sum(CAST(stop_count AS BIGINT) + 4611686018427387904) AS n \
             FROM transport.bus_lines GROUP BY operator",
            "sum(",
        ),
        // A decimal total past 38 digits (DataFusion's wrapped to a negative number).
        (
            "SELECT sum(CAST(99999999999999999999999999999999999999 AS DECIMAL(38,0))) AS n \
             FROM transport.bus_lines",
            "sum(",
        ),
    ] {
        let (st, body) = post(&c, &s, json!({"sql": sql})).await;
        assert_eq!(st, 400, "{sql}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("Overflow happened on: {names}")),
            "{sql}: {body}"
        );
    }
    // A total that fits keeps its type: a JSON integer, exact.
    let (st, body) = post(
        &c,
        &s,
        json!({"sql": "SELECT sum(CAST(4000000000000000000 AS BIGINT)) AS n FROM (SELECT 1 FROM transport.bus_lines LIMIT 2)"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body["rows"][0]["n"],
        json!(8000000000000000000u64),
        "{body}"
    );
    // Integer literals beyond 64 bits are exact decimals (DataFusion rounded them to a double:
    // the account number below came back as 62220212345678900000).
    let r = c
        .post(s.url("/api/v1/query"))
        .json(&json!({"sql": "SELECT 62220212345678901234 AS account, 62220212345678901234 + 1 AS next"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The text as sent: a JSON reader of doubles would round it again.
    let raw = r.text().await.unwrap();
    assert!(raw.contains(r#""type":"decimal128(38,0)""#), "{raw}");
    assert!(
        raw.contains(r#""account":62220212345678901234,"next":62220212345678901235"#),
        "{raw}"
    );
}

/// SQL's intervals (months, days, nanoseconds) have no Parquet type: a Parquet answer holding
/// one is a 400 naming the column, small or streamed (arrow's writer failed it as a 500).
#[tokio::test]
async fn types_parquet_cannot_hold_are_400s_naming_the_column() {
    let s = Server::start(Options {
        env: admin_env(&[]),
        ..Options::default()
    })
    .await;
    let c = Client::new();
    for sql in [
        "SELECT 1 AS n, interval '1 day' AS i",
        "SELECT uscc, interval '1 day' AS i FROM market.market_entities",
    ] {
        let (st, body) = post(&c, &s, json!({"sql": sql, "format": "parquet"})).await;
        assert_eq!(st, 400, "{sql}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("column \"i\" holds interval") && detail.contains("format=arrow"),
            "{sql}: {body}"
        );
        assert_eq!(body["parameter"], "format", "{body}");
        let (st, body) = post(&c, &s, json!({"sql": sql, "format": "arrow"})).await;
        assert_eq!(st, 200, "{sql}: {body}");
    }
    assert!(!s.log_text().contains("ERROR"), "{}", s.log_text());
}
