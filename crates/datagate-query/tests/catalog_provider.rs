//! The `datagate` DataFusion catalog over real Parquet files published through ingest.

mod support;

use arrow::array::{Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use datagate_catalog::{
    CatalogStore, Column, DatasetMetadata, NewDataset, NewDepartment, SqliteCatalog, VersionMode,
};
use datagate_core::config::IngestConfig;
use datagate_core::{AccessLevel, ColumnType};
use datagate_ingest::{Publisher, Warehouse};
use datagate_query::QueryEngine;
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    catalog: Arc<dyn CatalogStore>,
    publisher: Publisher,
    engine: QueryEngine,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let catalog: Arc<dyn CatalogStore> =
        Arc::new(SqliteCatalog::open(&dir.path().join("c.sqlite")).unwrap());
    let url = url::Url::from_directory_path(dir.path().join("warehouse")).unwrap();
    let warehouse = Warehouse::open(&url).unwrap();
    let publisher = Publisher::new(
        catalog.clone(),
        warehouse.clone(),
        IngestConfig::default(),
        u64::MAX,
        dir.path().join("tmp"),
    );
    let engine = QueryEngine::new(
        catalog.clone(),
        url,
        warehouse.root_store().clone(),
        Default::default(),
        datagate_query::MaskKey::random(),
        datagate_query::QueryExecutor::new(&Default::default()).unwrap(),
    )
    .unwrap();
    catalog
        .create_department(NewDepartment {
            id: "transport".into(),
            name: "交通运输局".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    for (name, level) in [
        ("stops", AccessLevel::Open),
        ("depots", AccessLevel::Shared),
        ("empty", AccessLevel::Open),
    ] {
        catalog
            .create_dataset(NewDataset {
                department: "transport".into(),
                name: name.into(),
                metadata: DatasetMetadata {
                    title: name.into(),
                    description: String::new(),
                    tags: vec![],
                    license: String::new(),
                    contact: Default::default(),
                    update_frequency: String::new(),
                    access_level: level,
                    temporal_coverage: None,
                    spatial_coverage: None,
                },
                primary_key: vec!["id".into()],
                columns: vec![
                    Column {
                        name: "id".into(),
                        data_type: ColumnType::Int64,
                        description: String::new(),
                        sensitivity: Default::default(),
                        mask: None,
                    },
                    Column {
                        name: "name".into(),
                        data_type: ColumnType::Utf8,
                        description: String::new(),
                        sensitivity: Default::default(),
                        mask: None,
                    },
                ],
            })
            .await
            .unwrap();
    }
    Fixture {
        _dir: dir,
        catalog,
        publisher,
        engine,
    }
}

async fn publish(f: &Fixture, name: &str, mode: VersionMode, csv: &str) {
    support::publish_csv(&f.publisher, "transport", name, mode, csv).await;
}

/// A session over the open datasets as they are now.
async fn open_session(f: &Fixture) -> datafusion::prelude::SessionContext {
    f.engine.session(
        f.engine
            .catalog_snapshot(&[AccessLevel::Open])
            .await
            .unwrap(),
    )
}

async fn sql(ctx: &datafusion::prelude::SessionContext, q: &str) -> Vec<RecordBatch> {
    ctx.sql(q).await.unwrap().collect().await.unwrap()
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

#[tokio::test]
async fn departments_are_schemas_and_datasets_tables() {
    let f = fixture().await;
    publish(
        &f,
        "stops",
        VersionMode::Replace,
        "id,name\n1,人民路口\n2,解放路口\n3,中山路口\n",
    )
    .await;
    publish(
        &f,
        "depots",
        VersionMode::Replace,
        "id,name\n1,北站停车场\n",
    )
    .await;
    let visible = [AccessLevel::Open, AccessLevel::Conditional];
    let ctx = f
        .engine
        .session(f.engine.catalog_snapshot(&visible).await.unwrap());

    assert_eq!(
        count(&sql(&ctx, "SELECT count(*) FROM datagate.transport.stops").await),
        3
    );
    assert_eq!(
        count(
            &sql(
                &ctx,
                "SELECT count(*) FROM transport.stops WHERE name LIKE '%人民%'"
            )
            .await
        ),
        1
    );
    assert_eq!(
        count(&sql(&ctx, "SELECT count(*) FROM transport.empty").await),
        0,
        "no version yet: empty table"
    );
    // A dataset of an invisible level does not exist for this session, not even in information_schema.
    let err = ctx
        .sql("SELECT * FROM transport.depots")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found"), "{err}");
    let tables = sql(&ctx, "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = 'datagate' AND table_schema <> 'information_schema' ORDER BY 2").await;
    let names = tables[0]
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let names: Vec<&str> = (0..names.len()).map(|i| names.value(i)).collect();
    assert_eq!(names, ["empty", "stops"]);
    // No other catalog exists.
    assert_eq!(ctx.catalog_names(), ["datagate"]);

    let all = f
        .engine
        .session(f.engine.catalog_snapshot(&AccessLevel::ALL).await.unwrap());
    assert_eq!(
        count(&sql(&all, "SELECT count(*) FROM transport.depots").await),
        1
    );
}

#[tokio::test]
async fn a_snapshot_stays_on_its_version() {
    let f = fixture().await;
    publish(&f, "stops", VersionMode::Replace, "id,name\n1,a\n2,b\n").await;
    let snapshot = f
        .engine
        .catalog_snapshot(&[AccessLevel::Open])
        .await
        .unwrap();
    assert_eq!(
        snapshot
            .table("transport", "stops")
            .await
            .unwrap()
            .unwrap()
            .snapshot
            .version,
        Some(1)
    );
    let old = f.engine.session(snapshot);
    publish(&f, "stops", VersionMode::Append, "id,name\n3,c\n").await;
    let new = f.engine.session(
        f.engine
            .catalog_snapshot(&[AccessLevel::Open])
            .await
            .unwrap(),
    );
    assert_eq!(
        count(&sql(&old, "SELECT count(*) FROM transport.stops").await),
        2
    );
    assert_eq!(
        count(&sql(&new, "SELECT count(*) FROM transport.stops").await),
        3
    );
    publish(&f, "stops", VersionMode::Replace, "id,name\n9,z\n").await;
    let newest = f.engine.session(
        f.engine
            .catalog_snapshot(&[AccessLevel::Open])
            .await
            .unwrap(),
    );
    assert_eq!(
        count(&sql(&newest, "SELECT count(*) FROM transport.stops").await),
        1
    );
    assert_eq!(
        count(&sql(&old, "SELECT count(*) FROM transport.stops").await),
        2,
        "old versions stay readable"
    );
    let ds = f
        .catalog
        .get_dataset("transport", "stops")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ds.current_version, Some(3));
}

#[tokio::test]
async fn parquet_files_are_laid_out_for_reads() {
    let f = fixture().await;
    let mut csv = String::from("id,name\n");
    for i in 0..5000 {
        csv.push_str(&format!("{i},站点{i}\n"));
    }
    publish(&f, "stops", VersionMode::Replace, &csv).await;
    let v = f
        .catalog
        .get_version("transport", "stops", 1)
        .await
        .unwrap()
        .unwrap();
    let path = f
        .publisher
        .warehouse()
        .url()
        .to_file_path()
        .unwrap()
        .join(&v.files[0].path);
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let md = reader.metadata();
    assert_eq!(md.file_metadata().num_rows(), 5000);
    let col = md.row_group(0).column(0);
    assert_eq!(col.compression(), parquet::basic::Compression::LZ4_RAW);
    assert!(
        !col.encodings()
            .any(|e| e == parquet::basic::Encoding::RLE_DICTIONARY),
        "no dictionary for a one-column key: {:?}",
        col.encodings().collect::<Vec<_>>()
    );
    assert!(
        md.row_group(0)
            .column(1)
            .encodings()
            .any(|e| e == parquet::basic::Encoding::RLE_DICTIONARY),
        "other columns start with a dictionary"
    );
    assert!(col.statistics().is_some(), "column statistics");
    assert!(
        col.bloom_filter_offset().is_some(),
        "bloom filter on the primary key"
    );
    assert!(
        md.row_group(0).column(1).bloom_filter_offset().is_none(),
        "only on the primary key"
    );
    assert!(
        col.column_index_offset().is_some() && col.offset_index_offset().is_some(),
        "page index"
    );
}

#[tokio::test]
async fn request_sessions_never_share_catalogs() {
    let f = fixture().await;
    publish(&f, "stops", VersionMode::Replace, "id,name\n1,a\n").await;
    publish(&f, "depots", VersionMode::Replace, "id,name\n1,x\n").await;
    let narrow = f
        .engine
        .request_session(
            f.engine
                .catalog_snapshot(&[AccessLevel::Open])
                .await
                .unwrap(),
            false,
        )
        .unwrap();
    let wide = f
        .engine
        .request_session(
            f.engine.catalog_snapshot(&AccessLevel::ALL).await.unwrap(),
            false,
        )
        .unwrap();
    assert_eq!(
        count(&sql(&wide.ctx, "SELECT count(*) FROM transport.depots").await),
        1
    );
    // Built from the same base state, the narrow session still has only its own catalog.
    let err = narrow
        .ctx
        .sql("SELECT count(*) FROM transport.depots")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    assert_eq!(narrow.ctx.catalog_names(), ["datagate"]);
    let again = f
        .engine
        .request_session(
            f.engine
                .catalog_snapshot(&[AccessLevel::Open])
                .await
                .unwrap(),
            false,
        )
        .unwrap();
    assert!(
        again
            .ctx
            .sql("SELECT * FROM transport.depots")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn primary_key_lookups_are_recognised() {
    let f = fixture().await;
    publish(&f, "stops", VersionMode::Replace, "id,name\n1,a\n").await;
    let ctx = open_session(&f).await;
    for (q, lookup) in [
        ("SELECT * FROM transport.stops WHERE id = 1", true),
        (
            "SELECT name FROM transport.stops WHERE 7 = id AND name <> 'x'",
            true,
        ),
        ("SELECT * FROM transport.stops WHERE id IN (1, 2, 3)", true),
        ("SELECT * FROM transport.stops WHERE id > 1", false),
        ("SELECT * FROM transport.stops WHERE name = 'a'", false),
        ("SELECT * FROM transport.stops WHERE id NOT IN (1)", false),
        ("SELECT count(*) FROM transport.stops", false),
    ] {
        let plan = ctx.sql(q).await.unwrap().into_unoptimized_plan();
        assert_eq!(
            datagate_query::plan_info::looks_up_primary_key(&plan),
            lookup,
            "{q}"
        );
    }
}

#[tokio::test]
async fn information_schema_tables_lists_datasets_without_resolving_their_versions() {
    let f = fixture().await;
    publish(&f, "stops", VersionMode::Replace, "id,name\n1,a\n").await;
    let ctx = open_session(&f).await;
    // The version this catalog knows as current is replaced and forgotten.
    publish(&f, "stops", VersionMode::Replace, "id,name\n2,b\n").await;
    f.catalog
        .expire_versions("transport", "stops", 1)
        .await
        .unwrap();
    let read = ctx.sql("SELECT * FROM transport.stops").await;
    let err = match read {
        Ok(df) => df.collect().await.unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("gone"), "resolving the table fails: {err}");
    // Listing the tables resolves none of them (thousands of datasets would each be looked up).
    let tables = sql(
        &ctx,
        "SELECT table_name, table_type FROM information_schema.tables \
         WHERE table_schema = 'transport' ORDER BY 1",
    )
    .await;
    let batch = arrow::compute::concat_batches(&tables[0].schema(), &tables).unwrap();
    let column = |i: usize| {
        let a = batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        (0..a.len())
            .map(|r| a.value(r).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(column(0), ["empty", "stops"]);
    assert_eq!(column(1), ["BASE TABLE", "BASE TABLE"]);
}

#[tokio::test]
async fn tables_resolved_together_are_the_tables_resolved_alone() {
    let f = fixture().await;
    publish(&f, "stops", VersionMode::Replace, "id,name\n1,a\n").await;
    publish(&f, "depots", VersionMode::Replace, "id,name\n1,d\n").await;
    publish(&f, "depots", VersionMode::Append, "id,name\n2,e\n").await;
    let admin = support::admin();
    let alone = f.engine.readable_catalog(&admin).await.unwrap();
    let together = f.engine.readable_catalog(&admin).await.unwrap();
    let some = f.engine.readable_catalog(&admin).await.unwrap();
    together.resolve_all().await.unwrap();
    some.resolve(&[("transport".into(), "stops".into())])
        .await
        .unwrap();
    for name in ["stops", "depots", "empty"] {
        assert_eq!(
            snapshot(&together, name).await,
            snapshot(&alone, name).await,
            "{name}"
        );
    }
    // Both datasets replaced and their versions known to these catalogs forgotten: what was
    // resolved before stays on its version, what was not finds it gone.
    for name in ["stops", "depots"] {
        publish(&f, name, VersionMode::Replace, "id,name\n9,z\n").await;
        f.catalog
            .expire_versions("transport", name, 1)
            .await
            .unwrap();
    }
    assert!(snapshot(&together, "depots").await.is_ok());
    assert!(snapshot(&some, "stops").await.is_ok());
    let err = snapshot(&some, "depots").await.unwrap_err();
    assert!(err.contains("gone"), "{err}");
}

/// The snapshot `catalog` reads `transport.name` at, or why it cannot.
async fn snapshot(catalog: &datagate_query::DatagateCatalog, name: &str) -> Result<String, String> {
    let table = catalog
        .table("transport", name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("{:?}", table.unwrap().snapshot))
}
