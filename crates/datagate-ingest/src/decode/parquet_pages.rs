//! The page headers of an uploaded Parquet file, read before any page is decoded.
//!
//! The Parquet reader decompresses a whole page before it hands on any value, and a page can
//! hold a thousand values or one huge one: a 1 MB upload of zstd pages can decode to
//! gigabytes, and a footer can claim any row-group size it likes. Each page header states the
//! page's decoded size (and the reader holds the decompressor to it), so reading every header
//! first — a few bytes each, the page bodies skipped — tells what a row group will cost before
//! any of it is decoded. [`scan`] gives, per row group, the bytes its data pages decode to
//! (what batches are sized by) and refuses, by row group and column, a page over
//! [`MAX_PAGE_BYTES`] or a row group whose columns' largest pages, which the reader holds at
//! once, come to more than [`MAX_GROUP_PAGE_BYTES`].
//!
//! Headers are Thrift compact-protocol structs; this reads the three sizes it needs and skips
//! every other field by its wire type, seeking over strings rather than reading them, so a
//! header cannot make it allocate.

use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use parquet::file::serialized_reader::SerializedPageReader;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The largest page an upload may have, decoded (a page of 1,024 values of 256 KB).
pub const MAX_PAGE_BYTES: u64 = 256 << 20;

/// The most the largest pages of one row group's columns may decode to together: the reader
/// holds one page of every column at once.
pub const MAX_GROUP_PAGE_BYTES: u64 = 512 << 20;

/// What the page headers of one column chunk say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkPages {
    /// Decoded bytes of its data pages (for dictionary-encoded pages, the keys).
    pub data_bytes: u64,
    /// Decoded bytes of its dictionary page, if it has one.
    pub dictionary_bytes: Option<u64>,
    /// Whether it has data pages that are not dictionary-encoded (a writer's fallback when
    /// the dictionary grew too large): the reader then turns the dictionary-encoded rows of a
    /// batch into values.
    pub plain_pages: bool,
    /// Its largest page, decoded.
    pub largest_page: u64,
}

impl ChunkPages {
    /// A dictionary page, and data pages that all refer to it.
    pub fn all_dictionary(&self) -> bool {
        self.dictionary_bytes.is_some() && !self.plain_pages
    }
}

/// What the page headers of one row group say: one entry per column chunk, in leaf order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPages {
    pub columns: Vec<ChunkPages>,
}

impl GroupPages {
    /// Decoded bytes of its data pages, every column (dictionary pages apart).
    pub fn data_bytes(&self) -> u64 {
        self.columns.iter().map(|c| c.data_bytes).sum()
    }

    /// The sum over its columns of each column's largest page: what the reader holds at once.
    pub fn largest_pages(&self) -> u64 {
        self.columns.iter().map(|c| c.largest_page).sum()
    }
}

