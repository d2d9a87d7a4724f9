//! Fault injection for the write path: make the Nth file write, fsync, rename,
//! directory fsync, directory creation or thread spawn under a directory fail, or
//! park a writer just before it takes a series' writer lock.
//!
//! Always compiled, so `cargo test` exercises exactly the binary's code; when nothing
//! is armed a check is one relaxed atomic load. Points are scoped to a directory (a
//! test's temporary store root), so tests running in parallel in one process never
//! trip each other's points. Not for production use: hidden from the docs.

use crate::sync::{CondvarExt, LockExt};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// An operation that can be made to fail (or, for [`Op::Lock`], to wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Writing a file's bytes (chunk, sidecar, or a manifest's temp file); the file
    /// exists (created) when the failure strikes.
    Write,
    /// fsync of a file.
    Fsync,
    /// Renaming a file or directory into place.
    Rename,
    /// fsync of a directory.
    DirFsync,
    /// Creating a directory.
    CreateDir,
    /// Spawning a helper thread.
    Spawn,
    /// Taking a series' writer lock (write, compact, admin commits); only [`pause`]
    /// makes sense here.
    Lock,
    /// Applying a logged write to a series in memory: never fails by itself for an
    /// append, so this is how a test makes the log's overlapped sync undo its records
    /// (see `storage::wal`, invariant 5). Not in [`Op::FAILABLE`]: no file operation.
    Apply,
}

impl Op {
    /// Every operation that [`arm`] can fail, for tests that iterate them.
    pub const FAILABLE: [Op; 6] = [
        Op::Write,
        Op::Fsync,
        Op::Rename,
        Op::DirFsync,
        Op::CreateDir,
        Op::Spawn,
    ];
}

/// A parked thread's rendezvous: see [`pause`].
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<(bool, bool)>,
    cond: Condvar,
}

impl Gate {
    /// Blocks until a thread has reached the paused point.
    pub fn wait_reached(&self) {
        let mut s = self.state.locked();
        while !s.0 {
            s = self.cond.wait_now(s);
        }
    }

    /// Lets the parked thread go on (and any later one pass straight through).
    pub fn release(&self) {
        self.state.locked().1 = true;
        self.cond.notify_all();
    }

    fn park(&self) {
        let mut s = self.state.locked();
        s.0 = true;
        self.cond.notify_all();
        while !s.1 {
            s = self.cond.wait_now(s);
        }
    }
}

#[derive(Debug)]
enum Action {
    Fail,
    Pause(Arc<Gate>),
}

#[derive(Debug)]
struct Point {
    id: usize,
    scope: PathBuf,
    op: Op,
    nth: u64,
    seen: u64,
    action: Action,
    fired: Arc<AtomicBool>,
}

static ARMED: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
static POINTS: Mutex<Vec<Point>> = Mutex::new(Vec::new());

/// Disarms its point when dropped.
#[derive(Debug)]
pub struct Armed {
    id: usize,
    fired: Arc<AtomicBool>,
}

impl Armed {
    /// Whether the point has struck.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut points = POINTS.locked();
        points.retain(|p| p.id != self.id);
        ARMED.store(points.len(), Ordering::SeqCst);
    }
}

fn add(scope: &Path, op: Op, nth: u64, action: Action) -> Armed {
    assert!(nth >= 1, "failpoints count from 1");
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let fired = Arc::new(AtomicBool::new(false));
    let mut points = POINTS.locked();
    points.push(Point {
        id,
        scope: scope.to_path_buf(),
        op,
        nth,
        seen: 0,
        action,
        fired: Arc::clone(&fired),
    });
    ARMED.store(points.len(), Ordering::SeqCst);
    Armed { id, fired }
}

/// Makes the `nth` (from 1) `op` on a path under `scope` fail with an I/O error,
/// once. Calls before it succeed, and so do calls after it.
pub fn arm(scope: &Path, op: Op, nth: u64) -> Armed {
    add(scope, op, nth, Action::Fail)
}

/// Parks the first thread that reaches `op` under `scope` until the gate is released.
pub fn pause(scope: &Path, op: Op) -> (Armed, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    (add(scope, op, 1, Action::Pause(Arc::clone(&gate))), gate)
}

/// The injection site: `Ok` unless a point armed for `op` under a prefix of `path`
/// strikes now.
pub(crate) fn check(path: &Path, op: Op) -> io::Result<()> {
    if ARMED.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let gate = {
        let mut points = POINTS.locked();
        // Every matching point counts the call, so two points on one operation (the
        // 3rd and the 4th directory fsync, say) both strike.
        let mut strike = None;
        for p in points
            .iter_mut()
            .filter(|p| p.op == op && path.starts_with(&p.scope) && p.seen < p.nth)
        {
            p.seen += 1;
            if p.seen == p.nth {
                p.fired.store(true, Ordering::SeqCst);
                strike = strike.or(Some(match &p.action {
                    Action::Fail => None,
                    Action::Pause(g) => Some(Arc::clone(g)),
                }));
            }
        }
        match strike {
            None => return Ok(()),
            Some(None) => return Err(io::Error::other(format!("failpoint {op:?} injected"))),
            Some(Some(gate)) => gate,
        }
    };
    gate.park();
    Ok(())
}
