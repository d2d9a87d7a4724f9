//! Crash-safe file publication: temp file, fsync, rename, fsync the directory.
//!
//! A published file is never modified again. Temp files start with [`TEMP_PREFIX`]
//! and are removed on open; a crash therefore leaves at most stray temp files.
//! Files no manifest can refer to yet (a write's new chunks) skip the temp name:
//! see [`write_unreferenced_synced`].
//!
//! Every primitive passes through a [`failpoints`] check first, so tests can make any
//! single write, fsync, rename, directory fsync, directory creation or thread spawn
//! fail and watch the caller's error branch.

#[doc(hidden)]
pub mod failpoints;

use crate::sync::LockExt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use failpoints::Op;

/// Prefix of every temp file; recovery deletes files that carry it.
pub const TEMP_PREFIX: &str = ".tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `parts` to `dir/name` through a temp file that is fsynced and renamed into
/// place. The directory itself is *not* fsynced: call [`fsync_dir`] once after a group
/// of files, before anything that depends on them is committed.
pub fn write_file_synced(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<()> {
    write_file_renamed(dir, name, parts, true)
}

/// [`write_file_synced`] without any fsync, for a cache that is emptied on open (the
/// raw copies of `storage::localcopy`): the name still never shows a partial file.
pub fn write_file_unsynced(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<()> {
    write_file_renamed(dir, name, parts, false)
}

fn write_file_renamed(dir: &Path, name: &str, parts: &[&[u8]], sync: bool) -> io::Result<()> {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!("{TEMP_PREFIX}{}-{n}-{name}", std::process::id());
    if sync {
        write_unreferenced_synced(dir, &tmp, parts)?;
    } else {
        write_unreferenced(dir, &tmp, parts)?;
    }
    let renamed = rename(&dir.join(&tmp), &dir.join(name));
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
    let f = write_unreferenced(dir, name, parts)?;
    let synced = sync_file(&f, &dir.join(name));
    if synced.is_err() {
        let _ = fs::remove_file(dir.join(name));
    }
    synced
}

/// [`write_unreferenced_synced`] without the fsync: the open file is returned so the
/// caller can fsync it later, typically on a [`SyncPool`], before anything names it.
/// On error the file is removed.
pub fn write_unreferenced(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<File> {
    write_unreferenced_sized(dir, name, parts, 0)
}

/// [`write_unreferenced`], writing around the page cache (`O_DIRECT`) when the file
/// is at least `direct_min` bytes (0: never). A bulk load of years would otherwise
/// grow the page cache by its own size before the fsync: on a VM whose guest memory
/// the host hands out lazily, taking a fresh page-cache page costs far more than the
/// disk write (measured: 320 MB into the page cache 0.8 s, the same bytes with
/// `O_DIRECT` 0.13 s, see docs/benchmarks/journal/), and it evicts the pages readers are
/// using. The bytes go through one reused aligned buffer ([`DIRECT_BUF`]); the last
/// block is padded and the file cut back to its length. A filesystem that refuses
/// `O_DIRECT` gets the buffered write instead. The file still needs its fsync (the
/// device's cache and the file's size and blocks).
pub fn write_unreferenced_sized(
    dir: &Path,
    name: &str,
    parts: &[&[u8]],
    direct_min: u64,
) -> io::Result<File> {
    let path = dir.join(name);
    let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let result = (|| {
        let mut open = OpenOptions::new();
        open.write(true).create(true).truncate(true);
        #[cfg(target_os = "linux")]
        if direct_min > 0 && len >= direct_min {
            use std::os::unix::fs::OpenOptionsExt;
            let direct = open.clone().custom_flags(libc::O_DIRECT).open(&path);
            if let Ok(f) = direct {
                failpoints::check(&path, Op::Write)?;
                match write_direct(&f, parts, len) {
                    Ok(()) => return Ok(f),
                    // Alignment this filesystem does not take: buffered below.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut f = open.open(&path)?;
        failpoints::check(&path, Op::Write)?;
        write_all_parts(&mut f, parts)?;
        Ok(f)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&path);
    }
    result
}

/// Most buffers one `writev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Writes every byte of `parts`, in order, with as few `writev` calls as the kernel
/// takes: a pack of twelve months is dozens of parts (headers, bodies, sidecars), and
/// a `write` per part was dozens of system calls per series in a load of many small
/// series.
fn write_all_parts(f: &mut File, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut rest = &mut slices[..];
    let mut written = 0usize;
    while !rest.is_empty() {
        let batch = rest.len().min(IOV_MAX);
        match f.write_vectored(&rest[..batch]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    assert_eq!(
        written, total,
        "a write writes every byte of its parts once"
    );
    Ok(())
}

/// Alignment of `O_DIRECT` writes: memory, file offset and length. 4 KiB covers the
/// logical block size of every common device and filesystem block size.
pub const DIRECT_ALIGN: usize = 4096;
/// Bytes of one `O_DIRECT` write: large enough for the device to stream, small
/// enough to stay in the CPU's caches while it is filled.
pub const DIRECT_BUF: usize = 4 << 20;
/// Staging buffers kept for reuse (one per concurrent writer; the rest are freed).
const DIRECT_BUFFERS_KEPT: usize = 4;
/// Buffers of [`DIRECT_BUF`] + [`DIRECT_ALIGN`] bytes, reused so a load does not
/// fault in fresh memory for its staging either.
static DIRECT_BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[cfg(target_os = "linux")]
/// Writes `parts` (`len` bytes in all) to the `O_DIRECT` file `f` from an aligned
/// staging buffer, then cuts the padded last block off with `set_len`.
fn write_direct(f: &File, parts: &[&[u8]], len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = DIRECT_BUFFERS
        .locked()
        .pop()
        .unwrap_or_else(|| vec![0u8; DIRECT_BUF + DIRECT_ALIGN]);
    let result = (|| {
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let stage = &mut buf[start..start + DIRECT_BUF];
        debug_assert_eq!(stage.as_ptr() as usize % DIRECT_ALIGN, 0);
        let (mut fill, mut at) = (0usize, 0u64);
        for part in parts {
            let mut rest: &[u8] = part;
            while !rest.is_empty() {
                let n = rest.len().min(DIRECT_BUF - fill);
                stage[fill..fill + n].copy_from_slice(&rest[..n]);
                (fill, rest) = (fill + n, &rest[n..]);
                if fill == DIRECT_BUF {
                    f.write_all_at(stage, at)?;
                    (at, fill) = (at + DIRECT_BUF as u64, 0);
                }
            }
        }
        if fill > 0 {
            let padded = fill.next_multiple_of(DIRECT_ALIGN);
            stage[fill..padded].fill(0);
            f.write_all_at(&stage[..padded], at)?;
            at += fill as u64;
            f.set_len(at)?;
        }
        assert_eq!(at, len, "a direct write writes every byte once");
        Ok(())
    })();
    let mut kept = DIRECT_BUFFERS.locked();
    if kept.len() < DIRECT_BUFFERS_KEPT {
        kept.push(buf);
    }
    result
}

/// Files waiting in a [`SyncPool`] before a writer blocks; also bounds open descriptors.
const SYNC_QUEUE: usize = 64;

/// fsyncs files on several threads while the caller goes on writing the next ones.
///
/// One fsync waits for its own writeback and the device flush, so fsyncing the many
/// files of a multi-month write one after another serialises that latency; with
/// several in flight the device works on them together. A write of 457 one-month
/// scalar chunks (1,371 files) spent 0.45 s of its 0.66 s in sequential fsyncs.
/// [`SyncPool::run`] returns only after every queued file is fsynced (or one failed),
/// so the caller's later directory fsync and manifest commit still come strictly after.
///
/// With no syncer thread (asked for none, or none could be spawned) [`SyncPool::push`]
/// fsyncs on the caller's thread: a small write spawns nothing, and a process out of
/// threads still writes, only slower.
pub struct SyncPool<'a> {
    tx: Option<SyncSender<(File, String)>>,
    dir: &'a Path,
    failed: &'a Mutex<Option<(String, io::Error)>>,
}

impl SyncPool<'_> {
    /// Runs `f` with a pool of up to `threads` syncers for files in `dir` and waits for
    /// them to drain. Returns `f`'s value and the first fsync failure, with the name
    /// it was queued under. `threads == 0` fsyncs inline.
    pub fn run<T>(
        dir: &Path,
        threads: usize,
        f: impl FnOnce(&SyncPool) -> T,
    ) -> (T, Result<(), (String, io::Error)>) {
        let failed = Mutex::new(None);
        let out = if threads == 0 {
            f(&SyncPool {
                tx: None,
                dir,
                failed: &failed,
            })
        } else {
            let (tx, rx) = sync_channel::<(File, String)>(SYNC_QUEUE);
            let rx = Mutex::new(rx);
            std::thread::scope(|s| {
                let syncer = || {
                    loop {
                        // The lock is held only while taking the next file.
                        let next = rx.locked().recv();
                        let Ok((file, name)) = next else { break };
                        record(&failed, &name, sync_file(&file, &dir.join(&name)));
                    }
                };
                let mut spawned = 0;
                for _ in 0..threads {
                    if spawn_scoped(s, dir, "fastk-sync", syncer).is_err() {
                        break;
                    }
                    spawned += 1;
                }
                let pool = SyncPool {
                    tx: (spawned > 0).then_some(tx),
                    dir,
                    failed: &failed,
                };
                f(&pool)
                // `pool` (the only sender) drops here, so the syncers drain the queue
                // and stop; the scope joins them before returning.
            })
        };
        let failure = failed.into_value();
        (out, failure.map_or(Ok(()), Err))
    }

    /// Queues `file` (known to the caller as `name`, in the pool's directory) for
    /// fsync; blocks while the queue is full. After a failure the caller may stop
    /// early: see [`SyncPool::failed`].
    pub fn push(&self, file: File, name: String) {
        match &self.tx {
            // The receiver lives until the scope ends, after every sender is gone.
            Some(tx) => {
                let _ = tx.send((file, name));
            }
            None => {
                let r = sync_file(&file, &self.dir.join(&name));
                record(self.failed, &name, r);
            }
        }
    }

    /// Whether an fsync has failed already (the write will be refused anyway).
    pub fn failed(&self) -> bool {
        self.failed.locked().is_some()
    }
}

fn record(failed: &Mutex<Option<(String, io::Error)>>, name: &str, r: io::Result<()>) {
    if let Err(e) = r {
        failed.locked().get_or_insert_with(|| (name.to_string(), e));
    }
}

/// Spawns a named helper thread in `scope` for work on `dir`. A failure (the process
/// is out of threads or memory) is returned, never a panic: callers go on with the
/// threads they have, down to their own.
pub fn spawn_scoped<'scope, 'env, F>(
    scope: &'scope Scope<'scope, 'env>,
    dir: &Path,
    name: &str,
    f: F,
) -> io::Result<ScopedJoinHandle<'scope, ()>>
where
    F: FnOnce() + Send + 'scope,
{
    let spawned = failpoints::check(dir, Op::Spawn).and_then(|()| {
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(scope, f)
    });
    if let Err(e) = &spawned {
        tracing::warn!(thread = name, error = %e, "could not spawn a helper thread; going on with fewer");
    }
    spawned
}

/// fsyncs one file (`path` names it for the failpoints).
fn sync_file(file: &File, path: &Path) -> io::Result<()> {
    failpoints::check(path, Op::Fsync)?;
    file.sync_all()
}

/// Renames `from` to `to` (files or directories; not durable until the directory of
/// `to` is fsynced).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    failpoints::check(to, Op::Rename)?;
    fs::rename(from, to)
}

/// Writes one file and makes its directory entry durable: the commit primitive.
pub fn write_atomic(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<()> {
    write_file_synced(dir, name, parts)?;
    fsync_dir(dir)
}

/// Makes renames, creations and unlinks inside `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    failpoints::check(dir, Op::DirFsync)?;
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
    failpoints::check(dir, Op::CreateDir)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_written_whole_and_in_order_past_iov_max() {
        let dir = tempfile::tempdir().unwrap();
        // More parts than one writev takes, some empty, of uneven sizes.
        let owned: Vec<Vec<u8>> = (0..2_500usize)
            .map(|i| vec![(i % 251) as u8; (i * 7) % 13])
            .collect();
        let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        write_unreferenced(dir.path(), "f", &parts).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), owned.concat());
    }

    #[test]
    fn sync_pool_fsyncs_every_queued_file_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let (written, synced) = SyncPool::run(dir.path(), 3, |pool| {
            for i in 0..200 {
                let name = format!("f{i}");
                let f = write_unreferenced(dir.path(), &name, &[b"abc", &[i as u8]]).unwrap();
                pool.push(f, name);
            }
            200
        });
        assert_eq!(written, 200);
        assert!(synced.is_ok());
        for i in 0..200 {
            let bytes = fs::read(dir.path().join(format!("f{i}"))).unwrap();
            assert_eq!(bytes, [b'a', b'b', b'c', i as u8]);
        }
    }

    #[test]
    fn sync_pool_reports_the_first_failed_fsync_by_name() {
        // fsync of a character device such as /dev/null fails with EINVAL.
        let Ok(null) = OpenOptions::new().write(true).open("/dev/null") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let ((), synced) = SyncPool::run(dir.path(), 2, |pool| {
            let ok = write_unreferenced(dir.path(), "fine", &[b"x"]).unwrap();
            pool.push(ok, "fine".into());
            pool.push(null, "null".into());
        });
        let (name, e) = synced.unwrap_err();
        assert_eq!(name, "null");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    /// A pool whose syncers cannot be spawned (or that was asked for none) fsyncs on
    /// the caller's thread instead of queueing forever, and still reports a failure.
    #[test]
    fn sync_pool_without_threads_fsyncs_inline() {
        let dir = tempfile::tempdir().unwrap();
        let spawn = failpoints::arm(dir.path(), Op::Spawn, 1);
        let ((), synced) = SyncPool::run(dir.path(), 2, |pool| {
            for i in 0..(SYNC_QUEUE + 10) {
                let name = format!("f{i}");
                pool.push(
                    write_unreferenced(dir.path(), &name, &[b"x"]).unwrap(),
                    name,
                );
            }
        });
        assert!(spawn.fired());
        assert!(synced.is_ok());
        let fsync = failpoints::arm(dir.path(), Op::Fsync, 3);
        let ((), synced) = SyncPool::run(dir.path(), 0, |pool| {
            for i in 0..5 {
                let name = format!("g{i}");
                pool.push(
                    write_unreferenced(dir.path(), &name, &[b"x"]).unwrap(),
                    name,
                );
                assert_eq!(pool.failed(), i >= 2);
            }
        });
        assert!(fsync.fired());
        assert_eq!(synced.unwrap_err().0, "g2");
    }

    /// Direct writes of lengths around the block and buffer sizes, from parts that
    /// cross them, read back byte for byte at their exact length (on a filesystem
    /// without `O_DIRECT` the buffered fallback must give the same bytes).
    #[test]
    fn a_direct_write_reads_back_at_its_exact_length() {
        let dir = tempfile::tempdir().unwrap();
        let lens = [
            1,
            DIRECT_ALIGN - 1,
            DIRECT_ALIGN,
            DIRECT_ALIGN + 1,
            DIRECT_BUF - 3,
            DIRECT_BUF,
            2 * DIRECT_BUF + 4097,
        ];
        for (k, &len) in lens.iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + k) as u8).collect();
            // Uneven parts: a header-sized run, then the rest in odd pieces.
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut rest = &bytes[..];
            let mut size = 17;
            while !rest.is_empty() {
                let n = size.min(rest.len());
                parts.push(&rest[..n]);
                rest = &rest[n..];
                size = size * 7 + 1;
            }
            let name = format!("d{k}");
            let f = write_unreferenced_sized(dir.path(), &name, &parts, 1).unwrap();
            f.sync_all().unwrap();
            drop(f);
            let back = fs::read(dir.path().join(&name)).unwrap();
            assert_eq!(back.len(), len, "length of d{k}");
            assert!(back == bytes, "bytes of d{k}");
        }
        // Below the threshold the buffered path writes the same way.
        let f = write_unreferenced_sized(dir.path(), "small", &[b"ab", b"c"], 1 << 20).unwrap();
        drop(f);
        assert_eq!(fs::read(dir.path().join("small")).unwrap(), b"abc");
    }

    #[test]
    fn a_failed_in_place_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        // A name under a missing subdirectory cannot be created.
        assert!(write_unreferenced(dir.path(), "missing/f", &[b"x"]).is_err());
        assert!(!dir.path().join("missing/f").exists());
        write_unreferenced_synced(dir.path(), "ok", &[b"ab", b"cd"]).unwrap();
        assert_eq!(fs::read(dir.path().join("ok")).unwrap(), b"abcd");
    }
}
