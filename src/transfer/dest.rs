//! Where an import writes: a data root opened directly, or a running server.
//!
//! Both answer the same three questions: what the series is (its scales), how to
//! register it when the flags ask for it, and how to commit all the rows as one write.
//! A missing series is described from the flags but registered only right before the
//! write, so a failed import changes nothing anywhere.

use std::path::Path;
use std::sync::Arc;

use super::http_client::HttpRemote;
use super::import::{ImportOptions, Registration};
use super::remote::FlightRemote;
use super::{Destination, Result, TransferError};
use crate::config::Config;
use crate::error::ErrorKind;
use crate::query::Engine;
use crate::query::types::WriteResponse;
use crate::record::{SeriesKey, SeriesKind, SeriesMeta, ValueType};
use crate::storage::WriteBatch;

/// An open destination.
pub enum Dest {
    Local(Arc<Engine>),
    Server {
        flight: Option<Box<FlightRemote>>,
        http: Option<HttpRemote>,
    },
}

/// The series an import writes to.
pub struct Target {
    pub meta: SeriesMeta,
    /// The series does not exist yet: register it (from the flags) before writing.
    pub register: Option<Registration>,
}

impl Dest {
    /// Opens a data root (taking its lock, creating it if needed) or a server's clients.
    pub fn open(dest: &Destination) -> Result<Dest> {
        match dest {
            Destination::Root(root) => open_root(root, true).map(Dest::Local),
            Destination::Server {
                flight,
                http,
                token,
                tls,
            } => Ok(Dest::Server {
                flight: match flight {
                    Some(a) => Some(Box::new(FlightRemote::connect(a, token.as_deref(), tls)?)),
                    None => None,
                },
                http: match http {
                    Some(u) => Some(HttpRemote::new(u, token.as_deref(), tls)?),
                    None => None,
                },
            }),
        }
    }

    /// The series' metadata; a missing one is described from the registration flags.
    pub fn target(&mut self, opts: &ImportOptions) -> Result<Target> {
        let existing = match self {
            Dest::Local(engine) => match engine.series(&opts.key) {
                Ok(s) => Some((*s.meta).clone()),
                Err(e) if e.kind == ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            },
            Dest::Server {
                flight: Some(f), ..
            } => f.series_meta(&opts.key)?,
            Dest::Server { http: Some(h), .. } => h.series_meta(&opts.key)?,
            Dest::Server { .. } => unreachable!("a server destination has an address"),
        };
        match (existing, &opts.register) {
            (Some(meta), Some(reg)) => {
                // Flags that disagree with the registered series are a conflict, as a
                // registration request with them would be.
                let wanted = meta_from_flags(&opts.key, reg)?;
                if wanted != meta {
                    return Err(TransferError::Usage(format!(
                        "series {} exists with timeframe_ms {}, price_scale {}, volume_scale {}, \
                         value_type {}; the flags differ (drop them to use the series as it is)",
                        opts.key,
                        meta.timeframe_ms,
                        meta.price_scale,
                        meta.volume_scale,
                        meta.value_type.as_str()
                    )));
                }
                Ok(Target {
                    meta,
                    register: None,
                })
            }
            (Some(meta), None) => Ok(Target {
                meta,
                register: None,
            }),
            (None, Some(reg)) => {
                if matches!(self, Dest::Server { http: None, .. }) {
                    return Err(TransferError::Usage(format!(
                        "series {} does not exist on the server; add --server http://HOST:PORT \
                         so the import can register it (Flight has no registration call)",
                        opts.key
                    )));
                }
                Ok(Target {
                    meta: meta_from_flags(&opts.key, reg)?,
                    register: Some(reg.clone()),
                })
            }
            (None, None) => Err(TransferError::Usage(format!(
                "series {} does not exist; register it with {}",
                opts.key,
                match opts.key.kind() {
                    SeriesKind::Kline => "--price-scale N --volume-scale N",
                    SeriesKind::Scalar => "--value-type i64|f64",
                    SeriesKind::Trade | SeriesKind::Quote => "--price-scale N --size-scale N",
                }
            ))),
        }
    }

