//! Read-only SQL: one `SELECT` (with `WITH`, `UNION`, joins, window functions) or `EXPLAIN` of
//! one, over `department.dataset` tables, planned and verified before anything runs.
//!
//! Three gates, each answering 400: the statement kind is checked on the parsed AST (DDL, DML,
//! `COPY`, `SET`, `PREPARE` and several statements are refused by name); every `FROM` item must
//! be a dataset name, a subquery or a join (no table functions, no file paths or URLs); and the
//! logical plan is verified with `SQLOptions` denying DDL, DML and statements. Tables the
//! caller may not read are not in its session catalog, so naming one fails as "not found".

use crate::complexity::Complexity;
use crate::engine::{QueryLimits, RequestSession};
use crate::error::{Position, QueryError};
use datafusion::common::DataFusionError;
use datafusion::common::ScalarValue;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    CastKind, DataType as SqlType, ExactNumberInfo, Expr, ObjectName, ObjectNamePart, Statement,
    TableFactor, Value, Visit, Visitor, visit_expressions, visit_expressions_mut,
};
use datafusion::sql::sqlparser::parser::ParserError;
use std::ops::ControlFlow;

/// Parses, checks and plans `sql` in `session`; `params` fill `$1..$n`, exactly as many as
/// the statement takes (none when it names no `$n`).
pub async fn plan_sql(
    session: &RequestSession,
    sql: &str,
    params: &[serde_json::Value],
) -> Result<LogicalPlan, QueryError> {
    let values = params
        .iter()
        .enumerate()
        .map(|(i, v)| json_param(i, v))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = plan_template(session, sql).await?;
    check_parameter_count(&plan, values.len(), "given").map_err(|e| e.in_parameter("params"))?;
    bind(plan, values, session.limits.memory_bytes)
}

/// [`plan_sql`] with the parameters as Arrow scalars (Flight SQL binds them as record batches).
/// Without values, `$n` placeholders stay in the plan (a prepared statement's template);
/// with them, exactly as many as the statement takes.
pub async fn plan_sql_values(
    session: &RequestSession,
    sql: &str,
    values: Vec<ScalarValue>,
) -> Result<LogicalPlan, QueryError> {
    let plan = plan_template(session, sql).await?;
    if values.is_empty() {
        return Ok(plan);
    }
    check_parameter_count(&plan, values.len(), "bound")?;
    bind(plan, values, session.limits.memory_bytes)
}

/// The checked logical plan of `sql`, its `$n` placeholders unfilled.
async fn plan_template(session: &RequestSession, sql: &str) -> Result<LogicalPlan, QueryError> {
    let statement = parse_readonly(sql, &session.limits, session.internals)?;
    let plan = session
        .ctx
        .state()
        .statement_to_plan(statement)
        .await
        .map_err(|e| QueryError::from_datafusion(e, session.limits.memory_bytes))?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| QueryError::invalid(format!("only read-only queries are allowed: {e}")))?;
    Ok(plan)
}

fn bind(
    plan: LogicalPlan,
    values: Vec<ScalarValue>,
    memory: u64,
) -> Result<LogicalPlan, QueryError> {
    if values.is_empty() {
        return Ok(plan);
    }
    plan.with_param_values(values)
        .map_err(|e| QueryError::from_datafusion(e, memory).in_parameter("params"))
}

/// The parameters a statement takes: `$1` up to the highest `$n` it names, each with the type
/// the plan infers for it where it infers one (a number the statement skips takes any value).
pub fn parameters_taken(
    plan: &LogicalPlan,
) -> Result<Vec<Option<datafusion::arrow::datatypes::DataType>>, QueryError> {
    let named = plan
        .get_parameter_types()
        .map_err(|e| QueryError::from_datafusion(e, 0))?;
    let mut taken = Vec::new();
    for (name, ty) in named {
        let n = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| QueryError::invalid(format!("parameter {name}: use $1, $2, ...")))?;
        if taken.len() < n {
            taken.resize(n, None);
        }
        taken[n - 1] = ty;
    }
    Ok(taken)
}

