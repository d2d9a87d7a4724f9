//! GetFlightInfo, GetSchema and ListFlights: what can be read, and in which shape.

use std::sync::Arc;

use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, SchemaResult, Ticket,
    flight_descriptor::DescriptorType,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{DataType, Schema, SchemaRef};
use bytes::Bytes;
use serde::Deserialize;
use tonic::Status;

use super::doget::ReadPlan;
use super::error::{internal, invalid};
use super::ticket::{GetCommand, Target, whole_series_ticket};
use crate::query::Engine;
use crate::record::SeriesKind;
use crate::storage::Series;
use crate::storage::batch::Projection;

/// ListFlights criteria: every field optional; empty criteria lists every series.
/// The fields are those of `/inventory`, so a store of 100,000 series is listed the
/// same way over HTTP and Flight, in pages if the client wants them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListCriteria {
    /// Only series of this kind.
    #[serde(default)]
    kind: Option<SeriesKind>,
    /// Only series of this symbol.
    #[serde(default)]
    symbol: Option<String>,
    /// At most this many flights (at least 1), in key order.
    #[serde(default)]
    limit: Option<usize>,
    /// Only series whose key sorts after this one (the last key of the previous page,
    /// as `/inventory`'s `next_after`).
    #[serde(default)]
    after: Option<String>,
}

/// The most endpoints a many-series FlightInfo lists; past it, each endpoint covers a
/// contiguous group of symbols.
pub const MAX_ENDPOINTS: usize = 64;

