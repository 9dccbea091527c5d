//! The open-data API (API.md §5 "Data"): a page of rows, a whole-dataset export, and read-only
//! SQL, each streamed from DataFusion straight to the socket in the requested format.
//!
//! Every handler follows the same steps: resolve what the caller may read (a per-request
//! session catalog), plan, answer 304 when `If-None-Match` matches the tag of the plan's
//! dataset versions (nothing runs), start the query and wait for its first batch (so early
//! errors keep their status), then stream.

use super::{ApiJson, ApiQuery, Caller, DatasetPath, base_url};
use crate::audit::DataAccess;
use crate::problem::ApiError;
use crate::routes::page_bodies::{EncodedPage, PageBodies};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use datagate_access::QueryTicket;
use datagate_audit::DatasetVersion;
use datagate_query::encode::{CsvEncoding, Format};
use datagate_query::execute::{self, BodyChunk, BodyCoding, Deadline, RowCap};
use datagate_query::in_order::InOrder;
use datagate_query::plan_info::{self, DatasetRead};
use datagate_query::rows::{self, Paging, RowsRequest};
use datagate_query::sql;
use datagate_query::{Lane, QueryError};
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};

/// Rows a page has when `limit` is not given.
const DEFAULT_PAGE_ROWS: u64 = 100;

/// Parameters of `rows` (and, without `order`, `limit`, `offset`, of `export`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RowsParams {
    /// Comma-separated columns (double-quote names with commas, spaces or capitals).
    pub select: Option<String>,
    /// A boolean SQL expression over the dataset's columns.
    #[serde(rename = "where")]
    #[param(rename = "where")]
    pub filter: Option<String>,
    /// `col [asc|desc] [nulls first|last], ...`; rows otherwise come in storage order (the
    /// order they were uploaded in).
    pub order: Option<String>,
    /// Rows per page: default 100, at most `limits.max_page_rows`.
    #[param(value_type = Option<u64>)]
    pub limit: Option<String>,
    /// Rows to skip.
    #[param(value_type = Option<u64>)]
    pub offset: Option<String>,
    /// The version to read (the current one when absent); `next` links pin it.
    #[param(value_type = Option<u64>)]
    pub version: Option<String>,
    /// `json`, `ndjson`, `csv`, `arrow` or `parquet` (else by `Accept`).
    #[param(value_type = Option<crate::api::FormatName>)]
    pub format: Option<String>,
    /// CSV: `true` starts the UTF-8 text with a byte-order mark, so that spreadsheets in
    /// Chinese locales (Excel, WPS) open it as UTF-8 rather than GBK.
    pub bom: Option<bool>,
    /// CSV: the text's encoding, `utf-8` (the default) or `gb18030` (`gbk` is written as
    /// GB18030, whose bytes are GBK's for every character GBK has); also as
    /// `Accept: text/csv; charset=gb18030`.
    pub charset: Option<String>,
    /// Lowers the server's time limit for this request.
    #[param(value_type = Option<u64>)]
    pub timeout_ms: Option<String>,
}

/// `GET /api/v1/datasets/{dept}/{name}/rows`: one page.
#[utoipa::path(get, path = "/api/v1/datasets/{dept}/{name}/rows", tag = "data",
    params(("dept" = String, Path), ("name" = String, Path), RowsParams),
    responses(
        (status = 200, description = "the page, in the negotiated format"),
        (status = 304, description = "unchanged since the given ETag"),
        (status = 400, body = crate::api::Problem), (status = 403, body = crate::api::Problem),
        (status = 404, body = crate::api::Problem), (status = 406, body = crate::api::Problem),
        (status = 422, body = crate::api::Problem), (status = 503, body = crate::api::Problem),
        (status = 504, body = crate::api::Problem)))]
pub async fn rows(
    State(state): State<AppState>,
    caller: Caller,
    ticket: QueryTicket,
    path: DatasetPath,
    method: Method,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<RowsParams>,
) -> Result<Response, ApiError> {
    let max = state.engine.limits().max_page_rows;
    let limit = number("limit", p.limit.as_deref())?.unwrap_or(DEFAULT_PAGE_ROWS);
    if limit > max {
        return Err(ApiError::bad_request(format!(
            "limit must be at most {max} (use export for whole datasets)"
        ))
        .with("parameter", "limit")
        .with("max", max));
    }
    let offset = number("offset", p.offset.as_deref())?.unwrap_or(0);
    let read = match read_dataset(
        &state,
        &caller,
        &ticket,
        &path,
        &headers,
        &p,
        Paging::Page { limit, offset },
        method == Method::HEAD,
    )
    .await?
    {
        Ok(read) => read,
        Err(not_modified) => return Ok(not_modified),
    };
    let cap = RowCap {
        rows: Some(limit),
        next_if_more: read.next,
        truncate: false,
    };
    let source = match read.started {
        Source::Query(started, _) => Source::Query(started, cap),
        Source::Page(page, _, key) => Source::Page(page, cap, key),
        encoded @ Source::Encoded(_) => encoded,
        Source::Stored(_) => return Err(ApiError::internal("a rows page was not a query")),
    };
    stream_response(
        &read.lane,
        source,
        Answer {
            format: read.format,
            coding: body_coding(&state, &headers, read.format),
            read: &read.read,
            tag: Some(&read.tag),
            attachment: None,
            query_text: None,
        },
    )
}

