//! `asof(...)` and `latest(...)`: the native cross section as SQL table functions.
//!
//! `SELECT * FROM asof('kline', '1h', TIMESTAMP '2024-03-01 00:00:00')` is one row per
//! kline 1h series: its last bar at or before that instant. It is read as the Flight
//! ticket `{"kind": "kline", "symbols": "*", "timeframe": "1h", "as_of": ...}` reads it
//! ([`ReadPlan`]: each snapshot's kept last row), not by scanning every series' rows,
//! so it costs what the ticket costs. `latest('kline', '1h')` is the last row of every
//! series. The rows carry the columns of the table named by the first argument, so a
//! query filters, joins and aggregates them as it would that table. Scalar tables take
//! the category and name after the instant: `asof('scalar', '1d', TIMESTAMP '...',
//! 'factor', 'momentum')`, `latest('scalar', '1d', 'factor', 'momentum')`. An optional
//! last argument names a snapshot: the cross section of the series as it holds them
//! (`asof('kline', '1h', TIMESTAMP '...', 'fri-2026-11-20')`).
//!
//! The arguments are constants (literals, casts, `now()`, arithmetic on them), read
//! when the query is planned, with the series and the token's rights; the rows are read
//! when the plan runs, so planning alone (a Flight SQL GetFlightInfo) reads none. At most
//! `flight.max_series_per_ticket` series, as for the ticket; a token limited to some
//! symbols is refused if any selected series is outside them, as a scan is.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Int32Type, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{ColumnarValue, Expr};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::prelude::SessionContext;

use super::tables::{ColRole, DATA_TABLES, DataTable};
use crate::auth::Principal;
use crate::error::Error;
use crate::query::Engine;
use crate::query::market::spec::{AsOf, Symbols};
use crate::query::market::{ReadArgs, ReadSpec, Selection};
use crate::query::stream::{ReadCommand, ReadPlan, Target};
use crate::record::{SeriesKind, SeriesMeta};
use crate::storage::batch::PriceFormat;

/// The two functions: a cross section at an instant, or at the last row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    AsOf,
    Latest,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::AsOf => "asof",
            Which::Latest => "latest",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Which::AsOf => {
                "asof('kline' | 'kline_raw', timeframe, instant [, snapshot]) or \
                 asof('scalar' | 'scalar_i64', timeframe, instant, category, name [, snapshot])"
            }
            Which::Latest => {
                "latest('kline' | 'kline_raw', timeframe [, snapshot]) or \
                 latest('scalar' | 'scalar_i64', timeframe, category, name [, snapshot])"
            }
        }
    }
}

/// One of the table functions, over an engine.
#[derive(Debug)]
pub struct CrossSection {
    which: Which,
    engine: Arc<Engine>,
}

/// Registers `asof` and `latest` in a query's session.
pub fn install(ctx: &SessionContext, engine: &Arc<Engine>) {
    for which in [Which::AsOf, Which::Latest] {
        ctx.register_udtf(
            which.name(),
            Arc::new(CrossSection {
                which,
                engine: Arc::clone(engine),
            }),
        );
    }
}

/// A call's arguments, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    table: DataTable,
    timeframe: String,
    /// The instant in milliseconds since the epoch (`asof`); `None` is `latest`.
    at: Option<i64>,
    /// Scalar tables: category and name.
    scalar: Option<(String, String)>,
    /// The snapshot whose series are read (`None`: the series now).
    snapshot: Option<String>,
}

impl TableFunctionImpl for CrossSection {
    /// Checks the arguments; the series are selected when the plan scans the table,
    /// and read when it runs.
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let values = args
            .exprs()
            .iter()
            .map(|e| constant(args.session(), e, self.which))
            .collect::<Result<Vec<_>>>()?;
        let call = Call::parse(self.which, &values).map_err(external)?;
        Ok(Arc::new(CrossSectionTable {
            schema: call.table.schema(),
            call,
            engine: Arc::clone(&self.engine),
        }))
    }
}

