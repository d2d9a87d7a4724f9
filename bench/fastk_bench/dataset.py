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


def walk_bars(n_bars: int, seed: int, headroom: int = 0) -> pa.Table:
    """`n_bars` 1m bars from 2023-01-01, a seeded random walk of closes (`high` sits
    `headroom` ticks above the bar's top, so a correction of that many ticks stays a
    valid bar)."""
    rng = np.random.default_rng(seed)
    close = 1_000_000 + np.cumsum(rng.integers(-50, 51, n_bars, dtype=np.int64))
    open_ = np.concatenate([[1_000_000], close[:-1]])
    spread = rng.integers(0, 20, n_bars, dtype=np.int64)
    ts = pa.array(ms(2023) + np.arange(n_bars, dtype=np.int64) * MINUTE_MS).cast(TS_TYPE)
    return pa.table({"ts": ts, "open": open_, "high": np.maximum(open_, close) + spread + headroom,
                     "low": np.minimum(open_, close) - spread, "close": close,
                     "volume": rng.integers(0, 10_000, n_bars, dtype=np.int64)})


def bars_digest(t: pa.Table) -> tuple:
    """Row count and the sums of ts, open, close and volume: what a checked read of
    bars must match."""
    import pyarrow.compute as pc

    return (t.num_rows, *(int(pc.sum(t.column(c).cast(pa.int64())).as_py() or 0)
                          for c in ("ts", "open", "close", "volume")))


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


# --------------------------------------------------------------------------- market queries
#
# The datasets of the market-query workloads (docs/market-queries.md): the resample
# reuses the kline dataset above; the as-of cross section and the coverage series are
# their own, generated here with numpy from the same seed, with their expected answers.

ASOF_START_MS = ms(2024, 6, 10)  # inside one month: one chunk per series


def bucket_width_ms(timeframe: str) -> int:
    """`1m`, `1h`, `1d`, `1w` ... as milliseconds (fixed widths only)."""
    n, unit = int(timeframe[:-1]), timeframe[-1]
    return n * {"s": 1_000, "m": MINUTE_MS, "h": 60 * MINUTE_MS, "d": DAY_MS, "w": 7 * DAY_MS}[unit]


def ohlcv_buckets(table: pa.Table, start: int, end_excl: int, width_ms: int) -> dict:
    """The expected resample of bars with `ts` in [start, end_excl) into epoch-aligned
    buckets of `width_ms`: first open, max high, min low, last close, summed volume."""
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    keep = (ts >= start) & (ts < end_excl)
    ts = ts[keep]
    cols = {c: table.column(c).to_numpy()[keep] for c in KLINE_COLUMNS}
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    cols = {c: v[order] for c, v in cols.items()}
    bucket = ts - ts % width_ms
    first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    last = np.r_[first[1:] - 1, len(ts) - 1]
    return {"ts": bucket[first], "open": cols["open"][first], "high": np.maximum.reduceat(cols["high"], first),
            "low": np.minimum.reduceat(cols["low"], first), "close": cols["close"][last],
            "volume": np.add.reduceat(cols["volume"], first)}


