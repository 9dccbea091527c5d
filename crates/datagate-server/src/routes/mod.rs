//! The routes, one module per area of API.md §5.

pub mod applications;
pub mod audit;
pub mod catalog;
pub mod data;
pub mod dcat;
pub mod keys;
pub mod ops;
pub mod page_bodies;
pub mod publish;

pub use crate::auth::{Caller, KeyHolder};
use crate::problem::{self, ApiError};
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

/// All routes, without the layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route(
            "/api/v1/departments",
            get(catalog::list_departments).post(publish::create_department),
        )
        .route(
            "/api/v1/datasets",
            get(catalog::list_datasets).post(publish::register_dataset),
        )
        .route(
            "/api/v1/datasets/{dept}/{name}",
            get(catalog::get_dataset)
                .patch(publish::patch_dataset)
                .delete(publish::unpublish_dataset),
        )
        .route(
            "/api/v1/datasets/{dept}/{name}/versions",
            get(catalog::list_versions).post(publish::upload_version),
        )
        .route(
            "/api/v1/datasets/{dept}/{name}/publish",
            post(publish::republish_dataset),
        )
        .route("/api/v1/datasets/{dept}/{name}/rows", get(data::rows))
        .route("/api/v1/datasets/{dept}/{name}/export", get(data::export))
        .route("/api/v1/query", get(data::query_get).post(data::query_post))
        .route(
            "/api/v1/datasets/{dept}/{name}/applications",
            post(applications::apply),
        )
        .route("/api/v1/applications", get(applications::list_applications))
        .route(
            "/api/v1/applications/{id}/approve",
            post(applications::approve),
        )
        .route(
            "/api/v1/applications/{id}/reject",
            post(applications::reject),
        )
        .route("/api/v1/grants", get(applications::list_grants))
        .route(
            "/api/v1/grants/{id}",
            axum::routing::delete(applications::revoke_grant),
        )
        .route("/api/v1/keys", get(keys::list_keys).post(keys::create_key))
        .route(
            "/api/v1/keys/{id}",
            axum::routing::delete(keys::revoke_key).patch(keys::update_key),
        )
        .route("/api/v1/me", get(keys::me))
        .route("/api/v1/audit/events", get(audit::events))
        .route("/api/v1/audit/query", post(audit::query))
        .route("/api/v1/audit/verify", get(audit::verify))
        .route("/api/v1/audit/usage", get(audit::usage))
        .route("/api/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/api/v1/audit/public-key", get(audit::public_key))
        .route("/catalog/data.json", get(dcat::data_json))
        .merge(injected_faults())
        .fallback(problem::no_route)
        .method_not_allowed_fallback(problem::wrong_method)
        .layer(axum::extract::DefaultBodyLimit::max(
            problem::JSON_BODY_LIMIT,
        ))
        .with_state(state)
}

/// Routes that fail on purpose, for the tests of what happens then: only in debug builds and
/// only with `DATAGATE_TEST_FAULTS=1` in the environment; a release build has none.
fn injected_faults() -> Router<AppState> {
    let wanted =
        cfg!(debug_assertions) && std::env::var("DATAGATE_TEST_FAULTS").is_ok_and(|v| v == "1");
    if !wanted {
        return Router::new();
    }
    tracing::warn!("DATAGATE_TEST_FAULTS=1: the fault-injection routes are on");
    Router::new().route(
        "/api/v1/_faults/panic",
        get(|| async {
            if true {
                panic!("injected fault: a handler panicked on purpose");
            }
            "unreachable"
        }),
    )
}

/// `Query<T>` whose rejection is a problem+json 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| query_rejection(&e.body_text()))
    }
}

