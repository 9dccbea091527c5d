//! The audit trail (API.md §5 "Audit"): exactly one record per request of every outcome with
//! its fields; begin/end pairs for data; fail-closed when the log cannot be written;
//! verification through the API and offline (tampering named at its first bad seq, a kept
//! checkpoint still extended); review by events and SQL, for auditors only.

use crate::harness::{ADMIN, Options, Server, admin_env as env, copy_dir, new_key, run};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Every record of the log in `data_dir`, read from the segment files.
fn records(data_dir: &Path) -> Vec<Value> {
    let dir = data_dir.join("audit");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("segment-"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            std::fs::read_to_string(dir.join(n))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_every_outcome_leaves_exactly_one_record() {
    let mut s = Server::start(Options {
        env: env(&[
            ("DATAGATE_LIMITS__MAX_UPLOAD_BYTES", "2000000"),
            ("DATAGATE_TIERS__PREMIUM__REQUESTS", "1"),
            ("DATAGATE_TIERS__PREMIUM__WINDOW_SECS", "3600"),
            ("DATAGATE_TIERS__PREMIUM__BURST", "1"),
        ]),
        ..Default::default()
    })
    .await;
    let c = Client::new();
    let consumer = new_key(&s, "consumer", Some("standard")).await;
    let limited = new_key(&s, "consumer", Some("premium")).await;
    let publisher = {
        let r = c
            .post(s.url("/api/v1/keys"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "p", "role": "publisher", "department": "transport"}))
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let bad_key = "dg_nobody_0000000000000000000000000000000000000000000000000000000000000000";
    // (method, path, key, body, content type)
    type Case = (
        &'static str,
        String,
        Option<String>,
        Option<String>,
        &'static str,
    );
    let rows = "/api/v1/datasets/transport/bus_lines/rows?limit=3".to_string();
    let cases: Vec<Case> = vec![
        ("GET", "/api/v1/datasets".into(), None, None, ""),
        ("GET", rows.clone(), Some(consumer.clone()), None, ""),
        (
            "GET",
            "/api/v1/datasets/transport/bus_lines/export?format=csv&where=line_id%3D%27L001%27"
                .into(),
            None,
            None,
            "",
        ),
        (
            "POST",
            "/api/v1/query".into(),
            None,
            Some(r#"{"sql":"SELECT count(*) AS n FROM transport.bus_stops"}"#.into()),
            "application/json",
        ),
        (
            "GET",
            "/api/v1/datasets/transport/bus_lines/rows?where=nope(".into(),
            None,
            None,
            "",
        ),
        (
            "GET",
            "/api/v1/datasets".into(),
            Some(bad_key.into()),
            None,
            "",
        ),
        (
            "PATCH",
            "/api/v1/datasets/transport/bus_lines".into(),
            Some(consumer.clone()),
            Some(r#"{"title":"x"}"#.into()),
            "application/json",
        ),
        (
            "GET",
            "/api/v1/datasets/transport/no_such".into(),
            None,
            None,
            "",
        ),
        (
            "POST",
            "/api/v1/datasets/transport/bus_lines/versions?mode=append".into(),
            Some(publisher.clone()),
            Some("x".repeat(2_100_000)),
            "text/csv",
        ),
        (
            "POST",
            "/api/v1/datasets/transport/bus_lines/versions?mode=append".into(),
            Some(publisher.clone()),
            Some("a,b".into()),
            "application/x-unknown",
        ),
        (
            "POST",
            "/api/v1/query".into(),
            None,
            Some(r#"{"sql":"SELECT 1","timeout_ms":0}"#.into()),
            "application/json",
        ),
        (
            "GET",
            "/api/v1/datasets".into(),
            Some(limited.clone()),
            None,
            "",
        ),
        ("GET", "/catalog/data.json".into(), None, None, ""),
    ];
    let c = Arc::new(c);
    let base = s.base.clone();
    let mut tasks = Vec::new();
    const PER_TASK: usize = 160;
    const TOO_LARGE: usize = 8;
    for t in 0..13usize {
        let (c, base, cases) = (c.clone(), base.clone(), cases.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent: Vec<(String, u16)> = Vec::new();
            for i in 0..PER_TASK {
                let mut case = (t + i) % cases.len();
                if case == TOO_LARGE && i >= cases.len() {
                    case = 0; // one oversized upload per task is enough
                }
                let (m, path, key, body, ct) = &cases[case];
                let id = format!("t{t}-{i}");
                let mut rb = c
                    .request(m.parse().unwrap(), format!("{base}{path}"))
                    .header("x-request-id", &id)
                    .header("user-agent", "audit-test/1");
                if let Some(k) = key {
                    rb = rb.bearer_auth(k);
                }
                if let Some(b) = body {
                    rb = rb.header("content-type", *ct).body(b.clone());
                }
                let r = match rb.send().await {
                    Ok(r) => r,
                    // The server answers 413 and closes the connection while the oversized
                    // body is still being written: the client may see the broken pipe first.
                    Err(e) if case == TOO_LARGE && e.is_request() => {
                        sent.push((id, 413));
                        continue;
                    }
                    Err(e) => panic!("{e}"),
                };
                let status = r.status().as_u16();
                r.bytes().await.unwrap();
                sent.push((id, status));
            }
            sent
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    assert!(sent.len() >= 2000);
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for (_, st) in &sent {
        *statuses.entry(*st).or_default() += 1;
    }
    for st in [200, 400, 401, 403, 404, 413, 415, 429] {
        assert!(statuses.contains_key(&st), "no {st} in {statuses:?}");
    }
    // Stop (which signs a final checkpoint) and read the log.
    let data_dir = s.data_dir();
    assert!(s.terminate().success());
    let recs = records(&data_dir);
    let mut by_request: HashMap<String, Vec<&Value>> = HashMap::new();
    let mut refusals_counted = 0u64;
    let mut ends: HashMap<String, &Value> = HashMap::new();
    for r in &recs {
        match r["kind"].as_str().unwrap() {
            "refusals" => refusals_counted += r["count"].as_u64().unwrap(),
            "end" => {
                assert!(
                    ends.insert(r["event_id"].as_str().unwrap().into(), r)
                        .is_none()
                );
            }
            "request" | "begin" | "read" => by_request
                .entry(r["request_id"].as_str().unwrap().into())
                .or_default()
                .push(r),
            _ => {}
        }
    }
    let mut refused_unrecorded = 0u64;
    for (id, status) in &sent {
        let Some(found) = by_request.get(id) else {
            assert_eq!(*status, 429, "request {id} ({status}) has no record");
            refused_unrecorded += 1;
            continue;
        };
        assert_eq!(found.len(), 1, "request {id} has {} records", found.len());
        let r = found[0];
        assert_eq!(r["status"], *status, "{r}");
        for field in [
            "seq",
            "event_id",
            "ts",
            "key_id",
            "role",
            "client_ip",
            "method",
            "path",
            "action",
            "prev_hash",
            "hash",
            "duration_ms",
            "rows_returned",
            "bytes_returned",
        ] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
        assert_eq!(r["user_agent"], "audit-test/1");
        assert_eq!(r["client_ip"], "127.0.0.1");
        if *status >= 400 {
            assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
        }
        // A statement the handler refused is named in its record, as one it answered.
        if r["action"] == "data.query" && *status != 429 && *status != 200 {
            assert_eq!(r["query_text"], "SELECT 1", "{r}");
            assert_eq!(
                r["query_sha256"].as_str(),
                Some(datagate_audit::record::query_sha256("SELECT 1").as_str()),
                "{r}"
            );
        }
        if r["kind"] == "begin" || r["kind"] == "read" {
            // A page answered whole says its end in the same record; a stream has an `end`.
            let end = if r["kind"] == "read" {
                assert!(!ends.contains_key(r["event_id"].as_str().unwrap()), "{r}");
                r
            } else {
                let end = ends
                    .get(r["event_id"].as_str().unwrap())
                    .unwrap_or_else(|| panic!("begin without end: {r}"));
                assert!(end["seq"].as_u64() > r["seq"].as_u64());
                end
            };
            assert_eq!(end["outcome"], "completed", "{end}");
            assert!(end["bytes_returned"].as_u64().unwrap() > 0);
            let datasets = r["datasets"].as_array().unwrap();
            assert!(
                !datasets.is_empty() && datasets.iter().all(|d| d["version"].as_i64() >= Some(1)),
                "{r}"
            );
            if r["action"] == "data.query" {
                assert_eq!(datasets[0]["name"], "transport.bus_stops", "from the plan");
                assert_eq!(end["rows_returned"], 1);
                let sql = r["query_text"].as_str().unwrap();
                assert!(r["query_sha256"].as_str().unwrap().len() == 64 && !sql.is_empty());
            }
            if r["action"] == "data.rows" && r["key_id"] != "anonymous" {
                assert_eq!(r["role"], "consumer");
                assert_eq!(end["rows_returned"], 3);
            }
        }
    }
    let begins = recs.iter().filter(|r| r["kind"] == "begin").count();
    assert_eq!(begins, ends.len(), "begin/end pairs match");
    assert_eq!(
        refused_unrecorded, refusals_counted,
        "every aggregated refusal is counted"
    );
    // The chain and the shutdown checkpoint verify offline.
    let out = run(
        &["audit", "verify", "--data-dir", data_dir.to_str().unwrap()],
        &[],
        &crate::harness::repo_root(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_fails_closed() {
    let s = Server::start(Options {
        env: env(&[("DATAGATE_AUDIT__SEGMENT_MAX_BYTES", "4096")]),
        ..Default::default()
    })
    .await;
    let c = Client::new();
    // The next segment is a device that refuses every write (ENOSPC): a real write failure.
    std::os::unix::fs::symlink("/dev/full", s.data_dir().join("audit/segment-000002.jsonl"))
        .unwrap();
    let url = s.url("/api/v1/datasets/transport/bus_lines/rows?limit=5&format=csv");
    let mut served = 0;
    let refused = loop {
        let r = c.get(&url).send().await.unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break r;
        }
        assert_eq!(r.status(), 200);
        served += 1;
        assert!(served < 100, "the segment never rolled over");
    };
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let body = refused.text().await.unwrap();
    assert!(!body.contains("line_id"), "no data left: {body}");
    // No retry: everything audited is refused from now on, data or not.
    for path in [
        "/api/v1/datasets/transport/bus_lines/rows?limit=1",
        "/api/v1/datasets",
        "/catalog/data.json",
    ] {
        assert_eq!(
            c.get(s.url(path)).send().await.unwrap().status(),
            503,
            "{path}"
        );
    }
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 503);
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_review_verify_and_keep_checkpoints() {
    let mut s = Server::start(Options {
        env: env(&[("DATAGATE_AUDIT__CHECKPOINT_EVERY_RECORDS", "5")]),
        ..Default::default()
    })
    .await;
    let c = Client::new();
    let auditor = new_key(&s, "auditor", Some("standard")).await;
    let consumer = new_key(&s, "consumer", Some("standard")).await;
    for _ in 0..6 {
        let r = c
            .get(s.url("/api/v1/datasets/transport/bus_lines/rows?limit=2"))
            .bearer_auth(&consumer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // Only auditors and admins review.
    for (key, expect) in [(None, 401), (Some(&consumer), 403), (Some(&auditor), 200)] {
        let mut rb = c.get(s.url("/api/v1/audit/verify"));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        assert_eq!(rb.send().await.unwrap().status(), expect);
    }
    let v: Value = c
        .get(s.url("/api/v1/audit/verify"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["events"].as_u64().unwrap() >= 9 && v["head"]["hash"].as_str().unwrap().len() == 64);
    // Events: newest first, filtered by principal and dataset.
    let id = consumer.split('_').nth(1).unwrap();
    let ev: Value = c
        .get(s.url(&format!("/api/v1/audit/events?principal={id}&dataset=transport/bus_lines&action=data.rows&limit=4")))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = ev["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{ev}");
    assert!(
        rows.windows(2)
            .all(|p| p[0]["seq"].as_u64() > p[1]["seq"].as_u64())
    );
    assert!(
        rows.iter()
            .all(|r| r["key_id"] == id && r["datasets"] == "transport.bus_lines@1")
    );
    // SQL over audit.events, under the read-only rules.
    let q = |sql: &str| {
        c.post(s.url("/api/v1/audit/query"))
            .bearer_auth(&auditor)
            .json(&json!({"sql": sql}))
            .send()
    };
    // Six pages: the first decodes the version (a `begin` and an `end`), the others are
    // slices of it, answered whole, each one `read` record with its rows.
    let r: Value = q(&format!("SELECT count(*) AS n, sum(rows_returned) AS r, sum(CASE WHEN kind = 'read' THEN 1 ELSE 0 END) AS whole FROM audit.events WHERE key_id = '{id}' AND kind IN ('end', 'read')")).await.unwrap().json().await.unwrap();
    assert_eq!(r["rows"][0]["n"], 6, "{r}");
    assert_eq!(r["rows"][0]["r"], 12);
    assert!(r["rows"][0]["whole"].as_u64().unwrap() >= 5, "{r}");
    let r: Value = q(&format!(
        "SELECT count(*) AS n FROM audit.events WHERE key_id = '{id}' AND kind IN ('begin', 'read')"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(r["rows"][0]["n"], 6, "one record announces each page: {r}");
    assert_eq!(q("DELETE FROM audit.events").await.unwrap().status(), 400);
    assert_eq!(
        q("SELECT * FROM transport.bus_lines")
            .await
            .unwrap()
            .status(),
        400,
        "only the audit table is there"
    );
    // A refused statement is named in its record: what an auditor's key tried, too.
    let refused = s
        .audit_records("action=audit.query&status=400&limit=10")
        .await;
    let texts: Vec<&str> = refused
        .iter()
        .filter_map(|r| r["query_text"].as_str())
        .collect();
    assert!(
        texts.contains(&"DELETE FROM audit.events")
            && texts.contains(&"SELECT * FROM transport.bus_lines"),
        "{refused:?}"
    );
    // The public key and a checkpoint; an auditor keeps it and later proves extension.
    let pk: Value = c
        .get(s.url("/api/v1/audit/public-key"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cp: Value = c
        .get(s.url("/api/v1/audit/checkpoint"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cp["public_key"], pk["public_key"]);
    assert!(cp["seq"].as_u64().unwrap() >= 5);
    let data_dir = s.data_dir();
    assert!(s.terminate().success());
    let kept = data_dir.parent().unwrap().join("kept-checkpoint.json");
    std::fs::write(&kept, cp.to_string()).unwrap();
    let root = crate::harness::repo_root();
    let verify = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["audit", "verify", "--data-dir", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = run(&args, &[], &root);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), v)
    };
    let pk_hex = pk["public_key"].as_str().unwrap();
    let (ok, v) = verify(
        &data_dir,
        &[
            "--checkpoint",
            kept.to_str().unwrap(),
            "--public-key",
            pk_hex,
        ],
    );
    assert!(ok, "{v}");
    // Offline, on copies: a flipped byte and a cut tail are named at their first bad seq.
    let tampered = |name: &str, change: &dyn Fn(&mut Vec<String>)| {
        let copy = data_dir.parent().unwrap().join(name);
        copy_dir(&data_dir.join("audit"), &copy.join("audit"));
        let seg = copy.join("audit/segment-000001.jsonl");
        let mut lines: Vec<String> = std::fs::read_to_string(&seg)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        change(&mut lines);
        std::fs::write(&seg, lines.join("\n") + "\n").unwrap();
        copy
    };
    let copy = tampered("flipped", &|l| {
        l[4] = l[4].replacen("\"status\":200", "\"status\":201", 1)
    });
    let (ok, v) = verify(&copy, &[]);
    assert!(!ok);
    assert_eq!(
        (v["first_bad_seq"].as_u64(), v["reason"].as_str()),
        (Some(5), Some("modified")),
        "{v}"
    );
    let copy = tampered("truncated", &|l| l.truncate(8));
    let (ok, v) = verify(&copy, &[]);
    assert!(!ok);
    assert_eq!(
        (v["first_bad_seq"].as_u64(), v["reason"].as_str()),
        (Some(9), Some("truncated")),
        "{v}"
    );
    let (ok, v) = verify(&copy, &["--checkpoint", kept.to_str().unwrap()]);
    assert!(!ok, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_are_archived_and_verifiable_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("archive");
    let url = format!("file://{}/", archive.display());
    let mut s = Server::start(Options {
        env: env(&[
            ("DATAGATE_AUDIT__SEGMENT_MAX_BYTES", "4096"),
            ("DATAGATE_AUDIT__ARCHIVE_URL", &url),
            ("DATAGATE_AUDIT__ARCHIVE_EVERY_SECS", "1"),
        ]),
        ..Default::default()
    })
    .await;
    let c = Client::new();
    for _ in 0..40 {
        c.get(s.url("/api/v1/datasets?limit=1"))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let pk: Value = c
        .get(s.url("/api/v1/audit/public-key"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(s.terminate().success());
    let archived: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        archived
            .iter()
            .filter(|n| n.starts_with("segment-"))
            .count()
            >= 3,
        "{archived:?}"
    );
    assert!(archived.contains(&"public.key".to_string()));
    let pk = pk["public_key"].as_str().unwrap();
    let root = crate::harness::repo_root();
    let verify = |dir: &Path| {
        let out = run(
            &[
                "audit",
                "verify",
                "--dir",
                dir.to_str().unwrap(),
                "--public-key",
                pk,
            ],
            &[],
            &root,
        );
        (
            out.status.success(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null),
        )
    };
    let (ok, v) = verify(&archive);
    assert!(ok && v["events"].as_u64().unwrap() > 10, "{v}");
    // The archived copies are byte for byte: a change there is caught too.
    let seg = archive.join("segment-000002.jsonl");
    let text =
        std::fs::read_to_string(&seg)
            .unwrap()
            .replacen("\"status\":200", "\"status\":500", 1);
    std::fs::write(&seg, text).unwrap();
    let (ok, v) = verify(&archive);
    assert!(!ok && v["reason"] == "modified", "{v}");
}
