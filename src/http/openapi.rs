//! The OpenAPI 3.1 document: operations come from the `#[utoipa::path]` handlers the
//! router registers (so routes and document cannot diverge); this module adds the
//! top-level info, the bearer security scheme, the errors every operation shares and
//! examples for the shared schemas that are declared without one.
//!
//! The document is served at `/openapi.json` and committed as `openapi/openapi.json`;
//! `tests/openapi_drift.rs` fails when the two differ.

use serde_json::{Value, json};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};

use super::error::{ErrorBody, ErrorDetail};
use super::schema::ErrorCode;

/// Top-level info, tags and the schemas no operation references directly.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "FastK",
        description = "Local store and query server for market time series: kline (OHLCV) \
            and scalar series in memory-mapped column chunks.\n\nTimestamps (`ts`) are \
            milliseconds since the Unix epoch, UTC; ranges are inclusive at both ends. \
            Every error has the body `{\"error\": {\"code\", \"message\"}}`. When the server \
            has tokens configured (`auth.token`, `auth.tokens_file`), writes, registration \
            and deletes need `Authorization: Bearer <token>` with the `write` scope, admin \
            actions the `admin` scope, and reads the `read` scope when `auth.protect_reads` \
            is set; a token limited to symbol patterns must name allowed symbols \
            (docs/operations.md, \"Security\").",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "kline", description = "OHLCV series keyed by symbol and timeframe."),
        (name = "scalar", description = "One-value series keyed by symbol, timeframe, category and name."),
        (name = "ticks", description = "Trades and quotes keyed by symbol; `ts` in nanoseconds, rows keyed by (ts, seq) (docs/ticks.md)."),
        (name = "sql", description = "Read-only SQL over every series and the registry (docs/sql.md)."),
        (name = "admin", description = "Integrity checks and maintenance."),
        (name = "registry", description = "Dataset manifests, feature and factor definitions."),
        (name = "snapshots", description = "Named snapshots: the series as they were, read again exactly (docs/research.md)."),
        (name = "system", description = "Health, inventory, metrics and this document."),
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        ErrorCode,
        crate::query::tick::QuoteWrite,
        crate::query::tick::QuoteIn
    )),
)]
pub struct ApiDoc;

/// Name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

/// Completes the document the router collected.
pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A token of the tokens file (`auth.tokens_file`), the server's \
                     `auth.token`, or a Flight Handshake session. Needed only when the server \
                     has tokens configured: then with the `write` scope for writes, \
                     registration and deletes, `admin` for admin actions, and `read` for \
                     reads when `auth.protect_reads` is set.",
                ))
                .build(),
        ),
    );
    for (name, schema) in components.schemas.iter_mut() {
        if let Some(example) = fallback_example(name) {
            set_example_if_missing(schema, example);
        }
    }
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_common_errors(op);
        }
    }
}

/// Adds the errors that any operation of its shape can return, unless the handler
/// documented that status itself.
fn add_common_errors(op: &mut Operation) {
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = op.request_body.is_some();
    let secured = op.security.is_some();
    let mut add = |status: &str, text: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(text));
    };
    if has_params || has_body {
        add(
            "400",
            "`invalid_argument`: malformed JSON, a wrong type, an unknown field, a bad name \
             or an out-of-range parameter; the message says which.",
        );
    }
    if secured {
        add(
            "401",
            "`unauthorized`: the server has a token configured and the request did not \
             carry a valid one as `Authorization: Bearer <token>`.",
        );
        add(
            "403",
            "`forbidden`: the token is valid but lacks the scope this call needs, or is \
             limited to symbol patterns the request goes outside of.",
        );
    }
    if has_body {
        add(
            "413",
            "`payload_too_large`: the body exceeds `http.max_body_bytes`.",
        );
    }
    add(
        "500",
        "`internal`, or `corrupted` when stored data failed its checksum.",
    );
    add(
        "503",
        "`unavailable`: the disk is full, the store is locked, or the request timed out.",
    );
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::response::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Sets `example` on a schema that has none (schemas whose type lives outside the HTTP
/// module and was declared without one).
fn set_example_if_missing(schema: &mut RefOr<Schema>, example: Value) {
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::Object(o) if o.example.is_none() && o.examples.is_empty() => {
            o.example = Some(example);
        }
        Schema::OneOf(o) if o.example.is_none() && o.examples.is_empty() => {
            o.example = Some(example);
        }
        Schema::AllOf(o) if o.example.is_none() && o.examples.is_empty() => {
            o.example = Some(example);
        }
        Schema::AnyOf(o) if o.example.is_none() && o.examples.is_empty() => {
            o.example = Some(example);
        }
        Schema::Array(o) if o.example.is_none() && o.examples.is_empty() => {
            o.example = Some(example);
        }
        _ => {}
    }
}

/// Examples for shared schemas declared without one.
fn fallback_example(name: &str) -> Option<Value> {
    let finding = json!({"series": "kline/BTCUSDT/1m", "month": "2024-01", "file": "series/kline/BTCUSDT/1m/2024-01.g3.chunk", "kind": "checksum_mismatch", "detail": "column 2 checksum does not match", "suggested_action": "run admin repair"});
    let action = json!({"series": "kline/BTCUSDT/1m", "file": "series/kline/BTCUSDT/1m/2024-01.g3.chunk", "action": "quarantine", "detail": "moved to quarantine/"});
    let stats = json!({"chunks_total": 12, "chunks_pruned": 11, "blocks_total": 132, "blocks_pruned": 131, "rows_checked": 4096, "rows_matched": 1, "index_used": "zonemap", "sidecar_fallbacks": 0});
    Some(match name {
        "SeriesKind" => json!("kline"),
        "ValueType" => json!("f64"),
        "Strategy" => json!("auto"),
        "Finding" => finding,
        "ActionTaken" => action,
        "QueryStats" => stats,
        "SeriesSelector" => json!({"kind": "kline", "symbol": "BTCUSDT"}),
        "AdminReport" => json!({"action": "validate", "dry_run": false, "deep": true,
            "series_checked": 3, "chunks_checked": 40, "bytes_checked": 10485760,
            "findings": [], "actions": [], "clean": true, "duration_ms": 84}),
        "Inventory" => json!({"series": [{"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m",
            "timeframe_ms": 60000, "price_scale": 100, "volume_scale": 1000, "rows": 44640,
            "first_ts": 1704067200000_i64, "last_ts": 1706745540000_i64, "bytes": 2143232,
            "version": 3, "partitions": [{"month": "2024-01", "rows": 44640, "bytes": 2143232,
            "chunks": 1, "first_ts": 1704067200000_i64, "last_ts": 1706745540000_i64}]}],
            "total_rows": 44640, "total_bytes": 2143232}),
        _ => return None,
    })
}

/// The document as served and committed: pretty JSON with a trailing newline.
pub fn to_json(doc: &OpenApi) -> String {
    let mut text = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize the document: {e}\"}}"));
    text.push('\n');
    text
}
