//! The NDJSON decoders, with a declared schema and with inference, fed in two chunks: any
//! bytes give batches or an error naming the line; never a panic.
#![no_main]

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datagate_ingest::decode::{InferringDecoder, NdjsonDecoder, TextFormat};
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
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("ok", DataType::Boolean, true),
    ]));
    feed(&mut NdjsonDecoder::new(schema, 64), data, split);
    feed(
        &mut InferringDecoder::new(TextFormat::Ndjson { batch_rows: 64 }),
        data,
        split,
    );
});
