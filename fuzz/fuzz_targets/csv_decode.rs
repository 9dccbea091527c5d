//! The CSV decoders, with a declared schema and with inference, fed in two chunks split where
//! the input says: any bytes give batches or an error naming the line; never a panic.
#![no_main]

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datagate_ingest::decode::{CsvDecoder, CsvOptions, InferringDecoder, TextFormat};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

#[path = "feed.rs"]
mod feed;
use feed::feed;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split) * data.len() / 256;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("fare", DataType::Decimal128(7, 2), true),
        Field::new("day", DataType::Date32, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("ok", DataType::Boolean, true),
    ]));
    // One decoder, one whose batches are cut every 16 bytes of input (as every 16 MiB), and
    // the parallel path cut into 64-byte segments (as 2 MiB ones are cut).
    let serial = CsvOptions {
        threads: 1,
        ..CsvOptions::new(b',', 64)
    };
    let cut = CsvOptions {
        batch_bytes: 16,
        ..serial
    };
    let parallel = CsvOptions {
        threads: 2,
        segment_bytes: 64,
        ..serial
    };
    feed(&mut CsvDecoder::new(schema.clone(), serial), data, split);
    feed(&mut CsvDecoder::new(schema.clone(), cut), data, split);
    feed(&mut CsvDecoder::new(schema, parallel), data, split);
    feed(&mut InferringDecoder::new(TextFormat::Csv(parallel)), data, split);
});
