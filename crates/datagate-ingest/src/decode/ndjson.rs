//! Newline-delimited JSON: one object per line, fields matched to columns by name.
//!
//! Lines are gathered into batches of complete lines and decoded together; when a batch fails,
//! its lines are decoded one by one to name the exact line, so the error path costs a batch
//! and the happy path nothing.

use super::{BATCH_BYTES, PushDecoder};
use crate::error::{IngestError, Result};
use arrow::datatypes::SchemaRef;
use arrow::json::ReaderBuilder;
use arrow::record_batch::RecordBatch;

/// The longest line an upload may hold: a decoder keeps a line whole, and its column and
/// Parquet page hold it again.
const MAX_LINE_BYTES: usize = 64 << 20;

/// Decodes NDJSON into batches of the dataset's schema.
pub struct NdjsonDecoder {
    target: SchemaRef,
    /// `target` with the columns [`text_columns`](super::text_columns) converts read as text
    /// (decimals, integers, dates, times and booleans), when it has any.
    text: Option<SchemaRef>,
    batch_rows: usize,
    batch_bytes: usize,
    pending: Vec<u8>,
    pending_lines: usize,
    /// Bytes of the line in progress (the end of `pending` after its last newline).
    partial: usize,
    /// Lines of the source before `pending`.
    lines_done: u64,
    seen_data: bool,
    /// The dataset's text columns: an array or object there is stored as its JSON text.
    text_targets: std::collections::HashSet<String>,
    /// A batch held an array or object for a text column: later batches are rewritten before
    /// their first decode, not after it fails.
    nested_seen: bool,
}

impl NdjsonDecoder {
    pub fn new(target: SchemaRef, batch_rows: usize) -> Self {
        let text_targets = target
            .fields()
            .iter()
            .filter(|f| f.data_type() == &arrow::datatypes::DataType::Utf8)
            .map(|f| f.name().clone())
            .collect();
        Self {
            text_targets,
            nested_seen: false,
            text: super::text_columns::as_text(&target, super::text_columns::Reader::Ndjson),
            target,
            batch_rows: batch_rows.max(1),
            batch_bytes: BATCH_BYTES,
            pending: Vec::new(),
            pending_lines: 0,
            partial: 0,
            lines_done: 0,
            seen_data: false,
        }
    }

    fn decode(
        &self,
        bytes: &[u8],
    ) -> std::result::Result<Option<RecordBatch>, arrow::error::ArrowError> {
        if let Some(why) = trailing_comma(bytes) {
            return Err(arrow::error::ArrowError::JsonError(why));
        }
        let lines = bytes.iter().filter(|b| **b == b'\n').count() + 1;
        let schema = self.text.as_ref().unwrap_or(&self.target);
        // Numbers and booleans are taken by text columns as their JSON text (as DuckDB and
        // PostgreSQL take them): a column whose values are sometimes numbers, sometimes
        // strings is inferred as text, and decimals, integers, dates and times are read as text
        // to be converted here (arrow-json cuts 7.5 to 7 and 1.239 to 1.23, and reads a number
        // as a time in the column's unit).
        let mut d = ReaderBuilder::new(schema.clone())
            .with_strict_mode(true)
            .with_coerce_primitive(true)
            .with_batch_size(lines)
            .build_decoder()?;
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = d.decode(rest)?;
            if n == 0 {
                break;
            }
            rest = &rest[n..];
        }
        if d.has_partial_record() {
            return Err(arrow::error::ArrowError::JsonError(
                "a JSON object is not complete".into(),
            ));
        }
        let Some(batch) = d.flush()? else {
            return Ok(None);
        };
        if self.text.is_none() {
            return Ok(Some(batch));
        }
        super::text_columns::from_text(batch.columns().to_vec(), &self.target)
            .map(Some)
            .map_err(|bad| arrow::error::ArrowError::JsonError(bad.message))
    }

    /// Decodes complete lines starting at source line `first_line`.
    fn decode_lines(&mut self, bytes: &[u8], first_line: u64) -> Result<Option<RecordBatch>> {
        if !bytes.iter().any(|b| !b.is_ascii_whitespace()) {
            return Ok(None);
        }
        self.seen_data = true;
        let rewritten = match self.nested_seen {
            true => self.nested_as_text(bytes),
            false => None,
        };
        match self.decode(rewritten.as_deref().unwrap_or(bytes)) {
            Ok(b) => Ok(b),
            Err(batch_err) => {
                // Arrays and objects in text columns: the lines again with each as its text.
                if rewritten.is_none()
                    && let Some(Ok(b)) = self.nested_as_text(bytes).map(|b| self.decode(&b))
                {
                    self.nested_seen = true;
                    return Ok(b);
                }
                for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                    let text = self.nested_as_text(line);
                    if let Err(e) = self.decode(text.as_deref().unwrap_or(line)) {
                        return Err(line_error(first_line + i as u64, &e.to_string()));
                    }
                }
                Err(IngestError::invalid_data(format!(
                    "invalid NDJSON between lines {first_line} and {}: {batch_err}",
                    first_line + self.pending_lines as u64
                )))
            }
        }
    }

    /// `bytes` (whole lines) with every array or object given for a text column replaced by a
    /// string of its JSON text as written (`{"addr": {"no": 5}}` stores `{"no": 5}`), as
    /// DuckDB and PostgreSQL cast JSON to text; `None` when no line holds one. arrow's reader
    /// takes no nested value into a text column: until a batch has held one, a batch is
    /// rewritten only when its decode fails; after, before (an upload of such values costs
    /// about twice one of strings, README "Publishing").
    fn nested_as_text(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        if self.text_targets.is_empty() {
            return None;
        }
        replace_nested(
            bytes,
            |key| self.text_targets.contains(key),
            |text| serde_json::to_string(text).unwrap_or_default(),
        )
    }
}