/// Refuses `given` values for a statement taking another number of parameters, as PostgreSQL
/// and DuckDB do: a value too many is a client's mistake as much as one too few. `verb` is how
/// the values came (`given` in JSON, `bound` by Flight SQL).
pub fn check_parameter_count(
    plan: &LogicalPlan,
    given: usize,
    verb: &str,
) -> Result<(), QueryError> {
    let taken = parameters_taken(plan)?.len();
    if taken == given {
        return Ok(());
    }
    Err(QueryError::invalid(parameter_count_message(
        taken, given, verb,
    )))
}

/// "the statement takes 2 parameters ($1 to $2); 1 was given".
pub fn parameter_count_message(taken: usize, given: usize, verb: &str) -> String {
    let takes = match taken {
        0 => "no parameters".to_string(),
        1 => "1 parameter ($1)".to_string(),
        n => format!("{n} parameters ($1 to ${n})"),
    };
    let was = match given {
        0 => format!("none was {verb}"),
        1 => format!("1 was {verb}"),
        n => format!("{n} were {verb}"),
    };
    format!("the statement takes {takes}; {was}")
}

/// sqlparser gives no position when the text ends too early ("found: EOF"): the position is
/// then just past the last character, where the missing part belongs. Used for every text the
/// gateway parses as SQL (statements, `where`, `order`).
pub(crate) fn at_end_if_unplaced(e: QueryError, sql: &str) -> QueryError {
    match e {
        QueryError::Invalid {
            message,
            position: None,
            parameter,
        } if message.ends_with("found: EOF") => {
            let line = sql.trim_end().lines().count().max(1);
            let last = sql.trim_end().lines().last().unwrap_or("");
            QueryError::Invalid {
                message,
                position: Some(crate::error::Position {
                    line: u64::try_from(line).unwrap_or(u64::MAX),
                    column: u64::try_from(last.chars().count() + 1).unwrap_or(u64::MAX),
                }),
                parameter,
            }
        }
        other => other,
    }
}

/// The engine's errors about text it could not read as a type (`Cannot cast string 'many' to
/// value of Int32 type`) quote the text but not where it stands. When it is a quoted literal
/// of `sql`, the error gets the literal's position (the first such literal); when it is not,
/// the text came from the data or a parameter, and the message says so: a text column compared
/// with a number casts every stored value to the number's type.
///
/// The engine also refuses to compare a boolean with text at all (`night_line = 'true'`, which
/// PostgreSQL reads as a boolean): the message then says how to write one, at the quoted
/// boolean when the statement has exactly one.
pub fn place_unreadable_literal(e: QueryError, sql: &str) -> QueryError {
    let QueryError::Invalid {
        message,
        position: None,
        parameter,
    } = e
    else {
        return e;
    };
    let literals = || -> Vec<(String, Option<Position>)> {
        use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
        let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
        let tokens = Tokenizer::new(&dialect, sql)
            .tokenize_with_location()
            .unwrap_or_default();
        tokens
            .into_iter()
            .filter_map(|t| match t.token {
                Token::SingleQuotedString(s) => Some((s, crate::filter::position(t.span.start))),
                _ => None,
            })
            .collect()
    };
    let (message, position) = if let Some(text) = unreadable_text(&message) {
        match literals().into_iter().find(|(s, _)| s == text) {
            Some((_, at)) => (message, at),
            None => (
                format!(
                    "{message} ('{text}' is not written in the query: it is a value of the data \
                     or of a parameter; is a text column compared with a number or a date?)"
                ),
                None,
            ),
        }
    } else if compares_boolean_with_text(&message) {
        let booleans: Vec<_> = literals()
            .into_iter()
            .filter(|(s, _)| {
                ScalarValue::from(s.as_str())
                    .cast_to(&arrow::datatypes::DataType::Boolean)
                    .is_ok()
            })
            .collect();
        let at = match booleans.as_slice() {
            [(_, at)] => *at,
            _ => None,
        };
        (
            format!("{message}: write a boolean as true or false, without quotes"),
            at,
        )
    } else {
        (message, None)
    };
    QueryError::Invalid {
        message,
        position,
        parameter,
    }
}

