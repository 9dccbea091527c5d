//! Segment files: the log is a sequence of `segment-NNNNNN.jsonl` files in the audit
//! directory, one record per line; only the last is appended to, the others are sealed and
//! never rewritten. A sealed segment's records are found by `seq` without reading it whole
//! ([`read_by_seq`]): the events page reads its records from their lines this way.
//!
//! The open segment is written over zeroes laid ahead of its records (a megabyte at a time,
//! see [`crate::log::LogOptions::preallocate_bytes`]): an `fdatasync` of records written into
//! space the file already has need not write the file's new size and blocks too (half the
//! time per sync on ext4). A record never holds a NUL byte (JSON escapes control characters),
//! so the open segment's records end at its first NUL ([`records_part`]); sealing cuts the
//! zeroes off, and a sealed segment is JSON lines and nothing else.

use crate::error::Result;
use std::path::{Path, PathBuf};

/// The file name of segment `index`.
pub fn segment_name(index: u64) -> String {
    format!("segment-{index:06}.jsonl")
}

/// The segments in `dir`, in order.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    list_numbered(dir, ".jsonl")
}

/// The files `segment-NNNNNN<suffix>` in `dir` (none when `dir` does not exist), by number.
pub fn list_numbered(dir: &Path, suffix: &str) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(index) = name
            .to_str()
            .and_then(|n| n.strip_prefix("segment-"))
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((index, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Calls `f` with each line of the segment at `path` (without its newline), in order, read
/// through one reused buffer: a segment is tens of megabytes, and a reader of every record
/// (the Parquet conversion) holds a window of it, never a copy of each line. A torn last line
/// comes out too (it does not decode as a record). Stops at the first error of `f`.
pub fn for_each_line<E: From<std::io::Error>>(
    path: &Path,
    mut f: impl FnMut(&[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    use std::io::Read;
    /// What one read asks for; a line longer than this grows the buffer to hold it.
    const CHUNK: usize = 1 << 20;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    // `buf[..filled]` holds bytes read and not handed out yet: a partial line at its start.
    let mut filled = 0;
    loop {
        if buf.len() - filled < CHUNK / 2 {
            buf.resize(filled + CHUNK, 0);
        }
        let n = match file.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            if filled > 0 {
                f(&buf[..filled])?;
            }
            return Ok(());
        }
        let end = filled + n;
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', &buf[filled..end]) {
            let i = filled + i;
            f(&buf[start..i])?;
            start = i + 1;
        }
        buf.copy_within(start..end, 0);
        filled = end - start;
    }
}

/// Reads whole files past the page cache (`O_DIRECT`) into one reused buffer: verification
/// reads every segment once, and a log larger than memory read through the cache costs a
/// kernel copy of every byte (a third of `audit verify`'s CPU from a cold cache) and evicts
/// what the gateway's readers keep there. Where the file system refuses direct reads (tmpfs,
/// some network file systems), the file is read through the cache as before.
#[derive(Default)]
pub struct UncachedReader {
    /// Holds a window aligned to [`Self::ALIGN`], where the reads land.
    buf: Vec<u8>,
}

impl UncachedReader {
    /// What direct reads' addresses, lengths and offsets must be multiples of (the largest
    /// logical block size in use).
    pub const ALIGN: usize = 4096;

    /// The whole of the file at `path`, as long as it is when its end is reached.
    pub fn read(&mut self, path: &Path) -> std::io::Result<&[u8]> {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        let file = match direct {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return self.read_cached(path),
            Err(e) => return Err(e),
        };
        let size = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
        self.read_direct(file, size, path)
    }

    /// Reads `file`, opened for direct reads and `size` bytes long when it was measured, to its
    /// end, however much it has grown since.
    fn read_direct(
        &mut self,
        mut file: std::fs::File,
        size: usize,
        path: &Path,
    ) -> std::io::Result<&[u8]> {
        // Room for the file and a block more, so the read that finds its end is a whole block.
        let (mut start, mut room) = self.window(size.saturating_add(Self::ALIGN));
        let mut filled = 0;
        loop {
            if filled == room {
                // The file grew since its size was read: a larger window, the bytes moved over.
                let kept = self.buf[start..start + filled].to_vec();
                (start, room) = self.window(room.saturating_mul(2));
                self.buf[start..start + filled].copy_from_slice(&kept);
            }
            match std::io::Read::read(&mut file, &mut self.buf[start + filled..start + room]) {
                Ok(0) => break,
                // Only the read that reaches the end is short; the next offset stays aligned.
                Ok(n) if n % Self::ALIGN != 0 => {
                    filled += n;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return self.read_cached(path),
                Err(e) => return Err(e),
            }
        }
        Ok(&self.buf[start..start + filled])
    }

    /// The start and length of a window of at least `len` bytes (a multiple of the alignment)
    /// aligned to [`Self::ALIGN`] in the buffer, grown if need be.
    fn window(&mut self, len: usize) -> (usize, usize) {
        let len = len.div_ceil(Self::ALIGN).saturating_mul(Self::ALIGN);
        let want = len.saturating_add(Self::ALIGN);
        if self.buf.len() < want {
            // Fresh pages are touched once here, then reused for every later file.
            self.buf = vec![0; want];
        }
        let start = self.buf.as_ptr().align_offset(Self::ALIGN);
        (start, len)
    }

    fn read_cached(&mut self, path: &Path) -> std::io::Result<&[u8]> {
        let mut file = std::fs::File::open(path)?;
        self.buf.clear();
        std::io::Read::read_to_end(&mut file, &mut self.buf)?;
        Ok(&self.buf)
    }
}

/// The part of an open segment's bytes that holds records: up to its first NUL byte (the
/// zeroes laid ahead of the records), or all of it.
pub fn records_part(data: &[u8]) -> &[u8] {
    &data[..memchr::memchr(0, data).unwrap_or(data.len())]
}

/// The bytes of the open segment at `path` from `offset` to the end of its records (its first
/// NUL byte or its end), read in chunks so the zeroes laid ahead are not read whole.
pub fn read_records_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: usize = 64 * 1024;
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    loop {
        let at = data.len();
        data.resize(at + CHUNK, 0);
        let read = file.read(&mut data[at..]);
        data.truncate(at + *read.as_ref().unwrap_or(&0));
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(nul) = memchr::memchr(0, &data[at..]) {
            data.truncate(at + nul);
            return Ok(data);
        }
        if n == 0 {
            return Ok(data);
        }
    }
}

/// The complete lines of `data` (without newlines) with their byte offsets, and the offset
/// where the complete lines end (anything after it is a torn line).
pub fn split_lines(data: &[u8]) -> (Vec<(usize, &[u8])>, usize) {
    let mut lines = Vec::new();
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', data) {
        lines.push((start, &data[start..i]));
        start = i + 1;
    }
    (lines, start)
}

/// The `seq` of a segment's first record (read from its head); `None` when it has no
/// complete first line.
pub fn first_seq(path: &Path) -> Result<Option<u64>> {
    use std::io::BufRead;
    let mut line = Vec::new();
    std::io::BufReader::with_capacity(8 * 1024, std::fs::File::open(path)?)
        .read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Ok(None);
    }
    Ok(seq_of(&line[..line.len() - 1]))
}

