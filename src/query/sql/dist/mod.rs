//! Distributed SQL (`cluster.sql = "distributed"`; docs/scale-out.md, "Distributed
//! SQL") on datafusion-distributed: the node a query is sent to plans it; a scan of a
//! data table that reads series of other nodes becomes a [`ShardScanExec`] leaf that
//! the engine splits into one task per owner ([`route`]) and ships to that owner's
//! worker ([`worker`]) as a plan node ([`codec`]); each owner scans only its own series
//! with the same pushdown. Partial aggregates run on the owners, the rest where the
//! engine puts it. A scan that reads only this node's series stays local and contacts
//! no other node.

mod channel;
mod codec;
mod exec;
mod route;
mod worker;

use crate::sync::LockExt;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_distributed::{DistributedExt, SessionStateBuilderExt};

pub use channel::OpenChannels;
pub use exec::{ShardScanExec, What};
pub use worker::service;

use super::tables::ScanSpec;
use crate::cluster::Cluster;
use crate::query::Engine;

/// The shard map a distributed query is planned with, when this node runs SQL
/// distributed.
pub fn cluster_of(engine: &Engine) -> Option<Arc<Cluster>> {
    if engine.config.cluster.sql != "distributed" {
        return None;
    }
    engine.cluster.get()
}

/// The nodes a query has read from so far, in the session of the node that plans it:
/// the stages above the scans run on these nodes only.
#[derive(Debug, Default)]
pub struct Touched(pub Mutex<BTreeSet<String>>);

/// The session of a query planned on this node: the distributed planner with FastK's
/// codec, task count, split and routing, the shard map's nodes as workers, and the
/// client's bearer token passed on to them. `None`: SQL is local here.
pub fn coordinator(
    builder: SessionStateBuilder,
    engine: &Arc<Engine>,
    bearer: Option<&str>,
) -> Result<SessionStateBuilder> {
    let Some(cluster) = cluster_of(engine) else {
        return Ok(builder);
    };
    let mut headers = http::HeaderMap::new();
    if let Some(token) = bearer {
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        headers.insert(http::header::AUTHORIZATION, value);
    }
    let mut builder = builder
        .with_distributed_worker_resolver(route::Workers(Arc::clone(&cluster)))
        .with_distributed_channel_resolver(channel::Channels::of(engine))
        .with_distributed_planner()
        .with_distributed_user_codec(codec::FastkCodec::new(engine))
        .with_distributed_desired_task_count_handler(route::desired_task_count)
        .with_distributed_scale_up_leaf_node_handler(route::scale_up)
        .with_distributed_route_tasks_handler(route::route_tasks)
        .with_distributed_passthrough_headers(headers)?;
    let cfg = builder.config().get_or_insert_with(SessionConfig::default);
    cfg.set_extension(cluster);
    cfg.set_extension(Arc::new(Touched::default()));
    cfg.set_extension(Arc::clone(engine));
    Ok(builder)
}

/// The scan of `spec` as a distributed leaf, when the query runs distributed and the
/// series it reads are not all this node's. `None`: the local scan answers.
pub fn shard_scan(
    engine: &Arc<Engine>,
    config: &SessionConfig,
    spec: &ScanSpec,
    partitions: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let symbols = spec.filter().keys[0].clone();
    shard(
        engine,
        config,
        What::Data(spec.clone()),
        symbols.as_ref(),
        partitions,
    )
}

/// The catalog table `series` as a distributed leaf (every owner lists its own
/// series), when the query runs distributed. `None`: this node's list answers.
pub fn shard_series(
    engine: &Arc<Engine>,
    config: &SessionConfig,
    projection: Option<&Vec<usize>>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let ncols = super::tables::catalog_schema("series").map_or(0, |s| s.fields().len());
    let projection = projection.cloned().unwrap_or_else(|| (0..ncols).collect());
    shard(engine, config, What::Series(projection), None, 1)
}

/// A cross section (`asof(...)` / `latest(...)`) as a distributed leaf (every owner
/// reads the last rows of its own series), when the query runs distributed. `None`:
/// this node's series answer.
pub fn shard_cross(
    engine: &Arc<Engine>,
    config: &SessionConfig,
    call: &super::asof::Call,
    projection: Option<&Vec<usize>>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let ncols = call.table().columns().len();
    let projection = projection.cloned().unwrap_or_else(|| (0..ncols).collect());
    shard(
        engine,
        config,
        What::Cross(call.clone(), projection),
        None,
        1,
    )
}

