//! The Flight SQL commands, each a client of the same paths as the HTTP API.
//!
//! - Statements: `GetFlightInfo(CommandStatementQuery)` plans in the caller's session (the
//!   read-only gates of `POST /api/v1/query`; a refused or bad statement is `InvalidArgument`
//!   with its position), holds the physical plan under a ticket bound to the caller, and
//!   announces the plan's exact schema; `DoGet` runs it ([`crate::stream`]).
//! - Prepared statements: created with their result and parameter schemas (a handle always
//!   returned); `DoPut` binds rows of parameters, each row one execution (one endpoint each);
//!   `GetFlightInfo` plans every execution; closing forgets the handle.
//! - Metadata: [`crate::metadata`], from the caller's readable catalog.
//! - Refused with a clear message: updates, ingest, Substrait plans, transactions, savepoints.

use crate::handles::{Planned, Prepared};
use crate::metadata;
use crate::stream::FlightStream;
use crate::{Call, FlightGateway, status, tagged};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionCreatePreparedSubstraitPlanRequest,
    ActionEndSavepointRequest, ActionEndTransactionRequest, Any, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementSubstraitPlan,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::common::ScalarValue;
use datagate_access::fair_use::admission::Work;
use datagate_audit::DatasetVersion;
use datagate_query::execute::{self, Deadline};
use datagate_query::{QueryError, RequestSession, sql};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

/// The answer to updates and ingest: data changes go through the HTTP publishing API.
const READ_ONLY: &str = "datagate is read-only: publish and change data through the HTTP API \
                         (POST /api/v1/datasets/{dept}/{name}/versions)";

/// The most one message of bound parameters may decompress to (parameters are a few rows:
/// `flight.max_parameter_rows`).
const MAX_PARAMETER_BYTES: u64 = 64 << 20;

fn versions(read: &[datagate_query::plan_info::DatasetRead]) -> Vec<DatasetVersion> {
    read.iter()
        .map(|d| DatasetVersion {
            name: d.name.clone(),
            version: d.version,
        })
        .collect()
}

/// The IPC form of `schema` that Flight SQL messages carry.
fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

fn one_batch(
    schema: SchemaRef,
    batch: Result<RecordBatch, arrow::error::ArrowError>,
) -> FlightStream {
    let stream = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move {
            batch.map_err(arrow_flight::error::FlightError::Arrow)
        }))
        .map_err(Status::from);
    Box::pin(stream)
}

