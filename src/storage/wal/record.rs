//! The log's record: its encoding (header, then the payload of every series of one
//! write), its checksum, and its decoding, which refuses anything malformed.

use super::*;

/// Why bytes at an offset are not a whole valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than the header or its payload length: a torn append.
    Short,
    /// The bytes are there but wrong (magic, checksum, or the payload's structure).
    Bad(String),
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub lsn: u64,
    pub entries: Vec<(SeriesKey, WriteBatch)>,
}

/// Encodes one record. The columns of each batch must have equal lengths.
pub fn encode_record(lsn: u64, entries: &[(&SeriesKey, &WriteBatch)]) -> Vec<u8> {
    let payload_len: usize = U32_LEN
        + entries
            .iter()
            .map(|(k, b)| {
                U8_LEN
                    + k.name_parts().map(|p| U8_LEN + p.len()).sum::<usize>()
                    + U8_LEN
                    + U32_LEN
                    + b.cols.len() * b.len() * U64_LEN
            })
            .sum::<usize>();
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload_len);
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(payload_len)
            .expect("record fits u32")
            .to_le_bytes(),
    );
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&[0; U64_LEN]);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (key, batch) in entries {
        assert!(
            !crate::storage::series::needs_seq(key.kind(), batch),
            "wal: a tick record holds numbered seqs only"
        );
        out.push(key.kind().code());
        for p in key.name_parts() {
            out.push(u8::try_from(p.len()).expect("names are at most 64 bytes"));
            out.extend_from_slice(p.as_bytes());
        }
        out.push(u8::try_from(batch.cols.len()).expect("a handful of columns"));
        out.extend_from_slice(&(batch.len() as u32).to_le_bytes());
        for c in &batch.cols {
            assert_eq!(c.len(), batch.len(), "wal: ragged columns");
            out.extend_from_slice(bytemuck::cast_slice(c));
        }
    }
    assert_eq!(
        out.len(),
        RECORD_HEADER_LEN + payload_len,
        "wal: record length"
    );
    let sum = record_checksum(&out[..XXH3_OFFSET], &out[RECORD_HEADER_LEN..]);
    out[XXH3_OFFSET..RECORD_HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    out
}

pub(super) fn record_checksum(head: &[u8], payload: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(head);
    h.update(payload);
    h.digest()
}

pub(super) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + U32_LEN].try_into().expect("4 bytes"))
}

pub(super) fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + U64_LEN].try_into().expect("8 bytes"))
}

/// Decodes the record at the start of `b`; returns it and its length. Any bytes give
/// a record or an error, never a panic (`tests/fuzz_decoders.rs`).
pub fn decode_record(b: &[u8]) -> std::result::Result<(Record, usize), RecordError> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Short);
    }
    if get_u32(b, MAGIC_OFFSET) != RECORD_MAGIC {
        return Err(RecordError::Bad("bad record magic".into()));
    }
    let len = get_u32(b, PAYLOAD_LEN_OFFSET) as usize;
    let Some(payload) = b.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
        return Err(RecordError::Short);
    };
    if record_checksum(&b[..XXH3_OFFSET], payload) != get_u64(b, XXH3_OFFSET) {
        return Err(RecordError::Bad("record checksum mismatch".into()));
    }
    let lsn = get_u64(b, LSN_OFFSET);
    let entries = decode_payload(payload).map_err(RecordError::Bad)?;
    Ok((Record { lsn, entries }, RECORD_HEADER_LEN + len))
}

pub(super) fn decode_payload(
    p: &[u8],
) -> std::result::Result<Vec<(SeriesKey, WriteBatch)>, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        let s = p
            .get(at..at.checked_add(n).ok_or("length overflows")?)
            .ok_or("payload ends inside an entry")?;
        at += n;
        Ok(s)
    };
    let count = u32::from_le_bytes(take(U32_LEN)?.try_into().expect("4 bytes")) as usize;
    if count > MAX_RECORD_ENTRIES {
        return Err(format!("{count} entries, more than {MAX_RECORD_ENTRIES}"));
    }
    let mut entries = Vec::new();
    for _ in 0..count {
        let kind = SeriesKind::from_code(take(U8_LEN)?[0]).ok_or("unknown series kind")?;
        // symbol and timeframe, and for a scalar its category and name; a tick
        // series has its symbol only
        let nparts = match kind {
            SeriesKind::Kline => 2,
            SeriesKind::Scalar => 4,
            SeriesKind::Trade | SeriesKind::Quote => 1,
        };
        let mut parts = vec![kind.as_str().to_string()];
        for _ in 0..nparts {
            let n = take(U8_LEN)?[0] as usize;
            let s = std::str::from_utf8(take(n)?).map_err(|_| "a name is not UTF-8")?;
            parts.push(s.to_string());
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let key = SeriesKey::from_parts(&refs)?;
        let ncols = take(U8_LEN)?[0] as usize;
        if ncols != kind.ncols() {
            return Err(format!("{ncols} columns for a {} series", kind.as_str()));
        }
        let rows = u32::from_le_bytes(take(U32_LEN)?.try_into().expect("4 bytes")) as usize;
        let mut batch = WriteBatch::with_capacity(0, 0);
        for _ in 0..ncols {
            let bytes = take(rows.checked_mul(U64_LEN).ok_or("rows overflow")?)?;
            batch.cols.push(
                bytes
                    .chunks_exact(U64_LEN)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            );
        }
        if crate::storage::series::needs_seq(kind, &batch) {
            return Err(format!(
                "{key}: a tick record holds a seq that was never numbered"
            ));
        }
        entries.push((key, batch));
    }
    if at != p.len() {
        return Err("bytes after the last entry".into());
    }
    Ok(entries)
}
