//! `sum()` over integers and decimals that refuses to overflow instead of wrapping around.
//!
//! DataFusion 55 adds `bigint` (and `bigint unsigned`) values with wrapping adds: the total of
//! two rows of 5×10^18 came back as -8446744073709551616. Its `DECIMAL(38, s)` totals wrap the
//! same way in 128 bits (two totals near 10^38 came back negative), and a `DECIMAL(p, s)` total
//! of more digits than its type's precision came back as a value its type cannot hold.
//! PostgreSQL and DuckDB widen the total to a `numeric` or `hugeint`, Trino refuses; either way
//! no wrong number. [`CheckedSum`] is registered under the name `sum` in place of DataFusion's:
//! for an integer or `Decimal128` argument it keeps the answer's type (`Int64`, `UInt64`,
//! `DECIMAL(min(38, p + 10), s)`, so schemas and exports are unchanged) but adds wider, with
//! DataFusion's own accumulators over `DECIMAL(38,0)` (integers) or `DECIMAL(76, s)`
//! (decimals), and narrows the total at the end: a total that does not fit its type is a 400,
//! one that does is exact even when a running total on the way did not fit. Every other
//! argument type (floats, `Decimal256`, durations, intervals) is DataFusion's `sum` unchanged.
//!
//! `sum(DISTINCT ...)` over a sliding window frame, which DataFusion implements for `Int64`
//! only and with wrapping adds, is `SlidingDistinct` here for every type the module checks.

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray};
use arrow::datatypes::{
    DECIMAL128_MAX_PRECISION, DECIMAL256_MAX_PRECISION, DataType, Decimal128Type, Decimal256Type,
    DecimalType, Field, FieldRef, Int64Type, UInt64Type, i256,
};
use arrow::error::ArrowError;
use datafusion::common::{HashMap, Result, ScalarValue};
use datafusion::execution::{FunctionRegistry, SessionState};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    ReversedUDAF, SetMonotonicity, Signature, StatisticsArgs,
};
use std::sync::Arc;

/// Registers [`CheckedSum`] as `sum`, in place of DataFusion's.
pub fn register(state: &mut SessionState) -> Result<()> {
    state.register_udaf(Arc::new(AggregateUDF::new_from_impl(CheckedSum::default())))?;
    Ok(())
}

/// The type a total of answer type `total` is kept in, for the types this module checks: 128
/// bits hold any sum of fewer than 1.7×10^19 `bigint`s or of fewer than 1.7×10^20 decimals of
/// at most 18 digits (a total of `DECIMAL(28, s)` at most: the answer's type of a
/// `DECIMAL(18, s)`, the usual type of money), and a group never has 1.8×10^19 rows (2^64);
/// 256 bits any sum of fewer than 10^38 decimals of more digits. DataFusion's own 128-bit
/// accumulators are several times faster than its 256-bit ones.
fn wide_type(total: &DataType) -> Option<DataType> {
    match total {
        DataType::Int64 | DataType::UInt64 => {
            Some(DataType::Decimal128(DECIMAL128_MAX_PRECISION, 0))
        }
        DataType::Decimal128(precision, scale) if *precision <= 18 + 10 => {
            Some(DataType::Decimal128(DECIMAL128_MAX_PRECISION, *scale))
        }
        DataType::Decimal128(_, scale) => {
            Some(DataType::Decimal256(DECIMAL256_MAX_PRECISION, *scale))
        }
        _ => None,
    }
}

/// DataFusion's `sum`, adding integers and decimals wider and refusing a total its type cannot
/// hold; see the module documentation.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct CheckedSum {
    inner: Sum,
}

/// `field` with type `wide` in place of its own.
fn widened(field: &FieldRef, wide: &DataType) -> FieldRef {
    Arc::new(Field::new(field.name(), wide.clone(), true))
}

/// `args` with the wide type as the answer's, for the accumulators that add wider.
fn wide_args<'a>(args: &AccumulatorArgs<'a>, narrow: &Narrow) -> AccumulatorArgs<'a> {
    AccumulatorArgs {
        return_field: widened(&args.return_field, &narrow.wide),
        ..*args
    }
}

