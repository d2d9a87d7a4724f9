//! The SQL tables (catalog `fastk`, schema `public`; docs/sql.md).
//!
//! Data tables read series through [`super::scan::ScanExec`]; the catalog tables
//! (`series`, `datasets`, `features`, `factors`) are built from the in-memory catalog
//! and the registry when a query scans them.

use crate::auth::Principal;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::filters::{Pushable, ScanFilter, classify};
use super::scan::{ScanExec, StoredAs, value_layout};
use crate::query::Engine;
use crate::record::{SeriesKind, ValueType};
use crate::registry::DefinitionKind;
use crate::storage::batch::KLINE_COLUMNS;

/// A table that reads series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataTable {
    /// Kline bars with prices and volume divided by their scales, as float64.
    Kline,
    /// Kline bars exactly as stored: int64 with their scales.
    KlineRaw,
    /// Scalar series of value_type f64.
    Scalar,
    /// Scalar series of value_type i64.
    ScalarI64,
    /// Trades with price and size divided by their scales, as float64 (`ts` in ns).
    Trade,
    /// Trades exactly as stored: int64 with their scales.
    TradeRaw,
    /// Quotes with prices and sizes divided by their scales, as float64 (`ts` in ns).
    Quote,
    /// Quotes exactly as stored: int64 with their scales.
    QuoteRaw,
}

/// What a table column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColRole {
    /// Key column `filters::KEY_COLUMNS[i]`.
    Key(usize),
    /// Stored column `i` (0 = ts; kline 1..=5 = open..volume; scalar 1 = value; the
    /// tick kinds' columns in their layout's order).
    Stored(usize),
    PriceScale,
    VolumeScale,
}

impl ColRole {
    pub fn name(self, table: DataTable) -> &'static str {
        match self {
            ColRole::Key(k) => super::filters::KEY_COLUMNS[k],
            ColRole::Stored(0) => "ts",
            ColRole::Stored(c) => match table.kind() {
                SeriesKind::Kline => KLINE_COLUMNS[c - 1],
                SeriesKind::Scalar => "value",
                kind @ (SeriesKind::Trade | SeriesKind::Quote) => kind.layout().columns[c],
            },
            ColRole::PriceScale => "price_scale",
            ColRole::VolumeScale if table.kind().is_tick() => "size_scale",
            ColRole::VolumeScale => "volume_scale",
        }
    }
}

pub const DATA_TABLES: [DataTable; 8] = [
    DataTable::Kline,
    DataTable::KlineRaw,
    DataTable::Scalar,
    DataTable::ScalarI64,
    DataTable::Trade,
    DataTable::TradeRaw,
    DataTable::Quote,
    DataTable::QuoteRaw,
];

/// Every table name, data tables first (in [`DATA_TABLES`] order).
pub const TABLE_NAMES: [&str; 12] = [
    "kline",
    "kline_raw",
    "scalar",
    "scalar_i64",
    "trade",
    "trade_raw",
    "quote",
    "quote_raw",
    "series",
    "datasets",
    "features",
    "factors",
];

pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

impl DataTable {
    /// The table named `name`.
    pub fn named(name: &str) -> Option<DataTable> {
        DATA_TABLES.into_iter().find(|t| t.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            DataTable::Kline => "kline",
            DataTable::KlineRaw => "kline_raw",
            DataTable::Scalar => "scalar",
            DataTable::ScalarI64 => "scalar_i64",
            DataTable::Trade => "trade",
            DataTable::TradeRaw => "trade_raw",
            DataTable::Quote => "quote",
            DataTable::QuoteRaw => "quote_raw",
        }
    }

    pub fn kind(self) -> SeriesKind {
        match self {
            DataTable::Kline | DataTable::KlineRaw => SeriesKind::Kline,
            DataTable::Scalar | DataTable::ScalarI64 => SeriesKind::Scalar,
            DataTable::Trade | DataTable::TradeRaw => SeriesKind::Trade,
            DataTable::Quote | DataTable::QuoteRaw => SeriesKind::Quote,
        }
    }

    /// A table of int64 values as stored, with the series' scales as columns.
    pub fn raw(self) -> bool {
        matches!(
            self,
            DataTable::KlineRaw | DataTable::TradeRaw | DataTable::QuoteRaw
        )
    }

