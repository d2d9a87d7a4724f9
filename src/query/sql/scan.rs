//! The table scan: the store's own range, latest-N and predicate reads as a DataFusion
//! `ExecutionPlan`.
//!
//! A scan is fixed when it is planned: the selected series (in key order) with the
//! snapshot each is read at, the inclusive `ts` range, the value predicates, the
//! projected columns, an optional row limit and the direction. Each partition reads a
//! contiguous run of the series on a blocking thread and sends batches into a bounded
//! channel, so memory holds a few batches whatever the range, and a dropped stream (a
//! finished LIMIT, a cancelled query, a client gone) stops the reader at its next send.
//!
//! Batches are built like DoGet's: `ts` and the raw int64 columns are slices of the
//! chunk mapping (no copy); scaled prices are one conversion pass; key columns are
//! constant per series. Predicate matches and descending reads are gathered (copied),
//! as their rows are not contiguous in the file.
//!
//! Ordering: within a partition rows are sorted by the table's key columns, then `ts`
//! (ascending, or descending for a latest-N scan). Key columns pinned by an equality
//! are declared constant, so `ORDER BY ts` over one series needs no sort, and
//! `ORDER BY ts DESC LIMIT n` becomes a reversed scan with a limit (the latest-N path).

use crate::sync::LockExt;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int8Array, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
    TimestampMillisecondArray, TimestampNanosecondArray, UInt64Array,
};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::{SortOptions, concat_batches};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    AcrossPartitions, ConstExpr, EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SortOrderPushdownResult,
};
use tokio::sync::mpsc::Sender;

use super::filters::{KEY_COLUMNS, ScanFilter};
use super::tables::{ColRole, DataTable};
use crate::query::predicate::{self, Compiled, Sink};
use crate::query::types::{QueryStats, Strategy};
use crate::record::{SeriesMeta, TsRange, ValueType};
use crate::storage::ChunkSlice;
use crate::storage::snapshot::{Snapshot, slice_of};

/// Batches buffered per partition between the reader and the plan.
const CHANNEL_BATCHES: usize = 2;
/// Batches of fewer rows than this are gathered with the next ones, in order, into a
/// batch of up to this many (`Reader::send`): a scan of 100,000 series of a few rows
/// each hands the plan a few dozen batches, not 100,000 (each batch costs the channel,
/// the operators above and the stream's bookkeeping about the same, whatever its rows).
const GATHER_ROWS: usize = 8_192;

/// What a scan did, for EXPLAIN ANALYZE, tests and `/v1/sql` answers.
#[derive(Debug, Default)]
pub struct ScanStats {
    /// Series of the table, and those the key conditions selected.
    pub series_total: AtomicU64,
    pub series_selected: AtomicU64,
    /// Chunks of the selected series, and those never read: outside the `ts` range
    /// (pruned from the manifest) or ruled out by a zone map or the value index.
    pub chunks_total: AtomicU64,
    pub chunks_pruned: AtomicU64,
    /// Zone-map blocks examined and skipped by value predicates.
    pub blocks_total: AtomicU64,
    pub blocks_pruned: AtomicU64,
    /// Rows read from chunk memory (a range's rows, or the rows a predicate checked).
    pub rows_scanned: AtomicU64,
    /// Rows the scan produced.
    pub rows_out: AtomicU64,
    /// How value predicates were answered: `value_index`, `zonemap`, `scan`.
    pub index_used: Mutex<BTreeSet<String>>,
    /// Set once a partition has run, so EXPLAIN shows figures only after execution.
    pub executed: AtomicBool,
}

/// A plain copy of [`ScanStats`], summed over the scans of a query.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"series_total": 12, "series_selected": 1, "chunks_total": 24, "chunks_pruned": 23, "blocks_total": 0, "blocks_pruned": 0, "rows_scanned": 60, "rows_out": 60, "index_used": "none"}))]
pub struct ScanSummary {
    pub series_total: u64,
    pub series_selected: u64,
    pub chunks_total: u64,
    pub chunks_pruned: u64,
    pub blocks_total: u64,
    pub blocks_pruned: u64,
    pub rows_scanned: u64,
    pub rows_out: u64,
    /// `none` when no value predicate was pushed, else the strategies used.
    pub index_used: String,
}

