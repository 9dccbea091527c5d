//! Running a plan and streaming its encoded result.
//!
//! [`start`] plans physically, checks the plan's [`cost`](crate::cost) against the caller's
//! budgets, starts execution and waits for the first batch, all within the deadline, so the
//! errors that happen early (bad casts, memory refusals, budgets, timeouts) still get their own
//! status. It is meant to run on the query executor ([`crate::Lane::run`]).
//! [`stream_encoded`] then moves the stream to a task on the same lane that encodes batch by
//! batch into a small channel: memory stays at a few batches whatever the result size, the
//! client's disconnect (the receiver dropped) cancels the query at once, a panic fails only
//! this response, and an error after the first bytes ends the body with an error so the
//! transfer fails visibly instead of looking complete.
//!
//! For callers who may not see the engine's internals, `EXPLAIN` output names no warehouse
//! files.

use crate::compression::ZstdFrames;
use crate::encode::{self, Format, Trailer};
use crate::engine::RequestSession;
use crate::error::QueryError;
use crate::executor::{Lane, catch_panic};
use arrow::array::{ArrayRef, AsArray, StringArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// When a request must be done, and the limit it was given (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub limit_ms: u64,
}

impl Deadline {
    pub fn after(limit: std::time::Duration) -> Self {
        Self {
            at: Instant::now() + limit,
            limit_ms: limit.as_millis() as u64,
        }
    }

    /// Runs `step` before the deadline, or fails with [`QueryError::Timeout`].
    pub async fn run<T>(
        deadline: Option<Deadline>,
        step: impl Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        match deadline {
            Some(d) => tokio::time::timeout_at(d.at, step)
                .await
                .map_err(|_| QueryError::Timeout(d.limit_ms))?,
            None => step.await,
        }
    }
}

/// A query that has produced its first batch (or finished without one).
pub struct Started {
    pub schema: SchemaRef,
    /// The batches read before the first bytes leave: the first, and the second when it was
    /// ready at once.
    head: Vec<RecordBatch>,
    /// The stream was seen to end while reading `head`: the whole result is in hand.
    ended: bool,
    stream: SendableRecordBatchStream,
    memory_limit: u64,
    deadline: Option<Deadline>,
    /// The workers the query runs on, when distributed (for the audit record).
    workers: Option<Vec<String>>,
    /// Partitions of an export decoded in units ([`crate::in_order`]); 1 otherwise.
    units: usize,
    _in_flight: InFlight,
}

/// Counts a running query in the `datagate_queries_in_flight` gauge for as long as it lives.
struct InFlight;

impl InFlight {
    fn new() -> Self {
        metrics::gauge!("datagate_queries_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("datagate_queries_in_flight").decrement(1.0);
    }
}

/// Wraps `plan` in a limit of `rows` (not for `EXPLAIN`, whose plan must stay the root).
pub fn limit_plan(plan: LogicalPlan, rows: u64) -> Result<LogicalPlan, QueryError> {
    if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) {
        return Ok(plan);
    }
    let fetch = usize::try_from(rows).unwrap_or(usize::MAX);
    LogicalPlanBuilder::from(plan)
        .limit(0, Some(fetch))
        .and_then(|b| b.build())
        .map_err(|e| QueryError::Internal(e.to_string()))
}

/// A plan made physical and checked against the caller's budgets, not started yet.
pub struct Physical {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    explain: bool,
    /// The workers a distributed plan's stages run on; `None` when it runs in the gateway.
    workers: Option<Vec<String>>,
    /// For `EXPLAIN` of a plan that would run distributed: its stages, one more output row.
    stages: Option<RecordBatch>,
}

impl Physical {
    /// The schema of the batches the plan will produce, exactly.
    pub fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    /// The workers the plan runs on, when distributed.
    pub fn workers(&self) -> Option<&[String]> {
        self.workers.as_deref()
    }
}

/// Decoded bytes a batch of a plan's scans holds about, at most (a batch holds one row at
/// least, and `batch_size` rows at most).
const BATCH_TARGET_BYTES: u64 = 32 << 20;

/// How much larger a row is decoded than stored: a reckoning on the safe side of what text
/// compresses by (zstd or LZ4 on typical columns: 2-4x).
const DECODED_PER_STORED: u64 = 4;

/// Rows a batch gets when the widest scanned rows take `stored_row_bytes` as stored.
fn batch_rows_for(stored_row_bytes: u64, batch_size: usize) -> usize {
    let decoded = stored_row_bytes.saturating_mul(DECODED_PER_STORED).max(1);
    (BATCH_TARGET_BYTES / decoded).clamp(1, batch_size.max(1) as u64) as usize
}

