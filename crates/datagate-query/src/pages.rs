//! Pages without planning: the `rows` pages most requests ask for, served straight from the
//! version's storage order.
//!
//! Building a DataFusion session and planning even a trivial query costs far more CPU than
//! encoding ten rows, and a page of a small Parquet table decoded the whole table every time.
//! Here:
//! - a page of a **small version** (at most `query.page_cache_max_rows` rows) is a slice of its
//!   decoded rows, kept in a memory-bounded cache (`query.page_cache_bytes`, least recently used
//!   out first) per dataset, version and reader's view (masked columns already masked, private
//!   ones absent). `where` and `order` on it are evaluated on those rows with the expressions
//!   and comparators DataFusion itself uses;
//! - a page of a **large version** without `where` or `order` is a seek: the catalog's per-file
//!   row counts and each file's Parquet metadata and page index (cached) locate the rows, and
//!   only the pages holding them are decoded, so the page at offset 1,000,000 costs what the
//!   first page costs. The decoded blocks (`query.page_cache_bytes` too) serve the next pages
//!   there, and a page whose blocks are all in memory is served like a small version's page.
//!
//! Anything else (`where` or `order` on a large version, exports, SQL) is planned as before.
//! Both ways give the same rows in the same order (the tests compare them); where this path
//! cannot be sure (an expression it cannot evaluate, a file whose row count disagrees with the
//! catalog) it declines and the planned path answers.

use crate::catalog_provider::TableSnapshot;
use crate::engine::QueryLimits;
use crate::error::QueryError;
use crate::masking::{self, MaskKey};
use crate::rows::{self, Paging, RowsRequest};
use arrow::array::{ArrayRef, AsArray, RecordBatch, new_null_array};
use arrow::compute::{SortColumn, SortOptions, cast, concat_batches, filter_record_batch};
use arrow::compute::{lexsort_to_indices, take_record_batch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use bytes::Bytes;
use datafusion::common::DFSchema;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, SortExpr};
use datafusion::physical_expr::PhysicalExpr;
use futures::FutureExt;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::{
    AsyncFileReader, MetadataSuffixFetch, ParquetRecordBatchStreamBuilder,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// How much the page cache may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCacheLimits {
    /// Decoded bytes of all cached versions together; 0 turns the cache off.
    pub bytes: u64,
    /// Versions with more rows are never cached (their pages are seeks).
    pub max_rows: u64,
    /// Rows of a cached block of a large version's file. A page of a large version decodes
    /// the block holding it once (with the dictionary pages its columns need, which cost the
    /// most); the next pages there, and every client asking for the same page, are slices.
    pub block_rows: u64,
}

impl Default for PageCacheLimits {
    fn default() -> Self {
        Self {
            bytes: 128 << 20,
            max_rows: 200_000,
            block_rows: 8192,
        }
    }
}

/// Parquet metadata (with page indexes) kept for this many files at most.
const METADATA_ENTRIES: usize = 4096;

/// A page, read without planning: the rows (one more than the page when more follow) and
/// their schema.
pub struct Page {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Whether it came from the cache of decoded versions.
    pub cached: bool,
}

/// Serves pages without planning; shared by all requests.
pub struct PageServer {
    store: Arc<dyn ObjectStore>,
    /// Functions and type coercion for `where`, as every session has them.
    state: SessionState,
    mask_key: MaskKey,
    limits: PageCacheLimits,
    entries: Mutex<HashMap<CacheKey, Arc<Slot>>>,
    clock: AtomicU64,
    metadata: Mutex<HashMap<String, Arc<ArrowReaderMetadata>>>,
}

impl std::fmt::Debug for PageServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageServer")
            .field("limits", &self.limits)
            .finish()
    }
}

/// What the cache holds: whole small versions (in a reader's view), and blocks of rows of
/// large versions' files (as stored; views are applied per page).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Version {
        table: String,
        version: i64,
        /// The reader's view: whether it sees everything, and the columns' current annotations.
        view: String,
    },
    Block {
        url: String,
        index: u64,
    },
}