/// `GET /api/v1/datasets/{dept}/{name}/export`: the whole (filtered, projected) dataset.
#[utoipa::path(get, path = "/api/v1/datasets/{dept}/{name}/export", tag = "data",
    params(("dept" = String, Path), ("name" = String, Path), RowsParams),
    responses(
        (status = 200, description = "the dataset as an attachment, streamed"),
        (status = 304, description = "unchanged since the given ETag"),
        (status = 400, body = crate::api::Problem), (status = 403, body = crate::api::Problem),
        (status = 404, body = crate::api::Problem), (status = 406, body = crate::api::Problem),
        (status = 422, body = crate::api::Problem), (status = 503, body = crate::api::Problem),
        (status = 504, body = crate::api::Problem)))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ticket: QueryTicket,
    path: DatasetPath,
    method: Method,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<RowsParams>,
) -> Result<Response, ApiError> {
    for (name, given) in [
        ("order", &p.order),
        ("limit", &p.limit),
        ("offset", &p.offset),
    ] {
        if given.is_some() {
            return Err(ApiError::bad_request(format!(
                "{name} applies to rows pages, not to exports"
            ))
            .with("parameter", name));
        }
    }
    let read = match read_dataset(
        &state,
        &caller,
        &ticket,
        &path,
        &headers,
        &p,
        Paging::Export,
        method == Method::HEAD,
    )
    .await?
    {
        Ok(read) => read,
        Err(not_modified) => return Ok(not_modified),
    };
    let filename = export_filename(&read.snapshot, read.format);
    stream_response(
        &read.lane,
        read.started,
        Answer {
            format: read.format,
            coding: body_coding(&state, &headers, read.format),
            read: &read.read,
            tag: Some(&read.tag),
            attachment: Some(&filename),
            query_text: None,
        },
    )
}

/// An export's file name: `department-name-vN.ext`.
fn export_filename(snapshot: &datagate_query::TableSnapshot, format: Format) -> String {
    format!(
        "{}-{}-v{}.{}",
        snapshot.department,
        snapshot.name,
        snapshot.version.unwrap_or(0),
        format.extension()
    )
}

/// Where a response's body comes from.
pub(crate) enum Source {
    /// A query, started (its first batch in hand), encoded as it streams, under a row cap.
    Query(execute::Started, RowCap),
    /// A page of at most `INLINE_PAGE_ROWS` rows in memory, encoded at once on this thread, under a row cap; its
    /// body kept in the page bodies under the key, if any.
    Page(
        datagate_query::pages::Page,
        RowCap,
        Option<(PageBodies, String)>,
    ),
    /// A page's body as it left before (`page_bodies`).
    Encoded(EncodedPage),
    /// A whole version's stored Parquet files, copied as one file (`stored_export`).
    Stored(Vec<std::path::PathBuf>),
}

/// Pages up to this many rows whose rows are in memory (a cached small version, a large one's
/// decoded blocks) are sliced and encoded on the thread that serves the connection
/// (microseconds); a page of that size sought on the executor is encoded there too, once its
/// rows are in hand, and its body kept; so is a query's result of up to that many rows seen
/// whole before its first bytes left. Larger pages, and everything else, stream from the
/// executor.
const INLINE_PAGE_ROWS: u64 = execute::SMALL_RESULT_ROWS;

/// A `rows` page or an export, started: its first batch is in hand (or its files found).
struct StartedRead {
    lane: Lane,
    started: Source,
    snapshot: datagate_query::TableSnapshot,
    format: Format,
    read: Vec<DatasetRead>,
    tag: String,
    /// A page's link to the next one.
    next: Option<String>,
}

