//! The `fastk import` and `fastk export` command lines: flags in, options out, and
//! the summary or the report of bad rows printed.
//!
//! Exit codes: 0 done; 1 invalid rows stopped the import (nothing written); 2 bad
//! usage or a refusal (locked root, unknown series, unreadable file, server error).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::columns::ColumnOverrides;
use super::csv::CsvOptions;
use super::export::TsFormat;
use super::import::Registration;
use super::progress::human;
use super::timestamps::parse_ts;
use super::{
    Destination, ExportOptions, FileFormat, ImportOptions, PriceMode, TransferError, TsUnit,
};
use crate::query::types::{RegisterKline, RegisterScalar};
use crate::record::{SeriesKey, TsRange, ValueType};

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import OHLCV bars into a kline series.
    Kline(ImportKline),
    /// Import (ts, value) rows into a scalar series.
    Scalar(ImportScalar),
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Export bars of a kline series.
    Kline(ExportKline),
    /// Export a scalar series.
    Scalar(ExportScalar),
}

/// Where to read or write: a data root, or a running server's Flight endpoint.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Data root to open directly (refused while a server holds it).
    #[arg(long, conflicts_with = "flight", default_value = "./data")]
    root: PathBuf,
    /// A running server's Arrow Flight address (host:port): the safe way while it runs.
    #[arg(long)]
    flight: Option<String>,
    /// A running server's HTTP address (http://host:port): registers a missing series,
    /// and carries an import as one JSON request when --flight is not given.
    #[arg(long, conflicts_with = "root")]
    server: Option<String>,
    /// Bearer token for the server when it has auth.token set (default: $FASTK_TOKEN).
    #[arg(long)]
    token: Option<String>,
    /// For a server with TLS on (grpc+tls:// and https:// addresses): the PEM file of
    /// the CA that signed its certificate.
    #[arg(long, conflicts_with = "root")]
    ca_cert: Option<PathBuf>,
    /// For a server with mutual TLS: this client's PEM certificate (with --client-key).
    #[arg(long, requires = "client_key", conflicts_with = "root")]
    client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, requires = "client_cert", conflicts_with = "root")]
    client_key: Option<PathBuf>,
}

