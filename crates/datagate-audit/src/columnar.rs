//! The columnar copy of the log: every sealed segment is also written as Parquet, one file per
//! UTC day it spans (`columnar/day=YYYY-MM-DD/segment-NNNNNN.parquet`), sorted by `seq` (so by
//! time), zstd-compressed (the hashes stored as their bytes, [`crate::hash_columns`]), with
//! page-level statistics and page indexes on every column. SQL over
//! `audit.events` reads these files (pruned by day, by `seq` and by statistics) and decodes only
//! the segments not converted yet — in practice the open one.
//!
//! The JSON-lines chain stays the evidence; the Parquet copy is an index of it, and `verify`
//! proves each of its rows re-encodes to the chained line of its `seq`.
//!
//! A segment's conversion is durable and idempotent: each day file is written under a temporary
//! name, synced and renamed; then the segment's *marker* (`columnar/segment-NNNNNN.json`: its
//! files, seq range and usage summary) is written the same way. Only a segment with a marker is
//! read from Parquet; a crash anywhere before the marker leaves the JSON segment authoritative,
//! and the next start converts it again (overwriting whatever the crash left).

use crate::canonical::{self, View};
use crate::error::{AuditError, Result};
use crate::hash_columns;
use crate::reader;
use crate::record::{self, Event, Kind, Record};
use crate::segment::{list_numbered, list_segments, segment_name, sync_dir};
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The directory of the columnar copy, inside the audit directory.
pub const COLUMNAR_DIR: &str = "columnar";

/// Rows per Parquet row group: small enough that a month's or a principal's query skips most
/// of a day by statistics, large enough to compress well.
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Rows per data page at most: an auditor's filter (one principal, one dataset) selects a few
/// rows of each file, and the wide columns' pages holding none of them are skipped unread
/// (by the page index) instead of decompressed.
const PAGE_ROWS: usize = 1024;

/// One Parquet file of a segment: the segment's records of one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayFile {
    pub day: NaiveDate,
    /// Relative to the audit directory.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Reads and downloads of one dataset on one day (begin records of 2xx data requests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsage {
    pub day: NaiveDate,
    /// `department.dataset`.
    pub dataset: String,
    pub reads: u64,
    pub downloads: u64,
}

/// A converted segment: what its marker file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentIndex {
    pub segment: u64,
    /// The JSON segment's file name.
    pub source: String,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_ts: Option<DateTime<Utc>>,
    pub last_ts: Option<DateTime<Utc>>,
    /// Bytes of the JSON segment.
    pub source_bytes: u64,
    pub files: Vec<DayFile>,
    pub usage: Vec<DayUsage>,
    /// Moved to the archive by retention: its files are no longer here (the marker stays, so
    /// usage totals and verification know where its records went).
    #[serde(default)]
    pub archived: bool,
}

