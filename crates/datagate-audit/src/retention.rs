//! Retention: segments whose records are all older than `audit.retain_days` move to the archive.
