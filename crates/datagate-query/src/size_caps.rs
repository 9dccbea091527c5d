//! Caps on what string functions and the `||` operator may build, checked before they allocate.
//!
//! `repeat`, `lpad`, `rpad`, `replace`, `concat` and `concat_ws` size their output from their
//! arguments, outside the memory pool: `repeat('x', 2000000000)` would allocate 2 GB in one
//! value, and `lpad(col, 1000000)` over a few thousand rows overflows Arrow's 32-bit offsets.
//! `to_char` prints up to 16 bytes per byte of its format; `regexp_replace` with the `g` flag can
//! put its replacement in every gap (a 200-byte statement built a 1 GB string, in 4 GB). `levenshtein` builds little but works `len(a) × len(b)` steps without yielding, so it is
//! bounded by the pairs it compares per batch.
//! Each is registered wrapped in [`SizeCapped`], which computes the output's size from the
//! arguments of every batch (exactly for `repeat`, `lpad`, `rpad`; as an upper bound for the
//! others) and refuses with [`QueryError::OverLimit`] (422, naming the function) when one value
//! would exceed `limits.max_value_bytes` or the batch `limits.max_batch_bytes`. Everything else
//! is the wrapped function's own behaviour.

use crate::error::QueryError;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, ExprSchema, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionState;
use datafusion::logical_expr::StructFieldMapping;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature,
};
use std::sync::Arc;

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) × n`.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: `n` characters.
    Pad,
    /// `replace(s, from, to)`: every match of `from` (or every gap, when empty) becomes `to`.
    Replace,
    /// `concat(a, b, ...)`: the sum of the arguments.
    Concat,
    /// `concat_ws(sep, a, b, ...)`: the sum, with a separator between each.
    ConcatWs,
    /// `levenshtein(a, b)`: no output to speak of, but `len(a) × len(b)` steps in one call that
    /// never yields; bounded by [`SizeCaps::pairs`].
    Pairs,
    /// `to_char(value, format)` (alias `date_format`): every two-byte specifier can print up to
    /// 32 bytes (`%+`), so at most 16 bytes per byte of the format.
    Format,
    /// `regexp_replace(s, pattern, to [, flags])`: matches do not overlap, so there are at most
    /// `len(s) + 1` of them (one in every gap, for a pattern that matches the empty string) with
    /// the `g` flag, one without; each becomes `to`, whose group references (`$1`, `\\1`) add
    /// at most `len(s)` between them all.
    RegexpReplace,
}

const CAPPED: [(&str, Growth); 9] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("replace", Growth::Replace),
    ("concat", Growth::Concat),
    ("concat_ws", Growth::ConcatWs),
    ("levenshtein", Growth::Pairs),
    ("to_char", Growth::Format),
    ("regexp_replace", Growth::RegexpReplace),
];

/// The byte caps of [`SizeCapped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SizeCaps {
    pub value_bytes: u64,
    pub batch_bytes: u64,
}

impl SizeCaps {
    /// Character pairs a quadratic function may compare for one batch: eight per byte of the
    /// batch cap (with the default 64 MiB, about half a billion: a second or so of one core).
    pub fn pairs(&self) -> u64 {
        self.batch_bytes.saturating_mul(8)
    }
}

/// Replaces the functions that grow their output from their arguments with capped ones.
pub fn register(state: &mut SessionState, caps: SizeCaps) -> Result<()> {
    for (name, growth) in CAPPED {
        let Some(udf) = state.scalar_functions().get(name).cloned() else {
            continue;
        };
        let capped = SizeCapped {
            inner: UdfEq::from(udf.inner().clone()),
            growth,
            caps,
        };
        state.register_udf(Arc::new(ScalarUDF::new_from_shared_impl(Arc::new(capped))))?;
    }
    let udf = Arc::new(ScalarUDF::new_from_impl(ConcatOperator::new(caps)));
    state.register_udf(udf.clone())?;
    state.add_analyzer_rule(Arc::new(ConcatOperatorRule { udf }));
    Ok(())
}

/// A string function whose output is sized before it is built; see the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SizeCapped {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
    growth: Growth,
    caps: SizeCaps,
}

