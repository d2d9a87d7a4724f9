//! Structured fuzzing of every on-disk decoder (write-ahead log records included), and
//! golden encodings of format v1 (chunks, sidecars, and the v1 manifest, which still
//! decodes) and of the version 2 manifest.
//!
//! The decoders (chunk header, manifest, zone map, value index) read bytes that a
//! crash, a full disk, a bad disk or another program may have left behind. Whatever
//! the bytes, each must return an error or a value that passes its own validation;
//! a panic would turn one damaged file into a dead server. The story that made this
//! a test: lengths read from disk were multiplied before they were checked, so a
//! checksum-valid file with a huge row or entry count overflowed (a panic in debug
//! builds, a wrapped length in release).
//!
//! Inputs are arbitrary bytes, and valid encodings under mutation (bit flips,
//! truncations, extensions, edits of the length and count fields), optionally
//! "resealed" (the checksum recomputed after the mutation) so the structural checks
//! behind the checksum are reached too. Quick by default (256 cases per property);
//! `FASTK_TEST_LONG=1` runs 20,000.
//!
//! The golden tests pin the byte layout: the encodings below were captured from the
//! format code before its offsets were renamed, and any change to them is a change of
//! the on-disk format (`UPDATE_GOLDEN=1` rewrites the files; only for a new version).

mod common;

use std::path::PathBuf;

use common::{JAN_2024, MINUTE, kline_meta, scalar_meta};
use fastk::record::{MonthPartition, SeriesKey, SeriesMeta, ValueType};
use fastk::storage::WriteBatch;
use fastk::storage::format::{
    CHUNK_HEADER_LEN, ChunkEntry, ChunkHeader, FLAG_FULL, Manifest, PackLoc, STATE_LIVE,
    STATE_OBSOLETE, SidecarRef, align_up, build_chunk,
};
use fastk::storage::mmap::MappedFile;
use fastk::storage::pack::{PackEntry, PackIndex};
use fastk::storage::sidecar::{
    ValueIndex, ZoneMap, build_vindex, build_vindex_v1, build_zonemap, fence_count,
};
use fastk::storage::wal::{RecordError, decode_record, encode_record};
use proptest::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