/// A cache entry, loaded once however many requests ask for it at the same time.
#[derive(Default)]
struct Slot {
    /// `None`: decoded, the version was over the cache's share (its pages are seeks).
    table: OnceCell<Option<RecordBatch>>,
    last_used: AtomicU64,
    bytes: AtomicU64,
}

impl PageServer {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        state: SessionState,
        mask_key: MaskKey,
        limits: PageCacheLimits,
    ) -> Self {
        Self {
            store,
            state,
            mask_key,
            limits,
            entries: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            metadata: Mutex::new(HashMap::new()),
        }
    }

    /// The page `request` asks for, or `None` when it has to be planned.
    pub async fn page(
        &self,
        snapshot: &TableSnapshot,
        primary_key: &[String],
        request: &RowsRequest,
        paging: Paging,
        limits: &QueryLimits,
    ) -> Result<Option<Page>, QueryError> {
        let Paging::Page { limit, offset } = paging else {
            return Ok(None);
        };
        if snapshot.file_urls.is_empty() || snapshot.file_urls.len() != snapshot.file_rows.len() {
            return Ok(None);
        }
        let view = View::new(snapshot, &self.mask_key, &self.state)?;
        let select = view.select(request)?;
        let want = limit.saturating_add(1);
        if self.limits.bytes > 0
            && snapshot.rows() <= self.limits.max_rows
            && let Some(table) = self.cached(snapshot, &view).await?
        {
            let Some(batch) =
                self.slice_of(table, &view, request, primary_key, offset, want, limits)?
            else {
                return Ok(None);
            };
            let batch = project(&batch, select.as_deref())?;
            return Ok(Some(Page {
                schema: batch.schema(),
                batches: vec![batch],
                cached: true,
            }));
        }
        if request.filter().is_some() || request.order().is_some() {
            return Ok(None);
        }
        let columns = view.columns_of(select.as_deref())?;
        let Some(batches) = self
            .seek(snapshot, &view, &columns, offset, want, true)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Page {
            schema: view.projected(&columns),
            batches,
            cached: false,
        }))
    }

    /// A plain page (no `where`, no `order`, at most `max_rows` rows) whose rows are in the
    /// cache already (a whole small version, or the decoded blocks of a large one), without
    /// waiting for anything: slices, cheap enough to take on the thread that serves the
    /// connection. `None` when it is not that.
    pub fn ready_page(
        &self,
        snapshot: &TableSnapshot,
        request: &RowsRequest,
        paging: Paging,
        max_rows: u64,
    ) -> Result<Option<Page>, QueryError> {
        let Paging::Page { limit, offset } = paging else {
            return Ok(None);
        };
        if limit > max_rows
            || request.filter().is_some()
            || request.order().is_some()
            || snapshot.file_urls.is_empty()
            || snapshot.file_urls.len() != snapshot.file_rows.len()
            || self.limits.bytes == 0
        {
            return Ok(None);
        }
        let view = View::new(snapshot, &self.mask_key, &self.state)?;
        let select = view.select(request)?;
        let want = limit.saturating_add(1);
        let whole = (snapshot.rows() <= self.limits.max_rows)
            .then(|| {
                self.peek(&CacheKey::Version {
                    table: snapshot.qualified_name(),
                    version: snapshot.version.unwrap_or_default(),
                    view: view.tag.clone(),
                })
            })
            .flatten();
        let Some(table) = whole else {
            // A large version (or one too large to keep whole): its blocks, if all in memory.
            return self.ready_blocks(snapshot, &view, select.as_deref(), offset, want);
        };
        let (start, len) = window(table.num_rows(), offset, want);
        let batch = project(&table.slice(start, len), select.as_deref())?;
        metrics::counter!("datagate_page_cache_hits_total").increment(1);
        Ok(Some(Page {
            schema: batch.schema(),
            batches: vec![batch],
            cached: true,
        }))
    }

    /// `want` rows from row `offset` of a version in storage order, in the reader's view, when
    /// every block holding them is decoded in the cache already (`None` otherwise).
    fn ready_blocks(
        &self,
        snapshot: &TableSnapshot,
        view: &View,
        select: Option<&[String]>,
        offset: u64,
        want: u64,
    ) -> Result<Option<Page>, QueryError> {
        let columns = view.columns_of(select)?;
        let schema = view.projected(&columns);
        let mut batches = Vec::new();
        for span in block_spans(snapshot, self.limits.block_rows, offset, want) {
            let Some(block) = self.peek(&CacheKey::Block {
                url: span.url.to_string(),
                index: span.index,
            }) else {
                return Ok(None);
            };
            let Some(rows) = span.of(&block) else {
                return Ok(None);
            };
            batches.push(view.apply(&rows, &columns)?);
        }
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema.clone()));
        }
        metrics::counter!("datagate_page_cache_hits_total").increment(1);
        Ok(Some(Page {
            schema,
            batches,
            cached: false,
        }))
    }

    /// What the cache holds under `key`, without waiting or loading (marked as just used).
    fn peek(&self, key: &CacheKey) -> Option<RecordBatch> {
        let slot = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()?;
        let value = slot.table.get()?.clone()?;
        slot.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(value)
    }

    /// The decoded version in the reader's view, from the cache or loaded into it; `None` when
    /// it is too large to keep.
    async fn cached(
        &self,
        snapshot: &TableSnapshot,
        view: &View,
    ) -> Result<Option<RecordBatch>, QueryError> {
        let slot = self.slot(CacheKey::Version {
            table: snapshot.qualified_name(),
            version: snapshot.version.unwrap_or_default(),
            view: view.tag.clone(),
        });
        self.load_or_hit(slot, || async {
            let all: Vec<usize> = (0..view.out.fields().len()).collect();
            let batches = self
                .seek(snapshot, view, &all, 0, snapshot.rows(), false)
                .await?
                .ok_or_else(|| {
                    QueryError::Internal(format!(
                        "the files of {} disagree with the catalog's row counts",
                        snapshot.qualified_name()
                    ))
                })?;
            let batch = concat_batches(&view.out, &batches)
                .map_err(|e| QueryError::Internal(e.to_string()))?;
            let keep = batch.get_array_memory_size() as u64 <= self.limits.bytes / 2;
            Ok(keep.then_some(batch))
        })
        .await
    }

    /// The value of `slot`, loaded by `load` unless it already is (`None`: loaded, not kept);
    /// counted as a hit or a load, and the cache brought back within its bytes after a load.
    async fn load_or_hit<F, Fut>(
        &self,
        slot: Arc<Slot>,
        load: F,
    ) -> Result<Option<RecordBatch>, QueryError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<RecordBatch>, QueryError>>,
    {
        let mut loaded = false;
        let value = slot
            .table
            .get_or_try_init(|| {
                loaded = true;
                load()
            })
            .await?
            .clone();
        if loaded {
            if let Some(batch) = &value {
                slot.bytes
                    .store(batch.get_array_memory_size() as u64, Ordering::Relaxed);
            }
            metrics::counter!("datagate_page_cache_loads_total").increment(1);
            self.evict();
        } else {
            metrics::counter!("datagate_page_cache_hits_total").increment(1);
        }
        Ok(value)
    }

    /// The cache entry of `key`, marked as just used.
    fn slot(&self, key: CacheKey) -> Arc<Slot> {
        let slot = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        slot.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        slot
    }

    /// Drops the least recently used entries until the cache is within its bytes.
    fn evict(&self) {
        let mut versions = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let held = |s: &Slot| match s.table.get() {
            Some(Some(_)) => s.bytes.load(Ordering::Relaxed),
            _ => 0,
        };
        let mut total: u64 = versions.values().map(|s| held(s)).sum();
        while total > self.limits.bytes {
            let Some(oldest) = versions
                .iter()
                .filter(|(_, s)| held(s) > 0)
                .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(slot) = versions.remove(&oldest) {
                total -= held(&slot);
            }
        }
        // Versions found too large are remembered as such, but not without bound.
        if versions.len() > METADATA_ENTRIES {
            versions.retain(|_, s| held(s) > 0);
        }
        metrics::gauge!("datagate_page_cache_bytes").set(total as f64);
    }

    /// A page of a decoded version: `where`, then `order`, then `offset` and `want` rows.
    /// `None` when `where` cannot be evaluated here (the planned path then reports it).
    #[allow(clippy::too_many_arguments)]
    fn slice_of(
        &self,
        table: RecordBatch,
        view: &View,
        request: &RowsRequest,
        primary_key: &[String],
        offset: u64,
        want: u64,
        limits: &QueryLimits,
    ) -> Result<Option<RecordBatch>, QueryError> {
        let mut batch = table;
        if let Some(text) = request.filter() {
            let expr = rows::where_expr(text, &view.out, self.state.scalar_functions(), limits)?;
            let Some(kept) = self.filter(&batch, expr) else {
                return Ok(None);
            };
            batch = kept;
        }
        let (start, len) = window(batch.num_rows(), offset, want);
        let sorts = rows::page_sorts(request, &view.out, primary_key, limits.max_sql_bytes)?;
        if sorts.is_empty() {
            return Ok(Some(batch.slice(start, len)));
        }
        let Some(columns) = sort_columns(&batch, &sorts) else {
            return Ok(None);
        };
        let Ok(indices) = lexsort_to_indices(&columns, Some(start + len)) else {
            return Ok(None);
        };
        let indices = indices.slice(start, len);
        take_record_batch(&batch, &indices)
            .map(Some)
            .map_err(|e| QueryError::Internal(e.to_string()))
    }

    /// The rows of `batch` for which `expr` is true, evaluated as DataFusion's filter does
    /// (coerced, nulls dropped); `None` when it cannot be evaluated here.
    fn filter(&self, batch: &RecordBatch, expr: Expr) -> Option<RecordBatch> {
        let schema = DFSchema::try_from(batch.schema().as_ref().clone()).ok()?;
        let physical = self.state.create_physical_expr(expr, &schema).ok()?;
        let mask = physical
            .evaluate(batch)
            .ok()?
            .into_array(batch.num_rows())
            .ok()?;
        let mask = mask.as_boolean_opt()?;
        filter_record_batch(batch, mask).ok()
    }

    /// `want` rows from row `offset` of the version in storage order, in the view's `columns`.
    /// `blocks`: through the cache of decoded blocks (pages); otherwise decoding just those
    /// rows (loading a whole small version). `None` when a file's row count is not what the
    /// catalog says.
    async fn seek(
        &self,
        snapshot: &TableSnapshot,
        view: &View,
        columns: &[usize],
        offset: u64,
        want: u64,
        blocks: bool,
    ) -> Result<Option<Vec<RecordBatch>>, QueryError> {
        let mut out = Vec::new();
        if blocks {
            for span in block_spans(snapshot, self.limits.block_rows, offset, want) {
                let Some(block) = self.block(span.url, span.file_rows, span.index).await? else {
                    return Ok(None);
                };
                let Some(rows) = span.of(&block) else {
                    return Ok(None);
                };
                out.push(view.apply(&rows, columns)?);
            }
            return Ok(Some(out));
        }
        let names: Vec<&str> = columns.iter().map(|&c| view.source_name(c)).collect();
        for span in file_spans(snapshot, offset, want) {
            let Some(batches) = self
                .read_rows(span.url, span.file_rows, span.from, span.n, Some(&names))
                .await?
            else {
                return Ok(None);
            };
            for raw in batches {
                out.push(view.apply(&raw, columns)?);
            }
        }
        Ok(Some(out))
    }

    /// Block `index` of the file at `url` (of `rows` rows), every column as stored, from the
    /// cache or decoded into it.
    async fn block(
        &self,
        url: &str,
        rows: u64,
        index: u64,
    ) -> Result<Option<RecordBatch>, QueryError> {
        let slot = self.slot(CacheKey::Block {
            url: url.to_string(),
            index,
        });
        self.load_or_hit(slot, || async {
            let block_rows = self.limits.block_rows.max(1);
            let start = index * block_rows;
            let n = block_rows.min(rows.saturating_sub(start));
            let Some(batches) = self.read_rows(url, rows, start, n, None).await? else {
                return Ok(None);
            };
            let Some(first) = batches.first() else {
                return Ok(None);
            };
            concat_batches(&first.schema(), &batches)
                .map(Some)
                .map_err(|e| QueryError::Internal(e.to_string()))
        })
        .await
    }

    /// Rows `[start, start + n)` of the file at `url` (of `rows` rows, as the catalog says), in
    /// the columns named (all when `None`), decoding only the pages that hold them. `None`
    /// when the file does not have `rows` rows.
    async fn read_rows(
        &self,
        url: &str,
        rows: u64,
        start: u64,
        n: u64,
        names: Option<&[&str]>,
    ) -> Result<Option<Vec<RecordBatch>>, QueryError> {
        let err = QueryError::from_parquet;
        let (reader, metadata) = self.open(url).await?;
        if metadata.metadata().file_metadata().num_rows() as u64 != rows {
            return Ok(None);
        }
        // The row groups holding [start, start + n), and where the first one starts.
        let (mut groups, mut first_start, mut group_start) = (Vec::new(), None, 0u64);
        for (i, group) in metadata.metadata().row_groups().iter().enumerate() {
            let group_end = group_start + group.num_rows() as u64;
            if group_end > start && group_start < start + n {
                groups.push(i);
                first_start.get_or_insert(group_start);
            }
            group_start = group_end;
        }
        let skip = start - first_start.unwrap_or(0);
        let mut selectors = Vec::with_capacity(2);
        if skip > 0 {
            selectors.push(RowSelector::skip(skip as usize));
        }
        selectors.push(RowSelector::select(n as usize));
        let mask = match names {
            Some(names) => {
                let file_schema = metadata.schema().clone();
                let roots: Vec<usize> = names
                    .iter()
                    .filter_map(|name| file_schema.index_of(name).ok())
                    .collect();
                ProjectionMask::roots(metadata.parquet_schema(), roots)
            }
            None => ProjectionMask::all(),
        };
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
            .with_row_groups(groups)
            .with_row_selection(RowSelection::from(selectors))
            .with_projection(mask)
            .with_batch_size((n as usize).clamp(1, 8192))
            .build()
            .map_err(err)?;
        Ok(Some(stream.try_collect().await.map_err(err)?))
    }

    /// The metadata of the file at `url`, with its page indexes (cached).
    pub(crate) async fn metadata(&self, url: &str) -> Result<ArrowReaderMetadata, QueryError> {
        Ok(self.open(url).await?.1)
    }

    /// A reader of the file at `url` and its metadata with page indexes (cached).
    async fn open(&self, url: &str) -> Result<(StoreReader, ArrowReaderMetadata), QueryError> {
        let parsed = url::Url::parse(url).map_err(|e| QueryError::Internal(e.to_string()))?;
        let path = StorePath::from_url_path(parsed.path())
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let mut reader = StoreReader {
            store: self.store.clone(),
            path,
        };
        let known = self
            .metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned();
        let metadata = match known {
            Some(m) => m,
            None => {
                let options =
                    ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
                let m = Arc::new(
                    ArrowReaderMetadata::load_async(&mut reader, options)
                        .await
                        .map_err(QueryError::from_parquet)?,
                );
                let mut cache = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= METADATA_ENTRIES {
                    cache.clear();
                }
                cache.insert(url.to_string(), m.clone());
                m
            }
        };
        Ok((reader, metadata.as_ref().clone()))
    }
}

