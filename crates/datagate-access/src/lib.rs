//! Access below both front doors (HTTP in `datagate-server`, Arrow Flight SQL in
//! `datagate-flight`): what is protocol-neutral about a caller.
//!
//! - [`caller`]: a key token → the [`Caller`] (principal with its active grants), with the same
//!   answer and timing for every kind of bad key;
//! - [`authz`]: the one role × action table;
//! - [`fair_use`]: rate limits by tier (governor), admission (queries per caller and per
//!   gateway), bytes per caller per day — decided here, answered in each protocol's own terms
//!   (a 429 with headers over HTTP, `ResourceExhausted` with metadata over gRPC);
//! - [`trail`]: the audit records of one data access (`begin` durable before the first byte,
//!   `end` with rows, bytes and outcome) and the count of records still to be written, which
//!   shutdown waits for.

pub mod authz;
pub mod caller;
pub mod fair_use;
pub mod trail;

pub use authz::Action;
pub use caller::{Caller, Denied};
pub use fair_use::{CallerId, FairUse, QueryTicket};
