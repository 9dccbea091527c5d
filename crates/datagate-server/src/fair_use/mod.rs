//! Fair use over HTTP (API.md §5 "Rate limits"): the decisions are
//! [`datagate_access::fair_use`]'s; this middleware runs them in front of every `/api/` and
//! `/catalog/` route and answers them in HTTP's terms:
//! 1. identifies the caller — the key (authenticated here once; the handlers reuse it), or for
//!    anonymous callers and bad keys the client address ([`client_ip`]);
//! 2. counts the request against its tier's rate: 429 with `Retry-After` and
//!    `violated_policies: ["<tier>"]`;
//! 3. for data requests (rows, export, SQL): 429 `daily-bytes` or `concurrency`, and 503 with
//!    `Retry-After` when the gateway runs its maximum of queries or uploads;
//! 4. answers with `RateLimit-Policy` and `RateLimit` on every response, and counts the bytes of
//!    data responses as they leave, holding the admission permit until the body is done and the
//!    query's work on the executor has stopped ([`QueryTicket`]): a query whose client left, or
//!    that answered 504 while its planning still ran, counts until it really stops.

pub mod client_ip;

use crate::audit::AuditSubject;
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use datagate_access::fair_use::admission::{Permit, Work};
use datagate_access::fair_use::limiter::RateDecision;
use datagate_access::fair_use::usage::UsageCounter;
use datagate_access::fair_use::{Refused, RefusedKind};
use datagate_access::{CallerId, FairUse, QueryTicket};
use datagate_core::ANONYMOUS_TIER;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

impl FromRequestParts<AppState> for QueryTicket {
    type Rejection = ApiError;

    /// The ticket the fair-use layer issued, or (outside it) one for the caller's tier.
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        if let Some(ticket) = parts.extensions.get::<QueryTicket>() {
            return Ok(ticket.clone());
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Self::unadmitted(&state.config, caller.tier()))
    }
}

/// A request extension (set in-process only: no client can send it) marking a request that
/// goes on reading what an earlier request of the same visitor's page view began: the
/// portal's catalog page reads the listing 1,000 datasets at a time, and its pages after the
/// first are not counted against the caller's rate again, so a page view costs a visitor the
/// same whatever the catalog's size. Everything else (admission, byte quota, audit) applies.
#[derive(Clone, Copy, Debug)]
pub struct Continuation;

/// Which requests are data work (admission, byte quota) by route.
fn work_of(method: &Method, route: &str) -> Option<Work> {
    match route {
        "/api/v1/datasets/{dept}/{name}/rows"
        | "/api/v1/datasets/{dept}/{name}/export"
        | "/api/v1/query" => Some(Work::Query),
        "/api/v1/datasets/{dept}/{name}/versions" if method == Method::POST => Some(Work::Upload),
        _ => None,
    }
}

/// The middleware; see the module documentation.
pub async fn fair_use(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !(path.starts_with("/api/") || path.starts_with("/catalog/")) {
        return next.run(req).await;
    }
    let fair = &state.fair_use;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let client_ip = state.client_ip.resolve(peer, req.headers());
    let (parts, body) = req.into_parts();
    let caller = crate::auth::authenticate(&parts.headers, &state).await;
    // A bad key is limited as what it proves to be: an anonymous client at its address.
    let (tier_asked, who) = match &caller {
        Ok(Caller::Key(k, _)) => (k.tier.as_str(), CallerId::Key(k.id.as_str().into())),
        _ => (ANONYMOUS_TIER, CallerId::Ip(client_ip)),
    };
    let tier = fair.config().tier(tier_asked).0.to_string();
    let subject = match &caller {
        Ok(Caller::Key(k, _)) => AuditSubject {
            key_id: k.id.clone(),
            role: k.role.as_str().to_string(),
            department: k.department.clone(),
            tier: tier.clone(),
            client_ip: client_ip.to_string(),
        },
        _ => AuditSubject {
            key_id: "anonymous".to_string(),
            role: "anonymous".to_string(),
            department: None,
            tier: tier.clone(),
            client_ip: client_ip.to_string(),
        },
    };
    let mut resp = admit(fair, caller, who, &tier, parts, body, next).await;
    resp.extensions_mut().insert(subject);
    resp
}

