//! Integer `+`, `-`, `*` and negation that refuse to overflow instead of wrapping around.
//!
//! DataFusion 55 evaluates integer arithmetic with wrapping kernels: `SELECT
//! 9223372036854775807 + 1` answered `-9223372036854775808`, and `population * 1e12` over an
//! `int64` column a wrong number without a word. PostgreSQL, DuckDB and Trino refuse such a
//! query ("bigint out of range"). Its `BinaryExpr` can check for overflow, but nothing in the
//! planner sets that, so [`CheckedArithmeticRule`] puts [`CheckedArithmetic`] in place of every
//! `+`, `-` and `*` whose operands are both of one integer type once types are coerced, and of
//! every unary minus of a signed integer (`-a` of the smallest `bigint` wrapped to itself). The
//! function has the operator's name (`a + b`), type and NULL semantics, and evaluates with
//! arrow's checked kernels: an overflow is a 400 naming the operation. Other operand types
//! (floats, decimals, dates and intervals) keep the operator.

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::execution::{FunctionRegistry, SessionState};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::Arc;

/// Registers the checked operators and the rule that puts them in place of `+`, `-`, `*` and
/// unary minus, and the checked `sum` ([`crate::checked_sum`]).
pub fn register(state: &mut SessionState) -> Result<()> {
    crate::checked_sum::register(state)?;
    let udfs =
        OPERATORS.map(|op| Arc::new(ScalarUDF::new_from_impl(CheckedArithmetic::new(Some(op)))));
    let negate = Arc::new(ScalarUDF::new_from_impl(CheckedArithmetic::new(None)));
    for udf in udfs.iter().chain([&negate]) {
        state.register_udf(udf.clone())?;
    }
    state.add_analyzer_rule(Arc::new(CheckedArithmeticRule { udfs, negate }));
    Ok(())
}

/// The operators checked, and the names their functions are registered under (never written
/// by users: the operators are).
const OPERATORS: [Operator; 3] = [Operator::Plus, Operator::Minus, Operator::Multiply];

/// The name of the function of `op` (`None`: unary minus).
fn name_of(op: Option<Operator>) -> &'static str {
    match op {
        Some(Operator::Plus) => "datagate_checked_plus",
        Some(Operator::Minus) => "datagate_checked_minus",
        Some(_) => "datagate_checked_multiply",
        None => "datagate_checked_negate",
    }
}

/// One integer operator (`None`: unary minus) evaluated with arrow's checked kernel; see the
/// module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedArithmetic {
    op: Option<Operator>,
    signature: Signature,
}

