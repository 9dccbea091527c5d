//! The append-only audit log with group commit.
//!
//! One writer thread owns the open segment. Requests hand it events through a channel and wait
//! on a oneshot; the writer takes every event waiting (up to a batch), chains and encodes them,
//! writes them with one `write` and makes them durable with one `fdatasync`, then answers them
//! all. So concurrent requests share an fsync instead of queueing for their own, and nothing is
//! held in memory beyond the batch being written.
//!
//! Under load the writer lets a batch gather before its fsync ([`LogOptions::commit_delay`],
//! PostgreSQL's `commit_delay`): once the last batch had a few waiters, it sleeps up to 200 µs,
//! and the append that brings the batch to [`LogOptions::commit_delay_count`] wakes it early
//! (MySQL's `binlog_group_commit_sync_no_delay_count`). Fewer fsyncs where each costs the
//! requests CPU (a small-page load: +16% requests/s), and many writers are not held back (256
//! of them append as fast as with no delay).
//!
//! Records nobody waits for (handed over with [`AuditLog::append_detached`], like the `end` of a
//! response already sent) wait in a queue of their own that does not wake the writer for each
//! one: they join the next batch someone waits for, or are written at the latest
//! [`LogOptions::detached_write_delay`] after the first of them, and fsynced with the next batch
//! someone waits for, or at the latest [`LogOptions::detached_sync_delay`] later. Under load
//! that spares many fsyncs of data requests (each has a `begin` it waits for and an `end` it
//! does not: 40% fewer under a small-page load) and the writer's wake-up for every `end` (a
//! futex wake and a context switch each, half the writer's CPU under that load). What a crash
//! can lose of those records is what opening recovers anyway: a `begin` without its `end` gets
//! one with outcome `unknown`.
//!
//! A failed write or fsync puts the log in a failed state for good (no retry: after a failed
//! fsync the kernel may already have dropped the dirty pages, so retrying could report
//! durability that is not there — the "fsyncgate" lesson). Every later append fails at once;
//! the server answers 503 and `/readyz` reports the log. A restart re-opens and recovers.
//!
//! Opening recovers the tail: a torn last record (a crash mid-write) is cut off, the cut is
//! itself recorded, and the chain resumes from the last whole record. A `begin` whose `end` was
//! accepted but not yet durable at a crash gets a recovered `end` (outcome `unknown`), so no
//! transfer silently drops out of the auditor's view or the usage figures.
//!
//! Sealing a segment signs a checkpoint at its last record (so a log whose oldest segments moved
//! to the archive still verifies from a signed anchor) and wakes the converter thread, which
//! writes the segment's Parquet copy ([`crate::columnar`]).

use crate::checkpoint::{self, Checkpoint};
use crate::columnar::ColumnarIndex;
use crate::error::{AuditError, Result};
use crate::record::{self, EncodedEvent, Event, GENESIS_HASH, Kind};
use crate::segment::{list_segments, segment_name, split_lines, sync_dir};
use crate::table::EventsTable;
use crate::usage::UsageCounters;
use chrono::Utc;
use ed25519_dalek::SigningKey;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the log is kept.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub dir: PathBuf,
    /// A segment is sealed and the next one started past this many bytes.
    pub segment_max_bytes: u64,
    /// A checkpoint is signed after this many records...
    pub checkpoint_every_records: u64,
    /// ...or this long after the last one, whichever comes first (and at shutdown).
    pub checkpoint_every: Duration,
    /// The most records written with one fsync.
    pub max_batch: usize,
    /// Under load (the last batch had at least `commit_delay_after` records someone waited
    /// for), the writer lets a batch gather this long before it writes and fsyncs it: fewer,
    /// larger fsyncs (PostgreSQL's `commit_delay`). Zero: never.
    pub commit_delay: Duration,
    pub commit_delay_after: usize,
    /// The delay ends early once the batch holds this many records someone waits for (MySQL's
    /// `binlog_group_commit_sync_no_delay_count`): many writers fill a batch sooner than the
    /// delay, and sleeping on would leave the disk idle while they wait.
    pub commit_delay_count: usize,
    /// The gateway writing this log (`audit.node_id`): every record names it. `None` for one
    /// gateway alone.
    pub node_id: Option<String>,
    /// A non-empty open segment is also sealed once it is this old, so an archive (and who
    /// reads it) lags the log by at most this much; `None`: sealed by size only.
    pub seal_every: Option<Duration>,
    /// Seal the open segment when the log closes (so a final archive copy is complete).
    pub seal_on_close: bool,
    /// The longest a record nobody waits for stays queued but not yet written.
    pub detached_write_delay: Duration,
    /// The longest a record nobody waits for stays written but not yet fsynced.
    pub detached_sync_delay: Duration,
    /// Zeroes are written this far ahead of the open segment's records (and made durable with
    /// the batch that needed them), so a batch's `fdatasync` finds the space already in the
    /// file and writes only the records: 0.11-0.14 ms a sync on ext4 where an append's costs
    /// 0.22-0.24 ms (it writes the file's new size and blocks too). The zeroes are cut off
    /// when the segment is sealed or the log closes. Zero: appended as they come.
    pub preallocate_bytes: u64,
}

impl LogOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_max_bytes: 64 * 1024 * 1024,
            checkpoint_every_records: 10_000,
            checkpoint_every: Duration::from_secs(60),
            max_batch: 4096,
            commit_delay: Duration::from_micros(200),
            commit_delay_after: 4,
            commit_delay_count: 16,
            node_id: None,
            seal_every: None,
            seal_on_close: false,
            detached_write_delay: Duration::from_millis(1),
            detached_sync_delay: Duration::from_millis(10),
            preallocate_bytes: 1 << 20,
        }
    }
}

/// The file of signed checkpoints in an audit directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
/// The signing key in an audit directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// What opening found.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// The `seq` of the last whole record (0 for an empty log).
    pub head_seq: u64,
    /// Bytes of a torn record cut from the last segment.
    pub cut_bytes: u64,
}

type Answer = tokio::sync::oneshot::Sender<Result<u64>>;

enum Msg {
    /// A record, and who waits for it to be durable.
    Append(EncodedEvent, Answer),
    /// The queue of records nobody waits for was empty and is not any more.
    Detached,
    Close(std::sync::mpsc::Sender<()>),
    /// Tests: stop the writer where it stands, as a crash would (no seal, no checkpoint, no
    /// sync, the zeroes laid ahead left in place).
    #[cfg(test)]
    Crash(std::sync::mpsc::Sender<()>),
}

/// Records nobody waits for, queued for the writer without waking it for each one.
type DetachedQueue = Arc<Mutex<Vec<EncodedEvent>>>;

struct Shared {
    /// Batches written, each with one fsync.
    batches: std::sync::atomic::AtomicU64,
    gathering: Gathering,
    failed: Mutex<Option<String>>,
    head: Mutex<(u64, String)>,
    checkpoint: Mutex<Option<Checkpoint>>,
}

/// How the writer's commit delay ends early ([`LogOptions::commit_delay_count`]): appends
/// someone waits for count themselves in as they are sent, and the one that brings the count to
/// the writer's target wakes it (once; nobody else touches the writer).
#[derive(Default)]
struct Gathering {
    /// Appends someone waits for, sent and not yet taken by the writer.
    queued: AtomicUsize,
    /// While the writer sleeps out a commit delay, the `queued` that ends it; else 0.
    target: AtomicUsize,
    writer: std::sync::OnceLock<std::thread::Thread>,
}