/// One call's rows, as a table with the columns of the table it names.
#[derive(Debug)]
struct CrossSectionTable {
    call: Call,
    schema: SchemaRef,
    engine: Arc<Engine>,
}

#[async_trait]
impl TableProvider for CrossSectionTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    /// Selects the series and checks the token's symbols (planning); the rows are read
    /// when the plan runs, so a Flight SQL GetFlightInfo, which plans to learn the
    /// schema, reads none of them.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(plan) =
            super::dist::shard_cross(&self.engine, state.config(), &self.call, projection)?
        {
            return Ok(plan);
        }
        let principal = state.config().get_extension::<Principal>();
        let selected = self
            .call
            .select(&self.engine, principal.as_deref(), None)
            .map_err(external)?;
        let part = Rows {
            call: self.call.clone(),
            schema: Arc::clone(&self.schema),
            engine: Arc::clone(&self.engine),
            selected: Arc::new(selected),
        };
        let exec = StreamingTableExec::try_new(
            Arc::clone(&self.schema),
            vec![Arc::new(part)],
            projection,
            Vec::<LexOrdering>::new(),
            false,
            limit,
        )?;
        Ok(Arc::new(exec))
    }
}

/// A call as it travels to another node's worker (distributed SQL).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CallWire {
    table: String,
    timeframe: String,
    at: Option<i64>,
    scalar: Option<(String, String)>,
    snapshot: Option<String>,
}

impl Call {
    pub fn to_wire(&self) -> CallWire {
        CallWire {
            table: self.table.name().to_string(),
            timeframe: self.timeframe.clone(),
            at: self.at,
            scalar: self.scalar.clone(),
            snapshot: self.snapshot.clone(),
        }
    }

    /// The call another node sent, checked as its arguments were where it was asked.
    pub fn from_wire(w: CallWire) -> crate::error::Result<Call> {
        let table = DataTable::named(&w.table)
            .ok_or_else(|| Error::invalid(format!("no table {:?}", w.table)))?;
        crate::record::Name::parse("timeframe", &w.timeframe)?;
        if w.scalar.is_some() != (table.kind() == SeriesKind::Scalar) {
            return Err(Error::invalid(
                "a cross section of a scalar table names a category and a name, and only it",
            ));
        }
        Ok(Call {
            table,
            timeframe: w.timeframe,
            at: w.at,
            scalar: w.scalar,
            snapshot: w.snapshot,
        })
    }

    /// The table whose columns the call's rows have.
    pub fn table(&self) -> DataTable {
        self.table
    }

    /// "asof(kline, 1h)", for plans.
    pub fn describe(&self) -> String {
        let f = if self.at.is_some() { "asof" } else { "latest" };
        format!("{f}({}, {})", self.table.name(), self.timeframe)
    }

    /// The cross section of the series this node holds whose symbols `keep` takes, in
    /// the columns of the call's table (a distributed query's share on one owner).
    pub fn rows_of(
        &self,
        engine: &Engine,
        principal: Option<&Principal>,
        keep: &dyn Fn(&str) -> bool,
    ) -> crate::error::Result<RecordBatch> {
        let selected = self.select(engine, principal, Some(keep))?;
        self.rows(engine, &selected)
    }
}

/// A call's series, selected and checked at planning.
struct Selected {
    plan: ReadPlan,
    /// False when the series are of the other value type than the call's table.
    belongs: bool,
}

/// The one partition of a call's scan: reads the cross section when executed.
struct Rows {
    call: Call,
    schema: SchemaRef,
    engine: Arc<Engine>,
    selected: Arc<Selected>,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("call", &self.call)
            .field("series", &self.selected.plan.series.len())
            .finish()
    }
}

impl PartitionStream for Rows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (call, engine, selected) = (
            self.call.clone(),
            Arc::clone(&self.engine),
            Arc::clone(&self.selected),
        );
        let once =
            futures::stream::once(async move { call.rows(&engine, &selected).map_err(external) });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            once,
        ))
    }
}

fn external(e: Error) -> DataFusionError {
    super::dist::Remote::error(e)
}

