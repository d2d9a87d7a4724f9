//! Crash-safe file publication: temp file, fsync, rename, fsync the directory.
//!
//! A published file is never modified again. Temp files start with [`TEMP_PREFIX`]
//! and are removed on open; a crash therefore leaves at most stray temp files.
//! Files no manifest can refer to yet (a write's new chunks) skip the temp name:
//! see [`write_unreferenced_synced`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every temp file; recovery deletes files that carry it.
pub const TEMP_PREFIX: &str = ".tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `parts` to `dir/name` through a temp file that is fsynced and renamed into
/// place. The directory itself is *not* fsynced: call [`fsync_dir`] once after a group
/// of files, before anything that depends on them is committed.
pub fn write_file_synced(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<()> {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!("{TEMP_PREFIX}{}-{n}-{name}", std::process::id());
    write_unreferenced_synced(dir, &tmp, parts)?;
    let renamed = fs::rename(dir.join(&tmp), dir.join(name));
    if renamed.is_err() {
        let _ = fs::remove_file(dir.join(&tmp));
    }
    renamed
}

/// Writes `dir/name` in place (created or truncated) and fsyncs it, for a file that no
/// committed manifest refers to yet: the chunk and sidecar files of a write in
/// progress, whose generation is at or past the manifest's `next_generation`. Such a
/// file joins the store only when a manifest naming it is committed, after this fsync
/// and a directory fsync, so a crash can leave at most a partial file of an
/// uncommitted generation, which recovery removes; a rename would add nothing but a
/// second directory operation per file. On error the file is removed.
pub fn write_unreferenced_synced(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<()> {
    let path = dir.join(name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&path);
    }
    result
}

/// Writes one file and makes its directory entry durable: the commit primitive.
pub fn write_atomic(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<()> {
    write_file_synced(dir, name, parts)?;
    fsync_dir(dir)
}

/// Makes renames, creations and unlinks inside `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, fsyncing each parent whose entries changed.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Removes leftover temp files in `dir`; returns how many were removed.
pub fn remove_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsync_dir(dir)?;
    }
    Ok(removed)
}
