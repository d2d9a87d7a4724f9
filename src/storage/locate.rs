//! Where the rows of a read live, chunk by chunk: for a client on the same host that
//! maps the chunk files itself instead of receiving their bytes (Flight `local-read`,
//! docs/flight.md).
//!
//! Only a raw chunk file can be handed out: its columns are at fixed offsets of an
//! immutable file. A compressed chunk is handed out as its raw copy
//! (`storage::localcopy`) when it has or can get one. Rows held in memory (the
//! write-ahead log's in-memory chunks) and compressed chunks with no copy are
//! reported as such, and the caller serves them another way.

use std::path::PathBuf;
use std::sync::Arc;

use super::chunk::{ChunkRef, FileKind};
use super::error::Result;
use super::format::CHUNK_HEADER_LEN;
use super::localcopy::LocalCopies;
use super::snapshot::{Snapshot, slice_of};
use crate::record::TsRange;

/// Bytes of one stored value (every column is i64 or f64 bits).
const VALUE_BYTES: u64 = 8;

/// Where one chunk's selected rows are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A raw chunk file, published and verified: column `i`'s selected rows start at
    /// byte `col_offset(i)` of this file.
    File {
        path: PathBuf,
        /// Length of the file and body checksum of the chunk, so a reader can tell it
        /// opened the very file planned (a name is reused only by a series registered
        /// again under the same key).
        file_len: u64,
        checksum: u64,
        /// Where the chunk's image (its header) starts in the file: 0 for a chunk
        /// file, the image's offset for a chunk in a pack.
        image_offset: u64,
        /// First byte of the first selected row of column 0 (`ts`).
        ts_offset: u64,
        /// Bytes from one column's start to the next.
        stride: u64,
    },
    /// Rows of the write-ahead log not yet folded into a file.
    Memory,
    /// A compressed chunk with no raw copy (`localcopy`): its rows exist raw only in
    /// this process's memory.
    Compressed,
}

impl Place {
    /// Byte offset in the file of column `col`'s first selected row (`File` only).
    pub fn col_offset(&self, col: usize) -> Option<u64> {
        match self {
            Place::File {
                ts_offset, stride, ..
            } => Some(ts_offset + col as u64 * stride),
            _ => None,
        }
    }
}

/// The selected rows of one chunk: where they are, how many, their `ts` bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub place: Place,
    pub rows: u64,
    pub first_ts: i64,
    pub last_ts: i64,
}

impl Snapshot {
    /// The chunks holding the rows of `range` (only its last `latest` rows when
    /// given), in `ts` order, with where each chunk's selected rows are. Each chunk
    /// is mapped (and so verified) while it is located, one at a time, and no mapping
    /// is kept. A compressed chunk is handed out as its raw copy in `copies` (made
    /// now when it has none) when it can be. More than `max_chunks` chunks is `None`,
    /// before any is mapped.
    pub fn locate(
        &self,
        range: TsRange,
        latest: Option<usize>,
        max_chunks: usize,
        copies: &LocalCopies,
    ) -> Result<Option<Vec<Located>>> {
        let plan = self.plan(range);
        let mut out = Vec::new();
        match latest {
            None => {
                if plan.len() > max_chunks {
                    return Ok(None);
                }
                for c in &plan {
                    out.extend(locate_one(c, range, None, copies)?);
                }
            }
            Some(n) => {
                let mut need = n;
                for c in plan.iter().rev() {
                    if need == 0 {
                        break;
                    }
                    if out.len() == max_chunks {
                        return Ok(None);
                    }
                    if let Some(l) = locate_one(c, range, Some(need), copies)? {
                        need -= l.rows as usize;
                        out.push(l);
                    }
                }
                out.reverse();
            }
        }
        Ok(Some(out))
    }
}

/// The rows of `range` in chunk `c` (only its last `last` of them when given), or
/// `None` when it holds none.
fn locate_one(
    c: &Arc<ChunkRef>,
    range: TsRange,
    last: Option<usize>,
    copies: &LocalCopies,
) -> Result<Option<Located>> {
    let m = c.map()?;
    let mut s = slice_of(&m, range);
    if let Some(n) = last {
        let take = n.min(s.len());
        s = s.sub(s.len() - take, s.len());
    }
    if s.is_empty() {
        return Ok(None);
    }
    let h = &m.header;
    let place = if c.is_memory() {
        Place::Memory
    } else if h.is_compressed() {
        match copies.copy_of(c, &m) {
            Some(copy) => Place::File {
                ts_offset: CHUNK_HEADER_LEN as u64 + s.start as u64 * VALUE_BYTES,
                path: copy.path,
                file_len: copy.file_len,
                checksum: copy.checksum,
                image_offset: 0,
                stride: copy.stride,
            },
            None => Place::Compressed,
        }
    } else {
        // A raw chunk in a pack is handed out like a file: the pack, and the image's
        // place in it.
        let (file_len, image_offset) = if c.is_packed() {
            (c.entry.pack.len, c.entry.pack.offset)
        } else {
            (h.file_len(), 0)
        };
        Place::File {
            path: std::path::absolute(c.path(FileKind::Chunk))
                .unwrap_or_else(|_| c.path(FileKind::Chunk)),
            file_len,
            checksum: h.body_xxh3,
            image_offset,
            ts_offset: image_offset + CHUNK_HEADER_LEN as u64 + s.start as u64 * VALUE_BYTES,
            stride: h.stride,
        }
    };
    let ts = s.ts();
    Ok(Some(Located {
        place,
        rows: s.len() as u64,
        first_ts: ts[0],
        last_ts: ts[ts.len() - 1],
    }))
}
