//! The audit log at scale (issue "Audit at city scale"): sealed segments read from their
//! Parquet copy, newest-first events by seek, usage analytics and public counters, and
//! crash-safe conversion — each checked against the JSON lines, the evidence, read directly.

use crate::harness::{ADMIN, Options, Server, admin_env as env, new_key, run};
use reqwest::Client;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// Every record of the log in `audit_dir`, from the JSON segments.
fn json_records(audit_dir: &Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(audit_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("segment-") && n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            std::fs::read_to_string(audit_dir.join(n))
                .unwrap()
                // The open segment's records end where the zeroes laid ahead begin.
                .split('\0')
                .next()
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn count_files(dir: &Path, prefix: &str, suffix: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(prefix) && n.ends_with(suffix)
            })
            .count()
    })
}

/// Waits until every sealed segment has its Parquet copy.
async fn converted(audit_dir: &Path) -> usize {
    for _ in 0..600 {
        let segments = count_files(audit_dir, "segment-", ".jsonl");
        let markers = count_files(&audit_dir.join("columnar"), "segment-", ".json");
        if segments > 1 && markers == segments - 1 {
            return markers;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sealed segments were not converted");
}

/// Every record of principal `id` up to `head`, newest first, paged 4 at a time by seek.
async fn principal_pages(s: &Server, auditor: &str, id: &str, head: u64) -> Vec<Value> {
    let mut got = Vec::new();
    let mut url = s.url(&format!(
        "/api/v1/audit/events?principal={id}&limit=4&before={}",
        head + 1
    ));
    loop {
        let page: Value = s.get_json_as(auditor, &url).await;
        for r in page["rows"].as_array().unwrap() {
            assert_eq!(r["key_id"], id);
            got.push(r.clone());
        }
        match page["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    got
}

/// A listed record equals its JSON line, member by member.
fn same_record(row: &Value, line: &Value) {
    for k in [
        "seq",
        "kind",
        "event_id",
        "request_id",
        "key_id",
        "role",
        "department",
        "tier",
        "client_ip",
        "user_agent",
        "method",
        "path",
        "action",
        "query_text",
        "query_sha256",
        "status",
        "error",
        "rows_returned",
        "bytes_returned",
        "duration_ms",
        "outcome",
        "count",
        "prev_hash",
        "hash",
    ] {
        assert_eq!(row[k], line[k], "{k} of seq {}", line["seq"]);
    }
    let ts = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(ts(&row["ts"]), ts(&line["ts"]), "ts of seq {}", line["seq"]);
}

/// A result's rows as `key column -> number column`.
fn keyed(result: &Value, key: &str, number: &str) -> BTreeMap<String, u64> {
    result["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[key].as_str().unwrap().to_string(),
                r[number].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn sql(c: &Client, s: &Server, key: &str, sql: &str) -> Value {
    let r = c
        .post(s.url("/api/v1/audit/query"))
        .bearer_auth(key)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{sql}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_are_served_from_parquet_paged_by_seek_and_counted() {
    let s = Server::start(Options {
        env: env(&[("DATAGATE_AUDIT__SEGMENT_MAX_BYTES", "8192")]),
        ..Default::default()
    })
    .await;
    let c = Client::new();
    let auditor = new_key(&s, "auditor", Some("standard")).await;
    let readers = [
        new_key(&s, "consumer", Some("standard")).await,
        new_key(&s, "consumer", Some("standard")).await,
    ];
    for i in 0..30 {
        let key = &readers[i % 2];
        let path = match i % 5 {
            0 => "/api/v1/datasets/transport/bus_lines/rows?limit=2",
            1 => "/api/v1/datasets/environment/air_quality/rows?limit=1",
            2 => "/api/v1/datasets/transport/bus_lines/export?format=csv",
            3 => "/api/v1/datasets/transport/nothing_here/rows",
            _ if i % 10 == 4 => "/api/v1/datasets",
            _ => "/api/v1/datasets/transport/bus_lines/rows?limit=1&offset=3",
        };
        let r = c.get(s.url(path)).bearer_auth(key).send().await.unwrap();
        let _ = r.bytes().await.unwrap();
    }
    let audit_dir = s.data_dir().join("audit");
    let converted = converted(&audit_dir).await;
    assert!(converted >= 3, "several sealed segments: {converted}");
    // An `end` is written once its response has left: wait for the last ones.
    let mut truth = json_records(&audit_dir);
    for _ in 0..100 {
        let kinds = |k: &str| truth.iter().filter(|r| r["kind"] == k).count();
        if kinds("begin") == kinds("end") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        truth = json_records(&audit_dir);
    }
    // Pages list durable records: a detached record (an `end`) is in the file up to
    // `detached_sync_delay` (10 ms) before its fsync makes it the log's head. Read the truth
    // again once that has passed, so its newest record is durable too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    truth = json_records(&audit_dir);
    let head = truth.last().unwrap()["seq"].as_u64().unwrap();

    // Newest first, by seek: every record up to the head exactly once, in order.
    let mut url = s.url(&format!("/api/v1/audit/events?limit=7&before={}", head + 1));
    let mut seen = Vec::new();
    loop {
        let page: Value = s.get_json_as(&auditor, &url).await;
        let rows = page["rows"].as_array().unwrap();
        assert!(rows.len() <= 7);
        seen.extend(rows.iter().map(|r| r["seq"].as_u64().unwrap()));
        match page["next"].as_str() {
            Some(next) => {
                assert!(next.contains("before="), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    let want: Vec<u64> = (1..=head).rev().collect();
    assert_eq!(seen, want);

    // A filtered page: one reader's records, newest first, equal to the JSON lines'.
    let id = truth
        .iter()
        .find(|r| {
            r["key_id"] != "anonymous" && r["action"] == "data.rows" && r["key_id"] != "admin"
        })
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut want: Vec<u64> = truth
        .iter()
        .filter(|r| r["key_id"] == id.as_str())
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    want.reverse();
    let by_seq: BTreeMap<u64, &Value> = truth
        .iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r))
        .collect();
    let rows = principal_pages(&s, &auditor, &id, head).await;
    let got: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, want);
    // Whole records, equal to their lines (converted ones are read back by seq).
    for r in &rows {
        same_record(r, by_seq[&r["seq"].as_u64().unwrap()]);
    }
    // `offset` skips within the filtered records.
    let page: Value = s
        .get_json_as(
            &auditor,
            &format!("/api/v1/audit/events?principal={id}&limit=3&offset=2"),
        )
        .await;
    let seqs: Vec<u64> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, want[2..5]);

    // SQL sees every record once, whichever side (Parquet or JSON) it comes from.
    let r = sql(
        &c,
        &s,
        &auditor,
        &format!("SELECT count(*) AS n, count(DISTINCT seq) AS d, sum(bytes_returned) AS b FROM audit.events WHERE seq <= {head}"),
    )
    .await;
    let bytes: u64 = truth
        .iter()
        .map(|r| r["bytes_returned"].as_u64().unwrap())
        .sum();
    assert_eq!(r["rows"][0]["n"], head, "{r}");
    assert_eq!(r["rows"][0]["d"], head, "{r}");
    assert_eq!(r["rows"][0]["b"], bytes, "{r}");

    // Usage per dataset from the log equals the begins and ends in the JSON lines.
    let mut want: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for r in &truth {
        let data =
            ["data.rows", "data.query", "data.export"].contains(&r["action"].as_str().unwrap());
        if !data || r["status"].as_u64().unwrap() >= 400 {
            continue;
        }
        for d in r["datasets"].as_array().unwrap() {
            let e = want
                .entry(d["name"].as_str().unwrap().to_string())
                .or_default();
            let (reads, downloads, bytes) = usage_of(r);
            e.0 += reads;
            e.1 += downloads;
            e.2 += bytes;
        }
    }
    let usage: Value = s
        .get_json_as(&auditor, "/api/v1/audit/usage?group_by=dataset")
        .await;
    let got: BTreeMap<String, (u64, u64, u64)> = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dataset"].as_str().unwrap().to_string(),
                (
                    r["reads"].as_u64().unwrap(),
                    r["downloads"].as_u64().unwrap(),
                    r["bytes"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(want["transport.bus_lines"].1, 6, "six exports");

    // One principal's reads of one dataset, per day: the same counts from that reader's records.
    let reader = truth
        .iter()
        .find(|r| {
            r["key_id"] != "anonymous" && r["key_id"] != "admin" && r["action"] == "data.export"
        })
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut mine = (0u64, 0u64, 0u64);
    for r in &truth {
        let data =
            ["data.rows", "data.query", "data.export"].contains(&r["action"].as_str().unwrap());
        let bus = r["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "transport.bus_lines");
        if !data || !bus || r["key_id"] != reader.as_str() || r["status"].as_u64().unwrap() >= 400 {
            continue;
        }
        let (reads, downloads, bytes) = usage_of(r);
        mine.0 += reads;
        mine.1 += downloads;
        mine.2 += bytes;
    }
    assert!(mine.0 > 0 && mine.1 > 0, "{mine:?}");
    let per_day: Value = s
        .get_json_as(
            &auditor,
            &format!(
                "/api/v1/audit/usage?group_by=day&dataset=transport.bus_lines&principal={reader}"
            ),
        )
        .await;
    let sum = |m: &str| -> u64 {
        per_day["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[m].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("reads"), sum("downloads"), sum("bytes")),
        mine,
        "{per_day}"
    );
    // The filters are parameters, not SQL text.
    let odd: Value = s
        .get_json_as(
            &auditor,
            "/api/v1/audit/usage?group_by=principal&dataset=x%27%20OR%20%271%27%3D%271",
        )
        .await;
    assert_eq!(odd["rows"].as_array().unwrap().len(), 0, "{odd}");

    // The public counters in the dataset detail and the listing, sorted by most read.
    let (_, d) = s.get_json("/api/v1/datasets/transport/bus_lines").await;
    assert_eq!(
        d["usage"]["reads_30d"], want["transport.bus_lines"].0,
        "{}",
        d["usage"]
    );
    assert_eq!(d["usage"]["downloads_30d"], 6);
    let (_, list) = s.get_json("/api/v1/datasets?sort=reads&limit=2").await;
    assert_eq!(list["datasets"][0]["name"], "bus_lines", "{list}");
    let (status, _) = s.get_json("/api/v1/datasets?sort=nope").await;
    assert_eq!(status, 400);
    let (_, dcat) = s.get_json("/catalog/data.json").await;
    let entry = dcat["dataset"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["identifier"]
                .as_str()
                .unwrap()
                .ends_with("/transport/bus_lines")
        })
        .unwrap();
    assert_eq!(entry["usage"]["downloads_30d"], 6);
    for group in ["principal", "department", "day"] {
        let r = c
            .get(s.url(&format!("/api/v1/audit/usage?group_by={group}&format=csv")))
            .bearer_auth(&auditor)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{group}");
    }
    let r = c
        .get(s.url("/api/v1/audit/usage?group_by=dataset"))
        .bearer_auth(&readers[0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "usage is for auditors");

    // Verification proves the Parquet copy too.
    let v: Value = s.get_json_as(ADMIN, "/api/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["columnar_rows"].as_u64().unwrap() > 0, "{v}");

    // A converted segment whose lines cannot be read here (gone from the disk behind the
    // gateway's back): its records are still listed, read from the Parquet copy.
    let first = audit_dir.join("segment-000001.jsonl");
    std::fs::rename(&first, audit_dir.join("moved-away.jsonl")).unwrap();
    let again = principal_pages(&s, &auditor, &id, head).await;
    assert_eq!(again, rows);
}

/// A log of 200,000 records (the audit crate's own encoding and chain, with timestamps over a
/// year); the gateway is SIGKILLed at random points while it converts the log to Parquet, ten
/// times; after a last start the log verifies, `audit.events` holds every record exactly once,
/// and a battery of auditor queries answers what plain Rust computes from the JSON lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversion_survives_kills_and_sql_equals_the_json_lines() {
    const RECORDS: u64 = 200_000;
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let audit_dir = data_dir.join("audit");
    let out = run(
        &[
            "audit",
            "gen",
            "--dir",
            audit_dir.to_str().unwrap(),
            "--records",
            &RECORDS.to_string(),
            "--segment-bytes",
            "2000000",
            "--principals",
            "300",
            "--datasets",
            "60",
            "--from",
            "2025-06-01T00:00:00Z",
            "--to",
            "2026-06-01T00:00:00Z",
        ],
        &[("DATAGATE_DATA_DIR", data_dir.to_str().unwrap())],
        &crate::harness::repo_root(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let segments = count_files(&audit_dir, "segment-", ".jsonl");
    assert!(segments > 20, "{segments} segments");
    let opts = || Options {
        env: env(&[]),
        ..Default::default()
    };
    // Ten kills at random points of the conversion.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut kills_mid_conversion = 0;
    for _ in 0..10 {
        let mut s = Server::start_in(&data_dir, opts()).await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 700)).await;
        let markers = count_files(&audit_dir.join("columnar"), "segment-", ".json");
        if markers < segments - 1 {
            kills_mid_conversion += 1;
        }
        s.kill();
    }
    assert!(
        kills_mid_conversion >= 3,
        "only {kills_mid_conversion} kills hit a conversion"
    );
    let s = Server::start_in(&data_dir, opts()).await;
    converted(&audit_dir).await;
    let c = Client::new();
    let auditor = new_key(&s, "auditor", Some("internal")).await;
    let v: Value = s.get_json_as(&auditor, "/api/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    let r = sql(
        &c,
        &s,
        &auditor,
        &format!("SELECT count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi FROM audit.events WHERE seq <= {RECORDS}"),
    )
    .await;
    assert_eq!(
        r["rows"][0],
        json!({"n": RECORDS, "d": RECORDS, "lo": 1, "hi": RECORDS})
    );

    // The battery: each query beside the same answer computed from the JSON lines.
    let truth: Vec<Value> = json_records(&audit_dir)
        .into_iter()
        .filter(|r| r["seq"].as_u64().unwrap() <= RECORDS)
        .collect();
    let month = |r: &Value| {
        let ts = r["ts"].as_str().unwrap();
        ("2025-11-01".."2025-12-01").contains(&ts)
    };
    // 1. Per action, records and statuses.
    let mut want: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in &truth {
        let e = want
            .entry(r["action"].as_str().unwrap().to_string())
            .or_default();
        e.0 += 1;
        e.1 += u64::from(r["status"].as_u64().unwrap() >= 400);
    }
    let got = sql(&c, &s, &auditor, &format!("SELECT action, count(*) AS n, sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS bad FROM audit.events WHERE seq <= {RECORDS} GROUP BY action ORDER BY action")).await;
    let got: BTreeMap<String, (u64, u64)> = got["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                (r["n"].as_u64().unwrap(), r["bad"].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(got, want);
    // 2. "Who read this dataset last month, and how much": bytes per key over a month.
    let dataset = "dept05.set0005";
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for r in truth.iter().filter(|r| month(r) && r["kind"] == "end") {
        if r["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == dataset)
        {
            *want
                .entry(r["key_id"].as_str().unwrap().to_string())
                .or_default() += r["bytes_returned"].as_u64().unwrap();
        }
    }
    assert!(!want.is_empty());
    let got = sql(&c, &s, &auditor, &format!("SELECT key_id, sum(bytes_returned) AS b FROM audit.events WHERE ts >= '2025-11-01T00:00:00Z' AND ts < '2025-12-01T00:00:00Z' AND kind = 'end' AND datasets LIKE '{dataset}@%' GROUP BY key_id")).await;
    let got = keyed(&got, "key_id", "b");
    assert_eq!(got, want);
    // 3. Distinct principals refused with 403 in a month, and the newest such record.
    let refused: Vec<&Value> = truth
        .iter()
        .filter(|r| month(r) && r["status"] == 403)
        .collect();
    let keys: HashSet<&str> = refused
        .iter()
        .map(|r| r["key_id"].as_str().unwrap())
        .collect();
    let got = sql(&c, &s, &auditor, "SELECT count(DISTINCT key_id) AS k, max(seq) AS last FROM audit.events WHERE status = 403 AND ts >= '2025-11-01T00:00:00Z' AND ts < '2025-12-01T00:00:00Z'").await;
    assert_eq!(got["rows"][0]["k"], keys.len() as u64);
    assert_eq!(got["rows"][0]["last"], refused.last().unwrap()["seq"]);
    // 4. Refusals summed by their count, per day, for one week.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for r in truth.iter().filter(|r| r["kind"] == "refusals") {
        let day = &r["ts"].as_str().unwrap()[..10];
        if ("2026-02-01".."2026-02-08").contains(&day) {
            *want.entry(day.to_string()).or_default() += r["count"].as_u64().unwrap();
        }
    }
    let got = sql(&c, &s, &auditor, "SELECT CAST(CAST(ts AS DATE) AS VARCHAR) AS day, sum(count) AS n FROM audit.events WHERE kind = 'refusals' AND ts >= '2026-02-01T00:00:00Z' AND ts < '2026-02-08T00:00:00Z' GROUP BY 1").await;
    let got = keyed(&got, "day", "n");
    assert_eq!(got, want);
    // 5. A principal's newest 50 records via the events API equal the JSON lines'.
    let key = "k00008";
    let want: Vec<u64> = truth
        .iter()
        .rev()
        .filter(|r| r["key_id"] == key)
        .take(50)
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let page: Value = s
        .get_json_as(
            &auditor,
            &format!(
                "/api/v1/audit/events?principal={key}&limit=50&before={}",
                RECORDS + 1
            ),
        )
        .await;
    let got: Vec<u64> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, want);
    // 6. Reads per dataset (usage) for the whole log.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for r in truth.iter().filter(|r| {
        r["kind"] == "begin"
            && r["status"].as_u64().unwrap() < 400
            && ["data.rows", "data.query"].contains(&r["action"].as_str().unwrap())
    }) {
        for d in r["datasets"].as_array().unwrap() {
            *want
                .entry(d["name"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let usage: Value = s
        .get_json_as(
            &auditor,
            "/api/v1/audit/usage?group_by=dataset&to=2026-06-02T00:00:00Z",
        )
        .await;
    let got = keyed(&usage, "dataset", "reads");
    assert_eq!(got, want);
    // A date is its midnight UTC: the same window written as a date answers the same.
    let by_date: Value = s
        .get_json_as(
            &auditor,
            "/api/v1/audit/usage?group_by=dataset&to=2026-06-02",
        )
        .await;
    assert_eq!(keyed(&by_date, "dataset", "reads"), want);
    // A window ending before it starts, or a time of neither form, is refused and named.
    for (path, parameter) in [
        (
            "/api/v1/audit/usage?group_by=dataset&from=2026-06-02&to=2026-06-01",
            "to",
        ),
        (
            "/api/v1/audit/events?from=2026-06-02T00:00:00Z&to=2026-06-01",
            "to",
        ),
        ("/api/v1/audit/events?from=yesterday", "from"),
        ("/api/v1/audit/usage?group_by=day&to=2026-13-01", "to"),
    ] {
        let e = s.get_json_as(&auditor, path).await;
        assert_eq!(
            (e["status"].as_u64(), e["parameter"].as_str()),
            (Some(400), Some(parameter)),
            "{path}: {e}"
        );
    }
    // A date that is none says why as a date.
    let e = s
        .get_json_as(&auditor, "/api/v1/audit/usage?group_by=day&to=2026-13-01")
        .await;
    let detail = e["detail"].as_str().unwrap();
    assert!(
        detail.ends_with("not \"2026-13-01\": input is out of range"),
        "{e}"
    );
}

/// What a record adds to usage: (reads, downloads, bytes). A transfer counts by its `begin`
/// and is sized by its `end`, or both by its one `read` when it was answered whole.
fn usage_of(r: &Value) -> (u64, u64, u64) {
    let export = r["action"] == "data.export";
    let bytes = r["bytes_returned"].as_u64().unwrap();
    match r["kind"].as_str().unwrap() {
        "begin" => (u64::from(!export), u64::from(export), 0),
        "end" => (0, 0, bytes),
        "read" => (u64::from(!export), u64::from(export), bytes),
        _ => (0, 0, 0),
    }
}
