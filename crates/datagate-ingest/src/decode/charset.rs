//! Text uploads in encodings other than UTF-8: `Content-Type: text/csv; charset=gb18030`.
//!
//! Departments export CSV from spreadsheets, and in Chinese locales Excel saves "CSV" as GBK
//! (GB18030's subset). Such a body is decoded to UTF-8 chunk by chunk in front of the format's
//! decoder ([`Transcoder`]), by `encoding_rs` (the WHATWG Encoding Standard's decoders and
//! labels, as browsers read text), so the dataset stores UTF-8 whatever the upload's encoding.
//! Bytes that are not text of the named encoding are refused with their line, never replaced.
//! A body sent without a charset must be UTF-8; when it is not, the error says how to name one
//! ([`not_utf8`]).

use super::PushDecoder;
use crate::error::{IngestError, Result};
use arrow::record_batch::RecordBatch;
use encoding_rs::{DecoderResult, Encoding};

/// The encoding a `Content-Type`'s `charset` parameter names: `Ok(None)` without one or for
/// UTF-8 (read as is), `Err` with a message for a label no encoding has.
pub fn charset_of(content_type: &str) -> std::result::Result<Option<&'static Encoding>, String> {
    match content_type.split(';').skip(1).find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    }) {
        Some(label) => encoding(label),
        None => Ok(None),
    }
}

/// The encoding of a label (`gb18030`, `GBK`, `utf-8`, ...): `Ok(None)` for UTF-8, `Err` with a
/// message for a label no encoding has.
pub fn encoding(label: &str) -> std::result::Result<Option<&'static Encoding>, String> {
    match Encoding::for_label(label.trim().as_bytes()) {
        Some(e) if e == encoding_rs::UTF_8 => Ok(None),
        // The WHATWG "replacement" encoding (labels of ISO-2022-CN and the like) decodes any
        // input to one U+FFFD: not a reading of the data.
        Some(e) if e != encoding_rs::REPLACEMENT => Ok(Some(e)),
        _ => Err(format!(
            "charset {label:?} is not an encoding datagate reads; name one of the Encoding \
             Standard's (e.g. utf-8, gb18030, gbk, big5, utf-16le, windows-1252)"
        )),
    }
}

/// The error for text that is not UTF-8 at `line` (1-based, of the source; and the column,
/// when known).
pub fn not_utf8(line: Option<u64>, column: Option<String>) -> IngestError {
    let at = match (line, &column) {
        (Some(l), Some(c)) => format!("line {l}, column {c:?}: "),
        (Some(l), None) => format!("line {l}: "),
        (None, Some(c)) => format!("column {c:?}: "),
        (None, None) => String::new(),
    };
    IngestError::InvalidData {
        message: format!(
            "{at}the text is not UTF-8. A body in another encoding is read when the \
             Content-Type names it, e.g. text/csv; charset=gb18030 (Excel saves CSV as \
             GBK in Chinese locales)"
        ),
        line,
        row: None,
        column,
    }
}

/// Decodes the body from `encoding` to UTF-8 and feeds the inner decoder. A byte-order mark
/// at the start decides the encoding over the label (UTF-8 and UTF-16 files carry one), and is
/// not passed on.
pub struct Transcoder<D> {
    decoder: encoding_rs::Decoder,
    inner: D,
    /// Line breaks decoded so far: the line of a malformed sequence.
    lines: u64,
    out: Vec<u8>,
}

impl<D: PushDecoder> Transcoder<D> {
    pub fn new(inner: D, encoding: &'static Encoding) -> Self {
        Self {
            decoder: encoding.new_decoder(),
            inner,
            lines: 0,
            out: Vec::new(),
        }
    }

