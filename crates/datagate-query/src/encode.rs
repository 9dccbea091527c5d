//! Streaming encoders of query results: JSON (the API envelope), NDJSON, CSV, Arrow IPC stream
//! and Parquet.
//!
//! An encoder turns each record batch into the bytes to send now and, at the end, a trailer; it
//! never holds more than a batch (Parquet: at most one bounded row group), so a response can be
//! streamed whatever the result size. Types are preserved: integers stay numbers, timestamps are
//! ISO 8601, decimals keep their exact digits.

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use std::sync::Arc;

/// A result format (API.md §5 "Formats").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Ndjson,
    Csv(CsvEncoding),
    Arrow,
    Parquet,
}

/// How a CSV answer's text is encoded, for the program that opens it: spreadsheets in Chinese
/// locales read a CSV file without a byte-order mark as GBK, so `bom=true` starts UTF-8 with
/// one (what Excel and WPS recognise) and `charset=gb18030` writes the national standard's
/// encoding itself (every character has a code there; GBK's are GBK's bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CsvEncoding {
    #[default]
    Utf8,
    /// UTF-8 after the byte-order mark `EF BB BF`.
    Utf8Bom,
    Gb18030,
}

/// The UTF-8 byte-order mark.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl CsvEncoding {
    /// The encoding of a `charset` label (WHATWG names: `utf-8`, `gb18030`, `gbk`, `gb2312`,
    /// ...); GBK and its aliases are written as GB18030, whose bytes are GBK's for every
    /// character GBK has. `None` for a label of another encoding, or none.
    pub fn from_charset(label: &str) -> Option<Self> {
        let encoding = encoding_rs::Encoding::for_label(label.trim().trim_matches('"').as_bytes())?;
        if encoding == encoding_rs::UTF_8 {
            Some(Self::Utf8)
        } else if encoding == encoding_rs::GB18030 || encoding == encoding_rs::GBK {
            Some(Self::Gb18030)
        } else {
            None
        }
    }
}

impl Format {
    /// CSV in UTF-8 without a byte-order mark (`format=csv`).
    pub const CSV: Format = Format::Csv(CsvEncoding::Utf8);

    pub const ALL: [Format; 5] = [
        Self::Json,
        Self::Ndjson,
        Self::CSV,
        Self::Arrow,
        Self::Parquet,
    ];

    /// The `format=` parameter value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ndjson => "ndjson",
            Self::Csv(_) => "csv",
            Self::Arrow => "arrow",
            Self::Parquet => "parquet",
        }
    }

    /// What distinguishes this format's bytes from another's, for entity tags and kept bodies:
    /// the name, and a CSV answer's encoding.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Csv(CsvEncoding::Utf8Bom) => "csv;bom",
            Self::Csv(CsvEncoding::Gb18030) => "csv;charset=gb18030",
            other => other.name(),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Csv(CsvEncoding::Gb18030) => "text/csv; charset=gb18030",
            Self::Csv(_) => "text/csv; charset=utf-8",
            Self::Arrow => "application/vnd.apache.arrow.stream",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The file extension of an export in this format.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ndjson => "ndjson",
            Self::Csv(_) => "csv",
            Self::Arrow => "arrows",
            Self::Parquet => "parquet",
        }
    }

    /// From a `format=` value.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The format an `Accept` header prefers (`*/*` and absent mean JSON): the alternative of
    /// the highest quality (`q`, 1 when not given) that can be made, a named type before a
    /// wildcard of the same quality, else the first listed; `q=0` means "not this" (RFC 9110,
    /// 12.4.2). A `charset` parameter on `text/csv` picks its encoding; one that cannot be
    /// written makes that alternative unacceptable.
    pub fn from_accept(accept: &str) -> Option<Self> {
        // (quality, named rather than a wildcard, format) of the best alternative so far.
        let mut best: Option<(f32, bool, Self)> = None;
        for alternative in weighted(accept) {
            let essence = alternative.name.to_ascii_lowercase();
            let found = match essence.as_str() {
                "application/json" | "*/*" | "application/*" | "" => Some(Self::Json),
                "application/x-ndjson" | "application/ndjson" => Some(Self::Ndjson),
                "text/csv" | "text/*" => match alternative.param("charset") {
                    Some(label) => CsvEncoding::from_charset(label).map(Self::Csv),
                    None => Some(Self::CSV),
                },
                "application/vnd.apache.arrow.stream" => Some(Self::Arrow),
                "application/vnd.apache.parquet" => Some(Self::Parquet),
                _ => None,
            };
            let quality = alternative.quality;
            let Some(format) = found.filter(|_| quality > 0.0) else {
                continue;
            };
            let named = !essence.is_empty() && !essence.ends_with("/*");
            if best.is_none_or(|(q, n, _)| quality > q || (quality == q && named && !n)) {
                best = Some((quality, named, format));
            }
        }
        best.map(|(_, _, format)| format)
    }
}

