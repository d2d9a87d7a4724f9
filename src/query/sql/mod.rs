//! SQL over the store on Apache DataFusion (docs/sql.md).
//!
//! - [`tables`]: the tables of catalog `fastk`, schema `public`, bound to one engine.
//! - [`scan`]: the table scan, the store's range / latest-N / predicate reads as a plan
//!   node, with its pruning figures.
//! - [`filters`]: which WHERE conjuncts the store answers exactly.
//! - [`pool`]: per-query and total memory limits.
//! - [`guard`]: the query's shape (operators, depth, expressions) bounded before
//!   DataFusion sees it, and the big-stack thread it is planned on.
//! - [`placeholders`]: `?` parameters (ADBC's and JDBC's style) numbered as `$1`, ...
//! - [`funcs`]: functions that make more than they read, bounded before they run.
//! - [`watch`]: the process-wide memory guard that refuses and cancels queries.
//! - [`asof`]: the table functions `asof(...)` and `latest(...)`, the native cross
//!   section as a table.
//!
//! Every query runs in a session of its own over the shared tables, holds one of
//! `sql.max_concurrent_queries` permits from planning until its stream is dropped,
//! and ends with a clear error when it outgrows `sql.memory_per_query_bytes`, the
//! shared `sql.memory_total_bytes`, `sql.max_function_output_bytes` or
//! `sql.query_timeout_s`, or when the process passes `sql.process_memory_limit_bytes`
//! while it holds the most memory. SQL is read-only: DDL, DML and statements such as
//! SET are refused at planning.

pub mod asof;
pub mod dist;
pub mod filters;
pub mod funcs;
pub mod guard;
pub mod placeholders;
pub mod pool;
pub mod scan;
pub mod stats;
pub mod tables;
pub mod watch;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::Tokenizer;
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Principal;
use crate::config::SqlConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::query::Engine;
pub use scan::{ScanExec, ScanSummary};

/// The catalog and schema every table lives in.
pub const CATALOG: &str = "fastk";
pub const SCHEMA: &str = "public";

/// What all queries share: admission permits and the memory budget.
#[derive(Debug)]
pub struct SqlState {
    permits: Arc<Semaphore>,
    memory: Arc<pool::Total>,
    /// Running queries, for the process-wide memory guard ([`watch`]).
    pub running: Arc<watch::Running>,
}

impl SqlState {
    pub fn new(cfg: &SqlConfig) -> SqlState {
        SqlState {
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_queries)),
            memory: pool::Total::new(cfg.memory_total_bytes),
            running: watch::Running::new(watch::resolve_limit(cfg.process_memory_limit_bytes)),
        }
    }

    /// Bytes held by running queries' operators.
    pub fn memory_used(&self) -> usize {
        self.memory.used()
    }

    /// Queries running now.
    pub fn running(&self, cfg: &SqlConfig) -> usize {
        cfg.max_concurrent_queries
            .saturating_sub(self.permits.available_permits())
    }
}