impl ScanStats {
    pub fn summary(&self) -> ScanSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let used = self.index_used.locked();
        ScanSummary {
            series_total: g(&self.series_total),
            series_selected: g(&self.series_selected),
            chunks_total: g(&self.chunks_total),
            chunks_pruned: g(&self.chunks_pruned),
            blocks_total: g(&self.blocks_total),
            blocks_pruned: g(&self.blocks_pruned),
            rows_scanned: g(&self.rows_scanned),
            rows_out: g(&self.rows_out),
            index_used: if used.is_empty() {
                "none".into()
            } else {
                used.iter().cloned().collect::<Vec<_>>().join("+")
            },
        }
    }

    /// Adds a predicate run's figures (its chunk counts are folded in by the caller).
    fn add_query(&self, q: &QueryStats) {
        self.blocks_total
            .fetch_add(q.blocks_total, Ordering::Relaxed);
        self.blocks_pruned
            .fetch_add(q.blocks_pruned, Ordering::Relaxed);
        self.rows_scanned
            .fetch_add(q.rows_checked, Ordering::Relaxed);
        let mut used = self.index_used.locked();
        for s in q
            .index_used
            .split('+')
            .filter(|s| *s != "none" && *s != "mixed")
        {
            used.insert(s.to_string());
        }
        if q.index_used == "mixed" {
            used.insert("mixed".into());
        }
    }
}

impl ScanSummary {
    /// Adds another scan's figures (a query may scan several tables).
    pub fn add(&mut self, o: &ScanSummary) {
        self.series_total += o.series_total;
        self.series_selected += o.series_selected;
        self.chunks_total += o.chunks_total;
        self.chunks_pruned += o.chunks_pruned;
        self.blocks_total += o.blocks_total;
        self.blocks_pruned += o.blocks_pruned;
        self.rows_scanned += o.rows_scanned;
        self.rows_out += o.rows_out;
        if self.index_used.is_empty() || self.index_used == "none" {
            self.index_used = o.index_used.clone();
        } else if o.index_used != "none" && o.index_used != self.index_used {
            self.index_used = format!("{}+{}", self.index_used, o.index_used);
        }
    }
}

/// One scan of a data table.
#[derive(Debug)]
pub struct ScanExec {
    pub table: DataTable,
    /// The projected columns, in output order.
    cols: Vec<ColRole>,
    /// The selected series in key order, each at the snapshot it is read at.
    series: Arc<Vec<Arc<Snapshot>>>,
    filter: Arc<ScanFilter>,
    /// Most rows each partition produces.
    limit: Option<usize>,
    /// Descending `ts` within each series (the latest-N path).
    reverse: bool,
    /// Runs of `series` read by each partition.
    partitions: Vec<Range<usize>>,
    batch_rows: usize,
    props: Arc<PlanProperties>,
    pub stats: Arc<ScanStats>,
    /// The planner's statistics, by partition (`None`: the whole scan), made once per
    /// plan node: the optimizer asks many times, and each answer walks every selected
    /// series (100,000 in a factor library).
    planner_stats: Arc<Mutex<std::collections::HashMap<Option<usize>, Arc<Statistics>>>>,
}

