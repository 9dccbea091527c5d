//! What a plan reads, taken from the plan itself (its table scans), not from the request text:
//! the `X-Dataset-Versions` header, the `ETag`, and later the audit record use it.

use crate::catalog_provider::{DatasetTable, TableSnapshot};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan, Operator};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A dataset a plan reads, at its version (`None`: no data yet), in its reader's view.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DatasetRead {
    /// `department.dataset`.
    pub name: String,
    pub version: Option<i64>,
    /// How the reader saw its columns ([`TableSnapshot::view_tag`]).
    pub view: String,
}

impl DatasetRead {
    pub fn of(snapshot: &TableSnapshot) -> Self {
        Self {
            name: snapshot.qualified_name(),
            version: snapshot.version,
            view: snapshot.view_tag(),
        }
    }
}

/// Calls `f` with the snapshot of every dataset scan in `plan`, subqueries included.
fn for_each_scan(plan: &LogicalPlan, mut f: impl FnMut(&TableSnapshot)) {
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && let Some(table) = provider.downcast_ref::<DatasetTable>()
        {
            f(table.snapshot());
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

/// The datasets `plan` scans (subqueries included), sorted, each once.
pub fn datasets_read(plan: &LogicalPlan) -> Vec<DatasetRead> {
    let mut found = BTreeMap::new();
    for_each_scan(plan, |s| {
        found
            .entry(s.qualified_name())
            .or_insert_with(|| DatasetRead::of(s));
    });
    found.into_values().collect()
}

/// The Parquet bytes of the versions `plan` scans, counted once per scan (a self-join reads its
/// table twice): what decides whether a query is worth distributing.
pub fn bytes_scanned(plan: &LogicalPlan) -> u64 {
    let mut bytes = 0u64;
    for_each_scan(plan, |s| {
        bytes = bytes.saturating_add(s.file_bytes.iter().sum())
    });
    bytes
}

/// The widest rows among the versions `plan` scans: their Parquet bytes per row (compressed,
/// as stored), or 0 when it scans none.
pub fn widest_stored_row(plan: &LogicalPlan) -> u64 {
    let mut widest = 0u64;
    for_each_scan(plan, |s| {
        let rows: u64 = s.file_rows.iter().sum();
        let bytes: u64 = s.file_bytes.iter().sum();
        widest = widest.max(bytes / rows.max(1));
    });
    widest
}

/// Whether `plan` is recursive (`WITH RECURSIVE`): its iterations are counted by a node of the
/// gateway's own ([`crate::recursion`]), so it always runs in the gateway.
pub fn is_recursive(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        found |= matches!(node, LogicalPlan::RecursiveQuery(_));
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Whether running `plan` again gives the same answer as long as the versions it reads are the
/// same: it reads datasets only (not `information_schema`, which changes with the catalog)
/// and calls no function that is not immutable (`now()`, `random()`, `uuid()`,
/// `current_date`). Only such answers get an entity tag: a 304 for anything else would keep
/// a client on a stale answer.
pub fn is_repeatable(plan: &LogicalPlan) -> bool {
    use datafusion::logical_expr::Volatility;
    let mut repeatable = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            repeatable &= source_as_provider(&scan.source)
                .is_ok_and(|p| p.downcast_ref::<DatasetTable>().is_some());
        }
        let _ = node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    repeatable &= f.func.signature().volatility == Volatility::Immutable;
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(if repeatable {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    repeatable
}

/// Whether `plan` looks a row up by primary key (`pk = literal` or `pk IN (literals)` on a
/// dataset whose key that is): such a query is worth decoding its filter column first.
pub fn looks_up_primary_key(plan: &LogicalPlan) -> bool {
    let mut keys = std::collections::HashSet::new();
    for_each_scan(plan, |s| keys.extend(s.primary_key.iter().cloned()));
    if keys.is_empty() {
        return false;
    }
    let is_key = |e: &Expr| matches!(e, Expr::Column(c) if keys.contains(&c.name));
    let is_literal = |e: &Expr| matches!(e, Expr::Literal(..) | Expr::Placeholder(_));
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Filter(filter) = node {
            let _ = filter.predicate.apply(|e| {
                found |= match e {
                    Expr::BinaryExpr(b) if b.op == Operator::Eq => {
                        (is_key(&b.left) && is_literal(&b.right))
                            || (is_literal(&b.left) && is_key(&b.right))
                    }
                    Expr::InList(l) => {
                        !l.negated && is_key(&l.expr) && l.list.iter().all(is_literal)
                    }
                    _ => false,
                };
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Whether `plan` keeps the first few rows of a sort (`ORDER BY ... LIMIT n`, a top-N): its
/// scan is worth filtering as it decodes, so the other columns are decoded only for rows that
/// can still enter the top N (DataFusion's dynamic filter from the running top N).
pub fn keeps_top_rows(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Limit(limit) = node {
            let mut input = limit.input.as_ref();
            while let LogicalPlan::Projection(p) = input {
                input = p.input.as_ref();
            }
            let small = matches!(
                limit.get_fetch_type(),
                Ok(datafusion::logical_expr::FetchType::Literal(Some(n))) if n <= 10_000
            );
            found |= small && matches!(input, LogicalPlan::Sort(_));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The `X-Dataset-Versions` value: `dept.name=V[, ...]` (0 for a dataset with no data yet).
pub fn versions_header(read: &[DatasetRead]) -> String {
    read.iter()
        .map(|r| format!("{}={}", r.name, r.version.unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A weak entity tag over the normalised request (`parts`: what was asked, in what format, by
/// whom as far as it changes the bytes) and the versions read, each in the view it was read
/// in. Versions are immutable and views named in full, so the same tag means the same answer.
pub fn etag(parts: &[&str], read: &[DatasetRead]) -> String {
    let mut h = Sha256::new();
    for p in parts
        .iter()
        .copied()
        .chain(read.iter().map(|r| r.view.as_str()))
    {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.update(versions_header(read).as_bytes());
    let digest = h.finalize();
    format!("W/\"{}\"", hex::encode(&digest[..16]))
}

/// Whether an `If-None-Match` value matches `tag` (weak comparison, `*` matches anything).
pub fn if_none_match(header: &str, tag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    header
        .split(',')
        .any(|candidate| candidate.trim() == "*" || bare(candidate) == bare(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_change_with_versions_and_parts() {
        let read = |version, view: &str| {
            [DatasetRead {
                name: "a.b".into(),
                version: Some(version),
                view: view.into(),
            }]
        };
        let (v1, v2) = (read(1, "all"), read(2, "all"));
        assert_eq!(etag(&["q", "json"], &v1), etag(&["q", "json"], &v1));
        assert_ne!(etag(&["q", "json"], &v1), etag(&["q", "json"], &v2));
        // The same version in another view (a column masked since) is another answer.
        let masked = read(1, "restricted|c:Masked:Some(Redact)");
        assert_ne!(etag(&["q", "json"], &v1), etag(&["q", "json"], &masked));
        assert_ne!(etag(&["q", "json"], &v1), etag(&["q", "csv"], &v1));
        // Parts are length-framed: moving a boundary changes the tag.
        assert_ne!(etag(&["ab", "c"], &v1), etag(&["a", "bc"], &v1));
        assert_eq!(versions_header(&v1), "a.b=1");
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let tag = "W/\"abc\"";
        assert!(if_none_match("\"abc\"", tag));
        assert!(if_none_match("W/\"x\", W/\"abc\"", tag));
        assert!(if_none_match("*", tag));
        assert!(!if_none_match("W/\"abd\"", tag));
    }
}
