//! CSV with a header row. Columns are matched by name (the header), not by position, and each
//! batch comes out in the dataset's column order. Errors carry the 1-based line and the column.

use super::{BATCH_BYTES, PushDecoder};
use crate::error::{IngestError, Result};
use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use std::collections::VecDeque;
use std::sync::Arc;

/// Bytes of CSV each thread decodes at a time when an upload is decoded in parallel.
const SEGMENT_BYTES: usize = 2 << 20;

/// Threads that decode one upload at most: the rest of the pipeline (receiving, encoding) does
/// not keep more busy, and pending bytes stay under `MAX_THREADS` segments.
const MAX_THREADS: usize = 4;

/// Pending bytes without a record boundary (a quoted field spanning megabytes) after which the
/// rest of the upload is decoded on one thread.
const MAX_PENDING_SEGMENTS: usize = 16;

/// The longest record (a line, or the lines of a quoted field) an upload may hold. A decoder
/// keeps a record whole, and its column and Parquet page hold it again: without a bound, one
/// 1 GiB field (a 1 MiB gzip body) took 5.6 GB of memory.
pub(super) const MAX_RECORD_BYTES: u64 = 64 << 20;

/// Where [`RecordGuard`] stands inside the current field.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum FieldState {
    /// At the start of a field (a quote here opens a quoted field).
    #[default]
    Start,
    /// Inside an unquoted field (a quote here is a character).
    Plain,
    Quoted,
    /// A quote inside a quoted field: `""` continues it, anything else closes it.
    QuoteInQuoted,
}

/// Where the records of a body begin among its lines: a record is one line only until a blank
/// line (which is no record) or a line end inside a quoted field comes before it. Holds the
/// points where the number of line ends ahead of a record, less the records ahead of it, grows.
#[derive(Debug, Default)]
struct LineMap {
    /// `(record, extra)`: from body record `record` (0-based) on, its first line is `extra`
    /// lines further down than its number says.
    changes: VecDeque<(u64, u64)>,
}

impl LineMap {
    /// Body record `record` begins after `line_ends` line ends of the body.
    fn note(&mut self, record: u64, line_ends: u64) {
        let extra = line_ends.saturating_sub(record);
        if self.changes.back().map_or(0, |c| c.1) != extra {
            self.changes.push_back((record, extra));
        }
    }

    /// The line of the upload (the header is line 1) on which body record `record` begins.
    fn line(&self, record: u64) -> u64 {
        let i = self.changes.partition_point(|c| c.0 <= record);
        let extra = i.checked_sub(1).map_or(0, |i| self.changes[i].1);
        record + 2 + extra
    }

    /// Forgets what only records before `record` need.
    fn forget_before(&mut self, record: u64) {
        while self.changes.get(1).is_some_and(|c| c.0 <= record) {
            self.changes.pop_front();
        }
    }

    /// The points of `segment`, a map counted from a segment's start, for that segment: it
    /// begins after `records` records in `lines` line ends.
    fn append(&mut self, segment: LineMap, records: u64, lines: u64) {
        for (record, extra) in segment.changes {
            self.note(records + record, lines + record + extra);
        }
    }
}

/// Line ends in `bytes`: `\n`, `\r\n` or a `\r` alone, as an editor counts lines (and the CSV
/// reader ends records). `last_cr`: the bytes before ended in a `\r`; updated for those after.
pub(super) fn line_ends(bytes: &[u8], last_cr: &mut bool) -> u64 {
    let Some(&last) = bytes.last() else { return 0 };
    let n = if !*last_cr && memchr::memchr(b'\r', bytes).is_none() {
        memchr::memchr_iter(b'\n', bytes).count() as u64
    } else {
        let after_cr = |i: usize| {
            if i == 0 {
                *last_cr
            } else {
                bytes[i - 1] == b'\r'
            }
        };
        memchr::memchr2_iter(b'\n', b'\r', bytes)
            .filter(|&i| bytes[i] == b'\r' || !after_cr(i))
            .count() as u64
    };
    *last_cr = last == b'\r';
    n
}

/// Counts the bytes of the record in progress across chunks, reading quotes as the CSV reader
/// does (a quote opens a field only at its start, `""` inside is one quote), so an upload
/// whose record outgrows [`MAX_RECORD_BYTES`] is refused before it is held. Counts lines too,
/// to name a record by the line it begins on.
struct RecordGuard {
    state: FieldState,
    bytes: u64,
    /// Records ended so far.
    records: u64,
    limit: u64,
    /// Line ends read so far, and whether the last byte read was a `\r`.
    lines: u64,
    last_cr: bool,
    /// Line ends ahead of the record in progress.
    start: u64,
    /// Where the records read begin, since [`LineMap::forget_before`] last dropped some.
    map: LineMap,
}

impl RecordGuard {
    fn new(limit: u64) -> Self {
        Self::at(0, 0, limit)
    }

    /// A guard that starts at a record boundary after `records` records in `lines` lines.
    fn at(records: u64, lines: u64, limit: u64) -> Self {
        Self {
            state: FieldState::Start,
            bytes: 0,
            records,
            limit,
            lines,
            last_cr: false,
            start: lines,
            map: LineMap::default(),
        }
    }

    /// The line of the upload on which body record `record` begins: one read, or the one in
    /// progress.
    fn line_of(&self, record: u64) -> u64 {
        match record >= self.records {
            true => self.start + 2,
            false => self.map.line(record),
        }
    }

    /// A line end (`\n`, or `\r` of `\r\n` or alone).
    fn line_end(&mut self, c: u8) {
        if c == b'\r' || !self.last_cr {
            self.lines += 1;
        }
        self.last_cr = c == b'\r';
    }

    /// A line end outside quotes (`\n` or `\r`, as the reader's default terminator reads
    /// them); an empty line is no record (the reader skips it).
    fn end_record(&mut self, c: u8) -> Result<bool> {
        // A record too long that ends inside one chunk is refused too.
        self.check()?;
        self.line_end(c);
        let record = self.state != FieldState::Start || self.bytes > 1;
        if record {
            self.map.note(self.records, self.start);
            self.records += 1;
        }
        self.start = self.lines;
        self.state = FieldState::Start;
        self.bytes = 0;
        Ok(record)
    }

    /// Reads the next body bytes; an error names the line of the record that is too long.
    fn scan(&mut self, chunk: &[u8], delimiter: u8) -> Result<()> {
        self.scan_until(chunk, delimiter, false).map(|_| ())
    }

    /// Reads body bytes up to the end of the first record that ends in `chunk` (its line end
    /// included, a `\r\n` whole): how many bytes that is, or `None` when no record ends inside
    /// (all of `chunk` read). A record ending in a `\r` that ends `chunk` does not count: a
    /// `\n` may follow.
    fn next_record_end(&mut self, chunk: &[u8], delimiter: u8) -> Result<Option<usize>> {
        self.scan_until(chunk, delimiter, true)
    }

