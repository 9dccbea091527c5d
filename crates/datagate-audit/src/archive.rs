//! Archiving: copies of the sealed segments (byte for byte), the signed checkpoints and the
//! public key in an object store, laid out like the audit directory, so an auditor can fetch the
//! archive into a directory and verify it offline (`datagate audit verify --dir DIR
//! --public-key HEX`). Sealed segments are never rewritten, locally or in the archive; the
//! open segment is archived once it is sealed.

use crate::error::{AuditError, Result};
use crate::log::CHECKPOINTS_FILE;
use crate::segment::list_segments;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::Path;
use std::sync::Arc;

/// The public key's file in an archive (hex, as `GET /api/v1/audit/public-key` gives it).
pub const PUBLIC_KEY_FILE: &str = "public.key";

/// An object store and the prefix the archive lives under.
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// Objects this process has seen in the archive (sealed segments, markers): a sync asks the
    /// store only about the rest, not about every segment of the log each time.
    present: Arc<std::sync::Mutex<std::collections::HashSet<ObjectPath>>>,
}

impl Archive {
    /// The archive at `url` (`file:///...`, or another scheme `object_store` knows).
    pub fn open(url: &url::Url) -> Result<Self> {
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|_| AuditError::Invalid(format!("{url} is not a local path")))?;
                std::fs::create_dir_all(&dir)?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| AuditError::Invalid(e.to_string()))?;
                (Arc::new(fs), ObjectPath::default())
            }
            _ => datagate_core::storage::open_url(url).map_err(AuditError::Invalid)?,
        };
        Ok(Self {
            store,
            prefix,
            present: Arc::default(),
        })
    }

    /// Copies everything under the archive into `dir` (created), keeping the layout; returns
    /// how many files. An auditor's offline copy: `datagate audit verify --archive URL`.
    pub async fn fetch(&self, dir: &Path) -> Result<usize> {
        use futures::TryStreamExt;
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let objects: Vec<_> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| AuditError::Invalid(format!("archive: {e}")))?;
        let mut n = 0;
        for meta in objects {
            let rel: Vec<_> = match meta.location.prefix_match(&self.prefix) {
                Some(parts) => parts.map(|p| p.as_ref().to_string()).collect(),
                None => continue,
            };
            if rel.is_empty() || rel.iter().any(|p| p == ".." || p.contains('/')) {
                continue;
            }
            let target = rel.iter().fold(dir.to_path_buf(), |d, p| d.join(p));
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let data = self
                .store
                .get(&meta.location)
                .await
                .map_err(|e| AuditError::Invalid(format!("archive: {e}")))?
                .bytes()
                .await
                .map_err(|e| AuditError::Invalid(format!("archive: {e}")))?;
            tokio::fs::write(&target, &data).await?;
            n += 1;
        }
        Ok(n)
    }

    fn path(&self, name: &str) -> ObjectPath {
        self.prefix.clone().join(name)
    }

    /// Copies the sealed segments the archive lacks, then the checkpoints and the public key;
    /// returns how many segments were copied.
    pub async fn sync(&self, dir: &Path, public_key: &str) -> Result<usize> {
        let segments = list_segments(dir)?;
        let sealed = &segments[..segments.len().saturating_sub(1)];
        let mut copied = 0;
        for (_, path) in sealed {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let target = self.path(name);
            if self.holds(&target).await? {
                continue;
            }
            let data = tokio::fs::read(path).await?;
            self.put_new(&target, data).await?;
            self.mark_present(target);
            copied += 1;
        }
        // Only the checkpoints the archived segments reach: the archive is a complete log on
        // its own at every moment (a checkpoint past its end would read as a truncation).
        let last_archived = match sealed.last() {
            Some((_, path)) => crate::segment::last_seq(path)?,
            None => None,
        };
        if let (Some(last), Ok(data)) = (
            last_archived,
            tokio::fs::read(dir.join(CHECKPOINTS_FILE)).await,
        ) {
            let kept: Vec<u8> = data
                .split_inclusive(|b| *b == b'\n')
                .filter(|line| {
                    serde_json::from_slice::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["seq"].as_u64())
                        .is_some_and(|seq| seq <= last)
                })
                .flatten()
                .copied()
                .collect();
            self.put(&self.path(CHECKPOINTS_FILE), kept).await?;
        }
        self.put(&self.path(PUBLIC_KEY_FILE), public_key.as_bytes().to_vec())
            .await?;
        self.sync_columnar(dir).await?;
        Ok(copied)
    }

    /// Copies the Parquet copies of converted segments the archive lacks, each segment's
    /// files before its marker (a marker in the archive says its files are there): the other
    /// gateways of a cluster read them as part of `audit.events` ([`crate::peers`]).
    async fn sync_columnar(&self, dir: &Path) -> Result<()> {
        for (index, marker) in crate::columnar::read_markers(dir)? {
            if marker.archived {
                continue; // retention copied it when it moved it
            }
            let marker_rel = format!(
                "{}/{}",
                crate::columnar::COLUMNAR_DIR,
                crate::columnar::marker_name(index)
            );
            let marker_path = self.relative(&marker_rel);
            if self.holds(&marker_path).await? {
                continue;
            }
            for f in &marker.files {
                let data = match tokio::fs::read(dir.join(&f.path)).await {
                    Ok(d) => d,
                    // Moved by retention meanwhile: it copied them itself.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                self.put_relative(&f.path, data).await?;
            }
            self.put_relative(&marker_rel, tokio::fs::read(dir.join(&marker_rel)).await?)
                .await?;
            self.mark_present(marker_path);
        }
        Ok(())
    }

    /// Whether the archive holds `target`: known from an earlier sync, or asked once.
    async fn holds(&self, target: &ObjectPath) -> Result<bool> {
        if self
            .present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(target)
        {
            return Ok(true);
        }
        match self.store.head(target).await {
            Ok(_) => {
                self.mark_present(target.clone());
                Ok(true)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(AuditError::Invalid(format!("archive: {e}"))),
        }
    }

    fn mark_present(&self, target: ObjectPath) {
        self.present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target);
    }

    fn relative(&self, rel: &str) -> ObjectPath {
        let mut target = self.prefix.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            target = target.join(part);
        }
        target
    }

    /// Writes `data` at `rel` (a path relative to the audit directory, e.g. a Parquet day file).
    pub async fn put_relative(&self, rel: &str, data: Vec<u8>) -> Result<()> {
        self.put(&self.relative(rel), data).await
    }

    /// Writes a sealed segment, which must never be rewritten: a conditional put (S3's
    /// `If-None-Match: *`). If the archive already holds it (another sync got there first) the
    /// copy must be the same bytes; a different segment under that name is refused, loudly.
    async fn put_new(&self, target: &ObjectPath, data: Vec<u8>) -> Result<()> {
        let opts = object_store::PutOptions::from(object_store::PutMode::Create);
        match self
            .store
            .put_opts(target, PutPayload::from(data.clone()), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self
                    .store
                    .get(target)
                    .await
                    .map_err(|e| AuditError::Invalid(format!("archive: {e}")))?
                    .bytes()
                    .await
                    .map_err(|e| AuditError::Invalid(format!("archive: {e}")))?;
                if existing.as_ref() == data.as_slice() {
                    Ok(())
                } else {
                    Err(AuditError::Invalid(format!(
                        "archive: {target} already holds a different segment; refusing to \
                         overwrite it (two gateways with one audit.node_id?)"
                    )))
                }
            }
            Err(e) => Err(AuditError::Invalid(format!("archive: {e}"))),
        }
    }

    async fn put(&self, target: &ObjectPath, data: Vec<u8>) -> Result<()> {
        self.store
            .put(target, PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(|e| AuditError::Invalid(format!("archive: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{AuditLog, LogOptions};
    use crate::record::{Event, Kind};
    use crate::verify::verify_dir;

    #[tokio::test]
    async fn the_archive_verifies_on_its_own_and_never_rewrites_a_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut opts = LogOptions::new(&dir);
        opts.segment_max_bytes = 1024;
        let (log, _) = AuditLog::open(opts).unwrap();
        for i in 0..40 {
            let e = Event {
                kind: Some(Kind::Request),
                event_id: format!("e{i}"),
                status: 200,
                count: 1,
                ..Default::default()
            };
            log.append(e).await.unwrap();
        }
        let archive_dir = tmp.path().join("archive");
        let url = url::Url::from_directory_path(&archive_dir).unwrap();
        let archive = Archive::open(&url).unwrap();
        let first = archive.sync(&dir, log.public_key()).await.unwrap();
        let sealed = list_segments(&dir).unwrap().len() - 1;
        assert_eq!(first, sealed);
        assert_eq!(
            archive.sync(&dir, log.public_key()).await.unwrap(),
            0,
            "nothing twice"
        );
        log.close();
        archive.sync(&dir, log.public_key()).await.unwrap();
        // The archive holds every sealed segment, the checkpoints they reach and the key: a
        // complete log on its own, up to the last sealed record (the open segment is not
        // there yet, nor the shutdown checkpoint past it).
        let key = crate::checkpoint::parse_public_key(
            &std::fs::read_to_string(archive_dir.join(PUBLIC_KEY_FILE)).unwrap(),
        )
        .unwrap();
        let v = verify_dir(&archive_dir, Some(&key), None).unwrap();
        let sealed_last = crate::segment::last_seq(&list_segments(&dir).unwrap()[sealed - 1].1)
            .unwrap()
            .unwrap();
        assert!(v.ok && v.events == sealed_last, "{v:?}");
        assert!(v.checkpoints > 0, "{v:?}");
        std::fs::copy(
            list_segments(&dir).unwrap().last().unwrap().1.clone(),
            archive_dir.join(crate::segment::segment_name(sealed as u64 + 1)),
        )
        .unwrap();
        let v = verify_dir(&archive_dir, Some(&key), None).unwrap();
        assert!(v.ok && v.events == 40, "{v:?}");
    }
}
