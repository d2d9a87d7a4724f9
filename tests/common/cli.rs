//! The `fastk` binary as the command-line tests run it, and what they read back: its
//! output, files they write for it, and a series' rows through the engine afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fastk::record::{SeriesKey, TsRange};

/// `fastk <args>`, run to the end, with no log filter and no token from the caller's
/// environment.
pub fn fastk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fastk"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("FASTK_TOKEN")
        .output()
        .expect("the fastk binary runs")
}

/// Standard output then standard error.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The output of a run that must have succeeded.
pub fn ok(out: Output) -> String {
    let t = text(&out);
    assert!(out.status.success(), "fastk failed: {t}");
    t
}

/// Writes `body` to `dir/name`, returning the path.
pub fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// All rows of a series in `root`, column-major (`ts`, then each value column), read
/// back through an engine opened on it.
pub fn rows(root: &Path, key: &SeriesKey) -> Vec<Vec<i64>> {
    let e = super::engine_with(root, |_| {});
    let page = e
        .read(key, TsRange::all(), usize::MAX)
        .expect("series readable");
    let mut cols = vec![Vec::new(); key.kind().ncols()];
    for s in &page.slices {
        for (c, col) in cols.iter_mut().enumerate() {
            col.extend_from_slice(s.col(c));
        }
    }
    cols
}
