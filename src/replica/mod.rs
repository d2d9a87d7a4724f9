//! Read replicas through object storage (docs/scale-out.md, section 2).
//!
//! A primary publishes (`publish`): per series, the data files its on-disk manifest
//! lists as live, then that manifest. A replica follows (`follow`): it lists the
//! manifests, fetches the files it lacks, checks them and commits each manifest
//! locally through `storage::follow`. Storage never sees an object store; this module
//! sits above it and below the servers (tests/architecture.rs).
//!
//! Object layout under the URL's path (`<key>` is the series directory below
//! `series/`, e.g. `kline/BTCUSDT/1m`):
//! ```text
//! FASTK-PUBLICATION                        marker: a publisher has written here
//! FASTK-PUBLICATION-PASS                   {"started_ms": T}: every manifest committed
//!                                          on the primary before T is published
//! manifests/<key>/MANIFEST                 the series' manifest, overwritten (commit point)
//! data/<key>/<YYYY-MM>.g<gen>.<ext>.<xxh3> data files, put once, named by content
//! snapshots/<name>.snap                    a named snapshot's file, as on the primary's
//!                                          disk, put after every data object it reads
//! ```
//! A data object's name carries its checksum, so a delete and re-registration, which
//! restarts generations, never reuses a name for other bytes.

pub mod follow;
pub mod publish;

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

use crate::record::SeriesKey;
use crate::storage::follow::DataFile;

pub use follow::{FollowReport, Follower};
pub use publish::{PublishReport, Publisher};

/// Object a publisher writes first: followers act on nothing without it, so a
/// mistyped URL (an empty location) never deletes a replica's series.
pub const MARKER: &str = "FASTK-PUBLICATION";
/// Object a publisher overwrites after each pass in which every series was published:
/// `{"started_ms": T}`, T the primary's clock when the pass began. A follower that read
/// it before listing, and then applied every listed manifest, holds every write the
/// primary had committed to a manifest before T: its lag is `now - T`.
pub const PASS: &str = "FASTK-PUBLICATION-PASS";
const MANIFESTS: &str = "manifests";
const DATA: &str = "data";
const MANIFEST_OBJECT: &str = "MANIFEST";
const SNAPSHOTS: &str = "snapshots";
const SNAPSHOT_SUFFIX: &str = ".snap";

/// The body of the [`PASS`] object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PassRecord {
    /// Milliseconds since the epoch (the primary's clock) when the pass began.
    pub started_ms: i64,
}

/// Checks a `replica.*` URL: parsed, and its scheme built into this binary.
pub fn check_url(url: &str) -> Result<(), String> {
    Bucket::open(url).map(|_| ())
}

/// An object store and the path inside it that holds one publication.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
}

