//! Top-N queries seeded from the page index (`datagate_query::top_n`) answer exactly what the
//! same queries answer unseeded: the same rows in the same order, across files, row groups,
//! nulls and ties, ascending and descending, nulls first and last, with offsets; and what it
//! cannot seed (a filter, a float, a masked column, an expression) it leaves as written.

mod support;

use arrow::util::pretty::pretty_format_batches;
use datagate_core::{AccessLevel, ColumnType, Mask, Sensitivity};
use datagate_query::{QueryEngine, RequestSession, sql, top_n};
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    engine: QueryEngine,
}

fn column(name: &str, data_type: ColumnType, sensitivity: Sensitivity) -> support::Column {
    let mask = (sensitivity == Sensitivity::Masked).then_some(Mask::Hash);
    support::column(name, data_type, sensitivity, mask)
}

/// Scores with many ties and nulls; the largest and smallest values scattered over the files.
fn csv(upload: usize) -> String {
    let mut out = String::from("id,score,day,capital,ratio,secret\n");
    for i in 0..700 {
        let id = upload * 1000 + i;
        let score = if (i + upload).is_multiple_of(11) {
            String::new()
        } else {
            ((i * 7919 + upload * 131) % 97).to_string()
        };
        let day = if i % 13 == 5 {
            String::new()
        } else {
            format!("2024-{:02}-{:02}", (i * 5 + upload) % 12 + 1, i % 28 + 1)
        };
        let capital = format!("{}.{:02}", (i * 104_729 + upload) % 100_000, i % 100);
        out.push_str(&format!(
            "{id},{score},{day},{capital},{}.5,{}\n",
            i % 50,
            (i * 31) % 1000
        ));
    }
    out
}

async fn fixture() -> Fixture {
    // Small row groups and files: the version has dozens of pages over several files.
    let published = support::publish_entities(
        vec![
            column("id", ColumnType::Int64, Sensitivity::Public),
            column("score", ColumnType::Int32, Sensitivity::Public),
            column("day", ColumnType::Date32, Sensitivity::Public),
            column(
                "capital",
                ColumnType::Decimal128(18, 2),
                Sensitivity::Public,
            ),
            column("ratio", ColumnType::Float64, Sensitivity::Public),
            column("secret", ColumnType::Int64, Sensitivity::Masked),
        ],
        &(0..3).map(csv).collect::<Vec<_>>(),
    )
    .await;
    let engine = published.engine();
    Fixture {
        _dir: published.dir,
        engine,
    }
}

async fn session(f: &Fixture) -> RequestSession {
    let catalog = f
        .engine
        .catalog_snapshot(&[AccessLevel::Open])
        .await
        .unwrap();
    f.engine.request_session(catalog, false).unwrap()
}

async fn run(s: &RequestSession, plan: datafusion::logical_expr::LogicalPlan) -> String {
    let batches = s
        .ctx
        .execute_logical_plan(plan)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test]
async fn seeded_top_n_answers_what_the_query_answers() {
    let f = fixture().await;
    let s = session(&f).await;
    for key in ["score", "day", "capital", "id"] {
        for direction in ["ASC", "DESC", "ASC NULLS FIRST", "DESC NULLS LAST"] {
            // The version has 33 pages of 64 rows: up to 33 rows can be seeded.
            for (limit, offset) in [(1u32, 0), (3, 0), (10, 0), (10, 5), (25, 7)] {
                let q = format!(
                    "SELECT id, score, day, capital FROM market.entities \
                     ORDER BY {key} {direction}, id LIMIT {limit} OFFSET {offset}"
                );
                let mut plan = sql::plan_sql(&s, &q, &[]).await.unwrap();
                if !limit.is_multiple_of(2) {
                    // Under the API's row cap, as every SQL answer is.
                    plan = datagate_query::execute::limit_plan(plan, 1_000_001).unwrap();
                }
                let with = top_n::seed(plan.clone(), &s.pages).await;
                assert!(with != plan, "not seeded: {q}");
                assert!(
                    with.display_indent().to_string().contains("Filter"),
                    "{q}: {}",
                    with.display_indent()
                );
                assert_eq!(run(&s, with).await, run(&s, plan).await, "{q}");
            }
        }
    }
}