/// A query's session: the tables over `engine`, its own memory pool (returned too, for
/// the memory guard), no spilling, and the functions of [`funcs::CAPPED`] bounded.
pub fn session(
    engine: &Arc<Engine>,
    principal: &Principal,
) -> Result<(SessionContext, Arc<pool::QueryPool>)> {
    let cfg = &engine.config.sql;
    let (runtime, pool) = runtime(engine).map_err(df_error)?;
    let shared: Arc<dyn MemoryPool> = Arc::clone(&pool) as Arc<dyn MemoryPool>;
    let partitions = match cfg.target_partitions {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .with_target_partitions(partitions)
        .with_extension(Arc::new(principal.clone()));
    let builder = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features();
    let state = dist::coordinator(builder, engine, principal.bearer())
        .map_err(df_error)?
        .build();
    let ctx = SessionContext::new_with_state(state);
    let catalog = FastkCatalog {
        engine: Arc::clone(engine),
        public: Arc::new(tables::PublicSchema::new(engine, None)),
    };
    ctx.register_catalog(CATALOG, Arc::new(catalog));
    funcs::install(&ctx, &shared, cfg.function_output_cap());
    asof::install(&ctx, engine);
    Ok((ctx, pool))
}

/// A query's runtime: its own memory pool under the budget all queries share, and no
/// spilling. The pool is returned too (for the memory guard and the capped functions).
pub fn runtime(
    engine: &Arc<Engine>,
) -> std::result::Result<(Arc<RuntimeEnv>, Arc<pool::QueryPool>), DataFusionError> {
    let cfg = &engine.config.sql;
    let pool = Arc::new(pool::QueryPool::new(
        cfg.memory_per_query_bytes,
        Arc::clone(&engine.sql.memory),
    ));
    let shared: Arc<dyn MemoryPool> = Arc::clone(&pool) as Arc<dyn MemoryPool>;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(shared)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()?;
    Ok((runtime, pool))
}

/// The catalog `fastk`: the schema `public` (the series now) and one schema per named
/// snapshot, with the same tables (docs/research.md), looked up as a query names it.
#[derive(Debug)]
struct FastkCatalog {
    engine: Arc<Engine>,
    public: Arc<tables::PublicSchema>,
}

impl CatalogProvider for FastkCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = vec![SCHEMA.to_string()];
        names.extend(self.engine.list_snapshots().into_iter().map(|s| s.name));
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SCHEMA {
            return Some(Arc::clone(&self.public) as Arc<dyn SchemaProvider>);
        }
        self.engine.store.snapshot_named(name).ok()?;
        Some(Arc::new(tables::PublicSchema::new(
            &self.engine,
            Some(name),
        )))
    }
}

/// Read-only: no DDL, no DML, no SET or transactions.
fn options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// An engine error for a DataFusion one. Planning and evaluation errors are the
/// client's (400 with the engine's message); limits are 413; storage errors keep
/// their own kind.
pub fn df_error(e: DataFusionError) -> Error {
    let root = e.find_root();
    match root {
        DataFusionError::External(inner) => {
            if let Some(ours) = inner.downcast_ref::<Error>() {
                return ours.clone();
            }
            if let Some(remote) = inner.downcast_ref::<dist::Remote>() {
                return remote.0.clone();
            }
            if let Some(status) = inner.downcast_ref::<tonic::Status>() {
                return dist::status_error(status);
            }
            // An error a worker raised, arrived as text with its kind.
            if let Some(ours) = dist::Remote::parse(&inner.to_string()) {
                return ours;
            }
            Error::invalid(root.strip_backtrace())
        }
        DataFusionError::ResourcesExhausted(m) => Error::new(
            ErrorKind::PayloadTooLarge,
            format!("the query ran out of memory: {m}"),
        ),
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => Error::internal(root),
        DataFusionError::ExecutionJoin(_) => Error::internal(root),
        _ => {
            let m = root.strip_backtrace();
            let ro = m.contains("not supported")
                && (m.contains("DDL") || m.contains("DML") || m.contains("Statement"));
            if ro {
                Error::invalid(format!(
                    "{m}; SQL is read-only: write with POST /v1/kline/{{symbol}}/{{timeframe}}/records, \
                     POST /v1/scalar/.../records or Flight DoPut, register series with POST /v1/kline or /v1/scalar"
                ))
            } else {
                Error::invalid(m)
            }
        }
    }
}

/// A planned query holding its admission permit; see [`plan`].
pub struct Planned {
    pub schema: SchemaRef,
    plan: Arc<dyn ExecutionPlan>,
    ctx: SessionContext,
    permit: OwnedSemaphorePermit,
    ticket: watch::Ticket,
    deadline: Instant,
    timeout: Duration,
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned")
            .field("schema", &self.schema)
            .finish()
    }
}

fn timed_out(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::PayloadTooLarge,
        format!(
            "the query ran longer than sql.query_timeout_s ({} s) and was cancelled; \
             narrow it with WHERE on symbol and ts, or add a LIMIT",
            timeout.as_secs()
        ),
    )
}

/// Plans `query` with positional `params` ($1, $2, ...): admission, parsing, the
/// shape's limits, logical and physical planning, all on a planner thread
/// ([`guard::on_planner`]) and within the query timeout.
pub async fn plan(engine: &Arc<Engine>, query: &str, params: Vec<ScalarValue>) -> Result<Planned> {
    plan_as(engine, &Principal::anonymous(), query, params).await
}

