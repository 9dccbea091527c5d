//! The records the catalog holds.

use crate::store::{CatalogError, Result};
use chrono::{DateTime, Utc};
use datagate_core::{AccessLevel, ColumnType, Mask, Sensitivity};
use serde::{Deserialize, Serialize};

/// A government department that publishes datasets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Department {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a caller supplies to create or update a department.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDepartment {
    pub id: String,
    pub name: String,
    pub description: String,
}

/// A department with the number of datasets some caller can see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepartmentSummary {
    #[serde(flatten)]
    pub department: Department,
    pub dataset_count: u64,
}

/// One column of a dataset's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub sensitivity: Sensitivity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Mask>,
}

/// A contact point for questions about a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Contact {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
}

/// The descriptive metadata of a dataset, as registered and as patched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMetadata {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub contact: Contact,
    /// e.g. `daily`, `monthly`, `irregular`.
    #[serde(default)]
    pub update_frequency: String,
    pub access_level: AccessLevel,
    /// ISO 8601 interval, e.g. `2020-01-01/2024-12-31`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal_coverage: Option<String>,
    /// A place name or bounding box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spatial_coverage: Option<String>,
}

/// A dataset registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDataset {
    pub department: String,
    pub name: String,
    #[serde(flatten)]
    pub metadata: DatasetMetadata,
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Declared columns; empty = the schema comes from the first upload.
    #[serde(default)]
    pub columns: Vec<Column>,
}

/// A dataset as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub department: String,
    pub name: String,
    #[serde(flatten)]
    pub metadata: DatasetMetadata,
    pub primary_key: Vec<String>,
    /// The schema: declared, or fixed by the first upload; empty before either.
    pub columns: Vec<Column>,
    pub current_version: Option<i64>,
    pub row_count: u64,
    pub size_bytes: u64,
    /// The format the current version was uploaded in (`csv`, `ndjson`, `parquet`, `arrow`).
    #[serde(default)]
    pub source_format: Option<String>,
    /// Set when the dataset was unpublished; such a dataset is invisible and not queryable.
    pub unpublished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Whether a version's files add to the previous version's or replace them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionMode {
    Append,
    Replace,
}

impl VersionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Replace => "replace",
        }
    }
}

impl std::str::FromStr for VersionMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "append" => Ok(Self::Append),
            "replace" => Ok(Self::Replace),
            _ => Err(format!("unknown mode {s:?}; expected append or replace")),
        }
    }
}

/// One Parquet file of a version, by its path inside the warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// A committed version of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: i64,
    pub mode: VersionMode,
    pub rows_added: u64,
    pub row_count: u64,
    pub bytes: u64,
    pub files: Vec<DataFile>,
    pub columns: Vec<Column>,
    /// Digest of the source that produced the version (used by the manifest loader).
    pub source_digest: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The format the version was uploaded in (`csv`, `ndjson`, `parquet`, `arrow`).
    #[serde(default)]
    pub source_format: Option<String>,
}

/// What an ingest hands to the catalog to commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewVersion {
    /// The version the ingest started from; the commit fails with a conflict if it moved.
    pub base_version: Option<i64>,
    pub mode: VersionMode,
    /// The files this upload wrote; with `Append` they are added to the base version's files.
    pub new_files: Vec<DataFile>,
    /// With `Append`: the base version's last files that `new_files` take the place of (its
    /// small trailing files rewritten with the upload's rows into fewer, in the same order);
    /// empty otherwise.
    #[serde(default)]
    pub compacted: Vec<String>,
    /// The schema of the version; fixes the dataset's columns on the first commit.
    pub columns: Vec<Column>,
    pub source_digest: Option<String>,
    /// The format the upload came in (`csv`, `ndjson`, `parquet`, `arrow`).
    #[serde(default)]
    pub source_format: Option<String>,
    pub created_by: String,
}

