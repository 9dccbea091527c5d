//! Column sensitivity below the query (API.md §4): for everyone outside the owning department
//! and admins, a dataset's table is a view that serves each `masked` column through its mask and
//! leaves `private` columns out. Filters, joins, aggregates, `EXPLAIN` and error messages all
//! run above that view, so they see masked values only.
//!
//! Masks: `hash` (HMAC-SHA256 with the deployment's mask key: the same value hashes the same in
//! every dataset, so joins still work, and without the key no dictionary reverses it), `redact`
//! (`***`), `partial` (Chinese de-identification conventions: names `张*` / `欧阳**`, mobiles
//! `138****1234`, ID numbers first 6 and last 4), `year` (dates and timestamps to the first day
//! of their year, text dates to their year), `null`.

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast,
    lit, when,
};
use datagate_core::{Mask, Sensitivity};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

/// The deployment's secret for `hash` masks.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MaskKey([u8; 32]);

impl MaskKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes (sent to this deployment's workers, which mask inside the fragments).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A random key (tests, tools without a data directory).
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        rand::fill(&mut b);
        Self(b)
    }
}

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKey(..)")
    }
}

/// `hash`: the first 16 bytes of HMAC-SHA256(key, value), in hex.
pub fn hash_value(key: &MaskKey, value: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// `partial`: keeps what the conventions allow of mobiles, ID numbers and names, and a quarter
/// at each end of anything else; total on every input.
pub fn partial_value(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    let stars = |k: usize| "*".repeat(k);
    let take = |r: std::ops::Range<usize>| chars[r].iter().collect::<String>();
    let digits = |r: std::ops::Range<usize>| chars[r].iter().all(|c| c.is_ascii_digit());
    if n == 0 {
        return String::new();
    }
    // Mobile numbers: 138****1234.
    if n == 11 && chars[0] == '1' && digits(0..11) {
        return format!("{}****{}", take(0..3), take(7..11));
    }
    // Resident ID numbers (18, or the old 15): region code and last four kept.
    let id18 = n == 18
        && digits(0..17)
        && (chars[17].is_ascii_digit() || chars[17] == 'X' || chars[17] == 'x');
    if id18 || (n == 15 && digits(0..15)) {
        return format!("{}{}{}", take(0..6), stars(n - 10), take(n - 4..n));
    }
    // Chinese personal names: 张* / 王** / 欧阳**.
    let is_han = |c: &char| ('\u{4e00}'..='\u{9fff}').contains(c) || *c == '·';
    if n <= 4 && chars.iter().all(is_han) {
        return match n {
            1 => stars(1),
            4 => format!("{}{}", take(0..2), stars(2)),
            _ => format!("{}{}", take(0..1), stars(n - 1)),
        };
    }
    match n {
        1 => return stars(1),
        2 => return format!("{}*", take(0..1)),
        _ => {}
    }
    let keep = (n / 4).max(1);
    let tail = n / 4;
    format!(
        "{}{}{}",
        take(0..keep),
        stars(n - keep - tail),
        take(n - tail..n)
    )
}

/// A string-to-string mask as a DataFusion function (NULL stays NULL).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct MaskFunction {
    mask: Mask,
    key: MaskKey,
    signature: Signature,
}

impl MaskFunction {
    pub(crate) fn udf(mask: Mask, key: &MaskKey) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(Self {
            mask,
            key: key.clone(),
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        }))
    }

    fn apply(&self, v: &str) -> String {
        match self.mask {
            Mask::Hash => hash_value(&self.key, v),
            _ => partial_value(v),
        }
    }
}

impl ScalarUDFImpl for MaskFunction {
    fn name(&self) -> &str {
        match self.mask {
            Mask::Hash => "mask_hash",
            _ => "mask_partial",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let Some(arg) = args.args.into_iter().next() else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
        };
        Ok(match arg {
            ColumnarValue::Scalar(ScalarValue::Utf8(v)) => {
                ColumnarValue::Scalar(ScalarValue::Utf8(v.map(|s| self.apply(&s))))
            }
            ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
            ColumnarValue::Array(a) => {
                let strings = arrow::array::as_string_array(&a);
                let out: StringArray = strings.iter().map(|v| v.map(|s| self.apply(s))).collect();
                ColumnarValue::Array(Arc::new(out) as ArrayRef)
            }
        })
    }
}

