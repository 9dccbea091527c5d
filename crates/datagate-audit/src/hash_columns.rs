//! How the Parquet copy stores a record's `prev_hash` and `hash`: as their 32 bytes
//! (`FIXED_LEN_BYTE_ARRAY(32)`, not compressed), not as 64 hex characters under zstd. The
//! two hashes are most of a record's bytes and do not compress beyond the hex's factor of
//! two, so the bytes take the same room on disk as the compressed hex did, without the
//! compressor's time (a seventh of a conversion's CPU) or the decompressor's on every read.
//! (Plain `BYTE_ARRAY` would be 5% cheaper to write, but DataFusion reads a binary column of a
//! table whose column is text as text, so a scan would fail on the bytes.)
//!
//! `audit.events` still shows them as lowercase hex (`utf8`): each scan of a file that holds
//! them as bytes hex-encodes them where the scan reads them ([`HexHashesAdapterFactory`]),
//! and files written before (hex text) read as they always did. [`to_hex`] does the same for
//! readers of the files themselves (`verify`).

use crate::error::{AuditError, Result};
use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use std::sync::Arc;

/// The columns stored as bytes.
pub const HASH_COLUMNS: [&str; 2] = ["prev_hash", "hash"];

/// Bytes of a SHA-256 hash.
const HASH_BYTES: i32 = 32;

fn is_hash_column(name: &str) -> bool {
    HASH_COLUMNS.contains(&name)
}

/// Whether `f` is a hash column holding hashes' bytes. Any other type (hex text from before,
/// or bytes of another width in a doctored file) is left to the readers' own type checks.
fn holds_bytes(f: &Field) -> bool {
    is_hash_column(f.name()) && *f.data_type() == DataType::FixedSizeBinary(HASH_BYTES)
}

