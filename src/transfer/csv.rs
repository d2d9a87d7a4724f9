//! A byte-level CSV reader for imports.
//!
//! The file is read in large blocks; each complete line is split into field ranges
//! (reused, never allocated per row) and only the mapped fields are parsed, straight
//! from the bytes. That is what makes millions of rows per second possible, where a
//! general CSV library would build a record of strings per row.
//!
//! Supported: a header line or none (detected, or `--header` / `--no-header`), the
//! delimiters `,` `;` tab and `|` (detected from the first line, or `--delimiter`),
//! `\n` or `\r\n` line ends, a UTF-8 byte-order mark, blank lines (skipped), double-
//! quoted fields (a delimiter inside quotes does not split), and the header pandas'
//! `to_csv()` writes for a `DatetimeIndex` (an empty first cell: that column is `ts`
//! when it holds timestamps). Not supported: a quoted field spanning lines (market
//! data never needs one).

use std::io::Read;
use std::path::Path;

use super::columns::{self, value_fields};
use super::progress::Progress;
use super::sink::{Flow, RowSink};
use super::timestamps::{TsUnit, trim};
use super::values::ValueRule;
use super::{Result, RowSpec, TransferError, absent_value};

/// Bytes read per block; lines longer than this grow the buffer.
const BLOCK: usize = 4 << 20;

/// CSV flags of an import.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    pub delimiter: Option<u8>,
    /// `Some(true)`: the first line is a header; `Some(false)`: it is data.
    pub header: Option<bool>,
}

/// How the lines of one file are read, fixed by its first line.
struct Plan {
    delim: u8,
    /// Source column of ts, then of each value field (`None`: an optional field the
    /// file leaves out).
    idx: Vec<Option<usize>>,
    /// How each value field of this file converts (storage order).
    rules: Vec<ValueRule>,
    /// Fields a line must have (the largest mapped index + 1).
    need: usize,
    unit: Option<TsUnit>,
    /// `ts` was taken from an unnamed first header cell; the first data line must
    /// confirm that the column holds timestamps.
    unnamed_ts_pending: bool,
}

/// What the import summary says about an unnamed first column taken as `ts`.
pub const UNNAMED_TS_NOTE: &str = "using unnamed first column as ts";

