//! The department pages (publishers of the department, admins): the department's datasets,
//! registering one (with its columns' types, sensitivity and masks), editing metadata,
//! uploading a version (with a progress bar; the API's 422 shown with its line and column),
//! unpublishing, the applications queue (approve with an optional expiry, reject with a
//! reason) and the grants (revoke). Every change is the API's own request, as the visitor.

use super::client::Answer;
use super::pages::{
    Base, ListingPage, asked_page, base, enc, error_page, html, link, listing_page, neighbours,
    page_offset, signed_out_redirect,
};
use super::{Portal, Visitor};
use crate::api::{DatasetList, DatasetOut};
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// Blank column rows the registration form offers.
const COLUMN_ROWS: usize = 8;
pub const TYPES: [&str; 9] = [
    "utf8",
    "int64",
    "float64",
    "boolean",
    "date32",
    "timestamp(us)",
    "decimal128(18,2)",
    "int32",
    "float32",
];
pub const MASKS: [&str; 5] = ["partial", "hash", "redact", "year", "null"];

/// The department a visitor manages: a publisher's own; for admins, the one asked for.
async fn managed(portal: &Portal, v: &Visitor) -> Result<(String, Option<String>), Response> {
    if v.caller.key.is_none() {
        return Err(Redirect::to(&link("/signin", &[("next", &v.here)])).into_response());
    }
    let me: Value = match portal.api.get(&v.caller, "/api/v1/me").await {
        Ok(me) => me,
        Err(a) if a.status == StatusCode::UNAUTHORIZED => return Err(signed_out_redirect(v)),
        Err(a) => return Err((a.status, a.detail()).into_response()),
    };
    let role = me["role"].as_str().unwrap_or("").to_string();
    Ok((role, me["department"].as_str().map(str::to_string)))
}

#[derive(Template)]
#[template(path = "publish.html")]
struct PublishPage {
    base: Base,
    department: String,
    departments: Vec<String>,
    datasets: Vec<DatasetOut>,
    /// Links to the list's previous and next pages, and `page / pages` when it has several.
    prev: Option<String>,
    next: Option<String>,
    page_label: String,
    /// The department's unpublished datasets, which may be published again.
    unpublished: Vec<DatasetOut>,
    applications: Vec<Row>,
    grants: Vec<Row>,
    notice: String,
    error: String,
    rows: Vec<usize>,
    types: &'static [&'static str],
    masks: &'static [&'static str],
}

/// An application or a grant as the page lists it.
pub struct Row {
    id: String,
    dataset: String,
    who: String,
    text: String,
    when: String,
}

