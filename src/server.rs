//! Runs the HTTP and Flight listeners over one engine, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::query::Engine;

/// A running server: its bound addresses, the engine, and a way to stop it.
pub struct Running {
    pub http_addr: SocketAddr,
    pub flight_addr: SocketAddr,
    pub engine: Arc<Engine>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and waits for both listeners.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits until both listeners have stopped (after [`Running::stop_handle`] fired).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// A sender that stops the server when `true` is sent.
    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Error starting the server; the message is for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Opens the engine and binds both listeners (port 0 picks a free port; the bound
/// address is logged and returned).
///
/// Long on purpose: the start-up order (config, engine, TLS, both listeners, the
/// background tasks, the shutdown wiring) is read top to bottom as one sequence.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let http_addr: SocketAddr = config
        .http
        .addr
        .parse()
        .map_err(|e| StartError(format!("http.addr: {e}")))?;
    let flight_addr: SocketAddr = config
        .flight
        .addr
        .parse()
        .map_err(|e| StartError(format!("flight.addr: {e}")))?;
    // Certificates and tokens before the store: a mistake in them is found at once.
    let tls = crate::tls::Tls::load(&config.tls).map_err(StartError)?;
    let engine = tokio::task::spawn_blocking(move || Engine::open(config))
        .await
        .map_err(|e| StartError(e.to_string()))?
        .map_err(|e| StartError(format!("cannot open the store: {}", e.message)))?;
    engine.auth.load().map_err(|e| StartError(e.message))?;
    if let Some(t) = &tls {
        let _ = engine.tls.set(Arc::clone(t));
    }
    let http = TcpListener::bind(http_addr)
        .await
        .map_err(|e| StartError(format!("cannot bind HTTP on {http_addr}: {e}")))?;
    let flight = TcpListener::bind(flight_addr)
        .await
        .map_err(|e| StartError(format!("cannot bind Flight on {flight_addr}: {e}")))?;
    let http_addr = http.local_addr().map_err(|e| StartError(e.to_string()))?;
    let flight_addr = flight.local_addr().map_err(|e| StartError(e.to_string()))?;
    let on = tls.is_some();
    tracing::info!(tls = on, "http listening on {http_addr}");
    tracing::info!(tls = on, "flight listening on {flight_addr}");
    if let Some(t) = &tls {
        tracing::info!(mutual = t.mutual(), "TLS on both listeners (tls.*)");
    }
    if engine.auth.enabled() {
        tracing::info!(
            protect_reads = engine.config.auth.protect_reads,
            tokens_file = !engine.config.auth.tokens_file.is_empty(),
            "tokens required (auth.*)"
        );
    }
    let mut listeners = vec![crate::flight::conn::Listener::Tcp(flight)];
    let socket = engine.config.flight.unix_socket.clone();
    if !socket.is_empty() {
        let unix = bind_unix(&socket)?;
        tracing::info!("flight listening on unix socket {socket}");
        listeners.push(crate::flight::conn::Listener::Unix(unix));
    }
    let (stop, stop_rx) = watch::channel(false);
    let router = crate::http::router(Arc::clone(&engine));
    let limits = crate::http::serve::Limits::from_config(&engine.config.http);
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout_s = limits.header_read_timeout.as_secs(),
        keep_alive_idle_s = limits.keep_alive_idle.as_secs(),
        "http connection limits"
    );
    let http_task = tokio::spawn(crate::http::serve::serve(
        http,
        router,
        limits,
        tls.clone(),
        stop_rx.clone(),
    ));
    let auth_task = tokio::spawn(crate::auth::watch(
        Arc::clone(&engine.auth),
        stop_rx.clone(),
    ));
    let tls_task = tokio::spawn({
        let tls = tls.clone();
        let interval = std::time::Duration::from_secs(engine.config.tls.reload_interval_s);
        let stop = stop_rx.clone();
        async move {
            if let Some(t) = tls {
                crate::tls::watch(t, interval, stop).await;
            }
        }
    });
    let retention_task = tokio::spawn(retention_loop(Arc::clone(&engine), stop_rx.clone()));
    let compress_task = tokio::spawn(compress_loop(Arc::clone(&engine), stop_rx.clone()));
    let replica_task = tokio::spawn(replica_loop(Arc::clone(&engine), stop_rx.clone()));
    let memory_task = tokio::spawn(memory_loop(Arc::clone(&engine), stop_rx.clone()));
    let derive_task = tokio::spawn(derive_loop(Arc::clone(&engine), stop_rx.clone()));
    let peer_task = tokio::spawn(peer_loop(Arc::clone(&engine), stop_rx.clone()));
    let sql_guard_task = tokio::spawn(crate::query::sql::watch::watch(
        Arc::clone(&engine.sql.running),
        stop_rx.clone(),
    ));
    tracing::info!(
        limit = engine.sql.running.limit(),
        "sql: process memory guard (sql.process_memory_limit_bytes)"
    );
    let mut rx = stop_rx;
    let flight_engine = Arc::clone(&engine);
    let flight_task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = crate::flight::serve(flight_engine, listeners, shutdown).await {
            tracing::error!(error = %e, "flight server failed");
        }
        if !socket.is_empty() {
            // The socket file outlives its listener; a clean stop leaves none behind.
            let _ = std::fs::remove_file(&socket);
        }
    });
    Ok(Running {
        http_addr,
        flight_addr,
        engine,
        stop,
        tasks: vec![
            http_task,
            flight_task,
            retention_task,
            compress_task,
            replica_task,
            memory_task,
            derive_task,
            peer_task,
            sql_guard_task,
            auth_task,
            tls_task,
        ],
    })
}

