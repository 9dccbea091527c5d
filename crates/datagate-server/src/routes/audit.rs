//! The audit trail for auditors and admins (API.md §5 "Audit"): records with filters, read-only
//! SQL over `audit.events`, verification of the chain and checkpoints, the latest signed
//! checkpoint and the key that signs them.
//!
//! Records are served through the same DataFusion path as the data API (formats, limits,
//! streaming): the log is read as the table `audit.events` — the Parquet copy of sealed
//! segments plus the segments not converted yet (`datagate_audit::table`).
//!
//! `GET /api/v1/audit/events` pages newest-first by seek: it reads the unconverted tail, then
//! converted segments newest-first in growing groups, each a `seq`-bounded query that prunes
//! every other segment before opening a file, and stops once the page is full; the `next` link
//! carries `before=<last seq>`, so a later page never rescans what an earlier one skipped.
//! Those queries read only the `seq`s of converted records (the filter columns and `seq`); the
//! page's records are then read from their chained lines by seq (`ColumnarIndex::records_by_seq`),
//! a few small reads each, instead of a Parquet page of every column per record found.

use super::data::{Asked, negotiate, on_lane, stream_audit, stream_audit_page};
use super::{ApiJson, ApiQuery, KeyHolder};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datagate_access::Action;
use datagate_access::QueryTicket;
use datagate_audit::{Checkpoint, Verdict, reader};
use datagate_query::RequestSession;
use datagate_query::execute::{self, Deadline, RowCap};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Events a page has when `limit` is not given, and at most.
const DEFAULT_EVENTS: u64 = 100;
const MAX_EVENTS: u64 = 10_000;

/// A request session whose catalog holds `audit.events`: every record of the log.
fn audit_session(state: &AppState) -> Result<RequestSession, ApiError> {
    let schema = MemorySchemaProvider::new();
    datafusion::catalog::SchemaProvider::register_table(
        &schema,
        "events".into(),
        state.audit.events_table(),
    )
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
    /// Records at or after this time (RFC 3339, or a date: its midnight UTC).
    pub from: Option<String>,
    /// Records before this time (RFC 3339, or a date: its midnight UTC).
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
    /// Records to skip (prefer `before`: the `next` link of a page carries it).
    pub offset: Option<u64>,
    /// Only records with a smaller `seq` (the seek cursor of the `next` link).
    pub before: Option<u64>,
    /// `json`, `ndjson`, `csv`, `arrow` or `parquet`.
    #[param(value_type = Option<crate::api::FormatName>)]
    pub format: Option<String>,
    /// CSV: `true` starts the UTF-8 text with a byte-order mark (for spreadsheets).
    pub bom: Option<bool>,
    /// CSV: `utf-8` (the default) or `gb18030`.
    pub charset: Option<String>,
}

/// A time window's two ends, each optional.
type TimeWindow = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The audit endpoints' `from` and `to`: an RFC 3339 time, or a date (`2026-11-01`), which is
/// its midnight UTC, so `from=2026-11-01&to=2026-12-01` is November (`to` is exclusive). A
/// window that ends before it starts is refused rather than answered empty.
fn time_window(from: Option<&str>, to: Option<&str>) -> Result<TimeWindow, ApiError> {
    let parse = |name: &'static str, v: Option<&str>| -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(v) = v else { return Ok(None) };
        let t = chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|e| {
                chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
                    // Without a time, it was meant as a date: the date's reason
                    // (`2026-13-01`: out of range), not the time's (premature end).
                    .map_err(|date| if v.contains(['T', 't', ' ']) { e } else { date })
            })
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "{name} must be an RFC 3339 time or a date (YYYY-MM-DD, midnight UTC), \
                     not {v:?}: {e}"
                ))
                .with("parameter", name)
            })?;
        Ok(Some(t))
    };
    let (from, to) = (parse("from", from)?, parse("to", to)?);
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::bad_request(format!(
            "from ({}) is after to ({}): the window holds nothing",
            f.to_rfc3339(),
            t.to_rfc3339()
        ))
        .with("parameter", "to"));
    }
    Ok((from, to))
}

fn time_lit(t: DateTime<Utc>) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(t.timestamp_micros()),
        Some("UTC".into()),
    ))
}

/// Audit records, newest first.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", params(EventsParams),
    responses((status = 200, description = "records, newest first, in the negotiated format"),
        (status = 400, body = crate::api::Problem), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem)))]
