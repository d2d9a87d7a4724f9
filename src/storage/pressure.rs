//! What memory the host, or the cgroup the server runs in, has: the default size of
//! the decompressed-month cache, and when to release it.
//!
//! A decompressed image is process memory the kernel cannot reclaim (unlike a mapped
//! file's pages), so the cache is sized from the memory there is (at most
//! [`AUTO_CACHE_DIVISOR`]th of it, and never more than 1 GiB) and gives back its idle
//! images when the memory left falls under `storage.release_below_available_percent`.
//!
//! Sources, read fresh each time: `/proc/meminfo` (`MemTotal`, `MemAvailable`) and,
//! under cgroup v2, `memory.max` and `memory.current` of the process's cgroup. The
//! lower of the two limits counts; a host without either reports nothing and nothing
//! is released.

use std::path::Path;

/// The automatic cache size is the memory limit divided by this. An eighth: a day of
/// 100 symbols' trades decompressed (2.5 GB in the `ticks` benchmark) fits on a 24 GiB
/// host, and a read over it then decompresses each day once, not on every answer.
pub const AUTO_CACHE_DIVISOR: u64 = 8;
/// The automatic cache size never exceeds this (4 GiB).
pub const AUTO_CACHE_MAX_BYTES: u64 = 4 << 30;
/// Nor falls under this (16 MiB), however small the host.
pub const AUTO_CACHE_MIN_BYTES: u64 = 16 << 20;

/// Memory the process may still use, and the limit it is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl Memory {
    /// The host's memory, lowered to the cgroup's limit when one is set.
    pub fn now() -> Option<Memory> {
        let host = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo(&t));
        let cgroup = cgroup_dir().and_then(|d| cgroup_memory(&d));
        match (host, cgroup) {
            (Some(h), Some(c)) => Some(h.within(c)),
            (h, c) => h.or(c),
        }
    }

    /// The tighter of two views: the lower limit, the less memory left.
    pub fn within(self, other: Memory) -> Memory {
        Memory {
            total_bytes: self.total_bytes.min(other.total_bytes),
            available_bytes: self.available_bytes.min(other.available_bytes),
        }
    }

    /// True when less than `percent`% of the limit is left (0: never).
    pub fn under_pressure(&self, percent: u8) -> bool {
        percent > 0
            && u128::from(self.available_bytes) * 100
                < u128::from(self.total_bytes) * u128::from(percent)
    }

    /// `storage.decompressed_cache_bytes = 0`: an eighth of the limit, between 16 MiB
    /// and 4 GiB.
    pub fn auto_cache_bytes(&self) -> u64 {
        (self.total_bytes / AUTO_CACHE_DIVISOR).clamp(AUTO_CACHE_MIN_BYTES, AUTO_CACHE_MAX_BYTES)
    }
}

/// The cache size `storage.decompressed_cache_bytes = 0` stands for on this host (4
/// GiB where the memory cannot be read).
pub fn auto_cache_bytes() -> usize {
    let bytes = Memory::now().map_or(AUTO_CACHE_MAX_BYTES, |m| m.auto_cache_bytes());
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo` text (kB there).
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            kb.checked_mul(1024)
        })
    };
    Some(Memory {
        total_bytes: field("MemTotal")?,
        available_bytes: field("MemAvailable")?,
    })
}

/// The cgroup v2 directory of this process (`0::/path` of `/proc/self/cgroup`).
fn cgroup_dir() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')))
}

/// The limit (`memory.max`) and what is left under it (`memory.max - memory.current`)
/// of a cgroup v2 directory; nothing when the cgroup has no limit.
pub fn cgroup_memory(dir: &Path) -> Option<Memory> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?;
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(Memory {
        total_bytes: max,
        available_bytes: max.saturating_sub(current),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\n\
                           MemAvailable:    2000000 kB\nBuffers:          100 kB\n";

    #[test]
    fn meminfo_is_read_in_bytes() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(m.total_bytes, 24_576_000 * 1024);
        assert_eq!(m.available_bytes, 2_000_000 * 1024);
        assert!(parse_meminfo("MemTotal: 5 kB\n").is_none());
        assert!(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB\n").is_none());
    }

    #[test]
    fn pressure_is_less_than_the_percent_left() {
        let m = Memory {
            total_bytes: 1000,
            available_bytes: 99,
        };
        assert!(m.under_pressure(10));
        assert!(!m.under_pressure(9));
        assert!(!m.under_pressure(0), "0 turns the release off");
        let edge = Memory {
            available_bytes: 100,
            ..m
        };
        assert!(!edge.under_pressure(10));
    }

    #[test]
    fn the_automatic_cache_is_an_eighth_between_its_bounds() {
        let of = |total_bytes| {
            Memory {
                total_bytes,
                available_bytes: 0,
            }
            .auto_cache_bytes()
        };
        assert_eq!(of(64 << 30), 4 << 30);
        assert_eq!(of(24 << 30), 3 << 30);
        assert_eq!(of(4 << 30), 512 << 20);
        assert_eq!(of(1 << 30), 128 << 20);
        assert_eq!(of(64 << 20), 16 << 20);
    }

    #[test]
    fn a_cgroup_limit_lowers_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.max"), "2147483648\n").unwrap();
        std::fs::write(dir.path().join("memory.current"), "2000000000\n").unwrap();
        let c = cgroup_memory(dir.path()).unwrap();
        assert_eq!(
            (c.total_bytes, c.available_bytes),
            (2_147_483_648, 147_483_648)
        );
        let host = parse_meminfo(MEMINFO).unwrap();
        let m = host.within(c);
        assert_eq!(m.total_bytes, 2_147_483_648);
        assert!(m.under_pressure(10));
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert!(cgroup_memory(dir.path()).is_none(), "no limit, no view");
    }
}