    /// The unit of the table's `ts` column: its kind's.
    pub fn ts_unit(self) -> TimeUnit {
        match self.kind().layout().unit {
            crate::record::TimeUnit::Millis => TimeUnit::Millisecond,
            crate::record::TimeUnit::Nanos => TimeUnit::Nanosecond,
        }
    }

    /// The type of the table's `ts` column.
    pub fn ts_type(self) -> DataType {
        DataType::Timestamp(self.ts_unit(), Some("UTC".into()))
    }

    /// How many key columns the table has.
    pub fn key_count(self) -> usize {
        match self.kind() {
            SeriesKind::Kline => 2,
            SeriesKind::Scalar => 4,
            SeriesKind::Trade | SeriesKind::Quote => 1,
        }
    }

    /// The scalar value type this table holds (None for kline tables).
    pub fn value_type(self) -> Option<ValueType> {
        match self {
            DataTable::Scalar => Some(ValueType::F64),
            DataTable::ScalarI64 => Some(ValueType::I64),
            _ => None,
        }
    }

    /// How stored column `c` appears in this table (ts, column 0, is raw int64).
    pub fn stored_type(self, c: usize) -> StoredAs {
        if c == 0 {
            return StoredAs::Raw;
        }
        match self {
            DataTable::Kline => StoredAs::Scaled,
            DataTable::KlineRaw => StoredAs::Raw,
            DataTable::Scalar => value_layout(ValueType::F64),
            DataTable::ScalarI64 => value_layout(ValueType::I64),
            tick => match tick.kind().layout().columns[c] {
                "seq" => StoredAs::Seq,
                "side" => StoredAs::Side,
                "trade_id" => StoredAs::Raw,
                _ if tick.raw() => StoredAs::Raw,
                _ => StoredAs::Scaled,
            },
        }
    }

    /// The table's columns, in order.
    pub fn columns(self) -> Vec<ColRole> {
        let mut cols: Vec<ColRole> = (0..self.key_count()).map(ColRole::Key).collect();
        cols.push(ColRole::Stored(0));
        match self.kind() {
            SeriesKind::Kline => cols.extend((1..=5).map(ColRole::Stored)),
            SeriesKind::Scalar => cols.push(ColRole::Stored(1)),
            kind @ (SeriesKind::Trade | SeriesKind::Quote) => {
                cols.extend((1..kind.ncols()).map(ColRole::Stored))
            }
        }
        if self.raw() {
            cols.extend([ColRole::PriceScale, ColRole::VolumeScale]);
        }
        cols
    }

    pub fn schema(self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns()
            .into_iter()
            .map(|c| {
                let dt = match c {
                    ColRole::Key(_) => DataType::Utf8,
                    ColRole::Stored(0) => self.ts_type(),
                    ColRole::Stored(c) => self.stored_type(c).data_type(),
                    ColRole::PriceScale | ColRole::VolumeScale => DataType::Int64,
                };
                Field::new(c.name(self), dt, false)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    fn pushable(self) -> Pushable {
        Pushable {
            keys: self.key_count(),
            value: self.value_type(),
            ts_unit: self.ts_unit(),
        }
    }
}

/// A data table over the engine's store: the series now, or as a named snapshot
/// holds them (`at`; docs/research.md).
#[derive(Debug)]
pub struct DataTableProvider {
    pub table: DataTable,
    engine: Arc<Engine>,
    schema: SchemaRef,
    at: Option<String>,
}

impl DataTableProvider {
    pub fn new(table: DataTable, engine: Arc<Engine>, at: Option<String>) -> DataTableProvider {
        DataTableProvider {
            table,
            engine,
            schema: table.schema(),
            at,
        }
    }
}

#[async_trait]
impl TableProvider for DataTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|e| match classify(e, self.table.pushable()) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let picked: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.table.columns().len()).collect(),
        };
        let partitions = state.config().target_partitions();
        let principal = state.config().get_extension::<Principal>();
        let spec = ScanSpec {
            table: self.table,
            at: self.at.clone(),
            projection: picked,
            filters: filters.to_vec(),
            limit,
        };
        // Distributed SQL: a scan that reads series of other nodes becomes a leaf the
        // engine splits by owner (`super::dist`); one that reads only this node's
        // series stays the local scan and contacts no other node.
        if let Some(shard) =
            super::dist::shard_scan(&self.engine, state.config(), &spec, partitions)?
        {
            return Ok(shard);
        }
        Ok(Arc::new(local_scan(
            &self.engine,
            &spec,
            principal.as_deref(),
            None,
            partitions,
        )?))
    }
}