/// The schema of the Parquet copy's files: [`crate::reader::events_schema`] with the hashes as
/// bytes.
pub fn file_schema() -> SchemaRef {
    let events = crate::reader::events_schema();
    Arc::new(Schema::new(
        events
            .fields()
            .iter()
            .map(|f| {
                if is_hash_column(f.name()) {
                    Arc::new(Field::new(
                        f.name(),
                        DataType::FixedSizeBinary(HASH_BYTES),
                        f.is_nullable(),
                    ))
                } else {
                    f.clone()
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// The 32 bytes of 64 lowercase hex digits (what the log writes), or `None`. A table instead of
/// `hex::decode_to_slice`, whose per-digit branching was a tenth of a verification (`perf`).
pub fn decode_hash(digits: &[u8]) -> Option<[u8; 32]> {
    const BAD: u8 = 0xff;
    const VALUE: [u8; 256] = {
        let mut t = [BAD; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let digits: &[u8; 64] = digits.try_into().ok()?;
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (VALUE[pair[0] as usize], VALUE[pair[1] as usize]);
        bad |= (hi | lo) & 0xf0;
        *o = (hi << 4) | lo;
    }
    (bad == 0).then_some(out)
}

/// `batch` (of [`crate::reader::events_schema`]) with its hash columns as bytes, as the
/// conversion writes them ([`crate::reader::BatchBuilder::for_file`] builds them so directly).
/// A hash that is not 64 lowercase hex characters is an error.
#[cfg(test)]
pub(crate) fn to_binary(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = file_schema();
    let columns = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            if !is_hash_column(f.name()) {
                return Ok(c.clone());
            }
            let hex = c.as_string_opt::<i32>().ok_or_else(|| {
                AuditError::Invalid(format!("the column {} is not text", f.name()))
            })?;
            let mut bytes = Vec::with_capacity(hex.len() * HASH_BYTES as usize);
            for i in 0..hex.len() {
                // Nulls keep their place with zero bytes under the null mask.
                let value = if hex.is_null(i) {
                    [0u8; 32]
                } else {
                    decode_hash(hex.value(i).as_bytes()).ok_or_else(|| {
                        AuditError::Invalid(format!(
                            "{} {:?} is not a hash",
                            f.name(),
                            hex.value(i)
                        ))
                    })?
                };
                bytes.extend_from_slice(&value);
            }
            let array =
                FixedSizeBinaryArray::try_new(HASH_BYTES, bytes.into(), hex.logical_nulls())
                    .map_err(|e| AuditError::Invalid(e.to_string()))?;
            Ok(Arc::new(array) as ArrayRef)
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema, columns).map_err(|e| AuditError::Invalid(e.to_string()))
}

/// Hex text of a column of hashes stored as bytes (values of any width).
fn hex_of(bytes: &FixedSizeBinaryArray) -> StringArray {
    let width = usize::try_from(bytes.value_length()).unwrap_or(0);
    let mut out = arrow::array::StringBuilder::with_capacity(bytes.len(), bytes.len() * width * 2);
    let mut text = vec![0u8; width * 2];
    for i in 0..bytes.len() {
        if bytes.is_null(i) {
            out.append_null();
            continue;
        }
        match hex::encode_to_slice(bytes.value(i), &mut text) {
            // Hex digits are ASCII.
            Ok(()) => out.append_value(std::str::from_utf8(&text).unwrap_or_default()),
            Err(_) => out.append_null(),
        }
    }
    out.finish()
}

/// `batch` read from a Parquet copy with its hash columns as hex text, as
/// [`crate::reader::events_schema`] types them; a batch holding them as text already (files
/// written before they were stored as bytes) comes back as it is.
pub fn to_hex(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| holds_bytes(f)) {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        match c.as_fixed_size_binary_opt() {
            Some(bytes) if holds_bytes(f) => {
                fields.push(Arc::new(Field::new(
                    f.name(),
                    DataType::Utf8,
                    f.is_nullable(),
                )));
                columns.push(Arc::new(hex_of(bytes)) as ArrayRef);
            }
            _ => {
                fields.push(f.clone());
                columns.push(c.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| AuditError::Invalid(e.to_string()))
}

/// `audit_hash_hex(bytes)`: a hash stored as bytes as its lowercase hex text. Used by
/// [`HexHashesAdapterFactory`] inside scans, not registered for SQL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct HexOfHash {
    signature: datafusion::logical_expr::Signature,
}

impl HexOfHash {
    const NAME: &str = "audit_hash_hex";
}

impl Default for HexOfHash {
    fn default() -> Self {
        Self {
            signature: datafusion::logical_expr::Signature::exact(
                vec![DataType::FixedSizeBinary(HASH_BYTES)],
                datafusion::logical_expr::Volatility::Immutable,
            ),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for HexOfHash {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
        let arrays = datafusion::logical_expr::ColumnarValue::values_to_arrays(&args.args)?;
        let bytes = arrays[0].as_fixed_size_binary_opt().ok_or_else(|| {
            datafusion::common::DataFusionError::Internal(format!(
                "{} of {}",
                Self::NAME,
                arrays[0].data_type()
            ))
        })?;
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
            hex_of(bytes),
        )))
    }
}

/// Scans of the Parquet copy through this adapter read a hash column stored as bytes as its
/// hex text (`audit_hash_hex(column)`), in filters and projections alike; everything else is
/// adapted as DataFusion's default adapter does (casts, missing columns as nulls).
#[derive(Debug, Default)]
pub struct HexHashesAdapterFactory;

impl PhysicalExprAdapterFactory for HexHashesAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> datafusion::common::Result<Arc<dyn PhysicalExprAdapter>> {
        let stored_as_bytes: Vec<String> = physical_file_schema
            .fields()
            .iter()
            .filter(|f| holds_bytes(f))
            .map(|f| f.name().clone())
            .collect();
        // The default adapter sees the hash columns as the text they are read as (so it
        // leaves them uncast, only placed at their index in the file); they are then wrapped in
        // the encoding that makes them that text.
        let as_text = Arc::new(Schema::new_with_metadata(
            physical_file_schema
                .fields()
                .iter()
                .map(|f| {
                    if stored_as_bytes.contains(f.name()) {
                        Arc::new(Field::new(f.name(), DataType::Utf8, f.is_nullable()))
                    } else {
                        f.clone()
                    }
                })
                .collect::<Vec<_>>(),
            physical_file_schema.metadata().clone(),
        ));
        Ok(Arc::new(HexHashesAdapter {
            default: DefaultPhysicalExprAdapterFactory.create(logical_file_schema, as_text)?,
            stored_as_bytes,
            physical_file_schema,
        }))
    }
}

#[derive(Debug)]
struct HexHashesAdapter {
    default: Arc<dyn PhysicalExprAdapter>,
    stored_as_bytes: Vec<String>,
    physical_file_schema: SchemaRef,
}

impl PhysicalExprAdapter for HexHashesAdapter {
    fn rewrite(
        &self,
        expr: Arc<dyn PhysicalExpr>,
    ) -> datafusion::common::Result<Arc<dyn PhysicalExpr>> {
        let adapted = self.default.rewrite(expr)?;
        if self.stored_as_bytes.is_empty() {
            return Ok(adapted);
        }
        let encode = Arc::new(ScalarUDF::new_from_impl(HexOfHash::default()));
        adapted
            .transform_up(|e| {
                let Some(column) = e.downcast_ref::<Column>() else {
                    return Ok(Transformed::no(e));
                };
                if !self.stored_as_bytes.iter().any(|n| n == column.name()) {
                    return Ok(Transformed::no(e));
                }
                let nullable = self
                    .physical_file_schema
                    .field_with_name(column.name())
                    .map(|f| f.is_nullable())
                    .unwrap_or(true);
                let hex: Arc<dyn PhysicalExpr> = Arc::new(ScalarFunctionExpr::new(
                    HexOfHash::NAME,
                    encode.clone(),
                    vec![e.clone()],
                    Arc::new(Field::new(column.name(), DataType::Utf8, nullable)),
                    Arc::new(datafusion::config::ConfigOptions::default()),
                ));
                Ok(Transformed::yes(hex))
            })
            .data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_through_bytes() {
        let a = "00".repeat(32);
        let b = "0123456789abcdef".repeat(4);
        assert_eq!(decode_hash(b.as_bytes()).map(hex::encode), Some(b.clone()));
        for bad in [
            "0123456789ABCDEF".repeat(4),
            "g".repeat(64),
            "00".repeat(31),
            "00".repeat(33),
        ] {
            assert!(decode_hash(bad.as_bytes()).is_none(), "{bad}");
        }
        assert_eq!(decode_hash(a.as_bytes()), Some([0u8; 32]));
    }
}
