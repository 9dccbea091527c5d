//! `Content-Encoding: gzip`: decompresses chunk by chunk in front of another decoder.

use super::PushDecoder;
use crate::error::{IngestError, Result};
use arrow::record_batch::RecordBatch;
use std::io::Write;

/// Decompresses gzip and feeds the inner decoder; a truncated stream is an error.
pub struct GzipDecoder<D> {
    gz: flate2::write::MultiGzDecoder<Vec<u8>>,
    inner: D,
    /// Decompressed bytes so far, to bound what a small body can expand to.
    pub expanded: u64,
    limit: u64,
}

impl<D: PushDecoder> GzipDecoder<D> {
    /// `limit` caps the decompressed size (a gzip bomb is refused like an oversized body).
    pub fn new(inner: D, limit: u64) -> Self {
        Self {
            gz: flate2::write::MultiGzDecoder::new(Vec::new()),
            inner,
            expanded: 0,
            limit,
        }
    }

    fn drain(&mut self) -> Result<Vec<RecordBatch>> {
        let out = std::mem::take(self.gz.get_mut());
        self.expanded += out.len() as u64;
        if self.expanded > self.limit {
            return Err(IngestError::TooLarge(self.limit));
        }
        if out.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.push(&out)
    }
}

impl<D: PushDecoder> PushDecoder for GzipDecoder<D> {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        self.gz
            .write_all(chunk)
            .map_err(|e| IngestError::invalid_data(format!("invalid gzip data: {e}")))?;
        self.drain()
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        self.gz.try_finish().map_err(|e| {
            IngestError::invalid_data(format!("the gzip stream is truncated or corrupt: {e}"))
        })?;
        let mut out = self.drain()?;
        out.extend(self.inner.finish()?);
        Ok(out)
    }

    fn held(&mut self) -> Result<Vec<RecordBatch>> {
        self.inner.held()
    }
}
