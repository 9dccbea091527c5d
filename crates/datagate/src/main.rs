//! The `datagate` command: `serve` the gateway, `load` a file into a dataset offline, `gen`
//! synthetic data. Wiring only: the work is done by the library crates.

mod datagen;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use datagate_catalog::{CatalogStore, KeyToken, NewApiKey, Role, SqliteCatalog, VersionMode};
use datagate_core::Config;
use datagate_core::config::LogFormat;
use datagate_ingest::{Publisher, Source, SourceFormat, Warehouse};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

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

#[derive(Subcommand)]
enum Command {
    /// Start the gateway.
    Serve {
        /// Configuration file (default: config/datagate.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
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
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides the configuration).
        #[arg(long)]
        data_dir: Option<PathBuf>,
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

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => load_config(config.as_deref()).and_then(run_serve),
        Command::Load {
            dataset,
            file,
            mode,
            delimiter,
            config,
            data_dir,
        } => load_config(config.as_deref()).and_then(|mut cfg| {
            if let Some(d) = data_dir {
                cfg.storage.data_dir = d;
            }
            run_load(cfg, &dataset, &file, &mode, delimiter)
        }),
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

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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

fn open_stores(cfg: &Config) -> Result<Stores> {
    std::fs::create_dir_all(&cfg.storage.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            cfg.storage.data_dir.display()
        )
    })?;
    let catalog_file = cfg.storage.catalog_file();
    let catalog = SqliteCatalog::open(&catalog_file)
        .with_context(|| format!("cannot open catalog {}", catalog_file.display()))?;
    let url = cfg.warehouse_url()?;
    let warehouse =
        Warehouse::open(&url).with_context(|| format!("cannot open warehouse {url}"))?;
    Ok(Stores {
        catalog: Arc::new(catalog),
        warehouse,
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

fn run_serve(cfg: Config) -> Result<()> {
    init_logging(&cfg);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ])
        .and_then(|b| b.install_recorder())
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    let rt = runtime()?;
    rt.block_on(async move {
        let stores = open_stores(&cfg)?;
        bootstrap_admin_key(&cfg, stores.catalog.as_ref()).await?;
        let referenced: HashSet<String> = stores.catalog.referenced_files().await?.into_iter().collect();
        let swept = stores.warehouse.sweep_unreferenced(&referenced).await?;
        if swept > 0 {
            tracing::info!(files = swept, "removed files of unfinished uploads");
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
        let engine = datagate_query::QueryEngine::new(
            stores.catalog.clone(),
            stores.warehouse.url().clone(),
            stores.warehouse.root_store().clone(),
            (&cfg.limits).into(),
        )?;
        let state = datagate_server::AppState {
            config: Arc::new(cfg.clone()),
            catalog: stores.catalog,
            publisher,
            engine,
            metrics,
        };
        let listener = tokio::net::TcpListener::bind(cfg.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
        tracing::info!(address = %listener.local_addr()?, data_dir = %cfg.storage.data_dir.display(), "datagate listening");
        datagate_server::serve(listener, state, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
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
) -> Result<()> {
    init_logging(&cfg);
    let target = datagate_core::DatasetRef::parse_path(dataset)?;
    let mode: VersionMode = mode.parse().map_err(anyhow::Error::msg)?;
    if !delimiter.is_ascii() {
        bail!("the delimiter must be one ASCII character");
    }
    let format = SourceFormat::from_path(file, delimiter as u8).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: unknown format; use .csv, .tsv, .ndjson, .parquet or .arrow (optionally .gz)",
            file.display()
        )
    })?;
    runtime()?.block_on(async move {
        let stores = open_stores(&cfg)?;
        let publisher = publisher(&cfg, &stores);
        let start = std::time::Instant::now();
        let v = publisher
            .publish_file(
                &target.department,
                &target.name,
                Source {
                    format,
                    gzip: file.extension().is_some_and(|e| e == "gz"),
                    mode,
                    digest: None,
                    created_by: "cli".to_string(),
                },
                file,
            )
            .await?;
        println!(
            "{target}: version {} ({}), {} rows added, {} rows in all, {} files, {:.1}s",
            v.version,
            v.mode.as_str(),
            v.rows_added,
            v.row_count,
            v.files.len(),
            start.elapsed().as_secs_f64()
        );
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
