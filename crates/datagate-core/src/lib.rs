//! Shared vocabulary of datagate.
//!
//! Everything that more than one crate has to agree on lives here: the names of departments and
//! datasets ([`names`]), the open levels and column sensitivities of public data ([`access`]),
//! the column types that the catalog and the API speak ([`types`]), and the typed configuration
//! with its loader ([`config`]), how a storage URL becomes an object store ([`storage`]),
//! how background threads yield the cores ([`threads`]), how a third-party decoder's panic
//! over untrusted bytes becomes an error ([`panics`]), and what an Arrow IPC message from
//! outside may decompress to before arrow decodes it ([`ipc_limits`]), and how messages count
//! things ([`words`]).
//! This crate has no I/O beyond reading the configuration file.

pub mod access;
pub mod config;
pub mod fault;
pub mod ipc_limits;
pub mod names;
pub mod panics;
pub mod storage;
pub mod threads;
pub mod types;
pub mod words;

pub use access::{AccessLevel, Mask, Sensitivity};
pub use config::{ANONYMOUS_TIER, Config, TierConfig};
pub use names::{DatasetRef, NameError, column_name_problem, validate_name};
pub use types::ColumnType;
