//! The `datagate` command: `serve` the gateway, `load` a file into a dataset offline, `gen`
//! synthetic data. Wiring only: the work is done by the library crates.

mod datagen;
mod logging;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use datagate_catalog::{CatalogStore, KeyToken, NewApiKey, Role, VersionMode};
use datagate_core::Config;
use datagate_ingest::{Publisher, Source, SourceFormat, Warehouse};
use std::path::PathBuf;
use std::sync::Arc;

/// jemalloc, not the system allocator: under mixed traffic glibc's per-thread arenas kept
/// freed memory and the gateway's RSS climbed ~100 MiB a minute while the live heap stayed a
/// few MiB (heaptrack); with jemalloc (background purging threads) RSS stays flat
/// (`benches/soak.sh`, `benches/RESULTS.md` "Soak").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them): one arena per physical core (`percpu_arena:phycpu`, threads using the
/// arena of the core they run on) instead of four per CPU. A stream's batches are made on one
/// thread and freed on another, and with eight arenas on two cores each kept its own freed
/// pages: a 10M-row Flight SQL read peaked at 232–266 MiB, with one arena 188–204 MiB; paging
/// throughput was no lower, 10M-row streams ~8–14% slower on two cores (`benches/RESULTS.md`,
/// "The allocator's arenas"). Linux only: jemalloc finds the current core with `sched_getcpu`.
#[cfg(target_os = "linux")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(c"percpu_arena:phycpu".as_ptr());

/// A C string pointer, as jemalloc reads `malloc_conf`.
#[cfg(target_os = "linux")]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points at a string literal, never written.
#[cfg(target_os = "linux")]
unsafe impl Sync for MallocConf {}

#[derive(Parser)]
#[command(
    name = "datagate",
    version,
    about = "Open-data gateway for public data resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a command finds its configuration and its data directory.
