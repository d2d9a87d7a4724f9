//! Derived series: kline series kept equal to the resample of a base kline series
//! (docs/derived.md).
//!
//! A rule (`POST /v1/kline/derive`) names a base timeframe, a target timeframe and the
//! symbols; every matching kline series, now and registered later, gets a derived
//! series `(symbol, timeframe)`. Its stored bars are the **materialized** buckets: the
//! resample of the base over every bucket before `through`, the start of the bucket of
//! the base's last bar when the pass ran. A background pass (every second) brings it up
//! to date after the base changed; nothing runs on the base's write path.
//!
//! A read of a derived series never waits for that pass and never differs from the
//! resample on read: it takes the base's state now, finds the first month the base
//! changed since the state the materialization read (a changed month is a new list in
//! the base's state, so an unchanged one is the same `Arc`), and answers the stored
//! bars before `min(through, that month's bucket)` followed by the base resampled on the
//! fly from there. A pass rewrites the stored bars from that bucket on (a range delete
//! and a write of the derived series, then `through` moves), under the series' gate, so
//! a read sees one materialization or the next, never half of one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use arrow_array::{Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Engine;
use super::market::resample::{self, ResamplePlan};
use super::market::spec::{Resample, Symbols};
use crate::error::{Error, ErrorKind, Result};
use crate::record::{MonthPartition, Name, SeriesKey, SeriesKind, SeriesMeta, TsRange, echo};
use crate::storage::batch::PriceFormat;
use crate::storage::chunk::{ChunkRef, MappedChunk};
use crate::storage::format::ChunkHeader;
use crate::storage::snapshot::{Snapshot, month_lists};
use crate::storage::{Series, WriteBatch};
use crate::sync::{LockExt, RwLockExt};

/// The rules, under the store root (JSON, written whole).
pub const RULES_FILE: &str = "DERIVE.json";
/// Most rules a store keeps.
pub const MAX_RULES: usize = 64;
/// How often the background pass materializes what changed.
pub const PASS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Most symbols one rule may list (`"*"` takes them all).
pub const MAX_RULE_SYMBOLS: usize = 100_000;

/// `POST /v1/kline/derive`: a rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from_timeframe": "1m", "timeframe": "1h", "symbols": "*"}))]
pub struct DeriveRule {
    /// The base timeframe (the stored one, e.g. `1m`).
    pub from_timeframe: String,
    /// The derived timeframe: a standard one, a whole multiple of the base's.
    pub timeframe: String,
    /// `"*"` (every kline series of the base timeframe, now and later) or a list.
    #[schema(value_type = Object)]
    pub symbols: Symbols,
    /// Shifts every bucket boundary, as the resample's `offset_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<i64>,
}

/// A rule as listed, with the derived series it maintains.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"from_timeframe": "1m", "timeframe": "1h", "symbols": "*", "series": 12}))]
pub struct DeriveRuleInfo {
    pub from_timeframe: String,
    pub timeframe: String,
    #[schema(value_type = Object)]
    pub symbols: Symbols,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<i64>,
    /// Derived series the rule maintains now.
    pub series: u64,
}

/// `GET /v1/kline/derive`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"rules": [{"from_timeframe": "1m", "timeframe": "1h", "symbols": "*", "series": 12}]}))]
pub struct DeriveList {
    pub rules: Vec<DeriveRuleInfo>,
}

/// One derived series: its base, its buckets, what is materialized.
#[derive(Debug)]
struct Mat {
    base: SeriesKey,
    plan: ResamplePlan,
    /// Held (write) while a pass rewrites the stored bars and moves `through`; held
    /// (read) while a read takes the three states it answers from.
    gate: RwLock<()>,
    /// One materialization of this series at a time (a second one would only redo
    /// the first's work).
    running: Mutex<()>,
    state: Mutex<MatState>,
}

#[derive(Debug, Clone, Default)]
struct MatState {
    /// Stored bars before this bucket start are the resample of `base_at`
    /// (`i64::MIN`: nothing is).
    through: i64,
    /// The base's state the last pass read.
    base_at: Option<Arc<Snapshot>>,
}

/// The store's rules and derived series.
#[derive(Debug)]
pub struct Derived {
    path: PathBuf,
    rules: Mutex<Vec<DeriveRule>>,
    by_series: RwLock<HashMap<SeriesKey, Arc<Mat>>>,
    /// Serializes rule changes and the derived series they register.
    change: Mutex<()>,
}

