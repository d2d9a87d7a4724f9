//! Integrity and operations: validate, scrub, repair, rebuild-manifest, compact.
//!
//! One implementation behind three doors: `fastk admin ... --root DIR` (offline), the
//! HTTP `POST /v1/admin/{action}` endpoints and the Flight actions. Every finding names
//! the series, month and file (relative to the data root) and suggests an action;
//! `repair` quarantines instead of deleting, so nothing an operator may need is lost.
//!
//! Admin decides what to run and writes the report; every change to a manifest, chunk
//! or sidecar is a storage operation (`storage::maintain`, `Series::compact`). Admin
//! takes the store and the registry it works on, not the query engine, which calls it.

mod action;
mod checks;
mod repair;
pub mod report;

use std::sync::Arc;
use std::time::Instant;

use crate::error::Result;
use crate::record::SeriesKey;
use crate::registry::Registry;
use crate::storage::{Series, Store};

pub use action::{AdminAction, ECHO_CHARS_MAX, echo};
pub use checks::check_series;
pub use report::{ActionTaken, AdminReport, AdminRequest, Finding, SeriesSelector};

/// Reports progress of a long action: `(series done, series total, current series)`.
pub type Progress<'a> = &'a (dyn Fn(usize, usize, &str) + Sync);

/// Runs `action` over the series of `store` that `req.series` selects, calling
/// `progress` before each series (the CLI draws a bar with it).
pub fn run(
    store: &Store,
    registry: &Registry,
    action: AdminAction,
    req: &AdminRequest,
    progress: Progress<'_>,
) -> Result<AdminReport> {
    let started = Instant::now();
    let selected = select(store, req.series.as_ref());
    let all = req.series.is_none();
    let mut report = AdminReport {
        action: action.as_str().to_string(),
        dry_run: req.dry_run.unwrap_or(false),
        deep: req.deep.unwrap_or(false) || action == AdminAction::Scrub,
        series_checked: selected.len() as u64,
        chunks_checked: 0,
        bytes_checked: 0,
        log_unfolded_rows: 0,
        log_unfolded_series: 0,
        findings: Vec::new(),
        actions: Vec::new(),
        clean: true,
        duration_ms: 0,
    };
    let scope = repair::Scope {
        store,
        registry,
        selected: &selected,
        all,
    };
    match action {
        AdminAction::Validate | AdminAction::Scrub => {
            checks::validate(&scope, &mut report, progress)
        }
        AdminAction::Repair => repair::repair(&scope, &mut report, progress)?,
        AdminAction::RebuildManifest => {
            repair::rebuild_manifests(&selected, &mut report, progress)?
        }
        AdminAction::Compact => repair::compact(&selected, &mut report, progress)?,
    }
    report.clean = report.findings.is_empty();
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

fn select(store: &Store, sel: Option<&SeriesSelector>) -> Vec<Arc<Series>> {
    store
        .list()
        .into_iter()
        .filter(|s| sel.is_none_or(|sel| matches(&s.meta.key, sel)))
        .collect()
}

/// Whether `key` matches every field the selector sets.
pub fn matches(key: &SeriesKey, sel: &SeriesSelector) -> bool {
    let eq =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
    sel.kind.is_none_or(|k| k == key.kind())
        && eq(&sel.symbol, Some(key.symbol()))
        && eq(&sel.timeframe, Some(key.timeframe()))
        && eq(&sel.category, key.category())
        && eq(&sel.name, key.name())
}

/// `kline/BTCUSDT/1m`: the series part of paths and findings.
pub fn series_label(key: &SeriesKey) -> String {
    key.to_string()
}
