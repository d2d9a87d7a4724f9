//! HTTP JSON front end (axum). Placeholder router until the full API lands.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};

use crate::query::Engine;

/// The HTTP router over `engine`; tests call it with `oneshot`, no socket needed.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(engine)
}

async fn health(State(engine): State<Arc<Engine>>) -> Json<crate::query::types::Health> {
    Json(engine.health())
}
