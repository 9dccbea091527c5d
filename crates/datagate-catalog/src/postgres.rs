//! The shared PostgreSQL catalog (`storage.catalog_url = "postgres://..."`), for several
//! gateways on one database.
//!
//! A pool of connections (deadpool) with cached prepared statements. Every change is one
//! transaction. A version commit is an optimistic compare-and-set on the dataset's head
//! (`UPDATE datasets SET current_version = $new WHERE current_version IS NOT DISTINCT FROM
//! $base`), with the unique `(dataset, version)` key as the backstop: of two gateways committing
//! on the same base, one wins and the other gets `Conflict` (409), nothing half-written.
//!
//! What is cached, and why that is safe across gateways: only versions, which never change
//! once committed (a number is never reused), for at most [`VERSION_CACHE_TTL`] so a version
//! forgotten by retention elsewhere stops being served soon. A dataset's head, keys and grants
//! are read from the database on every request, so an upload, a revocation or an approval on
//! one gateway holds on every other at its next request.

use crate::grants::{
    Application, ApplicationFilter, ApplicationStatus, Decision, Grant, GrantFilter, NewApplication,
};
use crate::keys::{ApiKey, NewApiKey, Role};
use crate::migrations::pg_detail;
use crate::model::*;
use crate::postgres_tls::CatalogTls;
use crate::store::{CatalogError, CatalogStore, Result};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use datagate_core::AccessLevel;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{NoTls, Row};

/// How long a version read stays cached.
const VERSION_CACHE_TTL: Duration = Duration::from_secs(5);
/// Versions kept at most (cleared when full).
const VERSION_CACHE_ENTRIES: usize = 10_000;

/// Versions read, by (department, dataset, number), with when they were read.
type VersionCache = Mutex<HashMap<(String, String, i64), (Instant, Version)>>;

/// The catalog in a PostgreSQL database.
pub struct PostgresCatalog {
    pool: Pool,
    versions: VersionCache,
}

impl std::fmt::Debug for PostgresCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCatalog").finish_non_exhaustive()
    }
}

impl From<tokio_postgres::Error> for CatalogError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(code) = e.code() else {
            // No server answer: the connection is closed, refused or timed out (or its TLS
            // handshake failed: the cause, e.g. an unknown issuer, is in the sources).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            return CatalogError::Unavailable(text);
        };
        let class = &code.code()[..2];
        if class == "08"
            || class == "53"
            || class == "57"
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        {
            // Connection exception, insufficient resources, operator intervention (shutdown,
            // cancel), a read-only standby: nothing committed is lost and it may come back.
            CatalogError::Unavailable(pg_detail(&e))
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            CatalogError::Conflict(pg_detail(&e))
        } else {
            CatalogError::Backend(pg_detail(&e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for CatalogError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => CatalogError::Unavailable(format!("catalog connection pool: {other}")),
        }
    }
}

fn is(e: &tokio_postgres::Error, state: &SqlState) -> bool {
    e.code() == Some(state)
}

/// Reads a column, a decoding failure being the backend's fault.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, column: &str) -> Result<T> {
    r.try_get(column)
        .map_err(|e| CatalogError::Backend(format!("reading column {column}: {e}")))
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| CatalogError::Backend(format!("bad value {s:?} in the catalog: {e}")))
}

impl PostgresCatalog {
    /// Connects to `url` (`postgres://user:pass@host:port/db`, TLS by `sslmode` and
    /// `sslrootcert` as in libpq: see [`crate::postgres_tls`]), applies pending migrations and
    /// keeps a pool of up to `pool_size` connections.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self> {
        let (url, tls) = crate::postgres_tls::split_url(url)?;
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| CatalogError::Invalid(format!("catalog URL: {e}")))?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            CatalogTls::Plain => Manager::from_config(config, NoTls, manager_config),
            CatalogTls::Verified { root_cert } => Manager::from_config(
                config,
                crate::postgres_tls::connector(root_cert.as_deref())?,
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| CatalogError::Backend(format!("catalog connection pool: {e}")))?;
        {
            let mut client = pool.get().await?;
            let applied = crate::migrations::postgres(&mut client).await?;
            if !applied.is_empty() {
                tracing::info!(steps = ?applied, "catalog schema migrated (PostgreSQL)");
            }
        }
        Ok(Self {
            pool,
            versions: Mutex::new(HashMap::new()),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }
}

/// The columns of a dataset row as JSON (a macro, so that `DATASET_SELECT` can hold it and a
/// listing without columns can put an empty list in its place).
macro_rules! columns_json {
    () => {
        "COALESCE((SELECT jsonb_agg(jsonb_build_object('name', c.name, 'type', c.data_type, \
         'description', c.description, 'sensitivity', c.sensitivity, 'mask', c.mask) \
         ORDER BY c.position) FROM columns c WHERE c.dataset_id = d.id), '[]'::jsonb)"
    };
}

const COLUMNS_JSON: &str = columns_json!();

const DATASET_SELECT: &str = concat!(
    "SELECT d.id, d.department_id, d.name, d.title, d.description, \
    d.tags, d.license, d.contact_name, d.contact_email, d.update_frequency, d.access_level, \
    d.temporal_coverage, d.spatial_coverage, d.primary_key, d.current_version, \
    d.unpublished_at, d.created_at, d.updated_at, \
    COALESCE(v.row_count, 0) AS row_count, COALESCE(v.bytes, 0) AS size_bytes, \
    v.source_format AS source_format, ",
    columns_json!(),
    " AS columns \
    FROM datasets d LEFT JOIN versions v ON v.dataset_id = d.id AND v.version = d.current_version"
);

