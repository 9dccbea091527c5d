//! Publishing data into datagate: decoding, validation, Parquet writing and version commits.
//!
//! The path of every upload is the same (DESIGN.md "Ingest"): a byte stream is decoded
//! push-style into Arrow record batches ([`decode`]), each batch is checked against the
//! dataset's schema, batches are written as Parquet files (LZ4 by default, `ingest.compression`) under a fresh
//! upload prefix of
//! the [`warehouse`] ([`writer`]), and once every file is durable one catalog transaction commits
//! the next version ([`publish`]). Anything that fails before the commit deletes what the upload
//! wrote; what a crash leaves behind is unreferenced and removed by
//! [`Warehouse::sweep_unreferenced`](warehouse::Warehouse::sweep_unreferenced).
//!
//! Appends that would leave a version ending in many small files rewrite them into one
//! ([`compaction`]).
//!
//! [`manifests`] registers the declarative sample catalog through this same path.

pub mod compaction;
pub mod decode;
pub mod error;
pub mod manifests;
pub mod publish;
pub mod warehouse;
pub mod writer;

pub use error::{IngestError, Result};
pub use publish::{Publisher, Source, SourceFormat};
pub use warehouse::Warehouse;
