//! The audit layer (API.md §5 "Audit"): every request under `/api/` and `/catalog/` leaves a
//! record in the audit log, refused ones included, and nothing leaves the gateway before the
//! record that announces it is durable.
//!
//! - A request that sends no data gets one `request` record, durable before its answer leaves.
//! - A data response (rows, export, SQL) gets a `begin` record — with the dataset versions the
//!   plan read, put in the response by the handler ([`DataAccess`]) — durable before its first
//!   byte, and an `end` record when the stream ends: rows, bytes, duration, and whether it
//!   completed, the client disconnected, or it failed. A response whole in memory before it
//!   leaves (a page) gets one `read` record saying all of that, durable before its first byte.
//! - Identical refusals (429) of one caller on one route within one second are written once
//!   in full and then counted: one `refusals` record per second carries the count of the rest,
//!   so a flood cannot flood the log, and no refusal goes uncounted.
//! - If the log cannot be written, audited requests get 503 and no data (fail-closed).
//!
//! Who the caller was comes from the fair-use layer ([`AuditSubject`]), which identifies it.

use crate::problem::{ApiError, ProblemDetail, current_request_id};
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use datagate_audit::{DatasetVersion, Event, Kind};
use datagate_query::execute::Report;
use std::time::Instant;

/// Who made a request, as the fair-use layer identified it.
#[derive(Debug, Clone, Default)]
pub struct AuditSubject {
    pub key_id: String,
    pub role: String,
    pub department: Option<String>,
    pub tier: String,
    pub client_ip: String,
}

/// What a data response reads, set by the data handlers on their streaming responses.
pub struct DataAccess {
    pub datasets: Vec<DatasetVersion>,
    pub query_text: Option<String>,
    /// The workers a distributed query runs on.
    pub workers: Option<Vec<String>>,
    /// The encoder's report when the stream ends.
    pub report: tokio::sync::oneshot::Receiver<Report>,
    /// Rows and bytes encoded so far (what the `end` record says if the report never comes).
    pub sent: std::sync::Arc<datagate_query::execute::Sent>,
}

/// The statement of a refused query (a 4xx or 5xx from `/api/v1/query` or
/// `/api/v1/audit/query`), for its `request` record ([`Event::name_refused_statement`]), with
/// the SQL size limit.
#[derive(Debug, Clone)]
pub struct RefusedQuery {
    pub text: String,
    pub max_bytes: usize,
}

// `Response` extensions must be `Clone`; the receiver is taken out once.
impl Clone for DataAccess {
    fn clone(&self) -> Self {
        let (_, report) = tokio::sync::oneshot::channel();
        Self {
            datasets: self.datasets.clone(),
            query_text: self.query_text.clone(),
            workers: self.workers.clone(),
            report,
            sent: self.sent.clone(),
        }
    }
}

/// The action a route stands for.
fn action_of(method: &Method, route: &str) -> String {
    let m = method.as_str();
    // `HEAD` asks what `GET` answers, without the body: the same action.
    let asks = if method == Method::HEAD { "GET" } else { m };
    let a = match (asks, route) {
        ("GET", "/api/v1/departments") => "catalog.departments",
        ("POST", "/api/v1/departments") => "catalog.create_department",
        ("GET", "/api/v1/datasets") => "catalog.datasets",
        ("POST", "/api/v1/datasets") => "catalog.register",
        ("GET", "/api/v1/datasets/{dept}/{name}") => "catalog.dataset",
        ("PATCH", "/api/v1/datasets/{dept}/{name}") => "catalog.update",
        ("DELETE", "/api/v1/datasets/{dept}/{name}") => "catalog.unpublish",
        ("POST", "/api/v1/datasets/{dept}/{name}/publish") => "catalog.publish",
        ("GET", "/api/v1/datasets/{dept}/{name}/versions") => "catalog.versions",
        ("POST", "/api/v1/datasets/{dept}/{name}/versions") => "publish.upload",
        ("GET", "/api/v1/datasets/{dept}/{name}/rows") => "data.rows",
        ("GET", "/api/v1/datasets/{dept}/{name}/export") => "data.export",
        ("GET" | "POST", "/api/v1/query") => "data.query",
        ("POST", "/api/v1/datasets/{dept}/{name}/applications") => "access.apply",
        ("GET", "/api/v1/applications") => "access.applications",
        ("POST", "/api/v1/applications/{id}/approve") => "access.approve",
        ("POST", "/api/v1/applications/{id}/reject") => "access.reject",
        ("GET", "/api/v1/grants") => "access.grants",
        ("DELETE", "/api/v1/grants/{id}") => "access.revoke_grant",
        ("POST", "/api/v1/keys") => "keys.create",
        ("GET", "/api/v1/keys") => "keys.list",
        ("DELETE", "/api/v1/keys/{id}") => "keys.revoke",
        ("PATCH", "/api/v1/keys/{id}") => "keys.update",
        ("GET", "/api/v1/me") => "keys.me",
        ("GET", "/api/v1/audit/events") => "audit.events",
        ("POST", "/api/v1/audit/query") => "audit.query",
        ("GET", "/api/v1/audit/verify") => "audit.verify",
        ("GET", "/api/v1/audit/usage") => "audit.usage",
        ("GET", "/api/v1/audit/checkpoint") => "audit.checkpoint",
        ("GET", "/api/v1/audit/public-key") => "audit.public_key",
        ("GET", "/catalog/data.json") => "catalog.dcat",
        _ => return format!("other {} {route}", crate::layers::method_label(method)),
    };
    a.to_string()
}

