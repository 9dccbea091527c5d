//! `datagate worker`: runs the fragments gateways send, nothing else.
//!
//! A worker has no catalog, no keys and no HTTP API: one gRPC listener that admits only calls
//! carrying the shared secret ([`SecretCheck`]). Each fragment runs in a session of its own
//! whose memory pool is the query memory limit (`limits.query_memory_bytes`), with nothing
//! spilled to disk, the same size caps on string functions as in the gateway, and — when the
//! gateway sent the hash-mask key — the mask functions, so masked columns are masked here.

use crate::QueryError;
use crate::distributed::link::{MASK_KEY_HEADER, SecretCheck, WorkerLink};
use crate::engine::QueryLimits;
use crate::masking::{MaskFunction, MaskKey};
use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionState;
use datafusion_distributed::{DistributedExt, Worker, WorkerQueryContext, WorkerSessionBuilder};
use datagate_core::Mask;
use object_store::ObjectStore;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use url::Url;

/// What a worker needs: the secret, the warehouse, the limits.
pub struct WorkerSetup {
    pub secret: String,
    /// The warehouse URL and the store serving it (as in the gateway's configuration).
    pub warehouse_url: Url,
    pub store: Arc<dyn ObjectStore>,
    pub limits: QueryLimits,
    /// PEM certificate and key to serve TLS with.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// PEM certificates trusted for other workers' `https://` URLs.
    pub tls_ca: Option<Vec<u8>>,
}

/// Serves fragments on `listen` until `shutdown` completes.
pub async fn serve(
    listen: SocketAddr,
    setup: WorkerSetup,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), QueryError> {
    let internal = |e: &dyn std::fmt::Display| QueryError::Internal(e.to_string());
    let runtime = RuntimeEnvBuilder::new()
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(|e| internal(&e))?;
    let mut base = setup.warehouse_url.clone();
    base.set_path("/");
    runtime.register_object_store(&base, setup.store.clone());
    let sessions = Sessions {
        runtime: runtime.clone(),
        link: WorkerLink::for_worker(&setup.secret, setup.tls_ca.as_deref())
            .map_err(|e| internal(&e))?,
        limits: setup.limits,
    };
    let worker = Worker::from_session_builder(sessions)
        .with_runtime_env(runtime)
        .with_version(env!("CARGO_PKG_VERSION"));
    let service = tonic::service::interceptor::InterceptedService::new(
        worker.into_worker_server(),
        SecretCheck::new(&setup.secret),
    );
    let mut server = tonic::transport::Server::builder();
    if let Some((cert, key)) = &setup.tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| internal(&format!("worker TLS: {e}")))?;
    }
    tracing::info!(%listen, tls = setup.tls.is_some(), "worker listening");
    server
        .add_service(service)
        .serve_with_shutdown(listen, shutdown)
        .await
        .map_err(|e| internal(&format!("worker listener on {listen}: {e}")))
}

/// Builds the session each fragment runs in.
struct Sessions {
    runtime: Arc<RuntimeEnv>,
    link: WorkerLink,
    limits: QueryLimits,
}

#[async_trait]
impl WorkerSessionBuilder for Sessions {
    async fn build_session_state(
        &self,
        ctx: WorkerQueryContext,
    ) -> Result<SessionState, DataFusionError> {
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(self.limits.memory_bytes as usize),
            NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        );
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.runtime)
            .with_memory_pool(Arc::new(pool))
            .build_arc()?;
        let mut state = ctx
            .builder
            .with_runtime_env(runtime)
            .with_distributed_channel_resolver(self.link.clone())
            .build();
        crate::size_caps::register(&mut state, self.limits.size_caps)?;
        crate::checked_arithmetic::register(&mut state)?;
        if let Some(key) = ctx.headers.get(MASK_KEY_HEADER) {
            let key = parse_key(key.as_bytes())?;
            for mask in [Mask::Hash, Mask::Partial] {
                state.register_udf(MaskFunction::udf(mask, &key))?;
            }
        }
        Ok(state)
    }
}

fn parse_key(hex_key: &[u8]) -> Result<MaskKey, DataFusionError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut bytes).map_err(|_| {
        DataFusionError::Configuration("the gateway sent a malformed mask key".into())
    })?;
    Ok(MaskKey::new(bytes))
}
