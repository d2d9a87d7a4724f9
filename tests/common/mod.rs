//! Helpers shared by the integration tests, one copy instead of one per test file.
//!
//! Each `tests/*.rs` binary that needs them says `mod common;` (Cargo does not build a
//! folder of `tests/` as a binary of its own, so nothing here compiles as an empty test).
//! - the engine fixtures below: an `Engine` over a temporary root, a registered kline
//!   series, a deep validation that must come back clean;
//! - [`flight`]: a real server on port 0 and a Flight client, with data builders.
// Each test binary uses a different subset of these helpers and re-exports.
#![allow(dead_code, unused_imports)]

pub mod flight;

pub use flight::*;

use std::path::Path;
use std::sync::Arc;

use fastk::admin::AdminAction;
use fastk::config::Config;
use fastk::query::Engine;
use fastk::query::types::{AdminReport, AdminRequest, RegisterKline};
use fastk::record::SeriesKey;

/// 2024-01-01T00:00:00Z.
pub const JAN_2024: i64 = 1_704_067_200_000;
pub const MINUTE: i64 = 60_000;

/// An engine over `root` with the default configuration changed by `configure`.
pub fn engine_with(root: &Path, configure: impl FnOnce(&mut Config)) -> Arc<Engine> {
    let mut c = Config::default();
    c.storage.root = root.to_path_buf();
    configure(&mut c);
    Engine::open(c).unwrap()
}

/// Registers the 1m kline series of `symbol` (prices in cents, volume in units).
pub fn register_kline(e: &Engine, symbol: &str) -> SeriesKey {
    let r = RegisterKline {
        symbol: symbol.into(),
        timeframe: "1m".into(),
        timeframe_ms: None,
        price_scale: 100,
        volume_scale: 1,
        retention_ms: None,
        irregular: None,
    };
    e.register_kline(&r).unwrap();
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
