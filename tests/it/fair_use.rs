//! Fair use (API.md §5 "Rate limits", §6): tiers' request rates with `RateLimit-Policy` /
//! `RateLimit` / `Retry-After`, per-key independence and tier changes, the concurrency cap, load
//! shedding, the daily byte quota across a restart, and a flood of refused requests that leaves
//! a well-behaved client served and the server's memory flat.

use crate::harness::{ADMIN, Options, Server, admin_env as env, new_key};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `"tier";q=..;w=..` and `"tier";r=..;t=..` parsed into (name, {param: value}).
fn parse_item(v: &str) -> (String, std::collections::HashMap<String, u64>) {
    let mut parts = v.split(';');
    let name = parts.next().unwrap().trim();
    assert!(
        name.starts_with('"') && name.ends_with('"') && name.len() > 2,
        "policy name is a quoted string: {v}"
    );
    let params = parts
        .map(|p| {
            let (k, val) = p.trim().split_once('=').unwrap_or_else(|| panic!("{v}"));
            (
                k.to_string(),
                val.parse::<u64>().unwrap_or_else(|_| panic!("{v}")),
            )
        })
        .collect();
    (name.trim_matches('"').to_string(), params)
}

struct Limits {
    policy: (String, u64, u64),
    remaining: u64,
    reset: u64,
}

fn limits(r: &Response) -> Limits {
    let h = |n: &str| {
        r.headers()
            .get(n)
            .unwrap_or_else(|| panic!("{} answered without {n}", r.url()))
            .to_str()
            .unwrap()
            .to_string()
    };
    let (pname, p) = parse_item(&h("ratelimit-policy"));
    let (lname, l) = parse_item(&h("ratelimit"));
    assert_eq!(pname, lname);
    Limits {
        policy: (pname, p["q"], p["w"]),
        remaining: l["r"],
        reset: l["t"],
    }
}

fn retry_after(r: &Response) -> u64 {
    r.headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds")
}

