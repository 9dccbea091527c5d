//! CSV written straight from Arrow arrays, for the column types exports mostly carry (strings,
//! integers, booleans, dates, decimals).
//!
//! It writes byte for byte what arrow's CSV writer writes (comma, `\n`, quotes only where a
//! field holds a comma, a quote or a line break, nulls empty, dates `YYYY-MM-DD`, decimals with
//! their scale's digits) — a property test holds the two side by side — but without formatting
//! each value through `fmt` and a per-row record: on a 10M-row export that formatting was a third
//! of the gateway's CPU. A batch with any other column type is left to arrow's writer.
//!
//! Text goes out through a [`Text`] encoding: as it is ([`Utf8`]), or transcoded value by value
//! ([`Gb18030`], for `charset=gb18030`), so only strings are transcoded (numbers, dates and the
//! CSV punctuation are ASCII, the same bytes in both), each straight from its array into the
//! answer, without a UTF-8 copy of the whole batch in between.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, PrimitiveArray, StringArray,
};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;

/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// How text (string values and column names) is written into the CSV bytes.
pub trait Text {
    /// Writes `text`.
    fn put(text: &str, out: &mut Vec<u8>);
    /// Writes `text` unless it holds a byte `special` picks (then `false`, `out` unchanged).
    fn put_unless(text: &str, out: &mut Vec<u8>, special: fn(u8) -> bool) -> bool;
}

/// Text as it is.
pub struct Utf8;

impl Text for Utf8 {
    #[inline]
    fn put(text: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(text.as_bytes());
    }

    #[inline]
    fn put_unless(text: &str, out: &mut Vec<u8>, special: fn(u8) -> bool) -> bool {
        if text.bytes().any(special) {
            return false;
        }
        out.extend_from_slice(text.as_bytes());
        true
    }
}

/// Text in GB18030 (every character has a code, so nothing is replaced).
pub struct Gb18030;

impl Text for Gb18030 {
    #[inline]
    fn put(text: &str, out: &mut Vec<u8>) {
        crate::gb18030::encode_str(text, out);
    }

    /// The special bytes are ASCII: only the ASCII between characters is looked at, as it is
    /// copied.
    #[inline]
    fn put_unless(text: &str, out: &mut Vec<u8>, special: fn(u8) -> bool) -> bool {
        crate::gb18030::encode_str_unless(text, out, special)
    }
}

