//! Numbers written as text (CSV fields, NDJSON numbers and strings, text columns of Parquet and
//! Arrow files), read into a column's type by one rule each.
//!
//! **Decimals.** A value with more fractional digits than the scale is rounded half away from
//! zero, as PostgreSQL's `numeric` and DuckDB's `DECIMAL` round, and as a binary upload's
//! decimals and floats are rounded by arrow's cast: `1.235` into `decimal128(5,2)` is `1.24`,
//! `-1.235` is `-1.24`, whatever the upload's format. (arrow's text parser cuts the extra digits
//! instead, `1.23`.) A value with more integer digits than the column holds is refused, never
//! cut, and the decoders name its line and column.
//!
//! **Integers** from NDJSON. A JSON number is an integer of the column when its value is one
//! (`7`, `7.0`, `7e2`); `7.5` is refused (arrow-json casts it to `7`), as is a value out of the
//! column's range. CSV integers are read strictly by arrow's parser already (`7.0` refused).
//!
//! The decoders read such columns as text ([`text_columns`](super::text_columns)) and convert
//! whole columns here ([`decimals`], [`integers`]); the fast CSV path parses each decimal field
//! with [`parse`].

use arrow::array::{Array, ArrayRef, Decimal128Array, PrimitiveBuilder, StringArray};
use arrow::datatypes::ArrowPrimitiveType;
use std::sync::Arc;

/// Why a text value is not a number of the column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unfit {
    /// Not a number: `[+-]digits[.digits][e[+-]digits]`, with at least one digit.
    Syntax,
    /// More integer digits than `precision - scale` (after rounding), or out of an integer
    /// column's range.
    TooLarge,
    /// A fraction where the column holds integers.
    Fraction,
}

/// `s` as the unscaled value of a `decimal128(precision, scale)`, rounded half away from zero
/// to `scale` fractional digits.
pub(super) fn parse(s: &str, precision: u8, scale: i8) -> Result<i128, Unfit> {
    // Blanks around the value are no part of it, as PostgreSQL reads one (and as CSV integer
    // and float columns were read already).
    read(s.trim_ascii(), precision, scale).map(|(n, _)| n)
}

/// `s` as an integer, exactly: a fraction is refused, not cut or rounded.
pub(super) fn integer(s: &str) -> Result<i128, Unfit> {
    let s = s.trim_ascii();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(i128::from(n));
    }
    match read(s, 38, 0)? {
        (n, false) => Ok(n),
        (_, true) => Err(Unfit::Fraction),
    }
}

/// The value and whether a digit other than zero was rounded away.
fn read(s: &str, precision: u8, scale: i8) -> Result<(i128, bool), Unfit> {
    if let Ok(scale) = usize::try_from(scale)
        && s.len() <= 36
        && let Some(n) = parse_plain(s, precision, scale)
    {
        return n;
    }
    parse_general(s, precision, scale)
}

/// The shape nearly every value has, read in one pass: no exponent, at most 36 characters (so
/// its digits fit in an `i128` before scaling). `None` for a value with an exponent.
fn parse_plain(s: &str, precision: u8, scale: usize) -> Option<Result<(i128, bool), Unfit>> {
    let b = s.as_bytes();
    let (negative, b) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let mut n: i128 = 0;
    let mut i = 0;
    while let Some(&c @ b'0'..=b'9') = b.get(i) {
        n = n * 10 + i128::from(c - b'0');
        i += 1;
    }
    let mut digits = i;
    let (mut frac, mut up, mut cut) = (0, false, false);
    if b.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&c @ b'0'..=b'9') = b.get(i) {
            if frac < scale {
                n = n * 10 + i128::from(c - b'0');
                frac += 1;
            } else {
                if frac == scale {
                    up = c >= b'5';
                    frac += 1;
                }
                cut |= c != b'0';
            }
            digits += 1;
            i += 1;
        }
    }
    match b.get(i) {
        Some(b'e' | b'E') => return None,
        Some(_) => return Some(Err(Unfit::Syntax)),
        None if digits == 0 => return Some(Err(Unfit::Syntax)),
        None => {}
    }
    let limit = 10i128.pow(u32::from(precision.min(38)));
    let scaled = 10i128
        .checked_pow((scale - frac.min(scale)) as u32)
        .and_then(|m| n.checked_mul(m))
        .map(|n| n + i128::from(up))
        .filter(|n| *n < limit);
    Some(match scaled {
        Some(n) if negative => Ok((-n, cut)),
        Some(n) => Ok((n, cut)),
        None => Err(Unfit::TooLarge),
    })
}

