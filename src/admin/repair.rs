//! `repair`, `rebuild-manifest` and `compact`: actions that change the store.
//!
//! Repair never deletes data an operator may want back: corrupt chunks and unknown
//! files move to `<root>/quarantine/<ms>/<same relative path>`.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::checks::{check_series, finding};
use super::series_label;
use crate::error::{Error, Result};
use crate::query::types::{ActionTaken, AdminReport};
use crate::query::{Engine, now_ms};
use crate::record::{SeriesKind, SeriesMeta};
use crate::storage::chunk::{FileKind, MappedChunk, parse_data_file_name};
use crate::storage::format::{ChunkEntry, Manifest, STATE_LIVE, SidecarRef};
use crate::storage::mmap::MappedFile;
use crate::storage::recover::{is_temp, read_manifest, rebuild_manifest};
use crate::storage::series::MANIFEST_NAME;
use crate::storage::sidecar::{self, ValueIndex, ZoneMap};
use crate::storage::{Series, fsio};

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

/// Moves `rel` (relative to `root`) into the quarantine folder, keeping its path.
fn quarantine(root: &Path, stamp: i64, rel: &str) -> std::io::Result<()> {
    let target = root.join("quarantine").join(stamp.to_string()).join(rel);
    if let Some(parent) = target.parent() {
        fsio::create_dir_durable(parent)?;
    }
    fs::rename(root.join(rel), &target)?;
    if let Some(parent) = root.join(rel).parent() {
        fsio::fsync_dir(parent)?;
    }
    Ok(())
}

