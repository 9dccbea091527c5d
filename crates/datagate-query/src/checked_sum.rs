//! `sum()` over integers that refuses to overflow instead of wrapping around.
//!
//! DataFusion 55 adds `bigint` (and `bigint unsigned`) values with wrapping adds: the total of
//! two rows of 5×10^18 came back as -8446744073709551616. PostgreSQL and DuckDB widen the total
//! to a `numeric` or `hugeint`, Trino refuses; either way no wrong number. [`CheckedSum`] is
//! registered under the name `sum` in place of DataFusion's: for an integer argument it keeps
//! the answer's type (`Int64` or `UInt64`, so schemas and exports are unchanged) but adds in 128
//! bits, with DataFusion's own accumulators over `DECIMAL(38,0)`, and narrows the total at the
//! end: a total that does not fit its type is a 400, one that does is exact even when a running
//! total on the way did not fit. Every other argument type (floats, decimals, durations,
//! intervals) is DataFusion's `sum` unchanged.
//!
//! One case keeps DataFusion's wrapping adds: `sum(DISTINCT ...)` over a sliding window frame,
//! which DataFusion implements for `Int64` only.

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray};
use arrow::datatypes::{
    DECIMAL128_MAX_PRECISION, DataType, Decimal128Type, Field, FieldRef, Int64Type, UInt64Type,
};
use arrow::error::ArrowError;
use datafusion::common::{Result, ScalarValue};
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

/// The type integer totals are kept in: 38 digits hold any sum of fewer than 10^19 `bigint`s.
const WIDE: DataType = DataType::Decimal128(DECIMAL128_MAX_PRECISION, 0);

/// DataFusion's `sum`, adding integers in 128 bits and refusing a total its type cannot hold;
/// see the module documentation.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct CheckedSum {
    inner: Sum,
}

/// `field` with the wide type in place of its own.
fn widened(field: &FieldRef) -> FieldRef {
    Arc::new(Field::new(field.name(), WIDE, true))
}

/// `args` with the wide type as the answer's, for the accumulators that add in 128 bits.
fn wide_args<'a>(args: &AccumulatorArgs<'a>) -> AccumulatorArgs<'a> {
    AccumulatorArgs {
        return_field: widened(&args.return_field),
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
                inner: self.inner.accumulator(wide_args(&args))?,
                narrow,
            })),
            None => self.inner.accumulator(args),
        }
    }

    /// An integer total's state is wide, whichever accumulator keeps it.
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if !matches!(args.return_type(), DataType::Int64 | DataType::UInt64) {
            return self.inner.state_fields(args);
        }
        self.inner.state_fields(StateFieldsArgs {
            return_field: widened(&args.return_field),
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
                inner: self.inner.create_groups_accumulator(wide_args(&args))?,
                narrow,
            })),
            None => self.inner.create_groups_accumulator(args),
        }
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match Narrow::of(&args) {
            // DataFusion's sliding DISTINCT sum takes `Int64` only.
            Some(narrow) if !args.is_distinct => Ok(Box::new(Narrowing {
                inner: self.inner.create_sliding_accumulator(wide_args(&args))?,
                narrow,
            })),
            _ => self.inner.create_sliding_accumulator(args),
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

/// `values`' integers as the wide type.
fn widen(values: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
    fn to_wide<T: ArrowPrimitiveType>(a: &dyn Array) -> Result<ArrayRef>
    where
        T::Native: Into<i128>,
    {
        Ok(Arc::new(
            a.as_primitive::<T>()
                .unary::<_, Decimal128Type>(Into::into)
                .with_data_type(WIDE),
        ))
    }
    values
        .iter()
        .map(|a| match a.data_type() {
            DataType::Int64 => to_wide::<Int64Type>(a),
            DataType::UInt64 => to_wide::<UInt64Type>(a),
            other => datafusion::common::internal_err!("checked sum of {other}"),
        })
        .collect()
}

/// How wide totals become the answer's type: `Int64` or `UInt64`, or an error naming the sum.
#[derive(Debug)]
struct Narrow {
    total: DataType,
    name: String,
}

impl Narrow {
    /// For a sum of integers (`sum`'s signature makes every one `Int64` or `UInt64`); `None`
    /// for the types DataFusion's `sum` adds without wrapping.
    fn of(args: &AccumulatorArgs) -> Option<Self> {
        let total = args.return_type();
        matches!(total, DataType::Int64 | DataType::UInt64).then(|| Self {
            total: total.clone(),
            name: args.name.to_string(),
        })
    }

    /// Wide `totals` as the answer's type; a total that does not fit is a 400, as for `+` (the
    /// hint says how to ask for the total anyway).
    fn apply(&self, totals: &ArrayRef) -> Result<ArrayRef> {
        let wide = totals.as_primitive::<Decimal128Type>();
        let overflow = || {
            ArrowError::ArithmeticOverflow(format!(
                "Overflow happened on: {} (the total does not fit in {}; cast the argument \
                 to DECIMAL(38,0) for a wider total)",
                self.name, self.total
            ))
        };
        Ok(match self.total {
            DataType::Int64 => Arc::new(
                wide.try_unary::<_, Int64Type, _>(|v| i64::try_from(v).map_err(|_| overflow()))?,
            ),
            _ => Arc::new(
                wide.try_unary::<_, UInt64Type, _>(|v| u64::try_from(v).map_err(|_| overflow()))?,
            ),
        })
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
        self.inner.update_batch(&widen(values)?)
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
        self.inner.retract_batch(&widen(values)?)
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
        self.inner
            .update_batch(&widen(values)?, group_indices, opt_filter, total_num_groups)
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
        self.inner.convert_to_state(&widen(values)?, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size() + self.narrow.name.capacity()
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
}