impl Gathering {
    /// An append someone waits for is about to be sent: counted before it is in the channel
    /// (so the writer's count never goes below zero), the writer woken after ([`Self::sent`]).
    fn sending(&self) -> usize {
        self.queued.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// It was sent, as the `queued`-th.
    fn sent(&self, queued: usize) {
        if queued == self.target.load(Ordering::SeqCst)
            && let Some(writer) = self.writer.get()
        {
            writer.unpark();
        }
    }

    /// The writer took one from the channel (or it was never sent).
    fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    /// The writer sleeps until `more` appends are queued, or `delay` has passed.
    fn wait_for(&self, more: usize, delay: Duration) {
        let deadline = Instant::now() + delay;
        // Stored before `queued` is read, as `sent` adds before it reads the target: one of
        // the two sees the other (SeqCst), so the append that reaches the target is not missed.
        self.target.store(more, Ordering::SeqCst);
        while self.queued.load(Ordering::SeqCst) < more {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // An unpark left from an earlier delay only makes this loop look again.
            std::thread::park_timeout(left);
        }
        self.target.store(0, Ordering::SeqCst);
    }
}

impl Shared {
    fn failed(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: Sender<Msg>,
    detached: DetachedQueue,
    shared: Arc<Shared>,
    public_key: String,
    dir: PathBuf,
    columnar: Arc<ColumnarIndex>,
    events: Arc<EventsTable>,
    usage: Arc<UsageCounters>,
    /// `node_id` as a JSON string, stamped on every record.
    node_json: Option<String>,
    /// One verification of this log at a time ([`AuditLog::verify`]).
    verifying: Arc<crate::verify::VerifyGate>,
    /// The converter thread, stopped and joined by [`AuditLog::close`].
    converter: Arc<Converter>,
}

/// The converter thread's handle: a closed log converts nothing more, so that another index
/// over the directory (`datagate audit index`, a reopened log) never races a conversion this
/// log started after it was closed.
struct Converter {
    stop: Arc<AtomicBool>,
    wake: Sender<()>,
    /// Disconnected when the thread has returned (it holds the only sender).
    finished: Mutex<Receiver<()>>,
}

impl Converter {
    /// Asks the thread to stop before its next segment; it converts nothing it has not begun.
    fn ask_to_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
    }

    /// Waits (up to 30 s) for the thread to finish the segment it is converting, if any.
    fn wait(&self) {
        let finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        let _ = finished.recv_timeout(Duration::from_secs(30));
    }
}

impl AuditLog {
    /// Opens (creating or recovering) the log in `opts.dir` and starts its writer.
    pub fn open(opts: LogOptions) -> Result<(Self, Recovery)> {
        std::fs::create_dir_all(&opts.dir)?;
        let key = checkpoint::load_or_create_key(&opts.dir.join(SIGNING_KEY_FILE))?;
        let checkpoints_path = opts.dir.join(CHECKPOINTS_FILE);
        trim_torn_line(&checkpoints_path)?;
        let latest = checkpoint::read_checkpoints(&checkpoints_path)?.pop();
        let (segment_index, seq, prev, cut) = recover(&opts.dir)?;
        let path = opts.dir.join(segment_name(segment_index));
        // Written at offsets (never appended): the end of the records is the writer's.
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        sync_dir(&opts.dir)?;
        // Recovery left the open segment ending at its last record.
        let segment_bytes = file.metadata()?.len();
        let checkpoints = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&checkpoints_path)?;
        let shared = Arc::new(Shared {
            batches: std::sync::atomic::AtomicU64::new(0),
            gathering: Gathering::default(),
            failed: Mutex::new(None),
            head: Mutex::new((seq, prev.clone())),
            checkpoint: Mutex::new(latest),
        });
        let public_key = hex::encode(key.verifying_key().to_bytes());
        let columnar = Arc::new(ColumnarIndex::load(&opts.dir)?);
        let usage = Arc::new(UsageCounters::default());
        for m in columnar.snapshot() {
            usage.add_summary(&m.usage);
        }
        let (lost_ends, backlog) = scan_recent(&opts.dir, &columnar, &usage)?;
        let (convert_tx, convert_rx) = channel::<()>();
        let stop = Arc::new(AtomicBool::new(false));
        let (finished_tx, finished) = channel::<()>();
        {
            let (columnar, usage, stop) = (columnar.clone(), usage.clone(), stop.clone());
            std::thread::Builder::new()
                .name("audit-columnar".into())
                .spawn(move || {
                    // Converting is catch-up work: the writer (whose fsync every data request
                    // waits for) and the requests get the cores; it uses the idle ones (at
                    // nice 10 it took an eighth of the server's CPU from a saturating load of
                    // small pages, 2 cores). Unconverted segments are read as JSON lines.
                    if let Err(e) = datagate_core::threads::idle_only() {
                        tracing::warn!(error = %e, "could not lower the audit converter's priority");
                    }
                    let _finished = finished_tx;
                    run_converter(&columnar, &usage, backlog, convert_rx, &stop)
                })?;
        }
        let converter = Arc::new(Converter {
            stop,
            wake: convert_tx.clone(),
            finished: Mutex::new(finished),
        });
        let (tx, rx) = channel();
        let detached = DetachedQueue::default();
        let writer = Writer {
            detached: detached.clone(),
            detached_due: None,
            last_waiters: 0,
            segment_opened: Instant::now(),
            convert: convert_tx,
            opts: opts.clone(),
            key,
            file,
            segment_index,
            segment_bytes,
            laid_to: segment_bytes,
            zeroes: Vec::new(),
            checkpoints,
            seq,
            prev,
            unsynced_since: None,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            shared: shared.clone(),
            #[cfg(test)]
            crash: None,
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))?;
        let _ = shared.gathering.writer.set(thread.thread().clone());
        let log = Self {
            tx,
            detached,
            shared,
            public_key,
            dir: opts.dir,
            events: Arc::new(EventsTable::new(columnar.clone())),
            columnar,
            usage,
            node_json: opts
                .node_id
                .as_deref()
                .map(|n| serde_json::Value::from(n).to_string()),
            verifying: Arc::default(),
            converter,
        };
        if cut > 0 {
            tracing::warn!(
                bytes = cut,
                after_seq = seq,
                "audit log: cut a torn record left by a crash"
            );
            log.append_detached(recovery_event(cut, seq));
        }
        if !lost_ends.is_empty() {
            tracing::warn!(
                transfers = lost_ends.len(),
                "audit log: transfers whose end was not recorded before a crash get an end with outcome unknown"
            );
        }
        for begin in lost_ends {
            log.append_detached(recovered_end(begin));
        }
        Ok((
            log,
            Recovery {
                head_seq: seq,
                cut_bytes: cut,
            },
        ))
    }

    /// Appends `event` and waits until it is durable; its `seq`.
    pub async fn append(&self, event: impl std::borrow::Borrow<Event>) -> Result<u64> {
        let event = event.borrow();
        let counts = crate::columnar::usage_kind(event).is_some();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(event, tx)?;
        let seq = rx
            .await
            .map_err(|_| AuditError::Failed("the audit writer stopped".into()))??;
        if counts {
            self.usage.add_event(event, Utc::now().date_naive());
        }
        Ok(seq)
    }

    /// Hands `event` to the writer without waiting; for records that need not hold anything
    /// back, like the end of a response already sent. It is written with the next batch
    /// someone waits for, or at the latest [`LogOptions::detached_write_delay`] later, and
    /// durable with the next fsync (at the latest [`LogOptions::detached_sync_delay`] after
    /// that). Only the first record into an empty queue wakes the writer.
    pub fn append_detached(&self, event: Event) {
        if self.failed().is_some() {
            return;
        }
        let encoded = EncodedEvent::with_node(&event, self.node_json.as_deref());
        let first = {
            let mut queue = self.detached.lock().unwrap_or_else(|p| p.into_inner());
            queue.push(encoded);
            queue.len() == 1
        };
        if first {
            let _ = self.tx.send(Msg::Detached);
        }
    }

    /// Hands `event` to the writer, which answers `answer` once it is durable.
    fn submit(&self, event: &Event, answer: Answer) -> Result<()> {
        if let Some(why) = self.failed() {
            return Err(AuditError::Failed(why));
        }
        // Serialized here, on the caller's thread: the writer only chains and hashes.
        let msg = Msg::Append(
            EncodedEvent::with_node(event, self.node_json.as_deref()),
            answer,
        );
        let gathering = &self.shared.gathering;
        let queued = gathering.sending();
        if self.tx.send(msg).is_err() {
            gathering.taken();
            return Err(AuditError::Failed("the audit writer stopped".into()));
        }
        gathering.sent(queued);
        Ok(())
    }

    /// Why the log is failed, if it is.
    pub fn failed(&self) -> Option<String> {
        self.shared.failed()
    }

    /// Batches written so far (each made durable with one fsync).
    pub fn batches_written(&self) -> u64 {
        self.shared
            .batches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last durable record: `(seq, hash)`.
    pub fn head(&self) -> (u64, String) {
        self.shared
            .head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest signed checkpoint.
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.shared
            .checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The Ed25519 public key (hex) checkpoints are signed with.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Verifies this log (chain, checkpoints, Parquet copy), blocking: one verification at a
    /// time, a caller arriving while one runs getting that run's verdict.
    pub fn verify(&self) -> std::result::Result<crate::Verdict, String> {
        self.verifying
            .verify(|| crate::verify_dir(&self.dir, None, None))
    }

    /// The converted segments.
    pub fn columnar(&self) -> &Arc<ColumnarIndex> {
        &self.columnar
    }

    /// The table `audit.events` over this log.
    pub fn events_table(&self) -> Arc<EventsTable> {
        self.events.clone()
    }

    /// Reads and downloads per dataset.
    pub fn usage(&self) -> &UsageCounters {
        &self.usage
    }

    /// Writes what is queued, signs a final checkpoint, syncs and stops the writer; stops the
    /// converter after the segment it is converting (a segment sealed by the close is
    /// converted at the next open, its JSON lines authoritative meanwhile).
    pub fn close(&self) {
        self.converter.ask_to_stop();
        self.stop_writer(Msg::Close);
        self.converter.wait();
    }

    /// Tests: stops the writer as a crash would, leaving the files as they are.
    #[cfg(test)]
    pub(crate) fn crash(self) {
        self.converter.ask_to_stop();
        self.stop_writer(Msg::Crash);
        self.converter.wait();
    }

    /// Hands the writer a message that stops it and waits (up to 30 s) until it has.
    fn stop_writer(&self, msg: impl FnOnce(Sender<()>) -> Msg) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(msg(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    }
}

/// Cuts a torn last line (no newline) off a line file.
fn trim_torn_line(path: &Path) -> Result<()> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let (_, end) = split_lines(&data);
    if end < data.len() {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(end as u64)?;
        f.sync_all()?;
    }
    Ok(())
}

/// Bytes of a segment's end read to find the log's head at a start.
const RECOVERY_TAIL_BYTES: u64 = 1 << 20;

/// The last `n` bytes of the file at `path` (all of it when shorter) and their offset in it.
fn read_tail(path: &Path, n: u64) -> Result<(Vec<u8>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let base = f.metadata()?.len().saturating_sub(n);
    f.seek(SeekFrom::Start(base))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok((data, base))
}

/// The open segment's records' last `n` bytes (all of them when fewer) and their offset in
/// it, read forward to its first NUL byte (the zeroes laid ahead of the records; after a crash
/// a batch's later blocks may have reached the disk and an earlier one not, so what follows a
/// NUL was never durable), and the file's length.
fn read_records_tail(path: &Path, n: u64) -> Result<(Vec<u8>, u64, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let keep = usize::try_from(n).unwrap_or(usize::MAX);
    let (mut data, mut base) = (Vec::new(), 0u64);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let got = match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let part = crate::segment::records_part(&chunk[..got]);
        data.extend_from_slice(part);
        if data.len() > 2 * keep {
            let drop = data.len() - keep;
            data.drain(..drop);
            base += drop as u64;
        }
        if part.len() < got {
            break;
        }
    }
    Ok((data, base, len))
}

