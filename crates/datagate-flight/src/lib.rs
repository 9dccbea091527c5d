//! Arrow Flight SQL for datagate (API.md §1 "Flight SQL"): BI tools, notebooks and ADBC/JDBC
//! drivers on the same gateway as the HTTP API, as another client of the same code paths.
//!
//! Every RPC authenticates like an HTTP request (the key from `authorization: Bearer`, or a
//! Basic handshake with the key as the password, answered with the bearer token), is counted
//! against the caller's tier rate and leaves an audit record (refusals coalesced per second);
//! a statement is planned in a per-request session whose catalog holds only what the caller may
//! read, masked below the query, and verified read-only, exactly as `POST /api/v1/query`.
//!
//! - [`service`]: the Flight SQL commands (statements, prepared statements, metadata);
//! - [`handles`]: server-held statement tickets and prepared statements, bound to the caller
//!   that asked and kept for `flight.ticket_ttl_secs`;
//! - [`portable`]: what a ticket or handle carries (sealed under the cluster's ticket key) so
//!   that any gateway of a cluster can run it, whichever one planned it;
//! - [`stream`]: `DoGet` of a statement — admission (concurrency, daily bytes), the `begin`
//!   record durable before the first batch, record batches straight from DataFusion encoded
//!   on the query executor, the `end` record with rows, bytes and outcome;
//! - [`metadata`]: `GetSqlInfo`, catalogs, schemas, tables (with the caller's schema), types;
//! - [`status`]: every error as a gRPC status (never `Internal` for a client's mistake);
//! - [`wrapper`]: the `FlightService` served, adding `GetSchema` to arrow-flight's blanket
//!   implementation.

pub mod handles;
pub mod metadata;
pub mod portable;
pub mod service;
pub mod status;
pub mod stream;
pub mod wrapper;

/// The error of the listener.
pub use tonic::transport::Error as TransportError;

use datagate_access::caller::{BAD_KEY, Denied, authenticate, bearer_token};
use datagate_access::trail::{PendingRecords, RefusalCounter};
use datagate_access::{Caller, CallerId, FairUse};
use datagate_audit::{AuditLog, DatasetVersion, Event, Kind};
use datagate_catalog::CatalogStore;
use datagate_core::{ANONYMOUS_TIER, Config};
use datagate_query::QueryEngine;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};

/// What the Flight SQL service reaches: the same parts the HTTP server holds.
pub struct FlightGateway {
    pub config: Arc<Config>,
    pub catalog: Arc<dyn CatalogStore>,
    pub engine: Arc<QueryEngine>,
    pub fair_use: Arc<FairUse>,
    pub audit: AuditLog,
    pub refusals: Arc<RefusalCounter>,
    pub pending: Arc<PendingRecords>,
    handles: handles::Handles,
    sealer: portable::Sealer,
}

/// One RPC of an identified caller, as the gate admitted it.
pub struct Call {
    pub caller: Caller,
    pub who: CallerId,
    pub tier: String,
    pub client_ip: String,
    pub request_id: String,
    pub rpc: &'static str,
    pub user_agent: String,
    pub started: Instant,
    /// The deadline the client asked for (`grpc-timeout`), if any.
    pub timeout: Option<Duration>,
}

impl FlightGateway {
    pub fn new(
        config: Arc<Config>,
        catalog: Arc<dyn CatalogStore>,
        engine: Arc<QueryEngine>,
        fair_use: Arc<FairUse>,
        audit: AuditLog,
        refusals: Arc<RefusalCounter>,
        pending: Arc<PendingRecords>,
    ) -> Self {
        let ttl = Duration::from_secs(config.flight.ticket_ttl_secs.max(1));
        let handles = handles::Handles::new(ttl, config.flight.max_handles_per_caller.max(1));
        let mut ticket_key = [0u8; 32];
        rand::fill(&mut ticket_key);
        let sealer = portable::Sealer::new(ticket_key, ttl);
        Self {
            config,
            catalog,
            engine,
            fair_use,
            audit,
            refusals,
            pending,
            handles,
            sealer,
        }
    }

