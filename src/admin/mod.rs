//! Integrity and operations: validate, scrub, repair, rebuild-manifest, compact.
//!
//! One implementation behind three doors: `fastk admin ... --root DIR` (offline), the
//! HTTP `POST /v1/admin/{action}` endpoints and the Flight actions. Every finding names
//! the series, month and file (relative to the data root) and suggests an action;
//! `repair` quarantines instead of deleting, so nothing an operator may need is lost.

mod checks;
mod repair;

use std::time::Instant;

use crate::error::{Error, Result};
use crate::query::Engine;
use crate::query::types::{AdminReport, AdminRequest, SeriesSelector};
use crate::record::SeriesKey;
use crate::storage::Series;

pub use checks::check_series;

/// The admin actions, in the names the wire uses.
pub const ACTIONS: [&str; 5] = ["validate", "scrub", "repair", "rebuild-manifest", "compact"];

/// Reports progress of a long action: `(series done, series total, current series)`.
pub type Progress<'a> = &'a (dyn Fn(usize, usize, &str) + Sync);

/// Runs `action` over the series `req.series` selects.
pub fn run(engine: &Engine, action: &str, req: &AdminRequest) -> Result<AdminReport> {
    run_with_progress(engine, action, req, &|_, _, _| {})
}

/// As [`run`], calling `progress` before each series (the CLI draws a bar with it).
pub fn run_with_progress(
    engine: &Engine,
    action: &str,
    req: &AdminRequest,
    progress: Progress<'_>,
) -> Result<AdminReport> {
    let started = Instant::now();
    let selected = select(engine, req.series.as_ref());
    let all = req.series.is_none();
    let mut report = AdminReport {
        action: action.to_string(),
        dry_run: req.dry_run.unwrap_or(false),
        deep: req.deep.unwrap_or(false) || action == "scrub",
        series_checked: selected.len() as u64,
        chunks_checked: 0,
        bytes_checked: 0,
        findings: Vec::new(),
        actions: Vec::new(),
        clean: true,
        duration_ms: 0,
    };
    match action {
        "validate" | "scrub" => checks::validate(engine, &selected, all, &mut report, progress),
        "repair" => repair::repair(engine, &selected, all, &mut report, progress)?,
        "rebuild-manifest" => repair::rebuild_manifests(&selected, &mut report, progress)?,
        "compact" => repair::compact(&selected, &mut report, progress)?,
        other => {
            return Err(Error::invalid(format!(
                "unknown admin action {other:?}; expected one of {}",
                ACTIONS.join(", ")
            )));
        }
    }
    report.clean = report.findings.is_empty();
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

fn select(engine: &Engine, sel: Option<&SeriesSelector>) -> Vec<std::sync::Arc<Series>> {
    engine
        .store
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