    /// Registers a missing series (only called once everything has been read).
    pub fn register(&mut self, reg: &Registration) -> Result<()> {
        match self {
            Dest::Local(engine) => match reg {
                Registration::Kline(r) => drop(engine.register_kline(r)?),
                Registration::Scalar(r) => drop(engine.register_scalar(r)?),
                Registration::Tick(kind, r) => drop(engine.register_tick(*kind, r)?),
            },
            Dest::Server { http: Some(h), .. } => h.register(reg)?,
            Dest::Server { http: None, .. } => unreachable!("checked by target()"),
        }
        Ok(())
    }

    /// Commits every row as one write.
    pub fn write(&mut self, meta: &SeriesMeta, batch: WriteBatch) -> Result<WriteResponse> {
        match self {
            Dest::Local(engine) => Ok(engine.write(&meta.key, batch, None)?),
            Dest::Server {
                flight: Some(f), ..
            } => f.put(meta, batch),
            Dest::Server { http: Some(h), .. } => h.put(meta, &batch),
            Dest::Server { .. } => unreachable!("a server destination has an address"),
        }
    }

    /// The series' version when nothing is written (0 when unknown or unregistered).
    pub fn version(&self, key: &SeriesKey) -> u64 {
        match self {
            Dest::Local(engine) => engine.series(key).map_or(0, |s| s.version()),
            // Flight offers no cheap version query; nothing was sent.
            Dest::Server { .. } => 0,
        }
    }
}

/// Opens the engine of a data root for an offline import (`create`: making the root
/// when it does not exist yet) or export (a missing root is an error).
pub fn open_root(root: &Path, create: bool) -> Result<Arc<Engine>> {
    if create {
        std::fs::create_dir_all(root).map_err(|e| TransferError::io(root, e))?;
    } else if !root.is_dir() {
        return Err(TransferError::Usage(format!(
            "no data root at {} (pass --root DIR or --flight HOST:PORT)",
            root.display()
        )));
    }
    let mut config = Config::default();
    config.storage.root = root.to_path_buf();
    Engine::open(config).map_err(|e| {
        if e.kind == ErrorKind::Unavailable {
            TransferError::Usage(format!(
                "the data root {} is held by another process (a running server?): \
                 go through the server with --flight HOST:PORT instead, or stop it first",
                root.display()
            ))
        } else {
            TransferError::Store(e)
        }
    })
}

/// The metadata a registration from these flags would create (same checks).
fn meta_from_flags(key: &SeriesKey, reg: &Registration) -> Result<SeriesMeta> {
    use crate::query::resolve_timeframe_ms;
    let (timeframe_ms, price_scale, volume_scale, value_type) = match reg {
        Registration::Kline(r) => {
            if r.price_scale <= 0 || r.volume_scale <= 0 {
                return Err(TransferError::Usage(
                    "--price-scale and --volume-scale must be positive integers (e.g. 100 for cents)"
                        .into(),
                ));
            }
            let tf = resolve_timeframe_ms(&r.timeframe, r.timeframe_ms)?;
            (tf, r.price_scale, r.volume_scale, ValueType::I64)
        }
        Registration::Scalar(r) => {
            let tf = resolve_timeframe_ms(&r.timeframe, r.timeframe_ms)?;
            (tf, 1, 1, r.value_type.unwrap_or_default())
        }
        Registration::Tick(kind, r) => {
            let meta = crate::query::tick::tick_meta(*kind, r)?;
            (
                meta.timeframe_ms,
                meta.price_scale,
                meta.volume_scale,
                meta.value_type,
            )
        }
    };
    Ok(SeriesMeta {
        key: key.clone(),
        timeframe_ms,
        price_scale,
        volume_scale,
        value_type,
    })
}
