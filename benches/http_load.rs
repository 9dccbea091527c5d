//! A small closed-loop HTTP load generator: CONCURRENCY clients, each with its own keep-alive
//! connection, send GET URL back to back for SECONDS and the latencies are reported.
//!
//!     cargo bench --bench http_load -- URL [CONCURRENCY=64] [SECONDS=10] [EXPECT_STATUS=200]
//!
//! With `AUTH_KEY` in the environment, every request carries `Authorization: Bearer $AUTH_KEY`.
//!
//! Prints one line: `requests=N errors=E rps=R p50_ms=A p99_ms=B` (errors: transport failures
//! or another status). The clients share the machine with the server: on a 2-core machine the
//! figure is a floor of what the server does alone.

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(url) = args.first().cloned() else {
        eprintln!("usage: http_load URL [CONCURRENCY] [SECONDS] [EXPECT_STATUS]");
        std::process::exit(2);
    };
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let expect: u16 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let end = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        let auth = std::env::var("AUTH_KEY").ok().filter(|k| !k.is_empty());
        for _ in 0..concurrency {
            let url = url.clone();
            let auth = auth.clone();
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("client");
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < end {
                    let t = Instant::now();
                    let mut req = client.get(&url);
                    if let Some(k) = &auth {
                        req = req.bearer_auth(k);
                    }
                    match req.send().await {
                        Ok(r) if r.status().as_u16() == expect => match r.bytes().await {
                            Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                            Err(_) => errors += 1,
                        },
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            }));
        }
        let started = Instant::now();
        let (mut all, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (lat, e) = t.await.expect("client task");
            all.extend(lat);
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64().max(seconds as f64);
        all.sort_unstable();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or(0.0, |v| *v as f64 / 1000.0)
        };
        println!(
            "requests={} errors={} rps={:.0} p50_ms={:.2} p99_ms={:.2}",
            all.len(),
            errors,
            all.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99)
        );
    });
}
