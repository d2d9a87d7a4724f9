//! `repair`, `rebuild-manifest` and `compact`: the actions that change the store.
//!
//! Each change is a storage operation (`storage::maintain`, `Series::compact`); this
//! module picks the series, runs the operations and writes the report. Repair never
//! deletes data an operator may want back: corrupt chunks and unknown files move to
//! `<root>/quarantine/<ms>/<same relative path>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::checks::{check_series, finding};
use super::report::{ActionTaken, AdminReport};
use super::series_label;
use crate::error::Result;
use crate::record::{SeriesMeta, partition_label};
use crate::registry::{REGISTRY_FILE, Registry};
use crate::storage::maintain::Quarantine;
use crate::storage::series::MANIFEST_NAME;
use crate::storage::{Series, Store};

/// What an action works on: the store, the registry, and the selected series (`all`
/// when the request selected every series, which adds the store-wide checks).
pub(super) struct Scope<'a> {
    pub store: &'a Store,
    pub registry: &'a Registry,
    pub selected: &'a [Arc<Series>],
    pub all: bool,
}

fn action(
    series: Option<&str>,
    file: Option<String>,
    what: &str,
    detail: impl Into<String>,
) -> ActionTaken {
    ActionTaken {
        series: series.map(String::from),
        file,
        action: what.into(),
        detail: detail.into(),
    }
}

pub(super) fn repair(
    scope: &Scope<'_>,
    report: &mut AdminReport,
    progress: super::Progress<'_>,
) -> Result<()> {
    let quarantine = Quarantine::new(scope.store);
    let dry = report.dry_run;
    if scope.all {
        for (dir, why) in scope.store.unopenable() {
            if !dry {
                scope.store.quarantine_unopenable(&quarantine, dir)?;
            }
            report.actions.push(action(
                None,
                Some(dir.clone()),
                "quarantine",
                format!("series directory could not be opened: {why}"),
            ));
        }
        let truth: Vec<SeriesMeta> = scope
            .store
            .list()
            .iter()
            .map(|s| (*s.meta).clone())
            .collect();
        let rec = scope.registry.reconcile(&truth, dry)?;
        if !rec.is_empty() {
            report.actions.push(action(
                None,
                Some(REGISTRY_FILE.into()),
                "reconcile_registry",
                format!("{rec:?}"),
            ));
        }
    }
    let selected = scope.selected;
    for (i, s) in selected.iter().enumerate() {
        progress(i, selected.len(), s.rel_dir());
        let label = series_label(&s.meta.key);
        for c in s.repair(&quarantine, dry)? {
            report
                .actions
                .push(action(Some(&label), c.file, c.action, c.detail));
        }
    }
    // What remains after the repair (in a dry run: everything that was found).
    let mut after = AdminReport {
        findings: Vec::new(),
        actions: Vec::new(),
        ..report.clone()
    };
    for s in selected {
        check_series(s, true, &mut after);
    }
    report.findings = after.findings;
    report.chunks_checked = after.chunks_checked;
    report.bytes_checked = after.bytes_checked;
    Ok(())
}

pub(super) fn rebuild_manifests(
    selected: &[Arc<Series>],
    report: &mut AdminReport,
    progress: super::Progress<'_>,
) -> Result<()> {
    for (i, s) in selected.iter().enumerate() {
        progress(i, selected.len(), s.rel_dir());
        let label = series_label(&s.meta.key);
        let rebuilt = s.rebuild_manifest(report.dry_run)?;
        report.actions.push(action(
            Some(&label),
            Some(format!("{}/{MANIFEST_NAME}", s.rel_dir())),
            "rebuild_manifest",
            format!(
                "{} chunks, {} rows, version {}",
                rebuilt.chunks, rebuilt.rows, rebuilt.version
            ),
        ));
        for f in rebuilt.corrupt {
            report.findings.push(finding(
                Some(&label),
                None,
                Some(f),
                "chunk_corrupt",
                "chunk failed verification and was left out of the rebuilt manifest",
                "repair (quarantines it)",
            ));
        }
    }
    Ok(())
}

pub(super) fn compact(
    selected: &[Arc<Series>],
    report: &mut AdminReport,
    progress: super::Progress<'_>,
) -> Result<()> {
    if report.dry_run {
        for (i, s) in selected.iter().enumerate() {
            progress(i, selected.len(), s.rel_dir());
            let label = series_label(&s.meta.key);
            let snap = s.snapshot();
            for (m, chunks) in snap.live.iter().filter(|(_, c)| c.len() > 1) {
                report.actions.push(action(
                    Some(&label),
                    None,
                    "compact_month",
                    format!(
                        "{} would merge {} chunks",
                        partition_label(*m),
                        chunks.len()
                    ),
                ));
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for m in s.sealed_uncompressed(now) {
                report.actions.push(action(
                    Some(&label),
                    None,
                    "compress_month",
                    format!("{} would be compressed", partition_label(m)),
                ));
            }
            // What a pack pass would do now (months compressed by this run may join).
            for group in s.pack_groups(&snap, now) {
                report.actions.push(action(
                    Some(&label),
                    None,
                    "pack_months",
                    format!("{} months would be packed into one file", group.len()),
                ));
            }
        }
        return Ok(());
    }
    // Each series is its own commits: `storage.maintenance_threads` of them at once
    // share the cores (the codec) and the device's queue. The first failure stops the
    // claims; the actions of the series before it stay in the report.
    let threads = selected.first().map_or(1, |s| s.opts.maintenance_threads);
    let failed = AtomicBool::new(false);
    let claimed = AtomicUsize::new(0);
    let outcomes = crate::storage::parallel::map_in_order(
        selected,
        threads,
        "fastk-compact",
        || failed.load(Ordering::Relaxed),
        |_, s| {
            progress(
                claimed.fetch_add(1, Ordering::Relaxed),
                selected.len(),
                s.rel_dir(),
            );
            let r = compact_one(s);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            r
        },
    );
    for actions in outcomes.into_iter().flatten() {
        report.actions.extend(actions?);
    }
    Ok(())
}

/// Compacts, compresses and packs one series; the actions it took.
fn compact_one(s: &Series) -> Result<Vec<ActionTaken>> {
    let label = series_label(&s.meta.key);
    let mut actions = Vec::new();
    for month in s.compact()? {
        actions.push(action(
            Some(&label),
            None,
            "compact_month",
            format!("{month} merged into one chunk"),
        ));
    }
    // Sealed months are compressed too (storage.compression, compress_after_s).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for month in s.compress_sealed(now)? {
        actions.push(action(
            Some(&label),
            None,
            "compress_month",
            format!("{month} compressed"),
        ));
    }
    // Then the sealed compressed months of small chunks are packed (pack_target_bytes).
    let packed = s.pack_sealed(now)?;
    if !packed.is_empty() {
        actions.push(action(
            Some(&label),
            None,
            "pack_months",
            format!("{} packed into one file per group", packed.join(", ")),
        ));
    }
    Ok(actions)
}
