//! Writing one upload's record batches as Parquet files in the warehouse.
//!
//! Files are laid out for fast reads: zstd, row groups of bounded size, page-level statistics
//! and the page index, bloom filters on primary-key columns, and a new file once the current one
//! passes the configured size. Each file lands under `datasets/<dept>/<name>/<upload-id>/`, a
//! prefix no committed version references until the catalog commit, so an abandoned upload is
//! invisible and sweepable.
//!
//! Columns are encoded in parallel: batches are gathered into rounds of `ROUND_ROWS` rows, and
//! each round hands every column's share to a small set of threads (one per core), so encoding
//! and compressing a row group uses every core while the request task keeps decoding the upload.
//!
//! A file is durable (fsynced) when it closes. On a local warehouse the disk is asked to start
//! writing after every row group, so that fsync finds little left: without it the whole file
//! (256 MiB) stayed dirty until the close, and the upload stood still while it was written.

use crate::error::{IngestError, Result};
use crate::warehouse::{DATASETS_PREFIX, Warehouse};
use arrow::datatypes::{Fields, SchemaRef};
use arrow::record_batch::RecordBatch;
use datagate_catalog::DataFile;
use datagate_core::config::{IngestConfig, ParquetCompression};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
    compute_leaves,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;

/// The false-positive rate of the primary key's bloom filters.
const BLOOM_FPP: f64 = 0.01;

/// Rows gathered before the columns are encoded in parallel: each column's share of a round is
/// one unit of work for a thread (about a millisecond or more), so the hand-off costs little.
const ROUND_ROWS: usize = 65_536;

/// Decoded bytes gathered before a round is encoded, whatever its rows: rows of 100 KB would
/// otherwise gather 6.5 GB.
const ROUND_BYTES: usize = 64 << 20;

/// Decoded bytes of a row group after which it is closed, whatever its rows. The row group in
/// progress is held in memory (encoded) until then, and a reader decodes a batch within one row
/// group: a dataset of long rows is read 128 MiB at a time at most, not 8,192 rows of any size.
/// (Rows of a few hundred bytes fill `row_group_rows` first.)
const ROW_GROUP_BYTES: usize = 128 << 20;

/// Decoded batches an upload may queue for its writer: a round and a half of 8,192-row batches,
/// so decoding goes on while a round is encoded.
pub(crate) const QUEUE_BATCHES: usize = 24;

/// The memory a batch's rows take (of a slice: its share of the buffers, not theirs whole).
pub(crate) fn decoded_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Writer properties of every Parquet file datagate produces.
pub fn writer_properties(cfg: &IngestConfig, primary_key: &[String]) -> WriterProperties {
    let compression = match cfg.compression {
        ParquetCompression::Lz4 => Compression::LZ4_RAW,
        // Level 1: on the market-entity benchmark it encoded about 13% faster than level 3 and
        // the files came out no larger.
        ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
        ParquetCompression::Snappy => Compression::SNAPPY,
        ParquetCompression::None => Compression::UNCOMPRESSED,
    };
    let mut b = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("datagate {}", env!("CARGO_PKG_VERSION")));
    for key in primary_key {
        let column = ColumnPath::from(key.as_str());
        // A 1% false-positive rate (parquet folds each filter down to the smallest size that
        // keeps it): at parquet's default (5%) a point lookup over 39 row groups decoded two on
        // average instead of one (EXPLAIN ANALYZE, 10M rows).
        b = b
            .set_column_bloom_filter_enabled(column.clone(), true)
            .set_column_bloom_filter_fpp(column.clone(), BLOOM_FPP);
        // A key column of one column is unique: a dictionary would only be filled and dropped.
        if primary_key.len() == 1 {
            b = b.set_column_dictionary_enabled(column, false);
        }
    }
    b.build()
}

