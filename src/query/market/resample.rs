//! Resample on read: the bars or values of one series aggregated into the buckets of
//! a [`Grid`] as they are read, one pass, memory bounded by one output batch.
//!
//! The rules (docs/market-queries.md): OHLCV as first open, max high, min low, last
//! close, summed volume, on the stored integers; scalars by [`Agg`], NaN skipped;
//! `complete` false only for the bucket holding the series' last bar; `fill` covers
//! empty buckets between the series' first bar and the last bar of the range.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::TimestampMillisecondArray;
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::grid::Grid;
use super::spec::{Agg, Fill, Resample};
use crate::error::{Error, Result};
use crate::record::{SeriesKind, SeriesMeta, TsRange, ValueType};
use crate::storage::batch::{KLINE_COLUMNS, PriceFormat, Projection, series_metadata, ts_field};
use crate::storage::{ChunkSlice, Snapshot};

/// A validated resample of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct ResamplePlan {
    pub grid: Grid,
    pub fill: Fill,
    pub agg: Agg,
    pub target: String,
    kind: SeriesKind,
    value_type: ValueType,
}

impl ResamplePlan {
    /// Checks `r` against the series: the grammar, the offset, that the target fits
    /// the stored timeframe, and that `agg` is only given for scalars.
    pub fn new(r: &Resample, agg: Option<Agg>, meta: &SeriesMeta) -> Result<ResamplePlan> {
        if meta.key.kind().is_tick() {
            return Err(Error::invalid(
                "bars from trades are not served yet (docs/ticks.md, \"Status\")",
            ));
        }
        let grid = Grid::parse(&r.timeframe, r.offset_ms.unwrap_or(0))?;
        grid.check_stored(&r.timeframe, meta.key.timeframe(), meta.timeframe_ms)?;
        let agg = match (r.agg, agg) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::invalid(
                    "agg is given twice with different values (inside resample and next to it)",
                ));
            }
            (a, b) => a.or(b),
        };
        let kind = meta.key.kind();
        if kind == SeriesKind::Kline && agg.is_some() {
            return Err(Error::invalid(
                "agg applies to scalar series; klines always aggregate as first open, max high, min low, last close, summed volume",
            ));
        }
        Ok(ResamplePlan {
            grid,
            fill: r.fill.unwrap_or_default(),
            agg: agg.unwrap_or_default(),
            target: r.timeframe.clone(),
            kind,
            value_type: meta.value_type,
        })
    }

    /// The type of a resampled scalar value.
    pub fn scalar_out(&self) -> ValueType {
        match self.agg {
            Agg::Mean => ValueType::F64,
            Agg::Count => ValueType::I64,
            _ => self.value_type,
        }
    }

    /// The output schema and how each column is made from a bucket.
    pub fn shape(
        &self,
        meta: &SeriesMeta,
        columns: Option<&[String]>,
        format: PriceFormat,
    ) -> Result<Shape> {
        // The plain projection validates the column names with the usual messages.
        Projection::new(meta, columns, format).map_err(Error::invalid)?;
        let nullable = self.fill == Fill::Null;
        let mut fields = vec![ts_field()];
        let mut cols = Vec::new();
        match self.kind {
            SeriesKind::Kline => {
                for (i, name) in KLINE_COLUMNS.iter().enumerate() {
                    if columns.is_some_and(|req| !req.iter().any(|c| c == name)) {
                        continue;
                    }
                    let scale = if *name == "volume" {
                        meta.volume_scale
                    } else {
                        meta.price_scale
                    };
                    let (dt, conv) = match format {
                        PriceFormat::Raw => (DataType::Int64, Conv::I64),
                        PriceFormat::Float64 => (DataType::Float64, Conv::Scaled(scale as f64)),
                    };
                    fields.push(Field::new(*name, dt, nullable));
                    cols.push((i, conv));
                }
            }
            SeriesKind::Scalar => {
                let (dt, conv) = match self.scalar_out() {
                    ValueType::I64 => (DataType::Int64, Conv::I64),
                    ValueType::F64 => (DataType::Float64, Conv::F64Bits),
                };
                fields.push(Field::new("value", dt, nullable));
                cols.push((0, conv));
            }
            SeriesKind::Trade | SeriesKind::Quote => {
                return Err(Error::invalid("bars from trades are not served yet"));
            }
        }
        fields.push(Field::new("complete", DataType::Boolean, false));
        let mut md = series_metadata(meta);
        md.insert("fastk.resample".into(), self.target.clone());
        md.insert(
            "fastk.resample_offset_ms".into(),
            self.grid.offset.to_string(),
        );
        if self.kind == SeriesKind::Scalar {
            md.insert("fastk.agg".into(), format!("{:?}", self.agg).to_lowercase());
            md.insert("fastk.value_type".into(), self.scalar_out().as_str().into());
        }
        Ok(Shape {
            schema: Arc::new(Schema::new_with_metadata(fields, md)),
            cols,
        })
    }
}