/// Steps 2 to 4 of the module documentation, for an identified caller.
async fn admit(
    fair: &FairUse,
    caller: Result<Caller, ApiError>,
    who: CallerId,
    tier: &str,
    mut parts: axum::http::request::Parts,
    body: Body,
    next: Next,
) -> Response {
    let rate = if parts.extensions.get::<Continuation>().is_some() {
        None
    } else {
        let (rate, verdict) = fair.count_request(tier, &who).await;
        if let Err(refusal) = verdict {
            return refused(refusal, tier, rate.as_ref());
        }
        rate
    };
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return with_rate_headers(e.into_response(), tier, rate.as_ref()),
    };
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let work = route.as_deref().and_then(|r| work_of(&parts.method, r));
    let admitted = match fair.admit(work, &who, tier) {
        Ok(a) => a,
        Err(refusal) => return refused(refusal, tier, rate.as_ref()),
    };
    parts.extensions.insert(caller);
    parts.extensions.insert(who);
    parts.extensions.insert(admitted.ticket);
    let resp = next.run(Request::from_parts(parts, body)).await;
    let resp = with_rate_headers(resp, tier, rate.as_ref());
    let (permit, counter) = (admitted.permit, admitted.counter);
    if permit.is_none() && counter.is_none() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let plain = parts
        .extensions
        .get::<PlainBytesSent>()
        .map(|p| (p.0.clone(), 0));
    let body = Body::new(Metered {
        inner: body,
        counter,
        plain,
        _permit: permit,
    });
    Response::from_parts(parts, body)
}

/// A refusal as HTTP says it: 429 naming the violated policy (503 when the gateway is full),
/// with `Retry-After`.
fn refused(refusal: Refused, tier: &str, rate: Option<&RateDecision>) -> Response {
    let err = match refusal.kind {
        RefusedKind::RateLimited => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            refusal.detail,
        ),
        RefusedKind::QuotaExceeded { used, daily_bytes } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota-exceeded",
            refusal.detail,
        )
        .with("bytes_used", used)
        .with("daily_bytes", daily_bytes),
        RefusedKind::TooManyConcurrent { limit } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-concurrent-queries",
            refusal.detail,
        )
        .with("max_concurrent_queries", limit),
        RefusedKind::Overloaded => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            refusal.detail,
        ),
    };
    let err = match refusal.policy {
        Some(policy) => err.with("violated_policies", vec![policy]),
        None => err,
    };
    let mut resp = with_rate_headers(err.into_response(), tier, rate);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(refusal.retry_after_secs.max(1)),
    );
    resp
}

/// Adds `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
fn with_rate_headers(mut resp: Response, tier: &str, rate: Option<&RateDecision>) -> Response {
    let Some(d) = rate else { return resp };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{tier}\";q={};w={}", d.quota, d.window_secs)) {
        h.insert(RATELIMIT_POLICY, v);
    }
    if let Ok(v) =
        HeaderValue::from_str(&format!("\"{tier}\";r={};t={}", d.remaining, d.reset_secs))
    {
        h.insert(RATELIMIT, v);
    }
    resp
}

/// A response extension: the encoder's bytes of a body its route codes itself (zstd frames
/// written on the executor) that have left so far. The caller's daily bytes count these, as
/// they count the encoder's bytes of a body the compression layer codes (it is outside this
/// one): what a caller is charged does not depend on the `Accept-Encoding` it sent.
#[derive(Clone)]
pub struct PlainBytesSent(pub Arc<AtomicU64>);

/// A response body that counts its bytes into the caller's daily counter as they leave and
/// holds the admission permit until it is finished or dropped.
struct Metered {
    inner: Body,
    counter: Option<Arc<UsageCounter>>,
    /// The body's [`PlainBytesSent`] and how much of it was counted already.
    plain: Option<(Arc<AtomicU64>, u64)>,
    _permit: Option<Arc<Permit>>,
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let this = &mut *self;
        if let (Poll::Ready(Some(Ok(frame))), Some(counter)) = (&polled, &this.counter)
            && let Some(data) = frame.data_ref()
        {
            match &mut this.plain {
                Some((sent, counted)) => {
                    let now = sent.load(Ordering::Relaxed);
                    counter.add(now.saturating_sub(*counted));
                    *counted = now;
                }
                None => counter.add(data.len() as u64),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