/// Bytes of the file at `path` from `from` on that are not zero: what a crash left after the
/// open segment's records besides the zeroes laid ahead.
fn bytes_not_zero(path: &Path, from: u64) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let (mut count, mut chunk) = (0u64, vec![0u8; 1 << 20]);
    loop {
        match f.read(&mut chunk) {
            Ok(0) => return Ok(count),
            Ok(got) => count += chunk[..got].iter().filter(|b| **b != 0).count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Finds the head of the log in `dir`: `(segment to append to, seq, hash, bytes cut)`.
///
/// Only a torn tail of the open segment is cut: an unfinished last line, and whole lines after
/// the last record that are not records at all (a crash can leave garbage there), and whatever
/// follows its records' end (its first NUL byte: the zeroes laid ahead, and what a crash left
/// among them). A line that reads as a record but fails its hash is never cut: that is
/// evidence for `verify`. The open segment is left ending with its last record.
fn recover(dir: &Path) -> Result<(u64, u64, String, u64)> {
    let segments = list_segments(dir)?;
    let Some((last_index, _)) = segments.last().cloned() else {
        return Ok((1, 0, GENESIS_HASH.to_string(), 0));
    };
    let mut head: Option<(u64, String)> = None;
    let mut cut = 0u64;
    for (i, (_, path)) in segments.iter().enumerate().rev() {
        let open_segment = i == segments.len() - 1;
        // The head is among the last lines: look in the segment's last MiB, and decode all of
        // it only when no record ends there (a start does not hold a whole 64 MiB segment; the
        // open one is read forward to find its records' end, a sealed one from its end).
        let (mut data, mut base, len) = if open_segment {
            read_records_tail(path, RECOVERY_TAIL_BYTES)?
        } else {
            let (data, base) = read_tail(path, RECOVERY_TAIL_BYTES)?;
            let len = base + data.len() as u64;
            (data, base, len)
        };
        let (mut last, mut keep_end) = last_record(&data, base, open_segment);
        if last.is_none() && base > 0 {
            data = std::fs::read(path)?;
            if open_segment {
                data.truncate(crate::segment::records_part(&data).len());
            }
            base = 0;
            (last, keep_end) = last_record(&data, base, open_segment);
        }
        head = last;
        let keep = base + keep_end as u64;
        if open_segment && keep < len {
            let records_end = base + data.len() as u64;
            cut = (data.len() - keep_end) as u64 + bytes_not_zero(path, records_end)?;
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(keep)?;
            f.sync_all()?;
        }
        if head.is_some() {
            break;
        }
    }
    let (seq, hash) = head.unwrap_or((0, GENESIS_HASH.to_string()));
    Ok((last_index, seq, hash, cut))
}

/// The last record among the lines of `data`, read from offset `base` of a segment (so, unless
/// `base` is 0, its first line may be a piece of one and is passed over), and where the segment
/// should end: with `cutting`, before the unreadable lines after that record and an unfinished
/// last line; else at the end of the complete lines. The offset is `data`'s.
fn last_record(data: &[u8], base: u64, mut cutting: bool) -> (Option<(u64, String)>, usize) {
    let (lines, complete_end) = split_lines(data);
    let whole = if base == 0 {
        &lines[..]
    } else {
        &lines[1.min(lines.len())..]
    };
    let mut keep_end = complete_end;
    for (offset, line) in whole.iter().rev() {
        match record::decode(line) {
            Ok(r) => return (Some((r.seq, r.hash)), keep_end),
            Err(record::LineError::Unreadable(_)) if cutting => keep_end = *offset,
            Err(_) => cutting = false,
        }
    }
    (None, keep_end)
}

/// Records to write with one `write`, each with who waits for it to be durable (if anyone).
type Batch = Vec<(EncodedEvent, Option<Answer>)>;

struct Writer {
    /// Records nobody waits for, and when the first of them must be written at the latest.
    detached: DetachedQueue,
    detached_due: Option<Instant>,
    /// Records someone waited for in the last batch (the load `commit_delay` looks at).
    last_waiters: usize,
    /// Wakes the converter when a segment is sealed.
    convert: Sender<()>,
    opts: LogOptions,
    key: SigningKey,
    file: File,
    segment_index: u64,
    /// Where the open segment's records end (the next batch's offset).
    segment_bytes: u64,
    /// Where the zeroes laid ahead of the records end: the file's length.
    laid_to: u64,
    /// A block of zeroes to lay ahead, allocated at the first use.
    zeroes: Vec<u8>,
    /// When the open segment was started (or the log opened).
    segment_opened: Instant,
    checkpoints: File,
    seq: u64,
    prev: String,
    /// Since when records written to the open segment wait for an fsync (nobody waited for
    /// them); `None` when everything written is durable.
    unsynced_since: Option<Instant>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    shared: Arc<Shared>,
    /// Tests: a crash asked for ([`Msg::Crash`]).
    #[cfg(test)]
    crash: Option<Sender<()>>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut buf = Vec::with_capacity(1 << 20);
        loop {
            let mut wait = self
                .opts
                .checkpoint_every
                .saturating_sub(self.last_checkpoint.elapsed());
            if let Some(every) = self.opts.seal_every {
                wait = wait.min(every.saturating_sub(self.segment_opened.elapsed()));
            }
            if let Some(since) = self.unsynced_since {
                wait = wait.min(
                    self.opts
                        .detached_sync_delay
                        .saturating_sub(since.elapsed()),
                );
            }
            if let Some(due) = self.detached_due {
                wait = wait.min(due.saturating_duration_since(Instant::now()));
            }
            let mut batch = Vec::new();
            let mut close = None;
            match rx.recv_timeout(wait.max(Duration::from_micros(100))) {
                Ok(first) => {
                    self.take(first, &mut batch, &mut close);
                    self.take_queued(&rx, &mut batch, &mut close);
                    // Only a batch someone waits for (a `Detached` nudge alone has its own
                    // delay; a close none), and one that is not full enough already.
                    if close.is_none()
                        && !batch.is_empty()
                        && batch.len() < self.opts.commit_delay_count
                        && self.last_waiters >= self.opts.commit_delay_after
                        && !self.opts.commit_delay.is_zero()
                    {
                        // Asleep, not waiting on the channel: the appends that come meanwhile
                        // queue without waking the writer each, but the one that fills the
                        // batch.
                        self.shared.gathering.wait_for(
                            self.opts.commit_delay_count - batch.len(),
                            self.opts.commit_delay,
                        );
                        self.take_queued(&rx, &mut batch, &mut close);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.drain_detached(&mut batch);
                    if !batch.is_empty() {
                        self.write_batch(batch, &mut buf);
                    }
                    self.finish();
                    return;
                }
            }
            #[cfg(test)]
            if let Some(done) = self.crash.take() {
                let _ = done.send(());
                return;
            }
            // Records nobody waits for join a batch someone waits for, or go when due.
            if close.is_some()
                || !batch.is_empty()
                || self.detached_due.is_some_and(|due| due <= Instant::now())
            {
                self.drain_detached(&mut batch);
            }
            self.last_waiters = batch.iter().filter(|(_, tx)| tx.is_some()).count();
            if !batch.is_empty() {
                self.write_batch(batch, &mut buf);
            }
            if let Some(done) = close {
                self.finish();
                let _ = done.send(());
                return;
            }
            if self
                .unsynced_since
                .is_some_and(|since| since.elapsed() >= self.opts.detached_sync_delay)
            {
                self.guard(|w| w.sync());
            }
            if self.seal_due() {
                self.guard(|w| w.roll());
            } else if self.last_checkpoint.elapsed() >= self.opts.checkpoint_every {
                if self.since_checkpoint > 0 {
                    self.guard(|w| w.checkpoint());
                } else {
                    self.last_checkpoint = Instant::now();
                }
            }
        }
    }

    /// Takes one message into the batch being formed.
    fn take(&mut self, msg: Msg, batch: &mut Batch, close: &mut Option<Sender<()>>) {
        match msg {
            Msg::Append(e, tx) => {
                self.shared.gathering.taken();
                batch.push((e, Some(tx)));
            }
            Msg::Detached => {
                self.detached_due
                    .get_or_insert_with(|| Instant::now() + self.opts.detached_write_delay);
            }
            Msg::Close(tx) => *close = Some(tx),
            #[cfg(test)]
            Msg::Crash(tx) => self.crash = Some(tx),
        }
    }

    /// Takes what the channel holds now into the batch (up to `max_batch`, or a close).
    fn take_queued(
        &mut self,
        rx: &Receiver<Msg>,
        batch: &mut Batch,
        close: &mut Option<Sender<()>>,
    ) {
        while close.is_none() && batch.len() < self.opts.max_batch {
            match rx.try_recv() {
                Ok(m) => self.take(m, batch, close),
                Err(_) => break,
            }
        }
    }

    /// Moves the queued records nobody waits for into `batch`, ahead of its records: they were
    /// handed over before the batch was taken (a recovered `end`, a cut's record at opening).
    fn drain_detached(&mut self, batch: &mut Batch) {
        self.detached_due = None;
        let queued = std::mem::take(&mut *self.detached.lock().unwrap_or_else(|p| p.into_inner()));
        if !queued.is_empty() {
            batch.splice(0..0, queued.into_iter().map(|e| (e, None)));
        }
    }

    fn failed(&self) -> Option<String> {
        self.shared.failed()
    }

    /// Whether the open segment holds records and is older than `seal_every`.
    fn seal_due(&self) -> bool {
        self.segment_bytes > 0
            && self
                .opts
                .seal_every
                .is_some_and(|every| self.segment_opened.elapsed() >= every)
    }

    /// Runs an I/O step; a failure fails the log for good.
    fn guard(&mut self, step: impl FnOnce(&mut Self) -> std::io::Result<()>) -> bool {
        if self.failed().is_some() {
            return false;
        }
        match step(self) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed; the log is now failed and audited requests get 503 until a restart");
                *self.shared.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("write failed: {e}"));
                false
            }
        }
    }

    fn write_batch(&mut self, batch: Batch, buf: &mut Vec<u8>) {
        if let Some(why) = self.failed() {
            for tx in batch.into_iter().filter_map(|(_, tx)| tx) {
                let _ = tx.send(Err(AuditError::Failed(why.clone())));
            }
            return;
        }
        buf.clear();
        let ts_json = serde_json::to_vec(&Utc::now()).unwrap_or_default();
        let mut prev = [0u8; 32];
        if hex::decode_to_slice(&self.prev, &mut prev).is_err() {
            let why = format!("the chain head is not a hash: {:?}", self.prev);
            *self.shared.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
            for tx in batch.into_iter().filter_map(|(_, tx)| tx) {
                let _ = tx.send(Err(AuditError::Failed(why.clone())));
            }
            return;
        }
        let first_seq = self.seq + 1;
        let mut seq = self.seq;
        for (event, _) in &batch {
            seq += 1;
            prev = record::append_line(buf, seq, &ts_json, event, &prev);
        }
        let prev = hex::encode(prev);
        // Someone waits for this batch (or a record written before it has waited long enough).
        let sync_now = batch
            .iter()
            .any(|(_, tx)| tx.as_ref().is_some_and(|tx| !tx.is_closed()))
            || self
                .unsynced_since
                .is_some_and(|since| since.elapsed() >= self.opts.detached_sync_delay);
        let ok = self.guard(|w| {
            if w.segment_bytes > 0 && w.segment_bytes + buf.len() as u64 > w.opts.segment_max_bytes
            {
                w.roll()?;
            }
            w.write_records(buf)?;
            w.unsynced_since.get_or_insert_with(Instant::now);
            if sync_now {
                w.sync()?;
            }
            Ok(())
        });
        if !ok {
            let why = self.failed().unwrap_or_default();
            for tx in batch.into_iter().filter_map(|(_, tx)| tx) {
                let _ = tx.send(Err(AuditError::Failed(why.clone())));
            }
            return;
        }
        self.seq = seq;
        self.prev = prev;
        if self.unsynced_since.is_none() {
            self.publish_head();
        }
        self.since_checkpoint += seq - first_seq + 1;
        metrics::histogram!("datagate_audit_batch_records").record((seq - first_seq + 1) as f64);
        metrics::counter!("datagate_audit_records_total").increment(seq - first_seq + 1);
        for ((_, tx), seq) in batch.into_iter().zip(first_seq..) {
            if let Some(tx) = tx {
                let _ = tx.send(Ok(seq));
            }
        }
        if self.seal_due() {
            // Under steady traffic the timer never fires: seal here.
            self.guard(|w| w.roll());
        } else if self.since_checkpoint >= self.opts.checkpoint_every_records
            || self.last_checkpoint.elapsed() >= self.opts.checkpoint_every
        {
            self.guard(|w| w.checkpoint());
        }
    }

    /// Writes encoded records at the end of the open segment's records, over the zeroes laid
    /// ahead of them, laying more first when they do not reach that far.
    fn write_records(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self.segment_bytes + buf.len() as u64;
        if end > self.laid_to && self.opts.preallocate_bytes > 0 {
            // The next stretch of zeroes, not past where the segment is sealed: written now,
            // made durable by this batch's sync (one sync in a megabyte's worth writes the
            // file's new size, the others only records).
            let from = self.laid_to.max(end);
            let to = (from + self.opts.preallocate_bytes)
                .min(self.opts.segment_max_bytes)
                .max(from);
            let want = usize::try_from(self.opts.preallocate_bytes).unwrap_or(usize::MAX);
            if self.zeroes.len() < want.min(1 << 24) {
                self.zeroes = vec![0; want.min(1 << 24)];
            }
            let mut at = from;
            while at < to {
                let n = (to - at).min(self.zeroes.len() as u64) as usize;
                self.file.write_all_at(&self.zeroes[..n], at)?;
                at += n as u64;
            }
            self.laid_to = to;
        }
        self.file.write_all_at(buf, self.segment_bytes)?;
        self.segment_bytes = end;
        self.laid_to = self.laid_to.max(end);
        Ok(())
    }

    /// Cuts the zeroes laid ahead off the open segment and makes it durable whole: a sealed
    /// (or closed) segment ends with its last record.
    fn cut_zeroes(&mut self) -> std::io::Result<()> {
        if self.laid_to > self.segment_bytes {
            self.file.set_len(self.segment_bytes)?;
            self.laid_to = self.segment_bytes;
        }
        self.file.sync_all()
    }

    /// Makes everything written durable (one fsync) and publishes the head.
    fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced_since.is_some() {
            let start = Instant::now();
            self.file.sync_data()?;
            metrics::histogram!("datagate_audit_fsync_seconds")
                .record(start.elapsed().as_secs_f64());
            self.shared
                .batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.unsynced_since = None;
            self.publish_head();
        }
        Ok(())
    }

    /// The last record written is durable: it is the log's head.
    fn publish_head(&self) {
        *self.shared.head.lock().unwrap_or_else(|p| p.into_inner()) = (self.seq, self.prev.clone());
    }

    /// Seals the open segment (with a checkpoint at its last record) and starts the next.
    fn roll(&mut self) -> std::io::Result<()> {
        self.sync()?;
        self.cut_zeroes()?;
        if self.since_checkpoint > 0 {
            self.checkpoint()?;
        }
        let next = self.segment_index + 1;
        let path = self.opts.dir.join(segment_name(next));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        sync_dir(&self.opts.dir).map_err(std::io::Error::other)?;
        self.file = file;
        self.segment_index = next;
        self.segment_bytes = 0;
        self.laid_to = 0;
        self.segment_opened = Instant::now();
        let _ = self.convert.send(());
        Ok(())
    }

    fn checkpoint(&mut self) -> std::io::Result<()> {
        // A checkpoint names a durable record.
        self.sync()?;
        let cp = Checkpoint::sign(&self.key, self.seq, &self.prev, Utc::now());
        let mut line = serde_json::to_vec(&cp).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.checkpoints.write_all(&line)?;
        self.checkpoints.sync_data()?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        *self
            .shared
            .checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(cp);
        Ok(())
    }

    fn finish(&mut self) {
        if self.opts.seal_on_close && self.segment_bytes > 0 {
            self.guard(|w| w.roll());
        }
        if self.seq > 0 && self.since_checkpoint > 0 {
            self.guard(|w| w.checkpoint());
        }
        self.guard(|w| w.sync());
        self.guard(|w| w.cut_zeroes());
    }
}

