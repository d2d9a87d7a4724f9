//! DoAction and ListActions: health, inventory and the admin actions, with the same
//! JSON bodies as their HTTP endpoints.

use std::sync::Arc;

use arrow_flight::ActionType;
use bytes::Bytes;
use serde::Deserialize;
use tonic::Status;

use super::auth::Access;
use super::error::{internal, invalid};
use crate::admin::{AdminAction, AdminRequest, echo};
use crate::query::Engine;

/// A DoAction type, parsed once from the request's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlightAction {
    Health,
    Inventory,
    Admin(AdminAction),
}

/// Every action: its name and what it does (who may call it: [`FlightAction::access`]).
pub const ACTIONS: [(&str, &str); 7] = [
    (
        "health",
        "Server health as GET /health: {status, version, uptime_s, series, issues, ...}. Body: empty.",
    ),
    (
        "inventory",
        "Every series with rows, first/last ts, bytes, version and partitions, as GET /inventory. Body: empty.",
    ),
    (
        "validate",
        "Check manifests, chunk headers and (deep) checksums. Body: {series?, deep?}.",
    ),
    (
        "scrub",
        "Verify every checksum of the selected series. Body: {series?}.",
    ),
    (
        "repair",
        "Quarantine corrupt or unknown files and restore a consistent state. Body: {series?, dry_run?}.",
    ),
    (
        "rebuild-manifest",
        "Rebuild manifests from the chunk files on disk. Body: {series?, dry_run?}.",
    ),
    (
        "compact",
        "Merge each month's delta chunks into one chunk. Body: {series?, dry_run?}.",
    ),
];

impl FlightAction {
    /// The action named `name`, or `InvalidArgument` listing the known ones (with at
    /// most a short prefix of `name`: a long one echoed whole would overflow the
    /// client's metadata limit and arrive as a transport error instead).
    pub fn parse(name: &str) -> Result<FlightAction, Status> {
        match name {
            "health" => Ok(FlightAction::Health),
            "inventory" => Ok(FlightAction::Inventory),
            _ => name.parse().map(FlightAction::Admin).map_err(|_| {
                let names: Vec<&str> = ACTIONS.iter().map(|(n, _)| *n).collect();
                invalid(format!(
                    "unknown action {}; ListActions lists them: {}",
                    echo(name),
                    names.join(", ")
                ))
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FlightAction::Health => "health",
            FlightAction::Inventory => "inventory",
            FlightAction::Admin(a) => a.as_str(),
        }
    }

    /// Who may call the action.
    pub fn access(self) -> Access {
        match self {
            FlightAction::Health => Access::Open,
            FlightAction::Inventory => Access::Read,
            FlightAction::Admin(_) => Access::Write,
        }
    }
}

/// ListActions' answer.
pub fn list() -> Vec<ActionType> {
    ACTIONS
        .iter()
        .map(|(name, description)| ActionType {
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
pub async fn run(engine: Arc<Engine>, action: FlightAction, body: &[u8]) -> Result<Bytes, Status> {
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let name = action.as_str();
    let json = match action {
        FlightAction::Health | FlightAction::Inventory => {
            if !blank {
                serde_json::from_slice::<NoBody>(body).map_err(|e| {
                    invalid(format!("action {name:?} takes an empty body or {{}}: {e}"))
                })?;
            }
            tokio::task::spawn_blocking(move || match action {
                FlightAction::Health => serde_json::to_vec(&engine.health()),
                _ => serde_json::to_vec(&engine.inventory()),
            })
            .await
            .map_err(internal)?
            .map_err(internal)?
        }
        FlightAction::Admin(admin) => {
            let req: AdminRequest = if blank {
                AdminRequest::default()
            } else {
                serde_json::from_slice(body).map_err(|e| {
                    invalid(format!(
                        "action {name:?} takes JSON like {{\"series\": {{\"symbol\": \"BTCUSDT\"}}, \"dry_run\": true}}: {e}"
                    ))
                })?
            };
            let report = tokio::task::spawn_blocking(move || engine.admin(admin, &req))
                .await
                .map_err(internal)??;
            serde_json::to_vec(&report).map_err(internal)?
        }
    };
    Ok(Bytes::from(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_action_parses_with_its_access() {
        for (name, _) in ACTIONS {
            assert_eq!(FlightAction::parse(name).unwrap().as_str(), name);
        }
        let validate = FlightAction::parse("validate").unwrap();
        assert!(matches!(validate.access(), Access::Write));
        assert!(matches!(FlightAction::Health.access(), Access::Open));
        let err = FlightAction::parse(&"x".repeat(100_000)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().len() < 400, "{}", err.message());
    }
}
