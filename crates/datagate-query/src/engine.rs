//! Building per-request query sessions over the catalog.
//!
//! Every request gets its own DataFusion `SessionContext`: its only catalog is `datagate`,
//! holding the datasets the principal may read; its memory pool is the per-query limit; nothing
//! spills to disk; no URL tables and no table functions exist. The shared parts (object stores,
//! the Parquet metadata and statistics caches) come from one base runtime.

use crate::bloom_cache::{self, BloomCache, BloomCacheExtension};
use crate::catalog_provider::{DatagateCatalog, Resolver, TableSnapshot};
use crate::complexity::Complexity;
use crate::distributed::Distribution;
use crate::executor::QueryExecutor;
use crate::masking::MaskKey;
use crate::pages::{PageCacheLimits, PageServer};
use crate::policy::Principal;
use crate::size_caps::{self, SizeCaps};
use crate::{CATALOG_NAME, QueryError};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProviderList};
use datafusion::common::config::ConfigNonZeroUsize;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::Cache;
use datafusion::execution::cache::TableScopedPath;
use datafusion::execution::cache::cache_manager::{
    CacheManagerConfig, CachedFileList, CachedFileMetadata, CachedFileMetadataEntry,
    DEFAULT_FILE_STATISTICS_MEMORY_LIMIT, DEFAULT_LIST_FILES_CACHE_MEMORY_LIMIT,
    DEFAULT_LIST_FILES_CACHE_TTL, DEFAULT_METADATA_CACHE_LIMIT,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use datagate_catalog::{CatalogStore, Dataset, DatasetFilter};
use datagate_core::AccessLevel;
use datagate_core::config::LimitsConfig;
use object_store::ObjectStore;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The limits every query runs under (config `[limits]`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryLimits {
    pub max_page_rows: u64,
    pub max_query_rows: u64,
    pub memory_bytes: u64,
    pub timeout: Duration,
    /// `None`: exports may run as long as they stream.
    pub export_timeout: Option<Duration>,
    pub max_sql_bytes: usize,
    pub max_expr_depth: usize,
    /// What a statement may hold before it is planned.
    pub complexity: Complexity,
    /// What string functions may build.
    pub size_caps: SizeCaps,
    /// Cost budgets checked before a plan runs (already multiplied by the caller's tier).
    pub max_join_pairs: u64,
    pub max_sort_rows: u64,
    pub max_recursion_depth: u64,
}

impl QueryLimits {
    /// These limits with the cost budgets multiplied by a tier's `query_budget`.
    pub fn with_budget(mut self, multiplier: u64) -> Self {
        let m = multiplier.max(1);
        self.max_join_pairs = self.max_join_pairs.saturating_mul(m);
        self.max_sort_rows = self.max_sort_rows.saturating_mul(m);
        self.max_recursion_depth = self.max_recursion_depth.saturating_mul(m);
        self
    }
}

impl From<&LimitsConfig> for QueryLimits {
    fn from(c: &LimitsConfig) -> Self {
        Self {
            max_page_rows: c.max_page_rows,
            max_query_rows: c.max_query_rows,
            memory_bytes: c.query_memory_bytes,
            timeout: Duration::from_millis(c.query_timeout_ms),
            export_timeout: (c.export_timeout_secs > 0)
                .then(|| Duration::from_secs(c.export_timeout_secs)),
            max_sql_bytes: c.max_sql_bytes,
            max_expr_depth: c.max_expr_depth.max(1),
            complexity: Complexity {
                max_logic_depth: c.max_logic_depth.max(1),
                max_expr_nodes: c.max_expr_nodes.max(1),
                max_tables: c.max_statement_tables.max(1),
                max_ctes: c.max_statement_ctes,
                max_selects: c.max_statement_selects.max(1),
            },
            size_caps: SizeCaps {
                value_bytes: c.max_value_bytes,
                batch_bytes: c.max_batch_bytes,
            },
            max_join_pairs: c.max_join_pairs,
            max_sort_rows: c.max_sort_rows,
            max_recursion_depth: c.max_recursion_depth,
        }
    }
}

impl Default for QueryLimits {
    fn default() -> Self {
        (&LimitsConfig::default()).into()
    }
}

/// Shared state from which request sessions are built.
#[derive(Clone)]
pub struct QueryEngine {
    catalog: Arc<dyn CatalogStore>,
    resolver: Resolver,
    runtime: Arc<RuntimeEnv>,
    /// DataFusion's caches, held to report what they hold.
    caches: EngineCaches,
    limits: QueryLimits,
    /// Functions, planners and rules registered once; each request starts from a clone.
    base_state: SessionState,
    executor: QueryExecutor,
    /// Pages served without planning (`crate::pages`).
    pages: Arc<PageServer>,
    root_store: Arc<dyn ObjectStore>,
    /// Workers that heavy plans fan out to (`query.workers`).
    distribution: Option<Arc<Distribution>>,
}

/// One request's DataFusion session and the limits it runs under.
pub struct RequestSession {
    pub ctx: SessionContext,
    pub limits: QueryLimits,
    /// Whether the caller may see the engine's internals (file paths in `EXPLAIN`, engine
    /// settings): admins only.
    pub internals: bool,
    /// Where heavy plans of this session may run besides the gateway; `None` for sessions whose
    /// rows must come in file order.
    pub distribution: Option<Arc<Distribution>>,
    /// The engine's page server: its cache of Parquet metadata and page indexes
    /// ([`crate::top_n`] reads the page statistics there).
    pub pages: Arc<PageServer>,
    /// For an export in storage order: how its scan is cut into units decoded side by side
    /// ([`crate::in_order`]).
    pub in_order: Option<crate::in_order::InOrder>,
}

impl RequestSession {
    /// The session of an export in storage order whose scan is decoded in units on their
    /// lane ([`crate::in_order`]); only for a session made `ordered`.
    pub fn decoding_in_units(mut self, in_order: crate::in_order::InOrder) -> Self {
        self.in_order = Some(in_order);
        self
    }

    /// The session with the cost budgets of a tier's `query_budget`, and internals shown or not.
    pub fn for_caller(mut self, query_budget: u64, internals: bool) -> Self {
        self.limits = self.limits.with_budget(query_budget);
        self.internals = internals;
        self
    }
}

/// DataFusion's caches of file metadata (Parquet footers and page indexes), file statistics
/// and listings, made here with DataFusion's default limits so that their sizes can be
/// reported (`datagate_query_cache_bytes`): they fill as new files are read (every upload
/// and every converted audit segment adds some) and stop at their limits.
#[derive(Clone)]
struct EngineCaches {
    metadata: Arc<DefaultCache<object_store::path::Path, CachedFileMetadataEntry>>,
    statistics: Arc<DefaultCache<TableScopedPath, CachedFileMetadata>>,
    listings: Arc<DefaultCache<TableScopedPath, CachedFileList>>,
    /// Bloom filters of dataset files ([`crate::bloom_cache`]).
    bloom_filters: Arc<BloomCache>,
}

impl Default for EngineCaches {
    fn default() -> Self {
        Self {
            metadata: Arc::new(
                DefaultCache::new(DEFAULT_METADATA_CACHE_LIMIT).with_name("parquet_metadata"),
            ),
            statistics: Arc::new(
                DefaultCache::new(DEFAULT_FILE_STATISTICS_MEMORY_LIMIT)
                    .with_name("file_statistics"),
            ),
            listings: Arc::new(
                DefaultCache::new_with_ttl(
                    DEFAULT_LIST_FILES_CACHE_MEMORY_LIMIT,
                    DEFAULT_LIST_FILES_CACHE_TTL,
                )
                .with_name("listings"),
            ),
            bloom_filters: bloom_cache::new_cache(bloom_cache::DEFAULT_BLOOM_CACHE_BYTES),
        }
    }
}

impl EngineCaches {
    fn config(&self) -> CacheManagerConfig {
        CacheManagerConfig::default()
            .with_file_metadata_cache(Some(self.metadata.clone()))
            .with_file_statistics_cache(Some(self.statistics.clone()))
            .with_list_files_cache(Some(self.listings.clone()))
    }
}

/// Whether `principal` reads a dataset (in its catalog), and if so whether it sees every
/// column (its own department's private ones too).
fn reads_and_sees_all(principal: &Principal) -> impl Fn(&Dataset) -> Option<bool> + '_ {
    move |d| {
        principal
            .reads(d)
            .then(|| principal.sees_private(&d.department))
    }
}

impl QueryEngine {
    /// Sets `datagate_query_cache_bytes{cache}` to what DataFusion's caches hold now (and
    /// `datagate_query_cache_limit_bytes{cache}` to their limits).
    pub fn report_caches(&self) {
        let c = &self.caches;
        for (name, used, limit) in [
            (
                "parquet_metadata",
                c.metadata.memory_used(),
                c.metadata.cache_limit(),
            ),
            (
                "file_statistics",
                c.statistics.memory_used(),
                c.statistics.cache_limit(),
            ),
            (
                "listings",
                c.listings.memory_used(),
                c.listings.cache_limit(),
            ),
            (
                "bloom_filters",
                c.bloom_filters.memory_used(),
                c.bloom_filters.cache_limit(),
            ),
        ] {
            metrics::gauge!("datagate_query_cache_bytes", "cache" => name).set(used as f64);
            metrics::gauge!("datagate_query_cache_limit_bytes", "cache" => name).set(limit as f64);
        }
    }

    /// `root_store` serves the warehouse URL's scheme and authority.
    pub fn new(
        catalog: Arc<dyn CatalogStore>,
        warehouse_url: Url,
        root_store: Arc<dyn ObjectStore>,
        limits: QueryLimits,
        mask_key: MaskKey,
        executor: QueryExecutor,
    ) -> Result<Self, QueryError> {
        let caches = EngineCaches::default();
        let runtime = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .with_cache_manager(caches.config())
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let mut base = warehouse_url.clone();
        base.set_path("/");
        runtime.register_object_store(&base, root_store.clone());
        let mut base_state = SessionStateBuilder::new()
            .with_config(Self::session_config(&limits))
            .with_runtime_env(runtime.clone())
            .with_default_features()
            // No table functions: nothing reads files or generates rows outside the catalog.
            .with_table_functions(HashMap::new())
            .build();
        size_caps::register(&mut base_state, limits.size_caps)
            .and_then(|()| crate::checked_arithmetic::register(&mut base_state))
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let pages = Arc::new(PageServer::new(
            root_store.clone(),
            base_state.clone(),
            mask_key.clone(),
            PageCacheLimits::default(),
        ));
        Ok(Self {
            pages,
            root_store,
            base_state,
            executor,
            resolver: Resolver {
                catalog: catalog.clone(),
                warehouse_url,
                mask_key,
            },
            catalog,
            runtime,
            caches,
            limits,
            distribution: None,
        })
    }

    /// The engine with heavy plans fanned out to `distribution`'s workers.
    pub fn with_distribution(mut self, distribution: Option<Arc<Distribution>>) -> Self {
        self.distribution = distribution;
        self
    }

    /// The workers heavy plans fan out to, if any.
    pub fn distribution(&self) -> Option<&Arc<Distribution>> {
        self.distribution.as_ref()
    }

    /// The engine keeping at most `bytes` of bloom filters between queries
    /// (`query.bloom_cache_bytes`; 0: none kept, every lookup reads them).
    pub fn with_bloom_cache(mut self, bytes: usize) -> Self {
        self.caches.bloom_filters = bloom_cache::new_cache(bytes);
        self
    }

    /// The engine with the page cache sized as configured (`query.page_cache_*`).
    pub fn with_page_cache(mut self, limits: PageCacheLimits) -> Self {
        self.pages = Arc::new(PageServer::new(
            self.root_store.clone(),
            self.base_state.clone(),
            self.resolver.mask_key.clone(),
            limits,
        ));
        self
    }

    /// Pages served without planning.
    pub fn pages(&self) -> Arc<PageServer> {
        self.pages.clone()
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// The pools every plan is planned and executed on.
    pub fn executor(&self) -> &QueryExecutor {
        &self.executor
    }

    /// A catalog of the published datasets of the given open levels, each at its current
    /// version (resolved when a query names it).
    pub async fn catalog_snapshot(
        &self,
        visible: &[AccessLevel],
    ) -> Result<DatagateCatalog, QueryError> {
        self.catalog_where(visible, |_| Some(true)).await
    }

    /// The catalog of everything `principal` may read, at current versions.
    pub async fn readable_catalog(
        &self,
        principal: &Principal,
    ) -> Result<DatagateCatalog, QueryError> {
        self.catalog_where(&principal.visible_levels(), reads_and_sees_all(principal))
            .await
    }

    /// The catalog `principal` plans the statement `sql` in: the datasets it names alone
    /// ([`crate::sql::tables_named`]), so planning costs the same however many datasets the
    /// catalog holds (listing 5,000 took about 50 ms a statement); everything the principal may
    /// read when the statement reads the information schema or names a table otherwise.
    pub async fn readable_catalog_for(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<DatagateCatalog, QueryError> {
        let Some(named) = crate::sql::tables_named(sql, &self.limits) else {
            let catalog = self.readable_catalog(principal).await?;
            if crate::sql::reads_every_table(sql, &self.limits) {
                // DataFusion resolves them one by one: their versions read together first.
                catalog.resolve_all().await?;
            }
            return Ok(catalog);
        };
        let mut datasets = Vec::new();
        for (department, name) in named {
            // What the listing of `readable_catalog` would hold of it.
            if let Some(d) = self.catalog.get_dataset(&department, &name).await?
                && d.unpublished_at.is_none()
                && principal.sees_entry(d.metadata.access_level)
            {
                datasets.push(d);
            }
        }
        // Schemas of the named departments alone: the planner asks for no other, and a table
        // of a department it lacks is "not found" as one the department lacks.
        let departments: Vec<String> = datasets.iter().map(|d| d.department.clone()).collect();
        Ok(self.catalog_of(departments, datasets, reads_and_sees_all(principal)))
    }

    /// The departments of `principal`'s catalog ([`QueryEngine::readable_catalog`]'s schemas),
    /// without listing their datasets.
    pub async fn readable_departments(
        &self,
        principal: &Principal,
    ) -> Result<Vec<String>, QueryError> {
        self.departments_at(&principal.visible_levels()).await
    }

    async fn departments_at(&self, visible: &[AccessLevel]) -> Result<Vec<String>, QueryError> {
        Ok(self
            .catalog
            .list_departments(visible)
            .await?
            .into_iter()
            .map(|d| d.department.id)
            .collect())
    }

    async fn catalog_where(
        &self,
        visible: &[AccessLevel],
        keep: impl Fn(&Dataset) -> Option<bool>,
    ) -> Result<DatagateCatalog, QueryError> {
        let page = self
            .catalog
            .list_datasets(&DatasetFilter {
                visible_levels: visible.to_vec(),
                limit: u64::MAX,
                ..Default::default()
            })
            .await?;
        let departments = self.departments_at(visible).await?;
        Ok(self.catalog_of(departments, page.datasets, keep))
    }

    /// The catalog of `datasets` that `keep` keeps, in `departments` (schemas even when empty).
    fn catalog_of(
        &self,
        departments: impl IntoIterator<Item = String>,
        datasets: Vec<Dataset>,
        keep: impl Fn(&Dataset) -> Option<bool>,
    ) -> DatagateCatalog {
        // `keep` says whether a dataset is in, and whether its reader sees every column.
        let datasets = datasets
            .into_iter()
            .filter_map(|d| keep(&d).map(|all| (d, all)))
            .collect();
        DatagateCatalog::lazy(departments, datasets, &self.resolver)
    }

    /// The one dataset a `rows` or `export` request reads, at `version` (current when `None`):
    /// 404 when the principal may not see it (or it or the version does not exist), 403 when it
    /// sees it but may not read its data.
    pub async fn readable_dataset(
        &self,
        principal: &Principal,
        department: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<(Dataset, TableSnapshot), QueryError> {
        let not_found = || QueryError::NotFound(format!("dataset {department}/{name} not found"));
        let dataset = self
            .catalog
            .get_dataset(department, name)
            .await?
            .filter(|d| d.unpublished_at.is_none())
            .filter(|d| principal.sees_entry(d.metadata.access_level))
            .ok_or_else(not_found)?;
        if !principal.reads(&dataset) {
            return Err(QueryError::Forbidden(format!(
                "the data of {department}/{name} is {}: reading it needs an approved application",
                dataset.metadata.access_level.as_str()
            )));
        }
        let snapshot = self
            .resolver
            .snapshot(&dataset, version, principal.sees_private(department))
            .await?
            .ok_or_else(|| {
                QueryError::NotFound(format!(
                    "version {} of {department}/{name} not found",
                    version.unwrap_or_default()
                ))
            })?;
        Ok((dataset, snapshot))
    }

    /// The catalog of one resolved dataset (a `rows` or `export` request).
    pub fn dataset_catalog(&self, snapshot: &TableSnapshot) -> DatagateCatalog {
        DatagateCatalog::new(
            [snapshot.department.clone()],
            vec![snapshot.clone()],
            &self.resolver.mask_key,
        )
    }

    /// A request session over `catalog`, under the configured limits. `ordered` asks for one
    /// partition so rows come in file order (stable paging without a sort key).
    pub fn request_session(
        &self,
        catalog: DatagateCatalog,
        ordered: bool,
    ) -> Result<RequestSession, QueryError> {
        self.request_session_over(Arc::new(catalog), ordered)
    }

    /// [`QueryEngine::request_session`] over any catalog (the audit log's `audit.events`).
    /// Makes the object store `store` readable by queries at `base` (a URL's scheme and
    /// authority), beside the warehouse: e.g. the audit archive other gateways' records are in.
    pub fn register_store(&self, base: &Url, store: Arc<dyn ObjectStore>) {
        self.runtime.register_object_store(base, store);
    }

    pub fn request_session_over(
        &self,
        catalog: Arc<dyn CatalogProvider>,
        ordered: bool,
    ) -> Result<RequestSession, QueryError> {
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(self.limits.memory_bytes as usize),
            NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        );
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.runtime)
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let mut config = self.config();
        if ordered {
            config = config
                .with_target_partitions(1)
                .with_repartition_file_scans(false);
            // With statistics, a scan under a LIMIT keeps only the first files whose row counts
            // cover it — first in the order their metadata arrived, which is not storage order
            // (DataFusion lists and stats files concurrently, then sorts the kept ones by path).
            // Without them, every file is kept, sorted by path, and read in turn until the
            // limit is met.
            config.options_mut().execution.collect_statistics = false;
        }
        Ok(RequestSession {
            ctx: self.context(config, runtime, catalog),
            limits: self.limits.clone(),
            internals: false,
            // Distributed stages interleave their tasks' rows: file order would be lost.
            distribution: (!ordered).then(|| self.distribution.clone()).flatten(),
            pages: self.pages.clone(),
            in_order: None,
        })
    }

    /// A session over `catalog` without per-request limits (tests, tools).
    pub fn session(&self, catalog: DatagateCatalog) -> SessionContext {
        self.context(self.config(), self.runtime.clone(), Arc::new(catalog))
    }

    fn config(&self) -> SessionConfig {
        let config = Self::session_config(&self.limits);
        if self.caches.bloom_filters.cache_limit() == 0 {
            return config;
        }
        config.with_extension(Arc::new(BloomCacheExtension(
            self.caches.bloom_filters.clone(),
        )))
    }

    fn session_config(limits: &QueryLimits) -> SessionConfig {
        let mut config = SessionConfig::new()
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG_NAME, "public")
            .with_information_schema(true);
        let options = config.options_mut();
        // DataFusion sizes these by the calling thread's CPU mask, which on a serving thread
        // kept on its own core is one.
        let cores = datagate_core::threads::cores();
        options.execution.target_partitions = cores;
        options.execution.planning_concurrency = cores;
        let depth = limits.max_expr_depth;
        if let Ok(limit) = ConfigNonZeroUsize::try_new(depth) {
            options.sql_parser.recursion_limit = limit;
        }
        options.sql_parser.collect_spans = true;
        // API types are utf8: keep casts and string literals out of the view types.
        options.sql_parser.map_string_types_to_utf8view = false;
        options.execution.parquet.schema_force_view_types = false;
        config
    }

    fn context(
        &self,
        config: SessionConfig,
        runtime: Arc<RuntimeEnv>,
        catalog: Arc<dyn CatalogProvider>,
    ) -> SessionContext {
        // A fresh catalog list per request: the base state's must never hold a request's catalog.
        let state = SessionStateBuilder::new_from_existing(self.base_state.clone())
            .with_config(config)
            .with_runtime_env(runtime)
            .with_catalog_list(Arc::new(MemoryCatalogProviderList::new()))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_catalog(CATALOG_NAME, catalog);
        ctx
    }
}
