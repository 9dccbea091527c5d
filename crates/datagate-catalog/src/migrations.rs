//! The catalog's schema, for both backends, in one list: each step has an SQLite and a
//! PostgreSQL text with the same number, applied in order. SQLite records the applied number
//! in `user_version` (rusqlite_migration); PostgreSQL in the table `datagate_migrations`, under
//! an advisory lock so gateways starting together apply each step once.

use crate::store::{CatalogError, Result};

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("../migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("../migrations/postgres/", $name, ".sql")),
        }
    };
}

/// Every step, oldest first. A new step adds a file to both directories and a line here.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_catalog"),
    migration!(2, "0002_keys"),
    migration!(3, "0003_applications_grants"),
    migration!(4, "0004_daily_usage"),
    migration!(5, "0005_version_source_format"),
    migration!(6, "0006_shared_rate_state"),
    migration!(7, "0007_shared_dataset_usage"),
    migration!(8, "0008_cluster_secrets"),
    migration!(9, "0009_portal_sessions"),
];

/// The newest schema this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The SQLite steps, for rusqlite_migration.
pub(crate) fn sqlite() -> rusqlite_migration::Migrations<'static> {
    rusqlite_migration::Migrations::new(
        MIGRATIONS
            .iter()
            .map(|m| rusqlite_migration::M::up(m.sqlite))
            .collect(),
    )
}

/// A key for `pg_advisory_xact_lock` that only datagate's migrations take.
const PG_LOCK: i64 = 0x6461_7461_6761_7465; // "datagate"

/// Applies the PostgreSQL steps not applied yet, in one transaction under an advisory lock;
/// returns the steps applied. Refuses a database whose schema is newer than this binary.
pub(crate) async fn postgres(client: &mut tokio_postgres::Client) -> Result<Vec<i32>> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS datagate_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM datagate_migrations",
            &[],
        )
        .await?
        .get(0);
    if current > latest() {
        return Err(CatalogError::Backend(format!(
            "the catalog's schema is version {current}, newer than this binary's {}: \
             upgrade the gateway",
            latest()
        )));
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.postgres).await.map_err(|e| {
            CatalogError::Backend(format!("migration {} failed: {}", m.name, pg_detail(&e)))
        })?;
        tx.execute(
            "INSERT INTO datagate_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(applied)
}

/// The server's message of a PostgreSQL error (the driver's `Display` says only "db error").
pub(crate) fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_in_order_and_named_by_their_number() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1);
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
            assert!(!m.sqlite.trim().is_empty() && !m.postgres.trim().is_empty());
        }
    }

    #[test]
    fn every_file_in_either_directory_is_a_listed_step() {
        for dir in ["sqlite", "postgres"] {
            // Where `cargo test` runs it (a binary reused from another checkout through a
            // shared target directory keeps that checkout's compile-time path).
            let path = std::path::PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("migrations")
            .join(dir);
            for entry in std::fs::read_dir(&path).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                let stem = name.strip_suffix(".sql").unwrap();
                assert!(
                    MIGRATIONS.iter().any(|m| m.name == stem),
                    "{dir}/{name} is not in MIGRATIONS"
                );
            }
        }
    }

    #[test]
    fn sqlite_steps_are_valid() {
        sqlite().validate().unwrap();
    }
}