/// What opening reads of the log: the open segment's records are counted into `usage` (every
/// other segment is counted from its marker's summary — now, or by the converter once it
/// converts the ones still waiting, returned as the backlog), and the `begin`s of the last two
/// segments that have no `end` are returned (in a log just opened nothing is in flight, so
/// those are transfers whose end a crash lost; a clean shutdown writes every end). Nothing
/// older is read: opening costs at most two segments, whatever the log's length.
fn scan_recent(
    dir: &Path,
    columnar: &ColumnarIndex,
    usage: &UsageCounters,
) -> Result<(Vec<Event>, std::collections::HashSet<u64>)> {
    let segments = list_segments(dir)?;
    let sealed = segments.len().saturating_sub(1);
    let backlog = segments[..sealed]
        .iter()
        .map(|(index, _)| *index)
        .filter(|index| !columnar.contains(*index))
        .collect();
    // Transfers begun and not (yet) ended, by event id, with their seq. A record at a time:
    // memory stays at the transfers in flight, not two segments of records (decoded whole, two
    // 64 MiB segments took ~150 MiB at every start after a busy hour).
    let mut open: std::collections::HashMap<String, (u64, Event)> =
        std::collections::HashMap::new();
    for (i, (_, path)) in segments.iter().enumerate().skip(sealed.saturating_sub(1)) {
        crate::segment::for_each_line(path, |line| -> Result<()> {
            let Ok(r) = record::decode(line) else {
                return Ok(());
            };
            if i == sealed {
                usage.add_record(&r);
            }
            match r.event.kind {
                Some(Kind::Begin) => {
                    open.insert(r.event.event_id.clone(), (r.seq, r.event));
                }
                Some(Kind::End) => {
                    open.remove(&r.event.event_id);
                }
                _ => {}
            }
            Ok(())
        })?;
    }
    let mut begins: Vec<(u64, Event)> = open.into_values().collect();
    begins.sort_unstable_by_key(|(seq, _)| *seq);
    Ok((begins.into_iter().map(|(_, e)| e).collect(), backlog))
}

