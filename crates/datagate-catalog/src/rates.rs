//! Request rates shared by the gateways of a cluster: the GCRA state of every (tier, caller)
//! in the shared catalog database, taken one request at a time with one atomic statement, so a
//! caller spread over N gateways gets its tier's rate, not N times it.
//!
//! GCRA (the generic cell rate algorithm, as `governor` runs it in memory): a caller's state is
//! the theoretical arrival time `tat` of its next request. A request at `now` is allowed when
//! `max(tat, now) + period - now <= period * burst`, and then moves `tat` to
//! `max(tat, now) + period`; otherwise it is refused and `tat` stays. Time is the database's
//! clock, one clock for every gateway.

use crate::store::Result;
use async_trait::async_trait;
use std::time::Duration;

/// One request taken (or not) from a caller's shared allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedRate {
    pub allowed: bool,
    /// Requests that would pass right now.
    pub remaining: u32,
    /// Until the burst is full again.
    pub reset: Duration,
    /// On a refusal: until the next request passes.
    pub retry_after: Option<Duration>,
}

/// Where gateways keep the request-rate state they share.
#[async_trait]
pub trait SharedRates: Send + Sync {
    /// Takes one request of `caller` (a tier and a caller id) at one request per `period` with
    /// bursts of `burst`.
    async fn take(&self, caller: &str, period: Duration, burst: u32) -> Result<SharedRate>;
    /// Forgets callers whose burst is full again (indistinguishable from callers never seen);
    /// returns how many.
    async fn prune(&self) -> Result<u64>;
}

/// One gateway's public usage counters of one dataset: per day (`Some(day)`) or in total
/// (`None`); reads and downloads.
pub type UsageRow = (String, Option<chrono::NaiveDate>, u64, u64);

/// Where gateways publish their datasets' usage counters (counted from each gateway's own
/// audit log) so that every gateway shows the cluster's sums.
#[async_trait]
pub trait SharedUsage: Send + Sync {
    /// Replaces gateway `node`'s published counters with `rows` (days older than the oldest
    /// day given are dropped).
    async fn publish_usage(&self, node: &str, rows: Vec<UsageRow>) -> Result<()>;
    /// Every other gateway's counters, summed per dataset and day (and per dataset in total).
    async fn usage_elsewhere(&self, node: &str) -> Result<Vec<UsageRow>>;
}

/// Secrets the gateways of a cluster must agree on.
#[async_trait]
pub trait SharedSecrets: Send + Sync {
    /// The cluster's value of secret `name`: `proposed` if no gateway set it before, else the
    /// value the first one set.
    async fn agree_secret(&self, name: &str, proposed: &str) -> Result<String>;
}

/// The decision for a caller whose state after the request is `tat_us` (or, refused, would
/// have been), at `now_us`.
pub(crate) fn decide(
    allowed: bool,
    tat_us: i64,
    now_us: i64,
    period: Duration,
    burst: u32,
) -> SharedRate {
    let period_us = (period.as_micros() as i64).max(1);
    let burst = burst.max(1) as i64;
    let ahead = (tat_us - now_us).max(0); // how far the caller is ahead of its rate
    let capacity = period_us * burst;
    let remaining = ((capacity - ahead) / period_us).clamp(0, burst) as u32;
    let reset = Duration::from_micros(ahead as u64);
    let retry_after =
        (!allowed).then(|| Duration::from_micros((ahead + period_us - capacity).max(1) as u64));
    SharedRate {
        allowed,
        remaining,
        reset,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_reset_and_retry_follow_the_state() {
        let p = Duration::from_millis(100);
        // Fresh caller, one request taken: tat = now + period.
        let d = decide(true, 1_100_000, 1_000_000, p, 5);
        assert_eq!((d.remaining, d.reset, d.retry_after), (4, p, None));
        // Burst used up: tat = now + 5 periods.
        let d = decide(true, 1_500_000, 1_000_000, p, 5);
        assert_eq!(d.remaining, 0);
        // Refused: the state would have been 6 periods ahead; one period to wait.
        let d = decide(false, 1_500_000, 1_000_000, p, 5);
        assert_eq!(d.retry_after, Some(p));
    }
}