    /// Seals tickets under `key`, the cluster's (by default a key made at start: tickets then
    /// run only on this gateway).
    pub fn with_ticket_key(mut self, key: [u8; 32]) -> Self {
        let ttl = Duration::from_secs(self.config.flight.ticket_ttl_secs.max(1));
        self.sealer = portable::Sealer::new(key, ttl);
        self
    }

    /// Identifies the caller of `req`, counts the RPC against its tier's rate, and refuses bad
    /// keys and callers over their rate (both audited).
    pub async fn gate<T>(&self, req: &Request<T>, rpc: &'static str) -> Result<Call, Status> {
        let ip = req
            .remote_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a: SocketAddr| a.ip());
        let caller = match credentials(req.metadata()) {
            Credentials::None => Ok(Caller::Anonymous),
            Credentials::Malformed => Err(Denied::Unauthenticated(BAD_KEY.to_string())),
            Credentials::Key(key) => authenticate(Some(&key), self.catalog.as_ref()).await,
        };
        // A bad key is limited as what it proves to be: an anonymous client at its address.
        let (tier_asked, who) = match &caller {
            Ok(Caller::Key(k, _)) => (k.tier.as_str(), CallerId::Key(k.id.as_str().into())),
            _ => (ANONYMOUS_TIER, CallerId::Ip(ip)),
        };
        let tier = self.config.tier(tier_asked).0.to_string();
        let mut call = Call {
            caller: Caller::Anonymous,
            who,
            tier,
            client_ip: ip.to_string(),
            request_id: uuid::Uuid::now_v7().to_string(),
            rpc,
            user_agent: req
                .metadata()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(512)
                .collect(),
            started: Instant::now(),
            timeout: grpc_timeout(req.metadata()),
        };
        if let Some(why) = self.audit.failed() {
            return Err(audit_unavailable(&why));
        }
        let (_, verdict) = self.fair_use.count_request(&call.tier, &call.who).await;
        if let Err(refusal) = verdict {
            let status = status::refused(&refusal);
            return self
                .answered(&call, "flight.refused", &[], Err(status))
                .await;
        }
        match caller {
            Ok(c) => call.caller = c,
            Err(e) => {
                let status = status::denied(e);
                return self
                    .answered(&call, "flight.unauthenticated", &[], Err(status))
                    .await;
            }
        }
        Ok(call)
    }

    /// The audit event of `call` (a `request` record unless changed).
    pub fn event(&self, call: &Call, action: &str, datasets: &[DatasetVersion]) -> Event {
        let (key_id, role, department) = match &call.caller {
            Caller::Key(k, _) => (
                k.id.clone(),
                k.role.as_str().to_string(),
                k.department.clone(),
            ),
            Caller::Anonymous => ("anonymous".to_string(), "anonymous".to_string(), None),
        };
        Event {
            kind: Some(Kind::Request),
            event_id: uuid::Uuid::now_v7().to_string(),
            request_id: call.request_id.clone(),
            key_id,
            role,
            department,
            tier: call.tier.clone(),
            client_ip: call.client_ip.clone(),
            user_agent: call.user_agent.clone(),
            method: "GRPC".to_string(),
            path: format!("/arrow.flight.protocol.FlightService/{}", call.rpc),
            action: action.to_string(),
            datasets: datasets.to_vec(),
            status: 200,
            count: 1,
            ..Default::default()
        }
    }

    /// Writes the `request` record of `call` answered with `result` (durable before the answer
    /// leaves; refusals coalesced per second), counts it in the metrics, and tags an error with
    /// `x-request-id` (answers: [`tagged`]). If the log cannot be written, the answer is
    /// `Unavailable`.
    pub async fn answered<R>(
        &self,
        call: &Call,
        action: &str,
        datasets: &[DatasetVersion],
        result: Result<R, Status>,
    ) -> Result<R, Status> {
        self.answered_as(call, self.event(call, action, datasets), result)
            .await
    }

    /// [`Self::answered`] for an RPC that carried the statement `sql`: a refusal names it in
    /// its record, as `POST /api/v1/query` does.
    pub async fn answered_statement<R>(
        &self,
        call: &Call,
        action: &str,
        sql: &str,
        datasets: &[DatasetVersion],
        result: Result<R, Status>,
    ) -> Result<R, Status> {
        let mut event = self.event(call, action, datasets);
        if result.is_err() {
            event.name_refused_statement(sql, self.engine.limits().max_sql_bytes);
        }
        self.answered_as(call, event, result).await
    }

    /// [`Self::answered`] with the record `event`.
    async fn answered_as<R>(
        &self,
        call: &Call,
        mut event: Event,
        result: Result<R, Status>,
    ) -> Result<R, Status> {
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        event.status = http_equivalent(code);
        if let Err(s) = &result {
            event.error = Some(s.message().to_string());
        }
        event.duration_ms = call.started.elapsed().as_millis() as u64;
        self.count_rpc(call, code);
        let written = if code == Code::ResourceExhausted
            && !self.refusals.first_of_second(&event, &self.audit)
        {
            Ok(0)
        } else {
            let _pending = self.pending.begin();
            self.audit.append(event).await
        };
        let mut result = match written {
            Ok(_) => result,
            Err(e) => Err(audit_unavailable(&e.to_string())),
        };
        if let Err(s) = &mut result {
            tag(s.metadata_mut(), &call.request_id);
        }
        result
    }

    /// Counts an answered RPC in `datagate_flight_requests_total` and its duration.
    pub fn count_rpc(&self, call: &Call, code: Code) {
        metrics::counter!("datagate_flight_requests_total",
            "rpc" => call.rpc, "code" => format!("{code:?}"))
        .increment(1);
        metrics::histogram!("datagate_flight_request_duration_seconds", "rpc" => call.rpc)
            .record(call.started.elapsed().as_secs_f64());
    }
}

