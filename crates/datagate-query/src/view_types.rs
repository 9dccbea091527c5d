//! Strings inside a query are Arrow view types; strings leaving it are the API's `utf8`.
//!
//! A dataset's string columns are scanned as `Utf8View` ([`scan_type`]): Parquet's
//! dictionary-encoded pages then decode into views of the dictionary instead of copying every
//! row's bytes, and filters, hash aggregates and sorts compare the short inline prefixes (a
//! filtered `GROUP BY district` over 10M rows spends a fifth less CPU). What a caller gets keeps
//! the types the catalog declares ([`api_plan`], [`api_schema`]): the plan's output is cast back
//! to `Utf8` (`Binary` for `BinaryView`, nested types likewise), once, at the root, so every
//! format, the HTTP answer and Flight's FlightInfo and DoGet alike, carries `utf8` columns.

use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use std::sync::Arc;

/// The type a stored column of type `stored` is scanned as.
pub fn scan_type(stored: DataType) -> DataType {
    match stored {
        DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
        other => other,
    }
}

/// The type a caller sees for a value computed as `dt`: `None` when it is that already.
pub fn api_type(dt: &DataType) -> Option<DataType> {
    let field = |f: &FieldRef| {
        api_type(f.data_type()).map(|t| Arc::new(f.as_ref().clone().with_data_type(t)))
    };
    match dt {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        DataType::List(f) => field(f).map(DataType::List),
        DataType::LargeList(f) => field(f).map(DataType::LargeList),
        DataType::FixedSizeList(f, n) => field(f).map(|f| DataType::FixedSizeList(f, *n)),
        DataType::Map(f, sorted) => field(f).map(|f| DataType::Map(f, *sorted)),
        DataType::Struct(fields) => {
            let mapped: Vec<Option<FieldRef>> = fields.iter().map(field).collect();
            mapped.iter().any(Option::is_some).then(|| {
                DataType::Struct(Fields::from(
                    fields
                        .iter()
                        .zip(mapped)
                        .map(|(f, m)| m.unwrap_or_else(|| f.clone()))
                        .collect::<Vec<_>>(),
                ))
            })
        }
        _ => None,
    }
}

/// `schema` as a caller sees it (see [`api_type`]).
pub fn api_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match api_type(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `plan`, its view-typed output columns cast to the API's types (the plan itself when there are
/// none). Names, nullability and metadata are kept.
pub fn api_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    let schema = plan.schema();
    if schema
        .fields()
        .iter()
        .all(|f| api_type(f.data_type()).is_none())
    {
        return Ok(plan);
    }
    let exprs: Vec<ProjectionExpr> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let column = Arc::new(Column::new(f.name(), i));
            let expr: Arc<dyn datafusion::physical_expr::PhysicalExpr> =
                match api_type(f.data_type()) {
                    Some(t) => Arc::new(CastExpr::new_with_target_field(
                        column,
                        Arc::new(f.as_ref().clone().with_data_type(t)),
                        None,
                    )),
                    None => column,
                };
            ProjectionExpr {
                expr,
                alias: f.name().clone(),
            }
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_leave_as_the_api_types_nested_ones_too() {
        let inner = Arc::new(Field::new("item", DataType::Utf8View, true));
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8View, false),
            Field::new("n", DataType::Int64, true),
            Field::new("l", DataType::List(inner), true),
            Field::new(
                "st",
                DataType::Struct(Fields::from(vec![
                    Field::new("a", DataType::BinaryView, true),
                    Field::new("b", DataType::Date32, true),
                ])),
                true,
            ),
        ]);
        let api = api_schema(&schema);
        assert_eq!(api.field(0), &Field::new("s", DataType::Utf8, false));
        assert_eq!(api.field(1), schema.field(1));
        assert_eq!(
            api.field(2).data_type(),
            &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        assert_eq!(
            api.field(3).data_type(),
            &DataType::Struct(Fields::from(vec![
                Field::new("a", DataType::Binary, true),
                Field::new("b", DataType::Date32, true),
            ]))
        );
        assert_eq!(scan_type(DataType::Utf8), DataType::Utf8View);
        assert_eq!(scan_type(DataType::Int32), DataType::Int32);
    }
}
