//! The `datagate` catalog provider: departments as schemas, datasets as tables.
//!
//! A [`DatagateCatalog`] is built per request and holds only the datasets that request may read.
//! Tables are resolved lazily: the list of readable datasets comes from one catalog query, and a
//! dataset's version and files are looked up only when a query names it, once per request.

use crate::masking::{self, MaskKey};
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::TableType;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datagate_catalog::{CatalogStore, Column, Dataset};
use datagate_core::Sensitivity;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use tokio::sync::OnceCell;
use url::Url;

/// One dataset at one version, as a table.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub department: String,
    pub name: String,
    /// The pinned version; `None` for a dataset with no data yet (an empty table).
    pub version: Option<i64>,
    pub columns: Vec<Column>,
    /// Absolute URLs of the version's Parquet files, in storage order (by path: the order
    /// DataFusion reads them in, and the order of uploads).
    pub file_urls: Vec<String>,
    /// Rows of each file of `file_urls`, as the catalog recorded them at ingest.
    pub file_rows: Vec<u64>,
    /// Bytes of each file of `file_urls` (what a scan of the whole version reads at most).
    pub file_bytes: Vec<u64>,
    /// The dataset's primary key (its columns carry bloom filters).
    pub primary_key: Vec<String>,
    /// Whether the reader sees every column as published (the owning department, admins);
    /// otherwise masked columns come through their masks and private ones are absent.
    pub sees_all: bool,
}

impl TableSnapshot {
    /// The Arrow schema of the table.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.to_arrow(), true))
                .collect::<Vec<_>>(),
        ))
    }

    /// Whether its reader gets a view (masked columns through their masks, private ones
    /// absent) rather than the columns as stored.
    pub fn restricted(&self) -> bool {
        !self.sees_all
            && self
                .columns
                .iter()
                .any(|c| c.sensitivity != Sensitivity::Public)
    }

    /// Names the view its reader gets: `all` (the columns as stored), or every column's
    /// current sensitivity and mask. Masking a column changes the bytes a version answers with
    /// but not the version, so whatever is keyed by the version (cached pages, entity tags)
    /// is keyed by this too.
    pub fn view_tag(&self) -> String {
        if !self.restricted() {
            return "all".into();
        }
        let mut tag = String::from("restricted");
        for c in &self.columns {
            let _ = write!(tag, "|{}:{:?}:{:?}", c.name, c.sensitivity, c.mask);
        }
        tag
    }

    /// Rows of the version (0 for a dataset with no data yet).
    pub fn rows(&self) -> u64 {
        self.file_rows.iter().sum()
    }

    /// `department.name`, as written in SQL and in `X-Dataset-Versions`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.department, self.name)
    }

    /// The schema DataFusion scans the files with: strings as views
    /// ([`crate::view_types`]).
    pub fn scan_schema(&self) -> SchemaRef {
        let schema = self.schema();
        let fields = schema.fields().iter().map(|f| {
            let t = crate::view_types::scan_type(f.data_type().clone());
            f.as_ref().clone().with_data_type(t)
        });
        Arc::new(Schema::new(fields.collect::<Vec<_>>()))
    }

    fn raw_provider(&self) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        let schema = self.scan_schema();
        if self.file_urls.is_empty() {
            return Ok(Arc::new(EmptyTable::new(schema)));
        }
        let urls = self
            .file_urls
            .iter()
            .map(ListingTableUrl::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(schema);
        Ok(Arc::new(ListingTable::try_new(config)?))
    }
}

/// A dataset's table: the Parquet files of one version, carrying which dataset and version it
/// is so a plan can say what it read (see [`crate::plan_info`]).
#[derive(Debug)]
pub struct DatasetTable {
    snapshot: TableSnapshot,
    inner: Arc<dyn TableProvider>,
}

impl DatasetTable {
    pub fn new(snapshot: TableSnapshot) -> Result<Self, DataFusionError> {
        let inner = snapshot.raw_provider()?;
        Ok(Self { snapshot, inner })
    }

