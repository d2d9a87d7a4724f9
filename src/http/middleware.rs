//! Cross-cutting layers: per-route metrics, read timeouts, request ids and tracing,
//! CORS and gzip.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::error::AppError;
use crate::config::HttpConfig;
use crate::error::ErrorKind;
use crate::query::Engine;

/// Label for requests no route matched, so unknown paths cannot grow the metric set.
const UNMATCHED_ROUTE: &str = "unmatched";

/// Records every request's latency by method, route template and status.
pub async fn track(State(engine): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let resp = next.run(req).await;
    engine.metrics.observe_http(
        method.as_str(),
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// Bounds reads by `http.request_timeout_s` (0 disables it). Writes are not cut off:
/// a write whose response was abandoned could still commit, and the contract promises
/// that an error response means nothing became visible.
pub async fn read_timeout(State(engine): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let secs = engine.config.http.request_timeout_s;
    if secs == 0 || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    match tokio::time::timeout(Duration::from_secs(secs), next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => AppError::new(
            ErrorKind::Unavailable,
            format!(
                "the request took longer than {secs} s (http.request_timeout_s); \
                 ask for a smaller range or limit"
            ),
        )
        .into_response(),
    }
}

/// Adds request ids (an incoming `x-request-id` is kept, otherwise a UUID is set and
/// returned), a tracing span per request carrying that id, CORS and gzip.
pub fn outer_layers<S>(router: Router<S>, cfg: &HttpConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = router;
    if cfg.gzip {
        router = router.layer(CompressionLayer::new().gzip(true));
    }
    if let Some(cors) = cors_layer(&cfg.cors_origins) {
        router = router.layer(cors);
    }
    let request_id = HeaderName::from_static("x-request-id");
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request| {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info_span!("http", method = %req.method(), uri = %req.uri(), request_id = %id)
    });
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(trace)
            .layer(PropagateRequestIdLayer::new(request_id)),
    )
}

/// CORS from `http.cors_origins`: empty is off, `"*"` allows any origin, otherwise
/// the listed origins (entries that are not valid header values are logged and skipped).
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(Any)
        .expose_headers([HeaderName::from_static("x-request-id")]);
    if origins.iter().any(|o| o == "*") {
        return Some(base.allow_origin(Any));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "http.cors_origins entry is not a valid origin; skipped");
                None
            }
        })
        .collect();
    Some(base.allow_origin(list))
}