fn shard(
    engine: &Arc<Engine>,
    config: &SessionConfig,
    what: What,
    symbols: Option<&BTreeSet<String>>,
    partitions: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(cluster) = config.get_extension::<Cluster>() else {
        return Ok(None);
    };
    let owners: Vec<String> = match symbols {
        Some(symbols) => {
            let set: BTreeSet<&str> = symbols.iter().map(|s| cluster.owner(s)).collect();
            cluster
                .owners_in_order()
                .into_iter()
                .filter(|n| set.contains(n))
                .map(str::to_string)
                .collect()
        }
        None => cluster
            .owners_in_order()
            .into_iter()
            .map(str::to_string)
            .collect(),
    };
    if let Some(touched) = config.get_extension::<Touched>() {
        touched.0.locked().extend(owners.iter().cloned());
    }
    if owners.is_empty() || (owners.len() == 1 && cluster.is_me(&owners[0])) {
        return Ok(None);
    }
    Ok(Some(Arc::new(ShardScanExec::new(
        Arc::clone(engine),
        what,
        owners,
        partitions,
    )?)))
}

/// `EXPLAIN <query>` when the query runs distributed: DataFusion's own EXPLAIN plans
/// without the distributed pass, so the answer is built here: the optimized logical
/// plan and the distributed plan (its stages, their tasks, and the node each scan
/// variant reads), in EXPLAIN's two columns. `None`: not an EXPLAIN, or SQL is local.
pub async fn explain(
    ctx: &datafusion::prelude::SessionContext,
    logical: &datafusion::logical_expr::LogicalPlan,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    use datafusion::arrow::array::{RecordBatch, StringArray};
    use datafusion::logical_expr::LogicalPlan;
    use datafusion::physical_plan::displayable;
    let LogicalPlan::Explain(ex) = logical else {
        return Ok(None);
    };
    let state = ctx.state();
    if state.config().get_extension::<Cluster>().is_none() {
        return Ok(None);
    }
    let optimized = state.optimize(&ex.plan)?;
    let physical = state.create_physical_plan(&ex.plan).await?;
    let (kind, text) = if physical
        .downcast_ref::<datafusion_distributed::DistributedExec>()
        .is_some()
    {
        (
            "distributed_plan",
            datafusion_distributed::display_plan_ascii(physical.as_ref(), false),
        )
    } else {
        (
            "physical_plan",
            displayable(physical.as_ref()).indent(true).to_string(),
        )
    };
    let schema = Arc::new(ex.schema.as_arrow().clone());
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["logical_plan", kind])),
            Arc::new(StringArray::from(vec![
                optimized.display_indent().to_string(),
                text,
            ])),
        ],
    )?;
    Ok(Some(ctx.read_batch(batch)?.create_physical_plan().await?))
}

/// The error of a call to another node's worker that failed: one that did not answer
/// (refused, reset, timed out) is `unavailable`; any other is the client's or ours as
/// its code says.
pub fn status_error(status: &tonic::Status) -> crate::error::Error {
    use crate::error::{Error, ErrorKind};
    use std::error::Error as _;
    let source = status
        .source()
        .map(|s| format!(" ({s:?})"))
        .unwrap_or_default();
    let message = format!("{}{source}", status.message());
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::Unknown
        | tonic::Code::Aborted => Error::new(
            ErrorKind::Unavailable,
            format!("a node of the distributed query did not answer: {message}"),
        ),
        tonic::Code::Unauthenticated => Error::new(ErrorKind::Unauthorized, message),
        tonic::Code::PermissionDenied => Error::new(ErrorKind::Forbidden, message),
        tonic::Code::ResourceExhausted => Error::new(ErrorKind::PayloadTooLarge, message),
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => Error::invalid(message),
        _ => Error::internal(message),
    }
}

/// A FastK error inside a plan: how the SQL layer's scans and tables raise theirs, so
/// that an error raised on a worker keeps its kind on its way to the node that planned
/// the query. Errors cross the network as text (the engine's wire keeps only the
/// message of an external error), so its text carries its kind: "[fastk:forbidden]
/// symbol X is outside ...", and [`Remote::parse`] gives the planning node back the
/// same kind and message (a 403 stays a 403, not a 400). On one node, `df_error` takes
/// the error out as it is.
#[derive(Debug)]
pub struct Remote(pub crate::error::Error);