impl Bucket {
    /// Opens `url`: `file:///dir`, or `s3://bucket/prefix` on any S3-compatible server,
    /// configured from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`...).
    /// `gs://` and `az://` need object_store features this build does not enable.
    pub fn open(url: &str) -> Result<Bucket, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let (store, prefix): (Box<dyn ObjectStore>, Path) = match parsed.scheme() {
            "memory" => {
                return Err(
                    "memory:// is one process's store; use file:// or s3:// to share it".into(),
                );
            }
            "s3" | "s3a" => {
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| format!("{url:?}: {e} (set AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION for an S3-compatible server)"))?;
                let prefix = Path::from_url_path(parsed.path())
                    .map_err(|e| format!("{url:?}: the path is not an object prefix: {e}"))?;
                (Box::new(s3), prefix)
            }
            _ => object_store::parse_url(&parsed).map_err(|e| {
                format!(
                    "{url:?}: {e} (this build has the file:// and s3:// backends; gs and az \
                     need object_store's gcp and azure features)"
                )
            })?,
        };
        Ok(Bucket {
            store: Arc::from(store),
            prefix,
        })
    }

    /// A bucket on an existing store (tests wrap one to inject failures).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Bucket {
        Bucket { store, prefix }
    }

    pub fn marker(&self) -> Path {
        self.prefix.clone().join(MARKER)
    }

    pub fn pass(&self) -> Path {
        self.prefix.clone().join(PASS)
    }

    pub fn manifests(&self) -> Path {
        self.prefix.clone().join(MANIFESTS)
    }

    /// Every published manifest object, with the series key its location names
    /// (objects that name none are left out): one listing of `manifests/`.
    pub async fn list_manifests(
        &self,
    ) -> Result<Vec<(SeriesKey, object_store::ObjectMeta)>, String> {
        use futures::TryStreamExt;
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&self.manifests()))
            .try_collect()
            .await
            .map_err(|e| format!("cannot list the published manifests: {e}"))?;
        Ok(listed
            .into_iter()
            .filter_map(|m| match self.key_of_manifest(&m.location) {
                Some(key) => Some((key, m)),
                None => {
                    tracing::warn!(
                        object = %m.location,
                        "replica: an object under the manifests prefix names no valid series; skipped"
                    );
                    None
                }
            })
            .collect())
    }

    /// A named snapshot's object.
    pub fn snapshot(&self, name: &str) -> Path {
        self.prefix
            .clone()
            .join(SNAPSHOTS)
            .join(format!("{name}{SNAPSHOT_SUFFIX}").as_str())
    }

    /// Every published snapshot object by snapshot name (objects that name none are
    /// left out), with its tag (e_tag, or size and time): one listing of `snapshots/`.
    pub async fn list_snapshots(&self) -> Result<BTreeMap<String, (Path, String)>, String> {
        use futures::TryStreamExt;
        let root = self.prefix.clone().join(SNAPSHOTS);
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| format!("cannot list the published snapshots: {e}"))?;
        let mut out = BTreeMap::new();
        for m in listed {
            let name = m
                .location
                .prefix_match(&root)
                .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>())
                .and_then(|parts| match parts.as_slice() {
                    [file] => file.strip_suffix(SNAPSHOT_SUFFIX).map(str::to_string),
                    _ => None,
                })
                .filter(|n| crate::record::Name::parse("snapshot", n).is_ok());
            match name {
                Some(n) => {
                    let tag = tag_of(&m);
                    out.insert(n, (m.location, tag));
                }
                None => tracing::warn!(object = %m.location,
                    "replica: an object under the snapshots prefix names no snapshot; skipped"),
            }
        }
        Ok(out)
    }

    pub fn manifest(&self, key: &SeriesKey) -> Path {
        let mut p = self.manifests();
        for part in key.parts() {
            p = p.join(part.as_str());
        }
        p.join(MANIFEST_OBJECT)
    }

    /// The folder of a series' data objects.
    pub fn data_dir(&self, key: &SeriesKey) -> Path {
        let mut p = self.prefix.clone().join(DATA);
        for part in key.parts() {
            p = p.join(part.as_str());
        }
        p
    }

    /// A data file's object: its name on disk and its checksum.
    pub fn data(&self, key: &SeriesKey, f: &DataFile) -> Path {
        self.data_dir(key)
            .join(format!("{}.{:016x}", f.name, f.xxh3).as_str())
    }

    /// The series a listed manifest object belongs to (`None`: not a manifest).
    pub fn key_of_manifest(&self, location: &Path) -> Option<SeriesKey> {
        let parts: Vec<String> = location
            .prefix_match(&self.manifests())?
            .map(|p| p.as_ref().to_string())
            .collect();
        let (last, key) = parts.split_last()?;
        if last != MANIFEST_OBJECT {
            return None;
        }
        let refs: Vec<&str> = key.iter().map(String::as_str).collect();
        SeriesKey::from_parts(&refs).ok()
    }
}

/// What tells one version of an object from the next: its e_tag, or its size and
/// modification time where the store gives none.
pub fn tag_of(m: &object_store::ObjectMeta) -> String {
    m.e_tag.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            m.size,
            m.last_modified.timestamp_nanos_opt().unwrap_or(0)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_open_the_backends_this_build_has() {
        let s3 = Bucket::open("s3://fastk-bucket/pub/east").unwrap();
        assert_eq!(s3.prefix.as_ref(), "pub/east");
        assert_eq!(s3.manifests().as_ref(), "pub/east/manifests");
        assert_eq!(s3.snapshot("fri").as_ref(), "pub/east/snapshots/fri.snap");
        let dir = tempfile::tempdir().unwrap();
        assert!(Bucket::open(&format!("file://{}", dir.path().display())).is_ok());
        let gs = Bucket::open("gs://bucket/pub").unwrap_err();
        assert!(gs.contains("gcp and azure features"), "{gs}");
        assert!(
            Bucket::open("memory:///")
                .unwrap_err()
                .contains("one process")
        );
        assert!(
            Bucket::open("not a url")
                .unwrap_err()
                .contains("is not a URL")
        );
    }
}
