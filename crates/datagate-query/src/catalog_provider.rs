//! The `datagate` catalog provider: departments as schemas, datasets as tables.

use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datagate_catalog::Column;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One dataset at one version, as a table.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub department: String,
    pub name: String,
    /// The pinned version; `None` for a dataset with no data yet (an empty table).
    pub version: Option<i64>,
    pub columns: Vec<Column>,
    /// Absolute URLs of the version's Parquet files.
    pub file_urls: Vec<String>,
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

    fn provider(&self) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        let schema = self.schema();
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

/// The `datagate` catalog of one request.
#[derive(Debug, Default)]
pub struct DatagateCatalog {
    schemas: BTreeMap<String, Arc<DepartmentSchema>>,
}

impl DatagateCatalog {
    /// Builds the catalog from table snapshots; `departments` are listed even when empty.
    pub fn new(departments: impl IntoIterator<Item = String>, tables: Vec<TableSnapshot>) -> Self {
        let mut schemas: BTreeMap<String, BTreeMap<String, TableSnapshot>> = departments
            .into_iter()
            .map(|d| (d, BTreeMap::new()))
            .collect();
        for t in tables {
            schemas
                .entry(t.department.clone())
                .or_default()
                .insert(t.name.clone(), t);
        }
        Self {
            schemas: schemas
                .into_iter()
                .map(|(d, tables)| (d, Arc::new(DepartmentSchema { tables })))
                .collect(),
        }
    }

    /// The snapshot of `department.name`, if visible.
    pub fn table(&self, department: &str, name: &str) -> Option<&TableSnapshot> {
        self.schemas.get(department)?.tables.get(name)
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
    tables: BTreeMap<String, TableSnapshot>,
}

#[async_trait]
impl SchemaProvider for DepartmentSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        match self.tables.get(name) {
            Some(t) => Ok(Some(t.provider()?)),
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }
}
