//! Turning a byte stream into the next committed version of a dataset.

use crate::decode::{CsvDecoder, CsvOptions};
use crate::error::{IngestError, Result};
use crate::warehouse::Warehouse;
use crate::writer::{VersionWriter, delete_files};
use arrow::datatypes::{Field, Schema, SchemaRef};
use bytes::Bytes;
use datagate_catalog::{CatalogStore, Column, Dataset, NewVersion, Version, VersionMode};
use datagate_core::config::IngestConfig;
use futures::{Stream, StreamExt};
use std::sync::Arc;

/// The format of an upload.
#[derive(Debug, Clone, Copy)]
pub enum SourceFormat {
    Csv { delimiter: u8 },
}

/// Where an upload comes from and who sends it.
#[derive(Debug, Clone)]
pub struct Source {
    pub format: SourceFormat,
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
}

impl Publisher {
    pub fn new(catalog: Arc<dyn CatalogStore>, warehouse: Warehouse, cfg: IngestConfig) -> Self {
        Self {
            catalog,
            warehouse,
            cfg,
        }
    }

    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// Decodes `body` and commits it as the next version of `department/name`.
    /// On any error nothing of the upload stays visible and its files are deleted.
    pub async fn publish<S, E>(
        &self,
        department: &str,
        name: &str,
        source: Source,
        mut body: S,
    ) -> Result<Version>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let dataset = self.live_dataset(department, name).await?;
        if dataset.columns.is_empty() {
            return Err(IngestError::Invalid(format!(
                "dataset {department}/{name} declares no columns"
            )));
        }
        let schema = arrow_schema(&dataset.columns);
        let mut writer = VersionWriter::new(
            &self.warehouse,
            department,
            name,
            schema.clone(),
            &self.cfg,
            &dataset.primary_key,
        );
        let decoded: Result<()> = async {
            let SourceFormat::Csv { delimiter } = source.format;
            let mut decoder = CsvDecoder::new(
                schema.clone(),
                CsvOptions {
                    delimiter,
                    batch_rows: self.cfg.batch_rows,
                },
            );
            while let Some(chunk) = body.next().await {
                let chunk = chunk
                    .map_err(|e| IngestError::invalid_data(format!("reading the upload: {e}")))?;
                for batch in decoder.push(&chunk)? {
                    writer.write(&batch).await?;
                }
            }
            for batch in decoder.finish()? {
                writer.write(&batch).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = decoded {
            writer.abort().await;
            return Err(e);
        }
        let files = match writer.finish().await {
            Ok(f) => f,
            Err(e) => return Err(e),
        };
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let committed = self
            .catalog
            .commit_version(
                department,
                name,
                NewVersion {
                    base_version: dataset.current_version,
                    mode: source.mode,
                    new_files: files,
                    columns: dataset.columns.clone(),
                    source_digest: source.digest,
                    created_by: source.created_by,
                },
            )
            .await;
        match committed {
            Ok(v) => Ok(v),
            Err(e) => {
                delete_files(&self.warehouse, &paths).await;
                Err(e.into())
            }
        }
    }

    /// Publishes a local file, read in chunks.
    pub async fn publish_file(
        &self,
        department: &str,
        name: &str,
        source: Source,
        path: &std::path::Path,
    ) -> Result<Version> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| IngestError::NotFound(format!("cannot open {}: {e}", path.display())))?;
        let stream = tokio_util_stream(file);
        self.publish(department, name, source, stream).await
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

/// Reads a file as a stream of 1 MiB chunks.
fn tokio_util_stream(file: tokio::fs::File) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
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
