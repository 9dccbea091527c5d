//! What a public HTTP API owes its clients: request ids, CORS, compression, timeouts,
//! problem+json for every error, and a clean shutdown.

use crate::harness::{Options, Server};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[tokio::test]
async fn request_ids_are_generated_or_kept() {
    let s = Server::start(Options::default()).await;
    let c = reqwest::Client::new();
    let a = c.get(s.url("/api/v1/departments")).send().await.unwrap();
    let b = c.get(s.url("/api/v1/departments")).send().await.unwrap();
    let id_a = a.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id_a, b.headers()["x-request-id"].to_str().unwrap());
    assert!(id_a.len() >= 16);
    let mine = c
        .get(s.url("/api/v1/departments"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.headers()["x-request-id"], "trace-abc-123");
    // The id appears in the structured log of that request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        s.log_text().contains("trace-abc-123"),
        "request id missing from the log"
    );
}

#[tokio::test]
async fn cors_for_browser_apps() {
    let s = Server::start(Options::default()).await;
    let c = reqwest::Client::new();
    let pre = c
        .request(reqwest::Method::OPTIONS, s.url("/api/v1/datasets"))
        .header("origin", "https://app.example.org")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    let get = c
        .get(s.url("/api/v1/datasets"))
        .header("origin", "https://app.example.org")
        .send()
        .await
        .unwrap();
    let exposed = get.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "x-request-id",
        "link",
        "etag",
        "ratelimit",
        "ratelimit-policy",
    ] {
        assert!(
            exposed.split(',').any(|e| e.trim() == h),
            "{h} not exposed: {exposed}"
        );
    }
}