/// The `seq` of a segment's last record (read from its tail); `None` when it has no
/// complete line.
pub fn last_seq(path: &Path) -> Result<Option<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut start = len.saturating_sub(64 * 1024);
    loop {
        f.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        let (lines, _) = split_lines(&tail);
        // The first line of a tail read from inside the file may be a piece of one.
        let whole = if start == 0 {
            &lines[..]
        } else {
            &lines[1.min(lines.len())..]
        };
        if let Some((_, line)) = whole.last() {
            return Ok(seq_of(line));
        }
        if start == 0 {
            return Ok(None);
        }
        // A last line longer than the tail read: read further back.
        start = start.saturating_sub(1024 * 1024);
    }
}

/// Bytes a lookup by `seq` reads whole once bisection has narrowed it down this far.
const SCAN_BYTES: u64 = 16 * 1024;
/// Bytes read per bisection probe (a probe reads on until it finds a line start).
const PROBE_BYTES: usize = 4 * 1024;

/// The records of a sealed segment with the given `seq`s (any order; those the segment does
/// not hold are left out), oldest first, found by searching the file on its lines' leading
/// `seq` member — a sealed segment's lines are in `seq` order — so a record costs a few small
/// reads, not a read of the segment: from the last record found, a galloping search forward
/// (probes 16 KiB, 32 KiB, ... ahead), then bisection, then one read of the 16 KiB or so that
/// hold the record, which also serves every other wanted record in it (a run of neighbours
/// costs about one read per 16 KiB). Lines are decoded without checking their hash, as the
/// Parquet copy's rows are (`verify` proves both against the chain).
pub fn read_by_seq(path: &Path, seqs: &[u64]) -> Result<Vec<crate::Record>> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut wanted = seqs.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut out = Vec::with_capacity(wanted.len());
    let (mut buf, mut probe) = (Vec::new(), Vec::new());
    // A line start whose seq is at most every wanted seq not found yet.
    let mut lo = 0u64;
    let mut i = 0;
    while i < wanted.len() {
        let target = wanted[i];
        // The seq of the first line starting after `at` (and before `end`), with its start.
        let mut next_line = |at: u64, end: u64| -> Result<Option<(u64, Option<u64>)>> {
            let Some(start) = line_start_after(&file, at, end, &mut probe)? else {
                return Ok(None);
            };
            read_upto(&file, start, len, 40, &mut probe)?;
            Ok(Some((start, leading_seq(&probe))))
        };
        // A line start (or the end) after the target's line: gallop, then bisect.
        let mut hi = len;
        let mut step = SCAN_BYTES;
        while lo + step < hi {
            match next_line(lo + step, hi)? {
                Some((start, Some(seq))) if seq <= target => {
                    lo = start;
                    step = step.saturating_mul(2);
                }
                Some((start, Some(_))) => {
                    hi = start;
                    break;
                }
                _ => break,
            }
        }
        while hi - lo > SCAN_BYTES {
            let mid = lo + (hi - lo) / 2;
            match next_line(mid, hi)? {
                Some((start, Some(seq))) if seq <= target => lo = start,
                Some((start, Some(_))) => hi = start,
                // One long line spans (mid, hi), or a line that is not a record's: scan.
                _ => break,
            }
        }
        // Read lo..hi, on to the end of a line cut at hi, and take every wanted record in it.
        read_upto(
            &file,
            lo,
            len,
            usize::try_from(hi - lo).unwrap_or(usize::MAX),
            &mut buf,
        )?;
        if lo + (buf.len() as u64) < len && buf.last() != Some(&b'\n') {
            let mut at = lo + buf.len() as u64;
            loop {
                read_upto(&file, at, len, PROBE_BYTES, &mut probe)?;
                if probe.is_empty() {
                    break;
                }
                at += probe.len() as u64;
                if let Some(k) = memchr::memchr(b'\n', &probe) {
                    buf.extend_from_slice(&probe[..=k]);
                    break;
                }
                buf.extend_from_slice(&probe);
            }
        }
        let (lines, _) = split_lines(&buf);
        let base = lo;
        for (offset, line) in lines {
            let Some(seq) = leading_seq(line) else {
                continue;
            };
            while wanted.get(i).is_some_and(|w| *w < seq) {
                i += 1; // not in the segment
            }
            let Some(&w) = wanted.get(i) else { break };
            if w > seq {
                lo = base + offset as u64;
                continue;
            }
            if let Ok(r) = crate::record::decode_unchecked(line) {
                out.push(r);
            }
            i += 1;
            lo = base + offset as u64;
        }
        if wanted.get(i) == Some(&target) {
            i += 1; // not in the segment
        }
    }
    Ok(out)
}

