//! `DoGet` of a statement: the transfer, audited like an HTTP data response.
//!
//! The caller is admitted as data work (its tier's queries at once, its bytes for the day, the
//! gateway's maximum of queries); the plan held for the ticket starts on the query executor and
//! waits for its first batch (errors before it get their own status and a `request` record);
//! then the `begin` record is made durable, and only then does the first message leave. The
//! batches are encoded into Flight messages on the executor, a few at a time into a small
//! channel: memory stays at a few batches whatever the result's size, and a client that stops
//! reading (or cancels) drops the stream, which stops the query at once. The `end` record says
//! rows, bytes, CPU time and whether the stream completed, was cancelled or failed.

use crate::handles::Planned;
use crate::{Call, FlightGateway, status, tagged};
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow::record_batch::RecordBatch;
use arrow_flight::{FlightData, SchemaAsIpc};
use datagate_access::fair_use::admission::Work;
use datagate_access::trail::end_record;
use datagate_audit::{DatasetVersion, Kind};
use datagate_query::encode::Trailer;
use datagate_query::execute::{self, BatchSink, Deadline, Report, RowCap, Sent, StreamError};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Response, Status};

/// The stream `DoGet` answers with.
pub type FlightStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send>>;

/// The largest message body aimed at (gRPC clients refuse messages over 4 MiB by default;
/// 256 KiB to 32 MiB measured alike on loopback, 1 MiB among the fastest).
const MESSAGE_BYTES: usize = 1024 * 1024;

/// Record batches as Flight messages: the schema first (also for an empty result), then each
/// batch, split so no message exceeds `MESSAGE_BYTES` by much.
pub struct FlightSink {
    schema: SchemaRef,
    schema_sent: bool,
    generator: IpcDataGenerator,
    tracker: DictionaryTracker,
    options: IpcWriteOptions,
    context: IpcWriteContext,
}

impl FlightSink {
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            schema_sent: false,
            generator: IpcDataGenerator::default(),
            tracker: DictionaryTracker::new(false),
            options: IpcWriteOptions::default(),
            context: IpcWriteContext::default(),
        }
    }

    fn head(&mut self) -> Vec<FlightData> {
        if std::mem::replace(&mut self.schema_sent, true) {
            return Vec::new();
        }
        vec![SchemaAsIpc::new(&self.schema, &self.options).into()]
    }
}

impl BatchSink for FlightSink {
    type Item = FlightData;

    fn batch(
        &mut self,
        batch: &RecordBatch,
        _queued: usize,
    ) -> Result<Vec<FlightData>, StreamError> {
        let mut out = self.head();
        let rows = batch.num_rows();
        let size = batch.get_array_memory_size();
        let parts = size.div_ceil(MESSAGE_BYTES).clamp(1, rows.max(1));
        let per_part = rows.div_ceil(parts).max(1);
        // An empty batch is still one (empty) message.
        for offset in (0..rows.max(1)).step_by(per_part) {
            let part = batch.slice(offset, per_part.min(rows - offset));
            let (dictionaries, data) = self
                .generator
                .encode(&part, &mut self.tracker, &self.options, &mut self.context)
                .map_err(|e| StreamError::internal(e.to_string()))?;
            out.extend(dictionaries.into_iter().map(FlightData::from));
            out.push(data.into());
        }
        Ok(out)
    }

    fn finish(&mut self, _trailer: &Trailer) -> Result<Vec<FlightData>, StreamError> {
        Ok(self.head())
    }

    fn size(item: &FlightData) -> u64 {
        (item.data_header.len() + item.data_body.len() + item.app_metadata.len()) as u64
    }
}

impl FlightGateway {
    /// Runs the statement planned for `call`'s ticket; see the module documentation.
    pub(crate) async fn transfer(
        &self,
        call: Call,
        planned: Planned,
    ) -> Result<Response<FlightStream>, Status> {
        let datasets: Vec<DatasetVersion> = planned
            .read
            .iter()
            .map(|d| DatasetVersion {
                name: d.name.clone(),
                version: d.version,
            })
            .collect();
        let admitted = match self
            .fair_use
            .admit(Some(Work::Query), &call.who, &call.tier)
        {
            Ok(a) => a,
            Err(r) => {
                let refused = status::refused(&r);
                return self
                    .answered(&call, "data.query", &datasets, Err(refused))
                    .await;
            }
        };
        let lane = admitted.ticket.lane(self.engine.executor());
        let deadline = self.deadline(&call);
        let Planned {
            session,
            physical,
            sql,
            ..
        } = planned;
        let text = sql.clone();
        let started = Deadline::run(
            deadline,
            lane.run(async move {
                execute::start_physical(&session, physical, deadline)
                    .await
                    .map_err(|e| datagate_query::sql::place_unreadable_literal(e, &text))
            }),
        )
        .await;
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                return self
                    .answered(&call, "data.query", &datasets, Err(status::query(e)))
                    .await;
            }
        };
        // The begin record, durable before the first message.
        let mut begin = self.event(&call, "data.query", &datasets);
        begin.kind = Some(Kind::Begin);
        begin.query_sha256 = Some(datagate_audit::record::query_sha256(&sql));
        begin.query_text = Some(sql);
        begin.workers = started.workers().map(<[_]>::to_vec);
        begin.duration_ms = call.started.elapsed().as_millis() as u64;
        let timer = std::time::Instant::now();
        let written = self.audit.append(&begin).await;
        metrics::histogram!("datagate_audit_wait_seconds").record(timer.elapsed().as_secs_f64());
        if let Err(e) = written {
            self.count_rpc(&call, tonic::Code::Unavailable);
            return Err(crate::audit_unavailable(&e.to_string()));
        }
        let (report_tx, report_rx) = tokio::sync::oneshot::channel::<Report>();
        let schema = started.schema.clone();
        let sent = Arc::new(Sent::default());
        let mut rx = execute::stream_into(
            &lane,
            started,
            FlightSink::new(schema),
            RowCap::default(),
            sent.clone(),
            move |report| {
                metrics::counter!("datagate_data_bytes_total").increment(report.bytes);
                metrics::counter!("datagate_data_rows_total").increment(report.rows);
                let _ = report_tx.send(report);
            },
        );
        let pending = self.pending.begin();
        let log = self.audit.clone();
        let since = call.started;
        tokio::spawn(async move {
            let _pending = pending;
            let report = report_rx.await.ok();
            log.append_detached(end_record(
                &begin,
                report,
                since.elapsed(),
                "cancelled",
                &sent,
            ));
        });
        self.count_rpc(&call, tonic::Code::Ok);
        let counter = admitted.counter;
        let permit = admitted.permit;
        let body = futures::stream::poll_fn(move |cx| {
            let _held = &permit;
            match rx.poll_recv(cx) {
                std::task::Poll::Ready(Some(Ok(data))) => {
                    if let Some(c) = &counter {
                        c.add(FlightSink::size(&data));
                    }
                    std::task::Poll::Ready(Some(Ok(data)))
                }
                std::task::Poll::Ready(Some(Err(e))) => {
                    std::task::Poll::Ready(Some(Err(status::mid_stream(e))))
                }
                std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        });
        Ok(tagged(&call, Response::new(Box::pin(body) as FlightStream)))
    }

    /// The query time limit, lowered by the client's `grpc-timeout`.
    pub(crate) fn deadline(&self, call: &Call) -> Option<Deadline> {
        let limit = self.engine.limits().timeout;
        Some(Deadline::after(
            call.timeout.map_or(limit, |t| t.min(limit)),
        ))
    }
}