/// One Parquet file being written: the footer-keeping writer over an in-memory buffer that is
/// drained into the object store after every row group.
struct OpenFile {
    path: String,
    sink: BufWriter,
    file: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    /// The column writers of the row group in progress.
    group: Option<Vec<ArrowColumnWriter>>,
    group_rows: usize,
    /// Decoded bytes of the row group in progress.
    group_bytes: usize,
    groups: usize,
}

impl OpenFile {
    /// Bytes written plus the encoded size of the row group in progress.
    fn estimated_bytes(&self) -> u64 {
        let open: usize = self
            .group
            .iter()
            .flatten()
            .map(ArrowColumnWriter::get_estimated_total_bytes)
            .sum();
        (self.file.bytes_written() + open) as u64
    }

    async fn drain(&mut self) -> Result<()> {
        let bytes = std::mem::take(self.file.inner_mut());
        if !bytes.is_empty() {
            self.sink.write_all(&bytes).await.map_err(io_error)?;
        }
        Ok(())
    }
}

/// Writes the files of one upload.
pub struct VersionWriter {
    warehouse: Warehouse,
    prefix: String,
    schema: SchemaRef,
    props: WriterProperties,
    row_group_rows: usize,
    target_file_bytes: u64,
    threads: usize,
    current: Option<OpenFile>,
    /// Batches (or slices of them) not yet handed to the column writers.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    files: Vec<DataFile>,
    files_started: usize,
    rows: u64,
    /// A writeback request ([`Warehouse::start_writeback`]) still running: the next row group
    /// does not queue another behind it.
    writeback: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for VersionWriter {
    /// An upload dropped midway (the client went away) deletes what it wrote.
    fn drop(&mut self) {
        let mut paths: Vec<String> = self.files.drain(..).map(|f| f.path).collect();
        if let Some(open) = self.current.take() {
            paths.push(open.path);
        }
        if paths.is_empty() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let warehouse = self.warehouse.clone();
            handle.spawn(async move { delete_files(&warehouse, &paths).await });
        }
    }
}

impl VersionWriter {
    /// Starts an upload of `department/name` with a fresh upload id.
    pub fn new(
        warehouse: &Warehouse,
        department: &str,
        name: &str,
        schema: SchemaRef,
        cfg: &IngestConfig,
        primary_key: &[String],
    ) -> Self {
        let upload = uuid::Uuid::now_v7();
        let threads = datagate_core::threads::cores().clamp(1, schema.fields().len().max(1));
        Self {
            warehouse: warehouse.clone(),
            prefix: format!("{DATASETS_PREFIX}/{department}/{name}/{upload}"),
            schema,
            props: writer_properties(cfg, primary_key),
            row_group_rows: cfg.row_group_rows.max(1),
            target_file_bytes: cfg.target_file_bytes.max(1),
            threads,
            current: None,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            files: Vec::new(),
            files_started: 0,
            rows: 0,
            writeback: Default::default(),
        }
    }

    /// The schema of the files.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends a batch (already in the dataset's schema).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let group_rows = self.current.as_ref().map_or(0, |f| f.group_rows);
            let room = self.row_group_rows - group_rows - self.pending_rows;
            let n = room.min(batch.num_rows() - offset);
            let slice = batch.slice(offset, n);
            self.pending_bytes += decoded_bytes(&slice);
            self.pending.push(slice);
            self.pending_rows += n;
            offset += n;
            let group_bytes = self.current.as_ref().map_or(0, |f| f.group_bytes);
            // Long rows fill a row group's bytes long before its rows.
            let group_full = group_rows + self.pending_rows >= self.row_group_rows
                || group_bytes + self.pending_bytes >= ROW_GROUP_BYTES;
            if group_full || self.pending_rows >= ROUND_ROWS || self.pending_bytes >= ROUND_BYTES {
                self.round(group_full).await?;
                let full = self
                    .current
                    .as_ref()
                    .is_some_and(|f| f.estimated_bytes() >= self.target_file_bytes);
                if full {
                    self.close_current().await?;
                }
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn open_file(&mut self) -> Result<&mut OpenFile> {
        if self.current.is_none() {
            let path = format!("{}/part-{:05}.parquet", self.prefix, self.files_started);
            let sink = BufWriter::new(
                self.warehouse.store().clone(),
                ObjectPath::from(path.as_str()),
            );
            // The Arrow writer puts the Arrow schema in the footer's metadata; its low-level
            // halves then let the columns be encoded apart.
            let (file, factory) =
                ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(self.props.clone()))?
                    .into_serialized_writer()?;
            self.files_started += 1;
            self.current = Some(OpenFile {
                path,
                sink,
                file,
                factory,
                group: None,
                group_rows: 0,
                group_bytes: 0,
                groups: 0,
            });
        }
        self.current
            .as_mut()
            .ok_or_else(|| IngestError::Internal("no open Parquet file".into()))
    }

