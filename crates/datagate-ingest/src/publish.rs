//! Turning an upload into the next committed version of a dataset.

use crate::decode::{
    BATCH_BYTES, CsvDecoder, CsvOptions, GzipDecoder, InferringDecoder, IpcStreamDecoder,
    NdjsonDecoder, Pieces, PushDecoder, SkipUtf8Bom, TextFormat, Transcoder, extend_schema,
    parquet_pages, storable_schema,
};
use crate::error::{IngestError, Result};
use crate::warehouse::Warehouse;
use crate::writer::{VersionWriter, delete_files};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use datagate_catalog::{CatalogStore, Column, DataFile, Dataset, NewVersion, Version, VersionMode};
use datagate_core::ColumnType;
use datagate_core::config::IngestConfig;
use futures::{Stream, StreamExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The format of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Csv {
        delimiter: u8,
    },
    Ndjson,
    Parquet,
    /// Arrow IPC, in its stream form or its file form (`.arrow`, Feather v2).
    ArrowStream,
}

impl SourceFormat {
    /// The CSV field delimiter named by `text` (a character, or `tab` / `\t` for a tab), if
    /// an upload may use it: one ASCII character, and not a quote or a line end (records would
    /// have no single reading).
    pub fn csv_delimiter(text: &str) -> std::result::Result<u8, &'static str> {
        if matches!(text, "tab" | "\\t") {
            return Ok(b'\t');
        }
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some('"' | '\n' | '\r'), None) => Err("delimiter cannot be a quote or a line break"),
            (Some(d), None) if d.is_ascii() => Ok(d as u8),
            _ => Err("delimiter must be one ASCII character"),
        }
    }

    /// The format of a `Content-Type` (parameters ignored), if datagate accepts it.
    pub fn from_content_type(content_type: &str, delimiter: u8) -> Option<Self> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match essence.as_str() {
            "text/csv" => Self::Csv { delimiter },
            // IANA's type for tab-separated values: tabs unless `delimiter` names another.
            "text/tab-separated-values" => Self::Csv {
                delimiter: if delimiter == b',' { b'\t' } else { delimiter },
            },
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/jsonlines"
            | "application/x-jsonlines" => Self::Ndjson,
            "application/vnd.apache.parquet" => Self::Parquet,
            // One decoder reads both forms of Arrow IPC, whichever the type says.
            "application/vnd.apache.arrow.stream" | "application/vnd.apache.arrow.file" => {
                Self::ArrowStream
            }
            _ => return None,
        })
    }

    /// The format's name as the catalog records it: `csv`, `ndjson`, `parquet` or `arrow`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Csv { .. } => "csv",
            Self::Ndjson => "ndjson",
            Self::Parquet => "parquet",
            Self::ArrowStream => "arrow",
        }
    }

    /// The format of a file, by its extension.
    pub fn from_path(path: &Path, delimiter: u8) -> Option<Self> {
        let name = path.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        Some(match Path::new(name).extension()?.to_str()? {
            "csv" | "txt" => Self::Csv { delimiter },
            "tsv" => Self::Csv { delimiter: b'\t' },
            "ndjson" | "jsonl" | "json" => Self::Ndjson,
            "parquet" => Self::Parquet,
            "arrow" | "arrows" | "ipc" | "feather" => Self::ArrowStream,
            _ => return None,
        })
    }
}

/// Where an upload comes from and who sends it.
#[derive(Debug, Clone)]
pub struct Source {
    pub format: SourceFormat,
    /// The body is gzip-compressed.
    pub gzip: bool,
    /// The encoding of a text body (CSV, NDJSON) when it is not UTF-8: decoded to UTF-8 as it
    /// arrives ([`crate::decode::Transcoder`]).
    pub charset: Option<&'static encoding_rs::Encoding>,
    pub mode: VersionMode,
    /// Digest of the source bytes, recorded with the version (lets manifests detect changes).
    pub digest: Option<String>,
    pub created_by: String,
}

