//! Faults under the gateway, made real by the tests: a full disk (a small tmpfs mounted for the
//! test) during an upload and under the audit log, the catalog database locked by another
//! process or on a read-only file system, the warehouse's files gone, the server's own log on a
//! full disk. Each is answered with a problem (507 or 503 with
//! `Retry-After`), loses nothing committed, and recovers: by itself once the fault is gone, or,
//! for the audit log, with an operator restart.

use crate::harness::{ADMIN, Options, Server, admin_env};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs of `size` mounted on a fresh directory for one test; unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a tmpfs for the disk-full tests needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { path, _dir: dir }
    }

    /// Bytes free on the disk.
    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn call(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .request(method, s.url(path))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap()
}

fn scratch_dataset(name: &str) -> Value {
    json!({
        "department": "transport", "name": name, "title": "scratch", "description": "fault tests",
        "access_level": "open", "license": "CC-BY-4.0", "update_frequency": "daily", "tags": [],
        "contact": {"name": "t", "email": "t@example.org"}, "primary_key": ["id"],
        "columns": [{"name": "id", "type": "int64"}, {"name": "text", "type": "utf8"}],
    })
}

/// `rows` CSV rows of incompressible text (so Parquet cannot shrink them much).
fn csv(rows: usize, seed: u64) -> Vec<u8> {
    let mut out = b"id,text\n".to_vec();
    let mut x = seed | 1;
    for i in 0..rows {
        let mut text = String::with_capacity(64);
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push_str(&format!("{x:016x}"));
        }
        out.extend_from_slice(format!("{i},{text}\n").as_bytes());
    }
    out
}

