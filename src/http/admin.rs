//! Admin actions. Each action is its own path (and operation in the document) so
//! generated clients get one method per action; any other action is an unknown
//! route (404 with the contract's body). The body may be empty: `{}` is assumed.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::auth::WriteAccess;
use super::error::AppError;
use super::extract::{OptionalJsonBody, blocking};
use crate::query::Engine;
use crate::query::types::{AdminReport, AdminRequest};

async fn run(
    engine: Arc<Engine>,
    action: &'static str,
    req: AdminRequest,
) -> Result<Json<AdminReport>, AppError> {
    blocking(move || engine.admin(action, &req)).await.map(Json)
}

/// Validate the store
///
/// Checks manifests, chunk headers and the registry; with `deep` also every checksum.
/// Changes nothing.
#[utoipa::path(post, path = "/v1/admin/validate", tag = "admin", operation_id = "admin_validate",
    request_body(content = Option<AdminRequest>, description = "Optional; an empty body means every series."),
    security((), ("bearer" = [])),
    responses((status = 200, description = "The report: each finding, and `clean` when there is none.", body = AdminReport)))]
pub async fn validate(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    run(engine, "validate", req).await
}

/// Scrub the store
///
/// A deep validation: reads every chunk and verifies every checksum. Changes nothing.
#[utoipa::path(post, path = "/v1/admin/scrub", tag = "admin", operation_id = "admin_scrub",
    request_body(content = Option<AdminRequest>, description = "Optional; an empty body means every series."),
    security((), ("bearer" = [])),
    responses((status = 200, description = "The report: each finding, and `clean` when there is none.", body = AdminReport)))]
pub async fn scrub(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    run(engine, "scrub", req).await
}

/// Repair the store
///
/// Quarantines corrupt or unknown files and reconciles the registry with storage;
/// `dry_run` reports what would be done.
#[utoipa::path(post, path = "/v1/admin/repair", tag = "admin", operation_id = "admin_repair",
    request_body(content = Option<AdminRequest>, description = "Optional; an empty body means every series."),
    security((), ("bearer" = [])),
    responses((status = 200, description = "The report: each finding and each action taken (or, in a dry run, planned).", body = AdminReport)))]
pub async fn repair(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    run(engine, "repair", req).await
}

/// Rebuild manifests
///
/// Rewrites each selected series' manifest from the chunk files on disk;
/// `dry_run` reports what would change.
#[utoipa::path(post, path = "/v1/admin/rebuild-manifest", tag = "admin", operation_id = "admin_rebuild_manifest",
    request_body(content = Option<AdminRequest>, description = "Optional; an empty body means every series."),
    security((), ("bearer" = [])),
    responses((status = 200, description = "The report: each finding and each action taken (or, in a dry run, planned).", body = AdminReport)))]
pub async fn rebuild_manifest(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    run(engine, "rebuild-manifest", req).await
}

/// Compact the store
///
/// Merges months with several chunks into one; `dry_run` reports what would change.
#[utoipa::path(post, path = "/v1/admin/compact", tag = "admin", operation_id = "admin_compact",
    request_body(content = Option<AdminRequest>, description = "Optional; an empty body means every series."),
    security((), ("bearer" = [])),
    responses((status = 200, description = "The report: each action taken (or, in a dry run, planned).", body = AdminReport)))]
pub async fn compact(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    run(engine, "compact", req).await
}
