//! Arrow Flight SQL on the Flight port, next to the JSON tickets (docs/sql.md).
//!
//! Flight SQL messages are protobuf `Any`s whose type URL names a Flight SQL command;
//! a JSON ticket never decodes as one (its first byte, `{`, is not a valid protobuf
//! tag for `Any`), so [`command`] tells the two apart and the service routes each
//! call. Supported: statement queries (GetFlightInfo, then DoGet with the returned
//! ticket), prepared statements (create, bind parameters with DoPut, execute, close),
//! GetSqlInfo, GetCatalogs, GetDbSchemas, GetTables (with schemas), GetTableTypes.
//! Updates, ingest, Substrait and transactions are refused with a message naming the
//! write API. Every call needs read access, under the same bearer rules as the JSON
//! tickets.
//!
//! Statement tickets carry the SQL text itself, so any server over the same data can
//! answer them; prepared statements live in this process, at most
//! `sql.max_prepared_statements` of them, each closed after `sql.prepared_idle_s`
//! unused.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, Command, CommandGetTableTypes,
    CommandPreparedStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, PutResult, SchemaAsIpc,
    Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{Schema, SchemaRef};
use bytes::Bytes;
use datafusion::common::ScalarValue;
use futures::{StreamExt, TryStreamExt, stream};
use prost::Message;
use tonic::Status;

use super::doget::BatchStream;
use super::error::{invalid, status};
use crate::error::{Error, ErrorKind};
use crate::query::Engine;
use crate::query::sql::{self, CATALOG, SCHEMA, tables};

/// The type URL prefix of every Flight SQL message.
const TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// Flight SQL action names.
pub const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
pub const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";
/// Flight SQL actions FastK refuses (no transactions, no Substrait).
const REFUSED_ACTIONS: [&str; 6] = [
    "BeginTransaction",
    "EndTransaction",
    "BeginSavepoint",
    "EndSavepoint",
    "CancelQuery",
    "CreatePreparedSubstraitPlan",
];

/// The refusal every write, DDL or transaction gets.
const READ_ONLY: &str = "FastK SQL is read-only: write bars with Flight DoPut to a PATH \
    descriptor [\"kline\", symbol, timeframe] (or [\"scalar\", symbol, timeframe, category, \
    name]) or HTTP POST /v1/kline/{symbol}/{timeframe}/records; register series with \
    POST /v1/kline or /v1/scalar/series";

/// The Flight SQL command in `bytes`, if they hold one.
pub fn command(bytes: &[u8]) -> Option<Command> {
    let any = Any::decode(bytes).ok()?;
    if !any.type_url.starts_with(TYPE_PREFIX) {
        return None;
    }
    Command::try_from(any).ok()
}

/// Whether `name` is a Flight SQL action.
pub fn is_action(name: &str) -> bool {
    name == CREATE_PREPARED_STATEMENT
        || name == CLOSE_PREPARED_STATEMENT
        || REFUSED_ACTIONS.contains(&name)
}

/// One prepared statement.
#[derive(Debug)]
struct Statement {
    query: String,
    /// The bound parameter values ($1, $2, ...), set by DoPut.
    params: Vec<ScalarValue>,
    last_used: Instant,
}

/// The prepared statements of this process.
#[derive(Debug, Default)]
pub struct Prepared {
    statements: Mutex<HashMap<Bytes, Statement>>,
    next: AtomicU64,
}

