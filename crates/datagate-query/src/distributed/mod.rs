//! Distributed query: heavy plans fan out to `datagate worker` processes through
//! [`datafusion_distributed`] (datafusion-contrib), while everything that makes the gateway a
//! gateway stays in it.
//!
//! The gateway plans every query as before — the caller's catalog, masking views, the
//! read-only check, the cost budgets — and only then, for a plan that scans more than
//! `query.distribute_above_bytes` of Parquet, lets the distributed planner cut the physical
//! plan into stages whose fragments run on the workers. Masks are expressions right above the
//! scans, so they travel inside the leaf fragments: a worker masks before anything leaves it
//! (the hash-mask key comes over the [`link`] for that), and private columns are never in a
//! fragment at all. The head stage runs in the gateway and streams through the same encoders;
//! dropping the stream (client gone, deadline) cancels the fragments on every worker.
//!
//! Workers hold no catalog and no keys: they decode fragments, read the warehouse through the
//! same `object_store` URL, and answer only callers holding the shared secret ([`link`]).
//! [`health`] keeps which workers answer; `query.on_worker_down` decides whether a query skips
//! a worker that is down or runs in the gateway.

pub mod health;
pub mod link;
pub mod statistics;
pub mod worker;

use crate::QueryError;
use crate::masking::MaskKey;
use datafusion::common::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion_distributed::{DistributedExt, SessionStateBuilderExt, WorkerResolver};
use datagate_core::config::{QueryConfig, WorkerCompression, WorkerDown};
use health::{Health, WorkerHealth};
use link::WorkerLink;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// A gateway's workers and when to use them.
pub struct Distribution {
    link: WorkerLink,
    health: Arc<Health>,
    above_bytes: u64,
    on_down: WorkerDown,
    compression: WorkerCompression,
    task_bytes: usize,
    check_every: Duration,
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distribution")
            .field("workers", &self.health.snapshot())
            .field("above_bytes", &self.above_bytes)
            .finish()
    }
}

