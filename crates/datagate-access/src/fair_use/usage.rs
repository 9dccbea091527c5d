//! Bytes served per caller per UTC day (the `daily-bytes` policy), kept in memory, counted as
//! the encoders' bytes leave, and saved to the catalog periodically and at shutdown so a
//! restart keeps the day's counters.
//!
//! Only callers that were actually sent data have a counter, so a flood of refused requests
//! from many addresses adds nothing here.

use super::CallerId;
use chrono::{NaiveDate, Utc};
use datagate_catalog::CatalogStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One caller's bytes today, and how many of them the catalog already has.
#[derive(Debug, Default)]
pub struct UsageCounter {
    bytes: AtomicU64,
    saved: AtomicU64,
}

impl UsageCounter {
    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
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
        let day = Utc::now().date_naive();
        let counters = catalog
            .load_usage(day)
            .await?
            .into_iter()
            .filter_map(|(caller, bytes)| {
                let id = CallerId::parse(&caller)?;
                let c = UsageCounter {
                    bytes: AtomicU64::new(bytes),
                    saved: AtomicU64::new(bytes),
                };
                Some((id, Arc::new(c)))
            })
            .collect();
        Ok(Self {
            today: Mutex::new(Day { day, counters }),
        })
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

    /// Saves the counters that moved since the last save.
    pub async fn save(&self, catalog: &dyn CatalogStore) -> datagate_catalog::Result<usize> {
        let (day, moved) = self.with_today(|d| {
            let moved: Vec<(String, u64, Arc<UsageCounter>)> = d
                .counters
                .iter()
                .filter_map(|(id, c)| {
                    let bytes = c.get();
                    (bytes > c.saved.load(Ordering::Relaxed))
                        .then(|| (id.to_string(), bytes, c.clone()))
                })
                .collect();
            (d.day, moved)
        });
        if moved.is_empty() {
            return Ok(0);
        }
        let rows = moved.iter().map(|(id, b, _)| (id.clone(), *b)).collect();
        catalog.save_usage(day, rows).await?;
        for (_, bytes, c) in &moved {
            c.saved.fetch_max(*bytes, Ordering::Relaxed);
        }
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
