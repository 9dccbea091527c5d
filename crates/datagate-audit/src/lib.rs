//! The datagate audit trail (API.md §5 "Audit"): who read what, when, how much — and proof
//! that nothing in the log was changed, removed or reordered.
//!
//! - [`record`]: the record and its canonical, hash-chained line encoding;
//! - [`canonical`]: reading a record straight from a line of that encoding;
//! - [`log`]: the append-only log of segment files with group commit (one `fdatasync` per
//!   batch of concurrent appends), fail-closed on a write error, tail recovery on open;
//! - [`checkpoint`]: Ed25519-signed `(seq, hash, time)` checkpoints;
//! - [`verify`]: recomputes the chain and checkpoints, offline too, naming the first bad `seq`;
//! - [`archive`]: byte-for-byte copies of sealed segments in an object store, verifiable alone;
//! - [`reader`]: records for review, and as Arrow rows of `audit.events`;
//! - [`columnar`]: the Parquet copy of sealed segments, by UTC day, converted in the background;
//! - [`table`]: `audit.events` for DataFusion over that copy plus the segments not converted yet;
//! - [`usage`]: reads and downloads per dataset, counted as records are appended;
//! - [`retention`]: moving old segments and their Parquet days to the archive;
//! - [`synthetic`]: realistic logs of any size for benchmarks.

pub mod archive;
pub mod canonical;
pub mod checkpoint;
pub mod columnar;
pub mod error;
pub mod hash_columns;
pub mod log;
pub mod peers;
pub mod reader;
pub mod record;
pub mod retention;
pub mod segment;
pub mod synthetic;
pub mod table;
pub mod usage;
pub mod verify;

pub use checkpoint::Checkpoint;
pub use error::{AuditError, Result};
pub use log::{AuditLog, LogOptions, Recovery};
pub use record::{DatasetVersion, Event, Kind, Record};
pub use verify::{Verdict, verify_dir, verify_dirs};
