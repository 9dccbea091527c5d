//! Typed configuration with documented defaults.
//!
//! Sources, later ones winning: built-in defaults, the TOML file (`config/datagate.toml` unless
//! `--config` names another), `DATAGATE_<SECTION>__<KEY>` environment variables, and the short
//! forms of API.md §1 (`DATAGATE_LISTEN`, `DATAGATE_DATA_DIR`, `DATAGATE_CATALOG_URL`,
//! `DATAGATE_CATALOG_MANIFESTS`, `DATAGATE_ADMIN_KEY`). Unknown keys and wrongly typed values are errors that name the source
//! and the key, so a typo never silently falls back to a default.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The default configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/datagate.toml";

/// The whole configuration. Every field has a default; see `config/datagate.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub catalog: CatalogConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub ingest: IngestConfig,
    pub limits: LimitsConfig,
    pub query: QueryConfig,
    pub rate_limits: RateLimitsConfig,
    pub admission: AdmissionConfig,
    pub audit: AuditConfig,
    pub flight: FlightConfig,
    pub portal: PortalConfig,
    /// Fair-use tiers by name (API.md §5 "Rate limits"); keys name theirs, anonymous callers
    /// get `anonymous`.
    pub tiers: BTreeMap<String, TierConfig>,
}

/// The portal: the website at `/` (API.md §5 Ops).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    /// Serve the portal at `/`; off = `/` answers 404 like any unknown path.
    pub enabled: bool,
    /// A signed-in session ends after this long without a page view.
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in, however active.
    pub session_max_secs: u64,
    /// Signed-in sessions held at most; the least recently used end first.
    pub max_sessions: usize,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_idle_secs: 3600,
            session_max_secs: 12 * 3600,
            max_sessions: 10_000,
        }
    }
}

/// The Arrow Flight SQL listener (API.md §1 "Flight SQL").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightConfig {
    /// Address of the Flight SQL listener, e.g. `127.0.0.1:50051`; empty = no listener.
    pub listen: String,
    /// PEM certificate chain and private key: both set = the listener speaks TLS only.
    pub tls_cert: String,
    pub tls_key: String,
    /// A statement's ticket (and a prepared statement left open) is kept this long for the key
    /// that asked for it.
    pub ticket_ttl_secs: u64,
    /// Tickets and prepared statements held per caller at most; the oldest are dropped.
    pub max_handles_per_caller: usize,
    /// Rows of parameters bound to a prepared statement at once at most (each row is one
    /// execution).
    pub max_parameter_rows: usize,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            ticket_ttl_secs: 300,
            max_handles_per_caller: 64,
            max_parameter_rows: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Public base URL used in links (DCAT distributions, `next`); empty = derived from `Host`.
    pub public_url: String,
    /// A request's headers must arrive within this time of their first byte (of the
    /// connection's opening, for its first request), else the connection is closed.
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection idle (no request in flight, nothing sent) this long is closed.
    pub keep_alive_idle_secs: u64,
    /// Open connections above which idle keep-alive connections are closed and a connection
    /// still sending its headers gets one second to finish them.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes; beyond it, 431.
    pub max_header_bytes: usize,
    /// PEM certificate chain; with `tls_key`, the listener speaks TLS only (HTTP/2 and
    /// HTTP/1.1 by ALPN). Empty = plain HTTP.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// A request body that stalls for this long is abandoned.
    pub body_read_timeout_secs: u64,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    pub shutdown_grace_secs: u64,
    /// Origins allowed by CORS; `["*"]` allows any origin (reads carry no credentials).
    pub cors_allowed_origins: Vec<String>,
    /// Negotiate gzip/zstd response compression by `Accept-Encoding`.
    pub compression: bool,
    /// Threads that accept connections and serve requests (health, catalog, audit, limits,
    /// encoding hand-off); 0 = one per core. Queries run on `[query]`'s threads instead.
    pub threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            header_read_timeout_secs: 10,
            keep_alive_idle_secs: 75,
            max_connections: 4096,
            max_header_bytes: 65536,
            tls_cert: String::new(),
            tls_key: String::new(),
            body_read_timeout_secs: 60,
            shutdown_grace_secs: 10,
            cors_allowed_origins: vec!["*".to_string()],
            compression: true,
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Holds the catalog database, the Parquet warehouse and the audit log unless set elsewhere.
    pub data_dir: PathBuf,
    /// `object_store` URL of the Parquet warehouse; empty = `file://<data_dir>/warehouse`.
    pub warehouse_url: String,
    /// Path of the embedded SQLite catalog; empty = `<data_dir>/catalog.sqlite`.
    pub catalog_path: String,
    /// The catalog database: empty = the embedded SQLite file (`catalog_path`);
    /// `postgres://user:pass@host:port/db` = a PostgreSQL catalog shared by several gateways.
    pub catalog_url: String,
    /// Connections to a PostgreSQL catalog, at most.
    pub catalog_pool_size: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            warehouse_url: String::new(),
            catalog_path: String::new(),
            catalog_url: String::new(),
            catalog_pool_size: 16,
        }
    }
}

