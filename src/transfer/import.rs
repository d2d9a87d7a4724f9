//! `fastk import`: files in, one all-or-nothing write out.
//!
//! The order matters: check the inputs exist and have a known format, open the
//! destination (which may refuse: a locked root, an unreachable server), learn the
//! series' scales (registering it from flags when asked), read and check every row of
//! every file, and only when all of that succeeded, write once. A failure anywhere
//! before the write leaves the series exactly as it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::columns::ColumnOverrides;
use super::csv::{CsvOptions, read_csv};
use super::progress::Progress;
use super::remote::FlightRemote;
use super::sink::{Flow, RowSink};
use super::{Destination, FileFormat, PriceMode, Result, RowSpec, TransferError, TsUnit};
use crate::config::Config;
use crate::error::ErrorKind;
use crate::query::Engine;
use crate::query::types::{RegisterKline, RegisterScalar, WriteResponse};
use crate::record::{SeriesKey, SeriesMeta, ValueType};

/// Registration from flags, used when the series does not exist yet.
#[derive(Debug, Clone)]
pub enum Registration {
    Kline(RegisterKline),
    Scalar(RegisterScalar),
}

/// Everything `fastk import` was asked to do.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub key: SeriesKey,
    pub register: Option<Registration>,
    pub files: Vec<PathBuf>,
    /// Forces a format; otherwise each file's extension decides (unknown: CSV).
    pub format: Option<FileFormat>,
    pub csv: CsvOptions,
    pub ts_unit: Option<TsUnit>,
    pub prices: PriceMode,
    pub strict_scale: bool,
    pub overrides: ColumnOverrides,
    /// Write the good rows and list the bad ones in `rejects` instead of stopping.
    pub skip_invalid: bool,
    /// Where rejects go (default `<first input>.rejects.csv`).
    pub rejects: Option<PathBuf>,
    /// Read and check everything, write nothing.
    pub dry_run: bool,
    pub quiet: bool,
    pub dest: Destination,
}

/// What an import did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportSummary {
    pub rows_read: u64,
    pub rows_written: u64,
    pub inserted: u64,
    pub replaced: u64,
    pub rejected: u64,
    pub months: Vec<String>,
    pub version: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub rejects_file: Option<PathBuf>,
    pub dry_run: bool,
}

/// An open destination: the engine of a data root, or a Flight client.
enum Dest {
    Local(Arc<Engine>),
    Remote(Box<FlightRemote>),
}

/// Runs an import. On `Err`, nothing was written.
pub fn import(opts: &ImportOptions) -> Result<ImportSummary> {
    let started = Instant::now();
    let formats = input_formats(opts)?;
    let mut dest = open_dest(&opts.dest)?;
    let meta = resolve_series(&mut dest, opts)?;
    let spec = RowSpec::for_series(
        &meta,
        opts.prices,
        opts.strict_scale,
        opts.ts_unit,
        opts.overrides.clone(),
    );
    let rejects_file = opts.skip_invalid.then(|| rejects_path(opts));
    let names = opts.files.iter().map(|p| p.display().to_string()).collect();
    let mut sink = RowSink::new(meta.key.kind().ncols(), names, rejects_file.as_deref())?;
    let mut progress = Progress::new("import", total_bytes(&opts.files), opts.quiet);
    let mut flow = read_inputs(opts, &formats, &spec, &mut sink, &mut progress)?;
    if flow == Flow::Go {
        progress.phase("checking for duplicate timestamps");
        flow = sink.finish()?;
    }
    if flow == Flow::Stop {
        progress.finish();
        let first = std::mem::take(&mut sink.first_rejects);
        return Err(TransferError::BadRows(first));
    }
    let (rows_read, rejected) = (sink.rows_read, sink.rejected);
    let batch = std::mem::take(&mut sink.batch);
    drop(sink);
    if let (Dest::Local(engine), Some(reg), false) = (&dest, &opts.register, opts.dry_run) {
        register(engine, reg)?;
    }
    let resp = if opts.dry_run || batch.is_empty() {
        WriteResponse {
            written: 0,
            inserted: 0,
            replaced: 0,
            months: Vec::new(),
            version: current_version(&mut dest, &meta)?,
        }
    } else {
        progress.phase(&format!("writing {} rows", batch.len()));
        match &mut dest {
            Dest::Local(engine) => engine.write(&meta.key, batch, None)?,
            Dest::Remote(remote) => remote.put(&meta, batch)?,
        }
    };
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    Ok(ImportSummary {
        rows_read,
        rows_written: resp.written,
        inserted: resp.inserted,
        replaced: resp.replaced,
        rejected,
        months: resp.months,
        version: resp.version,
        seconds,
        rows_per_s: rows_read as f64 / seconds.max(1e-9),
        rejects_file,
        dry_run: opts.dry_run,
    })
}

/// Reads every input into the sink, in order, until done or told to stop.
fn read_inputs(
    opts: &ImportOptions,
    formats: &[FileFormat],
    spec: &RowSpec,
    sink: &mut RowSink,
    progress: &mut Progress,
) -> Result<Flow> {
    use super::arrow_files::{read_ipc, read_parquet};
    for (i, (path, format)) in opts.files.iter().zip(formats).enumerate() {
        let file = i as u32;
        let flow = match format {
            FileFormat::Csv => read_csv(path, file, &opts.csv, spec, sink, progress)?,
            FileFormat::Parquet => read_parquet(path, file, spec, sink, progress)?,
            FileFormat::Arrow => read_ipc(path, file, spec, sink, progress)?,
        };
        if flow == Flow::Stop {
            return Ok(Flow::Stop);
        }
    }
    Ok(Flow::Go)
}

