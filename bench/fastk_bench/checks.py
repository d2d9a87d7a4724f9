"""Every timed answer checked: cheap checksums of answers, compared with the expected
ones, on every repetition (not only the untimed warm-up).

A checksum is a tuple of a few integers (the row count and sums of one or two value
columns, or a match count): cheap enough to compute after the clock stops on every
answer, specific enough that a wrong window, a missing batch or a shifted column
changes it. The expected value comes from the dataset (numpy), or, where nothing
simpler exists, from the first checked answer cross-checked between systems.

A mismatch raises `Mismatch`, which the workloads' error handlers re-raise: a wrong
answer fails the run (the driver records it in results.json and exits non-zero); it
is never recorded as one failed system and skipped.

`COUNTS` tallies the answers checked per workload (a results.json key such as
`year_to_polars` or `market_resample`); the driver writes it as results["checked"].
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import polars as pl

COUNTS: dict[str, int] = {}


class Mismatch(Exception):
    """A timed answer differs from the expected one: the run fails."""


def count(workload: str, n: int = 1) -> None:
    COUNTS[workload] = COUNTS.get(workload, 0) + n


def expect(workload: str, system: str, got, want) -> None:
    """Counts one checked answer; raises `Mismatch` unless `got == want`."""
    if got != want:
        raise Mismatch(f"{workload}: {system} answered checksum {got!r}, expected {want!r}")
    count(workload)


def col_sum(answer, name: str) -> int:
    """The sum of an integer (or integral float) column of a Polars, Arrow or pandas answer."""
    if isinstance(answer, pl.DataFrame):
        v = answer[name].sum()
    elif isinstance(answer, pa.Table):
        v = pc.sum(answer.column(name)).as_py()
    else:
        v = answer[name].sum()
    return int(v or 0)


def rows(answer) -> int:
    if isinstance(answer, pl.DataFrame):
        return answer.height
    if isinstance(answer, pa.Table):
        return answer.num_rows
    return len(answer)


def digest(answer, cols=("close",)) -> tuple:
    """(rows, sum of each of `cols`) of a table-like answer."""
    return (rows(answer), *(col_sum(answer, c) for c in cols))


def window(values: np.ndarray, lo: int, hi: int) -> int:
    """The sum of values[lo:hi] as a Python int."""
    return int(values[lo:hi].sum(dtype=np.int64))


def kline_digest(table: pa.Table, start: int, end: int, cols=("close",)) -> tuple:
    """The expected `digest` of 1m bars of `table` with ts in [start, end] (inclusive)."""
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    lo, hi = int(np.searchsorted(ts, start)), int(np.searchsorted(ts, end, side="right"))
    return (hi - lo, *(window(table.column(c).to_numpy(), lo, hi) for c in cols))


class Prefix:
    """Prefix sums of one column per symbol, for the expected digest of many windows."""

    def __init__(self, kline: dict[str, pa.Table], col: str = "close"):
        self.ts = {s: t.column("ts").cast(pa.int64()).to_numpy() for s, t in kline.items()}
        self.cum = {s: np.concatenate([[0], np.cumsum(t.column(col).to_numpy(), dtype=np.int64)])
                    for s, t in kline.items()}

    def window(self, symbol: str, start: int, end: int) -> tuple:
        ts = self.ts[symbol]
        lo, hi = int(np.searchsorted(ts, start)), int(np.searchsorted(ts, end, side="right"))
        return hi - lo, int(self.cum[symbol][hi] - self.cum[symbol][lo])

    def last(self, symbol: str, n: int) -> tuple:
        c = self.cum[symbol]
        return n, int(c[-1] - c[-1 - n])
