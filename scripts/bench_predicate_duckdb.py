#!/usr/bin/env python3
"""DuckDB peer for the predicate benchmark, on the same data and predicates.

Reads target/bench-data/scalar.bin and target/bench-results/predicate.json written by
`cargo bench --bench predicate`, writes the data to Parquet, times DuckDB's
`SELECT ts FROM parquet WHERE value BETWEEN min AND max` for each selectivity, and
prints FastK's auto planner next to it with the ratio. Needs numpy, pyarrow, duckdb.
"""
import json
import pathlib
import statistics
import sys
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    raw = np.fromfile(ROOT / "target/bench-data/scalar.bin", dtype="<i8").reshape(-1, 2)
    fastk = json.loads((ROOT / "target/bench-results/predicate.json").read_text())
    table = pa.table({"ts": pa.array(raw[:, 0]).cast(pa.timestamp("ms", tz="UTC")), "value": pa.array(raw[:, 1])})
    path = ROOT / "target/bench-data/scalar.parquet"
    pq.write_table(table, path)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW s AS SELECT * FROM read_parquet('{path}')")
    print(f"DuckDB {duckdb.__version__} over Parquet, {len(raw)} rows")
    print(f"{'select%':>10} {'duckdb ms':>12} {'fastk ms':>12} {'duckdb/fastk':>13} {'matches':>9}")
    rows = []
    for r in fastk["results"]:
        q = f"SELECT ts FROM s WHERE value BETWEEN {r['min']} AND {r['max']}"
        times = []
        n = 0
        for _ in range(5):
            t = time.perf_counter()
            n = con.sql(q).to_arrow_table().num_rows
            times.append((time.perf_counter() - t) * 1e3)
        d = statistics.median(times)
        assert n == r["matches"], f"DuckDB found {n} rows, FastK {r['matches']}"
        print(f"{r['selectivity_pct']:>10} {d:>12.3f} {r['auto_ms']:>12.3f} {d / r['auto_ms']:>12.1f}x {n:>9}")
        rows.append({**r, "duckdb_ms": d})
    (ROOT / "target/bench-results/predicate_duckdb.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
