//! Collects the checked rows of an import, column-major, ready for one write.
//!
//! Every row is checked as it arrives (timestamp range, OHLC rules); duplicates are
//! found once all inputs are read, by sorting. A bad row is either counted towards the
//! report that stops the import (the default: the first [`REPORT_MAX`] are kept) or,
//! with `--skip-invalid`, written to the rejects file with its reason as it arrives,
//! so a file full of rejects does not fill memory.
//!
//! Where each row came from (file and line) is kept without a per-row cost: rows
//! arrive in file order and lines mostly follow one another, so a "mark" is stored
//! only where that run breaks (a new file, a header, a blank or rejected line).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Result, TransferError};
use crate::record::{KeyShape, KlineRecord, SEQ_UNASSIGNED, SeriesKind, row_key};
use crate::storage::WriteBatch;

/// Distinct source values of a side column the summary lists; more are counted
/// together.
const SIDE_TALLY_MAX: usize = 12;

/// How many bad rows the default (stopping) mode reports.
pub const REPORT_MAX: usize = 10;

/// A refused row: where it was, why, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub file: String,
    /// 1-based line of a CSV file, or 1-based row of a Parquet or Arrow file.
    pub line: u64,
    pub reason: String,
    /// The original line for CSV rows refused while parsing; otherwise the row's stored
    /// integers (`ts,open,high,low,close,volume` or `ts,value`).
    pub raw: String,
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

/// Whether the caller should keep reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Go,
    Stop,
}

/// A run of rows whose lines follow one another, starting at `row`.
#[derive(Debug, Clone, Copy)]
struct Mark {
    row: u64,
    file: u32,
    line: u64,
}

/// The rows collected so far, plus the bookkeeping of rejects and origins.
pub struct RowSink {
    pub batch: WriteBatch,
    kind: SeriesKind,
    /// The timestamps the series can hold (inclusive), in its unit.
    bounds: (i64, i64),
    /// How a side column's source values mapped: (text, side, rows). The first
    /// [`SIDE_TALLY_MAX`] distinct values have an entry each; past them, one
    /// "(other values)" entry per side (three at most) gathers the rest.
    sides: Vec<(Box<[u8]>, i64, u64)>,
    files: Vec<String>,
    marks: Vec<Mark>,
    next: (u32, u64),
    /// Rows seen, good or bad.
    pub rows_read: u64,
    pub rejected: u64,
    /// The first rejects (always kept, for the report).
    pub first_rejects: Vec<Reject>,
    rejects_out: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
}

impl RowSink {
    /// `rejects`: the file to write rejects to (`--skip-invalid`), or `None` to stop
    /// after [`REPORT_MAX`] rejects.
    pub fn new(
        kind: SeriesKind,
        bounds: (i64, i64),
        files: Vec<String>,
        rejects: Option<&Path>,
    ) -> Result<RowSink> {
        let rejects_out = match rejects {
            Some(p) => {
                let f = std::fs::File::create(p).map_err(|e| TransferError::io(p, e))?;
                let mut w = std::io::BufWriter::new(f);
                w.write_all(b"file,line,reason,raw\n")
                    .map_err(|e| TransferError::io(p, e))?;
                Some((p.to_path_buf(), w))
            }
            None => None,
        };
        Ok(RowSink {
            batch: WriteBatch::with_capacity(kind.ncols(), 0),
            kind,
            bounds,
            sides: Vec::new(),
            files,
            marks: Vec::new(),
            next: (u32::MAX, 0),
            rows_read: 0,
            rejected: 0,
            first_rejects: Vec::new(),
            rejects_out,
        })
    }

    /// Reserves room for about `rows` more rows (an estimate from the file size).
    pub fn reserve(&mut self, rows: usize) {
        for c in &mut self.batch.cols {
            c.reserve(rows);
        }
    }

    pub fn skipping(&self) -> bool {
        self.rejects_out.is_some()
    }

    /// Checks one converted row and keeps it, or rejects it. `raw` renders the
    /// original text, only called for a reject.
    #[inline]
    pub fn push(
        &mut self,
        file: u32,
        line: u64,
        row: &[i64],
        raw: impl FnOnce() -> String,
    ) -> Result<Flow> {
        self.rows_read += 1;
        if !(self.bounds.0..=self.bounds.1).contains(&row[0]) {
            let why = match self.kind.is_tick() {
                true => "ts outside 1970-01-01 to 2262-04-11",
                false => "ts outside years 1000 to 9999",
            };
            return self.reject(file, line, why.into(), raw);
        }
        if let Some(why) = crate::record::tick_row_error(self.kind, |c| row[c]) {
            return self.reject(file, line, why.into(), raw);
        }
        if self.kind == SeriesKind::Kline {
            let r = KlineRecord {
                ts: row[0],
                open: row[1],
                high: row[2],
                low: row[3],
                close: row[4],
                volume: row[5],
            };
            if let Err(why) = r.check() {
                return self.reject(file, line, why.into(), raw);
            }
        }
        if self.next != (file, line) {
            self.marks.push(Mark {
                row: self.batch.len() as u64,
                file,
                line,
            });
        }
        self.next = (file, line + 1);
        for (c, v) in self.batch.cols.iter_mut().zip(row) {
            c.push(*v);
        }
        Ok(Flow::Go)
    }

