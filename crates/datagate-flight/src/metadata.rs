//! Metadata answers: what the server is (`GetSqlInfo`, `GetXdbcTypeInfo`) and what this caller
//! may read (`GetCatalogs`, `GetDbSchemas`, `GetTables` with schemas, table types), each built
//! from the caller's own readable catalog — the one its queries run against, so a table listed
//! is a table it can query, typed as it sees it (masked columns as masked, private ones absent).
//! Datasets carry no foreign keys and declare their primary key in the catalog's metadata, not
//! as a constraint: the key commands answer empty results of the documented shape.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo,
    XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetTables, Nullable, Searchable, SqlInfo, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, SupportedSqlGrammar, XdbcDataType,
};
use datafusion::catalog::CatalogProvider;
use datagate_query::CATALOG_NAME;
use datagate_query::{DatagateCatalog, QueryError};
use std::sync::{Arc, OnceLock};

/// The one table type datagate serves.
pub const TABLE_TYPE: &str = "TABLE";

/// What `GetSqlInfo` answers.
pub fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "datagate");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        b.append(
            SqlInfo::SqlIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
        );
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(
            SqlInfo::SqlQuotedIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
        );
        b.append(SqlInfo::SqlAllTablesAreSelectable, true);
        b.append(
            SqlInfo::SqlSupportedGrammar,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        );
        b.append(SqlInfo::SqlSchemaTerm, "department");
        b.append(SqlInfo::SqlCatalogTerm, "catalog");
        b.append(SqlInfo::SqlTransactionsSupported, false);
        // Infallible for these value kinds; an empty set of infos is the fallback.
        b.build().unwrap_or_else(|_| {
            SqlInfoDataBuilder::new()
                .build()
                .expect("an empty SqlInfoData builds")
        })
    })
}

/// What `GetXdbcTypeInfo` answers: the SQL types datasets have.
pub fn xdbc_info() -> &'static XdbcTypeInfoData {
    static INFO: OnceLock<XdbcTypeInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = XdbcTypeInfoDataBuilder::new();
        let types = [
            ("VARCHAR", XdbcDataType::XdbcVarchar, None, Some("'")),
            ("BIGINT", XdbcDataType::XdbcBigint, Some(64), None),
            ("INTEGER", XdbcDataType::XdbcInteger, Some(32), None),
            ("DOUBLE", XdbcDataType::XdbcDouble, Some(53), None),
            ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None),
            ("DATE", XdbcDataType::XdbcDate, None, Some("'")),
            ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, Some("'")),
            ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), None),
        ];
        for (name, ty, size, quote) in types {
            b.append(XdbcTypeInfo {
                type_name: name.into(),
                data_type: ty,
                column_size: size,
                literal_prefix: quote.map(str::to_string),
                literal_suffix: quote.map(str::to_string),
                create_params: None,
                nullable: Nullable::NullabilityNullable,
                case_sensitive: ty == XdbcDataType::XdbcVarchar,
                searchable: Searchable::Full,
                unsigned_attribute: size.map(|_| false),
                fixed_prec_scale: false,
                auto_increment: Some(false),
                local_type_name: Some(name.into()),
                minimum_scale: None,
                maximum_scale: None,
                sql_data_type: ty,
                datetime_subcode: None,
                num_prec_radix: size.map(|_| 10),
                interval_precision: None,
            });
        }
        b.build().unwrap_or_else(|_| {
            XdbcTypeInfoDataBuilder::new()
                .build()
                .expect("an empty XdbcTypeInfoData builds")
        })
    })
}

/// `GetDbSchemas`: the departments in the caller's catalog.
pub fn db_schemas(departments: &[String], mut builder: GetDbSchemasBuilder) -> GetDbSchemasBuilder {
    for schema in departments {
        builder.append(CATALOG_NAME, schema);
    }
    builder
}

