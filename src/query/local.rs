//! The co-located read plan (Flight `local-read`, docs/flight.md): which chunk files a
//! client on the same host maps itself, and which rows it must fetch with DoGet.
//!
//! A client that maps the very files the server maps copies no byte between the
//! mapping and its table. Only raw chunk files can be handed out that way; rows of the
//! write-ahead log's in-memory chunks and of compressed months exist raw only in this
//! process, so consecutive chunks of that kind become one "rows" part that the client
//! reads with an ordinary DoGet over exactly their `ts` span.

use serde::Serialize;

use super::Engine;
use super::market::ReadSpec;
use crate::error::{Error, ErrorKind, Result};
use crate::record::SeriesKey;
use crate::storage::batch::{PriceFormat, Projection};
use crate::storage::locate::{Located, Place};

/// One part of a plan, in `ts` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LocalPart {
    /// Rows of one raw chunk file: each requested column's rows are `rows` values of
    /// 8 bytes from `offsets[i]` of the file at `path`.
    File {
        path: String,
        /// The file's length and the chunk's body checksum (bytes 96..104 of its
        /// header), to tell that the file opened is the one planned.
        file_len: u64,
        checksum: u64,
        /// Where the chunk's header starts in the file: 0 for a chunk file, its place
        /// in a pack (the checksum is read there).
        image_offset: u64,
        offsets: Vec<u64>,
        rows: u64,
        first_ts: i64,
        last_ts: i64,
    },
    /// Rows the client cannot map: exactly the rows of `[first_ts, last_ts]`.
    Rows {
        rows: u64,
        first_ts: i64,
        last_ts: i64,
    },
}

/// The answer to one co-located read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalPlan {
    /// The series version the plan was made at.
    pub version: u64,
    /// Rows of every part together.
    pub rows: u64,
    /// The columns of the result, `ts` first (the order of `offsets`).
    pub columns: Vec<String>,
    pub parts: Vec<LocalPart>,
}

impl Engine {
    /// The plan of a plain single-series read (`spec`: a range or latest-N, a column
    /// subset, raw values). At most `max_chunks` chunks may be involved
    /// (`flight.max_local_parts`); more is `payload_too_large`.
    pub fn local_plan(
        &self,
        key: &SeriesKey,
        spec: &ReadSpec,
        max_chunks: usize,
    ) -> Result<LocalPlan> {
        if spec.resample.is_some() {
            return Err(Error::invalid(
                "local-read serves stored rows only: resample is not supported (use DoGet)",
            ));
        }
        if spec.price_format != PriceFormat::Raw {
            return Err(Error::invalid(
                "local-read maps raw columns: price_format must be \"raw\" (divide by fastk.price_scale / fastk.volume_scale of the schema, or use DoGet)",
            ));
        }
        let series = self.series_at(key, &spec.at)?;
        let projection = Projection::new(&series.meta, spec.columns.as_deref(), PriceFormat::Raw)
            .map_err(Error::invalid)?;
        let snap = series.snapshot();
        let located = snap
            .locate(spec.range, spec.latest, max_chunks, self.store.local_copies())?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "the range spans more than {max_chunks} chunks (flight.max_local_parts): narrow it and read it in pieces"
                    ),
                )
            })?;
        let parts = merge_parts(located, &projection.cols)?;
        let rows = parts.iter().map(part_rows).sum();
        self.metrics
            .add_read(rows, rows * projection.cols.len() as u64 * 8);
        Ok(LocalPlan {
            version: snap.version,
            rows,
            columns: projection
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
            parts,
        })
    }
}

fn part_rows(p: &LocalPart) -> u64 {
    match p {
        LocalPart::File { rows, .. } | LocalPart::Rows { rows, .. } => *rows,
    }
}

/// One part per raw file chunk; consecutive chunks that are not files become one
/// `Rows` part (one DoGet for the client).
fn merge_parts(located: Vec<Located>, cols: &[usize]) -> Result<Vec<LocalPart>> {
    let mut parts: Vec<LocalPart> = Vec::with_capacity(located.len());
    for l in located {
        match &l.place {
            Place::File {
                path,
                file_len,
                checksum,
                image_offset,
                ..
            } => {
                let path = path
                    .to_str()
                    .ok_or_else(|| Error::internal(format!("non UTF-8 path {path:?}")))?;
                let offsets = cols
                    .iter()
                    .map(|&c| l.place.col_offset(c).unwrap_or_default())
                    .collect();
                parts.push(LocalPart::File {
                    path: path.to_owned(),
                    file_len: *file_len,
                    checksum: *checksum,
                    image_offset: *image_offset,
                    offsets,
                    rows: l.rows,
                    first_ts: l.first_ts,
                    last_ts: l.last_ts,
                });
            }
            Place::Memory | Place::Compressed => {
                if let Some(LocalPart::Rows { rows, last_ts, .. }) = parts.last_mut() {
                    *rows += l.rows;
                    *last_ts = l.last_ts;
                } else {
                    parts.push(LocalPart::Rows {
                        rows: l.rows,
                        first_ts: l.first_ts,
                        last_ts: l.last_ts,
                    });
                }
            }
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn located(place: Place, first_ts: i64, rows: u64) -> Located {
        Located {
            place,
            rows,
            first_ts,
            last_ts: first_ts + rows as i64 - 1,
        }
    }

    #[test]
    fn files_keep_their_offsets_and_other_chunks_merge_into_one_rows_part() {
        let file = Place::File {
            path: "/s/2024-01.g0000000000000001.chunk".into(),
            file_len: 512 + 6 * 128,
            checksum: 9,
            image_offset: 0,
            ts_offset: 512 + 3 * 8,
            stride: 128,
        };
        let parts = merge_parts(
            vec![
                located(Place::Compressed, 0, 10),
                located(Place::Memory, 10, 5),
                located(file, 15, 13),
                located(Place::Memory, 28, 2),
            ],
            &[0, 4, 5],
        )
        .unwrap();
        assert_eq!(
            parts,
            vec![
                LocalPart::Rows {
                    rows: 15,
                    first_ts: 0,
                    last_ts: 14
                },
                LocalPart::File {
                    path: "/s/2024-01.g0000000000000001.chunk".into(),
                    file_len: 512 + 6 * 128,
                    checksum: 9,
                    image_offset: 0,
                    offsets: vec![536, 536 + 4 * 128, 536 + 5 * 128],
                    rows: 13,
                    first_ts: 15,
                    last_ts: 27
                },
                LocalPart::Rows {
                    rows: 2,
                    first_ts: 28,
                    last_ts: 29
                },
            ]
        );
    }
}
