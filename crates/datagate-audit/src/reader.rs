//! Reading the log for review: every record, filtered, and as Arrow for SQL over
//! `audit.events`. Sealed segments and the open one are read alike (an unfinished last line of
//! the open segment is not a record yet and is skipped).
//!
//! [`to_batch`] and [`from_batch`] are exact inverses: a record turned into a row of
//! `audit.events` (the columnar copy's rows) and back re-encodes to the very line it came from.
//! `verify` proves a Parquet row equals its chained record by writing that line straight from
//! the row's columns ([`Columns::body_into`]) and comparing bytes.

use crate::canonical::View;
use crate::error::Result;
use crate::record::{self, DatasetVersion, Event, Kind, Record};
use crate::segment::{list_segments, split_lines};
use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, Int64Builder, StringArray, StringBuilder,
    TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use std::path::Path;
use std::sync::Arc;

/// Calls `f` with every record of the log in `dir`, oldest first; lines that are not good
/// records are skipped (`verify` reports them).
pub fn for_each_record(dir: &Path, mut f: impl FnMut(Record)) -> Result<()> {
    for (_, path) in list_segments(dir)? {
        let data = std::fs::read(&path)?;
        // The open segment's zeroes laid ahead are not lines (a sealed one has none).
        let (lines, _) = split_lines(crate::segment::records_part(&data));
        for (_, line) in lines {
            if let Ok(r) = record::decode(line) {
                f(r);
            }
        }
    }
    Ok(())
}

/// The columns of `audit.events`.
pub fn events_schema() -> SchemaRef {
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    let int = |n: &str| Field::new(n, DataType::Int64, false);
    let nullable_int = |n: &str| Field::new(n, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        text("kind"),
        text("event_id"),
        text("request_id"),
        text("key_id"),
        text("role"),
        text("department"),
        text("tier"),
        text("client_ip"),
        text("user_agent"),
        text("method"),
        text("path"),
        text("action"),
        text("datasets"),
        text("query_text"),
        text("query_sha256"),
        int("status"),
        text("error"),
        int("rows_returned"),
        int("bytes_returned"),
        int("duration_ms"),
        nullable_int("cpu_ms"),
        text("outcome"),
        int("count"),
        text("prev_hash"),
        text("hash"),
        // Last: Parquet copies written before they existed read them as null.
        text("node_id"),
        // Comma-separated worker URLs of a distributed query.
        text("workers"),
    ]))
}

/// Records as one Arrow batch of [`events_schema`].
pub fn to_batch(records: &[Record]) -> Result<RecordBatch> {
    let mut builder = BatchBuilder::with_capacity(records.len());
    for r in records {
        builder.push(&View::of(r));
    }
    builder.finish()
}

/// The good records among `lines` (each checked against its own hash, as [`record::decode`]
/// checks it; other lines are skipped, and `verify` reports them) as one batch, read in place
/// when in the log's own shape ([`crate::canonical`]), with the first and last `seq` read.
pub fn batch_of_lines<'l>(
    lines: impl IntoIterator<Item = &'l [u8]>,
) -> Result<(RecordBatch, Option<(u64, u64)>)> {
    let mut builder = BatchBuilder::with_capacity(0);
    let mut seqs: Option<(u64, u64)> = None;
    let mut add = |v: &View<'_>| {
        seqs = Some((seqs.map_or(v.seq, |s| s.0), v.seq));
        builder.push(v);
    };
    for line in lines {
        match crate::canonical::view(line) {
            Some(v) => {
                if record::check_hash(line, &v.hash).is_ok() {
                    add(&v);
                }
            }
            None => {
                if let Ok(r) = record::decode(line) {
                    add(&View::of(&r));
                }
            }
        }
    }
    Ok((builder.finish()?, seqs))
}

