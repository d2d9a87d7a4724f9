//! Scalar predicate evaluation with zone-map pruning and value-index lookups.
//!
//! Per chunk the planner picks one strategy: the value index when the predicate is a
//! range on the value and the index says few rows match (cost rule below), else the
//! zone map (skip blocks that cannot match, emit blocks that must all match without
//! checking rows), else a plain scan. A missing or corrupt sidecar falls back to the
//! next strategy and is counted in `sidecar_fallbacks`; answers never change.
//!
//! NaN (f64 series) never matches any predicate, `ne` and `not_in` included.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::types::{Predicate, QueryStats, Strategy};
use crate::error::{Error, Result};
use crate::record::{TsRange, ValueType};
use crate::storage::chunk::{ChunkRef, FileKind};
use crate::storage::sidecar::{Lookup, ValueIndex, ZoneMap};
use crate::storage::snapshot::{Snapshot, slice_of};

/// The index is used when it predicts at most 1/`INDEX_SELECTIVITY_DIV` of the rows in
/// range match: gathering and sorting positions costs several times a sequential check.
pub const INDEX_SELECTIVITY_DIV: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A predicate with values converted to the series' type.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred<T> {
    Cmp(Op, T),
    Between(T, T, bool),
    In(Vec<T>),
    NotIn(Vec<T>),
}

/// A typed predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Compiled {
    I64(Pred<i64>),
    F64(Pred<f64>),
}

/// Values that predicates compare: i64 and f64 (stored as raw bits).
pub trait Val: Copy + PartialOrd + std::fmt::Debug {
    fn from_bits(b: i64) -> Self;
    fn is_nan(self) -> bool;
    fn from_json(n: &serde_json::Number) -> Result<Self>;
}

impl Val for i64 {
    fn from_bits(b: i64) -> i64 {
        b
    }
    fn is_nan(self) -> bool {
        false
    }
    fn from_json(n: &serde_json::Number) -> Result<i64> {
        n.as_i64().ok_or_else(|| {
            Error::invalid(format!(
                "{n} is not a 64-bit integer; this series' value_type is i64"
            ))
        })
    }
}

impl Val for f64 {
    fn from_bits(b: i64) -> f64 {
        f64::from_bits(b as u64)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn from_json(n: &serde_json::Number) -> Result<f64> {
        n.as_f64()
            .ok_or_else(|| Error::invalid(format!("{n} is not a number")))
    }
}

fn compile<T: Val>(p: &Predicate) -> Result<Pred<T>> {
    let v = |n| T::from_json(n);
    let list = |vs: &Vec<serde_json::Number>| -> Result<Vec<T>> {
        if vs.is_empty() || vs.len() > 10_000 {
            return Err(Error::invalid("values must hold 1 to 10000 numbers"));
        }
        let mut out = vs.iter().map(T::from_json).collect::<Result<Vec<T>>>()?;
        out.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        Ok(out)
    };
    Ok(match p {
        Predicate::Eq { value } => Pred::Cmp(Op::Eq, v(value)?),
        Predicate::Ne { value } => Pred::Cmp(Op::Ne, v(value)?),
        Predicate::Gt { value } => Pred::Cmp(Op::Gt, v(value)?),
        Predicate::Gte { value } => Pred::Cmp(Op::Gte, v(value)?),
        Predicate::Lt { value } => Pred::Cmp(Op::Lt, v(value)?),
        Predicate::Lte { value } => Pred::Cmp(Op::Lte, v(value)?),
        Predicate::Between {
            min,
            max,
            inclusive,
        } => {
            let (a, b) = (v(min)?, v(max)?);
            if a > b {
                return Err(Error::invalid("between: min must not be greater than max"));
            }
            Pred::Between(a, b, *inclusive)
        }
        Predicate::In { values } => Pred::In(list(values)?),
        Predicate::NotIn { values } => Pred::NotIn(list(values)?),
    })
}

impl Compiled {
    /// Whether a stored value (raw bits: i64, or f64 bits) matches.
    pub fn matches_bits(&self, bits: i64) -> bool {
        match self {
            Compiled::I64(p) => p.matches(bits),
            Compiled::F64(p) => p.matches(f64::from_bits(bits as u64)),
        }
    }

