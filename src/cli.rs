//! Command line: `fastk` (serve with defaults), `fastk serve`, `fastk admin`,
//! `fastk import`, `fastk export`, `fastk token`.

use crate::sync::LockExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::admin::{AdminAction, AdminReport, AdminRequest, SeriesSelector};
use crate::config::Config;
use crate::query::Engine;
use crate::record::SeriesKind;

#[derive(Debug, Parser)]
#[command(
    name = "fastk",
    version,
    about = "Local store and query server for market time series"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP and Arrow Flight (the default with no arguments).
    Serve {
        /// TOML config file; environment FASTK__SECTION__KEY overrides it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Offline administration of a data root (refuses while a server holds it).
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// Load CSV, Parquet or Arrow IPC files into a series as ONE all-or-nothing write.
    Import {
        #[command(subcommand)]
        what: crate::transfer::cmd::ImportCommand,
    },
    /// Write a range of a series to CSV, Parquet or Arrow IPC (streamed, flat memory).
    Export {
        #[command(subcommand)]
        what: crate::transfer::cmd::ExportCommand,
    },
    /// Scoped tokens in the tokens file (`auth.tokens_file`): create, list.
    Token {
        #[command(subcommand)]
        action: crate::auth::cmd::TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Check manifests, chunks, sidecars and the registry (add --deep for checksums).
    Validate(AdminArgs),
    /// Re-read and verify every byte; changes nothing.
    Scrub(AdminArgs),
    /// Fix what validate finds. Dry run unless --apply.
    Repair(AdminArgs),
    /// Rebuild manifests from chunk headers. Dry run unless --apply.
    RebuildManifest(AdminArgs),
    /// Merge delta chunks into one chunk per month. Dry run unless --apply.
    Compact(AdminArgs),
    /// Every series with rows, bytes, versions and partitions.
    Inventory(RootArgs),
    /// Health as /health reports it.
    Health(RootArgs),
    /// Publish every series once to an object store for read replicas (folds the log
    /// first); a running server does this every replica.publish_interval_s.
    Publish(PublishArgs),
    /// Bring a store to this binary's format version (any open does it; this says
    /// what it did). Take a backup first: older binaries no longer open it after.
    Upgrade(RootArgs),
}

#[derive(Debug, Args)]
struct PublishArgs {
    #[arg(long, default_value = "./data")]
    root: PathBuf,
    /// Object store URL, as replica.publish_to (file:///dir).
    #[arg(long)]
    to: String,
}

#[derive(Debug, Args)]
struct RootArgs {
    /// Data root (the server's storage.root).
    #[arg(long, default_value = "./data")]
    root: PathBuf,
}

#[derive(Debug, Args)]
struct AdminArgs {
    #[arg(long, default_value = "./data")]
    root: PathBuf,
    /// Only series of this kind (kline or scalar).
    #[arg(long)]
    kind: Option<SeriesKind>,
    #[arg(long)]
    symbol: Option<String>,
    #[arg(long)]
    timeframe: Option<String>,
    #[arg(long)]
    category: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// Verify every checksum (validate).
    #[arg(long)]
    deep: bool,
    /// Make the changes (repair, rebuild-manifest, compact default to a dry run).
    #[arg(long)]
    apply: bool,
    /// Print the JSON report instead of a table.
    #[arg(long)]
    json: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(kind_flag_as_subcommand(std::env::args_os().collect()));
    match cli.command {
        None => serve(None),
        Some(Command::Serve { config }) => serve(config),
        Some(Command::Admin { action }) => admin(action),
        Some(Command::Import { what }) => crate::transfer::cmd::run_import(what),
        Some(Command::Export { what }) => crate::transfer::cmd::run_export(what),
        Some(Command::Token { action }) => crate::auth::cmd::run(action),
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn serve(config_file: Option<PathBuf>) -> ExitCode {
    let config = match Config::from_env(config_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fastk: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    // SQL evaluates expressions on these threads, one frame per level of nesting
    // (query::sql::guard bounds the levels; this holds the deepest it allows).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(crate::query::sql::guard::WORKER_STACK_BYTES)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fastk: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(crate::server::run(config));
    // Every acknowledged write is durable by now. A blocking task that cannot end (a
    // scan whose consumer went away but is still held, e.g. by a distributed stage a
    // dead node never pulled) must not keep the process from exiting.
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("fastk: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long the server's exit waits for blocking tasks still running after it stopped.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(10);

fn open_offline(root: PathBuf) -> Result<std::sync::Arc<Engine>, ExitCode> {
    open_offline_with(root, |_| {})
}

fn open_offline_with(
    root: PathBuf,
    configure: impl FnOnce(&mut Config),
) -> Result<std::sync::Arc<Engine>, ExitCode> {
    let mut config = Config::default();
    config.storage.root = root;
    configure(&mut config);
    init_logging(&Config {
        log: crate::config::LogConfig {
            level: "warn".into(),
            ..Default::default()
        },
        ..Config::default()
    });
    Engine::open(config).map_err(|e| {
        if e.kind == crate::error::ErrorKind::Unavailable {
            eprintln!(
                "fastk: {}; stop the server or use its /v1/admin endpoints instead",
                e.message
            );
        } else {
            eprintln!("fastk: {}", e.message);
        }
        ExitCode::from(2)
    })
}

/// `fastk admin publish`: one publication pass of a stopped primary. Objects left
/// unreferenced are not deleted (they are younger than `replica.gc_grace_s` for this
/// process); manifests of deleted series are.
fn publish(p: PublishArgs) -> ExitCode {
    let bucket = match crate::replica::Bucket::open(&p.to) {
        Ok(b) => b,
        Err(why) => {
            eprintln!("fastk: --to: {why}");
            return ExitCode::from(2);
        }
    };
    // Replicas ship directories: the fold gives every series with rows one, those the
    // catalog kept too (`storage.resident_rows_max` 0, as on a publishing server).
    let engine = match open_offline_with(p.root, |c| c.storage.resident_rows_max = 0) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let folded = engine.store.fold_all();
    if folded.failed > 0 {
        eprintln!(
            "fastk: {} series could not be folded; their log rows are not published",
            folded.failed
        );
    }
    let c = &engine.config.replica;
    let grace = std::time::Duration::from_secs(c.gc_grace_s);
    let publisher = crate::replica::Publisher::new(bucket, grace, c.concurrency);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fastk: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(publisher.publish_once(&engine)) {
        Ok(r) => {
            println!(
                "{}",
                serde_json::json!({
                    "published": r.published, "unchanged": r.unchanged, "deleted": r.deleted,
                    "objects_put": r.objects_put, "bytes_put": r.bytes_put, "failed": r.failed,
                })
            );
            if r.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(why) => {
            eprintln!("fastk: {why}");
            ExitCode::from(2)
        }
    }
}

fn admin(cmd: AdminCommand) -> ExitCode {
    let (action, args) = match cmd {
        AdminCommand::Inventory(r) => {
            return print_json(open_offline(r.root).map(|e| serde_json::to_value(e.inventory())));
        }
        AdminCommand::Health(r) => {
            return print_json(open_offline(r.root).map(|e| serde_json::to_value(e.health())));
        }
        AdminCommand::Publish(p) => return publish(p),
        AdminCommand::Upgrade(r) => {
            return print_json(open_offline(r.root).map(|e| {
                Ok(serde_json::json!({
                    "format_version": crate::storage::upgrade::STORE_FORMAT_VERSION,
                    "upgraded_from": e.store.upgraded().map(|u| u.from),
                }))
            }));
        }
        AdminCommand::Validate(a) => (AdminAction::Validate, a),
        AdminCommand::Scrub(a) => (AdminAction::Scrub, a),
        AdminCommand::Repair(a) => (AdminAction::Repair, a),
        AdminCommand::RebuildManifest(a) => (AdminAction::RebuildManifest, a),
        AdminCommand::Compact(a) => (AdminAction::Compact, a),
    };
    if action == AdminAction::Repair
        && let Err(code) = repair_log(&args.root, args.apply)
    {
        return code;
    }
    let engine = match open_offline(args.root.clone()) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let selector = SeriesSelector {
        kind: args.kind,
        symbol: args.symbol.clone(),
        timeframe: args.timeframe.clone(),
        category: args.category.clone(),
        name: args.name.clone(),
    };
    let any = selector != SeriesSelector::default();
    let req = AdminRequest {
        series: any.then_some(selector),
        dry_run: Some(action.changes_the_store() && !args.apply),
        deep: Some(args.deep),
    };
    eprintln!(
        "fastk: {action} over {} series ...",
        engine.store.list().len()
    );
    let bar = admin_progress(action);
    let report = engine.admin_with_progress(action, &req, &|done, total, series| {
        bar(done, total, series)
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fastk: {}", e.message);
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_table(&report);
    }
    if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `admin repair`'s first step: a write-ahead log record that is corrupt in the middle
/// of the log stops every open, so it is cut here, before the store opens (with
/// `--apply`; a dry run says what would be cut). That record and every later one are
/// lost, and the report says how many bytes.
fn repair_log(root: &std::path::Path, apply: bool) -> Result<(), ExitCode> {
    use crate::storage::wal::{LogRepair, repair_log};
    match repair_log(root, apply) {
        Ok(LogRepair::Clean) => Ok(()),
        Ok(LogRepair::Corrupt { at }) => {
            eprintln!(
                "fastk: the write-ahead log is corrupt in {at}; `--apply` cuts it there (that record and every later one are lost)"
            );
            Err(ExitCode::from(1))
        }
        Ok(LogRepair::Cut { at, bytes }) => {
            eprintln!("fastk: cut the write-ahead log in {at}: {bytes} bytes of records dropped");
            Ok(())
        }
        Err(e) => {
            eprintln!("fastk: repairing the write-ahead log: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// Progress for a long admin action: a bar on a terminal, a plain line every few
/// seconds otherwise (logs, CI).
fn admin_progress(action: AdminAction) -> impl Fn(usize, usize, &str) + Sync {
    use std::io::IsTerminal;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} series {msg}")
        {
            b.set_style(style);
        }
        b.set_prefix(action.as_str());
        b
    });
    let last = std::sync::Mutex::new(std::time::Instant::now());
    move |done, total, series| match &bar {
        Some(b) => {
            b.set_length(total as u64);
            b.set_position(done as u64);
            b.set_message(series.to_string());
        }
        None => {
            let mut last = last.locked();
            if done == 0 || last.elapsed() >= std::time::Duration::from_secs(5) {
                eprintln!("fastk: {action}: {done}/{total} series, now {series}");
                *last = std::time::Instant::now();
            }
        }
    }
}

fn print_json(v: Result<serde_json::Result<serde_json::Value>, ExitCode>) -> ExitCode {
    match v {
        Ok(Ok(v)) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("fastk: {e}");
            ExitCode::FAILURE
        }
        Err(code) => code,
    }
}

/// A readable report: findings, then actions, then a summary line.
fn print_table(r: &AdminReport) {
    if !r.findings.is_empty() {
        println!(
            "{:<24} {:<28} {:<8} FILE / DETAIL / SUGGESTED",
            "FINDING", "SERIES", "MONTH"
        );
        let pad = " ".repeat(62);
        for f in &r.findings {
            println!(
                "{:<24} {:<28} {:<8} {}\n{pad}{}\n{pad}-> {}",
                f.kind,
                f.series.as_deref().unwrap_or("-"),
                f.month.as_deref().unwrap_or("-"),
                f.file.as_deref().unwrap_or("-"),
                f.detail,
                f.suggested_action
            );
        }
    }
    if !r.actions.is_empty() {
        let head = if r.dry_run { "WOULD DO" } else { "DONE" };
        println!("{head:<24} {:<28} FILE / DETAIL", "SERIES");
        for a in &r.actions {
            println!(
                "{:<24} {:<28} {} {}",
                a.action,
                a.series.as_deref().unwrap_or("-"),
                a.file.as_deref().unwrap_or(""),
                a.detail
            );
        }
    }
    if r.log_unfolded_rows > 0 {
        println!(
            "{} rows of {} series are only in the write-ahead log (durable; a fold or \
             `admin compact` writes them into chunk files)",
            r.log_unfolded_rows, r.log_unfolded_series
        );
    }
    println!(
        "{}: {} series, {} chunks, {} bytes checked, {} findings, {} actions{} in {} ms",
        r.action,
        r.series_checked,
        r.chunks_checked,
        r.bytes_checked,
        r.findings.len(),
        r.actions.len(),
        if r.dry_run {
            " (dry run: pass --apply to make them)"
        } else {
            ""
        },
        r.duration_ms
    );
}

/// The contract's spelling `fastk import --kind trade ...` (and `export`, `--kind=X`)
/// as the subcommand form `fastk import trade ...`: the flag is taken out and its
/// value put where the subcommand goes. Only when the subcommand is not also given;
/// then the arguments are left alone and clap names the stray flag.
fn kind_flag_as_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const KINDS: [&str; 4] = ["kline", "scalar", "trade", "quote"];
    let is = |i: usize, s: &str| args.get(i).is_some_and(|a| a == s);
    if !(is(1, "import") || is(1, "export")) || KINDS.iter().any(|k| is(2, k)) {
        return args;
    }
    let Some(at) = args.iter().position(|a| {
        let a = a.to_string_lossy();
        a == "--kind" || a.starts_with("--kind=")
    }) else {
        return args;
    };
    let flag = args[at].to_string_lossy().into_owned();
    let kind: std::ffi::OsString = match flag.strip_prefix("--kind=") {
        Some(v) => v.into(),
        None => match args.get(at + 1) {
            Some(v) => v.clone(),
            None => return args,
        },
    };
    let taken = if flag == "--kind" { 2 } else { 1 };
    args.drain(at..at + taken);
    args.insert(2, kind);
    args
}

#[cfg(test)]
mod tests {
    use super::kind_flag_as_subcommand as norm;

    fn v(s: &str) -> Vec<std::ffi::OsString> {
        s.split(' ').map(Into::into).collect()
    }

    #[test]
    fn the_kind_flag_becomes_the_subcommand() {
        assert_eq!(
            norm(v("fastk import --kind trade --symbol A f.csv")),
            v("fastk import trade --symbol A f.csv")
        );
        assert_eq!(
            norm(v("fastk export --symbol A --kind=quote -o q.csv")),
            v("fastk export quote --symbol A -o q.csv")
        );
        for unchanged in [
            "fastk import trade --symbol A f.csv",
            "fastk import trade --kind quote f.csv",
            "fastk serve --kind trade",
            "fastk import --kind",
        ] {
            assert_eq!(norm(v(unchanged)), v(unchanged), "{unchanged}");
        }
    }
}