    /// Counts that a side column's source value `text` became `side`.
    #[inline]
    pub fn tally_side(&mut self, text: &[u8], side: i64) {
        if let Some(e) = self
            .sides
            .iter_mut()
            .find(|(t, s, _)| *s == side && **t == *text)
        {
            e.2 += 1;
        } else if self.sides.len() < SIDE_TALLY_MAX {
            self.sides.push((text.into(), side, 1));
        } else {
            // Past the cap, one entry per side value gathers the rest (3 at most).
            let other: &[u8] = b"(other values)";
            match self
                .sides
                .iter_mut()
                .find(|(t, s, _)| **t == *other && *s == side)
            {
                Some(e) => e.2 += 1,
                None => self.sides.push((other.into(), side, 1)),
            }
        }
    }

    /// The summary's line on how a side column mapped (`None`: no side column read).
    pub fn side_note(&self) -> Option<String> {
        if self.sides.is_empty() {
            return None;
        }
        let what = |s: i64| match s {
            1 => "buyer-initiated",
            -1 => "seller-initiated",
            _ => "unknown",
        };
        let parts: Vec<String> = self
            .sides
            .iter()
            .map(|(t, s, n)| {
                format!(
                    "{:?} -> {s} ({}) x{n}",
                    String::from_utf8_lossy(t),
                    what(*s)
                )
            })
            .collect();
        Some(format!("side mapped: {}", parts.join(", ")))
    }

    /// Records a row refused before it became a record (unparsable fields).
    pub fn reject_unparsed(
        &mut self,
        file: u32,
        line: u64,
        reason: String,
        raw: impl FnOnce() -> String,
    ) -> Result<Flow> {
        self.rows_read += 1;
        self.reject(file, line, reason, raw)
    }

    fn reject(
        &mut self,
        file: u32,
        line: u64,
        reason: String,
        raw: impl FnOnce() -> String,
    ) -> Result<Flow> {
        self.rejected += 1;
        let r = Reject {
            file: self.files[file as usize].clone(),
            line,
            reason,
            raw: raw(),
        };
        if let Some((path, w)) = &mut self.rejects_out {
            write_reject(w, &r).map_err(|e| TransferError::io(path, e))?;
        }
        let stop = self.rejects_out.is_none() && self.first_rejects.len() + 1 >= REPORT_MAX;
        if self.first_rejects.len() < REPORT_MAX {
            self.first_rejects.push(r);
        }
        Ok(if stop { Flow::Stop } else { Flow::Go })
    }

    /// File and line of kept row `row`.
    pub fn origin(&self, row: usize) -> (u32, u64) {
        let i = self.marks.partition_point(|m| m.row <= row as u64) - 1;
        let m = self.marks[i];
        (m.file, m.line + (row as u64 - m.row))
    }

    /// Sorts the rows by their key (`ts`, or `(ts, seq)` for ticks) and handles
    /// repeated keys: the first occurrence (in input order) is kept; later ones are
    /// rejected, naming the first one's place. Tick rows left to the store to number
    /// (no `seq`) never repeat a key: they keep their input order after the numbered
    /// rows of their `ts`, as the store numbers them. Returns whether the import may go
    /// on (always, when skipping invalid rows).
    pub fn finish(&mut self) -> Result<Flow> {
        let shape = self.kind.layout().key;
        let cols: Vec<&[i64]> = self.batch.cols.iter().map(|c| c.as_slice()).collect();
        let key = |r: usize| row_key(shape, &cols, r);
        let assigned = |r: usize| shape == KeyShape::TsSeq && cols[1][r] == SEQ_UNASSIGNED;
        let stopped = |s: &RowSink| !s.skipping() && s.rejected > 0;
        let n = self.batch.len();
        let in_order = (1..n).all(|r| {
            let (a, b) = (key(r - 1), key(r));
            a < b || (a == b && assigned(r))
        });
        if in_order {
            self.flush()?;
            return Ok(if stopped(self) { Flow::Stop } else { Flow::Go });
        }
        let mut perm: Vec<u32> = (0..n as u32).collect();
        // A stable sort keeps input order among equal keys: the first one wins.
        perm.sort_by_key(|&i| key(i as usize));
        let mut keep = Vec::with_capacity(perm.len());
        let mut dups = Vec::new();
        for (k, &i) in perm.iter().enumerate() {
            let i_ = i as usize;
            if k > 0 && key(perm[k - 1] as usize) == key(i_) && !assigned(i_) {
                let first = *keep.last().expect("a kept row precedes a duplicate");
                dups.push((i_, first as usize));
            } else {
                keep.push(i);
            }
        }
        drop(perm);
        let mut flow = Flow::Go;
        dups.sort_unstable();
        let what = match shape {
            KeyShape::Ts => "ts",
            KeyShape::TsSeq => "(ts, seq)",
        };
        for (dup, first) in dups {
            let (ff, fl) = self.origin(first);
            let (file, line) = self.origin(dup);
            let shown = match shape {
                KeyShape::Ts => self.batch.cols[0][dup].to_string(),
                KeyShape::TsSeq => format!(
                    "({}, {})",
                    self.batch.cols[0][dup], self.batch.cols[1][dup] as u64
                ),
            };
            let reason = format!(
                "duplicate {what} {shown} (first at {}:{fl})",
                self.files[ff as usize]
            );
            let raw = self
                .batch
                .cols
                .iter()
                .map(|c| c[dup].to_string())
                .collect::<Vec<_>>();
            if self.reject(file, line, reason, || raw.join(","))? == Flow::Stop {
                flow = Flow::Stop;
                break;
            }
        }
        if stopped(self) {
            flow = Flow::Stop;
        }
        if flow == Flow::Go {
            for col in self.batch.cols.iter_mut() {
                *col = keep.iter().map(|&i| col[i as usize]).collect();
            }
        }
        self.flush()?;
        Ok(flow)
    }

