//! The catalog endpoints of API.md §5 against the sample catalog.

use crate::harness::{Options, Server};
use serde_json::Value;

fn names(list: &Value) -> Vec<String> {
    list["datasets"]
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
        .collect()
}

#[tokio::test]
async fn departments_count_only_visible_datasets() {
    let s = Server::start(Options::default()).await;
    let (status, body) = s.get_json("/api/v1/departments").await;
    assert_eq!(status, 200);
    let depts = body.as_array().unwrap();
    assert!(depts.len() >= 4);
    let justice = depts.iter().find(|d| d["id"] == "justice").unwrap();
    assert_eq!(justice["name"], "司法局");
    // legal_aid_cases is conditional (listed), mediation_cases is shared (not for anonymous).
    assert_eq!(justice["dataset_count"], 1);
    for d in depts {
        for key in ["id", "name", "description", "dataset_count"] {
            assert!(d.get(key).is_some(), "{key} missing in {d}");
        }
    }
}

#[tokio::test]
async fn dataset_search_filters_and_pages() {
    let s = Server::start(Options::default()).await;
    let (status, all) = s.get_json("/api/v1/datasets?limit=100").await;
    assert_eq!(status, 200);
    let all_names = names(&all);
    assert_eq!(all["total"].as_u64().unwrap() as usize, all_names.len());
    assert!(all_names.contains(&"justice/legal_aid_cases".to_string()));
    assert!(
        !all_names.contains(&"justice/mediation_cases".to_string()),
        "shared datasets are not listed for anonymous callers"
    );
    assert!(all_names.len() >= 8);
    let mut sorted = all_names.clone();
    sorted.sort();
    assert_eq!(sorted, all_names, "stable order");

    let (_, t) = s.get_json("/api/v1/datasets?department=transport").await;
    assert_eq!(names(&t), ["transport/bus_lines", "transport/bus_stops"]);
    let (_, t) = s.get_json("/api/v1/datasets?tag=%E5%85%AC%E4%BA%A4").await; // 公交
    assert_eq!(t["total"], 2);
    let (_, q) = s.get_json("/api/v1/datasets?q=%E7%A9%BA%E6%B0%94").await; // 空气
    assert_eq!(names(&q), ["environment/air_quality"]);
    let (_, q) = s.get_json("/api/v1/datasets?q=bus%20fares").await;
    assert_eq!(names(&q), ["transport/bus_lines"], "every word must match");
    let (_, c) = s
        .get_json("/api/v1/datasets?access_level=conditional")
        .await;
    assert_eq!(names(&c), ["justice/legal_aid_cases"]);
    let (_, sh) = s.get_json("/api/v1/datasets?access_level=shared").await;
    assert_eq!(sh["total"], 0);
    let (_, p) = s.get_json("/api/v1/datasets?limit=3&offset=2").await;
    assert_eq!(names(&p), all_names[2..5]);
    assert_eq!(p["total"], all["total"]);
    // Without schemas: the same entries, each without its `schema` (which, asked, is there).
    let (status, bare) = s.get_json("/api/v1/datasets?limit=100&schema=false").await;
    assert_eq!(status, 200, "{bare}");
    assert_eq!(names(&bare), all_names);
    for (b, full) in bare["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .zip(all["datasets"].as_array().unwrap())
    {
        assert!(b.get("schema").is_none(), "{b}");
        assert!(!full["schema"].as_array().unwrap().is_empty(), "{full}");
        let mut without = full.clone();
        without.as_object_mut().unwrap().remove("schema");
        assert_eq!(*b, without);
    }
    // Sorted: every entry with its schema, as the unsorted listing gives it.
    let (_, by_title) = s.get_json("/api/v1/datasets?limit=100&sort=title").await;
    assert_eq!(by_title["total"], all["total"]);
    for d in by_title["datasets"].as_array().unwrap() {
        let same = all["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["department"] == d["department"] && a["name"] == d["name"])
            .unwrap();
        assert_eq!(d["schema"], same["schema"], "{d}");
    }
    let (_, sorted_bare) = s
        .get_json("/api/v1/datasets?limit=3&sort=title&schema=false")
        .await;
    assert!(sorted_bare["datasets"][0].get("schema").is_none());
    let (_, with) = s.get_json("/api/v1/datasets?limit=1&schema=true").await;
    assert!(with["datasets"][0]["schema"].is_array(), "{with}");
    assert!(all.get("facets").is_none(), "facets only when asked");

    for bad in [
        "limit=0",
        "limit=100000",
        "limit=abc",
        "offset=-1",
        "access_level=secret",
        "schema=maybe",
        "facets=maybe",
        "bogus=1",
    ] {
        let (status, body) = s.get_json(&format!("/api/v1/datasets?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["status"], 400);
        assert!(body["detail"].as_str().unwrap().len() > 5, "{body}");
    }
}

#[tokio::test]
async fn dataset_detail_and_versions() {
    let s = Server::start(Options::default()).await;
    let (status, d) = s.get_json("/api/v1/datasets/market/market_entities").await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["title"], "市场主体登记信息");
    assert_eq!(d["access_level"], "open");
    assert_eq!(d["current_version"], 1);
    assert_eq!(d["row_count"], 5000);
    assert!(d["size_bytes"].as_u64().unwrap() > 10_000);
    assert_eq!(d["primary_key"], serde_json::json!(["uscc"]));
    let schema = d["schema"].as_array().unwrap();
    let col = |n: &str| schema.iter().find(|c| c["name"] == n).cloned();
    assert_eq!(
        col("registered_capital").unwrap()["type"],
        "decimal128(18,2)"
    );
    assert_eq!(col("established_date").unwrap()["type"], "date32");
    let rep = col("legal_representative").unwrap();
    assert_eq!(
        (rep["sensitivity"].as_str(), rep["mask"].as_str()),
        (Some("masked"), Some("partial"))
    );
    assert!(
        col("contact_phone").is_none(),
        "private columns are absent for outsiders"
    );
    assert!(
        d["links"]["rows"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/datasets/market/market_entities/rows")
    );
    assert!(d["links"]["export"].as_str().unwrap().starts_with(&s.base));
    for key in [
        "created_at",
        "updated_at",
        "description",
        "tags",
        "license",
        "contact",
        "update_frequency",
    ] {
        assert!(d.get(key).is_some(), "{key}");
    }
    let versions = d["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["mode"], "replace");
    assert_eq!(versions[0]["row_count"], 5000);
    assert_eq!(versions[0]["created_by"], "manifest");

    let (status, v) = s
        .get_json("/api/v1/datasets/environment/air_quality/versions")
        .await;
    assert_eq!(status, 200);
    assert_eq!(v[0]["version"], 1);
    assert_eq!(v[0]["rows_added"], 4032);
    let (_, aq) = s.get_json("/api/v1/datasets/environment/air_quality").await;
    assert_eq!(
        aq["schema"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "measured_at")
            .unwrap()["type"],
        "timestamp(us)"
    );
    assert_eq!(d["versions_total"], 1);
}

/// A dataset with a long history (an hourly feed): the detail carries its latest versions and
/// how many there are; the history pages by `limit` and `offset`, and comes whole without them.
#[tokio::test]
async fn a_long_version_history_is_paged() {
    use crate::harness::{ADMIN, admin_env};
    let s = Server::start(Options {
        env: admin_env(&[]),
        ..Default::default()
    })
    .await;
    // Rows of the sample's shape, each with a stop id of its own.
    let sample = std::fs::read_to_string(
        crate::harness::repo_root().join("catalog/transport/bus_stops.csv"),
    )
    .unwrap();
    let mut lines = sample.lines();
    let (header, first) = (lines.next().unwrap(), lines.next().unwrap());
    let rest = first.split_once(',').unwrap().1;
    for i in 0..24 {
        s.publish_csv(
            "transport/bus_stops",
            "append",
            format!("{header}\nX{i:03},{rest}\n"),
        )
        .await;
    }
    let versions = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["version"].as_i64().unwrap())
            .collect()
    };
    let d = s
        .get_json_as(ADMIN, "/api/v1/datasets/transport/bus_stops")
        .await;
    assert_eq!(d["versions_total"], 25, "{d}");
    assert_eq!(versions(&d["versions"]), (6..=25).rev().collect::<Vec<_>>());
    let path = "/api/v1/datasets/transport/bus_stops/versions";
    let all = s.get_json_as(ADMIN, path).await;
    assert_eq!(versions(&all), (1..=25).rev().collect::<Vec<_>>());
    let page = s
        .get_json_as(ADMIN, &format!("{path}?limit=5&offset=20"))
        .await;
    assert_eq!(versions(&page), [5, 4, 3, 2, 1]);
    let tail = s.get_json_as(ADMIN, &format!("{path}?offset=23")).await;
    assert_eq!(versions(&tail), [2, 1]);
    // The portal's page of it says it shows the latest and links the whole history.
    let html = reqwest::get(s.url("/datasets/transport/bus_stops?lang=en"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("The latest versions: 20 / 25"), "{html}");
    assert!(
        html.contains("/api/v1/datasets/transport/bus_stops/versions\">every version (API)</a>"),
        "{html}"
    );
    for bad in ["limit=0", "limit=1001", "limit=x", "bogus=1"] {
        let (st, body) = s.get_json(&format!("{path}?{bad}")).await;
        assert_eq!(st, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn unknown_and_invisible_datasets_are_404_problems() {
    let s = Server::start(Options::default()).await;
    for path in [
        "/api/v1/datasets/market/no_such_dataset",
        "/api/v1/datasets/no_such_dept/market_entities",
        "/api/v1/datasets/justice/mediation_cases",
        "/api/v1/datasets/justice/mediation_cases/versions",
        "/api/v1/datasets/Market/market_entities",
        "/api/v1/datasets/market/..%2F..%2Fetc",
        "/api/v1/nothing/here",
    ] {
        let r = reqwest::get(s.url(path)).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], 404);
        assert_eq!(body["title"], "Not Found");
        assert!(body["type"].as_str().unwrap().starts_with("https://"));
        assert_eq!(body["request_id"], request_id.as_str());
    }
    // The invisible one answers exactly like the missing one.
    let (_, a) = s.get_json("/api/v1/datasets/justice/mediation_cases").await;
    let (_, b) = s.get_json("/api/v1/datasets/justice/no_such_dataset").await;
    assert_eq!(
        a["detail"]
            .as_str()
            .unwrap()
            .replace("mediation_cases", "X"),
        b["detail"]
            .as_str()
            .unwrap()
            .replace("no_such_dataset", "X")
    );
}

#[tokio::test]
async fn dcat_catalog_lists_what_the_caller_sees() {
    let s = Server::start(Options::default()).await;
    let (status, c) = s.get_json("/catalog/data.json").await;
    assert_eq!(status, 200);
    assert_eq!(
        c["conformsTo"],
        "https://project-open-data.cio.gov/v1.1/schema"
    );
    assert_eq!(c["@type"], "dcat:Catalog");
    let datasets = c["dataset"].as_array().unwrap();
    let (_, listed) = s.get_json("/api/v1/datasets?limit=1000").await;
    assert_eq!(datasets.len() as u64, listed["total"].as_u64().unwrap());
    // Required DCAT-US 1.1 fields for every dataset.
    for d in datasets {
        for key in [
            "title",
            "description",
            "keyword",
            "modified",
            "publisher",
            "contactPoint",
            "identifier",
            "accessLevel",
            "distribution",
        ] {
            assert!(d.get(key).is_some(), "{key} missing in {}", d["title"]);
        }
        assert!(["public", "restricted public"].contains(&d["accessLevel"].as_str().unwrap()));
        assert!(
            d["contactPoint"]["hasEmail"]
                .as_str()
                .unwrap()
                .starts_with("mailto:")
        );
        for dist in d["distribution"].as_array().unwrap() {
            let url = dist["downloadURL"].as_str().unwrap();
            assert!(
                url.starts_with(&s.base) && url.contains("/export?format="),
                "{url}"
            );
            assert!(dist["mediaType"].as_str().unwrap().contains('/'));
        }
    }
    let aq = datasets
        .iter()
        .find(|d| d["title"] == "空气质量小时监测数据")
        .unwrap();
    assert_eq!(aq["accrualPeriodicity"], "R/PT1H");
    assert_eq!(aq["publisher"]["name"], "生态环境局");
    assert!(
        !datasets.iter().any(|d| d["title"] == "人民调解案件"),
        "shared data is not in the public catalog"
    );
}

#[tokio::test]
async fn openapi_describes_the_routes() {
    let s = Server::start(Options::default()).await;
    let (status, doc) = s.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/departments",
        "/api/v1/datasets",
        "/api/v1/datasets/{dept}/{name}",
        "/api/v1/datasets/{dept}/{name}/versions",
        "/api/v1/datasets/{dept}/{name}/rows",
        "/api/v1/datasets/{dept}/{name}/export",
        "/api/v1/query",
        "/catalog/data.json",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    // Parameters are where the document says: a path parameter is a `{name}` of its path, and
    // the rows, export, query, catalog, audit and upload options are query parameters.
    let mut query_params = 0;
    for (p, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            for param in op["parameters"].as_array().into_iter().flatten() {
                let (name, place) = (
                    param["name"].as_str().unwrap(),
                    param["in"].as_str().unwrap(),
                );
                match place {
                    "path" => assert!(
                        p.contains(&format!("{{{name}}}")),
                        "{method} {p}: `{name}` declared as a path parameter"
                    ),
                    "query" => query_params += 1,
                    other => panic!("{method} {p}: `{name}` in {other}"),
                }
            }
        }
    }
    assert!(
        query_params >= 30,
        "{query_params} query parameters documented"
    );
    // Every documented GET path answers (with the sample placeholders filled in).
    for (p, ops) in paths {
        if ops.get("get").is_none() {
            continue;
        }
        let mut url = p
            .replace("{dept}", "market")
            .replace("{name}", "market_entities");
        if url == "/api/v1/query" {
            url.push_str("?sql=SELECT%201");
        }
        let r = reqwest::get(s.url(&url)).await.unwrap();
        // Keys, applications and grants need a key: anonymous callers get 401.
        let needs_key = ["/api/v1/keys", "/api/v1/applications", "/api/v1/grants"];
        let expected_401 = (needs_key.contains(&url.as_str()) || url.starts_with("/api/v1/audit/"))
            && r.status() == 401;
        assert!(
            r.status().is_success() || expected_401,
            "{url}: {}",
            r.status()
        );
    }
    assert!(doc["components"]["schemas"].get("DatasetOut").is_some());
}

/// A gauge's value in Prometheus text.
fn gauge_in(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = Server::start(Options::default()).await;
    let r = reqwest::get(s.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let (status, ready) = s.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["catalog"], "ok");
    for _ in 0..3 {
        reqwest::get(s.url("/api/v1/departments")).await.unwrap();
    }
    reqwest::get(s.url("/api/v1/datasets/x/y")).await.unwrap();
    let text = s.metrics().await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("datagate_http_requests_total")
                && l.contains("route=\"/api/v1/departments\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no request counter for departments in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{line}");
    assert!(text.contains("status=\"404\""), "404s are counted");
    assert!(
        text.contains("datagate_http_request_duration_seconds_bucket"),
        "latency histogram"
    );
    // The audit log says how fast it makes records durable, in sub-millisecond buckets, and
    // how many records each fsync carried.
    let sum_of = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert!(
        sum_of("datagate_audit_records_total") >= 4.0,
        "every request has its record:\n{text}"
    );
    assert!(
        sum_of("datagate_audit_batch_records_count") >= 1.0,
        "{text}"
    );
    assert!(
        sum_of("datagate_audit_fsync_seconds_count") >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("datagate_audit_fsync_seconds_bucket{le=\"0.0001\"}"),
        "{text}"
    );
    // DataFusion's caches say what they hold: a query reads (and caches) Parquet metadata.
    let sql = "/api/v1/query?sql=select%20count(*)%20from%20environment.air_quality%20where%20aqi%20%3E%2050";
    assert_eq!(reqwest::get(s.url(sql)).await.unwrap().status(), 200);
    let text = s.metrics().await;
    let gauge = |name: &str| gauge_in(&text, name);
    let held = gauge("datagate_query_cache_bytes{cache=\"parquet_metadata\"}");
    let limit = gauge("datagate_query_cache_limit_bytes{cache=\"parquet_metadata\"}");
    assert!(held > 0.0 && held <= limit, "{held} of {limit}");
    assert_eq!(
        gauge("datagate_query_cache_bytes{cache=\"bloom_filters\"}"),
        0.0,
        "no lookup by key yet"
    );
    // A lookup by primary key reads the key column's bloom filters, and keeps them.
    look_up_bus_line(&s).await;
    let text = s.metrics().await;
    let gauge = |name: &str| gauge_in(&text, name);
    let blooms = gauge("datagate_query_cache_bytes{cache=\"bloom_filters\"}");
    let limit = gauge("datagate_query_cache_limit_bytes{cache=\"bloom_filters\"}");
    assert!(blooms > 0.0 && blooms <= limit, "{blooms} of {limit}");
}

/// A lookup by primary key through the SQL API: one bus line.
async fn look_up_bus_line(s: &Server) {
    let sql = "/api/v1/query?sql=select%20*%20from%20transport.bus_lines%20where%20line_id%20%3D%20%27BL00042%27";
    let found: serde_json::Value = reqwest::get(s.url(sql))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["row_count"], 1, "{found}");
}

#[tokio::test]
async fn the_bloom_cache_can_be_turned_off() {
    let s = Server::start(Options {
        env: vec![("DATAGATE_QUERY__BLOOM_CACHE_BYTES".into(), "0".into())],
        ..Options::default()
    })
    .await;
    look_up_bus_line(&s).await;
    look_up_bus_line(&s).await;
    let text = s.metrics().await;
    assert_eq!(
        gauge_in(&text, "datagate_query_cache_bytes{cache=\"bloom_filters\"}"),
        0.0
    );
    assert_eq!(
        gauge_in(
            &text,
            "datagate_query_cache_limit_bytes{cache=\"bloom_filters\"}"
        ),
        0.0
    );
}

/// `names=true` searches the tables' SQL names as well: what a SQL console's table list asks.
#[tokio::test]
async fn dataset_listing_searches_sql_names_when_asked() {
    let s = Server::start(Options::default()).await;
    let names = |path: &str| {
        let path = path.to_string();
        let s = &s;
        async move {
            let (status, body) = s.get_json(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            let listed: Vec<String> = body["datasets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| format!("{}.{}", d["department"], d["name"]).replace('"', ""))
                .collect();
            assert_eq!(body["total"], listed.len(), "{path}");
            listed
        }
    };
    assert_eq!(
        names("/api/v1/datasets?q=transport.bus&names=true").await,
        ["transport.bus_lines", "transport.bus_stops"]
    );
    assert!(names("/api/v1/datasets?q=transport.bus").await.is_empty());
    assert!(
        names("/api/v1/datasets?q=transport.bus&names=false")
            .await
            .is_empty()
    );
    // Each word anywhere: one in a name, one in a title.
    assert_eq!(
        names("/api/v1/datasets?q=BUS_S+%E5%85%AC%E4%BA%A4&names=true").await,
        ["transport.bus_stops"]
    );
    // Unseen datasets stay unseen.
    assert!(
        names("/api/v1/datasets?q=justice.mediation&names=true")
            .await
            .is_empty()
    );
}

/// The fields a catalog is browsed by: filters, their counts (`facets=true`) and the orders,
/// each checked against the whole listing, counted and sorted here.
#[tokio::test]
async fn dataset_listing_facets_filters_and_orders() {
    let s = Server::start(Options::default()).await;
    let (_, all) = s.get_json("/api/v1/datasets?limit=100").await;
    let entries = all["datasets"].as_array().unwrap().clone();
    let field = |d: &Value, f: &str| d[f].as_str().unwrap_or_default().to_string();
    let counted = |matches: &[&Value], f: &str| -> Vec<(String, u64)> {
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for d in matches {
            let values: Vec<String> = if f == "tag" {
                let mut tags: Vec<String> = d["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect();
                tags.sort();
                tags.dedup();
                tags
            } else {
                vec![field(d, f)]
            };
            for v in values.into_iter().filter(|v| !v.is_empty()) {
                *counts.entry(v).or_default() += 1;
            }
        }
        let mut list: Vec<(String, u64)> = counts.into_iter().collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list
    };
    let facet = |answer: &Value, f: &str| -> Vec<(String, u64)> {
        answer["facets"][f]
            .as_array()
            .unwrap_or_else(|| panic!("{f}: {answer}"))
            .iter()
            .map(|e| {
                (
                    e["value"].as_str().unwrap().to_string(),
                    e["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let frequency = field(&entries[0], "update_frequency");
    assert!(!frequency.is_empty());
    for (query, keep) in [
        (
            "",
            Box::new(|_: &Value| true) as Box<dyn Fn(&Value) -> bool>,
        ),
        (
            "department=transport",
            Box::new(|d: &Value| d["department"] == "transport"),
        ),
        (
            "access_level=open",
            Box::new(|d: &Value| d["access_level"] == "open"),
        ),
        (
            "source_format=csv",
            Box::new(|d: &Value| d["source_format"] == "csv"),
        ),
        (
            &*format!("update_frequency={frequency}"),
            Box::new(move |d: &Value| d["update_frequency"] == frequency.as_str()),
        ),
        (
            "source_format=parquet",
            Box::new(|d: &Value| d["source_format"] == "parquet"),
        ),
    ] {
        let matches: Vec<&Value> = entries.iter().filter(|d| keep(d)).collect();
        let (status, answer) = s
            .get_json(&format!("/api/v1/datasets?limit=100&facets=true&{query}"))
            .await;
        assert_eq!(status, 200, "{query}: {answer}");
        assert_eq!(
            answer["total"].as_u64().unwrap() as usize,
            matches.len(),
            "{query}"
        );
        let listed: Vec<&Value> = answer["datasets"].as_array().unwrap().iter().collect();
        assert_eq!(listed, matches, "{query}");
        for (f, key) in [
            ("department", "department"),
            ("access_level", "access_level"),
            ("tag", "tag"),
            ("update_frequency", "update_frequency"),
            ("source_format", "source_format"),
        ] {
            assert_eq!(facet(&answer, f), counted(&matches, key), "{query}: {f}");
        }
    }
    let (_, facets) = s.get_json("/api/v1/datasets?limit=1&facets=true").await;
    assert!(
        facet(&facets, "department").len() >= 4 && facet(&facets, "tag").len() >= 4,
        "{facets}"
    );
    // The orders, paged: what sorting the whole listing here gives.
    let key = |d: &Value| (field(d, "department"), field(d, "name"));
    for (sort, cmp) in [
        (
            "title",
            Box::new(|a: &&Value, b: &&Value| {
                field(a, "title")
                    .cmp(&field(b, "title"))
                    .then_with(|| key(a).cmp(&key(b)))
            }) as Box<dyn Fn(&&Value, &&Value) -> std::cmp::Ordering>,
        ),
        (
            "updated",
            Box::new(|a: &&Value, b: &&Value| {
                field(b, "updated_at")
                    .cmp(&field(a, "updated_at"))
                    .then_with(|| key(a).cmp(&key(b)))
            }),
        ),
    ] {
        let mut sorted: Vec<&Value> = entries.iter().collect();
        sorted.sort_by(|a, b| cmp(a, b));
        let mut paged = Vec::new();
        for offset in (0..sorted.len()).step_by(3) {
            let (_, page) = s
                .get_json(&format!(
                    "/api/v1/datasets?limit=3&offset={offset}&sort={sort}"
                ))
                .await;
            paged.extend(page["datasets"].as_array().unwrap().iter().map(key));
        }
        let expected: Vec<_> = sorted.iter().map(|d| key(d)).collect();
        assert_eq!(paged, expected, "sort={sort}");
    }
}