impl AggregateUDFImpl for CheckedSum {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match Narrow::of(&args) {
            Some(narrow) => Ok(Box::new(Narrowing {
                inner: self.inner.accumulator(wide_args(&args, &narrow))?,
                narrow,
            })),
            None => self.inner.accumulator(args),
        }
    }

    /// A checked total's state is wide, whichever accumulator keeps it.
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let Some(wide) = wide_type(args.return_type()) else {
            return self.inner.state_fields(args);
        };
        self.inner.state_fields(StateFieldsArgs {
            return_field: widened(&args.return_field, &wide),
            ..args
        })
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        match Narrow::of(&args) {
            Some(narrow) => Ok(Box::new(NarrowingGroups {
                inner: self
                    .inner
                    .create_groups_accumulator(wide_args(&args, &narrow))?,
                narrow,
            })),
            None => self.inner.create_groups_accumulator(args),
        }
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match Narrow::of(&args) {
            Some(narrow) if args.is_distinct => Ok(Box::new(SlidingDistinct {
                counts: HashMap::default(),
                total: i256::ZERO,
                narrow,
            })),
            Some(narrow) => Ok(Box::new(Narrowing {
                inner: self
                    .inner
                    .create_sliding_accumulator(wide_args(&args, &narrow))?,
                narrow,
            })),
            None => self.inner.create_sliding_accumulator(args),
        }
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner.value_from_stats(statistics_args)
    }
}

/// How values are widened and wide totals become the answer's type: `Int64`, `UInt64` or
/// `Decimal128`, or an error naming the sum.
#[derive(Debug)]
struct Narrow {
    total: DataType,
    wide: DataType,
    name: String,
}

impl Narrow {
    /// For a sum this module checks; `None` for the types left to DataFusion's `sum`.
    fn of(args: &AccumulatorArgs) -> Option<Self> {
        let total = args.return_type();
        wide_type(total).map(|wide| Self {
            total: total.clone(),
            wide,
            name: args.name.to_string(),
        })
    }

    /// `values` (the argument's arrays) as the wide type.
    fn widen(&self, values: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        fn to<T: ArrowPrimitiveType, W: ArrowPrimitiveType>(
            a: &dyn Array,
            wide: &DataType,
            f: impl Fn(T::Native) -> W::Native,
        ) -> ArrayRef {
            Arc::new(
                a.as_primitive::<T>()
                    .unary::<_, W>(f)
                    .with_data_type(wide.clone()),
            )
        }
        let wide = &self.wide;
        values
            .iter()
            .map(|a| {
                Ok(match a.data_type() {
                    DataType::Int64 => to::<Int64Type, Decimal128Type>(a, wide, Into::into),
                    DataType::UInt64 => to::<UInt64Type, Decimal128Type>(a, wide, Into::into),
                    // Of at most 18 digits ([`wide_type`]): the values as they are.
                    DataType::Decimal128(..) if matches!(wide, DataType::Decimal128(..)) => {
                        Arc::new(
                            a.as_primitive::<Decimal128Type>()
                                .clone()
                                .with_data_type(wide.clone()),
                        )
                    }
                    DataType::Decimal128(..) => {
                        to::<Decimal128Type, Decimal256Type>(a, wide, i256::from_i128)
                    }
                    other => return datafusion::common::internal_err!("checked sum of {other}"),
                })
            })
            .collect()
    }

    /// Wide `totals` as the answer's type; a total that does not fit is a 400, as for `+` (the
    /// hint says how to ask for the total anyway).
    fn apply(&self, totals: &ArrayRef) -> Result<ArrayRef> {
        let overflow = || self.overflow();
        Ok(match self.total {
            DataType::Int64 => Arc::new(
                totals
                    .as_primitive::<Decimal128Type>()
                    .try_unary::<_, Int64Type, _>(|v| i64::try_from(v).map_err(|_| overflow()))?,
            ),
            DataType::UInt64 => Arc::new(
                totals
                    .as_primitive::<Decimal128Type>()
                    .try_unary::<_, UInt64Type, _>(|v| u64::try_from(v).map_err(|_| overflow()))?,
            ),
            DataType::Decimal128(precision, _) => {
                let fits = |v: &i128| Decimal128Type::is_valid_decimal_precision(*v, precision);
                let narrowed = match totals.data_type() {
                    DataType::Decimal128(..) => totals
                        .as_primitive::<Decimal128Type>()
                        .try_unary::<_, Decimal128Type, _>(|v| {
                        Some(v).filter(fits).ok_or_else(overflow)
                    })?,
                    _ => totals
                        .as_primitive::<Decimal256Type>()
                        .try_unary::<_, Decimal128Type, _>(|v| {
                            v.to_i128().filter(fits).ok_or_else(overflow)
                        })?,
                };
                Arc::new(narrowed.with_data_type(self.total.clone()))
            }
            ref other => return datafusion::common::internal_err!("checked sum into {other}"),
        })
    }

