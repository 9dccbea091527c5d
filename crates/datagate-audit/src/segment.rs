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

/// Makes a new directory entry durable (after creating or renaming a file in `dir`).
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
