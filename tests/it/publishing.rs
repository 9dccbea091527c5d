//! Publishing over HTTP (API.md §5 "Catalog" and "Ingest"): register, upload, edit,
//! unpublish, and every kind of bad upload leaving the dataset exactly as it was.

use crate::harness::{Options, Server, repo_root, run};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &str = "dg_admin1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn options() -> Options {
    Options {
        manifests: Some(std::path::PathBuf::new()),
        env: vec![
            ("DATAGATE_ADMIN_KEY".into(), ADMIN.into()),
            ("DATAGATE_LIMITS__MAX_UPLOAD_BYTES".into(), "1000000".into()),
            ("DATAGATE_CATALOG_MANIFESTS".into(), String::new()),
            // Small batches and files, so an interrupted upload has written some.
            ("DATAGATE_INGEST__BATCH_ROWS".into(), "1024".into()),
            ("DATAGATE_INGEST__ROW_GROUP_ROWS".into(), "1024".into()),
            ("DATAGATE_INGEST__TARGET_FILE_BYTES".into(), "16384".into()),
        ],
        ..Default::default()
    }
}

struct Api<'a> {
    s: &'a Server,
    c: Client,
}

impl<'a> Api<'a> {
    fn new(s: &'a Server) -> Self {
        // No connection reuse: a refused upload closes its connection before the body is read.
        let c = Client::builder().pool_max_idle_per_host(0).build().unwrap();
        Self { s, c }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = rb.send().await.expect("request");
        let status = r.status();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.c.post(self.s.url(path)).bearer_auth(ADMIN).json(&body))
            .await
    }

    async fn upload(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        self.send(
            self.c
                .post(self.s.url(path))
                .bearer_auth(ADMIN)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// Registers `transport/<name>` with the declared columns of [`register_body`].
    async fn register(&self, name: &str) {
        let (st, body) = self
            .post_json("/api/v1/datasets", register_body(name))
            .await;
        assert_eq!(st, 201, "{body}");
    }

    /// Appends CSV to `transport/<name>`, expecting success.
    async fn append_csv(&self, name: &str, csv: &str) {
        let path = format!("/api/v1/datasets/transport/{name}/versions");
        let (st, body) = self.upload(&path, "text/csv", csv.to_string()).await;
        assert_eq!(st, 201, "{body}");
    }

    /// Uploads `body` as a new version of `transport/<name>`, expecting it taken.
    async fn upload_taken(&self, name: &str, content_type: &str, body: Vec<u8>) {
        let (st, v) = self
            .send(self.version_request(name, content_type, false, body))
            .await;
        assert_eq!(st, 201, "{content_type}: {v}");
    }

    /// The `rows` of `sql`'s JSON answer, expecting 200.
    async fn query_rows(&self, sql: &str) -> Value {
        let (st, v) = self.post_json("/api/v1/query", json!({ "sql": sql })).await;
        assert_eq!(st, 200, "{sql}: {v}");
        v["rows"].clone()
    }

    /// Registers `transport/<name>` without columns: the first upload gives the schema.
    async fn register_schemaless(&self, name: &str) {
        self.register_with_columns(name, None).await;
    }

    /// Registers `transport/<name>` with `columns` (`[{"name", "type"}]`), or without any.
    async fn register_with_columns(&self, name: &str, columns: Option<Value>) {
        let mut body = json!({
            "department": "transport", "name": name, "title": "t", "access_level": "open",
            "license": "CC-BY-4.0", "tags": [], "update_frequency": "daily",
        });
        if let Some(columns) = columns {
            body["columns"] = columns;
        }
        let (st, v) = self.post_json("/api/v1/datasets", body).await;
        assert_eq!(st, 201, "{v}");
    }

    /// An upload of `body` as a new version of `transport/<name>`, gzip-encoded or not.
    fn version_request(
        &self,
        name: &str,
        content_type: &str,
        gzipped: bool,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let rb = self
            .c
            .post(
                self.s
                    .url(&format!("/api/v1/datasets/transport/{name}/versions")),
            )
            .bearer_auth(ADMIN)
            .header("content-type", content_type)
            .body(body);
        if gzipped {
            rb.header("content-encoding", "gzip")
        } else {
            rb
        }
    }

    async fn dataset(&self, name: &str) -> Value {
        self.send(
            self.c
                .get(self.s.url(&format!("/api/v1/datasets/transport/{name}")))
                .bearer_auth(ADMIN),
        )
        .await
        .1
    }
}

fn register_body(name: &str) -> Value {
    json!({
        "department": "transport", "name": name, "title": "站点", "access_level": "open",
        "license": "CC-BY-4.0", "tags": ["公交"], "update_frequency": "daily", "primary_key": ["id"],
        "columns": [
            {"name": "id", "type": "int64", "description": "编号"},
            {"name": "name", "type": "utf8"},
            {"name": "opened", "type": "date32"},
            {"name": "fare", "type": "decimal128(5,2)"},
        ]
    })
}

/// The department must exist before datasets: the sample catalog is off, so make it by
/// registering through a manifest directory.
async fn server_with_department() -> (Server, tempfile::TempDir) {
    server_with_department_and(&[]).await
}

async fn server_with_department_and(env: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let cat = tmp.path().join("catalog/transport");
    std::fs::create_dir_all(&cat).unwrap();
    std::fs::write(cat.join("department.toml"), "name = \"交通运输局\"\n").unwrap();
    let mut opts = options();
    opts.env.retain(|(k, _)| k != "DATAGATE_CATALOG_MANIFESTS");
    opts.env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    opts.manifests = Some(tmp.path().join("catalog"));
    let s = Server::start(opts).await;
    (s, tmp)
}

/// `name:type` of each column of a dataset's schema.
fn schema_of(d: &Value) -> Vec<String> {
    d["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}:{}",
                c["name"].as_str().unwrap(),
                c["type"].as_str().unwrap()
            )
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn warehouse_files(s: &Server) -> Vec<String> {
    files_under(&s.data_dir().join("warehouse/datasets/transport"))
}

/// `batch` as an Arrow IPC stream, the body of an Arrow upload.
fn arrow_stream_bytes(batch: &arrow::array::RecordBatch) -> Vec<u8> {
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    w.write(batch).unwrap();
    w.into_inner().unwrap()
}

/// `batch` as a Parquet file written with `props` (the writer's defaults when `None`).
fn parquet_bytes(
    batch: &arrow::array::RecordBatch,
    props: Option<parquet::file::properties::WriterProperties>,
) -> Vec<u8> {
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), props).unwrap();
    w.write(batch).unwrap();
    w.into_inner().unwrap()
}

#[tokio::test]
async fn register_upload_append_replace_and_unpublish() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    // Anonymous and bad keys cannot register.
    let (st, body) = api
        .send(
            api.c
                .post(s.url("/api/v1/datasets"))
                .json(&register_body("stops")),
        )
        .await;
    assert_eq!(st, 401, "{body}");
    let (st, _) = api
        .send(
            api.c
                .post(s.url("/api/v1/datasets"))
                .bearer_auth(ADMIN.replace("0123", "9999"))
                .json(&register_body("stops")),
        )
        .await;
    assert_eq!(st, 401);
    let (st, d) = api
        .post_json("/api/v1/datasets", register_body("stops"))
        .await;
    assert_eq!(st, 201, "{d}");
    assert_eq!(d["current_version"], Value::Null);
    assert_eq!(d["schema"][3]["type"], "decimal128(5,2)");
    let (st, _) = api
        .post_json("/api/v1/datasets", register_body("stops"))
        .await;
    assert_eq!(st, 409);
    let mut ghost = register_body("x");
    ghost["department"] = json!("ghost");
    assert_eq!(api.post_json("/api/v1/datasets", ghost).await.0, 404);
    // A catalog entry needs a title, and tags that say something.
    for (field, value) in [("title", json!(" ")), ("tags", json!(["公交", ""]))] {
        let mut b = register_body("untitled");
        b[field] = value;
        let (st, e) = api.post_json("/api/v1/datasets", b).await;
        assert_eq!(st, 422, "{field}: {e}");
    }
    let (st, e) = api
        .send(
            api.c
                .patch(s.url("/api/v1/datasets/transport/stops"))
                .bearer_auth(ADMIN)
                .json(&json!({"title": ""})),
        )
        .await;
    assert_eq!(st, 422, "{e}");
    let (st, _) = api
        .post_json("/api/v1/datasets", json!({"department": "transport"}))
        .await;
    assert_eq!(st, 400);

    let csv = "id,name,opened,fare\n1,人民路口,2020-01-01,2.00\n2,解放路口,2021-06-30,1.50\n";
    let (st, v) = api
        .upload(
            "/api/v1/datasets/transport/stops/versions?mode=append",
            "text/csv",
            csv,
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        (
            v["version"].as_i64(),
            v["rows_added"].as_i64(),
            v["row_count"].as_i64()
        ),
        (Some(1), Some(2), Some(2))
    );
    for k in ["mode", "files", "bytes", "created_at"] {
        assert!(v.get(k).is_some(), "{k}");
    }
    // Columns in another order, NDJSON, gzip.
    let csv2 = "name,fare,opened,id\n中山路口,3.00,2022-02-02,3\n";
    let (st, v) = api
        .upload(
            "/api/v1/datasets/transport/stops/versions",
            "text/csv",
            csv2,
        )
        .await;
    assert_eq!(
        (st.as_u16(), v["version"].as_i64(), v["row_count"].as_i64()),
        (201, Some(2), Some(3)),
        "{v}"
    );
    let nd = "{\"id\":4,\"name\":\"和平路口\",\"opened\":\"2023-03-03\",\"fare\":\"2.50\"}\n{\"id\":5}\n";
    let (st, v) = api
        .upload(
            "/api/v1/datasets/transport/stops/versions",
            "application/x-ndjson",
            nd,
        )
        .await;
    assert_eq!(
        (
            st.as_u16(),
            v["row_count"].as_i64(),
            v["source_format"].as_str()
        ),
        (201, Some(5), Some("ndjson")),
        "{v}"
    );
    assert_eq!(api.dataset("stops").await["source_format"], "ndjson");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"id,name,opened,fare\n9,x,2024-01-01,1\n")
        .unwrap();
    let (st, v) = api
        .send(
            api.c
                .post(s.url("/api/v1/datasets/transport/stops/versions?mode=replace"))
                .bearer_auth(ADMIN)
                .header("content-type", "text/csv")
                .header("content-encoding", "gzip")
                .body(gz.finish().unwrap()),
        )
        .await;
    assert_eq!(
        (
            st.as_u16(),
            v["version"].as_i64(),
            v["row_count"].as_i64(),
            v["mode"].as_str()
        ),
        (201, Some(4), Some(1), Some("replace")),
        "{v}"
    );
    let (_, versions) = api
        .send(
            api.c
                .get(s.url("/api/v1/datasets/transport/stops/versions")),
        )
        .await;
    let history: Vec<i64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(history, [4, 3, 2, 1]);
    assert_eq!(versions[3]["created_by"], "admin1");

    // PATCH metadata and annotations.
    let (st, d) = api
        .send(api.c.patch(s.url("/api/v1/datasets/transport/stops")).bearer_auth(ADMIN).json(&json!({
            "title": "公交站点（新）", "columns": [{"name": "name", "sensitivity": "masked", "mask": "partial"}]
        })))
        .await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["title"], "公交站点（新）");
    assert_eq!(d["schema"][1]["mask"], "partial");
    assert_eq!(d["license"], "CC-BY-4.0", "untouched fields stay");
    let (st, _) = api
        .send(
            api.c
                .patch(s.url("/api/v1/datasets/transport/stops"))
                .json(&json!({"title": "x"})),
        )
        .await;
    assert_eq!(st, 401);

    // DELETE unpublishes: gone for everyone, files kept.
    let files = warehouse_files(&s);
    let before_unpublish = api.dataset("stops").await;
    let (st, _) = api
        .send(
            api.c
                .delete(s.url("/api/v1/datasets/transport/stops"))
                .bearer_auth(ADMIN),
        )
        .await;
    assert_eq!(st, 204);
    assert_eq!(
        api.send(api.c.get(s.url("/api/v1/datasets/transport/stops")))
            .await
            .0,
        404
    );
    let (st, _) = api
        .upload("/api/v1/datasets/transport/stops/versions", "text/csv", csv)
        .await;
    assert_eq!(st, 404);
    assert_eq!(warehouse_files(&s), files);

    // The name stays taken, and the 409 says how to get the dataset back.
    let (st, e) = api
        .post_json("/api/v1/datasets", register_body("stops"))
        .await;
    assert_eq!(st, 409);
    assert!(e["detail"].as_str().unwrap().contains("/publish"), "{e}");
    // Only those who manage it can publish it again; for anyone else it does not exist.
    let (_, consumer) = api
        .post_json("/api/v1/keys", json!({"name": "c", "role": "consumer"}))
        .await;
    let publish = s.url("/api/v1/datasets/transport/stops/publish");
    let (st, _) = api
        .send(
            api.c
                .post(&publish)
                .bearer_auth(consumer["key"].as_str().unwrap()),
        )
        .await;
    assert_eq!(st, 404);
    // The department finds it among its unpublished datasets; nobody else may list them.
    let hidden = s.url("/api/v1/datasets?department=transport&unpublished=true");
    let (st, list) = api.send(api.c.get(&hidden).bearer_auth(ADMIN)).await;
    assert_eq!(st, 200, "{list}");
    let names: Vec<_> = list["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["stops"], "{list}");
    assert!(list["datasets"][0]["unpublished_at"].is_string(), "{list}");
    let (st, _) = api
        .send(
            api.c
                .get(&hidden)
                .bearer_auth(consumer["key"].as_str().unwrap()),
        )
        .await;
    assert_eq!(st, 403);
    assert_eq!(api.send(api.c.get(&hidden)).await.0, 401);
    let (st, e) = api
        .send(
            api.c
                .get(s.url("/api/v1/datasets?unpublished=true"))
                .bearer_auth(ADMIN),
        )
        .await;
    assert_eq!((st.as_u16(), &e["parameter"]), (400, &json!("department")));
    let (st, d) = api.send(api.c.post(&publish).bearer_auth(ADMIN)).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["current_version"], before_unpublish["current_version"]);
    let (st, page) = api
        .send(api.c.get(s.url("/api/v1/datasets/transport/stops/rows")))
        .await;
    assert_eq!(
        (st.as_u16(), &page["row_count"]),
        (200, &before_unpublish["row_count"]),
        "{page}"
    );
    let (_, list) = api.send(api.c.get(&hidden).bearer_auth(ADMIN)).await;
    assert_eq!(list["total"], 0, "{list}");
    // Publishing a published dataset changes nothing.
    let (st, again) = api.send(api.c.post(&publish).bearer_auth(ADMIN)).await;
    assert_eq!((st.as_u16(), &again["updated_at"]), (200, &d["updated_at"]));
    assert_eq!(warehouse_files(&s), files);
}

