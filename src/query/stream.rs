//! Streamed reads of one or many series, for any front end that sends batches.
//!
//! A [`ReadCommand`] (which series, which rows, how shaped) is resolved against the
//! store into a [`ReadPlan`] that checks the read against every series before the
//! first byte. [`ReadPlan::produce`] then walks the series in symbol order: plain and
//! resampled reads through [`Engine::read_into`] (zero-copy slices of the mapped
//! chunks), predicate matches through the predicate loop, and a cross section (one
//! row per series) from each snapshot's kept last row. A many-series stream gets its
//! leading `symbol` column here, and its small batches merged. The caller only
//! carries the batches it is handed (Flight encodes them as they come).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::Engine;
use super::market::{ReadSpec, Selection};
use super::predicate::{Compiled, Sink, run_into};
use super::types::{Predicate, Strategy};
use crate::error::{Error, Result};
use crate::record::{SeriesKey, SeriesMeta, TsRange, ValueType};
use crate::storage::Series;
use crate::storage::batch::{PriceFormat, Projection, column_scale, series_metadata, ts_field};

/// A predicate stream with sparse matches sends what it has at least this often, so
/// the client sees results while a long range is still being scanned.
const PREDICATE_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A predicate query carried by a scalar ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct PredicateQuery {
    pub predicate: Predicate,
    /// Whether the result carries the `value` column (default true on Flight).
    pub return_values: bool,
    pub strategy: Strategy,
}

/// Which series a read covers.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    One(SeriesKey),
    /// Several series: the result has a leading `symbol` column.
    Many(Selection),
}

/// A validated read: which series, which rows, and how to shape them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadCommand {
    pub target: Target,
    pub spec: ReadSpec,
    pub predicate: Option<PredicateQuery>,
}

impl ReadCommand {
    /// A read of every row of `key`, raw.
    pub fn whole(key: SeriesKey) -> ReadCommand {
        ReadCommand {
            target: Target::One(key),
            spec: ReadSpec {
                range: TsRange::all(),
                latest: None,
                columns: None,
                price_format: PriceFormat::Raw,
                resample: None,
                at: Default::default(),
            },
            predicate: None,
        }
    }

    /// The projection of a plain (non-predicate) read of a series with `meta`.
    pub fn projection(&self, meta: &SeriesMeta) -> Result<Projection> {
        Projection::new(meta, self.spec.columns.as_deref(), self.spec.price_format)
            .map_err(Error::invalid)
    }

    /// The schema one series' part of this command's stream carries.
    pub fn schema(&self, meta: &SeriesMeta) -> Result<SchemaRef> {
        match &self.predicate {
            None => Ok(self.spec.schema(meta)?),
            Some(p) if p.return_values => Ok(Projection::all(meta).schema),
            Some(_) => Ok(Arc::new(Schema::new_with_metadata(
                vec![ts_field()],
                series_metadata(meta),
            ))),
        }
    }
}

/// A read resolved against the store: its series, the stream's schema and, for many
/// series, the `symbol` column's dictionary.
pub struct ReadPlan {
    pub cmd: ReadCommand,
    pub series: Vec<Arc<Series>>,
    pub schema: SchemaRef,
    symbols: Option<Symbols>,
    /// Per series, the compiled predicate (predicate reads only).
    compiled: Vec<Compiled>,
}

/// The `symbol` column of a many-series stream.
#[derive(Clone)]
struct Symbols {
    schema: SchemaRef,
    dict: ArrayRef,
}

