//! Operations endpoints: health, readiness, metrics, OpenAPI.

use crate::api::Readiness;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

/// 200 as soon as the process serves.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "serving", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 only when the catalog and the storage are usable, else 503 with the failing checks;
/// each distributed-query worker is listed (`worker <url>`: `ok` or why not) without deciding.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = BTreeMap::new();
    let catalog = state.catalog.ping().await;
    checks.insert(
        "catalog".to_string(),
        catalog
            .as_ref()
            .map(|_| "ok".to_string())
            .unwrap_or_else(|e| e.to_string()),
    );
    let storage = state.publisher.warehouse().ping().await;
    checks.insert(
        "storage".to_string(),
        storage
            .as_ref()
            .map(|_| "ok".to_string())
            .unwrap_or_else(|e| e.to_string()),
    );
    let audit = state.audit.failed();
    checks.insert(
        "audit".to_string(),
        audit.clone().unwrap_or_else(|| "ok".to_string()),
    );
    // Workers are reported, not required: without them queries run in the gateway.
    if let Some(d) = state.engine.distribution() {
        for w in d.health() {
            checks.insert(
                format!("worker {}", w.url),
                w.problem.unwrap_or_else(|| "ok".to_string()),
            );
        }
    }
    let ready = catalog.is_ok() && storage.is_ok() && audit.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, checks })).into_response()
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.engine.report_caches();
    metrics::gauge!("datagate_audit_decoded_bytes")
        .set(state.audit.events_table().decoded_bytes() as f64);
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// This API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}
