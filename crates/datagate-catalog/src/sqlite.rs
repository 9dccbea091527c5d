//! The embedded SQLite catalog.
//!
//! One writer connection (SQLite allows one writer at a time anyway) and a few reader
//! connections, all in WAL mode so readers never wait for the writer. Blocking SQLite calls run
//! on tokio's blocking pool.

use crate::grants::{
    Application, ApplicationFilter, ApplicationStatus, Decision, Grant, GrantFilter, NewApplication,
};
use crate::keys::{ApiKey, NewApiKey};
use crate::model::*;
use crate::model::{validate_columns, validate_metadata};
use crate::store::{CatalogError, CatalogStore, Result};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use datagate_core::AccessLevel;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const READERS: usize = 4;

/// The catalog in an SQLite database file.
#[derive(Clone)]
pub struct SqliteCatalog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    cache: ReadCache,
    keys: KeyCache,
}

/// The answers of `get_key_and_grants` — the read every keyed request makes — kept while the
/// database file has not changed. Whether it has is asked of SQLite itself (`PRAGMA
/// data_version` on a connection that only watches), so a commit by any connection, this
/// process's writer or the CLI on the same file, drops every entry before the next request:
/// a revoked key or grant holds at once, as without the cache.
struct KeyCache {
    watch: Mutex<Connection>,
    entries: Mutex<HashMap<String, (i64, KeyAndGrants)>>,
}

/// What `get_key_and_grants` answers.
type KeyAndGrants = Option<(ApiKey, Vec<Grant>)>;

impl KeyCache {
    fn open(path: &Path) -> rusqlite::Result<Self> {
        let watch = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Asked on the async side: never wait; a busy file just means no cached answer.
        watch.busy_timeout(std::time::Duration::ZERO)?;
        Ok(Self {
            watch: Mutex::new(watch),
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// The file's data version now: a shared-memory read of the WAL index, no I/O. `None` when
    /// the watching connection is in use or the file is busy (then nothing is cached).
    fn data_version(&self) -> Option<i64> {
        let conn = self.watch.try_lock().ok()?;
        conn.prepare_cached("PRAGMA data_version")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .ok()
    }

    fn get(&self, id: &str, version: i64) -> Option<KeyAndGrants> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(id)
            .filter(|(v, _)| *v == version)
            .map(|(_, found)| found.clone())
    }

    /// Keeps `found`, read after the file was at `version` (taken before the read, so a commit
    /// landing meanwhile leaves the entry stale, never wrong).
    fn put(&self, id: &str, version: i64, found: &KeyAndGrants) {
        insert_bounded(&self.entries, id.to_string(), (version, found.clone()));
    }
}

/// Inserts into one of the read caches' maps, emptying it first when it holds
/// [`READ_CACHE_ENTRIES`].
fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, key: K, value: V) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= READ_CACHE_ENTRIES {
        map.clear();
    }
    map.insert(key, value);
}

/// A change made by another process (the CLI on the same file) shows within this long. (Asking
/// `PRAGMA data_version` before each dataset look-up, as [`KeyCache`] does, was measured: it
/// cost a small page 30% of its rate; `benches/RESULTS.md`, "Fair use: the refusal path".)
const READ_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Entries kept at most per map (cleared when full).
const READ_CACHE_ENTRIES: usize = 10_000;

/// The answers of `get_dataset` and `get_version` — the look-ups every data request makes —
/// kept until this catalog next writes anything (every write bumps `generation`), and at most
/// [`READ_CACHE_TTL`] for writes by other processes.
#[derive(Default)]
struct ReadCache {
    generation: AtomicU64,
    datasets: CacheMap<(String, String), Option<Dataset>>,
    versions: CacheMap<(String, String, i64), Option<Version>>,
}

type CacheMap<K, T> = Mutex<HashMap<K, Cached<T>>>;

struct Cached<T> {
    generation: u64,
    at: Instant,
    value: T,
}

impl ReadCache {
    fn get<K: std::hash::Hash + Eq, T: Clone>(&self, map: &CacheMap<K, T>, key: &K) -> Option<T> {
        let generation = self.generation.load(Ordering::Acquire);
        let map = map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|c| c.generation == generation && c.at.elapsed() < READ_CACHE_TTL)
            .map(|c| c.value.clone())
    }

    /// Keeps `value`, read while the catalog was at `generation` (taken before the read, so a
    /// write landing meanwhile leaves the entry stale, never wrong).
    fn put<K: std::hash::Hash + Eq, T>(
        &self,
        map: &CacheMap<K, T>,
        key: K,
        generation: u64,
        value: T,
    ) {
        let at = Instant::now();
        insert_bounded(
            map,
            key,
            Cached {
                generation,
                at,
                value,
            },
        );
    }
}

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(
                C::DatabaseBusy
                | C::DatabaseLocked
                | C::ReadOnly
                | C::DiskFull
                | C::CannotOpen
                | C::SystemIoFailure
                | C::PermissionDenied,
            ) => CatalogError::Unavailable(e.to_string()),
            _ => CatalogError::Backend(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for CatalogError {
    fn from(e: serde_json::Error) -> Self {
        CatalogError::Backend(format!("corrupt JSON in catalog: {e}"))
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

impl SqliteCatalog {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                CatalogError::Backend(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut writer = Connection::open(path)?;
        let mode: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CatalogError::Backend(format!(
                "{} does not support WAL mode (got {mode})",
                path.display()
            )));
        }
        configure(&writer)?;
        crate::migrations::sqlite()
            .to_latest(&mut writer)
            .map_err(|e| CatalogError::Backend(format!("migrating {}: {e}", path.display())))?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure(&r)?;
            readers.push(Mutex::new(r));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                cache: ReadCache::default(),
                keys: KeyCache::open(path)?,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let start = inner.next_reader.fetch_add(1, Ordering::Relaxed);
            for i in 0..inner.readers.len() {
                if let Ok(conn) = inner.readers[(start + i) % inner.readers.len()].try_lock() {
                    return f(&conn);
                }
            }
            let conn = inner.readers[start % inner.readers.len()]
                .lock()
                .map_err(|_| CatalogError::Backend("reader connection poisoned".into()))?;
            f(&conn)
        })
        .await
        .map_err(|e| CatalogError::Backend(format!("catalog task failed: {e}")))?
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .writer
                .lock()
                .map_err(|_| CatalogError::Backend("writer connection poisoned".into()))?;
            let done = f(&mut conn);
            // Whatever it did (even a failed write may have changed something first).
            inner.cache.generation.fetch_add(1, Ordering::AcqRel);
            done
        })
        .await
        .map_err(|e| CatalogError::Backend(format!("catalog task failed: {e}")))?
    }
}

