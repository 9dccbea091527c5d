//! Publishing: register, edit and unpublish datasets; upload versions (API.md §5 "Catalog",
//! "Ingest"). Allowed to admins and to publishers of the owning department.

use super::catalog::visible_dataset;
use super::{ApiJson, ApiQuery, DatasetPath, KeyHolder, base_url, not_found_dataset};
use crate::api::{AccessLevelName, MaskName, SensitivityName};
use crate::api::{DatasetOut, VersionOut};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datagate_access::Action;
use datagate_catalog::{Column, Contact, DatasetMetadata, NewDataset, VersionMode};
use datagate_core::AccessLevel;
use datagate_ingest::{Source, SourceFormat};
use futures::TryStreamExt;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use utoipa::{IntoParams, ToSchema};

/// `POST /api/v1/datasets`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"department": "transport", "name": "taxi_ranks", "title": "出租车候客点", "description": "全市出租车候客点位置与泊位数。Taxi ranks with locations and bays.", "access_level": "open", "license": "CC-BY-4.0", "tags": ["出租车", "transport"], "update_frequency": "quarterly", "contact": {"name": "交通运输局信息中心", "email": "xinxi@jtj.example.gov.cn"}, "primary_key": ["rank_id"], "columns": [{"name": "rank_id", "type": "utf8", "description": "候客点编码"}, {"name": "district", "type": "utf8", "description": "所属区县"}, {"name": "bays", "type": "int32", "description": "泊位数"}, {"name": "opened_on", "type": "date32", "description": "启用日期"}]})))]
#[serde(deny_unknown_fields)]
pub struct RegisterDataset {
    pub department: String,
    pub name: String,
    /// Not blank: the catalog, the portal and DCAT list the dataset by it.
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[schema(value_type = AccessLevelName)]
    pub access_level: AccessLevel,
    #[serde(default)]
    pub license: String,
    /// Keywords searched by `q` and filtered by `tag`; none blank.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub update_frequency: String,
    #[serde(default)]
    #[schema(value_type = ContactIn)]
    pub contact: Contact,
    pub temporal_coverage: Option<String>,
    pub spatial_coverage: Option<String>,
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Declared columns; without them the first upload's schema is inferred and then fixed.
    #[serde(default)]
    #[schema(value_type = Vec<ColumnIn>)]
    pub columns: Vec<Column>,
}

/// A declared column as `POST /api/v1/datasets` takes it (read into the catalog's `Column`;
/// this type only describes it to the OpenAPI document).
#[derive(ToSchema)]
#[schema(examples(json!({"name": "applicant_name", "type": "utf8", "description": "申请人姓名", "sensitivity": "masked", "mask": "partial"})))]
#[allow(dead_code)]
pub struct ColumnIn {
    name: String,
    /// `utf8`, `boolean`, `int8`..`int64`, `uint8`..`uint64`, `float32`, `float64`, `date32`,
    /// `timestamp(s|ms|us|ns)` or `decimal128(p,s)`.
    #[schema(rename = "type")]
    data_type: String,
    #[schema(default = "")]
    description: Option<String>,
    /// `public` (the default), `masked` or `private`.
    sensitivity: Option<SensitivityName>,
    /// How a `masked` column is served.
    mask: Option<MaskName>,
}

/// A dataset's contact point (read into the catalog's `Contact`).
#[derive(ToSchema)]
#[schema(examples(json!({"name": "交通运输局信息中心", "email": "xinxi@jtj.example.gov.cn"})))]
#[allow(dead_code)]
pub struct ContactIn {
    #[schema(default = "")]
    name: Option<String>,
    #[schema(default = "")]
    email: Option<String>,
}

/// Registers a dataset.
#[utoipa::path(post, path = "/api/v1/datasets", tag = "publishing", request_body = RegisterDataset,
    responses((status = 201, body = DatasetOut), (status = 400, body = crate::api::Problem),
        (status = 401, body = crate::api::Problem), (status = 403, body = crate::api::Problem),
        (status = 404, body = crate::api::Problem), (status = 409, body = crate::api::Problem),
        (status = 422, body = crate::api::Problem)))]
