//! The datagate catalog store.
//!
//! The catalog is the system of record for departments, datasets, their columns and their
//! versions (which Parquet files make up each version). [`CatalogStore`] is the interface the rest
//! of datagate uses; [`SqliteCatalog`] is the embedded implementation (a real SQLite database in
//! the data directory, migrations embedded and applied at open, WAL mode, foreign keys on).
//! [`conformance`] is the one test suite every implementation must pass, so a second backend is
//! checked by the same tests.
//!
//! A new version is committed in one transaction together with the dataset's current-version
//! pointer, so a reader sees either the old version or the new one, never a mix.

pub mod conformance;
pub mod grants;
pub mod keys;
pub mod model;
mod sqlite;
mod store;

pub use grants::{
    Application, ApplicationFilter, ApplicationStatus, Decision, Grant, GrantFilter, NewApplication,
};
pub use keys::{ApiKey, KeyToken, NewApiKey, Role};
pub use model::*;
pub use sqlite::SqliteCatalog;
pub use store::{CatalogError, CatalogStore, Result};
