//! The datagate HTTP server: the API and the portal (the website at `/`, [`portal`]).
//!
//! Routes (API.md §5) live under [`routes`], one module per area; every error a client can see
//! is an [`ApiError`] rendered as `application/problem+json` in one place ([`problem`]). The
//! layers around the routes ([`layers`]) give each request an `X-Request-Id` and a `tracing`
//! span, write the audit record of every request ([`audit`]), apply fair use ([`fair_use`]: rate limits by tier, byte quotas, admission control, decided by `datagate_access`),
//! record Prometheus metrics, negotiate compression, answer CORS, and time out stalled
//! bodies; [`serve`](fn@serve) runs hyper (HTTP/1.1; HTTP/2 over [`tls`]) with a watchdog per connection
//! (head timeout, keep-alive idle limit, connection pressure) and drains on shutdown.

pub mod api;
pub mod audit;
pub mod auth;
pub mod fair_use;
pub mod layers;
pub mod openapi;
pub mod portal;
pub mod problem;
pub mod routes;
pub mod serve;
pub mod state;
pub mod tls;

pub use problem::ApiError;
pub use serve::serve;
pub use state::{AppState, State};