@dataclasses.dataclass
class CrossSection:
    """`n` kline series of 1m bars over a few days, all in one table sorted by symbol
    then ts, and the as-of answer at `as_of`: the last bar at or before it of every
    series that has one."""

    symbols: list[str]
    table: pa.Table  # symbol (utf8), ts, open, high, low, close, volume
    offsets: np.ndarray  # rows of symbols[i] are table[offsets[i]:offsets[i + 1]]
    as_of: int
    expected: pa.Table  # symbol, ts, open, high, low, close, volume; ascending symbol
    notes: dict

    def series(self, i: int) -> pa.Table:
        """One series' bars, without the symbol column (what a per-series write takes)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.table.slice(a, b - a).drop_columns(["symbol"])

    @property
    def rows(self) -> int:
        return self.table.num_rows


def cross_section(n: int, days: int, seed: int = SEED + 11) -> CrossSection:
    """Random walks like `kline_table`, one per series, with the irregularities a real
    universe has around `as_of` (set mid-window, 30 s after a bar opens):

    - 1% of the series are listed after `as_of` (no answer: left out),
    - 3% stop well before it (delisted: their last bar is hours old),
    - 10% have a hole of 1-120 minutes ending at or after `as_of` (the answer is the
      bar before the hole),
    - the rest have a bar at `as_of`'s minute.
    """
    rng = np.random.default_rng(seed)
    m = days * 1440
    t_idx = m // 2
    as_of = ASOF_START_MS + t_idx * MINUTE_MS + 30_000
    base = rng.integers(1_000, 10_000_000, n, dtype=np.int64)
    close = np.maximum(base[:, None] + np.cumsum(rng.integers(-100, 101, (n, m), dtype=np.int64), axis=1), 100)
    open_ = np.empty_like(close)
    open_[:, 0] = base
    open_[:, 1:] = close[:, :-1]
    high = np.maximum(open_, close) + rng.integers(0, 50, (n, m), dtype=np.int64)
    low = np.maximum(np.minimum(open_, close) - rng.integers(0, 50, (n, m), dtype=np.int64), 1)
    volume = rng.integers(0, 100_000, (n, m), dtype=np.int64)
    keep = np.ones((n, m), dtype=bool)
    kind = rng.random(n)
    late = np.flatnonzero(kind < 0.01)
    early = np.flatnonzero((kind >= 0.01) & (kind < 0.04))
    holed = np.flatnonzero((kind >= 0.04) & (kind < 0.14))
    for i in late:
        keep[i, : int(rng.integers(t_idx + 1, m - 1))] = False
    for i in early:
        keep[i, int(rng.integers(60, t_idx - 60)):] = False
    for i in holed:
        k = int(rng.integers(1, 121))
        keep[i, t_idx - k + 1: t_idx + 1 + int(rng.integers(0, 60))] = False
    flat = keep.ravel()
    ts2 = np.broadcast_to(ASOF_START_MS + np.arange(m, dtype=np.int64) * MINUTE_MS, (n, m))
    width = max(4, len(str(n - 1)))
    symbols = [f"XS{i:0{width}d}" for i in range(n)]
    sym_idx = np.repeat(np.arange(n, dtype=np.int32), m)[flat]
    names = pa.array(symbols, pa.string())
    table = pa.table({
        "symbol": pa.DictionaryArray.from_arrays(pa.array(sym_idx), names).cast(pa.string()),
        "ts": pa.array(ts2.ravel()[flat]).cast(TS_TYPE),
        "open": open_.ravel()[flat], "high": high.ravel()[flat], "low": low.ravel()[flat],
        "close": close.ravel()[flat], "volume": volume.ravel()[flat],
    })
    offsets = np.r_[0, np.cumsum(keep.sum(axis=1))]
    before = keep[:, : t_idx + 1]
    has = before.any(axis=1)
    last_j = t_idx - np.argmax(before[:, ::-1], axis=1)
    rows = np.flatnonzero(has)
    cols = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    expected = pa.table({
        "symbol": pa.array([symbols[i] for i in rows], pa.string()),
        "ts": pa.array(ASOF_START_MS + last_j[rows] * MINUTE_MS).cast(TS_TYPE),
        **{c: v[rows, last_j[rows]] for c, v in cols.items()},
    })
    notes = {"series": n, "days": days, "bars": int(flat.sum()), "answered": int(len(rows)),
             "listed_after": int(len(late)), "stopped_before": int(len(early)), "hole_at_as_of": int(len(holed))}
    return CrossSection(symbols=symbols, table=table, offsets=offsets, as_of=as_of, expected=expected, notes=notes)


@dataclasses.dataclass
class GapSeries:
    """One long 1m kline series with holes, and the coverage FastK must report."""

    symbol: str
    table: pa.Table  # ts, open, high, low, close, volume
    coverage: dict  # start_ts, end_ts, timeframe_ms, expected, present, gap_count, gaps, last_run
    notes: dict


def coverage_reference(ts: np.ndarray, timeframe_ms: int = MINUTE_MS) -> dict:
    """Coverage of sorted on-grid timestamps, as `GET .../coverage` defines it (24x7
    calendar, the range from the first to the last bar, complete_n 1)."""
    d = np.diff(ts)
    gi = np.flatnonzero(d > timeframe_ms)
    gaps = np.stack([ts[gi] + timeframe_ms, ts[gi + 1] - timeframe_ms, d[gi] // timeframe_ms - 1], axis=1)
    run_start = int(gi[-1]) + 1 if len(gi) else 0
    return {"start_ts": int(ts[0]), "end_ts": int(ts[-1]), "timeframe_ms": timeframe_ms,
            "expected": int((ts[-1] - ts[0]) // timeframe_ms + 1), "present": int(len(ts)),
            "gap_count": int(len(gi)), "gaps": gaps,
            "last_run": {"start_ts": int(ts[run_start]), "end_ts": int(ts[-1]), "bars": int(len(ts) - run_start)},
            "last_complete_ts": int(ts[-1])}


def gap_series(years: int, holes: int, seed: int = SEED + 13, symbol: str = "GAPS1M") -> GapSeries:
    """`years` calendar years of 1m bars ending 2024-12-31 (ten years: 5,260,320 grid
    points) with `holes` holes punched at random places: most of 1-15 minutes, some of
    hours, a few of days (maintenance, outages); the first and last bars stay."""
    rng = np.random.default_rng(seed)
    start = ms(2025 - years)
    n = (ms(2025) - MINUTE_MS - start) // MINUTE_MS + 1
    kind = rng.random(holes)
    lengths = np.where(kind < 0.90, rng.integers(1, 16, holes),
                       np.where(kind < 0.99, rng.integers(16, 601, holes), rng.integers(601, 4 * 1440, holes)))
    keep = np.ones(n, dtype=bool)
    for length in lengths:
        a = int(rng.integers(1, n - 1 - int(length)))
        keep[a: a + int(length)] = False
    keep[0] = keep[-1] = True
    m = int(keep.sum())
    start_price = 3_000_000
    close = np.maximum(start_price + np.cumsum(rng.integers(-100, 101, m, dtype=np.int64)), 1_000)
    open_ = np.r_[np.int64(start_price), close[:-1]]
    high = np.maximum(open_, close) + rng.integers(0, 50, m, dtype=np.int64)
    low = np.maximum(np.minimum(open_, close) - rng.integers(0, 50, m, dtype=np.int64), 1)
    ts = start + np.flatnonzero(keep).astype(np.int64) * MINUTE_MS
    table = pa.table({"ts": pa.array(ts).cast(TS_TYPE), "open": open_, "high": high, "low": low, "close": close,
                      "volume": rng.integers(0, 100_000, m, dtype=np.int64)})
    cov = coverage_reference(ts)
    notes = {"years": years, "grid_points": int(n), "bars": m, "holes_punched": int(holes),
             "gaps": cov["gap_count"], "missing": int(n - m)}
    return GapSeries(symbol=symbol, table=table, coverage=cov, notes=notes)
