//! Bloom filters of the warehouse's Parquet files, kept in memory between queries.
//!
//! A point lookup by primary key (`WHERE uscc = '...'`) cannot be narrowed by row-group
//! statistics when the key is not the storage order, so DataFusion reads the key column's bloom
//! filter of every row group to find the one that may hold it: about 40 filters of a few hundred
//! KB for 10M rows, read again from the store by every lookup (one request each on S3). The files
//! of a version never change, so a filter read once is kept here, bounded in bytes (least
//! recently used first out), and later lookups take it from memory.
//!
//! [`BloomCachingReaderFactory`] is the Parquet reader factory of dataset scans
//! ([`scans_through_cache`] puts it into a scan's plan); its readers answer a byte range that is
//! exactly a bloom filter of the file (by the file's metadata) from the cache, and every other
//! range from the store as before.

use bytes::Bytes;
use datafusion::catalog::Session;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::cache::{Cache, CacheKey, CacheValue};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use std::ops::Range;
use std::sync::Arc;

/// Bytes of bloom filters kept by default: the filters of one 10M-row dataset's key column
/// take about 20 MiB.
pub const DEFAULT_BLOOM_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A bloom filter's place: the file and the byte range of the filter in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BloomKey {
    path: Path,
    start: u64,
    end: u64,
}

impl CacheKey for BloomKey {
    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.path.as_ref().len()
    }

    fn table_ref(&self) -> Option<&TableReference> {
        None
    }
}

/// A bloom filter as stored (header and bitset).
#[derive(Clone, Debug)]
pub struct BloomBytes(Bytes);

impl CacheValue for BloomBytes {
    fn size(&self) -> usize {
        self.0.len()
    }
}

/// The cache of bloom filters, shared by every session of an engine.
pub type BloomCache = DefaultCache<BloomKey, BloomBytes>;

/// A new cache holding at most `bytes` of filters.
pub fn new_cache(bytes: usize) -> Arc<BloomCache> {
    Arc::new(DefaultCache::new(bytes).with_name("bloom_filters"))
}

/// The cache a session's scans use, carried as a session config extension.
#[derive(Clone)]
pub struct BloomCacheExtension(pub Arc<BloomCache>);

/// `plan` with its Parquet scans reading through [`BloomCachingReaderFactory`], when the
/// session carries a [`BloomCacheExtension`]; otherwise (or for scans of other formats) as it is.
pub fn scans_through_cache(
    plan: Arc<dyn ExecutionPlan>,
    state: &dyn Session,
) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    let Some(cache) = state.config().get_extension::<BloomCacheExtension>() else {
        return Ok(plan);
    };
    let runtime = state.runtime_env().clone();
    plan.transform_up(|node| {
        let any: &dyn ExecutionPlan = node.as_ref();
        let Some(exec) = any.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some((config, parquet)) = exec.downcast_to_file_source::<ParquetSource>() else {
            return Ok(Transformed::no(node));
        };
        // DataFusion's Parquet format gives its scans a reader factory (file metadata from its
        // cache): the bloom filters' one wraps it.
        let inner = match parquet.parquet_file_reader_factory() {
            Some(inner) => inner.clone(),
            None => {
                let store = runtime.object_store(&config.object_store_url)?;
                let metadata = runtime.cache_manager.get_file_metadata_cache();
                Arc::new(CachedParquetFileReaderFactory::new(store, metadata)) as _
            }
        };
        let factory = Arc::new(BloomCachingReaderFactory {
            inner,
            cache: cache.0.clone(),
        });
        let source = parquet.clone().with_parquet_file_reader_factory(factory);
        let config = FileScanConfigBuilder::from(config.clone())
            .with_source(Arc::new(source))
            .build();
        let exec: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        Ok(Transformed::yes(exec))
    })
    .map(|t| t.data)
}

/// A scan's reader factory (DataFusion's: file metadata from its cache) with bloom filters
/// from [`BloomCache`].
pub struct BloomCachingReaderFactory {
    inner: Arc<dyn ParquetFileReaderFactory>,
    cache: Arc<BloomCache>,
}

impl std::fmt::Debug for BloomCachingReaderFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BloomCachingReaderFactory")
            .field("inner", &self.inner)
            .field("cached_bytes", &self.cache.memory_used())
            .finish()
    }
}

impl ParquetFileReaderFactory for BloomCachingReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::common::Result<Box<dyn AsyncFileReader + Send>> {
        let path = partitioned_file.object_meta.location.clone();
        let inner = self.inner.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(BloomCachingReader {
            inner,
            path,
            cache: self.cache.clone(),
            metadata: None,
        }))
    }
}

/// A file's reader that serves its bloom filters from the cache.
struct BloomCachingReader {
    inner: Box<dyn AsyncFileReader + Send>,
    path: Path,
    cache: Arc<BloomCache>,
    /// The file's metadata, once read through this reader (DataFusion reads the bloom filters
    /// through the reader that read the metadata).
    metadata: Option<Arc<ParquetMetaData>>,
}

impl BloomCachingReader {
    /// Whether `range` is exactly one of the file's bloom filters whose length the metadata
    /// records (a reader asks for exactly those; filters written without a length are read in
    /// two steps and not cached).
    fn is_bloom(&self, range: &Range<u64>) -> bool {
        let Some(metadata) = &self.metadata else {
            return false;
        };
        metadata
            .row_groups()
            .iter()
            .flat_map(|rg| rg.columns())
            .any(|c| bloom_range(c).as_ref() == Some(range))
    }
}

/// The byte range of a column chunk's bloom filter, when the metadata records its length.
fn bloom_range(column: &ColumnChunkMetaData) -> Option<Range<u64>> {
    let start = u64::try_from(column.bloom_filter_offset()?).ok()?;
    let len = u64::try_from(column.bloom_filter_length()?).ok()?;
    Some(start..start + len)
}