/// Reads `file[at..min(at + n, end)]` into `buf` (replacing what it held).
fn read_upto(file: &std::fs::File, at: u64, end: u64, n: usize, buf: &mut Vec<u8>) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let n = usize::try_from(end.saturating_sub(at)).map_or(n, |left| left.min(n));
    buf.resize(n, 0);
    let mut got = 0;
    while got < n {
        let k = file.read_at(&mut buf[got..], at + got as u64)?;
        if k == 0 {
            break;
        }
        got += k;
    }
    buf.truncate(got);
    Ok(())
}

/// The first line start in `(at, end)`: just after the first newline at or after `at`.
fn line_start_after(
    file: &std::fs::File,
    at: u64,
    end: u64,
    buf: &mut Vec<u8>,
) -> Result<Option<u64>> {
    let mut from = at;
    while from < end {
        read_upto(file, from, end, PROBE_BYTES, buf)?;
        if buf.is_empty() {
            return Ok(None);
        }
        if let Some(i) = memchr::memchr(b'\n', buf) {
            let start = from + i as u64 + 1;
            return Ok((start < end).then_some(start));
        }
        from += buf.len() as u64;
    }
    Ok(None)
}

/// The `seq` a canonical line starts with (`{"seq":N,`), read without decoding the line.
fn leading_seq(line: &[u8]) -> Option<u64> {
    let digits = line.strip_prefix(b"{\"seq\":")?;
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 20 || digits.get(n) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
}

