//! Market queries without SQL: resample on read, many series in one request, as-of
//! cross sections, the aligned backtest view, and coverage with gaps. One
//! implementation each, called by the HTTP handlers and the Flight tickets and
//! actions alike (docs/market-queries.md).
//!
//! Every read here produces Arrow record batches through a sink, a batch of at most
//! `max_rows` rows at a time: Flight streams them, HTTP serializes a bounded page of
//! them. So memory never depends on the range.

pub mod aligned;
pub mod coverage;
pub mod grid;
pub mod resample;
pub mod spec;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::Engine;
use super::snapshots::At;
use crate::error::{Error, Result};
use crate::record::{Name, SeriesKey, SeriesKind, SeriesMeta, TsRange, echo};
use crate::storage::Series;
use crate::storage::batch::{PriceFormat, Projection};
use crate::storage::series::Pick;
use resample::ResamplePlan;
use spec::{Agg, AsOf, Coverage, CoverageRequest, Resample, Symbols};

/// The most buckets `latest` may ask of a resampled read: they are held in memory
/// until the window is complete (about 64 MiB at this bound).
pub const LATEST_BUCKETS_MAX: usize = 1 << 20;

/// One read applied to each series of a request: which rows, in which shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSpec {
    pub range: TsRange,
    /// Only the last `n` rows (or buckets) of the range.
    pub latest: Option<usize>,
    pub columns: Option<Vec<String>>,
    pub price_format: PriceFormat,
    /// The resample and the scalar aggregation given next to it.
    pub resample: Option<(Resample, Option<Agg>)>,
    /// The moment the read answers (now, a snapshot, a past version).
    pub at: At,
}

/// The parts of a read request both front ends share, before validation.
#[derive(Debug, Clone, Default)]
pub struct ReadArgs {
    pub start_ts: Option<i64>,
    pub end_ts: Option<i64>,
    pub latest: Option<usize>,
    pub as_of: Option<AsOf>,
    pub columns: Option<Vec<String>>,
    pub price_format: PriceFormat,
    pub resample: Option<Resample>,
    pub agg: Option<Agg>,
    pub snapshot: Option<String>,
    pub version: Option<u64>,
    pub as_of_commit: Option<i64>,
}

impl ReadSpec {
    /// Validates what does not depend on a series. `as_of: T` becomes the last row at
    /// or before `T` (`start_ts` stays a staleness bound).
    pub fn new(a: ReadArgs) -> Result<ReadSpec> {
        if let (Some(s), Some(e)) = (a.start_ts, a.end_ts)
            && s > e
        {
            return Err(Error::invalid(format!(
                "start_ts ({s}) must not be after end_ts ({e}); both ends are inclusive"
            )));
        }
        if a.latest == Some(0) {
            return Err(Error::invalid(
                "latest must be at least 1 (omit it to read the whole range)",
            ));
        }
        if a.agg.is_some() && a.resample.is_none() {
            return Err(Error::invalid(
                "agg applies together with resample (e.g. \"resample\": {\"timeframe\": \"1h\", \"agg\": \"mean\"})",
            ));
        }
        let (range, latest) = match a.as_of {
            None => (TsRange::new(a.start_ts, a.end_ts), a.latest),
            Some(_) if a.end_ts.is_some() || a.latest.is_some() || a.resample.is_some() => {
                return Err(Error::invalid(
                    "as_of returns the last record at or before it: it does not combine with end_ts, latest or resample",
                ));
            }
            Some(t) => {
                let t = t.ts();
                if a.start_ts.is_some_and(|s| s > t) {
                    return Err(Error::invalid(format!(
                        "start_ts must not be after as_of ({t})"
                    )));
                }
                (TsRange::new(a.start_ts, Some(t)), Some(1))
            }
        };
        if let Some(r) = &a.resample {
            grid::Grid::parse(&r.timeframe, r.offset_ms.unwrap_or(0))?;
            if a.latest.is_some_and(|n| n > LATEST_BUCKETS_MAX) {
                return Err(Error::invalid(format!(
                    "latest with resample keeps the buckets in memory: at most {LATEST_BUCKETS_MAX} (page through the range with start_ts instead)"
                )));
            }
        }
        Ok(ReadSpec {
            range,
            latest,
            columns: a.columns,
            price_format: a.price_format,
            resample: a.resample.map(|r| (r, a.agg)),
            at: At::new(a.snapshot, a.version, a.as_of_commit)?,
        })
    }