/// What a scan of a data table reads: the table (at a named snapshot or now), the
/// projected columns, the pushed filters and the limit. Built on the node that plans
/// a query and, for distributed SQL, carried to the nodes that own the series.
#[derive(Debug, Clone)]
pub struct ScanSpec {
    pub table: DataTable,
    pub at: Option<String>,
    pub projection: Vec<usize>,
    pub filters: Vec<Expr>,
    pub limit: Option<usize>,
}

impl ScanSpec {
    /// The projected schema.
    pub fn schema(&self) -> Result<SchemaRef> {
        Ok(Arc::new(self.table.schema().project(&self.projection)?))
    }

    /// The pushed filters, classified.
    pub fn filter(&self) -> ScanFilter {
        ScanFilter::new(&self.filters, self.table.pushable())
    }
}

/// The scan of `spec` over this node's series: every series of the table the filters
/// admit, or only those `keep` admits (a distributed query: the symbols of one owner).
pub fn local_scan(
    engine: &Arc<Engine>,
    spec: &ScanSpec,
    principal: Option<&Principal>,
    keep: Option<&dyn Fn(&str) -> bool>,
    partitions: usize,
) -> Result<ScanExec> {
    let all = spec.table.columns();
    let cols: Vec<ColRole> = spec.projection.iter().map(|&i| all[i]).collect();
    let schema = spec.schema()?;
    let filter = spec.filter();
    let vt = spec.table.value_type();
    let every = match &spec.at {
        None => engine
            .store
            .list_kind(spec.table.kind())
            .into_iter()
            .map(|s| engine.live_view(s))
            .collect::<crate::error::Result<Vec<_>>>()
            .map_err(super::dist::Remote::error)?,
        Some(name) => engine
            .snapshot_series(name, spec.table.kind())
            .map_err(super::dist::Remote::error)?,
    };
    let of_table: Vec<_> = every
        .into_iter()
        .filter(|s| vt.is_none_or(|vt| s.meta.value_type == vt))
        .filter(|s| keep.is_none_or(|keep| keep(s.meta.key.symbol())))
        .collect();
    let total = of_table.len();
    let mut selected: Vec<_> = of_table
        .into_iter()
        .filter(|s| filter.admits(&s.meta.key))
        .map(|s| s.snapshot())
        .collect();
    if let Some(p) = principal {
        for s in &selected {
            p.check_symbol(s.meta.key.symbol())
                .inspect_err(|e| engine.auth.note_forbidden(e))
                .map_err(super::dist::Remote::error)?;
        }
    }
    // By the key's parts, borrowed: a scan of 100,000 series sorts them without
    // making a string per comparison.
    fn order(s: &crate::storage::snapshot::Snapshot) -> (&str, &str, Option<&str>, Option<&str>) {
        let key = &s.meta.key;
        (key.symbol(), key.timeframe(), key.category(), key.name())
    }
    // The map lists series in `SeriesKey` order, which is often this order already
    // (one timeframe: a factor library): sorted only when it is not.
    if !selected.is_sorted_by(|a, b| order(a) <= order(b)) {
        selected.sort_by(|a, b| order(a).cmp(&order(b)));
    }
    let batch_rows = engine.config.flight.max_batch_rows;
    Ok(ScanExec::new(
        spec.table, schema, cols, selected, total, filter, spec.limit, partitions, batch_rows,
    ))
}

/// A catalog table, built from the engine when a query scans it.
#[derive(Debug)]
pub struct CatalogTable {
    name: &'static str,
    engine: Arc<Engine>,
    schema: SchemaRef,
}

