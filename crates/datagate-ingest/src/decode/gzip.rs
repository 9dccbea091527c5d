//! `Content-Encoding: gzip`: decompresses chunk by chunk in front of another decoder.

use super::PushDecoder;
use crate::error::{IngestError, Result};
use arrow::record_batch::RecordBatch;
use std::io::Write;

/// The first bytes of every gzip member (RFC 1952).
const MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Checks that a body said to be gzip (`Content-Encoding: gzip`) starts as gzip does, as its
/// chunks arrive: a body sent uncompressed under that header is refused saying so, not with
/// the decompressor's "corrupt deflate stream".
#[derive(Default)]
pub struct GzipStart {
    seen: usize,
}

impl GzipStart {
    pub fn check(&mut self, chunk: &[u8]) -> Result<()> {
        for &b in chunk.iter().take(MAGIC.len().saturating_sub(self.seen)) {
            if b != MAGIC[self.seen] {
                return Err(IngestError::invalid_data(
                    "the body is not gzip, though Content-Encoding says gzip (gzip starts with \
                     the bytes 1f 8b): send it compressed, or without that header",
                ));
            }
            self.seen += 1;
        }
        Ok(())
    }
}

/// Decompresses gzip and feeds the inner decoder; a truncated stream is an error.
pub struct GzipDecoder<D> {
    start: GzipStart,
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
            start: GzipStart::default(),
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
        self.start.check(chunk)?;
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

#[cfg(test)]
mod tests {
    use super::GzipStart;

    #[test]
    fn a_body_said_to_be_gzip_must_start_as_gzip_does() {
        // The magic split across chunks, then anything.
        let mut start = GzipStart::default();
        for chunk in [&[0x1f][..], &[0x8b, 0x08], b"id,v\n"] {
            start.check(chunk).unwrap();
        }
        for body in [&b"id,v\n1,x\n"[..], &[0x1f, 0x00]] {
            let e = GzipStart::default().check(body).unwrap_err().to_string();
            assert!(e.contains("the body is not gzip"), "{e}");
        }
    }
}
