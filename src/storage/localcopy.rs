//! Raw copies of compressed chunks, for co-located readers (Flight `local-read`,
//! docs/flight.md "Co-located reads").
//!
//! A compressed month's raw columns exist only in this process's memory, so a client
//! that maps files cannot map them. The first `local-read` that meets such a chunk
//! writes its decompressed image, as an ordinary raw chunk file (header and
//! column-major body, its own body checksum), into `<root>/local/`, and plans a file
//! part over that copy; later reads hand out the same copy. The client then maps the
//! page cache as it maps a raw chunk file, with no copy on either side after the
//! first read.
//!
//! The copies are a cache, not data:
//! - written under a temp name and renamed into place, never modified after (the
//!   rule a planned file relies on);
//! - not fsynced: the directory is emptied on every open, so a crash leaves nothing
//!   anyone reads;
//! - bounded by `storage.local_copy_bytes`: past it the least recently handed out
//!   copy is unlinked (a client that already mapped it keeps its mapping; one that
//!   had not opened it yet asks for a new plan, as for any unlinked file), and a
//!   chunk whose copy does not fit, or whose copy cannot be written (a full disk),
//!   stays a rows part served by DoGet.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use xxhash_rust::xxh3::xxh3_64;

use super::chunk::{ChunkRef, FileKind};
use super::error::{Result, StorageError};
use super::format::{ChunkParts, FLAG_COMPRESSED};
use super::fsio;
use super::mapped::MappedChunk;
use crate::sync::LockExt;

/// The directory of the copies, under the store root.
pub const LOCAL_DIR: &str = "local";

/// Default of `storage.local_copy_bytes`: forty years of 1m bars of one symbol
/// (25 MB each), a small share of any disk the store lives on.
pub const DEFAULT_LOCAL_COPY_BYTES: u64 = 1 << 30;

/// One copy, as a plan names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub path: PathBuf,
    pub file_len: u64,
    /// Body checksum of the copy (raw), at bytes 96..104 of its header.
    pub checksum: u64,
    pub stride: u64,
}

#[derive(Debug)]
struct Entry {
    copy: Copy,
    /// When it was last handed out (a tick of [`State::tick`]).
    used: u64,
}

#[derive(Debug, Default)]
struct State {
    tick: u64,
    bytes: u64,
    files: HashMap<String, Entry>,
}

/// The store's raw copies (see the module docs).
#[derive(Debug)]
pub struct LocalCopies {
    dir: PathBuf,
    budget: u64,
    state: Mutex<State>,
}

impl LocalCopies {
    /// Empties (or creates) `<root>/local/` and starts with no copies. A budget of 0
    /// makes no copy, and no directory.
    pub fn open(root: &Path, budget: u64) -> Result<LocalCopies> {
        // Absolute: a plan names the copies to another process.
        let dir = std::path::absolute(root.join(LOCAL_DIR))
            .map_err(|e| StorageError::io(LOCAL_DIR, e))?;
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| StorageError::io(LOCAL_DIR, e))?;
        }
        if budget > 0 {
            fs::create_dir(&dir).map_err(|e| StorageError::io(LOCAL_DIR, e))?;
        }
        Ok(LocalCopies {
            dir,
            budget,
            state: Mutex::default(),
        })
    }

    /// Bytes of the copies on disk now.
    pub fn bytes(&self) -> u64 {
        self.state.locked().bytes
    }

    /// The configured budget (`storage.local_copy_bytes`).
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The raw copy of compressed chunk `c`, whose decompressed image is `m`: made now
    /// unless it exists. `None` when it cannot be had: copies are off, the copy alone
    /// is over the budget, or writing it failed (logged); the caller serves the rows
    /// another way.
    pub fn copy_of(&self, c: &ChunkRef, m: &MappedChunk) -> Option<Copy> {
        debug_assert!(
            m.header.is_compressed(),
            "only compressed chunks are copied"
        );
        if self.budget == 0 {
            return None;
        }
        let name = copy_name(c, m);
        {
            let mut st = self.state.locked();
            st.tick += 1;
            let tick = st.tick;
            if let Some(e) = st.files.get_mut(&name) {
                e.used = tick;
                return Some(e.copy.clone());
            }
        }
        let mut header = m.header.clone();
        header.flags &= !FLAG_COMPRESSED;
        header.body_len = 0;
        let cols: Vec<&[i64]> = (0..header.ncols).map(|i| m.col(i)).collect();
        let parts = ChunkParts::new(header, &cols);
        let len = parts.len() as u64;
        if len > self.budget {
            return None;
        }
        if let Err(e) = fsio::write_file_unsynced(&self.dir, &name, &parts.slices()) {
            tracing::warn!(copy = %name, error = %e, "local-read: no raw copy of a compressed chunk (its rows go through DoGet)");
            return None;
        }
        let copy = Copy {
            path: self.dir.join(&name),
            file_len: len,
            checksum: parts.header.body_xxh3,
            stride: parts.header.stride,
        };
        self.insert(name, copy.clone());
        Some(copy)
    }

    /// Records a copy just written, unlinking the least recently used ones until the
    /// total fits the budget again.
    fn insert(&self, name: String, copy: Copy) {
        let mut st = self.state.locked();
        st.tick += 1;
        let tick = st.tick;
        let len = copy.file_len;
        if let Some(e) = st.files.get_mut(&name) {
            // Another read made the same copy meanwhile (same bytes; its rename won
            // or lost, either file is the copy).
            e.used = tick;
            return;
        }
        while st.bytes + len > self.budget {
            let Some(oldest) = st
                .files
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            if let Some(e) = st.files.remove(&oldest) {
                st.bytes -= e.copy.file_len;
                if let Err(err) = fs::remove_file(&e.copy.path)
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(copy = %oldest, error = %err, "local-read: could not unlink an evicted raw copy");
                }
            }
        }
        st.bytes += len;
        st.files.insert(name, Entry { copy, used: tick });
        assert!(
            st.bytes <= self.budget,
            "local copies: {} bytes over the budget {}",
            st.bytes,
            self.budget
        );
    }
}

/// The copy's file name: the chunk's place (its file, its image in a pack) and its
/// compressed body's checksum, so a rewritten month (another generation) gets another
/// name.
fn copy_name(c: &ChunkRef, m: &MappedChunk) -> String {
    let place = format!(
        "{}@{}#{}",
        c.rel_path(FileKind::Chunk),
        c.entry.pack.offset,
        c.entry.generation
    );
    format!(
        "{:016x}-{:016x}.chunk",
        xxh3_64(place.as_bytes()),
        m.header.body_xxh3
    )
}
