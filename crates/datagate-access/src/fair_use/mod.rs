//! Fair use (API.md §5 "Rate limits"): how fast, how much, how many at once — decided here
//! for every front door; each answers a [`Refused`] in its own protocol.
//!
//! 1. every request counts against its tier's rate ([`limiter`], governor GCRA), keyed by the
//!    key, or for anonymous callers and bad keys the client address; with a shared catalog,
//!    also against the caller's rate over the whole cluster
//!    ([`datagate_catalog::rates::SharedRates`]), this gateway's own limiter staying in front;
//! 2. data work (rows, export, SQL; a Flight SQL `DoGet`) is refused for a caller over its
//!    bytes for the day ([`usage`]) or already running its tier's queries at once
//!    ([`admission`]), and shed when the gateway runs its maximum of queries or uploads;
//! 3. the admission permit travels with the query ([`QueryTicket`]) and is held until its work
//!    has stopped; the bytes sent are counted into the caller's [`UsageCounter`] as they leave.
//!
//! Rate limits and admission are kept apart: a rate is about fairness over time, admission
//! about how much work runs now.

pub mod admission;
pub mod limiter;
pub mod usage;

use admission::{Admission, Permit, Refusal, Work};
use datagate_catalog::CatalogStore;
use datagate_core::config::QueryPool;
use datagate_core::{Config, TierConfig};
use datagate_query::{Lane, QueryExecutor};
use limiter::{RateDecision, RequestLimiter};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use usage::{DailyUsage, UsageCounter};

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

/// What a query runs with: the caller's tier, the pool and cost budget of that tier, and the
/// admission permit, which the query's work holds as long as its response.
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

/// What admitted work holds: its ticket, and the counter its bytes go to (data work only).
pub struct Admitted {
    pub ticket: QueryTicket,
    pub permit: Option<Arc<Permit>>,
    pub counter: Option<Arc<UsageCounter>>,
}

/// Why a request was refused, with what each protocol needs to say so.
#[derive(Debug, Clone)]
pub struct Refused {
    pub kind: RefusedKind,
    /// The sentence for the client.
    pub detail: String,
    /// Whole seconds after which a retry may pass (at least 1).
    pub retry_after_secs: u64,
    /// The policy violated (a tier's name, [`CONCURRENCY_POLICY`], [`DAILY_BYTES_POLICY`]);
    /// `None` when the gateway, not the caller, is at its limit.
    pub policy: Option<String>,
}

/// The kinds of refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusedKind {
    /// The tier's request rate (HTTP 429 `rate-limited`).
    RateLimited,
    /// The tier's bytes per day (HTTP 429 `quota-exceeded`).
    QuotaExceeded { used: u64, daily_bytes: u64 },
    /// The tier's queries at once per caller (HTTP 429 `too-many-concurrent-queries`).
    TooManyConcurrent { limit: u32 },
    /// The gateway runs its maximum of this work (HTTP 503 `overloaded`).
    Overloaded,
}

/// The fair-use state of the gateway, shared by its front doors.
pub struct FairUse {
    config: Arc<Config>,
    limiter: RequestLimiter,
    usage: DailyUsage,
    admission: Admission,
    /// The catalog whose shared rate state every request also takes from (a cluster).
    shared: Option<Arc<dyn CatalogStore>>,
}

impl FairUse {
    /// Fair use per `config`, with today's byte counters from `catalog`.
    pub async fn new(
        config: Arc<Config>,
        catalog: &dyn CatalogStore,
    ) -> Result<Self, datagate_catalog::CatalogError> {
        Ok(Self {
            limiter: RequestLimiter::new(&config.tiers),
            usage: DailyUsage::load(catalog).await?,
            admission: Admission::new(
                config.admission.max_in_flight_queries,
                config.admission.max_in_flight_uploads,
            ),
            config,
            shared: None,
        })
    }

    /// Request rates that hold over every gateway on `catalog`, when it shares its rate
    /// state (a PostgreSQL catalog); unchanged otherwise.
    pub fn with_shared_rates(mut self, catalog: Arc<dyn CatalogStore>) -> Self {
        if catalog.shared_rates().is_some() {
            self.shared = Some(catalog);
        }
        self
    }

    /// The configuration fair use was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counts one request of `who` against `tier`'s rate: the decision (for the `RateLimit`
    /// headers; `None` when the tier has no limiter), and a refusal when over it. In a cluster
    /// the request passes this gateway's limiter first (a flood is refused without a round
    /// trip), then takes from the caller's rate over all gateways.
    pub async fn count_request(
        &self,
        tier: &str,
        who: &CallerId,
    ) -> (Option<RateDecision>, Result<(), Refused>) {
        let Some(local) = self.limiter.check(tier, who) else {
            return (None, Ok(()));
        };
        if !local.allowed {
            let retry = local.retry_after_secs.unwrap_or(1);
            return (Some(local), Err(self.rate_refusal(tier, retry)));
        }
        let (Some(rates), Some((period, burst))) = (
            self.shared.as_ref().and_then(|c| c.shared_rates()),
            self.limiter.shape(tier),
        ) else {
            return (Some(local), Ok(()));
        };
        match rates.take(&format!("{tier}/{who}"), period, burst).await {
            Ok(shared) => {
                let decision = RateDecision {
                    allowed: shared.allowed,
                    remaining: shared.remaining,
                    reset_secs: limiter::ceil_secs(shared.reset),
                    retry_after_secs: shared.retry_after.map(|d| limiter::ceil_secs(d).max(1)),
                    ..local
                };
                let verdict = match decision.retry_after_secs {
                    Some(retry) if !decision.allowed => Err(self.rate_refusal(tier, retry)),
                    _ => Ok(()),
                };
                (Some(decision), verdict)
            }
            Err(e) => {
                metrics::counter!("datagate_shared_rate_errors_total").increment(1);
                match self.config.rate_limits.shared_failure {
                    datagate_core::config::SharedFailure::Open => {
                        tracing::warn!(error = %e, "shared rate state unavailable; serving on this gateway's limiter");
                        (Some(local), Ok(()))
                    }
                    datagate_core::config::SharedFailure::Closed => {
                        tracing::warn!(error = %e, "shared rate state unavailable; refusing");
                        let retry = self.config.admission.retry_after_secs.max(1);
                        let refusal = Refused {
                            kind: RefusedKind::Overloaded,
                            detail: format!(
                                "the cluster's request-rate state cannot be read; retry in {retry} s"
                            ),
                            retry_after_secs: retry,
                            policy: None,
                        };
                        (Some(local), Err(refusal))
                    }
                }
            }
        }
    }