/// How often a node of a cluster probes its peers, and how long a connection may take.
const PEER_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const PEER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// On a node of a cluster: every few seconds, the shard map's file read again (when
/// the map comes from one), then a TCP connection to each other node and replica of
/// the map, so `/health` says which it cannot reach.
async fn peer_loop(engine: Arc<Engine>, mut stop: watch::Receiver<bool>) {
    if engine.cluster.get().is_none() {
        return;
    }
    let mut tick = tokio::time::interval(PEER_PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let refused_before = engine.cluster.refused();
        match engine.cluster.reload() {
            Ok(true) => {
                tracing::info!("cluster: the shard map file changed; serving with the new map")
            }
            Ok(false) => {}
            // Said once per reason, not at every probe.
            Err(why) if refused_before.as_ref() != Some(&why) => {
                tracing::warn!(%why, "cluster: the shard map file was refused; the map in use stays")
            }
            Err(_) => {}
        }
        let Some(cluster) = engine.cluster.get() else {
            return;
        };
        let peers = cluster.peers();
        let probes = peers.iter().map(|(name, uri)| async move {
            let host = uri.split_once("://").map_or(uri.as_str(), |(_, rest)| rest);
            let connect = tokio::net::TcpStream::connect(host);
            match tokio::time::timeout(PEER_CONNECT_TIMEOUT, connect).await {
                Ok(Ok(_)) => None,
                _ => Some(format!("{name} ({uri})")),
            }
        });
        let unreachable: Vec<String> = futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        engine.note_peer_probe(crate::query::now_ms(), unreachable);
    }
}

/// Runs `pass` on a blocking thread at every tick, the first at `first`, until the
/// server stops (a pass that panics is logged as `what` failed; the next tick runs
/// it again). A pass longer than `every` delays the next tick rather than piling up.
async fn pass_loop(
    first: tokio::time::Instant,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
    pass: impl Fn() + Send + Sync + 'static,
) {
    let pass = Arc::new(pass);
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let p = Arc::clone(&pass);
        if let Err(e) = tokio::task::spawn_blocking(move || p()).await {
            tracing::error!(error = %e, "{what} failed");
        }
    }
}

/// Brings the derived series up to date with their bases every second (docs/derived.md);
/// reads are exact meanwhile, the pass only makes them cheaper.
async fn derive_loop(engine: Arc<Engine>, stop: watch::Receiver<bool>) {
    let every = crate::query::derive::PASS_EVERY;
    pass_loop(
        tokio::time::Instant::now(),
        every,
        stop,
        "derive pass",
        move || {
            engine.derive_pass();
        },
    )
    .await
}

/// Runs a retention pass every `storage.retention_interval_s` (the first one right
/// after the start) until the server stops. Each pass runs on a blocking thread.
async fn retention_loop(engine: Arc<Engine>, stop: watch::Receiver<bool>) {
    let every = std::time::Duration::from_secs(engine.config.storage.retention_interval_s);
    pass_loop(
        tokio::time::Instant::now(),
        every,
        stop,
        "retention pass",
        move || {
            engine.enforce_retention(crate::query::now_ms());
        },
    )
    .await
}

/// Compresses sealed months every `storage.compress_interval_s` (the first pass one
/// interval after the start, so a restart does not begin with a burst of rewrites).
async fn compress_loop(engine: Arc<Engine>, stop: watch::Receiver<bool>) {
    if engine.config.storage.compression == "none" {
        return;
    }
    let every = std::time::Duration::from_secs(engine.config.storage.compress_interval_s);
    let first = tokio::time::Instant::now() + every;
    pass_loop(first, every, stop, "compression pass", move || {
        engine.compress_sealed(crate::query::now_ms());
    })
    .await
}

