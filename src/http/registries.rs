//! The control-plane registries: dataset manifests, feature and factor definitions.
//! Entries are keyed by `(name, version)` and immutable: registering the same entry
//! again is a no-op (200), a different one under the same key is a 409.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::auth::{ReadAccess, WriteAccess};
use super::error::{AppError, ErrorBody};
use super::extract::{JsonBody, QueryParams, blocking};
use super::types::{DatasetList, DefinitionList, NameFilter};
use crate::query::Engine;
use crate::registry::{Dataset, Definition, DefinitionKind};

fn created_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// Register a dataset manifest
#[utoipa::path(post, path = "/v1/datasets", tag = "registry", operation_id = "register_dataset",
    request_body = Dataset,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "The dataset version was registered.", body = Dataset),
        (status = 200, description = "An identical entry already exists; nothing changed.", body = Dataset),
        (status = 409, description = "`conflict`: this name and version exist with different fields.", body = ErrorBody),
    ))]
pub async fn put_dataset(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    JsonBody(d): JsonBody<Dataset>,
) -> Result<(StatusCode, Json<Dataset>), AppError> {
    blocking(move || {
        let created = engine.put_dataset(&d)?;
        Ok((created_status(created), Json(d)))
    })
    .await
}

/// List dataset manifests
#[utoipa::path(get, path = "/v1/datasets", tag = "registry", operation_id = "list_datasets",
    params(NameFilter),
    security((), ("bearer" = [])),
    responses((status = 200, description = "Datasets, ascending by name and version.", body = DatasetList)))]
pub async fn list_datasets(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    QueryParams(f): QueryParams<NameFilter>,
) -> Result<Json<DatasetList>, AppError> {
    blocking(move || {
        let datasets = engine.list_datasets(f.name.as_deref())?;
        Ok(Json(DatasetList { datasets }))
    })
    .await
}

async fn put_definition(
    engine: Arc<Engine>,
    kind: DefinitionKind,
    d: Definition,
) -> Result<(StatusCode, Json<Definition>), AppError> {
    blocking(move || {
        let created = engine.put_definition(kind, &d)?;
        Ok((created_status(created), Json(d)))
    })
    .await
}

async fn list_definitions(
    engine: Arc<Engine>,
    kind: DefinitionKind,
    f: NameFilter,
) -> Result<Json<DefinitionList>, AppError> {
    blocking(move || {
        let definitions = engine.list_definitions(kind, f.name.as_deref())?;
        Ok(Json(DefinitionList { definitions }))
    })
    .await
}

/// Register a feature definition
#[utoipa::path(post, path = "/v1/features", tag = "registry", operation_id = "register_feature",
    request_body = Definition,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "The feature version was registered.", body = Definition),
        (status = 200, description = "An identical entry already exists; nothing changed.", body = Definition),
        (status = 409, description = "`conflict`: this name and version exist with different fields.", body = ErrorBody),
    ))]
pub async fn put_feature(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    JsonBody(d): JsonBody<Definition>,
) -> Result<(StatusCode, Json<Definition>), AppError> {
    put_definition(engine, DefinitionKind::Feature, d).await
}

/// List feature definitions
#[utoipa::path(get, path = "/v1/features", tag = "registry", operation_id = "list_features",
    params(NameFilter),
    security((), ("bearer" = [])),
    responses((status = 200, description = "Feature definitions, ascending by name and version.", body = DefinitionList)))]
pub async fn list_features(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    QueryParams(f): QueryParams<NameFilter>,
) -> Result<Json<DefinitionList>, AppError> {
    list_definitions(engine, DefinitionKind::Feature, f).await
}

/// Register a factor definition
#[utoipa::path(post, path = "/v1/factors", tag = "registry", operation_id = "register_factor",
    request_body = Definition,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "The factor version was registered.", body = Definition),
        (status = 200, description = "An identical entry already exists; nothing changed.", body = Definition),
        (status = 409, description = "`conflict`: this name and version exist with different fields.", body = ErrorBody),
    ))]
pub async fn put_factor(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    JsonBody(d): JsonBody<Definition>,
) -> Result<(StatusCode, Json<Definition>), AppError> {
    put_definition(engine, DefinitionKind::Factor, d).await
}

/// List factor definitions
#[utoipa::path(get, path = "/v1/factors", tag = "registry", operation_id = "list_factors",
    params(NameFilter),
    security((), ("bearer" = [])),
    responses((status = 200, description = "Factor definitions, ascending by name and version.", body = DefinitionList)))]
pub async fn list_factors(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    QueryParams(f): QueryParams<NameFilter>,
) -> Result<Json<DefinitionList>, AppError> {
    list_definitions(engine, DefinitionKind::Factor, f).await
}