const REMOTE_TAG: &str = "[fastk:";

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{REMOTE_TAG}{}] {}", self.0.kind.code(), self.0.message)
    }
}

impl std::error::Error for Remote {}

impl Remote {
    /// `e` as a DataFusion error that keeps its kind across the network.
    pub fn error(e: crate::error::Error) -> DataFusionError {
        DataFusionError::External(Box::new(Remote(e)))
    }

    /// A FastK error inside `e` (at its root) made into a [`Remote`] one; any other
    /// error as it is.
    pub fn carry(e: DataFusionError) -> DataFusionError {
        if let DataFusionError::External(inner) = e.find_root()
            && let Some(ours) = inner.downcast_ref::<crate::error::Error>()
        {
            return Remote::error(ours.clone());
        }
        e
    }

    /// The error whose text `text` holds (the first tag in it), if any.
    pub fn parse(text: &str) -> Option<crate::error::Error> {
        let start = text.find(REMOTE_TAG)?;
        let rest = &text[start + REMOTE_TAG.len()..];
        let (code, message) = rest.split_once("] ")?;
        let kind = crate::error::ErrorKind::ALL
            .into_iter()
            .find(|k| k.code() == code)?;
        Some(crate::error::Error::new(kind, message))
    }
}

/// Whether `e` says that a node did not answer ("shard node b (...) did not answer")
/// and the map lists a replica of that node that is not the one that failed: a query
/// that failed so can run again on the replica ([`crate::query::sql::run_as`]).
pub fn replica_can_answer(cluster: &Cluster, e: &crate::error::Error) -> bool {
    if e.kind != crate::error::ErrorKind::Unavailable {
        return false;
    }
    let Some(rest) = e.message.strip_prefix("shard node ") else {
        return false;
    };
    let Some((node, rest)) = rest.split_once(" (") else {
        return false;
    };
    let failed = rest.split_once(')').map_or("", |(uri, _)| uri);
    cluster.replicas(node).iter().any(|uri| uri != failed)
}

/// `e` with the node named whose address its message holds: "shard node c
/// (grpc://127.0.0.1:8815) did not answer: ...".
pub fn name_nodes(
    cluster: Option<&Cluster>,
    engine: Option<&Engine>,
    e: crate::error::Error,
) -> crate::error::Error {
    let Some(cluster) = cluster else {
        return e;
    };
    if e.message.starts_with("shard node ") {
        return e;
    }
    // An error raised on another node arrives as text: a connection that failed there
    // is still a node that did not answer.
    let transport = [
        "did not answer",
        "transport error",
        "tcp connect error",
        "Connection refused",
        "connection reset",
    ]
    .iter()
    .any(|m| e.message.contains(m));
    if e.kind != crate::error::ErrorKind::Unavailable && !transport {
        return e;
    }
    for node in cluster.owners_in_order() {
        let Some(uri) = cluster.uri(node) else {
            continue;
        };
        let host = uri.split_once("://").map_or(uri, |(_, rest)| rest);
        if e.message.contains(host) {
            if let Some(engine) = engine {
                engine.note_peer_failed(crate::query::now_ms(), format!("{node} ({uri})"));
            }
            return crate::error::Error::new(
                crate::error::ErrorKind::Unavailable,
                format!("shard node {node} ({uri}) did not answer: {}", e.message),
            );
        }
    }
    crate::error::Error::new(crate::error::ErrorKind::Unavailable, e.message)
}

#[cfg(test)]
mod tests {
    use super::Remote;
    use crate::error::{Error, ErrorKind};

    #[test]
    fn a_remote_error_keeps_its_kind_and_message_through_its_text() {
        for kind in ErrorKind::ALL {
            let e = Error::new(kind, "symbol SOL is outside the token's symbols");
            let text = format!("External error: {}", Remote(e.clone()));
            assert_eq!(Remote::parse(&text), Some(e));
        }
        assert_eq!(Remote::parse("no tag here"), None);
        assert_eq!(Remote::parse("[fastk:no_such_code] x"), None);
        assert_eq!(Remote::parse("[fastk:forbidden"), None);
    }
}