fn nullable_str(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn str_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

impl CatalogTable {
    pub fn new(name: &'static str, engine: Arc<Engine>) -> Option<CatalogTable> {
        let schema = catalog_schema(name)?;
        Some(CatalogTable {
            name,
            engine,
            schema,
        })
    }

    fn batch(&self) -> Result<RecordBatch> {
        self.batch_of(None)
    }

    /// The `series` table of this node's series whose symbols `keep` admits (a
    /// distributed query: one owner's), or every series.
    pub fn series_batch(engine: &Arc<Engine>, keep: &dyn Fn(&str) -> bool) -> Result<RecordBatch> {
        let t = CatalogTable::new("series", Arc::clone(engine))
            .ok_or_else(|| DataFusionError::Internal("no series table".into()))?;
        t.batch_of(Some(keep))
    }

    fn batch_of(&self, keep: Option<&dyn Fn(&str) -> bool>) -> Result<RecordBatch> {
        let e = &self.engine;
        let strs = |v: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        let opt_strs = |v: Vec<Option<String>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        let ints = |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
        let tss = |v: Vec<Option<i64>>| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
        };
        let registry_err = |err: crate::registry::RegistryError| {
            super::dist::Remote::error(crate::error::Error::from(err))
        };
        let cols: Vec<ArrayRef> = match self.name {
            "series" => {
                let mut list = e.store.list();
                if let Some(keep) = keep {
                    list.retain(|s| keep(s.meta.key.symbol()));
                }
                list.sort_by_key(|a| a.meta.key.to_string());
                let infos: Vec<_> = list
                    .iter()
                    .map(|s| crate::query::series_info(s, false))
                    .collect();
                vec![
                    strs(infos.iter().map(|i| i.kind.as_str().to_string()).collect()),
                    strs(infos.iter().map(|i| i.symbol.clone()).collect()),
                    strs(infos.iter().map(|i| i.timeframe.clone()).collect()),
                    opt_strs(infos.iter().map(|i| i.category.clone()).collect()),
                    opt_strs(infos.iter().map(|i| i.name.clone()).collect()),
                    opt_strs(
                        infos
                            .iter()
                            .map(|i| i.value_type.map(|v| v.as_str().to_string()))
                            .collect(),
                    ),
                    ints(infos.iter().map(|i| i.price_scale).collect()),
                    ints(infos.iter().map(|i| i.volume_scale).collect()),
                    ints(infos.iter().map(|i| Some(i.rows as i64)).collect()),
                    tss(infos.iter().map(|i| ms_of(i.kind, i.first_ts)).collect()),
                    tss(infos.iter().map(|i| ms_of(i.kind, i.last_ts)).collect()),
                    ints(infos.iter().map(|i| Some(i.version as i64)).collect()),
                    ints(infos.iter().map(|i| Some(i.bytes as i64)).collect()),
                    ints(infos.iter().map(|i| Some(i.timeframe_ms)).collect()),
                ]
            }
            "datasets" => {
                let ds = e.registry.list_datasets(None).map_err(registry_err)?;
                vec![
                    strs(ds.iter().map(|d| d.name.clone()).collect()),
                    strs(ds.iter().map(|d| d.version.clone()).collect()),
                    strs(ds.iter().map(|d| d.source.clone()).collect()),
                    strs(ds.iter().map(|d| d.market.clone()).collect()),
                    tss(ds.iter().map(|d| d.start_ts).collect()),
                    tss(ds.iter().map(|d| d.end_ts).collect()),
                    strs(ds.iter().map(|d| d.checksum.clone()).collect()),
                    strs(ds.iter().map(|d| d.status.clone()).collect()),
                    strs(ds.iter().map(|d| d.description.clone()).collect()),
                ]
            }
            _ => {
                let kind = if self.name == "features" {
                    DefinitionKind::Feature
                } else {
                    DefinitionKind::Factor
                };
                let ds = e
                    .registry
                    .list_definitions(kind, None)
                    .map_err(registry_err)?;
                let f = |g: fn(&crate::registry::Definition) -> &String| {
                    strs(ds.iter().map(|d| g(d).clone()).collect())
                };
                vec![
                    f(|d| &d.name),
                    f(|d| &d.version),
                    f(|d| &d.input_dataset),
                    f(|d| &d.symbol),
                    f(|d| &d.timeframe),
                    f(|d| &d.category),
                    f(|d| &d.series_name),
                    f(|d| &d.config_hash),
                    f(|d| &d.code_version),
                    f(|d| &d.status),
                    f(|d| &d.description),
                ]
            }
        };
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }
}

