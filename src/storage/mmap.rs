//! Read-only memory maps of published files, and zero-copy views into them.
//!
//! This is the only module of the crate allowed to use `unsafe`. Its soundness rests
//! on three invariants kept by the rest of the storage layer:
//! 1. a published file (chunk or sidecar) is never written again, truncated or
//!    renamed over; it is only ever unlinked, which leaves existing mappings valid;
//! 2. every view is bounds-checked against the mapping and alignment-checked before
//!    a typed slice is made;
//! 3. checksums are verified (by the caller) before any bytes are handed out as data:
//!    on the first mapping of a file in the process, and again on a later mapping
//!    unless the file's [`FileIdentity`] proves it is the very file verified before.
//!
//! A mapping can carry a [`Slot`] of a store's mapping budget (`storage::mapcache`): the
//! slot is taken before the file is mapped and given back when the mapping is dropped,
//! so the budget counts every live mapping exactly, including one that only an Arrow
//! buffer of an in-flight batch still holds.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_buffer::{Buffer, MutableBuffer};
use memmap2::{Mmap, MmapOptions};

/// Gives the memory the allocator holds free back to the kernel now. mimalloc keeps
/// freed pages for reuse and returns them only after a delay, checked when the thread
/// that freed them allocates again: a server idle after its start would keep the
/// scratch structures of the open (the catalog's scan, the versions file, the
/// registry's reconciliation) resident. Called once the open is done
/// (`query::Engine::open`). With the `system-alloc` feature (for heap profilers) it
/// does nothing.
pub fn release_free_memory() {
    #[cfg(not(feature = "system-alloc"))]
    // SAFETY: `mi_collect` takes no pointer and has no precondition: any thread may
    // call it at any time (it collects the calling thread's heap and the process'
    // free segments, which mimalloc's own locks guard).
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// One unit of a mapping budget, held by a live mapping and returned when it drops.
#[derive(Debug)]
pub struct Slot {
    live: Arc<AtomicUsize>,
}

impl Slot {
    /// Takes a slot of `live` if fewer than `max` are taken.
    pub fn try_take(live: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot {
            live: Arc::clone(live),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What identifies the file behind a mapping: device, inode, length, and the
/// modification and status-change times, as `fstat` on the mapped descriptor saw them.
/// Any write, truncation or attribute change of an inode moves its `ctime`, which no
/// process can set back, and a file renamed into place is another inode; so an equal
/// identity means the same, unchanged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileIdentity {
    #[cfg(unix)]
    fn of(file: &File) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }

    /// Without inode numbers and ctime there is no proof of sameness: always verify.
    #[cfg(not(unix))]
    fn of(_file: &File) -> Option<FileIdentity> {
        None
    }
}

/// What a [`MappedFile`] reads: a file's mapping, or bytes held in memory laid out
/// exactly like one (a chunk whose rows are in the write-ahead log and not yet in a
/// file: see `storage::wal`).
#[derive(Debug)]
enum Backing {
    Map(Mmap),
    /// 64-byte aligned (an Arrow buffer), immutable once built.
    Memory(Buffer),
    /// As `Memory`, owned by this mapping alone: an in-memory chunk's image, built for
    /// each series of each logged write (thousands per many-series write), has no
    /// `Buffer` and so no reference-counted allocation of its own; readers get views
    /// through the mapping's `Arc`, as of a file's mapping.
    Owned(MutableBuffer),
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Memory(b) => b.as_slice(),
            Backing::Owned(b) => b.as_slice(),
        }
    }
}

/// A read-only mapping of a whole file (or of bytes in memory laid out like one).
#[derive(Debug)]
pub struct MappedFile {
    map: Backing,
    identity: Option<FileIdentity>,
    /// The budget slot this mapping occupies (none for admin's one-off mappings).
    _slot: Option<Slot>,
}

