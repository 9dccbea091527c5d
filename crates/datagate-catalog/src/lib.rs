//! The datagate catalog store.
//!
//! The catalog is the system of record for departments, datasets, their columns and their
//! versions (which Parquet files make up each version). [`CatalogStore`] is the interface the rest
//! of datagate uses. Two implementations, chosen by [`open`] from `storage.catalog_url`:
//! [`SqliteCatalog`], the embedded default (a real SQLite database in the data directory, WAL
//! mode, foreign keys on), and [`PostgresCatalog`], shared by several gateways. Their schema
//! changes are one list ([`migrations`]), applied at open. [`conformance`] is the one test suite
//! every implementation must pass, so both backends are checked by the same tests.
//!
//! A new version is committed in one transaction together with the dataset's current-version
//! pointer, so a reader sees either the old version or the new one, never a mix.

pub mod conformance;
pub mod grants;
pub mod keys;
pub mod migrations;
pub mod model;
mod postgres;
pub mod postgres_tls;
pub mod rates;
pub mod sessions;
mod sqlite;
mod store;

pub use grants::{
    Application, ApplicationFilter, ApplicationStatus, Decision, Grant, GrantFilter, NewApplication,
};
pub use keys::{ApiKey, KeyToken, NewApiKey, Role};
pub use model::*;
pub use postgres::PostgresCatalog;
pub use sqlite::SqliteCatalog;
pub use store::{CatalogError, CatalogStore, Result};

/// The catalog `url` names: empty = the embedded SQLite file `sqlite_file`;
/// `postgres://` or `postgresql://` = a shared PostgreSQL database (pooled, `pool_size`
/// connections). Pending schema changes are applied either way.
pub async fn open(
    url: &str,
    sqlite_file: &std::path::Path,
    pool_size: usize,
) -> Result<std::sync::Arc<dyn CatalogStore>> {
    let url = url.trim();
    if url.is_empty() {
        let file = sqlite_file.to_path_buf();
        let store = tokio::task::spawn_blocking(move || SqliteCatalog::open(&file))
            .await
            .map_err(|e| CatalogError::Backend(format!("opening the catalog: {e}")))??;
        Ok(std::sync::Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            PostgresCatalog::connect(url, pool_size).await?,
        ))
    } else {
        Err(CatalogError::Invalid(format!(
            "storage.catalog_url must be empty (the embedded SQLite catalog) or a postgres:// \
             URL, not {:?}",
            url.split('@').next_back().unwrap_or_default()
        )))
    }
}