/// A search over the datasets some caller can see.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatasetFilter {
    /// Open levels the caller can see; an empty list sees nothing.
    pub visible_levels: Vec<AccessLevel>,
    /// Words searched in title, description and tags (all must match).
    pub q: Option<String>,
    /// Each word of `q` may also be found in the dataset's SQL name, `department.name`
    /// (a table search: a SQL console's list of tables).
    pub q_names: bool,
    pub department: Option<String>,
    pub tag: Option<String>,
    pub access_level: Option<AccessLevel>,
    pub limit: u64,
    pub offset: u64,
    /// Unpublished datasets only (what their department may publish again), instead of the
    /// published ones only.
    pub unpublished: bool,
    /// The datasets without their columns (`columns` left empty): for a listing that shows
    /// no schema, spared loading every dataset's columns.
    pub skip_columns: bool,
    /// Only datasets updated this often (`daily`, `monthly`, ... as registered).
    pub update_frequency: Option<String>,
    /// Only datasets whose current version was uploaded in this format (`csv`, `parquet`, ...).
    pub source_format: Option<String>,
    /// The order of the matches, which `limit` and `offset` page through.
    pub order: DatasetOrder,
}

/// How a dataset search is ordered. Ties (and the default) go by department, then name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatasetOrder {
    /// By department, then name.
    #[default]
    Name,
    /// Most recently updated first.
    Updated,
    /// By title (by its bytes, as in UTF-8: the same on every backend).
    Title,
}

impl DatasetOrder {
    /// The `ORDER BY` text (over `datasets d`) of this order; `by_bytes` makes the backend
    /// compare titles by their bytes (empty where it does already).
    pub(crate) fn sql(self, by_bytes: &str) -> String {
        match self {
            DatasetOrder::Name => "d.department_id, d.name".into(),
            DatasetOrder::Updated => "d.updated_at DESC, d.department_id, d.name".into(),
            DatasetOrder::Title => format!("d.title{by_bytes}, d.department_id, d.name"),
        }
    }

    /// Where `a` goes beside `b` in this order.
    pub fn compare(self, a: &Dataset, b: &Dataset) -> std::cmp::Ordering {
        let by_key = || (&a.department, &a.name).cmp(&(&b.department, &b.name));
        match self {
            DatasetOrder::Name => by_key(),
            DatasetOrder::Updated => b.updated_at.cmp(&a.updated_at).then_with(by_key),
            DatasetOrder::Title => a.metadata.title.cmp(&b.metadata.title).then_with(by_key),
        }
    }
}

/// How many of a search's matches have each value of the fields a catalog is browsed by
/// (facets); each list by count, most first, then by value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatasetFacets {
    pub department: Vec<(String, u64)>,
    pub access_level: Vec<(String, u64)>,
    /// A dataset counts once under each of its tags.
    pub tag: Vec<(String, u64)>,
    /// Datasets without one are not counted.
    pub update_frequency: Vec<(String, u64)>,
    /// Of the current version; datasets without a version are not counted.
    pub source_format: Vec<(String, u64)>,
}

impl DatasetFacets {
    /// The one statement both backends count facets with, over the matches of `where_sql`
    /// (over `datasets d`) found once: rows of (field, value, count), each field named as
    /// this struct names it. `tag_values` is the backend's set of a dataset's tags, as a
    /// table `t` with a column `value`.
    pub(crate) fn statement(where_sql: &str, tag_values: &str) -> String {
        format!(
            "WITH m AS MATERIALIZED (SELECT d.id, d.department_id, d.access_level, \
                    d.update_frequency, d.tags, d.current_version FROM datasets d \
                    WHERE {where_sql}) \
             SELECT 'department', department_id, COUNT(*) FROM m GROUP BY 2 \
             UNION ALL SELECT 'access_level', access_level, COUNT(*) FROM m GROUP BY 2 \
             UNION ALL SELECT 'update_frequency', update_frequency, COUNT(*) FROM m \
                WHERE update_frequency <> '' GROUP BY 2 \
             UNION ALL SELECT 'tag', t.value, COUNT(DISTINCT m.id) \
                FROM m, {tag_values} WHERE t.value <> '' GROUP BY 2 \
             UNION ALL SELECT 'source_format', v.source_format, COUNT(*) FROM m \
                JOIN versions v ON v.dataset_id = m.id AND v.version = m.current_version \
                WHERE v.source_format IS NOT NULL AND v.source_format <> '' GROUP BY 2"
        )
    }

