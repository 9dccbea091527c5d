//! The admin pages: API keys (create — the key shown once —, list, change tier, revoke) and
//! departments (list, create). Every change is the API's own request, as the visitor; the API
//! refuses anyone but an admin, and so does this page.

use super::client::Answer;
use super::pages::{Base, base, enc, error_page, html, link, signed_out_redirect, text};
use super::{Portal, Visitor};
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// A key as the list shows it.
pub struct KeyRow {
    id: String,
    name: String,
    role: String,
    department: String,
    tier: String,
    created: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    base: Base,
    keys: Vec<KeyRow>,
    departments: Vec<(String, String, String)>,
    tiers: Vec<String>,
    new_key: String,
    notice: String,
    error: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct AdminParams {
    #[serde(default)]
    notice: String,
    #[serde(default)]
    error: String,
}

/// `GET /admin`. The new key of a `POST /admin/keys` is shown on that answer only, never in a
/// URL or a cookie.
pub async fn page(
    State(portal): State<Portal>,
    v: Visitor,
    Query(p): Query<AdminParams>,
) -> Response {
    render(&portal, &v, String::new(), p.notice, p.error).await
}

async fn render(
    portal: &Portal,
    v: &Visitor,
    new_key: String,
    notice: String,
    error: String,
) -> Response {
    if v.caller.key.is_none() {
        return Redirect::to(&link("/signin", &[("next", "/admin")])).into_response();
    }
    let base = match base(portal, v, v.lang.s("admin.title")).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (keys, depts) = tokio::join!(
        portal.api.get::<Vec<Value>>(&v.caller, "/api/v1/keys"),
        portal
            .api
            .get::<Vec<Value>>(&v.caller, "/api/v1/departments"),
    );
    let keys = match keys {
        Ok(k) => k,
        Err(a) => return error_page(v, base, &a),
    };
    let mut tiers: Vec<String> = portal.state.config.tiers.keys().cloned().collect();
    tiers.retain(|t| t != datagate_core::ANONYMOUS_TIER);
    let page = AdminPage {
        keys: keys
            .iter()
            .map(|k| KeyRow {
                id: text(&k["id"]),
                name: text(&k["name"]),
                role: text(&k["role"]),
                department: text(&k["department"]),
                tier: text(&k["tier"]),
                created: text(&k["created_at"]).chars().take(10).collect(),
                revoked: !k["revoked_at"].is_null(),
            })
            .collect(),
        departments: depts
            .unwrap_or_default()
            .iter()
            .map(|d| (text(&d["id"]), text(&d["name"]), text(&d["dataset_count"])))
            .collect(),
        tiers,
        new_key,
        notice,
        error,
        base,
    };
    let status = if page.new_key.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    html(v, status, &page)
}

fn back(v: &Visitor, a: &Answer) -> Response {
    if a.status == StatusCode::UNAUTHORIZED {
        return signed_out_redirect(v);
    }
    Redirect::to(&link("/admin", &[("error", &a.detail())])).into_response()
}

#[derive(Debug, Deserialize)]
pub struct NewKeyForm {
    name: String,
    role: String,
    #[serde(default)]
    department: String,
    #[serde(default)]
    tier: String,
}

/// `POST /admin/keys`: a new key, shown once on the answer.
pub async fn create_key(
    State(portal): State<Portal>,
    v: Visitor,
    Form(f): Form<NewKeyForm>,
) -> Response {
    let mut body = json!({"name": f.name, "role": f.role});
    if !f.department.trim().is_empty() {
        body["department"] = f.department.trim().into();
    }
    if !f.tier.is_empty() {
        body["tier"] = f.tier.into();
    }
    match portal
        .api
        .send_json::<Value>(&v.caller, Method::POST, "/api/v1/keys", &body)
        .await
    {
        Ok(created) => {
            render(
                &portal,
                &v,
                text(&created["key"]),
                String::new(),
                String::new(),
            )
            .await
        }
        Err(a) => back(&v, &a),
    }
}

#[derive(Debug, Deserialize)]
pub struct TierForm {
    tier: String,
}

/// `POST /admin/keys/{id}/tier`.
pub async fn change_tier(
    State(portal): State<Portal>,
    v: Visitor,
    Path(id): Path<String>,
    Form(f): Form<TierForm>,
) -> Response {
    let uri = format!("/api/v1/keys/{}", enc(&id));
    match portal
        .api
        .send_json::<Value>(&v.caller, Method::PATCH, &uri, &json!({"tier": f.tier}))
        .await
    {
        Ok(_) => Redirect::to("/admin?notice=tier").into_response(),
        Err(a) => back(&v, &a),
    }
}

/// `POST /admin/keys/{id}/revoke`.
pub async fn revoke_key(
    State(portal): State<Portal>,
    v: Visitor,
    Path(id): Path<String>,
) -> Response {
    let uri = format!("/api/v1/keys/{}", enc(&id));
    match portal.api.delete(&v.caller, &uri).await {
        Ok(()) => Redirect::to("/admin?notice=revoked").into_response(),
        Err(a) => back(&v, &a),
    }
}

#[derive(Debug, Deserialize)]
pub struct DepartmentForm {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
}

/// `POST /admin/departments`.
pub async fn create_department(
    State(portal): State<Portal>,
    v: Visitor,
    Form(f): Form<DepartmentForm>,
) -> Response {
    let body = json!({"id": f.id.trim(), "name": f.name.trim(), "description": f.description});
    match portal
        .api
        .send_json::<Value>(&v.caller, Method::POST, "/api/v1/departments", &body)
        .await
    {
        Ok(_) => Redirect::to("/admin?notice=department").into_response(),
        Err(a) => back(&v, &a),
    }
}