impl AsyncFileReader for BloomCachingReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        if !self.is_bloom(&range) {
            return self.inner.get_bytes(range);
        }
        let key = BloomKey {
            path: self.path.clone(),
            start: range.start,
            end: range.end,
        };
        if let Some(BloomBytes(bytes)) = self.cache.get(&key) {
            return futures::future::ready(Ok(bytes)).boxed();
        }
        async move {
            let bytes = self.inner.get_bytes(range).await?;
            self.cache.put(&key, BloomBytes(bytes.clone()));
            Ok(bytes)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = self.inner.get_metadata(options).await?;
            self.metadata = Some(metadata.clone());
            Ok(metadata)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// A Parquet file of `groups` row groups of 1,000 rows, keys `k0`.. in an order that defeats
    /// row-group statistics (every group spans the whole key range), with bloom filters on `k`.
    fn write_file(path: &std::path::Path, groups: usize) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .set_column_bloom_filter_enabled("k".into(), true)
            .build();
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(path).unwrap(),
            schema.clone(),
            Some(props),
        )
        .unwrap();
        for g in 0..groups {
            // Group g holds keys g, g + groups, g + 2 * groups, ...: each group's min and max
            // are near the whole file's.
            let ids: Vec<usize> = (0..1000).map(|i| g + i * groups).collect();
            let keys = StringArray::from_iter_values(ids.iter().map(|i| format!("k{i:07}")));
            let values = Int64Array::from_iter_values(ids.iter().map(|&i| i as i64 * 10));
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(keys), Arc::new(values)])
                    .unwrap();
            w.write(&batch).unwrap();
        }
        w.close().unwrap();
    }

    /// A session whose scans may use `cache`, with the file as table `t`.
    async fn session(file: &std::path::Path, cache: &Arc<BloomCache>) -> SessionContext {
        let config =
            SessionConfig::new().with_extension(Arc::new(BloomCacheExtension(cache.clone())));
        let ctx = SessionContext::new_with_config(config);
        ctx.register_parquet("t", file.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        ctx
    }

    async fn lookup(ctx: &SessionContext, key: &str, cached: bool) -> Vec<RecordBatch> {
        let df = ctx
            .sql(&format!("SELECT k, v FROM t WHERE k = '{key}'"))
            .await
            .unwrap();
        let mut plan = df.create_physical_plan().await.unwrap();
        if cached {
            plan = scans_through_cache(plan, &ctx.state()).unwrap();
        }
        collect(plan, ctx.task_ctx()).await.unwrap()
    }

    fn rows(batches: &[RecordBatch]) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for b in batches {
            // The scan may give string views: compare as plain strings.
            let k = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            let k = k.as_any().downcast_ref::<StringArray>().unwrap();
            let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            out.extend(
                k.iter()
                    .map(|k| k.unwrap().to_string())
                    .zip(v.values().iter().copied()),
            );
        }
        out
    }

    fn file_metadata(path: &std::path::Path) -> ParquetMetaData {
        use parquet::file::reader::FileReader;
        let reader =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(path).unwrap())
                .unwrap();
        reader.metadata().clone()
    }

    #[tokio::test]
    async fn a_files_bloom_filters_are_read_once_and_answers_do_not_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.parquet");
        write_file(&file, 8);
        let cache = new_cache(DEFAULT_BLOOM_CACHE_BYTES);
        let ctx = session(&file, &cache).await;

        // Without the cache, for reference; nothing is cached.
        let plain = rows(&lookup(&ctx, "k0004242", false).await);
        assert_eq!(plain, vec![("k0004242".to_string(), 42_420)]);
        assert_eq!(cache.len(), 0);

        // The first lookup through the cache reads every group's filter once and keeps it.
        let first = rows(&lookup(&ctx, "k0004242", true).await);
        assert_eq!(first, plain);
        assert_eq!(cache.len(), 8, "one filter per row group");
        assert!(cache.memory_used() > 0);
        let hits = |c: &BloomCache| c.list_entries().values().map(|e| e.hits).sum::<usize>();
        assert_eq!(hits(&cache), 0);

        // Later lookups (a key present, one absent, one in another group) answer the same as
        // without the cache, with every filter from memory.
        for (key, expected) in [
            ("k0004242", vec![("k0004242".to_string(), 42_420)]),
            // Absent, but within every group's key range: only the filters can tell.
            ("k0004242a", vec![]),
            ("k0000007", vec![("k0000007".to_string(), 70)]),
        ] {
            assert_eq!(rows(&lookup(&ctx, key, true).await), expected, "{key}");
            assert_eq!(rows(&lookup(&ctx, key, false).await), expected, "{key}");
        }
        assert_eq!(cache.len(), 8, "nothing read twice");
        assert_eq!(hits(&cache), 3 * 8, "every filter served from memory");
    }

    #[tokio::test]
    async fn the_cache_keeps_within_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.parquet");
        write_file(&file, 8);
        // Room for about three filters of this file.
        let ranges: Vec<_> = file_metadata(&file)
            .row_groups()
            .iter()
            .flat_map(|rg| rg.columns())
            .filter_map(bloom_range)
            .collect();
        assert_eq!(ranges.len(), 8);
        let limit = 3 * (ranges[0].end - ranges[0].start) as usize + 1024;
        let cache = new_cache(limit);
        let ctx = session(&file, &cache).await;
        let found = rows(&lookup(&ctx, "k0000100", true).await);
        assert_eq!(found, vec![("k0000100".to_string(), 1000)]);
        assert!(
            cache.memory_used() <= limit,
            "{} > {limit}",
            cache.memory_used()
        );
        assert!((1..=3).contains(&cache.len()), "{}", cache.len());
    }
}
