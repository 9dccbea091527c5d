//! Text for dates and times beyond the calendar arrow's formatters know.
//!
//! arrow writes dates and times as text through chrono, whose calendar holds the years -262143
//! to 262142 ([`datagate_core::types::showable_range`]); beyond it arrow's JSON encoders write
//! `"ERROR: Cast error: ..."` as the value and its CSV writer fails the batch. SQL makes such
//! values (`to_timestamp_seconds(99999999999999)` is in the year 3170843), and one met in a
//! later batch of a streamed answer could only abort it after its `200`. So a JSON, NDJSON or
//! CSV answer writes them, as PostgreSQL and DuckDB write years beyond 9999: in the layout arrow
//! gives every other value of the column, the year signed and as long as it needs
//! (`+3170843-01-24T09:46:39`), a time of day beyond 24 hours with its hours (`27:46:40`).
//!
//! The proleptic Gregorian calendar repeats every 400 years (146,097 days, a whole number of
//! weeks), so a value moved by whole cycles into the calendar falls on the same month, day and
//! time: arrow formats it there, with the column's time zone, and its year is put back.

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, Int64Array, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use std::fmt::Write;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// Days in 400 Gregorian years.
const CYCLE_DAYS: i64 = 146_097;

/// `batch` with each date or time column that holds a value arrow cannot write as text
/// replaced by the column's text (every value in the layout arrow writes, those beyond the
/// calendar as this module writes them); `None` when no column holds one. Costs a least and
/// greatest value per date or time column when none does.
pub fn as_text(batch: &RecordBatch) -> Result<Option<RecordBatch>, ArrowError> {
    crate::encode::replace_columns(batch, |_, column| {
        let Some(range) = formattable(column.data_type()) else {
            return Ok(None);
        };
        if datagate_core::types::first_outside(column, &range).is_none() {
            return Ok(None);
        }
        column_text(column, &range).map(Some)
    })
}

/// The values of a date or time type that arrow formats, as counts of its unit. A timestamp
/// with a time zone keeps two days from the calendar's ends: its local time, not its UTC time,
/// must fall inside it.
fn formattable(ty: &DataType) -> Option<RangeInclusive<i64>> {
    let range = datagate_core::types::showable_range(ty)?;
    Some(match ty {
        DataType::Timestamp(unit, Some(_)) => {
            let margin = 2 * per_day(*unit);
            range.start() + margin..=range.end() - margin
        }
        _ => range,
    })
}

/// Counts of `unit` in a day.
fn per_day(unit: TimeUnit) -> i64 {
    86_400
        * match unit {
            TimeUnit::Second => 1,
            TimeUnit::Millisecond => 1_000,
            TimeUnit::Microsecond => 1_000_000,
            TimeUnit::Nanosecond => 1_000_000_000,
        }
}

/// The column as text: arrow's text for each value inside `range`, this module's beyond it.
fn column_text(column: &ArrayRef, range: &RangeInclusive<i64>) -> Result<ArrayRef, ArrowError> {
    let counts = cast(column, &DataType::Int64)?;
    let counts = counts.as_primitive::<Int64Type>();
    let options = FormatOptions::default();
    let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
    let mut text = StringBuilder::with_capacity(column.len(), column.len() * 24);
    for row in 0..column.len() {
        if column.is_null(row) {
            text.append_null();
            continue;
        }
        let count = counts.value(row);
        if range.contains(&count) {
            formatter.value(row).write(&mut text)?;
        } else {
            beyond(column.data_type(), count, range, &mut text)?;
        }
        text.append_value("");
    }
    Ok(Arc::new(text.finish()))
}

/// Writes `count` of a date or time type `ty`, outside `range`, into `out`.
fn beyond(
    ty: &DataType,
    count: i64,
    range: &RangeInclusive<i64>,
    out: &mut impl Write,
) -> Result<(), ArrowError> {
    let per_second = match ty {
        DataType::Time32(TimeUnit::Second) => 1,
        DataType::Time32(_) => 1_000,
        DataType::Time64(TimeUnit::Microsecond) => 1_000_000,
        DataType::Time64(_) => 1_000_000_000,
        DataType::Date32 => return shifted(ty, count, 1, range, out),
        DataType::Date64 => return shifted(ty, count, per_day(TimeUnit::Millisecond), range, out),
        DataType::Timestamp(unit, _) => return shifted(ty, count, per_day(*unit), range, out),
        _ => return Err(ArrowError::CastError(format!("{ty} is no date or time"))),
    };
    time_of_day(count, per_second, out).map_err(|e| ArrowError::ExternalError(Box::new(e)))
}