/// One column, ready to write its values.
enum Column<'a> {
    Utf8(&'a StringArray),
    LargeUtf8(&'a arrow::array::LargeStringArray),
    Utf8View(&'a arrow::array::StringViewArray),
    Boolean(&'a BooleanArray),
    Int8(&'a PrimitiveArray<Int8Type>),
    Int16(&'a PrimitiveArray<Int16Type>),
    Int32(&'a PrimitiveArray<Int32Type>),
    Int64(&'a PrimitiveArray<Int64Type>),
    UInt8(&'a PrimitiveArray<UInt8Type>),
    UInt16(&'a PrimitiveArray<UInt16Type>),
    UInt32(&'a PrimitiveArray<UInt32Type>),
    UInt64(&'a PrimitiveArray<UInt64Type>),
    Date32(&'a PrimitiveArray<Date32Type>),
    Decimal128 {
        array: &'a Decimal128Array,
        precision: usize,
        scale: usize,
    },
}

impl<'a> Column<'a> {
    fn of(array: &'a ArrayRef) -> Option<Self> {
        Some(match array.data_type() {
            DataType::Utf8 => Self::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Self::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => Self::Utf8View(array.as_string_view()),
            DataType::Boolean => Self::Boolean(array.as_boolean()),
            DataType::Int8 => Self::Int8(array.as_primitive()),
            DataType::Int16 => Self::Int16(array.as_primitive()),
            DataType::Int32 => Self::Int32(array.as_primitive()),
            DataType::Int64 => Self::Int64(array.as_primitive()),
            DataType::UInt8 => Self::UInt8(array.as_primitive()),
            DataType::UInt16 => Self::UInt16(array.as_primitive()),
            DataType::UInt32 => Self::UInt32(array.as_primitive()),
            DataType::UInt64 => Self::UInt64(array.as_primitive()),
            DataType::Date32 => Self::Date32(array.as_primitive()),
            DataType::Decimal128(precision, scale) if *scale >= 0 => Self::Decimal128 {
                array: array.as_primitive(),
                precision: usize::from(*precision),
                scale: *scale as usize,
            },
            _ => return None,
        })
    }

    /// Writes row `i` (not null); `false` when the value cannot be written here (a date out of
    /// chrono's range: arrow's writer then says what is wrong).
    fn write<T: Text>(&self, i: usize, out: &mut Vec<u8>, digits: &mut itoa::Buffer) -> bool {
        match self {
            Self::Utf8(a) => field::<T>(a.value(i), out),
            Self::LargeUtf8(a) => field::<T>(a.value(i), out),
            Self::Utf8View(a) => field::<T>(a.value(i), out),
            Self::Boolean(a) => out.extend_from_slice(if a.value(i) { b"true" } else { b"false" }),
            Self::Int8(a) => integer(a, i, out, digits),
            Self::Int16(a) => integer(a, i, out, digits),
            Self::Int32(a) => integer(a, i, out, digits),
            Self::Int64(a) => integer(a, i, out, digits),
            Self::UInt8(a) => integer(a, i, out, digits),
            Self::UInt16(a) => integer(a, i, out, digits),
            Self::UInt32(a) => integer(a, i, out, digits),
            Self::UInt64(a) => integer(a, i, out, digits),
            Self::Date32(a) => return date(a.value(i), out),
            Self::Decimal128 {
                array,
                precision,
                scale,
            } => decimal(array.value(i), *precision, *scale, out, digits),
        }
        true
    }

    /// Whether row `i` (not null) of this column writes nothing (an empty string).
    fn is_empty(&self, i: usize) -> bool {
        match self {
            Self::Utf8(a) => a.value(i).is_empty(),
            Self::LargeUtf8(a) => a.value(i).is_empty(),
            Self::Utf8View(a) => a.value(i).is_empty(),
            _ => false,
        }
    }
}

/// Appends `batch` as CSV rows to `out` (after a header row when `header`), its text in `T`'s
/// encoding. `None` when a column type is not one this writer handles, or a value cannot be
/// written: `out` is then as it was.
pub fn write_batch<T: Text>(batch: &RecordBatch, header: bool, out: &mut Vec<u8>) -> Option<()> {
    let columns: Vec<Column> = batch
        .columns()
        .iter()
        .map(Column::of)
        .collect::<Option<_>>()?;
    let start = out.len();
    if header {
        let names: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        record(names.len(), |c, out| field::<T>(names[c], out), out);
    }
    let mut digits = itoa::Buffer::new();
    let one_column = columns.len() == 1;
    for row in 0..batch.num_rows() {
        // A record of one empty field is written `""` (a blank line would be no record).
        if one_column && (batch.column(0).is_null(row) || columns[0].is_empty(row)) {
            out.extend_from_slice(b"\"\"\n");
            continue;
        }
        for (c, column) in columns.iter().enumerate() {
            if c > 0 {
                out.push(b',');
            }
            if !batch.column(c).is_null(row) && !column.write::<T>(row, out, &mut digits) {
                out.truncate(start);
                return None;
            }
        }
        out.push(b'\n');
    }
    Some(())
}

fn record(n: usize, mut write: impl FnMut(usize, &mut Vec<u8>), out: &mut Vec<u8>) {
    if n == 1 {
        let before = out.len();
        write(0, out);
        if out.len() == before {
            out.extend_from_slice(b"\"\"");
        }
    } else {
        for c in 0..n {
            if c > 0 {
                out.push(b',');
            }
            write(c, out);
        }
    }
    out.push(b'\n');
}

/// A string field, quoted (quotes doubled) when it holds a comma, a quote or a line break.
fn field<T: Text>(value: &str, out: &mut Vec<u8>) {
    if T::put_unless(value, out, |b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        return;
    }
    out.push(b'"');
    for part in value.split_inclusive('"') {
        T::put(part, out);
        if part.ends_with('"') {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

fn integer<T>(a: &PrimitiveArray<T>, i: usize, out: &mut Vec<u8>, digits: &mut itoa::Buffer)
where
    T: ArrowPrimitiveType,
    T::Native: itoa::Integer,
{
    out.extend_from_slice(digits.format(a.value(i)).as_bytes());
}

/// `YYYY-MM-DD` as chrono's `Debug` writes it (arrow's CSV date format), with years beyond
/// 0..=9999 signed as chrono writes them.
fn date(days: i32, out: &mut Vec<u8>) -> bool {
    let Some(d) = days
        .checked_add(EPOCH_DAYS_FROM_CE)
        .and_then(chrono::NaiveDate::from_num_days_from_ce_opt)
    else {
        return false;
    };
    use chrono::Datelike;
    let year = d.year();
    if !(0..=9999).contains(&year) {
        use std::io::Write;
        return write!(out, "{d:?}").is_ok();
    }
    let (y, m, day) = (year as u32, d.month(), d.day());
    out.extend_from_slice(&[
        b'0' + (y / 1000) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
        b'-',
        b'0' + (m / 10) as u8,
        b'0' + (m % 10) as u8,
        b'-',
        b'0' + (day / 10) as u8,
        b'0' + (day % 10) as u8,
    ]);
    true
}

/// A decimal's digits with its scale, as arrow's `format_decimal_str` writes them (including
/// its cut to `precision` digits of a value wider than its type says).
fn decimal(value: i128, precision: usize, scale: usize, out: &mut Vec<u8>, b: &mut itoa::Buffer) {
    let text = b.format(value).as_bytes();
    let (sign, rest) = match text.split_first() {
        Some((b'-', rest)) => (&b"-"[..], rest),
        _ => (&b""[..], text),
    };
    let rest = &rest[..precision.min(rest.len())];
    out.extend_from_slice(sign);
    if scale == 0 {
        out.extend_from_slice(rest);
    } else if rest.len() > scale {
        let (whole, fraction) = rest.split_at(rest.len() - scale);
        out.extend_from_slice(whole);
        out.push(b'.');
        out.extend_from_slice(fraction);
    } else {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - rest.len()));
        out.extend_from_slice(rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Date32Array, Int8Array, Int64Array, LargeStringArray, StringViewArray, UInt64Array,
    };
    use arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn arrow_csv(batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut out);
        for b in batches {
            w.write(b).unwrap();
        }
        drop(w);
        out
    }

    fn ours(batches: &[RecordBatch]) -> Vec<u8> {
        ours_in::<Utf8>(batches)
    }

    fn ours_in<T: Text>(batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            write_batch::<T>(b, i == 0, &mut out).expect("handled");
        }
        out
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-z张·é€😀,\"\r\n ]{0,6}")
    }

    proptest! {
        /// Every handled type, nulls, quoting, dates across the calendar and decimals of every
        /// scale: the bytes are arrow's writer's bytes.
        #[test]
        fn writes_what_arrows_writer_writes(
            rows in proptest::collection::vec(
                (text(), any::<Option<i64>>(), any::<Option<u64>>(), any::<Option<i8>>(),
                 proptest::option::of(-1_000_000i32..3_000_000), any::<Option<bool>>(),
                 proptest::option::of(prop_oneof![
                     -100_000i128..100_000,
                     any::<i64>().prop_map(i128::from),
                     any::<i128>().prop_map(|v| v % 10i128.pow(38)),
                 ])),
                0..30),
            scale in 0i8..12,
            name in "[a-z,\" 名]{1,6}",
            split in 0usize..30,
        ) {
            let schema = Arc::new(Schema::new(vec![
                Field::new(name, DataType::Utf8, true),
                Field::new("i", DataType::Int64, true),
                Field::new("u", DataType::UInt64, true),
                Field::new("t", DataType::Int8, true),
                Field::new("d", DataType::Date32, true),
                Field::new("b", DataType::Boolean, true),
                Field::new("m", DataType::Decimal128(38, scale), true),
                Field::new("l", DataType::LargeUtf8, true),
                Field::new("v", DataType::Utf8View, true),
            ]));
            let s: Vec<Option<&str>> = rows.iter().map(|r| r.0.as_deref()).collect();
            let batch = RecordBatch::try_new(schema, vec![
                Arc::new(StringArray::from(s.clone())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(UInt64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                Arc::new(Int8Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
                Arc::new(Date32Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
                Arc::new(BooleanArray::from(rows.iter().map(|r| r.5).collect::<Vec<_>>())),
                Arc::new(Decimal128Array::from(rows.iter().map(|r| r.6).collect::<Vec<_>>())
                    .with_precision_and_scale(38, scale).unwrap()),
                Arc::new(LargeStringArray::from(s.clone())),
                Arc::new(StringViewArray::from(s)),
            ]).unwrap();
            let cut = split.min(batch.num_rows());
            let parts = [batch.slice(0, cut), batch.slice(cut, batch.num_rows() - cut)];
            let utf8 = String::from_utf8(ours(&parts)).unwrap();
            prop_assert_eq!(&utf8, &String::from_utf8(arrow_csv(&parts)).unwrap());
            // In GB18030: the same text, transcoded.
            let theirs = encoding_rs::GB18030.encode(&utf8).0.into_owned();
            prop_assert_eq!(ours_in::<Gb18030>(&parts), theirs);
        }

        /// One column: an empty or null value is a quoted empty field, as arrow writes it.
        #[test]
        fn one_column_like_arrow(values in proptest::collection::vec(text(), 0..20)) {
            let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, true)]));
            let batch = RecordBatch::try_new(
                schema,
                vec![Arc::new(StringArray::from(values))],
            ).unwrap();
            let one = std::slice::from_ref(&batch);
            prop_assert_eq!(ours(one), arrow_csv(one));
        }
    }

    #[test]
    fn other_types_are_left_to_arrow() {
        let schema = Arc::new(Schema::new(vec![Field::new("f", DataType::Float64, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(arrow::array::Float64Array::from(vec![1.5]))],
        )
        .unwrap();
        let mut out = b"kept".to_vec();
        assert!(write_batch::<Utf8>(&batch, true, &mut out).is_none());
        assert!(write_batch::<Gb18030>(&batch, true, &mut out).is_none());
        assert_eq!(out, b"kept");
    }
}
