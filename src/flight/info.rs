//! GetFlightInfo, GetSchema and ListFlights: what can be read, and in which shape.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, Location, SchemaAsIpc, SchemaResult,
    Ticket, flight_descriptor::DescriptorType,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{DataType, Schema, SchemaRef};
use bytes::Bytes;
use serde::Deserialize;
use tonic::Request;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use super::error::{internal, invalid};
use super::ticket::{GetCommand, ReadCommand, Target, whole_series_ticket};
use crate::cluster::Cluster;
use crate::query::market::spec::Symbols;
use crate::query::stream::ReadPlan;
use crate::query::tick::TickRequest;
use crate::query::{Engine, page_bounds};
use crate::query::{Projection, Series};
use crate::record::SeriesKind;

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
            GetCommand::Ticks(req) => (engine.tick_stream(req)?.schema(), vec![d.cmd.clone()], -1),
            GetCommand::Read(cmd) => {
                let plan = ReadPlan::new(&engine, cmd)?;
                let spec = &plan.cmd.spec;
                let total = if plan.cmd.predicate.is_some() || spec.resample.is_some() {
                    -1
                } else {
                    let mut n = 0;
                    for s in &plan.series {
                        n += Engine::count_of(s, spec.range, spec.latest)?;
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

/// The metadata key a node sets on the GetFlightInfo it sends another node of its
/// cluster: the receiver answers for its own series only, so a fan-out never fans out
/// again (both nodes read the same map, but a stale one must not loop).
pub const FORWARDED: &str = "fastk-forwarded";

/// How long a node waits to connect to another node of its cluster (its answer:
/// `cluster.forward_timeout_s`).
const REMOTE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// GetFlightInfo on a node of a cluster (`cluster.shard_map`): a many-series command
/// (bars and scalars, or trades and quotes) is split by owner (`"*"` goes to every
/// node owning a range), each owner answers its part (this node locally, the others
/// by GetFlightInfo with `symbols` narrowed to a run of theirs), and the parts are
/// merged in symbol order into one FlightInfo (`ordered` is false for `"*"` when a
/// node owns ranges apart, and for a tape cut across owners) whose remote
/// endpoints carry their owner's location: a client pulls every owner in parallel and
/// no data passes through this node. A single-series command or PATH goes to its
/// owner. Outside a cluster, or for a call another node forwarded, it is
/// [`flight_info`].
pub async fn routed_flight_info(
    engine: Arc<Engine>,
    cluster: Option<Arc<Cluster>>,
    req: Request<FlightDescriptor>,
) -> Result<FlightInfo, Status> {
    let forwarded = req.metadata().contains_key(FORWARDED);
    let auth = req.metadata().get("authorization").cloned();
    let d = req.into_inner();
    let Some(cluster) = cluster.filter(|_| !forwarded) else {
        return flight_info(engine, d).await;
    };
    // A tape of many symbols cut across owners comes back as one ts-ordered stream per
    // owner: the endpoints are not in order one after the other.
    let mut tape = false;
    let (every, parts): (bool, Vec<(String, FlightDescriptor)>) =
        match GetCommand::from_descriptor(&d)? {
            GetCommand::Read(ReadCommand {
                target: Target::Many(sel),
                ..
            }) => split_many(&cluster, &d, &sel.symbols)?,
            GetCommand::Ticks(TickRequest::Many {
                symbols,
                order_by_ts,
                ..
            }) => {
                tape = order_by_ts;
                split_many(&cluster, &d, &symbols)?
            }
            GetCommand::Read(ReadCommand {
                target: Target::One(key),
                ..
            })
            | GetCommand::Aligned { key, .. }
            | GetCommand::Ticks(TickRequest::One { key, .. }) => (
                false,
                vec![(cluster.owner(key.symbol()).to_string(), d.clone())],
            ),
        };
    if let [(node, _)] = parts.as_slice()
        && cluster.is_me(node)
        && cluster.replicas(node).is_empty()
    {
        return flight_info(engine, d).await;
    }
    let calls = parts.into_iter().map(|(node, desc)| {
        let engine = Arc::clone(&engine);
        let cluster = Arc::clone(&cluster);
        let auth = auth.clone();
        async move {
            let info = if cluster.is_me(&node) {
                flight_info(engine, desc).await
            } else {
                let timeout = Duration::from_secs(engine.config.cluster.forward_timeout_s);
                forward(
                    &cluster,
                    &node,
                    desc,
                    auth,
                    engine.tls.get().cloned(),
                    timeout,
                )
                .await
            };
            info.map(|i| (node, i))
        }
    });
    let answers = futures::future::join_all(calls).await;
    // A list is cut into runs of one range each, so its parts are in symbol order;
    // "*" is one part per node, in order only when each node owns one run of ranges.
    let ordered = !every || cluster.contiguous();
    let mut info = merge_parts(&cluster, d, answers, every)?;
    info.ordered = ordered && !(tape && info.endpoint.len() > 1);
    Ok(info)
}

/// The parts of a many-series command by owner: `"*"` goes whole to every node owning
/// a range (`true`: "every"), a list is cut into runs of one owner each, in symbol
/// order, each part's command naming only its run.
fn split_many(
    cluster: &Cluster,
    d: &FlightDescriptor,
    symbols: &Symbols,
) -> Result<(bool, Vec<(String, FlightDescriptor)>), Status> {
    Ok(match symbols {
        Symbols::All(_) => (
            true,
            cluster
                .owners_in_order()
                .into_iter()
                .map(|n| (n.to_string(), d.clone()))
                .collect(),
        ),
        Symbols::List(list) => {
            let base: serde_json::Value = serde_json::from_slice(&d.cmd).map_err(internal)?;
            let parts = cluster
                .split(list)
                .into_iter()
                .map(|(node, syms)| {
                    let mut cmd = base.clone();
                    cmd["symbols"] = serde_json::json!(syms);
                    (node.to_string(), FlightDescriptor::new_cmd(cmd.to_string()))
                })
                .collect();
            (false, parts)
        }
    })
}

/// GetFlightInfo of `d` on `node`; when the node does not answer (Unavailable: it is
/// down, unreachable or late) and the shard map lists replicas of it, on each replica
/// in turn. The answer is the first that comes; if none does, the node's own error,
/// naming the replicas tried.
async fn forward(
    cluster: &Cluster,
    node: &str,
    d: FlightDescriptor,
    auth: Option<MetadataValue<Ascii>>,
    tls: Option<Arc<crate::tls::Tls>>,
    timeout: Duration,
) -> Result<FlightInfo, Status> {
    let uri = cluster
        .uri(node)
        .ok_or_else(|| internal(format!("node {node} is not in the shard map")))?;
    let first = remote_info(
        cluster,
        node,
        uri,
        d.clone(),
        auth.clone(),
        tls.clone(),
        timeout,
    )
    .await;
    let replicas = cluster.replicas(node);
    let down = match first {
        Err(e) if e.code() == tonic::Code::Unavailable && !replicas.is_empty() => e,
        other => return other,
    };
    for r in replicas {
        match remote_info(
            cluster,
            node,
            r,
            d.clone(),
            auth.clone(),
            tls.clone(),
            timeout,
        )
        .await
        {
            Err(e) if e.code() == tonic::Code::Unavailable => {
                tracing::warn!(node, replica = %r, error = %e.message(), "a replica of a shard node did not answer either");
            }
            answer => {
                tracing::warn!(node, replica = %r, error = %down.message(), "a shard node did not answer: its replica did");
                return answer;
            }
        }
    }
    Err(Status::unavailable(format!(
        "{}; nor did its replicas ({})",
        down.message(),
        replicas.join(", ")
    )))
}

/// GetFlightInfo of `d` at `uri` (node `node` or one of its replicas), forwarded with
/// the client's bearer token; over TLS when this node's listeners use it (or the URI
/// says `grpc+tls://`), trusting the same CA and presenting this node's certificate.
async fn remote_info(
    cluster: &Cluster,
    node: &str,
    uri: &str,
    d: FlightDescriptor,
    auth: Option<MetadataValue<Ascii>>,
    tls: Option<Arc<crate::tls::Tls>>,
    timeout: Duration,
) -> Result<FlightInfo, Status> {
    let unavailable = |e: &dyn std::fmt::Display| {
        Status::unavailable(format!("shard node {node} ({uri}) did not answer: {e}"))
    };
    let host = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    if uri.starts_with("grpc+tls://") && tls.is_none() {
        return Err(Status::unavailable(format!(
            "shard node {node} ({uri}) speaks TLS and this node has no [tls] to reach it with: \
             give every node of the cluster the same tls.* settings"
        )));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Channel::from_shared(format!("{scheme}://{host}")).map_err(|e| unavailable(&e))?;
    if let Some(t) = &tls {
        endpoint = endpoint
            .tls_config(t.client())
            .map_err(|e| unavailable(&e))?;
    }
    let channel = endpoint
        .connect_timeout(REMOTE_CONNECT_TIMEOUT)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| unavailable(&e))?;
    let mut client = FlightServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut req = Request::new(d);
    if let Some(a) = auth {
        req.metadata_mut().insert("authorization", a);
    }
    let me = MetadataValue::try_from(cluster.me()).map_err(internal)?;
    req.metadata_mut().insert(FORWARDED, me);
    // A node that answers late (the timeout: Cancelled) or drops the call (Unknown,
    // Internal from the transport) is one that did not answer: Unavailable, naming
    // it, so the caller tries its replicas. Its own answers (NotFound, a refusal)
    // pass through.
    client
        .get_flight_info(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| match e.code() {
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
                unavailable(&format!(
                    "{} (cluster.forward_timeout_s {})",
                    e.message(),
                    timeout.as_secs()
                ))
            }
            _ => e,
        })
}

/// One FlightInfo from the owners' answers, in the order of the parts: endpoints of other nodes located on them, counts summed (-1 if any part's
/// is), every part's columns equal. For `"*"` (`every`), a node holding none of the
/// series (no endpoint, or NotFound from an older node) is left out; when no node
/// holds any, the answer is the first node's empty one (no endpoint, 0 records).
fn merge_parts(
    cluster: &Cluster,
    d: FlightDescriptor,
    answers: Vec<Result<(String, FlightInfo), Status>>,
    every: bool,
) -> Result<FlightInfo, Status> {
    let mut parts = Vec::new();
    let mut empty = None;
    let mut not_found = None;
    for a in answers {
        match a {
            Ok(p) if every && p.1.endpoint.is_empty() => {
                empty.get_or_insert(p);
            }
            Ok(p) => parts.push(p),
            Err(e) if every && e.code() == tonic::Code::NotFound => {
                not_found.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    if parts.is_empty()
        && let Some((_, info)) = empty
    {
        return Ok(info.with_descriptor(d));
    }
    let Some((_, first)) = parts.first() else {
        return Err(not_found.unwrap_or_else(|| Status::not_found("no series match")));
    };
    let schema = first.clone().try_decode_schema().map_err(internal)?;
    let mut out = FlightInfo::new().with_descriptor(d).with_ordered(true);
    out.schema = first.schema.clone();
    let (mut records, mut bytes) = (0i64, 0i64);
    for (node, info) in parts {
        let fields = info.clone().try_decode_schema().map_err(internal)?;
        if fields.fields() != schema.fields() {
            return Err(Status::invalid_argument(format!(
                "the series on node {node} do not have the columns of the others: read them separately"
            )));
        }
        let add = |sum: i64, n: i64| if sum < 0 || n < 0 { -1 } else { sum + n };
        records = add(records, info.total_records);
        bytes = add(bytes, info.total_bytes);
        // The owner first, then its replicas (the Flight way: any location serves the
        // ticket). An endpoint of this node with no replica keeps no location: "the
        // node asked".
        let replicas = cluster.replicas(&node);
        let owner = (!cluster.is_me(&node) || !replicas.is_empty())
            .then(|| cluster.uri(&node))
            .flatten();
        for mut e in info.endpoint {
            if e.location.is_empty()
                && let Some(uri) = owner
            {
                e.location.push(Location {
                    uri: uri.to_string(),
                });
                e.location
                    .extend(replicas.iter().map(|r| Location { uri: r.clone() }));
            }
            out.endpoint.push(e);
        }
    }
    out.total_records = records;
    out.total_bytes = bytes;
    Ok(out)
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
        GetCommand::Ticks(req) => engine.tick_stream(req)?.schema(),
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
    let mut series = engine.series_by_key(c.kind, c.symbol.as_deref());
    let page = page_bounds(&series, c.after.as_deref(), c.limit);
    series.truncate(page.end);
    series.drain(..page.start);
    let mut last: Option<(SchemaRef, Bytes)> = None;
    Ok(series.into_iter().map(move |(_, l)| {
        let meta = l.meta();
        let key = &meta.key;
        let schema = Projection::all(meta).schema;
        let ipc = match &last {
            Some((prev, ipc)) if **prev == *schema => ipc.clone(),
            _ => {
                let ipc = encode_schema(&schema)?;
                last = Some((Arc::clone(&schema), ipc.clone()));
                ipc
            }
        };
        let rows = Engine::listed_rows(&l) as i64;
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