impl StorageConfig {
    /// The audit log's directory.
    pub fn audit_dir(&self, audit: &AuditConfig) -> PathBuf {
        if audit.dir.is_empty() {
            self.data_dir.join("audit")
        } else {
            PathBuf::from(&audit.dir)
        }
    }

    /// The SQLite catalog file.
    pub fn catalog_file(&self) -> PathBuf {
        if self.catalog_path.is_empty() {
            self.data_dir.join("catalog.sqlite")
        } else {
            PathBuf::from(&self.catalog_path)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Directory of declarative manifests registered at start; empty to skip.
    pub manifests: String,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            manifests: "catalog".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A full key (`dg_<id>_<secret>`) made an admin at start; empty = generate `admin.key`.
    pub admin_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,datagate_server=debug`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_string(),
        }
    }
}

/// The codec of the Parquet pages datagate writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCompression {
    /// LZ4 (raw blocks): the fastest to write and to read back.
    #[default]
    Lz4,
    /// zstd at level 1: the smallest files.
    Zstd,
    /// Snappy, for readers without LZ4 or zstd.
    Snappy,
    /// No compression.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Rows per record batch while decoding.
    pub batch_rows: usize,
    /// Maximum rows per Parquet row group.
    pub row_group_rows: usize,
    /// A Parquet file is closed and a new one started past this many bytes.
    pub target_file_bytes: u64,
    /// The codec of the Parquet pages written.
    pub compression: ParquetCompression,
    /// Versions kept per dataset (older ones are forgotten and their files deleted); 0 keeps all.
    pub retain_versions: u64,
    /// An append after which a version would end in more than this many small files (each
    /// under `small_file_bytes`, the upload's own included) rewrites them, in order, into one:
    /// a dataset appended to every hour stays a few files, not thousands. 0 never compacts.
    pub compact_after_files: usize,
    /// Files under this many bytes are small, for `compact_after_files`.
    pub small_file_bytes: u64,
    /// With a shared (PostgreSQL) catalog, files no version names are deleted once they are
    /// older than this, at start and then this often: longer than the longest upload, whose
    /// files another gateway may be writing. One gateway alone deletes them at start.
    pub orphan_grace_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_rows: 8192,
            row_group_rows: 262_144,
            target_file_bytes: 256 * 1024 * 1024,
            compression: ParquetCompression::default(),
            retain_versions: 0,
            compact_after_files: 16,
            small_file_bytes: 4 * 1024 * 1024,
            orphan_grace_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// An upload body larger than this (compressed or not) is refused with 413 while it streams.
    pub max_upload_bytes: u64,
    /// The largest `limit` a `rows` page may ask for.
    pub max_page_rows: u64,
    /// Rows a query answers at most; beyond them the answer says `truncated: true`.
    pub max_query_rows: u64,
    /// Memory one query may reserve for sorts, joins and aggregates; beyond it the query fails
    /// with 422 while others keep running.
    pub query_memory_bytes: u64,
    /// Time a `rows` page or a query may take (504 beyond); `timeout_ms` can only lower it.
    pub query_timeout_ms: u64,
    /// Time an export may take; 0 = no limit.
    pub export_timeout_secs: u64,
    /// Longest accepted SQL text (and `where` expression), in bytes.
    pub max_sql_bytes: usize,
    /// Deepest accepted nesting of a SQL expression or statement.
    pub max_expr_depth: usize,
    /// Deepest accepted nesting of logic (`NOT`, `AND`, `OR`, `CASE`) in one expression: the
    /// optimizer's boolean rewrites grow exponentially with it.
    pub max_logic_depth: usize,
    /// Expression nodes one statement (or `where`) may hold, function arguments included.
    pub max_expr_nodes: usize,
    /// Tables (dataset references) one statement may name, subqueries and CTEs included.
    pub max_statement_tables: usize,
    /// Common table expressions one statement may define.
    pub max_statement_ctes: usize,
    /// `SELECT` blocks one statement may hold (set operations' branches and subqueries
    /// included): planning grows with their square.
    pub max_statement_selects: usize,
    /// Largest value (bytes) a string function (`repeat`, `lpad`, `rpad`, `replace`,
    /// `concat`, ...) may build; a larger one is refused with 422 before it is allocated.
    pub max_value_bytes: u64,
    /// Largest batch of values (bytes) such a function may build at once; a larger one is
    /// refused with 422 before it is allocated.
    pub max_batch_bytes: u64,
    /// Row pairs a cross join or nested-loop join may compare (rows of one side times rows of
    /// the other, from the pinned versions' statistics); beyond it the plan is refused with
    /// 422 before it runs. Multiplied by the caller's tier `query_budget`.
    pub max_join_pairs: u64,
    /// Rows a full sort or window may take as input (estimated from the pinned versions'
    /// statistics); beyond it the plan is refused with 422. Multiplied by `query_budget`.
    pub max_sort_rows: u64,
    /// Iterations a recursive query (`WITH RECURSIVE`) may run; beyond them it fails with 422.
    /// Multiplied by `query_budget`.
    pub max_recursion_depth: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 10 * 1024 * 1024 * 1024,
            max_page_rows: 10_000,
            max_query_rows: 100_000,
            query_memory_bytes: 256 * 1024 * 1024,
            query_timeout_ms: 30_000,
            export_timeout_secs: 3_600,
            max_sql_bytes: 65_536,
            max_expr_depth: 64,
            max_logic_depth: 16,
            max_expr_nodes: 4_096,
            max_statement_tables: 32,
            max_statement_ctes: 32,
            max_statement_selects: 64,
            max_value_bytes: 1024 * 1024,
            max_batch_bytes: 64 * 1024 * 1024,
            max_join_pairs: 100_000_000,
            max_sort_rows: 20_000_000,
            max_recursion_depth: 1_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            catalog: CatalogConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            ingest: IngestConfig::default(),
            limits: LimitsConfig::default(),
            query: QueryConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            admission: AdmissionConfig::default(),
            audit: AuditConfig::default(),
            flight: FlightConfig::default(),
            portal: PortalConfig::default(),
            tiers: default_tiers(),
        }
    }
}

/// The query executor: the thread pools every plan is planned and executed on, apart from the
/// threads that serve connections, health checks, the catalog and the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Threads of the query pool; 0 = one per core.
    pub threads: usize,
    /// Share of those threads (0 to 1, at least one thread) that callers of tiers with
    /// `query_pool = "public"` (anonymous, standard) may use together. By default all of them,
    /// at `public_nice`: public queries use idle cores, and yield them under contention.
    pub public_share: f64,
    /// Nice value (0 to 19) of the public threads: when both pools are busy, the kernel gives
    /// the reserved threads and the HTTP threads the larger share of the cores.
    pub public_nice: i32,
    /// Decoded bytes of small dataset versions kept in memory so their pages are slices, not
    /// Parquet decodes; 0 turns the cache off.
    pub page_cache_bytes: u64,
    /// Versions with more rows than this are not cached: their pages seek in the files.
    pub page_cache_max_rows: u64,
    /// Bytes of dataset files' bloom filters kept in memory between queries, so a lookup by
    /// primary key reads a version's filters once; 0 turns the cache off.
    pub bloom_cache_bytes: u64,
    /// Rows of the units an Arrow export is decoded in, side by side on the query threads and
    /// still in storage order; 0 decodes it in one piece, on one thread, as every other
    /// format's export (their encoding, not the decoding, bounds their speed).
    pub export_unit_rows: u64,
    /// `datagate worker` URLs (`http://host:port`) that heavy queries fan out to; empty: every
    /// query runs in the gateway.
    pub workers: Vec<String>,
    /// Queries scanning more bytes than this (the Parquet sizes of the versions they read) run
    /// on the workers; smaller ones stay in the gateway.
    pub distribute_above_bytes: u64,
    /// The secret gateways and workers share: sent on every call to a worker, and a worker
    /// refuses any call without it. Required with `workers` and by `datagate worker`. Env
    /// `DATAGATE_WORKER_SECRET`.
    pub worker_secret: String,
    /// A worker that does not answer its health check: `skip` plans without it (on the others,
    /// or in the gateway when none is up); `local` runs every query in the gateway until all
    /// workers are back.
    pub on_worker_down: WorkerDown,
    /// How often the gateway checks its workers; a check may take this long, at least a second.
    pub worker_check_ms: u64,
    /// How batches travel between workers and gateway: `lz4` (default), `zstd` (smaller, more
    /// CPU) or `none` (fast private networks).
    pub worker_compression: WorkerCompression,
    /// Parquet bytes one task of a distributed scan reads: a plan's leaf stage gets about
    /// (bytes scanned / this) tasks, at most one per worker.
    pub worker_task_bytes: u64,
    /// PEM certificate and key a worker's listener serves TLS with (`https://` worker URLs);
    /// empty: plain gRPC.
    pub worker_tls_cert: String,
    pub worker_tls_key: String,
    /// PEM certificates (a CA) that gateways and workers trust for `https://` worker URLs;
    /// required for them (no other roots are trusted).
    pub worker_tls_ca: String,
}

/// The Arrow IPC compression of batches sent by workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorkerCompression {
    #[default]
    Lz4,
    Zstd,
    None,
}

impl QueryConfig {
    /// The worker secret, refused when missing or too short to resist guessing.
    pub fn require_worker_secret(&self) -> Result<&str, ConfigError> {
        if self.worker_secret.len() < 16 {
            return Err(ConfigError(
                "invalid configuration: key `query.worker_secret` (env DATAGATE_WORKER_SECRET) \
                 must be set, at least 16 characters, when gateways and workers talk"
                    .into(),
            ));
        }
        Ok(&self.worker_secret)
    }
}

/// What a gateway does with a query while some of its workers are down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorkerDown {
    /// Distribute over the workers that are up (in the gateway when none is).
    #[default]
    Skip,
    /// Run in the gateway until every worker is up again.
    Local,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            public_share: 1.0,
            public_nice: 10,
            page_cache_bytes: 128 * 1024 * 1024,
            page_cache_max_rows: 200_000,
            bloom_cache_bytes: 64 * 1024 * 1024,
            export_unit_rows: 65_536,
            workers: Vec::new(),
            distribute_above_bytes: 1 << 30,
            worker_secret: String::new(),
            on_worker_down: WorkerDown::Skip,
            worker_check_ms: 1000,
            worker_compression: WorkerCompression::Lz4,
            worker_task_bytes: 16 * 1024 * 1024,
            worker_tls_cert: String::new(),
            worker_tls_key: String::new(),
            worker_tls_ca: String::new(),
        }
    }
}