impl Prepared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, Statement>> {
        self.statements.locked()
    }

    /// Stores a statement, closing idle ones and, at the cap, the least recently used.
    fn insert(&self, engine: &Engine, query: String) -> Bytes {
        let cfg = &engine.config.sql;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let handle = Bytes::from(format!("fastk-ps-{id}"));
        let mut map = self.lock();
        let idle = Duration::from_secs(cfg.prepared_idle_s);
        map.retain(|_, s| s.last_used.elapsed() < idle);
        while map.len() >= cfg.max_prepared_statements {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(h, _)| h.clone());
            match oldest {
                Some(h) => map.remove(&h),
                None => break,
            };
        }
        map.insert(
            handle.clone(),
            Statement {
                query,
                params: Vec::new(),
                last_used: Instant::now(),
            },
        );
        debug_assert!(map.len() <= cfg.max_prepared_statements);
        handle
    }

    /// The statement's query and parameters, marking it used.
    fn get(&self, handle: &[u8]) -> Result<(String, Vec<ScalarValue>), Status> {
        let mut map = self.lock();
        let s = map.get_mut(handle).ok_or_else(|| {
            status(Error::not_found(
                "no such prepared statement (closed, or idle longer than sql.prepared_idle_s); prepare it again",
            ))
        })?;
        s.last_used = Instant::now();
        Ok((s.query.clone(), s.params.clone()))
    }

    fn bind(&self, handle: &[u8], params: Vec<ScalarValue>) -> Result<(), Status> {
        let mut map = self.lock();
        let s = map.get_mut(handle).ok_or_else(|| {
            status(Error::not_found(
                "no such prepared statement; prepare it again",
            ))
        })?;
        s.params = params;
        s.last_used = Instant::now();
        Ok(())
    }

    fn close(&self, handle: &[u8]) {
        self.lock().remove(handle);
    }

    /// Statements open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refuse(what: &str) -> Status {
    invalid(format!("{what} is not supported. {READ_ONLY}"))
}

fn ticket_for(any: Any) -> Ticket {
    Ticket::new(any.encode_to_vec())
}

fn info(
    schema: &Schema,
    ticket: Ticket,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| status(Error::internal(e)))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor)
        .with_ordered(true))
}

/// The static facts GetSqlInfo reports.
fn sql_info() -> Result<SqlInfoData, Status> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "FastK");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0_i32);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.build().map_err(|e| status(Error::internal(e)))
}

fn table_types_batch() -> Result<RecordBatch, Status> {
    let mut b = CommandGetTableTypes {}.into_builder();
    b.append("TABLE");
    b.append("VIEW");
    b.build().map_err(|e| status(Error::internal(e)))
}

/// The schema of a metadata command's answer.
fn metadata_schema(cmd: &Command) -> Option<Result<SchemaRef, Status>> {
    Some(Ok(match cmd {
        Command::CommandGetCatalogs(c) => (*c).into_builder().schema(),
        Command::CommandGetDbSchemas(c) => c.clone().into_builder().schema(),
        Command::CommandGetTables(c) => c.clone().into_builder().schema(),
        Command::CommandGetTableTypes(_) => return Some(table_types_batch().map(|b| b.schema())),
        Command::CommandGetSqlInfo(c) => match sql_info() {
            Ok(data) => c.clone().into_builder(&data).schema(),
            Err(e) => return Some(Err(e)),
        },
        _ => return None,
    }))
}

/// The answer of a metadata command.
fn metadata_batch(cmd: Command) -> Result<RecordBatch, Status> {
    match cmd {
        Command::CommandGetCatalogs(c) => {
            let mut b = c.into_builder();
            b.append(CATALOG);
            b.build().map_err(internal_err)
        }
        Command::CommandGetDbSchemas(c) => {
            let mut b = c.into_builder();
            b.append(CATALOG, SCHEMA);
            b.build().map_err(internal_err)
        }
        Command::CommandGetTables(c) => {
            let mut b = c.into_builder();
            for name in tables::TABLE_NAMES {
                let schema = tables::table_schema(name).ok_or_else(|| internal_status(name))?;
                let kind = if tables::catalog_schema(name).is_some() {
                    "VIEW"
                } else {
                    "TABLE"
                };
                b.append(CATALOG, SCHEMA, name, kind, &schema)
                    .map_err(internal_err)?;
            }
            b.build().map_err(internal_err)
        }
        Command::CommandGetTableTypes(_) => table_types_batch(),
        Command::CommandGetSqlInfo(c) => c.into_builder(&sql_info()?).build().map_err(internal_err),
        other => Err(status(Error::invalid(format!(
            "{} has no answer here",
            other.type_url()
        )))),
    }
}