/// Plans `plan` physically and checks its [`cost`](crate::cost) and recursion depth. A plan
/// that scans more than `query.distribute_above_bytes` is cut into stages for the workers
/// ([`crate::distributed`]) when the session has them.
pub async fn plan_physical(
    session: &RequestSession,
    plan: LogicalPlan,
) -> Result<Physical, QueryError> {
    let memory_limit = session.limits.memory_bytes;
    let top_n = crate::plan_info::keeps_top_rows(&plan);
    let plan = if top_n {
        crate::top_n::seed(plan, &session.pages).await
    } else {
        plan
    };
    if top_n || crate::plan_info::looks_up_primary_key(&plan) {
        // Late materialisation: the key column (or, for a top-N, the sort columns against the
        // running top N) is decoded first and the other columns only for the rows that match,
        // in the row groups the bloom filters leave. (For broad filters it costs more than it
        // saves, so it is not the default.)
        let state = session.ctx.state_ref();
        let mut state = state.write();
        let parquet = &mut state.config_mut().options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
    }
    // Batches of 8,192 rows of a dataset of 100 KB rows are 800 MB each, in the scan and in
    // every operator that gathers batches back to that size: such a plan gets fewer rows a
    // batch, about `BATCH_TARGET_BYTES` of them.
    let widest = crate::plan_info::widest_stored_row(&plan);
    let batch_size: usize = session.ctx.state_ref().read().config().batch_size();
    let rows = batch_rows_for(widest, batch_size);
    if rows < batch_size
        && let Ok(rows) = datafusion::common::config::ConfigNonZeroUsize::try_new(rows)
    {
        let state = session.ctx.state_ref();
        state
            .write()
            .config_mut()
            .options_mut()
            .execution
            .batch_size = rows;
    }
    let explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
    let budget = crate::cost::Budget {
        max_join_pairs: session.limits.max_join_pairs,
        max_sort_rows: session.limits.max_sort_rows,
    };
    let df_err = |e| QueryError::from_datafusion(e, memory_limit);
    let distribution = session
        .distribution
        .as_ref()
        .filter(|_| !crate::plan_info::is_recursive(&plan));
    let workers = distribution.and_then(|d| d.workers_for(crate::plan_info::bytes_scanned(&plan)));
    let df = session
        .ctx
        .execute_logical_plan(plan)
        .await
        .map_err(df_err)?;
    let (mut state, logical) = df.into_parts();
    if let (Some(d), Some(w)) = (distribution, &workers) {
        state = d.session_state(state, w.clone()).map_err(df_err)?;
    }
    let task = state.task_ctx();
    let physical = state.create_physical_plan(&logical).await.map_err(df_err)?;
    crate::cost::check(&physical, &budget)?;
    // EXPLAIN plans its statement without the distributed planner: show the stages too.
    let stages = match (&logical, &workers) {
        (LogicalPlan::Explain(e), Some(_)) => {
            let staged = state.create_physical_plan(&e.plan).await.map_err(df_err)?;
            crate::distributed::is_distributed(staged.as_ref()).then_some(staged)
        }
        _ => None,
    };
    let stages = match stages {
        Some(staged) => {
            let text = datafusion_distributed::display_plan_ascii(staged.as_ref(), false);
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec!["distributed_plan"])),
                Arc::new(StringArray::from(vec![text])),
            ];
            Some(
                RecordBatch::try_new(physical.schema(), columns)
                    .map_err(|e| QueryError::Internal(e.to_string()))?,
            )
        }
        None => None,
    };
    // Planned over the workers but left whole (one task would do it all): it runs here.
    let workers = workers.filter(|_| crate::distributed::is_distributed(physical.as_ref()));
    let plan = if workers.is_some() {
        metrics::counter!("datagate_queries_distributed_total").increment(1);
        // Recursive plans never get here (they stay local, where their iterations are counted).
        physical
    } else {
        crate::recursion::limit_recursion(physical, session.limits.max_recursion_depth)?
    };
    // Strings leave as the API's types, whatever the plan computed them as.
    let plan = crate::view_types::api_plan(plan).map_err(df_err)?;
    Ok(Physical {
        plan,
        task,
        explain,
        workers: workers.map(|w| w.iter().map(|u| u.to_string()).collect()),
        stages,
    })
}

/// Starts `plan` and waits for its first batch, all before `deadline`.
pub async fn start(
    session: &RequestSession,
    plan: LogicalPlan,
    deadline: Option<Deadline>,
) -> Result<Started, QueryError> {
    let in_flight = InFlight::new();
    let physical = Deadline::run(deadline, plan_physical(session, plan)).await?;
    start_inner(session, physical, deadline, in_flight).await
}

/// Starts a plan made by [`plan_physical`] and waits for its first batch before `deadline`.
pub async fn start_physical(
    session: &RequestSession,
    physical: Physical,
    deadline: Option<Deadline>,
) -> Result<Started, QueryError> {
    start_inner(session, physical, deadline, InFlight::new()).await
}