/// Which part of the query pool a tier's queries run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryPool {
    /// Every query thread.
    Reserved,
    /// The `query.public_share` of them, shared by all public callers.
    Public,
}

/// How callers are told apart and how limiter state is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Peers (addresses or CIDR ranges) trusted to say who the client is in
    /// `client_ip_header`; from anyone else the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// The header a trusted proxy puts the client address in (`X-Forwarded-For` style: the
    /// right-most address that is not itself a trusted proxy is the client).
    pub client_ip_header: String,
    /// Limiter entries of callers idle long enough to be back at a full burst are dropped this
    /// often, so memory follows the active callers, not every caller ever seen.
    pub prune_interval_secs: u64,
    /// Bytes served per caller today are written to the catalog this often (and at shutdown).
    pub usage_flush_secs: u64,
    /// With a shared (PostgreSQL) catalog, request rates hold for the cluster through it; when
    /// that state cannot be read: `open` serves on each gateway's own limiter (a caller may get
    /// up to N times its rate over N gateways), `closed` answers 503 until it is back.
    pub shared_failure: SharedFailure,
}

/// What a gateway does when the rate state it shares with others cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SharedFailure {
    /// Keep serving, limited by this gateway's own limiter.
    #[default]
    Open,
    /// Refuse with 503 and `Retry-After`.
    Closed,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            client_ip_header: "x-forwarded-for".to_string(),
            prune_interval_secs: 60,
            usage_flush_secs: 10,
            shared_failure: SharedFailure::Open,
        }
    }
}