impl ScanExec {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: DataTable,
        schema: SchemaRef,
        cols: Vec<ColRole>,
        series: Vec<Arc<Snapshot>>,
        series_total: usize,
        filter: ScanFilter,
        limit: Option<usize>,
        target_partitions: usize,
        batch_rows: usize,
    ) -> ScanExec {
        let n = series.len();
        let parts = target_partitions.clamp(1, n.max(1));
        let partitions = (0..parts)
            .map(|p| (p * n / parts)..((p + 1) * n / parts))
            .collect();
        let stats = Arc::new(ScanStats::default());
        stats
            .series_total
            .store(series_total as u64, Ordering::Relaxed);
        stats.series_selected.store(n as u64, Ordering::Relaxed);
        let mut scan = ScanExec {
            table,
            cols,
            series: Arc::new(series),
            filter: Arc::new(filter),
            limit,
            reverse: false,
            partitions,
            batch_rows: batch_rows.max(1),
            props: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(Arc::clone(&schema)),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
            stats,
            planner_stats: Arc::default(),
        };
        scan.props = Arc::new(scan.properties_for(schema));
        scan
    }

    /// Output ordering, constants and partitioning of this scan.
    fn properties_for(&self, schema: SchemaRef) -> PlanProperties {
        let sort = |i: usize, descending: bool| {
            let expr: Arc<dyn PhysicalExpr> = Arc::new(Column::new(schema.field(i).name(), i));
            PhysicalSortExpr::new(
                expr,
                SortOptions {
                    descending,
                    nulls_first: false,
                },
            )
        };
        let col_of = |role: ColRole| self.cols.iter().position(|c| *c == role);
        let mut ordering = Vec::new();
        let mut constants = Vec::new();
        // Series are read in key order: the ordering is the key columns that vary, in
        // key order, then ts; it stops at a varying key column that is not projected.
        let mut chain = true;
        for k in 0..self.table.key_count() {
            match (self.constant_key(k), col_of(ColRole::Key(k))) {
                (Some(v), Some(i)) => constants.push(ConstExpr::new(
                    Arc::new(Column::new(schema.field(i).name(), i)),
                    AcrossPartitions::Uniform(Some(ScalarValue::Utf8(Some(v)))),
                )),
                (Some(_), None) => {}
                (None, Some(i)) if chain => ordering.push(sort(i, false)),
                (None, Some(_)) => {}
                (None, None) => chain = false,
            }
        }
        if chain && let Some(i) = col_of(ColRole::Stored(0)) {
            ordering.push(sort(i, self.reverse));
        }
        let mut eq = match LexOrdering::new(ordering) {
            Some(o) => EquivalenceProperties::new_with_orderings(Arc::clone(&schema), [o]),
            None => EquivalenceProperties::new(Arc::clone(&schema)),
        };
        if let Err(e) = eq.add_constants(constants) {
            tracing::warn!(error = %e, "could not declare pinned key columns constant");
        }
        PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(self.partitions.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
    }

    /// The value of key column `k` when it is the same on every row: pinned by an
    /// equality, or the only series read.
    fn constant_key(&self, k: usize) -> Option<String> {
        if let Some(v) = self.filter.pinned(k) {
            return Some(v.to_string());
        }
        match self.series.as_slice() {
            [one] => key_part(&one.meta, k).map(str::to_string),
            _ => None,
        }
    }

    fn with(&self, f: impl FnOnce(&mut ScanExec)) -> ScanExec {
        let mut s = ScanExec {
            table: self.table,
            cols: self.cols.clone(),
            series: Arc::clone(&self.series),
            filter: Arc::clone(&self.filter),
            limit: self.limit,
            reverse: self.reverse,
            partitions: self.partitions.clone(),
            batch_rows: self.batch_rows,
            props: Arc::clone(&self.props),
            stats: Arc::clone(&self.stats),
            planner_stats: Arc::clone(&self.planner_stats),
        };
        f(&mut s);
        // A new limit, projection or split of the series: the statistics are made again.
        if s.limit != self.limit || s.cols != self.cols || s.partitions != self.partitions {
            s.planner_stats = Arc::default();
        }
        s.props = Arc::new(s.properties_for(self.schema()));
        s
    }
}

pub(super) fn key_part(meta: &SeriesMeta, k: usize) -> Option<&str> {
    match k {
        0 => Some(meta.key.symbol()),
        1 => Some(meta.key.timeframe()),
        2 => meta.key.category(),
        _ => meta.key.name(),
    }
}

