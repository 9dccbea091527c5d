//! Arrow IPC uploads, decoded message by message: the stream form, and the file form (what
//! pandas' `to_feather`, pyarrow's `ipc.new_file` and most `.arrow` files hold), which is the
//! stream between a leading `ARROW1` and a footer of where its batches are. Its messages are
//! read in order as they come, so a file streams through in bounded memory like a stream; the
//! footer only repeats where they were.

use super::{BATCH_BYTES, Pieces, PushDecoder};
use crate::error::{IngestError, Result};
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::record_batch::RecordBatch;
use datagate_core::ipc_limits;

/// The largest IPC message (a record batch, with the dictionaries before it) an upload may
/// send. The decoder holds a message whole before it yields its batch, and the batch is held
/// again on its way to Parquet: without a bound, one batch of a 1 GiB value (a 1 MiB gzip
/// body) took 5.4 GB of memory. Writers send a large table as several batches (pyarrow:
/// `write_table(table, max_chunksize=65536)`).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The most a message's compressed buffers may declare they decompress to (arrow allocates
/// what they declare before decompressing: see [`datagate_core::ipc_limits`]).
const MAX_DECODED_MESSAGE_BYTES: u64 = 256 << 20;

/// Decodes an Arrow IPC stream into batches of the dataset's schema.
pub struct IpcStreamDecoder {
    /// The dataset's schema; `None` until the stream's own schema fixes it (first upload).
    target: Option<SchemaRef>,
    decoder: StreamDecoder,
    rows: u64,
    seen_bytes: bool,
    /// A `replace` may add columns: the first batch extends the target.
    may_add_columns: bool,
    /// Bytes taken by the decoder since it last yielded a batch.
    since_batch: usize,
    /// Decoded batches not handed on yet.
    pieces: Pieces,
    /// Bytes of a message not yet whole: a message reaches arrow's decoder only once its
    /// buffers' declared sizes are checked.
    partial: Vec<u8>,
    /// The IPC form, once the first bytes tell it.
    form: Option<Form>,
    /// Messages framed so far.
    messages: u64,
    /// The end-of-stream marker has passed: what follows is a file's footer.
    ended: bool,
    /// The last bytes after the end-of-stream marker (a file ends with `ARROW1`).
    tail: Vec<u8>,
}

/// The two forms of Arrow IPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Stream,
    /// `ARROW1`, two bytes of padding, the stream, the footer, its length and `ARROW1`.
    File,
}

/// What an Arrow IPC file begins and ends with.
const FILE_MAGIC: &[u8; 6] = b"ARROW1";
/// The magic and its padding to 8 bytes, before a file's stream (or more padding).
const FILE_HEAD: usize = 8;

/// Why a message over [`MAX_MESSAGE_BYTES`] is refused.
fn too_large() -> String {
    format!(
        "an Arrow IPC message is larger than {} MiB; send the table in smaller record batches",
        MAX_MESSAGE_BYTES >> 20
    )
}

impl IpcStreamDecoder {
    pub fn new(target: Option<SchemaRef>, may_add_columns: bool) -> Self {
        Self {
            target,
            decoder: StreamDecoder::new(),
            rows: 0,
            seen_bytes: false,
            may_add_columns,
            since_batch: 0,
            pieces: Pieces::default(),
            partial: Vec::new(),
            form: None,
            messages: 0,
            ended: false,
            tail: Vec::new(),
        }
    }

    /// Tells the form from the first bytes of [`Self::partial`] and drops a file's magic;
    /// `None` while too few have come to tell (or at the end: then `Stream`, and the bytes
    /// are judged as one).
    fn sniff(&mut self, at_end: bool) -> Option<Form> {
        if let Some(form) = self.form {
            return Some(form);
        }
        let head = &self.partial[..self.partial.len().min(FILE_MAGIC.len())];
        let form = if !FILE_MAGIC.starts_with(head) {
            Form::Stream
        } else if self.partial.len() >= FILE_HEAD {
            self.partial.drain(..FILE_HEAD);
            Form::File
        } else if at_end && self.partial.len() >= FILE_MAGIC.len() {
            self.partial.clear();
            Form::File
        } else if at_end {
            Form::Stream
        } else {
            return None;
        };
        self.form = Some(form);
        Some(form)
    }

    /// Keeps the last bytes of a file's footer, the end of which is its magic.
    fn keep_tail(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        let extra = self.tail.len().saturating_sub(FILE_MAGIC.len());
        self.tail.drain(..extra);
    }