/// The Arrow schema of a dataset's columns.
pub fn arrow_schema(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.to_arrow(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Publishes uploads as new dataset versions.
#[derive(Clone)]
pub struct Publisher {
    catalog: Arc<dyn CatalogStore>,
    warehouse: Warehouse,
    cfg: IngestConfig,
    max_upload_bytes: u64,
    spool_dir: PathBuf,
    /// One lock per dataset: uploads to one dataset in this process run one at a time.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Publisher {
    /// `spool_dir` holds Parquet uploads while they arrive (Parquet needs its footer first).
    pub fn new(
        catalog: Arc<dyn CatalogStore>,
        warehouse: Warehouse,
        cfg: IngestConfig,
        max_upload_bytes: u64,
        spool_dir: PathBuf,
    ) -> Self {
        Self {
            catalog,
            warehouse,
            cfg,
            max_upload_bytes,
            spool_dir,
            locks: Arc::default(),
        }
    }

    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// Removes spool files left by a previous process.
    pub fn sweep_spool(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.spool_dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("upload-"))
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }

    fn lock_for(&self, department: &str, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks
            .entry(format!("{department}/{name}"))
            .or_default()
            .clone()
    }

    /// Decodes `body` and commits it as the next version of `department/name`.
    /// On any error nothing of the upload stays visible and its files are deleted.
    pub async fn publish<S, E>(
        &self,
        department: &str,
        name: &str,
        source: Source,
        body: S,
    ) -> Result<Version>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let lock = self.lock_for(department, name);
        let _serialised = lock.lock().await;
        let dataset = self.live_dataset(department, name).await?;
        let target = (!dataset.columns.is_empty()).then(|| arrow_schema(&dataset.columns));
        let mut sink = Sink {
            warehouse: &self.warehouse,
            cfg: &self.cfg,
            dataset: &dataset,
            writer: None,
            keys: KeyCheck::new(&dataset.primary_key, source.format),
        };
        let decoded = match source.format {
            SourceFormat::Parquet => {
                self.decode_parquet(&source, target.clone(), body, &mut sink)
                    .await
            }
            _ => {
                self.decode_stream(&source, target.clone(), body, &mut sink)
                    .await
            }
        };
        if let Err(e) = decoded {
            sink.cancel().await;
            return Err(e);
        }
        let (schema, files) = match sink.finish().await? {
            Some(done) => done,
            None => match target {
                Some(t) => (t, Vec::new()),
                None => {
                    return Err(IngestError::invalid_data(
                        "the upload has no rows to infer a schema from",
                    ));
                }
            },
        };
        // The version's columns are what was written; the catalog keeps the annotations of the
        // columns it knows and appends new ones (a replace may add nullable columns).
        let columns = {
            schema
                .fields()
                .iter()
                .map(|f| {
                    Ok(Column {
                        name: f.name().clone(),
                        data_type: ColumnType::from_arrow(f.data_type())
                            .map_err(|e| IngestError::invalid_data(e.to_string()))?,
                        description: String::new(),
                        sensitivity: Default::default(),
                        mask: None,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let uploaded: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        // An append that would leave the version ending in many small files rewrites them with
        // its rows into one ([`crate::compaction`]); its own files are then no version's. A
        // compaction that fails leaves the upload to commit as it came: it is good data.
        let (files, compacted) = match self
            .compact(&dataset, source.mode, schema.clone(), &files)
            .await
        {
            Ok(Some(c)) => (c.files, c.replaced),
            Ok(None) => (files, Vec::new()),
            Err(e) => {
                tracing::warn!(error = %e, dataset = %format!("{department}/{name}"),
                    "compacting the version's small files failed; the append commits as it came");
                (files, Vec::new())
            }
        };
        let written: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let superseded = if compacted.is_empty() {
            Vec::new()
        } else {
            uploaded.clone()
        };
        let committed = self
            .catalog
            .commit_version(
                department,
                name,
                NewVersion {
                    base_version: dataset.current_version,
                    mode: source.mode,
                    new_files: files,
                    compacted,
                    columns,
                    source_digest: source.digest,
                    source_format: Some(source.format.name().to_string()),
                    created_by: source.created_by,
                },
            )
            .await;
        match committed {
            Ok(v) => {
                delete_files(&self.warehouse, &superseded).await;
                self.apply_retention(department, name).await;
                Ok(v)
            }
            Err(e) => {
                delete_files(&self.warehouse, &written).await;
                delete_files(&self.warehouse, &superseded).await;
                Err(e.into())
            }
        }
    }

    /// [`crate::compaction::compact`] for an append onto an existing version.
    async fn compact(
        &self,
        dataset: &Dataset,
        mode: VersionMode,
        schema: SchemaRef,
        files: &[DataFile],
    ) -> Result<Option<crate::compaction::Compacted>> {
        let Some(base) = dataset
            .current_version
            .filter(|_| mode == VersionMode::Append)
        else {
            return Ok(None);
        };
        let Some(base) = self
            .catalog
            .get_version(&dataset.department, &dataset.name, base)
            .await?
        else {
            return Ok(None);
        };
        crate::compaction::compact(
            &self.warehouse,
            &self.cfg,
            dataset,
            schema,
            &base.files,
            files,
        )
        .await
    }

    /// Forgets versions beyond `ingest.retain_versions` and deletes the files only they used.
    /// Failures are logged: the new version is committed either way, and the start-up sweep
    /// removes files left behind.
    async fn apply_retention(&self, department: &str, name: &str) {
        if self.cfg.retain_versions == 0 {
            return;
        }
        match self
            .catalog
            .expire_versions(department, name, self.cfg.retain_versions)
            .await
        {
            Ok(paths) if !paths.is_empty() => {
                delete_files(&self.warehouse, &paths).await;
                tracing::info!(dataset = %format!("{department}/{name}"), files = paths.len(), "retention removed old versions' files");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "applying version retention failed"),
        }
    }

    async fn decode_stream<S, E>(
        &self,
        source: &Source,
        target: Option<SchemaRef>,
        mut body: S,
        sink: &mut Sink<'_>,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let batch_rows = self.cfg.batch_rows;
        let replace = source.mode == VersionMode::Replace;
        let csv = |delimiter| CsvOptions::new(delimiter, batch_rows);
        let mut decoder: Box<dyn PushDecoder> = match (source.format, target) {
            // A replace may add nullable columns: the ones the dataset lacks are inferred.
            (SourceFormat::Csv { delimiter }, Some(t)) if replace => Box::new(
                InferringDecoder::extending(TextFormat::Csv(csv(delimiter)), Some(t)),
            ),
            (SourceFormat::Csv { delimiter }, Some(t)) => {
                Box::new(CsvDecoder::new(t, csv(delimiter)))
            }
            (SourceFormat::Csv { delimiter }, None) => {
                Box::new(InferringDecoder::new(TextFormat::Csv(csv(delimiter))))
            }
            (SourceFormat::Ndjson, Some(t)) if replace => Box::new(InferringDecoder::extending(
                TextFormat::Ndjson { batch_rows },
                Some(t),
            )),
            (SourceFormat::Ndjson, Some(t)) => Box::new(NdjsonDecoder::new(t, batch_rows)),
            (SourceFormat::Ndjson, None) => {
                Box::new(InferringDecoder::new(TextFormat::Ndjson { batch_rows }))
            }
            (SourceFormat::ArrowStream, t) => Box::new(IpcStreamDecoder::new(t, replace)),
            (SourceFormat::Parquet, _) => {
                return Err(IngestError::Internal(
                    "Parquet is not a stream format".into(),
                ));
            }
        };
        // Text formats only: Arrow's strings are UTF-8 by its specification.
        // A UTF-8 body may start with a byte-order mark; a body in another charset is decoded.
        if matches!(
            source.format,
            SourceFormat::Csv { .. } | SourceFormat::Ndjson
        ) {
            decoder = match source.charset {
                Some(encoding) => Box::new(Transcoder::new(decoder, encoding)),
                None => Box::new(SkipUtf8Bom::new(decoder)),
            };
        }
        if source.gzip {
            decoder = Box::new(GzipDecoder::new(decoder, self.max_upload_bytes));
        }
        let mut received = 0u64;
        while let Some(chunk) = next_chunk(&mut body, &mut received, self.max_upload_bytes).await? {
            // Gzip in slices: a slice inflates to 16 MiB at most, so what one push decodes is
            // bounded whatever the body's chunks (a plain chunk is its own bound).
            let slice = if source.gzip {
                PUSH_BYTES
            } else {
                chunk.len().max(1)
            };
            for slice in chunk.chunks(slice) {
                let decoded = decoder.push(slice)?;
                write_all(sink, decoded, decoder.as_mut()).await?;
            }
        }
        let decoded = decoder.finish()?;
        write_all(sink, decoded, decoder.as_mut()).await
    }

    async fn decode_parquet<S, E>(
        &self,
        source: &Source,
        target: Option<SchemaRef>,
        mut body: S,
        sink: &mut Sink<'_>,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use std::io::Write;
        std::fs::create_dir_all(&self.spool_dir)
            .map_err(|e| IngestError::storage("cannot create the spool directory", &e))?;
        let spool = SpoolFile(
            self.spool_dir
                .join(format!("upload-{}.parquet", uuid::Uuid::now_v7())),
        );
        let file = std::fs::File::create(&spool.0)
            .map_err(|e| IngestError::storage("cannot create a spool file", &e))?;
        let mut out: Box<dyn Write + Send> = if source.gzip {
            Box::new(flate2::write::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut received = 0u64;
        let mut gzip_start = crate::decode::gzip::GzipStart::default();
        while let Some(chunk) = next_chunk(&mut body, &mut received, self.max_upload_bytes).await? {
            if source.gzip {
                gzip_start.check(&chunk)?;
            }
            out.write_all(&chunk).map_err(|e| {
                if source.gzip && crate::error::StorageFault::of_io(&e).is_none() {
                    IngestError::invalid_data(format!("invalid gzip data: {e}"))
                } else {
                    IngestError::storage("cannot spool the upload", &e)
                }
            })?;
        }
        out.flush().map_err(|e| {
            IngestError::invalid_data(format!("the gzip stream is truncated or corrupt: {e}"))
        })?;
        drop(out);
        if received == 0 {
            return Err(IngestError::invalid_data("the body is empty"));
        }
        // Read the spooled file on a blocking thread, a batch at a time.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let path = spool.0.clone();
        let batch_rows = self.cfg.batch_rows;
        let reader = tokio::task::spawn_blocking(move || {
            let send_err = |e: IngestError| {
                let _ = tx.blocking_send(Err(e));
            };
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    return send_err(IngestError::Internal(format!(
                        "cannot reopen the spool file: {e}"
                    )));
                }
            };
            // The footer's lists are measured before the reader reserves memory for them.
            if let Err(why) = parquet_pages::check_footer(&file) {
                return send_err(IngestError::invalid_data(format!(
                    "the body is not a readable Parquet file: {why}"
                )));
            }
            // The Parquet reader may panic on a corrupt file: that is the upload's fault too.
            let opened = datagate_core::panics::contain(|| {
                ArrowReaderMetadata::load(&file, Default::default()).map_err(|e| {
                    IngestError::invalid_data(format!("the body is not a Parquet file: {e}"))
                })
            });
            let metadata = match opened {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => return send_err(e),
                Err(panic) => {
                    return send_err(IngestError::invalid_data(format!(
                        "the body is not a readable Parquet file (the reader stopped: {panic})"
                    )));
                }
            };
            // Every page header before any page: what each row group decodes to.
            let planned = datagate_core::panics::contain(|| plan_parquet(&file, metadata));
            let (metadata, groups) = match planned {
                Ok(Ok(planned)) => planned,
                Ok(Err(e)) => return send_err(e),
                Err(panic) => {
                    return send_err(IngestError::invalid_data(format!(
                        "unreadable Parquet file (the reader stopped: {panic})"
                    )));
                }
            };
            // One reader per row group, its batches sized by the bytes its pages decode to:
            // rows of 100 KB would otherwise decode 800 MB a batch.
            for (group, decoded) in groups.into_iter().enumerate() {
                let rows = metadata.metadata().row_group(group).num_rows().max(1) as u64;
                let per_batch =
                    (BATCH_BYTES as u64 * rows / decoded.max(1)).clamp(1, batch_rows as u64);
                let reader = file.try_clone().map_err(|e| {
                    IngestError::Internal(format!("cannot reopen the spool file: {e}"))
                });
                let built = reader.and_then(|file| {
                    datagate_core::panics::contain(|| {
                        ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata.clone())
                            .with_row_groups(vec![group])
                            .with_batch_size(per_batch as usize)
                            .build()
                    })
                    .map_err(|panic| {
                        IngestError::invalid_data(format!(
                            "unreadable Parquet file (the reader stopped: {panic})"
                        ))
                    })?
                    .map_err(|e| IngestError::invalid_data(format!("unreadable Parquet file: {e}")))
                });
                let mut reader = match built {
                    Ok(r) => r,
                    Err(e) => return send_err(e),
                };
                loop {
                    let msg = match datagate_core::panics::contain(|| reader.next()) {
                        Ok(None) => break,
                        Ok(Some(Ok(batch))) => Ok(batch),
                        Ok(Some(Err(e))) => Err(IngestError::invalid_data(format!(
                            "unreadable Parquet data: {e}"
                        ))),
                        Err(panic) => Err(IngestError::invalid_data(format!(
                            "unreadable Parquet data (the reader stopped: {panic})"
                        ))),
                    };
                    let failed = msg.is_err();
                    if tx.blocking_send(msg).is_err() || failed {
                        return;
                    }
                }
            }
        });
        let mut target = target;
        let mut rows = 0u64;
        while let Some(batch) = rx.recv().await {
            let batch = batch?;
            let t = match &target {
                Some(t) if source.mode == VersionMode::Replace && rows == 0 => {
                    let t = extend_schema(t, &batch.schema())?;
                    target = Some(t.clone());
                    t
                }
                Some(t) => t.clone(),
                None => {
                    let t = storable_schema(&batch.schema())?;
                    target = Some(t.clone());
                    t
                }
            };
            let mut pieces = Pieces::default();
            pieces.push(batch, t, rows + 1);
            while let Some(b) = pieces.next_piece() {
                let b = b?;
                rows += b.num_rows() as u64;
                sink.write(b).await?;
            }
        }
        // The channel also closes if the reader ended early without a word: never take that
        // for the end of the file.
        reader
            .await
            .map_err(|e| IngestError::Internal(format!("the Parquet reader failed: {e}")))
    }

    /// Publishes a local file, read in chunks; the format comes from `source`.
    pub async fn publish_file(
        &self,
        department: &str,
        name: &str,
        source: Source,
        path: &Path,
    ) -> Result<Version> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| IngestError::NotFound(format!("cannot open {}: {e}", path.display())))?;
        self.publish(department, name, source, file_chunks(file))
            .await
    }

    async fn live_dataset(&self, department: &str, name: &str) -> Result<Dataset> {
        match self.catalog.get_dataset(department, name).await? {
            Some(d) if d.unpublished_at.is_none() => Ok(d),
            _ => Err(IngestError::NotFound(format!(
                "dataset {department}/{name} not found"
            ))),
        }
    }
}

/// The next chunk of an upload, counted against the size limit as it arrives.
async fn next_chunk<S, E>(body: &mut S, received: &mut u64, limit: u64) -> Result<Option<Bytes>>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let Some(chunk) = body.next().await else {
        return Ok(None);
    };
    let chunk =
        chunk.map_err(|e| IngestError::invalid_data(format!("reading the upload failed: {e}")))?;
    *received += chunk.len() as u64;
    if *received > limit {
        return Err(IngestError::TooLarge(limit));
    }
    Ok(Some(chunk))
}

/// How an uploaded Parquet file is read: its metadata (with the columns kept as dictionaries,
/// below) and, per row group, the bytes a reader of it decodes at most, from its page headers
/// ([`parquet_pages::scan`]); the footer's own claim counts too, never less.
///
/// A text or binary column whose pages are all dictionary-encoded, in every row group, is read
/// as a dictionary array: it decodes to its values only piece by piece ([`Pieces`]), so a
/// dictionary of one 40 MiB value referenced by every row (a 2 KB file) is not decoded into
/// gigabytes at once. Where a column with a dictionary page is read as values, or a
/// dictionary array meets plain pages, the reader may give every row of a batch the
/// dictionary's longest value: that length counts per row.
fn plan_parquet(file: &std::fs::File, metadata: ArrowReaderMetadata) -> Result<Planned> {
    use arrow::datatypes::DataType;
    let unreadable = |why: String| IngestError::invalid_data(format!("Parquet file: {why}"));
    let groups = parquet_pages::scan(file, metadata.metadata()).map_err(unreadable)?;
    let parquet = Arc::clone(metadata.metadata());
    let leaves = parquet.file_metadata().schema_descr();
    let leaf_of =
        |name: &str| (0..leaves.num_columns()).find(|i| leaves.column(*i).path().parts() == [name]);
    let all_dictionary = |leaf: usize| {
        !groups.is_empty()
            && groups
                .iter()
                .all(|g| g.columns.get(leaf).is_some_and(|c| c.all_dictionary()))
    };
    let schema = metadata.schema();
    let mut kept = vec![false; leaves.num_columns()];
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let bytes = matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
            );
            match leaf_of(f.name()) {
                Some(leaf) if bytes && all_dictionary(leaf) => {
                    kept[leaf] = true;
                    let dictionary = DataType::Dictionary(
                        Box::new(DataType::Int32),
                        Box::new(f.data_type().clone()),
                    );
                    f.as_ref().clone().with_data_type(dictionary)
                }
                _ => f.as_ref().clone(),
            }
        })
        .collect();
    let metadata = if kept.iter().any(|k| *k) {
        let hinted = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_schema(hinted);
        ArrowReaderMetadata::try_new(Arc::clone(&parquet), options).unwrap_or(metadata)
    } else {
        metadata
    };
    // Leaves read as dictionary arrays: those kept above, and those the file's Arrow schema
    // declares so (a pandas categorical).
    let as_dictionary: Vec<bool> = (0..leaves.num_columns())
        .map(|leaf| {
            kept[leaf]
                || metadata.schema().fields().iter().any(|f| {
                    matches!(f.data_type(), DataType::Dictionary(..))
                        && leaf_of(f.name()) == Some(leaf)
                })
        })
        .collect();
    let mut decoded = Vec::with_capacity(groups.len());
    for (g, pages) in groups.iter().enumerate() {
        let group = metadata.metadata().row_group(g);
        let rows = group.num_rows().max(1) as u64;
        let mut per_row = 0u64;
        for (leaf, chunk) in pages.columns.iter().enumerate() {
            // A dictionary array stays keys unless a plain page joins it in a batch.
            let keys_only = as_dictionary[leaf] && chunk.all_dictionary();
            if chunk.dictionary_bytes.is_some() && !keys_only {
                per_row += parquet_pages::longest_dictionary_value(
                    file,
                    group.column(leaf),
                    rows as usize,
                )
                .map_err(|why| unreadable(format!("row group {g}: {why}")))?;
            }
        }
        let footer = u64::try_from(group.total_byte_size()).unwrap_or(0);
        decoded.push(
            pages
                .data_bytes()
                .saturating_add(per_row.saturating_mul(rows))
                .max(footer),
        );
    }
    Ok((metadata, decoded))
}