/// Whether an engine message refuses to compare a boolean with text.
fn compares_boolean_with_text(message: &str) -> bool {
    let Some(at) = message.find("Cannot infer common argument type for comparison operation ")
    else {
        return false;
    };
    let operands = &message[at..];
    operands.contains("Boolean") && operands.contains("Utf8")
}

/// The text an engine message says it could not read as a type: the first quoted part of a
/// cast or parse error (`Cannot cast string 'x' ...`, `Error parsing timestamp from 'x'`).
fn unreadable_text(message: &str) -> Option<&str> {
    let start = [
        "Cannot cast string '",
        "Cannot cast value '",
        "Error parsing timestamp from '",
    ]
    .iter()
    .find_map(|p| message.find(p).map(|at| at + p.len()))?;
    // The text may hold quotes itself: arrow quotes it as it is, so it runs to the quote
    // before the message's next words.
    let rest = &message[start..];
    let len = rest.find("' to value of").or_else(|| rest.find("': "))?;
    Some(&rest[..len])
}

/// Parses `sql` into exactly one read-only statement within `limits` (size, nesting and
/// [`complexity`](crate::complexity)), or says why not. Engine settings
/// (`information_schema.df_settings`) are readable only when `internals` (admins).
pub fn parse_readonly(
    sql: &str,
    limits: &QueryLimits,
    internals: bool,
) -> Result<DFStatement, QueryError> {
    let mut statement = parse_statement(sql, limits)?;
    check_statement(&statement, &limits.complexity, internals)?;
    number_question_marks(&mut statement)?;
    exact_big_integers(&mut statement);
    Ok(statement)
}