impl RateLimitsConfig {
    /// The trusted proxies, parsed (a bare address is a one-address range).
    pub fn trusted_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError(format!(
                            "invalid configuration: key `rate_limits.trusted_proxies`: \
                             {s:?} is neither an IP address nor a CIDR range"
                        ))
                    })
            })
            .collect()
    }
}

/// Load shedding: how much work runs at once, whoever asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Queries (rows pages, exports, SQL) running at once over all callers; beyond it 503.
    pub max_in_flight_queries: u32,
    /// Uploads running at once over all callers; beyond it 503.
    pub max_in_flight_uploads: u32,
    /// The `Retry-After` of a 503 when the gateway is full.
    pub retry_after_secs: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_in_flight_queries: 64,
            max_in_flight_uploads: 8,
            retry_after_secs: 1,
        }
    }
}

/// The audit log (API.md §5 "Audit").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Directory of the log's segments, checkpoints and signing key; empty = `<data_dir>/audit`.
    pub dir: String,
    /// A segment is sealed (never written again) and the next started past this many bytes.
    pub segment_max_bytes: u64,
    /// A signed checkpoint is written after this many records...
    pub checkpoint_every_records: u64,
    /// ...or this many seconds, whichever comes first, and at shutdown.
    pub checkpoint_every_secs: u64,
    /// `object_store` URL where sealed segments, checkpoints and the public key are copied
    /// (e.g. `s3://bucket/audit/` or `file:///backup/audit/`); empty = no archive.
    pub archive_url: String,
    /// How often new sealed segments are copied to the archive.
    pub archive_every_secs: u64,
    /// Segments whose records are all older than this many days move to the archive (JSON,
    /// Parquet copy and marker) and leave the local directory; 0 = keep everything. Needs
    /// `archive_url`.
    pub retain_days: u64,
    /// This gateway's name in a cluster: every audit record carries it, and the archive keeps
    /// this gateway's segments and checkpoints under `<archive_url>/<node_id>/`. Each gateway
    /// keeps its own chain and signing key; empty for one gateway alone.
    pub node_id: String,
    /// A segment holding records is also sealed once it is this many seconds old, so the
    /// archive lags the log by at most this much (a lost gateway loses at most this much of
    /// its log's copy); 0 = sealed by size only.
    pub seal_every_secs: u64,
    /// Zeroes written this far ahead of the open segment's records, so a group commit's
    /// `fdatasync` writes only records (about half the time per sync on ext4); the zeroes are
    /// cut off when the segment is sealed or the gateway stops. 0 = the open segment grows by
    /// appends (for a log shipper that tails it; sealed segments are the same either way).
    pub preallocate_bytes: u64,
    /// Under load (the last batch had a few waiters), how long the writer lets a batch gather
    /// before its fsync, in microseconds (PostgreSQL's `commit_delay`): fewer, larger fsyncs,
    /// each waiter a little later. 0 = never.
    pub commit_delay_us: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            dir: String::new(),
            segment_max_bytes: 64 * 1024 * 1024,
            checkpoint_every_records: 10_000,
            checkpoint_every_secs: 60,
            archive_url: String::new(),
            archive_every_secs: 300,
            retain_days: 0,
            node_id: String::new(),
            seal_every_secs: 0,
            preallocate_bytes: 1024 * 1024,
            commit_delay_us: 200,
        }
    }
}

