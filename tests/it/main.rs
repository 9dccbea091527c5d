//! Black-box tests: each spawns the real `datagate` binary on a free loopback port with a
//! temporary data directory and talks to it over HTTP, as a user would.
//!
//! The binary is the one `cargo test --workspace` builds beside this test (the `datagate`
//! crate's own CLI tests make cargo build it).

#[path = "../support/certs.rs"]
mod certs;
mod harness;
#[path = "../support/postgres.rs"]
mod pg;
#[path = "../support/s3.rs"]
mod s3;

mod access;
mod admin_key;
mod audit;
mod audit_scale;
mod catalog_api;
mod cluster;
mod config_errors;
mod connections;
mod data_api;
mod distributed;
mod fair_use;
mod faults;
mod flight;
mod http_behaviour;
mod masking;
mod openapi_contract;
mod portal;
mod portal_browser;
mod publishing;
mod query_deny;
mod s3_conformance;
mod sample_catalog;