    /// Why a first message that cannot be one is refused: the body is not Arrow IPC at all
    /// (a message over the bound before any other means its first bytes are no length).
    fn not_ipc(&self) -> Option<String> {
        (self.messages == 0).then(|| {
            "the body is not Arrow IPC: it begins with neither a stream's first message nor \
             an Arrow file's ARROW1"
                .to_string()
        })
    }

    /// Hands the first `whole` bytes of [`Self::partial`] (whole, checked messages) to arrow's
    /// decoder, and what it decodes to [`Self::pieces`].
    fn decode_whole(&mut self, whole: usize) -> Result<()> {
        if whole == 0 {
            return Ok(());
        }
        let mut buf = Buffer::from(self.partial.drain(..whole).as_slice());
        while !buf.is_empty() {
            let before = buf.len();
            // arrow's decoder panics on some malformed messages (a buffer past the body's
            // end, an unknown type id): that is a corrupt upload too, not a server fault.
            let decoded = datagate_core::panics::contain(|| self.decoder.decode(&mut buf))
                .map_err(|panic| format!("the decoder stopped: {panic}"))
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| {
                    IngestError::invalid_data(format!(
                        "invalid Arrow IPC stream after row {}: {e}",
                        self.rows
                    ))
                })?;
            self.since_batch += before - buf.len();
            if self.since_batch > MAX_MESSAGE_BYTES {
                return Err(self.at_row(too_large()));
            }
            match decoded {
                Some(batch) => {
                    self.since_batch = 0;
                    let target = match &self.target {
                        Some(t) if self.may_add_columns && self.rows == 0 => {
                            let t = super::extend_schema(t, &batch.schema())?;
                            self.target = Some(t.clone());
                            t
                        }
                        Some(t) => t.clone(),
                        None => {
                            let t = super::storable_schema(&batch.schema())?;
                            self.target = Some(t.clone());
                            t
                        }
                    };
                    let rows = batch.num_rows() as u64;
                    self.pieces.push(batch, target, self.rows + 1);
                    self.rows += rows;
                }
                None => break,
            }
        }
        Ok(())
    }

    /// An error about the message of the next row.
    fn at_row(&self, why: String) -> IngestError {
        IngestError::InvalidData {
            message: format!("row {}: {why}", self.rows + 1),
            line: None,
            row: Some(self.rows + 1),
            column: None,
        }
    }

    /// Hands the whole messages at the front of [`Self::partial`] to arrow's decoder, each
    /// checked first; the rows before a refused message are decoded first, so the error names
    /// the right row. In a file, what follows the end-of-stream marker is its footer: only
    /// its end is kept, to check.
    fn frame_and_decode(&mut self, form: Form) -> Result<Vec<RecordBatch>> {
        if form == Form::File && self.messages == 0 {
            // Writers pad the magic to their alignment (to 8 bytes as the format describes
            // it, to 64 in arrow-rs): zero words before the first message are that padding
            // (a message begins with 0xFFFFFFFF, or with its non-zero length before 0.15).
            let zeros = self
                .partial
                .chunks_exact(4)
                .take_while(|w| *w == [0; 4])
                .count();
            self.partial.drain(..zeros * 4);
        }
        let mut whole = 0;
        let mut refused = None;
        loop {
            let len = match ipc_limits::frame(&self.partial[whole..]) {
                ipc_limits::Framed::Partial(needed) => {
                    if needed.is_some_and(|n| n > MAX_MESSAGE_BYTES) {
                        refused = Some(self.not_ipc().unwrap_or_else(too_large));
                    }
                    break;
                }
                ipc_limits::Framed::Other { len } => len,
                ipc_limits::Framed::End { len } if form == Form::File => {
                    whole += len;
                    self.ended = true;
                    break;
                }
                ipc_limits::Framed::End { len } => len,
                ipc_limits::Framed::Message {
                    len,
                    metadata,
                    body,
                } => {
                    let at = &self.partial[whole..];
                    let checked = ipc_limits::check_message(
                        &at[metadata],
                        &at[body],
                        MAX_DECODED_MESSAGE_BYTES,
                    );
                    if let Err(why) = checked {
                        refused = Some(why);
                        break;
                    }
                    len
                }
            };
            whole += len;
            self.messages += 1;
        }
        self.decode_whole(whole)?;
        if self.ended {
            let footer = self.partial.split_off(0);
            self.keep_tail(&footer);
        }
        match refused {
            Some(why) => Err(self.at_row(why)),
            None => self.held(),
        }
    }
}

