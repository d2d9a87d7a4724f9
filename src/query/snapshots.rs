//! Named snapshots as the front ends see them: create, list, show, delete, and the
//! series a read resolves when it names a snapshot (docs/research.md).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Engine;
use super::market::Selection;
use crate::error::{Error, Result};
use crate::record::{SeriesKey, SeriesKind, echo};
use crate::storage::Series;
use crate::storage::named::NamedSnapshot;
use crate::storage::series::Pick;

/// One series named in a snapshot request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m"}))]
pub struct SnapshotSeries {
    /// `kline`, `scalar`, `trade` or `quote`.
    pub kind: String,
    pub symbol: String,
    /// Kline and scalar series: the timeframe (none for trades and quotes).
    pub timeframe: Option<String>,
    /// Scalar series: the category.
    pub category: Option<String>,
    /// Scalar series: the name.
    pub name: Option<String>,
}

impl SnapshotSeries {
    fn key(&self) -> Result<SeriesKey> {
        if matches!(self.kind.as_str(), "trade" | "quote") {
            if self.timeframe.is_some() || self.category.is_some() || self.name.is_some() {
                return Err(Error::invalid(
                    "a trade or quote series is named by kind and symbol alone",
                ));
            }
            return super::tick::tick_key(&self.kind, &self.symbol);
        }
        let tf = self.timeframe.as_deref().ok_or_else(|| {
            Error::invalid(format!(
                "series {} of the snapshot names no timeframe",
                echo(&self.symbol)
            ))
        })?;
        match self.kind.as_str() {
            "kline" if self.category.is_none() && self.name.is_none() => {
                Ok(SeriesKey::kline(&self.symbol, tf)?)
            }
            "kline" => Err(Error::invalid(
                "a kline series has no category or name: give kind, symbol and timeframe",
            )),
            "scalar" => match (&self.category, &self.name) {
                (Some(c), Some(n)) => Ok(SeriesKey::scalar(&self.symbol, tf, c, n)?),
                _ => Err(Error::invalid(
                    "a scalar series needs category and name next to symbol and timeframe",
                )),
            },
            other => Err(Error::invalid(format!(
                "kind must be kline, scalar, trade or quote, got {}",
                echo(other)
            ))),
        }
    }
}

/// `POST /v1/snapshots` (and the Flight action `snapshot-create`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "q3-2026", "series": "*", "note": "backtest of 2026-11-20"}))]
pub struct SnapshotCreate {
    /// The snapshot's name (the symbol rule: 1 to 64 of `A-Z a-z 0-9 . _ -`).
    pub name: String,
    /// `"*"` (the default: every series) or a list of series.
    #[schema(value_type = Object)]
    pub series: Option<SnapshotScope>,
    pub note: Option<String>,
}

/// Which series a snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SnapshotScope {
    All(String),
    List(Vec<SnapshotSeries>),
}

/// A snapshot as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"name": "q3-2026", "created_ts": 1764000000000_i64, "series": 2, "note": "", "bytes": 123456}))]
pub struct SnapshotInfo {
    pub name: String,
    /// When it was created (ms since the epoch).
    pub created_ts: i64,
    /// Series it holds.
    pub series: u64,
    pub note: String,
    /// Bytes of chunk files and sidecars it reads (shared with the live series or other
    /// snapshots where nothing changed since).
    pub bytes: u64,
}

/// One series of a snapshot and the version it pins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m", "version": 12, "rows": 1440}))]
pub struct PinnedSeries {
    pub kind: String,
    pub symbol: String,
    pub timeframe: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The series version the snapshot reads.
    pub version: u64,
    pub rows: u64,
}

/// `GET /v1/snapshots/{name}`: the snapshot and each series with its pinned version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"name": "q3-2026", "created_ts": 1764000000000_i64, "note": "", "bytes": 123456, "series": [{"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m", "version": 12, "rows": 1440}]}))]
pub struct SnapshotDetail {
    pub name: String,
    pub created_ts: i64,
    pub note: String,
    /// Bytes of chunk files and sidecars it reads.
    pub bytes: u64,
    /// Every series it holds, in key order, with the version it pins.
    pub series: Vec<PinnedSeries>,
}

