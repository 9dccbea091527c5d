//! A real S3-compatible server for tests: moto's server (`moto[server]` from PyPI, pinned in
//! tests/requirements.txt), one per test process on a free loopback port, a fresh bucket per
//! test. A watchdog stops it once the test process is gone.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct S3Server {
    pub port: u16,
    next_bucket: AtomicUsize,
}

/// The test process's server, started on first use.
pub fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(S3Server::start)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to the server without a body; the status and the body.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_with(port, method, path, b"")
}

/// One HTTP/1.1 request with `body`; the status and the answer's body.
fn http_with(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let out = String::from_utf8_lossy(&raw).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

impl S3Server {
    fn start() -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("datagate-moto-{}.log", std::process::id()));
        let script = format!(
            "python3 -m moto.server -H 127.0.0.1 -p {port} >{log} 2>&1 & m=$!\n\
             while [ -d /proc/{parent} ]; do sleep 0.5; done\nkill $m; rm -f {log}\n",
            log = log.display(),
            parent = std::process::id()
        );
        let started = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("sh starts moto_server");
        assert!(started.success(), "starting moto_server: {started}");
        for _ in 0..300 {
            if http(port, "GET", "/").is_ok() {
                return Self {
                    port,
                    next_bucket: AtomicUsize::new(0),
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "moto_server did not start (scripts/test.sh installs moto[server]): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// The endpoint gateways are pointed at (`AWS_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new empty bucket; its name.
    pub fn fresh_bucket(&self) -> String {
        let name = format!(
            "datagate-{}-{}",
            std::process::id(),
            self.next_bucket.fetch_add(1, Ordering::Relaxed)
        );
        let (status, body) = http(self.port, "PUT", &format!("/{name}")).expect("moto answers");
        assert_eq!(status, 200, "creating bucket {name}: {body}");
        name
    }

    /// The environment a gateway needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "datagate-test"),
            ("AWS_SECRET_ACCESS_KEY", "datagate-test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", self.endpoint().as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Runs a boto3 `script` (with `s3`, a signed client of this server, and `sys.argv`).
    fn boto3(&self, script: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
        let prelude = format!(
            "import sys, boto3\ns3 = boto3.client('s3', endpoint_url='{}', \
             aws_access_key_id='datagate-test', aws_secret_access_key='datagate-test', \
             region_name='us-east-1')\n",
            self.endpoint()
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The object `key` of `bucket`.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.boto3(
            "sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[1], Key=sys.argv[2])['Body'].read())",
            &[bucket, key],
            b"",
        )
    }

    /// Replaces the object `key` of `bucket` (what someone with write access to the bucket
    /// could do).
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        self.boto3(
            "s3.put_object(Bucket=sys.argv[1], Key=sys.argv[2], Body=sys.stdin.buffer.read())",
            &[bucket, key],
            data,
        );
    }

    /// The keys of the objects in `bucket` under `prefix` (completed objects only: an
    /// unfinished multipart upload is not listed, as on S3).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = String::new();
        loop {
            let mut path = format!("/{bucket}?list-type=2&prefix={prefix}");
            if !token.is_empty() {
                path.push_str(&format!("&continuation-token={token}"));
            }
            let (status, body) = http(self.port, "GET", &path).expect("moto answers");
            assert_eq!(status, 200, "listing {bucket}: {body}");
            for part in body.split("<Key>").skip(1) {
                keys.push(part.split("</Key>").next().unwrap_or_default().to_string());
            }
            match body.split("<NextContinuationToken>").nth(1) {
                Some(rest) => token = rest.split('<').next().unwrap_or_default().to_string(),
                None => break,
            }
        }
        keys
    }
}
