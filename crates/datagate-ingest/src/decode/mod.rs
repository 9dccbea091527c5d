//! Push-based decoding of uploaded bytes into record batches of a dataset's schema.
//!
//! A decoder is fed byte chunks as they arrive ([`PushDecoder::push`]) and hands back the
//! batches completed so far, so memory stays bounded by a batch or two whatever the input size.
//! Every batch that leaves a decoder has exactly the dataset's schema (columns matched by name,
//! values validated and cast), and every error names where it happened: the 1-based line for
//! text formats, the 1-based row for binary ones, and the column.

mod csv;
mod gzip;
mod infer;
mod ipc;
mod ndjson;
mod plain_csv;

pub use csv::{CsvDecoder, CsvOptions};
pub use gzip::GzipDecoder;
pub use infer::{InferringDecoder, TextFormat};
pub use ipc::IpcStreamDecoder;
pub use ndjson::NdjsonDecoder;

use crate::error::{IngestError, Result};
use arrow::array::ArrayRef;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::util::display::FormatOptions;

/// Input a decoder gathers into one batch at most (a batch also ends at `batch_rows` rows, and
/// holds at least one record): rows of a few hundred bytes fill `batch_rows` long before, but
/// rows of 100 KB would make a batch of 800 MB, and a few records of tens of megabytes
/// (gzip-compressed to kilobytes) gigabytes.
pub const BATCH_BYTES: usize = 16 << 20;

/// A decoder fed with chunks of the upload as they arrive.
pub trait PushDecoder: Send {
    /// Feeds the next chunk; returns the batches it completed.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>>;
    /// Ends the input; returns the last batches. An input with no data at all is an error.
    fn finish(&mut self) -> Result<Vec<RecordBatch>>;
}

impl PushDecoder for Box<dyn PushDecoder> {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        (**self).push(chunk)
    }
    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        (**self).finish()
    }
}

/// The dataset's schema extended by the columns of `source` it does not have (for a `replace`
/// that adds columns); new columns get their storable type and are nullable.
pub fn extend_schema(target: &SchemaRef, source: &arrow::datatypes::Schema) -> Result<SchemaRef> {
    let storable = storable_schema(source)?;
    let mut fields: Vec<arrow::datatypes::Field> =
        target.fields().iter().map(|f| f.as_ref().clone()).collect();
    for f in storable.fields() {
        if target.field_with_name(f.name()).is_err() {
            fields.push(f.as_ref().clone());
        }
    }
    Ok(std::sync::Arc::new(arrow::datatypes::Schema::new(fields)))
}

