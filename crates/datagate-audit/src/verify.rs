//! Verification: recompute the chain over every segment and check every signed checkpoint
//! (and optionally one an auditor kept), reporting the first bad `seq` and why. It reads only
//! files, so it runs offline on a copy of the audit directory (`datagate audit verify`), or over
//! several directories at once (the local log and an archive it moved old segments to).
//!
//! Where a segment has a Parquet copy ([`crate::columnar`]), every row of the copy is turned
//! back into its record and re-encoded: its hash must be the chained hash of its `seq`, and the
//! copy must hold each of the segment's records once, in order. So a changed value, a dropped
//! row or a swapped file in the copy is named like a changed segment.
//!
//! Segments are checked in parallel (on as many threads as the caller gives: all cores offline,
//! one in the gateway, so a verification never takes the cores that serve requests), each read once, and only a few
//! hashes per segment are kept: memory stays flat whatever the log's length. A log whose
//! oldest segments are gone (moved to the archive) verifies from the signed checkpoint at the
//! record before its first one.

use crate::checkpoint::{self, Checkpoint};
use crate::columnar::{SegmentIndex, read_markers};
use crate::error::Result;
use crate::log::{CHECKPOINTS_FILE, SIGNING_KEY_FILE};
use crate::record::{self, GENESIS_HASH, LineError};
use crate::segment::{UncachedReader, list_segments, split_lines};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

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
    /// Records whose Parquet copy was checked against the chain.
    #[serde(default)]
    pub columnar_rows: u64,
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

#[derive(Debug, Clone)]
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
    verify_dirs(&[dir], public_key, given, 1)
}

/// One verification of a log at a time, for a gateway whose auditors may ask at once: a
/// caller arriving while one runs waits for that run and gets its verdict (the log as it
/// stood when that run began) instead of starting another. A run reads the whole log from
/// the disk and holds two segment-sized buffers, so concurrent runs would only multiply the
/// disk's load and the memory for the same answer.
#[derive(Debug, Default)]
pub struct VerifyGate {
    state: std::sync::Mutex<GateState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    running: bool,
    /// Runs finished so far.
    runs: u64,
    /// Callers waiting for the run in progress.
    waiting: usize,
    /// The last run's outcome.
    last: Option<std::result::Result<Verdict, String>>,
}

impl VerifyGate {
    /// The verdict of `run`, or of the run already in progress when this is called.
    pub fn verify(
        &self,
        run: impl FnOnce() -> Result<Verdict>,
    ) -> std::result::Result<Verdict, String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.running {
            let joined = state.runs;
            state.waiting += 1;
            while state.runs == joined {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.waiting -= 1;
            return state
                .last
                .clone()
                .unwrap_or_else(|| Err("the verification ended without a verdict".into()));
        }
        state.running = true;
        drop(state);
        // Ends the run even if `run` panics, so no later caller waits for it forever.
        struct Finish<'a>(&'a VerifyGate, Option<std::result::Result<Verdict, String>>);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
                state.running = false;
                state.runs += 1;
                state.last = Some(
                    self.1
                        .take()
                        .unwrap_or_else(|| Err("the verification failed".into())),
                );
                self.0.done.notify_all();
            }
        }
        let mut finish = Finish(self, None);
        let outcome = run().map_err(|e| e.to_string());
        finish.1 = Some(outcome.clone());
        outcome
    }

    /// Verifications run to their end so far (callers who joined one are not counted).
    pub fn runs(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).runs
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    fn verdict(events: u64) -> Verdict {
        Verdict {
            ok: true,
            events,
            head: None,
            checkpoints: 0,
            columnar_rows: 0,
            first_bad_seq: None,
            reason: None,
            detail: None,
        }
    }

    /// Callers arriving while a verification runs get its verdict; no second run starts; the
    /// next caller after it starts a run of its own.
    #[test]
    fn callers_during_a_run_share_its_verdict() {
        let gate = VerifyGate::default();
        let runs = std::sync::atomic::AtomicU64::new(0);
        let answers = std::thread::scope(|scope| {
            let first = scope.spawn(|| {
                gate.verify(|| {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    // Holds the run open until the three others are waiting on it.
                    while gate.state.lock().unwrap().waiting < 3 {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Ok(verdict(7))
                })
            });
            while !gate.state.lock().unwrap().running {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let others: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        gate.verify(|| {
                            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            Ok(verdict(99))
                        })
                    })
                })
                .collect();
            let mut answers = vec![first.join().unwrap()];
            answers.extend(others.into_iter().map(|h| h.join().unwrap()));
            answers
        });
        assert!(answers.iter().all(|a| a == &Ok(verdict(7))), "{answers:?}");
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(gate.runs(), 1);
        assert_eq!(gate.verify(|| Ok(verdict(8))), Ok(verdict(8)));
        assert_eq!(gate.runs(), 2);
    }

    /// A run that fails or panics ends: its waiters get an error, and the gate runs again.
    #[test]
    fn a_failed_or_panicking_run_does_not_hold_the_gate() {
        let gate = VerifyGate::default();
        let failed = gate.verify(|| Err(crate::AuditError::Invalid("disk gone".into())));
        assert!(failed.unwrap_err().contains("disk gone"));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            gate.verify(|| panic!("a bug"))
        }));
        assert!(panicked.is_err());
        assert_eq!(gate.runs(), 2);
        assert!(!gate.state.lock().unwrap().running);
        assert_eq!(gate.verify(|| Ok(verdict(1))), Ok(verdict(1)));
    }
}

