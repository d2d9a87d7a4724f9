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
use super::timestamps::{Precision, parse_ts_in};
use super::{
    Destination, ExportOptions, FileFormat, ImportOptions, PriceMode, TransferError, TsUnit,
};
use crate::query::tick::RegisterTick;
use crate::query::types::{RegisterKline, RegisterScalar};
use crate::record::{SeriesKey, SeriesKind, TsRange, ValueType};

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import OHLCV bars into a kline series.
    Kline(ImportKline),
    /// Import (ts, value) rows into a scalar series.
    Scalar(ImportScalar),
    /// Import trades (ts, price, size; optional seq, side, trade_id) into a trade series.
    Trade(ImportTrade),
    /// Import best bid and offer changes (ts, bid, ask, bid_size, ask_size; optional
    /// seq) into a quote series.
    Quote(ImportQuote),
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Export bars of a kline series.
    Kline(ExportKline),
    /// Export a scalar series.
    Scalar(ExportScalar),
    /// Export trades of a trade series.
    Trade(ExportTick),
    /// Export quotes of a quote series.
    Quote(ExportTick),
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

/// Registration flags of a trade or quote series.
#[derive(Debug, Args)]
pub struct TickSeriesArgs {
    /// Series symbol, e.g. AAPL.
    #[arg(long)]
    symbol: String,
    /// Registers the series when missing (with --size-scale): real price × scale is stored.
    #[arg(long, requires = "size_scale")]
    price_scale: Option<i64>,
    /// Registers the series when missing (with --price-scale): real size × scale is stored.
    #[arg(long, requires = "price_scale")]
    size_scale: Option<i64>,
    /// Partition of a series registered here: day (default), hour or month.
    #[arg(long, requires = "price_scale")]
    partition: Option<String>,
    /// Column of seq (a header name or a 1-based position). Without one, the store
    /// numbers the rows of each ts in file order.
    #[arg(long)]
    seq_column: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportTrade {
    #[command(flatten)]
    series: TickSeriesArgs,
    /// Column of price (a header name or a 1-based position); likewise below.
    #[arg(long)]
    price_column: Option<String>,
    #[arg(long)]
    size_column: Option<String>,
    /// Column of side: B/buy/1, S/sell/A/-1, N/0/empty; a column named like
    /// is_buyer_maker is read as that flag (true: -1). Without one, side is 0.
    #[arg(long)]
    side_column: Option<String>,
    /// Column of trade_id (an integer). Without one, trade_id is 0.
    #[arg(long)]
    trade_id_column: Option<String>,
    #[command(flatten)]
    common: ImportCommon,
}

#[derive(Debug, Args)]
pub struct ImportQuote {
    #[command(flatten)]
    series: TickSeriesArgs,
    /// Column of bid (a header name or a 1-based position); likewise below.
    #[arg(long)]
    bid_column: Option<String>,
    #[arg(long)]
    ask_column: Option<String>,
    #[arg(long)]
    bid_size_column: Option<String>,
    #[arg(long)]
    ask_size_column: Option<String>,
    #[command(flatten)]
    common: ImportCommon,
}

#[derive(Debug, Args)]
pub struct ExportTick {
    /// Series symbol, e.g. AAPL.
    #[arg(long)]
    symbol: String,
    #[command(flatten)]
    common: ExportCommon,
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
    /// First ts (inclusive): an epoch integer (ms for bars, ns for ticks) or any form
    /// import accepts.
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
    /// CSV timestamps as epoch ms, epoch ns or ISO 8601 (default: ms for bars and
    /// scalars, ns for trades and quotes, whose timestamps are nanoseconds).
    #[arg(long)]
    ts_format: Option<TsFormat>,
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
        ImportCommand::Trade(a) => {
            let cols = [
                ("price", a.price_column),
                ("size", a.size_column),
                ("side", a.side_column),
                ("trade_id", a.trade_id_column),
            ];
            import_tick_options(SeriesKind::Trade, a.series, a.common, cols)
        }
        ImportCommand::Quote(a) => {
            let cols = [
                ("bid", a.bid_column),
                ("ask", a.ask_column),
                ("bid_size", a.bid_size_column),
                ("ask_size", a.ask_size_column),
            ];
            import_tick_options(SeriesKind::Quote, a.series, a.common, cols)
        }
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

fn import_tick_options(
    kind: SeriesKind,
    a: TickSeriesArgs,
    common: ImportCommon,
    value_cols: [(&'static str, Option<String>); 4],
) -> Result<(ImportOptions, bool), TransferError> {
    let key = match kind {
        SeriesKind::Trade => SeriesKey::trade(&a.symbol),
        _ => SeriesKey::quote(&a.symbol),
    }
    .map_err(crate::error::Error::from)?;
    let register = a.price_scale.zip(a.size_scale).map(|(p, s)| {
        Registration::Tick(
            kind,
            RegisterTick {
                symbol: a.symbol.clone(),
                price_scale: p,
                size_scale: s,
                partition: a.partition.clone(),
                retention_ms: None,
            },
        )
    });
    let cols: Vec<(&'static str, Option<String>)> = std::iter::once(("seq", a.seq_column))
        .chain(value_cols)
        .collect();
    common_options(key, register, common, &cols)
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
        let what = match opts.key.kind().is_tick() {
            true => "partitions",
            false => "months",
        };
        println!("  {what} touched: {m} (series version {})", s.version);
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
        ExportCommand::Trade(a) => (SeriesKey::trade(&a.symbol), a.common),
        ExportCommand::Quote(a) => (SeriesKey::quote(&a.symbol), a.common),
    };
    let key = match key {
        Ok(k) => k,
        Err(e) => return fail(&TransferError::Usage(e.to_string())),
    };
    let precision = match key.kind().is_tick() {
        true => Precision::Ns,
        false => Precision::Ms,
    };
    let ts_format = match (c.ts_format, key.kind().is_tick()) {
        (Some(TsFormat::Ms), true) => {
            return fail(&TransferError::Usage(
                "trade and quote timestamps are nanoseconds: --ts-format ns or iso".into(),
            ));
        }
        (Some(f), _) => f,
        (None, true) => TsFormat::Ns,
        (None, false) => TsFormat::Ms,
    };
    let bound = |s: &Option<String>, what: &str| -> Result<Option<i64>, TransferError> {
        s.as_deref()
            .map(|t| {
                parse_ts_in(t.as_bytes(), None, precision)
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
        ts_format,
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