fn long() -> bool {
    std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if long() { 20_000 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The series of the golden encodings: their metadata is part of the bytes.
fn scalar() -> SeriesMeta {
    scalar_meta("BTCUSDT", "1m", "indicator", "rsi_14", ValueType::F64)
}

fn kline() -> SeriesMeta {
    kline_meta("ETHUSDT", "1h")
}

fn header(meta: SeriesMeta, generation: u64) -> ChunkHeader {
    ChunkHeader {
        meta: std::sync::Arc::new(meta),
        ncols: 0,
        rows: 0,
        first_ts: 0,
        last_ts: 0,
        month: MonthPartition::from_ts(JAN_2024).0,
        flags: FLAG_FULL,
        generation,
        write_version: 3,
        write_chunks: 1,
        body_xxh3: 0,
        stride: 0,
        wal_lsn: 0,
        body_len: 0,
        last_row: None,
    }
}

fn scalar_chunk() -> Vec<u8> {
    let ts: Vec<i64> = (0..3).map(|i| JAN_2024 + i * MINUTE).collect();
    let v: Vec<i64> = [1.5f64, -2.0, 3.25]
        .iter()
        .map(|f| f.to_bits() as i64)
        .collect();
    build_chunk(header(scalar(), 7), &[&ts, &v])
}

/// The chunk `bytes` as written before the header's last-row field (bytes 340..392,
/// reserved and zero then): the same body under the header re-encoded without it.
fn without_last_row(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut h = ChunkHeader::decode(&bytes).expect("a built chunk decodes");
    assert!(
        h.last_row.is_some(),
        "a chunk written now records its last row"
    );
    h.last_row = None;
    bytes[..CHUNK_HEADER_LEN].copy_from_slice(&h.encode());
    bytes
}

/// The last-row field (in bytes that were reserved): a chunk written before it reads
/// as having none, and one written now holds its last row, every column.
#[test]
fn the_last_row_in_the_chunk_header_round_trips_and_old_chunks_have_none() {
    let old = ChunkHeader::decode(&std::fs::read(golden_path("chunk_kline_v1.bin")).unwrap())
        .expect("the old golden decodes");
    assert_eq!(old.last_row, None);
    let new = ChunkHeader::decode(&kline_chunk()).expect("decodes");
    assert_eq!(
        new.last_row,
        Some([JAN_2024 + 4 * 60 * MINUTE, 104, 114, 94, 109, 5])
    );
    let scalar = ChunkHeader::decode(&scalar_chunk()).expect("decodes");
    let want = [JAN_2024 + 2 * MINUTE, 3.25f64.to_bits() as i64, 0, 0, 0, 0];
    assert_eq!(scalar.last_row, Some(want));
    // A count other than 0 or the chunk's columns, or a first value other than
    // last_ts, is refused under a matching header checksum.
    for (at, v) in [
        (340usize, 5u32.to_le_bytes().to_vec()),
        (344, 7i64.to_le_bytes().to_vec()),
    ] {
        let mut b = kline_chunk();
        b[at..at + v.len()].copy_from_slice(&v);
        let sum = xxhash_rust::xxh3::xxh3_64(&b[..504]);
        b[504..512].copy_from_slice(&sum.to_le_bytes());
        let err = ChunkHeader::decode(&b).expect_err("refused");
        assert!(err.contains("last row"), "{err}");
    }
}

fn kline_chunk() -> Vec<u8> {
    let ts: Vec<i64> = (0..5).map(|i| JAN_2024 + i * 60 * MINUTE).collect();
    let col = |base: i64| (0..5).map(|i| base + i).collect::<Vec<i64>>();
    let (o, h, l, c, v) = (col(100), col(110), col(90), col(105), col(1));
    build_chunk(header(kline(), 2), &[&ts, &o, &h, &l, &c, &v])
}

fn entry(generation: u64, state: u8, zonemap: SidecarRef, vindex: SidecarRef) -> ChunkEntry {
    ChunkEntry {
        month: MonthPartition::from_ts(JAN_2024).0,
        flags: FLAG_FULL,
        generation,
        rows: 3,
        first_ts: JAN_2024,
        last_ts: JAN_2024 + 2 * MINUTE,
        file_len: (CHUNK_HEADER_LEN + 2 * 64) as u64,
        checksum: 0x1234_5678_9abc_def0,
        write_version: 9,
        zonemap,
        vindex,
        state,
        pack: PackLoc::NONE,
    }
}

fn manifest() -> Manifest {
    Manifest {
        meta: scalar(),
        version: 9,
        next_generation: 12,
        // Zero: the golden v1 encoding below holds zeros here, so a store written
        // before retention existed reads as "keep forever".
        retention_ms: 0,
        // False: these bytes were reserved zero in v1 and v2, so an older store's
        // series are regular (bars on the timeframe's grid).
        irregular: false,
        // Zero: what every v1 manifest decodes to (no log position).
        wal_lsn: 0,
        entries: vec![
            entry(
                11,
                STATE_LIVE,
                SidecarRef { len: 112, xxh3: 5 },
                SidecarRef { len: 192, xxh3: 6 },
            ),
            entry(
                4,
                STATE_OBSOLETE,
                SidecarRef::default(),
                SidecarRef::default(),
            ),
        ],
    }
}

fn zonemap_values() -> (Vec<i64>, Vec<i64>) {
    let ts: Vec<i64> = (0..10).map(|i| JAN_2024 + i * MINUTE).collect();
    let v: Vec<i64> = [3.0, f64::NAN, -1.0, 7.5, 2.0, 2.0, f64::NAN, 0.0, 9.0, -4.0]
        .iter()
        .map(|f| f.to_bits() as i64)
        .collect();
    (ts, v)
}

fn zonemap() -> Vec<u8> {
    let (ts, v) = zonemap_values();
    build_zonemap(ValueType::F64, &ts, &v, 4)
}

/// A version 1 value index (what stores written before version 2 hold).
fn vindex() -> Vec<u8> {
    let (_, v) = zonemap_values();
    build_vindex_v1(ValueType::F64, &v)
}

/// A version 2 value index (what FastK writes): 8 entries, fences 2, u16 positions.
fn vindex_v2() -> Vec<u8> {
    let (_, v) = zonemap_values();
    build_vindex(ValueType::F64, &v)
}

// ---------------------------------------------------------------- golden encodings

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(name)
}

fn check_golden(name: &str, bytes: &[u8]) {
    let path = golden_path(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(want.len(), bytes.len(), "{name}: length changed");
    if let Some(at) = (0..want.len()).find(|&i| want[i] != bytes[i]) {
        panic!(
            "{name}: byte {at} changed ({:#04x} -> {:#04x}): the on-disk format v1 moved",
            want[at], bytes[at]
        );
    }
}

#[test]
fn golden_encodings_of_format_v1_are_unchanged() {
    // Chunks as written before the header's last-row field, and since.
    check_golden("chunk_scalar_v1.bin", &without_last_row(scalar_chunk()));
    check_golden("chunk_kline_v1.bin", &without_last_row(kline_chunk()));
    check_golden("chunk_scalar_v1_last_row.bin", &scalar_chunk());
    check_golden("chunk_kline_v1_last_row.bin", &kline_chunk());
    check_golden("manifest_v2.bin", &manifest_v2().encode());
    check_golden("manifest_v3.bin", &manifest_v3().encode());
    check_golden("pack_index_v1.bin", &pack_index().encode());
    check_golden("zonemap_v1.bin", &zonemap());
    check_golden("vindex_v1.bin", &vindex());
    check_golden("vindex_v2.bin", &vindex_v2());
}

/// The irregular flag (bit 0 of the u32 at byte 284, reserved zero before) round-trips,
/// and a manifest without it encodes exactly as before (the goldens above).
#[test]
fn the_irregular_flag_round_trips_in_bytes_that_were_reserved() {
    let mut m = manifest_v3();
    m.irregular = true;
    let bytes = m.encode();
    assert_eq!(u32::from_le_bytes(bytes[284..288].try_into().unwrap()), 1);
    assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    let plain = manifest_v3().encode();
    assert_eq!(&plain[284..288], &[0, 0, 0, 0]);
    assert_eq!(bytes.len(), plain.len());
}

/// A version 1 manifest (written before the write-ahead log) still decodes, as
/// `wal_lsn` 0, and is written back as version 2 with the same content.
#[test]
fn manifest_v1_decodes_and_upgrades() {
    let v1 = std::fs::read(golden_path("manifest_v1.bin")).unwrap();
    let m = Manifest::decode(&v1).unwrap();
    assert_eq!(m, manifest());
    let v2 = m.encode();
    assert_eq!(u32::from_le_bytes(v2[8..12].try_into().unwrap()), 2);
    assert_eq!(
        v2.len(),
        v1.len() + 16,
        "version 2 adds 16 bytes to the fixed part"
    );
    assert_eq!(Manifest::decode(&v2).unwrap(), m);
}

fn manifest_v2() -> Manifest {
    Manifest {
        retention_ms: 86_400_000,
        wal_lsn: 0x0102_0304_0506_0708,
        ..manifest()
    }
}

/// A kline chunk's header and its compressed body.
fn compressed_kline() -> (ChunkHeader, Vec<u8>) {
    let b = kline_chunk();
    let h = ChunkHeader::decode(&b).unwrap();
    let cols: Vec<Vec<i64>> = (0..h.ncols)
        .map(|i| {
            let at = h.column_offset(i);
            b[at..at + h.rows as usize * 8]
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        })
        .collect();
    let refs: Vec<&[i64]> = cols.iter().map(Vec::as_slice).collect();
    let body = fastk::storage::codec::compress(&h, &refs, fastk::storage::codec::Effort::Fast);
    assert_eq!(
        fastk::storage::codec::image(&h, &body).unwrap().len() as u64,
        h.raw_len()
    );
    (h, body)
}

fn wal_record() -> Vec<u8> {
    let k = SeriesKey::kline("BTCUSDT", "1m").unwrap();
    let s = SeriesKey::scalar("ETHUSDT", "1h", "feature", "rsi_14").unwrap();
    let kb = WriteBatch::from_cols(
        (0..6)
            .map(|c| vec![JAN_2024 + c, JAN_2024 + MINUTE + c])
            .collect(),
    );
    let sb = WriteBatch::from_cols(vec![vec![JAN_2024], vec![7]]);
    encode_record(42, &[(&k, &kb), (&s, &sb)])
}

#[test]
fn wal_records_round_trip() {
    let b = wal_record();
    let (r, len) = decode_record(&b).unwrap();
    assert_eq!(len, b.len());
    assert_eq!(r.lsn, 42);
    assert_eq!(r.entries.len(), 2);
    assert_eq!(
        r.entries[1].1,
        WriteBatch::from_cols(vec![vec![JAN_2024], vec![7]])
    );
    // A torn tail is "short", a flipped byte "bad".
    assert_eq!(
        decode_record(&b[..b.len() - 1]).unwrap_err(),
        RecordError::Short
    );
    let mut flipped = b.clone();
    flipped[30] ^= 1;
    assert!(matches!(decode_record(&flipped), Err(RecordError::Bad(_))));
}

fn check_wal(b: &[u8]) {
    if let Ok((r, len)) = decode_record(b) {
        assert!(len <= b.len());
        let entries: Vec<(&SeriesKey, &WriteBatch)> =
            r.entries.iter().map(|(k, b)| (k, b)).collect();
        assert_eq!(encode_record(r.lsn, &entries), b[..len].to_vec());
    }
}

/// Recomputes a record's checksum after a mutation, so the payload checks are reached.
fn reseal_record(b: &mut [u8]) {
    if b.len() < 24 {
        return;
    }
    let n = (u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize).min(b.len() - 24);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&b[..16]);
    h.update(&b[24..24 + n]);
    let sum = h.digest();
    b[16..24].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn valid_encodings_decode() {
    let h = ChunkHeader::decode(&scalar_chunk()).unwrap();
    assert_eq!((h.rows, h.ncols, h.generation), (3, 2, 7));
    let h = ChunkHeader::decode(&kline_chunk()).unwrap();
    assert_eq!((h.rows, h.ncols, &*h.meta), (5, 6, &kline()));
    assert_eq!(Manifest::decode(&manifest().encode()).unwrap(), manifest());
    let z = zonemap();
    let zm = ZoneMap::parse(&z, ValueType::F64, xxh3_64(&z)).unwrap();
    assert_eq!((zm.rows, zm.block_rows, zm.zones.len()), (10, 4, 3));
    let v = vindex();
    let (ok, _dir) = open_vindex(&v, ValueType::F64);
    let vi = ok.unwrap();
    assert_eq!((vi.entries, vi.chunk_rows, vi.version()), (8, 10, 1));
    let v = vindex_v2();
    let (ok, _dir) = open_vindex(&v, ValueType::F64);
    let vi = ok.unwrap();
    assert_eq!((vi.entries, vi.chunk_rows, vi.version()), (8, 10, 2));
    assert_eq!(vi.fences().len(), 2);
    // Header 64, two fences, 8 u16 positions (16 bytes), checksum.
    assert_eq!(v.len(), 64 + 2 * 8 + 16 + 8);
}

/// Version 2 validation refuses what a checksum cannot: a row position past the
/// chunk, fences that do not fit the entry count or do not ascend, a position width
/// other than the row count's.
#[test]
fn value_index_v2_validation_rejects_inconsistent_bytes() {
    let edit = |at: usize, bytes: &[u8]| {
        let mut b = vindex_v2();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        reseal_trailer(&mut b);
        open_vindex(&b, ValueType::F64).0.map(|_| ())
    };
    let pos_at = 64 + 2 * 8;
    let err = |r: Result<(), String>| r.expect_err("must be refused");
    assert!(err(edit(pos_at + 2, &10u16.to_le_bytes())).contains("outside its chunk"));
    assert!(
        edit(pos_at + 2, &9u16.to_le_bytes()).is_ok(),
        "row 9 is inside"
    );
    assert!(err(edit(40, &3u64.to_le_bytes())).contains("fences"));
    assert!(err(edit(40, &1u64.to_le_bytes())).contains("fences"));
    assert!(err(edit(32, &0u64.to_le_bytes())).contains("fences"));
    // Fence interval 4 needs ceil(8 / 4) + 1 = 3 fences, not 2.
    assert!(err(edit(32, &4u64.to_le_bytes())).contains("fences"));
    assert_eq!(fence_count(8, 4), 3);
    assert!(err(edit(13, &[4])).contains("width"));
    // Fences out of order, or NaN.
    assert!(err(edit(64, &9.5f64.to_bits().to_le_bytes())).contains("ascending"));
    assert!(err(edit(64, &f64::NAN.to_bits().to_le_bytes())).contains("ascending"));
    assert!(err(edit(8, &3u32.to_le_bytes())).contains("version 3"));
}

/// A version 3 manifest: the version 2 one with a packed entry (pack generation 10,
/// its image at 128 of a 1,152-byte pack).
fn manifest_v3() -> Manifest {
    let mut m = manifest_v2();
    m.entries[0].pack = PackLoc {
        generation: 10,
        offset: 128,
        len: 1152,
    };
    m
}

/// The index of a pack of two chunks, sidecars after the first.
fn pack_index() -> PackIndex {
    let first = PackEntry {
        month: MonthPartition::from_ts(JAN_2024).0,
        generation: 5,
        offset: PackIndex::data_start(2),
        chunk_len: 640,
        zonemap: SidecarRef { len: 112, xxh3: 5 },
        vindex: SidecarRef { len: 192, xxh3: 6 },
    };
    let second = PackEntry {
        month: first.month + 1,
        generation: 6,
        offset: align_up(first.end() as usize) as u64,
        chunk_len: 700,
        zonemap: SidecarRef::default(),
        vindex: SidecarRef::default(),
    };
    PackIndex {
        generation: 7,
        entries: vec![first, second],
    }
}

/// The length of the pack [`pack_index`] describes.
fn pack_len() -> u64 {
    align_up(pack_index().entries[1].end() as usize) as u64
}

#[test]
fn version_3_manifests_and_pack_indexes_round_trip() {
    let m = manifest_v3();
    let b = m.encode();
    assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 3);
    assert_eq!(Manifest::decode(&b).unwrap(), m);
    // Without a packed entry a manifest is still written as version 2.
    assert_eq!(
        u32::from_le_bytes(manifest_v2().encode()[8..12].try_into().unwrap()),
        2
    );
    let ix = pack_index();
    assert_eq!(PackIndex::decode(&ix.encode(), pack_len()).unwrap(), ix);
}

// ---------------------------------------------------------------- the checks

/// A decoded pack index lists aligned, ascending, non-overlapping entries inside the
/// file, and survives a round trip.
fn check_pack(b: &[u8], file_len: u64) {
    if let Ok(ix) = PackIndex::decode(b, file_len) {
        let mut free = PackIndex::data_start(ix.entries.len());
        for e in &ix.entries {
            assert!(e.offset >= free && e.offset % 64 == 0 && e.end() <= file_len);
            free = e.end();
        }
        assert_eq!(PackIndex::decode(&ix.encode(), file_len).unwrap(), ix);
    }
}

/// A decoded header must pass its own validation and survive a round trip (so the
/// encoder's assertions hold for anything the decoder accepts).
fn check_chunk(b: &[u8]) {
    if let Ok(h) = ChunkHeader::decode(b) {
        h.validate().expect("a decoded header validates");
        assert!(h.rows >= 1 && h.rows <= u32::MAX as u64);
        assert_eq!(h.stride, align_up(h.rows as usize * 8) as u64);
        assert!(h.first_ts <= h.last_ts);
        assert_eq!(ChunkHeader::decode(&h.encode()).unwrap(), h);
    }
}

fn check_manifest(b: &[u8]) {
    if let Ok(m) = Manifest::decode(b) {
        m.validate().expect("a decoded manifest validates");
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }
}

fn check_zonemap(b: &[u8], vt: ValueType) {
    if let Ok(z) = ZoneMap::parse(b, vt, xxh3_64(b)) {
        assert!(z.block_rows > 0);
        assert!(z.rows <= u32::MAX as usize);
        assert_eq!(z.zones.len(), z.rows.div_ceil(z.block_rows));
    }
}

fn open_vindex(b: &[u8], vt: ValueType) -> (Result<ValueIndex, String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.vidx");
    std::fs::write(&path, b).unwrap();
    let file = MappedFile::open(&path).unwrap();
    (ValueIndex::open(file, vt, xxh3_64(b)), dir)
}

fn check_vindex(b: &[u8], vt: ValueType) {
    let (r, _dir) = open_vindex(b, vt);
    if let Ok(v) = r {
        assert!(v.entries <= v.chunk_rows);
        assert!(v.chunk_rows <= u32::MAX as usize);
        let fences = v.fences();
        match v.version() {
            1 => assert_eq!(fences.len(), v.entries),
            _ => {
                let k = v.fence_every() as u64;
                assert_eq!(fences.len() as u64, fence_count(v.entries as u64, k));
                match vt {
                    ValueType::I64 => assert!(fences.is_sorted()),
                    ValueType::F64 => assert!(fences.windows(2).all(|w| {
                        let (a, b) = (f64::from_bits(w[0] as u64), f64::from_bits(w[1] as u64));
                        a.total_cmp(&b).is_le() && !a.is_nan() && !b.is_nan()
                    })),
                }
            }
        }
        for k in 0..v.entries {
            assert!((v.position(k) as usize) < v.chunk_rows);
        }
    }
}

// ---------------------------------------------------------------- mutations

/// One edit of a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Byte {
        at: usize,
        value: u8,
    },
    Truncate {
        len: usize,
    },
    Extend {
        bytes: Vec<u8>,
    },
    /// Overwrites a length or count field (`field` picks one of the format's).
    Field {
        field: usize,
        value: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(64),
        Just(u32::MAX as u64),
        Just(u32::MAX as u64 + 1),
        Just(1 << 61),
        Just(u64::MAX),
        Just(u64::MAX / 8),
        Just(u64::MAX / 40 + 1),
        any::<u64>(),
        0u64..100_000,
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Byte { at, value }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        prop::collection::vec(any::<u8>(), 1..200).prop_map(|bytes| Mutation::Extend { bytes }),
        (any::<usize>(), interesting).prop_map(|(field, value)| Mutation::Field { field, value }),
    ]
}

