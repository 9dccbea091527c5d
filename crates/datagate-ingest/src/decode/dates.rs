//! Dates and times written as text, read into `date32` and `timestamp(unit)` columns by one rule
//! in every text format.
//!
//! Every shape arrow reads is read (`2024-01-05`, `2024-01-05T10:00:00.5`, with `Z` or an offset,
//! converted to UTC), and so are the shapes spreadsheets and government systems export that arrow
//! refuses: `2024/1/5` and `2024.1.5`, `2024年1月5日`, and times without seconds
//! (`2024/1/5 10:00`, `2024-01-05 10:00`). A number is no time: an epoch count's unit cannot be
//! told from the value (an NDJSON `1704067200` into `timestamp(us)` was stored as 1970-01-01
//! 00:28), so it is refused with its line and column, as in CSV.

use arrow::array::{Array, ArrayRef, PrimitiveBuilder, StringArray};
use arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use arrow::datatypes::{ArrowTimestampType, Date32Type, TimeUnit};
use chrono::Datelike;
use std::sync::Arc;

/// Days since 1970-01-01 of a date in any shape above; `None` when it is none.
pub(super) fn date(s: &str) -> Option<i32> {
    // Blanks around the value are no part of it, as PostgreSQL reads one.
    let s = s.trim_ascii();
    if let Some(days) = iso_date(s.as_bytes()) {
        return Some(days);
    }
    if let Some(days) = Date32Type::parse(s) {
        return Some(days);
    }
    let (y, m, d, rest) = spreadsheet_date(s)?;
    if !rest.is_empty() {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(y, m, d)?;
    Some(date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
}

/// A time in any shape above as a count of `T`'s unit since the epoch, UTC, rounded to the
/// nearest unit (a half to the later time: `10:00:00.9999995` into microseconds is
/// `10:00:01`, as PostgreSQL rounds; arrow cuts); `None` when it is none.
pub(super) fn timestamp<T: ArrowTimestampType>(s: &str) -> Option<i64> {
    let s = s.trim_ascii();
    let t = match string_to_datetime(&chrono::Utc, s) {
        Ok(t) => t,
        Err(_) => string_to_datetime(&chrono::Utc, &canonical_time(s)?).ok()?,
    };
    if T::UNIT == TimeUnit::Nanosecond {
        return t.timestamp_nanos_opt();
    }
    let per_second = units_per_second(T::UNIT);
    let nanos_per_unit = 1_000_000_000 / per_second;
    let fraction = i64::from(t.timestamp_subsec_nanos());
    t.timestamp()
        .checked_mul(per_second)?
        .checked_add((fraction + nanos_per_unit / 2) / nanos_per_unit)
}

fn units_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// `col`, a `timestamp` column of a finer unit than `to`, in `to` rounded to the nearest unit as
/// [`timestamp`] rounds text (arrow's cast cuts `.9999995` to `.999999`); `None` when `col` is no
/// timestamp of a finer unit.
pub(super) fn rounded_to_unit(col: &ArrayRef, to: TimeUnit) -> Option<ArrayRef> {
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Int64Type};
    let DataType::Timestamp(from, None) = col.data_type() else {
        return None;
    };
    let factor = units_per_second(*from) / units_per_second(to);
    if factor <= 1 {
        return None;
    }
    let counts = arrow::compute::cast(col, &DataType::Int64).ok()?;
    let rounded: Int64Array = counts.as_primitive::<Int64Type>().unary(|v| {
        let (whole, rest) = (v.div_euclid(factor), v.rem_euclid(factor));
        whole + i64::from(2 * rest >= factor)
    });
    arrow::compute::cast(&rounded, &DataType::Timestamp(to, None)).ok()
}

/// `values` as a `date32` column (nulls stay null); a value that is none gives its row and
/// what is wrong.
pub(super) fn dates(values: &StringArray) -> Result<ArrayRef, (usize, String)> {
    let mut b = PrimitiveBuilder::<Date32Type>::with_capacity(values.len());
    for (row, v) in values.iter().enumerate() {
        match v {
            None => b.append_null(),
            Some(v) => {
                b.append_value(date(v).ok_or_else(|| {
                    (row, format!("value {v:?} is not a valid date32{}", hint(v)))
                })?)
            }
        }
    }
    Ok(Arc::new(b.finish()))
}

/// `values` as a `timestamp` column of `T`'s unit, without a zone (nulls stay null); a value
/// that is none gives its row and what is wrong.
pub(super) fn timestamps<T: ArrowTimestampType>(
    values: &StringArray,
) -> Result<ArrayRef, (usize, String)> {
    let ty = datagate_core::types::type_name(&T::DATA_TYPE);
    let mut b = PrimitiveBuilder::<T>::with_capacity(values.len());
    for (row, v) in values.iter().enumerate() {
        match v {
            None => b.append_null(),
            Some(v) => b.append_value(
                timestamp::<T>(v)
                    .ok_or_else(|| (row, format!("value {v:?} is not a valid {ty}{}", hint(v))))?,
            ),
        }
    }
    Ok(Arc::new(b.finish()))
}

/// A hint for a value that is no date or time, when it looks like an epoch count.
pub(super) fn hint(value: &str) -> &'static str {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        " (a number's unit cannot be told: write dates and times as text, e.g. 2024-01-05 or \
         2024-01-05T10:00:00)"
    } else {
        ""
    }
}