/// Rows `[from, from + n)` of a file's block `index` (or of the whole file, as `file_spans`
/// gives them), the file at `url` having `file_rows` rows as the catalog says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span<'a> {
    url: &'a str,
    file_rows: u64,
    index: u64,
    from: u64,
    n: u64,
}

impl Span<'_> {
    /// The span's rows of its decoded block; `None` when the block is shorter than the catalog's
    /// row counts make it (the file is not what the catalog says).
    fn of(&self, block: &RecordBatch) -> Option<RecordBatch> {
        (self.n > 0 && self.from + self.n <= block.num_rows() as u64)
            .then(|| block.slice(self.from as usize, self.n as usize))
    }
}

/// The runs of each file holding `want` rows from row `offset` of the version in storage
/// order (by the catalog's per-file row counts); `index` is 0.
fn file_spans(snapshot: &TableSnapshot, offset: u64, want: u64) -> Vec<Span<'_>> {
    let mut out = Vec::new();
    let (mut file_start, mut position, mut remaining) = (0u64, offset, want);
    for (url, &rows) in snapshot.file_urls.iter().zip(&snapshot.file_rows) {
        if remaining == 0 {
            break;
        }
        let file_end = file_start + rows;
        if position < file_end {
            let from = position - file_start;
            let n = remaining.min(rows - from);
            out.push(Span {
                url,
                file_rows: rows,
                index: 0,
                from,
                n,
            });
            remaining -= n;
            position += n;
        }
        file_start = file_end;
    }
    out
}

