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
use crate::query::market::spec::CoverageRequest;
use crate::query::types::InventoryQuery;
use crate::record::{SeriesKey, SeriesKind};

/// A DoAction type, parsed once from the request's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlightAction {
    Health,
    Inventory,
    /// Coverage and gaps of one series.
    Coverage,
    /// The rows of a range of one series, deleted.
    DeleteRange,
    /// The cluster's shard map, for clients that route writes to the owners.
    ShardMap,
    /// A co-located client's read plan (answered on the Unix socket only, by
    /// [`super::local`]).
    LocalRead,
    /// Named snapshots (docs/research.md): create, list or show, delete.
    SnapshotCreate,
    SnapshotList,
    SnapshotDelete,
    Admin(AdminAction),
}

/// Every action: its name and what it does (who may call it: [`FlightAction::access`]).
pub const ACTIONS: [(&str, &str); 14] = [
    (
        "health",
        "Server health as GET /health: {status, version, uptime_s, series, issues, ...}. Body: empty.",
    ),
    (
        "inventory",
        "Every series with rows, first/last ts, bytes, version and partitions, as GET /inventory. Body: empty, or {kind?, symbol?, partitions?, limit?, after?}.",
    ),
    (
        "coverage",
        "Expected and present bars, gaps and the last complete run of one series, as GET .../coverage. Body: {kind, symbol, timeframe, category?, name?, start_ts?, end_ts?, calendar?, complete_n?, max_gaps?}.",
    ),
    (
        "delete-range",
        "Delete the rows of [start_ts, end_ts] of one series, all-or-nothing, as DELETE .../records. Body: {kind, symbol, timeframe, category?, name?, start_ts?, end_ts?, expected_version?}.",
    ),
    (
        "shard-map",
        "The cluster's shard map {node, nodes: {name: flight URI}, ranges: [{from, node}]} (docs/scale-out.md): write a symbol to the node owning it. A node outside a cluster answers {node: null}. Body: empty.",
    ),
    (
        "local-read",
        "Unix socket only: the plan of a zero-copy read of one series by a client on this host: the raw chunk files to map (paths, byte offsets, rows) and DoGet tickets for the rest, then the schema. Body: a single-series kline or scalar ticket (range, latest, columns).",
    ),
    (
        "snapshot-create",
        "Create a named snapshot, as POST /v1/snapshots: pins the current version of the series named (or of every series). Body: {name, series?: \"*\" | [{kind, symbol, timeframe, category?, name?}], note?}.",
    ),
    (
        "snapshot-list",
        "The snapshots, as GET /v1/snapshots; with {name} that snapshot and each series with its pinned version, as GET /v1/snapshots/{name}. Body: empty, or {name}.",
    ),
    (
        "snapshot-delete",
        "Delete a named snapshot, as DELETE /v1/snapshots/{name}. Body: {name}.",
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
            "coverage" => Ok(FlightAction::Coverage),
            "delete-range" => Ok(FlightAction::DeleteRange),
            "shard-map" => Ok(FlightAction::ShardMap),
            "snapshot-create" => Ok(FlightAction::SnapshotCreate),
            "snapshot-list" => Ok(FlightAction::SnapshotList),
            "snapshot-delete" => Ok(FlightAction::SnapshotDelete),
            super::local::LOCAL_READ => Ok(FlightAction::LocalRead),
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
            FlightAction::Coverage => "coverage",
            FlightAction::DeleteRange => "delete-range",
            FlightAction::ShardMap => "shard-map",
            FlightAction::LocalRead => super::local::LOCAL_READ,
            FlightAction::SnapshotCreate => "snapshot-create",
            FlightAction::SnapshotList => "snapshot-list",
            FlightAction::SnapshotDelete => "snapshot-delete",
            FlightAction::Admin(a) => a.as_str(),
        }
    }

    /// Who may call the action.
    pub fn access(self) -> Access {
        match self {
            FlightAction::Health => Access::Open,
            FlightAction::Inventory
            | FlightAction::Coverage
            | FlightAction::ShardMap
            | FlightAction::LocalRead
            | FlightAction::SnapshotList => Access::Read,
            FlightAction::DeleteRange => Access::Write,
            FlightAction::SnapshotCreate
            | FlightAction::SnapshotDelete
            | FlightAction::Admin(_) => Access::Admin,
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

/// Body of the `coverage` action: the series, then the coverage request's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoverageBody {
    kind: SeriesKind,
    symbol: String,
    timeframe: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    start_ts: Option<i64>,
    #[serde(default)]
    end_ts: Option<i64>,
    #[serde(default)]
    calendar: Option<String>,
    #[serde(default)]
    complete_n: Option<u64>,
    #[serde(default)]
    max_gaps: Option<usize>,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    as_of_commit: Option<i64>,
}

impl CoverageBody {
    /// The series and the coverage question.
    fn into_parts(self) -> Result<(SeriesKey, CoverageRequest), Status> {
        let key = series_key(
            self.kind,
            &self.symbol,
            &self.timeframe,
            &self.category,
            &self.name,
        )?;
        let req = CoverageRequest {
            start_ts: self.start_ts,
            end_ts: self.end_ts,
            calendar: self.calendar,
            complete_n: self.complete_n,
            max_gaps: self.max_gaps,
            snapshot: self.snapshot,
            version: self.version,
            as_of_commit: self.as_of_commit,
        };
        Ok((key, req))
    }
}

/// The series an action body names.
fn series_key(
    kind: SeriesKind,
    symbol: &str,
    timeframe: &str,
    category: &Option<String>,
    name: &Option<String>,
) -> Result<SeriesKey, Status> {
    let key = match (kind, category, name) {
        (SeriesKind::Kline, None, None) => SeriesKey::kline(symbol, timeframe),
        (SeriesKind::Scalar, Some(c), Some(n)) => SeriesKey::scalar(symbol, timeframe, c, n),
        (SeriesKind::Trade, None, None) => SeriesKey::trade(symbol),
        (SeriesKind::Quote, None, None) => SeriesKey::quote(symbol),
        (SeriesKind::Trade | SeriesKind::Quote, _, _) => {
            return Err(invalid("a trade or quote series has no category or name"));
        }
        (SeriesKind::Kline, _, _) => {
            return Err(invalid("a kline series has no category or name"));
        }
        (SeriesKind::Scalar, _, _) => {
            return Err(invalid("a scalar series needs category and name"));
        }
    };
    key.map_err(|e| invalid(e.to_string()))
}

/// Body of the `delete-range` action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRangeBody {
    kind: SeriesKind,
    symbol: String,
    timeframe: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    start_ts: Option<i64>,
    #[serde(default)]
    end_ts: Option<i64>,
    #[serde(default)]
    expected_version: Option<u64>,
}

