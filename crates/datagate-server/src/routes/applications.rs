//! Applications for conditional datasets and grants (API.md §5 "Applications and grants").
//!
//! A consumer applies; the owning department's publisher (or an admin) approves — making a
//! grant, effective on the applicant's next request — or rejects with a reason; grants can be
//! revoked, effective at once. Consumers see their own applications and grants, publishers
//! their department's, admins all; anything else is 404.

use super::{ApiJson, ApiQuery, Caller, DatasetPath, KeyHolder};
use crate::api::{ApplicationOut, GrantOut};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use datagate_access::Action;
use datagate_catalog::{
    Application, ApplicationFilter, ApplicationStatus, Decision, GrantFilter, NewApplication, Role,
};
use datagate_core::AccessLevel;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"purpose": "研究法律援助案件的区域分布 (research on where legal aid is needed)"})))]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    /// What the data is for.
    pub purpose: String,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[schema(examples(json!({"expires_at": "2027-06-30T00:00:00Z"})))]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// When the grant ends (RFC 3339); without it, until revoked.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"reason": "用途与数据开放范围不符 (the purpose is outside what this dataset is opened for)"})))]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    pub reason: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApplicationsQuery {
    /// `pending`, `approved` or `rejected`.
    #[param(value_type = Option<crate::api::ApplicationStatusName>)]
    pub status: Option<String>,
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m)
}

/// Applies for a conditional dataset.
#[utoipa::path(post, path = "/api/v1/datasets/{dept}/{name}/applications", tag = "access",
    params(("dept" = String, Path), ("name" = String, Path)), request_body = ApplyBody,
    responses((status = 201, body = ApplicationOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 404, body = crate::api::Problem),
        (status = 409, description = "a pending application or an active grant for this dataset and key exists", body = crate::api::Problem),
        (status = 422, body = crate::api::Problem)))]
pub async fn apply(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    path: DatasetPath,
    ApiJson(body): ApiJson<ApplyBody>,
) -> Result<Response, ApiError> {
    caller.authorize(Action::Apply)?;
    let ds = super::catalog::visible_dataset(&state, &caller, &path).await?;
    if ds.metadata.access_level != AccessLevel::Conditional {
        return Err(invalid(format!(
            "{}/{} is {}: only conditional datasets take applications",
            ds.department,
            ds.name,
            ds.metadata.access_level.as_str()
        )));
    }
    if body.purpose.trim().is_empty() {
        return Err(invalid("purpose is empty"));
    }
    // One open question per dataset and applicant: a second application while one waits, or
    // while a grant is in force, only adds to the publisher's queue. (Two sent at the same
    // instant may both be taken; deciding one leaves the other to decide.)
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "conflict", m);
    let pending = state
        .catalog
        .list_applications(&ApplicationFilter {
            applicant: Some(caller.id().to_string()),
            department: Some(ds.department.clone()),
            status: Some(ApplicationStatus::Pending),
        })
        .await?;
    if let Some(a) = pending.iter().find(|a| a.dataset == ds.name) {
        return Err(conflict(format!(
            "application {} for {}/{} is still pending",
            a.id, ds.department, ds.name
        ))
        .with("application_id", a.id.clone()));
    }
    let grants = state
        .catalog
        .list_grants(&GrantFilter {
            key_id: Some(caller.id().to_string()),
            department: Some(ds.department.clone()),
        })
        .await?;
    let now = Utc::now();
    if let Some(g) = grants
        .iter()
        .find(|g| g.dataset == ds.name && g.is_active(now))
    {
        return Err(conflict(format!(
            "grant {} already opens {}/{} to this key",
            g.id, ds.department, ds.name
        ))
        .with("grant_id", g.id.clone()));
    }
    let app = state
        .catalog
        .create_application(NewApplication {
            department: ds.department,
            dataset: ds.name,
            applicant: caller.id().to_string(),
            purpose: body.purpose,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(ApplicationOut::from(app))).into_response())
}

/// The slice of applications and grants a caller sees: its own (consumer), its department's
/// (publisher), all (admin).
fn scope(caller: &Caller) -> (Option<String>, Option<String>) {
    match caller.key() {
        Some(k) if k.role == Role::Admin => (None, None),
        Some(k) if k.role == Role::Publisher => (None, k.department.clone()),
        Some(k) => (Some(k.id.clone()), None),
        None => (Some(String::new()), None),
    }
}

fn in_scope(caller: &Caller, applicant_or_key: &str, department: &str) -> bool {
    let (who, dept) = scope(caller);
    who.is_none_or(|w| w == applicant_or_key) && dept.is_none_or(|d| d == department)
}

