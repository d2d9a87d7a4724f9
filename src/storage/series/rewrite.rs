//! Rewrites of a series' existing months: compaction, compression of sealed months,
//! range delete, and the settings (retention, irregular) kept in the manifest.

use super::*;

impl Series {
    /// Merges every month that has more than one live chunk into one chunk.
    /// Returns the months compacted.
    pub fn compact(&self) -> Result<Vec<String>> {
        // A series with no directory and nothing unfolded has no files to merge: its
        // rows are kept by the catalog (`storage::resident`). Logged rows are folded
        // into files first, as for any series.
        if !self.is_materialized() && self.snapshot().unfolded.is_none() {
            // Still refused for a deleted series, as any change is.
            let _guard = self.lock_live()?;
            return Ok(Vec::new());
        }
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        let mut next_gen = snap.next_generation;
        let mut plans = Vec::new();
        for (&month, chunks) in &snap.live {
            if chunks.len() > 1 {
                let none: Vec<&[i64]> = vec![&[]; self.meta.key.kind().ncols()];
                plans.push(self.merge_month(&snap, month, &none, next_gen)?);
                next_gen += 1;
            }
        }
        if plans.is_empty() {
            return Ok(Vec::new());
        }
        let months = plans.iter().map(|p| partition_label(p.month)).collect();
        self.commit_inner(&snap, plans, next_gen, false)?;
        Ok(months)
    }

    /// Months of this series that ended more than `storage.compress_after` before
    /// `now_ms` and are not yet one compressed chunk (nothing when compression is off).
    pub fn sealed_uncompressed(&self, now_ms: i64) -> Vec<i32> {
        let Some(after) = self.opts.compress_after_ms else {
            return Vec::new();
        };
        // No directory, no files to compress (see `compact`).
        if !self.is_materialized() {
            return Vec::new();
        }
        let snap = self.snapshot();
        snap.live
            .iter()
            .filter(|(m, _)| self.meta.partitioning().end_ms(**m) < now_ms.saturating_sub(after))
            .filter(|(_, c)| !(c.len() == 1 && c[0].entry.flags & FLAG_COMPRESSED != 0))
            .map(|(m, _)| *m)
            .collect()
    }

    /// Rewrites each sealed month (see [`Series::sealed_uncompressed`]) as one
    /// compressed chunk with fresh sidecars, in one commit that keeps the version (the
    /// rows are the same). Returns the months compressed.
    pub fn compress_sealed(&self, now_ms: i64) -> Result<Vec<String>> {
        if self.sealed_uncompressed(now_ms).is_empty() {
            return Ok(Vec::new());
        }
        let _guard = self.lock_folded()?;
        let months = self.sealed_uncompressed(now_ms);
        if months.is_empty() {
            return Ok(Vec::new());
        }
        let snap = self.snapshot();
        let none: Vec<&[i64]> = vec![&[]; self.meta.key.kind().ncols()];
        let mut next_gen = snap.next_generation;
        let mut plans = Vec::with_capacity(months.len());
        for &month in &months {
            let mut plan = self.merge_month(&snap, month, &none, next_gen)?;
            plan.compressed = Some(crate::storage::codec::Effort::Thorough);
            plans.push(plan);
            next_gen += 1;
        }
        self.commit_inner(&snap, plans, next_gen, false)?;
        Ok(months.iter().map(|&m| partition_label(m)).collect())
    }

    /// Deletes the rows of `range` as one all-or-nothing commit: a month the range
    /// covers whole is dropped (its chunks become obsolete and are unlinked once no
    /// reader holds them), a month it cuts is rewritten without those rows. Deleting
    /// nothing commits nothing and keeps the version.
    pub fn delete_range(
        &self,
        range: TsRange,
        expected_version: Option<u64>,
    ) -> Result<DeleteReport> {
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        check_expected(&snap, expected_version)?;
        let mut next_gen = snap.next_generation;
        let (mut plans, mut dropped, mut months) = (Vec::new(), Vec::new(), Vec::new());
        let mut deleted = 0u64;
        for (&month, chunks) in &snap.live {
            let inside = |c: &Arc<ChunkRef>| {
                range.contains(c.entry.first_ts) && range.contains(c.entry.last_ts)
            };
            let touches = |c: &&Arc<ChunkRef>| {
                c.entry.last_ts >= range.lo() && c.entry.first_ts <= range.hi()
            };
            if !chunks.iter().any(|c| touches(&c)) {
                continue;
            }
            if chunks.iter().all(inside) {
                deleted += chunks.iter().map(|c| c.entry.rows).sum::<u64>();
                dropped.push(month);
            } else {
                let (plan, removed) = self.month_without(&snap, month, range, next_gen)?;
                if removed == 0 {
                    continue;
                }
                deleted += removed;
                plans.push(plan);
                next_gen += 1;
            }
            months.push(partition_label(month));
        }
        if deleted == 0 {
            return Ok(DeleteReport {
                version: snap.version,
                ..DeleteReport::default()
            });
        }
        if plans.is_empty() {
            // Every commit moves next_generation on, including one that only drops.
            next_gen += 1;
        }
        self.commit_dropping(&snap, plans, &dropped, next_gen, true)?;
        Ok(DeleteReport {
            deleted,
            months,
            version: snap.version + 1,
        })
    }

    /// Sets the retention (0: keep forever) by publishing the manifest again with it;
    /// the rows and the version are unchanged. Returns whether it changed.
    pub fn set_retention(&self, retention_ms: i64) -> Result<bool> {
        assert!(retention_ms >= 0, "a retention is not negative");
        self.set_settings(Some(retention_ms), None)
    }

    /// Sets the series' settings given (retention, whether kline bars may sit off the
    /// timeframe's grid) by publishing the manifest again with them; the rows and the
    /// version are unchanged. Returns whether anything changed.
    pub fn set_settings(&self, retention_ms: Option<i64>, irregular: Option<bool>) -> Result<bool> {
        assert!(
            retention_ms.is_none_or(|r| r >= 0),
            "a retention is not negative"
        );
        if retention_ms.is_none() && irregular.is_none() {
            return Ok(false);
        }
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        let retention_ms = retention_ms.unwrap_or(snap.retention_ms);
        let irregular = irregular.unwrap_or(snap.irregular);
        if snap.retention_ms == retention_ms && snap.irregular == irregular {
            return Ok(false);
        }
        let next = Snapshot {
            meta: Arc::clone(&snap.meta),
            version: snap.version,
            next_generation: snap.next_generation,
            retention_ms,
            irregular,
            live: snap.live.clone(),
            obsolete: snap.obsolete.clone(),
            wal_lsn: snap.wal_lsn,
            unfolded: None,
            superseded: Vec::new(),
        };
        match self.publish_manifest(&next.to_manifest()) {
            Ok(()) => {
                self.install(next);
                Ok(true)
            }
            Err((e, OnDisk::Next)) => {
                self.install(next);
                Err(e)
            }
            Err((e, OnDisk::Previous { .. })) => Err(e),
        }
    }
}
