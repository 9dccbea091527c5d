//! Identity and access (API.md §3, §4, §5 "Applications and grants", "Keys"): the
//! authorisation matrix over every principal × open level × endpoint, generated from the
//! access table; the application workflow; key lifecycle; bad keys; secrets never written.

use crate::harness::{Options, Server};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ADMIN: &str = "dg_admin1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn server() -> Server {
    Server::start(Options {
        env: vec![("DATAGATE_ADMIN_KEY".into(), ADMIN.into())],
        ..Default::default()
    })
    .await
}

struct Api<'a> {
    s: &'a Server,
    c: Client,
}

impl<'a> Api<'a> {
    fn new(s: &'a Server) -> Self {
        Self {
            s,
            c: Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.c.request(method, self.s.url(path));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let st = r.status();
        let text = r.text().await.unwrap();
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, key, None).await
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, key, Some(body))
            .await
    }

    async fn key(&self, role: &str, department: Option<&str>, expires_in: Option<i64>) -> String {
        let mut body = json!({"name": format!("{role} test key"), "role": role});
        if let Some(d) = department {
            body["department"] = json!(d);
        }
        if let Some(secs) = expires_in {
            body["expires_at"] =
                json!((chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339());
        }
        let (st, out) = self.post("/api/v1/keys", Some(ADMIN), body).await;
        assert_eq!(st, 201, "{out}");
        out["key"].as_str().unwrap().to_string()
    }

    /// A consumer applies for legal_aid_cases and the justice publisher approves.
    async fn grant(&self, consumer: &str, publisher: &str, expires_in: Option<i64>) -> String {
        let (st, app) = self
            .post(
                "/api/v1/datasets/justice/legal_aid_cases/applications",
                Some(consumer),
                json!({"purpose": "研究法律援助覆盖率"}),
            )
            .await;
        assert_eq!(st, 201, "{app}");
        assert_eq!(app["status"], "pending");
        let body = match expires_in {
            Some(s) => {
                json!({"expires_at": (chrono::Utc::now() + chrono::Duration::seconds(s)).to_rfc3339()})
            }
            None => json!({}),
        };
        let (st, grant) = self
            .post(
                &format!(
                    "/api/v1/applications/{}/approve",
                    app["id"].as_str().unwrap()
                ),
                Some(publisher),
                body,
            )
            .await;
        assert_eq!(st, 201, "{grant}");
        grant["id"].as_str().unwrap().to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Anonymous,
    Consumer,
    ConsumerWithGrant,
    ConsumerExpiredGrant,
    ConsumerRevokedGrant,
    PublisherOwn,
    PublisherOther,
    Auditor,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Level {
    Open,
    Conditional,
    Shared,
}

/// API.md §4, "catalog entry visible to".
fn sees(who: Who, level: Level) -> bool {
    match level {
        Level::Open | Level::Conditional => true,
        Level::Shared => matches!(
            who,
            Who::PublisherOwn | Who::PublisherOther | Who::Admin | Who::Auditor
        ),
    }
}

/// API.md §4, "data readable by".
fn reads(who: Who, level: Level) -> bool {
    match level {
        Level::Open => true,
        Level::Conditional => {
            matches!(who, Who::ConsumerWithGrant | Who::PublisherOwn | Who::Admin)
        }
        Level::Shared => matches!(who, Who::PublisherOwn | Who::PublisherOther | Who::Admin),
    }
}

#[tokio::test]
async fn the_authorisation_matrix_follows_the_access_table() {
    let s = server().await;
    let api = Api::new(&s);
    let own = api.key("publisher", Some("justice"), None).await;
    let other = api.key("publisher", Some("market"), None).await;
    let auditor = api.key("auditor", None, None).await;
    let consumer = api.key("consumer", None, None).await;
    let granted = api.key("consumer", None, None).await;
    let expired = api.key("consumer", None, None).await;
    let revoked = api.key("consumer", None, None).await;
    api.grant(&granted, &own, None).await;
    api.grant(&expired, &own, Some(2)).await;
    let g = api.grant(&revoked, &own, None).await;
    let (st, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/grants/{g}"),
            Some(&own),
            None,
        )
        .await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let principals: Vec<(Who, Option<&str>)> = vec![
        (Who::Anonymous, None),
        (Who::Consumer, Some(&consumer)),
        (Who::ConsumerWithGrant, Some(&granted)),
        (Who::ConsumerExpiredGrant, Some(&expired)),
        (Who::ConsumerRevokedGrant, Some(&revoked)),
        (Who::PublisherOwn, Some(&own)),
        (Who::PublisherOther, Some(&other)),
        (Who::Auditor, Some(&auditor)),
        (Who::Admin, Some(ADMIN)),
    ];
    let datasets = [
        (Level::Open, "transport", "bus_lines"),
        (Level::Conditional, "justice", "legal_aid_cases"),
        (Level::Shared, "justice", "mediation_cases"),
    ];
    let mut checked = 0;
    for (who, key) in &principals {
        let (_, list) = api.get("/api/v1/datasets?limit=1000", *key).await;
        let listed: Vec<String> = list["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["department"].as_str().unwrap(),
                    d["name"].as_str().unwrap()
                )
            })
            .collect();
        let (_, dcat) = api.get("/catalog/data.json", *key).await;
        let dcat = dcat.to_string();
        let (_, depts) = api.get("/api/v1/departments", *key).await;
        let justice_count = depts
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == "justice")
            .map(|d| d["dataset_count"].as_u64().unwrap())
            .unwrap();
        let justice_expected = datasets
            .iter()
            .filter(|(l, d, _)| *d == "justice" && sees(*who, *l))
            .count() as u64;
        assert_eq!(
            justice_count, justice_expected,
            "{who:?} justice dataset_count"
        );
        for (level, dept, name) in datasets {
            let see = sees(*who, level);
            let read = reads(*who, level);
            let ctx = format!("{who:?} × {level:?}");
            assert_eq!(
                listed.contains(&format!("{dept}/{name}")),
                see,
                "{ctx}: listing"
            );
            assert_eq!(
                dcat.contains(&format!("/{dept}/{name}/export")),
                see,
                "{ctx}: DCAT"
            );
            let status = |st: StatusCode| st.as_u16();
            let detail = api
                .get(&format!("/api/v1/datasets/{dept}/{name}"), *key)
                .await
                .0;
            assert_eq!(status(detail), if see { 200 } else { 404 }, "{ctx}: detail");
            let versions = api
                .get(&format!("/api/v1/datasets/{dept}/{name}/versions"), *key)
                .await
                .0;
            assert_eq!(
                status(versions),
                if see { 200 } else { 404 },
                "{ctx}: versions"
            );
            let data = if !see {
                404
            } else if !read {
                403
            } else {
                200
            };
            for endpoint in ["rows?limit=1", "export?format=csv"] {
                let (st, body) = api
                    .get(&format!("/api/v1/datasets/{dept}/{name}/{endpoint}"), *key)
                    .await;
                assert_eq!(status(st), data, "{ctx}: {endpoint}: {body}");
            }
            let (st, body) = api
                .post(
                    "/api/v1/query",
                    *key,
                    json!({"sql": format!("SELECT count(*) AS n FROM {dept}.{name}")}),
                )
                .await;
            assert_eq!(
                status(st),
                if read { 200 } else { 400 },
                "{ctx}: SQL {body}"
            );
            if !read {
                assert!(
                    body["detail"].as_str().unwrap().contains("not found"),
                    "{ctx}: {body}"
                );
            }
            // Managing the dataset (here: a metadata edit) is for its department and admins;
            // an anonymous caller is told it needs a key (401, whatever the dataset: that
            // reveals nothing); for a key, what it cannot see stays 404.
            let manages =
                matches!(who, Who::Admin) || (*who == Who::PublisherOwn && dept == "justice");
            let (st, body) = api
                .call(
                    reqwest::Method::PATCH,
                    &format!("/api/v1/datasets/{dept}/{name}"),
                    *key,
                    Some(json!({"update_frequency": "monthly"})),
                )
                .await;
            let expected = if key.is_none() {
                401
            } else if !see {
                404
            } else if manages {
                200
            } else {
                403
            };
            assert_eq!(status(st), expected, "{ctx}: PATCH {body}");
            checked += 1;
        }
    }
    assert_eq!(checked, principals.len() * datasets.len());
}