/// One alternative of a weighted HTTP list (`Accept`, `Accept-Encoding`; RFC 9110 §12.4.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weighted<'a> {
    /// The media range or coding, trimmed, as written.
    pub name: &'a str,
    /// Its `q`: 1 when absent or unreadable, otherwise within 0 (not acceptable) to 1.
    pub quality: f32,
    /// Its parameters after the name, `;`-separated.
    params: &'a str,
}

impl<'a> Weighted<'a> {
    /// The value of parameter `name` (any case), trimmed.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.split(';').find_map(|p| {
            let (key, value) = p.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// The alternatives of a weighted HTTP list, in the order listed.
pub fn weighted(list: &str) -> impl Iterator<Item = Weighted<'_>> {
    list.split(',').map(|entry| {
        let (name, params) = entry.split_once(';').unwrap_or((entry, ""));
        let mut alternative = Weighted {
            name: name.trim(),
            quality: 1.0,
            params,
        };
        alternative.quality = alternative
            .param("q")
            .and_then(|q| q.parse::<f32>().ok())
            .map_or(1.0, |q| q.clamp(0.0, 1.0));
        alternative
    })
}

/// What the JSON envelope says after the rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trailer {
    pub row_count: u64,
    pub truncated: bool,
    /// URL of the next page, for `rows` pages with more rows.
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The result holds a value the format cannot write (the query's doing, a 400).
    #[error("{0}")]
    Unwritable(String),
    /// The encoder failed (the gateway's doing).
    #[error("encoding the result failed: {0}")]
    Failed(String),
}

impl From<arrow::error::ArrowError> for EncodeError {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for EncodeError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Self::Failed(e.to_string())
    }
}

/// Encodes a stream of batches of one schema.
pub trait Encoder: Send {
    /// The bytes for `batch`, to send now (may be empty).
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, EncodeError>;
    /// The closing bytes.
    fn finish(&mut self, trailer: &Trailer) -> Result<Bytes, EncodeError>;
}

/// An encoder of `format` for results of `schema`; the first bytes (JSON column list, CSV
/// header, Arrow schema) come with the first call.
pub fn encoder(format: Format, schema: SchemaRef) -> Result<Box<dyn Encoder>, EncodeError> {
    Ok(match format {
        Format::Json => Box::new(JsonEnvelope::new(schema)),
        Format::Ndjson => Box::new(Ndjson),
        Format::Csv(encoding) => Box::new(Csv {
            header_sent: false,
            schema,
            encoding,
        }),
        Format::Arrow => Box::new(ArrowStream {
            writer: arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)?,
        }),
        Format::Parquet => Box::new(ParquetEncoder::new(schema)?),
    })
}

/// The API's type name of an Arrow type.
pub fn type_name(dt: &arrow::datatypes::DataType) -> String {
    datagate_core::types::type_name(dt)
}

/// Appends `batch`'s rows as JSON objects (every column named, nulls written), each after
/// `before(first)`: arrow's JSON encoders, driven row by row into `out` (arrow's writer would
/// build a fresh 16 KiB buffer, the batch as a struct array and its schema for every batch, and
/// the envelope would then split its lines apart again: a small page's largest cost).
fn json_rows(
    batch: &RecordBatch,
    out: &mut Vec<u8>,
    mut before: impl FnMut(&mut Vec<u8>, usize),
    after: &[u8],
) -> Result<(), EncodeError> {
    use arrow::json::writer::{EncoderOptions, make_encoder};
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, array) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        let mut name = Vec::with_capacity(field.name().len() + 3);
        json_string(field.name(), &mut name);
        name.push(b':');
        columns.push((name, make_encoder(field, array, &options)?));
    }
    out.reserve(batch.num_rows() * 64);
    for row in 0..batch.num_rows() {
        before(out, row);
        out.push(b'{');
        for (c, (name, encoder)) in columns.iter_mut().enumerate() {
            if c > 0 {
                out.push(b',');
            }
            out.extend_from_slice(name);
            if encoder.is_null(row) {
                out.extend_from_slice(b"null");
            } else {
                encoder.encode(row, out);
            }
        }
        out.push(b'}');
        out.extend_from_slice(after);
    }
    Ok(())
}

/// A JSON string, escaped as serde_json (and so arrow's JSON writer) escapes it.
fn json_string(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, s);
}

struct JsonEnvelope {
    schema: SchemaRef,
    started: bool,
    rows: u64,
}

impl JsonEnvelope {
    fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            started: false,
            rows: 0,
        }
    }

    fn head(&mut self) -> Vec<u8> {
        self.started = true;
        let mut out = Vec::with_capacity(64 + 48 * self.schema.fields().len());
        out.extend_from_slice(b"{\"columns\":[");
        for (i, f) in self.schema.fields().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            json_string(f.name(), &mut out);
            out.extend_from_slice(b",\"type\":");
            json_string(&type_name(f.data_type()), &mut out);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"rows\":[");
        out
    }
}

