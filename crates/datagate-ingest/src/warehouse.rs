//! The Parquet warehouse: an `object_store` location addressed by URL.
//!
//! Paths inside the warehouse are relative (`datasets/<dept>/<name>/<upload>/part-00000.parquet`)
//! and are what the catalog records; [`Warehouse::file_url`] turns one into the absolute URL a
//! query engine reads.

use crate::error::{IngestError, Result};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::HashSet;
use std::sync::Arc;
use url::Url;

/// Where datasets' Parquet files live.
#[derive(Debug, Clone)]
pub struct Warehouse {
    url: Url,
    /// The store at the root of the URL's scheme and authority (what a query engine registers).
    root_store: Arc<dyn ObjectStore>,
    /// The same store, rooted at the warehouse prefix.
    store: Arc<dyn ObjectStore>,
    /// For local warehouses, the directory (files are fsynced before a commit).
    local_dir: Option<std::path::PathBuf>,
}

/// The prefix under which every dataset's files are written.
pub const DATASETS_PREFIX: &str = "datasets";

impl Warehouse {
    /// Opens the warehouse at `url` (a `file://` directory is created if missing).
    pub fn open(url: &Url) -> Result<Self> {
        let (root_store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|_| IngestError::Invalid(format!("not a local path: {url}")))?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    IngestError::storage(&format!("cannot create warehouse {}", dir.display()), &e)
                })?;
                let prefix = ObjectPath::from_url_path(url.path())
                    .map_err(|e| IngestError::Invalid(format!("warehouse URL {url}: {e}")))?;
                let store = object_store::local::LocalFileSystem::new();
                return Ok(Self {
                    url: url.clone(),
                    store: Arc::new(PrefixStore::new(store.clone(), prefix)),
                    root_store: Arc::new(store),
                    local_dir: Some(dir),
                });
            }
            _ => datagate_core::storage::open_url(url)
                .map_err(|e| IngestError::Invalid(format!("warehouse URL {e}")))?,
        };
        Ok(Self {
            url: url.clone(),
            store: Arc::new(PrefixStore::new(root_store.clone(), prefix)),
            root_store,
            local_dir: None,
        })
    }

    /// The warehouse URL (ends with `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The store rooted at the warehouse.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The store rooted at the URL's scheme and authority, to register with a query engine.
    pub fn root_store(&self) -> &Arc<dyn ObjectStore> {
        &self.root_store
    }

    /// The absolute URL of a warehouse-relative path.
    pub fn file_url(&self, path: &str) -> Result<Url> {
        self.url
            .join(path)
            .map_err(|e| IngestError::Internal(format!("bad file path {path}: {e}")))
    }

    /// Whether the warehouse is a local directory (its files need fsync and writeback hints).
    pub(crate) fn is_local(&self) -> bool {
        self.local_dir.is_some()
    }

    /// Asks the disk to start writing the dirty pages of every file in the folder `dir` (a
    /// local warehouse; other stores have nothing to do) and returns without waiting for them:
    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)`. An upload calls it after each row group, so
    /// the fsync that makes a file durable at its close finds little left to write; otherwise
    /// the kernel holds the whole file dirty (its writeback starts after 30 s or gigabytes) and
    /// that fsync writes hundreds of megabytes while the upload waits.
    pub(crate) fn start_writeback(&self, dir: &str) {
        use std::os::fd::AsRawFd;
        let Some(root) = &self.local_dir else { return };
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            return;
        };
        for entry in entries.flatten() {
            if let Ok(file) = std::fs::File::open(entry.path()) {
                // SAFETY: the descriptor is open for the call; a failure only leaves the
                // writing to the fsync.
                unsafe {
                    libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
                };
            }
        }
    }

    /// Makes written files durable where the store does not do so itself (local disks).
    pub(crate) fn sync_file(&self, path: &str) -> Result<()> {
        if let Some(dir) = &self.local_dir {
            let full = dir.join(path);
            let f = std::fs::File::open(&full)
                .map_err(|e| IngestError::storage(&format!("cannot open {path}"), &e))?;
            f.sync_all()
                .map_err(|e| IngestError::storage(&format!("cannot fsync {path}"), &e))?;
            if let Some(parent) = full.parent()
                && let Ok(d) = std::fs::File::open(parent)
            {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Checks the store answers (for readiness).
    pub async fn ping(&self) -> Result<()> {
        let mut list = self.store.list(Some(&ObjectPath::from(DATASETS_PREFIX)));
        list.try_next().await?;
        Ok(())
    }

    /// Deletes every file under `datasets/` that no version references and that is older than
    /// `min_age`: what failed or killed uploads left behind. Returns how many were removed.
    ///
    /// One gateway alone sweeps with no minimum age (only it writes, and it sweeps before it
    /// serves). Gateways sharing a catalog and a store sweep only files older than the longest
    /// upload (`ingest.orphan_grace_secs`), because another gateway's upload in progress has
    /// written files its commit has not named yet. The files are listed before the catalog is
    /// read, so a commit landing in between keeps its files.
    pub async fn sweep_unreferenced(
        &self,
        catalog: &dyn datagate_catalog::CatalogStore,
        min_age: std::time::Duration,
    ) -> Result<usize> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
        let files: Vec<_> = self
            .store
            .list(Some(&ObjectPath::from(DATASETS_PREFIX)))
            .try_filter(|meta| std::future::ready(min_age.is_zero() || meta.last_modified < cutoff))
            .try_collect()
            .await?;
        let referenced: HashSet<String> = catalog
            .referenced_files()
            .await
            .map_err(|e| IngestError::Internal(format!("reading the catalog's files: {e}")))?
            .into_iter()
            .collect();
        let mut removed = 0;
        for meta in files {
            if !referenced.contains(meta.location.as_ref()) {
                match self.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if let Some(dir) = &self.local_dir {
            removed += remove_staging_files(&dir.join(DATASETS_PREFIX));
            remove_empty_dirs(&dir.join(DATASETS_PREFIX));
        }
        Ok(removed)
    }
}

/// Removes the staging files of object_store's local file system (`<name>#<n>`: a write that
/// was killed before its rename). Its listings never show them, so the sweep above cannot.
fn remove_staging_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            removed += remove_staging_files(&p);
        } else if is_staging_name(&e.file_name().to_string_lossy())
            && std::fs::remove_file(&p).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(stem, n)| {
        !stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

fn remove_empty_dirs(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if remove_empty_dirs(&p) {
                let _ = std::fs::remove_dir(&p);
            } else {
                empty = false;
            }
        } else {
            empty = false;
        }
    }
    empty
}

#[cfg(test)]
mod staging_tests {
    #[test]
    fn staging_names_are_recognised() {
        assert!(super::is_staging_name("part-00007.parquet#1"));
        assert!(super::is_staging_name("part-00000.parquet#12"));
        assert!(!super::is_staging_name("part-00000.parquet"));
        assert!(!super::is_staging_name("a#b"));
        assert!(!super::is_staging_name("#1"));
    }
}
