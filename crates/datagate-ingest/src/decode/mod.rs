//! Push-based decoding of uploaded bytes into record batches of a dataset's schema.
//!
//! A decoder is fed byte chunks as they arrive ([`PushDecoder::push`]) and hands back the
//! batches completed so far, so memory stays bounded by a batch or two whatever the input size.
//! Every batch that leaves a decoder has exactly the dataset's schema (columns matched by name,
//! values validated and cast), and every error names where it happened: the 1-based line for
//! text formats, the 1-based row for binary ones, and the column. Text values whose reading is
//! the product's own rule — decimals rounded to their scale, whole integers, dates and times in
//! spreadsheet shapes, booleans in the words forms use — are read as text and converted by
//! `text_columns.rs` (with `numbers.rs` and `dates.rs`), in every text format and for text columns
//! of Parquet and Arrow uploads alike.

mod charset;
mod csv;
mod dates;
pub(crate) mod gzip;
mod infer;
mod ipc;
mod ndjson;
mod numbers;
pub mod parquet_pages;
mod plain_csv;
mod text_columns;

pub use charset::{SkipUtf8Bom, Transcoder, charset_of, encoding, not_utf8};
pub use csv::{CsvDecoder, CsvOptions};
pub use gzip::GzipDecoder;
pub use infer::{InferringDecoder, TextFormat};
pub use ipc::IpcStreamDecoder;
pub use ndjson::NdjsonDecoder;

use crate::error::{IngestError, Result};
use arrow::array::{ArrayRef, AsArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, SchemaRef};
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
    /// Batches decoded but held back by the last `push` or `finish`, a few at a time: a small
    /// message can decode to gigabytes (a dictionary of one long value, referenced by every
    /// row), so such output comes in pieces. Called until it returns none.
    fn held(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }
    /// The line of the input on which record `record` (0-based, of the data, after any header)
    /// begins, for a record among those the last `push` or `finish` handed out; `None` when the
    /// decoder does not know it.
    fn line_of_record(&self, _record: u64) -> Option<u64> {
        None
    }
}

