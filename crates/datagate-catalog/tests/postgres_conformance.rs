//! The PostgreSQL catalog against the conformance suite, on a real server (a fresh database per
//! test), plus what only a shared catalog must do: several gateways migrating and committing
//! against one database at once.

#[path = "../../../tests/support/postgres.rs"]
mod pg;

use datagate_catalog::{
    CatalogError, CatalogStore, DataFile, NewDataset, NewDepartment, NewVersion, PostgresCatalog,
    VersionMode,
};
use std::sync::Arc;

datagate_catalog::catalog_conformance_tests!(async {
    let url = pg::server().fresh_database();
    let store = PostgresCatalog::connect(&url, 8).await.unwrap();
    (Arc::new(store) as Arc<dyn CatalogStore>, ())
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_starting_together_migrate_once() {
    let url = pg::server().fresh_database();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresCatalog::connect(&url, 2).await })
        })
        .collect();
    for s in starts {
        s.await.unwrap().unwrap();
    }
    let steps = pg::server().psql(
        &url,
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM datagate_migrations",
    );
    let want: Vec<String> = datagate_catalog::migrations::MIGRATIONS
        .iter()
        .map(|m| m.version.to_string())
        .collect();
    assert_eq!(steps, want.join(","));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused() {
    let url = pg::server().fresh_database();
    PostgresCatalog::connect(&url, 1).await.unwrap();
    pg::server().psql(
        &url,
        "INSERT INTO datagate_migrations (version, name) VALUES (999, 'future')",
    );
    let e = PostgresCatalog::connect(&url, 1).await.unwrap_err();
    assert!(e.to_string().contains("newer than this binary"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_from_two_gateways_on_one_base_one_wins_one_conflicts() {
    let url = pg::server().fresh_database();
    let a = Arc::new(PostgresCatalog::connect(&url, 4).await.unwrap());
    let b = Arc::new(PostgresCatalog::connect(&url, 4).await.unwrap());
    a.create_department(NewDepartment {
        id: "t".into(),
        name: "交通".into(),
        description: String::new(),
    })
    .await
    .unwrap();
    let columns = vec![datagate_catalog::Column {
        name: "id".into(),
        data_type: datagate_core::ColumnType::Int64,
        description: String::new(),
        sensitivity: Default::default(),
        mask: None,
    }];
    a.create_dataset(NewDataset {
        department: "t".into(),
        name: "stops".into(),
        metadata: datagate_catalog::DatasetMetadata {
            title: "站点".into(),
            description: String::new(),
            tags: vec![],
            license: String::new(),
            contact: Default::default(),
            update_frequency: String::new(),
            access_level: datagate_core::AccessLevel::Open,
            temporal_coverage: None,
            spatial_coverage: None,
        },
        primary_key: vec![],
        columns: columns.clone(),
    })
    .await
    .unwrap();
    let version = |who: &str| NewVersion {
        base_version: None,
        mode: VersionMode::Replace,
        new_files: vec![DataFile {
            path: format!("t/stops/{who}.parquet"),
            rows: 1,
            bytes: 10,
        }],
        columns: columns.clone(),
        source_digest: None,
        source_format: Some("csv".into()),
        created_by: who.into(),
    };
    for round in 0..20 {
        let base = a
            .get_dataset("t", "stops")
            .await
            .unwrap()
            .unwrap()
            .current_version;
        let (va, vb) = (
            NewVersion {
                base_version: base,
                ..version("a")
            },
            NewVersion {
                base_version: base,
                ..version("b")
            },
        );
        let (ra, rb) = tokio::join!(
            a.commit_version("t", "stops", va),
            b.commit_version("t", "stops", vb)
        );
        let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {ra:?} {rb:?}");
        for r in [ra, rb] {
            if let Err(e) = r {
                assert!(matches!(e, CatalogError::Conflict(_)), "{e}");
            }
        }
        let head = b.get_dataset("t", "stops").await.unwrap().unwrap();
        assert_eq!(head.current_version, Some(base.unwrap_or(0) + 1));
    }
    let versions = a.list_versions("t", "stops").await.unwrap();
    assert_eq!(
        versions.len(),
        20,
        "every winner kept, no loser half-written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_rate_is_shared_by_every_gateway() {
    use datagate_catalog::rates::SharedRates;
    use std::time::Duration;
    let url = pg::server().fresh_database();
    let a = PostgresCatalog::connect(&url, 2).await.unwrap();
    let b = PostgresCatalog::connect(&url, 2).await.unwrap();
    let period = Duration::from_secs(10);
    // A burst of 5, taken alternately on two gateways: 5 pass, the 6th waits a period.
    let mut allowed = 0;
    for i in 0..6 {
        let gw: &dyn SharedRates = if i % 2 == 0 { &a } else { &b };
        let r = gw.take("standard/key:k1", period, 5).await.unwrap();
        if r.allowed {
            allowed += 1;
            assert_eq!(r.remaining, 4 - i as u32, "take {i}");
        } else {
            let wait = r.retry_after.unwrap();
            assert!(wait > Duration::from_secs(9) && wait <= period, "{wait:?}");
        }
    }
    assert_eq!(allowed, 5);
    // Another caller is not affected; pruning keeps callers still ahead of their rate.
    assert!(a.take("standard/key:k2", period, 5).await.unwrap().allowed);
    assert_eq!(b.prune().await.unwrap(), 0);
    let short = Duration::from_millis(1);
    a.take("standard/key:k3", short, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(b.prune().await.unwrap(), 1, "k3 is back at a full burst");
}