/// `bytes` (whole lines) with each array or object of a key `take` accepts replaced by the
/// JSON `replace` gives for its text; `None` when no line holds one. A line that is no JSON
/// object stays as it was, for the decoder to name; the lines stay one for one, so errors keep
/// their line numbers.
pub(super) fn replace_nested(
    bytes: &[u8],
    take: impl Fn(&str) -> bool,
    replace: impl Fn(&str) -> String,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    let mut changed = false;
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        let nested = |(key, value): &(String, Box<serde_json::value::RawValue>)| {
            take(key) && value.get().starts_with(['{', '['])
        };
        let entries = match serde_json::from_slice::<ObjectEntries>(line) {
            Ok(ObjectEntries(entries)) if entries.iter().any(nested) => entries,
            _ => {
                out.extend_from_slice(line);
                continue;
            }
        };
        changed = true;
        out.push(b'{');
        for (n, entry) in entries.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &entry.0).ok()?;
            out.push(b':');
            match nested(entry) {
                true => out.extend_from_slice(replace(entry.1.get()).as_bytes()),
                false => out.extend_from_slice(entry.1.get().as_bytes()),
            }
        }
        out.push(b'}');
    }
    changed.then_some(out)
}

/// The keys of the objects among `bytes`' lines in the order they first appear (arrow's
/// inference orders its columns by name; a dataset's columns follow the data, as DuckDB's and
/// pandas' readers order them).
pub(super) fn key_order(bytes: &[u8]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in bytes.split(|b| *b == b'\n') {
        if let Ok(ObjectEntries(entries)) = serde_json::from_slice(line) {
            for (key, _) in entries {
                if seen.insert(key.clone()) {
                    keys.push(key);
                }
            }
        }
    }
    keys
}

/// A JSON object's entries in their order, duplicates kept (the decoder takes the last, as
/// it does in any line).
struct ObjectEntries(Vec<(String, Box<serde_json::value::RawValue>)>);

