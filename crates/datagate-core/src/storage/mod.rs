//! Object stores named by URL, the one way datagate reaches its warehouse and audit archive:
//! `file:///dir/` (a local directory) and `s3://bucket/prefix/` (Amazon S3 or an S3-compatible
//! server), configured like every AWS client by the standard environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` for an
//! S3-compatible server, `AWS_ALLOW_HTTP=true` for a plain-HTTP one). Creating a store does no
//! I/O. Conditional puts (`PutMode::Create`, S3's `If-None-Match: *`) are on, so a write that
//! must not overwrite fails instead. A remote store remembers its Parquet files' `HEAD`
//! ([`head_cache`]).

pub mod head_cache;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use std::sync::Arc;

/// The store at `url`'s scheme and authority (a bucket, or the local file system), and the
/// path of `url` inside it.
pub fn open_url(url: &url::Url) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
    match url.scheme() {
        "s3" | "s3a" => {
            let store = s3_builder(url).build().map_err(|e| format!("{url}: {e}"))?;
            let prefix =
                ObjectPath::from_url_path(url.path()).map_err(|e| format!("{url}: {e}"))?;
            Ok((
                Arc::new(head_cache::HeadCache::new(Arc::new(store))),
                prefix,
            ))
        }
        _ => object_store::parse_url(url)
            .map(|(store, prefix)| (Arc::from(store), prefix))
            .map_err(|e| format!("{url}: {e}")),
    }
}

/// The S3 client of an `s3://` URL exactly as datagate configures it: the standard AWS
/// environment, the bucket of `url`, conditional puts by `If-None-Match`/`If-Match`. (The tests
/// run object_store's own integration checks on it against a real S3-compatible server.)
pub fn s3_builder(url: &url::Url) -> object_store::aws::AmazonS3Builder {
    object_store::aws::AmazonS3Builder::from_env()
        .with_url(url.as_str())
        .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
}

/// Whether `url` names a store on this machine's disk.
pub fn is_local(url: &url::Url) -> bool {
    url.scheme() == "file"
}
