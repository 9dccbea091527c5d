//! Who is calling over HTTP: the `Authorization: Bearer dg_<id>_<secret>` header, or nobody.
//! The decision is [`datagate_access::caller`]'s; this module reads the header and answers
//! a bad key with 401.

use crate::problem::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
pub use datagate_access::Caller;
use datagate_access::caller::{BAD_KEY, Denied, bearer_token};

/// An extractor of the [`Caller`] (a newtype-free impl: the state type is this crate's).
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
    let token = header
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or_else(|| ApiError::from(Denied::Unauthenticated(BAD_KEY.to_string())))?;
    Ok(datagate_access::caller::authenticate(Some(token), state.catalog.as_ref()).await?)
}

/// A caller with a valid key. Operations no anonymous caller may perform take this extractor
/// first, so an anonymous request is answered 401 before its path or body is looked at (not
/// 404 for a path it may not see, not 400 for a body it may not send).
pub struct KeyHolder(pub Caller);

impl FromRequestParts<AppState> for KeyHolder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Anonymous => Err(Denied::Unauthenticated(
                "this operation needs an API key (Authorization: Bearer dg_...)".to_string(),
            )
            .into()),
            caller => Ok(Self(caller)),
        }
    }
}