/// How an output column is made from a bucket's stored-width value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Conv {
    I64,
    F64Bits,
    Scaled(f64),
}

/// The schema of a resampled read and the recipe of its columns.
#[derive(Debug, Clone)]
pub struct Shape {
    pub schema: SchemaRef,
    /// (bucket value index, conversion) per value column.
    cols: Vec<(usize, Conv)>,
}

/// Buckets waiting to become a batch. Values are stored-width integers (f64 as bits).
#[derive(Debug, Default)]
struct Pending {
    ts: Vec<i64>,
    vals: [Vec<i64>; 5],
    valid: Vec<bool>,
    complete: Vec<bool>,
}

impl Pending {
    fn len(&self) -> usize {
        self.ts.len()
    }

    fn batch(&mut self, shape: &Shape) -> RecordBatch {
        let n = self.ts.len();
        let nulls = (!self.valid.iter().all(|&v| v))
            .then(|| NullBuffer::from(std::mem::take(&mut self.valid)));
        self.valid.clear();
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(
            TimestampMillisecondArray::from(std::mem::take(&mut self.ts)).with_timezone("UTC"),
        )];
        for &(i, conv) in &shape.cols {
            let v = &self.vals[i];
            arrays.push(match conv {
                Conv::I64 => Arc::new(Int64Array::new(v.clone().into(), nulls.clone())),
                Conv::F64Bits => Arc::new(Float64Array::new(
                    v.iter().map(|&b| f64::from_bits(b as u64)).collect(),
                    nulls.clone(),
                )),
                Conv::Scaled(s) => Arc::new(Float64Array::new(
                    v.iter().map(|&x| x as f64 / s).collect(),
                    nulls.clone(),
                )),
            });
        }
        for v in &mut self.vals {
            v.clear();
        }
        arrays.push(Arc::new(BooleanArray::from(std::mem::take(
            &mut self.complete,
        ))));
        debug_assert!(arrays.iter().all(|a| a.len() == n));
        RecordBatch::try_new(Arc::clone(&shape.schema), arrays)
            .expect("resampled columns match their shape")
    }
}

/// The running aggregate of the open bucket.
#[derive(Debug, Clone, Copy)]
struct Acc {
    rows: u64,
    /// Kline: open, high, low, close (volume is `sum_i`). Scalar: first, last
    /// (bits), and for i64 min, max in `k[2]`, `k[3]`.
    k: [i64; 5],
    /// Scalar: non-NaN values, their i64 sum, and f64 min, max, sum.
    n: u64,
    sum_i: i128,
    min_f: f64,
    max_f: f64,
    sum_f: f64,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            rows: 0,
            k: [0, i64::MIN, i64::MAX, i64::MIN, 0],
            n: 0,
            sum_i: 0,
            min_f: f64::INFINITY,
            max_f: f64::NEG_INFINITY,
            sum_f: 0.0,
        }
    }
}

/// Resamples slices of one series in `ts` order and hands out batches.
pub struct Resampler<'a> {
    plan: &'a ResamplePlan,
    shape: &'a Shape,
    /// The series' last stored `ts`: its bucket is the one still open.
    series_last: i64,
    /// The open bucket: start, end (exclusive), aggregate.
    cur: Option<(i64, i64, Acc)>,
    /// With a fill, the start of the next bucket to emit; empty ones up to the next
    /// bar are filled. None until a bar (or the seed) says the series has begun.
    cursor: Option<i64>,
    /// The previous bucket's values, repeated by `fill: "prev"`.
    prev: [i64; 5],
    pending: Pending,
    max_rows: usize,
    limit: Option<usize>,
    emitted: usize,
    /// Where the next page starts once `limit` buckets were emitted.
    pub next_start: Option<i64>,
    stopped: bool,
    sink: &'a mut dyn FnMut(RecordBatch) -> bool,
}