async fn start_inner(
    session: &RequestSession,
    physical: Physical,
    deadline: Option<Deadline>,
    in_flight: InFlight,
) -> Result<Started, QueryError> {
    let memory_limit = session.limits.memory_bytes;
    let workers = physical.workers;
    // A distributed plan's stages report after its batches: it always streams.
    let settles = workers.is_none() && settles(physical.plan.as_ref());
    // An export in storage order decodes its units on every worker of its lane.
    let units = session
        .in_order
        .as_ref()
        .and_then(|o| Some((o.split(&physical.plan)?, o)));
    let partitions = units.as_ref().map_or(1, |(plan, _)| {
        plan.properties().partitioning.partition_count()
    });
    let run = async {
        let mut stream = match units {
            Some((plan, in_order)) => {
                tracing::debug!(units = partitions, "export decoded in units");
                metrics::counter!("datagate_exports_in_units_total").increment(1);
                in_order.stream(plan, physical.task)
            }
            None => datafusion::physical_plan::execute_stream(physical.plan, physical.task)
                .map_err(|e| QueryError::from_datafusion(e, memory_limit))?,
        };
        if let Some(stages) = physical.stages {
            let schema = stream.schema();
            let more = futures::stream::once(async move { Ok(stages) });
            stream = Box::pin(RecordBatchStreamAdapter::new(schema, stream.chain(more)));
        }
        if physical.explain && !session.internals {
            stream = hide_files(stream);
        }
        let mut head = Vec::new();
        let mut ended = false;
        match stream.next().await {
            Some(Ok(batch)) => head.push(batch),
            Some(Err(e)) => return Err(QueryError::from_datafusion(e, memory_limit)),
            None => ended = true,
        }
        // A result of one batch (an aggregate, a short list) has usually ended by now: seen
        // here, it is answered whole, and a deadline that passes while its answer is on its
        // way cannot cut it off. Only what is ready at once: a stream still working is left
        // to run (`next` loses nothing when not polled to the end). A plan that has read all
        // its input before its first batch (groups, a sort) is read on while its result is
        // small: its other partitions' batches follow, and the whole answer goes out at once.
        while !ended {
            let rows: usize = head.iter().map(RecordBatch::num_rows).sum();
            let item = if settles && rows as u64 <= SMALL_RESULT_ROWS {
                stream.next().await
            } else if head.len() == 1 {
                match stream.next().now_or_never() {
                    Some(item) => item,
                    None => break,
                }
            } else {
                break;
            };
            match item {
                Some(Ok(batch)) => head.push(batch),
                Some(Err(e)) => return Err(QueryError::from_datafusion(e, memory_limit)),
                None => ended = true,
            }
        }
        Ok((stream, head, ended))
    };
    let (stream, head, ended) = Deadline::run(deadline, run).await?;
    Ok(Started {
        schema: stream.schema(),
        head,
        ended,
        stream,
        memory_limit,
        deadline,
        workers,
        units: partitions,
        _in_flight: in_flight,
    })
}

/// A result of at most this many rows, seen to end before its first bytes leave, is answered
/// whole (with its length, and any error as a problem) rather than streamed.
pub const SMALL_RESULT_ROWS: u64 = 1000;

/// Whether every batch of `plan` comes out of an operator that reads all its input first (an
/// aggregate's final groups, a sort), through operators that only pass batches on: once its
/// first batch is out, the rest of its result follows without scanning more data.
fn settles(plan: &dyn ExecutionPlan) -> bool {
    use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
    use datafusion::physical_plan::{
        InputOrderMode, coalesce_partitions::CoalescePartitionsExec, filter::FilterExec,
        limit::GlobalLimitExec, limit::LocalLimitExec, projection::ProjectionExec,
        repartition::RepartitionExec, sorts::sort::SortExec,
        sorts::sort_preserving_merge::SortPreservingMergeExec,
    };
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        return *aggregate.mode() != AggregateMode::Partial
            && *aggregate.input_order_mode() == InputOrderMode::Linear;
    }
    if plan.is::<SortExec>() {
        return true;
    }
    let passes_on = plan.is::<ProjectionExec>()
        || plan.is::<FilterExec>()
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortPreservingMergeExec>()
        || plan.is::<RepartitionExec>()
        || plan.is::<GlobalLimitExec>()
        || plan.is::<LocalLimitExec>();
    passes_on && plan.children().iter().all(|c| settles(c.as_ref()))
}

