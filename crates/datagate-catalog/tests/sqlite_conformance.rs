//! The SQLite catalog against the conformance suite, in a real database file.

use datagate_catalog::{CatalogStore, SqliteCatalog};
use std::sync::Arc;

datagate_catalog::catalog_conformance_tests!(async {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteCatalog::open(&dir.path().join("catalog.sqlite")).unwrap();
    (Arc::new(store) as Arc<dyn CatalogStore>, dir)
});

#[tokio::test]
async fn reopening_keeps_data_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    {
        let s = SqliteCatalog::open(&path).unwrap();
        s.create_department(datagate_catalog::NewDepartment {
            id: "market".into(),
            name: "市场监督管理局".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    }
    let s = SqliteCatalog::open(&path).unwrap();
    assert!(s.get_department("market").await.unwrap().is_some());
    let conn = rusqlite_check(&path);
    assert_eq!(conn.0, "wal");
    assert!(conn.1 >= 1, "migrations recorded in user_version");
}

fn rusqlite_check(path: &std::path::Path) -> (String, i64) {
    // Read the file's own settings with the sqlite3 library through a fresh connection.
    let c = rusqlite::Connection::open(path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    (mode, v)
}

/// A key read through one catalog, changed through another connection to the same file (the
/// CLI beside a running server): the first sees the change on its very next read.
#[tokio::test]
async fn a_key_changed_by_another_process_is_seen_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    let server = SqliteCatalog::open(&path).unwrap();
    server
        .create_key(datagate_catalog::NewApiKey {
            id: "k1".into(),
            name: "k1".into(),
            role: datagate_catalog::Role::Consumer,
            department: None,
            tier: "standard".into(),
            secret_hash: "0".repeat(64),
            created_by: "test".into(),
            expires_at: None,
        })
        .await
        .unwrap();
    for _ in 0..3 {
        let (k, grants) = server.get_key_and_grants("k1").await.unwrap().unwrap();
        assert!(k.revoked_at.is_none() && grants.is_empty());
    }
    assert_eq!(server.get_key_and_grants("k2").await.unwrap(), None);

    // Another catalog on the same file, as `datagate key revoke` opens it.
    let cli = SqliteCatalog::open(&path).unwrap();
    cli.revoke_key("k1").await.unwrap();
    let (k, _) = server.get_key_and_grants("k1").await.unwrap().unwrap();
    assert!(k.revoked_at.is_some(), "the revocation holds at once");

    // And a plain sqlite3 connection writing behind both.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE api_keys SET tier = 'premium' WHERE id = 'k1'", [])
        .unwrap();
    let (k, _) = server.get_key_and_grants("k1").await.unwrap().unwrap();
    assert_eq!(k.tier, "premium");
    raw.execute(
        "INSERT INTO api_keys (id, name, role, tier, secret_hash, created_by, created_at) \
         SELECT 'k2', name, role, tier, secret_hash, created_by, created_at FROM api_keys WHERE id = 'k1'",
        [],
    )
    .unwrap();
    assert!(server.get_key_and_grants("k2").await.unwrap().is_some());
}