/// The same rows as [`file_spans`], cut at the files' blocks of `block_rows` rows.
fn block_spans(snapshot: &TableSnapshot, block_rows: u64, offset: u64, want: u64) -> Vec<Span<'_>> {
    let block_rows = block_rows.max(1);
    let mut out = Vec::new();
    for file in file_spans(snapshot, offset, want) {
        let (mut at, end) = (file.from, file.from + file.n);
        while at < end {
            let index = at / block_rows;
            let block_end = ((index + 1) * block_rows).min(file.file_rows);
            let n = end.min(block_end) - at;
            out.push(Span {
                index,
                from: at - index * block_rows,
                n,
                ..file
            });
            at += n;
        }
    }
    out
}

/// The rows `[start, start + len)` of `rows` rows that `want` rows from `offset` cover.
fn window(rows: usize, offset: u64, want: u64) -> (usize, usize) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(rows);
    let len = usize::try_from(want)
        .unwrap_or(usize::MAX)
        .min(rows - start);
    (start, len)
}

/// The sort columns of `sorts` (plain columns) over `batch`.
fn sort_columns(batch: &RecordBatch, sorts: &[SortExpr]) -> Option<Vec<SortColumn>> {
    sorts
        .iter()
        .map(|s| {
            let Expr::Column(c) = &s.expr else {
                return None;
            };
            let index = batch.schema().index_of(&c.name).ok()?;
            Some(SortColumn {
                values: batch.column(index).clone(),
                options: Some(SortOptions {
                    descending: !s.asc,
                    nulls_first: s.nulls_first,
                }),
            })
        })
        .collect()
}

