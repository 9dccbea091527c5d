//! `audit.events` as a DataFusion table: the Parquet files of converted segments plus the
//! records of segments not converted yet — the open one, decoded incrementally from where the
//! last query stopped and kept, and the one sealed last, kept decoded until its Parquet copy
//! lands; any older sealed ones the converter has not reached (a backlog after an upgrade) are
//! streamed one segment at a time.
//!
//! Filters on `seq` and `ts` prune whole segments and day files before any file is opened (a
//! streamed segment's seq range is read off its first and last lines); every filter also goes
//! down to the Parquet scan (row groups and pages by statistics), and DataFusion applies it
//! exactly above. Memory per query is the query's own (bounded by the session's memory pool)
//! plus the kept decoded segments, at most [`KEPT_SEGMENTS`] of `audit.segment_max_bytes` each.

use crate::columnar::ColumnarIndex;
use crate::reader;
use crate::segment::{first_seq, last_seq, list_segments, split_lines};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::union::UnionExec;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Small batches the open segment's decoded prefix may end in before they are merged.
const MAX_SMALL_BATCHES: usize = 16;
/// A batch of the decoded prefix with this many rows is no longer merged.
const MERGED_ROWS: usize = 4096;

/// Unconverted segments kept decoded between queries: the open one and the one sealed last.
/// Without the second, every query between a seal and the end of that segment's conversion
/// (which waits for idle cores, so minutes under a saturating load) decoded the whole sealed
/// segment again: ~1 s of CPU and a few hundred MiB each (seen in a soak as p99 spikes to 2 s).
pub const KEPT_SEGMENTS: usize = 2;

/// Decoded records of one unconverted segment, kept between queries.
#[derive(Debug, Default)]
struct Decoded {
    /// Bytes of the segment decoded so far (whole lines).
    offset: u64,
    batches: Vec<RecordBatch>,
    /// The first and last `seq` decoded so far.
    seqs: Option<(u64, u64)>,
}

/// What one query reads: Parquet files, records of unconverted segments kept decoded, sealed
/// segments not converted yet (streamed), and in a cluster the other gateways' archived
/// Parquet files.
struct Sources {
    files: Vec<String>,
    peer_files: Vec<String>,
    backlog: Vec<PathBuf>,
    decoded: Vec<RecordBatch>,
}

/// The table `audit.events` of the log in one directory.
#[derive(Debug)]
pub struct EventsTable {
    index: Arc<ColumnarIndex>,
    /// By segment number; at most [`KEPT_SEGMENTS`].
    kept: Mutex<BTreeMap<u64, Decoded>>,
    /// Lines of JSON segments decoded by queries so far.
    lines_decoded: Arc<AtomicU64>,
    /// Bytes of the kept decoded records, as of the last query.
    decoded_bytes: AtomicU64,
    /// The other gateways' logs, in a cluster with an archive.
    peers: Mutex<Option<Arc<crate::peers::PeerLogs>>>,
}

/// Inclusive bounds on `seq` and on `ts` (nanoseconds) read off a query's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub seq: (u64, u64),
    pub ts: (i64, i64),
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            seq: (0, u64::MAX),
            ts: (i64::MIN, i64::MAX),
        }
    }
}

impl Bounds {
    /// The bounds the conjunctions in `filters` imply (others are ignored: they only narrow).
    pub fn of(filters: &[Expr]) -> Self {
        let mut b = Self::default();
        for f in filters {
            b.narrow(f);
        }
        b
    }