/// A query string serde refused, said in the API's words and naming the parameter:
/// `limit: invalid digit found in string` → `limit must be a whole number ≥ 0` with
/// `parameter: limit`. Anything not recognised keeps serde's text.
fn query_rejection(text: &str) -> ApiError {
    let why = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text);
    let quoted = |s: &str| s.split('`').nth(1).map(str::to_string);
    // serde may put the parameter's name first (`bogus: unknown field ...`).
    let (field, reason) = match why.split_once(": ") {
        Some((f, r)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
            (Some(f.to_string()), r)
        }
        _ => (None, why),
    };
    let (parameter, detail) = if let Some(rest) = reason.strip_prefix("duplicate field ") {
        let p = quoted(rest).or(field);
        let d = p.as_ref().map(|p| format!("{p} is given more than once"));
        (p, d)
    } else if let Some(rest) = reason.strip_prefix("unknown field ") {
        let p = quoted(rest).or(field);
        let expected = rest
            .split_once(", expected ")
            .map(|(_, e)| e.replace('`', ""));
        let d = p.as_ref().map(|p| match &expected {
            Some(e) => format!("unknown parameter {p}; this endpoint takes {e}"),
            None => format!("unknown parameter {p}; this endpoint takes none"),
        });
        (p, d)
    } else if let Some(field) = field {
        let d = match reason {
            "invalid digit found in string" | "cannot parse integer from empty string" => {
                format!("{field} must be a whole number ≥ 0")
            }
            "number too large to fit in target type" => format!("{field} is too large"),
            other => format!("{field}: {other}"),
        };
        (Some(field), Some(d))
    } else {
        (None, None)
    };
    let e = ApiError::bad_request(detail.unwrap_or_else(|| format!("invalid query string: {why}")));
    match parameter {
        Some(p) => e.with("parameter", p),
        None => e,
    }
}

/// `Json<T>` whose rejection is a problem+json 400 (415 without a JSON content type).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(
                &e,
                state.config.server.body_read_timeout_secs,
            )),
        }
    }
}

/// The problem for a JSON body that could not be read: 415 without a JSON content type, 413
/// over the body limit, 408 when the body stalled past `server.body_read_timeout_secs`, 400
/// for anything malformed.
fn json_rejection(e: &axum::extract::rejection::JsonRejection, timeout_secs: u64) -> ApiError {
    // axum's words before serde's ("Failed to deserialize the JSON body into the target
    // type: ") say nothing the problem does not: serde's say what and where.
    let text = e.body_text();
    let serde_says = [
        "Failed to deserialize the JSON body into the target type: ",
        "Failed to parse the request body as JSON: ",
    ]
    .iter()
    .find_map(|p| text.strip_prefix(p))
    .unwrap_or(&text);
    let mut err = ApiError::bad_request(format!("invalid JSON body: {serde_says}"));
    let status = e.status();
    if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        err.status = status;
        err.kind = "unsupported-media-type";
        err.detail =
            "this endpoint takes a JSON body: send it with Content-Type: application/json".into();
    } else if status == StatusCode::PAYLOAD_TOO_LARGE {
        err = ApiError::json_too_large();
    } else if problem::caused_by_body_timeout(e) {
        err = ApiError::body_stalled(timeout_secs);
    } else if let Some(at) = json_error_at(e) {
        if let Some(detail) = time_field_detail(e) {
            err.detail = detail;
        }
        err = placed_in_json(err, at);
    }
    err
}

/// A JSON body read as `T` outside the [`ApiJson`] extractor (an optional body), refused in
/// the same words: the field's path, where in the body, and a time's form.
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    let placed =
        |detail: String, at: &serde_json::Error| placed_in_json(ApiError::bad_request(detail), at);
    let value = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let detail = time_field_detail(&e).unwrap_or_else(|| format!("invalid JSON body: {e}"));
        placed(detail, e.inner())
    })?;
    reader
        .end()
        .map_err(|e| placed(format!("invalid JSON body: {e}"), &e))?;
    Ok(value)
}

/// chrono's words for a date and time that does not parse, as serde passes them on.
const TIME_ERRORS: [&str; 6] = [
    "input is out of range",
    "no possible date and time matching input",
    "input is not enough for unique date and time",
    "input contains invalid characters",
    "premature end of input",
    "trailing input",
];