/// The `WHERE` text (over `datasets d`) and its arguments of what `filter` matches, its
/// `limit`, `offset` and order aside.
fn dataset_matches(filter: &DatasetFilter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let levels: Vec<String> = filter
        .visible_levels
        .iter()
        .map(|l| l.as_str().to_string())
        .collect();
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(levels)];
    let mut clauses = vec![
        if filter.unpublished {
            "d.unpublished_at IS NOT NULL"
        } else {
            "d.unpublished_at IS NULL"
        }
        .to_string(),
        "d.access_level = ANY($1)".to_string(),
    ];
    if let Some(dept) = &filter.department {
        args.push(Box::new(dept.clone()));
        clauses.push(format!("d.department_id = ${}", args.len()));
    }
    if let Some(level) = filter.access_level {
        args.push(Box::new(level.as_str().to_string()));
        clauses.push(format!("d.access_level = ${}", args.len()));
    }
    if let Some(tag) = &filter.tag {
        args.push(Box::new(Json(vec![tag.clone()])));
        clauses.push(format!("d.tags @> ${}", args.len()));
    }
    if let Some(frequency) = &filter.update_frequency {
        args.push(Box::new(frequency.clone()));
        clauses.push(format!("d.update_frequency = ${}", args.len()));
    }
    if let Some(format) = &filter.source_format {
        args.push(Box::new(format.clone()));
        clauses.push(format!(
            "EXISTS (SELECT 1 FROM versions fv WHERE fv.dataset_id = d.id \
             AND fv.version = d.current_version AND fv.source_format = ${})",
            args.len()
        ));
    }
    if let Some(q) = &filter.q {
        for word in q.split_whitespace() {
            args.push(Box::new(like_pattern(word)));
            let n = args.len();
            let name = if filter.q_names {
                format!(" OR (d.department_id || '.' || d.name) ILIKE ${n}")
            } else {
                String::new()
            };
            // ILIKE: case-insensitive like SQLite's LIKE.
            clauses.push(format!(
                "(d.title ILIKE ${n} OR d.description ILIKE ${n} \
                 OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(d.tags) t \
                    WHERE t ILIKE ${n}){name})"
            ));
        }
    }
    (clauses.join(" AND "), args)
}