impl SegmentIndex {
    /// Parquet bytes of the segment.
    pub fn parquet_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// The marker file name of segment `index`.
pub fn marker_name(index: u64) -> String {
    format!("segment-{index:06}.json")
}

fn day_dir(day: NaiveDate) -> String {
    format!("{COLUMNAR_DIR}/day={}", day.format("%Y-%m-%d"))
}

/// A record's day and whether it is a download, when it is a read or a download of the
/// datasets it names.
pub fn usage_of(r: &Record) -> Option<(NaiveDate, bool)> {
    usage_kind(&r.event).map(|download| (r.ts.date_naive(), download))
}

/// Whether an event is a read (`Some(false)`) or a download (`Some(true)`) of its datasets.
pub fn usage_kind(e: &Event) -> Option<bool> {
    usage_kind_of(e.kind, e.status, &e.action)
}

fn usage_kind_of(kind: Option<Kind>, status: u16, action: &str) -> Option<bool> {
    // A transfer counts once: by its `begin`, or by its `read` when it was answered whole.
    if !matches!(kind, Some(Kind::Begin | Kind::Read)) || status >= 400 {
        return None;
    }
    match action {
        "data.export" => Some(true),
        "data.rows" | "data.query" => Some(false),
        _ => None,
    }
}

/// Reads and downloads per day and dataset, counted record by record.
#[derive(Default)]
struct UsageTally(BTreeMap<(NaiveDate, String), (u64, u64)>);

impl UsageTally {
    fn add_view(&mut self, v: &View<'_>) {
        let Some(download) = usage_kind_of(v.kind, v.status, &v.action) else {
            return;
        };
        let day = v.ts.date_naive();
        for (name, _) in &v.datasets {
            let e = self.0.entry((day, name.to_string())).or_default();
            if download {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
    }

    fn into_days(self) -> Vec<DayUsage> {
        self.0
            .into_iter()
            .map(|((day, dataset), (reads, downloads))| DayUsage {
                day,
                dataset,
                reads,
                downloads,
            })
            .collect()
    }
}

fn writer_properties() -> WriterProperties {
    let mut b = WriterProperties::builder();
    // Columns unique to each record: no dictionary (it would only be tried and dropped) and no
    // statistics (no filter narrows by their min/max); every other column keeps both.
    for unique in ["event_id", "request_id", "prev_hash", "hash"] {
        let c = parquet::schema::types::ColumnPath::from(unique);
        b = b
            .set_column_dictionary_enabled(c.clone(), false)
            .set_column_statistics_enabled(c, EnabledStatistics::None);
    }
    // The hashes' bytes are random: nothing to compress ([`hash_columns`]).
    for hash in hash_columns::HASH_COLUMNS {
        let c = parquet::schema::types::ColumnPath::from(hash);
        b = b.set_column_compression(c, Compression::UNCOMPRESSED);
    }
    // Unique too, but filtered on (seq windows, time ranges): statistics, no dictionary (a
    // row group's 65,536 distinct values fit under the dictionary's size limit, so it would be
    // kept, and every read would decode it to look each row up again). Both rise nearly
    // steadily, so their deltas pack into a few bits a row: 25-50x smaller than plain values
    // under zstd, and nothing left worth compressing.
    for ordered in ["seq", "ts"] {
        let c = parquet::schema::types::ColumnPath::from(ordered);
        b = b
            .set_column_dictionary_enabled(c.clone(), false)
            .set_column_encoding(c.clone(), parquet::basic::Encoding::DELTA_BINARY_PACKED)
            .set_column_compression(c, Compression::UNCOMPRESSED);
    }
    b.set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]))
        .build()
}

/// Writes `bytes` to `path` durably: a temporary file, synced, renamed, directory synced.
fn write_durably(path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| AuditError::Invalid(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(dir)?;
    // A name of its own, so two converters (the gateway's and `datagate audit index`) never
    // write one temporary file; both rename identical content into place.
    let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::File::create(&tmp)?;
    write(&mut f)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)?;
    Ok(())
}

/// Records a day file of a conversion gathers before they are encoded: memory stays bounded
/// by this many records per day in the segment (and the row group being encoded), whatever the
/// segment's size.
const CONVERT_CHUNK: usize = 8192;

/// One day's file of a segment being converted: a temporary file until it is complete.
struct DayWriter {
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<std::fs::File>,
    pending: reader::BatchBuilder,
    rows: u64,
    first_seq: u64,
    last_seq: u64,
}