impl TargetArgs {
    fn destination(&self) -> Destination {
        if self.flight.is_none() && self.server.is_none() {
            return Destination::Root(self.root.clone());
        }
        Destination::Server {
            flight: self.flight.clone(),
            http: self.server.clone(),
            token: self
                .token
                .clone()
                .or_else(|| std::env::var("FASTK_TOKEN").ok()),
            tls: crate::tls::ClientFiles {
                ca: self.ca_cert.clone(),
                cert: self.client_cert.clone(),
                key: self.client_key.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ValueTypeArg {
    I64,
    F64,
}

#[derive(Debug, Args)]
pub struct ImportKline {
    /// Series symbol, e.g. BTCUSDT.
    #[arg(long)]
    symbol: String,
    /// Series timeframe, e.g. 1m.
    #[arg(long)]
    timeframe: String,
    /// Registers the series when missing (with --volume-scale): real price × scale is stored.
    #[arg(long, requires = "volume_scale")]
    price_scale: Option<i64>,
    /// Registers the series when missing (with --price-scale): real volume × scale is stored.
    #[arg(long, requires = "price_scale")]
    volume_scale: Option<i64>,
    /// Needed to register a non-standard timeframe.
    #[arg(long)]
    timeframe_ms: Option<i64>,
    /// Registers the series (with the scales) as irregular: bars at any ts, not only on
    /// the timeframe's grid.
    #[arg(long, requires = "price_scale")]
    irregular: bool,
    /// Column of open (a header name or a 1-based position); likewise below.
    #[arg(long)]
    open_column: Option<String>,
    #[arg(long)]
    high_column: Option<String>,
    #[arg(long)]
    low_column: Option<String>,
    #[arg(long)]
    close_column: Option<String>,
    #[arg(long)]
    volume_column: Option<String>,
    #[command(flatten)]
    common: ImportCommon,
}

#[derive(Debug, Args)]
pub struct ImportScalar {
    /// Series symbol, e.g. BTCUSDT.
    #[arg(long)]
    symbol: String,
    /// Series timeframe, e.g. 1m.
    #[arg(long)]
    timeframe: String,
    /// Scalar series category, e.g. indicator.
    #[arg(long)]
    category: String,
    /// Scalar series name, e.g. rsi_14.
    #[arg(long)]
    name: String,
    /// Registers the series with this value type when it is missing.
    #[arg(long)]
    value_type: Option<ValueTypeArg>,
    /// Needed to register a non-standard timeframe.
    #[arg(long)]
    timeframe_ms: Option<i64>,
    /// Column of the value (a header name or a 1-based position).
    #[arg(long)]
    value_column: Option<String>,
    #[command(flatten)]
    common: ImportCommon,
}

#[derive(Debug, Args)]
pub struct ImportCommon {
    /// Input files (CSV, Parquet, Arrow IPC); all of them become ONE write.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    target: TargetArgs,
    /// Input format (default: from each file's extension; unknown means CSV).
    #[arg(long)]
    format: Option<FileFormat>,
    /// CSV delimiter: one character, or "tab" (default: detected from the first line).
    #[arg(long)]
    delimiter: Option<String>,
    /// The first CSV line is a header (default: detected).
    #[arg(long, conflicts_with = "no_header")]
    header: bool,
    /// The first CSV line is data (columns then map by position).
    #[arg(long)]
    no_header: bool,
    /// Column of ts (a header name or a 1-based position).
    #[arg(long)]
    ts_column: Option<String>,
    /// Unit of epoch integer timestamps (default: detected per file from magnitude).
    #[arg(long)]
    ts_unit: Option<TsUnit>,
    /// real: prices are real numbers, scaled on import; raw: already stored integers.
    #[arg(long, default_value = "real")]
    prices: PriceMode,
    /// Refuse values the rounding would change (more decimals than the scale holds).
    #[arg(long)]
    strict_scale: bool,
    /// Write the good rows; list the bad ones with reasons in the rejects file.
    #[arg(long)]
    skip_invalid: bool,
    /// Rejects file for --skip-invalid (default: <first input>.rejects.csv).
    #[arg(long, requires = "skip_invalid")]
    rejects: Option<PathBuf>,
    /// Read and check everything, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ExportKline {
    /// Series symbol, e.g. BTCUSDT.
    #[arg(long)]
    symbol: String,
    /// Series timeframe, e.g. 1m.
    #[arg(long)]
    timeframe: String,
    #[command(flatten)]
    common: ExportCommon,
}

#[derive(Debug, Args)]
pub struct ExportScalar {
    /// Series symbol, e.g. BTCUSDT.
    #[arg(long)]
    symbol: String,
    /// Series timeframe, e.g. 1m.
    #[arg(long)]
    timeframe: String,
    /// Scalar series category, e.g. indicator.
    #[arg(long)]
    category: String,
    /// Scalar series name, e.g. rsi_14.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    common: ExportCommon,
}

#[derive(Debug, Args)]
pub struct ExportCommon {
    /// Output file.
    #[arg(long, short)]
    output: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    /// First ts (inclusive): epoch ms or any form import accepts.
    #[arg(long)]
    start: Option<String>,
    /// Last ts (inclusive).
    #[arg(long)]
    end: Option<String>,
    /// Output format (default: from the extension; unknown means CSV).
    #[arg(long)]
    format: Option<FileFormat>,
    /// real: integer / scale as decimals (CSV) or float64; raw: stored integers.
    #[arg(long, default_value = "real")]
    prices: PriceMode,
    /// CSV timestamps as epoch ms or ISO 8601.
    #[arg(long, default_value = "ms")]
    ts_format: TsFormat,
    #[arg(long, short)]
    quiet: bool,
    #[arg(long)]
    json: bool,
}

/// Sends warnings and errors to stderr: an internal error's details are logged, not
/// put in its message, and a command-line user has no server log to look at.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs `fastk import ...`.
pub fn run_import(cmd: ImportCommand) -> ExitCode {
    init_logging();
    let built = match cmd {
        ImportCommand::Kline(a) => import_kline_options(a),
        ImportCommand::Scalar(a) => import_scalar_options(a),
    };
    let (opts, json) = match built {
        Ok(x) => x,
        Err(e) => return fail(&e),
    };
    match super::import(&opts) {
        Ok(s) if json => print_json(&s),
        Ok(s) => {
            print_import_summary(&opts, &s);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn import_kline_options(a: ImportKline) -> Result<(ImportOptions, bool), TransferError> {
    let key = SeriesKey::kline(&a.symbol, &a.timeframe).map_err(crate::error::Error::from)?;
    let register = a.price_scale.zip(a.volume_scale).map(|(p, v)| {
        Registration::Kline(RegisterKline {
            symbol: a.symbol.clone(),
            timeframe: a.timeframe.clone(),
            timeframe_ms: a.timeframe_ms,
            price_scale: p,
            volume_scale: v,
            retention_ms: None,
            irregular: a.irregular.then_some(true),
        })
    });
    let cols = [
        ("open", a.open_column),
        ("high", a.high_column),
        ("low", a.low_column),
        ("close", a.close_column),
        ("volume", a.volume_column),
    ];
    common_options(key, register, a.common, &cols)
}

fn import_scalar_options(a: ImportScalar) -> Result<(ImportOptions, bool), TransferError> {
    let key = SeriesKey::scalar(&a.symbol, &a.timeframe, &a.category, &a.name)
        .map_err(crate::error::Error::from)?;
    let register = a.value_type.map(|vt| {
        Registration::Scalar(RegisterScalar {
            symbol: a.symbol.clone(),
            timeframe: a.timeframe.clone(),
            timeframe_ms: a.timeframe_ms,
            category: a.category.clone(),
            name: a.name.clone(),
            value_type: Some(match vt {
                ValueTypeArg::I64 => ValueType::I64,
                ValueTypeArg::F64 => ValueType::F64,
            }),
            retention_ms: None,
        })
    });
    common_options(key, register, a.common, &[("value", a.value_column)])
}

fn common_options(
    key: SeriesKey,
    register: Option<Registration>,
    c: ImportCommon,
    cols: &[(&'static str, Option<String>)],
) -> Result<(ImportOptions, bool), TransferError> {
    let delimiter = match c.delimiter.as_deref() {
        None => None,
        Some("tab" | "\\t") => Some(b'\t'),
        Some(d) if d.len() == 1 => Some(d.as_bytes()[0]),
        Some(d) => {
            return Err(TransferError::Usage(format!(
                "--delimiter must be one ASCII character or \"tab\", not {d:?}"
            )));
        }
    };
    let mut overrides = ColumnOverrides::default();
    for (field, col) in std::iter::once(&("ts", c.ts_column.clone())).chain(cols) {
        if let Some(col) = col {
            overrides.pairs.push((field, col.clone()));
        }
    }
    let header = if c.header {
        Some(true)
    } else if c.no_header {
        Some(false)
    } else {
        None
    };
    let opts = ImportOptions {
        key,
        register,
        files: c.files,
        format: c.format,
        csv: CsvOptions { delimiter, header },
        ts_unit: c.ts_unit,
        prices: c.prices,
        strict_scale: c.strict_scale,
        overrides,
        skip_invalid: c.skip_invalid,
        rejects: c.rejects,
        dry_run: c.dry_run,
        quiet: c.quiet,
        dest: c.target.destination(),
    };
    Ok((opts, c.json))
}

fn print_import_summary(opts: &ImportOptions, s: &super::ImportSummary) {
    let (verb, rows) = if s.dry_run {
        (
            "checked (dry run, nothing written)",
            s.rows_read - s.rejected,
        )
    } else {
        ("imported", s.rows_written)
    };
    println!(
        "{verb} {rows} rows into {} from {} file(s) in {:.2} s ({} rows/s)",
        opts.key,
        opts.files.len(),
        s.seconds,
        human(s.rows_per_s as u64)
    );
    println!(
        "  rows read {}, written {} (inserted {}, replaced {}), rejected {}",
        s.rows_read, s.rows_written, s.inserted, s.replaced, s.rejected
    );
    for n in &s.notes {
        println!("  note: {n}");
    }
    if let Some(f) = s.rejects_file.as_ref().filter(|_| s.rejected > 0) {
        println!("  rejects with reasons: {}", f.display());
    }
    // Years of bars touch dozens of months; past a handful, the span says enough.
    let months = match s.months.as_slice() {
        [] => None,
        m if m.len() <= 6 => Some(m.join(", ")),
        [first, .., last] => Some(format!("{} months, {first} to {last}", s.months.len())),
        _ => None,
    };
    if let Some(m) = months {
        println!("  months touched: {m} (series version {})", s.version);
    }
}

/// Runs `fastk export ...`.
pub fn run_export(cmd: ExportCommand) -> ExitCode {
    init_logging();
    let (key, c) = match cmd {
        ExportCommand::Kline(a) => (SeriesKey::kline(&a.symbol, &a.timeframe), a.common),
        ExportCommand::Scalar(a) => (
            SeriesKey::scalar(&a.symbol, &a.timeframe, &a.category, &a.name),
            a.common,
        ),
    };
    let key = match key {
        Ok(k) => k,
        Err(e) => return fail(&TransferError::Usage(e.to_string())),
    };
    let bound = |s: &Option<String>, what: &str| -> Result<Option<i64>, TransferError> {
        s.as_deref()
            .map(|t| {
                parse_ts(t.as_bytes(), None)
                    .map(|(ms, _)| ms)
                    .map_err(|why| TransferError::Usage(format!("--{what} {t:?}: {why}")))
            })
            .transpose()
    };
    let range = match (bound(&c.start, "start"), bound(&c.end, "end")) {
        (Ok(a), Ok(b)) => TsRange::new(a, b),
        (Err(e), _) | (_, Err(e)) => return fail(&e),
    };
    let opts = ExportOptions {
        key,
        range,
        output: c.output,
        format: c.format,
        prices: c.prices,
        ts_format: c.ts_format,
        quiet: c.quiet,
        source: c.target.destination(),
    };
    match super::export(&opts) {
        Ok(s) if c.json => print_json(&s),
        Ok(s) => {
            println!(
                "exported {} rows of {} to {} in {:.2} s",
                s.rows,
                opts.key,
                s.output.display(),
                s.seconds
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn print_json(v: &impl serde::Serialize) -> ExitCode {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    ExitCode::SUCCESS
}

/// Prints an error; invalid rows get their list and the way out.
fn fail(e: &TransferError) -> ExitCode {
    if let TransferError::BadRows(rows) = e {
        eprintln!("fastk: invalid rows found; nothing was written. The first ones:");
        for r in rows {
            eprintln!("  {r}");
        }
        eprintln!(
            "fix them, or pass --skip-invalid to write the good rows and list every bad one \
             with its reason in a rejects file"
        );
        return ExitCode::from(1);
    }
    eprintln!("fastk: {e}");
    ExitCode::from(2)
}
