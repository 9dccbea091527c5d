//! The OpenAPI 3.1 document: the handlers' annotations, plus what the layers around every
//! route answer (see `add_layer_answers`), so the document matches the server.

use serde_json::{Value, json};
use std::sync::LazyLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "datagate",
        description = "Open-data gateway: catalog, queries and exports of a city's public data.",
        license(name = "Apache-2.0")
    ),
    paths(
        crate::routes::ops::healthz,
        crate::routes::ops::readyz,
        crate::routes::ops::metrics,
        crate::routes::ops::openapi,
        crate::routes::catalog::list_departments,
        crate::routes::catalog::list_datasets,
        crate::routes::catalog::get_dataset,
        crate::routes::catalog::list_versions,
        crate::routes::dcat::data_json,
        crate::routes::publish::create_department,
        crate::routes::publish::register_dataset,
        crate::routes::publish::patch_dataset,
        crate::routes::publish::unpublish_dataset,
        crate::routes::publish::republish_dataset,
        crate::routes::publish::upload_version,
        crate::routes::data::rows,
        crate::routes::data::export,
        crate::routes::data::query_post,
        crate::routes::data::query_get,
        crate::routes::applications::apply,
        crate::routes::applications::list_applications,
        crate::routes::applications::approve,
        crate::routes::applications::reject,
        crate::routes::applications::list_grants,
        crate::routes::applications::revoke_grant,
        crate::routes::keys::create_key,
        crate::routes::keys::list_keys,
        crate::routes::keys::revoke_key,
        crate::routes::keys::update_key,
        crate::routes::keys::me,
        crate::routes::audit::events,
        crate::routes::audit::query,
        crate::routes::audit::verify,
        crate::routes::audit::usage,
        crate::routes::audit::checkpoint,
        crate::routes::audit::public_key,
    ),
    // Schemas only parameters name (the bodies' schemas are collected from the handlers).
    components(schemas(
        crate::api::DataPage,
        crate::api::ResultColumn,
        crate::api::UsageGroupName,
        crate::api::DatasetSortName,
        crate::api::ApplicationStatusName,
        crate::api::VersionModeName,
        crate::api::FormatName,
    )),
    tags(
        (name = "catalog", description = "Departments and datasets"),
        (name = "publishing", description = "Registering datasets and uploading versions"),
        (name = "data", description = "Rows, exports and read-only SQL"),
        (name = "access", description = "Applications for conditional datasets, and grants"),
        (name = "keys", description = "API keys and the caller's principal"),
        (name = "ops", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// The document as JSON text, built once.
pub fn document_json() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
        add_layer_answers(&mut doc);
        serde_json::to_string_pretty(&doc).expect("the document serialises")
    });
    &DOCUMENT
}

/// Media types of the data routes' results (`format=` or `Accept`).
const DATA_TYPES: [&str; 6] = [
    "application/json",
    "application/x-ndjson",
    "text/csv; charset=utf-8",
    "text/csv; charset=gb18030",
    "application/vnd.apache.arrow.stream",
    "application/vnd.apache.parquet",
];

/// Operations whose result is data in one of [`DATA_TYPES`].
const DATA_OPERATIONS: [(&str, &str); 7] = [
    ("get", "/api/v1/datasets/{dept}/{name}/rows"),
    ("get", "/api/v1/datasets/{dept}/{name}/export"),
    ("get", "/api/v1/query"),
    ("post", "/api/v1/query"),
    ("get", "/api/v1/audit/events"),
    ("post", "/api/v1/audit/query"),
    ("get", "/api/v1/audit/usage"),
];

/// Operations anonymous callers may perform (API.md §4); every other operation under `/api/`
/// answers 401 without a key (the handlers take [`crate::auth::KeyHolder`]).
const OPEN_TO_ANONYMOUS: [&str; 10] = [
    "list_departments",
    "list_datasets",
    "get_dataset",
    "list_versions",
    "rows",
    "export",
    "query_get",
    "query_post",
    "me",
    "data_json",
];