fn internal_err(e: impl std::fmt::Display) -> Status {
    status(Error::internal(e))
}

fn internal_status(what: &str) -> Status {
    status(Error::internal(format!("table {what} has no schema")))
}

/// GetFlightInfo for a Flight SQL command.
pub async fn flight_info(
    engine: &Arc<Engine>,
    principal: &crate::auth::Principal,
    prepared: &Prepared,
    cmd: Command,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    match cmd {
        Command::CommandStatementQuery(q) => {
            if q.transaction_id.is_some() {
                return Err(refuse("a transaction"));
            }
            // The schema DoGet will send: the physical plan's (nullability included;
            // ADBC's driver rejects a stream whose schema differs from this one).
            let schema = Arc::clone(
                &sql::plan_as(engine, principal, &q.query, Vec::new())
                    .await?
                    .schema,
            );
            let ticket = TicketStatementQuery {
                statement_handle: Bytes::from(q.query.into_bytes()),
            };
            info(&schema, ticket_for(ticket.as_any()), descriptor)
        }
        Command::CommandPreparedStatementQuery(p) => {
            let (query, params) = prepared.get(&p.prepared_statement_handle)?;
            let schema = Arc::clone(
                &sql::plan_as(engine, principal, &query, params)
                    .await?
                    .schema,
            );
            info(&schema, ticket_for(p.as_any()), descriptor)
        }
        cmd => match metadata_schema(&cmd) {
            Some(schema) => {
                let schema = schema?;
                info(&schema, ticket_for(cmd.into_any()), descriptor)
            }
            None => Err(unsupported(&cmd)),
        },
    }
}

fn unsupported(cmd: &Command) -> Status {
    match cmd {
        Command::CommandStatementUpdate(_)
        | Command::CommandPreparedStatementUpdate(_)
        | Command::CommandStatementIngest(_) => refuse("an update"),
        Command::CommandStatementSubstraitPlan(_) => refuse("Substrait"),
        other => Status::unimplemented(format!(
            "{} is not supported by FastK's Flight SQL (see docs/sql.md)",
            other.type_url().trim_start_matches(TYPE_PREFIX)
        )),
    }
}

/// DoGet for a Flight SQL ticket: the schema and the batches.
pub async fn do_get(
    engine: &Arc<Engine>,
    principal: &crate::auth::Principal,
    prepared: &Prepared,
    cmd: Command,
) -> Result<(SchemaRef, BatchStream), Status> {
    let (query, params) = match cmd {
        Command::TicketStatementQuery(t) => (
            String::from_utf8(t.statement_handle.to_vec())
                .map_err(|_| invalid("the statement ticket is not a FastK statement"))?,
            Vec::new(),
        ),
        Command::CommandPreparedStatementQuery(p) => prepared.get(&p.prepared_statement_handle)?,
        cmd => {
            if metadata_schema(&cmd).is_none() {
                return Err(unsupported(&cmd));
            }
            let batch = metadata_batch(cmd)?;
            let schema = batch.schema();
            return Ok((schema, stream::once(async move { Ok(batch) }).boxed()));
        }
    };
    let running = sql::run_as(engine, principal, &query, params).await?;
    let schema = Arc::clone(&running.schema);
    let batches = running
        .map(|b| b.map_err(|e| FlightError::Tonic(Box::new(status(e)))))
        .boxed();
    Ok((schema, batches))
}

