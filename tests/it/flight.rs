//! Arrow Flight SQL (API.md §1 "Flight SQL"): the second front door, held to the first.
//!
//! The Rust tests replay the call sequences of the Flight SQL JDBC driver (a Bearer handshake,
//! every statement prepared, `getTables` with schemas) and check the protocol's promises
//! (FlightInfo schema = DoGet schema, tickets bound to their key, gRPC codes, rate limits per
//! RPC). `adbc_driver_against_the_gateway` runs the real Python ADBC driver
//! (`tests/flight/adbc_client.py`) against the same server and compares every answer with the
//! HTTP API's.

use crate::harness::{
    ADMIN, Options, Server, admin_env, free_port, new_key, new_key_with, repo_root,
};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetTables, CommandStatementQuery, ProstMessageExt, SqlInfo};
use arrow_flight::{FlightDescriptor, FlightInfo, HandshakeRequest, IpcMessage, Ticket};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};

struct Flight {
    server: Server,
    uri: String,
}

async fn start(extra: &[(&str, &str)], shipped_limits: bool) -> Flight {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = admin_env(&[("DATAGATE_FLIGHT_LISTEN", listen.as_str())]);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let server = Server::start(Options {
        env,
        shipped_limits,
        ..Default::default()
    })
    .await;
    Flight {
        server,
        uri: format!("http://{listen}"),
    }
}