impl<'a> Resampler<'a> {
    pub fn new(
        plan: &'a ResamplePlan,
        shape: &'a Shape,
        series_last: i64,
        max_rows: usize,
        limit: Option<usize>,
        sink: &'a mut dyn FnMut(RecordBatch) -> bool,
    ) -> Resampler<'a> {
        Resampler {
            plan,
            shape,
            series_last,
            cur: None,
            cursor: None,
            prev: [0; 5],
            pending: Pending::default(),
            max_rows: max_rows.max(1),
            limit,
            emitted: 0,
            next_start: None,
            stopped: false,
            sink,
        }
    }

    /// Starts filling at `grid_start` from `prev`, the values of the last bucket
    /// before it (the series has bars before the read's range).
    pub fn seed(&mut self, grid_start: i64, prev: [i64; 5]) {
        if self.plan.fill != Fill::None {
            self.cursor = Some(grid_start);
            self.prev = prev;
        }
    }

    /// Whether the consumer wants no more (limit reached or sink closed).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Aggregates the rows of `s` (ascending, after every row fed before).
    pub fn feed(&mut self, s: &ChunkSlice) -> Result<()> {
        let ts = s.ts();
        let mut i = 0;
        while i < ts.len() && !self.stopped {
            let t = ts[i];
            let (start, end) = match self.cur {
                Some((start, end, _)) if t < end => (start, end),
                _ => {
                    self.close()?;
                    let start = self.plan.grid.bucket(t);
                    self.fill_to(start);
                    if self.stopped {
                        return Ok(());
                    }
                    let end = self.plan.grid.next(start);
                    self.cur = Some((start, end, Acc::new()));
                    (start, end)
                }
            };
            debug_assert!(start <= t && t < end);
            let run = i + ts[i..].partition_point(|&x| x < end);
            self.accumulate(s, i, run)?;
            i = run;
        }
        Ok(())
    }

    /// Rows `a..b` of `s` all fall in the open bucket.
    fn accumulate(&mut self, s: &ChunkSlice, a: usize, b: usize) -> Result<()> {
        let kline = self.plan.kind == SeriesKind::Kline;
        let vt = self.plan.value_type;
        let (_, _, acc) = self.cur.as_mut().expect("a bucket is open");
        if kline {
            let (o, h, l, c, v) = (s.col(1), s.col(2), s.col(3), s.col(4), s.col(5));
            if acc.rows == 0 {
                acc.k[0] = o[a];
            }
            acc.k[1] = acc.k[1].max(h[a..b].iter().copied().max().unwrap_or(i64::MIN));
            acc.k[2] = acc.k[2].min(l[a..b].iter().copied().min().unwrap_or(i64::MAX));
            acc.k[3] = c[b - 1];
            acc.sum_i += v[a..b].iter().map(|&x| x as i128).sum::<i128>();
        } else {
            match vt {
                ValueType::I64 => {
                    let v = &s.col(1)[a..b];
                    if acc.n == 0 {
                        acc.k[0] = v[0];
                    }
                    acc.k[1] = v[v.len() - 1];
                    acc.k[2] = acc.k[2].min(v.iter().copied().min().unwrap_or(i64::MAX));
                    acc.k[3] = acc.k[3].max(v.iter().copied().max().unwrap_or(i64::MIN));
                    acc.sum_i += v.iter().map(|&x| x as i128).sum::<i128>();
                    acc.n += v.len() as u64;
                }
                ValueType::F64 => {
                    for &x in &s.col_f64(1)[a..b] {
                        if x.is_nan() {
                            continue;
                        }
                        if acc.n == 0 {
                            acc.k[0] = x.to_bits() as i64;
                        }
                        acc.k[1] = x.to_bits() as i64;
                        acc.min_f = acc.min_f.min(x);
                        acc.max_f = acc.max_f.max(x);
                        acc.sum_f += x;
                        acc.n += 1;
                    }
                }
            }
        }
        acc.rows += (b - a) as u64;
        Ok(())
    }

    /// Emits filled buckets from the cursor up to (not including) `start`.
    fn fill_to(&mut self, start: i64) {
        let Some(mut at) = self.cursor else { return };
        if self.plan.fill == Fill::None {
            return;
        }
        while at < start && !self.stopped {
            let vals = self.filled();
            self.emit(at, vals, self.plan.fill == Fill::Prev);
            at = self.plan.grid.next(at);
        }
        self.cursor = Some(at);
    }

    /// The values of an empty bucket under `fill: "prev"`.
    fn filled(&self) -> [i64; 5] {
        if self.plan.kind == SeriesKind::Kline {
            let c = self.prev[3];
            [c, c, c, c, 0]
        } else {
            match self.plan.agg {
                Agg::Sum if self.scalar_f64() => [0f64.to_bits() as i64, 0, 0, 0, 0],
                Agg::Sum | Agg::Count => [0; 5],
                _ => self.prev,
            }
        }
    }

    fn scalar_f64(&self) -> bool {
        self.plan.scalar_out() == ValueType::F64
    }

    /// Closes the open bucket, if any, and emits it.
    fn close(&mut self) -> Result<()> {
        let Some((start, _, acc)) = self.cur.take() else {
            return Ok(());
        };
        debug_assert!(acc.rows > 0, "a bucket opens with its first row");
        let vals = self.finish(&acc)?;
        self.emit(start, vals, true);
        self.prev = vals;
        self.cursor = Some(self.plan.grid.next(start));
        Ok(())
    }

    /// The output values of a closed bucket.
    fn finish(&self, acc: &Acc) -> Result<[i64; 5]> {
        let overflow = |what: &str| {
            Error::invalid(format!(
                "the {what} of a {} bucket overflows int64; resample to a shorter timeframe",
                self.plan.target
            ))
        };
        if self.plan.kind == SeriesKind::Kline {
            let v = i64::try_from(acc.sum_i).map_err(|_| overflow("volume"))?;
            return Ok([acc.k[0], acc.k[1], acc.k[2], acc.k[3], v]);
        }
        let f = |x: f64| x.to_bits() as i64;
        let v = match (self.plan.value_type, self.plan.agg) {
            (_, Agg::Count) => acc.n as i64,
            (ValueType::I64, Agg::First) => acc.k[0],
            (ValueType::I64, Agg::Last) => acc.k[1],
            (ValueType::I64, Agg::Min) => acc.k[2],
            (ValueType::I64, Agg::Max) => acc.k[3],
            (ValueType::I64, Agg::Sum) => i64::try_from(acc.sum_i).map_err(|_| overflow("sum"))?,
            (ValueType::I64, Agg::Mean) => f(acc.sum_i as f64 / acc.n as f64),
            (ValueType::F64, Agg::Sum) => f(acc.sum_f),
            (ValueType::F64, _) if acc.n == 0 => f(f64::NAN),
            (ValueType::F64, Agg::First) => acc.k[0],
            (ValueType::F64, Agg::Last) => acc.k[1],
            (ValueType::F64, Agg::Min) => f(acc.min_f),
            (ValueType::F64, Agg::Max) => f(acc.max_f),
            (ValueType::F64, Agg::Mean) => f(acc.sum_f / acc.n as f64),
        };
        Ok([v, 0, 0, 0, 0])
    }

    fn emit(&mut self, start: i64, vals: [i64; 5], valid: bool) {
        if self.stopped {
            return;
        }
        if self.limit.is_some_and(|l| self.emitted == l) {
            self.next_start = Some(start);
            self.stopped = true;
            return;
        }
        let end = self.plan.grid.next(start);
        let p = &mut self.pending;
        p.ts.push(start);
        for (col, v) in p.vals.iter_mut().zip(vals) {
            col.push(v);
        }
        p.valid.push(valid);
        p.complete
            .push(!(start <= self.series_last && self.series_last < end));
        self.emitted += 1;
        if self.pending.len() >= self.max_rows {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.len() == 0 {
            return;
        }
        let batch = self.pending.batch(self.shape);
        if !(self.sink)(batch) {
            self.stopped = true;
        }
    }

    /// Closes the last bucket and flushes; returns where the next page starts.
    pub fn finish_all(mut self) -> Result<Option<i64>> {
        if !self.stopped {
            self.close()?;
        }
        if !self.stopped || self.next_start.is_some() {
            self.flush();
        }
        Ok(self.next_start)
    }
}