/// A date or time `count` (of a type counting `per_day` a day) beyond `range`: moved by whole
/// 400-year cycles to the nearest end of the range, formatted by arrow there, its year put back.
fn shifted(
    ty: &DataType,
    count: i64,
    per_day: i64,
    range: &RangeInclusive<i64>,
    out: &mut impl Write,
) -> Result<(), ArrowError> {
    let cycle = CYCLE_DAYS * per_day;
    let (edge, direction) = if count > *range.end() {
        (*range.end(), -1i128)
    } else {
        (*range.start(), 1)
    };
    // Whole cycles that bring `count` to `edge` or just inside it: at most a few million, as a
    // count of an i64 unit is at most 2^63.
    let cycles = count.abs_diff(edge).div_ceil(cycle as u64);
    let moved = count as i128 + direction * cycles as i128 * cycle as i128;
    let moved = i64::try_from(moved).map_err(|_| ArrowError::CastError(format!("{count}")))?;
    let one: ArrayRef = match ty {
        DataType::Date32 => Arc::new(Int32Array::from(vec![moved as i32])),
        _ => Arc::new(Int64Array::from(vec![moved])),
    };
    let one = cast(&one, ty)?;
    let text = ArrayFormatter::try_new(one.as_ref(), &FormatOptions::default())?
        .value(0)
        .try_to_string()?;
    // The year is everything before the first `-` after a leading sign.
    let year_end = text
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '-')
        .map(|(i, _)| i)
        .ok_or_else(|| ArrowError::CastError(format!("no year in {text:?}")))?;
    let year: i64 = text[..year_end]
        .parse()
        .map_err(|_| ArrowError::CastError(format!("no year in {text:?}")))?;
    let year = year - direction as i64 * 400 * cycles as i64;
    let fail = |_| ArrowError::CastError(format!("cannot write the year {year}"));
    // chrono's convention (and so arrow's): four digits for the years 0 to 9999, otherwise signed.
    if (0..=9999).contains(&year) {
        write!(out, "{year:04}").map_err(fail)?;
    } else {
        write!(out, "{year:+05}").map_err(fail)?;
    }
    out.write_str(&text[year_end..]).map_err(fail)
}

