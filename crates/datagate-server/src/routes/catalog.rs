//! Browsing the catalog: departments, datasets, versions.

use super::{ApiQuery, Caller, DatasetPath, base_url, not_found_dataset};
use crate::api::{DatasetList, DatasetOut, DatasetQuery, DepartmentOut, VersionOut};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use datagate_catalog::{Dataset, DatasetFilter};
use datagate_core::AccessLevel;

const DEFAULT_PAGE: u64 = 20;
const MAX_PAGE: u64 = 1000;

/// The departments, with the number of datasets the caller sees in each.
#[utoipa::path(get, path = "/api/v1/departments", tag = "catalog",
    responses((status = 200, body = [DepartmentOut])))]
pub async fn list_departments(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DepartmentOut>>, ApiError> {
    let depts = state
        .catalog
        .list_departments(&caller.visible_levels())
        .await?;
    Ok(Json(depts.into_iter().map(DepartmentOut::from).collect()))
}

/// Searches the datasets the caller sees.
#[utoipa::path(get, path = "/api/v1/datasets", tag = "catalog", params(DatasetQuery),
    responses((status = 200, body = DatasetList), (status = 400, body = crate::api::Problem)))]
pub async fn list_datasets(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<DatasetQuery>,
) -> Result<Json<DatasetList>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(
            ApiError::bad_request(format!("limit must be between 1 and {MAX_PAGE}"))
                .with("parameter", "limit"),
        );
    }
    let access_level = q
        .access_level
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<AccessLevel>())
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()).with("parameter", "access_level"))?;
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let page = state
        .catalog
        .list_datasets(&DatasetFilter {
            visible_levels: caller.visible_levels(),
            q: non_empty(q.q),
            department: non_empty(q.department),
            tag: non_empty(q.tag),
            access_level,
            limit,
            offset: q.offset.unwrap_or(0),
        })
        .await?;
    let base = base_url(&state, &headers);
    Ok(Json(DatasetList {
        datasets: page
            .datasets
            .iter()
            .map(|d| DatasetOut::new(d, &base, caller.sees_private(&d.department)))
            .collect(),
        total: page.total,
    }))
}

/// A dataset the caller can see, or 404.
pub(crate) async fn visible_dataset(
    state: &AppState,
    caller: &Caller,
    path: &DatasetPath,
) -> Result<Dataset, ApiError> {
    match state
        .catalog
        .get_dataset(&path.department, &path.name)
        .await?
    {
        Some(d)
            if d.unpublished_at.is_none()
                && caller.visible_levels().contains(&d.metadata.access_level) =>
        {
            Ok(d)
        }
        _ => Err(not_found_dataset(&path.department, &path.name)),
    }
}

/// A dataset's metadata, schema, current version and history.
#[utoipa::path(get, path = "/api/v1/datasets/{dept}/{name}", tag = "catalog",
    params(("dept" = String, Path, description = "department id"), ("name" = String, Path, description = "dataset name")),
    responses((status = 200, body = DatasetOut), (status = 404, body = crate::api::Problem)))]
pub async fn get_dataset(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    path: DatasetPath,
) -> Result<Json<DatasetOut>, ApiError> {
    let d = visible_dataset(&state, &caller, &path).await?;
    let versions = state.catalog.list_versions(&d.department, &d.name).await?;
    let mut out = DatasetOut::new(
        &d,
        &base_url(&state, &headers),
        caller.sees_private(&d.department),
    );
    out.versions = Some(versions.iter().map(VersionOut::from).collect());
    Ok(Json(out))
}

/// A dataset's version history, newest first.
#[utoipa::path(get, path = "/api/v1/datasets/{dept}/{name}/versions", tag = "catalog",
    params(("dept" = String, Path, description = "department id"), ("name" = String, Path, description = "dataset name")),
    responses((status = 200, body = [VersionOut]), (status = 404, body = crate::api::Problem)))]
pub async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    path: DatasetPath,
) -> Result<Json<Vec<VersionOut>>, ApiError> {
    let d = visible_dataset(&state, &caller, &path).await?;
    let versions = state.catalog.list_versions(&d.department, &d.name).await?;
    Ok(Json(versions.iter().map(VersionOut::from).collect()))
}