/// The steps `rows` and `export` share: resolve what the caller may read of the dataset, answer
/// 304 when `If-None-Match` names the tag, or the headers alone to a `head` request (the `Err`
/// side), else plan and start.
#[allow(clippy::too_many_arguments)]
async fn read_dataset(
    state: &AppState,
    caller: &Caller,
    ticket: &QueryTicket,
    path: &DatasetPath,
    headers: &HeaderMap,
    p: &RowsParams,
    paging: Paging,
    head: bool,
) -> Result<Result<StartedRead, Response>, ApiError> {
    let limits = state.engine.limits().clone();
    let format = negotiate(Asked::of(&p.format, p.bom, &p.charset), headers)?;
    let version =
        number("version", p.version.as_deref())?.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    let (timeout, shape) = match paging {
        Paging::Page { limit, offset } => (
            Some(limits.timeout),
            format!("rows limit={limit} offset={offset}"),
        ),
        Paging::Export => (limits.export_timeout, "export".to_string()),
    };
    let deadline = deadline(timeout, p.timeout_ms.as_deref())?;
    let principal = caller.principal();
    let (dataset, snapshot) = state
        .engine
        .readable_dataset(&principal, &path.department, &path.name, version)
        .await?;
    let request = RowsRequest {
        select: p.select.clone(),
        filter: p.filter.clone(),
        order: p.order.clone(),
    };
    // What is read (the audit record's datasets): the plan's scans say it when there is one.
    let mut read = vec![DatasetRead::of(&snapshot)];
    let tag = plan_info::etag(
        &[
            &shape,
            &snapshot.qualified_name(),
            p.select.as_deref().unwrap_or(""),
            p.filter.as_deref().unwrap_or(""),
            p.order.as_deref().unwrap_or(""),
            format.tag(),
            &principal.view_tag(),
        ],
        &read,
    );
    if let Some(not_modified) = not_modified(headers, &tag, &read) {
        return Ok(Err(not_modified));
    }
    // A page of no rows (the columns alone) has no next page: a link to the same empty page
    // again would keep a client that follows links until there are none going for ever.
    let next = match paging {
        Paging::Page { limit, offset } if limit > 0 => Some(next_page_url(
            state,
            headers,
            path,
            p,
            limit,
            offset,
            snapshot.version,
        )),
        Paging::Page { .. } | Paging::Export => None,
    };
    let lane = ticket.lane(state.engine.executor());
    // Plans the request for the caller on the lane: what the plan reads (the audit record's
    // datasets: the pinned snapshot), and the query started unless only planned.
    let plan_read = |start: bool| -> Result<_, ApiError> {
        let mut session = state
            .engine
            .request_session(
                state.engine.dataset_catalog(&snapshot),
                request.needs_file_order(paging),
            )?
            .for_caller(ticket.budget, principal.sees_internals());
        // An Arrow export, whose encoding costs little beside its decoding, is decoded on every
        // worker of the lane, in storage order all the same. The other formats' encoding takes
        // a core at a lower rate than one core decodes: units would only add their overhead.
        let unit_rows = state.config.query.export_unit_rows;
        if paging == Paging::Export && format == Format::Arrow && unit_rows > 0 {
            let units = InOrder::new(lane.clone(), &snapshot).with_unit_rows(unit_rows);
            session = session.decoding_in_units(units);
        }
        let (table, primary_key, request) = (
            snapshot.clone(),
            dataset.primary_key.clone(),
            request.clone(),
        );
        Ok(on_lane(&lane, deadline, async move {
            let plan = rows::plan_rows(&session, &table, &primary_key, &request, paging).await?;
            let read = plan_info::datasets_read(&plan);
            if !start {
                return Ok((read, None));
            }
            // A value that fails to read as a literal's type is the data's (the literals of
            // `where` are checked before), and the message says so.
            let started = execute::start(&session, plan, deadline)
                .await
                .map_err(|e| sql::place_unreadable_literal(e, request.filter().unwrap_or("")))?;
            Ok((read, Some(started)))
        }))
    };
    if head {
        let (planned_read, _) = plan_read(false)?.await?;
        let filename = (paging == Paging::Export).then(|| export_filename(&snapshot, format));
        return Ok(Err(head_answer(Answer {
            format,
            coding: body_coding(state, headers, format),
            read: &planned_read,
            tag: Some(&tag),
            attachment: filename.as_deref(),
            query_text: None,
        })));
    }
    let started = 'source: {
        // A page asked for before (same tag, same link): its bytes as they left then.
        let body_key = next.as_deref().map(|n| PageBodies::key(&tag, n));
        if let Some(key) = &body_key
            && let Some(hit) = state.page_bodies.get(key)
        {
            break 'source Source::Encoded(hit);
        }
        // Most pages need no plan: slices of a cached small version or of a large version's
        // decoded blocks (ready at once when in memory), or a seek.
        let mut page =
            state
                .engine
                .pages()
                .ready_page(&snapshot, &request, paging, INLINE_PAGE_ROWS)?;
        if page.is_none()
            && let Paging::Page { limit, .. } = paging
        {
            let pages = state.engine.pages();
            let (table, primary_key, request) = (
                snapshot.clone(),
                dataset.primary_key.clone(),
                request.clone(),
            );
            let sought = on_lane(&lane, deadline, async move {
                pages
                    .page(&table, &primary_key, &request, paging, &limits)
                    .await
            })
            .await?;
            match sought {
                Some(large) if limit > INLINE_PAGE_ROWS => {
                    let started = execute::Started::from_batches(
                        large.schema,
                        large.batches,
                        state.engine.limits().memory_bytes,
                        deadline,
                    );
                    break 'source Source::Query(started, RowCap::default());
                }
                small => page = small,
            }
        }
        if let Some(page) = page {
            // Small: encoded at once, its body kept for the next client asking for it.
            break 'source Source::Page(
                page,
                RowCap::default(),
                body_key.map(|key| (state.page_bodies.clone(), key)),
            );
        }
        if paging == Paging::Export
            && format == Format::Parquet
            && request.select().is_none()
            && request.filter().is_none()
            && let Some(files) = datagate_query::stored_export::copyable(&snapshot)
            && datagate_query::stored_export::mergeable(&files).await
        {
            // The whole version as stored: its row groups are copied, not re-encoded.
            break 'source Source::Stored(files);
        }
        let (planned_read, started) = plan_read(true)?.await?;
        let started = started.ok_or_else(|| ApiError::internal("the query was not started"))?;
        read = planned_read;
        Source::Query(started, RowCap::default())
    };
    Ok(Ok(StartedRead {
        lane,
        started,
        snapshot,
        format,
        read,
        tag,
        next,
    }))
}

/// `POST /api/v1/query`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"sql": "SELECT district, count(*) AS n FROM environment.air_quality WHERE aqi > $1 GROUP BY district ORDER BY n DESC", "params": [100], "format": "json", "timeout_ms": 5000})))]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// One read-only statement; tables are `department.dataset`.
    pub sql: String,
    /// Values of `$1..$n` (or of `?` placeholders in order): exactly as many as the statement takes.
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
    /// `json` (default), `ndjson`, `csv`, `arrow` or `parquet`.
    #[schema(value_type = Option<crate::api::FormatName>)]
    pub format: Option<String>,
    /// CSV: `true` starts the UTF-8 text with a byte-order mark (for spreadsheets).
    pub bom: Option<bool>,
    /// CSV: `utf-8` (the default) or `gb18030`.
    pub charset: Option<String>,
    /// Lowers the server's time limit for this query.
    pub timeout_ms: Option<u64>,
}

