//! The replica's side: following a publication into the local store.
//!
//! Each poll lists `manifests/` (one listing, whatever the number of series) and
//! fetches only the manifests whose object changed since it last applied them
//! (e_tag). For each: decode it (every rule of the manifest format, its checksum
//! first), ask storage where its missing files go (`Store::follow_target`), fetch
//! each, check it against the manifest (`check_file`) and write it (temp, fsync,
//! rename), then commit the manifest locally (`Store::commit_followed`), which swaps
//! the series' snapshot. Any failure leaves the series at its previous state and is
//! retried on the next poll; nothing unchecked is ever served. A local series whose
//! manifest object is gone is deleted.
//!
//! Named snapshots come after the series of the same poll: each snapshot object not
//! applied yet is decoded (`Store::incoming_snapshot`), the data files it reads that
//! this store lacks are fetched, checked and staged, and the snapshot is adopted
//! (`Store::adopt_snapshot`: durable, then served). A local snapshot whose object is
//! gone is deleted, before the series deletions, which a snapshot holding the series
//! would refuse. Nothing happens before the publisher's marker
//! exists, so a wrong or empty URL never empties a replica.

use crate::sync::LockExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::Bucket;
use crate::record::SeriesKey;
use crate::storage::Store;
use crate::storage::follow::{FollowTarget, store_fetched, sync_fetched};
use crate::storage::follow_snapshot::stage_fetched;
use crate::storage::format::Manifest;

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowReport {
    /// The publisher's marker was found (otherwise nothing else was done).
    pub marker: bool,
    /// Manifest objects listed.
    pub listed: u64,
    /// Series whose manifest was committed here (`created` of them new here).
    pub applied: u64,
    pub created: u64,
    /// Fetched manifests that were already this series' state.
    pub current: u64,
    /// Local series deleted because their manifest object is gone.
    pub deleted: u64,
    /// Named snapshots adopted here, and deleted because their object is gone.
    pub snapshots_applied: u64,
    pub snapshots_deleted: u64,
    /// Series and snapshots whose apply failed (logged; the old state is kept and
    /// served).
    pub failed: u64,
    /// The first of those failures, "series: reason" (`/health`'s `last_error`).
    pub first_failure: Option<String>,
    /// Data objects fetched and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// The primary's `started_ms` of its last complete pass, read before the listing
    /// (`replica::PASS`; `None` before a publisher completed one). When `failed` is 0
    /// this replica now holds every write the primary committed before it.
    pub published_ms: Option<i64>,
}

impl FollowReport {
    /// Whether the set of series changed (the registry's catalog follows).
    pub fn changed_catalog(&self) -> bool {
        self.created > 0 || self.deleted > 0
    }
}

/// Follows one bucket into one store. Keep one per process: it remembers the e_tag
/// of each manifest it applied.
#[derive(Debug)]
pub struct Follower {
    bucket: Bucket,
    concurrency: usize,
    applied: Mutex<HashMap<SeriesKey, String>>,
    /// The tag of each snapshot object applied (or found current).
    snapshots: Mutex<HashMap<String, String>>,
}

enum Applied {
    Current,
    Committed {
        created: bool,
        objects: u64,
        bytes: u64,
    },
}

