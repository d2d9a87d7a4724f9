//! `fastk export`: a range of a series out to CSV, Parquet or Arrow IPC.
//!
//! Rows stream from the store slice by slice (locally: zero-copy batches over the
//! mapped chunks; remotely: DoGet batches), so memory stays flat for any range. The
//! output is written to a temporary file beside the target and renamed into place at
//! the end, so a failed export never leaves a truncated file under the final name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, Int8Type, Int64Type, TimestampMillisecondType, TimestampNanosecondType, UInt64Type,
};
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::arrow_files::BatchWriter;
use super::progress::Progress;
use super::remote::FlightRemote;
use super::{Destination, FileFormat, PriceMode, Result, TransferError};
use crate::record::{SeriesKey, SeriesKind, SeriesMeta, TsRange, format_ts};
use crate::storage::batch::Projection;

/// Rows per exported batch (and per Parquet row group write).
const BATCH_ROWS: usize = 65_536;

/// How CSV timestamps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TsFormat {
    /// Epoch milliseconds.
    #[default]
    Ms,
    /// Epoch nanoseconds (the default of trades and quotes).
    Ns,
    /// RFC 3339 with milliseconds (`2024-01-01T00:00:00.000Z`), or with nanoseconds
    /// for trades and quotes (`2024-01-01T00:00:00.000000001Z`).
    Iso,
}

/// Everything `fastk export` was asked to do.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub key: SeriesKey,
    pub range: TsRange,
    pub output: PathBuf,
    /// Forces a format; otherwise the output's extension decides (unknown: CSV).
    pub format: Option<FileFormat>,
    pub prices: PriceMode,
    pub ts_format: TsFormat,
    pub quiet: bool,
    pub source: Destination,
}

/// What an export did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    pub rows: u64,
    pub seconds: f64,
    pub output: PathBuf,
}

/// Runs an export.
pub fn export(opts: &ExportOptions) -> Result<ExportSummary> {
    let started = Instant::now();
    let format = opts
        .format
        .or_else(|| FileFormat::from_path(&opts.output))
        .unwrap_or(FileFormat::Csv);
    let tmp = temp_path(&opts.output);
    let result = match &opts.source {
        Destination::Root(root) => {
            let engine = super::dest::open_root(root, false)?;
            let total = engine.count(&opts.key, opts.range, None)?;
            let (meta, stream) = engine.stream(&opts.key, opts.range, None)?;
            let proj = Projection::all(&meta);
            let mut out = Output::create(&tmp, format, &meta, opts, total)?;
            let rows = stream_local(stream, &proj, &mut out);
            rows.and_then(|()| out.finish())
        }
        Destination::Server { flight: None, .. } => Err(TransferError::Usage(
            "an export from a running server needs its Flight address: --flight HOST:PORT".into(),
        )),
        Destination::Server {
            flight: Some(addr),
            token,
            tls,
            ..
        } => {
            let mut remote = FlightRemote::connect(addr, token.as_deref(), tls)?;
            let meta = remote.series_meta(&opts.key)?.ok_or_else(|| {
                TransferError::Usage(format!("series {} does not exist on the server", opts.key))
            })?;
            let mut out = Output::create(&tmp, format, &meta, opts, 0)?;
            remote
                .get(&opts.key, opts.range, |b| out.write(b))
                .and_then(|()| out.finish())
        }
    };
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &opts.output).map_err(|e| TransferError::io(&opts.output, e))?;
    Ok(ExportSummary {
        rows,
        seconds: started.elapsed().as_secs_f64(),
        output: opts.output.clone(),
    })
}

fn stream_local(
    stream: crate::query::SliceStream,
    proj: &Projection,
    out: &mut Output,
) -> Result<()> {
    for slice in stream {
        let slice = slice.map_err(crate::error::Error::from)?;
        for batch in proj.batches(&slice, BATCH_ROWS) {
            out.write(&batch)?;
        }
    }
    Ok(())
}

/// `.<name>.tmp-<pid>` beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

enum Sink {
    Csv(std::io::BufWriter<std::fs::File>),
    /// Boxed: a Parquet writer is large and there is one per export.
    Batches(Box<BatchWriter>),
}