#[tokio::test]
async fn first_upload_fixes_an_inferred_schema() {
    let (s, tmp) = server_with_department().await;
    let api = Api::new(&s);
    let mut body = register_body("lines");
    body.as_object_mut().unwrap().remove("columns");
    body["primary_key"] = json!([]);
    assert_eq!(api.post_json("/api/v1/datasets", body).await.0, 201);
    let pq = tmp.path().join("lines.parquet");
    let out = run(
        &[
            "gen",
            "bus_lines",
            "--rows",
            "3000",
            "--format",
            "parquet",
            "--out",
            pq.to_str().unwrap(),
        ],
        &[],
        &repo_root(),
    );
    assert!(out.status.success());
    let (st, v) = api
        .upload(
            "/api/v1/datasets/transport/lines/versions",
            "application/vnd.apache.parquet",
            std::fs::read(&pq).unwrap(),
        )
        .await;
    assert_eq!(
        (st.as_u16(), v["row_count"].as_i64()),
        (201, Some(3000)),
        "{v}"
    );
    let d = api.dataset("lines").await;
    let types: Vec<String> = schema_of(&d);
    assert!(
        types.contains(&"fare:decimal128(5,2)".to_string()),
        "{types:?}"
    );
    assert!(types.contains(&"stop_count:int32".to_string()), "{types:?}");
    // Fixed now: an upload of another shape is refused.
    let (st, e) = api
        .upload(
            "/api/v1/datasets/transport/lines/versions",
            "text/csv",
            "a,b\n1,2\n",
        )
        .await;
    assert_eq!(st, 422, "{e}");

    // CSV inference.
    let mut body = register_body("csvinfer");
    body.as_object_mut().unwrap().remove("columns");
    body["primary_key"] = json!([]);
    api.post_json("/api/v1/datasets", body).await;
    let (st, v) = api
        .upload(
            "/api/v1/datasets/transport/csvinfer/versions",
            "text/csv",
            "id,name,ok,opened\n1,a,true,2020-01-01\n2,b,false,2020-01-02\n",
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let d = api.dataset("csvinfer").await;
    let types: Vec<&str> = d["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["int64", "utf8", "boolean", "date32"]);

    // A key registered before any column: the first upload must carry it (else the key would
    // name no column), and nothing is fixed by the refused one.
    let mut body = register_body("keyed");
    body.as_object_mut().unwrap().remove("columns");
    body["primary_key"] = json!(["stop_id"]);
    assert_eq!(api.post_json("/api/v1/datasets", body).await.0, 201);
    let (st, e) = api
        .upload(
            "/api/v1/datasets/transport/keyed/versions",
            "text/csv",
            "id,name\n1,a\n",
        )
        .await;
    assert_eq!(
        (st.as_u16(), e["line"].as_u64(), e["column"].as_str()),
        (422, Some(1), Some("stop_id")),
        "{e}"
    );
    let (st, v) = api
        .upload(
            "/api/v1/datasets/transport/keyed/versions",
            "text/csv",
            "stop_id,name\nS1,a\n",
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        schema_of(&api.dataset("keyed").await),
        ["stop_id:utf8", "name:utf8"]
    );
}

/// Two rows of [`register_body`]'s columns with these ids, as an Arrow IPC stream.
fn stops_arrow(ids: &[Option<i64>; 2]) -> Vec<u8> {
    use arrow::array::{ArrayRef, Date32Array, Decimal128Array, Int64Array, StringArray};
    use std::sync::Arc;
    let fare = Decimal128Array::from(vec![200, 250]).with_precision_and_scale(5, 2);
    let batch = arrow::array::RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec!["c", "d"]))),
        ("opened", Arc::new(Date32Array::from(vec![18_300, 18_301]))),
        ("fare", Arc::new(fare.unwrap())),
    ])
    .unwrap();
    arrow_stream_bytes(&batch)
}

/// The batches of an Arrow IPC `stream` written again as an Arrow IPC file (what `.arrow`
/// files, pandas' `to_feather` and pyarrow's `ipc.new_file` hold).
fn ipc_file(stream: &[u8]) -> Vec<u8> {
    let reader = arrow::ipc::reader::StreamReader::try_new(stream, None).unwrap();
    let mut w = arrow::ipc::writer::FileWriter::try_new(Vec::new(), &reader.schema()).unwrap();
    for batch in reader {
        w.write(&batch.unwrap()).unwrap();
    }
    w.into_inner().unwrap()
}

/// An Arrow file is taken as its stream is, under either Arrow type and gzip-compressed too
/// (it was a 422 saying its first message was over 64 MiB: the magic read as a length).
#[tokio::test]
async fn arrow_files_are_taken_like_streams() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register("stops").await;
    let file = ipc_file(&stops_arrow(&[Some(1), Some(2)]));
    assert!(file.starts_with(b"ARROW1") && file.ends_with(b"ARROW1"));
    api.upload_taken("stops", "application/vnd.apache.arrow.file", file)
        .await;
    let file = ipc_file(&stops_arrow(&[Some(3), Some(4)]));
    api.upload_taken("stops", "application/vnd.apache.arrow.stream", file)
        .await;
    let gzipped = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&ipc_file(&stops_arrow(&[Some(5), Some(6)])))
            .unwrap();
        gz.finish().unwrap()
    };
    let (st, v) = api
        .send(api.version_request("stops", "application/vnd.apache.arrow.file", true, gzipped))
        .await;
    assert_eq!(st, 201, "{v}");
    let rows = api
        .query_rows("SELECT id, name, CAST(opened AS VARCHAR) AS opened, CAST(fare AS VARCHAR) AS fare FROM transport.stops ORDER BY id")
        .await;
    let want: Vec<Value> = (1..=6)
        .map(|id| {
            let (name, day, fare) = if id % 2 == 1 {
                ("c", "2020-02-08", "2.00")
            } else {
                ("d", "2020-02-09", "2.50")
            };
            json!({"id": id, "name": name, "opened": day, "fare": fare})
        })
        .collect();
    assert_eq!(rows, json!(want));
}

#[tokio::test]
async fn bad_uploads_leave_the_dataset_exactly_as_before() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register("stops").await;
    let good = "id,name,opened,fare\n1,a,2020-01-01,2.00\n2,b,2020-01-02,2.00\n";
    api.append_csv("stops", good).await;
    let before = api.dataset("stops").await;
    let files_before = warehouse_files(&s);
    let mut truncated_gz = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(good.repeat(50).as_bytes()).unwrap();
        gz.finish().unwrap()
    };
    truncated_gz.truncate(truncated_gz.len() / 2);
    let mut corrupt_arrow = stops_arrow(&[Some(3), Some(4)]);
    crate::harness::corrupt_ipc_stream(&mut corrupt_arrow);
    let big = format!(
        "id,name,opened,fare\n{}",
        "3,cccccccccccccccccccc,2020-01-03,2.00\n".repeat(40_000)
    );
    // The primary key (`id`) empty in row 4,321 of 5,000: past several of the test's 1,024-row
    // batches, so the row is counted across them.
    let keyless_late: String = std::iter::once("id,name,opened,fare\n".to_string())
        .chain((1..=5000).map(|i| {
            let id = if i == 4321 {
                String::new()
            } else {
                i.to_string()
            };
            format!("{id},n{i},2020-01-01,2.00\n")
        }))
        .collect();
    let keyless_arrow = stops_arrow(&[Some(3), None]);
    let arrow_file_cut = {
        let file = ipc_file(&stops_arrow(&[Some(3), Some(4)]));
        file[..file.len() - 12].to_vec()
    };

    struct Case {
        what: &'static str,
        ct: &'static str,
        gzip: bool,
        body: Vec<u8>,
        status: u16,
        line: Option<u64>,
        column: Option<&'static str>,
    }
    let case = |what, ct, body: &[u8], status, line, column| Case {
        what,
        ct,
        gzip: false,
        body: body.to_vec(),
        status,
        line,
        column,
    };
    let mut cases = vec![
        case("ragged row", "text/csv", b"id,name,opened,fare\n1,a,2020-01-01,2.00\n2,b\n", 422, Some(3), None),
        case("bad quoting", "text/csv", b"id,name,opened,fare\n1,\"a,2020-01-01,2.00\n", 422, None, None),
        case("wrong type", "text/csv", b"id,name,opened,fare\n1,a,2020-01-01,2.00\n2,b,2020-01-02,2.00\nthree,c,2020-01-03,1.00\n", 422, Some(4), Some("id")),
        case("bad date", "text/csv", b"id,name,opened,fare\n1,a,2020-13-45,2.00\n", 422, Some(2), Some("opened")),
        case("missing declared column", "text/csv", b"id,name,fare\n1,a,2.00\n", 422, Some(1), Some("opened")),
        case("unknown column", "text/csv", b"id,name,opened,fare,extra\n1,a,2020-01-01,2.00,x\n", 422, Some(1), Some("extra")),
        case("invalid utf-8", "text/csv", b"id,name,opened,fare\n1,\xff\xfe,2020-01-01,2.00\n", 422, Some(2), Some("name")),
        // GBK sent without its charset: 公交 is \xb9\xab\xbd\xbb.
        case("gbk without its charset", "text/csv", b"id,name,opened,fare\n1,a,2020-01-01,2.00\n2,\xb9\xab\xbd\xbb,2020-01-01,2.00\n", 422, Some(3), Some("name")),
        // \x81\x7f is no GB18030 character.
        case("not the named charset", "text/csv; charset=gb18030", b"id,name,opened,fare\n1,a,2020-01-01,2.00\n2,\x81\x7f,2020-01-01,2.00\n", 422, Some(3), None),
        case("ndjson not utf-8", "application/x-ndjson", b"{\"id\":1}\n{\"id\":2,\"name\":\"\xb9\xab\"}\n", 422, Some(2), None),
        case("unknown charset", "text/csv; charset=klingon", b"id,name,opened,fare\n", 415, None, None),
        case("ndjson wrong type", "application/x-ndjson", b"{\"id\":1}\n{\"id\":\"x\"}\n", 422, Some(2), None),
        case("empty primary key", "text/csv", b"id,name,opened,fare\n1,a,2020-01-01,2.00\n,b,2020-01-02,2.00\n", 422, Some(3), Some("id")),
        case("empty primary key, late", "text/csv", keyless_late.as_bytes(), 422, Some(4322), Some("id")),
        case("ndjson without its key", "application/x-ndjson", b"{\"id\":1}\n\n{\"name\":\"b\"}\n", 422, None, Some("id")),
        case("arrow with a null key", "application/vnd.apache.arrow.stream", &keyless_arrow, 422, None, Some("id")),
        case("not parquet", "application/vnd.apache.parquet", b"PAR1 this is not parquet at all", 422, None, None),
        case("not arrow", "application/vnd.apache.arrow.stream", b"\x00\x01\x02 nope", 422, None, None),
        case("csv sent as arrow", "application/vnd.apache.arrow.file", good.as_bytes(), 422, None, None),
        case("a truncated arrow file", "application/vnd.apache.arrow.file", &arrow_file_cut, 422, None, None),
        // arrow's decoder panics on this one: still the upload's fault.
        case("a buffer past the arrow body", "application/vnd.apache.arrow.stream", &corrupt_arrow, 422, None, None),
        case("empty body", "text/csv", b"", 422, None, None),
        case("empty ndjson", "application/x-ndjson", b"", 422, None, None),
        case("empty parquet", "application/vnd.apache.parquet", b"", 422, None, None),
        case("unsupported content type", "application/xml", b"<rows/>", 415, None, None),
        case("no content type", "", b"id\n1\n", 415, None, None),
        case("over the size limit", "text/csv", big.as_bytes(), 413, None, None),
    ];
    cases.push(Case {
        what: "truncated gzip",
        ct: "text/csv",
        gzip: true,
        body: truncated_gz,
        status: 422,
        line: None,
        column: None,
    });
    // Sent uncompressed under `Content-Encoding: gzip`: said so, as text and as Parquet.
    for ct in ["text/csv", "application/vnd.apache.parquet"] {
        cases.push(Case {
            what: "not gzip at all",
            ct,
            gzip: true,
            body: good.as_bytes().to_vec(),
            status: 422,
            line: None,
            column: None,
        });
    }
    for c in cases {
        let mut rb = api
            .c
            .post(s.url("/api/v1/datasets/transport/stops/versions"))
            .bearer_auth(ADMIN)
            .body(c.body);
        if !c.ct.is_empty() {
            rb = rb.header("content-type", c.ct);
        }
        if c.gzip {
            rb = rb.header("content-encoding", "gzip");
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status().as_u16(), c.status, "{}", c.what);
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{}",
            c.what
        );
        let body: Value = r.json().await.unwrap();
        if let Some(l) = c.line {
            assert_eq!(body["line"], l, "{}: {body}", c.what);
        }
        if let Some(col) = c.column {
            assert_eq!(body["column"], col, "{}: {body}", c.what);
        }
        // Text that is not UTF-8 says how to name its encoding.
        if c.what.contains("utf-8") || c.what.contains("without its charset") {
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains("charset=gb18030"), "{}: {body}", c.what);
        }
        if c.what == "not gzip at all" {
            let detail = body["detail"].as_str().unwrap();
            assert!(
                detail.contains("the body is not gzip"),
                "{}: {body}",
                c.what
            );
        }
        // Formats without lines name the row: the NDJSON object (a blank line is none) or
        // the Arrow row.
        if c.what.starts_with("ndjson without") || c.what.starts_with("arrow with a null") {
            assert_eq!(body["row"], 2, "{}: {body}", c.what);
        }
        assert!(
            !body["detail"].as_str().unwrap_or("").is_empty(),
            "{}",
            c.what
        );
        assert_eq!(
            api.dataset("stops").await,
            before,
            "{}: the dataset changed",
            c.what
        );
    }
    // 404s.
    assert_eq!(
        api.upload("/api/v1/datasets/transport/nope/versions", "text/csv", good)
            .await
            .0,
        404
    );
    assert_eq!(
        api.upload("/api/v1/datasets/nope/stops/versions", "text/csv", good)
            .await
            .0,
        404
    );
    assert_eq!(
        api.upload(
            "/api/v1/datasets/transport/stops/versions?mode=merge",
            "text/csv",
            good
        )
        .await
        .0,
        400
    );
    // Nothing was left behind (dropped uploads are deleted in the background).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(warehouse_files(&s), files_before);
    assert_eq!(api.dataset("stops").await, before);
}

