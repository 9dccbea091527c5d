//! The REST side of querying: a `rows` page or an `export`, translated into a DataFusion plan
//! through the DataFrame API (never through SQL text).
//!
//! Paging is stable. Without `order`, a page comes in the version's storage order (its files by
//! path — the order they were uploaded in — and each file's rows as written), read from a
//! single-partition session: nothing is sorted, so a first page costs the same whatever the
//! dataset's size. With `order`, rows are sorted by the requested columns, then by the primary
//! key (or, without one, by every column), so ties never reorder between pages. `next` links pin
//! the version, and a pinned version's order never changes, so following them never skips or
//! repeats a row. [`crate::pages`] serves the common pages without planning at all, in the same
//! order.

use crate::catalog_provider::TableSnapshot;
use crate::engine::{QueryLimits, RequestSession};
use crate::error::QueryError;
use crate::filter::{parse_where_text, resolve_column, translate_where};
use crate::{CATALOG_NAME, filter};
use datafusion::common::{Column, TableReference};
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF, SortExpr};
use datafusion::sql::sqlparser::ast::Expr as SqlExpr;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use std::collections::HashMap;
use std::sync::Arc;

/// The parameters of a `rows` or `export` request that shape the result.
#[derive(Debug, Clone, Default)]
pub struct RowsRequest {
    /// Comma-separated column names.
    pub select: Option<String>,
    /// A boolean SQL expression over the dataset's columns.
    pub filter: Option<String>,
    /// `col [asc|desc] [nulls first|last], ...` (pages only).
    pub order: Option<String>,
}

/// A page (`limit` rows from `offset`) or the whole result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    Page { limit: u64, offset: u64 },
    Export,
}

impl RowsRequest {
    /// Whether the rows come in storage order, from a single-partition session: a page
    /// without `order`, and an export (which has none), so a download holds the rows in the
    /// order they were published, as the pages and the stored Parquet export give them.
    pub fn needs_file_order(&self, paging: Paging) -> bool {
        match paging {
            Paging::Page { .. } => self.order().is_none(),
            Paging::Export => true,
        }
    }

    /// `where`, unless blank.
    pub fn filter(&self) -> Option<&str> {
        self.filter.as_deref().filter(|t| !t.trim().is_empty())
    }

    /// `order`, unless blank.
    pub fn order(&self) -> Option<&str> {
        self.order.as_deref().filter(|t| !t.trim().is_empty())
    }

    /// `select`, unless blank.
    pub fn select(&self) -> Option<&str> {
        self.select.as_deref().filter(|t| !t.trim().is_empty())
    }
}

/// The `where` of a request as an expression over `schema` (what the reader sees), checked
/// against the complexity limits.
pub fn where_expr(
    text: &str,
    schema: &arrow::datatypes::Schema,
    functions: &HashMap<String, Arc<ScalarUDF>>,
    limits: &QueryLimits,
) -> Result<Expr, QueryError> {
    parse_where_text(
        text,
        limits.max_sql_bytes,
        limits.max_expr_depth,
        limits.complexity.max_logic_depth,
    )
    .and_then(|ast| {
        crate::complexity::check_expr(&ast, &limits.complexity)?;
        let expr = translate_where(&ast, schema, functions, limits.max_expr_depth)?;
        check_condition(&expr, schema, text.trim())?;
        Ok(expr)
    })
    .map_err(|e| e.in_parameter("where"))
}

/// A `where` is a condition, true or false for each row: a value of another type (`where=id`,
/// `where=(name)`) is refused saying so and naming its type, not in the planner's words.
fn check_condition(
    expr: &Expr,
    schema: &arrow::datatypes::Schema,
    text: &str,
) -> Result<(), QueryError> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::ExprSchemable as _;
    let Ok(df_schema) = DFSchema::try_from(schema.clone()) else {
        return Ok(());
    };
    match expr.get_type(&df_schema) {
        Ok(ty) if !matches!(ty, DataType::Boolean | DataType::Null) => {
            Err(QueryError::invalid(format!(
                "the filter must be a condition, true or false for each row (a comparison, `IN`, \
                 `LIKE`, `IS NULL`, ...); `{text}` is a value of type {}",
                datagate_core::types::type_name(&ty),
            )))
        }
        // A type the planner cannot work out is left to its own error.
        _ => Ok(()),
    }
}