pub async fn events(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    ticket: QueryTicket,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<EventsParams>,
) -> Result<Response, ApiError> {
    caller.authorize(Action::ReadAudit)?;
    let format = negotiate(Asked::of(&p.format, p.bom, &p.charset), &headers)?;
    let limit = p.limit.unwrap_or(DEFAULT_EVENTS);
    if limit > MAX_EVENTS {
        return Err(
            ApiError::bad_request(format!("limit must be at most {MAX_EVENTS}"))
                .with("parameter", "limit"),
        );
    }
    let mut filters: Vec<Expr> = Vec::new();
    let (from, to) = time_window(p.from.as_deref(), p.to.as_deref())?;
    if let Some(t) = from {
        filters.push(col("ts").gt_eq(time_lit(t)));
    }
    if let Some(t) = to {
        filters.push(col("ts").lt(time_lit(t)));
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
    // In a cluster `audit.events` holds every gateway's records, each gateway numbering its
    // own chain: this listing pages this gateway's (SQL over audit.events reads them all).
    let node = &state.config.audit.node_id;
    if !node.is_empty() {
        filters.push(
            col("node_id")
                .eq(lit(node.clone()))
                .or(col("node_id").is_null()),
        );
    }
    let offset = p.offset.unwrap_or(0);
    let session = audit_session(&state)?.for_caller(ticket.budget, false);
    let windows = seek_windows(&state, p.before);
    let deadline = Some(Deadline::after(state.engine.limits().timeout));
    let lane = ticket.lane(state.engine.executor());
    // One more than the page, to know whether a next page exists.
    let wanted =
        usize::try_from(offset.saturating_add(limit).saturating_add(1)).unwrap_or(usize::MAX);
    let ctx = session.ctx.clone();
    let memory = session.limits.memory_bytes;
    let df_err = move |e| datagate_query::QueryError::from_datafusion(e, memory);
    let page_rows = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let index = state.audit.columnar().clone();
    let batches = on_lane(&lane, deadline, async move {
        // First the page's rows: the tail's whole, converted segments' by seq only (their
        // key, filter and seq columns; a page of a rare principal would otherwise decompress
        // a page of every column for every row it finds).
        let mut runs: Vec<Run> = Vec::new();
        let mut rows = 0usize;
        let (mut windows, mut scanned) = (windows, 0u64);
        while let Some(w) = windows.next(rows, wanted, scanned) {
            scanned += w.hi.saturating_sub(w.lo) + 1;
            let mut window = filters.clone();
            window.push(col("seq").gt_eq(lit(w.lo)));
            window.push(col("seq").lt_eq(lit(w.hi)));
            let part = events_query(&ctx, window, wanted - rows, !w.tail)
                .await
                .map_err(df_err)?;
            rows += part.iter().map(|b| b.num_rows()).sum::<usize>();
            runs.push(if w.tail {
                Run::Rows(part)
            } else {
                Run::Seqs(part.iter().flat_map(seqs_of).collect())
            });
            if rows >= wanted {
                break;
            }
        }
        // Then the page itself: converted rows read from their chained lines by seq (a few
        // small reads each); from Parquet only when a line cannot be read here.
        let mut got: Vec<RecordBatch> = Vec::new();
        for run in take_page(runs, skip, page_rows) {
            match run {
                Run::Rows(part) => got.extend(part),
                Run::Seqs(seqs) => match index.records_by_seq(&seqs) {
                    Ok(records) if records.len() == seqs.len() => got.push(
                        reader::to_batch(&records)
                            .map_err(|e| datagate_query::QueryError::Internal(e.to_string()))?,
                    ),
                    read => {
                        if let Err(e) = read {
                            tracing::warn!(error = %e, "audit lines unreadable by seq; reading Parquet");
                        }
                        got.extend(
                            rows_by_seq(&ctx, filters.clone(), &seqs)
                                .await
                                .map_err(df_err)?,
                        );
                    }
                },
            }
        }
        Ok::<_, datagate_query::QueryError>(got)
    })
    .await?;
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    let last_seq = page_last_seq(&batches, usize::try_from(limit).unwrap_or(usize::MAX));
    let next = last_seq.map(|seq| events_next_url(&state, &headers, &p, limit, seq));
    let page = datagate_query::pages::Page {
        schema: reader::events_schema(),
        batches,
        cached: false,
    };
    stream_audit_page(
        &lane,
        page,
        RowCap {
            rows: Some(limit),
            next_if_more: next,
            truncate: false,
        },
        format,
    )
}

/// The `seq` windows a newest-first page reads, newest first: the records after the last
/// converted segment (the decoded tail), then groups of converted segments sized by what the
/// windows so far found — as many segments as the hit rate says the rest of the page needs,
/// with a margin (at least double the last group while nothing was found) — so a page near
/// the head reads one segment and a rare filter still finishes in few queries.
struct Windows {
    tail: Option<(u64, u64)>,
    /// Converted segments at or before the cursor, newest first: `(first_seq, last_seq)`.
    rest: std::collections::VecDeque<(u64, u64)>,
    top: u64,
    group: usize,
}

impl Windows {
    fn next(&mut self, found: usize, wanted: usize, scanned: u64) -> Option<Window> {
        if let Some((lo, hi)) = self.tail.take() {
            return Some(Window { lo, hi, tail: true });
        }
        if self.rest.is_empty() {
            return None;
        }
        let per_segment = self
            .rest
            .front()
            .map_or(1, |(lo, hi)| hi.saturating_sub(*lo) + 1)
            .max(1);
        self.group = if found > 0 && scanned > 0 {
            let rate = found as f64 / scanned as f64;
            let need = (wanted - found) as f64 / rate * 1.25;
            ((need / per_segment as f64).ceil() as usize).max(1)
        } else {
            (self.group * 2).max(1)
        }
        .min(self.rest.len());
        let take: Vec<(u64, u64)> = self.rest.drain(..self.group).collect();
        let hi = take.first().map_or(0, |c| c.1).min(self.top);
        let lo = take.last().map_or(0, |c| c.0);
        Some(Window {
            lo,
            hi,
            tail: false,
        })
    }
}

/// Records `lo..=hi` of the log: the unconverted tail's, or converted segments'.
struct Window {
    lo: u64,
    hi: u64,
    tail: bool,
}

/// Rows of a page, newest first: read whole (the decoded tail's), or the seqs of rows whose
/// lines are read once the page is cut.
enum Run {
    Rows(Vec<RecordBatch>),
    Seqs(Vec<u64>),
}

/// The runs of rows `skip..skip + take` of `runs`.
fn take_page(runs: Vec<Run>, mut skip: usize, mut take: usize) -> Vec<Run> {
    let mut out = Vec::new();
    for run in runs {
        if take == 0 {
            break;
        }
        match run {
            Run::Rows(batches) => {
                let mut kept = Vec::new();
                for b in batches {
                    let n = b.num_rows();
                    if skip >= n {
                        skip -= n;
                        continue;
                    }
                    let k = (n - skip).min(take);
                    if k > 0 {
                        kept.push(b.slice(skip, k));
                    }
                    take -= k;
                    skip = 0;
                }
                out.push(Run::Rows(kept));
            }
            Run::Seqs(seqs) => {
                let n = seqs.len();
                if skip >= n {
                    skip -= n;
                    continue;
                }
                let k = (n - skip).min(take);
                out.push(Run::Seqs(seqs[skip..skip + k].to_vec()));
                take -= k;
                skip = 0;
            }
        }
    }
    out
}

/// The rows with `seqs` (newest first) read from `audit.events`, under the page's `filters`
/// (in a cluster another gateway's records carry the same seqs; its filters leave them out).
async fn rows_by_seq(
    ctx: &SessionContext,
    mut filters: Vec<Expr>,
    seqs: &[u64],
) -> Result<Vec<RecordBatch>, datafusion::error::DataFusionError> {
    let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
        return Ok(Vec::new());
    };
    filters.push(col("seq").gt_eq(lit(*lo)));
    filters.push(col("seq").lt_eq(lit(*hi)));
    filters.push(col("seq").in_list(seqs.iter().map(|s| lit(*s)).collect(), false));
    events_query(ctx, filters, seqs.len(), false).await
}

