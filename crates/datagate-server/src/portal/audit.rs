//! The audit pages (auditors, admins): the access log filtered by time, principal, dataset,
//! action and status, paged newest first with the API's seek cursor, each record's detail;
//! "verify the chain" with the verdict and the latest signed checkpoint to download; requests
//! and bytes per day, per dataset and per principal; saved SQL reports over `audit.events`.
//! All of it through `/api/v1/audit/*` as the visitor.

use super::pages::{
    Base, Cell, Chart, bar_chart, base, cells, column_names, error_page, html, link, pass_through,
    signed_out_redirect, text,
};
use super::{Portal, Visitor};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// Records per page of the log.
const PAGE: u32 = 50;

/// Saved reports: (id, Chinese title, English title, SQL over `audit.events`).
pub const REPORTS: [(&str, &str, &str, &str); 4] = [
    (
        "reads-by-dataset-7d",
        "近7天各数据集（版本）访问量",
        "Reads per dataset version, last 7 days",
        "SELECT datasets AS dataset_versions, count(*) AS reads FROM audit.events \
         WHERE kind IN ('begin', 'read') AND status < 400 AND datasets IS NOT NULL \
         AND action IN ('data.rows', 'data.query', 'data.export') \
         AND ts >= now() - INTERVAL '7 days' GROUP BY datasets ORDER BY reads DESC",
    ),
    (
        "refusals-by-principal",
        "各调用方被拒绝的请求",
        "Refused requests per principal",
        "SELECT key_id, status, count(*) AS requests FROM audit.events WHERE status >= 400 \
         GROUP BY key_id, status ORDER BY requests DESC LIMIT 50",
    ),
    (
        "bytes-by-principal",
        "各调用方下载字节数",
        "Bytes sent per principal",
        "SELECT key_id, sum(bytes_returned) AS bytes, sum(rows_returned) AS rows FROM audit.events WHERE kind IN ('end', 'read') \
         GROUP BY key_id ORDER BY bytes DESC LIMIT 50",
    ),
    (
        "sql-queries-today",
        "今天的 SQL 查询",
        "SQL queries today",
        "SELECT ts, key_id, status, query_text FROM audit.events WHERE action = 'data.query' AND kind IN ('begin', 'read') \
         AND ts >= date_trunc('day', now()) ORDER BY ts DESC LIMIT 100",
    ),
];

#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    principal: String,
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    before: String,
    #[serde(default)]
    verify: String,
    #[serde(default)]
    report: String,
}

/// One record of the log: the columns a table row shows, and every field for its detail.
pub struct Record {
    when: String,
    principal: String,
    action: String,
    status: String,
    datasets: String,
    rows: String,
    bytes: String,
    fields: Vec<(String, String)>,
}

/// (group, reads, bytes) of a top-10 table.
type TopRow = (String, String, String);

pub struct Verdict {
    ok: bool,
    facts: Vec<(String, String)>,
}

pub struct Report {
    title: String,
    columns: Vec<String>,
    rows: Vec<Vec<Cell>>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    base: Base,
    p: AuditParams,
    records: Vec<Record>,
    error: Option<String>,
    next: Option<String>,
    verdict: Option<Verdict>,
    charts: Vec<Chart>,
    tops: Vec<(String, Vec<TopRow>)>,
    reports: Vec<(String, String)>,
    report: Option<Report>,
}

/// A date (`YYYY-MM-DD`, the date input's value) as the RFC 3339 start of that UTC day.
fn day_start(d: &str) -> String {
    if d.is_empty() || d.contains('T') {
        d.to_string()
    } else {
        format!("{d}T00:00:00Z")
    }
}

