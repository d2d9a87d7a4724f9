//! Admin actions. Each action is its own path (and operation in the document) so
//! generated clients get one method per action. Any other name under `/v1/admin/`
//! is a 400 that lists the actions (and repeats at most a short prefix of the name).
//! The body may be empty: `{}` is assumed.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::auth::AdminAccess;
use super::error::AppError;
use super::extract::{OptionalJsonBody, PathParams, blocking};
use crate::admin::{AdminAction, AdminReport, AdminRequest};
use crate::query::Engine;

async fn run(
    engine: Arc<Engine>,
    action: AdminAction,
    req: AdminRequest,
) -> Result<Json<AdminReport>, AppError> {
    blocking(move || engine.admin(action, &req)).await.map(Json)
}

/// `POST /v1/admin/{action}` for a name no documented route has: the known routes are
/// matched first, so this only answers the 400 from the one parse of action names.
/// It is not in the OpenAPI document, having no operation of its own.
pub async fn by_name(
    State(engine): State<Arc<Engine>>,
    _: AdminAccess,
    PathParams(name): PathParams<String>,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    let action: AdminAction = name.parse()?;
    run(engine, action, req).await
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
    _: AdminAccess,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    run(engine, AdminAction::Validate, req).await
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
    _: AdminAccess,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    run(engine, AdminAction::Scrub, req).await
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
    _: AdminAccess,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    run(engine, AdminAction::Repair, req).await
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
    _: AdminAccess,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    run(engine, AdminAction::RebuildManifest, req).await
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
    _: AdminAccess,
    OptionalJsonBody(req): OptionalJsonBody<AdminRequest>,
) -> Result<Json<AdminReport>, AppError> {
    run(engine, AdminAction::Compact, req).await
}