impl Distribution {
    /// The distribution `config` asks for; `None` without workers.
    pub fn from_config(
        config: &QueryConfig,
        mask_key: &MaskKey,
    ) -> Result<Option<Arc<Self>>, QueryError> {
        if config.workers.is_empty() {
            return Ok(None);
        }
        let secret = config
            .require_worker_secret()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let urls = config
            .workers
            .iter()
            .map(|w| Url::parse(w).map_err(|e| QueryError::Internal(format!("worker {w}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let ca = read_pem("query.worker_tls_ca", &config.worker_tls_ca)?;
        Ok(Some(Arc::new(Self {
            link: WorkerLink::for_gateway(secret, mask_key, ca.as_deref())
                .map_err(|e| QueryError::Internal(e.to_string()))?,
            health: Arc::new(Health::new(&urls)),
            above_bytes: config.distribute_above_bytes,
            on_down: config.on_worker_down,
            compression: config.worker_compression,
            task_bytes: usize::try_from(config.worker_task_bytes.max(1)).unwrap_or(usize::MAX),
            check_every: Duration::from_millis(config.worker_check_ms),
        })))
    }

    /// Checks the workers once (at start, so the first queries know who is up), then keeps
    /// checking in the background for as long as the returned task runs.
    pub async fn start_checks(&self) -> tokio::task::JoinHandle<()> {
        self.health.check(&self.link, self.check_timeout()).await;
        self.health
            .watch(self.link.clone(), self.check_every, self.check_timeout())
    }

    /// How long one check may take: at least a second, so a busy worker (or a loaded
    /// gateway) is not taken for a dead one.
    fn check_timeout(&self) -> Duration {
        self.check_every.max(Duration::from_secs(1))
    }

    /// The workers' last known health (for `/readyz`).
    pub fn health(&self) -> Vec<WorkerHealth> {
        self.health.snapshot()
    }

    /// The workers a plan scanning `bytes` runs on; `None`: it runs in the gateway.
    pub fn workers_for(&self, bytes: u64) -> Option<Vec<Url>> {
        if bytes <= self.above_bytes {
            return None;
        }
        let all = self.health.snapshot();
        let up: Vec<Url> = all
            .iter()
            .filter(|w| w.problem.is_none())
            .map(|w| w.url.clone())
            .collect();
        let distribute = match self.on_down {
            WorkerDown::Skip => !up.is_empty(),
            WorkerDown::Local => up.len() == all.len(),
        };
        if !distribute {
            metrics::counter!("datagate_queries_kept_local_total", "reason" => "workers_down")
                .increment(1);
            return None;
        }
        Some(up)
    }

    /// `state` with the distributed planner over `workers`: physical plans made from it are cut
    /// into stages that run on them.
    pub fn session_state(
        &self,
        state: SessionState,
        workers: Vec<Url>,
    ) -> Result<SessionState, DataFusionError> {
        let compression = match self.compression {
            WorkerCompression::None => None,
            WorkerCompression::Lz4 => Some(datafusion_distributed::CompressionType::LZ4_FRAME),
            WorkerCompression::Zstd => Some(datafusion_distributed::CompressionType::ZSTD),
        };
        Ok(SessionStateBuilder::new_from_existing(state)
            .with_distributed_worker_resolver(Planned(workers))
            .with_distributed_channel_resolver(self.link.clone())
            .with_distributed_compression(compression)?
            .with_distributed_file_scan_config_bytes_per_partition(self.task_bytes)?
            // Last of the physical rules, so the others still had the values.
            .with_physical_optimizer_rule(Arc::new(statistics::ValuelessStatistics))
            .with_distributed_planner()
            .build())
    }
}

/// The PEM file a `query.worker_tls_*` key names; `None` when the key is empty.
pub fn read_pem(key: &str, path: &str) -> Result<Option<Vec<u8>>, QueryError> {
    if path.is_empty() {
        return Ok(None);
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|e| QueryError::Internal(format!("{key} = {path}: {e}")))
}

/// Whether the distributed planner cut `plan` into stages (it leaves a plan whole when one
/// task would do all the work); an `EXPLAIN ANALYZE` is when the plan it runs is.
pub fn is_distributed(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> bool {
    use datafusion_distributed::DistributedExec;
    plan.is::<DistributedExec>() || plan.children().iter().any(|c| c.is::<DistributedExec>())
}

/// The workers one query was planned over: fixed for the query, so the stages run where the
/// plan (and the audit record) says.
struct Planned(Vec<Url>);

impl WorkerResolver for Planned {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distribution(on_down: WorkerDown) -> (Arc<Distribution>, Vec<Url>) {
        let config = QueryConfig {
            workers: vec!["http://10.0.0.1:1".into(), "http://10.0.0.2:1".into()],
            worker_secret: "0123456789abcdef-unit".into(),
            distribute_above_bytes: 1000,
            on_worker_down: on_down,
            ..QueryConfig::default()
        };
        let d = Distribution::from_config(&config, &MaskKey::random())
            .unwrap()
            .unwrap();
        let urls = config
            .workers
            .iter()
            .map(|w| Url::parse(w).unwrap())
            .collect();
        (d, urls)
    }

    #[test]
    fn small_plans_stay_and_down_workers_are_skipped_or_keep_queries_local() {
        for on_down in [WorkerDown::Skip, WorkerDown::Local] {
            let (d, urls) = distribution(on_down);
            // Nobody checked yet: nothing is up.
            assert_eq!(d.workers_for(10_000), None);
            d.health.set(&urls[0], None);
            d.health.set(&urls[1], None);
            assert_eq!(d.workers_for(1000), None, "not above the threshold");
            assert_eq!(d.workers_for(1001), Some(urls.clone()));
            d.health.set(&urls[1], Some("connection refused"));
            let expected = match on_down {
                WorkerDown::Skip => Some(vec![urls[0].clone()]),
                WorkerDown::Local => None,
            };
            assert_eq!(d.workers_for(10_000), expected, "{on_down:?}");
            d.health.set(&urls[0], Some("connection refused"));
            assert_eq!(d.workers_for(10_000), None, "{on_down:?}: none up");
        }
        // Without workers there is no distribution at all.
        let none = Distribution::from_config(&QueryConfig::default(), &MaskKey::random()).unwrap();
        assert!(none.is_none());
    }
}