/// The `seq` column of a batch.
fn seqs_of(batch: &RecordBatch) -> Vec<u64> {
    batch
        .column_by_name("seq")
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .map(|a| a.values().to_vec())
        .unwrap_or_default()
}

/// The windows of a page ending before `before` (all records when `None`).
fn seek_windows(state: &AppState, before: Option<u64>) -> Windows {
    let converted: Vec<(u64, u64)> = state
        .audit
        .columnar()
        .snapshot()
        .iter()
        .filter(|m| !m.archived && m.records > 0)
        .map(|m| (m.first_seq, m.last_seq))
        .collect();
    // Records appended after this point are after the page's first query: not in this page.
    let head = state.audit.head().0;
    let top = before.map_or(head, |b| b.saturating_sub(1).min(head));
    let tail_from = converted.last().map_or(0, |c| c.1 + 1);
    Windows {
        tail: (tail_from <= top).then_some((tail_from, top)),
        rest: converted.into_iter().rev().filter(|c| c.0 <= top).collect(),
        top,
        group: 0,
    }
}

/// The `seq` of the page's last row when more rows follow it (the page holds `limit` rows
/// and `batches` more).
fn page_last_seq(batches: &[RecordBatch], limit: usize) -> Option<u64> {
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    if limit == 0 || total <= limit {
        return None;
    }
    let mut at = limit - 1;
    for b in batches {
        if at < b.num_rows() {
            let seq = b.column_by_name("seq")?.as_primitive_opt::<UInt64Type>()?;
            return Some(seq.value(at));
        }
        at -= b.num_rows();
    }
    None
}

