//! Bounds on Arrow IPC messages that come from outside (uploads, Flight SQL parameters),
//! checked before arrow's decoder sees them.
//!
//! A compressed IPC buffer starts with the length it decompresses to, and arrow allocates that
//! length before decompressing (LZ4 always, zstd when the frame does not state its own size):
//! a 400-byte message declaring 2^60 bytes made the allocation fail, and an allocation failure
//! aborts the process — no panic to contain. Honest declarations can still ask for gigabytes
//! from a few kilobytes. [`check_message`] sums what a record batch's (or dictionary batch's)
//! buffers declare and refuses it over a bound, or a declaration that is not a length.

use arrow_ipc::{MessageHeader, root_as_message};
use std::ops::Range;

/// One message of an IPC stream, found at the start of some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// Not all of it is there yet: it needs this many bytes in all, when that is known.
    Partial(Option<usize>),
    /// A whole message of `len` bytes: its flatbuffer metadata and its body.
    Message {
        len: usize,
        metadata: Range<usize>,
        body: Range<usize>,
    },
    /// The end-of-stream marker, `len` bytes (8, or 4 in the format before arrow 0.15).
    End { len: usize },
    /// Bytes whose framing arrow's decoder should judge (a negative length, metadata that does
    /// not parse): hand on `len` bytes.
    Other { len: usize },
}

/// The framing of the IPC message at the start of `bytes` (the streaming format: an optional
/// `0xFFFFFFFF` continuation, a 32-bit metadata length, the metadata, then the body whose
/// length the metadata gives).
pub fn frame(bytes: &[u8]) -> Framed {
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(first) = word(0) else {
        return Framed::Partial(None);
    };
    let (prefix, meta_len) = if first == -1 {
        match word(4) {
            Some(len) => (8, len),
            None => return Framed::Partial(None),
        }
    } else {
        (4, first)
    };
    let Ok(meta_len) = usize::try_from(meta_len) else {
        return Framed::Other { len: bytes.len() };
    };
    if meta_len == 0 {
        return Framed::End { len: prefix };
    }
    let metadata = prefix..prefix + meta_len;
    let Some(meta) = bytes.get(metadata.clone()) else {
        return Framed::Partial(Some(metadata.end));
    };
    let body_len = root_as_message(meta)
        .ok()
        .and_then(|m| usize::try_from(m.bodyLength()).ok());
    let Some(body_len) = body_len else {
        return Framed::Other { len: bytes.len() };
    };
    let body = metadata.end..metadata.end.saturating_add(body_len);
    if bytes.len() < body.end {
        return Framed::Partial(Some(body.end));
    }
    Framed::Message {
        len: body.end,
        metadata,
        body,
    }
}

