//! The JSON shapes of the API (API.md §5), with their OpenAPI schemas.

use chrono::{DateTime, Utc};
use datagate_catalog::{Application, Column, Dataset, DepartmentSummary, Grant, Version};
use datagate_core::Sensitivity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// A department and how many datasets the caller can see in it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"id": "transport", "name": "交通运输局", "description": "负责公共交通、道路运输管理。Transport: public transit and road transport.", "dataset_count": 2})))]
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
#[schema(examples(json!({"name": "applicant_name", "type": "utf8", "description": "申请人姓名", "sensitivity": "masked", "mask": "partial"})))]
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
#[schema(examples(json!({"name": "交通运输局信息中心", "email": "xinxi@jtj.example.gov.cn"})))]
pub struct ContactOut {
    pub name: String,
    pub email: String,
}

/// A dataset's metadata, schema and current state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"department": "transport", "name": "bus_lines", "title": "公交线路", "description": "全市公交线路基本信息，含首末班时间与票价。Bus lines with terminals, service hours and fares.", "tags": ["公共交通", "公交", "transport"], "license": "CC-BY-4.0", "contact": {"name": "交通运输局信息中心", "email": "xinxi@jtj.example.gov.cn"}, "update_frequency": "monthly", "access_level": "open", "spatial_coverage": "全市", "primary_key": ["line_id"], "schema": [{"name": "line_id", "type": "utf8", "description": "线路编码", "sensitivity": "public"}, {"name": "line_name", "type": "utf8", "description": "线路名称", "sensitivity": "public"}, {"name": "fare", "type": "decimal128(5,2)", "description": "票价（元）", "sensitivity": "public"}], "current_version": 3, "row_count": 1200, "size_bytes": 25537, "source_format": "csv", "created_at": "2026-10-08T02:15:40.616Z", "updated_at": "2026-11-30T08:00:12.634Z", "links": {"self": "https://data.example.gov.cn/api/v1/datasets/transport/bus_lines", "rows": "https://data.example.gov.cn/api/v1/datasets/transport/bus_lines/rows", "export": "https://data.example.gov.cn/api/v1/datasets/transport/bus_lines/export", "versions": "https://data.example.gov.cn/api/v1/datasets/transport/bus_lines/versions"}, "usage": {"reads_30d": 1843, "downloads_30d": 37, "reads_total": 25210, "downloads_total": 512}})))]
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
    /// The columns as the caller sees them; absent from a listing asked with `schema=false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<ColumnOut>>,
    pub current_version: Option<i64>,
    pub row_count: u64,
    pub size_bytes: u64,
    /// The format the department uploaded the current version in: `csv`, `ndjson`, `parquet`
    /// or `arrow` (every dataset is served in all five export formats whatever this is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_format: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the department unpublished it (only in its own `?unpublished=true` listing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpublished_at: Option<DateTime<Utc>>,
    /// `self`, `rows`, `export`, `versions`.
    pub links: BTreeMap<String, String>,
    /// The latest versions, newest first, at most 20 (detail only); the whole history is at
    /// `links.versions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionOut>>,
    /// How many versions there are (detail only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions_total: Option<u64>,
    /// How much the dataset is read, from the audit log.
    pub usage: UsageOut,
}

