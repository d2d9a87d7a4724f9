//! Rows of many series gathered for one all-or-nothing write, whatever the wire.
//!
//! HTTP's `/v1/{kind}/records` and a many-series DoPut both hand over rows that name
//! their symbol; [`ManyRows`] groups them by symbol in the order symbols first appear,
//! finds each symbol's series once (the same lookup then serves the write and, for
//! scalars, the value type the caller converts values to), and
//! [`Engine::write_rows`] writes the groups as one log record.

use std::collections::HashMap;
use std::sync::Arc;

use super::Engine;
use super::types::ManyWriteResponse;
use crate::error::{Error, ErrorKind, Result};
use crate::record::{SeriesKey, ValueType};
use crate::storage::{Series, WriteBatch};

/// Series a write's groups are sized for up front: a minute of every symbol (a few
/// thousand) never regrows the list or its index (each regrowth moves every inline
/// batch), while a write of many rows of few symbols does not reserve one slot per row.
const GROUPS_PRESIZED: usize = 8192;

/// Rows of the series that share `template`'s kind, timeframe (and scalar category and
/// name), grouped by symbol.
pub struct ManyRows<'a> {
    template: SeriesKey,
    ncols: usize,
    since: u64,
    /// Symbols borrowed from the request.
    index: HashMap<&'a str, usize, foldhash::fast::RandomState>,
    groups: Vec<(Arc<Series>, WriteBatch)>,
}

impl<'a> ManyRows<'a> {
    /// Groups for a write of about `records` rows that began at `since`
    /// ([`Engine::series_since`]).
    pub fn new(template: SeriesKey, records: usize, since: u64) -> ManyRows<'a> {
        let n = records.min(GROUPS_PRESIZED);
        ManyRows {
            ncols: template.kind().ncols(),
            template,
            since,
            index: HashMap::with_capacity_and_hasher(n, Default::default()),
            groups: Vec::with_capacity(n),
        }
    }

    /// The group of `symbol`: the first time it appears, its key is made from the
    /// template and its series found; an error names the symbol.
    pub fn group(&mut self, engine: &Engine, symbol: &'a str) -> Result<usize> {
        if let Some(&g) = self.index.get(symbol) {
            return Ok(g);
        }
        let named = |e: Error| Error::new(e.kind, format!("symbol {symbol:?}: {}", e.message));
        let key = self
            .template
            .with_symbol(symbol)
            .map_err(|e| named(Error::invalid(e.to_string())))?;
        let series = engine.series_since(&key, self.since).map_err(named)?;
        debug_assert_eq!(series.meta.key, key, "a series is found by its key");
        self.groups
            .push((series, WriteBatch::with_capacity(self.ncols, 1)));
        self.index.insert(symbol, self.groups.len() - 1);
        Ok(self.groups.len() - 1)
    }

    /// How many groups (symbols) there are so far.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// The rows of group `g` so far.
    pub fn batch(&mut self, g: usize) -> &mut WriteBatch {
        &mut self.groups[g].1
    }

    /// The value type of group `g`'s series (scalar values arrive as JSON numbers or
    /// as one Arrow type, and are stored as the series' type).
    pub fn value_type(&self, g: usize) -> ValueType {
        self.groups[g].0.meta.value_type
    }

    /// The groups, owned (no longer borrowing the request's symbols), for
    /// [`Engine::write_rows`].
    pub fn finish(self) -> Grouped {
        Grouped {
            since: self.since,
            groups: self.groups,
        }
    }
}

/// The groups of a [`ManyRows`]: each series with its rows, in the order symbols
/// first appeared.
pub struct Grouped {
    since: u64,
    groups: Vec<(Arc<Series>, WriteBatch)>,
}

impl Grouped {
    /// The keys of the groups, in order.
    pub fn keys(&self) -> impl Iterator<Item = &SeriesKey> {
        self.groups.iter().map(|(s, _)| &s.meta.key)
    }

    /// Each group's key and rows, in order.
    pub fn rows(&self) -> impl Iterator<Item = (&SeriesKey, &WriteBatch)> {
        self.groups.iter().map(|(s, b)| (&s.meta.key, b))
    }

    /// The value type of each group's series, in order, with its key.
    pub fn value_types(&self) -> impl Iterator<Item = (&SeriesKey, ValueType)> {
        self.groups
            .iter()
            .map(|(s, _)| (&s.meta.key, s.meta.value_type))
    }
}

impl Engine {
    /// Writes `rows` as one all-or-nothing unit (one log record, one sync); kline rows
    /// are checked against the OHLC rules and the series' grid first. An error names
    /// the series it is about.
    pub fn write_rows(&self, rows: Grouped) -> Result<ManyWriteResponse> {
        self.write_groups(rows.since, rows.groups)
    }

    /// Writes rows of many series as one all-or-nothing unit: `entries` in the order
    /// the request first named each series, one batch per series. Every series must
    /// exist. For callers that hold keys; a wire front end uses [`ManyRows`].
    pub fn write_many(&self, entries: Vec<(SeriesKey, WriteBatch)>) -> Result<ManyWriteResponse> {
        let found = self.store.get_many(entries.iter().map(|(k, _)| k));
        let mut groups = Vec::with_capacity(entries.len());
        for ((key, batch), series) in entries.into_iter().zip(found) {
            let series = series.map_err(|e| {
                let e = Error::from(e);
                Error::new(e.kind, format!("symbol {:?}: {}", key.symbol(), e.message))
            })?;
            groups.push((series, batch));
        }
        self.write_groups(u64::MAX, groups)
    }

    fn write_groups(
        &self,
        since: u64,
        groups: Vec<(Arc<Series>, WriteBatch)>,
    ) -> Result<ManyWriteResponse> {
        self.check_writable()?;
        let mut rows = 0u64;
        let mut cells = 0u64;
        for (series, batch) in &groups {
            let named = |e: Error| {
                Error::new(
                    e.kind,
                    format!("symbol {:?}: {}", series.meta.key.symbol(), e.message),
                )
            };
            if series.born() > since {
                return Err(named(Error::new(
                    ErrorKind::NotFound,
                    "the series was deleted and registered again after this write began; \
                     nothing was written",
                )));
            }
            self.derive.refuse_write(&series.meta.key).map_err(named)?;
            self.check_many_rows(series, batch).map_err(named)?;
            rows += batch.len() as u64;
            cells += (batch.len() * batch.cols.len()) as u64;
        }
        // The answer names each series by its symbol.
        let symbols: Vec<String> = groups
            .iter()
            .map(|(s, _)| s.meta.key.symbol().to_string())
            .collect();
        let reports = self.store.write_many(groups)?;
        let out = ManyWriteResponse::of(symbols, reports);
        debug_assert_eq!(out.written, rows, "every row of the write is counted once");
        if out.written > 0 {
            self.metrics.add_written(out.written, cells * 8);
        }
        Ok(out)
    }
}
