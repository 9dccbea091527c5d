//! A configuration that cannot be used stops start-up with one clear line.

use crate::harness::{repo_root, run};

fn serve_with(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["serve", "--config", path.to_str().unwrap()];
    if config.is_empty() {
        args.truncate(1);
    }
    let data = tmp.path().join("data");
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.push(("DATAGATE_DATA_DIR", data.to_str().unwrap()));
    let out = run(&args, &env, &repo_root());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stderr = stderr.replace(path.to_str().unwrap(), "<FILE>");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn unknown_key_names_file_and_key() {
    let (code, err) = serve_with(
        "[server]\nlisten = \"127.0.0.1:0\"\nlisten_port = 8080\n",
        &[],
    );
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("<FILE>") && err.contains("server.listen_port"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_key() {
    let (code, err) = serve_with("[ingest]\nbatch_rows = \"lots\"\n", &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("<FILE>") && err.contains("ingest.batch_rows"),
        "{err}"
    );
    let (code, err) = serve_with("[server]\nlisten = \"not an address\"\n", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("server.listen"), "{err}");
}

#[test]
fn unknown_section_and_syntax_errors() {
    let (code, err) = serve_with("[sever]\nlisten = \"127.0.0.1:0\"\n", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("sever"), "{err}");
    let (code, err) = serve_with("[server\nlisten = 1\n", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("<FILE>"), "{err}");
}

#[test]
fn bad_environment_override_names_the_variable() {
    let (code, err) = serve_with("", &[("DATAGATE_SERVER__SHUTDOWN_GRACE_SECS", "soon")]);
    assert_ne!(code, 0);
    assert!(
        err.contains("DATAGATE_SERVER__SHUTDOWN_GRACE_SECS"),
        "{err}"
    );
    let (code, err) = serve_with("", &[("DATAGATE_SERVER__NO_SUCH_KEY", "1")]);
    assert_ne!(code, 0);
    assert!(err.contains("server.no_such_key"), "{err}");
}

#[test]
fn unreadable_file() {
    let out = run(
        &["serve", "--config", "/nonexistent/datagate.toml"],
        &[],
        &repo_root(),
    );
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/datagate.toml"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