/// The `seq` member of a record's line.
fn seq_of(line: &[u8]) -> Option<u64> {
    crate::record::decode_unchecked(line).ok().map(|r| r.seq)
}

/// Makes a new directory entry durable (after creating or renaming a file in `dir`).
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Event, encode};
    use proptest::prelude::*;

    /// Lines come out whole and in order across the reader's windows: lines ending exactly at
    /// a window's end, a line longer than a window, empty lines, a torn last line.
    #[test]
    fn every_line_comes_out_whole_across_read_windows() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lines");
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut total = 0;
        let mut i = 0usize;
        while total < 5 << 20 {
            let line = match i % 97 {
                0 => Vec::new(),
                // Longer than the 1 MiB window.
                50 if i < 200 => vec![b'x'; (1 << 20) + 7],
                n => format!("{i}:{}", "y".repeat(n * 13)).into_bytes(),
            };
            total += line.len() + 1;
            lines.push(line);
            i += 1;
        }
        let mut data = lines.join(&b'\n');
        data.push(b'\n');
        // One line ends exactly at the first window's end.
        let first_window = 1 << 20;
        if let Some(nl) = data[..first_window].iter().rposition(|b| *b == b'\n') {
            let pad = first_window - 1 - nl;
            let at = lines.iter().position(|l| !l.is_empty()).unwrap();
            lines[at].splice(0..0, std::iter::repeat_n(b'p', pad));
            data = lines.join(&b'\n');
            data.push(b'\n');
            assert_eq!(data[first_window - 1], b'\n');
        }
        for torn in [false, true] {
            let mut want = lines.clone();
            let mut bytes = data.clone();
            if torn {
                bytes.extend_from_slice(b"{\"seq\":9");
                want.push(b"{\"seq\":9".to_vec());
            }
            std::fs::write(&path, &bytes).unwrap();
            let mut got = Vec::new();
            for_each_line(&path, |l| -> std::io::Result<()> {
                got.push(l.to_vec());
                Ok(())
            })
            .unwrap();
            assert_eq!(got.len(), want.len());
            assert!(got == want, "torn: {torn}");
        }
        // An error of the callback stops the reading and comes back.
        let mut seen = 0;
        let e = for_each_line(&path, |_| {
            seen += 1;
            if seen == 3 {
                return Err(std::io::Error::other("stop"));
            }
            Ok(())
        });
        assert_eq!((e.unwrap_err().to_string(), seen), ("stop".to_string(), 3));
    }

    /// Whole files of every size around the block boundaries read the same through the
    /// uncached reader as through `std::fs::read`, one reader reused from file to file (its
    /// window grown, then reused for smaller files), on disk and on tmpfs (where direct reads
    /// may be refused and the cache is used).
    #[test]
    fn uncached_reads_give_the_whole_file() {
        const A: usize = UncachedReader::ALIGN;
        let sizes = [
            0,
            1,
            A - 1,
            A,
            A + 1,
            3 * A + 17,
            1 << 20,
            (1 << 20) + 5,
            7,
            2 * A,
        ];
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if Path::new("/dev/shm").is_dir() {
            dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
        }
        for dir in &dirs {
            let mut reader = UncachedReader::default();
            for (i, size) in sizes.into_iter().enumerate() {
                let path = dir.path().join(format!("f{i}"));
                let bytes: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
                std::fs::write(&path, &bytes).unwrap();
                assert_eq!(reader.read(&path).unwrap(), &bytes[..], "{size} bytes");
            }
            let gone = reader.read(&dir.path().join("missing")).unwrap_err();
            assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
        }
    }

    /// A file that grew after its size was read (the open segment, read while the writer
    /// appends) is read to its new end: the window grows, the bytes read so far moved over,
    /// whether the file's size was off by a little or by many windows.
    #[test]
    fn uncached_reads_follow_a_file_that_grew() {
        use std::os::unix::fs::OpenOptionsExt;
        const A: usize = UncachedReader::ALIGN;
        // In the clone, on a disk: `/tmp` may be a tmpfs, which refuses direct reads. The
        // clone as cargo runs the test, not as it was built (a target directory shared by two
        // clones keeps the first one's compiled-in path).
        let dir = tempfile::tempdir_in(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .unwrap();
        let mut reader = UncachedReader::default();
        for (i, (measured, size)) in [(0, A), (0, 5 * A + 3), (A, 2 * A), (A + 1, 40 * A + 9)]
            .into_iter()
            .enumerate()
        {
            let path = dir.path().join(format!("g{i}"));
            let bytes: Vec<u8> = (0..size).map(|j| (j * 7 + i) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
            {
                Ok(file) => file,
                Err(e) => panic!("a direct read of {}: {e}", path.display()),
            };
            let read = reader.read_direct(file, measured, &path).unwrap();
            assert_eq!(read, &bytes[..], "measured {measured}, {size} bytes");
        }
    }

    /// A segment of `lengths.len()` records from seq `first`, record i's query text
    /// `lengths[i]` bytes long (lines from a few hundred bytes to tens of kilobytes).
    fn segment(dir: &Path, first: u64, lengths: &[usize]) -> PathBuf {
        let path = dir.join(segment_name(1));
        let mut data = Vec::new();
        let mut prev = "0".repeat(64);
        let ts = "2026-01-01T00:00:00Z".parse().unwrap();
        for (i, n) in lengths.iter().enumerate() {
            let event = Event {
                key_id: format!("k{i}"),
                query_text: Some("x".repeat(*n)),
                ..Event::default()
            };
            let (line, hash) = encode(first + i as u64, &ts, &event, &prev);
            data.extend_from_slice(&line);
            prev = hash;
        }
        std::fs::write(&path, data).unwrap();
        path
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the lines' lengths and the seqs asked, the lookup answers exactly the
        /// records with those seqs, read from their own lines.
        #[test]
        fn read_by_seq_finds_exactly_the_asked_records(
            lengths in proptest::collection::vec(prop_oneof![8 => 0usize..600, 1 => 10_000usize..40_000], 1..400),
            asked in proptest::collection::vec(0u64..500, 0..40),
            run in (0u64..500, 0u64..300),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let first = 1000;
            let path = segment(tmp.path(), first, &lengths);
            // Scattered seqs and a run of neighbours, some before, in and after the segment.
            let seqs: Vec<u64> = asked
                .iter()
                .copied()
                .chain(run.0..run.0 + run.1)
                .map(|a| first - 50 + a)
                .collect();
            let got = read_by_seq(&path, &seqs).unwrap();
            let mut expected: Vec<u64> = seqs
                .iter()
                .copied()
                .filter(|s| (first..first + lengths.len() as u64).contains(s))
                .collect();
            expected.sort_unstable();
            expected.dedup();
            prop_assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), expected);
            for r in &got {
                let i = usize::try_from(r.seq - first).unwrap();
                prop_assert_eq!(&r.event.key_id, &format!("k{i}"));
                prop_assert_eq!(r.event.query_text.as_ref().map(String::len), Some(lengths[i]));
            }
        }
    }

    #[test]
    fn read_by_seq_over_a_large_segment_finds_spread_records_and_the_last() {
        let tmp = tempfile::tempdir().unwrap();
        let path = segment(tmp.path(), 1, &vec![300; 200_000]);
        let all: Vec<u64> = (1..=200_000).step_by(1999).collect();
        let got = read_by_seq(&path, &all).unwrap();
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), all);
        // The last record, and one past it.
        assert_eq!(read_by_seq(&path, &[200_000, 200_001]).unwrap().len(), 1);
    }
}
