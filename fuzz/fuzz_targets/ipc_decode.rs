//! The Arrow IPC stream decoder of uploads, with a declared schema and with the stream's own,
//! fed in two chunks: any bytes give batches or an error naming the row; never a panic that
//! escapes (arrow's decoder panics on some malformed messages; the upload decoder contains
//! those and answers an error, which the quiet hook keeps from counting as a crash here).
#![no_main]

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datagate_ingest::decode::IpcStreamDecoder;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Once};

#[path = "feed.rs"]
mod feed;
use feed::feed;

fuzz_target!(|data: &[u8]| {
    // libFuzzer's hook aborts on any panic: contained ones must pass it by, as in the gateway.
    static QUIET: Once = Once::new();
    QUIET.call_once(datagate_core::panics::install_quiet_hook);
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split) * data.len() / 256;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("fare", DataType::Decimal128(7, 2), true),
        Field::new("day", DataType::Date32, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]));
    feed(&mut IpcStreamDecoder::new(Some(schema), false), data, split);
    feed(&mut IpcStreamDecoder::new(None, false), data, split);
});