/// The URL of the page after one that ended at `last_seq`.
fn events_next_url(
    state: &AppState,
    headers: &HeaderMap,
    p: &EventsParams,
    limit: u64,
    last_seq: u64,
) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("from", &p.from),
        ("to", &p.to),
        ("principal", &p.principal),
        ("dataset", &p.dataset),
        ("action", &p.action),
        ("format", &p.format),
        ("charset", &p.charset),
    ] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    if let Some(bom) = p.bom {
        q.append_pair("bom", if bom { "true" } else { "false" });
    }
    if let Some(s) = p.status {
        q.append_pair("status", &s.to_string());
    }
    q.append_pair("limit", &limit.to_string());
    q.append_pair("before", &last_seq.to_string());
    format!(
        "{}/api/v1/audit/events?{}",
        super::base_url(state, headers),
        q.finish()
    )
}

/// Records matching `filters`, newest first, at most `limit`: whole, or only their `seq`.
async fn events_query(
    ctx: &SessionContext,
    filters: Vec<Expr>,
    limit: usize,
    seq_only: bool,
) -> Result<Vec<RecordBatch>, datafusion::error::DataFusionError> {
    let mut df = ctx.table("datagate.audit.events").await?;
    for f in filters {
        df = df.filter(f)?;
    }
    if seq_only {
        df = df.select(vec![col("seq")])?;
    }
    df.sort(vec![col("seq").sort(false, false)])?
        .limit(0, Some(limit))?
        .collect()
        .await
}

/// `POST /api/v1/audit/query`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"sql": "SELECT key_id, sum(bytes_returned) AS bytes FROM audit.events WHERE ts >= TIMESTAMP '2026-11-01 00:00:00' AND dataset = 'justice/legal_aid_cases' GROUP BY key_id ORDER BY bytes DESC", "format": "json"})))]
#[serde(deny_unknown_fields)]
pub struct AuditQueryBody {
    /// One read-only statement over `audit.events`.
    pub sql: String,
    /// `json` (default), `ndjson`, `csv`, `arrow` or `parquet`.
    #[schema(value_type = Option<crate::api::FormatName>)]
    pub format: Option<String>,
    /// CSV: `true` starts the UTF-8 text with a byte-order mark (for spreadsheets).
    pub bom: Option<bool>,
    /// CSV: `utf-8` (the default) or `gb18030`.
    pub charset: Option<String>,
}

/// Read-only SQL over `audit.events`, under the data API's rules.
#[utoipa::path(post, path = "/api/v1/audit/query", tag = "audit", request_body = AuditQueryBody,
    responses((status = 200, description = "the result, in the negotiated format"),
        (status = 400, body = crate::api::Problem), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem), (status = 422, body = crate::api::Problem)))]
pub async fn query(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    ticket: QueryTicket,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AuditQueryBody>,
) -> Result<Response, ApiError> {
    run_query(&state, &caller, &ticket, &headers, &body)
        .await
        .or_else(|e| super::data::refused_query(&state, &body.sql, e))
}

async fn run_query(
    state: &AppState,
    caller: &datagate_access::Caller,
    ticket: &QueryTicket,
    headers: &HeaderMap,
    body: &AuditQueryBody,
) -> Result<Response, ApiError> {
    caller.authorize(Action::ReadAudit)?;
    let format = negotiate(Asked::of(&body.format, body.bom, &body.charset), headers)?;
    let limits = state.engine.limits().clone();
    let deadline = Some(Deadline::after(limits.timeout));
    let session =
        audit_session(state)?.for_caller(ticket.budget, caller.principal().sees_internals());
    let lane = ticket.lane(state.engine.executor());
    let sql = body.sql.clone();
    let started = on_lane(&lane, deadline, async move {
        let run = async {
            let plan = datagate_query::sql::plan_sql(&session, &sql, &[]).await?;
            let plan = execute::limit_plan(plan, limits.max_query_rows)?;
            execute::start(&session, plan, deadline).await
        };
        run.await
            .map_err(|e| datagate_query::sql::place_unreadable_literal(e, &sql))
    })
    .await?;
    stream_audit(&lane, started, format, Some(&body.sql))
}