/// A time of day `count` (of a type counting `per_second` a second) outside the day, as
/// `[-]HH:MM:SS` with its hours beyond 24 and the fraction of a second chrono writes (none, or
/// 3, 6 or 9 digits, as few as show it).
fn time_of_day(count: i64, per_second: i64, out: &mut impl Write) -> std::fmt::Result {
    if count < 0 {
        out.write_char('-')?;
    }
    let magnitude = count.unsigned_abs();
    let per_second = per_second as u64;
    let (seconds, part) = (magnitude / per_second, magnitude % per_second);
    write!(
        out,
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )?;
    let nanos = part * (1_000_000_000 / per_second);
    if nanos == 0 {
        Ok(())
    } else if nanos.is_multiple_of(1_000_000) {
        write!(out, ".{:03}", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        write!(out, ".{:06}", nanos / 1_000)
    } else {
        write!(out, ".{nanos:09}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Date32Array, Date64Array, Time32SecondArray, Time64NanosecondArray,
        TimestampMicrosecondArray, TimestampMillisecondArray, TimestampSecondArray,
    };
    use proptest::prelude::*;

    fn text_of(column: ArrayRef) -> Vec<Option<String>> {
        let range = formattable(column.data_type()).unwrap();
        let text = column_text(&column, &range).unwrap();
        text.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    }

    /// What arrow writes for a value of `column`.
    fn arrow_text(column: &dyn Array, row: usize) -> String {
        ArrayFormatter::try_new(column, &FormatOptions::default())
            .unwrap()
            .value(row)
            .to_string()
    }

    /// `count` formatted the way this module formats a value beyond the calendar, whether or
    /// not it is.
    fn moved_text(ty: &DataType, count: i64) -> String {
        let mut out = String::new();
        // A range that holds nothing but the calendar's last 400 years pushes every earlier
        // value through the move, and the move lands it in the calendar.
        let full = formattable(ty).unwrap();
        let per_day = match ty {
            DataType::Date32 => 1,
            DataType::Date64 => per_day(TimeUnit::Millisecond),
            DataType::Timestamp(unit, _) => per_day(*unit),
            _ => unreachable!(),
        };
        let top = *full.end() - CYCLE_DAYS * per_day + 1..=*full.end();
        let range = if top.contains(&count) {
            *full.start()..=*full.start() + CYCLE_DAYS * per_day - 1
        } else {
            top
        };
        shifted(ty, count, per_day, &range, &mut out).unwrap();
        out
    }

    #[test]
    fn values_beyond_the_calendar_are_written_with_their_year() {
        let limit = chrono::NaiveDateTime::MAX.and_utc().timestamp();
        let text = text_of(Arc::new(TimestampSecondArray::from(vec![
            Some(0),
            None,
            Some(limit),
            Some(limit + 1),
            Some(99_999_999_999_999),
            Some(-99_999_999_999_999),
            Some(i64::MAX),
            Some(i64::MIN),
        ])));
        let text: Vec<_> = text.iter().map(|t| t.as_deref()).collect();
        assert_eq!(
            text,
            [
                Some("1970-01-01T00:00:00"),
                None,
                Some("+262142-12-31T23:59:59"),
                Some("+262143-01-01T00:00:00"),
                // Each as the civil-from-days algorithm (H. Hinnant's) gives it, worked out apart.
                Some("+3170843-11-07T09:46:39"),
                Some("-3166904-02-24T14:13:21"),
                Some("+292277026596-12-04T15:30:07"),
                Some("-292277022657-01-27T08:29:52"),
            ]
        );
        let days = text_of(Arc::new(Date32Array::from(vec![i32::MAX, i32::MIN, 0])));
        assert_eq!(
            days,
            [
                Some("+5881580-07-11".to_owned()),
                Some("-5877641-06-23".to_owned()),
                Some("1970-01-01".to_owned())
            ]
        );
        // With a time zone: its offset, as arrow writes it inside the calendar.
        let zoned = TimestampSecondArray::from(vec![99_999_999_999_999, 0]).with_timezone("+08:00");
        assert_eq!(
            text_of(Arc::new(zoned)),
            [
                Some("+3170843-11-07T17:46:39+08:00".to_owned()),
                Some("1970-01-01T08:00:00+08:00".to_owned())
            ]
        );
        let shanghai =
            TimestampSecondArray::from(vec![99_999_999_999_999]).with_timezone("Asia/Shanghai");
        assert_eq!(
            text_of(Arc::new(shanghai)),
            [Some("+3170843-11-07T17:46:39+08:00".to_owned())]
        );
        // Fractions of a second as arrow writes them.
        let micros = TimestampMicrosecondArray::from(vec![i64::MAX]);
        assert_eq!(
            text_of(Arc::new(micros)),
            [Some("+294247-01-10T04:00:54.775807".to_owned())]
        );
    }

    #[test]
    fn times_of_day_beyond_the_day_keep_their_hours() {
        let text = text_of(Arc::new(Time32SecondArray::from(vec![
            86_399, 86_400, 100_000, -1,
        ])));
        let text: Vec<_> = text.iter().map(|t| t.as_deref().unwrap()).collect();
        assert_eq!(text, ["23:59:59", "24:00:00", "27:46:40", "-00:00:01"]);
        let nanos = text_of(Arc::new(Time64NanosecondArray::from(vec![
            86_400_000_000_000 + 500_000_000,
            86_400_000_000_000 + 1_500,
            86_400_000_000_000 + 1,
            -86_400_000_000_000 * 3,
        ])));
        let nanos: Vec<_> = nanos.iter().map(|t| t.as_deref().unwrap()).collect();
        assert_eq!(
            nanos,
            [
                "24:00:00.500",
                "24:00:00.000001500",
                "24:00:00.000000001",
                "-72:00:00"
            ]
        );
    }

    #[test]
    fn batches_without_such_values_are_left_alone() {
        let batch = RecordBatch::try_from_iter([
            (
                "d",
                Arc::new(Date32Array::from(vec![Some(0), None])) as ArrayRef,
            ),
            (
                "n",
                Arc::new(Int64Array::from(vec![Some(i64::MAX), None])) as ArrayRef,
            ),
        ])
        .unwrap();
        assert!(as_text(&batch).unwrap().is_none());
        let far = RecordBatch::try_from_iter([
            (
                "d",
                Arc::new(Date32Array::from(vec![Some(0), Some(i32::MAX)])) as ArrayRef,
            ),
            ("n", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ])
        .unwrap();
        let text = as_text(&far).unwrap().unwrap();
        assert_eq!(text.schema().field(0).data_type(), &DataType::Utf8);
        assert_eq!(text.schema().field(0).name(), "d");
        assert_eq!(text.column(1), far.column(1), "other columns are kept");
    }

    proptest! {
        /// Moved by whole cycles and put back, a value inside the calendar reads exactly as
        /// arrow writes it: the move keeps month, day and time, and the year is rewritten
        /// as chrono writes years (unsigned 0 to 9999, signed beyond).
        #[test]
        fn a_moved_value_reads_as_arrow_writes_it(
            seconds in -8_200_000_000_000i64..=8_200_000_000_000,
            millis in 0i64..1000,
            which in 0usize..5,
        ) {
            let (ty, column): (DataType, ArrayRef) = match which {
                0 => (DataType::Timestamp(TimeUnit::Second, None),
                      Arc::new(TimestampSecondArray::from(vec![seconds]))),
                1 => {
                    let ms = seconds * 1000 + millis;
                    (DataType::Timestamp(TimeUnit::Millisecond, None),
                     Arc::new(TimestampMillisecondArray::from(vec![ms])))
                }
                2 => (DataType::Date64, Arc::new(Date64Array::from(vec![seconds * 1000 + millis]))),
                3 => (DataType::Date32,
                      Arc::new(Date32Array::from(vec![seconds.div_euclid(86_400) as i32]))),
                _ => {
                    let ty = DataType::Timestamp(TimeUnit::Second, Some("-05:30".into()));
                    let a = TimestampSecondArray::from(vec![seconds]).with_timezone("-05:30");
                    (ty, Arc::new(a))
                }
            };
            let range = formattable(&ty).unwrap();
            let count = cast(&column, &DataType::Int64).unwrap().as_primitive::<Int64Type>().value(0);
            prop_assume!(range.contains(&count));
            prop_assert_eq!(moved_text(&ty, count), arrow_text(column.as_ref(), 0));
        }
    }
}