/// Days since 1970-01-01 of a valid `YYYY-MM-DD` date; `None` for anything else (another shape,
/// or a day the month lacks, which the general parser then refuses too). The shape nearly every
/// export writes, read digit by digit: arrow's parser tries its other shapes first (a third of the
/// server's decoding time on the market-entity upload, two date columns of thirteen).
pub(super) fn iso_date(s: &[u8]) -> Option<i32> {
    let &[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = s else {
        return None;
    };
    let mut n = [0u32; 8];
    for (slot, c) in n.iter_mut().zip([y0, y1, y2, y3, m0, m1, d0, d1]) {
        if !c.is_ascii_digit() {
            return None;
        }
        *slot = u32::from(c - b'0');
    }
    let year = n[0] * 1000 + n[1] * 100 + n[2] * 10 + n[3];
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, n[4] * 10 + n[5], n[6] * 10 + n[7])?;
    Some(date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
}

/// 1970-01-01 counted in days from 0001-01-01 (day 1), as chrono's `num_days_from_ce` counts.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The date at the start of `s` written `YYYY/M/D`, `YYYY.M.D`, `YYYY-M-D` or `YYYY年M月D日`
/// (one separator throughout, one or two digits for month and day), and what follows it.
fn spreadsheet_date(s: &str) -> Option<(i32, u32, u32, &str)> {
    let year: i32 = s
        .get(..4)
        .filter(|y| y.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()?;
    let rest = &s[4..];
    let (after_year, after_month, after_day) = if rest.starts_with('年') {
        ("年", "月", "日")
    } else {
        let sep = rest.get(..1).filter(|c| matches!(*c, "/" | "." | "-"))?;
        (sep, sep, "")
    };
    let (month, rest) = one_or_two_digits(rest.strip_prefix(after_year)?)?;
    let (day, rest) = one_or_two_digits(rest.strip_prefix(after_month)?)?;
    let rest = rest.strip_prefix(after_day).unwrap_or(rest);
    Some((year, month, day, rest))
}

/// The number of one or two digits `s` starts with, and the rest.
fn one_or_two_digits(s: &str) -> Option<(u32, &str)> {
    let n = s.bytes().take(2).take_while(u8::is_ascii_digit).count();
    Some((s.get(..n).filter(|d| !d.is_empty())?.parse().ok()?, &s[n..]))
}

/// `s` rewritten as arrow reads times, `YYYY-MM-DDTHH:MM:SS` and whatever followed the seconds
/// (a fraction, a zone), when it is a spreadsheet date with an optional time `H:MM[:SS]`.
fn canonical_time(s: &str) -> Option<String> {
    let (y, m, d, rest) = spreadsheet_date(s)?;
    let date = format!("{y:04}-{m:02}-{d:02}");
    if rest.is_empty() {
        return Some(format!("{date}T00:00:00"));
    }
    let rest = rest.strip_prefix([' ', 'T'])?;
    let (hour, rest) = one_or_two_digits(rest)?;
    let (minute, rest) = one_or_two_digits(rest.strip_prefix(':')?)?;
    let (second, rest) = match rest.strip_prefix(':') {
        Some(r) => one_or_two_digits(r)?,
        None => (0, rest),
    };
    Some(format!("{date}T{hour:02}:{minute:02}:{second:02}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    use proptest::prelude::*;

    proptest! {
        /// A `YYYY-MM-DD` date is read as arrow's parser reads it, invalid days refused alike.
        #[test]
        fn iso_dates_read_as_arrow_reads_them(s in "[0-9]{4}-[0-1][0-9]-[0-3][0-9]|[0-9-]{10}") {
            let parsed = Date32Type::parse(&s);
            let b = s.as_bytes();
            let shaped = b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
            match iso_date(b) {
                Some(days) => prop_assert_eq!(Some(days), parsed),
                // A day the month lacks: arrow refuses it too.
                None if shaped => prop_assert_eq!(parsed, None, "{}", s),
                None => {}
            }
        }

        /// Any text at all is read or refused, never a panic (multi-byte characters where the
        /// digits of a date would be included).
        #[test]
        fn any_text_is_read_or_refused(s in "\\PC{0,24}|[0-9２０年月日/.: T+-]{0,24}") {
            let _ = date(&s);
            let _ = timestamp::<TimestampMicrosecondType>(&s);
            let _ = hint(&s);
        }

        /// Whatever arrow reads as a date or a time is read the same.
        #[test]
        fn what_arrow_reads_is_read_alike(
            s in "20[0-9]{2}-[01][0-9]-[0-3][0-9]([ T][0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|\\+08:00)?)?"
        ) {
            if let Some(days) = Date32Type::parse(&s) {
                prop_assert_eq!(date(&s), Some(days));
            }
            if let Ok(t) = string_to_datetime(&chrono::Utc, &s) {
                prop_assert_eq!(timestamp::<TimestampMicrosecondType>(&s), Some(t.timestamp_micros()));
                prop_assert_eq!(timestamp::<TimestampNanosecondType>(&s), t.timestamp_nanos_opt());
            }
        }
    }

    #[test]
    fn dates_at_the_edges_of_months_years_and_the_epoch() {
        for s in [
            "1970-01-01",
            "1969-12-31",
            "2000-02-29",
            "1900-03-01",
            "0001-01-01",
            "9999-12-31",
            "2024-12-31",
        ] {
            assert_eq!(iso_date(s.as_bytes()), Date32Type::parse(s), "{s}");
            assert!(iso_date(s.as_bytes()).is_some(), "{s}");
        }
        for s in [
            "1900-02-29",
            "2023-02-29",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024-1-05",
            "2024/01/05",
        ] {
            assert_eq!(iso_date(s.as_bytes()), None, "{s}");
        }
        assert_eq!(iso_date(b"1970-01-01"), Some(0));
    }

    #[test]
    fn spreadsheet_shapes_are_read() {
        let day = Date32Type::parse("2024-01-05").unwrap();
        for s in [
            "2024/1/5",
            "2024/01/05",
            "2024.1.5",
            "2024-1-5",
            "2024年1月5日",
            "2024年01月05日",
            "2024年1月5",
        ] {
            assert_eq!(date(s), Some(day), "{s}");
        }
        for s in [
            "2024/1-5",
            "2024/13/5",
            "2023/2/29",
            "24/1/5",
            "2024/1/5/",
            "2024/1/5 x",
            "2024/123/5",
            "19000",
            "",
            "2024年1月",
        ] {
            assert_eq!(date(s), None, "{s}");
        }
        let at = |s: &str| timestamp::<TimestampSecondType>(s);
        let ten = at("2024-01-05T10:00:00").unwrap();
        for s in [
            "2024/1/5 10:00",
            "2024/01/05 10:00:00",
            "2024-01-05 10:00",
            "2024.1.5 10:00",
            "2024年1月5日 10:00",
            "2024/1/5T10:00",
            "2024/1/5 18:00+08:00",
        ] {
            assert_eq!(at(s), Some(ten), "{s}");
        }
        assert_eq!(at("2024/1/5"), at("2024-01-05T00:00:00"));
        assert_eq!(
            timestamp::<TimestampMicrosecondType>("2024/1/5 10:00:00.25"),
            Some(ten * 1_000_000 + 250_000)
        );
        for s in [
            "1704067200",
            "-5",
            "2024/1/5 25:00",
            "2024/1/5 10",
            "2024/1/5 10:60",
            "10:00",
            "2024/1/5  10:00",
        ] {
            assert_eq!(at(s), None, "{s}");
        }
        assert!(!hint("1704067200").is_empty());
        assert!(hint("2024/13/5").is_empty());
    }

    #[test]
    fn digits_finer_than_the_unit_round_to_the_nearest_unit() {
        let ms = |s: &str| timestamp::<TimestampMillisecondType>(s);
        let us = |s: &str| timestamp::<TimestampMicrosecondType>(s);
        let midnight = ms("2024-01-01T00:00:00").unwrap();
        assert_eq!(ms("2024-01-01T00:00:00.0004"), Some(midnight));
        assert_eq!(ms("2024-01-01T00:00:00.0005"), Some(midnight + 1));
        assert_eq!(ms("2024-01-01T00:00:00.9999"), Some(midnight + 1000));
        assert_eq!(
            us("2024-01-01T00:00:00.9999995"),
            Some((midnight + 1000) * 1000)
        );
        assert_eq!(
            us("2024-01-01T00:00:00.1234564"),
            Some(midnight * 1000 + 123_456)
        );
        assert_eq!(
            timestamp::<TimestampSecondType>("2024-01-01T00:00:59.5"),
            Some(midnight / 1000 + 60)
        );
        // Before the epoch too: the nearest unit, a half to the later time.
        assert_eq!(ms("1969-12-31T23:59:59.9996"), Some(0));
        assert_eq!(ms("1969-12-31T23:59:59.9994"), Some(-1));
        assert_eq!(ms("1969-12-31T23:59:59.9995"), Some(0));

        let ns: ArrayRef = Arc::new(arrow::array::TimestampNanosecondArray::from(vec![
            Some(1_999_999_500),
            Some(1_999_999_499),
            None,
            Some(-1_500),
            Some(-1_501),
        ]));
        let got = rounded_to_unit(&ns, TimeUnit::Microsecond).unwrap();
        let got = got
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            [Some(2_000_000), Some(1_999_999), None, Some(-1), Some(-2)]
        );
        let micros: ArrayRef = Arc::new(got.clone());
        assert!(rounded_to_unit(&micros, TimeUnit::Nanosecond).is_none());
        assert!(rounded_to_unit(&micros, TimeUnit::Microsecond).is_none());
    }
}