/// Brings a batch of a self-describing format (Parquet, Arrow) to the dataset's schema:
/// columns by name, extra columns refused, missing ones refused, values cast without loss.
/// `first_row` is the 1-based number of the batch's first row in the upload.
pub fn conform(batch: &RecordBatch, target: &SchemaRef, first_row: u64) -> Result<RecordBatch> {
    let source = batch.schema();
    for f in source.fields() {
        if target.field_with_name(f.name()).is_err() {
            return Err(IngestError::InvalidData {
                message: format!("column {:?} is not a column of the dataset", f.name()),
                line: None,
                row: None,
                column: Some(f.name().clone()),
            });
        }
    }
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for f in target.fields() {
        let Ok(i) = source.index_of(f.name()) else {
            return Err(IngestError::InvalidData {
                message: format!("the upload misses the dataset column {:?}", f.name()),
                line: None,
                row: None,
                column: Some(f.name().clone()),
            });
        };
        let col = batch.column(i);
        if col.data_type() == f.data_type() {
            columns.push(col.clone());
            continue;
        }
        match cast_with_options(col, f.data_type(), &options) {
            Ok(c) => columns.push(c),
            Err(e) => {
                // Find the first row that does not cast, to name it.
                let bad = (0..col.len()).find(|r| {
                    cast_with_options(&col.slice(*r, 1), f.data_type(), &options).is_err()
                });
                let row = bad.map(|r| first_row + r as u64);
                let value = bad
                    .and_then(|r| {
                        arrow::util::display::ArrayFormatter::try_new(
                            col.as_ref(),
                            &FormatOptions::default(),
                        )
                        .ok()
                        .map(|fmt| fmt.value(r).to_string())
                    })
                    .unwrap_or_default();
                let where_ = row.map(|r| format!("row {r}: ")).unwrap_or_default();
                return Err(IngestError::InvalidData {
                    message: format!(
                        "{where_}column {:?}: value {value:?} ({}) is not a valid {}: {e}",
                        f.name(),
                        col.data_type(),
                        datagate_core::ColumnType::from_arrow(f.data_type())
                            .map(|t| t.to_string())
                            .unwrap_or_else(|_| f.data_type().to_string())
                    ),
                    line: None,
                    row,
                    column: Some(f.name().clone()),
                });
            }
        }
    }
    for (f, column) in target.fields().iter().zip(&columns) {
        if let Some(r) = oversized_value(column.as_ref()) {
            return Err(IngestError::InvalidData {
                message: format!(
                    "row {}: column {:?}: a value is larger than {} MiB",
                    first_row + r as u64,
                    f.name(),
                    MAX_VALUE_BYTES >> 20
                ),
                line: None,
                row: Some(first_row + r as u64),
                column: Some(f.name().clone()),
            });
        }
    }
    RecordBatch::try_new(target.clone(), columns)
        .map_err(|e| IngestError::invalid_data(format!("cannot use the batch: {e}")))
}

/// The largest text or binary value a self-describing upload (Parquet, Arrow) may hold, as
/// CSV records and NDJSON lines are bounded: the Parquet writer holds a value several times
/// over (page, dictionary, statistics), and a 1 GiB value (from a 33 KB Parquet file) took
/// 5.4 GB of memory.
const MAX_VALUE_BYTES: usize = 64 << 20;

/// The row of the first value of `a` over [`MAX_VALUE_BYTES`], for text and binary columns.
fn oversized_value(a: &dyn arrow::array::Array) -> Option<usize> {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    fn first_over<O: arrow::array::OffsetSizeTrait>(offsets: &[O]) -> Option<usize> {
        offsets
            .windows(2)
            .position(|w| (w[1] - w[0]).as_usize() > MAX_VALUE_BYTES)
    }
    match a.data_type() {
        DataType::Utf8 => first_over(a.as_string::<i32>().value_offsets()),
        DataType::LargeUtf8 => first_over(a.as_string::<i64>().value_offsets()),
        DataType::Binary => first_over(a.as_binary::<i32>().value_offsets()),
        DataType::LargeBinary => first_over(a.as_binary::<i64>().value_offsets()),
        DataType::Utf8View => a
            .as_string_view()
            .views()
            .iter()
            .position(|v| *v as u32 as usize > MAX_VALUE_BYTES),
        _ => None,
    }
}

/// The schema datagate stores for a self-describing upload: each column mapped to its
/// [`datagate_core::ColumnType`] (e.g. `LargeUtf8` → `utf8`), all nullable.
pub fn storable_schema(source: &arrow::datatypes::Schema) -> Result<SchemaRef> {
    let mut fields = Vec::with_capacity(source.fields().len());
    for f in source.fields() {
        let t = datagate_core::ColumnType::from_arrow(f.data_type()).map_err(|e| {
            IngestError::InvalidData {
                message: format!("column {:?}: {e}", f.name()),
                line: None,
                row: None,
                column: Some(f.name().clone()),
            }
        })?;
        fields.push(arrow::datatypes::Field::new(f.name(), t.to_arrow(), true));
    }
    if fields.is_empty() {
        return Err(IngestError::invalid_data("the upload has no columns"));
    }
    Ok(std::sync::Arc::new(arrow::datatypes::Schema::new(fields)))
}
