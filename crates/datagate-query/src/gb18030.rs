//! GB18030 from UTF-8, for CSV answers in the national standard's encoding (`charset=gb18030`).
//!
//! The codes are encoding_rs's: a table built from its encoder at first use holds the two-byte
//! code of every character below U+10000 that has one (all of GBK: Hanzi, punctuation, symbols),
//! and every other character (four-byte codes: rarer Hanzi, emoji) is encoded by encoding_rs
//! itself, whose own encoders for legacy CJK encodings are built for size (25 MiB/s here; 440
//! MiB/s with its optional Hanzi table, `fast-gb-hanzi-encode`). The CSV writer transcodes each
//! string value straight from its Arrow array ([`encode_str_unless`], which also finds the bytes
//! that make a field quoted as it copies the ASCII between characters): a whole export in
//! GB18030 takes 1.06-1.07x the time of the same export in UTF-8 (`benches/csv_encodings.sh`).
//! The table is built in about 15 ms, at the first such answer.

use std::sync::LazyLock;

/// The two-byte GB18030 code of each character below U+10000, big-endian; 0 for none (ASCII,
/// surrogates, and characters whose code has four bytes). Indexed by any `u16` without a bounds
/// check.
static TWO_BYTE_CODES: LazyLock<Box<[u16; 0x10000]>> = LazyLock::new(|| {
    let mut table = vec![0u16; 0x10000];
    let mut utf8 = [0u8; 4];
    for (cp, code) in table.iter_mut().enumerate().skip(0x80) {
        let Some(c) = char::from_u32(cp as u32) else {
            continue;
        };
        if let [a, b] = encoding_rs::GB18030
            .encode(c.encode_utf8(&mut utf8))
            .0
            .as_ref()
        {
            *code = u16::from_be_bytes([*a, *b]);
        }
    }
    table.into_boxed_slice().try_into().expect("0x10000 codes")
});

/// Bytes that are not UTF-8, at this offset of the text.
#[derive(Debug, PartialEq, Eq)]
pub struct NotUtf8(pub usize);

/// Appends `utf8` in GB18030 to `out`, or says where it is not UTF-8 (`out` then holds the
/// text before that offset).
pub fn encode(utf8: &[u8], out: &mut Vec<u8>) -> Result<(), NotUtf8> {
    match std::str::from_utf8(utf8) {
        Ok(text) => {
            encode_str(text, out);
            Ok(())
        }
        Err(e) => {
            // What comes before the error is UTF-8.
            let valid = std::str::from_utf8(&utf8[..e.valid_up_to()]).unwrap_or_default();
            encode_str(valid, out);
            Err(NotUtf8(e.valid_up_to()))
        }
    }
}

/// Appends `text` in GB18030 to `out`. Every character has a code, so nothing is replaced.
pub fn encode_str(text: &str, out: &mut Vec<u8>) {
    encode_str_unless(text, out, |_| false);
}

/// Appends `text` in GB18030 to `out`, unless one of its ASCII bytes is one `stop` picks: then
/// `false`, and `out` is as it was. (A CSV field is written this way and quoted only when it
/// must be, without a pass of its own over the text to find out.)
pub fn encode_str_unless(text: &str, out: &mut Vec<u8>, stop: impl Fn(u8) -> bool) -> bool {
    let bytes = text.as_bytes();
    let start = out.len();
    let table: &[u16; 0x10000] = &TWO_BYTE_CODES;
    let mut i = 0;
    while i < bytes.len() {
        let run = ascii_prefix(&bytes[i..]);
        let ascii = &bytes[i..i + run];
        if ascii.iter().any(|b| stop(*b)) {
            out.truncate(start);
            return false;
        }
        out.extend_from_slice(ascii);
        i += run;
        // Characters up to the next ASCII byte; `text` is UTF-8, so a lead byte is followed by
        // its continuation bytes.
        while let Some(&lead) = bytes.get(i) {
            let (cp, len) = match lead {
                0x00..=0x7F => break,
                0xE0..=0xEF => (
                    (u32::from(lead & 0x0F) << 12)
                        | (u32::from(bytes[i + 1] & 0x3F) << 6)
                        | u32::from(bytes[i + 2] & 0x3F),
                    3,
                ),
                0x80..=0xDF => (
                    (u32::from(lead & 0x1F) << 6) | u32::from(bytes[i + 1] & 0x3F),
                    2,
                ),
                _ => (0, 4),
            };
            match table[(cp & 0xFFFF) as usize] {
                0 => out.extend_from_slice(&encoding_rs::GB18030.encode(&text[i..i + len]).0),
                code => out.extend_from_slice(&code.to_be_bytes()),
            }
            i += len;
        }
    }
    true
}

