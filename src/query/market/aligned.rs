//! The aligned backtest view: one kline series and scalar series of the same symbol
//! and timeframe, merged on the kline's `ts` (exact, or as-of within a tolerance).
//!
//! Each scalar is a cursor over its own lazily mapped range, advanced as the bars go
//! by, so the join is a merge of sorted streams and memory does not grow with the
//! range. Kline columns stay zero-copy slices of the mapping.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::spec::{AlignedBody, Join, MAX_ALIGNED_SCALARS};
use crate::error::{Error, Result};
use crate::record::{SeriesKey, SeriesKind, TsRange, ValueType, echo};
use crate::storage::batch::Projection;
use crate::storage::snapshot::RangeIter;
use crate::storage::{ChunkSlice, Series, Snapshot};

/// A validated aligned view.
pub struct AlignedPlan {
    pub kline: Arc<Series>,
    scalars: Vec<Arc<Series>>,
    pub join: Join,
    tolerance: i64,
    projection: Projection,
    pub schema: SchemaRef,
    pub range: TsRange,
}

impl AlignedPlan {
    /// Checks the request against the store: the kline series and every scalar exist,
    /// scalars are named once, 1 to 64 of them, the tolerance is not negative.
    pub fn new(
        kline: Arc<Series>,
        body: &AlignedBody,
        lookup: &dyn Fn(&SeriesKey) -> Result<Arc<Series>>,
    ) -> Result<AlignedPlan> {
        let key = &kline.meta.key;
        if key.kind() != SeriesKind::Kline {
            return Err(Error::invalid(
                "the aligned view starts from a kline series",
            ));
        }
        if body.scalars.is_empty() || body.scalars.len() > MAX_ALIGNED_SCALARS {
            return Err(Error::invalid(format!(
                "scalars must name 1 to {MAX_ALIGNED_SCALARS} scalar series, got {}",
                body.scalars.len()
            )));
        }
        if let (Some(a), Some(b)) = (body.start_ts, body.end_ts)
            && a > b
        {
            return Err(Error::invalid(format!(
                "start_ts ({a}) must not be after end_ts ({b}); both ends are inclusive"
            )));
        }
        let join = body.join.unwrap_or_default();
        let tolerance = match (join, body.tolerance_ms) {
            (_, Some(t)) if t < 0 => {
                return Err(Error::invalid("tolerance_ms must not be negative"));
            }
            (Join::Exact, Some(_)) => {
                return Err(Error::invalid(
                    "tolerance_ms applies to join \"asof\" (an exact join matches equal ts only)",
                ));
            }
            (_, t) => t.unwrap_or(i64::MAX),
        };
        let projection = Projection::new(
            &kline.meta,
            None,
            body.price_format.unwrap_or_default().into(),
        )
        .map_err(Error::invalid)?;
        let mut fields: Vec<Field> = projection
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut seen = HashSet::new();
        let mut scalars = Vec::with_capacity(body.scalars.len());
        for s in &body.scalars {
            let name = format!("{}.{}", s.category, s.name);
            if !seen.insert(name.clone()) {
                return Err(Error::invalid(format!(
                    "scalar {} is named twice",
                    echo(&name)
                )));
            }
            let skey = SeriesKey::scalar(key.symbol(), key.timeframe(), &s.category, &s.name)?;
            let series = lookup(&skey)?;
            let dt = match series.meta.value_type {
                ValueType::I64 => DataType::Int64,
                ValueType::F64 => DataType::Float64,
            };
            fields.push(Field::new(name, dt, true));
            scalars.push(series);
        }
        let md = projection.schema.metadata().clone();
        Ok(AlignedPlan {
            schema: Arc::new(Schema::new_with_metadata(fields, md)),
            kline,
            scalars,
            join,
            tolerance,
            projection,
            range: TsRange::new(body.start_ts, body.end_ts),
        })
    }

