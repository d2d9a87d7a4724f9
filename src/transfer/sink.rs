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
use crate::record::{KlineRecord, TS_MAX, TS_MIN};
use crate::storage::WriteBatch;

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
    kline: bool,
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
    pub fn new(ncols: usize, files: Vec<String>, rejects: Option<&Path>) -> Result<RowSink> {
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
            batch: WriteBatch::with_capacity(ncols, 0),
            kline: ncols == 6,
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
        if !(TS_MIN..=TS_MAX).contains(&row[0]) {
            return self.reject(file, line, "ts outside years 1000 to 9999".into(), raw);
        }
        if self.kline {
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

    /// Sorts the rows by ts and handles repeated timestamps: the first occurrence (in
    /// input order) is kept; later ones are rejected, naming the first one's place.
    /// Returns whether the import may go on (always, when skipping invalid rows).
    pub fn finish(&mut self) -> Result<Flow> {
        let ts = &self.batch.cols[0];
        let stopped = |s: &RowSink| !s.skipping() && s.rejected > 0;
        if ts.windows(2).all(|w| w[0] < w[1]) {
            self.flush()?;
            return Ok(if stopped(self) { Flow::Stop } else { Flow::Go });
        }
        let mut perm: Vec<u32> = (0..ts.len() as u32).collect();
        // A stable sort keeps input order among equal timestamps: the first one wins.
        perm.sort_by_key(|&i| ts[i as usize]);
        let mut keep = Vec::with_capacity(perm.len());
        let mut dups = Vec::new();
        for (k, &i) in perm.iter().enumerate() {
            if k > 0 && ts[perm[k - 1] as usize] == ts[i as usize] {
                let first = *keep.last().expect("a kept row precedes a duplicate");
                dups.push((i as usize, first as usize));
            } else {
                keep.push(i);
            }
        }
        drop(perm);
        let mut flow = Flow::Go;
        dups.sort_unstable();
        for (dup, first) in dups {
            let (ff, fl) = self.origin(first);
            let (file, line) = self.origin(dup);
            let reason = format!(
                "duplicate ts {} (first at {}:{fl})",
                self.batch.cols[0][dup], self.files[ff as usize]
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
        let mut s = RowSink::new(2, vec!["a.csv".into(), "b.csv".into()], None).unwrap();
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
}