fn field(x: &Value, k: &str) -> String {
    match &x[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn row(x: &Value, who: &str, text: &str, when: &str) -> Row {
    Row {
        id: field(x, "id"),
        dataset: format!("{}/{}", field(x, "department"), field(x, "dataset")),
        who: field(x, who),
        text: field(x, text),
        when: field(x, when)
            .chars()
            .take(16)
            .collect::<String>()
            .replace('T', " "),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    #[serde(default)]
    notice: String,
    #[serde(default)]
    error: String,
    /// The page of the department's datasets, from 1.
    #[serde(default)]
    page: String,
}

/// Datasets per page of a department's list.
const DATASETS_PER_PAGE: usize = 100;

/// `GET /publish`: a publisher's department page; admins choose a department.
pub async fn home(State(portal): State<Portal>, v: Visitor) -> Response {
    match managed(&portal, &v).await {
        Err(r) => r,
        Ok((role, Some(dept))) if role == "publisher" => {
            Redirect::to(&format!("/publish/{}", enc(&dept))).into_response()
        }
        Ok((role, _)) if role == "admin" => {
            let depts: Vec<Value> = portal
                .api
                .get(&v.caller, "/api/v1/departments")
                .await
                .unwrap_or_default();
            match depts.first().and_then(|d| d["id"].as_str()) {
                Some(first) => Redirect::to(&format!("/publish/{}", enc(first))).into_response(),
                None => forbidden(&portal, &v).await,
            }
        }
        Ok(_) => forbidden(&portal, &v).await,
    }
}

async fn forbidden(portal: &Portal, v: &Visitor) -> Response {
    let a = Answer {
        status: StatusCode::FORBIDDEN,
        problem: json!({"detail": v.lang.s("publish.only")}),
    };
    match base(portal, v, v.lang.s("error.title")).await {
        Ok(b) => error_page(v, b, &a),
        Err(r) => r,
    }
}

/// `GET /publish/{dept}`.
pub async fn department(
    State(portal): State<Portal>,
    v: Visitor,
    Path(dept): Path<String>,
    Query(n): Query<Notice>,
) -> Response {
    let (role, own) = match managed(&portal, &v).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !(role == "admin" || (role == "publisher" && own.as_deref() == Some(dept.as_str()))) {
        return forbidden(&portal, &v).await;
    }
    let base = match base(&portal, &v, v.lang.s("publish.title")).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // A page of the published datasets (a department may have thousands), and the unpublished.
    let list_uri = |page: usize| {
        let offset = page_offset(page, DATASETS_PER_PAGE);
        link(
            "/api/v1/datasets",
            &[
                ("department", &dept),
                ("limit", &DATASETS_PER_PAGE.to_string()),
                ("offset", &offset),
                ("schema", "false"),
            ],
        )
    };
    let hidden_uri = link(
        "/api/v1/datasets",
        &[
            ("department", &dept),
            ("limit", "1000"),
            ("unpublished", "true"),
            ("schema", "false"),
        ],
    );
    let asked = asked_page(&n.page);
    let first_uri = list_uri(asked);
    let (list, hidden, apps, grants, depts) = tokio::join!(
        portal.api.get::<DatasetList>(&v.caller, &first_uri),
        portal.api.get::<DatasetList>(&v.caller, &hidden_uri),
        portal
            .api
            .get::<Vec<Value>>(&v.caller, "/api/v1/applications?status=pending"),
        portal.api.get::<Vec<Value>>(&v.caller, "/api/v1/grants"),
        portal
            .api
            .get::<Vec<Value>>(&v.caller, "/api/v1/departments"),
    );
    let read = |page: usize| {
        let uri = list_uri(page);
        let (api, caller) = (&portal.api, &v.caller);
        async move { api.get::<DatasetList>(caller, &uri).await }
    };
    let ListingPage {
        found: list,
        page,
        pages,
    } = match listing_page(asked, DATASETS_PER_PAGE, list, read).await {
        Ok(l) => l,
        Err(a) => return error_page(&v, base, &a),
    };
    let page_url = |n: usize| {
        link(
            &format!("/publish/{}", enc(&dept)),
            &[("page", &n.to_string())],
        )
    };
    let in_dept = |x: &Value| x["department"].as_str() == Some(dept.as_str());
    let (prev, next) = neighbours(page, pages, page_url);
    let page = PublishPage {
        departments: if role == "admin" {
            depts
                .unwrap_or_default()
                .iter()
                .filter_map(|d| d["id"].as_str().map(str::to_string))
                .collect()
        } else {
            Vec::new()
        },
        datasets: list.datasets,
        prev,
        next,
        page_label: if pages > 1 {
            format!("{page} / {pages}")
        } else {
            String::new()
        },
        unpublished: hidden.map(|l| l.datasets).unwrap_or_default(),
        applications: apps
            .unwrap_or_default()
            .iter()
            .filter(|a| in_dept(a))
            .map(|a| row(a, "applicant", "purpose", "created_at"))
            .collect(),
        grants: grants
            .unwrap_or_default()
            .iter()
            .filter(|g| in_dept(g) && g["revoked_at"].is_null())
            .map(|g| row(g, "key_id", "expires_at", "created_at"))
            .collect(),
        notice: n.notice,
        error: n.error,
        rows: (0..COLUMN_ROWS).collect(),
        types: &TYPES,
        masks: &MASKS,
        department: dept,
        base,
    };
    html(&v, StatusCode::OK, &page)
}

/// The registration form: the dataset and up to [`COLUMN_ROWS`] columns (blank rows ignored).
#[derive(Debug, Deserialize)]
pub struct RegisterForm {
    name: String,
    title: String,
    #[serde(default)]
    description: String,
    access_level: String,
    #[serde(default)]
    license: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    update_frequency: String,
    #[serde(default)]
    contact_name: String,
    #[serde(default)]
    contact_email: String,
    #[serde(default)]
    primary_key: String,
    #[serde(flatten)]
    rest: std::collections::HashMap<String, String>,
}

fn list_of(text: &str) -> Vec<String> {
    text.split([',', '，'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `POST /publish/{dept}/register` → `POST /api/v1/datasets`.
pub async fn register(
    State(portal): State<Portal>,
    v: Visitor,
    Path(dept): Path<String>,
    Form(f): Form<RegisterForm>,
) -> Response {
    let columns: Vec<Value> = (0..COLUMN_ROWS)
        .filter_map(|i| {
            let get = |k: &str| {
                f.rest
                    .get(&format!("col{i}_{k}"))
                    .map(|s| s.trim().to_string())
            };
            let name = get("name").filter(|n| !n.is_empty())?;
            let mut c = json!({
                "name": name,
                "type": get("type").unwrap_or_else(|| "utf8".into()),
                "sensitivity": get("sensitivity").unwrap_or_else(|| "public".into()),
            });
            if let Some(m) = get("mask").filter(|m| !m.is_empty())
                && c["sensitivity"] == "masked"
            {
                c["mask"] = m.into();
            }
            if let Some(d) = get("description").filter(|d| !d.is_empty()) {
                c["description"] = d.into();
            }
            Some(c)
        })
        .collect();
    let body = json!({
        "department": dept, "name": f.name.trim(), "title": f.title.trim(),
        "description": f.description, "access_level": f.access_level, "license": f.license,
        "tags": list_of(&f.tags), "update_frequency": f.update_frequency,
        "contact": {"name": f.contact_name, "email": f.contact_email},
        "primary_key": list_of(&f.primary_key), "columns": columns,
    });
    let back = format!("/publish/{}", enc(&dept));
    match portal
        .api
        .send_json::<Value>(&v.caller, Method::POST, "/api/v1/datasets", &body)
        .await
    {
        Ok(d) => Redirect::to(&format!(
            "/publish/{}/{}?notice=registered",
            enc(&dept),
            enc(d["name"].as_str().unwrap_or(""))
        ))
        .into_response(),
        Err(a) => after_refusal(&v, &back, &a),
    }
}

/// Back to `page` with the API's refusal shown there (a refused key signs the visitor out).
fn after_refusal(v: &Visitor, page: &str, a: &Answer) -> Response {
    if a.status == StatusCode::UNAUTHORIZED {
        return signed_out_redirect(v);
    }
    Redirect::to(&link(page, &[("error", &a.detail())])).into_response()
}

#[derive(Template)]
#[template(path = "publish_dataset.html")]
struct DatasetAdminPage {
    base: Base,
    d: DatasetOut,
    tags: String,
    notice: String,
    error: String,
    masks: &'static [&'static str],
}

/// `GET /publish/{dept}/{name}`: edit, upload, unpublish.
pub async fn dataset(
    State(portal): State<Portal>,
    v: Visitor,
    Path((dept, name)): Path<(String, String)>,
    Query(n): Query<Notice>,
) -> Response {
    if let Err(r) = managed(&portal, &v).await {
        return r;
    }
    let uri = format!("/api/v1/datasets/{}/{}", enc(&dept), enc(&name));
    let d = portal.api.get::<DatasetOut>(&v.caller, &uri).await;
    let base = match base(&portal, &v, v.lang.s("publish.title")).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let d = match d {
        Ok(d) => d,
        Err(a) => return error_page(&v, base, &a),
    };
    let page = DatasetAdminPage {
        tags: d.tags.join(", "),
        notice: n.notice,
        error: n.error,
        masks: &MASKS,
        d,
        base,
    };
    html(&v, StatusCode::OK, &page)
}

#[derive(Debug, Deserialize)]
pub struct EditForm {
    title: String,
    #[serde(default)]
    description: String,
    access_level: String,
    #[serde(default)]
    license: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    update_frequency: String,
    #[serde(flatten)]
    rest: std::collections::HashMap<String, String>,
}

/// `POST /publish/{dept}/{name}/edit` → `PATCH /api/v1/datasets/{dept}/{name}` (metadata and
/// the columns' sensitivity and masks).
pub async fn edit(
    State(portal): State<Portal>,
    v: Visitor,
    Path((dept, name)): Path<(String, String)>,
    Form(f): Form<EditForm>,
) -> Response {
    let columns: Vec<Value> = f
        .rest
        .iter()
        .filter_map(|(k, sensitivity)| {
            let column = k.strip_prefix("sens:")?;
            let mut c = json!({"name": column, "sensitivity": sensitivity});
            if sensitivity == "masked" {
                c["mask"] = f
                    .rest
                    .get(&format!("mask:{column}"))
                    .filter(|m| !m.is_empty())
                    .cloned()
                    .unwrap_or_else(|| "partial".into())
                    .into();
            }
            Some(c)
        })
        .collect();
    let mut body = json!({
        "title": f.title, "description": f.description, "access_level": f.access_level,
        "license": f.license, "tags": list_of(&f.tags), "update_frequency": f.update_frequency,
    });
    if !columns.is_empty() {
        body["columns"] = columns.into();
    }
    let page = format!("/publish/{}/{}", enc(&dept), enc(&name));
    let uri = format!("/api/v1/datasets/{}/{}", enc(&dept), enc(&name));
    match portal
        .api
        .send_json::<Value>(&v.caller, Method::PATCH, &uri, &body)
        .await
    {
        Ok(_) => Redirect::to(&format!("{page}?notice=saved")).into_response(),
        Err(a) => after_refusal(&v, &page, &a),
    }
}

/// `POST /publish/{dept}/{name}/unpublish` → `DELETE /api/v1/datasets/{dept}/{name}`.
pub async fn unpublish(
    State(portal): State<Portal>,
    v: Visitor,
    Path((dept, name)): Path<(String, String)>,
) -> Response {
    let uri = format!("/api/v1/datasets/{}/{}", enc(&dept), enc(&name));
    let back = format!("/publish/{}", enc(&dept));
    match portal.api.delete(&v.caller, &uri).await {
        Ok(()) => Redirect::to(&format!("{back}?notice=unpublished")).into_response(),
        Err(a) => after_refusal(&v, &format!("{back}/{}", enc(&name)), &a),
    }
}

/// `POST /publish/{dept}/{name}/republish` → `POST /api/v1/datasets/{dept}/{name}/publish`.
pub async fn republish(
    State(portal): State<Portal>,
    v: Visitor,
    Path((dept, name)): Path<(String, String)>,
) -> Response {
    let uri = format!("/api/v1/datasets/{}/{}/publish", enc(&dept), enc(&name));
    let back = format!("/publish/{}", enc(&dept));
    match portal
        .api
        .send_json::<Value>(&v.caller, Method::POST, &uri, &json!({}))
        .await
    {
        Ok(_) => {
            Redirect::to(&format!("{}/{}?notice=republished", back, enc(&name))).into_response()
        }
        Err(a) => after_refusal(&v, &back, &a),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct UploadParams {
    #[serde(default)]
    mode: String,
}

/// `POST /publish/{dept}/{name}/upload?mode=`: the page's script sends the file as the body;
/// it streams to `POST /api/v1/datasets/{dept}/{name}/versions` with its type and encoding,
/// and the API's answer (the version, or the problem with its line and column) comes back as
/// it is.
pub async fn upload(
    State(portal): State<Portal>,
    v: Visitor,
    Path((dept, name)): Path<(String, String)>,
    Query(p): Query<UploadParams>,
    req: Request,
) -> Response {
    let mode = if p.mode == "replace" {
        "replace"
    } else {
        "append"
    };
    let uri = format!(
        "/api/v1/datasets/{}/{}/versions?mode={mode}",
        enc(&dept),
        enc(&name)
    );
    let (parts, body) = req.into_parts();
    let mut headers = Vec::new();
    for h in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
        if let Some(value) = parts.headers.get(&h).and_then(|x| x.to_str().ok()) {
            headers.push((h, value.to_string()));
        }
    }
    let borrowed: Vec<(header::HeaderName, &str)> = headers
        .iter()
        .map(|(h, x)| (h.clone(), x.as_str()))
        .collect();
    portal
        .api
        .send_with(&v.caller, Method::POST, &uri, &borrowed, body)
        .await
}

#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    department: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    reason: String,
}

/// `POST /publish/applications/{id}/approve` (optional expiry date) and `/reject` (reason).
pub async fn decide(
    State(portal): State<Portal>,
    v: Visitor,
    Path((id, decision)): Path<(String, String)>,
    Form(f): Form<DecisionForm>,
) -> Response {
    let back = format!("/publish/{}", enc(&f.department));
    let body = match decision.as_str() {
        "approve" if f.expires.trim().is_empty() => json!({}),
        "approve" => json!({"expires_at": format!("{}T23:59:59Z", f.expires.trim())}),
        "reject" => json!({"reason": f.reason}),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let uri = format!("/api/v1/applications/{}/{decision}", enc(&id));
    match portal
        .api
        .send_json::<Value>(&v.caller, Method::POST, &uri, &body)
        .await
    {
        Ok(_) => Redirect::to(&format!("{back}?notice={decision}d")).into_response(),
        Err(a) => after_refusal(&v, &back, &a),
    }
}

/// `POST /publish/grants/{id}/revoke` → `DELETE /api/v1/grants/{id}`.
pub async fn revoke_grant(
    State(portal): State<Portal>,
    v: Visitor,
    Path(id): Path<String>,
    Form(f): Form<DecisionForm>,
) -> Response {
    let back = format!("/publish/{}", enc(&f.department));
    let uri = format!("/api/v1/grants/{}", enc(&id));
    match portal.api.delete(&v.caller, &uri).await {
        Ok(()) => Redirect::to(&format!("{back}?notice=revoked")).into_response(),
        Err(a) => after_refusal(&v, &back, &a),
    }
}