/// Text in another encoding than UTF-8 (GBK from a spreadsheet's "CSV" in Chinese locales,
/// UTF-16 from its "Unicode text") is read when the Content-Type names it, and stored as UTF-8:
/// the same rows as the UTF-8 upload of the same text, through inference, declared columns,
/// gzip and NDJSON alike.
#[tokio::test]
async fn uploads_in_other_encodings_are_stored_as_utf8() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    let rows = |name: &str| {
        let url = s.url(&format!(
            "/api/v1/datasets/transport/{name}/rows?order=id&format=csv"
        ));
        let c = api.c.clone();
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let text = "id,站名,区县\n1,文一路公交站,西湖区\n2,武林广场站,拱墅区\n";
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable);
    // Inferred: the header's Chinese names are the columns.
    api.register_schemaless("gbk_inferred").await;
    let (status, body) = api
        .upload(
            "/api/v1/datasets/transport/gbk_inferred/versions",
            "text/csv; charset=gbk",
            gbk.to_vec(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(rows("gbk_inferred").await, text);
    // Declared columns, gzip-compressed GB18030, appended.
    api.register("stops").await;
    let csv = "id,name,opened,fare\n1,文一路公交站,2020-01-01,2.00\n2,武林广场站,2020-01-02,3.50\n";
    let (gb18030, _, _) = encoding_rs::GB18030.encode(csv);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&gb18030).unwrap();
    let r = api
        .c
        .post(s.url("/api/v1/datasets/transport/stops/versions?mode=append"))
        .bearer_auth(ADMIN)
        .header("content-type", "text/csv; charset=\"GB18030\"")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(
        rows("stops").await,
        "id,name,opened,fare\n1,文一路公交站,2020-01-01,2.00\n2,武林广场站,2020-01-02,3.50\n"
    );
    // UTF-16 with its byte-order mark, tab-separated, as "Unicode text" is saved; and NDJSON.
    api.register_schemaless("utf16").await;
    let tsv = "id\t站名\n7\t古荡站\n";
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(tsv.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let (status, body) = api
        .upload(
            "/api/v1/datasets/transport/utf16/versions?delimiter=tab",
            "text/csv; charset=utf-16le",
            utf16,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(rows("utf16").await, "id,站名\n7,古荡站\n");
    api.register_schemaless("ndjson_gbk").await;
    let (ndjson, _, _) = encoding_rs::GBK.encode("{\"id\":1,\"站名\":\"黄龙站\"}\n");
    let (status, body) = api
        .upload(
            "/api/v1/datasets/transport/ndjson_gbk/versions",
            "application/x-ndjson; charset=gbk",
            ndjson.to_vec(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(rows("ndjson_gbk").await, "id,站名\n1,黄龙站\n");
    // UTF-8 with a byte-order mark (Windows PowerShell's NDJSON, Excel's "CSV UTF-8"): the mark
    // is no part of the first column's name.
    for (name, ct, body) in [
        (
            "bom_ndjson",
            "application/x-ndjson",
            "\u{feff}{\"id\":3,\"站名\":\"龙翔桥\"}\n",
        ),
        ("bom_csv", "text/csv", "\u{feff}id,站名\n3,龙翔桥\n"),
    ] {
        api.register_schemaless(name).await;
        let (status, body) = api
            .upload(
                &format!("/api/v1/datasets/transport/{name}/versions"),
                ct,
                body.to_string(),
            )
            .await;
        assert_eq!(status, 201, "{name}: {body}");
        assert_eq!(rows(name).await, "id,站名\n3,龙翔桥\n", "{name}");
    }
    // Without the charset, GBK is refused at its line, saying how to name the encoding (the
    // header's names, or an NDJSON object's text on line 2, read to infer the columns).
    let (ndjson_gbk, _, _) = encoding_rs::GBK.encode("{\"id\":1}\n{\"id\":2,\"站名\":\"黄龙\"}\n");
    for (name, ct, body, line) in [
        ("gbk_unnamed", "text/csv", gbk.to_vec(), 1),
        (
            "ndjson_unnamed",
            "application/x-ndjson",
            ndjson_gbk.to_vec(),
            2,
        ),
    ] {
        api.register_schemaless(name).await;
        let (status, body) = api
            .upload(
                &format!("/api/v1/datasets/transport/{name}/versions"),
                ct,
                body,
            )
            .await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(body["line"], line, "{name}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("charset=gb18030"),
            "{name}: {body}"
        );
    }
}

#[tokio::test]
async fn concurrent_uploads_lose_nothing() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register("stops").await;
    let uploads = (0..6).map(|i| {
        let api = &api;
        async move {
            let csv = format!("id,name,opened,fare\n{i},n{i},2020-01-01,1.00\n");
            api.upload("/api/v1/datasets/transport/stops/versions", "text/csv", csv)
                .await
        }
    });
    let results = futures_join(uploads).await;
    for (st, v) in &results {
        assert!(*st == 201 || *st == 409, "{st} {v}");
    }
    let ok = results.iter().filter(|(st, _)| *st == 201).count() as i64;
    let d = api.dataset("stops").await;
    assert_eq!(
        d["row_count"].as_i64(),
        Some(ok),
        "every committed append is in the dataset"
    );
    assert_eq!(d["current_version"].as_i64(), Some(ok));
}

async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.collect();
    let mut out = Vec::new();
    // Start all before awaiting any.
    let mut pinned: Vec<_> = handles.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(done.into_iter().flatten());
    out
}

/// Sends headers and part of a body, then lets the caller decide what happens next.
fn partial_upload(addr: &str, total: usize, sent: &[u8]) -> std::net::TcpStream {
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    write!(
        sock,
        "POST /api/v1/datasets/transport/stops/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: text/csv\r\nContent-Length: {total}\r\n\r\n"
    )
    .unwrap();
    sock.write_all(sent).unwrap();
    sock.flush().unwrap();
    sock
}

/// The upload limit of the tests whose uploads are cut off midway: large enough for the decoder
/// to have decoded segments and written files before the cut.
const UPLOAD_LIMIT: &str = "DATAGATE_LIMITS__MAX_UPLOAD_BYTES";
const LARGE: &str = "2000000000";

/// Starts an upload whose body never ends and sends rows until the server has written more than
/// `before` warehouse files (it decodes in segments of megabytes, so how much that takes depends
/// on the machine); returns the connection, its body unfinished.
fn upload_until_files(s: &Server, before: usize) -> std::net::TcpStream {
    let mut sock = partial_upload(&s.addr, 1 << 30, b"id,name,opened,fare\n");
    let start = std::time::Instant::now();
    let mut next = 0u64;
    while warehouse_files(s).len() <= before && start.elapsed() < Duration::from_secs(30) {
        let rows: String = (next..next + 20_000)
            .map(|i| format!("{i},name{i},2020-01-01,{}.00\n", i % 97))
            .collect();
        next += 20_000;
        if let Err(e) = sock.write_all(rows.as_bytes()) {
            let mut answer = String::new();
            let _ = sock.read_to_string(&mut answer);
            panic!("the server stopped reading ({e}): {answer}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        warehouse_files(s).len() > before,
        "the upload never wrote a file: {}",
        s.log_text()
    );
    sock
}

#[tokio::test]
async fn a_client_that_disconnects_leaves_nothing() {
    let (s, _tmp) = server_with_department_and(&[(UPLOAD_LIMIT, LARGE)]).await;
    let api = Api::new(&s);
    api.register("stops").await;
    let before = api.dataset("stops").await;
    // Send until the upload has written files, then go away.
    let sock = upload_until_files(&s, 0);
    drop(sock);
    // The server notices the broken body and deletes what the upload wrote.
    let start = std::time::Instant::now();
    while !warehouse_files(&s).is_empty() && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(api.dataset("stops").await, before);
    assert!(warehouse_files(&s).is_empty(), "{:?}", warehouse_files(&s));
}

#[tokio::test]
async fn sigkill_mid_upload_keeps_the_previous_version_and_sweeps_orphans() {
    let (mut s, tmp) = server_with_department_and(&[(UPLOAD_LIMIT, LARGE)]).await;
    let api = Api::new(&s);
    api.register("stops").await;
    let good = "id,name,opened,fare\n1,a,2020-01-01,2.00\n";
    api.append_csv("stops", good).await;
    let before = api.dataset("stops").await;
    let files_before = warehouse_files(&s);
    // Rows until the server has written Parquet files, but not the end of the body.
    let mut sock = upload_until_files(&s, files_before.len());
    s.kill();
    assert!(
        warehouse_files(&s).len() > files_before.len(),
        "the interrupted upload should have left files for the sweep to remove"
    );
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    let data_dir = s.data_dir();
    let mut opts = options();
    opts.env.retain(|(k, _)| k != "DATAGATE_CATALOG_MANIFESTS");
    opts.manifests = Some(tmp.path().join("catalog"));
    let s2 = Server::start_in(&data_dir, opts).await;
    let api2 = Api::new(&s2);
    let after = api2.dataset("stops").await;
    let strip = |v: &Value| v.to_string().replace(&s.base, "").replace(&s2.base, "");
    assert_eq!(strip(&after), strip(&before));
    assert_eq!(warehouse_files(&s2), files_before, "orphans swept at start");
    assert!(files_under(&data_dir.join("tmp")).is_empty());
    // And the dataset still reads and accepts uploads.
    assert_eq!(
        api2.upload(
            "/api/v1/datasets/transport/stops/versions",
            "text/csv",
            good
        )
        .await
        .0,
        201
    );
}

#[tokio::test]
async fn retention_keeps_the_newest_versions_and_deletes_the_rest() {
    let (s, _tmp) = server_with_department_and(&[("DATAGATE_INGEST__RETAIN_VERSIONS", "2")]).await;
    let api = Api::new(&s);
    api.register("stops").await;
    for i in 0..4 {
        let csv = format!("id,name,opened,fare\n{i},v{i},2020-01-01,1.00\n");
        let (st, v) = api
            .upload(
                "/api/v1/datasets/transport/stops/versions?mode=replace",
                "text/csv",
                csv,
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    let (_, versions) = api
        .send(
            api.c
                .get(s.url("/api/v1/datasets/transport/stops/versions")),
        )
        .await;
    let kept: Vec<i64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(kept, [4, 3]);
    assert_eq!(
        warehouse_files(&s).len(),
        2,
        "one file per kept replace version: {:?}",
        warehouse_files(&s)
    );
    assert_eq!(api.dataset("stops").await["row_count"], 1);
}

#[tokio::test]
async fn a_replace_may_add_nullable_columns() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register("stops").await;
    let v1 = "id,name,opened,fare\n1,a,2020-01-01,2.00\n";
    assert_eq!(
        api.upload("/api/v1/datasets/transport/stops/versions", "text/csv", v1)
            .await
            .0,
        201
    );
    // An append may not add columns.
    let extra = "id,name,opened,fare,shelter\n2,b,2020-01-02,2.00,true\n";
    let (st, e) = api
        .upload(
            "/api/v1/datasets/transport/stops/versions?mode=append",
            "text/csv",
            extra,
        )
        .await;
    assert_eq!(
        (st.as_u16(), e["column"].as_str()),
        (422, Some("shelter")),
        "{e}"
    );
    // A replace may, and keeps the declared columns' types and annotations.
    let (st, v) = api
        .upload(
            "/api/v1/datasets/transport/stops/versions?mode=replace",
            "text/csv",
            extra,
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let d = api.dataset("stops").await;
    let schema: Vec<String> = schema_of(&d);
    assert_eq!(
        schema,
        [
            "id:int64",
            "name:utf8",
            "opened:date32",
            "fare:decimal128(5,2)",
            "shelter:boolean"
        ]
    );
    assert_eq!(d["schema"][0]["description"], "编号");
    // A replace that breaks a declared column's type is refused.
    let bad = "id,name,opened,fare,shelter\nx,b,2020-01-02,2.00,true\n";
    let (st, e) = api
        .upload(
            "/api/v1/datasets/transport/stops/versions?mode=replace",
            "text/csv",
            bad,
        )
        .await;
    assert_eq!(
        (st.as_u16(), e["column"].as_str()),
        (422, Some("id")),
        "{e}"
    );
    // Later appends carry the new column.
    let next = "id,name,opened,fare,shelter\n3,c,2020-01-03,2.00,false\n";
    api.append_csv("stops", next).await;
    assert_eq!(api.dataset("stops").await["row_count"], 2);
}

/// A Parquet column of a type no column has (a duration, bytes) is refused naming the column,
/// its type as the API spells types, and the usual way to store what it holds; nothing is kept.
#[tokio::test]
async fn unstorable_types_say_how_to_store_them() {
    use arrow::array::{ArrayRef, BinaryArray, DurationSecondArray, Int32Array, RecordBatch};
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    let waits = DurationSecondArray::from(vec![Some(90), None]);
    let bytes = BinaryArray::from(vec![&b"\x00\xff"[..], b"ok"]);
    for (column, values, says) in [
        (
            "Wait",
            Arc::new(waits) as ArrayRef,
            "\"duration(s)\"; expected one of",
        ),
        (
            "photo",
            Arc::new(bytes),
            "store them as text (hex or base64)",
        ),
    ] {
        let name = column.to_lowercase();
        api.register_schemaless(&name).await;
        let ids = Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("id", ids), (column, values)]).unwrap();
        let (st, v) = api
            .send(api.version_request(
                &name,
                "application/vnd.apache.parquet",
                false,
                parquet_bytes(&batch, None),
            ))
            .await;
        assert_eq!(st, 422, "{v}");
        assert_eq!(v["column"], column, "{v}");
        assert!(v["detail"].as_str().unwrap().contains(says), "{v}");
        assert_eq!(api.dataset(&name).await["row_count"], 0);
    }
}

/// Parquet and Arrow lists, structs and maps are stored as text columns of their JSON, as
/// NDJSON arrays and objects are, and as a CSV answer writes them (they were refused).
#[tokio::test]
async fn parquet_and_arrow_lists_and_structs_are_stored_as_their_json_text() {
    use arrow::array::{ArrayRef, Int32Array, ListArray, RecordBatch, StringArray, StructArray};
    use arrow::datatypes::{DataType, Field, Int32Type};
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    let batch = || {
        let stops = ListArray::from_iter_primitive::<Int32Type, _, _>([
            Some(vec![Some(3), None, Some(5)]),
            None,
        ]);
        let plate = Arc::new(StringArray::from(vec![Some("浙A"), None])) as ArrayRef;
        let bus = StructArray::from(vec![(
            Arc::new(Field::new("plate", DataType::Utf8, true)),
            plate,
        )]);
        RecordBatch::try_from_iter([
            ("trip", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
            ("stops", Arc::new(stops)),
            ("bus", Arc::new(bus)),
        ])
        .unwrap()
    };
    for (name, content_type) in [
        ("pq", "application/vnd.apache.parquet"),
        ("ipc", "application/vnd.apache.arrow.stream"),
    ] {
        api.register_schemaless(name).await;
        api.upload_taken(name, content_type, parquet_or_ipc(content_type, &batch()))
            .await;
        assert_eq!(
            schema_of(&api.dataset(name).await),
            ["trip:int32", "stops:utf8", "bus:utf8"],
            "{name}"
        );
        // An append of the same columns takes them as text again.
        api.upload_taken(name, content_type, parquet_or_ipc(content_type, &batch()))
            .await;
        let rows = api
            .query_rows(&format!(
                "SELECT stops, bus FROM transport.{name} ORDER BY trip LIMIT 2"
            ))
            .await;
        assert_eq!(
            rows,
            json!([
                {"stops": "[3,null,5]", "bus": "{\"plate\":\"浙A\"}"},
                {"stops": "[3,null,5]", "bus": "{\"plate\":\"浙A\"}"},
            ]),
            "{name}"
        );
        let nulls = api
            .query_rows(&format!(
                "SELECT count(*) AS n FROM transport.{name} WHERE stops IS NULL AND bus = '{{\"plate\":null}}'"
            ))
            .await;
        assert_eq!(nulls, json!([{"n": 2}]), "{name}");
    }
}

/// `batch` as the body of an upload of `content_type` (Parquet or an Arrow stream).
fn parquet_or_ipc(content_type: &str, batch: &arrow::array::RecordBatch) -> Vec<u8> {
    match content_type {
        "application/vnd.apache.parquet" => parquet_bytes(batch, None),
        _ => arrow_stream_bytes(batch),
    }
}

/// NDJSON arrays and objects (an address, a list of stops) are stored in text columns as their
/// JSON text as written, declared or inferred, and answered as that text; they were refused
/// (a declared text column: "expected string"; inferred: a type no column has).
#[tokio::test]
async fn ndjson_arrays_and_objects_are_stored_as_their_json_text() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register("stops").await;
    let declared = "{\"id\":1,\"name\":{\"zh\":\"西湖\",\"en\":\"West Lake\"},\"opened\":\"2020-01-01\"}\n\
                    {\"id\":2,\"name\":[\"a\", \"b\"]}\n";
    api.upload_taken("stops", "application/x-ndjson", declared.into())
        .await;
    api.register_schemaless("trips").await;
    let inferred = "{\"trip\":1,\"stops\":[3, 5],\"bus\":{\"plate\":\"浙A\"}}\n\
                    {\"trip\":2,\"stops\":[{\"id\":7}],\"bus\":null}\n";
    api.upload_taken("trips", "application/x-ndjson", inferred.into())
        .await;
    let rows = api
        .query_rows("SELECT s.id, s.name, t.stops, t.bus FROM transport.stops s JOIN transport.trips t ON s.id = t.trip ORDER BY s.id")
        .await;
    assert_eq!(
        rows,
        json!([
            {"id": 1, "name": "{\"zh\":\"西湖\",\"en\":\"West Lake\"}", "stops": "[3, 5]", "bus": "{\"plate\":\"浙A\"}"},
            {"id": 2, "name": "[\"a\", \"b\"]", "stops": "[{\"id\":7}]", "bus": null},
        ])
    );
    let trips = api.dataset("trips").await;
    assert_eq!(schema_of(&trips), ["trip:int64", "stops:utf8", "bus:utf8"]);
}

/// Times with a zone (pandas' tz-aware datetimes, in Parquet or Arrow) are stored as the same
/// instants in UTC, as a CSV time with an offset is: 10:00 in Shanghai is 02:00 UTC whichever
/// way it came. They were refused as an unsupported type.
#[tokio::test]
async fn times_with_a_zone_are_stored_as_utc() {
    use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    // 2024-01-01T02:00:00Z, and a null.
    let instants = TimestampMicrosecondArray::from(vec![Some(1_704_074_400_000_000), None])
        .with_timezone("Asia/Shanghai");
    let batch = RecordBatch::try_from_iter([("t", Arc::new(instants) as ArrayRef)]).unwrap();
    let stream = arrow_stream_bytes(&batch);
    let parquet = parquet_bytes(&batch, None);
    for (name, content_type, body) in [
        ("tz_arrow", "application/vnd.apache.arrow.stream", stream),
        (
            "tz_parquet",
            "application/vnd.apache.parquet",
            parquet.clone(),
        ),
    ] {
        api.register_schemaless(name).await;
        let (st, v) = api
            .send(api.version_request(name, content_type, false, body))
            .await;
        assert_eq!(st, 201, "{content_type}: {v}");
        assert_eq!(schema_of(&api.dataset(name).await), ["t:timestamp(us)"]);
        // The same instant as CSV with its offset, appended: the same stored value.
        api.append_csv(name, "t\n2024-01-01T10:00:00+08:00\n").await;
        let sql = format!("SELECT CAST(t AS VARCHAR) AS t FROM transport.{name}");
        let (st, v) = api.post_json("/api/v1/query", json!({ "sql": sql })).await;
        assert_eq!(st, 200, "{v}");
        let mut times: Vec<Value> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["t"].clone())
            .collect();
        times.sort_by_key(|t| t.to_string());
        assert_eq!(
            times,
            [
                json!("2024-01-01T02:00:00"),
                json!("2024-01-01T02:00:00"),
                Value::Null
            ]
        );
    }
    // Into a declared column of another unit: the instant, in that unit.
    api.post_json(
        "/api/v1/datasets",
        json!({"department": "transport", "name": "tz_declared", "title": "t",
               "access_level": "open", "license": "CC-BY-4.0", "tags": [],
               "update_frequency": "daily", "columns": [{"name": "t", "type": "timestamp(ms)"}]}),
    )
    .await;
    let (st, v) = api
        .send(api.version_request(
            "tz_declared",
            "application/vnd.apache.parquet",
            false,
            parquet,
        ))
        .await;
    assert_eq!(st, 201, "{v}");
    let (_, v) = api
        .post_json(
            "/api/v1/query",
            json!({"sql": "SELECT CAST(t AS VARCHAR) AS t FROM transport.tz_declared WHERE t IS NOT NULL"}),
        )
        .await;
    assert_eq!(v["rows"][0]["t"], "2024-01-01T02:00:00");
}

/// A decimal with more fractional digits than its column's scale is rounded half away from zero
/// whatever the upload's format (CSV quoted or not, NDJSON number or string, a Parquet text
/// column, a Parquet decimal of a larger scale); one too large is refused with its line and
/// column, and nothing of that upload is kept.
#[tokio::test]
async fn decimals_round_alike_in_every_format() {
    use arrow::array::{ArrayRef, Decimal128Array, RecordBatch, StringArray};
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register_with_columns(
        "fares",
        Some(json!([{"name": "src", "type": "utf8"}, {"name": "m", "type": "decimal128(5,2)"}])),
    )
    .await;
    api.append_csv("fares", "src,m\ncsv,1.235\ncsv,-1.235\n")
        .await;
    api.append_csv("fares", "src,m\n\"quoted\",1.235\nquoted,\"-1.235\"\n")
        .await;
    let ndjson = "{\"src\":\"ndjson\",\"m\":1.235}\n{\"src\":\"ndjson\",\"m\":\"-1.235\"}\n";
    let parquet = |m: ArrayRef| {
        let src: ArrayRef = Arc::new(StringArray::from(vec!["parquet"; 2]));
        parquet_bytes(
            &RecordBatch::try_from_iter([("src", src), ("m", m)]).unwrap(),
            None,
        )
    };
    let text = parquet(Arc::new(StringArray::from(vec!["1.235", "-1.235"])));
    let wider = parquet(Arc::new(
        Decimal128Array::from(vec![1235, -1235])
            .with_precision_and_scale(6, 3)
            .unwrap(),
    ));
    for (content_type, body) in [
        ("application/x-ndjson", ndjson.as_bytes().to_vec()),
        ("application/vnd.apache.parquet", text),
        ("application/vnd.apache.parquet", wider),
    ] {
        api.upload_taken("fares", content_type, body).await;
    }
    let stored = || async {
        let sql = "SELECT CAST(m AS VARCHAR) AS m, count(*) AS n FROM transport.fares GROUP BY m ORDER BY m";
        let (st, v) = api.post_json("/api/v1/query", json!({ "sql": sql })).await;
        assert_eq!(st, 200, "{v}");
        v["rows"].clone()
    };
    assert_eq!(
        stored().await,
        json!([{"m": "-1.24", "n": 5}, {"m": "1.24", "n": 5}])
    );
    // Too large after rounding, on line 3 (the header is line 1), in CSV and NDJSON.
    for (content_type, body, line) in [
        ("text/csv", "src,m\ncsv,999.99\ncsv,999.995\ncsv,1\n", 3),
        ("text/csv", "src,m\n\"q\",1\n\"q\",1e3\n", 3),
        (
            "application/x-ndjson",
            "{\"src\":\"n\",\"m\":1}\n\n{\"src\":\"n\",\"m\":12345}\n",
            3,
        ),
    ] {
        let (st, v) = api
            .send(api.version_request("fares", content_type, false, body.as_bytes().to_vec()))
            .await;
        assert_eq!(st, 422, "{body}: {v}");
        assert_eq!(v["line"], line, "{body}: {v}");
        assert_eq!(v["column"], "m", "{body}: {v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("does not fit decimal128(5,2)"),
            "{v}"
        );
    }
    assert_eq!(
        stored().await,
        json!([{"m": "-1.24", "n": 5}, {"m": "1.24", "n": 5}]),
        "nothing of a refused upload is kept"
    );
}

/// An integer column takes a number only when it is whole, in every format: `7.5` in NDJSON,
/// `3.7` in a Parquet float column, `4.5` in a Parquet decimal are refused naming their line or
/// row and the column (they were stored cut, as 7, 3 and 4); `7.0` and `2.0` are taken.
#[tokio::test]
async fn integer_columns_take_whole_numbers_only() {
    use arrow::array::{ArrayRef, Decimal128Array, Float64Array, RecordBatch};
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register_with_columns("counts", Some(json!([{"name": "n", "type": "int64"}])))
        .await;
    let parquet =
        |n: ArrayRef| parquet_bytes(&RecordBatch::try_from_iter([("n", n)]).unwrap(), None);
    let decimals = |v: Vec<i128>| {
        parquet(Arc::new(
            Decimal128Array::from(v)
                .with_precision_and_scale(5, 1)
                .unwrap(),
        ))
    };
    for (content_type, body) in [
        (
            "application/x-ndjson",
            b"{\"n\":7.0}\n{\"n\":7e1}\n".to_vec(),
        ),
        (
            "application/vnd.apache.parquet",
            parquet(Arc::new(Float64Array::from(vec![2.0]))),
        ),
        ("application/vnd.apache.parquet", decimals(vec![40])),
    ] {
        api.upload_taken("counts", content_type, body).await;
    }
    for (content_type, body, at) in [
        (
            "application/x-ndjson",
            b"{\"n\":1}\n{\"n\":7.5}\n".to_vec(),
            ("line", 2),
        ),
        (
            "application/vnd.apache.parquet",
            parquet(Arc::new(Float64Array::from(vec![1.0, 3.7]))),
            ("row", 2),
        ),
        (
            "application/vnd.apache.parquet",
            decimals(vec![10, 45]),
            ("row", 2),
        ),
    ] {
        let (st, v) = api
            .send(api.version_request("counts", content_type, false, body))
            .await;
        assert_eq!(st, 422, "{content_type}: {v}");
        assert_eq!(v[at.0], at.1, "{content_type}: {v}");
        assert_eq!(v["column"], "n", "{content_type}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains("it has a fraction"),
            "{v}"
        );
    }
    assert_eq!(
        api.query_rows("SELECT n FROM transport.counts ORDER BY n")
            .await,
        json!([{"n": 2}, {"n": 4}, {"n": 7}, {"n": 70}])
    );
}

/// Dates and times in the shapes spreadsheets and government systems export (`2024/1/5`,
/// `2024年1月5日`, a time without seconds) are taken in CSV, NDJSON and Parquet text columns; a
/// number is no time (an NDJSON epoch count was read in the column's unit: 1704067200 as
/// 1970-01-01 00:28); a CSV time that is none names its line and column (it named neither).
#[tokio::test]
async fn spreadsheet_dates_are_taken_and_numbers_are_no_times() {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register_with_columns(
        "visits",
        Some(json!([{"name": "d", "type": "date32"}, {"name": "t", "type": "timestamp(ms)"}])),
    )
    .await;
    api.append_csv(
        "visits",
        "d,t\n2024/1/5,2024/1/5 10:00\n\"2024年1月5日\",2024-01-05 18:00+08:00\n",
    )
    .await;
    let text = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let parquet = parquet_bytes(
        &RecordBatch::try_from_iter([("d", text("2024.1.5")), ("t", text("2024/01/05 10:00:00"))])
            .unwrap(),
        None,
    );
    for (content_type, body) in [
        (
            "application/x-ndjson",
            "{\"d\":\"2024/1/5\",\"t\":\"2024/1/5 10:00\"}\n"
                .as_bytes()
                .to_vec(),
        ),
        ("application/vnd.apache.parquet", parquet),
    ] {
        api.upload_taken("visits", content_type, body).await;
    }
    assert_eq!(
        api.query_rows("SELECT CAST(d AS VARCHAR) AS d, CAST(t AS VARCHAR) AS t, count(*) AS n FROM transport.visits GROUP BY 1, 2").await,
        json!([{"d": "2024-01-05", "t": "2024-01-05T10:00:00", "n": 4}])
    );
    for (content_type, body, line, column, what) in [
        (
            "application/x-ndjson",
            "{\"d\":null}\n{\"t\":1704067200}\n",
            2,
            "t",
            "a number's unit cannot be told",
        ),
        (
            "text/csv",
            "d,t\n2024-01-05,\n2024-01-05,1704067200\n",
            3,
            "t",
            "is not a valid timestamp(ms)",
        ),
        (
            "text/csv",
            "d,t\n\"2024/2/30\",\n",
            2,
            "d",
            "is not a valid date32",
        ),
    ] {
        let (st, v) = api
            .send(api.version_request("visits", content_type, false, body.as_bytes().to_vec()))
            .await;
        assert_eq!(st, 422, "{body}: {v}");
        assert_eq!(v["line"], line, "{body}: {v}");
        assert_eq!(v["column"], column, "{body}: {v}");
        assert!(v["detail"].as_str().unwrap().contains(what), "{v}");
    }
}

/// A boolean column takes the words forms write (`是`/`否`, `Y`/`N`, `1`/`0`, and the rest
/// PostgreSQL takes) in CSV, NDJSON and Parquet text columns; anything else names its line.
#[tokio::test]
async fn booleans_take_the_words_forms_use() {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register_with_columns("flags", Some(json!([{"name": "b", "type": "boolean"}])))
        .await;
    api.append_csv("flags", "b\n是\n否\nY\n\"n\"\n1\nFALSE\n")
        .await;
    let parquet = parquet_bytes(
        &RecordBatch::try_from_iter([(
            "b",
            Arc::new(StringArray::from(vec!["yes", "0"])) as ArrayRef,
        )])
        .unwrap(),
        None,
    );
    for (content_type, body) in [
        (
            "application/x-ndjson",
            b"{\"b\":true}\n{\"b\":\"\xe5\x90\xa6\"}\n".to_vec(),
        ),
        ("application/vnd.apache.parquet", parquet),
    ] {
        api.upload_taken("flags", content_type, body).await;
    }
    assert_eq!(
        api.query_rows("SELECT b, count(*) AS n FROM transport.flags GROUP BY b ORDER BY b")
            .await,
        json!([{"b": false, "n": 5}, {"b": true, "n": 5}])
    );
    let (st, v) = api
        .send(api.version_request("flags", "text/csv", false, b"b\nyes\nmaybe\n".to_vec()))
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(
        (v["line"].clone(), v["column"].clone()),
        (json!(3), json!("b")),
        "{v}"
    );
}

/// A time finer than its column's unit is rounded to the nearest unit in every format (arrow's
/// readers and casts cut `.9996` to `.999`).
#[tokio::test]
async fn times_finer_than_their_unit_round_in_every_format() {
    use arrow::array::{ArrayRef, RecordBatch, TimestampNanosecondArray};
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register_with_columns(
        "ticks",
        Some(json!([{"name": "id", "type": "int64"}, {"name": "at", "type": "timestamp(ms)"}])),
    )
    .await;
    api.append_csv(
        "ticks",
        "id,at\n1,2024-01-01 10:00:00.9996\n2,2024-01-01T10:00:00.0004\n",
    )
    .await;
    // 2024-01-01T10:00:00Z in nanoseconds.
    let ten = 1_704_103_200_000_000_000i64;
    let batch = |first: i64, at: Vec<i64>| {
        let ids: Vec<i64> = (first..first + at.len() as i64).collect();
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(arrow::array::Int64Array::from(ids)) as ArrayRef,
            ),
            (
                "at",
                Arc::new(TimestampNanosecondArray::from(at)) as ArrayRef,
            ),
        ])
        .unwrap()
    };
    let parquet = parquet_bytes(&batch(3, vec![ten + 999_600_000, ten + 500_000]), None);
    let mut arrow_ipc = Vec::new();
    {
        let b = batch(5, vec![ten + 999_500_000, ten + 499_999]);
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut arrow_ipc, &b.schema()).unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();
    }
    for (content_type, body) in [
        (
            "application/x-ndjson",
            b"{\"id\":7,\"at\":\"2024-01-01T10:00:00.99951\"}\n".to_vec(),
        ),
        ("application/vnd.apache.parquet", parquet),
        ("application/vnd.apache.arrow.stream", arrow_ipc),
    ] {
        api.upload_taken("ticks", content_type, body).await;
    }
    let at = |r: &Value| r["at"].as_str().unwrap_or_default().to_string();
    let rows = api
        .query_rows("SELECT id, at FROM transport.ticks ORDER BY id")
        .await;
    let got: Vec<(i64, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), at(r)))
        .collect();
    let (up, down) = (
        "2024-01-01T10:00:01".to_string(),
        "2024-01-01T10:00:00".to_string(),
    );
    assert_eq!(
        got,
        [
            (1, up.clone()),
            (2, down.clone()),
            (3, up.clone()),
            (4, format!("{down}.001")),
            (5, up.clone()),
            (6, down.clone()),
            (7, up.clone()),
        ],
        "{rows}"
    );
}

