//! The leaf of a distributed scan: a [`ScanSpec`] and the nodes whose series it reads.
//! Split by [`super::route::scale_up`] into one variant per owner; a variant runs on
//! its owner's worker and scans that owner's series only.

use std::fmt;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::EmptyRecordBatchStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use crate::auth::Principal;
use crate::cluster::Cluster;
use crate::query::Engine;
use crate::query::sql::ScanExec;
use crate::query::sql::asof::Call;
use crate::query::sql::tables::{CatalogTable, ScanSpec, catalog_schema, local_scan};
use datafusion::arrow::array::StringArray;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;

/// What a distributed scan reads.
#[derive(Debug, Clone)]
pub enum What {
    /// A data table.
    Data(ScanSpec),
    /// The catalog table `series`, these columns of it.
    Series(Vec<usize>),
    /// A cross section (`asof(...)` / `latest(...)`), these columns of its table.
    Cross(Call, Vec<usize>),
}

/// A scan whose series live on `owners`; a variant (`node` set) reads one of them.
#[derive(Debug)]
pub struct ShardScanExec {
    pub(super) engine: Arc<Engine>,
    pub(super) what: What,
    /// The nodes owning series the scan reads, in the shard map's order.
    pub(super) owners: Vec<String>,
    /// The node this variant reads and runs on (`None`: not split yet).
    pub(super) node: Option<String>,
    /// A variant that reads nothing: padding when the engine asks for more tasks than
    /// there are owners.
    pub(super) empty: bool,
    /// Output partitions, the same on every variant.
    pub(super) partitions: usize,
    props: Arc<PlanProperties>,
    local: OnceLock<Arc<ScanExec>>,
}

impl ShardScanExec {
    pub fn new(
        engine: Arc<Engine>,
        what: What,
        owners: Vec<String>,
        partitions: usize,
    ) -> Result<ShardScanExec> {
        ShardScanExec::variant(engine, what, owners, None, false, partitions)
    }

    pub(super) fn variant(
        engine: Arc<Engine>,
        what: What,
        owners: Vec<String>,
        node: Option<String>,
        empty: bool,
        partitions: usize,
    ) -> Result<ShardScanExec> {
        let schema: SchemaRef = match &what {
            What::Data(spec) => spec.schema()?,
            What::Series(projection) => Arc::new(
                catalog_schema("series")
                    .ok_or_else(|| DataFusionError::Internal("no series table".into()))?
                    .project(projection)?,
            ),
            What::Cross(call, projection) => Arc::new(call.table().schema().project(projection)?),
        };
        // At least two: a leaf of one partition under nothing that merges partitions
        // gets no network boundary from the engine, and would run unsplit here.
        let partitions = partitions.max(2);
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(ShardScanExec {
            engine,
            what,
            owners,
            node,
            empty,
            partitions,
            props: Arc::new(props),
            local: OnceLock::new(),
        })
    }

    /// The table it reads.
    pub fn table_name(&self) -> &'static str {
        match &self.what {
            What::Data(spec) => spec.table.name(),
            What::Series(_) => "series",
            What::Cross(call, _) => call.table().name(),
        }
    }

    /// This variant's scan of its node's series, built once on first execution.
    fn local(
        &self,
        spec: &ScanSpec,
        node: &str,
        cluster: &Cluster,
        ctx: &TaskContext,
    ) -> Result<Arc<ScanExec>> {
        if let Some(s) = self.local.get() {
            return Ok(Arc::clone(s));
        }
        let principal = ctx.session_config().get_extension::<Principal>();
        let keep = |symbol: &str| cluster.owner(symbol) == node;
        let scan = Arc::new(local_scan(
            &self.engine,
            spec,
            principal.as_deref(),
            Some(&keep),
            self.partitions,
        )?);
        Ok(Arc::clone(self.local.get_or_init(|| scan)))
    }
}