/// Rows of [`events_schema`] built record by record, from [`View`]s: what a conversion
/// appends each line's members to, borrowed from the line, without a [`Record`] in between.
pub struct BatchBuilder {
    seq: Vec<u64>,
    ts: Vec<i64>,
    /// The text columns, in [`events_schema`] order from `kind` to `query_sha256`, then
    /// `error`, `outcome`, `prev_hash`, `hash`, `node_id`, `workers`.
    texts: Vec<StringBuilder>,
    /// `status`, `rows_returned`, `bytes_returned`, `duration_ms`, `count`.
    ints: [Vec<i64>; 5],
    cpu_ms: Int64Builder,
    /// A reused buffer for the comma-joined `datasets` and `workers` values.
    joined: String,
    /// For the Parquet copy ([`BatchBuilder::for_file`]): `prev_hash` and `hash` as their
    /// bytes, 32 a row, instead of text.
    hash_bytes: Option<[Vec<u8>; 2]>,
}

/// The text columns a [`BatchBuilder`] builds, in its own order.
const BUILT_TEXTS: usize = 21;

impl BatchBuilder {
    /// An empty batch, room made for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            seq: Vec::with_capacity(rows),
            ts: Vec::with_capacity(rows),
            texts: (0..BUILT_TEXTS)
                .map(|_| StringBuilder::with_capacity(rows, rows * 8))
                .collect(),
            ints: std::array::from_fn(|_| Vec::with_capacity(rows)),
            cpu_ms: Int64Builder::with_capacity(rows),
            joined: String::new(),
            hash_bytes: None,
        }
    }

    /// An empty batch of the Parquet copy's rows ([`crate::hash_columns::file_schema`]),
    /// appended with [`BatchBuilder::push_stored`].
    pub fn for_file(rows: usize) -> Self {
        Self {
            hash_bytes: Some(std::array::from_fn(|_| Vec::with_capacity(rows * 32))),
            ..Self::with_capacity(rows)
        }
    }

    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// Appends one record's row.
    pub fn push(&mut self, v: &View<'_>) {
        self.push_body(v);
        self.texts[17].append_value(&v.prev_hash);
        self.texts[18].append_value(&v.hash);
    }

    /// Appends one record's row to a batch [`BatchBuilder::for_file`], with its hashes'
    /// bytes (`prev_hash`, `hash`) read from the record already.
    pub fn push_stored(&mut self, v: &View<'_>, hashes: [&[u8; 32]; 2]) {
        self.push_body(v);
        if let Some(bytes) = &mut self.hash_bytes {
            for (column, hash) in bytes.iter_mut().zip(hashes) {
                column.extend_from_slice(hash);
            }
        }
    }

    /// Every column but the hashes.
    fn push_body(&mut self, v: &View<'_>) {
        fn int(v: u64) -> i64 {
            i64::try_from(v).unwrap_or(i64::MAX)
        }
        self.seq.push(v.seq);
        self.ts.push(v.ts.timestamp_nanos_opt().unwrap_or(i64::MAX));
        let t = &mut self.texts;
        t[0].append_option(v.kind.map(|k| k.as_str()));
        t[1].append_value(&v.event_id);
        t[2].append_value(&v.request_id);
        t[3].append_value(&v.key_id);
        t[4].append_value(&v.role);
        t[5].append_option(v.department.as_deref());
        t[6].append_value(&v.tier);
        t[7].append_value(&v.client_ip);
        t[8].append_value(&v.user_agent);
        t[9].append_value(&v.method);
        t[10].append_value(&v.path);
        t[11].append_value(&v.action);
        if v.datasets.is_empty() {
            t[12].append_null();
        } else {
            self.joined.clear();
            for (i, (name, version)) in v.datasets.iter().enumerate() {
                if i > 0 {
                    self.joined.push(',');
                }
                self.joined.push_str(name);
                if let Some(version) = version {
                    self.joined.push('@');
                    self.joined.push_str(itoa::Buffer::new().format(*version));
                }
            }
            t[12].append_value(&self.joined);
        }
        t[13].append_option(v.query_text.as_deref());
        t[14].append_option(v.query_sha256.as_deref());
        t[15].append_option(v.error.as_deref());
        t[16].append_option(v.outcome.as_deref());
        t[19].append_option(v.node_id.as_deref());
        match &v.workers {
            None => t[20].append_null(),
            Some(workers) => {
                self.joined.clear();
                for (i, w) in workers.iter().enumerate() {
                    if i > 0 {
                        self.joined.push(',');
                    }
                    self.joined.push_str(w);
                }
                t[20].append_value(&self.joined);
            }
        }
        self.ints[0].push(i64::from(v.status));
        self.ints[1].push(int(v.rows_returned));
        self.ints[2].push(int(v.bytes_returned));
        self.ints[3].push(int(v.duration_ms));
        self.ints[4].push(int(v.count));
        self.cpu_ms.append_option(v.cpu_ms.map(int));
    }

    /// The rows appended so far as a batch; the builder is left empty for more.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let mut text = self
            .texts
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut ints = self
            .ints
            .iter_mut()
            .map(|v| Arc::new(Int64Array::from(std::mem::take(v))) as ArrayRef);
        let mut next_text = || text.next().expect("a text column");
        let mut next_int = || ints.next().expect("an integer column");
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(std::mem::take(&mut self.seq))),
            Arc::new(
                TimestampNanosecondArray::from(std::mem::take(&mut self.ts)).with_timezone("UTC"),
            ),
        ];
        // kind .. query_sha256
        cols.extend((0..15).map(|_| next_text()));
        let (error, outcome) = (next_text(), next_text());
        let (mut prev_hash, mut hash, node_id, workers) =
            (next_text(), next_text(), next_text(), next_text());
        let mut schema = events_schema();
        if let Some([prev, this]) = &mut self.hash_bytes {
            let bytes = |v: &mut Vec<u8>| -> Result<ArrayRef> {
                let rows = v.len() / 32;
                let taken = std::mem::replace(v, Vec::with_capacity(rows * 32));
                Ok(Arc::new(
                    arrow::array::FixedSizeBinaryArray::try_new(32, taken.into(), None)
                        .map_err(|e| crate::error::AuditError::Invalid(e.to_string()))?,
                ))
            };
            (prev_hash, hash) = (bytes(prev)?, bytes(this)?);
            schema = crate::hash_columns::file_schema();
        }
        let status = next_int();
        cols.extend([status, error, next_int(), next_int(), next_int()]);
        cols.push(Arc::new(self.cpu_ms.finish()));
        cols.extend([outcome, next_int(), prev_hash, hash, node_id, workers]);
        RecordBatch::try_new(schema, cols)
            .map_err(|e| crate::error::AuditError::Invalid(e.to_string()))
    }
}

