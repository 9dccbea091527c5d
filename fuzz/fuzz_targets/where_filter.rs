//! The `where` translator: any text is refused with a problem or becomes a DataFusion
//! expression over the schema; never a panic, a hang or a stack overflow.
#![no_main]

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datagate_query::filter::{parse_where_text, translate_where};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("district", DataType::Utf8, true),
        Field::new("aqi", DataType::Int32, true),
        Field::new("pm25", DataType::Float64, true),
        Field::new("fare", DataType::Decimal128(5, 2), true),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "measured_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("open", DataType::Boolean, true),
    ]);
    if let Ok(ast) = parse_where_text(text, 4096, 64, 8) {
        let _ = translate_where(&ast, &schema, &HashMap::new(), 64);
    }
});