#[tokio::test]
async fn applications_flow_from_request_to_revocation() {
    let s = server().await;
    let api = Api::new(&s);
    let own = api.key("publisher", Some("justice"), None).await;
    let other = api.key("publisher", Some("market"), None).await;
    let consumer = api.key("consumer", None, None).await;
    let rows = "/api/v1/datasets/justice/legal_aid_cases/rows?limit=5";
    assert_eq!(api.get(rows, Some(&consumer)).await.0, 403);

    // Applying: consumers only, conditional datasets only, with a purpose.
    let apply = "/api/v1/datasets/justice/legal_aid_cases/applications";
    assert_eq!(api.post(apply, None, json!({"purpose": "x"})).await.0, 401);
    assert_eq!(
        api.post(apply, Some(&other), json!({"purpose": "x"}))
            .await
            .0,
        403
    );
    assert_eq!(
        api.post(apply, Some(&consumer), json!({"purpose": " "}))
            .await
            .0,
        422
    );
    let (st, _) = api
        .post(
            "/api/v1/datasets/transport/bus_lines/applications",
            Some(&consumer),
            json!({"purpose": "x"}),
        )
        .await;
    assert_eq!(st, 422, "open data needs no application");
    let (st, _) = api
        .post(
            "/api/v1/datasets/justice/mediation_cases/applications",
            Some(&consumer),
            json!({"purpose": "x"}),
        )
        .await;
    assert_eq!(st, 404, "a shared dataset does not exist for a consumer");
    let (st, app) = api
        .post(apply, Some(&consumer), json!({"purpose": "课题研究"}))
        .await;
    assert_eq!(st, 201);
    let id = app["id"].as_str().unwrap().to_string();
    // One open application per dataset and key: a second one while it waits is a 409 naming it.
    let (st, dup) = api
        .post(apply, Some(&consumer), json!({"purpose": "再来一次"}))
        .await;
    assert_eq!(
        (st.as_u16(), dup["application_id"].as_str()),
        (409, Some(id.as_str())),
        "{dup}"
    );

    // Who sees it.
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&api.get("/api/v1/applications", Some(&consumer)).await.1),
        vec![id.clone()]
    );
    assert_eq!(
        ids(&api
            .get("/api/v1/applications?status=pending", Some(&own))
            .await
            .1),
        vec![id.clone()]
    );
    assert!(ids(&api.get("/api/v1/applications", Some(&other)).await.1).is_empty());
    assert!(ids(&api.get("/api/v1/applications", Some(ADMIN)).await.1).contains(&id));
    assert_eq!(
        api.get("/api/v1/applications?status=maybe", Some(&own))
            .await
            .0,
        400
    );

    // Deciding: the owning department or an admin.
    let approve = format!("/api/v1/applications/{id}/approve");
    assert_eq!(api.post(&approve, Some(&other), json!({})).await.0, 404);
    assert_eq!(api.post(&approve, Some(&consumer), json!({})).await.0, 403);
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    assert_eq!(
        api.post(&approve, Some(&own), json!({"expires_at": past}))
            .await
            .0,
        422
    );
    let (st, grant) = api.post(&approve, Some(&own), json!({})).await;
    assert_eq!(st, 201, "{grant}");
    assert_eq!(api.post(&approve, Some(&own), json!({})).await.0, 409);

    // Access follows the grant at once, with masked and private columns as for outsiders.
    let (st, page) = api.get(rows, Some(&consumer)).await;
    assert_eq!(st, 200, "{page}");
    let columns: Vec<&str> = page["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(!columns.contains(&"applicant_id_number"), "{columns:?}");
    assert!(
        page["rows"][0]["applicant_name"]
            .as_str()
            .unwrap()
            .contains('*')
    );
    let (_, me) = api.get("/api/v1/me", Some(&consumer)).await;
    assert_eq!(me["grants"][0]["dataset"], "justice/legal_aid_cases");
    // Nothing to apply for while the grant is in force.
    let (st, dup) = api
        .post(apply, Some(&consumer), json!({"purpose": "延期"}))
        .await;
    assert_eq!(
        (st.as_u16(), dup["grant_id"].as_str()),
        (409, grant["id"].as_str()),
        "{dup}"
    );

    // Revocation is effective on the next request.
    let gid = grant["id"].as_str().unwrap();
    let (st, revoked) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/grants/{gid}"),
            Some(&own),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert!(revoked["revoked_at"].is_string());
    assert!(revoked["revoked_by"].is_string());
    assert_eq!(api.get(rows, Some(&consumer)).await.0, 403);

    // Rejection keeps its reason.
    let (_, app2) = api
        .post(apply, Some(&consumer), json!({"purpose": "again"}))
        .await;
    let reject = format!(
        "/api/v1/applications/{}/reject",
        app2["id"].as_str().unwrap()
    );
    assert_eq!(
        api.post(&reject, Some(&own), json!({"reason": ""})).await.0,
        422
    );
    let (st, rejected) = api
        .post(&reject, Some(&own), json!({"reason": "用途不明确"}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["reason"], "用途不明确");
    assert!(rejected["decided_at"].is_string() && rejected["decided_by"].is_string());
}

/// Median of `n` timings of `f`.
async fn median_ms<F, Fut>(n: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f().await;
        t.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

#[tokio::test]
async fn keys_lifecycle_bad_keys_and_secrets_never_written() {
    let s = server().await;
    let api = Api::new(&s);

    // Creating keys: admins only; the key is shown once, listings never show secrets.
    let (st, _) = api
        .post(
            "/api/v1/keys",
            None,
            json!({"name": "x", "role": "consumer"}),
        )
        .await;
    assert_eq!(st, 401);
    let consumer = api.key("consumer", None, None).await;
    let (st, _) = api
        .post(
            "/api/v1/keys",
            Some(&consumer),
            json!({"name": "x", "role": "admin"}),
        )
        .await;
    assert_eq!(st, 403);
    for bad in [
        json!({"name": "x", "role": "overlord"}),
        json!({"name": "x", "role": "publisher"}),
        json!({"name": "x", "role": "consumer", "department": "market"}),
        json!({"name": "x", "role": "consumer", "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"name": " ", "role": "consumer"}),
    ] {
        assert_eq!(
            api.post("/api/v1/keys", Some(ADMIN), bad.clone()).await.0,
            422,
            "{bad}"
        );
    }
    // A time that does not parse says what form it takes, and where.
    let (st, out) = api
        .post(
            "/api/v1/keys",
            Some(ADMIN),
            json!({"name": "x", "role": "consumer", "expires_at": "next tuesday"}),
        )
        .await;
    assert_eq!(st, 400, "{out}");
    let detail = out["detail"].as_str().unwrap();
    assert!(
        detail.contains("expires_at must be a date and time as RFC 3339 writes it"),
        "{out}"
    );
    assert_eq!(out["line"], 1, "{out}");
    assert!(out["column"].as_u64().is_some_and(|c| c > 1), "{out}");
    let (st, out) = api
        .post(
            "/api/v1/keys",
            Some(ADMIN),
            json!({"name": "x", "role": "publisher", "department": "ghost"}),
        )
        .await;
    assert_eq!(st, 404, "{out}");
    let publisher = api.key("publisher", Some("market"), None).await;
    let short_lived = api.key("consumer", None, Some(2)).await;
    let (_, list) = api.get("/api/v1/keys", Some(ADMIN)).await;
    let list_text = list.to_string();
    for k in [&consumer, &publisher, &short_lived] {
        let secret = k.rsplit('_').next().unwrap();
        assert!(!list_text.contains(secret));
    }
    assert_eq!(api.get("/api/v1/keys", Some(&publisher)).await.0, 403);

    // The caller as the gateway sees it.
    let (_, me) = api.get("/api/v1/me", Some(&publisher)).await;
    assert_eq!(
        (me["role"].as_str(), me["department"].as_str()),
        (Some("publisher"), Some("market"))
    );
    assert_eq!(me["tier"], "internal");
    let (_, me) = api.get("/api/v1/me", None).await;
    assert_eq!(
        (me["principal"].as_str(), me["role"].as_str()),
        (Some("anonymous"), Some("anonymous"))
    );
    assert!(me["limits"]["max_page_rows"].as_u64().unwrap() > 0);

    // Revoked and expired keys are refused on their next request.
    let victim = api.key("consumer", None, None).await;
    assert_eq!(api.get("/api/v1/me", Some(&victim)).await.0, 200);
    let victim_id = victim.split('_').nth(1).unwrap();
    let (st, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/keys/{victim_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 204);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Every kind of bad key: 401, the same problem, the same headers.
    let unknown = format!("dg_nosuchkey_{}", "ab".repeat(32));
    let wrong_secret = format!(
        "{}_{}",
        consumer.rsplit_once('_').unwrap().0,
        "cd".repeat(32)
    );
    let bad_keys = [
        "Bearer",
        "Bearer dg_",
        "Bearer not-a-key",
        &format!("Bearer {unknown}"),
        &format!("Bearer {wrong_secret}"),
        &format!("Bearer {victim}"),
        &format!("Bearer {short_lived}"),
        "Basic dXNlcjpwYXNz",
    ];
    let mut shapes = Vec::new();
    for header in bad_keys {
        let r = api
            .c
            .get(s.url("/api/v1/datasets"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{header}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"datagate\"");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let mut body: Value = r.json().await.unwrap();
        body.as_object_mut().unwrap().remove("request_id");
        shapes.push(body);
    }
    assert!(shapes.windows(2).all(|w| w[0] == w[1]), "{shapes:?}");

    // No early exit on the secret: an unknown id and a wrong secret cost about the same.
    let send = |key: String| {
        let c = api.c.clone();
        let url = s.url("/api/v1/me");
        async move {
            let r = c.get(url).bearer_auth(key).send().await.unwrap();
            assert_eq!(r.status(), 401);
        }
    };
    let a = median_ms(40, || send(unknown.clone())).await;
    let b = median_ms(40, || send(wrong_secret.clone())).await;
    assert!(
        (a - b).abs() < 3.0 + 0.5 * a.min(b),
        "unknown id {a:.2} ms vs wrong secret {b:.2} ms"
    );

    // Secrets appear nowhere: not in the data directory, the log or the metrics.
    let metrics = s.metrics().await;
    let log = s.log_text();
    let mut files = Vec::new();
    let mut stack = vec![s.data_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if !e.path().ends_with("admin.key") {
                files.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    for k in [ADMIN, &consumer, &publisher, &short_lived, &victim] {
        let secret = k.rsplit('_').next().unwrap();
        assert!(!log.contains(secret), "a secret in the log");
        assert!(!metrics.contains(secret), "a secret in the metrics");
        for f in &files {
            assert!(
                !f.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret in the data directory"
            );
        }
    }
}
