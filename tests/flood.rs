//! The flood test of fair use (API.md §5 "Rate limits"), in its own test binary so that it runs
//! alone: 200 connections of refused requests would otherwise distort the timing of other tests.

#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;

use harness::{Options, Server, admin_env, new_key};
use reqwest::Client;
use std::time::{Duration, Instant};

/// 200 connections hammer the gateway with requests that are refused, for 30 s
/// (`DATAGATE_FLOOD_SECS` changes it); a well-behaved key keeps being served quickly and the
/// server's memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_requests_leaves_others_served_and_memory_flat() {
    let secs: u64 = std::env::var("DATAGATE_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let s = Server::start(Options {
        env: admin_env(&[
            // Behind a trusted proxy (the test itself): every flooder is its own address.
            ("DATAGATE_RATE_LIMITS__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
            ("DATAGATE_TIERS__ANONYMOUS__REQUESTS", "1"),
            ("DATAGATE_TIERS__ANONYMOUS__WINDOW_SECS", "3600"),
            ("DATAGATE_TIERS__ANONYMOUS__BURST", "1"),
        ]),
        ..Default::default()
    })
    .await;
    let c = Client::new();
    let good_key = new_key(&s, "consumer", None).await;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut flood = Vec::new();
    for i in 0..200u32 {
        let url = s.url("/api/v1/datasets/transport/bus_lines/rows?limit=10");
        flood.push(tokio::spawn(async move {
            let c = Client::builder().pool_max_idle_per_host(1).build().unwrap();
            let me = format!("198.51.{}.{}", i / 250, i % 250 + 1);
            let (mut refused, mut other) = (0u64, 0u64);
            while Instant::now() < end {
                match c.get(&url).header("x-forwarded-for", &me).send().await {
                    Ok(r) if r.status() == 429 => refused += 1,
                    _ => other += 1,
                }
            }
            (refused, other)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs.min(5))).await;
    let rss_start = s.rss_kib().unwrap();
    let mut latencies = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        let r = c
            .get(s.url("/api/v1/datasets/transport/bus_lines/rows?limit=10"))
            .bearer_auth(&good_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_end = s.rss_kib().unwrap();
    let (mut refused, mut other) = (0, 0);
    for f in flood {
        let (r, o) = f.await.unwrap();
        refused += r;
        other += o;
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "flood: {refused} refused ({:.0}/s), {other} other; well-behaved client: {} requests, \
         p50 {:?}, p99 {:?}; server RSS {rss_start} KiB -> {rss_end} KiB",
        refused as f64 / secs as f64,
        latencies.len(),
        p(0.5),
        p(0.99)
    );
    assert!(
        other <= 200,
        "each flooder gets one request through at most: {other}"
    );
    assert!(refused > 1000, "the flood ran: {refused}");
    assert!(latencies.len() >= 10);
    assert!(p(0.99) < Duration::from_secs(2), "p99 {:?}", p(0.99));
    assert!(
        rss_end < rss_start + 64 * 1024,
        "memory grew from {rss_start} KiB to {rss_end} KiB"
    );
}
