//! Helpers shared by the integration tests, one copy instead of one per test file.
//!
//! Each `tests/*.rs` binary that needs them says `mod common;` (Cargo does not build a
//! folder of `tests/` as a binary of its own, so nothing here compiles as an empty test).
//! - the engine fixtures below: an `Engine` over a temporary root, a registered kline
//!   series, a deep validation that must come back clean;
//! - [`cli`]: the `fastk` binary run to the end, its output, a series' rows after it;
//! - [`flight`]: a real server on port 0 and a Flight client, with data builders;
//! - [`sql`]: a runtime and a query that must succeed;
//! - [`store`]: storage-level helpers (store options, series metadata, reading a
//!   series back, the storage half of a validation).
// Each test binary uses a different subset of these helpers and re-exports.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod flight;
pub mod sql;
pub mod store;
pub mod ticks;

pub use flight::*;
pub use store::*;

use std::path::Path;
use std::sync::Arc;

use fastk::admin::AdminAction;
use fastk::config::Config;
use fastk::query::Engine;
use fastk::query::types::{AdminReport, AdminRequest, RegisterKline, RegisterScalar};
use fastk::record::{SeriesKey, ValueType};

/// 2024-01-01T00:00:00Z.
pub const JAN_2024: i64 = 1_704_067_200_000;
pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

/// A seeded xorshift generator: the same steps for the same seed, in every model test.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A value below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An engine over `root` with the default configuration changed by `configure`.
pub fn engine_with(root: &Path, configure: impl FnOnce(&mut Config)) -> Arc<Engine> {
    let mut c = Config::default();
    c.storage.root = root.to_path_buf();
    configure(&mut c);
    Engine::open(c).unwrap()
}

/// The configuration of an in-process server over `root` on free ports (port 0 for
/// HTTP and Flight), changed by `configure`.
pub fn server_config(root: &Path, configure: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    c.storage.root = root.to_path_buf();
    c.http.addr = "127.0.0.1:0".into();
    c.flight.addr = "127.0.0.1:0".into();
    configure(&mut c);
    c
}

/// The registration of the kline series `symbol`/`timeframe` (prices in cents, volume
/// in units); a test changes the other fields by struct update.
pub fn kline_registration(symbol: &str, timeframe: &str) -> RegisterKline {
    RegisterKline {
        symbol: symbol.into(),
        timeframe: timeframe.into(),
        timeframe_ms: None,
        price_scale: 100,
        volume_scale: 1,
        retention_ms: None,
        irregular: None,
    }
}

/// The registration of the scalar series `symbol`/`timeframe`/`category`/`name`
/// (`value_type` `None`: the engine's default).
pub fn scalar_registration(
    symbol: &str,
    timeframe: &str,
    category: &str,
    name: &str,
    value_type: Option<ValueType>,
) -> RegisterScalar {
    RegisterScalar {
        symbol: symbol.into(),
        timeframe: timeframe.into(),
        timeframe_ms: None,
        category: category.into(),
        name: name.into(),
        value_type,
        retention_ms: None,
    }
}

/// Registers the 1m kline series of `symbol` (prices in cents, volume in units).
pub fn register_kline(e: &Engine, symbol: &str) -> SeriesKey {
    e.register_kline(&kline_registration(symbol, "1m")).unwrap();
    SeriesKey::kline(symbol, "1m").unwrap()
}

/// A deep validation of every series (checksums included).
pub fn validate_deep(e: &Engine) -> AdminReport {
    e.admin(
        AdminAction::Validate,
        &AdminRequest {
            deep: Some(true),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Files of `dir` whose extension is `ext` (`chunk`, `zmap`, `vidx`), sorted by name.
pub fn files_with(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// Copies the tree `from` (a committed store fixture) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Every file below `root` (not directories), depth first.
pub fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A `fastk serve` child process on free ports; killed (and reaped) when dropped.
pub struct ServerProcess {
    pub child: std::process::Child,
    /// `IP:port` of the HTTP and Flight listeners, as the server logged them.
    pub http: String,
    pub flight: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the built `fastk serve` over `root` with `env` set (on top of ports 0), and
/// waits for both listeners' addresses in its log. The log is drained for the life of
/// the process so the server never blocks on a full pipe; if the addresses do not come
/// within a minute the test fails with the lines the server logged.
pub fn spawn_server(root: &Path, env: &[(&str, &str)]) -> ServerProcess {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastk"))
        .arg("serve")
        .env("FASTK__STORAGE__ROOT", root)
        .env("FASTK__HTTP__ADDR", "127.0.0.1:0")
        .env("FASTK__FLIGHT__ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut http, mut flight, mut log) = (String::new(), String::new(), Vec::new());
    while http.is_empty() || flight.is_empty() {
        let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
            panic!("the server did not start:\n{}", log.join("\n"));
        };
        let addr = |kind: &str| {
            line.split(&format!("{kind} listening on "))
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(String::from)
        };
        if let Some(a) = addr("http") {
            http = a;
        } else if let Some(a) = addr("flight") {
            flight = a;
        } else {
            log.push(line);
        }
    }
    ServerProcess {
        child,
        http,
        flight,
    }
}