/// The `end` a transfer gets when its own was lost in a crash.
pub fn recovered_end(begin: Event) -> Event {
    Event {
        kind: Some(Kind::End),
        outcome: Some("unknown".into()),
        error: Some(
            "the gateway stopped before this transfer's end was recorded; rows and bytes are unknown"
                .into(),
        ),
        rows_returned: 0,
        bytes_returned: 0,
        cpu_ms: None,
        ..begin
    }
}

/// The converter thread: converts every sealed segment lacking its Parquet copy, on one thread,
/// then waits to be woken by the next seal. A failed conversion is logged and tried again at
/// the next wake (the JSON segment stays authoritative meanwhile). Segments that were waiting
/// when the log opened (`backlog`) are counted into `usage` from their summaries as they are
/// converted; segments sealed since were counted as their records were appended. Returns when
/// `stop` is set (checked before each segment) or every sender of `wake` is gone.
fn run_converter(
    columnar: &ColumnarIndex,
    usage: &UsageCounters,
    mut backlog: std::collections::HashSet<u64>,
    wake: Receiver<()>,
    stop: &AtomicBool,
) {
    let mut sharing = false;
    loop {
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let todo = match columnar.pending() {
                Ok(todo) => todo,
                Err(e) => {
                    tracing::warn!(error = %e, "audit Parquet conversion failed; retrying at the next seal");
                    break;
                }
            };
            // Sealed segments without their Parquet copy: a converter that falls behind shows
            // here first.
            metrics::gauge!("datagate_audit_unconverted_segments").set(todo.len() as f64);
            let Some(&next) = todo.first() else { break };
            // Idle cores only, unless a whole sealed segment more is waiting: under a load
            // that keeps every core busy an idle-class thread gets almost nothing, and the
            // backlog would grow without bound (and queries read it as JSON lines). Then it
            // takes a share (nice 10: about a tenth of a busy core) until caught up.
            let behind = todo.len() > 1;
            if behind != sharing {
                let changed = if behind {
                    datagate_core::threads::share_cores(10)
                } else {
                    datagate_core::threads::idle_only()
                };
                match changed {
                    Ok(()) => sharing = behind,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not change the audit converter's priority")
                    }
                }
            }
            let start = Instant::now();
            if let Err(e) = columnar.convert(next) {
                tracing::warn!(error = %e, segment = next, "audit Parquet conversion failed; retrying at the next seal");
                break;
            }
            metrics::histogram!("datagate_audit_conversion_seconds")
                .record(start.elapsed().as_secs_f64());
            tracing::debug!(segment = next, "audit segment converted to Parquet");
            backlog.retain(|segment| match columnar.get(*segment) {
                Some(marker) => {
                    usage.add_summary(&marker.usage);
                    false
                }
                None => true,
            });
        }
        if sharing && datagate_core::threads::idle_only().is_ok() {
            sharing = false;
        }
        if wake.recv().is_err() || stop.load(Ordering::SeqCst) {
            return;
        }
        while wake.try_recv().is_ok() {}
    }
}