impl Started {
    /// A result already in memory (a page served without planning, [`crate::pages`]). All of
    /// it is `head` and the stream has ended: nothing is left to wait for, so the deadline
    /// (kept for the record) cannot cut the answer while a slow client takes it.
    pub fn from_batches(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        memory_limit: u64,
        deadline: Option<Deadline>,
    ) -> Self {
        Self {
            stream: Box::pin(RecordBatchStreamAdapter::new(
                schema.clone(),
                futures::stream::empty(),
            )),
            schema,
            head: batches,
            ended: true,
            memory_limit,
            deadline,
            workers: None,
            units: 1,
            _in_flight: InFlight::new(),
        }
    }

    /// Partitions an export was decoded in, side by side ([`crate::in_order`]); 1 for a plan
    /// run as planned.
    pub fn units(&self) -> usize {
        self.units
    }

    /// Every batch of the result, in memory (tests and tools; responses stream).
    pub async fn collect(mut self) -> Result<Vec<RecordBatch>, QueryError> {
        let mut batches = std::mem::take(&mut self.head);
        while let Some(batch) = self.stream.next().await {
            batches.push(batch.map_err(|e| QueryError::from_datafusion(e, self.memory_limit))?);
        }
        Ok(batches)
    }

    /// The whole result, when the stream was seen to end before any of it was sent and it
    /// holds at most `max_rows` rows (a distributed query's stays a stream: its stages report
    /// after its batches).
    pub fn whole(self, max_rows: u64) -> Result<(SchemaRef, Vec<RecordBatch>), Self> {
        let rows: usize = self.head.iter().map(RecordBatch::num_rows).sum();
        if self.ended && self.workers.is_none() && rows as u64 <= max_rows {
            Ok((self.schema, self.head))
        } else {
            Err(self)
        }
    }

    /// The deadline the query runs under.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// The workers the query runs on, when distributed.
    pub fn workers(&self) -> Option<&[String]> {
        self.workers.as_deref()
    }
}

/// How many rows a response carries at most, and what its trailer says when more exist.
#[derive(Debug, Clone, Default)]
pub struct RowCap {
    /// `None`: no cap (exports).
    pub rows: Option<u64>,
    /// A `rows` page: the next page's URL, sent when more rows follow.
    pub next_if_more: Option<String>,
    /// A query: say `truncated: true` when more rows follow.
    pub truncate: bool,
}

/// How a streamed response ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed,
    /// The client went away before the end; the query was cancelled.
    Disconnected,
    /// The query failed after the first bytes were sent.
    Failed(StreamError),
}

/// Rows and bytes of a response counted as they leave, readable while it streams: what its
/// `end` record says when the stream's work is dropped before it reports (at shutdown, or a
/// panic), and what fair use counts.
#[derive(Debug, Default)]
pub struct Sent {
    rows: AtomicU64,
    bytes: AtomicU64,
}

impl Sent {
    pub fn add_rows(&self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// What a streamed response did, reported when it ends.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcome: Outcome,
    pub rows: u64,
    pub bytes: u64,
    /// Thread CPU time of the request's work on the query executor (planning, execution and
    /// encoding as polled by the request's own tasks), in microseconds.
    pub cpu_micros: u64,
}

/// The error ending a body whose query failed mid-stream: its message, and what kind of failure
/// it was, so each front door can say it in its own codes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct StreamError {
    pub message: String,
    pub kind: FailureKind,
}

/// The kinds of mid-stream failure a client can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The query ran past its time limit.
    Timeout,
    /// The query went beyond its memory or size caps (the query's doing, not the gateway's).
    OverLimit,
    /// The query's own expressions failed on a row met after the first bytes (a text that does
    /// not cast to a number, a division by zero): the query's doing too.
    Invalid,
    /// The warehouse or a worker stopped answering, or the gateway is shutting down: worth a
    /// retry, not the query's fault.
    Unavailable,
    /// Anything else: encoding, the engine.
    Internal,
}

impl StreamError {
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: FailureKind::Internal,
        }
    }
}

/// A value the format cannot write is the query's to change (a 400 on `format`); an encoder
/// failure the gateway's.
impl From<encode::EncodeError> for QueryError {
    fn from(e: encode::EncodeError) -> Self {
        match e {
            encode::EncodeError::Unwritable(m) => QueryError::Invalid {
                message: m,
                position: None,
                parameter: Some("format"),
            },
            encode::EncodeError::Failed(m) => QueryError::Internal(m),
        }
    }
}

impl From<encode::EncodeError> for StreamError {
    fn from(e: encode::EncodeError) -> Self {
        let kind = match &e {
            encode::EncodeError::Unwritable(_) => FailureKind::Invalid,
            encode::EncodeError::Failed(_) => FailureKind::Internal,
        };
        Self {
            message: e.to_string(),
            kind,
        }
    }
}