/// The expression serving column `column` (of `data_type`) through `mask`.
pub fn masked_expr(column: Expr, data_type: &DataType, mask: Mask, key: &MaskKey) -> Expr {
    let as_text = || cast(column.clone(), DataType::Utf8);
    match mask {
        Mask::Hash | Mask::Partial => Expr::ScalarFunction(ScalarFunction::new_udf(
            MaskFunction::udf(mask, key),
            vec![as_text()],
        )),
        Mask::Redact => when(column.clone().is_null(), lit(ScalarValue::Utf8(None)))
            .otherwise(lit("***"))
            .unwrap_or_else(|_| lit("***")),
        Mask::Null => cast(lit(ScalarValue::Null), data_type.clone()),
        // The first day of the value's year, built from its year: DataFusion's `date_trunc`
        // works in nanoseconds, which end in 2262, and 9999-12-31 is a common "no end date".
        Mask::Year => match data_type {
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => {
                use datafusion::functions::datetime::expr_fn::{date_part, make_date};
                cast(
                    make_date(date_part(lit("year"), column), lit(1i32), lit(1i32)),
                    data_type.clone(),
                )
            }
            // Text dates keep their first four characters; anything else is withheld.
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                datafusion::functions::unicode::expr_fn::left(as_text(), lit(4i64))
            }
            other => cast(lit(ScalarValue::Null), other.clone()),
        },
    }
}