/// What an IPC message's buffers decompress to at most: `Ok` with the bytes when they are
/// within `max_decoded`; an error saying why not. `metadata` is the flatbuffer `Message` (the
/// bytes after the length prefix), `body` the message body. Messages that are not record or
/// dictionary batches, and metadata that does not parse, are left to arrow's decoder (which
/// says what is wrong with them): `Ok(0)`.
pub fn check_message(metadata: &[u8], body: &[u8], max_decoded: u64) -> Result<u64, String> {
    let Ok(message) = root_as_message(metadata) else {
        return Ok(0);
    };
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => None,
    };
    let Some(batch) = batch else {
        return Ok(0);
    };
    if batch.compression().is_none() {
        return Ok(body.len() as u64);
    }
    let mut decoded = 0u64;
    for buffer in batch.buffers().into_iter().flatten() {
        let (Ok(offset), Ok(length)) = (
            usize::try_from(buffer.offset()),
            usize::try_from(buffer.length()),
        ) else {
            continue;
        };
        if length == 0 {
            continue;
        }
        // A buffer outside the body, or too short for its prefix: arrow's decoder refuses it.
        let Some(prefix) = offset.checked_add(8).and_then(|end| body.get(offset..end)) else {
            continue;
        };
        let declared = i64::from_le_bytes(prefix.try_into().unwrap_or_default());
        decoded = decoded.saturating_add(match declared {
            // Stored uncompressed after the prefix.
            -1 => length.saturating_sub(8) as u64,
            n if n >= 0 => n as u64,
            n => {
                return Err(format!(
                    "a compressed buffer declares a length of {n} bytes"
                ));
            }
        });
        if decoded > max_decoded {
            return Err(format!(
                "a record batch decompresses to more than {} MiB (declared by its buffers); \
                 send the table in smaller record batches",
                max_decoded >> 20
            ));
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};
    use arrow::ipc::CompressionType;
    use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    fn stream(values: &[&str], compression: Option<CompressionType>) -> Vec<u8> {
        let column = Arc::new(StringArray::from(values.to_vec())) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("s", column)]).unwrap();
        let options = IpcWriteOptions::default()
            .try_with_compression(compression)
            .unwrap();
        let mut w =
            StreamWriter::try_new_with_options(Vec::new(), &batch.schema(), options).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        w.into_inner().unwrap()
    }

    /// The messages of `bytes`, framed one after the other, with where each starts.
    fn messages(bytes: &[u8]) -> Vec<(usize, Framed)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < bytes.len() {
            let f = frame(&bytes[at..]);
            let len = match &f {
                Framed::Message { len, .. } | Framed::End { len } | Framed::Other { len } => *len,
                Framed::Partial(_) => panic!("a partial message at {at}"),
            };
            out.push((at, f));
            at += len;
        }
        out
    }

    /// [`check_message`] of the stream's record batch (its second message).
    fn batch_check(bytes: &[u8], max: u64) -> Result<u64, String> {
        let framed = messages(bytes);
        let (at, Framed::Message { metadata, body, .. }) = &framed[1] else {
            panic!("{framed:?}");
        };
        let message = &bytes[*at..];
        check_message(&message[metadata.clone()], &message[body.clone()], max)
    }

    #[test]
    fn a_stream_is_framed_message_by_message_and_partial_prefixes_wait() {
        let bytes = stream(&["a", "bb"], None);
        let framed = messages(&bytes);
        // Schema, record batch, end of stream.
        assert_eq!(framed.len(), 3, "{framed:?}");
        assert!(matches!(framed[2].1, Framed::End { len: 8 }));
        let (0, Framed::Message { len, .. }) = framed[0] else {
            panic!()
        };
        for cut in 0..len {
            assert!(matches!(frame(&bytes[..cut]), Framed::Partial(_)), "{cut}");
        }
    }

    #[test]
    fn compressed_buffers_are_counted_by_what_they_declare() {
        let big = "q".repeat(1 << 20);
        for codec in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
            let bytes = stream(&[big.as_str(), big.as_str()], Some(codec));
            assert!(bytes.len() < 64 << 10, "{}", bytes.len());
            let decoded = batch_check(&bytes, 4 << 20).unwrap();
            assert!((2 << 20..(2 << 20) + 64).contains(&decoded), "{decoded}");
            let e = batch_check(&bytes, 1 << 20).unwrap_err();
            assert!(e.contains("decompresses to more than 1 MiB"), "{e}");
        }
        // Uncompressed: the body is what it is.
        let bytes = stream(&["x"], None);
        assert!(batch_check(&bytes, 1 << 20).unwrap() < 1024);
    }

    #[test]
    fn a_declared_length_that_is_a_lie_is_refused_before_arrow_allocates_it() {
        let bytes = stream(
            &["y".repeat(100_000).as_str()],
            Some(CompressionType::LZ4_FRAME),
        );
        let at = bytes
            .windows(12)
            .position(|w| w[..8] == 100_000i64.to_le_bytes() && w[8..] == [0x04, 0x22, 0x4d, 0x18])
            .unwrap();
        for lie in [1i64 << 60, -7] {
            let mut bad = bytes.clone();
            bad[at..at + 8].copy_from_slice(&lie.to_le_bytes());
            let e = batch_check(&bad, 256 << 20).unwrap_err();
            assert!(
                e.contains("decompresses to more than") || e.contains("-7"),
                "{e}"
            );
        }
    }
}
