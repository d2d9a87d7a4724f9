//! HTTP JSON front end (axum): a thin adapter over [`crate::query::Engine`].
//!
//! # Layout
//! - [`mod@self`]: the router: routes, fallback, docs and layers.
//! - [`error`]: [`error::AppError`], the one mapping of error kinds to HTTP, and the
//!   safety net that gives every non-JSON error the contract's body.
//! - [`extract`]: body, path, query and `If-Match` extractors with contract errors;
//!   [`extract::blocking`] runs engine calls off the async workers.
//! - [`auth`]: bearer-token extractors (constant-time comparison).
//! - [`kline`], [`scalar`], [`admin`], [`registries`], [`system`]: handlers, each
//!   annotated with its OpenAPI operation; [`series`] holds what kline and scalar share.
//! - [`market`]: batch reads of many series, the aligned view, coverage and gaps.
//! - [`many`]: writes of many series in one request (one all-or-nothing unit).
//! - [`sql`]: `POST /v1/sql`, JSON or Arrow IPC answers.
//! - [`snapshots`]: named snapshots: create, list, show, delete.
//! - [`derive`]: derive rules (materialized resamples): create, list, delete.
//! - [`console`]: the web console at `/console`, static and embedded (docs/console.md).
//! - [`json`]: read pages serialized straight from the mapped columns.
//! - [`types`]: HTTP-only bodies and parameters.
//! - [`openapi`]: the document's info, security scheme and shared error responses.
//! - [`middleware`]: metrics, read timeouts, request ids, tracing, CORS, gzip, and
//!   the early-rejection rules (413 on a declared length, drain or close).
//! - [`serve`]: the accept loop: header read and idle timeouts, the connection cap.
//!
//! Architecture invariant: handlers translate the wire format and call the engine;
//! no storage or registry logic lives here.

pub mod admin;
pub mod auth;
pub mod console;
pub mod derive;
pub mod error;
pub mod extract;
pub mod json;
pub mod kline;
pub mod many;
pub mod market;
pub mod middleware;
pub mod openapi;
pub mod registries;
pub mod scalar;
pub mod schema;
pub mod series;
pub mod serve;
pub mod snapshots;
pub mod sql;
pub mod system;
pub mod tick;
pub mod types;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::query::Engine;

/// Where the interactive docs are served (assets are embedded: no internet needed).
pub const DOCS_PATH: &str = "/docs";
/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Every documented route. The document is collected from the same registrations,
/// so a route cannot exist without its operation or the other way round.
fn api_routes() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::inventory))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi_json))
        .routes(routes!(kline::register, kline::list))
        .routes(routes!(kline::get, kline::delete))
        .routes(routes!(kline::write, kline::read, kline::delete_records))
        .routes(routes!(kline::latest))
        .routes(routes!(kline::versions))
        .routes(routes!(many::write_kline))
        .routes(routes!(many::write_scalar))
        .routes(routes!(many::write_ticks))
        .routes(routes!(many::register_kline))
        .routes(routes!(many::register_scalar))
        .routes(routes!(market::kline_batch))
        .routes(routes!(market::aligned))
        .routes(routes!(market::kline_coverage))
        .routes(routes!(scalar::register, scalar::list))
        .routes(routes!(scalar::get, scalar::delete))
        .routes(routes!(scalar::write, scalar::read, scalar::delete_records))
        .routes(routes!(scalar::latest))
        .routes(routes!(scalar::versions))
        .routes(routes!(market::scalar_batch))
        .routes(routes!(market::scalar_coverage))
        .routes(routes!(scalar::query))
        .routes(routes!(sql::query))
        .routes(routes!(admin::validate))
        .routes(routes!(admin::scrub))
        .routes(routes!(admin::repair))
        .routes(routes!(admin::rebuild_manifest))
        .routes(routes!(admin::compact))
        .routes(routes!(registries::put_dataset, registries::list_datasets))
        .routes(routes!(registries::put_feature, registries::list_features))
        .routes(routes!(registries::put_factor, registries::list_factors))
        .routes(routes!(snapshots::create, snapshots::list))
        .routes(routes!(derive::create, derive::list))
        .routes(routes!(derive::delete))
        .routes(routes!(snapshots::get, snapshots::delete))
        .routes(routes!(tick::register, tick::list))
        .routes(routes!(tick::get, tick::delete))
        .routes(routes!(tick::write, tick::read, tick::delete_records))
        .routes(routes!(tick::latest))
        .routes(routes!(tick::versions))
}

/// The OpenAPI document of [`router`], complete.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_routes().split_for_parts();
    openapi::finish(&mut doc);
    doc
}

/// The document exactly as `/openapi.json` serves it and `openapi/openapi.json` holds it.
pub fn document_json() -> String {
    openapi::to_json(&document())
}

/// The HTTP router over `engine`; tests call it with `oneshot`, no socket needed.
pub fn router(engine: Arc<Engine>) -> Router {
    let (api, mut doc) = api_routes().split_for_parts();
    openapi::finish(&mut doc);
    let doc_json = system::OpenApiJson(Bytes::from(openapi::to_json(&doc)));
    let docs: Router<Arc<Engine>> = SwaggerUi::new(DOCS_PATH)
        .config(utoipa_swagger_ui::Config::from(OPENAPI_PATH))
        .into();
    let cfg = &engine.config.http;
    // `Router::layer` wraps each route (and the fallback) separately, so these run
    // after routing and the metrics layer sees the matched route template. The last
    // layer added is the outermost.
    let app = api
        .merge(docs)
        .merge(console::routes())
        // Not an operation of its own: answers any other admin action name with a 400.
        .route("/v1/admin/{action}", axum::routing::post(admin::by_name))
        .fallback(error::not_found)
        .layer(Extension(doc_json))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&engine),
            middleware::read_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&engine),
            middleware::track,
        ))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&engine),
            middleware::body_rules,
        ));
    let app = middleware::outer_layers(app, cfg);
    app.with_state(engine)
}