    fn decode(&mut self, mut chunk: &[u8], last: bool) -> Result<Vec<RecordBatch>> {
        self.out.clear();
        loop {
            let room = self
                .decoder
                .max_utf8_buffer_length_without_replacement(chunk.len())
                .unwrap_or(chunk.len().saturating_mul(3).saturating_add(16));
            let start = self.out.len();
            self.out.resize(start + room.max(16), 0);
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(
                chunk,
                &mut self.out[start..],
                last,
            );
            self.out.truncate(start + written);
            chunk = &chunk[read..];
            match result {
                DecoderResult::InputEmpty => break,
                DecoderResult::OutputFull => continue,
                DecoderResult::Malformed(..) => {
                    let line =
                        self.lines + 1 + memchr::memchr_iter(b'\n', &self.out).count() as u64;
                    return Err(IngestError::InvalidData {
                        message: format!(
                            "line {line}: bytes that are not {} text (the charset the upload \
                             names)",
                            self.decoder.encoding().name()
                        ),
                        line: Some(line),
                        row: None,
                        column: None,
                    });
                }
            }
        }
        self.lines += memchr::memchr_iter(b'\n', &self.out).count() as u64;
        if self.out.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.push(&self.out)
    }
}

impl<D: PushDecoder> PushDecoder for Transcoder<D> {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        self.decode(chunk, false)
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = self.decode(&[], true)?;
        self.out = Vec::new();
        out.extend(self.inner.finish()?);
        Ok(out)
    }

    fn held(&mut self) -> Result<Vec<RecordBatch>> {
        self.inner.held()
    }
}

/// The UTF-8 byte-order mark some Windows tools write at the start of UTF-8 text.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Drops a UTF-8 byte-order mark at the start of a UTF-8 body (RFC 8259 lets a JSON reader
/// ignore it; Windows PowerShell and Excel's "CSV UTF-8" write one), whatever its chunks.
pub struct SkipUtf8Bom<D> {
    /// The first bytes while they may still be a mark; `None` once decided.
    head: Option<Vec<u8>>,
    inner: D,
}

impl<D: PushDecoder> SkipUtf8Bom<D> {
    pub fn new(inner: D) -> Self {
        Self {
            head: Some(Vec::with_capacity(UTF8_BOM.len())),
            inner,
        }
    }
}

