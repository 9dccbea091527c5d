//! The query executor: every DataFusion plan is planned and executed here, on thread pools of
//! its own, apart from the runtime that accepts connections and serves health checks, the
//! catalog, the audit log and the limiter (the pattern of InfluxDB 3's `DedicatedExecutor`).
//!
//! Two pools share the machine's cores: `reserved` (every core) runs the queries of keys whose
//! tier has `query_pool = "reserved"` (departments, premium keys); `public` (a configured share
//! of the cores, at least one thread, at a lower scheduling priority) runs those of anonymous
//! and standard callers, so a few heavy public queries cannot take every core from a
//! department's key, and none can take the HTTP side's.
//!
//! A request's work is a [`Lane`]: the pool it runs on, its tier, a CPU-time account and
//! whatever must stay held while any of its work runs (the admission permit). Work started
//! through [`Lane::run`] is aborted when its handle is dropped (deadline, disconnect); a panic
//! inside it becomes [`QueryError::Panicked`] for that request only; its CPU time (thread CPU
//! time of each poll) is added to the lane and to `datagate_query_cpu_microseconds_total{tier}`.
//! That counts the request's own tasks; `datagate_query_pool_cpu_microseconds_total{pool}`
//! counts everything each pool's workers did, the tasks DataFusion spawns for a plan included.

use crate::error::QueryError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datagate_core::config::{QueryConfig, QueryPool};
use futures::FutureExt;
use futures::StreamExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

thread_local! {
    /// Thread CPU time when this pool worker last woke up.
    static BUSY_SINCE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The pools queries run on; cheap to clone.
#[derive(Clone)]
pub struct QueryExecutor {
    inner: Arc<Pools>,
}

struct Pools {
    reserved: Pool,
    public: Pool,
}

struct Pool {
    handle: Handle,
    /// Taken at shutdown; dropped without waiting for busy threads.
    runtime: Mutex<Option<Runtime>>,
    threads: usize,
}

impl Pool {
    /// A pool of `threads` workers whose threads run at `nice` (0: the process's priority).
    fn start(name: &'static str, threads: usize, nice: i32) -> Result<Self, QueryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .on_thread_start(move || {
                // Never on a serving thread's one core, whoever starts the thread.
                let _ = datagate_core::threads::run_anywhere();
                lower_priority(nice);
                BUSY_SINCE.set(thread_cpu_nanos());
            })
            // All CPU of the pool's workers, the tasks DataFusion spawns for a plan included.
            .on_thread_unpark(|| BUSY_SINCE.set(thread_cpu_nanos()))
            .on_thread_park(move || {
                let used = thread_cpu_nanos().saturating_sub(BUSY_SINCE.get());
                metrics::counter!("datagate_query_pool_cpu_microseconds_total", "pool" => name)
                    .increment(used / 1_000);
            })
            .max_blocking_threads(threads.max(2) * 4)
            .thread_name(format!("dg-query-{name}"))
            // Planning recurses over deep (but accepted) plans.
            .thread_stack_size(16 * 1024 * 1024)
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("starting the {name} pool: {e}")))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            threads,
        })
    }

    fn shutdown(&self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rt) = runtime {
            rt.shutdown_background();
        }
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        // Dropping a runtime inside another blocks (and tokio forbids it); let it go.
        self.reserved.shutdown();
        self.public.shutdown();
    }
}

impl QueryExecutor {
    pub fn new(config: &QueryConfig) -> Result<Self, QueryError> {
        let threads = match config.threads {
            0 => datagate_core::threads::cores().max(2),
            n => n,
        };
        let share = config.public_share.clamp(0.0, 1.0);
        let public = ((threads as f64 * share).round() as usize).clamp(1, threads);
        Ok(Self {
            inner: Arc::new(Pools {
                reserved: Pool::start("reserved", threads, 0)?,
                public: Pool::start("public", public, config.public_nice)?,
            }),
        })
    }

    /// Threads of the reserved and the public pool.
    pub fn threads(&self) -> (usize, usize) {
        (self.inner.reserved.threads, self.inner.public.threads)
    }

    /// A lane for one request of `tier` on `pool`; `hold` stays alive while any work of the
    /// lane runs (an admission permit, so a query whose client left still counts until its
    /// work has stopped).
    pub fn lane(
        &self,
        pool: QueryPool,
        tier: &str,
        hold: Option<Arc<dyn Any + Send + Sync>>,
    ) -> Lane {
        let pool = match pool {
            QueryPool::Reserved => &self.inner.reserved,
            QueryPool::Public => &self.inner.public,
        };
        Lane {
            handle: pool.handle.clone(),
            threads: pool.threads,
            tier: tier.into(),
            cpu_nanos: Arc::default(),
            _hold: hold,
        }
    }

    /// Stops both pools at once: running work is dropped where it stands (at shutdown, after
    /// the grace period).
    pub fn shutdown(&self) {
        self.inner.reserved.shutdown();
        self.inner.public.shutdown();
    }
}

/// Where one request's query work runs and what it is charged to; cheap to clone.
#[derive(Clone)]
pub struct Lane {
    handle: Handle,
    /// Workers of the lane's pool.
    threads: usize,
    tier: Arc<str>,
    cpu_nanos: Arc<AtomicU64>,
    _hold: Option<Arc<dyn Any + Send + Sync>>,
}