impl PushDecoder for Box<dyn PushDecoder> {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        (**self).push(chunk)
    }
    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        (**self).finish()
    }
    fn held(&mut self) -> Result<Vec<RecordBatch>> {
        (**self).held()
    }
    fn line_of_record(&self, record: u64) -> Option<u64> {
        (**self).line_of_record(record)
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
    check_column_names(source.fields().iter().map(|f| f.name().as_str()))?;
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
        let mut col = batch.column(i).clone();
        // A dictionary decodes to its values first (arrow casts a dictionary only to them).
        if let arrow::datatypes::DataType::Dictionary(_, values) = col.data_type() {
            col = cast_with_options(&col, values, &options)
                .map_err(|e| IngestError::invalid_data(format!("column {:?}: {e}", f.name())))?;
        }
        col = in_utc(col);
        if datagate_core::types::is_nested_value(col.data_type())
            && *f.data_type() == DataType::Utf8
        {
            col = datagate_core::types::nested_as_json_text(&source.fields()[i], &col)
                .map_err(|e| IngestError::invalid_data(format!("column {:?}: {e}", f.name())))?;
        }
        let col = &col;
        if col.data_type() == f.data_type() {
            columns.push(col.clone());
            continue;
        }
        if matches!(
            col.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) && text_columns::converts(f.data_type())
        {
            // Numbers, dates and times written as text read as in a CSV or NDJSON upload
            // (decimals rounded, spreadsheet dates taken), not as arrow's cast reads them.
            let text = cast_with_options(col, &DataType::Utf8, &options)
                .map_err(|e| IngestError::invalid_data(format!("column {:?}: {e}", f.name())))?;
            if let Some(converted) = text_columns::convert(text.as_string::<i32>(), f.data_type()) {
                columns.push(converted.map_err(|(r, m)| {
                    let row = first_row + r as u64;
                    IngestError::InvalidData {
                        message: format!("row {row}: column {:?}: {m}", f.name()),
                        line: None,
                        row: Some(row),
                        column: Some(f.name().clone()),
                    }
                })?);
                continue;
            }
        }
        if let DataType::Timestamp(unit, None) = f.data_type()
            && let Some(rounded) = dates::rounded_to_unit(col, *unit)
        {
            // arrow's cast cuts a finer unit: rounded as text is.
            columns.push(rounded);
            continue;
        }
        if *f.data_type() == DataType::Date32
            && let Some(r) = first_time_of_day(col.as_ref())
        {
            // arrow's cast cuts a `date64` that is not a whole day (which Arrow's format
            // forbids, but a writer may hold) to its day.
            return Err(not_valid(
                f,
                col,
                first_row,
                Some(r),
                "it has a time of day",
            ));
        }
        if f.data_type().is_integer()
            && let Some(r) = first_fraction(col.as_ref())
        {
            // arrow's cast cuts 3.7 to 3: a value that is not whole is no integer of the column.
            return Err(not_valid(f, col, first_row, Some(r), "it has a fraction"));
        }
        match cast_with_options(col, f.data_type(), &options) {
            Ok(c) => columns.push(c),
            Err(e) => {
                // Find the first row that does not cast, to name it.
                let bad = (0..col.len()).find(|r| {
                    cast_with_options(&col.slice(*r, 1), f.data_type(), &options).is_err()
                });
                return Err(not_valid(f, col, first_row, bad, &e.to_string()));
            }
        }
    }
    for (f, column) in target.fields().iter().zip(&columns) {
        // A date or time beyond the calendar (a Parquet `timestamp(s)` of 1e14, year 3170843)
        // is most likely a count of a smaller unit (milliseconds read as seconds): refused as
        // a data error rather than stored as a date no one meant.
        if let Some((r, count)) = datagate_core::types::first_unshowable(column) {
            let row = first_row + r as u64;
            let ty = datagate_core::types::type_name(f.data_type());
            return Err(IngestError::InvalidData {
                message: format!(
                    "row {row}: column {:?}: {count} from the epoch is no {ty} of the \
                     calendar's years -262143 to 262142 (a count of a smaller unit?)",
                    f.name()
                ),
                line: None,
                row: Some(row),
                column: Some(f.name().clone()),
            });
        }
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

/// Batches of a self-describing format waiting to be [`conform`]ed, in pieces of about
/// [`BATCH_BYTES`] once their dictionary-encoded columns are decoded: a dictionary of one
/// 40 MiB value referenced by 60 rows is 2.4 GB decoded, from a 40 KB gzip Arrow stream. A
/// batch without dictionaries is one piece.
#[derive(Default)]
pub struct Pieces {
    queue: std::collections::VecDeque<Queued>,
}

/// A batch waiting in [`Pieces`]: its target schema, the upload row of its first row, and
/// its pieces (`(offset, rows)`, the next one last).
struct Queued {
    batch: RecordBatch,
    target: SchemaRef,
    first_row: u64,
    cuts: Vec<(usize, usize)>,
}

impl Pieces {
    /// Queues `batch`, to be conformed to `target`; its first row is row `first_row`.
    pub fn push(&mut self, batch: RecordBatch, target: SchemaRef, first_row: u64) {
        self.push_cut(batch, target, first_row, BATCH_BYTES);
    }

    fn push_cut(&mut self, batch: RecordBatch, target: SchemaRef, first_row: u64, limit: usize) {
        let mut cuts = pieces(&batch, limit);
        cuts.reverse();
        self.queue.push_back(Queued {
            batch,
            target,
            first_row,
            cuts,
        });
    }

    /// The next piece, conformed.
    pub fn next_piece(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            let q = self.queue.front_mut()?;
            match q.cuts.pop() {
                Some((offset, len)) => {
                    let row = q.first_row + offset as u64;
                    return Some(conform(&q.batch.slice(offset, len), &q.target, row));
                }
                None => {
                    self.queue.pop_front();
                }
            }
        }
    }
}