/// Reads one CSV file into `sink`. Returns `Flow::Stop` when the sink says so.
/// Choices the reader made on its own (e.g. an unnamed first column taken as `ts`)
/// are added to `notes` for the import summary.
pub fn read_csv(
    path: &Path,
    file: u32,
    opts: &CsvOptions,
    spec: &RowSpec,
    sink: &mut RowSink,
    progress: &mut Progress,
    notes: &mut Vec<String>,
) -> Result<Flow> {
    let io = |e| TransferError::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let mut buf = vec![0u8; BLOCK.min(size as usize + 1).max(64 << 10)];
    let (mut start, mut filled, mut line_no) = (0usize, 0usize, 0u64);
    let mut plan: Option<Plan> = None;
    let mut ranges = Vec::with_capacity(16);
    let mut reserved = false;
    loop {
        if start > 0 {
            buf.copy_within(start..filled, 0);
            filled -= start;
            start = 0;
        }
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = read_full(&mut f, &mut buf[filled..]).map_err(io)?;
        filled += n;
        let eof = n == 0;
        let rows_before = sink.rows_read;
        while start < filled {
            let rest = &buf[start..filled];
            let (line, used) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], i + 1),
                None if eof => (rest, rest.len()),
                None => break,
            };
            start += used;
            line_no += 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = if line_no == 1 {
                line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
            } else {
                line
            };
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if plan.is_none() {
                let (p, is_header) = first_line(line, opts, spec)
                    .map_err(|m| TransferError::Usage(format!("{}: {m}", path.display())))?;
                notes.extend(
                    super::mapping_notes(spec, &p.idx, &p.rules)
                        .into_iter()
                        .map(|n| format!("{}: {n}", path.display())),
                );
                plan = Some(p);
                if is_header {
                    continue;
                }
            }
            let p = plan.as_mut().expect("the plan is set by the first line");
            if p.unnamed_ts_pending {
                confirm_unnamed_ts(line, p)
                    .map_err(|m| TransferError::Usage(format!("{}: {m}", path.display())))?;
                notes.push(format!("{}: {UNNAMED_TS_NOTE}", path.display()));
            }
            if convert_line(line, line_no, file, p, spec, sink, &mut ranges)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        if !reserved && line_no > 0 {
            // Size the columns once from the first block's line length, so a large file
            // does not pay for repeated doubling (and its transient 2x memory).
            let avg = (filled.max(1) as u64 / line_no).max(1);
            sink.reserve((size / avg + size / avg / 50) as usize);
            reserved = true;
        }
        progress.add(n as u64, sink.rows_read - rows_before);
        if eof {
            if let Some(n) = plan.as_ref().and_then(|p| super::unit_note(spec, p.unit)) {
                notes.push(format!("{}: {n}", path.display()));
            }
            return Ok(Flow::Go);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Detects the delimiter and the header from the first line and maps the columns.
fn first_line(line: &[u8], opts: &CsvOptions, spec: &RowSpec) -> Result<(Plan, bool), String> {
    let delim = opts.delimiter.unwrap_or_else(|| sniff_delimiter(line));
    let mut ranges = Vec::new();
    split(line, delim, usize::MAX, &mut ranges);
    let fields: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| String::from_utf8_lossy(trim(&line[a..b])).into_owned())
        .collect();
    let is_header = opts.header.unwrap_or_else(|| {
        let ts_guess = spec
            .overrides
            .pairs
            .iter()
            .find(|(f, _)| *f == "ts")
            .and_then(|(_, c)| c.parse::<usize>().ok())
            .map_or(0, |n| n.saturating_sub(1));
        fields.iter().any(|f| columns::is_known_name(f))
            || fields
                .get(ts_guess)
                .is_none_or(|f| spec.parse_ts(f.as_bytes(), spec.ts_unit).is_err())
    });
    let names = is_header.then_some(fields.as_slice());
    let resolve = |names: Option<&[String]>| {
        columns::resolve_optional(
            spec.kind,
            names,
            fields.len(),
            &spec.overrides,
            spec.series_name.as_deref(),
        )
    };
    let (idx, unnamed_ts_pending) = match resolve(names) {
        Ok(idx) => (idx, false),
        Err(why) => match unnamed_first_as_ts(&fields, is_header, spec) {
            // pandas' `to_csv()` leaves the index column's header cell empty; that
            // column is `ts` if the first data line agrees (checked there).
            Some(renamed) => (
                resolve(Some(renamed.as_slice())).map_err(|_| why.clone())?,
                true,
            ),
            None => return Err(why),
        },
    };
    let need = idx.iter().flatten().max().map_or(0, |m| m + 1);
    let col_names: Vec<Option<&str>> = idx[1..]
        .iter()
        .map(|i| i.and_then(|i| names.map(|n| n[i].as_str())))
        .collect();
    let rules = spec.file_rules(&col_names);
    let plan = Plan {
        delim,
        idx,
        rules,
        need,
        unit: spec.ts_unit,
        unnamed_ts_pending,
    };
    Ok((plan, is_header))
}

/// The header with an empty first cell renamed `ts`, when that is the way to find a
/// `ts` column: a header whose first cell is empty (what pandas writes for an
/// unnamed index) and no `--ts-column` given.
fn unnamed_first_as_ts(fields: &[String], is_header: bool, spec: &RowSpec) -> Option<Vec<String>> {
    let first = fields.first()?;
    let overridden = spec.overrides.pairs.iter().any(|(f, _)| *f == "ts");
    if !is_header || overridden || !first.trim_matches('"').trim().is_empty() {
        return None;
    }
    let mut renamed = fields.to_vec();
    renamed[0] = "ts".into();
    Some(renamed)
}

/// Checks that the first data line's unnamed first column parses as a timestamp.
fn confirm_unnamed_ts(line: &[u8], plan: &mut Plan) -> Result<(), String> {
    plan.unnamed_ts_pending = false;
    let mut ranges = Vec::new();
    split(line, plan.delim, plan.need, &mut ranges);
    let (a, b) = ranges[0];
    super::timestamps::parse_ts(&line[a..b], plan.unit)
        .map(|_| ())
        .map_err(|why| {
            format!(
                "no column for ts: the header names none, and the unnamed first column does not \
             hold timestamps (first value: {why}); name it with --ts-column NAME_OR_POSITION"
            )
        })
}

