//! Compaction of small appends: a dataset appended to every hour would otherwise end up with
//! one Parquet file per append, thousands a year, and every query of it opens them all (on
//! 1,000 appended files of 24 rows, a `GROUP BY` took 25 times as long as over the same rows
//! in one file).
//!
//! When an append would leave its version ending in more than `ingest.compact_after_files`
//! small files (under `ingest.small_file_bytes`, the upload's own included), those files are
//! read back in order and written again as one file of the new version, with the same writer
//! (statistics, page index, the key's bloom filters) as any upload; the catalog commits it in
//! place of them ([`datagate_catalog::NewVersion::compacted`]). Row order is kept (they are
//! the version's last files, rewritten in order), versions before keep their own files, and a
//! file grown past the small size is left alone from then on. A compaction rewrites at most
//! `compact_after_files` small files and the upload (64 MiB by default, read one file at a
//! time); an hourly feed's rewrites about its last compacted file and the appends since, and
//! its version stays at its size over `small_file_bytes` files plus at most that many small ones.

use crate::error::{IngestError, Result};
use crate::warehouse::Warehouse;
use crate::writer::VersionWriter;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datagate_catalog::{DataFile, Dataset};
use datagate_core::config::IngestConfig;
use object_store::ObjectStoreExt as _;
use object_store::path::Path as ObjectPath;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// An upload's files compacted with the base version's last small files.
pub struct Compacted {
    /// The files written: the new version's last files.
    pub files: Vec<DataFile>,
    /// The base version's files they replace, in order.
    pub replaced: Vec<String>,
}

/// The base version's trailing small files, when they and the upload's `new_files` (all small)
/// are more than the configured count.
fn to_compact<'a>(
    cfg: &IngestConfig,
    base: &'a [DataFile],
    new_files: &[DataFile],
) -> Option<&'a [DataFile]> {
    let small = |f: &DataFile| f.bytes < cfg.small_file_bytes;
    if cfg.compact_after_files == 0 || new_files.is_empty() || !new_files.iter().all(small) {
        return None;
    }
    let tail = base.iter().rev().take_while(|f| small(f)).count();
    (tail > 0 && tail + new_files.len() > cfg.compact_after_files)
        .then(|| &base[base.len() - tail..])
}

/// Rewrites the base version's trailing small files and the upload's `new_files` into one
/// file when `to_compact` says so; `None` when there is nothing to compact, or when a file
/// does not read back in the upload's schema (the append then commits as it is).
pub async fn compact(
    warehouse: &Warehouse,
    cfg: &IngestConfig,
    dataset: &Dataset,
    schema: SchemaRef,
    base: &[DataFile],
    new_files: &[DataFile],
) -> Result<Option<Compacted>> {
    let Some(tail) = to_compact(cfg, base, new_files) else {
        return Ok(None);
    };
    let mut writer = VersionWriter::new(
        warehouse,
        &dataset.department,
        &dataset.name,
        schema.clone(),
        cfg,
        &dataset.primary_key,
    );
    for file in tail.iter().chain(new_files) {
        let batches = match read_file(warehouse, &file.path, schema.clone()).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %file.path, error = %e,
                    "a small file does not read back in the upload's schema; the append is not compacted");
                writer.abort().await;
                return Ok(None);
            }
        };
        for batch in &batches {
            if let Err(e) = writer.write(batch).await {
                writer.abort().await;
                return Err(e);
            }
        }
    }
    let files = writer.finish().await?;
    tracing::info!(
        dataset = %format!("{}/{}", dataset.department, dataset.name),
        files = tail.len() + new_files.len(),
        "compacted the version's small trailing files into one"
    );
    Ok(Some(Compacted {
        files,
        replaced: tail.iter().map(|f| f.path.clone()).collect(),
    }))
}

/// The rows of a (small) warehouse file, as batches of `schema`.
async fn read_file(
    warehouse: &Warehouse,
    path: &str,
    schema: SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let bytes = warehouse
        .store()
        .get(&ObjectPath::from(path))
        .await
        .map_err(|e| IngestError::Internal(format!("cannot read {path}: {e}")))?
        .bytes()
        .await
        .map_err(|e| IngestError::Internal(format!("cannot read {path}: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        reader
            .map(|batch| {
                let batch = batch.map_err(|e| IngestError::Internal(e.to_string()))?;
                RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                    .map_err(|e| IngestError::Internal(e.to_string()))
            })
            .collect()
    })
    .await
    .map_err(|e| IngestError::Internal(format!("reading a small file failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, bytes: u64) -> DataFile {
        DataFile {
            path: name.into(),
            rows: 1,
            bytes,
        }
    }

    #[test]
    fn only_a_long_enough_run_of_small_last_files_is_compacted() {
        let cfg = IngestConfig {
            compact_after_files: 3,
            small_file_bytes: 100,
            ..Default::default()
        };
        let names = |t: Option<&[DataFile]>| {
            t.map(|t| t.iter().map(|f| f.path.clone()).collect::<Vec<_>>())
        };
        let base = [f("big", 1000), f("a", 10), f("b", 10), f("c", 10)];
        // Three small last files and one new: more than three.
        assert_eq!(
            names(to_compact(&cfg, &base, &[f("new", 10)])),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        // Two and one: not more than three.
        assert_eq!(
            to_compact(&cfg, &base[..3], &[f("new", 10)]).map(<[_]>::len),
            None
        );
        // A large upload is written as it is.
        assert!(to_compact(&cfg, &base, &[f("new", 1000)]).is_none());
        // The run stops at the first large file from the end.
        let base = [f("a", 10), f("b", 10), f("big", 1000), f("c", 10)];
        assert!(to_compact(&cfg, &base, &[f("new", 10)]).is_none());
        // Off.
        let off = IngestConfig {
            compact_after_files: 0,
            ..cfg
        };
        assert!(
            to_compact(
                &off,
                &[f("a", 1), f("b", 1), f("c", 1), f("d", 1)],
                &[f("n", 1)]
            )
            .is_none()
        );
    }
}