/// `(offset, rows)` of consecutive pieces of `batch` that take about `limit` bytes each once
/// decoded (one row at least): dictionary-encoded columns are counted by the value each row
/// refers to, other columns by their average row.
fn pieces(batch: &RecordBatch, limit: usize) -> Vec<(usize, usize)> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    let rows = batch.num_rows();
    let dictionaries: Vec<_> = batch
        .columns()
        .iter()
        .filter_map(|c| c.as_any_dictionary_opt())
        .collect();
    if dictionaries.is_empty() || rows == 0 {
        return vec![(0, rows)];
    }
    let others: usize = batch
        .columns()
        .iter()
        .filter(|c| !matches!(c.data_type(), DataType::Dictionary(..)))
        .map(|c| c.get_array_memory_size())
        .sum();
    let mut sizes = vec![(others / rows) as u64; rows];
    for d in dictionaries {
        let values = d.values();
        // No values: every key is null (a column of nulls), and there is nothing to count
        // (`normalized_keys` asserts values exist).
        if values.is_empty() {
            continue;
        }
        let value_size: Vec<u64> = match values.data_type() {
            DataType::Utf8 => lengths(values.as_string::<i32>().value_offsets()),
            DataType::LargeUtf8 => lengths(values.as_string::<i64>().value_offsets()),
            DataType::Binary => lengths(values.as_binary::<i32>().value_offsets()),
            DataType::LargeBinary => lengths(values.as_binary::<i64>().value_offsets()),
            _ => vec![(values.get_array_memory_size() / values.len().max(1)) as u64; values.len()],
        };
        let keys = d.keys();
        for (r, key) in d.normalized_keys().into_iter().enumerate() {
            if keys.is_valid(r) {
                sizes[r] += value_size.get(key).copied().unwrap_or(0);
            }
        }
    }
    let mut out = Vec::new();
    let (mut start, mut held) = (0, 0u64);
    for (r, size) in sizes.into_iter().enumerate() {
        if r > start && held + size > limit as u64 {
            out.push((start, r - start));
            (start, held) = (r, 0);
        }
        held += size;
    }
    out.push((start, rows - start));
    out
}