/// The text columns of [`events_schema`] a record is read from, in [`Columns::texts`] order.
const TEXTS: [&str; 19] = [
    "kind",
    "event_id",
    "request_id",
    "key_id",
    "role",
    "department",
    "tier",
    "client_ip",
    "user_agent",
    "method",
    "path",
    "action",
    "datasets",
    "query_text",
    "query_sha256",
    "error",
    "outcome",
    "prev_hash",
    "hash",
];
const KIND: usize = 0;
const DATASETS: usize = 12;
const PREV_HASH: usize = 17;
const HASH: usize = 18;

/// The integer columns, in [`Columns::ints`] order.
const INTS: [&str; 6] = [
    "status",
    "rows_returned",
    "bytes_returned",
    "duration_ms",
    "cpu_ms",
    "count",
];
const CPU_MS: usize = 4;

/// The columns of a batch of [`events_schema`] rows (or a projection holding every column),
/// typed: what [`from_batch`] and [`Columns::body_into`] read.
pub struct Columns<'a> {
    seq: &'a UInt64Array,
    ts: &'a TimestampNanosecondArray,
    texts: Vec<&'a StringArray>,
    ints: Vec<&'a Int64Array>,
    /// Absent from Parquet copies written before records named their gateway.
    node_id: Option<&'a StringArray>,
    workers: Option<&'a StringArray>,
}

