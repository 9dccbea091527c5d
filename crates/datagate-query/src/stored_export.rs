//! Whole-version Parquet exports that copy the stored row groups instead of decoding and
//! re-encoding them.
//!
//! A version is already Parquet: when a caller exports all of it (no `select`, no `where`) in
//! Parquet and sees every column as stored (nothing masked or withheld from them), the export
//! is the version's row groups, in storage order, copied byte for byte — column chunks, page
//! indexes and bloom filters — under one new footer. Nothing is decoded, so it runs at the
//! speed of the disk and the socket, and memory stays at one copy buffer. Anything else (and a
//! warehouse that is not on the local file system) exports through the engine.

use crate::catalog_provider::TableSnapshot;
use crate::execute::{BodyChunk, Outcome, Report, Sent, StreamError};
use crate::executor::Lane;
use bytes::Bytes;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::ChunkReader;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Bytes handed to the socket at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// The local files of `snapshot`, when an export of it may be a copy of them for a reader
/// with this view; `None` when it has to go through the engine.
pub fn copyable(snapshot: &TableSnapshot) -> Option<Vec<PathBuf>> {
    if snapshot.restricted() || snapshot.file_urls.is_empty() {
        return None;
    }
    snapshot
        .file_urls
        .iter()
        .map(|u| url::Url::parse(u).ok()?.to_file_path().ok())
        .collect()
}

/// Whether `files` can be merged by copying: every footer readable and one Parquet schema
/// (checked before the answer's head is sent; otherwise the export goes through the engine).
pub async fn mergeable(files: &[PathBuf]) -> bool {
    let files = files.to_vec();
    let check = move || {
        let mut first = None;
        for path in &files {
            let file = File::open(path).ok()?;
            let metadata = ParquetMetaDataReader::new().parse_and_finish(&file).ok()?;
            let schema = metadata.file_metadata().schema_descr().root_schema_ptr();
            match &first {
                None => first = Some(schema),
                Some(seen) if *seen != schema => return None,
                Some(_) => {}
            }
        }
        Some(())
    };
    tokio::task::spawn_blocking(check)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// Streams the files, merged into one Parquet file, into the returned channel; `on_end` is
/// called once with what was sent. The copy runs on the blocking pool (it is file I/O); the
/// request's lane is held until it ends.
pub fn stream_copy(
    lane: &Lane,
    files: Vec<PathBuf>,
    sent: Arc<Sent>,
    on_end: impl FnOnce(Report) + Send + 'static,
) -> mpsc::Receiver<Result<BodyChunk, StreamError>> {
    let (tx, rx) = mpsc::channel(4);
    let held = lane.clone();
    tokio::task::spawn_blocking(move || {
        let _lane = held;
        let mut sink = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK_BYTES),
            sent: sent.clone(),
        };
        let outcome = match copy(&files, &mut sink) {
            Ok(()) => match sink.flush() {
                Ok(()) => Outcome::Completed,
                Err(_) => Outcome::Disconnected,
            },
            Err(Failure::Disconnected) => Outcome::Disconnected,
            Err(Failure::Other(e)) => {
                tracing::error!(error = %e, "a stored-Parquet export failed");
                let failure = StreamError::internal(e);
                let _ = tx.blocking_send(Err(failure.clone()));
                Outcome::Failed(failure)
            }
        };
        on_end(Report {
            outcome,
            rows: sent.rows(),
            bytes: sent.bytes(),
            cpu_micros: 0,
        });
    });
    rx
}

enum Failure {
    Disconnected,
    Other(String),
}

/// Writes `files` as one Parquet file into `sink`, counting the rows of each row group written
/// into the sink's [`Sent`].
fn copy(files: &[PathBuf], sink: &mut ChannelWriter) -> Result<(), Failure> {
    let sent = sink.sent.clone();
    let other = |e: parquet::errors::ParquetError| match e {
        parquet::errors::ParquetError::External(ref inner)
            if inner
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Failure::Disconnected
        }
        e => Failure::Other(e.to_string()),
    };
    let mut inputs = Vec::with_capacity(files.len());
    for path in files {
        let file = File::open(path).map_err(|e| Failure::Other(e.to_string()))?;
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&file)
            .map_err(other)?;
        inputs.push((file, metadata));
    }
    let Some((_, first)) = inputs.first() else {
        return Err(Failure::Other("no files to export".into()));
    };
    let schema = first.file_metadata().schema_descr().root_schema_ptr();
    if inputs
        .iter()
        .any(|(_, m)| m.file_metadata().schema_descr().root_schema_ptr() != schema)
    {
        return Err(Failure::Other(
            "the version's files differ in schema".into(),
        ));
    }
    // The Arrow schema the files carry, so readers get the same types back.
    let mut props = WriterProperties::builder().set_created_by(format!(
        "datagate {} (stored row groups)",
        env!("CARGO_PKG_VERSION")
    ));
    if let Some(kv) = first.file_metadata().key_value_metadata() {
        props = props.set_key_value_metadata(Some(kv.clone()));
    }
    let mut writer =
        SerializedFileWriter::new(&mut *sink, schema, Arc::new(props.build())).map_err(other)?;
    for (input, metadata) in &inputs {
        for (g, group) in metadata.row_groups().iter().enumerate() {
            let mut out = writer.next_row_group().map_err(other)?;
            for (c, column) in group.columns().iter().enumerate() {
                let result = ColumnCloseResult {
                    bytes_written: column.compressed_size() as _,
                    rows_written: group.num_rows() as _,
                    metadata: column.clone(),
                    bloom_filter: bloom_filter(input, column),
                    column_index: metadata
                        .column_index()
                        .and_then(|i| i.get(g))
                        .and_then(|r| r.get(c))
                        .cloned(),
                    offset_index: metadata
                        .offset_index()
                        .and_then(|i| i.get(g))
                        .and_then(|r| r.get(c))
                        .cloned(),
                };
                append(&mut out, input, result).map_err(other)?;
            }
            out.close().map_err(other)?;
            sent.add_rows(group.num_rows().unsigned_abs());
        }
    }
    writer.close().map_err(other)?;
    Ok(())
}

fn append<W: Write + Send, R: ChunkReader>(
    out: &mut SerializedRowGroupWriter<'_, W>,
    input: &R,
    result: ColumnCloseResult,
) -> parquet::errors::Result<()> {
    out.append_column(input, result)
}

/// The column chunk's bloom filter, when it has one.
fn bloom_filter(
    input: &File,
    column: &parquet::file::metadata::ColumnChunkMetaData,
) -> Option<parquet::bloom_filter::Sbbf> {
    parquet::bloom_filter::Sbbf::read_from_column_chunk(column, input)
        .ok()
        .flatten()
}

/// A `Write` that hands the bytes to the response body in chunks; a client gone away is a
/// broken pipe.
struct ChannelWriter {
    tx: mpsc::Sender<Result<BodyChunk, StreamError>>,
    buf: Vec<u8>,
    sent: Arc<Sent>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        let n = chunk.len() as u64;
        self.tx
            .blocking_send(Ok(BodyChunk {
                wire: chunk,
                plain: n,
            }))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        self.sent.add_bytes(n);
        Ok(())
    }
}
