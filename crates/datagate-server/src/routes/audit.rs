//! The audit trail for auditors and admins (API.md §5 "Audit"): records with filters, read-only
//! SQL over `audit.events`, verification of the chain and checkpoints, the latest signed
//! checkpoint and the key that signs them.
//!
//! Records are served through the same DataFusion path as the data API (formats, limits,
//! streaming): the log's segments, sealed and open, are read as the table `audit.events`.

use super::data::{negotiate, on_lane, stream_audit};
use super::{ApiJson, ApiQuery, Caller};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use datafusion::catalog::{MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datagate_access::Action;
use datagate_access::QueryTicket;
use datagate_audit::{Checkpoint, Verdict, reader};
use datagate_query::RequestSession;
use datagate_query::execute::{self, Deadline};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Events a page has when `limit` is not given, and at most.
const DEFAULT_EVENTS: u64 = 100;
const MAX_EVENTS: u64 = 10_000;

/// A request session whose catalog holds `audit.events`: every record of the log.
async fn audit_session(state: &AppState) -> Result<RequestSession, ApiError> {
    let dir = state.audit.dir().to_path_buf();
    let batch = tokio::task::spawn_blocking(move || {
        let mut records = Vec::new();
        reader::for_each_record(&dir, |r| records.push(r))?;
        reader::to_batch(&records)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let table = MemTable::try_new(reader::events_schema(), vec![vec![batch]])
        .map_err(ApiError::internal)?;
    let schema = MemorySchemaProvider::new();
    datafusion::catalog::SchemaProvider::register_table(&schema, "events".into(), Arc::new(table))
        .map_err(ApiError::internal)?;
    let catalog = MemoryCatalogProvider::new();
    datafusion::catalog::CatalogProvider::register_schema(&catalog, "audit", Arc::new(schema))
        .map_err(ApiError::internal)?;
    Ok(state
        .engine
        .request_session_over(Arc::new(catalog), false)?)
}

/// Filters of `GET /api/v1/audit/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    /// Records at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Records before this time (RFC 3339).
    pub to: Option<String>,
    /// A key id, or `anonymous`.
    pub principal: Option<String>,
    /// `department/dataset` (or `department.dataset`): records of requests that read it.
    pub dataset: Option<String>,
    /// An action, e.g. `data.rows`, `data.query`, `catalog.datasets`.
    pub action: Option<String>,
    /// An HTTP status.
    pub status: Option<u16>,
    /// Records per page (default 100, at most 10,000).
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    /// `json`, `ndjson`, `csv`, `arrow` or `parquet`.
    pub format: Option<String>,
}

fn time_param(name: &'static str, v: &str) -> Result<Expr, ApiError> {
    let t = chrono::DateTime::parse_from_rfc3339(v).map_err(|e| {
        ApiError::bad_request(format!("{name} must be an RFC 3339 time: {e}"))
            .with("parameter", name)
    })?;
    Ok(lit(ScalarValue::TimestampMicrosecond(
        Some(t.timestamp_micros()),
        Some("UTC".into()),
    )))
}

/// Audit records, newest first.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", params(EventsParams),
    responses((status = 200, description = "records, newest first, in the negotiated format"),
        (status = 400, body = crate::api::Problem), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    ticket: QueryTicket,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<EventsParams>,
) -> Result<Response, ApiError> {
    caller.authorize(Action::ReadAudit)?;
    let format = negotiate(p.format.as_deref(), &headers)?;
    let limit = p.limit.unwrap_or(DEFAULT_EVENTS);
    if limit > MAX_EVENTS {
        return Err(
            ApiError::bad_request(format!("limit must be at most {MAX_EVENTS}"))
                .with("parameter", "limit"),
        );
    }
    let mut filters: Vec<Expr> = Vec::new();
    if let Some(v) = &p.from {
        filters.push(col("ts").gt_eq(time_param("from", v)?));
    }
    if let Some(v) = &p.to {
        filters.push(col("ts").lt(time_param("to", v)?));
    }
    if let Some(v) = &p.principal {
        filters.push(col("key_id").eq(lit(v.clone())));
    }
    if let Some(v) = &p.action {
        filters.push(col("action").eq(lit(v.clone())));
    }
    if let Some(v) = p.status {
        filters.push(col("status").eq(lit(i64::from(v))));
    }
    if let Some(v) = &p.dataset {
        // `datasets` is `dept.name@version,...`: match whole names only.
        let name = v.replace('/', ".");
        let pattern = format!(",{name}@%");
        let exact = format!(",{name},%");
        let padded =
            datafusion::functions::expr_fn::concat(vec![lit(","), col("datasets"), lit(",")]);
        filters.push(
            padded
                .clone()
                .like(lit(pattern))
                .or(padded.like(lit(exact))),
        );
    }
    let session = audit_session(&state)
        .await?
        .for_caller(ticket.budget, false);
    let plan = events_plan(&session.ctx, filters, limit, p.offset.unwrap_or(0)).await?;
    let deadline = Some(Deadline::after(state.engine.limits().timeout));
    let lane = ticket.lane(state.engine.executor());
    let started = on_lane(&lane, deadline, async move {
        execute::start(&session, plan, deadline).await
    })
    .await?;
    stream_audit(&lane, started, format, None)
}

async fn events_plan(
    ctx: &SessionContext,
    filters: Vec<Expr>,
    limit: u64,
    offset: u64,
) -> Result<datafusion::logical_expr::LogicalPlan, ApiError> {
    let mut df = ctx
        .table("datagate.audit.events")
        .await
        .map_err(ApiError::internal)?;
    for f in filters {
        df = df.filter(f).map_err(ApiError::internal)?;
    }
    let df = df
        .sort(vec![col("seq").sort(false, false)])
        .and_then(|df| {
            df.limit(
                usize::try_from(offset).unwrap_or(usize::MAX),
                Some(usize::try_from(limit).unwrap_or(usize::MAX)),
            )
        })
        .map_err(ApiError::internal)?;
    Ok(df.into_unoptimized_plan())
}

/// `POST /api/v1/audit/query`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQueryBody {
    /// One read-only statement over `audit.events`.
    pub sql: String,
    /// `json` (default), `ndjson`, `csv`, `arrow` or `parquet`.
    pub format: Option<String>,
}

/// Read-only SQL over `audit.events`, under the data API's rules.
#[utoipa::path(post, path = "/api/v1/audit/query", tag = "audit", request_body = AuditQueryBody,
    responses((status = 200, description = "the result, in the negotiated format"),
        (status = 400, body = crate::api::Problem), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 422, body = crate::api::Problem)))]
