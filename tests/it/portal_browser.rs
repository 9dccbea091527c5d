//! The portal in a real browser: Debian's chromium through chromedriver, driven by Selenium
//! (`tests/browser/journeys.py`; chromium, chromium-driver and selenium are installed by
//! `scripts/test.sh`). The journeys: keyboard only (skip link, search, a dataset, the preview's
//! filter, each focus visibly outlined), then every page's text against WCAG AA contrast and
//! every control's label, public and signed in; anonymous search → facet → dataset → filtered
//! preview → CSV download equal to the export API's bytes → SQL console error, marked, then
//! fixed → a table found by name, the edited statement kept, unrun → English; a consumer signs in and applies for a conditional dataset; the department's
//! publisher approves it on the department page, registers a dataset with a masked column,
//! uploads a 50 MB CSV (the progress bar reaches 100%, the version is visible) and a bad CSV
//! (its line and column shown, nothing kept); the consumer then previews exactly the API's
//! masked rows; an auditor filters the log to that consumer (the API's records), verifies the
//! chain and sees the charts; an admin issues a key (shown once, working); hostile titles and
//! values open no dialog. Screenshots of
//! each page at 375 and 1440 px land in `test-artifacts/portal-browser`.

use crate::harness::{Options, Server, admin_env, artifacts, new_key, new_key_with, repo_root};
use serde_json::json;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_journeys_pass_in_chromium() {
    let s = Server::start(Options {
        env: admin_env(&[]),
        ..Options::default()
    })
    .await;
    let consumer = new_key(&s, "consumer", None).await;
    let publisher = new_key_with(
        &s,
        json!({"name": "justice", "role": "publisher", "department": "justice"}),
    )
    .await;
    let auditor = new_key(&s, "auditor", None).await;
    let out = artifacts("portal-browser");
    // Nothing left from an earlier run (a stale FAILED-*.png would mislead).
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let run = Command::new("python3")
        .arg(repo_root().join("tests/browser/journeys.py"))
        .args([
            &s.base,
            crate::harness::ADMIN,
            &consumer,
            &publisher,
            &auditor,
        ])
        .arg(&out)
        .output()
        .expect("python3 runs (scripts/test.sh installs selenium, chromium and chromedriver)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        run.status.success(),
        "browser journeys failed:\n{text}\n--- server log tail ---\n{}",
        s.log_tail(40)
    );
    assert!(text.contains("all journeys passed"), "{text}");
    for page in [
        "catalog",
        "dataset",
        "sql",
        "sql-error",
        "signin",
        "me",
        "apply",
        "dataset-granted",
    ] {
        for width in [375, 1440] {
            let shot = out.join(format!("{page}-{width}.png"));
            assert!(
                std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
                "screenshot {} missing",
                shot.display()
            );
        }
    }
}