/// A Parquet or Arrow time beyond the calendar (a `timestamp(s)` of 1e14 seconds, year
/// 3170843) is refused with its row and column: stored, no JSON or CSV answer could show it.
#[tokio::test]
async fn times_beyond_the_calendar_are_refused() {
    use arrow::array::{ArrayRef, RecordBatch, TimestampSecondArray};
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    let batch = RecordBatch::try_from_iter([(
        "at",
        Arc::new(TimestampSecondArray::from(vec![
            0,
            1_704_067_200,
            99_999_999_999_999,
        ])) as ArrayRef,
    )])
    .unwrap();
    api.register_with_columns("far", Some(json!([{"name": "at", "type": "timestamp(s)"}])))
        .await;
    let (st, v) = api
        .send(api.version_request(
            "far",
            "application/vnd.apache.parquet",
            false,
            parquet_bytes(&batch, None),
        ))
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(
        (v["row"].clone(), v["column"].clone()),
        (json!(3), json!("at")),
        "{v}"
    );
    let (_, versions) = s.get_json("/api/v1/datasets/transport/far/versions").await;
    assert_eq!(versions, json!([]), "nothing of the upload is visible");
}

/// An NDJSON column whose values are sometimes numbers, sometimes strings is inferred as text,
/// and its upload is taken with the numbers as their JSON text (it was refused by the schema
/// inferred from it: "expected string got 1").
#[tokio::test]
async fn ndjson_text_columns_take_numbers_and_booleans() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register_schemaless("mixed").await;
    let body = "{\"code\":1}\n{\"code\":\"A-2\"}\n{\"code\":true}\n{\"code\":2.50}\n";
    let (st, v) = api
        .send(api.version_request("mixed", "application/x-ndjson", false, body.into()))
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(schema_of(&api.dataset("mixed").await), ["code:utf8"]);
    assert_eq!(
        api.query_rows("SELECT code FROM transport.mixed ORDER BY code")
            .await,
        json!([{"code": "1"}, {"code": "2.50"}, {"code": "A-2"}, {"code": "true"}])
    );
}