impl<'a> Columns<'a> {
    /// `batch`'s columns; an error names a column that is missing or of another type.
    pub fn new(batch: &'a RecordBatch) -> Result<Self> {
        let bad = |m: String| crate::error::AuditError::Invalid(m);
        let column = |name: &str| -> Result<&'a ArrayRef> {
            batch
                .column_by_name(name)
                .ok_or_else(|| bad(format!("the column {name} is missing")))
        };
        let text = |name: &str| -> Result<&'a StringArray> {
            column(name)?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(format!("the column {name} is not text")))
        };
        let optional_text = |name: &str| match batch.column_by_name(name) {
            None => Ok(None),
            Some(_) => text(name).map(Some),
        };
        Ok(Self {
            seq: column("seq")?
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| bad("the column seq is not UInt64".into()))?,
            ts: column("ts")?
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or_else(|| bad("the column ts is not a nanosecond timestamp".into()))?,
            texts: TEXTS.iter().map(|n| text(n)).collect::<Result<_>>()?,
            ints: INTS
                .iter()
                .map(|name| {
                    column(name)?
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(|| bad(format!("the column {name} is not Int64")))
                })
                .collect::<Result<_>>()?,
            node_id: optional_text("node_id")?,
            workers: optional_text("workers")?,
        })
    }

    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// Row `row`'s `seq`.
    pub fn seq(&self, row: usize) -> u64 {
        self.seq.value(row)
    }

    /// Row `row`'s `hash`, as stored.
    pub fn hash(&self, row: usize) -> Option<&'a str> {
        self.text(HASH, row)
    }

    fn text(&self, col: usize, row: usize) -> Option<&'a str> {
        let a = self.texts[col];
        (!a.is_null(row)).then(|| a.value(row))
    }

    fn int(&self, col: usize, row: usize) -> Option<i64> {
        let a = self.ints[col];
        (!a.is_null(row)).then(|| a.value(row))
    }

    /// Row `row` as a record; an error names its `seq` when the row cannot be one.
    pub fn record(&self, row: usize) -> Result<Record> {
        let s = self.seq(row);
        let at = |m: &str| crate::error::AuditError::Invalid(format!("row of seq {s}: {m}"));
        let t = |col: usize| self.text(col, row).map(str::to_string);
        let u = |col: usize| self.int(col, row).map(|v| u64::try_from(v).unwrap_or(0));
        let kind = match self.text(KIND, row) {
            None => None,
            Some("request") => Some(Kind::Request),
            Some("begin") => Some(Kind::Begin),
            Some("end") => Some(Kind::End),
            Some("read") => Some(Kind::Read),
            Some("refusals") => Some(Kind::Refusals),
            Some("log") => Some(Kind::Log),
            Some(other) => return Err(at(&format!("unknown kind {other:?}"))),
        };
        let datasets = match self.text(DATASETS, row) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|d| {
                    dataset_version(d)
                        .map(|(name, version)| DatasetVersion {
                            name: name.to_string(),
                            version,
                        })
                        .ok_or_else(|| at(&format!("bad dataset {d:?}")))
                })
                .collect::<Result<_>>()?,
        };
        let status = u(0).unwrap_or(0);
        let event = Event {
            kind,
            event_id: t(1).unwrap_or_default(),
            request_id: t(2).unwrap_or_default(),
            key_id: t(3).unwrap_or_default(),
            role: t(4).unwrap_or_default(),
            department: t(5),
            tier: t(6).unwrap_or_default(),
            client_ip: t(7).unwrap_or_default(),
            user_agent: t(8).unwrap_or_default(),
            method: t(9).unwrap_or_default(),
            path: t(10).unwrap_or_default(),
            action: t(11).unwrap_or_default(),
            datasets,
            query_text: t(13),
            query_sha256: t(14),
            status: u16::try_from(status).map_err(|_| at("status out of range"))?,
            error: t(15),
            rows_returned: u(1).unwrap_or(0),
            bytes_returned: u(2).unwrap_or(0),
            duration_ms: u(3).unwrap_or(0),
            cpu_ms: u(CPU_MS),
            outcome: t(16),
            count: u(5).unwrap_or(0),
            workers: self.workers.and_then(|a| {
                (!a.is_null(row)).then(|| a.value(row).split(',').map(String::from).collect())
            }),
            node_id: self
                .node_id
                .and_then(|a| (!a.is_null(row)).then(|| a.value(row).to_string())),
        };
        Ok(Record {
            seq: s,
            ts: chrono::DateTime::from_timestamp_nanos(self.ts.value(row)),
            event,
            prev_hash: t(PREV_HASH).unwrap_or_default(),
            hash: t(HASH).unwrap_or_default(),
        })
    }

    /// Row `row`'s canonical body (what [`record::body_into`] writes for its record) written
    /// into `buf` (cleared first), straight from the columns: `verify` compares it with the
    /// chained line, millions of times, without making a [`Record`] of each row. Values are
    /// written as stored, so a value no record holds (a null where a record always has a value,
    /// a negative count, an unknown kind) never equals a line; `false` for a row whose
    /// `datasets` cannot be read back at all.
    pub fn body_into(&self, row: usize, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        buf.extend_from_slice(b"{\"seq\":");
        buf.extend_from_slice(itoa::Buffer::new().format(self.seq(row)).as_bytes());
        buf.extend_from_slice(b",\"ts\":");
        json_time(
            buf,
            chrono::DateTime::from_timestamp_nanos(self.ts.value(row)),
        );
        // Members named by their column: `TEXTS[col]`, `INTS[col]`.
        let text = |buf: &mut Vec<u8>, col: usize| {
            member(buf, TEXTS[col]);
            json_text(buf, self.text(col, row));
        };
        let int = |buf: &mut Vec<u8>, col: usize| {
            member(buf, INTS[col]);
            json_int(buf, self.int(col, row));
        };
        for col in 0..DATASETS {
            text(buf, col);
        }
        member(buf, "datasets");
        buf.push(b'[');
        if let Some(list) = self.text(DATASETS, row) {
            for (i, d) in list.split(',').enumerate() {
                let Some((name, version)) = dataset_version(d) else {
                    return false;
                };
                if i > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(b"{\"name\":");
                json_text(buf, Some(name));
                buf.extend_from_slice(b",\"version\":");
                json_int(buf, version);
                buf.push(b'}');
            }
        }
        buf.push(b']');
        text(buf, 13); // query_text
        text(buf, 14); // query_sha256
        int(buf, 0); // status
        text(buf, 15); // error
        int(buf, 1); // rows_returned
        int(buf, 2); // bytes_returned
        int(buf, 3); // duration_ms
        if self.int(CPU_MS, row).is_some() {
            int(buf, CPU_MS);
        }
        text(buf, 16); // outcome
        int(buf, 5); // count
        if let Some(w) = self.workers.filter(|a| !a.is_null(row)) {
            member(buf, "workers");
            buf.push(b'[');
            for (i, url) in w.value(row).split(',').enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                json_text(buf, Some(url));
            }
            buf.push(b']');
        }
        if let Some(n) = self.node_id.filter(|a| !a.is_null(row)) {
            member(buf, "node_id");
            json_text(buf, Some(n.value(row)));
        }
        text(buf, PREV_HASH);
        true
    }
}

