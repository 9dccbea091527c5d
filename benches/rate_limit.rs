//! The cost of fair use per request, and the memory of the limiter state.
//!
//!     cargo bench --bench rate_limit
//!
//! Criterion measures one limiter check (governor GCRA behind datagate's tier wrapper) for a
//! caller seen before, for callers spread over 100,000 keys, and for anonymous callers by
//! address; the baseline in the same run is a plain `DashMap` lookup of the same keys, the
//! least a keyed check can cost. Then 1,000,000 distinct callers are admitted and the process's
//! resident memory is printed before, after, and after pruning (`retain_recent` once the
//! callers are idle long enough to be back at a full burst, then `shrink_to_fit`).

use criterion::{BenchmarkId, Criterion, criterion_group};
use datagate_access::CallerId;
use datagate_access::fair_use::limiter::RequestLimiter;
use datagate_core::TierConfig;
use governor::clock::FakeRelativeClock;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

fn tiers() -> BTreeMap<String, TierConfig> {
    BTreeMap::from([
        ("standard".to_string(), TierConfig::standard()),
        ("anonymous".to_string(), TierConfig::anonymous()),
    ])
}

fn key(i: u32) -> CallerId {
    CallerId::Key(Arc::from(format!("k{i:08}").as_str()))
}

fn ip(i: u32) -> CallerId {
    CallerId::Ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
}

fn checks(c: &mut Criterion) {
    let mut g = c.benchmark_group("limiter_check");
    let limiter = RequestLimiter::new(&tiers());
    let one = key(1);
    g.bench_function("same_key", |b| {
        b.iter(|| black_box(limiter.check("standard", black_box(&one))))
    });
    const SPREAD: u32 = 100_000;
    let keys: Vec<CallerId> = (0..SPREAD).map(key).collect();
    let ips: Vec<CallerId> = (0..SPREAD).map(ip).collect();
    for (name, tier, callers) in [
        ("keys", "standard", &keys),
        ("addresses", "anonymous", &ips),
    ] {
        let mut i = 0usize;
        g.bench_with_input(
            BenchmarkId::new("spread_100k", name),
            callers,
            |b, callers| {
                b.iter(|| {
                    i = (i + 1) % callers.len();
                    black_box(limiter.check(tier, &callers[i]))
                })
            },
        );
    }
    let map: dashmap::DashMap<CallerId, u64> = keys.iter().map(|k| (k.clone(), 0)).collect();
    let mut i = 0usize;
    g.bench_function("baseline_dashmap_lookup_100k", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(map.get(&keys[i]).map(|v| *v))
        })
    });
    g.finish();
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn memory() {
    const N: u32 = 1_000_000;
    let clock = FakeRelativeClock::default();
    let tiers = tiers();
    let limiter = RequestLimiter::with_clock(&tiers, clock.clone());
    let before = rss_kib();
    for i in 0..N {
        limiter.check("anonymous", &ip(i));
    }
    let full = rss_kib();
    // Idle for one whole window: every caller is back at a full burst.
    clock.advance(Duration::from_secs(tiers["anonymous"].window_secs));
    let left = limiter.prune();
    let pruned = rss_kib();
    let mib = |k: u64| k as f64 / 1024.0;
    println!("limiter state for {N} distinct callers (process RSS):");
    println!("| state | entries | RSS MiB | over empty |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| empty | 0 | {:.1} | 0.0 |", mib(before));
    println!(
        "| {N} callers | {N} | {:.1} | {:.1} ({:.0} B per caller) |",
        mib(full),
        mib(full.saturating_sub(before)),
        full.saturating_sub(before) as f64 * 1024.0 / f64::from(N)
    );
    println!(
        "| after pruning | {left} | {:.1} | {:.1} |",
        mib(pruned),
        mib(pruned.saturating_sub(before))
    );
}

criterion_group!(benches, checks);

fn main() {
    memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