/// Reads and downloads of a dataset, counted from the audit log: a read is a 2xx rows page or
/// SQL query that read it, a download a 2xx export.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"reads_30d": 1843, "downloads_30d": 37, "reads_total": 25210, "downloads_total": 512, "daily": [{"day": "2026-11-30", "reads": 71, "downloads": 2}, {"day": "2026-12-01", "reads": 64, "downloads": 1}]})))]
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
#[schema(examples(json!({"day": "2026-12-01", "reads": 64, "downloads": 1})))]
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
            schema: Some(
                d.columns
                    .iter()
                    .filter(|c| sees_private || c.sensitivity != Sensitivity::Private)
                    .map(ColumnOut::from)
                    .collect(),
            ),
            current_version: d.current_version,
            row_count: d.row_count,
            size_bytes: d.size_bytes,
            source_format: d.source_format.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            unpublished_at: d.unpublished_at,
            links,
            versions: None,
            versions_total: None,
            usage: UsageOut::default(),
        }
    }

    /// The columns as the caller sees them (none when the answer was asked without them).
    pub fn columns(&self) -> &[ColumnOut] {
        self.schema.as_deref().unwrap_or_default()
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
#[schema(examples(json!({"datasets": [{"department": "transport", "name": "bus_lines", "title": "公交线路", "description": "全市公交线路基本信息，含首末班时间与票价。Bus lines with terminals, service hours and fares.", "tags": ["公共交通", "公交", "transport"], "license": "CC-BY-4.0", "contact": {"name": "交通运输局信息中心", "email": "xinxi@jtj.example.gov.cn"}, "update_frequency": "monthly", "access_level": "open", "spatial_coverage": "全市", "primary_key": ["line_id"], "schema": [{"name": "line_id", "type": "utf8", "description": "线路编码", "sensitivity": "public"}, {"name": "line_name", "type": "utf8", "description": "线路名称", "sensitivity": "public"}, {"name": "fare", "type": "decimal128(5,2)", "description": "票价（元）", "sensitivity": "public"}], "current_version": 3, "row_count": 1200, "size_bytes": 25537, "source_format": "csv", "created_at": "2026-10-08T02:15:40.616Z", "updated_at": "2026-11-30T08:00:12.634Z", "links": {"self": "https://data.example.gov.cn/api/v1/datasets/transport/bus_lines", "rows": "https://data.example.gov.cn/api/v1/datasets/transport/bus_lines/rows", "export": "https://data.example.gov.cn/api/v1/datasets/transport/bus_lines/export", "versions": "https://data.example.gov.cn/api/v1/datasets/transport/bus_lines/versions"}, "usage": {"reads_30d": 1843, "downloads_30d": 37, "reads_total": 25210, "downloads_total": 512}}], "total": 9})))]
pub struct DatasetList {
    pub datasets: Vec<DatasetOut>,
    pub total: u64,
    /// With `facets=true`: how many of the `total` matches have each value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facets: Option<DatasetFacetsOut>,
}

/// How many of a listing's matches have each value of a field, most first (then by value).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"department": [{"value": "transport", "count": 3}, {"value": "justice", "count": 2}], "access_level": [{"value": "open", "count": 4}, {"value": "conditional", "count": 1}], "tag": [{"value": "transport", "count": 3}], "update_frequency": [{"value": "monthly", "count": 2}], "source_format": [{"value": "csv", "count": 5}]})))]
pub struct DatasetFacetsOut {
    pub department: Vec<FacetCount>,
    pub access_level: Vec<FacetCount>,
    /// A dataset counts under each of its tags.
    pub tag: Vec<FacetCount>,
    /// Datasets without one are not counted.
    pub update_frequency: Vec<FacetCount>,
    /// Of the current version; datasets without a version are not counted.
    pub source_format: Vec<FacetCount>,
}

/// One value of a facet and how many matches have it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"value": "transport", "count": 3})))]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

impl From<datagate_catalog::DatasetFacets> for DatasetFacetsOut {
    fn from(f: datagate_catalog::DatasetFacets) -> Self {
        let out = |list: Vec<(String, u64)>| {
            list.into_iter()
                .map(|(value, count)| FacetCount { value, count })
                .collect()
        };
        DatasetFacetsOut {
            department: out(f.department),
            access_level: out(f.access_level),
            tag: out(f.tag),
            update_frequency: out(f.update_frequency),
            source_format: out(f.source_format),
        }
    }
}

/// One entry of a dataset's version history; also the answer to an upload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"version": 3, "mode": "replace", "rows_added": 1200, "row_count": 1200, "bytes": 25537, "files": 1, "source_format": "csv", "created_at": "2026-11-30T08:00:12.634Z", "created_by": "7c41d0a2b9e35f18"})))]
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

/// Query parameters of `GET /api/v1/datasets/{dept}/{name}/versions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    /// At most this many versions, 1..=1000 (default: all of them).
    pub limit: Option<u64>,
    /// Versions to skip, newest first (default 0).
    pub offset: Option<u64>,
}

