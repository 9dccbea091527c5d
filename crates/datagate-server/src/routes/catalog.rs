//! Browsing the catalog: departments, datasets, versions.

use super::{ApiQuery, Caller, DatasetPath, base_url, not_found_dataset};
use crate::api::{
    DatasetFacetsOut, DatasetList, DatasetOut, DatasetQuery, DepartmentOut, VersionOut,
    VersionsQuery,
};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use datagate_access::Action;
use datagate_catalog::{Dataset, DatasetFilter, DatasetOrder};
use datagate_core::AccessLevel;

const DEFAULT_PAGE: u64 = 20;
const MAX_PAGE: u64 = 1000;
/// The most datasets a sorted listing sorts.
const SORTED_MAX: u64 = 100_000;

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
    // Every order but `reads` is the catalog's own; `reads` (the audit log's counters) is
    // sorted here.
    let (order, by_reads) = match q.sort.as_deref().filter(|s| !s.is_empty()) {
        None | Some("name") => (DatasetOrder::Name, false),
        Some("updated") => (DatasetOrder::Updated, false),
        Some("title") => (DatasetOrder::Title, false),
        Some("reads") => (DatasetOrder::Name, true),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown sort {other:?}; use name, updated, title or reads"
            ))
            .with("parameter", "sort"));
        }
    };
    let offset = q.offset.unwrap_or(0);
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let unpublished = q.unpublished.unwrap_or(false);
    let department = non_empty(q.department);
    if unpublished {
        // Unpublished datasets are invisible but to the department that may publish them again.
        let Some(department) = &department else {
            return Err(ApiError::bad_request(
                "unpublished=true lists one department's unpublished datasets: add department",
            )
            .with("parameter", "department"));
        };
        caller.authorize(Action::ManageDataset { department })?;
    }
    let mut filter = DatasetFilter {
        visible_levels: caller.visible_levels(),
        q: non_empty(q.q),
        q_names: q.names == Some(true),
        department,
        tag: non_empty(q.tag),
        access_level,
        limit,
        offset,
        unpublished,
        skip_columns: q.schema == Some(false),
        update_frequency: non_empty(q.update_frequency),
        source_format: non_empty(q.source_format),
        order,
    };
    let facets_of = (q.facets == Some(true)).then(|| filter.clone());
    let skip_columns = filter.skip_columns;
    if by_reads {
        // Every match, sorted here, then paged (a city catalog is thousands of entries): the
        // matches without their columns, which the page's datasets then get.
        filter.limit = SORTED_MAX;
        filter.offset = 0;
        filter.skip_columns = true;
    }
    // The page and its facets read at once.
    let (page, facets) = tokio::join!(state.catalog.list_datasets(&filter), async {
        match &facets_of {
            Some(f) => state.catalog.dataset_facets(f).await.map(Some),
            None => Ok(None),
        }
    });
    let (mut page, facets) = (page?, facets?.map(DatasetFacetsOut::from));
    if by_reads {
        // Sorted on their keys, and only the page's answers made (with 5,000 datasets, making
        // every answer cost more than the listing).
        let found = &mut page.datasets;
        let today = chrono::Utc::now().date_naive();
        let usage = state.audit.usage();
        found.sort_by_cached_key(|d| {
            let u = usage.get(&format!("{}.{}", d.department, d.name), today);
            std::cmp::Reverse((u.reads_30d, u.reads_total))
        });
        *found = std::mem::take(found)
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        if !skip_columns {
            // A few lookups at once: with PostgreSQL each is a round trip, and a page may
            // hold up to 1,000 datasets.
            use futures::{StreamExt, TryStreamExt};
            let keys: Vec<(String, String)> = found
                .iter()
                .map(|d| (d.department.clone(), d.name.clone()))
                .collect();
            let wholes: Vec<_> = futures::stream::iter(keys)
                .map(|(department, name)| {
                    let catalog = state.catalog.clone();
                    async move { catalog.get_dataset(&department, &name).await }
                })
                .buffered(16)
                .try_collect()
                .await?;
            for (d, whole) in found.iter_mut().zip(wholes) {
                if let Some(whole) = whole {
                    d.columns = whole.columns;
                }
            }
        }
    }
    let base = base_url(&state, &headers);
    let datasets: Vec<DatasetOut> = page
        .datasets
        .iter()
        .map(|d| {
            let mut out = DatasetOut::new(d, &base, caller.sees_private(&d.department))
                .with_usage(&state.audit);
            if skip_columns {
                out.schema = None;
            }
            out
        })
        .collect();
    Ok(Json(DatasetList {
        datasets,
        total: page.total,
        facets,
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
    let (versions, total) = state
        .catalog
        .list_versions_page(&d.department, &d.name, DETAIL_VERSIONS, 0)
        .await?;
    let mut out = DatasetOut::new(
        &d,
        &base_url(&state, &headers),
        caller.sees_private(&d.department),
    );
    out.versions = Some(versions.iter().map(VersionOut::from).collect());
    out.versions_total = Some(total);
    Ok(Json(
        out.with_usage(&state.audit).with_daily_usage(&state.audit),
    ))
}

/// Versions a dataset's detail shows (the latest); the whole history is its `versions` link.
/// A dataset appended to every hour has 8,760 versions a year, which the detail (and the
/// portal's page built from it) would otherwise load and carry each time.
const DETAIL_VERSIONS: u64 = 20;

/// A dataset's version history, newest first: all of it, or a page (`limit`, `offset`).
#[utoipa::path(get, path = "/api/v1/datasets/{dept}/{name}/versions", tag = "catalog",
    params(("dept" = String, Path, description = "department id"), ("name" = String, Path, description = "dataset name"), VersionsQuery),
    responses((status = 200, body = [VersionOut]), (status = 400, body = crate::api::Problem),
        (status = 404, body = crate::api::Problem)))]
pub async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    path: DatasetPath,
    ApiQuery(q): ApiQuery<VersionsQuery>,
) -> Result<Json<Vec<VersionOut>>, ApiError> {
    let d = visible_dataset(&state, &caller, &path).await?;
    let versions = match (q.limit, q.offset) {
        (None, None) => state.catalog.list_versions(&d.department, &d.name).await?,
        (limit, offset) => {
            let limit = limit.unwrap_or(MAX_PAGE);
            if limit == 0 || limit > MAX_PAGE {
                return Err(ApiError::bad_request(format!(
                    "limit must be between 1 and {MAX_PAGE}"
                ))
                .with("parameter", "limit"));
            }
            let (page, _) = state
                .catalog
                .list_versions_page(&d.department, &d.name, limit, offset.unwrap_or(0))
                .await?;
            page
        }
    };
    Ok(Json(versions.iter().map(VersionOut::from).collect()))
}
