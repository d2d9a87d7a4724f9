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

/// One series named in a snapshot request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m"}))]
pub struct SnapshotSeries {
    /// `kline` or `scalar`.
    pub kind: String,
    pub symbol: String,
    pub timeframe: Option<String>,
    /// Scalar series: the category.
    pub category: Option<String>,
    /// Scalar series: the name.
    pub name: Option<String>,
}

impl SnapshotSeries {
    fn key(&self) -> Result<SeriesKey> {
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
                "kind must be kline or scalar (ticks are not held by snapshots yet), got {}",
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

fn info_of(s: &NamedSnapshot) -> SnapshotInfo {
    SnapshotInfo {
        name: s.name.clone(),
        created_ts: s.created_ts,
        series: s.series.len() as u64,
        note: s.note.clone(),
        bytes: s.bytes(),
    }
}

impl Engine {
    /// Series `key` now (`at: None`) or as snapshot `at` holds it.
    pub fn series_at(&self, key: &SeriesKey, at: Option<&str>) -> Result<Arc<Series>> {
        match at {
            None => self.series(key),
            Some(name) => Ok(self.store.series_at(name, key)?),
        }
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
