//! Schema inference for the first upload of a dataset that declared no columns.
//!
//! The leading rows are buffered (at most [`INFER_ROWS`] lines or [`INFER_BYTES`]), a schema is
//! inferred from them with arrow's inference, mapped onto datagate's column types, and the
//! buffered bytes are replayed into the real decoder. The schema is then fixed by the commit.
//!
//! The same path serves a `replace` that adds columns: with a `base` schema, columns of the
//! base keep their types (and must all be present), and only the new columns are inferred.

use super::{CsvDecoder, CsvOptions, NdjsonDecoder, PushDecoder};
use crate::error::{IngestError, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datagate_core::ColumnType;
use std::sync::Arc;

pub const INFER_ROWS: usize = 1000;
pub const INFER_BYTES: usize = 4 << 20;

/// Text formats whose schema can be inferred.
#[derive(Debug, Clone, Copy)]
pub enum TextFormat {
    Csv(CsvOptions),
    Ndjson { batch_rows: usize },
}

/// Buffers the head of the input, infers the schema, then decodes with it.
pub struct InferringDecoder {
    format: TextFormat,
    /// Columns whose types are already fixed; the inferred schema extends them.
    base: Option<SchemaRef>,
    head: Vec<u8>,
    /// Line ends (`\n`) in `head`.
    lines: usize,
    inner: Option<Box<dyn PushDecoder>>,
    /// Once the schema is inferred: what reading the inferred columns needs beyond `inner`.
    inferred: Option<Inferred>,
}

/// The columns whose types were inferred from the leading rows, which the rows after them must
/// fit as strictly: a value that does not is refused with a hint to declare the column, never
/// read as something else.
struct Inferred {
    /// The dataset's schema as inferred (extending the base's).
    schema: SchemaRef,
    /// Names and types of the inferred columns (not the base's), for the hint.
    types: Vec<(String, DataType)>,
    /// CSV integer columns, which the decoder reads as text: a later code (`0571`) would lose
    /// its zero in an integer, so it is refused here (one among the leading rows makes the
    /// column text).
    integers: Vec<usize>,
    /// Records handed out so far, for the line of a refused value.
    records: u64,
}

impl Inferred {
    /// `batches` of the decoder with the integer columns converted, in the inferred schema.
    fn read(
        &mut self,
        batches: Vec<RecordBatch>,
        decoder: &dyn PushDecoder,
    ) -> Result<Vec<RecordBatch>> {
        batches
            .into_iter()
            .map(|batch| {
                let before = self.records;
                self.records += batch.num_rows() as u64;
                if self.integers.is_empty() {
                    return Ok(batch);
                }
                let mut columns = batch.columns().to_vec();
                for &i in &self.integers {
                    let text = columns[i].as_string::<i32>();
                    columns[i] = integers_not_codes(text).map_err(|(row, message)| {
                        let name = self.schema.field(i).name();
                        let record = before + row as u64;
                        // After the header, line 1.
                        let line = decoder.line_of_record(record).unwrap_or(record + 2);
                        IngestError::InvalidData {
                            message: format!("line {line}: column {name:?}: {message}"),
                            line: Some(line),
                            row: None,
                            column: Some(name.clone()),
                        }
                    })?;
                }
                RecordBatch::try_new(self.schema.clone(), columns)
                    .map_err(|e| IngestError::Internal(e.to_string()))
            })
            .collect::<Result<_>>()
            .map_err(|e| self.hint(e))
    }

    /// `e` with a hint when it names an inferred column: its type came from the leading rows.
    fn hint(&self, e: IngestError) -> IngestError {
        match e {
            IngestError::InvalidData {
                message,
                line,
                row,
                column: Some(column),
            } => {
                let message = match self.types.iter().find(|(name, _)| *name == column) {
                    Some((_, ty)) => format!(
                        "{message} (the column's type, {}, was inferred from the leading rows, at \
                         most {INFER_ROWS}: declare the dataset's columns to choose another)",
                        datagate_core::types::type_name(ty)
                    ),
                    None => message,
                };
                IngestError::InvalidData {
                    message,
                    line,
                    row,
                    column: Some(column),
                }
            }
            e => e,
        }
    }
}

/// `text` as `int64`, refusing a code (an integer written with a leading zero) as well as
/// anything [`integers`](super::numbers::integers) refuses, whichever comes first.
fn integers_not_codes(
    text: &arrow::array::StringArray,
) -> std::result::Result<arrow::array::ArrayRef, (usize, String)> {
    // A look at each value's first bytes; only one starting with a zero is read whole.
    let (offsets, bytes) = (text.value_offsets(), text.value_data());
    let code = (0..text.len()).find(|&row| {
        let value = &bytes[offsets[row] as usize..offsets[row + 1] as usize];
        let digits = match value.first() {
            Some(b'-' | b'+') => &value[1..],
            _ => value,
        };
        digits.len() > 1 && digits[0] == b'0' && text.is_valid(row) && is_code(text.value(row))
    });
    // arrow's parser (what arrow-csv reads a declared `int64` with) first, it is the faster;
    // the text that it refuses, ours, which names the row and reads `1.0` as NDJSON does.
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let parsed = arrow::compute::cast_with_options(text, &DataType::Int64, &options)
        .or_else(|_| super::numbers::integers::<arrow::datatypes::Int64Type>(text));
    match (parsed, code) {
        (Err((row, message)), code) if code.is_none_or(|c| row < c) => Err((row, message)),
        (_, Some(row)) => Err((
            row,
            format!(
                "value {:?} is written with a leading zero, a code whose zeros an int64 column \
                 would drop",
                text.value(row)
            ),
        )),
        (ok, None) => ok,
    }
}

impl InferringDecoder {
    pub fn new(format: TextFormat) -> Self {
        Self::extending(format, None)
    }

    /// Infers only the columns that `base` does not have; base columns keep their types.
    pub fn extending(format: TextFormat, base: Option<SchemaRef>) -> Self {
        Self {
            format,
            base,
            head: Vec::new(),
            lines: 0,
            inner: None,
            inferred: None,
        }
    }

    /// Infers the schema from the first `whole` bytes of the head (its whole records), then
    /// decodes the head with it.
    fn start(&mut self, whole: usize) -> Result<Vec<RecordBatch>> {
        let inferred = infer(&self.format, &self.head[..whole])?;
        let schema = match &self.base {
            None => inferred,
            Some(base) => {
                // Base columns first, in their order and types; then the new ones, as inferred.
                let mut fields: Vec<Field> =
                    base.fields().iter().map(|f| f.as_ref().clone()).collect();
                for f in inferred.fields() {
                    if base.field_with_name(f.name()).is_err() {
                        fields.push(f.as_ref().clone());
                    }
                }
                Arc::new(Schema::new(fields))
            }
        };
        let types: Vec<(String, DataType)> = schema
            .fields()
            .iter()
            .filter(|f| {
                self.base
                    .as_ref()
                    .is_none_or(|b| b.field_with_name(f.name()).is_err())
            })
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        let integers: Vec<usize> = match self.format {
            TextFormat::Csv(_) => (0..schema.fields().len())
                .filter(|&i| {
                    let f = schema.field(i);
                    f.data_type() == &DataType::Int64 && types.iter().any(|(n, _)| n == f.name())
                })
                .collect(),
            TextFormat::Ndjson { .. } => Vec::new(),
        };
        // The decoder reads those integer columns as text, converted after it.
        let read = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| match integers.contains(&i) {
                    true => f.as_ref().clone().with_data_type(DataType::Utf8),
                    false => f.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        ));
        let mut inner: Box<dyn PushDecoder> = match self.format {
            // The code check of integer columns names a record's line.
            TextFormat::Csv(opts) if !integers.is_empty() => {
                Box::new(CsvDecoder::new(read, opts).with_record_lines())
            }
            TextFormat::Csv(opts) => Box::new(CsvDecoder::new(read, opts)),
            TextFormat::Ndjson { batch_rows } => Box::new(NdjsonDecoder::new(read, batch_rows)),
        };
        let mut inferred = Inferred {
            schema,
            types,
            integers,
            records: 0,
        };
        let out = inner
            .push(&std::mem::take(&mut self.head))
            .map_err(|e| inferred.hint(e))
            .and_then(|out| inferred.read(out, inner.as_ref()));
        self.inner = Some(inner);
        self.inferred = Some(inferred);
        out
    }

    /// `out` of the inner decoder, read as the inferred schema says.
    fn read(&mut self, out: Result<Vec<RecordBatch>>) -> Result<Vec<RecordBatch>> {
        let inferred = self.inferred.as_mut().expect("the inner decoder started");
        let decoder = self.inner.as_deref().expect("the inner decoder started");
        out.map_err(|e| inferred.hint(e))
            .and_then(|out| inferred.read(out, decoder))
    }
}

