//! Building per-request query sessions over the catalog.

use crate::CATALOG_NAME;
use crate::catalog_provider::{DatagateCatalog, TableSnapshot};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use datagate_catalog::{CatalogError, CatalogStore, DatasetFilter};
use datagate_core::AccessLevel;
use object_store::ObjectStore;
use std::sync::Arc;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Internal(String),
}

/// Shared state from which request sessions are built.
#[derive(Clone)]
pub struct QueryEngine {
    catalog: Arc<dyn CatalogStore>,
    warehouse_url: Url,
    runtime: Arc<RuntimeEnv>,
}

impl QueryEngine {
    /// `root_store` serves the warehouse URL's scheme and authority.
    pub fn new(
        catalog: Arc<dyn CatalogStore>,
        warehouse_url: Url,
        root_store: Arc<dyn ObjectStore>,
    ) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new().build_arc()?;
        let mut base = warehouse_url.clone();
        base.set_path("/");
        runtime.register_object_store(&base, root_store);
        Ok(Self {
            catalog,
            warehouse_url,
            runtime,
        })
    }

    /// A snapshot of the published datasets of the given open levels, each at its current
    /// version.
    pub async fn catalog_snapshot(
        &self,
        visible: &[AccessLevel],
    ) -> Result<DatagateCatalog, QueryError> {
        let page = self
            .catalog
            .list_datasets(&DatasetFilter {
                visible_levels: visible.to_vec(),
                limit: u64::MAX,
                ..Default::default()
            })
            .await?;
        let departments = self
            .catalog
            .list_departments(visible)
            .await?
            .into_iter()
            .map(|d| d.department.id);
        let mut tables = Vec::with_capacity(page.datasets.len());
        for ds in page.datasets {
            let (columns, file_urls) = match ds.current_version {
                Some(v) => match self
                    .catalog
                    .get_version(&ds.department, &ds.name, v)
                    .await?
                {
                    Some(version) => {
                        let urls = version
                            .files
                            .iter()
                            .map(|f| self.file_url(&f.path))
                            .collect::<Result<Vec<_>, _>>()?;
                        (version.columns, urls)
                    }
                    None => (ds.columns.clone(), Vec::new()),
                },
                None => (ds.columns.clone(), Vec::new()),
            };
            tables.push(TableSnapshot {
                department: ds.department,
                name: ds.name,
                version: ds.current_version,
                columns,
                file_urls,
            });
        }
        Ok(DatagateCatalog::new(departments, tables))
    }

    fn file_url(&self, path: &str) -> Result<String, QueryError> {
        self.warehouse_url
            .join(path)
            .map(|u| u.to_string())
            .map_err(|e| QueryError::Internal(format!("bad file path {path}: {e}")))
    }

    /// A session whose only catalog is `datagate`, holding `catalog`.
    pub fn session(&self, catalog: DatagateCatalog) -> SessionContext {
        let config = SessionConfig::new()
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG_NAME, "public")
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(config, self.runtime.clone());
        ctx.register_catalog(CATALOG_NAME, Arc::new(catalog));
        ctx
    }
}