/// Parameters of `GET /api/v1/audit/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// `dataset`, `principal` (the key id), `department` (the department of the datasets
    /// read) or `day` (UTC). Required.
    #[param(value_type = crate::api::UsageGroupName, required = true)]
    pub group_by: Option<String>,
    /// Records at or after this time (RFC 3339, or a date: its midnight UTC).
    pub from: Option<String>,
    /// Records before this time (RFC 3339, or a date: its midnight UTC).
    pub to: Option<String>,
    /// Only reads of this dataset (`department.name`).
    pub dataset: Option<String>,
    /// Only this principal's reads (a key id).
    pub principal: Option<String>,
    /// `json`, `ndjson`, `csv`, `arrow` or `parquet`.
    #[param(value_type = Option<crate::api::FormatName>)]
    pub format: Option<String>,
    /// CSV: `true` starts the UTF-8 text with a byte-order mark (for spreadsheets).
    pub bom: Option<bool>,
    /// CSV: `utf-8` (the default) or `gb18030`.
    pub charset: Option<String>,
}

/// What a usage report counts: a time range, one dataset, one principal (each optional).
#[derive(Debug, Default)]
struct UsageFilter {
    from: Option<i64>,
    to: Option<i64>,
    dataset: Option<String>,
    principal: Option<String>,
}

/// The SQL of a usage report: per group, reads (2xx rows pages and SQL queries), downloads
/// (2xx exports) — counted by their `begin` records — and the rows and bytes their `end`
/// records say were sent (a transfer a crash cut short counts with an `end` of outcome
/// `unknown` and no rows); a page answered whole counts by its one `read` record.
/// The dataset and principal are `$n` parameters, returned beside the text.
fn usage_sql(group_by: &str, f: &UsageFilter) -> Option<(String, Vec<serde_json::Value>)> {
    let (key, unnest) = match group_by {
        "dataset" => ("dataset", true),
        "department" => ("split_part(dataset, '.', 1)", true),
        "principal" => ("key_id", false),
        "day" => ("CAST(ts AS DATE)", false),
        _ => return None,
    };
    let mut filter = "kind IN ('begin', 'end', 'read') AND status < 400 \
        AND action IN ('data.rows', 'data.query', 'data.export')"
        .to_string();
    let mut params = Vec::new();
    if let Some(from) = f.from {
        filter.push_str(&format!(" AND ts >= to_timestamp_nanos({from})"));
    }
    if let Some(to) = f.to {
        filter.push_str(&format!(" AND ts < to_timestamp_nanos({to})"));
    }
    if let Some(principal) = &f.principal {
        params.push(serde_json::Value::from(principal.as_str()));
        filter.push_str(&format!(" AND key_id = ${}", params.len()));
    }
    // One dataset: its name among the record's datasets (a query may read several).
    let mut outer = String::new();
    if let Some(dataset) = &f.dataset {
        params.push(serde_json::Value::from(dataset.as_str()));
        outer = format!("WHERE dataset = ${}", params.len());
    }
    let source = if unnest || f.dataset.is_some() {
        format!(
            "(SELECT *, unnest(audit_datasets(datasets)) AS dataset \
             FROM datagate.audit.events WHERE {filter} AND datasets IS NOT NULL)"
        )
    } else {
        format!("(SELECT * FROM datagate.audit.events WHERE {filter})")
    };
    let sql = format!(
        "SELECT {key} AS {group_by}, \
           sum(CASE WHEN kind <> 'end' AND action <> 'data.export' THEN 1 ELSE 0 END) AS reads, \
           sum(CASE WHEN kind <> 'end' AND action = 'data.export' THEN 1 ELSE 0 END) AS downloads, \
           sum(CASE WHEN kind <> 'begin' THEN rows_returned ELSE 0 END) AS rows, \
           sum(CASE WHEN kind <> 'begin' THEN bytes_returned ELSE 0 END) AS bytes \
         FROM {source} AS e {outer} GROUP BY 1 ORDER BY 1"
    );
    Some((sql, params))
}