/// [`plan`] for `principal`: a scan of a series whose symbol is outside its patterns
/// refuses the query (`forbidden`) rather than leave rows out.
pub async fn plan_as(
    engine: &Arc<Engine>,
    principal: &Principal,
    query: &str,
    params: Vec<ScalarValue>,
) -> Result<Planned> {
    let cfg = &engine.config.sql;
    check_text(cfg, query)?;
    let permit = admit(engine)?;
    let timeout = Duration::from_secs(cfg.query_timeout_s);
    let deadline = Instant::now() + timeout;
    let (ctx, pool) = session(engine, principal)?;
    let ticket = engine.sql.running.admit(pool).map_err(|resident| {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "the server holds {resident} bytes of memory, more than \
                 sql.process_memory_limit_bytes ({}); queries are refused until it is back under; retry shortly",
                engine.sql.running.limit()
            ),
        )
    })?;
    let handle = tokio::runtime::Handle::current();
    let (sql, planning_ctx, cfg_owned) = (query.to_owned(), ctx.clone(), cfg.clone());
    // The permit rides with the planner thread, so a planning that outlives its
    // timeout still counts against sql.max_concurrent_queries until it ends.
    let work = guard::on_planner(move || {
        let plan = handle.block_on(async move {
            let logical = logical_plan(&planning_ctx, &cfg_owned, &sql).await?;
            if let Some(explained) = dist::explain(&planning_ctx, &logical)
                .await
                .map_err(df_error)?
            {
                return cooperative(explained);
            }
            let mut df = planning_ctx
                .execute_logical_plan(logical)
                .await
                .map_err(df_error)?;
            if !params.is_empty() {
                df = df.with_param_values(params).map_err(df_error)?;
            }
            let plan = df.create_physical_plan().await.map_err(df_error)?;
            cooperative(plan)
        });
        (plan, permit)
    });
    let (plan, permit) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| timed_out(timeout))??;
    // The physical plan's schema is what the batches carry (and what Flight SQL
    // announces), so it is the answer's schema.
    let plan = plan?;
    Ok(Planned {
        schema: plan.schema(),
        plan,
        ctx,
        permit,
        ticket,
        deadline,
        timeout,
    })
}

/// One of `sql.max_concurrent_queries` permits, or 503.
fn admit(engine: &Arc<Engine>) -> Result<OwnedSemaphorePermit> {
    let cfg = &engine.config.sql;
    Arc::clone(&engine.sql.permits)
        .try_acquire_owned()
        .map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "sql.max_concurrent_queries ({}) queries are running; retry shortly",
                    cfg.max_concurrent_queries
                ),
            )
        })
}

/// The read-only logical plan of `sql` in `ctx`, through the gates of [`guard`]; a query
/// with a long literal gets smaller batches ([`guard::Shape::batch_rows`]). Runs on a
/// planner thread.
async fn logical_plan(
    ctx: &SessionContext,
    cfg: &SqlConfig,
    sql: &str,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let (statement, shape) = parse_checked(cfg, sql)?;
    let rows = datafusion::common::config::ConfigNonZeroUsize::try_new(
        shape.batch_rows(cfg.function_output_cap()),
    )
    .map_err(df_error)?;
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .execution
        .batch_size = rows;
    let logical = ctx
        .state()
        .statement_to_plan(statement)
        .await
        .map_err(df_error)?;
    options().verify_plan(&logical).map_err(df_error)?;
    Ok(logical)
}

/// Tokenizes, counts the operators (gate 1 of [`guard`]), parses (gate 2) and checks
/// the shape (gate 3) of one statement. Runs on a planner thread: a refused tree is
/// dropped there.
fn parse_checked(cfg: &SqlConfig, sql: &str) -> Result<(DfStatement, guard::Shape)> {
    let dialect = GenericDialect {};
    let mut tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| Error::invalid(format!("SQL error: {e}")))?;
    guard::count_operators(cfg, &tokens)?;
    placeholders::positional(&mut tokens)?;
    let mut statements = DFParserBuilder::new(tokens)
        .with_dialect(&dialect)
        .build()
        .map_err(df_error)?
        .parse_statements()
        .map_err(df_error)?;
    if statements.len() != 1 {
        return Err(Error::invalid(format!(
            "one SQL statement per query, this text has {}",
            statements.len()
        )));
    }
    let statement = statements.pop_front().expect("one statement");
    let shape = guard::check_shape(cfg, &statement)?;
    Ok((statement, shape))
}

