//! Arrow IPC stream uploads, decoded message by message.

use super::{BATCH_BYTES, Pieces, PushDecoder};
use crate::error::{IngestError, Result};
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::record_batch::RecordBatch;

/// The largest IPC message (a record batch, with the dictionaries before it) an upload may
/// send. The decoder holds a message whole before it yields its batch, and the batch is held
/// again on its way to Parquet: without a bound, one batch of a 1 GiB value (a 1 MiB gzip
/// body) took 5.4 GB of memory. Writers send a large table as several batches (pyarrow:
/// `write_table(table, max_chunksize=65536)`).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

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
        }
    }
}

impl PushDecoder for IpcStreamDecoder {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        if chunk.is_empty() {
            return Ok(Vec::new());
        }
        self.seen_bytes = true;
        let mut buf = Buffer::from(chunk.to_vec());
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
                return Err(IngestError::InvalidData {
                    message: format!(
                        "row {}: an Arrow IPC message is larger than {} MiB; send the table \
                         in smaller record batches",
                        self.rows + 1,
                        MAX_MESSAGE_BYTES >> 20
                    ),
                    line: None,
                    row: Some(self.rows + 1),
                    column: None,
                });
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
        self.held()
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
        self.decoder.finish().map_err(|e| {
            IngestError::invalid_data(format!(
                "the Arrow IPC stream is truncated after row {}: {e}",
                self.rows
            ))
        })?;
        self.held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;

    fn stream(batches: &[Vec<&str>]) -> Vec<u8> {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("a", arrow::datatypes::DataType::Utf8, true),
        ]));
        let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
        for values in batches {
            let column = Arc::new(StringArray::from(values.clone())) as ArrayRef;
            w.write(&RecordBatch::try_new(schema.clone(), vec![column]).unwrap())
                .unwrap();
        }
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