/// Length and count fields of each layout: (offset, width in bytes).
const CHUNK_FIELDS: &[(usize, usize)] = &[
    (8, 2),
    (10, 1),
    (11, 1),
    (12, 2),
    (16, 8),
    (24, 8),
    (32, 8),
    (40, 4),
    (44, 4),
    (104, 8),
    (112, 1),
    (177, 1),
    (194, 1),
    (259, 1),
];
// Version 2: the wal_lsn at 288, entries from 304.
const MANIFEST_FIELDS: &[(usize, usize)] = &[
    (8, 4),
    (12, 4),
    (24, 8),
    (56, 1),
    (64, 1),
    (288, 8),
    (304, 4),
    (304 + 16, 8),
    (304 + 24, 8),
    (304 + 32, 8),
    (304 + 40, 8),
    (304 + 96, 1),
    (304 + 128 + 8, 8),
];
// magic, payload length, lsn; the entry count; the first entry's kind, symbol length,
// ncols and row count (kline "BTCUSDT" "1m").
const WAL_FIELDS: &[(usize, usize)] = &[
    (0, 4),
    (4, 4),
    (8, 8),
    (24, 4),
    (28, 1),
    (29, 1),
    (29 + 8 + 3, 1),
    (29 + 8 + 3 + 1, 4),
];
// The count, generation, and the first entry's offset, lengths.
const PACK_FIELDS: &[(usize, usize)] = &[
    (8, 4),
    (12, 4),
    (16, 8),
    (24 + 16, 8),
    (24 + 24, 8),
    (24 + 32, 8),
    (24 + 48, 8),
    (24 + 64 + 16, 8),
];
// Version 3: the first entry's pack generation, offset and length.
const MANIFEST_V3_FIELDS: &[(usize, usize)] = &[
    (8, 4),
    (12, 4),
    (24, 8),
    (304 + 40, 8),
    (304 + 97, 8),
    (304 + 105, 8),
    (304 + 113, 8),
];
const ZONEMAP_FIELDS: &[(usize, usize)] = &[(12, 1), (16, 4), (24, 8), (32, 8), (64 + 32, 4)];
const VINDEX_FIELDS: &[(usize, usize)] = &[(12, 1), (16, 8), (24, 8), (32, 8), (40, 8), (128, 4)];
const VINDEX_V2_FIELDS: &[(usize, usize)] = &[
    (12, 1),
    (13, 1),
    (16, 8),
    (24, 8),
    (32, 8),
    (40, 8),
    (48, 8),
    (64, 8),
    (80, 2),
];