impl<D: PushDecoder> PushDecoder for SkipUtf8Bom<D> {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        let Some(head) = self.head.as_mut() else {
            return self.inner.push(chunk);
        };
        let take = (UTF8_BOM.len() - head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..take]);
        let rest = &chunk[take..];
        if head.len() < UTF8_BOM.len() && UTF8_BOM.starts_with(head) {
            return Ok(Vec::new());
        }
        let head = self.head.take().unwrap_or_default();
        let mut out = if head == UTF8_BOM {
            Vec::new()
        } else {
            self.inner.push(&head)?
        };
        if !rest.is_empty() {
            out.extend(self.inner.push(rest)?);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = match self.head.take() {
            Some(head) if !head.is_empty() && head != UTF8_BOM => self.inner.push(&head)?,
            _ => Vec::new(),
        };
        out.extend(self.inner.finish()?);
        Ok(out)
    }

    fn held(&mut self) -> Result<Vec<RecordBatch>> {
        self.inner.held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what it is fed, as text.
    #[derive(Default)]
    struct Text(Vec<u8>, bool);

    impl PushDecoder for Text {
        fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
            self.0.extend_from_slice(chunk);
            Ok(Vec::new())
        }
        fn finish(&mut self) -> Result<Vec<RecordBatch>> {
            self.1 = true;
            Ok(Vec::new())
        }
    }

    fn transcode(bytes: &[u8], label: &str, piece: usize) -> Result<String> {
        let encoding = charset_of(&format!("text/csv; charset={label}"))
            .unwrap()
            .unwrap();
        let mut t = Transcoder::new(Text::default(), encoding);
        for chunk in bytes.chunks(piece) {
            t.push(chunk)?;
        }
        t.finish()?;
        assert!(t.inner.1, "finished");
        Ok(String::from_utf8(t.inner.0).unwrap())
    }

    #[test]
    fn a_utf8_bom_is_skipped_in_any_chunks() {
        for (body, want) in [
            (&b"\xEF\xBB\xBF{\"a\":1}\n"[..], &b"{\"a\":1}\n"[..]),
            (b"{\"a\":1}\n", b"{\"a\":1}\n"),
            (b"\xEF\xBB", b"\xEF\xBB"),
            (b"\xEF\xBBx\xEF\xBB\xBF", b"\xEF\xBBx\xEF\xBB\xBF"),
            (b"\xEF\xBB\xBF", b""),
            (b"", b""),
        ] {
            for piece in [1, 2, 4, 100] {
                let mut d = SkipUtf8Bom::new(Text::default());
                for chunk in body.chunks(piece) {
                    d.push(chunk).unwrap();
                }
                d.finish().unwrap();
                assert!(d.inner.1);
                assert_eq!(d.inner.0, want, "{body:?} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn charsets_are_named_by_their_labels() {
        assert_eq!(charset_of("text/csv"), Ok(None));
        assert_eq!(charset_of("text/csv; charset=utf-8"), Ok(None));
        assert_eq!(charset_of("text/csv;charset=\"UTF8\""), Ok(None));
        for (ct, name) in [
            ("text/csv; charset=gbk", "GBK"),
            ("text/csv; charset=GB2312", "GBK"),
            ("text/csv; header=present; charset=gb18030", "gb18030"),
            ("text/csv; charset=big5", "Big5"),
            ("text/csv; charset=utf-16le", "UTF-16LE"),
        ] {
            assert_eq!(charset_of(ct).unwrap().unwrap().name(), name, "{ct}");
        }
        for bad in ["text/csv; charset=klingon", "text/csv; charset=iso-2022-cn"] {
            let e = charset_of(bad).unwrap_err();
            assert!(
                e.contains("is not an encoding") && e.contains("gb18030"),
                "{e}"
            );
        }
    }

    #[test]
    fn gbk_is_decoded_to_utf8_across_chunk_boundaries() {
        let text = "名称,数量\n公交站,3\n地铁站,4\n";
        let (gbk, _, bad) = encoding_rs::GBK.encode(text);
        assert!(!bad);
        assert_ne!(gbk.as_ref(), text.as_bytes());
        // Every split, through the middle of the two-byte characters too.
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(
                transcode(&gbk, "gbk", piece).unwrap(),
                text,
                "pieces of {piece}"
            );
        }
        // A UTF-8 byte-order mark decides over the label, and is dropped.
        let bom = [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat();
        assert_eq!(transcode(&bom, "gbk", 5).unwrap(), text);
        // UTF-16 as Excel's "Unicode text" writes it: a BOM, little-endian.
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(transcode(&utf16, "utf-16le", 3).unwrap(), text);
    }

    #[test]
    fn bytes_that_are_not_the_named_encoding_are_refused_at_their_line() {
        let (mut gbk, _, _) = encoding_rs::GBK.encode("a,b\n公交,1\n地铁,2\n");
        let mut bytes = gbk.to_mut().clone();
        // A lead byte followed by a byte no GBK character has, on line 3.
        let at = bytes.iter().rposition(|b| *b == b'\n').unwrap() - 2;
        bytes[at] = 0x81;
        bytes[at + 1] = 0x7F;
        for piece in [1, 4, 100] {
            match transcode(&bytes, "gb18030", piece) {
                Err(IngestError::InvalidData { line, message, .. }) => {
                    assert_eq!(line, Some(3), "{message}");
                    assert!(message.contains("not gb18030 text"), "{message}");
                }
                other => panic!("{:?}", other.map(|_| ())),
            }
        }
        // A multi-byte character cut off by the end of the body.
        let cut = &gbk[..gbk.len() - 4];
        assert!(transcode(cut, "gbk", 2).is_err());
    }
}
