//! Where each task of a distributed query runs: the shard map's nodes are the workers;
//! a [`ShardScanExec`] is split into one task per owner and each task is sent to its
//! owner; the stages above the scans run on the nodes the query reads from.

use crate::sync::LockExt;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedLeafExec, RouteTasksEvent,
    RouteTasksEventResponse, ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse, WorkerResolver,
};
use url::Url;

use super::Touched;
use super::exec::ShardScanExec;
use crate::cluster::Cluster;
use crate::query::Engine;

/// The worker URL of a node: its Flight URI with the scheme the channel speaks.
pub fn worker_url(cluster: &Cluster, node: &str) -> Result<Url> {
    let Some(uri) = cluster.uri(node) else {
        return Err(DataFusionError::Plan(format!(
            "node {node} is not in the shard map"
        )));
    };
    url_of(node, uri)
}

/// The worker URL of a Flight URI of `node` (itself or one of its replicas).
pub fn url_of(node: &str, uri: &str) -> Result<Url> {
    let host = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let scheme = if uri.starts_with("grpc+tls://") {
        "https"
    } else {
        "http"
    };
    Url::parse(&format!("{scheme}://{host}"))
        .map_err(|e| DataFusionError::Plan(format!("node {node}'s URI {uri:?} is not a URL: {e}")))
}

/// The shard map's nodes as the engine's workers.
pub struct Workers(pub Arc<Cluster>);

impl WorkerResolver for Workers {
    fn get_urls(&self) -> Result<Vec<Url>> {
        self.0
            .owners_in_order()
            .into_iter()
            .map(|n| worker_url(&self.0, n))
            .collect()
    }
}

/// A distributed scan asks for one task per owner, and at least two, so that a scan
/// of one other node's series still runs there and not on the node that plans it.
pub fn desired_task_count(
    ev: DesiredTaskCountEvent,
) -> Option<Result<DesiredTaskCountEventResponse>> {
    let scan = ev.plan.downcast_ref::<ShardScanExec>()?;
    Some(Ok(DesiredTaskCountEventResponse::desired(
        scan.owners.len().max(2),
    )))
}

/// A distributed scan split into `task_count` variants: task `i` reads owner `i`; tasks
/// past the owners read nothing and run on an owner too.
pub fn scale_up(ev: ScaleUpLeafNodeEvent) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    let scan = ev.plan.downcast_ref::<ShardScanExec>()?;
    let owners = &scan.owners;
    if ev.task_count < owners.len() {
        return Some(Err(DataFusionError::Plan(format!(
            "this query's scan of {} reads series of {} nodes but its stage runs on {} \
             tasks; each node's series must be read on that node",
            scan.table_name(),
            owners.len(),
            ev.task_count
        ))));
    }
    let variants = (0..ev.task_count)
        .map(|i| {
            let node = owners[i % owners.len()].clone();
            ShardScanExec::variant(
                Arc::clone(&scan.engine),
                scan.what.clone(),
                owners.clone(),
                Some(node),
                i >= owners.len(),
                scan.partitions,
            )
            .map(|v| Arc::new(v) as Arc<dyn ExecutionPlan>)
        })
        .collect::<Result<Vec<_>>>();
    let leaf = variants.and_then(|v| DistributedLeafExec::try_new(Arc::clone(ev.plan), v));
    Some(leaf.map(|l| ScaleUpLeafNodeEventResponse::new(Arc::new(l))))
}

/// The nodes the tasks of a stage run on: a stage with distributed scans runs each
/// task on the node its scans read (the scans of one stage must agree); any other
/// stage runs on the nodes the query reads from, in turn.
pub fn route_tasks(ev: RouteTasksEvent) -> Option<Result<RouteTasksEventResponse>> {
    let cfg = ev.task_ctx.session_config();
    let cluster = cfg.get_extension::<Cluster>()?;
    Some(route(&ev, &cluster, cfg.get_extension::<Touched>()))
}

fn route(
    ev: &RouteTasksEvent,
    cluster: &Cluster,
    touched: Option<Arc<Touched>>,
) -> Result<RouteTasksEventResponse> {
    let mut nodes: Option<Vec<String>> = None;
    let mut conflict = false;
    ev.plan.apply(|node| {
        let Some(leaf) = node.downcast_ref::<DistributedLeafExec>() else {
            return Ok(TreeNodeRecursion::Continue);
        };
        if leaf.original().downcast_ref::<ShardScanExec>().is_none() {
            return Ok(TreeNodeRecursion::Continue);
        }
        let these: Vec<String> = leaf
            .variants()
            .iter()
            .filter_map(|v| v.downcast_ref::<ShardScanExec>())
            .filter_map(|v| v.node.clone())
            .collect();
        match &nodes {
            None => nodes = Some(these),
            Some(prev) if *prev == these => {}
            Some(_) => conflict = true,
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if conflict {
        return Err(DataFusionError::Plan(
            "this query reads, in one stage, tables whose series live on different nodes; \
             run it with cluster.sql = \"local\" on each node or split it"
                .into(),
        ));
    }
    let nodes = match nodes {
        Some(n) if n.len() == ev.task_count => n,
        Some(n) => {
            return Err(DataFusionError::Plan(format!(
                "a stage of {} tasks has scans split {} ways",
                ev.task_count,
                n.len()
            )));
        }
        None => {
            let mut pool: Vec<String> = touched
                .map(|t| {
                    let t = t.0.locked();
                    t.iter().cloned().collect()
                })
                .unwrap_or_default();
            if pool.is_empty() {
                pool = cluster
                    .owners_in_order()
                    .into_iter()
                    .map(str::to_string)
                    .collect();
            }
            (0..ev.task_count)
                .map(|i| pool[i % pool.len()].clone())
                .collect()
        }
    };
    let engine = ev.task_ctx.session_config().get_extension::<Engine>();
    let urls = nodes
        .iter()
        .map(|n| match &engine {
            Some(e) => serving_url(e, cluster, n),
            None => worker_url(cluster, n),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RouteTasksEventResponse::new(urls))
}

/// Where node `node`'s tasks run: the node itself, or, when the last probe of the
/// peers (or a call since) found it unreachable, the first of its read replicas that
/// was not. A replica that serves a node's series runs with that node's name
/// (`cluster.node`) and follows its store.
fn serving_url(engine: &Engine, cluster: &Cluster, node: &str) -> Result<Url> {
    let primary = cluster.uri(node).unwrap_or_default();
    if cluster.is_me(node) || !engine.peer_unreachable(primary) {
        return worker_url(cluster, node);
    }
    for uri in cluster.replicas(node) {
        if !engine.peer_unreachable(uri) {
            return url_of(node, uri);
        }
    }
    // Every replica failed too, or a probe made before it started said so: the node
    // itself is known down, so its first replica is the better guess.
    match cluster.replicas(node).first() {
        Some(uri) => url_of(node, uri),
        None => worker_url(cluster, node),
    }
}