    fn narrow(&mut self, e: &Expr) {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
            if let Expr::Between(between) = e
                && !between.negated
                && let Expr::Column(c) = between.expr.as_ref()
            {
                let (lo, hi) = (between.low.as_ref(), between.high.as_ref());
                if let (Expr::Literal(lo, _), Expr::Literal(hi, _)) = (lo, hi) {
                    self.apply(&c.name, Operator::GtEq, lo);
                    self.apply(&c.name, Operator::LtEq, hi);
                }
            }
            return;
        };
        if *op == Operator::And {
            self.narrow(left);
            self.narrow(right);
            return;
        }
        match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) => self.apply(&c.name, *op, v),
            (Expr::Literal(v, _), Expr::Column(c)) => {
                if let Some(op) = op.swap() {
                    self.apply(&c.name, op, v)
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, column: &str, op: Operator, v: &ScalarValue) {
        match column {
            "seq" => {
                let v = match v {
                    ScalarValue::UInt64(Some(v)) => *v as i128,
                    ScalarValue::Int64(Some(v)) => *v as i128,
                    ScalarValue::Int32(Some(v)) => *v as i128,
                    ScalarValue::UInt32(Some(v)) => *v as i128,
                    _ => return,
                };
                let (lo, hi) = narrow(self.seq.0 as i128, self.seq.1 as i128, op, v);
                let clamp = |x: i128| x.clamp(0, u64::MAX as i128) as u64;
                self.seq = (clamp(lo), clamp(hi));
            }
            "ts" => {
                let v = match v {
                    ScalarValue::TimestampNanosecond(Some(v), _) => *v as i128,
                    ScalarValue::TimestampMicrosecond(Some(v), _) => *v as i128 * 1_000,
                    ScalarValue::TimestampMillisecond(Some(v), _) => *v as i128 * 1_000_000,
                    ScalarValue::TimestampSecond(Some(v), _) => *v as i128 * 1_000_000_000,
                    _ => return,
                };
                let (lo, hi) = narrow(self.ts.0 as i128, self.ts.1 as i128, op, v);
                let clamp = |x: i128| x.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
                self.ts = (clamp(lo), clamp(hi));
            }
            _ => {}
        }
    }

    /// Whether a day (UTC) may hold rows within the `ts` bounds.
    pub fn has_day(&self, day: NaiveDate) -> bool {
        let start = day
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_utc().timestamp_nanos_opt());
        let end = day
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|t| t.and_utc().timestamp_nanos_opt());
        start.is_none_or(|s| s <= self.ts.1) && end.is_none_or(|e| e > self.ts.0)
    }

    /// Whether a seq range may hold rows within the `seq` bounds.
    pub fn has_seqs(&self, first: u64, last: u64) -> bool {
        first <= self.seq.1 && last >= self.seq.0
    }
}

/// Sealed JSON segments read as a stream, one segment decoded at a time.
#[derive(Debug)]
struct SegmentStream {
    paths: Vec<PathBuf>,
    lines_decoded: Arc<AtomicU64>,
}

impl PartitionStream for SegmentStream {
    fn schema(&self) -> &SchemaRef {
        static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(reader::events_schema)
    }

    fn execute(
        &self,
        _ctx: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::execution::SendableRecordBatchStream {
        let lines_decoded = self.lines_decoded.clone();
        let batches = futures::stream::iter(self.paths.clone()).map(move |path| {
            std::fs::read(&path)
                .map_err(crate::AuditError::from)
                .and_then(|data| {
                    let (lines, _) = split_lines(&data);
                    let (batch, _) = reader::batch_of_lines(lines.into_iter().map(|(_, l)| l))?;
                    lines_decoded.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    Ok(batch)
                })
                .map_err(|e| DataFusionError::External(Box::new(e)))
        });
        Box::pin(RecordBatchStreamAdapter::new(
            reader::events_schema(),
            batches,
        ))
    }
}

/// Inclusive bounds `lo..=hi` narrowed by `column <op> v` (integers: `>` and `<` move by one).
fn narrow(lo: i128, hi: i128, op: Operator, v: i128) -> (i128, i128) {
    match op {
        Operator::Eq => (lo.max(v), hi.min(v)),
        Operator::Gt => (lo.max(v + 1), hi),
        Operator::GtEq => (lo.max(v), hi),
        Operator::Lt => (lo, hi.min(v - 1)),
        Operator::LtEq => (lo, hi.min(v)),
        _ => (lo, hi),
    }
}

/// Decodes the lines appended to a kept segment since the last query (whole lines only).
fn decode_more(d: &mut Decoded, path: &Path, lines_decoded: &AtomicU64) -> crate::Result<()> {
    // Up to the zeroes laid ahead of the records, not through them.
    let data = crate::segment::read_records_from(path, d.offset)?;
    let (lines, end) = split_lines(&data);
    if lines.is_empty() {
        return Ok(());
    }
    let (batch, seqs) = reader::batch_of_lines(lines.into_iter().map(|(_, l)| l))?;
    lines_decoded.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
    if let Some((first, last)) = seqs {
        d.seqs = Some((d.seqs.map_or(first, |s| s.0), last));
    }
    d.batches.push(batch);
    d.offset += end as u64;
    // Queries a few records apart each add a batch of a few rows, whose buffers cost far more
    // than the rows: the small batches at the end are merged once there are more than a
    // handful (a merged batch stops growing at MERGED_ROWS).
    let small = d
        .batches
        .iter()
        .rev()
        .take_while(|b| b.num_rows() < MERGED_ROWS)
        .count();
    if small > MAX_SMALL_BATCHES {
        let at = d.batches.len() - small;
        let one = arrow::compute::concat_batches(&d.batches[at].schema(), &d.batches[at..])
            .map_err(|e| crate::AuditError::Invalid(format!("merging audit batches: {e}")))?;
        d.batches.truncate(at);
        d.batches.push(one);
    }
    Ok(())
}

/// Whether a sealed segment may hold records within `bounds`' seq range (read off its first
/// and last lines; when either cannot be read, it may).
fn may_hold(path: &Path, bounds: &Bounds) -> crate::Result<bool> {
    if bounds.seq == Bounds::default().seq {
        return Ok(true);
    }
    Ok(match (first_seq(path)?, last_seq(path)?) {
        (Some(first), Some(last)) => bounds.has_seqs(first, last),
        _ => true,
    })
}

impl EventsTable {
    pub fn new(index: Arc<ColumnarIndex>) -> Self {
        Self {
            index,
            kept: Mutex::new(BTreeMap::new()),
            lines_decoded: Arc::default(),
            decoded_bytes: AtomicU64::new(0),
            peers: Mutex::new(None),
        }
    }