/// A first upload without declared columns keeps codes with leading zeros and integers beyond
/// `int64` as their text, every digit as written (an integer column dropped `0571`'s zero, and
/// NDJSON's `float64` rounded an account number).
#[tokio::test]
async fn codes_and_account_numbers_keep_their_digits() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register_schemaless("codes").await;
    api.upload_taken(
        "codes",
        "text/csv",
        b"area,postcode,stops\n0571,310000,12\n010,100000,3\n".to_vec(),
    )
    .await;
    assert_eq!(
        schema_of(&api.dataset("codes").await),
        ["area:utf8", "postcode:int64", "stops:int64"]
    );
    api.register_schemaless("accounts").await;
    api.upload_taken(
        "accounts",
        "application/x-ndjson",
        b"{\"acct\":62220212345678901234,\"n\":1}\n{\"acct\":12,\"n\":2}\n".to_vec(),
    )
    .await;
    assert_eq!(
        schema_of(&api.dataset("accounts").await),
        ["acct:utf8", "n:int64"]
    );
    assert_eq!(
        api.query_rows("SELECT c.area, a.acct FROM transport.codes c JOIN transport.accounts a ON c.stops = a.n + 2 ORDER BY 1")
            .await,
        json!([{"area": "010", "acct": "62220212345678901234"}])
    );
    // A code only after the rows the types are inferred from is refused with its line (blank
    // lines count) and a hint, not stored without its zero; nothing of the upload is kept.
    api.register_schemaless("late_codes").await;
    let mut late = String::from("area,stops\n");
    for i in 0..1500 {
        late.push_str(&format!("{},{i}\n", 100 + i));
        if i % 100 == 0 {
            late.push('\n');
        }
    }
    late.push_str("0571,9\n");
    let (st, e) = api
        .upload(
            "/api/v1/datasets/transport/late_codes/versions",
            "text/csv",
            late,
        )
        .await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_str()),
        // After the header, 1,500 rows and 15 blank lines.
        (Some(1517), Some("area")),
        "{e}"
    );
    let detail = e["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"0571\" is written with a leading zero")
            && detail.contains("was inferred from the leading rows"),
        "{e}"
    );
    let d = api.dataset("late_codes").await;
    assert_eq!(
        (d["current_version"].as_i64(), d["row_count"].as_i64()),
        (None, Some(0)),
        "{d}"
    );
}

/// A CSV error names the line an editor shows the bad record on: blank lines and line breaks
/// inside quoted fields before it count (they counted as no line, so `line 3` pointed two lines
/// above a bad value on line 5). Inferred columns: `codes_and_account_numbers_keep_their_digits`.
#[tokio::test]
async fn csv_errors_name_the_line_an_editor_shows() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register("stops").await;
    let path = "/api/v1/datasets/transport/stops/versions";
    for (body, line, column) in [
        (
            "id,name,opened,fare\n1,a,,\n\n\n2,b,someday,\n",
            5,
            "opened",
        ),
        (
            "id,name,opened,fare\r\n1,\"Main St\r\nNorth gate\",,\r\n\r\n2,b,,1e9\r\n",
            5,
            "fare",
        ),
    ] {
        let (st, v) = api.upload(path, "text/csv", body).await;
        assert_eq!(
            (st.as_u16(), v["line"].as_u64()),
            (422, Some(line)),
            "{body:?}: {v}"
        );
        assert_eq!(v["column"], column, "{v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("line {line}: ")),
            "{v}"
        );
    }
    // Too few fields, after a quoted line break.
    let (st, v) = api
        .upload(path, "text/csv", "id,name,opened,fare\n1,\"a\nb\",,\n2\n")
        .await;
    assert_eq!((st.as_u16(), v["line"].as_u64()), (422, Some(4)), "{v}");
    // A ragged record among the leading rows of a first upload, whose types are inferred from
    // them (arrow's inference said line 2 here: a `\r\n` was two line ends, a blank line none).
    api.register_schemaless("ragged").await;
    let (st, v) = api
        .upload(
            "/api/v1/datasets/transport/ragged/versions",
            "text/csv",
            "a,b\r\n1,2\r\n\r\n3\r\n",
        )
        .await;
    assert_eq!((st.as_u16(), v["line"].as_u64()), (422, Some(4)), "{v}");
    // Nothing was kept.
    for name in ["stops", "ragged"] {
        let d = api.dataset(name).await;
        assert_eq!(d["current_version"].as_i64(), None, "{d}");
    }
}

/// A primary key changed after data is published must hold in the published rows, as each
/// upload is held to it: a key column empty in some row is refused, naming it, and the key stays.
#[tokio::test]
async fn a_new_primary_key_must_hold_in_the_published_rows() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register("stops").await;
    api.append_csv(
        "stops",
        "id,name,opened,fare\n1,a,2020-01-01,1.00\n2,,2020-01-02,\n",
    )
    .await;
    let patch = |key: Value| {
        api.send(
            api.c
                .patch(s.url("/api/v1/datasets/transport/stops"))
                .bearer_auth(ADMIN)
                .json(&json!({ "primary_key": key })),
        )
    };
    for (key, column) in [(json!(["name"]), "name"), (json!(["id", "fare"]), "fare")] {
        let (st, e) = patch(key.clone()).await;
        assert_eq!(
            (st.as_u16(), e["column"].as_str()),
            (422, Some(column)),
            "{key}: {e}"
        );
        assert!(
            e["detail"]
                .as_str()
                .unwrap()
                .contains("empty in 1 row of version 1"),
            "{e}"
        );
        assert_eq!(api.dataset("stops").await["primary_key"], json!(["id"]));
    }
    let (st, v) = patch(json!(["id", "opened"])).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["primary_key"], json!(["id", "opened"]));
    // Before any data there is nothing to hold it to.
    api.register("empty").await;
    let (st, v) = api
        .send(
            api.c
                .patch(s.url("/api/v1/datasets/transport/empty"))
                .bearer_auth(ADMIN)
                .json(&json!({ "primary_key": ["name"] })),
        )
        .await;
    assert_eq!(st, 200, "{v}");
}

/// A CSV delimiter is one ASCII character other than a quote or a line break (those leave a
/// record no single reading): anything else is a 400 naming the parameter, nothing kept.
#[tokio::test]
async fn csv_delimiters_that_would_make_records_ambiguous_are_refused() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register_schemaless("delims").await;
    for (delimiter, detail) in [
        ("%22", "delimiter cannot be a quote or a line break"),
        ("%0A", "delimiter cannot be a quote or a line break"),
        ("%0D", "delimiter cannot be a quote or a line break"),
        ("ab", "delimiter must be one ASCII character"),
        ("%EF%BC%8C", "delimiter must be one ASCII character"),
    ] {
        let path = format!("/api/v1/datasets/transport/delims/versions?delimiter={delimiter}");
        let (st, e) = api.upload(&path, "text/csv", "a\"b\n1\"2\n").await;
        assert_eq!(st, 400, "{delimiter}: {e}");
        assert_eq!(
            (e["detail"].as_str(), e["parameter"].as_str()),
            (Some(detail), Some("delimiter"))
        );
    }
    let (st, v) = api
        .upload(
            "/api/v1/datasets/transport/delims/versions?delimiter=%3B",
            "text/csv",
            "a;b\n1;2\n",
        )
        .await;
    assert_eq!(
        (st.as_u16(), v["rows_added"].as_i64()),
        (201, Some(1)),
        "{v}"
    );
    assert_eq!(
        schema_of(&api.dataset("delims").await),
        ["a:int64", "b:int64"]
    );
    // IANA's type for tab-separated values reads tabs without a delimiter parameter; JSON
    // Lines' other names are NDJSON.
    let (st, v) = api
        .upload(
            "/api/v1/datasets/transport/delims/versions?mode=append",
            "text/tab-separated-values",
            "a\tb\n3\t4\n",
        )
        .await;
    assert_eq!(
        (st.as_u16(), v["row_count"].as_i64()),
        (201, Some(2)),
        "{v}"
    );
    for ct in ["application/jsonl", "application/x-jsonlines"] {
        let (st, v) = api
            .upload(
                "/api/v1/datasets/transport/delims/versions?mode=append",
                ct,
                "{\"a\": 5, \"b\": 6}\n",
            )
            .await;
        assert_eq!(st, 201, "{ct}: {v}");
    }
    let rows = s
        .get_json_as(ADMIN, "/api/v1/datasets/transport/delims/rows?order=a")
        .await;
    assert_eq!(
        rows["rows"],
        json!([{"a": 1, "b": 2}, {"a": 3, "b": 4}, {"a": 5, "b": 6}, {"a": 5, "b": 6}])
    );
}

