//! An export decoded in units (`datagate_query::in_order`) gives exactly the rows of the
//! one-partition plan, in the same order: units cutting files and row groups anywhere, masked
//! and private columns, `select` and `where`, any number of units at once, units waiting for
//! their turn; an error in a unit ends the stream with that error.

mod support;

use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datagate_core::config::QueryPool;
use datagate_core::{ColumnType, Mask, Sensitivity};
use datagate_query::execute;
use datagate_query::in_order::{AHEAD_BYTES, InOrder};
use datagate_query::rows::{self, Paging, RowsRequest};
use datagate_query::{Principal, QueryEngine, RequestSession, TableSnapshot};
use support::{admin, column};

const ROWS_PER_UPLOAD: usize = 900;

/// Rows whose order is visible in every column: a running number, and values that repeat.
fn csv(upload: usize) -> String {
    let mut out = String::from("id,name,phone,district,amount\n");
    for i in 0..ROWS_PER_UPLOAD {
        let n = upload * ROWS_PER_UPLOAD + i;
        let district = ["滨江区", "余杭区", "", "萧山区", "临平区"][n % 5];
        let amount = if n.is_multiple_of(13) {
            String::new()
        } else {
            format!("{}", (n * 53) % 700)
        };
        out.push_str(&format!(
            "{n},李{n},1390000{:04},{district},{amount}\n",
            n % 10_000
        ));
    }
    out
}

async fn engine() -> (tempfile::TempDir, QueryEngine) {
    let published = support::publish_entities(
        vec![
            column("id", ColumnType::Int64, Sensitivity::Public, None),
            column(
                "name",
                ColumnType::Utf8,
                Sensitivity::Masked,
                Some(Mask::Partial),
            ),
            column("phone", ColumnType::Utf8, Sensitivity::Private, None),
            column("district", ColumnType::Utf8, Sensitivity::Public, None),
            column("amount", ColumnType::Int64, Sensitivity::Public, None),
        ],
        &(0..3).map(csv).collect::<Vec<_>>(),
    )
    .await;
    let engine = published.engine();
    (published.dir, engine)
}

/// The entities as `who` reads them, and a session over them whose rows come in storage order.
async fn ordered_session(engine: &QueryEngine, who: &Principal) -> (TableSnapshot, RequestSession) {
    let (_, snapshot) = engine
        .readable_dataset(who, "market", "entities", None)
        .await
        .unwrap();
    let session = engine
        .request_session(engine.dataset_catalog(&snapshot), true)
        .unwrap();
    (snapshot, session)
}

/// The export as text, and the partitions it was decoded in (1: the plan as planned).
async fn export(
    engine: &QueryEngine,
    who: &Principal,
    request: &RowsRequest,
    units: Option<(u64, usize, usize)>,
) -> Result<(String, usize), String> {
    let (snapshot, mut session) = ordered_session(engine, who).await;
    if let Some((rows, threads, ahead_bytes)) = units {
        let lane = engine
            .executor()
            .lane(QueryPool::Reserved, "test", None)
            .with_threads(threads);
        let in_order = InOrder::new(lane, &snapshot)
            .with_unit_rows(rows)
            .with_ahead_bytes(ahead_bytes);
        session = session.decoding_in_units(in_order);
    }
    let plan = rows::plan_rows(&session, &snapshot, &[], request, Paging::Export)
        .await
        .unwrap();
    let started = execute::start(&session, plan, None)
        .await
        .map_err(|e| e.to_string())?;
    let (schema, units) = (started.schema.clone(), started.units());
    let batches = started.collect().await.map_err(|e| e.to_string())?;
    Ok((render(&schema, &batches), units))
}

/// Where `got` first differs from `want`, line by line.
fn first_difference(want: &str, got: &str) -> Option<String> {
    let mut lines = want.lines().zip(got.lines()).enumerate();
    if let Some((i, (w, g))) = lines.find(|(_, (w, g))| w != g) {
        return Some(format!("line {i}: want {w:?}, got {g:?}"));
    }
    let (w, g) = (want.lines().count(), got.lines().count());
    (w != g).then(|| format!("{w} lines wanted, {g} got"))
}

fn render(schema: &arrow::datatypes::SchemaRef, batches: &[RecordBatch]) -> String {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    format!(
        "{}\n{rows} rows\n{}",
        fields.join(", "),
        pretty_format_batches(batches).unwrap()
    )
}