/// A page's sort: the requested `order`, then the primary key (or every column) to break ties;
/// empty without `order` (storage order).
pub fn page_sorts(
    request: &RowsRequest,
    schema: &arrow::datatypes::Schema,
    primary_key: &[String],
    max_sql_bytes: usize,
) -> Result<Vec<SortExpr>, QueryError> {
    let Some(text) = request.order() else {
        return Ok(Vec::new());
    };
    let mut sorts =
        parse_order(text, schema, max_sql_bytes).map_err(|e| e.in_parameter("order"))?;
    let tie_breakers: Vec<String> = if primary_key.is_empty() {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    } else {
        primary_key.to_vec()
    };
    for name in tie_breakers {
        if schema.field_with_name(&name).is_err() {
            continue;
        }
        let already = sorts
            .iter()
            .any(|s| matches!(&s.expr, Expr::Column(c) if c.name == name));
        if !already {
            sorts.push(column(&name).sort(true, false));
        }
    }
    Ok(sorts)
}

/// Plans `request` over `snapshot` in `session`. A page fetches one row more than its `limit`,
/// so the encoder can tell whether a next page exists.
pub async fn plan_rows(
    session: &RequestSession,
    snapshot: &TableSnapshot,
    primary_key: &[String],
    request: &RowsRequest,
    paging: Paging,
) -> Result<LogicalPlan, QueryError> {
    let memory = session.limits.memory_bytes;
    let df_err = |e| QueryError::from_datafusion(e, memory);
    let table = TableReference::full(
        CATALOG_NAME,
        snapshot.department.as_str(),
        snapshot.name.as_str(),
    );
    let mut df = session.ctx.table(table).await.map_err(df_err)?;
    // The schema as this session's table yields it (what the caller may see).
    let schema = df.schema().as_arrow().clone();

    if let Some(text) = request.filter() {
        let state = session.ctx.state();
        let predicate = where_expr(text, &schema, state.scalar_functions(), &session.limits)?;
        df = df
            .filter(predicate)
            .map_err(|e| df_err(e).in_parameter("where"))?;
    }

    if let Paging::Page { .. } = paging {
        let sorts = page_sorts(request, &schema, primary_key, session.limits.max_sql_bytes)?;
        if !sorts.is_empty() {
            df = df
                .sort(sorts)
                .map_err(|e| df_err(e).in_parameter("order"))?;
        }
    }

    if let Some(text) = request.select() {
        let columns = parse_select(text, &schema).map_err(|e| e.in_parameter("select"))?;
        df = df
            .select(columns.iter().map(|c| column(c)).collect::<Vec<_>>())
            .map_err(|e| df_err(e).in_parameter("select"))?;
    }

    if let Paging::Page { limit, offset } = paging {
        let skip = usize::try_from(offset)
            .map_err(|_| QueryError::invalid("offset is too large").in_parameter("offset"))?;
        let fetch = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
        df = df.limit(skip, Some(fetch)).map_err(df_err)?;
    }
    Ok(df.into_unoptimized_plan())
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// `a, "Mixed Case", c` → the column names, each checked against `schema`.
pub fn parse_select(
    text: &str,
    schema: &arrow::datatypes::Schema,
) -> Result<Vec<String>, QueryError> {
    let mut out = Vec::new();
    for raw in split_names(text)? {
        let (name, quoted) = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(inner) => (inner.replace("\"\"", "\""), true),
            None => (raw.to_string(), false),
        };
        if name.is_empty() {
            return Err(QueryError::invalid("an empty column name"));
        }
        let resolved = resolve_column(schema, &name, quoted, None)?;
        if !out.contains(&resolved) {
            out.push(resolved);
        }
    }
    Ok(out)
}

/// Splits on commas outside double quotes.
fn split_names(text: &str) -> Result<Vec<&str>, QueryError> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(QueryError::invalid("an unclosed double quote"));
    }
    parts.push(text[start..].trim());
    Ok(parts)
}