/// Blanks around a number, date, time or boolean are no part of it (as PostgreSQL reads
/// them): integers and floats took them already, decimals, dates, times and booleans were
/// refused; text keeps them, in CSV and NDJSON alike.
#[tokio::test]
async fn blanks_around_typed_values_are_no_part_of_them() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register_with_columns(
        "blanks",
        Some(json!([
            {"name": "i", "type": "int64"}, {"name": "d", "type": "decimal128(10,2)"},
            {"name": "day", "type": "date32"}, {"name": "at", "type": "timestamp(us)"},
            {"name": "b", "type": "boolean"}, {"name": "f", "type": "float64"},
            {"name": "s", "type": "utf8"},
        ])),
    )
    .await;
    let path = "/api/v1/datasets/transport/blanks/versions?mode=append";
    let csv = "i,d,day,at,b,f,s\n 1 , 2.5 , 2024-01-05 ,\t2024-01-05 10:00 , yes , 1.5 , x \n";
    let (st, v) = api.upload(path, "text/csv", csv).await;
    assert_eq!(st, 201, "{v}");
    let ndjson = "{\"i\": 2, \"d\": \" 3.25\", \"day\": \"2024-01-06 \", \"at\": \" 2024-01-06T11:00:00\", \"b\": \" 否 \", \"f\": 2.5, \"s\": \" y\"}\n";
    let (st, v) = api.upload(path, "application/x-ndjson", ndjson).await;
    assert_eq!(st, 201, "{v}");
    let rows = api
        .query_rows("SELECT * FROM transport.blanks ORDER BY i")
        .await;
    assert_eq!(
        rows,
        json!([
            {"i": 1, "d": 2.5, "day": "2024-01-05", "at": "2024-01-05T10:00:00", "b": true, "f": 1.5, "s": " x "},
            {"i": 2, "d": 3.25, "day": "2024-01-06", "at": "2024-01-06T11:00:00", "b": false, "f": 2.5, "s": " y"},
        ])
    );
    // A record with too few fields names its line, among the leading rows of a first upload
    // (whose types are inferred from them) as in a later one.
    api.register_schemaless("ragged").await;
    for (name, body, expected) in [
        ("ragged", "a,b\n1,2\n3\n", 2),
        ("blanks", "i,d,day,at,b,f,s\n4,1,,,,,\n5\n", 7),
    ] {
        let (st, v) = api
            .upload(
                &format!("/api/v1/datasets/transport/{name}/versions"),
                "text/csv",
                body,
            )
            .await;
        assert_eq!((st.as_u16(), v["line"].as_u64()), (422, Some(3)), "{v}");
        assert_eq!(
            v["detail"],
            format!("line 3: wrong number of fields (expected {expected}, found 1)"),
            "{v}"
        );
    }
    // Blanks alone are no value: refused where a value must be read, naming line and column.
    let (st, v) = api
        .upload(path, "text/csv", "i,d,day,at,b,f,s\n3,  ,,,,,\n")
        .await;
    assert_eq!((st.as_u16(), v["line"].as_u64()), (422, Some(2)), "{v}");
    assert_eq!(v["column"], "d", "{v}");
}

/// What pandas writes through pyarrow for a column of `None`s (a column of no type) or of
/// `datetime.time` values, a half float and a `date64` have no column type of their own: the
/// first upload stores them as text, text, `float32` and `date32` (they were a 422 naming the
/// type), and later uploads of either format are read into those columns.
#[tokio::test]
async fn pandas_null_and_time_columns_are_taken() {
    use arrow::array::{
        ArrayRef, Date64Array, Float32Array, Int64Array, NullArray, RecordBatch,
        Time64MicrosecondArray,
    };
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    let batch = |first: i64| {
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from(vec![first, first + 1])) as ArrayRef,
            ),
            ("remark", Arc::new(NullArray::new(2))),
            (
                "opens",
                Arc::new(Time64MicrosecondArray::from(vec![
                    Some((8 * 60 + 30) * 60_000_000),
                    None,
                ])),
            ),
            (
                "load",
                arrow::compute::cast(
                    &Float32Array::from(vec![Some(0.25), None]),
                    &arrow::datatypes::DataType::Float16,
                )
                .unwrap(),
            ),
            (
                "since",
                Arc::new(Date64Array::from(vec![Some(19_723 * 86_400_000), None])),
            ),
        ])
        .unwrap()
    };
    api.register_schemaless("pandas").await;
    api.upload_taken(
        "pandas",
        "application/vnd.apache.parquet",
        parquet_bytes(&batch(1), None),
    )
    .await;
    api.upload_taken(
        "pandas",
        "application/vnd.apache.arrow.stream",
        arrow_stream_bytes(&batch(3)),
    )
    .await;
    assert_eq!(
        schema_of(&api.dataset("pandas").await),
        [
            "id:int64",
            "remark:utf8",
            "opens:utf8",
            "load:float32",
            "since:date32"
        ]
    );
    let rows = api
        .query_rows("SELECT * FROM transport.pandas ORDER BY id")
        .await;
    let first =
        json!({"id": 1, "remark": null, "opens": "08:30:00", "load": 0.25, "since": "2024-01-01"});
    let second = json!({"id": 2, "remark": null, "opens": null, "load": null, "since": null});
    assert_eq!(rows[0], first, "{rows}");
    assert_eq!(rows[1], second, "{rows}");
    assert_eq!(rows.as_array().unwrap().len(), 4);
}

/// Column names an upload cannot give a dataset (one name twice, an empty name) are refused
/// with 422 naming them, in every format, before anything is kept (the same name twice in a
/// Parquet or Arrow file was a 500 from the catalog's unique constraint).
#[tokio::test]
async fn uploads_whose_column_names_cannot_be_a_schema_are_refused() {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch};
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    let twice = RecordBatch::try_from_iter([
        ("a", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("a", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
    ])
    .unwrap();
    let parquet = parquet_bytes(&twice, None);
    let stream = arrow_stream_bytes(&twice);
    let control = RecordBatch::try_from_iter([(
        "line\nbreak",
        Arc::new(Int64Array::from(vec![1])) as ArrayRef,
    )])
    .unwrap();
    let long_header = format!("{}\n1\n", "x".repeat(300));
    let cases: [(&str, Vec<u8>, &str, Option<&str>); 8] = [
        (
            "application/vnd.apache.parquet",
            parquet.clone(),
            "column \"a\" appears twice",
            Some("a"),
        ),
        (
            "application/vnd.apache.arrow.stream",
            stream.clone(),
            "column \"a\" appears twice",
            Some("a"),
        ),
        (
            "text/csv",
            b"a,a\n1,2\n".to_vec(),
            "line 1: column \"a\" appears twice",
            Some("a"),
        ),
        (
            "text/csv",
            b"a,,b\n1,2,3\n".to_vec(),
            "line 1: column 2 has no name",
            None,
        ),
        // What a spreadsheet writes for a formatted empty last column.
        (
            "text/csv",
            b"a,b,\n1,2,\n".to_vec(),
            "line 1: column 3 has no name (the header ends with a delimiter: remove it from the \
             end of every line, or name the column)",
            None,
        ),
        (
            "application/x-ndjson",
            b"{\"\": 1, \"b\": 2}\n".to_vec(),
            "column 1 has no name",
            None,
        ),
        (
            "application/vnd.apache.parquet",
            parquet_bytes(&control, None),
            "column name \"line\\nbreak\" holds a control character",
            None,
        ),
        (
            "text/csv",
            long_header.into_bytes(),
            "line 1: column name \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"… is longer than 256 characters",
            None,
        ),
    ];
    for (i, (content_type, body, detail, column)) in cases.into_iter().enumerate() {
        let name = format!("names{i}");
        api.register_schemaless(&name).await;
        let (st, e) = api
            .send(api.version_request(&name, content_type, false, body))
            .await;
        assert_eq!(st, 422, "{content_type}: {e}");
        assert_eq!(e["detail"], detail, "{content_type}: {e}");
        assert_eq!(e["column"].as_str(), column, "{content_type}: {e}");
        assert!(api.dataset(&name).await["current_version"].is_null());
    }
    assert!(warehouse_files(&s).is_empty(), "{:?}", warehouse_files(&s));
    // Into a dataset that has an `a` (declared, or fixed by a first upload): the same.
    api.append_csv("names0", "a\n1\n").await;
    let (st, e) = api
        .upload(
            "/api/v1/datasets/transport/names0/versions",
            "text/csv",
            "a,\n2,\n",
        )
        .await;
    assert_eq!(st, 422, "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .starts_with("line 1: column 2 has no name (the header ends with a delimiter"),
        "{e}"
    );
    for (content_type, body) in [
        ("application/vnd.apache.parquet", parquet.clone()),
        ("application/vnd.apache.arrow.stream", stream.clone()),
    ] {
        let (st, e) = api
            .send(api.version_request("names0", content_type, false, body))
            .await;
        assert_eq!(
            (st.as_u16(), e["column"].as_str()),
            (422, Some("a")),
            "{content_type}: {e}"
        );
        assert_eq!(api.dataset("names0").await["current_version"], 1);
    }
}

/// The README's roll-back: an earlier version's Parquet export, uploaded as a replace, is that
/// version again as the current one, for its department and for everyone else (masks, private
/// columns, types, nulls, quoting); unless a replace has since added a column it lacks.
#[tokio::test]
async fn an_earlier_version_uploaded_again_is_current_again() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    let (st, v) = api
        .post_json(
            "/api/v1/datasets",
            json!({
                "department": "transport", "name": "stops", "title": "站点",
                "access_level": "open", "license": "CC-BY-4.0", "tags": [],
                "update_frequency": "daily", "primary_key": ["id"],
                "columns": [
                    {"name": "id", "type": "int64"}, {"name": "name", "type": "utf8"},
                    {"name": "phone", "type": "utf8", "sensitivity": "masked", "mask": "partial"},
                    {"name": "note", "type": "utf8", "sensitivity": "private"},
                    {"name": "fare", "type": "decimal128(5,2)"}, {"name": "opened", "type": "date32"},
                ]
            }),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let replace = "/api/v1/datasets/transport/stops/versions?mode=replace";
    let v1 = "id,name,phone,note,fare,opened\n\
              1,人民路,13812341234,内部,2.00,2020-01-01\n\
              2,\"东站, 北口\",,,,2021-02-03\n";
    let v2 = "id,name,phone,note,fare,opened\n3,西站,13900000000,x,1.50,2022-01-01\n";
    for csv in [v1, v2] {
        assert_eq!(api.upload(replace, "text/csv", csv).await.0, 201);
    }
    let export = |version: Option<u32>, format: &str, key: Option<&str>| {
        let mut url = format!("/api/v1/datasets/transport/stops/export?format={format}");
        if let Some(v) = version {
            url.push_str(&format!("&version={v}"));
        }
        let rb = api.c.get(s.url(&url));
        let rb = match key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        };
        async move {
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            r.bytes().await.unwrap().to_vec()
        }
    };
    let old = export(Some(1), "parquet", Some(ADMIN)).await;
    let (st, v) = api
        .upload(replace, "application/vnd.apache.parquet", old)
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        (v["version"].as_i64(), v["row_count"].as_i64()),
        (Some(3), Some(2))
    );
    for key in [Some(ADMIN), None] {
        let current = String::from_utf8(export(None, "csv", key).await).unwrap();
        let first = String::from_utf8(export(Some(1), "csv", key).await).unwrap();
        assert_eq!(current, first, "as {key:?}");
        assert!(current.contains("\"东站, 北口\""), "{current}");
        if key.is_none() {
            assert!(
                current.contains("138****1234") && !current.contains("note"),
                "{current}"
            );
        } else {
            assert!(
                current.contains("13812341234,内部,2.00,2020-01-01"),
                "{current}"
            );
        }
    }
    assert_eq!(
        schema_of(&api.dataset("stops").await),
        [
            "id:int64",
            "name:utf8",
            "phone:utf8",
            "note:utf8",
            "fare:decimal128(5,2)",
            "opened:date32"
        ]
    );
    // After a replace that adds a column, the older version lacks it: refused, naming it, and
    // nothing changes.
    let v4 = "id,name,phone,note,fare,opened,shelter\n4,南站,,,1.00,2023-01-01,true\n";
    assert_eq!(api.upload(replace, "text/csv", v4).await.0, 201);
    let old = export(Some(1), "parquet", Some(ADMIN)).await;
    let (st, e) = api
        .upload(replace, "application/vnd.apache.parquet", old)
        .await;
    assert_eq!(
        (st.as_u16(), e["column"].as_str()),
        (422, Some("shelter")),
        "{e}"
    );
    assert_eq!(api.dataset("stops").await["current_version"], 4);
}

#[tokio::test]
async fn an_oversized_chunked_upload_is_refused_while_streaming() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    api.register("stops").await;
    let before = api.dataset("stops").await;
    // No Content-Length: 64 KiB chunks, 400 MB in all, far past the 1,000,000-byte limit.
    // What the client manages to send before the refusal includes what the kernel buffers
    // while the server is not reading: loopback receive buffers autotune up to
    // `net.ipv4.tcp_rmem`'s maximum (32 MiB on some machines), so the bound sits well above
    // that and well below the whole body.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let chunks = futures_util_stream(move |i| {
        let chunk = if i == 0 {
            "id,name,opened,fare\n".to_string()
        } else {
            "1,abcdefghijklmnopqrstuvwxyz,2020-01-01,1.00\n".repeat(1500)
        };
        counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        (i < 6000).then_some(chunk)
    });
    let r = api
        .c
        .post(s.url("/api/v1/datasets/transport/stops/versions"))
        .bearer_auth(ADMIN)
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    assert!(
        sent.load(std::sync::atomic::Ordering::Relaxed) < 100_000_000,
        "the server read the whole body before refusing it"
    );
    assert_eq!(api.dataset("stops").await, before);
}