impl DisplayAs for ScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FastkScan: table={}, series={} of {}",
            self.table.name(),
            self.series.len(),
            self.stats.series_total.load(Ordering::Relaxed)
        )?;
        for (k, name) in KEY_COLUMNS.iter().enumerate() {
            if let Some(set) = &self.filter.keys[k] {
                write!(f, ", {name} in {set:?}")?;
            }
        }
        let r = self.filter.ts;
        if r.start.is_some() || r.end.is_some() {
            let b = |v: Option<i64>| v.map_or("unbounded".to_string(), |v| v.to_string());
            write!(f, ", ts=[{}, {}]", b(r.start), b(r.end))?;
        }
        if !self.filter.value.is_empty() {
            write!(f, ", value: {:?}", self.filter.value)?;
        }
        let names: Vec<&str> = self.cols.iter().map(|c| c.name(self.table)).collect();
        write!(f, ", projection=[{}]", names.join(", "))?;
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        if self.reverse {
            write!(f, ", order=ts desc (latest)")?;
        }
        if self.stats.executed.load(Ordering::Relaxed) {
            let s = self.stats.summary();
            write!(
                f,
                ", chunks_pruned={}/{}, blocks_pruned={}/{}, rows_scanned={}, index_used={}",
                s.chunks_pruned,
                s.chunks_total,
                s.blocks_pruned,
                s.blocks_total,
                s.rows_scanned,
                s.index_used
            )?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ScanExec {
    fn name(&self) -> &str {
        "FastkScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "FastkScan has no children".into(),
            ))
        }
    }

    /// From the series' states (no file read): see `sql::stats`.
    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        if let Some(done) = self.planner_stats.locked().get(&partition) {
            return Ok(Arc::clone(done));
        }
        let runs: Vec<&[Arc<Snapshot>]> = match partition {
            None => self
                .partitions
                .iter()
                .map(|r| &self.series[r.clone()])
                .collect(),
            Some(p) => {
                let range = self.partitions.get(p).cloned().ok_or_else(|| {
                    DataFusionError::Internal(format!("FastkScan has no partition {p}"))
                })?;
                vec![&self.series[range]]
            }
        };
        let made = Arc::new(super::stats::scan_statistics(
            &self.schema(),
            &self.cols,
            &runs,
            &self.filter,
            self.limit,
        ));
        self.planner_stats
            .locked()
            .insert(partition, Arc::clone(&made));
        Ok(made)
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        Some(Arc::new(self.with(|s| s.limit = limit)))
    }

    fn fetch(&self) -> Option<usize> {
        self.limit
    }

    /// `ORDER BY [varying key columns ASC,] ts DESC` is this scan read backwards
    /// (in one partition): with a fetch, the latest-N path.
    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
    ) -> Result<SortOrderPushdownResult<Arc<dyn ExecutionPlan>>> {
        let unsupported = Ok(SortOrderPushdownResult::Unsupported);
        let Some((last, prefix)) = order.split_last() else {
            return unsupported;
        };
        if self.partitions.len() != 1 {
            return unsupported;
        }
        let role = |e: &PhysicalSortExpr| {
            e.expr
                .downcast_ref::<Column>()
                .and_then(|c| self.cols.get(c.index()).copied())
        };
        if role(last) != Some(ColRole::Stored(0)) {
            return unsupported;
        }
        let mut asked = Vec::new();
        for e in prefix {
            match role(e) {
                Some(ColRole::Key(k)) if self.constant_key(k).is_some() => {}
                Some(ColRole::Key(k)) if !e.options.descending => asked.push(k),
                _ => return unsupported,
            }
        }
        let varying: Vec<usize> = (0..self.table.key_count())
            .filter(|&k| self.constant_key(k).is_none())
            .collect();
        if asked != varying {
            return unsupported;
        }
        let desc = last.options.descending;
        Ok(SortOrderPushdownResult::Exact {
            inner: Arc::new(self.with(|s| s.reverse = desc)),
        })
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let range = self.partitions.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("FastkScan has no partition {partition}"))
        })?;
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema(), CHANNEL_BATCHES);
        let reader = Reader {
            table: self.table,
            schema: self.schema(),
            cols: self.cols.clone(),
            filter: Arc::clone(&self.filter),
            remaining: self.limit.unwrap_or(usize::MAX),
            reverse: self.reverse,
            batch_rows: self.batch_rows,
            stats: Arc::clone(&self.stats),
            tx: builder.tx(),
            gathered: Vec::new(),
            gathered_rows: 0,
        };
        let series = Arc::clone(&self.series);
        builder.spawn_blocking(move || {
            let mut reader = reader;
            reader.stats.executed.store(true, Ordering::Relaxed);
            if !reader.filter.is_empty() {
                for snap in &series[range] {
                    if reader.remaining == 0 || !reader.series(snap)? {
                        break;
                    }
                }
            }
            // A consumer gone (a limit met above the scan) wants nothing more.
            match reader.flush() {
                Err(_) if reader.tx.is_closed() => Ok(()),
                r => r,
            }
        });
        Ok(builder.build())
    }
}