/// The column type an inferred type is stored as, or why none is.
fn normalise(
    dt: &DataType,
) -> std::result::Result<DataType, datagate_core::types::UnsupportedType> {
    match dt {
        DataType::Null => Ok(DataType::Utf8),
        DataType::Timestamp(unit, _) => Ok(DataType::Timestamp(*unit, None)),
        other => ColumnType::from_arrow(other).map(|t| t.to_arrow()),
    }
}

/// The error for the first record of the leading rows (`head`, the header first) with another
/// number of fields than the header, in the same words and fields as the decoder's for a later
/// record, named by the line it begins on (arrow's inference message numbers the records it
/// read, without blank lines, and takes a `\r\n` for two line ends).
fn unequal_fields(head: &[u8], delimiter: u8) -> Option<IngestError> {
    let mut records = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(head)
        .into_byte_records();
    let expected = records.next()?.ok()?.len();
    let ragged = records.find_map(|r| r.ok().filter(|r| r.len() != expected))?;
    let at = usize::try_from(ragged.position()?.byte()).ok()?;
    let line = super::csv::line_at(head, at);
    let found = format!(", found {}", ragged.len());
    Some(super::csv::wrong_field_count(line, expected, &found))
}

/// The 1-based line of the first bytes of `head` that are not UTF-8 (a complete sequence cut
/// off at the end of `head` is no error), if any. NDJSON lines end in `\n`; CSV lines in a lone
/// `\r` too, as its decoder counts them.
fn first_line_not_utf8(format: &TextFormat, head: &[u8]) -> Option<u64> {
    let e = std::str::from_utf8(head).err()?;
    e.error_len()?;
    let before = &head[..e.valid_up_to()];
    Some(match format {
        TextFormat::Csv(_) => super::csv::line_ends(before, &mut false) + 1,
        TextFormat::Ndjson { .. } => memchr::memchr_iter(b'\n', before).count() as u64 + 1,
    })
}

