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
use arrow_array::types::{Decimal128Type, Float64Type, Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, SchemaRef, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::columns::{self, value_fields};
use super::progress::Progress;
use super::sink::{Flow, RowSink};
use super::timestamps::{Precision, TsUnit};
use super::values::ValueRule;
use super::{Result, RowSpec, TransferError, absent_value};

/// Rows per decoded batch.
const BATCH_ROWS: usize = 65_536;

/// One converted cell: the stored integer, or why it was refused.
type Cell = std::result::Result<i64, &'static str>;

/// Reads one Parquet file into `sink`, decoding only the mapped columns. How the file
/// mapped (tick files: left-out fields, timestamp units) is added to `notes`.
pub fn read_parquet(
    path: &Path,
    file: u32,
    spec: &RowSpec,
    sink: &mut RowSink,
    progress: &mut Progress,
    notes: &mut Vec<String>,
) -> Result<Flow> {
    let f = File::open(path).map_err(|e| TransferError::io(path, e))?;
    let size = f.metadata().map_or(0, |m| m.len());
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| TransferError::decode(path, format!("not a readable Parquet file: {e}")))?;
    let (idx, rules) = map_columns(path, builder.schema(), spec, notes)?;
    let total_rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
    let mut sorted: Vec<usize> = idx.iter().flatten().copied().collect();
    sorted.sort_unstable();
    let mask = ProjectionMask::roots(builder.parquet_schema(), sorted.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| TransferError::decode(path, e))?;
    // The projected batch holds the mapped columns in file order.
    let pos: Vec<Option<usize>> = idx
        .iter()
        .map(|i| i.map(|i| sorted.binary_search(&i).unwrap_or(0)))
        .collect();
    let bytes_per_row = size as f64 / total_rows as f64;
    let read = Read {
        path,
        file,
        pos: &pos,
        rules: &rules,
        spec,
        bytes_per_row,
    };
    read.batches(reader, sink, progress, notes)
}

/// Reads one Arrow IPC file (file format) or stream (stream format) into `sink`.
pub fn read_ipc(
    path: &Path,
    file: u32,
    spec: &RowSpec,
    sink: &mut RowSink,
    progress: &mut Progress,
    notes: &mut Vec<String>,
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
    let (idx, rules) = map_columns(path, &schema, spec, notes)?;
    // Row counts are unknown up front; progress moves per batch by an average guess.
    let bytes_per_row = 48.0f64.min(size as f64);
    let read = Read {
        path,
        file,
        pos: &idx,
        rules: &rules,
        spec,
        bytes_per_row,
    };
    read.batches(batches, sink, progress, notes)
}

/// The file's column of ts and of each value field, and each value field's rule.
fn map_columns(
    path: &Path,
    schema: &SchemaRef,
    spec: &RowSpec,
    notes: &mut Vec<String>,
) -> Result<(Vec<Option<usize>>, Vec<ValueRule>)> {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let idx = columns::resolve_optional(
        spec.kind,
        Some(&names),
        names.len(),
        &spec.overrides,
        spec.series_name.as_deref(),
    )
    .map_err(|m| TransferError::Usage(format!("{}: {m}", path.display())))?;
    let col_names: Vec<Option<&str>> = idx[1..]
        .iter()
        .map(|i| i.map(|i| names[i].as_str()))
        .collect();
    let rules = spec.file_rules(&col_names);
    notes.extend(
        super::mapping_notes(spec, &idx, &rules)
            .into_iter()
            .map(|n| format!("{}: {n}", path.display())),
    );
    Ok((idx, rules))
}

/// One file being read: where its fields are and how they convert.
struct Read<'a> {
    path: &'a Path,
    file: u32,
    /// The batch column of ts, then of each value field (`None`: left out).
    pos: &'a [Option<usize>],
    rules: &'a [ValueRule],
    spec: &'a RowSpec,
    bytes_per_row: f64,
}

impl Read<'_> {
    /// Converts every batch of `batches` into `sink`.
    fn batches(
        &self,
        batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>,
        sink: &mut RowSink,
        progress: &mut Progress,
        notes: &mut Vec<String>,
    ) -> Result<Flow> {
        let (path, spec) = (self.path, self.spec);
        let fields = value_fields(spec.kind);
        let ts_pos = self.pos[0].expect("ts always has a column");
        let mut unit = spec.ts_unit;
        let mut ts_note = None;
        let mut first_row = 1u64;
        let mapped: Vec<usize> = self.pos.iter().flatten().copied().collect();
        for batch in batches {
            let batch = batch.map_err(|e| TransferError::decode(path, e))?;
            let ts_col = batch.column(ts_pos);
            let ts = ts_cells(ts_col, &mut unit, spec.precision)
                .map_err(|m| TransferError::Usage(format!("{}: ts: {m}", path.display())))?;
            if ts_note.is_none() {
                ts_note = Some(match ts_col.data_type() {
                    DataType::Timestamp(u, _) if spec.precision == Precision::Ns => Some(format!(
                        "ts: a timestamp[{}] column, stored as nanoseconds",
                        unit_name(*u)
                    )),
                    _ => super::unit_note(spec, unit),
                });
            }
            let n = batch.num_rows();
            let mut vals = Vec::with_capacity(self.rules.len());
            for (k, rule) in self.rules.iter().enumerate() {
                let Some(p) = self.pos[k + 1] else {
                    vals.push(vec![Ok(absent_value(fields[k])); n]);
                    continue;
                };
                let col = batch.column(p);
                let cells = value_cells(col, *rule).map_err(|m| {
                    TransferError::Usage(format!("{}: {}: {m}", path.display(), fields[k]))
                })?;
                if matches!(rule, ValueRule::Side | ValueRule::BuyerMaker) {
                    tally_side(col, &cells, sink);
                }
                vals.push(cells);
            }
            let mut row = [0i64; 6];
            for r in 0..n {
                let line = first_row + r as u64;
                let raw = || render_row(&batch, &mapped, r);
                let flow = match row_of(r, &ts, &vals, spec.kind, &mut row) {
                    Ok(()) => sink.push(self.file, line, &row[..=vals.len()], raw)?,
                    Err(why) => sink.reject_unparsed(self.file, line, why, raw)?,
                };
                if flow == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
            first_row += n as u64;
            progress.add((n as f64 * self.bytes_per_row) as u64, n as u64);
        }
        if let Some(Some(n)) = ts_note {
            notes.push(format!("{}: {n}", path.display()));
        }
        Ok(Flow::Go)
    }
}

