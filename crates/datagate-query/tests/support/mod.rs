//! A published dataset for the query tests: `market.entities`, uploaded in several CSV parts
//! (the first replaces, the others append) through the real publisher into a temporary
//! warehouse and SQLite catalog, in small row groups and files so a version spans many of both.
// Each test binary uses part of this module.
#![allow(dead_code)]

use bytes::Bytes;
use datagate_catalog::{
    CatalogStore, DatasetMetadata, NewDataset, NewDepartment, SqliteCatalog, VersionMode,
};
use datagate_core::config::IngestConfig;
use datagate_core::{AccessLevel, ColumnType, Mask, Sensitivity};
use datagate_ingest::{Publisher, Source, SourceFormat, Warehouse};
use std::sync::Arc;

/// Where the published dataset lives; the directory goes when this is dropped.
pub struct Published {
    pub dir: tempfile::TempDir,
    pub catalog: Arc<dyn CatalogStore>,
    pub url: url::Url,
    pub warehouse: Warehouse,
}

pub use datagate_catalog::Column;

/// An admin: sees every column as uploaded.
pub fn admin() -> datagate_query::Principal {
    datagate_query::Principal {
        key_id: Some("admin".into()),
        role: Some(datagate_catalog::Role::Admin),
        department: None,
        grants: vec![],
    }
}

impl Published {
    /// A query engine over the published dataset, with default limits and a new mask key.
    pub fn engine(&self) -> datagate_query::QueryEngine {
        datagate_query::QueryEngine::new(
            self.catalog.clone(),
            self.url.clone(),
            self.warehouse.root_store().clone(),
            Default::default(),
            datagate_query::MaskKey::random(),
            datagate_query::QueryExecutor::new(&Default::default()).unwrap(),
        )
        .unwrap()
    }
}

pub fn column(
    name: &str,
    data_type: ColumnType,
    sensitivity: Sensitivity,
    mask: Option<Mask>,
) -> Column {
    Column {
        name: name.into(),
        data_type,
        description: String::new(),
        sensitivity,
        mask,
    }
}

/// `market.entities` (open, primary key `id`) with `columns`, published from the CSV bodies
/// `parts` in turn, in row groups of 64 rows and files of about 6 kB.
pub async fn publish_entities(columns: Vec<Column>, parts: &[String]) -> Published {
    let dir = tempfile::tempdir().unwrap();
    let catalog: Arc<dyn CatalogStore> =
        Arc::new(SqliteCatalog::open(&dir.path().join("c.sqlite")).unwrap());
    let url = url::Url::from_directory_path(dir.path().join("warehouse")).unwrap();
    let warehouse = Warehouse::open(&url).unwrap();
    let ingest = IngestConfig {
        batch_rows: 50,
        row_group_rows: 64,
        target_file_bytes: 6_000,
        ..IngestConfig::default()
    };
    let publisher = Publisher::new(
        catalog.clone(),
        warehouse.clone(),
        ingest,
        u64::MAX,
        dir.path().join("tmp"),
    );
    catalog
        .create_department(NewDepartment {
            id: "market".into(),
            name: "市场监管局".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    catalog
        .create_dataset(NewDataset {
            department: "market".into(),
            name: "entities".into(),
            metadata: DatasetMetadata {
                title: "entities".into(),
                description: String::new(),
                tags: vec![],
                license: String::new(),
                contact: Default::default(),
                update_frequency: String::new(),
                access_level: AccessLevel::Open,
                temporal_coverage: None,
                spatial_coverage: None,
            },
            primary_key: vec!["id".into()],
            columns,
        })
        .await
        .unwrap();
    for (i, part) in parts.iter().enumerate() {
        let mode = if i == 0 {
            VersionMode::Replace
        } else {
            VersionMode::Append
        };
        publish_csv(&publisher, "market", "entities", mode, part).await;
    }
    Published {
        dir,
        catalog,
        url,
        warehouse,
    }
}

/// Publishes the CSV body `csv` to `department/name` as a new version (`mode`).
pub async fn publish_csv(
    publisher: &Publisher,
    department: &str,
    name: &str,
    mode: VersionMode,
    csv: &str,
) {
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(csv.to_string()))]);
    publisher
        .publish(
            department,
            name,
            Source {
                format: SourceFormat::Csv { delimiter: b',' },
                gzip: false,
                charset: None,
                mode,
                digest: None,
                created_by: "test".into(),
            },
            body,
        )
        .await
        .unwrap();
}