/// How a column is served to someone outside the owning department.
pub fn outside_view(sensitivity: Sensitivity, mask: Option<Mask>) -> Option<Option<Mask>> {
    match sensitivity {
        Sensitivity::Public => Some(None),
        // A masked column without a declared mask is withheld entirely (served as NULL).
        Sensitivity::Masked => Some(Some(mask.unwrap_or(Mask::Null))),
        Sensitivity::Private => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use proptest::prelude::*;

    #[test]
    fn partial_follows_the_conventions() {
        assert_eq!(partial_value("张三"), "张*");
        assert_eq!(partial_value("王小明"), "王**");
        assert_eq!(partial_value("欧阳娜娜"), "欧阳**");
        assert_eq!(partial_value("13812341234"), "138****1234");
        assert_eq!(partial_value("33011019550828353X"), "330110********353X");
        assert_eq!(partial_value("330110550828353"), "330110*****8353");
        assert_eq!(partial_value(""), "");
        assert_eq!(partial_value("a"), "*");
        assert_eq!(partial_value("ab"), "a*");
        assert_eq!(partial_value("李"), "*");
        assert_eq!(partial_value("abcdefgh"), "ab****gh");
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let (k1, k2) = (MaskKey::new([1; 32]), MaskKey::new([2; 32]));
        assert_eq!(hash_value(&k1, "张三"), hash_value(&k1, "张三"));
        assert_ne!(hash_value(&k1, "张三"), hash_value(&k2, "张三"));
        assert_ne!(hash_value(&k1, "张三"), hash_value(&k1, "张四"));
        assert_eq!(hash_value(&k1, "").len(), 32);
    }

    #[test]
    fn mask_functions_keep_nulls_and_mask_every_value() {
        use arrow::datatypes::Field;
        let input: ArrayRef = Arc::new(StringArray::from(vec![
            Some("张三"),
            None,
            Some(""),
            Some("13812341234"),
        ]));
        for mask in [Mask::Hash, Mask::Partial] {
            let f = MaskFunction::udf(mask, &MaskKey::new([3; 32]));
            let out = f
                .invoke_with_args(ScalarFunctionArgs {
                    args: vec![ColumnarValue::Array(input.clone())],
                    arg_fields: vec![Arc::new(Field::new("x", DataType::Utf8, true))],
                    number_rows: 4,
                    return_field: Arc::new(Field::new("y", DataType::Utf8, true)),
                    config_options: Default::default(),
                })
                .unwrap();
            let ColumnarValue::Array(a) = out else {
                panic!("an array in, an array out")
            };
            let a = arrow::array::as_string_array(&a);
            assert!(a.is_null(1), "NULL stays NULL");
            assert_ne!(a.value(0), "张三");
            assert_ne!(a.value(3), "13812341234");
        }
    }

    #[tokio::test]
    async fn a_year_mask_keeps_the_year_over_the_whole_calendar() {
        use arrow::array::{Array, Date32Array, Date64Array, TimestampMicrosecondArray};
        use arrow::datatypes::{Field, Schema, TimeUnit};
        use arrow::record_batch::RecordBatch;
        use chrono::{Datelike, NaiveDate};
        use datafusion::prelude::col;
        let dates = [
            NaiveDate::from_ymd_opt(1, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(1900, 6, 15).unwrap(),
            NaiveDate::from_ymd_opt(1970, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(2024, 12, 31).unwrap(),
            NaiveDate::from_ymd_opt(2263, 3, 1).unwrap(),
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
        ];
        let days = |d: &NaiveDate| (*d - NaiveDate::default()).num_days() as i32;
        let mut day: Vec<Option<i32>> = dates.iter().map(|d| Some(days(d))).collect();
        day.push(None);
        let ms: Vec<Option<i64>> = day
            .iter()
            .map(|d| d.map(|d| d as i64 * 86_400_000))
            .collect();
        let us: Vec<Option<i64>> = ms.iter().map(|m| m.map(|m| m * 1000 + 7)).collect();
        let timestamp = DataType::Timestamp(TimeUnit::Microsecond, None);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("d32", DataType::Date32, true),
                Field::new("d64", DataType::Date64, true),
                Field::new("ts", timestamp.clone(), true),
            ])),
            vec![
                Arc::new(Date32Array::from(day)) as ArrayRef,
                Arc::new(Date64Array::from(ms)),
                Arc::new(TimestampMicrosecondArray::from(us)),
            ],
        )
        .unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        let key = MaskKey::new([1; 32]);
        let masked = ctx
            .read_batch(batch)
            .unwrap()
            .select(vec![
                masked_expr(col("d32"), &DataType::Date32, Mask::Year, &key).alias("d32"),
                masked_expr(col("d64"), &DataType::Date64, Mask::Year, &key).alias("d64"),
                masked_expr(col("ts"), &timestamp, Mask::Year, &key).alias("ts"),
            ])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let out = &masked[0];
        let want: Vec<Option<i32>> = dates
            .iter()
            .map(|d| Some(days(&NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap())))
            .chain([None])
            .collect();
        let d32 = out
            .column(0)
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap();
        assert_eq!(d32.iter().collect::<Vec<_>>(), want);
        let d64 = out
            .column(1)
            .as_any()
            .downcast_ref::<Date64Array>()
            .unwrap();
        let want_ms: Vec<Option<i64>> = want
            .iter()
            .map(|d| d.map(|d| d as i64 * 86_400_000))
            .collect();
        assert_eq!(d64.iter().collect::<Vec<_>>(), want_ms);
        let ts = out
            .column(2)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(out.column(2).data_type(), &timestamp);
        let want_us: Vec<Option<i64>> = want_ms.iter().map(|m| m.map(|m| m * 1000)).collect();
        assert_eq!(ts.iter().collect::<Vec<_>>(), want_us);
        assert!(ts.is_null(6));
    }

    proptest! {
        #[test]
        fn masks_are_total_and_never_return_the_secret(s in ".{0,40}") {
            let p = partial_value(&s);
            prop_assert_eq!(p.chars().count(), s.chars().count());
            // Something is always hidden.
            prop_assert!(s.is_empty() || p.contains('*'));
            let h = hash_value(&MaskKey::new([7; 32]), &s);
            prop_assert_eq!(h.len(), 32);
        }

        #[test]
        fn phone_numbers_keep_only_prefix_and_suffix(n in 0u64..10_000_000_000) {
            let phone = format!("1{n:010}");
            let p = partial_value(&phone);
            prop_assert_eq!(&p[..3], &phone[..3]);
            prop_assert_eq!(&p[3..7], "****");
            prop_assert_eq!(&p[7..], &phone[7..]);
        }
    }
}
