//! The audit records of one data access, the same through every front door: a `begin` record
//! (who, what, which dataset versions) made durable before the first byte, and an `end` record
//! when the transfer stops — rows, bytes, CPU time and how it ended; or, for an answer whole
//! in memory before anything leaves (a page), one `read` record saying both.
//!
//! [`PendingRecords`] counts the records still to be handed to the log (requests being
//! answered, `end` records of transfers still running), so shutdown can wait for them before the
//! log closes.

use datagate_audit::{AuditLog, Event, Kind};
use datagate_query::execute::{Outcome, Report, Sent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The `end` record of a transfer announced by `begin`, `elapsed` after it started. `None`:
/// the transfer's work was dropped without reporting (the executor stopped at shutdown); the
/// record then carries `sent`, the rows and bytes counted as they left.
/// `client_left` names the outcome of a transfer its client stopped: `disconnected` for an
/// HTTP body, `cancelled` for a Flight stream (a client cancels by dropping it).
pub fn end_record(
    begin: &Event,
    report: Option<Report>,
    elapsed: Duration,
    client_left: &str,
    sent: &Sent,
) -> Event {
    let mut end = begin.clone();
    end.kind = Some(Kind::End);
    end.duration_ms = elapsed.as_millis() as u64;
    match report {
        Some(r) => with_report(&mut end, r, client_left),
        None => {
            end.rows_returned = sent.rows();
            end.bytes_returned = sent.bytes();
            end.outcome = Some("cancelled".to_string());
            end.error = Some("the gateway shut down while the query ran".into());
        }
    }
    end
}

/// The one `read` record of a transfer answered whole before anything left (a page encoded
/// in memory): what its `begin` would say, with the rows, bytes and outcome its `end` would
/// add. Written in place of both, durable before the first byte like a `begin`.
pub fn read_record(mut event: Event, report: Report, elapsed: Duration) -> Event {
    event.kind = Some(Kind::Read);
    event.duration_ms = elapsed.as_millis() as u64;
    with_report(&mut event, report, "disconnected");
    event
}

fn with_report(e: &mut Event, r: Report, client_left: &str) {
    e.rows_returned = r.rows;
    e.bytes_returned = r.bytes;
    e.cpu_ms = Some(r.cpu_micros / 1000);
    let (outcome, error) = match r.outcome {
        Outcome::Completed => ("completed", None),
        Outcome::Disconnected => (client_left, None),
        Outcome::Failed(e) => ("failed", Some(e.message)),
    };
    e.outcome = Some(outcome.to_string());
    e.error = error;
}

/// Audit records still to be written; see the module documentation.
#[derive(Default)]
pub struct PendingRecords {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One record still to be written; dropped once it is handed to the log.
pub struct PendingRecord(Arc<PendingRecords>);

impl Drop for PendingRecord {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl PendingRecords {
    /// Counts one record until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> PendingRecord {
        self.count.fetch_add(1, Ordering::AcqRel);
        PendingRecord(self.clone())
    }

    /// Waits until every pending record was handed to the log, or `limit` passed.
    pub async fn wait_idle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let idle = self.idle.notified();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
    }
}

/// Counts refusals per caller, action and second: the first of each second is written in
/// full, the rest are counted into one `refusals` record per second, so a flood cannot flood
/// the log and no refusal goes uncounted.
#[derive(Default)]
pub struct RefusalCounter {
    seen: Mutex<HashMap<(String, String, u16), Window>>,
}

struct Window {
    second: u64,
    /// Refusals in this second after the first (which was written in full).
    more: u64,
    template: Event,
}

impl RefusalCounter {
    /// Whether this refusal is to be written in full (the first of its second).
    pub fn first_of_second(&self, event: &Event, log: &AuditLog) -> bool {
        let key = (
            event.key_id.clone() + "|" + &event.client_ip,
            event.action.clone(),
            event.status,
        );
        let now = unix_secs();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(&key) {
            Some(w) if w.second == now => {
                w.more += 1;
                false
            }
            Some(w) => {
                flush(w, log);
                w.second = now;
                w.template = event.clone();
                true
            }
            None => {
                seen.insert(
                    key,
                    Window {
                        second: now,
                        more: 0,
                        template: event.clone(),
                    },
                );
                true
            }
        }
    }

    /// Writes every count (at shutdown).
    pub fn flush_all(&self, log: &AuditLog) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for w in seen.values_mut() {
            flush(w, log);
        }
        seen.clear();
    }

    /// Writes the counts of past seconds and forgets quiet callers (every second).
    pub fn flush_past(&self, log: &AuditLog) {
        let now = unix_secs();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, w| {
            if w.second < now {
                flush(w, log);
                false
            } else {
                true
            }
        });
    }
}

fn flush(w: &mut Window, log: &AuditLog) {
    if w.more > 0 {
        let mut e = w.template.clone();
        e.kind = Some(Kind::Refusals);
        e.event_id = uuid::Uuid::now_v7().to_string();
        e.request_id = String::new();
        e.count = w.more;
        e.duration_ms = 0;
        log.append_detached(e);
        w.more = 0;
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Flushes refusal counts every second for as long as the log lives.
pub fn spawn_refusal_flusher(counter: Arc<RefusalCounter>, log: AuditLog) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            counter.flush_past(&log);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use datagate_query::execute::Outcome;

    fn begin() -> Event {
        Event {
            kind: Some(Kind::Begin),
            action: "data.query".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_end_record_says_what_was_sent_and_how_it_ended() {
        let report = Report {
            outcome: Outcome::Disconnected,
            rows: 7,
            bytes: 700,
            cpu_micros: 3_000,
        };
        let end = end_record(
            &begin(),
            Some(report),
            Duration::from_millis(5),
            "cancelled",
            &Sent::default(),
        );
        assert_eq!(end.kind, Some(Kind::End));
        assert_eq!((end.rows_returned, end.bytes_returned), (7, 700));
        assert_eq!(end.outcome.as_deref(), Some("cancelled"));
        assert_eq!(end.cpu_ms, Some(3));
        assert_eq!(end.duration_ms, 5);
        let failed = Report {
            outcome: Outcome::Failed(datagate_query::execute::StreamError::internal("boom")),
            rows: 1,
            bytes: 2,
            cpu_micros: 0,
        };
        let end = end_record(
            &begin(),
            Some(failed),
            Duration::ZERO,
            "disconnected",
            &Sent::default(),
        );
        assert_eq!(end.outcome.as_deref(), Some("failed"));
        assert_eq!(end.error.as_deref(), Some("boom"));
    }

    #[test]
    fn a_transfer_stopped_at_shutdown_keeps_the_rows_and_bytes_counted_so_far() {
        let sent = Sent::default();
        sent.add_rows(30);
        sent.add_bytes(4096);
        let end = end_record(
            &begin(),
            None,
            Duration::from_secs(1),
            "disconnected",
            &sent,
        );
        assert_eq!(end.outcome.as_deref(), Some("cancelled"));
        assert_eq!((end.rows_returned, end.bytes_returned), (30, 4096));
        assert!(end.error.unwrap().contains("shut down"));
    }
}
