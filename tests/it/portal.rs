//! The portal (`GET /` and its pages) on a running binary, page by page and role by role: what
//! each visitor sees and does not see, sessions, CSRF, escaping, the security headers, and
//! that its reads are the API's (same bytes, same refusals, same audit).

use crate::harness::{ADMIN, Options, Server, admin_env, new_key, new_key_with};
use reqwest::header::{self, HeaderMap};
use reqwest::{Client, Response, redirect};
use serde_json::{Value, json};

fn client() -> Client {
    Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

async fn start() -> Server {
    Server::start(Options {
        env: admin_env(&[]),
        ..Options::default()
    })
    .await
}

/// A page as a visitor with `cookie` (or none) and `lang`.
async fn page(s: &Server, path: &str, cookie: Option<&str>) -> (u16, HeaderMap, String) {
    let mut r = client().get(s.url(path));
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

/// A form POST from a page of the site itself.
async fn post_form(
    s: &Server,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> Response {
    let mut r = client()
        .post(s.url(path))
        .header(header::ORIGIN, s.base.clone())
        .form(form);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.send().await.unwrap()
}

/// Signs in with `key`; the session cookie (`name=value`).
async fn sign_in(s: &Server, key: &str) -> String {
    let r = post_form(s, "/signin", None, &[("key", key), ("next", "/me")]).await;
    assert_eq!(r.status(), 303, "sign-in answers a redirect");
    assert_eq!(r.headers()[header::LOCATION], "/me");
    let set = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.starts_with("dg_session="), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains(key) && !set.contains(&key[3..15]),
        "the key is never in the cookie"
    );
    set.split(';').next().unwrap().to_string()
}

async fn api_json(s: &Server, key: Option<&str>, path: &str) -> Value {
    let mut r = Client::new().get(s.url(path));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// Text as the templates escape it (numeric character references).
fn escaped(s: &str) -> String {
    s.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

fn assert_security_headers(h: &HeaderMap) {
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(h.contains_key(header::REFERRER_POLICY));
}

#[tokio::test]
async fn the_catalog_page_shows_what_the_api_lists_for_anonymous_visitors() {
    let s = start().await;
    let (status, headers, html) = page(&s, "/", None).await;
    assert_eq!(status, 200);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_security_headers(&headers);
    assert!(html.contains("<html lang=\"zh-CN\">"), "Chinese first");
    assert!(html.contains("无条件开放") && html.contains("有条件开放"));
    let listed = api_json(&s, None, "/api/v1/datasets?limit=100").await;
    let datasets = listed["datasets"].as_array().unwrap();
    assert!(datasets.len() >= 8);
    for d in datasets {
        assert!(
            html.contains(&escaped(d["title"].as_str().unwrap())),
            "{} missing",
            d["title"]
        );
    }
    // The shared dataset is in the admin's listing, never on the anonymous page.
    let shared = api_json(&s, Some(ADMIN), "/api/v1/datasets/justice/mediation_cases").await;
    assert!(!html.contains(&escaped(shared["title"].as_str().unwrap())));
    assert!(!html.contains("mediation_cases"));

    // Search, a facet, sorting and the language switch.
    let (_, _, found) = page(&s, "/?q=%E5%85%AC%E4%BA%A4", None).await; // 公交
    let bus = api_json(&s, None, "/api/v1/datasets?q=%E5%85%AC%E4%BA%A4").await;
    assert!(bus["total"].as_u64().unwrap() >= 1);
    assert!(found.contains(&format!("<strong>{}</strong>", bus["total"])));
    let (_, _, conditional) = page(&s, "/?access_level=conditional", None).await;
    assert!(
        conditional.contains("<strong>1</strong>"),
        "one conditional dataset"
    );
    assert!(
        conditional.contains("aria-current=\"true\""),
        "the chosen facet entry is marked"
    );
    // The format facet: what each dataset's current version was published as. The sample
    // catalog is CSV; bus lines republished as Parquet (its own export) move to "Parquet".
    let (_, _, csv_only) = page(&s, "/?format=csv", None).await;
    assert!(csv_only.contains(&format!("<strong>{}</strong>", datasets.len())));
    let parquet = client()
        .get(s.url("/api/v1/datasets/transport/bus_lines/export?format=parquet"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let r = client()
        .post(s.url("/api/v1/datasets/transport/bus_lines/versions?mode=replace"))
        .bearer_auth(ADMIN)
        .header(header::CONTENT_TYPE, "application/vnd.apache.parquet")
        .body(parquet)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, _, all) = page(&s, "/", None).await;
    let facet_entry = |html: &str, label: &str| {
        html.split(&format!(">{label}</a> <span class=\"count\">"))
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .map(str::to_string)
    };
    assert_eq!(facet_entry(&all, "Parquet").as_deref(), Some("1"), "{all}");
    assert_eq!(
        facet_entry(&all, "CSV"),
        Some((datasets.len() - 1).to_string())
    );
    let (_, _, parquet_only) = page(&s, "/?format=parquet", None).await;
    assert!(parquet_only.contains("<strong>1</strong>"));
    let bus_lines = api_json(&s, None, "/api/v1/datasets/transport/bus_lines").await;
    assert_eq!(bus_lines["source_format"], "parquet");
    assert!(parquet_only.contains(&escaped(bus_lines["title"].as_str().unwrap())));
    // The update frequency facet: the page's count is the API's.
    let first = api_json(&s, None, "/api/v1/datasets?limit=1").await;
    let frequency = first["datasets"][0]["update_frequency"].as_str().unwrap();
    let same = api_json(
        &s,
        None,
        &format!("/api/v1/datasets?limit=1&update_frequency={frequency}"),
    )
    .await;
    let (_, _, by_frequency) = page(&s, &format!("/?frequency={frequency}"), None).await;
    assert!(
        by_frequency.contains(&format!("<strong>{}</strong>", same["total"])),
        "{by_frequency}"
    );
    let (_, _, history) = page(&s, "/datasets/transport/bus_lines", None).await;
    assert!(
        history.contains("<td>Parquet</td>") && history.contains("<td>CSV</td>"),
        "each version says what it was published as"
    );

    let (_, _, sorted) = page(&s, "/?sort=title", None).await;
    assert!(sorted.contains("<option value=\"title\" selected>"));
    let (_, headers, english) = page(&s, "/?lang=en", None).await;
    assert!(english.contains("<html lang=\"en\">") && english.contains("Data catalog"));
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with("lang=en")
    );
    let r = client()
        .get(s.url("/"))
        .header(header::ACCEPT_LANGUAGE, "en-GB,en;q=0.9")
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("Open level"));

    // Assets come from the binary, under content-hashed names, cached for a year.
    let css = html
        .split("href=\"/assets/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(css.starts_with("style.") && css.ends_with(".css"));
    let r = client()
        .get(s.url(&format!("/assets/{css}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(
        client()
            .get(s.url("/assets/style.0000.css"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// Registers department `bulk` (批量数据局) with `open` open datasets `ds0000`... titled
/// `Bulk 0000`... (tags `t0`..`t2` in turn), then `shared` shared ones.
async fn register_bulk(s: &Server, open: usize, shared: usize) {
    use futures::StreamExt;
    let c = Client::new();
    let r = c
        .post(s.url("/api/v1/departments"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "bulk", "name": "批量数据局", "description": "many datasets"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let registered = futures::stream::iter(0..open + shared)
        .map(|i| {
            let (c, url) = (c.clone(), s.url("/api/v1/datasets"));
            async move {
                let level = if i < open { "open" } else { "shared" };
                c.post(url)
                    .bearer_auth(ADMIN)
                    .json(&json!({
                        "department": "bulk", "name": format!("ds{i:04}"),
                        "title": format!("Bulk {i:04}"), "description": "one of many",
                        "access_level": level, "tags": [format!("t{}", i % 3)],
                        "columns": [{"name": "id", "type": "int64"}]}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(registered.iter().all(|s| *s == 201), "{registered:?}");
}

/// The number a catalog page says it found.
fn found_count(html: &str) -> Option<String> {
    html.split("<strong>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .map(str::to_string)
}

/// A city's catalog is thousands of datasets, more than the API lists at once (1,000): the
/// catalog page's counts, facets, sorting and pages cover them all.
#[tokio::test]
async fn the_catalog_page_counts_a_catalog_larger_than_an_api_page() {
    let s = start().await;
    const OPEN: usize = 2_150;
    const SHARED: usize = 40;
    register_bulk(&s, OPEN, SHARED).await;
    let facet_entry = |html: &str, label: &str| {
        html.split(&format!(">{label}</a> <span class=\"count\">"))
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .map(str::to_string)
    };
    let listed = api_json(&s, None, "/api/v1/datasets?limit=1").await;
    let (status, _, all) = page(&s, "/", None).await;
    assert_eq!(status, 200);
    assert_eq!(found_count(&all), Some(listed["total"].to_string()));
    assert_eq!(
        facet_entry(&all, "批量数据局"),
        Some(OPEN.to_string()),
        "shared ones unseen"
    );
    let (_, _, bulk) = page(&s, "/?department=bulk&tag=t1", None).await;
    let t1 = (0..OPEN).filter(|i| i % 3 == 1).count();
    assert_eq!(found_count(&bulk), Some(t1.to_string()));
    // Sorted by title, the last page holds the last titles: every listing page was read.
    let (_, _, last) = page(&s, "/?department=bulk&sort=title&page=108", None).await;
    assert!(last.contains("Bulk 2149") && last.contains("Bulk 2140"));
    assert!(!last.contains("Bulk 2139") && !last.contains("Bulk 2150"));
    // A page past the last, however far, is the last.
    let (status, _, past) = page(
        &s,
        &format!("/?department=bulk&sort=title&page={}", usize::MAX),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(past.contains("Bulk 2149") && past.contains("Bulk 2140"));
    // The admin sees the shared ones too.
    let cookie = sign_in(&s, ADMIN).await;
    let (_, _, admin) = page(&s, "/?department=bulk", Some(&cookie)).await;
    assert_eq!(found_count(&admin), Some((OPEN + SHARED).to_string()));
    // The department's page lists its 2,190 datasets 100 a page: the first, the last, and a
    // page past the last is the last.
    let listed = |html: &str| {
        html.split("<tr><td><code>")
            .skip(1)
            .filter_map(|rest| rest.split('<').next())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (status, _, first) = page(&s, "/publish/bulk", Some(&cookie)).await;
    assert_eq!(status, 200);
    let names =
        |range: std::ops::Range<usize>| range.map(|i| format!("ds{i:04}")).collect::<Vec<_>>();
    assert_eq!(listed(&first), names(0..100));
    assert!(first.contains("1 / 22") && first.contains("href=\"/publish/bulk?page=2\""));
    for path in [
        "/publish/bulk?page=22".to_string(),
        format!("/publish/bulk?page={}", usize::MAX),
    ] {
        let (status, _, last) = page(&s, &path, Some(&cookie)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(listed(&last), names(2100..OPEN + SHARED), "{path}");
        assert!(
            last.contains("22 / 22") && !last.contains("rel=\"next\""),
            "{path}"
        );
    }
}

/// A catalog page view costs a visitor's rate the same whatever the catalog's size: it reads
/// the departments and one page of the listing with its facets, audited like any API read.
#[tokio::test]
async fn a_catalog_page_view_costs_the_same_rate_whatever_the_catalog_size() {
    let s = Server::start(Options {
        env: admin_env(&[
            ("DATAGATE_TIERS__ANONYMOUS__REQUESTS", "1"),
            ("DATAGATE_TIERS__ANONYMOUS__WINDOW_SECS", "3600"),
            ("DATAGATE_TIERS__ANONYMOUS__BURST", "5"),
        ]),
        ..Options::default()
    })
    .await;
    register_bulk(&s, 2_150, 0).await;
    // Each view reads the departments and a page of the listing: two of the five.
    for _ in 0..2 {
        let (status, _, html) = page(&s, "/", None).await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains("批量数据局"));
    }
    let api = |path: &'static str| Client::new().get(s.url(path)).send();
    let r = api("/api/v1/departments").await.unwrap();
    assert_eq!(r.status(), 200);
    let remaining = r.headers()["ratelimit"].to_str().unwrap().to_string();
    assert!(remaining.contains(";r=0;"), "{remaining}");
    assert_eq!(api("/api/v1/departments").await.unwrap().status(), 429);
    // Each view's listing was read, and audited, as the anonymous visitor: one page of it.
    let events = api_json(
        &s,
        Some(ADMIN),
        "/api/v1/audit/events?principal=anonymous&action=catalog.datasets&limit=100",
    )
    .await;
    let listings: Vec<&str> = events["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(listings.len(), 2, "{events}");
    assert!(
        listings
            .iter()
            .all(|p| p.contains("facets=true") && p.contains("limit=20")),
        "{listings:?}"
    );
}

#[tokio::test]
async fn a_dataset_page_previews_downloads_and_offers_snippets() {
    let s = start().await;
    let (status, headers, html) = page(&s, "/datasets/transport/bus_lines", None).await;
    assert_eq!(status, 200);
    assert_security_headers(&headers);
    let d = api_json(&s, None, "/api/v1/datasets/transport/bus_lines").await;
    for c in d["schema"].as_array().unwrap() {
        assert!(html.contains(&format!(
            "<code>{}</code>",
            escaped(c["name"].as_str().unwrap())
        )));
    }
    // The preview is the rows API's first page.
    let rows = api_json(
        &s,
        None,
        "/api/v1/datasets/transport/bus_lines/rows?limit=20",
    )
    .await;
    for row in rows["rows"].as_array().unwrap() {
        for v in row.as_object().unwrap().values() {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => "NULL".into(),
                other => other.to_string(),
            };
            assert!(html.contains(&escaped(&text)), "preview lacks {text}");
        }
    }
    assert!(
        html.contains("page=limit"),
        "a next link carries the API's next page"
    );
    for f in ["csv", "excel", "json", "ndjson", "parquet", "arrow"] {
        assert!(
            html.contains(&format!("/download/transport/bus_lines?format={f}\"")),
            "{f}"
        );
    }
    assert!(
        html.contains("read_parquet(") && html.contains("pd.read_csv(") && html.contains("curl")
    );
    assert!(html.contains("<svg class=\"chart\""), "reads per day");

    // A filter narrows the preview; a bad one shows the API's message and keeps the page.
    let first_col = d["schema"][0]["name"].as_str().unwrap();
    let (st, _, bad) = page(
        &s,
        "/datasets/transport/bus_lines?where=nonsense+%3E+1",
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert!(bad.contains("notice error"), "the bad filter is reported");
    let (_, _, sorted) = page(
        &s,
        &format!("/datasets/transport/bus_lines?order={first_col}+desc"),
        None,
    )
    .await;
    assert!(sorted.contains(" ▼"));

    // A download is the export API's bytes, as an attachment.
    let via_portal = client()
        .get(s.url("/download/transport/bus_lines?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(via_portal.status(), 200);
    assert!(
        via_portal.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let portal_bytes = via_portal.bytes().await.unwrap();
    let api_bytes = Client::new()
        .get(s.url("/api/v1/datasets/transport/bus_lines/export?format=csv"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(portal_bytes, api_bytes);
    assert!(!portal_bytes.is_empty());
    // For spreadsheets: the same CSV after a UTF-8 byte-order mark.
    assert!(html.contains(">csv (Excel)</a>"));
    let for_excel = client()
        .get(s.url("/download/transport/bus_lines?format=excel"))
        .send()
        .await
        .unwrap();
    assert_eq!(for_excel.status(), 200);
    assert!(
        for_excel.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("bus_lines.csv")
    );
    let excel_bytes = for_excel.bytes().await.unwrap();
    assert_eq!(excel_bytes[..3], *b"\xEF\xBB\xBF");
    assert_eq!(excel_bytes[3..], api_bytes[..]);

    // Unknown and invisible datasets are the API's 404.
    assert_eq!(
        page(&s, "/datasets/justice/mediation_cases", None).await.0,
        404
    );
    assert_eq!(page(&s, "/datasets/nobody/nothing", None).await.0, 404);
}

#[tokio::test]
async fn sessions_start_with_a_key_end_on_sign_out_and_when_the_key_is_revoked() {
    let s = start().await;
    // Refusals: a bad key, and any POST not from this site.
    let r = post_form(&s, "/signin", None, &[("key", "dg_nope_00")]).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("notice error"));
    let consumer = new_key(&s, "consumer", None).await;
    let r = client()
        .post(s.url("/signin"))
        .form(&[("key", consumer.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no Origin: refused");
    let r = client()
        .post(s.url("/signin"))
        .header(header::ORIGIN, "http://evil.example")
        .form(&[("key", consumer.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another site's form: refused");

    let cookie = sign_in(&s, &consumer).await;
    let (st, _, me) = page(&s, "/me", Some(&cookie)).await;
    assert_eq!(st, 200);
    assert!(me.contains("consumer"), "the role is shown");
    assert!(me.contains("standard"), "the tier is shown");

    // Sign-out ends the session: the same cookie is anonymous afterwards.
    let r = post_form(&s, "/signout", Some(&cookie), &[]).await;
    assert_eq!(r.status(), 303);
    let (st, h, _) = page(&s, "/me", Some(&cookie)).await;
    assert_eq!(st, 303);
    assert!(h[header::LOCATION].to_str().unwrap().starts_with("/signin"));

    // Revoking the key ends its sessions at the next page.
    let cookie = sign_in(&s, &consumer).await;
    crate::harness::revoke_key(&s, &consumer).await;
    let (st, h, _) = page(&s, "/", Some(&cookie)).await;
    assert_eq!(st, 303);
    assert!(h[header::LOCATION].to_str().unwrap().contains("expired=1"));
    let (st, _, html) = page(&s, "/", Some(&cookie)).await;
    assert_eq!(st, 200, "afterwards the visitor is anonymous");
    assert!(html.contains("/signin"));
}

#[tokio::test]
async fn conditional_data_needs_an_application_and_shared_data_is_masked_as_in_the_api() {
    let s = start().await;
    let consumer = new_key(&s, "consumer", None).await;
    let cookie = sign_in(&s, &consumer).await;
    // A conditional dataset without a grant: the apply form, no preview.
    let (st, _, html) = page(&s, "/datasets/justice/legal_aid_cases", Some(&cookie)).await;
    assert_eq!(st, 200);
    assert!(html.contains("action=\"/datasets/justice/legal_aid_cases/apply\""));
    assert!(!html.contains("preview pages"));
    let (_, _, anon) = page(&s, "/datasets/justice/legal_aid_cases", None).await;
    assert!(
        anon.contains("/signin?next="),
        "anonymous visitors are asked to sign in"
    );
    let r = post_form(
        &s,
        "/datasets/justice/legal_aid_cases/apply",
        Some(&cookie),
        &[("purpose", "研究")],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .contains("applied=1")
    );
    let apps = api_json(&s, Some(&consumer), "/api/v1/applications").await;
    let app = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["purpose"] == "研究")
        .expect("the application");
    let (_, _, me) = page(&s, "/me", Some(&cookie)).await;
    assert!(me.contains("研究"), "my applications list it");

    // The justice publisher approves through the API; the consumer's preview then shows
    // exactly the API's masked rows, and no private column.
    let publisher = new_key_with(
        &s,
        json!({"name": "justice", "role": "publisher", "department": "justice"}),
    )
    .await;
    let r = Client::new()
        .post(s.url(&format!(
            "/api/v1/applications/{}/approve",
            app["id"].as_str().unwrap()
        )))
        .bearer_auth(&publisher)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (_, _, html) = page(&s, "/datasets/justice/legal_aid_cases", Some(&cookie)).await;
    let rows = api_json(
        &s,
        Some(&consumer),
        "/api/v1/datasets/justice/legal_aid_cases/rows?limit=20",
    )
    .await;
    let visible: Vec<String> = rows["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    for row in rows["rows"].as_array().unwrap() {
        for c in &visible {
            if let Value::String(v) = &row[c] {
                assert!(html.contains(&escaped(v)), "masked preview lacks {v}");
            }
        }
    }
    let full = api_json(&s, Some(ADMIN), "/api/v1/datasets/justice/legal_aid_cases").await;
    for c in full["schema"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        if c["sensitivity"] == "private" {
            assert!(
                !html.contains(&format!(">{name}<")),
                "private column {name} shown"
            );
        }
    }
    let raw = api_json(
        &s,
        Some(ADMIN),
        "/api/v1/datasets/justice/legal_aid_cases/rows?limit=20",
    )
    .await;
    for c in full["schema"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["sensitivity"] != "public")
    {
        let name = c["name"].as_str().unwrap();
        for row in raw["rows"].as_array().unwrap() {
            if let Value::String(v) = &row[name]
                && v.chars().count() > 3
            {
                assert!(
                    !html.contains(&escaped(v)),
                    "raw value of {name} shown: {v}"
                );
            }
        }
    }
}

#[tokio::test]
async fn hostile_titles_and_values_are_shown_as_text() {
    let s = start().await;
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(ADMIN);
    let c = Client::new();
    let r = admin(c.post(s.url("/api/v1/datasets")))
        .json(&json!({
            "department": "transport", "name": "hostile", "title": "<script>alert(1)</script>",
            "description": "\"><img src=x onerror=alert(2)>", "access_level": "open",
            "tags": ["<b>x</b>"],
            "columns": [{"name": "v", "type": "utf8"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = admin(c.post(s.url("/api/v1/datasets/transport/hostile/versions")))
        .header(header::CONTENT_TYPE, "text/csv")
        .body("v\n<script>alert(3)</script>\n\"<img src=x onerror=alert(4)>\"\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    for path in [
        "/",
        "/datasets/transport/hostile",
        "/sql?q=select+*+from+transport.hostile",
    ] {
        let (st, _, html) = page(&s, path, None).await;
        assert_eq!(st, 200, "{path}");
        assert!(!html.contains("<script>alert"), "{path}");
        assert!(!html.contains("<img src=x"), "{path}");
        assert!(!html.contains("<b>x</b>"), "{path}");
        assert!(
            html.contains(&escaped("<script>alert(")),
            "{path} shows the text"
        );
    }
}

#[tokio::test]
async fn the_sql_console_runs_through_the_query_api_and_marks_errors() {
    let s = start().await;
    let (st, _, html) = page(&s, "/sql", None).await;
    assert_eq!(st, 200);
    assert!(
        html.contains("<code>transport.bus_lines</code>"),
        "readable tables listed"
    );
    assert!(
        !html.contains("justice.mediation_cases"),
        "shared tables are not"
    );

    let sql = "SELECT count(*) AS n FROM transport.bus_lines";
    let (_, _, html) = page(&s, &format!("/sql?q={}", urlencode(sql)), None).await;
    let api = Client::new()
        .post(s.url("/api/v1/query"))
        .json(&json!({"sql": sql}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let n = api["rows"][0]["n"].to_string();
    assert!(
        html.contains(&format!("<td class=\"num\">{n}</td>")),
        "the count {n}"
    );
    assert!(html.contains("/sql/download?q="), "the result downloads");

    // An error: message, line and column, and the character marked.
    let bad = "SELECT *\nFROM transport.bus_lines\nWHERE (";
    let (st, _, html) = page(&s, &format!("/sql?q={}", urlencode(bad)), None).await;
    assert_eq!(st, 200);
    assert!(html.contains("notice error"));
    assert!(html.contains("line 3"), "the position is given");
    assert!(html.contains("<mark>"), "the position is marked");
    // Refused statements are the API's refusals.
    let (_, _, html) = page(&s, "/sql?q=DROP+TABLE+transport.bus_lines", None).await;
    assert!(html.contains("notice error"));
    // EXPLAIN shows a plan.
    let (_, _, html) = page(&s, &format!("/sql?q={}&explain=1", urlencode(sql)), None).await;
    assert!(html.contains("plan"), "EXPLAIN answers a plan");

    // The download is the query API's result; for Excel, the same after a UTF-8 byte-order mark.
    let download = |format: &'static str| {
        let url = s.url(&format!(
            "/sql/download?q={}&format={format}",
            urlencode(sql)
        ));
        async move {
            let r = client().get(url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{format}");
            r.bytes().await.unwrap().to_vec()
        }
    };
    assert_eq!(download("csv").await, format!("n\n{n}\n").into_bytes());
    let (_, _, result_page) = page(&s, &format!("/sql?q={}", urlencode(sql)), None).await;
    assert!(
        result_page.contains("format=excel\" download>csv (Excel)</a>"),
        "the result offers csv (Excel)"
    );
    assert_eq!(
        download("excel").await,
        format!("\u{FEFF}n\n{n}\n").into_bytes()
    );
}

/// The tables a page of the SQL console lists, in order.
fn listed_tables(html: &str) -> Vec<String> {
    html.split("<summary><code>")
        .skip(1)
        .filter_map(|rest| rest.split('<').next())
        .map(str::to_string)
        .collect()
}

/// With thousands of tables, the console lists a page of them and finds the rest by name,
/// title or tag, as the visitor may see them; searching keeps the statement without running it.
#[tokio::test]
async fn the_sql_console_finds_and_pages_the_tables_of_a_large_catalog() {
    let s = start().await;
    register_bulk(&s, 120, 5).await;
    let everyone = api_json(&s, None, "/api/v1/datasets?limit=1").await["total"]
        .as_u64()
        .unwrap();
    let (st, _, first) = page(&s, "/sql", None).await;
    assert_eq!(st, 200);
    let tables = listed_tables(&first);
    assert_eq!(tables.len(), 50, "{tables:?}");
    assert_eq!(tables[0], "bulk.ds0000", "ordered by name");
    assert!(first.contains(&format!("1–50 / {everyone}")));
    assert!(first.contains("tables_page=2"), "a next page");

    // By name: a department's tables, paged; the shared ones are not the visitor's.
    async fn search(s: &Server, words: &str, page_no: &str) -> String {
        let path = format!("/sql?tables={}&tables_page={page_no}", urlencode(words));
        let (st, _, html) = page(s, &path, None).await;
        assert_eq!(st, 200, "{path}");
        html
    }
    let third = search(&s, "BULK.", "3").await;
    let names: Vec<String> = (100..120).map(|i| format!("bulk.ds{i:04}")).collect();
    assert_eq!(listed_tables(&third), names);
    assert!(third.contains("101–120 / 120"));
    assert!(third.contains("tables_page=2") && !third.contains("tables_page=4"));
    assert_eq!(
        listed_tables(&search(&s, "bulk.", &usize::MAX.to_string()).await),
        names,
        "a page past the last is the last"
    );
    let ten = search(&s, "bulk.ds011", "").await;
    assert_eq!(listed_tables(&ten).len(), 10);
    assert!(ten.contains("1–10 / 10") && !ten.contains("rel=\"next\""));
    // By title, by tag, by several words.
    assert_eq!(
        listed_tables(&search(&s, "Bulk 0042", "").await),
        ["bulk.ds0042"]
    );
    assert_eq!(
        listed_tables(&search(&s, "bus_lines", "").await),
        ["transport.bus_lines"]
    );
    let t2 = listed_tables(&search(&s, "t2 bulk.ds00", "").await);
    assert_eq!(t2.len(), 33, "{t2:?}");
    assert!(listed_tables(&search(&s, "bulk.ds012", "").await).is_empty());
    let none = search(&s, "no-such-table", "").await;
    assert!(listed_tables(&none).is_empty());
    assert!(none.contains("没有匹配的表") || none.contains("No table matches"));
    // The admin's list has the shared ones.
    let cookie = sign_in(&s, ADMIN).await;
    let (_, _, admin) = page(&s, "/sql?tables=bulk.ds012", Some(&cookie)).await;
    assert_eq!(listed_tables(&admin).len(), 5);

    // Searching keeps the statement in the editor and in the next page's link, unrun; the
    // statement's own form keeps the search.
    let sql = "SELECT 41 + 1 AS n";
    let (_, _, kept) = page(
        &s,
        &format!("/sql?q={}&run=0&tables=bulk.", urlencode(sql)),
        None,
    )
    .await;
    assert!(kept.contains(&format!(">{}</textarea>", escaped(sql))));
    assert!(!kept.contains("table-wrap"), "not run");
    assert!(kept.contains(&format!("q={}&#38;run=0", urlencode(sql))));
    assert!(kept.contains("<input type=\"hidden\" name=\"tables\" value=\"bulk.\">"));
    let (_, _, ran) = page(&s, &format!("/sql?q={}&tables=bulk.", urlencode(sql)), None).await;
    assert!(ran.contains("<td class=\"num\">42</td>"), "run");
    assert_eq!(listed_tables(&ran).len(), 50);
}

#[tokio::test]
async fn what_the_portal_reads_is_audited_like_an_api_call() {
    let s = start().await;
    let consumer = new_key(&s, "consumer", None).await;
    let cookie = sign_in(&s, &consumer).await;
    let (st, _, _) = page(&s, "/datasets/environment/air_quality", Some(&cookie)).await;
    assert_eq!(st, 200);
    let id = consumer.split('_').nth(1).unwrap();
    let mut found = false;
    for _ in 0..50 {
        let events = api_json(
            &s,
            Some(ADMIN),
            &format!("/api/v1/audit/events?principal={id}&dataset=environment/air_quality&action=data.rows&limit=10"),
        )
        .await;
        found = events["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["key_id"] == id);
        if found {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        found,
        "the preview's read is in the audit log under the visitor's key"
    );
}

#[tokio::test]
async fn the_portal_can_be_turned_off() {
    let s = Server::start(Options {
        env: vec![("DATAGATE_PORTAL__ENABLED".into(), "false".into())],
        ..Options::default()
    })
    .await;
    assert_eq!(page(&s, "/", None).await.0, 404);
    assert_eq!(page(&s, "/api/v1/datasets", None).await.0, 200);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn department_pages_register_upload_decide_and_unpublish_through_the_api() {
    let s = start().await;
    let publisher = new_key_with(
        &s,
        json!({"name": "justice", "role": "publisher", "department": "justice"}),
    )
    .await;
    let consumer = new_key(&s, "consumer", None).await;
    // Only the department's publishers and admins.
    let (st, h, _) = page(&s, "/publish", None).await;
    assert_eq!(st, 303);
    assert!(h[header::LOCATION].to_str().unwrap().starts_with("/signin"));
    let outsider = sign_in(&s, &consumer).await;
    assert_eq!(page(&s, "/publish", Some(&outsider)).await.0, 403);
    assert_eq!(page(&s, "/publish/justice", Some(&outsider)).await.0, 403);
    let cookie = sign_in(&s, &publisher).await;
    let (st, h, _) = page(&s, "/publish", Some(&cookie)).await;
    assert_eq!(st, 303);
    assert_eq!(h[header::LOCATION], "/publish/justice");
    assert_eq!(
        page(&s, "/publish/market", Some(&cookie)).await.0,
        403,
        "another department"
    );
    let (st, _, html) = page(&s, "/publish/justice", Some(&cookie)).await;
    assert_eq!(st, 200);
    assert!(
        html.contains("<code>mediation_cases</code>"),
        "the department's shared dataset is listed"
    );
    assert!(
        html.contains("href=\"/publish\""),
        "the navigation offers publishing"
    );

    // Register with declared columns (one masked).
    let r = post_form(
        &s,
        "/publish/justice/register",
        Some(&cookie),
        &[
            ("name", "hearings"),
            ("title", "庭审排期"),
            ("access_level", "open"),
            ("license", "CC-BY-4.0"),
            ("tags", "庭审, 排期"),
            ("update_frequency", "daily"),
            ("primary_key", "id"),
            ("col0_name", "id"),
            ("col0_type", "int64"),
            ("col0_sensitivity", "public"),
            ("col1_name", "party"),
            ("col1_type", "utf8"),
            ("col1_sensitivity", "masked"),
            ("col1_mask", "partial"),
            ("col2_name", ""),
            ("col2_type", "utf8"),
            ("col2_sensitivity", "public"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()[header::LOCATION],
        "/publish/justice/hearings?notice=registered"
    );
    let d = api_json(&s, Some(&publisher), "/api/v1/datasets/justice/hearings").await;
    assert_eq!(d["title"], "庭审排期");
    assert_eq!(d["tags"], json!(["庭审", "排期"]));
    assert_eq!(d["schema"][1]["sensitivity"], "masked");
    assert_eq!(d["schema"][1]["mask"], "partial");
    // A refused registration comes back with the API's reason.
    let r = post_form(
        &s,
        "/publish/justice/register",
        Some(&cookie),
        &[
            ("name", "hearings"),
            ("title", "x"),
            ("access_level", "open"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .contains("error=")
    );

    // Upload (what the page's script sends): the API's answer as it is.
    let upload = |body: &'static str| {
        client()
            .post(s.url("/publish/justice/hearings/upload?mode=append"))
            .header(header::ORIGIN, s.base.clone())
            .header(header::COOKIE, cookie.clone())
            .header(header::CONTENT_TYPE, "text/csv")
            .body(body)
            .send()
    };
    let r = upload("id,party\n1,张三丰\n2,李四光\n").await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["row_count"], 2);
    let r = upload("id,party\n3,王五\nnot a number,赵六\n")
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["line"], 3, "{p}");
    assert_eq!(
        api_json(&s, None, "/api/v1/datasets/justice/hearings").await["row_count"],
        2,
        "nothing of the bad file kept"
    );
    let r = client()
        .post(s.url("/publish/justice/hearings/upload"))
        .header(header::ORIGIN, "http://evil.example")
        .header(header::COOKIE, cookie.clone())
        .body("id,party\n9,x\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a cross-site upload is refused");

    // Edit metadata and a column's sensitivity.
    let r = post_form(
        &s,
        "/publish/justice/hearings/edit",
        Some(&cookie),
        &[
            ("title", "庭审排期表"),
            ("access_level", "conditional"),
            ("tags", "庭审"),
            ("update_frequency", "weekly"),
            ("sens:id", "public"),
            ("sens:party", "private"),
            ("mask:party", "partial"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let d = api_json(&s, Some(&publisher), "/api/v1/datasets/justice/hearings").await;
    assert_eq!(
        (d["title"].as_str(), d["access_level"].as_str()),
        (Some("庭审排期表"), Some("conditional"))
    );
    assert_eq!(d["schema"][1]["sensitivity"], "private");

    // The applications queue: approve with an expiry, then revoke the grant.
    let r = Client::new()
        .post(s.url("/api/v1/datasets/justice/hearings/applications"))
        .bearer_auth(&consumer)
        .json(&json!({"purpose": "排期研究"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, _, html) = page(&s, "/publish/justice", Some(&cookie)).await;
    assert!(
        html.contains("排期研究"),
        "the pending application is listed"
    );
    let app = api_json(&s, Some(&publisher), "/api/v1/applications?status=pending").await;
    let id = app[0]["id"].as_str().unwrap().to_string();
    let r = post_form(
        &s,
        &format!("/publish/applications/{id}/approve"),
        Some(&cookie),
        &[("department", "justice"), ("expires", "2099-12-31")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let grants = api_json(&s, Some(&publisher), "/api/v1/grants").await;
    let grant = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["dataset"] == "hearings")
        .unwrap();
    assert!(
        grant["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2099-12-31")
    );
    let rows = Client::new()
        .get(s.url("/api/v1/datasets/justice/hearings/rows"))
        .bearer_auth(&consumer)
        .send()
        .await
        .unwrap();
    assert_eq!(rows.status(), 200, "the grant opens the data");
    let r = post_form(
        &s,
        &format!("/publish/grants/{}/revoke", grant["id"].as_str().unwrap()),
        Some(&cookie),
        &[("department", "justice")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let rows = Client::new()
        .get(s.url("/api/v1/datasets/justice/hearings/rows"))
        .bearer_auth(&consumer)
        .send()
        .await
        .unwrap();
    assert_eq!(rows.status(), 403, "revoked");

    // Unpublish.
    let r = post_form(
        &s,
        "/publish/justice/hearings/unpublish",
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(r.status(), 303);
    let dataset_status = || async {
        Client::new()
            .get(s.url("/api/v1/datasets/justice/hearings"))
            .bearer_auth(&consumer)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(dataset_status().await, 404);

    // The department page lists it as unpublished, with a button that publishes it again.
    let (st, _, html) = page(&s, "/publish/justice", Some(&cookie)).await;
    assert_eq!(st, 200);
    let action = "action=\"/publish/justice/hearings/republish\"";
    assert!(html.contains(action), "{html}");
    let r = post_form(
        &s,
        "/publish/justice/hearings/republish",
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()[header::LOCATION],
        "/publish/justice/hearings?notice=republished"
    );
    assert_eq!(dataset_status().await, 200);
    let (_, _, html) = page(&s, "/publish/justice", Some(&cookie)).await;
    assert!(
        !html.contains(action),
        "published again: no longer listed as unpublished"
    );
    // Another department's publisher cannot, and is told nothing about it.
    let other = new_key_with(
        &s,
        json!({"name": "market", "role": "publisher", "department": "market"}),
    )
    .await;
    let other = sign_in(&s, &other).await;
    let r = post_form(
        &s,
        "/publish/justice/hearings/unpublish",
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(r.status(), 303);
    let r = post_form(&s, "/publish/justice/hearings/republish", Some(&other), &[]).await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .contains("error="),
        "{:?}",
        r.headers()
    );
    assert_eq!(dataset_status().await, 404);
}

#[tokio::test]
async fn audit_pages_filter_verify_chart_and_report_through_the_audit_api() {
    // A checkpoint every few records, so there is one to download.
    let s = Server::start(Options {
        env: admin_env(&[("DATAGATE_AUDIT__CHECKPOINT_EVERY_RECORDS", "5")]),
        ..Options::default()
    })
    .await;
    let auditor = new_key(&s, "auditor", None).await;
    let consumer = new_key(&s, "consumer", None).await;
    // Some traffic of the consumer's.
    for _ in 0..3 {
        let r = Client::new()
            .get(s.url("/api/v1/datasets/transport/bus_lines/rows?limit=5"))
            .bearer_auth(&consumer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let outsider = sign_in(&s, &consumer).await;
    assert_eq!(
        page(&s, "/audit", Some(&outsider)).await.0,
        403,
        "consumers may not read the log"
    );
    let cookie = sign_in(&s, &auditor).await;
    let (st, _, html) = page(&s, "/audit", Some(&cookie)).await;
    assert_eq!(st, 200);
    assert!(
        html.contains("href=\"/audit\""),
        "the navigation offers the audit pages"
    );
    assert!(html.contains("<table id=\"log\">"));
    let id = consumer.split('_').nth(1).unwrap();
    let (_, _, filtered) = page(
        &s,
        &format!("/audit?principal={id}&action=data.rows"),
        Some(&cookie),
    )
    .await;
    let api = api_json(
        &s,
        Some(&auditor),
        &format!("/api/v1/audit/events?principal={id}&action=data.rows&limit=50"),
    )
    .await;
    let n = api["rows"].as_array().unwrap().len();
    assert!(n >= 3, "{api}");
    assert_eq!(
        filtered.matches("<td>data.rows</td>").count(),
        n,
        "the page shows the API's records"
    );
    assert!(filtered.contains("transport.bus_lines"));
    assert!(
        !filtered.contains("<td>catalog."),
        "only the filtered action"
    );
    let (_, _, verified) = page(&s, "/audit?verify=1", Some(&cookie)).await;
    assert!(verified.contains("id=\"verdict\""));
    assert!(verified.contains("notice ok"), "the chain verifies");
    assert!(verified.contains("<svg class=\"chart\""), "charts");
    // Filtered to one principal and one dataset, the charts are theirs.
    let (_, _, theirs) = page(
        &s,
        &format!("/audit?principal={id}&dataset=transport.bus_lines"),
        Some(&cookie),
    )
    .await;
    assert!(
        theirs.contains(&format!("— transport.bus_lines, {id}")),
        "chart titles name the dataset and principal"
    );
    let per_day = api_json(
        &s,
        Some(&auditor),
        &format!("/api/v1/audit/usage?group_by=day&dataset=transport.bus_lines&principal={id}"),
    )
    .await;
    assert_eq!(per_day["rows"][0]["reads"], 3, "{per_day}");
    let r = client()
        .get(s.url("/audit/checkpoint"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    for report in [
        "reads-by-dataset-7d",
        "refusals-by-principal",
        "bytes-by-principal",
        "sql-queries-today",
    ] {
        let (st, _, html) = page(&s, &format!("/audit?report={report}"), Some(&cookie)).await;
        assert_eq!(st, 200);
        let section = &html[html.find("id=\"report\"").expect("the report")..];
        assert!(
            !section.contains("notice error"),
            "{report}: {}",
            &section[..section.len().min(600)]
        );
        assert!(
            section.contains("<th scope=\"col\">"),
            "{report} has columns"
        );
    }
}

#[tokio::test]
async fn admin_pages_issue_retier_and_revoke_keys_and_create_departments() {
    let s = start().await;
    let consumer = new_key(&s, "consumer", None).await;
    let outsider = sign_in(&s, &consumer).await;
    assert_eq!(
        page(&s, "/admin", Some(&outsider)).await.0,
        403,
        "admins only"
    );
    let cookie = sign_in(&s, ADMIN).await;
    let (st, _, html) = page(&s, "/admin", Some(&cookie)).await;
    assert_eq!(st, 200);
    assert!(
        html.contains("href=\"/admin\""),
        "the navigation offers administration"
    );
    assert!(html.contains("<table id=\"keys\">"));
    // A new key is shown once, on the answer to the form, and works.
    let r = post_form(
        &s,
        "/admin/keys",
        Some(&cookie),
        &[("name", "分析师"), ("role", "auditor"), ("tier", "premium")],
    )
    .await;
    assert_eq!(r.status(), 201);
    let html = r.text().await.unwrap();
    let shown = html
        .split("id=\"new-key\"")
        .nth(1)
        .unwrap()
        .split("<code>")
        .nth(1)
        .unwrap()
        .split("</code>")
        .next()
        .unwrap()
        .to_string();
    assert!(shown.starts_with("dg_"), "{shown}");
    let me = api_json(&s, Some(&shown), "/api/v1/me").await;
    assert_eq!(
        (me["role"].as_str(), me["tier"].as_str()),
        (Some("auditor"), Some("premium"))
    );
    let (_, _, again) = page(&s, "/admin", Some(&cookie)).await;
    assert!(!again.contains(&shown), "never shown again");
    // Change its tier, then revoke it.
    let id = shown.split('_').nth(1).unwrap();
    let r = post_form(
        &s,
        &format!("/admin/keys/{id}/tier"),
        Some(&cookie),
        &[("tier", "standard")],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        api_json(&s, Some(&shown), "/api/v1/me").await["tier"],
        "standard"
    );
    let r = post_form(&s, &format!("/admin/keys/{id}/revoke"), Some(&cookie), &[]).await;
    assert_eq!(r.status(), 303);
    let r = Client::new()
        .get(s.url("/api/v1/me"))
        .bearer_auth(&shown)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "revoked");
    // A department.
    let r = post_form(
        &s,
        "/admin/departments",
        Some(&cookie),
        &[("id", "water"), ("name", "水务局")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let depts = api_json(&s, None, "/api/v1/departments").await;
    assert!(
        depts
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == "water" && d["name"] == "水务局")
    );
    // A refusal comes back with the API's reason.
    let r = post_form(
        &s,
        "/admin/departments",
        Some(&cookie),
        &[("id", "water"), ("name", "again")],
    )
    .await;
    assert!(
        r.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .contains("error=")
    );
}

#[tokio::test]
async fn every_page_carries_the_security_headers() {
    let s = start().await;
    let cookie = sign_in(&s, ADMIN).await;
    for path in [
        "/",
        "/?q=x&sort=title",
        "/datasets/transport/bus_lines",
        "/datasets/nobody/nothing",
        "/sql",
        "/sql?q=SELECT+1",
        "/signin",
        "/me",
        "/publish/transport",
        "/publish/transport/bus_lines",
        "/audit",
        "/admin",
    ] {
        let (st, h, _) = page(&s, path, Some(&cookie)).await;
        assert!(st == 200 || st == 404, "{path}: {st}");
        assert_security_headers(&h);
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
    }
    let (_, h, _) = page(&s, "/signin", None).await;
    assert_security_headers(&h);
}