/// The value of a constant argument (a literal, a cast, `now()`, arithmetic on them).
fn constant(session: &dyn Session, e: &Expr, which: Which) -> Result<ScalarValue> {
    let refuse = |why: String| {
        external(Error::invalid(format!(
            "{}: every argument must be a constant ({why}); usage: {}",
            which.name(),
            which.usage()
        )))
    };
    let phys = session
        .create_physical_expr(e.clone(), &DFSchema::empty())
        .map_err(|err| refuse(err.strip_backtrace()))?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match phys
        .evaluate(&one_row)
        .map_err(|err| refuse(err.strip_backtrace()))?
    {
        ColumnarValue::Scalar(v) => Ok(v),
        ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0),
    }
}

impl Call {
    fn parse(which: Which, v: &[ScalarValue]) -> crate::error::Result<Call> {
        let usage = || {
            Error::invalid(format!(
                "{}: expected {}; got {} arguments",
                which.name(),
                which.usage(),
                v.len()
            ))
        };
        let text = |i: usize, what: &str| -> crate::error::Result<String> {
            match v.get(i) {
                Some(ScalarValue::Utf8(Some(s)))
                | Some(ScalarValue::LargeUtf8(Some(s)))
                | Some(ScalarValue::Utf8View(Some(s))) => Ok(s.clone()),
                Some(other) => Err(Error::invalid(format!(
                    "{}: the {what} must be a string, got {other}; usage: {}",
                    which.name(),
                    which.usage()
                ))),
                None => Err(usage()),
            }
        };
        let name = text(0, "table name")?;
        let table = DATA_TABLES
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{}: no data table {name:?}: name kline, kline_raw, scalar or scalar_i64",
                    which.name()
                ))
            })?;
        let timeframe = text(1, "timeframe")?;
        let mut next = 2;
        let at = match which {
            Which::Latest => None,
            Which::AsOf => {
                next += 1;
                Some(instant_ms(v.get(2).ok_or_else(usage)?).ok_or_else(|| {
                    Error::invalid(format!(
                        "asof: the instant must be a timestamp (TIMESTAMP '2024-03-01 00:00:00'), \
                         an ISO 8601 string or milliseconds since the epoch, got {}",
                        v[2]
                    ))
                })?)
            }
        };
        let scalar = match table.kind() {
            SeriesKind::Kline => None,
            SeriesKind::Scalar => Some((text(next, "category")?, text(next + 1, "name")?)),
            SeriesKind::Trade | SeriesKind::Quote => {
                return Err(Error::invalid(
                    "asof: trade and quote tables have no cross section",
                ));
            }
        };
        let arity = next + if scalar.is_some() { 2 } else { 0 };
        let snapshot = match v.len() {
            n if n == arity => None,
            n if n == arity + 1 => Some(text(arity, "snapshot name")?),
            _ => return Err(usage()),
        };
        Ok(Call {
            table,
            timeframe,
            at,
            scalar,
            snapshot,
        })
    }

    /// The series of the cross section, checked against `principal`'s symbols: what
    /// planning needs (cheap; no row is read).
    fn select(
        &self,
        engine: &Engine,
        principal: Option<&Principal>,
        keep: Option<&dyn Fn(&str) -> bool>,
    ) -> crate::error::Result<Selected> {
        let spec = ReadSpec::new(ReadArgs {
            as_of: self.at.map(AsOf::Ts),
            latest: self.at.is_none().then_some(1),
            price_format: match self.table {
                DataTable::Kline => PriceFormat::Float64,
                _ => PriceFormat::Raw,
            },
            snapshot: self.snapshot.clone(),
            ..ReadArgs::default()
        })?;
        let mut selection = Selection {
            kind: self.table.kind(),
            timeframe: self.timeframe.clone(),
            scalar: self.scalar.clone(),
            symbols: Symbols::All("*".into()),
        };
        let mut plan = ReadPlan::new(
            engine,
            ReadCommand {
                target: Target::Many(selection.clone()),
                spec: spec.clone(),
                predicate: None,
            },
        )?;
        if let Some(keep) = keep {
            // The share of one owner: the series whose symbols the map gives it.
            let kept: Vec<String> = plan
                .series
                .iter()
                .map(|s| s.meta.key.symbol())
                .filter(|s| keep(s))
                .map(str::to_string)
                .collect();
            if kept.is_empty() {
                return Ok(Selected {
                    plan,
                    belongs: false,
                });
            }
            if kept.len() < plan.series.len() {
                selection.symbols = Symbols::List(kept);
                plan = ReadPlan::new(
                    engine,
                    ReadCommand {
                        target: Target::Many(selection),
                        spec,
                        predicate: None,
                    },
                )?;
            }
        }
        // A scalar table holds the series of one value type; the series of a selection
        // share one (the plan checked), so either all of them belong here or none.
        let wanted = self.table.value_type();
        let belongs = plan
            .series
            .first()
            .is_none_or(|s| wanted.is_none_or(|vt| s.meta.value_type == vt));
        if let Some(p) = principal.filter(|_| belongs) {
            for s in &plan.series {
                p.check_symbol(s.meta.key.symbol())
                    .inspect_err(|e| engine.auth.note_forbidden(e))?;
            }
        }
        Ok(Selected { plan, belongs })
    }

    /// The cross section of `selected`, in the columns of the call's table.
    fn rows(&self, engine: &Engine, selected: &Selected) -> crate::error::Result<RecordBatch> {
        let plan = &selected.plan;
        if !selected.belongs || plan.series.is_empty() {
            return Ok(RecordBatch::new_empty(self.table.schema()));
        }
        let mut batches = Vec::new();
        let max_rows = engine.config.flight.max_batch_rows;
        plan.produce(engine, max_rows, &mut |b| {
            batches.push(b);
            true
        })?;
        let rows = concat_batches(&plan.schema, &batches).map_err(Error::internal)?;
        let metas: Vec<&SeriesMeta> = plan.series.iter().map(|s| s.meta.as_ref()).collect();
        self.shape(&rows, &metas)
    }

    /// The stream's columns (`symbol` as a dictionary, then the series' columns) as the
    /// call's table has them: key columns as strings, scales per row.
    fn shape(
        &self,
        rows: &RecordBatch,
        metas: &[&SeriesMeta],
    ) -> crate::error::Result<RecordBatch> {
        let n = rows.num_rows();
        let schema = self.table.schema();
        if n == 0 {
            return Ok(RecordBatch::new_empty(schema));
        }
        let symbols = rows.column(0).as_dictionary::<Int32Type>();
        let owner = |i: usize| metas[symbols.keys().value(i) as usize];
        let repeat = |s: &str| -> ArrayRef { Arc::new(StringArray::from(vec![s; n])) };
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for role in self.table.columns() {
            cols.push(match role {
                ColRole::Key(0) => {
                    cast(rows.column(0), &DataType::Utf8).map_err(Error::internal)?
                }
                ColRole::Key(1) => repeat(&self.timeframe),
                ColRole::Key(2) => repeat(&self.scalar.as_ref().expect("scalar table").0),
                ColRole::Key(_) => repeat(&self.scalar.as_ref().expect("scalar table").1),
                ColRole::Stored(c) => Arc::clone(rows.column(1 + c)),
                ColRole::PriceScale => Arc::new(Int64Array::from_iter_values(
                    (0..n).map(|i| owner(i).price_scale),
                )),
                ColRole::VolumeScale => Arc::new(Int64Array::from_iter_values(
                    (0..n).map(|i| owner(i).volume_scale),
                )),
            });
        }
        assert_eq!(
            cols.len(),
            schema.fields().len(),
            "one array per table column"
        );
        debug_assert!(
            cols.iter().all(|c| c.len() == n),
            "every column has every row"
        );
        RecordBatch::try_new(schema, cols).map_err(Error::internal)
    }
}