/// Query parameters of `GET /api/v1/datasets`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DatasetQuery {
    /// Words searched in title, description and tags; all must match.
    pub q: Option<String>,
    /// `true`: each word of `q` may also be found in a dataset's SQL name,
    /// `department.dataset` (`transport.bus`, `bus_l`): a search for tables.
    pub names: Option<bool>,
    /// Only this department's datasets.
    pub department: Option<String>,
    /// Only datasets with this tag.
    pub tag: Option<String>,
    /// Only this open level: `open`, `conditional` or `shared`.
    #[param(value_type = Option<AccessLevelName>)]
    pub access_level: Option<String>,
    /// Page size, 1..=1000 (default 20).
    pub limit: Option<u64>,
    /// Entries to skip (default 0).
    pub offset: Option<u64>,
    /// `name` (by department, then name: the default), `updated` (newest first), `title`, or
    /// `reads` (most read in the last 30 days first, then most read ever).
    #[param(value_type = Option<DatasetSortName>)]
    pub sort: Option<String>,
    /// `true`: the department's unpublished datasets instead, which its publishers (and
    /// admins) may publish again (`POST /api/v1/datasets/{dept}/{name}/publish`); needs
    /// `department`.
    pub unpublished: Option<bool>,
    /// `false`: each entry without its `schema` (a catalog page that shows none; with
    /// thousands of datasets, much less to read and send). Default `true`.
    pub schema: Option<bool>,
    /// Only datasets updated this often (their `update_frequency`, e.g. `monthly`).
    pub update_frequency: Option<String>,
    /// Only datasets whose current version was uploaded as this (`csv`, `ndjson`, `parquet`,
    /// `arrow`: their `source_format`).
    pub source_format: Option<String>,
    /// `true`: the answer also counts every match by department, open level, tag, update
    /// frequency and source format (`facets`), for browsing a catalog by them.
    pub facets: Option<bool>,
}

/// The problem+json body of every error (RFC 9457); fields that help may follow (`line`,
/// `column`, `position`, `parameter`, `violated_policies`, ...).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "type": "https://datagate.dev/problems/invalid-query",
    "title": "Bad Request",
    "status": 400,
    "detail": "unknown column `distrct` (did you mean `district`?)",
    "request_id": "01a22af0-16cf-7520-bf03-2e40f1ca9161",
    "line": 1,
    "column": 8
})))]
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
#[schema(examples(json!({"ready": true, "checks": {"audit": "ok", "catalog": "ok", "storage": "ok"}})))]
pub struct Readiness {
    pub ready: bool,
    /// Each component: `ok` or why it is not usable.
    pub checks: BTreeMap<String, String>,
}

/// A result's column as the JSON format describes it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"name": "district", "type": "utf8"})))]
pub struct ResultColumn {
    pub name: String,
    /// Arrow type name in lower case.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A page or a query result in the JSON format (`format=json`); the other formats carry the
/// same rows as NDJSON lines, CSV, an Arrow IPC stream or a Parquet file.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "columns": [{"name": "district", "type": "utf8"}, {"name": "n", "type": "int64"}],
    "rows": [{"district": "东城区", "n": 42}],
    "next": null,
    "row_count": 1,
    "truncated": false
})))]
pub struct DataPage {
    pub columns: Vec<ResultColumn>,
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The next page's URL, or null on the last page.
    pub next: Option<String>,
    pub row_count: u64,
    /// True when a query's result was cut at the row or byte limit.
    pub truncated: bool,
}