impl From<QueryError> for StreamError {
    fn from(e: QueryError) -> Self {
        let kind = match &e {
            QueryError::Timeout(_) => FailureKind::Timeout,
            QueryError::Invalid { .. } => FailureKind::Invalid,
            QueryError::ShuttingDown
            | QueryError::StorageUnavailable(_)
            | QueryError::WorkerLost(_) => FailureKind::Unavailable,
            QueryError::MemoryLimit { .. }
            | QueryError::OverLimit(_)
            | QueryError::Panicked { overflow: true, .. } => FailureKind::OverLimit,
            _ => FailureKind::Internal,
        };
        Self {
            message: e.to_string(),
            kind,
        }
    }
}

/// A small result already in memory, encoded at once (no executor, no channel): the chunks of
/// its body and the rows they hold, under `cap` as [`stream_encoded`] applies it.
pub fn encode_now(
    schema: SchemaRef,
    batches: &[RecordBatch],
    format: Format,
    cap: RowCap,
) -> Result<(Vec<Bytes>, u64), QueryError> {
    let mut encoder = encode::encoder(format, schema).map_err(QueryError::from)?;
    let (mut chunks, mut seen, mut rows) = (Vec::new(), 0u64, 0u64);
    for batch in batches {
        let before = seen;
        seen += batch.num_rows() as u64;
        let keep = cap.rows.map_or(batch.num_rows() as u64, |limit| {
            limit.saturating_sub(before).min(batch.num_rows() as u64)
        });
        rows += keep;
        chunks.push(
            encoder
                .batch(&batch.slice(0, keep as usize))
                .map_err(QueryError::from)?,
        );
        if keep < batch.num_rows() as u64 {
            break;
        }
    }
    let more = cap.rows.is_some_and(|limit| seen > limit);
    let trailer = Trailer {
        row_count: rows,
        truncated: more && cap.truncate,
        next: if more { cap.next_if_more } else { None },
    };
    chunks.push(encoder.finish(&trailer).map_err(QueryError::from)?);
    chunks.retain(|c| !c.is_empty());
    Ok((chunks, rows))
}

/// What a streamed result is turned into as it leaves: the encoder of an HTTP body, or a
/// Flight stream's messages.
pub trait BatchSink: Send + 'static {
    /// One message on the wire.
    type Item: Send + 'static;
    /// The messages for `batch`, to send now; `queued` messages sent before are still waiting
    /// for the client to take them (0: the client is waiting for this one).
    fn batch(&mut self, batch: &RecordBatch, queued: usize)
    -> Result<Vec<Self::Item>, StreamError>;
    /// The closing messages.
    fn finish(&mut self, trailer: &Trailer) -> Result<Vec<Self::Item>, StreamError>;
    /// The bytes `item` puts on the wire (counted into the caller's daily bytes).
    fn size(item: &Self::Item) -> u64;
}

/// One piece of an HTTP body: the bytes that go on the wire and how many of the encoder's bytes
/// they carry (what is counted: a caller's daily bytes and the audit's `bytes_returned` do not
/// depend on the `Accept-Encoding` it sent).
#[derive(Debug, Clone)]
pub struct BodyChunk {
    pub wire: Bytes,
    pub plain: u64,
}

/// How a streamed body is coded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCoding {
    /// As the encoder writes it (a compression layer outside may still compress it).
    Identity,
    /// zstd frames written on the executor as the client takes them ([`crate::compression`]).
    Zstd,
}

/// An [`encode::Encoder`] as a sink of body chunks, in zstd frames when asked.
struct Chunks {
    encoder: Box<dyn encode::Encoder>,
    zstd: Option<ZstdFrames>,
}

/// A client with this many chunks of the body's channel (of [`STREAM_CHANNEL`]) not taken yet
/// is behind: its chunks are compressed. Fewer, and it keeps up (a chunk or so waits now and
/// then while the cores are busy, not because the link is slow): compressing would only slow it.
const BEHIND_AT_QUEUED: usize = STREAM_CHANNEL / 2;

impl Chunks {
    fn coded(&mut self, plain: Bytes, queued: usize) -> Result<Vec<BodyChunk>, String> {
        let wire = match &mut self.zstd {
            None => plain.clone(),
            Some(z) => z
                .frames(&plain, queued >= BEHIND_AT_QUEUED)
                .map_err(|e| e.to_string())?,
        };
        Ok(vec![BodyChunk {
            wire,
            plain: plain.len() as u64,
        }])
    }
}

impl BatchSink for Chunks {
    type Item = BodyChunk;

    fn batch(&mut self, batch: &RecordBatch, queued: usize) -> Result<Vec<BodyChunk>, StreamError> {
        let plain = self.encoder.batch(batch)?;
        self.coded(plain, queued).map_err(StreamError::internal)
    }

