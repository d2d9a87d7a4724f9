//! Parquet and Arrow IPC files: readers for imports, writers for exports.
//!
//! Readers decode one record batch at a time (64K rows), so memory stays flat however
//! large the file. Columns are matched by name as for a CSV header. Accepted types:
//! timestamps of any unit (with or without a zone: naive means UTC), Date32/Date64,
//! integers (epoch values for `ts`), floats, Decimal128, and strings (parsed as text).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, SchemaRef, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::columns::{self, value_fields};
use super::progress::Progress;
use super::sink::{Flow, RowSink};
use super::timestamps::{TsUnit, parse_ts};
use super::{Result, RowSpec, TransferError};

/// Rows per decoded batch.
const BATCH_ROWS: usize = 65_536;

/// One converted cell: the stored integer, or why it was refused.
type Cell = std::result::Result<i64, &'static str>;

/// Reads one Parquet file into `sink`, decoding only the mapped columns.
pub fn read_parquet(
    path: &Path,
    file: u32,
    spec: &RowSpec,
    sink: &mut RowSink,
    progress: &mut Progress,
) -> Result<Flow> {
    let f = File::open(path).map_err(|e| TransferError::io(path, e))?;
    let size = f.metadata().map_or(0, |m| m.len());
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| TransferError::decode(path, format!("not a readable Parquet file: {e}")))?;
    let idx = map_columns(path, builder.schema(), spec)?;
    let total_rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
    let mut sorted = idx.clone();
    sorted.sort_unstable();
    let mask = ProjectionMask::roots(builder.parquet_schema(), sorted.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| TransferError::decode(path, e))?;
    // The projected batch holds the mapped columns in file order.
    let pos: Vec<usize> = idx
        .iter()
        .map(|i| sorted.binary_search(i).unwrap_or(0))
        .collect();
    let bytes_per_row = size as f64 / total_rows as f64;
    read_batches(
        path,
        file,
        reader,
        &pos,
        spec,
        sink,
        progress,
        bytes_per_row,
    )
}

/// Reads one Arrow IPC file (file format) or stream (stream format) into `sink`.
pub fn read_ipc(
    path: &Path,
    file: u32,
    spec: &RowSpec,
    sink: &mut RowSink,
    progress: &mut Progress,
) -> Result<Flow> {
    let io = |e| TransferError::io(path, e);
    let mut f = File::open(path).map_err(io)?;
    let size = f.metadata().map_or(0, |m| m.len());
    let mut magic = [0u8; 6];
    let is_file = std::io::Read::read_exact(&mut f, &mut magic).is_ok() && &magic == b"ARROW1";
    std::io::Seek::rewind(&mut f).map_err(io)?;
    let bad =
        |e: ArrowError| TransferError::decode(path, format!("not a readable Arrow IPC file: {e}"));
    let (schema, batches): (
        SchemaRef,
        Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>>,
    ) = if is_file {
        let r = arrow_ipc::reader::FileReader::try_new(f, None).map_err(bad)?;
        (r.schema(), Box::new(r))
    } else {
        let r = arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(f), None)
            .map_err(bad)?;
        (r.schema(), Box::new(r))
    };
    let idx = map_columns(path, &schema, spec)?;
    // Row counts are unknown up front; progress moves per batch by an average guess.
    let bytes_per_row = 48.0f64.min(size as f64);
    read_batches(
        path,
        file,
        batches,
        &idx,
        spec,
        sink,
        progress,
        bytes_per_row,
    )
}

fn map_columns(path: &Path, schema: &SchemaRef, spec: &RowSpec) -> Result<Vec<usize>> {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    columns::resolve(
        spec.kind,
        Some(&names),
        names.len(),
        &spec.overrides,
        spec.series_name.as_deref(),
    )
    .map_err(|m| TransferError::Usage(format!("{}: {m}", path.display())))
}

