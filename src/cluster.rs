//! A static shard map: which node of a cluster of FastK servers owns a symbol, and
//! where clients reach it (docs/scale-out.md, "Symbol-sharded nodes").
//!
//! Each node is an ordinary FastK server with its own store; every series of a symbol
//! lives on the node that owns the symbol. The map is the same JSON on every node
//! (`cluster.shard_map`), and `cluster.node` names the node itself:
//!
//! ```json
//! {"nodes": {"a": "grpc://10.0.0.1:8815", "b": "grpc://10.0.0.2:8815"},
//!  "ranges": [{"from": "", "node": "a"}, {"from": "M", "node": "b"}],
//!  "replicas": {"b": ["grpc://10.0.0.3:8815"]}}
//! ```
//!
//! `replicas` (optional) lists, per node, the Flight URIs of read replicas that follow
//! it (docs/scale-out.md, section 2): GetFlightInfo endpoints of that node's series
//! carry the node's location first and its replicas' after it, and a forwarded
//! GetFlightInfo goes to a replica when the node does not answer.
//!
//! The owner of a symbol is the range with the greatest `from <= symbol` (byte order,
//! as symbols are sorted everywhere else), so contiguous symbols stay on one node and
//! a many-series answer stays in symbol order across nodes. What the map is used for
//! is in `flight::info` (GetFlightInfo endpoints located on the owners) and the
//! `shard-map` action (clients route their writes with it).
//!
//! The map comes from `cluster.shard_map` (the JSON itself, fixed for the process's
//! life) or from the file `cluster.shard_map_path`, which a running node reads again
//! every few seconds ([`ClusterCell::reload`]): a map that changed and is valid
//! replaces the one in use at once, for every request that starts after; one that is
//! not valid is refused, the map in use stays, and `/health` says why until the file
//! is fixed.

use crate::sync::{LockExt, RwLockExt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

/// Most nodes a map may name: a map is read on every GetFlightInfo of many series,
/// and each node is one call of the fan-out.
pub const MAX_NODES: usize = 64;
/// Most ranges a map may hold.
pub const MAX_RANGES: usize = 4096;
/// Most replicas the map may list for one node.
pub const MAX_REPLICAS_PER_NODE: usize = 8;

/// The map as configured (and as the `shard-map` action answers it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardMapJson {
    /// Node name -> the Flight URI clients reach it at (`grpc://host:port` or
    /// `grpc+tcp://host:port`, `grpc+tls://host:port`).
    pub nodes: BTreeMap<String, String>,
    /// Symbol ranges, ascending by `from`; the first starts at "".
    pub ranges: Vec<RangeJson>,
    /// Node name -> the Flight URIs of read replicas following it, in the order
    /// clients should try them after the node (optional).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replicas: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeJson {
    /// First symbol of the range (inclusive); the range ends where the next begins.
    pub from: String,
    /// The node owning the range.
    pub node: String,
}

/// A validated shard map, seen from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This node's name (a key of `map.nodes`).
    me: String,
    /// The map, validated: ranges strictly ascending from "", every node named.
    map: ShardMapJson,
}

