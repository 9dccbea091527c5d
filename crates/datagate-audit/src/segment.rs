//! Segment files: the log is a sequence of `segment-NNNNNN.jsonl` files in the audit
//! directory, one record per line; only the last is appended to, the others are sealed and
//! never rewritten.

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

/// The `seq` member of a record's line.
fn seq_of(line: &[u8]) -> Option<u64> {
    crate::record::decode_unchecked(line).ok().map(|r| r.seq)
}

/// Makes a new directory entry durable (after creating or renaming a file in `dir`).
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