/// Any value, exponents and long runs of digits included.
fn parse_general(s: &str, precision: u8, scale: i8) -> Result<(i128, bool), Unfit> {
    let b = s.as_bytes();
    let (negative, b) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let (mantissa, exponent) = match b.iter().position(|c| matches!(c, b'e' | b'E')) {
        Some(i) => (&b[..i], exponent(&b[i + 1..])?),
        None => (b, 0),
    };
    let (int, frac) = match mantissa.iter().position(|&c| c == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &[][..]),
    };
    if int.len() + frac.len() == 0 || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return Err(Unfit::Syntax);
    }
    // The value is `digits × 10^(exponent - frac.len())`; the column holds it times 10^scale.
    let shift = exponent - frac.len() as i64 + i64::from(scale);
    let mut digits = int
        .iter()
        .chain(frac)
        .map(|c| c - b'0')
        .skip_while(|&d| d == 0);
    let significant = digits.clone().count() as i64;
    let limit = 10i128
        .checked_pow(u32::from(precision))
        .ok_or(Unfit::TooLarge)?;
    let push = |n: i128, d: u8| -> Result<i128, Unfit> {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(i128::from(d)))
            .filter(|n| *n < limit)
            .ok_or(Unfit::TooLarge)
    };
    let mut n: i128 = 0;
    // Digits kept: all of them when the value is scaled up, else those left of the cut.
    let kept = if shift >= 0 {
        significant
    } else {
        (significant + shift).max(0)
    };
    for d in digits.by_ref().take(kept as usize) {
        n = push(n, d)?;
    }
    // The digits cut (none when the value is scaled up) are those left of the significant ones.
    let cut = digits.clone().any(|d| d != 0);
    if shift >= 0 {
        // Zero stays zero however large its exponent; anything else overflows within 39 steps.
        for _ in 0..shift {
            if n == 0 {
                break;
            }
            n = push(n, 0)?;
        }
    } else if significant + shift >= 0 && digits.next().is_some_and(|d| d >= 5) {
        // The first digit cut is 5 or more: away from zero (a cut that only drops the implied
        // zeros ahead of the digits rounds to zero).
        n = n
            .checked_add(1)
            .filter(|n| *n < limit)
            .ok_or(Unfit::TooLarge)?;
    }
    Ok((if negative { -n } else { n }, cut))
}

/// An exponent's value, `[+-]digits`; beyond a billion it saturates (the value is then zero or
/// too large for any column).
fn exponent(b: &[u8]) -> Result<i64, Unfit> {
    let (negative, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Unfit::Syntax);
    }
    let e = digits.iter().fold(0i64, |e, &c| {
        (e * 10 + i64::from(c - b'0')).min(1_000_000_000)
    });
    Ok(if negative { -e } else { e })
}

/// The type as the catalog writes it.
pub(super) fn type_name(precision: u8, scale: i8) -> String {
    format!("decimal128({precision},{scale})")
}

/// What is wrong with `value` as a `decimal128(precision, scale)`, for an error message.
pub(super) fn describe(value: &str, precision: u8, scale: i8, why: Unfit) -> String {
    let ty = type_name(precision, scale);
    match why {
        Unfit::Syntax => format!("value {value:?} is not a valid {ty}"),
        Unfit::TooLarge => format!(
            "value {value:?} does not fit {ty}: it holds {} digits before the decimal point",
            i16::from(precision) - i16::from(scale)
        ),
        Unfit::Fraction => format!("value {value:?} is not a valid {ty}"),
    }
}

/// `values` as a `decimal128(precision, scale)` column (nulls stay null); a value that is not
/// one gives its row and what is wrong.
pub(super) fn decimals(
    values: &StringArray,
    precision: u8,
    scale: i8,
) -> Result<Decimal128Array, (usize, String)> {
    let mut out = Vec::with_capacity(values.len());
    for (row, v) in values.iter().enumerate() {
        out.push(match v {
            None => None,
            Some(v) => Some(
                parse(v, precision, scale)
                    .map_err(|why| (row, describe(v, precision, scale, why)))?,
            ),
        });
    }
    Ok(Decimal128Array::from(out)
        .with_precision_and_scale(precision, scale)
        .expect("a precision and scale the catalog accepted"))
}