impl Encoder for JsonEnvelope {
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, EncodeError> {
        let mut out = if self.started {
            Vec::new()
        } else {
            self.head()
        };
        if batch.num_rows() == 0 {
            return Ok(out.into());
        }
        let written = self.rows;
        let text = crate::beyond_calendar::as_text(batch)?;
        json_rows(
            text.as_ref().unwrap_or(batch),
            &mut out,
            |out, row| {
                if written + row as u64 > 0 {
                    out.push(b',');
                }
            },
            b"",
        )?;
        self.rows += batch.num_rows() as u64;
        Ok(out.into())
    }

    fn finish(&mut self, t: &Trailer) -> Result<Bytes, EncodeError> {
        let mut out = if self.started {
            Vec::new()
        } else {
            self.head()
        };
        envelope_tail(t, &mut out);
        Ok(out.into())
    }
}

/// Closes the rows and the envelope: `],"next":...,"row_count":N,"truncated":B}`, written
/// directly (through a `serde_json::Value` it was a tenth of a small page's JSON encoding), in
/// the order serde_json's map gave them.
fn envelope_tail(t: &Trailer, out: &mut Vec<u8>) {
    use std::io::Write;
    out.extend_from_slice(b"],\"next\":");
    match &t.next {
        Some(next) => json_string(next, out),
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(
        out,
        ",\"row_count\":{},\"truncated\":{}}}",
        t.row_count, t.truncated
    );
}

struct Ndjson;

impl Encoder for Ndjson {
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, EncodeError> {
        let text = crate::beyond_calendar::as_text(batch)?;
        let mut out = Vec::new();
        json_rows(text.as_ref().unwrap_or(batch), &mut out, |_, _| {}, b"\n")?;
        Ok(out.into())
    }
    fn finish(&mut self, _: &Trailer) -> Result<Bytes, EncodeError> {
        Ok(Bytes::new())
    }
}

struct Csv {
    header_sent: bool,
    schema: SchemaRef,
    encoding: CsvEncoding,
}

impl Encoder for Csv {
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, EncodeError> {
        use crate::csv_writer::{Gb18030, Utf8, write_batch};
        let dates = crate::beyond_calendar::as_text(batch)?;
        let batch = dates.as_ref().unwrap_or(batch);
        let as_text = nested_as_json_text(batch)?;
        let batch = as_text.as_ref().unwrap_or(batch);
        let first = !self.header_sent;
        self.header_sent = true;
        let mut out = Vec::with_capacity(batch.num_rows() * 64 + 3);
        if first && self.encoding == CsvEncoding::Utf8Bom {
            out.extend_from_slice(UTF8_BOM);
        }
        // Whole lines, so each batch's text stands alone: GB18030 has a code for every
        // character and no state between them.
        let gb18030 = self.encoding == CsvEncoding::Gb18030;
        let written = if gb18030 {
            write_batch::<Gb18030>(batch, first, &mut out)
        } else {
            write_batch::<Utf8>(batch, first, &mut out)
        };
        if written.is_some() {
            return Ok(out.into());
        }
        // Other column types: arrow's writer, its UTF-8 transcoded when asked.
        let mut utf8 = Vec::new();
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(first)
            .build(if gb18030 { &mut utf8 } else { &mut out });
        w.write(batch)?;
        drop(w);
        if gb18030 {
            crate::gb18030::encode(&utf8, &mut out).map_err(|crate::gb18030::NotUtf8(at)| {
                EncodeError::Failed(format!("the CSV text is not UTF-8 at byte {at} of a batch"))
            })?;
        }
        Ok(out.into())
    }
    fn finish(&mut self, _: &Trailer) -> Result<Bytes, EncodeError> {
        if self.header_sent {
            return Ok(Bytes::new());
        }
        // An empty result still has its header.
        self.batch(&RecordBatch::new_empty(self.schema.clone()))
    }
}

/// `batch` with each nested column (a list from `array_agg`, a struct) as text, each value the
/// JSON the JSON formats write for it (`[1,2]`, `{"a":1}`): a CSV cell holds no nested value
/// and arrow's CSV writer refuses one. `None` when `batch` has no nested column.
fn nested_as_json_text(batch: &RecordBatch) -> Result<Option<RecordBatch>, EncodeError> {
    replace_columns(batch, |field, column| {
        if !field.data_type().is_nested() {
            return Ok(None);
        }
        Ok(Some(datagate_core::types::nested_as_json_text(
            field, column,
        )?))
    })
}

/// `batch` with each column `replace` gives a new value for in its place, the column's field
/// keeping its name, nullability and metadata under the new column's type; `None` (and no copy)
/// when `replace` gives none. The text answers swap columns arrow cannot write as text this way.
pub(crate) fn replace_columns<E: From<arrow::error::ArrowError>>(
    batch: &RecordBatch,
    mut replace: impl FnMut(&arrow::datatypes::FieldRef, &ArrayRef) -> Result<Option<ArrayRef>, E>,
) -> Result<Option<RecordBatch>, E> {
    let schema = batch.schema_ref();
    let mut columns: Option<Vec<ArrayRef>> = None;
    for (i, (field, column)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        if let Some(new) = replace(field, column)? {
            columns.get_or_insert_with(|| batch.columns().to_vec())[i] = new;
        }
    }
    let Some(columns) = columns else {
        return Ok(None);
    };
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ));
    Ok(Some(RecordBatch::try_new(schema, columns)?))
}