/// One partition's reader, on a blocking thread.
struct Reader {
    table: DataTable,
    schema: SchemaRef,
    cols: Vec<ColRole>,
    filter: Arc<ScanFilter>,
    /// Rows this partition may still produce.
    remaining: usize,
    reverse: bool,
    batch_rows: usize,
    stats: Arc<ScanStats>,
    tx: Sender<Result<RecordBatch>>,
    /// Small batches waiting to go out as one ([`GATHER_ROWS`]), in order.
    gathered: Vec<RecordBatch>,
    gathered_rows: usize,
}

fn storage_err(e: crate::storage::StorageError) -> DataFusionError {
    super::dist::Remote::error(crate::error::Error::from(e))
}

impl Reader {
    /// Reads one series; false when the consumer is gone or the limit is reached.
    fn series(&mut self, snap: &Arc<Snapshot>) -> Result<bool> {
        let total = snap.chunks().count() as u64;
        let mut read = 0u64;
        let r = self.series_chunks(snap, &mut read);
        // Every chunk not read is pruned: outside the range, ruled out by a zone map
        // or the index, or never reached because the limit was met.
        debug_assert!(read <= total, "read {read} of {total} chunks");
        self.stats.chunks_total.fetch_add(total, Ordering::Relaxed);
        self.stats
            .chunks_pruned
            .fetch_add(total.saturating_sub(read), Ordering::Relaxed);
        r
    }

