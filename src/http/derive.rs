//! Derive rules over HTTP: create, list, delete (docs/derived.md). A derived series is
//! read on the ordinary kline routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{AdminAccess, ReadAccess};
use super::error::{AppError, ErrorBody};
use super::extract::{JsonBody, PathParams, QueryParams, blocking};
use crate::query::Engine;
use crate::query::derive::{DeriveList, DeriveRule, DeriveRuleInfo};

/// Which rule a delete removes, and whether its series go too.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeriveDeleteParams {
    /// The rule's base timeframe.
    #[param(example = "1m")]
    pub from_timeframe: String,
    /// Also delete the derived series (default false: they stay as plain series, no
    /// longer maintained).
    pub drop: Option<bool>,
}

/// Create a derive rule
///
/// Every kline series of `from_timeframe` whose symbol the rule names (now and
/// registered later) gets a derived series `(symbol, timeframe)` kept equal to its
/// resample: stored bars materialized in the background, plus the base resampled on the
/// fly where they are not up to date, so a read never differs from `resample=` on the
/// base. A derived series cannot be written (409).
#[utoipa::path(post, path = "/v1/kline/derive", tag = "kline", operation_id = "create_derive_rule",
    request_body = DeriveRule,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "The rule was created; `series` derived series exist.", body = DeriveRuleInfo),
        (status = 400, description = "`invalid_argument`: a timeframe that is not a whole multiple of the base, a chain of rules, a bad offset.", body = ErrorBody),
        (status = 409, description = "`conflict`: a rule derives that timeframe already, or a target series holds bars of its own.", body = ErrorBody),
    ))]
pub async fn create(
    State(engine): State<Arc<Engine>>,
    _: AdminAccess,
    JsonBody(rule): JsonBody<DeriveRule>,
) -> Result<(StatusCode, Json<DeriveRuleInfo>), AppError> {
    blocking(move || engine.derive_create(rule))
        .await
        .map(|info| (StatusCode::CREATED, Json(info)))
}

/// List derive rules
#[utoipa::path(get, path = "/v1/kline/derive", tag = "kline", operation_id = "list_derive_rules",
    security((), ("bearer" = [])),
    responses((status = 200, description = "Every rule, with the series it maintains.", body = DeriveList)))]
pub async fn list(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
) -> Result<Json<DeriveList>, AppError> {
    blocking(move || Ok(Json(engine.derive_list()))).await
}

/// Delete a derive rule
///
/// Its series stay as plain series, no longer maintained, unless `drop=true`.
#[utoipa::path(delete, path = "/v1/kline/derive/{timeframe}", tag = "kline", operation_id = "delete_derive_rule",
    params(("timeframe" = String, Path, description = "The derived timeframe."), DeriveDeleteParams),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "`not_found`: no such rule.", body = ErrorBody),
    ))]
pub async fn delete(
    State(engine): State<Arc<Engine>>,
    _: AdminAccess,
    PathParams(timeframe): PathParams<String>,
    QueryParams(q): QueryParams<DeriveDeleteParams>,
) -> Result<StatusCode, AppError> {
    blocking(move || engine.derive_delete(&timeframe, &q.from_timeframe, q.drop.unwrap_or(false)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
