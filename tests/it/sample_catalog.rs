//! The sample catalog: its shape, and idempotent registration across restarts.

use crate::harness::{Options, Server, copy_dir, repo_root};
use serde_json::Value;
use std::collections::BTreeMap;

#[test]
fn sample_catalog_has_the_promised_shape() {
    let root = repo_root().join("catalog");
    let mut departments = 0;
    let mut levels = BTreeMap::new();
    let mut sensitivities = BTreeMap::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.join("department.toml").exists() {
            continue;
        }
        departments += 1;
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "toml") && !f.ends_with("department.toml") {
                let m: toml::Value = toml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
                *levels
                    .entry(m["access_level"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
                for c in m["columns"].as_array().unwrap() {
                    let s = c
                        .get("sensitivity")
                        .and_then(|s| s.as_str())
                        .unwrap_or("public");
                    *sensitivities.entry(s.to_string()).or_insert(0) += 1;
                }
                let data = dir.join(m["data"].as_str().unwrap());
                let rows = std::fs::read_to_string(&data).unwrap().lines().count() - 1;
                assert!(rows >= 500, "{} has only {rows} rows", data.display());
            }
        }
    }
    assert!(departments >= 4, "{departments} departments");
    assert!(levels.values().sum::<i32>() >= 8, "{levels:?}");
    for l in ["open", "conditional", "shared"] {
        assert!(levels.contains_key(l), "no {l} dataset: {levels:?}");
    }
    for s in ["masked", "private"] {
        assert!(
            sensitivities.contains_key(s),
            "no {s} column: {sensitivities:?}"
        );
    }
}

async fn snapshot(s: &Server) -> Value {
    let (_, list) = s.get_json("/api/v1/datasets?limit=1000").await;
    let (_, depts) = s.get_json("/api/v1/departments").await;
    // Links carry the (per-start) port; compare everything else.
    let text = serde_json::json!({"datasets": list, "departments": depts})
        .to_string()
        .replace(&s.base, "BASE");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn restart_changes_nothing_and_edits_are_picked_up() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    copy_dir(&repo_root().join("catalog"), &catalog);
    let data_dir = tmp.path().join("data");
    let opts = Options {
        manifests: Some(catalog.clone()),
        ..Default::default()
    };

    let mut first = Server::start_in(&data_dir, opts.clone()).await;
    let before = snapshot(&first).await;
    assert!(first.terminate().success());
    let files_before = count_files(&data_dir.join("warehouse"));

    let mut second = Server::start_in(&data_dir, opts.clone()).await;
    let after = snapshot(&second).await;
    assert_eq!(
        before,
        after,
        "a second start must change nothing:\n{}\n{}",
        serde_json::to_string(&before).unwrap(),
        serde_json::to_string(&after).unwrap()
    );
    assert_eq!(
        files_before,
        count_files(&data_dir.join("warehouse")),
        "no new files"
    );
    assert!(second.terminate().success());

    // Edit a manifest's metadata and append rows to a data file.
    let manifest = catalog.join("transport/bus_lines.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("title = \"公交线路\"", "title = \"公交线路（2025 版）\""),
    )
    .unwrap();
    let data = catalog.join("transport/bus_stops.csv");
    let mut csv = std::fs::read_to_string(&data).unwrap();
    csv.push_str("BS999999,测试路口,东城区,120.1,30.2,3,true,false\n");
    std::fs::write(&data, csv).unwrap();

    let third = Server::start_in(&data_dir, opts).await;
    let (_, lines) = third.get_json("/api/v1/datasets/transport/bus_lines").await;
    assert_eq!(lines["title"], "公交线路（2025 版）");
    assert_eq!(
        lines["current_version"], 1,
        "metadata edits make no version"
    );
    let (_, stops) = third.get_json("/api/v1/datasets/transport/bus_stops").await;
    assert_eq!(stops["current_version"], 2);
    assert_eq!(stops["row_count"], 3001);
    let (_, versions) = third
        .get_json("/api/v1/datasets/transport/bus_stops/versions")
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let (_, untouched) = third
        .get_json("/api/v1/datasets/market/market_entities")
        .await;
    let old = before["datasets"]["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "market_entities")
        .unwrap();
    assert_eq!(untouched["updated_at"], old["updated_at"]);
}