/// What `fill: "prev"` carries into a range starting at `start`, when the series has
/// a bar before it: the aggregate of that bar's bucket over its rows before `start`
/// (for klines, that bar's close). Seeding from the rows before `start`, not before
/// the first bucket, is what makes a read paged through `next_start_ts` equal the
/// whole read when `start` cuts a bucket.
fn seed_values(snap: &Snapshot, plan: &ResamplePlan, start: i64) -> Result<Option<[i64; 5]>> {
    let before = snap.latest(TsRange::new(None, Some(start - 1)), 1)?;
    let Some(last) = before.first() else {
        return Ok(None);
    };
    let t = last.ts()[0];
    let bucket = plan.grid.bucket(t);
    // Aggregate that whole bucket (bounded by one bucket of rows) into a throwaway
    // resampler; its one emitted row is the seed.
    let shape = Shape {
        schema: Arc::new(Schema::empty()),
        cols: Vec::new(),
    };
    let mut got = None;
    let mut sink = |_: RecordBatch| true;
    let mut r = Resampler::new(plan, &shape, i64::MAX, usize::MAX, None, &mut sink);
    for s in snap.range(TsRange::new(Some(bucket), Some(start - 1))) {
        r.feed(&s?)?;
    }
    if let Some((_, _, acc)) = r.cur {
        got = Some(r.finish(&acc)?);
    }
    Ok(got)
}

