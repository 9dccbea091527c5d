//! An export decoded on every worker of its pool, its rows still in storage order.
//!
//! An export comes in the order its rows were published (a download of an hourly feed holds its
//! hours in turn), so its plan reads the version's files as one partition, and a partition is
//! decoded on one core. Here that plan's scan is cut into units of consecutive rows (at most
//! `query.export_unit_rows`, [`UNIT_ROWS`] by default, of one file each: a Parquet row
//! selection, whose pages outside it the reader skips by the file's offset index) and each unit
//! becomes a partition of its own. [`InOrder::stream`] runs the partitions a few at a time, each
//! in a task of the lane, and hands their batches on unit after unit: the rows and their order
//! are the one-partition plan's, while the next units are already being decoded on the other
//! cores. The gateway does this for Arrow exports, whose encoding is cheap beside decoding; a
//! CSV, JSON or Parquet encoder takes a core at a lower rate than one core decodes, and units
//! would only add their cost (dictionary pages decoded again per unit, more readers).
//!
//! Only a plan that is a chain of per-row operators (projections, as masking and `select` make
//! them, and filters, as `where` makes them) over one single-partition Parquet scan is cut:
//! anything else (a limit, a sort, another table) keeps its plan. What waits to be handed on is
//! bounded in bytes whatever the rows' width: two batches of the unit being handed on, and
//! [`AHEAD_BYTES`] of decoded batches of the units after it (a unit finding that full waits,
//! until its turn comes), or half the query's memory limit when that is less. What waits is
//! reserved in the query's memory pool, as the batches a repartition holds are.

use crate::catalog_provider::TableSnapshot;
use crate::executor::Lane;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, ParquetRowSelection};
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

/// Rows of a unit by default: a quarter of a row group as ingest writes them (262,144 rows), so units
/// do not straddle row groups, and few enough that the units in flight hold a few tens of MB.
pub const UNIT_ROWS: u64 = 65_536;

/// What an export's plan needs to be cut into units: the rows of each file of the version it
/// reads, and the lane its units run on.
#[derive(Clone)]
pub struct InOrder {
    lane: Lane,
    /// Rows of each file of the version, by its path in the object store.
    file_rows: Arc<HashMap<String, u64>>,
    unit_rows: u64,
    ahead_bytes: usize,
}

impl InOrder {
    /// For an export of `snapshot`'s version, its units run on `lane`.
    pub fn new(lane: Lane, snapshot: &TableSnapshot) -> Self {
        let file_rows = snapshot
            .file_urls
            .iter()
            .zip(&snapshot.file_rows)
            .filter_map(|(url, rows)| {
                let path = ListingTableUrl::parse(url).ok()?.prefix().to_string();
                Some((path, *rows))
            })
            .collect();
        Self {
            lane,
            file_rows: Arc::new(file_rows),
            unit_rows: UNIT_ROWS,
            ahead_bytes: AHEAD_BYTES,
        }
    }

    /// Units of `rows` rows instead of [`UNIT_ROWS`] (tests cut small files).
    pub fn with_unit_rows(mut self, rows: u64) -> Self {
        self.unit_rows = rows.max(1);
        self
    }

    /// At most `bytes` of decoded batches waiting in the units after the first, instead of
    /// [`AHEAD_BYTES`] (tests make units wait).
    pub fn with_ahead_bytes(mut self, bytes: usize) -> Self {
        self.ahead_bytes = bytes.max(1024);
        self
    }

    /// The partitions of `plan` (cut by [`InOrder::split`]) decoded a few at a time in tasks of
    /// the lane, one per worker of its pool and one more (so a worker that finishes its unit
    /// finds the next one waiting), their batches handed on partition after partition.
    /// Dropping the stream stops the units; an error in one comes out of the stream in its
    /// place and ends it, a panic is resumed in whoever reads the stream.
    pub fn stream(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
    ) -> SendableRecordBatchStream {
        stream(
            plan,
            task,
            &self.lane,
            self.lane.threads() + 1,
            self.ahead_bytes,
        )
    }

    /// `plan` with its scan cut into units, one partition each, in storage order; `None` when
    /// the plan is not a chain of per-row operators over one single-partition Parquet scan of
    /// known files, or when its rows make one unit.
    pub fn split(&self, plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
        let split = self.split_node(plan)?;
        // Every node kept its input's partitions: the root has one per unit.
        (split.output_partitioning().partition_count() > 1).then_some(split)
    }

