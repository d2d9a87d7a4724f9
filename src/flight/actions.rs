//! DoAction and ListActions: health, inventory and the admin actions, with the same
//! JSON bodies as their HTTP endpoints.

use std::sync::Arc;

use arrow_flight::ActionType;
use bytes::Bytes;
use serde::Deserialize;
use tonic::Status;

use super::auth::Access;
use super::error::{internal, invalid};
use crate::query::Engine;
use crate::query::types::AdminRequest;

/// Every action: its name, what it does, and who may call it.
pub const ACTIONS: [(&str, &str, Access); 7] = [
    (
        "health",
        "Server health as GET /health: {status, version, uptime_s, series, issues, ...}. Body: empty.",
        Access::Open,
    ),
    (
        "inventory",
        "Every series with rows, first/last ts, bytes, version and partitions, as GET /inventory. Body: empty.",
        Access::Read,
    ),
    (
        "validate",
        "Check manifests, chunk headers and (deep) checksums. Body: {series?, deep?}.",
        Access::Write,
    ),
    (
        "scrub",
        "Verify every checksum of the selected series. Body: {series?}.",
        Access::Write,
    ),
    (
        "repair",
        "Quarantine corrupt or unknown files and restore a consistent state. Body: {series?, dry_run?}.",
        Access::Write,
    ),
    (
        "rebuild-manifest",
        "Rebuild manifests from the chunk files on disk. Body: {series?, dry_run?}.",
        Access::Write,
    ),
    (
        "compact",
        "Merge each month's delta chunks into one chunk. Body: {series?, dry_run?}.",
        Access::Write,
    ),
];

/// The access an action needs, or an error naming the known actions.
pub fn access(action: &str) -> Result<Access, Status> {
    ACTIONS
        .iter()
        .find(|(name, _, _)| *name == action)
        .map(|(_, _, a)| *a)
        .ok_or_else(|| {
            let names: Vec<&str> = ACTIONS.iter().map(|(n, _, _)| *n).collect();
            invalid(format!(
                "unknown action {action:?}; ListActions lists them: {}",
                names.join(", ")
            ))
        })
}

/// ListActions' answer.
pub fn list() -> Vec<ActionType> {
    ACTIONS
        .iter()
        .map(|(name, description, _)| ActionType {
            r#type: (*name).into(),
            description: (*description).into(),
        })
        .collect()
}

/// Body of the actions that take none: empty, or an empty JSON object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoBody {}

/// Runs `action` (already authorized) and returns its JSON result body.
pub async fn run(engine: Arc<Engine>, action: &str, body: &[u8]) -> Result<Bytes, Status> {
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let json = match action {
        "health" | "inventory" => {
            if !blank {
                serde_json::from_slice::<NoBody>(body).map_err(|e| {
                    invalid(format!(
                        "action {action:?} takes an empty body or {{}}: {e}"
                    ))
                })?;
            }
            let name = action.to_string();
            tokio::task::spawn_blocking(move || match name.as_str() {
                "health" => serde_json::to_vec(&engine.health()),
                _ => serde_json::to_vec(&engine.inventory()),
            })
            .await
            .map_err(internal)?
            .map_err(internal)?
        }
        _ => {
            let req: AdminRequest = if blank {
                AdminRequest::default()
            } else {
                serde_json::from_slice(body).map_err(|e| {
                    invalid(format!(
                        "action {action:?} takes JSON like {{\"series\": {{\"symbol\": \"BTCUSDT\"}}, \"dry_run\": true}}: {e}"
                    ))
                })?
            };
            let name = action.to_string();
            let report = tokio::task::spawn_blocking(move || engine.admin(&name, &req))
                .await
                .map_err(internal)??;
            serde_json::to_vec(&report).map_err(internal)?
        }
    };
    Ok(Bytes::from(json))
}