/// A Parquet upload's reader metadata and the bytes each row group decodes to at most.
type Planned = (ArrowReaderMetadata, Vec<u64>);

/// Bytes of a gzip body a decoder is given at a time (see [`Publisher::decode_stream`]).
const PUSH_BYTES: usize = 16 << 10;

/// Hands `decoded` and then whatever `decoder` held back to the sink.
async fn write_all(
    sink: &mut Sink<'_>,
    decoded: Vec<RecordBatch>,
    decoder: &mut dyn PushDecoder,
) -> Result<()> {
    let mut batches = decoded;
    loop {
        for batch in batches {
            sink.write(batch).await?;
        }
        batches = decoder.held()?;
        if batches.is_empty() {
            return Ok(());
        }
    }
}

/// Where decoded batches go: a writer task, started at the first batch, that encodes them as
/// Parquet while the request task keeps decoding (so the two use two cores). A sink dropped
/// before [`Sink::finish`] (the client went away) tells the writer to stop; it deletes its files
/// once its in-flight write is over, so no file lands after the deletion.
struct Sink<'a> {
    warehouse: &'a Warehouse,
    cfg: &'a IngestConfig,
    dataset: &'a Dataset,
    writer: Option<WriterTask>,
    keys: KeyCheck<'a>,
}

