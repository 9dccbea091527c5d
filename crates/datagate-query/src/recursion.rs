//! A bound on recursive queries: `WITH RECURSIVE` runs its recursive term once per iteration
//! until an iteration yields no rows, which a query can arrange never to happen. How many
//! iterations a query will need cannot be known before it runs, so [`limit_recursion`] wraps
//! the recursive term of every `RecursiveQueryExec` in an [`IterationLimit`] that counts the
//! term's executions (one per iteration) and fails the query with
//! [`QueryError::OverLimit`] (422) past `limits.max_recursion_depth` (times the caller's tier
//! `query_budget`).

use crate::error::QueryError;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// `plan` with the recursive term of every recursive query bounded to `max` iterations.
pub fn limit_recursion(
    plan: Arc<dyn ExecutionPlan>,
    max: u64,
) -> Result<Arc<dyn ExecutionPlan>, QueryError> {
    plan.transform_up(|node| {
        let Some(recursive) = node.downcast_ref::<RecursiveQueryExec>() else {
            return Ok(Transformed::no(node));
        };
        let (base, term) = (
            Arc::clone(recursive.static_term()),
            Arc::clone(recursive.recursive_term()),
        );
        let limited = Arc::new(IterationLimit {
            input: term,
            max,
            runs: Arc::default(),
        });
        #[expect(deprecated)]
        let node = node.with_new_children(vec![base, limited])?;
        Ok(Transformed::yes(node))
    })
    .map(|t| t.data)
    .map_err(|e| QueryError::from_datafusion(e, 0))
}

/// Passes its input through, failing once it has been executed more than `max` times.
#[derive(Debug)]
pub struct IterationLimit {
    input: Arc<dyn ExecutionPlan>,
    max: u64,
    /// Shared by the copies DataFusion makes of this node between iterations.
    runs: Arc<AtomicU64>,
}

impl DisplayAs for IterationLimit {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "IterationLimit: max={}", self.max)
    }
}

impl ExecutionPlan for IterationLimit {
    fn name(&self) -> &str {
        "IterationLimit"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("IterationLimit needs its input".into()))?;
        Ok(Arc::new(Self {
            input,
            max: self.max,
            runs: Arc::clone(&self.runs),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let runs = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        if runs > self.max {
            return Err(DataFusionError::External(Box::new(QueryError::OverLimit(
                format!(
                    "the recursive query ran more than {} iterations, the most allowed for \
                     your tier (limits.max_recursion_depth); give its recursion a stop",
                    self.max
                ),
            ))));
        }
        self.input.execute(partition, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn run(sql: &str, max: u64) -> Result<usize, String> {
        let ctx = SessionContext::new();
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let plan = limit_recursion(plan, max).map_err(|e| e.to_string())?;
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .map_err(|e| QueryError::from_datafusion(e, 0).to_string())?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn recursion_stops_at_its_budget_and_runs_within_it() {
        let endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
                       SELECT count(*) FROM r";
        let err = run(endless, 50).await.unwrap_err();
        assert!(err.contains("more than 50 iterations"), "{err}");
        let bounded = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r \
                       WHERE n < 20) SELECT n FROM r";
        assert_eq!(run(bounded, 50).await, Ok(20));
        assert!(run(bounded, 10).await.is_err());
    }
}