/// Wraps every node of `plan` so it yields to the runtime after a budget of batches.
/// Without it an operator that makes batches in a tight loop (a cross join under an
/// aggregate) would never return to the scheduler, so neither the query timeout nor
/// a dropped client could stop it.
fn cooperative(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::coop::CooperativeExec;
    plan.transform_up(|node| {
        if node.downcast_ref::<CooperativeExec>().is_some() {
            return Ok(Transformed::no(node));
        }
        let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
        Ok(Transformed::yes(wrapped))
    })
    .map(|t| t.data)
    .map_err(df_error)
}

fn check_text(cfg: &SqlConfig, query: &str) -> Result<()> {
    if query.len() > cfg.max_query_bytes {
        return Err(Error::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the query text is {} bytes; sql.max_query_bytes is {}",
                query.len(),
                cfg.max_query_bytes
            ),
        ));
    }
    if query.trim().is_empty() {
        return Err(Error::invalid("the query is empty"));
    }
    Ok(())
}

/// The result schema and the parameter types of `query`, without running it (Flight
/// SQL prepared statements). Parameters are named `$1`, `$2`, ...; an unknown type is
/// `Null`.
pub async fn describe(engine: &Arc<Engine>, query: &str) -> Result<(SchemaRef, SchemaRef)> {
    check_text(&engine.config.sql, query)?;
    let permit = admit(engine)?;
    let (ctx, _pool) = session(engine, &Principal::anonymous())?;
    let handle = tokio::runtime::Handle::current();
    let (sql, cfg) = (query.to_owned(), engine.config.sql.clone());
    let timeout = Duration::from_secs(cfg.query_timeout_s);
    let work = guard::on_planner(move || {
        let _permit = permit;
        handle.block_on(async move {
            let logical = logical_plan(&ctx, &cfg, &sql).await?;
            let schema: SchemaRef = Arc::new(logical.schema().as_arrow().clone());
            let types = logical.get_parameter_types().map_err(df_error)?;
            Ok::<_, Error>((schema, types))
        })
    });
    let (schema, types) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| timed_out(timeout))???;
    let mut names: Vec<&String> = types.keys().collect();
    names.sort_by_key(|n| {
        n.trim_start_matches('$')
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    let fields: Vec<Field> = names
        .into_iter()
        .map(|n| {
            let dt = types[n].clone().unwrap_or(DataType::Null);
            Field::new(n.as_str(), dt, true)
        })
        .collect();
    Ok((schema, Arc::new(Schema::new(fields))))
}

impl Planned {
    /// Runs the plan: batches as they are produced, ending in an error at the deadline.
    /// Dropping the stream cancels the query and frees its permit and memory.
    pub fn execute(self) -> Result<SqlStream> {
        let inner =
            execute_stream(Arc::clone(&self.plan), self.ctx.task_ctx()).map_err(df_error)?;
        let cluster = self
            .ctx
            .state()
            .config()
            .get_extension::<crate::cluster::Cluster>();
        let engine = self.ctx.state().config().get_extension::<Engine>();
        Ok(SqlStream {
            cluster,
            engine,
            schema: self.schema,
            inner,
            sleep: Box::pin(tokio::time::sleep_until(self.deadline.into())),
            timeout: self.timeout,
            plan: self.plan,
            done: false,
            _permit: self.permit,
            ticket: self.ticket,
            pending: None,
        })
    }
}

/// The scans' figures of an executed plan, summed.
pub fn plan_stats(plan: &Arc<dyn ExecutionPlan>) -> ScanSummary {
    let mut out = ScanSummary {
        index_used: "none".into(),
        ..ScanSummary::default()
    };
    let mut stack = vec![Arc::clone(plan)];
    while let Some(p) = stack.pop() {
        if let Some(scan) = p.downcast_ref::<ScanExec>() {
            out.add(&scan.stats.summary());
        }
        stack.extend(p.children().into_iter().cloned());
    }
    out
}

/// A running query's batches.
pub struct SqlStream {
    pub schema: SchemaRef,
    inner: SendableRecordBatchStream,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    plan: Arc<dyn ExecutionPlan>,
    done: bool,
    _permit: OwnedSemaphorePermit,
    ticket: watch::Ticket,
    /// The shard map of a distributed query, to name a node that did not answer.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Its engine, to note that node as unreachable (its replicas take its tasks).
    engine: Option<Arc<Engine>>,
    /// The first item, when [`run_as`] has already taken it from `inner`.
    pending: Option<Result<RecordBatch>>,
}

impl SqlStream {
    /// What the scans did so far (complete once the stream has ended).
    pub fn stats(&self) -> ScanSummary {
        plan_stats(&self.plan)
    }
}

impl Stream for SqlStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.pending.take() {
            return Poll::Ready(Some(first));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(timed_out(self.timeout))));
        }
        if self.ticket.entry.poll_cancelled(cx.waker()) {
            self.done = true;
            return Poll::Ready(Some(Err(Error::new(
                ErrorKind::PayloadTooLarge,
                "the query was cancelled: the server's memory passed \
                 sql.process_memory_limit_bytes and this query held the most of it; \
                 narrow it with WHERE on symbol and ts, aggregate more, or add a LIMIT",
            ))));
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                let e =
                    dist::name_nodes(self.cluster.as_deref(), self.engine.as_deref(), df_error(e));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            other => other.map(|o| o.map(|r| r.map_err(df_error))),
        }
    }
}

