//! Opening the registry database, and telling "the disk is full" from "the database
//! is damaged".
//!
//! Why a separate path for a full disk: in WAL mode SQLite sizes a 32 KiB `-shm` file
//! on the first read of a connection, so when the last clean shutdown removed it and
//! the disk has since filled, even a read-only open fails (`SQLITE_IOERR_SHMSIZE`).
//! A server must still start there and serve every committed series; mistaking that
//! error for corruption would quarantine a healthy database (and lose the datasets,
//! features and factors it holds). So a space error opens the database read-only with
//! `immutable=1` (no `-shm` needed) when its WAL is empty, else plain read-only, else
//! not at all (offline); and every write is refused with a 503 until space returns.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::RegistryError;

/// How often `/health` may try to bring a degraded registry back.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Below this many free bytes, an I/O error of SQLite is taken for a full disk.
const NEARLY_FULL_BYTES: u64 = 1 << 20;

/// A change refused because the disk filled while the registry was writable.
pub const DISK_FULL: &str = "the disk is full: the registry cannot record the change and nothing was written; \
     retry when space is freed";
/// A change refused because the registry was opened read-only.
pub const READ_ONLY: &str = "the registry is read-only because the disk was full when the server \
     started: nothing was written; free space and retry";
/// Any call while the registry could not be opened at all.
pub const OFFLINE: &str = "the registry is unavailable because the disk was full when the server \
     started; free space and retry (series data is served from storage meanwhile)";

/// How the registry database is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Access {
    /// Normal operation.
    ReadWrite = 0,
    /// The disk was full at start: reads work, changes are refused (503).
    ReadOnly = 1,
    /// The database could not be opened at all: every call is refused (503).
    Offline = 2,
}

impl Access {
    pub(super) fn from_u8(v: u8) -> Access {
        match v {
            0 => Access::ReadWrite,
            1 => Access::ReadOnly,
            _ => Access::Offline,
        }
    }
}

/// Opens (creating if needed) the database read-write: WAL, `synchronous=FULL`, a
/// quick check, then pending migrations.
pub(super) fn open_read_write(
    path: &Path,
    migrations: &[&str],
) -> Result<Connection, RegistryError> {
    let conn = Connection::open(path).map_err(|e| classify(e, path))?;
    setup(&conn, migrations).map_err(|e| match e {
        RegistryError::Sqlite(e) => classify(e, path),
        e => e,
    })?;
    Ok(conn)
}

fn setup(conn: &Connection, migrations: &[&str]) -> Result<(), RegistryError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(RegistryError::Corrupted(check));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Opens the database without writing a byte: `immutable=1` when the WAL holds no
/// frames (the main file is then the whole truth, and no `-shm` is needed), else plain
/// read-only (which needs the existing `-shm`). The schema must be current: a
/// database that was never migrated has nothing to serve.
pub(super) fn open_read_only(
    path: &Path,
    schema_version: usize,
) -> Result<Connection, RegistryError> {
    if !path.is_file() {
        return Err(RegistryError::Unavailable(OFFLINE.into()));
    }
    let wal = path.with_file_name(format!(
        "{}-wal",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let wal_empty = std::fs::metadata(&wal).map_or(true, |m| m.len() == 0);
    let uri = file_uri(path);
    let mut attempts = Vec::new();
    if wal_empty {
        attempts.push(format!("{uri}?immutable=1"));
    }
    attempts.push(format!("{uri}?mode=ro"));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut last = None;
    for uri in attempts {
        let opened = Connection::open_with_flags(&uri, flags).and_then(|conn| {
            let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            conn.query_row("SELECT count(*) FROM series", [], |r| r.get::<_, i64>(0))?;
            Ok((conn, v))
        });
        match opened {
            Ok((conn, v)) if v as usize == schema_version => return Ok(conn),
            Ok((_, v)) => last = Some(RegistryError::Corrupted(format!("schema version {v}"))),
            Err(e) => last = Some(e.into()),
        }
    }
    Err(last.unwrap_or_else(|| RegistryError::Unavailable(OFFLINE.into())))
}

/// `file:` URI of `path`, percent-encoding every byte outside a safe set (SQLite
/// would read `?` and `#` as URI syntax, and `%` as an escape).
fn file_uri(path: &Path) -> String {
    let mut out = String::from("file:");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Maps a SQLite error to [`RegistryError::Unavailable`] when it means "cannot write
/// for lack of space or permission" (a full disk, a read-only file system, or an I/O
/// error while the disk is nearly full), else keeps it.
pub(super) fn classify(e: rusqlite::Error, path: &Path) -> RegistryError {
    if is_space_error(&e, path) {
        tracing::warn!(error = %e, "registry write refused: disk full or read-only");
        RegistryError::Unavailable(DISK_FULL.into())
    } else {
        RegistryError::Sqlite(e)
    }
}

fn is_space_error(e: &rusqlite::Error, path: &Path) -> bool {
    let Some(f) = e.sqlite_error() else {
        return false;
    };
    match f.code {
        ErrorCode::DiskFull | ErrorCode::ReadOnly => true,
        ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => {
            f.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE || nearly_full(path)
        }
        _ => false,
    }
}

fn nearly_full(path: &Path) -> bool {
    let dir = path.parent().unwrap_or(path);
    fs4::available_space(dir).is_ok_and(|free| free < NEARLY_FULL_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_escape_uri_syntax() {
        assert_eq!(
            file_uri(Path::new("/data/a b?#%/registry.sqlite")),
            "file:/data/a%20b%3F%23%25/registry.sqlite"
        );
    }
}