impl PushDecoder for IpcStreamDecoder {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        if chunk.is_empty() {
            return Ok(Vec::new());
        }
        self.seen_bytes = true;
        if self.ended {
            self.keep_tail(chunk);
            return Ok(Vec::new());
        }
        self.partial.extend_from_slice(chunk);
        let Some(form) = self.sniff(false) else {
            return Ok(Vec::new());
        };
        self.frame_and_decode(form)
    }
    /// The next pieces of the decoded batches, [`BATCH_BYTES`] of them or so.
    fn held(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while bytes < BATCH_BYTES {
            let Some(piece) = self.pieces.next_piece() else {
                break;
            };
            let piece = piece?;
            bytes += piece.get_array_memory_size();
            out.push(piece);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        if !self.seen_bytes {
            return Err(IngestError::invalid_data("the body is empty"));
        }
        let form = self.sniff(true);
        let what = match form {
            Some(Form::File) => "Arrow file",
            _ => "Arrow IPC stream",
        };
        let truncated = |e: String| {
            IngestError::invalid_data(format!(
                "the {what} is truncated after row {}: {e}",
                self.rows
            ))
        };
        if form == Some(Form::File) && !self.ended {
            let unread = self.partial.len();
            return Err(truncated(format!(
                "it ends before its footer ({unread} bytes of an unfinished message)"
            )));
        }
        if self.ended && self.tail != FILE_MAGIC {
            return Err(truncated("its footer does not end with ARROW1".into()));
        }
        if !self.partial.is_empty() {
            return Err(truncated(format!(
                "{} bytes of an unfinished message",
                self.partial.len()
            )));
        }
        self.decoder
            .finish()
            .map_err(|e| truncated(e.to_string()))?;
        self.held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;

    /// One text column `a` holding `batches`' values, batch by batch.
    fn text_batches(batches: &[Vec<&str>]) -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("a", arrow::datatypes::DataType::Utf8, true),
        ]));
        let batches = batches
            .iter()
            .map(|values| {
                let column = Arc::new(StringArray::from(values.clone())) as ArrayRef;
                RecordBatch::try_new(schema.clone(), vec![column]).unwrap()
            })
            .collect();
        (schema, batches)
    }

    /// `batches` as an Arrow IPC stream.
    fn stream(batches: &[Vec<&str>]) -> Vec<u8> {
        let (schema, batches) = text_batches(batches);
        let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
        batches.iter().for_each(|b| w.write(b).unwrap());
        w.into_inner().unwrap()
    }

    /// `batches` as an Arrow IPC file (the form `.arrow` files and pandas' `to_feather` hold).
    fn file(batches: &[Vec<&str>]) -> Vec<u8> {
        let (schema, batches) = text_batches(batches);
        let mut w = arrow::ipc::writer::FileWriter::try_new(Vec::new(), &schema).unwrap();
        batches.iter().for_each(|b| w.write(b).unwrap());
        w.into_inner().unwrap()
    }

    /// Feeds `bytes` in 1 MiB chunks; the rows decoded, or the error.
    fn decode(bytes: &[u8]) -> Result<usize> {
        let mut d = IpcStreamDecoder::new(None, false);
        let mut rows = 0;
        for chunk in bytes.chunks(1 << 20) {
            rows += d.push(chunk)?.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        d.finish()?;
        Ok(rows)
    }

    /// `bytes` compressed with `codec`, one batch of `values`.
    fn compressed(values: &[&str], codec: arrow::ipc::CompressionType) -> Vec<u8> {
        let column = Arc::new(StringArray::from(values.to_vec())) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("a", column)]).unwrap();
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(codec))
            .unwrap();
        let mut w = arrow::ipc::writer::StreamWriter::try_new_with_options(
            Vec::new(),
            &batch.schema(),
            options,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        w.into_inner().unwrap()
    }

    #[test]
    fn compressed_messages_are_taken_within_their_declared_bound() {
        use arrow::ipc::CompressionType;
        let value = "z".repeat(1 << 20);
        for codec in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
            // 4 MiB decoded: taken, in any chunking.
            let small = compressed(&[value.as_str(); 4], codec);
            for chunk in [1, 7, 4096, small.len()] {
                let mut d = IpcStreamDecoder::new(None, false);
                let mut rows = 0;
                for c in small.chunks(chunk) {
                    rows += d
                        .push(c)
                        .unwrap()
                        .iter()
                        .map(|b| b.num_rows())
                        .sum::<usize>();
                }
                rows += d
                    .finish()
                    .unwrap()
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>();
                assert_eq!(rows, 4, "{codec:?} in chunks of {chunk}");
            }
            // 300 MiB declared by a 1.2 MB message: refused before arrow allocates it.
            let bomb = compressed(&vec![value.as_str(); 300], codec);
            assert!(bomb.len() < 2 << 20, "{}", bomb.len());
            let e = decode(&bomb).unwrap_err().to_string();
            assert!(
                e.contains("row 1: a record batch decompresses to more than 256 MiB"),
                "{e}"
            );
            // A declared length of 2^60 (the allocation that aborted the gateway).
            let one = compressed(&[value.as_str()], codec);
            let magic: &[u8] = match codec {
                CompressionType::LZ4_FRAME => &[0x04, 0x22, 0x4d, 0x18],
                _ => &[0x28, 0xb5, 0x2f, 0xfd],
            };
            let at = one
                .windows(12)
                .position(|w| w[..8] == ((1i64 << 20).to_le_bytes()) && &w[8..] == magic)
                .unwrap();
            let mut lie = one.clone();
            lie[at..at + 8].copy_from_slice(&(1i64 << 60).to_le_bytes());
            let e = decode(&lie).unwrap_err().to_string();
            assert!(e.contains("decompresses to more than 256 MiB"), "{e}");
        }
    }

    /// Every row of `bytes` fed in chunks of `chunk`, as text, or the error.
    fn values(bytes: &[u8], chunk: usize) -> Result<Vec<String>> {
        let mut d = IpcStreamDecoder::new(None, false);
        let mut batches = Vec::new();
        for c in bytes.chunks(chunk) {
            batches.extend(d.push(c)?);
        }
        batches.extend(d.finish()?);
        Ok(batches
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                a.iter()
                    .map(|v| v.unwrap_or("∅").to_string())
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    #[test]
    fn an_arrow_file_is_read_like_its_stream_in_any_chunking() {
        let rows = [vec!["a", "b"], vec![], vec!["c"]];
        let bytes = file(&rows);
        for chunk in [bytes.len(), 4096, 9, 8, 7, 5, 1] {
            assert_eq!(
                values(&bytes, chunk).unwrap(),
                ["a", "b", "c"],
                "chunks of {chunk}"
            );
        }
        assert_eq!(values(&stream(&rows), 3).unwrap(), ["a", "b", "c"]);
        // Cut anywhere, it is refused as a truncated file, never read in part.
        let footer = bytes.len() - 10;
        for cut in [
            6,
            8,
            40,
            bytes.len() / 2,
            footer - 20,
            footer,
            bytes.len() - 1,
        ] {
            let e = values(&bytes[..cut], 1 << 20).unwrap_err().to_string();
            assert!(
                e.contains("the Arrow file is truncated after row"),
                "{cut}: {e}"
            );
        }
    }

    /// A body that is no Arrow IPC at all (CSV sent as Arrow) says so, not that its first
    /// message is too large (its first four bytes read as a length of 174 MB).
    #[test]
    fn a_body_that_is_not_arrow_says_so() {
        for body in [&b"a,b\n1,2\n"[..], b"junkjunk", b"ARROW2\0\0xxxxxxxx"] {
            let e = values(body, 3).unwrap_err().to_string();
            assert!(e.contains("the body is not Arrow IPC"), "{body:?}: {e}");
        }
        for short in [&b"ARR"[..], b"ab"] {
            let e = values(short, 1).unwrap_err().to_string();
            assert!(e.contains("truncated after row 0"), "{short:?}: {e}");
        }
    }

    #[test]
    fn a_stream_cut_inside_a_message_is_truncated() {
        let bytes = stream(&[vec!["a", "b"]]);
        for cut in [bytes.len() - 9, bytes.len() / 2, 3] {
            let e = decode(&bytes[..cut]).unwrap_err().to_string();
            assert!(e.contains("truncated"), "{cut}: {e}");
        }
    }

    #[test]
    fn a_message_over_the_bound_is_refused_and_many_small_ones_are_not() {
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let e = decode(&stream(&[vec!["a", "b"], vec![big.as_str()]])).unwrap_err();
        assert!(
            e.to_string()
                .contains("row 3: an Arrow IPC message is larger than 64 MiB"),
            "{e}"
        );
        // The same bytes in batches under the bound.
        let part = "x".repeat(MAX_MESSAGE_BYTES / 4);
        let parts: Vec<Vec<&str>> = (0..6).map(|_| vec![part.as_str()]).collect();
        assert_eq!(decode(&stream(&parts)).unwrap(), 6);
    }
}
