//! API keys (admin) and the caller's own principal (API.md §5 "Keys").

use super::{ApiJson, Caller, KeyHolder};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use datagate_access::Action;
use datagate_access::CallerId;
use datagate_catalog::{ApiKey, KeyToken, NewApiKey, Role};
use datagate_core::ANONYMOUS_TIER;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"name": "城市交通研究所", "role": "consumer", "tier": "standard", "expires_at": "2027-12-31T00:00:00Z"})))]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// Whose key it is (a person, an application).
    pub name: String,
    /// `admin`, `publisher`, `consumer` or `auditor`.
    pub role: String,
    /// The department of a publisher key (and only of one).
    pub department: Option<String>,
    /// The rate-limit tier (default `standard`; `internal` for departments).
    pub tier: Option<String>,
    /// When the key stops working (RFC 3339).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"id": "a19e89f52d97f664", "name": "城市交通研究所", "role": "consumer", "department": null, "tier": "standard", "created_at": "2026-12-01T11:08:38.416Z", "created_by": "admin1", "expires_at": null, "revoked_at": null})))]
pub struct KeyOut {
    pub id: String,
    pub name: String,
    pub role: String,
    pub department: Option<String>,
    pub tier: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for KeyOut {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            role: k.role.as_str().into(),
            department: k.department,
            tier: k.tier,
            created_at: k.created_at,
            created_by: k.created_by,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A new key: the full key string is in `key`, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"id": "a19e89f52d97f664", "name": "城市交通研究所", "role": "consumer", "department": null, "tier": "standard", "created_at": "2026-12-01T11:08:38.416Z", "created_by": "admin1", "expires_at": null, "revoked_at": null, "key": "dg_a19e89f52d97f664_b5a8bf6c7764cde0684c82191aa40179ed83b7a9a521b4c4b05b3f91a52a88a1"})))]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub info: KeyOut,
}

/// Creates a key; its secret is answered once and only its hash is kept.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = NewKeyBody,
    responses((status = 201, body = CreatedKey), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 422, body = crate::api::Problem)))]
pub async fn create_key(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> Result<Response, ApiError> {
    caller.authorize(Action::ManageKeys)?;
    let invalid = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m);
    let role: Role = body.role.parse().map_err(invalid)?;
    // The rest of the key is checked by the catalog (`NewApiKey::validate`).
    let tier = body.tier.unwrap_or_else(|| role.default_tier().to_string());
    known_tier(&state, &tier)?;
    let token = KeyToken::generate();
    let key = state
        .catalog
        .create_key(NewApiKey {
            id: token.id.clone(),
            name: body.name,
            role,
            department: body.department,
            tier,
            secret_hash: token.secret_hash(),
            created_by: caller.id().to_string(),
            expires_at: body.expires_at,
        })
        .await?;
    tracing::info!(key_id = %key.id, role = key.role.as_str(), "key created");
    let out = CreatedKey {
        key: token.expose(),
        info: key.into(),
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Lists keys, never their secrets.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, body = [KeyOut]), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem)))]
pub async fn list_keys(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
) -> Result<Json<Vec<KeyOut>>, ApiError> {
    caller.authorize(Action::ManageKeys)?;
    let keys = state.catalog.list_keys().await?;
    Ok(Json(keys.into_iter().map(KeyOut::from).collect()))
}

/// Revokes a key; its next request gets 401.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 404, body = crate::api::Problem)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.authorize(Action::ManageKeys)?;
    state.catalog.revoke_key(&id).await?;
    tracing::info!(key_id = %id, "key revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// 422 unless `tier` is configured.
fn known_tier(state: &AppState, tier: &str) -> Result<(), ApiError> {
    if state.config.tiers.contains_key(tier) {
        return Ok(());
    }
    let known: Vec<&str> = state.config.tiers.keys().map(String::as_str).collect();
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        format!("no tier {tier:?}; configured tiers: {}", known.join(", ")),
    )
    .with("parameter", "tier"))
}

/// `PATCH /api/v1/keys/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"tier": "premium"})))]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    /// Another fair-use tier (a `tiers.<name>` of the configuration).
    pub tier: Option<String>,
}

/// Changes a key's tier; its next request is limited by the new one.
#[utoipa::path(patch, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path)), request_body = KeyPatch,
    responses((status = 200, body = KeyOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 404, body = crate::api::Problem),
        (status = 422, body = crate::api::Problem)))]
