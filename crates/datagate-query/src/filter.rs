//! The `where=` of a `rows` or `export` request: one SQL expression, parsed with sqlparser and
//! translated node by node into a DataFusion [`Expr`] through an allow-list.
//!
//! Allowed: column references of the dataset, literals (numbers, strings, booleans, `NULL`,
//! `DATE '...'`, `TIMESTAMP '...'`), comparisons, `AND/OR/NOT`, arithmetic, `||`, `IN (...)`,
//! `BETWEEN`, `[NOT] LIKE/ILIKE`, `IS [NOT] NULL/TRUE/FALSE`, `CAST`/`::` to a short list of
//! types, `EXTRACT`, `SUBSTRING`, `TRIM`, and the scalar functions of [`ALLOWED_FUNCTIONS`].
//! Anything else (subqueries, other functions, wildcards, qualified names) is refused with its
//! position. Nothing is ever pasted into SQL text.

use crate::error::{Position, QueryError};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::expr::{InList, Like, ScalarFunction};
use datafusion::logical_expr::{Between, BinaryExpr, Cast, Expr, Operator, ScalarUDF, TryCast};
use datafusion::sql::sqlparser::ast::{
    self as sql, BinaryOperator, CastKind, FunctionArg, FunctionArgExpr, FunctionArguments,
    Spanned, UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use std::collections::HashMap;
use std::sync::Arc;

/// Scalar functions a `where` may call.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "substr",
    "trim",
    "ltrim",
    "rtrim",
    "starts_with",
    "concat",
    "coalesce",
    "abs",
    "round",
    "date_trunc",
    "date_part",
];

/// Parses and translates `text` against the columns of `schema`.
pub fn parse_where(
    text: &str,
    schema: &Schema,
    functions: &HashMap<String, Arc<ScalarUDF>>,
    max_bytes: usize,
    max_depth: usize,
) -> Result<Expr, QueryError> {
    let ast = parse_where_text(text, max_bytes, max_depth, max_depth)?;
    translate_where(&ast, schema, functions, max_depth)
}

/// Parses `text` as one SQL expression, within `max_bytes`, `max_depth` and `max_not` nested
/// `NOT`s (see [`check_nesting`]).
pub fn parse_where_text(
    text: &str,
    max_bytes: usize,
    max_depth: usize,
    max_not: usize,
) -> Result<sql::Expr, QueryError> {
    if text.len() > max_bytes {
        return Err(QueryError::invalid(format!(
            "the expression is {} bytes; at most {max_bytes} are accepted",
            text.len()
        )));
    }
    let limit = format!("limits.max_expr_depth = {max_depth}");
    check_nesting(text, max_depth * 4, max_not, &limit)?;
    let dialect = GenericDialect {};
    let unparsed = |e| crate::sql::at_end_if_unplaced(parser_error(e, &limit), text);
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(max_depth)
        .try_with_sql(text)
        .map_err(unparsed)?;
    let ast = parser.parse_expr().map_err(unparsed)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(QueryError::invalid_at(
            format!("unexpected `{}` after the expression", next.token),
            position(next.span.start),
        ));
    }
    Ok(ast)
}

/// Translates a parsed `where` into a DataFusion expression over `schema`'s columns.
pub fn translate_where(
    ast: &sql::Expr,
    schema: &Schema,
    functions: &HashMap<String, Arc<ScalarUDF>>,
    max_depth: usize,
) -> Result<Expr, QueryError> {
    Translator {
        schema,
        functions,
        depth: 0,
        max_depth: max_depth * 4,
    }
    .expr(ast)
}

/// Resolves a column name as written (quoted: exactly; unquoted: exactly, else in lower case).
pub fn resolve_column(
    schema: &Schema,
    name: &str,
    quoted: bool,
    at: Option<Position>,
) -> Result<String, QueryError> {
    if schema.field_with_name(name).is_ok() {
        return Ok(name.to_string());
    }
    let lower = name.to_lowercase();
    if !quoted && schema.field_with_name(&lower).is_ok() {
        return Ok(lower);
    }
    let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let columns = if known.is_empty() {
        "you can see no column of this dataset".to_string()
    } else {
        format!("the columns are {}", known.join(", "))
    };
    // `Name` read as `name` where the column is `Name`: say how to write it.
    let spelled = known
        .iter()
        .find(|k| k.to_lowercase() == lower)
        .map(|k| {
            format!(
                " (unquoted names are read in lower case: write {} for the column {k})",
                quote_ident(k)
            )
        })
        .unwrap_or_default();
    Err(QueryError::invalid_at(
        format!("unknown column {name}; {columns}{spelled}"),
        at,
    ))
}

