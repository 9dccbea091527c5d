//! The DataFusion side of datagate: per-request sessions, access policy, SQL and REST planning,
//! read-only verification, limits and streaming encoders.
//!
//! A request's principal ([`policy::Principal`]) decides which datasets its session catalog
//! ([`DatagateCatalog`]) holds, so narrowing what a caller sees happens in one place; a
//! [`QueryEngine`] builds that session ([`QueryEngine::request_session`]) with the per-query
//! memory pool and without URL tables or table functions. Requests become plans through
//! [`sql::plan_sql`] (one read-only statement) or [`rows::plan_rows`] (a page or an export, with
//! the `where` translator of [`filter`]), both measured first by [`complexity`]; [`execute`]
//! checks a plan's [`cost`], bounds its [`recursion`] and runs it, streaming it through an
//! [`encode`] format (in zstd frames when the client takes them, [`compression`]; dates beyond
//! the calendar arrow writes as text [`beyond_calendar`]);
//! [`plan_info`] says which dataset versions a plan read. The common `rows` pages skip planning:
//! [`pages`] serves them from a cache of small decoded versions or by seeking in large ones.
//! Dataset scans keep the bloom filters they read between queries ([`bloom_cache`]), so a
//! lookup by primary key reads each version's filters once.
//!
//! Distribution: a plan that scans more than `query.distribute_above_bytes` is cut into stages
//! whose fragments run on `datagate worker` processes ([`distributed`]), after every check above
//! and with the masks inside the fragments.
//!
//! Isolation: every plan is planned and executed on the [`executor`]'s pools, never on the
//! threads that serve connections; string functions that size their output from their
//! arguments are capped ([`size_caps`]); integer `+`, `-` and `*` refuse to overflow rather
//! than wrap ([`checked_arithmetic`]), and so does an integer `sum()` ([`checked_sum`]); a panic fails one request, not the gateway.

pub mod beyond_calendar;
pub mod bloom_cache;
pub mod catalog_provider;
pub mod checked_arithmetic;
pub mod checked_sum;
pub mod complexity;
pub mod compression;
pub mod cost;
pub mod csv_writer;
pub mod distributed;
pub mod encode;
pub mod engine;
pub mod error;
pub mod execute;
pub mod executor;
pub mod filter;
pub mod gb18030;
pub mod in_order;
pub mod masking;
pub mod pages;
pub mod plan_info;
pub mod policy;
pub mod recursion;
pub mod rows;
pub mod size_caps;
pub mod sql;
pub mod stored_export;
pub mod top_n;
pub mod view_types;

pub use catalog_provider::{DatagateCatalog, DatasetTable, TableSnapshot};
pub use engine::{QueryEngine, QueryLimits, RequestSession};
pub use error::{Position, QueryError};
pub use executor::{Lane, QueryExecutor};
pub use masking::MaskKey;
pub use policy::Principal;

/// The SQL catalog name (API.md §2).
pub const CATALOG_NAME: &str = "datagate";
