//! A write given in pieces (a DoPut's received batches, `Store::write_pieces`) stores
//! exactly what the same rows written whole store: months inside one piece, months
//! split across pieces (joined only when their chunk is built), appends to existing
//! months and rewrites of them, packed and unpacked, before and after a reopen; rows
//! out of order, repeated timestamps and ragged pieces take the checked path and get
//! its errors; and a piece boundary never changes the report.

mod common;

use common::{MINUTE, scalar_meta, series_cols, store_opts};
use fastk::record::{SeriesMeta, ValueType};
use fastk::storage::{Store, WriteBatch};

/// 2023-01-01T00:00:00Z.
const JAN_2023: i64 = 1_672_531_200_000;

fn meta(symbol: &str) -> SeriesMeta {
    scalar_meta(symbol, "1m", "feature", "x", ValueType::I64)
}

/// `n` rows every `step` minutes from `from`, values a deterministic scramble.
fn rows(from: i64, n: usize, step: i64) -> WriteBatch {
    let mut b = WriteBatch::with_capacity(2, n);
    for i in 0..n as i64 {
        b.cols[0].push(from + i * step * MINUTE);
        b.cols[1].push((i * 7_919 + from / MINUTE) % 100_003 - 50_000);
    }
    b
}

/// `b` cut into pieces at `cuts` (row indexes, ascending).
fn pieces<'a>(b: &'a WriteBatch, cuts: &[usize]) -> Vec<Vec<&'a [i64]>> {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&b.len())) {
        out.push(b.cols.iter().map(|c| &c[start..end]).collect());
        start = end;
    }
    out
}

fn open(dir: &std::path::Path, pack: u64) -> Store {
    let opts = store_opts(|o| {
        o.pack_target_bytes = pack;
        // Small enough that the packs of these tests go through O_DIRECT.
        o.direct_write_min_bytes = 64 << 10;
    });
    Store::open(dir, opts).unwrap()
}

/// Writes `steps` to a series whole and to another in pieces; both must read the
/// same after every step and after a reopen, with the same reports.
fn same_as_whole(pack: u64, steps: &[(WriteBatch, Vec<usize>)]) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), pack);
    let (whole, _) = store.register(meta("WHOLE")).unwrap();
    let (split, _) = store.register(meta("SPLIT")).unwrap();
    for (i, (b, cuts)) in steps.iter().enumerate() {
        let a = store.write(&whole, b.clone(), None).unwrap();
        let p = store.write_pieces(&split, &pieces(b, cuts), None).unwrap();
        assert_eq!(
            (a.written, a.inserted, a.replaced, &a.months),
            (p.written, p.inserted, p.replaced, &p.months),
            "report of step {i}"
        );
        assert_eq!(a.version, p.version, "version of step {i}");
        assert!(
            series_cols(&whole) == series_cols(&split),
            "rows after step {i}"
        );
    }
    let want = series_cols(&whole);
    drop((whole, split));
    drop(store);
    let store = open(dir.path(), pack);
    let split = store.get(&meta("SPLIT").key).unwrap();
    assert!(series_cols(&split) == want, "rows after a reopen");
}

#[test]
fn months_split_across_pieces_store_what_a_whole_write_stores() {
    // Four months of 1m rows (about 175,000), cut at uneven places: most months span
    // a cut, one cut falls on a month boundary, one piece lies inside a month.
    let year = rows(JAN_2023, 175_000, 1);
    let feb = 31 * 1_440;
    let cuts = vec![10_000, feb, feb + 7, 65_536, 65_537, 131_072, 170_000];
    for pack in [0, 32 << 20] {
        same_as_whole(pack, &[(year.clone(), cuts.clone())]);
    }
}

#[test]
fn appends_and_rewrites_in_pieces_match_whole_writes() {
    let first = rows(JAN_2023, 50_000, 1);
    // Appends after the last row, into the month the first write ended in and on.
    let after = rows(JAN_2023 + 50_000 * MINUTE, 60_000, 1);
    // A rewrite: every 3rd minute over the first two months (replacing and inserting
    // rows inside existing months).
    let over = rows(JAN_2023 + 5 * MINUTE, 30_000, 3);
    // A month far ahead after a gap, in tiny pieces.
    let ahead = rows(JAN_2023 + 400 * 1_440 * MINUTE, 9_000, 1);
    let tiny: Vec<usize> = (1..60).map(|i| i * 150).collect();
    for pack in [0, 32 << 20] {
        same_as_whole(
            pack,
            &[
                (first.clone(), vec![20_000, 44_000]),
                (after.clone(), vec![1, 30_000]),
                (over.clone(), vec![9_999, 10_000, 25_000]),
                (ahead.clone(), tiny.clone()),
            ],
        );
    }
}

#[test]
fn pieces_out_of_order_or_ragged_get_the_checked_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 32 << 20);
    let (s, _) = store.register(meta("S")).unwrap();
    let a = rows(JAN_2023 + 40_000 * MINUTE, 20_000, 1);
    let b = rows(JAN_2023, 20_000, 1);
    // Later rows first: sorted like any write.
    let out_of_order: Vec<Vec<&[i64]>> = vec![
        a.cols.iter().map(|c| &c[..]).collect(),
        b.cols.iter().map(|c| &c[..]).collect(),
    ];
    let r = store.write_pieces(&s, &out_of_order, None).unwrap();
    assert_eq!(r.inserted, 40_000);
    let got = series_cols(&s);
    assert!(got[0].windows(2).all(|w| w[0] < w[1]), "stored sorted");
    assert_eq!(got[0].len(), 40_000);
    // A timestamp in two pieces is refused whole, naming the repeat.
    let (t, _) = store.register(meta("T")).unwrap();
    let repeat: Vec<Vec<&[i64]>> = vec![
        b.cols.iter().map(|c| &c[..15_000]).collect(),
        b.cols.iter().map(|c| &c[14_999..]).collect(),
    ];
    let e = store.write_pieces(&t, &repeat, None).unwrap_err();
    assert!(e.to_string().contains("repeats"), "{e}");
    assert_eq!(t.version(), 0, "nothing written");
    // Ragged columns are refused.
    let ragged: Vec<Vec<&[i64]>> = vec![vec![&b.cols[0][..10_000], &b.cols[1][..9_999]]];
    assert!(store.write_pieces(&t, &ragged, None).is_err());
    // A piece missing a column is refused, not filled in.
    let short: Vec<Vec<&[i64]>> = vec![
        b.cols.iter().map(|c| &c[..100]).collect(),
        vec![&b.cols[0][100..200]],
    ];
    let e = store.write_pieces(&t, &short, None).unwrap_err();
    assert!(e.to_string().contains("columns"), "{e}");
    assert_eq!(t.version(), 0, "nothing written");
    assert!(series_cols(&t)[0].is_empty());
}