/// `batch` with only the `select`ed columns, in that order.
fn project(batch: &RecordBatch, select: Option<&[String]>) -> Result<RecordBatch, QueryError> {
    let Some(names) = select else {
        return Ok(batch.clone());
    };
    let indices = names
        .iter()
        .map(|n| batch.schema().index_of(n))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|i| batch.project(&i))
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    Ok(indices)
}

/// What a reader sees of a dataset's table, as `DatasetTable::for_reader` defines it: every
/// column, or masked columns through their masks and no private ones.
struct View {
    /// The table's declared columns (the files are read into these types).
    raw: SchemaRef,
    /// The reader's columns.
    out: SchemaRef,
    /// For each of `out`: its column in `raw` and the mask computing it, if masked.
    columns: Vec<(usize, Option<Arc<dyn PhysicalExpr>>)>,
    /// Tells views apart in the cache.
    tag: String,
}

impl View {
    fn new(
        snapshot: &TableSnapshot,
        key: &MaskKey,
        state: &SessionState,
    ) -> Result<Self, QueryError> {
        let raw = snapshot.schema();
        let restricted = snapshot.restricted();
        let internal = |e: datafusion::error::DataFusionError| QueryError::Internal(e.to_string());
        // Only masked columns need the schema as DataFusion sees it (built once, if at all).
        let mut raw_df = None;
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (i, c) in snapshot.columns.iter().enumerate() {
            let raw_field = raw.field(i);
            if !restricted {
                fields.push(raw_field.clone());
                columns.push((i, None));
                continue;
            }
            match masking::outside_view(c.sensitivity, c.mask) {
                None => {}
                Some(None) => {
                    fields.push(raw_field.clone());
                    columns.push((i, None));
                }
                Some(Some(mask)) => {
                    let column = Expr::Column(datafusion::common::Column::new_unqualified(&c.name));
                    let expr = masking::masked_expr(column, raw_field.data_type(), mask, key);
                    let physical = state
                        .create_physical_expr(
                            expr,
                            match &raw_df {
                                Some(df) => df,
                                None => raw_df.insert(
                                    DFSchema::try_from(raw.as_ref().clone()).map_err(internal)?,
                                ),
                            },
                        )
                        .map_err(internal)?;
                    let data_type = physical.data_type(&raw).map_err(internal)?;
                    fields.push(Field::new(&c.name, data_type, true));
                    columns.push((i, Some(physical)));
                }
            }
        }
        Ok(Self {
            raw,
            out: Arc::new(Schema::new(fields)),
            columns,
            tag: snapshot.view_tag(),
        })
    }