/// `GET /api/v1/query` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// One read-only statement.
    pub sql: String,
    #[param(value_type = Option<crate::api::FormatName>)]
    pub format: Option<String>,
    /// CSV: `true` starts the UTF-8 text with a byte-order mark (for spreadsheets).
    pub bom: Option<bool>,
    /// CSV: `utf-8` (the default) or `gb18030`.
    pub charset: Option<String>,
    /// Lowers the server's time limit for this query.
    #[param(value_type = Option<u64>)]
    pub timeout_ms: Option<String>,
}

/// `POST /api/v1/query`: one read-only statement.
#[utoipa::path(post, path = "/api/v1/query", tag = "data", request_body = QueryBody,
    responses(
        (status = 200, description = "the result, in the negotiated format"),
        (status = 400, body = crate::api::Problem), (status = 406, body = crate::api::Problem),
        (status = 422, body = crate::api::Problem), (status = 503, body = crate::api::Problem),
        (status = 504, body = crate::api::Problem)))]
pub async fn query_post(
    State(state): State<AppState>,
    caller: Caller,
    ticket: QueryTicket,
    headers: HeaderMap,
    ApiJson(body): ApiJson<QueryBody>,
) -> Result<Response, ApiError> {
    let timeout = body.timeout_ms.map(|t| t.to_string());
    run_query(
        &state,
        &caller,
        &ticket,
        &headers,
        &body.sql,
        &body.params,
        Asked::of(&body.format, body.bom, &body.charset),
        timeout.as_deref(),
        Asking::Post,
    )
    .await
    .or_else(|e| refused_query(&state, &body.sql, e))
}

/// `GET /api/v1/query?sql=`: the same, cacheable (`ETag`, `If-None-Match`).
#[utoipa::path(get, path = "/api/v1/query", tag = "data", params(QueryParams),
    responses(
        (status = 200, description = "the result, in the negotiated format"),
        (status = 304, description = "unchanged since the given ETag"),
        (status = 400, body = crate::api::Problem), (status = 406, body = crate::api::Problem),
        (status = 422, body = crate::api::Problem), (status = 503, body = crate::api::Problem),
        (status = 504, body = crate::api::Problem)))]
pub async fn query_get(
    State(state): State<AppState>,
    caller: Caller,
    ticket: QueryTicket,
    method: Method,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<QueryParams>,
) -> Result<Response, ApiError> {
    run_query(
        &state,
        &caller,
        &ticket,
        &headers,
        &p.sql,
        &[],
        Asked::of(&p.format, p.bom, &p.charset),
        p.timeout_ms.as_deref(),
        Asking::Get {
            head: method == Method::HEAD,
        },
    )
    .await
    .or_else(|e| refused_query(&state, &p.sql, e))
}

/// A refusal of `text` as a response that carries the statement to its audit record
/// ([`crate::audit::RefusedQuery`]), so an auditor sees what was tried, not only what was read.
pub(crate) fn refused_query(
    state: &AppState,
    text: &str,
    e: ApiError,
) -> Result<Response, ApiError> {
    let mut refused = e.into_response();
    refused.extensions_mut().insert(crate::audit::RefusedQuery {
        text: text.to_string(),
        max_bytes: state.engine.limits().max_sql_bytes,
    });
    Ok(refused)
}

/// How a statement was asked: by `POST` (never cached), or by `GET` (tagged when repeatable),
/// for the headers alone when `head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asking {
    Post,
    Get { head: bool },
}

#[allow(clippy::too_many_arguments)]
async fn run_query(
    state: &AppState,
    caller: &Caller,
    ticket: &QueryTicket,
    headers: &HeaderMap,
    text: &str,
    params: &[serde_json::Value],
    asked: Asked<'_>,
    timeout_ms: Option<&str>,
    asking: Asking,
) -> Result<Response, ApiError> {
    let cacheable = matches!(asking, Asking::Get { .. });
    let limits = state.engine.limits().clone();
    let format = negotiate(asked, headers)?;
    let coding = body_coding(state, headers, format);
    let deadline = deadline(Some(limits.timeout), timeout_ms)?;
    let principal = caller.principal();
    let catalog = state.engine.readable_catalog_for(&principal, text).await?;
    let session = state
        .engine
        .request_session(catalog, false)?
        .for_caller(ticket.budget, principal.sees_internals());
    let lane = ticket.lane(state.engine.executor());
    let (sql_text, params) = (text.to_string(), params.to_vec());
    let (session, plan, read) = on_lane(&lane, deadline, async move {
        let plan = sql::plan_sql(&session, &sql_text, &params)
            .await
            .map_err(|e| sql::place_unreadable_literal(e, &sql_text))?;
        let read = plan_info::datasets_read(&plan);
        Ok((session, plan, read))
    })
    .await?;
    let tag = (cacheable && plan_info::is_repeatable(&plan)).then(|| {
        let normalised = text.split_whitespace().collect::<Vec<_>>().join(" ");
        plan_info::etag(
            &[
                "query",
                &normalised,
                format.tag(),
                &limits.max_query_rows.to_string(),
                &principal.view_tag(),
            ],
            &read,
        )
    });
    if let Some(tag) = &tag
        && let Some(not_modified) = not_modified(headers, tag, &read)
    {
        return Ok(not_modified);
    }
    let answer = Answer {
        format,
        coding,
        read: &read,
        tag: tag.as_deref(),
        attachment: None,
        query_text: Some(text),
    };
    if asking == (Asking::Get { head: true }) {
        return Ok(head_answer(answer));
    }
    let plan = execute::limit_plan(plan, limits.max_query_rows.saturating_add(1))?;
    let sql_text = text.to_string();
    let started = on_lane(&lane, deadline, async move {
        execute::start(&session, plan, deadline)
            .await
            .map_err(|e| sql::place_unreadable_literal(e, &sql_text))
    })
    .await?;
    let cap = RowCap {
        rows: Some(limits.max_query_rows),
        next_if_more: None,
        truncate: true,
    };
    // A small result seen whole before anything was sent (an aggregate's rows) is encoded at
    // once, like a page: a deadline that passes while its answer is on its way cannot cut it.
    let source = match started.whole(INLINE_PAGE_ROWS) {
        Ok((schema, batches)) => Source::Page(
            datagate_query::pages::Page {
                schema,
                batches,
                cached: false,
            },
            cap,
            None,
        ),
        Err(started) => Source::Query(started, cap),
    };
    stream_response(&lane, source, answer)
}