impl MappedFile {
    /// Maps `path` read-only, outside any budget (admin checks map one file at a time
    /// and drop it). Empty files map to an empty view.
    pub fn open(path: &Path) -> io::Result<Arc<MappedFile>> {
        MappedFile::open_with(path, None)
    }

    /// Maps `path` read-only, occupying `slot` until the mapping is dropped.
    pub fn open_in(path: &Path, slot: Slot) -> io::Result<Arc<MappedFile>> {
        MappedFile::open_with(path, Some(slot))
    }

    fn open_with(path: &Path, slot: Option<Slot>) -> io::Result<Arc<MappedFile>> {
        let file = File::open(path)?;
        let identity = FileIdentity::of(&file);
        // SAFETY: published files are immutable (invariant 1 of this module): nothing in
        // FastK writes, truncates or renames over them after publication, so the mapped
        // bytes cannot change under the references this mapping hands out. A process
        // outside FastK modifying the data root is outside the contract; checksums catch
        // what it leaves behind.
        let map = unsafe { MmapOptions::new().map(&file)? };
        // The descriptor closes here: a mapping needs no open file, so the number of
        // descriptors a reader holds does not grow with the mappings.
        drop(file);
        Ok(Arc::new(MappedFile {
            map: Backing::Map(map),
            identity,
            _slot: slot,
        }))
    }

