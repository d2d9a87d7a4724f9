//! Flight reads straight from chunk memory: the batches DoGet sends are slices of the
//! mapped chunk files, and a chunk that fails its checksum ends a stream with DataLoss.

mod common;

use common::*;
use fastk::record::{SeriesKey, TsRange};
use futures::StreamExt;
use serde_json::json;
use tonic::Code;

/// The zero-copy promise, checked through the engine without a network: every raw
/// column buffer of every DoGet batch is an exact slice of its chunk's mapping.
#[test]
fn raw_batches_point_into_the_chunk_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(dir.path(), |_| {});
    let reg = fastk::query::types::RegisterKline {
        volume_scale: 1000,
        ..kline_registration("BTCUSDT", "1m")
    };
    engine.register_kline(&reg).unwrap();
    let key = SeriesKey::kline("BTCUSDT", "1m").unwrap();
    let rows = klines(JAN_2024 + 20 * 24 * 60 * MINUTE, 30_000, MINUTE, 3);
    for part in rows.chunks(12_000) {
        engine.write_kline(&key, part, None).unwrap();
    }
    let range = TsRange::new(Some(rows[10].ts), Some(rows[29_000].ts));
    let (meta, slices) = engine.stream(&key, range, None).unwrap();
    let projection = fastk::storage::batch::Projection::all(&meta);
    let (mut checked, mut seen_rows) = (0, 0);
    for slice in slices {
        let slice = slice.unwrap();
        let map = slice.chunk.file.address_range();
        let mut offset = 0;
        // The batches `Engine::read_into` cuts from a slice: at most 4096 rows each.
        let steps = (0..slice.len()).step_by(4096);
        for batch in steps.map(|a| projection.batch(&slice.sub(a, (a + 4096).min(slice.len())))) {
            assert!(batch.num_rows() <= 4096);
            for (c, array) in batch.columns().iter().enumerate() {
                let data = array.to_data();
                let buf = &data.buffers()[0];
                let start = buf.as_ptr() as usize;
                let expected = slice.col(c)[offset..].as_ptr() as usize;
                assert_eq!(start, expected, "column {c} is the stored bytes");
                assert!(map.contains(&start) && start + buf.len() <= map.end);
                assert_eq!(buf.len(), batch.num_rows() * 8);
                checked += 1;
            }
            offset += batch.num_rows();
        }
        seen_rows += slice.len();
    }
    assert_eq!(seen_rows, 28_991);
    assert!(checked >= 6 * 8);
}

/// The first file under `dir` (recursively) whose name starts with `prefix` and ends
/// with `suffix`.
fn find_file(dir: &std::path::Path, prefix: &str, suffix: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if let Some(found) = find_file(&path, prefix, suffix) {
                return Some(found);
            }
        } else if name.starts_with(prefix) && name.ends_with(suffix) {
            return Some(path);
        }
    }
    None
}

/// A chunk that fails its checksum in the middle of a range: the rows before it are
/// delivered, then the stream ends with DataLoss, and the message names no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_mid_stream_ends_with_data_loss() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::PermissionsExt;

    let mut fx = Fixture::start(|c| {
        c.flight.max_batch_rows = 1000;
        // A file per month (the fold packs nothing): the test damages February's.
        c.storage.pack_target_bytes = 0;
    })
    .await;
    let key = fx.kline_series("BTCUSDT", "1m");
    fx.write_klines(&key, &klines(JAN_2024, 5000, MINUTE, 1));
    let feb = JAN_2024 + 31 * 24 * 60 * MINUTE;
    fx.write_klines(&key, &klines(feb, 5000, MINUTE, 2));
    // Small writes go through the write-ahead log: fold them into chunk files first.
    fx.engine().store.fold_all();
    let root = fx.engine().store.root().to_path_buf();
    let chunk = find_file(&root, "2024-02", ".chunk").expect("February chunk on disk");
    std::fs::set_permissions(&chunk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&chunk)
        .unwrap();
    f.seek(SeekFrom::End(-8)).unwrap();
    f.write_all(&[0xA5; 8]).unwrap();
    drop(f);

    let t = json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m"});
    let mut stream = fx.client.do_get(ticket(t)).await.unwrap();
    let mut rows = 0;
    let err = loop {
        match stream.next().await {
            Some(Ok(b)) => rows += b.num_rows(),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without reporting the corruption"),
        }
    };
    assert_eq!(rows, 5000, "January was delivered before the bad chunk");
    assert_eq!(code(&err), Code::DataLoss);
    assert!(!message(&err).contains("2024-02"), "{}", message(&err));
    fx.shutdown().await;
}