/// A stream of string chunks made by `f(i)` until it returns `None`.
fn futures_util_stream(
    mut f: impl FnMut(usize) -> Option<String> + Send + 'static,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let mut i = 0;
    futures::stream::poll_fn(move |_| {
        let item = f(i).map(|s| Ok(s.into_bytes()));
        i += 1;
        std::task::Poll::Ready(item)
    })
}

#[tokio::test]
async fn only_admins_create_departments() {
    let s = Server::start(options()).await;
    let api = Api::new(&s);
    let body = json!({"id": "culture", "name": "文化广电旅游局", "description": "文旅"});
    let (st, _) = api
        .send(api.c.post(s.url("/api/v1/departments")).json(&body))
        .await;
    assert_eq!(st, 401);
    let (st, d) = api.post_json("/api/v1/departments", body.clone()).await;
    assert_eq!(st, 201, "{d}");
    assert_eq!(
        (d["id"].as_str(), d["dataset_count"].as_u64()),
        (Some("culture"), Some(0))
    );
    assert_eq!(api.post_json("/api/v1/departments", body).await.0, 409);
    let (st, _) = api
        .post_json("/api/v1/departments", json!({"id": "Bad Id", "name": "x"}))
        .await;
    assert_eq!(st, 422);
    let (st, e) = api
        .post_json(
            "/api/v1/departments",
            json!({"id": "nameless", "name": " "}),
        )
        .await;
    assert_eq!(st, 422, "{e}");
    let (_, list) = api.send(api.c.get(s.url("/api/v1/departments"))).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == "culture")
    );
}

/// A record, an IPC message or a value over 64 MiB is refused before the gateway holds it:
/// a 1 GiB field compresses to 1 MiB of gzip, and held it took gigabytes of memory.
#[tokio::test]
async fn oversized_records_are_refused_before_they_are_held() {
    use arrow::array::{ArrayRef, StringArray};
    let (s, _tmp) = server_with_department_and(&[(UPLOAD_LIMIT, "10737418240")]).await;
    let api = Api::new(&s);
    let gzip = |bytes: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    };
    let huge = "x".repeat(256 << 20);
    let value = |n: usize| {
        let a = Arc::new(StringArray::from(vec![&huge[..n]])) as ArrayRef;
        arrow::array::RecordBatch::try_from_iter([("name", a)]).unwrap()
    };
    let csv = gzip(format!("name\n{huge}\n").as_bytes());
    let arrow_stream = gzip(&arrow_stream_bytes(&value(huge.len())));
    let parquet = parquet_bytes(&value(65 << 20), None);
    drop(huge);
    let cases = [
        (
            "text/csv",
            true,
            csv,
            "line 2: a record is longer than 64 MiB",
        ),
        (
            "application/vnd.apache.arrow.stream",
            true,
            arrow_stream,
            "row 1: an Arrow IPC message is larger than 64 MiB",
        ),
        (
            "application/vnd.apache.parquet",
            false,
            parquet,
            "row 1: column \"name\": a value is larger than 64 MiB",
        ),
    ];
    for (i, (content_type, gzipped, body, message)) in cases.into_iter().enumerate() {
        let name = format!("oversized{i}");
        api.register_schemaless(&name).await;
        let rb = api.version_request(&name, content_type, gzipped, body);
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 422, "{content_type}");
        let problem: Value = r.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(message),
            "{content_type}: {problem}"
        );
        assert_eq!(api.dataset(&name).await["current_version"], Value::Null);
    }
    // Held, the 256 MiB values took 1.4 GB; refused, the text ones never reach the writer.
    let peak_mib = s.peak_rss_kib().unwrap() / 1024;
    assert!(peak_mib < 600, "peak RSS {peak_mib} MiB");
}

/// Records of tens of megabytes under the bound are taken, in every format, without the
/// upload holding `batch_rows` of them at once: batches are cut by bytes (16 MiB of input),
/// the writer encodes a round every 64 MiB and closes row groups at 128 MiB, and its queue is
/// bounded in bytes. Before, 40 such records (a 1.6 MB gzip body) took 3.3 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_records_are_taken_in_bounded_memory() {
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    let (s, _tmp) = server_with_department_and(&[(UPLOAD_LIMIT, "10737418240")]).await;
    let api = Api::new(&s);
    const RECORDS: usize = 24;
    const LEN: usize = 40 << 20;
    // Each record's text differs in its first letter, so a mix-up of rows would show.
    let text = |i: usize| {
        let mut t = vec![b'x'; LEN];
        t[0] = b'a' + i as u8;
        t
    };
    let csv = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"id,doc\n").unwrap();
        for i in 0..RECORDS {
            gz.write_all(format!("{i},").as_bytes()).unwrap();
            gz.write_all(&text(i)).unwrap();
            gz.write_all(b"\n").unwrap();
        }
        gz.finish().unwrap()
    };
    let ndjson = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..RECORDS {
            gz.write_all(format!("{{\"id\":{i},\"doc\":\"").as_bytes())
                .unwrap();
            gz.write_all(&text(i)).unwrap();
            gz.write_all(b"\"}\n").unwrap();
        }
        gz.finish().unwrap()
    };
    let parquet = {
        // Plain pages of one value each, four records a row group.
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("doc", arrow::datatypes::DataType::Utf8, true),
        ]));
        let props = parquet::file::properties::WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_write_batch_size(1)
            .set_data_page_size_limit(1)
            .set_max_row_group_row_count(Some(4))
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).unwrap();
        for i in 0..RECORDS {
            let id = Arc::new(Int64Array::from(vec![i as i64])) as ArrayRef;
            let doc = String::from_utf8(text(i)).unwrap();
            let doc = Arc::new(StringArray::from(vec![doc])) as ArrayRef;
            let batch = arrow::array::RecordBatch::try_new(schema.clone(), vec![id, doc]).unwrap();
            w.write(&batch).unwrap();
        }
        w.into_inner().unwrap()
    };
    for (i, (content_type, gzipped, body)) in [
        ("text/csv", true, csv),
        ("application/x-ndjson", true, ndjson),
        ("application/vnd.apache.parquet", false, parquet),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("long{i}");
        api.register_schemaless(&name).await;
        let rb = api.version_request(&name, content_type, gzipped, body);
        let (st, v) = api.send(rb).await;
        assert_eq!(st, 201, "{content_type}: {v}");
        assert_eq!(v["rows_added"], RECORDS, "{content_type}: {v}");
        // Every record whole and in its place. (Sorted here: an `ORDER BY` keeps the records'
        // batches, beyond the query memory limit.)
        let sql = format!(
            "SELECT id, length(doc) AS len, substr(doc, 1, 1) AS first FROM transport.{name}"
        );
        let (st, v) = api.post_json("/api/v1/query", json!({ "sql": sql })).await;
        assert_eq!(st, 200, "{content_type}: {v}");
        let mut rows = v["rows"].as_array().unwrap().clone();
        rows.sort_by_key(|r| r["id"].as_u64());
        assert_eq!(rows.len(), RECORDS, "{content_type}");
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r["id"], i, "{content_type}");
            assert_eq!(r["len"], LEN, "{content_type}");
            assert_eq!(
                r["first"],
                ((b'a' + i as u8) as char).to_string(),
                "{content_type}"
            );
        }
    }
    // 24 records of 40 MiB are 960 MiB of text per upload: a batch of them took 2-3 times that.
    let peak_mib = s.peak_rss_kib().unwrap() / 1024;
    assert!(peak_mib < 900, "peak RSS {peak_mib} MiB");
}

/// A dataset of long rows (64 KB of text each) is exported in batches of a few megabytes, not
/// of 8,192 rows: the gateway's memory stays far under the size of the export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_rows_are_exported_in_bounded_memory() {
    const ROWS: usize = 3000;
    const LEN: usize = 64 << 10;
    let (mut s, tmp) = server_with_department_and(&[(UPLOAD_LIMIT, "10737418240")]).await;
    let api = Api::new(&s);
    api.register_schemaless("docs").await;
    // Text that does not compress much (so the files are about as large as the rows).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut csv = b"id,doc\n".to_vec();
    for i in 0..ROWS {
        csv.extend(format!("{i},").as_bytes());
        for _ in 0..LEN {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            csv.push(
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
                    [(state & 63) as usize],
            );
        }
        csv.push(b'\n');
    }
    let size = csv.len();
    let (st, v) = api
        .send(api.version_request("docs", "text/csv", false, csv))
        .await;
    assert_eq!(st, 201, "{v}");
    // A fresh process, so its peak is the export's.
    let data_dir = s.data_dir();
    s.kill();
    let mut opts = options();
    opts.env.retain(|(k, _)| k != "DATAGATE_CATALOG_MANIFESTS");
    opts.manifests = Some(tmp.path().join("catalog"));
    let s = Server::start_in(&data_dir, opts).await;
    let before_mib = s.peak_rss_kib().unwrap() / 1024;
    for format in ["csv", "json"] {
        let mut r = reqwest::Client::new()
            .get(s.url(&format!(
                "/api/v1/datasets/transport/docs/export?format={format}"
            )))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{format}");
        let (mut bytes, mut lines) = (0usize, 0usize);
        while let Some(chunk) = r.chunk().await.unwrap() {
            bytes += chunk.len();
            lines += chunk.iter().filter(|b| **b == b'\n').count();
        }
        assert!(bytes >= size, "{format}: {bytes} bytes of {size}");
        if format == "csv" {
            assert_eq!(lines, ROWS + 1, "{format}");
        }
    }
    // 200 MB of rows. Read 8,192 rows a batch from row groups of 262,144 rows, both exports
    // took 513 MiB over the server's start (2.6 GB on a 1 GB dataset of 100 KB rows); in about
    // 32 MiB batches from row groups of 128 MiB, 265 MiB.
    let peak_mib = s.peak_rss_kib().unwrap() / 1024;
    assert!(
        peak_mib < before_mib + 384,
        "peak RSS {peak_mib} MiB (at start {before_mib} MiB)"
    );
}

/// Dictionary-encoded columns (a pandas categorical, written as Parquet or Arrow) are taken and
/// stored as their values' type; and a dictionary of one 40 MiB value that every row refers to
/// (a 2 KB Parquet file, a 40 KB gzip Arrow stream) is decoded a few rows at a time, not into a
/// gigabyte at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionary_columns_are_taken_and_decoded_piece_by_piece() {
    use arrow::array::{
        ArrayRef, DictionaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    };
    use parquet::file::properties::WriterProperties;
    let (s, _tmp) = server_with_department_and(&[(UPLOAD_LIMIT, "10737418240")]).await;
    let api = Api::new(&s);
    let batch = |keys: Vec<i32>, values: Vec<String>| {
        let ids = Int64Array::from_iter_values(0..keys.len() as i64);
        let dict =
            DictionaryArray::new(Int32Array::from(keys), Arc::new(StringArray::from(values)));
        RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as ArrayRef),
            ("note", Arc::new(dict) as _),
        ])
        .unwrap()
    };
    let stream = arrow_stream_bytes;
    let parquet = |b: &RecordBatch, props: WriterProperties| parquet_bytes(b, Some(props));
    let gzip = |bytes: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    };
    // A categorical column as pandas writes it (its Arrow type kept in the Parquet footer).
    let small = batch(vec![0, 1, 0, 1, 1], vec!["bus".into(), "metro".into()]);
    let cases = [
        (
            "cat_arrow",
            "application/vnd.apache.arrow.stream",
            stream(&small),
        ),
        (
            "cat_parquet",
            "application/vnd.apache.parquet",
            parquet(&small, WriterProperties::default()),
        ),
    ];
    for (name, content_type, body) in cases {
        api.register_schemaless(name).await;
        let (st, v) = api
            .send(api.version_request(name, content_type, false, body))
            .await;
        assert_eq!(st, 201, "{content_type}: {v}");
        assert_eq!(
            schema_of(&api.dataset(name).await),
            ["id:int64", "note:utf8"]
        );
        let sql = format!("SELECT note FROM transport.{name} ORDER BY id");
        let (st, v) = api.post_json("/api/v1/query", json!({ "sql": sql })).await;
        assert_eq!(st, 200, "{v}");
        let notes: Vec<&str> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["note"].as_str().unwrap())
            .collect();
        assert_eq!(
            notes,
            ["bus", "metro", "bus", "metro", "metro"],
            "{content_type}"
        );
    }
    // A categorical column that is empty in every row: a dictionary of no values (it made the
    // upload a 500).
    let empty = {
        let dict = DictionaryArray::new(
            Int32Array::from(vec![None::<i32>; 3]),
            Arc::new(StringArray::from(Vec::<String>::new())),
        );
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            ("note", Arc::new(dict) as _),
        ])
        .unwrap()
    };
    for (name, content_type, body) in [
        (
            "nulls_arrow",
            "application/vnd.apache.arrow.stream",
            stream(&empty),
        ),
        (
            "nulls_parquet",
            "application/vnd.apache.parquet",
            parquet(&empty, WriterProperties::default()),
        ),
    ] {
        api.register_schemaless(name).await;
        let (st, v) = api
            .send(api.version_request(name, content_type, false, body))
            .await;
        assert_eq!(st, 201, "{content_type}: {v}");
        let sql = format!("SELECT count(*) AS n, count(note) AS notes FROM transport.{name}");
        let (st, v) = api.post_json("/api/v1/query", json!({ "sql": sql })).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(
            (&v["rows"][0]["n"], &v["rows"][0]["notes"]),
            (&json!(3), &json!(0))
        );
    }
    // One 40 MiB value, every row referring to it.
    const ROWS: usize = 24;
    const LEN: usize = 40 << 20;
    let bomb = batch(vec![0; ROWS], vec!["x".repeat(LEN)]);
    let dictionary_pages = WriterProperties::builder()
        .set_dictionary_page_size_limit(64 << 20)
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let bomb_parquet = parquet(&bomb, dictionary_pages);
    // Every data page of the file refers to the dictionary (what the reader keeps encoded).
    let meta = parquet::arrow::arrow_reader::ArrowReaderMetadata::load(
        &bytes::Bytes::from(bomb_parquet.clone()),
        Default::default(),
    )
    .unwrap();
    let note = meta.metadata().row_group(0).column(1);
    assert!(
        note.page_encoding_stats_mask()
            .is_some_and(|m| m.is_only(parquet::basic::Encoding::RLE_DICTIONARY)),
        "{note:?}"
    );
    assert!(bomb_parquet.len() < 1 << 20, "{} bytes", bomb_parquet.len());
    let cases = [
        (
            "big_arrow",
            "application/vnd.apache.arrow.stream",
            true,
            gzip(&stream(&bomb)),
        ),
        (
            "big_parquet",
            "application/vnd.apache.parquet",
            false,
            bomb_parquet,
        ),
    ];
    drop(bomb);
    for (name, content_type, gzipped, body) in cases {
        api.register_schemaless(name).await;
        let (st, v) = api
            .send(api.version_request(name, content_type, gzipped, body))
            .await;
        assert_eq!(st, 201, "{content_type}: {v}");
        let sql = format!("SELECT count(*) AS n, sum(length(note)) AS len FROM transport.{name}");
        let (st, v) = api.post_json("/api/v1/query", json!({ "sql": sql })).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["rows"][0]["n"], ROWS, "{content_type}: {v}");
        assert_eq!(v["rows"][0]["len"], ROWS * LEN, "{content_type}: {v}");
    }
    // 960 MiB decoded per upload; decoded at once (before) each took 2-3 GB.
    let peak_mib = s.peak_rss_kib().unwrap() / 1024;
    assert!(peak_mib < 900, "peak RSS {peak_mib} MiB");
}