/// The dataset a `/api/v1/datasets/{dept}/{name}...` request names.
fn dataset_of(route: &str, path: &str) -> Vec<DatasetVersion> {
    if !route.starts_with("/api/v1/datasets/{dept}/{name}") {
        return Vec::new();
    }
    let mut parts = path.trim_start_matches('/').split('/').skip(3);
    match (parts.next(), parts.next()) {
        (Some(d), Some(n)) => vec![DatasetVersion {
            name: format!("{d}.{n}"),
            version: None,
        }],
        _ => Vec::new(),
    }
}

fn unavailable(why: &str) -> Response {
    let mut resp = ApiError::unavailable(format!(
        "the audit log cannot be written ({why}); no access is possible without a record — \
         an operator must restart the gateway"
    ))
    .with("component", "audit")
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    resp
}

/// Appends `event` and waits until it is durable, timing the wait; the error says why not.
async fn durable(
    log: &datagate_audit::AuditLog,
    event: impl std::borrow::Borrow<Event>,
) -> Result<(), String> {
    let timer = Instant::now();
    let written = log.append(event).await;
    metrics::histogram!("datagate_audit_wait_seconds").record(timer.elapsed().as_secs_f64());
    written.map(drop).map_err(|e| e.to_string())
}

/// The middleware; see the module documentation.
pub async fn audit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !(path.starts_with("/api/") || path.starts_with("/catalog/")) {
        return next.run(req).await;
    }
    let log = state.audit.clone();
    if let Some(why) = log.failed() {
        return unavailable(&why);
    }
    let _pending = state.audit_pending.begin();
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.to_string(), |p| p.as_str().to_string());
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(512)
        .collect::<String>();
    let datasets = dataset_of(&route, req.uri().path());
    let mut resp = next.run(req).await;
    let subject = resp
        .extensions_mut()
        .remove::<AuditSubject>()
        .unwrap_or_default();
    let access = resp.extensions_mut().remove::<DataAccess>();
    let refused = resp.extensions_mut().remove::<RefusedQuery>();
    let status = resp.status().as_u16();
    let mut event = Event {
        kind: Some(Kind::Request),
        event_id: uuid::Uuid::now_v7().to_string(),
        request_id: current_request_id(),
        key_id: if subject.key_id.is_empty() {
            "anonymous".to_string()
        } else {
            subject.key_id
        },
        role: if subject.role.is_empty() {
            "anonymous".to_string()
        } else {
            subject.role
        },
        department: subject.department,
        tier: subject.tier,
        client_ip: subject.client_ip,
        user_agent,
        method: method.to_string(),
        path: path_and_query,
        action: action_of(&method, &route),
        datasets,
        status,
        error: resp
            .extensions()
            .get::<ProblemDetail>()
            .map(|d| d.0.clone()),
        count: 1,
        ..Default::default()
    };
    if let Some(q) = refused {
        event.name_refused_statement(&q.text, q.max_bytes);
    }
    match access {
        Some(access) if resp.status() == StatusCode::OK => {
            event.kind = Some(Kind::Begin);
            event.datasets = access.datasets;
            event.query_sha256 = access
                .query_text
                .as_deref()
                .map(datagate_audit::record::query_sha256);
            event.query_text = access.query_text;
            event.workers = access.workers;
            let (mut report, sent) = (access.report, access.sent);
            if let Ok(done) = report.try_recv() {
                // A body already whole in memory (a page): its end is known now, so one
                // `read` record says both, durable before the body leaves.
                let read = datagate_access::trail::read_record(event, done, start.elapsed());
                return match durable(&log, read).await {
                    Ok(()) => resp,
                    // Dropping the response: no data leaves.
                    Err(e) => unavailable(&e),
                };
            }
            event.duration_ms = start.elapsed().as_millis() as u64;
            if let Err(e) = durable(&log, &event).await {
                // Dropping the response cancels the query: no data leaves.
                return unavailable(&e);
            }
            let end = move |event: &Event, report| {
                datagate_access::trail::end_record(
                    event,
                    report,
                    start.elapsed(),
                    "disconnected",
                    &sent,
                )
            };
            let pending = state.audit_pending.begin();
            tokio::spawn(async move {
                let _pending = pending;
                let report = report.await.ok();
                log.append_detached(end(&event, report));
            });
            resp
        }
        _ => {
            event.duration_ms = start.elapsed().as_millis() as u64;
            if status == 429 && !state.refusals.first_of_second(&event, &log) {
                return resp;
            }
            match durable(&log, event).await {
                Ok(()) => resp,
                Err(e) => unavailable(&e),
            }
        }
    }
}