/// `name@version` (or a bare name) of the `datasets` column; `None` when the version is not
/// a number.
fn dataset_version(d: &str) -> Option<(&str, Option<i64>)> {
    match d.rsplit_once('@') {
        Some((name, v)) => v.parse().ok().map(|v| (name, Some(v))),
        None => Some((d, None)),
    }
}

/// `,"name":` — every member after `seq` is written after a comma.
fn member(buf: &mut Vec<u8>, name: &str) {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\":");
}

/// A JSON number (or `null`).
fn json_int(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        None => buf.extend_from_slice(b"null"),
    }
}

/// A JSON string (or `null`) as `serde_json` writes it. Most values need no escaping: checked
/// 16 bytes at a time without branching (which the compiler vectorises) and copied whole;
/// the rest go through `serde_json` itself.
fn json_text(buf: &mut Vec<u8>, s: Option<&str>) {
    let Some(s) = s else {
        buf.extend_from_slice(b"null");
        return;
    };
    let escapes = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let bytes = s.as_bytes();
    let mut chunks = bytes.chunks_exact(16);
    let plain = chunks.all(|chunk| {
        let chunk: &[u8; 16] = chunk.try_into().unwrap_or(&[0; 16]);
        !chunk.iter().fold(false, |any, &b| any | escapes(b))
    }) && !chunks.remainder().iter().any(|&b| escapes(b));
    if plain {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else if serde_json::to_writer(&mut *buf, s).is_err() {
        buf.extend_from_slice(b"null");
    }
}

/// A time as `serde_json` writes a `DateTime<Utc>` (chrono's RFC 3339 with `Z` and as many
/// sub-second digits as needed: none, 3, 6 or 9), written directly for the years 0–9999 (every
/// time a nanosecond timestamp holds) instead of through `Display` and `serde_json`'s string
/// escaping, which took a twentieth of a verification.
fn json_time(buf: &mut Vec<u8>, t: chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        if serde_json::to_writer(&mut *buf, &t).is_err() {
            buf.extend_from_slice(b"null");
        }
        return;
    }
    let digits = |buf: &mut Vec<u8>, v: u32, n: u32| {
        for i in (0..n).rev() {
            buf.push(b'0' + (v / 10u32.pow(i) % 10) as u8);
        }
    };
    buf.push(b'"');
    digits(buf, year as u32, 4);
    buf.push(b'-');
    digits(buf, t.month(), 2);
    buf.push(b'-');
    digits(buf, t.day(), 2);
    buf.push(b'T');
    digits(buf, t.hour(), 2);
    buf.push(b':');
    digits(buf, t.minute(), 2);
    buf.push(b':');
    digits(buf, t.second(), 2);
    let nanos = t.nanosecond();
    if nanos != 0 {
        buf.push(b'.');
        if nanos.is_multiple_of(1_000_000) {
            digits(buf, nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            digits(buf, nanos / 1_000, 6);
        } else {
            digits(buf, nanos, 9);
        }
    }
    buf.extend_from_slice(b"Z\"");
}

/// Records from rows of [`events_schema`] (or a projection holding every column): the inverse
/// of [`to_batch`]. A row that cannot be a record (a column missing or of another type, a bad
/// `kind` or `datasets` value) is an error naming its `seq` where known.
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<Record>> {
    let columns = Columns::new(batch)?;
    (0..columns.len()).map(|row| columns.record(row)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{GENESIS_HASH, encode};
    use proptest::prelude::*;

    fn record_of(seq: u64, ts_nanos: i64, event: Event) -> Record {
        let ts = chrono::DateTime::from_timestamp_nanos(ts_nanos);
        let (line, _) = encode(seq, &ts, &event, GENESIS_HASH);
        crate::record::decode(&line[..line.len() - 1]).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// `Columns::body_into` writes exactly what the record's own encoding writes.
        #[test]
        fn rows_are_encoded_from_their_columns_as_their_records_are(
            // Integers a row holds (Int64), names and URLs without the lists' commas.
            event in crate::canonical::tests::events_with(
                i64::MAX as u64 - 1,
                "[a-z_]{1,8}\\.[a-z_]{1,8}|[a-z0-9:/.]{1,16}".boxed(),
                1,
            ),
            ts in crate::canonical::tests::times(),
            seq in 1..u32::MAX as u64,
        ) {
            let record = record_of(seq, ts.timestamp_nanos_opt().unwrap(), event);
            let batch = to_batch(std::slice::from_ref(&record)).unwrap();
            let columns = Columns::new(&batch).unwrap();
            let mut got = Vec::new();
            prop_assert!(columns.body_into(0, &mut got));
            let mut want = Vec::new();
            crate::record::body_into(&mut want, record.seq, &record.ts, &record.event, &record.prev_hash);
            prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
            prop_assert_eq!(columns.hash(0), Some(record.hash.as_str()));
        }
    }

    /// Values a record cannot hold, which reading a row as a record would quietly turn into
    /// the record's values (a null text into "", a negative number into 0), are written as
    /// stored, so they never equal a chained line.
    #[test]
    fn values_no_record_holds_never_equal_a_line() {
        let record = record_of(
            7,
            1_700_000_000_000_000_000,
            Event {
                kind: Some(Kind::End),
                key_id: "k1".into(),
                status: 200,
                count: 1,
                ..Default::default()
            },
        );
        let batch = to_batch(std::slice::from_ref(&record)).unwrap();
        let mut want = Vec::new();
        crate::record::body_into(&mut want, 7, &record.ts, &record.event, &record.prev_hash);
        let replaced = |name: &str, column: ArrayRef| {
            let mut columns = batch.columns().to_vec();
            columns[batch.schema().index_of(name).unwrap()] = column;
            RecordBatch::try_new(batch.schema(), columns).unwrap()
        };
        for doctored in [
            replaced("key_id", Arc::new(StringArray::from(vec![None::<&str>]))),
            replaced("rows_returned", Arc::new(Int64Array::from(vec![-1]))),
            replaced("status", Arc::new(Int64Array::from(vec![65_736]))),
            replaced("kind", Arc::new(StringArray::from(vec!["ending"]))),
        ] {
            let mut got = Vec::new();
            let columns = Columns::new(&doctored).unwrap();
            assert!(
                !columns.body_into(0, &mut got) || got != want,
                "{doctored:?}"
            );
        }
        let doctored = replaced("datasets", Arc::new(StringArray::from(vec!["a.b@x"])));
        assert!(
            !Columns::new(&doctored)
                .unwrap()
                .body_into(0, &mut Vec::new())
        );
    }

    /// Lines read in place and lines only serde reads give the rows their records give; a
    /// line whose bytes do not match its hash, or that is no record, is left out.
    #[test]
    fn a_batch_of_lines_holds_the_good_records_read_either_way() {
        let ts = chrono::Utc::now();
        let event = Event {
            kind: Some(Kind::Begin),
            key_id: "k1".into(),
            status: 200,
            count: 1,
            ..Default::default()
        };
        let (first, hash) = encode(1, &ts, &event, GENESIS_HASH);
        let first = first[..first.len() - 1].to_vec();
        let (second, _) = encode(2, &ts, &event, &hash);
        let mut doctored = second[..second.len() - 1].to_vec();
        let at = doctored.windows(4).position(|w| w == b"\"k1\"").unwrap();
        doctored[at + 2] = b'2';
        // Members in another order, with a space: not the canonical shape, yet a record whose
        // hash covers its bytes.
        let body =
            format!(r#"{{"key_id":"k9", "seq":3,"ts":"2026-11-30T00:00:00Z","prev_hash":"{hash}""#);
        let other = format!(
            r#"{body},"hash":"{}"}}"#,
            hex::encode(crate::record::body_hash(body.as_bytes()))
        );
        assert!(crate::canonical::view(other.as_bytes()).is_none());
        let lines: Vec<&[u8]> = vec![&first, &doctored, other.as_bytes(), b"{\"seq\":4"];
        let (batch, seqs) = batch_of_lines(lines).unwrap();
        let want = [
            crate::record::decode(&first).unwrap(),
            crate::record::decode(other.as_bytes()).unwrap(),
        ];
        assert_eq!(want[1].event.key_id, "k9");
        assert_eq!(batch, to_batch(&want).unwrap());
        assert_eq!(seqs, Some((1, 3)));
    }

    #[test]
    fn rows_turn_back_into_the_exact_lines() {
        let mut prev = GENESIS_HASH.to_string();
        let mut records = Vec::new();
        let mut lines = Vec::new();
        let kinds = [
            Some(Kind::Begin),
            Some(Kind::End),
            None,
            Some(Kind::Log),
            Some(Kind::Read),
        ];
        for (i, kind) in (0u64..).zip(kinds) {
            let event = Event {
                kind,
                event_id: format!("e{i}"),
                key_id: "k1".into(),
                department: (i % 2 == 0).then(|| "transport".into()),
                datasets: match i {
                    0 => vec![DatasetVersion {
                        name: "transport.bus_lines".into(),
                        version: Some(3),
                    }],
                    1 => vec![
                        DatasetVersion {
                            name: "a.b".into(),
                            version: None,
                        },
                        DatasetVersion {
                            name: "c.d".into(),
                            version: Some(1),
                        },
                    ],
                    _ => vec![],
                },
                query_text: Some("SELECT '路' -- \"x\"".into()),
                cpu_ms: (i % 3 == 1).then_some(7),
                outcome: (i % 3 == 1).then(|| "completed".into()),
                rows_returned: i * 10,
                status: 200,
                count: 1,
                ..Default::default()
            };
            let ts = chrono::Utc::now();
            let (line, hash) = encode(i + 1, &ts, &event, &prev);
            records.push(crate::record::decode(&line[..line.len() - 1]).unwrap());
            lines.push(line);
            prev = hash;
        }
        let back = from_batch(&to_batch(&records).unwrap()).unwrap();
        assert_eq!(back, records);
        for (r, line) in back.iter().zip(&lines) {
            assert_eq!(&encode(r.seq, &r.ts, &r.event, &r.prev_hash).0, line);
        }
    }
}
