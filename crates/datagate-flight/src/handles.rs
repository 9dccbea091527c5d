//! Server-held handles: a statement's ticket (the plan made at `GetFlightInfo`, run by one
//! `DoGet`) and prepared statements. A handle is a random id bound to the caller that created
//! it: another key presenting it is told it does not exist, the same answer as for an expired
//! one. Handles live `flight.ticket_ttl_secs`; a caller holds at most
//! `flight.max_handles_per_caller` (its oldest go first), so memory stays bounded.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datagate_access::CallerId;
use datagate_query::RequestSession;
use datagate_query::execute::Physical;
use datagate_query::plan_info::DatasetRead;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A statement planned for one execution.
pub struct Planned {
    pub session: RequestSession,
    pub physical: Physical,
    pub read: Vec<DatasetRead>,
    pub sql: String,
}

/// A prepared statement: its text, what it returns and takes, and the parameters bound.
pub struct Prepared {
    pub sql: String,
    pub dataset_schema: SchemaRef,
    pub parameter_schema: SchemaRef,
    /// Rows of parameters bound by `DoPut`; each row is one execution.
    pub parameters: Vec<RecordBatch>,
}

enum Held {
    Planned(Box<Planned>),
    Prepared(Box<Prepared>),
}

struct Entry {
    owner: CallerId,
    created: Instant,
    held: Held,
}

/// The handles of the service.
pub struct Handles {
    ttl: Duration,
    per_owner: usize,
    map: Mutex<HashMap<String, Entry>>,
}

impl Handles {
    pub fn new(ttl: Duration, per_owner: usize) -> Self {
        Self {
            ttl,
            per_owner,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn insert(&self, owner: &CallerId, held: Held) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| now.duration_since(e.created) < self.ttl);
        let mut mine: Vec<(Instant, String)> = map
            .iter()
            .filter(|(_, e)| &e.owner == owner)
            .map(|(k, e)| (e.created, k.clone()))
            .collect();
        if mine.len() >= self.per_owner {
            mine.sort();
            for (_, k) in mine.iter().take(mine.len() + 1 - self.per_owner) {
                map.remove(k);
            }
        }
        map.insert(
            id.clone(),
            Entry {
                owner: owner.clone(),
                created: now,
                held,
            },
        );
        metrics::gauge!("datagate_flight_handles").set(map.len() as f64);
        id
    }

    /// Holds a planned statement for `owner`; returns its ticket.
    pub fn hold_planned(&self, owner: &CallerId, planned: Planned) -> String {
        self.insert(owner, Held::Planned(Box::new(planned)))
    }

    /// Holds a prepared statement for `owner`; returns its handle.
    pub fn hold_prepared(&self, owner: &CallerId, prepared: Prepared) -> String {
        self.insert(owner, Held::Prepared(Box::new(prepared)))
    }

    fn live<'a>(
        &self,
        map: &'a mut HashMap<String, Entry>,
        id: &str,
        who: &CallerId,
    ) -> Option<&'a mut Entry> {
        let ttl = self.ttl;
        map.get_mut(id)
            .filter(|e| &e.owner == who && e.created.elapsed() < ttl)
    }

    /// Takes the planned statement of ticket `id` if `who` owns it (a ticket runs once).
    pub fn take_planned(&self, id: &str, who: &CallerId) -> Option<Planned> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(
            self.live(&mut map, id, who).map(|e| &e.held),
            Some(Held::Planned(_))
        ) {
            return None;
        }
        match map.remove(id).map(|e| e.held) {
            Some(Held::Planned(p)) => Some(*p),
            _ => None,
        }
    }

    /// Runs `f` on the prepared statement `id` if `who` owns it.
    pub fn with_prepared<R>(
        &self,
        id: &str,
        who: &CallerId,
        f: impl FnOnce(&mut Prepared) -> R,
    ) -> Option<R> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match self.live(&mut map, id, who).map(|e| &mut e.held) {
            Some(Held::Prepared(p)) => {
                let r = f(p);
                Some(r)
            }
            _ => None,
        }
    }

    /// The result schema of the prepared statement `id` if `who` owns it.
    pub fn prepared_schema(&self, id: &str, who: &CallerId) -> Option<SchemaRef> {
        self.with_prepared(id, who, |p| p.dataset_schema.clone())
    }

    /// Closes the prepared statement `id` if `who` owns it.
    pub fn close_prepared(&self, id: &str, who: &CallerId) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(
            self.live(&mut map, id, who).map(|e| &e.held),
            Some(Held::Prepared(_))
        ) {
            return false;
        }
        map.remove(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Schema;
    use std::sync::Arc;

    fn prepared() -> Prepared {
        Prepared {
            sql: "SELECT 1".into(),
            dataset_schema: Arc::new(Schema::empty()),
            parameter_schema: Arc::new(Schema::empty()),
            parameters: Vec::new(),
        }
    }

    #[test]
    fn a_handle_is_only_its_owners() {
        let h = Handles::new(Duration::from_secs(60), 4);
        let alice = CallerId::Key("alice".into());
        let bob = CallerId::Key("bob".into());
        let id = h.hold_prepared(&alice, prepared());
        assert!(h.with_prepared(&id, &bob, |_| ()).is_none());
        assert!(!h.close_prepared(&id, &bob));
        assert!(h.with_prepared(&id, &alice, |_| ()).is_some());
        assert!(h.close_prepared(&id, &alice));
        assert!(h.with_prepared(&id, &alice, |_| ()).is_none());
    }

    #[test]
    fn a_caller_holds_a_bounded_number_oldest_out() {
        let h = Handles::new(Duration::from_secs(60), 2);
        let alice = CallerId::Key("alice".into());
        let first = h.hold_prepared(&alice, prepared());
        std::thread::sleep(Duration::from_millis(2));
        let second = h.hold_prepared(&alice, prepared());
        std::thread::sleep(Duration::from_millis(2));
        let third = h.hold_prepared(&alice, prepared());
        assert!(h.with_prepared(&first, &alice, |_| ()).is_none());
        assert!(h.with_prepared(&second, &alice, |_| ()).is_some());
        assert!(h.with_prepared(&third, &alice, |_| ()).is_some());
    }

    #[test]
    fn handles_expire() {
        let h = Handles::new(Duration::from_millis(20), 4);
        let alice = CallerId::Key("alice".into());
        let id = h.hold_prepared(&alice, prepared());
        std::thread::sleep(Duration::from_millis(40));
        assert!(h.with_prepared(&id, &alice, |_| ()).is_none());
    }
}
