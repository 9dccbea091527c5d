//! The portal: datagate's website at `/` for the public, departments and auditors (API.md §5
//! Ops), served by the same binary on the same port.
//!
//! Pages are rendered on the server from compiled templates ([`askama`], `templates/`, every
//! value escaped) and work without JavaScript; the few enhancements are one small module in
//! `assets/`, served from the binary under a content-hashed name ([`assets`]). Every page
//! reads and changes what it shows through the API routes themselves ([`client`]), with the
//! visitor's key (kept in a server-side [`session`]) and address: the same principal,
//! authorisation table, masking, fair use and audit as an API client — nothing is reachable
//! here that the API would not give the same caller.
//!
//! Every answer carries a strict `Content-Security-Policy` (no inline script, no `eval`, no
//! framing), `X-Content-Type-Options`, `Referrer-Policy`; every state-changing form is a POST
//! refused unless its `Origin` (or `Referer`) is this site (`same_origin`), on top of the
//! `SameSite=Strict` session cookie.

mod admin;
pub mod assets;
mod audit;
pub mod client;
pub mod i18n;
mod pages;
mod publish;
pub mod session;

use crate::state::AppState;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use client::{Api, Caller};
use i18n::Lang;
use session::Sessions;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the portal's handlers share.
#[derive(Clone)]
pub struct Portal {
    pub api: Api,
    pub sessions: Arc<Sessions>,
    /// For the server's settings only (public URL, TLS); data goes through [`Api`].
    pub state: AppState,
}

/// The portal's routes (none when `portal.enabled` is off).
pub fn router(state: &AppState, api: Api) -> Router {
    if !state.config.portal.enabled {
        return Router::new();
    }
    let portal = Portal {
        api,
        sessions: Arc::new(Sessions::on(&state.config.portal, &state.catalog)),
        state: state.clone(),
    };
    Router::new()
        .route("/", get(pages::catalog))
        .route("/datasets/{dept}/{name}", get(pages::dataset))
        .route("/datasets/{dept}/{name}/apply", post(pages::apply))
        .route("/download/{dept}/{name}", get(pages::download))
        .route("/sql", get(pages::sql))
        .route("/sql/download", get(pages::sql_download))
        .route("/me", get(pages::me))
        .route("/admin", get(admin::page))
        .route("/admin/keys", post(admin::create_key))
        .route("/admin/keys/{id}/tier", post(admin::change_tier))
        .route("/admin/keys/{id}/revoke", post(admin::revoke_key))
        .route("/admin/departments", post(admin::create_department))
        .route("/audit", get(audit::log))
        .route("/audit/checkpoint", get(audit::checkpoint))
        .route("/audit/public-key", get(audit::public_key))
        .route("/publish", get(publish::home))
        .route("/publish/{dept}", get(publish::department))
        .route("/publish/{dept}/register", post(publish::register))
        .route("/publish/{dept}/{name}", get(publish::dataset))
        .route("/publish/{dept}/{name}/edit", post(publish::edit))
        .route("/publish/{dept}/{name}/unpublish", post(publish::unpublish))
        .route("/publish/{dept}/{name}/republish", post(publish::republish))
        .route("/publish/{dept}/{name}/upload", post(publish::upload))
        .route(
            "/publish/applications/{id}/{decision}",
            post(publish::decide),
        )
        .route("/publish/grants/{id}/revoke", post(publish::revoke_grant))
        .route("/signin", get(pages::signin_form).post(pages::signin))
        .route("/signout", post(pages::signout))
        .route("/assets/{name}", get(assets::serve))
        .layer(middleware::from_fn(same_origin))
        .layer(middleware::from_fn(security_headers))
        .with_state(portal)
}

/// The policy of every portal answer: scripts and styles from this site only, no inline
/// script, no plugins, no framing, forms only to this site.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// CSRF: a POST must say it comes from a page of this site (`Origin`, else `Referer`, naming
/// the host the request was sent to); otherwise 403 before the handler runs.
async fn same_origin(req: Request, next: Next) -> Response {
    if req.method() != Method::POST || from_this_site(req.headers()) {
        return next.run(req).await;
    }
    (
        StatusCode::FORBIDDEN,
        "cross-site form submission refused (Origin does not match this site)",
    )
        .into_response()
}

fn from_this_site(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| url::Url::parse(v).ok());
    origin.is_some_and(|u| {
        let authority = match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return false,
        };
        authority.eq_ignore_ascii_case(host)
    })
}

/// The visitor of a page: language, session, and who they are to the API.
pub struct Visitor {
    pub lang: Lang,
    /// The session id, when signed in.
    pub session: Option<String>,
    pub caller: Caller,
    /// The request's path and query (for the language switch and sign-in return).
    pub here: String,
    pub secure: bool,
}

impl FromRequestParts<Portal> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        portal: &Portal,
    ) -> Result<Self, Self::Rejection> {
        let cookies = cookies(&parts.headers);
        let lang_query = parts.uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "lang")
                .map(|(_, v)| v.into_owned())
        });
        let lang = Lang::choose(
            lang_query.as_deref(),
            cookie_value(&cookies, "lang").as_deref(),
            &parts.headers,
        );
        let session = cookie_value(&cookies, session::COOKIE);
        let key = match session.as_deref() {
            Some(id) => portal.sessions.key(id).await,
            None => None,
        };
        let mut forwarded = HeaderMap::new();
        for (name, value) in &parts.headers {
            let n = name.as_str();
            if n.starts_with("x-forwarded-") || n == "forwarded" || n == "x-real-ip" {
                forwarded.append(name.clone(), value.clone());
            }
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let secure = portal
            .state
            .config
            .server
            .public_url
            .starts_with("https://")
            || !portal.state.config.server.tls_cert.is_empty();
        Ok(Visitor {
            lang,
            session: session.filter(|_| key.is_some()),
            caller: Caller {
                key,
                peer,
                forwarded,
                continuation: false,
            },
            here: parts
                .uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
            secure,
        })
    }
}

fn cookies(headers: &HeaderMap) -> Vec<cookie::Cookie<'static>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| cookie::Cookie::split_parse(v.to_string()))
        .filter_map(Result::ok)
        .collect()
}

fn cookie_value(cookies: &[cookie::Cookie<'static>], name: &str) -> Option<String> {
    cookies
        .iter()
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_site_may_post() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(!from_this_site(&h), "no Origin and no Referer");
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(from_this_site(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!from_this_site(&h));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!from_this_site(&h));
        h.remove(header::ORIGIN);
        h.insert(
            header::REFERER,
            "http://127.0.0.1:8080/datasets/a/b".parse().unwrap(),
        );
        assert!(from_this_site(&h));
    }
}
