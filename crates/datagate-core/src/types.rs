//! Column types as the catalog and the API name them.
//!
//! API.md §5 fixes the spelling: Arrow type names as DataFusion prints them, in lower case —
//! `utf8`, `int32`, `int64`, `float64`, `boolean`, `date32`, `timestamp(us)`, `decimal128(p,s)`.
//! [`ColumnType`] is that closed vocabulary; anything a published dataset may hold maps to one.

use arrow_schema::{DataType, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A column type that datagate stores and serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Utf8,
    Boolean,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Date32,
    /// A timestamp without time zone, in the given unit.
    Timestamp(TimeUnit),
    /// Exact decimal with precision and scale.
    Decimal128(u8, i8),
}

/// A type name outside the vocabulary, or an Arrow type datagate does not store (named as
/// [`type_name`] names it), with what to do instead when there is a usual way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported column type {name:?}; expected one of utf8, boolean, int8..int64, uint8..uint64, float32, float64, date32, timestamp(s|ms|us|ns), decimal128(p,s){}",
    hint.map(|h| format!("; {h}")).unwrap_or_default()
)]
pub struct UnsupportedType {
    pub name: String,
    pub hint: Option<&'static str>,
}

impl UnsupportedType {
    /// A name outside the vocabulary.
    fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            hint: None,
        }
    }

    /// An Arrow type no column has, with the usual way to store what it holds.
    fn of_arrow(ty: &DataType) -> Self {
        let hint = match ty {
            // Lists, structs and maps an upload stores as their JSON text before it gets here.
            DataType::Union(..) => {
                Some("a union has no column: store each kind of value in a column of its own")
            }
            DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_) => {
                Some("bytes have no column: store them as text (hex or base64)")
            }
            DataType::Duration(_) | DataType::Interval(_) => {
                Some("store a duration as a whole number of its unit (int64 seconds, say)")
            }
            DataType::Decimal256(..) => {
                Some("a decimal holds at most 38 digits (decimal128); store more as text")
            }
            _ => None,
        };
        Self {
            name: lower_case_outside_quotes(&ty.to_string()),
            hint,
        }
    }
}

impl ColumnType {
    /// The Arrow type of this column.
    pub fn to_arrow(self) -> DataType {
        match self {
            Self::Utf8 => DataType::Utf8,
            Self::Boolean => DataType::Boolean,
            Self::Int8 => DataType::Int8,
            Self::Int16 => DataType::Int16,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::UInt8 => DataType::UInt8,
            Self::UInt16 => DataType::UInt16,
            Self::UInt32 => DataType::UInt32,
            Self::UInt64 => DataType::UInt64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::Date32 => DataType::Date32,
            Self::Timestamp(unit) => DataType::Timestamp(unit, None),
            Self::Decimal128(p, s) => DataType::Decimal128(p, s),
        }
    }

    /// The column type of an Arrow type, if datagate can store it.
    /// `LargeUtf8` and `Utf8View` are stored as `utf8`.
    pub fn from_arrow(dt: &DataType) -> Result<Self, UnsupportedType> {
        Ok(match dt {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::Utf8,
            DataType::Boolean => Self::Boolean,
            DataType::Int8 => Self::Int8,
            DataType::Int16 => Self::Int16,
            DataType::Int32 => Self::Int32,
            DataType::Int64 => Self::Int64,
            DataType::UInt8 => Self::UInt8,
            DataType::UInt16 => Self::UInt16,
            DataType::UInt32 => Self::UInt32,
            DataType::UInt64 => Self::UInt64,
            DataType::Float32 => Self::Float32,
            DataType::Float64 => Self::Float64,
            DataType::Date32 => Self::Date32,
            DataType::Timestamp(unit, None) => Self::Timestamp(*unit),
            DataType::Decimal128(p, s) => Self::Decimal128(*p, *s),
            other => return Err(UnsupportedType::of_arrow(other)),
        })
    }
}