    /// Files a row of [`DatasetFacets::statement`] under its field.
    pub(crate) fn add(&mut self, field: &str, value: String, count: i64) -> crate::Result<()> {
        let list = match field {
            "department" => &mut self.department,
            "access_level" => &mut self.access_level,
            "tag" => &mut self.tag,
            "update_frequency" => &mut self.update_frequency,
            "source_format" => &mut self.source_format,
            other => {
                return Err(crate::CatalogError::Backend(format!(
                    "a facet of an unknown field {other:?}"
                )));
            }
        };
        list.push((value, count.max(0) as u64));
        Ok(())
    }

    /// Puts each list in the facets' order: most first, then by value.
    pub fn sorted(mut self) -> Self {
        for list in [
            &mut self.department,
            &mut self.access_level,
            &mut self.tag,
            &mut self.update_frequency,
            &mut self.source_format,
        ] {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        }
        self
    }
}

/// One page of a dataset search.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetPage {
    pub datasets: Vec<Dataset>,
    pub total: u64,
}

/// The `LIKE` pattern of a search word: the word anywhere, its `%`, `_` and `\` literal
/// (escaped with `\`).
pub(crate) fn like_pattern(word: &str) -> String {
    let escaped = word
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The keys of `keys` that `found` (their answers from a cache, in order) has none for.
pub(crate) fn missed<K: Clone, T>(keys: &[K], found: &[Option<T>]) -> Vec<K> {
    keys.iter()
        .zip(found)
        .filter(|(_, hit)| hit.is_none())
        .map(|(key, _)| key.clone())
        .collect()
}

/// The files of a new version and the rows it adds: the base version's files (an append),
/// less the trailing ones `compacted` says the new files replace, then the new files. The
/// same for every backend.
pub(crate) fn version_files(base: Vec<DataFile>, nv: &NewVersion) -> Result<(Vec<DataFile>, u64)> {
    let mut files = base;
    let mut replaced_rows = 0u64;
    if !nv.compacted.is_empty() {
        let keep = files.len().checked_sub(nv.compacted.len());
        let tail_matches = keep.is_some_and(|k| {
            files[k..]
                .iter()
                .map(|f| f.path.as_str())
                .eq(nv.compacted.iter().map(String::as_str))
        });
        if nv.mode != VersionMode::Append || !tail_matches {
            return Err(CatalogError::Invalid(
                "a compaction replaces the base version's last files, in order".into(),
            ));
        }
        let keep = keep.unwrap_or(0);
        replaced_rows = files[keep..].iter().map(|f| f.rows).sum();
        files.truncate(keep);
    }
    files.extend(nv.new_files.iter().cloned());
    let new_rows: u64 = nv.new_files.iter().map(|f| f.rows).sum();
    Ok((files, new_rows.saturating_sub(replaced_rows)))
}

/// Checks a department: an id of the API's form and a name to show it by.
pub(crate) fn validate_department(d: &NewDepartment) -> Result<()> {
    datagate_core::validate_name("department id", &d.id)
        .map_err(|e| CatalogError::Invalid(e.to_string()))?;
    if d.name.trim().is_empty() {
        return Err(CatalogError::Invalid(format!(
            "department {} needs a name",
            d.id
        )));
    }
    Ok(())
}

/// Checks a dataset's metadata: a title (the catalog, the portal and DCAT list datasets by it),
/// no blank tag nor one given twice (the portal and DCAT list tags as a set), and a contact e-mail, when given, that is an address (DCAT writes it as a
/// `mailto:`). Every backend checks the same way, on registration and on every change.
pub(crate) fn validate_metadata(m: &DatasetMetadata) -> Result<()> {
    if m.title.trim().is_empty() {
        return Err(CatalogError::Invalid("title is empty".into()));
    }
    if m.tags.iter().any(|t| t.trim().is_empty()) {
        return Err(CatalogError::Invalid("a tag is empty".into()));
    }
    if let Some((i, tag)) = m
        .tags
        .iter()
        .enumerate()
        .find(|(i, t)| m.tags[..*i].contains(t))
    {
        return Err(CatalogError::Invalid(format!(
            "tag {tag:?} is given twice (tags[{i}])"
        )));
    }
    let email = m.contact.email.trim();
    if !email.is_empty()
        && (email.contains(char::is_whitespace)
            || !email
                .split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && host.contains('.')))
    {
        return Err(CatalogError::Invalid(format!(
            "contact.email {email:?} is not an e-mail address"
        )));
    }
    Ok(())
}