fn apply(mut b: Vec<u8>, muts: &[Mutation], fields: &[(usize, usize)]) -> Vec<u8> {
    for m in muts {
        match m {
            Mutation::Flip { at, bit } if !b.is_empty() => {
                let i = at % b.len();
                b[i] ^= 1 << bit;
            }
            Mutation::Byte { at, value } if !b.is_empty() => {
                let i = at % b.len();
                b[i] = *value;
            }
            Mutation::Truncate { len } => {
                let n = len % (b.len() + 1);
                b.truncate(n);
            }
            Mutation::Extend { bytes } => b.extend_from_slice(bytes),
            Mutation::Field { field, value } => {
                let (at, width) = fields[field % fields.len()];
                if at + width <= b.len() {
                    b[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
            _ => {}
        }
    }
    b
}

/// Recomputes a trailing xxh3-64 over everything before it (manifest and sidecars).
fn reseal_trailer(b: &mut [u8]) {
    if b.len() >= 8 {
        let end = b.len() - 8;
        let sum = xxh3_64(&b[..end]);
        b[end..].copy_from_slice(&sum.to_le_bytes());
    }
}

/// Recomputes the chunk header checksum at 504 over bytes 0..504.
fn reseal_header(b: &mut [u8]) {
    if b.len() >= CHUNK_HEADER_LEN {
        let sum = xxh3_64(&b[..CHUNK_HEADER_LEN - 8]);
        b[CHUNK_HEADER_LEN - 8..CHUNK_HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    }
}

/// A catalog file: a put of two series, a drop of one of them, and a state record
/// (resident rows) of the other.
fn catalog_bytes() -> Vec<u8> {
    use fastk::storage::catalog::{CATALOG_FILE, Catalog, ResidentMonth, ResidentState};
    let dir = tempfile::tempdir().unwrap();
    let (c, _, _) = Catalog::open(dir.path()).unwrap();
    let m = |meta: SeriesMeta, lsn: u64| Manifest {
        meta,
        version: 0,
        next_generation: 1,
        retention_ms: 86_400_000,
        irregular: lsn % 2 == 1,
        wal_lsn: lsn,
        entries: Vec::new(),
    };
    let (a, b) = (m(scalar(), 4), m(kline(), 7));
    c.put(&[&a, &b]).unwrap();
    c.drop_series(&a.meta).unwrap();
    let day = 86_400_000;
    let state = ResidentState {
        manifest: Manifest { version: 2, ..b },
        months: vec![ResidentMonth {
            month: 648,
            cols: (0..6)
                .map(|i| {
                    vec![
                        1_704_067_200_000 + i * day,
                        1_704_067_200_000 + (i + 1) * day,
                    ]
                })
                .collect(),
        }],
    };
    c.put_states(&[state]).1.unwrap();
    std::fs::read(dir.path().join(CATALOG_FILE)).unwrap()
}

/// Catalog fields a mutation may overwrite: version, the first record's length, its
/// entry count, its first entry's key part count and timeframe.
const CATALOG_FIELDS: &[(usize, usize)] = &[(8, 4), (16, 4), (24, 4), (30, 1), (32, 8)];

/// Recomputes each catalog record's checksum, as far as lengths lead to whole records.
fn reseal_catalog(b: &mut [u8]) {
    let mut at = 16;
    while at + 4 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 4).checked_add(len).filter(|e| e + 8 <= b.len()) else {
            return;
        };
        let sum = xxh3_64(&b[at + 4..end]);
        b[end..end + 8].copy_from_slice(&sum.to_le_bytes());
        at = end + 8;
    }
}

#[test]
fn the_catalog_decodes_what_it_wrote() {
    let b = catalog_bytes();
    assert_eq!(fastk::storage::catalog::decode_for_fuzz(&b), Ok(1));
}

/// The catalog as a store before format version 3 wrote it: header version 1, the put
/// and the drop of `catalog_bytes` (no state record).
fn catalog_v1_bytes() -> Vec<u8> {
    let b = catalog_bytes();
    let mut at = 16;
    for _ in 0..2 {
        at += 4 + u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize + 8;
    }
    let mut v1 = b[..at].to_vec();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    v1
}

/// Store format 3's files: the catalog at header version 2 (with a state record), the
/// catalog a version 2 store holds (header version 1), and `FORMAT`. Each golden still
/// decodes: the version 1 catalog is read by this binary as it was written.
#[test]
fn golden_encodings_of_store_format_v3_are_unchanged() {
    use fastk::storage::catalog::decode_for_fuzz;
    use fastk::storage::upgrade;
    check_golden("catalog_v2.bin", &catalog_bytes());
    check_golden("catalog_v1.bin", &catalog_v1_bytes());
    check_golden("format_v3.bin", &upgrade::encode(3));
    let read = |name: &str| std::fs::read(golden_path(name)).unwrap();
    assert_eq!(decode_for_fuzz(&read("catalog_v1.bin")), Ok(1));
    assert_eq!(decode_for_fuzz(&read("catalog_v2.bin")), Ok(1));
    assert_eq!(upgrade::decode(&read("format_v3.bin")), Ok(3));
}

fn mutations() -> impl Strategy<Value = (Vec<Mutation>, bool)> {
    (prop::collection::vec(mutation(), 1..5), any::<bool>())
}

fn value_type() -> impl Strategy<Value = ValueType> {
    prop_oneof![Just(ValueType::I64), Just(ValueType::F64)]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn catalog_never_panics_on_arbitrary_bytes(
        b in prop::collection::vec(any::<u8>(), 0..600),
        magic in any::<bool>(),
    ) {
        let mut b = b;
        if magic && b.len() >= 16 {
            b[..8].copy_from_slice(b"FASTKCAT");
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
            reseal_catalog(&mut b);
        }
        let _ = fastk::storage::catalog::decode_for_fuzz(&b);
    }

    #[test]
    fn format_file_never_panics_on_arbitrary_bytes(
        b in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let _ = fastk::storage::upgrade::decode(&b);
    }

    #[test]
    fn catalog_never_panics_on_mutations((muts, reseal) in mutations()) {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let base = BYTES.get_or_init(catalog_bytes).clone();
        let mut b = apply(base, &muts, CATALOG_FIELDS);
        if reseal {
            reseal_catalog(&mut b);
        }
        let _ = fastk::storage::catalog::decode_for_fuzz(&b);
    }

    #[test]
    fn chunk_header_never_panics_on_arbitrary_bytes(
        b in prop::collection::vec(any::<u8>(), 0..1200),
        magic in any::<bool>(),
    ) {
        let mut b = b;
        if magic && b.len() >= CHUNK_HEADER_LEN {
            b[..8].copy_from_slice(b"FASTKCHK");
            reseal_header(&mut b);
        }
        check_chunk(&b);
    }

    #[test]
    fn chunk_header_never_panics_on_mutations(
        (muts, reseal) in mutations(),
        kline in any::<bool>(),
    ) {
        let base = if kline { kline_chunk() } else { scalar_chunk() };
        let mut b = apply(base, &muts, CHUNK_FIELDS);
        if reseal {
            reseal_header(&mut b);
        }
        check_chunk(&b);
    }

    #[test]
    fn manifest_never_panics_on_arbitrary_bytes(
        b in prop::collection::vec(any::<u8>(), 0..1200),
        magic in any::<bool>(),
    ) {
        let mut b = b;
        if magic && b.len() >= 8 {
            b[..8].copy_from_slice(b"FASTKMAN");
            reseal_trailer(&mut b);
        }
        check_manifest(&b);
    }

    #[test]
    fn manifest_never_panics_on_mutations((muts, reseal) in mutations()) {
        let mut b = apply(manifest().encode(), &muts, MANIFEST_FIELDS);
        if reseal {
            reseal_trailer(&mut b);
        }
        check_manifest(&b);
    }

    #[test]
    fn pack_index_never_panics_on_arbitrary_bytes(
        b in prop::collection::vec(any::<u8>(), 0..600),
        magic in any::<bool>(),
        file_len in prop_oneof![Just(u64::MAX), 0u64..1_000_000, Just(1u64 << 62)],
    ) {
        let mut b = b;
        if magic && b.len() >= 32 {
            b[..8].copy_from_slice(b"FASTKPAK");
            // A count that fits the bytes, then the checksum over header and index.
            let n = ((b.len() - 32) / 64).max(1) as u32;
            b[12..16].copy_from_slice(&n.to_le_bytes());
            let end = 24 + n as usize * 64;
            if end + 8 <= b.len() {
                let sum = xxh3_64(&b[..end]);
                b[end..end + 8].copy_from_slice(&sum.to_le_bytes());
            }
        }
        check_pack(&b, file_len);
    }

    #[test]
    fn pack_index_never_panics_on_mutations((muts, reseal) in mutations(), grow in 0u64..4096) {
        let mut b = apply(pack_index().encode(), &muts, PACK_FIELDS);
        if reseal && b.len() >= 24 {
            let n = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
            let end = 24 + n.min(1 << 20) * 64;
            if end + 8 <= b.len() {
                let sum = xxh3_64(&b[..end]);
                b[end..end + 8].copy_from_slice(&sum.to_le_bytes());
            }
        }
        check_pack(&b, pack_len() + grow);
    }

    #[test]
    fn manifest_v3_never_panics_on_mutations((muts, reseal) in mutations()) {
        let mut b = apply(manifest_v3().encode(), &muts, MANIFEST_V3_FIELDS);
        if reseal {
            reseal_trailer(&mut b);
        }
        check_manifest(&b);
    }

    #[test]
    fn wal_record_never_panics_on_arbitrary_bytes(
        b in prop::collection::vec(any::<u8>(), 0..600),
        magic in any::<bool>(),
    ) {
        let mut b = b;
        if magic && b.len() >= 4 {
            b[..4].copy_from_slice(b"FKWR");
            reseal_record(&mut b);
        }
        check_wal(&b);
    }

    #[test]
    fn wal_record_never_panics_on_mutations((muts, reseal) in mutations()) {
        let mut b = apply(wal_record(), &muts, WAL_FIELDS);
        if reseal {
            reseal_record(&mut b);
        }
        check_wal(&b);
    }

    /// A compressed chunk body (pcodec streams per column) under mutation decodes to
    /// an image or an error, never a panic.
    #[test]
    fn compressed_body_never_panics_on_mutations(muts in prop::collection::vec(mutation(), 0..6)) {
        let (h, body) = compressed_kline();
        let b = apply(body, &muts, &[(0, 1), (1, 4)]);
        if let Ok(img) = fastk::storage::codec::image(&h, &b) {
            assert_eq!(img.len() as u64, h.raw_len());
        }
        // A prefix read of the same bytes, through a ts inside the chunk.
        if let Ok((img, p)) = fastk::storage::codec::prefix_image(&h, &b, h.first_ts + 600_000) {
            assert_eq!(img.len() as u64, p.raw_len());
            assert!(p.rows <= h.rows);
        }
    }

    #[test]
    fn zone_map_never_panics_on_arbitrary_bytes(
        b in prop::collection::vec(any::<u8>(), 0..600),
        vt in value_type(),
    ) {
        let mut b = b;
        if b.len() >= 8 {
            b[..8].copy_from_slice(b"FASTKZMP");
            reseal_trailer(&mut b);
        }
        check_zonemap(&b, vt);
    }

    #[test]
    fn zone_map_never_panics_on_mutations(
        (muts, reseal) in mutations(),
        vt in value_type(),
    ) {
        let mut b = apply(zonemap(), &muts, ZONEMAP_FIELDS);
        if reseal {
            reseal_trailer(&mut b);
        }
        check_zonemap(&b, vt);
    }

    #[test]
    fn value_index_never_panics_on_arbitrary_bytes(
        b in prop::collection::vec(any::<u8>(), 0..600),
        vt in value_type(),
    ) {
        let mut b = b;
        if b.len() >= 8 {
            b[..8].copy_from_slice(b"FASTKVIX");
            reseal_trailer(&mut b);
        }
        check_vindex(&b, vt);
    }

    #[test]
    fn value_index_never_panics_on_mutations(
        (muts, reseal) in mutations(),
        vt in value_type(),
    ) {
        let mut b = apply(vindex(), &muts, VINDEX_FIELDS);
        if reseal {
            reseal_trailer(&mut b);
        }
        check_vindex(&b, vt);
    }

    #[test]
    fn value_index_v2_never_panics_on_arbitrary_bytes(
        b in prop::collection::vec(any::<u8>(), 0..600),
        vt in value_type(),
    ) {
        let mut b = b;
        if b.len() >= 12 {
            b[..8].copy_from_slice(b"FASTKVIX");
            b[8..12].copy_from_slice(&2u32.to_le_bytes());
            reseal_trailer(&mut b);
        }
        check_vindex(&b, vt);
    }

    #[test]
    fn value_index_v2_never_panics_on_mutations(
        (muts, reseal) in mutations(),
        vt in value_type(),
    ) {
        let mut b = apply(vindex_v2(), &muts, VINDEX_V2_FIELDS);
        if reseal {
            reseal_trailer(&mut b);
        }
        check_vindex(&b, vt);
    }
}