/// Runs `work` on `lane` (the query executor), answering 504 at `deadline` from this side
/// whatever the executor is doing; returning early aborts the work.
pub(crate) async fn on_lane<T: Send + 'static>(
    lane: &Lane,
    deadline: Option<Deadline>,
    work: impl Future<Output = Result<T, QueryError>> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(Deadline::run(deadline, lane.run(work)).await?)
}

/// What a request asks of its answer's format: `format=`, and for CSV `bom=` and `charset=`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Asked<'a> {
    pub format: Option<&'a str>,
    pub bom: Option<bool>,
    pub charset: Option<&'a str>,
}

impl<'a> Asked<'a> {
    /// From a request's `format`, `bom` and `charset` parameters.
    pub fn of(format: &'a Option<String>, bom: Option<bool>, charset: &'a Option<String>) -> Self {
        Self {
            format: format.as_deref(),
            bom,
            charset: charset.as_deref(),
        }
    }
}

/// The format from `format=`, else from `Accept` (JSON when neither says); a CSV answer's
/// encoding from `charset=` (else `Accept`'s charset) and `bom=`.
pub(crate) fn negotiate(asked: Asked<'_>, headers: &HeaderMap) -> Result<Format, ApiError> {
    let format = match asked.format.filter(|n| !n.is_empty()) {
        Some(name) => Format::from_name(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown format {name:?}; use json, ndjson, csv, arrow or parquet"
            ))
            .with("parameter", "format")
        })?,
        None => match headers.get(header::ACCEPT) {
            None => Format::Json,
            Some(accept) => accepted(accept.to_str().unwrap_or(""))?,
        },
    };
    csv_encoding(format, asked)
}

/// `bom=` and `charset=` applied to the negotiated format: they shape CSV text only, and a
/// GB18030 answer has no byte-order mark a spreadsheet would read.
fn csv_encoding(format: Format, asked: Asked<'_>) -> Result<Format, ApiError> {
    let charset = match asked.charset.filter(|c| !c.is_empty()) {
        None => None,
        Some(label) => Some(CsvEncoding::from_charset(label).ok_or_else(|| {
            ApiError::bad_request(format!(
                "charset {label:?} cannot be written; CSV is written in utf-8 (the default) \
                 or gb18030 (gbk, gb2312)"
            ))
            .with("parameter", "charset")
        })?),
    };
    let bom = asked.bom == Some(true);
    match format {
        Format::Csv(accepted) => match (charset.unwrap_or(accepted), bom) {
            (CsvEncoding::Gb18030, true) => Err(ApiError::bad_request(
                "bom=true marks UTF-8 text; GB18030 is read without one: ask for either",
            )
            .with("parameter", "bom")),
            (_, true) => Ok(Format::Csv(CsvEncoding::Utf8Bom)),
            (encoding, false) => Ok(Format::Csv(encoding)),
        },
        other if bom || charset.is_some_and(|c| c != CsvEncoding::Utf8) => {
            Err(ApiError::bad_request(format!(
                "bom and charset shape CSV text (format=csv), not {}",
                other.name()
            ))
            .with("parameter", if bom { "bom" } else { "charset" }))
        }
        other => Ok(other),
    }
}

/// The format of an `Accept` header, 406 when it names none that can be made.
fn accepted(accept: &str) -> Result<Format, ApiError> {
    Format::from_accept(accept).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not-acceptable",
            format!(
                "none of {accept:?} can be produced; use application/json, \
                 application/x-ndjson, text/csv (charset utf-8 or gb18030), \
                 application/vnd.apache.arrow.stream or application/vnd.apache.parquet"
            ),
        )
    })
}

/// A non-negative whole number parameter.
fn number(name: &'static str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    v.trim().parse::<u64>().map(Some).map_err(|e| {
        let detail = match e.kind() {
            std::num::IntErrorKind::PosOverflow => format!("{name} is too large: {v}"),
            _ => format!("{name} must be a whole number ≥ 0, not {v:?}"),
        };
        ApiError::bad_request(detail).with("parameter", name)
    })
}