/// Checks declared columns: names present and unique, masked columns naming a mask, and every
/// primary-key column declared (when columns are declared). Every backend checks the same way.
pub(crate) fn validate_columns(columns: &[Column], primary_key: &[String]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if let Some(problem) = datagate_core::column_name_problem(&c.name) {
            return Err(CatalogError::Invalid(problem));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(CatalogError::Invalid(format!(
                "column {:?} is declared twice",
                c.name
            )));
        }
        if c.sensitivity == datagate_core::Sensitivity::Masked && c.mask.is_none() {
            return Err(CatalogError::Invalid(format!(
                "column {:?} is masked but names no mask",
                c.name
            )));
        }
    }
    let mut keys = std::collections::HashSet::new();
    if let Some(k) = primary_key.iter().find(|k| !keys.insert(k.as_str())) {
        return Err(CatalogError::Invalid(format!(
            "primary key column {k:?} is named twice"
        )));
    }
    if !columns.is_empty() {
        for k in primary_key {
            if !seen.contains(k.as_str()) {
                return Err(CatalogError::Invalid(format!(
                    "primary key column {k:?} is not a declared column"
                )));
            }
        }
    }
    Ok(())
}

/// The annotation changes `columns` asks of a dataset whose columns are `existing`: the columns
/// whose description, sensitivity or mask differ (each backend writes those). An unknown column
/// or a masked column without a mask is refused. The same rule in every backend.
pub(crate) fn annotation_changes<'a>(
    dataset: &str,
    existing: &[Column],
    columns: &'a [Column],
) -> Result<Vec<&'a Column>> {
    let mut changed = Vec::new();
    for col in columns {
        let Some(old) = existing.iter().find(|e| e.name == col.name) else {
            return Err(CatalogError::Invalid(format!(
                "dataset {dataset} has no column {:?}",
                col.name
            )));
        };
        if col.sensitivity == datagate_core::Sensitivity::Masked && col.mask.is_none() {
            return Err(CatalogError::Invalid(format!(
                "column {:?} is masked but names no mask",
                col.name
            )));
        }
        if old.description != col.description
            || old.sensitivity != col.sensitivity
            || old.mask != col.mask
        {
            changed.push(col);
        }
    }
    Ok(changed)
}

/// The dataset's schema after a version with `version_columns`: it follows the newest version,
/// declared columns keeping their annotations (with the version's type) and new columns (a
/// replace may add nullable ones) taken as they come. The same rule in every backend.
pub(crate) fn merged_columns(existing: &[Column], version_columns: &[Column]) -> Vec<Column> {
    version_columns
        .iter()
        .map(|col| match existing.iter().find(|c| c.name == col.name) {
            Some(old) => Column {
                data_type: col.data_type,
                ..old.clone()
            },
            None => col.clone(),
        })
        .collect()
}