pub async fn register_dataset(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RegisterDataset>,
) -> Result<Response, ApiError> {
    caller.authorize(Action::ManageDataset {
        department: &req.department,
    })?;
    if datagate_core::DatasetRef::new(&req.department, &req.name).is_err() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "department and name must match ^[a-z][a-z0-9_]{0,62}$",
        ));
    }
    let (department, name) = (req.department.clone(), req.name.clone());
    let ds = state
        .catalog
        .create_dataset(NewDataset {
            department: req.department,
            name: req.name,
            metadata: DatasetMetadata {
                title: req.title,
                description: req.description,
                tags: req.tags,
                license: req.license,
                contact: req.contact,
                update_frequency: req.update_frequency,
                access_level: req.access_level,
                temporal_coverage: req.temporal_coverage,
                spatial_coverage: req.spatial_coverage,
            },
            primary_key: req.primary_key,
            columns: req.columns,
        })
        .await;
    let ds = match ds {
        Err(datagate_catalog::CatalogError::AlreadyExists(what)) => {
            // The caller manages this department: saying the name is held by an unpublished
            // dataset leaks nothing, and tells how to get it back.
            let hidden = state
                .catalog
                .get_dataset(&department, &name)
                .await?
                .is_some_and(|d| d.unpublished_at.is_some());
            let detail = if hidden {
                format!(
                    "{what} already exists, unpublished: POST \
                     /api/v1/datasets/{department}/{name}/publish makes it visible again"
                )
            } else {
                format!("{what} already exists")
            };
            return Err(ApiError::new(StatusCode::CONFLICT, "conflict", detail));
        }
        other => other?,
    };
    let out = DatasetOut::new(&ds, &base_url(&state, &headers), true).with_usage(&state.audit);
    let location = out.links.get("self").cloned().unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(out),
    )
        .into_response())
}

/// `PATCH /api/v1/datasets/{dept}/{name}`: any subset of the metadata, and column annotations.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"title": "公交线路（含夜班线）", "tags": ["公共交通", "公交", "夜班"], "columns": [{"name": "operator", "description": "运营单位（公司全称）"}]})))]
#[serde(deny_unknown_fields)]
pub struct PatchDataset {
    pub title: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Option<AccessLevelName>)]
    pub access_level: Option<AccessLevel>,
    pub license: Option<String>,
    pub tags: Option<Vec<String>>,
    pub update_frequency: Option<String>,
    #[schema(value_type = Option<ContactIn>)]
    pub contact: Option<Contact>,
    pub temporal_coverage: Option<String>,
    pub spatial_coverage: Option<String>,
    pub primary_key: Option<Vec<String>>,
    /// Description, sensitivity and mask of existing columns, by name (types are fixed by data).
    pub columns: Option<Vec<ColumnPatch>>,
}

/// A change to an existing column's annotations.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"name": "applicant_name", "sensitivity": "masked", "mask": "partial"})))]
#[serde(deny_unknown_fields)]
pub struct ColumnPatch {
    pub name: String,
    pub description: Option<String>,
    #[schema(value_type = Option<SensitivityName>)]
    pub sensitivity: Option<datagate_core::Sensitivity>,
    #[schema(value_type = Option<MaskName>)]
    pub mask: Option<datagate_core::Mask>,
}

