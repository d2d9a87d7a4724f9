//! Import and export: CSV, Parquet and Arrow IPC files in and out of a series.
//!
//! An import reads every input file, converts and checks each row (timestamps to epoch
//! milliseconds, or nanoseconds for trades and quotes; real prices to the series'
//! fixed-point integers; the OHLC rules and the tick checks; the timestamp range;
//! duplicate keys across all inputs), and only then writes, as ONE
//! all-or-nothing write: into a data root directly, or through a running server's
//! Arrow Flight DoPut. Parsing streams the files with flat memory; the rows themselves
//! are held until the write (48 bytes per kline row, 16 per scalar row), because the
//! write is one commit.
//!
//! An export streams a range out of the store slice by slice (memory stays flat) into
//! CSV, Parquet or Arrow IPC, with real prices (integer / scale) or raw integers.
//!
//! # Layout
//! - [`timestamps`]: timestamp text (epoch s/ms/us/ns, ISO 8601, `YYYY-MM-DD HH:MM:SS`).
//! - [`values`]: real numbers to fixed-point integers, and the rounding rule.
//! - [`columns`]: which input column feeds which field (header names, overrides).
//! - [`sink`]: collects checked rows, rejects bad ones, finds duplicates.
//! - [`csv`]: the hand-rolled CSV reader (byte-level, no per-field allocation).
//! - [`arrow_files`]: Parquet and Arrow IPC readers and writers.
//! - [`import`], [`export`]: the two commands; [`dest`]: a data root or a server.
//! - [`remote`], [`http_client`]: a running server through Flight (the data) and HTTP
//!   (registration, and a one-request fallback); [`https`]: one request over TLS for a
//!   server with `[tls]`.
//! - [`progress`]: a progress bar on a terminal, periodic lines otherwise.
//! - [`cmd`]: the `fastk import` / `fastk export` flags and printed summaries.
//!
//! Architecture invariant: this module is a client of [`crate::query::Engine`] (or of a
//! server through Flight); it never touches chunk files itself.

pub mod arrow_files;
pub mod cmd;
pub mod columns;
pub mod csv;
pub mod dest;
pub mod export;
pub mod http_client;
pub mod https;
pub mod import;
pub mod progress;
pub mod remote;
pub mod sink;
pub mod timestamps;
pub mod values;

use std::path::{Path, PathBuf};

pub use export::{ExportOptions, ExportSummary, export};
pub use import::{ImportOptions, ImportSummary, import};
pub use sink::Reject;
pub use timestamps::TsUnit;

/// File formats an import reads and an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    Csv,
    Parquet,
    /// Arrow IPC: the file format (`.arrow`, `.feather`) or the stream format (`.arrows`).
    Arrow,
}

impl FileFormat {
    /// The format implied by a file name's extension.
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "tsv" | "txt" => Some(FileFormat::Csv),
            "parquet" | "pq" => Some(FileFormat::Parquet),
            "arrow" | "arrows" | "feather" | "ipc" => Some(FileFormat::Arrow),
            _ => None,
        }
    }
}

/// How kline prices and volume appear in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PriceMode {
    /// Real numbers: stored integer = real × scale (import), real = integer / scale (export).
    #[default]
    Real,
    /// The stored fixed-point integers as they are.
    Raw,
}

/// What the readers need to turn a source row into a record.
#[derive(Debug, Clone)]
pub struct RowSpec {
    pub kind: crate::record::SeriesKind,
    /// One rule per value field, in storage order (kline: open, high, low, close,
    /// volume; scalar: value).
    pub rules: Vec<values::ValueRule>,
    /// The epoch unit of integer timestamps; `None` detects it per file.
    pub ts_unit: Option<TsUnit>,
    pub overrides: columns::ColumnOverrides,
    /// A scalar series' name, accepted as the name of its value column.
    pub series_name: Option<String>,
    /// The unit timestamps are stored in: milliseconds, or nanoseconds for ticks.
    pub precision: timestamps::Precision,
}

impl RowSpec {
    /// The spec for a series: its scales, how prices appear, and the user's flags.
    pub fn for_series(
        meta: &crate::record::SeriesMeta,
        prices: PriceMode,
        strict_scale: bool,
        ts_unit: Option<TsUnit>,
        overrides: columns::ColumnOverrides,
    ) -> RowSpec {
        use crate::record::{SeriesKind, ValueType};
        use values::ValueRule;
        let scaled = |scale| match prices {
            PriceMode::Real => ValueRule::scaled(scale, strict_scale),
            PriceMode::Raw => ValueRule::Raw,
        };
        let kind = meta.key.kind();
        let rules = match (kind, meta.value_type) {
            (SeriesKind::Kline, _) => {
                let p = scaled(meta.price_scale);
                vec![p, p, p, p, scaled(meta.volume_scale)]
            }
            (SeriesKind::Scalar, ValueType::I64) => vec![scaled(1)],
            (SeriesKind::Scalar, ValueType::F64) => vec![ValueRule::F64Bits],
            (SeriesKind::Trade, _) => {
                let (p, q) = (scaled(meta.price_scale), scaled(meta.volume_scale));
                vec![ValueRule::Seq, p, q, ValueRule::Side, ValueRule::Raw]
            }
            (SeriesKind::Quote, _) => {
                let (p, q) = (scaled(meta.price_scale), scaled(meta.volume_scale));
                vec![ValueRule::Seq, p, p, q, q]
            }
        };
        let precision = match meta.layout().unit {
            crate::record::TimeUnit::Millis => timestamps::Precision::Ms,
            crate::record::TimeUnit::Nanos => timestamps::Precision::Ns,
        };
        RowSpec {
            kind,
            rules,
            ts_unit,
            overrides,
            series_name: meta.key.name().map(String::from),
            precision,
        }
    }

