//! Distributed query: a gateway and two `datagate worker` processes (the real binary) on one
//! local warehouse. The same queries answer the same distributed and local; masked values never
//! cross the link between gateway and workers; a dropped query stops the workers' CPU; a worker
//! killed mid-query gets a clean 503; a worker without the secret is refused.

use crate::harness::{ADMIN, Options, Server, admin_env, binary, free_port, repo_root, run};
use crate::s3;
use reqwest::Client;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "test-worker-secret-0123456789";

/// A `datagate worker` process; killed when dropped.
struct Worker {
    child: Option<Child>,
    port: u16,
}

impl Worker {
    fn start(data_dir: &Path, secret: &str) -> Worker {
        Self::start_with::<&str, &str>(data_dir, secret, &[])
    }

    fn start_with<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        data_dir: &Path,
        secret: &str,
        env: &[(K, V)],
    ) -> Worker {
        let port = free_port();
        let log = data_dir.with_extension(format!("worker-{port}.log"));
        let child = Command::new(binary())
            .current_dir(repo_root())
            .args(["worker", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .env("DATAGATE_WORKER_SECRET", secret)
            .env("DATAGATE_LOG__FORMAT", "json")
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn datagate worker");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "worker did not listen: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Worker {
            child: Some(child),
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// CPU time the process has used, in clock ticks (1/100 s).
    fn cpu_ticks(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name (which may hold spaces): utime is the 12th, stime 13th.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay in front of a worker that keeps every byte crossing it, each way apart.
struct Relay {
    port: u16,
    /// What the worker received (plans, from the gateway or another worker's stage).
    sent: Arc<Mutex<Vec<u8>>>,
    /// What the worker sent back (its batches).
    returned: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let returned = Arc::new(Mutex::new(Vec::new()));
        let (to, from) = (sent.clone(), returned.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pipe(ri, wo, to.clone()));
                tokio::spawn(pipe(ro, wi, from.clone()));
            }
        });
        Relay {
            port,
            sent,
            returned,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn returned(&self) -> Vec<u8> {
        self.returned.lock().unwrap().clone()
    }

    fn sent(&self) -> Vec<u8> {
        self.sent.lock().unwrap().clone()
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Gateway environment distributing every query that reads anything over `workers`.
fn distributed_env(workers: &[String], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = admin_env(&[]);
    env.extend([
        (
            "DATAGATE_QUERY__WORKERS".to_string(),
            format!(
                "[{}]",
                workers
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        ("DATAGATE_WORKER_SECRET".into(), SECRET.into()),
        ("DATAGATE_QUERY__DISTRIBUTE_ABOVE_BYTES".into(), "0".into()),
        // One task per few bytes: even the sample's small files are split over both workers.
        ("DATAGATE_QUERY__WORKER_TASK_BYTES".into(), "1".into()),
        // Checked often, so the tests that stop a worker see it down soon.
        ("DATAGATE_QUERY__WORKER_CHECK_MS".into(), "300".into()),
    ]);
    // Last, so `extra` overrides any of the above (the server takes a variable's last value).
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn post_query(
    c: &Client,
    s: &Server,
    key: Option<&str>,
    sql: &str,
    format: &str,
) -> (u16, Vec<u8>) {
    let mut r = c
        .post(s.url("/api/v1/query"))
        .json(&json!({"sql": sql, "format": format}));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

/// A result as sorted CSV lines, whatever its format (row order is not part of an answer
/// without ORDER BY; batch boundaries are not part of any).
fn rows_of(format: &str, body: &[u8]) -> Vec<String> {
    use arrow::record_batch::RecordBatch;
    let to_csv = |batches: Vec<RecordBatch>| -> String {
        let mut out = Vec::new();
        {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(false)
                .build(&mut out);
            for b in &batches {
                w.write(b).unwrap();
            }
        }
        String::from_utf8(out).unwrap()
    };
    let text = match format {
        "arrow" => {
            let reader = arrow::ipc::reader::StreamReader::try_new(
                std::io::Cursor::new(body.to_vec()),
                None,
            )
            .unwrap();
            to_csv(reader.map(|b| b.unwrap()).collect())
        }
        "parquet" => {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes::Bytes::from(body.to_vec()),
            )
            .unwrap()
            .build()
            .unwrap();
            to_csv(reader.map(|b| b.unwrap()).collect())
        }
        "json" => {
            let v: Value = serde_json::from_slice(body).unwrap();
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.to_string() + "\n")
                .collect()
        }
        "csv" => String::from_utf8(body.to_vec())
            .unwrap()
            .split_once('\n')
            .map(|(_, rows)| rows.to_string())
            .unwrap_or_default(),
        _ => String::from_utf8(body.to_vec()).unwrap(),
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Aggregates, joins, window functions, DISTINCT, top-N: each with a total order.
const QUERIES: [&str; 8] = [
    "SELECT district, count(*) AS n, sum(registered_capital) AS capital, avg(registered_capital) AS mean, sum(length(entity_name)) AS letters FROM market.market_entities GROUP BY district ORDER BY district",
    "SELECT industry, count(*) AS n FROM market.market_entities WHERE established_date >= DATE '2015-01-01' GROUP BY industry HAVING count(*) > 10 ORDER BY industry",
    "SELECT e.penalty_type, count(*) AS n, sum(e.fine_amount) AS fines, count(m.uscc) AS matched FROM market.enforcement_decisions e LEFT JOIN market.market_entities m ON e.party_uscc = m.uscc GROUP BY e.penalty_type ORDER BY e.penalty_type",
    "WITH s AS (SELECT district, count(*) AS stops FROM transport.bus_stops GROUP BY district) SELECT m.district, count(*) AS entities, max(s.stops) AS stops FROM market.market_entities m JOIN s ON m.district = s.district GROUP BY m.district ORDER BY m.district",
    "SELECT district, industry, count(*) AS n, sum(count(*)) OVER (PARTITION BY district) AS in_district, rank() OVER (PARTITION BY district ORDER BY count(*) DESC, industry) AS place FROM market.market_entities GROUP BY district, industry ORDER BY district, industry",
    "SELECT count(DISTINCT entity_name) AS names, count(DISTINCT district) AS districts, min(established_date) AS first, max(established_date) AS last FROM market.market_entities",
    "SELECT uscc, registered_capital FROM market.market_entities ORDER BY registered_capital DESC, uscc LIMIT 10",
    "SELECT a.district, count(*) AS pairs, count(DISTINCT b.industry) AS industries FROM market.market_entities a JOIN market.market_entities b ON a.uscc = b.uscc GROUP BY a.district ORDER BY a.district",
];

const FORMATS: [&str; 5] = ["json", "ndjson", "csv", "arrow", "parquet"];

/// What the gateway answered: every query in every format, every export in every format.
async fn answers(s: &Server) -> Vec<(String, Vec<String>)> {
    let c = Client::new();
    let mut out = Vec::new();
    for sql in QUERIES {
        for format in FORMATS {
            let (st, body) = post_query(&c, s, Some(ADMIN), sql, format).await;
            assert_eq!(
                st,
                200,
                "{sql} ({format}): {}",
                String::from_utf8_lossy(&body)
            );
            let rows = rows_of(format, &body);
            assert!(!rows.is_empty(), "{sql} ({format})");
            out.push((format!("{format}: {sql}"), rows));
        }
    }
    for format in FORMATS {
        let r = c
            .get(s.url(&format!(
                "/api/v1/datasets/market/market_entities/export?format={format}"
            )))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "export {format}");
        let rows = rows_of(format, &r.bytes().await.unwrap());
        out.push((format!("export {format}"), rows));
    }
    out
}

/// The sample catalog plus three appended versions of synthetic market entities (more files,
/// so scans have partitions to spread), in `data_dir`.
async fn prepare(data_dir: &Path) {
    let s = Server::start_in(
        data_dir,
        Options {
            env: admin_env(&[]),
            ..Options::default()
        },
    )
    .await;
    let c = Client::new();
    let scratch = tempfile::tempdir().unwrap();
    for seed in 1..=3 {
        let file = scratch.path().join(format!("m{seed}.csv"));
        let out = run(
            &[
                "gen",
                "market_entities",
                "--rows",
                "8000",
                "--seed",
                &seed.to_string(),
                "--out",
                file.to_str().unwrap(),
            ],
            &[],
            &repo_root(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = c
            .post(s.url("/api/v1/datasets/market/market_entities/versions?mode=append"))
            .bearer_auth(ADMIN)
            .header("content-type", "text/csv")
            .body(std::fs::read(&file).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
}

/// Whether `r` opens a transfer: its `begin`, or the one `read` record of an answer that was
/// whole in memory before the audit layer looked (a small result can finish that early).
fn opens_transfer(r: &Value) -> bool {
    r["kind"] == "begin" || r["kind"] == "read"
}

/// Whether a transfer of `sql` names workers in its records (the query ran distributed).
fn ran_distributed(records: &[Value], sql: &str) -> bool {
    records
        .iter()
        .any(|r| opens_transfer(r) && r["query_text"] == sql && !r["workers"].is_null())
}

/// A gateway on `data_dir` distributing over `workers` (see [`distributed_env`]).
async fn gateway(data_dir: &Path, workers: &[String], extra: &[(&str, &str)]) -> Server {
    Server::start_in(
        data_dir,
        Options {
            env: distributed_env(workers, extra),
            ..Options::default()
        },
    )
    .await
}

/// Audit records (newest first) as an admin reads them.
async fn audit_records(s: &Server) -> Vec<Value> {
    s.audit_records("limit=1000").await
}

#[tokio::test]
async fn distributed_answers_equal_local_answers_and_are_audited_as_distributed() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    prepare(&data_dir).await;
    // No page cache: exports are planned (and so distributed), not sliced from memory.
    let no_cache = [("DATAGATE_QUERY__PAGE_CACHE_BYTES", "0")];
    let local = {
        let s = Server::start_in(
            &data_dir,
            Options {
                env: admin_env(&no_cache),
                ..Options::default()
            },
        )
        .await;
        answers(&s).await
    };
    let workers = [
        Worker::start(&data_dir, SECRET),
        Worker::start(&data_dir, SECRET),
    ];
    let urls: Vec<String> = workers.iter().map(Worker::url).collect();
    // Checks of 5 s at most: a check of a second (the least) can run out under the whole
    // suite's load, and with both workers counted down a query runs locally (once, in the
    // whole suite, one of the five formats of a query was audited as local).
    let slow_checks = [no_cache[0], ("DATAGATE_QUERY__WORKER_CHECK_MS", "5000")];
    let s = gateway(&data_dir, &urls, &slow_checks).await;
    let (_, ready) = s.get_json("/readyz").await;
    for u in &urls {
        assert_eq!(ready["checks"][format!("worker {u}/")], "ok", "{ready}");
    }
    let distributed = answers(&s).await;
    assert_eq!(local.len(), distributed.len());
    for ((what, l), (_, d)) in local.iter().zip(&distributed) {
        assert_eq!(l, d, "{what}: local and distributed answers differ");
    }
    // The records name the queries as distributed, over both workers, before the first byte.
    let records = audit_records(&s).await;
    let expected: Vec<String> = urls.iter().map(|u| format!("{u}/")).collect();
    // Aggregates, window functions and a join of two large sides are cut into stages; the
    // planner may keep a plan whole (a join whose build side is small) and then it runs in the
    // gateway, audited as local.
    for sql in [QUERIES[0], QUERIES[1], QUERIES[4], QUERIES[7]] {
        // (The log also holds the local gateway's records of the same queries.)
        let begins: Vec<&Value> = records
            .iter()
            .filter(|r| opens_transfer(r) && r["query_text"] == *sql)
            .filter(|r| !r["workers"].is_null())
            .collect();
        assert_eq!(begins.len(), FORMATS.len(), "{sql}");
        for b in begins {
            let named: Vec<&str> = b["workers"]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .collect();
            assert_eq!(named, expected, "{sql}: {b}");
        }
    }
    // EXPLAIN shows the stages; a caller who is not an admin sees no file paths in them.
    let c = Client::new();
    let (st, body) = post_query(&c, &s, None, &format!("EXPLAIN {}", QUERIES[0]), "ndjson").await;
    assert_eq!(st, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("distributed_plan") && text.contains("Stage 1"),
        "{text}"
    );
    assert!(!text.contains(".parquet"), "{text}");
    // An integer total that does not fit is the same 400 whichever side adds it up.
    let sql = "SELECT district, sum(CAST(9000000000000000000 AS BIGINT)) AS s FROM market.market_entities GROUP BY district";
    let (st, body) = post_query(&c, &s, None, sql, "json").await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("Overflow happened on: sum("), "{text}");
    // (It fails before a transfer opens, so no record names the workers; its plan does.)
    let (st, body) = post_query(&c, &s, None, &format!("EXPLAIN {sql}"), "ndjson").await;
    assert_eq!(st, 200);
    assert!(String::from_utf8(body).unwrap().contains("Stage 1"));
}

// The relays run on the test's runtime: threads of their own keep them prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_values_never_cross_the_link_to_the_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let workers = [
        Worker::start(&data_dir, SECRET),
        Worker::start(&data_dir, SECRET),
    ];
    let relays = [
        Relay::start(workers[0].port).await,
        Relay::start(workers[1].port).await,
    ];
    let urls: Vec<String> = relays.iter().map(Relay::url).collect();
    // Uncompressed, so a raw value crossing the link would show in the captured bytes.
    let s = gateway(
        &data_dir,
        &urls,
        &[("DATAGATE_QUERY__WORKER_COMPRESSION", "none")],
    )
    .await;
    let c = Client::new();
    let consumer = crate::harness::new_key(&s, "consumer", None).await;
    let owner = crate::harness::new_key_with(
        &s,
        json!({"name": "justice", "role": "publisher", "department": "justice"}),
    )
    .await;
    crate::masking::grant_legal_aid(&s, &consumer, &owner).await;
    let legal_aid = crate::masking::Secrets::load(
        "justice/legal_aid_cases.csv",
        &[
            "applicant_name",
            "applicant_id_number",
            "applicant_phone",
            "lawyer_name",
        ],
        &[],
    );
    let market = crate::masking::Secrets::load(
        "market/market_entities.csv",
        &["legal_representative", "contact_phone"],
        &[],
    );
    let probes: [(&str, &crate::masking::Secrets); 6] = [
        (
            "SELECT lawyer_name, count(*) AS n FROM justice.legal_aid_cases GROUP BY lawyer_name ORDER BY n DESC, lawyer_name",
            &legal_aid,
        ),
        (
            "SELECT applicant_name, applicant_phone, count(*) AS n FROM justice.legal_aid_cases GROUP BY 1, 2 ORDER BY n DESC, 1, 2",
            &legal_aid,
        ),
        (
            "SELECT district, max(applicant_phone) AS p, min(applicant_name) AS a, count(DISTINCT lawyer_name) AS l FROM justice.legal_aid_cases GROUP BY district ORDER BY district",
            &legal_aid,
        ),
        (
            "SELECT l.district, count(*) AS n FROM justice.legal_aid_cases l JOIN justice.legal_aid_cases r ON l.lawyer_name = r.lawyer_name GROUP BY l.district ORDER BY l.district",
            &legal_aid,
        ),
        (
            "SELECT legal_representative, count(*) AS n FROM market.market_entities GROUP BY legal_representative ORDER BY n DESC, legal_representative",
            &market,
        ),
        (
            "SELECT district, min(legal_representative) AS r, count(*) AS n FROM market.market_entities WHERE legal_representative LIKE '%*%' GROUP BY district ORDER BY district",
            &market,
        ),
    ];
    let mut hashed = String::new();
    for (i, (sql, secrets)) in probes.iter().enumerate() {
        let key = (i < 4).then_some(consumer.as_str());
        let (st, body) = post_query(&c, &s, key, sql, "ndjson").await;
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(st, 200, "{sql}: {text}");
        assert_eq!(secrets.leaked_in(&text), None, "{sql}: answer");
        if i == 0 {
            let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
            hashed = first["lawyer_name"].as_str().unwrap().to_string();
            assert_eq!(hashed.len(), 32, "{first}");
        }
    }
    let records = audit_records(&s).await;
    for (sql, _) in &probes {
        assert!(ran_distributed(&records, sql), "{sql} ran distributed");
    }
    let captured: Vec<u8> = relays.iter().flat_map(Relay::returned).collect();
    let wire = String::from_utf8_lossy(&captured);
    // The capture sees the data: masked values (computed on the workers) crossed it.
    assert!(wire.contains(&hashed), "{} bytes captured", captured.len());
    assert_eq!(
        legal_aid.leaked_in(&wire),
        None,
        "legal aid value from a worker"
    );
    assert_eq!(market.leaked_in(&wire), None, "market value from a worker");
    let plans: Vec<u8> = relays.iter().flat_map(Relay::sent).collect();
    let plans = String::from_utf8_lossy(&plans);
    assert_eq!(
        legal_aid.leaked_in(&plans),
        None,
        "legal aid value to a worker"
    );
    assert_eq!(market.leaked_in(&plans), None, "market value to a worker");
}

#[tokio::test]
async fn dropped_queries_stop_the_workers_and_a_killed_worker_gets_a_clean_503() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut workers = [
        Worker::start(&data_dir, SECRET),
        Worker::start(&data_dir, SECRET),
    ];
    let urls: Vec<String> = workers.iter().map(Worker::url).collect();
    let limits = [
        ("DATAGATE_LIMITS__QUERY_TIMEOUT_MS", "600000"),
        ("DATAGATE_LIMITS__MAX_JOIN_PAIRS", "1000000000000000"),
    ];
    let s = gateway(&data_dir, &urls, &limits).await;
    // Billions of joined rows: minutes of work on the workers.
    let heavy = "SELECT count(*) FROM market.market_entities a JOIN market.market_entities b ON a.district = b.district JOIN market.market_entities c ON b.district = c.district";
    let spawn_heavy = || {
        let (url, sql) = (s.url("/api/v1/query"), heavy.to_string());
        tokio::spawn(async move {
            let r = Client::new()
                .post(url)
                .bearer_auth(ADMIN)
                .json(&json!({"sql": sql, "format": "csv"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        })
    };
    // After a second's grace, the workers use (almost) no CPU for a second.
    async fn assert_idle(workers: &[Worker], after: &str) {
        let busy = || workers.iter().map(Worker::cpu_ticks).collect::<Vec<u64>>();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = busy();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used: u64 = busy().iter().zip(&before).map(|(a, b)| a - b).sum();
        assert!(
            used <= 10,
            "workers used {used} ticks in the second after {after}"
        );
    }
    // Waits until the workers burn CPU; returns the index of the busiest.
    async fn working(workers: &[Worker]) -> usize {
        let started = Instant::now();
        loop {
            let before: Vec<u64> = workers.iter().map(Worker::cpu_ticks).collect();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let used: Vec<u64> = workers
                .iter()
                .zip(&before)
                .map(|(w, b)| w.cpu_ticks() - b)
                .collect();
            if used.iter().sum::<u64>() >= 30 {
                return (0..used.len()).max_by_key(|&i| used[i]).unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the workers never got busy"
            );
        }
    }

    // A client that goes away: within a second the workers stop working on its query.
    let query = spawn_heavy();
    working(&workers).await;
    query.abort();
    let _ = query.await;
    assert_idle(&workers, "the client left").await;

    // A query past its time limit: 504, and the workers stop too.
    let started = Instant::now();
    let r = Client::new()
        .post(s.url("/api/v1/query"))
        .bearer_auth(ADMIN)
        .json(&json!({"sql": heavy, "format": "csv", "timeout_ms": 1500}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504, "{}", r.text().await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_idle(&workers, "the timeout").await;

    // A worker killed mid-query: a prompt 503 problem, not a hang and not a 500. The busiest
    // worker goes first; on a loaded machine it may be one the query no longer needs (its
    // stages done, the last one running on the other worker, which then goes on alone): the
    // other is killed too, and the query, which needs that one, must fail promptly.
    let mut query = spawn_heavy();
    let victim = working(&workers).await;
    let mut killed_at = Instant::now();
    workers[victim].kill();
    let (status, body) = match tokio::time::timeout(Duration::from_secs(10), &mut query).await {
        Ok(answer) => answer.unwrap(),
        Err(_) => {
            killed_at = Instant::now();
            workers[1 - victim].kill();
            tokio::time::timeout(Duration::from_secs(30), query)
                .await
                .expect("the query answered after its workers died")
                .unwrap()
        }
    };
    assert!(killed_at.elapsed() < Duration::from_secs(15));
    assert!(status == 503 || status == 504, "{status} {body}");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], status, "{problem}");
    // The gateway notices, says so, and keeps answering (on the worker left, or itself).
    let dead = format!("worker {}/", urls[victim]);
    let started = Instant::now();
    loop {
        let (_, ready) = s.get_json("/readyz").await;
        if ready["checks"][&dead] != "ok" {
            assert_eq!(ready["ready"], true, "{ready}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = Client::new();
    let (st, body) = post_query(&c, &s, None, QUERIES[0], "csv").await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(rows_of("csv", &body).len(), 8);
}

#[tokio::test]
async fn workers_refuse_gateways_without_the_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let worker = Worker::start(&data_dir, SECRET);
    let urls = [worker.url()];
    let mut env = distributed_env(&urls, &[]);
    env.retain(|(k, _)| k != "DATAGATE_WORKER_SECRET");
    env.push((
        "DATAGATE_WORKER_SECRET".into(),
        "another-secret-0123456789".into(),
    ));
    let s = Server::start_in(
        &data_dir,
        Options {
            env,
            ..Options::default()
        },
    )
    .await;
    let (_, ready) = s.get_json("/readyz").await;
    let check = ready["checks"][format!("worker {}/", urls[0])]
        .as_str()
        .unwrap()
        .to_string();
    assert!(check.contains("secret"), "{ready}");
    // Queries still answer: in the gateway, named as local in the audit.
    let (st, body) = post_query(&Client::new(), &s, None, QUERIES[0], "csv").await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let records = audit_records(&s).await;
    let begin = records
        .iter()
        .find(|r| opens_transfer(r) && r["query_text"] == QUERIES[0])
        .unwrap();
    assert!(begin["workers"].is_null(), "{begin}");

    // A gateway listing workers without a secret does not start.
    let out = run(
        &["serve"],
        &[
            (
                "DATAGATE_DATA_DIR",
                tmp.path().join("other").to_str().unwrap(),
            ),
            ("DATAGATE_QUERY__WORKERS", "[\"http://127.0.0.1:1\"]"),
        ],
        &repo_root(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("query.worker_secret"), "{err}");
}

#[tokio::test]
async fn each_worker_holds_the_query_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    // Workers whose fragments may use 4 MiB; the gateway's own limit is the default (256 MiB).
    let small = [("DATAGATE_LIMITS__QUERY_MEMORY_BYTES", "4194304")];
    let workers = [
        Worker::start_with(&data_dir, SECRET, &small),
        Worker::start_with(&data_dir, SECRET, &small),
    ];
    let urls: Vec<String> = workers.iter().map(Worker::url).collect();
    let s = gateway(&data_dir, &urls, &[]).await;
    let c = Client::new();
    // Every address, a hundred times over, held by the partial aggregates: about 6 MiB per
    // worker task, over its 4 MiB; well within the gateway's own 256 MiB.
    let wide = "SELECT district, array_agg(repeat(address, 100)) AS a FROM market.market_entities GROUP BY district ORDER BY district";
    let (st, body) = post_query(&c, &s, Some(ADMIN), wide, "json").await;
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(st, 422, "{problem}");
    assert_eq!(
        problem["type"], "https://datagate.dev/problems/query-memory-limit",
        "{problem}"
    );
    // A small aggregate fits.
    let (st, body) = post_query(&c, &s, Some(ADMIN), QUERIES[0], "csv").await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn workers_read_an_s3_warehouse_and_answer_as_the_gateway_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let bucket = s3::server().fresh_bucket();
    let mut store = s3::server().env();
    store.push((
        "DATAGATE_STORAGE__WAREHOUSE_URL".into(),
        format!("s3://{bucket}/warehouse/"),
    ));
    let str_env = |extra: Vec<(String, String)>| {
        let mut env = store.clone();
        env.extend(extra);
        env
    };
    // The sample catalog published into the bucket, answered by the gateway alone first.
    let local = {
        let s = Server::start_in(
            &data_dir,
            Options {
                env: str_env(admin_env(&[])),
                ..Options::default()
            },
        )
        .await;
        let (st, body) = post_query(&Client::new(), &s, None, QUERIES[0], "csv").await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        body
    };
    // Workers with their own (empty) data directories: all they read is in the bucket.
    let workers = [
        Worker::start_with(&tmp.path().join("w1"), SECRET, &store),
        Worker::start_with(&tmp.path().join("w2"), SECRET, &store),
    ];
    let urls: Vec<String> = workers.iter().map(Worker::url).collect();
    let s = Server::start_in(
        &data_dir,
        Options {
            env: str_env(distributed_env(&urls, &[])),
            ..Options::default()
        },
    )
    .await;
    let (st, body) = post_query(&Client::new(), &s, None, QUERIES[0], "csv").await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, local);
    let records = audit_records(&s).await;
    assert!(ran_distributed(&records, QUERIES[0]), "ran distributed");
}

#[tokio::test]
async fn flight_sql_queries_run_distributed_too() {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt;
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let workers = [
        Worker::start(&data_dir, SECRET),
        Worker::start(&data_dir, SECRET),
    ];
    let urls: Vec<String> = workers.iter().map(Worker::url).collect();
    let flight = format!("127.0.0.1:{}", free_port());
    let s = gateway(
        &data_dir,
        &urls,
        &[("DATAGATE_FLIGHT_LISTEN", flight.as_str())],
    )
    .await;
    let sql = QUERIES[0];
    let (st, body) = post_query(&Client::new(), &s, None, sql, "arrow").await;
    assert_eq!(st, 200);
    let over_http = rows_of("arrow", &body);

    let channel = tonic::transport::Channel::from_shared(format!("http://{flight}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FlightSqlServiceClient::new(channel);
    c.set_token(ADMIN.to_string());
    let info = c.execute(sql.to_string(), None).await.unwrap();
    let batches: Vec<arrow::record_batch::RecordBatch> = c
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut ipc = Vec::new();
    {
        let mut w =
            arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batches[0].schema()).unwrap();
        for b in &batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    assert_eq!(rows_of("arrow", &ipc), over_http);
    let records = audit_records(&s).await;
    let flight_begin = records
        .iter()
        .find(|r| opens_transfer(r) && r["method"] == "GRPC" && r["query_text"] == sql)
        .expect("the Flight query's begin record");
    assert!(!flight_begin["workers"].is_null(), "{flight_begin}");
}

#[tokio::test]
async fn the_link_to_the_workers_can_be_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = crate::certs::test_certificates(tmp.path());
    let data_dir = tmp.path().join("data");
    let tls = [
        ("DATAGATE_QUERY__WORKER_TLS_CERT", certs.cert.as_str()),
        ("DATAGATE_QUERY__WORKER_TLS_KEY", certs.key.as_str()),
        ("DATAGATE_QUERY__WORKER_TLS_CA", certs.ca.as_str()),
    ];
    let workers = [
        Worker::start_with(&data_dir, SECRET, &tls),
        Worker::start_with(&data_dir, SECRET, &tls),
    ];
    // The certificate is for localhost.
    let urls: Vec<String> = workers
        .iter()
        .map(|w| format!("https://localhost:{}", w.port))
        .collect();
    let s = gateway(
        &data_dir,
        &urls,
        &[("DATAGATE_QUERY__WORKER_TLS_CA", certs.ca.as_str())],
    )
    .await;
    let (_, ready) = s.get_json("/readyz").await;
    for u in &urls {
        assert_eq!(ready["checks"][format!("worker {u}/")], "ok", "{ready}");
    }
    let (st, body) = post_query(&Client::new(), &s, None, QUERIES[0], "csv").await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let records = audit_records(&s).await;
    assert!(
        ran_distributed(&records, QUERIES[0]),
        "ran distributed over TLS"
    );
    // A gateway that does not trust the workers' certificate does not talk to them.
    drop(s);
    let s = gateway(&data_dir, &urls, &[]).await;
    let (_, ready) = s.get_json("/readyz").await;
    assert_ne!(
        ready["checks"][format!("worker {}/", urls[0])],
        "ok",
        "{ready}"
    );
}