impl SizeCapped {
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let rows = args.number_rows.max(1);
        let a = &args.args;
        let mut largest: u64 = 0;
        let mut total: u64 = 0;
        let mut add = |bytes: u64| {
            largest = largest.max(bytes);
            total = total.saturating_add(bytes);
        };
        match self.growth {
            Growth::Repeat | Growth::Pad => {
                let (Some(s), Some(n)) = (a.first(), a.get(1)) else {
                    return Ok(());
                };
                let wide =
                    self.growth == Growth::Pad && (a.iter().any(|v| !is_ascii(v)) || a.len() < 2);
                for i in 0..rows {
                    let Some(n) = int_at(n, i)? else { continue };
                    let n = n.max(0) as u64;
                    let bytes = match self.growth {
                        Growth::Repeat => str_len_at(s, i).saturating_mul(n),
                        _ => n.saturating_mul(if wide { 4 } else { 1 }),
                    };
                    add(bytes);
                }
            }
            Growth::Replace => {
                let (Some(s), Some(from), Some(to)) = (a.first(), a.get(1), a.get(2)) else {
                    return Ok(());
                };
                for i in 0..rows {
                    let (s, from, to) = (str_len_at(s, i), str_len_at(from, i), str_len_at(to, i));
                    // An empty pattern matches between every two characters.
                    let matches = s.checked_div(from).unwrap_or(s + 1);
                    add(s.saturating_add(matches.saturating_mul(to)));
                }
            }
            Growth::RegexpReplace => {
                let (Some(s), Some(to)) = (a.first(), a.get(2)) else {
                    return Ok(());
                };
                for i in 0..rows {
                    let len = str_len_at(s, i);
                    let to = str_at(to, i).unwrap_or_default();
                    let refs = to.bytes().filter(|b| matches!(b, b'$' | b'\\')).count() as u64;
                    let global = a
                        .get(3)
                        .and_then(|f| str_at(f, i))
                        .is_some_and(|f| f.contains('g'));
                    let matches = if global { len.saturating_add(1) } else { 1 };
                    add(len
                        .saturating_add(matches.saturating_mul(to.len() as u64))
                        .saturating_add(refs.saturating_mul(len)));
                }
            }
            Growth::Format => {
                let Some(format) = a.get(1) else {
                    return Ok(());
                };
                for i in 0..rows {
                    add(str_len_at(format, i).saturating_mul(16));
                }
            }
            Growth::Pairs => {
                let (Some(a), Some(b)) = (a.first(), a.get(1)) else {
                    return Ok(());
                };
                let pairs: u64 = (0..rows)
                    .map(|i| str_len_at(a, i).saturating_mul(str_len_at(b, i)))
                    .fold(0, u64::saturating_add);
                let most = self.caps.pairs();
                if pairs > most {
                    return Err(over_limit(format!(
                        "{}() would compare {pairs} character pairs for one batch of {rows} \
                         rows; at most {most} are allowed (8 × limits.max_batch_bytes): \
                         compare shorter values",
                        self.inner.name()
                    )));
                }
            }
            Growth::Concat | Growth::ConcatWs => {
                let (sep, parts) = match self.growth {
                    Growth::ConcatWs => (a.first(), a.get(1..).unwrap_or_default()),
                    _ => (None, a.as_slice()),
                };
                for i in 0..rows {
                    let mut bytes: u64 = parts.iter().map(|p| str_len_at(p, i)).sum();
                    if let Some(sep) = sep {
                        bytes = bytes
                            .saturating_add(str_len_at(sep, i).saturating_mul(parts.len() as u64));
                    }
                    add(bytes);
                }
            }
        }
        check_sizes(
            &format!("{}()", self.inner.name()),
            largest,
            total,
            rows,
            self.caps,
        )
    }
}

/// Refuses a function (`what`) whose largest value or whole batch would pass the caps.
fn check_sizes(what: &str, largest: u64, total: u64, rows: usize, caps: SizeCaps) -> Result<()> {
    if largest > caps.value_bytes {
        return Err(over_limit(format!(
            "{what} would build a value of {largest} bytes; at most {} bytes per value \
             are allowed (limits.max_value_bytes)",
            caps.value_bytes
        )));
    }
    if total > caps.batch_bytes {
        return Err(over_limit(format!(
            "{what} would build {total} bytes for one batch of {rows} rows; at most {} \
             bytes are allowed (limits.max_batch_bytes): shorten the values or filter \
             the rows first",
            caps.batch_bytes
        )));
    }
    Ok(())
}