    /// Lines of JSON segments (unconverted ones) decoded by queries so far: what the Parquet
    /// copy and the kept decoded segments save.
    pub fn lines_decoded(&self) -> u64 {
        self.lines_decoded.load(Ordering::Relaxed)
    }

    /// Bytes the kept decoded records of unconverted segments hold (as of the last query):
    /// at most [`KEPT_SEGMENTS`] segments' worth.
    pub fn decoded_bytes(&self) -> u64 {
        self.decoded_bytes.load(Ordering::Relaxed)
    }

    /// Reads the other gateways' archived records too (a cluster).
    pub fn set_peers(&self, peers: Arc<crate::peers::PeerLogs>) {
        *self.peers.lock().unwrap_or_else(|p| p.into_inner()) = Some(peers);
    }

    /// What a query reads, taken as one consistent picture of a log that keeps moving: the
    /// segment files are listed first and the converted ones read after, so a segment the
    /// converter finishes in between is read from Parquet, one sealed in between is still read
    /// from its JSON lines, and no record is read twice or missed. Kept decoded records are
    /// taken under one lock with the listing, so a concurrent query's eviction cannot split a
    /// segment between two sources.
    fn sources(&self, bounds: &Bounds) -> crate::Result<Sources> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let listed = list_segments(self.index.dir())?;
        let converted = self.index.snapshot();
        let converted_ids: std::collections::HashSet<u64> =
            converted.iter().map(|m| m.segment).collect();
        let is_converted = |i: u64| converted_ids.contains(&i);
        let dir = self.index.dir();
        let files = converted
            .iter()
            .filter(|m| !m.archived && bounds.has_seqs(m.first_seq, m.last_seq))
            .flat_map(|m| m.files.iter())
            .filter(|f| bounds.has_day(f.day) && bounds.has_seqs(f.first_seq, f.last_seq))
            .map(|f| dir.join(&f.path).to_string_lossy().into_owned())
            .collect();
        // Converted segments are read from Parquet from now on.
        kept.retain(|segment, _| !is_converted(*segment));
        let unconverted: Vec<(u64, PathBuf)> = listed
            .into_iter()
            .filter(|(i, _)| !is_converted(*i))
            .collect();
        let newest = unconverted.last().map(|(i, _)| *i);
        let (mut backlog, mut decoded) = (Vec::new(), Vec::new());
        for (segment, path) in unconverted {
            // The newest unconverted segment (the open one, or one sealed since the listing)
            // starts being kept unless a newer one already is (this query listed just before a
            // seal); older ones are read from what is kept, or streamed.
            let keep = kept.contains_key(&segment)
                || (Some(segment) == newest
                    && kept.keys().next_back().is_none_or(|k| *k < segment));
            if keep {
                let d = kept.entry(segment).or_default();
                decode_more(d, &path, &self.lines_decoded)?;
                if d.seqs
                    .is_some_and(|(first, last)| bounds.has_seqs(first, last))
                {
                    decoded.extend(d.batches.iter().filter(|b| b.num_rows() > 0).cloned());
                }
            } else if may_hold(&path, bounds)? {
                backlog.push(path);
            }
        }
        while kept.len() > KEPT_SEGMENTS {
            kept.pop_first();
        }
        let held: usize = kept
            .values()
            .flat_map(|d| d.batches.iter())
            .map(RecordBatch::get_array_memory_size)
            .sum();
        self.decoded_bytes.store(held as u64, Ordering::Relaxed);
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(Sources {
            files,
            peer_files: peers.map(|p| p.files(bounds)).unwrap_or_default(),
            backlog,
            decoded,
        })
    }

