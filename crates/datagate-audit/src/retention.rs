//! Retention: segments whose records are all older than `audit.retain_days` move to the
//! archive — the JSON segment, its Parquet days and its marker, after the checkpoints and the
//! public key — and only then leave the local directory. The local marker stays, flagged
//! `archived`, so usage totals keep counting those records and readers know where they went.
//!
//! Only the oldest segments go, in order, so the local log stays one contiguous chain; it
//! verifies on its own from the checkpoint signed when its first remaining segment's
//! predecessor was sealed, and together with the archive
//! (`datagate audit verify --dir <audit dir> --dir <archive copy>`) from the first record.
//!
//! Each step is idempotent: a crash between them leaves files that the next run finishes
//! moving (the archive copy is written before anything local is removed).

use crate::archive::Archive;
use crate::columnar::{COLUMNAR_DIR, ColumnarIndex, marker_name, write_marker};
use crate::error::Result;
use crate::segment::list_segments;
use chrono::{DateTime, Duration, Utc};
use std::path::Path;

/// Moves the segments older than `retain_days` (by their last record) to `archive`; returns how
/// many were moved. The open segment never moves.
pub async fn apply(
    index: &ColumnarIndex,
    archive: &Archive,
    public_key: &str,
    retain_days: u64,
    now: DateTime<Utc>,
) -> Result<usize> {
    let dir = index.dir().to_path_buf();
    let cutoff = now - Duration::days(i64::try_from(retain_days).unwrap_or(i64::MAX / 2));
    // Copies of the sealed JSON segments, the checkpoints and the key first.
    archive.sync(&dir, public_key).await?;
    let open = list_segments(&dir)?.last().map(|(i, _)| *i);
    let mut moved = 0;
    for marker in index.snapshot() {
        if Some(marker.segment) == open {
            break;
        }
        if marker.archived {
            // A crash may have left local files of an archived segment: finish removing them.
            remove_local(&dir, &marker)?;
            continue;
        }
        if marker.last_ts.is_none_or(|t| t >= cutoff) {
            // Oldest first: once one segment is young enough, the later ones are too.
            break;
        }
        for f in &marker.files {
            let data = tokio::fs::read(dir.join(&f.path)).await?;
            archive.put_relative(&f.path, data).await?;
        }
        let marker_rel = format!("{COLUMNAR_DIR}/{}", marker_name(marker.segment));
        archive
            .put_relative(&marker_rel, tokio::fs::read(dir.join(&marker_rel)).await?)
            .await?;
        let mut archived = (*marker).clone();
        archived.archived = true;
        write_marker(&dir, &archived)?;
        index.insert(archived.clone());
        remove_local(&dir, &archived)?;
        moved += 1;
    }
    Ok(moved)
}

/// Removes an archived segment's Parquet days and then its JSON segment.
fn remove_local(dir: &Path, marker: &crate::columnar::SegmentIndex) -> Result<()> {
    let gone = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    for f in &marker.files {
        gone(std::fs::remove_file(dir.join(&f.path)))?;
    }
    gone(std::fs::remove_file(dir.join(&marker.source)))?;
    crate::segment::sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{AuditLog, LogOptions};
    use crate::verify::{verify_dir, verify_dirs};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn old_segments_move_to_the_archive_and_both_sides_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut opts = LogOptions::new(&dir);
        opts.segment_max_bytes = 4096;
        let (log, _) = AuditLog::open(opts).unwrap();
        for i in 0..80 {
            log.append(crate::columnar::tests::event(i)).await.unwrap();
        }
        log.columnar().catch_up(2).unwrap();
        let markers = log.columnar().snapshot();
        assert!(markers.len() >= 4);
        // Keep one day, as of a day after the third segment's last record: the first three go.
        let cut = markers[2].last_ts.unwrap() + Duration::nanoseconds(1);
        let archive_dir = tmp.path().join("archive");
        let url = url::Url::from_directory_path(&archive_dir).unwrap();
        std::fs::create_dir_all(&archive_dir).unwrap();
        let archive = Archive::open(&url).unwrap();
        let moved = apply(
            log.columnar(),
            &archive,
            log.public_key(),
            1,
            cut + Duration::days(1),
        )
        .await
        .unwrap();
        assert_eq!(moved, 3);
        for m in &markers[..3] {
            assert!(!dir.join(&m.source).exists());
            assert!(archive_dir.join(&m.source).exists());
            for f in &m.files {
                assert!(archive_dir.join(&f.path).exists());
                assert!(!dir.join(&f.path).exists());
            }
        }
        assert!(dir.join(&markers[3].source).exists());
        log.close();
        // The local log verifies from the checkpoint at its first record's predecessor...
        let v = verify_dir(&dir, None, None).unwrap();
        assert!(v.ok, "{v:?}");
        assert!(v.events < 80);
        // ...and local plus archive from the first record, Parquet copies included.
        let both = verify_dirs(&[&dir, &archive_dir], None, None, 2).unwrap();
        assert!(both.ok, "{both:?}");
        assert_eq!(both.events, log.head().0);
        // A retired segment doctored in the archive is caught.
        let seg = archive_dir.join(&markers[1].source);
        let mut data = std::fs::read(&seg).unwrap();
        data[30] ^= 1;
        std::fs::write(&seg, data).unwrap();
        let bad = verify_dirs(&[&dir, &archive_dir], None, None, 2).unwrap();
        assert!(!bad.ok);
        assert_eq!(bad.first_bad_seq, Some(markers[1].first_seq));
    }
}