/// One readable version of a series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"version": 12, "committed_ts": 1764000000000_i64, "committed_ts_exact": true, "superseded_ts": 1764000060000_i64, "rows": 1440}))]
pub struct VersionItem {
    pub version: u64,
    /// When it became the current version (ms since the epoch).
    pub committed_ts: i64,
    /// False when the server could not tell the exact time (a version replayed from
    /// the log after a crash, or older than the store's versions file): it was
    /// committed at or before `committed_ts`.
    pub committed_ts_exact: bool,
    /// When the next version replaced it (absent: the current version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_ts: Option<i64>,
    pub rows: u64,
}

/// `GET /v1/kline/{symbol}/{timeframe}/versions` (and the scalar route).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"keep_versions_s": 86400, "versions": [{"version": 11, "committed_ts": 1764000000000_i64, "committed_ts_exact": true, "superseded_ts": 1764000060000_i64, "rows": 1439}, {"version": 12, "committed_ts": 1764000060000_i64, "committed_ts_exact": true, "rows": 1440}]}))]
pub struct VersionList {
    /// How long a superseded version stays readable (`storage.keep_versions_s`).
    pub keep_versions_s: u64,
    /// Oldest first; the last is the current version.
    pub versions: Vec<VersionItem>,
}

fn info_of(s: &NamedSnapshot) -> SnapshotInfo {
    SnapshotInfo {
        name: s.name.clone(),
        created_ts: s.created_ts,
        series: s.series.len() as u64,
        note: s.note.clone(),
        bytes: s.bytes(),
    }
}

/// The moment a read answers: now, a named snapshot, or a past version of each
/// series (docs/research.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum At {
    #[default]
    Now,
    /// As named snapshot `.0` holds the series.
    Snapshot(String),
    /// Version `.0` of the one series read.
    Version(u64),
    /// Each series at the version current at this wall-clock time (ms since the epoch).
    Commit(i64),
}

impl At {
    /// The read's `snapshot`, `version` and `as_of_commit`: at most one of them.
    pub fn new(
        snapshot: Option<String>,
        version: Option<u64>,
        as_of_commit: Option<i64>,
    ) -> Result<At> {
        match (snapshot, version, as_of_commit) {
            (None, None, None) => Ok(At::Now),
            (Some(s), None, None) => Ok(At::Snapshot(s)),
            (None, Some(v), None) => Ok(At::Version(v)),
            (None, None, Some(t)) => Ok(At::Commit(t)),
            _ => Err(Error::invalid(
                "snapshot, version and as_of_commit each name the moment a read answers: give at most one of them",
            )),
        }
    }

    /// The snapshot named, if the read names one.
    pub fn snapshot(&self) -> Option<&str> {
        match self {
            At::Snapshot(s) => Some(s),
            _ => None,
        }
    }
}