/// The deadline: the server's limit, lowered (never raised) by `timeout_ms`.
fn deadline(server: Option<Duration>, asked: Option<&str>) -> Result<Option<Deadline>, ApiError> {
    let asked = number("timeout_ms", asked)?;
    if asked == Some(0) {
        return Err(
            ApiError::bad_request("timeout_ms must be at least 1").with("parameter", "timeout_ms")
        );
    }
    let limit = match (server, asked.map(Duration::from_millis)) {
        (Some(s), Some(a)) => Some(s.min(a)),
        (s, a) => s.or(a),
    };
    Ok(limit.map(Deadline::after))
}

/// 304 when `If-None-Match` names `tag`.
fn not_modified(headers: &HeaderMap, tag: &str, read: &[DatasetRead]) -> Option<Response> {
    let given = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    if !plan_info::if_none_match(given, tag) {
        return None;
    }
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    set_data_headers(resp.headers_mut(), read, Some(tag));
    Some(resp)
}

fn set_data_headers(h: &mut HeaderMap, read: &[DatasetRead], tag: Option<&str>) {
    if let Ok(v) = HeaderValue::from_str(&plan_info::versions_header(read)) {
        h.insert("x-dataset-versions", v);
    }
    if let Some(v) = tag.and_then(|t| HeaderValue::from_str(t).ok()) {
        h.insert(header::ETAG, v);
    }
    // The answer depends on the key (what it may read, which columns are masked) and format.
    h.insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Accept"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// How a data answer goes out: its format and coding, and what its headers and audit record say.
pub(crate) struct Answer<'a> {
    pub format: Format,
    pub coding: BodyCoding,
    pub read: &'a [DatasetRead],
    pub tag: Option<&'a str>,
    pub attachment: Option<&'a str>,
    pub query_text: Option<&'a str>,
}

impl<'a> Answer<'a> {
    /// An audit-trail answer: no dataset read, no tag; coded by the compression layer.
    fn audit(format: Format, query_text: Option<&'a str>) -> Self {
        Self {
            format,
            coding: BodyCoding::Identity,
            read: &[],
            tag: None,
            attachment: None,
            query_text,
        }
    }
}

/// A body whole in memory, its end reported at once.
fn whole_body(
    body: Bytes,
    rows: u64,
    sent: &execute::Sent,
    on_end: impl FnOnce(execute::Report),
) -> Body {
    sent.add_rows(rows);
    sent.add_bytes(body.len() as u64);
    on_end(execute::Report {
        outcome: execute::Outcome::Completed,
        rows,
        bytes: body.len() as u64,
        cpu_micros: 0,
    });
    Body::from(body)
}

fn stream_response(lane: &Lane, source: Source, answer: Answer<'_>) -> Result<Response, ApiError> {
    let Answer {
        format,
        mut coding,
        read,
        tag,
        attachment,
        query_text,
    } = answer;
    let sent = Arc::new(execute::Sent::default());
    let sent_seen = sent.clone();
    let started_at = Instant::now();
    let (report_tx, report_rx) = tokio::sync::oneshot::channel();
    let (deadline, workers) = match &source {
        Source::Query(started, _) => (started.deadline(), started.workers().map(<[_]>::to_vec)),
        Source::Page(..) | Source::Encoded(_) | Source::Stored(_) => (None, None),
    };
    let on_end = move |report: execute::Report| {
        tracing::info!(
            rows = report.rows,
            bytes = report.bytes,
            cpu_ms = report.cpu_micros / 1000,
            outcome = ?report.outcome,
            elapsed_ms = started_at.elapsed().as_millis() as u64,
            "data response ended"
        );
        metrics::counter!("datagate_data_bytes_total").increment(report.bytes);
        metrics::counter!("datagate_data_rows_total").increment(report.rows);
        let _ = report_tx.send(report);
    };
    // The encoder's bytes that have left, for the caller's daily bytes (`fair_use`), when the
    // body is coded here; `None` when the body's own bytes are what is counted.
    let mut plain_sent = None;
    let body = match source {
        Source::Page(page, cap, keep) => {
            // Small and in memory: one body of known length (`Content-Length`, written with
            // the head), coded by the compression layer if the client asks.
            coding = BodyCoding::Identity;
            let (chunks, rows) = execute::encode_now(page.schema, &page.batches, format, cap)?;
            let body = match <[Bytes; 1]>::try_from(chunks) {
                Ok([one]) => one,
                Err(chunks) => Bytes::from(chunks.concat()),
            };
            if let Some((bodies, key)) = keep {
                bodies.insert(
                    key,
                    EncodedPage {
                        body: body.clone(),
                        rows,
                    },
                );
            }
            whole_body(body, rows, &sent, on_end)
        }
        Source::Encoded(page) => {
            coding = BodyCoding::Identity;
            whole_body(page.body, page.rows, &sent, on_end)
        }
        Source::Query(started, cap) => {
            let rx = execute::stream_encoded(lane, started, format, coding, cap, sent, on_end)?;
            let (body, sent) = stream_body(rx, deadline);
            plain_sent = Some(sent);
            body
        }
        Source::Stored(files) => {
            // Parquet, compressed inside: never compressed again.
            coding = BodyCoding::Identity;
            let rx = datagate_query::stored_export::stream_copy(lane, files, sent, on_end);
            let (body, sent) = stream_body(rx, deadline);
            plain_sent = Some(sent);
            body
        }
    };
    let mut resp = Response::new(body);
    set_answer_headers(resp.headers_mut(), format, coding, read, tag, attachment);
    if let Some(sent) = plain_sent {
        resp.extensions_mut()
            .insert(crate::fair_use::PlainBytesSent(sent));
    }
    resp.extensions_mut().insert(DataAccess {
        datasets: read
            .iter()
            .map(|d| DatasetVersion {
                name: d.name.clone(),
                version: d.version,
            })
            .collect(),
        query_text: query_text.map(str::to_string),
        workers,
        report: report_rx,
        sent: sent_seen,
    });
    Ok(resp)
}