fn unit_name(u: TimeUnit) -> &'static str {
    match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

/// Counts how a side column's source values mapped, for the import summary.
fn tally_side(col: &ArrayRef, cells: &[Cell], sink: &mut RowSink) {
    // Numbers are stored as they are: only text and flags have a mapping to report.
    let text = match col.data_type() {
        t if is_text(t) => cast(col, &DataType::Utf8).ok(),
        _ => None,
    };
    let flags = (col.data_type() == &DataType::Boolean).then(|| col.as_boolean());
    for (i, c) in cells.iter().enumerate() {
        let Ok(v) = c else { continue };
        if !col.is_valid(i) {
            continue;
        }
        if let Some(t) = &text {
            sink.tally_side(t.as_string::<i32>().value(i).trim().as_bytes(), *v);
        } else if let Some(b) = flags {
            sink.tally_side(if b.value(i) { b"true" } else { b"false" }, *v);
        }
    }
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

/// Converts a timestamp column to epoch milliseconds (floored), or nanoseconds for
/// `Precision::Ns` (exact). `unit` is the epoch unit of integer columns, detected from
/// the first value when not given.
fn ts_cells(
    a: &ArrayRef,
    unit: &mut Option<TsUnit>,
    precision: Precision,
) -> std::result::Result<Vec<Cell>, String> {
    const OVER: &str = "ts overflows 64-bit integers in the series' unit";
    let ns = precision == Precision::Ns;
    // Each source unit in nanoseconds; a target of milliseconds divides (floors) what
    // is finer and multiplies what is coarser.
    let convert = |unit_ns: i64| {
        move |v: i64| -> Cell {
            match (ns, unit_ns) {
                (true, m) => v.checked_mul(m).ok_or(OVER),
                (false, m) if m >= 1_000_000 => v.checked_mul(m / 1_000_000).ok_or(OVER),
                (false, m) => Ok(v.div_euclid(1_000_000 / m)),
            }
        }
    };
    let unit_ns = |u: TsUnit| match u {
        TsUnit::S => 1_000_000_000,
        TsUnit::Ms => 1_000_000,
        TsUnit::Us => 1000,
        TsUnit::Ns => 1,
    };
    match a.data_type() {
        DataType::Timestamp(u, _) => int_cells(
            a,
            convert(match u {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1000,
                TimeUnit::Nanosecond => 1,
            }),
        ),
        DataType::Date32 => int_cells(a, convert(86_400_000_000_000)),
        DataType::Date64 => int_cells(a, convert(1_000_000)),
        t if t.is_integer() => {
            let ints = cast(a, &DataType::Int64)?;
            let ints = ints.as_primitive::<Int64Type>();
            if unit.is_none() {
                *unit = (0..ints.len())
                    .find(|&i| ints.is_valid(i))
                    .map(|i| TsUnit::detect(ints.value(i)));
            }
            let default = if ns { TsUnit::Ns } else { TsUnit::Ms };
            int_cells(a, convert(unit_ns(unit.unwrap_or(default))))
        }
        t if is_text(t) => {
            let s = cast(a, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            Ok((0..s.len())
                .map(|i| {
                    if s.is_null(i) {
                        return Err("null");
                    }
                    let (v, u) =
                        super::timestamps::parse_ts_in(s.value(i).as_bytes(), *unit, precision)?;
                    if unit.is_none() && u.is_some() {
                        *unit = u;
                    }
                    Ok(v)
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
        DataType::UInt64 => {
            let u = a.as_primitive::<UInt64Type>();
            Ok((0..u.len())
                .map(|i| match u.is_valid(i) {
                    true => rule.from_u64(u.value(i)),
                    false => Err("null"),
                })
                .collect())
        }
        DataType::Boolean => {
            let b = a.as_boolean();
            Ok((0..b.len())
                .map(|i| match b.is_valid(i) {
                    true => rule.from_bool(b.value(i)),
                    false => Err("null"),
                })
                .collect())
        }
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