/// `col [asc|desc] [nulls first|last], ...` → sort expressions over columns of `schema`.
pub fn parse_order(
    text: &str,
    schema: &arrow::datatypes::Schema,
    max_bytes: usize,
) -> Result<Vec<SortExpr>, QueryError> {
    if text.len() > max_bytes {
        return Err(QueryError::invalid("the order is too long"));
    }
    filter::check_nesting(text, 64, 0, "an order lists columns")?;
    let dialect = GenericDialect {};
    let unparsed = |e| {
        let e = filter::parser_error(e, "an order lists columns");
        crate::sql::at_end_if_unplaced(e, text)
    };
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(16)
        .try_with_sql(text)
        .map_err(unparsed)?;
    let items = parser
        .parse_comma_separated(Parser::parse_order_by_expr)
        .map_err(unparsed)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(QueryError::invalid_at(
            format!(
                "unexpected `{}`; order is `column [asc|desc] [nulls first|last], ...`",
                next.token
            ),
            filter::position(next.span.start),
        ));
    }
    items
        .into_iter()
        .map(|item| {
            let SqlExpr::Identifier(ident) = &item.expr else {
                return Err(QueryError::invalid(format!(
                    "order names columns only, not `{}`",
                    item.expr
                )));
            };
            if item.with_fill.is_some() {
                return Err(QueryError::invalid("WITH FILL is not supported"));
            }
            let name = resolve_column(
                schema,
                &filter::sql_name(ident),
                true,
                filter::position(ident.span.start),
            )?;
            let asc = item.options.asc.unwrap_or(true);
            // Nulls sort last ascending and first descending unless asked otherwise.
            let nulls_first = item.options.nulls_first.unwrap_or(!asc);
            Ok(column(&name).sort(asc, nulls_first))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("Name Zh", DataType::Utf8, true),
        ])
    }

    #[test]
    fn select_lists_resolve_quoted_and_plain_names() {
        assert_eq!(
            parse_select("id, \"Name Zh\"", &schema()).unwrap(),
            vec!["id", "Name Zh"]
        );
        assert_eq!(parse_select("ID", &schema()).unwrap(), vec!["id"]);
        assert!(parse_select("id, nope", &schema()).is_err());
        assert!(parse_select("id,,", &schema()).is_err());
        assert!(parse_select("\"id", &schema()).is_err());
        assert!(parse_select("id; DROP TABLE x", &schema()).is_err());
    }

    #[test]
    fn orders_parse_directions_and_refuse_expressions() {
        let s = parse_order("id desc, \"Name Zh\" asc nulls first", &schema(), 1000).unwrap();
        assert_eq!(s.len(), 2);
        assert!(!s[0].asc && s[0].nulls_first);
        assert!(s[1].asc && s[1].nulls_first);
        for bad in ["id + 1", "nope", "id desc; DROP", "(SELECT 1)", "id desc, "] {
            assert!(parse_order(bad, &schema(), 1000).is_err(), "{bad}");
        }
        // Where the order goes wrong: at the stray token, or just past a text that ends early.
        // An unknown column is placed too, and one that differs only in case is named.
        for (text, column) in [
            ("id desc; DROP", 8),
            ("id desc, ", 9),
            ("id asc asc", 8),
            ("id, nope desc", 5),
        ] {
            match parse_order(text, &schema(), 1000).unwrap_err() {
                QueryError::Invalid { position, .. } => assert_eq!(
                    position,
                    Some(crate::error::Position { line: 1, column }),
                    "{text}"
                ),
                other => panic!("{text}: {other}"),
            }
        }
        let e = parse_order("id, Name", &schema_with("Name"), 1000).unwrap_err();
        assert!(
            e.to_string().contains("write \"Name\" for the column Name"),
            "{e}"
        );
        assert!(parse_order("id, \"Name\"", &schema_with("Name"), 1000).is_ok());
        // The hint's spelling is one the parameter takes back, a keyword's unquoted included.
        let e = parse_order("Order", &schema_with("Order"), 1000).unwrap_err();
        assert!(e.to_string().contains("write \"Order\""), "{e}");
        assert!(parse_order("order desc", &schema_with("order"), 1000).is_ok());
        assert_eq!(crate::filter::quote_ident("order"), "order");
        assert_eq!(crate::filter::quote_ident("stop_count"), "stop_count");
        assert_eq!(crate::filter::quote_ident("a\"b"), "\"a\"\"b\"");
    }

    fn schema_with(name: &str) -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new(name, DataType::Utf8, true),
        ])
    }
}