fn unit_name(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

/// The API's name of an Arrow type (`timestamp(us)`, `decimal128(12,2)`; API.md §5), or arrow's
/// own name in lower case for a type no column has (a query's `list(int64)`). What arrow quotes
/// keeps its case: a time zone (`timestamp(s, "Asia/Shanghai")`: zone names are case-sensitive)
/// and a struct's field names are names, not parts of the type's spelling.
pub fn type_name(ty: &DataType) -> String {
    ColumnType::from_arrow(ty)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| lower_case_outside_quotes(&ty.to_string()))
}

/// `text` in lower case except inside double quotes (arrow quotes names as Rust's `{:?}` does,
/// a quote inside escaped by a backslash).
fn lower_case_outside_quotes(text: &str) -> String {
    let (mut quoted, mut escaped) = (false, false);
    text.chars()
        .map(|c| {
            if quoted {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => quoted = false,
                    _ => escaped = false,
                }
                c
            } else {
                quoted = c == '"';
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// A type whose values are lists, structs or maps: what [`nested_as_json_text`] writes.
pub fn is_nested_value(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
    )
}

/// A nested column (a list, a struct, a map) as text, each value the JSON arrow's JSON writer
/// writes for it (`[1,2]`, `{"a":1}`; nulls inside written out), a null a null: what a CSV
/// answer holds in a cell, and what an upload stores of a Parquet or Arrow nested column.
pub fn nested_as_json_text(
    field: &arrow_schema::FieldRef,
    column: &arrow::array::ArrayRef,
) -> Result<arrow::array::ArrayRef, arrow_schema::ArrowError> {
    use arrow::json::writer::{EncoderOptions, make_encoder};
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let mut encoder = make_encoder(field, column, &options)?;
    let mut text = arrow::array::StringBuilder::with_capacity(column.len(), column.len() * 16);
    let mut value = Vec::new();
    for row in 0..column.len() {
        if encoder.is_null(row) {
            text.append_null();
            continue;
        }
        value.clear();
        encoder.encode(row, &mut value);
        text.append_value(String::from_utf8_lossy(&value));
    }
    Ok(std::sync::Arc::new(text.finish()))
}

/// The values of a date or time type that text can show, as counts of its unit: dates and
/// times of the years chrono's calendar holds (and so arrow's formatters: -262143 to 262142),
/// times of day within 24 hours. `None` for other types, and for nanosecond timestamps (1677
/// to 2262: every value is in range). A timestamp of seconds can count far beyond (1e14 s is
/// year 3170843): arrow cannot write it as text, so uploads refuse it (most likely a count of a
/// smaller unit) and text answers write it themselves (`datagate_query::beyond_calendar`).
pub fn showable_range(ty: &DataType) -> Option<std::ops::RangeInclusive<i64>> {
    use chrono::NaiveDateTime;
    const DAY: i64 = 86_400;
    let (min, max) = (NaiveDateTime::MIN.and_utc(), NaiveDateTime::MAX.and_utc());
    Some(match ty {
        DataType::Date32 => min.timestamp().div_euclid(DAY)..=max.timestamp().div_euclid(DAY),
        DataType::Date64 | DataType::Timestamp(TimeUnit::Millisecond, _) => {
            min.timestamp_millis()..=max.timestamp_millis()
        }
        DataType::Timestamp(TimeUnit::Second, _) => min.timestamp()..=max.timestamp(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            min.timestamp_micros()..=max.timestamp_micros()
        }
        DataType::Time32(TimeUnit::Second) => 0..=DAY - 1,
        DataType::Time32(_) => 0..=DAY * 1_000 - 1,
        DataType::Time64(TimeUnit::Microsecond) => 0..=DAY * 1_000_000 - 1,
        DataType::Time64(_) => 0..=DAY * 1_000_000_000 - 1,
        _ => return None,
    })
}

/// The first row of a date or time `column` that text cannot show ([`showable_range`]), and
/// its count of the type's unit; `None` when every value can be shown (or the type has no
/// such limit).
pub fn first_unshowable(column: &arrow::array::ArrayRef) -> Option<(usize, i64)> {
    first_outside(column, &showable_range(column.data_type())?)
}

/// The first row of a date or time `column` whose count of its unit is outside `range`, and
/// that count; `None` when every value is inside (or the column is of no such type). Reads
/// the column's least and greatest values in place (no copy: it runs on every batch of a JSON
/// or CSV answer) and looks for the row only when one is outside.
pub fn first_outside(
    column: &arrow::array::ArrayRef,
    range: &std::ops::RangeInclusive<i64>,
) -> Option<(usize, i64)> {
    use arrow::array::{Array, ArrowPrimitiveType, AsArray, PrimitiveArray};
    use arrow::datatypes::*;
    fn scan<T: ArrowPrimitiveType>(
        a: &dyn Array,
        range: &std::ops::RangeInclusive<i64>,
    ) -> Option<(usize, i64)>
    where
        T::Native: Into<i64>,
    {
        let a: &PrimitiveArray<T> = a.as_primitive();
        let inside = |v: Option<T::Native>| v.is_none_or(|v| range.contains(&v.into()));
        if inside(arrow::compute::min(a)) && inside(arrow::compute::max(a)) {
            return None;
        }
        a.iter().enumerate().find_map(|(row, v)| {
            v.map(Into::into)
                .filter(|v| !range.contains(v))
                .map(|v| (row, v))
        })
    }
    let c = column.as_ref();
    match column.data_type() {
        DataType::Date32 => scan::<Date32Type>(c, range),
        DataType::Date64 => scan::<Date64Type>(c, range),
        DataType::Timestamp(TimeUnit::Second, _) => scan::<TimestampSecondType>(c, range),
        DataType::Timestamp(TimeUnit::Millisecond, _) => scan::<TimestampMillisecondType>(c, range),
        DataType::Timestamp(TimeUnit::Microsecond, _) => scan::<TimestampMicrosecondType>(c, range),
        DataType::Time32(TimeUnit::Second) => scan::<Time32SecondType>(c, range),
        DataType::Time32(_) => scan::<Time32MillisecondType>(c, range),
        DataType::Time64(TimeUnit::Microsecond) => scan::<Time64MicrosecondType>(c, range),
        DataType::Time64(_) => scan::<Time64NanosecondType>(c, range),
        _ => None,
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Utf8 => f.write_str("utf8"),
            Self::Boolean => f.write_str("boolean"),
            Self::Int8 => f.write_str("int8"),
            Self::Int16 => f.write_str("int16"),
            Self::Int32 => f.write_str("int32"),
            Self::Int64 => f.write_str("int64"),
            Self::UInt8 => f.write_str("uint8"),
            Self::UInt16 => f.write_str("uint16"),
            Self::UInt32 => f.write_str("uint32"),
            Self::UInt64 => f.write_str("uint64"),
            Self::Float32 => f.write_str("float32"),
            Self::Float64 => f.write_str("float64"),
            Self::Date32 => f.write_str("date32"),
            Self::Timestamp(u) => write!(f, "timestamp({})", unit_name(*u)),
            Self::Decimal128(p, s) => write!(f, "decimal128({p},{s})"),
        }
    }
}

impl FromStr for ColumnType {
    type Err = UnsupportedType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        let err = || UnsupportedType::named(s);
        Ok(match norm.as_str() {
            "utf8" | "string" | "text" | "varchar" => Self::Utf8,
            "boolean" | "bool" => Self::Boolean,
            "int8" => Self::Int8,
            "int16" => Self::Int16,
            "int32" | "int" => Self::Int32,
            "int64" | "bigint" => Self::Int64,
            "uint8" => Self::UInt8,
            "uint16" => Self::UInt16,
            "uint32" => Self::UInt32,
            "uint64" => Self::UInt64,
            "float32" => Self::Float32,
            "float64" | "double" => Self::Float64,
            "date32" | "date" => Self::Date32,
            "timestamp" => Self::Timestamp(TimeUnit::Microsecond),
            _ => {
                if let Some(inner) = norm
                    .strip_prefix("timestamp(")
                    .and_then(|r| r.strip_suffix(')'))
                {
                    let unit = match inner {
                        "s" | "second" => TimeUnit::Second,
                        "ms" | "millisecond" => TimeUnit::Millisecond,
                        "us" | "µs" | "microsecond" => TimeUnit::Microsecond,
                        "ns" | "nanosecond" => TimeUnit::Nanosecond,
                        _ => return Err(err()),
                    };
                    Self::Timestamp(unit)
                } else if let Some(inner) = norm
                    .strip_prefix("decimal128(")
                    .or_else(|| norm.strip_prefix("decimal("))
                    .and_then(|r| r.strip_suffix(')'))
                {
                    let (p, s) = inner.split_once(',').ok_or_else(err)?;
                    let p: u8 = p.parse().map_err(|_| err())?;
                    let s: i8 = s.parse().map_err(|_| err())?;
                    if p == 0 || p > 38 || s < 0 || s as u8 > p {
                        return Err(err());
                    }
                    Self::Decimal128(p, s)
                } else {
                    return Err(err());
                }
            }
        })
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_round_trip() {
        for name in [
            "utf8",
            "boolean",
            "int32",
            "int64",
            "float64",
            "date32",
            "timestamp(us)",
            "timestamp(ms)",
            "decimal128(18,2)",
        ] {
            let t: ColumnType = name.parse().unwrap();
            assert_eq!(t.to_string(), name);
            assert_eq!(ColumnType::from_arrow(&t.to_arrow()).unwrap(), t);
        }
    }

    #[test]
    fn aliases_and_errors() {
        assert_eq!(
            "Decimal128(10, 2)".parse::<ColumnType>().unwrap(),
            ColumnType::Decimal128(10, 2)
        );
        assert_eq!("date".parse::<ColumnType>().unwrap(), ColumnType::Date32);
        assert!("decimal128(2,5)".parse::<ColumnType>().is_err());
        assert!("list<int>".parse::<ColumnType>().is_err());
        assert!("timestamp(h)".parse::<ColumnType>().is_err());
    }

    #[test]
    fn names_keep_the_case_of_what_arrow_quotes() {
        use arrow::datatypes::{Field, Fields};
        let zoned = DataType::Timestamp(TimeUnit::Second, Some("Asia/Shanghai".into()));
        let name = type_name(&zoned);
        assert!(name.starts_with("timestamp("), "{name}");
        assert!(name.contains("\"Asia/Shanghai\""), "{name}");
        let fields = Fields::from(vec![
            Field::new("CaseNo", DataType::Int64, true),
            Field::new("say \"Hi\"", DataType::Utf8, false),
        ]);
        let name = type_name(&DataType::Struct(fields));
        assert!(name.starts_with("struct("), "{name}");
        assert!(name.contains("\"CaseNo\": int64"), "{name}");
        assert!(name.contains(r#""say \"Hi\"": non-null utf8"#), "{name}");
        assert_eq!(type_name(&DataType::Int64), "int64");
    }

    /// A type no column has is named as the API names types, with the usual way around it.
    #[test]
    fn unsupported_arrow_types_say_what_to_do() {
        use arrow::datatypes::Field;
        let list = DataType::List(std::sync::Arc::new(Field::new(
            "element",
            DataType::Utf8,
            true,
        )));
        let e = ColumnType::from_arrow(&list).unwrap_err().to_string();
        assert!(e.starts_with("unsupported column type \"list("), "{e}");
        assert!(
            e.ends_with("decimal128(p,s)"),
            "no hint: uploads store lists as text: {e}"
        );
        let e = ColumnType::from_arrow(&DataType::Binary)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"binary\"") && e.contains("hex or base64"),
            "{e}"
        );
        let e = ColumnType::from_arrow(&DataType::Duration(TimeUnit::Second));
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("whole number of its unit")
        );
        let e = "list<int>".parse::<ColumnType>().unwrap_err().to_string();
        assert!(
            e.starts_with("unsupported column type \"list<int>\"; expected"),
            "{e}"
        );
        assert!(e.ends_with("decimal128(p,s)"), "{e}");
    }
}
