//! What every handler can reach.

use crate::fair_use::client_ip::ClientIp;
use datagate_access::FairUse;
use datagate_access::trail::PendingRecords;
use datagate_audit::AuditLog;
use datagate_catalog::CatalogStore;
use datagate_core::Config;
use datagate_ingest::Publisher;
use datagate_query::QueryEngine;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// What every handler can reach: a handle on [`State`], cloned by every extractor, so a clone
/// is one reference count (cloning the parts themselves was a measurable share of a small page).
#[derive(Clone)]
pub struct AppState(Arc<State>);

impl AppState {
    pub fn new(state: State) -> Self {
        Self(Arc::new(state))
    }
}

impl std::ops::Deref for AppState {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

/// Shared state of the server.
pub struct State {
    pub config: Arc<Config>,
    pub catalog: Arc<dyn CatalogStore>,
    pub publisher: Publisher,
    /// Shared: cloning `AppState` (every extractor does) must not clone the engine's session state.
    pub engine: Arc<QueryEngine>,
    pub metrics: Option<PrometheusHandle>,
    pub fair_use: Arc<FairUse>,
    /// Where a request comes from (behind trusted proxies, their forwarding header).
    pub client_ip: Arc<ClientIp>,
    pub audit: AuditLog,
    /// Refusals counted per caller and second for the audit log.
    pub refusals: Arc<datagate_access::trail::RefusalCounter>,
    /// Audit records still to be written (requests being answered, `end` records of streams).
    pub audit_pending: Arc<PendingRecords>,
    /// Bodies of small pages as they left, for the next client asking the same.
    pub page_bodies: crate::routes::page_bodies::PageBodies,
}