    /// The rules for one file, whose value columns (storage order) have `names`
    /// (`None`: left out, or a headerless file): a side column named as a
    /// buyer-maker flag is read as one.
    pub fn file_rules(&self, names: &[Option<&str>]) -> Vec<values::ValueRule> {
        let fields = columns::value_fields(self.kind);
        self.rules
            .iter()
            .zip(fields)
            .zip(names)
            .map(|((&rule, &field), name)| match name {
                Some(n)
                    if field == "side"
                        && columns::BUYER_MAKER_NAMES.contains(
                            &n.trim().trim_matches('"').to_ascii_lowercase().as_str(),
                        ) =>
                {
                    values::ValueRule::BuyerMaker
                }
                _ => rule,
            })
            .collect()
    }

    /// A timestamp field in this spec's precision.
    #[inline]
    pub fn parse_ts(
        &self,
        s: &[u8],
        unit: Option<TsUnit>,
    ) -> Result<(i64, Option<TsUnit>), timestamps::TsError> {
        timestamps::parse_ts_in(s, unit, self.precision)
    }
}

/// What an import says about how one tick file maps: the optional fields it leaves
/// out and a side read from a buyer-maker flag. Nothing for bars and scalars.
pub fn mapping_notes(
    spec: &RowSpec,
    idx: &[Option<usize>],
    rules: &[values::ValueRule],
) -> Vec<String> {
    if !spec.kind.is_tick() {
        return Vec::new();
    }
    let fields = columns::value_fields(spec.kind);
    let mut notes = Vec::new();
    for (k, field) in fields.iter().enumerate() {
        if idx[k + 1].is_none() {
            notes.push(match *field {
                "seq" => "seq: no column; assigned by the store, in file order within each ts"
                    .to_string(),
                "side" => "side: no column; stored as 0 (unknown)".to_string(),
                f => format!("{f}: no column; stored as 0"),
            });
        }
        if rules[k] == values::ValueRule::BuyerMaker {
            notes.push(
                "side: read from a buyer-maker flag: true -> -1 (seller-initiated), \
                 false -> 1 (buyer-initiated)"
                    .to_string(),
            );
        }
    }
    notes
}

/// What an import says about a tick file's timestamps: the epoch unit it found (or
/// was given), or that they were text, stored as nanoseconds.
pub fn unit_note(spec: &RowSpec, unit: Option<TsUnit>) -> Option<String> {
    if spec.precision != timestamps::Precision::Ns {
        return None;
    }
    Some(match (unit, spec.ts_unit) {
        (Some(u), None) => format!(
            "ts: epoch {} (detected from the first value), stored as nanoseconds",
            u.name()
        ),
        (Some(u), Some(_)) => format!("ts: epoch {} (--ts-unit), stored as nanoseconds", u.name()),
        (None, _) => "ts: dates and times as text, stored as nanoseconds".to_string(),
    })
}

/// The value a left-out optional field of a file gets: a `seq` to be assigned by the
/// store; 0 (unknown side, no trade id) otherwise.
pub fn absent_value(field: &str) -> i64 {
    if field == "seq" {
        crate::record::SEQ_UNASSIGNED
    } else {
        0
    }
}

/// Where an import writes to or an export reads from.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A data root opened directly (takes the store lock; refused while a server runs).
    Root(PathBuf),
    /// A running server: its Arrow Flight endpoint (`host:port`) carries the data; its
    /// HTTP API (`http://host:port`) registers missing series, and carries the data as
    /// one JSON request when no Flight address is given.
    Server {
        flight: Option<String>,
        http: Option<String>,
        token: Option<String>,
        /// For a server with `[tls]`: the CA to trust (and a client certificate).
        tls: crate::tls::ClientFiles,
    },
}

/// Everything an import or export can fail with. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Bad flags, unknown columns, unreadable formats: nothing was read or written.
    #[error("{0}")]
    Usage(String),
    /// Reading an input or writing an output failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A Parquet or Arrow file could not be decoded.
    #[error("{path}: {detail}")]
    Decode { path: String, detail: String },
    /// Rows failed their checks and `--skip-invalid` was not given: nothing was written.
    #[error("{} invalid row(s) found; nothing was written", .0.len())]
    BadRows(Vec<Reject>),
    /// The store or the server refused (locked root, conflict, version mismatch...).
    #[error("{0}")]
    Store(#[from] crate::error::Error),
    /// The Flight server could not be reached or answered with an error.
    #[error("{0}")]
    Remote(String),
}

impl TransferError {
    pub fn io(path: &Path, source: std::io::Error) -> TransferError {
        TransferError::Io {
            path: path.display().to_string(),
            source,
        }
    }
    pub fn decode(path: &Path, detail: impl std::fmt::Display) -> TransferError {
        TransferError::Decode {
            path: path.display().to_string(),
            detail: detail.to_string(),
        }
    }
}

pub type Result<T, E = TransferError> = std::result::Result<T, E>;