    /// The resample plan for `meta`, if the read resamples.
    pub fn plan(&self, meta: &SeriesMeta) -> Result<Option<ResamplePlan>> {
        self.resample
            .as_ref()
            .map(|(r, agg)| ResamplePlan::new(r, *agg, meta))
            .transpose()
    }

    /// The schema of this read of one series with `meta`.
    pub fn schema(&self, meta: &SeriesMeta) -> Result<SchemaRef> {
        match self.plan(meta)? {
            Some(p) => Ok(p
                .shape(meta, self.columns.as_deref(), self.price_format)?
                .schema),
            None => Ok(
                Projection::new(meta, self.columns.as_deref(), self.price_format)
                    .map_err(Error::invalid)?
                    .schema,
            ),
        }
    }
}

/// Which series a many-series request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub kind: SeriesKind,
    pub timeframe: String,
    /// Scalars: category and name.
    pub scalar: Option<(String, String)>,
    pub symbols: Symbols,
}

impl Selection {
    /// The key of `symbol` in this selection.
    pub fn key(&self, symbol: &str) -> Result<SeriesKey> {
        Ok(match (&self.scalar, self.kind) {
            (_, SeriesKind::Trade) => SeriesKey::trade(symbol)?,
            (_, SeriesKind::Quote) => SeriesKey::quote(symbol)?,
            (None, _) => SeriesKey::kline(symbol, &self.timeframe)?,
            (Some((c, n)), _) => SeriesKey::scalar(symbol, &self.timeframe, c, n)?,
        })
    }
}

impl Engine {
    /// The series of a many-series request, in symbol order: every listed symbol must
    /// exist; `"*"` is every series of the timeframe (and category and name). At most
    /// `max` series; scalar series must share one value type.
    pub fn select(&self, sel: &Selection, max: usize) -> Result<Vec<Arc<Series>>> {
        self.select_at(sel, max, &At::Now)
    }