fn request(select: Option<&str>, filter: Option<&str>) -> RowsRequest {
    RowsRequest {
        select: select.map(str::to_string),
        filter: filter.map(str::to_string),
        order: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_in_units_is_the_one_partition_export() {
    let (_dir, engine) = engine().await;
    let total = 3 * ROWS_PER_UPLOAD;
    let mut compared = 0;
    for who in [Principal::ANONYMOUS, admin()] {
        for (select, filter) in [
            (None, None),
            (Some("amount,id"), None),
            (Some("name,district"), None),
            (None, Some("district = '滨江区' OR amount > 600")),
            (Some("id"), Some("amount IS NULL")),
            (None, Some("name LIKE '李1%'")),
            (None, Some("id < 0")),
        ] {
            let r = request(select, filter);
            let (want, partitions) = export(&engine, &who, &r, None).await.unwrap();
            assert_eq!(partitions, 1);
            if select.is_none() && filter.is_none() {
                assert!(want.contains(&format!("\n{total} rows\n")), "{want}");
                // The private column is the department's alone.
                assert_eq!(want.contains("phone"), who.role.is_some(), "{want}");
            }
            // Units of 37 rows cut files and row groups (of 64) anywhere; 5,000 rows make one
            // unit of each file. Units at once: the lane's threads and one more. With 1 KiB
            // allowed ahead, a unit after the first waits at its second batch for its turn.
            for (unit_rows, threads, ahead) in [
                (37, 2, AHEAD_BYTES),
                (37, 0, AHEAD_BYTES),
                (200, 1, AHEAD_BYTES),
                (5_000, 3, AHEAD_BYTES),
                (37, 3, 1024),
                (5_000, 2, 1024),
            ] {
                let units = Some((unit_rows, threads, ahead));
                let (got, partitions) = export(&engine, &who, &r, units).await.unwrap();
                assert!(partitions > 1, "{r:?}");
                if unit_rows == 37 {
                    assert!(partitions >= total / 37, "{partitions} units");
                }
                let difference = first_difference(&want, &got);
                assert!(
                    difference.is_none(),
                    "{r:?} units of {unit_rows}, {threads} threads, {ahead} B ahead: {difference:?}"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 2 * 7 * 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_a_unit_ends_the_export_with_it() {
    let (_dir, engine) = engine().await;
    // Fails at the row whose amount is 0 (row 0 has none: it is null), far into the export.
    let r = request(Some("id"), Some("100 / amount > 0"));
    let whole = export(&engine, &admin(), &r, None).await;
    let units = export(&engine, &admin(), &r, Some((37, 2, AHEAD_BYTES))).await;
    let (Err(whole), Err(units)) = (whole, units) else {
        panic!("a division by zero fails the export")
    };
    assert!(units.contains("zero"), "{units}");
    assert!(whole.contains("zero"), "{whole}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_per_row_operators_over_one_scan_are_cut() {
    let (_dir, engine) = engine().await;
    let (snapshot, session) = ordered_session(&engine, &admin()).await;
    let lane = engine.executor().lane(QueryPool::Reserved, "test", None);
    let in_order = InOrder::new(lane, &snapshot).with_unit_rows(100);
    for (sql, cut) in [
        ("SELECT id, amount * 2 FROM market.entities", true),
        ("SELECT id FROM market.entities WHERE amount > 5", true),
        ("SELECT * FROM market.entities LIMIT 5", false),
        (
            "SELECT id FROM market.entities WHERE amount > 5 LIMIT 5",
            false,
        ),
        ("SELECT * FROM market.entities ORDER BY amount", false),
        (
            "SELECT district, count(*) FROM market.entities GROUP BY 1",
            false,
        ),
        (
            "SELECT a.id FROM market.entities a JOIN market.entities b ON a.id = b.id",
            false,
        ),
        (
            "SELECT id FROM market.entities UNION ALL SELECT id FROM market.entities",
            false,
        ),
    ] {
        let plan = session
            .ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        assert_eq!(in_order.split(&plan).is_some(), cut, "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_units_hold_ahead_is_in_the_query_memory_pool_within_half_its_limit() {
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use futures::StreamExt;
    use std::sync::Arc;

    let (_dir, engine) = engine().await;
    let (snapshot, session) = ordered_session(&engine, &admin()).await;
    let plan = session
        .ctx
        .sql("SELECT * FROM market.entities")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let lane = engine
        .executor()
        .lane(QueryPool::Reserved, "test", None)
        .with_threads(3);
    // Units of 300 rows: several batches each (row groups of 64), four units at once.
    let in_order = InOrder::new(lane, &snapshot).with_unit_rows(300);
    let plan = in_order.split(&plan).expect("a scan cut into units");

    // The query's limit, its half far below the default 32 MiB allowed ahead.
    let limit = 24 * 1024;
    let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(limit));
    let runtime = RuntimeEnvBuilder::from_runtime_env(&session.ctx.runtime_env())
        .with_memory_pool(Arc::clone(&pool))
        .build_arc()
        .unwrap();
    let task = Arc::try_unwrap(session.ctx.task_ctx())
        .unwrap()
        .with_runtime(runtime);
    let mut stream = in_order.stream(plan, Arc::new(task));

    let first = stream.next().await.unwrap().unwrap();
    let mut largest = first.get_array_memory_size();
    let mut rows = first.num_rows();
    // The units after the first decode ahead until what waits fills half the limit.
    let mut held = 0;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        held = held.max(pool.reserved());
    }
    assert!(held > 0, "the batches waiting are in the pool");
    // The first unit's two batches beside half the limit (a batch is taken whole).
    let bound = limit / 2 + 3 * largest;
    assert!(held <= bound, "{held} B held ahead, at most {bound}");

    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        largest = largest.max(batch.get_array_memory_size());
        rows += batch.num_rows();
        assert!(pool.reserved() <= limit / 2 + 3 * largest);
    }
    assert_eq!(rows, 3 * ROWS_PER_UPLOAD);
    assert_eq!(pool.reserved(), 0, "nothing held once read");
}
