//! `validate` and `scrub`: read-only checks that produce findings.

use std::collections::HashSet;
use std::fs;

use super::repair::Scope;
use super::report::{AdminReport, Finding};
use super::series_label;
use crate::record::{SeriesKind, SeriesMeta, partition_label};
use crate::registry::REGISTRY_FILE;
use crate::storage::Series;
use crate::storage::chunk::{FileKind, parse_data_file_name};
use crate::storage::maintain::is_temp;
use crate::storage::pack::parse_pack_file_name;
use crate::storage::series::MANIFEST_NAME;
use crate::storage::verify::{verify_chunk, verify_sidecar};

/// Builds a finding.
pub(super) fn finding(
    series: Option<&str>,
    month: Option<i32>,
    file: Option<String>,
    kind: &str,
    detail: impl Into<String>,
    suggested: &str,
) -> Finding {
    Finding {
        series: series.map(String::from),
        month: month.map(partition_label),
        file,
        kind: kind.into(),
        detail: detail.into(),
        suggested_action: suggested.into(),
    }
}

pub(super) fn validate(scope: &Scope<'_>, report: &mut AdminReport, progress: super::Progress<'_>) {
    if scope.all {
        store_checks(scope, report);
    }
    let selected = scope.selected;
    for (i, s) in selected.iter().enumerate() {
        progress(i, selected.len(), s.rel_dir());
        check_series(s, report.deep, report);
        if let Some(u) = s.snapshot().unfolded {
            report.log_unfolded_rows += u.rows;
            report.log_unfolded_series += 1;
        }
    }
}

/// Checks that span the store: unopenable directories and the registry catalog.
fn store_checks(scope: &Scope<'_>, report: &mut AdminReport) {
    for (dir, why) in scope.store.unopenable() {
        report.findings.push(finding(
            None,
            None,
            Some(dir.clone()),
            "series_unopenable",
            why,
            "repair (quarantines the directory)",
        ));
    }
    match scope.registry.integrity_check() {
        Ok(problems) if !problems.is_empty() => report.findings.push(finding(
            None,
            None,
            Some(REGISTRY_FILE.into()),
            "registry_corrupt",
            problems.join("; "),
            "restore the registry from a backup; series are rebuilt from storage by repair",
        )),
        Err(e) => report.findings.push(finding(
            None,
            None,
            Some(REGISTRY_FILE.into()),
            "registry_corrupt",
            e.to_string(),
            "restore the registry from a backup; series are rebuilt from storage by repair",
        )),
        Ok(_) => {}
    }
    let truth: Vec<SeriesMeta> = scope
        .store
        .list()
        .iter()
        .map(|s| (*s.meta).clone())
        .collect();
    if let Ok(rec) = scope.registry.reconcile(&truth, true) {
        for k in rec.added {
            report.findings.push(finding(
                Some(&k),
                None,
                None,
                "registry_missing_series",
                "storage has the series, the registry catalog does not",
                "repair (re-catalogs from storage)",
            ));
        }
        for k in rec.removed {
            report.findings.push(finding(
                Some(&k),
                None,
                None,
                "registry_extra_series",
                "the registry catalogs a series storage does not have",
                "repair (re-catalogs from storage)",
            ));
        }
        for k in rec.updated {
            report.findings.push(finding(
                Some(&k),
                None,
                None,
                "registry_mismatch",
                "registry metadata differs from the series manifest",
                "repair (re-catalogs from storage)",
            ));
        }
    }
}

