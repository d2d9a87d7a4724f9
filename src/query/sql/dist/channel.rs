//! Connections from the node that plans a query to the workers of the other nodes:
//! one per node, kept for the process; over TLS with this node's certificate when its
//! listeners use TLS; a node that cannot be reached within the connect limit is an
//! error that names it.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::{DataFusionError, Result};
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{ChannelResolver, WorkerChannel};
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
        let Some(cluster) = self.engine.cluster.get() else {
            return url.to_string();
        };
        cluster
            .owners_in_order()
            .into_iter()
            .find(|n| super::route::worker_url(&cluster, n).is_ok_and(|u| u == *url))
            .map_or_else(|| url.to_string(), |n| format!("{n} ({url})"))
    }

    async fn channel(&self, url: &Url) -> Result<Channel> {
        if let Some(c) = self.lock().get(url) {
            return Ok(c.clone());
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            DataFusionError::External(Box::new(Error::new(
                ErrorKind::Unavailable,
                format!("shard node {} did not answer: {e}", self.node_of(url)),
            )))
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
        let timeout = Duration::from_secs(self.engine.config.cluster.forward_timeout_s);
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(timeout)
            .keep_alive_timeout(timeout)
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
        Ok(create_worker_client(BoxCloneSyncChannel::new(channel)))
    }
}