    /// Streams the view: batches of at most `max_rows` bars, at most `limit` bars in
    /// all; returns where the next page starts and the bars read.
    pub fn run(
        &self,
        max_rows: usize,
        limit: Option<usize>,
        sink: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<(Option<i64>, u64)> {
        let range = self.range;
        let mut cursors = Vec::with_capacity(self.scalars.len());
        for s in &self.scalars {
            cursors.push(Cursor::new(&s.snapshot(), range, self.join)?);
        }
        let max_rows = max_rows.max(1);
        let mut rows = 0usize;
        for slice in self.kline.snapshot().range(range) {
            let slice = slice?;
            for a in (0..slice.len()).step_by(max_rows) {
                let mut b = (a + max_rows).min(slice.len());
                if let Some(l) = limit {
                    if rows == l {
                        return Ok((Some(slice.ts()[a]), rows as u64));
                    }
                    b = b.min(a + (l - rows));
                }
                let part = slice.sub(a, b);
                let batch = self.batch(&part, &mut cursors)?;
                rows += part.len();
                if !sink(batch) {
                    return Ok((None, rows as u64));
                }
            }
        }
        Ok((None, rows as u64))
    }

    fn batch(&self, part: &ChunkSlice, cursors: &mut [Cursor]) -> Result<RecordBatch> {
        let bars = self.projection.batch(part);
        let mut arrays: Vec<ArrayRef> = bars.columns().to_vec();
        for (c, s) in cursors.iter_mut().zip(&self.scalars) {
            let mut values = Vec::with_capacity(part.len());
            let mut valid = Vec::with_capacity(part.len());
            for &t in part.ts() {
                let v = match c.at(t)? {
                    Some((ts, v)) if ts == t => Some(v),
                    Some((ts, v)) if self.join == Join::Asof && t - ts <= self.tolerance => Some(v),
                    _ => None,
                };
                valid.push(v.is_some());
                values.push(v.unwrap_or(0));
            }
            let nulls = (!valid.iter().all(|&v| v)).then(|| NullBuffer::from(valid));
            arrays.push(match s.meta.value_type {
                ValueType::I64 => Arc::new(Int64Array::new(values.into(), nulls)),
                ValueType::F64 => Arc::new(Float64Array::new(
                    values.iter().map(|&b| f64::from_bits(b as u64)).collect(),
                    nulls,
                )),
            });
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), arrays)
            .expect("aligned columns match the schema"))
    }
}

/// A scalar series read forward: the last value at or before a growing `ts`.
struct Cursor {
    iter: RangeIter,
    cur: Option<ChunkSlice>,
    pos: usize,
    done: bool,
    last: Option<(i64, i64)>,
}

impl Cursor {
    fn new(snap: &Snapshot, range: TsRange, join: Join) -> Result<Cursor> {
        let mut last = None;
        if join == Join::Asof
            && let Some(lo) = range.start
        {
            // The value in force when the range starts lies before it.
            if let Some(s) = snap.latest(TsRange::new(None, Some(lo - 1)), 1)?.first() {
                last = Some((s.ts()[0], s.col(1)[0]));
            }
        }
        Ok(Cursor {
            iter: snap.range(range),
            cur: None,
            pos: 0,
            done: false,
            last,
        })
    }

    /// The last (ts, value bits) at or before `t`; `t` never decreases between calls.
    fn at(&mut self, t: i64) -> Result<Option<(i64, i64)>> {
        loop {
            if let Some(s) = &self.cur {
                let ts = s.ts();
                let k = ts[self.pos..].partition_point(|&x| x <= t);
                if k > 0 {
                    self.pos += k;
                    self.last = Some((ts[self.pos - 1], s.col(1)[self.pos - 1]));
                }
                if self.pos < ts.len() {
                    return Ok(self.last);
                }
            }
            if self.done {
                return Ok(self.last);
            }
            match self.iter.next() {
                None => {
                    self.done = true;
                    self.cur = None;
                }
                Some(s) => {
                    self.cur = Some(s?);
                    self.pos = 0;
                }
            }
        }
    }
}