    /// Encodes the pending batches into the open row group, all columns in parallel; with
    /// `close`, also closes the row group and writes it out.
    async fn round(&mut self, close: bool) -> Result<()> {
        let batches = std::mem::take(&mut self.pending);
        let rows = std::mem::replace(&mut self.pending_rows, 0);
        let bytes = std::mem::replace(&mut self.pending_bytes, 0);
        let fields = self.schema.fields().clone();
        let threads = self.threads;
        if rows == 0 && self.current.as_ref().is_none_or(|f| f.group.is_none()) {
            return Ok(());
        }
        let open = self.open_file()?;
        let writers = match open.group.take() {
            Some(w) => w,
            None => open.factory.create_column_writers(open.groups)?,
        };
        let encoded = tokio::task::spawn_blocking(move || {
            encode_round(&fields, writers, &batches, close, threads)
        })
        .await
        .map_err(|e| IngestError::Internal(format!("the Parquet encoder failed: {e}")))??;
        open.group_rows += rows;
        open.group_bytes += bytes;
        match encoded {
            Encoded::Open(writers) => open.group = Some(writers),
            Encoded::Closed(chunks) => {
                let mut group = open.file.next_row_group()?;
                for chunk in chunks {
                    chunk.append_to_row_group(&mut group)?;
                }
                group.close()?;
                open.groups += 1;
                open.group_rows = 0;
                open.group_bytes = 0;
                open.drain().await?;
                self.start_writeback();
            }
        }
        Ok(())
    }

    /// Has the disk start writing the row groups written so far, on a blocking thread, unless
    /// the last request is still running or the warehouse is not local; nothing waits for it.
    fn start_writeback(&self) {
        use std::sync::atomic::Ordering;
        if !self.warehouse.is_local() || self.writeback.swap(true, Ordering::AcqRel) {
            return;
        }
        let (warehouse, prefix, running) = (
            self.warehouse.clone(),
            self.prefix.clone(),
            self.writeback.clone(),
        );
        tokio::task::spawn_blocking(move || {
            warehouse.start_writeback(&prefix);
            running.store(false, Ordering::Release);
        });
    }

    async fn close_current(&mut self) -> Result<()> {
        if self.current.is_none() && self.pending_rows == 0 {
            return Ok(());
        }
        self.round(true).await?;
        // The file stays in `current` until it is durable, so `Drop` still knows its path.
        let Some(open) = self.current.as_mut() else {
            return Ok(());
        };
        let meta = open.file.finish()?;
        open.drain().await?;
        open.sink.shutdown().await.map_err(io_error)?;
        let path = open.path.clone();
        let head = self
            .warehouse
            .store()
            .head(&ObjectPath::from(path.as_str()))
            .await?;
        let warehouse = self.warehouse.clone();
        let synced = path.clone();
        tokio::task::spawn_blocking(move || warehouse.sync_file(&synced))
            .await
            .map_err(|e| IngestError::Internal(format!("syncing a Parquet file failed: {e}")))??;
        self.current = None;
        self.files.push(DataFile {
            path,
            rows: meta.file_metadata().num_rows() as u64,
            bytes: head.size,
        });
        Ok(())
    }