/// Runs a resample of `range` of `snap` into `sink`, `max_rows` buckets per batch,
/// at most `limit` buckets; returns where the next page starts.
pub fn run(
    snap: &Snapshot,
    range: TsRange,
    plan: &ResamplePlan,
    shape: &Shape,
    max_rows: usize,
    limit: Option<usize>,
    sink: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<Option<i64>> {
    let Some(series_last) = snap.last_ts() else {
        return Ok(None);
    };
    let mut r = Resampler::new(plan, shape, series_last, max_rows, limit, sink);
    if plan.fill != Fill::None
        && let Some(start) = range.start
        && let Some(prev) = seed_values(snap, plan, start)?
    {
        r.seed(plan.grid.bucket(start), prev);
    }
    for s in snap.range(range) {
        r.feed(&s?)?;
        if r.stopped() {
            break;
        }
    }
    r.finish_all()
}

/// The last `n` buckets of `range`, ascending: resamples a window of the last `n`
/// buckets and widens it (doubling) while it holds fewer and more history exists.
pub fn latest(
    snap: &Snapshot,
    range: TsRange,
    plan: &ResamplePlan,
    shape: &Shape,
    n: usize,
) -> Result<Vec<RecordBatch>> {
    let Some(last) = snap.latest(range, 1)?.first().map(|s| s.ts()[0]) else {
        return Ok(Vec::new());
    };
    let first = snap.first_ts().unwrap_or(last);
    let end_bucket = plan.grid.bucket(last);
    let mut k = n as i64;
    loop {
        let ws = plan.grid.back(end_bucket, k - 1);
        let window_start = ws.max(range.lo());
        let whole = window_start <= first.max(range.lo());
        let mut kept: VecDeque<RecordBatch> = VecDeque::new();
        let mut held = 0usize;
        let mut sink = |b: RecordBatch| {
            held += b.num_rows();
            kept.push_back(b);
            // Keep only the trailing batches that may still hold the last n rows.
            while kept.len() > 1 && held - kept[0].num_rows() >= n {
                held -= kept.pop_front().map_or(0, |b| b.num_rows());
            }
            true
        };
        let window = TsRange::new(Some(window_start), range.end);
        run(
            snap,
            window,
            plan,
            shape,
            n.clamp(1, 65_536),
            None,
            &mut sink,
        )?;
        if held >= n || whole {
            let mut out: Vec<RecordBatch> = kept.into();
            let mut skip = held.saturating_sub(n);
            for b in &mut out {
                let cut = skip.min(b.num_rows());
                *b = b.slice(cut, b.num_rows() - cut);
                skip -= cut;
            }
            out.retain(|b| b.num_rows() > 0);
            return Ok(out);
        }
        k = k.saturating_mul(2);
    }
}
