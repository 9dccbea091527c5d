//! Encoded page bodies: the bytes of small `rows` pages, kept so the next client asking for the
//! same page gets them without slicing and encoding it again.
//!
//! Most traffic on an open-data API is the same first pages of the same popular datasets. A page
//! of a cached small version is already a slice (`datagate_query::pages`), but encoding it (JSON
//! above all) was still the largest share of its CPU. Here a page's body is kept under its entity
//! tag — which names the request (limit, offset, select, where, order, format), the reader's role,
//! and the dataset version in the reader's view (masking a column changes it) — and its `next`
//! link (which names the host the client used). Same key, same bytes; a new version, another
//! view or another page is another key. Access is decided before the cache is consulted, and
//! every answer from it is audited like any other.
//!
//! Memory is bounded by weight (bytes of bodies and keys), least recently and least frequently
//! used out first; a body over [`MAX_BODY`] is never kept.

use bytes::Bytes;

/// Bodies larger than this are encoded each time (they are rare, and would crowd out the rest).
pub const MAX_BODY: usize = 256 * 1024;

/// A page as it left: its body and the rows in it.
#[derive(Clone)]
pub struct EncodedPage {
    pub body: Bytes,
    pub rows: u64,
}

/// The cache; cheap to share (clones are handles on one cache).
#[derive(Clone)]
pub struct PageBodies {
    cache: Option<moka::sync::Cache<String, EncodedPage>>,
}

impl PageBodies {
    /// A cache holding at most `bytes` of bodies and keys; 0 keeps nothing.
    pub fn new(bytes: u64) -> Self {
        let cache = (bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(|key: &String, page: &EncodedPage| {
                    u32::try_from(key.len() + page.body.len()).unwrap_or(u32::MAX)
                })
                .build()
        });
        Self { cache }
    }

    /// The key of a page: its entity tag and its `next` link.
    pub fn key(tag: &str, next: &str) -> String {
        let mut key = String::with_capacity(tag.len() + 1 + next.len());
        key.push_str(tag);
        key.push('\n');
        key.push_str(next);
        key
    }

    pub fn get(&self, key: &str) -> Option<EncodedPage> {
        let found = self.cache.as_ref()?.get(key);
        if found.is_some() {
            metrics::counter!("datagate_page_body_cache_hits_total").increment(1);
        }
        found
    }

    /// Keeps `page` under `key` unless it is too large to.
    pub fn insert(&self, key: String, page: EncodedPage) {
        if let Some(cache) = &self.cache
            && page.body.len() <= MAX_BODY
        {
            cache.insert(key, page);
        }
    }

    /// Bytes held (approximately: the cache settles its accounting as it goes).
    pub fn weighted_size(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_bytes_and_bounded() {
        let bodies = PageBodies::new(64 * 1024);
        let page = |n: u8| EncodedPage {
            body: Bytes::from(vec![n; 1000]),
            rows: u64::from(n),
        };
        let key = PageBodies::key("W/\"a\"", "http://h/next");
        bodies.insert(key.clone(), page(1));
        let hit = bodies.get(&key).unwrap();
        assert_eq!((hit.body.len(), hit.rows), (1000, 1));
        assert!(
            bodies
                .get(&PageBodies::key("W/\"a\"", "http://other/next"))
                .is_none()
        );
        assert!(
            bodies
                .get(&PageBodies::key("W/\"b\"", "http://h/next"))
                .is_none()
        );
        // Too large to keep.
        let big = PageBodies::key("W/\"big\"", "");
        bodies.insert(
            big.clone(),
            EncodedPage {
                body: Bytes::from(vec![0; MAX_BODY + 1]),
                rows: 1,
            },
        );
        assert!(bodies.get(&big).is_none());
        // Many more pages than fit: the cache stays within its bytes.
        for i in 0..500u32 {
            bodies.insert(PageBodies::key(&i.to_string(), ""), page(2));
        }
        bodies.cache.as_ref().unwrap().run_pending_tasks();
        assert!(
            bodies.weighted_size() <= 64 * 1024,
            "{}",
            bodies.weighted_size()
        );
        // Off: keeps nothing.
        let off = PageBodies::new(0);
        off.insert(key.clone(), page(1));
        assert!(off.get(&key).is_none());
    }
}