impl Engine {
    /// Series `key` at moment `at`: the live series now, else a read-only view of the
    /// state a snapshot or a past version holds.
    pub fn series_at(&self, key: &SeriesKey, at: &At) -> Result<Arc<Series>> {
        match at {
            At::Now => self.live_view(self.series(key)?),
            At::Snapshot(name) => Ok(self.store.series_at(name, key)?),
            At::Version(v) => self
                .store
                .series_version(key, Pick::Version(*v))?
                .ok_or_else(|| Error::internal("a version pick found no state")),
            At::Commit(t) => self
                .store
                .series_version(key, Pick::Commit(*t))?
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "{} series {key} was registered after {t}: it did not exist at that time",
                        key.kind().as_str()
                    ))
                }),
        }
    }

    /// The readable versions of series `key`, oldest first, the current one last.
    pub fn versions(&self, key: &SeriesKey) -> Result<VersionList> {
        let list = self.store.versions_of(key)?;
        Ok(VersionList {
            keep_versions_s: (self.store.keep_versions_ms() / 1000) as u64,
            versions: list
                .into_iter()
                .map(|v| VersionItem {
                    version: v.version,
                    committed_ts: v.committed_ts,
                    committed_ts_exact: v.exact,
                    superseded_ts: v.superseded_ts,
                    rows: v.rows,
                })
                .collect(),
        })
    }

    /// Every series of snapshot `name` in `sel` (`"*"`), in key order.
    pub(super) fn snapshot_selection(
        &self,
        name: &str,
        sel: &Selection,
    ) -> Result<Vec<Arc<Series>>> {
        let snap = self.store.snapshot_named(name)?;
        Ok(snap
            .series
            .iter()
            .filter(|(k, _)| {
                k.kind() == sel.kind
                    && k.timeframe() == sel.timeframe
                    && sel.scalar.as_ref().is_none_or(|(c, n)| {
                        k.category() == Some(c.as_str()) && k.name() == Some(n.as_str())
                    })
            })
            .map(|(_, h)| Arc::new(h.series.view(Arc::clone(&h.state))))
            .collect())
    }

    /// Every series of `kind` snapshot `name` holds, as read-only views, in key order.
    pub fn snapshot_series(&self, name: &str, kind: SeriesKind) -> Result<Vec<Arc<Series>>> {
        let snap = self.store.snapshot_named(name)?;
        Ok(snap
            .series
            .iter()
            .filter(|(k, _)| k.kind() == kind)
            .map(|(_, h)| Arc::new(h.series.view(Arc::clone(&h.state))))
            .collect())
    }

    /// Creates a snapshot (admin scope; refused on a replica).
    pub fn create_snapshot(&self, req: &SnapshotCreate) -> Result<SnapshotInfo> {
        self.check_writable()?;
        // Every snapshot is also a SQL schema of catalog `fastk`: these two names are
        // taken there.
        if ["public", "information_schema"].contains(&req.name.to_ascii_lowercase().as_str()) {
            return Err(Error::invalid(format!(
                "snapshot name {} is taken by a SQL schema (every snapshot is a schema of catalog fastk): pick another",
                echo(&req.name)
            )));
        }
        let keys = match &req.series {
            None => None,
            Some(SnapshotScope::All(s)) if s == "*" => None,
            Some(SnapshotScope::All(other)) => {
                return Err(Error::invalid(format!(
                    "series must be \"*\" or a list of series, got {}",
                    echo(other)
                )));
            }
            Some(SnapshotScope::List(list)) if list.is_empty() => {
                return Err(Error::invalid(
                    "series is empty: list at least one series, or give \"*\" for every series",
                ));
            }
            Some(SnapshotScope::List(list)) => Some(
                list.iter()
                    .map(SnapshotSeries::key)
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        let snap = self.store.create_snapshot(
            &req.name,
            keys.as_deref(),
            req.note.as_deref().unwrap_or(""),
        )?;
        tracing::info!(snapshot = %snap.name, series = snap.series.len(), "snapshot created");
        Ok(info_of(&snap))
    }

    pub fn list_snapshots(&self) -> Vec<SnapshotInfo> {
        self.store.snapshots().iter().map(|s| info_of(s)).collect()
    }

    pub fn snapshot_detail(&self, name: &str) -> Result<SnapshotDetail> {
        let snap = self.store.snapshot_named(name)?;
        let series_list = snap
            .series
            .iter()
            .map(|(k, h)| PinnedSeries {
                kind: k.kind().as_str().to_string(),
                symbol: k.symbol().to_string(),
                timeframe: k.timeframe().to_string(),
                category: (k.kind() == SeriesKind::Scalar)
                    .then(|| k.category().unwrap_or_default().to_string()),
                name: (k.kind() == SeriesKind::Scalar)
                    .then(|| k.name().unwrap_or_default().to_string()),
                version: h.state.version,
                rows: h.state.rows(),
            })
            .collect();
        Ok(SnapshotDetail {
            name: snap.name.clone(),
            created_ts: snap.created_ts,
            note: snap.note.clone(),
            bytes: snap.bytes(),
            series: series_list,
        })
    }

    pub fn delete_snapshot(&self, name: &str) -> Result<()> {
        self.check_writable()?;
        self.store.delete_snapshot(name)?;
        tracing::info!(snapshot = %name, "snapshot deleted");
        Ok(())
    }
}