/// Checks one series; `deep` verifies every checksum.
pub fn check_series(s: &Series, deep: bool, report: &mut AdminReport) {
    let label = series_label(&s.meta.key);
    let label = label.as_str();
    let rel = s.rel_dir().to_string();
    if let Err(why) = s.manifest_on_disk() {
        report.findings.push(finding(
            Some(label),
            None,
            Some(format!("{rel}/{MANIFEST_NAME}")),
            "manifest_corrupt",
            why,
            "rebuild-manifest",
        ));
    }
    let snap = s.snapshot();
    // Rows in memory (write-ahead log, not yet folded) have no file to check; the file
    // chunks an in-memory rewrite superseded are still the manifest's.
    let mut known: HashSet<(i32, u64)> = snap
        .obsolete
        .iter()
        .map(|e| (e.month, e.generation))
        .chain(
            snap.superseded
                .iter()
                .map(|c| (c.entry.month, c.entry.generation)),
        )
        .collect();
    // A packed chunk's file is its pack; obsolete packed entries keep their pack listed
    // until it is unlinked.
    let packs: HashSet<u64> = snap
        .obsolete
        .iter()
        .map(|e| e.pack.generation)
        .chain(snap.chunks().map(|c| c.entry.pack.generation))
        .chain(snap.superseded.iter().map(|c| c.entry.pack.generation))
        .filter(|&g| g != 0)
        .collect();
    for (&month, chunks) in &snap.live {
        let mut prev_last = i64::MIN;
        let part = s.meta.partitioning();
        for c in chunks.iter().filter(|c| !c.is_memory()) {
            known.insert((month, c.entry.generation));
            report.chunks_checked += 1;
            let file = c.rel_path(FileKind::Chunk);
            let (problem, read) = verify_chunk(s, c, deep);
            report.bytes_checked += read;
            if let Some((kind, detail)) = problem {
                let suggested = match kind {
                    "chunk_missing" => {
                        "repair (drops the entry); restore the month from a backup or re-import it"
                    }
                    _ => "repair (quarantines the file and drops the entry); re-import the month",
                };
                report.findings.push(finding(
                    Some(label),
                    Some(month),
                    Some(file.clone()),
                    kind,
                    detail,
                    suggested,
                ));
            }
            if c.entry.first_ts <= prev_last {
                report.findings.push(finding(
                    Some(label),
                    Some(month),
                    Some(file.clone()),
                    "partition_overlap",
                    "chunk overlaps the previous chunk of its month",
                    "repair (quarantines the later, overlapping chunk); re-import its rows",
                ));
            }
            if c.entry.first_ts < part.start_ts(month) || c.entry.last_ts > part.end_ts(month) {
                report.findings.push(finding(
                    Some(label),
                    Some(month),
                    Some(file),
                    "chunk_outside_month",
                    "chunk rows fall outside its month",
                    "repair (quarantines the chunk); re-import its rows",
                ));
            }
            prev_last = c.entry.last_ts;
            if s.meta.key.kind() == SeriesKind::Scalar {
                check_sidecars(s, c, deep, label, report);
            }
        }
    }
    check_directory(s, (&known, &packs), label, report);
}

fn check_sidecars(
    s: &Series,
    c: &crate::storage::chunk::ChunkRef,
    deep: bool,
    label: &str,
    report: &mut AdminReport,
) {
    let vt = s.meta.value_type;
    let month = Some(c.entry.month);
    let (want_zonemap, want_vindex) =
        crate::storage::sidecar::wanted(&s.meta, c.entry.rows, &s.opts);
    let wanted = [
        (FileKind::ZoneMap, c.entry.zonemap, want_zonemap),
        (FileKind::ValueIndex, c.entry.vindex, want_vindex),
    ];
    for (kind, sref, enabled) in wanted {
        let rel = c.rel_path(kind);
        if !sref.present() {
            if enabled {
                report.findings.push(finding(
                    Some(label),
                    month,
                    Some(rel),
                    "sidecar_missing",
                    "the chunk has no sidecar of this kind",
                    "repair (rebuilds it from the chunk)",
                ));
            }
            continue;
        }
        let (problem, read) = verify_sidecar(c, kind, sref, vt, deep);
        report.bytes_checked += read;
        if let Some((k, detail)) = problem {
            report.findings.push(finding(
                Some(label),
                month,
                Some(rel),
                k,
                detail,
                "repair (rebuilds it from the chunk)",
            ));
        }
    }
}

/// Temp files and files the manifest does not account for.
fn check_directory(
    s: &Series,
    (known, packs): (&HashSet<(i32, u64)>, &HashSet<u64>),
    label: &str,
    report: &mut AdminReport,
) {
    let Ok(entries) = fs::read_dir(s.dir()) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    for name in names {
        let rel = format!("{}/{name}", s.rel_dir());
        if name == MANIFEST_NAME {
            continue;
        }
        if is_temp(&name) {
            report.findings.push(finding(
                Some(label),
                None,
                Some(rel),
                "temp_file",
                "left-over temp file of an interrupted write",
                "repair (deletes it); it is also removed on the next open",
            ));
            continue;
        }
        if parse_pack_file_name(&name).is_some_and(|g| packs.contains(&g)) {
            continue;
        }
        match parse_data_file_name(&name) {
            Some((m, g, _)) if known.contains(&(m, g)) => {}
            _ => report.findings.push(finding(
                Some(label),
                None,
                Some(rel),
                "unknown_file",
                "file is not listed in the manifest",
                "repair (moves it to quarantine/)",
            )),
        }
    }
}