impl Derived {
    /// The rules saved under `root` (none: no file).
    pub fn open(root: &std::path::Path) -> Result<Derived> {
        let path = root.join(RULES_FILE);
        let rules = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<Vec<DeriveRule>>(&b).map_err(|e| {
                Error::new(
                    ErrorKind::Corrupted,
                    format!("{RULES_FILE} is not a list of derive rules: {e}"),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::internal(format!("{RULES_FILE}: {e}"))),
        };
        Ok(Derived {
            path,
            rules: Mutex::new(rules),
            by_series: RwLock::new(HashMap::new()),
            change: Mutex::new(()),
        })
    }

    fn save(&self, rules: &[DeriveRule]) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(rules).map_err(Error::internal)?;
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        crate::storage::fsio::write_atomic(dir, RULES_FILE, &[&bytes])
            .map_err(|e| Error::internal(format!("{RULES_FILE}: {e}")))
    }

    /// Whether `key` is a derived series (its base and timeframe).
    pub fn base_of(&self, key: &SeriesKey) -> Option<SeriesKey> {
        self.by_series.read_now().get(key).map(|m| m.base.clone())
    }

    /// The derived series of base `key`.
    pub fn derived_of(&self, key: &SeriesKey) -> Vec<SeriesKey> {
        self.by_series
            .read_now()
            .iter()
            .filter(|(_, m)| m.base == *key)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Stops maintaining derived series `key` (it is being deleted).
    pub fn forget(&self, key: &SeriesKey) {
        self.by_series.write_now().remove(key);
    }

    /// Refuses a write, delete or registration change of a derived series.
    pub fn refuse_write(&self, key: &SeriesKey) -> Result<()> {
        match self.base_of(key) {
            Some(base) => Err(Error::conflict(format!(
                "{key} is derived from {base} by a rule: it is written by the server only (write the base; DELETE /v1/kline/derive/{}?from_timeframe={}&drop=true removes it)",
                key.timeframe(),
                base.timeframe()
            ))),
            None => Ok(()),
        }
    }
}

fn symbol_matches(s: &Symbols, symbol: &str) -> bool {
    match s {
        Symbols::All(_) => true,
        Symbols::List(l) => l.iter().any(|x| x == symbol),
    }
}

fn rule_info(r: &DeriveRule, series: u64) -> DeriveRuleInfo {
    DeriveRuleInfo {
        from_timeframe: r.from_timeframe.clone(),
        timeframe: r.timeframe.clone(),
        symbols: r.symbols.clone(),
        offset_ms: r.offset_ms,
        series,
    }
}

impl Engine {
    /// The derived series of `base` under `rule`: registered if new (empty, or
    /// refused when a series of that key holds bars of its own), then maintained.
    fn attach_derived(&self, rule: &DeriveRule, base: &Arc<Series>, adopt: bool) -> Result<()> {
        let key = SeriesKey::kline(base.meta.key.symbol(), &rule.timeframe)?;
        if self.derive.by_series.read_now().contains_key(&key) {
            return Ok(());
        }
        let plan = ResamplePlan::new(
            &Resample {
                timeframe: rule.timeframe.clone(),
                offset_ms: rule.offset_ms,
                fill: None,
                agg: None,
            },
            None,
            &base.meta,
        )?;
        let timeframe_ms = crate::record::standard_timeframe_ms(&rule.timeframe)
            .ok_or_else(|| Error::invalid("a derived timeframe is a standard one"))?;
        let meta = SeriesMeta {
            key: key.clone(),
            timeframe_ms,
            ..(*base.meta).clone()
        };
        let (series, _) = match self.store.register(meta) {
            Ok(done) => done,
            Err(crate::storage::StorageError::Conflict(m)) => {
                return Err(Error::conflict(format!(
                    "{key} exists with other fields than the derived series would have ({m}): delete it or change the rule"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if series.snapshot().rows() > 0 && !adopt {
            return Err(Error::conflict(format!(
                "{key} exists and holds bars of its own: a rule would overwrite them; delete it first or leave its symbol out of the rule"
            )));
        }
        // Bucket starts sit off the epoch grid for weeks and offsets.
        series.set_settings(None, Some(true))?;
        if let Err(e) = self.registry.upsert_series(&series.meta) {
            tracing::error!(error = %e, "registry catalog update failed");
        }
        self.derive.by_series.write_now().insert(
            key,
            Arc::new(Mat {
                base: base.meta.key.clone(),
                plan,
                gate: RwLock::new(()),
                running: Mutex::new(()),
                state: Mutex::new(MatState {
                    through: i64::MIN,
                    base_at: None,
                }),
            }),
        );
        Ok(())
    }

    /// At open: every rule applies to the kline series of its base timeframe; the
    /// derived series of an earlier start are taken back with their bars (the server
    /// wrote them; the first pass checks them against the base).
    pub(super) fn apply_derive_rules(&self) {
        let rules = self.derive.rules.locked().clone();
        for rule in &rules {
            for base in self.store.list_kind(SeriesKind::Kline) {
                if base.meta.key.timeframe() == rule.from_timeframe
                    && symbol_matches(&rule.symbols, base.meta.key.symbol())
                    && let Err(e) = self.attach_derived(rule, &base, true)
                {
                    tracing::error!(base = %base.meta.key, error = %e.message,
                        "a derived series could not be attached; its base is read without it");
                }
            }
        }
    }

    /// A kline series was registered: the rules of its timeframe derive from it.
    pub(super) fn derive_registered(&self, key: &SeriesKey) {
        if key.kind() != SeriesKind::Kline {
            return;
        }
        let rules = self.derive.rules.locked().clone();
        for rule in rules.iter().filter(|r| {
            r.from_timeframe == key.timeframe() && symbol_matches(&r.symbols, key.symbol())
        }) {
            let _change = self.derive.change.locked();
            if let Ok(base) = self.store.get(key)
                && let Err(e) = self.attach_derived(rule, &base, false)
            {
                tracing::warn!(base = %key, error = %e.message, "no derived series for a new base");
            }
        }
    }

    /// `POST /v1/kline/derive`.
    pub fn derive_create(&self, rule: DeriveRule) -> Result<DeriveRuleInfo> {
        self.check_writable()?;
        Name::parse("timeframe", &rule.from_timeframe)?;
        Name::parse("timeframe", &rule.timeframe)?;
        let base_ms = crate::record::standard_timeframe_ms(&rule.from_timeframe);
        let target_ms = crate::record::standard_timeframe_ms(&rule.timeframe).ok_or_else(|| {
            Error::invalid(format!(
                "timeframe {} is not a standard one (1m 5m 15m 30m 1h 4h 1d 1w ...): a derived series needs a fixed width",
                echo(&rule.timeframe)
            ))
        })?;
        if let Some(b) = base_ms
            && (target_ms <= b || target_ms % b != 0)
        {
            return Err(Error::invalid(format!(
                "timeframe {} is not a whole multiple of from_timeframe {} (larger than it)",
                rule.timeframe, rule.from_timeframe
            )));
        }
        if rule.offset_ms.is_some_and(|o| o.abs() >= target_ms) {
            return Err(Error::invalid(format!(
                "offset_ms must be shorter than the derived timeframe ({target_ms} ms)"
            )));
        }
        match &rule.symbols {
            Symbols::All(s) if s != "*" => {
                return Err(Error::invalid(format!(
                    "symbols must be a list of symbols or \"*\", got {}",
                    echo(s)
                )));
            }
            Symbols::List(l) if l.is_empty() || l.len() > MAX_RULE_SYMBOLS => {
                return Err(Error::invalid(format!(
                    "symbols lists 1 to {MAX_RULE_SYMBOLS} symbols, or is \"*\""
                )));
            }
            Symbols::List(l) => {
                for s in l {
                    Name::parse("symbol", s)?;
                }
            }
            Symbols::All(_) => {}
        }
        let _change = self.derive.change.locked();
        {
            let rules = self.derive.rules.locked();
            if rules.len() >= MAX_RULES {
                return Err(Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!("a store keeps at most {MAX_RULES} derive rules"),
                ));
            }
            if let Some(r) = rules.iter().find(|r| r.timeframe == rule.timeframe) {
                return Err(Error::conflict(format!(
                    "a rule already derives {} (from {}): delete it first",
                    r.timeframe, r.from_timeframe
                )));
            }
            if rules.iter().any(|r| r.timeframe == rule.from_timeframe) {
                return Err(Error::invalid(format!(
                    "{} is itself derived: derive {} from the stored base instead",
                    rule.from_timeframe, rule.timeframe
                )));
            }
            if rules.iter().any(|r| r.from_timeframe == rule.timeframe) {
                return Err(Error::invalid(format!(
                    "{} is the base of another rule: a base cannot be derived",
                    rule.timeframe
                )));
            }
        }
        let bases: Vec<Arc<Series>> = self
            .store
            .list_kind(SeriesKind::Kline)
            .into_iter()
            .filter(|b| {
                b.meta.key.timeframe() == rule.from_timeframe
                    && symbol_matches(&rule.symbols, b.meta.key.symbol())
            })
            .collect();
        // Checked before anything changes: the resample fits each base's stored
        // timeframe, and no target holds bars of its own.
        for b in &bases {
            ResamplePlan::new(
                &Resample {
                    timeframe: rule.timeframe.clone(),
                    offset_ms: rule.offset_ms,
                    fill: None,
                    agg: None,
                },
                None,
                &b.meta,
            )?;
            let key = SeriesKey::kline(b.meta.key.symbol(), &rule.timeframe)?;
            if let Ok(t) = self.store.get(&key)
                && t.snapshot().rows() > 0
            {
                return Err(Error::conflict(format!(
                    "{key} exists and holds bars of its own: a rule would overwrite them; delete it first or leave its symbol out of the rule"
                )));
            }
        }
        {
            let mut rules = self.derive.rules.locked();
            let mut next = rules.clone();
            next.push(rule.clone());
            self.derive.save(&next)?;
            *rules = next;
        }
        for b in &bases {
            self.attach_derived(&rule, b, false)?;
        }
        tracing::info!(from = %rule.from_timeframe, to = %rule.timeframe, series = bases.len(), "derive rule created");
        Ok(rule_info(&rule, bases.len() as u64))
    }

    /// `GET /v1/kline/derive`.
    pub fn derive_list(&self) -> DeriveList {
        let by = self.derive.by_series.read_now();
        let rules = self.derive.rules.locked();
        DeriveList {
            rules: rules
                .iter()
                .map(|r| {
                    let n = by.keys().filter(|k| k.timeframe() == r.timeframe).count();
                    rule_info(r, n as u64)
                })
                .collect(),
        }
    }

    /// `DELETE /v1/kline/derive/{timeframe}?from_timeframe=`: the series stay (plain
    /// series, no longer maintained) unless `drop`.
    pub fn derive_delete(&self, timeframe: &str, from_timeframe: &str, drop: bool) -> Result<()> {
        self.check_writable()?;
        Name::parse("timeframe", timeframe)?;
        Name::parse("timeframe", from_timeframe)?;
        let _change = self.derive.change.locked();
        {
            let mut rules = self.derive.rules.locked();
            let Some(i) = rules
                .iter()
                .position(|r| r.timeframe == timeframe && r.from_timeframe == from_timeframe)
            else {
                return Err(Error::not_found(format!(
                    "no rule derives {timeframe} from {from_timeframe}"
                )));
            };
            let mut next = rules.clone();
            next.remove(i);
            self.derive.save(&next)?;
            *rules = next;
        }
        let gone: Vec<SeriesKey> = {
            let mut by = self.derive.by_series.write_now();
            let keys: Vec<SeriesKey> = by
                .keys()
                .filter(|k| k.timeframe() == timeframe)
                .cloned()
                .collect();
            for k in &keys {
                by.remove(k);
            }
            keys
        };
        if drop {
            for k in &gone {
                self.delete_series(k)?;
            }
        }
        tracing::info!(from = %from_timeframe, to = %timeframe, series = gone.len(), dropped = drop, "derive rule deleted");
        Ok(())
    }

    /// A derived series' base, and how far it is materialized (`None`: not derived).
    pub fn derive_status(&self, key: &SeriesKey) -> Option<(SeriesKey, Option<i64>)> {
        let mat = self.derive.by_series.read_now().get(key).cloned()?;
        let through = mat.state.locked().through;
        Some((mat.base.clone(), (through != i64::MIN).then_some(through)))
    }

    /// The series a read of `live` answers now: `live` itself, or for a derived series
    /// a read-only view of its stored bars up to where the base is unchanged, then the
    /// base resampled on the fly.
    pub fn live_view(&self, live: Arc<Series>) -> Result<Arc<Series>> {
        let Some(mat) = self
            .derive
            .by_series
            .read_now()
            .get(&live.meta.key)
            .cloned()
        else {
            return Ok(live);
        };
        let Ok(base) = self.store.get(&mat.base) else {
            return Ok(live);
        };
        let (st, base_now, stored) = {
            let _gate = mat.gate.read_now();
            let st = mat.state.locked().clone();
            (st, base.snapshot(), live.snapshot())
        };
        let from = bucket_of(&mat.plan, exact_from(&st, &base_now));
        let state = view_state(&live, &stored, &base_now, &mat.plan, from)?;
        Ok(Arc::new(live.view(Arc::new(state))))
    }

    /// One materialization pass over every derived series whose base changed.
    pub fn derive_pass(&self) {
        if self.is_replica() {
            return;
        }
        let all: Vec<(SeriesKey, Arc<Mat>)> = self
            .derive
            .by_series
            .read_now()
            .iter()
            .map(|(k, m)| (k.clone(), Arc::clone(m)))
            .collect();
        for (key, mat) in all {
            if let Err(e) = self.materialize(&key, &mat) {
                tracing::warn!(series = %key, error = %e.message, "derived series not materialized this pass");
            }
        }
    }

    /// Brings derived series `key` up to date with its base: the buckets from the first
    /// the base changed to the bucket of its last bar are resampled and rewritten.
    fn materialize(&self, key: &SeriesKey, mat: &Mat) -> Result<()> {
        let _running = mat.running.locked();
        let base = self.store.get(&mat.base)?;
        let derived = self.store.get(key)?;
        let st = mat.state.locked().clone();
        let now = base.snapshot();
        if st.base_at.as_ref().is_some_and(|a| Arc::ptr_eq(a, &now)) {
            return Ok(());
        }
        let from = bucket_of(&mat.plan, exact_from(&st, &now));
        let Some(last) = now.last_ts() else {
            // An empty base: nothing is derived.
            let _gate = mat.gate.write_now();
            if derived.snapshot().rows() > 0 {
                derived.delete_range(TsRange::all(), None)?;
            }
            *mat.state.locked() = MatState {
                through: i64::MIN,
                base_at: Some(now),
            };
            return Ok(());
        };
        let through = mat.plan.grid.bucket(last);
        let start = (from != i64::MIN).then_some(from);
        let bars = if from < through {
            resampled(&now, &mat.plan, TsRange::new(start, Some(through - 1)))?
        } else {
            vec![Vec::new(); 6]
        };
        let _gate = mat.gate.write_now();
        let lo = from.min(through);
        if derived.snapshot().last_ts().is_some_and(|t| t >= lo) {
            derived.delete_range(TsRange::new((lo != i64::MIN).then_some(lo), None), None)?;
        }
        if !bars[0].is_empty() {
            let mut b = WriteBatch::with_capacity(6, bars[0].len());
            for (c, col) in bars.iter().enumerate() {
                b.cols[c].extend_from_slice(col);
            }
            self.store.write(&derived, b, None)?;
        }
        *mat.state.locked() = MatState {
            through,
            base_at: Some(now),
        };
        Ok(())
    }
}

/// The first ts the stored bars may differ from the resample of `now`: `through`, or
/// the start of the first month the base changed since `st.base_at`, if earlier.
fn exact_from(st: &MatState, now: &Snapshot) -> i64 {
    let Some(at) = &st.base_at else {
        return i64::MIN;
    };
    match first_changed_month(at, now) {
        Some(m) => st.through.min(MonthPartition(m).start_ts()),
        None => st.through,
    }
}

/// The start of the bucket of `ts` (`i64::MIN` stays: nothing is exact).
fn bucket_of(plan: &ResamplePlan, ts: i64) -> i64 {
    if ts == i64::MIN {
        ts
    } else {
        plan.grid.bucket(ts)
    }
}

/// The first month whose chunk list differs between two states of one series (a
/// month only in one of them counts).
fn first_changed_month(a: &Snapshot, b: &Snapshot) -> Option<i32> {
    let mut ia = a.live.iter().filter(|(_, l)| !l.is_empty()).peekable();
    let mut ib = b.live.iter().filter(|(_, l)| !l.is_empty()).peekable();
    loop {
        match (ia.peek(), ib.peek()) {
            (None, None) => return None,
            (Some((m, _)), None) | (None, Some((m, _))) => return Some(**m),
            (Some((ma, la)), Some((mb, lb))) => {
                if ma != mb {
                    return Some((**ma).min(**mb));
                }
                if !Arc::ptr_eq(la, lb) {
                    return Some(**ma);
                }
                ia.next();
                ib.next();
            }
        }
    }
}

/// The resample of `range` of `snap` as six columns (ts, open, high, low, close,
/// volume), the stored integers.
fn resampled(snap: &Snapshot, plan: &ResamplePlan, range: TsRange) -> Result<Vec<Vec<i64>>> {
    let shape = plan.shape(&snap.meta, None, PriceFormat::Raw)?;
    let mut cols: Vec<Vec<i64>> = vec![Vec::new(); 6];
    let mut failed = None;
    let mut sink = |b: RecordBatch| {
        let ts = b
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>();
        let Some(ts) = ts else {
            failed = Some("a resampled ts column that is not milliseconds");
            return false;
        };
        cols[0].extend(ts.values().iter().copied());
        for (c, out) in cols.iter_mut().enumerate().skip(1) {
            match b.column(c).as_any().downcast_ref::<Int64Array>() {
                Some(a) if a.null_count() == 0 => out.extend(a.values().iter().copied()),
                _ => {
                    failed = Some("a resampled kline column that is not whole integers");
                    return false;
                }
            }
        }
        true
    };
    resample::run(snap, range, plan, &shape, 65_536, None, &mut sink)?;
    if let Some(why) = failed {
        return Err(Error::internal(why));
    }
    Ok(cols)
}

/// The state a read of a derived series answers: `stored`'s bars before `from`, then
/// the resample of `base` from `from` on. Whole months before `from` keep their chunk
/// handles; the month of `from` and after are built in memory, one chunk per month.
fn view_state(
    live: &Series,
    stored: &Snapshot,
    base: &Snapshot,
    plan: &ResamplePlan,
    from: i64,
) -> Result<Snapshot> {
    let mut months: BTreeMap<i32, Vec<Arc<ChunkRef>>> = BTreeMap::new();
    // Rows of the cut month and after, as columns per month.
    let mut tail: BTreeMap<i32, Vec<Vec<i64>>> = BTreeMap::new();
    // Nothing stored is exact (no pass yet, or the base changed in its first month):
    // every bar comes from the base.
    let cut = (from != i64::MIN).then(|| MonthPartition::from_ts(from).0);
    for (m, list) in stored.live.iter().filter(|(_, l)| !l.is_empty()) {
        let Some(cut) = cut.filter(|c| m <= c) else {
            continue;
        };
        if *m < cut {
            months.insert(*m, list.iter().cloned().collect());
            continue;
        }
        let cols = tail.entry(*m).or_insert_with(|| vec![Vec::new(); 6]);
        for c in list.iter() {
            let chunk = c.map()?;
            let ts = chunk.ts();
            let n = ts.partition_point(|&t| t < from);
            for (i, col) in cols.iter_mut().enumerate() {
                col.extend_from_slice(&chunk.col(i)[..n]);
            }
        }
    }
    let fresh = resampled(
        base,
        plan,
        TsRange::new((from != i64::MIN).then_some(from), None),
    )?;
    for (j, &ts) in fresh[0].iter().enumerate() {
        let m = MonthPartition::from_ts(ts).0;
        let cols = tail.entry(m).or_insert_with(|| vec![Vec::new(); 6]);
        for (i, col) in cols.iter_mut().enumerate() {
            col.push(fresh[i][j]);
        }
    }
    for (m, cols) in tail {
        if cols[0].is_empty() {
            continue;
        }
        debug_assert!(cols[0].windows(2).all(|w| w[0] < w[1]), "bars ascend");
        let header = ChunkHeader {
            meta: Arc::clone(&live.meta),
            ncols: 6,
            rows: 0,
            first_ts: 0,
            last_ts: 0,
            month: m,
            flags: 0,
            generation: 0,
            write_version: stored.version,
            write_chunks: 1,
            body_xxh3: 0,
            stride: 0,
            wal_lsn: 0,
            body_len: 0,
            last_row: None,
        };
        let refs: Vec<&[i64]> = cols.iter().map(Vec::as_slice).collect();
        let chunk = MappedChunk::in_memory(header, &refs);
        months
            .entry(m)
            .or_default()
            .push(Arc::new(ChunkRef::in_memory(
                chunk,
                Arc::clone(&live.dir),
                Arc::clone(&live.rel_dir),
            )));
    }
    Ok(Snapshot {
        meta: Arc::clone(&live.meta),
        version: stored.version,
        next_generation: stored.next_generation,
        retention_ms: stored.retention_ms,
        irregular: stored.irregular,
        live: month_lists(months),
        obsolete: Arc::default(),
        wal_lsn: stored.wal_lsn,
        unfolded: None,
        superseded: Vec::new(),
    })
}