/// Body of `snapshot-list` (optional) and `snapshot-delete`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotName {
    name: Option<String>,
}

/// Runs `action` (already authorized) and returns its JSON result body.
pub async fn run(engine: Arc<Engine>, action: FlightAction, body: &[u8]) -> Result<Bytes, Status> {
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let name = action.as_str();
    let json = match action {
        FlightAction::Health => {
            if !blank {
                serde_json::from_slice::<NoBody>(body).map_err(|e| {
                    invalid(format!("action {name:?} takes an empty body or {{}}: {e}"))
                })?;
            }
            let h = tokio::task::spawn_blocking(move || engine.health())
                .await
                .map_err(internal)?;
            serde_json::to_vec(&h).map_err(internal)?
        }
        // The service answers it itself when the connection is a Unix socket one.
        FlightAction::LocalRead => {
            return Err(Status::failed_precondition(super::local::TCP_REFUSED));
        }
        FlightAction::ShardMap => {
            if !blank {
                serde_json::from_slice::<NoBody>(body).map_err(|e| {
                    invalid(format!("action {name:?} takes an empty body or {{}}: {e}"))
                })?;
            }
            let map = engine.cluster.get();
            let v = match &map {
                None => serde_json::json!({"node": null}),
                Some(m) => {
                    let mut v = serde_json::json!({
                        "node": m.me(),
                        "nodes": m.map().nodes,
                        "ranges": m.map().ranges,
                    });
                    if !m.map().replicas.is_empty() {
                        v["replicas"] = serde_json::json!(m.map().replicas);
                    }
                    v
                }
            };
            serde_json::to_vec(&v).map_err(internal)?
        }
        FlightAction::Inventory => {
            let q: InventoryQuery = if blank {
                InventoryQuery::default()
            } else {
                serde_json::from_slice(body).map_err(|e| {
                    invalid(format!(
                        "action \"inventory\" takes an empty body or {{\"kind\"?, \"symbol\"?, \"partitions\"?, \"limit\"?, \"after\"?}}: {e}"
                    ))
                })?
            };
            let inv = tokio::task::spawn_blocking(move || engine.inventory_page(&q))
                .await
                .map_err(internal)??;
            serde_json::to_vec(&inv).map_err(internal)?
        }
        FlightAction::Coverage => {
            let body: CoverageBody = serde_json::from_slice(body).map_err(|e| {
                invalid(format!(
                    "action \"coverage\" takes JSON like {{\"kind\": \"kline\", \"symbol\": \"BTCUSDT\", \"timeframe\": \"1m\", \"calendar\": \"weekdays\"}}: {e}"
                ))
            })?;
            let (key, req) = body.into_parts()?;
            let report = tokio::task::spawn_blocking(move || engine.coverage(&key, &req))
                .await
                .map_err(internal)??;
            serde_json::to_vec(&report).map_err(internal)?
        }
        FlightAction::DeleteRange => {
            let body: DeleteRangeBody = serde_json::from_slice(body).map_err(|e| {
                invalid(format!(
                    "action \"delete-range\" takes JSON like {{\"kind\": \"kline\", \"symbol\": \"BTCUSDT\", \"timeframe\": \"1m\", \"end_ts\": 1704067199999}}: {e}"
                ))
            })?;
            let key = series_key(
                body.kind,
                &body.symbol,
                &body.timeframe,
                &body.category,
                &body.name,
            )?;
            let r = tokio::task::spawn_blocking(move || {
                engine.delete_range(&key, body.start_ts, body.end_ts, body.expected_version)
            })
            .await
            .map_err(internal)??;
            serde_json::to_vec(&r).map_err(internal)?
        }
        FlightAction::SnapshotCreate
        | FlightAction::SnapshotList
        | FlightAction::SnapshotDelete => snapshot_action(engine, action, body, blank).await?,
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

/// The snapshot actions: create, list or show, delete.
async fn snapshot_action(
    engine: Arc<Engine>,
    action: FlightAction,
    body: &[u8],
    blank: bool,
) -> Result<Vec<u8>, Status> {
    let name = action.as_str();
    if action == FlightAction::SnapshotCreate {
        let req: crate::query::snapshots::SnapshotCreate = serde_json::from_slice(body)
            .map_err(|e| {
                invalid(format!(
                    "action \"snapshot-create\" takes JSON like {{\"name\": \"q3-2026\", \"series\": \"*\"}}: {e}"
                ))
            })?;
        let info = tokio::task::spawn_blocking(move || engine.create_snapshot(&req))
            .await
            .map_err(internal)??;
        return serde_json::to_vec(&info).map_err(internal);
    }
    let req: SnapshotName = if blank {
        SnapshotName::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            invalid(format!(
                "action {name:?} takes JSON like {{\"name\": \"q3-2026\"}}: {e}"
            ))
        })?
    };
    let delete = action == FlightAction::SnapshotDelete;
    tokio::task::spawn_blocking(move || match (req.name, delete) {
        (None, true) => Err(crate::error::Error::invalid(
            "action \"snapshot-delete\" needs {\"name\": ...}",
        )),
        (Some(n), true) => engine
            .delete_snapshot(&n)
            .map(|()| serde_json::json!({"deleted": n})),
        (Some(n), false) => engine
            .snapshot_detail(&n)
            .map(|d| serde_json::to_value(d).unwrap_or_default()),
        (None, false) => Ok(serde_json::json!({"snapshots": engine.list_snapshots()})),
    })
    .await
    .map_err(internal)?
    .map(|v| serde_json::to_vec(&v))?
    .map_err(internal)
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
        assert!(matches!(validate.access(), Access::Admin));
        assert!(matches!(FlightAction::DeleteRange.access(), Access::Write));
        assert!(matches!(FlightAction::Health.access(), Access::Open));
        let err = FlightAction::parse(&"x".repeat(100_000)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().len() < 400, "{}", err.message());
    }
}