    fn split_node(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
        let any: &dyn ExecutionPlan = node.as_ref();
        if let Some(scan) = any.downcast_ref::<DataSourceExec>() {
            return self.split_scan(scan);
        }
        let per_row =
            any.is::<ProjectionExec>() || any.is::<FilterExec>() || any.is::<CooperativeExec>();
        let [child] = node.children()[..] else {
            return None;
        };
        // A limit folded into a node would apply per unit.
        if !per_row || node.fetch().is_some() {
            return None;
        }
        let child = self.split_node(child)?;
        let units = child.output_partitioning().partition_count();
        // Properties recomputed: the partitioning is the new child's.
        let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
        let rebuilt = Arc::clone(node)
            .replace_children(vec![child], recompute)
            .ok()?;
        (rebuilt.output_partitioning().partition_count() == units).then_some(rebuilt)
    }

    fn split_scan(&self, scan: &DataSourceExec) -> Option<Arc<dyn ExecutionPlan>> {
        let (config, parquet) = scan.downcast_to_file_source::<ParquetSource>()?;
        let [group] = &config.file_groups[..] else {
            return None;
        };
        if config.limit.is_some() || scan.properties().partitioning.partition_count() != 1 {
            return None;
        }
        let mut units = Vec::new();
        for file in group.iter() {
            // A file already narrowed (a byte range, an access plan) is not cut again.
            if file.range.is_some()
                || file.extensions.get::<ParquetAccessPlan>().is_some()
                || file.extensions.get::<ParquetRowSelection>().is_some()
            {
                return None;
            }
            let rows = *self.file_rows.get(file.object_meta.location.as_ref())?;
            units.extend(self.units_of(file, rows));
        }
        if units.len() < 2 {
            return None;
        }
        let mut builder = FileScanConfigBuilder::from(config.clone());
        if let Some(factory) = parquet.parquet_file_reader_factory() {
            let factory = Arc::new(WithPageIndex(Arc::clone(factory)));
            let source = parquet.clone().with_parquet_file_reader_factory(factory);
            builder = builder.with_source(Arc::new(source));
        }
        let config: FileScanConfig = builder
            // Each partition reads its own unit: none may take another's (work stealing).
            .with_preserve_order(true)
            .with_file_groups(units.into_iter().map(|f| FileGroup::new(vec![f])).collect())
            .build();
        Some(DataSourceExec::from_data_source(config))
    }

    /// `file` as units of at most `unit_rows` of its `rows`, in order.
    fn units_of(&self, file: &PartitionedFile, rows: u64) -> Vec<PartitionedFile> {
        if rows <= self.unit_rows {
            return vec![file.clone()];
        }
        let mut units = Vec::new();
        let mut start = 0;
        while start < rows {
            let take = self.unit_rows.min(rows - start);
            let selectors = [
                RowSelector::skip(start as usize),
                RowSelector::select(take as usize),
                RowSelector::skip((rows - start - take) as usize),
            ];
            let selection: RowSelection = selectors
                .into_iter()
                .filter(|s| s.row_count > 0)
                .collect::<Vec<_>>()
                .into();
            units.push(
                file.clone()
                    .with_extension(ParquetRowSelection::new(selection)),
            );
            start += take;
        }
        units
    }
}

/// Readers whose file metadata carries the page index, its offset index above all: a unit's row
/// selection then fetches and decompresses only its own pages, where without it every unit of
/// a row group would fetch the group's whole column chunks (and skip the others' pages). The
/// metadata is kept with its page index in DataFusion's cache, as its own readers keep it.
#[derive(Debug)]
struct WithPageIndex(Arc<dyn ParquetFileReaderFactory>);

impl ParquetFileReaderFactory for WithPageIndex {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>, DataFusionError> {
        let inner = self.0.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(PageIndexed(inner)))
    }
}

struct PageIndexed(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for PageIndexed {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let options = options
            .cloned()
            .unwrap_or_default()
            .with_page_index_policy(PageIndexPolicy::Optional);
        async move { self.0.get_metadata(Some(&options)).await }.boxed()
    }
}

/// Decoded bytes the units after the one being handed on may hold, waiting their turn (beside
/// it, whose batches wait only two at a time): a unit of long rows then waits rather
/// than decode all of itself ahead.
pub const AHEAD_BYTES: usize = 32 << 20;

/// Batches the unit being handed on may decode ahead of its reader.
const FIRST_AHEAD: usize = 2;

