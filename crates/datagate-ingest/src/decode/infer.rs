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
    inner: Option<Box<dyn PushDecoder>>,
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
            inner: None,
        }
    }

    fn start(&mut self) -> Result<Vec<RecordBatch>> {
        let inferred = infer(&self.format, &self.head)?;
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
        let mut inner: Box<dyn PushDecoder> = match self.format {
            TextFormat::Csv(opts) => Box::new(CsvDecoder::new(schema, opts)),
            TextFormat::Ndjson { batch_rows } => Box::new(NdjsonDecoder::new(schema, batch_rows)),
        };
        let out = inner.push(&std::mem::take(&mut self.head))?;
        self.inner = Some(inner);
        Ok(out)
    }
}

fn normalise(dt: &DataType) -> Option<DataType> {
    match dt {
        DataType::Null => Some(DataType::Utf8),
        DataType::Timestamp(unit, _) => Some(DataType::Timestamp(*unit, None)),
        other => ColumnType::from_arrow(other).ok().map(|t| t.to_arrow()),
    }
}

fn infer(format: &TextFormat, head: &[u8]) -> Result<SchemaRef> {
    let inferred: Schema = match format {
        TextFormat::Csv(opts) => arrow::csv::reader::Format::default()
            .with_header(true)
            .with_delimiter(opts.delimiter)
            .infer_schema(head, Some(INFER_ROWS))
            .map(|(s, _)| s)
            .map_err(|e| {
                IngestError::invalid_data(format!(
                    "cannot infer a schema from the CSV header and leading rows: {e}"
                ))
            })?,
        TextFormat::Ndjson { .. } => {
            arrow::json::reader::infer_json_schema(std::io::BufReader::new(head), Some(INFER_ROWS))
                .map(|(s, _)| s)
                .map_err(|e| {
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
    let mut fields = Vec::with_capacity(inferred.fields().len());
    for f in inferred.fields() {
        let dt = normalise(f.data_type()).ok_or_else(|| IngestError::InvalidData {
            message: format!(
                "column {:?} has type {} which datagate cannot store; declare the columns",
                f.name(),
                f.data_type()
            ),
            line: None,
            row: None,
            column: Some(f.name().clone()),
        })?;
        fields.push(Field::new(f.name(), dt, true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

impl PushDecoder for InferringDecoder {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        if let Some(inner) = self.inner.as_mut() {
            return inner.push(chunk);
        }
        self.head.extend_from_slice(chunk);
        let lines = self.head.iter().filter(|b| **b == b'\n').count();
        if lines > INFER_ROWS || self.head.len() >= INFER_BYTES {
            return self.start();
        }
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if self.inner.is_none() {
            if self.head.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(IngestError::invalid_data("the body is empty"));
            }
            out = self.start()?;
        }
        if let Some(inner) = self.inner.as_mut() {
            out.extend(inner.finish()?);
        }
        Ok(out)
    }
}
