//! Durable audit appends with group commit: records per second at 1, 16 and 256 concurrent
//! writers, and how long a writer waits for durability (median, p99). Every append returns
//! only once its record is fdatasync'ed. The baseline in the same run is one fdatasync per
//! record (a single writer, which is what a log without group commit does for every writer).
//!
//!     cargo bench --bench audit_append [-- SECONDS=5 [WRITERS...=1 16 256]]
//!
//! (the log is written under ./target). `AUDIT_COMMIT_DELAY_US` and `AUDIT_COMMIT_DELAY_COUNT`
//! set the writer's commit delay and the batch that ends it early (`LogOptions::commit_delay`,
//! `commit_delay_count`), `AUDIT_PREALLOCATE_BYTES` the zeroes laid ahead of the open
//! segment's records (`preallocate_bytes`, 0 = appended), `AUDIT_SEGMENT_MAX_BYTES` where a
//! segment is sealed (and its Parquet copy written meanwhile; a size past what a run writes:
//! no seal, no conversion); default the log's own, to compare settings in one run.
//! The writers run on a runtime like the gateway's, its workers kept one per core
//! (`datagate_core::threads::keep_workers_apart`); `AUDIT_WORKERS_APART=0` leaves them to the
//! kernel.

use datagate_audit::{AuditLog, Event, Kind, LogOptions};
use std::time::{Duration, Instant};

/// The gateway's allocator (crates/datagate/src/main.rs): the log's records are allocated and
/// freed on many threads, and glibc malloc's arena locks would be measured instead of the log.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn event(w: usize, i: u64) -> Event {
    Event {
        kind: Some(Kind::Request),
        event_id: format!("{w}-{i}"),
        request_id: format!("01a21b04-87c2-70ba-81ee-{w:06}{i:06}"),
        key_id: "k7Hq2xv9".into(),
        role: "consumer".into(),
        tier: "standard".into(),
        client_ip: "203.0.113.9".into(),
        user_agent: "bench/1.0".into(),
        method: "GET".into(),
        path: "/api/v1/datasets/transport/bus_lines/rows?limit=10".into(),
        action: "data.rows".into(),
        status: 200,
        rows_returned: 10,
        bytes_returned: 4096,
        duration_ms: 3,
        count: 1,
        ..Default::default()
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .filter_map(|a| a.parse().ok())
        .collect();
    let secs = args.first().copied().unwrap_or(5);
    let writer_counts: Vec<usize> = match args.get(1..) {
        Some(w) if !w.is_empty() => w.iter().map(|&w| w as usize).collect(),
        _ => vec![1, 16, 256],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(|| {
            let _ = datagate_core::threads::run_anywhere();
        })
        .build()
        .expect("runtime");
    let setting = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let apart = setting("AUDIT_WORKERS_APART") != Some(0)
        && rt
            .block_on(datagate_core::threads::keep_workers_apart(rt.handle()))
            .expect("workers kept apart");
    let base = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("target/audit-bench");
    let defaults = LogOptions::new(&base);
    let commit_delay =
        setting("AUDIT_COMMIT_DELAY_US").map_or(defaults.commit_delay, Duration::from_micros);
    let commit_delay_count =
        setting("AUDIT_COMMIT_DELAY_COUNT").map_or(defaults.commit_delay_count, |c| c as usize);
    let preallocate_bytes =
        setting("AUDIT_PREALLOCATE_BYTES").unwrap_or(defaults.preallocate_bytes);
    println!(
        "durable audit appends, {secs} s per row, commit delay {} µs or {commit_delay_count} \
         records, {preallocate_bytes} bytes laid ahead, workers {}, log under {}:",
        commit_delay.as_micros(),
        if apart {
            "one per core"
        } else {
            "where the kernel puts them"
        },
        base.display()
    );
    println!("| writers | records/s | median wait ms | p99 wait ms | records per fsync |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for writers in writer_counts {
        let dir = base.join(format!("w{writers}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut options = LogOptions::new(&dir);
        options.commit_delay = commit_delay;
        options.commit_delay_count = commit_delay_count;
        options.preallocate_bytes = preallocate_bytes;
        if let Some(bytes) = setting("AUDIT_SEGMENT_MAX_BYTES") {
            options.segment_max_bytes = bytes;
        }
        let (log, _) = AuditLog::open(options).expect("open log");
        let (records, mut waits, elapsed) = rt.block_on(async {
            let end = Instant::now() + Duration::from_secs(secs);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..writers {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let mut waits = Vec::new();
                    let mut i = 0;
                    while Instant::now() < end {
                        let t = Instant::now();
                        log.append(event(w, i)).await.expect("append");
                        waits.push(t.elapsed());
                        i += 1;
                    }
                    waits
                }));
            }
            let mut per_writer = Vec::with_capacity(tasks.len());
            for t in tasks {
                per_writer.push(t.await.expect("writer"));
            }
            // Timed up to the last writer's last append, not the merging of their waits.
            let elapsed = start.elapsed();
            let all: Vec<Duration> = per_writer.into_iter().flatten().collect();
            (all.len(), all, elapsed)
        });
        let fsyncs = fsync_count(&log, records);
        log.close();
        waits.sort();
        let pct = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
        println!(
            "| {writers} | {:.0} | {:.2} | {:.2} | {fsyncs} |",
            records as f64 / elapsed.as_secs_f64(),
            pct(0.5),
            pct(0.99),
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Records per fsync, from the writer's counters.
fn fsync_count(log: &AuditLog, records: usize) -> String {
    let batches = log.batches_written();
    if batches == 0 {
        return "-".into();
    }
    format!("{:.1}", records as f64 / batches as f64)
}