pub(super) fn repair(
    engine: &Engine,
    selected: &[Arc<Series>],
    all: bool,
    report: &mut AdminReport,
    progress: super::Progress<'_>,
) -> Result<()> {
    let stamp = now_ms();
    let root = engine.store.root().to_path_buf();
    let dry = report.dry_run;
    if all {
        for (dir, why) in engine.store.unopenable() {
            if !dry {
                quarantine(&root, stamp, dir).map_err(Error::internal)?;
            }
            report.actions.push(action(
                None,
                Some(dir.clone()),
                "quarantine",
                format!("series directory could not be opened: {why}"),
            ));
        }
        let truth: Vec<SeriesMeta> = engine
            .store
            .list()
            .iter()
            .map(|s| (*s.meta).clone())
            .collect();
        let rec = engine.registry.reconcile(&truth, dry)?;
        if !rec.is_empty() {
            report.actions.push(action(
                None,
                Some(crate::query::REGISTRY_FILE.into()),
                "reconcile_registry",
                format!("{rec:?}"),
            ));
        }
    }
    for (i, s) in selected.iter().enumerate() {
        progress(i, selected.len(), s.rel_dir());
        s.with_write_lock(|| repair_series(&root, stamp, s, dry, report))
            .map_err(Error::from)?;
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

fn repair_series(
    root: &Path,
    stamp: i64,
    s: &Series,
    dry: bool,
    report: &mut AdminReport,
) -> crate::storage::Result<()> {
    let label = series_label(&s.meta.key);
    let rel = s.rel_dir().to_string();
    let mut manifest = match read_manifest(s.dir(), &rel) {
        Ok(m) => m,
        Err(why) => {
            let (m, _) = rebuild_manifest(s.dir(), &rel, &s.opts, Some(&s.meta))?;
            report.actions.push(action(
                Some(&label),
                Some(format!("{rel}/{MANIFEST_NAME}")),
                "rebuild_manifest",
                why,
            ));
            m
        }
    };
    let mut changed = false;
    let mut dropped = false;
    let mut kept = Vec::with_capacity(manifest.entries.len());
    let mut prev_last: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    manifest.entries.sort_by_key(|e| (e.month, e.generation));
    for mut e in std::mem::take(&mut manifest.entries) {
        if e.state != STATE_LIVE {
            kept.push(e);
            continue;
        }
        let name = crate::storage::chunk::data_file_name(e.month, e.generation, FileKind::Chunk);
        let file_rel = format!("{rel}/{name}");
        let path = s.dir().join(&name);
        let verified = MappedChunk::open_verified(&path, &file_rel, Some(&e)).and_then(|c| {
            match misplaced(&c, e.month, prev_last.get(&e.month).copied()) {
                Some(why) => Err(crate::storage::StorageError::corrupted(
                    file_rel.clone(),
                    why,
                )),
                None => Ok(c),
            }
        });
        match verified {
            Ok(chunk) => {
                prev_last.insert(e.month, e.last_ts);
                if s.meta.key.kind() == SeriesKind::Scalar
                    && fix_sidecars(s, &chunk, &mut e, dry, &label, report)?
                {
                    changed = true;
                }
                kept.push(e);
            }
            Err(err) => {
                let exists = path.exists();
                if exists && !dry {
                    quarantine(root, stamp, &file_rel)
                        .map_err(|e| crate::storage::StorageError::io(file_rel.clone(), e))?;
                    for kind in [FileKind::ZoneMap, FileKind::ValueIndex] {
                        let side = format!(
                            "{rel}/{}",
                            crate::storage::chunk::data_file_name(e.month, e.generation, kind)
                        );
                        if root.join(&side).exists() {
                            let _ = quarantine(root, stamp, &side);
                        }
                    }
                }
                let what = if exists {
                    "quarantine_chunk"
                } else {
                    "drop_missing_chunk"
                };
                report.actions.push(action(
                    Some(&label),
                    Some(file_rel),
                    what,
                    format!("{err}; {} rows of this month are no longer served", e.rows),
                ));
                changed = true;
                dropped = true;
            }
        }
    }
    manifest.entries = kept;
    sweep_directory(root, stamp, s, &manifest, dry, &label, report)?;
    if changed && !dry {
        if dropped {
            // Clients holding the old version must notice that data went away.
            manifest.version += 1;
        }
        fsio::fsync_dir(s.dir()).map_err(|e| crate::storage::StorageError::io(rel.clone(), e))?;
        s.commit_manifest(manifest)?;
    }
    Ok(())
}

/// Why a verified chunk still cannot be served: rows outside its month, ts not
/// strictly ascending, or overlapping the previous chunk of the month.
fn misplaced(c: &MappedChunk, month: i32, prev_last: Option<i64>) -> Option<String> {
    let m = crate::record::MonthPartition(month);
    if c.header.first_ts < m.start_ts() || c.header.last_ts > m.end_ts() {
        return Some("rows fall outside the chunk's month".into());
    }
    if c.ts().windows(2).any(|w| w[0] >= w[1]) {
        return Some("ts is not strictly ascending".into());
    }
    if prev_last.is_some_and(|p| c.header.first_ts <= p) {
        return Some("overlaps the previous chunk of its month".into());
    }
    None
}

/// Rebuilds missing or corrupt sidecars of a verified chunk; true when `e` changed.
fn fix_sidecars(
    s: &Series,
    chunk: &MappedChunk,
    e: &mut ChunkEntry,
    dry: bool,
    label: &str,
    report: &mut AdminReport,
) -> crate::storage::Result<bool> {
    let vt = s.meta.value_type;
    let dir = s.dir();
    let zname = crate::storage::chunk::data_file_name(e.month, e.generation, FileKind::ZoneMap);
    let vname = crate::storage::chunk::data_file_name(e.month, e.generation, FileKind::ValueIndex);
    let z_ok = s.opts.zonemap_block_rows.is_none()
        || (e.zonemap.present()
            && fs::read(dir.join(&zname))
                .is_ok_and(|b| ZoneMap::parse(&b, vt, e.zonemap.xxh3).is_ok()));
    let v_ok = !s.opts.value_index
        || (e.vindex.present()
            && MappedFile::open(&dir.join(&vname))
                .is_ok_and(|f| ValueIndex::open(f, vt, e.vindex.xxh3).is_ok()));
    if z_ok && v_ok {
        return Ok(false);
    }
    let cols = [chunk.col(0), chunk.col(1)];
    let built = sidecar::build(&s.meta, &cols, &s.opts);
    for (ok, name, bytes, slot) in [
        (z_ok, zname, built.zonemap, &mut e.zonemap),
        (v_ok, vname, built.vindex, &mut e.vindex),
    ] {
        if ok {
            continue;
        }
        let Some(bytes) = bytes else { continue };
        let rel = format!("{}/{name}", s.rel_dir());
        if !dry {
            fsio::write_file_synced(dir, &name, &[&bytes])
                .map_err(|err| crate::storage::StorageError::io(rel.clone(), err))?;
        }
        *slot = SidecarRef {
            len: bytes.len() as u64,
            xxh3: xxhash_rust::xxh3::xxh3_64(&bytes),
        };
        report.actions.push(action(
            Some(label),
            Some(rel),
            "rebuild_sidecar",
            "rebuilt from the verified chunk",
        ));
    }
    Ok(true)
}

/// Temp files are deleted; files the manifest does not know are quarantined.
fn sweep_directory(
    root: &Path,
    stamp: i64,
    s: &Series,
    m: &Manifest,
    dry: bool,
    label: &str,
    report: &mut AdminReport,
) -> crate::storage::Result<()> {
    let known: std::collections::HashSet<(i32, u64)> =
        m.entries.iter().map(|e| (e.month, e.generation)).collect();
    let Ok(entries) = fs::read_dir(s.dir()) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().to_string();
        let rel = format!("{}/{name}", s.rel_dir());
        if name == MANIFEST_NAME {
            continue;
        }
        if is_temp(&name) {
            if !dry {
                let _ = fs::remove_file(entry.path());
            }
            report.actions.push(action(
                Some(label),
                Some(rel),
                "delete_temp_file",
                "left-over of an interrupted write",
            ));
            continue;
        }
        let placed = parse_data_file_name(&name).is_some_and(|(mo, g, _)| known.contains(&(mo, g)));
        if !placed {
            if !dry {
                quarantine(root, stamp, &rel)
                    .map_err(|e| crate::storage::StorageError::io(rel.clone(), e))?;
            }
            report.actions.push(action(
                Some(label),
                Some(rel),
                "quarantine",
                "file not listed in the manifest",
            ));
        }
    }
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
        let rel = s.rel_dir().to_string();
        let result = s.with_write_lock(|| -> crate::storage::Result<(Manifest, Vec<String>)> {
            let (m, corrupt) = rebuild_manifest(s.dir(), &rel, &s.opts, Some(&s.meta))?;
            if !report.dry_run {
                s.commit_manifest(m.clone())?;
            }
            Ok((m, corrupt))
        })?;
        let (m, corrupt) = result;
        let rows: u64 = m.entries.iter().map(|e| e.rows).sum();
        report.actions.push(action(
            Some(&label),
            Some(format!("{rel}/{MANIFEST_NAME}")),
            "rebuild_manifest",
            format!(
                "{} chunks, {rows} rows, version {}",
                m.entries.len(),
                m.version
            ),
        ));
        for f in corrupt {
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
    for (i, s) in selected.iter().enumerate() {
        progress(i, selected.len(), s.rel_dir());
        let label = series_label(&s.meta.key);
        if report.dry_run {
            let snap = s.snapshot();
            for (m, chunks) in snap.live.iter().filter(|(_, c)| c.len() > 1) {
                report.actions.push(action(
                    Some(&label),
                    None,
                    "compact_month",
                    format!(
                        "{} would merge {} chunks",
                        crate::record::MonthPartition(*m),
                        chunks.len()
                    ),
                ));
            }
            continue;
        }
        for month in s.compact()? {
            report.actions.push(action(
                Some(&label),
                None,
                "compact_month",
                format!("{month} merged into one chunk"),
            ));
        }
    }
    Ok(())
}