/// The record a recovery leaves in the log about the bytes it cut.
pub fn recovery_event(cut_bytes: u64, head_seq: u64) -> Event {
    Event {
        kind: Some(Kind::Log),
        event_id: uuid::Uuid::now_v7().to_string(),
        action: "audit.recover".into(),
        key_id: "datagate".into(),
        error: Some(format!(
            "cut {cut_bytes} bytes of a torn record after seq {head_seq} (a crash during a write)"
        )),
        count: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::verify_dir;

    fn event(i: usize) -> Event {
        Event {
            kind: Some(Kind::Request),
            event_id: format!("e{i}"),
            path: "/api/v1/datasets".into(),
            status: 200,
            count: 1,
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_share_fsyncs_and_chain_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        let mut tasks = Vec::new();
        for w in 0..64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    seqs.push(log.append(event(w * 1000 + i)).await.unwrap());
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let seqs = t.await.unwrap();
            assert!(
                seqs.windows(2).all(|p| p[0] < p[1]),
                "one writer's records in order"
            );
            all.extend(seqs);
        }
        all.sort();
        assert_eq!(
            all,
            (1..=3200).collect::<Vec<u64>>(),
            "every append got its own seq"
        );
        assert_eq!(log.head().0, 3200);
        assert!(
            log.batches_written() <= 3200 / 4,
            "{} fsyncs for 3,200 appends",
            log.batches_written()
        );
        log.close();
        let v = verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok && v.events == 3200, "{v:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_load_a_batch_gathers_for_the_commit_delay_and_alone_it_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(tmp.path());
        opts.commit_delay = Duration::from_millis(300);
        opts.commit_delay_after = 4;
        let (log, _) = AuditLog::open(opts).unwrap();
        // Alone: written and fsynced at once.
        for i in 0..3 {
            let start = Instant::now();
            log.append(event(i)).await.unwrap();
            assert!(
                start.elapsed() < Duration::from_millis(300),
                "{:?}",
                start.elapsed()
            );
        }
        // Load: 8 appends at once, until they went in one batch (8 waiters, at least the 4
        // the delay looks at; the writer may take the first of a burst alone).
        let mut bursts = 0;
        loop {
            bursts += 1;
            assert!(bursts <= 20, "no burst of 8 made one batch");
            let before = log.batches_written();
            let burst = (0..8).map(|i| log.append(event(10 * bursts + i)));
            for seq in futures::future::join_all(burst).await {
                seq.unwrap();
            }
            if log.batches_written() - before == 1 {
                break;
            }
        }
        // Then 32 appends arriving a millisecond apart: each batch gathers (until 16 wait, or
        // the 300 ms), so they take a few fsyncs; without the delay nearly each takes its own
        // (measured: 27-30 fsyncs without it, 2 with it). The bound before, over rounds of
        // randomly spread appends, failed under a loaded machine (26 against 24).
        let before = log.batches_written();
        let mut tasks = Vec::new();
        for w in 0..32u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(w)).await;
                log.append(event((1000 + w) as usize)).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let batches = log.batches_written() - before;
        assert!(batches <= 6, "{batches} fsyncs for 32 appends");
        log.close();
        let v = verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok && v.events == 3 + 8 * bursts as u64 + 32, "{v:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_fills_ends_the_commit_delay_early() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(tmp.path());
        opts.commit_delay = Duration::from_secs(3);
        opts.commit_delay_after = 4;
        opts.commit_delay_count = 8;
        let (log, _) = AuditLog::open(opts).unwrap();
        let round = |r: usize| {
            let log = log.clone();
            async move {
                let appends = (0..8).map(|i| log.append(event(r * 10 + i)));
                for seq in futures::future::join_all(appends).await {
                    seq.unwrap();
                }
            }
        };
        // The first round makes a batch of at least 4 (the load the delay looks at).
        round(0).await;
        let (before, start) = (log.batches_written(), Instant::now());
        // Each later round gathers (one batch for its 8 appends, not one for the first and
        // one for the rest), and its 8th append wakes the writer: no round waits 3 s.
        for r in 1..5 {
            round(r).await;
        }
        let (batches, took) = (log.batches_written() - before, start.elapsed());
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(batches <= 5, "{batches} fsyncs for 4 rounds of 8");
        log.close();
        let v = verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok && v.events == 40, "{v:?}");
    }

    #[tokio::test]
    async fn records_nobody_waits_for_queue_until_a_batch_takes_them_or_their_delay() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(tmp.path());
        opts.detached_write_delay = Duration::from_millis(300);
        opts.detached_sync_delay = Duration::from_millis(300);
        let (log, _) = AuditLog::open(opts).unwrap();
        let segment = tmp.path().join(segment_name(1));
        let lines = || {
            std::fs::read(&segment)
                .map(|d| split_lines(&d).0.len())
                .unwrap_or(0)
        };
        for i in 0..5 {
            log.append_detached(event(i));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(lines(), 0, "queued, not written yet");
        // A batch someone waits for takes them along.
        assert_eq!(log.append(event(9)).await.unwrap(), 6);
        assert_eq!(lines(), 6);
        assert_eq!(log.head().0, 6);
        // Alone, they are written once the first has waited its delay, not before.
        let start = Instant::now();
        for i in 10..13 {
            log.append_detached(event(i));
        }
        while lines() < 9 {
            assert!(start.elapsed() < Duration::from_secs(10), "never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(290),
            "{:?}",
            start.elapsed()
        );
        // Closing writes what is queued.
        log.append_detached(event(20));
        log.close();
        assert_eq!(lines(), 10);
        let v = verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok && v.events == 10, "{v:?}");
    }

    #[tokio::test]
    async fn records_nobody_waits_for_share_the_next_fsync() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(tmp.path());
        opts.detached_sync_delay = Duration::from_millis(300);
        let (log, _) = AuditLog::open(opts).unwrap();
        for i in 0..20 {
            log.append_detached(event(i));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Written, not yet durable: no fsync, and the durable head has not moved.
        assert_eq!(log.batches_written(), 0);
        assert_eq!(log.head().0, 0);
        // An append someone waits for makes them durable with it, in one fsync.
        assert_eq!(log.append(event(99)).await.unwrap(), 21);
        assert_eq!(log.head().0, 21);
        assert_eq!(log.batches_written(), 1);
        // Alone, they are made durable once the oldest has waited the delay, not before.
        let start = Instant::now();
        for i in 100..105 {
            log.append_detached(event(i));
        }
        while log.head().0 < 26 {
            assert!(start.elapsed() < Duration::from_secs(10), "never synced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(290),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(log.batches_written(), 2);
        log.close();
        let v = verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok && v.events == 26, "{v:?}");
    }

    /// Writes `torn` where the open segment at `path` stops holding records (over the zeroes
    /// laid ahead, and past them if it is longer), as a crash in the middle of a write leaves
    /// it; where the records end.
    fn tear(path: &Path, torn: &[u8]) -> u64 {
        use std::os::unix::fs::FileExt;
        let data = std::fs::read(path).unwrap();
        let end = crate::segment::records_part(&data).len() as u64;
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(torn, end).unwrap();
        end
    }

    /// The open segment is written over zeroes laid ahead (its file is longer than its
    /// records while open), every reader sees its records and only those, and a sealed or
    /// closed segment is its records alone, each line whole.
    #[tokio::test]
    async fn the_open_segment_is_written_over_zeroes_laid_ahead_and_sealed_without_them() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(tmp.path());
        opts.segment_max_bytes = 64 * 1024;
        opts.preallocate_bytes = 16 * 1024;
        let (log, _) = AuditLog::open(opts.clone()).unwrap();
        for i in 0..10 {
            log.append(event(i)).await.unwrap();
        }
        let open = tmp.path().join(segment_name(1));
        let data = std::fs::read(&open).unwrap();
        let records = crate::segment::records_part(&data);
        assert_eq!(crate::segment::split_lines(records).0.len(), 10);
        assert_eq!(records.last(), Some(&b'\n'));
        assert!(
            data.len() > records.len() && data.len() >= 16 * 1024,
            "{}",
            data.len()
        );
        assert!(data[records.len()..].iter().all(|b| *b == 0));
        // Every reader sees the ten records, no more.
        let mut seen = 0;
        crate::reader::for_each_record(tmp.path(), |_| seen += 1).unwrap();
        assert_eq!(seen, 10);
        let v = log.verify().unwrap();
        assert!(v.ok && v.events == 10, "{v:?}");
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("events", log.events_table()).unwrap();
        let rows = ctx
            .sql("SELECT count(*) AS n, max(seq) AS last FROM events")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let cols = rows[0].columns();
        assert_eq!(
            cols[0]
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .value(0),
            10
        );
        assert_eq!(
            cols[1]
                .as_any()
                .downcast_ref::<arrow::array::UInt64Array>()
                .unwrap()
                .value(0),
            10
        );
        // Past the segment's size: sealed, and the zeroes laid ahead never pass that size.
        for i in 10..400 {
            log.append(event(i)).await.unwrap();
        }
        log.close();
        let segments = crate::segment::list_segments(tmp.path()).unwrap();
        assert!(segments.len() >= 3, "{segments:?}");
        let mut lines = 0;
        for (_, path) in &segments {
            let data = std::fs::read(path).unwrap();
            assert!(data.len() as u64 <= opts.segment_max_bytes + 4096);
            assert!(!data.contains(&0), "{path:?} holds zeroes");
            assert_eq!(data.last(), Some(&b'\n'), "{path:?}");
            lines += crate::segment::split_lines(&data).0.len();
        }
        assert!(lines >= 400, "{lines}");
        let v = verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok, "{v:?}");
    }

    /// A crash leaves the zeroes laid ahead, and perhaps a torn batch among them: a later
    /// block of it on the disk, an earlier one not (zeroes, then bytes). Opening cuts all of it
    /// (counting the bytes that were not zeroes), and the chain goes on from the last record.
    #[tokio::test]
    async fn a_crash_among_the_zeroes_laid_ahead_is_cut_at_the_records_end() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        for i in 0..5 {
            log.append(event(i)).await.unwrap();
        }
        log.crash();
        let seg = tmp.path().join(segment_name(1));
        // Zeroes only: nothing to record, the zeroes go.
        let len = std::fs::metadata(&seg).unwrap().len();
        let (log, rec) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        let whole = std::fs::metadata(&seg).unwrap().len();
        assert!(len > whole, "{len} > {whole}: the zeroes were laid ahead");
        assert_eq!((rec.head_seq, rec.cut_bytes), (5, 0));
        log.append(event(5)).await.unwrap();
        log.crash();
        // A torn batch: its first block lost, a later one written, a line ending among them.
        let mut torn = vec![0u8; 4096];
        torn.extend_from_slice(b"\"status\":200}\n{\"seq\":9,\"ts\":\"2026");
        let end = tear(&seg, &torn);
        let (log, rec) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        assert_eq!(
            (rec.head_seq, rec.cut_bytes),
            (6, (torn.len() - 4096) as u64)
        );
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), end);
        assert_eq!(
            log.append(event(7)).await.unwrap(),
            8,
            "after the cut's record"
        );
        log.close();
        let v = verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok && v.events == 8, "{v:?}");
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_recorded_and_the_chain_resumes() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        for i in 0..5 {
            log.append(event(i)).await.unwrap();
        }
        log.crash(); // no close, no shutdown checkpoint
        let seg = tmp.path().join(segment_name(1));
        let torn = b"{\"seq\":6,\"ts\":\"2026-11-27T";
        let whole = tear(&seg, torn);
        let (log, rec) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        assert_eq!((rec.head_seq, rec.cut_bytes), (5, torn.len() as u64));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), whole);
        let seq = log.append(event(9)).await.unwrap();
        assert_eq!(seq, 7, "seq 6 is the record of the cut");
        log.close();
        let v = verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok, "{v:?}");
        let mut kinds = Vec::new();
        crate::reader::for_each_record(tmp.path(), |r| kinds.push((r.seq, r.event.action)))
            .unwrap();
        assert_eq!(kinds[5], (6, "audit.recover".to_string()));
    }

    /// A start reads the open segment's last MiB to find the head, and all of it only when no
    /// record ends there: both ways cut a torn tail at the same byte.
    #[tokio::test]
    async fn recovery_reads_a_large_segment_from_its_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        let n = 6_000;
        for i in 0..n {
            log.append_detached(event(i));
        }
        let start = std::time::Instant::now();
        while log.head().0 < n as u64 {
            assert!(start.elapsed() < Duration::from_secs(20), "never synced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        log.crash();
        let seg = tmp.path().join(segment_name(1));
        for torn in [b"{\"seq\":6001,\"ts\":\"2026".to_vec(), vec![b'x'; 3 << 20]] {
            let before = tear(&seg, &torn);
            assert!(before > 2 * RECOVERY_TAIL_BYTES, "{before} bytes");
            let (log, rec) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
            assert_eq!(rec.cut_bytes, torn.len() as u64);
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), before);
            let head = rec.head_seq;
            assert_eq!(
                log.append(event(0)).await.unwrap(),
                head + 2,
                "after the cut's record"
            );
            log.crash();
        }
        let v = verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok, "{v:?}");
    }

    #[tokio::test]
    async fn a_begin_whose_end_a_crash_lost_gets_a_recovered_end() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        let begin = |id: &str| Event {
            kind: Some(Kind::Begin),
            event_id: id.into(),
            key_id: "k1".into(),
            action: "data.export".into(),
            datasets: vec![crate::record::DatasetVersion {
                name: "transport.stops".into(),
                version: Some(2),
            }],
            status: 200,
            count: 1,
            ..Default::default()
        };
        log.append(begin("done")).await.unwrap();
        log.append(Event {
            kind: Some(Kind::End),
            outcome: Some("completed".into()),
            ..begin("done")
        })
        .await
        .unwrap();
        log.append(begin("lost")).await.unwrap();
        assert_eq!(
            log.usage()
                .get("transport.stops", Utc::now().date_naive())
                .downloads_30d,
            2
        );
        drop(log); // a crash before the end of "lost" was written
        let (log, _) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        // Usage is rebuilt from the log on open.
        assert_eq!(
            log.usage()
                .get("transport.stops", Utc::now().date_naive())
                .downloads_total,
            2
        );
        log.close();
        let mut ends = Vec::new();
        crate::reader::for_each_record(tmp.path(), |r| {
            if r.event.kind == Some(Kind::End) {
                ends.push((r.event.event_id, r.event.outcome, r.event.datasets.len()));
            }
        })
        .unwrap();
        assert_eq!(
            ends,
            vec![
                ("done".to_string(), Some("completed".to_string()), 1),
                ("lost".to_string(), Some("unknown".to_string()), 1),
            ]
        );
        // A second restart adds nothing: every begin has its end now.
        let (log, _) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        let head = log.head().0;
        log.close();
        assert_eq!(head, 4);
        assert!(verify_dir(tmp.path(), None, None).unwrap().ok);
    }

    /// Queries while segments are sealed and converted under them: each sees every record that
    /// was appended before it started, exactly once (a query that listed the segments just
    /// before a seal or a conversion once missed the newest records).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn queries_during_seals_and_conversions_see_every_record_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(tmp.path());
        opts.segment_max_bytes = 1024;
        let (log, _) = AuditLog::open(opts).unwrap();
        let head = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = {
            let (log, head) = (log.clone(), head.clone());
            tokio::spawn(async move {
                for i in 0..1500 {
                    let seq = log.append(event(i)).await.unwrap();
                    head.fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("events", log.events_table()).unwrap();
        let mut queries = 0;
        while !writer.is_finished() {
            let at = head.load(std::sync::atomic::Ordering::SeqCst);
            let sql = format!("SELECT count(*), count(DISTINCT seq) FROM events WHERE seq <= {at}");
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let value = |i: usize| {
                batches[0]
                    .column(i)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .unwrap()
                    .value(0) as u64
            };
            assert_eq!((value(0), value(1)), (at, at), "query {queries}");
            queries += 1;
        }
        writer.await.unwrap();
        assert!(queries > 10, "{queries} queries");
        log.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_is_sealed_by_age_idle_or_busy_and_records_name_their_gateway() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(tmp.path());
        opts.seal_every = Some(Duration::from_millis(300));
        opts.node_id = Some("gw-1".into());
        let (log, _) = AuditLog::open(opts).unwrap();
        log.append(event(0)).await.unwrap();
        // Idle: the timer seals it.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            list_segments(tmp.path()).unwrap().len(),
            2,
            "sealed while idle"
        );
        // Busy (a record every 20 ms, so the timer never fires): sealed all the same.
        for i in 1..50 {
            log.append(event(i)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            list_segments(tmp.path()).unwrap().len() >= 4,
            "sealed while busy"
        );
        log.close();
        let v = verify_dir(tmp.path(), None, None).unwrap();
        assert!(v.ok && v.events == 50, "{v:?}");
        let text = std::fs::read_to_string(&list_segments(tmp.path()).unwrap()[0].1).unwrap();
        assert!(
            text.contains(",\"node_id\":\"gw-1\",\"prev_hash\""),
            "{text}"
        );
        let mut records = 0;
        crate::reader::for_each_record(tmp.path(), |r| {
            assert_eq!(r.event.node_id.as_deref(), Some("gw-1"), "{r:?}");
            records += 1;
        })
        .unwrap();
        assert_eq!(records, 50);
    }

    #[tokio::test]
    async fn a_backlog_is_counted_by_the_converter_not_read_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(tmp.path());
        opts.segment_max_bytes = 2048;
        let (log, _) = AuditLog::open(opts.clone()).unwrap();
        let read = Event {
            kind: Some(Kind::Begin),
            action: "data.rows".into(),
            datasets: vec![crate::record::DatasetVersion {
                name: "transport.stops".into(),
                version: Some(1),
            }],
            status: 200,
            count: 1,
            ..Default::default()
        };
        for i in 0..40 {
            log.append(Event {
                event_id: format!("r{i}"),
                ..read.clone()
            })
            .await
            .unwrap();
        }
        log.close();
        // As after an upgrade: no Parquet copy at all.
        let _ = std::fs::remove_dir_all(tmp.path().join(crate::columnar::COLUMNAR_DIR));
        let (log, _) = AuditLog::open(opts).unwrap();
        let today = Utc::now().date_naive();
        // The converter runs in the idle scheduling class: on a machine busy with other work
        // (a build, other tests) it may wait seconds for a core.
        for _ in 0..1500 {
            if log.usage().get("transport.stops", today).reads_total == 40 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(log.usage().get("transport.stops", today).reads_total, 40);
        log.close();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failed_write_fails_the_log_for_good() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(tmp.path());
        opts.segment_max_bytes = 600;
        let (log, _) = AuditLog::open(opts).unwrap();
        // The next segment is a device that refuses every write (ENOSPC).
        std::os::unix::fs::symlink("/dev/full", tmp.path().join(segment_name(2))).unwrap();
        let mut failed = None;
        for i in 0..20 {
            if let Err(e) = log.append(event(i)).await {
                failed = Some(e);
                break;
            }
        }
        assert!(matches!(failed, Some(AuditError::Failed(_))), "{failed:?}");
        assert!(log.failed().is_some());
        // No retry: later appends fail at once, even though nothing changed.
        assert!(matches!(
            log.append(event(99)).await,
            Err(AuditError::Failed(_))
        ));
    }
}