    /// Reads one series, counting the chunks it reads into `read`.
    fn series_chunks(&mut self, snap: &Arc<Snapshot>, read: &mut u64) -> Result<bool> {
        let range = self.filter.ts;
        let planned = snap.plan(range);
        if self.filter.value.is_empty() {
            let mut chunks: Vec<_> = planned;
            if self.reverse {
                chunks.reverse();
            }
            for c in chunks {
                let m = c.map().map_err(storage_err)?;
                *read += 1;
                let s = slice_of(&m, range);
                if s.is_empty() {
                    continue;
                }
                if !self.slice(&snap.meta, &s)? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        // Value predicates: the engine picks index, zone map or scan per chunk.
        let filter = Arc::clone(&self.filter);
        let (first, rest) = filter.value.split_first().expect("value predicates");
        if !self.reverse {
            let mut sink = MatchSink::new(self, &snap.meta, rest);
            let q = predicate::run_into(snap, range, first, Strategy::Auto, &mut sink)
                .map_err(super::dist::Remote::error)?;
            let go_on = sink.finish()?;
            *read += q.chunks_total - q.chunks_pruned;
            self.stats.add_query(&q);
            return Ok(go_on);
        }
        // Descending: chunk by chunk from the end, each chunk's matches reversed.
        for c in planned.iter().rev() {
            let sub = TsRange::new(
                Some(range.lo().max(c.entry.first_ts)),
                Some(range.hi().min(c.entry.last_ts)),
            );
            let mut m = predicate::Matches::default();
            let q = predicate::run(snap, sub, first, Strategy::Auto, None, &mut m)
                .map_err(super::dist::Remote::error)?;
            *read += q.chunks_total - q.chunks_pruned;
            self.stats.add_query(&q);
            let keep: Vec<usize> = (0..m.ts.len())
                .rev()
                .filter(|&i| rest.iter().all(|p| p.matches_bits(m.values[i])))
                .collect();
            let ts: Vec<i64> = keep.iter().map(|&i| m.ts[i]).collect();
            let vals: Vec<i64> = keep.iter().map(|&i| m.values[i]).collect();
            if !self.owned(&snap.meta, ts, vals)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends the rows of `s` (forwards, or backwards when reversed).
    fn slice(&mut self, meta: &SeriesMeta, s: &ChunkSlice) -> Result<bool> {
        let n = s.len().min(self.remaining);
        self.stats
            .rows_scanned
            .fetch_add(n as u64, Ordering::Relaxed);
        if self.reverse {
            // The last `n` rows, newest first, copied in batches.
            let mut end = s.len();
            let stop = s.len() - n;
            while end > stop {
                let start = end.saturating_sub(self.batch_rows).max(stop);
                let rows: Vec<usize> = (start..end).rev().map(|i| s.start + i).collect();
                let batch = self.gathered(meta, s, &rows)?;
                if !self.send(batch) {
                    return Ok(false);
                }
                end = start;
            }
            return Ok(self.remaining > 0);
        }
        let mut at = 0;
        while at < n {
            let to = (at + self.batch_rows).min(n);
            let batch = self.zero_copy(meta, &s.sub(at, to))?;
            if !self.send(batch) {
                return Ok(false);
            }
            at = to;
        }
        Ok(self.remaining > 0)
    }

    /// A batch whose ts and raw columns are the chunk's own memory.
    fn zero_copy(&self, meta: &SeriesMeta, s: &ChunkSlice) -> Result<RecordBatch> {
        let n = s.len();
        let arrays = self
            .cols
            .iter()
            .map(|role| -> ArrayRef {
                match role {
                    ColRole::Stored(c) => {
                        let buf = s.chunk.buffer(*c, s.start, s.end);
                        match (*c, self.table.stored_type(*c)) {
                            (0, _) => ts_array(self.table, buf, n),
                            (_, StoredAs::Raw) => {
                                Arc::new(Int64Array::new(ScalarBuffer::new(buf, 0, n), None))
                            }
                            (_, StoredAs::F64Bits) => {
                                Arc::new(Float64Array::new(ScalarBuffer::new(buf, 0, n), None))
                            }
                            // `seq` is stored as the bits of an unsigned integer.
                            (_, StoredAs::Seq) => {
                                Arc::new(UInt64Array::new(ScalarBuffer::new(buf, 0, n), None))
                            }
                            (_, StoredAs::Side) => side_array(s.col(*c)),
                            (_, StoredAs::Scaled) => {
                                let scale = scale_of(meta, *c);
                                Arc::new(Float64Array::from_iter_values(
                                    s.col(*c).iter().map(|&v| v as f64 / scale),
                                ))
                            }
                        }
                    }
                    other => self.constant(meta, *other, n),
                }
            })
            .collect();
        self.batch(arrays, n)
    }

    /// A batch of the rows at `rows` (absolute positions in the chunk), in that order.
    fn gathered(&self, meta: &SeriesMeta, s: &ChunkSlice, rows: &[usize]) -> Result<RecordBatch> {
        let n = rows.len();
        let arrays = self
            .cols
            .iter()
            .map(|role| -> ArrayRef {
                match role {
                    ColRole::Stored(c) => {
                        let col = s.chunk.col(*c);
                        let vals: Vec<i64> = rows.iter().map(|&i| col[i]).collect();
                        stored_array(self.table, meta, *c, vals)
                    }
                    other => self.constant(meta, *other, n),
                }
            })
            .collect();
        self.batch(arrays, n)
    }

    /// Sends gathered predicate matches (ts and value bits), in batches.
    fn owned(&mut self, meta: &SeriesMeta, ts: Vec<i64>, vals: Vec<i64>) -> Result<bool> {
        let n = ts.len().min(self.remaining);
        let mut at = 0;
        while at < n {
            let to = (at + self.batch_rows).min(n);
            let arrays = self
                .cols
                .iter()
                .map(|role| -> ArrayRef {
                    match role {
                        ColRole::Stored(0) => {
                            stored_array(self.table, meta, 0, ts[at..to].to_vec())
                        }
                        ColRole::Stored(c) => {
                            stored_array(self.table, meta, *c, vals[at..to].to_vec())
                        }
                        other => self.constant(meta, *other, to - at),
                    }
                })
                .collect();
            let batch = self.batch(arrays, to - at)?;
            if !self.send(batch) {
                return Ok(false);
            }
            at = to;
        }
        Ok(self.remaining > 0)
    }

    fn constant(&self, meta: &SeriesMeta, role: ColRole, n: usize) -> ArrayRef {
        match role {
            ColRole::Key(k) => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                key_part(meta, k).unwrap_or_default(),
                n,
            ))),
            ColRole::PriceScale => Arc::new(Int64Array::from_value(meta.price_scale, n)),
            ColRole::VolumeScale => Arc::new(Int64Array::from_value(meta.volume_scale, n)),
            ColRole::Stored(_) => {
                unreachable!("stored columns are built by the caller")
            }
        }
    }

    fn batch(&self, arrays: Vec<ArrayRef>, n: usize) -> Result<RecordBatch> {
        // No projected column (SELECT count(*)): the batch carries only its row count.
        let opts = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            arrays,
            &opts,
        )?)
    }

    /// Hands a batch to the plan (a small one after the small ones before it, joined
    /// once they make [`GATHER_ROWS`]); false when the consumer is gone or the limit is
    /// met.
    fn send(&mut self, batch: RecordBatch) -> bool {
        let n = batch.num_rows();
        debug_assert!(n <= self.remaining, "a scan produced past its limit");
        self.remaining -= n;
        self.stats.rows_out.fetch_add(n as u64, Ordering::Relaxed);
        let sent = if n < GATHER_ROWS.min(self.batch_rows) {
            self.gathered_rows += n;
            self.gathered.push(batch);
            self.gathered_rows < GATHER_ROWS.min(self.batch_rows) || self.flush().is_ok()
        } else {
            // Order is kept: what was gathered goes first.
            self.flush().is_ok() && self.tx.blocking_send(Ok(batch)).is_ok()
        };
        sent && !self.tx.is_closed() && self.remaining > 0
    }

    /// Sends the gathered small batches as one; `Err` when the consumer is gone.
    fn flush(&mut self) -> Result<()> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.gathered);
        let rows = std::mem::take(&mut self.gathered_rows);
        let batch = if batches.len() == 1 {
            batches.into_iter().next().expect("one batch")
        } else {
            concat_batches(&self.schema, &batches)?
        };
        debug_assert_eq!(batch.num_rows(), rows, "a gathered batch has every row");
        self.tx
            .blocking_send(Ok(batch))
            .map_err(|_| DataFusionError::Execution("the scan's consumer is gone".into()))
    }
}

