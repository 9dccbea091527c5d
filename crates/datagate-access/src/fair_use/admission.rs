//! Admission control, apart from rate limits (after quickwit's load shield): how many queries
//! one caller runs at once (its tier's `max_concurrent_queries`, refused with 429), and how
//! many queries and uploads the whole gateway runs at once (`admission.*`, refused with 503) —
//! refusing at once instead of queueing without bound. A permit is held until the response
//! body is finished or dropped.

use super::CallerId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// What kind of work a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Query,
    Upload,
}

impl Work {
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Query => "query",
            Work::Upload => "upload",
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The caller already runs its tier's maximum of queries.
    CallerBusy { limit: u32 },
    /// The gateway runs its maximum of this kind of work.
    GatewayFull { limit: u32 },
}

#[derive(Default)]
struct Counts {
    queries: AtomicU32,
    uploads: AtomicU32,
    per_caller: Mutex<HashMap<CallerId, u32>>,
}

/// The admission state.
#[derive(Clone)]
pub struct Admission {
    counts: Arc<Counts>,
    max_queries: u32,
    max_uploads: u32,
}

/// Held while admitted work runs; dropping it gives the slot back.
pub struct Permit {
    counts: Arc<Counts>,
    work: Work,
    caller: Option<CallerId>,
}

impl Admission {
    pub fn new(max_queries: u32, max_uploads: u32) -> Self {
        Self {
            counts: Arc::default(),
            max_queries,
            max_uploads,
        }
    }

    /// Admits `work` for `caller`, whose tier lets it run `caller_limit` queries at once
    /// (0 = no cap), or says why not.
    pub fn admit(
        &self,
        work: Work,
        caller: &CallerId,
        caller_limit: u32,
    ) -> Result<Permit, Refusal> {
        let per_caller = work == Work::Query && caller_limit > 0;
        if per_caller {
            let mut map = self
                .counts
                .per_caller
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = map.entry(caller.clone()).or_insert(0);
            if *n >= caller_limit {
                return Err(Refusal::CallerBusy {
                    limit: caller_limit,
                });
            }
            *n += 1;
        }
        let (global, limit) = match work {
            Work::Query => (&self.counts.queries, self.max_queries),
            Work::Upload => (&self.counts.uploads, self.max_uploads),
        };
        let took = global.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (limit == 0 || n < limit).then_some(n + 1)
        });
        if took.is_err() {
            if per_caller {
                release_caller(&self.counts, caller);
            }
            return Err(Refusal::GatewayFull { limit });
        }
        metrics::gauge!("datagate_admitted_in_flight", "work" => work.as_str()).increment(1.0);
        Ok(Permit {
            counts: self.counts.clone(),
            work,
            caller: per_caller.then(|| caller.clone()),
        })
    }

    /// Queries and uploads running now.
    pub fn in_flight(&self) -> (u32, u32) {
        (
            self.counts.queries.load(Ordering::Acquire),
            self.counts.uploads.load(Ordering::Acquire),
        )
    }
}

fn release_caller(counts: &Counts, caller: &CallerId) {
    let mut map = counts.per_caller.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = map.get_mut(caller) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(caller);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(caller) = &self.caller {
            release_caller(&self.counts, caller);
        }
        let global = match self.work {
            Work::Query => &self.counts.queries,
            Work::Upload => &self.counts.uploads,
        };
        global.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("datagate_admitted_in_flight", "work" => self.work.as_str()).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_cap_then_gateway_cap_and_release() {
        let a = Admission::new(3, 1);
        let (x, y) = (CallerId::Key("x".into()), CallerId::Key("y".into()));
        let p1 = a.admit(Work::Query, &x, 2).unwrap();
        let p2 = a.admit(Work::Query, &x, 2).unwrap();
        assert_eq!(
            a.admit(Work::Query, &x, 2).err(),
            Some(Refusal::CallerBusy { limit: 2 })
        );
        let p3 = a.admit(Work::Query, &y, 2).unwrap();
        assert_eq!(
            a.admit(Work::Query, &y, 2).err(),
            Some(Refusal::GatewayFull { limit: 3 })
        );
        // The refused request did not keep y's slot.
        drop(p3);
        let _p3 = a.admit(Work::Query, &y, 1).unwrap();
        drop(p1);
        let _p4 = a.admit(Work::Query, &x, 2).unwrap();
        assert_eq!(a.in_flight(), (3, 0));
        drop(p2);
        let u = a.admit(Work::Upload, &x, 2).unwrap();
        assert_eq!(
            a.admit(Work::Upload, &y, 2).err(),
            Some(Refusal::GatewayFull { limit: 1 })
        );
        drop(u);
        assert_eq!(a.in_flight(), (2, 0));
        assert!(a.counts.per_caller.lock().unwrap().len() == 2);
    }
}