/// A new primary key must hold in the rows already published, as every upload is held to it:
/// none of its columns empty in the current version. (Each column is counted with a query as
/// the caller, who is of the owning department or an admin and so reads the rows as stored.)
async fn key_holds_in_published_rows(
    state: &AppState,
    caller: &datagate_access::Caller,
    ds: &datagate_catalog::Dataset,
    key: &[String],
) -> Result<(), ApiError> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let Some(version) = ds.current_version else {
        return Ok(());
    };
    // Unchanged, or naming a column the dataset lacks (the catalog refuses that one itself).
    let declared = |k: &String| ds.columns.iter().any(|c| &c.name == k);
    if key.is_empty() || key == ds.primary_key.as_slice() || !key.iter().all(declared) {
        return Ok(());
    }
    let principal = caller.principal();
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let counts: Vec<String> = key
        .iter()
        .map(|k| format!("count(*) FILTER (WHERE {} IS NULL)", quoted(k)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{}",
        counts.join(", "),
        quoted(&ds.department),
        quoted(&ds.name)
    );
    let session = state
        .engine
        .request_session(
            state.engine.readable_catalog_for(&principal, &sql).await?,
            false,
        )?
        .for_caller(
            state.config.tier("internal").1.query_budget,
            principal.sees_internals(),
        );
    let lane = state.engine.executor().lane(
        datagate_core::config::QueryPool::Reserved,
        "publishing",
        None,
    );
    let batches = lane
        .run(async move {
            let plan = datagate_query::sql::plan_sql(&session, &sql, &[]).await?;
            datagate_query::execute::start(&session, plan, None)
                .await?
                .collect()
                .await
        })
        .await?;
    for (i, column) in key.iter().enumerate() {
        let empty: i64 = batches
            .iter()
            .filter_map(|b| b.column(i).as_primitive_opt::<Int64Type>())
            .map(|a| a.values().iter().sum::<i64>())
            .sum();
        if empty > 0 {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!(
                    "primary key column {column:?} is empty in {} of version {version}; \
                     a key's columns may not be empty (replace the data with a version that has them)",
                    datagate_core::words::plural(empty.unsigned_abs(), "row")
                ),
            )
            .with("column", column.clone()));
        }
    }
    Ok(())
}

/// Changes a dataset's metadata.
#[utoipa::path(patch, path = "/api/v1/datasets/{dept}/{name}", tag = "publishing", request_body = PatchDataset,
    params(("dept" = String, Path, description = "department id"), ("name" = String, Path, description = "dataset name")),
    responses((status = 200, body = DatasetOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 404, body = crate::api::Problem),
        (status = 422, body = crate::api::Problem)))]
pub async fn patch_dataset(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    headers: HeaderMap,
    path: DatasetPath,
    ApiJson(p): ApiJson<PatchDataset>,
) -> Result<Json<DatasetOut>, ApiError> {
    let ds = visible_dataset(&state, &caller, &path).await?;
    caller.authorize(Action::ManageDataset {
        department: &ds.department,
    })?;
    let mut m = ds.metadata.clone();
    if let Some(v) = p.title {
        m.title = v;
    }
    if let Some(v) = p.description {
        m.description = v;
    }
    if let Some(v) = p.access_level {
        m.access_level = v;
    }
    if let Some(v) = p.license {
        m.license = v;
    }
    if let Some(v) = p.tags {
        m.tags = v;
    }
    if let Some(v) = p.update_frequency {
        m.update_frequency = v;
    }
    if let Some(v) = p.contact {
        m.contact = v;
    }
    if let Some(v) = p.temporal_coverage {
        m.temporal_coverage = Some(v).filter(|s| !s.is_empty());
    }
    if let Some(v) = p.spatial_coverage {
        m.spatial_coverage = Some(v).filter(|s| !s.is_empty());
    }
    if let Some(patches) = p.columns {
        let mut cols = Vec::with_capacity(patches.len());
        for cp in patches {
            let Some(existing) = ds.columns.iter().find(|c| c.name == cp.name) else {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!("the dataset has no column {:?}", cp.name),
                )
                .with("column", cp.name));
            };
            let mut c = existing.clone();
            if let Some(d) = cp.description {
                c.description = d;
            }
            if let Some(s) = cp.sensitivity {
                c.sensitivity = s;
                if s != datagate_core::Sensitivity::Masked {
                    c.mask = None;
                }
            }
            if cp.mask.is_some() {
                c.mask = cp.mask;
            }
            cols.push(c);
        }
        state
            .catalog
            .update_column_annotations(&ds.department, &ds.name, cols)
            .await?;
    }
    if let Some(key) = &p.primary_key {
        key_holds_in_published_rows(&state, &caller, &ds, key).await?;
    }
    let (updated, _) = state
        .catalog
        .update_dataset_metadata(&ds.department, &ds.name, m, p.primary_key)
        .await?;
    let updated = match state
        .catalog
        .get_dataset(&updated.department, &updated.name)
        .await?
    {
        Some(d) => d,
        None => updated,
    };
    Ok(Json(
        DatasetOut::new(&updated, &base_url(&state, &headers), true).with_usage(&state.audit),
    ))
}

