//! The JSON shapes of the API (API.md §5), with their OpenAPI schemas.

use chrono::{DateTime, Utc};
use datagate_catalog::{Column, Dataset, DepartmentSummary, Version};
use datagate_core::Sensitivity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// A department and how many datasets the caller can see in it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DepartmentOut {
    pub id: String,
    pub name: String,
    pub description: String,
    pub dataset_count: u64,
}

impl From<DepartmentSummary> for DepartmentOut {
    fn from(d: DepartmentSummary) -> Self {
        Self {
            id: d.department.id,
            name: d.department.name,
            description: d.department.description,
            dataset_count: d.dataset_count,
        }
    }
}

/// One column as the caller sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ColumnOut {
    pub name: String,
    /// Arrow type name in lower case, e.g. `utf8`, `int64`, `timestamp(us)`, `decimal128(18,2)`.
    #[serde(rename = "type")]
    pub data_type: String,
    pub description: String,
    /// `public`, `masked` or `private`.
    pub sensitivity: String,
    /// For masked columns: `hash`, `redact`, `partial`, `year` or `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
}

impl From<&Column> for ColumnOut {
    fn from(c: &Column) -> Self {
        Self {
            name: c.name.clone(),
            data_type: c.data_type.to_string(),
            description: c.description.clone(),
            sensitivity: c.sensitivity.as_str().to_string(),
            mask: c.mask.map(|m| m.as_str().to_string()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContactOut {
    pub name: String,
    pub email: String,
}

/// A dataset's metadata, schema and current state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatasetOut {
    pub department: String,
    pub name: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub license: String,
    pub contact: ContactOut,
    pub update_frequency: String,
    /// `open`, `conditional` or `shared`.
    pub access_level: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporal_coverage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spatial_coverage: Option<String>,
    pub primary_key: Vec<String>,
    pub schema: Vec<ColumnOut>,
    pub current_version: Option<i64>,
    pub row_count: u64,
    pub size_bytes: u64,
    /// The format the department uploaded the current version in: `csv`, `ndjson`, `parquet`
    /// or `arrow` (every dataset is served in all five export formats whatever this is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_format: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `self`, `rows`, `export`, `versions`.
    pub links: BTreeMap<String, String>,
    /// Version history, newest first (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionOut>>,
    /// How much the dataset is read, from the audit log.
    pub usage: UsageOut,
}

/// Reads and downloads of a dataset, counted from the audit log: a read is a 2xx rows page or
/// SQL query that read it, a download a 2xx export.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageOut {
    pub reads_30d: u64,
    pub downloads_30d: u64,
    pub reads_total: u64,
    pub downloads_total: u64,
    /// Dataset detail only: each of the last 30 days (UTC), oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<Vec<DayUsageOut>>,
}

/// A dataset's reads and downloads on one day.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DayUsageOut {
    pub day: chrono::NaiveDate,
    pub reads: u64,
    pub downloads: u64,
}

impl From<datagate_audit::usage::DatasetUsage> for UsageOut {
    fn from(u: datagate_audit::usage::DatasetUsage) -> Self {
        Self {
            reads_30d: u.reads_30d,
            downloads_30d: u.downloads_30d,
            reads_total: u.reads_total,
            downloads_total: u.downloads_total,
            daily: None,
        }
    }
}

impl DatasetOut {
    /// The dataset as a caller sees it: `private` columns only when `sees_private`.
    pub fn new(d: &Dataset, base_url: &str, sees_private: bool) -> Self {
        let m = &d.metadata;
        let path = format!("{base_url}/api/v1/datasets/{}/{}", d.department, d.name);
        let links = BTreeMap::from([
            ("self".to_string(), path.clone()),
            ("rows".to_string(), format!("{path}/rows")),
            ("export".to_string(), format!("{path}/export")),
            ("versions".to_string(), format!("{path}/versions")),
        ]);
        Self {
            department: d.department.clone(),
            name: d.name.clone(),
            title: m.title.clone(),
            description: m.description.clone(),
            tags: m.tags.clone(),
            license: m.license.clone(),
            contact: ContactOut {
                name: m.contact.name.clone(),
                email: m.contact.email.clone(),
            },
            update_frequency: m.update_frequency.clone(),
            access_level: m.access_level.as_str().to_string(),
            temporal_coverage: m.temporal_coverage.clone(),
            spatial_coverage: m.spatial_coverage.clone(),
            primary_key: d.primary_key.clone(),
            schema: d
                .columns
                .iter()
                .filter(|c| sees_private || c.sensitivity != Sensitivity::Private)
                .map(ColumnOut::from)
                .collect(),
            current_version: d.current_version,
            row_count: d.row_count,
            size_bytes: d.size_bytes,
            source_format: d.source_format.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            links,
            versions: None,
            usage: UsageOut::default(),
        }
    }

