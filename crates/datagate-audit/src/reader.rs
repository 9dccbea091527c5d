//! Reading the log for review: every record, filtered, and as Arrow for SQL over
//! `audit.events`. Sealed segments and the open one are read alike (an unfinished last line of
//! the open segment is not a record yet and is skipped).

use crate::error::Result;
use crate::record::{self, Record};
use crate::segment::{list_segments, split_lines};
use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
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
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
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
    ]))
}

/// Records as one Arrow batch of [`events_schema`].
pub fn to_batch(records: &[Record]) -> Result<RecordBatch> {
    let text = |f: &dyn Fn(&Record) -> Option<String>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<StringArray>())
    };
    let int = |f: &dyn Fn(&Record) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            records
                .iter()
                .map(|r| i64::try_from(f(r)).unwrap_or(i64::MAX)),
        ))
    };
    let s = |v: &str| Some(v.to_string());
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(records.iter().map(|r| r.seq))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                records.iter().map(|r| r.ts.timestamp_micros()),
            )
            .with_timezone("UTC"),
        ),
        text(&|r| r.event.kind.map(|k| k.as_str().to_string())),
        text(&|r| s(&r.event.event_id)),
        text(&|r| s(&r.event.request_id)),
        text(&|r| s(&r.event.key_id)),
        text(&|r| s(&r.event.role)),
        text(&|r| r.event.department.clone()),
        text(&|r| s(&r.event.tier)),
        text(&|r| s(&r.event.client_ip)),
        text(&|r| s(&r.event.user_agent)),
        text(&|r| s(&r.event.method)),
        text(&|r| s(&r.event.path)),
        text(&|r| s(&r.event.action)),
        text(&|r| {
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
        }),
        text(&|r| r.event.query_text.clone()),
        text(&|r| r.event.query_sha256.clone()),
        int(&|r| u64::from(r.event.status)),
        text(&|r| r.event.error.clone()),
        int(&|r| r.event.rows_returned),
        int(&|r| r.event.bytes_returned),
        int(&|r| r.event.duration_ms),
        Arc::new(
            records
                .iter()
                .map(|r| r.event.cpu_ms.map(|c| i64::try_from(c).unwrap_or(i64::MAX)))
                .collect::<Int64Array>(),
        ),
        text(&|r| r.event.outcome.clone()),
        int(&|r| r.event.count),
        text(&|r| s(&r.prev_hash)),
        text(&|r| s(&r.hash)),
    ];
    RecordBatch::try_new(events_schema(), cols)
        .map_err(|e| crate::error::AuditError::Invalid(e.to_string()))
}
