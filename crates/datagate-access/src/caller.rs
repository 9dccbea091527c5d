//! Who is calling: a key `dg_<id>_<secret>`, or nobody.
//!
//! No key is the anonymous principal. A token that is malformed, names an unknown key, carries
//! the wrong secret, or a revoked or expired key is refused — the same answer for each, and the
//! secret is compared in constant time against a hash even when the id is unknown, so timing
//! does not tell which.

use crate::authz::{Action, allowed};
use datagate_catalog::{ApiKey, CatalogError, CatalogStore, Grant, KeyToken, Role};
use datagate_core::AccessLevel;
use datagate_query::Principal;

/// The principal of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// A valid key, with the grants active for it at the time of the request.
    Key(Box<ApiKey>, Vec<Grant>),
}

/// Why a caller may not do something: each front door answers it in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No valid key (HTTP 401, gRPC `Unauthenticated`).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid key whose role does not allow it (HTTP 403, gRPC `PermissionDenied`).
    #[error("{0}")]
    Forbidden(String),
    /// The catalog could not be read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// What every bad key is told.
pub const BAD_KEY: &str = "the API key is missing, malformed, unknown, revoked or expired";

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

    /// The tier the caller is limited by (before falling back to the configured default).
    pub fn tier(&self) -> &str {
        match self {
            Caller::Anonymous => datagate_core::ANONYMOUS_TIER,
            Caller::Key(k, _) => &k.tier,
        }
    }

    /// Checks `action` against the authorisation table ([`crate::authz`]): unauthenticated for
    /// anonymous callers, forbidden for keys whose role does not allow it.
    pub fn authorize(&self, action: Action<'_>) -> Result<(), Denied> {
        let (role, department) = match self {
            Caller::Anonymous => (None, None),
            Caller::Key(k, _) => (Some(k.role), k.department.as_deref()),
        };
        self.require(allowed(role, department, action), action.describe())
    }

    /// Unauthenticated for anonymous callers, forbidden for known ones, unless `allowed`.
    pub fn require(&self, allowed: bool, what: &str) -> Result<(), Denied> {
        match (allowed, self) {
            (true, _) => Ok(()),
            (false, Caller::Anonymous) => {
                Err(Denied::Unauthenticated(format!("{what} needs an API key")))
            }
            (false, Caller::Key(..)) => Err(Denied::Forbidden(format!("this key may not {what}"))),
        }
    }
}

/// A hash to compare against when the key id is unknown, so that path costs the same.
const DUMMY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The caller a key token proves (`None`: no key was sent, the anonymous principal), or
/// [`Denied::Unauthenticated`] with [`BAD_KEY`].
pub async fn authenticate(
    token: Option<&str>,
    catalog: &dyn CatalogStore,
) -> Result<Caller, Denied> {
    let Some(token) = token else {
        return Ok(Caller::Anonymous);
    };
    let bad = || Denied::Unauthenticated(BAD_KEY.to_string());
    let token = KeyToken::parse(token.trim()).map_err(|_| bad())?;
    // The key and its grants in one read, whatever the secret, so a wrong secret costs what a
    // right one does.
    let found = catalog.get_key_and_grants(&token.id).await?;
    let hash = found
        .as_ref()
        .map(|(k, _)| k.secret_hash.as_str())
        .unwrap_or(DUMMY_HASH);
    let secret_ok = token.matches(hash);
    let now = chrono::Utc::now();
    match found {
        Some((k, grants)) if secret_ok && k.is_active(now) => {
            // Grants come with the key on every request (a catalog keeps them only while it is
            // unchanged), so a revocation holds at once; only a consumer's are used.
            let grants = if k.role == Role::Consumer {
                grants.into_iter().filter(|g| g.is_active(now)).collect()
            } else {
                Vec::new()
            };
            Ok(Caller::Key(Box::new(k), grants))
        }
        _ => Err(bad()),
    }
}

/// The token of an `Authorization: Bearer <token>` value (`bearer` in either case), or `None`
/// when the value is not a bearer credential.
pub fn bearer_token(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}