/// An application to read a conditional dataset.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"id": "01a2314a-d935-754e-911a-3e0d6d6f0fc3", "department": "justice", "dataset": "legal_aid_cases", "applicant": "a19e89f52d97f664", "purpose": "研究法律援助案件的区域分布 (research on where legal aid is needed)", "status": "approved", "created_at": "2026-12-01T11:08:38.581Z", "decided_by": "5d0e8c21f4a97b36", "decided_at": "2026-12-01T14:02:10.726Z", "reason": null})))]
pub struct ApplicationOut {
    pub id: String,
    pub department: String,
    pub dataset: String,
    /// The applying key's id.
    pub applicant: String,
    pub purpose: String,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Why it was rejected.
    pub reason: Option<String>,
}

impl From<Application> for ApplicationOut {
    fn from(a: Application) -> Self {
        Self {
            id: a.id,
            department: a.department,
            dataset: a.dataset,
            applicant: a.applicant,
            purpose: a.purpose,
            status: a.status.as_str().to_string(),
            created_at: a.created_at,
            decided_by: a.decided_by,
            decided_at: a.decided_at,
            reason: a.reason,
        }
    }
}

/// A key's grant to read a conditional dataset: an approved application.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({"id": "01a2314a-d9c6-72a1-905a-da06004cdd8e", "application_id": "01a2314a-d935-754e-911a-3e0d6d6f0fc3", "key_id": "a19e89f52d97f664", "department": "justice", "dataset": "legal_aid_cases", "created_at": "2026-12-01T14:02:10.726Z", "created_by": "5d0e8c21f4a97b36", "expires_at": "2027-06-30T00:00:00Z", "revoked_at": null, "revoked_by": null})))]
pub struct GrantOut {
    pub id: String,
    pub application_id: String,
    /// The key the grant is for.
    pub key_id: String,
    pub department: String,
    pub dataset: String,
    pub created_at: DateTime<Utc>,
    /// Who approved it.
    pub created_by: String,
    /// When it ends; null: until revoked.
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

impl From<Grant> for GrantOut {
    fn from(g: Grant) -> Self {
        Self {
            id: g.id,
            application_id: g.application_id,
            key_id: g.key_id,
            department: g.department,
            dataset: g.dataset,
            created_at: g.created_at,
            created_by: g.created_by,
            expires_at: g.expires_at,
            revoked_at: g.revoked_at,
            revoked_by: g.revoked_by,
        }
    }
}

// Names the API takes, as enumerations for the OpenAPI document (client generators and the
// fuzzer see the allowed values); the handlers read them into the core types.

/// A dataset's open level (API.md §3).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum AccessLevelName {
    Open,
    Conditional,
    Shared,
}

/// A column's sensitivity (API.md §3).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum SensitivityName {
    Public,
    Masked,
    Private,
}

/// How a masked column is served: `hash` (keyed, stable per dataset), `redact` (`***`),
/// `partial` (names `张*`, mobiles `138****1234`, ID numbers 6+4), `year` (dates truncated to
/// the year), `null`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum MaskName {
    Hash,
    Redact,
    Partial,
    Year,
    Null,
}

/// A result format (else negotiated by `Accept`).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum FormatName {
    Json,
    Ndjson,
    Csv,
    Arrow,
    Parquet,
}

/// How `GET /api/v1/audit/usage` groups the reads.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum UsageGroupName {
    Dataset,
    Principal,
    Department,
    Day,
}

/// An application's state.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ApplicationStatusName {
    Pending,
    Approved,
    Rejected,
}

/// How an upload makes the next version: `append` adds rows to the current version,
/// `replace` starts over.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum VersionModeName {
    Append,
    Replace,
}

/// The order of `GET /api/v1/datasets`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DatasetSortName {
    Name,
    Updated,
    Title,
    Reads,
}