/// The most parts a dotted name may have (`catalog.department.dataset.column`). Longer chains
/// are refused before parsing: sqlparser's time grows exponentially with some of them (a
/// 67-byte `where` of dotted names and `IS` took 6 s; found by fuzzing).
const MAX_NAME_PARTS: usize = 4;

/// A column name as the `select`, `where` and `order` parameters take it: as it is when plain
/// lower case, else in double quotes (inner quotes doubled). (They read a keyword such as
/// `order` as a name unquoted.)
pub fn quote_ident(c: &str) -> String {
    if !c.is_empty()
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        && !c.starts_with(|ch: char| ch.is_ascii_digit())
    {
        c.to_string()
    } else {
        format!("\"{}\"", c.replace('"', "\"\""))
    }
}

/// An identifier as SQL reads it: quoted exactly, unquoted folded to lower case.
pub fn sql_name(ident: &sql::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// Refuses expressions whose nesting, counted on the tokens before any tree is built, exceeds
/// `max`: a chain of operators nests as deep as it is long, and a tree that deep must never be
/// built, walked or dropped. Each open parenthesis and each operator since the last separator
/// at the same level counts one.
///
/// `NOT`s are counted apart and refused beyond `max_not` levels: sqlparser's time grows
/// exponentially with nested `NOT (...)` (40 levels: 20 ms; 60: hours), so such a text must
/// not reach it. A `NOT` reaches to the end of its operand: the closing parenthesis of its
/// level, or a separator (`,`, `AND`, `OR`, a clause keyword) there.
///
/// `limit` names the configured limit `max` comes from, for the message (e.g.
/// `limits.max_expr_depth = 64`).
pub fn check_nesting(
    text: &str,
    max: usize,
    max_not: usize,
    limit: &str,
) -> Result<(), QueryError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| QueryError::invalid(e.to_string()))?;
    // Operators seen at each open parenthesis level since its last separator.
    let mut levels: Vec<usize> = vec![0];
    let mut depth: usize = 0;
    // `NOT`s open at each level, and in all.
    let mut nots: Vec<usize> = vec![0];
    let mut not_depth: usize = 0;
    let end_nots = |nots: &mut Vec<usize>, not_depth: &mut usize| {
        let last = nots.last_mut().map(std::mem::take).unwrap_or(0);
        *not_depth = not_depth.saturating_sub(last);
    };
    // Parts of the dotted name being read (`a.b.c` has three), whitespace ignored as the
    // parser ignores it.
    let (mut name_parts, mut after_period) = (0usize, false);
    for t in &tokens {
        match &t.token {
            Token::Whitespace(_) => {}
            Token::Period => {
                name_parts = name_parts.max(1) + 1;
                after_period = true;
                if name_parts > MAX_NAME_PARTS {
                    return Err(QueryError::invalid_at(
                        format!(
                            "a dotted name has more than {MAX_NAME_PARTS} parts; names are \
                             `column`, `dataset.column` or `department.dataset.column`"
                        ),
                        position(t.span.start),
                    ));
                }
            }
            Token::Word(_) | Token::Mul => {
                if !after_period {
                    name_parts = 1;
                }
                after_period = false;
            }
            _ => (name_parts, after_period) = (0, false),
        }
        match &t.token {
            Token::Comma => end_nots(&mut nots, &mut not_depth),
            Token::LParen => nots.push(0),
            Token::RParen if nots.len() > 1 => {
                not_depth = not_depth.saturating_sub(nots.pop().unwrap_or(0));
            }
            Token::Word(w) if w.keyword == Keyword::NOT => {
                if let Some(n) = nots.last_mut() {
                    *n += 1;
                }
                not_depth += 1;
                if not_depth > max_not {
                    return Err(QueryError::invalid_at(
                        format!(
                            "NOT is nested more than {max_not} levels deep \
                             (limits.max_logic_depth); simplify the condition"
                        ),
                        position(t.span.start),
                    ));
                }
            }
            Token::Word(w)
                if matches!(
                    w.keyword,
                    Keyword::AND
                        | Keyword::OR
                        | Keyword::SELECT
                        | Keyword::FROM
                        | Keyword::WHERE
                        | Keyword::HAVING
                        | Keyword::ON
                        | Keyword::WHEN
                        | Keyword::THEN
                        | Keyword::ELSE
                        | Keyword::END
                ) =>
            {
                end_nots(&mut nots, &mut not_depth)
            }
            _ => {}
        }
        let counts = match &t.token {
            Token::LParen => {
                levels.push(0);
                depth += 1;
                false
            }
            Token::RParen => {
                if levels.len() > 1 {
                    let inner = levels.pop().unwrap_or(0);
                    depth = depth.saturating_sub(inner + 1);
                }
                false
            }
            Token::Comma => {
                let last = levels.last_mut().map(std::mem::take).unwrap_or(0);
                depth = depth.saturating_sub(last);
                false
            }
            // Clause keywords separate like commas; CASE and NOT nest through the parser's own
            // recursion limit.
            Token::Word(w)
                if matches!(
                    w.keyword,
                    Keyword::SELECT
                        | Keyword::FROM
                        | Keyword::WHERE
                        | Keyword::GROUP
                        | Keyword::HAVING
                        | Keyword::ORDER
                        | Keyword::UNION
                        | Keyword::INTERSECT
                        | Keyword::EXCEPT
                        | Keyword::LIMIT
                        | Keyword::OFFSET
                        | Keyword::ON
                        | Keyword::JOIN
                        | Keyword::CASE
                        | Keyword::WHEN
                        | Keyword::THEN
                        | Keyword::ELSE
                        | Keyword::END
                ) =>
            {
                let last = levels.last_mut().map(std::mem::take).unwrap_or(0);
                depth = depth.saturating_sub(last);
                false
            }
            Token::Word(w) => matches!(
                w.keyword,
                Keyword::AND
                    | Keyword::OR
                    | Keyword::IS
                    | Keyword::LIKE
                    | Keyword::ILIKE
                    | Keyword::BETWEEN
                    | Keyword::IN
            ),
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::StringConcat
            | Token::DoubleColon => true,
            _ => false,
        };
        if counts {
            if let Some(l) = levels.last_mut() {
                *l += 1;
            }
            depth += 1;
        }
        if depth > max {
            return Err(QueryError::invalid_at(
                format!("the expression nests too deeply ({limit}); simplify it"),
                position(t.span.start),
            ));
        }
    }
    Ok(())
}