/// The most frequent of `,` `;` tab `|` in the line; `,` when none occurs.
fn sniff_delimiter(line: &[u8]) -> u8 {
    let mut best = (0, b',');
    for d in [b',', b';', b'\t', b'|'] {
        let n = line.iter().filter(|&&b| b == d).count();
        if n > best.0 {
            best = (n, d);
        }
    }
    best.1
}

/// Splits `line` into at most `need` field ranges. Quotes are honoured only when the
/// line has one (the fast path bails out to the quote-aware loop).
#[inline]
fn split(line: &[u8], delim: u8, need: usize, out: &mut Vec<(usize, usize)>) {
    out.clear();
    let mut s = 0;
    // memchr2 finds the next delimiter or quote with SIMD instead of a byte loop.
    while let Some(i) = memchr::memchr2(delim, b'"', &line[s..]) {
        let i = s + i;
        if line[i] == b'"' {
            return split_quoted(line, delim, need, out);
        }
        out.push((s, i));
        s = i + 1;
        if out.len() == need {
            return;
        }
    }
    out.push((s, line.len()));
}

fn split_quoted(line: &[u8], delim: u8, need: usize, out: &mut Vec<(usize, usize)>) {
    out.clear();
    let (mut s, mut quoted) = (0, false);
    for (i, &b) in line.iter().enumerate() {
        if b == b'"' {
            quoted = !quoted;
        } else if b == delim && !quoted {
            out.push((s, i));
            s = i + 1;
            if out.len() == need {
                return;
            }
        }
    }
    out.push((s, line.len()));
}

/// Parses the mapped fields of one data line and hands the row to the sink.
#[inline]
fn convert_line(
    line: &[u8],
    line_no: u64,
    file: u32,
    plan: &mut Plan,
    spec: &RowSpec,
    sink: &mut RowSink,
    ranges: &mut Vec<(usize, usize)>,
) -> Result<Flow> {
    let raw = || String::from_utf8_lossy(line).into_owned();
    split(line, plan.delim, plan.need, ranges);
    if ranges.len() < plan.need {
        let why = format!(
            "expected at least {} fields, found {}",
            plan.need,
            ranges.len()
        );
        return sink.reject_unparsed(file, line_no, why, raw);
    }
    let mut row = [0i64; 6];
    let (a, b) = ranges[plan.idx[0].expect("ts always has a column")];
    match spec.parse_ts(&line[a..b], plan.unit) {
        Ok((ms, unit)) => {
            if plan.unit.is_none() {
                // The first epoch value fixes the unit for the whole file, so one odd
                // magnitude later on cannot silently change the meaning of a row.
                plan.unit = unit;
            }
            row[0] = ms;
        }
        Err(why) => return sink.reject_unparsed(file, line_no, format!("ts: {why}"), raw),
    }
    let names = value_fields(spec.kind);
    for (k, rule) in plan.rules.iter().enumerate() {
        let Some(i) = plan.idx[k + 1] else {
            row[k + 1] = absent_value(names[k]);
            continue;
        };
        let (a, b) = ranges[i];
        match rule.parse_text(&line[a..b]) {
            Ok(v) => {
                if matches!(rule, ValueRule::Side | ValueRule::BuyerMaker) {
                    sink.tally_side(trim(&line[a..b]), v);
                }
                row[k + 1] = v;
            }
            Err(why) => {
                return sink.reject_unparsed(file, line_no, format!("{}: {why}", names[k]), raw);
            }
        }
    }
    sink.push(file, line_no, &row[..=plan.rules.len()], raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_honours_quotes_and_the_needed_count() {
        let mut r = Vec::new();
        split(b"a,b,c,d", b',', 2, &mut r);
        assert_eq!(r, vec![(0, 1), (2, 3)]);
        split(b"\"x,y\",2", b',', 9, &mut r);
        assert_eq!(r, vec![(0, 5), (6, 7)]);
        split(b"", b',', 9, &mut r);
        assert_eq!(r, vec![(0, 0)]);
        assert_eq!(sniff_delimiter(b"ts;open;high"), b';');
        assert_eq!(sniff_delimiter(b"ts\topen"), b'\t');
        assert_eq!(sniff_delimiter(b"1704067200000"), b',');
    }
}