#[tokio::test]
async fn a_bad_data_file_stops_start_up_and_leaves_no_files() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    copy_dir(&repo_root().join("catalog"), &catalog);
    let data = catalog.join("environment/air_quality.csv");
    let mut csv = std::fs::read_to_string(&data).unwrap();
    csv.push_str("99999,AQ0001,x,东城区,2024-01-08T00:00:00,not_a_number,1,1,1,1,1,1,,优\n");
    std::fs::write(&data, csv).unwrap();
    let data_dir = tmp.path().join("data");
    let out = crate::harness::run(
        &["serve"],
        &[
            ("DATAGATE_DATA_DIR", data_dir.to_str().unwrap()),
            ("DATAGATE_CATALOG_MANIFESTS", catalog.to_str().unwrap()),
            ("DATAGATE_LISTEN", "127.0.0.1:0"),
        ],
        &repo_root(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("air_quality"), "{err}");
    assert!(err.contains("line 4034"), "the error names the line: {err}");
    assert!(err.contains("aqi"), "the error names the column: {err}");
    let leftover = count_files(&data_dir.join("warehouse/datasets/environment"));
    assert_eq!(leftover, 0, "the failed version left files behind");
}

fn count_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// A manifest's data file in GB18030 (`charset = "gb18030"`) publishes the same rows as the
/// UTF-8 file; a charset no encoding has stops start-up naming it.
#[tokio::test]
async fn a_manifest_names_its_data_files_encoding() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    copy_dir(&repo_root().join("catalog"), &catalog);
    let utf8 = std::fs::read_to_string(catalog.join("transport/bus_stops.csv")).unwrap();
    let (gb18030, _, unmappable) = encoding_rs::GB18030.encode(&utf8);
    assert!(!unmappable && gb18030.as_ref() != utf8.as_bytes());
    std::fs::write(catalog.join("transport/bus_stops.csv"), &gb18030).unwrap();
    let manifest = catalog.join("transport/bus_stops.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let named = text.replace(
        "data = \"bus_stops.csv\"",
        "data = \"bus_stops.csv\"\ncharset = \"gb18030\"",
    );
    assert_ne!(named, text);
    std::fs::write(&manifest, &named).unwrap();
    let page = "/api/v1/datasets/transport/bus_stops/rows?limit=1000&offset=1000";
    let reencoded = Server::start_in(
        &tmp.path().join("data"),
        Options {
            manifests: Some(catalog.clone()),
            ..Default::default()
        },
    )
    .await;
    let (status, got) = reencoded.get_json(page).await;
    assert_eq!(status, 200, "{got}");
    let sample = Server::start(Options::default()).await;
    let (_, want) = sample.get_json(page).await;
    assert_eq!(got["rows"], want["rows"]);
    assert_eq!(got["rows"].as_array().unwrap().len(), 1000);
    drop(reencoded);
    // An unknown label: refused at start, naming it.
    std::fs::write(&manifest, named.replace("gb18030\"", "gb9999\"")).unwrap();
    let out = crate::harness::run(
        &["serve"],
        &[
            (
                "DATAGATE_DATA_DIR",
                tmp.path().join("data2").to_str().unwrap(),
            ),
            ("DATAGATE_CATALOG_MANIFESTS", catalog.to_str().unwrap()),
            ("DATAGATE_LISTEN", "127.0.0.1:0"),
        ],
        &repo_root(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gb9999"), "{stderr}");
}

/// `datagate query` (the operator's own SQL over a data directory): the answer on standard
/// output; with `--repeat N` the statement runs N times, the answer written once, and the
/// median and fastest times reported on standard error, also for one run.
#[tokio::test]
async fn the_query_command_answers_and_reports_times_when_asked() {
    let mut s = Server::start(Options::default()).await;
    let dir = s.data_dir();
    s.terminate();
    let data_dir = dir.to_str().unwrap();
    let sql = "SELECT count(*) AS n FROM transport.bus_lines";
    for (repeat, runs) in [(None, None), (Some("1"), Some(1)), (Some("3"), Some(3))] {
        let mut args = vec!["query", "--data-dir", data_dir, "--format", "csv"];
        if let Some(r) = repeat {
            args.extend(["--repeat", r]);
        }
        args.push(sql);
        let out = crate::harness::run(&args, &[], &repo_root());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{repeat:?}: {stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "n\n1200\n",
            "{repeat:?}"
        );
        let report = stderr.lines().find(|l| l.starts_with("runs="));
        match runs {
            None => assert!(report.is_none(), "{stderr}"),
            Some(n) => {
                let report = report.unwrap_or_else(|| panic!("no timing report: {stderr}"));
                assert!(
                    report.starts_with(&format!("runs={n} median_ms=")),
                    "{report}"
                );
            }
        }
    }
}