async fn upload(s: &Server, name: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(s.url(&format!("/api/v1/datasets/transport/{name}/versions")))
        .bearer_auth(ADMIN)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// [`upload`] with curl, which keeps reading the answer when the server answers before the
/// whole body was sent (as the server does once the disk is full). Returns the status and body.
fn upload_with_curl(s: &Server, name: &str, body: Vec<u8>) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.csv");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: text/csv",
        ])
        .arg("-H")
        .arg(format!("authorization: Bearer {ADMIN}"))
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(s.url(&format!("/api/v1/datasets/transport/{name}/versions")))
        .output()
        .expect("curl runs (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_an_upload_answers_507_keeps_nothing_and_frees_the_space() {
    let disk = SmallDisk::mount("40m");
    let audit = tempfile::tempdir().unwrap();
    // The data directory is the small disk itself; the server's log (beside it) and the audit
    // log are elsewhere.
    let s = Server::start_in(
        &disk.path,
        Options {
            env: admin_env(&[("DATAGATE_AUDIT__DIR", audit.path().to_str().unwrap())]),
            ..Default::default()
        },
    )
    .await;
    let r = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/datasets",
        Some(scratch_dataset("full")),
    )
    .await;
    assert_eq!(r.status(), 201);
    let free_before = disk.free();
    // About 90 MB of CSV, some 40+ MB of Parquet: more than the disk has.
    // The server answers as soon as the disk is full, before the whole body is sent.
    let (status, body) = upload_with_curl(&s, "full", csv(1_100_000, 7));
    assert_eq!(status, 507, "{body}\n{}", s.log_tail(20));
    let p: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["type"], "https://datagate.dev/problems/storage-full");
    assert!(
        p["detail"].as_str().unwrap().contains("storage is full"),
        "{p}"
    );
    assert!(
        !p["detail"].as_str().unwrap().contains('/'),
        "no path in the answer: {p}"
    );
    // Nothing visible, nothing left behind, the space given back.
    let d: Value = call(
        &s,
        reqwest::Method::GET,
        "/api/v1/datasets/transport/full",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(d["current_version"], Value::Null, "{d}");
    let left: Vec<_> = files_under(&disk.path)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("full"))
        .collect();
    assert!(
        left.is_empty(),
        "files of the failed upload remain: {left:?}"
    );
    let free_after = disk.free();
    assert!(
        free_after + 1024 * 1024 >= free_before,
        "space not released: {free_before} free before, {free_after} after"
    );
    // With room again, the next upload of a size that fits succeeds without a restart.
    let r = upload(&s, "full", csv(2_000, 9)).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let rows: Value = call(
        &s,
        reqwest::Method::GET,
        "/api/v1/datasets/transport/full/rows?limit=1",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(rows["rows"][0]["id"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_disk_answers_503_and_readyz_503_until_an_operator_restart_after_space_returns()
 {
    let disk = SmallDisk::mount("4m");
    let audit = disk.path.join("audit");
    let data = tempfile::tempdir().unwrap();
    let opts = Options {
        env: admin_env(&[("DATAGATE_AUDIT__DIR", audit.to_str().unwrap())]),
        ..Default::default()
    };
    let mut s = Server::start_in(&data.path().join("data"), opts.clone()).await;
    // Fill the disk but for a few KiB.
    let filler = disk.path.join("filler");
    let free = disk.free();
    std::fs::write(&filler, vec![0u8; (free - 16 * 1024) as usize]).ok();
    let mut refused = None;
    for _ in 0..2000 {
        let r = reqwest::get(s.url("/api/v1/datasets?limit=1"))
            .await
            .unwrap();
        if r.status() != 200 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the audit log ran out of space");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let ready = reqwest::get(s.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    // Audited requests stay refused, even once space returns, until the operator restarts.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        reqwest::get(s.url("/api/v1/datasets?limit=1"))
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(s.terminate().code(), Some(0));
    let s = Server::start_in(&data.path().join("data"), opts).await;
    assert_eq!(reqwest::get(s.url("/readyz")).await.unwrap().status(), 200);
    assert_eq!(
        reqwest::get(s.url("/api/v1/datasets?limit=1"))
            .await
            .unwrap()
            .status(),
        200
    );
    // Nothing in the chain was lost or broken by the failed appends.
    let v: Value = call(&s, reqwest::Method::GET, "/api/v1/audit/verify", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_locked_by_another_process_answers_503_then_recovers() {
    let s = Server::start(Options {
        env: admin_env(&[]),
        ..Default::default()
    })
    .await;
    let db = s.data_dir().join("catalog.sqlite");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
        conn.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();
    let r = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/datasets",
        Some(scratch_dataset("locked")),
    )
    .await;
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    assert!(r.headers().contains_key("retry-after"));
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let r = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/datasets",
        Some(scratch_dataset("locked")),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_catalog_serves_reads_answers_503_to_changes_and_recovers_after_a_restart() {
    let disk = SmallDisk::mount("64m");
    let catalog = disk.path.join("catalog.sqlite");
    let data = tempfile::tempdir().unwrap();
    let opts = Options {
        env: admin_env(&[("DATAGATE_STORAGE__CATALOG_PATH", catalog.to_str().unwrap())]),
        ..Default::default()
    };
    let total = |v: Value| v["total"].as_u64().unwrap();
    // A first run makes the catalog; then its file system is remounted read-only (as a failing
    // disk is) and the gateway started on it.
    let mut first = Server::start_in(&data.path().join("data"), opts.clone()).await;
    let before = total(
        call(&first, reqwest::Method::GET, "/api/v1/datasets", None)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert!(first.terminate().success());
    let remount = |mode: &str| {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&disk.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    remount("ro");
    let s = Server::start_in(&data.path().join("data"), opts.clone()).await;
    let r = call(&s, reqwest::Method::GET, "/api/v1/datasets", None).await;
    assert_eq!(r.status(), 200, "reads are served");
    assert_eq!(total(r.json().await.unwrap()), before);
    let rows = call(
        &s,
        reqwest::Method::GET,
        "/api/v1/datasets/transport/bus_lines/rows?limit=3",
        None,
    )
    .await;
    assert_eq!(rows.status(), 200, "data is served");
    let r = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/datasets",
        Some(scratch_dataset("readonly")),
    )
    .await;
    let (status, retry) = (r.status(), r.headers().contains_key("retry-after"));
    let body = r.text().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(retry, "{body}");
    assert!(
        !body.contains(disk.path.to_str().unwrap()),
        "no path in the answer: {body}"
    );
    // The disk is writable again. SQLite keeps a process's connections to a database that
    // opened read-only read-only (they share one read-only WAL index), so writes return with an
    // operator restart, as for the audit log; nothing was lost meanwhile.
    remount("rw");
    drop(s);
    let s = Server::start_in(&data.path().join("data"), opts).await;
    let r = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/datasets",
        Some(scratch_dataset("readonly")),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let after = total(
        call(&s, reqwest::Method::GET, "/api/v1/datasets", None)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(after, before + 1, "nothing lost, one added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_gone_answers_503_and_serves_again_when_it_returns() {
    let s = Server::start(Options {
        env: admin_env(&[("DATAGATE_QUERY__PAGE_CACHE_BYTES", "0")]),
        ..Default::default()
    })
    .await;
    let path = "/api/v1/datasets/environment/air_quality/export?format=csv";
    let good = reqwest::get(s.url(path)).await.unwrap();
    assert_eq!(good.status(), 200);
    let good = good.bytes().await.unwrap();
    let warehouse = s.data_dir().join("warehouse");
    let away = s.data_dir().join("warehouse.away");
    std::fs::rename(&warehouse, &away).unwrap();
    for p in [
        path,
        "/api/v1/datasets/environment/air_quality/rows?limit=5&where=aqi%20%3E%2050",
        "/api/v1/datasets/environment/air_quality/rows?limit=5&offset=100",
        "/api/v1/query?sql=select%20count(*)%20from%20environment.air_quality",
    ] {
        let r = reqwest::get(s.url(p)).await.unwrap();
        assert_eq!(r.status(), 503, "{p}");
        assert!(r.headers().contains_key("retry-after"));
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("warehouse.away") && !body.contains(".parquet"),
            "{body}"
        );
    }
    std::fs::rename(&away, &warehouse).unwrap();
    let again = reqwest::get(s.url(path)).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.bytes().await.unwrap(), good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_servers_own_log_drops_log_lines_not_requests() {
    // The log file (stderr, as a service manager redirects it) is on a small disk; the data and
    // the audit log are elsewhere.
    let disk = SmallDisk::mount("2m");
    let data = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        &disk.path.join("data"),
        Options {
            env: admin_env(&[
                (
                    "DATAGATE_DATA_DIR",
                    data.path().join("data").to_str().unwrap(),
                ),
                ("DATAGATE_LOG__LEVEL", "debug"),
            ]),
            ..Default::default()
        },
    )
    .await;
    let filler = disk.path.join("filler");
    std::fs::write(&filler, vec![0u8; disk.free() as usize]).ok();
    assert!(disk.free() < 4096, "the log's disk is full");
    let r = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/datasets",
        Some(scratch_dataset("logfull")),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Successes, refusals and failures all log; each request is still answered, many times over.
    for round in 0..20 {
        let r = upload(&s, "logfull", csv(200 + round, round as u64)).await;
        assert_eq!(
            r.status(),
            201,
            "upload {round}: {}",
            r.text().await.unwrap()
        );
        let r = reqwest::get(s.url("/api/v1/query?sql=selec%20nothing"))
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = reqwest::get(s.url("/api/v1/datasets/transport/nope"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let rows: Value = call(
            &s,
            reqwest::Method::GET,
            "/api/v1/datasets/transport/logfull/rows?limit=1",
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(rows["rows"][0]["id"], 0, "{rows}");
    }
    // Once there is room again, lines are written again.
    std::fs::remove_file(&filler).unwrap();
    let before = s.log_text().len();
    for _ in 0..5 {
        let r = reqwest::get(s.url("/api/v1/datasets/transport/nope"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = s.log_text();
    assert!(log.len() > before, "logging resumed");
    let since = String::from_utf8_lossy(&log.as_bytes()[before..]);
    assert!(
        since.contains("log lines could not be written and were dropped"),
        "the log says lines were lost: {since}"
    );
    let metrics = s.metrics().await;
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("datagate_log_lines_dropped_total "))
        .expect("the dropped-lines counter")
        .parse()
        .unwrap();
    assert!(dropped >= 20.0, "{dropped}");
}