struct ArrowStream {
    writer: arrow::ipc::writer::StreamWriter<Vec<u8>>,
}

impl Encoder for ArrowStream {
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, EncodeError> {
        self.writer.write(batch)?;
        Ok(std::mem::take(self.writer.get_mut()).into())
    }
    fn finish(&mut self, _: &Trailer) -> Result<Bytes, EncodeError> {
        self.writer.finish()?;
        Ok(std::mem::take(self.writer.get_mut()).into())
    }
}

/// A row group is flushed once the writer holds this much memory (encoded pages and the
/// buffers of the page in progress), so memory stays bounded whatever the result size.
const PARQUET_ROW_GROUP_BYTES: usize = 16 << 20;

struct ParquetEncoder {
    writer: Option<parquet::arrow::ArrowWriter<Vec<u8>>>,
}

/// A type of `dt` (itself or one nested in it) that Parquet files cannot hold: intervals of
/// months, days and nanoseconds (what SQL's `INTERVAL` literals are), unions, and structs
/// without fields; arrow's Parquet writer refuses them as "not yet implemented".
fn not_in_parquet(dt: &DataType) -> Option<&DataType> {
    match dt {
        DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano) | DataType::Union(..) => {
            Some(dt)
        }
        DataType::Struct(fields) if fields.is_empty() => Some(dt),
        DataType::Struct(fields) => fields.iter().find_map(|f| not_in_parquet(f.data_type())),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => not_in_parquet(f.data_type()),
        DataType::Dictionary(_, value) => not_in_parquet(value),
        DataType::RunEndEncoded(_, value) => not_in_parquet(value.data_type()),
        _ => None,
    }
}

impl ParquetEncoder {
    fn new(schema: SchemaRef) -> Result<Self, EncodeError> {
        for field in schema.fields() {
            if let Some(dt) = not_in_parquet(field.data_type()) {
                return Err(EncodeError::Unwritable(format!(
                    "column {:?} holds {} values, which Parquet files cannot hold: ask for \
                     format=arrow, or cast the column to text in the query",
                    field.name(),
                    type_name(dt),
                )));
            }
        }
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        Ok(Self {
            writer: Some(parquet::arrow::ArrowWriter::try_new(
                Vec::new(),
                schema,
                Some(props),
            )?),
        })
    }
}

