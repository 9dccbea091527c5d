//! Fair use (API.md §5 "Rate limits"): who is calling, how fast, how much, how many at once.
//!
//! One middleware ([`fair_use`]) runs in front of every `/api/` and `/catalog/` route:
//! 1. identifies the caller — the key (authenticated here once; the handlers reuse it), or for
//!    anonymous callers and bad keys the client address ([`client_ip`]);
//! 2. counts the request against its tier's rate ([`limiter`], governor GCRA): 429 with
//!    `Retry-After` and `violated_policies: ["<tier>"]`;
//! 3. for data requests (rows, export, SQL): refuses a caller over its bytes for the day
//!    ([`usage`], 429 `daily-bytes`) or already running its tier's queries at once
//!    ([`admission`], 429 `concurrency`), and sheds load when the gateway runs its maximum of
//!    queries or uploads (503 with `Retry-After`);
//! 4. answers with `RateLimit-Policy` and `RateLimit` on every response, and counts the bytes of
//!    data responses as they leave, holding the admission permit until the body is done and the
//!    query's work on the executor has stopped ([`QueryTicket`]): a query whose client left, or
//!    that answered 504 while its planning still ran, counts until it really stops.
//!
//! Rate limits and admission are kept apart: a rate is about fairness over time, admission
//! about how much work runs now. Catalog reads and health checks never wait for queries.

pub mod admission;
pub mod client_ip;
pub mod limiter;
pub mod usage;

use crate::audit::AuditSubject;
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;
use admission::{Admission, Permit, Refusal, Work};
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use client_ip::ClientIp;
use datagate_catalog::CatalogStore;
use datagate_core::config::QueryPool;
use datagate_core::{ANONYMOUS_TIER, Config};
use datagate_query::{Lane, QueryExecutor};
use http_body::{Body as HttpBody, Frame, SizeHint};
use limiter::{RateDecision, RequestLimiter};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use usage::{DailyUsage, UsageCounter};

pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Policy names of refusals that are not a tier's rate.
pub const CONCURRENCY_POLICY: &str = "concurrency";
pub const DAILY_BYTES_POLICY: &str = "daily-bytes";

/// Whom limits are counted for: a key, or the client address of a request without a (valid)
/// key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerId {
    Key(Arc<str>),
    Ip(IpAddr),
}

impl CallerId {
    /// Reads the form [`fmt::Display`] writes (`key:<id>`, `ip:<addr>`).
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(id) = s.strip_prefix("key:") {
            return Some(Self::Key(id.into()));
        }
        s.strip_prefix("ip:")?.parse().ok().map(Self::Ip)
    }
}

impl fmt::Display for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(id) => write!(f, "key:{id}"),
            Self::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// What a data handler runs its query with: the caller's tier, the pool and cost budget of that
/// tier, and the admission permit, which the query's work holds as long as its response body.
#[derive(Clone)]
pub struct QueryTicket {
    pub tier: String,
    pub pool: QueryPool,
    pub budget: u64,
    permit: Option<Arc<Permit>>,
}

impl QueryTicket {
    /// The executor lane of this request's query work.
    pub fn lane(&self, executor: &QueryExecutor) -> Lane {
        let hold = self
            .permit
            .clone()
            .map(|p| p as Arc<dyn std::any::Any + Send + Sync>);
        executor.lane(self.pool, &self.tier, hold)
    }

    /// A ticket without a permit, for a caller of `tier` (work that is not admitted per request).
    pub fn unadmitted(config: &Config, tier: &str) -> Self {
        let (name, limits) = config.tier(tier);
        Self {
            tier: name.to_string(),
            pool: limits.query_pool,
            budget: limits.query_budget,
            permit: None,
        }
    }
}

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
        let tier = match &caller {
            Caller::Key(k, _) => k.tier.as_str(),
            Caller::Anonymous => ANONYMOUS_TIER,
        };
        Ok(Self::unadmitted(&state.config, tier))
    }
}

/// The fair-use state of the server.
pub struct FairUse {
    config: Arc<Config>,
    limiter: RequestLimiter,
    usage: DailyUsage,
    admission: Admission,
    client_ip: ClientIp,
}

impl FairUse {
    /// Fair use per `config`, with today's byte counters from `catalog`.
    pub async fn new(
        config: Arc<Config>,
        catalog: &dyn CatalogStore,
    ) -> Result<Self, datagate_catalog::CatalogError> {
        let trusted = config.rate_limits.trusted_networks().unwrap_or_default();
        Ok(Self {
            limiter: RequestLimiter::new(&config.tiers),
            usage: DailyUsage::load(catalog).await?,
            admission: Admission::new(
                config.admission.max_in_flight_queries,
                config.admission.max_in_flight_uploads,
            ),
            client_ip: ClientIp::new(trusted, &config.rate_limits.client_ip_header),
            config,
        })
    }

    /// Bytes `caller` was sent today.
    pub fn bytes_used_today(&self, caller: &CallerId) -> u64 {
        self.usage.used(caller)
    }

    /// Saves the day's byte counters (periodically and at shutdown).
    pub async fn save_usage(&self, catalog: &dyn CatalogStore) {
        if let Err(e) = self.usage.save(catalog).await {
            tracing::warn!(error = %e, "could not save the daily byte counters");
        }
    }

    /// Forgets limiter state of idle callers.
    pub fn prune(&self) -> usize {
        let left = self.limiter.prune();
        metrics::gauge!("datagate_rate_limiter_entries").set(left as f64);
        left
    }