/// The headers of a data answer: its type, the dataset versions and tag, how it is coded here,
/// and the attachment's file name.
fn set_answer_headers(
    h: &mut HeaderMap,
    format: Format,
    coding: BodyCoding,
    read: &[DatasetRead],
    tag: Option<&str>,
    attachment: Option<&str>,
) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    set_data_headers(h, read, tag);
    if coding == BodyCoding::Zstd {
        // Coded here: the compression layer leaves a body with a Content-Encoding alone.
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        h.insert(
            header::VARY,
            HeaderValue::from_static("Authorization, Accept, Accept-Encoding"),
        );
    }
    if let Some(name) = attachment
        && let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
}

/// The answer to `HEAD` on a data endpoint: the headers `GET` would answer, once the request
/// is checked and planned as `GET` checks and plans it, without running the query (a client
/// asking for an export's type, name or tag does not start the export). Its audit record is a
/// plain request record: nothing was read.
fn head_answer(answer: Answer<'_>) -> Response {
    // A body of unknown length, as `GET`'s streamed one: no `Content-Length: 0` saying the
    // answer would be empty.
    let empty = futures::stream::empty::<Result<Bytes, std::convert::Infallible>>();
    let mut resp = Response::new(Body::from_stream(empty));
    set_answer_headers(
        resp.headers_mut(),
        answer.format,
        answer.coding,
        answer.read,
        answer.tag,
        answer.attachment,
    );
    resp
}