    /// The error for a total that does not fit the answer's type.
    fn overflow(&self) -> ArrowError {
        let hint = match self.total {
            DataType::Decimal128(..) => "cast the argument to DOUBLE for an approximate total",
            _ => "cast the argument to DECIMAL(38,0) for a wider total",
        };
        ArrowError::ArithmeticOverflow(format!(
            "Overflow happened on: {} (the total does not fit in {}; {hint})",
            self.name, self.total
        ))
    }

    /// One wide total as the answer's scalar (`None`: no rows, NULL).
    fn apply_one(&self, total: Option<i256>) -> Result<ScalarValue> {
        let wide: ArrayRef = match self.wide {
            DataType::Decimal128(..) => {
                let total = total
                    .map(|t| t.to_i128().ok_or_else(|| self.overflow()))
                    .transpose()?;
                Arc::new(
                    arrow::array::Decimal128Array::from(vec![total])
                        .with_data_type(self.wide.clone()),
                )
            }
            _ => Arc::new(
                arrow::array::Decimal256Array::from(vec![total]).with_data_type(self.wide.clone()),
            ),
        };
        ScalarValue::try_from_array(&self.apply(&wide)?, 0)
    }
}

/// One total (of all rows, or of a window frame) kept wide and narrowed when asked for.
#[derive(Debug)]
struct Narrowing {
    inner: Box<dyn Accumulator>,
    narrow: Narrow,
}

impl Accumulator for Narrowing {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(&self.narrow.widen(values)?)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let wide = self.inner.evaluate()?.to_array()?;
        ScalarValue::try_from_array(&self.narrow.apply(&wide)?, 0)
    }

    fn size(&self) -> usize {
        self.inner.size() + self.narrow.name.capacity()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(&self.narrow.widen(values)?)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

/// The totals of many groups kept wide and narrowed when emitted.
struct NarrowingGroups {
    inner: Box<dyn GroupsAccumulator>,
    narrow: Narrow,
}

impl GroupsAccumulator for NarrowingGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner.update_batch(
            &self.narrow.widen(values)?,
            group_indices,
            opt_filter,
            total_num_groups,
        )
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.narrow.apply(&self.inner.evaluate(emit_to)?)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.inner
            .convert_to_state(&self.narrow.widen(values)?, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size() + self.narrow.name.capacity()
    }
}

/// `sum(DISTINCT ...)` over a sliding window frame: how many times each value is in the frame,
/// and the total of the distinct ones in 256 bits (no sum of distinct 128-bit values can
/// overflow it), narrowed when asked for.
#[derive(Debug)]
struct SlidingDistinct {
    counts: HashMap<i128, usize>,
    total: i256,
    narrow: Narrow,
}

impl SlidingDistinct {
    /// One more `v` in the frame.
    fn add(&mut self, v: i128) {
        let n = self.counts.entry(v).or_insert(0);
        if *n == 0 {
            self.total = self.total.wrapping_add(i256::from_i128(v));
        }
        *n += 1;
    }

    /// Calls `f` with each non-NULL value of `values`' (checked) integer or decimal column.
    fn each(values: &[ArrayRef], mut f: impl FnMut(i128)) -> Result<()> {
        fn all<T: ArrowPrimitiveType>(a: &dyn Array, f: &mut impl FnMut(i128))
        where
            T::Native: Into<i128>,
        {
            a.as_primitive::<T>()
                .iter()
                .flatten()
                .for_each(|v| f(v.into()));
        }
        let a = values[0].as_ref();
        match a.data_type() {
            DataType::Int64 => all::<Int64Type>(a, &mut f),
            DataType::UInt64 => all::<UInt64Type>(a, &mut f),
            DataType::Decimal128(..) => all::<Decimal128Type>(a, &mut f),
            other => return datafusion::common::internal_err!("checked sum of {other}"),
        }
        Ok(())
    }
}