/// The `WHERE` text (over `datasets d`) and its arguments of what `filter` matches, its
/// `limit`, `offset` and order aside.
fn dataset_matches(filter: &DatasetFilter) -> Result<(String, Vec<rusqlite::types::Value>)> {
    let levels: Vec<&str> = filter.visible_levels.iter().map(|l| l.as_str()).collect();
    let mut clauses = vec![
        if filter.unpublished {
            "d.unpublished_at IS NOT NULL"
        } else {
            "d.unpublished_at IS NULL"
        }
        .to_string(),
        "d.access_level IN (SELECT value FROM json_each(?1))".to_string(),
    ];
    let mut args: Vec<rusqlite::types::Value> = vec![serde_json::to_string(&levels)?.into()];
    if let Some(dept) = &filter.department {
        args.push(dept.clone().into());
        clauses.push(format!("d.department_id = ?{}", args.len()));
    }
    if let Some(level) = filter.access_level {
        args.push(level.as_str().to_string().into());
        clauses.push(format!("d.access_level = ?{}", args.len()));
    }
    if let Some(tag) = &filter.tag {
        args.push(tag.clone().into());
        clauses.push(format!(
            "EXISTS (SELECT 1 FROM json_each(d.tags) t WHERE t.value = ?{})",
            args.len()
        ));
    }
    if let Some(frequency) = &filter.update_frequency {
        args.push(frequency.clone().into());
        clauses.push(format!("d.update_frequency = ?{}", args.len()));
    }
    if let Some(format) = &filter.source_format {
        args.push(format.clone().into());
        clauses.push(format!(
            "EXISTS (SELECT 1 FROM versions fv WHERE fv.dataset_id = d.id \
             AND fv.version = d.current_version AND fv.source_format = ?{})",
            args.len()
        ));
    }
    if let Some(q) = &filter.q {
        for word in q.split_whitespace() {
            args.push(like_pattern(word).into());
            let n = args.len();
            let name = if filter.q_names {
                format!(" OR (d.department_id || '.' || d.name) LIKE ?{n} ESCAPE '\\'")
            } else {
                String::new()
            };
            clauses.push(format!(
                "(d.title LIKE ?{n} ESCAPE '\\' OR d.description LIKE ?{n} ESCAPE '\\' \
                 OR EXISTS (SELECT 1 FROM json_each(d.tags) t WHERE t.value LIKE ?{n} ESCAPE '\\'){name})"
            ));
        }
    }
    Ok((clauses.join(" AND "), args))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

fn parse_col<T: std::str::FromStr>(s: &str) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn department_from_row(r: &Row<'_>) -> rusqlite::Result<Department> {
    Ok(Department {
        id: r.get("id")?,
        name: r.get("name")?,
        description: r.get("description")?,
        created_at: parse_ts(&r.get::<_, String>("created_at")?)?,
        updated_at: parse_ts(&r.get::<_, String>("updated_at")?)?,
    })
}

/// Read by position in `dataset_from_row`: keep the two in step.
const DATASET_COLUMNS: &str = "d.id, d.department_id, d.name, d.title, d.description, d.tags, \
    d.license, d.contact_name, d.contact_email, d.update_frequency, d.access_level, \
    d.temporal_coverage, d.spatial_coverage, d.primary_key, d.current_version, \
    d.unpublished_at, d.created_at, d.updated_at, \
    COALESCE(v.row_count, 0) AS row_count, COALESCE(v.bytes, 0) AS size_bytes, \
    v.source_format AS source_format";

const DATASET_FROM: &str = "datasets d LEFT JOIN versions v \
    ON v.dataset_id = d.id AND v.version = d.current_version";

struct DatasetRow {
    id: i64,
    dataset: Dataset,
}

fn json_list(s: &str) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A row of `SELECT {DATASET_COLUMNS}`, read by position (by name, each value cost a search of
/// the column names: a fifth of listing 5,000 datasets).
fn dataset_from_row(r: &Row<'_>) -> rusqlite::Result<DatasetRow> {
    let unpublished: Option<String> = r.get(15)?;
    let level: String = r.get(10)?;
    Ok(DatasetRow {
        id: r.get(0)?,
        dataset: Dataset {
            department: r.get(1)?,
            name: r.get(2)?,
            metadata: DatasetMetadata {
                title: r.get(3)?,
                description: r.get(4)?,
                tags: json_list(&r.get::<_, String>(5)?)?,
                license: r.get(6)?,
                contact: Contact {
                    name: r.get(7)?,
                    email: r.get(8)?,
                },
                update_frequency: r.get(9)?,
                access_level: parse_col::<AccessLevel>(&level)?,
                temporal_coverage: r.get(11)?,
                spatial_coverage: r.get(12)?,
            },
            primary_key: json_list(&r.get::<_, String>(13)?)?,
            columns: Vec::new(),
            current_version: r.get(14)?,
            row_count: r.get::<_, i64>(18)? as u64,
            size_bytes: r.get::<_, i64>(19)? as u64,
            source_format: r.get(20)?,
            unpublished_at: unpublished.as_deref().map(parse_ts).transpose()?,
            created_at: parse_ts(&r.get::<_, String>(16)?)?,
            updated_at: parse_ts(&r.get::<_, String>(17)?)?,
        },
    })
}

/// The columns of each of `rows`' datasets, in one query.
fn load_columns_of(conn: &Connection, rows: &mut [DatasetRow]) -> Result<()> {
    if let [row] = rows {
        row.dataset.columns = load_columns(conn, row.id)?;
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut stmt = conn.prepare_cached(
        "SELECT dataset_id, name, data_type, description, sensitivity, mask FROM columns \
         WHERE dataset_id IN (SELECT value FROM json_each(?1)) ORDER BY dataset_id, position",
    )?;
    let mut by_dataset: HashMap<i64, Vec<Column>> = HashMap::with_capacity(ids.len());
    let mut found = stmt.query(params![serde_json::to_string(&ids)?])?;
    while let Some(r) = found.next()? {
        by_dataset
            .entry(r.get(0)?)
            .or_default()
            .push(column_from_row(r, 1)?);
    }
    for row in rows {
        row.dataset.columns = by_dataset.remove(&row.id).unwrap_or_default();
    }
    Ok(())
}

/// A column from `name, data_type, description, sensitivity, mask` starting at `at`.
fn column_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Column> {
    let mask: Option<String> = r.get(at + 4)?;
    Ok(Column {
        name: r.get(at)?,
        data_type: parse_col(&r.get::<_, String>(at + 1)?)?,
        description: r.get(at + 2)?,
        sensitivity: parse_col(&r.get::<_, String>(at + 3)?)?,
        mask: mask.as_deref().map(parse_col).transpose()?,
    })
}

fn load_columns(conn: &Connection, dataset_id: i64) -> Result<Vec<Column>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, data_type, description, sensitivity, mask FROM columns \
         WHERE dataset_id = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map([dataset_id], |r| column_from_row(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn find_dataset(conn: &Connection, department: &str, name: &str) -> Result<Option<DatasetRow>> {
    let sql = format!(
        "SELECT {DATASET_COLUMNS} FROM {DATASET_FROM} WHERE d.department_id = ?1 AND d.name = ?2"
    );
    let row = conn
        .prepare_cached(&sql)?
        .query_row(params![department, name], dataset_from_row)
        .optional()?;
    match row {
        Some(mut row) => {
            row.dataset.columns = load_columns(conn, row.id)?;
            Ok(Some(row))
        }
        None => Ok(None),
    }
}

fn require_dataset(conn: &Connection, department: &str, name: &str) -> Result<DatasetRow> {
    find_dataset(conn, department, name)?
        .ok_or_else(|| CatalogError::NotFound(format!("dataset {department}/{name}")))
}

fn insert_columns(conn: &Connection, dataset_id: i64, columns: &[Column]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO columns (dataset_id, position, name, data_type, description, sensitivity, mask) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (i, c) in columns.iter().enumerate() {
        stmt.execute(params![
            dataset_id,
            i as i64,
            c.name,
            c.data_type.to_string(),
            c.description,
            c.sensitivity.as_str(),
            c.mask.map(|m| m.as_str()),
        ])?;
    }
    Ok(())
}

fn load_version(conn: &Connection, dataset_id: i64, version: i64) -> Result<Option<Version>> {
    let v = conn
        .prepare_cached(
            "SELECT version, mode, rows_added, row_count, bytes, columns, source_digest, \
             created_at, created_by, source_format FROM versions WHERE dataset_id = ?1 AND version = ?2",
        )?
        .query_row(params![dataset_id, version], |r| {
            let mode: String = r.get(1)?;
            let cols: String = r.get(5)?;
            Ok(Version {
                version: r.get(0)?,
                mode: if mode == "append" {
                    VersionMode::Append
                } else {
                    VersionMode::Replace
                },
                rows_added: r.get::<_, i64>(2)? as u64,
                row_count: r.get::<_, i64>(3)? as u64,
                bytes: r.get::<_, i64>(4)? as u64,
                files: Vec::new(),
                columns: serde_json::from_str(&cols).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        5,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?,
                source_digest: r.get(6)?,
                created_at: parse_ts(&r.get::<_, String>(7)?)?,
                created_by: r.get(8)?,
                source_format: r.get(9)?,
            })
        })
        .optional()?;
    let Some(mut v) = v else { return Ok(None) };
    let mut stmt = conn.prepare_cached(
        "SELECT path, rows, bytes FROM version_files WHERE dataset_id = ?1 AND version = ?2 \
         ORDER BY position",
    )?;
    v.files = stmt
        .query_map(params![dataset_id, version], |r| {
            Ok(DataFile {
                path: r.get(0)?,
                rows: r.get::<_, i64>(1)? as u64,
                bytes: r.get::<_, i64>(2)? as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(v))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

#[async_trait]
impl CatalogStore for SqliteCatalog {
    async fn ping(&self) -> Result<()> {
        self.read(|c| {
            Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())?)
        })
        .await
    }

    async fn create_department(&self, dept: NewDepartment) -> Result<Department> {
        crate::model::validate_department(&dept)?;
        self.write(move |c| {
            let now = ts(Utc::now());
            match c.execute(
                "INSERT INTO departments (id, name, description, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![dept.id, dept.name, dept.description, now],
            ) {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(CatalogError::AlreadyExists(format!(
                        "department {}",
                        dept.id
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            Ok(c.query_row(
                "SELECT * FROM departments WHERE id = ?1",
                [&dept.id],
                department_from_row,
            )?)
        })
        .await
    }

    async fn upsert_department(&self, dept: NewDepartment) -> Result<(Department, bool)> {
        crate::model::validate_department(&dept)?;
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing = tx
                .query_row("SELECT * FROM departments WHERE id = ?1", [&dept.id], department_from_row)
                .optional()?;
            let now = ts(Utc::now());
            let changed = match &existing {
                None => {
                    tx.execute(
                        "INSERT INTO departments (id, name, description, created_at, updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?4)",
                        params![dept.id, dept.name, dept.description, now],
                    )?;
                    true
                }
                Some(d) if d.name != dept.name || d.description != dept.description => {
                    tx.execute(
                        "UPDATE departments SET name = ?2, description = ?3, updated_at = ?4 WHERE id = ?1",
                        params![dept.id, dept.name, dept.description, now],
                    )?;
                    true
                }
                Some(_) => false,
            };
            let d = tx.query_row("SELECT * FROM departments WHERE id = ?1", [&dept.id], department_from_row)?;
            tx.commit()?;
            Ok((d, changed))
        })
        .await
    }

    async fn get_department(&self, id: &str) -> Result<Option<Department>> {
        let id = id.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT * FROM departments WHERE id = ?1",
                [&id],
                department_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_departments(
        &self,
        visible_levels: &[AccessLevel],
    ) -> Result<Vec<DepartmentSummary>> {
        let levels: Vec<String> = visible_levels
            .iter()
            .map(|l| l.as_str().to_string())
            .collect();
        self.read(move |c| {
            let levels_json = serde_json::to_string(&levels)?;
            let mut stmt = c.prepare_cached(
                "SELECT dp.*, (SELECT COUNT(*) FROM datasets d WHERE d.department_id = dp.id \
                   AND d.unpublished_at IS NULL \
                   AND d.access_level IN (SELECT value FROM json_each(?1))) AS dataset_count \
                 FROM departments dp ORDER BY dp.id",
            )?;
            let rows = stmt.query_map([levels_json], |r| {
                Ok(DepartmentSummary {
                    department: department_from_row(r)?,
                    dataset_count: r.get::<_, i64>("dataset_count")? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn create_dataset(&self, ds: NewDataset) -> Result<Dataset> {
        datagate_core::validate_name("department id", &ds.department)
            .map_err(|e| CatalogError::Invalid(e.to_string()))?;
        datagate_core::validate_name("dataset name", &ds.name)
            .map_err(|e| CatalogError::Invalid(e.to_string()))?;
        validate_columns(&ds.columns, &ds.primary_key)?;
        validate_metadata(&ds.metadata)?;
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let dept_exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM departments WHERE id = ?1)",
                [&ds.department],
                |r| r.get(0),
            )?;
            if !dept_exists {
                return Err(CatalogError::NotFound(format!(
                    "department {}",
                    ds.department
                )));
            }
            let now = ts(Utc::now());
            let m = &ds.metadata;
            let res = tx.execute(
                "INSERT INTO datasets (department_id, name, title, description, tags, license, \
                 contact_name, contact_email, update_frequency, access_level, temporal_coverage, \
                 spatial_coverage, primary_key, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)",
                params![
                    ds.department,
                    ds.name,
                    m.title,
                    m.description,
                    serde_json::to_string(&m.tags)?,
                    m.license,
                    m.contact.name,
                    m.contact.email,
                    m.update_frequency,
                    m.access_level.as_str(),
                    m.temporal_coverage,
                    m.spatial_coverage,
                    serde_json::to_string(&ds.primary_key)?,
                    now,
                ],
            );
            match res {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(CatalogError::AlreadyExists(format!(
                        "dataset {}/{}",
                        ds.department, ds.name
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            let id = tx.last_insert_rowid();
            insert_columns(&tx, id, &ds.columns)?;
            let row = require_dataset(&tx, &ds.department, &ds.name)?;
            tx.commit()?;
            Ok(row.dataset)
        })
        .await
    }

    async fn update_dataset_metadata(
        &self,
        department: &str,
        name: &str,
        metadata: DatasetMetadata,
        primary_key: Option<Vec<String>>,
    ) -> Result<(Dataset, bool)> {
        validate_metadata(&metadata)?;
        let (department, name) = (department.to_string(), name.to_string());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = require_dataset(&tx, &department, &name)?;
            let pk = primary_key.unwrap_or_else(|| row.dataset.primary_key.clone());
            validate_columns(&row.dataset.columns, &pk)?;
            if row.dataset.metadata == metadata && row.dataset.primary_key == pk {
                return Ok((row.dataset, false));
            }
            let m = &metadata;
            tx.execute(
                "UPDATE datasets SET title = ?2, description = ?3, tags = ?4, license = ?5, \
                 contact_name = ?6, contact_email = ?7, update_frequency = ?8, access_level = ?9, \
                 temporal_coverage = ?10, spatial_coverage = ?11, primary_key = ?12, updated_at = ?13 \
                 WHERE id = ?1",
                params![
                    row.id,
                    m.title,
                    m.description,
                    serde_json::to_string(&m.tags)?,
                    m.license,
                    m.contact.name,
                    m.contact.email,
                    m.update_frequency,
                    m.access_level.as_str(),
                    m.temporal_coverage,
                    m.spatial_coverage,
                    serde_json::to_string(&pk)?,
                    ts(Utc::now()),
                ],
            )?;
            let row = require_dataset(&tx, &department, &name)?;
            tx.commit()?;
            Ok((row.dataset, true))
        })
        .await
    }

    async fn update_column_annotations(
        &self,
        department: &str,
        name: &str,
        columns: Vec<Column>,
    ) -> Result<bool> {
        let (department, name) = (department.to_string(), name.to_string());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = require_dataset(&tx, &department, &name)?;
            let changes = crate::model::annotation_changes(
                &format!("{department}/{name}"),
                &row.dataset.columns,
                &columns,
            )?;
            for col in &changes {
                tx.execute(
                    "UPDATE columns SET description = ?3, sensitivity = ?4, mask = ?5 \
                     WHERE dataset_id = ?1 AND name = ?2",
                    params![
                        row.id,
                        col.name,
                        col.description,
                        col.sensitivity.as_str(),
                        col.mask.map(|m| m.as_str())
                    ],
                )?;
            }
            let changed = !changes.is_empty();
            if changed {
                tx.execute(
                    "UPDATE datasets SET updated_at = ?2 WHERE id = ?1",
                    params![row.id, ts(Utc::now())],
                )?;
            }
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    async fn get_dataset(&self, department: &str, name: &str) -> Result<Option<Dataset>> {
        let cache = &self.inner.cache;
        let key = (department.to_string(), name.to_string());
        if let Some(found) = cache.get(&cache.datasets, &key) {
            return Ok(found);
        }
        let generation = cache.generation.load(Ordering::Acquire);
        let (department, name) = key.clone();
        let found = self
            .read(move |c| Ok(find_dataset(c, &department, &name)?.map(|r| r.dataset)))
            .await?;
        cache.put(&cache.datasets, key, generation, found.clone());
        Ok(found)
    }

    async fn list_datasets(&self, filter: &DatasetFilter) -> Result<DatasetPage> {
        let filter = filter.clone();
        self.read(move |c| {
            let (where_sql, mut args) = dataset_matches(&filter)?;
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM datasets d WHERE {where_sql}"),
                rusqlite::params_from_iter(args.iter()),
                |r| r.get(0),
            )?;
            args.push((filter.limit.min(i64::MAX as u64) as i64).into());
            let limit_n = args.len();
            args.push((filter.offset.min(i64::MAX as u64) as i64).into());
            let offset_n = args.len();
            let order = filter.order.sql("");
            // The page's ids first, sorted on their keys alone, then their rows (put back in
            // that order here: SQLite compares text by its bytes, as Rust does): sorting the
            // whole rows (descriptions and all, each joined to its version) for each page cost
            // half of listing a 5,000-dataset catalog 1,000 at a time.
            let sql = format!(
                "SELECT {DATASET_COLUMNS} FROM (SELECT d.id FROM datasets d WHERE {where_sql} \
                 ORDER BY {order} LIMIT ?{limit_n} OFFSET ?{offset_n}) p \
                 CROSS JOIN {DATASET_FROM} WHERE d.id = p.id"
            );
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), dataset_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.sort_unstable_by(|a, b| filter.order.compare(&a.dataset, &b.dataset));
            if !filter.skip_columns {
                load_columns_of(c, &mut rows)?;
            }
            let datasets = rows.into_iter().map(|r| r.dataset).collect();
            Ok(DatasetPage {
                datasets,
                total: total as u64,
            })
        })
        .await
    }

    async fn dataset_facets(&self, filter: &DatasetFilter) -> Result<DatasetFacets> {
        let filter = filter.clone();
        self.read(move |c| {
            let (where_sql, args) = dataset_matches(&filter)?;
            // The matches found once (a search's LIKEs scan every description).
            let sql = DatasetFacets::statement(&where_sql, "json_each(m.tags) t");
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
            let mut facets = DatasetFacets::default();
            while let Some(r) = rows.next()? {
                facets.add(&r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)?;
            }
            Ok(facets.sorted())
        })
        .await
    }

    async fn unpublish_dataset(&self, department: &str, name: &str) -> Result<()> {
        self.set_unpublished(department, name, Some(ts(Utc::now())))
            .await
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
        let (department, name) = (department.to_string(), name.to_string());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = require_dataset(&tx, &department, &name)?;
            if row.dataset.current_version != nv.base_version {
                return Err(CatalogError::Conflict(format!(
                    "dataset {department}/{name} moved from version {:?} to {:?} during the upload",
                    nv.base_version, row.dataset.current_version
                )));
            }
            if nv.columns.is_empty() {
                return Err(CatalogError::Invalid("a version needs a schema".into()));
            }
            let mut base_files = Vec::new();
            if nv.mode == VersionMode::Append
                && let Some(base) = nv.base_version
            {
                let prev = load_version(&tx, row.id, base)?
                    .ok_or_else(|| CatalogError::Backend(format!("version {base} is missing")))?;
                base_files = prev.files;
            }
            let (files, rows_added) = crate::model::version_files(base_files, &nv)?;
            let row_count: u64 = files.iter().map(|f| f.rows).sum();
            let bytes: u64 = files.iter().map(|f| f.bytes).sum();
            let number = row.dataset.current_version.unwrap_or(0) + 1;
            // Also covers numbers of versions whose pointer was never moved (none today).
            let number = number.max(tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE dataset_id = ?1",
                [row.id],
                |r| r.get::<_, i64>(0),
            )?);
            let now = ts(Utc::now());
            tx.execute(
                "INSERT INTO versions (dataset_id, version, mode, rows_added, row_count, bytes, \
                 columns, source_digest, created_at, created_by, source_format) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    row.id,
                    number,
                    nv.mode.as_str(),
                    rows_added as i64,
                    row_count as i64,
                    bytes as i64,
                    serde_json::to_string(&nv.columns)?,
                    nv.source_digest,
                    now,
                    nv.created_by,
                    nv.source_format,
                ],
            )?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO version_files (dataset_id, version, position, path, rows, bytes) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (i, f) in files.iter().enumerate() {
                    stmt.execute(params![
                        row.id,
                        number,
                        i as i64,
                        f.path,
                        f.rows as i64,
                        f.bytes as i64
                    ])?;
                }
            }
            // The dataset's schema follows its newest version: declared columns keep their
            // annotations, new columns (a replace may add nullable ones) are appended.
            if row.dataset.columns != nv.columns {
                let merged = crate::model::merged_columns(&row.dataset.columns, &nv.columns);
                tx.execute("DELETE FROM columns WHERE dataset_id = ?1", [row.id])?;
                insert_columns(&tx, row.id, &merged)?;
            }
            tx.execute(
                "UPDATE datasets SET current_version = ?2, updated_at = ?3 WHERE id = ?1",
                params![row.id, number, now],
            )?;
            let v = load_version(&tx, row.id, number)?.ok_or_else(|| {
                CatalogError::Backend("version vanished inside its transaction".into())
            })?;
            tx.commit()?;
            Ok(v)
        })
        .await
    }

    async fn get_version(
        &self,
        department: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<Version>> {
        let cache = &self.inner.cache;
        let key = (department.to_string(), name.to_string(), version);
        if let Some(found) = cache.get(&cache.versions, &key) {
            return Ok(found);
        }
        let generation = cache.generation.load(Ordering::Acquire);
        let (department, name) = (key.0.clone(), key.1.clone());
        let found = self
            .read(move |c| {
                let Some(row) = find_dataset(c, &department, &name)? else {
                    return Ok(None);
                };
                load_version(c, row.id, version)
            })
            .await?;
        cache.put(&cache.versions, key, generation, found.clone());
        Ok(found)
    }

    async fn get_versions(&self, keys: &[(String, String, i64)]) -> Result<Vec<Option<Version>>> {
        let cache = &self.inner.cache;
        let mut found: Vec<Option<Option<Version>>> = keys
            .iter()
            .map(|key| cache.get(&cache.versions, key))
            .collect();
        let missing = crate::model::missed(keys, &found);
        if !missing.is_empty() {
            let generation = cache.generation.load(Ordering::Acquire);
            let read = missing.clone();
            // One trip for them all: a read connection taken once, statements prepared once.
            let loaded = self
                .read(move |c| {
                    let mut id = c.prepare_cached(
                        "SELECT id FROM datasets WHERE department_id = ?1 AND name = ?2",
                    )?;
                    read.iter()
                        .map(|(department, name, version)| {
                            let dataset: Option<i64> = id
                                .query_row(params![department, name], |r| r.get(0))
                                .optional()?;
                            match dataset {
                                Some(dataset) => load_version(c, dataset, *version),
                                None => Ok(None),
                            }
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .await?;
            let misses = found.iter_mut().filter(|hit| hit.is_none());
            for (slot, (key, version)) in misses.zip(missing.into_iter().zip(loaded)) {
                cache.put(&cache.versions, key, generation, version.clone());
                *slot = Some(version);
            }
        }
        Ok(found.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn list_versions_page(
        &self,
        department: &str,
        name: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<Version>, u64)> {
        let (department, name) = (department.to_string(), name.to_string());
        let (limit, offset) = (
            i64::try_from(limit).unwrap_or(i64::MAX),
            i64::try_from(offset).unwrap_or(i64::MAX),
        );
        self.read(move |c| {
            let row = require_dataset(c, &department, &name)?;
            let total: i64 = c.query_row(
                "SELECT count(*) FROM versions WHERE dataset_id = ?1",
                [row.id],
                |r| r.get(0),
            )?;
            let numbers: Vec<i64> = c
                .prepare_cached(
                    "SELECT version FROM versions WHERE dataset_id = ?1 \
                     ORDER BY version DESC LIMIT ?2 OFFSET ?3",
                )?
                .query_map(params![row.id, limit, offset], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut out = Vec::with_capacity(numbers.len());
            for n in numbers {
                if let Some(v) = load_version(c, row.id, n)? {
                    out.push(v);
                }
            }
            Ok((out, total.unsigned_abs()))
        })
        .await
    }

    async fn expire_versions(
        &self,
        department: &str,
        name: &str,
        keep: u64,
    ) -> Result<Vec<String>> {
        let (department, name) = (department.to_string(), name.to_string());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = require_dataset(&tx, &department, &name)?;
            let expired: Vec<i64> = tx
                .prepare("SELECT version FROM versions WHERE dataset_id = ?1 ORDER BY version DESC LIMIT -1 OFFSET ?2")?
                .query_map(params![row.id, keep.min(i64::MAX as u64) as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut candidates = std::collections::BTreeSet::new();
            for v in &expired {
                let mut stmt = tx.prepare_cached("SELECT path FROM version_files WHERE dataset_id = ?1 AND version = ?2")?;
                for p in stmt.query_map(params![row.id, v], |r| r.get::<_, String>(0))? {
                    candidates.insert(p?);
                }
                tx.execute("DELETE FROM versions WHERE dataset_id = ?1 AND version = ?2", params![row.id, v])?;
            }
            let mut unreferenced = Vec::new();
            for p in candidates {
                let still: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM version_files WHERE path = ?1)",
                    [&p],
                    |r| r.get(0),
                )?;
                if !still {
                    unreferenced.push(p);
                }
            }
            tx.commit()?;
            Ok(unreferenced)
        })
        .await
    }

    async fn referenced_files(&self) -> Result<Vec<String>> {
        self.read(|c| {
            Ok(
                c.prepare("SELECT DISTINCT path FROM version_files ORDER BY path")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?,
            )
        })
        .await
    }

    async fn create_key(&self, key: NewApiKey) -> Result<ApiKey> {
        key.validate(Utc::now())?;
        self.write(move |c| {
            let now = ts(Utc::now());
            let res = c.execute(
                "INSERT INTO api_keys (id, name, role, department, tier, secret_hash, created_at, \
                 created_by, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    key.id,
                    key.name,
                    key.role.as_str(),
                    key.department,
                    key.tier,
                    key.secret_hash,
                    now,
                    key.created_by,
                    key.expires_at.map(ts),
                ],
            );
            match res {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(CatalogError::AlreadyExists(format!("key {}", key.id)));
                }
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
                {
                    return Err(CatalogError::NotFound(format!(
                        "department {}",
                        key.department.unwrap_or_default()
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            Ok(c.query_row(
                "SELECT * FROM api_keys WHERE id = ?1",
                [&key.id],
                key_from_row,
            )?)
        })
        .await
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let id = id.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT * FROM api_keys WHERE id = ?1")?
                .query_row([&id], key_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(|c| {
            Ok(c.prepare("SELECT * FROM api_keys ORDER BY created_at, id")?
                .query_map([], key_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn revoke_key(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.write(move |c| {
            let n = c.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, ts(Utc::now())],
            )?;
            if n == 0 {
                return Err(CatalogError::NotFound(format!("key {id}")));
            }
            Ok(())
        })
        .await
    }

    async fn set_key_tier(&self, id: &str, tier: &str) -> Result<ApiKey> {
        let (id, tier) = (id.to_string(), tier.to_string());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE api_keys SET tier = ?2 WHERE id = ?1",
                params![id, tier],
            )?;
            if n == 0 {
                return Err(CatalogError::NotFound(format!("key {id}")));
            }
            Ok(c.prepare_cached("SELECT * FROM api_keys WHERE id = ?1")?
                .query_row([&id], key_from_row)?)
        })
        .await
    }

    async fn load_usage(&self, day: NaiveDate) -> Result<Vec<(String, u64)>> {
        self.read(move |c| {
            let mut stmt = c.prepare("SELECT caller, bytes FROM daily_usage WHERE day = ?1")?;
            let rows = stmt.query_map([day.to_string()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn add_usage(&self, day: NaiveDate, usage: Vec<(String, u64)>) -> Result<()> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO daily_usage (day, caller, bytes) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (day, caller) DO UPDATE SET bytes = \
                       CASE WHEN bytes > 9223372036854775807 - excluded.bytes \
                            THEN 9223372036854775807 ELSE bytes + excluded.bytes END",
                )?;
                for (caller, bytes) in &usage {
                    let bytes = i64::try_from(*bytes).unwrap_or(i64::MAX);
                    upsert.execute(params![day.to_string(), caller, bytes])?;
                }
            }
            tx.execute("DELETE FROM daily_usage WHERE day < ?1", [day.to_string()])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn create_application(&self, app: NewApplication) -> Result<Application> {
        self.write(move |c| {
            let id = uuid::Uuid::now_v7().to_string();
            let res = c.execute(
                "INSERT INTO applications (id, department, dataset, applicant, purpose, status, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
                params![
                    id,
                    app.department,
                    app.dataset,
                    app.applicant,
                    app.purpose,
                    ts(Utc::now())
                ],
            );
            match res {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
                {
                    return Err(CatalogError::NotFound(format!(
                        "dataset {}/{} or key {}",
                        app.department, app.dataset, app.applicant
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            Ok(c.query_row(
                "SELECT * FROM applications WHERE id = ?1",
                [&id],
                application_from_row,
            )?)
        })
        .await
    }

    async fn get_application(&self, id: &str) -> Result<Option<Application>> {
        let id = id.to_string();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT * FROM applications WHERE id = ?1")?
                    .query_row([&id], application_from_row)
                    .optional()?,
            )
        })
        .await
    }

    async fn list_applications(&self, filter: &ApplicationFilter) -> Result<Vec<Application>> {
        let f = filter.clone();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT * FROM applications WHERE (?1 IS NULL OR applicant = ?1) \
                 AND (?2 IS NULL OR department = ?2) AND (?3 IS NULL OR status = ?3) \
                 ORDER BY created_at DESC, id DESC",
            )?
            .query_map(
                params![f.applicant, f.department, f.status.map(|s| s.as_str())],
                application_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn decide_application(
        &self,
        id: &str,
        decision: Decision,
        by: &str,
    ) -> Result<(Application, Option<Grant>)> {
        let (id, by) = (id.to_string(), by.to_string());
        self.write(move |c| {
            let tx = c.transaction()?;
            let app = tx
                .query_row(
                    "SELECT * FROM applications WHERE id = ?1",
                    [&id],
                    application_from_row,
                )
                .optional()?
                .ok_or_else(|| CatalogError::NotFound(format!("application {id}")))?;
            if app.status != ApplicationStatus::Pending {
                return Err(CatalogError::Conflict(format!(
                    "application {id} was already {}",
                    app.status.as_str()
                )));
            }
            let now = ts(Utc::now());
            let mut grant_id = None;
            match &decision {
                Decision::Approve { expires_at } => {
                    tx.execute(
                        "UPDATE applications SET status = 'approved', decided_by = ?2, \
                         decided_at = ?3 WHERE id = ?1",
                        params![id, by, now],
                    )?;
                    let gid = uuid::Uuid::now_v7().to_string();
                    tx.execute(
                        "INSERT INTO grants (id, application_id, key_id, department, dataset, \
                         created_at, created_by, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            gid,
                            id,
                            app.applicant,
                            app.department,
                            app.dataset,
                            now,
                            by,
                            expires_at.map(ts)
                        ],
                    )?;
                    grant_id = Some(gid);
                }
                Decision::Reject { reason } => {
                    tx.execute(
                        "UPDATE applications SET status = 'rejected', decided_by = ?2, \
                         decided_at = ?3, reason = ?4 WHERE id = ?1",
                        params![id, by, now, reason],
                    )?;
                }
            }
            let app = tx.query_row(
                "SELECT * FROM applications WHERE id = ?1",
                [&id],
                application_from_row,
            )?;
            let grant = match grant_id {
                Some(g) => Some(tx.query_row(
                    "SELECT * FROM grants WHERE id = ?1",
                    [&g],
                    grant_from_row,
                )?),
                None => None,
            };
            tx.commit()?;
            Ok((app, grant))
        })
        .await
    }

    async fn get_grant(&self, id: &str) -> Result<Option<Grant>> {
        let id = id.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT * FROM grants WHERE id = ?1")?
                .query_row([&id], grant_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>> {
        let f = filter.clone();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT * FROM grants WHERE (?1 IS NULL OR key_id = ?1) \
                 AND (?2 IS NULL OR department = ?2) ORDER BY created_at DESC, id DESC",
            )?
            .query_map(params![f.key_id, f.department], grant_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn get_key_and_grants(&self, id: &str) -> Result<Option<(ApiKey, Vec<Grant>)>> {
        let version = self.inner.keys.data_version();
        if let Some(v) = version
            && let Some(found) = self.inner.keys.get(id, v)
        {
            return Ok(found);
        }
        let key_id = id.to_string();
        // One trip to a reader thread and one snapshot for both reads.
        let found = self
            .read(move |c| {
                let id = key_id;
                let tx = c.unchecked_transaction()?;
                let Some(key) = tx
                    .prepare_cached("SELECT * FROM api_keys WHERE id = ?1")?
                    .query_row([&id], key_from_row)
                    .optional()?
                else {
                    return Ok(None);
                };
                let grants = tx
                    .prepare_cached(
                        "SELECT * FROM grants WHERE key_id = ?1 ORDER BY created_at DESC, id DESC",
                    )?
                    .query_map([&id], grant_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(Some((key, grants)))
            })
            .await?;
        if let Some(v) = version {
            self.inner.keys.put(id, v, &found);
        }
        Ok(found)
    }

    async fn revoke_grant(&self, id: &str, by: &str) -> Result<Grant> {
        let (id, by) = (id.to_string(), by.to_string());
        self.write(move |c| {
            c.execute(
                "UPDATE grants SET revoked_at = ?2, revoked_by = ?3 \
                 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, ts(Utc::now()), by],
            )?;
            c.query_row("SELECT * FROM grants WHERE id = ?1", [&id], grant_from_row)
                .optional()?
                .ok_or_else(|| CatalogError::NotFound(format!("grant {id}")))
        })
        .await
    }
}

fn opt_ts(r: &Row<'_>, name: &str) -> rusqlite::Result<Option<DateTime<Utc>>> {
    r.get::<_, Option<String>>(name)?
        .as_deref()
        .map(parse_ts)
        .transpose()
}

fn application_from_row(r: &Row<'_>) -> rusqlite::Result<Application> {
    Ok(Application {
        id: r.get("id")?,
        department: r.get("department")?,
        dataset: r.get("dataset")?,
        applicant: r.get("applicant")?,
        purpose: r.get("purpose")?,
        status: r.get::<_, String>("status")?.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        created_at: parse_ts(&r.get::<_, String>("created_at")?)?,
        decided_by: r.get("decided_by")?,
        decided_at: opt_ts(r, "decided_at")?,
        reason: r.get("reason")?,
    })
}

fn grant_from_row(r: &Row<'_>) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: r.get("id")?,
        application_id: r.get("application_id")?,
        key_id: r.get("key_id")?,
        department: r.get("department")?,
        dataset: r.get("dataset")?,
        created_at: parse_ts(&r.get::<_, String>("created_at")?)?,
        created_by: r.get("created_by")?,
        expires_at: opt_ts(r, "expires_at")?,
        revoked_at: opt_ts(r, "revoked_at")?,
        revoked_by: r.get("revoked_by")?,
    })
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let opt_ts = |name: &str| -> rusqlite::Result<Option<DateTime<Utc>>> {
        r.get::<_, Option<String>>(name)?
            .as_deref()
            .map(parse_ts)
            .transpose()
    };
    Ok(ApiKey {
        id: r.get("id")?,
        name: r.get("name")?,
        role: r.get::<_, String>("role")?.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        department: r.get("department")?,
        tier: r.get("tier")?,
        secret_hash: r.get("secret_hash")?,
        created_at: parse_ts(&r.get::<_, String>("created_at")?)?,
        created_by: r.get("created_by")?,
        expires_at: opt_ts("expires_at")?,
        revoked_at: opt_ts("revoked_at")?,
    })
}

impl SqliteCatalog {
    async fn set_unpublished(
        &self,
        department: &str,
        name: &str,
        at: Option<String>,
    ) -> Result<()> {
        let (department, name) = (department.to_string(), name.to_string());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE datasets SET unpublished_at = ?3, updated_at = ?4 \
                 WHERE department_id = ?1 AND name = ?2",
                params![department, name, at, ts(Utc::now())],
            )?;
            if n == 0 {
                return Err(CatalogError::NotFound(format!(
                    "dataset {department}/{name}"
                )));
            }
            Ok(())
        })
        .await
    }
}