    fn listing(&self, files: Vec<String>) -> DfResult<Option<ListingTable>> {
        if files.is_empty() {
            return Ok(None);
        }
        let urls = files
            .iter()
            .map(ListingTableUrl::parse)
            .collect::<DfResult<Vec<_>>>()?;
        // Filters are evaluated inside the Parquet scan (late materialization): a principal's or
        // a dataset's records are found reading that column, and only their rows of the wide
        // columns (query text, user agent, hashes) are decoded.
        let mut parquet = datafusion::config::TableParquetOptions::default();
        parquet.global.pushdown_filters = true;
        parquet.global.reorder_filters = true;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default().with_options(parquet)))
            .with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(reader::events_schema())
            .with_expr_adapter_factory(Arc::new(crate::hash_columns::HexHashesAdapterFactory));
        Ok(Some(ListingTable::try_new(config)?))
    }
}

#[async_trait]
impl TableProvider for EventsTable {
    fn schema(&self) -> SchemaRef {
        reader::events_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let bounds = Bounds::of(filters);
        let external = |e: crate::AuditError| DataFusionError::External(Box::new(e));
        let sources = self.sources(&bounds).map_err(external)?;
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if let Some(listing) = self.listing(sources.files)? {
            inputs.push(listing.scan(state, projection, filters, limit).await?);
        }
        // Another store (the archive): a listing of its own.
        if let Some(listing) = self.listing(sources.peer_files)? {
            inputs.push(listing.scan(state, projection, filters, limit).await?);
        }
        if !sources.backlog.is_empty() {
            let stream: Arc<dyn PartitionStream> = Arc::new(SegmentStream {
                paths: sources.backlog,
                lines_decoded: self.lines_decoded.clone(),
            });
            inputs.push(Arc::new(StreamingTableExec::try_new(
                reader::events_schema(),
                vec![stream],
                projection,
                Vec::<datafusion::physical_expr::LexOrdering>::new(),
                false,
                None,
            )?));
        }
        if !sources.decoded.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[sources.decoded],
                reader::events_schema(),
                projection.cloned(),
            )?);
        }
        if inputs.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(reader::events_schema().project(p)?),
                None => reader::events_schema(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        UnionExec::try_new(inputs)
    }
}

/// `audit_datasets(datasets)`: the dataset names of a record's `datasets` value
/// (`dept.name@version,...`) as a list, versions dropped — for `unnest` in usage reports.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DatasetNames {
    signature: datafusion::logical_expr::Signature,
}