/// FlightInfo for a descriptor: its schema, endpoints whose tickets DoGet accepts
/// (the cmd itself, the whole-series ticket for a path, or for many series one
/// ticket per series or group of series), and the exact row count (-1 for predicate
/// and resample reads, whose count is only known by running them).
pub async fn flight_info(engine: Arc<Engine>, d: FlightDescriptor) -> Result<FlightInfo, Status> {
    let cmd = GetCommand::from_descriptor(&d)?;
    let is_cmd = matches!(DescriptorType::try_from(d.r#type), Ok(DescriptorType::Cmd));
    // Resolving and counting map (and so verify) chunks: keep it off the runtime.
    tokio::task::spawn_blocking(move || {
        let (schema, tickets, total) = match cmd {
            GetCommand::Aligned { key, body } => {
                let plan = engine.aligned(&key, &body)?;
                let n = engine.count(&key, plan.range, None)? as i64;
                (Arc::clone(&plan.schema), vec![d.cmd.clone()], n)
            }
            GetCommand::Read(cmd) => {
                let plan = ReadPlan::new(&engine, cmd)?;
                let spec = &plan.cmd.spec;
                let total = if plan.cmd.predicate.is_some() || spec.resample.is_some() {
                    -1
                } else {
                    let mut n = 0;
                    for s in &plan.series {
                        n += engine.count(&s.meta.key, spec.range, spec.latest)?;
                    }
                    n as i64
                };
                let tickets = match &plan.cmd.target {
                    _ if !is_cmd => vec![whole_series_ticket(&plan.series[0].meta.key)],
                    Target::One(_) => vec![d.cmd.clone()],
                    Target::Many(_) => group_tickets(&d.cmd, &plan.series)?,
                };
                (Arc::clone(&plan.schema), tickets, total)
            }
        };
        build_info(&schema, d, tickets, total, None)
    })
    .await
    .map_err(internal)?
}

/// One ticket per series, or per contiguous group past [`MAX_ENDPOINTS`] series: the
/// original command with `symbols` set to the group.
fn group_tickets(cmd: &[u8], series: &[Arc<Series>]) -> Result<Vec<Bytes>, Status> {
    let base: serde_json::Value = serde_json::from_slice(cmd).map_err(internal)?;
    // At most MAX_ENDPOINTS groups whose sizes differ by one at most.
    let n = series.len();
    let groups = n.min(MAX_ENDPOINTS);
    (0..groups)
        .map(|g| &series[g * n / groups..(g + 1) * n / groups])
        .map(|group| {
            let mut t = base.clone();
            let names: Vec<&str> = group.iter().map(|s| s.meta.key.symbol()).collect();
            t["symbols"] = serde_json::json!(names);
            Ok(Bytes::from(t.to_string()))
        })
        .collect()
}

/// The schema DoGet would send for a descriptor.
pub fn schema(engine: &Engine, d: &FlightDescriptor) -> Result<SchemaResult, Status> {
    let schema = match GetCommand::from_descriptor(d)? {
        GetCommand::Aligned { key, body } => Arc::clone(&engine.aligned(&key, &body)?.schema),
        GetCommand::Read(cmd) => ReadPlan::new(engine, cmd)?.schema,
    };
    SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(internal)
}

/// One FlightInfo per series matching the criteria, ordered by key (the series key
/// as text, as `/inventory` orders and pages). The infos are built as the stream is
/// read, not all at once, and a schema is encoded once for a run of series that share
/// it (every kline series of one price and volume scale), so listing 100,000 series
/// holds one list of keys, not 100,000 encoded infos.
pub fn list(
    engine: &Engine,
    criteria: &[u8],
) -> Result<impl Iterator<Item = Result<FlightInfo, Status>> + Send + 'static, Status> {
    let c = parse_criteria(criteria)?;
    if c.limit == Some(0) {
        return Err(invalid("ListFlights criteria: limit must be at least 1"));
    }
    let mut series: Vec<(String, Arc<Series>)> = engine
        .store
        .list()
        .into_iter()
        .filter(|s| c.kind.is_none_or(|k| k == s.meta.key.kind()))
        .filter(|s| c.symbol.as_deref().is_none_or(|x| x == s.meta.key.symbol()))
        .map(|s| (s.meta.key.to_string(), s))
        .collect();
    series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let start = c
        .after
        .as_deref()
        .map_or(0, |a| series.partition_point(|(k, _)| k.as_str() <= a));
    let end = c
        .limit
        .map_or(series.len(), |l| start.saturating_add(l).min(series.len()));
    series.truncate(end);
    series.drain(..start);
    let mut last: Option<(SchemaRef, Bytes)> = None;
    Ok(series.into_iter().map(move |(_, s)| {
        let key = &s.meta.key;
        let schema = Projection::all(&s.meta).schema;
        let ipc = match &last {
            Some((prev, ipc)) if **prev == *schema => ipc.clone(),
            _ => {
                let ipc = encode_schema(&schema)?;
                last = Some((Arc::clone(&schema), ipc.clone()));
                ipc
            }
        };
        let rows = s.snapshot().rows() as i64;
        let descriptor = FlightDescriptor::new_path(key.parts());
        build_info(
            &schema,
            descriptor,
            vec![whole_series_ticket(key)],
            rows,
            Some(ipc),
        )
    }))
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

/// The schema as the IPC message a FlightInfo carries.
fn encode_schema(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(ipc) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(internal)?;
    Ok(ipc)
}

/// A FlightInfo of `schema` (encoded here unless the caller has it encoded already).
fn build_info(
    schema: &Schema,
    descriptor: FlightDescriptor,
    tickets: Vec<Bytes>,
    total_records: i64,
    encoded: Option<Bytes>,
) -> Result<FlightInfo, Status> {
    // Columns are 8 bytes wide (the dictionary keys of `symbol` 4), so the Arrow size
    // of the result is known up to the dictionary.
    let width: i64 = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(..) => 4,
            DataType::Boolean => 1,
            _ => 8,
        })
        .sum();
    let total_bytes = match total_records {
        n if n >= 0 => n * width,
        _ => -1,
    };
    let mut info = FlightInfo::new()
        .with_descriptor(descriptor)
        .with_total_records(total_records)
        .with_total_bytes(total_bytes)
        .with_ordered(true);
    info.schema = match encoded {
        Some(ipc) => ipc,
        None => encode_schema(schema)?,
    };
    for t in tickets {
        info = info.with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(t)));
    }
    Ok(info)
}