    fn finish(&mut self, trailer: &Trailer) -> Result<Vec<BodyChunk>, StreamError> {
        let plain = self.encoder.finish(trailer)?;
        if let Some(z) = &self.zstd {
            let (compressed, stored) = z.written();
            tracing::debug!(compressed, stored, "zstd frames of the body");
        }
        // The trailer is small: compressed whoever waits.
        self.coded(plain, 0).map_err(StreamError::internal)
    }

    fn size(item: &BodyChunk) -> u64 {
        item.plain
    }
}

/// Encodes `started` in `format`, batch by batch, into the returned channel, on `lane`, coded
/// as `coding` says. `on_end` is called once with what was sent and how it ended; `sent`
/// counts rows and encoded bytes as they leave.
pub fn stream_encoded(
    lane: &Lane,
    started: Started,
    format: Format,
    coding: BodyCoding,
    cap: RowCap,
    sent: Arc<Sent>,
    on_end: impl FnOnce(Report) + Send + 'static,
) -> Result<mpsc::Receiver<Result<BodyChunk, StreamError>>, QueryError> {
    let internal = |e: String| QueryError::Internal(e);
    let encoder = encode::encoder(format, started.schema.clone()).map_err(QueryError::from)?;
    let zstd = match coding {
        BodyCoding::Identity => None,
        BodyCoding::Zstd => Some(ZstdFrames::new().map_err(|e| internal(e.to_string()))?),
    };
    Ok(stream_into(
        lane,
        started,
        Chunks { encoder, zstd },
        cap,
        sent,
        on_end,
    ))
}

/// Messages a stream runs ahead of its client.
const STREAM_CHANNEL: usize = 4;

/// Batches the plan runs ahead of the encoding ([`Lane::run_ahead`]).
const RUN_AHEAD: usize = 2;

/// Turns `started` into `sink`'s messages, batch by batch, into the returned channel, on
/// `lane`: the same pump as [`stream_encoded`] (cancel on drop, deadline between batches, a
/// mid-stream error as the last item) for any wire format.
pub fn stream_into<S: BatchSink>(
    lane: &Lane,
    started: Started,
    sink: S,
    cap: RowCap,
    sent: Arc<Sent>,
    on_end: impl FnOnce(Report) + Send + 'static,
) -> mpsc::Receiver<Result<S::Item, StreamError>> {
    let (tx, rx) = mpsc::channel(STREAM_CHANNEL);
    let span = tracing::Span::current();
    let charged = lane.clone();
    let mut started = started;
    if !started.ended {
        started.stream = lane.run_ahead(started.stream, RUN_AHEAD);
    }
    lane.spawn(tracing::Instrument::instrument(
        async move {
            let mut report = catch_panic(pump(started, sink, cap, &tx, &sent))
                .await
                .unwrap_or_else(|e| Report {
                    outcome: Outcome::Failed(e.into()),
                    rows: sent.rows(),
                    bytes: sent.bytes(),
                    cpu_micros: 0,
                });
            report.cpu_micros = charged.cpu_time().as_micros() as u64;
            match &report.outcome {
                Outcome::Failed(e) => {
                    // A limit the query met (its time, its caps) is the caller's, not a fault
                    // of the gateway's.
                    if matches!(e.kind, FailureKind::Internal | FailureKind::Unavailable) {
                        tracing::error!(error = %e, rows = report.rows, "query failed mid-stream");
                    } else {
                        tracing::warn!(error = %e, rows = report.rows, "query failed mid-stream");
                    }
                    let _ = tx.send(Err(e.clone())).await;
                }
                Outcome::Disconnected => {
                    tracing::info!(rows = report.rows, "client went away; query cancelled")
                }
                Outcome::Completed => {}
            }
            on_end(report);
        },
        span,
    ));
    rx
}