/// One fair-use tier: a request rate (GCRA), concurrent queries and bytes per day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierConfig {
    /// Requests allowed per `window_secs`, replenished evenly over the window.
    pub requests: u32,
    /// The window of `requests`, in seconds.
    pub window_secs: u64,
    /// Requests that may come at once after a quiet spell (at least 1).
    pub burst: u32,
    /// Queries (rows pages, exports, SQL) one caller may run at once; 0 = no cap.
    pub max_concurrent_queries: u32,
    /// Response bytes one caller may be sent per UTC day; 0 = no cap.
    pub daily_bytes: u64,
    /// The query threads this tier's queries run on: `public` (a share, with every other
    /// public caller) or `reserved` (all of them).
    pub query_pool: QueryPool,
    /// Multiplies the cost budgets of `[limits]` (`max_join_pairs`, `max_sort_rows`) for this
    /// tier's queries.
    pub query_budget: u64,
}

impl Default for TierConfig {
    fn default() -> Self {
        Self::standard()
    }
}

impl TierConfig {
    const fn new(
        requests: u32,
        burst: u32,
        queries: u32,
        daily_bytes: u64,
        query_pool: QueryPool,
        query_budget: u64,
    ) -> Self {
        Self {
            requests,
            window_secs: 60,
            burst,
            max_concurrent_queries: queries,
            daily_bytes,
            query_pool,
            query_budget,
        }
    }