/// Converts every batch of `batches`; `pos` is the batch column of ts, then of each value.
#[allow(clippy::too_many_arguments)]
fn read_batches(
    path: &Path,
    file: u32,
    batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>,
    pos: &[usize],
    spec: &RowSpec,
    sink: &mut RowSink,
    progress: &mut Progress,
    bytes_per_row: f64,
) -> Result<Flow> {
    let mut unit = spec.ts_unit;
    let mut first_row = 1u64;
    for batch in batches {
        let batch = batch.map_err(|e| TransferError::decode(path, e))?;
        let ts = ts_cells(batch.column(pos[0]), &mut unit)
            .map_err(|m| TransferError::Usage(format!("{}: ts: {m}", path.display())))?;
        let mut vals = Vec::with_capacity(spec.rules.len());
        for (k, rule) in spec.rules.iter().enumerate() {
            let cells = value_cells(batch.column(pos[k + 1]), *rule).map_err(|m| {
                let field = value_fields(spec.kind)[k];
                TransferError::Usage(format!("{}: {field}: {m}", path.display()))
            })?;
            vals.push(cells);
        }
        let n = batch.num_rows();
        let mut row = [0i64; 6];
        for r in 0..n {
            let line = first_row + r as u64;
            let raw = || render_row(&batch, pos, r);
            let flow = match row_of(r, &ts, &vals, spec.kind, &mut row) {
                Ok(()) => sink.push(file, line, &row[..=vals.len()], raw)?,
                Err(why) => sink.reject_unparsed(file, line, why, raw)?,
            };
            if flow == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        first_row += n as u64;
        progress.add((n as f64 * bytes_per_row) as u64, n as u64);
    }
    Ok(Flow::Go)
}

/// Gathers row `r` from the converted columns, naming the first bad field.
#[inline]
fn row_of(
    r: usize,
    ts: &[Cell],
    vals: &[Vec<Cell>],
    kind: crate::record::SeriesKind,
    row: &mut [i64; 6],
) -> std::result::Result<(), String> {
    row[0] = ts[r].map_err(|why| format!("ts: {why}"))?;
    for (k, cells) in vals.iter().enumerate() {
        row[k + 1] = cells[r].map_err(|why| format!("{}: {why}", value_fields(kind)[k]))?;
    }
    Ok(())
}

/// The mapped cells of row `r` as text, for the rejects file.
fn render_row(batch: &RecordBatch, pos: &[usize], r: usize) -> String {
    pos.iter()
        .map(|&p| {
            arrow_cast::display::array_value_to_string(batch.column(p), r).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Converts a timestamp column to epoch milliseconds. `unit` is the epoch unit of
/// integer columns, detected from the first value when not given.
fn ts_cells(a: &ArrayRef, unit: &mut Option<TsUnit>) -> std::result::Result<Vec<Cell>, String> {
    let floor_div = |d: i64| move |v: i64| Ok(v.div_euclid(d));
    match a.data_type() {
        DataType::Timestamp(u, _) => {
            let d = match u {
                TimeUnit::Second => {
                    return int_cells(a, |v| v.checked_mul(1000).ok_or("ts overflows"));
                }
                TimeUnit::Millisecond => 1,
                TimeUnit::Microsecond => 1000,
                TimeUnit::Nanosecond => 1_000_000,
            };
            int_cells(a, floor_div(d))
        }
        DataType::Date32 => int_cells(a, |v| Ok(v * 86_400_000)),
        DataType::Date64 => int_cells(a, floor_div(1)),
        t if t.is_integer() => {
            let ints = cast(a, &DataType::Int64)?;
            let ints = ints.as_primitive::<Int64Type>();
            if unit.is_none() {
                *unit = (0..ints.len())
                    .find(|&i| ints.is_valid(i))
                    .map(|i| TsUnit::detect(ints.value(i)));
            }
            let u = unit.unwrap_or(TsUnit::Ms);
            int_cells(a, |v| u.to_ms(v).ok_or("ts overflows"))
        }
        t if is_text(t) => {
            let s = cast(a, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            Ok((0..s.len())
                .map(|i| {
                    if s.is_null(i) {
                        return Err("null");
                    }
                    let (ms, u) = parse_ts(s.value(i).as_bytes(), *unit)?;
                    if unit.is_none() && u.is_some() {
                        *unit = u;
                    }
                    Ok(ms)
                })
                .collect())
        }
        t => Err(format!(
            "type {t} cannot hold a timestamp (use a timestamp, date, integer or string column)"
        )),
    }
}

/// Applies `f` to each value of an integer-like column (after a cast to Int64).
fn int_cells(a: &ArrayRef, f: impl Fn(i64) -> Cell) -> std::result::Result<Vec<Cell>, String> {
    let ints = cast(a, &DataType::Int64)?;
    let ints = ints.as_primitive::<Int64Type>();
    Ok((0..ints.len())
        .map(|i| {
            if ints.is_valid(i) {
                f(ints.value(i))
            } else {
                Err("null or out of range")
            }
        })
        .collect())
}

/// Converts a value column with `rule`.
fn value_cells(
    a: &ArrayRef,
    rule: super::values::ValueRule,
) -> std::result::Result<Vec<Cell>, String> {
    match a.data_type() {
        t if t.is_integer() => int_cells(a, |v| rule.from_i64(v)),
        t if t.is_floating() => {
            let f = cast(a, &DataType::Float64)?;
            let f = f.as_primitive::<Float64Type>();
            Ok((0..f.len())
                .map(|i| {
                    if f.is_valid(i) {
                        rule.from_f64(f.value(i))
                    } else {
                        Err("null")
                    }
                })
                .collect())
        }
        DataType::Decimal128(_, scale) => {
            let d = a.as_primitive::<Decimal128Type>();
            Ok((0..d.len())
                .map(|i| {
                    if d.is_valid(i) {
                        rule.from_decimal(d.value(i), *scale)
                    } else {
                        Err("null")
                    }
                })
                .collect())
        }
        t if is_text(t) => {
            let s = cast(a, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            Ok((0..s.len())
                .map(|i| {
                    if s.is_valid(i) {
                        rule.parse_text(s.value(i).as_bytes())
                    } else {
                        Err("null")
                    }
                })
                .collect())
        }
        t => Err(format!(
            "type {t} cannot hold a number (use an integer, float, decimal or string column)"
        )),
    }
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

fn cast(a: &ArrayRef, to: &DataType) -> std::result::Result<ArrayRef, String> {
    if a.data_type() == to {
        return Ok(Arc::clone(a));
    }
    arrow_cast::cast(a, to).map_err(|e| e.to_string())
}

/// A file an export writes record batches into.
pub enum BatchWriter {
    Parquet(parquet::arrow::ArrowWriter<File>),
    Ipc(arrow_ipc::writer::FileWriter<File>),
}

impl BatchWriter {
    /// A Parquet writer (zstd, as Polars writes by default) or an Arrow IPC file writer.
    pub fn new(
        format: super::FileFormat,
        file: File,
        schema: SchemaRef,
    ) -> Result<BatchWriter, String> {
        use parquet::basic::{Compression, ZstdLevel};
        use parquet::file::properties::WriterProperties;
        match format {
            super::FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))
                    .map(BatchWriter::Parquet)
                    .map_err(|e| e.to_string())
            }
            _ => arrow_ipc::writer::FileWriter::try_new(file, &schema)
                .map(BatchWriter::Ipc)
                .map_err(|e| e.to_string()),
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            BatchWriter::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            BatchWriter::Ipc(w) => w.write(batch).map_err(|e| e.to_string()),
        }
    }

    /// Writes the footer; the file is complete only after this.
    pub fn finish(self) -> Result<(), String> {
        match self {
            BatchWriter::Parquet(w) => w.close().map(drop).map_err(|e| e.to_string()),
            BatchWriter::Ipc(mut w) => w.finish().map_err(|e| e.to_string()),
        }
    }
}