/// A segment to check: its file and, if converted, its marker and the directory it lives in.
struct SegmentJob {
    name: String,
    path: PathBuf,
    /// The last segment: perhaps the open one, whose records end at the zeroes laid ahead.
    open: bool,
    marker: Option<(PathBuf, SegmentIndex)>,
}

/// What checking one segment on its own found.
#[derive(Default)]
struct SegmentCheck {
    /// `(seq, prev_hash)` of its first good record.
    first: Option<(u64, [u8; 32])>,
    /// `(seq, hash)` of the last record of its good prefix.
    last: Option<(u64, [u8; 32])>,
    /// Every `seq` in the segment (good or not), to tell "missing" from "reordered".
    seqs: Vec<u64>,
    /// How many records the segment holds and the smallest and largest `seq` among them (kept
    /// after `seqs` is dropped, so memory does not grow with the log).
    records: u64,
    seq_range: Option<(u64, u64)>,
    /// Hashes at the seqs a checkpoint names.
    wanted: HashMap<u64, [u8; 32]>,
    columnar_rows: u64,
    problem: Option<Problem>,
}

/// Verifies the log spread over `dirs` (e.g. the audit directory and a fetched archive): their
/// segments, markers and checkpoints are taken together (a segment in several directories is
/// read from the first), checking segments on up to `threads` threads.
pub fn verify_dirs(
    dirs: &[&Path],
    public_key: Option<&VerifyingKey>,
    given: Option<&Checkpoint>,
    threads: usize,
) -> Result<Verdict> {
    let mut segments: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut markers: BTreeMap<u64, (PathBuf, SegmentIndex)> = BTreeMap::new();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut key = public_key.copied();
    for dir in dirs {
        for (index, path) in list_segments(dir)? {
            segments.entry(index).or_insert(path);
        }
        for (index, m) in read_markers(dir)? {
            if !m.archived {
                markers.entry(index).or_insert((dir.to_path_buf(), m));
            }
        }
        for cp in checkpoint::read_checkpoints(&dir.join(CHECKPOINTS_FILE))? {
            if !checkpoints.contains(&cp) {
                checkpoints.push(cp);
            }
        }
        if key.is_none() {
            key = checkpoint::read_public_key(&dir.join(SIGNING_KEY_FILE))
                .ok()
                .or_else(|| {
                    std::fs::read_to_string(dir.join(crate::archive::PUBLIC_KEY_FILE))
                        .ok()
                        .and_then(|k| checkpoint::parse_public_key(&k).ok())
                });
        }
    }
    checkpoints.sort_by_key(|c| c.seq);
    let wanted: HashSet<u64> = checkpoints
        .iter()
        .map(|c| c.seq)
        .chain(given.map(|c| c.seq))
        .collect();
    let last_index = segments.keys().next_back().copied();
    let jobs: Vec<SegmentJob> = segments
        .into_iter()
        .map(|(index, path)| {
            let marker = markers.remove(&index);
            SegmentJob {
                // Only a sealed segment gets a Parquet copy: a converted last one (an
                // archive's) is sealed, whatever follows it.
                open: Some(index) == last_index && marker.is_none(),
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path,
                marker,
            }
        })
        .collect();
    let checks = check_segments(&jobs, &wanted, threads)?;

    // Link the segments into one chain.
    let mut problems: Vec<Problem> = Vec::new();
    let mut hashes: HashMap<u64, [u8; 32]> = HashMap::new();
    let mut events = 0u64;
    let mut columnar_rows = 0u64;
    let mut head: Option<(u64, [u8; 32])> = None;
    let mut chain_broken = false;
    let mut start: Option<u64> = None;
    for (i, (job, check)) in jobs.iter().zip(&checks).enumerate() {
        events += check.records;
        let next_seq = head.map_or(1, |h: (u64, [u8; 32])| h.0 + 1);
        let at_start = |p: &Problem| {
            let mut p = p.clone();
            if p.seq == 0 {
                p.seq = next_seq;
                p.detail = p
                    .detail
                    .replacen("record 0", &format!("record {}", p.seq), 1);
            }
            p
        };
        let Some((first_seq, first_prev)) = check.first else {
            if let Some(p) = &check.problem {
                problems.push(at_start(p));
                chain_broken = true;
                break;
            }
            continue;
        };
        match head {
            None => {
                start = Some(first_seq);
                let anchored = if first_seq == 1 {
                    first_prev == [0u8; 32]
                } else {
                    // The records before were moved away: a signed checkpoint must vouch for
                    // the record this segment follows.
                    checkpoints.iter().any(|cp| {
                        cp.seq == first_seq - 1
                            && cp.hash == hex::encode(first_prev)
                            && key.as_ref().is_some_and(|k| cp.verify(k))
                    })
                };
                if !anchored {
                    let (reason, detail) = if first_seq == 1 {
                        (
                            "modified",
                            format!(
                                "record 1 in {} does not start a chain (its prev_hash is not {GENESIS_HASH})",
                                job.name
                            ),
                        )
                    } else {
                        (
                            "missing",
                            format!(
                                "the log starts at record {first_seq} ({}) and no signed checkpoint vouches for record {}",
                                job.name,
                                first_seq - 1
                            ),
                        )
                    };
                    problems.push(Problem {
                        seq: if first_seq == 1 {
                            1
                        } else {
                            1.max(first_seq - 1)
                        },
                        reason,
                        detail,
                    });
                    chain_broken = true;
                    break;
                }
            }
            Some((seq, hash)) => {
                let expected = seq + 1;
                if first_seq != expected {
                    let later = checks[i..].iter().any(|c| {
                        c.seq_range
                            .is_some_and(|(lo, hi)| (lo..=hi).contains(&expected))
                    });
                    let (reason, detail) = if first_seq < expected || later {
                        (
                            "reordered",
                            format!(
                                "record {first_seq} stands where record {expected} belongs in {}",
                                job.name
                            ),
                        )
                    } else {
                        (
                            "missing",
                            format!(
                                "record {expected} is missing: {} goes on with {first_seq}",
                                job.name
                            ),
                        )
                    };
                    problems.push(Problem {
                        seq: expected,
                        reason,
                        detail,
                    });
                    chain_broken = true;
                    break;
                }
                if first_prev != hash {
                    problems.push(Problem {
                        seq: first_seq,
                        reason: "modified",
                        detail: format!(
                            "record {first_seq} in {} does not follow record {seq}: its prev_hash \
                             differs from that record's hash (a record was rewritten or a segment \
                             replaced)",
                            job.name
                        ),
                    });
                    chain_broken = true;
                    break;
                }
            }
        }
        hashes.extend(check.wanted.iter().map(|(k, v)| (*k, *v)));
        columnar_rows += check.columnar_rows;
        if check.last.is_some() {
            head = check.last;
        }
        if let Some(p) = &check.problem {
            problems.push(at_start(p));
            chain_broken = true;
            break;
        }
    }
    let head_seq = head.map_or(0, |h| h.0);
    let first_seq = start.unwrap_or(1);
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
        if cp.seq == 0 || cp.seq + 1 < first_seq {
            // Before the records at hand (moved to the archive): its signature is all there is
            // to check here.
            return;
        }
        match hashes.get(&cp.seq) {
            Some(h) if hex::encode(h) == cp.hash => {}
            Some(_) => problems.push(Problem {
                seq: cp.seq,
                reason: mismatch,
                detail: format!("record {} differs from the signed checkpoint", cp.seq),
            }),
            None if cp.seq + 1 == first_seq => {}
            None if mismatch == "not-an-extension" || !chain_broken => problems.push(Problem {
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
    for cp in &checkpoints {
        check(cp, "modified", &mut problems);
    }
    if let Some(cp) = given {
        check(cp, "not-an-extension", &mut problems);
    }
    let first = problems.into_iter().min_by_key(|p| p.seq);
    Ok(Verdict {
        ok: first.is_none(),
        events,
        head: head.map(|(seq, hash)| Head {
            seq,
            hash: hex::encode(hash),
        }),
        checkpoints: checked,
        columnar_rows,
        first_bad_seq: first.as_ref().map(|p| p.seq),
        reason: first.as_ref().map(|p| p.reason.to_string()),
        detail: first.map(|p| p.detail),
    })
}

/// Checks every segment, on up to `threads` threads at once. Twice as many workers take the
/// segments: each reads its segment with no thread held (the reads go past the page cache, so
/// a worker waits for the disk), then checks it holding one of `threads` permits, so one
/// worker's read overlaps another's check and the cores stay busy on a log larger than memory.
fn check_segments(
    jobs: &[SegmentJob],
    wanted: &HashSet<u64>,
    threads: usize,
) -> Result<Vec<SegmentCheck>> {
    let threads = threads.max(1).min(jobs.len().max(1));
    let permits = Permits::new(threads);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Result<SegmentCheck>>>> =
        std::sync::Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..(threads * 2).min(jobs.len().max(1)) {
            scope.spawn(|| {
                // One read buffer per worker: a segment is read over the last one's pages
                // instead of into fresh memory (whose page faults cost as much as the copy).
                let mut reader = UncachedReader::default();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = match reader.read(&job.path) {
                        Ok(data) => {
                            let _permit = permits.take();
                            check_segment(job, wanted, data)
                        }
                        Err(e) => Err(e.into()),
                    };
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Ok(SegmentCheck::default())))
        .collect()
}

/// A counting semaphore for threads: at most `n` permits out at once.
struct Permits {
    free: std::sync::Mutex<usize>,
    returned: std::sync::Condvar,
}

/// A taken permit, given back when dropped.
struct Permit<'a>(&'a Permits);

impl Permits {
    fn new(n: usize) -> Self {
        Self {
            free: std::sync::Mutex::new(n),
            returned: std::sync::Condvar::new(),
        }
    }

    fn take(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.returned.notify_one();
    }
}

/// A record's place in the chain: `(seq, prev_hash, hash)`.
type Link = (u64, [u8; 32], [u8; 32]);

/// `(seq, prev_hash, hash)` of a canonical line whose bytes hash to its `hash`, read without
/// decoding the JSON; `None` for anything else (then [`record::decode`] says what is wrong).
fn fast_line(line: &[u8]) -> Option<Link> {
    const HASH_MEMBER: &[u8] = b",\"hash\":\"";
    const PREV_MEMBER: &[u8] = b",\"prev_hash\":\"";
    let n = line.len();
    if n < 7 + 66 + 9 + 65 + PREV_MEMBER.len() || !line.starts_with(b"{\"seq\":") {
        return None;
    }
    if &line[n - 2..] != b"\"}" || &line[n - 75..n - 66] != HASH_MEMBER || line[n - 76] != b'"' {
        return None;
    }
    let at = n - 75;
    if &line[at - 65 - PREV_MEMBER.len()..at - 65] != PREV_MEMBER {
        return None;
    }
    let digits = line[7..].iter().take_while(|b| b.is_ascii_digit()).count();
    let seq: u64 = std::str::from_utf8(&line[7..7 + digits])
        .ok()?
        .parse()
        .ok()?;
    let hash = crate::hash_columns::decode_hash(&line[n - 66..n - 2])?;
    let prev = crate::hash_columns::decode_hash(&line[at - 65..at - 1])?;
    let computed = record::body_hash(&line[..at]);
    (computed == hash).then_some((seq, prev, hash))
}

fn check_segment(job: &SegmentJob, wanted: &HashSet<u64>, data: &[u8]) -> Result<SegmentCheck> {
    // A sealed segment's every byte is its records' (a NUL in one is a bad line); the open
    // one's records end where the zeroes laid ahead begin.
    let data = if job.open {
        crate::segment::records_part(data)
    } else {
        data
    };
    let (lines, whole) = split_lines(data);
    let mut out = SegmentCheck::default();
    // Every seq first (cheap), so a gap can be told from a swap.
    // Whether each line was read in its canonical shape (see `fast_line`).
    let mut canonical = Vec::with_capacity(lines.len());
    let parsed: Vec<std::result::Result<Link, LineError>> = lines
        .iter()
        .map(|(_, l)| match fast_line(l) {
            // A segment without a Parquet copy is decoded in full: its records are what the
            // reader serves. A converted one is proven record by record from its copy below.
            Some(t) if job.marker.is_some() => {
                canonical.push(true);
                Ok(t)
            }
            _ => {
                canonical.push(false);
                record::decode(l).and_then(|r| {
                    let mut prev = [0u8; 32];
                    let mut hash = [0u8; 32];
                    hex::decode_to_slice(&r.prev_hash, &mut prev)
                        .and_then(|_| hex::decode_to_slice(&r.hash, &mut hash))
                        .map_err(|_| LineError::HashMismatch)?;
                    Ok((r.seq, prev, hash))
                })
            }
        })
        .collect();
    out.seqs = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|t| t.0))
        .collect();
    let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(parsed.len());
    let mut expected: Option<u64> = None;
    let mut prev: Option<[u8; 32]> = None;
    for (i, p) in parsed.iter().enumerate() {
        let (seq, line_prev, hash) = match p {
            Ok(t) => *t,
            Err(e) => {
                let why = match e {
                    LineError::HashMismatch => "its bytes do not match its hash".to_string(),
                    LineError::Unreadable(m) => format!("it is not a record ({m})"),
                };
                let at = expected.unwrap_or(0);
                out.problem = Some(Problem {
                    seq: at,
                    reason: "modified",
                    detail: format!("record {at} in {}: {why}", job.name),
                });
                break;
            }
        };
        match expected {
            None => out.first = Some((seq, line_prev)),
            Some(want) if seq != want => {
                let later = out.seqs[i + 1..].contains(&want);
                let (reason, detail) = if seq < want || later {
                    (
                        "reordered",
                        format!(
                            "record {seq} stands where record {want} belongs in {}",
                            job.name
                        ),
                    )
                } else {
                    (
                        "missing",
                        format!("record {want} is missing: {} goes on with {seq}", job.name),
                    )
                };
                out.problem = Some(Problem {
                    seq: want,
                    reason,
                    detail,
                });
                break;
            }
            Some(_) => {
                if prev != Some(line_prev) {
                    out.problem = Some(Problem {
                        seq,
                        reason: "modified",
                        detail: format!(
                            "record {seq} in {} does not follow record {}: its prev_hash differs \
                             from that record's hash (a record was rewritten or a segment replaced)",
                            job.name,
                            seq - 1
                        ),
                    });
                    break;
                }
            }
        }
        if wanted.contains(&seq) {
            out.wanted.insert(seq, hash);
        }
        hashes.push(hash);
        out.last = Some((seq, hash));
        expected = Some(seq + 1);
        prev = Some(hash);
    }
    // The open segment may end inside a record (a write in progress, or one a crash tore,
    // which opening the log cuts off and records); a sealed one ends with its last record's
    // line end, so bytes after it were added to the file.
    if out.problem.is_none() && !job.open && whole < data.len() {
        let at = expected.unwrap_or(0);
        out.problem = Some(Problem {
            seq: at,
            reason: "modified",
            detail: format!(
                "{} ends with {} bytes after its last record that are not a whole record \
                 (a sealed segment holds whole records only)",
                job.name,
                data.len() - whole
            ),
        });
    }
    out.records = out.seqs.len() as u64;
    out.seq_range = out
        .seqs
        .iter()
        .min()
        .zip(out.seqs.iter().max())
        .map(|(a, b)| (*a, *b));
    out.seqs = Vec::new();
    // A first record that is itself bad: its problem has seq 0 — the record the segment should
    // start with, which only the linking knows.
    if let (Some((dir, marker)), Some((first_seq, _))) = (&job.marker, out.first)
        && out.problem.is_none()
    {
        // Every line is good here, so line i is record first_seq + i.
        let canonical_lines: Vec<Option<&[u8]>> = lines
            .iter()
            .zip(&canonical)
            .map(|((_, l), c)| c.then_some(*l))
            .collect();
        let (rows, problem) = check_columnar(dir, marker, first_seq, &hashes, &canonical_lines)?;
        out.columnar_rows = rows;
        out.problem = problem;
    }
    Ok(out)
}

/// Checks a segment's Parquet copy against its chained hashes (`hashes[i]` is record
/// `first_seq + i`'s) and, where the segment's line is in its canonical shape (`lines[i]`), its
/// bytes: a row re-encoded to exactly the bytes of a line whose hash the chain proved is proven
/// without hashing it again.
fn check_columnar(
    dir: &Path,
    marker: &SegmentIndex,
    first_seq: u64,
    hashes: &[[u8; 32]],
    lines: &[Option<&[u8]>],
) -> Result<(u64, Option<Problem>)> {
    let mut expected = first_seq;
    let mut rows = 0u64;
    // One buffer for every row's canonical line.
    let mut line = Vec::with_capacity(1024);
    let mut files = marker.files.clone();
    files.sort_by_key(|f| f.first_seq);
    let problem = |seq: u64, reason: &'static str, detail: String| Problem {
        seq,
        reason,
        detail,
    };
    for f in &files {
        let file = match std::fs::File::open(dir.join(&f.path)) {
            Ok(file) => file,
            Err(e) => {
                return Ok((
                    rows,
                    Some(problem(
                        f.first_seq.max(expected),
                        "missing",
                        format!("the Parquet copy {} is unreadable: {e}", f.path),
                    )),
                ));
            }
        };
        let reader =
            match parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(8192).build())
            {
                Ok(r) => r,
                Err(e) => {
                    return Ok((
                        rows,
                        Some(problem(
                            f.first_seq.max(expected),
                            "modified",
                            format!("the Parquet copy {} is not readable Parquet: {e}", f.path),
                        )),
                    ));
                }
            };
        for batch in reader {
            let not_records = |e: String| {
                problem(
                    expected,
                    "modified",
                    format!(
                        "the Parquet copy {} has rows that are not records: {e}",
                        f.path
                    ),
                )
            };
            let batch = match batch
                .map_err(|e| e.to_string())
                .and_then(|b| crate::hash_columns::to_hex(b).map_err(|e| e.to_string()))
            {
                Ok(b) => b,
                Err(e) => return Ok((rows, Some(not_records(e)))),
            };
            let columns = match crate::reader::Columns::new(&batch) {
                Ok(c) => c,
                Err(e) => return Ok((rows, Some(not_records(e.to_string())))),
            };
            for row in 0..columns.len() {
                let seq = columns.seq(row);
                if seq != expected {
                    let (reason, what) = if seq > expected {
                        ("missing", format!("has no row for record {expected}"))
                    } else {
                        (
                            "reordered",
                            format!("has record {seq} where {expected} belongs"),
                        )
                    };
                    return Ok((
                        rows,
                        Some(problem(
                            expected,
                            reason,
                            format!("the Parquet copy {} {what}", f.path),
                        )),
                    ));
                }
                let i = (seq - first_seq) as usize;
                let stored_hash = columns.hash(row).unwrap_or_default().as_bytes();
                let ok = columns.body_into(row, &mut line)
                    && match (hashes.get(i), lines.get(i).copied().flatten()) {
                        (None, _) => false,
                        // The line is `<body>,"hash":"<64 hex>"}` and its hash was checked.
                        (Some(_), Some(l)) if l.len() > 75 => {
                            line.as_slice() == &l[..l.len() - 75]
                                && stored_hash == &l[l.len() - 66..l.len() - 2]
                        }
                        (Some(chained), _) => {
                            let hash = record::body_hash(&line);
                            let mut hex_hash = [0u8; 64];
                            *chained == hash
                                && hex::encode_to_slice(hash, &mut hex_hash).is_ok()
                                && stored_hash == hex_hash
                        }
                    };
                if !ok {
                    return Ok((
                        rows,
                        Some(problem(
                            seq,
                            "modified",
                            format!(
                                "the Parquet copy {} differs from the chained record {seq}",
                                f.path
                            ),
                        )),
                    ));
                }
                expected += 1;
                rows += 1;
            }
        }
    }
    let last = first_seq + hashes.len() as u64;
    if expected < last {
        return Ok((
            rows,
            Some(problem(
                expected,
                "missing",
                format!(
                    "the Parquet copy of {} has no row for record {expected}",
                    marker.source
                ),
            )),
        ));
    }
    Ok((rows, None))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::columnar::SegmentIndex;
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
        log_sealed_or_not(n, segment_bytes, false)
    }

    /// The same, its last records' segment sealed at close if `seal_on_close` (an empty one
    /// opened after it).
    fn log_sealed_or_not(
        n: usize,
        segment_bytes: u64,
        seal_on_close: bool,
    ) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut opts = LogOptions::new(&dir);
        opts.segment_max_bytes = segment_bytes;
        opts.seal_on_close = seal_on_close;
        let (log, _) = AuditLog::open(opts).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..n {
                log.append(event(i)).await.unwrap();
            }
        });
        // The log's own converter (an idle-class thread) converts what was sealed. Wait for it
        // to finish: it does not know about another index's conversions, so under a loaded
        // machine it could convert a segment again after a test has doctored its Parquet copy,
        // undoing the doctoring (a flaky `the_parquet_copy_is_proven_row_by_row`).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !log.columnar().pending().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the converter never caught up"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
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
    fn hex_digits_read_as_the_hex_crate_reads_lowercase() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let text = hex::encode(bytes);
        assert_eq!(
            crate::hash_columns::decode_hash(text.as_bytes()),
            Some(bytes)
        );
        assert_eq!(
            crate::hash_columns::decode_hash(text.to_uppercase().as_bytes()),
            None,
            "the log writes lowercase"
        );
        assert_eq!(
            crate::hash_columns::decode_hash(&text.as_bytes()[..62]),
            None
        );
        let mut bad = text.into_bytes();
        bad[7] = b'g';
        assert_eq!(crate::hash_columns::decode_hash(&bad), None);
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
    fn bytes_after_a_sealed_segments_last_record_are_named() {
        use std::io::Write;
        let append = |path: &Path, bytes: &[u8]| {
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(bytes).unwrap();
        };
        // A sealed segment in the middle: the bytes stand where its next record would.
        let (_t, dir) = log_of(40, 1024);
        let segments = list_segments(&dir).unwrap();
        let (index, path) = &segments[1];
        let next = crate::segment::last_seq(path).unwrap().unwrap() + 1;
        append(path, b"{\"seq\":");
        let v = verify_dir(&dir, None, None).unwrap();
        assert_eq!(
            (v.first_bad_seq, v.reason.as_deref()),
            (Some(next), Some("modified"))
        );
        assert!(
            v.detail
                .as_deref()
                .unwrap_or_default()
                .contains(&segment_name(*index)),
            "{v:?}"
        );

        // The open (last) segment may end inside a record: a write in progress, or one torn by
        // a crash that opening the log cuts off.
        let (_t, dir) = log_of(40, 1024);
        let segments = list_segments(&dir).unwrap();
        append(&segments.last().unwrap().1, b"{\"seq\":");
        assert!(verify_dir(&dir, None, None).unwrap().ok);

        // A converted segment is sealed even when it is the last one there (an archive's).
        let (_t, dir) = log_sealed_or_not(40, 1024, true);
        crate::columnar::ColumnarIndex::load(&dir)
            .unwrap()
            .catch_up(2)
            .unwrap();
        let segments = list_segments(&dir).unwrap();
        let (_, empty) = segments.last().unwrap();
        assert_eq!(std::fs::metadata(empty).unwrap().len(), 0);
        std::fs::remove_file(empty).unwrap();
        let (_, path) = &segments[segments.len() - 2];
        assert!(
            verify_dir(&dir, None, None).unwrap().ok,
            "the empty open segment removed"
        );
        let next = crate::segment::last_seq(path).unwrap().unwrap() + 1;
        append(path, b"\0\0");
        assert_eq!(verdict(&dir), (Some(next), Some("modified".into())));
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

    /// A closed log of `n` records with every sealed segment converted to Parquet.
    fn converted_log(
        n: usize,
        segment_bytes: u64,
    ) -> (tempfile::TempDir, PathBuf, Vec<SegmentIndex>) {
        let (t, dir) = log_of(n, segment_bytes);
        let index = crate::columnar::ColumnarIndex::load(&dir).unwrap();
        index.catch_up(2).unwrap();
        let markers = index.snapshot().iter().map(|m| (**m).clone()).collect();
        (t, dir, markers)
    }

    /// The batches of a file of the Parquet copy, hashes as hex text.
    fn read_copy(path: &Path) -> Vec<arrow::record_batch::RecordBatch> {
        let file = std::fs::File::open(path).unwrap();
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| crate::hash_columns::to_hex(b.unwrap()).unwrap())
            .collect()
    }

    fn write_copy(path: &Path, batches: &[arrow::record_batch::RecordBatch]) {
        let out = std::fs::File::create(path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(out, batches[0].schema(), None).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
    }

    fn rewrite_parquet(path: &Path, f: impl FnOnce(Vec<crate::Record>) -> Vec<crate::Record>) {
        let mut records = Vec::new();
        for b in read_copy(path) {
            records.extend(crate::reader::from_batch(&b).unwrap());
        }
        // Written back as the conversion writes it, hashes as bytes.
        let batch =
            crate::hash_columns::to_binary(&crate::reader::to_batch(&f(records)).unwrap()).unwrap();
        write_copy(path, &[batch]);
    }

    /// Rewrites a file of the Parquet copy with its hashes as hex text, as conversions wrote
    /// them before they were stored as bytes.
    pub(crate) fn rewrite_parquet_as_text(path: &Path) {
        let batches = read_copy(path);
        assert_eq!(batches[0].schema(), crate::reader::events_schema());
        write_copy(path, &batches);
    }

    /// Hashes of another width than a hash's, in a doctored file: named, not a crash.
    #[test]
    fn hashes_of_another_width_are_a_modified_copy() {
        use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray};
        use std::sync::Arc;
        let (_t, dir, markers) = converted_log(120, 4096);
        let m = &markers[1];
        let path = dir.join(&m.files[0].path);
        let batches = read_copy(&path)
            .into_iter()
            .map(|b| {
                let schema = b.schema();
                let (mut fields, mut columns) = (Vec::new(), Vec::new());
                for (f, c) in schema.fields().iter().zip(b.columns()) {
                    if f.name() == "hash" {
                        let wide = c
                            .as_string::<i32>()
                            .iter()
                            .map(|h| h.map(|h| [h.as_bytes(), b"pad"].concat()));
                        let wide =
                            FixedSizeBinaryArray::try_from_sparse_iter_with_size(wide, 67).unwrap();
                        fields.push(arrow::datatypes::Field::new(
                            "hash",
                            wide.data_type().clone(),
                            true,
                        ));
                        columns.push(Arc::new(wide) as ArrayRef);
                    } else {
                        fields.push(f.as_ref().clone());
                        columns.push(c.clone());
                    }
                }
                let schema = arrow::datatypes::Schema::new(fields);
                arrow::record_batch::RecordBatch::try_new(Arc::new(schema), columns).unwrap()
            })
            .collect::<Vec<_>>();
        write_copy(&path, &batches);
        let v = verify_dir(&dir, None, None).unwrap();
        assert_eq!(
            (v.first_bad_seq, v.reason.as_deref()),
            (Some(m.first_seq), Some("modified")),
            "{v:?}"
        );
    }

    #[test]
    fn the_parquet_copy_is_proven_row_by_row() {
        let (_t, dir, markers) = converted_log(120, 4096);
        assert!(markers.len() >= 3, "several converted segments");
        let v = verify_dir(&dir, None, None).unwrap();
        let converted: u64 = markers.iter().map(|m| m.records).sum();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.columnar_rows, converted);

        // A changed value in a row (the JSON segment untouched).
        let (_t, dir, markers) = converted_log(120, 4096);
        let m = &markers[1];
        let target = m.first_seq + 2;
        rewrite_parquet(&dir.join(&m.files[0].path), |mut rows| {
            for r in &mut rows {
                if r.seq == target {
                    r.event.status = 500;
                }
            }
            rows
        });
        let v = verify_dir(&dir, None, None).unwrap();
        assert_eq!(
            (v.first_bad_seq, v.reason.as_deref()),
            (Some(target), Some("modified")),
            "{v:?}"
        );

        // A dropped row.
        let (_t, dir, markers) = converted_log(120, 4096);
        let m = &markers[2];
        let target = m.first_seq + 1;
        rewrite_parquet(&dir.join(&m.files[0].path), |mut rows| {
            rows.retain(|r| r.seq != target);
            rows
        });
        let v = verify_dir(&dir, None, None).unwrap();
        assert_eq!(
            (v.first_bad_seq, v.reason.as_deref()),
            (Some(target), Some("missing")),
            "{v:?}"
        );

        // A changed hash (stored as bytes) or chain link.
        for column in ["hash", "prev_hash"] {
            let (_t, dir, markers) = converted_log(120, 4096);
            let m = &markers[1];
            let target = m.first_seq + 3;
            rewrite_parquet(&dir.join(&m.files[0].path), |mut rows| {
                for r in &mut rows {
                    if r.seq == target {
                        let h = if column == "hash" {
                            &mut r.hash
                        } else {
                            &mut r.prev_hash
                        };
                        let flipped = if h.starts_with('0') { "1" } else { "0" };
                        h.replace_range(..1, flipped);
                    }
                }
                rows
            });
            let v = verify_dir(&dir, None, None).unwrap();
            assert_eq!(
                (v.first_bad_seq, v.reason.as_deref()),
                (Some(target), Some("modified")),
                "{column}: {v:?}"
            );
        }

        // Files written before hashes were stored as bytes (hex text) are proven the same way.
        let (_t, dir, markers) = converted_log(120, 4096);
        let m = &markers[1];
        rewrite_parquet_as_text(&dir.join(&m.files[0].path));
        let v = verify_dir(&dir, None, None).unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(
            v.columnar_rows,
            markers.iter().map(|m| m.records).sum::<u64>()
        );

        // A swapped file: segment 2's copy where segment 3's belongs.
        let (_t, dir, markers) = converted_log(120, 4096);
        std::fs::copy(
            dir.join(&markers[1].files[0].path),
            dir.join(&markers[2].files[0].path),
        )
        .unwrap();
        let v = verify_dir(&dir, None, None).unwrap();
        assert_eq!(v.first_bad_seq, Some(markers[2].first_seq), "{v:?}");
        assert!(!v.ok);

        // A Parquet file that is not Parquet any more.
        let (_t, dir, markers) = converted_log(120, 4096);
        std::fs::write(dir.join(&markers[0].files[0].path), b"PAR1 nothing").unwrap();
        let v = verify_dir(&dir, None, None).unwrap();
        assert_eq!(
            (v.first_bad_seq, v.reason.as_deref()),
            (Some(1), Some("modified")),
            "{v:?}"
        );
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