    fn rate_refusal(&self, tier: &str, retry: u64) -> Refused {
        let limits = self.config.tier(tier).1;
        refused(
            tier,
            RefusedKind::RateLimited,
            format!(
                "the {tier} tier allows {} per {} s (bursts of {}); retry in {retry} s",
                datagate_core::words::plural(limits.requests, "request"),
                limits.window_secs,
                limits.burst
            ),
            retry,
            Some(tier.to_string()),
        )
    }

    /// Admits `work` of `who` under `tier` (already counted by [`FairUse::count_request`]):
    /// the permit and byte counter it runs with, or why not.
    pub fn admit(
        &self,
        work: Option<Work>,
        who: &CallerId,
        tier: &str,
    ) -> Result<Admitted, Refused> {
        let (tier, limits) = self.config.tier(tier);
        let mut admitted = Admitted {
            ticket: ticket(tier, limits, None),
            permit: None,
            counter: None,
        };
        let Some(work) = work else {
            return Ok(admitted);
        };
        if work == Work::Query && limits.daily_bytes > 0 {
            let used = self.usage.used(who);
            if used >= limits.daily_bytes {
                let retry = usage::secs_until_reset();
                return Err(refused(
                    tier,
                    RefusedKind::QuotaExceeded {
                        used,
                        daily_bytes: limits.daily_bytes,
                    },
                    format!(
                        "the {tier} tier serves {} bytes per day and {used} were sent today; \
                         the quota resets at 00:00 UTC, in {retry} s",
                        limits.daily_bytes
                    ),
                    retry,
                    Some(DAILY_BYTES_POLICY.to_string()),
                ));
            }
        }
        match self
            .admission
            .admit(work, who, limits.max_concurrent_queries)
        {
            Ok(p) => {
                let permit = Arc::new(p);
                admitted.ticket = ticket(tier, limits, Some(permit.clone()));
                admitted.permit = Some(permit);
            }
            Err(Refusal::CallerBusy { limit }) => {
                return Err(refused(
                    tier,
                    RefusedKind::TooManyConcurrent { limit },
                    format!(
                        "the {tier} tier runs {} at once per caller; retry when one of \
                         yours has finished",
                        match limit {
                            1 => "1 query".to_string(),
                            n => format!("{n} queries"),
                        }
                    ),
                    1,
                    Some(CONCURRENCY_POLICY.to_string()),
                ));
            }
            Err(Refusal::GatewayFull { limit }) => {
                let retry = self.config.admission.retry_after_secs.max(1);
                metrics::counter!("datagate_requests_shed_total", "work" => work.as_str())
                    .increment(1);
                return Err(Refused {
                    kind: RefusedKind::Overloaded,
                    detail: format!(
                        "the gateway is running its maximum of {limit} {}s; retry in {retry} s",
                        work.as_str()
                    ),
                    retry_after_secs: retry,
                    policy: None,
                });
            }
        }
        if work == Work::Query {
            admitted.counter = Some(self.usage.counter(who));
        }
        Ok(admitted)
    }

    /// Bytes `caller` was sent today.
    pub fn bytes_used_today(&self, caller: &CallerId) -> u64 {
        self.usage.used(caller)
    }

    /// Adds the day's bytes served here to the catalog and reads the totals back
    /// (periodically and at shutdown).
    pub async fn save_usage(&self, catalog: &dyn CatalogStore) {
        // Alone, this gateway's counters are the totals: nothing to read back.
        let shared = catalog.shared_usage().is_some();
        if let Err(e) = self.usage.sync(catalog, shared).await {
            tracing::warn!(error = %e, "could not sync the daily byte counters");
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
                if let Some(rates) = me.shared.as_ref().and_then(|c| c.shared_rates())
                    && let Err(e) = rates.prune().await
                {
                    tracing::warn!(error = %e, "could not prune the shared rate state");
                }
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
}

fn ticket(tier: &str, limits: &TierConfig, permit: Option<Arc<Permit>>) -> QueryTicket {
    QueryTicket {
        tier: tier.to_string(),
        pool: limits.query_pool,
        budget: limits.query_budget,
        permit,
    }
}

/// A refusal of the caller (counted in `datagate_requests_refused_total`).
fn refused(
    tier: &str,
    kind: RefusedKind,
    detail: String,
    retry_after_secs: u64,
    policy: Option<String>,
) -> Refused {
    if let Some(policy) = &policy {
        metrics::counter!("datagate_requests_refused_total",
            "tier" => tier.to_string(), "policy" => policy.clone())
        .increment(1);
    }
    Refused {
        kind,
        detail,
        retry_after_secs: retry_after_secs.max(1),
        policy,
    }
}
