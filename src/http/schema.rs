//! The wire schemas of types that live below the HTTP layer.
//!
//! `record.rs` and `error.rs` are the bottom floor and know no OpenAPI. Their types
//! appear in request and response bodies, so their schemas are said here: each is
//! derived from a shape-only twin that carries the same serde attributes (so the
//! schema cannot drift from what serde reads and writes; `tests/openapi_drift.rs`
//! compares the document with the committed one) and lends its schema to the real
//! type under the real type's name.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ErrorKind;
use crate::record::{KlineRecord, SeriesKind, ValueType};

/// Lends `$twin`'s schema to `$real` under `$name`.
macro_rules! schema_of_twin {
    ($real:ty, $twin:ty, $name:literal) => {
        impl PartialSchema for $real {
            fn schema() -> RefOr<Schema> {
                <$twin as PartialSchema>::schema()
            }
        }
        impl ToSchema for $real {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

/// One OHLCV bar. Prices and volume are fixed-point integers (real = int / scale).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ts": 1704067200000_i64, "open": 4200000, "high": 4210000, "low": 4195000, "close": 4205000, "volume": 1250}))]
#[allow(dead_code)] // a shape only: never built
struct KlineRecordTwin {
    /// Milliseconds since the Unix epoch, UTC.
    ts: i64,
    open: i64,
    high: i64,
    low: i64,
    close: i64,
    volume: i64,
}

/// Value type of a scalar series.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a shape only: never built
enum ValueTypeTwin {
    I64,
    F64,
}

/// Kind of a series.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a shape only: never built
enum SeriesKindTwin {
    Kline,
    Scalar,
    Trade,
    Quote,
}

schema_of_twin!(KlineRecord, KlineRecordTwin, "KlineRecord");
schema_of_twin!(ValueType, ValueTypeTwin, "ValueType");
schema_of_twin!(SeriesKind, SeriesKindTwin, "SeriesKind");

/// The schema `ErrorCode`: the contract's error codes, one per [`ErrorKind`], listed
/// from [`ErrorKind::ALL`] so that a new kind is in the document by construction.
pub struct ErrorCode;

impl PartialSchema for ErrorCode {
    // `example` (OpenAPI 3.0's single example) is what the rest of the document uses.
    #[allow(deprecated)]
    fn schema() -> RefOr<Schema> {
        let codes: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some("The contract's error codes, one per [`ErrorKind`]."))
            .enum_values(Some(codes))
            .example(Some(serde_json::json!("not_found")))
            .build()
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}