impl ReadPlan {
    /// Resolves the series and checks the read against each, so a bad request fails
    /// before the first byte.
    pub fn new(engine: &Engine, cmd: ReadCommand) -> Result<ReadPlan> {
        let series = match &cmd.target {
            Target::One(key) => vec![engine.series_at(key, &cmd.spec.at)?],
            Target::Many(sel) => {
                let all = engine.select_at(
                    sel,
                    engine.config.flight.max_series_per_ticket,
                    &cmd.spec.at,
                )?;
                if all.is_empty() {
                    let placeholder = placeholder_meta(sel)?;
                    let one = cmd.schema(&placeholder)?;
                    let schema = many_schema(&one, &[]);
                    return Ok(ReadPlan {
                        cmd,
                        series: Vec::new(),
                        schema: Arc::clone(&schema),
                        symbols: Some(Symbols {
                            schema,
                            dict: Arc::new(StringArray::from(Vec::<&str>::new())),
                        }),
                        compiled: Vec::new(),
                    });
                }
                all
            }
        };
        let mut schema = cmd.schema(&series[0].meta)?;
        let mut compiled = Vec::new();
        let first = &series[0].meta;
        for s in &series {
            // Every series must take the read (a resample that fits its timeframe, its
            // columns), and all share one schema but for their metadata. A series of
            // the first one's kind, value type and timeframe takes it as the first did
            // (the fields depend on nothing else), so a cross section of 100,000
            // series builds one schema, not 100,000.
            let same = s.meta.key.kind() == first.key.kind()
                && s.meta.value_type == first.value_type
                && s.meta.timeframe_ms == first.timeframe_ms;
            if !same && *cmd.schema(&s.meta)?.fields() != *schema.fields() {
                return Err(Error::invalid(format!(
                    "series {} does not have the columns of series {}: read them separately",
                    s.meta.key, series[0].meta.key
                )));
            }
            if let Some(p) = &cmd.predicate {
                compiled.push(Compiled::new(&p.predicate, s.meta.value_type)?);
            }
        }
        let symbols = match &cmd.target {
            Target::One(_) => None,
            Target::Many(_) => {
                let names: Vec<&str> = series.iter().map(|s| s.meta.key.symbol()).collect();
                let many = many_schema(&schema, &series);
                schema = Arc::clone(&many);
                Some(Symbols {
                    schema: many,
                    dict: Arc::new(StringArray::from(names)),
                })
            }
        };
        Ok(ReadPlan {
            cmd,
            series,
            schema,
            symbols,
            compiled,
        })
    }

    /// Emits every series' batches in symbol order, at most `max_rows` rows each (a
    /// many-series stream merges small ones), until `emit` returns false (the receiver
    /// is gone). Batches of a failed read are emitted up to the failure, which is
    /// then returned.
    pub fn produce(
        &self,
        engine: &Engine,
        max_rows: usize,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<()> {
        let mut out = Out::new(emit, self.symbols.clone());
        self.produce_into(engine, max_rows, &mut out);
        out.finish()
    }

    fn produce_into(&self, engine: &Engine, max_rows: usize, out: &mut Out) {
        if self.series.is_empty() {
            // `"symbols": "*"` matching nothing: the schema and no rows.
            out.flush();
            return;
        }
        let spec = &self.cmd.spec;
        if self.symbols.is_some()
            && self.cmd.predicate.is_none()
            && spec.resample.is_none()
            && spec.latest == Some(1)
        {
            return self.produce_last_rows(out);
        }
        for (i, series) in self.series.iter().enumerate() {
            out.symbol = i as i32;
            let ok = match &self.cmd.predicate {
                None => engine
                    .read_into(series, &self.cmd.spec, max_rows, None, &mut |b| out.send(b))
                    .map(|_| ()),
                Some(p) => {
                    let schema = match self.cmd.schema(&series.meta) {
                        Ok(s) => s,
                        Err(e) => return out.error(e),
                    };
                    let mut sink = BatchSink::new(schema, series.meta.value_type, max_rows, out);
                    produce_matches(series, &self.cmd, p, &self.compiled[i], &mut sink)
                }
            };
            if let Err(e) = ok {
                return out.error(e);
            }
            if !out.open {
                return;
            }
        }
        out.flush();
    }
}

impl ReadPlan {
    /// A cross section (`latest: 1`, or `as_of`, over many series): one row per series,
    /// gathered straight into columns of up to [`CROSS_SECTION_ROWS`] rows with no
    /// batch per series. A series whose last chunk ends inside the range answers from
    /// that chunk's kept last row, so a warm cross section maps no file: what it costs
    /// per series is a snapshot and a few values.
    fn produce_last_rows(&self, out: &mut Out) {
        let spec = &self.cmd.spec;
        // The stream's columns after `symbol`, with the stored column behind each.
        let fields: Vec<DataType> = self
            .schema
            .fields()
            .iter()
            .skip(1)
            .map(|f| f.data_type().clone())
            .collect();
        let cols = match Projection::new(
            &self.series[0].meta,
            spec.columns.as_deref(),
            spec.price_format,
        ) {
            Ok(p) => p.cols,
            Err(e) => return out.error(Error::invalid(e)),
        };
        assert_eq!(cols.len(), fields.len(), "one stored column per field");
        // One part's rows: the indexes of the series that have one, and their values
        // column by column (Float64 columns hold the bits of their values).
        let gather = |part: &std::ops::Range<usize>| -> Result<(Vec<i32>, Vec<Vec<i64>>)> {
            let mut keys: Vec<i32> = Vec::new();
            let mut values: Vec<Vec<i64>> = vec![Vec::with_capacity(part.len()); cols.len()];
            for i in part.clone() {
                let meta = &self.series[i].meta;
                let found = self.series[i].snapshot().with_last_row(spec.range, |row| {
                    for (k, &c) in cols.iter().enumerate() {
                        values[k].push(match column_scale(meta, c, spec.price_format) {
                            Some(scale) => (row[c] as f64 / scale).to_bits() as i64,
                            None => row[c],
                        });
                    }
                });
                if found.map_err(Error::from)?.is_some() {
                    keys.push(i as i32);
                }
            }
            Ok((keys, values))
        };
        // The parts on every core: a first cross section after a start reads a chunk
        // header per series (a file opened and read), and a warm one a few values.
        let n = self.series.len();
        let parts: Vec<std::ops::Range<usize>> = (0..n)
            .step_by(CROSS_SECTION_PART)
            .map(|a| a..(a + CROSS_SECTION_PART).min(n))
            .collect();
        let threads = if parts.len() > 1 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            1
        };
        let gathered = crate::storage::parallel::map_in_order(
            &parts,
            threads,
            "fastk-cross-section",
            || false,
            |_, part| gather(part),
        );
        let mut keys: Vec<i32> = Vec::new();
        let mut values: Vec<Vec<i64>> = vec![Vec::new(); cols.len()];
        for part in gathered {
            let (k, v) = match part.expect("a pass that never stops runs every part") {
                Ok(kv) => kv,
                Err(e) => return out.error(e),
            };
            keys.extend(k);
            for (all, more) in values.iter_mut().zip(v) {
                all.extend(more);
            }
            while keys.len() >= CROSS_SECTION_ROWS {
                let rest_keys = keys.split_off(CROSS_SECTION_ROWS);
                let rest: Vec<Vec<i64>> = values
                    .iter_mut()
                    .map(|v| v.split_off(CROSS_SECTION_ROWS))
                    .collect();
                let arrays = take_columns(&fields, &mut values);
                if !out.send_rows(std::mem::replace(&mut keys, rest_keys), arrays) {
                    return;
                }
                values = rest;
            }
        }
        if !keys.is_empty() {
            let arrays = take_columns(&fields, &mut values);
            if !out.send_rows(keys, arrays) {
                return;
            }
        }
        out.flush();
    }
}

