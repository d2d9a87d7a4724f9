//! The primary's side: publishing each series' committed state to an object store.
//!
//! Per series and pass: take the manifest on disk and a snapshot pinning its files
//! (`Series::published`, under the series' writer lock); put every live data file
//! the store does not hold yet (checked against the manifest first, so local damage
//! is never shipped); THEN put the manifest. An object put is atomic, so the manifest
//! object is the replica's commit point, as `MANIFEST` is on disk: it exists only
//! after every object it names. Rows still only in the write-ahead log are in no
//! manifest and are not published (replicas lag by the fold age plus the interval).
//!
//! Named snapshots follow the series: per snapshot not yet published, every data file
//! its states read (the snapshot's handles keep them on disk meanwhile), then the
//! snapshot's file as on disk, `snapshots/<name>.snap`, the snapshot's commit point.
//! A snapshot deleted here has its object deleted on the next pass.
//!
//! Objects no published manifest or snapshot names any more are deleted `gc_grace`
//! after this process saw them become unreferenced (data objects left by an earlier
//! process are counted from the first pass that lists them); a deleted series'
//! manifest object is deleted at once and its data objects after the grace period.

use crate::sync::LockExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use super::Bucket;
use crate::record::SeriesKey;
use crate::storage::follow::{DataFile, check_file, live_files};
use crate::storage::format::Manifest;
use crate::storage::{Series, Store};

/// What one publication pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Series whose manifest was put (it changed since the last pass).
    pub published: u64,
    /// Series whose published manifest is still current.
    pub unchanged: u64,
    /// Series gone from the store whose manifest object was deleted.
    pub deleted: u64,
    pub objects_put: u64,
    pub bytes_put: u64,
    /// Unreferenced objects deleted after the grace period.
    pub objects_removed: u64,
    /// Named snapshots whose object was put, and deleted (gone from the store).
    pub snapshots_published: u64,
    pub snapshots_deleted: u64,
    /// Series and snapshots that failed this pass (logged; retried on the next).
    pub failed: u64,
    /// The first of those failures, "series: reason" (`/health`'s `last_error`).
    pub first_failure: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    marker: bool,
    /// Per series: xxh3 of the manifest last put, and the data objects it names.
    published: HashMap<SeriesKey, (u64, HashSet<Path>)>,
    /// Data objects known to be in the store.
    present: HashSet<Path>,
    /// Per published snapshot: its creation time and the data objects it reads (with
    /// their series).
    snapshots: HashMap<String, (i64, HashMap<Path, SeriesKey>)>,
    /// Objects no published manifest names, since when (kept while a published
    /// snapshot names them).
    doomed: HashMap<Path, Instant>,
}

/// Publishes one store to one bucket. Keep one per process and bucket: it remembers
/// what it put, so an unchanged series costs no object call.
#[derive(Debug)]
pub struct Publisher {
    bucket: Bucket,
    grace: Duration,
    concurrency: usize,
    state: Mutex<State>,
}

enum Outcome {
    Published { objects: u64, bytes: u64 },
    Unchanged,
    Gone,
}