/// `args` as a statement's parameters.
fn as_params(args: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The columns of each of `rows`' datasets, in one query.
async fn load_columns_of(c: &impl GenericClient, rows: &mut [DatasetRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let stmt = c
        .prepare_cached(
            "SELECT dataset_id, name, data_type, description, sensitivity, mask FROM columns \
             WHERE dataset_id = ANY($1) ORDER BY dataset_id, position",
        )
        .await?;
    let mut by_dataset: HashMap<i64, Vec<Column>> = HashMap::with_capacity(ids.len());
    for r in c.query(&stmt, &[&ids]).await? {
        let mask: Option<String> = get(&r, "mask")?;
        by_dataset
            .entry(get(&r, "dataset_id")?)
            .or_default()
            .push(Column {
                name: get(&r, "name")?,
                data_type: parse(&get::<String>(&r, "data_type")?)?,
                description: get(&r, "description")?,
                sensitivity: parse(&get::<String>(&r, "sensitivity")?)?,
                mask: mask.as_deref().map(parse).transpose()?,
            });
    }
    for row in rows {
        row.dataset.columns = by_dataset.remove(&row.id).unwrap_or_default();
    }
    Ok(())
}

struct DatasetRow {
    id: i64,
    dataset: Dataset,
}

fn dataset_from_row(r: &Row) -> Result<DatasetRow> {
    let Json(tags): Json<Vec<String>> = get(r, "tags")?;
    let Json(primary_key): Json<Vec<String>> = get(r, "primary_key")?;
    let Json(columns): Json<Vec<Column>> = get(r, "columns")?;
    let level: String = get(r, "access_level")?;
    Ok(DatasetRow {
        id: get(r, "id")?,
        dataset: Dataset {
            department: get(r, "department_id")?,
            name: get(r, "name")?,
            metadata: DatasetMetadata {
                title: get(r, "title")?,
                description: get(r, "description")?,
                tags,
                license: get(r, "license")?,
                contact: Contact {
                    name: get(r, "contact_name")?,
                    email: get(r, "contact_email")?,
                },
                update_frequency: get(r, "update_frequency")?,
                access_level: parse::<AccessLevel>(&level)?,
                temporal_coverage: get(r, "temporal_coverage")?,
                spatial_coverage: get(r, "spatial_coverage")?,
            },
            primary_key,
            columns,
            current_version: get(r, "current_version")?,
            row_count: get::<i64>(r, "row_count")?.max(0) as u64,
            size_bytes: get::<i64>(r, "size_bytes")?.max(0) as u64,
            source_format: get(r, "source_format")?,
            unpublished_at: get(r, "unpublished_at")?,
            created_at: get(r, "created_at")?,
            updated_at: get(r, "updated_at")?,
        },
    })
}

async fn find_dataset(
    c: &impl GenericClient,
    department: &str,
    name: &str,
    for_update: bool,
) -> Result<Option<DatasetRow>> {
    let sql = format!(
        "{DATASET_SELECT} WHERE d.department_id = $1 AND d.name = $2{}",
        if for_update { " FOR UPDATE OF d" } else { "" }
    );
    let stmt = c.prepare_cached(&sql).await?;
    match c.query_opt(&stmt, &[&department, &name]).await? {
        Some(r) => Ok(Some(dataset_from_row(&r)?)),
        None => Ok(None),
    }
}

async fn require_dataset(
    c: &impl GenericClient,
    department: &str,
    name: &str,
    for_update: bool,
) -> Result<DatasetRow> {
    find_dataset(c, department, name, for_update)
        .await?
        .ok_or_else(|| CatalogError::NotFound(format!("dataset {department}/{name}")))
}

async fn insert_columns(c: &impl GenericClient, dataset_id: i64, columns: &[Column]) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO columns (dataset_id, position, name, data_type, description, \
             sensitivity, mask) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    for (i, col) in columns.iter().enumerate() {
        c.execute(
            &stmt,
            &[
                &dataset_id,
                &(i as i32),
                &col.name,
                &col.data_type.to_string(),
                &col.description,
                &col.sensitivity.as_str(),
                &col.mask.map(|m| m.as_str()),
            ],
        )
        .await?;
    }
    Ok(())
}

async fn load_version(
    c: &impl GenericClient,
    dataset_id: i64,
    version: i64,
) -> Result<Option<Version>> {
    let stmt = c
        .prepare_cached(
            "SELECT version, mode, rows_added, row_count, bytes, columns, source_digest, \
             created_at, created_by, source_format, \
             COALESCE((SELECT jsonb_agg(jsonb_build_object('path', f.path, 'rows', f.rows, \
                 'bytes', f.bytes) ORDER BY f.position) FROM version_files f \
                 WHERE f.dataset_id = v.dataset_id AND f.version = v.version), '[]'::jsonb) AS files \
             FROM versions v WHERE dataset_id = $1 AND version = $2",
        )
        .await?;
    let Some(r) = c.query_opt(&stmt, &[&dataset_id, &version]).await? else {
        return Ok(None);
    };
    version_from_row(&r).map(Some)
}

/// The versions of `keys` (department, dataset, version), in one query: each key's row
/// numbered by its place (`ord`, from 1), none for a key without one.
async fn load_versions(
    c: &impl GenericClient,
    keys: &[(String, String, i64)],
) -> Result<Vec<Option<Version>>> {
    let stmt = c
        .prepare_cached(
            "SELECT k.ord, v.version, v.mode, v.rows_added, v.row_count, v.bytes, v.columns, \
             v.source_digest, v.created_at, v.created_by, v.source_format, \
             COALESCE((SELECT jsonb_agg(jsonb_build_object('path', f.path, 'rows', f.rows, \
                 'bytes', f.bytes) ORDER BY f.position) FROM version_files f \
                 WHERE f.dataset_id = v.dataset_id AND f.version = v.version), '[]'::jsonb) AS files \
             FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY \
                 AS k(department, name, version, ord) \
             JOIN datasets d ON d.department_id = k.department AND d.name = k.name \
             JOIN versions v ON v.dataset_id = d.id AND v.version = k.version",
        )
        .await?;
    let departments: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let versions: Vec<i64> = keys.iter().map(|k| k.2).collect();
    let mut found: Vec<Option<Version>> = vec![None; keys.len()];
    for r in c.query(&stmt, &[&departments, &names, &versions]).await? {
        let ord: i64 = get(&r, "ord")?;
        let slot = usize::try_from(ord - 1)
            .ok()
            .and_then(|i| found.get_mut(i))
            .ok_or_else(|| CatalogError::Backend(format!("a version for key {ord}")))?;
        *slot = Some(version_from_row(&r)?);
    }
    Ok(found)
}

/// A version from a row of `versions` with its files aggregated as `files`.
fn version_from_row(r: &Row) -> Result<Version> {
    let mode: String = get(r, "mode")?;
    let Json(columns): Json<Vec<Column>> = get(r, "columns")?;
    let Json(files): Json<Vec<DataFile>> = get(r, "files")?;
    Ok(Version {
        version: get(r, "version")?,
        mode: parse::<VersionMode>(&mode)?,
        rows_added: get::<i64>(r, "rows_added")?.max(0) as u64,
        row_count: get::<i64>(r, "row_count")?.max(0) as u64,
        bytes: get::<i64>(r, "bytes")?.max(0) as u64,
        files,
        columns,
        source_digest: get(r, "source_digest")?,
        created_at: get(r, "created_at")?,
        created_by: get(r, "created_by")?,
        source_format: get(r, "source_format")?,
    })
}

fn department_from_row(r: &Row) -> Result<Department> {
    Ok(Department {
        id: get(r, "id")?,
        name: get(r, "name")?,
        description: get(r, "description")?,
        created_at: get(r, "created_at")?,
        updated_at: get(r, "updated_at")?,
    })
}

fn key_from_row(r: &Row) -> Result<ApiKey> {
    let role: String = get(r, "role")?;
    Ok(ApiKey {
        id: get(r, "id")?,
        name: get(r, "name")?,
        role: parse::<Role>(&role)?,
        department: get(r, "department")?,
        tier: get(r, "tier")?,
        secret_hash: get(r, "secret_hash")?,
        created_at: get(r, "created_at")?,
        created_by: get(r, "created_by")?,
        expires_at: get(r, "expires_at")?,
        revoked_at: get(r, "revoked_at")?,
    })
}

fn application_from_row(r: &Row) -> Result<Application> {
    let status: String = get(r, "status")?;
    Ok(Application {
        id: get(r, "id")?,
        department: get(r, "department")?,
        dataset: get(r, "dataset")?,
        applicant: get(r, "applicant")?,
        purpose: get(r, "purpose")?,
        status: parse::<ApplicationStatus>(&status)?,
        created_at: get(r, "created_at")?,
        decided_by: get(r, "decided_by")?,
        decided_at: get(r, "decided_at")?,
        reason: get(r, "reason")?,
    })
}

fn grant_from_row(r: &Row) -> Result<Grant> {
    Ok(Grant {
        id: get(r, "id")?,
        application_id: get(r, "application_id")?,
        key_id: get(r, "key_id")?,
        department: get(r, "department")?,
        dataset: get(r, "dataset")?,
        created_at: get(r, "created_at")?,
        created_by: get(r, "created_by")?,
        expires_at: get(r, "expires_at")?,
        revoked_at: get(r, "revoked_at")?,
        revoked_by: get(r, "revoked_by")?,
    })
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

#[async_trait]
impl crate::rates::SharedRates for PostgresCatalog {
    async fn take(
        &self,
        caller: &str,
        period: Duration,
        burst: u32,
    ) -> Result<crate::rates::SharedRate> {
        let period_us = (period.as_micros().min(i64::MAX as u128) as i64).max(1);
        let capacity = period_us.saturating_mul(i64::from(burst.max(1)));
        let c = self.client().await?;
        // One statement: take the request if the caller's state allows it; either way read
        // the state as it was (a data-modifying CTE's change is not visible to its statement).
        let stmt = c
            .prepare_cached(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us), \
                 taken AS ( \
                   INSERT INTO rate_state AS s (caller, tat_us) SELECT $1, now.us + $2 FROM now \
                   ON CONFLICT (caller) DO UPDATE \
                     SET tat_us = GREATEST(s.tat_us, (SELECT us FROM now)) + $2 \
                     WHERE GREATEST(s.tat_us, (SELECT us FROM now)) + $2 - (SELECT us FROM now) <= $3 \
                   RETURNING tat_us) \
                 SELECT (SELECT tat_us FROM taken) AS taken, \
                        (SELECT tat_us FROM rate_state WHERE caller = $1) AS before, \
                        (SELECT us FROM now) AS now",
            )
            .await?;
        let r = c
            .query_one(&stmt, &[&caller, &period_us, &capacity])
            .await?;
        let now: i64 = get(&r, "now")?;
        Ok(match get::<Option<i64>>(&r, "taken")? {
            Some(tat) => crate::rates::decide(true, tat, now, period, burst),
            None => {
                let before = get::<Option<i64>>(&r, "before")?.unwrap_or(now);
                crate::rates::decide(false, before, now, period, burst)
            }
        })
    }

    async fn prune(&self) -> Result<u64> {
        let c = self.client().await?;
        Ok(c.execute(
            "DELETE FROM rate_state \
             WHERE tat_us < (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
            &[],
        )
        .await?)
    }
}

#[async_trait]
impl crate::rates::SharedUsage for PostgresCatalog {
    async fn publish_usage(&self, node: &str, rows: Vec<crate::rates::UsageRow>) -> Result<()> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let (mut dd, mut dday, mut dr, mut dl) = (vec![], vec![], vec![], vec![]);
        let (mut td, mut tr, mut tl) = (vec![], vec![], vec![]);
        for (dataset, day, reads, downloads) in rows {
            match day {
                Some(day) => {
                    dd.push(dataset);
                    dday.push(day);
                    dr.push(n(reads));
                    dl.push(n(downloads));
                }
                None => {
                    td.push(dataset);
                    tr.push(n(reads));
                    tl.push(n(downloads));
                }
            }
        }
        let oldest = dday.iter().min().copied();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO dataset_usage_days (node, dataset, day, reads, downloads) \
             SELECT $1, * FROM unnest($2::text[], $3::date[], $4::bigint[], $5::bigint[]) \
             ON CONFLICT (node, dataset, day) DO UPDATE \
               SET reads = excluded.reads, downloads = excluded.downloads",
            &[&node, &dd, &dday, &dr, &dl],
        )
        .await?;
        if let Some(oldest) = oldest {
            tx.execute(
                "DELETE FROM dataset_usage_days WHERE node = $1 AND day < $2",
                &[&node, &oldest],
            )
            .await?;
        }
        tx.execute(
            "INSERT INTO dataset_usage_totals (node, dataset, reads, downloads) \
             SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bigint[]) \
             ON CONFLICT (node, dataset) DO UPDATE \
               SET reads = excluded.reads, downloads = excluded.downloads",
            &[&node, &td, &tr, &tl],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn usage_elsewhere(&self, node: &str) -> Result<Vec<crate::rates::UsageRow>> {
        let c = self.client().await?;
        let u = |v: i64| v.max(0) as u64;
        let mut out: Vec<crate::rates::UsageRow> = c
            .query(
                "SELECT dataset, day, sum(reads)::bigint, sum(downloads)::bigint \
                 FROM dataset_usage_days WHERE node <> $1 GROUP BY dataset, day",
                &[&node],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), Some(r.get(1)), u(r.get(2)), u(r.get(3))))
            .collect();
        out.extend(
            c.query(
                "SELECT dataset, sum(reads)::bigint, sum(downloads)::bigint \
                 FROM dataset_usage_totals WHERE node <> $1 GROUP BY dataset",
                &[&node],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), None, u(r.get(1)), u(r.get(2)))),
        );
        Ok(out)
    }
}

