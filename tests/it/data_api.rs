//! The open-data API (API.md §5 "Data"): rows pages, exports and read-only SQL, checked against
//! the sample catalog's CSV files as ground truth.

use crate::harness::{Options, Server, repo_root};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const ADMIN: &str = "dg_admin1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn options(extra: &[(&str, &str)]) -> Options {
    let mut env = vec![("DATAGATE_ADMIN_KEY".to_string(), ADMIN.to_string())];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Options {
        env,
        ..Default::default()
    }
}

/// The sample CSV of `dept/name` as records (header first).
fn sample_csv(dept: &str, name: &str) -> Vec<csv::StringRecord> {
    let path = repo_root().join(format!("catalog/{dept}/{name}.csv"));
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap();
    r.records().map(|r| r.unwrap()).collect()
}

fn column_values(records: &[csv::StringRecord], column: &str) -> Vec<String> {
    let i = records[0].iter().position(|h| h == column).unwrap();
    records[1..].iter().map(|r| r[i].to_string()).collect()
}

async fn get(c: &Client, url: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = c.get(url).send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// `POST /api/v1/query` with `body`.
async fn send_query(c: &Client, s: &Server, body: Value) -> reqwest::Response {
    c.post(s.url("/api/v1/query"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn query(c: &Client, s: &Server, body: Value) -> (StatusCode, Value) {
    let r = send_query(c, s, body).await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn strings(rows: &Value, column: &str) -> Vec<String> {
    rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[column].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn paging_is_complete_ordered_and_pinned_while_a_version_lands() {
    let s = Server::start(options(&[])).await;
    let c = Client::new();
    let truth = sample_csv("transport", "bus_stops");
    // Without `order`, pages come in storage order: the upload's own order.
    let expected: Vec<String> = column_values(&truth, "stop_id");

    // The first page: storage order, a `next` link pinned to version 1.
    let r = c
        .get(s.url("/api/v1/datasets/transport/bus_stops/rows?limit=700&select=stop_id,district"))
        .send()
        .await
        .unwrap();
    let (st, h) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap();
    let page: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(st, 200, "{page}");
    assert_eq!(h["x-dataset-versions"], "transport.bus_stops=1");
    assert_eq!(
        page["columns"],
        json!([{"name": "stop_id", "type": "utf8"}, {"name": "district", "type": "utf8"}])
    );
    let mut seen = strings(&page, "stop_id");
    assert_eq!(page["row_count"], 700);
    let mut next = page["next"].as_str().unwrap().to_string();
    assert!(
        next.contains("version=1") && next.contains("offset=700"),
        "{next}"
    );

    // A new version lands mid-way (the same rows again, appended).
    let body = std::fs::read(repo_root().join("catalog/transport/bus_stops.csv")).unwrap();
    let r = c
        .post(s.url("/api/v1/datasets/transport/bus_stops/versions?mode=append"))
        .bearer_auth(ADMIN)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Following `next` reads version 1 to its end: nothing skipped, nothing repeated.
    loop {
        let (st, h, page) = get(&c, &next).await;
        assert_eq!(st, 200, "{page}");
        assert_eq!(h["x-dataset-versions"], "transport.bus_stops=1");
        seen.extend(strings(&page, "stop_id"));
        match page["next"].as_str() {
            Some(n) => next = n.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, expected, "pages in storage order, each row once");

    // Without `version`, the current version (2) is read, twice as long.
    let (_, h, page) = get(
        &c,
        &s.url("/api/v1/datasets/transport/bus_stops/rows?limit=1&offset=5999"),
    )
    .await;
    assert_eq!(h["x-dataset-versions"], "transport.bus_stops=2");
    assert_eq!(page["row_count"], 1);
    assert!(page["next"].is_null());

    // A page of no rows gives the columns, and no link back to itself (a client following
    // `next` until there is none would never stop).
    for url in [
        "/api/v1/datasets/transport/bus_stops/rows?limit=0",
        "/api/v1/datasets/transport/bus_stops/rows?limit=0&offset=10&order=stop_id",
    ] {
        let (st, h, page) = get(&c, &s.url(url)).await;
        assert_eq!(st, 200, "{page}");
        assert_eq!(page["row_count"], 0, "{url}");
        assert_eq!(page["rows"].as_array().map(Vec::len), Some(0), "{url}");
        assert!(
            page["columns"].as_array().is_some_and(|c| !c.is_empty()),
            "{url}"
        );
        assert!(page["next"].is_null(), "{url}: {page}");
        assert!(h.get("link").is_none(), "{url}: {h:?}");
    }
}

#[tokio::test]
async fn filters_selects_orders_and_formats_match_the_source_data() {
    let s = Server::start(options(&[])).await;
    let c = Client::new();
    let truth = sample_csv("transport", "bus_lines");
    let h = &truth[0];
    let col = |name: &str| h.iter().position(|x| x == name).unwrap();
    let (stops, km, id) = (col("stop_count"), col("length_km"), col("line_id"));

    // where + order + select against the CSV.
    let mut expected: Vec<(i64, String)> = truth[1..]
        .iter()
        .filter(|r| r[stops].parse::<i64>().unwrap() >= 20 && r[km].parse::<f64>().unwrap() < 15.0)
        .map(|r| (r[stops].parse().unwrap(), r[id].to_string()))
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let url = s.url(
        "/api/v1/datasets/transport/bus_lines/rows?select=line_id,stop_count\
         &where=stop_count%20%3E%3D%2020%20AND%20length_km%20%3C%2015&order=stop_count%20desc&limit=10000",
    );
    let (st, _, page) = get(&c, &url).await;
    assert_eq!(st, 200, "{page}");
    let got: Vec<(i64, String)> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["stop_count"].as_i64().unwrap(),
                r["line_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(got, expected, "ties broken by the primary key");

    // The same rows in every format.
    let n = expected.len();
    let base = s.url(
        "/api/v1/datasets/transport/bus_lines/export?select=line_id,stop_count\
         &where=stop_count%20%3E%3D%2020%20AND%20length_km%20%3C%2015",
    );
    let csv_text = c
        .get(format!("{base}&format=csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv_text.lines().count(), n + 1);
    assert_eq!(csv_text.lines().next(), Some("line_id,stop_count"));
    let ndjson = c
        .get(&base)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    let ndjson = ndjson.text().await.unwrap();
    assert_eq!(ndjson.lines().count(), n);
    let first: Value = serde_json::from_str(ndjson.lines().next().unwrap()).unwrap();
    assert!(
        first["stop_count"].is_i64(),
        "integers stay numbers: {first}"
    );

    let arrow = c.get(format!("{base}&format=arrow")).send().await.unwrap();
    assert!(
        arrow.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"transport-bus_lines-v1.arrows\"")
    );
    let bytes = arrow.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    // Strings are scanned as views inside a query; they leave as the catalog's utf8.
    let schema = reader.schema();
    assert_eq!(
        schema.field_with_name("line_id").unwrap().data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, n);

    let parquet_bytes = c
        .get(format!("{base}&format=parquet"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(parquet_bytes)
            .unwrap();
    assert_eq!(
        builder
            .schema()
            .field_with_name("line_id")
            .unwrap()
            .data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    let reader = builder.build().unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, n);

    // A whole export has every row.
    let all = c
        .get(s.url("/api/v1/datasets/transport/bus_lines/export?format=csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(all.lines().count(), truth.len());
}

#[tokio::test]
async fn sql_joins_params_caps_and_limits() {
    let s = Server::start(options(&[
        ("DATAGATE_LIMITS__MAX_QUERY_ROWS", "50"),
        ("DATAGATE_LIMITS__QUERY_MEMORY_BYTES", "33554432"),
    ]))
    .await;
    let c = Client::new();
    let truth = sample_csv("market", "market_entities");
    let districts: BTreeSet<String> = column_values(&truth, "district").into_iter().collect();

    // An aggregate matches the source.
    let (st, body) = query(
        &c,
        &s,
        json!({"sql": "SELECT district, count(*) AS n FROM market.market_entities GROUP BY district ORDER BY district"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let got: BTreeSet<String> = strings(&body, "district").into_iter().collect();
    assert_eq!(got, districts);
    let total: i64 = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .sum();
    assert_eq!(total as usize, truth.len() - 1);
    // In Arrow, the group keys (computed over view-typed strings) are the catalog's utf8.
    let arrow = send_query(&c, &s, json!({"sql": "SELECT district, count(*) AS n FROM market.market_entities GROUP BY district", "format": "arrow"})).await;
    assert_eq!(arrow.status(), 200);
    let bytes = arrow.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    assert_eq!(
        reader.schema().field(0).data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    let groups: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(groups, districts.len());

    // A join across departments, with positional parameters.
    let (st, body) = query(
        &c,
        &s,
        json!({
            "sql": "SELECT count(*) AS n FROM market.enforcement_decisions d \
                    JOIN market.market_entities e ON d.party_uscc = e.uscc WHERE e.district = $1 AND d.fine_amount > $2",
            "params": [districts.iter().next().unwrap(), 0]
        }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert!(body["rows"][0]["n"].is_i64());
    // The same with `?` placeholders, numbered in the order they appear.
    let (st, marks) = query(
        &c,
        &s,
        json!({
            "sql": "SELECT count(*) AS n FROM market.enforcement_decisions d \
                    JOIN market.market_entities e ON d.party_uscc = e.uscc WHERE e.district = ? AND d.fine_amount > ?",
            "params": [districts.iter().next().unwrap(), 0]
        }),
    )
    .await;
    assert_eq!(
        (st.as_u16(), &marks["rows"]),
        (200, &body["rows"]),
        "{marks}"
    );

    // As many values as the statement takes, no fewer and no more (PostgreSQL's rule): a value
    // too many is refused, not silently ignored.
    for (sql, params, detail) in [
        (
            "SELECT $1 AS a, $2 AS b",
            json!([1]),
            "takes 2 parameters ($1 to $2); 1 was given",
        ),
        (
            "SELECT ? AS a",
            json!([1, 2]),
            "takes 1 parameter ($1); 2 were given",
        ),
        (
            "SELECT 1 AS a",
            json!([1]),
            "takes no parameters; 1 was given",
        ),
        (
            "SELECT $1 AS a",
            json!([]),
            "takes 1 parameter ($1); none was given",
        ),
    ] {
        let (st, body) = query(&c, &s, json!({"sql": sql, "params": params})).await;
        assert_eq!(st, 400, "{sql}: {body}");
        assert_eq!(body["parameter"], "params", "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains(detail),
            "{sql}: {body}"
        );
    }
    // A number the statement skips still takes its place.
    let (st, body) = query(
        &c,
        &s,
        json!({"sql": "SELECT $2 AS b", "params": [1, "two"]}),
    )
    .await;
    assert_eq!(
        (st.as_u16(), &body["rows"][0]["b"]),
        (200, &json!("two")),
        "{body}"
    );

    // Past the row cap: exactly the cap, and `truncated`.
    let (st, body) = query(
        &c,
        &s,
        json!({"sql": "SELECT uscc FROM market.market_entities"}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["row_count"], 50);
    assert_eq!(body["rows"].as_array().unwrap().len(), 50);
    assert_eq!(body["truncated"], true);

    // EXPLAIN is a query too.
    let (st, body) = query(
        &c,
        &s,
        json!({"sql": "EXPLAIN SELECT * FROM transport.bus_lines WHERE stop_count > 3"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    // Over the memory limit: 422, and the server keeps serving.
    let (st, body) = query(
        &c,
        &s,
        json!({"sql": "SELECT a.uscc || b.uscc AS k, count(*) AS n FROM market.market_entities a \
                        CROSS JOIN market.market_entities b GROUP BY 1 ORDER BY 2 DESC, 1"}),
    )
    .await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(
        body["type"],
        "https://datagate.dev/problems/query-memory-limit"
    );

    // Recursion without a stop: 422 at the iteration budget.
    let (st, body) = query(
        &c,
        &s,
        json!({"sql": "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
                        SELECT count(*) FROM r"}),
    )
    .await;
    assert_eq!(st, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("max_recursion_depth"),
        "{body}"
    );

    // Over the cost budget (5,000³ row pairs): 422 before anything runs.
    let (st, body) = query(
        &c,
        &s,
        json!({"sql": "SELECT max(a.uscc || b.uscc || c.uscc) FROM market.market_entities a \
                        CROSS JOIN market.market_entities b CROSS JOIN market.market_entities c",
               "timeout_ms": 300}),
    )
    .await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(
        body["type"],
        "https://datagate.dev/problems/query-over-limit"
    );

    // Over the time limit: 504 within about the limit.
    let started = Instant::now();
    let (st, body) = query(
        &c,
        &s,
        // (Slow in CPU, small in memory: per pair of rows one short string, counted, so the
        // time limit and not the 32 MiB memory limit is what stops it.)
        json!({"sql": "SELECT count(*) FROM market.market_entities a \
                        CROSS JOIN market.market_entities b WHERE a.uscc || b.uscc LIKE '%zz%'",
               "timeout_ms": 300}),
    )
    .await;
    assert_eq!(st, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(body["limit_ms"], 300);

    // SQL errors are 400s with a position, never 500s.
    let (st, body) = query(
        &c,
        &s,
        json!({"sql": "SELECT nope FROM transport.bus_lines"}),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("nope"));
    let (st, body) = query(&c, &s, json!({"sql": "SELECT 1\nFROM FROM x"})).await;
    assert_eq!(st, 400);
    assert_eq!(
        (&body["line"], &body["column"]),
        (&json!(2), &json!(6)),
        "{body}"
    );
    let (st, body) = query(
        &c,
        &s,
        json!({"sql": "SELECT CAST(line_name AS INT) FROM transport.bus_lines"}),
    )
    .await;
    assert_eq!(st, 400, "{body}");

    // Still serving.
    let (st, _) = query(&c, &s, json!({"sql": "SELECT 1"})).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn etags_answer_304_without_running_and_change_with_versions() {
    let s = Server::start(options(&[])).await;
    let c = Client::new();
    for path in [
        "/api/v1/datasets/transport/bus_lines/rows?limit=5",
        "/api/v1/datasets/transport/bus_lines/export?format=csv",
        "/api/v1/query?sql=SELECT%20count(*)%20FROM%20transport.bus_lines",
    ] {
        let r = c.get(s.url(path)).send().await.unwrap();
        if r.status() != 200 {
            panic!("{path}: {}", r.text().await.unwrap());
        }
        let tag = r.headers()["etag"].to_str().unwrap().to_string();
        assert!(tag.starts_with("W/\""), "{tag}");
        assert_eq!(r.headers()["x-dataset-versions"], "transport.bus_lines=1");
        let again = c
            .get(s.url(path))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], tag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
        // Another format is another representation.
        let other_path = if path.contains("format=csv") {
            path.replace("format=csv", "format=ndjson")
        } else {
            format!("{path}&format=ndjson")
        };
        let other = c
            .get(s.url(&other_path))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 200, "{path}");
    }
    // Answers that change without a new version get no tag, so never a 304: functions that
    // are not immutable, and the catalog's own tables (a newly registered dataset).
    for sql in [
        "SELECT now() AS t",
        "SELECT line_id, random() AS r FROM transport.bus_lines LIMIT 2",
        "SELECT count(*) FROM transport.bus_lines WHERE current_date() > DATE '2000-01-01'",
        "SELECT table_name FROM information_schema.tables",
    ] {
        let path = format!(
            "/api/v1/query?sql={}",
            url::form_urlencoded::byte_serialize(sql.as_bytes()).collect::<String>()
        );
        let r = c
            .get(s.url(&path))
            .header("if-none-match", "*")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{sql}");
        assert!(r.headers().get("etag").is_none(), "{sql}");
    }
    // A new version changes the tag.
    let path = "/api/v1/datasets/transport/bus_lines/rows?limit=5";
    let before = c.get(s.url(path)).send().await.unwrap().headers()["etag"].clone();
    let body = std::fs::read(repo_root().join("catalog/transport/bus_lines.csv")).unwrap();
    let r = c
        .post(s.url("/api/v1/datasets/transport/bus_lines/versions?mode=replace"))
        .bearer_auth(ADMIN)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .get(s.url(path))
        .header("if-none-match", before.to_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-dataset-versions"], "transport.bus_lines=2");
    assert_ne!(r.headers()["etag"], before);
    // So does masking a column (same version, other bytes): a cache revalidating its copy
    // must not be told that the unmasked answer is still current.
    let paths = [
        "/api/v1/datasets/transport/bus_lines/rows?limit=5",
        "/api/v1/datasets/transport/bus_lines/export?format=csv",
        "/api/v1/query?sql=SELECT%20line_name%20FROM%20transport.bus_lines%20ORDER%20BY%201%20LIMIT%203",
    ];
    let mut tags = Vec::new();
    for path in paths {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        tags.push(r.headers()["etag"].to_str().unwrap().to_string());
        assert!(r.text().await.unwrap().contains("1路"), "{path}");
    }
    mask_line_names(&c, &s).await;
    for (path, tag) in paths.iter().zip(&tags) {
        let r = c
            .get(s.url(path))
            .header("if-none-match", tag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-dataset-versions"], "transport.bus_lines=2");
        assert_ne!(r.headers()["etag"].to_str().unwrap(), tag, "{path}");
        assert!(
            !r.text().await.unwrap().contains("1路"),
            "{path}: masked now"
        );
    }
}

#[tokio::test]
async fn bad_parameters_are_clear_400s() {
    let s = Server::start(options(&[])).await;
    let c = Client::new();
    let rows = "/api/v1/datasets/transport/bus_lines/rows";
    for (query, status, parameter) in [
        ("?limit=100000000", 400, Some("limit")),
        ("?limit=-1", 400, Some("limit")),
        ("?offset=-5", 400, Some("offset")),
        ("?offset=abc", 400, Some("offset")),
        ("?select=line_id,nope", 400, Some("select")),
        ("?where=nope%20%3D%201", 400, Some("where")),
        ("?where=line_id%20%3D", 400, Some("where")),
        ("?where=stop_count", 400, Some("where")),
        // A quoted literal the column's type cannot read: refused before the query runs.
        ("?where=stop_count%20%3E%20%27many%27", 400, Some("where")),
        (
            "?where=fare%20BETWEEN%20%271%27%20AND%20%27x%27",
            400,
            Some("where"),
        ),
        // A boolean written as text reads as the boolean (the engine alone cannot compare
        // them); text that is no boolean is refused at its position.
        (
            "?where=night_line%20%3D%20%27perhaps%27",
            400,
            Some("where"),
        ),
        // A text column compared with a number: the cast fails on the first row read.
        ("?where=line_id%20%3D%201", 400, None),
        // Types DataFusion's analyzer cannot coerce (it calls them internal errors).
        ("?where=night_line%20BETWEEN%201.5%20AND%202", 400, None),
        ("?order=nope", 400, Some("order")),
        ("?order=stop_count%20sideways", 400, Some("order")),
        ("?format=xlsx", 400, Some("format")),
        ("?version=99", 404, None),
        ("?version=x", 400, Some("version")),
        ("?timeout_ms=0", 400, Some("timeout_ms")),
        ("?bogus=1", 400, Some("bogus")),
    ] {
        let (st, h, body) = get(&c, &s.url(&format!("{rows}{query}"))).await;
        assert_eq!(st.as_u16(), status, "{query}: {body}");
        assert_eq!(h["content-type"], "application/problem+json", "{query}");
        if let Some(p) = parameter {
            assert_eq!(body["parameter"], p, "{query}: {body}");
        }
    }
    // A value where a condition belongs is named with its type, in the API's words.
    let (_, _, body) = get(&c, &s.url(&format!("{rows}?where=stop_count"))).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("must be a condition")
            && detail.contains("`stop_count` is a value of type int"),
        "{body}"
    );
    // A stored value that does not read as the number it is compared with: the message says
    // it is the data's.
    let (_, _, body) = get(&c, &s.url(&format!("{rows}?where=line_id%20%3D%201"))).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("not written in the query"), "{body}");
    // A boolean written as text reads as the boolean (the engine alone cannot compare them).
    for (quoted, bare) in [
        ("night_line%20%3D%20%27true%27", "night_line%20%3D%20true"),
        (
            "night_line%20IN%20(%27false%27)%20AND%20stop_count%20%3E%20%2730%27",
            "night_line%20%3D%20false%20AND%20stop_count%20%3E%2030",
        ),
    ] {
        let rows_of = |w: &str| format!("{rows}?limit=1000&select=line_id&where={w}");
        let (st, _, quoted_rows) = get(&c, &s.url(&rows_of(quoted))).await;
        assert_eq!(st, 200, "{quoted}: {quoted_rows}");
        let (_, _, bare_rows) = get(&c, &s.url(&rows_of(bare))).await;
        assert_eq!(quoted_rows["rows"], bare_rows["rows"], "{quoted}");
        assert!(
            !quoted_rows["rows"].as_array().unwrap().is_empty(),
            "{quoted}"
        );
    }
    // The same in SQL: the filter runs inside the Parquet reader, and its failure is still
    // the query's.
    let (st, body) = query(
        &c,
        &s,
        serde_json::json!({"sql": "SELECT * FROM transport.bus_lines WHERE line_id IN (1, 2.5)"}),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Cannot cast string"),
        "{body}"
    );
    // SQL text the column's type cannot read: placed at its literal (the second line here),
    // whether the engine meets it while planning or while reading.
    for (sql, column) in [
        (
            "SELECT line_id\nFROM transport.bus_lines WHERE stop_count > 'many'",
            45,
        ),
        (
            "SELECT line_id\nFROM transport.bus_lines b WHERE b.fare < 'cheap'",
            43,
        ),
    ] {
        let (st, body) = query(&c, &s, serde_json::json!({ "sql": sql })).await;
        assert_eq!(st, 400, "{sql}: {body}");
        assert_eq!(
            (body["line"].as_u64(), body["column"].as_u64()),
            (Some(2), Some(column)),
            "{sql}: {body}"
        );
    }
    // A boolean compared with quoted text, which the engine refuses: how to write it, where.
    let (st, body) = query(
        &c,
        &s,
        serde_json::json!({"sql": "SELECT count(*) FROM transport.bus_lines WHERE night_line = 'true'"}),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["column"], 61, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("without quotes"),
        "{body}"
    );
    // A stored value that does not read as the number it is compared with: not in the text,
    // and the message says where to look.
    let (st, body) = query(
        &c,
        &s,
        serde_json::json!({"sql": "SELECT * FROM transport.bus_lines WHERE line_id = 1"}),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body.get("line").is_none(), "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("not written in the query"), "{body}");
    // The position of a bad column inside `where`.
    let (_, _, body) = get(
        &c,
        &s.url(&format!(
            "{rows}?where=stop_count%20%3E%201%20AND%20nope%20%3D%202"
        )),
    )
    .await;
    assert_eq!(body["column"], 20, "{body}");
    // An Accept nothing can satisfy, or that refuses what could be made (`q=0`); and one
    // whose qualities, not its order, name the format.
    for (accept, status, content_type) in [
        ("application/xml", 406, "application/problem+json"),
        ("application/json;q=0", 406, "application/problem+json"),
        (
            "application/json;q=0.1, text/csv",
            200,
            "text/csv; charset=utf-8",
        ),
    ] {
        let r = c
            .get(s.url(rows))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{accept}");
        assert_eq!(r.headers()["content-type"], content_type, "{accept}");
    }
    // Unknown and invisible datasets.
    for path in [
        "/api/v1/datasets/transport/nope/rows",
        "/api/v1/datasets/justice/mediation_cases/rows",
        "/api/v1/datasets/justice/mediation_cases/export",
    ] {
        let (st, _, _) = get(&c, &s.url(path)).await;
        assert_eq!(st, 404, "{path}");
    }
    // A conditional dataset is listed for everyone, but its data needs a grant.
    let (st, _, _) = get(&c, &s.url("/api/v1/datasets/justice/legal_aid_cases/rows")).await;
    assert_eq!(st, 403);
}

/// The body of a response, or the error that ended it.
async fn read_body(r: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut r = r;
    let mut out = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c),
            Ok(None) => return Ok(out),
            Err(e) => return Err(format!("{e} after {} bytes", out.len())),
        }
    }
}

async fn queries_in_flight(s: &Server) -> f64 {
    let text = s.metrics().await;
    text.lines()
        .find(|l| l.starts_with("datagate_queries_in_flight"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn streams_cancel_on_disconnect_and_fail_visibly_mid_stream() {
    let s = Server::start(options(&[(
        "DATAGATE_LIMITS__MAX_QUERY_ROWS",
        "1000000000",
    )]))
    .await;
    let c = Client::new();
    let cross = "SELECT a.uscc, b.uscc AS other FROM market.market_entities a \
                 CROSS JOIN market.market_entities b";

    // The first bytes leave long before the 25M-row result exists; dropping the response
    // cancels the query.
    let started = Instant::now();
    let mut r = send_query(&c, &s, json!({"sql": cross, "format": "csv"})).await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(queries_in_flight(&s).await, 1.0);
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(5);
    while queries_in_flight(&s).await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the query kept running after the disconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A failure after the first rows aborts the body: the client never sees a complete,
    // "successful" result.
    let failing = "SELECT CAST(CASE WHEN n < 20000 THEN '1' ELSE 'boom' END AS INT) AS v FROM \
                   (SELECT row_number() OVER () AS n FROM market.market_entities a \
                    CROSS JOIN market.market_entities b) t";
    let r = send_query(&c, &s, json!({"sql": failing, "format": "csv"})).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let outcome = read_body(r).await;
    assert!(
        outcome.is_err(),
        "a truncated body must fail the transfer: {:?}\n{}",
        outcome.map(|b| String::from_utf8_lossy(&b[b.len().saturating_sub(200)..]).into_owned()),
        s.log_text()
    );
    // The query's own cast failed: its fault, a warning, not a gateway error (it was logged
    // as an ERROR, and Flight answered `Internal`).
    let log = s.log_text();
    let failed = log
        .lines()
        .find(|l| l.contains(&id) && l.contains("query failed mid-stream"))
        .unwrap_or_else(|| panic!("{log}"));
    let failed: Value = serde_json::from_str(failed).unwrap();
    assert_eq!(failed["level"], "WARN", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("Cannot cast"),
        "{failed}"
    );
    let end = s.audit_end(&id).await;
    assert_eq!(end["outcome"], "failed", "{end}");
    assert!(
        end["error"].as_str().unwrap().contains("Cannot cast"),
        "{end}"
    );

    // A time limit reached mid-stream also aborts.
    let r = send_query(
        &c,
        &s,
        json!({"sql": cross, "format": "ndjson", "timeout_ms": 700}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(read_body(r).await.is_err());
    let log = s.log_text();
    assert!(
        log.contains("query failed mid-stream"),
        "logged with the request id"
    );

    // A time limit of a millisecond passes around the first rows: before the query starts
    // (504), or after (a 200 whose body breaks, unless the whole answer was sent by then),
    // but the client always gets an answer's head, never a connection closed before one
    // (the API fuzzer's finding, seed 31337: `SELECT 1` in 1 ms, on a release build; a debug
    // build rarely starts a query within 1 ms, so the body's own unit tests in
    // `routes::data` hold the order that fixed it).
    for (sql, whole) in [(cross, false), ("SELECT 1", true)] {
        for attempt in 0..40 {
            let r = c
                .post(s.url("/api/v1/query"))
                .json(&json!({"sql": sql, "format": "ndjson", "timeout_ms": 1}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{sql}, attempt {attempt}: no answer at all: {e}"));
            match r.status().as_u16() {
                // Whole if it was sent before the limit passed, else broken.
                200 if whole => {
                    if let Ok(body) = read_body(r).await {
                        let row: Value = serde_json::from_slice(&body).unwrap();
                        let values: Vec<_> = row.as_object().unwrap().values().collect();
                        assert_eq!(values, [&json!(1)], "{row}");
                    }
                }
                200 => assert!(read_body(r).await.is_err(), "{sql}, attempt {attempt}"),
                504 => {}
                other => panic!("{sql}, attempt {attempt}: {other}"),
            }
        }
    }

    let (st, _) = query(&c, &s, json!({"sql": "SELECT 1"})).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn a_whole_parquet_export_is_the_stored_row_groups_and_reads_back_whole() {
    let s = Server::start(options(&[])).await;
    let c = Client::new();
    // Two uploads: the version has the files of both.
    let body = std::fs::read(repo_root().join("catalog/transport/bus_stops.csv")).unwrap();
    let r = c
        .post(s.url("/api/v1/datasets/transport/bus_stops/versions?mode=append"))
        .bearer_auth(ADMIN)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .get(s.url("/api/v1/datasets/transport/bus_stops/export?format=parquet"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-dataset-versions"], "transport.bus_stops=2");
    let bytes = r.bytes().await.unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .unwrap();
    let created_by = reader
        .metadata()
        .file_metadata()
        .created_by()
        .unwrap_or_default()
        .to_string();
    assert!(created_by.contains("stored row groups"), "{created_by}");
    let batches: Vec<_> = reader.build().unwrap().map(|b| b.unwrap()).collect();
    // The same rows, in storage order, as the engine's pages give them.
    let truth = sample_csv("transport", "bus_stops");
    let mut expected = column_values(&truth, "stop_id");
    expected.extend(column_values(&truth, "stop_id"));
    let mut got = Vec::new();
    for b in &batches {
        let ids = b
            .column_by_name("stop_id")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        got.extend(ids.iter().map(|v| v.unwrap().to_string()));
    }
    assert_eq!(got, expected);
    // With `select` it goes through the engine (and is still Parquet).
    let r = c
        .get(s.url("/api/v1/datasets/transport/bus_stops/export?format=parquet&select=stop_id"))
        .send()
        .await
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    assert_eq!(reader.schema().fields().len(), 1);
    let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, expected.len());
}

/// The `id` column of an export's body in `format`, in the order the rows came.
fn export_ids(format: &str, body: &[u8]) -> Vec<i64> {
    let from_batches = |batches: Vec<arrow::record_batch::RecordBatch>| -> Vec<i64> {
        let mut ids = Vec::new();
        for b in &batches {
            let column = b.column_by_name("id").expect("an id column");
            let column = column
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .expect("int64 ids");
            ids.extend(column.iter().map(|v| v.unwrap()));
        }
        ids
    };
    match format {
        "csv" => {
            let text = std::str::from_utf8(body).unwrap();
            text.lines()
                .skip(1)
                .map(|l| l.split(',').next().unwrap().parse().unwrap())
                .collect()
        }
        "ndjson" => std::str::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect(),
        "json" => serde_json::from_slice::<Value>(body).unwrap()["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect(),
        "arrow" => from_batches(
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)
                .unwrap()
                .map(|b| b.unwrap())
                .collect(),
        ),
        "parquet" => from_batches(
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes::Bytes::from(body.to_vec()),
            )
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect(),
        ),
        other => panic!("no reader for {other}"),
    }
}

#[tokio::test]
async fn an_export_comes_in_storage_order_in_every_format() {
    // Without the page cache, every export is planned by the engine (none is sliced from
    // memory); with it, as configured by default (an Arrow export decoded in units of 65,536
    // rows: a file each); and without it, Arrow exports decoded in units of 7,000 rows, which
    // cut every file and its row groups; and in one piece. The whole Parquet export copies the
    // stored row groups either way.
    for env in [
        &[("DATAGATE_QUERY__PAGE_CACHE_BYTES", "0")][..],
        &[],
        &[
            ("DATAGATE_QUERY__EXPORT_UNIT_ROWS", "7000"),
            ("DATAGATE_QUERY__PAGE_CACHE_BYTES", "0"),
        ],
        &[("DATAGATE_QUERY__EXPORT_UNIT_ROWS", "0")],
    ] {
        exports_in_storage_order(env, &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_from_an_s3_warehouse_comes_in_storage_order() {
    // The warehouse on a real S3-compatible server (the files' paths there are the bucket's
    // keys, not local paths): Arrow exports are still cut into units.
    let mut warehouse = crate::s3::server().env();
    let bucket = crate::s3::server().fresh_bucket();
    warehouse.push((
        "DATAGATE_STORAGE__WAREHOUSE_URL".into(),
        format!("s3://{bucket}/warehouse/"),
    ));
    let env = [
        ("DATAGATE_QUERY__EXPORT_UNIT_ROWS", "7000"),
        ("DATAGATE_QUERY__PAGE_CACHE_BYTES", "0"),
    ];
    exports_in_storage_order(&env, &warehouse).await;
}

async fn exports_in_storage_order(env: &[(&str, &str)], more: &[(String, String)]) {
    let settings = format!("{env:?}");
    let mut options = options(env);
    options.env.extend(more.iter().cloned());
    let s = Server::start(options).await;
    let c = Client::new();
    let r = c
        .post(s.url("/api/v1/datasets"))
        .bearer_auth(ADMIN)
        .json(&json!({
            "department": "transport", "name": "readings", "title": "Readings",
            "access_level": "open", "license": "CC-BY-4.0", "tags": [],
            "update_frequency": "hourly", "primary_key": ["id"],
            "columns": [
                {"name": "id", "type": "int64", "sensitivity": "public"},
                {"name": "station", "type": "utf8", "sensitivity": "public"},
                {"name": "value", "type": "float64", "sensitivity": "public"},
            ],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Four appends, each a file of its own (of more rows than a batch): the version is their
    // rows in the order they came, ids 0, 1, 2, ...
    let (files, per_file) = (4, 30_000);
    for f in 0..files {
        let mut csv = String::from("id,station,value\n");
        for i in f * per_file..(f + 1) * per_file {
            csv.push_str(&format!("{i},S{:03},{}.5\n", i % 500, i % 97));
        }
        s.publish_csv("transport/readings", "append", csv).await;
    }
    let all: Vec<i64> = (0..files * per_file).collect();
    let thirds: Vec<i64> = all.iter().copied().filter(|i| i % 3 == 0).collect();
    let units_on = !env.contains(&("DATAGATE_QUERY__EXPORT_UNIT_ROWS", "0"));
    for format in ["csv", "ndjson", "json", "arrow", "parquet"] {
        for (query, expected) in [
            ("", &all),
            ("&select=id,value", &all),
            ("&where=id%20%25%203%20%3D%200", &thirds),
        ] {
            let in_units = counter(&s, "datagate_exports_in_units_total").await;
            let r = c
                .get(s.url(&format!(
                    "/api/v1/datasets/transport/readings/export?format={format}{query}"
                )))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{format}{query}, {settings}");
            let ids = export_ids(format, &r.bytes().await.unwrap());
            assert_eq!(ids.len(), expected.len(), "{format}{query}: rows");
            let first_out_of_place = ids.iter().zip(expected.iter()).position(|(a, b)| a != b);
            assert_eq!(
                first_out_of_place, None,
                "{format}{query}, {settings}: the export is not in storage order"
            );
            // Only an Arrow export is decoded in units (the page cache may answer a small
            // export whole: with it off, every Arrow export is planned and cut).
            let cut = counter(&s, "datagate_exports_in_units_total").await - in_units;
            let planned = settings.contains("PAGE_CACHE_BYTES");
            if format != "arrow" || !units_on {
                assert_eq!(cut, 0, "{format}{query}, {settings}");
            } else if planned {
                assert_eq!(cut, 1, "{format}{query}, {settings}");
            }
        }
    }
}

/// Masks `line_name` of `transport.bus_lines` (a new view of the same version).
async fn mask_line_names(c: &Client, s: &Server) {
    let r = c
        .patch(s.url("/api/v1/datasets/transport/bus_lines"))
        .bearer_auth(ADMIN)
        .json(
            &json!({"columns": [{"name": "line_name", "sensitivity": "masked", "mask": "redact"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// The value of the counter `name` so far, from `/metrics` (0 before its first increment).
async fn counter(s: &Server, name: &str) -> u64 {
    s.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The hits on encoded page bodies so far.
async fn page_body_hits(s: &Server) -> u64 {
    counter(s, "datagate_page_body_cache_hits_total").await
}

#[tokio::test]
async fn page_bodies_are_reused_only_for_the_same_answer() {
    let s = Server::start(options(&[])).await;
    let c = Client::new();
    let page = "/api/v1/datasets/transport/bus_lines/rows?limit=3&offset=2";
    let fetch = |path: &str, host: Option<&str>| {
        let mut rb = c.get(s.url(path));
        if let Some(h) = host {
            rb = rb.header("host", h);
        }
        async move {
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let tag = r.headers()["etag"].to_str().unwrap().to_string();
            (tag, r.text().await.unwrap())
        }
    };
    // The first asks decode (and keep the version); then the page is encoded and kept.
    let (tag, first) = fetch(page, None).await;
    let (_, second) = fetch(page, None).await;
    let before = page_body_hits(&s).await;
    let (again_tag, third) = fetch(page, None).await;
    assert_eq!(
        page_body_hits(&s).await,
        before + 1,
        "served from the kept body"
    );
    assert_eq!((&again_tag, &third), (&tag, &second));
    assert_eq!(first, second);
    let rows: Value = serde_json::from_str(&third).unwrap();
    assert_eq!(strings(&rows, "line_id"), ["BL00003", "BL00004", "BL00005"]);
    assert!(
        rows["next"].as_str().unwrap().contains("offset=5"),
        "{rows}"
    );
    // Another host: another `next` link, so not the kept body.
    let (_, other_host) = fetch(page, Some("example.org:8080")).await;
    assert!(
        serde_json::from_str::<Value>(&other_host).unwrap()["next"]
            .as_str()
            .unwrap()
            .starts_with("http://example.org:8080/"),
        "{other_host}"
    );
    // Another format, another page: their own bodies.
    let (_, csv) = fetch(&format!("{page}&format=csv"), None).await;
    assert!(csv.starts_with("line_id,"), "{csv}");
    let (_, next_page) = fetch(
        "/api/v1/datasets/transport/bus_lines/rows?limit=3&offset=5",
        None,
    )
    .await;
    let next_rows: Value = serde_json::from_str(&next_page).unwrap();
    assert_eq!(
        strings(&next_rows, "line_id"),
        ["BL00006", "BL00007", "BL00008"]
    );
    // Masking a column: the kept body is not the answer any more.
    mask_line_names(&c, &s).await;
    let (masked_tag, masked) = fetch(page, None).await;
    assert_ne!(masked_tag, tag);
    let masked: Value = serde_json::from_str(&masked).unwrap();
    assert_eq!(
        strings(&masked, "line_id"),
        ["BL00003", "BL00004", "BL00005"]
    );
    assert!(
        strings(&masked, "line_name")
            .iter()
            .all(|v| !v.contains('路')),
        "{masked}"
    );
    // The owning side (admin) still sees the column as published, under its own tag.
    let r = c.get(s.url(page)).bearer_auth(ADMIN).send().await.unwrap();
    assert_ne!(r.headers()["etag"].to_str().unwrap(), masked_tag);
    let admin: Value = r.json().await.unwrap();
    assert_eq!(strings(&admin, "line_name"), ["3路", "4路", "5路"]);
    // A new version: its own pages.
    let body = std::fs::read(repo_root().join("catalog/transport/bus_lines.csv")).unwrap();
    let head_only: Vec<u8> = body
        .split(|b| *b == b'\n')
        .take(3)
        .collect::<Vec<_>>()
        .join(&b'\n');
    s.publish_csv("transport/bus_lines", "replace", head_only)
        .await;
    let (_, replaced) = fetch(page, None).await;
    let replaced: Value = serde_json::from_str(&replaced).unwrap();
    assert_eq!(replaced["rows"].as_array().unwrap().len(), 0, "{replaced}");
}

/// Pages of a version too large to keep whole (here: over 100 rows) come from its decoded
/// blocks; once those are in memory the page is served like a small version's, and its body is
/// kept too: the same answers, a new view of the columns never served an old body.
#[tokio::test]
async fn pages_of_large_versions_are_kept_and_served_from_blocks() {
    let s = Server::start(options(&[("DATAGATE_QUERY__PAGE_CACHE_MAX_ROWS", "100")])).await;
    let c = Client::new();
    let fetch = |path: String| {
        let rb = c.get(s.url(&path));
        async move {
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let page =
        |offset: u64| format!("/api/v1/datasets/transport/bus_lines/rows?limit=3&offset={offset}");
    let first = fetch(page(1000)).await;
    assert_eq!(
        strings(&first, "line_id"),
        ["BL01001", "BL01002", "BL01003"]
    );
    let before = page_body_hits(&s).await;
    assert_eq!(fetch(page(1000)).await, first);
    assert_eq!(
        page_body_hits(&s).await,
        before + 1,
        "the first answer's body was kept"
    );
    // Another page in the same decoded block: sliced from memory, the right rows.
    let near = fetch(page(1003)).await;
    assert_eq!(strings(&near, "line_id"), ["BL01004", "BL01005", "BL01006"]);
    assert!(
        near["next"].as_str().unwrap().contains("offset=1006"),
        "{near}"
    );
    // Past the end, and the last rows (no next link).
    let last = fetch(page(1198)).await;
    assert_eq!(strings(&last, "line_id"), ["BL01199", "BL01200"]);
    assert!(last["next"].is_null(), "{last}");
    assert_eq!(fetch(page(5000)).await["rows"], json!([]));
    // A masked column is masked on pages of blocks decoded before the mask, kept or not.
    mask_line_names(&c, &s).await;
    for offset in [1000, 1003] {
        let masked = fetch(page(offset)).await;
        assert_eq!(strings(&masked, "line_id").len(), 3);
        assert!(
            strings(&masked, "line_name")
                .iter()
                .all(|v| !v.contains('路')),
            "{masked}"
        );
    }
}

/// CSV for spreadsheets in Chinese locales, which read a CSV file without a byte-order mark as
/// GBK: `bom=true` puts the UTF-8 mark before the same bytes, `charset=gb18030` (or `Accept:
/// text/csv; charset=gb18030`) writes the same text in GB18030; on exports, pages, SQL and the
/// audit log, each answer with its own entity tag and kept body.
#[tokio::test]
async fn csv_for_spreadsheets_with_a_bom_or_in_gb18030() {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let s = Server::start(options(&[])).await;
    // Answers coded in zstd (what reqwest asks for) and as they are.
    let coded = Client::new();
    let identity = Client::builder().no_gzip().no_zstd().build().unwrap();
    let fetch = |c: &Client, path: String, accept: Option<&str>| {
        let mut rb = c.get(s.url(&path));
        if let Some(a) = accept {
            rb = rb.header("accept", a);
        }
        async move {
            let r = rb.send().await.unwrap();
            let (status, headers) = (r.status(), r.headers().clone());
            (status, headers, r.bytes().await.unwrap().to_vec())
        }
    };
    let gb18030 = |bytes: &[u8]| {
        let (text, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(bytes);
        assert!(!had_errors);
        text.into_owned().into_bytes()
    };
    let export = "/api/v1/datasets/govservice/public_facilities/export?format=csv".to_string();
    let (st, h, plain) = fetch(&coded, export.clone(), None).await;
    assert_eq!(st, 200);
    assert_eq!(h["content-type"], "text/csv; charset=utf-8");
    assert!(plain.starts_with(b"facility_id,name,"));
    let tag = h["etag"].to_str().unwrap().to_string();
    for c in [&coded, &identity] {
        let (st, h, bom) = fetch(c, format!("{export}&bom=true"), None).await;
        assert_eq!(st, 200);
        assert_eq!(h["content-type"], "text/csv; charset=utf-8");
        assert_eq!(&bom[..3], BOM);
        assert_eq!(bom[3..], plain[..], "the same bytes after the mark");
        assert_ne!(h["etag"].to_str().unwrap(), tag);
        assert!(
            h["content-disposition"]
                .to_str()
                .unwrap()
                .contains(".csv\"")
        );
        let (st, h, gb) = fetch(c, format!("{export}&charset=gb18030"), None).await;
        assert_eq!(st, 200);
        assert_eq!(h["content-type"], "text/csv; charset=gb18030");
        assert!(std::str::from_utf8(&gb).is_err(), "not UTF-8");
        let name = encoding_rs::GB18030.encode("高新人民公厕").0;
        assert!(gb.windows(name.len()).any(|w| w == name.as_ref()));
        assert_eq!(gb18030(&gb), plain);
        // `gbk` is written as GB18030, and `Accept` says it as well as `charset=`.
        let (_, h2, by_label) = fetch(c, format!("{export}&charset=GBK"), None).await;
        assert_eq!((&h2["content-type"], &by_label), (&h["content-type"], &gb));
        let (st, h3, by_accept) = fetch(
            c,
            "/api/v1/datasets/govservice/public_facilities/export".into(),
            Some("text/csv; charset=gb18030"),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(h3["content-type"], "text/csv; charset=gb18030");
        assert_eq!(by_accept, gb);
        assert_eq!(h3["etag"], h["etag"]);
        // The mark's tag is not the plain answer's: If-None-Match with that is no 304.
        let r = c
            .get(s.url(&format!("{export}&bom=true")))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // Pages: each encoding its own kept body.
    let page = "/api/v1/datasets/govservice/public_facilities/rows?limit=3&format=csv";
    let mut bodies = Vec::new();
    for _ in 0..3 {
        for extra in ["", "&bom=true", "&charset=gb18030"] {
            let (st, h, body) = fetch(&identity, format!("{page}{extra}"), None).await;
            assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
            bodies.push((extra, h["etag"].to_str().unwrap().to_string(), body));
        }
    }
    let (first, rest) = bodies.split_at(3);
    for (i, (extra, tag, body)) in rest.iter().enumerate() {
        assert_eq!((tag, body), (&first[i % 3].1, &first[i % 3].2), "{extra}");
    }
    let plain_page = &first[0].2;
    assert_eq!(plain_page.iter().filter(|b| **b == b'\n').count(), 4);
    assert_eq!(first[1].2, [BOM, plain_page].concat());
    assert_eq!(gb18030(&first[2].2), *plain_page);
    let tags: BTreeSet<&String> = first.iter().map(|b| &b.1).collect();
    assert_eq!(tags.len(), 3);
    // A JSON page's `next` carries the CSV options on (a client switching formats keeps them).
    let (_, _, json) = fetch(
        &identity,
        "/api/v1/datasets/govservice/public_facilities/rows?limit=3&charset=utf-8&bom=false".into(),
        None,
    )
    .await;
    let json: Value = serde_json::from_slice(&json).unwrap();
    let next = json["next"].as_str().unwrap();
    assert!(
        next.contains("charset=utf-8") && next.contains("bom=false"),
        "{next}"
    );

    // SQL, by GET and POST.
    let sql =
        "SELECT name, district FROM govservice.public_facilities ORDER BY facility_id LIMIT 5";
    let q = url::form_urlencoded::byte_serialize(sql.as_bytes()).collect::<String>();
    let (st, _, sql_plain) = fetch(&coded, format!("/api/v1/query?sql={q}&format=csv"), None).await;
    assert_eq!(st, 200);
    let (_, h, sql_gb) = fetch(
        &coded,
        format!("/api/v1/query?sql={q}&format=csv&charset=gb18030"),
        None,
    )
    .await;
    assert_eq!(h["content-type"], "text/csv; charset=gb18030");
    assert_eq!(gb18030(&sql_gb), sql_plain);
    let r = coded
        .post(s.url("/api/v1/query"))
        .json(&json!({"sql": sql, "format": "csv", "bom": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), [BOM, &sql_plain].concat());

    // The audit log, for auditors with a spreadsheet.
    let r = coded
        .get(s.url("/api/v1/audit/events?limit=5&format=csv&bom=true"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = r.bytes().await.unwrap();
    assert!(events.starts_with(BOM), "{events:?}");
    assert!(events[3..].starts_with(b"seq,"), "{events:?}");

    // Refused, each naming its parameter; a harmless one is not.
    for (query, accept, status, parameter) in [
        (
            "format=csv&bom=true&charset=gb18030",
            None,
            400,
            Some("bom"),
        ),
        ("format=json&bom=true", None, 400, Some("bom")),
        ("format=parquet&charset=gb18030", None, 400, Some("charset")),
        ("format=csv&charset=big5", None, 400, Some("charset")),
        ("format=csv&charset=", None, 200, None),
        ("format=json&charset=utf-8&bom=false", None, 200, None),
        ("bom=yes&format=csv", None, 400, None),
        ("", Some("text/csv; charset=big5"), 406, None),
        ("", Some("text/csv; charset=big5, text/csv"), 200, None),
        (
            "bom=true",
            Some("text/csv; charset=gb18030"),
            400,
            Some("bom"),
        ),
    ] {
        let (st, h, body) = fetch(
            &identity,
            format!("/api/v1/datasets/govservice/public_facilities/rows?limit=2&{query}"),
            accept,
        )
        .await;
        assert_eq!(
            st.as_u16(),
            status,
            "{query} {accept:?}: {}",
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            assert_eq!(h["content-type"], "application/problem+json");
            let problem: Value = serde_json::from_slice(&body).unwrap();
            if let Some(p) = parameter {
                assert_eq!(problem["parameter"], p, "{problem}");
            }
        }
    }
}

/// Lists (`array_agg`, `regexp_match`) and structs in a CSV answer are each cell's JSON, as the
/// JSON formats write them (arrow's CSV writer refused them: a 500). A struct's type keeps its
/// field names' case (it lower-cased them with the rest of the type's name).
#[tokio::test]
async fn csv_answers_hold_lists_and_structs_as_json_text() {
    let s = Server::start(options(&[])).await;
    let c = Client::new();
    let sql = "SELECT operator, array_agg(line_id ORDER BY line_id) AS lines, \
               named_struct('n', count(*), 'Night', bool_or(night_line)) AS summary \
               FROM transport.bus_lines GROUP BY operator ORDER BY operator";
    let (st, json) = query(&c, &s, json!({"sql": sql})).await;
    assert_eq!(st, StatusCode::OK, "{json}");
    // The type's name is lower case, the names of its fields as the query spelt them.
    let summary = json["columns"][2]["type"].as_str().unwrap();
    assert!(summary.starts_with("struct(\"n\": "), "{summary}");
    assert!(summary.contains("\"Night\": boolean"), "{summary}");
    let r = send_query(&c, &s, json!({"sql": sql, "format": "csv"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let records: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(records.len(), rows.len());
    assert!(rows.len() > 1);
    for (record, row) in records.iter().zip(rows) {
        assert_eq!(record[0], *row["operator"].as_str().unwrap());
        let lines: Value = serde_json::from_str(&record[1]).unwrap();
        let summary: Value = serde_json::from_str(&record[2]).unwrap();
        assert_eq!(lines, row["lines"], "{text}");
        assert_eq!(summary, row["summary"], "{text}");
    }
}

/// A date or time beyond the calendar arrow's formatters know (`to_timestamp_seconds(1e14)` is
/// in the year 3170843) is written in every text format, its year signed as PostgreSQL and
/// DuckDB write years beyond 9999; it was a 400, and a transfer aborted after its 200 when the
/// first such value came after the first batch of a streamed answer. Arrow carries the value.
#[tokio::test]
async fn dates_beyond_the_calendar_are_written_in_every_format() {
    let s = Server::start(options(&[])).await;
    let c = Client::new();
    let sql = "SELECT 1 AS n, to_timestamp_seconds(99999999999999) AS far, \
               arrow_cast(CAST(2147483647 AS INT), 'Date32') AS last_day, \
               arrow_cast(-99999999999999, 'Timestamp(Second, Some(\"+08:00\"))') AS early, \
               arrow_cast(CAST(100000 AS INT), 'Time32(Second)') AS late";
    // Each value as the civil-from-days algorithm gives it (worked out apart, in Python).
    let want = [
        ("far", "+3170843-11-07T09:46:39"),
        ("last_day", "+5881580-07-11"),
        ("early", "-3166904-02-24T22:13:21+08:00"),
        ("late", "27:46:40"),
    ];
    let (st, body) = query(&c, &s, json!({"sql": sql})).await;
    assert_eq!(st, 200, "{body}");
    for (column, text) in want {
        assert_eq!(body["rows"][0][column], text, "{body}");
    }
    assert_eq!(body["columns"][1]["type"], "timestamp(s)", "{body}");
    let text = |format: &'static str| {
        let (c, s) = (&c, &s);
        async move {
            let r = send_query(c, s, json!({"sql": sql, "format": format})).await;
            assert_eq!(r.status(), 200, "{format}");
            r.text().await.unwrap()
        }
    };
    let line: Value = serde_json::from_str(text("ndjson").await.trim()).unwrap();
    assert_eq!(line, body["rows"][0]);
    let csv = text("csv").await;
    let values: Vec<_> = want.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        csv,
        format!("n,far,last_day,early,late\n1,{}\n", values.join(","))
    );
    let r = send_query(&c, &s, json!({"sql": sql, "format": "arrow"})).await;
    let bytes = r.bytes().await.unwrap();
    let batches: Vec<_> = arrow::ipc::reader::StreamReader::try_new(&bytes[..], None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let far = batches[0]
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::TimestampSecondArray>();
    assert_eq!(far.map(|a| a.value(0)), Some(99_999_999_999_999));

    // A streamed answer (5,000 rows) whose last-sorted company meets one: complete, every row
    // written, the far value on its row.
    let sql = "SELECT uscc, CASE WHEN uscc = (SELECT max(uscc) FROM market.market_entities) \
               THEN to_timestamp_seconds(99999999999999) ELSE to_timestamp_seconds(0) END AS t \
               FROM market.market_entities";
    let r = send_query(&c, &s, json!({"sql": sql, "format": "csv"})).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = read_body(r).await.expect("the whole answer");
    let body = String::from_utf8(body).unwrap();
    let uscc = column_values(&sample_csv("market", "market_entities"), "uscc");
    let last = uscc.iter().max().unwrap();
    let mut rows = 0;
    for line in body.lines().skip(1) {
        rows += 1;
        let (code, t) = line.split_once(',').unwrap();
        let want = if code == last {
            "+3170843-11-07T09:46:39"
        } else {
            "1970-01-01T00:00:00"
        };
        assert_eq!(t, want, "{line}");
    }
    assert_eq!(rows, uscc.len());
    assert!(body.contains(&format!("{last},+3170843-11-07T09:46:39\n")));
    let end = s.audit_end(&id).await;
    assert_eq!(end["outcome"], "completed", "{end}");
    assert_eq!(end["rows_returned"], uscc.len(), "{end}");
}

/// `HEAD` on a data endpoint answers the headers `GET` answers (type, versions, tag, the
/// export's file name) after the same checks, without running the query: no body, no transfer
/// in the audit log (one plain record of the data action), no download counted.
#[tokio::test]
async fn head_answers_the_headers_without_running_the_query() {
    let s = Server::start(options(&[])).await;
    let c = Client::new();
    let export = "/api/v1/datasets/transport/bus_stops/export?format=csv";
    for path in [
        export,
        "/api/v1/datasets/transport/bus_stops/rows?limit=5&select=stop_id",
        "/api/v1/query?sql=SELECT%20count(*)%20AS%20n%20FROM%20transport.bus_stops",
    ] {
        let got = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(got.status(), 200, "{path}");
        let head = c.head(s.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "{path}");
        for h in [
            "content-type",
            "etag",
            "x-dataset-versions",
            "content-disposition",
        ] {
            assert_eq!(head.headers().get(h), got.headers().get(h), "{path}: {h}");
        }
        // No `Content-Length: 0` saying the answer would be empty.
        assert_ne!(
            head.headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap().to_string()),
            Some("0".to_string()),
            "{path}"
        );
        assert!(head.bytes().await.unwrap().is_empty(), "{path}");
    }
    let head = c.head(s.url(export)).send().await.unwrap();
    assert_eq!(
        head.headers()["content-disposition"],
        "attachment; filename=\"transport-bus_stops-v1.csv\""
    );
    let request_id = head.headers()["x-request-id"].to_str().unwrap().to_string();
    // Refused as `GET` is refused, with no body.
    for (path, status) in [
        (
            "/api/v1/datasets/transport/bus_stops/rows?where=nope%3D1",
            400,
        ),
        ("/api/v1/datasets/transport/nope/export", 404),
        ("/api/v1/query?sql=SELEC", 400),
    ] {
        let head = c.head(s.url(path)).send().await.unwrap();
        assert_eq!(head.status(), status, "{path}");
    }
    // The audit log: the export's `HEAD` is one record of the export action, nothing read.
    let records: Vec<Value> = c
        .get(s.url("/api/v1/audit/events?limit=1000&format=ndjson"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of_head: Vec<&Value> = records
        .iter()
        .filter(|r| r["request_id"] == request_id.as_str())
        .collect();
    assert_eq!(of_head.len(), 1, "{of_head:?}");
    let r = of_head[0];
    assert_eq!(
        (&r["method"], &r["action"], &r["kind"], &r["bytes_returned"]),
        (
            &json!("HEAD"),
            &json!("data.export"),
            &json!("request"),
            &json!(0)
        ),
        "{r}"
    );
    // Only the `GET` export counts as a download.
    let detail = s
        .get_json_as(ADMIN, "/api/v1/datasets/transport/bus_stops")
        .await;
    assert_eq!(detail["usage"]["downloads_30d"], 1, "{detail}");
}