/// The problem for text that nests deeper than `limit` allows.
pub(crate) fn too_deep(limit: &str) -> QueryError {
    QueryError::invalid(format!(
        "the expression nests too deeply ({limit}); simplify it"
    ))
}

pub(crate) fn position(l: datafusion::sql::sqlparser::tokenizer::Location) -> Option<Position> {
    (l.line > 0).then_some(Position {
        line: l.line,
        column: l.column,
    })
}

/// A parser error as a problem; running into the recursion limit says which configured limit.
pub(crate) fn parser_error(
    e: datafusion::sql::sqlparser::parser::ParserError,
    limit: &str,
) -> QueryError {
    if matches!(e, ParserError::RecursionLimitExceeded) {
        return too_deep(limit);
    }
    let e = datafusion::error::DataFusionError::SQL(Box::new(e), None);
    QueryError::from_datafusion(e, 0)
}

struct Translator<'a> {
    schema: &'a Schema,
    functions: &'a HashMap<String, Arc<ScalarUDF>>,
    depth: usize,
    max_depth: usize,
}

impl Translator<'_> {
    fn expr(&mut self, e: &sql::Expr) -> Result<Expr, QueryError> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(QueryError::invalid(format!(
                "the expression nests deeper than {} levels (limits.max_expr_depth)",
                self.max_depth
            )));
        }
        let out = self.node(e);
        self.depth -= 1;
        out
    }

    fn boxed(&mut self, e: &sql::Expr) -> Result<Box<Expr>, QueryError> {
        self.expr(e).map(Box::new)
    }

    /// `e`, or the value it was read as when it is a literal read for its column
    /// ([`Self::text_literal`]).
    fn operand(&mut self, e: &sql::Expr, read: Option<Expr>) -> Result<Box<Expr>, QueryError> {
        match read {
            Some(x) => Ok(Box::new(x)),
            None => self.boxed(e),
        }
    }

    fn node(&mut self, e: &sql::Expr) -> Result<Expr, QueryError> {
        use sql::Expr as E;
        Ok(match e {
            E::Identifier(ident) => {
                let name = resolve_column(
                    self.schema,
                    &sql_name(ident),
                    true,
                    position(ident.span.start),
                )?;
                Expr::Column(Column::new_unqualified(name))
            }
            E::Value(v) => match &v.value {
                // A number no double holds (`1e400`) would fail later, as a cast, unplaced.
                Value::Number(n, _) if n.parse::<f64>().is_ok_and(|f| !f.is_finite()) => {
                    return Err(QueryError::invalid_at(
                        format!("{n} is beyond the range of numbers (about ±1.8e308)"),
                        position(v.span.start),
                    ));
                }
                value => literal(value).ok_or_else(|| refused(e, "this literal"))?,
            },
            E::TypedString(t) => {
                let Value::SingleQuotedString(s) = &t.value.value else {
                    return Err(refused(e, "this literal"));
                };
                let to = cast_type(&t.data_type).ok_or_else(|| refused(e, "this type"))?;
                Expr::Cast(Cast::new(Box::new(Expr::Literal(s_val(s), None)), to))
            }
            E::Nested(inner) => self.expr(inner)?,
            E::BinaryOp { left, op, right } => {
                let op = binary_operator(op).ok_or_else(|| refused(e, &format!("`{op}`")))?;
                use datafusion::logical_expr::Operator as Op;
                if matches!(
                    op,
                    Op::Eq | Op::NotEq | Op::Lt | Op::LtEq | Op::Gt | Op::GtEq
                ) {
                    let typed_right = self.text_literal(left, right)?;
                    let typed_left = self.text_literal(right, left)?;
                    return Ok(Expr::BinaryExpr(BinaryExpr::new(
                        self.operand(left, typed_left)?,
                        op,
                        self.operand(right, typed_right)?,
                    )));
                }
                Expr::BinaryExpr(BinaryExpr::new(self.boxed(left)?, op, self.boxed(right)?))
            }
            E::UnaryOp { op, expr } => match op {
                UnaryOperator::Not => Expr::Not(self.boxed(expr)?),
                UnaryOperator::Minus => Expr::Negative(self.boxed(expr)?),
                UnaryOperator::Plus => self.expr(expr)?,
                other => return Err(refused(e, &format!("`{other}`"))),
            },
            E::InList {
                expr,
                list,
                negated,
            } => {
                let typed = list
                    .iter()
                    .map(|x| self.text_literal(expr, x))
                    .collect::<Result<Vec<_>, _>>()?;
                let list = list
                    .iter()
                    .zip(typed)
                    .map(|(x, typed)| self.operand(x, typed).map(|b| *b))
                    .collect::<Result<Vec<_>, _>>()?;
                Expr::InList(InList::new(self.boxed(expr)?, list, *negated))
            }
            E::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let typed_low = self.text_literal(expr, low)?;
                let typed_high = self.text_literal(expr, high)?;
                Expr::Between(Between::new(
                    self.boxed(expr)?,
                    *negated,
                    self.operand(low, typed_low)?,
                    self.operand(high, typed_high)?,
                ))
            }
            E::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char,
            }
            | E::ILike {
                negated,
                any: false,
                expr,
                pattern,
                escape_char,
            } => {
                let escape = match escape_char.as_ref().map(|v| &v.value) {
                    None => None,
                    Some(Value::SingleQuotedString(s)) if s.chars().count() == 1 => {
                        s.chars().next()
                    }
                    Some(_) => return Err(refused(e, "this ESCAPE")),
                };
                Expr::Like(Like::new(
                    *negated,
                    self.boxed(expr)?,
                    self.boxed(pattern)?,
                    escape,
                    matches!(e, E::ILike { .. }),
                ))
            }
            E::IsNull(x) => Expr::IsNull(self.boxed(x)?),
            E::IsNotNull(x) => Expr::IsNotNull(self.boxed(x)?),
            E::IsTrue(x) => Expr::IsTrue(self.boxed(x)?),
            E::IsNotTrue(x) => Expr::IsNotTrue(self.boxed(x)?),
            E::IsFalse(x) => Expr::IsFalse(self.boxed(x)?),
            E::IsNotFalse(x) => Expr::IsNotFalse(self.boxed(x)?),
            E::Cast {
                kind,
                expr,
                data_type,
                array: false,
                format: None,
            } => {
                let to = cast_type(data_type)
                    .ok_or_else(|| refused(e, &format!("casting to {data_type}")))?;
                let inner = self.boxed(expr)?;
                match kind {
                    CastKind::Cast | CastKind::DoubleColon => Expr::Cast(Cast::new(inner, to)),
                    CastKind::TryCast | CastKind::SafeCast => {
                        Expr::TryCast(TryCast::new(inner, to))
                    }
                }
            }
            E::Extract { field, expr, .. } => {
                let part = field.to_string().to_lowercase();
                let arg = self.expr(expr)?;
                self.call(e, "date_part", vec![Expr::Literal(s_val(&part), None), arg])?
            }
            E::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.expr(expr)?];
                args.push(match substring_from {
                    Some(f) => self.expr(f)?,
                    None => Expr::Literal(ScalarValue::Int64(Some(1)), None),
                });
                if let Some(n) = substring_for {
                    args.push(self.expr(n)?);
                }
                self.call(e, "substr", args)?
            }
            E::Trim {
                expr,
                trim_where: None,
                trim_what: None,
                trim_characters: None,
            } => {
                let arg = self.expr(expr)?;
                self.call(e, "trim", vec![arg])?
            }
            E::Function(f) => self.function(e, f)?,
            E::CompoundIdentifier(_) => {
                return Err(refused(e, "a qualified name (name the column alone)"));
            }
            E::Subquery(_) | E::InSubquery { .. } | E::Exists { .. } => {
                return Err(refused(e, "a subquery"));
            }
            _ => return Err(refused(e, "this expression")),
        })
    }

    /// A quoted literal compared with a column of another type is read as that type when the
    /// query runs (`fare > '3.5'`, `opened >= '2024-01-01'`); one that cannot be
    /// (`fare > 'abc'`) is refused here, at its position and naming the column and its type,
    /// instead of failing later with the engine's internal types in the message.
    ///
    /// The engine does not read text as a boolean (`night_line = 'true'` fails to plan), so
    /// for a boolean column the literal comes back read, to be used in place of the text.
    fn text_literal(
        &self,
        column: &sql::Expr,
        other: &sql::Expr,
    ) -> Result<Option<Expr>, QueryError> {
        use datafusion::arrow::datatypes::DataType as T;
        let (sql::Expr::Identifier(ident), sql::Expr::Value(v)) = (column, other) else {
            return Ok(None);
        };
        let Value::SingleQuotedString(text) = &v.value else {
            return Ok(None);
        };
        let Ok(name) = resolve_column(self.schema, &sql_name(ident), true, None) else {
            return Ok(None);
        };
        let Ok(field) = self.schema.field_with_name(&name) else {
            return Ok(None);
        };
        // Read as the engine reads it, in a type wide enough that only the text's form (not
        // its size against the column's precision) decides.
        let wide = match field.data_type() {
            T::Int8 | T::Int16 | T::Int32 | T::Int64 => T::Int64,
            T::UInt8 | T::UInt16 | T::UInt32 | T::UInt64 => T::UInt64,
            T::Float16 | T::Float32 | T::Float64 | T::Decimal128(..) | T::Decimal256(..) => {
                T::Float64
            }
            T::Boolean => T::Boolean,
            T::Date32 | T::Date64 => T::Date32,
            T::Timestamp(unit, tz) => T::Timestamp(*unit, tz.clone()),
            _ => return Ok(None),
        };
        if let Ok(read) = s_val(text).cast_to(&wide) {
            return Ok((wide == T::Boolean).then(|| Expr::Literal(read, None)));
        }
        let type_name = datagate_core::types::type_name(field.data_type());
        Err(QueryError::invalid_at(
            format!("{text:?} is not a {type_name} value, which column {name} holds"),
            position(v.span.start),
        ))
    }

    fn function(&mut self, e: &sql::Expr, f: &sql::Function) -> Result<Expr, QueryError> {
        let name = f.name.to_string().to_lowercase();
        if !ALLOWED_FUNCTIONS.contains(&name.as_str()) {
            return Err(refused(
                e,
                &format!(
                    "the function {name} (allowed: {})",
                    ALLOWED_FUNCTIONS.join(", ")
                ),
            ));
        }
        let plain = f.filter.is_none()
            && f.over.is_none()
            && f.within_group.is_empty()
            && f.null_treatment.is_none()
            && matches!(f.parameters, FunctionArguments::None);
        let FunctionArguments::List(list) = &f.args else {
            return Err(refused(e, &format!("{name} without an argument list")));
        };
        if !plain || list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(refused(e, &format!("modifiers on {name}")));
        }
        let mut args = Vec::with_capacity(list.args.len());
        for a in &list.args {
            match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => args.push(self.expr(x)?),
                _ => return Err(refused(e, &format!("this argument of {name}"))),
            }
        }
        self.call(e, &name, args)
    }

    fn call(&self, e: &sql::Expr, name: &str, args: Vec<Expr>) -> Result<Expr, QueryError> {
        let udf = self
            .functions
            .get(name)
            .ok_or_else(|| refused(e, &format!("the function {name}")))?;
        Ok(Expr::ScalarFunction(ScalarFunction::new_udf(
            udf.clone(),
            args,
        )))
    }
}