/// `GET /audit`.
pub async fn log(
    State(portal): State<Portal>,
    v: Visitor,
    Query(p): Query<AuditParams>,
) -> Response {
    let lang = v.lang;
    if v.caller.key.is_none() {
        return Redirect::to(&link("/signin", &[("next", &v.here)])).into_response();
    }
    let base = match base(&portal, &v, lang.s("audit.title")).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let to_end = if p.to.is_empty() || p.to.contains('T') {
        p.to.clone()
    } else {
        format!("{}T23:59:59.999Z", p.to)
    };
    let events_uri = link(
        "/api/v1/audit/events",
        &[
            ("limit", &PAGE.to_string()),
            ("from", &day_start(&p.from)),
            ("to", &to_end),
            ("principal", &p.principal),
            ("dataset", &p.dataset),
            ("action", &p.action),
            ("status", &p.status),
            ("before", &p.before),
        ],
    );
    let page = match portal.api.get::<Value>(&v.caller, &events_uri).await {
        Ok(page) => Ok(page),
        Err(a) if a.status == StatusCode::UNAUTHORIZED => return signed_out_redirect(&v),
        Err(a) if a.status == StatusCode::FORBIDDEN => return error_page(&v, base, &a),
        Err(a) => Err(a.detail()),
    };
    let (records, next, error) = match page {
        Ok(page) => {
            let records = page["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(record)
                .collect();
            let next = page["next"]
                .as_str()
                .and_then(|n| n.split_once('?'))
                .and_then(|(_, q)| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "before")
                        .map(|(_, b)| b.into_owned())
                })
                .map(|before| {
                    link(
                        "/audit",
                        &[
                            ("from", &p.from),
                            ("to", &p.to),
                            ("principal", &p.principal),
                            ("dataset", &p.dataset),
                            ("action", &p.action),
                            ("status", &p.status),
                            ("before", &before),
                        ],
                    )
                });
            (records, next, None)
        }
        Err(e) => (Vec::new(), None, Some(e)),
    };

    let verdict = if p.verify.is_empty() {
        None
    } else {
        Some(
            match portal
                .api
                .get::<Value>(&v.caller, "/api/v1/audit/verify")
                .await
            {
                Ok(vd) => Verdict {
                    ok: vd["ok"].as_bool().unwrap_or(false),
                    facts: vd
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, x)| (k.clone(), text(x)))
                        .collect(),
                },
                Err(a) => Verdict {
                    ok: false,
                    facts: vec![("error".into(), a.detail())],
                },
            },
        )
    };

    // Requests and bytes per day (the last 30 days), and the top datasets and principals —
    // of one dataset and/or one principal when the log is filtered to them.
    let since = (chrono::Utc::now() - chrono::Duration::days(30))
        .format("%Y-%m-%dT00:00:00Z")
        .to_string();
    let usage = |group: &'static str| {
        let mut pairs = vec![("group_by", group), ("from", since.as_str())];
        if !p.dataset.trim().is_empty() {
            pairs.push(("dataset", p.dataset.trim()));
        }
        if !p.principal.trim().is_empty() {
            pairs.push(("principal", p.principal.trim()));
        }
        let uri = link("/api/v1/audit/usage", &pairs);
        let portal = portal.clone();
        let caller = v.caller.clone();
        async move { portal.api.get::<Value>(&caller, &uri).await.ok() }
    };
    let (by_day, by_dataset, by_principal) =
        tokio::join!(usage("day"), usage("dataset"), usage("principal"));
    let series = |page: &Option<Value>, measure: &str| -> Vec<(String, u64)> {
        let Some(page) = page else { return Vec::new() };
        let key = column_names(page).into_iter().next().unwrap_or_default();
        let mut points: Vec<(String, u64)> = page["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (text(&r[key.as_str()]), r[measure].as_u64().unwrap_or(0)))
            .collect();
        points.sort();
        points
    };
    // "Reads per day — justice.legal_aid_cases, k_3f…": the title says whose series it is.
    let scope: Vec<&str> = [p.dataset.trim(), p.principal.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let titled = |key: &str| {
        if scope.is_empty() {
            lang.s(key).to_string()
        } else {
            format!("{} — {}", lang.s(key), scope.join(", "))
        }
    };
    let charts = vec![
        bar_chart(titled("audit.reads_per_day"), &series(&by_day, "reads")),
        bar_chart(titled("audit.bytes_per_day"), &series(&by_day, "bytes")),
    ];
    let top = |page: &Option<Value>| -> Vec<TopRow> {
        let mut reads = series(page, "reads");
        let bytes: std::collections::HashMap<String, u64> =
            series(page, "bytes").into_iter().collect();
        reads.sort_by_key(|r| std::cmp::Reverse(r.1));
        reads
            .into_iter()
            .take(10)
            .map(|(k, r)| {
                let b = bytes.get(&k).copied().unwrap_or(0);
                (k, r.to_string(), super::pages::human_bytes(b))
            })
            .collect()
    };
    let tops = vec![
        (lang.s("audit.by_dataset").to_string(), top(&by_dataset)),
        (lang.s("audit.by_principal").to_string(), top(&by_principal)),
    ];

    let report = match REPORTS.iter().find(|r| r.0 == p.report) {
        None => None,
        Some((_, zh, en, sql)) => {
            let title = if lang == super::i18n::Lang::Zh {
                zh
            } else {
                en
            }
            .to_string();
            Some(
                match portal
                    .api
                    .send_json::<Value>(
                        &v.caller,
                        Method::POST,
                        "/api/v1/audit/query",
                        &json!({"sql": sql}),
                    )
                    .await
                {
                    Ok(page) => {
                        let columns = column_names(&page);
                        let rows = page["rows"].as_array().cloned().unwrap_or_default();
                        Report {
                            title,
                            rows: cells(&columns, &rows),
                            columns,
                            error: None,
                        }
                    }
                    Err(a) => Report {
                        title,
                        columns: Vec::new(),
                        rows: Vec::new(),
                        error: Some(a.detail()),
                    },
                },
            )
        }
    };
    let reports = REPORTS
        .iter()
        .map(|(id, zh, en, _)| {
            let t = if lang == super::i18n::Lang::Zh {
                zh
            } else {
                en
            };
            (t.to_string(), link("/audit", &[("report", id)]))
        })
        .collect();
    let page = AuditPage {
        base,
        p,
        records,
        error,
        next,
        verdict,
        charts,
        tops,
        reports,
        report,
    };
    html(&v, StatusCode::OK, &page)
}

fn record(r: &Value) -> Record {
    let f = |k: &str| text(&r[k]);
    Record {
        when: f("ts")
            .chars()
            .take(23)
            .collect::<String>()
            .replace('T', " "),
        principal: f("key_id"),
        action: f("action"),
        status: f("status"),
        datasets: match &r["datasets"] {
            Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
            other => text(other),
        },
        rows: f("rows_returned"),
        bytes: f("bytes_returned"),
        fields: r
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, x)| !x.is_null())
            .map(|(k, x)| (k.clone(), text(x)))
            .collect(),
    }
}

/// `GET /audit/checkpoint`: the latest signed checkpoint, as a file.
pub async fn checkpoint(State(portal): State<Portal>, v: Visitor) -> Response {
    pass_through(&portal, &v, "/api/v1/audit/checkpoint", "checkpoint.json").await
}

/// `GET /audit/public-key`: the key that signs checkpoints, as a file.
pub async fn public_key(State(portal): State<Portal>, v: Visitor) -> Response {
    pass_through(
        &portal,
        &v,
        "/api/v1/audit/public-key",
        "audit-public-key.pem",
    )
    .await
}