    fn scan_until(&mut self, chunk: &[u8], delimiter: u8, stop: bool) -> Result<Option<usize>> {
        let n = chunk.len();
        let mut i = 0;
        // Where the scan stops: after the record end at `i - 1`, and its `\n` after a `\r`
        // (an empty line to the reader: reading it would leave the guard as it is).
        let stop_after = |i: usize| -> Option<usize> {
            match (chunk[i - 1], chunk.get(i)) {
                (b'\r', Some(b'\n')) => Some(i + 1),
                (b'\r', None) => None,
                _ => Some(i),
            }
        };
        while i < n {
            match self.state {
                FieldState::Quoted => match memchr::memchr(b'"', &chunk[i..]) {
                    Some(q) => {
                        self.lines += line_ends(&chunk[i..i + q], &mut self.last_cr);
                        self.last_cr = false;
                        self.bytes += (q + 1) as u64;
                        self.state = FieldState::QuoteInQuoted;
                        i += q + 1;
                    }
                    None => {
                        self.lines += line_ends(&chunk[i..], &mut self.last_cr);
                        self.bytes += (n - i) as u64;
                        i = n;
                    }
                },
                FieldState::Start | FieldState::QuoteInQuoted => {
                    let c = chunk[i];
                    i += 1;
                    self.bytes += 1;
                    if c != b'\n' && c != b'\r' {
                        self.last_cr = false;
                    }
                    self.state = match (self.state, c) {
                        (FieldState::Start, b'"') => FieldState::Quoted,
                        (FieldState::QuoteInQuoted, b'"') => FieldState::Quoted,
                        (_, b'\n' | b'\r') => {
                            let ended = self.end_record(c)?;
                            if let (true, true, Some(at)) = (stop, ended, stop_after(i)) {
                                return Ok(Some(at));
                            }
                            continue;
                        }
                        (_, c) if c == delimiter => FieldState::Start,
                        _ => FieldState::Plain,
                    };
                }
                // Only line ends and quotes at a field's start matter: jump between them.
                FieldState::Plain => match memchr::memchr3(b'\n', b'\r', b'"', &chunk[i..]) {
                    Some(k) if chunk[i + k] != b'"' => {
                        self.bytes += k as u64;
                        if k > 0 {
                            self.last_cr = false;
                        }
                        let ended = self.end_record(chunk[i + k])?;
                        i += k + 1;
                        if let (true, true, Some(at)) = (stop, ended, stop_after(i)) {
                            return Ok(Some(at));
                        }
                    }
                    Some(k) => {
                        let quote = i + k;
                        self.last_cr = false;
                        self.bytes += (k + 1) as u64;
                        if quote > i && chunk[quote - 1] == delimiter {
                            self.state = FieldState::Quoted;
                        }
                        i = quote + 1;
                    }
                    None => {
                        self.last_cr = false;
                        self.bytes += (n - i) as u64;
                        if chunk[n - 1] == delimiter {
                            self.state = FieldState::Start;
                        }
                        i = n;
                    }
                },
            }
        }
        self.check()?;
        Ok(None)
    }

    fn check(&self) -> Result<()> {
        if self.bytes > self.limit {
            // The record in progress begins after `start` line ends of the body.
            return Err(line_error(
                self.start + 2,
                None,
                &format!("a record is longer than {} MiB", self.limit >> 20),
            ));
        }
        Ok(())
    }
}

/// How many whole records `buf` begins with (the header is one), and where the last of them
/// ends: line ends inside quoted fields are read as the CSV reader reads them.
pub(super) fn whole_records(buf: &[u8], delimiter: u8) -> (u64, usize) {
    let mut guard = RecordGuard::new(u64::MAX);
    let (mut records, mut end) = (0, 0);
    while let Ok(Some(k)) = guard.next_record_end(&buf[end..], delimiter) {
        records += 1;
        end += k;
    }
    (records, end)
}

/// Options of a CSV upload.
#[derive(Debug, Clone, Copy)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub batch_rows: usize,
    /// Threads that decode segments of the body at once (1: one decoder for the whole body).
    pub threads: usize,
    /// Size of those segments, cut at record boundaries.
    pub segment_bytes: usize,
    /// Text a batch of one decoder holds at most (it is cut at the next record end): with
    /// long records, a batch ends before `batch_rows`.
    pub batch_bytes: usize,
}

impl CsvOptions {
    /// Options for `delimiter`, decoding on every core.
    pub fn new(delimiter: u8, batch_rows: usize) -> Self {
        Self {
            delimiter,
            batch_rows,
            threads: datagate_core::threads::cores().min(MAX_THREADS),
            segment_bytes: SEGMENT_BYTES,
            batch_bytes: BATCH_BYTES,
        }
    }
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self::new(b',', 8192)
    }
}

/// What the header row told: the file's columns and where each dataset column is among them.
struct Layout {
    file_schema: SchemaRef,
    /// For each dataset column, its position in the file.
    order: Vec<usize>,
    file_columns: Vec<String>,
    target: SchemaRef,
    delimiter: u8,
    batch_rows: usize,
}

/// A segment decoded on its own.
struct Segment {
    batches: Vec<RecordBatch>,
    /// Its line ends.
    lines: u64,
    /// Where its records begin (counted from its start), when asked for and they do not take
    /// a line each.
    starts: Option<LineMap>,
}

/// An arrow-csv decoder and the records it has handed out, to name the line of a value that
/// does not fit its column ([`text_columns`](super::text_columns) converts some after it).
struct RecordDecoder {
    inner: arrow::csv::reader::Decoder,
    flushed: u64,
}

impl Layout {
    fn decoder(&self) -> RecordDecoder {
        let inner = arrow::csv::ReaderBuilder::new(self.file_schema.clone())
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_batch_size(self.batch_rows.max(1))
            .build_decoder();
        RecordDecoder { inner, flushed: 0 }
    }