impl Encoder for ParquetEncoder {
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, EncodeError> {
        let Some(w) = self.writer.as_mut() else {
            return Err(EncodeError::Failed("the Parquet writer is closed".into()));
        };
        w.write(batch)?;
        if w.memory_size() >= PARQUET_ROW_GROUP_BYTES {
            w.flush()?;
        }
        // The writer counts what it wrote itself; taking the bytes out keeps memory bounded.
        Ok(std::mem::take(w.inner_mut()).into())
    }
    fn finish(&mut self, _: &Trailer) -> Result<Bytes, EncodeError> {
        let Some(mut w) = self.writer.take() else {
            return Ok(Bytes::new());
        };
        w.flush()?;
        let mut out = std::mem::take(w.inner_mut());
        out.extend(w.into_inner()?);
        Ok(out.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("opened", DataType::Date32, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("capital", DataType::Decimal128(18, 2), true),
            Field::new("ok", DataType::Boolean, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(9_007_199_254_740_993), None])),
            Arc::new(StringArray::from(vec![Some("张三,\"引号\"\n换行"), None])),
            Arc::new(Date32Array::from(vec![Some(19_723), None])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(1_704_067_200_123_456),
                None,
            ])),
            Arc::new(
                Decimal128Array::from(vec![Some(123_456_789_012_345_678i128), None])
                    .with_precision_and_scale(18, 2)
                    .unwrap(),
            ),
            Arc::new(BooleanArray::from(vec![Some(true), None])),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    }

    fn encode(format: Format, batches: &[RecordBatch], trailer: &Trailer) -> Vec<u8> {
        let schema = batches
            .first()
            .map_or_else(|| batch().schema(), RecordBatch::schema);
        let mut e = encoder(format, schema).unwrap();
        let mut out = Vec::new();
        for b in batches {
            out.extend_from_slice(&e.batch(b).unwrap());
        }
        out.extend_from_slice(&e.finish(trailer).unwrap());
        out
    }

    fn arrow_ndjson(batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = arrow::json::writer::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut out);
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        drop(w);
        out
    }

    proptest::proptest! {
        /// Rows written by the encoders are arrow's JSON writer's bytes: NDJSON line for line,
        /// the envelope's `rows` its objects joined by commas (escapes, nulls, NaN, decimals,
        /// timestamps, odd column names, batches split anywhere).
        #[test]
        fn rows_are_arrows_json(
            rows in proptest::collection::vec(
                (proptest::option::of("[a-z张,\"\\\u{1}\r\n ]{0,6}"), proptest::prelude::any::<Option<i64>>(),
                 proptest::prelude::any::<Option<f64>>(), proptest::option::of(-1_000_000i32..3_000_000),
                 proptest::prelude::any::<Option<bool>>(), proptest::prelude::any::<Option<i64>>()),
                0..20),
            name in "[a-z\"\\ :]{1,5}",
            split in 0usize..20,
        ) {
            let schema = Arc::new(Schema::new(vec![
                Field::new(name, DataType::Utf8, true),
                Field::new("i", DataType::Int64, true),
                Field::new("f", DataType::Float64, true),
                Field::new("d", DataType::Date32, true),
                Field::new("b", DataType::Boolean, true),
                Field::new("m", DataType::Decimal128(18, 3), true),
                Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            ]));
            let batch = RecordBatch::try_new(schema.clone(), vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(arrow::array::Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                Arc::new(Date32Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
                Arc::new(BooleanArray::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
                Arc::new(Decimal128Array::from(rows.iter().map(|r| r.5.map(i128::from)).collect::<Vec<_>>())
                    .with_precision_and_scale(18, 3).unwrap()),
                Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|r| r.5.map(|v| v % 200_000_000_000_000)).collect::<Vec<_>>())),
            ]).unwrap();
            let cut = split.min(batch.num_rows());
            let parts = [batch.slice(0, cut), batch.slice(cut, batch.num_rows() - cut)];
            let expected = arrow_ndjson(&parts);
            let mut ndjson = encoder(Format::Ndjson, schema.clone()).unwrap();
            let mut got = Vec::new();
            for p in &parts {
                got.extend_from_slice(&ndjson.batch(p).unwrap());
            }
            proptest::prop_assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(expected.clone()).unwrap());
            let mut json = encoder(Format::Json, schema).unwrap();
            let mut got = Vec::new();
            for p in &parts {
                got.extend_from_slice(&json.batch(p).unwrap());
            }
            got.extend_from_slice(&json.finish(&Trailer::default()).unwrap());
            let text = String::from_utf8(got).unwrap();
            let lines: Vec<&str> = std::str::from_utf8(&expected).unwrap().lines().collect();
            let rows_text = format!("\"rows\":[{}],", lines.join(","));
            proptest::prop_assert!(text.contains(&rows_text), "{} lacks {}", text, rows_text);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(v["columns"].as_array().unwrap().len(), 7);
        }
    }

    #[test]
    fn the_envelope_tail_is_what_serde_json_writes() {
        for next in [
            None,
            Some("http://x/rows?limit=2&offset=2&q=\"é\"\n".to_string()),
        ] {
            for (row_count, truncated) in [(0, false), (u64::MAX, true)] {
                let t = Trailer {
                    row_count,
                    truncated,
                    next: next.clone(),
                };
                let mut got = Vec::new();
                envelope_tail(&t, &mut got);
                let value = serde_json::json!({"row_count": row_count, "truncated": truncated, "next": next});
                let expected = format!("],{}", &value.to_string()[1..]);
                assert_eq!(String::from_utf8(got).unwrap(), expected);
            }
        }
    }

    #[test]
    fn json_envelope_preserves_types() {
        let t = Trailer {
            row_count: 4,
            truncated: true,
            next: Some("http://x/next".into()),
        };
        let bytes = encode(Format::Json, &[batch(), batch()], &t);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["columns"][4],
            serde_json::json!({"name": "capital", "type": "decimal128(18,2)"})
        );
        assert_eq!(v["columns"][3]["type"], "timestamp(us)");
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("9007199254740993"),
            "integers beyond 2^53 stay exact: {text}"
        );
        assert!(
            text.contains("1234567890123456.78"),
            "decimals keep their digits: {text}"
        );
        assert_eq!(rows[0]["name"], "张三,\"引号\"\n换行");
        assert_eq!(rows[0]["opened"], "2024-01-01");
        assert!(
            rows[0]["at"]
                .as_str()
                .unwrap()
                .starts_with("2024-01-01T00:00:00.123456")
        );
        assert_eq!(rows[0]["ok"], true);
        assert!(rows[1]["id"].is_null());
        assert_eq!(
            (v["row_count"].as_u64(), v["truncated"].as_bool()),
            (Some(4), Some(true))
        );
        assert_eq!(v["next"], "http://x/next");
        // An empty result is still a whole envelope.
        let empty: serde_json::Value =
            serde_json::from_slice(&encode(Format::Json, &[], &Trailer::default())).unwrap();
        assert_eq!(empty["rows"], serde_json::json!([]));
        assert_eq!(empty["columns"].as_array().unwrap().len(), 6);
        assert!(empty["next"].is_null());
    }

    #[test]
    fn ndjson_and_csv() {
        let nd =
            String::from_utf8(encode(Format::Ndjson, &[batch()], &Trailer::default())).unwrap();
        let lines: Vec<serde_json::Value> = nd
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["id"], 9_007_199_254_740_993i64);
        let csv = encode(Format::CSV, &[batch(), batch()], &Trailer::default());
        let mut r = ::csv::ReaderBuilder::new().from_reader(csv.as_slice());
        assert_eq!(
            r.headers().unwrap().iter().collect::<Vec<_>>(),
            ["id", "name", "opened", "at", "capital", "ok"]
        );
        let recs: Vec<_> = r.records().map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 4, "one header, four rows");
        assert_eq!(&recs[0][1], "张三,\"引号\"\n换行");
        assert_eq!(&recs[0][4], "1234567890123456.78");
        let empty = String::from_utf8(encode(Format::CSV, &[], &Trailer::default())).unwrap();
        assert_eq!(empty.trim(), "id,name,opened,at,capital,ok");
    }

    #[test]
    fn csv_for_spreadsheets_with_a_bom_or_in_gb18030() {
        let plain = encode(Format::CSV, &[batch(), batch()], &Trailer::default());
        // The mark once, before the header, and then the same bytes.
        let bom = encode(
            Format::Csv(CsvEncoding::Utf8Bom),
            &[batch(), batch()],
            &Trailer::default(),
        );
        assert_eq!(&bom[..3], UTF8_BOM);
        assert_eq!(&bom[3..], plain.as_slice());
        let empty = encode(Format::Csv(CsvEncoding::Utf8Bom), &[], &Trailer::default());
        assert_eq!(
            empty,
            [UTF8_BOM, b"id,name,opened,at,capital,ok\n"].concat()
        );
        // GB18030: the same text, every batch on its own; Chinese in its two-byte codes.
        let gb = encode(
            Format::Csv(CsvEncoding::Gb18030),
            &[batch(), batch()],
            &Trailer::default(),
        );
        let (text, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(&gb);
        assert!(!had_errors);
        assert_eq!(text.as_bytes(), plain.as_slice());
        assert!(std::str::from_utf8(&gb).is_err(), "not UTF-8 any more");
        let zhang = encoding_rs::GB18030.encode("张三").0;
        assert_eq!(zhang.as_ref(), [0xD5, 0xC5, 0xC8, 0xFD]);
        assert!(gb.windows(4).any(|w| w == zhang.as_ref()));
        // Characters GBK lacks have four-byte codes, not replacements.
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let rare = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["𠮷野家 €"])) as ArrayRef],
        )
        .unwrap();
        let mut e = encoder(Format::Csv(CsvEncoding::Gb18030), schema).unwrap();
        let bytes = [
            e.batch(&rare).unwrap(),
            e.finish(&Trailer::default()).unwrap(),
        ]
        .concat();
        let (back, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(&bytes);
        assert!(!had_errors);
        assert_eq!(back, "s\n𠮷野家 €\n");
        // A column type arrow's writer writes: its text transcoded the same way.
        let schema = Arc::new(Schema::new(vec![
            Field::new("名称", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let floats = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["北京, 朝阳", "𠮷"])) as ArrayRef,
                Arc::new(arrow::array::Float64Array::from(vec![1.5, -0.25])),
            ],
        )
        .unwrap();
        let gb = encode(
            Format::Csv(CsvEncoding::Gb18030),
            std::slice::from_ref(&floats),
            &Trailer::default(),
        );
        let (back, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(&gb);
        assert!(!had_errors);
        assert_eq!(back, "名称,x\n\"北京, 朝阳\",1.5\n𠮷,-0.25\n");
    }

    #[test]
    fn csv_encodings_by_charset() {
        for (label, expected) in [
            ("utf-8", Some(CsvEncoding::Utf8)),
            ("UTF8", Some(CsvEncoding::Utf8)),
            ("gb18030", Some(CsvEncoding::Gb18030)),
            ("GBK", Some(CsvEncoding::Gb18030)),
            ("gb2312", Some(CsvEncoding::Gb18030)),
            ("\"gb18030\"", Some(CsvEncoding::Gb18030)),
            ("big5", None),
            ("utf-16le", None),
            ("klingon", None),
        ] {
            assert_eq!(CsvEncoding::from_charset(label), expected, "{label}");
        }
        assert_eq!(
            Format::from_accept("text/csv; charset=GBK"),
            Some(Format::Csv(CsvEncoding::Gb18030))
        );
        assert_eq!(
            Format::from_accept("text/csv;header=present;charset=utf-8"),
            Some(Format::CSV)
        );
        // An encoding that cannot be written rules out that alternative only.
        assert_eq!(Format::from_accept("text/csv; charset=big5"), None);
        assert_eq!(
            Format::from_accept("text/csv; charset=big5, application/json"),
            Some(Format::Json)
        );
        let gb = Format::Csv(CsvEncoding::Gb18030);
        assert_eq!(gb.content_type(), "text/csv; charset=gb18030");
        assert_eq!(Format::from_accept(gb.content_type()), Some(gb));
        // Each encoding has its own tag; the name stays `csv`.
        let tags: std::collections::HashSet<_> =
            [Format::CSV, Format::Csv(CsvEncoding::Utf8Bom), gb]
                .map(|f| f.tag())
                .into();
        assert_eq!(tags.len(), 3);
        assert_eq!(gb.name(), "csv");
        assert_eq!(Format::CSV.tag(), "csv");
    }

    #[test]
    fn dates_and_times_beyond_the_calendar_are_written_in_every_text_format() {
        use arrow::array::TimestampSecondArray;
        use serde_json::json;
        let limit = chrono::NaiveDateTime::MAX.and_utc().timestamp();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("at", DataType::Timestamp(TimeUnit::Second, None), true),
        ]));
        let batch = |v: Vec<Option<i64>>| {
            let n: ArrayRef = Arc::new(Int64Array::from_iter_values(0..v.len() as i64));
            let at: ArrayRef = Arc::new(TimestampSecondArray::from(v));
            RecordBatch::try_new(schema.clone(), vec![n, at]).unwrap()
        };
        // The calendar's last second, one beyond, a NULL and the year 3170843 (a first batch
        // inside the calendar, so a later batch meets the far values, as in a streamed answer).
        let inside = batch(vec![Some(0), Some(limit)]);
        let beyond = batch(vec![Some(limit + 1), None, Some(99_999_999_999_999)]);
        let text = |format| {
            String::from_utf8(encode(
                format,
                &[inside.clone(), beyond.clone()],
                &Trailer::default(),
            ))
            .unwrap()
        };
        let json: serde_json::Value = serde_json::from_str(&text(Format::Json)).unwrap();
        let at: Vec<_> = json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["at"].clone())
            .collect();
        assert_eq!(
            at,
            [
                json!("1970-01-01T00:00:00"),
                json!("+262142-12-31T23:59:59"),
                json!("+262143-01-01T00:00:00"),
                json!(null),
                json!("+3170843-11-07T09:46:39"),
            ]
        );
        assert_eq!(
            json["columns"][1]["type"], "timestamp(s)",
            "the column keeps its type"
        );
        let ndjson = text(Format::Ndjson);
        assert_eq!(ndjson.lines().count(), 5);
        assert!(
            ndjson
                .ends_with("{\"n\":1,\"at\":null}\n{\"n\":2,\"at\":\"+3170843-11-07T09:46:39\"}\n"),
            "{ndjson}"
        );
        assert_eq!(
            text(Format::Csv(CsvEncoding::Utf8)),
            "n,at\n0,1970-01-01T00:00:00\n1,+262142-12-31T23:59:59\n\
             0,+262143-01-01T00:00:00\n1,\n2,+3170843-11-07T09:46:39\n"
        );
        for format in [Format::Json, Format::Ndjson, Format::CSV] {
            assert!(!text(format).contains("ERROR"));
        }
        // Arrow and Parquet carry the values as they are.
        for format in [Format::Arrow, Format::Parquet] {
            let mut e = encoder(format, schema.clone()).unwrap();
            e.batch(&beyond).unwrap();
            e.finish(&Trailer::default()).unwrap();
        }
    }

    #[test]
    fn csv_cells_hold_nested_values_as_their_json() {
        use arrow::array::{ArrayRef, ListArray, StructArray};
        use arrow::datatypes::Int32Type;
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![]),
        ]));
        let names: ArrayRef = Arc::new(StringArray::from(vec![Some("张,三"), Some("\""), None]));
        let st: ArrayRef = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("name", DataType::Utf8, true)),
            names,
        )]));
        let batch = RecordBatch::try_from_iter([("l", list), ("s", st)]).unwrap();
        let csv = |encoding| {
            let mut e = encoder(Format::Csv(encoding), batch.schema()).unwrap();
            let mut out = e.batch(&batch).unwrap().to_vec();
            out.extend_from_slice(&e.finish(&Trailer::default()).unwrap());
            out
        };
        let text = String::from_utf8(csv(CsvEncoding::Utf8)).unwrap();
        let rows: Vec<Vec<String>> = ::csv::Reader::from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["[1,2]", r#"{"name":"张,三"}"#],
                vec!["", r#"{"name":"\""}"#],
                vec!["[]", r#"{"name":null}"#],
            ],
            "{text}"
        );
        let gb = csv(CsvEncoding::Gb18030);
        let (decoded, _, bad) = encoding_rs::GB18030.decode(&gb);
        assert!(!bad);
        assert_eq!(decoded, text);
        // An empty result still has its header.
        let mut e = encoder(Format::Csv(CsvEncoding::Utf8), batch.schema()).unwrap();
        assert_eq!(&e.finish(&Trailer::default()).unwrap()[..], b"l,s\n");
    }

    #[test]
    fn arrow_and_parquet_round_trip() {
        let arrow = encode(Format::Arrow, &[batch(), batch()], &Trailer::default());
        let reader = arrow::ipc::reader::StreamReader::try_new(arrow.as_slice(), None).unwrap();
        let back: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(back, vec![batch(), batch()]);
        let pq = encode(Format::Parquet, &[batch(), batch()], &Trailer::default());
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(Bytes::from(pq))
                .unwrap()
                .build()
                .unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 4);
    }

    #[test]
    fn weighted_lists_read_names_qualities_and_parameters() {
        let list: Vec<_> =
            weighted("text/csv ; charset = GB18030 ;q=0.5, gzip;q=2, zstd;q=x, */*;Q=0").collect();
        let names: Vec<_> = list.iter().map(|w| (w.name, w.quality)).collect();
        assert_eq!(
            names,
            [
                ("text/csv", 0.5),
                ("gzip", 1.0),
                ("zstd", 1.0),
                ("*/*", 0.0)
            ]
        );
        assert_eq!(list[0].param("CHARSET"), Some("GB18030"));
        assert_eq!(list[1].param("charset"), None);
    }

    #[test]
    fn formats_by_name_and_accept() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.name()), Some(f));
            assert_eq!(Format::from_accept(f.content_type()), Some(f));
        }
        assert_eq!(
            Format::from_accept("text/html, */*;q=0.1"),
            Some(Format::Json)
        );
        assert_eq!(Format::from_accept("text/html"), None);
        assert_eq!(Format::from_name("xml"), None);
        // Qualities decide, not the order; `q=0` excludes; a named type beats a wildcard of
        // the same quality; among equals the first listed.
        for (accept, want) in [
            ("application/json;q=0.1, text/csv", Some(Format::CSV)),
            ("text/csv;q=0.9, application/json;q=0.1", Some(Format::CSV)),
            ("application/x-ndjson;q=0", None),
            ("application/x-ndjson;q=0, */*", Some(Format::Json)),
            ("*/*, application/vnd.apache.parquet", Some(Format::Parquet)),
            (
                "*/*;q=0.8, application/vnd.apache.arrow.stream;q=0.5",
                Some(Format::Json),
            ),
            ("text/csv, application/json", Some(Format::CSV)),
            ("application/json, text/csv", Some(Format::Json)),
            ("text/csv;q=abc, application/json;q=0.5", Some(Format::CSV)),
            (
                "text/csv;charset=big5;q=1, application/json;q=0.2",
                Some(Format::Json),
            ),
        ] {
            assert_eq!(Format::from_accept(accept), want, "{accept}");
        }
    }

    /// Types Parquet files cannot hold, at the top or nested, are the query's to change (a
    /// 400 naming the column), not a writer failure; what Parquet holds is written.
    #[test]
    fn types_parquet_cannot_hold_are_refused_by_column() {
        use arrow::datatypes::{Fields, IntervalUnit};
        let month_day_nano = DataType::Interval(IntervalUnit::MonthDayNano);
        for (name, dt) in [
            ("i", month_day_nano.clone()),
            (
                "l",
                DataType::List(Arc::new(Field::new("item", month_day_nano.clone(), true))),
            ),
            (
                "s",
                DataType::Struct(Fields::from(vec![Field::new("x", month_day_nano, true)])),
            ),
            ("e", DataType::Struct(Fields::empty())),
        ] {
            let schema = Arc::new(Schema::new(vec![
                Field::new("ok", DataType::Int64, true),
                Field::new(name, dt, true),
            ]));
            match encoder(Format::Parquet, schema.clone()) {
                Err(EncodeError::Unwritable(m)) => {
                    assert!(m.contains(&format!("column {name:?} holds")), "{m}");
                    assert!(m.contains("format=arrow"), "{m}");
                }
                other => panic!("{name}: {:?}", other.err()),
            }
            encoder(Format::Arrow, schema).unwrap();
        }
        let day_time = Arc::new(Schema::new(vec![Field::new(
            "d",
            DataType::Interval(IntervalUnit::DayTime),
            true,
        )]));
        encoder(Format::Parquet, day_time).unwrap();
    }
}
