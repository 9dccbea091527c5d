//! Synthetic audit logs for benchmarks (`datagate audit gen`): a realistic mix of principals,
//! datasets, actions, statuses and sizes over a span of time, written with the log's own line
//! encoding ([`crate::record::append_line`]) and chain, in segments, with signed checkpoints —
//! a log `verify` accepts — but with timestamps spread over the span instead of the clock's.

use crate::checkpoint::{self, Checkpoint};
use crate::error::Result;
use crate::log::{CHECKPOINTS_FILE, SIGNING_KEY_FILE};
use crate::record::{self, DatasetVersion, EncodedEvent, Event, GENESIS_HASH, Kind};
use crate::segment::{list_segments, segment_name, sync_dir};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::Path;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Shape {
    pub records: u64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub segment_max_bytes: u64,
    pub principals: u32,
    pub datasets: u32,
    pub seed: u64,
}

/// The dataset names of a shape: `dept<d>.set<n>`.
pub fn dataset_name(i: u32) -> String {
    format!("dept{:02}.set{i:04}", i % 40)
}

/// Writes a new log of `shape` into the empty directory `dir`.
pub fn generate(dir: &Path, shape: &Shape) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if !list_segments(dir)?.is_empty() {
        return Err(crate::AuditError::Invalid(format!(
            "{} already holds an audit log",
            dir.display()
        )));
    }
    let key = checkpoint::load_or_create_key(&dir.join(SIGNING_KEY_FILE))?;
    let mut checkpoints = std::fs::File::create(dir.join(CHECKPOINTS_FILE))?;
    let mut rng = StdRng::seed_from_u64(shape.seed);
    let span = (shape.to - shape.from)
        .num_nanoseconds()
        .unwrap_or(i64::MAX)
        .max(1);
    let step = span / i64::try_from(shape.records.max(1)).unwrap_or(i64::MAX);
    let mut prev = [0u8; 32];
    hex::decode_to_slice(GENESIS_HASH, &mut prev).unwrap_or_default();
    let (mut segment, mut seg_bytes) = (1u64, 0u64);
    let mut file = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(dir.join(segment_name(segment)))?,
    );
    let mut line = Vec::with_capacity(1024);
    let mut open_begin: Option<Event> = None;
    for seq in 1..=shape.records {
        let ts = shape.from + chrono::Duration::nanoseconds(step * (seq as i64 - 1));
        let event = match open_begin.take() {
            Some(begin) => {
                let rows = rng.random_range(0..5000u64);
                Event {
                    kind: Some(Kind::End),
                    rows_returned: rows,
                    bytes_returned: rows * rng.random_range(40..400u64),
                    duration_ms: rng.random_range(1..2000),
                    cpu_ms: Some(rng.random_range(0..500)),
                    outcome: Some("completed".into()),
                    ..begin
                }
            }
            None => {
                let e = random_event(&mut rng, shape, seq);
                if e.kind == Some(Kind::Begin) {
                    open_begin = Some(e.clone());
                }
                e
            }
        };
        line.clear();
        let ts_json = serde_json::to_vec(&ts).unwrap_or_default();
        prev = record::append_line(&mut line, seq, &ts_json, &EncodedEvent::new(&event), &prev);
        if seg_bytes > 0 && seg_bytes + line.len() as u64 > shape.segment_max_bytes {
            file.flush()?;
            file.get_ref().sync_all()?;
            sign(&mut checkpoints, &key, seq - 1, &prev_hash_of(&line))?;
            segment += 1;
            seg_bytes = 0;
            file = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(dir.join(segment_name(segment)))?,
            );
        }
        file.write_all(&line)?;
        seg_bytes += line.len() as u64;
    }
    file.flush()?;
    file.get_ref().sync_all()?;
    if shape.records > 0 {
        sign(&mut checkpoints, &key, shape.records, &hex::encode(prev))?;
    }
    sync_dir(dir)?;
    Ok(())
}

