//! Top-N queries (`ORDER BY c [DESC] LIMIT n` over one dataset) that read only the pages that
//! can hold the answer.
//!
//! Every data page of a column carries its minimum and maximum in the file's page index, and for
//! the types handled here (signed integers, decimals, dates, timestamps) those are values of the page's
//! rows, not bounds. So for `ORDER BY c DESC LIMIT n`, the n-th largest page maximum over the
//! version is a value `t` that at least n rows reach: the answer's rows all have `c >= t`. The
//! query is planned with that condition added (`c <= t` ascending; `OR c IS NULL` when nulls sort
//! first), and the page index then lets the scan skip every page whose maximum is below `t` —
//! on a 10M-row version, all but about n of the column's pages. The answer is the same rows in
//! the same order: only rows that cannot be among them are left out (ties at `t` are kept, and
//! later sort keys still decide among them).
//!
//! Declined (the query runs as written) for anything else: a filter, a join, an aggregate, a
//! column seen through a mask, a float (NaN sorts above every number and is in no statistic), a
//! version whose pages are fewer than n, or a file without a page index.

use crate::catalog_provider::DatasetTable;
use crate::pages::PageServer;
use arrow::array::{Array, ArrayRef};
use arrow::compute::{SortOptions, concat, sort_to_indices};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, FetchType, Filter, LogicalPlan, SkipType, col, lit};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use std::sync::Arc;

/// The most rows a seeded top-N may ask for; larger ones gain little (every page holds a row).
const MAX_ROWS: usize = 10_000;

/// `plan` with the condition that lets its scan skip pages, when it is a top-N this module
/// handles; otherwise `plan` as it was.
pub async fn seed(plan: LogicalPlan, pages: &PageServer) -> LogicalPlan {
    let Some(target) = find(&plan) else {
        return plan;
    };
    let Some(threshold) = threshold(&target, pages).await else {
        return plan;
    };
    add_filter(plan.clone(), &target, threshold).unwrap_or(plan)
}

/// A top-N this module can seed: the dataset's column the rows are ordered by first.
struct Target {
    table: crate::catalog_provider::TableSnapshot,
    column: String,
    data_type: DataType,
    rows: usize,
    descending: bool,
    nulls_first: bool,
}

/// Finds `(Projection | Limit)* → Sort → (Projection | SubqueryAlias)* → TableScan` from the
/// root down, with a limit among the first nodes (the one nearest the sort decides how many rows
/// the sort must give: limits above it, such as the API's row cap, only take fewer of them), the
/// first sort key a column the projections below the sort pass through unchanged.
fn find(plan: &LogicalPlan) -> Option<Target> {
    let mut node = plan;
    let mut nearest = None;
    let sort = loop {
        match node {
            LogicalPlan::Projection(p) => node = p.input.as_ref(),
            LogicalPlan::Limit(limit) => {
                nearest = Some(limit);
                node = limit.input.as_ref();
            }
            LogicalPlan::Sort(sort) => break sort,
            _ => return None,
        }
    };
    let limit = nearest?;
    let skip = match limit.get_skip_type().ok()? {
        SkipType::Literal(s) => s,
        SkipType::UnsupportedExpr => return None,
    };
    let FetchType::Literal(Some(fetch)) = limit.get_fetch_type().ok()? else {
        return None;
    };
    let mut rows = skip.checked_add(fetch)?;
    if let Some(f) = sort.fetch {
        rows = rows.min(f);
    }
    if rows == 0 || rows > MAX_ROWS {
        return None;
    }
    let first = sort.expr.first()?;
    let Expr::Column(c) = &first.expr else {
        return None;
    };
    let mut name = c.name.clone();
    let mut node = sort.input.as_ref();
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                // The column the projection's output `name` is, if it passes one through.
                let (expr, _) = p
                    .expr
                    .iter()
                    .zip(p.schema.fields())
                    .find(|(_, f)| f.name() == &name)?;
                let inner = match expr {
                    Expr::Alias(a) => a.expr.as_ref(),
                    e => e,
                };
                let Expr::Column(source) = inner else {
                    return None;
                };
                name = source.name.clone();
                node = p.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
            LogicalPlan::TableScan(scan) => {
                if !scan.filters.is_empty() || scan.fetch.is_some() {
                    return None;
                }
                let provider = source_as_provider(&scan.source).ok()?;
                let table = provider.downcast_ref::<DatasetTable>()?.snapshot().clone();
                let column = table.columns.iter().find(|c| c.name == name)?;
                let data_type = column.data_type.to_arrow();
                if !seedable(&data_type) || table.file_urls.is_empty() {
                    return None;
                }
                return Some(Target {
                    table,
                    column: name,
                    data_type,
                    rows,
                    descending: !first.asc,
                    nulls_first: first.nulls_first,
                });
            }
            _ => return None,
        }
    }
}