    fn flush(&mut self) -> Result<()> {
        if let Some((path, w)) = &mut self.rejects_out {
            w.flush().map_err(|e| TransferError::io(path, e))?;
        }
        Ok(())
    }
}

/// One CSV line of the rejects file: `file,line,reason,raw`, quoted as needed.
fn write_reject(w: &mut impl Write, r: &Reject) -> std::io::Result<()> {
    write_field(w, &r.file)?;
    write!(w, ",{},", r.line)?;
    write_field(w, &r.reason)?;
    w.write_all(b",")?;
    write_field(w, &r.raw)?;
    w.write_all(b"\n")
}

fn write_field(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        write!(w, "\"{}\"", s.replace('"', "\"\""))
    } else {
        w.write_all(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_follow_marks_and_duplicates_keep_the_first() {
        let bounds = (crate::record::TS_MIN, crate::record::TS_MAX);
        let files = vec!["a.csv".into(), "b.csv".into()];
        let mut s = RowSink::new(SeriesKind::Scalar, bounds, files, None).unwrap();
        let none = String::new;
        for (f, line, ts) in [(0, 2, 10), (0, 3, 20), (0, 5, 30), (1, 2, 20), (1, 3, 40)] {
            assert_eq!(s.push(f, line, &[ts, 1], none).unwrap(), Flow::Go);
        }
        assert_eq!(s.origin(0), (0, 2));
        assert_eq!(s.origin(1), (0, 3));
        assert_eq!(s.origin(2), (0, 5));
        assert_eq!(s.origin(3), (1, 2));
        assert_eq!(s.finish().unwrap(), Flow::Stop);
        assert_eq!(s.first_rejects.len(), 1);
        let r = &s.first_rejects[0];
        assert_eq!((r.file.as_str(), r.line), ("b.csv", 2));
        assert!(r.reason.contains("first at a.csv:3"), "{}", r.reason);
    }

    #[test]
    fn tick_rows_repeat_a_ts_and_only_a_repeated_seq_is_a_duplicate() {
        let files = vec!["t.csv".into()];
        let mut s = RowSink::new(SeriesKind::Trade, (0, i64::MAX), files, None).unwrap();
        let none = String::new;
        let u = SEQ_UNASSIGNED;
        for (line, ts, seq) in [(2, 20, u), (3, 10, u), (4, 20, 5), (5, 20, u), (6, 10, 1)] {
            let row = [ts, seq, 100, 1, 1, 0];
            assert_eq!(s.push(0, line, &row, none).unwrap(), Flow::Go);
        }
        assert_eq!(s.finish().unwrap(), Flow::Go);
        let got: Vec<(i64, i64)> = (0..5)
            .map(|r| (s.batch.cols[0][r], s.batch.cols[1][r]))
            .collect();
        assert_eq!(got, vec![(10, 1), (10, u), (20, 5), (20, u), (20, u)]);
        assert_eq!(s.batch.cols[0].len(), 5);
        // The unnumbered rows of ts 20 keep their input order (lines 2 then 5).
        let mut s =
            RowSink::new(SeriesKind::Trade, (0, i64::MAX), vec!["t.csv".into()], None).unwrap();
        for (line, seq, side) in [(2, 7, 1), (3, 7, -1)] {
            s.push(0, line, &[30, seq, 100, 1, side, 0], none).unwrap();
        }
        assert_eq!(s.finish().unwrap(), Flow::Stop);
        assert!(
            s.first_rejects[0]
                .reason
                .contains("duplicate (ts, seq) (30, 7)")
        );
        let mut s =
            RowSink::new(SeriesKind::Quote, (0, i64::MAX), vec!["q.csv".into()], None).unwrap();
        s.push(0, 2, &[1, u, 101, 100, 1, 1], none).unwrap();
        s.push(0, 3, &[-1, u, 100, 101, 1, 1], none).unwrap();
        assert_eq!(s.rejected, 2);
        assert!(
            s.first_rejects[0]
                .reason
                .contains("bid is greater than ask")
        );
        assert!(s.first_rejects[1].reason.contains("1970"));
    }
}