impl CheckedArithmetic {
    fn new(op: Option<Operator>) -> Self {
        let operands = if op.is_some() { 2 } else { 1 };
        Self {
            op,
            signature: Signature::any(operands, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for CheckedArithmetic {
    fn name(&self) -> &str {
        name_of(self.op)
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        match (args, self.op) {
            ([l, r], Some(op)) => Ok(format!("{l} {op} {r}")),
            ([e], None) => Ok(format!("(- {e})")),
            _ => Ok(self.name().to_string()),
        }
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match (args, self.op) {
            ([l, r], Some(op)) => Ok(format!("{} {op} {}", l.schema_name(), r.schema_name())),
            ([e], None) => Ok(format!("(- {})", e.schema_name())),
            _ => Ok(self.name().to_string()),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The operands have the result's type: the rule calls this only for two integers of one
    /// type, or one signed integer.
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [l, r] if l == r && l.is_integer() => Ok(l.clone()),
            [e] if e.is_signed_integer() => Ok(e.clone()),
            _ => datafusion::common::plan_err!(
                "{} takes integers of one type, not {arg_types:?}",
                self.name()
            ),
        }
    }

    /// NULL only where an operand can be, as for the operator.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<arrow::datatypes::FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(arrow::datatypes::Field::new(
            self.name(),
            self.return_type(&types)?,
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use arrow::compute::kernels::numeric;
        let scalars = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalars { 1 } else { args.number_rows };
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let out = match (arrays.as_slice(), self.op) {
            ([l, r], Some(Operator::Plus)) => numeric::add(l, r),
            ([l, r], Some(Operator::Minus)) => numeric::sub(l, r),
            ([l, r], Some(_)) => numeric::mul(l, r),
            ([e], None) => numeric::neg(e),
            _ => return datafusion::common::exec_err!("{}: wrong operands", self.name()),
        }?;
        Ok(if scalars {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// Puts [`CheckedArithmetic`] in place of every integer `+`, `-` and `*`, after type coercion.
#[derive(Debug)]
pub struct CheckedArithmeticRule {
    udfs: [Arc<ScalarUDF>; 3],
    negate: Arc<ScalarUDF>,
}

impl CheckedArithmeticRule {
    fn udf(&self, op: Operator) -> Option<&Arc<ScalarUDF>> {
        OPERATORS
            .iter()
            .position(|o| *o == op)
            .map(|i| &self.udfs[i])
    }

    /// `e` with its checked function in place of an integer `+`, `-`, `*` or unary minus;
    /// anything else as it is. `schema` holds the columns `e` refers to.
    fn checked(&self, e: Expr, schema: &DFSchema) -> Transformed<Expr> {
        let integer = |e: &Expr| e.get_type(schema).ok().filter(DataType::is_integer);
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let same = integer(&left).is_some() && integer(&left) == integer(&right);
                match self.udf(op) {
                    Some(udf) if same => Transformed::yes(udf.call(vec![*left, *right])),
                    _ => Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right })),
                }
            }
            Expr::Negative(inner) if integer(&inner).is_some_and(|t| t.is_signed_integer()) => {
                Transformed::yes(self.negate.call(vec![*inner]))
            }
            other => Transformed::no(other),
        }
    }
}

impl datafusion::optimizer::AnalyzerRule for CheckedArithmeticRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            // The expressions of a node refer to its inputs' columns (a scan's, to its own).
            let mut schema = DFSchema::empty();
            for input in node.inputs() {
                schema.merge(input.schema());
            }
            if node.inputs().is_empty() {
                schema.merge(node.schema());
            }
            // A rewritten expression keeps its name (a window's, say, includes its arguments'),
            // so the nodes above that refer to it by name still find it.
            let names = NamePreserver::new(&node);
            node.map_expressions(|e| {
                let name = names.save(&e);
                Ok(e.transform_up(|e| Ok(self.checked(e, &schema)))?
                    .update_data(|e| name.restore(e)))
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "datagate_checked_arithmetic"
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// A session with the checked operators and `sum`.
    pub(crate) fn checked() -> SessionContext {
        let mut state = SessionContext::new().state();
        register(&mut state).unwrap();
        SessionContext::new_with_state(state)
    }

    /// The answer of `sql` in `ctx`, as a table, or the error.
    pub(crate) async fn one_in(
        ctx: &SessionContext,
        sql: &str,
    ) -> std::result::Result<String, String> {
        let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
        let batches = df.collect().await.map_err(|e| e.to_string())?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string())
    }

    async fn one(sql: &str) -> std::result::Result<String, String> {
        one_in(&checked(), sql).await
    }

    #[tokio::test]
    async fn integer_overflow_is_an_error_not_a_wrapped_value() {
        for sql in [
            "SELECT 9223372036854775807 + 1",
            "SELECT -9223372036854775807 - 2",
            "SELECT 10000000000 * 10000000000",
            "SELECT a * a FROM (VALUES (CAST(3037000500 AS BIGINT))) t(a)",
            "SELECT CAST(2147483647 AS INT) + CAST(1 AS INT)",
            "SELECT a + b FROM (VALUES (CAST(200 AS TINYINT UNSIGNED), CAST(100 AS TINYINT UNSIGNED))) t(a, b)",
            "SELECT x FROM (VALUES (1)) t(x) WHERE x * 9223372036854775807 * 2 > 0",
            "SELECT -a FROM (VALUES (-9223372036854775807 - 1)) t(a)",
            "SELECT a - b FROM (VALUES (CAST(1 AS BIGINT UNSIGNED), CAST(2 AS BIGINT UNSIGNED))) t(a, b)",
        ] {
            let e = one(sql).await.expect_err(sql);
            assert!(e.contains("Overflow"), "{sql}: {e}");
        }
    }

    #[tokio::test]
    async fn arithmetic_within_range_keeps_names_types_and_nulls() {
        let got = one("SELECT a + b, a - b, a * b, a + 1, -a FROM (VALUES (CAST(6 AS BIGINT), CAST(2 AS BIGINT)), (NULL, 1)) t(a, b)")
            .await
            .unwrap();
        assert!(
            got.contains("| t.a + t.b | t.a - t.b | t.a * t.b | t.a + Int64(1) | (- t.a) |"),
            "{got}"
        );
        assert!(
            got.contains("| 8         | 4         | 12        | 7              | -6      |"),
            "{got}"
        );
        let df = checked()
            .sql("SELECT a * b AS m FROM (VALUES (CAST(6 AS INT), CAST(2 AS INT))) t(a, b)")
            .await
            .unwrap();
        assert_eq!(df.schema().field(0).data_type(), &DataType::Int32);
        // Rewritten inside groups, sorts, HAVING and windows, the names still match.
        let got = one("SELECT a + 1 AS k, count(*) AS n, sum(a) * 2 AS s, row_number() OVER (ORDER BY a * 3) AS r \
                       FROM (VALUES (CAST(1 AS BIGINT)), (2), (2)) t(a) \
                       GROUP BY a + 1, a HAVING sum(a) - 1 >= 0 ORDER BY a + 1")
            .await
            .unwrap();
        assert!(got.contains("| 2 | 1 | 2 | 1 |"), "{got}");
        assert!(got.contains("| 3 | 2 | 8 | 2 |"), "{got}");
        // The smallest bigint written as a literal is no overflow.
        let got = one("SELECT -9223372036854775808 AS m").await.unwrap();
        assert!(got.contains("-9223372036854775808"), "{got}");
        // Floats, decimals and dates keep their operators.
        let got = one("SELECT 1.5 * 2, CAST(1.25 AS DECIMAL(5,2)) + 1, DATE '2024-01-31' + INTERVAL '1 day', 1e308 * 10")
            .await
            .unwrap();
        assert!(got.contains("3.0"), "{got}");
        assert!(got.contains("2.25"), "{got}");
        assert!(got.contains("2024-02-01"), "{got}");
        assert!(got.contains("inf"), "{got}");
    }
}
