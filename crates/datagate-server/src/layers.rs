//! The layers around every route: request ids and spans, metrics, CORS, compression, fair use
//! (rate limits, quotas, admission), and body timeouts.

use crate::problem::REQUEST_ID;
use crate::state::AppState;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use std::time::{Duration, Instant};
use tower_http::CompressionLevel;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::Instrument;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Bodies of a known length below this go out uncompressed, whatever the client accepts.
pub const COMPRESS_MIN_BYTES: u16 = 1024;

/// Wraps the routes in every layer the configuration asks for.
pub fn apply(router: Router, state: &AppState) -> Router {
    let cfg = &state.config.server;
    // Inside compression, so the bytes counted against daily quotas are the encoders' bytes.
    // Innermost: a handler that panics answers a problem (and is audited) instead of dropping
    // the connection.
    let mut router = router
        .layer(CatchPanicLayer::custom(panicked))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            cfg.body_read_timeout_secs.max(1),
        )))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::fair_use::fair_use,
        ));
    if cfg.compression {
        // The fastest levels, so compression keeps pace with the encoders on one core (zstd
        // is preferred when the client accepts it at the same q); Parquet bodies are compressed
        // already (zstd inside) and go out as they are. Bodies known to be under
        // `COMPRESS_MIN_BYTES` (problems, refusals, small pages) go out as they are: they fit in
        // a packet either way, and an encoder's context costs more than the whole answer
        // (a zstd context was 6% of the server's CPU under a flood of 429s).
        let predicate = SizeAbove::new(COMPRESS_MIN_BYTES)
            .and(NotForContentType::GRPC)
            .and(NotForContentType::IMAGES)
            .and(NotForContentType::SSE)
            .and(NotForContentType::const_new(
                datagate_query::encode::Format::Parquet.content_type(),
            ));
        router = router.layer(
            CompressionLayer::new()
                .gzip(true)
                .zstd(true)
                .quality(CompressionLevel::Fastest)
                .compress_when(predicate),
        );
    }
    // Outside fair use, so its refusals are recorded; inside the request id.
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::audit::audit,
        ))
        .layer(cors(&cfg.cors_allowed_origins))
        .layer(middleware::from_fn(request_context))
}

/// The answer of a handler that panicked: a 500 problem whose detail stays in the log.
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = datagate_query::executor::panic_message(payload.as_ref());
    metrics::counter!("datagate_handler_panics_total").increment(1);
    axum::response::IntoResponse::into_response(crate::problem::ApiError::internal(format!(
        "handler panicked: {message}"
    )))
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::IF_NONE_MATCH,
            header::ACCEPT,
        ])
        .expose_headers([
            X_REQUEST_ID,
            header::LINK,
            header::ETAG,
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            HeaderName::from_static("x-dataset-versions"),
        ])
        .max_age(Duration::from_secs(3600))
}

/// A client-supplied request id is kept when it is short and printable; otherwise a UUID v7.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// A request method as a label of bounded variety: the standard methods by name, any other as
/// `OTHER` (a client inventing a method per request must not grow the metrics, nor split the
/// audit log's counted refusals into one record each).
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// Gives the request an id, a span and metrics.
async fn request_context(req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %req.uri().path());
    let start = Instant::now();
    let mut resp = REQUEST_ID
        .scope(id.clone(), next.run(req).instrument(span.clone()))
        .await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "answered"
        );
    });
    metrics::counter!("datagate_http_requests_total",
        "route" => route.clone(), "method" => method_label(&method), "status" => status.to_string())
    .increment(1);
    metrics::histogram!("datagate_http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    if status == 413 || (has_body && status >= 400) {
        // The rest of a refused body may never be read, and then the connection ends: say so,
        // so a client does not send its next request on a connection being closed.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
