//! Checks of a series' stored files against its manifest, for `admin validate`:
//! reading only. Admin decides what a fault means and what to suggest; what a chunk
//! or sidecar file must look like is said here, beside the code that writes them.

use std::fs;
use std::io::Read;

use super::Series;
use super::chunk::{ChunkRef, FileKind, MappedChunk, open_entry_verified};
use super::format::{CHUNK_HEADER_LEN, ChunkEntry, ChunkHeader, SidecarRef};
use super::mmap::MappedFile;
use super::sidecar::{ValueIndex, ZoneMap};
use crate::record::ValueType;

/// A fault found: its finding kind (`chunk_missing`, `chunk_corrupt`,
/// `chunk_out_of_order`, `sidecar_missing`, `sidecar_corrupt`) and what was seen.
pub type Fault = (&'static str, String);

/// Checks one chunk of `s` on disk (a file of its own or a range of a pack) against
/// its manifest entry: its length and header, and with `deep` the body checksum, the
/// decompression and the `ts` order. Returns the fault, if any, and the bytes read.
pub fn verify_chunk(s: &Series, c: &ChunkRef, deep: bool) -> (Option<Fault>, u64) {
    let mut read = 0;
    let fault = if c.is_packed() {
        verify_packed(s, c, deep, &mut read)
    } else {
        let file = c.rel_path(FileKind::Chunk);
        verify_file(&c.path(FileKind::Chunk), &file, &c.entry, deep, &mut read)
    };
    (fault, read)
}

/// Checks the present sidecar `kind` of chunk `c` (described by `sref`): its length,
/// and with `deep` its checksum and structure. Returns the fault and the bytes read.
pub fn verify_sidecar(
    c: &ChunkRef,
    kind: FileKind,
    sref: SidecarRef,
    vt: ValueType,
    deep: bool,
) -> (Option<Fault>, u64) {
    let mut read = 0u64;
    let read = &mut read;
    let problem = match c.read_stored(kind) {
        Err(e) => Some(("sidecar_missing", e.to_string())),
        Ok(b) if b.len() as u64 != sref.len => Some((
            "sidecar_corrupt",
            format!("{} bytes, the manifest says {}", b.len(), sref.len),
        )),
        Ok(b) if deep => {
            *read += b.len() as u64;
            let parsed = match kind {
                FileKind::ZoneMap => ZoneMap::parse(&b, vt, sref.xxh3).map(|_| ()),
                _ => ValueIndex::open(MappedFile::from_parts(&[&b]), vt, sref.xxh3).map(|_| ()),
            };
            parsed.err().map(|e| ("sidecar_corrupt", e))
        }
        Ok(_) => None,
    };
    (problem, *read)
}

/// [`verify_file`] for a chunk in a pack: its range of the pack is read (a short pack
/// is a missing chunk), its header checked against the entry, and with `deep` the
/// body checksum, the decompression and the `ts` order.
fn verify_packed(
    s: &Series,
    c: &ChunkRef,
    deep: bool,
    read: &mut u64,
) -> Option<(&'static str, String)> {
    match fs::metadata(c.path(FileKind::Chunk)) {
        Err(err) => return Some(("chunk_missing", format!("cannot stat the pack: {err}"))),
        Ok(md) if md.len() != c.entry.pack.len => {
            let detail = format!(
                "pack is {} bytes, the manifest says {}",
                md.len(),
                c.entry.pack.len
            );
            return Some(("chunk_corrupt", detail));
        }
        Ok(_) => {}
    }
    let bytes = match c.read_stored(FileKind::Chunk) {
        Ok(b) => b,
        Err(err) => {
            return Some((
                "chunk_corrupt",
                format!("cannot read the chunk from its pack: {err}"),
            ));
        }
    };
    if !deep {
        return match ChunkHeader::decode(&bytes) {
            Err(d) => Some(("chunk_corrupt", d)),
            Ok(h)
                if h.body_xxh3 != c.entry.checksum
                    || h.rows != c.entry.rows
                    || h.generation != c.entry.generation =>
            {
                Some((
                    "chunk_corrupt",
                    "chunk header disagrees with the manifest entry".into(),
                ))
            }
            Ok(_) => None,
        };
    }
    *read += bytes.len() as u64;
    match open_entry_verified(s.dir(), s.rel_dir(), &c.entry) {
        Err(err) => Some(("chunk_corrupt", err.to_string())),
        Ok(m) if !m.keys_ascend() => Some((
            "chunk_out_of_order",
            "keys (ts, and seq for ticks) are not strictly ascending".into(),
        )),
        Ok(_) => None,
    }
}

/// Returns (finding kind, detail) when the chunk is not right.
fn verify_file(
    path: &std::path::Path,
    rel: &str,
    e: &ChunkEntry,
    deep: bool,
    read: &mut u64,
) -> Option<(&'static str, String)> {
    let md = match fs::metadata(path) {
        Ok(md) => md,
        Err(err) => return Some(("chunk_missing", format!("cannot stat the chunk: {err}"))),
    };
    if md.len() != e.file_len {
        return Some((
            "chunk_corrupt",
            format!(
                "file is {} bytes, the manifest says {}",
                md.len(),
                e.file_len
            ),
        ));
    }
    if deep {
        *read += md.len();
        return match MappedChunk::open_verified(path, rel, Some(e)) {
            Err(err) => Some(("chunk_corrupt", err.to_string())),
            Ok(m) if !m.keys_ascend() => Some((
                "chunk_out_of_order",
                "keys (ts, and seq for ticks) are not strictly ascending".into(),
            )),
            Ok(_) => None,
        };
    }
    let mut head = vec![0u8; CHUNK_HEADER_LEN];
    let read = fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if let Err(err) = read {
        return Some(("chunk_corrupt", format!("cannot read the header: {err}")));
    }
    match ChunkHeader::decode(&head) {
        Err(d) => Some(("chunk_corrupt", d)),
        Ok(h) if h.body_xxh3 != e.checksum || h.rows != e.rows || h.generation != e.generation => {
            Some((
                "chunk_corrupt",
                "chunk header disagrees with the manifest entry".into(),
            ))
        }
        Ok(_) => None,
    }
}