fn refused(e: &sql::Expr, what: &str) -> QueryError {
    // Only leaf-sized nodes are asked for their span: a span is computed over the whole subtree.
    let at = match e {
        sql::Expr::Identifier(i) => position(i.span.start),
        sql::Expr::Value(v) => position(v.span.start),
        sql::Expr::Function(f) => f.name.0.first().and_then(|p| position(p.span().start)),
        _ => None,
    };
    QueryError::invalid_at(format!("{what} is not allowed in a filter"), at)
}

fn s_val(s: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(s.to_string()))
}

fn literal(v: &Value) -> Option<Expr> {
    let scalar = match v {
        // Integers exact as in SQL (`crate::sql::beyond_64_bits`).
        Value::Number(n, _) => match (n.parse::<i64>(), n.parse::<u64>()) {
            (Ok(i), _) => ScalarValue::Int64(Some(i)),
            (_, Ok(u)) => ScalarValue::UInt64(Some(u)),
            _ => match crate::sql::beyond_64_bits(n) {
                Some(digits) => ScalarValue::Decimal128(Some(digits.parse().ok()?), 38, 0),
                None => ScalarValue::Float64(Some(n.parse::<f64>().ok()?)),
            },
        },
        Value::SingleQuotedString(s) => s_val(s),
        Value::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        Value::Null => ScalarValue::Null,
        _ => return None,
    };
    Some(Expr::Literal(scalar, None))
}

