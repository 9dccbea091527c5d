//! Request-rate limiting: one governor keyed limiter (GCRA) per tier, keyed by caller.
//!
//! The limiter is generic over governor's clock so the tests drive it with a
//! `FakeRelativeClock`. Besides allow/refuse it reports what the `RateLimit` header needs: the
//! requests left in the burst right now and the seconds until the burst is full again, and on a
//! refusal the whole seconds until one request will pass (`Retry-After`, never 0).

use super::CallerId;
use datagate_core::TierConfig;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

type Keyed<C> = RateLimiter<CallerId, DashMapStateStore<CallerId>, C, StateInformationMiddleware>;

/// One tier's limiter and the numbers its headers advertise.
struct TierLimiter<C: Clock> {
    limiter: Keyed<C>,
    /// Time to earn back one request.
    period: Duration,
    burst: u32,
    /// `q` and `w` of `RateLimit-Policy`.
    requests: u32,
    window_secs: u64,
}

/// Where a caller stands with its tier's request rate after one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// `RateLimit-Policy` quota and window.
    pub quota: u32,
    pub window_secs: u64,
    /// Requests that would pass right now.
    pub remaining: u32,
    /// Seconds until the burst is full again (rounded up).
    pub reset_secs: u64,
    /// On a refusal: whole seconds after which the next request passes (at least 1).
    pub retry_after_secs: Option<u64>,
}

/// The request limiters of every configured tier.
pub struct RequestLimiter<C: Clock + Clone = DefaultClock> {
    tiers: HashMap<String, TierLimiter<C>>,
    clock: C,
}

