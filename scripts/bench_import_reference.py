#!/usr/bin/env python3
"""Reference timing for `fastk import`: Polars `read_csv` on the same 1m-bar CSV.

Usage: scripts/bench_import_reference.py FILE [--seconds-only]

`cargo bench --bench import_csv` generates FILE (under target/bench/) and calls this
script to print the ratio next to its own figures. Polars reads the CSV into typed
columns (i64 timestamps, f64 prices) using every core it can; fastk also converts the
prices to fixed-point integers, checks the OHLC rules and duplicates, and writes.
The best of three runs is reported.
"""

from __future__ import annotations

import argparse
import sys
import time

import polars as pl


def best_of(path: str, runs: int = 3) -> tuple[float, int]:
    best = float("inf")
    rows = 0
    for _ in range(runs):
        t = time.perf_counter()
        df = pl.read_csv(path)
        best = min(best, time.perf_counter() - t)
        rows = df.height
    return best, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--seconds-only", action="store_true", help="print only the seconds")
    args = ap.parse_args()
    secs, rows = best_of(args.file)
    if args.seconds_only:
        print(f"{secs:.6f}")
    else:
        print(
            f"polars {pl.__version__} read_csv: {rows} rows in {secs:.3f} s "
            f"({rows / secs / 1e6:.2f} M rows/s, {pl.thread_pool_size()} threads)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