impl Publisher {
    pub fn new(bucket: Bucket, grace: Duration, concurrency: usize) -> Publisher {
        Publisher {
            bucket,
            grace,
            concurrency: concurrency.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked()
    }

    /// One pass over every series of `store` (see the module notes).
    pub async fn publish_once<S>(&self, owner: &Arc<S>) -> Result<PublishReport, String>
    where
        S: AsRef<Store> + Send + Sync + 'static,
    {
        let store: &Store = (**owner).as_ref();
        // Taken before any series is visited: each is published as its manifest
        // stands when visited, so everything committed before this is covered.
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if !self.state().marker {
            let body = PutPayload::from_static(b"{\"format\": 1}\n");
            self.bucket
                .store
                .put(&self.bucket.marker(), body)
                .await
                .map_err(|e| format!("cannot write the publication marker: {e}"))?;
            self.state().marker = true;
        }
        let mut report = PublishReport::default();
        let outcomes: Vec<_> = futures::stream::iter(store.list())
            .map(|s| async move {
                let key = s.meta.key.clone();
                (key, self.publish_series(s).await)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for (key, outcome) in outcomes {
            match outcome {
                Ok(Outcome::Published { objects, bytes }) => {
                    report.published += 1;
                    report.objects_put += objects;
                    report.bytes_put += bytes;
                }
                Ok(Outcome::Unchanged) => report.unchanged += 1,
                Ok(Outcome::Gone) => {}
                Err(why) => {
                    tracing::warn!(series = %key, error = %why, "publication failed; retried next pass");
                    report.failed += 1;
                    report
                        .first_failure
                        .get_or_insert_with(|| format!("{key}: {why}"));
                }
            }
        }
        self.publish_snapshots(store, &mut report).await?;
        report.deleted = self.unpublish_deleted(store).await?;
        report.objects_removed = self.collect_garbage().await;
        if report.failed == 0 {
            let record = super::PassRecord { started_ms };
            let body = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            self.bucket
                .store
                .put(&self.bucket.pass(), PutPayload::from(body))
                .await
                .map_err(|e| format!("cannot write the pass record: {e}"))?;
        }
        Ok(report)
    }

    /// Publishes one series if its manifest changed since this process last put it.
    async fn publish_series(&self, series: Arc<Series>) -> Result<Outcome, String> {
        let key = series.meta.key.clone();
        let s = Arc::clone(&series);
        let (m, pin) = match tokio::task::spawn_blocking(move || s.published()).await {
            Ok(Ok(p)) => p,
            // Deleted meanwhile: the deletion pass below unpublishes it.
            Ok(Err(_)) if series.is_deleted() => return Ok(Outcome::Gone),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(e.to_string()),
        };
        let manifest = m.encode();
        let sum = xxhash_rust::xxh3::xxh3_64(&manifest);
        let first = match self.state().published.get(&key) {
            Some((s, _)) if *s == sum => return Ok(Outcome::Unchanged),
            Some(_) => false,
            None => true,
        };
        let mut listed = HashSet::new();
        if first {
            // What an earlier process left: known present, and doomed if unnamed.
            listed = self.list_set(&self.bucket.data_dir(&key)).await?;
            self.state().present.extend(listed.iter().cloned());
        }
        let (mut objects, mut bytes) = (0, 0);
        let mut names = HashSet::new();
        for f in live_files(&m) {
            let path = self.bucket.data(&key, &f);
            names.insert(path.clone());
            if let Some(n) = self.put_data(&series, &m, &f, path).await? {
                bytes += n;
                objects += 1;
            }
        }
        // The commit point: every object the manifest names is in the store.
        self.bucket
            .store
            .put(&self.bucket.manifest(&key), PutPayload::from(manifest))
            .await
            .map_err(|e| e.to_string())?;
        drop(pin);
        let now = Instant::now();
        let mut st = self.state();
        let before = st
            .published
            .insert(key, (sum, names.clone()))
            .map(|(_, n)| n)
            .unwrap_or(listed);
        for p in before.difference(&names) {
            st.doomed.entry(p.clone()).or_insert(now);
        }
        for p in &names {
            st.doomed.remove(p);
        }
        Ok(Outcome::Published {
            objects: objects + 1,
            bytes: bytes + m.encode().len() as u64,
        })
    }

    /// Puts data file `f` of `series` (listed by `m`) at `path` unless the bucket holds
    /// it already; checked against `m` first, so local damage is never shipped. Returns
    /// the bytes put (`None`: present).
    async fn put_data(
        &self,
        series: &Series,
        m: &Manifest,
        f: &DataFile,
        path: Path,
    ) -> Result<Option<u64>, String> {
        if self.state().present.contains(&path) {
            return Ok(None);
        }
        let body = tokio::fs::read(series.dir().join(&f.name))
            .await
            .map_err(|e| format!("{}/{}: {e}", series.rel_dir(), f.name))?;
        check_file(&m.meta, f, &body)
            .map_err(|why| format!("{}: local file refused: {why}", series.rel_dir()))?;
        let n = body.len() as u64;
        self.bucket
            .store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| e.to_string())?;
        self.state().present.insert(path);
        Ok(Some(n))
    }

    /// Publishes every snapshot of `store` not published yet by this process, and
    /// deletes the objects of snapshots the store no longer has. A failure is counted
    /// in `report` and retried next pass; an error is a failed listing.
    async fn publish_snapshots(
        &self,
        store: &Store,
        report: &mut PublishReport,
    ) -> Result<(), String> {
        let remote = self.bucket.list_snapshots().await?;
        let local = store.snapshots();
        for snap in &local {
            let current = remote.contains_key(&snap.name)
                && self
                    .state()
                    .snapshots
                    .get(&snap.name)
                    .is_some_and(|(created, _)| *created == snap.created_ts);
            if current {
                continue;
            }
            match self.publish_snapshot(snap).await {
                Ok((objects, bytes)) => {
                    report.snapshots_published += 1;
                    report.objects_put += objects;
                    report.bytes_put += bytes;
                }
                Err(why) => {
                    tracing::warn!(snapshot = %snap.name, error = %why, "snapshot publication failed; retried next pass");
                    report.failed += 1;
                    report
                        .first_failure
                        .get_or_insert_with(|| format!("snapshot {}: {why}", snap.name));
                }
            }
        }
        let names: HashSet<&str> = local.iter().map(|s| s.name.as_str()).collect();
        for (name, (location, _)) in remote {
            if names.contains(name.as_str()) {
                continue;
            }
            match self.bucket.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => report.snapshots_deleted += 1,
                Err(e) => {
                    tracing::warn!(snapshot = %name, error = %e, "could not unpublish a deleted snapshot");
                    continue;
                }
            }
            let now = Instant::now();
            let mut st = self.state();
            let Some((_, read)) = st.snapshots.remove(&name) else {
                continue;
            };
            for (p, key) in read {
                let live = st.published.get(&key).is_some_and(|(_, n)| n.contains(&p));
                if !live {
                    st.doomed.entry(p).or_insert(now);
                }
            }
        }
        Ok(())
    }

    /// Puts every data file `snap` reads that the bucket lacks (checked against the
    /// snapshot's manifest first), then the snapshot's file: the commit point.
    async fn publish_snapshot(
        &self,
        snap: &crate::storage::named::NamedSnapshot,
    ) -> Result<(u64, u64), String> {
        let (mut objects, mut bytes) = (0, 0);
        let mut read = HashMap::new();
        let held: Vec<_> = snap.file_manifests().collect();
        for (h, m) in held {
            let key = &h.series.meta.key;
            for f in live_files(&m) {
                let path = self.bucket.data(key, &f);
                read.insert(path.clone(), key.clone());
                if let Some(n) = self.put_data(&h.series, &m, &f, path).await? {
                    bytes += n;
                    objects += 1;
                }
            }
        }
        let file = snap.encode();
        bytes += file.len() as u64;
        self.bucket
            .store
            .put(&self.bucket.snapshot(&snap.name), PutPayload::from(file))
            .await
            .map_err(|e| e.to_string())?;
        self.state()
            .snapshots
            .insert(snap.name.clone(), (snap.created_ts, read));
        Ok((objects + 1, bytes))
    }

    /// Deletes the manifest object of every published series the store no longer
    /// holds (a replica then deletes its copy); dooms its data objects.
    async fn unpublish_deleted(&self, store: &Store) -> Result<u64, String> {
        let mut deleted = 0;
        for (key, meta) in self.bucket.list_manifests().await? {
            if store.get(&key).is_ok() {
                continue;
            }
            match self.bucket.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => {
                    tracing::warn!(series = %key, error = %e, "could not unpublish a deleted series");
                    continue;
                }
            }
            let data = self.list_set(&self.bucket.data_dir(&key)).await?;
            let now = Instant::now();
            let mut st = self.state();
            st.published.remove(&key);
            for p in data {
                st.doomed.entry(p).or_insert(now);
            }
        }
        Ok(deleted)
    }

    /// Deletes doomed objects older than the grace period; returns how many.
    async fn collect_garbage(&self) -> u64 {
        let due: Vec<Path> = {
            let st = self.state();
            st.doomed
                .iter()
                .filter(|(_, since)| since.elapsed() >= self.grace)
                .filter(|(p, _)| !st.snapshots.values().any(|(_, read)| read.contains_key(*p)))
                .map(|(p, _)| p.clone())
                .collect()
        };
        let mut removed = 0;
        for p in due {
            match self.bucket.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    let mut st = self.state();
                    st.doomed.remove(&p);
                    st.present.remove(&p);
                    removed += 1;
                }
                Err(e) => tracing::warn!(object = %p, error = %e, "could not delete an old object"),
            }
        }
        removed
    }

    async fn list_set(&self, prefix: &Path) -> Result<HashSet<Path>, String> {
        self.bucket
            .store
            .list(Some(prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| format!("cannot list {prefix}: {e}"))
    }
}