/// How a stored column appears in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredAs {
    /// int64 as stored (ts, raw prices, i64 values, `trade_id`).
    Raw,
    /// f64 values stored as their bits.
    F64Bits,
    /// int64 divided by the series' scale, as float64.
    Scaled,
    /// A tick's `seq`: uint64 stored as its bits.
    Seq,
    /// A trade's `side` (-1, 0 or 1, checked on write) as int8.
    Side,
}

impl StoredAs {
    /// The Arrow type of a non-`ts` column stored this way.
    pub fn data_type(self) -> DataType {
        match self {
            StoredAs::Raw => DataType::Int64,
            StoredAs::F64Bits | StoredAs::Scaled => DataType::Float64,
            StoredAs::Seq => DataType::UInt64,
            StoredAs::Side => DataType::Int8,
        }
    }
}

/// The divisor of scaled column `c`: the series' price or volume (size) scale.
fn scale_of(meta: &SeriesMeta, c: usize) -> f64 {
    let scale =
        crate::storage::batch::column_scale(meta, c, crate::storage::batch::PriceFormat::Float64);
    debug_assert!(scale.is_some(), "column {c} of {} has no scale", meta.key);
    scale.unwrap_or(1.0)
}

/// The `ts` column over `buf` (the chunk's memory), in the table's unit.
fn ts_array(table: DataTable, buf: Buffer, n: usize) -> ArrayRef {
    match table.ts_unit() {
        TimeUnit::Nanosecond => Arc::new(
            TimestampNanosecondArray::new(ScalarBuffer::new(buf, 0, n), None).with_timezone("UTC"),
        ),
        _ => Arc::new(
            TimestampMillisecondArray::new(ScalarBuffer::new(buf, 0, n), None).with_timezone("UTC"),
        ),
    }
}