    /// Feeds `chunk` to `decoder`, appending the batches it completes (in the dataset's column
    /// order) to `out`. `before` is the number of records ahead of the decoder's first one.
    fn feed(
        &self,
        decoder: &mut RecordDecoder,
        mut chunk: &[u8],
        before: u64,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        while !chunk.is_empty() {
            let used = decoder
                .inner
                .decode(chunk)
                .map_err(|e| map_arrow_error(e, &self.file_columns, before))?;
            chunk = &chunk[used..];
            if used == 0 || decoder.inner.capacity() == 0 {
                match self.flush(decoder, before)? {
                    Some(b) => out.push(b),
                    // Nothing consumed and nothing to flush would loop forever.
                    None if used == 0 => {
                        return Err(IngestError::Internal("CSV decoder made no progress".into()));
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// Ends `decoder`'s input (a last line without a newline is still in it) and appends its
    /// remaining batches to `out`.
    fn end(
        &self,
        decoder: &mut RecordDecoder,
        before: u64,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        decoder
            .inner
            .decode(&[])
            .map_err(|e| map_arrow_error(e, &self.file_columns, before))?;
        while let Some(b) = self.flush(decoder, before)? {
            out.push(b);
        }
        Ok(())
    }

    fn flush(&self, decoder: &mut RecordDecoder, before: u64) -> Result<Option<RecordBatch>> {
        let batch = decoder
            .inner
            .flush()
            .map_err(|e| map_arrow_error(e, &self.file_columns, before))?;
        let Some(batch) = batch else { return Ok(None) };
        let first = before + decoder.flushed;
        decoder.flushed += batch.num_rows() as u64;
        let columns: Vec<ArrayRef> = self
            .order
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        let out = super::text_columns::from_text(columns, &self.target).map_err(|bad| {
            // Record `first + row + 1` of the body, after the header line.
            let line = first + bad.row as u64 + 2;
            line_error(line, Some(&bad.column), &bad.message)
        })?;
        Ok(Some(out))
    }

    /// Cuts the batch at a record end the guard found. Should the reader see the record as
    /// still open (it would refuse to flush, keeping its state), the batch is cut later instead.
    fn flush_whole(&self, decoder: &mut RecordDecoder, before: u64) -> Result<Option<RecordBatch>> {
        match self.flush(decoder, before) {
            Err(IngestError::InvalidData { message, .. })
                if message.contains("part way through record") =>
            {
                Ok(None)
            }
            other => other,
        }
    }

    /// Decodes one segment of whole records: without quotes on the fast path of
    /// [`plain_csv`](super::plain_csv), otherwise (or when that path declines) on its own
    /// decoder. Also says how many line ends the segment holds and, with `starts`, where its
    /// records begin when they do not take a line each (reading it again).
    fn segment(&self, bytes: &[u8], starts: bool) -> Result<Segment> {
        let plain = super::plain_csv::decode(
            bytes,
            self.delimiter,
            &self.target,
            &self.order,
            self.batch_rows,
        );
        let (batches, lines) = match plain {
            Some(decoded) => decoded,
            None => (self.read_segment(bytes, 0)?, line_ends(bytes, &mut false)),
        };
        let ended = bytes.last().is_some_and(|c| matches!(c, b'\n' | b'\r'));
        let one_line_each = lines + u64::from(!ended) == rows(&batches);
        let starts = (starts && !one_line_each).then(|| {
            let mut guard = RecordGuard::new(u64::MAX);
            let _ = guard.scan(bytes, self.delimiter);
            guard.map
        });
        Ok(Segment {
            batches,
            lines,
            starts,
        })
    }

    /// Decodes one segment of whole records on its own arrow-csv decoder.
    fn read_segment(&self, bytes: &[u8], before: u64) -> Result<Vec<RecordBatch>> {
        let mut decoder = self.decoder();
        let mut out = Vec::new();
        self.feed(&mut decoder, bytes, before, &mut out)?;
        self.end(&mut decoder, before, &mut out)?;
        Ok(out)
    }
}

/// Where the search for record boundaries stands in the pending bytes, which start at a record.
///
/// A boundary is a newline outside quotes. The search looks at quotes only and follows
/// RFC 4180: a quote opens a field at its start, `""` inside is one quote, and a closing quote
/// is followed by a delimiter or a line end. A quote anywhere else (`5" pipe`) is left to the
/// CSV reader's own rules: the search gives up and the rest is decoded on one thread, so cutting
/// never changes what the records are.
#[derive(Default)]
struct BoundaryScan {
    pos: usize,
    in_quote: bool,
}

enum Boundary {
    /// One past the newline that ends a record.
    At(usize),
    NeedMore,
    Irregular,
}

impl BoundaryScan {
    /// The end of the first record that ends at or after `target`.
    fn record_end(&mut self, buf: &[u8], target: usize, delimiter: u8) -> Boundary {
        let ends_field = |c: u8| c == delimiter || c == b'\n' || c == b'\r';
        loop {
            let Some(rest) = buf.get(self.pos..) else {
                return Boundary::NeedMore;
            };
            if self.in_quote {
                let Some(q) = memchr::memchr(b'"', rest).map(|i| self.pos + i) else {
                    self.pos = buf.len();
                    return Boundary::NeedMore;
                };
                match buf.get(q + 1) {
                    None => {
                        self.pos = q;
                        return Boundary::NeedMore;
                    }
                    Some(b'"') => self.pos = q + 2,
                    Some(&c) if ends_field(c) => {
                        self.in_quote = false;
                        self.pos = q + 1;
                    }
                    Some(_) => return Boundary::Irregular,
                }
                continue;
            }
            let quote = memchr::memchr(b'"', rest).map(|i| self.pos + i);
            let from = self.pos.max(target.saturating_sub(1));
            let newline = buf
                .get(from..)
                .and_then(|r| memchr::memchr(b'\n', r))
                .map(|i| from + i);
            match (quote, newline) {
                (Some(q), nl) if nl.is_none_or(|nl| q < nl) => {
                    if q > 0 && !ends_field(buf[q - 1]) {
                        return Boundary::Irregular;
                    }
                    self.in_quote = true;
                    self.pos = q + 1;
                }
                (_, Some(nl)) => {
                    self.pos = nl + 1;
                    return Boundary::At(nl + 1);
                }
                (_, None) => {
                    self.pos = buf.len();
                    return Boundary::NeedMore;
                }
            }
        }
    }
}

enum Body {
    /// Bytes gathered until every thread has a segment of whole records to decode.
    Parallel {
        pending: Vec<u8>,
        scan: BoundaryScan,
        /// Record ends found in `pending`, in order.
        ends: Vec<usize>,
        /// Where the records decoded begin among the lines.
        map: LineMap,
    },
    /// One decoder for the rest of the body; `before` records came ahead of it, `held` bytes
    /// were fed to it since its last batch was cut by size. The guard bounds the record in
    /// progress (the parallel path needs none: it holds at most `MAX_PENDING_SEGMENTS`
    /// segments per thread without a record end before it hands the rest to one decoder).
    Serial {
        decoder: Box<RecordDecoder>,
        before: u64,
        held: usize,
        guard: RecordGuard,
    },
}

/// Decodes CSV with a header row into batches of `target`'s schema.
///
/// With more than one thread, the body is cut at record boundaries into segments that are
/// decoded at once, each on its own decoder; batches come out in the upload's order and errors
/// name the same line as one decoder would.
pub struct CsvDecoder {
    target: SchemaRef,
    opts: CsvOptions,
    header: Vec<u8>,
    layout: Option<Layout>,
    body: Option<Body>,
    /// Records decoded so far.
    records: u64,
    /// Line ends of the body decoded so far (in segments: the records only say how many lines
    /// they take when none has a blank line before it or a line end inside it).
    lines: u64,
    /// Whether to keep where each record handed out begins ([`Self::with_record_lines`]).
    record_lines: bool,
}

impl CsvDecoder {
    pub fn new(target: SchemaRef, opts: CsvOptions) -> Self {
        Self {
            target,
            opts,
            header: Vec::new(),
            layout: None,
            body: None,
            records: 0,
            lines: 0,
            record_lines: false,
        }
    }

    /// Keeps where the records handed out begin, for [`PushDecoder::line_of_record`]: segments
    /// whose records do not take a line each are read again for it. (An error's line is found
    /// without it.)
    pub fn with_record_lines(mut self) -> Self {
        self.record_lines = true;
        self
    }

    fn read_header(&mut self) -> Result<Layout> {
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
        let mut names: Vec<String> = record
            .iter()
            .enumerate()
            .map(|(i, s)| header_name(i, s).to_string())
            .collect();
        let mut fields = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(line_error(1, None, &super::unnamed(i, names.len())));
            }
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
            // Decimals, dates and times are read as text and converted after the decoder.
            let ty = match super::text_columns::read_as_text(
                f.data_type(),
                super::text_columns::Reader::Csv,
            ) {
                true => DataType::Utf8,
                false => f.data_type().clone(),
            };
            fields.push(Field::new(name, ty, true));
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
        Ok(Layout {
            file_schema: Arc::new(Schema::new(fields)),
            order,
            file_columns: std::mem::take(&mut names),
            target: self.target.clone(),
            delimiter: self.opts.delimiter,
            batch_rows: self.opts.batch_rows,
        })
    }

    fn start_body(&mut self) -> Result<()> {
        let layout = self.read_header()?;
        self.body = Some(if self.opts.threads > 1 {
            Body::Parallel {
                pending: Vec::new(),
                scan: BoundaryScan::default(),
                ends: Vec::new(),
                map: LineMap::default(),
            }
        } else {
            Body::Serial {
                decoder: Box::new(layout.decoder()),
                before: 0,
                held: 0,
                guard: RecordGuard::new(MAX_RECORD_BYTES),
            }
        });
        self.layout = Some(layout);
        Ok(())
    }

    /// Decodes as many rounds of segments as the pending bytes hold, one segment per thread.
    fn decode_segments(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let threads = self.opts.threads.max(1);
        let segment = self.opts.segment_bytes.max(1);
        let delimiter = self.opts.delimiter;
        let record_lines = self.record_lines;
        loop {
            let (
                Some(layout),
                Some(Body::Parallel {
                    pending,
                    scan,
                    ends,
                    map,
                }),
            ) = (self.layout.as_ref(), self.body.as_mut())
            else {
                return Ok(());
            };
            let mut irregular = false;
            while ends.len() < threads {
                let start = ends.last().copied().unwrap_or(0);
                if pending.len() < start + segment {
                    break;
                }
                match scan.record_end(pending, start + segment, delimiter) {
                    Boundary::At(end) => ends.push(end),
                    Boundary::NeedMore => break,
                    Boundary::Irregular => {
                        irregular = true;
                        break;
                    }
                }
            }
            let stuck = pending.len() > MAX_PENDING_SEGMENTS * threads * segment;
            if ends.len() < threads && !irregular && !stuck {
                return Ok(());
            }
            // Decode the segments found, all at once.
            let mut bounds = Vec::with_capacity(ends.len());
            let mut start = 0;
            for end in ends.iter() {
                bounds.push(start..*end);
                start = *end;
            }
            let consumed = start;
            let mut results: Vec<Option<Result<Segment>>> = bounds.iter().map(|_| None).collect();
            let data = pending.as_slice();
            // Every segment on a thread of its own, the calling (serving) thread only waiting:
            // that thread may be kept on one core, the kernel places these on any.
            std::thread::scope(|scope| {
                for (slot, range) in results.iter_mut().zip(bounds.iter()) {
                    let bytes = &data[range.clone()];
                    scope.spawn(move || {
                        let _ = datagate_core::threads::run_anywhere();
                        *slot = Some(layout.segment(bytes, record_lines))
                    });
                }
            });
            for (result, range) in results.into_iter().zip(bounds) {
                let Some(decoded) = result else {
                    return Err(IngestError::Internal("a CSV segment was lost".into()));
                };
                let at = (self.records, self.lines);
                let segment = placed(decoded, &data[range], delimiter, at, map)?;
                self.records += rows(&segment.batches);
                self.lines += segment.lines;
                out.extend(segment.batches);
            }
            pending.drain(..consumed);
            ends.clear();
            scan.pos -= consumed.min(scan.pos);
            if irregular || stuck {
                // The rest goes through one decoder, from the first undecoded record on.
                let rest = std::mem::take(pending);
                let mut guard = RecordGuard::at(self.records, self.lines, MAX_RECORD_BYTES);
                guard.map = std::mem::take(map);
                self.body = Some(Body::Serial {
                    decoder: Box::new(layout.decoder()),
                    before: self.records,
                    held: 0,
                    guard,
                });
                return self.serial_chunk(&rest, out);
            }
        }
    }

    /// Feeds body bytes to the one decoder, through the record guard, and cuts a batch at the
    /// first record end after every `batch_bytes` of input: however long the records, a
    /// batch holds about that much text (or one record), not `batch_rows` records of any size.
    fn serial_chunk(&mut self, chunk: &[u8], out: &mut Vec<RecordBatch>) -> Result<()> {
        let (delimiter, batch_bytes) = (self.opts.delimiter, self.opts.batch_bytes);
        let (
            Some(layout),
            Some(Body::Serial {
                decoder,
                before,
                held,
                guard,
            }),
        ) = (self.layout.as_ref(), self.body.as_mut())
        else {
            return Err(IngestError::Internal("no CSV decoder".into()));
        };
        let start = out.len();
        let mut rest = chunk;
        // The decoder numbers body record `k` as line `k + 2`.
        let relined = |e, guard: &RecordGuard| moved(e, |l| guard.line_of(l.saturating_sub(2)));
        while !rest.is_empty() {
            let room = batch_bytes.max(1).saturating_sub(*held);
            if rest.len() < room {
                guard.scan(rest, delimiter)?;
                layout
                    .feed(decoder, rest, *before, out)
                    .map_err(|e| relined(e, guard))?;
                *held += rest.len();
                break;
            }
            guard.scan(&rest[..room], delimiter)?;
            match guard.next_record_end(&rest[room..], delimiter)? {
                Some(k) => {
                    let (piece, tail) = rest.split_at(room + k);
                    layout
                        .feed(decoder, piece, *before, out)
                        .map_err(|e| relined(e, guard))?;
                    out.extend(
                        layout
                            .flush_whole(decoder, *before)
                            .map_err(|e| relined(e, guard))?,
                    );
                    *held = 0;
                    rest = tail;
                }
                None => {
                    layout
                        .feed(decoder, rest, *before, out)
                        .map_err(|e| relined(e, guard))?;
                    *held += rest.len();
                    break;
                }
            }
        }
        self.records += rows(&out[start..]);
        Ok(())
    }
}

fn rows(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

/// A segment decoded on its own (`bytes`), placed in the upload: where its records begin noted
/// in `map` (when the segment says), or its error moved to the line it names in the upload.
/// The segment begins after `at`: so many records in so many lines.
fn placed(
    decoded: Result<Segment>,
    bytes: &[u8],
    delimiter: u8,
    at: (u64, u64),
    map: &mut LineMap,
) -> Result<Segment> {
    let (records, lines_before) = at;
    let mut segment = match decoded {
        Ok(segment) => segment,
        Err(e) => {
            // Read again to find the line.
            let mut guard = RecordGuard::at(records, lines_before, u64::MAX);
            let _ = guard.scan(bytes, delimiter);
            // The segment's decoder numbers record `k` as line `k + 2`.
            return Err(moved(e, |line| {
                guard.line_of(records + line.saturating_sub(2))
            }));
        }
    };
    map.note(records, lines_before);
    if let Some(starts) = segment.starts.take() {
        map.append(starts, records, lines_before);
    }
    Ok(segment)
}

/// `e` naming line `to(line)` where it named `line`.
fn moved(e: IngestError, to: impl Fn(u64) -> u64) -> IngestError {
    match e {
        IngestError::InvalidData {
            message,
            line: Some(line),
            row,
            column,
        } => {
            let moved = to(line);
            // "line 5: ..." or "line 5, column ...".
            let rest = message
                .strip_prefix(&format!("line {line}"))
                .filter(|rest| rest.starts_with([':', ',']));
            let message = match rest {
                Some(rest) => format!("line {moved}{rest}"),
                None => message,
            };
            IngestError::InvalidData {
                message,
                line: Some(moved),
                row,
                column,
            }
        }
        other => other,
    }
}

/// One past the end of the header line in `buf`: its `\n`, `\r\n`, or a `\r` alone (files
/// saved with classic Mac line ends, which the CSV reader reads too). A `\r` that ends the bytes
/// so far decides nothing until the next byte, or the end of the input (`at_end`).
fn header_end(buf: &[u8], at_end: bool) -> Option<usize> {
    let i = memchr::memchr2(b'\n', b'\r', buf)?;
    match (buf[i], buf.get(i + 1)) {
        (b'\n', _) => Some(i + 1),
        (_, Some(b'\n')) => Some(i + 2),
        (_, Some(_)) => Some(i + 1),
        (_, None) => at_end.then_some(i + 1),
    }
}

impl CsvDecoder {
    /// Feeds body bytes to the parallel decoders, or through the record guard to the one.
    fn body_chunk(&mut self, chunk: &[u8], out: &mut Vec<RecordBatch>) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        match self.body.as_mut() {
            Some(Body::Serial { .. }) => self.serial_chunk(chunk, out),
            Some(Body::Parallel { pending, .. }) => {
                pending.extend_from_slice(chunk);
                self.decode_segments(out)
            }
            None => Err(IngestError::Internal("no CSV body".into())),
        }
    }
}

impl CsvDecoder {
    /// Where the records decoded begin among the lines, when there is a body.
    fn map(&mut self) -> Option<&mut LineMap> {
        match self.body.as_mut()? {
            Body::Serial { guard, .. } => Some(&mut guard.map),
            Body::Parallel { map, .. } => Some(map),
        }
    }
}

impl PushDecoder for CsvDecoder {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        // The lines of the records handed out before are asked no more.
        let records = self.records;
        if let Some(map) = self.map() {
            map.forget_before(records);
        }
        let mut out = Vec::new();
        if self.body.is_some() {
            self.body_chunk(chunk, &mut out)?;
            return Ok(out);
        }
        self.header.extend_from_slice(chunk);
        let Some(end) = header_end(&self.header, false) else {
            if self.header.len() > 1 << 20 {
                return Err(line_error(1, None, "the header line is longer than 1 MiB"));
            }
            return Ok(out);
        };
        let rest = self.header.split_off(end);
        self.start_body()?;
        self.body_chunk(&rest, &mut out)?;
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        if self.body.is_none() {
            if self.header.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(IngestError::invalid_data(
                    "the body is empty: a header row is required",
                ));
            }
            let mut out = Vec::new();
            match header_end(&self.header, true) {
                // A header line and more: the rest is body, however its lines end.
                Some(end) => {
                    let rest = self.header.split_off(end);
                    self.start_body()?;
                    self.body_chunk(&rest, &mut out)?;
                }
                None => {
                    self.header.push(b'\n');
                    self.start_body()?;
                }
            }
            let mut rest = self.finish()?;
            out.append(&mut rest);
            return Ok(out);
        }
        let records = self.records;
        if let Some(map) = self.map() {
            map.forget_before(records);
        }
        let mut out = Vec::new();
        let (Some(layout), Some(body)) = (self.layout.as_ref(), self.body.as_mut()) else {
            return Err(IngestError::Internal("no CSV body".into()));
        };
        match body {
            Body::Serial {
                decoder,
                before,
                guard,
                ..
            } => layout
                .end(decoder, *before, &mut out)
                .map_err(|e| moved(e, |l| guard.line_of(l.saturating_sub(2))))?,
            Body::Parallel { pending, map, .. } => {
                let rest = std::mem::take(pending);
                let decoded = layout.segment(&rest, self.record_lines);
                let at = (self.records, self.lines);
                let segment = placed(decoded, &rest, self.opts.delimiter, at, map)?;
                out.extend(segment.batches);
                self.lines += segment.lines;
            }
        }
        self.records += rows(&out);
        Ok(out)
    }

    fn line_of_record(&self, record: u64) -> Option<u64> {
        if !self.record_lines {
            return None;
        }
        match self.body.as_ref()? {
            Body::Serial { guard, .. } => Some(guard.line_of(record)),
            Body::Parallel { map, .. } => Some(map.line(record)),
        }
    }
}

/// The column name of the `i`th field of a CSV header: without the spaces around it (`id ,
/// name` names `id` and `name`), the first without a byte-order mark. Inference names the
/// columns of a first upload the same way.
pub(crate) fn header_name(i: usize, raw: &str) -> &str {
    let name = raw.trim();
    if i == 0 {
        name.trim_start_matches('\u{feff}').trim_start()
    } else {
        name
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
/// `before` records came ahead of the decoder's first one.
fn map_arrow_error(e: arrow::error::ArrowError, columns: &[String], before: u64) -> IngestError {
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
    if msg.contains("invalid UTF-8 data for line ") {
        // Its line counts like a field-count error's; its field from 1.
        let line = after("UTF-8 data for line ").map(|l| l + 1 + before);
        let column = after(" and field ").and_then(|f| {
            columns
                .get(usize::try_from(f).ok()?.checked_sub(1)?)
                .cloned()
        });
        return super::not_utf8(line, column);
    }
    if let Some(n) = after("for column ") {
        let column = columns.get(n as usize).cloned();
        let line = after(" at line ").map(|l| l + 2 + before);
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
        let line = l + 1 + before;
        let found = match (after(" got more than "), after(" got ")) {
            (Some(n), _) => format!(", found more than {n}"),
            (None, Some(n)) => format!(", found {n}"),
            (None, None) => String::new(),
        };
        return wrong_field_count(line, columns.len(), &found);
    }
    IngestError::invalid_data(format!("invalid CSV: {msg}"))
}

/// The error for a record on `line` with another number of fields than `expected`; `found`
/// says how many (`", found 3"`), or is empty when not known.
pub(super) fn wrong_field_count(line: u64, expected: usize, found: &str) -> IngestError {
    line_error(
        line,
        None,
        &format!("wrong number of fields (expected {expected}{found})"),
    )
}

/// The 1-based line of `bytes` on which a record found at byte `at` begins: blank lines there
/// are skipped, as the reader skips them.
pub(super) fn line_at(bytes: &[u8], mut at: usize) -> u64 {
    while matches!(bytes.get(at), Some(b'\n' | b'\r')) {
        at += 1;
    }
    1 + line_ends(&bytes[..at.min(bytes.len())], &mut false)
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
                batch_rows: 2,
                ..CsvOptions::default()
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
            let mut d = CsvDecoder::new(schema(), CsvOptions { batch_rows, ..CsvOptions::default() });
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

    proptest! {
        /// The record guard ends records where the CSV reader does, however the bytes are cut:
        /// quoted fields with line ends, delimiters and doubled quotes, and quotes inside
        /// unquoted fields (`5" pipe`), which do not open anything.
        #[test]
        fn the_record_guard_counts_records_as_the_reader_does(
            records in proptest::collection::vec(
                proptest::collection::vec("[a-z,\"\n\r ]{0,8}", 1..4),
                0..30,
            ),
            stray in proptest::collection::vec(0usize..30, 0..3),
            cuts in proptest::collection::vec(1usize..30, 1..10),
        ) {
            let mut w = ::csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
            for r in &records {
                w.write_record(r).unwrap();
            }
            let mut bytes = w.into_inner().unwrap();
            // Quotes where none belongs: `5"` before some line ends (inside an unquoted field,
            // after a closing quote, or inside a quoted field, where it closes it); blank lines.
            let mut text = String::from_utf8(bytes.clone()).unwrap();
            for s in &stray {
                if let Some(at) = text.match_indices('\n').nth(*s).map(|(i, _)| i) {
                    text.insert_str(at, "5\"");
                }
            }
            if stray.len() == 2 {
                text.insert_str(0, "\r\n\n");
                text.push_str("\n\r\n");
            }
            bytes = text.into_bytes();
            let want = ::csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(bytes.as_slice())
                .byte_records()
                .count() as u64;
            let mut guard = RecordGuard::new(u64::MAX);
            let mut rest = bytes.as_slice();
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                guard.scan(&rest[..n], b',').unwrap();
                rest = &rest[n..];
                i += 1;
            }
            // The reader counts a last record without a line end too.
            let open = u64::from(guard.bytes > 0 || guard.state != FieldState::Start);
            prop_assert_eq!(guard.records + open, want);
            // And each record begins on the line an editor shows it on (after a header line):
            // past the line ends before the reader's record start, and any blank lines there.
            let starts = ::csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(bytes.as_slice())
                .into_byte_records()
                .map(|r| r.unwrap().position().unwrap().byte() as usize);
            for (k, mut at) in starts.enumerate() {
                while matches!(bytes.get(at), Some(b'\n' | b'\r')) {
                    at += 1;
                }
                let line = 2 + line_ends(&bytes[..at], &mut false);
                prop_assert_eq!(guard.line_of(k as u64), line, "record {}", k);
            }
        }
    }

    #[test]
    fn line_ends_are_counted_as_an_editor_counts_them() {
        for (text, want) in [
            (&b""[..], 0),
            (b"a", 0),
            (b"a\nb\n", 2),
            (b"a\r\nb\r\n", 2),
            (b"a\rb\r", 2),
            (b"\r\r\n\n\r", 4),
        ] {
            assert_eq!(
                line_ends(text, &mut false),
                want,
                "{:?}",
                String::from_utf8_lossy(text)
            );
            // Cut anywhere, with the `\r` carried over.
            for cut in 0..=text.len() {
                let mut last_cr = false;
                let n =
                    line_ends(&text[..cut], &mut last_cr) + line_ends(&text[cut..], &mut last_cr);
                assert_eq!(n, want, "{:?} cut at {cut}", String::from_utf8_lossy(text));
            }
        }
    }

    #[test]
    fn classic_mac_line_ends_are_lines_too() {
        // A `\r` alone ends a line, also the header's and across chunk boundaries; before, such
        // a body was one long header line and its rows were silently dropped.
        for body in [
            &b"id,name\r1,a\r2,b\r"[..],
            b"id,name\r1,a\r2,b",
            b"id,name\r\n1,a\r\n2,b\r\n",
        ] {
            for chunk in [1, 2, 3, 7, 100] {
                let mut d = CsvDecoder::new(schema(), CsvOptions::default());
                let mut batches = Vec::new();
                for c in body.chunks(chunk) {
                    batches.extend(d.push(c).unwrap());
                }
                batches.extend(d.finish().unwrap());
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                assert_eq!(
                    rows,
                    2,
                    "{:?} in chunks of {chunk}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        assert_eq!(header_end(b"a,b\r", false), None);
        assert_eq!(header_end(b"a,b\r", true), Some(4));
        assert_eq!(header_end(b"a,b\r\n1", false), Some(5));
    }

    #[test]
    fn a_record_over_the_limit_is_refused_with_its_line() {
        let mut guard = RecordGuard::new(100);
        guard
            .scan(b"1,short\n2,\"quoted\nover lines\"\n", b',')
            .unwrap();
        assert_eq!(guard.records, 2);
        guard.scan(&[b'x'; 60], b',').unwrap();
        let e = guard.scan(&[b'y'; 60], b',').unwrap_err();
        // It begins on line 5: its record before takes two lines.
        assert!(e.to_string().contains("line 5: a record is longer"), "{e}");
        // The decoder refuses it before holding it: 64 MiB and one chunk more at most.
        let mut d = CsvDecoder::new(schema(), CsvOptions::default());
        d.push(b"id,name\n1,a\n2,\"").unwrap();
        let chunk = vec![b'z'; 1 << 20];
        let refused = (0..100).find_map(|_| d.push(&chunk).err());
        let e = refused.expect("a 100 MiB field was taken");
        assert!(
            e.to_string()
                .contains("line 3: a record is longer than 64 MiB"),
            "{e}"
        );
    }

    fn decode(bytes: &[u8], opts: CsvOptions, cuts: &[usize]) -> Result<Vec<(i64, String)>> {
        let mut d = CsvDecoder::new(schema(), opts);
        let mut batches = Vec::new();
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            batches.extend(d.push(&rest[..n])?);
            rest = &rest[n..];
            i += 1;
        }
        batches.extend(d.finish()?);
        let mut got = Vec::new();
        for b in &batches {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let names = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            for r in 0..b.num_rows() {
                got.push((ids.value(r), names.value(r).to_string()));
            }
        }
        Ok(got)
    }

    proptest! {
        /// Cut into segments decoded at once, a body gives exactly what one decoder gives:
        /// quoted fields with delimiters, quotes and line breaks, and also text with quotes
        /// where RFC 4180 has none, ragged lines and bad numbers (then both refuse it).
        #[test]
        fn segments_decode_like_one_decoder(
            rows in proptest::collection::vec(
                ("[0-9]{1,3}|x", "[a-z张,\"\n ]{0,8}", any::<bool>()), 0..80),
            cuts in proptest::collection::vec(1usize..40, 1..10),
            threads in 2usize..4,
            segment_bytes in 1usize..64,
            batch_rows in 1usize..8,
        ) {
            let mut body = b"id,name\n".to_vec();
            for (id, name, quoted) in &rows {
                if *quoted {
                    let mut w = ::csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
                    w.write_record([id.as_str(), name.as_str()]).unwrap();
                    body.extend(w.into_inner().unwrap());
                } else {
                    body.extend(format!("{id},{name}\n").into_bytes());
                }
            }
            let one = CsvOptions { threads: 1, batch_rows, ..CsvOptions::default() };
            let many = CsvOptions { threads, segment_bytes, batch_rows, ..CsvOptions::default() };
            match (decode(&body, one, &cuts), decode(&body, many, &cuts)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "one decoder: {:?}\nsegments: {:?}", a, b),
            }
        }
    }

    proptest! {
        /// Batches cut by size (at the first record end past `batch_bytes` of input) hold
        /// exactly the rows one uncut decoder gives, whatever the line ends, quotes and chunks;
        /// bad bodies are refused by both.
        #[test]
        fn size_cut_batches_decode_like_uncut(
            rows in proptest::collection::vec(
                ("[0-9]{1,3}|x", "[a-z张,\"\n\r ]{0,8}", any::<bool>()), 0..60),
            cuts in proptest::collection::vec(1usize..40, 1..10),
            end in 0usize..3,
            batch_bytes in 1usize..64,
        ) {
            let end = ["\n", "\r\n", "\r"][end];
            let mut body = format!("id,name{end}").into_bytes();
            for (id, name, quoted) in &rows {
                if *quoted || name.contains(['\n', '\r', '"', ',']) {
                    let mut w = ::csv::WriterBuilder::new()
                        .has_headers(false)
                        .terminator(::csv::Terminator::Any(end.as_bytes()[0]))
                        .from_writer(Vec::new());
                    w.write_record([id.as_str(), name.as_str()]).unwrap();
                    body.extend(w.into_inner().unwrap());
                    if end == "\r\n" {
                        body.push(b'\n');
                    }
                } else {
                    body.extend(format!("{id},{name}{end}").into_bytes());
                }
            }
            let uncut = CsvOptions { threads: 1, batch_rows: 1000, ..CsvOptions::default() };
            let cut = CsvOptions { batch_bytes, ..uncut };
            match (decode(&body, uncut, &cuts), decode(&body, cut, &cuts)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "uncut: {:?}\ncut: {:?}", a, b),
            }
        }
    }

    /// Long records end a batch long before `batch_rows`: about `batch_bytes` of text each.
    #[test]
    fn long_records_make_short_batches() {
        let mut body = b"id,name\n".to_vec();
        let long = "y".repeat(1000);
        for i in 0..100 {
            if i % 2 == 0 {
                body.extend(format!("{i},{long}\n").into_bytes());
            } else {
                body.extend(format!("{i},\"{long}\n{long}\"\r\n").into_bytes());
            }
        }
        for (threads, chunk) in [(1, 7), (1, 1 << 16), (2, 333)] {
            let opts = CsvOptions {
                threads,
                batch_rows: 8192,
                batch_bytes: 4000,
                // Segments smaller than a record: the parallel decoder hands the body to one.
                segment_bytes: 100,
                ..CsvOptions::default()
            };
            let mut d = CsvDecoder::new(schema(), opts);
            let mut batches = Vec::new();
            for c in body.chunks(chunk) {
                batches.extend(d.push(c).unwrap());
            }
            batches.extend(d.finish().unwrap());
            let rows: Vec<usize> = batches.iter().map(|b| b.num_rows()).collect();
            assert_eq!(rows.iter().sum::<usize>(), 100, "{rows:?}");
            // 4,000 bytes and the record that crosses them: at most 5 records of 1-2 KB.
            assert!(
                rows.iter().all(|n| *n <= 5),
                "threads {threads}, chunk {chunk}: {rows:?}"
            );
            let ids: Vec<i64> = batches
                .iter()
                .flat_map(|b| {
                    let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    a.values().to_vec()
                })
                .collect();
            assert_eq!(ids, (0..100).collect::<Vec<i64>>());
        }
    }

    /// A bad value deep in a body decoded in segments is named by its own line.
    #[test]
    fn segment_errors_name_the_upload_line() {
        let mut body = String::from("id,name\n");
        for i in 0..1000 {
            if i == 777 {
                body.push_str("x,\"bad, line\"\n");
            } else {
                body.push_str(&format!("{i},\"a\nb\"\n"));
            }
        }
        for (threads, segment_bytes) in [(1, 1), (2, 10), (3, 100), (4, 1000)] {
            let opts = CsvOptions {
                threads,
                segment_bytes,
                batch_rows: 16,
                ..CsvOptions::default()
            };
            match decode(body.as_bytes(), opts, &[333]).unwrap_err() {
                IngestError::InvalidData { line, message, .. } => {
                    // The header is line 1 and each record before takes two lines (a quoted
                    // line break): record 778 begins on line 1 + 777 * 2 + 1.
                    assert_eq!(line, Some(1556), "{threads} threads: {message}");
                    assert!(message.starts_with("line 1556: "), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Options that cut a body into many segments and batches.
    fn many_pieces(threads: usize, segment_bytes: usize) -> CsvOptions {
        CsvOptions {
            threads,
            segment_bytes,
            batch_rows: 16,
            batch_bytes: 256,
            ..CsvOptions::default()
        }
    }

    /// Asked for, the decoder tells the line each record it handed out begins on (the inferring
    /// decoder's code check names lines by it), on one decoder and in segments.
    #[test]
    fn record_lines_are_kept_when_asked_for() {
        for eol in ["\n", "\r\n"] {
            let mut body = format!("id,name{eol}").into_bytes();
            let mut starts = Vec::new();
            let mut line = 2;
            for i in 0..400 {
                if i % 7 == 0 {
                    body.extend(eol.as_bytes());
                    line += 1;
                }
                starts.push(line);
                if i % 3 == 0 {
                    body.extend(format!("{i},\"two{eol}lines\"{eol}").as_bytes());
                    line += 2;
                } else {
                    body.extend(format!("{i},plain{eol}").as_bytes());
                    line += 1;
                }
            }
            for (threads, segment_bytes) in [(1, 1), (2, 64), (3, 1000)] {
                let opts = many_pieces(threads, segment_bytes);
                let mut d = CsvDecoder::new(schema(), opts).with_record_lines();
                let mut seen = 0;
                let mut check = |d: &CsvDecoder, batches: Vec<RecordBatch>| {
                    let n = rows(&batches) as usize;
                    for (k, want) in starts.iter().enumerate().skip(seen).take(n) {
                        assert_eq!(
                            d.line_of_record(k as u64),
                            Some(*want),
                            "record {k}, {eol:?}, {threads} threads"
                        );
                    }
                    seen += n;
                };
                for c in body.chunks(97) {
                    let batches = d.push(c).unwrap();
                    check(&d, batches);
                }
                let batches = d.finish().unwrap();
                check(&d, batches);
                assert_eq!(seen, 400);
                // Not asked for: not told.
                let mut d = CsvDecoder::new(schema(), opts);
                d.push(&body).unwrap();
                assert_eq!(d.line_of_record(0), None);
            }
        }
    }

    /// An error names the line an editor shows the bad record on, whatever comes before it:
    /// blank lines, line ends inside quoted fields, `\n`, `\r\n` or `\r` line ends; on one
    /// decoder and in segments, in any chunking; a bad value, a record with too few or too many
    /// fields, bytes that are not UTF-8.
    #[test]
    fn errors_name_the_line_the_record_begins_on() {
        let bad_records: [&[u8]; 4] = [b"x,bad", b"5", b"5,a,b", b"5,\xff\xfe"];
        for eol in ["\n", "\r\n", "\r"] {
            for bad in bad_records {
                let mut body = format!("id,name{eol}").into_bytes();
                let mut line = 2;
                let mut want = 0;
                for i in 0..400 {
                    if i % 5 == 0 {
                        body.extend(eol.as_bytes());
                        line += 1;
                    }
                    if i == 300 {
                        want = line;
                        body.extend(bad);
                    } else if i % 3 == 0 {
                        body.extend(format!("{i},\"two{eol}line ends{eol}\"").as_bytes());
                        line += 2;
                    } else {
                        body.extend(format!("{i},plain").as_bytes());
                    }
                    body.extend(eol.as_bytes());
                    line += 1;
                }
                for (threads, segment_bytes) in [(1, 1), (2, 64), (3, 1000)] {
                    let opts = many_pieces(threads, segment_bytes);
                    for cuts in [&[1][..], &[7, 100], &[1 << 20]] {
                        let context = format!(
                            "{:?} after {eol:?} lines, {threads} threads, cut {cuts:?}",
                            String::from_utf8_lossy(bad)
                        );
                        match decode(&body, opts, cuts) {
                            Err(IngestError::InvalidData { line, message, .. }) => {
                                assert_eq!(line, Some(want), "{context}: {message}");
                                assert!(
                                    message.starts_with(&format!("line {want}")),
                                    "{context}: {message}"
                                );
                            }
                            other => panic!("{context}: {other:?}"),
                        }
                    }
                }
            }
        }
    }
}

/// Decimals with more fractional digits than their scale round half away from zero on both
/// paths; a value too large is refused with its line and column.
#[cfg(test)]
mod decimals {
    use super::*;
    use arrow::array::{AsArray, Decimal128Array};
    use arrow::datatypes::Decimal128Type;

    /// `body` decoded with segments of 16 bytes on `threads` threads, in batches of two rows.
    pub(super) fn small_batches(
        schema: SchemaRef,
        body: &str,
        threads: usize,
    ) -> Result<Vec<RecordBatch>> {
        let opts = CsvOptions {
            threads,
            segment_bytes: 16,
            batch_rows: 2,
            ..CsvOptions::default()
        };
        let mut d = CsvDecoder::new(schema, opts);
        let mut batches = d.push(body.as_bytes())?;
        batches.extend(d.finish()?);
        Ok(batches)
    }

    fn decode(body: &str, threads: usize) -> Result<Vec<Option<i128>>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("m", DataType::Decimal128(5, 2), true),
        ]));
        let mut out = Vec::new();
        for b in &small_batches(schema, body, threads)? {
            let m: &Decimal128Array = b.column(1).as_primitive::<Decimal128Type>();
            assert_eq!(m.precision(), 5);
            assert_eq!(m.scale(), 2);
            out.extend(m.iter());
        }
        Ok(out)
    }

    #[test]
    fn decimals_round_on_both_paths_and_too_large_ones_name_their_line() {
        let plain = "id,m\n1,1.235\n2,-1.235\n3,\n4,0.004\n5,999.99\n6,1.5e-2\n";
        let quoted = plain.replace("-1.235", "\"-1.235\"");
        let want = vec![Some(124), Some(-124), None, Some(0), Some(99999), Some(2)];
        for threads in [1, 3] {
            assert_eq!(decode(plain, threads).unwrap(), want, "{threads} threads");
            assert_eq!(
                decode(&quoted, threads).unwrap(),
                want,
                "{threads} threads, quoted"
            );
            for (body, what) in [
                (
                    format!("{plain}7,999.995\n8,1\n"),
                    "does not fit decimal128(5,2)",
                ),
                (
                    format!("{quoted}7,1.2.3\n8,1\n"),
                    "is not a valid decimal128(5,2)",
                ),
            ] {
                let e = decode(&body, threads).unwrap_err();
                let message = crate::decode::invalid_at(e, Some(8), Some("m"));
                assert!(
                    message.starts_with("line 8: column \"m\": value"),
                    "{message}"
                );
                assert!(message.contains(what), "{message}");
            }
        }
    }
}

/// Dates and times in the shapes spreadsheets write are read on both paths; one that is no time
/// names its line and column (arrow-csv's own error named neither: "Error parsing column 0 at
/// line 0").
#[cfg(test)]
mod times {
    use super::*;
    use arrow::array::AsArray;
    use arrow::compute::kernels::cast_utils::Parser;
    use arrow::datatypes::{Date32Type, TimeUnit, TimestampSecondType};

    fn decode(body: &str, threads: usize) -> Result<Vec<(Option<i32>, Option<i64>)>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Date32, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Second, None), true),
        ]));
        let mut out = Vec::new();
        for b in &super::decimals::small_batches(schema, body, threads)? {
            let d = b.column(0).as_primitive::<Date32Type>();
            let t = b.column(1).as_primitive::<TimestampSecondType>();
            out.extend(d.iter().zip(t.iter()));
        }
        Ok(out)
    }

    #[test]
    fn spreadsheet_times_are_read_and_bad_ones_name_their_line() {
        let day = Date32Type::parse("2024-01-05").unwrap();
        let ten = 1_704_448_800; // 2024-01-05T10:00:00Z
        let plain = "d,t\n2024/1/5,2024/1/5 10:00\n2024年1月5日,2024-01-05 18:00+08:00\n,\n";
        let quoted = plain.replace("2024/1/5,", "\"2024/1/5\",");
        let want = vec![(Some(day), Some(ten)), (Some(day), Some(ten)), (None, None)];
        for threads in [1, 3] {
            assert_eq!(decode(plain, threads).unwrap(), want, "{threads} threads");
            assert_eq!(
                decode(&quoted, threads).unwrap(),
                want,
                "{threads} threads, quoted"
            );
            for (body, column) in [
                (format!("{quoted}2024-01-05,1704448800\n"), "t"),
                (format!("{plain}2024/2/30,2024-01-05\n"), "d"),
            ] {
                let message = crate::decode::invalid_at(
                    decode(&body, threads).unwrap_err(),
                    Some(5),
                    Some(column),
                );
                assert!(message.starts_with("line 5: column"), "{message}");
            }
        }
    }
}

