//! Arrow views of stored rows: schemas with series metadata, and record batches whose
//! buffers are exact slices of the mapped chunk files.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int8Array, Int64Array, RecordBatch, TimestampMillisecondArray,
    TimestampNanosecondArray, UInt64Array,
};
use arrow_buffer::ScalarBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::snapshot::ChunkSlice;
use crate::record::{SeriesKind, SeriesMeta, ValueType};

/// Kline columns after `ts`, in storage order.
pub const KLINE_COLUMNS: [&str; 5] = ["open", "high", "low", "close", "volume"];

/// How kline prices and volume are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PriceFormat {
    /// Fixed-point int64 exactly as stored (zero copy).
    #[default]
    Raw,
    /// value / scale as float64 (one conversion pass).
    Float64,
}

/// The `fastk.*` schema metadata of a series.
pub fn series_metadata(meta: &SeriesMeta) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert("fastk.kind".into(), meta.key.kind().as_str().into());
    m.insert("fastk.symbol".into(), meta.key.symbol().into());
    m.insert("fastk.timeframe".into(), meta.key.timeframe().into());
    m.insert("fastk.timeframe_ms".into(), meta.timeframe_ms.to_string());
    match meta.key.kind() {
        SeriesKind::Kline => {
            m.insert("fastk.price_scale".into(), meta.price_scale.to_string());
            m.insert("fastk.volume_scale".into(), meta.volume_scale.to_string());
        }
        SeriesKind::Scalar => {
            m.insert(
                "fastk.category".into(),
                meta.key.category().unwrap_or_default().into(),
            );
            m.insert(
                "fastk.name".into(),
                meta.key.name().unwrap_or_default().into(),
            );
            m.insert("fastk.value_type".into(), meta.value_type.as_str().into());
        }
        SeriesKind::Trade | SeriesKind::Quote => {
            m.insert("fastk.price_scale".into(), meta.price_scale.to_string());
            m.insert("fastk.size_scale".into(), meta.volume_scale.to_string());
            m.insert(
                "fastk.partition".into(),
                crate::record::tick_partition_name(meta.timeframe_ms).into(),
            );
        }
    }
    m
}

/// `ts` of a tick series: nanoseconds since the epoch, UTC.
pub fn ts_ns_field() -> Field {
    Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )
}

/// Whether tick column `name` is a size (divided by the size scale) rather than a
/// price (the price scale); `None` for columns that are not scaled.
fn tick_scale_of(name: &str) -> Option<bool> {
    match name {
        "price" | "bid" | "ask" => Some(false),
        "size" | "bid_size" | "ask_size" => Some(true),
        _ => None,
    }
}

pub fn ts_field() -> Field {
    Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    )
}

/// Which stored columns a read returns, and how; builds the batches.
#[derive(Debug, Clone)]
pub struct Projection {
    /// Storage column indices (0 = ts, always first).
    pub cols: Vec<usize>,
    /// Per returned column: divide by this and emit float64 (None: raw).
    scales: Vec<Option<f64>>,
    value_type: ValueType,
    pub schema: SchemaRef,
}

/// What stored column `col` of a series is divided by when sent in `format` (`None`:
/// sent as stored): kline prices by the price scale and volume by the volume scale
/// with `price_format: float64`.
pub fn column_scale(meta: &SeriesMeta, col: usize, format: PriceFormat) -> Option<f64> {
    match (meta.key.kind(), format) {
        (SeriesKind::Kline, PriceFormat::Float64) if col > 0 => {
            Some(if KLINE_COLUMNS[col - 1] == "volume" {
                meta.volume_scale as f64
            } else {
                meta.price_scale as f64
            })
        }
        (SeriesKind::Trade | SeriesKind::Quote, PriceFormat::Float64) => {
            let name = meta.layout().columns[col];
            tick_scale_of(name).map(|size| {
                if size {
                    meta.volume_scale as f64
                } else {
                    meta.price_scale as f64
                }
            })
        }
        _ => None,
    }
}

impl Projection {
    /// Every column of the series, raw.
    pub fn all(meta: &SeriesMeta) -> Projection {
        Projection::new(meta, None, PriceFormat::Raw).expect("all columns exist")
    }

