//! The `FlightService` served: arrow-flight's implementation for a `FlightSqlService`, with
//! `GetSchema` answered (the blanket implementation leaves it unimplemented): a statement's
//! schema as planned for the caller, a prepared statement's result schema, a metadata
//! command's documented shape.

use crate::{FlightGateway, metadata, tagged};
use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{Any, Command};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::Stream;
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status, Streaming};

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The served service.
#[derive(Clone)]
pub struct Service(Arc<FlightGateway>);

impl Service {
    pub fn new(gateway: Arc<FlightGateway>) -> Self {
        Self(gateway)
    }

    async fn schema_of(
        &self,
        call: &crate::Call,
        descriptor: &FlightDescriptor,
    ) -> Result<Arc<Schema>, Status> {
        let message = Any::decode(&*descriptor.cmd)
            .map_err(|e| Status::invalid_argument(format!("not a Flight SQL command: {e}")))?;
        let command = Command::try_from(message)
            .map_err(|e| Status::invalid_argument(format!("not a Flight SQL command: {e}")))?;
        Ok(match command {
            Command::CommandStatementQuery(q) => self
                .0
                .plan(call, &q.query, Vec::new())
                .await?
                .physical
                .schema(),
            Command::CommandPreparedStatementQuery(p) => {
                self.0
                    .prepared_schema_of(call, &p.prepared_statement_handle)
                    .await?
            }
            Command::CommandGetCatalogs(c) => c.into_builder().schema(),
            Command::CommandGetDbSchemas(c) => c.into_builder().schema(),
            Command::CommandGetTables(c) => c.into_builder().schema(),
            Command::CommandGetTableTypes(c) => c.into_builder().schema(),
            Command::CommandGetSqlInfo(c) => c.into_builder(metadata::sql_info()).schema(),
            Command::CommandGetXdbcTypeInfo(c) => c.into_builder(metadata::xdbc_info()).schema(),
            Command::CommandGetPrimaryKeys(_) => metadata::primary_keys_schema(),
            Command::CommandGetExportedKeys(_)
            | Command::CommandGetImportedKeys(_)
            | Command::CommandGetCrossReference(_) => metadata::foreign_keys_schema(),
            other => {
                return Err(Status::invalid_argument(format!(
                    "{} has no schema datagate answers",
                    other.type_url()
                )));
            }
        })
    }
}

/// arrow-flight's dispatch answers a command it cannot unpack (a known type URL over bytes
/// that are not that message: the client's) with `Internal` and the arrow error's debug text,
/// `ParseError("Unable to decode Any value: …")`. A client's mistake is `InvalidArgument`.
fn unpack_is_the_clients<T>(result: Result<T, Status>) -> Result<T, Status> {
    result.map_err(|s| {
        if s.code() == Code::Internal && s.message().starts_with("ParseError(") {
            Status::invalid_argument(format!("not a Flight SQL command: {}", s.message()))
        } else {
            s
        }
    })
}

#[tonic::async_trait]
impl FlightService for Service {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;
    type DoExchangeStream = Boxed<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(&*self.0, request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        FlightService::list_flights(&*self.0, request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unpack_is_the_clients(FlightService::get_flight_info(&*self.0, request).await)
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unpack_is_the_clients(FlightService::poll_flight_info(&*self.0, request).await)
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let call = self.0.gate(&request, "GetSchema").await?;
        let result = async {
            let schema = self.schema_of(&call, request.get_ref()).await?;
            SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
                .try_into()
                .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))
        }
        .await;
        let answer: SchemaResult = self.0.answered(&call, "flight.schema", &[], result).await?;
        Ok(tagged(&call, Response::new(answer)))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        unpack_is_the_clients(FlightService::do_get(&*self.0, request).await)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unpack_is_the_clients(FlightService::do_put(&*self.0, request).await)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unpack_is_the_clients(FlightService::do_action(&*self.0, request).await)
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&*self.0, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&*self.0, request).await
    }
}