/// Rows per message of a cross section (one row per series).
const CROSS_SECTION_ROWS: usize = 65_536;
/// Series per part of a cross section, each part gathered on one thread (a cross
/// section of fewer series runs on the caller's thread alone).
const CROSS_SECTION_PART: usize = 1_024;

/// The gathered values as Arrow arrays of the stream's types, leaving `values` empty.
fn take_columns(fields: &[DataType], values: &mut [Vec<i64>]) -> Vec<ArrayRef> {
    fields
        .iter()
        .zip(values.iter_mut())
        .map(|(dt, v)| -> ArrayRef {
            let len = v.len();
            let buf = Buffer::from_vec(std::mem::take(v));
            match dt {
                DataType::Timestamp(_, tz) => Arc::new(
                    TimestampMillisecondArray::new(ScalarBuffer::new(buf, 0, len), None)
                        .with_timezone_opt(tz.clone()),
                ),
                DataType::Float64 => {
                    Arc::new(Float64Array::new(ScalarBuffer::new(buf, 0, len), None))
                }
                _ => Arc::new(Int64Array::new(ScalarBuffer::new(buf, 0, len), None)),
            }
        })
        .collect()
}

/// The schema of a many-series stream: `symbol` first, then the columns of one
/// series; per-series metadata that differs between the series is left out.
fn many_schema(one: &Schema, series: &[Arc<Series>]) -> SchemaRef {
    let mut fields = vec![Field::new(
        "symbol",
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        false,
    )];
    fields.extend(one.fields().iter().map(|f| f.as_ref().clone()));
    let mut md = one.metadata().clone();
    md.remove("fastk.symbol");
    let mixed = series.first().is_none_or(|first| {
        series.iter().any(|s| {
            s.meta.price_scale != first.meta.price_scale
                || s.meta.volume_scale != first.meta.volume_scale
        })
    });
    if mixed {
        md.remove("fastk.price_scale");
        md.remove("fastk.volume_scale");
    }
    md.insert("fastk.series".into(), series.len().to_string());
    Arc::new(Schema::new_with_metadata(fields, md))
}