impl DayWriter {
    fn create(path: PathBuf) -> Result<Self> {
        let dir = path
            .parent()
            .ok_or_else(|| AuditError::Invalid(format!("{} has no directory", path.display())))?;
        std::fs::create_dir_all(dir)?;
        // A name of its own, so two converters (the gateway's and `datagate audit index`) never
        // write one temporary file; both rename identical content into place.
        let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&tmp)?;
        let writer =
            ArrowWriter::try_new(file, hash_columns::file_schema(), Some(writer_properties()))
                .map_err(|e| AuditError::Invalid(e.to_string()))?;
        Ok(Self {
            path,
            tmp,
            writer,
            pending: reader::BatchBuilder::for_file(CONVERT_CHUNK),
            rows: 0,
            first_seq: 0,
            last_seq: 0,
        })
    }

    fn push(&mut self, r: &View<'_>, hashes: [&[u8; 32]; 2]) -> Result<()> {
        if self.rows == 0 {
            self.first_seq = r.seq;
        }
        self.last_seq = r.seq;
        self.rows += 1;
        self.pending.push_stored(r, hashes);
        if self.pending.len() >= CONVERT_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = self.pending.finish()?;
        self.writer
            .write(&batch)
            .map_err(|e| AuditError::Invalid(e.to_string()))
    }

    /// Writes the rest, syncs the file and renames it into place (the directory synced too).
    fn finish(mut self) -> Result<(PathBuf, u64, u64, u64)> {
        self.flush()?;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| AuditError::Invalid(e.to_string()))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok((self.path, self.rows, self.first_seq, self.last_seq))
    }
}

/// Converts sealed segment `index` of the log in `dir`: its day files, then its marker.
/// Running it again (after a crash at any point) gives the same files.
///
/// Records are decoded one by one and handed to their day's file in chunks, so a conversion
/// holds the segment's bytes and a few thousand records per day, not every record at once.
pub fn convert_segment(dir: &Path, index: u64) -> Result<SegmentIndex> {
    let source = segment_name(index);
    // Read a window at a time, not whole: a segment is tens of megabytes.
    let source_bytes = std::fs::metadata(dir.join(&source))?.len();
    // Records come in seq order, so a day's records are one run (unless the clock stepped
    // back over midnight: then each day's file still gets its records in seq order).
    let mut days: BTreeMap<NaiveDate, DayWriter> = BTreeMap::new();
    let mut usage = UsageTally::default();
    let (mut count, mut first, mut last) = (0u64, None::<(u64, DateTime<Utc>)>, None);
    let result = {
        let mut add = |r: &View<'_>| -> Result<()> {
            // The copy stores hashes as their bytes: a line whose hashes are not hashes is no
            // record of the chain, left to `verify` like a line that does not decode.
            let (Some(prev_hash), Some(hash)) = (
                hash_columns::decode_hash(r.prev_hash.as_bytes()),
                hash_columns::decode_hash(r.hash.as_bytes()),
            ) else {
                return Ok(());
            };
            usage.add_view(r);
            count += 1;
            first.get_or_insert((r.seq, r.ts));
            last = Some((r.seq, r.ts));
            let day = r.ts.date_naive();
            let writer = match days.entry(day) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let rel = format!("{}/segment-{index:06}.parquet", day_dir(day));
                    e.insert(DayWriter::create(dir.join(rel))?)
                }
            };
            writer.push(r, [&prev_hash, &hash])
        };
        crate::segment::for_each_line(&dir.join(&source), |line| {
            // Hashes are not checked here: `verify` proves every row of the copy against the
            // chain. Lines that are not good records (a torn last line too) are left to
            // `verify`, as the reader does. A line in the log's own shape is read in place.
            match canonical::view(line) {
                Some(view) => add(&view),
                None => match record::decode_unchecked(line) {
                    Ok(r) => add(&View::of(&r)),
                    Err(_) => Ok(()),
                },
            }
        })
    };
    if let Err(e) = result {
        for w in days.into_values() {
            let _ = std::fs::remove_file(&w.tmp);
        }
        return Err(e);
    }
    let mut files = Vec::new();
    for (day, writer) in days {
        let tmp = writer.tmp.clone();
        let (path, rows, first_seq, last_seq) = writer.finish().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        files.push(DayFile {
            day,
            bytes: std::fs::metadata(&path)?.len(),
            path: format!("{}/segment-{index:06}.parquet", day_dir(day)),
            rows,
            first_seq,
            last_seq,
        });
    }
    let marker = SegmentIndex {
        segment: index,
        source,
        records: count,
        first_seq: first.map_or(0, |f| f.0),
        last_seq: last.map_or(0, |l| l.0),
        first_ts: first.map(|f| f.1),
        last_ts: last.map(|l| l.1),
        source_bytes,
        files,
        usage: usage.into_days(),
        archived: false,
    };
    write_marker(dir, &marker)?;
    Ok(marker)
}