impl RequestLimiter<DefaultClock> {
    pub fn new(tiers: &std::collections::BTreeMap<String, TierConfig>) -> Self {
        Self::with_clock(tiers, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RequestLimiter<C> {
    /// Limiters for `tiers` on `clock` (tiers must be valid: see `Config::validate`).
    pub fn with_clock(tiers: &std::collections::BTreeMap<String, TierConfig>, clock: C) -> Self {
        let tiers = tiers
            .iter()
            .map(|(name, t)| {
                let requests = t.requests.max(1);
                let burst = t.burst.max(1);
                let window = Duration::from_secs(t.window_secs.max(1));
                // At least 1 ns: governor refuses a zero period.
                let period = (window / requests).max(Duration::from_nanos(1));
                let quota = Quota::with_period(period)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
                let limiter = RateLimiter::dashmap_with_clock(quota, clock.clone())
                    .with_middleware::<StateInformationMiddleware>();
                let tier = TierLimiter {
                    limiter,
                    period,
                    burst,
                    requests,
                    window_secs: t.window_secs.max(1),
                };
                (name.clone(), tier)
            })
            .collect();
        Self { tiers, clock }
    }

    /// Counts one request of `caller` against `tier` (a tier not configured is not limited).
    pub fn check(&self, tier: &str, caller: &CallerId) -> Option<RateDecision> {
        let t = self.tiers.get(tier)?;
        let full_in = |used: u32| -> u64 { ceil_secs(t.period * used) };
        Some(match t.limiter.check_key(caller) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateDecision {
                    allowed: true,
                    quota: t.requests,
                    window_secs: t.window_secs,
                    remaining,
                    reset_secs: full_in(t.burst.saturating_sub(remaining)),
                    retry_after_secs: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                RateDecision {
                    allowed: false,
                    quota: t.requests,
                    window_secs: t.window_secs,
                    remaining: 0,
                    reset_secs: full_in(t.burst).max(1),
                    retry_after_secs: Some(ceil_secs(wait).max(1)),
                }
            }
        })
    }

    /// A tier's shape: the time to earn back one request, and the burst.
    pub fn shape(&self, tier: &str) -> Option<(Duration, u32)> {
        self.tiers.get(tier).map(|t| (t.period, t.burst))
    }

    /// Drops the state of callers whose burst is full again (they are indistinguishable from
    /// callers never seen) and gives the memory back; returns the entries left.
    pub fn prune(&self) -> usize {
        self.tiers
            .values()
            .map(|t| {
                t.limiter.retain_recent();
                t.limiter.shrink_to_fit();
                t.limiter.len()
            })
            .sum()
    }

    /// Callers with limiter state, over all tiers.
    pub fn len(&self) -> usize {
        self.tiers.values().map(|t| t.limiter.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 { secs + 1 } else { secs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn tier(requests: u32, window_secs: u64, burst: u32) -> BTreeMap<String, TierConfig> {
        BTreeMap::from([(
            "t".to_string(),
            TierConfig {
                requests,
                window_secs,
                burst,
                max_concurrent_queries: 0,
                daily_bytes: 0,
                ..TierConfig::default()
            },
        )])
    }

    fn ip(n: u8) -> CallerId {
        CallerId::Ip([10, 0, 0, n].into())
    }

    #[test]
    fn burst_then_refusal_with_honest_headers() {
        let clock = FakeRelativeClock::default();
        let l = RequestLimiter::with_clock(&tier(60, 60, 3), clock.clone());
        let a = ip(1);
        let d: Vec<_> = (0..4).map(|_| l.check("t", &a).unwrap()).collect();
        assert_eq!(
            d.iter()
                .map(|d| (d.allowed, d.remaining))
                .collect::<Vec<_>>(),
            [(true, 2), (true, 1), (true, 0), (false, 0)]
        );
        assert_eq!((d[0].quota, d[0].window_secs), (60, 60));
        assert_eq!(d[0].reset_secs, 1, "one used request comes back in 1 s");
        assert_eq!(d[2].reset_secs, 3);
        assert_eq!(d[3].retry_after_secs, Some(1));
        // Honouring Retry-After lets the next request through.
        clock.advance(Duration::from_secs(1));
        assert!(l.check("t", &a).unwrap().allowed);
        assert!(!l.check("t", &a).unwrap().allowed);
        // Another caller of the same tier has its own budget.
        assert!(l.check("t", &ip(2)).unwrap().allowed);
        // An unconfigured tier is not limited here.
        assert!(l.check("other", &a).is_none());
    }

    #[test]
    fn retry_after_is_whole_seconds_never_zero() {
        let clock = FakeRelativeClock::default();
        // One request per 10 s.
        let l = RequestLimiter::with_clock(&tier(6, 60, 1), clock.clone());
        assert!(l.check("t", &ip(1)).unwrap().allowed);
        clock.advance(Duration::from_millis(9_500));
        let d = l.check("t", &ip(1)).unwrap();
        assert_eq!(d.retry_after_secs, Some(1), "0.5 s left rounds up to 1");
        clock.advance(Duration::from_millis(200));
        assert_eq!(l.check("t", &ip(1)).unwrap().retry_after_secs, Some(1));
        clock.advance(Duration::from_millis(300));
        assert!(l.check("t", &ip(1)).unwrap().allowed);
    }

    #[test]
    fn pruning_forgets_idle_callers_only() {
        let clock = FakeRelativeClock::default();
        let l = RequestLimiter::with_clock(&tier(60, 60, 5), clock.clone());
        for n in 0..100 {
            l.check("t", &ip(n)).unwrap();
        }
        assert_eq!(l.len(), 100);
        assert_eq!(l.prune(), 100, "none is back at a full burst yet");
        clock.advance(Duration::from_secs(2));
        l.check("t", &ip(0)).unwrap();
        assert_eq!(l.prune(), 1, "only the caller that just came is kept");
    }

    proptest! {
        /// Over any sequence of requests and pauses, what is admitted never exceeds the burst
        /// plus the rate times the time elapsed, and a refused caller that waits its
        /// Retry-After is admitted.
        #[test]
        fn admitted_never_exceeds_burst_plus_rate(
            requests in 1u32..1000,
            window_secs in 1u64..120,
            burst in 1u32..50,
            steps in proptest::collection::vec((0u64..3_000, 1usize..20), 1..60),
        ) {
            let clock = FakeRelativeClock::default();
            let l = RequestLimiter::with_clock(&tier(requests, window_secs, burst), clock.clone());
            let caller = ip(7);
            let (mut admitted, mut elapsed_ms) = (0u64, 0u64);
            for (pause_ms, n) in steps {
                clock.advance(Duration::from_millis(pause_ms));
                elapsed_ms += pause_ms;
                for _ in 0..n {
                    let d = l.check("t", &caller).unwrap();
                    if d.allowed {
                        admitted += 1;
                    } else {
                        prop_assert!(d.retry_after_secs.unwrap() >= 1);
                    }
                    // The rate as the limiter keeps it: the period rounded down to a nanosecond.
                    let period_ns = (window_secs * 1_000_000_000 / u64::from(requests)) as f64;
                    let bound = f64::from(burst) + (elapsed_ms * 1_000_000) as f64 / period_ns;
                    prop_assert!(admitted as f64 <= bound + 1e-9,
                        "admitted {} > bound {}", admitted, bound);
                }
            }
            let d = loop {
                let d = l.check("t", &caller).unwrap();
                if !d.allowed { break d; }
            };
            clock.advance(Duration::from_secs(d.retry_after_secs.unwrap()));
            prop_assert!(l.check("t", &caller).unwrap().allowed);
        }
    }
}
