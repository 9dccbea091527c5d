//! Arrow IPC stream uploads, decoded message by message.

use super::{PushDecoder, conform};
use crate::error::{IngestError, Result};
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::record_batch::RecordBatch;

/// Decodes an Arrow IPC stream into batches of the dataset's schema.
pub struct IpcStreamDecoder {
    /// The dataset's schema; `None` until the stream's own schema fixes it (first upload).
    target: Option<SchemaRef>,
    decoder: StreamDecoder,
    rows: u64,
    seen_bytes: bool,
    /// A `replace` may add columns: the first batch extends the target.
    may_add_columns: bool,
}

impl IpcStreamDecoder {
    pub fn new(target: Option<SchemaRef>, may_add_columns: bool) -> Self {
        Self {
            target,
            decoder: StreamDecoder::new(),
            rows: 0,
            seen_bytes: false,
            may_add_columns,
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
        let mut out = Vec::new();
        while !buf.is_empty() {
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
            match decoded {
                Some(batch) => {
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
                    let b = conform(&batch, &target, self.rows + 1)?;
                    self.rows += b.num_rows() as u64;
                    out.push(b);
                }
                None => break,
            }
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
        Ok(Vec::new())
    }
}
