//! What a `sum()` of integers or decimals that refuses to overflow costs against DataFusion's
//! wrapping one.
//!
//!     cargo bench --bench checked_sum [-- ROWS]
//!
//! The same in-memory table (`ROWS`, default 20,000,000, of two `bigint` columns and a
//! `DECIMAL(18,2)` one in two partitions of 8,192-row batches) is summed by a plain DataFusion
//! session (the baseline) and by one with datagate's checked `sum` registered
//! (`datagate-query/src/checked_sum.rs`), in alternation, five rounds each: the total of all
//! rows, 1,000 groups, and 1,000,000 groups (where the aggregation keeps a total per group), of
//! the integers and of the decimals. Printed: the median time of each and the ratio checked /
//! plain.

use arrow::array::{ArrayRef, Decimal128Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 8192;

fn table(rows: usize) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
        Field::new("d", DataType::Decimal128(18, 2), true),
    ]));
    let batch = |start: usize| {
        let n = BATCH.min(rows - start);
        let k: Int64Array = (start..start + n)
            .map(|i| (i * 7919 % 1_000_000) as i64)
            .collect();
        // Values of every size, some NULL: a checked total must not lose them.
        let v: Int64Array = (start..start + n)
            .map(|i| {
                (i % 97 != 0).then_some((i as i64).wrapping_mul(2_654_435_761) % 1_000_000_007)
            })
            .collect();
        // Amounts in cents, up to ten million.
        let d =
            Decimal128Array::from_iter(v.iter().map(|v| v.map(|v| i128::from(v) % 1_000_000_000)))
                .with_precision_and_scale(18, 2)
                .unwrap();
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(k) as ArrayRef, Arc::new(v), Arc::new(d)],
        )
        .unwrap()
    };
    let starts: Vec<usize> = (0..rows).step_by(BATCH).collect();
    let partitions = starts
        .chunks(starts.len().div_ceil(2))
        .map(|c| c.iter().map(|s| batch(*s)).collect())
        .collect();
    MemTable::try_new(schema, partitions).unwrap()
}

fn session(table: Arc<MemTable>, checked: bool) -> SessionContext {
    let config = SessionConfig::new().with_target_partitions(2);
    let mut state = SessionContext::new_with_config(config).state();
    if checked {
        datagate_query::checked_sum::register(&mut state).unwrap();
    }
    let ctx = SessionContext::new_with_state(state);
    ctx.register_table("t", table).unwrap();
    ctx
}

async fn time(ctx: &SessionContext, sql: &str) -> (Duration, String) {
    let start = Instant::now();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let took = start.elapsed();
    // A digest of the answer, so both sessions are seen to agree.
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let first = arrow::util::display::array_value_to_string(
        batches[0].column(batches[0].num_columns() - 1),
        0,
    )
    .unwrap();
    (took, format!("{rows} rows, first {first}"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000_000);
    let table = Arc::new(table(rows));
    let plain = session(table.clone(), false);
    let checked = session(table, true);
    println!("checked sum vs DataFusion's sum over {rows} rows (median of 5, alternated)");
    for (what, sql) in [
        ("bigint total", "SELECT sum(v) AS s FROM t"),
        (
            "bigint 1,000 groups",
            "SELECT k % 1000 AS g, sum(v) AS s FROM t GROUP BY k % 1000 ORDER BY g",
        ),
        (
            "bigint 1,000,000 groups",
            "SELECT k, sum(v) AS s FROM t GROUP BY k ORDER BY k",
        ),
        ("decimal total", "SELECT sum(d) AS s FROM t"),
        (
            "decimal 1,000 groups",
            "SELECT k % 1000 AS g, sum(d) AS s FROM t GROUP BY k % 1000 ORDER BY g",
        ),
        (
            "decimal 1,000,000 groups",
            "SELECT k, sum(d) AS s FROM t GROUP BY k ORDER BY k",
        ),
    ] {
        let (mut p, mut c) = (Vec::new(), Vec::new());
        time(&plain, sql).await;
        time(&checked, sql).await;
        for _ in 0..5 {
            let (tp, ap) = time(&plain, sql).await;
            let (tc, ac) = time(&checked, sql).await;
            assert_eq!(ap, ac, "{what}: the answers differ");
            p.push(tp);
            c.push(tc);
        }
        let (p, c) = (median(p), median(c));
        println!(
            "{what:>24}: plain {:>8.1} ms, checked {:>8.1} ms, ratio {:.2}x",
            p.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3,
            c.as_secs_f64() / p.as_secs_f64()
        );
    }
}