impl<'de> serde::Deserialize<'de> for ObjectEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = ObjectEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<ObjectEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(ObjectEntries(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

fn line_error(line: u64, msg: &str) -> IngestError {
    // "Encountered non-UTF-8 data", "Encountered truncated UTF-8 sequence".
    if msg.contains("UTF-8 data") || msg.contains("UTF-8 sequence") {
        return super::not_utf8(Some(line), None);
    }
    let column = msg
        .split("field '")
        .nth(1)
        .or_else(|| msg.split("column '").nth(1))
        .and_then(|r| r.split('\'').next())
        .or_else(|| msg.split("column \"").nth(1)?.split('"').next())
        .map(str::to_string);
    IngestError::InvalidData {
        message: format!("line {line}: {}", msg.trim_start_matches("Json error: ")),
        line: Some(line),
        row: None,
        column,
    }
}

/// Why a line of `bytes` with a trailing comma (`{"a":3,}`, `[1,]`) is no JSON: arrow-json's
/// reader takes one, where JSON (and PostgreSQL, DuckDB, any JSON parser) does not. Only a
/// bracket closing right after a comma or a blank (JSON's blanks within a line: space, tab,
/// carriage return) can end one, and a SIMD search finds those at a few GB/s; at each, the
/// blanks are skipped back to a comma, and only a line with one is parsed again, to tell a
/// comma in a string from one in the structure.
fn trailing_comma(bytes: &[u8]) -> Option<String> {
    static CLOSE_AFTER: std::sync::LazyLock<Option<aho_corasick::packed::Searcher>> =
        std::sync::LazyLock::new(|| {
            let mut b = aho_corasick::packed::Config::new().builder();
            for before in [",", " ", "\t", "\r"] {
                for close in ["}", "]"] {
                    b.add(format!("{before}{close}"));
                }
            }
            b.build()
        });
    let at = |i: usize| -> Option<String> {
        let before = bytes[..i].iter().rposition(|b| !b.is_ascii_whitespace())?;
        if bytes[before] != b',' {
            return None;
        }
        let start = memchr::memrchr(b'\n', &bytes[..i]).map_or(0, |n| n + 1);
        let end = memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n);
        let e = serde_json::from_slice::<serde_json::Value>(&bytes[start..end]).err()?;
        Some(format!(
            "not JSON at column {}: {}",
            e.column(),
            what_is_wrong(&e)
        ))
    };
    match CLOSE_AFTER.as_ref() {
        Some(searcher) => searcher.find_iter(bytes).find_map(|m| at(m.end() - 1)),
        // A processor without the searcher's instructions: every closing bracket.
        None => memchr::memchr2_iter(b'}', b']', bytes).find_map(at),
    }
}

/// serde_json's message without its " at line L column C" (the line is named by the caller).
pub(super) fn what_is_wrong(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.rsplit_once(" at line ")
        .map_or(text.clone(), |(m, _)| m.to_string())
}

impl PushDecoder for NdjsonDecoder {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', chunk) {
            self.pending_lines += 1;
            self.partial = 0;
            // A batch ends at `batch_rows` lines, or after `batch_bytes` of them.
            let held = self.pending.len() + (i + 1 - start);
            if self.pending_lines == self.batch_rows || held >= self.batch_bytes {
                self.pending.extend_from_slice(&chunk[start..=i]);
                start = i + 1;
                let bytes = std::mem::take(&mut self.pending);
                let first = self.lines_done + 1;
                if let Some(b) = self.decode_lines(&bytes, first)? {
                    out.push(b);
                }
                self.lines_done += self.pending_lines as u64;
                self.pending_lines = 0;
            }
        }
        self.pending.extend_from_slice(&chunk[start..]);
        self.partial += match memchr::memrchr(b'\n', chunk) {
            Some(i) => chunk.len() - i - 1,
            None => chunk.len(),
        };
        if self.partial > MAX_LINE_BYTES {
            return Err(line_error(
                self.lines_done + self.pending_lines as u64 + 1,
                "a line is longer than 64 MiB",
            ));
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        let bytes = std::mem::take(&mut self.pending);
        let first = self.lines_done + 1;
        let out = self.decode_lines(&bytes, first)?;
        if !self.seen_data {
            return Err(IngestError::invalid_data("the body is empty"));
        }
        Ok(out.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn run(input: &str, chunk: usize) -> Result<usize> {
        let mut d = NdjsonDecoder::new(schema(), 2);
        let mut rows = 0;
        for c in input.as_bytes().chunks(chunk) {
            rows += d.push(c)?.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        rows += d.finish()?.iter().map(|b| b.num_rows()).sum::<usize>();
        Ok(rows)
    }

    #[test]
    fn decodes_in_any_chunking() {
        let input = "{\"id\":1,\"name\":\"张三\"}\n{\"name\":\"李四\",\"id\":2}\n\n{\"id\":3}";
        for chunk in [1, 3, 100] {
            assert_eq!(run(input, chunk).unwrap(), 3);
        }
    }

    /// An array or object given for a text column is stored as its JSON text as written, key
    /// order, spaces and escapes kept; one for another column is refused, and a bad line in
    /// a batch that holds such values is still named by its own line.
    #[test]
    fn nested_values_in_text_columns_are_their_json_text() {
        let names = |input: &str| -> Result<Vec<Option<String>>> {
            // Two lines a batch: the second batch is rewritten before its first decode.
            let mut d = NdjsonDecoder::new(schema(), 2);
            let mut batches = d.push(input.as_bytes())?;
            batches.extend(d.finish()?);
            Ok(batches
                .iter()
                .flat_map(|b| {
                    let a = b
                        .column(1)
                        .as_any()
                        .downcast_ref::<arrow::array::StringArray>();
                    let a = a.unwrap().iter().map(|v| v.map(str::to_string));
                    a.collect::<Vec<_>>()
                })
                .collect())
        };
        let input = "{\"id\":1,\"name\":{\"zh\": \"张三\", \"en\":\"Zhang \\\"San\\\"\"}}\n\
                     {\"name\":[1, [2]],\"id\":2}\n\
                     {\"id\":3,\"name\":\"李四\"}\n\
                     {\"id\":4}\n";
        assert_eq!(
            names(input).unwrap(),
            [
                Some(r#"{"zh": "张三", "en":"Zhang \"San\""}"#.to_string()),
                Some("[1, [2]]".to_string()),
                Some("李四".to_string()),
                None,
            ]
        );
        for (input, bad) in [
            ("{\"id\":1,\"name\":[1]}\n{\"id\":{\"n\":2}}\n", 2),
            (
                "{\"id\":1,\"name\":{}}\n{\"id\":2,\"name\":[]}\n{\"id\":\"x\"}\n",
                3,
            ),
            ("{\"id\":1,\"name\":{}}\n{\"id\":2,\"name\":[],}\n", 2),
        ] {
            match names(input).unwrap_err() {
                IngestError::InvalidData { line, message, .. } => {
                    assert_eq!(line, Some(bad), "{input}: {message}")
                }
                e => panic!("{e:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_line() {
        let input = "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n{\"id\":\"x\"}\n{\"id\":5}\n";
        match run(input, 7).unwrap_err() {
            IngestError::InvalidData { line, message, .. } => {
                assert_eq!(line, Some(4), "{message}")
            }
            e => panic!("{e:?}"),
        }
        match run("{\"id\":1}\n{\"id\":1,\"extra\":true}\n", 100).unwrap_err() {
            IngestError::InvalidData { line, message, .. } => {
                assert_eq!(line, Some(2), "{message}")
            }
            e => panic!("{e:?}"),
        }
        match run("{\"id\":1}\n{\"id\":", 100).unwrap_err() {
            IngestError::InvalidData { line, message, .. } => {
                assert_eq!(line, Some(2), "{message}")
            }
            e => panic!("{e:?}"),
        }
        assert!(run("", 10).is_err());
        assert!(run("\n\n", 10).is_err());
    }

    /// A trailing comma is no JSON, wherever it stands in a batch (arrow-json's reader took
    /// `{"id":3,}`); a comma and a bracket inside a string are text.
    #[test]
    fn trailing_commas_are_refused_by_their_line() {
        for (bad, column) in [
            // serde_json's column: the bracket's.
            ("{\"id\":3,}", 9),
            ("{\"id\":3, \t}", 11),
            ("{\"id\":3,\"name\":\"x\",}", 20),
            ("{\"id\":3,\r}", 10),
            ("{\"id\":[1,]}", 10),
        ] {
            let input = format!("{{\"id\":1}}\n{{\"id\":2}}\n{bad}\n{{\"id\":4}}\n");
            for chunk in [5, 1000] {
                match run(&input, chunk).unwrap_err() {
                    IngestError::InvalidData { line, message, .. } => {
                        assert_eq!(line, Some(3), "{bad}: {message}");
                        assert!(
                            message.contains(&format!("column {column}: trailing comma")),
                            "{bad}: {message}"
                        );
                    }
                    e => panic!("{e:?}"),
                }
            }
        }
        let text =
            "{\"id\":1,\"name\":\",}\"}\n{\"name\":\"a, ]\",\"id\":2}\n{\"name\":\"\\\",}\"}\n";
        assert_eq!(run(text, 1000).unwrap(), 3);
    }

    /// A batch ends after `batch_bytes` of lines, and lines of any length under the bound are
    /// taken however many of them a batch would gather (before, 8,192 lines of 9 KB were
    /// refused as "a line longer than 64 MiB").
    #[test]
    fn batches_are_bounded_by_bytes_not_only_lines() {
        let doc = "x".repeat(9 << 10);
        let lines = 8000;
        let input: String = (0..lines)
            .map(|i| format!("{{\"id\":{i},\"name\":\"{doc}\"}}\n"))
            .collect();
        let mut d = NdjsonDecoder::new(schema(), 8192);
        let mut batches = Vec::new();
        for c in input.as_bytes().chunks(1 << 16) {
            batches.extend(d.push(c).unwrap());
        }
        batches.extend(d.finish().unwrap());
        let rows: Vec<usize> = batches.iter().map(|b| b.num_rows()).collect();
        assert_eq!(rows.iter().sum::<usize>(), lines);
        // 16 MiB of 9 KB lines: 1,821 lines and the one that crosses the bound.
        let most = BATCH_BYTES / (9 << 10) + 1;
        assert!(rows.iter().all(|n| *n <= most), "{rows:?}");
        assert!(rows.len() >= lines / most, "{rows:?}");
        // A line over the bound is still refused, by the line it starts on.
        let mut d = NdjsonDecoder::new(schema(), 8192);
        d.push(b"{\"id\":1}\n{\"id\":2}\n{\"id\":3,\"name\":\"")
            .unwrap();
        let chunk = vec![b'z'; 1 << 20];
        let e = (0..100)
            .find_map(|_| d.push(&chunk).err())
            .expect("a 100 MiB line was taken");
        match e {
            IngestError::InvalidData { line, message, .. } => {
                assert_eq!(line, Some(3), "{message}");
                assert!(message.contains("longer than 64 MiB"), "{message}");
            }
            e => panic!("{e:?}"),
        }
    }
}

#[cfg(test)]
mod messages {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// `input` decoded whole into batches of two lines.
    fn decode_all(schema: &SchemaRef, input: &str) -> Result<Vec<RecordBatch>> {
        let mut d = NdjsonDecoder::new(schema.clone(), 2);
        let mut batches = d.push(input.as_bytes())?;
        batches.extend(d.finish()?);
        Ok(batches)
    }

    #[test]
    fn wrong_type_names_line_column_and_value() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("opened", DataType::Date32, true),
        ]));
        let mut d = NdjsonDecoder::new(schema, 10);
        let input = "{\"id\":1,\"opened\":\"2020-01-01\"}\n{\"id\":2,\"opened\":\"soon\"}\n";
        let err = d
            .push(input.as_bytes())
            .and_then(|_| d.finish())
            .unwrap_err();
        match err {
            IngestError::InvalidData {
                line,
                column,
                message,
                ..
            } => {
                assert_eq!(line, Some(2), "{message}");
                assert_eq!(column.as_deref(), Some("opened"), "{message}");
                assert!(message.contains("soon"), "{message}");
            }
            e => panic!("{e:?}"),
        }
    }

    /// Decimals round half away from zero whether written as numbers or strings; one too large
    /// is refused by its line and column; numbers and booleans are taken by text columns.
    #[test]
    fn decimals_round_and_text_columns_take_numbers() {
        use arrow::array::AsArray;
        use arrow::datatypes::Decimal128Type;
        let schema = Arc::new(Schema::new(vec![
            Field::new("m", DataType::Decimal128(5, 2), true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let run = |input: &str| decode_all(&schema, input);
        let batches = run(
            "{\"m\":1.235,\"note\":7}\n\n{\"m\":\"-1.235\",\"note\":true}\n{\"m\":1.5e-2,\"note\":\"x\"}\n{}\n",
        )
        .unwrap();
        let m: Vec<Option<i128>> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<Decimal128Type>()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(m, [Some(124), Some(-124), Some(2), None]);
        let notes: Vec<Option<String>> = batches
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            notes,
            [
                Some("7".into()),
                Some("true".into()),
                Some("x".into()),
                None
            ]
        );
        assert_eq!(
            batches[0].schema().field(0).data_type(),
            &DataType::Decimal128(5, 2)
        );
        let e = run("{\"m\":1}\n{\"m\":2}\n\n{\"m\":999.995}\n").unwrap_err();
        let message = crate::decode::invalid_at(e, Some(4), Some("m"));
        assert!(
            message.contains("does not fit decimal128(5,2)"),
            "{message}"
        );
    }

    /// Integers are taken when whole (`7.0`, `7e2`); a fraction or a value out of the column's
    /// range is refused with its line and column (arrow-json cut 7.5 to 7).
    #[test]
    fn integers_are_whole_or_refused() {
        use arrow::array::AsArray;
        use arrow::datatypes::{Int64Type, UInt8Type};
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("u", DataType::UInt8, true),
        ]));
        let run = |input: &str| decode_all(&schema, input);
        let batches = run("{\"n\":7,\"u\":255}\n{\"n\":7.0,\"u\":\"3\"}\n{\"n\":-9e2}\n").unwrap();
        let n: Vec<Option<i64>> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<Int64Type>()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(n, [Some(7), Some(7), Some(-900)]);
        let u: Vec<Option<u8>> = batches
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_primitive::<UInt8Type>()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(u, [Some(255), Some(3), None]);
        for (input, column, what) in [
            (
                "{\"n\":1}\n{\"n\":2}\n{\"n\":7.5}\n",
                "n",
                "it has a fraction",
            ),
            (
                "{\"n\":1}\n{\"n\":2}\n{\"u\":256}\n",
                "u",
                "out of range for uint8",
            ),
            (
                "{\"n\":1}\n{\"n\":2}\n{\"n\":true}\n",
                "n",
                "is not a valid int64",
            ),
        ] {
            let message = crate::decode::invalid_at(run(input).unwrap_err(), Some(3), Some(column));
            assert!(message.contains(what), "{message}");
        }
    }

    /// Times are text: spreadsheet shapes are read, a number is refused (arrow-json read
    /// 1704067200 into `timestamp(us)` as 1970-01-01 00:28) with its line, column and a hint.
    #[test]
    fn times_are_text_and_numbers_are_no_times() {
        use arrow::array::{Array, AsArray};
        use arrow::compute::kernels::cast_utils::Parser;
        use arrow::datatypes::{Date32Type, TimeUnit, TimestampMicrosecondType};
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("d", DataType::Date32, true),
        ]));
        let run = |input: &str| decode_all(&schema, input);
        let batches =
            run("{\"t\":\"2024/1/5 10:00\",\"d\":\"2024年1月5日\"}\n{\"t\":null}\n").unwrap();
        let t = batches[0]
            .column(0)
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(t.value(0), 1_704_448_800_000_000);
        assert!(t.is_null(1));
        let d = batches[0].column(1).as_primitive::<Date32Type>();
        assert_eq!(Some(d.value(0)), Date32Type::parse("2024-01-05"));
        for (input, column) in [
            ("{\"t\":null}\n{\"t\":1704067200}\n", "t"),
            ("{\"t\":null}\n{\"d\":19000}\n", "d"),
        ] {
            let message = crate::decode::invalid_at(run(input).unwrap_err(), Some(2), Some(column));
            assert!(
                message.contains("a number's unit cannot be told"),
                "{message}"
            );
        }
    }
}