    /// The columns `select` names, checked against what the reader sees (`None`: all).
    fn select(&self, request: &RowsRequest) -> Result<Option<Vec<String>>, QueryError> {
        request
            .select()
            .map(|text| rows::parse_select(text, &self.out).map_err(|e| e.in_parameter("select")))
            .transpose()
    }

    /// The view's column numbers of `select`ed names (all columns when `None`).
    fn columns_of(&self, select: Option<&[String]>) -> Result<Vec<usize>, QueryError> {
        match select {
            Some(names) => names
                .iter()
                .map(|n| self.out.index_of(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| QueryError::Internal(e.to_string())),
            None => Ok((0..self.out.fields().len()).collect()),
        }
    }

    /// The name in the files of the column behind the view's column `i`.
    fn source_name(&self, i: usize) -> &str {
        self.raw.field(self.columns[i].0).name()
    }

    /// The schema of the view's `columns`.
    fn projected(&self, columns: &[usize]) -> SchemaRef {
        Arc::new(Schema::new(
            columns
                .iter()
                .map(|&c| self.out.field(c).clone())
                .collect::<Vec<_>>(),
        ))
    }

    /// The view's `columns` of rows read from a file (in the file's types, with any subset of
    /// the table's columns): cast to the table's types, missing columns null (as DataFusion
    /// adapts files to a table's schema), then masked.
    fn apply(
        &self,
        file_batch: &RecordBatch,
        columns: &[usize],
    ) -> Result<RecordBatch, QueryError> {
        let internal = |e: String| QueryError::Internal(e);
        let rows = file_batch.num_rows();
        let needed: Vec<usize> = columns.iter().map(|&c| self.columns[c].0).collect();
        let raw_columns: Vec<ArrayRef> = self
            .raw
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let found = needed
                    .contains(&i)
                    .then(|| file_batch.column_by_name(field.name()))
                    .flatten();
                match found {
                    Some(a) if a.data_type() == field.data_type() => Ok(a.clone()),
                    Some(a) => cast(a, field.data_type()).map_err(|e| e.to_string()),
                    None => Ok(new_null_array(field.data_type(), rows)),
                }
            })
            .collect::<Result<_, _>>()
            .map_err(internal)?;
        let raw = RecordBatch::try_new(self.raw.clone(), raw_columns)
            .map_err(|e| internal(e.to_string()))?;
        let out = columns
            .iter()
            .map(|&c| match &self.columns[c] {
                (i, None) => Ok(raw.column(*i).clone()),
                (_, Some(mask)) => mask
                    .evaluate(&raw)
                    .and_then(|v| v.into_array(rows))
                    .map_err(|e| e.to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        // With the row count: a caller who sees no column of the dataset still gets its rows
        // (as empty objects), as SQL and exports answer them.
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.projected(columns), out, &options)
            .map_err(|e| internal(e.to_string()))
    }
}

/// Reads a Parquet file's byte ranges from the warehouse's object store.
struct StoreReader {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
}

fn store_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_via_suffix_and_finish(self)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

impl MetadataSuffixFetch for &mut StoreReader {
    fn fetch_suffix(&mut self, suffix: usize) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let options = GetOptions {
            range: Some(GetRange::Suffix(suffix as u64)),
            ..Default::default()
        };
        async move {
            let found = self
                .store
                .get_opts(&self.path, options)
                .await
                .map_err(store_error)?;
            found.bytes().await.map_err(store_error)
        }
        .boxed()
    }
}
