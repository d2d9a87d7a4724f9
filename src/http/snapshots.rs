//! Named snapshots over HTTP: create, list, show, delete (docs/research.md). Reads
//! take `snapshot=` (or `"snapshot"` in a body) on their own routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{AdminAccess, ReadAccess};
use super::error::{AppError, ErrorBody};
use super::extract::{JsonBody, PathParams, blocking};
use crate::query::Engine;
use crate::query::snapshots::{SnapshotCreate, SnapshotDetail, SnapshotInfo};

/// Every snapshot, by name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"snapshots": [{"name": "q3-2026", "created_ts": 1764000000000_i64, "series": 2, "note": "", "bytes": 123456}]}))]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotInfo>,
}

/// Create a snapshot
///
/// Pins the current version of every series named (or of every series, `"*"`, the
/// default) under `name`, atomically with respect to every write: a many-series
/// write is in all of its series or in none. Durable before the 201. Reads then take
/// `snapshot=name` and answer exactly what the series held, whatever is written,
/// replaced, deleted, compacted or expired later.
#[utoipa::path(post, path = "/v1/snapshots", tag = "snapshots", operation_id = "create_snapshot",
    request_body = SnapshotCreate,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "The snapshot was created.", body = SnapshotInfo),
        (status = 400, description = "`invalid_argument`: a bad name, note or series.", body = ErrorBody),
        (status = 404, description = "`not_found`: a named series does not exist (the message names it).", body = ErrorBody),
        (status = 409, description = "`conflict`: a snapshot of that name exists.", body = ErrorBody),
    ))]
pub async fn create(
    State(engine): State<Arc<Engine>>,
    _: AdminAccess,
    JsonBody(req): JsonBody<SnapshotCreate>,
) -> Result<(StatusCode, Json<SnapshotInfo>), AppError> {
    blocking(move || engine.create_snapshot(&req))
        .await
        .map(|info| (StatusCode::CREATED, Json(info)))
}

/// List snapshots
#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots", operation_id = "list_snapshots",
    security((), ("bearer" = [])),
    responses((status = 200, description = "Every snapshot, by name.", body = SnapshotList)))]
pub async fn list(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
) -> Result<Json<SnapshotList>, AppError> {
    blocking(move || {
        Ok(Json(SnapshotList {
            snapshots: engine.list_snapshots(),
        }))
    })
    .await
}

/// Show a snapshot
///
/// The snapshot and every series it holds with the version it pins. A token limited
/// to some symbols is refused (the list names every symbol).
#[utoipa::path(get, path = "/v1/snapshots/{name}", tag = "snapshots", operation_id = "get_snapshot",
    params(("name" = String, Path, description = "Snapshot name.")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The snapshot and its series.", body = SnapshotDetail),
        (status = 404, description = "`not_found`: no snapshot of that name.", body = ErrorBody),
    ))]
pub async fn get(
    State(engine): State<Arc<Engine>>,
    access: ReadAccess,
    PathParams(name): PathParams<String>,
) -> Result<Json<SnapshotDetail>, AppError> {
    access
        .0
        .check_every_symbol("a snapshot's series list")
        .inspect_err(|e| engine.auth.note_forbidden(e))?;
    blocking(move || engine.snapshot_detail(&name))
        .await
        .map(Json)
}

/// Delete a snapshot
///
/// The files only this snapshot kept are freed once no read in flight uses them.
#[utoipa::path(delete, path = "/v1/snapshots/{name}", tag = "snapshots", operation_id = "delete_snapshot",
    params(("name" = String, Path, description = "Snapshot name.")),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "`not_found`: no snapshot of that name.", body = ErrorBody),
    ))]
pub async fn delete(
    State(engine): State<Arc<Engine>>,
    _: AdminAccess,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, AppError> {
    blocking(move || engine.delete_snapshot(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