/// The primary key's columns are never empty: a row whose key is null is refused with its line
/// (CSV) or row (NDJSON, Parquet, Arrow) and the key column, like any other invalid value. (The
/// key is what ties a row between versions and what point lookups find; a null one identifies
/// nothing.) Batches come in the upload's order, so rows are counted as they pass.
struct KeyCheck<'a> {
    columns: &'a [String],
    format: SourceFormat,
    rows_before: u64,
}

impl<'a> KeyCheck<'a> {
    fn new(columns: &'a [String], format: SourceFormat) -> Self {
        Self {
            columns,
            format,
            rows_before: 0,
        }
    }

    fn check(&mut self, batch: &RecordBatch) -> Result<()> {
        for name in self.columns {
            let Some(column) = batch.column_by_name(name) else {
                // Only a first upload (its schema inferred) can lack a column: the key was
                // registered before any column was.
                let line = matches!(self.format, SourceFormat::Csv { .. }).then_some(1);
                return Err(IngestError::InvalidData {
                    message: format!(
                        "the upload has no column {name:?}, which the dataset's primary key names"
                    ),
                    line,
                    row: None,
                    column: Some(name.clone()),
                });
            };
            if column.logical_null_count() == 0 {
                continue;
            }
            let first = (0..column.len()).find(|&i| column.is_null(i)).unwrap_or(0);
            let row = self.rows_before + first as u64 + 1;
            // A CSV's lines as its decoder numbers them (by record, the header line 1); an
            // NDJSON body may hold blank lines, which are no rows, so its rows are counted.
            let line = match self.format {
                SourceFormat::Csv { .. } => Some(row + 1),
                _ => None,
            };
            let place = match line {
                Some(l) => format!("line {l}"),
                None => format!("row {row}"),
            };
            return Err(IngestError::InvalidData {
                message: format!(
                    "{place}: column {name:?} is part of the primary key and may not be empty"
                ),
                line,
                row: line.is_none().then_some(row),
                column: Some(name.clone()),
            });
        }
        self.rows_before += batch.num_rows() as u64;
        Ok(())
    }
}