/// Rows the plan's Parquet scans passed on (after pruning by statistics and page index).
async fn rows_scanned(s: &RequestSession, plan: datafusion::logical_expr::LogicalPlan) -> usize {
    let df = s.ctx.execute_logical_plan(plan).await.unwrap();
    let physical = df.create_physical_plan().await.unwrap();
    datafusion::physical_plan::collect(physical.clone(), s.ctx.task_ctx())
        .await
        .unwrap();
    fn scanned(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> usize {
        let own = if plan.name() == "DataSourceExec" {
            plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0)
        } else {
            0
        };
        own + plan.children().into_iter().map(scanned).sum::<usize>()
    }
    scanned(&physical)
}

#[tokio::test]
async fn the_seed_skips_pages() {
    let f = fixture().await;
    let s = session(&f).await;
    // Without the running top N's own pruning, which depends on when each file opens.
    s.ctx
        .state_ref()
        .write()
        .config_mut()
        .options_mut()
        .optimizer
        .enable_topk_dynamic_filter_pushdown = false;
    let q = "SELECT id, capital FROM market.entities ORDER BY capital DESC LIMIT 3";
    let plan = sql::plan_sql(&s, q, &[]).await.unwrap();
    let seeded = rows_scanned(&s, top_n::seed(plan.clone(), &s.pages).await).await;
    let unseeded = rows_scanned(&s, plan).await;
    // 2,100 rows in pages of 64 over 12 files: the seeded scan reads about three pages.
    assert!(
        seeded <= 4 * 64 && unseeded == 2_100,
        "seeded {seeded} rows, unseeded {unseeded}"
    );
}

#[tokio::test]
async fn what_cannot_be_seeded_runs_as_written() {
    let f = fixture().await;
    let s = session(&f).await;
    for q in [
        // A filter: the page statistics know nothing of the rows it keeps.
        "SELECT id FROM market.entities WHERE id > 5 ORDER BY score DESC LIMIT 3",
        // A float: NaN sorts above every number and is in no statistic.
        "SELECT id FROM market.entities ORDER BY ratio DESC LIMIT 3",
        // An expression, an aggregate, no limit, a limit larger than the pages.
        "SELECT id FROM market.entities ORDER BY score + 1 DESC LIMIT 3",
        "SELECT score, count(*) FROM market.entities GROUP BY score ORDER BY score DESC LIMIT 3",
        "SELECT id FROM market.entities ORDER BY score DESC",
        "SELECT id FROM market.entities ORDER BY score DESC LIMIT 5000",
        "SELECT id FROM market.entities ORDER BY score DESC LIMIT 30 OFFSET 10",
    ] {
        let plan = sql::plan_sql(&s, q, &[]).await.unwrap();
        assert_eq!(top_n::seed(plan.clone(), &s.pages).await, plan, "{q}");
    }
}

#[tokio::test]
async fn a_masked_column_is_not_seeded() {
    let f = fixture().await;
    // An anonymous reader sees `secret` through its mask: its order is the mask's, not the
    // file's, so the file's statistics say nothing about it.
    let catalog = f
        .engine
        .readable_catalog(&datagate_query::Principal {
            key_id: None,
            role: None,
            department: None,
            grants: vec![],
        })
        .await
        .unwrap();
    let s = f.engine.request_session(catalog, false).unwrap();
    let q = "SELECT id, secret FROM market.entities ORDER BY secret DESC LIMIT 3";
    let plan = sql::plan_sql(&s, q, &[]).await.unwrap();
    assert_eq!(top_n::seed(plan.clone(), &s.pages).await, plan);
}