    /// Closes the last file; every file is durable when this returns.
    pub async fn finish(mut self) -> Result<Vec<DataFile>> {
        self.close_current().await?;
        Ok(std::mem::take(&mut self.files))
    }

    /// Deletes everything this upload wrote (best effort; the sweep catches the rest).
    pub async fn abort(mut self) {
        let mut paths: Vec<String> = self.files.drain(..).map(|f| f.path).collect();
        if let Some(open) = self.current.take() {
            paths.push(open.path);
        }
        delete_files(&self.warehouse, &paths).await;
    }
}

/// What a round leaves: the row group's writers, or its finished column chunks.
enum Encoded {
    Open(Vec<ArrowColumnWriter>),
    Closed(Vec<ArrowColumnChunk>),
}

/// Writes each column's leaves of `batches` into its writer (and closes the writers when
/// `close`), the columns spread over `threads` threads, each taking the next column when done.
fn encode_round(
    fields: &Fields,
    writers: Vec<ArrowColumnWriter>,
    batches: &[RecordBatch],
    close: bool,
    threads: usize,
) -> Result<Encoded> {
    let mut leaves: Vec<Vec<ArrowLeafColumn>> = writers
        .iter()
        .map(|_| Vec::with_capacity(batches.len()))
        .collect();
    for batch in batches {
        let mut j = 0;
        for (field, column) in fields.iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, column)? {
                let Some(slot) = leaves.get_mut(j) else {
                    return Err(IngestError::Internal(
                        "more Parquet leaves than column writers".into(),
                    ));
                };
                slot.push(leaf);
                j += 1;
            }
        }
    }
    enum Done {
        Open(Box<ArrowColumnWriter>),
        Closed(Box<ArrowColumnChunk>),
    }
    let count = writers.len();
    let queue = Mutex::new(writers.into_iter().zip(leaves).enumerate());
    let results: Mutex<Vec<Option<Result<Done>>>> = Mutex::new((0..count).map(|_| None).collect());
    let work = || {
        loop {
            let next = queue.lock().map(|mut q| q.next());
            let Ok(Some((i, (mut writer, leaves)))) = next else {
                return;
            };
            let done = (|| {
                for leaf in &leaves {
                    writer.write(leaf)?;
                }
                Ok(if close {
                    Done::Closed(Box::new(writer.close()?))
                } else {
                    Done::Open(Box::new(writer))
                })
            })();
            if let Ok(mut r) = results.lock()
                && let Some(slot) = r.get_mut(i)
            {
                *slot = Some(done);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.min(count) {
            scope.spawn(work);
        }
        work();
    });
    let results = results
        .into_inner()
        .map_err(|_| IngestError::Internal("a Parquet encoder thread panicked".into()))?;
    let mut open = Vec::with_capacity(count);
    let mut closed = Vec::with_capacity(count);
    for r in results {
        match r {
            Some(Ok(Done::Open(w))) => open.push(*w),
            Some(Ok(Done::Closed(c))) => closed.push(*c),
            Some(Err(e)) => return Err(e),
            None => {
                return Err(IngestError::Internal(
                    "a Parquet column was not encoded".into(),
                ));
            }
        }
    }
    Ok(if close {
        Encoded::Closed(closed)
    } else {
        Encoded::Open(open)
    })
}

fn io_error(e: std::io::Error) -> IngestError {
    IngestError::storage("storage", &e)
}

/// Deletes warehouse files, logging (not failing) on error.
pub async fn delete_files(warehouse: &Warehouse, paths: &[String]) {
    for p in paths {
        if let Err(e) = warehouse
            .store()
            .delete(&ObjectPath::from(p.as_str()))
            .await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!(path = %p, error = %e, "could not delete abandoned upload file");
        }
    }
}