/// The body of a streamed answer: the encoder's chunks as they come, and the count of the
/// encoder's bytes of the chunks that have left.
///
/// `poll_recv` keeps answering `None` once closed, as layers polling past the end expect.
/// An error is held back a moment so the server writes out the head and the rows already
/// encoded first (the begin record's fsync may have let the encoder run ahead to the error,
/// and compression holds data until it is polled again): the client then sees a 200 whose
/// body breaks, not a connection closed before any answer.
/// The deadline is kept on this side too: the executor's own timer cannot fire while a
/// hostile operator keeps its threads busy, but the client is answered all the same.
fn stream_body(
    rx: tokio::sync::mpsc::Receiver<Result<BodyChunk, execute::StreamError>>,
    deadline: Option<Deadline>,
) -> (Body, Arc<AtomicU64>) {
    let plain_sent = Arc::new(AtomicU64::new(0));
    let plain_seen = plain_sent.clone();
    let mut rx = Some(rx);
    let mut held: Option<(StreamItem, Pin<Box<tokio::time::Sleep>>)> = None;
    let mut expires = deadline.map(|d| (d.limit_ms, Box::pin(tokio::time::sleep_until(d.at))));
    // Holds `e` back for a moment (see above) and answers `Pending` meanwhile.
    let hold = |e: execute::StreamError, cx: &mut std::task::Context<'_>| {
        let mut delay = Box::pin(tokio::time::sleep(Duration::from_millis(100)));
        let _ = delay.as_mut().poll(cx);
        (Err(e), delay)
    };
    let body = futures::stream::poll_fn(move |cx| {
        if let Some((_, delay)) = held.as_mut() {
            if delay.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            return Poll::Ready(held.take().map(|(e, _)| e));
        }
        let Some(receiver) = rx.as_mut() else {
            return Poll::Ready(None);
        };
        match receiver.poll_recv(cx) {
            Poll::Ready(Some(Err(e))) => {
                held = Some(hold(e, cx));
                Poll::Pending
            }
            Poll::Ready(Some(Ok(chunk))) => {
                plain_sent.fetch_add(chunk.plain, Ordering::Relaxed);
                Poll::Ready(Some(Ok(chunk.wire)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            // Only while waiting for the pump: what it has sent already (a whole small answer
            // may be waiting) goes out even when the deadline has passed since.
            Poll::Pending => {
                if let Some((limit_ms, at)) = expires.as_mut()
                    && at.as_mut().poll(cx).is_ready()
                {
                    // Dropping the receiver tells the pump to stop. The error is held back
                    // like the pump's own: a deadline of a millisecond may pass before the
                    // head has left.
                    let e = execute::StreamError::from(QueryError::Timeout(*limit_ms));
                    rx = None;
                    expires = None;
                    held = Some(hold(e, cx));
                }
                Poll::Pending
            }
        }
    });
    (Body::from_stream(body), plain_seen)
}

/// An audit-trail answer streamed like data (no dataset versions, no caching).
pub(crate) fn stream_audit(
    lane: &Lane,
    started: execute::Started,
    format: Format,
    query_text: Option<&str>,
) -> Result<Response, ApiError> {
    let mut resp = stream_response(
        lane,
        Source::Query(started, RowCap::default()),
        Answer::audit(format, query_text),
    )?;
    resp.headers_mut().remove("x-dataset-versions");
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// A page of audit records already in memory, under `cap` (its `next` link).
pub(crate) fn stream_audit_page(
    lane: &Lane,
    page: datagate_query::pages::Page,
    cap: RowCap,
    format: Format,
) -> Result<Response, ApiError> {
    let mut resp = stream_response(
        lane,
        Source::Page(page, cap, None),
        Answer::audit(format, None),
    )?;
    resp.headers_mut().remove("x-dataset-versions");
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// One item of a response body stream.
type StreamItem = Result<Bytes, execute::StreamError>;

/// Whether a streamed `format` answer is coded in zstd frames on the executor
/// ([`datagate_query::compression`]): when compression is on, the client accepts zstd at least
/// as much as gzip (the layer's other coding), and the format is not Parquet (compressed
/// inside). Everything else is left to the compression layer.
pub(crate) fn body_coding(state: &AppState, headers: &HeaderMap, format: Format) -> BodyCoding {
    if !state.config.server.compression || format == Format::Parquet {
        return BodyCoding::Identity;
    }
    let accepted = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let (zstd, gzip) = (quality(&accepted, "zstd"), quality(&accepted, "gzip"));
    if zstd > 0.0 && zstd >= gzip {
        BodyCoding::Zstd
    } else {
        BodyCoding::Identity
    }
}

/// The q-value `accept_encoding` gives `coding` (RFC 9110 §12.5.3): its own entry, else `*`'s,
/// else 0.
fn quality(accept_encoding: &str, coding: &str) -> f32 {
    let mut star = None;
    for entry in datagate_query::encode::weighted(accept_encoding) {
        if entry.name.eq_ignore_ascii_case(coding) {
            return entry.quality;
        }
        if entry.name == "*" {
            star = Some(entry.quality);
        }
    }
    star.unwrap_or(0.0)
}

/// The URL of the page after this one, pinned to the version read.
fn next_page_url(
    state: &AppState,
    headers: &HeaderMap,
    path: &DatasetPath,
    p: &RowsParams,
    limit: u64,
    offset: u64,
    version: Option<i64>,
) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("select", &p.select),
        ("where", &p.filter),
        ("order", &p.order),
        ("format", &p.format),
        ("charset", &p.charset),
        ("timeout_ms", &p.timeout_ms),
    ] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    if let Some(bom) = p.bom {
        q.append_pair("bom", if bom { "true" } else { "false" });
    }
    q.append_pair("limit", &limit.to_string());
    q.append_pair("offset", &offset.saturating_add(limit).to_string());
    if let Some(v) = version {
        q.append_pair("version", &v.to_string());
    }
    format!(
        "{}/api/v1/datasets/{}/{}/rows?{}",
        base_url(state, headers),
        path.department,
        path.name,
        q.finish()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn chunk(s: &'static str) -> Result<BodyChunk, execute::StreamError> {
        Ok(BodyChunk {
            wire: Bytes::from_static(s.as_bytes()),
            plain: s.len() as u64,
        })
    }

    /// A whole number too large for the parameter says so, not that it is no whole number.
    #[test]
    fn number_parameters_name_what_is_wrong() {
        assert_eq!(number("limit", Some(" 25")).unwrap(), Some(25));
        assert_eq!(number("limit", Some("")).unwrap(), None);
        let detail = |v| number("offset", Some(v)).unwrap_err().detail;
        assert_eq!(
            detail("99999999999999999999"),
            "offset is too large: 99999999999999999999"
        );
        assert_eq!(
            detail("-1"),
            "offset must be a whole number ≥ 0, not \"-1\""
        );
        assert!(detail("1e9").contains("whole number"));
    }

    fn passed() -> Deadline {
        Deadline {
            at: Instant::now() - Duration::from_millis(5),
            limit_ms: 1,
        }
    }

    /// What the pump sent before the body was first polled goes out whole, even when the
    /// deadline has passed since (a small answer ready within a 1 ms limit was dropped with
    /// the connection, before any head, the API fuzzer found).
    #[tokio::test]
    async fn what_was_sent_before_the_deadline_goes_out_whole() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(chunk("ab")).await.unwrap();
        tx.send(chunk("cde")).await.unwrap();
        drop(tx);
        let (body, sent) = stream_body(rx, Some(passed()));
        let got: Vec<_> = body.into_data_stream().collect().await;
        let got: Vec<Bytes> = got.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(got, [Bytes::from_static(b"ab"), Bytes::from_static(b"cde")]);
        assert_eq!(sent.load(Ordering::Relaxed), 5);
    }

    /// A deadline that passes while the body waits for the pump ends it with the time limit's
    /// error, but not at once: the body answers `Pending` a moment first (the server writes
    /// out the head and what was encoded), and the pump is told to stop.
    #[tokio::test]
    async fn a_deadline_passed_while_waiting_ends_the_body_after_a_moment() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(chunk("ab")).await.unwrap();
        let (body, _) = stream_body(rx, Some(passed()));
        let mut data = body.into_data_stream();
        assert_eq!(data.next().await.unwrap().unwrap(), "ab");
        let started = std::time::Instant::now();
        let next = tokio::time::timeout(Duration::from_millis(30), data.next()).await;
        assert!(
            next.is_err(),
            "the error is held back, not answered at once"
        );
        assert!(tx.is_closed(), "the pump is told to stop");
        let e = data.next().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("time limit"), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert!(data.next().await.is_none());
    }
}