    /// With the dataset's usage counters from `log`.
    pub fn with_usage(mut self, log: &datagate_audit::AuditLog) -> Self {
        let name = format!("{}.{}", self.department, self.name);
        self.usage = log
            .usage()
            .get(&name, chrono::Utc::now().date_naive())
            .into();
        self
    }

    /// With the per-day series of the last 30 days as well (dataset detail).
    pub fn with_daily_usage(mut self, log: &datagate_audit::AuditLog) -> Self {
        let name = format!("{}.{}", self.department, self.name);
        let days = log.usage().daily(&name, chrono::Utc::now().date_naive());
        self.usage.daily = Some(
            days.into_iter()
                .map(|(day, reads, downloads)| DayUsageOut {
                    day,
                    reads,
                    downloads,
                })
                .collect(),
        );
        self
    }
}

/// One page of the datasets the caller sees.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetOut>,
    pub total: u64,
}

/// One entry of a dataset's version history; also the answer to an upload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionOut {
    pub version: i64,
    /// `append` or `replace`.
    pub mode: String,
    pub rows_added: u64,
    pub row_count: u64,
    pub bytes: u64,
    pub files: usize,
    /// The format the version was uploaded in: `csv`, `ndjson`, `parquet` or `arrow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_format: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

impl From<&Version> for VersionOut {
    fn from(v: &Version) -> Self {
        Self {
            version: v.version,
            mode: v.mode.as_str().to_string(),
            rows_added: v.rows_added,
            row_count: v.row_count,
            bytes: v.bytes,
            files: v.files.len(),
            source_format: v.source_format.clone(),
            created_at: v.created_at,
            created_by: v.created_by.clone(),
        }
    }
}

/// Query parameters of `GET /api/v1/datasets`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DatasetQuery {
    /// Words searched in title, description and tags; all must match.
    pub q: Option<String>,
    /// Only this department's datasets.
    pub department: Option<String>,
    /// Only datasets with this tag.
    pub tag: Option<String>,
    /// Only this open level: `open`, `conditional` or `shared`.
    pub access_level: Option<String>,
    /// Page size, 1..=1000 (default 20).
    pub limit: Option<u64>,
    /// Entries to skip (default 0).
    pub offset: Option<u64>,
    /// `name` (by department, then name: the default), `updated` (newest first), `title`, or
    /// `reads` (most read in the last 30 days first, then most read ever).
    pub sort: Option<String>,
}

/// The problem+json body of every error (RFC 9457); fields that help may follow (`line`,
/// `column`, `position`, `parameter`, `violated_policies`, ...).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "https://datagate.dev/problems/invalid-query",
    "title": "Bad Request",
    "status": 400,
    "detail": "unknown column `distrct` (did you mean `district`?)",
    "request_id": "01a22af0-16cf-7520-bf03-2e40f1ca9161",
    "line": 1,
    "column": 8
}))]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub request_id: String,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Each component: `ok` or why it is not usable.
    pub checks: BTreeMap<String, String>,
}

/// A result's column as the JSON format describes it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResultColumn {
    pub name: String,
    /// Arrow type name in lower case.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A page or a query result in the JSON format (`format=json`); the other formats carry the
/// same rows as NDJSON lines, CSV, an Arrow IPC stream or a Parquet file.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "columns": [{"name": "district", "type": "utf8"}, {"name": "n", "type": "int64"}],
    "rows": [{"district": "东城区", "n": 42}],
    "next": null,
    "row_count": 1,
    "truncated": false
}))]
pub struct DataPage {
    pub columns: Vec<ResultColumn>,
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The next page's URL, or null on the last page.
    pub next: Option<String>,
    pub row_count: u64,
    /// True when a query's result was cut at the row or byte limit.
    pub truncated: bool,
}