/// Writes (or rewrites) a segment's marker durably.
pub fn write_marker(dir: &Path, marker: &SegmentIndex) -> Result<()> {
    let json = serde_json::to_vec_pretty(marker).map_err(|e| AuditError::Invalid(e.to_string()))?;
    write_durably(
        &dir.join(COLUMNAR_DIR).join(marker_name(marker.segment)),
        |f| Ok(f.write_all(&json)?),
    )
}

/// The markers in `dir`, by segment.
pub fn read_markers(dir: &Path) -> Result<BTreeMap<u64, SegmentIndex>> {
    let mut out = BTreeMap::new();
    for (_, path) in list_numbered(&dir.join(COLUMNAR_DIR), ".json")? {
        let marker = read_marker_file(&path)?;
        out.insert(marker.segment, marker);
    }
    Ok(out)
}

fn read_marker_file(path: &Path) -> Result<SegmentIndex> {
    let data = std::fs::read(path)?;
    serde_json::from_slice(&data)
        .map_err(|e| AuditError::Invalid(format!("{}: {e}", path.display())))
}

/// The marker of segment `index` on disk, if another process (the gateway, or
/// `datagate audit index` beside it) has converted it since this index was loaded.
fn read_marker(dir: &Path, index: u64) -> Result<Option<SegmentIndex>> {
    match read_marker_file(&dir.join(COLUMNAR_DIR).join(marker_name(index))) {
        Ok(marker) => Ok(Some(marker)),
        Err(AuditError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes what an interrupted conversion left (temporary files) under the columnar directory.
/// A temporary file untouched this long was left by a crash, not by a converter at work.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

fn sweep_temporaries(dir: &Path) -> Result<()> {
    let root = dir.join(COLUMNAR_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(());
    };
    let mut dirs = vec![root.clone()];
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    for d in dirs {
        for entry in std::fs::read_dir(&d)?.flatten() {
            // Only what no converter is still writing: another one (the gateway's, or
            // `datagate audit index` beside it) may be mid-file right now.
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TEMPORARY);
            if stale && entry.path().extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

/// The converted segments, kept in memory and shared by the converter and the readers.
#[derive(Debug, Default)]
pub struct ColumnarIndex {
    dir: PathBuf,
    segments: Mutex<BTreeMap<u64, Arc<SegmentIndex>>>,
    /// Segments being converted in this process, so two converters (the gateway's own and
    /// a `catch_up`) never write one segment's files at once.
    converting: Mutex<std::collections::HashSet<u64>>,
    converted: std::sync::Condvar,
}

impl ColumnarIndex {
    /// Loads the markers in `dir` (sweeping what a crash left half-written).
    pub fn load(dir: &Path) -> Result<Self> {
        sweep_temporaries(dir)?;
        let segments = read_markers(dir)?
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            segments: Mutex::new(segments),
            converting: Mutex::default(),
            converted: std::sync::Condvar::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every converted segment (archived ones too), oldest first.
    pub fn snapshot(&self) -> Vec<Arc<SegmentIndex>> {
        self.segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn contains(&self, segment: u64) -> bool {
        self.segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&segment)
    }

    pub fn insert(&self, marker: SegmentIndex) {
        self.segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(marker.segment, Arc::new(marker));
    }

    /// The marker of `segment`, if it is converted.
    pub fn get(&self, segment: u64) -> Option<Arc<SegmentIndex>> {
        self.segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&segment)
            .cloned()
    }

    /// The records of converted segments with the given `seq`s, read from their JSON
    /// segments by searching them on seq ([`crate::segment::read_by_seq`]), in the order asked. Seqs of no
    /// converted segment here (archived, not converted, never written) are left out: the
    /// caller reads those another way.
    pub fn records_by_seq(&self, seqs: &[u64]) -> Result<Vec<Record>> {
        let segments: Vec<Arc<SegmentIndex>> = self
            .snapshot()
            .into_iter()
            .filter(|m| !m.archived && m.records > 0)
            .collect();
        let mut by_segment: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for &seq in seqs {
            let at = segments.partition_point(|m| m.last_seq < seq);
            if segments.get(at).is_some_and(|m| m.first_seq <= seq) {
                by_segment.entry(at).or_default().push(seq);
            }
        }
        let mut found: std::collections::HashMap<u64, Record> = std::collections::HashMap::new();
        for (at, wanted) in by_segment {
            let path = self.dir.join(&segments[at].source);
            match crate::segment::read_by_seq(&path, &wanted) {
                Ok(records) => found.extend(records.into_iter().map(|r| (r.seq, r))),
                Err(AuditError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(seqs.iter().filter_map(|s| found.remove(s)).collect())
    }

    /// The sealed segments (all but the last) that have no marker yet, oldest first.
    pub fn pending(&self) -> Result<Vec<u64>> {
        let segments = list_segments(&self.dir)?;
        let sealed = &segments[..segments.len().saturating_sub(1)];
        Ok(sealed
            .iter()
            .map(|(i, _)| *i)
            .filter(|i| !self.contains(*i))
            .collect())
    }

    /// Converts sealed segment `index` and records its marker; nothing to do when it is
    /// converted already (or once another thread converting it has finished), here or by
    /// another process whose marker is on disk.
    pub fn convert(&self, index: u64) -> Result<()> {
        let mut converting = self.converting.lock().unwrap_or_else(|p| p.into_inner());
        while converting.contains(&index) {
            converting = self
                .converted
                .wait(converting)
                .unwrap_or_else(|p| p.into_inner());
        }
        if self.contains(index) {
            return Ok(());
        }
        converting.insert(index);
        drop(converting);
        let done = match read_marker(&self.dir, index) {
            Ok(Some(marker)) => Ok(marker),
            Ok(None) => convert_segment(&self.dir, index),
            Err(e) => Err(e),
        }
        .map(|marker| self.insert(marker));
        self.converting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&index);
        self.converted.notify_all();
        done
    }

    /// Converts every sealed segment (all but the last) that has no marker yet, on up to
    /// `threads` threads; returns how many were converted. The gateway's converter uses one
    /// (conversion must not take the cores that serve requests); `datagate audit index` all.
    pub fn catch_up(&self, threads: usize) -> Result<usize> {
        let todo = self.pending()?;
        let threads = threads.max(1).min(todo.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed: Mutex<Option<AuditError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(index) = todo.get(i) else { break };
                        match self.convert(*index) {
                            Ok(()) => {}
                            Err(e) => {
                                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                                break;
                            }
                        }
                    }
                });
            }
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(todo.len()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::log::{AuditLog, LogOptions};
    use crate::record::DatasetVersion;

    pub(crate) fn event(i: usize) -> Event {
        Event {
            kind: Some(if i.is_multiple_of(3) {
                Kind::Begin
            } else {
                Kind::Request
            }),
            event_id: format!("e{i}"),
            key_id: format!("k{}", i % 4),
            action: if i.is_multiple_of(3) {
                "data.rows".into()
            } else {
                "catalog.datasets".into()
            },
            datasets: vec![DatasetVersion {
                name: format!("d{}.t", i % 2),
                version: Some(1),
            }],
            status: 200,
            count: 1,
            ..Default::default()
        }
    }

    /// A closed log of `n` events in segments of 4 KiB.
    async fn small_segments(n: usize) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(tmp.path());
        opts.segment_max_bytes = 4096;
        // Sealed at close, its converter stopped first: the last segment is always left
        // unconverted, whatever the converter did while the records were appended.
        opts.seal_on_close = true;
        let (log, _) = AuditLog::open(opts).unwrap();
        for i in 0..n {
            log.append(event(i)).await.unwrap();
        }
        log.close();
        tmp
    }

    #[tokio::test]
    async fn sealed_segments_are_converted_with_markers_and_usage() {
        let tmp = small_segments(60).await;
        let index = ColumnarIndex::load(tmp.path()).unwrap();
        index.catch_up(2).unwrap();
        let markers = index.snapshot();
        let segments = list_segments(tmp.path()).unwrap();
        assert_eq!(markers.len(), segments.len() - 1, "every sealed segment");
        let mut seq = 1;
        for m in &markers {
            assert_eq!(m.first_seq, seq);
            seq = m.last_seq + 1;
            let rows: u64 = m.files.iter().map(|f| f.rows).sum();
            assert_eq!(rows, m.records);
            for f in &m.files {
                assert!(tmp.path().join(&f.path).exists());
            }
        }
        let reads: u64 = markers
            .iter()
            .flat_map(|m| m.usage.iter())
            .map(|u| u.reads)
            .sum();
        let want = (1..seq).filter(|s| (s - 1) % 3 == 0).count() as u64;
        assert_eq!(reads, want, "one read per begin of data.rows");
        // Idempotent: a second conversion of a segment writes the same marker.
        let again = convert_segment(tmp.path(), markers[0].segment).unwrap();
        assert_eq!(again.files, markers[0].files);
    }

    /// Two indexes over one directory (the gateway's and `datagate audit index` beside it):
    /// what one converted, the other takes from its marker on disk instead of writing the
    /// segment's files again.
    #[tokio::test]
    async fn a_segment_another_index_converted_is_not_converted_again() {
        use std::os::unix::fs::MetadataExt;
        let tmp = small_segments(30).await;
        let gateway = ColumnarIndex::load(tmp.path()).unwrap();
        let cli = ColumnarIndex::load(tmp.path()).unwrap();
        let segment = gateway.pending().unwrap()[0];
        gateway.convert(segment).unwrap();
        let marker = gateway.get(segment).unwrap();
        let inodes = |m: &SegmentIndex| -> Vec<u64> {
            m.files
                .iter()
                .map(|f| std::fs::metadata(tmp.path().join(&f.path)).unwrap().ino())
                .collect()
        };
        let before = inodes(&marker);
        assert!(!cli.contains(segment));
        cli.convert(segment).unwrap();
        assert_eq!(*cli.get(segment).unwrap(), *marker);
        assert_eq!(inodes(&marker), before, "the files were not written again");
    }

    /// A principal's few rows in a day file leave most of each wide column's pages unread:
    /// pages hold at most `PAGE_ROWS` rows and the page index says where each starts.
    #[tokio::test]
    async fn day_files_have_small_pages_and_a_page_index() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(LogOptions::new(tmp.path())).unwrap();
        let n = 5 * PAGE_ROWS;
        for i in 0..n {
            log.append_detached(event(i));
        }
        log.append(event(n)).await.unwrap();
        log.close();
        let segment = list_segments(tmp.path()).unwrap()[0].0;
        let marker = convert_segment(tmp.path(), segment).unwrap();
        let file = std::fs::File::open(tmp.path().join(&marker.files[0].path)).unwrap();
        let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
        let meta = parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&file, options).unwrap();
        let meta = meta.metadata();
        let hash = reader::events_schema().index_of("hash").unwrap();
        let offsets = meta.offset_index().expect("an offset index");
        for (group, columns) in meta.row_groups().iter().zip(offsets) {
            let pages = columns[hash].page_locations();
            assert!(
                pages.len() >= group.num_rows() as usize / PAGE_ROWS,
                "{} pages",
                pages.len()
            );
            let starts: Vec<i64> = pages.iter().map(|p| p.first_row_index).collect();
            for w in starts.windows(2) {
                assert!(w[1] - w[0] <= PAGE_ROWS as i64, "{starts:?}");
            }
        }
    }
}
