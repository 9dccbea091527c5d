//! Errors of the audit trail.

/// What can go wrong with the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log stopped after a failed write or fsync; only a restart recovers (no retry: a
    /// failed fsync may have lost data the kernel already dropped).
    #[error("the audit log is unavailable: {0}")]
    Failed(String),
    #[error("audit I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = AuditError> = std::result::Result<T, E>;