/// Unpublishes a dataset: it is no longer visible or queryable; its files are kept.
#[utoipa::path(delete, path = "/api/v1/datasets/{dept}/{name}", tag = "publishing",
    params(("dept" = String, Path, description = "department id"), ("name" = String, Path, description = "dataset name")),
    responses((status = 204, description = "unpublished"), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 404, body = crate::api::Problem)))]
pub async fn unpublish_dataset(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    path: DatasetPath,
) -> Result<StatusCode, ApiError> {
    let ds = visible_dataset(&state, &caller, &path).await?;
    caller.authorize(Action::ManageDataset {
        department: &ds.department,
    })?;
    state
        .catalog
        .unpublish_dataset(&ds.department, &ds.name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Publishes an unpublished dataset again: its versions and files were kept, so it is visible
/// and queryable as before, at the same version. Publishing a published dataset changes
/// nothing. An unpublished dataset exists only for those who manage it: 404 for anyone else.
#[utoipa::path(post, path = "/api/v1/datasets/{dept}/{name}/publish", tag = "publishing",
    params(("dept" = String, Path, description = "department id"), ("name" = String, Path, description = "dataset name")),
    responses((status = 200, body = DatasetOut, description = "published (again)"),
        (status = 401, body = crate::api::Problem), (status = 403, body = crate::api::Problem),
        (status = 404, body = crate::api::Problem)))]
pub async fn republish_dataset(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    headers: HeaderMap,
    path: DatasetPath,
) -> Result<Json<DatasetOut>, ApiError> {
    let found = state
        .catalog
        .get_dataset(&path.department, &path.name)
        .await?;
    match found {
        Some(ds) if ds.unpublished_at.is_some() => {
            let manage = Action::ManageDataset {
                department: &ds.department,
            };
            if caller.authorize(manage).is_err() {
                return Err(not_found_dataset(&path.department, &path.name));
            }
            state
                .catalog
                .republish_dataset(&ds.department, &ds.name)
                .await?;
        }
        _ => {
            let ds = visible_dataset(&state, &caller, &path).await?;
            caller.authorize(Action::ManageDataset {
                department: &ds.department,
            })?;
        }
    }
    let ds = visible_dataset(&state, &caller, &path).await?;
    Ok(Json(
        DatasetOut::new(&ds, &base_url(&state, &headers), true).with_usage(&state.audit),
    ))
}

/// Query parameters of an upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// `append` (default) adds rows to the current version; `replace` starts over.
    #[param(value_type = Option<crate::api::VersionModeName>)]
    pub mode: Option<String>,
    /// CSV field delimiter (one character; default `,`).
    pub delimiter: Option<String>,
}

/// Uploads data as the next version. The body streams in CSV (`text/csv`, header row
/// required; `text/tab-separated-values` for tabs), NDJSON (`application/x-ndjson`; also
/// `application/jsonl`), Parquet (`application/vnd.apache.parquet`) or
/// Arrow IPC (`application/vnd.apache.arrow.stream`; an Arrow file, `.arrow` or Feather v2,
/// is taken under that type or `application/vnd.apache.arrow.file`), optionally with
/// `Content-Encoding: gzip`. CSV and NDJSON are UTF-8 unless the Content-Type names another
/// encoding of the WHATWG Encoding Standard (`text/csv; charset=gb18030`, `gbk`, `big5`,
/// `utf-16le`, ...): they are then stored as UTF-8; an unknown charset answers 415. The version
/// becomes visible atomically, or not at all.
#[utoipa::path(post, path = "/api/v1/datasets/{dept}/{name}/versions", tag = "publishing",
    params(("dept" = String, Path, description = "department id"), ("name" = String, Path, description = "dataset name"), UploadQuery),
    request_body(description = "the data", content(
        (Vec<u8> = "text/csv"), (Vec<u8> = "text/tab-separated-values"),
        (Vec<u8> = "application/x-ndjson"), (Vec<u8> = "application/vnd.apache.parquet"),
        (Vec<u8> = "application/vnd.apache.arrow.stream"),
        (Vec<u8> = "application/vnd.apache.arrow.file"))),
    responses((status = 201, body = VersionOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 404, body = crate::api::Problem),
        (status = 409, body = crate::api::Problem), (status = 413, body = crate::api::Problem),
        (status = 415, body = crate::api::Problem), (status = 422, body = crate::api::Problem),
        (status = 507, description = "the gateway's storage is full; nothing was kept",
            body = crate::api::Problem)))]