/// A series' `ts` in milliseconds (the `series` table's unit): a tick series' ns
/// floored to its millisecond.
fn ms_of(kind: SeriesKind, ts: Option<i64>) -> Option<i64> {
    match kind.layout().unit {
        crate::record::TimeUnit::Millis => ts,
        crate::record::TimeUnit::Nanos => ts.map(|t| t.div_euclid(1_000_000)),
    }
}

/// The schema of a catalog table, or None if `name` is not one.
pub fn catalog_schema(name: &str) -> Option<SchemaRef> {
    let ts = |n: &str| Field::new(n, ts_type(), true);
    let int = |n: &str, null: bool| Field::new(n, DataType::Int64, null);
    let fields = match name {
        "series" => vec![
            str_field("kind"),
            str_field("symbol"),
            str_field("timeframe"),
            nullable_str("category"),
            nullable_str("name"),
            nullable_str("value_type"),
            int("price_scale", true),
            int("volume_scale", true),
            int("rows", false),
            ts("first_ts"),
            ts("last_ts"),
            int("version", false),
            int("bytes", false),
            int("timeframe_ms", false),
        ],
        "datasets" => vec![
            str_field("name"),
            str_field("version"),
            str_field("source"),
            str_field("market"),
            ts("start_ts"),
            ts("end_ts"),
            str_field("checksum"),
            str_field("status"),
            str_field("description"),
        ],
        "features" | "factors" => [
            "name",
            "version",
            "input_dataset",
            "symbol",
            "timeframe",
            "category",
            "series_name",
            "config_hash",
            "code_version",
            "status",
            "description",
        ]
        .into_iter()
        .map(str_field)
        .collect(),
        _ => return None,
    };
    Some(Arc::new(Schema::new(fields)))
}

#[async_trait]
impl TableProvider for CatalogTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(p) = state.config().get_extension::<Principal>() {
            let checked = match self.name {
                "series" => self
                    .engine
                    .store
                    .list()
                    .iter()
                    .try_for_each(|s| p.check_symbol(s.meta.key.symbol())),
                other => p.check_every_symbol(&format!("the {other} table")),
            };
            checked
                .inspect_err(|e| self.engine.auth.note_forbidden(e))
                .map_err(super::dist::Remote::error)?;
        }
        if self.name == "series"
            && let Some(shard) =
                super::dist::shard_series(&self.engine, state.config(), projection)?
        {
            return Ok(shard);
        }
        let batch = self.batch()?;
        let mem = MemTable::try_new(Arc::clone(&self.schema), vec![vec![batch]])?;
        mem.scan(state, projection, filters, limit).await
    }
}

/// The `fastk.public` schema: every table, bound to one engine; or a snapshot's
/// schema (`fastk."<snapshot>"`): the same tables, the data tables reading the series
/// as the snapshot holds them (the catalog tables are the registry now).
#[derive(Debug)]
pub struct PublicSchema {
    tables: HashMap<&'static str, Arc<dyn TableProvider>>,
}

impl PublicSchema {
    pub fn new(engine: &Arc<Engine>, at: Option<&str>) -> PublicSchema {
        let mut tables: HashMap<&'static str, Arc<dyn TableProvider>> = HashMap::new();
        for t in DATA_TABLES {
            tables.insert(
                t.name(),
                Arc::new(DataTableProvider::new(
                    t,
                    Arc::clone(engine),
                    at.map(str::to_string),
                )),
            );
        }
        for name in &TABLE_NAMES[DATA_TABLES.len()..] {
            if let Some(t) = CatalogTable::new(name, Arc::clone(engine)) {
                tables.insert(name, Arc::new(t));
            }
        }
        PublicSchema { tables }
    }
}

#[async_trait]
impl SchemaProvider for PublicSchema {
    fn table_names(&self) -> Vec<String> {
        TABLE_NAMES.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.tables.get(name).cloned())
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }
}

/// The schema of any table by name (for Flight SQL GetTables).
pub fn table_schema(name: &str) -> Option<SchemaRef> {
    DATA_TABLES
        .iter()
        .find(|t| t.name() == name)
        .map(|t| t.schema())
        .or_else(|| catalog_schema(name))
}