#[derive(clap::Args)]
struct DataDir {
    /// Configuration file (default: config/datagate.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration's `storage.data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    /// The configuration, with `--data-dir`, when given, overriding `storage.data_dir`.
    fn load(self) -> Result<Config> {
        let mut cfg = load_config(self.config.as_deref())?;
        if let Some(d) = self.data_dir {
            cfg.storage.data_dir = d;
        }
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway.
    Serve {
        /// Configuration file (default: config/datagate.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a distributed query worker: it executes the plan fragments gateways send (config
    /// `query.workers` on the gateways), reading the warehouse of the same configuration. It
    /// answers only callers holding `query.worker_secret` (env DATAGATE_WORKER_SECRET).
    Worker {
        /// Address of the worker's gRPC listener, e.g. 127.0.0.1:50061.
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        at: DataDir,
    },
    /// Publish a local file (CSV, NDJSON, Parquet or Arrow, optionally .gz) as a new version
    /// of a registered dataset, without HTTP.
    Load {
        /// The dataset, as department/name.
        dataset: String,
        /// The file to load.
        file: PathBuf,
        /// Append to the current version or replace it.
        #[arg(long, default_value = "append")]
        mode: String,
        /// CSV field delimiter.
        #[arg(long, default_value = ",")]
        delimiter: char,
        /// Encoding of a CSV or NDJSON file that is not UTF-8 (e.g. gb18030, gbk, big5).
        #[arg(long)]
        charset: Option<String>,
        #[command(flatten)]
        at: DataDir,
    },
    /// Run one read-only SQL statement in-process over a data directory, with the gateway's
    /// planner, limits and encoders, as an admin; the result goes to standard output.
    Query {
        /// The statement (tables are department.dataset).
        sql: String,
        /// json, ndjson, csv, arrow or parquet.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Run the statement this many times and report the median and fastest time on
        /// standard error (the result is written once); once, without a report, when not given.
        #[arg(long)]
        repeat: Option<u32>,
        #[command(flatten)]
        at: DataDir,
    },
    /// Work with the audit log of a data directory (the server need not run).
    Audit {
        #[command(subcommand)]
        action: AuditAction,
        #[command(flatten)]
        at: DataDir,
    },
    /// Manage API keys in a data directory's catalog (the server need not run).
    Key {
        #[command(subcommand)]
        action: KeyAction,
        #[command(flatten)]
        at: DataDir,
    },
    /// Apply the catalog's pending schema changes (SQLite or PostgreSQL, by
    /// `storage.catalog_url`) and exit. `serve` applies them too; this lets an operator
    /// upgrade the shared catalog once before rolling out new gateways.
    Migrate {
        #[command(flatten)]
        at: DataDir,
    },
    /// Write deterministic synthetic rows of one dataset shape.
    Gen {
        /// The dataset shape.
        #[arg(value_enum)]
        kind: datagen::Kind,
        /// Number of rows.
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        #[arg(long, value_enum, default_value = "csv")]
        format: datagen::GenFormat,
        /// Output file; `-` for standard output.
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// Seed: the same seed gives the same bytes.
        #[arg(long, default_value_t = 20240101)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Recompute the hash chain over every segment and check every signed checkpoint; works
    /// offline on a copy. Prints the verdict as JSON; exits 1 when the log is not intact.
    Verify {
        /// A checkpoint saved earlier (the JSON of GET /api/v1/audit/checkpoint) that the log
        /// must still extend.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The Ed25519 public key (hex) to check signatures with; default: the key in the
        /// audit directory.
        #[arg(long)]
        public_key: Option<String>,
        /// An audit directory to verify (e.g. a fetched archive) instead of the data
        /// directory's; give it more than once to verify a log spread over several (the local
        /// directory and the archive its old segments moved to).
        #[arg(long)]
        dir: Vec<PathBuf>,
        /// Verify an archive where it is (e.g. `s3://bucket/audit/`, with the AWS_*
        /// environment), fetched into a temporary directory first. A cluster's archive holds
        /// one directory per gateway (`audit.node_id`): each gateway's chain is verified with
        /// its own key and reported on its own.
        #[arg(long, conflicts_with = "dir")]
        archive: Option<String>,
    },
    /// Write a synthetic audit log (realistic mix of principals, datasets, actions and sizes,
    /// timestamps spread from --from to --to) into an empty directory, for benchmarks.
    Gen {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        #[arg(long, default_value = "2025-01-01T00:00:00Z")]
        from: String,
        #[arg(long, default_value = "2026-01-01T00:00:00Z")]
        to: String,
        #[arg(long, default_value_t = 64 * 1024 * 1024)]
        segment_bytes: u64,
        #[arg(long, default_value_t = 5000)]
        principals: u32,
        #[arg(long, default_value_t = 300)]
        datasets: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Durable appends per second through the log's writer at a number of concurrent writers
    /// (each append returns once fdatasync'ed), into a fresh directory; for benchmarks.
    #[command(hide = true)]
    AppendRate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 256)]
        writers: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Write the Parquet copy of every sealed segment that lacks one (the gateway does this in
    /// the background; this is for an offline copy, or after changing the audit directory).
    Index {
        /// The audit directory; default: the data directory's.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create a key and print it (the only time its secret is shown).
    Create {
        /// A name saying whose key it is.
        #[arg(long)]
        name: String,
        /// admin, publisher, consumer or auditor.
        #[arg(long)]
        role: String,
        /// The department of a publisher key.
        #[arg(long)]
        department: Option<String>,
        /// The fair-use tier (a `tiers.<name>` of the configuration); default `internal` for
        /// admins and publishers, `standard` for others.
        #[arg(long)]
        tier: Option<String>,
        /// Expiry, RFC 3339 (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id; effective on its next request.
    Revoke { id: String },
    /// Move a key to another fair-use tier; effective on its next request.
    SetTier { id: String, tier: String },
}

fn main() {
    let cli = Cli::parse();
    // A decoder's panic over a corrupt upload is answered as a refusal, not printed as a crash.
    datagate_core::panics::install_quiet_hook();
    let result = match cli.command {
        Command::Serve { config } => load_config(config.as_deref()).and_then(run_serve),
        Command::Worker { listen, at } => at.load().and_then(|cfg| run_worker(cfg, listen)),
        Command::Load {
            dataset,
            file,
            mode,
            delimiter,
            charset,
            at,
        } => at
            .load()
            .and_then(|cfg| run_load(cfg, &dataset, &file, &mode, delimiter, charset.as_deref())),
        Command::Query {
            sql,
            format,
            repeat,
            at,
        } => at
            .load()
            .and_then(|cfg| run_query(cfg, &sql, &format, repeat)),
        Command::Key { action, at } => at.load().and_then(|cfg| run_key(cfg, action)),
        Command::Audit { action, at } => at.load().and_then(|cfg| run_audit(cfg, action)),
        Command::Migrate { at } => at.load().and_then(run_migrate),
        Command::Gen {
            kind,
            rows,
            format,
            out,
            seed,
        } => run_gen(kind, rows, format, &out, seed),
    };
    if let Err(e) = result {
        eprintln!("datagate: {e:#}");
        std::process::exit(1);
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    Config::load(path).map_err(|e| {
        eprintln!("datagate: {e}");
        std::process::exit(2)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    runtime_with(0)
}

/// The async runtime with `threads` workers (0 = one per core).
fn runtime_with(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder
        .enable_all()
        // The serving threads may be kept one per core (`keep_workers_apart`): the threads the
        // runtime starts later (its blocking pool) must not inherit a worker's one core.
        .on_thread_start(|| {
            if let Err(e) = datagate_core::threads::run_anywhere() {
                tracing::warn!(error = %e, "a runtime thread could not leave its starter's core");
            }
        })
        // Query planning recurses over the plan; room to spare keeps deep (but accepted)
        // queries far from the guard page. Only touched pages are committed.
        .thread_stack_size(16 * 1024 * 1024)
        .build()
        .context("starting the async runtime")
}

/// The catalog and warehouse of a data directory.
struct Stores {
    catalog: Arc<dyn CatalogStore>,
    warehouse: Warehouse,
}

/// The stores of the data directory the gateway serves, created on its first start.
async fn create_stores(cfg: &Config) -> Result<Stores> {
    create_data_dir(cfg)?;
    open_stores(cfg).await
}

/// The stores of a data directory for an offline command. One that does not exist yet is
/// created (keys may be made before the first start), and said so on standard error: under a
/// mistyped `--data-dir`, a key would otherwise go into a new, empty catalog without a word.
async fn open_stores_offline(cfg: &Config) -> Result<Stores> {
    if !cfg.storage.data_dir.exists() {
        create_data_dir(cfg)?;
        eprintln!(
            "datagate: created a new data directory {} (no gateway has used it yet; check --data-dir or storage.data_dir if you meant an existing one)",
            cfg.storage.data_dir.display()
        );
    }
    open_stores(cfg).await
}

fn create_data_dir(cfg: &Config) -> Result<()> {
    std::fs::create_dir_all(&cfg.storage.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            cfg.storage.data_dir.display()
        )
    })
}

async fn open_stores(cfg: &Config) -> Result<Stores> {
    let catalog = open_catalog(cfg).await?;
    let url = cfg.warehouse_url()?;
    let warehouse =
        Warehouse::open(&url).with_context(|| format!("cannot open warehouse {url}"))?;
    Ok(Stores { catalog, warehouse })
}

/// The catalog `storage.catalog_url` names (the embedded SQLite file when empty), migrated.
async fn open_catalog(cfg: &Config) -> Result<Arc<dyn CatalogStore>> {
    let catalog_file = cfg.storage.catalog_file();
    let url = cfg.storage.catalog_url.trim();
    datagate_catalog::open(url, &catalog_file, cfg.storage.catalog_pool_size)
        .await
        .with_context(|| {
            if url.is_empty() {
                format!("cannot open catalog {}", catalog_file.display())
            } else {
                // The URL without its password.
                format!(
                    "cannot open catalog postgres://{}",
                    url.rsplit('@').next().unwrap_or_default()
                )
            }
        })
}

fn publisher(cfg: &Config, stores: &Stores) -> Publisher {
    Publisher::new(
        stores.catalog.clone(),
        stores.warehouse.clone(),
        cfg.ingest.clone(),
        cfg.limits.max_upload_bytes,
        cfg.storage.data_dir.join("tmp"),
    )
}

fn run_migrate(cfg: Config) -> Result<()> {
    runtime()?.block_on(async move {
        let catalog = open_catalog(&cfg).await?;
        catalog.ping().await?;
        let backend = if cfg.storage.catalog_url.trim().is_empty() {
            "SQLite"
        } else {
            "PostgreSQL"
        };
        println!(
            "catalog schema is at version {} ({backend})",
            datagate_catalog::migrations::latest()
        );
        Ok(())
    })
}

fn run_serve(cfg: Config) -> Result<()> {
    if !cfg.storage.catalog_url.trim().is_empty() && cfg.audit.node_id.is_empty() {
        bail!(
            "invalid configuration: key `audit.node_id` must name this gateway when the catalog is shared (`storage.catalog_url`): each gateway's audit log and counters are kept under its name"
        );
    }
    logging::init(&cfg);
    use metrics_exporter_prometheus::Matcher;
    // The audit log's waits are fractions of a millisecond when all is well.
    const OWN_BUCKETS: [(&str, &[f64]); 3] = [
        (
            "datagate_audit_fsync_seconds",
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
            ],
        ),
        (
            "datagate_audit_wait_seconds",
            &[
                0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
            ],
        ),
        (
            "datagate_audit_batch_records",
            &[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
            ],
        ),
    ];
    let metrics = OWN_BUCKETS.iter().fold(
        metrics_exporter_prometheus::PrometheusBuilder::new().set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
        |builder, (name, buckets)| {
            builder.and_then(|b| b.set_buckets_for_metric(Matcher::Full((*name).into()), buckets))
        },
    );
    let metrics = metrics
        .and_then(|b| b.install_recorder())
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    let rt = runtime_with(cfg.server.threads)?;
    rt.block_on(async move {
        match datagate_core::threads::keep_workers_apart(&tokio::runtime::Handle::current()).await
        {
            Ok(pinned) => tracing::debug!(pinned, "serving threads, one per core"),
            Err(e) => tracing::warn!(error = %e, "could not keep the serving threads on cores of their own"),
        }
        let stores = create_stores(&cfg).await?;
        bootstrap_admin_key(&cfg, stores.catalog.as_ref()).await?;
        let shared = !cfg.storage.catalog_url.trim().is_empty();
        let grace = std::time::Duration::from_secs(if shared { cfg.ingest.orphan_grace_secs } else { 0 });
        let swept = stores.warehouse.sweep_unreferenced(stores.catalog.as_ref(), grace).await?;
        if swept > 0 {
            tracing::info!(files = swept, "removed files of unfinished uploads");
        }
        if shared {
            // Gateways sharing the store keep sweeping: a replica killed mid-upload may never
            // start again to sweep what it left.
            let (warehouse, catalog) = (stores.warehouse.clone(), stores.catalog.clone());
            let every = grace.max(std::time::Duration::from_secs(60));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match warehouse.sweep_unreferenced(catalog.as_ref(), grace).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(files = n, "removed files of unfinished uploads"),
                        Err(e) => tracing::warn!(error = %e, "warehouse sweep failed; retrying later"),
                    }
                }
            });
        }
        let publisher = publisher(&cfg, &stores);
        let spooled = publisher.sweep_spool();
        if spooled > 0 {
            tracing::info!(files = spooled, "removed spool files of unfinished uploads");
        }
        if !cfg.catalog.manifests.is_empty() {
            let dir = PathBuf::from(&cfg.catalog.manifests);
            if dir.is_dir() {
                let report = datagate_ingest::manifests::sync(&dir, &stores.catalog, &publisher)
                    .await
                    .context("registering the catalog manifests")?;
                tracing::info!(manifests = %dir.display(), ?report, "catalog manifests registered");
            } else {
                tracing::warn!(manifests = %dir.display(), "catalog.manifests is not a directory; nothing registered");
            }
        }
        let engine = query_engine(&cfg, &stores)
            .await?
            .with_page_cache(datagate_query::pages::PageCacheLimits {
            bytes: cfg.query.page_cache_bytes,
            max_rows: cfg.query.page_cache_max_rows,
            ..Default::default()
        })
        .with_bloom_cache(usize::try_from(cfg.query.bloom_cache_bytes).unwrap_or(usize::MAX));
        let audit_dir = cfg.storage.audit_dir(&cfg.audit);
        let (audit, recovery) = datagate_audit::AuditLog::open(datagate_audit::LogOptions {
            dir: audit_dir.clone(),
            segment_max_bytes: cfg.audit.segment_max_bytes.max(4096),
            checkpoint_every_records: cfg.audit.checkpoint_every_records.max(1),
            checkpoint_every: std::time::Duration::from_secs(cfg.audit.checkpoint_every_secs.max(1)),
            max_batch: 4096,
            node_id: (!cfg.audit.node_id.is_empty()).then(|| cfg.audit.node_id.clone()),
            seal_every: (cfg.audit.seal_every_secs > 0)
                .then(|| std::time::Duration::from_secs(cfg.audit.seal_every_secs)),
            seal_on_close: !cfg.audit.archive_url.is_empty(),
            preallocate_bytes: cfg.audit.preallocate_bytes,
            commit_delay: std::time::Duration::from_micros(cfg.audit.commit_delay_us),
            ..datagate_audit::LogOptions::new(&audit_dir)
        })
        .with_context(|| format!("cannot open the audit log in {}", audit_dir.display()))?;
        tracing::info!(dir = %audit_dir.display(), head_seq = recovery.head_seq, cut_bytes = recovery.cut_bytes, "audit log open");
        if stores.catalog.shared_usage().is_some() {
            // Each gateway counts its datasets' reads from its own log; publishing them and
            // reading the others' makes every gateway answer the cluster's counters.
            let (catalog, log, node) = (stores.catalog.clone(), audit.clone(), cfg.audit.node_id.clone());
            let every = std::time::Duration::from_secs(cfg.rate_limits.usage_flush_secs.max(1));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(shared) = catalog.shared_usage() else { break };
                    let synced = async {
                        shared.publish_usage(&node, log.usage().own_rows()).await?;
                        log.usage().set_elsewhere(shared.usage_elsewhere(&node).await?);
                        Ok::<_, datagate_catalog::CatalogError>(())
                    };
                    if let Err(e) = synced.await {
                        tracing::warn!(error = %e, "could not share the datasets' usage counters; retrying");
                    }
                }
            });
        }
        if cfg.audit.retain_days > 0 && cfg.audit.archive_url.is_empty() {
            bail!(
                "invalid configuration: key `audit.retain_days` moves old segments to the archive; set `audit.archive_url` too"
            );
        }
        let mut final_archive = None;
        if !cfg.audit.archive_url.is_empty() {
            let retain_days = cfg.audit.retain_days;
            let mut url = url::Url::parse(&cfg.audit.archive_url)
                .context("invalid configuration: key `audit.archive_url`")?;
            // In a cluster each gateway archives its own chain under its name.
            if !cfg.audit.node_id.is_empty() {
                if !url.path().ends_with('/') {
                    let p = format!("{}/", url.path());
                    url.set_path(&p);
                }
                url = url
                    .join(&format!("{}/", cfg.audit.node_id))
                    .context("invalid configuration: key `audit.node_id`")?;
            }
            let archive = datagate_audit::archive::Archive::open(&url)
                .with_context(|| format!("cannot open the audit archive {url}"))?;
            final_archive = Some(archive.clone());
            if !cfg.audit.node_id.is_empty() {
                // The other gateways' archived records join this one's in audit.events.
                let root = url::Url::parse(&cfg.audit.archive_url)
                    .context("invalid configuration: key `audit.archive_url`")?;
                let peers = std::sync::Arc::new(
                    datagate_audit::peers::PeerLogs::new(&root, &cfg.audit.node_id)
                        .with_context(|| format!("cannot open the audit archive {root}"))?,
                );
                let (base, store) = peers.store();
                engine.register_store(&base, store);
                audit.events_table().set_peers(peers.clone());
                let every = cfg.audit.archive_every_secs.max(1);
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(every));
                    loop {
                        tick.tick().await;
                        if let Err(e) = peers.refresh().await {
                            tracing::warn!(error = %e, "could not read the other gateways' audit archives; retrying");
                        }
                    }
                });
            }
            let (log, every) = (audit.clone(), cfg.audit.archive_every_secs.max(1));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(every));
                loop {
                    tick.tick().await;
                    match archive.sync(log.dir(), log.public_key()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(segments = n, "audit segments archived"),
                        Err(e) => tracing::warn!(error = %e, "audit archive failed; retrying later"),
                    }
                    if retain_days > 0 {
                        let moved = datagate_audit::retention::apply(
                            log.columnar(),
                            &archive,
                            log.public_key(),
                            retain_days,
                            chrono::Utc::now(),
                        )
                        .await;
                        match moved {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(segments = n, "audit segments past retention moved to the archive"),
                            Err(e) => tracing::warn!(error = %e, "audit retention failed; retrying later"),
                        }
                    }
                }
            });
        }
        let refusals = Arc::new(datagate_access::trail::RefusalCounter::default());
        datagate_access::trail::spawn_refusal_flusher(refusals.clone(), audit.clone());
        let config = Arc::new(cfg.clone());
        let fair_use = Arc::new(
            datagate_access::FairUse::new(config.clone(), stores.catalog.as_ref())
                .await
                .context("loading today's byte counters")?
                .with_shared_rates(stores.catalog.clone()),
        );
        fair_use.spawn_maintenance(stores.catalog.clone());
        let state = datagate_server::AppState::new(datagate_server::State {
            config,
            catalog: stores.catalog.clone(),
            publisher,
            engine: Arc::new(engine),
            metrics,
            fair_use: fair_use.clone(),
            client_ip: Arc::new(datagate_server::fair_use::client_ip::ClientIp::new(
                cfg.rate_limits.trusted_networks().unwrap_or_default(),
                &cfg.rate_limits.client_ip_header,
            )),
            audit: audit.clone(),
            refusals: refusals.clone(),
            audit_pending: Default::default(),
            // A quarter of what decoded versions may hold: bodies of their popular pages.
            page_bodies: datagate_server::routes::page_bodies::PageBodies::new(
                cfg.query.page_cache_bytes / 4,
            ),
        });
        let listener = tokio::net::TcpListener::bind(cfg.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
        tracing::info!(address = %listener.local_addr()?, data_dir = %cfg.storage.data_dir.display(), "datagate listening");
        let executor = state.engine.executor().clone();
        let pending = state.audit_pending.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let flight = start_flight(&cfg, &state, stop_rx).await?;
        let stop = async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        };
        datagate_server::serve(listener, state, stop).await?;
        if let Some(flight) = flight {
            let grace = std::time::Duration::from_secs(cfg.server.shutdown_grace_secs.max(1));
            match tokio::time::timeout(grace, flight).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the Flight SQL listener failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the Flight SQL listener panicked"),
                Err(_) => tracing::warn!("Flight SQL streams still open after the grace period"),
            }
        }
        // Queries still running after the grace period are dropped where they stand; their
        // `end` records say they were cancelled.
        executor.shutdown();
        pending.wait_idle(std::time::Duration::from_secs(2)).await;
        fair_use.save_usage(stores.catalog.as_ref()).await;
        refusals.flush_all(&audit);
        // Closing waits for the converter to finish the segment in hand: off the runtime.
        let closing = audit.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || closing.close()).await {
            tracing::warn!(error = %e, "closing the audit log panicked");
        }
        // The log sealed its last segment on closing: the archive gets all of it.
        if let Some(archive) = final_archive {
            match archive.sync(audit.dir(), audit.public_key()).await {
                Ok(n) => tracing::info!(segments = n, "audit log archived at shutdown"),
                Err(e) => tracing::warn!(error = %e, "the final audit archive copy failed"),
            }
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Starts the Flight SQL listener when `flight.listen` is set (API.md §1), on the same
/// engine, fair use and audit log as the HTTP server; it stops when `stop` turns true.
async fn start_flight(
    cfg: &Config,
    state: &datagate_server::AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<Result<(), datagate_flight::TransportError>>>> {
    let listen = cfg.flight.listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (flight.listen)"))?;
    let tls = match (cfg.flight.tls_cert.as_str(), cfg.flight.tls_key.as_str()) {
        ("", "") => None,
        (cert, key) if !cert.is_empty() && !key.is_empty() => Some((
            std::fs::read(cert).with_context(|| format!("cannot read flight.tls_cert {cert}"))?,
            std::fs::read(key).with_context(|| format!("cannot read flight.tls_key {key}"))?,
        )),
        _ => bail!("invalid configuration: flight.tls_cert and flight.tls_key go together"),
    };
    let gateway = std::sync::Arc::new(
        datagate_flight::FlightGateway::new(
            state.config.clone(),
            state.catalog.clone(),
            state.engine.clone(),
            state.fair_use.clone(),
            state.audit.clone(),
            state.refusals.clone(),
            state.audit_pending.clone(),
        )
        .with_ticket_key(flight_ticket_key(state.catalog.as_ref()).await?),
    );
    tracing::info!(address = %listener.local_addr()?, tls = tls.is_some(), "Flight SQL listening");
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    Ok(Some(tokio::spawn(datagate_flight::serve(
        listener, gateway, tls, shutdown,
    ))))
}

/// API.md §1: `DATAGATE_ADMIN_KEY` (config `auth.admin_key`) is made an admin key; without it,
/// an empty catalog gets a generated admin key written to `<data_dir>/admin.key` (mode 0600).
async fn bootstrap_admin_key(cfg: &Config, catalog: &dyn CatalogStore) -> Result<()> {
    let admin = |token: &KeyToken, name: &str| NewApiKey {
        id: token.id.clone(),
        name: name.to_string(),
        role: Role::Admin,
        department: None,
        tier: "internal".to_string(),
        secret_hash: token.secret_hash(),
        created_by: "bootstrap".to_string(),
        expires_at: None,
    };
    if !cfg.auth.admin_key.is_empty() {
        let token = KeyToken::parse(&cfg.auth.admin_key)
            .map_err(|e| anyhow::anyhow!("auth.admin_key (DATAGATE_ADMIN_KEY): {e}"))?;
        match catalog.get_key(&token.id).await? {
            None => {
                catalog
                    .create_key(admin(&token, "admin (DATAGATE_ADMIN_KEY)"))
                    .await?;
                tracing::info!(key_id = %token.id, "admin key from DATAGATE_ADMIN_KEY registered");
            }
            Some(k)
                if k.role == Role::Admin
                    && token.matches(&k.secret_hash)
                    && k.is_active(chrono::Utc::now()) => {}
            Some(_) => bail!(
                "auth.admin_key (DATAGATE_ADMIN_KEY): key id {} already exists with another secret or role, or is revoked",
                token.id
            ),
        }
        return Ok(());
    }
    if !catalog.list_keys().await?.is_empty() {
        return Ok(());
    }
    let token = KeyToken::generate();
    let path = cfg.storage.data_dir.join("admin.key");
    write_secret_file(&path, &format!("{}\n", token.expose()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    catalog
        .create_key(admin(&token, "admin (generated)"))
        .await?;
    tracing::warn!(key_id = %token.id, path = %path.display(), "no admin key was configured: generated one and wrote it to this file (mode 0600)");
    Ok(())
}

/// The key of `hash` masks: `<data_dir>/mask.key` (hex, mode 0600), created on first use. It
/// must outlive restarts, or hashed values would change under the consumers joining on them.
/// The key of hash masking: this data directory's (`mask.key`, made on first start) — or, on a
/// shared catalog, the cluster's, so a masked value is the same whichever gateway answers (the
/// first gateway's key wins; a gateway joining later adopts it).
async fn mask_key(cfg: &Config, catalog: &dyn CatalogStore) -> Result<datagate_query::MaskKey> {
    let local = local_mask_key(cfg)?;
    Ok(datagate_query::MaskKey::new(
        agreed_key(catalog, "mask_key", local).await?,
    ))
}

/// `local` for one gateway; on a shared catalog, the cluster's key `name` (the first
/// gateway's `local` wins, the others adopt it).
async fn agreed_key(catalog: &dyn CatalogStore, name: &str, local: [u8; 32]) -> Result<[u8; 32]> {
    let Some(shared) = catalog.shared_secrets() else {
        return Ok(local);
    };
    let agreed = shared
        .agree_secret(name, &hex::encode(local))
        .await
        .with_context(|| format!("agreeing on the cluster's {name}"))?;
    hex::decode(agreed.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("the cluster's {name} is not 64 hex digits"))
}

/// The key Flight SQL tickets and prepared-statement handles are sealed with: made at start
/// for one gateway (its tickets live minutes), agreed through a shared catalog so that any
/// gateway of a cluster can run a ticket another one issued.
async fn flight_ticket_key(catalog: &dyn CatalogStore) -> Result<[u8; 32]> {
    let mut local = [0u8; 32];
    rand::fill(&mut local);
    agreed_key(catalog, "flight_ticket_key", local).await
}

fn local_mask_key(cfg: &Config) -> Result<[u8; 32]> {
    let path = cfg.storage.data_dir.join("mask.key");
    if !path.exists() {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        write_secret_file(&path, &format!("{}\n", hex::encode(bytes)))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("{}: not 64 hex digits", path.display()))?;
    Ok(bytes)
}

/// Writes a file readable only by its owner, replacing it atomically.
fn write_secret_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn run_load(
    cfg: Config,
    dataset: &str,
    file: &std::path::Path,
    mode: &str,
    delimiter: char,
    charset: Option<&str>,
) -> Result<()> {
    logging::init(&cfg);
    let target = datagate_core::DatasetRef::parse_path(dataset)?;
    let mode: VersionMode = mode.parse().map_err(anyhow::Error::msg)?;
    let delimiter = datagate_ingest::SourceFormat::csv_delimiter(&delimiter.to_string())
        .map_err(anyhow::Error::msg)?;
    let charset = charset
        .map(datagate_ingest::decode::encoding)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .flatten();
    let format = SourceFormat::from_path(file, delimiter).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: unknown format; use .csv, .tsv, .ndjson, .parquet or .arrow (optionally .gz)",
            file.display()
        )
    })?;
    runtime()?.block_on(async move {
        let stores = open_stores_offline(&cfg).await?;
        let publisher = publisher(&cfg, &stores);
        let start = std::time::Instant::now();
        let v = publisher
            .publish_file(
                &target.department,
                &target.name,
                Source {
                    format,
                    gzip: file.extension().is_some_and(|e| e == "gz"),
                    charset,
                    mode,
                    digest: None,
                    created_by: "cli".to_string(),
                },
                file,
            )
            .await?;
        use datagate_core::words::plural;
        println!(
            "{target}: version {} ({}), {} added, {} in all, {}, {:.1}s",
            v.version,
            v.mode.as_str(),
            plural(v.rows_added, "row"),
            plural(v.row_count, "row"),
            plural(v.files.len() as u64, "file"),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

/// The gateways' directories of a cluster's audit archive (`<node_id>/segment-*.jsonl`), when
/// `dir` is one: no segment of its own, one or more subdirectories with segments.
fn node_dirs(dir: &std::path::Path) -> Result<Option<Vec<(String, PathBuf)>>> {
    if !datagate_audit::segment::list_segments(dir)?.is_empty() {
        return Ok(None);
    }
    let mut nodes = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        if entry.path().is_dir()
            && !datagate_audit::segment::list_segments(&entry.path())?.is_empty()
        {
            nodes.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    nodes.sort();
    Ok((!nodes.is_empty()).then_some(nodes))
}

/// Verifies each gateway's chain in a cluster's archive with that gateway's own key (a
/// `--public-key` applies to all) and prints one verdict per gateway; exits 1 unless all hold.
fn verify_nodes(nodes: &[(String, PathBuf)], public_key: Option<&str>) -> Result<()> {
    let key = public_key
        .map(datagate_audit::checkpoint::parse_public_key)
        .transpose()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = serde_json::Map::new();
    let mut ok = true;
    for (node, dir) in nodes {
        let verdict = datagate_audit::verify_dirs(&[dir.as_path()], key.as_ref(), None, cores)?;
        ok &= verdict.ok;
        let mut v = serde_json::to_value(&verdict)?;
        // The key each chain was checked with: compare it with the gateway's published one
        // (GET /api/v1/audit/public-key), since the archive could hold a forger's key too.
        if let Ok(k) = std::fs::read_to_string(dir.join(datagate_audit::archive::PUBLIC_KEY_FILE)) {
            v["public_key"] = serde_json::Value::from(k.trim());
        }
        report.insert(node.clone(), v);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"ok": ok, "nodes": report}))?
    );
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

fn run_audit(cfg: Config, action: AuditAction) -> Result<()> {
    match action {
        AuditAction::Verify {
            checkpoint,
            public_key,
            dir,
            archive,
        } => {
            let fetched = match &archive {
                None => None,
                Some(url) => {
                    let url = url::Url::parse(url).context("--archive is not a URL")?;
                    let tmp = tempfile::tempdir().context("a temporary directory")?;
                    let archive = datagate_audit::archive::Archive::open(&url)?;
                    let n = runtime()?.block_on(archive.fetch(tmp.path()))?;
                    eprintln!("fetched {n} files from {url}");
                    Some(tmp)
                }
            };
            let dirs = match (&fetched, dir.is_empty()) {
                (Some(tmp), _) => vec![tmp.path().to_path_buf()],
                (None, true) => vec![cfg.storage.audit_dir(&cfg.audit)],
                (None, false) => dir,
            };
            // A cluster's archive: one directory per gateway, no segment at the top.
            if let [one] = dirs.as_slice()
                && let Some(nodes) = node_dirs(one)?
            {
                return verify_nodes(&nodes, public_key.as_deref());
            }
            for dir in &dirs {
                if !dir.is_dir() {
                    bail!("no audit log at {}", dir.display());
                }
            }
            let given = checkpoint
                .map(|f| -> Result<datagate_audit::Checkpoint> {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a checkpoint", f.display()))
                })
                .transpose()?;
            let key = public_key
                .map(|k| datagate_audit::checkpoint::parse_public_key(&k))
                .transpose()?;
            let dirs: Vec<&std::path::Path> = dirs.iter().map(PathBuf::as_path).collect();
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let verdict = datagate_audit::verify_dirs(&dirs, key.as_ref(), given.as_ref(), cores)?;
            println!("{}", serde_json::to_string_pretty(&verdict)?);
            if !verdict.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditAction::Gen {
            dir,
            records,
            from,
            to,
            segment_bytes,
            principals,
            datasets,
            seed,
        } => {
            let time = |s: &str| -> Result<chrono::DateTime<chrono::Utc>> {
                Ok(chrono::DateTime::parse_from_rfc3339(s)
                    .with_context(|| format!("{s} is not an RFC 3339 time"))?
                    .to_utc())
            };
            let started = std::time::Instant::now();
            datagate_audit::synthetic::generate(
                &dir,
                &datagate_audit::synthetic::Shape {
                    records,
                    from: time(&from)?,
                    to: time(&to)?,
                    segment_max_bytes: segment_bytes.max(4096),
                    principals,
                    datasets,
                    seed,
                },
            )?;
            println!(
                "{}",
                serde_json::json!({"records": records, "seconds": started.elapsed().as_secs_f64()})
            );
            Ok(())
        }
        AuditAction::AppendRate {
            dir,
            writers,
            seconds,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let (log, _) = datagate_audit::AuditLog::open(datagate_audit::LogOptions::new(&dir))?;
            let records = rt.block_on(async {
                let end = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
                let tasks: Vec<_> = (0..writers)
                    .map(|w| {
                        let log = log.clone();
                        tokio::spawn(async move {
                            let mut n = 0u64;
                            while std::time::Instant::now() < end {
                                let event = datagate_audit::Event {
                                    kind: Some(datagate_audit::Kind::Request),
                                    event_id: format!("{w}-{n}"),
                                    key_id: format!("k{w:05}"),
                                    role: "consumer".into(),
                                    method: "GET".into(),
                                    path: "/api/v1/datasets/transport/bus_lines/rows?limit=10"
                                        .into(),
                                    action: "data.rows".into(),
                                    status: 200,
                                    count: 1,
                                    ..Default::default()
                                };
                                if log.append(event).await.is_err() {
                                    break;
                                }
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                let mut total = 0;
                for t in tasks {
                    total += t.await.unwrap_or(0);
                }
                total
            });
            log.close();
            println!(
                "{}",
                serde_json::json!({"writers": writers, "records_per_sec": records as f64 / seconds as f64})
            );
            Ok(())
        }
        AuditAction::Index { dir } => {
            let dir = dir.unwrap_or_else(|| cfg.storage.audit_dir(&cfg.audit));
            if !dir.is_dir() {
                bail!("no audit log at {}", dir.display());
            }
            let index = datagate_audit::columnar::ColumnarIndex::load(&dir)?;
            let started = std::time::Instant::now();
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let done = index.catch_up(cores)?;
            let records: u64 = index.snapshot().iter().map(|m| m.records).sum();
            println!(
                "{}",
                serde_json::json!({
                    "converted_segments": done,
                    "segments_with_parquet": index.snapshot().len(),
                    "records_in_parquet": records,
                    "seconds": started.elapsed().as_secs_f64(),
                })
            );
            Ok(())
        }
    }
}

fn check_tier(cfg: &Config, tier: &str) -> Result<()> {
    if !cfg.tiers.contains_key(tier) {
        let known: Vec<&str> = cfg.tiers.keys().map(String::as_str).collect();
        bail!(
            "no tier {tier:?} in the configuration; tiers: {}",
            known.join(", ")
        );
    }
    Ok(())
}

fn run_key(cfg: Config, action: KeyAction) -> Result<()> {
    runtime()?.block_on(async move {
        let stores = open_stores_offline(&cfg).await?;
        match action {
            KeyAction::Create {
                name,
                role,
                department,
                tier,
                expires_at,
            } => {
                let role: Role = role.parse().map_err(anyhow::Error::msg)?;
                // Said in the flags' words; the catalog checks the rest of the key
                // (`NewApiKey::validate`).
                if (role == Role::Publisher) != department.is_some() {
                    bail!("a publisher key needs --department, and only a publisher key takes one");
                }
                if let Some(d) = &department
                    && stores.catalog.get_department(d).await?.is_none()
                {
                    bail!("no department {d}");
                }
                let expires_at = expires_at
                    .map(|e| chrono::DateTime::parse_from_rfc3339(&e).map(|t| t.to_utc()))
                    .transpose()
                    .context("--expires-at must be RFC 3339")?;
                let tier = tier.unwrap_or_else(|| role.default_tier().to_string());
                check_tier(&cfg, &tier)?;
                let token = KeyToken::generate();
                let key = stores
                    .catalog
                    .create_key(NewApiKey {
                        id: token.id.clone(),
                        name,
                        role,
                        department,
                        tier,
                        secret_hash: token.secret_hash(),
                        created_by: "cli".into(),
                        expires_at,
                    })
                    .await?;
                eprintln!(
                    "key {} ({}) created; the secret is shown only now",
                    key.id,
                    key.role.as_str()
                );
                println!("{}", token.expose());
            }
            KeyAction::List => {
                for k in stores.catalog.list_keys().await? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        k.id,
                        k.role.as_str(),
                        k.department.as_deref().unwrap_or("-"),
                        k.tier,
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        k.name
                    );
                }
            }
            KeyAction::Revoke { id } => {
                stores.catalog.revoke_key(&id).await?;
                eprintln!("key {id} revoked");
            }
            KeyAction::SetTier { id, tier } => {
                check_tier(&cfg, &tier)?;
                stores.catalog.set_key_tier(&id, &tier).await?;
                eprintln!("key {id} is now in tier {tier}");
            }
        }
        Ok(())
    })
}

fn run_worker(cfg: Config, listen: std::net::SocketAddr) -> Result<()> {
    logging::init(&cfg);
    let secret = cfg.query.require_worker_secret()?.to_string();
    let url = cfg.warehouse_url()?;
    let warehouse =
        Warehouse::open(&url).with_context(|| format!("cannot open warehouse {url}"))?;
    use datagate_query::distributed::read_pem;
    let q = &cfg.query;
    let tls = match (
        read_pem("query.worker_tls_cert", &q.worker_tls_cert)?,
        read_pem("query.worker_tls_key", &q.worker_tls_key)?,
    ) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    };
    let setup = datagate_query::distributed::worker::WorkerSetup {
        secret,
        warehouse_url: warehouse.url().clone(),
        store: warehouse.root_store().clone(),
        limits: (&cfg.limits).into(),
        tls,
        tls_ca: read_pem("query.worker_tls_ca", &q.worker_tls_ca)?,
    };
    runtime()?.block_on(async move {
        datagate_query::distributed::worker::serve(listen, setup, shutdown_signal()).await
    })?;
    Ok(())
}

/// The query engine over `stores`, as `cfg` sets it up (workers included).
async fn query_engine(cfg: &Config, stores: &Stores) -> Result<datagate_query::QueryEngine> {
    let mask_key = mask_key(cfg, stores.catalog.as_ref()).await?;
    let distribution =
        datagate_query::distributed::Distribution::from_config(&cfg.query, &mask_key)?;
    if let Some(d) = &distribution {
        // First check before serving, so the first queries know which workers are up; the
        // checks then go on in the background for the life of the process.
        drop(d.start_checks().await);
    }
    Ok(datagate_query::QueryEngine::new(
        stores.catalog.clone(),
        stores.warehouse.url().clone(),
        stores.warehouse.root_store().clone(),
        (&cfg.limits).into(),
        mask_key,
        datagate_query::QueryExecutor::new(&cfg.query)?,
    )?
    .with_distribution(distribution))
}

fn run_query(cfg: Config, sql: &str, format: &str, repeat: Option<u32>) -> Result<()> {
    use datagate_query::execute::{self, RowCap};
    use std::io::Write;
    let format = datagate_query::encode::Format::from_name(format)
        .ok_or_else(|| anyhow::anyhow!("unknown format {format}"))?;
    runtime()?.block_on(async move {
        let stores = open_stores_offline(&cfg).await?;
        let engine = query_engine(&cfg, &stores).await?;
        let admin = datagate_query::Principal {
            key_id: Some("cli".into()),
            role: Some(Role::Admin),
            department: None,
            grants: Vec::new(),
        };
        // The operator's own queries: the internal tier's budgets, on the reserved pool.
        let budget = cfg.tier("internal").1.query_budget;
        let lane = engine
            .executor()
            .lane(datagate_core::config::QueryPool::Reserved, "cli", None);
        let mut times = Vec::new();
        for run in 0..repeat.unwrap_or(1).max(1) {
            let start = std::time::Instant::now();
            let session = engine
                .request_session(engine.readable_catalog_for(&admin, sql).await?, false)?
                .for_caller(budget, true);
            let sql = sql.to_string();
            let started = lane
                .run(async move {
                    let plan = datagate_query::sql::plan_sql(&session, &sql, &[]).await?;
                    execute::start(&session, plan, None).await
                })
                .await?;
            let cap = RowCap::default();
            let mut rx = execute::stream_encoded(
                &lane,
                started,
                format,
                execute::BodyCoding::Identity,
                cap,
                Arc::default(),
                |_| {},
            )?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = rx.recv().await {
                let chunk = chunk.map_err(|e| anyhow::anyhow!("{e}"))?;
                if run == 0 {
                    out.write_all(&chunk.wire)?;
                }
            }
            out.flush()?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        if repeat.is_some() {
            times.sort_by(f64::total_cmp);
            eprintln!(
                "runs={} median_ms={:.2} min_ms={:.2}",
                times.len(),
                times[times.len() / 2],
                times[0]
            );
        }
        Ok(())
    })
}

fn run_gen(
    kind: datagen::Kind,
    rows: u64,
    format: datagen::GenFormat,
    out: &std::path::Path,
    seed: u64,
) -> Result<()> {
    let start = std::time::Instant::now();
    let written = if out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        datagen::generate(
            kind,
            rows,
            seed,
            format,
            std::io::BufWriter::with_capacity(1 << 20, stdout),
        )?
    } else {
        let tmp = out.with_extension("partial");
        let f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let n = datagen::generate(
            kind,
            rows,
            seed,
            format,
            std::io::BufWriter::with_capacity(1 << 20, f),
        )?;
        std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
        n
    };
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{written} rows in {secs:.2}s ({:.0} rows/s)",
        written as f64 / secs.max(1e-9)
    );
    Ok(())
}