async fn pump<S: BatchSink>(
    started: Started,
    mut encoder: S,
    cap: RowCap,
    tx: &mpsc::Sender<Result<S::Item, StreamError>>,
    sent: &Sent,
) -> Report {
    let Started {
        head,
        ended,
        mut stream,
        memory_limit,
        deadline,
        _in_flight,
        ..
    } = started;
    let mut report = Report {
        outcome: Outcome::Completed,
        rows: 0,
        bytes: 0,
        cpu_micros: 0,
    };
    let mut seen: u64 = 0;
    let send = |items: Vec<S::Item>, report: &mut Report| {
        let n: u64 = items.iter().map(S::size).sum();
        let tx = tx.clone();
        report.bytes += n;
        sent.add_bytes(n);
        async move {
            for item in items {
                if S::size(&item) > 0 && tx.send(Ok(item)).await.is_err() {
                    return false;
                }
            }
            true
        }
    };
    // `start` already read the stream's first items, and maybe its end.
    let stream_ended = ended;
    let mut head = head.into_iter();
    loop {
        let batch = match head.next() {
            Some(b) => Some(b),
            None if stream_ended => None,
            None => {
                // A timeout only fires while waiting; a stream that is always ready is checked
                // against the clock between batches.
                if deadline.is_some_and(|d| Instant::now() >= d.at) {
                    report.outcome = Outcome::Failed(
                        QueryError::Timeout(deadline.map_or(0, |d| d.limit_ms)).into(),
                    );
                    return report;
                }
                let wait = async {
                    match deadline {
                        Some(d) => tokio::time::timeout_at(d.at, stream.next()).await.ok(),
                        None => Some(stream.next().await),
                    }
                };
                tokio::select! {
                    r = wait => match r {
                        None => {
                            report.outcome = Outcome::Failed(
                                QueryError::Timeout(deadline.map_or(0, |d| d.limit_ms)).into(),
                            );
                            return report;
                        }
                        Some(None) => None,
                        Some(Some(Ok(b))) => Some(b),
                        Some(Some(Err(e))) => {
                            let e = QueryError::from_datafusion(e, memory_limit);
                            report.outcome = Outcome::Failed(e.into());
                            return report;
                        }
                    },
                    _ = tx.closed() => {
                        report.outcome = Outcome::Disconnected;
                        return report;
                    }
                }
            }
        };
        // An empty result ends here; `finish` still writes its head (columns, header, schema).
        let Some(mut batch) = batch else {
            break;
        };
        seen += batch.num_rows() as u64;
        let mut over = false;
        if let Some(limit) = cap.rows
            && seen > limit
        {
            let keep = batch.num_rows() as u64 - (seen - limit);
            batch = batch.slice(0, keep as usize);
            over = true;
        }
        report.rows += batch.num_rows() as u64;
        sent.add_rows(batch.num_rows() as u64);
        let queued = tx.max_capacity() - tx.capacity();
        let bytes = match encoder.batch(&batch, queued) {
            Ok(b) => b,
            Err(e) => {
                report.outcome = Outcome::Failed(e);
                return report;
            }
        };
        if !send(bytes, &mut report).await {
            report.outcome = Outcome::Disconnected;
            return report;
        }
        if over {
            break;
        }
    }
    let more = cap.rows.is_some_and(|limit| seen > limit);
    let trailer = Trailer {
        row_count: report.rows,
        truncated: more && cap.truncate,
        next: if more { cap.next_if_more.clone() } else { None },
    };
    // Dropping the stream here stops the query even when rows beyond the cap were coming.
    drop(stream);
    match encoder.finish(&trailer) {
        Ok(bytes) => {
            if !send(bytes, &mut report).await {
                report.outcome = Outcome::Disconnected;
            }
        }
        Err(e) => report.outcome = Outcome::Failed(e),
    }
    report
}

/// `EXPLAIN` output without the warehouse's file names (`file_groups={N groups: [...]}`).
fn hide_files(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let hidden = stream.map(|batch| {
        let batch = batch?;
        let columns = batch
            .columns()
            .iter()
            .map(|c| match c.as_string_opt::<i32>() {
                Some(text) => Arc::new(
                    text.iter()
                        .map(|v| v.map(without_files))
                        .collect::<StringArray>(),
                ) as ArrayRef,
                None => c.clone(),
            })
            .collect();
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, hidden))
}

