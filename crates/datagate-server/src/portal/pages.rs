//! The portal's pages: catalog, dataset, SQL console, sign-in, "my access". Each handler asks
//! the API ([`super::client`]) for what it shows, as the visitor, and renders a template.

use super::client::{Answer, Caller};
use super::i18n::Lang;
use super::{Portal, Visitor, assets, session};
use crate::api::{DatasetList, DatasetOut, DepartmentOut, FacetCount};
use askama::Template;
use axum::Form;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use datagate_query::filter::quote_ident;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Instant;

/// Datasets per catalog page.
const CARDS_PER_PAGE: usize = 20;
/// Rows per preview page.
const PREVIEW_ROWS: u32 = 20;
/// Tables per page of the SQL console's list.
const TABLES_PER_PAGE: usize = 50;
/// The download choices, in the order pages list them: a format, or `excel`, CSV in UTF-8
/// after a byte-order mark (a spreadsheet in a Chinese locale reads a CSV file without one as
/// GBK, and its Chinese as mojibake).
const FORMATS: [&str; 6] = ["csv", "excel", "json", "ndjson", "parquet", "arrow"];

/// A download choice's link text.
fn download_label(choice: &'static str) -> &'static str {
    match choice {
        "excel" => "csv (Excel)",
        other => other,
    }
}

/// The export API's parameters for a download choice (CSV when it names none; an empty value
/// is left out of the link).
fn export_params(choice: &str) -> [(&'static str, &'static str); 2] {
    match FORMATS.into_iter().find(|f| *f == choice) {
        Some("excel") => [("format", "csv"), ("bom", "true")],
        Some(format) => [("format", format), ("bom", "")],
        None => [("format", "csv"), ("bom", "")],
    }
}

/// Who is signed in, as the header shows it.
pub struct Who {
    pub principal: String,
    pub role: String,
}

/// What the layout needs.
pub struct Base {
    pub lang: Lang,
    pub title: String,
    pub who: Option<Who>,
    pub css: &'static str,
    pub js: &'static str,
    pub switch_lang: String,
}

pub(super) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `path?k=v&...` from pairs, leaving out empty values.
pub(super) fn link(path: &str, pairs: &[(&str, &str)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// The current URL with `lang` set to the other language.
fn switch_lang(here: &str, lang: Lang) -> String {
    let (path, query) = here.split_once('?').unwrap_or((here, ""));
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k != "lang")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.push(("lang".into(), lang.other().code().into()));
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    format!("{path}?{}", q.join("&"))
}

/// The page's layout data: asks the API who the visitor is (a refused key ends the session:
/// the visitor is sent to sign in again).
pub(super) async fn base(portal: &Portal, v: &Visitor, title: &str) -> Result<Base, Response> {
    let who = match &v.caller.key {
        None => None,
        Some(key) => match portal.api.get::<Value>(&v.caller, "/api/v1/me").await {
            Ok(me) => Some(Who {
                principal: text(&me["principal"]),
                role: text(&me["role"]),
            }),
            Err(a) if a.status == StatusCode::UNAUTHORIZED => {
                portal.sessions.end_key(key).await;
                return Err(signed_out_redirect(v));
            }
            Err(a) => return Err(plain_error(a.status, &a.detail())),
        },
    };
    Ok(Base {
        lang: v.lang,
        title: title.to_string(),
        who,
        css: &assets::STYLE.name,
        js: &assets::SCRIPT.name,
        switch_lang: switch_lang(&v.here, v.lang),
    })
}

pub(super) fn signed_out_redirect(v: &Visitor) -> Response {
    let mut resp =
        Redirect::to(&link("/signin", &[("expired", "1"), ("next", &v.here)])).into_response();
    clear_session_cookie(&mut resp, v.secure);
    resp
}

fn plain_error(status: StatusCode, detail: &str) -> Response {
    (status, detail.to_string()).into_response()
}

/// A rendered page; remembers a language chosen with `?lang=` in a cookie.
pub(super) fn html(v: &Visitor, status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => {
            let mut resp = (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
                .into_response();
            if v.here.contains("lang=") {
                let c = cookie::Cookie::build(("lang", v.lang.code()))
                    .path("/")
                    .same_site(cookie::SameSite::Lax)
                    .max_age(cookie::time::Duration::days(365))
                    .build();
                if let Ok(h) = HeaderValue::from_str(&c.to_string()) {
                    resp.headers_mut().append(header::SET_COOKIE, h);
                }
            }
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "portal template failed");
            plain_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    base: Base,
    status: u16,
    detail: String,
}

/// An API refusal as a page (its status kept).
pub(super) fn error_page(v: &Visitor, base: Base, a: &Answer) -> Response {
    let page = ErrorPage {
        base,
        status: a.status.as_u16(),
        detail: a.detail(),
    };
    html(v, a.status, &page)
}

/// A page of a listing, numbered from 1, as a portal page shows it.
pub(super) struct ListingPage {
    pub found: DatasetList,
    /// The page shown: the one asked for, or the last when that was past it.
    pub page: usize,
    pub pages: usize,
}

/// The listing's page `asked` (from 1, [`asked_page`]) of `per_page` entries, `first` being
/// what `read` answered for it: a page past the last reads the last instead.
pub(super) async fn listing_page<F, R>(
    asked: usize,
    per_page: usize,
    first: Result<DatasetList, Answer>,
    read: R,
) -> Result<ListingPage, Answer>
where
    R: Fn(usize) -> F,
    F: std::future::Future<Output = Result<DatasetList, Answer>>,
{
    let mut found = first?;
    let total = usize::try_from(found.total).unwrap_or(usize::MAX);
    let pages = total.div_ceil(per_page).max(1);
    let page = asked.min(pages);
    if page != asked {
        found = read(page).await?;
    }
    Ok(ListingPage { found, page, pages })
}

/// The links to the pages before and after `page` of `pages`, where there are such pages.
pub(super) fn neighbours(
    page: usize,
    pages: usize,
    url: impl Fn(usize) -> String,
) -> (Option<String>, Option<String>) {
    (
        (page > 1).then(|| url(page - 1)),
        (page < pages).then(|| url(page + 1)),
    )
}

/// The page a `page` parameter asks for, from 1.
pub(super) fn asked_page(param: &str) -> usize {
    param.parse::<usize>().unwrap_or(1).max(1)
}

/// The offset of page `page` (from 1) of `per_page` entries.
pub(super) fn page_offset(page: usize, per_page: usize) -> String {
    page.saturating_sub(1).saturating_mul(per_page).to_string()
}

async fn department_names(portal: &Portal, caller: &Caller) -> HashMap<String, String> {
    portal
        .api
        .get::<Vec<DepartmentOut>>(caller, "/api/v1/departments")
        .await
        .map(|ds| ds.into_iter().map(|d| (d.id, d.name)).collect())
        .unwrap_or_default()
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn day(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

// ---------------------------------------------------------------------------------------------
// Catalog

#[derive(Debug, Default, Deserialize)]
pub struct CatalogParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    department: String,
    #[serde(default)]
    access_level: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    frequency: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: String,
}

impl CatalogParams {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("q", self.q.clone()),
            ("department", self.department.clone()),
            ("access_level", self.access_level.clone()),
            ("tag", self.tag.clone()),
            ("frequency", self.frequency.clone()),
            ("format", self.format.clone()),
            ("sort", self.sort.clone()),
        ]
    }

    /// The catalog URL with `key` set to `value` (or removed when empty), back on page 1.
    fn with(&self, key: &str, value: &str) -> String {
        let pairs: Vec<(&str, String)> = self
            .pairs()
            .into_iter()
            .map(|(k, v)| {
                if k == key {
                    (k, value.to_string())
                } else {
                    (k, v)
                }
            })
            .collect();
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        link("/", &borrowed)
    }
}

pub struct Card {
    url: String,
    title: String,
    description: String,
    department: String,
    level: String,
    level_label: &'static str,
    rows: u64,
    updated: String,
    reads_30d: u64,
    format: Option<&'static str>,
    tags: Vec<String>,
}

pub struct Facet {
    title: &'static str,
    entries: Vec<FacetEntry>,
}

pub struct FacetEntry {
    label: String,
    count: usize,
    url: String,
    on: bool,
}

pub struct SortOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    base: Base,
    q: String,
    total: usize,
    cards: Vec<Card>,
    facets: Vec<Facet>,
    sorts: Vec<SortOption>,
    /// Filters the search form keeps (everything but `q`).
    kept: Vec<(&'static str, String)>,
    /// Filters the sort form keeps (everything but `sort`).
    kept_with_q: Vec<(&'static str, String)>,
    prev: Option<String>,
    next: Option<String>,
    page_label: String,
}

/// `GET /`: search, facets with counts, sort, paging.
pub async fn catalog(
    State(portal): State<Portal>,
    v: Visitor,
    Query(p): Query<CatalogParams>,
) -> Response {
    let lang = v.lang;
    let base = match base(&portal, &v, lang.s("catalog.title")).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let sort = match p.sort.as_str() {
        "title" | "reads" => p.sort.as_str(),
        _ => "updated",
    };
    // One page of the matches, with their counts by each facet: the catalog filters, counts,
    // sorts and pages them, whatever its size.
    let listing = |page: usize| {
        let offset = page_offset(page, CARDS_PER_PAGE);
        let uri = link(
            "/api/v1/datasets",
            &[
                ("q", p.q.trim()),
                ("department", &p.department),
                ("access_level", &p.access_level),
                ("tag", &p.tag),
                ("update_frequency", &p.frequency),
                ("source_format", &p.format),
                ("sort", sort),
                ("limit", &CARDS_PER_PAGE.to_string()),
                ("offset", &offset),
                ("schema", "false"),
                ("facets", "true"),
            ],
        );
        let (api, caller) = (&portal.api, &v.caller);
        async move { api.get::<DatasetList>(caller, &uri).await }
    };
    let asked = asked_page(&p.page);
    let (first, names) = tokio::join!(listing(asked), department_names(&portal, &v.caller));
    let ListingPage {
        mut found,
        page,
        pages,
    } = match listing_page(asked, CARDS_PER_PAGE, first, listing).await {
        Ok(l) => l,
        Err(a) => return error_page(&v, base, &a),
    };
    let total = usize::try_from(found.total).unwrap_or(usize::MAX);
    let dept_name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());

    // Choosing a facet's entry filters by it, choosing it again clears the filter.
    let counts = found.facets.take().unwrap_or_default();
    let facet = |title: &'static str,
                 key: &str,
                 current: &str,
                 counts: Vec<FacetCount>,
                 label: &dyn Fn(&str) -> String| {
        let mut entries: Vec<FacetEntry> = counts
            .into_iter()
            .map(|FacetCount { value, count }| FacetEntry {
                label: label(&value),
                count: usize::try_from(count).unwrap_or(usize::MAX),
                on: value == current,
                url: p.with(key, if value == current { "" } else { &value }),
            })
            .collect();
        entries.sort_by(|a, b| b.count.cmp(&a.count).then(a.label.cmp(&b.label)));
        Facet { title, entries }
    };
    let facets = vec![
        facet(
            lang.s("facet.department"),
            "department",
            &p.department,
            counts.department,
            &|id| dept_name(id),
        ),
        facet(
            lang.s("facet.access_level"),
            "access_level",
            &p.access_level,
            counts.access_level,
            &|l| lang.level(l).to_string(),
        ),
        facet(lang.s("facet.tag"), "tag", &p.tag, counts.tag, &|t| {
            t.to_string()
        }),
        facet(
            lang.s("facet.frequency"),
            "frequency",
            &p.frequency,
            counts.update_frequency,
            &|f| f.to_string(),
        ),
        facet(
            lang.s("facet.format"),
            "format",
            &p.format,
            counts.source_format,
            &|f| format_label(f).to_string(),
        ),
    ];

    let cards = found
        .datasets
        .iter()
        .map(|d| Card {
            url: format!("/datasets/{}/{}", enc(&d.department), enc(&d.name)),
            title: d.title.clone(),
            description: d.description.chars().take(200).collect(),
            department: dept_name(&d.department),
            level: d.access_level.clone(),
            level_label: lang.level(&d.access_level),
            rows: d.row_count,
            updated: day(&d.updated_at),
            reads_30d: d.usage.reads_30d,
            format: d.source_format.as_deref().map(format_label),
            tags: d.tags.clone(),
        })
        .collect();
    let page_url = |n: usize| {
        let mut pairs = p.pairs();
        pairs.push(("page", n.to_string()));
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        link("/", &borrowed)
    };
    let pairs = p.pairs();
    let (prev, next) = neighbours(page, pages, page_url);
    let page = CatalogPage {
        q: p.q.clone(),
        total,
        cards,
        facets,
        sorts: [
            ("updated", "sort.updated"),
            ("title", "sort.title"),
            ("reads", "sort.reads"),
        ]
        .into_iter()
        .map(|(value, key)| SortOption {
            value,
            label: lang.s(key),
            selected: value == sort,
        })
        .collect(),
        kept: pairs
            .iter()
            .filter(|(k, v)| *k != "q" && !v.is_empty())
            .cloned()
            .collect(),
        kept_with_q: pairs
            .iter()
            .filter(|(k, v)| *k != "sort" && !v.is_empty())
            .cloned()
            .collect(),
        prev,
        next,
        page_label: format!("{page} / {pages}"),
        base,
    };
    html(&v, StatusCode::OK, &page)
}

// ---------------------------------------------------------------------------------------------
// Dataset

#[derive(Debug, Default, Deserialize)]
pub struct DatasetParams {
    #[serde(default, rename = "where")]
    filter: String,
    #[serde(default)]
    order: String,
    /// The query string of the rows API's `next` link.
    #[serde(default)]
    page: String,
    #[serde(default)]
    applied: String,
    #[serde(default)]
    apply_error: String,
}

pub struct Cell {
    pub(super) text: String,
    pub(super) null: bool,
    pub(super) num: bool,
}

fn cell(v: &Value) -> Cell {
    match v {
        Value::Null => Cell {
            text: "NULL".into(),
            null: true,
            num: false,
        },
        Value::Number(n) => Cell {
            text: n.to_string(),
            null: false,
            num: true,
        },
        other => Cell {
            text: text(other),
            null: false,
            num: false,
        },
    }
}

/// A JSON result page's rows as cells, in the order of its columns.
pub(super) fn cells(columns: &[String], rows: &[Value]) -> Vec<Vec<Cell>> {
    rows.iter()
        .map(|r| columns.iter().map(|c| cell(&r[c.as_str()])).collect())
        .collect()
}

pub(super) fn column_names(page: &Value) -> Vec<String> {
    page["columns"]
        .as_array()
        .map(|cs| cs.iter().map(|c| text(&c["name"])).collect())
        .unwrap_or_default()
}

pub struct PreviewColumn {
    name: String,
    sort_url: String,
    mark: &'static str,
}

pub struct Preview {
    filter: String,
    order: String,
    error: Option<String>,
    columns: Vec<PreviewColumn>,
    rows: Vec<Vec<Cell>>,
    first: Option<String>,
    next: Option<String>,
    label: String,
}

pub struct ApplyBox {
    signed_in: bool,
    done: bool,
    error: Option<String>,
    action: String,
}

/// How the portal names an upload format the catalog records (`csv`, `ndjson`, ...).
fn format_label(format: &str) -> &'static str {
    match format {
        "csv" => "CSV",
        "ndjson" => "NDJSON",
        "parquet" => "Parquet",
        "arrow" => "Arrow",
        _ => "—",
    }
}

pub struct VersionRow {
    version: i64,
    mode: String,
    format: &'static str,
    rows: u64,
    bytes: String,
    created: String,
    downloads: Vec<(&'static str, String)>,
}

pub struct Bar {
    pub(super) x: u32,
    pub(super) y: u32,
    pub(super) w: u32,
    pub(super) h: u32,
    pub(super) title: String,
}

pub struct Chart {
    pub(super) label: String,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) bars: Vec<Bar>,
    pub(super) first: String,
    pub(super) last: String,
    pub(super) max: u64,
}

/// A bar chart of `points` (label, value), server-drawn SVG: each bar's value is in its title,
/// the axis is labelled with the first and last label and the maximum.
pub(super) fn bar_chart(label: String, points: &[(String, u64)]) -> Chart {
    let (width, height, top, bottom) = (600u32, 120u32, 14u32, 14u32);
    let max = points.iter().map(|p| p.1).max().unwrap_or(0);
    let slot = width / u32::try_from(points.len().max(1)).unwrap_or(1);
    let bars = points
        .iter()
        .enumerate()
        .map(|(i, (name, value))| {
            let span = u64::from(height - top - bottom);
            let h = if max == 0 {
                0
            } else {
                (value * span).div_ceil(max)
            };
            let h = u32::try_from(h).unwrap_or(0);
            Bar {
                x: u32::try_from(i).unwrap_or(0) * slot + 1,
                y: height - bottom - h,
                w: slot.saturating_sub(2).max(1),
                h,
                title: format!("{name}: {value}"),
            }
        })
        .collect();
    Chart {
        label,
        width,
        height,
        bars,
        first: points.first().map(|p| p.0.clone()).unwrap_or_default(),
        last: points.last().map(|p| p.0.clone()).unwrap_or_default(),
        max,
    }
}

/// Reads per day of the last 30 days.
fn reads_chart(lang: Lang, d: &DatasetOut) -> Chart {
    let points: Vec<(String, u64)> = d
        .usage
        .daily
        .iter()
        .flatten()
        .map(|x| (x.day.to_string(), x.reads))
        .collect();
    bar_chart(
        format!("{} — {}", lang.s("ds.reads_chart"), d.title),
        &points,
    )
}

#[derive(Template)]
#[template(path = "dataset.html")]
struct DatasetPage {
    base: Base,
    d: DatasetOut,
    department: String,
    level_label: &'static str,
    self_url: String,
    facts: Vec<(&'static str, String)>,
    preview: Option<Preview>,
    apply: Option<ApplyBox>,
    downloads: Vec<(&'static str, String)>,
    versions: Vec<VersionRow>,
    /// When the detail shows only the latest versions: how many, of how many, and the link to
    /// the whole history.
    more_versions: Option<(usize, u64, String)>,
    chart: Chart,
    snippets: Vec<(&'static str, String)>,
}

fn download_links(dept: &str, name: &str, version: Option<i64>) -> Vec<(&'static str, String)> {
    FORMATS
        .iter()
        .map(|f| {
            let v = version.map(|v| v.to_string()).unwrap_or_default();
            (
                download_label(f),
                link(
                    &format!("/download/{}/{}", enc(dept), enc(name)),
                    &[("format", f), ("version", &v)],
                ),
            )
        })
        .collect()
}

/// `GET /datasets/{dept}/{name}`.
pub async fn dataset(
    State(portal): State<Portal>,
    v: Visitor,
    Path((dept, name)): Path<(String, String)>,
    Query(p): Query<DatasetParams>,
) -> Response {
    let lang = v.lang;
    let api_path = format!("/api/v1/datasets/{}/{}", enc(&dept), enc(&name));
    let d = portal.api.get::<DatasetOut>(&v.caller, &api_path).await;
    let title = d
        .as_ref()
        .map_or_else(|_| lang.s("error.title").to_string(), |d| d.title.clone());
    let base = match base(&portal, &v, &title).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let d = match d {
        Ok(d) => d,
        Err(a) => return error_page(&v, base, &a),
    };
    let names = department_names(&portal, &v.caller).await;
    let self_url = format!("/datasets/{}/{}", enc(&d.department), enc(&d.name));

    // The preview: the rows API's first page (or the page its `next` link named).
    let rows_uri = if p.page.is_empty() {
        link(
            &format!("{api_path}/rows"),
            &[
                ("limit", &PREVIEW_ROWS.to_string()),
                ("where", &p.filter),
                ("order", &p.order),
            ],
        )
    } else {
        format!("{api_path}/rows?{}", p.page.trim_start_matches('?'))
    };
    let (mut preview, mut apply) = (None, None);
    match portal.api.get::<Value>(&v.caller, &rows_uri).await {
        Ok(page) => {
            let names = column_names(&page);
            let rows = page["rows"].as_array().cloned().unwrap_or_default();
            let (col, dir) = parse_order(&p.order);
            let columns = names
                .iter()
                .map(|c| {
                    let next_dir = if col == *c && dir == "asc" {
                        "desc"
                    } else {
                        "asc"
                    };
                    PreviewColumn {
                        name: c.clone(),
                        sort_url: link(
                            &self_url,
                            &[
                                ("where", &p.filter),
                                ("order", &format!("{} {next_dir}", quote_ident(c))),
                            ],
                        ),
                        mark: if col == *c {
                            if dir == "asc" { " ▲" } else { " ▼" }
                        } else {
                            ""
                        },
                    }
                })
                .collect();
            let next = page["next"]
                .as_str()
                .and_then(|n| n.split_once('?'))
                .map(|(_, q)| {
                    link(
                        &self_url,
                        &[("where", &p.filter), ("order", &p.order), ("page", q)],
                    )
                });
            let offset = offset_of(&p.page);
            preview = Some(Preview {
                filter: p.filter.clone(),
                order: p.order.clone(),
                error: None,
                rows: cells(&names, &rows),
                columns,
                first: (!p.page.is_empty())
                    .then(|| link(&self_url, &[("where", &p.filter), ("order", &p.order)])),
                next,
                label: format!("{}–{}", offset + 1, offset + rows.len() as u64),
            });
        }
        Err(a) if a.status == StatusCode::FORBIDDEN && d.access_level == "conditional" => {
            apply = Some(ApplyBox {
                signed_in: v.caller.key.is_some(),
                done: !p.applied.is_empty(),
                error: (!p.apply_error.is_empty()).then(|| p.apply_error.clone()),
                action: format!("{self_url}/apply"),
            });
        }
        Err(a) => {
            preview = Some(Preview {
                filter: p.filter.clone(),
                order: p.order.clone(),
                error: Some(a.detail()),
                columns: Vec::new(),
                rows: Vec::new(),
                first: None,
                next: None,
                label: String::new(),
            });
        }
    }

    let department = names
        .get(&d.department)
        .cloned()
        .unwrap_or_else(|| d.department.clone());
    let facts = vec![
        (lang.s("ds.department"), department.clone()),
        (lang.s("ds.license"), d.license.clone()),
        (lang.s("ds.frequency"), d.update_frequency.clone()),
        (
            lang.s("ds.format"),
            d.source_format
                .as_deref()
                .map(format_label)
                .unwrap_or("—")
                .to_string(),
        ),
        (
            lang.s("ds.contact"),
            format!("{} <{}>", d.contact.name, d.contact.email),
        ),
        (lang.s("ds.primary_key"), d.primary_key.join(", ")),
        (lang.s("version.rows"), d.row_count.to_string()),
        (lang.s("ds.created"), day(&d.created_at)),
        (lang.s("ds.updated"), day(&d.updated_at)),
        (lang.s("ds.reads_30d"), d.usage.reads_30d.to_string()),
        (
            lang.s("ds.downloads_30d"),
            d.usage.downloads_30d.to_string(),
        ),
    ];
    let versions = d
        .versions
        .iter()
        .flatten()
        .map(|ver| VersionRow {
            version: ver.version,
            mode: ver.mode.clone(),
            format: ver
                .source_format
                .as_deref()
                .map(format_label)
                .unwrap_or("—"),
            rows: ver.row_count,
            bytes: human_bytes(ver.bytes),
            created: ver.created_at.format("%Y-%m-%d %H:%M").to_string(),
            downloads: download_links(&d.department, &d.name, Some(ver.version)),
        })
        .collect::<Vec<_>>();
    let more_versions: Option<(usize, u64, String)> = d
        .versions_total
        .filter(|total| *total > versions.len() as u64)
        .map(|total| {
            let all = d.links.get("versions").cloned().unwrap_or_default();
            (versions.len(), total, all)
        });
    let export = d.links.get("export").cloned().unwrap_or_default();
    let table = format!("{}.{}", d.department, d.name);
    let auth = if d.access_level == "open" {
        ""
    } else {
        " -H \"Authorization: Bearer $DATAGATE_KEY\""
    };
    let headers_py = if d.access_level == "open" {
        String::new()
    } else {
        ", storage_options={\"Authorization\": f\"Bearer {os.environ['DATAGATE_KEY']}\"}"
            .to_string()
    };
    let snippets = vec![
        (
            "curl",
            format!("curl{auth} -o {}.csv '{export}?format=csv'", d.name),
        ),
        (
            "Python (pandas)",
            format!(
                "import os, pandas as pd\ndf = pd.read_csv(\"{export}?format=csv\"{headers_py})"
            ),
        ),
        (
            "Python (polars)",
            format!("import polars as pl\ndf = pl.read_parquet(\"{export}?format=parquet\")"),
        ),
        (
            "DuckDB",
            format!("SELECT * FROM read_parquet('{export}?format=parquet');"),
        ),
        (
            "SQL",
            format!(
                "/sql?q={}",
                enc(&format!("SELECT * FROM {table} LIMIT 100"))
            ),
        ),
    ];
    let page = DatasetPage {
        level_label: lang.level(&d.access_level),
        downloads: download_links(&d.department, &d.name, None),
        chart: reads_chart(lang, &d),
        department,
        self_url,
        facts,
        preview,
        apply,
        more_versions,
        versions,
        snippets,
        d,
        base,
    };
    html(&v, StatusCode::OK, &page)
}

/// `"col desc"` → (`col`, `desc`); the column unquoted.
fn parse_order(order: &str) -> (String, &'static str) {
    let o = order.trim();
    let (col, dir) = match o.rsplit_once(' ') {
        Some((c, d)) if d.eq_ignore_ascii_case("desc") => (c, "desc"),
        Some((c, d)) if d.eq_ignore_ascii_case("asc") => (c, "asc"),
        _ => (o, "asc"),
    };
    (col.trim().trim_matches('"').replace("\"\"", "\""), dir)
}

fn offset_of(query: &str) -> u64 {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "offset")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Deserialize)]
pub struct ApplyForm {
    purpose: String,
}

/// `POST /datasets/{dept}/{name}/apply`: an application, through the API.
pub async fn apply(
    State(portal): State<Portal>,
    v: Visitor,
    Path((dept, name)): Path<(String, String)>,
    Form(f): Form<ApplyForm>,
) -> Response {
    let page = format!("/datasets/{}/{}", enc(&dept), enc(&name));
    if v.caller.key.is_none() {
        return Redirect::to(&link("/signin", &[("next", &page)])).into_response();
    }
    let uri = format!(
        "/api/v1/datasets/{}/{}/applications",
        enc(&dept),
        enc(&name)
    );
    let body = serde_json::json!({ "purpose": f.purpose });
    match portal
        .api
        .send_json::<Value>(&v.caller, Method::POST, &uri, &body)
        .await
    {
        Ok(_) => Redirect::to(&format!("{page}?applied=1#preview")).into_response(),
        Err(a) if a.status == StatusCode::UNAUTHORIZED => signed_out_redirect(&v),
        Err(a) => Redirect::to(&format!(
            "{}#preview",
            link(&page, &[("apply_error", &a.detail())])
        ))
        .into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DownloadParams {
    #[serde(default)]
    format: String,
    #[serde(default)]
    version: String,
}

/// `GET /download/{dept}/{name}?format=&version=`: the export API's answer, streamed through
/// as an attachment (so signed-in visitors download with their session).
pub async fn download(
    State(portal): State<Portal>,
    v: Visitor,
    Path((dept, name)): Path<(String, String)>,
    Query(p): Query<DownloadParams>,
) -> Response {
    let [format, bom] = export_params(&p.format);
    let uri = link(
        &format!("/api/v1/datasets/{}/{}/export", enc(&dept), enc(&name)),
        &[format, bom, ("version", &p.version)],
    );
    let suffix = if p.version.is_empty() {
        String::new()
    } else {
        format!("-v{}", p.version)
    };
    let file = format!("{dept}.{name}{suffix}.{}", extension(format.1));
    pass_through(&portal, &v, &uri, &file).await
}

fn extension(format: &str) -> &'static str {
    match format {
        "json" => "json",
        "ndjson" => "ndjson",
        "parquet" => "parquet",
        "arrow" => "arrows",
        _ => "csv",
    }
}

/// An API answer streamed to the visitor as a file; a refusal as an error page.
pub(super) async fn pass_through(portal: &Portal, v: &Visitor, uri: &str, file: &str) -> Response {
    let resp = portal
        .api
        .send(&v.caller, Method::GET, uri, None, Body::empty())
        .await;
    if resp.status().is_success() {
        let (mut parts, body) = resp.into_parts();
        let file: String = file
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if let Ok(h) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
            parts.headers.insert(header::CONTENT_DISPOSITION, h);
        }
        return Response::from_parts(parts, body);
    }
    let a = super::client::answer_of(resp).await;
    if a.status == StatusCode::UNAUTHORIZED {
        if let Some(key) = &v.caller.key {
            portal.sessions.end_key(key).await;
        }
        return signed_out_redirect(v);
    }
    match base(portal, v, v.lang.s("error.title")).await {
        Ok(b) => error_page(v, b, &a),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------------------------------------
// SQL console

#[derive(Debug, Default, Deserialize)]
pub struct SqlParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    explain: String,
    #[serde(default)]
    format: String,
    /// `0`: the statement is kept in the editor, not run (the table list's search and pages).
    #[serde(default)]
    run: String,
    /// Words looked for in the tables' names, titles, descriptions and tags.
    #[serde(default)]
    tables: String,
    /// The page of the table list, from 1.
    #[serde(default)]
    tables_page: String,
}

pub struct SqlLine {
    before: String,
    mark: String,
    after: String,
    marked: bool,
}

pub struct SqlError {
    message: String,
    at: Option<String>,
    lines: Vec<SqlLine>,
}

pub struct SqlResult {
    row_count: u64,
    elapsed_ms: u128,
    truncated: bool,
    columns: Vec<String>,
    rows: Vec<Vec<Cell>>,
    downloads: Vec<(&'static str, String)>,
}

pub struct TableInfo {
    name: String,
    conditional: bool,
    columns: Vec<(String, String)>,
}

/// One page of the tables the visitor can query, found by a search.
#[derive(Default)]
pub struct TableList {
    /// The search, as typed.
    search: String,
    tables: Vec<TableInfo>,
    /// `first–last / total` of the matches.
    shown: String,
    prev: Option<String>,
    next: Option<String>,
    /// Why the list could not be read.
    error: Option<String>,
}

/// The page `p` asks for of the tables the visitor can query: the catalog searches and pages
/// them (names too), whatever its size.
async fn table_list(portal: &Portal, caller: &Caller, p: &SqlParams) -> TableList {
    let search = p.tables.trim();
    let listing = |page: usize| {
        let offset = page_offset(page, TABLES_PER_PAGE);
        let uri = link(
            "/api/v1/datasets",
            &[
                ("q", search),
                ("names", "true"),
                ("limit", &TABLES_PER_PAGE.to_string()),
                ("offset", &offset),
            ],
        );
        async move { portal.api.get::<DatasetList>(caller, &uri).await }
    };
    let asked = asked_page(&p.tables_page);
    let first = listing(asked).await;
    let (found, page, pages) = match listing_page(asked, TABLES_PER_PAGE, first, listing).await {
        Ok(l) => (l.found, l.page, l.pages),
        Err(a) => {
            return TableList {
                search: search.to_string(),
                error: Some(a.detail()),
                ..Default::default()
            };
        }
    };
    let page_url = |n: usize| {
        let n = n.to_string();
        link(
            "/sql",
            &[
                ("q", &p.q),
                ("run", "0"),
                ("tables", search),
                ("tables_page", if n == "1" { "" } else { &n }),
            ],
        ) + "#tables"
    };
    let total = found.total;
    let (prev, next) = neighbours(page, pages, page_url);
    let first = (page - 1) * TABLES_PER_PAGE;
    TableList {
        search: search.to_string(),
        shown: if found.datasets.is_empty() {
            String::new()
        } else {
            format!("{}–{} / {total}", first + 1, first + found.datasets.len())
        },
        tables: found
            .datasets
            .into_iter()
            .map(|d| TableInfo {
                name: format!("{}.{}", d.department, d.name),
                conditional: d.access_level == "conditional",
                columns: d
                    .columns()
                    .iter()
                    .map(|c| (c.name.clone(), c.data_type.clone()))
                    .collect(),
            })
            .collect(),
        prev,
        next,
        error: None,
    }
}

#[derive(Template)]
#[template(path = "sql.html")]
struct SqlPage {
    base: Base,
    sql: String,
    error: Option<SqlError>,
    result: Option<SqlResult>,
    tables: TableList,
}

/// The statement's lines, the one at `line`/`column` (1-based) marked at that character.
fn mark_position(sql: &str, line: u64, column: u64) -> Vec<SqlLine> {
    sql.lines()
        .enumerate()
        .map(|(i, l)| {
            if i as u64 + 1 != line {
                return SqlLine {
                    before: l.to_string(),
                    mark: String::new(),
                    after: String::new(),
                    marked: false,
                };
            }
            let at = usize::try_from(column.saturating_sub(1)).unwrap_or(0);
            let chars: Vec<char> = l.chars().collect();
            let at = at.min(chars.len());
            let end = (at + 1).min(chars.len());
            SqlLine {
                before: chars[..at].iter().collect(),
                mark: if at < chars.len() {
                    chars[at..end].iter().collect()
                } else {
                    " ".into()
                },
                after: chars[end..].iter().collect(),
                marked: true,
            }
        })
        .collect()
}

/// `GET /sql?q=...[&explain=1]`: the console; a statement in `q` runs through
/// `POST /api/v1/query` as the visitor (shareable: the URL is the statement).
pub async fn sql(State(portal): State<Portal>, v: Visitor, Query(p): Query<SqlParams>) -> Response {
    let lang = v.lang;
    let base = match base(&portal, &v, lang.s("sql.title")).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let tables = table_list(&portal, &v.caller, &p).await;
    let sql = p.q.trim().to_string();
    let (mut error, mut result) = (None, None);
    if !sql.is_empty() && p.run != "0" {
        let statement = if p.explain.is_empty() {
            sql.clone()
        } else {
            format!("EXPLAIN {sql}")
        };
        let started = Instant::now();
        let answer = portal
            .api
            .send_json::<Value>(
                &v.caller,
                Method::POST,
                "/api/v1/query",
                &serde_json::json!({ "sql": statement }),
            )
            .await;
        let elapsed_ms = started.elapsed().as_millis();
        match answer {
            Ok(page) => {
                let columns = column_names(&page);
                let rows = page["rows"].as_array().cloned().unwrap_or_default();
                result = Some(SqlResult {
                    row_count: page["row_count"].as_u64().unwrap_or(rows.len() as u64),
                    elapsed_ms,
                    truncated: page["truncated"].as_bool().unwrap_or(false),
                    rows: cells(&columns, &rows),
                    columns,
                    downloads: FORMATS
                        .iter()
                        .map(|f| {
                            (
                                download_label(f),
                                link("/sql/download", &[("q", &statement), ("format", f)]),
                            )
                        })
                        .collect(),
                });
            }
            Err(a) if a.status == StatusCode::UNAUTHORIZED => return signed_out_redirect(&v),
            Err(a) => {
                let (line, column) = (a.number("line"), a.number("column"));
                // A position in the EXPLAIN-prefixed statement is one in the visitor's text.
                let shift = if p.explain.is_empty() {
                    0
                } else {
                    "EXPLAIN ".len() as u64
                };
                let column = column.map(|c| {
                    if line == Some(1) {
                        c.saturating_sub(shift).max(1)
                    } else {
                        c
                    }
                });
                error = Some(SqlError {
                    message: a.detail(),
                    at: line
                        .zip(column)
                        .map(|(l, c)| format!("line {l}, column {c}")),
                    lines: match (line, column) {
                        (Some(l), Some(c)) => mark_position(&sql, l, c),
                        _ => Vec::new(),
                    },
                });
            }
        }
    }
    let page = SqlPage {
        base,
        sql,
        error,
        result,
        tables,
    };
    html(&v, StatusCode::OK, &page)
}

/// `GET /sql/download?q=...&format=...`: the statement's whole result as a file.
pub async fn sql_download(
    State(portal): State<Portal>,
    v: Visitor,
    Query(p): Query<SqlParams>,
) -> Response {
    let [format, bom] = export_params(&p.format);
    let uri = link("/api/v1/query", &[("sql", &p.q), format, bom]);
    pass_through(
        &portal,
        &v,
        &uri,
        &format!("result.{}", extension(format.1)),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Sign-in and "my access"

#[derive(Debug, Default, Deserialize)]
pub struct SigninParams {
    #[serde(default)]
    next: String,
    #[serde(default)]
    expired: String,
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage {
    base: Base,
    next: String,
    expired: bool,
    failed: bool,
}

/// Where to go after signing in: a path of this site only (no open redirect).
fn local_path(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_string()
    } else {
        "/".to_string()
    }
}

/// `GET /signin`.
pub async fn signin_form(
    State(portal): State<Portal>,
    v: Visitor,
    Query(p): Query<SigninParams>,
) -> Response {
    let base = match base(&portal, &v, v.lang.s("signin.title")).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let page = SigninPage {
        base,
        next: local_path(&p.next),
        expired: !p.expired.is_empty(),
        failed: false,
    };
    html(&v, StatusCode::OK, &page)
}

#[derive(Debug, Deserialize)]
pub struct SigninForm {
    key: String,
    #[serde(default)]
    next: String,
}

fn session_cookie(
    value: &str,
    max_age: cookie::time::Duration,
    secure: bool,
) -> Option<HeaderValue> {
    let c = cookie::Cookie::build((session::COOKIE, value.to_string()))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .max_age(max_age)
        .build();
    HeaderValue::from_str(&c.to_string()).ok()
}

fn clear_session_cookie(resp: &mut Response, secure: bool) {
    if let Some(h) = session_cookie("", cookie::time::Duration::ZERO, secure) {
        resp.headers_mut().append(header::SET_COOKIE, h);
    }
}

/// `POST /signin`: the key is checked by the API (`/api/v1/me`) and exchanged for a session.
pub async fn signin(
    State(portal): State<Portal>,
    v: Visitor,
    Form(f): Form<SigninForm>,
) -> Response {
    let key = f.key.trim().to_string();
    let as_key = Caller {
        key: Some(key.clone()),
        ..v.caller.clone()
    };
    let accepted = !key.is_empty()
        && matches!(portal.api.get::<Value>(&as_key, "/api/v1/me").await,
            Ok(me) if me["role"].as_str().is_some_and(|r| r != "anonymous"));
    if !accepted {
        let signed_out = Visitor {
            caller: Caller {
                key: None,
                ..v.caller.clone()
            },
            session: None,
            ..v
        };
        let base = match base(&portal, &signed_out, signed_out.lang.s("signin.title")).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let page = SigninPage {
            base,
            next: local_path(&f.next),
            expired: false,
            failed: true,
        };
        return html(&signed_out, StatusCode::UNAUTHORIZED, &page);
    }
    if let Some(old) = &v.session {
        portal.sessions.end(old).await;
    }
    let id = match portal.sessions.start(key).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "storing a portal session");
            return plain_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the sign-in could not be stored; try again in a moment",
            );
        }
    };
    let max_age = cookie::time::Duration::seconds(
        i64::try_from(portal.sessions.max_age().as_secs()).unwrap_or(i64::MAX),
    );
    let mut resp = Redirect::to(&local_path(&f.next)).into_response();
    if let Some(h) = session_cookie(&id, max_age, v.secure) {
        resp.headers_mut().append(header::SET_COOKIE, h);
    }
    resp
}

/// `POST /signout`.
pub async fn signout(State(portal): State<Portal>, v: Visitor) -> Response {
    if let Some(id) = &v.session {
        portal.sessions.end(id).await;
    }
    let mut resp = Redirect::to("/").into_response();
    clear_session_cookie(&mut resp, v.secure);
    resp
}

pub struct ApplicationRow {
    dataset: String,
    url: String,
    purpose: String,
    status: String,
    created: String,
}

#[derive(Template)]
#[template(path = "me.html")]
struct MePage {
    base: Base,
    facts: Vec<(&'static str, String)>,
    grants: Vec<(String, String, String)>,
    applications: Vec<ApplicationRow>,
}

/// `GET /me`: the key's role, department, tier and limits, today's bytes, grants, applications.
pub async fn me(State(portal): State<Portal>, v: Visitor) -> Response {
    let lang = v.lang;
    if v.caller.key.is_none() {
        return Redirect::to(&link("/signin", &[("next", "/me")])).into_response();
    }
    let base = match base(&portal, &v, lang.s("me.title")).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (me, apps) = tokio::join!(
        portal.api.get::<Value>(&v.caller, "/api/v1/me"),
        portal.api.get::<Value>(&v.caller, "/api/v1/applications")
    );
    let me = match me {
        Ok(me) => me,
        Err(a) => return error_page(&v, base, &a),
    };
    let tier = &me["limits"]["tier"];
    let limit = |x: &Value| match x.as_u64() {
        Some(0) | None => lang.s("me.unlimited").to_string(),
        Some(n) => human_bytes(n),
    };
    let facts = vec![
        (lang.s("me.key"), text(&me["principal"])),
        (lang.s("me.role"), text(&me["role"])),
        (lang.s("ds.department"), text(&me["department"])),
        (lang.s("me.tier"), text(&me["tier"])),
        (
            lang.s("me.requests"),
            format!(
                "{} / {} s (burst {})",
                text(&tier["requests"]),
                text(&tier["window_secs"]),
                text(&tier["burst"])
            ),
        ),
        (lang.s("me.daily_bytes"), limit(&tier["daily_bytes"])),
        (
            lang.s("me.bytes_today"),
            human_bytes(tier["bytes_used_today"].as_u64().unwrap_or(0)),
        ),
        (lang.s("me.expires"), text(&me["expires_at"])),
    ];
    let grants = me["grants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let dataset = text(&g["dataset"]);
            (
                dataset.clone(),
                format!("/datasets/{dataset}"),
                text(&g["expires_at"]),
            )
        })
        .collect();
    let applications = apps
        .ok()
        .and_then(|a| a.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let dataset = format!("{}/{}", text(&a["department"]), text(&a["dataset"]));
            ApplicationRow {
                url: format!("/datasets/{dataset}"),
                dataset,
                purpose: text(&a["purpose"]),
                status: text(&a["status"]),
                created: text(&a["created_at"]),
            }
        })
        .collect();
    let page = MePage {
        base,
        facts,
        grants,
        applications,
    };
    html(&v, StatusCode::OK, &page)
}
