//! The PostgreSQL catalog against the conformance suite, on a real server (a fresh database per
//! test), plus what only a shared catalog must do: several gateways migrating and committing
//! against one database at once.

#[path = "../../../tests/support/certs.rs"]
mod certs;
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
        compacted: Vec::new(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sessions_are_shared_expire_and_end_per_key() {
    use datagate_catalog::sessions::{SessionLimits, SharedSessions, StoredSession};
    use std::time::Duration;
    let url = pg::server().fresh_database();
    let a = PostgresCatalog::connect(&url, 2).await.unwrap();
    let b = PostgresCatalog::connect(&url, 2).await.unwrap();
    let limits = SessionLimits {
        idle: Duration::from_secs(60),
        max_age: Duration::from_secs(600),
        max_sessions: 3,
    };
    let session = |id: &str, key: &str| StoredSession {
        id_hash: id.into(),
        key_id: key.into(),
        sealed_key: id.as_bytes().to_vec(),
    };
    // Started on one gateway, found on the other.
    a.start_session(session("s1", "k1"), limits).await.unwrap();
    a.start_session(session("s2", "k1"), limits).await.unwrap();
    a.start_session(session("s3", "k2"), limits).await.unwrap();
    assert_eq!(
        b.touch_session("s1", limits).await.unwrap(),
        Some(b"s1".to_vec())
    );
    assert_eq!(b.touch_session("nope", limits).await.unwrap(), None);
    // A fourth: the least recently seen (s2; s1 was just seen, s3 is newer) makes room.
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.touch_session("s3", limits).await.unwrap();
    b.start_session(session("s4", "k3"), limits).await.unwrap();
    assert_eq!(a.touch_session("s2", limits).await.unwrap(), None);
    assert!(a.touch_session("s1", limits).await.unwrap().is_some());
    // A key's sessions end together; others stay.
    b.end_key_sessions("k1").await.unwrap();
    assert_eq!(a.touch_session("s1", limits).await.unwrap(), None);
    assert!(a.touch_session("s3", limits).await.unwrap().is_some());
    a.end_session("s3").await.unwrap();
    assert_eq!(b.touch_session("s3", limits).await.unwrap(), None);
    // Idle past the limit: gone, and forgotten.
    let short = SessionLimits {
        idle: Duration::from_millis(50),
        ..limits
    };
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(a.touch_session("s4", short).await.unwrap(), None);
    let left = pg::server().psql(&url, "SELECT count(*) FROM portal_sessions");
    assert_eq!(left, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_speaks_verified_tls_when_its_url_asks() {
    let url = pg::server().fresh_database();
    let tls = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        pg::server().ca_file()
    );
    let store = PostgresCatalog::connect(&tls, 2).await.unwrap();
    store
        .create_department(NewDepartment {
            id: "transport".into(),
            name: "交通运输局".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let encrypted = pg::server().psql(
        &url,
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND datname = current_database() AND pid <> pg_backend_pid()",
    );
    assert!(
        encrypted.parse::<u32>().unwrap() >= 1,
        "the gateway's connections are TLS: {encrypted}"
    );
    // A CA that did not sign the server's certificate: refused, saying why.
    let other = tempfile::tempdir().unwrap();
    let other = certs::test_certificates(other.path());
    let refused = PostgresCatalog::connect(
        &format!("{url}?sslmode=require&sslrootcert={}", other.ca),
        1,
    )
    .await;
    let Err(e) = refused else {
        panic!("an unknown issuer is refused")
    };
    assert!(e.to_string().contains("certificate"), "{e}");
}