    /// [`Engine::select`] of the series at moment `at` (a snapshot: `"*"` is every
    /// series of the selection it holds; a commit time: every series of the selection
    /// that existed then, each at its version current then).
    pub fn select_at(&self, sel: &Selection, max: usize, at: &At) -> Result<Vec<Arc<Series>>> {
        if let At::Version(v) = at {
            return Err(Error::invalid(format!(
                "version {v} names one version of one series: a many-series read takes as_of_commit or snapshot"
            )));
        }
        let mut out = match &sel.symbols {
            Symbols::List(list) => {
                if list.is_empty() {
                    return Err(Error::invalid(
                        "symbols is empty: name at least one symbol, or \"*\" for every series",
                    ));
                }
                if list.len() > max {
                    return Err(too_many(list.len(), max));
                }
                let mut sorted: Vec<&String> = list.iter().collect();
                sorted.sort();
                if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                    return Err(Error::invalid(format!(
                        "symbol {} is named twice",
                        echo(w[0])
                    )));
                }
                let mut out = Vec::with_capacity(sorted.len());
                for s in sorted {
                    out.push(self.series_at(&sel.key(s)?, at)?);
                }
                out
            }
            Symbols::All(star) if star == "*" && at.snapshot().is_some() => {
                Name::parse("timeframe", &sel.timeframe)?;
                let mut all = self.snapshot_selection(at.snapshot().unwrap_or_default(), sel)?;
                if all.len() > max {
                    return Err(too_many(all.len(), max));
                }
                all.sort_by(|a, b| a.meta.key.symbol().cmp(b.meta.key.symbol()));
                all
            }
            Symbols::All(star) if star == "*" => {
                Name::parse("timeframe", &sel.timeframe)?;
                let mut all: Vec<Arc<Series>> = self
                    .store
                    .list_kind(sel.kind)
                    .into_iter()
                    .filter(|s| {
                        let k = &s.meta.key;
                        k.timeframe() == sel.timeframe
                            && sel.scalar.as_ref().is_none_or(|(c, n)| {
                                k.category() == Some(c.as_str()) && k.name() == Some(n.as_str())
                            })
                    })
                    .collect();
                if all.len() > max {
                    return Err(too_many(all.len(), max));
                }
                all.sort_by(|a, b| a.meta.key.symbol().cmp(b.meta.key.symbol()));
                if *at == At::Now {
                    all = all
                        .into_iter()
                        .map(|s| self.live_view(s))
                        .collect::<Result<_>>()?;
                }
                if let At::Commit(t) = at {
                    // Each at its version current at `t`; a series registered later
                    // held nothing then and is left out.
                    let mut then = Vec::with_capacity(all.len());
                    for s in all {
                        let found = self.store.series_version(&s.meta.key, Pick::Commit(*t))?;
                        then.extend(found);
                    }
                    all = then;
                }
                all
            }
            Symbols::All(other) => {
                return Err(Error::invalid(format!(
                    "symbols must be a list of symbols or \"*\", got {}",
                    echo(other)
                )));
            }
        };
        if let Some(first) = out.first()
            && sel.kind == SeriesKind::Scalar
        {
            let vt = first.meta.value_type;
            if let Some(other) = out.iter().find(|s| s.meta.value_type != vt) {
                return Err(Error::invalid(format!(
                    "the series differ in value_type ({} is {}, {} is {}): read them in separate requests",
                    first.meta.key.symbol(),
                    vt.as_str(),
                    other.meta.key.symbol(),
                    other.meta.value_type.as_str()
                )));
            }
        }
        out.shrink_to_fit();
        Ok(out)
    }

    /// Reads one series as `spec` says into `sink`, `max_rows` rows per batch and, for
    /// a page, at most `limit` rows; returns where the next page starts. Plain reads
    /// are zero-copy slices of the mapped chunks. The caller counts what it sends.
    pub fn read_into(
        &self,
        series: &Series,
        spec: &ReadSpec,
        max_rows: usize,
        limit: Option<usize>,
        sink: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<Option<i64>> {
        let meta = &series.meta;
        let snap = series.snapshot();
        let max_rows = max_rows.max(1);
        let next = match spec.plan(meta)? {
            Some(plan) => {
                let shape = plan.shape(meta, spec.columns.as_deref(), spec.price_format)?;
                match spec.latest {
                    Some(n) => {
                        for b in resample::latest(&snap, spec.range, &plan, &shape, n)? {
                            if !sink(b) {
                                break;
                            }
                        }
                        None
                    }
                    None => resample::run(&snap, spec.range, &plan, &shape, max_rows, limit, sink)?,
                }
            }
            None => {
                let projection = Projection::new(meta, spec.columns.as_deref(), spec.price_format)
                    .map_err(Error::invalid)?;
                let slices = super::slice_stream(&snap, spec.range, spec.latest)?;
                let mut rows = 0usize;
                let mut next = None;
                'slices: for s in slices {
                    let s = s?;
                    for a in (0..s.len()).step_by(max_rows) {
                        let mut b = (a + max_rows).min(s.len());
                        if let Some(l) = limit {
                            if rows == l {
                                next = Some(s.ts()[a]);
                                break 'slices;
                            }
                            b = b.min(a + (l - rows));
                        }
                        rows += b - a;
                        if !sink(projection.batch(&s.sub(a, b))) {
                            break 'slices;
                        }
                    }
                }
                next
            }
        };
        Ok(next)
    }

    /// A page of one series as `spec` says, at most `limit` rows (or buckets), with
    /// where the next page starts; counted in the read metrics. For HTTP, whose pages
    /// are bounded by `http.max_limit`.
    pub fn read_page(
        &self,
        series: &Series,
        spec: &ReadSpec,
        limit: usize,
    ) -> Result<(Vec<RecordBatch>, Option<i64>)> {
        let mut batches = Vec::new();
        let next = self.read_into(series, spec, limit, Some(limit), &mut |b| {
            batches.push(b);
            true
        })?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let ncols = series.meta.key.kind().ncols() as u64;
        self.metrics.add_read(rows as u64, rows as u64 * ncols * 8);
        Ok((batches, next))
    }

    /// Coverage and gaps of one series.
    pub fn coverage(&self, key: &SeriesKey, req: &CoverageRequest) -> Result<Coverage> {
        let at = At::new(req.snapshot.clone(), req.version, req.as_of_commit)?;
        let series = self.series_at(key, &at)?;
        coverage::run(&series.snapshot(), series.meta.timeframe_ms, req)
    }

    /// The aligned view of the kline series `key`.
    pub fn aligned(
        &self,
        key: &SeriesKey,
        body: &spec::AlignedBody,
    ) -> Result<aligned::AlignedPlan> {
        let at = At::new(body.snapshot.clone(), None, body.as_of_commit)?;
        let kline = self.series_at(key, &at)?;
        aligned::AlignedPlan::new(kline, body, &|k| self.series_at(k, &at))
    }
}

fn too_many(n: usize, max: usize) -> Error {
    Error::invalid(format!(
        "{n} series in one request; at most {max} (http.max_batch_series or flight.max_series_per_ticket): split the request, or read many series over Flight"
    ))
}