fn infer(format: &TextFormat, head: &[u8]) -> Result<SchemaRef> {
    let inferred: Schema = match format {
        TextFormat::Csv(opts) => arrow::csv::reader::Format::default()
            .with_header(true)
            .with_delimiter(opts.delimiter)
            .infer_schema(head, Some(INFER_ROWS))
            .map(|(s, _)| s)
            .map_err(|e| {
                if let Some(line) = first_line_not_utf8(format, head) {
                    return super::not_utf8(Some(line), None);
                }
                let ragged = e.to_string().contains("unequal lengths between records");
                if let Some(e) = ragged
                    .then(|| unequal_fields(head, opts.delimiter))
                    .flatten()
                {
                    return e;
                }
                IngestError::invalid_data(format!(
                    "cannot infer a schema from the CSV header and leading rows: {e}"
                ))
            })?,
        TextFormat::Ndjson { .. } => {
            // An array or object is text, whatever it holds (arrow's inference refuses lists
            // of different elements): each is a string to infer from.
            let flat = super::ndjson::replace_nested(head, |_| true, |_| "\"\"".to_string());
            let head = flat.as_deref().unwrap_or(head);
            arrow::json::reader::infer_json_schema(std::io::BufReader::new(head), Some(INFER_ROWS))
                .map(|(s, _)| s)
                .map_err(|e| {
                    if let Some(line) = first_line_not_utf8(format, head) {
                        return super::not_utf8(Some(line), None);
                    }
                    if let Some(bad) = first_line_not_an_object(head) {
                        return bad;
                    }
                    IngestError::invalid_data(format!(
                        "cannot infer a schema from the leading NDJSON lines: {e}"
                    ))
                })?
        }
    };
    if inferred.fields().is_empty() {
        return Err(IngestError::invalid_data(
            "the body is empty: no columns to infer",
        ));
    }
    // The header's names as the decoder reads them (arrow's inference keeps their spaces);
    // NDJSON's keys in the order the lines give them.
    let inferred = match format {
        TextFormat::Csv(_) => Schema::new(
            inferred
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    f.as_ref()
                        .clone()
                        .with_name(super::csv::header_name(i, f.name()))
                })
                .collect::<Vec<_>>(),
        ),
        TextFormat::Ndjson { .. } => {
            let order = super::ndjson::key_order(head);
            let at = |name: &str| order.iter().position(|k| k == name).unwrap_or(usize::MAX);
            let mut fields: Vec<_> = inferred.fields().iter().cloned().collect();
            fields.sort_by_key(|f| at(f.name()));
            Schema::new(fields)
        }
    };
    super::check_column_names(inferred.fields().iter().map(|f| f.name().as_str())).map_err(
        |e| match (format, e) {
            // The names are the header's: line 1.
            (
                TextFormat::Csv(_),
                IngestError::InvalidData {
                    message, column, ..
                },
            ) => IngestError::InvalidData {
                message: format!("line 1: {message}"),
                line: Some(1),
                row: None,
                column,
            },
            (_, e) => e,
        },
    )?;
    let mut fields = Vec::with_capacity(inferred.fields().len());
    for f in inferred.fields() {
        let dt = normalise(f.data_type()).map_err(|e| IngestError::InvalidData {
            message: format!("column {:?}: {e}", f.name()),
            line: None,
            row: None,
            column: Some(f.name().clone()),
        })?;
        fields.push(Field::new(f.name(), dt, true));
    }
    // Text that holds only dates or times is a date or time column; integers with a leading
    // zero (`0571`, `010020`) are codes, and integers beyond `int64` (an account number) are
    // kept as text, exactly, as a CSV column of them already is.
    let sampled: Vec<usize> = (0..fields.len())
        .filter(|&i| {
            matches!(
                fields[i].data_type(),
                DataType::Utf8 | DataType::Int64 | DataType::Float64
            )
        })
        .collect();
    if !sampled.is_empty() {
        let samples = samples(format, head, &fields);
        for i in sampled {
            let ty = match fields[i].data_type() {
                DataType::Utf8 => time_type(&samples.text[i]),
                DataType::Int64 => samples.text[i]
                    .iter()
                    .any(|v| is_code(v))
                    .then_some(DataType::Utf8),
                _ => samples.big_integers[i].then_some(DataType::Utf8),
            };
            if let Some(ty) = ty {
                fields[i] = Field::new(fields[i].name(), ty, true);
            }
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The first of the leading NDJSON lines of `head` that is no JSON object, as an error naming
/// its line (arrow's inference counts the lines of each record, so says "line 1" of any).
fn first_line_not_an_object(head: &[u8]) -> Option<IngestError> {
    let lines = head.split(|b| *b == b'\n').take(INFER_ROWS);
    lines.enumerate().find_map(|(i, line)| {
        let line_no = i as u64 + 1;
        let why = match serde_json::from_slice::<serde_json::Value>(line) {
            _ if line.iter().all(u8::is_ascii_whitespace) => return None,
            Ok(serde_json::Value::Object(_)) => return None,
            Ok(other) => format!("expected a JSON object, got {}", json_kind(&other)),
            Err(e) => format!(
                "not JSON at column {}: {}",
                e.column(),
                super::ndjson::what_is_wrong(&e)
            ),
        };
        Some(IngestError::InvalidData {
            message: format!("line {line_no}: {why}"),
            line: Some(line_no),
            row: None,
            column: None,
        })
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Whether `v` is an integer written with a leading zero (`0571`, `-007`): a code, whose zeros
/// an integer column would drop.
fn is_code(v: &str) -> bool {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
}

/// What the leading records of `head` (at most [`INFER_ROWS`]) hold, per column of `fields`.
struct Samples {
    /// The non-empty text values, as the decoders will read them.
    text: Vec<Vec<String>>,
    /// Whether the column's numbers are all whole, one of them beyond `int64` (NDJSON only:
    /// arrow infers `float64`, which holds 15 or so digits of `62220212345678901234`).
    big_integers: Vec<bool>,
}

/// The [`Samples`] of `fields` in `head`, each record read once.
fn samples(format: &TextFormat, head: &[u8], fields: &[Field]) -> Samples {
    let mut text = vec![Vec::new(); fields.len()];
    // Per column: (every number whole, one beyond int64).
    let mut numbers = vec![(true, false); fields.len()];
    match format {
        TextFormat::Csv(opts) => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .delimiter(opts.delimiter)
                .flexible(true)
                .from_reader(head);
            for record in reader.records().take(INFER_ROWS).map_while(|r| r.ok()) {
                for (values, v) in text.iter_mut().zip(record.iter()) {
                    if !v.is_empty() {
                        values.push(v.to_string());
                    }
                }
            }
        }
        TextFormat::Ndjson { .. } => {
            let lines = head.split(|b| *b == b'\n').take(INFER_ROWS);
            for line in lines {
                let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(line) else {
                    continue;
                };
                for ((values, seen), f) in text.iter_mut().zip(&mut numbers).zip(fields) {
                    match o.get(f.name()) {
                        Some(serde_json::Value::String(v)) if !v.is_empty() => {
                            values.push(v.clone())
                        }
                        Some(serde_json::Value::Number(n)) => {
                            let beyond = n.is_u64() && !n.is_i64()
                                || n.as_f64().is_some_and(|v| {
                                    v.fract() == 0.0 && v.abs() >= 9.223_372_036_854_776e18
                                });
                            seen.0 &= n.is_i64() || beyond;
                            seen.1 |= beyond;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Samples {
        text,
        big_integers: numbers
            .into_iter()
            .map(|(whole, beyond)| whole && beyond)
            .collect(),
    }
}

/// The type of a column arrow infers as text whose every sampled value is a date
/// (`date32`) or a time (`timestamp(us)`) in a shape only datagate reads (`2024/1/5`,
/// `2024年1月5日 10:00`): `None` when some value is neither, or there are none.
fn time_type(values: &[String]) -> Option<DataType> {
    use arrow::datatypes::{TimeUnit, TimestampMicrosecondType};
    if values.is_empty() {
        return None;
    }
    if values.iter().all(|v| super::dates::date(v).is_some()) {
        return Some(DataType::Date32);
    }
    values
        .iter()
        .all(|v| super::dates::timestamp::<TimestampMicrosecondType>(v).is_some())
        .then_some(DataType::Timestamp(TimeUnit::Microsecond, None))
}

/// The head up to the end of its last whole record, once it holds one (past the CSV header);
/// else how many records it holds whole.
fn whole_head(format: &TextFormat, head: &[u8]) -> std::result::Result<usize, u64> {
    let (records, end, needed) = match format {
        TextFormat::Ndjson { .. } => match memchr::memrchr(b'\n', head) {
            Some(i) => (1, i + 1, 1),
            None => (0, 0, 1),
        },
        TextFormat::Csv(opts) => {
            let (records, end) = super::csv::whole_records(head, opts.delimiter);
            (records, end, 2)
        }
    };
    if records >= needed {
        Ok(end)
    } else {
        Err(records)
    }
}

impl PushDecoder for InferringDecoder {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        if let Some(inner) = self.inner.as_mut() {
            let out = inner.push(chunk);
            return self.read(out);
        }
        self.head.extend_from_slice(chunk);
        let new_lines = memchr::memchr_iter(b'\n', chunk).count();
        self.lines += new_lines;
        if self.lines <= INFER_ROWS && self.head.len() < INFER_BYTES {
            return Ok(Vec::new());
        }
        // Inference reads whole records only: a line cut at the buffer's end would read as
        // a broken record (or, in CSV, a shorter value of another type).
        let ended = new_lines > 0 || memchr::memchr(b'\r', chunk).is_some();
        if !ended && self.head.len() - chunk.len() >= INFER_BYTES {
            // No record ended since the last look.
            return self.too_long();
        }
        match whole_head(&self.format, &self.head) {
            Ok(end) => self.start(end),
            Err(_) => self.too_long(),
        }
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if self.inner.is_none() {
            if self.head.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(IngestError::invalid_data("the body is empty"));
            }
            let whole = self.head.len();
            out = self.start(whole)?;
        }
        if let Some(inner) = self.inner.as_mut() {
            let last = inner.finish();
            out.extend(self.read(last)?);
        }
        Ok(out)
    }
}

impl InferringDecoder {
    /// The head holds no whole record past the header yet: wait for one, unless the record
    /// in progress is longer than any record may be.
    fn too_long(&mut self) -> Result<Vec<RecordBatch>> {
        if (self.head.len() as u64) <= super::csv::MAX_RECORD_BYTES + INFER_BYTES as u64 {
            return Ok(Vec::new());
        }
        // In CSV, the record in progress begins after the whole ones and any blank lines after
        // them; in NDJSON, no line has ended.
        let line = match self.format {
            TextFormat::Csv(opts) => {
                let whole = super::csv::whole_records(&self.head, opts.delimiter).1;
                super::csv::line_at(&self.head, whole)
            }
            TextFormat::Ndjson { .. } => 1,
        };
        Err(IngestError::InvalidData {
            message: format!("line {line}: a record is longer than 64 MiB"),
            line: Some(line),
            row: None,
            column: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    fn decode(format: TextFormat, body: &[u8], chunk: usize) -> Result<Vec<RecordBatch>> {
        let mut d = InferringDecoder::new(format);
        let mut out = Vec::new();
        for c in body.chunks(chunk) {
            out.extend(d.push(c)?);
        }
        out.extend(d.finish()?);
        Ok(out)
    }

    fn rows(batches: &[RecordBatch]) -> usize {
        batches.iter().map(|b| b.num_rows()).sum()
    }

    /// The head is cut at whole records for inference, so lines longer than a few kilobytes
    /// (which end the head mid-line) infer the types of their whole values.
    #[test]
    fn inference_reads_whole_records_only() {
        let doc = "x".repeat(10_000);
        // 500 lines of 10 KB: the 4 MiB head ends inside line 420.
        let ndjson: String = (0..500)
            .map(|i| format!("{{\"id\":{i},\"n\":12.5,\"doc\":\"{doc}\"}}\n"))
            .collect();
        // A CSV whose cut falls inside a quoted field spanning lines, and a number column.
        let csv: String = std::iter::once("id,doc,n\n".to_string())
            .chain((0..500).map(|i| format!("{i},\"{doc}\n{doc}\",{i}.5\n")))
            .collect();
        let options = CsvOptions::new(b',', 1000);
        for chunk in [1000, 1 << 16, 1 << 22] {
            let batches = decode(
                TextFormat::Ndjson { batch_rows: 1000 },
                ndjson.as_bytes(),
                chunk,
            )
            .unwrap_or_else(|e| panic!("NDJSON in chunks of {chunk}: {e}"));
            assert_eq!(rows(&batches), 500);
            let schema = batches[0].schema();
            assert_eq!(
                schema.field_with_name("id").unwrap().data_type(),
                &DataType::Int64
            );
            assert_eq!(
                schema.field_with_name("n").unwrap().data_type(),
                &DataType::Float64
            );
            let batches = decode(TextFormat::Csv(options), csv.as_bytes(), chunk)
                .unwrap_or_else(|e| panic!("CSV in chunks of {chunk}: {e}"));
            assert_eq!(rows(&batches), 500);
            let schema = batches[0].schema();
            assert_eq!(
                schema.field_with_name("n").unwrap().data_type(),
                &DataType::Float64
            );
            let last = batches.last().unwrap();
            assert_eq!(last.column(1).len(), last.num_rows());
        }
    }

    /// A first upload's columns are named as the CSV decoder reads its header: without the
    /// spaces around each name and the first without a byte-order mark (the spaces were kept,
    /// and the decoder then found no column `a` in a dataset of ` a `).
    #[test]
    fn inferred_csv_names_are_the_headers_trimmed() {
        let csv = TextFormat::Csv(CsvOptions::new(b',', 10));
        let batches = decode(csv, "\u{feff} id , 名称\t\n1,公交\n".as_bytes(), 3).unwrap();
        let schema = batches[0].schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "名称"]);
        assert_eq!(rows(&batches), 1);
        let e = decode(csv, b"a, a\n1,2\n", 64).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("\"a\""), "{e}");
    }

    /// An NDJSON array or object is inferred as text and stored as its JSON text as written,
    /// in every line, mixed with strings too (it was refused as a type no column has).
    #[test]
    fn inferred_nested_values_are_their_json_text() {
        let ndjson = TextFormat::Ndjson { batch_rows: 2 };
        let body = "{\"id\":1,\"stops\":[1, 2],\"at\":{\"x\": 1.5}}\n\
                    {\"id\":2,\"stops\":[],\"at\":null}\n\n\
                    {\"id\":3,\"stops\":[{\"名\":\"站\"}],\"at\":{}}\n";
        let batches = decode(ndjson, body.as_bytes(), 7).unwrap();
        let schema = batches[0].schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["id", "stops", "at"],
            "in the order of the lines' keys"
        );
        for name in ["stops", "at"] {
            assert_eq!(
                schema.field_with_name(name).unwrap().data_type(),
                &DataType::Utf8
            );
        }
        let text = |column: &str| -> Vec<Option<String>> {
            batches
                .iter()
                .flat_map(|b| {
                    let a = b.column_by_name(column).unwrap().as_string::<i32>();
                    a.iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>()
                })
                .collect()
        };
        let owned =
            |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>();
        assert_eq!(
            text("stops"),
            owned(&[Some("[1, 2]"), Some("[]"), Some("[{\"名\":\"站\"}]")])
        );
        assert_eq!(text("at"), owned(&[Some("{\"x\": 1.5}"), None, Some("{}")]));
    }

    /// A head with no whole record past the header waits for one, and refuses a record
    /// longer than any may be, naming the line it begins on.
    #[test]
    fn a_first_record_too_long_is_refused_by_its_line() {
        let csv = || TextFormat::Csv(CsvOptions::new(b',', 10));
        for (format, head, want) in [
            (
                TextFormat::Ndjson { batch_rows: 10 },
                &b"{\"id\":1}\n{\"id\":\""[..],
                2,
            ),
            (TextFormat::Ndjson { batch_rows: 10 }, b"{\"id\":\"", 1),
            (csv(), b"id,doc\n1,a\n2,\"", 3),
            // No whole record after the header: blank lines before the long one count.
            (csv(), b"id,doc\r\n\r\n\r\n2,\"", 4),
            (csv(), b"id,doc\n2,\"", 2),
        ] {
            let mut d = InferringDecoder::new(format);
            d.push(head).unwrap();
            let chunk = vec![b'z'; 1 << 20];
            let e = (0..100)
                .find_map(|_| d.push(&chunk).err())
                .expect("a 100 MiB record was taken");
            match e {
                IngestError::InvalidData { line, message, .. } => {
                    assert!(message.contains("longer than 64 MiB"), "{message}");
                    assert_eq!(line, Some(want), "{message}");
                    assert!(message.starts_with(&format!("line {want}: ")), "{message}");
                }
                e => panic!("{e:?}"),
            }
        }
    }

    /// Bytes that are not UTF-8 among the leading rows name their line, counted as each format
    /// ends lines (a lone `\r` ends a CSV line, not an NDJSON one).
    #[test]
    fn leading_bytes_not_utf8_name_their_line() {
        for (format, body, want) in [
            (
                TextFormat::Csv(CsvOptions::default()),
                &b"a,b\r1,2\r\r3,\xff\r"[..],
                4,
            ),
            (
                TextFormat::Csv(CsvOptions::default()),
                b"a,b\r\n1,2\r\n3,\xff\r\n",
                3,
            ),
            (
                TextFormat::Ndjson { batch_rows: 5 },
                b"{\"a\":1}\n\n{\"a\":\"\xff\"}\n",
                3,
            ),
        ] {
            let e = decode(format, body, 5).unwrap_err();
            match e {
                IngestError::InvalidData { line, message, .. } => {
                    assert_eq!(line, Some(want), "{message}");
                    assert!(message.contains("not UTF-8"), "{message}");
                }
                e => panic!("{e:?}"),
            }
        }
    }

    /// A record of the leading rows with too few or too many fields names its line and the
    /// counts, as a later one does; quoted line breaks and blank lines before it count.
    #[test]
    fn a_ragged_leading_record_names_its_line() {
        for (body, line, found) in [
            ("a,b\n1,2\n3,4\n5\n", 4, 1),
            ("a,b\n1,\"x\ny\"\n3,4,5\n", 4, 3),
            // Blank lines count; a `\r\n` is one line end, a lone `\r` one too.
            ("a,b\n1,2\n\n\n3\n", 5, 1),
            ("a,b\r\n1,2\r\n\r\n3\r\n", 4, 1),
            ("a,b\r1,2\r\r3,4,5\r", 4, 3),
        ] {
            let e = decode(TextFormat::Csv(CsvOptions::default()), body.as_bytes(), 5).unwrap_err();
            let message = crate::decode::invalid_at(e, Some(line), None);
            assert_eq!(
                message,
                format!("line {line}: wrong number of fields (expected 2, found {found})"),
                "{body:?}"
            );
        }
    }

    /// A text column whose every value is a date or a time in a spreadsheet shape is inferred
    /// as `date32` or `timestamp(us)`; one value that is neither keeps it text.
    #[test]
    fn spreadsheet_dates_are_inferred_as_dates_and_times() {
        use arrow::datatypes::TimeUnit;
        let csv = "d,t,s,n\n2024/1/5,2024/1/5 10:00,x,2024/1/5\n2024/1/6,,y,1\n\"2024年1月7日\",2024/1/5,z,\n";
        let ndjson = "{\"d\":\"2024/1/5\",\"t\":\"2024/1/5 10:00\",\"s\":\"x\",\"n\":\"2024/1/5\"}\n{\"d\":\"2024.1.6\",\"t\":null,\"s\":\"y\",\"n\":\"soon\"}\n";
        for (format, body) in [
            (TextFormat::Csv(CsvOptions::default()), csv.as_bytes()),
            (TextFormat::Ndjson { batch_rows: 10 }, ndjson.as_bytes()),
        ] {
            let batches = decode(format, body, 7).unwrap();
            let schema = batches[0].schema();
            let ty = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
            let types = ["d", "t", "s", "n"].map(ty);
            assert_eq!(
                types,
                [
                    DataType::Date32,
                    DataType::Timestamp(TimeUnit::Microsecond, None),
                    DataType::Utf8,
                    DataType::Utf8
                ],
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn codes_with_leading_zeros_and_integers_beyond_int64_stay_text() {
        use arrow::array::AsArray;
        let csv = "code,n,signed,acct\n0571,1,-007,62220212345678901234\n10,2,5,12\n";
        let ndjson = "{\"acct\":12,\"n\":1,\"f\":1.5,\"e\":1e19}\n{\"acct\":62220212345678901234,\"n\":9223372036854775807,\"f\":1e19,\"e\":2}\n";
        let big = "62220212345678901234";
        for (format, body, text, numbers, accounts) in [
            (
                TextFormat::Csv(CsvOptions::default()),
                csv,
                vec!["code", "signed", "acct"],
                vec![("n", DataType::Int64)],
                [big, "12"],
            ),
            (
                TextFormat::Ndjson { batch_rows: 10 },
                ndjson,
                vec!["acct", "e"],
                vec![("n", DataType::Int64), ("f", DataType::Float64)],
                ["12", big],
            ),
        ] {
            let batches = decode(format, body.as_bytes(), 5).unwrap();
            let schema = batches[0].schema();
            for name in &text {
                assert_eq!(
                    schema.field_with_name(name).unwrap().data_type(),
                    &DataType::Utf8,
                    "{name}: {body}"
                );
            }
            for (name, ty) in &numbers {
                assert_eq!(
                    schema.field_with_name(name).unwrap().data_type(),
                    ty,
                    "{name}: {body}"
                );
            }
            // The text is what was written, every digit and zero kept.
            let acct = batches[0]
                .column(schema.index_of("acct").unwrap())
                .as_string::<i32>();
            assert_eq!([acct.value(0), acct.value(1)], accounts);
        }
        let code = decode(TextFormat::Csv(CsvOptions::default()), csv.as_bytes(), 64).unwrap();
        assert_eq!(code[0].column(0).as_string::<i32>().value(0), "0571");
        for v in ["0571", "00", "-007", "+01"] {
            assert!(is_code(v), "{v}");
        }
        for v in ["0", "10", "-0", "0.5", "0x1", "", "07a"] {
            assert!(!is_code(v), "{v}");
        }
    }

    /// Rows past the leading ones fit the inferred types as strictly: a code after them is
    /// refused (an integer would drop its zero), like text or a fraction, each with its line
    /// and a hint that the type was inferred.
    #[test]
    fn values_past_the_leading_rows_that_do_not_fit_are_refused_with_a_hint() {
        use arrow::array::AsArray;
        let body = |last: &str| -> String {
            std::iter::once("code,n\n".to_string())
                .chain((0..1200).map(|i| format!("{},{i}\n", 100 + i)))
                .chain([format!("{last},5\n"), "7,6\n".to_string()])
                .collect()
        };
        let options = CsvOptions::new(b',', 256);
        for (last, says) in [
            ("0571", "value \"0571\" is written with a leading zero"),
            ("-007", "value \"-007\" is written with a leading zero"),
            ("abc", "value \"abc\" is not a valid int64"),
            ("1.5", "value \"1.5\" is not a valid int64"),
        ] {
            for chunk in [100, 1 << 20] {
                let e = decode(TextFormat::Csv(options), body(last).as_bytes(), chunk).unwrap_err();
                let IngestError::InvalidData {
                    message,
                    line,
                    column,
                    ..
                } = &e
                else {
                    panic!("{last}: {e}")
                };
                assert_eq!(*line, Some(1202), "{last}: {message}");
                assert_eq!(column.as_deref(), Some("code"), "{last}: {message}");
                assert!(
                    message.starts_with("line 1202: column \"code\": "),
                    "{message}"
                );
                assert!(message.contains(says), "{last}: {message}");
                assert!(
                    message.contains("type, int64, was inferred from the leading rows"),
                    "{last}: {message}"
                );
            }
        }
        // Integers as they are (and a zero, an empty value) are read as before.
        let batches = decode(TextFormat::Csv(options), body("0").as_bytes(), 4096).unwrap();
        assert_eq!(rows(&batches), 1202);
        let schema = batches[0].schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        let codes: Vec<Option<i64>> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(&codes[..2], [Some(100), Some(101)]);
        assert_eq!(&codes[1200..], [Some(0), Some(7)]);
        let batches = decode(TextFormat::Csv(options), body("").as_bytes(), 4096).unwrap();
        assert!(
            batches
                .last()
                .unwrap()
                .column(0)
                .is_null(batches.last().unwrap().num_rows() - 2)
        );
        // An empty value right before a signed one: each value is looked at in its own bytes
        // (an empty value's offset is where the next one starts).
        let signed = body(",5\n-07");
        let e = decode(TextFormat::Csv(options), signed.as_bytes(), 4096).unwrap_err();
        assert!(e.to_string().starts_with("line 1203: "), "{e}");
        let signed = body(",5\n-7");
        let batches = decode(TextFormat::Csv(options), signed.as_bytes(), 4096).unwrap();
        let codes: Vec<Option<i64>> = batches
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
                c.iter().collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(&codes[1200..], [None, Some(-7), Some(7)]);
        // A declared (base) integer column reads a leading zero as the number it writes.
        let base = Arc::new(Schema::new(vec![
            Field::new("code", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let mut d = InferringDecoder::extending(TextFormat::Csv(options), Some(base));
        let mut out = d.push(body("0571").as_bytes()).unwrap();
        out.extend(d.finish().unwrap());
        assert_eq!(rows(&out), 1202);
    }

    #[test]
    fn a_line_that_is_no_object_is_named_by_its_line() {
        for (body, line, says) in [
            (
                "{\"a\":1}\n{\"a\":1e400}\n",
                2,
                "not JSON at column 10: number out of range",
            ),
            (
                "{\"a\":1}\n\n[1,2]\n",
                3,
                "expected a JSON object, got an array",
            ),
            (
                "{\"a\":1}\r\n{\"a\":\n",
                2,
                "not JSON at column 5: EOF while parsing a value",
            ),
        ] {
            match decode(TextFormat::Ndjson { batch_rows: 10 }, body.as_bytes(), 4) {
                Err(IngestError::InvalidData {
                    message, line: l, ..
                }) => {
                    assert_eq!(l, Some(line), "{body:?}: {message}");
                    assert!(
                        message.starts_with(&format!("line {line}: {says}")),
                        "{body:?}: {message}"
                    );
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }
}