fn over_limit(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(QueryError::OverLimit(message)))
}

/// The byte length of a string argument at row `i` (0 for nulls and non-strings).
fn str_len_at(v: &ColumnarValue, i: usize) -> u64 {
    str_at(v, i).map_or(0, |s| s.len() as u64)
}

/// A string argument at row `i` (`None` for nulls and non-strings).
fn str_at(v: &ColumnarValue, i: usize) -> Option<&str> {
    match v {
        ColumnarValue::Scalar(s) => scalar_str(s),
        ColumnarValue::Array(a) => str_value(a, i),
    }
}

/// The text of a string array at row `i` (`None` for NULL, past the end, and non-strings).
fn str_value(a: &ArrayRef, i: usize) -> Option<&str> {
    Strings::of(a).filter(|_| i < a.len())?.get(i)
}

/// The bytes of the string literals among `args`.
fn literal_bytes(args: &[Expr]) -> u64 {
    args.iter()
        .filter_map(|a| match a {
            Expr::Literal(v, _) => scalar_str(v).map(|s| s.len() as u64),
            _ => None,
        })
        .sum()
}

fn scalar_str(s: &ScalarValue) -> Option<&str> {
    match s {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => v.as_deref(),
        _ => None,
    }
}

fn is_ascii(v: &ColumnarValue) -> bool {
    match v {
        ColumnarValue::Scalar(s) => scalar_str(s).is_none_or(str::is_ascii),
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().values().is_ascii(),
            DataType::LargeUtf8 => a.as_string::<i64>().values().is_ascii(),
            DataType::Utf8View => a.as_string_view().iter().flatten().all(str::is_ascii),
            _ => true,
        },
    }
}

/// An integer argument at row `i` (`None` for nulls).
fn int_at(v: &ColumnarValue, i: usize) -> Result<Option<i64>> {
    match v {
        ColumnarValue::Scalar(s) => Ok(match s.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(n) => n,
            _ => None,
        }),
        ColumnarValue::Array(a) => {
            if i >= a.len() || a.is_null(i) {
                return Ok(None);
            }
            match a.as_primitive_opt::<Int64Type>() {
                Some(ints) => Ok(Some(ints.value(i))),
                None => {
                    let one = arrow::compute::cast(&a.slice(i, 1), &DataType::Int64)?;
                    Ok(one
                        .as_primitive_opt::<Int64Type>()
                        .filter(|x| !x.is_null(0))
                        .map(|x| x.value(0)))
                }
            }
        }
    }
}

#[warn(clippy::missing_trait_methods)] // Delegates, so it should implement every trait method.
impl ScalarUDFImpl for SizeCapped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }

    fn with_updated_config(&self, _config: &ConfigOptions) -> Option<ScalarUDF> {
        None
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // `concat` of literals is merged while planning, without `invoke`: leave literals
        // too large together to be checked (and refused) when evaluated.
        if matches!(self.growth, Growth::Concat | Growth::ConcatWs)
            && literal_bytes(&args) > self.caps.value_bytes
        {
            return Ok(ExprSimplifyResult::Original(args));
        }
        self.inner.simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.inner.struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.placement(args)
    }
}

/// The `||` operator, sized like `concat`: an operator, not a function, so it is not found in
/// the registry; [`ConcatOperatorRule`] puts this function in place of every chain of `||`
/// once types are coerced (`a || b || c` is one call of three arguments, so a chain of
/// constants is folded, or refused, once — not once for each link, each time copying the
/// whole chain). It has the operator's name (`a || b || c`), type and NULL semantics, and is
/// refused over the caps before it builds anything: 40 values of 50 KB joined by `||` over
/// 1,200 rows took 15 s and 3 GB, and 200 literal 1 MB strings kept the planner past the query
/// timeout.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ConcatOperator {
    signature: Signature,
    caps: SizeCaps,
}