impl Follower {
    pub fn new(bucket: Bucket, concurrency: usize) -> Follower {
        Follower {
            bucket,
            concurrency: concurrency.max(1),
            applied: Mutex::new(HashMap::new()),
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, HashMap<SeriesKey, String>> {
        self.applied.locked()
    }

    /// One poll (see the module notes). An error is a failed listing: nothing applied.
    pub async fn poll_once<S>(&self, owner: &Arc<S>) -> Result<FollowReport, String>
    where
        S: AsRef<Store> + Send + Sync + 'static,
    {
        let mut report = FollowReport::default();
        match self.bucket.store.head(&self.bucket.marker()).await {
            Ok(_) => report.marker = true,
            Err(object_store::Error::NotFound { .. }) => return Ok(report),
            Err(e) => return Err(format!("cannot read the publication marker: {e}")),
        }
        report.published_ms = match self.bucket.store.get(&self.bucket.pass()).await {
            Ok(r) => {
                let body = r
                    .bytes()
                    .await
                    .map_err(|e| format!("cannot read the pass record: {e}"))?;
                // The record only measures the lag: a bad one costs the metric, not
                // the poll.
                match serde_json::from_slice::<super::PassRecord>(&body) {
                    Ok(record) => Some(record.started_ms),
                    Err(e) => {
                        tracing::warn!(error = %e, "replica: the pass record is not valid; lag not measured");
                        None
                    }
                }
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(format!("cannot read the pass record: {e}")),
        };
        let mut remote: BTreeMap<SeriesKey, (Path, String)> = BTreeMap::new();
        for (key, m) in self.bucket.list_manifests().await? {
            let tag = super::tag_of(&m);
            remote.insert(key, (m.location, tag));
        }
        report.listed = remote.len() as u64;
        let changed: Vec<_> = {
            let seen = self.applied();
            remote
                .iter()
                .filter(|(k, (_, tag))| seen.get(*k) != Some(tag))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let outcomes: Vec<_> = futures::stream::iter(changed)
            .map(|(key, (location, tag))| async move {
                let r = self.apply(owner, &key, &location).await;
                (key, tag, r)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for (key, tag, r) in outcomes {
            match r {
                Ok(a) => {
                    match a {
                        Applied::Current => report.current += 1,
                        Applied::Committed {
                            created,
                            objects,
                            bytes,
                        } => {
                            report.applied += 1;
                            report.created += created as u64;
                            report.objects += objects;
                            report.bytes += bytes;
                        }
                    }
                    self.applied().insert(key, tag);
                }
                Err(why) => {
                    tracing::warn!(series = %key, error = %why, "replica apply failed; the previous state is kept, retried next poll");
                    report.failed += 1;
                    report
                        .first_failure
                        .get_or_insert_with(|| format!("{key}: {why}"));
                }
            }
        }
        self.follow_snapshots(owner, &mut report).await;
        report.deleted = self.delete_unpublished(owner, &remote).await;
        Ok(report)
    }

    fn failed(report: &mut FollowReport, what: String, why: String) {
        tracing::warn!(what = %what, error = %why, "replica apply failed; the previous state is kept, retried next poll");
        report.failed += 1;
        report
            .first_failure
            .get_or_insert_with(|| format!("{what}: {why}"));
    }

    /// Adopts the published snapshots not applied yet and deletes the local ones whose
    /// object is gone (see the module notes).
    async fn follow_snapshots<S>(&self, owner: &Arc<S>, report: &mut FollowReport)
    where
        S: AsRef<Store> + Send + Sync + 'static,
    {
        let remote = match self.bucket.list_snapshots().await {
            Ok(r) => r,
            Err(why) => return Self::failed(report, "snapshots".into(), why),
        };
        let local: HashSet<String> = (**owner)
            .as_ref()
            .snapshots()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        for (name, (location, tag)) in &remote {
            let seen = self.snapshots.locked().get(name) == Some(tag);
            if seen && local.contains(name) {
                continue;
            }
            match self.apply_snapshot(owner, name, location).await {
                Ok(fetched) => {
                    if let Some((objects, bytes)) = fetched {
                        report.snapshots_applied += 1;
                        report.objects += objects;
                        report.bytes += bytes;
                    }
                    self.snapshots.locked().insert(name.clone(), tag.clone());
                }
                Err(why) => Self::failed(report, format!("snapshot {name}"), why),
            }
        }
        for name in local.into_iter().filter(|n| !remote.contains_key(n)) {
            let o = Arc::clone(owner);
            let n = name.clone();
            let r = blocking(move || (*o).as_ref().delete_snapshot(&n).map_err(|e| e.to_string()));
            match r.await {
                Ok(()) => {
                    report.snapshots_deleted += 1;
                    self.snapshots.locked().remove(&name);
                }
                Err(why) => Self::failed(report, format!("snapshot {name}"), why),
            }
        }
    }

    /// Fetches one snapshot object, the files it needs, and adopts it. `None`: this
    /// store holds it already.
    async fn apply_snapshot<S>(
        &self,
        owner: &Arc<S>,
        name: &str,
        location: &Path,
    ) -> Result<Option<(u64, u64)>, String>
    where
        S: AsRef<Store> + Send + Sync + 'static,
    {
        let body = get(&self.bucket, location).await?;
        let o = Arc::clone(owner);
        let incoming = blocking(move || {
            (*o).as_ref()
                .incoming_snapshot(&body)
                .map_err(|e| e.to_string())
        })
        .await?;
        let Some(inc) = incoming else {
            return Ok(None);
        };
        if inc.name() != name {
            return Err(format!(
                "the object at {location} holds snapshot {}",
                inc.name()
            ));
        }
        let (mut objects, mut bytes) = (1, 0);
        for n in &inc.needs {
            for f in &n.files {
                let staged = match get(&self.bucket, &self.bucket.data(&n.key, f)).await {
                    Ok(b) => {
                        objects += 1;
                        bytes += b.len() as u64;
                        let (meta, dir, f) = (n.meta.clone(), n.dir.clone(), f.clone());
                        blocking(move || stage_fetched(&meta, &dir, &f, &b)).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(why) = staged {
                    inc.abandon();
                    return Err(why);
                }
            }
        }
        let o = Arc::clone(owner);
        blocking(move || {
            (*o).as_ref()
                .adopt_snapshot(inc)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await?;
        Ok(Some((objects, bytes)))
    }

    /// Fetches, checks and commits one series' manifest.
    async fn apply<S>(
        &self,
        owner: &Arc<S>,
        key: &SeriesKey,
        location: &Path,
    ) -> Result<Applied, String>
    where
        S: AsRef<Store> + Send + Sync + 'static,
    {
        let bytes = get(&self.bucket, location).await?;
        let m = Manifest::decode(&bytes).map_err(|why| format!("manifest refused: {why}"))?;
        if m.meta.key != *key {
            return Err(format!(
                "the manifest at {location} names series {}",
                m.meta.key
            ));
        }
        let o = Arc::clone(owner);
        let m2 = m.clone();
        let target =
            blocking(move || (*o).as_ref().follow_target(&m2).map_err(|e| e.to_string())).await?;
        let Some((dir, needed)) = target.work() else {
            return Ok(Applied::Current);
        };
        let (dir, needed) = (dir.clone(), needed.to_vec());
        let created = matches!(target, FollowTarget::Create { .. });
        let fetched = self.fetch_all(key, &m, &dir, &needed).await;
        let o = Arc::clone(owner);
        let committed = match fetched {
            Ok(done) => {
                blocking(move || {
                    sync_fetched(&dir)?;
                    (*o).as_ref()
                        .commit_followed(target, m)
                        .map_err(|e| e.to_string())?;
                    Ok(done)
                })
                .await
            }
            Err(e) => {
                target.abandon();
                Err(e)
            }
        };
        let (objects, bytes) = committed?;
        Ok(Applied::Committed {
            created,
            objects,
            bytes,
        })
    }

    /// Fetches every needed file, checks it and writes it into `dir`.
    async fn fetch_all(
        &self,
        key: &SeriesKey,
        m: &Manifest,
        dir: &std::path::Path,
        needed: &[crate::storage::follow::DataFile],
    ) -> Result<(u64, u64), String> {
        let (mut objects, mut bytes) = (0, 0);
        for f in needed {
            let body = get(&self.bucket, &self.bucket.data(key, f)).await?;
            bytes += body.len() as u64;
            objects += 1;
            let (dir, f, meta) = (dir.to_path_buf(), f.clone(), m.meta.clone());
            blocking(move || store_fetched(&meta, &dir, &f, &body)).await?;
        }
        Ok((objects, bytes))
    }

    /// Deletes local series whose manifest object is gone from the listing.
    async fn delete_unpublished<S>(
        &self,
        owner: &Arc<S>,
        remote: &BTreeMap<SeriesKey, (Path, String)>,
    ) -> u64
    where
        S: AsRef<Store> + Send + Sync + 'static,
    {
        let gone: Vec<SeriesKey> = (**owner)
            .as_ref()
            .list()
            .iter()
            .map(|s| s.meta.key.clone())
            .filter(|k| !remote.contains_key(k))
            .collect();
        let mut deleted = 0;
        for key in gone {
            let o = Arc::clone(owner);
            let k = key.clone();
            match blocking(move || (*o).as_ref().delete(&k).map_err(|e| e.to_string())).await {
                Ok(()) => {
                    deleted += 1;
                    self.applied().remove(&key);
                }
                Err(why) => {
                    tracing::warn!(series = %key, error = %why, "replica could not delete a series")
                }
            }
        }
        deleted
    }
}

async fn get(bucket: &Bucket, path: &Path) -> Result<bytes::Bytes, String> {
    let r = bucket
        .store
        .get(path)
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    r.bytes().await.map_err(|e| format!("{path}: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}