/// Plans and runs `query` as [`plan_as`] and [`Planned::execute`] do, holding back
/// its first item. When a distributed query's first item is the error that a node did
/// not answer, and the shard map lists a replica of that node other than the one that
/// failed, the query is planned and run once more: the failure marked the node unreachable, so
/// this time its tasks go to the replica. Nothing was sent yet and SQL only reads, so
/// the second run repeats and loses nothing. At most one retry; the second run has
/// its own `sql.query_timeout_s`.
pub async fn run_as(
    engine: &Arc<Engine>,
    principal: &Principal,
    query: &str,
    params: Vec<ScalarValue>,
) -> Result<SqlStream> {
    let mut stream = plan_as(engine, principal, query, params.clone())
        .await?
        .execute()?;
    let first = stream.next().await;
    if let Some(Err(e)) = &first
        && let Some(cluster) = stream.cluster.as_deref()
        && dist::replica_can_answer(cluster, e)
    {
        engine
            .metrics
            .sql_replica_retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(stream);
        stream = plan_as(engine, principal, query, params).await?.execute()?;
        let again = stream.next().await;
        stream.pending = again;
        return Ok(stream);
    }
    stream.pending = first;
    Ok(stream)
}

/// A whole answer in memory (HTTP JSON and tests).
#[derive(Debug)]
pub struct SqlAnswer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub stats: ScanSummary,
}

impl SqlAnswer {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Runs `query` to the end, refusing answers over `max_rows` rows (the stream is
/// dropped, cancelling the query, as soon as the limit is passed).
pub async fn collect(
    engine: &Arc<Engine>,
    query: &str,
    params: Vec<ScalarValue>,
    max_rows: Option<usize>,
) -> Result<SqlAnswer> {
    collect_as(engine, &Principal::anonymous(), query, params, max_rows).await
}

/// [`collect`] for `principal` (see [`plan_as`]).
pub async fn collect_as(
    engine: &Arc<Engine>,
    principal: &Principal,
    query: &str,
    params: Vec<ScalarValue>,
    max_rows: Option<usize>,
) -> Result<SqlAnswer> {
    let mut stream = run_as(engine, principal, query, params).await?;
    let mut batches = Vec::new();
    let mut rows = 0usize;
    while let Some(b) = stream.next().await {
        let b = b?;
        rows += b.num_rows();
        if let Some(max) = max_rows
            && rows > max
        {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "the answer has more than {max} rows (http.max_limit), too many for JSON; \
                     add a LIMIT, or ask for Arrow (Accept: application/vnd.apache.arrow.stream) \
                     or use Flight SQL, which stream any size"
                ),
            ));
        }
        batches.push(b);
    }
    Ok(SqlAnswer {
        schema: Arc::clone(&stream.schema),
        stats: stream.stats(),
        batches,
    })
}