/// Bytes of decoded batches queued for an upload's writer at most (a batch larger than that
/// is queued alone), in units of [`QUEUE_UNIT_BYTES`].
const QUEUE_UNITS: usize = 1024;
const QUEUE_UNIT_BYTES: usize = 64 << 10;

struct WriterTask {
    schema: SchemaRef,
    tx: tokio::sync::mpsc::Sender<(RecordBatch, OwnedSemaphorePermit)>,
    queued: Arc<Semaphore>,
    handle: tokio::task::JoinHandle<Result<Vec<DataFile>>>,
    aborted: Arc<std::sync::atomic::AtomicBool>,
}

impl Sink<'_> {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.keys.check(&batch)?;
        if self.writer.is_none() {
            let mut w = VersionWriter::new(
                self.warehouse,
                &self.dataset.department,
                &self.dataset.name,
                batch.schema(),
                self.cfg,
                &self.dataset.primary_key,
            );
            // Deep enough for the decoder to fill the next round while the writer encodes one;
            // bounded in bytes too, for batches of long rows.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<(RecordBatch, OwnedSemaphorePermit)>(
                crate::writer::QUEUE_BATCHES,
            );
            let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop = aborted.clone();
            let handle = tokio::spawn(async move {
                let is_aborted = || stop.load(std::sync::atomic::Ordering::SeqCst);
                while let Some((b, permit)) = rx.recv().await {
                    if is_aborted() {
                        break;
                    }
                    let written = w.write(&b).await;
                    drop(permit);
                    if let Err(e) = written {
                        w.abort().await;
                        return Err(e);
                    }
                }
                if is_aborted() {
                    w.abort().await;
                    return Err(IngestError::Internal("the upload was abandoned".into()));
                }
                w.finish().await
            });
            self.writer = Some(WriterTask {
                schema: batch.schema(),
                tx,
                queued: Arc::new(Semaphore::new(QUEUE_UNITS)),
                handle,
                aborted,
            });
        }
        let Some(task) = self.writer.as_mut() else {
            return Err(IngestError::Internal("no writer".into()));
        };
        let units = crate::writer::decoded_bytes(&batch).div_ceil(QUEUE_UNIT_BYTES);
        let permit = task
            .queued
            .clone()
            .acquire_many_owned(units.clamp(1, QUEUE_UNITS) as u32)
            .await
            .map_err(|_| IngestError::Internal("the writer queue closed".into()))?;
        if task.tx.send((batch, permit)).await.is_err() {
            // The writer stopped: its result says why.
            return match self.writer.take() {
                Some(t) => match t.handle.await {
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(_)) => Err(IngestError::Internal(
                        "the Parquet writer stopped early".into(),
                    )),
                    Err(e) => Err(IngestError::Internal(format!(
                        "the Parquet writer failed: {e}"
                    ))),
                },
                None => Err(IngestError::Internal("no writer".into())),
            };
        }
        Ok(())
    }

    /// Closes the files; returns their schema and list (`None` if no batch came).
    async fn finish(&mut self) -> Result<Option<(SchemaRef, Vec<DataFile>)>> {
        let Some(WriterTask {
            schema, tx, handle, ..
        }) = self.writer.take()
        else {
            return Ok(None);
        };
        drop(tx);
        match handle.await {
            Ok(files) => Ok(Some((schema, files?))),
            Err(e) => Err(IngestError::Internal(format!(
                "the Parquet writer failed: {e}"
            ))),
        }
    }

    /// Stops the writer and waits until it has deleted what it wrote.
    async fn cancel(&mut self) {
        if let Some(task) = self.writer.take() {
            task.aborted
                .store(true, std::sync::atomic::Ordering::SeqCst);
            drop(task.tx);
            let _ = task.handle.await;
        }
    }

    /// Tells the writer to stop and delete what it wrote (it finishes on its own).
    fn abort(&mut self) {
        if let Some(task) = self.writer.take() {
            task.aborted
                .store(true, std::sync::atomic::Ordering::SeqCst);
            drop(task.tx);
        }
    }
}

impl Drop for Sink<'_> {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A spooled upload, removed when dropped.
struct SpoolFile(PathBuf);

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads a file as a stream of 1 MiB chunks.
fn file_chunks(file: tokio::fs::File) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
    use tokio::io::AsyncReadExt;
    Box::pin(futures::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    }))
}