/// `--rejects`, or `<first input>.rejects.csv`.
fn rejects_path(opts: &ImportOptions) -> PathBuf {
    opts.rejects.clone().unwrap_or_else(|| {
        let mut p = opts.files[0].clone().into_os_string();
        p.push(".rejects.csv");
        PathBuf::from(p)
    })
}

fn total_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// The format of each input, checked before anything is opened.
fn input_formats(opts: &ImportOptions) -> Result<Vec<FileFormat>> {
    if opts.files.is_empty() {
        return Err(TransferError::Usage("no input files given".into()));
    }
    opts.files
        .iter()
        .map(|p| {
            if !p.is_file() {
                return Err(TransferError::Usage(format!(
                    "{}: no such file",
                    p.display()
                )));
            }
            Ok(opts
                .format
                .or_else(|| FileFormat::from_path(p))
                .unwrap_or(FileFormat::Csv))
        })
        .collect()
}

/// Opens a data root (taking its lock) or connects to a Flight server.
fn open_dest(dest: &Destination) -> Result<Dest> {
    match dest {
        Destination::Root(root) => open_root(root, true).map(Dest::Local),
        Destination::Flight { addr, token } => {
            FlightRemote::connect(addr, token.as_deref()).map(|r| Dest::Remote(Box::new(r)))
        }
    }
}

/// Opens the engine of a data root for an offline import (`create`: making the root
/// when it does not exist yet) or export (a missing root is an error).
pub fn open_root(root: &Path, create: bool) -> Result<Arc<Engine>> {
    if create {
        std::fs::create_dir_all(root).map_err(|e| TransferError::io(root, e))?;
    } else if !root.is_dir() {
        return Err(TransferError::Usage(format!(
            "no data root at {} (pass --root DIR or --flight HOST:PORT)",
            root.display()
        )));
    }
    let mut config = Config::default();
    config.storage.root = root.to_path_buf();
    Engine::open(config).map_err(|e| {
        if e.kind == ErrorKind::Unavailable {
            TransferError::Usage(format!(
                "the data root {} is held by another process (a running server?): \
                 go through the server with --flight HOST:PORT instead, or stop it first",
                root.display()
            ))
        } else {
            TransferError::Store(e)
        }
    })
}

/// The series' metadata. A missing series is described from the registration flags
/// but registered only right before the write, so a failed import changes nothing.
fn resolve_series(dest: &mut Dest, opts: &ImportOptions) -> Result<SeriesMeta> {
    let engine = match dest {
        Dest::Local(engine) => engine,
        Dest::Remote(remote) => return remote.series_meta(&opts.key),
    };
    match (engine.series(&opts.key), &opts.register) {
        (Ok(s), reg) => {
            // Registering an existing series changes nothing when the flags agree and
            // fails with a conflict when they do not: the check we want, up front.
            if let Some(reg) = reg {
                register(engine, reg)?;
            }
            Ok((*s.meta).clone())
        }
        (Err(e), Some(reg)) if e.kind == ErrorKind::NotFound => meta_from_flags(&opts.key, reg),
        (Err(e), None) if e.kind == ErrorKind::NotFound => Err(TransferError::Usage(format!(
            "series {} does not exist; register it with {}",
            opts.key,
            match opts.key.kind() {
                crate::record::SeriesKind::Kline => "--price-scale N --volume-scale N",
                crate::record::SeriesKind::Scalar => "--value-type i64|f64",
            }
        ))),
        (Err(e), _) => Err(e.into()),
    }
}

fn register(engine: &Engine, reg: &Registration) -> Result<()> {
    match reg {
        Registration::Kline(r) => engine.register_kline(r).map(drop)?,
        Registration::Scalar(r) => engine.register_scalar(r).map(drop)?,
    }
    Ok(())
}

/// The metadata a registration from these flags would create (same checks).
fn meta_from_flags(key: &SeriesKey, reg: &Registration) -> Result<SeriesMeta> {
    use crate::query::resolve_timeframe_ms;
    let (timeframe_ms, price_scale, volume_scale, value_type) = match reg {
        Registration::Kline(r) => {
            if r.price_scale <= 0 || r.volume_scale <= 0 {
                return Err(TransferError::Usage(
                    "--price-scale and --volume-scale must be positive integers (e.g. 100 for cents)".into(),
                ));
            }
            let tf = resolve_timeframe_ms(&r.timeframe, r.timeframe_ms)?;
            (tf, r.price_scale, r.volume_scale, ValueType::I64)
        }
        Registration::Scalar(r) => {
            let tf = resolve_timeframe_ms(&r.timeframe, r.timeframe_ms)?;
            (tf, 1, 1, r.value_type.unwrap_or_default())
        }
    };
    Ok(SeriesMeta {
        key: key.clone(),
        timeframe_ms,
        price_scale,
        volume_scale,
        value_type,
    })
}

fn current_version(dest: &mut Dest, meta: &SeriesMeta) -> Result<u64> {
    match dest {
        // A series described from flags but not registered yet has no version: 0.
        Dest::Local(engine) => Ok(engine.series(&meta.key).map_or(0, |s| s.version())),
        // Flight offers no cheap version query; nothing was sent, so 0 stands for "unchanged".
        Dest::Remote(_) => Ok(0),
    }
}