/// `values` as a column of the integer type `T` (nulls stay null); a value that is not one, a
/// fraction or out of `T`'s range, gives its row and what is wrong.
pub(super) fn integers<T: ArrowPrimitiveType>(
    values: &StringArray,
) -> Result<ArrayRef, (usize, String)>
where
    T::Native: TryFrom<i128>,
{
    let ty = datagate_core::types::type_name(&T::DATA_TYPE);
    let mut b = PrimitiveBuilder::<T>::with_capacity(values.len());
    for (row, v) in values.iter().enumerate() {
        let Some(v) = v else {
            b.append_null();
            continue;
        };
        let n = integer(v)
            .and_then(|n| T::Native::try_from(n).map_err(|_| Unfit::TooLarge))
            .map_err(|why| {
                let message = match why {
                    Unfit::TooLarge => format!("value {v:?} is out of range for {ty}"),
                    Unfit::Fraction => {
                        format!("value {v:?} is not a valid {ty}: it has a fraction")
                    }
                    Unfit::Syntax => format!("value {v:?} is not a valid {ty}"),
                };
                (row, message)
            })?;
        b.append_value(n);
    }
    Ok(Arc::new(b.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use proptest::prelude::*;

    fn p(s: &str, precision: u8, scale: i8) -> Result<i128, Unfit> {
        parse(s, precision, scale)
    }

    #[test]
    fn extra_fractional_digits_round_half_away_from_zero() {
        assert_eq!(p("1.239", 5, 2), Ok(124));
        assert_eq!(p("1.235", 5, 2), Ok(124));
        assert_eq!(p("1.2349999", 5, 2), Ok(123));
        assert_eq!(p("-1.235", 5, 2), Ok(-124));
        assert_eq!(p("-1.234", 5, 2), Ok(-123));
        assert_eq!(p("0.005", 5, 2), Ok(1));
        assert_eq!(p("0.004", 5, 2), Ok(0));
        assert_eq!(p("0.0005", 5, 2), Ok(0), "the first digit cut is 0");
        assert_eq!(p("2.5", 3, 0), Ok(3));
        assert_eq!(p("-2.5", 3, 0), Ok(-3));
        assert_eq!(p("0.5", 1, 0), Ok(1));
    }

    #[test]
    fn the_shapes_arrow_reads_are_read() {
        assert_eq!(p("12", 5, 2), Ok(1200));
        assert_eq!(p("+12.5", 5, 2), Ok(1250));
        assert_eq!(p("-0.07", 5, 2), Ok(-7));
        assert_eq!(p(".5", 5, 2), Ok(50));
        assert_eq!(p("5.", 5, 2), Ok(500));
        assert_eq!(p("000123.40", 5, 2), Ok(12340));
        assert_eq!(p("1.5e2", 5, 2), Ok(15000));
        assert_eq!(p("1.5E-2", 5, 2), Ok(2));
        assert_eq!(p("15e-1", 5, 0), Ok(2));
        assert_eq!(p("0e999999999999", 5, 2), Ok(0));
        assert_eq!(p("1e-999999999999", 5, 2), Ok(0));
        assert_eq!(
            p("99999999999999999999999999999999999999", 38, 0),
            Ok(99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
    }

    #[test]
    fn values_too_large_are_refused_not_cut() {
        assert_eq!(p("1000", 5, 2), Err(Unfit::TooLarge));
        assert_eq!(p("999.99", 5, 2), Ok(99999));
        assert_eq!(
            p("999.995", 5, 2),
            Err(Unfit::TooLarge),
            "rounds up past the precision"
        );
        assert_eq!(p("-999.995", 5, 2), Err(Unfit::TooLarge));
        assert_eq!(p("1e3", 5, 2), Err(Unfit::TooLarge));
        assert_eq!(p("1e999999999999", 38, 0), Err(Unfit::TooLarge));
        assert_eq!(
            p("100000000000000000000000000000000000000", 38, 0),
            Err(Unfit::TooLarge)
        );
    }

    #[test]
    fn integers_are_read_exactly_or_refused() {
        for (s, n) in [
            ("7", 7),
            ("-7", -7),
            ("+7", 7),
            ("7.0", 7),
            ("7.000", 7),
            ("7e2", 700),
            ("1.50e1", 15),
            ("-0", 0),
            ("0.0", 0),
            ("18446744073709551615", 18_446_744_073_709_551_615),
        ] {
            assert_eq!(integer(s), Ok(n), "{s}");
        }
        for s in [
            "7.5",
            "-7.01",
            "1e-1",
            "0.000000000000000000000000000000000000000001",
        ] {
            assert_eq!(integer(s), Err(Unfit::Fraction), "{s}");
        }
        for s in ["", "abc", "true", "1e", "0x1"] {
            assert!(integer(s).is_err(), "{s}");
        }
        assert_eq!(integer("1e40"), Err(Unfit::TooLarge));
        let text = StringArray::from(vec![Some("1"), None, Some("2.0")]);
        let got = integers::<arrow::datatypes::Int8Type>(&text).unwrap();
        assert_eq!(
            got.as_primitive::<arrow::datatypes::Int8Type>()
                .iter()
                .collect::<Vec<_>>(),
            [Some(1), None, Some(2)]
        );
        let text = StringArray::from(vec![Some("1"), Some("128")]);
        let (row, message) = integers::<arrow::datatypes::Int8Type>(&text).unwrap_err();
        assert_eq!(
            (row, message.as_str()),
            (1, "value \"128\" is out of range for int8")
        );
        let text = StringArray::from(vec![Some("-1")]);
        assert!(integers::<arrow::datatypes::UInt64Type>(&text).is_err());
    }

    #[test]
    fn what_is_not_a_number_is_refused() {
        for s in [
            "", "-", "+", ".", "-.", "e5", "1e", "1e+", "1.2.3", "1,5", "1 2", "- 1", " ", "abc",
            "NaN", "inf", "0x10", "1e5.5", "--1",
        ] {
            assert_eq!(p(s, 10, 2), Err(Unfit::Syntax), "{s:?}");
        }
        // Blanks around a number are no part of it, as PostgreSQL reads one.
        for s in [" 1", "1 ", "\t1\r", " 1.00 "] {
            assert_eq!(p(s, 10, 2), Ok(100), "{s:?}");
        }
        assert_eq!(integer(" -7 "), Ok(-7));
    }

    proptest! {
        /// Any text at all is read or refused, never a panic or an overflow.
        #[test]
        fn any_text_is_read_or_refused(
            s in "\\PC{0,40}|[0-9.eE+-]{0,60}", precision in 1u8..=38, scale in 0u8..=38
        ) {
            let scale = (scale % (precision + 1)) as i8;
            if let Ok(n) = parse(&s, precision, scale) {
                prop_assert!(n.unsigned_abs() < 10u128.pow(u32::from(precision)), "{}", s);
            }
            let _ = integer(&s);
        }

        /// The one-pass reader of plain values reads what the general one reads.
        #[test]
        fn the_plain_reader_agrees_with_the_general_one(
            s in "[+-]?[0-9]{0,20}(\\.[0-9]{0,20})?|[0-9.+-]{0,6}", precision in 1u8..=38, scale in 0i8..=20
        ) {
            prop_assume!(scale as u8 <= precision);
            let plain = parse_plain(&s, precision, scale as usize).expect("no exponent");
            prop_assert_eq!(plain, parse_general(&s, precision, scale), "{}", s);
        }

        /// Wherever arrow's parser reads a value exactly (no digit beyond the scale), this
        /// parser reads the same; beyond the scale it rounds what arrow would cut.
        #[test]
        fn agrees_with_arrow_where_arrow_is_exact(
            int in "[0-9]{0,6}", frac in "[0-9]{0,6}", neg in any::<bool>(), scale in 0i8..6
        ) {
            prop_assume!(!(int.is_empty() && frac.is_empty()));
            let s = format!("{}{int}{}{frac}", if neg { "-" } else { "" }, if frac.is_empty() { "" } else { "." });
            let ours = parse(&s, 18, scale);
            let arrow = arrow::compute::kernels::cast_utils::parse_decimal::<arrow::datatypes::Decimal128Type>(&s, 18, scale);
            if frac.len() <= scale as usize {
                prop_assert_eq!(ours.ok(), arrow.ok(), "{}", s);
            } else {
                let cut = arrow.expect("arrow cuts");
                let ours = ours.expect("rounds");
                let first_cut = frac.as_bytes()[scale as usize] - b'0';
                let up = if first_cut >= 5 { 1 } else { 0 };
                prop_assert_eq!(ours, if cut < 0 || (neg && cut == 0) { cut - up } else { cut + up }, "{}", s);
            }
        }
    }
}
