//! The store's format version (`FORMAT`) and the upgrade of a version 2 store.
//!
//! Version 3 adds what a version 2 binary would misread or lose: the catalog's state
//! records (small series' rows kept in `CATALOG`, `storage::resident`). A version 2
//! store holds nothing version 3 reads differently, so its upgrade converts no data:
//! once an open has read the whole store (series, catalog, snapshots, log), it
//! rewrites the catalog with a version 2 header (a version 2 binary, which reads only
//! catalog version 1, then refuses the store instead of opening it without the rows
//! the catalog holds), then writes `FORMAT`. Each step is a whole-file replacement
//! (temp, fsync, rename, directory fsync) that a later open repeats if it did not
//! happen, so a crash at any point leaves a store that opens and finishes the upgrade.

use std::path::Path;

use super::catalog::Catalog;
use super::fsio;
use super::{Result, StorageError};

/// Name of the format file in the store root.
pub const FORMAT_FILE: &str = "FORMAT";
/// The format version this binary writes, and the newest it opens.
pub const STORE_FORMAT_VERSION: u32 = 3;
/// What a store with no `FORMAT` file is: version 2, or version 1 (whose manifests
/// open the same way and become version 2 at their next commit).
pub const UNMARKED_VERSION: u32 = 2;

const MAGIC: &[u8; 8] = b"FASTKFMT";
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const RESERVED_OFFSET: usize = VERSION_OFFSET + 4;
const CHECKSUM_OFFSET: usize = RESERVED_OFFSET + 4;
/// Bytes of the format file: magic, version, reserved, xxh3-64 of the bytes before it.
pub const FORMAT_LEN: usize = CHECKSUM_OFFSET + 8;
const _: () = assert!(FORMAT_LEN == 24);

/// What an open did to the store's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgraded {
    pub from: u32,
    pub to: u32,
}

/// The bytes of a format file saying `version`.
pub fn encode(version: u32) -> [u8; FORMAT_LEN] {
    let mut b = [0u8; FORMAT_LEN];
    b[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(MAGIC);
    b[VERSION_OFFSET..RESERVED_OFFSET].copy_from_slice(&version.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&b[..CHECKSUM_OFFSET]);
    b[CHECKSUM_OFFSET..].copy_from_slice(&sum.to_le_bytes());
    b
}

/// The version a format file says, or why its bytes are not one.
pub fn decode(bytes: &[u8]) -> std::result::Result<u32, String> {
    if bytes.len() != FORMAT_LEN {
        return Err(format!("{} bytes, not {FORMAT_LEN}", bytes.len()));
    }
    if &bytes[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC {
        return Err("not a format file (bad magic)".into());
    }
    let sum = u64::from_le_bytes(bytes[CHECKSUM_OFFSET..].try_into().expect("8 bytes"));
    if sum != xxhash_rust::xxh3::xxh3_64(&bytes[..CHECKSUM_OFFSET]) {
        return Err("checksum mismatch".into());
    }
    if bytes[RESERVED_OFFSET..CHECKSUM_OFFSET] != [0; 4] {
        return Err("reserved bytes are not zero".into());
    }
    let version = u32::from_le_bytes(
        bytes[VERSION_OFFSET..RESERVED_OFFSET]
            .try_into()
            .expect("4 bytes"),
    );
    if version <= UNMARKED_VERSION {
        return Err(format!(
            "version {version}: no store before 3 has this file"
        ));
    }
    Ok(version)
}

/// The format version of the store at `root` ([`UNMARKED_VERSION`] when it has no
/// `FORMAT` file). A store newer than this binary is refused before anything in it
/// is read or written; damaged bytes fail naming the file.
pub fn read(root: &Path) -> Result<u32> {
    let bytes = match std::fs::read(root.join(FORMAT_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UNMARKED_VERSION),
        Err(e) => return Err(StorageError::io(FORMAT_FILE, e)),
    };
    let version = decode(&bytes).map_err(|why| StorageError::corrupted(FORMAT_FILE, why))?;
    if version > STORE_FORMAT_VERSION {
        return Err(StorageError::PreconditionFailed(format!(
            "the store is format version {version}; this FastK opens up to version \
             {STORE_FORMAT_VERSION}: run a newer binary (nothing was changed)"
        )));
    }
    Ok(version)
}

/// Brings a store that opened whole to [`STORE_FORMAT_VERSION`]: the catalog's header
/// first, then `FORMAT` (each step durable before the next). `found` is what
/// [`read`] said; `fresh` says the open created the store (no upgrade to report).
pub fn finish(root: &Path, catalog: &Catalog, found: u32, fresh: bool) -> Result<Option<Upgraded>> {
    assert!(found <= STORE_FORMAT_VERSION, "read refused newer stores");
    if found == STORE_FORMAT_VERSION {
        return Ok(None);
    }
    catalog.upgrade_header()?;
    fsio::write_atomic(root, FORMAT_FILE, &[&encode(STORE_FORMAT_VERSION)])
        .map_err(|e| StorageError::io(FORMAT_FILE, e))?;
    assert_eq!(
        read(root)?,
        STORE_FORMAT_VERSION,
        "the format file just written"
    );
    if fresh {
        return Ok(None);
    }
    tracing::info!(
        from = found,
        to = STORE_FORMAT_VERSION,
        "the store is upgraded to format version {STORE_FORMAT_VERSION}; a binary before it no longer opens it"
    );
    Ok(Some(Upgraded {
        from: found,
        to: STORE_FORMAT_VERSION,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_file_round_trips_and_refuses_damage() {
        let b = encode(3);
        assert_eq!(decode(&b), Ok(3));
        for at in 0..FORMAT_LEN {
            let mut bad = b;
            bad[at] ^= 0x10;
            assert!(decode(&bad).is_err(), "a flipped byte {at}");
        }
        assert!(decode(&b[..FORMAT_LEN - 1]).is_err());
        assert!(decode(&encode(2)).is_err(), "no file says 2");
        assert_eq!(
            decode(&encode(9)),
            Ok(9),
            "newer versions decode; read refuses them"
        );
    }
}