    /// `columns` selects a subset of the kline columns (ts is always included; order
    /// follows storage order). Scalar series always return ts and value.
    pub fn new(
        meta: &SeriesMeta,
        columns: Option<&[String]>,
        format: PriceFormat,
    ) -> Result<Projection, String> {
        let mut fields = vec![ts_field()];
        let mut cols = vec![0];
        let mut scales = vec![None];
        match meta.key.kind() {
            SeriesKind::Kline => {
                if let Some(req) = columns {
                    for c in req {
                        if c != "ts" && !KLINE_COLUMNS.contains(&c.as_str()) {
                            return Err(format!(
                                "unknown column {c:?}: expected ts, open, high, low, close, volume"
                            ));
                        }
                    }
                }
                for (i, name) in KLINE_COLUMNS.iter().enumerate() {
                    if columns.is_some_and(|req| !req.iter().any(|c| c == name)) {
                        continue;
                    }
                    cols.push(i + 1);
                    let scale = column_scale(meta, i + 1, format);
                    let dt = match scale {
                        None => DataType::Int64,
                        Some(_) => DataType::Float64,
                    };
                    fields.push(Field::new(*name, dt, false));
                    scales.push(scale);
                }
            }
            SeriesKind::Scalar => {
                if let Some(req) = columns
                    && let Some(c) = req.iter().find(|c| *c != "ts" && *c != "value")
                {
                    return Err(format!(
                        "unknown column {c:?}: a scalar series has ts and value"
                    ));
                }
                let dt = match meta.value_type {
                    ValueType::I64 => DataType::Int64,
                    ValueType::F64 => DataType::Float64,
                };
                cols.push(1);
                scales.push(None);
                fields.push(Field::new("value", dt, false));
            }
            SeriesKind::Trade | SeriesKind::Quote => {
                fields[0] = ts_ns_field();
                let names = meta.layout().columns;
                if let Some(req) = columns
                    && let Some(c) = req.iter().find(|c| !names.contains(&c.as_str()))
                {
                    return Err(format!(
                        "unknown column {c:?}: expected {}",
                        names.join(", ")
                    ));
                }
                for (i, name) in names.iter().enumerate().skip(1) {
                    if columns.is_some_and(|req| !req.iter().any(|c| c == name)) {
                        continue;
                    }
                    let scale = column_scale(meta, i, format);
                    let dt = match (*name, scale) {
                        (_, Some(_)) => DataType::Float64,
                        ("seq", None) => DataType::UInt64,
                        ("side", None) => DataType::Int8,
                        _ => DataType::Int64,
                    };
                    cols.push(i);
                    fields.push(Field::new(*name, dt, false));
                    scales.push(scale);
                }
            }
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, series_metadata(meta)));
        Ok(Projection {
            cols,
            scales,
            value_type: meta.value_type,
            schema,
        })
    }

    /// A record batch over `slice`: raw columns are zero-copy slices of the mapping.
    pub fn batch(&self, slice: &ChunkSlice) -> RecordBatch {
        let (s, e) = (slice.start, slice.end);
        let len = e - s;
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter()
            .zip(&self.scales)
            .zip(self.schema.fields())
            .map(|((&c, scale), field)| -> ArrayRef {
                if let Some(scale) = scale {
                    return Arc::new(Float64Array::from_iter_values(
                        slice.col(c).iter().map(|&v| v as f64 / scale),
                    ));
                }
                let buf = slice.chunk.buffer(c, s, e);
                match (field.data_type(), self.value_type) {
                    (DataType::Timestamp(TimeUnit::Millisecond, _), _) => Arc::new(
                        TimestampMillisecondArray::new(ScalarBuffer::new(buf, 0, len), None)
                            .with_timezone("UTC"),
                    ),
                    (DataType::Timestamp(_, _), _) => Arc::new(
                        TimestampNanosecondArray::new(ScalarBuffer::new(buf, 0, len), None)
                            .with_timezone("UTC"),
                    ),
                    // `seq` is stored as the bits of an unsigned integer.
                    (DataType::UInt64, _) => {
                        Arc::new(UInt64Array::new(ScalarBuffer::new(buf, 0, len), None))
                    }
                    // `side` is -1, 0 or 1, checked on write.
                    (DataType::Int8, _) => Arc::new(Int8Array::from_iter_values(
                        slice.col(c).iter().map(|&v| v as i8),
                    )),
                    (DataType::Float64, ValueType::F64) => {
                        Arc::new(Float64Array::new(ScalarBuffer::new(buf, 0, len), None))
                    }
                    _ => Arc::new(Int64Array::new(ScalarBuffer::new(buf, 0, len), None)),
                }
            })
            .collect();
        RecordBatch::try_new(Arc::clone(&self.schema), arrays)
            .expect("projection matches its schema")
    }

    /// Batches of at most `max_rows` rows over `slice`.
    pub fn batches(&self, slice: &ChunkSlice, max_rows: usize) -> Vec<RecordBatch> {
        let max_rows = max_rows.max(1);
        (0..slice.len())
            .step_by(max_rows)
            .map(|a| self.batch(&slice.sub(a, (a + max_rows).min(slice.len()))))
            .collect()
    }
}
