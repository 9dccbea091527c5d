//! Who is calling: the `Authorization: Bearer dg_<id>_<secret>` key, or nobody.
//!
//! A missing header is the anonymous principal. A header that is malformed, names an unknown
//! key, carries the wrong secret, or a revoked or expired key is 401 — the same answer in the
//! same shape for each, and the secret is compared in constant time against a hash even when
//! the id is unknown, so timing does not tell which.

use crate::authz::{Action, allowed};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use datagate_catalog::{ApiKey, Grant, GrantFilter, KeyToken, Role};
use datagate_core::AccessLevel;
use datagate_query::Principal;

/// The principal of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// A valid key, with the grants active for it at the time of the request.
    Key(Box<ApiKey>, Vec<Grant>),
}

impl Caller {
    pub fn role(&self) -> Option<Role> {
        match self {
            Caller::Anonymous => None,
            Caller::Key(k, _) => Some(k.role),
        }
    }

    /// The id recorded for this caller (`anonymous` without a key).
    pub fn id(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Key(k, _) => &k.id,
        }
    }

    /// The principal the query side decides access for (API.md §4 lives in
    /// [`datagate_query::policy`]).
    pub fn principal(&self) -> Principal {
        match self {
            Caller::Anonymous => Principal::ANONYMOUS,
            Caller::Key(k, grants) => Principal {
                key_id: Some(k.id.clone()),
                role: Some(k.role),
                department: k.department.clone(),
                grants: grants
                    .iter()
                    .map(|g| (g.department.clone(), g.dataset.clone()))
                    .collect(),
            },
        }
    }

    /// The open levels whose catalog entries this caller sees.
    pub fn visible_levels(&self) -> Vec<AccessLevel> {
        self.principal().visible_levels()
    }

    /// Whether `private` columns of `department`'s datasets exist for this caller.
    pub fn sees_private(&self, department: &str) -> bool {
        self.principal().sees_private(department)
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&ApiKey> {
        match self {
            Caller::Anonymous => None,
            Caller::Key(k, _) => Some(k),
        }
    }

    /// The caller's active grants.
    pub fn grants(&self) -> &[Grant] {
        match self {
            Caller::Anonymous => &[],
            Caller::Key(_, g) => g,
        }
    }

    /// Checks `action` against the authorisation table ([`crate::authz`]): 401 for anonymous
    /// callers, 403 for keys whose role does not allow it.
    pub fn authorize(&self, action: Action<'_>) -> Result<(), ApiError> {
        let (role, department) = match self {
            Caller::Anonymous => (None, None),
            Caller::Key(k, _) => (Some(k.role), k.department.as_deref()),
        };
        self.require(allowed(role, department, action), action.describe())
    }

    /// 401 for anonymous callers, 403 for known ones, unless `allowed`.
    pub fn require(&self, allowed: bool, what: &str) -> Result<(), ApiError> {
        match (allowed, self) {
            (true, _) => Ok(()),
            (false, Caller::Anonymous) => Err(unauthorized(&format!("{what} needs an API key"))),
            (false, Caller::Key(..)) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key may not {what}"),
            )),
        }
    }
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

/// A hash to compare against when the key id is unknown, so that path costs the same.
const DUMMY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// The caller the fair-use layer identified, or (outside it) authenticated here.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        authenticate(&parts.headers, state).await
    }
}

/// The caller a request's `Authorization` header proves, or a 401.
pub async fn authenticate(headers: &HeaderMap, state: &AppState) -> Result<Caller, ApiError> {
    let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    let bad = || unauthorized("the API key is missing, malformed, unknown, revoked or expired");
    let value = header.to_str().map_err(|_| bad())?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(bad)?;
    let token = KeyToken::parse(token).map_err(|_| bad())?;
    let key = state.catalog.get_key(&token.id).await?;
    let hash = key
        .as_ref()
        .map(|k| k.secret_hash.as_str())
        .unwrap_or(DUMMY_HASH);
    let secret_ok = token.matches(hash);
    let now = chrono::Utc::now();
    match key {
        Some(k) if secret_ok && k.is_active(now) => {
            // Grants are read on every request, so a revocation holds at once.
            let grants = if k.role == Role::Consumer {
                state
                    .catalog
                    .list_grants(&GrantFilter {
                        key_id: Some(k.id.clone()),
                        ..Default::default()
                    })
                    .await?
                    .into_iter()
                    .filter(|g| g.is_active(now))
                    .collect()
            } else {
                Vec::new()
            };
            Ok(Caller::Key(Box::new(k), grants))
        }
        _ => Err(bad()),
    }
}
