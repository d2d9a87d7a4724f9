//! Commit-point assertions, on in release builds too: the plans, packs and entries
//! of a write, and the step from one state to the next.

use super::*;

/// Commit-point assertions on the plans (cheap, on in release builds too): months
/// strictly ascending within a write, generations ascending from the snapshot's
/// `next_generation` and below the new one, row counts that fit the format's `u32`.
pub(super) fn assert_plans(snap: &Snapshot, plans: &[MonthPlan], dropped: &[i32], next_gen: u64) {
    assert!(
        !plans.is_empty() || !dropped.is_empty(),
        "a commit publishes a chunk or drops a month"
    );
    assert!(
        dropped.windows(2).all(|w| w[0] < w[1]),
        "dropped months must be strictly ascending"
    );
    assert!(
        dropped
            .iter()
            .all(|m| snap.live.contains_key(m) && plans.iter().all(|p| p.month != *m)),
        "a dropped month must be live and not rewritten by the same commit"
    );
    if plans.is_empty() {
        assert!(next_gen > snap.next_generation, "next_generation grows");
        return;
    }
    assert!(
        plans.windows(2).all(|w| w[0].month < w[1].month),
        "months of one write must be strictly ascending"
    );
    assert!(
        plans.windows(2).all(|w| w[0].generation < w[1].generation),
        "generations of one write must be strictly ascending"
    );
    assert!(
        plans[0].generation >= snap.next_generation,
        "a new chunk reuses generation {} below next_generation {}",
        plans[0].generation,
        snap.next_generation
    );
    assert!(
        plans[plans.len() - 1].generation < next_gen,
        "a new chunk's generation is not below the new next_generation"
    );
    for p in plans {
        let rows = p.rows();
        assert!(rows > 0, "an empty chunk was planned");
        assert!(u32::try_from(rows).is_ok(), "a chunk's rows must fit u32");
        assert!(p.cols.iter().all(|c| c.len() == rows), "ragged columns");
        assert!(
            p.split
                .iter()
                .all(|runs| runs.iter().map(|r| r.len()).sum::<usize>() == rows),
            "ragged split columns"
        );
        assert!(
            p.split.is_empty() || (p.cols.is_empty() && p.split.len() == p.ncols()),
            "a split month keeps its rows in its runs only"
        );
    }
}

/// The packs of a commit: ascending, disjoint runs of two or more plans, all raw or
/// all compressed, with generations past every plan's and below the new
/// `next_generation`.
pub(super) fn assert_packs(plans: &[MonthPlan], packs: &[WritePack], next_gen: u64) {
    let last_plan = plans.last().map_or(0, |p| p.generation);
    for (k, pack) in packs.iter().enumerate() {
        assert!(
            pack.plans.len() >= 2 && pack.plans.end <= plans.len(),
            "a pack holds two or more of the commit's plans"
        );
        let run = &plans[pack.plans.clone()];
        assert!(
            run.iter()
                .all(|p| p.compressed.is_some() == run[0].compressed.is_some()),
            "a pack of a write holds raw or compressed chunks, not both"
        );
        assert!(
            pack.generation > last_plan && pack.generation < next_gen,
            "a pack's generation follows its chunks' and precedes next_generation"
        );
        if k > 0 {
            assert!(
                packs[k - 1].plans.end <= pack.plans.start
                    && packs[k - 1].generation < pack.generation,
                "packs of a write ascend and do not overlap"
            );
        }
    }
}

/// The entries written match their plans: month, generation, rows, version.
pub(super) fn assert_entries(plans: &[MonthPlan], entries: &[ChunkEntry], version: u64) {
    assert_eq!(plans.len(), entries.len(), "one entry per plan");
    for (p, e) in plans.iter().zip(entries) {
        assert_eq!(
            (e.month, e.generation),
            (p.month, p.generation),
            "entry/plan"
        );
        assert_eq!(e.rows, p.rows() as u64, "entry rows match the plan");
        assert_eq!(e.write_version, version, "entry write_version");
        assert_eq!(e.flags & FLAG_FULL != 0, p.full, "entry full flag");
    }
}

/// The new snapshot follows the old one: version up by exactly one (by zero for a
/// compaction), every generation below `next_generation`, months' chunks in
/// generation order.
pub(in crate::storage) fn assert_next(prev: &Snapshot, next: &Snapshot, bump: bool) {
    assert_eq!(next.version, prev.version + u64::from(bump), "version step");
    assert!(
        next.next_generation > prev.next_generation,
        "next_generation grows"
    );
    for chunks in next.live.values() {
        assert!(
            chunks
                .windows(2)
                .all(|w| w[0].entry.generation < w[1].entry.generation)
        );
        assert!(
            chunks
                .iter()
                .all(|c| c.entry.generation < next.next_generation),
            "a live chunk at or past next_generation"
        );
    }
}