/// The columns of a selection that matches no series: a series of its kind and
/// timeframe with unit scales (a scalar's values as int64, the default value type).
/// Only its schema is used, for an empty stream.
fn placeholder_meta(sel: &Selection) -> Result<SeriesMeta> {
    let key = sel.key("_")?;
    Ok(SeriesMeta {
        key,
        timeframe_ms: crate::record::standard_timeframe_ms(&sel.timeframe).unwrap_or(60_000),
        price_scale: 1,
        volume_scale: 1,
        value_type: ValueType::default(),
    })
}

/// Batches smaller than this are merged before they are sent in a many-series
/// stream, so a cross section of 2,000 series is a few messages, not 2,000.
const COALESCE_ROWS: usize = 4096;

/// The emitting end of a stream: adds the `symbol` column of a many-series stream
/// and merges its small batches; remembers when the receiver is gone, and the error
/// that ended the stream.
struct Out<'e> {
    emit: &'e mut dyn FnMut(RecordBatch) -> bool,
    symbols: Option<Symbols>,
    /// Index of the current series in the dictionary.
    symbol: i32,
    held: Vec<RecordBatch>,
    held_rows: usize,
    open: bool,
    failed: Option<Error>,
}

impl<'e> Out<'e> {
    fn new(emit: &'e mut dyn FnMut(RecordBatch) -> bool, symbols: Option<Symbols>) -> Out<'e> {
        Out {
            emit,
            symbols,
            symbol: 0,
            held: Vec::new(),
            held_rows: 0,
            open: true,
            failed: None,
        }
    }

    /// Sends (or holds) one batch of the current series; false once the receiver is gone.
    fn send(&mut self, batch: RecordBatch) -> bool {
        let Some(sym) = &self.symbols else {
            return self.forward(batch);
        };
        let n = batch.num_rows();
        let batch = match keyed(sym, vec![self.symbol; n], batch.columns().to_vec()) {
            Ok(b) => b,
            Err(e) => {
                self.error(e);
                return false;
            }
        };
        if n >= COALESCE_ROWS {
            return self.flush() && self.forward(batch);
        }
        self.held_rows += n;
        self.held.push(batch);
        if self.held_rows >= COALESCE_ROWS {
            return self.flush();
        }
        self.open
    }

    /// Sends rows of many series as one batch: row r is of series `keys[r]`.
    fn send_rows(&mut self, keys: Vec<i32>, columns: Vec<ArrayRef>) -> bool {
        let Some(sym) = &self.symbols else {
            self.error(Error::internal(
                "rows of many series in a one-series stream",
            ));
            return false;
        };
        match keyed(sym, keys, columns) {
            Ok(b) => self.flush() && self.forward(b),
            Err(e) => {
                self.error(e);
                false
            }
        }
    }

    fn forward(&mut self, batch: RecordBatch) -> bool {
        self.open = self.open && (self.emit)(batch);
        self.open
    }

    /// Sends the held batches as one.
    fn flush(&mut self) -> bool {
        if self.held.is_empty() {
            return self.open;
        }
        let held = std::mem::take(&mut self.held);
        self.held_rows = 0;
        let schema = held[0].schema();
        match arrow_select::concat::concat_batches(&schema, &held) {
            Ok(b) => self.forward(b),
            Err(e) => {
                self.error(Error::internal(format!("merging batches: {e}")));
                false
            }
        }
    }

    /// Ends the stream with `e`, after the batches held so far.
    fn error(&mut self, e: Error) {
        self.flush();
        self.failed.get_or_insert(e);
        self.open = false;
    }

    fn finish(self) -> Result<()> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A batch of the many-series schema: the `symbol` column of `keys`, then `columns`.
fn keyed(sym: &Symbols, keys: Vec<i32>, columns: Vec<ArrayRef>) -> Result<RecordBatch, Error> {
    let column: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::new(
        Int32Array::from(keys),
        Arc::clone(&sym.dict),
    ));
    let mut cols = vec![column];
    cols.extend(columns);
    RecordBatch::try_new(Arc::clone(&sym.schema), cols)
        .map_err(|e| Error::internal(format!("many-series batch: {e}")))
}

/// Runs the predicate over one series, streaming matches as they are found (or,
/// with `latest`, keeping only the last ones and sending them at the end).
fn produce_matches(
    series: &Series,
    cmd: &ReadCommand,
    p: &PredicateQuery,
    pred: &Compiled,
    sink: &mut BatchSink<'_, '_>,
) -> Result<()> {
    let snap = series.snapshot();
    let range = cmd.spec.range;
    let stats = match cmd.spec.latest {
        None => run_into(&snap, range, pred, p.strategy, sink)?,
        Some(n) => {
            let mut last = LastMatches::new(n);
            let stats = run_into(&snap, range, pred, p.strategy, &mut last)?;
            last.drain_into(sink);
            stats
        }
    };
    tracing::debug!(series = %series.meta.key, ?stats, "flight predicate stream");
    sink.flush();
    Ok(())
}

/// A predicate sink that turns matches into record batches and sends them.
struct BatchSink<'a, 'e> {
    out: &'a mut Out<'e>,
    schema: SchemaRef,
    value_type: ValueType,
    max_rows: usize,
    ts: Vec<i64>,
    values: Vec<i64>,
    last_flush: Instant,
    open: bool,
}

impl<'a, 'e> BatchSink<'a, 'e> {
    fn new(
        schema: SchemaRef,
        value_type: ValueType,
        max_rows: usize,
        out: &'a mut Out<'e>,
    ) -> BatchSink<'a, 'e> {
        BatchSink {
            out,
            schema,
            value_type,
            max_rows: max_rows.max(1),
            ts: Vec::new(),
            values: Vec::new(),
            last_flush: Instant::now(),
            open: true,
        }
    }