    /// The background work: pruning the limiters and saving the byte counters, on timers,
    /// until the process ends.
    pub fn spawn_maintenance(self: &Arc<Self>, catalog: Arc<dyn CatalogStore>) {
        let prune_every =
            std::time::Duration::from_secs(self.config.rate_limits.prune_interval_secs.max(1));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(prune_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { break };
                me.prune();
            }
        });
        let save_every =
            std::time::Duration::from_secs(self.config.rate_limits.usage_flush_secs.max(1));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(save_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { break };
                me.save_usage(catalog.as_ref()).await;
            }
        });
    }

    /// The client address of a request from `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.client_ip.resolve(peer, headers)
    }
}

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
    let client_ip = fair.client_ip(peer, req.headers());
    let (parts, body) = req.into_parts();
    let caller = crate::auth::authenticate(&parts.headers, &state).await;
    // A bad key is limited as what it proves to be: an anonymous client at its address.
    let (tier_asked, who) = match &caller {
        Ok(Caller::Key(k, _)) => (k.tier.as_str(), CallerId::Key(k.id.as_str().into())),
        _ => (ANONYMOUS_TIER, CallerId::Ip(client_ip)),
    };
    let (tier, limits) = fair.config.tier(tier_asked);
    let tier = tier.to_string();
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
    let mut resp = admit(fair, caller, who, &tier, limits, parts, body, next).await;
    resp.extensions_mut().insert(subject);
    resp
}

/// Steps 2 to 4 of the module documentation, for an identified caller.
#[allow(clippy::too_many_arguments)]
async fn admit(
    fair: &FairUse,
    caller: Result<Caller, ApiError>,
    who: CallerId,
    tier: &str,
    limits: &datagate_core::TierConfig,
    mut parts: axum::http::request::Parts,
    body: Body,
    next: Next,
) -> Response {
    let tier = tier.to_string();
    let rate = fair.limiter.check(&tier, &who);
    if let Some(d) = rate.as_ref().filter(|d| !d.allowed) {
        let retry = d.retry_after_secs.unwrap_or(1);
        let err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!(
                "the {tier} tier allows {} requests per {} s (bursts of {}); retry in {retry} s",
                limits.requests, limits.window_secs, limits.burst
            ),
        );
        return refused(err, &tier, &tier, Some(retry), rate.as_ref());
    }
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return with_rate_headers(e.into_response(), &tier, rate.as_ref()),
    };
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let work = route.as_deref().and_then(|r| work_of(&parts.method, r));
    let mut permit: Option<Arc<Permit>> = None;
    let mut counter: Option<Arc<UsageCounter>> = None;
    if let Some(work) = work {
        if work == Work::Query && limits.daily_bytes > 0 {
            let used = fair.usage.used(&who);
            if used >= limits.daily_bytes {
                let retry = usage::secs_until_reset();
                let err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota-exceeded",
                    format!(
                        "the {tier} tier serves {} bytes per day and {used} were sent today; \
                         the quota resets at 00:00 UTC, in {retry} s",
                        limits.daily_bytes
                    ),
                )
                .with("bytes_used", used)
                .with("daily_bytes", limits.daily_bytes);
                return refused(err, &tier, DAILY_BYTES_POLICY, Some(retry), rate.as_ref());
            }
        }
        match fair
            .admission
            .admit(work, &who, limits.max_concurrent_queries)
        {
            Ok(p) => permit = Some(Arc::new(p)),
            Err(Refusal::CallerBusy { limit }) => {
                let err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-concurrent-queries",
                    format!(
                        "the {tier} tier runs {limit} queries at once per caller; retry when \
                         one of yours has finished"
                    ),
                )
                .with("max_concurrent_queries", limit);
                return refused(err, &tier, CONCURRENCY_POLICY, Some(1), rate.as_ref());
            }
            Err(Refusal::GatewayFull { limit }) => {
                let retry = fair.config.admission.retry_after_secs.max(1);
                metrics::counter!("datagate_requests_shed_total", "work" => work.as_str())
                    .increment(1);
                let err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!(
                        "the gateway is running its maximum of {limit} {}s; retry in {retry} s",
                        work.as_str()
                    ),
                );
                let mut resp = with_rate_headers(err.into_response(), &tier, rate.as_ref());
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry));
                return resp;
            }
        }
        if work == Work::Query {
            counter = Some(fair.usage.counter(&who));
        }
    }
    parts.extensions.insert(caller);
    parts.extensions.insert(who);
    parts.extensions.insert(QueryTicket {
        tier: tier.clone(),
        pool: limits.query_pool,
        budget: limits.query_budget,
        permit: permit.clone(),
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    let resp = with_rate_headers(resp, &tier, rate.as_ref());
    if permit.is_none() && counter.is_none() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = Body::new(Metered {
        inner: body,
        counter,
        _permit: permit,
    });
    Response::from_parts(parts, body)
}

/// A 429 naming the violated policy, with `Retry-After`.
fn refused(
    err: ApiError,
    tier: &str,
    policy: &str,
    retry_after: Option<u64>,
    rate: Option<&RateDecision>,
) -> Response {
    metrics::counter!("datagate_requests_refused_total",
        "tier" => tier.to_string(), "policy" => policy.to_string())
    .increment(1);
    let err = err.with("violated_policies", vec![policy.to_string()]);
    let mut resp = with_rate_headers(err.into_response(), tier, rate);
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
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

/// A response body that counts its bytes into the caller's daily counter as they leave and
/// holds the admission permit until it is finished or dropped.
struct Metered {
    inner: Body,
    counter: Option<Arc<UsageCounter>>,
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
        if let (Poll::Ready(Some(Ok(frame))), Some(counter)) = (&polled, &self.counter)
            && let Some(data) = frame.data_ref()
        {
            counter.add(data.len() as u64);
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
