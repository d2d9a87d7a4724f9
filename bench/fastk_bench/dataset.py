"""The deterministic synthetic dataset.

Kline: `symbols` series of 1m bars over `years` calendar years ending 2024-12-31,
each a seeded random walk of fixed-point prices (cents) with OHLC sanity by
construction and a uniform volume. Scalar: one 20M-row i64 series of 1m bars from
2000-01-01 whose values are uniform in [0, 1e9), the same shape as
`benches/predicate.rs` (zone maps cannot prune it; a value index must).

Everything is derived from `SEED`, so every run and every system sees the same rows.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

SEED = 20240101
MINUTE_MS = 60_000
DAY_MS = 86_400_000
SCALAR_START_MS = 946_684_800_000  # 2000-01-01T00:00Z
SCALAR_RANGE = 1_000_000_000
SYMBOLS = [
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT",
    "ADAUSDT", "DOGEUSDT", "AVAXUSDT", "DOTUSDT", "LINKUSDT",
]
KLINE_COLUMNS = ["open", "high", "low", "close", "volume"]
TS_TYPE = pa.timestamp("ms", tz="UTC")


def ms(year: int, month: int = 1, day: int = 1) -> int:
    return int(datetime(year, month, day, tzinfo=timezone.utc).timestamp() * 1000)


@dataclasses.dataclass
class Spec:
    symbols: int
    years: int  # calendar years ending with 2024
    scalar_rows: int

    @property
    def start_ms(self) -> int:
        return ms(2025 - self.years)

    @property
    def end_ms(self) -> int:  # inclusive: the last bar of 2024
        return ms(2025) - MINUTE_MS

    @property
    def bars_per_symbol(self) -> int:
        return (self.end_ms - self.start_ms) // MINUTE_MS + 1

    @property
    def year_range(self) -> tuple[int, int]:
        """Workload 2's range: calendar 2024, inclusive."""
        return ms(2024), ms(2025) - MINUTE_MS


FULL = Spec(symbols=10, years=2, scalar_rows=20_000_000)
QUICK = Spec(symbols=2, years=1, scalar_rows=2_000_000)


def kline_table(spec: Spec, index: int) -> pa.Table:
    """One symbol's bars: ts timestamp[ms, UTC], then int64 open/high/low/close/volume."""
    n = spec.bars_per_symbol
    rng = np.random.default_rng(SEED + index)
    start_price = 100_000 + 500_000 * index  # 1,000.00 .. 46,000.00 in cents
    steps = rng.integers(-100, 101, n, dtype=np.int64)
    close = np.maximum(start_price + np.cumsum(steps), 1_000)
    open_ = np.empty_like(close)
    open_[0] = start_price
    open_[1:] = close[:-1]
    high = np.maximum(open_, close) + rng.integers(0, 50, n, dtype=np.int64)
    low = np.maximum(np.minimum(open_, close) - rng.integers(0, 50, n, dtype=np.int64), 1)
    volume = rng.integers(0, 100_000, n, dtype=np.int64)
    ts = spec.start_ms + np.arange(n, dtype=np.int64) * MINUTE_MS
    return pa.table(
        {
            "ts": pa.array(ts).cast(TS_TYPE),
            "open": open_, "high": high, "low": low, "close": close, "volume": volume,
        }
    )


def scalar_table(spec: Spec) -> pa.Table:
    n = spec.scalar_rows
    rng = np.random.default_rng(SEED - 1)
    ts = SCALAR_START_MS + np.arange(n, dtype=np.int64) * MINUTE_MS
    value = rng.integers(0, SCALAR_RANGE, n, dtype=np.int64)
    return pa.table({"ts": pa.array(ts).cast(TS_TYPE), "value": value})


@dataclasses.dataclass
class Dataset:
    spec: Spec
    symbols: list[str]
    kline: dict[str, pa.Table]
    scalar: pa.Table

    @property
    def kline_rows(self) -> int:
        return sum(t.num_rows for t in self.kline.values())

    @property
    def scalar_end_ms(self) -> int:
        return SCALAR_START_MS + (self.scalar.num_rows - 1) * MINUTE_MS


def generate(spec: Spec) -> Dataset:
    symbols = SYMBOLS[: spec.symbols]
    kline = {s: kline_table(spec, i) for i, s in enumerate(symbols)}
    return Dataset(spec=spec, symbols=symbols, kline=kline, scalar=scalar_table(spec))


def day_ranges(ds: Dataset, n: int, seed: int = SEED + 7) -> list[tuple[str, int, int]]:
    """`n` random (symbol, start, end) one-day ranges (1440 bars) inside the data."""
    rng = np.random.default_rng(seed)
    minutes = ds.spec.bars_per_symbol - 1440
    out = []
    for _ in range(n):
        sym = ds.symbols[int(rng.integers(0, len(ds.symbols)))]
        start = ds.spec.start_ms + int(rng.integers(0, minutes)) * MINUTE_MS
        out.append((sym, start, start + DAY_MS - MINUTE_MS))
    return out


def predicate_bounds(selectivity_pct: float) -> tuple[int, int]:
    """An inclusive value range holding about `selectivity_pct` % of the uniform values."""
    width = int(SCALAR_RANGE * selectivity_pct / 100.0)
    lo = SCALAR_RANGE // 3
    return lo, lo + width - 1
