//! The OpenAPI document is the contract client generators and API gateways take at their word
//! (API.md §5 Ops): an outside OpenAPI 3.1 validator accepts it, and a property-based API
//! fuzzer (schemathesis, pinned in tests/requirements.txt) finds no answer it does not
//! describe — no 5xx, no undocumented status, content type or header, no body off its schema,
//! no operation that ignores its security — over every operation, stateful links included.

use crate::harness::{ADMIN, Options, Server, admin_env, artifacts, repo_root};
use serde_json::Value;
use std::process::Command;

/// Runs `python3 -c <code> <args>` in `dir` and returns (success, stdout + stderr).
fn python(dir: &std::path::Path, code: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("python3 runs (scripts/test.sh installs tests/requirements.txt)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Checks each object schema's `examples` against the schema (argv[1]: the document).
const CHECK_EXAMPLES: &str = r#"
import sys, json
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
d = json.load(open(sys.argv[1]))
doc = Resource.from_contents(d, default_specification=DRAFT202012)
registry = Registry().with_resource("urn:openapi", doc)
errors, checked = [], 0
for name, schema in sorted(d["components"]["schemas"].items()):
    if "enum" in schema:
        continue
    examples = schema.get("examples")
    if not examples:
        errors.append(f"{name}: no example")
        continue
    v = Draft202012Validator({"$ref": f"urn:openapi#/components/schemas/{name}"},
                             registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)
    props = schema.get("properties")
    for ex in examples:
        checked += 1
        errors += [f"{name}: {e.message} at {'/'.join(map(str, e.absolute_path))}"
                   for e in v.iter_errors(ex)]
        # A problem may carry fields that help (line, column, ...); nothing else may.
        if props is not None and name != "Problem":
            errors += [f"{name}: the example has {k!r}, which the schema does not declare"
                       for k in ex if k not in props]
print("\n".join(errors) if errors else f"{checked} examples valid")
sys.exit(1 if errors else 0)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openapi_31_validator_accepts_the_document() {
    let s = Server::start(Options::default()).await;
    let (status, doc) = s.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (ok, out) = python(
        &repo_root(),
        "import sys; from openapi_spec_validator import validate; \
         from openapi_spec_validator.readers import read_from_filename; \
         d, _ = read_from_filename(sys.argv[1]); validate(d); print('valid')",
        &[file.to_str().unwrap()],
    );
    assert!(ok && out.contains("valid"), "validator refused: {out}");
    // Every object schema carries an example, and each example is valid by its schema (JSON
    // Schema 2020-12, formats checked) and names no field the schema does not declare.
    let (ok, out) = python(&repo_root(), CHECK_EXAMPLES, &[file.to_str().unwrap()]);
    assert!(ok && out.contains("examples valid"), "examples: {out}");

    // What the layers answer is in the document, operation by operation.
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let id = op["operationId"].as_str().unwrap();
            for (status, r) in responses {
                if status.as_str() >= "400" {
                    assert!(
                        r["content"].get("application/problem+json").is_some(),
                        "{method} {path} {status}: errors are problem+json"
                    );
                }
                assert!(
                    r["headers"].get("X-Request-Id").is_some(),
                    "{method} {path} {status}"
                );
            }
            if path.starts_with("/api/") {
                for status in ["401", "429", "503", "500"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
                assert!(responses["429"]["headers"].get("Retry-After").is_some());
                let security = op["security"].as_array().unwrap();
                assert!(!security.is_empty(), "{id}: security");
            }
        }
    }
    let rows = &paths["/api/v1/datasets/{dept}/{name}/rows"]["get"]["responses"]["200"];
    for media in [
        "application/json",
        "application/x-ndjson",
        "text/csv; charset=utf-8",
        "text/csv; charset=gb18030",
        "application/vnd.apache.arrow.stream",
        "application/vnd.apache.parquet",
    ] {
        assert!(
            rows["content"].get(media).is_some(),
            "rows 200 lacks {media}"
        );
    }
    // An upload's body in each format it is taken in.
    let upload = &paths["/api/v1/datasets/{dept}/{name}/versions"]["post"]["requestBody"];
    for media in [
        "text/csv",
        "text/tab-separated-values",
        "application/x-ndjson",
        "application/vnd.apache.parquet",
        "application/vnd.apache.arrow.stream",
        "application/vnd.apache.arrow.file",
    ] {
        assert!(
            upload["content"].get(media).is_some(),
            "upload lacks {media}: {upload}"
        );
    }
    for header in [
        "ETag",
        "X-Dataset-Versions",
        "RateLimit",
        "RateLimit-Policy",
    ] {
        assert!(
            rows["headers"].get(header).is_some(),
            "rows 200 lacks {header}"
        );
    }
    // Parameters are typed: numbers as integers, closed vocabularies as enumerations.
    let rows_params = paths["/api/v1/datasets/{dept}/{name}/rows"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let param = |name: &str| {
        rows_params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("rows has {name}"))
            .clone()
    };
    assert_eq!(param("limit")["schema"]["type"], "integer");
    assert_eq!(param("timeout_ms")["schema"]["type"], "integer");
    assert_eq!(param("bom")["schema"]["type"], "boolean");
    assert_eq!(param("charset")["schema"]["type"], "string");
    assert_eq!(
        param("format")["schema"]["$ref"],
        "#/components/schemas/FormatName"
    );
    assert_eq!(
        doc["components"]["schemas"]["FormatName"]["enum"],
        serde_json::json!(["json", "ndjson", "csv", "arrow", "parquet"])
    );
    // Anonymous callers may read open data, not publish it.
    assert_eq!(
        paths["/api/v1/datasets/{dept}/{name}/rows"]["get"]["security"],
        serde_json::json!([{}, {"bearer": []}])
    );
    assert_eq!(
        paths["/api/v1/datasets"]["post"]["security"],
        serde_json::json!([{"bearer": []}])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        Value::from("bearer")
    );
    // Stateful links: create → read → change → delete.
    let links = &paths["/api/v1/datasets"]["post"]["responses"]["201"]["links"];
    for to in ["get_dataset", "upload_version", "unpublish_dataset"] {
        assert_eq!(links[to]["operationId"], Value::from(to));
    }
}

/// The fuzzer's run: one seed, a bounded number of examples per operation, every phase
/// (examples, coverage, fuzzing, stateful). Checks left out, and why:
/// - `positive_data_acceptance`: SQL text, `where` expressions and catalog names are valid or
///   not by grammar and catalog, which JSON Schema cannot say; a 400 for a bad one is the
///   documented answer, not a mismatch.
/// - `negative_data_rejection`: likewise, unknown query parameters are ignored by design.
fn fuzz(base: &str, key: &str, selection: &[&str], report: &std::path::Path) -> (bool, String) {
    let mut args: Vec<String> = vec![
        "run".into(),
        format!("{base}/openapi.json"),
        "--header".into(),
        format!("Authorization: Bearer {key}"),
        "--checks".into(),
        "all".into(),
        "--exclude-checks".into(),
        "positive_data_acceptance,negative_data_rejection".into(),
        "--max-examples".into(),
        "25".into(),
        "--seed".into(),
        "20261130".into(),
        "--workers".into(),
        "2".into(),
        "--request-timeout".into(),
        "30".into(),
        "--generation-database".into(),
        "none".into(),
        "--no-color".into(),
        "--report".into(),
        "junit".into(),
        "--report-junit-path".into(),
        report.to_string_lossy().into_owned(),
    ];
    args.extend(selection.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    // In the artifacts directory: schemathesis keeps a cache where it runs, and reads its
    // configuration there. A 504 is the documented answer to a query that runs past the
    // `timeout_ms` its client chose (the fuzzer sends 1 ms): not a server fault. Every other
    // 5xx fails the run.
    let dir = report.parent().expect("the report's directory");
    std::fs::write(
        dir.join("schemathesis.toml"),
        "[checks.not_a_server_error]\nexpected-statuses = [\"2xx\", \"3xx\", \"4xx\", \"504\"]\n",
    )
    .unwrap();
    python(
        dir,
        "import sys; from schemathesis.cli import schemathesis; \
         sys.argv = ['st'] + sys.argv[1:]; schemathesis()",
        &refs,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_fuzzer_finds_no_mismatch_with_the_document() {
    let s = Server::start(Options {
        env: admin_env(&[]),
        ..Default::default()
    })
    .await;
    let report = artifacts("schemathesis");
    // Every operation but the two that can revoke or demote the fuzzer's own key, which would
    // leave the rest of the run anonymous; those two run last, on their own.
    let (ok, out) = fuzz(
        &s.base,
        ADMIN,
        &[
            "--exclude-operation-id",
            "revoke_key",
            "--exclude-operation-id",
            "update_key",
        ],
        &report.join("main.xml"),
    );
    std::fs::write(report.join("main.log"), &out).unwrap();
    // What failed, from the first failure or error section on (the whole run is in main.log).
    let from = out
        .find("FAILURES")
        .or_else(|| out.find("ERRORS"))
        .unwrap_or(out.len().saturating_sub(4000));
    let tail: String = out[from..].chars().take(8000).collect();
    assert!(
        ok,
        "schemathesis found mismatches:\n{tail}\n--- server log tail ---\n{}",
        s.log_tail(40)
    );
    assert!(out.contains("Stateful"), "the stateful phase ran:\n{tail}");
    let (ok, out) = fuzz(
        &s.base,
        ADMIN,
        &[
            "--include-operation-id",
            "revoke_key",
            "--include-operation-id",
            "update_key",
        ],
        &report.join("keys.xml"),
    );
    assert!(ok, "schemathesis found mismatches on key changes:\n{out}");
    // Nothing the fuzzer sent was answered with a 5xx, by the server's own account either.
    let log = s.log_text();
    assert!(!log.contains("\"status\":500"), "a 500 in the server log");
}
