//! Starting and stopping a real server.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The repository root: as `cargo test` names it when it runs the suite, else where the suite
/// was compiled. (A test binary reused from another checkout through a shared target directory
/// keeps that checkout's compile-time path, and would read its files.)
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The `datagate` binary built beside this test executable.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/it-<hash> → target/<profile>/datagate
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("datagate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --workspace` (or `cargo build -p datagate` first)",
        bin.display()
    );
    bin
}

/// A directory under the target directory for what a test leaves to look at (reports,
/// screenshots): `target/<profile>/test-artifacts/<name>`, created.
pub fn artifacts(name: &str) -> PathBuf {
    let dir = binary()
        .parent()
        .expect("target dir")
        .join("test-artifacts")
        .join(name);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// How to start a server.
#[derive(Clone, Default)]
pub struct Options {
    /// Manifests directory; `None` = the repository's sample catalog.
    pub manifests: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments after `serve`.
    pub args: Vec<String>,
    /// Keep the shipped fair-use tiers. By default every tier is made generous (no rate,
    /// concurrency or byte limit to speak of) so tests of other features are not throttled;
    /// fair-use tests set this or override the tiers in `env`.
    pub shipped_limits: bool,
    /// The server speaks TLS (`server.tls_cert` in `env`) with a certificate this CA (PEM
    /// file) signed for `localhost`: `base` is `https://localhost:<port>`.
    pub tls_ca: Option<String>,
}

const TIERS: [&str; 4] = ["ANONYMOUS", "STANDARD", "PREMIUM", "INTERNAL"];

/// A running server; killed when dropped.
pub struct Server {
    pub base: String,
    pub addr: String,
    data_dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub async fn start(opts: Options) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let mut s = Self::start_in(&data_dir, opts).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `data_dir` (kept after the server stops).
    pub async fn start_in(data_dir: &Path, opts: Options) -> Server {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let log = data_dir.with_extension(format!("{port}.log"));
            std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
            let log_file = std::fs::File::create(&log).expect("log file");
            let manifests = opts
                .manifests
                .clone()
                .unwrap_or_else(|| repo_root().join("catalog"));
            let mut cmd = Command::new(binary());
            cmd.current_dir(repo_root())
                .arg("serve")
                .args(&opts.args)
                .env("DATAGATE_LISTEN", &addr)
                .env("DATAGATE_DATA_DIR", data_dir)
                .env("DATAGATE_CATALOG_MANIFESTS", &manifests)
                .env("DATAGATE_LOG__FORMAT", "json")
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(log_file);
            if !opts.shipped_limits {
                for tier in TIERS {
                    for (key, value) in [
                        ("REQUESTS", "1000000"),
                        ("BURST", "1000000"),
                        ("MAX_CONCURRENT_QUERIES", "0"),
                        ("DAILY_BYTES", "0"),
                    ] {
                        cmd.env(format!("DATAGATE_TIERS__{tier}__{key}"), value);
                    }
                }
            }
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("spawn datagate");
            let base = match &opts.tls_ca {
                Some(_) => format!("https://localhost:{port}"),
                None => format!("http://{addr}"),
            };
            let mut server = Server {
                base,
                addr,
                data_dir: data_dir.to_path_buf(),
                child: Some(child),
                log,
                _tmp: None,
            };
            match server
                .wait_ready(Duration::from_secs(60), opts.tls_ca.as_deref())
                .await
            {
                Ok(()) => return server,
                Err(e) => {
                    last_err = format!("{e}\n--- server log ---\n{}", server.log_text());
                    server.kill();
                }
            }
        }
        panic!("server did not start: {last_err}");
    }

    async fn wait_ready(&mut self, limit: Duration, ca: Option<&str>) -> Result<(), String> {
        let start = Instant::now();
        let mut client = reqwest::Client::builder();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).expect("the test CA");
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let client = client.build().unwrap();
        while start.elapsed() < limit {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("exited early with {status}"));
            }
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("no answer on /healthz".into())
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path_or_url` (a path, or a whole URL such as a `next` link) with `key`; the JSON
    /// body, whatever the status.
    pub async fn get_json_as(&self, key: &str, path_or_url: &str) -> serde_json::Value {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            self.url(path_or_url)
        };
        reqwest::Client::new()
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("a JSON body")
    }

    /// The audit records `/api/v1/audit/events?{query}` answers the admin key, newest first.
    #[allow(dead_code)]
    pub async fn audit_records(&self, query: &str) -> Vec<serde_json::Value> {
        let body = reqwest::Client::new()
            .get(self.url(&format!("/api/v1/audit/events?{query}&format=ndjson")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("GET /api/v1/audit/events")
            .text()
            .await
            .expect("the records");
        body.lines()
            .map(|l| serde_json::from_str(l).expect("a record"))
            .collect()
    }

    /// The record that closes request `request_id`'s answer (its `end`, or the one `read`
    /// record of an answer sent whole), waited for: a stream's `end` is written once its last
    /// bytes have gone, which may be after the client has read them.
    #[allow(dead_code)]
    pub async fn audit_end(&self, request_id: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let records = self.audit_records("limit=100").await;
            let end = records.into_iter().find(|r| {
                r["request_id"] == request_id && (r["kind"] == "end" || r["kind"] == "read")
            });
            match end {
                Some(end) => return end,
                None if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                None => panic!("no end record for request {request_id}"),
            }
        }
    }

    /// Publishes `csv` as a new version of `dataset` (`dept/name`) in `mode` with the admin
    /// key, expecting 201; the version's answer.
    #[allow(dead_code)]
    pub async fn publish_csv(
        &self,
        dataset: &str,
        mode: &str,
        csv: impl Into<reqwest::Body>,
    ) -> serde_json::Value {
        let r = reqwest::Client::new()
            .post(self.url(&format!("/api/v1/datasets/{dataset}/versions?mode={mode}")))
            .bearer_auth(ADMIN)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .expect("POST versions");
        let status = r.status();
        let body = r.text().await.expect("the answer");
        assert_eq!(status, 201, "publishing to {dataset}: {body}");
        serde_json::from_str(&body).expect("a JSON answer")
    }

    /// The `/metrics` text.
    #[allow(dead_code)]
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text")
    }

    /// GET, returning status and JSON body (or `Null` when the body is not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::get(self.url(path)).await.expect("request");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines the server logged.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends SIGTERM and waits for the exit status.
    /// The server process's id while it runs.
    #[allow(dead_code)] // used by the flood test binary
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The server's resident memory in KiB (Linux), while it runs.
    #[allow(dead_code)] // used by the flood test binary
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// The server's peak resident memory so far in KiB (Linux).
    #[allow(dead_code)] // used by the test binaries that include this harness but not it
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                self.kill();
                panic!("server did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the binary to completion with the given arguments and environment.
pub fn run(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> std::process::Output {
    let mut cmd = Command::new(binary());
    cmd.current_dir(cwd).args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run datagate")
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The admin key the fair-use, audit and flood tests start servers with.
#[allow(dead_code)] // not every test binary uses it
pub const ADMIN: &str =
    "dg_admin1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// `DATAGATE_ADMIN_KEY` = [`ADMIN`] and `pairs`, as server environment.
#[allow(dead_code)]
pub fn admin_env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = vec![("DATAGATE_ADMIN_KEY".to_string(), ADMIN.to_string())];
    v.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    v
}

/// A new key of `role` (in `tier`, else the role's default), created by [`ADMIN`].
#[allow(dead_code)]
pub async fn new_key(s: &Server, role: &str, tier: Option<&str>) -> String {
    let mut body = serde_json::json!({"name": "test key", "role": role});
    if let Some(t) = tier {
        body["tier"] = t.into();
    }
    new_key_with(s, body).await
}

/// Revokes `key` (`DELETE /api/v1/keys/{id}`) as [`ADMIN`].
#[allow(dead_code)]
pub async fn revoke_key(s: &Server, key: &str) {
    let id = key.split('_').nth(1).unwrap();
    let r = reqwest::Client::new()
        .delete(s.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// A new key as `body` (`POST /api/v1/keys`) asks, created by [`ADMIN`].
#[allow(dead_code)]
pub async fn new_key_with(s: &Server, body: serde_json::Value) -> String {
    let r = reqwest::Client::new()
        .post(s.url("/api/v1/keys"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<serde_json::Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Corrupts the first record-batch message of an Arrow IPC stream the way a damaged upload
/// can be: see [`point_a_buffer_past_the_body`].
pub fn corrupt_ipc_stream(stream: &mut [u8]) {
    let mut pos = 0;
    while pos + 8 <= stream.len() {
        assert_eq!(
            stream[pos..pos + 4],
            [0xff; 4],
            "an IPC continuation marker"
        );
        let len = i32::from_le_bytes(stream[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let meta = pos + 8..pos + 8 + len;
        let (batch, body) = {
            let m = arrow::ipc::root_as_message(&stream[meta.clone()]).unwrap();
            (
                m.header_as_record_batch().is_some(),
                m.bodyLength() as usize,
            )
        };
        if batch {
            point_a_buffer_past_the_body(&mut stream[meta]);
            return;
        }
        pos = meta.end + body;
    }
    panic!("no record batch in the stream");
}

/// Points the first non-empty buffer of an Arrow IPC record-batch message (its flatbuffer
/// metadata, as in a Flight `data_header`) 256 MiB past the message's body: a message arrow's
/// own decoder panics on instead of refusing.
pub fn point_a_buffer_past_the_body(meta: &mut [u8]) {
    let at = {
        let m = arrow::ipc::root_as_message(meta).unwrap();
        let buffers = m.header_as_record_batch().unwrap().buffers().unwrap();
        let first = buffers.iter().position(|b| b.length() > 0).unwrap();
        buffers.bytes().as_ptr() as usize - meta.as_ptr() as usize + 16 * first
    };
    // A buffer is { offset: i64, length: i64 }, little-endian.
    meta[at..at + 8].copy_from_slice(&(1i64 << 28).to_le_bytes());
}
