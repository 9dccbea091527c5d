//! Public usage counters per dataset — reads and downloads in the last 30 days and in total —
//! kept incrementally: built once when the log opens (from the usage summaries of converted
//! segments, plus the records of segments not converted yet) and counted on as records are
//! appended. A catalog request reads them from memory; nothing rescans the log.
//!
//! In a cluster each gateway counts from its own log; the counters other gateways published
//! (through the shared catalog) are kept beside them ([`UsageCounters::set_elsewhere`]) and
//! every answer is the sum, so any gateway answers the cluster's figures.
//!
//! A read is the `begin` record of a 2xx `data.rows` or `data.query` request that read the
//! dataset; a download is that of a `data.export` (see [`crate::columnar::usage_of`]).

use crate::columnar::{DayUsage, usage_of};
use crate::record::Record;
use chrono::{Duration, NaiveDate};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Days the windowed counters cover.
pub const WINDOW_DAYS: i64 = 30;

/// One dataset's counters, as dataset details and catalog listings carry them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DatasetUsage {
    pub reads_30d: u64,
    pub downloads_30d: u64,
    pub reads_total: u64,
    pub downloads_total: u64,
}

#[derive(Debug, Default)]
struct Counts {
    /// Per day: (reads, downloads); only the last [`WINDOW_DAYS`] days are kept.
    days: BTreeMap<NaiveDate, (u64, u64)>,
    reads_total: u64,
    downloads_total: u64,
}

/// The counters of every dataset.
#[derive(Debug, Default)]
pub struct UsageCounters {
    by_dataset: Mutex<HashMap<String, Counts>>,
    /// Other gateways' counters, as last published (a cluster).
    elsewhere: Mutex<HashMap<String, Counts>>,
}

/// One dataset's counters per day (`Some(day)`) or in total (`None`): reads, downloads.
pub type UsageRow = (String, Option<NaiveDate>, u64, u64);

impl UsageCounters {
    fn add(&self, dataset: &str, day: NaiveDate, reads: u64, downloads: u64) {
        let mut map = self.by_dataset.lock().unwrap_or_else(|p| p.into_inner());
        let c = map.entry(dataset.to_string()).or_default();
        c.reads_total += reads;
        c.downloads_total += downloads;
        let today = chrono::Utc::now().date_naive();
        if day > today - Duration::days(WINDOW_DAYS + 1) {
            let d = c.days.entry(day).or_default();
            d.0 += reads;
            d.1 += downloads;
            // Forget days out of the window (the first key is the oldest).
            while c
                .days
                .first_key_value()
                .is_some_and(|(k, _)| *k <= today - Duration::days(WINDOW_DAYS + 1))
            {
                c.days.pop_first();
            }
        }
    }

    /// Counts a converted segment's usage summary.
    pub fn add_summary(&self, usage: &[DayUsage]) {
        for u in usage {
            self.add(&u.dataset, u.day, u.reads, u.downloads);
        }
    }

    /// Counts one record (a read or a download; other records count nothing).
    pub fn add_record(&self, r: &Record) {
        if let Some((day, download)) = usage_of(r) {
            for d in &r.event.datasets {
                self.add(&d.name, day, u64::from(!download), u64::from(download));
            }
        }
    }

    /// Counts an event just appended (on `day`).
    pub fn add_event(&self, e: &crate::record::Event, day: NaiveDate) {
        if let Some(download) = crate::columnar::usage_kind(e) {
            for d in &e.datasets {
                self.add(&d.name, day, u64::from(!download), u64::from(download));
            }
        }
    }

    /// Reads and downloads of `dataset` on each of the last [`WINDOW_DAYS`] days up to `today`,
    /// oldest first, days without any included (as zeros).
    pub fn daily(&self, dataset: &str, today: NaiveDate) -> Vec<(NaiveDate, u64, u64)> {
        let map = self.by_dataset.lock().unwrap_or_else(|p| p.into_inner());
        let others = self.elsewhere.lock().unwrap_or_else(|p| p.into_inner());
        let day_of = |m: &HashMap<String, Counts>, day| {
            m.get(dataset)
                .and_then(|c| c.days.get(&day).copied())
                .unwrap_or((0, 0))
        };
        (0..WINDOW_DAYS)
            .rev()
            .map(|back| {
                let day = today - Duration::days(back);
                let (r, d) = day_of(&map, day);
                let (r2, d2) = day_of(&others, day);
                (day, r + r2, d + d2)
            })
            .collect()
    }

