//! Arrow Flight front end: a thin adapter over the query layer (docs/flight.md).
//!
//! - [`ticket`]: the JSON ticket / descriptor grammar, parsed once into a read command.
//! - [`service`]: the `FlightService` impl: auth, stream admission, metrics.
//! - [`doget`]: range, latest-N and predicate streams from chunk memory.
//! - [`wire`]: DoGet's gRPC response built from zero-copy column chunks.
//! - [`doput`]: one client stream = one all-or-nothing write.
//! - [`putbody`]: how a DoPut request stream ended (only a clean end commits).
//! - [`info`]: GetFlightInfo, GetSchema, ListFlights.
//! - [`sql`]: Arrow Flight SQL (statements, prepared statements, metadata) next to
//!   the JSON tickets.
//! - [`actions`]: DoAction / ListActions (health, inventory, admin).
//! - [`local`]: the `local-read` action: a co-located client's plan of chunk files to
//!   map (Unix socket only).
//! - [`streams`]: the DoGet and DoPut stream pools, the stall watchdog, the gauge.
//! - [`conn`]: the connection cap and the idle-connection timeout.
//! - [`auth`]: bearer-token metadata checks.
//! - [`error`]: engine errors mapped to gRPC codes, once.
//!
//! Architecture invariant: nothing here touches files or formats directly; every
//! read and write goes through [`crate::query::Engine`].

pub mod actions;
pub mod auth;
pub mod conn;
pub mod doget;
pub mod doput;
pub mod error;
pub mod info;
pub mod local;
pub mod putbody;
pub mod service;
pub mod sql;
pub mod streams;
pub mod ticket;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::transport::Server;

use crate::query::Engine;

pub use service::FlightSvc;

/// How long streams still running at shutdown may take to finish before their
/// connections are dropped; a stalled client must not hold the process forever.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// HTTP/2 flow-control windows. The 64 KiB protocol default would cap a stream at
/// one window per round trip; a few MiB lets a large batch go out in one flight.
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// Largest HTTP/2 frame a client may send us (the protocol default is 16 KiB). Bigger
/// DATA frames mean fewer, larger socket reads on DoPut.
const MAX_FRAME_BYTES: u32 = 1 << 20;

/// The Flight service with FastK's message limits: decoding (DoPut batches) and
/// encoding (DoGet batches) both allow `flight.max_message_bytes`. DoGet is answered
/// by [`wire`] without copying column data; every other method by the generated
/// tonic server.
pub fn service(engine: Arc<Engine>) -> wire::FlightRoutes {
    let max = engine.config.flight.max_message_bytes;
    let svc = Arc::new(FlightSvc::new(engine));
    let generated = FlightServiceServer::from_arc(Arc::clone(&svc))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    wire::FlightRoutes::new(svc, generated)
}

/// Serves Flight on `listener` until `shutdown` resolves, then lets running calls
/// finish for at most [`SHUTDOWN_DRAIN`]. Connections are capped and closed when idle
/// ([`conn`]); HTTP/2 keep-alive pings find dead peers; each connection may open at
/// most `flight.max_streams_per_connection` calls at once.
pub async fn serve(
    engine: Arc<Engine>,
    listeners: Vec<conn::Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    let f = &engine.config.flight;
    let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let tls = engine.tls.get().cloned();
    let incoming = conn::incoming(listeners, f.max_connections, secs(f.idle_timeout_s), tls);
    let server = Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .http2_keepalive_interval(secs(f.keepalive_interval_s))
        .http2_keepalive_timeout(secs(f.keepalive_timeout_s))
        .max_concurrent_streams(f.max_streams_per_connection)
        .add_service(service(Arc::clone(&engine)))
        // Distributed SQL: the worker that runs other nodes' stages here, on the same
        // port, listeners and TLS (`query::sql::dist`).
        .add_optional_service(
            crate::query::sql::dist::cluster_of(&engine)
                .map(|_| crate::query::sql::dist::service(&engine)),
        )
        .serve_with_incoming_shutdown(incoming, signal);
    let drain_deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_DRAIN).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server => r.map_err(|e| format!("flight server: {e}")),
        () = drain_deadline => {
            tracing::warn!("flight streams still open {SHUTDOWN_DRAIN:?} after shutdown; closing them");
            Ok(())
        }
    }
}
