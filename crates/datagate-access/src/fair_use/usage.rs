//! Bytes served per caller per UTC day (the `daily-bytes` policy), kept in memory, counted as
//! the encoders' bytes leave, and synchronised with the catalog periodically and at shutdown: a
//! gateway adds what it served since the last sync and reads back every caller's total, so a
//! restart keeps the day's counters and gateways sharing a catalog hold each caller to the
//! cluster's sum (each learning of the others' bytes within one sync interval).
//!
//! Only callers that were actually sent data have a counter, so a flood of refused requests
//! from many addresses adds nothing here.

use super::CallerId;
use chrono::{NaiveDate, Utc};
use datagate_catalog::CatalogStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One caller's bytes today: served here (and how many of those the catalog has), and served
/// by other gateways (or by this one before a restart) as of the last sync.
#[derive(Debug, Default)]
pub struct UsageCounter {
    local: AtomicU64,
    synced: AtomicU64,
    elsewhere: AtomicU64,
}

impl UsageCounter {
    pub fn add(&self, n: u64) {
        self.local.fetch_add(n, Ordering::Relaxed);
    }

    /// The caller's bytes today, as far as this gateway knows.
    pub fn get(&self) -> u64 {
        self.local
            .load(Ordering::Relaxed)
            .saturating_add(self.elsewhere.load(Ordering::Relaxed))
    }
}

struct Day {
    day: NaiveDate,
    counters: HashMap<CallerId, Arc<UsageCounter>>,
}

/// The day's counters.
pub struct DailyUsage {
    today: Mutex<Day>,
}

impl Default for DailyUsage {
    fn default() -> Self {
        Self {
            today: Mutex::new(Day {
                day: Utc::now().date_naive(),
                counters: HashMap::new(),
            }),
        }
    }
}

impl DailyUsage {
    /// The day's counters as the catalog has them.
    pub async fn load(catalog: &dyn CatalogStore) -> datagate_catalog::Result<Self> {
        let usage = Self::default();
        usage.sync(catalog, true).await?;
        Ok(usage)
    }

    /// Runs `f` on today's counters, starting a new day (from zero) when the date changed.
    fn with_today<T>(&self, f: impl FnOnce(&mut Day) -> T) -> T {
        let now = Utc::now().date_naive();
        let mut today = self.today.lock().unwrap_or_else(|p| p.into_inner());
        if today.day != now {
            today.day = now;
            today.counters = HashMap::new();
        }
        f(&mut today)
    }

    /// Bytes `caller` was sent today.
    pub fn used(&self, caller: &CallerId) -> u64 {
        self.with_today(|d| d.counters.get(caller).map_or(0, |c| c.get()))
    }

    /// `caller`'s counter for today, created on first use.
    pub fn counter(&self, caller: &CallerId) -> Arc<UsageCounter> {
        self.with_today(|d| d.counters.entry(caller.clone()).or_default().clone())
    }

    /// Adds the bytes served here since the last sync to the catalog, then (with
    /// `read_totals`: at start, and when other gateways share the catalog) reads every caller's
    /// total back; returns how many counters this gateway added to.
    pub async fn sync(
        &self,
        catalog: &dyn CatalogStore,
        read_totals: bool,
    ) -> datagate_catalog::Result<usize> {
        let (day, moved) = self.with_today(|d| {
            let moved: Vec<(String, u64, u64, Arc<UsageCounter>)> = d
                .counters
                .iter()
                .filter_map(|(id, c)| {
                    let local = c.local.load(Ordering::Relaxed);
                    let synced = c.synced.load(Ordering::Relaxed);
                    (local > synced).then(|| (id.to_string(), local, local - synced, c.clone()))
                })
                .collect();
            (d.day, moved)
        });
        if !moved.is_empty() {
            let rows = moved
                .iter()
                .map(|(id, _, delta, _)| (id.clone(), *delta))
                .collect();
            catalog.add_usage(day, rows).await?;
            for (_, local, _, c) in &moved {
                c.synced.fetch_max(*local, Ordering::Relaxed);
            }
        }
        if !read_totals {
            return Ok(moved.len());
        }
        let totals = catalog.load_usage(day).await?;
        self.with_today(|d| {
            if d.day != day {
                return;
            }
            for (caller, total) in totals {
                let Some(id) = CallerId::parse(&caller) else {
                    continue;
                };
                let c = d.counters.entry(id).or_default();
                let mine = c.synced.load(Ordering::Relaxed);
                c.elsewhere
                    .store(total.saturating_sub(mine), Ordering::Relaxed);
            }
        });
        Ok(moved.len())
    }
}

/// Seconds until the next UTC midnight, when daily counters start again (at least 1).
pub fn secs_until_reset() -> u64 {
    let now = Utc::now();
    let midnight = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .map(|m| m.and_utc());
    midnight.map_or(1, |m| (m - now).num_seconds().max(1) as u64)
}
