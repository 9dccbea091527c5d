//! Verification: recompute the chain over every segment and check every signed checkpoint
//! (and optionally one an auditor kept), reporting the first bad `seq` and why. It reads only
//! files, so it runs offline on a copy of the audit directory (`datagate audit verify`).

use crate::checkpoint::{self, Checkpoint};
use crate::error::Result;
use crate::log::{CHECKPOINTS_FILE, SIGNING_KEY_FILE};
use crate::record::{self, GENESIS_HASH, LineError};
use crate::segment::{list_segments, split_lines};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use std::path::Path;

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub ok: bool,
    /// Records in the log.
    pub events: u64,
    /// The last record: `{seq, hash}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
    /// Checkpoints whose signature and hash were checked.
    pub checkpoints: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    /// `modified`, `missing`, `reordered`, `truncated`, `bad-signature` or `not-an-extension`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

struct Problem {
    seq: u64,
    reason: &'static str,
    detail: String,
}

/// Verifies the log in `dir`. Checkpoint signatures are checked against `public_key`, else
/// against the key in the directory; `given` is a checkpoint the log must still extend.
pub fn verify_dir(
    dir: &Path,
    public_key: Option<&VerifyingKey>,
    given: Option<&Checkpoint>,
) -> Result<Verdict> {
    // Every line of every segment, in order: (segment file name, line bytes).
    let mut lines: Vec<(String, Vec<u8>)> = Vec::new();
    for (_, path) in list_segments(dir)? {
        let data = std::fs::read(&path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (complete, _torn) = split_lines(&data);
        lines.extend(
            complete
                .into_iter()
                .map(|(_, l)| (name.clone(), l.to_vec())),
        );
    }
    let decoded: Vec<Result<record::Record, LineError>> =
        lines.iter().map(|(_, l)| record::decode(l)).collect();
    let mut problems: Vec<Problem> = Vec::new();
    let mut hashes: Vec<String> = Vec::with_capacity(decoded.len());
    let (mut expected, mut prev) = (1u64, GENESIS_HASH.to_string());
    for (i, d) in decoded.iter().enumerate() {
        let file = &lines[i].0;
        let r = match d {
            Ok(r) => r,
            Err(e) => {
                let why = match e {
                    LineError::HashMismatch => "its bytes do not match its hash".to_string(),
                    LineError::Unreadable(m) => format!("it is not a record ({m})"),
                };
                problems.push(Problem {
                    seq: expected,
                    reason: "modified",
                    detail: format!("record {expected} in {file}: {why}"),
                });
                break;
            }
        };
        if r.seq != expected {
            let later = decoded[i + 1..]
                .iter()
                .any(|d| d.as_ref().is_ok_and(|r| r.seq == expected));
            let (reason, detail) = if r.seq < expected || later {
                (
                    "reordered",
                    format!(
                        "record {} stands where record {expected} belongs in {file}",
                        r.seq
                    ),
                )
            } else {
                (
                    "missing",
                    format!(
                        "record {expected} is missing: {file} goes on with {}",
                        r.seq
                    ),
                )
            };
            problems.push(Problem {
                seq: expected,
                reason,
                detail,
            });
            break;
        }
        if r.prev_hash != prev {
            problems.push(Problem {
                seq: r.seq,
                reason: "modified",
                detail: format!(
                    "record {} in {file} does not follow record {}: its prev_hash differs from \
                     that record's hash (a record was rewritten or a segment replaced)",
                    r.seq,
                    r.seq - 1
                ),
            });
            break;
        }
        hashes.push(r.hash.clone());
        prev = r.hash.clone();
        expected += 1;
    }
    let head_seq = hashes.len() as u64;
    let key = match public_key {
        Some(k) => Some(*k),
        None => checkpoint::read_public_key(&dir.join(SIGNING_KEY_FILE)).ok(),
    };
    let mut checked = 0u64;
    let mut check = |cp: &Checkpoint, mismatch: &'static str, problems: &mut Vec<Problem>| {
        if let Some(k) = &key
            && !cp.verify(k)
        {
            problems.push(Problem {
                seq: cp.seq,
                reason: "bad-signature",
                detail: format!("the checkpoint at seq {} is not signed by the key", cp.seq),
            });
            return;
        }
        checked += 1;
        match hashes.get((cp.seq as usize).wrapping_sub(1)) {
            _ if cp.seq == 0 => {}
            Some(h) if *h == cp.hash => {}
            Some(_) => problems.push(Problem {
                seq: cp.seq,
                reason: mismatch,
                detail: format!("record {} differs from the signed checkpoint", cp.seq),
            }),
            None if mismatch == "not-an-extension" || head_seq == decoded.len() as u64 => problems
                .push(Problem {
                    seq: head_seq + 1,
                    reason: if mismatch == "not-an-extension" {
                        mismatch
                    } else {
                        "truncated"
                    },
                    detail: format!(
                        "the log ends at seq {head_seq}, before the checkpoint at seq {}",
                        cp.seq
                    ),
                }),
            // The chain broke before this checkpoint; that is already reported.
            None => {}
        }
    };
    for cp in checkpoint::read_checkpoints(&dir.join(CHECKPOINTS_FILE))? {
        check(&cp, "modified", &mut problems);
    }
    if let Some(cp) = given {
        check(cp, "not-an-extension", &mut problems);
    }
    let first = problems.into_iter().min_by_key(|p| p.seq);
    Ok(Verdict {
        ok: first.is_none(),
        events: decoded.len() as u64,
        head: hashes.last().map(|h| Head {
            seq: head_seq,
            hash: h.clone(),
        }),
        checkpoints: checked,
        first_bad_seq: first.as_ref().map(|p| p.seq),
        reason: first.as_ref().map(|p| p.reason.to_string()),
        detail: first.map(|p| p.detail),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{AuditLog, LogOptions};
    use crate::record::{Event, Kind};
    use crate::segment::segment_name;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn event(i: usize) -> Event {
        Event {
            kind: Some(Kind::Request),
            event_id: format!("e{i}"),
            request_id: format!("r{i}"),
            key_id: "anonymous".into(),
            method: "GET".into(),
            path: format!("/api/v1/datasets?offset={i}"),
            status: 200,
            count: 1,
            ..Default::default()
        }
    }

    /// A closed log of `n` records in segments of about `segment_bytes`.
    fn log_of(n: usize, segment_bytes: u64) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut opts = LogOptions::new(&dir);
        opts.segment_max_bytes = segment_bytes;
        let (log, _) = AuditLog::open(opts).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..n {
                log.append(event(i)).await.unwrap();
            }
        });
        log.close();
        (tmp, dir)
    }

    fn segment_lines(dir: &Path, index: u64) -> Vec<Vec<u8>> {
        let data = std::fs::read(dir.join(segment_name(index))).unwrap();
        split_lines(&data)
            .0
            .into_iter()
            .map(|(_, l)| l.to_vec())
            .collect()
    }

    fn write_lines(dir: &Path, index: u64, lines: &[Vec<u8>]) {
        let mut data = Vec::new();
        for l in lines {
            data.extend_from_slice(l);
            data.push(b'\n');
        }
        std::fs::write(dir.join(segment_name(index)), data).unwrap();
    }

    fn verdict(dir: &Path) -> (Option<u64>, Option<String>) {
        let v = verify_dir(dir, None, None).unwrap();
        (v.first_bad_seq, v.reason)
    }

    #[test]
    fn an_untouched_log_verifies() {
        let (_t, dir) = log_of(50, 2048);
        let v = verify_dir(&dir, None, None).unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.events, 50);
        assert_eq!(v.head.as_ref().unwrap().seq, 50);
        assert!(v.checkpoints >= 1, "the shutdown checkpoint");
        assert!(list_segments(&dir).unwrap().len() > 3, "several segments");
    }

    #[test]
    fn each_kind_of_tampering_is_named_at_its_first_bad_seq() {
        // Flip a byte of record 3 (in segment 1).
        let (_t, dir) = log_of(30, 1 << 20);
        let mut lines = segment_lines(&dir, 1);
        lines[2][40] ^= 0x20;
        write_lines(&dir, 1, &lines);
        assert_eq!(verdict(&dir), (Some(3), Some("modified".into())));

        // Delete record 10.
        let (_t, dir) = log_of(30, 1 << 20);
        let mut lines = segment_lines(&dir, 1);
        lines.remove(9);
        write_lines(&dir, 1, &lines);
        assert_eq!(verdict(&dir), (Some(10), Some("missing".into())));

        // Swap records 7 and 8.
        let (_t, dir) = log_of(30, 1 << 20);
        let mut lines = segment_lines(&dir, 1);
        lines.swap(6, 7);
        write_lines(&dir, 1, &lines);
        assert_eq!(verdict(&dir), (Some(7), Some("reordered".into())));

        // Truncate the tail before the signed (shutdown) checkpoint.
        let (_t, dir) = log_of(30, 1 << 20);
        let lines = segment_lines(&dir, 1);
        write_lines(&dir, 1, &lines[..25]);
        assert_eq!(verdict(&dir), (Some(26), Some("truncated".into())));

        // Rewrite record 12 and re-hash it: the next record no longer follows it, and the
        // signed checkpoint no longer matches.
        let (_t, dir) = log_of(30, 1 << 20);
        let mut lines = segment_lines(&dir, 1);
        let r = crate::record::decode(&lines[11]).unwrap();
        let mut e = r.event.clone();
        e.status = 404;
        let (line, _) = crate::record::encode(r.seq, &r.ts, &e, &r.prev_hash);
        lines[11] = line[..line.len() - 1].to_vec();
        write_lines(&dir, 1, &lines);
        assert_eq!(verdict(&dir), (Some(13), Some("modified".into())));

        // Replace a whole sealed segment by another log's (a valid chain of its own).
        let (_t, dir) = log_of(40, 1024);
        let (_t2, other) = log_of(40, 1024);
        let segments = list_segments(&dir).unwrap();
        let (index, _) = segments[2];
        std::fs::copy(
            other.join(segment_name(index)),
            dir.join(segment_name(index)),
        )
        .unwrap();
        let first_seq = crate::record::decode(&segment_lines(&dir, index)[0])
            .unwrap()
            .seq;
        assert_eq!(verdict(&dir), (Some(first_seq), Some("modified".into())));
    }

    #[test]
    fn a_kept_checkpoint_proves_extension_or_not() {
        let (_t, dir) = log_of(20, 1 << 20);
        let kept = checkpoint::read_checkpoints(&dir.join(CHECKPOINTS_FILE))
            .unwrap()
            .pop()
            .unwrap();
        assert!(verify_dir(&dir, None, Some(&kept)).unwrap().ok);
        // A different log (same key file copied) does not extend it.
        let (_t2, other) = log_of(25, 1 << 20);
        std::fs::copy(dir.join(SIGNING_KEY_FILE), other.join(SIGNING_KEY_FILE)).unwrap();
        std::fs::remove_file(other.join(CHECKPOINTS_FILE)).unwrap();
        let v = verify_dir(&other, None, Some(&kept)).unwrap();
        assert_eq!(
            (v.first_bad_seq, v.reason.as_deref()),
            (Some(20), Some("not-an-extension"))
        );
        // A forged checkpoint fails its signature.
        let mut forged = kept.clone();
        forged.seq = 3;
        let v = verify_dir(&dir, None, Some(&forged)).unwrap();
        assert_eq!(v.reason.as_deref(), Some("bad-signature"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Appending any sequence verifies; changing any single byte of any record fails.
        #[test]
        fn any_single_byte_change_is_detected(
            paths in proptest::collection::vec("[ -~路径]{0,40}", 1..12),
            pick in any::<proptest::sample::Index>(),
            delta in 1u8..=255,
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("audit");
            let (log, _) = AuditLog::open(LogOptions::new(&dir)).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                for (i, p) in paths.iter().enumerate() {
                    let mut e = event(i);
                    e.path = p.clone();
                    log.append(e).await.unwrap();
                }
            });
            log.close();
            prop_assert!(verify_dir(&dir, None, None).unwrap().ok);
            let path = dir.join(segment_name(1));
            let mut data = std::fs::read(&path).unwrap();
            let at = pick.index(data.len());
            data[at] = data[at].wrapping_add(delta);
            std::fs::write(&path, &data).unwrap();
            let v = verify_dir(&dir, None, None).unwrap();
            prop_assert!(!v.ok, "changing byte {} went unnoticed", at);
        }
    }
}