/// A field holding no date and time (`expires_at: "tomorrow"`) said with the form it takes;
/// serde says only `input contains invalid characters`.
fn time_field_detail(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let at = std::iter::successors(Some(e), |c| c.source())
        .find_map(|c| c.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>())?;
    let why = at.inner().to_string();
    TIME_ERRORS.iter().find(|t| why.starts_with(**t))?;
    Some(format!(
        "invalid JSON body: {} must be a date and time as RFC 3339 writes it, such as \
         2027-01-31T00:00:00Z or 2027-01-31T08:00:00+08:00 ({why})",
        at.path()
    ))
}

/// `err` with where in the JSON body it went wrong as fields too (the detail says it in words).
pub(crate) fn placed_in_json(err: ApiError, at: &serde_json::Error) -> ApiError {
    if at.line() == 0 {
        return err;
    }
    err.with("line", at.line()).with("column", at.column())
}

/// The JSON parser's own error behind a rejection, when it has a place in the body.
fn json_error_at<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a serde_json::Error> {
    std::iter::successors(Some(e), |c| c.source()).find_map(|c| {
        c.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>()
            .map(|p| p.inner())
            .or_else(|| c.downcast_ref::<serde_json::Error>())
    })
}

/// A `{dept}/{name}` path; names that cannot exist answer 404 like unknown ones.
pub struct DatasetPath {
    pub department: String,
    pub name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for DatasetPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((department, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        if datagate_core::DatasetRef::new(&department, &name).is_err() {
            return Err(not_found_dataset(&department, &name));
        }
        Ok(Self { department, name })
    }
}

/// The one answer for a dataset that does not exist or that the caller may not see.
pub fn not_found_dataset(department: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("dataset {department}/{name} not found"))
}

/// The base URL for links: `server.public_url`, else derived from the `Host` header.
pub fn base_url(state: &AppState, headers: &axum::http::HeaderMap) -> String {
    let configured = state.config.server.public_url.trim_end_matches('/');
    if !configured.is_empty() {
        return configured.to_string();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .map(str::to_string)
        .unwrap_or_else(|| state.config.server.listen.to_string());
    format!("http://{host}")
}

#[cfg(test)]
mod tests {
    use super::query_rejection;

    fn said(text: &str) -> (String, Option<String>) {
        let e = query_rejection(text);
        let parameter = e.extra.get("parameter").and_then(|v| v.as_str());
        (e.detail.clone(), parameter.map(str::to_string))
    }

    #[test]
    fn query_string_errors_name_their_parameter() {
        let p = "Failed to deserialize query string: ";
        for (text, detail, parameter) in [
            (
                "limit: invalid digit found in string",
                "limit must be a whole number ≥ 0",
                Some("limit"),
            ),
            (
                "status: number too large to fit in target type",
                "status is too large",
                Some("status"),
            ),
            (
                "offset: cannot parse integer from empty string",
                "offset must be a whole number ≥ 0",
                Some("offset"),
            ),
            (
                "duplicate field `limit`",
                "limit is given more than once",
                Some("limit"),
            ),
            (
                "unknown field `next`, expected one of `from`, `to`",
                "unknown parameter next; this endpoint takes one of from, to",
                Some("next"),
            ),
            (
                "unknown field `x`, there are no fields",
                "unknown parameter x; this endpoint takes none",
                Some("x"),
            ),
            (
                "bogus: unknown field `bogus`, expected one of `q`, `tag`",
                "unknown parameter bogus; this endpoint takes one of q, tag",
                Some("bogus"),
            ),
            (
                "something else entirely",
                "invalid query string: something else entirely",
                None,
            ),
        ] {
            let (d, param) = said(&format!("{p}{text}"));
            assert_eq!(
                (d.as_str(), param.as_deref()),
                (detail, parameter),
                "{text}"
            );
        }
    }
}
