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
