//! CSV with a header row. Columns are matched by name (the header), not by position, and each
//! batch comes out in the dataset's column order. Errors carry the 1-based line and the column.

use super::PushDecoder;
use crate::error::{IngestError, Result};
use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// Options of a CSV upload.
#[derive(Debug, Clone, Copy)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub batch_rows: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: b',',
            batch_rows: 8192,
        }
    }
}

struct Body {
    decoder: arrow::csv::reader::Decoder,
    /// For each dataset column, its position in the file.
    order: Vec<usize>,
    file_columns: Vec<String>,
}

/// Decodes CSV with a header row into batches of `target`'s schema.
pub struct CsvDecoder {
    target: SchemaRef,
    opts: CsvOptions,
    header: Vec<u8>,
    body: Option<Body>,
}

impl CsvDecoder {
    pub fn new(target: SchemaRef, opts: CsvOptions) -> Self {
        Self {
            target,
            opts,
            header: Vec::new(),
            body: None,
        }
    }

    fn flush_batch(&mut self) -> Result<Option<RecordBatch>> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        let batch = body
            .decoder
            .flush()
            .map_err(|e| map_arrow_error(e, &body.file_columns))?;
        let Some(batch) = batch else { return Ok(None) };
        let columns: Vec<ArrayRef> = body
            .order
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        let out = RecordBatch::try_new(self.target.clone(), columns)
            .map_err(|e| IngestError::Internal(format!("reordering columns: {e}")))?;
        Ok(Some(out))
    }

    fn start_body(&mut self) -> Result<Body> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(self.opts.delimiter)
            .from_reader(self.header.as_slice());
        let mut record = csv::StringRecord::new();
        let ok = reader
            .read_record(&mut record)
            .map_err(|e| line_error(1, None, &format!("cannot read the header row: {e}")))?;
        if !ok {
            return Err(IngestError::invalid_data(
                "the body is empty: a header row is required",
            ));
        }
        let mut names: Vec<String> = record.iter().map(|s| s.trim().to_string()).collect();
        if let Some(first) = names.first_mut() {
            *first = first.trim_start_matches('\u{feff}').to_string();
        }
        let mut fields = Vec::with_capacity(names.len());
        for name in &names {
            let Ok(f) = self.target.field_with_name(name) else {
                return Err(line_error(
                    1,
                    Some(name),
                    &format!("header column {name:?} is not a column of the dataset"),
                ));
            };
            if fields.iter().any(|f: &Field| f.name() == name) {
                return Err(line_error(
                    1,
                    Some(name),
                    &format!("header column {name:?} appears twice"),
                ));
            }
            fields.push(Field::new(name, f.data_type().clone(), true));
        }
        let mut order = Vec::with_capacity(self.target.fields().len());
        for f in self.target.fields() {
            match names.iter().position(|n| n == f.name()) {
                Some(i) => order.push(i),
                None => {
                    return Err(line_error(
                        1,
                        Some(f.name()),
                        &format!("the header misses the dataset column {:?}", f.name()),
                    ));
                }
            }
        }
        let file_schema = Arc::new(Schema::new(fields));
        let decoder = arrow::csv::ReaderBuilder::new(file_schema)
            .with_header(false)
            .with_delimiter(self.opts.delimiter)
            .with_batch_size(self.opts.batch_rows.max(1))
            .build_decoder();
        Ok(Body {
            decoder,
            order,
            file_columns: std::mem::take(&mut names),
        })
    }
}

impl PushDecoder for CsvDecoder {
    fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if self.body.is_none() {
            match chunk.iter().position(|b| *b == b'\n') {
                None => {
                    self.header.extend_from_slice(chunk);
                    if self.header.len() > 1 << 20 {
                        return Err(line_error(1, None, "the header line is longer than 1 MiB"));
                    }
                    return Ok(out);
                }
                Some(nl) => {
                    self.header.extend_from_slice(&chunk[..=nl]);
                    chunk = &chunk[nl + 1..];
                    self.body = Some(self.start_body()?);
                }
            }
        }
        while !chunk.is_empty() {
            let body = self
                .body
                .as_mut()
                .ok_or_else(|| IngestError::Internal("no body".into()))?;
            let used = body
                .decoder
                .decode(chunk)
                .map_err(|e| map_arrow_error(e, &body.file_columns))?;
            chunk = &chunk[used..];
            if used == 0 || body.decoder.capacity() == 0 {
                match self.flush_batch()? {
                    Some(b) => out.push(b),
                    // Nothing consumed and nothing to flush would loop forever.
                    None if used == 0 => {
                        return Err(IngestError::Internal("CSV decoder made no progress".into()));
                    }
                    None => {}
                }
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        if self.body.is_none() {
            if self.header.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(IngestError::invalid_data(
                    "the body is empty: a header row is required",
                ));
            }
            self.header.push(b'\n');
            self.body = Some(self.start_body()?);
        }
        let mut out = Vec::new();
        // A final line without a newline is still in the decoder; an empty decode flushes it.
        if let Some(body) = self.body.as_mut() {
            body.decoder
                .decode(&[])
                .map_err(|e| map_arrow_error(e, &body.file_columns))?;
        }
        while let Some(b) = self.flush_batch()? {
            out.push(b);
        }
        Ok(out)
    }
}