    pub fn new(p: &Predicate, vt: ValueType) -> Result<Compiled> {
        Ok(match vt {
            ValueType::I64 => Compiled::I64(compile(p)?),
            ValueType::F64 => Compiled::F64(compile(p)?),
        })
    }
}

impl<T: Val> Pred<T> {
    /// Whether one value matches.
    pub fn matches(&self, x: T) -> bool {
        if x.is_nan() {
            return false;
        }
        match self {
            Pred::Cmp(Op::Eq, v) => x == *v,
            Pred::Cmp(Op::Ne, v) => x != *v,
            Pred::Cmp(Op::Gt, v) => x > *v,
            Pred::Cmp(Op::Gte, v) => x >= *v,
            Pred::Cmp(Op::Lt, v) => x < *v,
            Pred::Cmp(Op::Lte, v) => x <= *v,
            Pred::Between(a, b, true) => x >= *a && x <= *b,
            Pred::Between(a, b, false) => x > *a && x < *b,
            Pred::In(vs) => vs.contains(&x),
            Pred::NotIn(vs) => !vs.contains(&x),
        }
    }

    /// What a block with these bounds can hold: no match, all match, or some.
    fn zone_verdict(&self, min: T, max: T, nan_free: bool) -> Verdict {
        let some_or_all = |all: bool| {
            if all && nan_free {
                Verdict::All
            } else {
                Verdict::Some
            }
        };
        let none_if = |none: bool, all: bool| {
            if none {
                Verdict::None
            } else {
                some_or_all(all)
            }
        };
        let in_bounds = |v: &T| *v >= min && *v <= max;
        match self {
            Pred::Cmp(Op::Eq, v) => none_if(!in_bounds(v), min == *v && max == *v),
            Pred::Cmp(Op::Ne, v) => none_if(min == *v && max == *v, !in_bounds(v)),
            Pred::Cmp(Op::Gt, v) => none_if(max <= *v, min > *v),
            Pred::Cmp(Op::Gte, v) => none_if(max < *v, min >= *v),
            Pred::Cmp(Op::Lt, v) => none_if(min >= *v, max < *v),
            Pred::Cmp(Op::Lte, v) => none_if(min > *v, max <= *v),
            Pred::Between(a, b, true) => none_if(max < *a || min > *b, min >= *a && max <= *b),
            Pred::Between(a, b, false) => none_if(max <= *a || min >= *b, min > *a && max < *b),
            Pred::In(vs) => none_if(!vs.iter().any(in_bounds), min == max && vs.contains(&min)),
            Pred::NotIn(vs) => none_if(min == max && vs.contains(&min), !vs.iter().any(in_bounds)),
        }
    }

    /// Index ranges `[lo, hi)` of the sorted values that may match, or `None` when the
    /// predicate is not a value range (`ne`, `not_in`). `pp(v, le)` counts the sorted
    /// values `< v` (`<= v` when `le`); every range starts at one such count and ends
    /// at another, so the same shape serves exact counts and fence bounds. Ranges may be
    /// empty or repeated (see [`exact_ranges`]).
    fn index_ranges(&self, n: usize, pp: impl Fn(T, bool) -> usize) -> Option<Vec<(usize, usize)>> {
        let lb = |v: T| pp(v, false);
        let ub = |v: T| pp(v, true);
        Some(match self {
            Pred::Cmp(Op::Eq, v) => vec![(lb(*v), ub(*v))],
            Pred::Cmp(Op::Gt, v) => vec![(ub(*v), n)],
            Pred::Cmp(Op::Gte, v) => vec![(lb(*v), n)],
            Pred::Cmp(Op::Lt, v) => vec![(0, lb(*v))],
            Pred::Cmp(Op::Lte, v) => vec![(0, ub(*v))],
            Pred::Between(a, b, true) => vec![(lb(*a), ub(*b))],
            Pred::Between(a, b, false) => vec![(ub(*a), lb(*b))],
            Pred::In(vs) => vs.iter().map(|v| (lb(*v), ub(*v))).collect(),
            Pred::Cmp(Op::Ne, _) | Pred::NotIn(_) => return None,
        })
    }

