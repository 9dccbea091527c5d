//! The OpenAPI 3.1 document, derived from the handlers' annotations.

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

/// The document as JSON text.
pub fn document_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
