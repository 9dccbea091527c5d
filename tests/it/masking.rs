//! Column sensitivity below the query: a publisher of another department reads the shared
//! `justice.mediation_cases` with masked names, years for dates and no private phone, whatever
//! path it takes; the owning department and admins read it as published.

use crate::harness::{Options, Server, repo_root, run};
use reqwest::Client;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};

const ADMIN: &str = "dg_admin1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn key(s: &Server, role: &str, department: &str) -> String {
    let data_dir = s.data_dir();
    let out = run(
        &[
            "key",
            "create",
            "--name",
            "test",
            "--role",
            role,
            "--department",
            department,
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
        &repo_root(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn sql(c: &Client, s: &Server, key: &str, sql: &str) -> (u16, String) {
    let r = c
        .post(s.url("/api/v1/query"))
        .bearer_auth(key)
        .json(&json!({"sql": sql, "format": "ndjson"}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The sample's party names and phones that appear nowhere in its public columns (a mediator
/// may share a party's name; that is not a leak).
pub(crate) struct Secrets {
    values: HashSet<String>,
    lengths: BTreeSet<usize>,
}

impl Secrets {
    /// The values of `secret` columns of `catalog/<file>` that occur in no public column
    /// (`other_masked` columns are neither secret nor public).
    pub(crate) fn load(file: &str, secret: &[&str], other_masked: &[&str]) -> Self {
        let path = repo_root().join("catalog").join(file);
        let mut r = csv::Reader::from_path(path).unwrap();
        let h = r.headers().unwrap().clone();
        let position = |n: &str| h.iter().position(|x| x == n).unwrap();
        let sensitive: Vec<usize> = secret.iter().map(|n| position(n)).collect();
        let skipped: Vec<usize> = other_masked.iter().map(|n| position(n)).collect();
        let (mut values, mut public) = (HashSet::new(), String::new());
        for rec in r.records() {
            let rec = rec.unwrap();
            for (i, v) in rec.iter().enumerate() {
                if sensitive.contains(&i) {
                    values.insert(v.to_string());
                } else if !skipped.contains(&i) {
                    public.push_str(v);
                    public.push('|');
                }
            }
        }
        values.retain(|v| v.chars().count() >= 2 && !public.contains(v.as_str()));
        let lengths = values.iter().map(|v| v.chars().count()).collect();
        Self { values, lengths }
    }

    /// The first original value found in `text`.
    pub(crate) fn leaked_in(&self, text: &str) -> Option<String> {
        let chars: Vec<char> = text.chars().collect();
        for n in &self.lengths {
            for w in chars.windows(*n) {
                let s: String = w.iter().collect();
                if self.values.contains(&s) {
                    return Some(s);
                }
            }
        }
        None
    }
}

/// `consumer` applies for `justice.legal_aid_cases` (conditional) and `owner`, a justice
/// publisher, approves: the consumer may then read it, masked.
pub(crate) async fn grant_legal_aid(s: &Server, consumer: &str, owner: &str) {
    let c = Client::new();
    let app: Value = c
        .post(s.url("/api/v1/datasets/justice/legal_aid_cases/applications"))
        .bearer_auth(consumer)
        .json(&json!({"purpose": "research"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .post(s.url(&format!(
            "/api/v1/applications/{}/approve",
            app["id"].as_str().unwrap()
        )))
        .bearer_auth(owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn masked_and_private_columns_hold_on_every_path() {
    let s = Server::start(Options {
        env: vec![("DATAGATE_ADMIN_KEY".into(), ADMIN.into())],
        ..Default::default()
    })
    .await;
    let c = Client::new();
    let outsider = key(&s, "publisher", "market");
    let owner = key(&s, "publisher", "justice");
    let secrets = Secrets::load(
        "justice/mediation_cases.csv",
        &["party_a_name", "party_b_name", "party_a_phone"],
        &["concluded_date"],
    );
    assert!(secrets.values.len() > 1000, "{}", secrets.values.len());

    // The owner and admins read it as published.
    for k in [&owner, &ADMIN.to_string()] {
        let (st, body) = sql(
            &c,
            &s,
            k,
            "SELECT party_a_name, party_a_phone FROM justice.mediation_cases",
        )
        .await;
        assert_eq!(st, 200, "{body}");
        assert!(
            secrets.leaked_in(&body).is_some(),
            "the owner sees originals"
        );
    }

    // An outsider: masked values and no private column, through every path.
    let (st, body) = sql(
        &c,
        &s,
        &outsider,
        "SELECT * FROM justice.mediation_cases LIMIT 5",
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let first: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert!(
        first.get("party_a_phone").is_none(),
        "private column absent: {first}"
    );
    assert!(
        first["party_a_name"].as_str().unwrap().contains('*'),
        "{first}"
    );
    if let Some(d) = first["concluded_date"].as_str() {
        assert!(d.ends_with("-01-01"), "dates to the year: {d}");
    }
    let probes = [
        "SELECT party_a_name, party_b_name FROM justice.mediation_cases",
        "SELECT min(party_a_name), max(party_b_name) FROM justice.mediation_cases",
        "SELECT party_a_name FROM justice.mediation_cases WHERE party_a_name LIKE '张%'",
        "SELECT count(*) AS n FROM justice.mediation_cases WHERE party_a_name = '张伟'",
        "SELECT substr(party_a_name, 1, 2) AS s, length(party_a_name) AS l FROM justice.mediation_cases",
        "SELECT CAST(party_a_name AS INT) FROM justice.mediation_cases",
        "SELECT party_a_phone FROM justice.mediation_cases",
        "SELECT m.party_a_name FROM justice.mediation_cases m JOIN justice.mediation_cases n ON m.party_a_name = n.party_b_name LIMIT 3000",
        "EXPLAIN SELECT * FROM justice.mediation_cases WHERE party_a_name = 'x'",
        "SELECT string_agg(party_a_name, ',') FROM justice.mediation_cases",
    ];
    for probe in probes {
        let (st, body) = sql(&c, &s, &outsider, probe).await;
        assert!(st == 200 || st == 400, "{probe}: {st} {body}");
        assert_eq!(secrets.leaked_in(&body), None, "{probe}");
    }
    // A filter on the original value finds nothing: filters see masked values only.
    let (_, body) = sql(
        &c,
        &s,
        &outsider,
        &format!(
            "SELECT count(*) AS n FROM justice.mediation_cases WHERE party_a_name = '{}'",
            secrets.values.iter().find(|v| !v.starts_with('1')).unwrap()
        ),
    )
    .await;
    assert!(body.contains("\"n\":0"), "{body}");
    // Exports and rows pages too, in every format.
    for format in ["json", "ndjson", "csv", "arrow", "parquet"] {
        for path in [
            format!("/api/v1/datasets/justice/mediation_cases/export?format={format}"),
            format!("/api/v1/datasets/justice/mediation_cases/rows?limit=1000&format={format}"),
        ] {
            let r = c
                .get(s.url(&path))
                .bearer_auth(&outsider)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let bytes = r.bytes().await.unwrap();
            // Parquet pages are compressed: decode them to look at the values.
            let text = if format == "parquet" {
                let batches: Vec<_> =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                        .unwrap()
                        .build()
                        .unwrap()
                        .map(|b| b.unwrap())
                        .collect();
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            } else {
                String::from_utf8_lossy(&bytes).into_owned()
            };
            assert_eq!(secrets.leaked_in(&text), None, "{path}");
        }
    }
    // `where` on a private column is an unknown column for an outsider.
    let r = c
        .get(s.url(
            "/api/v1/datasets/justice/mediation_cases/rows?where=party_a_phone%20IS%20NOT%20NULL",
        ))
        .bearer_auth(&outsider)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_granted_consumer_reads_conditional_data_masked_and_hashed() {
    let s = Server::start(Options {
        env: vec![("DATAGATE_ADMIN_KEY".into(), ADMIN.into())],
        ..Default::default()
    })
    .await;
    let c = Client::new();
    let owner = key(&s, "publisher", "justice");
    let consumer = {
        let data_dir = s.data_dir();
        let out = run(
            &[
                "key",
                "create",
                "--name",
                "c",
                "--role",
                "consumer",
                "--data-dir",
                data_dir.to_str().unwrap(),
            ],
            &[],
            &repo_root(),
        );
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    grant_legal_aid(&s, &consumer, &owner).await;

    let secrets = Secrets::load(
        "justice/legal_aid_cases.csv",
        &[
            "applicant_name",
            "applicant_id_number",
            "applicant_phone",
            "lawyer_name",
        ],
        &[],
    );
    assert!(secrets.values.len() > 1000);
    // Hashes are stable: the same lawyer hashes the same in every row, so grouping works.
    let (st, body) = sql(
        &c,
        &s,
        &consumer,
        "SELECT lawyer_name, count(*) AS n FROM justice.legal_aid_cases GROUP BY lawyer_name ORDER BY n DESC LIMIT 3",
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let top: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(top["lawyer_name"].as_str().unwrap().len(), 32, "{top}");
    assert!(top["n"].as_i64().unwrap() > 1);
    for probe in [
        "SELECT * FROM justice.legal_aid_cases",
        "SELECT applicant_id_number FROM justice.legal_aid_cases",
        "SELECT max(applicant_phone), min(applicant_name), max(lawyer_name) FROM justice.legal_aid_cases",
        "SELECT l.lawyer_name, b.line_name FROM justice.legal_aid_cases l JOIN transport.bus_lines b ON l.district = b.operator LIMIT 10",
        "SELECT CAST(applicant_phone AS BIGINT) FROM justice.legal_aid_cases",
        "SELECT CAST(lawyer_name AS DATE) FROM justice.legal_aid_cases",
        "EXPLAIN VERBOSE SELECT * FROM justice.legal_aid_cases WHERE applicant_phone LIKE '138%'",
        "EXPLAIN SELECT * FROM justice.legal_aid_cases WHERE applicant_phone LIKE '138%'",
        "EXPLAIN ANALYZE SELECT * FROM justice.legal_aid_cases WHERE applicant_phone LIKE '138%'",
        "EXPLAIN FORMAT TREE SELECT * FROM justice.legal_aid_cases WHERE applicant_phone LIKE '138%'",
        "SELECT applicant_name FROM justice.legal_aid_cases WHERE substr(applicant_phone, 1, 3) = '138'",
    ] {
        let (st, body) = sql(&c, &s, &consumer, probe).await;
        assert!(st == 200 || st == 400, "{probe}: {st} {body}");
        assert_eq!(secrets.leaked_in(&body), None, "{probe}");
    }
    for format in ["json", "ndjson", "csv", "arrow"] {
        let r = c
            .get(s.url(&format!(
                "/api/v1/datasets/justice/legal_aid_cases/export?format={format}"
            )))
            .bearer_auth(&consumer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned();
        assert_eq!(secrets.leaked_in(&text), None, "export {format}");
    }
}

/// Two edges a fuzz of registrations found answering 500: a `year` mask over dates past 2262
/// (9999-12-31 is a common "no end date") and a dataset of which an outsider sees no column.
#[tokio::test]
async fn far_dates_and_datasets_without_a_visible_column() {
    let s = Server::start(Options {
        env: vec![("DATAGATE_ADMIN_KEY".into(), ADMIN.into())],
        ..Default::default()
    })
    .await;
    let c = Client::new();
    let register = |name: &str, columns: Value| {
        json!({
            "department": "transport", "name": name, "title": name, "access_level": "open",
            "license": "CC-BY-4.0", "tags": [], "update_frequency": "daily", "columns": columns,
        })
    };
    let until = json!([
        {"name": "id", "type": "int64"},
        {"name": "until", "type": "date32", "sensitivity": "masked", "mask": "year"},
        {"name": "at", "type": "timestamp(us)", "sensitivity": "masked", "mask": "year"},
    ]);
    let hidden = json!([{"name": "phone", "type": "utf8", "sensitivity": "private"}]);
    let uploads = [
        (
            "permits",
            until,
            "id,until,at\n1,9999-12-31,9999-12-31T23:59:59\n2,2024-05-06,1900-02-03T04:05:06\n",
        ),
        ("contacts", hidden, "phone\n13812341234\n13912341234\n"),
    ];
    for (name, columns, csv) in uploads {
        let r = c
            .post(s.url("/api/v1/datasets"))
            .bearer_auth(ADMIN)
            .json(&register(name, columns))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        s.publish_csv(&format!("transport/{name}"), "append", csv)
            .await;
    }
    let get = |path: &str| {
        let (c, url) = (c.clone(), s.url(path));
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Anonymous: the years only, on the page and through SQL.
    let (st, page) = get("/api/v1/datasets/transport/permits/rows?order=id").await;
    assert_eq!(st, 200, "{page}");
    let page: Value = serde_json::from_str(&page).unwrap();
    let years: Vec<(&str, &str)> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["until"].as_str().unwrap(), r["at"].as_str().unwrap()))
        .collect();
    assert_eq!(
        years,
        [
            ("9999-01-01", "9999-01-01T00:00:00"),
            ("2024-01-01", "1900-01-01T00:00:00")
        ]
    );
    let r = c
        .post(s.url("/api/v1/query"))
        .json(&json!({
            "sql": "SELECT until FROM transport.permits WHERE until > DATE '5000-01-01'",
            "format": "ndjson",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "{\"until\":\"9999-01-01\"}\n");
    // No visible column: the rows, as SQL and the exports give them, not an error.
    let (st, detail) = get("/api/v1/datasets/transport/contacts").await;
    assert_eq!(st, 200, "{detail}");
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["schema"], json!([]));
    let (st, page) = get("/api/v1/datasets/transport/contacts/rows").await;
    assert_eq!(st, 200, "{page}");
    let page: Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["columns"], json!([]));
    assert_eq!(page["rows"], json!([{}, {}]));
    let (st, ndjson) = get("/api/v1/datasets/transport/contacts/export?format=ndjson").await;
    assert_eq!((st, ndjson.as_str()), (200, "{}\n{}\n"));
    let (st, problem) = get("/api/v1/datasets/transport/contacts/rows?select=phone").await;
    assert_eq!(st, 400, "{problem}");
    assert!(problem.contains("you can see no column"), "{problem}");
}
