//! `fastk import`: files in, one all-or-nothing write out.
//!
//! The order matters: check the inputs exist and have a known format, open the
//! destination (which may refuse: a locked root, an unreachable server), learn the
//! series' scales (or describe it from the registration flags), read and check every
//! row of every file, and only when all of that succeeded, register the series if it
//! was missing and write once. A failure anywhere before the write leaves the series
//! exactly as it was, and an unregistered one unregistered.

use std::path::PathBuf;
use std::time::Instant;

use super::columns::ColumnOverrides;
use super::csv::{CsvOptions, read_csv};
use super::dest::{Dest, Target};
use super::progress::Progress;
use super::sink::{Flow, RowSink};
use super::{Destination, FileFormat, PriceMode, Result, RowSpec, TransferError, TsUnit};
use crate::query::types::{RegisterKline, RegisterScalar, WriteResponse};
use crate::record::SeriesKey;

/// Registration from flags, used when the series does not exist yet.
#[derive(Debug, Clone)]
pub enum Registration {
    Kline(RegisterKline),
    Scalar(RegisterScalar),
    /// A trade or quote series.
    Tick(crate::record::SeriesKind, crate::query::tick::RegisterTick),
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
    /// Choices the import made on its own that the user should know about (e.g.
    /// "<file>: using unnamed first column as ts").
    pub notes: Vec<String>,
}

/// Runs an import. On `Err`, nothing was written.
pub fn import(opts: &ImportOptions) -> Result<ImportSummary> {
    let started = Instant::now();
    let formats = input_formats(opts)?;
    let mut dest = Dest::open(&opts.dest)?;
    let Target { meta, register } = dest.target(opts)?;
    let spec = RowSpec::for_series(
        &meta,
        opts.prices,
        opts.strict_scale,
        opts.ts_unit,
        opts.overrides.clone(),
    );
    let rejects_file = opts.skip_invalid.then(|| rejects_path(opts));
    let names = opts.files.iter().map(|p| p.display().to_string()).collect();
    let bounds = meta.partitioning().ts_bounds();
    let mut sink = RowSink::new(meta.key.kind(), bounds, names, rejects_file.as_deref())?;
    let mut progress = Progress::new("import", total_bytes(&opts.files), opts.quiet);
    let mut notes = Vec::new();
    let mut flow = read_inputs(opts, &formats, &spec, &mut sink, &mut progress, &mut notes)?;
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
    notes.extend(sink.side_note());
    let batch = std::mem::take(&mut sink.batch);
    drop(sink);
    if let (Some(reg), false) = (&register, opts.dry_run) {
        dest.register(reg)?;
    }
    let resp = if opts.dry_run || batch.is_empty() {
        WriteResponse {
            written: 0,
            inserted: 0,
            replaced: 0,
            months: Vec::new(),
            version: dest.version(&meta.key),
        }
    } else {
        progress.phase(&format!("writing {} rows", batch.len()));
        dest.write(&meta, batch)?
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
        notes,
    })
}

/// Reads every input into the sink, in order, until done or told to stop.
fn read_inputs(
    opts: &ImportOptions,
    formats: &[FileFormat],
    spec: &RowSpec,
    sink: &mut RowSink,
    progress: &mut Progress,
    notes: &mut Vec<String>,
) -> Result<Flow> {
    use super::arrow_files::{read_ipc, read_parquet};
    for (i, (path, format)) in opts.files.iter().zip(formats).enumerate() {
        let file = i as u32;
        let flow = match format {
            FileFormat::Csv => read_csv(path, file, &opts.csv, spec, sink, progress, notes)?,
            FileFormat::Parquet => read_parquet(path, file, spec, sink, progress, notes)?,
            FileFormat::Arrow => read_ipc(path, file, spec, sink, progress, notes)?,
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