    /// The counters of `dataset` (`department.name`) as of `today`.
    pub fn get(&self, dataset: &str, today: NaiveDate) -> DatasetUsage {
        let of = |m: &Mutex<HashMap<String, Counts>>| {
            let map = m.lock().unwrap_or_else(|p| p.into_inner());
            map.get(dataset).map_or_else(DatasetUsage::default, |c| {
                let since = today - Duration::days(WINDOW_DAYS - 1);
                let (reads_30d, downloads_30d) = c
                    .days
                    .range(since..)
                    .fold((0, 0), |(r, d), (_, (r2, d2))| (r + r2, d + d2));
                DatasetUsage {
                    reads_30d,
                    downloads_30d,
                    reads_total: c.reads_total,
                    downloads_total: c.downloads_total,
                }
            })
        };
        let (a, b) = (of(&self.by_dataset), of(&self.elsewhere));
        DatasetUsage {
            reads_30d: a.reads_30d + b.reads_30d,
            downloads_30d: a.downloads_30d + b.downloads_30d,
            reads_total: a.reads_total + b.reads_total,
            downloads_total: a.downloads_total + b.downloads_total,
        }
    }

    /// This gateway's own counters, to publish: each dataset's days in the window and its
    /// totals.
    pub fn own_rows(&self) -> Vec<UsageRow> {
        let map = self.by_dataset.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows = Vec::new();
        for (dataset, c) in map.iter() {
            for (day, (r, d)) in &c.days {
                rows.push((dataset.clone(), Some(*day), *r, *d));
            }
            rows.push((dataset.clone(), None, c.reads_total, c.downloads_total));
        }
        rows
    }

    /// Replaces what other gateways counted with `rows` (as they last published it).
    pub fn set_elsewhere(&self, rows: Vec<UsageRow>) {
        let mut others: HashMap<String, Counts> = HashMap::new();
        for (dataset, day, reads, downloads) in rows {
            let c = others.entry(dataset).or_default();
            match day {
                Some(day) => {
                    let e = c.days.entry(day).or_default();
                    e.0 += reads;
                    e.1 += downloads;
                }
                None => {
                    c.reads_total += reads;
                    c.downloads_total += downloads;
                }
            }
        }
        *self.elsewhere.lock().unwrap_or_else(|p| p.into_inner()) = others;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_totals() {
        let c = UsageCounters::default();
        let today = chrono::Utc::now().date_naive();
        c.add("a.b", today, 2, 1);
        c.add("a.b", today - Duration::days(29), 3, 0);
        c.add("a.b", today - Duration::days(30), 5, 4);
        c.add("a.b", today - Duration::days(400), 7, 0);
        let u = c.get("a.b", today);
        assert_eq!(
            u,
            DatasetUsage {
                reads_30d: 5,
                downloads_30d: 1,
                reads_total: 17,
                downloads_total: 5
            }
        );
        assert_eq!(c.get("x.y", today), DatasetUsage::default());
        // Another gateway's counters add to these.
        c.set_elsewhere(vec![
            ("a.b".into(), Some(today), 10, 0),
            ("a.b".into(), None, 10, 0),
            ("x.y".into(), None, 1, 1),
        ]);
        assert_eq!(c.get("a.b", today).reads_30d, 15);
        assert_eq!(c.get("a.b", today).reads_total, 27);
        assert_eq!(c.daily("a.b", today).last(), Some(&(today, 12, 1)));
        assert_eq!(c.get("x.y", today).downloads_total, 1);
        let own = c.own_rows();
        assert!(own.contains(&("a.b".to_string(), None, 17, 5)), "{own:?}");
    }
}
