//! The declarative catalog: departments and datasets described in TOML beside their data.
//!
//! ```text
//! catalog/
//!   <department>/department.toml      id (defaults to the directory), name, description
//!   <department>/<dataset>.toml        dataset metadata, columns, and `data = "<file>"`
//!   <department>/<dataset>.csv         the data, beside its manifest
//! ```
//!
//! [`sync`] registers them idempotently: a second run changes nothing, an edited manifest
//! updates metadata and column annotations, and a data file whose SHA-256 differs from the one
//! recorded with the current version is published as a new (replace) version through the same
//! pipeline as an upload.

use crate::error::{IngestError, Result};
use crate::publish::{Publisher, Source, SourceFormat};
use datagate_catalog::{
    CatalogStore, Column, Contact, DatasetMetadata, NewDataset, NewDepartment, VersionMode,
};
use datagate_core::AccessLevel;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `department.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentManifest {
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// `<dataset>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    pub name: Option<String>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub contact: Contact,
    #[serde(default)]
    pub update_frequency: String,
    pub access_level: AccessLevel,
    pub temporal_coverage: Option<String>,
    pub spatial_coverage: Option<String>,
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// The data file, relative to the manifest.
    pub data: Option<String>,
    /// Field delimiter of a CSV data file.
    pub delimiter: Option<String>,
    /// Encoding of a CSV or NDJSON data file that is not UTF-8 (e.g. `gb18030`).
    pub charset: Option<String>,
    pub columns: Vec<Column>,
}

/// What [`sync`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub departments_changed: usize,
    pub datasets_created: usize,
    pub datasets_updated: usize,
    pub versions_published: usize,
}

impl SyncReport {
    pub fn changed_anything(&self) -> bool {
        *self != Self::default()
    }
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| IngestError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        IngestError::Invalid(format!(
            "{}: {}",
            path.display(),
            e.to_string().replace('\n', " ")
        ))
    })
}

fn file_digest(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| IngestError::Invalid(format!("cannot open {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| IngestError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| IngestError::Invalid(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// Registers every department and dataset under `root`.
pub async fn sync(
    root: &Path,
    catalog: &Arc<dyn CatalogStore>,
    publisher: &Publisher,
) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    for dir in sorted_entries(root)? {
        let dept_file = dir.join("department.toml");
        if !dir.is_dir() || !dept_file.exists() {
            continue;
        }
        let dm: DepartmentManifest = read_toml(&dept_file)?;
        let dir_name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let dept_id = dm.id.clone().unwrap_or(dir_name);
        let (_, changed) = catalog
            .upsert_department(NewDepartment {
                id: dept_id.clone(),
                name: dm.name,
                description: dm.description,
            })
            .await
            .map_err(|e| IngestError::Invalid(format!("{}: {e}", dept_file.display())))?;
        report.departments_changed += changed as usize;
        for file in sorted_entries(&dir)? {
            if file.extension().and_then(|e| e.to_str()) != Some("toml") || file == dept_file {
                continue;
            }
            sync_dataset(&dept_id, &file, catalog, publisher, &mut report)
                .await
                .map_err(|e| match e {
                    IngestError::Invalid(m) if m.contains(&file.display().to_string()) => {
                        IngestError::Invalid(m)
                    }
                    other => IngestError::Invalid(format!("{}: {other}", file.display())),
                })?;
        }
    }
    Ok(report)
}

async fn sync_dataset(
    dept: &str,
    file: &Path,
    catalog: &Arc<dyn CatalogStore>,
    publisher: &Publisher,
    report: &mut SyncReport,
) -> Result<()> {
    let m: DatasetManifest = read_toml(file)?;
    let name = m
        .name
        .clone()
        .or_else(|| {
            file.file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let metadata = DatasetMetadata {
        title: m.title.clone(),
        description: m.description.clone(),
        tags: m.tags.clone(),
        license: m.license.clone(),
        contact: m.contact.clone(),
        update_frequency: m.update_frequency.clone(),
        access_level: m.access_level,
        temporal_coverage: m.temporal_coverage.clone(),
        spatial_coverage: m.spatial_coverage.clone(),
    };
    match catalog.get_dataset(dept, &name).await? {
        None => {
            catalog
                .create_dataset(NewDataset {
                    department: dept.to_string(),
                    name: name.clone(),
                    metadata,
                    primary_key: m.primary_key.clone(),
                    columns: m.columns.clone(),
                })
                .await?;
            report.datasets_created += 1;
        }
        Some(existing) => {
            let mut changed = false;
            if let Some(declared) = existing
                .columns
                .iter()
                .zip(&m.columns)
                .find(|(a, b)| a.name != b.name || a.data_type != b.data_type)
            {
                return Err(IngestError::Invalid(format!(
                    "column {:?} changed name or type ({} → {}); publish a new dataset instead",
                    declared.0.name, declared.0.data_type, declared.1.data_type
                )));
            }
            let (_, meta_changed) = catalog
                .update_dataset_metadata(dept, &name, metadata, Some(m.primary_key.clone()))
                .await?;
            changed |= meta_changed;
            if !existing.columns.is_empty() {
                changed |= catalog
                    .update_column_annotations(dept, &name, m.columns.clone())
                    .await?;
            }
            if existing.unpublished_at.is_some() {
                catalog.republish_dataset(dept, &name).await?;
                changed = true;
            }
            report.datasets_updated += changed as usize;
        }
    }
    let Some(data) = &m.data else { return Ok(()) };
    let data_path = file.parent().unwrap_or(Path::new(".")).join(data);
    let digest = file_digest(&data_path)?;
    let current = catalog.get_dataset(dept, &name).await?;
    let current_digest = match current.and_then(|d| d.current_version) {
        Some(v) => catalog
            .get_version(dept, &name, v)
            .await?
            .and_then(|v| v.source_digest),
        None => None,
    };
    if current_digest.as_deref() == Some(digest.as_str()) {
        return Ok(());
    }
    let delimiter = match m.delimiter.as_deref() {
        None => b',',
        Some(d) => SourceFormat::csv_delimiter(d)
            .map_err(|e| IngestError::Invalid(format!("delimiter {d:?}: {e}")))?,
    };
    let charset = m
        .charset
        .as_deref()
        .map(crate::decode::encoding)
        .transpose()
        .map_err(IngestError::Invalid)?
        .flatten();
    let format = SourceFormat::from_path(&data_path, delimiter).ok_or_else(|| {
        IngestError::Invalid(format!(
            "{}: unknown data format (use .csv, .ndjson, .parquet or .arrow)",
            data_path.display()
        ))
    })?;
    let v = publisher
        .publish_file(
            dept,
            &name,
            Source {
                format,
                gzip: data_path.extension().is_some_and(|e| e == "gz"),
                charset,
                mode: VersionMode::Replace,
                digest: Some(digest),
                created_by: "manifest".to_string(),
            },
            &data_path,
        )
        .await?;
    tracing::info!(dataset = %format!("{dept}/{name}"), version = v.version, rows = v.row_count, "published from manifest");
    report.versions_published += 1;
    Ok(())
}