/// `response` with the call's `x-request-id`.
pub fn tagged<T>(call: &Call, mut response: Response<T>) -> Response<T> {
    tag(response.metadata_mut(), &call.request_id);
    response
}

fn tag(metadata: &mut MetadataMap, request_id: &str) {
    if let Ok(v) = MetadataValue::try_from(request_id) {
        metadata.insert("x-request-id", v);
    }
}

/// The credentials an RPC carries.
pub(crate) enum Credentials {
    None,
    Malformed,
    Key(String),
}

/// `authorization: Bearer <key>`, or `Basic base64(<user>:<key>)` (the key as the password,
/// any user name), or nothing.
pub(crate) fn credentials(metadata: &MetadataMap) -> Credentials {
    let Some(value) = metadata.get("authorization") else {
        return Credentials::None;
    };
    let Ok(value) = value.to_str() else {
        return Credentials::Malformed;
    };
    if let Some(token) = bearer_token(value) {
        return Credentials::Key(token.to_string());
    }
    let basic = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "));
    if let Some(encoded) = basic {
        use base64::Engine;
        // With or without padding: Go's Flight client sends it unpadded.
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded.trim().trim_end_matches('='))
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((_, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return Credentials::Key(password.to_string());
        }
    }
    Credentials::Malformed
}

/// The `grpc-timeout` the client set (`<digits><H|M|S|m|u|n>`).
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The HTTP status an RPC's code stands for in the audit log (one vocabulary for auditors).
pub fn http_equivalent(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        _ => 500,
    }
}

pub(crate) fn audit_unavailable(why: &str) -> Status {
    Status::unavailable(format!(
        "the audit log cannot be written ({why}); no access is possible without a record — an \
         operator must restart the gateway"
    ))
}

/// Serves Flight SQL on `listener` until `shutdown` resolves; TLS when `tls` (PEM certificate
/// chain and key) is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<FlightGateway>,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = arrow_flight::flight_service_server::FlightServiceServer::new(
        wrapper::Service::new(gateway),
    )
    .max_decoding_message_size(64 * 1024 * 1024)
    .max_encoding_message_size(usize::MAX);
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    // Result streams are large and latency-sensitive at once: no Nagle delay on small frames
    // (headers, window updates), and windows wide enough that loopback and LAN clients are
    // not throttled by round trips.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    builder = builder
        .initial_connection_window_size(16 * 1024 * 1024)
        .initial_stream_window_size(8 * 1024 * 1024);
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
