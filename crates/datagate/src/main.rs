//! The `datagate` command: `serve` the gateway, `load` a file into a dataset offline, `gen`
//! synthetic data. Wiring only: the work is done by the library crates.

mod datagen;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use datagate_catalog::{CatalogStore, SqliteCatalog, VersionMode};
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
    /// Publish a local CSV file as a new version of a dataset, without HTTP.
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
        let referenced: HashSet<String> = stores.catalog.referenced_files().await?.into_iter().collect();
        let swept = stores.warehouse.sweep_unreferenced(&referenced).await?;
        if swept > 0 {
            tracing::info!(files = swept, "removed files of unfinished uploads");
        }
        let publisher = Publisher::new(stores.catalog.clone(), stores.warehouse.clone(), cfg.ingest.clone());
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
    runtime()?.block_on(async move {
        let stores = open_stores(&cfg)?;
        let publisher =
            Publisher::new(stores.catalog.clone(), stores.warehouse, cfg.ingest.clone());
        let start = std::time::Instant::now();
        let v = publisher
            .publish_file(
                &target.department,
                &target.name,
                Source {
                    format: SourceFormat::Csv {
                        delimiter: delimiter as u8,
                    },
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
