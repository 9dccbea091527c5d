//! Reading the log for review: every record, filtered, and as Arrow for SQL over
//! `audit.events`. Sealed segments and the open one are read alike (an unfinished last line of
//! the open segment is not a record yet and is skipped).
//!
//! [`to_batch`] and [`from_batch`] are exact inverses: a record turned into a row of
//! `audit.events` (the columnar copy's rows) and back re-encodes to the very line it came from,
//! which is how `verify` proves a Parquet row equals its chained record.

use crate::error::Result;
use crate::record::{self, DatasetVersion, Event, Kind, Record};
use crate::segment::{list_segments, split_lines};
use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, StringArray, TimestampNanosecondArray, UInt64Array,
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
        let (lines, _) = split_lines(&data);
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
    // Borrowed, not cloned: a conversion builds millions of cells.
    let text = |f: &dyn for<'r> Fn(&'r Record) -> Option<&'r str>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<StringArray>())
    };
    let int = |f: &dyn Fn(&Record) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            records
                .iter()
                .map(|r| i64::try_from(f(r)).unwrap_or(i64::MAX)),
        ))
    };
    fn s(v: &str) -> Option<&str> {
        Some(v)
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(records.iter().map(|r| r.seq))),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(
                records
                    .iter()
                    .map(|r| r.ts.timestamp_nanos_opt().unwrap_or(i64::MAX)),
            )
            .with_timezone("UTC"),
        ),
        text(&|r| r.event.kind.map(|k| k.as_str())),
        text(&|r| s(&r.event.event_id)),
        text(&|r| s(&r.event.request_id)),
        text(&|r| s(&r.event.key_id)),
        text(&|r| s(&r.event.role)),
        text(&|r| r.event.department.as_deref()),
        text(&|r| s(&r.event.tier)),
        text(&|r| s(&r.event.client_ip)),
        text(&|r| s(&r.event.user_agent)),
        text(&|r| s(&r.event.method)),
        text(&|r| s(&r.event.path)),
        text(&|r| s(&r.event.action)),
        Arc::new(
            records
                .iter()
                .map(|r| {
                    (!r.event.datasets.is_empty()).then(|| {
                        r.event
                            .datasets
                            .iter()
                            .map(|d| match d.version {
                                Some(v) => format!("{}@{v}", d.name),
                                None => d.name.clone(),
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                })
                .collect::<StringArray>(),
        ),
        text(&|r| r.event.query_text.as_deref()),
        text(&|r| r.event.query_sha256.as_deref()),
        int(&|r| u64::from(r.event.status)),
        text(&|r| r.event.error.as_deref()),
        int(&|r| r.event.rows_returned),
        int(&|r| r.event.bytes_returned),
        int(&|r| r.event.duration_ms),
        Arc::new(
            records
                .iter()
                .map(|r| r.event.cpu_ms.map(|c| i64::try_from(c).unwrap_or(i64::MAX)))
                .collect::<Int64Array>(),
        ),
        text(&|r| r.event.outcome.as_deref()),
        int(&|r| r.event.count),
        text(&|r| s(&r.prev_hash)),
        text(&|r| s(&r.hash)),
        text(&|r| r.event.node_id.as_deref()),
        Arc::new(
            records
                .iter()
                .map(|r| r.event.workers.as_ref().map(|w| w.join(",")))
                .collect::<StringArray>(),
        ),
    ];
    RecordBatch::try_new(events_schema(), cols)
        .map_err(|e| crate::error::AuditError::Invalid(e.to_string()))
}

/// Records from rows of [`events_schema`] (or a projection holding every column): the inverse
/// of [`to_batch`]. A row that cannot be a record (a column missing or of another type, a bad
/// `kind` or `datasets` value) is an error naming its `seq` where known.
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<Record>> {
    let bad = |m: String| crate::error::AuditError::Invalid(m);
    let column = |name: &str| -> Result<&ArrayRef> {
        batch
            .column_by_name(name)
            .ok_or_else(|| bad(format!("the column {name} is missing")))
    };
    let text = |name: &str| -> Result<&StringArray> {
        column(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| bad(format!("the column {name} is not text")))
    };
    let int = |name: &str| -> Result<&Int64Array> {
        column(name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad(format!("the column {name} is not Int64")))
    };
    // Absent from Parquet copies written before records named their gateway.
    let node_id = match batch.column_by_name("node_id") {
        None => None,
        Some(c) => Some(
            c.as_string_opt::<i32>()
                .ok_or_else(|| bad("the column node_id is not text".into()))?,
        ),
    };
    let workers = match batch.column_by_name("workers") {
        None => None,
        Some(c) => Some(
            c.as_string_opt::<i32>()
                .ok_or_else(|| bad("the column workers is not text".into()))?,
        ),
    };
    let seq = column("seq")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| bad("the column seq is not UInt64".into()))?;
    let ts = column("ts")?
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| bad("the column ts is not a nanosecond timestamp".into()))?;
    let names = [
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
    let texts: Vec<&StringArray> = names.iter().map(|n| text(n)).collect::<Result<_>>()?;
    let t = |col: usize, row: usize| -> Option<String> {
        let a = texts[col];
        (!a.is_null(row)).then(|| a.value(row).to_string())
    };
    let ints: Vec<&Int64Array> = [
        "status",
        "rows_returned",
        "bytes_returned",
        "duration_ms",
        "cpu_ms",
        "count",
    ]
    .iter()
    .map(|n| int(n))
    .collect::<Result<_>>()?;
    let u = |col: usize, row: usize| -> Option<u64> {
        let a = ints[col];
        (!a.is_null(row)).then(|| u64::try_from(a.value(row)).unwrap_or(0))
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let s = seq.value(row);
        let at = |m: &str| bad(format!("row of seq {s}: {m}"));
        let kind = match t(0, row).as_deref() {
            None => None,
            Some("request") => Some(Kind::Request),
            Some("begin") => Some(Kind::Begin),
            Some("end") => Some(Kind::End),
            Some("refusals") => Some(Kind::Refusals),
            Some("log") => Some(Kind::Log),
            Some(other) => return Err(at(&format!("unknown kind {other:?}"))),
        };
        let datasets = match t(12, row) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|d| match d.rsplit_once('@') {
                    Some((name, v)) => v
                        .parse::<i64>()
                        .map(|v| DatasetVersion {
                            name: name.to_string(),
                            version: Some(v),
                        })
                        .map_err(|_| at(&format!("bad dataset {d:?}"))),
                    None => Ok(DatasetVersion {
                        name: d.to_string(),
                        version: None,
                    }),
                })
                .collect::<Result<_>>()?,
        };
        let status = u(0, row).unwrap_or(0);
        let event = Event {
            kind,
            event_id: t(1, row).unwrap_or_default(),
            request_id: t(2, row).unwrap_or_default(),
            key_id: t(3, row).unwrap_or_default(),
            role: t(4, row).unwrap_or_default(),
            department: t(5, row),
            tier: t(6, row).unwrap_or_default(),
            client_ip: t(7, row).unwrap_or_default(),
            user_agent: t(8, row).unwrap_or_default(),
            method: t(9, row).unwrap_or_default(),
            path: t(10, row).unwrap_or_default(),
            action: t(11, row).unwrap_or_default(),
            datasets,
            query_text: t(13, row),
            query_sha256: t(14, row),
            status: u16::try_from(status).map_err(|_| at("status out of range"))?,
            error: t(15, row),
            rows_returned: u(1, row).unwrap_or(0),
            bytes_returned: u(2, row).unwrap_or(0),
            duration_ms: u(3, row).unwrap_or(0),
            cpu_ms: u(4, row),
            outcome: t(16, row),
            count: u(5, row).unwrap_or(0),
            workers: workers.and_then(|a| {
                (!a.is_null(row)).then(|| a.value(row).split(',').map(String::from).collect())
            }),
            node_id: node_id.and_then(|a| (!a.is_null(row)).then(|| a.value(row).to_string())),
        };
        out.push(Record {
            seq: s,
            ts: chrono::DateTime::from_timestamp_nanos(ts.value(row)),
            event,
            prev_hash: t(17, row).unwrap_or_default(),
            hash: t(18, row).unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{GENESIS_HASH, encode};

    #[test]
    fn rows_turn_back_into_the_exact_lines() {
        let mut prev = GENESIS_HASH.to_string();
        let mut records = Vec::new();
        let mut lines = Vec::new();
        for i in 0..4u64 {
            let event = Event {
                kind: [Some(Kind::Begin), Some(Kind::End), None, Some(Kind::Log)][i as usize],
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
                cpu_ms: (i == 1).then_some(7),
                outcome: (i == 1).then(|| "completed".into()),
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
