//! Cost admission: a physical plan's work, estimated before it runs, against the caller's
//! budgets.
//!
//! Some operators can work for hours on small inputs: a cross join or nested-loop join
//! compares every row of one side with every row of the other, and three 20,000-row tables
//! make 8·10¹² pairs. Their inputs are known before anything runs — the pinned versions' row
//! counts are in the catalog and in the Parquet footers, which DataFusion reads as statistics —
//! so [`check`] bounds the rows every operator can produce (scans: their row counts; filters
//! and projections: their input; limits: their fetch; joins of every pair: the product;
//! unions: the sum) and refuses, with [`QueryError::OverLimit`] (422) and the estimate:
//! - a cross or nested-loop join whose row pairs exceed `max_join_pairs`;
//! - a full sort (no `LIMIT` to keep it a top-N), or a window that buffers its whole input,
//!   over more than `max_sort_rows`.
//!
//! Both budgets come from `[limits]`, multiplied by the caller's tier `query_budget`.
//! `EXPLAIN` plans are not run and not checked; `EXPLAIN ANALYZE` is, like its query.

use crate::error::QueryError;
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::windows::WindowAggExec;
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext};
use std::sync::Arc;

/// The budgets of one query.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_join_pairs: u64,
    pub max_sort_rows: u64,
}

/// Refuses `plan` when it is over `budget`; see the module documentation.
pub fn check(plan: &Arc<dyn ExecutionPlan>, budget: &Budget) -> Result<(), QueryError> {
    let stats = StatisticsContext::new();
    rows_bound(plan, budget, &stats).map(|_| ())
}

/// An upper bound of the rows `plan` produces, checking every operator on the way.
fn rows_bound(
    plan: &Arc<dyn ExecutionPlan>,
    budget: &Budget,
    stats: &StatisticsContext,
) -> Result<u64, QueryError> {
    let any: &dyn ExecutionPlan = plan.as_ref();
    let children = plan.children();
    let mut inputs = Vec::with_capacity(children.len());
    for child in &children {
        inputs.push(rows_bound(child, budget, stats)?);
    }
    let known = exact_rows(plan, stats);
    let widest = inputs.iter().copied().max().unwrap_or(0);
    let mut bound = if children.is_empty() {
        // A leaf: a scan's row count (from the files' metadata), or one row of VALUES.
        known.unwrap_or(1)
    } else if any.is::<CrossJoinExec>() || any.is::<NestedLoopJoinExec>() {
        let pairs = inputs.iter().fold(1u64, |acc, r| acc.saturating_mul(*r));
        if pairs > budget.max_join_pairs {
            let kind = if any.is::<CrossJoinExec>() {
                "cross join"
            } else {
                "nested-loop join (a join without an equality condition)"
            };
            return Err(QueryError::OverLimit(format!(
                "the query's {kind} would compare about {pairs} row pairs ({} × {}); at \
                 most {} are allowed for your tier (limits.max_join_pairs): join on equal \
                 keys, filter the inputs first, or aggregate before joining",
                inputs.first().copied().unwrap_or(0),
                inputs.get(1).copied().unwrap_or(0),
                budget.max_join_pairs
            )));
        }
        pairs
    } else if any.is::<HashJoinExec>() {
        // An equi-join: as many rows as its larger side for key joins; many-to-many joins
        // stream their output and stop at the deadline.
        widest
    } else if any.is::<UnionExec>() {
        inputs.iter().fold(0u64, |acc, r| acc.saturating_add(*r))
    } else {
        widest
    };
    if let Some(sort) = any.downcast_ref::<SortExec>()
        && sort.fetch().is_none()
    {
        over_sort_budget("sort (ORDER BY without a LIMIT)", widest, budget)?;
    }
    // A window that buffers its whole input (the streaming, bounded-memory kind is not).
    if any.is::<WindowAggExec>() {
        over_sort_budget("window function", widest, budget)?;
    }
    if let Some(known) = known {
        bound = bound.min(known);
    }
    if let Some(fetch) = plan.fetch() {
        bound = bound.min(fetch as u64);
    }
    Ok(bound)
}

fn over_sort_budget(what: &str, rows: u64, budget: &Budget) -> Result<(), QueryError> {
    if rows > budget.max_sort_rows {
        return Err(QueryError::OverLimit(format!(
            "the query's {what} would order about {rows} rows; at most {} are allowed for \
             your tier (limits.max_sort_rows): filter first, or add a LIMIT",
            budget.max_sort_rows
        )));
    }
    Ok(())
}

/// The rows `plan` produces when its statistics know them exactly.
fn exact_rows(plan: &Arc<dyn ExecutionPlan>, context: &StatisticsContext) -> Option<u64> {
    let stats = context
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .ok()?;
    stats
        .num_rows
        .is_exact()
        .unwrap_or(false)
        .then(|| stats.num_rows.get_value().map(|n| *n as u64))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn check_sql(sql: &str, budget: Budget) -> Result<(), String> {
        let ctx = SessionContext::new();
        ctx.sql(
            "CREATE TABLE t AS SELECT * FROM (VALUES (1), (2), (3), (4), (5), (6), (7), (8), \
             (9), (10)) v(x)",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        check(&plan, &budget).map_err(|e| e.to_string())
    }

    const BUDGET: Budget = Budget {
        max_join_pairs: 1_000,
        max_sort_rows: 50,
    };

    #[tokio::test]
    async fn pair_products_over_the_budget_are_refused_with_the_estimate() {
        // (A bare count(*) of a cross join is answered from the statistics: no join runs.)
        check_sql("SELECT sum(a.x + b.x + c.x) FROM t a, t b, t c", BUDGET)
            .await
            .unwrap();
        let err = check_sql(
            "SELECT sum(a.x + b.x + c.x + d.x) FROM t a, t b, t c, t d",
            BUDGET,
        )
        .await
        .unwrap_err();
        assert!(err.contains("10000 row pairs"), "{err}");
        let err = check_sql(
            "SELECT sum(a.x) FROM t a JOIN t b ON a.x < b.x JOIN t c ON b.x < c.x \
             JOIN t d ON c.x <> d.x",
            BUDGET,
        )
        .await
        .unwrap_err();
        assert!(err.contains("nested-loop join"), "{err}");
        // Equi-joins and limited inputs are not products.
        check_sql(
            "SELECT count(*) FROM t a JOIN t b ON a.x = b.x JOIN t c ON b.x = c.x \
             JOIN t d ON c.x = d.x",
            BUDGET,
        )
        .await
        .unwrap();
        check_sql(
            "SELECT sum(a.x + d.x) FROM (SELECT * FROM t LIMIT 1) a, t b, t c, t d",
            BUDGET,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn full_sorts_and_windows_over_the_budget_are_refused() {
        let err = check_sql("SELECT a.x FROM t a, t b ORDER BY 1", BUDGET)
            .await
            .unwrap_err();
        assert!(err.contains("100 rows"), "{err}");
        let err = check_sql(
            "SELECT row_number() OVER (ORDER BY a.x) FROM t a, t b",
            BUDGET,
        )
        .await
        .unwrap_err();
        // The window's input is sorted first: whichever is met first refuses it.
        assert!(err.contains("100 rows"), "{err}");
        // A top-N keeps only its N rows.
        check_sql("SELECT a.x FROM t a, t b ORDER BY 1 LIMIT 5", BUDGET)
            .await
            .unwrap();
    }
}
