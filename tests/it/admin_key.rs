//! The first admin key (API.md §1).

use crate::harness::{Options, Server};
use std::os::unix::fs::PermissionsExt;

fn stored_keys(data_dir: &std::path::Path) -> Vec<(String, String, String)> {
    let c = rusqlite::Connection::open(data_dir.join("catalog.sqlite")).unwrap();
    let mut stmt = c
        .prepare("SELECT id, role, secret_hash FROM api_keys")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn grep_dir(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(grep_dir(&p, needle));
        } else if p.file_name().is_some_and(|n| n != "admin.key")
            && std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        {
            hits.push(p);
        }
    }
    hits
}

#[tokio::test]
async fn generated_admin_key_is_written_0600_and_never_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = Server::start_in(&data, Options::default()).await;
    let path = data.join("admin.key");
    let key = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(key.starts_with("dg_"), "{key}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = key.rsplit('_').next().unwrap().to_string();
    assert!(secret.len() >= 64);
    let log = s.log_text();
    assert!(log.contains("admin.key"), "the log says where the key is");
    assert!(
        !log.contains(&secret),
        "the log must not contain the secret"
    );
    let keys = stored_keys(&data);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].1, "admin");
    assert!(key.contains(&keys[0].0));
    assert_ne!(keys[0].2, secret, "only a hash is stored");
    assert!(s.terminate().success());
    assert!(
        grep_dir(&data, &secret).is_empty(),
        "the secret is stored nowhere but admin.key"
    );
    // A second start keeps the key.
    let s2 = Server::start_in(&data, Options::default()).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), key);
    assert_eq!(stored_keys(&data).len(), 1);
    drop(s2);
}

#[tokio::test]
async fn configured_admin_key_is_registered_without_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = format!("dg_ops1_{}", "a1b2c3d4".repeat(8));
    let opts = Options {
        env: vec![("DATAGATE_ADMIN_KEY".into(), key.clone())],
        ..Default::default()
    };
    let s = Server::start_in(&data, opts.clone()).await;
    assert!(!data.join("admin.key").exists());
    let keys = stored_keys(&data);
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].0.as_str(), keys[0].1.as_str()), ("ops1", "admin"));
    assert!(!s.log_text().contains(&"a1b2c3d4".repeat(8)));
    drop(s);
    // Restarting with the same key is fine; a malformed key stops start-up.
    drop(Server::start_in(&data, opts).await);
    let out = crate::harness::run(
        &["serve"],
        &[
            ("DATAGATE_DATA_DIR", data.to_str().unwrap()),
            ("DATAGATE_ADMIN_KEY", "dg_short"),
            ("DATAGATE_LISTEN", "127.0.0.1:0"),
        ],
        &crate::harness::repo_root(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DATAGATE_ADMIN_KEY"), "{err}");
}