fn lengths<O: arrow::array::OffsetSizeTrait>(offsets: &[O]) -> Vec<u64> {
    offsets
        .windows(2)
        .map(|w| (w[1] - w[0]).as_usize() as u64)
        .collect()
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
    check_column_names(source.fields().iter().map(|f| f.name().as_str()))?;
    let mut fields = Vec::with_capacity(source.fields().len());
    for f in source.fields() {
        // A dictionary-encoded column (a pandas categorical) is stored as its values' type, a
        // time with a zone as the UTC time ([`in_utc`]). Types datagate has no column of but
        // holds without loss: a column of no type (pyarrow's for a pandas column of `None`s)
        // is text, as an empty CSV column is inferred; a half-precision float a `float32`; a
        // `date64` (days as milliseconds) a `date32`; a time of day text (`08:30:00`), as in a
        // CSV upload; a list, struct or map its JSON text, as an NDJSON upload's.
        let stored;
        let data_type = match f.data_type() {
            DataType::Dictionary(_, values) => values.as_ref(),
            DataType::Timestamp(unit, Some(_)) => {
                stored = DataType::Timestamp(*unit, None);
                &stored
            }
            DataType::Null | DataType::Time32(_) | DataType::Time64(_) => &DataType::Utf8,
            // A list, struct or map: its JSON text, as an NDJSON array or object is stored.
            nested if datagate_core::types::is_nested_value(nested) => &DataType::Utf8,
            DataType::Float16 => &DataType::Float32,
            DataType::Date64 => &DataType::Date32,
            other => other,
        };
        let t = datagate_core::ColumnType::from_arrow(data_type).map_err(|e| {
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

/// A timestamp column with a time zone (pandas' tz-aware datetimes) as the same instants in
/// UTC without a zone: what a dataset's `timestamp` holds, and what a CSV time with an offset
/// (`2024-01-01T10:00:00+08:00`) is stored as. Arrow keeps such values in UTC already; only
/// the zone is dropped (a cast to no zone would give wall-clock times in that zone instead).
fn in_utc(col: ArrayRef) -> ArrayRef {
    use arrow::datatypes::{
        ArrowTimestampType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
        TimestampNanosecondType, TimestampSecondType,
    };
    fn zone_dropped<T: ArrowTimestampType>(col: &ArrayRef) -> ArrayRef {
        let none: Option<std::sync::Arc<str>> = None;
        std::sync::Arc::new(col.as_primitive::<T>().clone().with_timezone_opt(none))
    }
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Second, Some(_)) => zone_dropped::<TimestampSecondType>(&col),
        DataType::Timestamp(TimeUnit::Millisecond, Some(_)) => {
            zone_dropped::<TimestampMillisecondType>(&col)
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            zone_dropped::<TimestampMicrosecondType>(&col)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, Some(_)) => {
            zone_dropped::<TimestampNanosecondType>(&col)
        }
        _ => col,
    }
}

/// The error for a value of `col` (its row `r` in a batch whose first row is `first_row`) that
/// is not a value of the field `f`, `why`.
fn not_valid(
    f: &arrow::datatypes::Field,
    col: &ArrayRef,
    first_row: u64,
    r: Option<usize>,
    why: &str,
) -> IngestError {
    let row = r.map(|r| first_row + r as u64);
    let value = r
        .and_then(|r| {
            arrow::util::display::ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
                .ok()
                .map(|fmt| fmt.value(r).to_string())
        })
        .unwrap_or_default();
    let where_ = row.map(|r| format!("row {r}: ")).unwrap_or_default();
    IngestError::InvalidData {
        message: format!(
            "{where_}column {:?}: value {value:?} ({}) is not a valid {}: {why}",
            f.name(),
            col.data_type(),
            datagate_core::types::type_name(f.data_type())
        ),
        line: None,
        row,
        column: Some(f.name().clone()),
    }
}

/// The first row of a `date64` column whose value is not a whole day, or `None` (other types,
/// or every value a whole day).
fn first_time_of_day(col: &dyn arrow::array::Array) -> Option<usize> {
    use arrow::array::Array;
    if *col.data_type() != DataType::Date64 {
        return None;
    }
    let a = col.as_primitive::<arrow::datatypes::Date64Type>();
    (0..a.len()).find(|&i| a.is_valid(i) && a.value(i).rem_euclid(86_400_000) != 0)
}

/// The first row of a float or decimal column whose value is not whole (NaN and infinities
/// included), or `None` (other types, or every value whole).
fn first_fraction(col: &dyn arrow::array::Array) -> Option<usize> {
    use arrow::array::Array;
    use arrow::datatypes::{Float16Type, Float32Type, Float64Type};
    fn first<T: arrow::array::ArrowPrimitiveType>(
        col: &dyn arrow::array::Array,
        whole: impl Fn(T::Native) -> bool,
    ) -> Option<usize> {
        let a = col.as_primitive::<T>();
        (0..a.len()).find(|&i| a.is_valid(i) && !whole(a.value(i)))
    }
    match col.data_type() {
        DataType::Float16 => first::<Float16Type>(col, |v| f32::from(v).fract() == 0.0),
        DataType::Float32 => first::<Float32Type>(col, |v| v.fract() == 0.0),
        DataType::Float64 => first::<Float64Type>(col, |v| v.fract() == 0.0),
        DataType::Decimal128(_, s) if *s > 0 => {
            let unit = 10i128.checked_pow(u32::from(s.unsigned_abs()))?;
            first::<arrow::datatypes::Decimal128Type>(col, |v| v % unit == 0)
        }
        DataType::Decimal256(_, s) if *s > 0 => {
            let unit =
                arrow::datatypes::i256::from_i128(10).checked_pow(u32::from(s.unsigned_abs()))?;
            first::<arrow::datatypes::Decimal256Type>(col, |v| {
                v.checked_rem(unit) == Some(arrow::datatypes::i256::ZERO)
            })
        }
        _ => None,
    }
}

/// The message of `e`, an invalid-data error naming `line` and `column` (tests).
#[cfg(test)]
pub(crate) fn invalid_at(e: IngestError, line: Option<u64>, column: Option<&str>) -> String {
    match e {
        IngestError::InvalidData {
            line: l,
            column: c,
            message,
            ..
        } => {
            assert_eq!((l, c.as_deref()), (line, column), "{message}");
            message
        }
        other => panic!("not invalid data: {other:?}"),
    }
}

/// Why column `i` (0-based) of `count` has no name; the last one, most likely a delimiter
/// closing every line (what a spreadsheet writes for a formatted empty column), says so.
pub(crate) fn unnamed(i: usize, count: usize) -> String {
    let mut message = format!("column {} has no name", i + 1);
    if i > 0 && i + 1 == count {
        message.push_str(
            " (the header ends with a delimiter: remove it from the end of every line, or name \
             the column)",
        );
    }
    message
}

/// Refuses the column names an upload cannot give a dataset: one no column may have
/// ([`datagate_core::column_name_problem`]: empty, too long, a control character), and one name
/// twice (a dataset has one column per name; Parquet and Arrow files may hold either).
pub(crate) fn check_column_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let names: Vec<&str> = names.into_iter().collect();
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.iter().copied().enumerate() {
        if name.trim().is_empty() {
            return Err(IngestError::InvalidData {
                message: unnamed(i, names.len()),
                line: None,
                row: None,
                column: None,
            });
        }
        if let Some(problem) = datagate_core::column_name_problem(name) {
            return Err(IngestError::InvalidData {
                message: problem,
                line: None,
                row: None,
                column: None,
            });
        }
        if !seen.insert(name) {
            return Err(IngestError::InvalidData {
                message: format!("column {name:?} appears twice"),
                line: None,
                row: None,
                column: Some(name.to_string()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, DictionaryArray, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn dictionary_batch(keys: Vec<Option<i32>>, values: Vec<String>) -> RecordBatch {
        let ids = Int64Array::from_iter_values(0..keys.len() as i64);
        let dict =
            DictionaryArray::new(Int32Array::from(keys), Arc::new(StringArray::from(values)));
        RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as ArrayRef),
            ("note", Arc::new(dict) as ArrayRef),
        ])
        .unwrap()
    }

    /// Rows are counted by the value they refer to: long values make short pieces, short ones
    /// (and nulls) none, and a batch without dictionaries stays whole.
    #[test]
    fn pieces_follow_the_decoded_size() {
        let long = "x".repeat(1000);
        let keys = vec![
            Some(0),
            Some(1),
            Some(0),
            None,
            Some(0),
            Some(1),
            Some(1),
            Some(0),
        ];
        let batch = dictionary_batch(keys, vec![long, "y".into()]);
        // Rows 0, 2, 4 and 7 refer to 1,000 bytes, the others to one or none (and each takes
        // its share of the ids, a few bytes): under 2,100 bytes, two long rows a piece.
        assert_eq!(pieces(&batch, 2100), vec![(0, 4), (4, 4)]);
        assert_eq!(pieces(&batch, 1500), vec![(0, 2), (2, 2), (4, 3), (7, 1)]);
        // A row over the limit is a piece of its own.
        assert_eq!(pieces(&batch, 10).len(), 8);
        let plain = RecordBatch::try_from_iter([(
            "note",
            Arc::new(StringArray::from(vec!["a".repeat(5000); 10])) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(pieces(&plain, 10), vec![(0, 10)]);
        // A column of nulls has a dictionary of no values: nothing to count, no panic.
        let nulls = dictionary_batch(vec![None; 3], Vec::new());
        assert_eq!(pieces(&nulls, 1000), vec![(0, 3)]);
    }

    /// Types with no column of their own that a column holds without loss: what pyarrow writes
    /// for a pandas column of `None`s (no type), `datetime.time` values, a half float, a
    /// `date64`; each stored as its column type says, a `date64` that is no whole day refused.
    #[test]
    fn types_without_a_column_of_their_own_are_held_without_loss() {
        use arrow::array::{Date64Array, Float32Array, NullArray, Time64MicrosecondArray};
        use arrow::datatypes::TimeUnit;
        let half = |v: Vec<Option<f32>>| -> ArrayRef {
            arrow::compute::cast(&Float32Array::from(v), &DataType::Float16).unwrap()
        };
        let batch = RecordBatch::try_from_iter([
            ("none", Arc::new(NullArray::new(2)) as ArrayRef),
            (
                "opens",
                Arc::new(Time64MicrosecondArray::from(vec![
                    Some(8 * 3_600_000_000 + 30 * 60_000_000),
                    None,
                ])) as ArrayRef,
            ),
            ("half", half(vec![Some(1.5), None])),
            (
                "day",
                Arc::new(Date64Array::from(vec![Some(86_400_000 * 19_723), None])),
            ),
        ])
        .unwrap();
        let target = storable_schema(&batch.schema()).unwrap();
        let types: Vec<String> = target
            .fields()
            .iter()
            .map(|f| datagate_core::types::type_name(f.data_type()))
            .collect();
        assert_eq!(types, ["utf8", "utf8", "float32", "date32"]);
        let got = conform(&batch, &target, 1).unwrap();
        assert_eq!(got.column(0).null_count(), 2);
        assert_eq!(got.column(1).as_string::<i32>().value(0), "08:30:00");
        assert!(got.column(1).is_null(1));
        let float = got
            .column(2)
            .as_primitive::<arrow::datatypes::Float32Type>();
        assert_eq!((float.value(0), float.is_null(1)), (1.5, true));
        let day = got.column(3).as_primitive::<arrow::datatypes::Date32Type>();
        assert_eq!((day.value(0), day.is_null(1)), (19_723, true));
        // A `date64` with a time of day is no date: refused, not cut to its day.
        let hour = RecordBatch::try_from_iter([
            ("none", Arc::new(NullArray::new(1)) as ArrayRef),
            ("opens", Arc::new(Time64MicrosecondArray::from(vec![0]))),
            ("half", half(vec![Some(1.0)])),
            (
                "day",
                Arc::new(Date64Array::from(vec![86_400_000 + 3_600_000])),
            ),
        ])
        .unwrap();
        match conform(&hour, &target, 7).unwrap_err() {
            IngestError::InvalidData {
                row,
                column,
                message,
                ..
            } => {
                assert_eq!((row, column.as_deref()), (Some(7), Some("day")));
                assert!(message.contains("it has a time of day"), "{message}");
            }
            other => panic!("{other}"),
        }
        // Types that are not held without loss stay refused.
        for dt in [
            DataType::Binary,
            DataType::Duration(TimeUnit::Second),
            DataType::Decimal256(40, 2),
        ] {
            let s = Schema::new(vec![Field::new("x", dt.clone(), true)]);
            assert!(storable_schema(&s).is_err(), "{dt}");
        }
    }

    /// A float or decimal into an integer column is taken when whole and refused, naming its
    /// row, when not (arrow's cast cuts 3.7 to 3).
    #[test]
    fn fractions_are_no_integers() {
        use arrow::array::{Decimal128Array, Float64Array};
        let target = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let one = |col: ArrayRef| RecordBatch::try_from_iter([("n", col)]).unwrap();
        let whole = one(Arc::new(Float64Array::from(vec![
            Some(2.0),
            None,
            Some(-3.0),
        ])));
        let got = conform(&whole, &target, 1).unwrap();
        let got: Vec<Option<i64>> = got
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .collect();
        assert_eq!(got, [Some(2), None, Some(-3)]);
        let decimal = |v: Vec<i128>| {
            one(Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(5, 1)
                    .unwrap(),
            ))
        };
        assert!(conform(&decimal(vec![40, -20]), &target, 1).is_ok());
        for (batch, row) in [
            (one(Arc::new(Float64Array::from(vec![2.0, 3.7]))), 11),
            (one(Arc::new(Float64Array::from(vec![f64::NAN]))), 10),
            (decimal(vec![40, 45]), 11),
        ] {
            match conform(&batch, &target, 10).unwrap_err() {
                IngestError::InvalidData {
                    row: r,
                    column,
                    message,
                    ..
                } => {
                    assert_eq!(r, Some(row), "{message}");
                    assert_eq!(column.as_deref(), Some("n"));
                    assert!(message.contains("it has a fraction"), "{message}");
                }
                e => panic!("{e:?}"),
            }
        }
    }

    /// A dictionary-encoded column is stored as its values' type, conformed piece by piece
    /// with its rows numbered across pieces.
    #[test]
    fn dictionary_columns_conform_to_their_values_type() {
        let batch = dictionary_batch(
            vec![Some(0), Some(1), None, Some(0)],
            vec!["bus".into(), "metro".into()],
        );
        let target = storable_schema(&batch.schema()).unwrap();
        assert_eq!(
            target.field_with_name("note").unwrap().data_type(),
            &DataType::Utf8
        );
        let mut queue = Pieces::default();
        queue.push(batch, target, 1);
        let out: Vec<RecordBatch> = std::iter::from_fn(|| queue.next_piece())
            .collect::<Result<_>>()
            .unwrap();
        let notes: Vec<Option<String>> = out
            .iter()
            .flat_map(|b| {
                let a = b.column(1).as_string::<i32>();
                (0..a.len())
                    .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            notes,
            vec![
                Some("bus".into()),
                Some("metro".into()),
                None,
                Some("bus".into())
            ]
        );
        // A value that does not fit the dataset's type names its row across pieces.
        let target = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("note", DataType::Int64, true),
        ]));
        let batch = dictionary_batch(
            vec![Some(0), Some(0), Some(0), Some(1)],
            vec!["12".into(), "not a number".into()],
        );
        let mut queue = Pieces::default();
        queue.push_cut(batch, target, 11, 1);
        let failed = std::iter::from_fn(|| queue.next_piece()).find_map(|r| r.err());
        match failed.expect("row 14 does not cast") {
            IngestError::InvalidData { row, .. } => assert_eq!(row, Some(14)),
            e => panic!("{e:?}"),
        }
    }
}