impl FlightGateway {
    /// Runs `work` on a session of what `call` may read of the datasets the statement `text`
    /// names, on the query executor within the time limit. Planning is data work, admitted like an HTTP query (the caller's queries at
    /// once, its bytes for the day).
    async fn in_session<T, F, Fut>(&self, call: &Call, text: &str, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(RequestSession) -> Fut,
        Fut: Future<Output = Result<T, QueryError>> + Send + 'static,
    {
        let admitted = self
            .fair_use
            .admit(Some(Work::Query), &call.who, &call.tier)
            .map_err(|r| status::refused(&r))?;
        let ticket = admitted.ticket;
        let principal = call.caller.principal();
        let catalog = self
            .engine
            .readable_catalog_for(&principal, text)
            .await
            .map_err(status::query)?;
        let session = self
            .engine
            .request_session(catalog, false)
            .map_err(status::query)?
            .for_caller(ticket.budget, principal.sees_internals());
        let lane = ticket.lane(self.engine.executor());
        Deadline::run(self.deadline(call), lane.run(work(session)))
            .await
            .map_err(status::query)
    }

    /// Plans `text` for `call` with `values` for `$1..$n`: the checks of `POST /api/v1/query`,
    /// then the physical plan, whose schema is exactly what `DoGet` will send.
    pub(crate) async fn plan(
        &self,
        call: &Call,
        text: &str,
        values: Vec<ScalarValue>,
    ) -> Result<Planned, Status> {
        let sql_text = text.to_string();
        self.in_session(call, text, move |session| async move {
            let planned = async {
                let plan = sql::plan_sql_values(&session, &sql_text, values).await?;
                let read = datagate_query::plan_info::datasets_read(&plan);
                let physical = execute::plan_physical(&session, plan).await?;
                Ok::<_, datagate_query::QueryError>((read, physical))
            };
            let (read, physical) = planned
                .await
                .map_err(|e| sql::place_unreadable_literal(e, &sql_text))?;
            Ok(Planned {
                session,
                physical,
                read,
                sql: sql_text,
            })
        })
        .await
    }

    /// Plans one execution and holds it under a ticket: its endpoint and schema.
    async fn ticketed(
        &self,
        call: &Call,
        text: &str,
        values: Vec<ScalarValue>,
        datasets: &mut Vec<DatasetVersion>,
    ) -> Result<(FlightEndpoint, SchemaRef), Status> {
        let parameters = crate::portable::values_to_ipc(&values);
        let planned = self.plan(call, text, values).await?;
        let schema = planned.physical.schema();
        datasets.extend(versions(&planned.read));
        let local = self.handles().hold_planned(&call.who, planned);
        let handle = self.sealer.seal(&local, &call.who, text, parameters);
        let ticket = TicketStatementQuery {
            statement_handle: handle.into_bytes().into(),
        };
        let endpoint = FlightEndpoint::new().with_ticket(Ticket {
            ticket: ticket.as_any().encode_to_vec().into(),
        });
        Ok((endpoint, schema))
    }

    fn handles(&self) -> &crate::handles::Handles {
        &self.handles
    }

    /// `GetFlightInfo` of a metadata command: a `FlightInfo` of `schema` whose ticket is the
    /// command itself (run at `DoGet`).
    async fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        command: impl ProstMessageExt,
        schema: SchemaRef,
    ) -> Result<Response<FlightInfo>, Status> {
        let call = self.gate(&request, "GetFlightInfo").await?;
        let ticket = Ticket {
            ticket: command.as_any().encode_to_vec().into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))
            .map(|i| {
                i.with_endpoint(FlightEndpoint::new().with_ticket(ticket))
                    .with_descriptor(request.into_inner())
            });
        let answer = self.answered(&call, "flight.metadata", &[], info).await?;
        Ok(tagged(&call, Response::new(answer)))
    }

    async fn metadata_stream(
        &self,
        call: Call,
        schema: SchemaRef,
        batch: Result<RecordBatch, Status>,
    ) -> Result<Response<FlightStream>, Status> {
        let batch = self.answered(&call, "flight.metadata", &[], batch).await?;
        Ok(tagged(&call, Response::new(one_batch(schema, Ok(batch)))))
    }

    async fn readable_catalog(
        &self,
        call: &Call,
    ) -> Result<datagate_query::DatagateCatalog, Status> {
        self.engine
            .readable_catalog(&call.caller.principal())
            .await
            .map_err(status::query)
    }

    /// A prepared statement another gateway made, rebuilt from its handle: described again
    /// (its schemas), with the parameters the handle carries.
    pub(crate) async fn prepared_elsewhere(
        &self,
        call: &Call,
        portable: &crate::portable::Portable,
    ) -> Result<Prepared, Status> {
        let (dataset_schema, types) = self.describe(call, &portable.sql).await?;
        let parameters = match &portable.parameters {
            Some(p) => crate::portable::ipc_to_batches(p).map_err(|e| {
                Status::invalid_argument(format!("the handle's parameters are unreadable: {e}"))
            })?,
            None => Vec::new(),
        };
        Ok(Prepared {
            sql: portable.sql.clone(),
            dataset_schema,
            parameter_schema: parameter_schema(&types),
            parameters,
        })
    }

    /// The result schema of the prepared statement of `handle`, if it is `call`'s.
    pub(crate) async fn prepared_schema_of(
        &self,
        call: &Call,
        handle: &[u8],
    ) -> Result<SchemaRef, Status> {
        let opened = self
            .sealer
            .open(handle, &call.who)
            .ok_or_else(unknown_handle)?;
        match self.handles().prepared_schema(&opened.local, &call.who) {
            Some(schema) => Ok(schema),
            None => Ok(self
                .prepared_elsewhere(call, &opened.portable)
                .await?
                .dataset_schema),
        }
    }

    /// Rows of bound parameters as `$1..$n` values for each execution, each cast to the type
    /// the statement expects where it says one.
    fn executions(prepared: &Prepared) -> Result<Vec<Vec<ScalarValue>>, Status> {
        if prepared.parameters.is_empty() {
            return Ok(vec![Vec::new()]);
        }
        let expected = &prepared.parameter_schema;
        let mut out = Vec::new();
        for batch in &prepared.parameters {
            for row in 0..batch.num_rows() {
                let mut values = Vec::with_capacity(batch.num_columns());
                for (i, column) in batch.columns().iter().enumerate() {
                    let mut v = ScalarValue::try_from_array(column, row).map_err(|e| {
                        Status::invalid_argument(format!("parameter ${}: {e}", i + 1))
                    })?;
                    if let Some(field) = expected.fields().get(i)
                        && field.data_type() != &DataType::Null
                        && &v.data_type() != field.data_type()
                    {
                        v = v.cast_to(field.data_type()).map_err(|e| {
                            Status::invalid_argument(format!(
                                "parameter ${} cannot be read as {}: {e}",
                                i + 1,
                                field.data_type()
                            ))
                        })?;
                    }
                    values.push(v);
                }
                out.push(values);
            }
        }
        Ok(out)
    }
}