async fn channel(f: &Flight) -> Channel {
    for _ in 0..50 {
        if let Ok(c) = Channel::from_shared(f.uri.clone()).unwrap().connect().await {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no Flight SQL listener at {}", f.uri);
}

async fn sql_client(f: &Flight, key: &str) -> FlightSqlServiceClient<Channel> {
    let mut c = FlightSqlServiceClient::new(channel(f).await);
    c.set_token(key.to_string());
    c
}

/// `req` with `key` as its bearer token (none when `key` is empty: the anonymous principal).
fn bearer<T>(mut req: Request<T>, key: &str) -> Request<T> {
    if key.is_empty() {
        return req;
    }
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

fn schema_of(info: &FlightInfo) -> Schema {
    Schema::try_from(IpcMessage(info.schema.clone())).unwrap()
}

async fn publisher_key(s: &Server, department: &str) -> String {
    let body =
        serde_json::json!({"name": "flight test", "role": "publisher", "department": department});
    new_key_with(s, body).await
}

/// Every batch of the first endpoint of `info`.
async fn fetch(c: &mut FlightSqlServiceClient<Channel>, info: &FlightInfo) -> Vec<RecordBatch> {
    c.do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The JDBC driver's sequence: handshake with a Bearer header (the token comes back in
/// `authorization`), metadata, `getTables` with schemas, every statement prepared.
#[tokio::test]
async fn the_jdbc_call_sequence() {
    let f = start(&[], false).await;
    let outsider = publisher_key(&f.server, "market").await;

    // Handshake with Bearer: answered with the bearer token.
    let mut raw = FlightServiceClient::new(channel(&f).await);
    let hello = HandshakeRequest {
        protocol_version: 0,
        payload: Default::default(),
    };
    let resp = raw
        .handshake(bearer(
            Request::new(futures::stream::iter(vec![hello])),
            &outsider,
        ))
        .await
        .unwrap();
    assert_eq!(
        resp.metadata()
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("Bearer {outsider}")
    );
    assert!(resp.metadata().get("x-request-id").is_some());

    let mut c = sql_client(&f, &outsider).await;
    // GetSqlInfo: a read-only server named datagate.
    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let batches = fetch(&mut c, &info).await;
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(text.contains("datagate"), "{text}");
    assert!(text.contains("true"), "{text}");

    // getTables with schemas: only what this key reads, typed as it sees it.
    let tables = c
        .get_tables(CommandGetTables {
            catalog: Some("datagate".into()),
            db_schema_filter_pattern: Some("justice".into()),
            table_name_filter_pattern: Some("%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let batches = fetch(&mut c, &tables).await;
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let names = batch
        .column_by_name("table_name")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    let names: Vec<_> = names.iter().flatten().collect();
    // A publisher of another department reads the shared dataset, not the conditional one.
    assert_eq!(names, vec!["mediation_cases"]);
    let schema_bytes = batch
        .column_by_name("table_schema")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .unwrap()
        .value(0)
        .to_vec();
    let table_schema = Schema::try_from(IpcMessage(schema_bytes.into())).unwrap();
    assert!(
        table_schema.field_with_name("party_a_phone").is_err(),
        "private column listed"
    );
    assert_eq!(
        table_schema
            .field_with_name("party_a_name")
            .unwrap()
            .data_type(),
        &DataType::Utf8
    );

    // Without schemas, by name patterns; another catalog or table type lists nothing.
    let listed =
        |catalog: Option<&str>, schemas: Option<&str>, tables: Option<&str>, types: &[&str]| {
            let query = CommandGetTables {
                catalog: catalog.map(str::to_string),
                db_schema_filter_pattern: schemas.map(str::to_string),
                table_name_filter_pattern: tables.map(str::to_string),
                table_types: types.iter().map(|t| t.to_string()).collect(),
                include_schema: false,
            };
            let mut c = c.clone();
            async move {
                let info = c.get_tables(query).await.unwrap();
                let batches = fetch(&mut c, &info).await;
                let mut out = Vec::new();
                for b in &batches {
                    assert!(b.column_by_name("table_schema").is_none());
                    let column = |name: &str| {
                        b.column_by_name(name)
                            .unwrap()
                            .as_any()
                            .downcast_ref::<arrow::array::StringArray>()
                            .unwrap()
                            .clone()
                    };
                    let (schemas, names) = (column("db_schema_name"), column("table_name"));
                    for i in 0..b.num_rows() {
                        out.push(format!("{}.{}", schemas.value(i), names.value(i)));
                    }
                }
                out
            }
        };
    let everything = listed(None, None, None, &[]).await;
    assert!(
        everything.contains(&"justice.mediation_cases".to_string()),
        "{everything:?}"
    );
    assert!(
        !everything.contains(&"justice.legal_aid_cases".to_string()),
        "{everything:?}"
    );
    assert!(everything.len() > 5, "{everything:?}");
    assert!(everything.is_sorted(), "{everything:?}");
    assert_eq!(
        listed(
            Some("datagate"),
            Some("trans%"),
            Some("bus\\_%"),
            &["TABLE"]
        )
        .await,
        ["transport.bus_lines", "transport.bus_stops"]
    );
    assert_eq!(
        listed(None, None, Some("%_cases"), &[]).await,
        ["justice.mediation_cases"]
    );
    assert!(listed(Some("other"), None, None, &[]).await.is_empty());
    assert!(listed(None, None, None, &["VIEW"]).await.is_empty());

    // Every statement prepared: the dataset schema, a handle, then GetFlightInfo and DoGet.
    let mut prepared = c
        .prepare(
            "SELECT * FROM justice.mediation_cases ORDER BY case_no".into(),
            None,
        )
        .await
        .unwrap();
    let dataset_schema = prepared.dataset_schema().unwrap().clone();
    assert!(dataset_schema.field_with_name("party_a_phone").is_err());
    let info = prepared.execute().await.unwrap();
    let announced = schema_of(&info);
    let stream = c
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let batches: Vec<_> = stream.try_collect().await.unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 4000);
    // Names, types and nullability: FlightInfo = DoGet = the prepared statement's schema.
    assert_eq!(batches[0].schema().as_ref(), &announced);
    assert_eq!(announced, dataset_schema);
    let first_name = batches[0]
        .column_by_name("party_a_name")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    assert!(first_name.contains('*'), "masked: {first_name}");
    prepared.close().await.unwrap();
}

async fn statement_info(f: &Flight, key: &str, sql: &str) -> Result<FlightInfo, tonic::Status> {
    let mut raw = FlightServiceClient::new(channel(f).await);
    let cmd = CommandStatementQuery {
        query: sql.into(),
        transaction_id: None,
    };
    let desc = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    raw.get_flight_info(bearer(Request::new(desc), key))
        .await
        .map(|r| r.into_inner())
}

async fn do_get_rows(f: &Flight, key: &str, ticket: Ticket) -> Result<usize, tonic::Status> {
    let mut raw = FlightServiceClient::new(channel(f).await);
    let stream = raw
        .do_get(bearer(Request::new(ticket), key))
        .await?
        .into_inner();
    let batches: Vec<_> = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(arrow_flight::error::FlightError::from),
    )
    .try_collect()
    .await
    .map_err(tonic::Status::from)?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

/// A ticket is the asking key's: another key replaying it, or anyone changing a byte of it, is
/// told it does not exist. Its owner may redeem it again until it expires (planned again, with
/// the same checks and another audit record: what a gateway that did not plan it does).
#[tokio::test]
async fn tickets_belong_to_the_key_that_asked() {
    let f = start(&[("DATAGATE_FLIGHT__TICKET_TTL_SECS", "3")], false).await;
    let alice = new_key(&f.server, "consumer", None).await;
    let bob = new_key(&f.server, "consumer", None).await;
    let info = statement_info(&f, &alice, "SELECT * FROM transport.bus_lines")
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stolen = do_get_rows(&f, &bob, ticket.clone()).await.unwrap_err();
    assert_eq!(stolen.code(), Code::NotFound, "{stolen}");
    let anonymous = do_get_rows(&f, "", ticket.clone()).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::NotFound);
    let mut forged = ticket.clone();
    let mut bytes = forged.ticket.to_vec();
    let at = bytes.len() - 20;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    forged.ticket = bytes.into();
    let forged = do_get_rows(&f, &alice, forged).await.unwrap_err();
    assert_eq!(forged.code(), Code::NotFound, "{forged}");
    assert_eq!(do_get_rows(&f, &alice, ticket.clone()).await.unwrap(), 1200);
    assert_eq!(
        do_get_rows(&f, &alice, ticket.clone()).await.unwrap(),
        1200,
        "redeemed again by its owner"
    );
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    let expired = do_get_rows(&f, &alice, ticket).await.unwrap_err();
    assert_eq!(expired.code(), Code::NotFound, "{expired}");
}

/// gRPC codes for a client's mistakes (never `Internal`), GetSchema, and the refusals.
#[tokio::test]
async fn codes_get_schema_and_refusals() {
    let f = start(&[], false).await;
    let consumer = new_key(&f.server, "consumer", None).await;

    let bad_key = "dg_nobody_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let e = statement_info(&f, bad_key, "SELECT 1").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(e.metadata().get("x-request-id").is_some());

    let e = statement_info(&f, &consumer, "SELECT * FROM justice.legal_aid_cases")
        .await
        .unwrap_err();
    let missing = statement_info(&f, &consumer, "SELECT * FROM justice.nothing_here")
        .await
        .unwrap_err();
    assert_eq!(e.code(), missing.code());
    assert_eq!(
        e.message().replace("legal_aid_cases", "X"),
        missing.message().replace("nothing_here", "X")
    );

    let e = statement_info(
        &f,
        &consumer,
        "SELECT line_id FROM transport.bus_lines WHERE WHERE",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("line 1, column"), "{}", e.message());
    // Text the column's type cannot read, placed at its literal.
    let e = statement_info(
        &f,
        &consumer,
        "SELECT line_id FROM transport.bus_lines WHERE stop_count > 'many'",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("at line 1, column 60"),
        "{}",
        e.message()
    );

    // The query's own expression failing on a row after the first batches (100,000 rows, the
    // bad one last): the client's mistake, as over HTTP, not `Internal`.
    let failing = "SELECT CAST(CASE WHEN n < 100000 THEN '1' ELSE 'boom' END AS INT) AS v FROM \
                   (SELECT row_number() OVER () AS n FROM transport.bus_lines a \
                    CROSS JOIN transport.bus_lines b LIMIT 100000) t";
    let info = statement_info(&f, &consumer, failing).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let e = do_get_rows(&f, &consumer, ticket).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("Cannot cast"), "{e}");

    let e = statement_info(&f, &consumer, "DROP TABLE transport.bus_lines")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // The refused statement is named in its audit record, as over HTTP.
    let refused: Vec<serde_json::Value> = f
        .server
        .audit_records("limit=100&action=flight.plan")
        .await
        .into_iter()
        .filter(|r| r["query_text"] == "DROP TABLE transport.bus_lines")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["status"], 400, "{refused:?}");
    assert_eq!(refused[0]["query_sha256"].as_str().map(str::len), Some(64));

    // A known command whose bytes are not that message: the client's mistake, on every RPC
    // that takes a command.
    let mut raw = FlightServiceClient::new(channel(&f).await);
    let garbled = arrow_flight::sql::Any {
        type_url: CommandStatementQuery::type_url().into(),
        value: vec![0xff, 0xff].into(),
    }
    .encode_to_vec();
    let desc = FlightDescriptor::new_cmd(garbled.clone());
    let refusals = [
        raw.get_flight_info(bearer(Request::new(desc.clone()), &consumer))
            .await
            .map(|_| ()),
        raw.do_get(bearer(
            Request::new(Ticket::new(garbled.clone())),
            &consumer,
        ))
        .await
        .map(|_| ()),
        raw.do_put(bearer(
            Request::new(futures::stream::iter([arrow_flight::FlightData {
                flight_descriptor: Some(desc),
                ..Default::default()
            }])),
            &consumer,
        ))
        .await
        .map(|_| ()),
        raw.do_action(bearer(
            Request::new(arrow_flight::Action::new(
                "CreatePreparedStatement",
                arrow_flight::sql::Any {
                    type_url: arrow_flight::sql::ActionCreatePreparedStatementRequest::type_url()
                        .into(),
                    value: vec![0xff, 0xff].into(),
                }
                .encode_to_vec(),
            )),
            &consumer,
        ))
        .await
        .map(|_| ()),
    ];
    for refused in refusals {
        let e = refused.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    }

    // GetSchema: the schema a statement would have, as this caller sees it.
    let sql = "SELECT line_id, fare, night_line FROM transport.bus_lines";
    let cmd = CommandStatementQuery {
        query: sql.into(),
        transaction_id: None,
    };
    let desc = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let schema = raw
        .get_schema(bearer(Request::new(desc), &consumer))
        .await
        .unwrap()
        .into_inner();
    let schema = Schema::try_from(IpcMessage(schema.schema)).unwrap();
    let info = statement_info(&f, &consumer, sql).await.unwrap();
    assert_eq!(schema, schema_of(&info));
    assert_eq!(schema.fields().len(), 3);

    // Updates, transactions, Substrait: refused with a message.
    let mut c = sql_client(&f, &consumer).await;
    let e = c
        .execute_update("DELETE FROM transport.bus_lines".into(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    let e = c.begin_transaction().await.unwrap_err();
    assert!(e.to_string().contains("transactions"), "{e}");
}

/// Rate limits count every RPC, as HTTP requests: over the tier's burst, `ResourceExhausted`
/// with the retry hint in the metadata; refusals are audited.
#[tokio::test]
async fn rate_limits_count_rpcs() {
    let f = start(
        &[
            ("DATAGATE_TIERS__ANONYMOUS__REQUESTS", "3"),
            ("DATAGATE_TIERS__ANONYMOUS__WINDOW_SECS", "60"),
            ("DATAGATE_TIERS__ANONYMOUS__BURST", "3"),
        ],
        true,
    )
    .await;
    let mut codes = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        match statement_info(&f, "", "SELECT 1 AS one").await {
            Ok(_) => codes.push(Code::Ok),
            Err(e) => {
                codes.push(e.code());
                last = Some(e);
            }
        }
    }
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    let e = last.unwrap();
    let retry: u64 = e
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
}

/// The real Python ADBC driver: see `tests/flight/adbc_client.py`.
#[tokio::test]
async fn adbc_driver_against_the_gateway() {
    let f = start(
        &[
            ("DATAGATE_LIMITS__MAX_JOIN_PAIRS", "100000000"),
            ("DATAGATE_LIMITS__QUERY_TIMEOUT_MS", "300000"),
        ],
        false,
    )
    .await;
    let consumer = new_key(&f.server, "consumer", None).await;
    let outsider = publisher_key(&f.server, "market").await;
    let pid = f.server.pid().unwrap().to_string();
    let uri = f.uri.replace("http://", "grpc://");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-W")
            .arg("ignore")
            .arg(repo_root().join("tests/flight/adbc_client.py"))
            .env("FLIGHT_URI", uri)
            .env("HTTP_BASE", f.server.base.clone())
            .env("ADMIN_KEY", ADMIN)
            .env("CONSUMER_KEY", consumer)
            .env("OUTSIDER_KEY", outsider)
            .env("SERVER_PID", pid)
            .output()
            .map(|o| (o, f))
    })
    .await
    .unwrap();
    let (out, f) = out.expect("python3 runs (scripts/test.sh installs the ADBC driver)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the ADBC checks failed:\n{stdout}\n{stderr}\n--- server log tail ---\n{}",
        f.server
            .log_text()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Daily bytes and concurrency count Flight transfers like HTTP responses: the bytes of the
/// encoded batches go to the caller's one daily counter, and an open `DoGet` stream holds one
/// of its tier's concurrent queries.
#[tokio::test]
async fn daily_bytes_and_concurrency_hold_across_both_doors() {
    let f = start(
        &[
            ("DATAGATE_TIERS__STANDARD__DAILY_BYTES", "50000"),
            ("DATAGATE_TIERS__PREMIUM__MAX_CONCURRENT_QUERIES", "1"),
            ("DATAGATE_LIMITS__MAX_JOIN_PAIRS", "100000000"),
            ("DATAGATE_LIMITS__QUERY_TIMEOUT_MS", "300000"),
        ],
        false,
    )
    .await;
    let small = new_key(&f.server, "consumer", Some("standard")).await;
    // 1,200 rows: well over the 50,000 bytes of the day, counted as they leave.
    let info = statement_info(&f, &small, "SELECT * FROM transport.bus_lines")
        .await
        .unwrap();
    let rows = do_get_rows(&f, &small, info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(rows, 1200);
    // Over the quota, even planning is refused (as HTTP refuses the query before it runs).
    let e = statement_info(&f, &small, "SELECT 1 AS one")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert_eq!(
        e.metadata()
            .get("x-violated-policy")
            .unwrap()
            .to_str()
            .unwrap(),
        "daily-bytes"
    );
    // The HTTP door sees the same counter.
    let r = reqwest::Client::new()
        .post(f.server.url("/api/v1/query"))
        .bearer_auth(&small)
        .json(&serde_json::json!({"sql": "SELECT 1 AS one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let me: serde_json::Value = reqwest::Client::new()
        .get(f.server.url("/api/v1/me"))
        .bearer_auth(&small)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let used = me["limits"]["tier"]["bytes_used_today"].as_u64().unwrap();
    assert!(used > 50_000, "{me}");

    // One query at once: an open stream (10M rows, far beyond the transport's windows) holds it.
    let busy = new_key(&f.server, "consumer", Some("premium")).await;
    let big = "SELECT m.uscc, f.facility_id FROM market.market_entities m \
               CROSS JOIN govservice.public_facilities f";
    let info = statement_info(&f, &busy, big).await.unwrap();
    let mut raw = FlightServiceClient::new(channel(&f).await);
    let mut open = raw
        .do_get(bearer(
            Request::new(info.endpoint[0].ticket.clone().unwrap()),
            &busy,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(open.message().await.unwrap().is_some());
    let e = statement_info(&f, &busy, "SELECT 1 AS one")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.metadata().get("retry-after").is_some());
    assert_eq!(
        e.metadata()
            .get("x-violated-policy")
            .unwrap()
            .to_str()
            .unwrap(),
        "concurrency"
    );
    // Closing the stream gives the slot back.
    drop(open);
    let mut freed = false;
    for _ in 0..50 {
        if let Ok(info) = statement_info(&f, &busy, "SELECT 1 AS one").await {
            let rows = do_get_rows(&f, &busy, info.endpoint[0].ticket.clone().unwrap()).await;
            assert_eq!(rows.unwrap(), 1);
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(freed, "the slot of a closed stream was not given back");
}

/// `flight.tls_cert` and `flight.tls_key`: the listener speaks TLS only.
#[tokio::test]
async fn tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let crate::certs::Certificates { ca, cert, key } = crate::certs::test_certificates(dir.path());
    let f = start(
        &[
            ("DATAGATE_FLIGHT__TLS_CERT", cert.as_str()),
            ("DATAGATE_FLIGHT__TLS_KEY", key.as_str()),
        ],
        false,
    )
    .await;
    let consumer = new_key(&f.server, "consumer", None).await;
    let pem = std::fs::read(&ca).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost");
    let uri = f.uri.replace("http://", "https://");
    let mut secure = Err(String::new());
    for _ in 0..50 {
        let endpoint = Channel::from_shared(uri.clone())
            .unwrap()
            .tls_config(tls.clone())
            .unwrap();
        secure = endpoint.connect().await.map_err(|e| format!("{e:?}"));
        if secure.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut c = FlightSqlServiceClient::new(secure.expect("a TLS connection"));
    c.set_token(consumer.clone());
    let info = c
        .execute("SELECT count(*) AS n FROM transport.bus_stops".into(), None)
        .await
        .unwrap();
    let batches = fetch(&mut c, &info).await;
    assert_eq!(batches[0].num_rows(), 1);
    // Plain text is refused on a TLS listener.
    let plain = statement_info(&f, &consumer, "SELECT 1").await;
    assert!(plain.is_err());
}

/// Several rows of parameters bound to one prepared statement run as several executions, one
/// endpoint each, in order; every RPC is counted in the metrics.
#[tokio::test]
async fn parameter_rows_run_as_executions() {
    use arrow::array::{Int64Array, StringArray};
    let f = start(&[], false).await;
    let consumer = new_key(&f.server, "consumer", None).await;
    let mut c = sql_client(&f, &consumer).await;
    let mut prepared = c
        .prepare(
            "SELECT line_id FROM transport.bus_lines WHERE stop_count = $1 ORDER BY line_id".into(),
            None,
        )
        .await
        .unwrap();
    let params = prepared.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 1);
    assert_eq!(params.field(0).name(), "$1");
    let counts = [10i64, 20, 30];
    let batch = RecordBatch::try_from_iter([(
        "$1",
        std::sync::Arc::new(Int64Array::from(counts.to_vec())) as arrow::array::ArrayRef,
    )])
    .unwrap();
    prepared.set_parameters(batch).unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(info.endpoint.len(), 3);
    let http = reqwest::Client::new();
    for (endpoint, count) in info.endpoint.iter().zip(counts) {
        let batches: Vec<_> = c
            .do_get(endpoint.ticket.clone().unwrap())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let got: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let ids = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                ids.iter().flatten().map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        let body: serde_json::Value = http
            .post(f.server.url("/api/v1/query"))
            .bearer_auth(&consumer)
            .json(&serde_json::json!({
                "sql": "SELECT line_id FROM transport.bus_lines WHERE stop_count = $1 ORDER BY line_id",
                "params": [count],
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let want: Vec<String> = body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["line_id"].as_str().unwrap().to_string())
            .collect();
        assert!(!want.is_empty(), "stop_count = {count} matches some lines");
        assert_eq!(got, want, "stop_count = {count}");
    }
    prepared.close().await.unwrap();
    // A statement skipping `$1` still takes it: the parameter schema lists `$1..$n`, and a row
    // of fewer values is refused in words before anything runs.
    let mut prepared = c.prepare("SELECT $2 AS b".into(), None).await.unwrap();
    let names: Vec<_> = prepared
        .parameter_schema()
        .unwrap()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["$1", "$2"]);
    let one = |name: &str, v: i64| {
        (
            name.to_string(),
            std::sync::Arc::new(Int64Array::from(vec![v])) as arrow::array::ArrayRef,
        )
    };
    prepared
        .set_parameters(RecordBatch::try_from_iter([one("$1", 1), one("$2", 2)]).unwrap())
        .unwrap();
    let info = prepared.execute().await.unwrap();
    let batches = fetch(&mut c, &info).await;
    let b = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(b.value(0), 2);
    prepared
        .set_parameters(RecordBatch::try_from_iter([one("$1", 1)]).unwrap())
        .unwrap();
    let refused = prepared.execute().await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("the statement takes 2 parameters ($1 to $2); 1 was bound"),
        "{refused}"
    );
    prepared.close().await.unwrap();
    let metrics = http
        .get(f.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("datagate_flight_requests_total{rpc=\"DoGet\",code=\"Ok\"}"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("flight"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // An execution refused when it is planned names its statement in the audit record.
    let sql = "SELECT line_id FROM transport.bus_lines WHERE stop_count + $1 > 0";
    let mut prepared = c.prepare(sql.into(), None).await.unwrap();
    let batch = RecordBatch::try_from_iter([(
        "$1",
        std::sync::Arc::new(Int64Array::from(vec![i64::MAX])) as arrow::array::ArrayRef,
    )])
    .unwrap();
    prepared.set_parameters(batch).unwrap();
    let refused = prepared.execute().await.unwrap_err();
    assert!(refused.to_string().contains("parameter $1"), "{refused}");
    let records = f
        .server
        .audit_records("action=flight.plan&status=400&limit=10")
        .await;
    assert!(
        records.iter().any(|r| r["query_text"] == sql),
        "{records:?}"
    );
}

/// A parameter stream arrow's decoder panics on (a buffer past the message's body) is the
/// client's mistake: `InvalidArgument`, and the connection serves the next call.
#[tokio::test]
async fn corrupt_parameters_are_an_invalid_argument() {
    use arrow::array::Int64Array;
    use arrow_flight::sql::{
        ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
        CommandPreparedStatementQuery,
    };
    use arrow_flight::{Action, FlightData};
    let f = start(&[], false).await;
    let consumer = new_key(&f.server, "consumer", None).await;
    let mut c = FlightServiceClient::new(channel(&f).await);
    let create = ActionCreatePreparedStatementRequest {
        query: "SELECT line_id FROM transport.bus_lines WHERE stop_count = $1".into(),
        transaction_id: None,
    };
    let action = Action::new("CreatePreparedStatement", create.as_any().encode_to_vec());
    let answer: Vec<arrow_flight::Result> = c
        .do_action(bearer(Request::new(action), &consumer))
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    let created: ActionCreatePreparedStatementResult = Any::decode(&*answer[0].body)
        .unwrap()
        .unpack()
        .unwrap()
        .unwrap();
    let batch = RecordBatch::try_from_iter([(
        "$1",
        std::sync::Arc::new(Int64Array::from(vec![10i64, 20])) as arrow::array::ArrayRef,
    )])
    .unwrap();
    // LZ4-compressed parameters whose value buffer declares it decompresses to 2^60 bytes:
    // arrow allocated that before decompressing, and the failed allocation aborted the
    // gateway.
    let compressed: Vec<FlightData> = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_options(
            arrow::ipc::writer::IpcWriteOptions::default()
                .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
                .unwrap(),
        )
        .build(futures::stream::iter([Ok(batch.clone())]))
        .try_collect()
        .await
        .unwrap();
    let bind = |corrupt: bool, lie: bool| {
        let mut data: Vec<FlightData> = if lie {
            let mut data = compressed.clone();
            let body = data[1].data_body.to_vec();
            // The values buffer, stored uncompressed (-1) as 16 bytes are not worth it.
            let mut needle = (-1i64).to_le_bytes().to_vec();
            needle.extend(10i64.to_le_bytes());
            let at = body.windows(16).position(|w| w == needle).unwrap();
            let mut lied = body.clone();
            lied[at..at + 8].copy_from_slice(&(1i64 << 60).to_le_bytes());
            data[1].data_body = lied.into();
            data
        } else {
            arrow_flight::utils::batches_to_flight_data(&batch.schema(), vec![batch.clone()])
                .unwrap()
        };
        let cmd = CommandPreparedStatementQuery {
            prepared_statement_handle: created.prepared_statement_handle.clone(),
        };
        data[0].flight_descriptor = Some(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()));
        if corrupt {
            let mut header = data[1].data_header.to_vec();
            crate::harness::point_a_buffer_past_the_body(&mut header);
            data[1].data_header = header.into();
        }
        bearer(Request::new(futures::stream::iter(data)), &consumer)
    };
    for (corrupt, lie, says) in [
        (true, false, "not Arrow data"),
        (false, true, "decompresses to more than 64 MiB"),
    ] {
        let refused = match c.do_put(bind(corrupt, lie)).await {
            Err(status) => status,
            Ok(answers) => {
                let answers: Result<Vec<_>, _> = answers.into_inner().try_collect().await;
                answers.expect_err("corrupt parameters were bound")
            }
        };
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(says), "{}", refused.message());
    }
    // The same connection binds the intact parameters.
    let bound: Vec<_> = c
        .do_put(bind(false, false))
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(bound.len(), 1);
}
