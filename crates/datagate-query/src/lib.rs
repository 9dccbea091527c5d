//! The DataFusion side of datagate.
//!
//! [`DatagateCatalog`] is the `datagate` SQL catalog: each department a schema, each dataset a
//! table over the Parquet files of one pinned version. It is a snapshot built per request from
//! the catalog store ([`QueryEngine::catalog_snapshot`]) holding only what that request may
//! read, so narrowing what a caller sees happens in one place. [`QueryEngine::session`] wraps it
//! in a DataFusion `SessionContext` with no other catalogs and no URL tables.

pub mod catalog_provider;
pub mod encode;
pub mod engine;

pub use catalog_provider::{DatagateCatalog, TableSnapshot};
pub use engine::{QueryEngine, QueryError};

/// The SQL catalog name (API.md §2).
pub const CATALOG_NAME: &str = "datagate";