/// Reads, downloads, rows and bytes per dataset, principal, department or day, from the log.
#[utoipa::path(get, path = "/api/v1/audit/usage", tag = "audit", params(UsageParams),
    responses((status = 200, description = "one row per group: reads, downloads, rows, bytes"),
        (status = 400, body = crate::api::Problem), (status = 401, body = crate::api::Problem),
        (status = 403, body = crate::api::Problem)))]
pub async fn usage(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    ticket: QueryTicket,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<UsageParams>,
) -> Result<Response, ApiError> {
    caller.authorize(Action::ReadAudit)?;
    let format = negotiate(Asked::of(&p.format, p.bom, &p.charset), &headers)?;
    let (from, to) = time_window(p.from.as_deref(), p.to.as_deref())?;
    // The usage summaries count in nanoseconds: 1677 to 2262.
    let nanos = |name: &'static str, t: Option<DateTime<Utc>>| {
        t.map(|t| {
            t.timestamp_nanos_opt().ok_or_else(|| {
                ApiError::bad_request(format!("{name} must lie between the years 1678 and 2261"))
                    .with("parameter", name)
            })
        })
        .transpose()
    };
    let filter = UsageFilter {
        from: nanos("from", from)?,
        to: nanos("to", to)?,
        dataset: p.dataset.filter(|d| !d.is_empty()),
        principal: p.principal.filter(|k| !k.is_empty()),
    };
    let group_by = p.group_by.as_deref().unwrap_or_default();
    let (sql, params) = usage_sql(group_by, &filter).ok_or_else(|| {
        ApiError::bad_request(format!(
            "group_by must be dataset, principal, department or day (got {group_by:?})"
        ))
        .with("parameter", "group_by")
    })?;
    let limits = state.engine.limits().clone();
    let deadline = Some(Deadline::after(limits.timeout));
    let session = audit_session(&state)?.for_caller(ticket.budget, true);
    session
        .ctx
        .register_udf(datafusion::logical_expr::ScalarUDF::from(
            datagate_audit::table::DatasetNames::default(),
        ));
    let lane = ticket.lane(state.engine.executor());
    let started = on_lane(&lane, deadline, async move {
        let plan = datagate_query::sql::plan_sql(&session, &sql, &params).await?;
        execute::start(&session, plan, deadline).await
    })
    .await?;
    stream_audit(&lane, started, format, None)
}

/// `GET /api/v1/audit/verify`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"ok": true, "events": 1048576, "head": {"seq": 1048576, "hash": "c9e5ff5c7ac0ba3ff71f5a961600def33d0cd2c8a35da3184d806f664f048e27"}, "checkpoints": 24, "columnar_rows": 1040000})))]
pub struct VerifyOut {
    pub ok: bool,
    pub events: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub head: Option<datagate_audit::verify::Head>,
    pub checkpoints: u64,
    /// Rows of the Parquet copy proven equal to their chained records.
    pub columnar_rows: u64,
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
            columnar_rows: v.columnar_rows,
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
    KeyHolder(caller): KeyHolder,
) -> Result<Json<VerifyOut>, ApiError> {
    caller.authorize(Action::ReadAudit)?;
    // Auditors asking at once share one run (it reads the whole log).
    let audit = state.audit.clone();
    let verdict = tokio::task::spawn_blocking(move || audit.verify())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(verdict.into()))
}

/// A checkpoint as served: `{seq, hash, time, public_key, signature}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"seq": 1048576, "hash": "c9e5ff5c7ac0ba3ff71f5a961600def33d0cd2c8a35da3184d806f664f048e27", "time": "2026-12-01T12:00:00.000Z", "public_key": "c89b889c5b4c50eb1950b691f337838658d809c6cd564dd25b1e62e09039996c", "signature": "3f0a9d6be1c24e5a7b8c90d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829304"})))]
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
    KeyHolder(caller): KeyHolder,
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
#[schema(examples(json!({"algorithm": "ed25519", "public_key": "c89b889c5b4c50eb1950b691f337838658d809c6cd564dd25b1e62e09039996c"})))]
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
    KeyHolder(caller): KeyHolder,
) -> Result<Json<PublicKeyOut>, ApiError> {
    caller.authorize(Action::ReadAudit)?;
    Ok(Json(PublicKeyOut {
        algorithm: "ed25519".into(),
        public_key: state.audit.public_key().to_string(),
    }))
}