/// `text` with every `file_groups={...}` listing reduced to its group count.
fn without_files(text: &str) -> String {
    const MARK: &str = "file_groups={";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let body = &rest[at + MARK.len()..];
        // The listing ends at the brace that closes the one opened by the mark.
        let mut depth = 1usize;
        let mut end = body.len();
        for (i, ch) in body.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let count = body[..end].split(':').next().unwrap_or("").trim();
        out.push_str(&rest[..at]);
        out.push_str(MARK);
        out.push_str(count);
        out.push_str(": [files hidden]}");
        rest = body.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::QueryExecutor;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datagate_core::config::{QueryConfig, QueryPool};

    /// Narrow rows keep the session's batch size; wide ones get about 32 MiB decoded a batch,
    /// one row at least.
    #[test]
    fn wide_rows_get_short_batches() {
        // Market entities: about 110 bytes a row as stored.
        assert_eq!(batch_rows_for(110, 8192), 8192);
        // Documents of 100 KB stored as 75 KB: 111 rows of ~300 KB reckoned.
        assert_eq!(batch_rows_for(75_000, 8192), 111);
        assert_eq!(batch_rows_for(40 << 20, 8192), 1);
        assert_eq!(batch_rows_for(0, 8192), 8192);
        assert_eq!(batch_rows_for(1000, 16), 16);
    }

    /// `n` batches of 20,000 rows whose CSV compresses well (about 280 KB each).
    fn batches(n: usize) -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("stop", DataType::Utf8, false),
        ]));
        let batches = (0..n)
            .map(|b| {
                let ids = (0..20_000).map(|i| (b * 20_000 + i) as i64);
                let stops: StringArray = (0..20_000)
                    .map(|i| Some(format!("stop {}", i % 97)))
                    .collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(stops)],
                )
                .unwrap()
            })
            .collect();
        (schema, batches)
    }

    /// The body `stream_encoded` sends for `n` batches in `coding`, taken by a client that waits
    /// `pause` before each chunk: (wire bytes, the bytes the chunks say they carry, the body
    /// decoded).
    async fn body(
        n: usize,
        coding: BodyCoding,
        pause: std::time::Duration,
    ) -> (usize, u64, Vec<u8>) {
        body_by(n, coding, pause, None).await
    }

    /// [`body`] for a result whose deadline is `deadline`.
    async fn body_by(
        n: usize,
        coding: BodyCoding,
        pause: std::time::Duration,
        deadline: Option<Deadline>,
    ) -> (usize, u64, Vec<u8>) {
        let executor = QueryExecutor::new(&QueryConfig::default()).unwrap();
        let lane = executor.lane(QueryPool::Reserved, "test", None);
        let (schema, batches) = batches(n);
        let started = Started::from_batches(schema, batches, u64::MAX, deadline);
        let sent = Arc::new(Sent::default());
        let mut rx = stream_encoded(
            &lane,
            started,
            Format::CSV,
            coding,
            RowCap::default(),
            sent.clone(),
            |_| {},
        )
        .unwrap();
        let (mut wire, mut plain) = (Vec::new(), 0);
        loop {
            tokio::time::sleep(pause).await;
            let Some(chunk) = rx.recv().await else { break };
            let chunk = chunk.unwrap();
            wire.extend_from_slice(&chunk.wire);
            plain += chunk.plain;
        }
        assert_eq!(sent.bytes(), plain, "`sent` counts the encoder's bytes");
        let decoded = match coding {
            BodyCoding::Identity => wire.clone(),
            BodyCoding::Zstd => zstd::stream::decode_all(&wire[..]).unwrap(),
        };
        let lines = decoded.iter().filter(|b| **b == b'\n').count() as u64;
        assert_eq!(
            sent.rows(),
            lines - 1,
            "`sent` counts the rows (lines under the header)"
        );
        executor.shutdown();
        (wire.len(), plain, decoded)
    }

    #[tokio::test]
    async fn a_client_slower_than_the_encoder_gets_compressed_frames() {
        let (plain_len, plain, csv) = body(16, BodyCoding::Identity, Default::default()).await;
        assert_eq!(plain_len as u64, plain);
        // The client takes each chunk only after the encoder has filled the channel: every
        // chunk but the first two is compressed while it waits.
        let (wire, counted, decoded) =
            body(16, BodyCoding::Zstd, std::time::Duration::from_millis(40)).await;
        assert_eq!(decoded, csv);
        assert_eq!(
            counted, plain,
            "the encoder's bytes are counted, not the wire's"
        );
        assert!(
            wire * 4 < plain_len,
            "{wire} bytes on the wire for {plain_len} of CSV"
        );
        // A client that takes chunks at once gets the same body, however it was coded.
        let (_, counted, decoded) = body(16, BodyCoding::Zstd, Default::default()).await;
        assert_eq!((decoded, counted), (csv, plain));
    }

    /// A page already in memory goes out whole to a client slower than its deadline: the
    /// deadline bounds the query's work, and there is none left.
    #[tokio::test]
    async fn a_result_in_memory_is_not_cut_by_its_deadline() {
        let (_, _, whole) = body(8, BodyCoding::Identity, Default::default()).await;
        let deadline = Deadline::after(std::time::Duration::from_millis(50));
        let (_, _, slow) = body_by(
            8,
            BodyCoding::Identity,
            std::time::Duration::from_millis(30),
            Some(deadline),
        )
        .await;
        assert!(
            Instant::now() > deadline.at,
            "the client outlived the deadline"
        );
        assert_eq!(slow.len(), whole.len());
        assert!(slow == whole, "the slow client got the whole body");
    }

    #[test]
    fn explain_listings_lose_their_file_names() {
        let plan = "DataSourceExec: file_groups={2 groups: [[data/warehouse/a/v1/p-0.parquet:0..10], \
                    [data/warehouse/a/v1/p-1.parquet]]}, projection=[x], file_type=parquet";
        let hidden = without_files(plan);
        assert_eq!(
            hidden,
            "DataSourceExec: file_groups={2 groups: [files hidden]}, projection=[x], \
             file_type=parquet"
        );
        assert_eq!(
            without_files("ProjectionExec: expr=[x]"),
            "ProjectionExec: expr=[x]"
        );
    }
}
