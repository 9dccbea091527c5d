//! Columns a text decoder reads as text and converts itself, so every text format reads them by
//! one rule and names the line and column of a value that does not fit: decimals (rounded to
//! their scale, [`numbers`](super::numbers)), dates and times (in the shapes spreadsheets write,
//! [`dates`](super::dates)), booleans (the words PostgreSQL takes, and `是`/`否`: [`boolean`]),
//! and in NDJSON integers too (whole numbers only; CSV integers are read strictly by arrow-csv
//! already). arrow's readers cut `1.239` to `1.23` and NDJSON's `7.5`
//! to `7`, refuse `2024/1/5`, read an NDJSON number as a time in the column's unit, and name no
//! line for a CSV time that does not parse.

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::{
    DataType, Field, Int8Type, Int16Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// The text format whose decoder reads the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reader {
    Csv,
    Ndjson,
}

/// Whether text is read into a column of type `ty` here ([`convert`]) rather than by arrow.
pub(super) fn converts(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Decimal128(..)
            | DataType::Date32
            | DataType::Timestamp(_, None)
            | DataType::Boolean
    ) || ty.is_integer()
}

/// Whether `reader` reads a column of type `ty` as text, to be converted by [`from_text`]: all
/// that [`converts`], but integers in CSV (arrow-csv reads those strictly already).
pub(super) fn read_as_text(ty: &DataType, reader: Reader) -> bool {
    converts(ty) && !(reader == Reader::Csv && ty.is_integer())
}

/// `schema` as `reader` decodes it (the columns of [`read_as_text`] as text); `None` when it
/// reads none as text.
pub(super) fn as_text(schema: &SchemaRef, reader: Reader) -> Option<SchemaRef> {
    if !schema
        .fields()
        .iter()
        .any(|f| read_as_text(f.data_type(), reader))
    {
        return None;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match read_as_text(f.data_type(), reader) {
            true => f.as_ref().clone().with_data_type(DataType::Utf8),
            false => f.as_ref().clone(),
        })
        .collect();
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

/// A value that does not fit its column: its row in the batch, column and message.
#[derive(Debug)]
pub(super) struct BadValue {
    pub row: usize,
    pub column: String,
    pub message: String,
}

/// `values` as a column of `ty`, when `ty` is one [`read_as_text`] reads as text (also for a
/// text column of a Parquet or Arrow upload).
pub(super) fn convert(
    values: &StringArray,
    ty: &DataType,
) -> Option<Result<ArrayRef, (usize, String)>> {
    use super::dates::{dates, timestamps};
    use super::numbers::{decimals, integers};
    Some(match ty {
        DataType::Decimal128(p, s) => decimals(values, *p, *s).map(|a| Arc::new(a) as ArrayRef),
        DataType::Int8 => integers::<Int8Type>(values),
        DataType::Int16 => integers::<Int16Type>(values),
        DataType::Int32 => integers::<Int32Type>(values),
        DataType::Int64 => integers::<Int64Type>(values),
        DataType::UInt8 => integers::<UInt8Type>(values),
        DataType::UInt16 => integers::<UInt16Type>(values),
        DataType::UInt32 => integers::<UInt32Type>(values),
        DataType::UInt64 => integers::<UInt64Type>(values),
        DataType::Date32 => dates(values),
        DataType::Boolean => booleans(values),
        DataType::Timestamp(TimeUnit::Second, None) => timestamps::<TimestampSecondType>(values),
        DataType::Timestamp(TimeUnit::Millisecond, None) => {
            timestamps::<TimestampMillisecondType>(values)
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            timestamps::<TimestampMicrosecondType>(values)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, None) => {
            timestamps::<TimestampNanosecondType>(values)
        }
        _ => return None,
    })
}

/// A boolean written as one of the words PostgreSQL takes (`true`/`false`, `t`/`f`,
/// `yes`/`no`, `y`/`n`, `on`/`off`, `1`/`0`, in any case) or as `是`/`否`, the yes and no of
/// Chinese forms; `None` for anything else.
pub(super) fn boolean(s: &str) -> Option<bool> {
    // Blanks around the word are no part of it, as PostgreSQL reads one.
    let s = s.trim_ascii();
    const TRUE: [&str; 6] = ["true", "t", "yes", "y", "on", "1"];
    const FALSE: [&str; 6] = ["false", "f", "no", "n", "off", "0"];
    if TRUE.iter().any(|w| s.eq_ignore_ascii_case(w)) || s == "是" {
        Some(true)
    } else if FALSE.iter().any(|w| s.eq_ignore_ascii_case(w)) || s == "否" {
        Some(false)
    } else {
        None
    }
}

/// `values` as a boolean column (nulls stay null); a value that is none gives its row.
fn booleans(values: &StringArray) -> Result<ArrayRef, (usize, String)> {
    let mut out = Vec::with_capacity(values.len());
    for (row, v) in values.iter().enumerate() {
        out.push(match v {
            None => None,
            Some(v) => Some(boolean(v).ok_or_else(|| {
                (
                    row,
                    format!("value {v:?} is not a valid boolean (true/false, yes/no, 1/0, 是/否)"),
                )
            })?),
        });
    }
    Ok(Arc::new(arrow::array::BooleanArray::from(out)))
}

/// The batch of `target` whose columns are `columns`, decoded with [`as_text`]'s schema: text
/// columns become the values of `target`'s types they stand for.
pub(super) fn from_text(
    mut columns: Vec<ArrayRef>,
    target: &SchemaRef,
) -> Result<RecordBatch, BadValue> {
    for (f, col) in target.fields().iter().zip(columns.iter_mut()) {
        if f.data_type() == &DataType::Utf8 {
            continue;
        }
        let Some(text) = col.as_string_opt::<i32>() else {
            continue;
        };
        if let Some(converted) = convert(text, f.data_type()) {
            *col = converted.map_err(|(row, message)| BadValue {
                row,
                column: f.name().clone(),
                message: format!("column {:?}: {message}", f.name()),
            })?;
        }
    }
    RecordBatch::try_new(target.clone(), columns).map_err(|e| BadValue {
        row: 0,
        column: String::new(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_in_the_words_forms_use() {
        for s in ["true", "TRUE", "t", "Yes", "y", "on", "1", "是", " true\t"] {
            assert_eq!(boolean(s), Some(true), "{s}");
        }
        for s in ["false", "F", "no", "N", "OFF", "0", "否"] {
            assert_eq!(boolean(s), Some(false), "{s}");
        }
        for s in ["", " ", "2", "maybe", "truee", "t rue", "对"] {
            assert_eq!(boolean(s), None, "{s}");
        }
        let text = StringArray::from(vec![Some("是"), None, Some("0")]);
        let got = booleans(&text).unwrap();
        let got: Vec<Option<bool>> = got.as_boolean().iter().collect();
        assert_eq!(got, [Some(true), None, Some(false)]);
        let (row, message) = booleans(&StringArray::from(vec!["1", "maybe"])).unwrap_err();
        assert_eq!(row, 1, "{message}");
    }
}
