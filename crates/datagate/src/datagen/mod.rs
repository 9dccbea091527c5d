//! `datagate gen`: deterministic synthetic datasets shaped like a city's open data.
//!
//! Each [`Kind`] is one dataset shape of the sample catalog. Rows are produced a batch at a
//! time from a PRNG seeded by `(seed, batch index)`, so the same seed, row count and format give
//! the same bytes, and batches can be made in parallel. Identifiers (credit codes, case numbers)
//! derive from the row number, so they are unique at any size.

mod codes;
mod kinds;
mod words;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use std::io::Write;
use std::sync::Arc;

pub use kinds::Kind;

/// Rows per generated batch.
pub const BATCH_ROWS: usize = 32_768;

/// Output formats of the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenFormat {
    Csv,
    Parquet,
}

/// A small PRNG wrapper with the picks the generators need.
pub struct Gen {
    rng: Pcg64Mcg,
}

impl Gen {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mixed = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            rng: Pcg64Mcg::seed_from_u64(mixed),
        }
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.random_range(lo..hi)
    }
    pub fn float(&mut self, lo: f64, hi: f64) -> f64 {
        self.rng.random_range(lo..hi)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }
    pub fn digit(&mut self) -> u8 {
        self.rng.random_range(0..10)
    }
}

/// The Arrow schema of a kind.
pub fn schema(kind: Kind) -> SchemaRef {
    Arc::new(Schema::new(
        kind.columns()
            .iter()
            .map(|(name, ty)| Field::new(*name, ty.to_arrow(), true))
            .collect::<Vec<_>>(),
    ))
}

/// The `batch`-th batch of `kind` (rows `batch * BATCH_ROWS ..`, at most `rows` in total).
pub fn batch(kind: Kind, seed: u64, index: u64, total_rows: u64) -> Result<Option<RecordBatch>> {
    let first = index * BATCH_ROWS as u64;
    if first >= total_rows {
        return Ok(None);
    }
    let n = (total_rows - first).min(BATCH_ROWS as u64) as usize;
    // The kind is mixed in so that two shapes made with one seed do not share their draws.
    let mut g = Gen::new(
        seed ^ (kind as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93),
        index,
    );
    let columns = kind.fill(&mut g, first, n);
    Ok(Some(RecordBatch::try_new(schema(kind), columns)?))
}

/// Writes `rows` rows of `kind` to `out`; returns the number of rows written.
/// Batches are made (and, for CSV, formatted) on all cores and written in order.
pub fn generate(
    kind: Kind,
    rows: u64,
    seed: u64,
    format: GenFormat,
    out: impl Write + Send,
) -> Result<u64> {
    let batches = rows.div_ceil(BATCH_ROWS as u64);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1) as u64;
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Result<Piece>)>(workers as usize * 2);
    std::thread::scope(|scope| -> Result<u64> {
        for w in 0..workers {
            let tx = tx.clone();
            scope.spawn(move || {
                let mut i = w;
                while i < batches {
                    let piece = match batch(kind, seed, i, rows) {
                        Ok(Some(b)) => Piece::make(format, b, i == 0),
                        Ok(None) => return,
                        Err(e) => Err(e),
                    };
                    let failed = piece.is_err();
                    if tx.send((i, piece)).is_err() || failed {
                        return;
                    }
                    i += workers;
                }
            });
        }
        drop(tx);
        let mut sink = match format {
            GenFormat::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                let writer = parquet::arrow::ArrowWriter::try_new(out, schema(kind), Some(props))?;
                Sink::Parquet(Box::new(writer))
            }
            GenFormat::Csv => Sink::Csv(out),
        };
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0u64;
        let mut written = 0u64;
        for (i, piece) in rx {
            pending.insert(i, piece?);
            while let Some(piece) = pending.remove(&next) {
                written += piece.rows as u64;
                match (&piece.body, &mut sink) {
                    (PieceBody::Csv(bytes), Sink::Csv(w)) => {
                        w.write_all(bytes).context("writing CSV")?
                    }
                    (PieceBody::Batch(b), Sink::Parquet(w)) => {
                        w.write(b).context("writing Parquet")?
                    }
                    _ => anyhow::bail!("a piece of the wrong format"),
                }
                next += 1;
            }
        }
        match sink {
            Sink::Csv(mut w) => w.flush()?,
            Sink::Parquet(w) => {
                w.close()?;
            }
        }
        Ok(written)
    })
}

enum Sink<W: Write + Send> {
    Csv(W),
    Parquet(Box<parquet::arrow::ArrowWriter<W>>),
}

/// One batch ready to write: CSV text (formatted on the worker), or a batch for Parquet.
struct Piece {
    rows: usize,
    body: PieceBody,
}

enum PieceBody {
    Csv(Vec<u8>),
    Batch(RecordBatch),
}

impl Piece {
    fn make(format: GenFormat, batch: RecordBatch, first: bool) -> Result<Piece> {
        let rows = batch.num_rows();
        let body = match format {
            GenFormat::Csv => {
                let mut buf = Vec::with_capacity(rows * 128);
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(first)
                    .build(&mut buf);
                w.write(&batch).context("formatting CSV")?;
                drop(w);
                PieceBody::Csv(buf)
            }
            GenFormat::Parquet => PieceBody::Batch(batch),
        };
        Ok(Piece { rows, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_unique_keys() {
        for kind in Kind::ALL {
            let mut a = Vec::new();
            let mut b = Vec::new();
            generate(*kind, 1000, 7, GenFormat::Csv, &mut a).unwrap();
            generate(*kind, 1000, 7, GenFormat::Csv, &mut b).unwrap();
            assert_eq!(a, b, "{kind:?}");
            let mut c = Vec::new();
            generate(*kind, 1000, 8, GenFormat::Csv, &mut c).unwrap();
            assert_ne!(a, c, "{kind:?}: another seed gives other rows");
            let text = String::from_utf8(a).unwrap();
            assert_eq!(text.lines().count(), 1001, "{kind:?}");
            // The first column is each kind's key: unique.
            let keys: std::collections::HashSet<&str> = text
                .lines()
                .skip(1)
                .map(|l| l.split(',').next().unwrap())
                .collect();
            assert_eq!(keys.len(), 1000, "{kind:?}");
        }
    }

    #[test]
    fn parquet_round_trips_row_count() {
        let mut out = Vec::new();
        generate(
            Kind::MarketEntities,
            70_000,
            1,
            GenFormat::Parquet,
            &mut out,
        )
        .unwrap();
        let reader =
            parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(out)).unwrap();
        use parquet::file::reader::FileReader;
        assert_eq!(reader.metadata().file_metadata().num_rows(), 70_000);
    }
}
