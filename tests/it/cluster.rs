//! Several gateways on one PostgreSQL catalog and one S3 bucket: real servers (Debian's
//! PostgreSQL, moto's S3 server) started by the tests, three `datagate serve` processes on them.
//! A client must not be able to tell which replica answered.

use crate::harness::{ADMIN, Options, Server, admin_env, free_port, new_key, revoke_key};
use crate::{pg, s3};
use reqwest::Client;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

/// The gateways' names (`audit.node_id`).
const NODES: [&str; 4] = ["a", "b", "c", "d"];

/// Three gateways (`a`, `b`, `c`) on a fresh database and bucket; `extra` env for each.
#[allow(dead_code)]
pub struct Cluster {
    pub nodes: Vec<Server>,
    /// Each gateway's Flight SQL listener (`http://127.0.0.1:port`).
    pub flight: Vec<String>,
    pub bucket: String,
    /// The shared catalog database (plain; the gateways use TLS).
    pub catalog_url: String,
    env: Vec<(String, String)>,
}

impl Cluster {
    pub async fn start(n: usize, extra: &[(&str, &str)]) -> Cluster {
        let catalog_url = pg::server().fresh_database();
        let bucket = s3::server().fresh_bucket();
        let mut env = admin_env(extra);
        // The gateways reach the database over verified TLS, as across a network.
        env.push((
            "DATAGATE_CATALOG_URL".into(),
            format!(
                "{catalog_url}?sslmode=verify-full&sslrootcert={}",
                pg::server().ca_file()
            ),
        ));
        env.push((
            "DATAGATE_STORAGE__WAREHOUSE_URL".into(),
            format!("s3://{bucket}/warehouse/"),
        ));
        env.extend(s3::server().env());
        let (mut nodes, mut flight) = (Vec::new(), Vec::new());
        // One after the other: each registers the sample catalog (idempotent after the first).
        for i in 0..n {
            let (node, uri) = Self::node(&env, i).await;
            nodes.push(node);
            flight.push(uri);
        }
        Cluster {
            nodes,
            flight,
            bucket,
            catalog_url,
            env,
        }
    }

    async fn node(env: &[(String, String)], i: usize) -> (Server, String) {
        let mut env = env.to_vec();
        env.push(("DATAGATE_AUDIT__NODE_ID".into(), NODES[i].to_string()));
        let flight = format!("127.0.0.1:{}", free_port());
        env.push(("DATAGATE_FLIGHT_LISTEN".into(), flight.clone()));
        let server = Server::start(Options {
            env,
            ..Options::default()
        })
        .await;
        (server, format!("http://{flight}"))
    }

    /// Starts node `i` again (after it was killed) with `extra` env.
    pub async fn restart(&mut self, i: usize, extra: &[(&str, &str)]) {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        (self.nodes[i], self.flight[i]) = Self::node(&env, i).await;
    }