    /// Whether the index alone (its fences, no chunk body) proves that no value of the
    /// chunk matches.
    /// Whether the predicate is a range (or ranges) of values, which an index answers.
    fn is_range(&self) -> bool {
        !matches!(self, Pred::Cmp(Op::Ne, _) | Pred::NotIn(_))
    }

    fn index_rules_out(&self, ix: &ValueIndex) -> bool {
        let bound = |hi: bool| {
            move |v: T, le: bool| {
                let (lo_n, hi_n) = ix.bounds(|b| below(T::from_bits(b), v, le));
                if hi { hi_n } else { lo_n }
            }
        };
        // Each range's start is at least its low bound and its end at most its high one.
        match (
            self.index_ranges(ix.entries, bound(false)),
            self.index_ranges(ix.entries, bound(true)),
        ) {
            (Some(lo), Some(hi)) => lo.iter().zip(&hi).all(|(a, b)| a.0 >= b.1),
            _ => false,
        }
    }

    /// The exact matching ranges of the sorted entries, non-empty and distinct.
    fn exact_ranges(&self, look: &Lookup) -> Option<Vec<(usize, usize)>> {
        let n = look.entries();
        let ranges = self.index_ranges(n, |v, le| {
            look.partition_point(|b| below(T::from_bits(b), v, le))
        })?;
        let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
        for r in ranges.into_iter().filter(|(a, b)| a < b) {
            // `in` lists are sorted, so a repeated value gives the previous range again.
            if out.last() != Some(&r) {
                out.push(r);
            }
        }
        Some(out)
    }
}

/// `x < v`, or `x <= v` when `le`: true for a prefix of the sorted values.
fn below<T: Val>(x: T, v: T, le: bool) -> bool {
    if le { x <= v } else { x < v }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    None,
    All,
    Some,
}

/// Receives matches in ascending ts order; returns false to stop the query.
pub trait Sink {
    fn push(&mut self, ts: &[i64], values: &[i64]) -> bool;
}

/// Collects matches up to an optional limit and notes where the next page starts.
#[derive(Debug, Default)]
pub struct Matches {
    pub ts: Vec<i64>,
    pub values: Vec<i64>,
    pub next_start_ts: Option<i64>,
    pub limit: Option<usize>,
}

impl Sink for Matches {
    fn push(&mut self, ts: &[i64], values: &[i64]) -> bool {
        let room = self.limit.map_or(usize::MAX, |l| l - self.ts.len());
        let take = room.min(ts.len());
        self.ts.extend_from_slice(&ts[..take]);
        self.values.extend_from_slice(&values[..take]);
        if take < ts.len() {
            self.next_start_ts = Some(ts[take]);
            return false;
        }
        true
    }
}

/// Runs `pred` over `range` of `snap`, feeding matches to `sink` (which may stop
/// early). `limit` on a [`Matches`] sink is applied by the sink itself.
pub fn run(
    snap: &Snapshot,
    range: TsRange,
    pred: &Compiled,
    strategy: Strategy,
    limit: Option<usize>,
    sink: &mut Matches,
) -> Result<QueryStats> {
    sink.limit = limit;
    run_into(snap, range, pred, strategy, sink)
}

/// As [`run`], for any sink.
pub fn run_into(
    snap: &Snapshot,
    range: TsRange,
    pred: &Compiled,
    strategy: Strategy,
    sink: &mut dyn Sink,
) -> Result<QueryStats> {
    let mut st = QueryStats::default();
    let mut used = BTreeSet::new();
    for c in snap.plan(range) {
        st.chunks_total += 1;
        let go_on = match pred {
            Compiled::I64(p) => chunk::<i64>(
                &c,
                snap.meta.value_type,
                range,
                p,
                strategy,
                sink,
                &mut st,
                &mut used,
            )?,
            Compiled::F64(p) => chunk::<f64>(
                &c,
                snap.meta.value_type,
                range,
                p,
                strategy,
                sink,
                &mut st,
                &mut used,
            )?,
        };
        if !go_on {
            break;
        }
    }
    st.index_used = match used.len() {
        0 => "none".into(),
        1 => used.into_iter().next().unwrap_or_default().to_string(),
        _ => "mixed".into(),
    };
    Ok(st)
}

#[allow(clippy::too_many_arguments)]
fn chunk<T: Val>(
    c: &ChunkRef,
    vt: ValueType,
    range: TsRange,
    p: &Pred<T>,
    strategy: Strategy,
    sink: &mut dyn Sink,
    st: &mut QueryStats,
    used: &mut BTreeSet<&'static str>,
) -> Result<bool> {
    let zonemap_allowed = matches!(
        strategy,
        Strategy::Auto | Strategy::Zonemap | Strategy::ValueIndex
    );
    let ix = (matches!(strategy, Strategy::Auto | Strategy::ValueIndex) && p.is_range())
        .then(|| load_vindex(c, vt, st))
        .flatten();
    // The sidecars first: a chunk they rule out is neither mapped nor, when
    // compressed, decompressed.
    let mut zm = None;
    if let Some(ix) = &ix {
        if p.index_rules_out(ix) {
            used.insert("value_index");
            st.chunks_pruned += 1;
            return Ok(true);
        }
    } else if zonemap_allowed {
        zm = load_zonemap(c, vt, st);
        if zm.as_ref().is_some_and(|z| zones_rule_out(z, p, range, st)) {
            used.insert("zonemap");
            st.chunks_pruned += 1;
            return Ok(true);
        }
    }
    let m = c.map()?;
    let s = slice_of(&m, range);
    if s.is_empty() {
        st.chunks_pruned += 1;
        return Ok(true);
    }
    let (ts, vals) = (m.ts(), m.col(1));
    if let Some(ix) = &ix {
        // A version 2 index reads the chunk's value column to place its bounds.
        match ix.lookup(vals).and_then(|look| p.exact_ranges(&look)) {
            Some(ranges) => {
                let hits: usize = ranges.iter().map(|(a, b)| b - a).sum();
                if strategy == Strategy::ValueIndex || hits * INDEX_SELECTIVITY_DIV <= s.len() {
                    used.insert("value_index");
                    if hits == 0 {
                        st.chunks_pruned += 1;
                        return Ok(true);
                    }
                    return Ok(emit_from_index(
                        ix, &ranges, s.start, s.end, ts, vals, sink, st,
                    ));
                }
            }
            None => {
                tracing::warn!(chunk = %c.rel_path(FileKind::ValueIndex), "value index disagrees with its chunk; scanning");
                st.sidecar_fallbacks += 1;
            }
        }
        if zonemap_allowed {
            zm = load_zonemap(c, vt, st);
        }
    }
    if let Some(z) = zm {
        used.insert("zonemap");
        return Ok(emit_with_zonemap(&z, p, s.start, s.end, ts, vals, sink, st));
    }
    used.insert("scan");
    Ok(scan(p, s.start, s.end, ts, vals, sink, st))
}

/// The chunk's value index, or `None` (a present but unusable one is logged and
/// counted as a fallback).
fn load_vindex(c: &ChunkRef, vt: ValueType, st: &mut QueryStats) -> Option<Arc<ValueIndex>> {
    c.vindex(vt)
        .inspect_err(|why| {
            if c.entry.vindex.present() {
                tracing::warn!(chunk = %c.rel_path(FileKind::ValueIndex), %why, "value index unusable; scanning");
                st.sidecar_fallbacks += 1;
            }
        })
        .ok()
}

/// The chunk's zone map, or `None` (as [`load_vindex`]).
fn load_zonemap(c: &ChunkRef, vt: ValueType, st: &mut QueryStats) -> Option<Arc<ZoneMap>> {
    c.zonemap(vt)
        .inspect_err(|why| {
            if c.entry.zonemap.present() {
                tracing::warn!(chunk = %c.rel_path(FileKind::ZoneMap), %why, "zone map unusable; scanning");
                st.sidecar_fallbacks += 1;
            }
        })
        .ok()
}

/// Whether no block of `z` whose ts bounds meet `range` can hold a match (counted as
/// pruned blocks): decided from the zone map alone, before the chunk is mapped.
fn zones_rule_out<T: Val>(z: &ZoneMap, p: &Pred<T>, range: TsRange, st: &mut QueryStats) -> bool {
    let mut blocks = 0u64;
    for zone in &z.zones {
        if zone.last_ts < range.lo() || zone.first_ts > range.hi() {
            continue;
        }
        blocks += 1;
        let verdict = if zone.empty {
            Verdict::None
        } else {
            p.zone_verdict(
                T::from_bits(zone.min),
                T::from_bits(zone.max),
                zone.nan_count == 0,
            )
        };
        if verdict != Verdict::None {
            return false;
        }
    }
    st.blocks_total += blocks;
    st.blocks_pruned += blocks;
    true
}

#[allow(clippy::too_many_arguments)]
fn emit_from_index(
    ix: &ValueIndex,
    ranges: &[(usize, usize)],
    a: usize,
    b: usize,
    ts: &[i64],
    vals: &[i64],
    sink: &mut dyn Sink,
    st: &mut QueryStats,
) -> bool {
    let mut pos: Vec<u32> = Vec::new();
    for &(lo, hi) in ranges {
        ix.positions_into(lo, hi, a, b, &mut pos);
    }
    pos.sort_unstable();
    st.rows_checked += pos.len() as u64;
    st.rows_matched += pos.len() as u64;
    let (t, v): (Vec<i64>, Vec<i64>) = pos
        .iter()
        .map(|&p| (ts[p as usize], vals[p as usize]))
        .unzip();
    sink.push(&t, &v)
}

#[allow(clippy::too_many_arguments)]
fn emit_with_zonemap<T: Val>(
    z: &ZoneMap,
    p: &Pred<T>,
    a: usize,
    b: usize,
    ts: &[i64],
    vals: &[i64],
    sink: &mut dyn Sink,
    st: &mut QueryStats,
) -> bool {
    let first_block = a / z.block_rows;
    let last_block = (b - 1) / z.block_rows;
    let mut pruned_all = true;
    for k in first_block..=last_block {
        st.blocks_total += 1;
        let zone = &z.zones[k];
        let lo = (k * z.block_rows).max(a);
        let hi = ((k + 1) * z.block_rows).min(b);
        let verdict = if zone.empty {
            Verdict::None
        } else {
            p.zone_verdict(
                T::from_bits(zone.min),
                T::from_bits(zone.max),
                zone.nan_count == 0,
            )
        };
        match verdict {
            Verdict::None => st.blocks_pruned += 1,
            Verdict::All => {
                pruned_all = false;
                st.rows_matched += (hi - lo) as u64;
                if !sink.push(&ts[lo..hi], &vals[lo..hi]) {
                    return false;
                }
            }
            Verdict::Some => {
                pruned_all = false;
                if !scan(p, lo, hi, ts, vals, sink, st) {
                    return false;
                }
            }
        }
    }
    if pruned_all {
        st.chunks_pruned += 1;
    }
    true
}

fn scan<T: Val>(
    p: &Pred<T>,
    a: usize,
    b: usize,
    ts: &[i64],
    vals: &[i64],
    sink: &mut dyn Sink,
    st: &mut QueryStats,
) -> bool {
    st.rows_checked += (b - a) as u64;
    let mut t = Vec::new();
    let mut v = Vec::new();
    for i in a..b {
        if p.matches(T::from_bits(vals[i])) {
            t.push(ts[i]);
            v.push(vals[i]);
        }
    }
    st.rows_matched += t.len() as u64;
    t.is_empty() || sink.push(&t, &v)
}
