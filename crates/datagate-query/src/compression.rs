//! Streamed result bodies in zstd, compressed on the executor as fast as the client takes them.
//!
//! A body is a series of zstd frames, one per encoded chunk (RFC 8878 §3: zstd data "is made
//! of one or more frames"; every decoder reads them in turn). Each chunk is compressed or
//! stored according to who is waiting, the way `zstd --adapt` chooses its level (the caller
//! says which, from how many chunks sent before the client has not taken yet):
//! - the client is behind (the link is the bottleneck): the chunk is compressed (level 1), so
//!   the time spent waiting for the link makes the body smaller;
//! - the client keeps up (the link is faster than compression, as on a data centre's network
//!   or loopback): large chunks go out as stored frames (raw blocks, a copy), because
//!   compressing them would only slow the download down.
//!
//! Small chunks (heads, trailers, small results) are always compressed: it costs nothing.
//! Frames hold at most [`FRAME_BYTES`] of content, below the 8 MB window that browsers accept for
//! the `zstd` content coding (RFC 9659).

use bytes::Bytes;

/// The largest content of one frame.
pub const FRAME_BYTES: usize = 4 << 20;

/// Chunks smaller than this are compressed even when the client is waiting.
const ALWAYS_COMPRESS_BELOW: usize = 64 << 10;

/// The largest block of a stored frame (RFC 8878 §3.1.1.2.3: `Block_Maximum_Size`).
const BLOCK_BYTES: usize = 128 << 10;

/// The zstd level of compressed frames: the fastest positive level.
const LEVEL: i32 = 1;

/// A body's zstd frames, written chunk by chunk.
pub struct ZstdFrames {
    compressor: zstd::bulk::Compressor<'static>,
    /// Frames written: (compressed, stored), for the log.
    written: (u64, u64),
}

impl ZstdFrames {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            compressor: zstd::bulk::Compressor::new(LEVEL)?,
            written: (0, 0),
        })
    }

    /// `plain` as zstd frames: compressed when `client_behind` or the chunk is small, stored
    /// otherwise (see the module documentation).
    pub fn frames(&mut self, plain: &[u8], client_behind: bool) -> std::io::Result<Bytes> {
        if plain.is_empty() {
            return Ok(Bytes::new());
        }
        let store = !client_behind && plain.len() >= ALWAYS_COMPRESS_BELOW;
        let mut out = Vec::with_capacity(if store {
            plain.len() + plain.len() / BLOCK_BYTES * 3 + 16
        } else {
            zstd::zstd_safe::compress_bound(plain.len().min(FRAME_BYTES))
        });
        for part in plain.chunks(FRAME_BYTES) {
            if store {
                stored_frame(part, &mut out);
                self.written.1 += 1;
            } else if out.is_empty() {
                // A `Vec` is written from its start: only the first frame goes straight in.
                out.reserve(zstd::zstd_safe::compress_bound(part.len()));
                self.compressor.compress_to_buffer(part, &mut out)?;
                self.written.0 += 1;
            } else {
                out.extend_from_slice(&self.compressor.compress(part)?);
                self.written.0 += 1;
            }
        }
        Ok(Bytes::from(out))
    }

    /// Frames written so far: (compressed, stored).
    pub fn written(&self) -> (u64, u64) {
        self.written
    }
}

/// Appends `content` to `out` as one zstd frame of raw blocks (RFC 8878 §3.1.1): the magic
/// number, a header with the single-segment flag and a 4-byte content size, then blocks of at
/// most 128 KiB, the last one marked.
fn stored_frame(content: &[u8], out: &mut Vec<u8>) {
    debug_assert!(content.len() <= FRAME_BYTES);
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame_Header_Descriptor: Frame_Content_Size_flag = 2 (4 bytes), Single_Segment_flag.
    out.push(0b1010_0000);
    out.extend_from_slice(&(content.len() as u32).to_le_bytes());
    let mut blocks = content.chunks(BLOCK_BYTES).peekable();
    if blocks.peek().is_none() {
        // A frame has at least one block: an empty last one.
        out.extend_from_slice(&block_header(0, true));
    }
    while let Some(block) = blocks.next() {
        let last = blocks.peek().is_none();
        out.extend_from_slice(&block_header(block.len(), last));
        out.extend_from_slice(block);
    }
}

/// A raw block's header: `Last_Block` (bit 0), `Block_Type` 0 (bits 1–2), `Block_Size`
/// (bits 3–23), little-endian.
fn block_header(len: usize, last: bool) -> [u8; 3] {
    let v = (len as u32) << 3 | u32::from(last);
    let b = v.to_le_bytes();
    [b[0], b[1], b[2]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(body: &[u8]) -> Vec<u8> {
        zstd::stream::decode_all(body).expect("a valid zstd stream")
    }

    #[test]
    fn stored_frames_are_zstd_that_any_decoder_reads() {
        for len in [
            0usize,
            1,
            255,
            256,
            BLOCK_BYTES - 1,
            BLOCK_BYTES,
            BLOCK_BYTES + 1,
            3 * BLOCK_BYTES + 7,
        ] {
            let content: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut frame = Vec::new();
            stored_frame(&content, &mut frame);
            assert_eq!(decode(&frame), content, "length {len}");
            // The header says the content size, which decoders use to size their buffer.
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(&frame).ok(),
                Some(Some(len as u64))
            );
        }
    }

    #[test]
    fn a_client_that_keeps_up_gets_large_chunks_stored_and_small_ones_compressed() {
        let mut frames = ZstdFrames::new().unwrap();
        let large = "district,capital\n".repeat(10_000).into_bytes();
        let stored = frames.frames(&large, false).unwrap();
        assert!(
            stored.len() > large.len(),
            "stored frames carry the content as it is"
        );
        let compressed = frames.frames(&large, true).unwrap();
        assert!(
            compressed.len() * 20 < large.len(),
            "{} bytes",
            compressed.len()
        );
        let small = frames.frames(b"a,b\n1,2\n", false).unwrap();
        assert_eq!(frames.written(), (2, 1));
        let mut body = stored.to_vec();
        body.extend_from_slice(&compressed);
        body.extend_from_slice(&small);
        let mut expected = large.clone();
        expected.extend_from_slice(&large);
        expected.extend_from_slice(b"a,b\n1,2\n");
        assert_eq!(decode(&body), expected);
    }

    #[test]
    fn no_frame_holds_more_than_frame_bytes() {
        let mut frames = ZstdFrames::new().unwrap();
        let big: Vec<u8> = (0..FRAME_BYTES * 2 + 5).map(|i| (i % 7) as u8).collect();
        for behind in [true, false] {
            let body = frames.frames(&big, behind).unwrap();
            let mut rest: &[u8] = &body;
            let mut n = 0;
            while !rest.is_empty() {
                let size = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
                let content = zstd::zstd_safe::get_frame_content_size(&rest[..size])
                    .unwrap()
                    .unwrap();
                assert!(content as usize <= FRAME_BYTES);
                rest = &rest[size..];
                n += 1;
            }
            assert_eq!(n, 3);
            assert_eq!(decode(&body), big);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_mix_of_stored_and_compressed_frames_decodes_to_the_chunks(
            chunks in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..300_000), any::<bool>()),
                1..6,
            )
        ) {
            let mut frames = ZstdFrames::new().unwrap();
            let (mut body, mut expected) = (Vec::new(), Vec::new());
            for (chunk, behind) in &chunks {
                body.extend_from_slice(&frames.frames(chunk, *behind).unwrap());
                expected.extend_from_slice(chunk);
            }
            prop_assert_eq!(decode(&body), expected);
        }
    }
}