    /// Sends the buffered matches as one batch; false once the receiver is gone.
    fn flush(&mut self) -> bool {
        self.last_flush = Instant::now();
        if self.ts.is_empty() || !self.open {
            return self.open;
        }
        let ts = std::mem::take(&mut self.ts);
        let values = std::mem::take(&mut self.values);
        let mut cols: Vec<ArrayRef> = vec![Arc::new(
            TimestampMillisecondArray::from(ts).with_timezone("UTC"),
        )];
        if self.schema.fields().len() == 2 {
            cols.push(match self.value_type {
                ValueType::I64 => Arc::new(Int64Array::from(values)),
                // The stored f64 bits are reinterpreted in place, without a copy.
                ValueType::F64 => {
                    let n = values.len();
                    Arc::new(Float64Array::new(
                        ScalarBuffer::new(Buffer::from_vec(values), 0, n),
                        None,
                    ))
                }
            });
        }
        self.open = match RecordBatch::try_new(Arc::clone(&self.schema), cols) {
            Ok(batch) => self.out.send(batch),
            Err(e) => {
                self.out
                    .error(Error::internal(format!("predicate batch: {e}")));
                false
            }
        };
        self.open
    }
}

impl Sink for BatchSink<'_, '_> {
    fn push(&mut self, ts: &[i64], values: &[i64]) -> bool {
        let mut i = 0;
        while i < ts.len() {
            let take = (self.max_rows - self.ts.len()).min(ts.len() - i);
            self.ts.extend_from_slice(&ts[i..i + take]);
            self.values.extend_from_slice(&values[i..i + take]);
            i += take;
            if self.ts.len() == self.max_rows && !self.flush() {
                return false;
            }
        }
        if !self.ts.is_empty() && self.last_flush.elapsed() >= PREDICATE_FLUSH_INTERVAL {
            return self.flush();
        }
        self.open
    }
}

/// Keeps the last `n` matches of a predicate run.
struct LastMatches {
    n: usize,
    ring: VecDeque<(i64, i64)>,
}

impl LastMatches {
    fn new(n: usize) -> LastMatches {
        LastMatches {
            n,
            ring: VecDeque::with_capacity(n.min(1 << 16)),
        }
    }

    fn drain_into(self, sink: &mut BatchSink<'_, '_>) {
        let (ts, values): (Vec<i64>, Vec<i64>) = self.ring.into_iter().unzip();
        sink.push(&ts, &values);
    }
}

impl Sink for LastMatches {
    fn push(&mut self, ts: &[i64], values: &[i64]) -> bool {
        if self.n == 0 {
            return false;
        }
        // Only the tail of a long push can survive, so skip the rest outright.
        let skip = ts.len().saturating_sub(self.n);
        for (&t, &v) in ts[skip..].iter().zip(&values[skip..]) {
            if self.ring.len() == self.n {
                self.ring.pop_front();
            }
            self.ring.push_back((t, v));
        }
        true
    }
}