/// The open output file and what each raw batch must become in it.
struct Output {
    sink: Sink,
    path: PathBuf,
    meta: SeriesMeta,
    prices: PriceMode,
    ts_format: TsFormat,
    /// The output schema (real prices as float64) for Parquet and Arrow.
    schema: SchemaRef,
    rows: u64,
    line: Vec<u8>,
    progress: Progress,
}

impl Output {
    fn create(
        path: &Path,
        format: FileFormat,
        meta: &SeriesMeta,
        opts: &ExportOptions,
        total: u64,
    ) -> Result<Output> {
        let file = std::fs::File::create(path).map_err(|e| TransferError::io(&opts.output, e))?;
        let schema = output_schema(meta, opts.prices);
        let sink = match format {
            FileFormat::Csv => {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
                let header = std::iter::once("ts").chain(
                    super::columns::value_fields(meta.key.kind())
                        .iter()
                        .copied(),
                );
                writeln!(w, "{}", header.collect::<Vec<_>>().join(","))
                    .map_err(|e| TransferError::io(&opts.output, e))?;
                Sink::Csv(w)
            }
            _ => Sink::Batches(Box::new(
                BatchWriter::new(format, file, Arc::clone(&schema))
                    .map_err(|e| TransferError::decode(&opts.output, e))?,
            )),
        };
        Ok(Output {
            sink,
            path: opts.output.clone(),
            meta: meta.clone(),
            prices: opts.prices,
            ts_format: opts.ts_format,
            schema,
            rows: 0,
            line: Vec::with_capacity(256),
            progress: Progress::new("export", total, opts.quiet),
        })
    }

    /// Writes one batch in the read schema (raw integers, f64 values as float64).
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        match &mut self.sink {
            Sink::Csv(w) => {
                let res = write_csv_rows(
                    w,
                    &mut self.line,
                    batch,
                    &self.meta,
                    self.prices,
                    self.ts_format,
                );
                res.map_err(|e| TransferError::io(&self.path, e))?;
            }
            Sink::Batches(w) => {
                let out = convert_batch(batch, &self.meta, self.prices, &self.schema);
                w.write(&out)
                    .map_err(|e| TransferError::decode(&self.path, e))?;
            }
        }
        self.rows += n as u64;
        self.progress.add(n as u64, n as u64);
        Ok(())
    }

    fn finish(self) -> Result<u64> {
        match self.sink {
            Sink::Csv(mut w) => w.flush().map_err(|e| TransferError::io(&self.path, e))?,
            Sink::Batches(w) => w
                .finish()
                .map_err(|e| TransferError::decode(&self.path, e))?,
        }
        Ok(self.rows)
    }
}

/// The read schema, with kline prices and volume as float64 for real prices.
/// The real-number scale of column `name` of `meta`'s series: prices divide by the
/// price scale, volumes and sizes by the volume (size) scale; `None` for the rest.
fn real_scale(meta: &SeriesMeta, name: &str) -> Option<i64> {
    match (meta.key.kind(), name) {
        (SeriesKind::Scalar, _) | (_, "ts" | "seq" | "side" | "trade_id") => None,
        (_, "volume" | "size" | "bid_size" | "ask_size") => Some(meta.volume_scale),
        _ => Some(meta.price_scale),
    }
}

fn output_schema(meta: &SeriesMeta, prices: PriceMode) -> SchemaRef {
    let raw = Projection::all(meta).schema;
    if prices == PriceMode::Raw || meta.key.kind() == SeriesKind::Scalar {
        return raw;
    }
    let fields: Vec<Field> = raw
        .fields()
        .iter()
        .map(|f| match real_scale(meta, f.name()) {
            None => f.as_ref().clone(),
            Some(_) => Field::new(f.name(), DataType::Float64, false),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, raw.metadata().clone()))
}

/// A raw batch in the output schema: kline columns divided by their scale when real.
fn convert_batch(
    batch: &RecordBatch,
    meta: &SeriesMeta,
    prices: PriceMode,
    schema: &SchemaRef,
) -> RecordBatch {
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    if prices == PriceMode::Real {
        for (col, field) in cols.iter_mut().zip(batch.schema().fields()) {
            let Some(scale) = real_scale(meta, field.name()) else {
                continue;
            };
            let scale = scale as f64;
            let ints = col.as_primitive::<Int64Type>();
            *col = Arc::new(Float64Array::from_iter_values(
                ints.values().iter().map(|&v| v as f64 / scale),
            ));
        }
    }
    RecordBatch::try_new(Arc::clone(schema), cols)
        .expect("converted columns match the output schema")
}