fn binary_operator(op: &BinaryOperator) -> Option<Operator> {
    Some(match op {
        BinaryOperator::Eq => Operator::Eq,
        BinaryOperator::NotEq => Operator::NotEq,
        BinaryOperator::Lt => Operator::Lt,
        BinaryOperator::LtEq => Operator::LtEq,
        BinaryOperator::Gt => Operator::Gt,
        BinaryOperator::GtEq => Operator::GtEq,
        BinaryOperator::And => Operator::And,
        BinaryOperator::Or => Operator::Or,
        BinaryOperator::Plus => Operator::Plus,
        BinaryOperator::Minus => Operator::Minus,
        BinaryOperator::Multiply => Operator::Multiply,
        BinaryOperator::Divide => Operator::Divide,
        BinaryOperator::Modulo => Operator::Modulo,
        BinaryOperator::StringConcat => Operator::StringConcat,
        _ => return None,
    })
}

/// The types a filter may cast to, read from the type as written.
fn cast_type(t: &sql::DataType) -> Option<DataType> {
    let text = t.to_string().to_uppercase();
    let (base, args) = match text.split_once('(') {
        Some((b, rest)) => (
            b.trim().to_string(),
            Some(rest.trim_end_matches(')').to_string()),
        ),
        None => (text.trim().to_string(), None),
    };
    Some(match base.as_str() {
        "SMALLINT" | "INT2" => DataType::Int16,
        "INT" | "INTEGER" | "INT4" => DataType::Int32,
        "BIGINT" | "INT8" | "INT64" => DataType::Int64,
        "REAL" | "FLOAT4" => DataType::Float32,
        "FLOAT" | "DOUBLE" | "DOUBLE PRECISION" | "FLOAT8" | "FLOAT64" => DataType::Float64,
        "VARCHAR" | "TEXT" | "STRING" | "CHAR" | "CHARACTER VARYING" => DataType::Utf8,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "DATE" => DataType::Date32,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "DECIMAL" | "NUMERIC" => {
            let args = args.unwrap_or_else(|| "38,10".into());
            let (p, s) = args.split_once(',').unwrap_or((args.as_str(), "0"));
            DataType::Decimal128(p.trim().parse().ok()?, s.trim().parse().ok()?)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("district", DataType::Utf8, true),
            Field::new("Registered", DataType::Date32, true),
        ])
    }

    fn functions() -> HashMap<String, Arc<ScalarUDF>> {
        // As a session registers them: under their names and their aliases.
        let mut map = HashMap::new();
        for f in datafusion::functions::all_default_functions() {
            for name in f.aliases().iter().chain([&f.name().to_string()]) {
                map.insert(name.clone(), f.clone());
            }
        }
        map
    }

    fn parse(text: &str) -> Result<Expr, QueryError> {
        parse_where(text, &schema(), &functions(), 65_536, 64)
    }

    /// Found by `fuzz/run.sh` (where_filter): 67 bytes of dotted names and `IS` took sqlparser
    /// 6 s (9.5 s under the fuzzer), each `.Is.s` tripling it. Refused at the tokens now.
    #[test]
    fn long_dotted_names_are_refused_before_the_parser_sees_them() {
        let fuzzed = "dis.is.q.A .dis.Is.s.Is.s.is.A.s.sdis.is.q.A .dis.Is.s.Is.s.is.A.s.";
        let t = std::time::Instant::now();
        let e = parse(fuzzed).unwrap_err().to_string();
        // Microseconds when refused at the tokens; the bound only has to tell that from the
        // seconds the parser took, not from a loaded CI machine's scheduling.
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        assert!(e.contains("more than 4 parts"), "{e}");
        let limits = crate::QueryLimits::default();
        let sql = format!("select * from environment.air_quality where {fuzzed}");
        let e = crate::sql::parse_readonly(&sql, &limits, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 4 parts"), "{e}");
        // Real names pass: up to catalog.department.dataset.column, and `t.*`.
        check_nesting("a.b.c.d = 1 and x . y = z.w", 64, 8, "").unwrap();
        crate::sql::parse_readonly(
            "select t.*, datagate.environment.air_quality.aqi from environment.air_quality t",
            &limits,
            false,
        )
        .unwrap();
    }

    #[test]
    fn integer_literals_are_exact_as_in_sql() {
        for (text, want) in [
            ("id = 7", ScalarValue::Int64(Some(7))),
            (
                "id = 18446744073709551615",
                ScalarValue::UInt64(Some(u64::MAX)),
            ),
            (
                "id = 62220212345678901234",
                ScalarValue::Decimal128(Some(62220212345678901234), 38, 0),
            ),
            ("id = 0.5", ScalarValue::Float64(Some(0.5))),
        ] {
            let Expr::BinaryExpr(e) = parse(text).unwrap() else {
                panic!("{text}")
            };
            assert_eq!(*e.right, Expr::Literal(want, None), "{text}");
        }
    }

    #[test]
    fn numbers_beyond_a_double_are_refused_where_they_stand() {
        match parse("id > 1e400").unwrap_err() {
            QueryError::Invalid {
                message, position, ..
            } => {
                assert!(message.contains("1e400 is beyond the range"), "{message}");
                assert_eq!(position, Some(Position { line: 1, column: 6 }), "{message}");
            }
            e => panic!("{e:?}"),
        }
        parse("id > 1e300").unwrap();
    }

    #[test]
    fn allowed_expressions_translate() {
        for text in [
            "id = 1",
            "id >= 10 AND district <> 'x' OR NOT (id < 3)",
            "id IN (1, 2, 3) AND district NOT IN ('a')",
            "id BETWEEN 1 AND 10",
            "district LIKE '东%' OR district ILIKE 'x%'",
            "district IS NULL OR id IS NOT NULL",
            "CAST(id AS VARCHAR) = '1' AND id::double > 0.5",
            "\"Registered\" >= DATE '2024-01-01'",
            "\"Registered\" >= '2024-01-01'",
            "lower(district) = 'x' AND length(district) > 2 AND abs(id - 5) < 3",
            "date_trunc('month', CAST(\"Registered\" AS TIMESTAMP)) = TIMESTAMP '2024-01-01 00:00:00'",
            "EXTRACT(YEAR FROM \"Registered\") = 2024",
            "SUBSTRING(district FROM 1 FOR 2) = 'ab' AND substr(district, 1, 2) = 'ab'",
            "(id + 1) * 2 % 3 = 0 AND -id < 0",
            "district || 'x' = 'ax'",
        ] {
            parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn everything_else_is_refused_with_a_position() {
        for (text, says) in [
            ("nope = 1", "unknown column nope"),
            ("\"ID\" = 1", "unknown column ID"),
            ("id = (SELECT 1)", "subquery"),
            ("id IN (SELECT id FROM market.x)", "subquery"),
            ("EXISTS (SELECT 1)", "subquery"),
            ("t.id = 1", "qualified name"),
            (
                "read_parquet('/etc/passwd') = 1",
                "the function read_parquet",
            ),
            ("sum(id) > 1", "the function sum"),
            ("id = 1; DROP TABLE x", "unexpected"),
            ("id = 1 UNION SELECT 1", "unexpected"),
            ("id = 1 -- comment\n OR 1=1) --", "unexpected"),
            ("lower(district) OVER () = 'x'", "modifiers"),
            ("id = 1)", "unexpected"),
            ("id = ", "Expected"),
            ("CAST(id AS BLOB) = 1", "casting"),
            ("*", "Expected"),
            // Unquoted names fold to lower case, as in SQL.
            // ... and the message says how to name such a column.
            (
                "Registered IS NULL",
                "unknown column registered; the columns are id, district, Registered (unquoted names are read in lower case: write \"Registered\" \
                 for the column Registered)",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
        match parse("id = 1 AND nope = 2").unwrap_err() {
            QueryError::Invalid { position, .. } => {
                assert_eq!(
                    position,
                    Some(Position {
                        line: 1,
                        column: 12
                    })
                )
            }
            other => panic!("{other}"),
        }
        // A text that ends too early is placed just past its end, where the missing part goes.
        for (text, column) in [("id = ", 5), ("1==", 4), ("id = 1 AND", 11)] {
            match parse(text).unwrap_err() {
                QueryError::Invalid { position, .. } => {
                    assert_eq!(position, Some(Position { line: 1, column }), "{text}")
                }
                other => panic!("{text}: {other}"),
            }
        }
    }

    #[test]
    fn quoted_literals_are_read_as_their_column() {
        // Taken: what the column's type reads.
        for ok in [
            "id > '3'",
            "\"Registered\" >= '2024-01-01'",
            "id IN ('1', '2')",
            "\"Registered\" BETWEEN '2024-01-01' AND '2024-12-31'",
            "district = 'x'",
            "'5' < id",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        // Refused where the literal stands, naming the column and its type.
        for (bad, column) in [
            ("id > 'abc'", 6),
            ("'x' = id", 1),
            ("id IN (1, 'two')", 11),
            ("\"Registered\" BETWEEN '2024-01-01' AND 'soon'", 39),
        ] {
            match parse(bad).unwrap_err() {
                QueryError::Invalid {
                    message, position, ..
                } => {
                    assert_eq!(
                        position,
                        Some(Position { line: 1, column }),
                        "{bad}: {message}"
                    );
                    assert!(message.contains("which column"), "{bad}: {message}");
                }
                other => panic!("{bad}: {other}"),
            }
        }
    }

    #[test]
    fn deep_and_long_expressions_are_refused_without_building_them() {
        let nested = format!("{}id = 1{}", "(".repeat(10_000), ")".repeat(10_000));
        let chain = vec!["id = 1"; 10_000].join(" OR ");
        let nots = format!("{}id = 1", "NOT ".repeat(10_000));
        let sums = format!("id = {}", vec!["1"; 10_000].join(" + "));
        for text in [nested, chain, nots, sums] {
            let err = parse_where(&text, &schema(), &functions(), 1 << 20, 64).unwrap_err();
            assert!(matches!(err, QueryError::Invalid { .. }), "{err}");
        }
        // Long flat lists and moderate chains are fine.
        let list = format!("id IN ({})", vec!["1"; 5_000].join(", "));
        parse_where(&list, &schema(), &functions(), 1 << 20, 64).unwrap();
        parse(&vec!["id = 1"; 20].join(" OR ")).unwrap();
    }
}
