//! Arrow Flight front end. Placeholder until the full service lands.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::query::Engine;

/// Serves Flight on `listener` until `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let _ = (engine, listener);
    shutdown.await;
    Ok(())
}