/// Reads the page headers of every column chunk of `metadata`'s row groups from `file`.
/// The error says which row group and column, and why.
pub fn scan(file: &File, metadata: &ParquetMetaData) -> Result<Vec<GroupPages>, String> {
    let file_len = file
        .metadata()
        .map_err(|e| format!("cannot read the file's size: {e}"))?
        .len();
    let columns = metadata.file_metadata().schema_descr();
    let mut groups = Vec::with_capacity(metadata.num_row_groups());
    for (g, group) in metadata.row_groups().iter().enumerate() {
        let mut pages = GroupPages::default();
        for (c, chunk) in group.columns().iter().enumerate() {
            let name = columns
                .columns()
                .get(c)
                .map_or_else(|| format!("#{c}"), |d| d.path().string());
            let at = |why: String| format!("row group {g}, column \"{name}\": {why}");
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or_else(|| chunk.data_page_offset());
            let len = chunk.compressed_size();
            let (Ok(start), Ok(len)) = (u64::try_from(start), u64::try_from(len)) else {
                return Err(at("the footer gives a negative offset or size".into()));
            };
            let end = start
                .checked_add(len)
                .filter(|end| *end <= file_len)
                .ok_or_else(|| at("the column chunk runs past the end of the file".into()))?;
            let mut chunk_pages = ChunkPages::default();
            let mut cursor = Cursor::new(file, start, end);
            while cursor.pos < end {
                let header = cursor.page_header().map_err(|why| {
                    at(format!(
                        "unreadable page header at byte {}: {why}",
                        cursor.pos
                    ))
                })?;
                if header.decoded > MAX_PAGE_BYTES {
                    return Err(at(format!(
                        "a page decodes to {} MiB; pages of at most {} MiB are taken (write \
                         smaller pages, e.g. pyarrow's `write_batch_size` and \
                         `data_page_size`, or upload the rows as CSV)",
                        header.decoded >> 20,
                        MAX_PAGE_BYTES >> 20
                    )));
                }
                match header.kind {
                    Kind::Dictionary => {
                        *chunk_pages.dictionary_bytes.get_or_insert(0) += header.decoded;
                    }
                    Kind::Data { dictionary_keys } => {
                        chunk_pages.data_bytes += header.decoded;
                        chunk_pages.plain_pages |= !dictionary_keys;
                    }
                    Kind::Other => {}
                }
                chunk_pages.largest_page = chunk_pages.largest_page.max(header.decoded);
                cursor.pos = cursor
                    .pos
                    .checked_add(header.stored)
                    .filter(|next| *next <= end)
                    .ok_or_else(|| at("a page runs past the end of its column chunk".into()))?;
            }
            pages.columns.push(chunk_pages);
        }
        if pages.largest_pages() > MAX_GROUP_PAGE_BYTES {
            return Err(format!(
                "row group {g}: its columns' largest pages decode to {} MiB together, and \
                 the reader holds them at once; at most {} MiB are taken (write smaller pages \
                 or fewer columns)",
                pages.largest_pages() >> 20,
                MAX_GROUP_PAGE_BYTES >> 20
            ));
        }
        groups.push(pages);
    }
    Ok(groups)
}

/// Walks the footer of `file` (its Thrift-encoded file metadata) before the Parquet reader
/// decodes it, refusing a list, set or map that declares more elements than there are bytes
/// left in the footer: each element takes at least one, and the reader reserves memory for
/// the declared count of some lists (row groups among them) before reading any element: a
/// 45-byte file declaring 2^31 row groups asks for 200 GB at once, and where the host
/// accounts memory strictly (`vm.overcommit_memory = 2`) the failed allocation ends the
/// process rather than the upload. A file without the Parquet trailer, or whose footer length
/// does not fit the file, is left to the reader, which says so.
pub fn check_footer(file: &File) -> Result<(), String> {
    let file_len = file
        .metadata()
        .map_err(|e| format!("cannot read the file's size: {e}"))?
        .len();
    let mut trailer = [0u8; 8];
    if file_len < 12 || file.read_exact_at(&mut trailer, file_len - 8).is_err() {
        return Ok(());
    }
    let footer_len = u64::from(u32::from_le_bytes([
        trailer[0], trailer[1], trailer[2], trailer[3],
    ]));
    if &trailer[4..] != b"PAR1" || footer_len > file_len - 12 {
        return Ok(());
    }
    let start = file_len - 8 - footer_len;
    let mut cursor = Cursor::new(file, start, file_len - 8);
    cursor
        .skip_value(wire::STRUCT, 0)
        .map_err(|why| format!("its footer is damaged at byte {}: {why}", cursor.pos))
}