async fn problem(r: Response) -> Value {
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "a refusal is problem+json"
    );
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_burst_is_refused_with_headers_and_retry_after_is_honoured() {
    let s = Server::start(Options {
        shipped_limits: true,
        ..Default::default()
    })
    .await;
    let c = Client::new();
    let shipped = toml::from_str::<toml::Value>(
        &std::fs::read_to_string(crate::harness::repo_root().join("config/datagate.toml")).unwrap(),
    )
    .unwrap();
    let anon = &shipped["tiers"]["anonymous"];
    let burst = anon["burst"].as_integer().unwrap() as u64;
    let (q, w) = (
        anon["requests"].as_integer().unwrap() as u64,
        anon["window_secs"].as_integer().unwrap() as u64,
    );

    // Health checks are neither limited nor labelled.
    let r = c.get(s.url("/healthz")).send().await.unwrap();
    assert!(r.headers().get("ratelimit").is_none());

    let mut answered = Vec::new();
    let refused = loop {
        let r = c.get(s.url("/api/v1/departments")).send().await.unwrap();
        let l = limits(&r);
        assert_eq!(l.policy, ("anonymous".to_string(), q, w));
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            break r;
        }
        assert_eq!(r.status(), 200);
        answered.push(l.remaining);
        assert!(
            answered.len() as u64 <= burst + 2,
            "no refusal after {answered:?}"
        );
    };
    // The burst is served (plus what trickled back meanwhile), counting down to 0.
    assert!(answered.len() as u64 >= burst, "{answered:?}");
    assert_eq!(answered.last(), Some(&0), "{answered:?}");
    assert!(answered.windows(2).all(|p| p[1] <= p[0]), "{answered:?}");
    let l = limits(&refused);
    assert_eq!(l.remaining, 0);
    assert!(l.reset >= 1);
    let wait = retry_after(&refused);
    assert!(wait >= 1 && wait <= w, "Retry-After {wait}");
    let body = problem(refused).await;
    assert_eq!(body["status"], 429);
    assert_eq!(body["violated_policies"], json!(["anonymous"]));
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));

    // Refused again at once (the data API and DCAT too: one budget per client address)...
    let r = c.get(s.url("/catalog/data.json")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    // ...but a client that waits Retry-After is served.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = c
        .get(s.url("/api/v1/datasets/transport/bus_lines/rows?limit=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "after Retry-After");
    assert_eq!(limits(&r).policy.0, "anonymous");

    // A bad key is limited as the anonymous client it proves to be, then answered 401.
    let r = c
        .get(s.url("/api/v1/departments"))
        .bearer_auth("dg_nobody_0000000000000000000000000000000000000000000000000000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "bad keys share the address's budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_limited_independently_and_an_admin_changes_a_tier() {
    let s = Server::start(Options {
        env: env(&[
            ("DATAGATE_TIERS__STANDARD__REQUESTS", "2"),
            ("DATAGATE_TIERS__STANDARD__WINDOW_SECS", "3600"),
            ("DATAGATE_TIERS__STANDARD__BURST", "2"),
        ]),
        ..Default::default()
    })
    .await;
    let c = Client::new();
    let (a, b) = (
        new_key(&s, "consumer", None).await,
        new_key(&s, "consumer", None).await,
    );
    let get = |key: &str| {
        c.get(s.url("/api/v1/datasets"))
            .bearer_auth(key.to_string())
            .send()
    };
    for expect_remaining in [1, 0] {
        let r = get(&a).await.unwrap();
        assert_eq!(r.status(), 200);
        let l = limits(&r);
        assert_eq!(l.policy, ("standard".to_string(), 2, 3600));
        assert_eq!(l.remaining, expect_remaining);
    }
    let r = get(&a).await.unwrap();
    assert_eq!(r.status(), 429);
    let wait = retry_after(&r);
    assert!((1..=1800).contains(&wait), "one request per 1800 s: {wait}");
    let p = problem(r).await;
    assert_eq!(p["violated_policies"], json!(["standard"]));
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the standard tier allows 2 requests per 3600 s"),
        "{detail}"
    );
    // The other key of the same tier has its own budget.
    for _ in 0..2 {
        assert_eq!(get(&b).await.unwrap().status(), 200);
    }
    assert_eq!(get(&b).await.unwrap().status(), 429);

    // An admin moves key a to premium: its next request is judged by premium.
    let id = a.split('_').nth(1).unwrap();
    let r = c
        .patch(s.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(ADMIN)
        .json(&json!({"tier": "premium"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["tier"], "premium");
    let r = get(&a).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(limits(&r).policy.0, "premium");
    let me: Value = c
        .get(s.url("/api/v1/me"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["tier"], "premium");
    assert!(me["limits"]["tier"]["requests"].as_u64().unwrap() > 2);
    // Unknown tiers are refused, and only admins change tiers.
    let r = c
        .patch(s.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(ADMIN)
        .json(&json!({"tier": "platinum"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = c
        .patch(s.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(&a)
        .json(&json!({"tier": "internal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// A query whose result (1.44 M rows of JSON, well over 100 MB) cannot fit in socket buffers:
/// while its response is not read, it stays in flight.
const HUGE: &str = "SELECT a.*, b.* FROM transport.bus_lines a CROSS JOIN transport.bus_lines b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_and_load_shedding_leave_catalog_reads_fast() {
    let s = Server::start(Options {
        env: env(&[
            ("DATAGATE_TIERS__STANDARD__MAX_CONCURRENT_QUERIES", "1"),
            ("DATAGATE_ADMISSION__MAX_IN_FLIGHT_QUERIES", "2"),
            ("DATAGATE_ADMISSION__RETRY_AFTER_SECS", "2"),
            ("DATAGATE_LIMITS__MAX_QUERY_ROWS", "10000000"),
        ]),
        ..Default::default()
    })
    .await;
    let c = Client::new();
    let keys = [
        new_key(&s, "consumer", None).await,
        new_key(&s, "consumer", None).await,
        new_key(&s, "consumer", None).await,
    ];
    let query = |key: &str| {
        c.post(s.url("/api/v1/query"))
            .bearer_auth(key.to_string())
            .json(&json!({"sql": HUGE, "format": "json"}))
            .send()
    };
    // Key 0 starts a huge query and does not read it.
    let held0 = query(&keys[0]).await.unwrap();
    assert_eq!(held0.status(), 200);
    // Its second query at once is over its tier's concurrency.
    let r = query(&keys[0]).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(retry_after(&r) >= 1);
    let body = problem(r).await;
    assert_eq!(body["violated_policies"], json!(["concurrency"]));
    // Key 1 takes the gateway's last query slot; key 2 is shed with 503 and Retry-After.
    let held1 = query(&keys[1]).await.unwrap();
    assert_eq!(held1.status(), 200);
    let r = c
        .get(s.url("/api/v1/datasets/transport/bus_lines/rows?limit=1"))
        .bearer_auth(&keys[2])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(retry_after(&r), 2);
    assert_eq!(problem(r).await["status"], 503);
    // Catalog reads and health checks are not queries: served, and fast.
    for path in [
        "/api/v1/datasets",
        "/api/v1/datasets/transport/bus_lines",
        "/healthz",
    ] {
        let t = Instant::now();
        let r = c
            .get(s.url(path))
            .bearer_auth(&keys[2])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            t.elapsed()
        );
    }
    let metrics = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("datagate_requests_refused_total")
                && l.contains("policy=\"concurrency\"")
                && l.contains("tier=\"standard\"")),
        "refusals are counted by tier and policy"
    );
    assert!(
        metrics.contains("datagate_admitted_in_flight{work=\"query\"} 2"),
        "{metrics}"
    );
    // Dropping a held response gives its slots back.
    drop(held0);
    drop(held1);
    let t = Instant::now();
    loop {
        let r = c
            .get(s.url("/api/v1/datasets/transport/bus_lines/rows?limit=1"))
            .bearer_auth(&keys[0])
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "slots never released: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_byte_quota_completes_the_started_export_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let opts = Options {
        env: env(&[
            ("DATAGATE_TIERS__STANDARD__DAILY_BYTES", "20000"),
            ("DATAGATE_RATE_LIMITS__USAGE_FLUSH_SECS", "1"),
        ]),
        ..Default::default()
    };
    let mut s = Server::start_in(&data_dir, opts.clone()).await;
    let c = Client::new();
    let (a, b) = (
        new_key(&s, "consumer", None).await,
        new_key(&s, "consumer", None).await,
    );
    // An export far larger than the quota starts within it, so it completes.
    let r = c
        .get(s.url("/api/v1/datasets/transport/bus_stops/export?format=csv"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert!(body.len() > 20_000);
    let expected_rows = std::fs::read_to_string(
        crate::harness::repo_root().join("catalog/transport/bus_stops.csv"),
    )
    .unwrap()
    .lines()
    .count();
    assert_eq!(
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        expected_rows,
        "header and every row"
    );
    let over = |key: String| {
        let c = c.clone();
        let url = s.url("/api/v1/datasets/transport/bus_lines/rows?limit=5");
        async move { c.get(url).bearer_auth(key).send().await.unwrap() }
    };
    let check_refused = |r: Response| async move {
        assert_eq!(r.status(), 429);
        let wait = retry_after(&r);
        assert!((1..=86_400).contains(&wait), "until 00:00 UTC: {wait}");
        let body = problem(r).await;
        assert_eq!(body["violated_policies"], json!(["daily-bytes"]));
        assert!(body["bytes_used"].as_u64().unwrap() >= 20_000);
    };
    check_refused(over(a.clone()).await).await;
    // Only data costs bytes: the catalog stays browsable; the other key is not affected.
    let me: Value = c
        .get(s.url("/api/v1/me"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["limits"]["tier"]["bytes_used_today"].as_u64().unwrap(),
        body.len() as u64
    );
    assert_eq!(over(b.clone()).await.status(), 200);

    // A restart (SIGTERM, which saves the counters) keeps the day's bytes.
    assert!(s.terminate().success());
    let s = Server::start_in(&data_dir, opts.clone()).await;
    let c2 = Client::new();
    let r = c2
        .get(s.url("/api/v1/datasets/transport/bus_lines/rows?limit=5"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    check_refused(r).await;
    let r = c2
        .get(s.url("/api/v1/datasets/transport/bus_lines/rows?limit=5"))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(s);

    // A hard kill loses at most the last flush interval: after a save, the counters hold.
    let mut s = Server::start_in(&data_dir, opts).await;
    let c3 = Client::new();
    let r = c3
        .get(s.url("/api/v1/datasets/transport/bus_stops/export?format=csv"))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.kill();
    let s = Server::start_in(
        &data_dir,
        Options {
            env: env(&[("DATAGATE_TIERS__STANDARD__DAILY_BYTES", "20000")]),
            ..Default::default()
        },
    )
    .await;
    let r = Client::new()
        .get(s.url("/api/v1/datasets/transport/bus_lines/rows?limit=5"))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    check_refused(r).await;
}