    /// Fails with the store's `NotFound` when a file of the version is missing. DataFusion's
    /// listing takes a missing file for an empty directory and would answer no rows: a
    /// warehouse gone or damaged must be an error (503), never a silently empty dataset.
    async fn require_files(&self, state: &dyn Session) -> Result<(), DataFusionError> {
        let Some(first) = self.snapshot.file_urls.first() else {
            return Ok(());
        };
        let url = ListingTableUrl::parse(first)?;
        let store = state.runtime_env().object_store(&url)?;
        let checks = self.snapshot.file_urls.iter().map(|u| {
            let store = store.clone();
            async move {
                let path = ListingTableUrl::parse(u)?.prefix().clone();
                object_store::ObjectStoreExt::head(store.as_ref(), &path)
                    .await
                    .map(|_| ())
                    .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))
            }
        });
        futures::future::try_join_all(checks).await.map(|_| ())
    }

    /// The table a reader gets: the dataset itself, or — for readers who do not see every
    /// column — a view over it serving masked columns through their masks, without private
    /// columns. The view is inlined into every plan, so nothing above it sees a raw value.
    pub fn for_reader(
        snapshot: TableSnapshot,
        key: &MaskKey,
    ) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        let restricted = snapshot.restricted();
        let columns = snapshot.columns.clone();
        let table = TableReference::full(
            crate::CATALOG_NAME,
            snapshot.department.as_str(),
            snapshot.name.as_str(),
        );
        let raw: Arc<dyn TableProvider> = Arc::new(Self::new(snapshot)?);
        if !restricted {
            return Ok(raw);
        }
        let exprs: Vec<Expr> = columns
            .iter()
            .filter_map(|c| {
                let column = Expr::Column(datafusion::common::Column::new(
                    Some(table.clone()),
                    &c.name,
                ));
                match masking::outside_view(c.sensitivity, c.mask)? {
                    None => Some(column),
                    Some(mask) => Some(
                        masking::masked_expr(column, &c.data_type.to_arrow(), mask, key)
                            .alias(&c.name),
                    ),
                }
            })
            .collect();
        let plan = LogicalPlanBuilder::scan(table, provider_as_source(raw), None)?
            .project(exprs)?
            .build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }

    pub fn snapshot(&self) -> &TableSnapshot {
        &self.snapshot
    }
}

#[async_trait]
impl TableProvider for DatasetTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        self.require_files(state).await?;
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        crate::bloom_cache::scans_through_cache(plan, state)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        self.inner.supports_filters_pushdown(filters)
    }
}

/// Where table files are found: the catalog store and the warehouse URL.
#[derive(Clone)]
pub(crate) struct Resolver {
    pub catalog: Arc<dyn CatalogStore>,
    pub warehouse_url: Url,
    pub mask_key: MaskKey,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("warehouse_url", &self.warehouse_url.as_str())
            .finish()
    }
}

impl Resolver {
    /// The snapshot of `dataset` at `version` (its current version when `None`); `Ok(None)`
    /// when that version does not exist (or was expired by retention).
    pub async fn snapshot(
        &self,
        dataset: &Dataset,
        version: Option<i64>,
        sees_all: bool,
    ) -> Result<Option<TableSnapshot>, crate::QueryError> {
        let Some(v) = version.or(dataset.current_version) else {
            return Ok(Some(TableSnapshot {
                department: dataset.department.clone(),
                name: dataset.name.clone(),
                version: None,
                columns: dataset.columns.clone(),
                file_urls: Vec::new(),
                file_rows: Vec::new(),
                file_bytes: Vec::new(),
                primary_key: dataset.primary_key.clone(),
                sees_all,
            }));
        };
        let found = self
            .catalog
            .get_version(&dataset.department, &dataset.name, v)
            .await?;
        found
            .map(|found| self.snapshot_at(dataset, found, sees_all))
            .transpose()
    }