/// A Parquet upload's page headers are read before any page is decoded: a page that would
/// decode to 300 MiB (a 90 KB file) is refused by its row group and column, the same rows in
/// small pages are taken, and a column whose writer fell back from a dictionary of one 40 MiB
/// value to plain pages is read a row at a time rather than with 64 copies of the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_pages_are_measured_before_they_are_decoded() {
    use arrow::array::{ArrayRef, DictionaryArray, Int32Array, Int64Array, RecordBatch};
    use arrow::array::{StringArray, StringDictionaryBuilder};
    use arrow::datatypes::Int32Type;
    use parquet::file::properties::WriterProperties;
    let (s, _tmp) = server_with_department_and(&[(UPLOAD_LIMIT, "10737418240")]).await;
    let api = Api::new(&s);
    let parquet = |batches: &[RecordBatch], props: WriterProperties| {
        let mut w =
            parquet::arrow::ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props))
                .unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.into_inner().unwrap()
    };
    let with_ids = |first: i64, note: ArrayRef| {
        let ids = Int64Array::from_iter_values(first..first + note.len() as i64);
        RecordBatch::try_from_iter([("id", Arc::new(ids) as ArrayRef), ("note", note)]).unwrap()
    };
    // 300 values of 1 MiB: in one page (what pyarrow's defaults write), then 16 a page.
    let megabytes = with_ids(
        0,
        Arc::new(StringArray::from_iter_values(
            (0..300).map(|i| format!("{i:07}{}", "m".repeat(1 << 20))),
        )),
    );
    let pages = |values_a_page: usize, page_bytes: usize| {
        WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_write_batch_size(values_a_page)
            .set_data_page_size_limit(page_bytes)
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build()
    };
    let one_page = parquet(std::slice::from_ref(&megabytes), pages(1024, usize::MAX));
    let small_pages = parquet(std::slice::from_ref(&megabytes), pages(16, 1));
    drop(megabytes);
    assert!(one_page.len() < 128 << 10, "{} bytes", one_page.len());
    api.register_schemaless("one_page").await;
    let (st, v) = api
        .send(api.version_request(
            "one_page",
            "application/vnd.apache.parquet",
            false,
            one_page,
        ))
        .await;
    assert_eq!(st, 422, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains(
            "row group 0, column \"note\": a page decodes to 300 MiB; pages of at most 256 MiB"
        ),
        "{detail}"
    );
    assert!(
        api.dataset("one_page").await["versions"]
            .as_array()
            .is_none_or(|v| v.is_empty())
    );
    api.register_schemaless("small_pages").await;
    let (st, v) = api
        .send(api.version_request(
            "small_pages",
            "application/vnd.apache.parquet",
            false,
            small_pages,
        ))
        .await;
    assert_eq!(st, 201, "{v}");
    let sql = "SELECT count(*) AS n, sum(length(note)) AS len, min(substr(note, 1, 7)) AS first, \
               max(substr(note, 1, 7)) AS last FROM transport.small_pages";
    let (st, v) = api.post_json("/api/v1/query", json!({ "sql": sql })).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["n"], 300);
    assert_eq!(v["rows"][0]["len"], 300 * ((1 << 20) + 7));
    assert_eq!(
        (
            v["rows"][0]["first"].as_str(),
            v["rows"][0]["last"].as_str()
        ),
        (Some("0000000"), Some("0000299"))
    );

    // 100 short values, 64 rows referring to one 40 MiB value, then 30,000 more short values
    // that overflow the dictionary: the writer falls back to plain pages, and the batch that
    // reaches them would turn the 64 rows into values.
    const LEN: usize = 40 << 20;
    let short = |from: usize, to: usize| {
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        for i in from..to {
            b.append_value(format!("short value number {i:08}"));
        }
        Arc::new(b.finish()) as ArrayRef
    };
    let huge = DictionaryArray::new(
        Int32Array::from(vec![0; 64]),
        Arc::new(StringArray::from(vec!["h".repeat(LEN)])),
    );
    let fallback = parquet(
        &[
            with_ids(0, short(0, 100)),
            with_ids(100, Arc::new(huge)),
            with_ids(164, short(100, 30_100)),
        ],
        WriterProperties::builder()
            .set_dictionary_page_size_limit(LEN + (8 << 10))
            .set_write_batch_size(64)
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build(),
    );
    let meta = parquet::arrow::arrow_reader::ArrowReaderMetadata::load(
        &bytes::Bytes::from(fallback.clone()),
        Default::default(),
    )
    .unwrap();
    let note = meta.metadata().row_group(0).column(1);
    let mask = note.page_encoding_stats_mask().unwrap();
    assert!(
        mask.is_set(parquet::basic::Encoding::RLE_DICTIONARY)
            && mask.is_set(parquet::basic::Encoding::PLAIN),
        "{note:?}"
    );
    assert!(fallback.len() < 4 << 20, "{} bytes", fallback.len());
    api.register_schemaless("fallback").await;
    let (st, v) = api
        .send(api.version_request(
            "fallback",
            "application/vnd.apache.parquet",
            false,
            fallback,
        ))
        .await;
    assert_eq!(st, 201, "{v}");
    let sql = "SELECT count(*) AS n, sum(length(note)) AS len, \
               count(*) FILTER (WHERE note LIKE 'short value number %') AS short \
               FROM transport.fallback";
    let (st, v) = api.post_json("/api/v1/query", json!({ "sql": sql })).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["n"], 30_164, "{v}");
    assert_eq!(v["rows"][0]["short"], 30_100, "{v}");
    assert_eq!(v["rows"][0]["len"], 64 * LEN + 30_100 * 27, "{v}");
    // 64 copies of the value in one batch were 2.5 GiB.
    let peak_mib = s.peak_rss_kib().unwrap() / 1024;
    assert!(peak_mib < 900, "peak RSS {peak_mib} MiB");
}

/// A Parquet footer is measured before the reader decodes it: a 45-byte file whose footer
/// declares 2^31 - 1 row groups is a 422 naming the byte, nothing is published, and the
/// gateway serves on. The reader reserved about 200 GB for the row groups before reading the first:
/// on a host that accounts memory strictly (`vm.overcommit_memory = 2`) that allocation
/// failed and ended the gateway (seen, exit 134); here the reservation was never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_footer_is_measured_before_it_is_decoded() {
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    // FileMetaData in Thrift's compact protocol: a schema of one INT64 column, no rows, and a
    // row-group list whose header claims i32::MAX elements (0xfc: a long list of structs).
    let mut meta = vec![0x15, 0x02, 0x19, 0x2c, 0x48, 6];
    meta.extend(b"schema");
    meta.extend([
        0x15, 0x02, 0x00, 0x15, 0x04, 0x25, 0x00, 0x18, 1, b'x', 0x00,
    ]);
    meta.extend([0x16, 0x00, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00]);
    let mut file = b"PAR1".to_vec();
    file.extend(&meta);
    file.extend((meta.len() as u32).to_le_bytes());
    file.extend(b"PAR1");
    assert_eq!(file.len(), 45);
    api.register_schemaless("row_groups").await;
    let (st, v) = api
        .send(api.version_request("row_groups", "application/vnd.apache.parquet", false, file))
        .await;
    assert_eq!(st, 422, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains(
            "its footer is damaged at byte 36: a list declares 2147483647 elements and 1 \
             byte is left to hold them"
        ),
        "{detail}"
    );
    assert!(
        api.dataset("row_groups").await["versions"]
            .as_array()
            .is_none_or(|v| v.is_empty())
    );
    let (st, _) = api.send(api.c.get(s.url("/healthz"))).await;
    assert_eq!(st, 200);
}

/// Compressed Arrow IPC uploads (LZ4 and zstd, as pyarrow writes them) are taken; a message
/// whose buffer declares it decompresses to 2^60 bytes — arrow allocated that before
/// decompressing, and the failed allocation aborted the gateway — is a 422 naming the row,
/// and the gateway serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_arrow_uploads_are_measured_before_they_are_decompressed() {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use arrow::ipc::CompressionType;
    let (s, _tmp) = server_with_department().await;
    let api = Api::new(&s);
    let stream = |codec: CompressionType, values: Vec<String>| {
        let ids = Int64Array::from_iter_values(0..values.len() as i64);
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as ArrayRef),
            ("note", Arc::new(StringArray::from(values)) as _),
        ])
        .unwrap();
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(codec))
            .unwrap();
        let mut w = arrow::ipc::writer::StreamWriter::try_new_with_options(
            Vec::new(),
            &batch.schema(),
            options,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        w.into_inner().unwrap()
    };
    let value = "v".repeat(100_000);
    for (codec, magic) in [
        (CompressionType::LZ4_FRAME, [0x04, 0x22, 0x4d, 0x18]),
        (CompressionType::ZSTD, [0x28, 0xb5, 0x2f, 0xfd]),
    ] {
        let name = format!("{codec:?}").to_lowercase();
        let honest = stream(codec, vec![value.clone(); 3]);
        api.register_schemaless(&name).await;
        let (st, v) = api
            .send(api.version_request(&name, "application/vnd.apache.arrow.stream", false, honest))
            .await;
        assert_eq!(st, 201, "{codec:?}: {v}");
        assert_eq!(v["rows_added"], 3, "{v}");
        // The values buffer declares 300,000 bytes; make it declare 2^60.
        let mut lie = stream(codec, vec![value.clone(); 3]);
        let mut needle = 300_000i64.to_le_bytes().to_vec();
        needle.extend(magic);
        let at = lie.windows(12).position(|w| w == needle).unwrap();
        lie[at..at + 8].copy_from_slice(&(1i64 << 60).to_le_bytes());
        let (st, v) = api
            .send(api.version_request(&name, "application/vnd.apache.arrow.stream", false, lie))
            .await;
        assert_eq!(st, 422, "{codec:?}: {v}");
        assert_eq!(v["row"], 1, "{v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("row 1: a record batch decompresses to more than 256 MiB"),
            "{v}"
        );
        let health = reqwest::get(s.url("/healthz")).await.unwrap();
        assert_eq!(health.status(), 200, "{codec:?}");
        let d = api.dataset(&name).await;
        assert_eq!(d["row_count"], 3, "{d}");
    }
}

/// Appends of a few rows each do not leave a version of one file per append: past
/// `ingest.compact_after_files` small trailing files, the append rewrites them with its rows
/// into one. Rows keep their order, earlier versions keep their files and answers, and the
/// upload's own files (replaced before they were ever committed) are not left behind.
#[tokio::test]
async fn small_appends_are_compacted_in_order() {
    let (s, _tmp) =
        server_with_department_and(&[("DATAGATE_INGEST__COMPACT_AFTER_FILES", "3")]).await;
    let api = Api::new(&s);
    api.register("hourly").await;
    let path = "/api/v1/datasets/transport/hourly/versions?mode=append";
    let mut files = Vec::new();
    for i in 0..9i64 {
        let rows = format!(
            "{},stop {i},2024-01-0{},1.{i}0\n{},stop {i}b,2024-01-0{},2.{i}0\n",
            2 * i,
            i + 1,
            2 * i + 1,
            i + 1
        );
        let (st, v) = api
            .upload(path, "text/csv", format!("id,name,opened,fare\n{rows}"))
            .await;
        assert_eq!(st, 201, "{v}");
        assert_eq!(
            (v["rows_added"].as_u64(), v["row_count"].as_u64()),
            (Some(2), Some(2 * (i as u64 + 1))),
            "{v}"
        );
        files.push(v["files"].as_u64().unwrap());
    }
    // Files per version: 1, 2, 3, then the fourth append makes 4 > 3 small files one, ...
    assert_eq!(files, [1, 2, 3, 1, 2, 3, 1, 2, 3]);
    // The rows of the compacted versions, in the order they were appended.
    let s = &s;
    let page = |query: &str| {
        let url = format!("/api/v1/datasets/transport/hourly/{query}");
        async move { s.get_json_as(ADMIN, &url).await }
    };
    let ids = |body: Value| -> Vec<i64> {
        body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        ids(page("rows?select=id&limit=100&version=9").await),
        (0..18).collect::<Vec<_>>()
    );
    // A version before the compaction keeps its own files and rows.
    assert_eq!(
        ids(page("rows?select=id&limit=100&version=3").await),
        (0..6).collect::<Vec<_>>()
    );
    let v3 = page("versions").await;
    let rows_added: Vec<u64> = v3
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rows_added"].as_u64().unwrap())
        .collect();
    assert_eq!(rows_added, [2; 9]);
    // On disk: the 7 uploads committed as they were and the 2 compacted files; the 2 uploads
    // compacted before their commit left nothing.
    let on_disk = warehouse_files(s)
        .into_iter()
        .filter(|p| p.contains("/hourly/") && p.ends_with(".parquet"))
        .count();
    assert_eq!(on_disk, 7 + 2, "{:?}", warehouse_files(s));
    // A point lookup by key still finds its row in the compacted file (its bloom filters).
    let body = page("rows?select=id,name&where=id%20%3D%2013").await;
    assert_eq!(
        body["rows"],
        json!([{"id": 13, "name": "stop 6b"}]),
        "{body}"
    );
}
