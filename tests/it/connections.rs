//! Connection abuse and request-shape limits (`[server]`): slowloris heads, idle keep-alive
//! connections, huge headers, stalled and oversized bodies, a panicking handler, and TLS with
//! HTTP/2. Each is bounded by configuration and answered with a problem where an answer is
//! possible, while a well-behaved client keeps being served.

use crate::certs::test_certificates;
use crate::harness::{ADMIN, Options, Server, admin_env, new_key_with};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env(pairs: &[(&str, &str)]) -> Options {
    Options {
        env: admin_env(pairs),
        ..Default::default()
    }
}

/// Reads one HTTP/1.1 response head and its `Content-Length` body from `s`.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut byte).await.ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&byte[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..]).to_string();
            return Some((status, body));
        }
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
}

/// Whether the server closed `s` within `limit` (EOF or reset while waiting to read).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut byte = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut byte)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A client sending its request head a byte at a time, forever (slowloris).
async fn slowloris(addr: String) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(&addr).await.ok()?;
    let head = b"GET /api/v1/datasets HTTP/1.1\r\nHost: x\r\nX-a: ";
    for b in head.iter().chain(std::iter::repeat(&b'a')) {
        if s.write_all(&[*b]).await.is_err() {
            return Some(start.elapsed());
        }
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            _ => {}
        }
        if start.elapsed() > Duration::from_secs(30) {
            return None;
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_connections_are_cut_and_a_polite_client_is_served() {
    let s = Server::start(env(&[
        ("DATAGATE_SERVER__HEADER_READ_TIMEOUT_SECS", "2"),
        ("DATAGATE_SERVER__MAX_CONNECTIONS", "100"),
    ]))
    .await;
    let attackers: Vec<_> = (0..300)
        .map(|_| tokio::spawn(slowloris(s.addr.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A polite client on new connections is answered promptly all the while.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = client
            .get(format!("{}/api/v1/datasets?limit=1", s.base))
            .send()
            .await
            .expect("a polite request is answered");
        assert_eq!(r.status(), 200);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst < Duration::from_millis(1500),
        "a polite request waited {worst:?}"
    );
    // Every slow head was cut, none held its connection past the head timeout (+ a tick).
    let mut longest = Duration::ZERO;
    for a in attackers {
        let held = a
            .await
            .unwrap()
            .expect("a slowloris connection was never closed");
        longest = longest.max(held);
    }
    assert!(
        longest < Duration::from_secs(4),
        "a slow head held its connection {longest:?}"
    );
    // The server is still well.
    assert_eq!(s.get_json("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_reused_past_the_head_timeout_and_closed_at_the_idle_limit()
 {
    let s = Server::start(env(&[
        ("DATAGATE_SERVER__HEADER_READ_TIMEOUT_SECS", "1"),
        ("DATAGATE_SERVER__KEEP_ALIVE_IDLE_SECS", "3"),
    ]))
    .await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut c).await.unwrap().0, 200);
    // Idle for longer than the head timeout: the connection is still there to reuse.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    c.write_all(request).await.unwrap();
    assert_eq!(
        read_response(&mut c)
            .await
            .expect("the idle connection was reused")
            .0,
        200
    );
    // Idle past keep_alive_idle_secs: closed by the server.
    let t = Instant::now();
    assert!(closed_within(&mut c, Duration::from_secs(6)).await);
    assert!(
        t.elapsed() >= Duration::from_millis(2500),
        "closed after {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_are_shed_above_max_connections() {
    let s = Server::start(env(&[("DATAGATE_SERVER__MAX_CONNECTIONS", "50")])).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(&s.addr).await.unwrap();
        c.write_all(request).await.unwrap();
        assert_eq!(read_response(&mut c).await.unwrap().0, 200);
        idle.push(c);
    }
    // Over the limit, idle keep-alive connections are closed until it holds again.
    let waits = idle
        .iter_mut()
        .map(|c| closed_within(c, Duration::from_millis(1500)));
    let closed = futures::future::join_all(waits)
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    assert!(closed >= 150, "only {closed} of 200 idle connections shed");
    // Closed sockets linger a moment (draining what a client still sends), then are gone.
    let mut fds = usize::MAX;
    for _ in 0..50 {
        fds = std::fs::read_dir(format!("/proc/{}/fd", s.pid().unwrap()))
            .unwrap()
            .count();
        if fds < 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fds < 150, "{fds} file descriptors open");
    assert_eq!(s.get_json("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_huge_header_is_answered_431() {
    let s = Server::start(env(&[("DATAGATE_SERVER__MAX_HEADER_BYTES", "16384")])).await;
    let big = "a".repeat(40_000);
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    let req = format!("GET /api/v1/datasets HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = c.write_all(req.as_bytes()).await;
    let (status, _) = read_response(&mut c).await.expect("an answer");
    assert_eq!(status, 431);
    // Within the limit is fine.
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/datasets", s.base))
        .header("x-fine", "a".repeat(8_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_stalled_json_body_answers_408_with_the_configured_timeout() {
    let s = Server::start(env(&[("DATAGATE_SERVER__BODY_READ_TIMEOUT_SECS", "1")])).await;
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(
        b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sql\": ",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let (status, body) = read_response(&mut c).await.expect("an answer");
    assert_eq!(status, 408, "{body}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("1 s (server.body_read_timeout_secs)"),
        "{problem}"
    );
    assert!(
        problem["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
}

#[tokio::test]
async fn a_stalled_upload_answers_408_and_publishes_nothing() {
    let s = Server::start(env(&[("DATAGATE_SERVER__BODY_READ_TIMEOUT_SECS", "1")])).await;
    let key = new_key_with(
        &s,
        serde_json::json!({"name": "publisher", "role": "publisher", "department": "environment"}),
    )
    .await;
    let before = s
        .get_json("/api/v1/datasets/environment/air_quality")
        .await
        .1["current_version"]
        .clone();
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/datasets/environment/air_quality/versions?mode=append HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {key}\r\nContent-Type: text/csv\r\nContent-Length: 1000000\r\n\r\n"
    );
    // A real header and row of the dataset, then nothing more.
    let csv =
        reqwest::get(s.url("/api/v1/datasets/environment/air_quality/rows?format=csv&limit=1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(csv.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut c).await.expect("an answer");
    assert_eq!(status, 408, "{body}");
    let after = s
        .get_json("/api/v1/datasets/environment/air_quality")
        .await
        .1["current_version"]
        .clone();
    assert_eq!(before, after, "no version was published");
}

#[tokio::test]
async fn a_json_body_over_the_limit_answers_413_saying_the_limit() {
    let s = Server::start(env(&[])).await;
    let sql = format!("select '{}'", "x".repeat(3 * 1024 * 1024));
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/query", s.base))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["limit_bytes"], 2 * 1024 * 1024, "{p}");
}

#[tokio::test]
async fn nesting_errors_name_the_configured_limit() {
    let s = Server::start(env(&[("DATAGATE_LIMITS__MAX_EXPR_DEPTH", "20")])).await;
    let deep_parens = format!("select {}1{}", "(".repeat(40), ")".repeat(40));
    let long_chain = format!("select 1{}", " + 1".repeat(400));
    let deep_where = format!("{}1=1{}", "(".repeat(30), ")".repeat(30));
    for (path, text) in [
        ("/api/v1/query?sql=", deep_parens),
        ("/api/v1/query?sql=", long_chain),
        (
            "/api/v1/datasets/environment/air_quality/rows?where=",
            deep_where,
        ),
    ] {
        let url = format!("{}{path}{}", s.base, urlencode(&text));
        let r = reqwest::get(url).await.unwrap();
        assert_eq!(r.status(), 400);
        let p: serde_json::Value = r.json().await.unwrap();
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("limits.max_expr_depth = 20")
                || detail.contains("20 levels (limits.max_expr_depth)"),
            "{detail}"
        );
        assert!(!detail.contains("1024"), "{detail}");
    }
}

/// 3,000 `SELECT 1` joined by `UNION ALL` (33 KB) planned for 21 s; counted before planning, it
/// is a 400 naming the limit, as configured.
#[tokio::test]
async fn statements_of_many_select_blocks_are_refused_before_planning() {
    let s = Server::start(env(&[("DATAGATE_LIMITS__MAX_STATEMENT_SELECTS", "10")])).await;
    let client = reqwest::Client::new();
    let query = |sql: String| {
        client
            .post(format!("{}/api/v1/query", s.base))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
    };
    let started = std::time::Instant::now();
    let r = query(vec!["SELECT 1"; 3000].join(" UNION ALL "))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: serde_json::Value = r.json().await.unwrap();
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("more than 10 SELECT blocks (limits.max_statement_selects)"),
        "{detail}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let r = query(["SELECT 1 AS n"; 10].join(" UNION ALL "))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["row_count"], 10, "{p}");
}

/// `CUBE` expands to 2^n grouping sets at planning (20 columns: 12 s and 1 GB): over 12
/// expressions it is a 400 before planning; 12 are answered.
#[tokio::test]
async fn a_cube_of_many_columns_is_refused_before_planning() {
    let s = Server::start(env(&[])).await;
    let cube = |n: usize| {
        let columns: Vec<String> = (0..n).map(|i| format!("{i} AS c{i}")).collect();
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let sql = format!(
            "SELECT count(*) AS n FROM (SELECT {}) t GROUP BY CUBE({})",
            columns.join(", "),
            names.join(", ")
        );
        reqwest::Client::new()
            .post(format!("{}/api/v1/query", s.base))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
    };
    let r = cube(24).await.unwrap();
    assert_eq!(r.status(), 400);
    let p: serde_json::Value = r.json().await.unwrap();
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("CUBE of 24 expressions makes 2^24 grouping sets"),
        "{detail}"
    );
    let r = cube(12).await.unwrap();
    assert_eq!(r.status(), 200);
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["row_count"], 4096, "{p}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_and_the_connection_and_process_survive() {
    let s = Server::start(env(&[("DATAGATE_TEST_FAULTS", "1")])).await;
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(b"GET /api/v1/_faults/panic HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_response(&mut c).await.expect("an answer");
    assert_eq!(status, 500);
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = p["request_id"].as_str().unwrap().to_string();
    assert!(!id.is_empty());
    for leak in ["panicked", "injected", ".rs", "src/", "backtrace"] {
        assert!(!body.contains(leak), "the body leaks `{leak}`: {body}");
    }
    // The same connection serves the next request; the process lives.
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut c).await.unwrap().0, 200);
    // The panic is in the log under the request id, and in the audit log as a 500.
    let log = s.log_text();
    assert!(log.contains("injected fault: a handler panicked on purpose"));
    assert!(log.lines().any(|l| l.contains(&id) && l.contains("500")));
    let r = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/audit/events?status=500&format=json",
            s.base
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let events: serde_json::Value = r.json().await.unwrap();
    assert!(
        events["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["request_id"] == id.as_str()),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http2_and_http11_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let certs = test_certificates(dir.path());
    let s = Server::start(Options {
        tls_ca: Some(certs.ca.clone()),
        ..env(&[
            ("DATAGATE_SERVER__TLS_CERT", &certs.cert),
            ("DATAGATE_SERVER__TLS_KEY", &certs.key),
        ])
    })
    .await;
    let port = s.addr.rsplit(':').next().unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap();
    let url = format!("{}/api/v1/datasets?limit=1", s.base);
    for (client, version) in [
        (
            reqwest::Client::builder()
                .add_root_certificate(ca.clone())
                .build()
                .unwrap(),
            reqwest::Version::HTTP_2,
        ),
        (
            reqwest::Client::builder()
                .add_root_certificate(ca.clone())
                .http1_only()
                .build()
                .unwrap(),
            reqwest::Version::HTTP_11,
        ),
    ] {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
        assert!(r.headers().contains_key("ratelimit"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["datasets"].as_array().is_some());
    }
    // An untrusted certificate is refused by the client.
    assert!(reqwest::get(&url).await.is_err());
    // Plain HTTP gets no HTTP answer: the listener reads it as a broken TLS handshake, answers
    // at most a TLS alert and closes the connection.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection is closed");
    assert!(
        !answer.windows(5).any(|w| w == b"HTTP/"),
        "no HTTP answer on the TLS port: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "a TLS alert at most: {answer:?}"
    );
}