    pub const fn anonymous() -> Self {
        Self::new(60, 20, 2, GIB, QueryPool::Public, 1)
    }
    pub fn standard() -> Self {
        Self::new(600, 60, 4, 10 * GIB, QueryPool::Public, 4)
    }
    pub fn premium() -> Self {
        Self::new(6_000, 300, 16, 100 * GIB, QueryPool::Reserved, 16)
    }
    pub fn internal() -> Self {
        Self::new(60_000, 2_000, 32, 0, QueryPool::Reserved, 64)
    }
}

const GIB: u64 = 1024 * 1024 * 1024;

/// The tier of callers without a key; it must exist.
pub const ANONYMOUS_TIER: &str = "anonymous";

fn default_tiers() -> BTreeMap<String, TierConfig> {
    BTreeMap::from([
        (ANONYMOUS_TIER.to_string(), TierConfig::anonymous()),
        ("standard".to_string(), TierConfig::standard()),
        ("premium".to_string(), TierConfig::premium()),
        ("internal".to_string(), TierConfig::internal()),
    ])
}

/// A configuration that cannot be used; its message is one line naming the file and key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Short environment variables of API.md §1 and the keys they set.
const SHORT_ENV: [(&str, &str); 7] = [
    ("DATAGATE_LISTEN", "server.listen"),
    ("DATAGATE_FLIGHT_LISTEN", "flight.listen"),
    ("DATAGATE_DATA_DIR", "storage.data_dir"),
    ("DATAGATE_CATALOG_URL", "storage.catalog_url"),
    ("DATAGATE_CATALOG_MANIFESTS", "catalog.manifests"),
    ("DATAGATE_ADMIN_KEY", "auth.admin_key"),
    ("DATAGATE_WORKER_SECRET", "query.worker_secret"),
];

