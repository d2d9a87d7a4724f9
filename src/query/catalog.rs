//! The engine's side of the registry: opening it (a damaged database is quarantined,
//! a full disk opens it read-only), reconciling the series catalog with storage, and
//! bringing a degraded registry back once space returns.

use std::path::Path;

use super::{Engine, REGISTRY_FILE, now_ms};
use crate::error::{Error, Result};
use crate::registry::{Registry, RegistryError};
use crate::storage::Store;

/// Opens the registry.
///
/// - A full disk (or read-only file system) opens it degraded: read-only, or offline
///   when SQLite cannot open it even so. The server starts and serves every series
///   from storage; registry writes are refused (503) until space returns.
/// - A corrupt database is moved to `quarantine/` and recreated (the series catalog
///   is rebuilt from storage right after; datasets, features and factors must then be
///   restored from a backup, which `issues` records for `/health`).
pub(super) fn open_registry(root: &Path, issues: &mut Vec<String>) -> Result<Registry> {
    let path = root.join(REGISTRY_FILE);
    match Registry::open(&path) {
        Ok(r) => Ok(r),
        Err(RegistryError::Unavailable(why)) => open_degraded(&path, &why),
        Err(e @ (RegistryError::Corrupted(_) | RegistryError::Sqlite(_))) if path.exists() => {
            let dir = root.join("quarantine").join(now_ms().to_string());
            std::fs::create_dir_all(&dir).map_err(Error::internal)?;
            for ext in ["", "-wal", "-shm"] {
                let from = root.join(format!("{REGISTRY_FILE}{ext}"));
                if from.exists() {
                    std::fs::rename(&from, dir.join(format!("{REGISTRY_FILE}{ext}")))
                        .map_err(Error::internal)?;
                }
            }
            tracing::error!(error = %e, "registry database unreadable; quarantined and recreated");
            issues.push(format!(
                "registry_corrupt: the registry database was unreadable ({e}); it was moved to quarantine/ and \
                 recreated; series were re-catalogued from storage, datasets/features/factors need a restore"
            ));
            match Registry::open(&path) {
                Ok(r) => Ok(r),
                Err(RegistryError::Unavailable(why)) => open_degraded(&path, &why),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn open_degraded(path: &Path, why: &str) -> Result<Registry> {
    let r = Registry::open_degraded(path)?;
    tracing::error!(
        access = ?r.access(),
        reason = why,
        "registry cannot be opened read-write (disk full?); serving with the registry degraded"
    );
    Ok(r)
}

/// Makes the catalog match storage. On a full disk the catalog is left stale (and
/// reconciled when space returns) rather than failing the open.
pub(super) fn reconcile_on_open(store: &Store, registry: &Registry) -> Result<()> {
    // From the metadata alone: a dormant series is not built for this.
    let truth = store.metas();
    match registry.reconcile(&truth, false) {
        Ok(rec) if !rec.is_empty() => {
            tracing::warn!(?rec, "registry catalog reconciled with storage");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(RegistryError::Unavailable(why)) => {
            tracing::error!(reason = %why, "registry catalog left stale: it cannot be written now");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl Engine {
    /// Tries to bring a degraded registry back (read-write, catalog reconciled).
    /// `force`: now (before a registry write); otherwise rate-limited (for `/health`).
    pub(super) fn recover_registry(&self, force: bool) -> bool {
        self.registry.try_recover(|| self.store.metas(), force)
    }

    /// The registry's reason for `/health` to be degraded, after a rate-limited
    /// attempt to recover (so health turns `ok` once space returns).
    pub(super) fn registry_issue(&self) -> Option<String> {
        if self.recover_registry(false) {
            return None;
        }
        self.registry.health_issue()
    }
}
