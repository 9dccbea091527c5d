//! The page-header scan of Parquet uploads (`decode::parquet_pages`): the input is XORed onto a
//! small Parquet file's pages (the empty input is the file itself; its footer is kept, so
//! every column chunk points into the changed pages), and the scan must give sizes or an error
//! naming the row group and column; never a panic, never an allocation the input asks for. The dictionary measure goes through the
//! Parquet reader, whose panics the gateway contains: here too.
#![no_main]

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use datagate_ingest::decode::parquet_pages::{longest_dictionary_value, scan};
use libfuzzer_sys::fuzz_target;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::file::properties::WriterProperties;
use std::io::{Seek, Write};
use std::sync::{Arc, Once, OnceLock};

/// A file of three row groups, dictionary and plain pages, and where its pages end.
fn template() -> &'static (Vec<u8>, usize) {
    static FILE: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    FILE.get_or_init(|| {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..600));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..600).map(|i| format!("name {}", i % 40)),
        ));
        let batch = RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(200))
            .set_data_page_row_count_limit(64)
            .set_write_batch_size(64)
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let footer_len = u32::from_le_bytes(out[out.len() - 8..out.len() - 4].try_into().unwrap());
        let pages_end = out.len() - 8 - footer_len as usize;
        (out, pages_end)
    })
}

fuzz_target!(|data: &[u8]| {
    static QUIET: Once = Once::new();
    QUIET.call_once(datagate_core::panics::install_quiet_hook);
    let (file, pages_end) = template();
    let mut bytes = file.clone();
    for (b, d) in bytes[4..*pages_end].iter_mut().zip(data) {
        *b ^= d;
    }
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&bytes).unwrap();
    f.rewind().unwrap();
    let meta = ArrowReaderMetadata::load(&f, Default::default()).unwrap();
    if let Ok(groups) = scan(&f, meta.metadata()) {
        for (g, group) in groups.iter().enumerate() {
            for (c, chunk) in group.columns.iter().enumerate() {
                if chunk.dictionary_bytes.is_some() {
                    let column = meta.metadata().row_group(g).column(c);
                    let _ = datagate_core::panics::contain(|| {
                        longest_dictionary_value(&f, column, 200)
                    });
                }
            }
        }
    }
});