/// Every second: trims the decompressed months back to `storage.decompressed_cache_bytes`
/// (reads that held more at once leave them cached when they end), and while less than
/// `storage.release_below_available_percent` of the host's (or cgroup's) memory is
/// left, drops every idle one: process memory the kernel cannot reclaim, cheap to
/// decompress again (`storage::pressure`).
async fn memory_loop(engine: Arc<Engine>, mut stop: watch::Receiver<bool>) {
    let percent = engine.config.storage.release_below_available_percent;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (images, bytes) = engine.store.options().map_cache.trim_to_budget();
        if images > 0 {
            tracing::debug!(images, bytes, "decompressed months trimmed to the budget");
        }
        if percent == 0 {
            continue;
        }
        let Some(memory) = crate::storage::pressure::Memory::now() else {
            continue;
        };
        if memory.under_pressure(percent) {
            let (images, bytes) = engine.store.options().map_cache.release_decompressed();
            if images > 0 {
                tracing::warn!(
                    images,
                    bytes,
                    available_bytes = memory.available_bytes,
                    total_bytes = memory.total_bytes,
                    "memory is short: idle decompressed months released"
                );
            }
        }
    }
}

/// Publishes to `replica.publish_to` every `publish_interval_s`, or follows
/// `replica.follow_from` every `poll_interval_s` (first pass at once), until the
/// server stops; neither when both are empty (src/replica, docs/scale-out.md).
async fn replica_loop(engine: Arc<Engine>, mut stop: watch::Receiver<bool>) {
    let c = engine.config.replica.clone();
    let (url, every) = match (c.publish_to.is_empty(), c.follow_from.is_empty()) {
        (false, _) => (c.publish_to.clone(), c.publish_interval_s),
        (true, false) => (c.follow_from.clone(), c.poll_interval_s),
        (true, true) => return,
    };
    let role = if c.publish_to.is_empty() {
        "follower"
    } else {
        "publisher"
    };
    let grace = std::time::Duration::from_secs(c.gc_grace_s);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Opened at the first pass, and again at every pass until it opens: a store that
    // cannot be opened is a failed pass /health reports, not a silent stop.
    let mut workers = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if workers.is_none() {
            match crate::replica::Bucket::open(&url) {
                Ok(bucket) => {
                    workers = Some((
                        crate::replica::Publisher::new(bucket.clone(), grace, c.concurrency),
                        crate::replica::Follower::new(bucket, c.concurrency),
                    ));
                }
                Err(why) => {
                    tracing::error!(error = %why, "replica: cannot open the object store");
                    let why = format!("cannot open the object store: {why}");
                    engine.note_replica_pass(role, crate::query::now_ms(), Err(why));
                    continue;
                }
            }
        }
        let (publisher, follower) = workers.as_ref().expect("opened above");
        if !c.publish_to.is_empty() {
            let outcome = match publisher.publish_once(&engine).await {
                Ok(r) => {
                    if r.published
                        + r.deleted
                        + r.failed
                        + r.snapshots_published
                        + r.snapshots_deleted
                        > 0
                    {
                        tracing::info!(report = ?r, "replica: published");
                    }
                    Ok((r.failed, r.first_failure))
                }
                Err(why) => {
                    tracing::warn!(error = %why, "replica: publication pass failed");
                    Err(why)
                }
            };
            engine.note_replica_pass(role, crate::query::now_ms(), outcome);
            continue;
        }
        let outcome = match follower.poll_once(&engine).await {
            Ok(r) => {
                if r.changed_catalog()
                    && let Err(e) = engine.reconcile_catalog()
                {
                    tracing::warn!(error = %e.message, "replica: catalog reconcile failed");
                }
                if r.applied + r.deleted + r.failed + r.snapshots_applied + r.snapshots_deleted > 0
                {
                    tracing::info!(report = ?r, "replica: followed");
                }
                if r.failed == 0
                    && let Some(t) = r.published_ms
                {
                    engine.note_replica_published(t);
                }
                Ok((r.failed, r.first_failure))
            }
            Err(why) => {
                tracing::warn!(error = %why, "replica: poll failed");
                Err(why)
            }
        };
        engine.note_replica_pass(role, crate::query::now_ms(), outcome);
    }
}

/// Binds the Flight Unix socket at `path`. A socket file left by a server that is no
/// longer running (nothing accepts on it) is replaced; a live one, or any other
/// kind of file, is an error rather than something to remove.
fn bind_unix(path: &str) -> Result<tokio::net::UnixListener, StartError> {
    use std::os::unix::fs::FileTypeExt;
    let err =
        |e: std::io::Error| StartError(format!("cannot bind the Flight unix socket {path}: {e}"));
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(StartError(format!(
                "flight.unix_socket {path} exists and is not a socket; remove it or choose another path"
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(StartError(format!(
                "flight.unix_socket {path} is in use by a running server"
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    tokio::net::UnixListener::bind(path).map_err(err)
}

/// Serves until Ctrl-C or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), StartError> {
    let running = start(config).await?;
    let stop = running.stop_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop.send(true);
    });
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