fn line_error(line: u64, column: Option<&str>, message: &str) -> IngestError {
    IngestError::InvalidData {
        message: format!("line {line}: {message}"),
        line: Some(line),
        row: None,
        column: column.map(str::to_string),
    }
}

/// Turns arrow's CSV error into one that names the source line and column.
fn map_arrow_error(e: arrow::error::ArrowError, columns: &[String]) -> IngestError {
    let msg = e.to_string();
    // arrow numbers data records from 0 for value errors and from 1 for field-count errors,
    // counting from the start of the body; the header is line 1 of the source. (A quoted field
    // spanning lines makes this the record's number rather than its physical line.)
    let after = |pat: &str| -> Option<u64> {
        let i = msg.find(pat)? + pat.len();
        msg[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    if let Some(n) = after("for column ") {
        let column = columns.get(n as usize).cloned();
        let line = after(" at line ").map(|l| l + 2);
        let value = msg
            .split("value '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap_or("");
        let ty = msg
            .split("as type '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap_or("");
        let where_ = line.map(|l| format!("line {l}: ")).unwrap_or_default();
        return IngestError::InvalidData {
            message: format!(
                "{where_}column {:?}: value {value:?} is not a valid {}",
                column.as_deref().unwrap_or("?"),
                ty.to_ascii_lowercase()
            ),
            line,
            row: None,
            column,
        };
    }
    if let Some(l) = after("fields for line ") {
        let line = l + 1;
        return IngestError::InvalidData {
            message: format!(
                "line {line}: wrong number of fields (expected {})",
                columns.len()
            ),
            line: Some(line),
            row: None,
            column: None,
        };
    }
    IngestError::invalid_data(format!("invalid CSV: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::DataType;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn decode_all(input: &[u8], chunk: usize) -> Result<Vec<RecordBatch>> {
        let mut d = CsvDecoder::new(
            schema(),
            CsvOptions {
                delimiter: b',',
                batch_rows: 2,
            },
        );
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            out.extend(d.push(c)?);
        }
        out.extend(d.finish()?);
        Ok(out)
    }

    #[test]
    fn matches_columns_by_name_in_any_chunking() {
        let input = "name,id\n张三,1\n\"李,四\",2\n王五,3";
        for chunk in [1, 2, 3, 7, 100] {
            let batches = decode_all(input.as_bytes(), chunk).unwrap();
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!(rows, 3, "chunk {chunk}");
            let ids: Vec<i64> = batches
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                })
                .collect();
            assert_eq!(ids, [1, 2, 3]);
            let b = &batches[0];
            let names = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            assert_eq!(names.value(0), "张三");
            assert_eq!(b.schema(), schema());
        }
    }

    #[test]
    fn errors_name_line_and_column() {
        let input = "id,name\n1,a\n2,b\n3,c\nx,d\n";
        let err = decode_all(input.as_bytes(), 4).unwrap_err();
        match err {
            IngestError::InvalidData {
                line,
                column,
                message,
                ..
            } => {
                assert_eq!(line, Some(5), "{message}");
                assert_eq!(column.as_deref(), Some("id"));
                assert!(message.contains("\"x\""), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let ragged = "id,name\n1,a\n2,b\n3,c\n4\n";
        match decode_all(ragged.as_bytes(), 100).unwrap_err() {
            IngestError::InvalidData { line, message, .. } => {
                assert_eq!(line, Some(5), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_must_match() {
        for bad in [
            "id\n1\n",
            "id,name,extra\n1,a,b\n",
            "id,id\n1,2\n",
            "",
            "\n",
        ] {
            assert!(
                matches!(
                    decode_all(bad.as_bytes(), 100),
                    Err(IngestError::InvalidData { .. })
                ),
                "{bad:?}"
            );
        }
        let nulls = decode_all(b"id,name\n,\n", 100).unwrap();
        assert!(nulls[0].column(0).is_null(0));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::DataType;
    use proptest::prelude::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    proptest! {
        /// However the bytes are split into chunks, and whatever the names hold (delimiters,
        /// quotes, non-ASCII), decoding gives back exactly the rows that were written.
        #[test]
        fn chunking_never_changes_the_rows(
            rows in proptest::collection::vec((any::<i64>(), "[a-z张王,\" ]{1,12}"), 0..60),
            cuts in proptest::collection::vec(1usize..40, 1..20),
            batch_rows in 1usize..8,
        ) {
            let mut w = ::csv::Writer::from_writer(Vec::new());
            w.write_record(["name", "id"]).unwrap();
            for (id, name) in &rows {
                w.write_record([name.as_str(), &id.to_string()]).unwrap();
            }
            let bytes = w.into_inner().unwrap();
            let mut d = CsvDecoder::new(schema(), CsvOptions { delimiter: b',', batch_rows });
            let mut batches = Vec::new();
            let mut rest = bytes.as_slice();
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                batches.extend(d.push(&rest[..n]).unwrap());
                rest = &rest[n..];
                i += 1;
            }
            batches.extend(d.finish().unwrap());
            let mut got = Vec::new();
            for b in &batches {
                prop_assert!(b.num_rows() <= batch_rows);
                let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                let names = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                for r in 0..b.num_rows() {
                    got.push((ids.value(r), names.value(r).to_string()));
                }
            }
            prop_assert_eq!(got, rows);
        }
    }
}