    /// The data files in the bucket.
    pub fn files(&self) -> Vec<String> {
        s3::server().keys(&self.bucket, "warehouse/datasets/")
    }
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(s: &Server, key: Option<&str>, path: &str) -> (u16, Value) {
    let mut r = Client::new().get(s.url(path));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    json_of(r.send().await.unwrap()).await
}

async fn post(s: &Server, key: &str, path: &str, body: Value) -> (u16, Value) {
    json_of(
        Client::new()
            .post(s.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn upload(s: &Server, path: &str, csv: String) -> (u16, Value) {
    json_of(
        Client::new()
            .post(s.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn register_body(name: &str) -> Value {
    json!({
        "department": "transport", "name": name, "title": "站点", "access_level": "open",
        "license": "CC-BY-4.0", "primary_key": ["id"],
        "columns": [
            {"name": "id", "type": "int64"},
            {"name": "name", "type": "utf8"}
        ]
    })
}

fn rows_csv(from: usize, n: usize) -> String {
    let mut s = String::from("id,name\n");
    for i in from..from + n {
        s.push_str(&format!("{i},站点{i}\n"));
    }
    s
}

/// An upload whose body is sent in part: the headers and `sent`, of `total` bytes announced.
fn partial_upload(addr: &str, path: &str, total: usize, sent: &[u8]) -> std::net::TcpStream {
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    write!(
        sock,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: text/csv\r\nContent-Length: {total}\r\n\r\n"
    )
    .unwrap();
    sock.write_all(sent).unwrap();
    sock.flush().unwrap();
    sock
}

/// The rest of a partial upload, then its answer's status.
fn finish_upload(mut sock: std::net::TcpStream, rest: &[u8]) -> u16 {
    use std::io::Read;
    sock.write_all(rest).unwrap();
    sock.flush().unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the status line (the body may follow; Connection stays open).
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_catalog_and_one_bucket() {
    // Compaction past two small files: the racing appends below each compact version 2's files,
    // read back from the bucket.
    let c = Cluster::start(3, &[("DATAGATE_INGEST__COMPACT_AFTER_FILES", "2")]).await;
    let (a, b, cc) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);

    // The sample catalog, registered once, reads the same everywhere.
    let (_, on_a) = get(a, None, "/api/v1/datasets?limit=100").await;
    let (_, on_c) = get(cc, None, "/api/v1/datasets?limit=100").await;
    assert_eq!(on_a["total"], on_c["total"]);
    assert!(on_a["total"].as_u64().unwrap() >= 8, "{on_a}");
    let (st, rows_a) = get(a, None, "/api/v1/datasets/transport/bus_lines/rows?limit=5").await;
    assert_eq!(st, 200, "{rows_a}");
    let (_, rows_c) = get(
        cc,
        None,
        "/api/v1/datasets/transport/bus_lines/rows?limit=5",
    )
    .await;
    assert_eq!(rows_a["rows"], rows_c["rows"]);
    assert!(
        c.files().iter().any(|k| k.ends_with(".parquet")),
        "the data is in the bucket: {:?}",
        c.files()
    );

    // Registered on A, a version uploaded on B, queryable on C at once.
    let (st, body) = post(a, ADMIN, "/api/v1/datasets", register_body("stops")).await;
    assert_eq!(st, 201, "{body}");
    let (st, v) = upload(
        b,
        "/api/v1/datasets/transport/stops/versions",
        rows_csv(0, 100),
    )
    .await;
    assert_eq!((st, v["version"].as_i64()), (201, Some(1)), "{v}");
    let (st, page) = get(cc, None, "/api/v1/datasets/transport/stops/rows?limit=1000").await;
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["rows"].as_array().unwrap().len(), 100);
    let (st, v) = upload(
        a,
        "/api/v1/datasets/transport/stops/versions",
        rows_csv(100, 5),
    )
    .await;
    assert_eq!((st, v["version"].as_i64()), (201, Some(2)), "{v}");
    let (_, counted) = post(
        cc,
        ADMIN,
        "/api/v1/query",
        json!({"sql": "SELECT count(*) AS n FROM transport.stops"}),
    )
    .await;
    assert_eq!(counted["rows"][0]["n"], 105, "{counted}");

    // Two uploads to one dataset at once, on A and B: both start from version 2; one commits,
    // the other gets 409 and leaves nothing.
    let path = "/api/v1/datasets/transport/stops/versions";
    let body_a = rows_csv(1000, 2000);
    let body_b = rows_csv(5000, 3000);
    let (half_a, half_b) = (body_a.len() / 2, body_b.len() / 2);
    let sock_a = partial_upload(&a.addr, path, body_a.len(), &body_a.as_bytes()[..half_a]);
    let sock_b = partial_upload(&b.addr, path, body_b.len(), &body_b.as_bytes()[..half_b]);
    // Both have read the dataset's head before either finishes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rest_a = body_a.as_bytes()[half_a..].to_vec();
    let rest_b = body_b.as_bytes()[half_b..].to_vec();
    let (sa, sb) = tokio::join!(
        tokio::task::spawn_blocking(move || finish_upload(sock_a, &rest_a)),
        tokio::task::spawn_blocking(move || finish_upload(sock_b, &rest_b))
    );
    let mut statuses = [sa.unwrap(), sb.unwrap()];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "one wins, one is told it lost");
    let (_, d) = get(cc, None, "/api/v1/datasets/transport/stops").await;
    assert_eq!(d["current_version"], 3);
    let (_, versions) = get(a, None, "/api/v1/datasets/transport/stops/versions").await;
    assert_eq!(versions.as_array().unwrap().len(), 3, "{versions}");
    let rows = d["row_count"].as_u64().unwrap();
    assert!(rows == 105 + 2000 || rows == 105 + 3000, "{d}");
    // Each started from version 2's two small files and rewrote them with its rows into one:
    // the winner's version is that one file, and the bucket keeps versions 1 and 2's files and
    // it, nothing of the loser's nor the winner's upload as it came.
    assert_eq!(versions[0]["files"], 1, "{versions}");
    let stops: Vec<String> = c
        .files()
        .into_iter()
        .filter(|k| k.contains("/transport/stops/") && k.ends_with(".parquet"))
        .collect();
    assert_eq!(stops.len(), 3, "{stops:?}");

    // A key revoked on A is refused on B and C at their next request.
    let consumer = new_key(a, "consumer", None).await;
    assert_eq!(get(b, Some(&consumer), "/api/v1/me").await.0, 200);
    revoke_key(a, &consumer).await;
    assert_eq!(get(b, Some(&consumer), "/api/v1/me").await.0, 401);
    assert_eq!(get(cc, Some(&consumer), "/api/v1/me").await.0, 401);

    // A grant approved on C opens the conditional data on A.
    let reader = new_key(b, "consumer", None).await;
    let legal = "/api/v1/datasets/justice/legal_aid_cases/rows?limit=1";
    assert_eq!(get(a, Some(&reader), legal).await.0, 403);
    let (st, app) = post(
        b,
        &reader,
        "/api/v1/datasets/justice/legal_aid_cases/applications",
        json!({"purpose": "研究"}),
    )
    .await;
    assert_eq!(st, 201, "{app}");
    let (st, decided) = post(
        cc,
        ADMIN,
        &format!(
            "/api/v1/applications/{}/approve",
            app["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await;
    assert!(st == 200 || st == 201, "{decided}");
    assert_eq!(get(a, Some(&reader), legal).await.0, 200);
    // Masked values (a hash mask among them) are the same whichever replica answers: the
    // gateways agree on one masking key.
    let page = "/api/v1/datasets/justice/legal_aid_cases/rows?limit=20";
    let (_, on_a) = get(a, Some(&reader), page).await;
    let (_, on_b) = get(b, Some(&reader), page).await;
    let (_, on_c) = get(cc, Some(&reader), page).await;
    assert!(!on_a["rows"].as_array().unwrap().is_empty());
    assert_eq!(on_a["rows"], on_b["rows"]);
    assert_eq!(on_a["rows"], on_c["rows"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_upload_leaves_nothing_visible_and_the_others_keep_serving() {
    // Small Parquet files, so the interrupted upload completes some before it dies.
    let mut c = Cluster::start(3, &[("DATAGATE_INGEST__TARGET_FILE_BYTES", "1048576")]).await;
    let (st, body) = post(&c.nodes[0], ADMIN, "/api/v1/datasets", register_body("big")).await;
    assert_eq!(st, 201, "{body}");
    let path = "/api/v1/datasets/transport/big/versions";
    let (st, v) = upload(&c.nodes[0], path, rows_csv(0, 10)).await;
    assert_eq!(st, 201, "{v}");
    let files_before = c.files();

    // B takes a large upload and dies in the middle of it.
    let body = rows_csv(0, 600_000);
    let sent = &body.as_bytes()[..body.len() * 9 / 10];
    let _sock = partial_upload(&c.nodes[1].addr, path, body.len(), sent);
    let start = std::time::Instant::now();
    while c.files().len() <= files_before.len() && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let orphans: Vec<String> = c
        .files()
        .into_iter()
        .filter(|f| !files_before.contains(f))
        .collect();
    assert!(!orphans.is_empty(), "the upload wrote files before it died");
    c.nodes[1].kill();

    // Nothing of it is visible; A and C serve on.
    for node in [0, 2] {
        let (st, d) = get(&c.nodes[node], None, "/api/v1/datasets/transport/big").await;
        assert_eq!((st, d["current_version"].as_i64()), (200, Some(1)), "{d}");
        let (st, rows) = get(
            &c.nodes[node],
            None,
            "/api/v1/datasets/transport/big/rows?limit=100",
        )
        .await;
        assert_eq!((st, rows["rows"].as_array().map(Vec::len)), (200, Some(10)));
    }
    // Files that no version names are swept once older than the grace period (B, restarted
    // with a short one; a sweep never touches files younger than it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.restart(1, &[("DATAGATE_INGEST__ORPHAN_GRACE_SECS", "1")])
        .await;
    let left: Vec<String> = c
        .files()
        .into_iter()
        .filter(|f| orphans.contains(f))
        .collect();
    assert!(left.is_empty(), "orphans swept: {left:?}");
    assert_eq!(c.files(), files_before, "the committed files stay");
    let (st, v) = upload(&c.nodes[1], path, rows_csv(10, 10)).await;
    assert_eq!((st, v["version"].as_i64()), (201, Some(2)), "{v}");
}

/// Requests of one key spread round-robin over the gateways as fast as they answer, for
/// `secs`: (allowed, refused, elapsed).
async fn hammer(c: &Cluster, key: &str, secs: f64) -> (u64, u64, f64) {
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let urls: Vec<String> = c.nodes.iter().map(|n| n.url("/api/v1/me")).collect();
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let client = Client::new();
            let (mut ok, mut refused, mut i) = (0u64, 0u64, w);
            while start.elapsed().as_secs_f64() < secs {
                let r = client
                    .get(&urls[i % urls.len()])
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => ok += 1,
                    429 => refused += 1,
                    other => panic!("unexpected {other}"),
                }
                i += 1;
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.unwrap();
        ok += o;
        refused += r;
    }
    (ok, refused, start.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_rate_and_daily_bytes_hold_for_the_cluster_not_per_replica() {
    // The standard tier: 10 requests per second, bursts of 10; 20 kB a day.
    let c = Cluster::start(
        3,
        &[
            ("DATAGATE_TIERS__STANDARD__REQUESTS", "10"),
            ("DATAGATE_TIERS__STANDARD__WINDOW_SECS", "1"),
            ("DATAGATE_TIERS__STANDARD__BURST", "10"),
            ("DATAGATE_TIERS__STANDARD__DAILY_BYTES", "20000"),
            ("DATAGATE_RATE_LIMITS__USAGE_FLUSH_SECS", "1"),
        ],
    )
    .await;
    let key = new_key(&c.nodes[0], "consumer", Some("standard")).await;
    let (ok, refused, secs) = hammer(&c, &key, 4.0).await;
    // GCRA over the cluster: the burst plus the rate over the time, whichever replica answered
    // (each replica alone would let three times as many through).
    let expected = 10.0 + 10.0 * secs;
    let ratio = ok as f64 / expected;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{ok} allowed ({refused} refused) in {secs:.2} s; the tier's rate allows {expected:.0}"
    );
    assert!(refused > ok, "the clients asked for far more than the rate");

    // Bytes served by A count on B and C (within one sync interval).
    tokio::time::sleep(Duration::from_secs(2)).await; // a full burst again
    let reader = new_key(&c.nodes[0], "consumer", Some("standard")).await;
    let export = "/api/v1/datasets/market/market_entities/export?format=csv";
    let mut served = 0;
    while served < 20_000 {
        let r = Client::new()
            .get(c.nodes[0].url(export))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        served += r.bytes().await.unwrap().len();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut answers = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        answers = Vec::new();
        for node in &c.nodes[1..] {
            let r = Client::new()
                .get(node.url(export))
                .bearer_auth(&reader)
                .send()
                .await
                .unwrap();
            answers.push(r.status().as_u16());
        }
        if answers.iter().all(|s| *s == 429) {
            break;
        }
    }
    assert_eq!(answers, [429, 429], "the day's bytes are the cluster's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_shared_rate_state_fails_open_serves_and_closed_refuses() {
    let c = Cluster::start(1, &[]).await;
    let mut closed_env = vec![
        ("DATAGATE_RATE_LIMITS__SHARED_FAILURE", "closed"),
        ("DATAGATE_AUDIT__NODE_ID", "closed"),
    ];
    closed_env.push(("DATAGATE_TIERS__STANDARD__REQUESTS", "1000"));
    let closed = {
        let mut env = c.env.clone();
        env.extend(
            closed_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Server::start(Options {
            env,
            ..Options::default()
        })
        .await
    };
    let key = new_key(&c.nodes[0], "consumer", Some("standard")).await;
    assert_eq!(get(&c.nodes[0], Some(&key), "/api/v1/me").await.0, 200);
    assert_eq!(get(&closed, Some(&key), "/api/v1/me").await.0, 200);
    // The state becomes unreadable (the catalog itself still answers).
    pg::server().psql(
        &c.catalog_url,
        "ALTER TABLE rate_state RENAME TO rate_state_away",
    );
    assert_eq!(
        get(&c.nodes[0], Some(&key), "/api/v1/me").await.0,
        200,
        "open: served"
    );
    let r = Client::new()
        .get(closed.url("/api/v1/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "closed: refused");
    assert!(r.headers().contains_key("retry-after"));
    pg::server().psql(
        &c.catalog_url,
        "ALTER TABLE rate_state_away RENAME TO rate_state",
    );
    assert_eq!(
        get(&closed, Some(&key), "/api/v1/me").await.0,
        200,
        "and back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_replica_chains_signs_and_archives_its_own_audit_log_and_all_verify() {
    let bucket = s3::server().fresh_bucket();
    let archive = format!("s3://{bucket}/audit/");
    let mut c = Cluster::start(
        3,
        &[
            ("DATAGATE_AUDIT__SEGMENT_MAX_BYTES", "4096"),
            ("DATAGATE_AUDIT__ARCHIVE_URL", archive.as_str()),
            ("DATAGATE_AUDIT__ARCHIVE_EVERY_SECS", "1"),
        ],
    )
    .await;
    let auditor = new_key(&c.nodes[0], "auditor", None).await;
    for round in 0..20 {
        for node in &c.nodes {
            let path = format!(
                "/api/v1/datasets/transport/bus_lines/rows?limit={}",
                round + 1
            );
            assert_eq!(get(node, None, &path).await.0, 200);
        }
    }
    // Every record names the gateway that wrote it.
    for (i, node) in c.nodes.iter().enumerate() {
        let (st, page) = get(node, Some(&auditor), "/api/v1/audit/events?limit=50").await;
        assert_eq!(st, 200, "{page}");
        let rows = page["rows"].as_array().unwrap();
        assert!(!rows.is_empty());
        for r in rows {
            assert_eq!(r["node_id"], NODES[i], "{r}");
        }
    }
    // Each gateway's sealed segments land under its own prefix.
    let mut archived = Vec::new();
    for _ in 0..100 {
        archived = s3::server().keys(&bucket, "audit/");
        let done = NODES[..3].iter().all(|n| {
            archived
                .iter()
                .any(|k| k.starts_with(&format!("audit/{n}/segment-")))
                && archived.contains(&format!("audit/{n}/public.key"))
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in &NODES[..3] {
        assert!(
            archived
                .iter()
                .any(|k| k.starts_with(&format!("audit/{n}/segment-"))),
            "{n}'s segments archived: {archived:?}"
        );
    }
    // One log for the auditor: SQL over audit.events on A reads B's and C's archived records
    // too; the events listing pages A's own chain.
    let node_ids = |rows: &Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .filter_map(|row| row["node_id"].as_str().map(str::to_string))
            .collect()
    };
    let mut by_node = Value::Null;
    for _ in 0..60 {
        let (st, r) = post(
            &c.nodes[0],
            &auditor,
            "/api/v1/audit/query",
            json!({"sql": "SELECT node_id, count(*) AS n FROM audit.events GROUP BY node_id ORDER BY node_id"}),
        )
        .await;
        assert_eq!(st, 200, "{r}");
        by_node = r["rows"].clone();
        if node_ids(&by_node) == ["a", "b", "c"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(node_ids(&by_node), ["a", "b", "c"], "{by_node}");
    let (_, page) = get(
        &c.nodes[0],
        Some(&auditor),
        "/api/v1/audit/events?limit=500",
    )
    .await;
    assert!(
        page["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["node_id"] == "a"),
        "the listing is A's chain"
    );
    for node in &mut c.nodes {
        node.terminate();
    }
    // The auditor verifies every gateway's chain from the bucket, each with its own key.
    let verify = || {
        let mut cmd = std::process::Command::new(crate::harness::binary());
        cmd.args(["audit", "verify", "--archive", &archive])
            .envs(s3::server().env());
        cmd.output().unwrap()
    };
    let out = verify();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report}");
    assert_eq!(report["ok"], true);
    for n in &NODES[..3] {
        assert_eq!(report["nodes"][n]["ok"], true, "{report}");
        assert!(report["nodes"][n]["events"].as_u64().unwrap() > 0);
    }
    let keys: std::collections::HashSet<&str> = NODES[..3]
        .iter()
        .map(|n| report["nodes"][n]["public_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "each gateway signs with its own key");
    // A segment of b's, doctored in the bucket: b's chain fails, a's and c's still hold.
    let segment = archived
        .iter()
        .find(|k| k.starts_with("audit/b/segment-"))
        .unwrap();
    let text = String::from_utf8(s3::server().get(&bucket, segment)).unwrap();
    let doctored = text.replacen("bus_lines", "bus_lineZ", 1);
    assert_ne!(doctored, text);
    s3::server().put(&bucket, segment, doctored.as_bytes());
    let out = verify();
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["nodes"]["b"]["ok"], false, "{report}");
    assert_eq!(report["nodes"]["a"]["ok"], true);
    assert_eq!(report["nodes"]["c"]["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_shows_the_clusters_usage_counters() {
    let c = Cluster::start(3, &[("DATAGATE_RATE_LIMITS__USAGE_FLUSH_SECS", "1")]).await;
    let path = "/api/v1/datasets/environment/air_quality";
    // Reads on A and B, downloads on C.
    for _ in 0..3 {
        assert_eq!(
            get(&c.nodes[0], None, &format!("{path}/rows?limit=1"))
                .await
                .0,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get(&c.nodes[1], None, &format!("{path}/rows?limit=1"))
                .await
                .0,
            200
        );
    }
    let r = Client::new()
        .get(c.nodes[2].url(&format!("{path}/export?format=csv")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    // Within a sync interval or two, every replica answers the sums.
    let mut seen = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen = Vec::new();
        for node in &c.nodes {
            let (_, d) = get(node, None, path).await;
            seen.push((
                d["usage"]["reads_30d"].as_u64(),
                d["usage"]["downloads_total"].as_u64(),
            ));
        }
        if seen.iter().all(|s| *s == (Some(5), Some(1))) {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![(Some(5), Some(1)); 3],
        "reads 3 + 2, one download, on every replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_a_shared_catalog_needs_a_name() {
    let url = pg::server().fresh_database();
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(crate::harness::binary())
        .arg("serve")
        .env("DATAGATE_CATALOG_URL", &url)
        .env("DATAGATE_LISTEN", "127.0.0.1:0")
        .env("DATAGATE_DATA_DIR", data.path())
        .current_dir(crate::harness::repo_root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Refused at once; a gateway that starts serving instead fails the test, not hangs it.
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("a gateway without audit.node_id started on a shared catalog");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("audit.node_id"), "{stderr}");
}

/// A portal form POST (from the gateway's own pages: its `Origin`), with `cookie` if any.
async fn portal_post(
    s: &Server,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut r = client
        .post(s.url(path))
        .header("origin", s.base.clone())
        .form(form);
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    r.send().await.unwrap()
}

/// A portal page with `cookie`: its status, `Location` and body.
async fn portal_page(s: &Server, path: &str, cookie: &str) -> (u16, String, String) {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(s.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, location, r.text().await.unwrap())
}

/// Signs in on `s`; the session cookie (`name=value`).
async fn portal_sign_in(s: &Server, key: &str) -> String {
    let r = portal_post(s, "/signin", None, &[("key", key), ("next", "/me")]).await;
    assert_eq!(
        r.status(),
        303,
        "sign-in answers a redirect: {}",
        s.log_tail(5)
    );
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

/// A visitor signed in on one gateway is signed in on every gateway (a load balancer need not
/// be sticky); signing out or revoking the key on any gateway ends it everywhere; the shared
/// catalog holds neither the session id nor the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_session_started_on_one_replica_holds_on_every_replica() {
    let c = Cluster::start(3, &[]).await;
    let (a, b, cc) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let consumer = new_key(a, "consumer", None).await;
    let cookie = portal_sign_in(a, &consumer).await;
    for s in [a, b, cc] {
        let (st, _, me) = portal_page(s, "/me", &cookie).await;
        assert_eq!(st, 200, "signed in on {}", s.base);
        assert!(me.contains("consumer") && me.contains("standard"), "{me}");
    }
    // What the database holds says nothing of the key or the session.
    let stored = pg::server().psql(
        &c.catalog_url,
        "SELECT string_agg(id_hash || ' ' || key_id || ' ' || encode(sealed_key, 'hex'), ';') \
         FROM portal_sessions",
    );
    let id = consumer.split('_').nth(1).unwrap();
    let secret = consumer.rsplit('_').next().unwrap();
    let session_id = cookie.split('=').nth(1).unwrap();
    assert!(
        stored.contains(id),
        "the session names its key's id: {stored}"
    );
    assert!(
        !stored.contains(secret) && !stored.contains(&hex_of(secret)),
        "{stored}"
    );
    assert!(!stored.contains(session_id), "{stored}");

    // Signed out on B: signed out on C too.
    assert_eq!(
        portal_post(b, "/signout", Some(&cookie), &[])
            .await
            .status(),
        303
    );
    let (st, location, _) = portal_page(cc, "/me", &cookie).await;
    assert_eq!(st, 303);
    assert!(location.starts_with("/signin"), "{location}");

    // Two sessions of one key; the key revoked on C: B's next page ends the session it views
    // and the other one too.
    let first = portal_sign_in(a, &consumer).await;
    let second = portal_sign_in(cc, &consumer).await;
    assert_eq!(portal_page(b, "/me", &second).await.0, 200);
    revoke_key(cc, &consumer).await;
    let (st, location, _) = portal_page(b, "/", &first).await;
    assert_eq!(st, 303);
    assert!(location.contains("expired=1"), "{location}");
    let (st, location, _) = portal_page(a, "/me", &second).await;
    assert_eq!(
        (st, location.starts_with("/signin")),
        (303, true),
        "{location}"
    );
    let left = pg::server().psql(&c.catalog_url, "SELECT count(*) FROM portal_sessions");
    assert_eq!(left, "0");
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

mod flight_across_replicas {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use arrow_flight::flight_service_client::FlightServiceClient;
    use arrow_flight::sql::{
        ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
        CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
        ProstMessageExt,
    };
    use arrow_flight::{Action, FlightDescriptor, FlightInfo, Ticket};
    use futures::TryStreamExt;
    use prost::Message;
    use std::sync::Arc;
    use tonic::transport::Channel;
    use tonic::{Code, Request};

    async fn client(uri: &str) -> FlightServiceClient<Channel> {
        for _ in 0..50 {
            if let Ok(c) = Channel::from_shared(uri.to_string())
                .unwrap()
                .connect()
                .await
            {
                return FlightServiceClient::new(c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no Flight SQL listener at {uri}");
    }

    fn bearer<T>(message: T, key: &str) -> Request<T> {
        let mut r = Request::new(message);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        r
    }

    async fn info(uri: &str, key: &str, cmd: Vec<u8>) -> Result<FlightInfo, tonic::Status> {
        let desc = FlightDescriptor::new_cmd(cmd);
        client(uri)
            .await
            .get_flight_info(bearer(desc, key))
            .await
            .map(|r| r.into_inner())
    }

    /// The first message of a streaming answer (`None`: the stream ended empty), or its error
    /// whether it came with the answer's headers or in the stream.
    async fn first<T>(
        call: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    ) -> Result<Option<T>, tonic::Status> {
        call?.into_inner().message().await
    }

    /// The `line_id` of every row of an HTTP query's answer.
    fn line_ids(answer: &Value) -> Vec<String> {
        answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["line_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The first column of every row `ticket` gives on `uri`, as text.
    async fn rows(uri: &str, key: &str, ticket: Ticket) -> Result<Vec<String>, tonic::Status> {
        let stream = client(uri)
            .await
            .do_get(bearer(ticket, key))
            .await?
            .into_inner();
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                stream.map_err(arrow_flight::error::FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(batches
            .iter()
            .flat_map(|b| {
                let col =
                    arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
                let col = col.as_any().downcast_ref::<StringArray>().unwrap().clone();
                col.iter()
                    .map(|v| v.unwrap_or("").to_string())
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// A statement planned on A runs on B; a prepared statement made on A, its parameters
    /// bound on B, executed on C and fetched on A answers what the HTTP API answers. Another
    /// key gets nothing from any of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ticket_or_a_prepared_statement_runs_on_any_replica() {
        let c = Cluster::start(3, &[]).await;
        let (fa, fb, fc) = (&c.flight[0], &c.flight[1], &c.flight[2]);
        let alice = new_key(&c.nodes[0], "consumer", None).await;
        let bob = new_key(&c.nodes[1], "consumer", None).await;

        let sql = "SELECT line_id FROM transport.bus_lines ORDER BY line_id LIMIT 7";
        let cmd = CommandStatementQuery {
            query: sql.into(),
            transaction_id: None,
        };
        let planned = info(fa, &alice, cmd.as_any().encode_to_vec())
            .await
            .unwrap();
        let ticket = planned.endpoint[0].ticket.clone().unwrap();
        let (_, http) = post(&c.nodes[2], &alice, "/api/v1/query", json!({ "sql": sql })).await;
        let want = line_ids(&http);
        assert_eq!(want.len(), 7);
        assert_eq!(
            rows(fb, &alice, ticket.clone()).await.unwrap(),
            want,
            "on B"
        );
        let stolen = rows(fc, &bob, ticket.clone()).await.unwrap_err();
        assert_eq!(stolen.code(), Code::NotFound, "{stolen}");
        assert_eq!(
            rows(fa, &alice, ticket).await.unwrap(),
            want,
            "on A, where it was planned"
        );

        // Prepared on A.
        let text = "SELECT line_id FROM transport.bus_lines WHERE stop_count = $1 ORDER BY line_id";
        let create = ActionCreatePreparedStatementRequest {
            query: text.into(),
            transaction_id: None,
        };
        let action = Action {
            r#type: "CreatePreparedStatement".into(),
            body: create.as_any().encode_to_vec().into(),
        };
        let answer = first(client(fa).await.do_action(bearer(action, &alice)).await)
            .await
            .unwrap()
            .unwrap();
        let created: ActionCreatePreparedStatementResult = Any::decode(&*answer.body)
            .unwrap()
            .unpack()
            .unwrap()
            .unwrap();
        // Parameters bound on B: two executions.
        let counts = [10i64, 20];
        let batch = RecordBatch::try_from_iter([(
            "$1",
            Arc::new(Int64Array::from(counts.to_vec())) as ArrayRef,
        )])
        .unwrap();
        let cmd = CommandPreparedStatementQuery {
            prepared_statement_handle: created.prepared_statement_handle.clone(),
        };
        let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
        let data: Vec<_> = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter([Ok(batch)]))
            .try_collect()
            .await
            .unwrap();
        let put = first(
            client(fb)
                .await
                .do_put(bearer(futures::stream::iter(data.clone()), &alice))
                .await,
        )
        .await
        .unwrap()
        .unwrap();
        let bound: DoPutPreparedStatementResult =
            DoPutPreparedStatementResult::decode(&*put.app_metadata).unwrap();
        let handle = bound
            .prepared_statement_handle
            .expect("a handle with the parameters");
        let refused = first(
            client(fc)
                .await
                .do_put(bearer(futures::stream::iter(data), &bob))
                .await,
        )
        .await
        .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::NotFound,
            "bob binding alice's statement"
        );
        // Executed on C, fetched on A.
        let cmd = CommandPreparedStatementQuery {
            prepared_statement_handle: handle,
        };
        let executed = info(fc, &alice, cmd.as_any().encode_to_vec())
            .await
            .unwrap();
        assert_eq!(executed.endpoint.len(), 2, "one execution per bound row");
        for (endpoint, count) in executed.endpoint.iter().zip(counts) {
            let (_, http) = post(
                &c.nodes[1],
                &alice,
                "/api/v1/query",
                json!({ "sql": text, "params": [count] }),
            )
            .await;
            let want = line_ids(&http);
            assert!(!want.is_empty(), "stop_count = {count} matches some lines");
            let got = rows(fa, &alice, endpoint.ticket.clone().unwrap())
                .await
                .unwrap();
            assert_eq!(got, want, "stop_count = {count}");
        }
        // Closed on B (which holds nothing of it): fine, and bob cannot close it.
        let close = arrow_flight::sql::ActionClosePreparedStatementRequest {
            prepared_statement_handle: created.prepared_statement_handle,
        };
        let action = |key: &str| {
            bearer(
                Action {
                    r#type: "ClosePreparedStatement".into(),
                    body: close.as_any().encode_to_vec().into(),
                },
                key,
            )
        };
        let e = first(client(fb).await.do_action(action(&bob)).await)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        first(client(fb).await.do_action(action(&alice)).await)
            .await
            .expect("alice closes her statement");
    }
}
