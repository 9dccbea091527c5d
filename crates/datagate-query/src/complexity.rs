//! Bounds on a statement's size, checked on the parsed text before anything is planned.
//!
//! Planning is not free and cannot be interrupted: DataFusion's boolean rewrites grow
//! exponentially with nested `NOT`s (46 levels plan for 13 s), a 500-table join plans for most
//! of a minute, 2,000 CTEs take gigabytes. So a statement (or a `rows` `where`) is measured
//! first and refused with 400 when it holds more than [`Complexity`] allows:
//! - logic depth: `NOT`, `AND`, `OR`, `XOR`, `CASE` and `IS [NOT] TRUE/FALSE` nested in one
//!   another — a run of the same `AND` (or `OR`) counts once, so long flat conditions pass;
//! - expression nodes, function arguments and list items included;
//! - table references (datasets, subqueries' tables and CTE references alike), and CTEs;
//! - window functions (more than 128);
//! - `CUBE` over more than 12 expressions (2^n grouping sets, expanded at planning);
//! - `SELECT` blocks: 3,000 `SELECT 1` joined by `UNION ALL` (33 KB of text) planned for 21 s,
//!   the time growing with the square of their number.

use crate::error::{Position, QueryError};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName,
    Query, SetExpr, Spanned, Statement, UnaryOperator, Value, Visit, Visitor,
};
use std::ops::ControlFlow;

/// What a statement may hold (config `[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Complexity {
    pub max_logic_depth: usize,
    pub max_expr_nodes: usize,
    pub max_tables: usize,
    pub max_ctes: usize,
    pub max_selects: usize,
}

/// Measures `statement` against `limits`.
pub fn check_statement(statement: &Statement, limits: &Complexity) -> Result<(), QueryError> {
    run(statement, limits)
}

/// Measures one expression (a `rows` `where`) against `limits`.
pub fn check_expr(expr: &Expr, limits: &Complexity) -> Result<(), QueryError> {
    run(expr, limits)
}

fn run(node: &impl Visit, limits: &Complexity) -> Result<(), QueryError> {
    let mut meter = Meter {
        limits,
        nodes: 0,
        tables: 0,
        ctes: 0,
        selects: 0,
        windows: 0,
        logic: Vec::new(),
        depth: 0,
    };
    match node.visit(&mut meter) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The kind of logic node an expression is, for the depth count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logic {
    /// Not a logic node (parentheses, comparisons, values...): transparent.
    None,
    And,
    Or,
    /// `NOT`, `XOR`, `CASE`, `IS TRUE`...: every one counts.
    Other,
}

fn logic_of(e: &Expr) -> Logic {
    match e {
        Expr::BinaryOp {
            op: BinaryOperator::And,
            ..
        } => Logic::And,
        Expr::BinaryOp {
            op: BinaryOperator::Or,
            ..
        } => Logic::Or,
        Expr::BinaryOp {
            op: BinaryOperator::Xor,
            ..
        }
        | Expr::UnaryOp {
            op: UnaryOperator::Not,
            ..
        }
        | Expr::Case { .. }
        | Expr::IsTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNotFalse(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotUnknown(_) => Logic::Other,
        _ => Logic::None,
    }
}

struct Meter<'a> {
    limits: &'a Complexity,
    nodes: usize,
    tables: usize,
    ctes: usize,
    selects: usize,
    windows: usize,
    /// The logic kind of every open expression, innermost last.
    logic: Vec<(Logic, bool)>,
    depth: usize,
}

impl Meter<'_> {
    fn refuse(&self, what: String, at: Option<Position>) -> ControlFlow<QueryError> {
        ControlFlow::Break(QueryError::invalid_at(what, at))
    }
}

fn position_of(e: &impl Spanned) -> Option<Position> {
    let start = e.span().start;
    (start.line > 0).then_some(Position {
        line: start.line,
        column: start.column,
    })
}