/// Lists applications: a consumer's own, a publisher's department's, all for admins.
#[utoipa::path(get, path = "/api/v1/applications", tag = "access", params(ApplicationsQuery),
    responses((status = 200, body = [ApplicationOut]), (status = 400, body = crate::api::Problem),
        (status = 401, body = crate::api::Problem), (status = 403, body = crate::api::Problem)))]
pub async fn list_applications(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    ApiQuery(q): ApiQuery<ApplicationsQuery>,
) -> Result<Json<Vec<ApplicationOut>>, ApiError> {
    caller.authorize(Action::ListApplications)?;
    let status = q
        .status
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<ApplicationStatus>())
        .transpose()
        .map_err(|e| ApiError::bad_request(e).with("parameter", "status"))?;
    let (applicant, department) = scope(&caller);
    let apps = state
        .catalog
        .list_applications(&ApplicationFilter {
            applicant,
            department,
            status,
        })
        .await?;
    Ok(Json(apps.into_iter().map(ApplicationOut::from).collect()))
}

async fn decidable(state: &AppState, caller: &Caller, id: &str) -> Result<Application, ApiError> {
    let app = state
        .catalog
        .get_application(id)
        .await?
        .filter(|a| in_scope(caller, &a.applicant, &a.department))
        .ok_or_else(|| ApiError::not_found(format!("application {id} not found")))?;
    caller.authorize(Action::DecideApplication {
        department: &app.department,
    })?;
    Ok(app)
}

/// Approves an application: the applicant's key may read the dataset from its next request.
#[utoipa::path(post, path = "/api/v1/applications/{id}/approve", tag = "access",
    params(("id" = String, Path)), request_body = ApproveBody,
    responses((status = 201, body = GrantOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 404, body = crate::api::Problem),
        (status = 409, body = crate::api::Problem), (status = 422, body = crate::api::Problem)))]
pub async fn approve(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: no body approves without expiry.
    let body: ApproveBody = if body.iter().all(u8::is_ascii_whitespace) {
        ApproveBody::default()
    } else {
        super::json_body(&body)?
    };
    decidable(&state, &caller, &id).await?;
    if body.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(invalid("expires_at is in the past"));
    }
    let (_, grant) = state
        .catalog
        .decide_application(
            &id,
            Decision::Approve {
                expires_at: body.expires_at,
            },
            caller.id(),
        )
        .await?;
    let grant = grant.ok_or_else(|| ApiError::internal("an approval made no grant"))?;
    Ok((StatusCode::CREATED, Json(GrantOut::from(grant))).into_response())
}

/// Rejects an application with a reason.
#[utoipa::path(post, path = "/api/v1/applications/{id}/reject", tag = "access",
    params(("id" = String, Path)), request_body = RejectBody,
    responses((status = 200, body = ApplicationOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 404, body = crate::api::Problem),
        (status = 409, body = crate::api::Problem), (status = 422, body = crate::api::Problem)))]
pub async fn reject(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RejectBody>,
) -> Result<Json<ApplicationOut>, ApiError> {
    decidable(&state, &caller, &id).await?;
    if body.reason.trim().is_empty() {
        return Err(invalid("reason is empty"));
    }
    let (app, _) = state
        .catalog
        .decide_application(
            &id,
            Decision::Reject {
                reason: body.reason,
            },
            caller.id(),
        )
        .await?;
    Ok(Json(app.into()))
}

/// Lists grants (revoked and expired included): a consumer's own, a publisher's department's,
/// all for admins.
#[utoipa::path(get, path = "/api/v1/grants", tag = "access",
    responses((status = 200, body = [GrantOut]), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem)))]
pub async fn list_grants(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
) -> Result<Json<Vec<GrantOut>>, ApiError> {
    caller.authorize(Action::ListApplications)?;
    let (key_id, department) = scope(&caller);
    Ok(Json(
        state
            .catalog
            .list_grants(&GrantFilter { key_id, department })
            .await?
            .into_iter()
            .map(GrantOut::from)
            .collect(),
    ))
}

/// Revokes a grant, effective on the holder's next request.
#[utoipa::path(delete, path = "/api/v1/grants/{id}", tag = "access",
    params(("id" = String, Path)),
    responses((status = 200, body = GrantOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 404, body = crate::api::Problem)))]
pub async fn revoke_grant(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    Path(id): Path<String>,
) -> Result<Json<GrantOut>, ApiError> {
    caller.authorize(Action::ListApplications)?;
    let grant = state
        .catalog
        .get_grant(&id)
        .await?
        .filter(|g| in_scope(&caller, &g.key_id, &g.department))
        .ok_or_else(|| ApiError::not_found(format!("grant {id} not found")))?;
    caller.authorize(Action::DecideApplication {
        department: &grant.department,
    })?;
    Ok(Json(
        state.catalog.revoke_grant(&id, caller.id()).await?.into(),
    ))
}