#[async_trait]
impl crate::rates::SharedSecrets for PostgresCatalog {
    async fn agree_secret(&self, name: &str, proposed: &str) -> Result<String> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO cluster_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &proposed],
        )
        .await?;
        Ok(c.query_one(
            "SELECT value FROM cluster_secrets WHERE name = $1",
            &[&name],
        )
        .await?
        .get(0))
    }
}

/// A duration in microseconds, for `$n::bigint * interval '1 microsecond'`.
fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

#[async_trait]
impl crate::sessions::SharedSessions for PostgresCatalog {
    async fn start_session(
        &self,
        session: crate::sessions::StoredSession,
        limits: crate::sessions::SessionLimits,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "DELETE FROM portal_sessions \
             WHERE seen < clock_timestamp() - $1::bigint * interval '1 microsecond' \
                OR started < clock_timestamp() - $2::bigint * interval '1 microsecond'",
            &[&micros(limits.idle), &micros(limits.max_age)],
        )
        .await?;
        // Room for the new one: the least recently seen beyond the limit end.
        let keep = i64::try_from(limits.max_sessions.max(1) - 1).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM portal_sessions WHERE id_hash IN ( \
               SELECT id_hash FROM portal_sessions ORDER BY seen DESC OFFSET $1)",
            &[&keep],
        )
        .await?;
        tx.execute(
            "INSERT INTO portal_sessions (id_hash, key_id, sealed_key) VALUES ($1, $2, $3)",
            &[&session.id_hash, &session.key_id, &session.sealed_key],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_session(
        &self,
        id_hash: &str,
        limits: crate::sessions::SessionLimits,
    ) -> Result<Option<Vec<u8>>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE portal_sessions SET seen = clock_timestamp() \
                 WHERE id_hash = $1 \
                   AND seen >= clock_timestamp() - $2::bigint * interval '1 microsecond' \
                   AND started >= clock_timestamp() - $3::bigint * interval '1 microsecond' \
                 RETURNING sealed_key",
            )
            .await?;
        let row = c
            .query_opt(
                &stmt,
                &[&id_hash, &micros(limits.idle), &micros(limits.max_age)],
            )
            .await?;
        match row {
            Some(r) => Ok(Some(get(&r, "sealed_key")?)),
            None => {
                c.execute(
                    "DELETE FROM portal_sessions WHERE id_hash = $1",
                    &[&id_hash],
                )
                .await?;
                Ok(None)
            }
        }
    }

    async fn end_session(&self, id_hash: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM portal_sessions WHERE id_hash = $1",
            &[&id_hash],
        )
        .await?;
        Ok(())
    }

    async fn end_key_sessions(&self, key_id: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute("DELETE FROM portal_sessions WHERE key_id = $1", &[&key_id])
            .await?;
        Ok(())
    }
}

#[async_trait]
impl CatalogStore for PostgresCatalog {
    async fn ping(&self) -> Result<()> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    fn shared_rates(&self) -> Option<&dyn crate::rates::SharedRates> {
        Some(self)
    }

    fn shared_usage(&self) -> Option<&dyn crate::rates::SharedUsage> {
        Some(self)
    }

    fn shared_sessions(&self) -> Option<&dyn crate::sessions::SharedSessions> {
        Some(self)
    }

    fn shared_secrets(&self) -> Option<&dyn crate::rates::SharedSecrets> {
        Some(self)
    }

