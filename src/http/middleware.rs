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

/// Most bytes drained from a request body nobody read before the connection is given
/// up instead.
const DRAIN_MAX_BYTES: usize = 8 << 20;

/// Keeps keep-alive connections usable after a rejection sent before the body was read
/// (401 from auth, 404 and 405 from routing, 413 from the body limit).
///
/// The story: hyper cannot reuse a connection whose request body is still unread, so it
/// closed such connections after the response without saying so, and a pooled client
/// (requests) then failed its *next* request with "Remote end closed connection without
/// response". Now a body the handler never touched is drained (up to a bound) so the
/// connection stays open, and when that is not possible the response says
/// `Connection: close` so the client does not reuse it.
pub async fn drain_unread_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let slot = Arc::new(std::sync::Mutex::new(Some(body)));
    let lazy = axum::body::Body::from_stream(LazyBody {
        slot: Arc::clone(&slot),
        inner: None,
    });
    let mut resp = next.run(Request::from_parts(parts, lazy)).await;
    if !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return resp;
    }
    let untouched = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    let drained = match untouched {
        Some(body) => axum::body::to_bytes(body, DRAIN_MAX_BYTES).await.is_ok(),
        None => resp.status() != axum::http::StatusCode::PAYLOAD_TOO_LARGE,
    };
    if !drained {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    resp
}

/// A body that takes the real one out of `slot` only when first polled, so the
/// middleware can tell afterwards whether anyone read it.
struct LazyBody {
    slot: Arc<std::sync::Mutex<Option<axum::body::Body>>>,
    inner: Option<axum::body::BodyDataStream>,
}

impl futures::Stream for LazyBody {
    type Item = Result<bytes::Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.inner.is_none() {
            let body = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            match body {
                Some(b) => self.inner = Some(b.into_data_stream()),
                None => return std::task::Poll::Ready(None),
            }
        }
        match self.inner.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_next(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}