/// The datasets `sql` names, as `(department, dataset)`, when it names every table as
/// `department.dataset` (or `datagate.department.dataset`): the tables DataFusion's planner
/// will ask its catalog for, and the only ones. `None` when it reads the information schema
/// or names a table otherwise: planning it needs the whole catalog. In order, each once. A
/// statement that does not parse names none (planning refuses it the same way, before any table is asked for).
pub fn tables_named(sql: &str, limits: &QueryLimits) -> Option<Vec<(String, String)>> {
    use datafusion::common::TableReference;
    const INFORMATION_SCHEMA: &str = "information_schema";
    let Ok(statement) = parse_statement(sql, limits) else {
        return Some(Vec::new());
    };
    let (relations, _ctes) =
        datafusion::sql::resolve::resolve_table_references(&statement, true).ok()?;
    let mut named = relations
        .into_iter()
        .map(|r| match r {
            TableReference::Partial { schema, table } if &*schema != INFORMATION_SCHEMA => {
                Some((schema.to_string(), table.to_string()))
            }
            TableReference::Full {
                catalog,
                schema,
                table,
            } if &*catalog == crate::CATALOG_NAME && &*schema != INFORMATION_SCHEMA => {
                Some((schema.to_string(), table.to_string()))
            }
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    named.sort();
    named.dedup();
    Some(named)
}

/// Whether `sql` reads a table of the information schema that DataFusion fills by resolving
/// every table of the catalog (`columns`, for their schemas; `views`, for their definitions).
pub fn reads_every_table(sql: &str, limits: &QueryLimits) -> bool {
    use datafusion::common::TableReference;
    let Ok(statement) = parse_statement(sql, limits) else {
        return false;
    };
    // A query, or the explanation of one: DataFusion takes a `SHOW` to read every table of the
    // information schema, but a `SHOW` is refused before it is planned.
    let mut query = &statement;
    while let DFStatement::Explain(e) = query {
        query = &e.statement;
    }
    if !matches!(query, DFStatement::Statement(s) if matches!(**s, Statement::Query(_))) {
        return false;
    }
    let Ok((relations, _ctes)) =
        datafusion::sql::resolve::resolve_table_references(&statement, true)
    else {
        return false;
    };
    relations.iter().any(|r| {
        let schema = match r {
            TableReference::Partial { schema, .. } => schema,
            TableReference::Full {
                catalog, schema, ..
            } if &**catalog == crate::CATALOG_NAME => schema,
            _ => return false,
        };
        &**schema == "information_schema" && matches!(r.table(), "columns" | "views")
    })
}

/// `sql` parsed as one statement, within the size and nesting limits; nothing checked yet.
fn parse_statement(sql: &str, limits: &QueryLimits) -> Result<DFStatement, QueryError> {
    let (max_bytes, max_depth) = (limits.max_sql_bytes, limits.max_expr_depth);
    if sql.len() > max_bytes {
        return Err(QueryError::invalid(format!(
            "the SQL text is {} bytes; at most {max_bytes} are accepted",
            sql.len()
        )));
    }
    let limit = format!("limits.max_expr_depth = {max_depth}");
    crate::filter::check_nesting(
        sql,
        max_depth * 16,
        limits.complexity.max_logic_depth,
        &limit,
    )?;
    let mut statements = DFParserBuilder::new(sql)
        .with_recursion_limit(max_depth)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| match e {
            DataFusionError::SQL(e, _) if matches!(*e, ParserError::RecursionLimitExceeded) => {
                crate::filter::too_deep(&limit)
            }
            e => at_end_if_unplaced(QueryError::from_datafusion(e, 0), sql),
        })?;
    if statements.len() > 1 {
        return Err(QueryError::invalid(format!(
            "one statement per query: found {}",
            statements.len()
        )));
    }
    statements
        .pop_front()
        .ok_or_else(|| QueryError::invalid("the query is empty"))
}

/// Integer literals beyond 64 bits (an account number, a product of large factors) are exact:
/// `DECIMAL(38,0)` up to 38 digits, as PostgreSQL's `numeric` and DuckDB's `HUGEINT` keep
/// them, where DataFusion reads them as a `double` rounded to 16 digits
/// (`99999999999999999999` became `100000000000000000000`). Longer ones stay `double`s.
fn exact_big_integers(statement: &mut DFStatement) {
    match statement {
        DFStatement::Statement(s) => {
            let _ = visit_expressions_mut(s.as_mut(), |e| {
                if let Expr::Value(v) = e
                    && let Value::Number(n, _) = &v.value
                    && let Some(digits) = beyond_64_bits(n)
                {
                    let text = Value::SingleQuotedString(digits).with_span(v.span);
                    *e = Expr::Cast {
                        kind: CastKind::Cast,
                        expr: Box::new(Expr::Value(text)),
                        data_type: SqlType::Decimal(ExactNumberInfo::PrecisionAndScale(38, 0)),
                        array: false,
                        format: None,
                    };
                }
                ControlFlow::<()>::Continue(())
            });
        }
        DFStatement::Explain(e) => exact_big_integers(&mut e.statement),
        _ => {}
    }
}

/// The digits of integer literal `n` when it fits neither `i64` nor `u64` but 38 digits.
pub(crate) fn beyond_64_bits(n: &str) -> Option<String> {
    let digits: String = n.chars().filter(|c| *c != '_').collect();
    let significant = digits.trim_start_matches('0').len();
    (digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_err()
        && (1..=38).contains(&significant))
    .then_some(digits)
}

/// `?` placeholders (what JDBC, ODBC and most BI tools write) become `$1, $2, ...` in the
/// order they appear in the text, so parameters bind by position, over HTTP (`params`) as over
/// Flight SQL. A statement may use either form, not both.
fn number_question_marks(statement: &mut DFStatement) -> Result<(), QueryError> {
    match statement {
        DFStatement::Statement(s) => number_in(s.as_mut()),
        DFStatement::Explain(e) => number_question_marks(&mut e.statement),
        _ => Ok(()),
    }
}

fn number_in(statement: &mut Statement) -> Result<(), QueryError> {
    // Where each `?` stands, and whether `$n` is used too.
    let mut marks: Vec<(u64, u64)> = Vec::new();
    let mut dollars = false;
    let _ = visit_expressions(statement, |e| {
        if let Expr::Value(v) = e
            && let Value::Placeholder(p) = &v.value
        {
            if p == "?" {
                marks.push((v.span.start.line, v.span.start.column));
            } else {
                dollars = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if marks.is_empty() {
        return Ok(());
    }
    if dollars {
        return Err(QueryError::invalid(
            "parameters are either all `?` or all `$1, $2, ...`, not both",
        ));
    }
    // Numbered by where they stand in the text, not by the order of a walk of the tree (which
    // visits LIMIT before an OFFSET written first).
    marks.sort_unstable();
    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::Value(v) = e
            && matches!(&v.value, Value::Placeholder(p) if p == "?")
        {
            let at = (v.span.start.line, v.span.start.column);
            let n = marks.partition_point(|m| *m < at) + 1;
            v.value = Value::Placeholder(format!("${n}"));
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(())
}

fn check_statement(
    statement: &DFStatement,
    limits: &Complexity,
    internals: bool,
) -> Result<(), QueryError> {
    match statement {
        DFStatement::Statement(s) => match s.as_ref() {
            Statement::Query(q) => match q.visit(&mut FromGuard { internals }) {
                ControlFlow::Break(e) => Err(e),
                ControlFlow::Continue(()) => crate::complexity::check_statement(s, limits),
            },
            other => Err(refused(&statement_kind(&other.to_string()))),
        },
        DFStatement::Explain(e) => {
            // Verbose plans and statistics print the files' column minima and maxima, which
            // are raw values of masked columns.
            if e.options.verbose || e.options.show_statistics == Some(true) {
                return Err(QueryError::invalid(
                    "EXPLAIN VERBOSE and plan statistics are not available; use EXPLAIN or \
                     EXPLAIN ANALYZE",
                ));
            }
            check_statement(&e.statement, limits, internals)
        }
        DFStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DFStatement::CopyTo(_) => Err(refused("COPY")),
        DFStatement::Reset(_) => Err(refused("RESET")),
    }
}

fn refused(kind: &str) -> QueryError {
    QueryError::invalid(format!(
        "only a read-only SELECT (with WITH, UNION, joins, window functions) or EXPLAIN of one \
         is allowed; {kind} is refused"
    ))
}

/// The statement's leading keywords (`INSERT`, `CREATE TABLE`, ...), for messages.
fn statement_kind(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second]
            if matches!(
                first.to_ascii_uppercase().as_str(),
                "CREATE" | "DROP" | "ALTER" | "SHOW"
            ) =>
        {
            format!(
                "{} {}",
                first.to_ascii_uppercase(),
                second.to_ascii_uppercase()
            )
        }
        [first, ..] => first.to_ascii_uppercase(),
        [] => "this statement".into(),
    }
}

/// Refuses `FROM` items that are not datasets, subqueries or joins, and engine settings
/// unless `internals`.
struct FromGuard {
    internals: bool,
}

impl Visitor for FromGuard {
    type Break = QueryError;

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<QueryError> {
        match factor {
            TableFactor::Table {
                name,
                args,
                version,
                json_path,
                sample,
                ..
            } => {
                if args.is_some() {
                    return ControlFlow::Break(QueryError::invalid_at(
                        format!("table functions are not allowed: {name}"),
                        name_position(name),
                    ));
                }
                if version.is_some() || json_path.is_some() || sample.is_some() {
                    return ControlFlow::Break(QueryError::invalid_at(
                        format!("table modifiers are not supported on {name}"),
                        name_position(name),
                    ));
                }
                for part in &name.0 {
                    let ObjectNamePart::Identifier(ident) = part else {
                        return ControlFlow::Break(QueryError::invalid_at(
                            format!("{name} is not a table name"),
                            name_position(name),
                        ));
                    };
                    let looks_like_location = ident.quote_style == Some('\'')
                        || ident.value.contains('/')
                        || ident.value.contains(':');
                    let settings =
                        ident.value.eq_ignore_ascii_case("df_settings") && name.0.len() > 1;
                    if settings && !self.internals {
                        return ControlFlow::Break(QueryError::invalid_at(
                            format!("table '{name}' not found"),
                            name_position(name),
                        ));
                    }
                    if looks_like_location {
                        return ControlFlow::Break(QueryError::invalid_at(
                            format!(
                                "files and URLs cannot be queried ({}); tables are department.dataset",
                                ident.value
                            ),
                            name_position(name),
                        ));
                    }
                }
                ControlFlow::Continue(())
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            TableFactor::TableFunction { .. } | TableFactor::Function { .. } => {
                ControlFlow::Break(QueryError::invalid("table functions are not allowed"))
            }
            _ => ControlFlow::Break(QueryError::invalid(
                "only datasets (department.dataset), subqueries and joins may appear in FROM",
            )),
        }
    }
}

fn name_position(name: &ObjectName) -> Option<Position> {
    let ObjectNamePart::Identifier(first) = name.0.first()? else {
        return None;
    };
    let start = first.span.start;
    (start.line > 0).then_some(Position {
        line: start.line,
        column: start.column,
    })
}

fn json_param(index: usize, value: &serde_json::Value) -> Result<ScalarValue, QueryError> {
    use serde_json::Value;
    Ok(match value {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ScalarValue::Int64(Some(i)),
            (None, Some(u)) => ScalarValue::UInt64(Some(u)),
            _ => ScalarValue::Float64(n.as_f64()),
        },
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Array(_) | Value::Object(_) => {
            return Err(QueryError::invalid(format!(
                "params[{index}] must be a string, number, boolean or null"
            ))
            .in_parameter("params"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sql: &str) -> Result<(), String> {
        parse_readonly(sql, &QueryLimits::default(), false)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn engine_settings_are_for_admins_only() {
        let sql = "SELECT * FROM information_schema.df_settings";
        assert!(check(sql).unwrap_err().contains("not found"));
        assert!(parse_readonly(sql, &QueryLimits::default(), true).is_ok());
        // Refused on the tokens: sqlparser alone would take hours over 60 nested `NOT (`.
        let nested = format!("SELECT {}true{}", "NOT (".repeat(60), ")".repeat(60));
        let t = std::time::Instant::now();
        assert!(check(&nested).unwrap_err().contains("max_logic_depth"));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // Many NOTs side by side are not nested.
        let side = format!("SELECT {}", vec!["NOT (1 = 2)"; 40].join(" AND "));
        check(&side).unwrap();
    }

    #[test]
    fn text_the_engine_cannot_read_is_placed_at_its_literal() {
        let placed = |message: &str, sql: &str| match place_unreadable_literal(
            QueryError::invalid(message),
            sql,
        ) {
            QueryError::Invalid {
                message, position, ..
            } => (message, position.map(|p| (p.line, p.column))),
            other => panic!("{other:?}"),
        };
        let sql = "SELECT a FROM m.x\nWHERE b = 'many' OR c > 'many'";
        let (_, at) = placed(
            "Cast error: Cannot cast string 'many' to value of Int32 type",
            sql,
        );
        assert_eq!(at, Some((2, 11)));
        // Quotes inside the text, as arrow quotes them (unescaped).
        let (_, at) = placed(
            "Cast error: Cannot cast value 'it's' to value of Boolean type",
            "SELECT 1 WHERE flag = 'it''s'",
        );
        assert_eq!(at, Some((1, 23)));
        let (_, at) = placed(
            "Parser error: Error parsing timestamp from 'soon': error parsing date",
            "SELECT 1 WHERE t < 'soon'",
        );
        assert_eq!(at, Some((1, 20)));
        // Not in the text: a stored value, and the message says what to look at.
        let (message, at) = placed(
            "Cannot cast string 'BS000001' to value of Int64 type",
            "SELECT 1 FROM m.x WHERE stop_id = 5",
        );
        assert_eq!(at, None);
        assert!(message.contains("not written in the query"), "{message}");
        // A boolean compared with text: how to write it, at the one quoted boolean.
        let (message, at) = placed(
            "Cannot infer common argument type for comparison operation Boolean = Utf8",
            "SELECT 1 FROM m.x WHERE name = 'x' AND flag = 'true'",
        );
        assert_eq!(at, Some((1, 47)));
        assert!(
            message.contains("true or false, without quotes"),
            "{message}"
        );
        // Other errors, and errors already placed, are left as they are.
        let (message, at) = placed("No field named b", "SELECT b FROM m.x WHERE 'b' = 'b'");
        assert_eq!((message.as_str(), at), ("No field named b", None));
    }

    #[test]
    fn a_statement_that_ends_too_early_is_placed_at_its_end() {
        let e = parse_readonly(
            "SELECT *\nFROM t\nWHERE (  ",
            &QueryLimits::default(),
            false,
        )
        .unwrap_err();
        match e {
            QueryError::Invalid { position, .. } => assert_eq!(
                position,
                Some(crate::error::Position { line: 3, column: 8 })
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn integer_literals_beyond_64_bits_are_exact_decimals() {
        assert_eq!(
            beyond_64_bits("99999999999999999999").as_deref(),
            Some("99999999999999999999")
        );
        assert_eq!(beyond_64_bits(&"9".repeat(38)), Some("9".repeat(38)));
        assert_eq!(
            beyond_64_bits(&format!("000{}", "9".repeat(38))),
            Some(format!("000{}", "9".repeat(38)))
        );
        // What 64 bits hold DataFusion reads itself; longer than 38 digits, and fractions, stay
        // as they were.
        for n in [
            "9223372036854775807",
            "18446744073709551615",
            "1.5",
            "1e30",
            &"9".repeat(39),
        ] {
            assert_eq!(beyond_64_bits(n), None, "{n}");
        }
        let statement = parse_readonly(
            "SELECT 62220212345678901234 + 1, 7",
            &QueryLimits::default(),
            false,
        )
        .unwrap();
        assert_eq!(
            statement.to_string(),
            "SELECT CAST('62220212345678901234' AS DECIMAL(38,0)) + 1, 7"
        );
    }

    #[test]
    fn parameter_counts_are_said_in_words() {
        assert_eq!(
            parameter_count_message(2, 1, "given"),
            "the statement takes 2 parameters ($1 to $2); 1 was given"
        );
        assert_eq!(
            parameter_count_message(1, 3, "bound"),
            "the statement takes 1 parameter ($1); 3 were bound"
        );
        assert_eq!(
            parameter_count_message(0, 0, "given"),
            "the statement takes no parameters; none was given"
        );
    }

    #[test]
    fn question_marks_are_numbered_in_text_order() {
        let text = |sql: &str| {
            parse_readonly(sql, &QueryLimits::default(), false)
                .map(|s| s.to_string())
                .map_err(|e| e.to_string())
        };
        // The AST keeps LIMIT before OFFSET whichever comes first in the text, and a walk of
        // it visits them in that order: text order must win.
        let sql = "WITH t AS (SELECT a FROM m.x WHERE a > ?) \
                   SELECT a FROM t WHERE a BETWEEN ? AND ? ORDER BY a OFFSET ? LIMIT ?";
        let numbered = text(sql).unwrap();
        let at = |p: &str| {
            numbered
                .find(p)
                .unwrap_or_else(|| panic!("{p} in {numbered}"))
        };
        assert!(at("$1") < at("$2") && at("$2") < at("$3"));
        assert!(numbered.contains("LIMIT $5 OFFSET $4"), "{numbered}");
        assert!(!numbered.contains('?'), "{numbered}");
        assert!(text("EXPLAIN SELECT ? + 1").unwrap().contains("$1"));
        // `$n` stays as written; the two forms together are refused.
        assert!(text("SELECT $2, $1").unwrap().contains("$2, $1"));
        assert!(text("SELECT ?, $1").unwrap_err().contains("not both"));
        // A `?` inside a string is text, not a parameter.
        assert!(text("SELECT '?' AS q").unwrap().contains("'?'"));
    }

    #[test]
    fn selects_and_explains_pass() {
        for sql in [
            "SELECT 1",
            "SELECT * FROM market.entities WHERE district = 'x'",
            "WITH t AS (SELECT 1 AS a) SELECT a FROM t UNION ALL SELECT 2",
            "SELECT a, row_number() OVER (ORDER BY a) FROM (SELECT 1 AS a) s",
            "EXPLAIN SELECT * FROM market.entities",
            "SELECT * FROM market.a JOIN market.b ON a.id = b.id",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn writes_files_and_functions_are_refused() {
        for (sql, says) in [
            ("INSERT INTO market.a VALUES (1)", "INSERT"),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc'",
                "CREATE EXTERNAL TABLE",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN DELETE FROM market.a", "DELETE"),
            ("SELECT 1; SELECT 2", "one statement"),
            ("EXPLAIN VERBOSE SELECT 1", "VERBOSE"),
            ("EXPLAIN ANALYZE VERBOSE SELECT 1", "VERBOSE"),
            ("SELECT * FROM '/etc/passwd'", "files and URLs"),
            ("SELECT * FROM 's3://bucket/x.parquet'", "files and URLs"),
            ("SELECT * FROM generate_series(1, 10)", "table functions"),
            (
                "SELECT * FROM (SELECT * FROM range(5)) t",
                "table functions",
            ),
            (
                "SELECT * FROM market.a WHERE id IN (SELECT * FROM generate_series(1,2))",
                "table functions",
            ),
        ] {
            let err = check(sql).expect_err(sql);
            assert!(err.contains(says), "{sql}: {err}");
        }
    }

    #[test]
    fn deep_nesting_and_long_text_are_refused() {
        let deep = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(check(&deep).is_err());
        let long = format!("SELECT '{}'", "x".repeat(70_000));
        assert!(check(&long).unwrap_err().contains("bytes"));
    }

    #[test]
    fn the_tables_a_statement_names_are_the_ones_it_plans_with() {
        let named = |sql: &str| tables_named(sql, &QueryLimits::default());
        let pairs = |v: &[(&str, &str)]| {
            Some(
                v.iter()
                    .map(|(d, n)| (d.to_string(), n.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(named("SELECT 1"), pairs(&[]));
        assert_eq!(
            named("SELECT * FROM transport.bus_stops"),
            pairs(&[("transport", "bus_stops")])
        );
        // Joins, subqueries in expressions, UNION, EXPLAIN; a CTE is no table; unquoted names
        // are folded to lower case as the planner folds them, quoted ones kept.
        assert_eq!(
            named(
                "WITH s AS (SELECT * FROM Transport.Bus_Stops) SELECT * FROM s \
                 JOIN datagate.market.market_entities m ON true \
                 WHERE m.uscc IN (SELECT party_uscc FROM market.enforcement_decisions) \
                 UNION ALL SELECT * FROM \"transport\".\"Lines\""
            ),
            pairs(&[
                ("market", "enforcement_decisions"),
                ("market", "market_entities"),
                ("transport", "Lines"),
                ("transport", "bus_stops"),
            ])
        );
        assert_eq!(
            named("EXPLAIN SELECT count(*) FROM environment.air_quality"),
            pairs(&[("environment", "air_quality")])
        );
        // The information schema, SHOW TABLES, a bare name or another catalog: everything.
        for sql in [
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM datagate.information_schema.columns",
            "SHOW TABLES",
            "SELECT * FROM bus_stops",
            "SELECT * FROM elsewhere.transport.bus_stops",
            "SELECT * FROM transport.bus_stops, information_schema.tables",
        ] {
            assert_eq!(named(sql), None, "{sql}");
        }
        // Which of them read every table's schema (the columns, the views' definitions).
        let every = |sql: &str| reads_every_table(sql, &QueryLimits::default());
        for (sql, reads) in [
            ("SELECT * FROM information_schema.tables", false),
            ("SELECT * FROM datagate.information_schema.columns", true),
            (
                "SELECT * FROM Information_Schema.Columns WHERE table_name = 'x'",
                true,
            ),
            ("EXPLAIN SELECT * FROM information_schema.views", true),
            (
                "SELECT t.table_name FROM information_schema.tables t \
                 JOIN information_schema.columns c USING (table_name)",
                true,
            ),
            ("SELECT * FROM elsewhere.information_schema.columns", false),
            ("SELECT * FROM transport.columns", false),
            ("SHOW TABLES", false),
            ("SHOW COLUMNS FROM transport.bus_stops", false),
            ("SELEC * FROM information_schema.columns", false),
        ] {
            assert_eq!(every(sql), reads, "{sql}");
        }
        // A statement that does not parse names none: planning refuses it before any table.
        assert_eq!(named("SELEC * FROM transport.bus_stops"), pairs(&[]));
        assert_eq!(
            named(&format!("SELECT '{}'", "x".repeat(70_000))),
            pairs(&[])
        );
    }
}