    async fn create_department(&self, dept: NewDepartment) -> Result<Department> {
        crate::model::validate_department(&dept)?;
        let c = self.client().await?;
        let at = now();
        match c
            .query_one(
                "INSERT INTO departments (id, name, description, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) RETURNING *",
                &[&dept.id, &dept.name, &dept.description, &at],
            )
            .await
        {
            Ok(r) => department_from_row(&r),
            Err(e) if is(&e, &SqlState::UNIQUE_VIOLATION) => Err(CatalogError::AlreadyExists(
                format!("department {}", dept.id),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn upsert_department(&self, dept: NewDepartment) -> Result<(Department, bool)> {
        crate::model::validate_department(&dept)?;
        let c = self.client().await?;
        let at = now();
        // Inserted, updated (only when something differs) or left alone, in one statement;
        // `xmax = 0` tells an insert from an update.
        let changed = c
            .query_opt(
                "INSERT INTO departments (id, name, description, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                   description = excluded.description, updated_at = excluded.updated_at \
                 WHERE departments.name <> excluded.name \
                    OR departments.description <> excluded.description \
                 RETURNING id",
                &[&dept.id, &dept.name, &dept.description, &at],
            )
            .await?
            .is_some();
        let r = c
            .query_one("SELECT * FROM departments WHERE id = $1", &[&dept.id])
            .await?;
        Ok((department_from_row(&r)?, changed))
    }

    async fn get_department(&self, id: &str) -> Result<Option<Department>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT * FROM departments WHERE id = $1")
            .await?;
        c.query_opt(&stmt, &[&id])
            .await?
            .as_ref()
            .map(department_from_row)
            .transpose()
    }

    async fn list_departments(
        &self,
        visible_levels: &[AccessLevel],
    ) -> Result<Vec<DepartmentSummary>> {
        let levels: Vec<&str> = visible_levels.iter().map(|l| l.as_str()).collect();
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT dp.*, (SELECT COUNT(*) FROM datasets d WHERE d.department_id = dp.id \
                   AND d.unpublished_at IS NULL AND d.access_level = ANY($1)) AS dataset_count \
                 FROM departments dp ORDER BY dp.id",
            )
            .await?;
        c.query(&stmt, &[&levels])
            .await?
            .iter()
            .map(|r| {
                Ok(DepartmentSummary {
                    department: department_from_row(r)?,
                    dataset_count: get::<i64>(r, "dataset_count")?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn create_dataset(&self, ds: NewDataset) -> Result<Dataset> {
        datagate_core::validate_name("department id", &ds.department)
            .map_err(|e| CatalogError::Invalid(e.to_string()))?;
        datagate_core::validate_name("dataset name", &ds.name)
            .map_err(|e| CatalogError::Invalid(e.to_string()))?;
        crate::model::validate_columns(&ds.columns, &ds.primary_key)?;
        crate::model::validate_metadata(&ds.metadata)?;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let m = &ds.metadata;
        let at = now();
        let inserted = tx
            .query_one(
                "INSERT INTO datasets (department_id, name, title, description, tags, license, \
                 contact_name, contact_email, update_frequency, access_level, temporal_coverage, \
                 spatial_coverage, primary_key, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) \
                 RETURNING id",
                &[
                    &ds.department,
                    &ds.name,
                    &m.title,
                    &m.description,
                    &Json(&m.tags),
                    &m.license,
                    &m.contact.name,
                    &m.contact.email,
                    &m.update_frequency,
                    &m.access_level.as_str(),
                    &m.temporal_coverage,
                    &m.spatial_coverage,
                    &Json(&ds.primary_key),
                    &at,
                ],
            )
            .await;
        let id: i64 = match inserted {
            Ok(r) => get(&r, "id")?,
            Err(e) if is(&e, &SqlState::UNIQUE_VIOLATION) => {
                return Err(CatalogError::AlreadyExists(format!(
                    "dataset {}/{}",
                    ds.department, ds.name
                )));
            }
            Err(e) if is(&e, &SqlState::FOREIGN_KEY_VIOLATION) => {
                return Err(CatalogError::NotFound(format!(
                    "department {}",
                    ds.department
                )));
            }
            Err(e) => return Err(e.into()),
        };
        insert_columns(&tx, id, &ds.columns).await?;
        let row = require_dataset(&tx, &ds.department, &ds.name, false).await?;
        tx.commit().await?;
        Ok(row.dataset)
    }

    async fn update_dataset_metadata(
        &self,
        department: &str,
        name: &str,
        metadata: DatasetMetadata,
        primary_key: Option<Vec<String>>,
    ) -> Result<(Dataset, bool)> {
        crate::model::validate_metadata(&metadata)?;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = require_dataset(&tx, department, name, true).await?;
        let pk = primary_key.unwrap_or_else(|| row.dataset.primary_key.clone());
        crate::model::validate_columns(&row.dataset.columns, &pk)?;
        if row.dataset.metadata == metadata && row.dataset.primary_key == pk {
            return Ok((row.dataset, false));
        }
        let m = &metadata;
        tx.execute(
            "UPDATE datasets SET title = $2, description = $3, tags = $4, license = $5, \
             contact_name = $6, contact_email = $7, update_frequency = $8, access_level = $9, \
             temporal_coverage = $10, spatial_coverage = $11, primary_key = $12, updated_at = $13 \
             WHERE id = $1",
            &[
                &row.id,
                &m.title,
                &m.description,
                &Json(&m.tags),
                &m.license,
                &m.contact.name,
                &m.contact.email,
                &m.update_frequency,
                &m.access_level.as_str(),
                &m.temporal_coverage,
                &m.spatial_coverage,
                &Json(&pk),
                &now(),
            ],
        )
        .await?;
        let row = require_dataset(&tx, department, name, false).await?;
        tx.commit().await?;
        Ok((row.dataset, true))
    }

    async fn update_column_annotations(
        &self,
        department: &str,
        name: &str,
        columns: Vec<Column>,
    ) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = require_dataset(&tx, department, name, true).await?;
        let changes = crate::model::annotation_changes(
            &format!("{department}/{name}"),
            &row.dataset.columns,
            &columns,
        )?;
        for col in &changes {
            tx.execute(
                "UPDATE columns SET description = $3, sensitivity = $4, mask = $5 \
                 WHERE dataset_id = $1 AND name = $2",
                &[
                    &row.id,
                    &col.name,
                    &col.description,
                    &col.sensitivity.as_str(),
                    &col.mask.map(|m| m.as_str()),
                ],
            )
            .await?;
        }
        let changed = !changes.is_empty();
        if changed {
            tx.execute(
                "UPDATE datasets SET updated_at = $2 WHERE id = $1",
                &[&row.id, &now()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn get_dataset(&self, department: &str, name: &str) -> Result<Option<Dataset>> {
        let c = self.client().await?;
        Ok(find_dataset(&c, department, name, false)
            .await?
            .map(|r| r.dataset))
    }

    async fn list_datasets(&self, filter: &DatasetFilter) -> Result<DatasetPage> {
        let (where_sql, args) = dataset_matches(filter);
        let c = self.client().await?;
        let params = as_params(&args);
        let total: i64 = c
            .query_one(
                &format!("SELECT COUNT(*) FROM datasets d WHERE {where_sql}"),
                &params,
            )
            .await?
            .get(0);
        let limit = filter.limit.min(i64::MAX as u64) as i64;
        let offset = filter.offset.min(i64::MAX as u64) as i64;
        let n = params.len();
        let mut params = params;
        params.push(&limit);
        params.push(&offset);
        // Titles by their bytes (as SQLite and Rust compare them), not by the database's
        // collation.
        let order = filter.order.sql(" COLLATE \"C\"");
        // The page's ids first, sorted on their keys alone, then their rows (as in SQLite).
        let sql = format!(
            "{} JOIN (SELECT d.id FROM datasets d WHERE {where_sql} \
             ORDER BY {order} LIMIT ${} OFFSET ${}) p ON p.id = d.id \
             ORDER BY {order}",
            // The columns in a query of their own (below): built as JSON per dataset, they
            // took most of a listing of 5,000 datasets (0.07 ms each).
            DATASET_SELECT.replacen(COLUMNS_JSON, "'[]'::jsonb", 1),
            n + 1,
            n + 2
        );
        let rows = c.query(&sql, &params).await?;
        let mut rows = rows
            .iter()
            .map(dataset_from_row)
            .collect::<Result<Vec<_>>>()?;
        if !filter.skip_columns {
            load_columns_of(&c, &mut rows).await?;
        }
        let datasets = rows.into_iter().map(|r| r.dataset).collect();
        Ok(DatasetPage {
            datasets,
            total: total.max(0) as u64,
        })
    }

    async fn dataset_facets(&self, filter: &DatasetFilter) -> Result<DatasetFacets> {
        let (where_sql, args) = dataset_matches(filter);
        let c = self.client().await?;
        let params = as_params(&args);
        let sql =
            DatasetFacets::statement(&where_sql, "jsonb_array_elements_text(m.tags) AS t(value)");
        let mut facets = DatasetFacets::default();
        for r in c.query(&sql, &params).await? {
            facets.add(&r.try_get::<_, String>(0)?, r.try_get(1)?, r.try_get(2)?)?;
        }
        Ok(facets.sorted())
    }

    async fn unpublish_dataset(&self, department: &str, name: &str) -> Result<()> {
        self.set_unpublished(department, name, Some(now())).await
    }

    async fn republish_dataset(&self, department: &str, name: &str) -> Result<()> {
        self.set_unpublished(department, name, None).await
    }

    async fn commit_version(
        &self,
        department: &str,
        name: &str,
        nv: NewVersion,
    ) -> Result<Version> {
        if nv.columns.is_empty() {
            return Err(CatalogError::Invalid("a version needs a schema".into()));
        }
        let conflict = |now: Option<i64>| {
            CatalogError::Conflict(format!(
                "dataset {department}/{name} moved from version {:?} to {:?} during the upload",
                nv.base_version, now
            ))
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Read without a lock: the head is checked again by the compare-and-set below.
        let row = require_dataset(&tx, department, name, false).await?;
        if row.dataset.current_version != nv.base_version {
            return Err(conflict(row.dataset.current_version));
        }
        let mut base_files = Vec::new();
        if nv.mode == VersionMode::Append
            && let Some(base) = nv.base_version
        {
            let prev = load_version(&tx, row.id, base)
                .await?
                .ok_or_else(|| CatalogError::Backend(format!("version {base} is missing")))?;
            base_files = prev.files;
        }
        let (files, rows_added) = crate::model::version_files(base_files, &nv)?;
        let row_count: u64 = files.iter().map(|f| f.rows).sum();
        let bytes: u64 = files.iter().map(|f| f.bytes).sum();
        let max: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM versions WHERE dataset_id = $1",
                &[&row.id],
            )
            .await?
            .get(0);
        let number = (row.dataset.current_version.unwrap_or(0) + 1).max(max + 1);
        let at = now();
        let inserted = tx
            .execute(
                "INSERT INTO versions (dataset_id, version, mode, rows_added, row_count, bytes, \
                 columns, source_digest, created_at, created_by, source_format) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &row.id,
                    &number,
                    &nv.mode.as_str(),
                    &(rows_added as i64),
                    &(row_count as i64),
                    &(bytes as i64),
                    &Json(&nv.columns),
                    &nv.source_digest,
                    &at,
                    &nv.created_by,
                    &nv.source_format,
                ],
            )
            .await;
        match inserted {
            Ok(_) => {}
            // Another gateway committed this number first (we waited for it on the key).
            Err(e) if is(&e, &SqlState::UNIQUE_VIOLATION) => return Err(conflict(Some(number))),
            Err(e) => return Err(e.into()),
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO version_files (dataset_id, version, position, path, rows, bytes) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        for (i, f) in files.iter().enumerate() {
            tx.execute(
                &stmt,
                &[
                    &row.id,
                    &number,
                    &(i as i32),
                    &f.path,
                    &(f.rows as i64),
                    &(f.bytes as i64),
                ],
            )
            .await?;
        }
        // The compare-and-set on the head: it fails if another commit moved it meanwhile.
        let moved = tx
            .execute(
                "UPDATE datasets SET current_version = $2, updated_at = $3 \
                 WHERE id = $1 AND current_version IS NOT DISTINCT FROM $4",
                &[&row.id, &number, &at, &nv.base_version],
            )
            .await?;
        if moved != 1 {
            return Err(conflict(None));
        }
        // The dataset's schema follows its newest version.
        if row.dataset.columns != nv.columns {
            let merged = crate::model::merged_columns(&row.dataset.columns, &nv.columns);
            tx.execute("DELETE FROM columns WHERE dataset_id = $1", &[&row.id])
                .await?;
            insert_columns(&tx, row.id, &merged).await?;
        }
        let v = load_version(&tx, row.id, number).await?.ok_or_else(|| {
            CatalogError::Backend("version vanished inside its transaction".into())
        })?;
        tx.commit().await?;
        Ok(v)
    }

    async fn get_version(
        &self,
        department: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<Version>> {
        let key = (department.to_string(), name.to_string(), version);
        {
            let cache = self.versions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, v)) = cache.get(&key)
                && at.elapsed() < VERSION_CACHE_TTL
            {
                return Ok(Some(v.clone()));
            }
        }
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT id FROM datasets WHERE department_id = $1 AND name = $2")
            .await?;
        let Some(id) = c.query_opt(&stmt, &[&department, &name]).await? else {
            return Ok(None);
        };
        let found = load_version(&c, id.get(0), version).await?;
        if let Some(v) = &found {
            let mut cache = self.versions.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= VERSION_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), v.clone()));
        }
        Ok(found)
    }

    async fn get_versions(&self, keys: &[(String, String, i64)]) -> Result<Vec<Option<Version>>> {
        let mut found: Vec<Option<Version>> = {
            let cache = self.versions.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter()
                .map(|key| {
                    cache
                        .get(key)
                        .filter(|(at, _)| at.elapsed() < VERSION_CACHE_TTL)
                        .map(|(_, v)| v.clone())
                })
                .collect()
        };
        let missing = crate::model::missed(keys, &found);
        if missing.is_empty() {
            return Ok(found);
        }
        // One query for them all, rather than a round trip each.
        let c = self.client().await?;
        let loaded = load_versions(&c, &missing).await?;
        let mut cache = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let misses = found.iter_mut().filter(|hit| hit.is_none());
        for (slot, (key, version)) in misses.zip(missing.into_iter().zip(loaded)) {
            if let Some(v) = &version {
                if cache.len() >= VERSION_CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert(key, (Instant::now(), v.clone()));
            }
            *slot = version;
        }
        Ok(found)
    }

    async fn list_versions_page(
        &self,
        department: &str,
        name: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<Version>, u64)> {
        let c = self.client().await?;
        let row = require_dataset(&c, department, name, false).await?;
        let (limit, offset) = (
            i64::try_from(limit).unwrap_or(i64::MAX),
            i64::try_from(offset).unwrap_or(i64::MAX),
        );
        let total: i64 = c
            .query_one(
                "SELECT count(*) FROM versions WHERE dataset_id = $1",
                &[&row.id],
            )
            .await?
            .get(0);
        let numbers: Vec<i64> = c
            .query(
                "SELECT version FROM versions WHERE dataset_id = $1 \
                 ORDER BY version DESC LIMIT $2 OFFSET $3",
                &[&row.id, &limit, &offset],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::with_capacity(numbers.len());
        for n in numbers {
            if let Some(v) = load_version(&c, row.id, n).await? {
                out.push(v);
            }
        }
        Ok((out, total.unsigned_abs()))
    }

    async fn expire_versions(
        &self,
        department: &str,
        name: &str,
        keep: u64,
    ) -> Result<Vec<String>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = require_dataset(&tx, department, name, true).await?;
        let keep = keep.min(i64::MAX as u64) as i64;
        // Forget the older versions; collect the paths only they used.
        let candidates: Vec<String> = tx
            .query(
                "WITH expired AS ( \
                   DELETE FROM versions WHERE dataset_id = $1 AND version IN ( \
                     SELECT version FROM versions WHERE dataset_id = $1 \
                     ORDER BY version DESC OFFSET $2) \
                   RETURNING version) \
                 SELECT DISTINCT f.path FROM version_files f JOIN expired e \
                   ON f.dataset_id = $1 AND f.version = e.version",
                &[&row.id, &keep],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // (The files' rows go with their versions, by the cascade, once the statement ends.)
        let mut unreferenced = Vec::new();
        for p in candidates {
            let still: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM version_files WHERE path = $1)",
                    &[&p],
                )
                .await?
                .get(0);
            if !still {
                unreferenced.push(p);
            }
        }
        tx.commit().await?;
        Ok(unreferenced)
    }

    async fn referenced_files(&self) -> Result<Vec<String>> {
        let c = self.client().await?;
        Ok(
            c.query("SELECT DISTINCT path FROM version_files ORDER BY path", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        )
    }

    async fn create_key(&self, key: NewApiKey) -> Result<ApiKey> {
        key.validate(Utc::now())?;
        let c = self.client().await?;
        match c
            .query_one(
                "INSERT INTO api_keys (id, name, role, department, tier, secret_hash, created_at, \
                 created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
                &[
                    &key.id,
                    &key.name,
                    &key.role.as_str(),
                    &key.department,
                    &key.tier,
                    &key.secret_hash,
                    &now(),
                    &key.created_by,
                    &key.expires_at,
                ],
            )
            .await
        {
            Ok(r) => key_from_row(&r),
            Err(e) if is(&e, &SqlState::UNIQUE_VIOLATION) => {
                Err(CatalogError::AlreadyExists(format!("key {}", key.id)))
            }
            Err(e) if is(&e, &SqlState::FOREIGN_KEY_VIOLATION) => Err(CatalogError::NotFound(
                format!("department {}", key.department.unwrap_or_default()),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT * FROM api_keys WHERE id = $1")
            .await?;
        c.query_opt(&stmt, &[&id])
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let c = self.client().await?;
        c.query("SELECT * FROM api_keys ORDER BY created_at, id", &[])
            .await?
            .iter()
            .map(key_from_row)
            .collect()
    }

    async fn revoke_key(&self, id: &str) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id, &now()],
            )
            .await?;
        if n == 0 {
            return Err(CatalogError::NotFound(format!("key {id}")));
        }
        Ok(())
    }

    async fn set_key_tier(&self, id: &str, tier: &str) -> Result<ApiKey> {
        let c = self.client().await?;
        c.query_opt(
            "UPDATE api_keys SET tier = $2 WHERE id = $1 RETURNING *",
            &[&id, &tier],
        )
        .await?
        .as_ref()
        .map(key_from_row)
        .transpose()?
        .ok_or_else(|| CatalogError::NotFound(format!("key {id}")))
    }

    async fn load_usage(&self, day: NaiveDate) -> Result<Vec<(String, u64)>> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT caller, bytes FROM daily_usage WHERE day = $1",
            &[&day],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
        .collect())
    }

    async fn add_usage(&self, day: NaiveDate, usage: Vec<(String, u64)>) -> Result<()> {
        let (callers, bytes): (Vec<String>, Vec<i64>) = usage
            .into_iter()
            .map(|(c, b)| (c, i64::try_from(b).unwrap_or(i64::MAX)))
            .unzip();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO daily_usage (day, caller, bytes) \
             SELECT $1, caller, bytes FROM unnest($2::text[], $3::bigint[]) AS u(caller, bytes) \
             ON CONFLICT (day, caller) DO UPDATE SET bytes = \
               CASE WHEN daily_usage.bytes > 9223372036854775807 - excluded.bytes \
                    THEN 9223372036854775807 ELSE daily_usage.bytes + excluded.bytes END",
            &[&day, &callers, &bytes],
        )
        .await?;
        tx.execute("DELETE FROM daily_usage WHERE day < $1", &[&day])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_application(&self, app: NewApplication) -> Result<Application> {
        let id = uuid::Uuid::now_v7().to_string();
        let c = self.client().await?;
        match c
            .query_one(
                "INSERT INTO applications (id, department, dataset, applicant, purpose, status, \
                 created_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6) RETURNING *",
                &[
                    &id,
                    &app.department,
                    &app.dataset,
                    &app.applicant,
                    &app.purpose,
                    &now(),
                ],
            )
            .await
        {
            Ok(r) => application_from_row(&r),
            Err(e) if is(&e, &SqlState::FOREIGN_KEY_VIOLATION) => {
                Err(CatalogError::NotFound(format!(
                    "dataset {}/{} or key {}",
                    app.department, app.dataset, app.applicant
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_application(&self, id: &str) -> Result<Option<Application>> {
        let c = self.client().await?;
        c.query_opt("SELECT * FROM applications WHERE id = $1", &[&id])
            .await?
            .as_ref()
            .map(application_from_row)
            .transpose()
    }

    async fn list_applications(&self, filter: &ApplicationFilter) -> Result<Vec<Application>> {
        let c = self.client().await?;
        let status = filter.status.map(|s| s.as_str());
        let stmt = c
            .prepare_cached(
                "SELECT * FROM applications WHERE ($1::text IS NULL OR applicant = $1) \
                 AND ($2::text IS NULL OR department = $2) AND ($3::text IS NULL OR status = $3) \
                 ORDER BY created_at DESC, id DESC",
            )
            .await?;
        c.query(&stmt, &[&filter.applicant, &filter.department, &status])
            .await?
            .iter()
            .map(application_from_row)
            .collect()
    }

    async fn decide_application(
        &self,
        id: &str,
        decision: Decision,
        by: &str,
    ) -> Result<(Application, Option<Grant>)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Locked, so two gateways deciding at once decide once: the second sees the first's.
        let app = tx
            .query_opt(
                "SELECT * FROM applications WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            .as_ref()
            .map(application_from_row)
            .transpose()?
            .ok_or_else(|| CatalogError::NotFound(format!("application {id}")))?;
        if app.status != ApplicationStatus::Pending {
            return Err(CatalogError::Conflict(format!(
                "application {id} was already {}",
                app.status.as_str()
            )));
        }
        let at = now();
        let grant = match &decision {
            Decision::Approve { expires_at } => {
                tx.execute(
                    "UPDATE applications SET status = 'approved', decided_by = $2, \
                     decided_at = $3 WHERE id = $1",
                    &[&id, &by, &at],
                )
                .await?;
                let gid = uuid::Uuid::now_v7().to_string();
                let r = tx
                    .query_one(
                        "INSERT INTO grants (id, application_id, key_id, department, dataset, \
                         created_at, created_by, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                        &[
                            &gid,
                            &id,
                            &app.applicant,
                            &app.department,
                            &app.dataset,
                            &at,
                            &by,
                            expires_at,
                        ],
                    )
                    .await?;
                Some(grant_from_row(&r)?)
            }
            Decision::Reject { reason } => {
                tx.execute(
                    "UPDATE applications SET status = 'rejected', decided_by = $2, \
                     decided_at = $3, reason = $4 WHERE id = $1",
                    &[&id, &by, &at, reason],
                )
                .await?;
                None
            }
        };
        let app = application_from_row(
            &tx.query_one("SELECT * FROM applications WHERE id = $1", &[&id])
                .await?,
        )?;
        tx.commit().await?;
        Ok((app, grant))
    }

    async fn get_grant(&self, id: &str) -> Result<Option<Grant>> {
        let c = self.client().await?;
        c.query_opt("SELECT * FROM grants WHERE id = $1", &[&id])
            .await?
            .as_ref()
            .map(grant_from_row)
            .transpose()
    }

    async fn list_grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT * FROM grants WHERE ($1::text IS NULL OR key_id = $1) \
                 AND ($2::text IS NULL OR department = $2) ORDER BY created_at DESC, id DESC",
            )
            .await?;
        c.query(&stmt, &[&filter.key_id, &filter.department])
            .await?
            .iter()
            .map(grant_from_row)
            .collect()
    }

    async fn get_key_and_grants(&self, id: &str) -> Result<Option<(ApiKey, Vec<Grant>)>> {
        // Not cached: another gateway may revoke at any moment. Both statements go out at
        // once on one connection (tokio-postgres pipelines them): one round trip.
        let c = self.client().await?;
        let key_stmt = c
            .prepare_cached("SELECT * FROM api_keys WHERE id = $1")
            .await?;
        let grants_stmt = c
            .prepare_cached(
                "SELECT * FROM grants WHERE key_id = $1 ORDER BY created_at DESC, id DESC",
            )
            .await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
        let (key, grants) = tokio::try_join!(
            c.query_opt(&key_stmt, &params),
            c.query(&grants_stmt, &params)
        )?;
        let Some(key) = key.as_ref().map(key_from_row).transpose()? else {
            return Ok(None);
        };
        let grants = grants.iter().map(grant_from_row).collect::<Result<_>>()?;
        Ok(Some((key, grants)))
    }

    async fn revoke_grant(&self, id: &str, by: &str) -> Result<Grant> {
        let c = self.client().await?;
        c.execute(
            "UPDATE grants SET revoked_at = $2, revoked_by = $3 \
             WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &now(), &by],
        )
        .await?;
        c.query_opt("SELECT * FROM grants WHERE id = $1", &[&id])
            .await?
            .as_ref()
            .map(grant_from_row)
            .transpose()?
            .ok_or_else(|| CatalogError::NotFound(format!("grant {id}")))
    }
}

impl PostgresCatalog {
    async fn set_unpublished(
        &self,
        department: &str,
        name: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE datasets SET unpublished_at = $3, updated_at = $4 \
                 WHERE department_id = $1 AND name = $2",
                &[&department, &name, &at, &now()],
            )
            .await?;
        if n == 0 {
            return Err(CatalogError::NotFound(format!(
                "dataset {department}/{name}"
            )));
        }
        Ok(())
    }
}