/// Milliseconds since the epoch of an instant argument: a timestamp of any unit (sub-
/// millisecond parts round down, so the bound still holds), an integer (milliseconds)
/// or a string in a format Arrow casts to a timestamp (ISO 8601).
fn instant_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1000),
        ScalarValue::TimestampMillisecond(Some(ms), _) => Some(*ms),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Some(us.div_euclid(1000)),
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(ns.div_euclid(1_000_000)),
        v if v.is_null() => None,
        v => match v.cast_to(&DataType::Timestamp(TimeUnit::Millisecond, None)) {
            Ok(ScalarValue::TimestampMillisecond(Some(ms), _)) => Some(ms),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(v.into()))
    }

    #[test]
    fn instants_of_every_unit_round_down_to_milliseconds() {
        let utc = Some(Arc::from("UTC"));
        assert_eq!(
            instant_ms(&ScalarValue::TimestampSecond(Some(2), None)),
            Some(2000)
        );
        assert_eq!(
            instant_ms(&ScalarValue::TimestampNanosecond(
                Some(1_999_999),
                utc.clone()
            )),
            Some(1)
        );
        assert_eq!(
            instant_ms(&ScalarValue::TimestampMicrosecond(Some(-1), utc)),
            Some(-1),
            "before the epoch, down is further back"
        );
        assert_eq!(
            instant_ms(&ScalarValue::Int64(Some(1_704_067_200_000))),
            Some(1_704_067_200_000)
        );
        assert_eq!(
            instant_ms(&s("2024-01-01T00:00:00Z")),
            Some(1_704_067_200_000)
        );
        assert_eq!(instant_ms(&ScalarValue::Int64(None)), None);
        assert_eq!(instant_ms(&s("not a time")), None);
    }

    #[test]
    fn arguments_are_checked_with_the_usage_in_the_message() {
        let at = ScalarValue::Int64(Some(5));
        let ok = Call::parse(Which::AsOf, &[s("kline"), s("1h"), at.clone()]).unwrap();
        assert_eq!(
            (ok.table, ok.at, ok.scalar),
            (DataTable::Kline, Some(5), None)
        );
        let sc = Call::parse(
            Which::Latest,
            &[s("scalar_i64"), s("1d"), s("factor"), s("mom")],
        )
        .unwrap();
        assert_eq!(sc.at, None);
        assert_eq!(sc.scalar, Some(("factor".into(), "mom".into())));
        assert_eq!(sc.snapshot, None);
        let pinned =
            Call::parse(Which::AsOf, &[s("kline"), s("1h"), at.clone(), s("fri")]).unwrap();
        assert_eq!(pinned.snapshot.as_deref(), Some("fri"));
        let pinned = Call::parse(
            Which::Latest,
            &[s("scalar"), s("1d"), s("factor"), s("mom"), s("fri")],
        )
        .unwrap();
        assert_eq!(
            (pinned.scalar, pinned.snapshot.as_deref()),
            (Some(("factor".into(), "mom".into())), Some("fri"))
        );
        for (which, bad, says) in [
            (Which::AsOf, vec![s("kline"), s("1h")], "asof('kline'"),
            (
                Which::AsOf,
                vec![s("kline"), s("1h"), at.clone(), s("x"), s("y")],
                "got 5 arguments",
            ),
            (
                Which::AsOf,
                vec![s("kline"), s("1h"), at.clone(), at.clone()],
                "snapshot name must be a string",
            ),
            (
                Which::AsOf,
                vec![s("klines"), s("1h"), at.clone()],
                "no data table",
            ),
            (
                Which::AsOf,
                vec![s("scalar"), s("1h"), at.clone()],
                "asof('scalar'",
            ),
            (
                Which::AsOf,
                vec![s("kline"), ScalarValue::Int64(Some(1)), at],
                "timeframe must be a string",
            ),
            (
                Which::AsOf,
                vec![s("kline"), s("1h"), s("yesterday")],
                "instant must be a timestamp",
            ),
            (
                Which::Latest,
                vec![s("kline"), s("1h"), s("x"), s("y")],
                "got 4 arguments",
            ),
        ] {
            let e = Call::parse(which, &bad).unwrap_err();
            assert!(e.message.contains(says), "{bad:?}: {}", e.message);
            assert_eq!(e.kind, crate::error::ErrorKind::InvalidArgument);
        }
    }
}