/// How many bytes `bytes` starts with that are ASCII, a word at a time.
fn ascii_prefix(bytes: &[u8]) -> usize {
    let mut n = 0;
    for word in bytes.chunks_exact(8) {
        let word = u64::from_ne_bytes(word.try_into().unwrap_or([0x80; 8]));
        if word & 0x8080_8080_8080_8080 != 0 {
            break;
        }
        n += 8;
    }
    n + bytes[n..].iter().take_while(|b| b.is_ascii()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &[u8]) -> Result<Vec<u8>, NotUtf8> {
        let mut out = Vec::new();
        encode(s, &mut out).map(|()| out)
    }

    #[test]
    fn every_character_has_encoding_rs_code() {
        let mut utf8 = [0u8; 4];
        for c in (0..=0x10FFFFu32)
            .filter(|cp| *cp < 0x10000 || cp % 97 == 0)
            .filter_map(char::from_u32)
        {
            let s = c.encode_utf8(&mut utf8);
            let theirs = encoding_rs::GB18030.encode(s).0;
            assert_eq!(ours(s.as_bytes()).unwrap(), theirs.as_ref(), "{c:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_where_they_are() {
        for (bytes, at) in [
            (&b"ab\xFFc"[..], 2),
            (b"\xE5\x8C", 0),
            (b"x\xE0\x80\xAF", 1),
            (b"\xED\xA0\x80", 0),
            (b"\xC0\xAF", 0),
            (b"\xF5\x80\x80\x80", 0),
            (b"\xE5\x8C\x97\xE4\xBA", 3),
            (b"\xE5\x28\x97", 0),
        ] {
            assert_eq!(ours(bytes), Err(NotUtf8(at)), "{bytes:?}");
        }
    }

    #[test]
    fn ascii_runs_of_every_length_between_characters() {
        for n in 0..20 {
            let s = format!(
                "{}张{}三·{}",
                "a".repeat(n),
                "0123456789".repeat(n % 4),
                "x".repeat(n)
            );
            let theirs = encoding_rs::GB18030.encode(&s).0;
            assert_eq!(ours(s.as_bytes()).unwrap(), theirs.as_ref(), "{s}");
        }
    }

    #[test]
    fn a_stop_byte_leaves_the_output_as_it_was() {
        let mut out = b"kept".to_vec();
        assert!(!encode_str_unless("张三,北京", &mut out, |b| b == b','));
        assert_eq!(out, b"kept");
        assert!(encode_str_unless("张三 北京", &mut out, |b| b == b','));
        assert_eq!(
            &out[4..],
            encoding_rs::GB18030.encode("张三 北京").0.as_ref()
        );
    }

    proptest::proptest! {
        #[test]
        fn text_is_encoding_rs_text(s in "[a-z0-9,\"\\n 张三北京市·é€　、。𠮷😀\u{80}-\u{7FF}\u{3400}-\u{4DBF}\u{E000}-\u{E7FF}]{0,40}") {
            let theirs = encoding_rs::GB18030.encode(&s).0;
            proptest::prop_assert_eq!(ours(s.as_bytes()).unwrap(), theirs.as_ref());
        }
    }
}