impl Cluster {
    /// `None` when both keys are empty (no cluster: every series is local); the map
    /// otherwise, or why it is not usable.
    pub fn parse(node: &str, shard_map: &str) -> Result<Option<Cluster>, String> {
        match (node.is_empty(), shard_map.trim().is_empty()) {
            (true, true) => return Ok(None),
            (false, true) => {
                return Err("cluster.node is set: cluster.shard_map must be too".into());
            }
            (true, false) => {
                return Err("cluster.shard_map is set: cluster.node must name this node".into());
            }
            (false, false) => {}
        }
        let map: ShardMapJson = serde_json::from_str(shard_map).map_err(|e| {
            format!(
                "cluster.shard_map must be JSON like {{\"nodes\": {{\"a\": \"grpc://host:port\"}}, \"ranges\": [{{\"from\": \"\", \"node\": \"a\"}}]}}: {e}"
            )
        })?;
        if map.nodes.is_empty() || map.nodes.len() > MAX_NODES {
            return Err(format!("cluster.shard_map: 1 to {MAX_NODES} nodes"));
        }
        for (name, uri) in &map.nodes {
            check_uri(&format!("node {name:?}"), uri)?;
        }
        for (name, uris) in &map.replicas {
            if !map.nodes.contains_key(name) {
                return Err(format!(
                    "cluster.shard_map: replicas are listed for {name:?}, which is not in nodes"
                ));
            }
            if uris.is_empty() || uris.len() > MAX_REPLICAS_PER_NODE {
                return Err(format!(
                    "cluster.shard_map: node {name:?} lists 1 to {MAX_REPLICAS_PER_NODE} replicas"
                ));
            }
            for uri in uris {
                check_uri(&format!("a replica of node {name:?}"), uri)?;
            }
        }
        if map.ranges.is_empty() || map.ranges.len() > MAX_RANGES {
            return Err(format!("cluster.shard_map: 1 to {MAX_RANGES} ranges"));
        }
        if !map.ranges[0].from.is_empty() {
            return Err("cluster.shard_map: the first range must start at \"\"".into());
        }
        for w in map.ranges.windows(2) {
            if w[0].from >= w[1].from {
                return Err(format!(
                    "cluster.shard_map: ranges must ascend strictly by from ({:?} then {:?})",
                    w[0].from, w[1].from
                ));
            }
        }
        if let Some(r) = map.ranges.iter().find(|r| !map.nodes.contains_key(&r.node)) {
            return Err(format!(
                "cluster.shard_map: range {:?} names node {:?}, which is not in nodes",
                r.from, r.node
            ));
        }
        if !map.nodes.contains_key(node) {
            return Err(format!(
                "cluster.node {node:?} is not a node of cluster.shard_map"
            ));
        }
        Ok(Some(Cluster {
            me: node.to_string(),
            map,
        }))
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The node owning `symbol`: the range with the greatest `from <= symbol`.
    pub fn owner(&self, symbol: &str) -> &str {
        let i = self
            .map
            .ranges
            .partition_point(|r| r.from.as_str() <= symbol);
        // The first range starts at "", which every symbol is at or after.
        debug_assert!(i >= 1);
        &self.map.ranges[i.max(1) - 1].node
    }

    /// Whether `node` is this node.
    pub fn is_me(&self, node: &str) -> bool {
        node == self.me
    }

    /// The Flight URI of `node`, as clients reach it.
    pub fn uri(&self, node: &str) -> Option<&str> {
        self.map.nodes.get(node).map(String::as_str)
    }

    /// Every other node and every replica the map names, as (name, URI): what this node
    /// probes for `/health` (a replica is named "<node> replica <i>").
    pub fn peers(&self) -> Vec<(String, String)> {
        let nodes = self
            .map
            .nodes
            .iter()
            .filter(|(n, _)| !self.is_me(n))
            .map(|(n, u)| (n.clone(), u.clone()));
        let replicas = self.map.replicas.iter().flat_map(|(n, uris)| {
            uris.iter()
                .enumerate()
                .map(move |(i, u)| (format!("{n} replica {}", i + 1), u.clone()))
        });
        nodes.chain(replicas).collect()
    }

    /// The Flight URIs of the read replicas following `node` (empty: none listed).
    pub fn replicas(&self, node: &str) -> &[String] {
        self.map.replicas.get(node).map_or(&[], Vec::as_slice)
    }

    /// Every node owning a range, in the order of their first range (symbol order).
    pub fn owners_in_order(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.map.ranges {
            if !out.contains(&r.node.as_str()) {
                out.push(&r.node);
            }
        }
        out
    }

    /// `symbols` sorted (as a many-series read orders them) and cut into runs of
    /// consecutive symbols of one range, each with its owner, in symbol order: the
    /// parts' answers put one after the other are in symbol order.
    pub fn split<'a>(&self, symbols: &'a [String]) -> Vec<(&str, Vec<&'a str>)> {
        let mut sorted: Vec<&'a str> = symbols.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let range_of = |s: &str| self.map.ranges.partition_point(|r| r.from.as_str() <= s);
        let mut parts: Vec<(usize, Vec<&'a str>)> = Vec::new();
        for s in sorted {
            let r = range_of(s);
            match parts.last_mut() {
                Some((last, v)) if *last == r => v.push(s),
                _ => parts.push((r, vec![s])),
            }
        }
        parts
            .into_iter()
            .map(|(r, v)| (self.map.ranges[r.max(1) - 1].node.as_str(), v))
            .collect()
    }

    /// Whether every node owns one run of consecutive ranges: then the answers of the
    /// nodes in [`Cluster::owners_in_order`] put one after the other are in symbol
    /// order, for `"*"` too.
    pub fn contiguous(&self) -> bool {
        let mut seen: Vec<&str> = Vec::new();
        for r in &self.map.ranges {
            if seen.last() != Some(&r.node.as_str()) {
                if seen.contains(&r.node.as_str()) {
                    return false;
                }
                seen.push(&r.node);
            }
        }
        true
    }

    /// The map as configured.
    pub fn map(&self) -> &ShardMapJson {
        &self.map
    }
}

/// A node's or replica's URI: `grpc://host:port` (or `grpc+tcp://`, `grpc+tls://`).
fn check_uri(what: &str, uri: &str) -> Result<(), String> {
    let rest = uri
        .strip_prefix("grpc://")
        .or_else(|| uri.strip_prefix("grpc+tcp://"))
        .or_else(|| uri.strip_prefix("grpc+tls://"));
    match rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
        true => Err(format!(
            "cluster.shard_map: {what} has URI {uri:?}; expected grpc://host:port \
             (grpc+tls://host:port for nodes with [tls] on)"
        )),
        false => Ok(()),
    }
}

