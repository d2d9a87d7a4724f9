//! The worker service every node of a distributed SQL cluster serves on its Flight
//! port: it runs the stages other nodes send it, in a session like a local query's
//! (the same memory budget, the same capped functions, FastK's codec), as the
//! principal of the bearer token the planning node passed on.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::execution::SessionState;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::memory::LazyMemoryExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_distributed::{
    DistributedExt, NetworkBroadcastExec, NetworkCoalesceExec, NetworkShuffleExec, Worker,
    WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse, WorkerQueryContext,
};

use super::exec::ShardScanExec;

use super::Remote;
use super::codec::FastkCodec;
use crate::auth::Access;
use crate::query::Engine;
use crate::query::sql::{funcs, runtime};

/// The gRPC service (`worker.WorkerService`) that runs other nodes' stages here.
pub fn service(
    engine: &Arc<Engine>,
) -> impl tower::Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<tonic::body::Body>,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + tonic::server::NamedService
+ Clone
+ Send
+ Sync
+ 'static {
    let e = Arc::clone(engine);
    Worker::from_session_builder(move |ctx: WorkerQueryContext| {
        let engine = Arc::clone(&e);
        async move { session(engine, ctx).await }
    })
    .into_worker_server()
}

async fn session(engine: Arc<Engine>, ctx: WorkerQueryContext) -> Result<SessionState> {
    if super::cluster_of(&engine).is_none() {
        return Err(DataFusionError::Plan(
            "this node does not run distributed SQL (cluster.sql = \"local\" or no shard map)"
                .into(),
        ));
    }
    let authorization = ctx
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = engine
        .auth
        .authorize(authorization, None, Access::Read)
        .await
        .map_err(Remote::error)?;
    engine
        .metrics
        .sql_worker_tasks
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (env, pool) = runtime(&engine)?;
    let pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool> = pool;
    let mut builder = ctx.builder.with_runtime_env(env);
    let cfg = builder.config().get_or_insert_with(SessionConfig::default);
    cfg.set_extension(Arc::new(principal));
    cfg.set_distributed_user_codec(FastkCodec::new(&engine));
    // A stage here reads the stages of other nodes through the same channels (TLS,
    // connect limit, errors that name the node) as the node that planned the query.
    cfg.set_distributed_channel_resolver(super::channel::Channels::of(&engine));
    cfg.set_distributed_worker_plan_rewrite_handler(only_fastk_leaves);
    let sctx = SessionContext::new_with_state(builder.build());
    funcs::install(&sctx, &pool, engine.config.sql.function_output_cap());
    Ok(sctx.state())
}

/// A stage sent to this node may read only what a FastK query reads: its own scans,
/// other stages, and rows the plan itself holds (literals, `generate_series`). A
/// decoded plan with any other leaf (a file scan, above all) is refused, so a client
/// that can reach the worker cannot make it read files of the host.
fn only_fastk_leaves(ev: WorkerPlanRewriteEvent) -> Result<WorkerPlanRewriteEventResponse> {
    let mut refused: Option<String> = None;
    ev.plan.apply(|node| {
        if node.children().is_empty() && !allowed_leaf(node) {
            refused = Some(node.name().to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(name) = refused {
        return Err(DataFusionError::Plan(format!(
            "a distributed stage may read only FastK's tables and other stages; a {name} \
             leaf is refused"
        )));
    }
    Ok(WorkerPlanRewriteEventResponse::new(ev.plan))
}

fn allowed_leaf(node: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(d) = node.downcast_ref::<DataSourceExec>() {
        return d
            .data_source()
            .downcast_ref::<MemorySourceConfig>()
            .is_some();
    }
    node.downcast_ref::<ShardScanExec>().is_some()
        || node.downcast_ref::<NetworkShuffleExec>().is_some()
        || node.downcast_ref::<NetworkCoalesceExec>().is_some()
        || node.downcast_ref::<NetworkBroadcastExec>().is_some()
        || node.downcast_ref::<EmptyExec>().is_some()
        || node.downcast_ref::<PlaceholderRowExec>().is_some()
        || node.downcast_ref::<LazyMemoryExec>().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;

    fn check(plan: Arc<dyn ExecutionPlan>) -> Result<()> {
        let cfg = SessionConfig::new();
        only_fastk_leaves(WorkerPlanRewriteEvent {
            plan,
            session_config: &cfg,
        })
        .map(|_| ())
    }

    #[test]
    fn a_stage_with_a_leaf_other_than_fastks_is_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let empty: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(Arc::clone(&schema)));
        assert!(check(Arc::new(CoalescePartitionsExec::new(empty))).is_ok());
        // A leaf the worker does not know, standing for a file scan: refused.
        let work_table: Arc<dyn ExecutionPlan> = Arc::new(
            datafusion::physical_plan::work_table::WorkTableExec::new("t".into(), schema, None)
                .expect("a work table"),
        );
        let e = check(Arc::new(CoalescePartitionsExec::new(work_table))).unwrap_err();
        assert!(e.to_string().contains("WorkTableExec"), "{e}");
    }
}