/// The length of the longest value in the dictionary page of `chunk` (a column chunk of
/// `file` with `rows` rows), for variable-length byte-array columns; the value width for
/// the others. A reader that does not keep the column a dictionary may turn every row of a
/// batch into this long a value.
pub fn longest_dictionary_value(
    file: &File,
    chunk: &ColumnChunkMetaData,
    rows: usize,
) -> Result<u64, String> {
    use parquet::basic::Type;
    use parquet::column::page::{Page, PageReader};
    let width = match chunk.column_type() {
        Type::BOOLEAN => 1,
        Type::INT32 | Type::FLOAT => 4,
        Type::INT64 | Type::DOUBLE => 8,
        Type::INT96 => 12,
        Type::FIXED_LEN_BYTE_ARRAY => {
            return Ok(u64::try_from(chunk.column_descr().type_length()).unwrap_or(0));
        }
        Type::BYTE_ARRAY => 0,
    };
    if width > 0 {
        return Ok(width);
    }
    let reader = file
        .try_clone()
        .map_err(|e| format!("cannot reopen the file: {e}"))?;
    let mut pages = SerializedPageReader::new(std::sync::Arc::new(reader), chunk, rows, None)
        .map_err(|e| e.to_string())?;
    match pages.get_next_page().map_err(|e| e.to_string())? {
        Some(Page::DictionaryPage {
            buf, num_values, ..
        }) => {
            // PLAIN byte arrays: a 4-byte little-endian length, then the bytes.
            let (mut at, mut longest) = (0usize, 0u64);
            for _ in 0..num_values {
                let len = buf
                    .get(at..at + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or("the dictionary page ends inside a value")?;
                longest = longest.max(u64::from(len));
                at = at
                    .checked_add(4 + len as usize)
                    .filter(|end| *end <= buf.len())
                    .ok_or("the dictionary page ends inside a value")?;
            }
            Ok(longest)
        }
        _ => Ok(0),
    }
}

/// The sizes a page header states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PageHeader {
    /// The page's bytes once decompressed (its header apart).
    decoded: u64,
    /// The page's bytes in the file (its header apart).
    stored: u64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dictionary,
    /// A data page, and whether its values are keys into the dictionary page.
    Data {
        dictionary_keys: bool,
    },
    /// An index page (never written, by the format's own account).
    Other,
}

/// Thrift compact-protocol wire types.
mod wire {
    pub const STOP: u8 = 0;
    pub const TRUE: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const SET: u8 = 10;
    pub const MAP: u8 = 11;
    pub const STRUCT: u8 = 12;
    pub const UUID: u8 = 13;
}

/// Structs nested deeper than this are refused (a page header nests three deep).
const MAX_DEPTH: usize = 32;

/// Reads a column chunk's bytes from `pos` up to `end` through a small buffer.
struct Cursor<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    buf_at: u64,
}

impl<'a> Cursor<'a> {
    fn new(file: &'a File, pos: u64, end: u64) -> Self {
        Self {
            file,
            pos,
            end,
            buf: Vec::new(),
            buf_at: 0,
        }
    }

