//! The `datagate` command line: `gen`, `load` and `key`.
//!
//! These tests also make `cargo test --workspace` build the binary that the black-box tests
//! in the repository's root `tests/` spawn.

use std::process::Command;

fn datagate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_datagate"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn gen_is_deterministic_and_writes_files_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    for out in [&a, &b] {
        let st = datagate()
            .args([
                "gen",
                "market_entities",
                "--rows",
                "70000",
                "--seed",
                "5",
                "--out",
            ])
            .arg(out)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(x, y, "same seed, same bytes");
    assert_eq!(x.iter().filter(|b| **b == b'\n').count(), 70_001);
    assert!(!dir.path().join("a.partial").exists());
    let p = dir.path().join("a.parquet");
    let st = datagate()
        .args([
            "gen",
            "air_quality",
            "--rows",
            "1000",
            "--format",
            "parquet",
            "--out",
        ])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(&std::fs::read(&p).unwrap()[..4], b"PAR1");
}

#[test]
fn gen_rejects_unknown_kinds() {
    let out = datagate().args(["gen", "unicorns"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("market_entities"));
}

#[test]
fn load_appends_versions_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let manifests = dir.path().join("catalog/transport");
    std::fs::create_dir_all(&manifests).unwrap();
    // Where `cargo test` runs it, not only where it was compiled (see harness::repo_root).
    let repo = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..");
    std::fs::write(manifests.join("department.toml"), "name = \"交通运输局\"\n").unwrap();
    let manifest = std::fs::read_to_string(repo.join("catalog/transport/bus_stops.toml"))
        .unwrap()
        .replace("data = \"bus_stops.csv\"\n", "");
    std::fs::write(manifests.join("bus_stops.toml"), manifest).unwrap();
    let csv = dir.path().join("more.csv");
    let st = datagate()
        .args(["gen", "bus_stops", "--rows", "250", "--out"])
        .arg(&csv)
        .status()
        .unwrap();
    assert!(st.success());

    // The dataset is registered by a (short-lived) serve with manifests; use load twice.
    let mut serve = datagate()
        .current_dir(dir.path())
        .args(["serve"])
        .env("DATAGATE_DATA_DIR", &data)
        .env("DATAGATE_LISTEN", "127.0.0.1:0")
        .env("DATAGATE_CATALOG_MANIFESTS", dir.path().join("catalog"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the catalog file holds the dataset, then stop the server.
    let start = std::time::Instant::now();
    let mut buf = String::new();
    {
        use std::io::BufRead;
        let stderr = serve.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        while start.elapsed() < std::time::Duration::from_secs(60) {
            match lines.next() {
                Some(Ok(l)) => {
                    buf.push_str(&l);
                    if l.contains("listening") {
                        break;
                    }
                }
                _ => break,
            }
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(buf.contains("listening"), "{buf}");

    for expected in [
        "version 1 (append), 250 rows added, 250 rows in all",
        "version 2 (append), 250 rows added, 500 rows in all",
    ] {
        let out = datagate()
            .current_dir(dir.path())
            .args(["load", "transport/bus_stops"])
            .arg(&csv)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(expected), "{text}");
    }
    let out = datagate()
        .current_dir(dir.path())
        .args(["load", "transport/nothing"])
        .arg(&csv)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn keys_are_created_listed_and_revoked_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        let out = datagate()
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .env("DATAGATE_CATALOG_MANIFESTS", "")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    // Before the first start: the data directory is made, and the command says so (a key in a
    // mistyped directory would otherwise go where no gateway reads it, without a word).
    let (ok, key, err) = run(&["key", "create", "--name", "app", "--role", "consumer"]);
    assert!(ok);
    assert!(
        err.contains(&format!("created a new data directory {}", data.display())),
        "{err}"
    );
    let key = key.trim();
    assert!(key.starts_with("dg_"), "{key}");
    let id = key.split('_').nth(1).unwrap();
    let secret = key.rsplit('_').next().unwrap();
    let (ok, list, err) = run(&["key", "list"]);
    assert!(ok);
    assert!(!err.contains("created"), "{err}");
    assert!(
        list.contains(id) && list.contains("active") && !list.contains(secret),
        "{list}"
    );
    let (ok, _, err) = run(&["key", "create", "--name", "p", "--role", "publisher"]);
    assert!(!ok && err.contains("--department"), "{err}");
    // The catalog's rules hold here as over the API: no key born expired, none without a name.
    let (ok, _, err) = run(&[
        "key",
        "create",
        "--name",
        "old",
        "--role",
        "consumer",
        "--expires-at",
        "2020-01-01T00:00:00Z",
    ]);
    assert!(!ok && err.contains("expires_at is in the past"), "{err}");
    let (ok, _, err) = run(&["key", "create", "--name", " ", "--role", "consumer"]);
    assert!(!ok && err.contains("name is empty"), "{err}");
    let (ok, _, _) = run(&["key", "revoke", id]);
    assert!(ok);
    let (_, list, _) = run(&["key", "list"]);
    assert!(list.contains("revoked"), "{list}");
    let (ok, _, err) = run(&["key", "revoke", "nosuchkey"]);
    assert!(!ok && err.contains("not found"), "{err}");
}
