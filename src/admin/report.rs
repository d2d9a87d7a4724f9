//! The wire bodies of the admin actions: the request (a series selector and flags)
//! and the report (findings and actions taken). Shared by HTTP, Flight and the CLI;
//! `query::types` re-exports them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::record::SeriesKind;

/// Selects series for an admin action; omitted fields match everything.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesSelector {
    #[serde(default)]
    pub kind: Option<SeriesKind>,
    #[serde(default)]
    pub symbol: Option<String>,
    #[serde(default)]
    pub timeframe: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// Body of every admin action.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"series": {"symbol": "BTCUSDT"}, "dry_run": true, "deep": true}))]
pub struct AdminRequest {
    #[serde(default, deserialize_with = "selector_object")]
    pub series: Option<SeriesSelector>,
    /// Report what would be done without changing anything (repair, compact, rebuild-manifest).
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Verify every checksum (validate); scrub always does.
    #[serde(default)]
    pub deep: Option<bool>,
}

/// One problem an admin action found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Finding {
    /// Series path (`kline/BTCUSDT/1m`), if the finding belongs to one.
    pub series: Option<String>,
    pub month: Option<String>,
    /// File relative to the data root.
    pub file: Option<String>,
    /// Machine-readable finding kind (see docs/operations.md for the runbook).
    pub kind: String,
    pub detail: String,
    pub suggested_action: String,
}

/// One change an admin action made (or, in a dry run, would make).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ActionTaken {
    pub series: Option<String>,
    pub file: Option<String>,
    pub action: String,
    pub detail: String,
}

/// Report of an admin action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct AdminReport {
    pub action: String,
    pub dry_run: bool,
    pub deep: bool,
    pub series_checked: u64,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    /// Rows of the checked series still only in the write-ahead log (durable, not yet
    /// folded into chunk files), and the series that have any.
    #[serde(default)]
    pub log_unfolded_rows: u64,
    #[serde(default)]
    pub log_unfolded_series: u64,
    pub findings: Vec<Finding>,
    pub actions: Vec<ActionTaken>,
    /// True when no finding remains.
    pub clean: bool,
    pub duration_ms: u64,
}

/// Accepts a selector only as a JSON object (or null). Serde would also take an array
/// of field values, and `[null, null]` would then silently select every series, which
/// is not what anyone sending an array to a repair endpoint means.
fn selector_object<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SeriesSelector>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v @ serde_json::Value::Object(_)) => serde_json::from_value(v)
            .map(Some)
            .map_err(D::Error::custom),
        Some(_) => Err(D::Error::custom(
            "series must be an object such as {\"symbol\": \"BTCUSDT\"}",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_selector_must_be_an_object() {
        let ok: AdminRequest =
            serde_json::from_str(r#"{"series": {"symbol": "BTCUSDT"}}"#).unwrap();
        assert_eq!(ok.series.unwrap().symbol.as_deref(), Some("BTCUSDT"));
        let none: AdminRequest = serde_json::from_str(r#"{"series": null}"#).unwrap();
        assert!(none.series.is_none());
        assert!(serde_json::from_str::<AdminRequest>(r#"{"series": [null, null]}"#).is_err());
        assert!(serde_json::from_str::<AdminRequest>(r#"{"series": {"nope": 1}}"#).is_err());
    }
}
