//! The other gateways' audit logs, for `audit.events` in a cluster: each gateway archives its
//! sealed segments' Parquet copies under `<archive_url>/<node_id>/columnar/` (with their
//! markers, [`crate::archive`]); this reads the markers of every gateway but this one and keeps
//! the list of their Parquet files, so a query over `audit.events` reads one log — this
//! gateway's records (local, up to the last one) and the others' up to their last archived
//! segment (`audit.seal_every_secs` bounds that lag).

use crate::columnar::SegmentIndex;
use crate::error::{AuditError, Result};
use crate::table::Bounds;
use chrono::NaiveDate;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use url::Url;

/// One Parquet file of another gateway's log.
#[derive(Debug, Clone)]
struct PeerFile {
    url: String,
    day: NaiveDate,
    first_seq: u64,
    last_seq: u64,
}

/// The archived logs of the other gateways of a cluster.
pub struct PeerLogs {
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    root_url: Url,
    me: String,
    /// Markers read so far, by their object path: the files each names.
    seen: Mutex<HashMap<ObjectPath, Vec<PeerFile>>>,
}

impl std::fmt::Debug for PeerLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLogs")
            .field("root_url", &self.root_url.as_str())
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl PeerLogs {
    /// The logs archived under `root_url` (the cluster's `audit.archive_url`) by every gateway
    /// but `me`.
    pub fn new(root_url: &Url, me: &str) -> Result<Self> {
        let mut root_url = root_url.clone();
        if !root_url.path().ends_with('/') {
            let p = format!("{}/", root_url.path());
            root_url.set_path(&p);
        }
        let (store, root) = match root_url.scheme() {
            "file" => {
                let dir = root_url
                    .to_file_path()
                    .map_err(|_| AuditError::Invalid(format!("{root_url} is not a local path")))?;
                std::fs::create_dir_all(&dir)?;
                let fs: Arc<dyn ObjectStore> =
                    Arc::new(object_store::local::LocalFileSystem::new());
                let root = ObjectPath::from_absolute_path(&dir)
                    .map_err(|e| AuditError::Invalid(e.to_string()))?;
                (fs, root)
            }
            _ => datagate_core::storage::open_url(&root_url).map_err(AuditError::Invalid)?,
        };
        Ok(Self {
            store,
            root,
            root_url,
            me: me.to_string(),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// The store the files are in and the URL it answers for (to register with a query
    /// engine).
    pub fn store(&self) -> (Url, Arc<dyn ObjectStore>) {
        let mut base = self.root_url.clone();
        base.set_path("/");
        (base, self.store.clone())
    }

    /// Reads the markers archived since the last call; returns how many.
    pub async fn refresh(&self) -> Result<usize> {
        let err = |e: object_store::Error| AuditError::Invalid(format!("audit archive: {e}"));
        let nodes = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(err)?
            .common_prefixes;
        let mut new = 0;
        for node_dir in nodes {
            let Some(node) = node_dir.filename().map(str::to_string) else {
                continue;
            };
            if node == self.me {
                continue;
            }
            let columnar = node_dir.clone().join(crate::columnar::COLUMNAR_DIR);
            let listed = self
                .store
                .list_with_delimiter(Some(&columnar))
                .await
                .map_err(err)?
                .objects;
            for meta in listed {
                let is_marker = meta.location.as_ref().ends_with(".json");
                let known = self
                    .seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&meta.location);
                if !is_marker || known {
                    continue;
                }
                let data = self
                    .store
                    .get(&meta.location)
                    .await
                    .map_err(err)?
                    .bytes()
                    .await
                    .map_err(err)?;
                let marker: SegmentIndex = serde_json::from_slice(&data)
                    .map_err(|e| AuditError::Invalid(format!("{}: {e}", meta.location)))?;
                let files = marker
                    .files
                    .iter()
                    .filter_map(|f| {
                        let url = self.root_url.join(&format!("{node}/{}", f.path)).ok()?;
                        Some(PeerFile {
                            url: url.to_string(),
                            day: f.day,
                            first_seq: f.first_seq,
                            last_seq: f.last_seq,
                        })
                    })
                    .collect();
                self.seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(meta.location, files);
                new += 1;
            }
        }
        Ok(new)
    }

    /// The other gateways' Parquet files a query with `bounds` reads.
    pub fn files(&self, bounds: &Bounds) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut files: Vec<String> = seen
            .values()
            .flatten()
            .filter(|f| bounds.has_day(f.day) && bounds.has_seqs(f.first_seq, f.last_seq))
            .map(|f| f.url.clone())
            .collect();
        files.sort();
        files
    }
}