impl Visitor for Meter<'_> {
    type Break = QueryError;

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<QueryError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_expr_nodes {
            return self.refuse(
                format!(
                    "the statement has more than {} expression nodes (limits.max_expr_nodes); \
                     split it or shorten its lists",
                    self.limits.max_expr_nodes
                ),
                position_of(expr),
            );
        }
        if let Expr::Function(f) = expr
            && let Some(e) = too_many_centroids(f)
        {
            return ControlFlow::Break(e);
        }
        if let Expr::Function(f) = expr
            && f.over.is_some()
        {
            self.windows += 1;
            if self.windows > MAX_WINDOW_FUNCTIONS {
                return self.refuse(
                    format!(
                        "the statement calls more than {MAX_WINDOW_FUNCTIONS} window functions \
                         (OVER ...); split it"
                    ),
                    position_of(expr),
                );
            }
        }
        if let Expr::Cube(sets) = expr
            && sets.len() > MAX_CUBE_SETS
        {
            return self.refuse(
                format!(
                    "CUBE of {} expressions makes 2^{} grouping sets; at most {MAX_GROUPING_SETS} \
                     (CUBE of {MAX_CUBE_SETS}) are planned: list the GROUPING SETS you need",
                    sets.len(),
                    sets.len()
                ),
                position_of(expr),
            );
        }
        let kind = logic_of(expr);
        // The nearest enclosing logic node decides whether this one adds a level.
        let parent = self
            .logic
            .iter()
            .rev()
            .find(|(k, _)| *k != Logic::None)
            .map(|(k, _)| *k);
        let counts = match kind {
            Logic::None => false,
            Logic::And | Logic::Or => parent != Some(kind),
            Logic::Other => true,
        };
        if counts {
            self.depth += 1;
            if self.depth > self.limits.max_logic_depth {
                return self.refuse(
                    format!(
                        "logic (NOT, AND/OR alternations, CASE) is nested more than {} levels \
                         deep (limits.max_logic_depth); simplify the condition",
                        self.limits.max_logic_depth
                    ),
                    position_of(expr),
                );
            }
        }
        self.logic.push((kind, counts));
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<QueryError> {
        if let Some((_, true)) = self.logic.pop() {
            self.depth -= 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<QueryError> {
        self.tables += 1;
        if self.tables > self.limits.max_tables {
            return self.refuse(
                format!(
                    "the statement names more than {} tables (limits.max_statement_tables)",
                    self.limits.max_tables
                ),
                position_of(relation),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<QueryError> {
        // The SELECTs of this query's body; parenthesized queries in it are visited on their
        // own. Walked with a stack: a chain of set operations is as deep as it is long.
        let mut bodies = vec![query.body.as_ref()];
        while let Some(body) = bodies.pop() {
            match body {
                SetExpr::SetOperation { left, right, .. } => {
                    bodies.push(left);
                    bodies.push(right);
                }
                SetExpr::Select(_) | SetExpr::Table(_) | SetExpr::Values(_) => self.selects += 1,
                _ => {}
            }
        }
        if self.selects > self.limits.max_selects {
            return self.refuse(
                format!(
                    "the statement holds more than {} SELECT blocks (limits.max_statement_selects)",
                    self.limits.max_selects
                ),
                None,
            );
        }
        if let Some(with) = &query.with {
            self.ctes += with.cte_tables.len();
            if self.ctes > self.limits.max_ctes {
                return self.refuse(
                    format!(
                        "the statement defines more than {} common table expressions \
                         (limits.max_statement_ctes)",
                        self.limits.max_ctes
                    ),
                    None,
                );
            }
        }
        ControlFlow::Continue(())
    }
}

/// Window functions one statement may call: planning grows with about the cube of their
/// number — 100 planned in 0.14 s, 300 in 2.3 s and 330 MB, 1,000 past the 30 s timeout in
/// 3 GB, on 1,200 rows.
pub const MAX_WINDOW_FUNCTIONS: usize = 128;

/// Grouping sets one `GROUP BY` may make: the engine's own bound for `GROUPING SETS`, `ROLLUP`
/// and their combinations, which it does not apply to a `CUBE` alone — `CUBE` of 20 columns
/// (2^20 sets) planned for 12 s in 1 GB, of 24 past the 30 s timeout.
pub const MAX_GROUPING_SETS: usize = 4096;

/// The widest `CUBE` within [`MAX_GROUPING_SETS`].
const MAX_CUBE_SETS: usize = MAX_GROUPING_SETS.ilog2() as usize;

/// Centroids an `approx_percentile_cont` may keep; the engine allocates them up front, so a
/// huge count aborts the process or overflows ("capacity overflow").
pub const MAX_CENTROIDS: u64 = 100_000;

/// `approx_percentile_cont(x, p, centroids)` (and `_with_weight(x, w, p, centroids)`) with
/// a centroid count over [`MAX_CENTROIDS`].
fn too_many_centroids(f: &Function) -> Option<QueryError> {
    let name = f.name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    let at = match name.as_str() {
        "approx_percentile_cont" => 2,
        "approx_percentile_cont_with_weight" => 3,
        _ => return None,
    };
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) = list.args.get(at)
    else {
        return None;
    };
    let Value::Number(n, _) = &v.value else {
        return None;
    };
    let over = n.parse::<f64>().map_or(true, |c| c > MAX_CENTROIDS as f64);
    over.then(|| {
        QueryError::OverLimit(format!(
            "{name}() may keep at most {MAX_CENTROIDS} centroids, not {n}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    const LIMITS: Complexity = Complexity {
        max_logic_depth: 16,
        max_expr_nodes: 4096,
        max_tables: 32,
        max_ctes: 32,
        max_selects: 64,
    };

    fn check(sql: &str) -> Result<(), String> {
        let statement = Parser::new(&GenericDialect {})
            .with_recursion_limit(10_000)
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statement())
            .map_err(|e| e.to_string())?;
        check_statement(&statement, &LIMITS).map_err(|e| e.to_string())
    }

    #[test]
    fn nested_logic_is_refused_but_long_flat_conditions_pass() {
        let nots = format!("SELECT {}true{}", "NOT (".repeat(17), ")".repeat(17));
        assert!(check(&nots).unwrap_err().contains("max_logic_depth"));
        let ok_nots = format!("SELECT {}true{}", "NOT (".repeat(16), ")".repeat(16));
        check(&ok_nots).unwrap();
        let flat = format!("SELECT 1 WHERE {}", vec!["1 = 1"; 500].join(" AND "));
        check(&flat).unwrap();
        let mut alternating = "x = 1".to_string();
        for i in 0..20 {
            let op = if i % 2 == 0 { "AND" } else { "OR" };
            alternating = format!("({alternating} {op} y = {i})");
        }
        let err = check(&format!("SELECT 1 FROM t WHERE {alternating}")).unwrap_err();
        assert!(err.contains("max_logic_depth"), "{err}");
    }

    #[test]
    fn more_than_128_window_functions_are_refused() {
        let windows = |n: usize| {
            let calls: Vec<String> = (0..n)
                .map(|i| format!("row_number() OVER (ORDER BY x + {i})"))
                .collect();
            format!("SELECT {} FROM t", calls.join(", "))
        };
        assert!(check(&windows(128)).is_ok());
        let e = check(&windows(129)).unwrap_err();
        assert!(e.contains("more than 128 window functions"), "{e}");
        // Aggregates without OVER are not window functions.
        let sums: Vec<String> = (0..500).map(|i| format!("sum(x + {i})")).collect();
        assert!(check(&format!("SELECT {} FROM t", sums.join(", "))).is_ok());
    }

    #[test]
    fn a_cube_of_more_than_4096_grouping_sets_is_refused() {
        let cube = |n: usize| {
            let columns: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
            format!(
                "SELECT count(*) FROM t GROUP BY CUBE({})",
                columns.join(", ")
            )
        };
        assert!(check(&cube(12)).is_ok());
        let e = check(&cube(13)).unwrap_err();
        assert!(
            e.contains("CUBE of 13 expressions makes 2^13 grouping sets"),
            "{e}"
        );
        assert!(check(&cube(60)).is_err());
    }

    #[test]
    fn many_select_blocks_are_refused_however_they_are_joined() {
        let unions = vec!["SELECT 1"; 65].join(" UNION ALL ");
        let e = check(&unions).unwrap_err();
        assert!(e.contains("more than 64 SELECT blocks"), "{e}");
        assert!(check(&vec!["SELECT 1"; 64].join(" UNION ALL ")).is_ok());
        // Parenthesized branches, INTERSECT and subqueries in expressions count alike.
        let mixed = format!(
            "SELECT 1 WHERE {}",
            vec!["1 IN ((SELECT 1) INTERSECT (SELECT 1))"; 33].join(" OR ")
        );
        assert!(check(&mixed).unwrap_err().contains("SELECT blocks"));
        // A chain far longer than the limit is measured without deep recursion.
        assert!(check(&vec!["SELECT 1"; 3000].join(" UNION ")).is_err());
    }

    #[test]
    fn many_nodes_tables_and_ctes_are_refused() {
        let args = format!("SELECT concat({})", vec!["a"; 5000].join(", "));
        assert!(check(&args).unwrap_err().contains("max_expr_nodes"));
        let tables = format!(
            "SELECT count(*) FROM {}",
            (0..33)
                .map(|i| format!("d.t t{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(check(&tables).unwrap_err().contains("max_statement_tables"));
        let ctes = format!(
            "WITH {} SELECT 1",
            (0..33)
                .map(|i| format!("c{i} AS (SELECT 1)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(check(&ctes).unwrap_err().contains("max_statement_ctes"));
        let centroids = "SELECT approx_percentile_cont(x, 0.5, 9223372036854775807) FROM t";
        assert!(check(centroids).unwrap_err().contains("centroids"));
        check("SELECT approx_percentile_cont(x, 0.5, 100) FROM t").unwrap();
        check("WITH a AS (SELECT * FROM d.t) SELECT * FROM a JOIN d.u ON a.x = u.x").unwrap();
    }
}
