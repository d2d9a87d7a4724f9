//! Read-only memory maps of published files, and zero-copy views into them.
//!
//! This is the only module of the crate allowed to use `unsafe`. Its soundness rests
//! on three invariants kept by the rest of the storage layer:
//! 1. a published file (chunk or sidecar) is never written again, truncated or
//!    renamed over; it is only ever unlinked, which leaves existing mappings valid;
//! 2. every view is bounds-checked against the mapping and alignment-checked before
//!    a typed slice is made;
//! 3. checksums are verified (by the caller, once per mapping) before any bytes are
//!    handed out as data.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use arrow_buffer::Buffer;
use memmap2::{Mmap, MmapOptions};

/// A read-only mapping of a whole file.
#[derive(Debug)]
pub struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    /// Maps `path` read-only. Empty files map to an empty view.
    pub fn open(path: &Path) -> io::Result<Arc<MappedFile>> {
        let file = File::open(path)?;
        // SAFETY: published files are immutable (invariant 1 of this module): nothing in
        // FastK writes, truncates or renames over them after publication, so the mapped
        // bytes cannot change under the references this mapping hands out. A process
        // outside FastK modifying the data root is outside the contract; checksums catch
        // what it leaves behind.
        let map = unsafe { MmapOptions::new().map(&file)? };
        Ok(Arc::new(MappedFile { map }))
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