    /// The snapshot of `dataset` at the version `found`.
    fn snapshot_at(
        &self,
        dataset: &Dataset,
        found: datagate_catalog::Version,
        sees_all: bool,
    ) -> Result<TableSnapshot, crate::QueryError> {
        let mut files = found.files.iter().collect::<Vec<_>>();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let file_urls = files
            .iter()
            .map(|f| {
                self.warehouse_url
                    .join(&f.path)
                    .map(|u| u.to_string())
                    .map_err(|e| crate::QueryError::Internal(format!("bad file path: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let file_rows = files.iter().map(|f| f.rows).collect();
        let file_bytes = files.iter().map(|f| f.bytes).collect();
        // A version fixes names and types; sensitivity and masks are the dataset's current
        // annotations, so a column marked sensitive today is masked in old versions too.
        let columns = found
            .columns
            .into_iter()
            .map(|mut c| {
                if let Some(a) = dataset.columns.iter().find(|a| a.name == c.name) {
                    c.sensitivity = a.sensitivity;
                    c.mask = a.mask;
                }
                c
            })
            .collect();
        Ok(TableSnapshot {
            department: dataset.department.clone(),
            name: dataset.name.clone(),
            version: Some(found.version),
            columns,
            file_urls,
            file_rows,
            file_bytes,
            primary_key: dataset.primary_key.clone(),
            sees_all,
        })
    }
}

/// A table of the catalog: known by its catalog entry, resolved on first use.
#[derive(Debug)]
enum Entry {
    Lazy {
        dataset: Box<Dataset>,
        sees_all: bool,
        resolver: Resolver,
        table: OnceCell<Resolved>,
    },
    Resolved(Resolved),
}

/// A table as its reader gets it, and the snapshot it reads.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub snapshot: TableSnapshot,
    pub provider: Arc<dyn TableProvider>,
}

impl Resolved {
    fn new(snapshot: TableSnapshot, key: &MaskKey) -> Result<Self, DataFusionError> {
        Ok(Self {
            provider: DatasetTable::for_reader(snapshot.clone(), key)?,
            snapshot,
        })
    }
}

impl Entry {
    async fn table(&self) -> Result<Resolved, DataFusionError> {
        match self {
            Entry::Resolved(t) => Ok(t.clone()),
            Entry::Lazy {
                dataset,
                sees_all,
                resolver,
                table,
            } => table
                .get_or_try_init(|| async {
                    let snapshot = resolver
                        .snapshot(dataset, None, *sees_all)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?
                        .ok_or_else(|| {
                            DataFusionError::Execution(format!(
                                "the current version of {}.{} is gone",
                                dataset.department, dataset.name
                            ))
                        })?;
                    Resolved::new(snapshot, &resolver.mask_key)
                })
                .await
                .cloned(),
        }
    }
}

/// Resolves the lazy entries of `entries` not yet resolved whose datasets have a version, their
/// versions read together.
async fn resolve_entries(entries: Vec<&Entry>) -> Result<(), crate::QueryError> {
    let pending: Vec<(&Dataset, bool, &Resolver, &OnceCell<Resolved>, i64)> = entries
        .into_iter()
        .filter_map(|e| match e {
            Entry::Lazy {
                dataset,
                sees_all,
                resolver,
                table,
            } if !table.initialized() => {
                let version = dataset.current_version?;
                Some((dataset.as_ref(), *sees_all, resolver, table, version))
            }
            _ => None,
        })
        .collect();
    let Some((_, _, resolver, _, _)) = pending.first() else {
        return Ok(());
    };
    let keys: Vec<(String, String, i64)> = pending
        .iter()
        .map(|(d, _, _, _, v)| (d.department.clone(), d.name.clone(), *v))
        .collect();
    let found = resolver.catalog.get_versions(&keys).await?;
    for ((dataset, sees_all, resolver, table, _), found) in pending.iter().zip(found) {
        let resolved = found
            .and_then(|found| resolver.snapshot_at(dataset, found, *sees_all).ok())
            .and_then(|snapshot| Resolved::new(snapshot, &resolver.mask_key).ok());
        // Resolved meanwhile by a use of the table: the same version, kept as it is.
        if let Some(resolved) = resolved {
            let _ = table.set(resolved);
        }
    }
    Ok(())
}

/// The `datagate` catalog of one request.
#[derive(Debug, Default)]
pub struct DatagateCatalog {
    schemas: BTreeMap<String, Arc<DepartmentSchema>>,
}

impl DatagateCatalog {
    /// A catalog of resolved table snapshots; `departments` are listed even when empty.
    pub fn new(
        departments: impl IntoIterator<Item = String>,
        tables: Vec<TableSnapshot>,
        key: &MaskKey,
    ) -> Self {
        let mut entries: Vec<(String, String, Entry)> = Vec::new();
        for t in tables {
            let (d, n) = (t.department.clone(), t.name.clone());
            match Resolved::new(t, key) {
                Ok(table) => entries.push((d, n, Entry::Resolved(table))),
                Err(e) => tracing::warn!(error = %e, "table {d}.{n} left out of the catalog"),
            }
        }
        Self::from_entries(departments, entries)
    }

    /// A catalog of `datasets` at their current versions, resolved when first named.
    pub(crate) fn lazy(
        departments: impl IntoIterator<Item = String>,
        datasets: Vec<(Dataset, bool)>,
        resolver: &Resolver,
    ) -> Self {
        let entries = datasets
            .into_iter()
            .map(|(d, sees_all)| {
                (
                    d.department.clone(),
                    d.name.clone(),
                    Entry::Lazy {
                        dataset: Box::new(d),
                        sees_all,
                        resolver: resolver.clone(),
                        table: OnceCell::new(),
                    },
                )
            })
            .collect();
        Self::from_entries(departments, entries)
    }

    fn from_entries(
        departments: impl IntoIterator<Item = String>,
        entries: Vec<(String, String, Entry)>,
    ) -> Self {
        let mut schemas: BTreeMap<String, BTreeMap<String, Entry>> = departments
            .into_iter()
            .map(|d| (d, BTreeMap::new()))
            .collect();
        for (d, n, e) in entries {
            schemas.entry(d).or_default().insert(n, e);
        }
        Self {
            schemas: schemas
                .into_iter()
                .map(|(d, tables)| (d, Arc::new(DepartmentSchema { tables })))
                .collect(),
        }
    }

    /// Resolves every table of this catalog not yet resolved, as [`DatagateCatalog::resolve`].
    pub async fn resolve_all(&self) -> Result<(), crate::QueryError> {
        let entries = self.schemas.values().flat_map(|s| s.tables.values());
        resolve_entries(entries.collect()).await
    }

    /// Resolves the tables `wanted` (department, dataset) of this catalog not yet resolved,
    /// their versions read from the catalog together (one trip where the backend can: resolving
    /// 5,000 datasets one by one took most of a second). A table whose version is gone (or
    /// that fails to resolve) is left as it was, to say so when it is used.
    pub async fn resolve(&self, wanted: &[(String, String)]) -> Result<(), crate::QueryError> {
        let entries = wanted.iter().filter_map(|(department, name)| {
            self.schemas
                .get(department)
                .and_then(|s| s.tables.get(name))
        });
        resolve_entries(entries.collect()).await
    }

    /// The table `department.name`, if this catalog holds it.
    pub async fn table(
        &self,
        department: &str,
        name: &str,
    ) -> Result<Option<Resolved>, DataFusionError> {
        match self
            .schemas
            .get(department)
            .and_then(|s| s.tables.get(name))
        {
            Some(e) => e.table().await.map(Some),
            None => Ok(None),
        }
    }
}

impl CatalogProvider for DatagateCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.schemas.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schemas
            .get(name)
            .map(|s| s.clone() as Arc<dyn SchemaProvider>)
    }
}

/// One department's datasets.
#[derive(Debug)]
pub struct DepartmentSchema {
    tables: BTreeMap<String, Entry>,
}

#[async_trait]
impl SchemaProvider for DepartmentSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        match self.tables.get(name) {
            Some(e) => Ok(Some(e.table().await?.provider)),
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }

    /// Every dataset is a base table ([`DatasetTable`]), known without resolving its version:
    /// `information_schema.tables` lists thousands of them by this alone.
    async fn table_type(&self, name: &str) -> Result<Option<TableType>, DataFusionError> {
        Ok(self.tables.contains_key(name).then_some(TableType::Base))
    }
}
