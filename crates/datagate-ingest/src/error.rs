//! Errors of the ingest path.

use datagate_catalog::CatalogError;

/// Why an upload was refused or failed. Every variant leaves the dataset as it was.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The data does not fit the format or the schema; `line` is 1-based in the source text
    /// (CSV/NDJSON), `row` 1-based among data rows (binary formats).
    #[error("{message}")]
    InvalidData {
        message: String,
        line: Option<u64>,
        row: Option<u64>,
        column: Option<String>,
    },
    /// The upload is larger than the configured limit (bytes).
    #[error("the upload is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The dataset, department or a referenced file does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Another upload committed first.
    #[error("{0}")]
    Conflict(String),
    /// A manifest or request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The storage (warehouse or spool) is full; the operator must make room.
    #[error("{0}")]
    StorageFull(String),
    /// The storage or the catalog cannot be used right now (read-only, unreadable, locked,
    /// gone); it may come back without anything being lost.
    #[error("{0}")]
    Unavailable(String),
    /// Storage or catalog failure, not the uploader's fault.
    #[error("{0}")]
    Internal(String),
}

pub use datagate_core::fault::StorageFault;

impl IngestError {
    /// A storage failure while doing `what`: full, unavailable, or internal by what `e` says.
    pub fn storage(what: &str, e: &(dyn std::error::Error + 'static)) -> Self {
        let message = format!("{what}: {e}");
        match StorageFault::of(e) {
            Some(StorageFault::Full) => Self::StorageFull(message),
            Some(StorageFault::Unavailable) => Self::Unavailable(message),
            None => Self::Internal(message),
        }
    }

    pub fn invalid_data(message: impl Into<String>) -> Self {
        Self::InvalidData {
            message: message.into(),
            line: None,
            row: None,
            column: None,
        }
    }
}

impl From<CatalogError> for IngestError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(m) => Self::NotFound(format!("{m} not found")),
            CatalogError::Conflict(m) => Self::Conflict(m),
            CatalogError::AlreadyExists(m) => Self::Conflict(format!("{m} already exists")),
            CatalogError::Invalid(m) => Self::Invalid(m),
            CatalogError::Unavailable(m) => Self::Unavailable(m),
            CatalogError::Backend(m) => Self::Internal(m),
        }
    }
}

impl From<object_store::Error> for IngestError {
    fn from(e: object_store::Error) -> Self {
        Self::storage("storage", &e)
    }
}

impl From<parquet::errors::ParquetError> for IngestError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Self::storage("parquet", &e)
    }
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;
