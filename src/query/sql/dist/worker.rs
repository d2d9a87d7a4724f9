//! The worker service every node of a distributed SQL cluster serves on its Flight
//! port: it runs the stages other nodes send it, in a session like a local query's
//! (the same memory budget, the same capped functions, FastK's codec), as the
//! principal of the bearer token the planning node passed on.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_distributed::{DistributedExt, Worker, WorkerQueryContext};

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
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
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
    let sctx = SessionContext::new_with_state(builder.build());
    funcs::install(&sctx, &pool, engine.config.sql.function_output_cap());
    Ok(sctx.state())
}