/// The quote-free fast path against arrow-csv, over every type a dataset column can have.
#[cfg(test)]
mod plain_path {
    use super::*;
    use arrow::compute::concat_batches;
    use arrow::datatypes::{DataType, TimeUnit};
    use proptest::prelude::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Date32, true),
            Field::new("m", DataType::Decimal128(10, 2), true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("u", DataType::UInt8, true),
        ]))
    }

    fn layout(header: &str) -> Layout {
        let mut d = CsvDecoder::new(schema(), CsvOptions::default());
        d.header = header.as_bytes().to_vec();
        d.read_header().unwrap()
    }

    /// A record's fields: valid values or empty ones (null), and now and then a value that is not
    /// one of its column's type.
    fn fields() -> impl Strategy<Value = Vec<String>> {
        let valid = (
            "[a-z张 ]{0,6}",
            "-?[0-9]{1,18}|",
            "-?[0-9]{1,5}(\\.[0-9]{0,3})?|1e5|NaN|inf|",
            "true|FALSE|True|",
            "20[0-9]{2}-0[1-9]-[0-2][0-9]|[0-9]{4}-[01][0-9]-[0-3][0-9]|2024-1-5|",
            "-?[0-9]{1,8}(\\.[0-9]{1,4})?|1\\.5e2|",
            "2024-0[1-9]-1[0-9]( |T)1[0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,3})?(Z|\\+08:00)?|2024-01-01|",
            "[0-9]{1,2}|",
        )
            .prop_map(|(s, i, f, b, d, m, t, u)| vec![s, i, f, b, d, m, t, u]);
        let invalid = (
            valid.clone(),
            1usize..8,
            "x|[0-9]{20}|2024-02-30|t|1|-1|1\\.234|1e400",
        )
            .prop_map(|(mut v, at, bad)| {
                v[at] = bad;
                v
            });
        prop_oneof![50 => valid, 1 => invalid]
    }

    fn rows(batches: &[RecordBatch]) -> RecordBatch {
        concat_batches(&schema(), batches).unwrap()
    }

    proptest! {
        /// Whatever the fast path decodes, arrow-csv decodes to the same rows; what it declines
        /// without a quote or a lone CR in the input, arrow-csv refuses too.
        #[test]
        fn the_fast_path_decodes_what_arrow_csv_decodes(
            records in proptest::collection::vec(
                (fields(), 0u8..10, any::<bool>()), 0..60),
            flaw in proptest::option::of((0usize..60, 0u8..3)),
            reversed in any::<bool>(),
            last_line_end in any::<bool>(),
            batch_rows in 1usize..9,
        ) {
            let mut names = ["s", "i", "f", "b", "d", "m", "t", "u"];
            if reversed {
                names.reverse();
            }
            let layout = layout(&format!("{}\n", names.join(",")));
            let mut body = String::new();
            let mut lone_cr = false;
            for (n, (values, blank, crlf)) in records.iter().enumerate() {
                let odd = flaw.filter(|(at, _)| *at == n).map(|(_, kind)| kind);
                let mut values = values.clone();
                if reversed {
                    values.reverse();
                }
                if *blank == 0 {
                    body.push_str(if *crlf { "\r\n" } else { "\n" });
                }
                match odd {
                    // A record with a field missing, or one too many.
                    Some(0) => values.truncate(values.len() - 1),
                    Some(1) => values.push("x".into()),
                    Some(_) => {
                        values[0].push('\r');
                        lone_cr = true;
                    }
                    _ => {}
                }
                body.push_str(&values.join(","));
                body.push_str(if *crlf { "\r\n" } else { "\n" });
            }
            if !last_line_end {
                let trimmed = body.trim_end_matches(['\r', '\n']).len();
                body.truncate(trimmed);
            }
            let layout = Layout { batch_rows, ..layout };
            let plain = super::super::plain_csv::decode(
                body.as_bytes(), b',', &layout.target, &layout.order, batch_rows);
            let general = layout.read_segment(body.as_bytes(), 0);
            match (plain, general) {
                (Some((p, lines)), Ok(g)) => {
                    prop_assert!(p.iter().all(|b| b.num_rows() <= batch_rows));
                    prop_assert_eq!(rows(&p), rows(&g));
                    prop_assert_eq!(lines, line_ends(body.as_bytes(), &mut false));
                }
                (Some((p, _)), Err(e)) => prop_assert!(false, "fast path {:?}, arrow-csv {e}", rows(&p)),
                (None, Ok(g)) => prop_assert!(lone_cr, "declined what arrow-csv decodes: {:?}", rows(&g)),
                (None, Err(_)) => {}
            }
        }
    }

    #[test]
    fn the_fast_path_takes_crlf_blank_lines_and_a_last_line_without_end() {
        let layout = layout("s,i,f,b,d,m,t,u\n");
        let body = "a,1,1.5,true,2024-01-02,3.25,2024-01-02T03:04:05,7\r\n\r\n\n,,,,,,,\nb,2,x";
        // A bad float: declined, arrow-csv names it.
        let plain = |body: &str| {
            super::super::plain_csv::decode(body.as_bytes(), b',', &layout.target, &layout.order, 8)
                .map(|(batches, _)| batches)
        };
        assert!(plain(body).is_none());
        assert!(layout.read_segment(body.as_bytes(), 0).is_err());
        let body = body.replace(",x", ",2.5,false,2024-01-03,1,2024-01-03 00:00:00+08:00,8");
        let got = rows(&plain(&body).expect("quote-free input takes the fast path"));
        assert_eq!(got.num_rows(), 3);
        assert_eq!(got, rows(&layout.read_segment(body.as_bytes(), 0).unwrap()));
        assert!(got.column(0).is_null(1));
        // A quote anywhere sends the segment to arrow-csv.
        assert!(plain("\"a\",1,,,,,,\n").is_none());
    }
}