pub async fn update_key(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<KeyPatch>,
) -> Result<Json<KeyOut>, ApiError> {
    caller.authorize(Action::ManageKeys)?;
    let key = match body.tier {
        Some(tier) => {
            known_tier(&state, &tier)?;
            let key = state.catalog.set_key_tier(&id, &tier).await?;
            tracing::info!(key_id = %id, tier = %tier, "key tier changed");
            key
        }
        None => state
            .catalog
            .get_key(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("key {id} not found")))?,
    };
    Ok(Json(key.into()))
}

/// The caller as the gateway sees it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"principal": "a19e89f52d97f664", "role": "consumer", "department": null, "tier": "standard", "expires_at": null, "limits": {"max_page_rows": 10000, "max_query_rows": 100000, "query_timeout_ms": 30000, "query_memory_bytes": 268435456, "tier": {"requests": 600, "window_secs": 60, "burst": 60, "max_concurrent_queries": 4, "daily_bytes": 10737418240_u64, "bytes_used_today": 52428800}}, "grants": [{"id": "01a2314a-d9c6-72a1-905a-da06004cdd8e", "dataset": "justice/legal_aid_cases", "expires_at": "2027-06-30T00:00:00Z"}]})))]
pub struct Me {
    /// The key id, or `anonymous`.
    pub principal: String,
    /// `admin`, `publisher`, `consumer`, `auditor` or `anonymous`.
    pub role: String,
    pub department: Option<String>,
    pub tier: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub limits: MeLimits,
    /// Active grants: `department/dataset` with their expiry.
    pub grants: Vec<MeGrant>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"max_page_rows": 10000, "max_query_rows": 100000, "query_timeout_ms": 30000, "query_memory_bytes": 268435456, "tier": {"requests": 600, "window_secs": 60, "burst": 60, "max_concurrent_queries": 4, "daily_bytes": 10737418240_u64, "bytes_used_today": 52428800}})))]
pub struct MeLimits {
    pub max_page_rows: u64,
    pub max_query_rows: u64,
    pub query_timeout_ms: u64,
    pub query_memory_bytes: u64,
    /// The caller's tier.
    pub tier: MeTier,
}

/// The caller's fair-use tier and where it stands today.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"requests": 600, "window_secs": 60, "burst": 60, "max_concurrent_queries": 4, "daily_bytes": 10737418240_u64, "bytes_used_today": 52428800})))]
pub struct MeTier {
    pub requests: u32,
    pub window_secs: u64,
    pub burst: u32,
    /// 0 = no cap.
    pub max_concurrent_queries: u32,
    /// 0 = no cap.
    pub daily_bytes: u64,
    /// Bytes of data sent to this caller since 00:00 UTC.
    pub bytes_used_today: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"id": "01a2314a-d9c6-72a1-905a-da06004cdd8e", "dataset": "justice/legal_aid_cases", "expires_at": "2027-06-30T00:00:00Z"})))]
pub struct MeGrant {
    pub id: String,
    pub dataset: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The caller's principal, role, department, tier, limits and grants.
#[utoipa::path(get, path = "/api/v1/me", tag = "keys",
    responses((status = 200, body = Me), (status = 401, body = crate::api::Problem)))]
pub async fn me(
    State(state): State<AppState>,
    caller: Caller,
    who: Option<Extension<CallerId>>,
) -> Json<Me> {
    let l = &state.config.limits;
    let key = caller.key();
    let (tier, t) = state
        .config
        .tier(key.map_or(ANONYMOUS_TIER, |k| k.tier.as_str()));
    Json(Me {
        principal: caller.id().to_string(),
        role: caller
            .role()
            .map_or("anonymous", |r| r.as_str())
            .to_string(),
        department: key.and_then(|k| k.department.clone()),
        tier: tier.to_string(),
        expires_at: key.and_then(|k| k.expires_at),
        limits: MeLimits {
            max_page_rows: l.max_page_rows,
            max_query_rows: l.max_query_rows,
            query_timeout_ms: l.query_timeout_ms,
            query_memory_bytes: l.query_memory_bytes,
            tier: MeTier {
                requests: t.requests,
                window_secs: t.window_secs,
                burst: t.burst,
                max_concurrent_queries: t.max_concurrent_queries,
                daily_bytes: t.daily_bytes,
                bytes_used_today: who.map_or(0, |Extension(w)| state.fair_use.bytes_used_today(&w)),
            },
        },
        grants: caller
            .grants()
            .iter()
            .map(|g| MeGrant {
                id: g.id.clone(),
                dataset: format!("{}/{}", g.department, g.dataset),
                expires_at: g.expires_at,
            })
            .collect(),
    })
}