/// OpenAPI links from what an operation creates to what can be done with it next (create →
/// read → change → delete), for clients and for stateful API fuzzers:
/// (operation, status, target operation, parameters).
const LINKS: &[(&str, &str, &str, LinkParameters)] = &[
    ("register_dataset", "201", "get_dataset", DATASET_OF_BODY),
    ("register_dataset", "201", "patch_dataset", DATASET_OF_BODY),
    ("register_dataset", "201", "upload_version", DATASET_OF_BODY),
    ("register_dataset", "201", "list_versions", DATASET_OF_BODY),
    ("register_dataset", "201", "rows", DATASET_OF_BODY),
    ("register_dataset", "201", "export", DATASET_OF_BODY),
    ("register_dataset", "201", "apply", DATASET_OF_BODY),
    (
        "register_dataset",
        "201",
        "unpublish_dataset",
        DATASET_OF_BODY,
    ),
    ("upload_version", "201", "rows", DATASET_OF_PATH),
    ("upload_version", "201", "list_versions", DATASET_OF_PATH),
    (
        "create_department",
        "201",
        "list_datasets",
        &[("department", "$response.body#/id")],
    ),
    ("apply", "201", "approve", &[("id", "$response.body#/id")]),
    ("apply", "201", "reject", &[("id", "$response.body#/id")]),
    (
        "approve",
        "201",
        "revoke_grant",
        &[("id", "$response.body#/id")],
    ),
    (
        "create_key",
        "201",
        "update_key",
        &[("id", "$response.body#/id")],
    ),
    (
        "create_key",
        "201",
        "revoke_key",
        &[("id", "$response.body#/id")],
    ),
];
/// A link's parameters: (parameter, runtime expression).
type LinkParameters = &'static [(&'static str, &'static str)];
const DATASET_OF_BODY: LinkParameters = &[
    ("dept", "$response.body#/department"),
    ("name", "$response.body#/name"),
];
const DATASET_OF_PATH: LinkParameters = &[
    ("dept", "$request.path.dept"),
    ("name", "$request.path.name"),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Adds to the handlers' own annotations what the layers around every route answer, so the
/// document lists every status, media type, header and security requirement the server can
/// send (API.md §5 Ops). One place, because the layers are one place:
/// - every `/api/` and `/catalog/` route passes key checks, fair use and the audit log: 401 for
///   a bad key, 429 over a limit, 503 when the audit log cannot record; `RateLimit` and
///   `RateLimit-Policy` on every answer, `Retry-After` on 429 and 503;
/// - a request with path parameters can name nothing (404), with query parameters or a body
///   can be malformed (400); a body can be too large (413), of the wrong type (415) or stall
///   (408);
/// - a handler that panics answers 500 (the panic layer);
/// - every error is `application/problem+json`; every answer carries `X-Request-Id`;
/// - data routes answer in five formats, with `ETag` and `X-Dataset-Versions`.
fn add_layer_answers(doc: &mut Value) {
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let header =
        |description: &str, schema: Value| json!({"description": description, "schema": schema});
    let request_id = header(
        "the request's id, also in the problem body and the log",
        json!({"type": "string"}),
    );
    let rate_limit = header(
        "remaining quota: `\"<tier>\";r=<remaining>;t=<seconds-to-reset>`",
        json!({"type": "string"}),
    );
    let rate_policy = header(
        "the caller's tier: `\"<tier>\";q=<quota>;w=<window-seconds>`",
        json!({"type": "string"}),
    );
    let retry_after = header(
        "seconds to wait before retrying",
        json!({"type": "integer", "minimum": 0}),
    );
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let gated = path.starts_with("/api/") || path.starts_with("/catalog/");
        for method in METHODS {
            let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) else {
                continue;
            };
            let params: Vec<String> = op
                .get("parameters")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p.get("in").and_then(Value::as_str).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let has_body = op.contains_key("requestBody");
            let requires_key = !op
                .get("operationId")
                .and_then(Value::as_str)
                .is_some_and(|id| OPEN_TO_ANONYMOUS.contains(&id));
            let data = DATA_OPERATIONS.contains(&(method, path.as_str()));
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("responses is an object");
            let mut errors: Vec<(&str, &str)> = vec![(
                "500",
                "internal error (a handler failed); the detail is in the log",
            )];
            if gated {
                errors.push((
                    "401",
                    "the API key is malformed, unknown, revoked or expired",
                ));
                errors.push((
                    "429",
                    "over the caller's rate, concurrency or daily-bytes limit",
                ));
                errors.push((
                    "503",
                    "unavailable: the audit log cannot record, or the gateway is overloaded",
                ));
            }
            if params.iter().any(|p| p == "path") {
                errors.push(("404", "not found, or not visible to the caller"));
            }
            if params.iter().any(|p| p == "query") || has_body {
                errors.push(("400", "malformed request"));
            }
            if has_body {
                errors.push(("408", "the request body stalled"));
                errors.push(("413", "the request body is larger than allowed"));
                errors.push(("415", "the request body's media type is not accepted"));
            }
            if data {
                errors.push(("406", "none of the accepted media types can be produced"));
                errors.push(("422", "over a query limit"));
                errors.push(("504", "the query ran out of time"));
            }
            for (status, description) in errors {
                responses
                    .entry(status)
                    .or_insert_with(|| json!({"description": description}));
            }
            for (status, response) in responses.iter_mut() {
                let Some(response) = response.as_object_mut() else {
                    continue;
                };
                let code: u16 = status.parse().unwrap_or(0);
                let headers = response
                    .entry("headers")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("headers is an object");
                headers.insert("X-Request-Id".into(), request_id.clone());
                if gated {
                    headers.insert("RateLimit".into(), rate_limit.clone());
                    headers.insert("RateLimit-Policy".into(), rate_policy.clone());
                }
                if code == 429 || code == 503 {
                    headers.insert("Retry-After".into(), retry_after.clone());
                }
                if data && (code == 200 || code == 304) {
                    headers.insert(
                        "ETag".into(),
                        header(
                            "the result's validator, for `If-None-Match`",
                            json!({"type": "string"}),
                        ),
                    );
                    headers.insert(
                        "X-Dataset-Versions".into(),
                        header(
                            "the dataset versions read: `dept/name@version`, comma-separated",
                            json!({"type": "string"}),
                        ),
                    );
                }
                if code >= 400 {
                    response.insert(
                        "content".into(),
                        json!({"application/problem+json": {"schema": problem}}),
                    );
                } else if data && code == 200 {
                    let json_schema = response
                        .get("content")
                        .and_then(|c| c.get("application/json"))
                        .and_then(|c| c.get("schema"))
                        .cloned()
                        .unwrap_or_else(|| json!({"$ref": "#/components/schemas/DataPage"}));
                    let mut content = serde_json::Map::new();
                    for media in DATA_TYPES {
                        let schema = match media {
                            "application/json" => json_schema.clone(),
                            "application/x-ndjson"
                            | "text/csv; charset=utf-8"
                            | "text/csv; charset=gb18030" => {
                                json!({"type": "string"})
                            }
                            _ => json!({"type": "string", "contentMediaType": media}),
                        };
                        content.insert(media.to_string(), json!({"schema": schema}));
                    }
                    response.insert("content".into(), Value::Object(content));
                }
            }
            let id = op
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            for (from, status, to, params) in LINKS.iter().filter(|l| l.0 == id) {
                let Some(response) = op
                    .get_mut("responses")
                    .and_then(|r| r.get_mut(*status))
                    .and_then(Value::as_object_mut)
                else {
                    panic!("link from {from} {status}: the operation does not answer {status}");
                };
                let parameters: serde_json::Map<String, Value> = params
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                response
                    .entry("links")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("links is an object")
                    .insert(
                        to.to_string(),
                        json!({"operationId": to, "parameters": parameters}),
                    );
            }
            if gated {
                let bearer = json!({"bearer": []});
                let security = if requires_key {
                    json!([bearer])
                } else {
                    json!([{}, bearer])
                };
                op.insert("security".into(), security);
            } else {
                op.insert("security".into(), json!([]));
            }
        }
    }
    let components = doc
        .as_object_mut()
        .expect("the document is an object")
        .entry("components")
        .or_insert_with(|| json!({}));
    components["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "dg_<key id>_<secret>",
            "description": "an API key (API.md §3); without one a caller is anonymous where the operation allows it"
        }
    });
}