/// Most bytes of a shard map file (4,096 ranges and 64 nodes fit with room to spare).
pub const MAX_MAP_FILE_BYTES: u64 = 4 << 20;

/// Reads the shard map file at `path`, refusing one past [`MAX_MAP_FILE_BYTES`].
fn read_map_file(path: &Path) -> Result<String, String> {
    let what = || format!("cluster.shard_map_path {}", path.display());
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", what()))?
        .len();
    if len > MAX_MAP_FILE_BYTES {
        return Err(format!(
            "{}: {len} bytes, past the limit of {MAX_MAP_FILE_BYTES}",
            what()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", what()))
}

/// The shard map a node serves with: fixed when it comes from `cluster.shard_map`,
/// swapped whole when it comes from a file that changed ([`ClusterCell::reload`]).
/// Each request takes the map once ([`ClusterCell::get`]) and keeps it to its end.
#[derive(Debug, Default)]
pub struct ClusterCell {
    node: String,
    /// The map's file, when it comes from one.
    path: Option<PathBuf>,
    current: RwLock<Option<Arc<Cluster>>>,
    /// The file's text the current map was parsed from, and why the last read of the
    /// file was refused (none: the file is the map in use).
    file: Mutex<(String, Option<String>)>,
}

impl ClusterCell {
    /// The map of `cluster.node` with `cluster.shard_map` (inline JSON) or
    /// `cluster.shard_map_path` (a file, read now); at most one of the two is set.
    pub fn open(node: &str, inline: &str, path: &Path) -> Result<ClusterCell, String> {
        let from_file = !path.as_os_str().is_empty();
        if from_file && !inline.trim().is_empty() {
            return Err(
                "cluster.shard_map and cluster.shard_map_path are both set: give the map one way"
                    .into(),
            );
        }
        let text = if from_file {
            read_map_file(path)?
        } else {
            inline.to_string()
        };
        let map = Cluster::parse(node, &text)?;
        Ok(ClusterCell {
            node: node.to_string(),
            path: from_file.then(|| path.to_path_buf()),
            current: RwLock::new(map.map(Arc::new)),
            file: Mutex::new((if from_file { text } else { String::new() }, None)),
        })
    }

    /// The map in use (none: a single node).
    pub fn get(&self) -> Option<Arc<Cluster>> {
        self.current.read_now().clone()
    }

    /// Whether the map comes from a file that [`ClusterCell::reload`] reads again.
    pub fn reloads(&self) -> bool {
        self.path.is_some()
    }

    /// Reads the map's file again: `Ok(true)` when it changed and now serves,
    /// `Ok(false)` when it is the map in use (or there is no file), `Err` when it cannot
    /// be read or is not a valid map for this node (the map in use stays; the reason
    /// is kept for [`ClusterCell::refused`] until a read succeeds).
    pub fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let mut file = self.file.locked();
        let read = read_map_file(path).and_then(|text| {
            if text == file.0 {
                return Ok(None);
            }
            match Cluster::parse(&self.node, &text)? {
                Some(map) => Ok(Some((text, map))),
                None => Err(format!(
                    "cluster.shard_map_path {}: the file is empty",
                    path.display()
                )),
            }
        });
        match read {
            Ok(None) => {
                file.1 = None;
                Ok(false)
            }
            Ok(Some((text, map))) => {
                assert!(
                    map.is_me(&self.node),
                    "cluster: a reloaded map names this node"
                );
                *self.current.write_now() = Some(Arc::new(map));
                *file = (text, None);
                Ok(true)
            }
            Err(why) => {
                file.1 = Some(why.clone());
                Err(why)
            }
        }
    }

    /// Why the last read of the map's file was refused, while it is (the map in use
    /// is the one read before).
    pub fn refused(&self) -> Option<String> {
        self.file.locked().1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"{"nodes": {"a": "grpc://127.0.0.1:1", "b": "grpc+tls://127.0.0.1:2"},
        "ranges": [{"from": "", "node": "a"}, {"from": "M", "node": "b"}, {"from": "T", "node": "a"}]}"#;

    #[test]
    fn owner_is_the_range_with_the_greatest_from_at_or_below() {
        let c = Cluster::parse("a", MAP).unwrap().unwrap();
        for (s, want) in [
            ("", "a"),
            ("AAA", "a"),
            ("LZZZ", "a"),
            ("M", "b"),
            ("MA", "b"),
            ("SZZ", "b"),
            ("T", "a"),
            ("ZZZ", "a"),
            ("m", "a"),
        ] {
            assert_eq!(c.owner(s), want, "{s}");
        }
        assert_eq!(c.owners_in_order(), ["a", "b"]);
        let syms: Vec<String> = ["N", "A", "U", "O"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            c.split(&syms),
            vec![("a", vec!["A"]), ("b", vec!["N", "O"]), ("a", vec!["U"])]
        );
        assert!(!c.contiguous(), "a owns two ranges with b's between them");
        let two = r#"{"nodes": {"a": "grpc://h:1", "b": "grpc://h:2"},
            "ranges": [{"from": "", "node": "a"}, {"from": "F", "node": "a"}, {"from": "M", "node": "b"}]}"#;
        assert!(Cluster::parse("b", two).unwrap().unwrap().contiguous());
        assert!(c.is_me("a") && !c.is_me("b"));
        assert_eq!(c.uri("b"), Some("grpc+tls://127.0.0.1:2"));
        assert!(c.replicas("a").is_empty() && c.replicas("b").is_empty());
        let with = r#"{"nodes": {"a": "grpc://h:1", "b": "grpc://h:2"},
            "ranges": [{"from": "", "node": "a"}, {"from": "M", "node": "b"}],
            "replicas": {"b": ["grpc://h:3", "grpc://h:4"]}}"#;
        let c = Cluster::parse("a", with).unwrap().unwrap();
        assert_eq!(c.replicas("b"), ["grpc://h:3", "grpc://h:4"]);
        assert!(c.replicas("a").is_empty());
        assert_eq!(
            c.peers(),
            [
                ("b".to_string(), "grpc://h:2".to_string()),
                ("b replica 1".to_string(), "grpc://h:3".to_string()),
                ("b replica 2".to_string(), "grpc://h:4".to_string()),
            ]
        );
    }

    #[test]
    fn bad_maps_are_refused_with_the_reason() {
        assert_eq!(Cluster::parse("", ""), Ok(None));
        for (node, map, needle) in [
            ("a", "", "shard_map must be"),
            ("", MAP, "cluster.node must"),
            ("c", MAP, "not a node"),
            ("a", "{", "JSON"),
            ("a", r#"{"nodes": {}, "ranges": []}"#, "nodes"),
            (
                "a",
                r#"{"nodes": {"a": "http://x:1"}, "ranges": [{"from": "", "node": "a"}]}"#,
                "grpc://",
            ),
            (
                "a",
                r#"{"nodes": {"a": "grpc://x:1"}, "ranges": [{"from": "B", "node": "a"}]}"#,
                "start at",
            ),
            (
                "a",
                r#"{"nodes": {"a": "grpc://x:1"}, "ranges": [{"from": "", "node": "a"}, {"from": "", "node": "a"}]}"#,
                "ascend",
            ),
            (
                "a",
                r#"{"nodes": {"a": "grpc://x:1"}, "ranges": [{"from": "", "node": "z"}]}"#,
                "not in nodes",
            ),
            (
                "a",
                r#"{"nodes": {"a": "grpc://x:1"}, "ranges": [{"from": "", "node": "a"}], "epoch": 1}"#,
                "JSON",
            ),
            (
                "a",
                r#"{"nodes": {"a": "grpc://x:1"}, "ranges": [{"from": "", "node": "a"}], "replicas": {"z": ["grpc://x:2"]}}"#,
                "not in nodes",
            ),
            (
                "a",
                r#"{"nodes": {"a": "grpc://x:1"}, "ranges": [{"from": "", "node": "a"}], "replicas": {"a": []}}"#,
                "1 to 8 replicas",
            ),
            (
                "a",
                r#"{"nodes": {"a": "grpc://x:1"}, "ranges": [{"from": "", "node": "a"}], "replicas": {"a": ["http://x:2"]}}"#,
                "a replica of node",
            ),
        ] {
            let e = Cluster::parse(node, map).unwrap_err();
            assert!(e.contains(needle), "{node} {map}: {e}");
        }
    }

    /// A map read from a file follows the file: a valid change replaces it whole, an
    /// invalid one is refused with the map in use kept, and a fixed file clears the
    /// refusal.
    #[test]
    fn a_map_file_is_read_again_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shards.json");
        std::fs::write(&path, MAP).unwrap();
        assert!(
            ClusterCell::open("a", MAP, &path).is_err(),
            "both ways at once"
        );
        let cell = ClusterCell::open("a", "", &path).unwrap();
        assert!(cell.reloads());
        assert_eq!(cell.get().unwrap().owner("N"), "b");
        assert_eq!(cell.reload(), Ok(false), "the same file");
        let held = cell.get().unwrap();
        let moved = MAP.replace(
            r#"{"from": "M", "node": "b"}"#,
            r#"{"from": "P", "node": "b"}"#,
        );
        std::fs::write(&path, &moved).unwrap();
        assert_eq!(cell.reload(), Ok(true));
        assert_eq!(cell.get().unwrap().owner("N"), "a", "N moved to a");
        assert_eq!(held.owner("N"), "b", "a request's map stays what it took");
        for bad in [
            "{",
            r#"{"nodes": {"b": "grpc://h:2"}, "ranges": [{"from": "", "node": "b"}]}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let why = cell.reload().unwrap_err();
            assert_eq!(cell.refused().as_deref(), Some(why.as_str()));
            assert_eq!(cell.get().unwrap().owner("N"), "a", "the map in use stays");
        }
        std::fs::remove_file(&path).unwrap();
        assert!(cell.reload().unwrap_err().contains("shards.json"));
        std::fs::write(&path, &moved).unwrap();
        assert_eq!(cell.reload(), Ok(false), "back to the map in use");
        assert_eq!(cell.refused(), None);
        let inline = ClusterCell::open("a", MAP, Path::new("")).unwrap();
        assert!(!inline.reloads());
        assert_eq!(inline.reload(), Ok(false));
        assert!(
            ClusterCell::open("", "", Path::new(""))
                .unwrap()
                .get()
                .is_none()
        );
    }
}