/// `GetTables`: the datasets the caller may read, with their schemas as it sees them when
/// `query` asks for them. Only the tables the query's catalog, table types and name patterns
/// keep are resolved, their versions read together (a schema as the caller sees it needs its
/// dataset's current version: resolving 5,000 datasets one by one took about a second), and
/// none without schemas;
/// the builder applies the same filters again as it builds.
pub async fn tables(
    catalog: &DatagateCatalog,
    query: &CommandGetTables,
) -> Result<GetTablesBuilder, QueryError> {
    let mut builder = query.clone().into_builder();
    let catalog_kept = query.catalog.as_deref().is_none_or(|c| c == CATALOG_NAME);
    let type_kept =
        query.table_types.is_empty() || query.table_types.iter().any(|t| t == TABLE_TYPE);
    if !catalog_kept || !type_kept {
        return Ok(builder);
    }
    let mut candidates: Vec<(String, String)> = Vec::new();
    for schema_name in catalog.schema_names() {
        if let Some(schema) = catalog.schema(&schema_name) {
            for name in schema.table_names() {
                candidates.push((schema_name.clone(), name));
            }
        }
    }
    candidates.sort();
    let kept = matching(
        &candidates,
        query.db_schema_filter_pattern.as_deref(),
        query.table_name_filter_pattern.as_deref(),
    )?;
    let internal = |e: arrow_flight::error::FlightError| QueryError::Internal(e.to_string());
    let kept: Vec<(String, String)> = candidates
        .into_iter()
        .zip(kept)
        .filter(|(_, keep)| *keep)
        .map(|(table, _)| table)
        .collect();
    if !query.include_schema {
        for (schema_name, name) in &kept {
            builder
                .append(
                    CATALOG_NAME,
                    schema_name,
                    name,
                    TABLE_TYPE,
                    &Schema::empty(),
                )
                .map_err(internal)?;
        }
        return Ok(builder);
    }
    // Their versions read together, then each table's schema as the caller sees it.
    catalog.resolve(&kept).await?;
    for (schema_name, name) in &kept {
        let table = catalog
            .table(schema_name, name)
            .await
            .map_err(|e| QueryError::from_datafusion(e, 0))?;
        if let Some(table) = table {
            let seen = datagate_query::view_types::api_schema(&table.provider.schema());
            builder
                .append(CATALOG_NAME, schema_name, name, TABLE_TYPE, &seen)
                .map_err(internal)?;
        }
    }
    Ok(builder)
}

/// Which of `candidates` (department, dataset) match the `LIKE` patterns, by arrow's `like`
/// kernel, the one `GetTablesBuilder::build` filters with.
fn matching(
    candidates: &[(String, String)],
    schema_pattern: Option<&str>,
    table_pattern: Option<&str>,
) -> Result<Vec<bool>, QueryError> {
    use arrow::array::StringArray;
    use arrow::compute::kernels::comparison::like;
    let mut kept = vec![true; candidates.len()];
    if schema_pattern.is_none() && table_pattern.is_none() {
        return Ok(kept);
    }
    let schemas = || candidates.iter().map(|c| c.0.as_str());
    let tables = || candidates.iter().map(|c| c.1.as_str());
    let columns = [
        (schema_pattern, StringArray::from_iter_values(schemas())),
        (table_pattern, StringArray::from_iter_values(tables())),
    ];
    for (pattern, values) in columns {
        let Some(pattern) = pattern else { continue };
        let matched = like(&values, &StringArray::new_scalar(pattern))
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        for (k, m) in kept.iter_mut().zip(matched.iter()) {
            *k &= m.unwrap_or(false);
        }
    }
    Ok(kept)
}

/// The shape of `GetPrimaryKeys`.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The shape of `GetExportedKeys`, `GetImportedKeys` and `GetCrossReference`.
pub fn foreign_keys_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// An empty answer of `schema`.
pub fn empty(schema: SchemaRef) -> RecordBatch {
    RecordBatch::new_empty(schema)
}