/// The `prev_hash` member of an encoded line (the hash of the record before it).
fn prev_hash_of(line: &[u8]) -> String {
    // `...,"prev_hash":"<64>","hash":"<64>"}\n`
    let n = line.len();
    String::from_utf8_lossy(&line[n - 141..n - 77]).into_owned()
}

fn sign(
    out: &mut std::fs::File,
    key: &ed25519_dalek::SigningKey,
    seq: u64,
    hash: &str,
) -> Result<()> {
    let cp = Checkpoint::sign(key, seq, hash, Utc::now());
    let mut line = serde_json::to_vec(&cp).unwrap_or_default();
    line.push(b'\n');
    out.write_all(&line)?;
    out.sync_data()?;
    Ok(())
}

fn random_event(rng: &mut StdRng, shape: &Shape, seq: u64) -> Event {
    let principal = rng.random_range(0..shape.principals.max(1));
    let (key_id, role) = if principal % 7 == 0 {
        ("anonymous".to_string(), "anonymous")
    } else {
        (
            format!("k{principal:05}"),
            ["consumer", "publisher", "auditor"][principal as usize % 3],
        )
    };
    let dataset = dataset_name(rng.random_range(0..shape.datasets.max(1)));
    let pick = rng.random_range(0..100);
    let (kind, action, status) = match pick {
        0..40 => (Kind::Begin, "data.rows", 200),
        40..55 => (Kind::Begin, "data.query", 200),
        55..60 => (Kind::Begin, "data.export", 200),
        60..90 => (Kind::Request, "catalog.datasets", 200),
        90..95 => (Kind::Request, "data.rows", 403),
        _ => (Kind::Refusals, "data.rows", 429),
    };
    let query = (action == "data.query").then(|| {
        format!(
            "SELECT district, count(*) FROM {dataset} WHERE id > {} GROUP BY 1",
            seq % 1000
        )
    });
    Event {
        kind: Some(kind),
        event_id: format!("{seq:016x}"),
        request_id: format!("r{seq:016x}"),
        key_id,
        role: role.into(),
        department: (role == "publisher").then(|| format!("dept{:02}", principal % 40)),
        tier: "standard".into(),
        client_ip: format!(
            "10.{}.{}.{}",
            principal % 256,
            (principal / 256) % 256,
            seq % 250
        ),
        user_agent: "python-requests/2.32".into(),
        method: if action == "data.query" {
            "POST"
        } else {
            "GET"
        }
        .into(),
        path: format!("/api/v1/datasets/{}", dataset.replace('.', "/")),
        action: action.into(),
        datasets: if action == "catalog.datasets" {
            Vec::new()
        } else {
            vec![DatasetVersion {
                name: dataset,
                version: Some(1),
            }]
        },
        query_sha256: query.as_deref().map(record::query_sha256),
        query_text: query,
        status,
        count: if kind == Kind::Refusals {
            rng.random_range(1..20)
        } else {
            1
        },
        duration_ms: rng.random_range(0..50),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_log_verifies_and_converts() {
        let tmp = tempfile::tempdir().unwrap();
        let shape = Shape {
            records: 5000,
            from: "2026-01-01T00:00:00Z".parse().unwrap(),
            to: "2026-03-01T00:00:00Z".parse().unwrap(),
            segment_max_bytes: 256 * 1024,
            principals: 50,
            datasets: 20,
            seed: 7,
        };
        generate(tmp.path(), &shape).unwrap();
        let v = crate::verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok && v.events == 5000, "{v:?}");
        let index = crate::columnar::ColumnarIndex::load(tmp.path()).unwrap();
        index.catch_up(2).unwrap();
        let v = crate::verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok && v.columnar_rows > 0, "{v:?}");
        let days: std::collections::BTreeSet<_> = index
            .snapshot()
            .iter()
            .flat_map(|m| m.files.iter().map(|f| f.day))
            .collect();
        assert!(days.len() > 30, "spread over the span's days");
    }
}