/// The name [`ConcatOperator`] is registered under (never written by users: `||` is).
pub const CONCAT_OPERATOR: &str = "datagate_string_concat";

impl ConcatOperator {
    fn new(caps: SizeCaps) -> Self {
        Self {
            signature: Signature::variadic_any(datafusion::logical_expr::Volatility::Immutable),
            caps,
        }
    }
}

impl ScalarUDFImpl for ConcatOperator {
    fn name(&self) -> &str {
        CONCAT_OPERATOR
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        let parts: Vec<String> = args.iter().map(ToString::to_string).collect();
        Ok(parts.join(" || "))
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let parts: Vec<String> = args.iter().map(|a| a.schema_name().to_string()).collect();
        Ok(parts.join(" || "))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        use datafusion::logical_expr::Operator;
        use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
        let (first, rest) = arg_types
            .split_first()
            .ok_or_else(|| DataFusionError::Plan("|| needs two operands".into()))?;
        rest.iter().try_fold(first.clone(), |left, right| {
            BinaryTypeCoercer::new(&left, &Operator::StringConcat, right).get_result_type()
        })
    }

    /// Constants over the value cap are refused here, while planning: left to evaluation, the
    /// chain of literals would be copied by every optimizer pass first (200 literal 1 MB
    /// strings took 12.6 s and 1.3 GB to reach the 422).
    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let bytes = literal_bytes(&args);
        check_sizes("the || operator", bytes, bytes, 1, self.caps)?;
        Ok(ExprSimplifyResult::Original(args))
    }

    /// NULL only where an operand can be, as for the operator.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
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
        let rows = args.number_rows.max(1);
        // Each operand's longest value and its bytes in the batch, summed: a bound on the
        // longest result and the batch (exact but for where the longest values fall).
        let (mut largest, mut total) = (0u64, 0u64);
        for a in &args.args {
            let (longest, bytes) = match a {
                ColumnarValue::Scalar(v) => {
                    let len = scalar_str(v).map_or(0, |s| s.len() as u64);
                    (len, len.saturating_mul(rows as u64))
                }
                ColumnarValue::Array(a) => Strings::of(a).map_or((0, 0), |s| s.lengths()),
            };
            largest = largest.saturating_add(longest);
            total = total.saturating_add(bytes);
        }
        check_sizes("the || operator", largest, total, rows, self.caps)?;
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
        let out = concat_rows(&arrays, rows, args.return_field.data_type())?;
        if scalars {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

/// `arrays[0] || arrays[1] || ...` row by row, as `out` (NULL where any operand is NULL):
/// strings in one pass; other operand types (binary) through the operator's own kernel.
fn concat_rows(arrays: &[ArrayRef], rows: usize, out: &DataType) -> Result<ArrayRef> {
    use arrow::array::{LargeStringBuilder, StringBuilder, StringViewBuilder};
    let strings: Option<Vec<Strings>> = arrays.iter().map(Strings::of).collect();
    let strings = match strings {
        Some(s)
            if matches!(
                out,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
        {
            s
        }
        _ => return concat_by_kernel(arrays, rows),
    };
    let mut row = String::new();
    // Row `i` into `row`; false when an operand is NULL.
    let fill = |i: usize, row: &mut String| {
        row.clear();
        strings
            .iter()
            .all(|a| a.get(i).map(|v| row.push_str(v)).is_some())
    };
    Ok(match out {
        DataType::Utf8View => {
            let mut b = StringViewBuilder::with_capacity(rows);
            for i in 0..rows {
                b.append_option(fill(i, &mut row).then_some(row.as_str()));
            }
            Arc::new(b.finish())
        }
        DataType::LargeUtf8 => {
            let mut b = LargeStringBuilder::new();
            for i in 0..rows {
                b.append_option(fill(i, &mut row).then_some(row.as_str()));
            }
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::new();
            for i in 0..rows {
                b.append_option(fill(i, &mut row).then_some(row.as_str()));
            }
            Arc::new(b.finish())
        }
    })
}

/// A string array, downcast once.
enum Strings<'a> {
    Utf8(&'a arrow::array::StringArray),
    Large(&'a arrow::array::LargeStringArray),
    View(&'a arrow::array::StringViewArray),
}

impl<'a> Strings<'a> {
    fn of(a: &'a ArrayRef) -> Option<Self> {
        Some(match a.data_type() {
            DataType::Utf8 => Self::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => Self::Large(a.as_string::<i64>()),
            DataType::Utf8View => Self::View(a.as_string_view()),
            _ => return None,
        })
    }

    /// Row `i` (`None` for NULL).
    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Self::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Self::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Self::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }

    /// The longest value's bytes and all values' bytes (NULL slots count as empty).
    fn lengths(&self) -> (u64, u64) {
        let fold = |lens: &mut dyn Iterator<Item = usize>| {
            lens.fold((0u64, 0u64), |(m, t), l| (m.max(l as u64), t + l as u64))
        };
        match self {
            Self::Utf8(a) => fold(&mut a.offsets().lengths()),
            Self::Large(a) => fold(&mut a.offsets().lengths()),
            Self::View(a) => fold(&mut a.views().iter().map(|v| *v as u32 as usize)),
        }
    }
}

/// `||` folded left to right through DataFusion's operator kernel, for non-string operands.
fn concat_by_kernel(arrays: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column};
    let (first, rest) = arrays
        .split_first()
        .ok_or_else(|| DataFusionError::Plan("|| needs two operands".into()))?;
    rest.iter().try_fold(first.clone(), |left, right| {
        let schema = arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("l", left.data_type().clone(), true),
            arrow::datatypes::Field::new("r", right.data_type().clone(), true),
        ]);
        let batch = arrow::record_batch::RecordBatch::try_new_with_options(
            Arc::new(schema),
            vec![left, right.clone()],
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        BinaryExpr::new(
            Arc::new(Column::new("l", 0)),
            Operator::StringConcat,
            Arc::new(Column::new("r", 1)),
        )
        .evaluate(&batch)?
        .into_array(rows)
    })
}

/// Puts one [`ConcatOperator`] call in place of every chain of `||`, after type coercion.
#[derive(Debug)]
pub struct ConcatOperatorRule {
    udf: Arc<ScalarUDF>,
}

impl ConcatOperatorRule {
    /// The operands of `e` as a link of a chain: its own when it is a chain already.
    fn operands(&self, e: Expr) -> Vec<Expr> {
        match e {
            Expr::ScalarFunction(f) if f.func.name() == CONCAT_OPERATOR => f.args,
            other => vec![other],
        }
    }
}

impl datafusion::optimizer::AnalyzerRule for ConcatOperatorRule {
    fn analyze(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _config: &ConfigOptions,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::logical_expr::{BinaryExpr, Operator};
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::BinaryExpr(BinaryExpr {
                        left,
                        op: Operator::StringConcat,
                        right,
                    }) => {
                        let mut args = self.operands(*left);
                        args.extend(self.operands(*right));
                        Ok(Transformed::yes(self.udf.call(args)))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "datagate_size_capped_concat_operator"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// A session with the caps registered: 1,000 bytes a value, 10,000 a batch.
    fn capped() -> SessionContext {
        let mut state = SessionContext::new().state();
        register(
            &mut state,
            SizeCaps {
                value_bytes: 1000,
                batch_bytes: 10_000,
            },
        )
        .unwrap();
        SessionContext::new_with_state(state)
    }

    async fn run(sql: &str) -> Result<(), String> {
        let df = capped().sql(sql).await.map_err(|e| e.to_string())?;
        df.collect().await.map(|_| ()).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn values_and_batches_over_the_caps_are_refused_before_they_are_built() {
        for sql in [
            "SELECT repeat('x', 2000000000)",
            "SELECT repeat('ab', 501)",
            "SELECT lpad('a', 1001)",
            "SELECT rpad('a', 300, '中')",
            "SELECT replace(repeat('a', 100), 'a', repeat('b', 100))",
            "SELECT replace('abc', '', repeat('b', 500))",
            "SELECT concat(repeat('a', 600), repeat('b', 600))",
            "SELECT levenshtein(a, b) FROM (VALUES (repeat('x', 300), repeat('y', 300))) t(a, b)",
            "SELECT lpad(v, 900) FROM (VALUES ('a'), ('b'), ('c'), ('d'), ('e'), ('f'), ('g'), \
             ('h'), ('i'), ('j'), ('k'), ('l')) t(v)",
            // Every gap of 100 bytes becomes 10 bytes: 1,110 (a 1 GB string from 200 bytes of
            // SQL, before).
            "SELECT regexp_replace(repeat('a', 100), '', repeat('b', 10), 'g')",
            "SELECT regexp_replace(s, 'a', 'xyz', 'g') FROM (VALUES (repeat('a', 400))) t(s)",
            "SELECT regexp_replace(repeat('a', 300), '(a+)', '$1$1$1')",
        ] {
            let err = run(sql).await.expect_err(sql);
            assert!(err.contains("at most"), "{sql}: {err}");
        }
    }

    #[tokio::test]
    async fn values_within_the_caps_are_built_as_before() {
        for sql in [
            "SELECT repeat('ab', 500)",
            "SELECT lpad('a', 1000, 'xy')",
            "SELECT rpad('中', 250, '文')",
            "SELECT replace('aaa', 'a', 'bb')",
            "SELECT concat('a', NULL, 'b'), concat_ws('-', 'a', 'b')",
            "SELECT repeat(NULL, 5), lpad('a', NULL)",
            "SELECT levenshtein(a, b) FROM (VALUES (repeat('x', 200), repeat('y', 200))) t(a, b)",
            "SELECT to_char(TIMESTAMP '2020-01-01 00:00:00', repeat('%Y', 30))",
            "SELECT regexp_replace(repeat('a', 100), '', 'bcdefghi', 'g')",
            "SELECT regexp_replace(repeat('ab', 400), 'b', 'c')",
            "SELECT regexp_replace('hello world', '(o)', '[$1]', 'g')",
            "SELECT regexp_replace(NULL, 'a', 'b', 'g')",
        ] {
            run(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    /// The `||` operator answers as it did, names and types included, within the caps.
    #[tokio::test]
    async fn the_concat_operator_is_unchanged_within_the_caps_and_refused_beyond() {
        let capped = capped();
        let plain = SessionContext::new();
        for sql in [
            "SELECT 'a' || 'b'",
            "SELECT 'a' || NULL, NULL || 'b'",
            "SELECT s || '-' || t AS st, s || t FROM (VALUES ('x', 'y'), ('z', NULL)) v(s, t)",
            "SELECT 1 || 'a', 'a' || 2.5",
            "SELECT count(*) FROM (VALUES ('ab'), ('cd')) v(s) WHERE s || s = 'abab'",
            "SELECT arrow_cast('a', 'Utf8View') || 'b', arrow_cast('a', 'LargeUtf8') || 'b'",
            "SELECT 'a' || ('b' || 'c') || 'd', s || (t || s) FROM (VALUES ('x', 'y')) v(s, t)",
            "SELECT arrow_cast('a', 'Binary') || arrow_cast('b', 'Binary')",
            "SELECT length(s || s || s) FROM (VALUES ('abc'), (NULL), ('')) v(s)",
        ] {
            let want = plain.sql(sql).await.unwrap().collect().await.unwrap();
            let got = capped.sql(sql).await.unwrap().collect().await.unwrap();
            assert_eq!(got, want, "{sql}");
        }
        for sql in [
            "SELECT repeat('a', 600) || repeat('b', 600)",
            "SELECT s || s || s FROM (VALUES (repeat('a', 400)), (repeat('b', 400))) v(s)",
            "SELECT s || s FROM (VALUES (repeat('a', 400)), (repeat('b', 400)), \
             (repeat('c', 400)), (repeat('d', 400)), (repeat('e', 400)), (repeat('f', 400)), \
             (repeat('g', 400)), (repeat('h', 400)), (repeat('i', 400)), (repeat('j', 400)), \
             (repeat('k', 400)), (repeat('l', 400)), (repeat('m', 400))) v(s)",
        ] {
            let err = run(sql).await.expect_err(sql);
            assert!(
                err.contains("||") && err.contains("at most"),
                "{sql}: {err}"
            );
        }
    }
}
