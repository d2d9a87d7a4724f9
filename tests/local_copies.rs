//! Raw copies of compressed months for co-located readers (`storage::localcopy`,
//! docs/flight.md "Co-located reads"): a plan hands out a compressed month as a raw
//! chunk file under `<root>/local/` whose columns are the month's, bit for bit; the
//! copies keep to their budget (least recently handed out first), a copy that does not
//! fit leaves the month to DoGet, and an open empties the directory.

mod common;

use common::{JAN_2024, MINUTE, kline_meta, read_cols, store_opts};
use fastk::record::TsRange;
use fastk::storage::format::{CHUNK_HEADER_LEN, ChunkHeader};
use fastk::storage::localcopy::{LOCAL_DIR, LocalCopies};
use fastk::storage::locate::{Located, Place};
use fastk::storage::{Store, StoreOptions, WriteBatch};

/// `n` 1m bars from 2024-01-01: sealed months, so a bulk load writes them compressed.
fn klines(n: i64) -> WriteBatch {
    let mut b = WriteBatch::with_capacity(6, n as usize);
    for i in 0..n {
        let p = 4_200_000 + (i * 7919) % 1001;
        for (c, v) in [JAN_2024 + i * MINUTE, p, p + 5, p - 5, p + 1, 1000 + i % 77]
            .into_iter()
            .enumerate()
        {
            b.cols[c].push(v);
        }
    }
    b
}

fn opts(local_copy_bytes: u64) -> StoreOptions {
    store_opts(|o| {
        o.compress_after_ms = Some(0);
        o.local_copy_bytes = local_copy_bytes;
    })
}

/// The rows a located file part holds, read from the file as a client would.
fn file_rows(l: &Located, ncols: usize) -> Vec<Vec<i64>> {
    let Place::File {
        path,
        file_len,
        checksum,
        image_offset,
        ..
    } = &l.place
    else {
        panic!("not a file: {l:?}")
    };
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len() as u64, *file_len);
    let h = ChunkHeader::decode(&bytes[*image_offset as usize..]).unwrap();
    assert!(!h.is_compressed(), "a copy is raw");
    assert_eq!(h.body_xxh3, *checksum);
    let body = &bytes[*image_offset as usize + CHUNK_HEADER_LEN..]
        [..(h.raw_len() as usize - CHUNK_HEADER_LEN)];
    assert_eq!(xxhash_rust::xxh3::xxh3_64(body), h.body_xxh3);
    (0..ncols)
        .map(|c| {
            let at = l.place.col_offset(c).unwrap() as usize;
            bytes[at..at + 8 * l.rows as usize]
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect()
        })
        .collect()
}

#[test]
fn compressed_months_are_handed_out_as_raw_copies_equal_to_the_month() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(64 << 20)).unwrap();
    let (k, _) = store.register(kline_meta("LOC", "1m")).unwrap();
    k.write(klines((31 + 29 + 31) * 1440), None).unwrap();
    let want = read_cols(&store, &kline_meta("LOC", "1m").key);
    let snap = k.snapshot();
    let copies = store.local_copies();
    let located = snap
        .locate(TsRange::all(), None, 100, copies)
        .unwrap()
        .unwrap();
    assert_eq!(located.len(), 3, "{located:?}");
    let mut got = vec![Vec::new(); 6];
    for l in &located {
        let Place::File { path, .. } = &l.place else {
            panic!("a compressed month with room for its copy is a file: {l:?}")
        };
        assert!(
            path.is_absolute()
                && path.starts_with(std::path::absolute(dir.path().join(LOCAL_DIR)).unwrap())
        );
        for (g, c) in got.iter_mut().zip(file_rows(l, 6)) {
            g.extend(c);
        }
    }
    assert_eq!(got, want);
    let bytes = copies.bytes();
    assert!(bytes > 0 && bytes <= 64 << 20);
    // Asked again, the same copies are handed out: none is written twice.
    let again = snap
        .locate(TsRange::all(), None, 100, copies)
        .unwrap()
        .unwrap();
    assert_eq!(again, located);
    assert_eq!(copies.bytes(), bytes);
    // A cut range and the latest rows point into the same copies.
    let cut = TsRange::new(
        Some(JAN_2024 + 40 * 1440 * MINUTE),
        Some(JAN_2024 + 50 * 1440 * MINUTE),
    );
    let part = &snap.locate(cut, None, 100, copies).unwrap().unwrap()[0];
    assert_eq!(part.first_ts, JAN_2024 + 40 * 1440 * MINUTE);
    assert_eq!(file_rows(part, 6)[0][0], part.first_ts);
    let latest = snap
        .locate(TsRange::all(), Some(10), 100, copies)
        .unwrap()
        .unwrap();
    assert_eq!(file_rows(&latest[0], 6)[0], want[0][want[0].len() - 10..]);
    drop((snap, k, store));
    // The copies are a cache: the next open starts with none.
    let store = Store::open(dir.path(), opts(64 << 20)).unwrap();
    assert_eq!(store.local_copies().bytes(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join(LOCAL_DIR))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn the_copies_keep_to_their_budget_and_a_copy_too_large_stays_with_doget() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(0)).unwrap();
    let (k, _) = store.register(kline_meta("LOC", "1m")).unwrap();
    k.write(klines((31 + 29 + 31) * 1440), None).unwrap();
    let snap = k.snapshot();
    // Off: the compressed months are left to DoGet, and no directory is made.
    let all = snap
        .locate(TsRange::all(), None, 100, store.local_copies())
        .unwrap()
        .unwrap();
    assert!(all.iter().all(|l| l.place == Place::Compressed), "{all:?}");
    assert!(!dir.path().join(LOCAL_DIR).exists());

    // Room for one month's copy (31 days of 1m bars: 6 x 357,120 bytes + header).
    let month = 512 + 6 * 357_120;
    let cache = tempfile::tempdir().unwrap();
    let copies = LocalCopies::open(cache.path(), month + 1000).unwrap();
    let located = snap
        .locate(TsRange::all(), None, 100, &copies)
        .unwrap()
        .unwrap();
    let paths: Vec<_> = located
        .iter()
        .map(|l| match &l.place {
            Place::File { path, .. } => path.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(copies.bytes() <= month + 1000);
    // Each copy pushed the one before it out (least recently handed out first).
    assert_eq!(
        paths.iter().map(|p| p.exists()).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    // Too small for any month: nothing is written, the rows go through DoGet.
    let tiny = LocalCopies::open(cache.path(), 4096).unwrap();
    let located = snap
        .locate(TsRange::all(), None, 100, &tiny)
        .unwrap()
        .unwrap();
    assert!(located.iter().all(|l| l.place == Place::Compressed));
    assert_eq!(tiny.bytes(), 0);
}