impl Lane {
    /// Runs `work` on the lane's pool. Dropping the returned job aborts the work at its next
    /// await point; a panic is [`QueryError::Panicked`].
    pub fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, QueryError>> + Send + 'static,
    ) -> Job<T> {
        let handle = self.spawn(work);
        Job { handle }
    }

    /// Runs `work` on the lane's pool, detached: it ends by itself (a stream pump that stops
    /// when its receiver is dropped).
    pub fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        let timed = CpuTimed {
            inner: work,
            lane: self.clone(),
        };
        self.handle.spawn(timed)
    }

    /// `stream` read in a task of its own on the lane's pool (charged to the lane), at most
    /// `ahead` batches ahead of whoever reads the returned stream: a one-partition plan's scan
    /// and decoding then run beside the encoding of the batches it gave before, as a wider
    /// plan's partitions run in tasks of their own. Dropping the returned stream stops the task;
    /// a panic in it comes out of the stream.
    pub fn run_ahead(
        &self,
        mut stream: SendableRecordBatchStream,
        ahead: usize,
    ) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(stream.schema(), ahead.max(1));
        let tx = builder.tx();
        let work = CpuTimed {
            inner: async move {
                while let Some(item) = stream.next().await {
                    if tx.send(item).await.is_err() {
                        break;
                    }
                }
                Ok(())
            },
            lane: self.clone(),
        };
        builder.spawn_on(work, &self.handle);
        builder.build()
    }

    /// Workers of the pool the lane's work runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The lane, taken to have `threads` workers (tests of work sized by them).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Thread CPU time the lane's work has used so far.
    pub fn cpu_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.cpu_nanos.load(Ordering::Relaxed))
    }

    fn charge(&self, nanos: u64) {
        self.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
        metrics::counter!("datagate_query_cpu_microseconds_total", "tier" => self.tier.to_string())
            .increment(nanos / 1_000);
    }
}

/// Work started on a lane; aborted when dropped.
pub struct Job<T> {
    handle: JoinHandle<Result<T, QueryError>>,
}

impl<T> Future for Job<T> {
    type Output = Result<T, QueryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(QueryError::panicked(e.into_panic())),
                Err(_) => Err(QueryError::ShuttingDown),
            })
    }
}

impl<T> Drop for Job<T> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Runs `work` and turns a panic inside it into [`QueryError::Panicked`] (for work polled
/// outside a [`Job`], such as a stream pump).
pub async fn catch_panic<T>(work: impl Future<Output = T>) -> Result<T, QueryError> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(QueryError::panicked)
}

/// A panic's message, for logs and for sorting it into a problem.
pub use datagate_core::panics::panic_message;

pin_project_lite::pin_project! {
    /// Charges the thread CPU time of every poll of `inner` to `lane`.
    struct CpuTimed<F> {
        #[pin]
        inner: F,
        lane: Lane,
    }
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let before = thread_cpu_nanos();
        let polled = this.inner.poll(cx);
        this.lane.charge(thread_cpu_nanos().saturating_sub(before));
        polled
    }
}

/// Lowers a public pool thread's priority to `nice`: when both pools are busy the kernel gives
/// the reserved pool's threads, and the HTTP threads, the larger share of the cores.
fn lower_priority(nice: i32) {
    if let Err(e) = datagate_core::threads::lower_priority(nice) {
        tracing::warn!(nice, error = %e, "could not lower the public query threads' priority");
    }
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn executor() -> QueryExecutor {
        QueryExecutor::new(&QueryConfig {
            threads: 2,
            public_share: 0.5,
            public_nice: 10,
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn work_runs_off_the_callers_runtime_and_panics_become_errors() {
        let ex = executor();
        let lane = ex.lane(QueryPool::Public, "anonymous", None);
        let name = lane
            .run(async { Ok(std::thread::current().name().map(str::to_string)) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("dg-query-public"));
        let nice = lane
            .run(async {
                // SAFETY: plain system calls on the calling thread's own id.
                Ok(unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::getpriority(libc::PRIO_PROCESS, tid)
                })
            })
            .await
            .unwrap();
        assert_eq!(nice, 10, "public threads run at the configured nice value");
        let err = lane
            .run(async {
                let v: Vec<u8> = Vec::new();
                #[allow(clippy::useless_vec)]
                let _ = v[3];
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::Panicked { .. }), "{err:?}");
        // The pool still works after the panic.
        assert!(lane.run(async { Ok(1) }).await.is_ok());
        ex.shutdown();
    }

    #[tokio::test]
    async fn dropping_a_job_aborts_it_and_releases_what_it_holds() {
        let ex = executor();
        let held = Arc::new(());
        let lane = ex.lane(
            QueryPool::Reserved,
            "internal",
            Some(held.clone() as Arc<dyn Any + Send + Sync>),
        );
        let job = lane.run(async {
            loop {
                tokio::task::yield_now().await;
            }
            #[allow(unreachable_code)]
            Ok(())
        });
        drop(lane);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            Arc::strong_count(&held),
            2,
            "the running job holds the permit"
        );
        drop(job);
        let start = Instant::now();
        while Arc::strong_count(&held) > 1 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "abort did not land"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ex.shutdown();
    }

    #[tokio::test]
    async fn cpu_time_is_charged_to_the_lane() {
        let ex = executor();
        let lane = ex.lane(QueryPool::Reserved, "internal", None);
        lane.run(async {
            // Spin until this thread has used 50 ms of CPU, however busy the machine is.
            let start = thread_cpu_nanos();
            let mut x = 0u64;
            while thread_cpu_nanos() - start < 50_000_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            std::hint::black_box(x);
            Ok(())
        })
        .await
        .unwrap();
        let used = lane.cpu_time();
        assert!(used >= Duration::from_millis(50), "{used:?}");
        assert!(used < Duration::from_secs(2), "{used:?}");
        ex.shutdown();
    }
}