    /// Maps bytes `offset..offset + len` of `path` read-only (a chunk image inside a
    /// pack file), occupying `slot`: the view reads exactly like a file of its own of
    /// `len` bytes. The range must lie inside the file (checked against its length
    /// first: a mapping past the end would fault on access); `offset` need not be
    /// page aligned, and a range at a [`COLUMN_ALIGN`](super::format::COLUMN_ALIGN)
    /// offset keeps its columns aligned as in a file of its own. The identity is the
    /// whole file's.
    pub fn open_range_in(
        path: &Path,
        offset: u64,
        len: u64,
        slot: Slot,
    ) -> io::Result<Arc<MappedFile>> {
        let file = File::open(path)?;
        let identity = FileIdentity::of(&file);
        let file_len = file.metadata()?.len();
        let in_file = offset.checked_add(len).is_some_and(|end| end <= file_len);
        let len = usize::try_from(len)
            .ok()
            .filter(|_| in_file)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("range {offset}+{len} lies past the end of a {file_len}-byte file"),
                )
            })?;
        // SAFETY: as in `open_with`: the file is published and immutable (invariant 1),
        // and the range was checked against its length just above, so every mapped
        // byte is backed by the file.
        let map = unsafe { MmapOptions::new().offset(offset).len(len).map(&file)? };
        drop(file);
        Ok(Arc::new(MappedFile {
            map: Backing::Map(map),
            identity,
            _slot: Some(slot),
        }))
    }

    /// Bytes in memory read like a mapped file: no file, no identity, no budget slot.
    /// The runs of `parts` are copied once, in order, into a 64-byte aligned buffer, so
    /// every column offset that is aligned in a file is aligned here too.
    pub fn from_parts(parts: &[&[u8]]) -> Arc<MappedFile> {
        let len = parts.iter().map(|p| p.len()).sum();
        let mut buf = arrow_buffer::MutableBuffer::new(len);
        for p in parts {
            buf.extend_from_slice(p);
        }
        Arc::new(MappedFile {
            map: Backing::Memory(buf.into()),
            identity: None,
            _slot: None,
        })
    }

    /// `image` (built by the caller, 64-byte aligned as every Arrow buffer) as a file
    /// held in memory: an in-memory chunk built in place, with no copy.
    pub fn from_memory(image: MutableBuffer) -> Arc<MappedFile> {
        Arc::new(MappedFile {
            map: Backing::Owned(image),
            identity: None,
            _slot: None,
        })
    }

    /// As [`MappedFile::from_parts`], occupying `slot` like a mapping (a chunk read
    /// from a pack: bytes in memory that count against the same budget).
    pub fn from_parts_in(parts: &[&[u8]], slot: Slot) -> Arc<MappedFile> {
        let mut m = MappedFile::from_parts(parts);
        if let Some(inner) = Arc::get_mut(&mut m) {
            inner._slot = Some(slot);
        }
        m
    }

    /// `image` in memory in place of this mapping, which is unmapped now: the budget
    /// slot moves to the image when nothing else holds the mapping (a compressed chunk
    /// read through its decompressed image; see `storage::codec`).
    pub fn replaced_by(self: Arc<Self>, image: Buffer) -> Arc<MappedFile> {
        let slot = Arc::try_unwrap(self).ok().and_then(|m| m._slot);
        Arc::new(MappedFile {
            map: Backing::Memory(image),
            identity: None,
            _slot: slot,
        })
    }

    /// Whether this is bytes in memory rather than a file's mapping.
    pub fn is_memory(&self) -> bool {
        matches!(self.map, Backing::Memory(_) | Backing::Owned(_))
    }

    /// The identity of the mapped file when it was mapped (None where the platform
    /// cannot tell).
    pub fn identity(&self) -> Option<FileIdentity> {
        self.identity
    }

    /// The whole mapping.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Start address of the mapping (used by tests that prove zero copy).
    pub fn address_range(&self) -> std::ops::Range<usize> {
        let start = self.map.as_ptr() as usize;
        start..start + self.map.len()
    }

    /// `n` little-endian i64 values starting at byte `offset`.
    ///
    /// Panics if the range is out of bounds or misaligned; callers validate offsets
    /// against the file header first, so a panic here is a bug, not bad data.
    pub fn i64s(&self, offset: usize, n: usize) -> &[i64] {
        let bytes = self.checked_range(offset, n * 8);
        // SAFETY: `checked_range` proved the range lies inside the mapping and starts
        // 8-byte aligned; i64 has no invalid bit patterns; the mapping outlives the
        // returned borrow and is immutable (module invariant 1). Targets are little-endian
        // (asserted in `storage::mod`).
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<i64>(), n) }
    }

    /// `n` little-endian f64 values starting at byte `offset`.
    pub fn f64s(&self, offset: usize, n: usize) -> &[f64] {
        let bytes = self.checked_range(offset, n * 8);
        // SAFETY: as for `i64s`: bounds and alignment checked, every bit pattern is a
        // valid f64, and the immutable mapping outlives the borrow.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f64>(), n) }
    }

    /// An Arrow buffer over exactly `len` bytes at `offset`, owning a reference to the
    /// mapping: no bytes are copied, and the mapping lives as long as the buffer.
    pub fn buffer(self: &Arc<Self>, offset: usize, len: usize) -> Buffer {
        self.checked_range(offset, len);
        if let Backing::Memory(b) = &self.map {
            return b.slice_with_length(offset, len);
        }
        Buffer::from(bytes::Bytes::from_owner(MapSlice {
            map: Arc::clone(self),
            offset,
            len,
        }))
    }

    fn checked_range(&self, offset: usize, len: usize) -> &[u8] {
        let end = offset.checked_add(len).expect("mapped range overflows");
        assert!(
            end <= self.map.len(),
            "mapped range {offset}..{end} beyond {}",
            self.map.len()
        );
        let bytes = &self.map[offset..end];
        assert_eq!(
            bytes.as_ptr() as usize % 8,
            0,
            "mapped range at {offset} is not 8-byte aligned"
        );
        bytes
    }
}

/// An exact byte range of a mapping, kept alive by its `Arc`. Owning exactly the range
/// (not the whole mapping) makes Arrow report the true size of each batch, which keeps
/// Flight's encoder from splitting batches into tiny messages.
struct MapSlice {
    map: Arc<MappedFile>,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map.bytes()[self.offset..self.offset + self.len]
    }
}