/// Types whose page statistics are values of the page (never truncated, no NaN), compared as
/// the sort compares them (unsigned integers, stored as signed Parquet integers, are left out).
fn seedable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Date32
            | DataType::Date64
            | DataType::Decimal128(..)
            | DataType::Timestamp(..)
    )
}

/// The n-th largest page maximum (n-th smallest page minimum, ascending) over the version's
/// files; `None` when a file has no page index for the column or the pages are fewer than n.
async fn threshold(target: &Target, pages: &PageServer) -> Option<ScalarValue> {
    // Cached after a version's first query; on an object store, the files' footers are read
    // at once rather than one round trip after another.
    let files =
        futures::future::try_join_all(target.table.file_urls.iter().map(|url| pages.metadata(url)))
            .await
            .ok()?;
    let mut bounds: Vec<ArrayRef> = Vec::with_capacity(files.len());
    for metadata in &files {
        let schema = metadata.schema();
        let field = schema.field_with_name(&target.column).ok()?;
        if field.data_type() != &target.data_type {
            return None;
        }
        let parquet = metadata.metadata();
        let (Some(index), Some(offsets)) = (parquet.column_index(), parquet.offset_index()) else {
            return None;
        };
        let converter =
            StatisticsConverter::try_new(&target.column, schema, metadata.parquet_schema()).ok()?;
        let groups: Vec<usize> = (0..parquet.num_row_groups()).collect();
        let values = if target.descending {
            converter.data_page_maxes(index, offsets, &groups)
        } else {
            converter.data_page_mins(index, offsets, &groups)
        };
        bounds.push(values.ok()?);
    }
    let all = concat(&bounds.iter().map(|a| a.as_ref()).collect::<Vec<_>>()).ok()?;
    // A page without a statistic (all null, or none written) is left out: it vouches for nothing.
    if all.len() - all.null_count() < target.rows {
        return None;
    }
    let order = SortOptions {
        descending: target.descending,
        nulls_first: false,
    };
    let indices = sort_to_indices(&all, Some(order), Some(target.rows)).ok()?;
    let nth = indices.value(target.rows - 1) as usize;
    ScalarValue::try_from_array(&all, nth).ok()
}

/// `plan` with `c >= t` (or `c <= t`; `OR c IS NULL` when nulls come first) over its one scan.
fn add_filter(plan: LogicalPlan, target: &Target, threshold: ScalarValue) -> Option<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let rewritten = plan.transform_up(|node| {
        let LogicalPlan::TableScan(scan) = &node else {
            return Ok(Transformed::no(node));
        };
        let column = col(datafusion::common::Column::new(
            Some(scan.table_name.clone()),
            &target.column,
        ));
        let bound = if target.descending {
            column.clone().gt_eq(lit(threshold.clone()))
        } else {
            column.clone().lt_eq(lit(threshold.clone()))
        };
        let predicate = if target.nulls_first {
            bound.or(column.is_null())
        } else {
            bound
        };
        Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
            predicate,
            Arc::new(node),
        )?)))
    });
    match rewritten {
        Ok(t) => Some(t.data),
        Err(e) => {
            tracing::debug!(error = %e, "top-N seed not applied");
            None
        }
    }
}
