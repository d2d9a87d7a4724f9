//! [`ShardScanExec`] across the network: the scan's spec (table, snapshot, projection,
//! pushed filters as DataFusion protobuf expressions, limit) and its split, as a small
//! JSON document inside the engine's plan message.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::Serializeable;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use super::exec::{ShardScanExec, What};
use crate::query::Engine;
use crate::query::sql::asof::{Call, CallWire};
use crate::query::sql::tables::{DataTable, ScanSpec, catalog_schema};

/// The version of [`Wire`]: a node refuses a scan of another version by name.
/// Version 2 added `cross`.
const WIRE_VERSION: u32 = 2;
/// Most bytes of one encoded scan a node decodes.
const WIRE_MAX_BYTES: usize = 16 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    version: u32,
    table: String,
    at: Option<String>,
    projection: Vec<usize>,
    /// Each pushed filter, DataFusion protobuf, base64.
    filters: Vec<String>,
    limit: Option<usize>,
    owners: Vec<String>,
    node: Option<String>,
    empty: bool,
    partitions: usize,
    /// A cross section's call (`table` is then its table).
    cross: Option<CallWire>,
}

/// The codec of FastK's plan nodes, on the node that plans and on the workers.
#[derive(Debug)]
pub struct FastkCodec {
    engine: Arc<Engine>,
}

impl FastkCodec {
    pub fn new(engine: &Arc<Engine>) -> FastkCodec {
        FastkCodec {
            engine: Arc::clone(engine),
        }
    }
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl PhysicalExtensionCodec for FastkCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return internal_err!("a FastkShardScan has no inputs, got {}", inputs.len());
        }
        if buf.len() > WIRE_MAX_BYTES {
            return internal_err!("a FastkShardScan of {} bytes is over the limit", buf.len());
        }
        let w: Wire = serde_json::from_slice(buf).map_err(external)?;
        if w.version != WIRE_VERSION {
            return internal_err!(
                "a FastkShardScan of wire version {} reached a node that reads version \
                 {WIRE_VERSION}: run the same FastK version on every node",
                w.version
            );
        }
        let what = if let Some(call) = w.cross {
            let call = Call::from_wire(call).map_err(external)?;
            let ncols = call.table().columns().len();
            if w.projection.iter().any(|&i| i >= ncols) {
                return internal_err!("a FastkShardScan projects a column past the table's");
            }
            What::Cross(call, w.projection)
        } else if w.table == "series" {
            let ncols = catalog_schema("series").map_or(0, |s| s.fields().len());
            if w.projection.iter().any(|&i| i >= ncols) {
                return internal_err!("a FastkShardScan projects a column past the table's");
            }
            What::Series(w.projection)
        } else {
            let Some(table) = DataTable::named(&w.table) else {
                return internal_err!("a FastkShardScan of unknown table {:?}", w.table);
            };
            let ncols = table.columns().len();
            if w.projection.iter().any(|&i| i >= ncols) {
                return internal_err!("a FastkShardScan projects a column past the table's");
            }
            let filters = w
                .filters
                .iter()
                .map(|f| {
                    let bytes = STANDARD.decode(f).map_err(external)?;
                    Expr::from_bytes_with_ctx(&bytes, ctx)
                })
                .collect::<Result<Vec<_>>>()?;
            What::Data(ScanSpec {
                table,
                at: w.at,
                projection: w.projection,
                filters,
                limit: w.limit,
            })
        };
        Ok(Arc::new(ShardScanExec::variant(
            Arc::clone(&self.engine),
            what,
            w.owners,
            w.node,
            w.empty,
            w.partitions,
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(scan) = node.downcast_ref::<ShardScanExec>() else {
            return internal_err!("FastK's codec cannot encode {}", node.name());
        };
        let (table, at, projection, filters, limit) = match &scan.what {
            What::Data(spec) => (
                spec.table.name().to_string(),
                spec.at.clone(),
                spec.projection.clone(),
                spec.filters
                    .iter()
                    .map(|e| Ok(STANDARD.encode(e.to_bytes()?)))
                    .collect::<Result<Vec<_>>>()?,
                spec.limit,
            ),
            What::Series(projection) | What::Cross(_, projection) => (
                scan.table_name().to_string(),
                None,
                projection.clone(),
                Vec::new(),
                None,
            ),
        };
        let cross = match &scan.what {
            What::Cross(call, _) => Some(call.to_wire()),
            _ => None,
        };
        let w = Wire {
            version: WIRE_VERSION,
            table,
            at,
            projection,
            filters,
            limit,
            owners: scan.owners.clone(),
            node: scan.node.clone(),
            empty: scan.empty,
            partitions: scan.partitions,
            cross,
        };
        serde_json::to_writer(buf, &w).map_err(external)
    }
}