impl Accumulator for SlidingDistinct {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        Self::each(values, |v| self.add(v))
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        Self::each(values, |v| {
            if let Some(n) = self.counts.get_mut(&v) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&v);
                    self.total = self.total.wrapping_sub(i256::from_i128(v));
                }
            }
        })
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.narrow
            .apply_one((!self.counts.is_empty()).then_some(self.total))
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + self.counts.capacity() * size_of::<(i128, usize)>()
            + self.narrow.name.capacity()
    }

    /// The distinct values in the wide type (a window merges no states; this is the state
    /// DataFusion's accumulator keeps, for completeness).
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let keys: Vec<ScalarValue> = match self.narrow.wide {
            DataType::Decimal256(precision, scale) => self
                .counts
                .keys()
                .map(|k| ScalarValue::Decimal256(Some(i256::from_i128(*k)), precision, scale))
                .collect(),
            DataType::Decimal128(precision, scale) => self
                .counts
                .keys()
                .map(|k| ScalarValue::Decimal128(Some(*k), precision, scale))
                .collect(),
            ref other => return datafusion::common::internal_err!("checked sum in {other}"),
        };
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &keys,
            &self.narrow.wide,
        ))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for keys in states[0].as_list::<i32>().iter().flatten() {
            let keys: Vec<i128> = match keys.data_type() {
                DataType::Decimal256(..) => keys
                    .as_primitive::<Decimal256Type>()
                    .iter()
                    .flatten()
                    .filter_map(|k| k.to_i128())
                    .collect(),
                _ => keys
                    .as_primitive::<Decimal128Type>()
                    .iter()
                    .flatten()
                    .collect(),
            };
            keys.into_iter().for_each(|k| self.add(k));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checked_arithmetic::tests::{checked, one_in as one};
    use datafusion::prelude::SessionContext;

    const BIG: &str = "(VALUES (1, CAST(5000000000000000000 AS BIGINT)), (1, 5000000000000000000), \
                       (2, 9223372036854775807), (2, -9223372036854775807)) t(g, a)";

    #[tokio::test]
    async fn an_integer_total_that_does_not_fit_is_an_error_not_a_wrapped_value() {
        let ctx = checked();
        for sql in [
            format!("SELECT sum(a) FROM {BIG}"),
            format!("SELECT g, sum(a) FROM {BIG} GROUP BY g"),
            format!("SELECT sum(DISTINCT a) FROM {BIG} WHERE g = 1 OR a > 0"),
            format!("SELECT sum(a) OVER (ORDER BY a ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM {BIG}"),
            format!("SELECT sum(a) OVER () FROM {BIG}"),
            "SELECT sum(a) FROM (VALUES (CAST(18446744073709551615 AS BIGINT UNSIGNED)), (CAST(1 AS BIGINT UNSIGNED))) t(a)".to_string(),
            format!("SELECT sum(DISTINCT a) OVER (ORDER BY a ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM {BIG}"),
        ] {
            let e = one(&ctx, &sql).await.expect_err(&sql);
            // (DISTINCT is planned as a sum over a grouping, of a column it names `alias1`.)
            assert!(e.contains("Overflow happened on: sum("), "{sql}: {e}");
            assert!(e.contains("DECIMAL(38,0)"), "{sql}: {e}");
        }
        // DataFusion's own sum wraps: what this module is for.
        let plain = SessionContext::new();
        let wrapped = one(&plain, &format!("SELECT sum(a) FROM {BIG} WHERE g = 1"))
            .await
            .unwrap();
        assert!(wrapped.contains("-8446744073709551616"), "{wrapped}");
    }

    /// Two rows of about the largest `DECIMAL(38,2)` there is (group 1), and the same twice with
    /// a third that brings their total back (group 2).
    const HUGE: &str = "(VALUES (1, CAST('999999999999999999999999999999999999.99' AS DECIMAL(38,2))), \
                        (1, CAST('999999999999999999999999999999999999.98' AS DECIMAL(38,2))), \
                        (2, CAST('999999999999999999999999999999999999.99' AS DECIMAL(38,2))), \
                        (2, CAST('999999999999999999999999999999999999.99' AS DECIMAL(38,2))), \
                        (2, CAST('-999999999999999999999999999999999999.99' AS DECIMAL(38,2)))) t(g, a)";

    #[tokio::test]
    async fn a_decimal_total_that_does_not_fit_is_an_error_not_a_wrapped_value() {
        let ctx = checked();
        for sql in [
            format!("SELECT sum(a) FROM {HUGE} WHERE g = 1"),
            format!("SELECT g, sum(a) FROM {HUGE} GROUP BY g"),
            format!(
                "SELECT sum(a) OVER (ORDER BY g ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM {HUGE}"
            ),
            format!(
                "SELECT sum(DISTINCT a) OVER (ORDER BY g ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM {HUGE}"
            ),
        ] {
            let e = one(&ctx, &sql).await.expect_err(&sql);
            assert!(e.contains("Overflow happened on: sum("), "{sql}: {e}");
            assert!(
                e.contains("Decimal128(38, 2)") && e.contains("DOUBLE"),
                "{sql}: {e}"
            );
        }
        // DataFusion's own sum wraps into a negative total.
        let plain = SessionContext::new();
        let wrapped = one(&plain, &format!("SELECT sum(a) FROM {HUGE} WHERE g = 1"))
            .await
            .unwrap();
        assert!(wrapped.contains("| -"), "{wrapped}");
        // A running total beyond 38 digits on the way, back in range at the end: exact.
        let got = one(&ctx, &format!("SELECT sum(a) AS s FROM {HUGE} WHERE g = 2"))
            .await
            .unwrap();
        assert!(
            got.contains("| 999999999999999999999999999999999999.99 |"),
            "{got}"
        );
        let df = ctx
            .sql("SELECT sum(a) AS s FROM (VALUES (CAST(1.25 AS DECIMAL(5,2)))) t(a)")
            .await
            .unwrap();
        assert_eq!(
            df.schema().field(0).data_type(),
            &DataType::Decimal128(15, 2)
        );
    }

    #[tokio::test]
    async fn sliding_distinct_totals_count_each_value_once_in_every_frame() {
        let ctx = checked();
        // Frames of three rows: each value once, however often it stands in the frame, and
        // gone once its last copy leaves. DataFusion implements this for `bigint` only; here
        // `bigint unsigned` and decimals too.
        for (cast, want) in [
            (
                "BIGINT",
                [
                    "| 1 | 5  |",
                    "| 2 | 5  |",
                    "| 3 | 12 |",
                    "| 4 | 12 |",
                    "| 5 | 16 |",
                    "| 6 | 9  |",
                ],
            ),
            (
                "BIGINT UNSIGNED",
                [
                    "| 1 | 5  |",
                    "| 2 | 5  |",
                    "| 3 | 12 |",
                    "| 4 | 12 |",
                    "| 5 | 16 |",
                    "| 6 | 9  |",
                ],
            ),
        ] {
            let sql = format!(
                "SELECT i, sum(DISTINCT CAST(a AS {cast})) OVER (ORDER BY i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS d \
                 FROM (VALUES (1, 5), (2, 5), (3, 7), (4, NULL), (5, 9), (6, 9)) t(i, a) ORDER BY i"
            );
            let got = one(&ctx, &sql).await.unwrap();
            for w in want {
                assert!(got.contains(w), "{cast}: {w} in {got}");
            }
        }
        let got = one(&ctx, "SELECT i, sum(DISTINCT CAST(a AS DECIMAL(10,2))) OVER (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS d \
                             FROM (VALUES (1, 1.5), (2, 1.5), (3, 2.25)) t(i, a) ORDER BY i")
            .await
            .unwrap();
        for w in ["| 1 | 1.50 |", "| 2 | 1.50 |", "| 3 | 3.75 |"] {
            assert!(got.contains(w), "{w} in {got}");
        }
    }

    #[tokio::test]
    async fn totals_that_fit_are_exact_with_their_types_names_and_nulls() {
        let ctx = checked();
        // A running total beyond the type on the way, back in range at the end.
        let got = one(
            &ctx,
            &format!("SELECT sum(a) AS s FROM {BIG} WHERE a <> 9223372036854775807"),
        )
        .await
        .unwrap();
        assert!(got.contains("| 776627963145224193 |"), "{got}");
        let got = one(
            &ctx,
            &format!("SELECT g, sum(a) FROM {BIG} WHERE g = 2 GROUP BY g"),
        )
        .await
        .unwrap();
        assert!(got.contains("| g | sum(t.a) |"), "{got}");
        assert!(got.contains("| 2 | 0        |"), "{got}");
        let df = ctx
            .sql("SELECT sum(a) AS s, sum(b) AS u, sum(c) AS i, sum(f) AS f, sum(d) AS d FROM \
                  (VALUES (CAST(1 AS BIGINT), CAST(2 AS INT UNSIGNED), CAST(3 AS INT), 1.5, CAST(1.25 AS DECIMAL(5,2)))) t(a, b, c, f, d)")
            .await
            .unwrap();
        let types: Vec<DataType> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Int64,
                DataType::UInt64,
                DataType::Int64,
                DataType::Float64,
                DataType::Decimal128(15, 2)
            ]
        );
        let got = arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
            .unwrap()
            .to_string();
        assert!(got.contains("| 1 | 2 | 3 | 1.5 | 1.25 |"), "{got}");
        // No rows, or only NULLs: NULL, as before.
        let got = one(&ctx, "SELECT sum(a) AS s, sum(a) FILTER (WHERE a > 5) AS f FROM (VALUES (CAST(NULL AS BIGINT)), (2)) t(a)")
            .await
            .unwrap();
        assert!(got.contains("| 2 |   |"), "{got}");
        // Windows, DISTINCT, and the state passed between partial and final aggregation.
        let got = one(&ctx, "SELECT g, sum(DISTINCT a) AS d, sum(a) AS s, \
                              sum(sum(a)) OVER (ORDER BY g ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS w \
                              FROM (VALUES (1, 2), (1, 2), (2, 5), (3, 7)) t(g, a) GROUP BY g ORDER BY g")
            .await
            .unwrap();
        assert!(got.contains("| 1 | 2 | 4 | 4  |"), "{got}");
        assert!(got.contains("| 2 | 5 | 5 | 9  |"), "{got}");
        assert!(got.contains("| 3 | 7 | 7 | 12 |"), "{got}");
    }

    /// Decimals of at most 18 digits (money's usual `DECIMAL(18, 2)`) are added in 128 bits,
    /// which no count of them can overflow, wider ones in 256: both exact, in the same types.
    #[tokio::test]
    async fn money_is_added_in_128_bits_and_wider_decimals_in_256() {
        assert_eq!(
            wide_type(&DataType::Decimal128(28, 2)),
            Some(DataType::Decimal128(38, 2))
        );
        assert_eq!(
            wide_type(&DataType::Decimal128(29, 2)),
            Some(DataType::Decimal256(76, 2))
        );
        let ctx = checked();
        for (precision, total) in [(18, 28), (19, 29), (28, 38)] {
            let sql = format!(
                "SELECT v % 2 AS g, sum(CASE WHEN v % 5 = 0 THEN -d ELSE d END) AS s \
                 FROM (SELECT v, CAST('9999999999999999.99' AS DECIMAL({precision},2)) AS d \
                 FROM generate_series(1, 1000) t(v)) GROUP BY g ORDER BY g"
            );
            let df = ctx.sql(&sql).await.unwrap();
            let s = df.schema().field(1).data_type().clone();
            let got = arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
                .unwrap()
                .to_string();
            // Of each 500, 100 are negative: 300 times the value, in either group.
            assert!(
                got.contains("| 0 | 2999999999999999997.00 |"),
                "{precision}: {got}"
            );
            assert!(
                got.contains("| 1 | 2999999999999999997.00 |"),
                "{precision}: {got}"
            );
            assert!(matches!(s, DataType::Decimal128(p, 2) if p == total), "{s}");
        }
    }
}