impl Config {
    /// Loads the configuration: `path` if given (it must be readable), else
    /// [`DEFAULT_CONFIG_PATH`] when it exists, else the built-in defaults; then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = &file {
            std::fs::read_to_string(file).map_err(|e| {
                ConfigError(format!("cannot read config file {}: {e}", file.display()))
            })?;
            figment = figment.merge(Toml::file_exact(file));
        }
        // The environment is applied as one TOML-like dictionary so that the caller-supplied
        // variables (not the process's) are used in tests.
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut overrides: Vec<(String, String, String)> = Vec::new();
        for (name, value) in &env {
            if let Some((_, key)) = SHORT_ENV.iter().find(|(n, _)| n == name) {
                overrides.push((name.clone(), key.to_string(), value.clone()));
            } else if let Some(rest) = name.strip_prefix("DATAGATE_")
                && rest.contains("__")
            {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                overrides.push((name.clone(), key, value.clone()));
            }
        }
        for (_, key, value) in &overrides {
            let parsed: figment::value::Value = value
                .parse()
                .unwrap_or_else(|_| figment::value::Value::from(value.clone()));
            figment = figment.merge(Serialized::default(key, parsed));
        }
        let config = figment.extract::<Config>().map_err(|e| {
            let e = e.into_iter().next().expect("figment errors are non-empty");
            let key = e
                .path
                .iter()
                .filter(|p| p.as_str() != "default")
                .cloned()
                .collect::<Vec<_>>()
                .join(".");
            let source = describe_source(&e, file.as_deref(), &overrides, &key);
            if key.is_empty() {
                ConfigError(format!("invalid configuration in {source}: {}", e.kind))
            } else {
                ConfigError(format!(
                    "invalid configuration in {source}: key `{key}`: {}",
                    e.kind
                ))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: tiers that can admit something, proxies that parse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.audit.node_id.is_empty() {
            crate::names::validate_name("audit.node_id", &self.audit.node_id).map_err(|e| {
                ConfigError(format!("invalid configuration: key `audit.node_id`: {e}"))
            })?;
        }
        if !self.tiers.contains_key(ANONYMOUS_TIER) {
            return Err(ConfigError(format!(
                "invalid configuration: tier `tiers.{ANONYMOUS_TIER}` is missing; callers \
                 without a key need it"
            )));
        }
        for (name, t) in &self.tiers {
            for (key, value) in [
                ("requests", u64::from(t.requests)),
                ("window_secs", t.window_secs),
                ("burst", u64::from(t.burst)),
                ("query_budget", t.query_budget),
            ] {
                if value == 0 {
                    return Err(ConfigError(format!(
                        "invalid configuration: key `tiers.{name}.{key}` must be at least 1"
                    )));
                }
            }
        }
        if !(0..=19).contains(&self.query.public_nice) {
            return Err(ConfigError(
                "invalid configuration: key `query.public_nice` must be between 0 and 19".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.query.public_share) {
            return Err(ConfigError(
                "invalid configuration: key `query.public_share` must be between 0 and 1".into(),
            ));
        }
        if self.server.tls_cert.is_empty() != self.server.tls_key.is_empty() {
            return Err(ConfigError(
                "invalid configuration: keys `server.tls_cert` and `server.tls_key` go together"
                    .into(),
            ));
        }
        if self.server.max_header_bytes < 8192 {
            return Err(ConfigError(
                "invalid configuration: key `server.max_header_bytes` must be at least 8192".into(),
            ));
        }
        self.rate_limits.trusted_networks()?;
        for w in &self.query.workers {
            let ok = url::Url::parse(w)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError(format!(
                    "invalid configuration: key `query.workers`: `{w}` is not an http:// or \
                     https:// URL of a worker"
                )));
            }
        }
        if !self.query.workers.is_empty() {
            self.query.require_worker_secret()?;
        }
        if self.query.worker_tls_cert.is_empty() != self.query.worker_tls_key.is_empty() {
            return Err(ConfigError(
                "invalid configuration: keys `query.worker_tls_cert` and `query.worker_tls_key` \
                 go together"
                    .into(),
            ));
        }
        if self.query.worker_check_ms < 100 {
            return Err(ConfigError(
                "invalid configuration: key `query.worker_check_ms` must be at least 100".into(),
            ));
        }
        Ok(())
    }

    /// The tier called `name`; unknown names (a key whose tier was removed from the
    /// configuration) get the anonymous tier's limits, the strictest safe choice.
    pub fn tier(&self, name: &str) -> (&str, &TierConfig) {
        match self.tiers.get_key_value(name) {
            Some((n, t)) => (n.as_str(), t),
            None => {
                static FALLBACK: TierConfig = TierConfig::anonymous();
                let t = self.tiers.get(ANONYMOUS_TIER).unwrap_or(&FALLBACK);
                (ANONYMOUS_TIER, t)
            }
        }
    }

    /// The warehouse URL, defaulting to `file://<data_dir>/warehouse` (made absolute).
    pub fn warehouse_url(&self) -> Result<url::Url, ConfigError> {
        if self.storage.warehouse_url.is_empty() {
            let dir = absolute(&self.storage.data_dir.join("warehouse"));
            url::Url::from_directory_path(&dir).map_err(|_| {
                ConfigError(format!(
                    "storage.data_dir {} cannot be turned into a file URL",
                    self.storage.data_dir.display()
                ))
            })
        } else {
            let mut u = url::Url::parse(&self.storage.warehouse_url).map_err(|e| {
                ConfigError(format!(
                    "invalid configuration: key `storage.warehouse_url`: {e}"
                ))
            })?;
            if !u.path().ends_with('/') {
                let p = format!("{}/", u.path());
                u.set_path(&p);
            }
            Ok(u)
        }
    }
}

/// Makes a path absolute against the working directory without touching the file system.
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn describe_source(
    e: &figment::Error,
    file: Option<&Path>,
    overrides: &[(String, String, String)],
    key: &str,
) -> String {
    if let Some((var, _, _)) = overrides.iter().rev().find(|(_, k, _)| k == key) {
        return format!("environment variable {var}");
    }
    match (&e.metadata, file) {
        (Some(md), Some(f)) if md.name.contains("TOML") => f.display().to_string(),
        (_, Some(f)) => f.display().to_string(),
        (_, None) => "the built-in defaults".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    #[test]
    fn shipped_file_documents_exactly_the_defaults() {
        // The package directory `cargo test` runs in (not only where this was compiled: a
        // binary reused from another checkout through a shared target directory keeps its path).
        let shipped = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../config/datagate.toml");
        let cfg = Config::load_with_env(Some(&shipped), []).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn env_overrides_win() {
        let f = write("[server]\nlisten = \"127.0.0.1:9000\"\n");
        let cfg = Config::load_with_env(
            Some(f.path()),
            [
                ("DATAGATE_DATA_DIR".to_string(), "/tmp/x".to_string()),
                ("DATAGATE_LOG__FORMAT".to_string(), "json".to_string()),
                (
                    "DATAGATE_INGEST__BATCH_ROWS".to_string(),
                    "1024".to_string(),
                ),
                ("DATAGATE_UNRELATED".to_string(), "ignored".to_string()),
            ],
        )
        .unwrap();
        assert_eq!(cfg.server.listen.port(), 9000);
        assert_eq!(cfg.storage.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(cfg.ingest.batch_rows, 1024);
        let cfg = Config::load_with_env(
            Some(f.path()),
            [("DATAGATE_LISTEN".to_string(), "0.0.0.0:7000".to_string())],
        )
        .unwrap();
        assert_eq!(cfg.server.listen.port(), 7000);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let f = write("[server]\nlisen = \"127.0.0.1:9000\"\n");
        let err = Config::load_with_env(Some(f.path()), []).unwrap_err().0;
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("server.lisen"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn wrong_type_names_key() {
        let f = write("[ingest]\nbatch_rows = \"many\"\n");
        let err = Config::load_with_env(Some(f.path()), []).unwrap_err().0;
        assert!(err.contains("ingest.batch_rows"), "{err}");
        let err = Config::load_with_env(
            None,
            [("DATAGATE_SERVER__LISTEN".to_string(), "nowhere".to_string())],
        )
        .unwrap_err()
        .0;
        assert!(err.contains("DATAGATE_SERVER__LISTEN"), "{err}");
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/datagate.toml")), [])
            .unwrap_err()
            .0;
        assert!(err.contains("/nonexistent/datagate.toml"), "{err}");
    }

    #[test]
    fn tiers_merge_and_validate() {
        let cfg = Config::load_with_env(
            None,
            [
                (
                    "DATAGATE_TIERS__ANONYMOUS__BURST".to_string(),
                    "3".to_string(),
                ),
                (
                    "DATAGATE_TIERS__GOLD__REQUESTS".to_string(),
                    "5".to_string(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(cfg.tiers["anonymous"].burst, 3);
        assert_eq!(
            cfg.tiers["anonymous"].requests, 60,
            "other keys keep their defaults"
        );
        assert_eq!(cfg.tiers["gold"].requests, 5);
        assert_eq!(cfg.tier("gold").0, "gold");
        assert_eq!(
            cfg.tier("no-such-tier"),
            ("anonymous", &cfg.tiers["anonymous"])
        );

        let f = write("[tiers.standard]\nburst = 0\n");
        let err = Config::load_with_env(Some(f.path()), []).unwrap_err().0;
        assert!(err.contains("tiers.standard.burst"), "{err}");
        let f = write("[rate_limits]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy\"]\n");
        let err = Config::load_with_env(Some(f.path()), []).unwrap_err().0;
        assert!(
            err.contains("rate_limits.trusted_proxies") && err.contains("proxy"),
            "{err}"
        );
        let mut cfg = Config::default();
        cfg.tiers.remove("anonymous");
        assert!(cfg.validate().unwrap_err().0.contains("tiers.anonymous"));
        assert_eq!(cfg.tier("standard").0, "standard");
        assert_eq!(cfg.tier("x").1, &TierConfig::anonymous());
    }
}