pub async fn upload_version(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    path: DatasetPath,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ds = visible_dataset(&state, &caller, &path).await?;
    caller.authorize(Action::ManageDataset {
        department: &ds.department,
    })?;
    let mode: VersionMode = q
        .mode
        .as_deref()
        .unwrap_or("append")
        .parse()
        .map_err(|e: String| ApiError::bad_request(e).with("parameter", "mode"))?;
    let delimiter = match q.delimiter.as_deref() {
        None | Some("") => b',',
        Some(d) => SourceFormat::csv_delimiter(d)
            .map_err(|e| ApiError::bad_request(e).with("parameter", "delimiter"))?,
    };
    let unsupported = |detail: String| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            detail,
        )
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = SourceFormat::from_content_type(content_type, delimiter).ok_or_else(|| {
        unsupported(format!(
            "Content-Type {content_type:?} is not accepted; use text/csv, application/x-ndjson, application/vnd.apache.parquet or application/vnd.apache.arrow.stream (.file for an Arrow file)"
        ))
    })?;
    // A text body in another encoding than UTF-8 says so: `text/csv; charset=gb18030`.
    let charset = datagate_ingest::decode::charset_of(content_type).map_err(unsupported)?;
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None | Some("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => true,
        Some(e) => {
            return Err(unsupported(format!(
                "Content-Encoding {e:?} is not accepted; use gzip"
            )));
        }
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > state.config.limits.max_upload_bytes
    {
        return Err(
            datagate_ingest::IngestError::TooLarge(state.config.limits.max_upload_bytes).into(),
        );
    }
    // A body that stalls past `server.body_read_timeout_secs` answers 408, not the 422 of a
    // body that is not data.
    let stalled = Arc::new(AtomicBool::new(false));
    let seen = stalled.clone();
    let stream = body.into_data_stream().map_err(move |e| {
        if crate::problem::caused_by_body_timeout(&e) {
            seen.store(true, Ordering::Relaxed);
        }
        e.to_string()
    });
    let published = state
        .publisher
        .publish(
            &ds.department,
            &ds.name,
            Source {
                format,
                gzip,
                charset,
                mode,
                digest: None,
                created_by: caller.id().to_string(),
            },
            stream,
        )
        .await;
    if published.is_err() && stalled.load(Ordering::Relaxed) {
        return Err(ApiError::body_stalled(
            state.config.server.body_read_timeout_secs,
        ));
    }
    let v = published?;
    tracing::info!(dataset = %format!("{}/{}", ds.department, ds.name), version = v.version, rows_added = v.rows_added, "version published");
    Ok((StatusCode::CREATED, Json(VersionOut::from(&v))).into_response())
}

/// `POST /api/v1/departments`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"id": "housing", "name": "住房和城乡建设局", "description": "Housing and urban-rural development."})))]
#[serde(deny_unknown_fields)]
pub struct NewDepartmentBody {
    /// Matches `^[a-z][a-z0-9_]{0,62}$`.
    pub id: String,
    /// Shown wherever the department is listed; not blank.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// Creates a department (admins only).
#[utoipa::path(post, path = "/api/v1/departments", tag = "publishing", request_body = NewDepartmentBody,
    responses((status = 201, body = crate::api::DepartmentOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 409, body = crate::api::Problem),
        (status = 422, body = crate::api::Problem)))]
pub async fn create_department(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    ApiJson(req): ApiJson<NewDepartmentBody>,
) -> Result<Response, ApiError> {
    caller.authorize(Action::CreateDepartment)?;
    let d = state
        .catalog
        .create_department(datagate_catalog::NewDepartment {
            id: req.id,
            name: req.name,
            description: req.description,
        })
        .await?;
    let out = crate::api::DepartmentOut {
        id: d.id,
        name: d.name,
        description: d.description,
        dataset_count: 0,
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