/// See [`InOrder::stream`]: `window` units at once, `ahead_bytes` waiting after the first.
fn stream(
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    lane: &Lane,
    window: usize,
    ahead_bytes: usize,
) -> SendableRecordBatchStream {
    let schema = plan.schema();
    // What waits is the query's memory too: at most half its limit, the rest left to the
    // batches being read and encoded.
    let pool = Arc::clone(task.memory_pool());
    let ahead_bytes = match pool.memory_limit() {
        MemoryLimit::Finite(limit) => ahead_bytes.min(limit / 2),
        MemoryLimit::Infinite | MemoryLimit::Unknown => ahead_bytes,
    };
    let kib = u32::try_from(ahead_bytes / 1024).unwrap_or(u32::MAX).max(1);
    let units = Units {
        count: plan.output_partitioning().partition_count(),
        plan,
        task,
        lane: lane.clone(),
        window: window.max(1),
        next: 0,
        running: VecDeque::new(),
        ahead: Arc::new(Ahead {
            kib: Arc::new(Semaphore::new(kib as usize)),
            kib_total: kib,
            first: AtomicUsize::new(0),
            moved: Notify::new(),
            memory: MemoryConsumer::new("export units").register(&pool),
        }),
        done: false,
    };
    let batches = futures::stream::unfold(units, |mut units| async move {
        let item = units.next_batch().await?;
        units.done = item.is_err();
        Some((item, units))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

type Item = Result<RecordBatch, DataFusionError>;

/// What the units may hold ahead of their reader.
struct Ahead {
    /// KiB of decoded batches the units after the first may still take (of `ahead_bytes`).
    kib: Arc<Semaphore>,
    kib_total: u32,
    /// The unit being handed on.
    first: AtomicUsize,
    /// Told when `first` moves on.
    moved: Notify,
    /// The batches waiting, in the query's memory pool.
    memory: MemoryReservation,
}

/// What a batch waiting to be handed on holds until its reader takes it: its share of the
/// bytes allowed ahead (or of its unit's two batches) and its bytes in the memory pool.
struct Held {
    _permit: OwnedSemaphorePermit,
    _memory: MemoryReservation,
}

impl Ahead {
    /// Waits until unit `me` may hold `batch` until its reader takes it: the unit being handed
    /// on, when it holds fewer than `FIRST_AHEAD` batches (`own`); any other unit, while
    /// the batches waiting stay within the bytes allowed — or once it is the first. What it
    /// holds goes with the batch; `None` when the stream is gone.
    async fn hold(&self, me: usize, own: &Arc<Semaphore>, batch: &RecordBatch) -> Option<Held> {
        let bytes = batch.get_array_memory_size();
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.kib_total);
        let permit = loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.first.load(Ordering::Acquire) == me {
                break Arc::clone(own).acquire_owned().await.ok()?;
            }
            tokio::select! {
                permit = Arc::clone(&self.kib).acquire_many_owned(kib) => break permit.ok()?,
                _ = &mut moved => {}
            }
        };
        // Bounded by the permits above: counted, not refused (a batch already decoded is held
        // either way; the pool's other consumers see it).
        let memory = self.memory.new_empty();
        memory.grow(bytes);
        Some(Held {
            _permit: permit,
            _memory: memory,
        })
    }
}

struct Units {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    lane: Lane,
    count: usize,
    window: usize,
    /// The next partition to start.
    next: usize,
    /// The partitions started and not yet handed on whole, in order.
    running: VecDeque<Unit>,
    ahead: Arc<Ahead>,
    /// An error was handed on: nothing follows it.
    done: bool,
}

/// A partition read to its end in a task of its own, its batches waiting in `rx` with what
/// they hold of [`Ahead`].
struct Unit {
    rx: mpsc::UnboundedReceiver<(Item, Option<Held>)>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Unit {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Units {
    async fn next_batch(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        loop {
            while self.running.len() < self.window && self.next < self.count {
                let unit = self.start(self.next);
                self.running.push_back(unit);
                self.next += 1;
            }
            let unit = self.running.front_mut()?;
            if let Some((item, _held)) = unit.rx.recv().await {
                return Some(item);
            }
            // The unit's task has ended: whole, or by a panic or cancelled (the pool shutting
            // down), neither of which may pass for an end. A panic goes on to whoever reads the
            // stream (as a wider plan's partitions do).
            if let Some(task) = unit.task.take()
                && let Err(e) = task.await
            {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
                return Some(Err(DataFusionError::Execution(
                    "the export stopped before its end: the gateway is shutting down".into(),
                )));
            }
            self.running.pop_front();
            self.ahead.first.fetch_add(1, Ordering::AcqRel);
            self.ahead.moved.notify_waiters();
        }
    }

    fn start(&self, partition: usize) -> Unit {
        let (tx, rx) = mpsc::unbounded_channel();
        let (plan, task) = (Arc::clone(&self.plan), Arc::clone(&self.task));
        let ahead = Arc::clone(&self.ahead);
        let own = Arc::new(Semaphore::new(FIRST_AHEAD));
        let work = async move {
            let mut batches = match plan.execute(partition, task) {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = tx.send((Err(e), None));
                    return;
                }
            };
            while let Some(item) = batches.next().await {
                let held = match &item {
                    Ok(batch) => match ahead.hold(partition, &own, batch).await {
                        Some(permit) => Some(permit),
                        None => return,
                    },
                    Err(_) => None,
                };
                let failed = item.is_err();
                if tx.send((item, held)).is_err() || failed {
                    return;
                }
            }
        };
        Unit {
            rx,
            task: Some(self.lane.spawn(work)),
        }
    }
}
