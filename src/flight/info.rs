//! GetFlightInfo, GetSchema and ListFlights: what can be read, and in which shape.

use std::sync::Arc;

use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, SchemaAsIpc, SchemaResult, Ticket,
    flight_descriptor::DescriptorType,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::Schema;
use bytes::Bytes;
use serde::Deserialize;
use tonic::Status;

use super::error::{internal, invalid};
use super::ticket::{ReadCommand, whole_series_ticket};
use crate::query::Engine;
use crate::record::SeriesKind;
use crate::storage::batch::Projection;

/// ListFlights criteria: both fields optional; empty criteria lists every series.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListCriteria {
    #[serde(default)]
    kind: Option<SeriesKind>,
    #[serde(default)]
    symbol: Option<String>,
}

/// FlightInfo for a descriptor: its schema, one endpoint whose ticket DoGet accepts
/// (the cmd itself, or the whole-series ticket for a path), and the exact row count
/// (-1 for predicate tickets, whose count is only known by running them).
pub async fn flight_info(engine: Arc<Engine>, d: FlightDescriptor) -> Result<FlightInfo, Status> {
    let cmd = ReadCommand::from_descriptor(&d)?;
    let meta = Arc::clone(&engine.series(&cmd.key)?.meta);
    let schema = cmd.schema(&meta)?;
    let ticket = match DescriptorType::try_from(d.r#type) {
        Ok(DescriptorType::Cmd) => d.cmd.clone(),
        _ => whole_series_ticket(&cmd.key),
    };
    let total_records = match cmd.predicate {
        Some(_) => -1,
        // Counting maps (and so verifies) the boundary chunks: keep it off the runtime.
        None => tokio::task::spawn_blocking(move || engine.count(&cmd.key, cmd.range, cmd.latest))
            .await
            .map_err(internal)?? as i64,
    };
    build_info(&schema, d, ticket, total_records)
}

/// The schema DoGet would send for a descriptor.
pub fn schema(engine: &Engine, d: &FlightDescriptor) -> Result<SchemaResult, Status> {
    let cmd = ReadCommand::from_descriptor(d)?;
    let meta = Arc::clone(&engine.series(&cmd.key)?.meta);
    let schema = cmd.schema(&meta)?;
    SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(internal)
}

/// One FlightInfo per series matching the criteria, ordered by series key.
pub fn list(engine: &Engine, criteria: &[u8]) -> Result<Vec<FlightInfo>, Status> {
    let c = parse_criteria(criteria)?;
    let mut series = engine.store.list();
    series.sort_by(|a, b| a.meta.key.cmp(&b.meta.key));
    series
        .iter()
        .filter(|s| c.kind.is_none_or(|k| k == s.meta.key.kind()))
        .filter(|s| c.symbol.as_deref().is_none_or(|x| x == s.meta.key.symbol()))
        .map(|s| {
            let key = &s.meta.key;
            let rows = s.snapshot().rows() as i64;
            let descriptor = FlightDescriptor::new_path(key.parts());
            let schema = Projection::all(&s.meta).schema;
            build_info(&schema, descriptor, whole_series_ticket(key), rows)
        })
        .collect()
}

fn parse_criteria(bytes: &[u8]) -> Result<ListCriteria, Status> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ListCriteria::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        invalid(format!(
            "ListFlights criteria must be empty or JSON like {{\"kind\": \"kline\", \"symbol\": \"BTCUSDT\"}}: {e}"
        ))
    })
}

fn build_info(
    schema: &Schema,
    descriptor: FlightDescriptor,
    ticket: Bytes,
    total_records: i64,
) -> Result<FlightInfo, Status> {
    // Every column is 8 bytes wide, so the Arrow size of the result is known exactly.
    let total_bytes = match total_records {
        n if n >= 0 => n * schema.fields().len() as i64 * 8,
        _ => -1,
    };
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(internal)?
        .with_descriptor(descriptor)
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_total_records(total_records)
        .with_total_bytes(total_bytes)
        .with_ordered(true))
}