impl DisplayAs for ShardScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let spec = match &self.what {
            What::Data(spec) => spec,
            What::Cross(call, _) => {
                write!(f, "FastkShardScan: {}", call.describe())?;
                return match &self.node {
                    Some(n) if self.empty => write!(f, ", node={n} (no series)"),
                    Some(n) => write!(f, ", node={n}"),
                    None => write!(f, ", nodes=[{}]", self.owners.join(", ")),
                };
            }
            What::Series(_) => {
                write!(f, "FastkShardScan: table=series")?;
                return match &self.node {
                    Some(n) if self.empty => write!(f, ", node={n} (no series)"),
                    Some(n) => write!(f, ", node={n}"),
                    None => write!(f, ", nodes=[{}]", self.owners.join(", ")),
                };
            }
        };
        write!(f, "FastkShardScan: table={}", spec.table.name())?;
        match (&self.node, self.empty) {
            (Some(n), false) => write!(f, ", node={n}")?,
            (Some(n), true) => write!(f, ", node={n} (no series)")?,
            (None, _) => write!(f, ", nodes=[{}]", self.owners.join(", "))?,
        }
        let names: Vec<&str> = spec
            .projection
            .iter()
            .map(|&i| spec.table.columns()[i].name(spec.table))
            .collect();
        write!(f, ", projection=[{}]", names.join(", "))?;
        if !spec.filters.is_empty() {
            let shown: Vec<String> = spec.filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", filters=[{}]", shown.join(" AND "))?;
        }
        if let Some(l) = spec.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ShardScanExec {
    fn name(&self) -> &str {
        "FastkShardScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            return Ok(self);
        }
        exec_err!("FastkShardScan has no children")
    }

    /// Errors keep their kind on their way back to the planning node
    /// ([`super::Remote`]).
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = self.run(partition, context).map_err(super::Remote::carry)?;
        let schema = stream.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.map_err(super::Remote::carry),
        )))
    }
}

impl ShardScanExec {
    fn run(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let Some(node) = &self.node else {
            return exec_err!(
                "a distributed scan over nodes [{}] ran before it was split by node",
                self.owners.join(", ")
            );
        };
        let Some(cluster) = self.engine.cluster.get() else {
            return exec_err!("a scan of node {node}'s series reached a node without a shard map");
        };
        if !cluster.is_me(node) {
            return Err(DataFusionError::Execution(format!(
                "a scan of node {node}'s series ran on node {}: the shard maps of the two \
                 nodes differ",
                cluster.me()
            )));
        }
        if self.empty || partition >= self.partitions {
            return Ok(Box::pin(EmptyRecordBatchStream::new(schema)));
        }
        let spec = match &self.what {
            What::Data(spec) => spec,
            What::Series(projection) => {
                if partition > 0 {
                    return Ok(Box::pin(EmptyRecordBatchStream::new(schema)));
                }
                let keep = |symbol: &str| cluster.owner(symbol) == node.as_str();
                let batch = CatalogTable::series_batch(&self.engine, &keep)?;
                if let Some(p) = context.session_config().get_extension::<Principal>() {
                    let symbols = batch
                        .column(1)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| DataFusionError::Internal("series.symbol".into()))?;
                    for s in symbols.iter().flatten() {
                        p.check_symbol(s)
                            .inspect_err(|e| self.engine.auth.note_forbidden(e))
                            .map_err(super::Remote::error)?;
                    }
                }
                let batch = batch.project(projection)?;
                return Ok(Box::pin(MemoryStream::try_new(vec![batch], schema, None)?));
            }
            What::Cross(call, projection) => {
                if partition > 0 {
                    return Ok(Box::pin(EmptyRecordBatchStream::new(schema)));
                }
                // Read when polled, as the local cross section is.
                let principal = context.session_config().get_extension::<Principal>();
                let (call, projection, engine) =
                    (call.clone(), projection.clone(), Arc::clone(&self.engine));
                let (cluster, node) = (Arc::clone(&cluster), node.clone());
                let once = futures::stream::once(async move {
                    let keep = |symbol: &str| cluster.owner(symbol) == node.as_str();
                    let batch = call
                        .rows_of(&engine, principal.as_deref(), &keep)
                        .map_err(super::Remote::error)?;
                    Ok(batch.project(&projection)?)
                });
                return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, once)));
            }
        };
        let local = self.local(spec, node, &cluster, &context)?;
        if partition >= local.properties().partitioning.partition_count() {
            return Ok(Box::pin(EmptyRecordBatchStream::new(schema)));
        }
        local.execute(partition, context)
    }
}