/// Appends the CSV lines of `batch` to `w`.
fn write_csv_rows(
    w: &mut impl Write,
    line: &mut Vec<u8>,
    batch: &RecordBatch,
    meta: &SeriesMeta,
    prices: PriceMode,
    ts_format: TsFormat,
) -> std::io::Result<()> {
    let ts_col = batch.column(0);
    let nanos = matches!(
        ts_col.data_type(),
        DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, _)
    );
    let ts = match nanos {
        true => ts_col.as_primitive::<TimestampNanosecondType>().values(),
        false => ts_col.as_primitive::<TimestampMillisecondType>().values(),
    };
    let scales: Vec<i64> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| match prices {
            PriceMode::Real => real_scale(meta, f.name()).unwrap_or(1),
            PriceMode::Raw => 1,
        })
        .collect();
    for r in 0..batch.num_rows() {
        line.clear();
        match (ts_format, nanos) {
            (TsFormat::Ms, false) => write!(line, "{}", ts[r])?,
            (TsFormat::Ms, true) => write!(line, "{}", ts[r].div_euclid(1_000_000))?,
            (TsFormat::Ns, false) => write!(line, "{}", i128::from(ts[r]) * 1_000_000)?,
            (TsFormat::Ns, true) => write!(line, "{}", ts[r])?,
            (TsFormat::Iso, false) => line.extend_from_slice(format_ts(ts[r]).as_bytes()),
            (TsFormat::Iso, true) => line.extend_from_slice(format_ts_ns(ts[r]).as_bytes()),
        }
        for (col, &scale) in batch.columns().iter().zip(&scales).skip(1) {
            line.push(b',');
            match col.data_type() {
                DataType::Float64 => {
                    write!(line, "{}", col.as_primitive::<Float64Type>().value(r))?
                }
                DataType::UInt64 => write!(line, "{}", col.as_primitive::<UInt64Type>().value(r))?,
                DataType::Int8 => write!(line, "{}", col.as_primitive::<Int8Type>().value(r))?,
                _ => write_scaled(line, col.as_primitive::<Int64Type>().value(r), scale)?,
            }
        }
        line.push(b'\n');
        w.write_all(line)?;
    }
    Ok(())
}

/// `v / scale` as text: exact decimals for a power-of-ten scale, f64 otherwise.
fn write_scaled(out: &mut Vec<u8>, v: i64, scale: i64) -> std::io::Result<()> {
    if scale == 1 {
        return write!(out, "{v}");
    }
    let digits = scale.ilog10();
    if 10i64.pow(digits) != scale {
        return write!(out, "{}", v as f64 / scale as f64);
    }
    let a = v.unsigned_abs();
    let s = scale as u64;
    let sign = if v < 0 { "-" } else { "" };
    write!(
        out,
        "{sign}{}.{:0width$}",
        a / s,
        a % s,
        width = digits as usize
    )
}

/// RFC 3339 with nanoseconds: `2024-01-01T00:00:00.000000001Z`.
fn format_ts_ns(ns: i64) -> String {
    let ms_text = format_ts(ns.div_euclid(1_000_000));
    // `…SS.mmmZ`: the milliseconds are replaced by all nine digits of the fraction.
    let whole = &ms_text[..ms_text.len() - 4];
    format!("{whole}{:09}Z", ns.rem_euclid(1_000_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_timestamps_print_every_digit() {
        assert_eq!(format_ts_ns(1), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(
            format_ts_ns(1_704_067_200_123_456_789),
            "2024-01-01T00:00:00.123456789Z"
        );
    }

    #[test]
    fn scaled_values_print_exactly() {
        let mut out = Vec::new();
        for (v, scale, want) in [
            (4_200_012, 100, "42000.12"),
            (-5, 100, "-0.05"),
            (7, 1, "7"),
            (3, 4, "0.75"),
            (10, 10, "1.0"),
        ] {
            out.clear();
            write_scaled(&mut out, v, scale).unwrap();
            assert_eq!(String::from_utf8_lossy(&out), want);
        }
    }
}