impl Default for DatasetNames {
    fn default() -> Self {
        Self {
            signature: datafusion::logical_expr::Signature::exact(
                vec![arrow::datatypes::DataType::Utf8],
                datafusion::logical_expr::Volatility::Immutable,
            ),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for DatasetNames {
    fn name(&self) -> &str {
        "audit_datasets"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _args: &[arrow::datatypes::DataType],
    ) -> DfResult<arrow::datatypes::DataType> {
        Ok(arrow::datatypes::DataType::new_list(
            arrow::datatypes::DataType::Utf8,
            true,
        ))
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> DfResult<datafusion::logical_expr::ColumnarValue> {
        use arrow::array::{Array, AsArray, ListBuilder, StringBuilder};
        let arrays = datafusion::logical_expr::ColumnarValue::values_to_arrays(&args.args)?;
        let input = arrays[0].as_string::<i32>();
        let mut out = ListBuilder::new(StringBuilder::new());
        for i in 0..input.len() {
            if input.is_null(i) {
                out.append_null();
                continue;
            }
            for d in input.value(i).split(',').filter(|d| !d.is_empty()) {
                out.values()
                    .append_value(d.rsplit_once('@').map_or(d, |(name, _)| name));
            }
            out.append(true);
        }
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
            out.finish(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    async fn count(table: Arc<EventsTable>) -> (i64, i64) {
        count_where(table, "key_id <> 'nobody'").await
    }

    /// `count(*)` and distinct seqs of the records `filter` keeps.
    async fn count_where(table: Arc<EventsTable>, filter: &str) -> (i64, i64) {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("events", table).unwrap();
        let batches = ctx
            .sql(&format!(
                "SELECT count(*), count(DISTINCT seq) FROM events WHERE {filter}"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let c = |i: usize| {
            batches[0]
                .column(i)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .value(0)
        };
        (c(0), c(1))
    }

    /// A log of 3,000 synthetic records in segments of about 200 kB, nothing converted.
    fn synthetic_log(seed: u64) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        crate::synthetic::generate(
            tmp.path(),
            &crate::synthetic::Shape {
                records: 3000,
                from: "2026-01-01T00:00:00Z".parse().unwrap(),
                to: "2026-01-20T00:00:00Z".parse().unwrap(),
                segment_max_bytes: 200_000,
                principals: 20,
                datasets: 5,
                seed,
            },
        )
        .unwrap();
        tmp
    }

    /// `seq -> (prev_hash, hash)` of the rows `sql` returns.
    async fn hashes_of(
        ctx: &datafusion::prelude::SessionContext,
        sql: &str,
    ) -> BTreeMap<u64, (String, String)> {
        use arrow::array::AsArray;
        let mut out = BTreeMap::new();
        for b in ctx.sql(sql).await.unwrap().collect().await.unwrap() {
            let seq = b.column(0).as_primitive::<arrow::datatypes::UInt64Type>();
            let (prev, hash) = (
                b.column(1).as_string::<i32>(),
                b.column(2).as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                out.insert(
                    seq.value(i),
                    (prev.value(i).to_string(), hash.value(i).to_string()),
                );
            }
        }
        out
    }

    #[tokio::test]
    async fn hashes_read_as_the_records_hex_from_stored_bytes_and_from_older_text_files() {
        let tmp = synthetic_log(7);
        let mut expected = BTreeMap::new();
        for (_, path) in list_segments(tmp.path()).unwrap() {
            for line in std::fs::read(path).unwrap().split(|b| *b == b'\n') {
                if let Ok(r) = crate::record::decode(line) {
                    expected.insert(r.seq, (r.prev_hash, r.hash));
                }
            }
        }
        assert_eq!(expected.len(), 3000);
        let index = Arc::new(ColumnarIndex::load(tmp.path()).unwrap());
        index.catch_up(2).unwrap();
        let markers = index.snapshot();
        // One file as conversions wrote them before: hashes as hex text.
        let text_file = &markers[1].files[0];
        crate::verify::tests::rewrite_parquet_as_text(&tmp.path().join(&text_file.path));
        let bytes_file = &markers[2].files[0];
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("events", Arc::new(EventsTable::new(index.clone())))
            .unwrap();
        assert_eq!(
            hashes_of(&ctx, "SELECT seq, prev_hash, hash FROM events").await,
            expected
        );
        // In filters too (evaluated inside the scan), in either kind of file.
        for seq in [text_file.first_seq + 1, bytes_file.first_seq + 1] {
            let (prev, hash) = &expected[&seq];
            let one = BTreeMap::from([(seq, (prev.clone(), hash.clone()))]);
            for filter in [format!("hash = '{hash}'"), format!("prev_hash = '{prev}'")] {
                let sql = format!("SELECT seq, prev_hash, hash FROM events WHERE {filter}");
                assert_eq!(hashes_of(&ctx, &sql).await, one, "{filter}");
            }
            let sql = format!(
                "SELECT seq, prev_hash, upper(hash) FROM events WHERE seq = {seq} AND hash LIKE '{}%'",
                &hash[..6]
            );
            let got = hashes_of(&ctx, &sql).await;
            assert_eq!(got[&seq].1, hash.to_uppercase());
        }
    }

    #[tokio::test]
    async fn every_record_once_before_during_and_after_conversion() {
        let tmp = synthetic_log(3);
        let index = Arc::new(ColumnarIndex::load(tmp.path()).unwrap());
        // A backlog: nothing converted, every sealed segment streamed.
        assert_eq!(
            count(Arc::new(EventsTable::new(index.clone()))).await,
            (3000, 3000)
        );
        // Half converted.
        let segments = list_segments(tmp.path()).unwrap();
        assert!(segments.len() > 4);
        for (i, _) in &segments[..segments.len() / 2] {
            index.insert(crate::columnar::convert_segment(tmp.path(), *i).unwrap());
        }
        assert_eq!(
            count(Arc::new(EventsTable::new(index.clone()))).await,
            (3000, 3000)
        );
        index.catch_up(2).unwrap();
        assert_eq!(count(Arc::new(EventsTable::new(index))).await, (3000, 3000));
    }

    #[tokio::test]
    async fn a_segment_sealed_but_not_converted_is_not_decoded_again_by_every_query() {
        let tmp = synthetic_log(5);
        let segments = list_segments(tmp.path()).unwrap();
        assert!(segments.len() > 4, "{}", segments.len());
        let lines = |p: &Path| {
            std::fs::read(p)
                .unwrap()
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count() as u64
        };
        let (last, before_last) = (&segments[segments.len() - 1], &segments[segments.len() - 2]);
        let sealed_lines = lines(&before_last.1);
        // The log as it was before its newest segment was opened: the one before is open.
        let away = tmp.path().join("away");
        std::fs::rename(&last.1, &away).unwrap();
        let index = Arc::new(ColumnarIndex::load(tmp.path()).unwrap());
        let table = Arc::new(EventsTable::new(index.clone()));
        let total = 3000 - lines(&away) as i64;
        assert_eq!(count(table.clone()).await, (total, total));
        let streamed_and_open = table.lines_decoded();
        // A query of the open segment only: nothing older is decoded (the seq range of a
        // streamed segment is read off its first and last lines), the open one is kept.
        let first = first_seq(&before_last.1).unwrap().unwrap();
        let from = format!("seq >= {first}");
        let n = sealed_lines as i64;
        assert_eq!(count_where(table.clone(), &from).await, (n, n));
        assert_eq!(table.lines_decoded(), streamed_and_open);
        // The segment is sealed (a newer one opens) and not converted yet: its kept records
        // serve the next queries; only the new segment's lines are decoded.
        std::fs::rename(&away, &last.1).unwrap();
        let newest = lines(&last.1);
        let before = table.lines_decoded();
        let n = (sealed_lines + newest) as i64;
        for _ in 0..3 {
            assert_eq!(count_where(table.clone(), &from).await, (n, n));
        }
        assert_eq!(table.lines_decoded(), before + newest);
        assert_eq!(count(table.clone()).await, (3000, 3000));
        // Converted: read from Parquet, and no longer kept.
        index.convert(before_last.0).unwrap();
        assert_eq!(count_where(table.clone(), &from).await, (n, n));
        assert_eq!(count(table.clone()).await, (3000, 3000));
        let kept: Vec<u64> = table.kept.lock().unwrap().keys().copied().collect();
        assert_eq!(kept, vec![last.0]);
        assert!(table.decoded_bytes() > 0);
    }

    #[test]
    fn bounds_are_read_off_conjunctions_either_way_round() {
        let ts = |n: i64| {
            lit(ScalarValue::TimestampNanosecond(
                Some(n),
                Some("UTC".into()),
            ))
        };
        let b = Bounds::of(&[
            col("seq").gt(lit(10u64)).and(lit(50u64).gt_eq(col("seq"))),
            col("ts").gt_eq(ts(1_000)),
            col("ts").lt(ts(5_000)),
            col("key_id").eq(lit("k1")),
        ]);
        assert_eq!(b.seq, (11, 50));
        assert_eq!(b.ts, (1_000, 4_999));
        assert!(b.has_seqs(40, 60) && !b.has_seqs(51, 60) && !b.has_seqs(1, 10));
        let day = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert!(b.has_day(day("1970-01-01")) && !b.has_day(day("1970-01-02")));
        // Nothing read off a disjunction or another column: no bounds.
        let none = Bounds::of(&[col("seq").lt(lit(5u64)).or(col("seq").gt(lit(9u64)))]);
        assert_eq!(none, Bounds::default());
    }
}
