//! Plans sent to workers carry no values from the data.
//!
//! A Parquet scan's statistics hold each column's minimum and maximum — of every column of the
//! table, masked and private ones included — and DataFusion serializes them with the scan. By the
//! time a plan is cut into stages the optimizer has used them; [`ValuelessStatistics`], the last
//! physical rule of a distributed session, blanks the values (min, max, sum) and keeps the
//! counts (rows, bytes, nulls, distinct values), so no stored value travels to a worker in a
//! plan, and none comes back but what the plan computes.

use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// Blanks the values in the statistics of every file scan of a plan.
#[derive(Debug, Default)]
pub struct ValuelessStatistics;

/// `s` without min, max and sum.
pub fn valueless(s: &Statistics) -> Statistics {
    let mut s = s.clone();
    for c in &mut s.column_statistics {
        c.min_value = Precision::Absent;
        c.max_value = Precision::Absent;
        c.sum_value = Precision::Absent;
    }
    s
}

impl PhysicalOptimizerRule for ValuelessStatistics {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            let groups = config
                .file_groups
                .iter()
                .map(|g| {
                    let files = g
                        .files()
                        .iter()
                        .cloned()
                        .map(|mut f| {
                            f.statistics = f.statistics.map(|s| Arc::new(valueless(&s)));
                            f
                        })
                        .collect();
                    let mut group = FileGroup::new(files);
                    if let Some(s) = g.file_statistics(None) {
                        group = group.with_statistics(Arc::new(valueless(s)));
                    }
                    group
                })
                .collect();
            let scan = FileScanConfigBuilder::from(config.clone())
                .with_statistics(valueless(&config.statistics()))
                .with_file_groups(groups)
                .build();
            let exec = exec.clone().with_data_source(Arc::new(scan));
            Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "datagate_valueless_statistics"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
