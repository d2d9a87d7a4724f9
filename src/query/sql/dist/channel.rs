//! Connections from the node that plans a query to the workers of the other nodes:
//! one per node, kept for the process; over TLS with this node's certificate when its
//! listeners use TLS; a node that cannot be reached within the connect limit is an
//! error that names it.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{
    ChannelResolver, CoordinatorToWorkerMsg, ExecuteTaskRequest, GetWorkerInfoRequest,
    GetWorkerInfoResponse, SetPlanRequest, WorkerChannel, WorkerToCoordinatorMsg,
};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use http::HeaderMap;
use tonic::transport::Channel;
use url::Url;

use crate::error::{Error, ErrorKind};
use crate::query::Engine;

/// How long a connection to another node's worker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most nodes whose connections are kept.
const MAX_CHANNELS: usize = 1024;

/// The open channels of a process, by worker URL.
pub type OpenChannels = Arc<Mutex<HashMap<Url, Channel>>>;

/// The channels of this process, by worker URL.
#[derive(Clone)]
pub struct Channels {
    engine: Arc<Engine>,
    open: OpenChannels,
}

impl Channels {
    /// The channels of `engine`'s process (one set, shared by every query).
    pub fn of(engine: &Arc<Engine>) -> Channels {
        let open = Arc::clone(
            engine
                .dist_channels
                .get_or_init(|| Arc::new(Mutex::new(HashMap::new()))),
        );
        Channels {
            engine: Arc::clone(engine),
            open,
        }
    }

    /// The name of the node at `url`, for errors.
    fn node_of(&self, url: &Url) -> String {
        self.peer_of(url)
            .map_or_else(|| url.to_string(), |(n, _)| format!("{n} ({url})"))
    }

    /// The shard map's name and URI of the node (or of the node's replica) whose
    /// worker is at `url`.
    fn peer_of(&self, url: &Url) -> Option<(String, String)> {
        let cluster = self.engine.cluster.get()?;
        for node in cluster.owners_in_order() {
            let uris = cluster.uri(node).into_iter();
            for uri in uris.chain(cluster.replicas(node).iter().map(String::as_str)) {
                if super::route::url_of(node, uri).is_ok_and(|u| u == *url) {
                    return Some((node.to_string(), uri.to_string()));
                }
            }
        }
        None
    }

    async fn channel(&self, url: &Url) -> Result<Channel> {
        if let Some(c) = self.lock().get(url) {
            return Ok(c.clone());
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            if let Some((node, uri)) = self.peer_of(url) {
                self.engine
                    .note_peer_failed(crate::query::now_ms(), format!("{node} ({uri})"));
            }
            super::Remote::error(Error::new(
                ErrorKind::Unavailable,
                format!("shard node {} did not answer: {e}", self.node_of(url)),
            ))
        };
        let tls = self.engine.tls.get().cloned();
        if url.scheme() == "https" && tls.is_none() {
            return Err(unavailable(
                &"it speaks TLS and this node has no [tls] to reach it with: give every \
                  node of the cluster the same tls.* settings",
            ));
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port().map_or(String::new(), |p| format!(":{p}"));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{host}{port}"))
            .map_err(|e| unavailable(&e))?;
        if let Some(t) = &tls {
            endpoint = endpoint
                .tls_config(t.client())
                .map_err(|e| unavailable(&e))?;
        }
        // A node that stops answering (hung, stopped, cut off) is found by HTTP/2 pings:
        // one every half of the forward timeout, each given the other half, so a
        // silent node fails its calls within about `cluster.forward_timeout_s`. A
        // node that is busy still answers pings.
        let half = half_of(self.engine.config.cluster.forward_timeout_s);
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(half)
            .keep_alive_timeout(half)
            .connect()
            .await
            .map_err(|e| unavailable(&e))?;
        let mut open = self.lock();
        if open.len() >= MAX_CHANNELS {
            open.clear();
        }
        open.insert(url.clone(), channel.clone());
        Ok(channel)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Url, Channel>> {
        self.open.locked()
    }
}

#[async_trait]
impl ChannelResolver for Channels {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>> {
        let channel = self.channel(url).await?;
        let (node, uri) = self
            .peer_of(url)
            .unwrap_or_else(|| (url.to_string(), url.to_string()));
        Ok(Box::new(Named {
            inner: create_worker_client(BoxCloneSyncChannel::new(channel)),
            node: Arc::new(NodeName {
                node,
                uri,
                engine: Arc::clone(&self.engine),
            }),
        }))
    }
}

/// Half of `secs` seconds, at least one second.
fn half_of(secs: u64) -> Duration {
    Duration::from_millis((secs.saturating_mul(1000) / 2).max(1000))
}

/// The node a worker client talks to, for its errors.
struct NodeName {
    node: String,
    uri: String,
    engine: Arc<Engine>,
}

impl NodeName {
    /// `e` named after this node when it says the node did not answer (the call's
    /// transport failed, or its pings went unanswered), and the node noted as failed
    /// so that the next query moves to a replica if the map lists one. An error the
    /// node raised itself keeps its kind; one that already names a node (a third node
    /// that this one could not reach) is passed on as it is. Either stays tagged
    /// ([`super::Remote`]): this client may run in a worker whose stage's errors cross
    /// the network again.
    fn name(&self, e: DataFusionError) -> DataFusionError {
        let ours = crate::query::sql::df_error(e);
        if ours.kind != ErrorKind::Unavailable || ours.message.contains("shard node ") {
            return super::Remote::error(ours);
        }
        self.engine.note_peer_failed(
            crate::query::now_ms(),
            format!("{} ({})", self.node, self.uri),
        );
        let detail = ours
            .message
            .strip_prefix("a node of the distributed query did not answer: ")
            .unwrap_or(&ours.message);
        super::Remote::error(Error::new(
            ErrorKind::Unavailable,
            format!(
                "shard node {} ({}) did not answer: {detail}",
                self.node, self.uri
            ),
        ))
    }

    fn stream<T: Send + 'static>(
        self: &Arc<Self>,
        s: BoxStream<'static, Result<T>>,
    ) -> BoxStream<'static, Result<T>> {
        let me = Arc::clone(self);
        s.map_err(move |e| me.name(e)).boxed()
    }
}

/// A worker client whose errors name the node it talks to.
struct Named {
    inner: Box<dyn WorkerChannel>,
    node: Arc<NodeName>,
}

#[async_trait]
impl WorkerChannel for Named {
    async fn coordinator_channel(
        &mut self,
        headers: HeaderMap,
        set_plan_request: SetPlanRequest,
        c2w_stream: BoxStream<'static, CoordinatorToWorkerMsg>,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<BoxStream<'static, Result<WorkerToCoordinatorMsg>>> {
        let s = self
            .inner
            .coordinator_channel(headers, set_plan_request, c2w_stream, metrics, task_ctx)
            .await
            .map_err(|e| self.node.name(e))?;
        Ok(self.node.stream(s))
    }

    async fn execute_task(
        &mut self,
        headers: HeaderMap,
        request: ExecuteTaskRequest,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<Vec<BoxStream<'static, Result<RecordBatch>>>> {
        let streams = self
            .inner
            .execute_task(headers, request, metrics, task_ctx)
            .await
            .map_err(|e| self.node.name(e))?;
        Ok(streams.into_iter().map(|s| self.node.stream(s)).collect())
    }

    async fn get_worker_info(
        &mut self,
        request: GetWorkerInfoRequest,
    ) -> Result<GetWorkerInfoResponse> {
        self.inner
            .get_worker_info(request)
            .await
            .map_err(|e| self.node.name(e))
    }
}
