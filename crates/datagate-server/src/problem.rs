//! Errors as `application/problem+json` (RFC 9457), the one place client-visible errors are
//! mapped to statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datagate_catalog::CatalogError;
use serde_json::{Map, Value, json};

tokio::task_local! {
    /// The id of the request being served (set by the request-id layer).
    pub static REQUEST_ID: String;
}

/// The current request's id, or an empty string outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(|id| id.clone()).unwrap_or_default()
}

/// The largest JSON request body accepted (bytes); uploads stream and have their own limit
/// (`limits.max_upload_bytes`).
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Whether `e` (or what caused it) is the body-timeout layer giving up on a stalled body.
pub fn caused_by_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The detail of an error response, kept for the audit record.
#[derive(Debug, Clone)]
pub struct ProblemDetail(pub String);

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A short, stable slug; the problem `type` is `https://datagate.dev/problems/<kind>`.
    pub kind: &'static str,
    pub detail: String,
    /// Extra members (`line`, `column`, `position`, ...).
    pub extra: Map<String, Value>,
    /// Sent as `Retry-After` when set.
    pub retry_after_secs: Option<u64>,
}

/// The `Retry-After` of a 503 for unusable storage.
const STORAGE_RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            extra: Map::new(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        // The detail of a 5xx is logged, never sent: it may hold paths or internals.
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to answer; the request id identifies it in the logs",
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// 507: the storage is full; nothing of the request was kept. The detail (with paths)
    /// goes to the log only.
    pub fn storage_full(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "storage full");
        metrics::counter!("datagate_storage_faults_total", "fault" => "full").increment(1);
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage-full",
            "the gateway's storage is full; nothing of this request was kept. Try again later",
        )
    }

    /// 503 with `Retry-After`: `what` (the catalog, the warehouse) cannot be used right now;
    /// nothing committed is lost. The detail goes to the log only.
    pub fn storage_unavailable(what: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "{what} is unavailable");
        metrics::counter!("datagate_storage_faults_total", "fault" => "unavailable").increment(1);
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{what} cannot be used right now; nothing committed is lost. Try again later"),
        );
        err.retry_after_secs = Some(STORAGE_RETRY_AFTER_SECS);
        err
    }

    /// 413 for a JSON body over [`JSON_BODY_LIMIT`].
    pub fn json_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the JSON body is larger than the limit of {JSON_BODY_LIMIT} bytes"),
        )
        .with("limit_bytes", JSON_BODY_LIMIT)
    }

    /// 408 for a request body that stalled past `server.body_read_timeout_secs`.
    pub fn body_stalled(timeout_secs: u64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            format!(
                "the request body stalled: nothing arrived for {timeout_secs} s \
                 (server.body_read_timeout_secs)"
            ),
        )
    }

    /// Adds a member to the problem body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("https://datagate.dev/problems/{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "request_id": current_request_id(),
        });
        if let Value::Object(map) = &mut body {
            for (k, v) in self.extra {
                map.entry(k).or_insert(v);
            }
        }
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = (self.status, body.to_string()).into_response();
        // For the audit record's `error`.
        resp.extensions_mut().insert(ProblemDetail(self.detail));
        if unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"datagate\""),
            );
        }
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(m) => Self::not_found(format!("{m} not found")),
            CatalogError::AlreadyExists(m) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{m} already exists"),
            ),
            CatalogError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            CatalogError::Invalid(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            CatalogError::Unavailable(m) => Self::storage_unavailable("the catalog", m),
            CatalogError::Backend(m) => Self::internal(m),
        }
    }
}

impl From<datagate_access::Denied> for ApiError {
    fn from(e: datagate_access::Denied) -> Self {
        use datagate_access::Denied;
        match e {
            Denied::Unauthenticated(m) => Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m),
            Denied::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            Denied::Catalog(e) => e.into(),
        }
    }
}

/// The 404 of an unknown route.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no resource at {}", uri.path()))
}

/// The 405 of a known route with another method.
pub async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

impl From<datagate_ingest::IngestError> for ApiError {
    fn from(e: datagate_ingest::IngestError) -> Self {
        use datagate_ingest::IngestError as E;
        match e {
            E::InvalidData {
                message,
                line,
                row,
                column,
            } => {
                let mut err = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-data", message);
                if let Some(l) = line {
                    err = err.with("line", l);
                }
                if let Some(r) = row {
                    err = err.with("row", r);
                }
                if let Some(c) = column {
                    err = err.with("column", c);
                }
                err
            }
            E::TooLarge(limit) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("the upload is larger than the limit of {limit} bytes"),
            )
            .with("limit_bytes", limit),
            E::NotFound(m) => Self::not_found(m),
            E::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            E::Invalid(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            E::StorageFull(m) => Self::storage_full(m),
            E::Unavailable(m) => Self::storage_unavailable("the storage", m),
            E::Internal(m) => Self::internal(m),
        }
    }
}

impl From<datagate_query::QueryError> for ApiError {
    fn from(e: datagate_query::QueryError) -> Self {
        use datagate_query::QueryError as E;
        match e {
            E::Invalid {
                message,
                position,
                parameter,
            } => {
                let mut err = Self::new(StatusCode::BAD_REQUEST, "invalid-query", message);
                if let Some(p) = position {
                    err = err
                        .with("line", p.line)
                        .with("column", p.column)
                        .with("position", json!({"line": p.line, "column": p.column}));
                }
                if let Some(name) = parameter {
                    err = err.with("parameter", name);
                }
                err
            }
            E::NotFound(m) => Self::not_found(m),
            E::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            E::MemoryLimit { limit, detail } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "query-memory-limit",
                format!(
                    "the query needs more memory than its limit of {limit} bytes; narrow it \
                     (filter, fewer columns, smaller groups) ({detail})"
                ),
            )
            .with("limit_bytes", limit),
            E::Timeout(ms) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "query-timeout",
                format!("the query ran past its time limit of {ms} ms"),
            )
            .with("limit_ms", ms),
            E::ShuttingDown => Self::unavailable("the gateway is shutting down; retry"),
            E::OverLimit(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "query-over-limit", m),
            E::Panicked {
                overflow: true,
                message,
            } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "query-over-limit",
                format!(
                    "the query produced a value or batch too large for the engine ({}); narrow \
                     it (shorter strings, fewer rows per group)",
                    message.lines().next().unwrap_or_default()
                ),
            ),
            E::Panicked { message, .. } => Self::internal(format!("query panicked: {message}")),
            E::Catalog(c) => c.into(),
            E::StorageUnavailable(m) => Self::storage_unavailable("the warehouse", m),
            E::WorkerLost(m) => {
                tracing::error!(error = %m, "a query worker failed mid-query");
                let mut err = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a query worker stopped answering while the query ran; retry: it runs on \
                     the workers still up",
                );
                err.retry_after_secs = Some(1);
                err
            }
            E::Internal(m) => Self::internal(m),
        }
    }
}