fn side_array(vals: &[i64]) -> ArrayRef {
    Arc::new(Int8Array::from_iter_values(vals.iter().map(|&v| v as i8)))
}

/// An owned array of stored column `c`'s values (ts, raw, f64 bits or scaled).
fn stored_array(table: DataTable, meta: &SeriesMeta, c: usize, vals: Vec<i64>) -> ArrayRef {
    if c == 0 {
        let n = vals.len();
        return ts_array(table, Buffer::from_vec(vals), n);
    }
    match table.stored_type(c) {
        StoredAs::Raw => Arc::new(Int64Array::from(vals)),
        StoredAs::Seq => Arc::new(UInt64Array::from_iter_values(
            vals.into_iter().map(|v| v as u64),
        )),
        StoredAs::Side => side_array(&vals),
        StoredAs::F64Bits => Arc::new(Float64Array::from_iter_values(
            vals.into_iter().map(|b| f64::from_bits(b as u64)),
        )),
        StoredAs::Scaled => {
            let scale = scale_of(meta, c);
            Arc::new(Float64Array::from_iter_values(
                vals.into_iter().map(|v| v as f64 / scale),
            ))
        }
    }
}

/// Collects predicate matches into batches, applying the remaining predicates.
struct MatchSink<'a> {
    reader: &'a mut Reader,
    meta: &'a SeriesMeta,
    rest: &'a [Compiled],
    ts: Vec<i64>,
    vals: Vec<i64>,
    stopped: bool,
    error: Option<DataFusionError>,
}

impl<'a> MatchSink<'a> {
    fn new(reader: &'a mut Reader, meta: &'a SeriesMeta, rest: &'a [Compiled]) -> MatchSink<'a> {
        MatchSink {
            reader,
            meta,
            rest,
            ts: Vec::new(),
            vals: Vec::new(),
            stopped: false,
            error: None,
        }
    }

    fn flush(&mut self) -> bool {
        let ts = std::mem::take(&mut self.ts);
        let vals = std::mem::take(&mut self.vals);
        match self.reader.owned(self.meta, ts, vals) {
            Ok(go_on) => go_on,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// Sends what is left; false when the consumer is gone or the limit is met.
    fn finish(mut self) -> Result<bool> {
        if !self.stopped && !self.ts.is_empty() {
            self.stopped = !self.flush();
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(!self.stopped && self.reader.remaining > 0),
        }
    }
}

impl Sink for MatchSink<'_> {
    fn push(&mut self, ts: &[i64], values: &[i64]) -> bool {
        for (t, v) in ts.iter().zip(values) {
            if self.rest.iter().all(|p| p.matches_bits(*v)) {
                self.ts.push(*t);
                self.vals.push(*v);
            }
        }
        if self.ts.len() >= self.reader.batch_rows.min(self.reader.remaining) && !self.flush() {
            self.stopped = true;
            return false;
        }
        true
    }
}

/// Whether `vt` matches the value column's bits layout in `table`.
pub fn value_layout(vt: ValueType) -> StoredAs {
    match vt {
        ValueType::I64 => StoredAs::Raw,
        ValueType::F64 => StoredAs::F64Bits,
    }
}