fn unknown_handle() -> Status {
    Status::not_found("no such prepared statement or ticket (unknown, expired, or another key's)")
}

#[tonic::async_trait]
impl FlightSqlService for FlightGateway {
    type FlightService = FlightGateway;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let call = self.gate(&request, "Handshake").await?;
        let result = match &call.caller {
            datagate_access::Caller::Anonymous => Err(Status::unauthenticated(
                "the handshake needs credentials: Basic with the API key as the password, or \
                 Bearer <key>",
            )),
            datagate_access::Caller::Key(..) => Ok(()),
        };
        self.answered(&call, "flight.handshake", &[], result)
            .await?;
        // The key the gate accepted, handed back as the bearer token of later calls.
        let token = match crate::credentials(request.metadata()) {
            crate::Credentials::Key(k) => k,
            _ => return Err(Status::unauthenticated(datagate_access::caller::BAD_KEY)),
        };
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::unauthenticated(datagate_access::caller::BAD_KEY))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        };
        let stream: HandshakeStream = Box::pin(futures::stream::once(async { Ok(reply) }));
        let mut response = tagged(&call, Response::new(stream));
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let call = self.gate(&request, "GetFlightInfo").await?;
        let mut datasets = Vec::new();
        let result = async {
            let (endpoint, schema) = self
                .ticketed(&call, &query.query, Vec::new(), &mut datasets)
                .await?;
            FlightInfo::new()
                .try_with_schema(&schema)
                .map_err(|e| Status::internal(e.to_string()))
                .map(|i| {
                    i.with_endpoint(endpoint)
                        .with_descriptor(request.into_inner())
                        .with_ordered(true)
                })
        }
        .await;
        let info = self
            .answered_statement(&call, "flight.plan", &query.query, &datasets, result)
            .await?;
        Ok(tagged(&call, Response::new(info)))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let call = self.gate(&request, "GetFlightInfo").await?;
        let mut datasets = Vec::new();
        // The statement, once the handle is read: a refusal names it in its record.
        let mut statement = String::new();
        let result = async {
            let opened = self
                .sealer
                .open(&cmd.prepared_statement_handle, &call.who)
                .ok_or_else(unknown_handle)?;
            statement.clone_from(&opened.portable.sql);
            let held = self.handles().with_prepared(&opened.local, &call.who, |p| {
                (p.sql.clone(), Self::executions(p))
            });
            let (text, executions) = match held {
                Some(h) => h,
                None => {
                    let p = self.prepared_elsewhere(&call, &opened.portable).await?;
                    (p.sql.clone(), Self::executions(&p))
                }
            };
            let mut info: Option<FlightInfo> = None;
            for values in executions? {
                let (endpoint, schema) = self.ticketed(&call, &text, values, &mut datasets).await?;
                let current = match info.take() {
                    Some(i) => i,
                    None => FlightInfo::new()
                        .try_with_schema(&schema)
                        .map_err(|e| Status::internal(e.to_string()))?,
                };
                info = Some(current.with_endpoint(endpoint));
            }
            let info = info.ok_or_else(|| Status::internal("no execution was planned"))?;
            Ok(info
                .with_descriptor(request.into_inner())
                .with_ordered(true))
        }
        .await;
        datasets.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        datasets.dedup();
        let info = match statement.as_str() {
            "" => self.answered(&call, "flight.plan", &datasets, result).await,
            sql => {
                self.answered_statement(&call, "flight.plan", sql, &datasets, result)
                    .await
            }
        }?;
        Ok(tagged(&call, Response::new(info)))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let call = self.gate(&request, "DoGet").await?;
        let Some(opened) = self.sealer.open(&ticket.statement_handle, &call.who) else {
            return self
                .answered(&call, "data.query", &[], Err(unknown_handle()))
                .await;
        };
        if let Some(planned) = self.handles().take_planned(&opened.local, &call.who) {
            return self.transfer(call, planned).await;
        }
        // Planned by another gateway (or run here before): plan it again from the ticket.
        let planned = async {
            let values = match &opened.portable.parameters {
                Some(p) => crate::portable::ipc_to_batches(p)
                    .and_then(|b| crate::portable::batches_to_values(&b))
                    .map_err(|e| {
                        Status::invalid_argument(format!(
                            "the ticket's parameters are unreadable: {e}"
                        ))
                    })?,
                None => Vec::new(),
            };
            self.plan(&call, &opened.portable.sql, values).await
        }
        .await;
        match planned {
            Ok(planned) => self.transfer(call, planned).await,
            Err(e) => {
                let sql = &opened.portable.sql;
                self.answered_statement(&call, "data.query", sql, &[], Err(e))
                    .await
            }
        }
    }

    async fn do_get_prepared_statement(
        &self,
        _query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let call = self.gate(&request, "DoGet").await?;
        let refused = Status::invalid_argument(
            "run a prepared statement through GetFlightInfo and the tickets it returns",
        );
        self.answered(&call, "data.query", &[], Err(refused)).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let call = self.gate(&request, "DoAction").await?;
        let result = async {
            if query.transaction_id.is_some() {
                return Err(Status::unimplemented("datagate has no transactions"));
            }
            let (dataset_schema, types) = self.describe(&call, &query.query).await?;
            let parameter_schema = parameter_schema(&types);
            let result = ActionCreatePreparedStatementResult {
                prepared_statement_handle: bytes::Bytes::new(),
                dataset_schema: ipc_schema(&dataset_schema)?,
                parameter_schema: ipc_schema(&parameter_schema)?,
            };
            let local = self.handles().hold_prepared(
                &call.who,
                Prepared {
                    sql: query.query.clone(),
                    dataset_schema,
                    parameter_schema,
                    parameters: Vec::new(),
                },
            );
            let handle = self.sealer.seal(&local, &call.who, &query.query, None);
            Ok(ActionCreatePreparedStatementResult {
                prepared_statement_handle: handle.into_bytes().into(),
                ..result
            })
        }
        .await;
        self.answered_statement(&call, "flight.prepare", &query.query, &[], result)
            .await
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let call = self.gate(&request, "DoPut").await?;
        let max_rows = self.config.flight.max_parameter_rows.max(1);
        let opened = self.sealer.open(&cmd.prepared_statement_handle, &call.who);
        let stream = request.into_inner().into_peekable();
        let result = async {
            // Each message's declared sizes are checked before arrow allocates them (a
            // compressed buffer declaring 2^60 bytes aborted the process).
            let checked = stream
                .map_err(arrow_flight::error::FlightError::from)
                .and_then(|data| {
                    let bound = datagate_core::ipc_limits::check_message(
                        &data.data_header,
                        &data.data_body,
                        MAX_PARAMETER_BYTES,
                    );
                    futures::future::ready(
                        bound
                            .map(|_| data)
                            .map_err(arrow_flight::error::FlightError::DecodeError),
                    )
                });
            let mut batches = FlightRecordBatchStream::new_from_flight_data(checked);
            let mut parameters = Vec::new();
            let mut rows = 0usize;
            // arrow's IPC decoder panics on some malformed messages: the client's mistake.
            while let Some(batch) = datagate_core::panics::Contained::new(batches.next())
                .await
                .unwrap_or_else(|panic| {
                    Some(Err(arrow_flight::error::FlightError::DecodeError(format!(
                        "the decoder stopped: {panic}"
                    ))))
                })
            {
                let batch = batch.map_err(|e| {
                    Status::invalid_argument(format!("the parameters are not Arrow data: {e}"))
                })?;
                rows += batch.num_rows();
                if rows > max_rows {
                    return Err(Status::invalid_argument(format!(
                        "at most {max_rows} rows of parameters are bound at once"
                    )));
                }
                parameters.push(batch);
            }
            let opened = opened.ok_or_else(unknown_handle)?;
            let check = |p: &Prepared| {
                let expected = p.parameter_schema.fields().len();
                match parameters.iter().find(|b| b.num_columns() != expected) {
                    Some(b) => Err(Status::invalid_argument(sql::parameter_count_message(
                        expected,
                        b.num_columns(),
                        "bound",
                    ))),
                    None => Ok(()),
                }
            };
            let held = self.handles().with_prepared(&opened.local, &call.who, |p| {
                check(p)?;
                p.parameters = parameters.clone();
                Ok::<_, Status>(())
            });
            match held {
                Some(r) => r?,
                None => check(&self.prepared_elsewhere(&call, &opened.portable).await?)?,
            }
            // The handle answered carries the parameters, for whichever gateway runs it.
            let handle = self.sealer.seal(
                &opened.local,
                &call.who,
                &opened.portable.sql,
                crate::portable::batches_to_ipc(&parameters),
            );
            Ok(DoPutPreparedStatementResult {
                prepared_statement_handle: Some(handle.into_bytes().into()),
            })
        }
        .await;
        self.answered(&call, "flight.bind", &[], result).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let call = self.gate(&request, "DoAction").await?;
        // A statement held here is dropped; one made elsewhere holds nothing here to drop.
        let result = match self
            .sealer
            .open(&query.prepared_statement_handle, &call.who)
        {
            Some(opened) => {
                self.handles().close_prepared(&opened.local, &call.who);
                Ok(())
            }
            None => Err(unknown_handle()),
        };
        self.answered(&call, "flight.close", &[], result).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, query, schema).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let call = self.gate(&request, "DoGet").await?;
        let mut builder = query.into_builder();
        builder.append(datagate_query::CATALOG_NAME);
        let schema = builder.schema();
        let batch = builder.build().map_err(|e| Status::internal(e.to_string()));
        self.metadata_stream(call, schema, batch).await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, query, schema).await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let call = self.gate(&request, "DoGet").await?;
        let builder = query.into_builder();
        let schema = builder.schema();
        let departments = self
            .engine
            .readable_departments(&call.caller.principal())
            .await
            .map_err(status::query);
        let batch = match departments {
            Ok(departments) => metadata::db_schemas(&departments, builder)
                .build()
                .map_err(|e| Status::internal(e.to_string())),
            Err(e) => Err(e),
        };
        self.metadata_stream(call, schema, batch).await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, query, schema).await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let call = self.gate(&request, "DoGet").await?;
        let schema = query.clone().into_builder().schema();
        let batch = match self.readable_catalog(&call).await {
            Ok(catalog) => match metadata::tables(&catalog, &query).await {
                Ok(b) => b.build().map_err(|e| Status::internal(e.to_string())),
                Err(e) => Err(status::query(e)),
            },
            Err(e) => Err(e),
        };
        self.metadata_stream(call, schema, batch).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, query, schema).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let call = self.gate(&request, "DoGet").await?;
        let mut builder = query.into_builder();
        builder.append(metadata::TABLE_TYPE);
        let schema = builder.schema();
        let batch = builder.build().map_err(|e| Status::internal(e.to_string()));
        self.metadata_stream(call, schema, batch).await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(metadata::sql_info()).schema();
        self.metadata_info(request, query, schema).await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let call = self.gate(&request, "DoGet").await?;
        let builder = query.into_builder(metadata::sql_info());
        let schema = builder.schema();
        let batch = builder.build().map_err(|e| Status::internal(e.to_string()));
        self.metadata_stream(call, schema, batch).await
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(metadata::xdbc_info()).schema();
        self.metadata_info(request, query, schema).await
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let call = self.gate(&request, "DoGet").await?;
        let builder = query.into_builder(metadata::xdbc_info());
        let schema = builder.schema();
        let batch = builder.build().map_err(|e| Status::internal(e.to_string()));
        self.metadata_stream(call, schema, batch).await
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, query, metadata::primary_keys_schema())
            .await
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let call = self.gate(&request, "DoGet").await?;
        let schema = metadata::primary_keys_schema();
        let batch = Ok(metadata::empty(schema.clone()));
        self.metadata_stream(call, schema, batch).await
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, query, metadata::foreign_keys_schema())
            .await
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.no_foreign_keys(request).await
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, query, metadata::foreign_keys_schema())
            .await
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.no_foreign_keys(request).await
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, query, metadata::foreign_keys_schema())
            .await
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.no_foreign_keys(request).await
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.refuse(
            &request,
            "flight.substrait",
            "Substrait plans are not accepted; send SQL",
        )
        .await
    }

    async fn get_flight_info_fallback(
        &self,
        command: arrow_flight::sql::Command,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let what = format!("{} is not a query datagate answers", command.type_url());
        self.refuse_invalid(&request, &what).await
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<FlightStream>, Status> {
        let what = format!("{} is not a ticket datagate issued", message.type_url);
        self.refuse_invalid(&request, &what).await
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse(&request, "flight.update", READ_ONLY).await
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse(&request, "flight.ingest", READ_ONLY).await
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse(&request, "flight.update", READ_ONLY).await
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse(
            &request,
            "flight.substrait",
            "Substrait plans are not accepted; send SQL",
        )
        .await
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.refuse(
            &request,
            "flight.substrait",
            "Substrait plans are not accepted; send SQL",
        )
        .await
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        self.refuse(
            &request,
            "flight.transaction",
            "datagate has no transactions (it is read-only)",
        )
        .await
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.refuse(
            &request,
            "flight.transaction",
            "datagate has no transactions (it is read-only)",
        )
        .await
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        self.refuse(
            &request,
            "flight.transaction",
            "datagate has no savepoints (it is read-only)",
        )
        .await
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.refuse(
            &request,
            "flight.transaction",
            "datagate has no savepoints (it is read-only)",
        )
        .await
    }

    async fn do_action_cancel_query(
        &self,
        _query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        self.refuse(
            &request,
            "flight.cancel",
            "cancel a query by closing its DoGet stream (the query stops at once)",
        )
        .await
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl FlightGateway {
    /// An RPC datagate does not serve: `Unimplemented` with `why`, audited.
    async fn refuse<T: RpcOf, R>(
        &self,
        request: &Request<T>,
        action: &str,
        why: &str,
    ) -> Result<R, Status> {
        let call = self.gate(request, T::RPC).await?;
        self.answered(
            &call,
            action,
            &[],
            Err(Status::unimplemented(why.to_string())),
        )
        .await
    }

    /// A request datagate cannot read: `InvalidArgument` with `why`, audited.
    async fn refuse_invalid<T: RpcOf, R>(
        &self,
        request: &Request<T>,
        why: &str,
    ) -> Result<R, Status> {
        let call = self.gate(request, T::RPC).await?;
        self.answered(
            &call,
            "flight.invalid",
            &[],
            Err(Status::invalid_argument(why.to_string())),
        )
        .await
    }

    async fn no_foreign_keys(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let call = self.gate(&request, "DoGet").await?;
        let schema = metadata::foreign_keys_schema();
        let batch = Ok(metadata::empty(schema.clone()));
        self.metadata_stream(call, schema, batch).await
    }

    /// What a prepared statement returns and takes: the result schema (exactly `DoGet`'s when
    /// it takes no parameters, the logical plan's otherwise) and the `$n` placeholders with the
    /// types the plan infers for them.
    async fn describe(
        &self,
        call: &Call,
        text: &str,
    ) -> Result<(SchemaRef, Vec<Option<DataType>>), Status> {
        let sql_text = text.to_string();
        let (schema, types) = self
            .in_session(call, text, move |session| async move {
                let plan = sql::plan_sql_values(&session, &sql_text, Vec::new()).await?;
                let types = sql::parameters_taken(&plan)?;
                let schema = if types.is_empty() {
                    execute::plan_physical(&session, plan).await?.schema()
                } else {
                    datagate_query::view_types::api_schema(plan.schema().as_arrow())
                };
                Ok((schema, types))
            })
            .await?;
        Ok((schema, types))
    }
}

/// The RPC a request message arrives by (for the metrics and the audit record's path).
trait RpcOf {
    const RPC: &'static str;
}

impl RpcOf for FlightDescriptor {
    const RPC: &'static str = "GetFlightInfo";
}

impl RpcOf for Ticket {
    const RPC: &'static str = "DoGet";
}

impl RpcOf for PeekableFlightDataStream {
    const RPC: &'static str = "DoPut";
}

impl RpcOf for Action {
    const RPC: &'static str = "DoAction";
}

/// The parameter schema of a prepared statement: `$1..$n`, typed where the plan says.
fn parameter_schema(types: &[Option<DataType>]) -> SchemaRef {
    Arc::new(Schema::new(
        types
            .iter()
            .enumerate()
            .map(|(i, ty)| {
                Field::new(
                    format!("${}", i + 1),
                    ty.clone().unwrap_or(DataType::Null),
                    true,
                )
            })
            .collect::<Vec<_>>(),
    ))
}

// The FlightService implementation arrow-flight derives for every FlightSqlService.
const _: fn() = || {
    fn served<T: FlightService>() {}
    served::<FlightGateway>();
};