/// DoAction for a Flight SQL action: the result bodies.
pub async fn do_action(
    engine: &Arc<Engine>,
    prepared: &Prepared,
    name: &str,
    body: &[u8],
) -> Result<Vec<Bytes>, Status> {
    let any = Any::decode(body)
        .map_err(|e| invalid(format!("{name}: the body is not a protobuf Any: {e}")))?;
    match name {
        CREATE_PREPARED_STATEMENT => {
            let req: ActionCreatePreparedStatementRequest = any
                .unpack()
                .map_err(|e| invalid(e.to_string()))?
                .ok_or_else(|| {
                    invalid("CreatePreparedStatement needs an ActionCreatePreparedStatementRequest")
                })?;
            if req.transaction_id.is_some() {
                return Err(refuse("a transaction"));
            }
            let (schema, params) = sql::describe(engine, &req.query).await?;
            let handle = prepared.insert(engine, req.query);
            let result = ActionCreatePreparedStatementResult {
                prepared_statement_handle: handle,
                dataset_schema: ipc_schema(&schema)?,
                parameter_schema: ipc_schema(&params)?,
            };
            Ok(vec![Bytes::from(result.as_any().encode_to_vec())])
        }
        CLOSE_PREPARED_STATEMENT => {
            let req: ActionClosePreparedStatementRequest = any
                .unpack()
                .map_err(|e| invalid(e.to_string()))?
                .ok_or_else(|| {
                    invalid("ClosePreparedStatement needs an ActionClosePreparedStatementRequest")
                })?;
            prepared.close(&req.prepared_statement_handle);
            Ok(Vec::new())
        }
        other => Err(Status::unimplemented(format!(
            "{other} is not supported: FastK SQL is read-only and has no transactions; \
             a query is cancelled by cancelling its DoGet"
        ))),
    }
}

fn ipc_schema(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow_schema::ArrowError| status(Error::internal(e)))?;
    Ok(bytes)
}

/// The most rows of parameters one bind may carry (one execution per row is not
/// supported; a query takes one set of values).
const MAX_PARAM_ROWS: usize = 1;

/// DoPut for a Flight SQL command: binding parameters to a prepared statement; every
/// update is refused. `first` is the stream's first message, `rest` the others.
pub async fn do_put(
    prepared: &Prepared,
    cmd: Command,
    first: FlightData,
    rest: impl futures::Stream<Item = Result<FlightData, Status>> + Send + 'static,
    end: Option<super::putbody::BodyEnd>,
) -> Result<PutResult, Status> {
    let p: CommandPreparedStatementQuery = match cmd {
        Command::CommandPreparedStatementQuery(p) => p,
        other => return Err(unsupported(&other)),
    };
    let messages = stream::once(async move { Ok(first) })
        .chain(rest)
        .map_err(|s| FlightError::Tonic(Box::new(s)));
    let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(messages)
        .try_collect()
        .await
        .map_err(|e| invalid(format!("the parameters could not be decoded: {e}")))?;
    // As for writes: a stream the client cancelled binds nothing (tonic reports a
    // cancel as a clean end; only the raw body knows).
    if end.is_some_and(|e| !e.ended_cleanly()) {
        return Err(Status::cancelled(
            "the DoPut stream was cancelled before the client ended it; nothing was bound",
        ));
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > MAX_PARAM_ROWS {
        return Err(status(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "bind one row of parameters, not {rows} (run the statement once per set of values)"
            ),
        )));
    }
    let mut params = Vec::new();
    if let Some(b) = batches.iter().find(|b| b.num_rows() == 1) {
        for (i, col) in b.columns().iter().enumerate() {
            params.push(
                ScalarValue::try_from_array(col, 0)
                    .map_err(|e| invalid(format!("parameter {}: {e}", i + 1)))?,
            );
        }
    }
    prepared.bind(&p.prepared_statement_handle, params)?;
    let result = DoPutPreparedStatementResult {
        prepared_statement_handle: Some(p.prepared_statement_handle),
    };
    Ok(PutResult {
        app_metadata: result.encode_to_vec().into(),
    })
}