#[tokio::test]
async fn cors_origins_are_configurable() {
    let s = Server::start(Options {
        env: vec![(
            "DATAGATE_SERVER__CORS_ALLOWED_ORIGINS".into(),
            "[\"https://portal.example.gov.cn\"]".into(),
        )],
        ..Default::default()
    })
    .await;
    let c = reqwest::Client::new();
    let ok = c
        .get(s.url("/api/v1/departments"))
        .header("origin", "https://portal.example.gov.cn")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://portal.example.gov.cn"
    );
    let other = c
        .get(s.url("/api/v1/departments"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn responses_are_compressed_on_request() {
    let s = Server::start(Options::default()).await;
    let plain = plain_client();
    for enc in ["gzip", "zstd"] {
        let r = plain
            .get(s.url("/api/v1/datasets?limit=100"))
            .header("accept-encoding", enc)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], enc);
        let compressed = r.bytes().await.unwrap().len();
        let raw = plain
            .get(s.url("/api/v1/datasets?limit=100"))
            .send()
            .await
            .unwrap();
        assert!(raw.headers().get("content-encoding").is_none());
        let raw_len = raw.bytes().await.unwrap().len();
        assert!(compressed * 2 < raw_len, "{enc}: {compressed} vs {raw_len}");
    }
    // And a client that decompresses sees the same JSON.
    let auto = reqwest::Client::new();
    let a: serde_json::Value = auto
        .get(s.url("/api/v1/datasets?limit=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: serde_json::Value = plain
        .get(s.url("/api/v1/datasets?limit=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a, b);
    // A small answer (a problem of a few hundred bytes) goes out as it is: compressing it would
    // save nothing on the wire and cost an encoder.
    for enc in ["gzip", "zstd"] {
        let r = plain
            .get(s.url("/api/v1/datasets/nowhere/nothing"))
            .header("accept-encoding", enc)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert!(r.headers().get("content-encoding").is_none(), "{enc}");
        let body = r.bytes().await.unwrap();
        assert!(body.len() < 1024, "{} bytes", body.len());
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["status"], 404);
    }
}

#[tokio::test]
async fn answers_of_known_length_carry_content_length() {
    let s = Server::start(Options::default()).await;
    let plain = plain_client();
    // A catalog answer, a page of rows served from memory and a small query result seen to
    // end before its first bytes left are whole before they leave: they go out with their
    // length (one write with the head), not chunked.
    // (The first page of a version is read through a query, which loads the version into the
    // page cache in the background: the pages after it come from memory.)
    for path in [
        "/api/v1/departments",
        "/api/v1/datasets/transport/bus_lines/rows?limit=10",
        "/healthz",
        "/api/v1/query?sql=SELECT%20count(*)%20FROM%20transport.bus_stops",
        "/api/v1/query?sql=SELECT%20district,%20count(*)%20AS%20n%20FROM%20transport.bus_stops%20GROUP%20BY%20district%20ORDER%20BY%20n%20DESC&format=csv",
    ] {
        let mut tries = 0;
        let r = loop {
            let r = plain.get(s.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            tries += 1;
            if r.headers().get("transfer-encoding").is_none() || tries == 50 {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let h = r.headers().clone();
        assert!(h.get("transfer-encoding").is_none(), "{path}: {h:?}");
        let declared: usize = h["content-length"].to_str().unwrap().parse().unwrap();
        assert_eq!(declared, r.bytes().await.unwrap().len(), "{path}");
    }
    // Groups come out of each of the plan's partitions once all rows are read: a small set of
    // them is answered whole every time, however its partitions' batches arrive.
    let sql = |q: &str| s.url(&format!("/api/v1/query?sql={}", q.replace(' ', "%20")));
    let groups = sql(
        "SELECT district, has_shelter, count(*) AS n FROM transport.bus_stops GROUP BY district, has_shelter",
    );
    for _ in 0..10 {
        let r = plain.get(groups.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("transfer-encoding").is_none(),
            "{:?}",
            r.headers()
        );
        let declared: usize = r.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(
            body["rows"].as_array().unwrap().len(),
            body["row_count"].as_u64().unwrap() as usize
        );
        assert!(declared > 0);
    }
    // Many groups (one a stop: 3,000) stream, like any large result.
    let r = plain
        .get(sql(
            "SELECT stop_id, count(*) AS n FROM transport.bus_stops GROUP BY stop_id",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["row_count"], 3000);
    // A streamed answer (an export) stays chunked: its length is not known when it starts.
    let r = plain
        .get(s.url("/api/v1/datasets/transport/bus_lines/export?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
}

#[tokio::test]
async fn exports_prefer_zstd_and_parquet_is_never_compressed_twice() {
    let s = Server::start(Options::default()).await;
    let plain = plain_client();
    let export = |format: &str| {
        s.url(&format!(
            "/api/v1/datasets/transport/bus_stops/export?format={format}"
        ))
    };
    // What browsers and Python `requests` send: zstd wins at equal q.
    let r = plain
        .get(export("csv"))
        .header("accept-encoding", "gzip, deflate, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "zstd");
    let body = r.bytes().await.unwrap();
    let csv = zstd_decode(&body);
    let raw = plain
        .get(export("csv"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        csv,
        raw.to_vec(),
        "the zstd body decodes to the plain export"
    );
    // Parquet is compressed inside already: it goes out as it is, whatever the client accepts.
    let r = plain
        .get(export("parquet"))
        .header("accept-encoding", "gzip, deflate, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none());
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..4], b"PAR1");
}

#[tokio::test]
async fn zstd_bodies_are_charged_as_the_bytes_they_carry() {
    let s = Server::start(Options {
        env: crate::harness::admin_env(&[]),
        ..Default::default()
    })
    .await;
    let key = crate::harness::new_key(&s, "consumer", None).await;
    let plain = plain_client();
    let get = |path: &str, encoding: &'static str| {
        plain
            .get(s.url(path))
            .bearer_auth(&key)
            .header("accept-encoding", encoding)
    };
    let mut charged = 0;
    // An export (coded on the executor) and a SQL answer (the same path), in zstd and as they
    // are: the same bytes decoded, the same bytes charged.
    for (path, sql) in [
        (
            "/api/v1/datasets/market/market_entities/export?format=ndjson",
            None,
        ),
        (
            "/api/v1/query",
            Some("SELECT * FROM market.market_entities ORDER BY uscc LIMIT 3000"),
        ),
    ] {
        let mut bodies = Vec::new();
        for encoding in ["gzip;q=0.5, zstd", "identity"] {
            let request = match sql {
                None => get(path, encoding),
                Some(sql) => plain
                    .post(s.url(path))
                    .bearer_auth(&key)
                    .header("accept-encoding", encoding)
                    .header("accept", "text/csv")
                    .json(&serde_json::json!({ "sql": sql })),
            };
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let zstd = encoding != "identity";
            assert_eq!(
                r.headers()
                    .get("content-encoding")
                    .map(|v| v.to_str().unwrap()),
                zstd.then_some("zstd"),
                "{path} {encoding}"
            );
            if zstd {
                assert!(
                    r.headers()["vary"]
                        .to_str()
                        .unwrap()
                        .contains("Accept-Encoding")
                );
            }
            let wire = r.bytes().await.unwrap();
            let body = if zstd {
                zstd_decode(&wire)
            } else {
                wire.to_vec()
            };
            assert!(body.len() > 100_000, "{path}: {} bytes", body.len());
            charged += body.len() as u64;
            bodies.push(body);
        }
        assert_eq!(bodies[0], bodies[1], "{path}");
    }
    let me = s.get_json_as(&key, "/api/v1/me").await;
    assert_eq!(
        me["limits"]["tier"]["bytes_used_today"].as_u64(),
        Some(charged)
    );
    // A client that prefers gzip gets it from the compression layer.
    let r = get(
        "/api/v1/datasets/market/market_entities/export?format=csv",
        "gzip, zstd;q=0.5",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
}

/// A client that asks for no compression and decodes none.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_zstd()
        .build()
        .unwrap()
}

fn zstd_decode(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(data)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn malformed_json_bodies_say_where() {
    use crate::harness::{ADMIN, admin_env};
    let s = Server::start(Options {
        env: admin_env(&[]),
        ..Default::default()
    })
    .await;
    let c = reqwest::Client::new();
    let time = "expires_at must be a date and time as RFC 3339 writes it";
    for (path, body, line, column, says) in [
        // A syntax error on the second line, and a value of the wrong type.
        (
            "/api/v1/query",
            "{\"sql\": \"SELECT 1\",\n  \"format\": }",
            2,
            13,
            "expected value",
        ),
        ("/api/v1/query", "{\"sql\": 5}", 1, 9, "sql: invalid type"),
        (
            "/api/v1/keys",
            "{\"name\": \"k\", \"role\": \"consumer\", \"tier\": [",
            1,
            42,
            "tier: ",
        ),
        // A time that does not parse, with the form it takes.
        (
            "/api/v1/keys",
            "{\"name\": \"k\", \"role\": \"consumer\",\n \"expires_at\": \"soon\"}",
            2,
            21,
            time,
        ),
        // The approval's optional body is read apart from the others, in the same words.
        (
            "/api/v1/applications/nope/approve",
            "{\"expires_at\": 7",
            1,
            16,
            "expires_at: invalid type",
        ),
        (
            "/api/v1/applications/nope/approve",
            "{\"expires_at\": \"2027-02-30\"}",
            1,
            27,
            time,
        ),
    ] {
        let r = c
            .post(s.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path} {body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (&p["line"], &p["column"]),
            (&line.into(), &column.into()),
            "{body}: {p}"
        );
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("line {line} column {column}")),
            "{p}"
        );
        assert!(detail.contains(says), "{p}");
        // serde's words, without axum's preamble before them.
        assert!(!detail.contains("Failed to"), "{p}");
    }
    // JSON sent as something else (or as nothing) is 415, saying what to send.
    for content_type in [Some("text/plain"), None] {
        let mut r = c
            .post(s.url("/api/v1/query"))
            .body("{\"sql\": \"SELECT 1\"}");
        if let Some(t) = content_type {
            r = r.header("content-type", t);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 415, "{content_type:?}");
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            p["detail"],
            "this endpoint takes a JSON body: send it with Content-Type: application/json",
            "{p}"
        );
    }
}

#[tokio::test]
async fn wrong_method_is_a_405_problem() {
    let s = Server::start(Options {
        env: crate::harness::admin_env(&[]),
        ..Default::default()
    })
    .await;
    let r = reqwest::Client::new()
        .delete(s.url("/api/v1/departments"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Invented methods are 405 too, and are counted as one kind, whatever their names: a
    // client inventing one per request grows neither the metrics nor the audit log's actions.
    let c = reqwest::Client::new();
    for name in ["FROB", "QUUX7"] {
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        let r = c
            .request(method, s.url("/api/v1/datasets"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{name}");
    }
    let metrics = s.metrics().await;
    assert!(
        !metrics.contains("FROB") && !metrics.contains("QUUX7"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "datagate_http_requests_total{route=\"/api/v1/datasets\",method=\"OTHER\",status=\"405\"} 2"
        ),
        "{metrics}"
    );
    let actions: Vec<serde_json::Value> = s
        .audit_records("status=405&limit=10")
        .await
        .into_iter()
        .map(|r| r["action"].clone())
        .collect();
    assert_eq!(
        actions[..2],
        [
            serde_json::json!("other OTHER /api/v1/datasets"),
            serde_json::json!("other OTHER /api/v1/datasets")
        ]
    );
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let s = Server::start(Options {
        env: vec![(
            "DATAGATE_SERVER__HEADER_READ_TIMEOUT_SECS".into(),
            "1".into(),
        )],
        ..Default::default()
    })
    .await;
    let addr = s.addr.clone();
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let start = Instant::now();
        let mut buf = Vec::new();
        let _ = sock.read_to_end(&mut buf);
        start.elapsed()
    })
    .await
    .unwrap();
    assert!(
        closed_after < Duration::from_secs(5),
        "connection held for {closed_after:?}"
    );
    // The server still serves others.
    assert_eq!(reqwest::get(s.url("/healthz")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut s = Server::start(Options::default()).await;
    assert_eq!(reqwest::get(s.url("/healthz")).await.unwrap().status(), 200);
    let status = s.terminate();
    assert!(status.success(), "{status}");
    assert!(
        reqwest::get(s.url("/healthz")).await.is_err(),
        "stopped accepting"
    );
    let log = s.log_text();
    assert!(log.contains("shutting down"), "{log}");
}

/// A transfer the shutdown cuts off (a client that stopped reading an export) is recorded
/// with the rows and bytes that had left, not as an empty transfer.
#[tokio::test]
async fn a_transfer_cut_by_shutdown_is_recorded_with_what_had_left() {
    use crate::harness::{ADMIN, admin_env};
    use serde_json::json;
    let mut s = Server::start(Options {
        env: admin_env(&[("DATAGATE_SERVER__SHUTDOWN_GRACE_SECS", "1")]),
        ..Default::default()
    })
    .await;
    let c = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        c.post(s.url(path)).bearer_auth(ADMIN).json(&body).send()
    };
    let st = post(
        "/api/v1/departments",
        json!({"id": "bulk", "name": "Bulk", "description": "a large dataset"}),
    )
    .await
    .unwrap()
    .status();
    assert_eq!(st, 201);
    let st = post(
        "/api/v1/datasets",
        json!({"department": "bulk", "name": "lines", "title": "Lines", "description": "d",
               "access_level": "open", "license": "CC0-1.0", "tags": [], "update_frequency": "daily"}),
    )
    .await
    .unwrap()
    .status();
    assert_eq!(st, 201);
    // About 24 MB of CSV: far more than the socket buffers and the stream's queue hold.
    const ROWS: u64 = 400_000;
    let mut csv = String::from("id,label\n");
    for i in 0..ROWS {
        csv.push_str(&format!(
            "{i},label {} of a line padded out to some length\n",
            i % 1000
        ));
    }
    s.publish_csv("bulk/lines", "replace", csv).await;

    // A client that reads the head and a little of the body, then stops reading.
    let mut conn = std::net::TcpStream::connect(&s.addr).unwrap();
    conn.write_all(
        b"GET /api/v1/datasets/bulk/lines/export?format=csv HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut got = vec![0u8; 64 * 1024];
    conn.read_exact(&mut got).unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got[..200])
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = s.terminate();
    assert!(status.success(), "{status}");
    drop(conn);

    let mut text = String::new();
    for e in std::fs::read_dir(s.data_dir().join("audit")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("segment-") {
            text.push_str(&std::fs::read_to_string(e.path()).unwrap());
        }
    }
    let end = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["action"] == "data.export" && r["kind"] == "end")
        .expect("the export's end record");
    // Cancelled by the shutdown (or, when the closed connection was seen first, the client's
    // going): either way, what had left is counted.
    assert!(
        matches!(end["outcome"].as_str(), Some("cancelled" | "disconnected")),
        "{end}"
    );
    let rows = end["rows_returned"].as_u64().unwrap();
    let bytes = end["bytes_returned"].as_u64().unwrap();
    assert!(rows > 0 && rows < ROWS, "{end}");
    // Lines of this CSV are 46 to 57 bytes: the rows counted are the rows in those bytes
    // (give or take the batches in flight).
    assert!(
        (30..=80).contains(&(bytes / rows)),
        "{bytes} bytes for {rows} rows: {end}"
    );
}