pub async fn query(
    State(state): State<AppState>,
    caller: Caller,
    ticket: QueryTicket,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AuditQueryBody>,
) -> Result<Response, ApiError> {
    caller.authorize(Action::ReadAudit)?;
    let format = negotiate(body.format.as_deref(), &headers)?;
    let limits = state.engine.limits().clone();
    let deadline = Some(Deadline::after(limits.timeout));
    let session = audit_session(&state)
        .await?
        .for_caller(ticket.budget, caller.principal().sees_internals());
    let lane = ticket.lane(state.engine.executor());
    let sql = body.sql.clone();
    let started = on_lane(&lane, deadline, async move {
        let plan = datagate_query::sql::plan_sql(&session, &sql, &[]).await?;
        let plan = execute::limit_plan(plan, limits.max_query_rows)?;
        execute::start(&session, plan, deadline).await
    })
    .await?;
    stream_audit(&lane, started, format, Some(&body.sql))
}

/// `GET /api/v1/audit/verify`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyOut {
    pub ok: bool,
    pub events: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub head: Option<datagate_audit::verify::Head>,
    pub checkpoints: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    /// `modified`, `missing`, `reordered`, `truncated`, `bad-signature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<Verdict> for VerifyOut {
    fn from(v: Verdict) -> Self {
        Self {
            ok: v.ok,
            events: v.events,
            head: v.head,
            checkpoints: v.checkpoints,
            first_bad_seq: v.first_bad_seq,
            reason: v.reason,
            detail: v.detail,
        }
    }
}

/// Recomputes the chain over every segment and checks every signed checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = VerifyOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem)))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<VerifyOut>, ApiError> {
    caller.authorize(Action::ReadAudit)?;
    let dir = state.audit.dir().to_path_buf();
    let verdict = tokio::task::spawn_blocking(move || datagate_audit::verify_dir(&dir, None, None))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(verdict.into()))
}

/// A checkpoint as served: `{seq, hash, time, public_key, signature}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointOut {
    pub seq: u64,
    pub hash: String,
    pub time: chrono::DateTime<chrono::Utc>,
    pub public_key: String,
    pub signature: String,
}

impl From<Checkpoint> for CheckpointOut {
    fn from(c: Checkpoint) -> Self {
        Self {
            seq: c.seq,
            hash: c.hash,
            time: c.time,
            public_key: c.public_key,
            signature: c.signature,
        }
    }
}

/// The latest signed checkpoint; keep it to prove later that the log still extends it
/// (`datagate audit verify --checkpoint FILE`).
#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, body = CheckpointOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 404, body = crate::api::Problem)))]
pub async fn checkpoint(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<CheckpointOut>, ApiError> {
    caller.authorize(Action::ReadAudit)?;
    state
        .audit
        .latest_checkpoint()
        .map(|c| Json(c.into()))
        .ok_or_else(|| ApiError::not_found("no checkpoint has been signed yet"))
}

/// The Ed25519 public key checkpoints are signed with.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKeyOut {
    /// `ed25519`.
    pub algorithm: String,
    /// 32 bytes, hex.
    pub public_key: String,
}

#[utoipa::path(get, path = "/api/v1/audit/public-key", tag = "audit",
    responses((status = 200, body = PublicKeyOut), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem)))]
pub async fn public_key(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PublicKeyOut>, ApiError> {
    caller.authorize(Action::ReadAudit)?;
    Ok(Json(PublicKeyOut {
        algorithm: "ed25519".into(),
        public_key: state.audit.public_key().to_string(),
    }))
}
