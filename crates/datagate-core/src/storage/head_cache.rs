//! A remembered `HEAD` for the warehouse's Parquet files on a remote store. A query lists the
//! files of the versions it reads by their paths, and DataFusion asks the store for each file's
//! size and modification time (`HEAD`) before it reads anything: on S3 that is one round trip
//! on every query's critical path, twice per file. datagate's Parquet files are immutable — a
//! version is new files, never a rewrite — so their metadata is kept after the first `HEAD`
//! (bounded; forgotten when this process writes, copies, renames or deletes the path). Their
//! footers and page indexes are kept by DataFusion's own file metadata cache.

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// How many files' metadata are kept at most (about 200 bytes each).
const CAPACITY: usize = 100_000;

/// `inner`, with the `HEAD` of its Parquet files remembered.
#[derive(Debug)]
pub struct HeadCache {
    inner: Arc<dyn ObjectStore>,
    heads: Arc<Mutex<HashMap<Path, ObjectMeta>>>,
}

impl HeadCache {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            heads: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn heads(&self) -> std::sync::MutexGuard<'_, HashMap<Path, ObjectMeta>> {
        lock(&self.heads)
    }

    fn forget(&self, path: &Path) {
        self.heads().remove(path);
    }
}

fn lock(
    heads: &Mutex<HashMap<Path, ObjectMeta>>,
) -> std::sync::MutexGuard<'_, HashMap<Path, ObjectMeta>> {
    heads.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Display for HeadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeadCache({})", self.inner)
    }
}

/// A plain `HEAD`: no preconditions, no range, no version.
fn is_plain_head(o: &GetOptions) -> bool {
    o.head
        && o.if_match.is_none()
        && o.if_none_match.is_none()
        && o.if_modified_since.is_none()
        && o.if_unmodified_since.is_none()
        && o.range.is_none()
        && o.version.is_none()
}

#[async_trait]
impl ObjectStore for HeadCache {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.forget(location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.forget(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let cacheable = is_plain_head(&options) && location.as_ref().ends_with(".parquet");
        if cacheable && let Some(meta) = self.heads().get(location).cloned() {
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes: Default::default(),
            });
        }
        let got = self.inner.get_opts(location, options).await?;
        if cacheable {
            let mut heads = self.heads();
            if heads.len() >= CAPACITY {
                heads.clear();
            }
            heads.insert(location.clone(), got.meta.clone());
        }
        Ok(got)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // Each path is forgotten as it goes to the store.
        let heads = Arc::clone(&self.heads);
        let locations = locations
            .inspect(move |p| {
                if let Ok(p) = p {
                    lock(&heads).remove(p);
                }
            })
            .boxed();
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.forget(to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.forget(from);
        self.forget(to);
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// InMemory, counting the requests that reach it.
    #[derive(Debug, Default)]
    struct Counting {
        inner: InMemory,
        gets: AtomicUsize,
    }

    impl std::fmt::Display for Counting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Counting")
        }
    }

    #[async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            self.inner.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.inner.get_opts(l, o).await
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }

    #[tokio::test]
    async fn a_parquet_files_head_is_asked_once_until_this_process_changes_it() {
        let counting = Arc::new(Counting::default());
        let store = HeadCache::new(counting.clone());
        let file = Path::from("datasets/d/v1/part-0.parquet");
        let other = Path::from("audit/checkpoint.json");
        store.put(&file, PutPayload::from("abc")).await.unwrap();
        store.put(&other, PutPayload::from("{}")).await.unwrap();
        let gets = || counting.gets.load(Ordering::Relaxed);
        assert_eq!(store.head(&file).await.unwrap().size, 3);
        assert_eq!(store.head(&file).await.unwrap().size, 3);
        assert_eq!(gets(), 1, "the second HEAD is remembered");
        store.head(&other).await.unwrap();
        store.head(&other).await.unwrap();
        assert_eq!(gets(), 3, "only Parquet files are remembered");
        // Reads always reach the store.
        assert_eq!(
            &store.get(&file).await.unwrap().bytes().await.unwrap()[..],
            b"abc"
        );
        assert_eq!(gets(), 4);
        // Written again here: asked again.
        store.put(&file, PutPayload::from("abcd")).await.unwrap();
        assert_eq!(store.head(&file).await.unwrap().size, 4);
        assert_eq!(gets(), 5);
        // Deleted here: not found.
        store.delete(&file).await.unwrap();
        assert!(matches!(
            store.head(&file).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }
}