    fn byte(&mut self) -> Result<u8, String> {
        if self.pos >= self.end {
            return Err("it runs past the end of its column chunk".into());
        }
        let in_buf = self.pos.wrapping_sub(self.buf_at);
        if self.pos < self.buf_at || in_buf >= self.buf.len() as u64 {
            let want = (self.end - self.pos).min(8 << 10) as usize;
            self.buf.resize(want, 0);
            self.file
                .read_exact_at(&mut self.buf, self.pos)
                .map_err(|e| format!("cannot read it: {e}"))?;
            self.buf_at = self.pos;
        }
        let b = self.buf[(self.pos - self.buf_at) as usize];
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        self.pos = self
            .pos
            .checked_add(n)
            .filter(|p| *p <= self.end)
            .ok_or("a value runs past the end of its column chunk")?;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a variable-length integer is longer than 10 bytes".into())
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A field header: its wire type and id (`None` at the struct's end).
    fn field(&mut self, last_id: i16) -> Result<Option<(u8, i16)>, String> {
        let b = self.byte()?;
        let kind = b & 0x0f;
        if kind == wire::STOP {
            return Ok(None);
        }
        let delta = b >> 4;
        let id = if delta == 0 {
            i16::try_from(self.zigzag()?).map_err(|_| "a field id is out of range")?
        } else {
            last_id.wrapping_add(i16::from(delta))
        };
        Ok(Some((kind, id)))
    }

    /// Skips one value of wire type `kind`.
    fn skip_value(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("values nest too deep".into());
        }
        match kind {
            wire::TRUE | wire::FALSE => Ok(()),
            wire::BYTE => self.skip(1),
            wire::I16 | wire::I32 | wire::I64 => self.varint().map(drop),
            wire::DOUBLE => self.skip(8),
            wire::UUID => self.skip(16),
            wire::BINARY => {
                let len = self.varint()?;
                self.skip(len)
            }
            wire::LIST | wire::SET => {
                let head = self.byte()?;
                let element = head & 0x0f;
                let count = match head >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                self.room_for(count)?;
                for _ in 0..count {
                    self.skip_element(element, depth + 1)?;
                }
                Ok(())
            }
            wire::MAP => {
                let count = self.varint()?;
                if count == 0 {
                    return Ok(());
                }
                self.room_for(count.saturating_mul(2))?;
                let types = self.byte()?;
                for _ in 0..count {
                    self.skip_element(types >> 4, depth + 1)?;
                    self.skip_element(types & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            wire::STRUCT => {
                let mut last = 0;
                while let Some((kind, id)) = self.field(last)? {
                    self.skip_value(kind, depth + 1)?;
                    last = id;
                }
                Ok(())
            }
            other => Err(format!("unknown wire type {other}")),
        }
    }

    /// Refuses a collection that declares more elements than the bytes left could hold
    /// (`count` bytes at least).
    fn room_for(&self, count: u64) -> Result<(), String> {
        let left = self.end.saturating_sub(self.pos);
        if count > left {
            let left = match left {
                1 => "1 byte is".to_string(),
                n => format!("{n} bytes are"),
            };
            return Err(format!(
                "a list declares {count} elements and {left} left to hold them"
            ));
        }
        Ok(())
    }

    /// Skips one element of a list, set or map: booleans there take a byte each.
    fn skip_element(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        if matches!(kind, wire::TRUE | wire::FALSE) {
            self.skip(1)
        } else {
            self.skip_value(kind, depth)
        }
    }

    /// Reads the page header at the cursor, leaving it at the page's first byte.
    fn page_header(&mut self) -> Result<PageHeader, String> {
        let (mut kind, mut decoded, mut stored, mut encoding) = (None, None, None, None);
        let mut last = 0;
        while let Some((wire_type, id)) = self.field(last)? {
            match (id, wire_type) {
                (1, wire::I32) => kind = Some(self.zigzag()?),
                (2, wire::I32) => decoded = Some(self.zigzag()?),
                (3, wire::I32) => stored = Some(self.zigzag()?),
                // A version 1 data page header has its values' encoding as member 2, a
                // version 2 header as member 4.
                (5, wire::STRUCT) => encoding = self.struct_i32(2)?,
                (8, wire::STRUCT) => encoding = self.struct_i32(4)?,
                _ => self.skip_value(wire_type, 1)?,
            }
            last = id;
        }
        let size = |v: Option<i64>, what: &str| {
            let v = v.ok_or_else(|| format!("it has no {what} size"))?;
            u64::try_from(v).map_err(|_| format!("its {what} size is negative"))
        };
        // Page types: 0 data, 1 index, 2 dictionary, 3 data (version 2). Encodings 2 and 8
        // are PLAIN_DICTIONARY and RLE_DICTIONARY.
        let kind = match kind.ok_or("it has no page type")? {
            0 | 3 => Kind::Data {
                dictionary_keys: matches!(encoding, Some(2 | 8)),
            },
            2 => Kind::Dictionary,
            _ => Kind::Other,
        };
        Ok(PageHeader {
            decoded: size(decoded, "uncompressed")?,
            stored: size(stored, "compressed")?,
            kind,
        })
    }

    /// Reads a struct, returning its i32 member `id` if it has one.
    fn struct_i32(&mut self, id: i16) -> Result<Option<i64>, String> {
        let (mut found, mut last) = (None, 0);
        while let Some((wire_type, member)) = self.field(last)? {
            if member == id && wire_type == wire::I32 {
                found = Some(self.zigzag()?);
            } else {
                self.skip_value(wire_type, 2)?;
            }
            last = member;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ArrowReaderMetadata;
    use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
    use std::io::Write;
    use std::sync::Arc;

    fn write(batches: &[RecordBatch], props: WriterProperties) -> tempfile::NamedTempFile {
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batches[0].schema(), Some(props)).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&out).unwrap();
        f
    }

    /// A Parquet file of one INT64 column whose footer declares `row_groups` row groups and
    /// holds none.
    pub(crate) fn declaring_row_groups(row_groups: u32) -> Vec<u8> {
        fn varint(mut n: u64, out: &mut Vec<u8>) {
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
        }
        // FileMetaData: 1 version, 2 schema (a root and one column), 3 num_rows, 4 row_groups.
        let mut meta = vec![0x15, 0x02, 0x19, 0x2c];
        meta.extend([0x48, 6]);
        meta.extend(b"schema");
        meta.extend([0x15, 0x02, 0x00]);
        meta.extend([0x15, 0x04, 0x25, 0x00, 0x18, 1, b'x', 0x00]);
        meta.extend([0x16, 0x00]);
        meta.extend([0x19, 0xfc]);
        varint(u64::from(row_groups), &mut meta);
        meta.push(0x00);
        let mut file = b"PAR1".to_vec();
        file.extend(&meta);
        file.extend((meta.len() as u32).to_le_bytes());
        file.extend(b"PAR1");
        file
    }

    fn temp_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn a_footer_is_measured_before_the_reader_reserves_its_lists() {
        // 2^31 - 1 row groups declared in a 45-byte file: refused, saying where.
        let f = temp_with(&declaring_row_groups(i32::MAX as u32));
        let err = check_footer(&f.reopen().unwrap()).unwrap_err();
        assert!(
            err.contains("a list declares 2147483647 elements and 1 byte is left to hold them"),
            "{err}"
        );
        assert!(err.starts_with("its footer is damaged at byte 36"), "{err}");
        // Zero row groups declared: the walk passes, and the reader reads it.
        let f = temp_with(&declaring_row_groups(0));
        check_footer(&f.reopen().unwrap()).unwrap();
        let meta = ArrowReaderMetadata::load(&f.reopen().unwrap(), Default::default()).unwrap();
        assert_eq!(meta.metadata().num_row_groups(), 0);
        // A real file with statistics, dictionaries and several row groups passes.
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..10_000)) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from_iter_values(
                    (0..10_000).map(|i| format!("v{}", i % 7)),
                )) as ArrayRef,
            ),
        ])
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1_000))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let f = write(&[batch], props);
        check_footer(&f.reopen().unwrap()).unwrap();
        // Not Parquet at all, or a footer length past the file's start: left to the reader.
        check_footer(&temp_with(b"id,name\n1,a\n").reopen().unwrap()).unwrap();
        let mut long = declaring_row_groups(3);
        let n = long.len();
        long[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
        check_footer(&temp_with(&long).reopen().unwrap()).unwrap();
    }

    fn scanned(f: &tempfile::NamedTempFile) -> Result<Vec<GroupPages>, String> {
        let file = f.reopen().unwrap();
        let meta = ArrowReaderMetadata::load(&file, Default::default()).unwrap();
        scan(&file, meta.metadata())
    }

    fn batch(rows: usize, text: impl Fn(usize) -> String) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
        let texts: ArrayRef = Arc::new(StringArray::from_iter_values((0..rows).map(text)));
        RecordBatch::try_from_iter([("id", ids), ("text", texts)]).unwrap()
    }

    #[test]
    fn headers_of_every_writer_setting_are_read_and_sum_to_the_footer() {
        let b = batch(50_000, |i| {
            format!("value {} {}", i % 97, "x".repeat(i % 50))
        });
        for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
            for dictionary in [false, true] {
                for stats in [EnabledStatistics::None, EnabledStatistics::Page] {
                    let props = WriterProperties::builder()
                        .set_writer_version(version)
                        .set_dictionary_enabled(dictionary)
                        .set_statistics_enabled(stats)
                        .set_max_row_group_row_count(Some(20_000))
                        .set_data_page_row_count_limit(3_000)
                        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                        .build();
                    let f = write(std::slice::from_ref(&b), props);
                    let groups = scanned(&f).unwrap();
                    let file = f.reopen().unwrap();
                    let meta = ArrowReaderMetadata::load(&file, Default::default()).unwrap();
                    assert_eq!(groups.len(), 3);
                    for (g, pages) in groups.iter().enumerate() {
                        // The footer's uncompressed sizes count the page headers too.
                        let footer: i64 = meta
                            .metadata()
                            .row_group(g)
                            .columns()
                            .iter()
                            .map(|c| c.uncompressed_size())
                            .sum();
                        let pages_total = pages.data_bytes()
                            + pages
                                .columns
                                .iter()
                                .filter_map(|c| c.dictionary_bytes)
                                .sum::<u64>();
                        assert!(pages_total > 0 && pages_total < footer as u64);
                        assert!(
                            footer as u64 - pages_total < 64 * 1024,
                            "{footer} {pages:?}"
                        );
                        for c in &pages.columns {
                            assert_eq!(c.dictionary_bytes.is_some(), dictionary);
                            assert_eq!(c.all_dictionary(), dictionary, "{c:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_page_that_decodes_to_too_much_is_refused_by_row_group_and_column() {
        // 300 values of 1 MiB in one page: a few KB of zstd, 300 MiB decoded.
        let props = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_data_page_size_limit(usize::MAX)
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let f = write(&[batch(300, |_| "a".repeat(1 << 20))], props);
        assert!(std::fs::metadata(f.path()).unwrap().len() < 1 << 20);
        let error = scanned(&f).unwrap_err();
        assert!(
            error.starts_with("row group 0, column \"text\": a page decodes to 300 MiB"),
            "{error}"
        );
    }

    #[test]
    fn columns_whose_largest_pages_are_too_much_together_are_refused() {
        let text: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..200).map(|_| "b".repeat(1 << 20)),
        ));
        let b =
            RecordBatch::try_from_iter((0..3).map(|i| (format!("c{i}"), text.clone()))).unwrap();
        let props = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_data_page_size_limit(usize::MAX)
            .build();
        let f = write(&[b], props);
        let error = scanned(&f).unwrap_err();
        assert!(
            error.starts_with("row group 0: its columns' largest pages decode to 600 MiB"),
            "{error}"
        );
    }

    #[test]
    fn a_writer_falling_back_from_its_dictionary_is_seen_with_its_longest_value() {
        // The dictionary fills up after a few hundred distinct values: plain pages follow.
        let props = WriterProperties::builder()
            .set_dictionary_page_size_limit(4096)
            .set_data_page_row_count_limit(100)
            .set_write_batch_size(100)
            .build();
        let f = write(
            &[batch(2000, |i| format!("{i:0>width$}", width = 5 + i % 20))],
            props,
        );
        let groups = scanned(&f).unwrap();
        let text = groups[0].columns[1];
        assert!(
            text.dictionary_bytes.is_some() && text.plain_pages,
            "{text:?}"
        );
        assert!(!text.all_dictionary());
        let file = f.reopen().unwrap();
        let meta = ArrowReaderMetadata::load(&file, Default::default()).unwrap();
        let group = meta.metadata().row_group(0);
        let longest = longest_dictionary_value(&file, group.column(1), 2000).unwrap();
        // The dictionary holds the first values written, 5 to 24 characters long.
        assert_eq!(longest, 24);
        assert_eq!(
            longest_dictionary_value(&file, group.column(0), 2000).unwrap(),
            8
        );
    }

    #[test]
    fn a_dictionary_of_one_huge_value_is_measured() {
        let props = WriterProperties::builder()
            .set_dictionary_page_size_limit(usize::MAX)
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        // Every row refers to one 3 MiB value, handed to the writer as a dictionary.
        let keys = arrow::array::Int32Array::from(vec![0; 5000]);
        let values = StringArray::from(vec!["z".repeat(3 << 20)]);
        let text: ArrayRef =
            Arc::new(arrow::array::DictionaryArray::try_new(keys, Arc::new(values)).unwrap());
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..5000));
        let b = RecordBatch::try_from_iter([("id", ids), ("text", text)]).unwrap();
        let f = write(&[b], props);
        assert!(std::fs::metadata(f.path()).unwrap().len() < 1 << 20);
        let groups = scanned(&f).unwrap();
        assert!(groups[0].columns[1].all_dictionary());
        let file = f.reopen().unwrap();
        let meta = ArrowReaderMetadata::load(&file, Default::default()).unwrap();
        let longest =
            longest_dictionary_value(&file, meta.metadata().row_group(0).column(1), 5000).unwrap();
        assert_eq!(longest, 3 << 20);
    }

    #[test]
    fn damaged_headers_are_errors_not_panics() {
        let props = WriterProperties::builder().build();
        let f = write(&[batch(1000, |i| i.to_string())], props);
        let good = std::fs::read(f.path()).unwrap();
        let file = f.reopen().unwrap();
        let meta = ArrowReaderMetadata::load(&file, Default::default()).unwrap();
        let start = meta.metadata().row_group(0).column(0).data_page_offset() as usize;
        // Every byte of the first page header and some after it, changed to every value.
        for at in start..start + 40 {
            for value in [0u8, 0x0f, 0x15, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] = value;
                let mut damaged = tempfile::NamedTempFile::new().unwrap();
                damaged.write_all(&bad).unwrap();
                let _ = scan(&damaged.reopen().unwrap(), meta.metadata());
            }
        }
    }
}
