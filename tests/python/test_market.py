"""Market queries (docs/market-queries.md) as pandas, Polars and pyarrow users reach them.

Resample on read, many series in one request, the as-of cross section, the aligned
backtest view and coverage are each checked against a model that does not share code
with the server: pandas' `resample` (label and closed left, origin the epoch, `W-MON`
weeks, `MS` months) for buckets and aggregates, pandas' `merge` / `merge_asof` for the
aligned view, and a small grid walk in Python for coverage. The data is realistic
enough to hit the edges these features are about: 1m bars over several weeks with
weekends left out, a missing weekday, early closes and random holes; scalar series
with NaN (written as JSON null) and whole buckets of NaN; series of different lengths
and price scales for the many-series reads.

Everything runs against one dedicated server (`start_server("market")`) so that
`"symbols": "*"` sees only this module's series, plus a second small server with low
batch limits for the limit checks. Data is written over the HTTP JSON API, once per
module, and read back over HTTP and Flight, so the two front ends are also checked to
agree with each other.

The tests that compare with pandas fail (they are not skipped) when pandas is not
installed, with a message saying so; the other tests here do not need it.

gRPC codes from FastK reach pyarrow as INVALID_ARGUMENT -> ArrowInvalid ("invalid
argument") and NOT_FOUND -> ArrowKeyError ("not found"), as in test_flight_pyarrow.py.
"""

from __future__ import annotations

import json
import math
import random
from calendar import timegm
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from fastk_testlib import (
    MINUTE_MS,
    check_error,
    expect_ok,
    kline_path,
    make_klines,
    register_kline,
    register_scalar,
    scalar_path,
)

try:  # See the module docstring: a missing pandas fails the tests that need it.
    import pandas as pd
except ImportError:  # pragma: no cover - depends on the environment
    pd = None

TS_TYPE = pa.timestamp("ms", tz="UTC")
SYMBOL_TYPE = pa.dictionary(pa.int32(), pa.utf8())
OHLCV = ["open", "high", "low", "close", "volume"]
OHLCV_AGG = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WRITE_CHUNK = 5_000

# Target timeframes as pandas rules. `1d` is `24h`: pandas 3 treats `D` as a calendar
# day and ignores origin/offset for it on some indexes, while `24h` is a fixed width.
FIXED_RULES = {"5m": "5min", "15m": "15min", "1h": "1h", "4h": "4h", "1d": "24h"}
CALENDAR_RULES = {"1w": "W-MON", "1M": "MS"}


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    """Epoch milliseconds of a UTC wall-clock time."""
    return timegm((y, mo, d, h, mi, s)) * 1000


def weekday(ts: int) -> int:
    """0 = Monday ... 6 = Sunday, UTC (1970-01-01 was a Thursday)."""
    return (ts // DAY_MS + 3) % 7


@pytest.fixture
def need_pandas():
    if pd is None:
        pytest.fail("these tests compare with pandas: add `pandas` to "
                    "tests/python/requirements.txt (it brings numpy) and reinstall .venv")
    return pd


# ---------------------------------------------------------------------------
# Servers, clients and small wrappers


@pytest.fixture(scope="module")
def mkt(start_server):
    """This module's own server: `"symbols": "*"` must see only the series written here."""
    return start_server("market", {"FASTK__STORAGE__LOW_DISK_BYTES": "0"})


@pytest.fixture(scope="module")
def api(mkt):
    with requests.Session() as s:
        s.base = mkt.http_url
        yield s


@pytest.fixture(scope="module")
def client(mkt):
    c = flight.connect(mkt.flight_uri)
    yield c
    c.close()


def write_klines(s, sym: str, timeframe: str, bars: list[dict]) -> None:
    url = s.base + kline_path(sym, timeframe) + "/records"
    for i in range(0, len(bars), WRITE_CHUNK):
        expect_ok(s.post(url, json={"records": bars[i:i + WRITE_CHUNK]}, timeout=120))


def write_scalars(s, sym: str, timeframe: str, category: str, name: str,
                  rows: list[dict]) -> None:
    url = s.base + scalar_path(sym, timeframe, category, name) + "/records"
    for i in range(0, len(rows), WRITE_CHUNK):
        expect_ok(s.post(url, json={"records": rows[i:i + WRITE_CHUNK]}, timeout=120))


def new_kline(s, sym: str, timeframe: str, bars: list[dict], price_scale: int = 100,
              volume_scale: int = 1000) -> None:
    expect_ok(register_kline(s, s.base, sym, timeframe, price_scale, volume_scale), 201)
    if bars:
        write_klines(s, sym, timeframe, bars)


def new_scalar(s, sym: str, timeframe: str, category: str, name: str, value_type: str,
               rows: list[dict]) -> None:
    expect_ok(register_scalar(s, s.base, sym, category, name, value_type, timeframe), 201)
    if rows:
        write_scalars(s, sym, timeframe, category, name, rows)


def ticket(**fields) -> flight.Ticket:
    return flight.Ticket(json.dumps(fields).encode())


def read(client, **fields) -> pa.Table:
    return client.do_get(ticket(**fields)).read_all()


def ts_ms(table: pa.Table, col: str = "ts") -> list[int]:
    return table.column(col).cast(TS_TYPE).cast(pa.int64()).to_pylist()


def rows_of(table: pa.Table) -> list[dict]:
    """A table as a list of dicts, timestamps as epoch ms, dictionaries decoded."""
    cols = {}
    for f in table.schema:
        cols[f.name] = ts_ms(table, f.name) if pa.types.is_timestamp(f.type) \
            else table.column(f.name).to_pylist()
    return [dict(zip(cols, vals)) for vals in zip(*cols.values())]


def project(records: list[dict], keys: list[str]) -> list[dict]:
    """Keeps `keys` of each record after checking that each record has them all
    (the contract allows more optional fields)."""
    out = []
    for r in records:
        missing = [k for k in keys if k not in r]
        assert not missing, f"record lacks {missing}: {r}"
        out.append({k: r[k] for k in keys})
    return out


NAN = "NaN"


def nan_safe(rows: list[dict]) -> list[dict]:
    """NaN != NaN: replaces every float NaN with a marker so that lists compare."""
    return [{k: (NAN if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows]


def json_value(v):
    """What FastK's JSON writer does with a float: NaN (and infinities) become null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def scaled(rec: dict, price_scale: int, volume_scale: int) -> dict:
    out = dict(rec)
    for c in OHLCV:
        if c in out and out[c] is not None:
            out[c] = out[c] / (volume_scale if c == "volume" else price_scale)
    return out


def http_records(s, path: str, **params) -> dict:
    return expect_ok(s.get(s.base + path + "/records", params=params, timeout=60))


def http_all_pages(s, path: str, limit: int, **params) -> tuple[list[dict], int]:
    """Follows `next_start_ts` until it is null; every page but the last is full."""
    out, pages, start = [], 0, params.pop("start_ts", None)
    while True:
        body = http_records(s, path, limit=limit, start_ts=start, **params)
        pages += 1
        out.extend(body["records"])
        start = body["next_start_ts"]
        if start is None:
            return out, pages
        assert len(body["records"]) == limit, body
        assert start > body["records"][-1]["ts"], body
        assert pages < 1000, "paging does not terminate"


# ---------------------------------------------------------------------------
# pandas models


def to_index(ts: list[int]):
    return pd.DatetimeIndex(pd.to_datetime(ts, unit="ms"))  # naive, UTC by convention


def index_ms(index) -> list[int]:
    return [int(x) for x in index.as_unit("ms").asi8]


def pandas_resampler(obj, tf: str, offset_ms: int):
    """(resampler, label shift) with the buckets of docs/market-queries.md.

    Fixed widths use pandas' own `origin="epoch"` and `offset`. pandas does not apply
    an offset to weeks and months, so there the index is shifted by -offset, resampled
    on Monday / month boundaries, and the labels are shifted back."""
    if tf in CALENDAR_RULES:
        shifted = obj.set_axis(obj.index - pd.Timedelta(milliseconds=offset_ms))
        return shifted.resample(CALENDAR_RULES[tf], label="left", closed="left"), offset_ms
    r = obj.resample(FIXED_RULES[tf], label="left", closed="left", origin="epoch",
                     offset=pd.Timedelta(milliseconds=offset_ms))
    return r, 0


def ohlcv_model(bars: list[dict], tf: str, offset_ms: int = 0, fill: str = "none",
                series_last_ts: int | None = None) -> list[dict]:
    """Resampled bars with `complete`, from pandas.

    `bars` are the stored bars inside the read's range; `series_last_ts` is the
    series' last stored bar (default: the last of `bars`). Empty buckets between the
    first and last bar are left out (`none`), carry the previous close with volume 0
    (`prev`) or are all null (`null`)."""
    df = pd.DataFrame({c: [b[c] for b in bars] for c in OHLCV},
                      index=to_index([b["ts"] for b in bars]))
    r, shift = pandas_resampler(df, tf, offset_ms)
    agg = r.agg(OHLCV_AGG)
    if fill == "none":
        agg = agg.dropna()
    out, prev_close = [], None
    for ts, row in zip(index_ms(agg.index), agg.itertuples(index=False)):
        if math.isnan(row.open):
            assert fill != "none"
            rec = {"ts": ts + shift}
            for c in OHLCV:
                rec[c] = (0 if c == "volume" else prev_close) if fill == "prev" else None
        else:
            rec = {"ts": ts + shift, **{c: int(getattr(row, c)) for c in OHLCV}}
            prev_close = rec["close"]
        rec["complete"] = True
        out.append(rec)
    last = bars[-1]["ts"] if series_last_ts is None else series_last_ts
    # The bucket holding the series' last bar is the open one, even when the read's
    # end_ts cuts it short.
    one = pd.DataFrame({"x": [1]}, index=to_index([last]))
    r1, shift1 = pandas_resampler(one, tf, offset_ms)
    last_bucket = index_ms(r1.agg({"x": "sum"}).index)[0] + shift1
    for rec in out:
        if rec["ts"] == last_bucket:
            rec["complete"] = False
    return out


def scalar_model(rows: list[dict], tf: str, agg: str, value_type: str = "f64",
                 offset_ms: int = 0, fill: str = "none") -> list[dict]:
    """Resampled scalar values with `complete`, from pandas (NaN skipped, like FastK).

    Buckets without rows are left out (`none`) or filled as docs/market-queries.md
    says: the previous bucket's value (0 for sum and count) or null."""
    values = [float("nan") if r["value"] is None else r["value"] for r in rows]
    s = pd.Series(values, index=to_index([r["ts"] for r in rows]),
                  dtype="float64" if value_type == "f64" else "int64")
    r, shift = pandas_resampler(s, tf, offset_ms)
    vals = r.agg(agg)
    sizes = r.size()
    assert list(vals.index) == list(sizes.index)
    as_int = agg == "count" or (value_type == "i64" and agg != "mean")
    out, prev = [], None
    for ts, v, n in zip(index_ms(vals.index), vals.tolist(), sizes.tolist()):
        if n == 0:
            if fill == "none":
                continue
            if fill == "null":
                v = None
            else:
                v = 0 if agg in ("sum", "count") else prev
        else:
            v = int(v) if as_int else float(v)
            prev = v
        out.append({"ts": ts + shift, "value": v, "complete": True})
    out[-1]["complete"] = False
    return out


# ---------------------------------------------------------------------------
# Data


def walk_bars(timestamps: list[int], seed: int, price: int = 4_200_000) -> list[dict]:
    """Valid bars on `timestamps`: a seeded random walk with integer prices and a
    small jump at each open (so no bar's open is simply the previous close)."""
    rng = random.Random(seed)
    out = []
    for ts in timestamps:
        open_ = max(1, price + rng.randint(-200, 200))
        close = max(1, open_ + rng.randint(-500, 500))
        high = max(open_, close) + rng.randint(0, 300)
        low = max(0, min(open_, close) - rng.randint(0, 300))
        out.append({"ts": ts, "open": open_, "high": high, "low": low, "close": close,
                    "volume": rng.randint(0, 10_000_000)})
        price = close
    return out


def minutes(start: int, end: int, step: int = MINUTE_MS) -> list[int]:
    return list(range(start, end + 1, step))


# The resample series: 1m bars from Wednesday 2024-01-24 09:17 to Tuesday 2024-02-13
# 15:42 UTC, three weekends without bars, across the January/February partitions.
RSK_FIRST = utc(2024, 1, 24, 9, 17)
RSK_LAST = utc(2024, 2, 13, 15, 42)
RSK_HOLES = [  # (first missing minute, how many)
    (utc(2024, 1, 25, 10, 0), 90),     # a whole hour and more: empty 1h buckets
    (utc(2024, 1, 30, 13, 7), 3),
    (utc(2024, 2, 1), 1440),           # Thursday February 1st: a missing weekday
    (utc(2024, 2, 7, 23, 58), 4),      # across midnight
    (utc(2024, 2, 9, 21, 30), 150),    # an early close on Friday
]


@pytest.fixture(scope="module")
def rsk(api):
    """The 1m kline series for the resample tests (~19,000 bars), written once."""
    rng = random.Random(5)
    missing = set()
    for first, n in RSK_HOLES:
        missing.update(first + k * MINUTE_MS for k in range(n))
    grid = [t for t in minutes(RSK_FIRST, RSK_LAST) if weekday(t) < 5 and t not in missing]
    # A sprinkling of single missing bars (never the first or the last).
    singles = set(rng.sample(grid[1:-1], 40))
    ts = [t for t in grid if t not in singles]
    bars = walk_bars(ts, seed=17)
    assert bars[0]["ts"] == RSK_FIRST and bars[-1]["ts"] == RSK_LAST
    new_kline(api, "RSK", "1m", bars, price_scale=100, volume_scale=1000)
    return {"sym": "RSK", "bars": bars, "ps": 100, "vs": 1000}


def in_range(rows: list[dict], lo: int | None = None, hi: int | None = None) -> list[dict]:
    return [r for r in rows if (lo is None or r["ts"] >= lo) and (hi is None or r["ts"] <= hi)]


# ---------------------------------------------------------------------------
# 1. Resample klines


RESAMPLE_CASES = [("5m", 0), ("1h", 0), ("4h", 0), ("1d", 0), ("1d", -7_200_000),
                  ("1w", 0), ("1w", -7_200_000), ("1M", 0), ("15m", 300_000)]


@pytest.mark.parametrize("tf,offset_ms", RESAMPLE_CASES)
def test_kline_resample_http_equals_pandas(api, rsk, need_pandas, tf, offset_ms):
    want = ohlcv_model(rsk["bars"], tf, offset_ms)
    assert len(want) >= 2
    body = http_records(api, kline_path("RSK"), resample=tf, offset_ms=offset_ms,
                        limit=50_000)
    assert body["next_start_ts"] is None
    got = project(body["records"], ["ts"] + OHLCV + ["complete"])
    assert [r["ts"] for r in got] == [w["ts"] for w in want], (tf, offset_ms)
    assert got == want, (tf, offset_ms)
    # Only the bucket holding the last stored bar can still change.
    assert [r["complete"] for r in got] == [True] * (len(got) - 1) + [False]
    # Labels are bucket starts, and every bar lies in the bucket that carries it.
    if tf == "1w":
        assert all(weekday(r["ts"] - offset_ms) == 0 for r in got)
        assert all((r["ts"] - offset_ms) % DAY_MS == 0 for r in got)
    if tf == "1d" and offset_ms:
        assert all(r["ts"] % DAY_MS == DAY_MS - 7_200_000 for r in got)  # 22:00 UTC


def test_kline_resample_offset_forms_agree(api, rsk, need_pandas):
    """An FX day from 22:00 UTC is offset -2h or, equivalently, +22h."""
    minus = http_records(api, kline_path("RSK"), resample="1d", offset_ms=-7_200_000)
    plus = http_records(api, kline_path("RSK"), resample="1d", offset_ms=79_200_000)
    assert minus["records"] == plus["records"]
    assert minus["records"][0]["ts"] == utc(2024, 1, 23, 22)
    # Without the offset the days start at midnight: a different answer.
    plain = http_records(api, kline_path("RSK"), resample="1d")
    assert plain["records"][0]["ts"] == utc(2024, 1, 24)
    assert plain["records"] != minus["records"]


def test_kline_resample_ranges_cut_buckets(api, rsk, need_pandas):
    bars = rsk["bars"]
    # An end_ts inside a bucket: only the bars in the range, and `complete` is true
    # everywhere because the series has later bars.
    lo, hi = utc(2024, 1, 29, 3, 30), utc(2024, 2, 6, 17, 29)
    want = ohlcv_model(in_range(bars, lo, hi), "4h", series_last_ts=RSK_LAST)
    assert all(w["complete"] for w in want)
    body = http_records(api, kline_path("RSK"), resample="4h", start_ts=lo, end_ts=hi)
    assert project(body["records"], ["ts"] + OHLCV + ["complete"]) == want
    # The first bucket is the one holding start_ts (labelled 00:00, not 03:30) and
    # aggregates only the bars from 03:30 on.
    assert body["records"][0]["ts"] == utc(2024, 1, 29, 0)
    first_bar = in_range(bars, lo)[0]
    assert body["records"][0]["open"] == first_bar["open"]

    # A range reaching the last bar: its bucket is the incomplete one.
    lo = utc(2024, 2, 12, 7, 45)
    body = http_records(api, kline_path("RSK"), resample="1h", start_ts=lo)
    want = ohlcv_model(in_range(bars, lo), "1h", series_last_ts=RSK_LAST)
    assert project(body["records"], ["ts"] + OHLCV + ["complete"]) == want
    assert want[-1]["ts"] == utc(2024, 2, 13, 15) and want[-1]["complete"] is False

    # A month cut by end_ts that holds the series' last bar is still open.
    hi = utc(2024, 2, 10)
    body = http_records(api, kline_path("RSK"), resample="1M", end_ts=hi)
    want = ohlcv_model(in_range(bars, None, hi), "1M", series_last_ts=RSK_LAST)
    assert [w["ts"] for w in want] == [utc(2024, 1, 1), utc(2024, 2, 1)]
    assert project(body["records"], ["ts"] + OHLCV + ["complete"]) == want


@pytest.mark.parametrize("tf,offset_ms", [("5m", 0), ("1h", 0), ("1d", -7_200_000),
                                          ("1w", 0), ("1M", 0)])
def test_kline_resample_flight_raw_and_float64(api, client, rsk, need_pandas, tf,
                                               offset_ms):
    want = ohlcv_model(rsk["bars"], tf, offset_ms)
    resample = {"timeframe": tf, "offset_ms": offset_ms}
    raw = read(client, kind="kline", symbol="RSK", timeframe="1m", resample=resample)
    assert raw.schema.names == ["ts"] + OHLCV + ["complete"]
    assert raw.schema.field("ts").type == TS_TYPE
    assert all(raw.schema.field(c).type == pa.int64() for c in OHLCV), raw.schema
    complete = raw.schema.field("complete")
    assert complete.type == pa.bool_() and not complete.nullable, raw.schema
    assert raw.column("complete").null_count == 0
    assert rows_of(raw) == want

    f64 = read(client, kind="kline", symbol="RSK", timeframe="1m", resample=resample,
               price_format="float64")
    assert all(f64.schema.field(c).type == pa.float64() for c in OHLCV), f64.schema
    # Aggregated on the stored integers, divided afterwards: exact.
    assert rows_of(f64) == [scaled(w, rsk["ps"], rsk["vs"]) for w in want]

    # The same buckets as the HTTP read.
    body = http_records(api, kline_path("RSK"), resample=tf, offset_ms=offset_ms,
                        limit=50_000)
    assert rows_of(raw) == project(body["records"], ["ts"] + OHLCV + ["complete"])


@pytest.mark.parametrize("tf,offset_ms", [("5m", 0), ("1h", 0), ("1d", -7_200_000)])
def test_kline_resample_fill_prev_and_null(api, client, rsk, need_pandas, tf, offset_ms):
    bars = rsk["bars"]
    none = ohlcv_model(bars, tf, offset_ms)
    prev = ohlcv_model(bars, tf, offset_ms, fill="prev")
    null = ohlcv_model(bars, tf, offset_ms, fill="null")
    # Filling only adds rows between the first and the last bar.
    assert len(prev) == len(null) > len(none)
    assert prev[0]["ts"] == none[0]["ts"] and prev[-1]["ts"] == none[-1]["ts"]
    filled = [p for p in prev if p["volume"] == 0 and p["open"] == p["high"] == p["low"]
              == p["close"] and p["ts"] not in {n["ts"] for n in none}]
    assert len(filled) == len(prev) - len(none)

    keys = ["ts"] + OHLCV + ["complete"]
    for fill, want in (("prev", prev), ("null", null), ("none", none)):
        body = http_records(api, kline_path("RSK"), resample=tf, offset_ms=offset_ms,
                            fill=fill, limit=50_000)
        assert project(body["records"], keys) == want, fill

    res = {"timeframe": tf, "offset_ms": offset_ms, "fill": "null"}
    t = read(client, kind="kline", symbol="RSK", timeframe="1m", resample=res)
    assert all(t.schema.field(c).nullable for c in OHLCV), t.schema
    assert not t.schema.field("complete").nullable
    assert rows_of(t) == null
    assert t.column("open").null_count == len(null) - len(none)

    res["fill"] = "prev"
    t = read(client, kind="kline", symbol="RSK", timeframe="1m", resample=res,
             price_format="float64")
    assert rows_of(t) == [scaled(p, rsk["ps"], rsk["vs"]) for p in prev]


def test_kline_resample_fill_with_start_ts_in_a_gap(api, rsk, need_pandas):
    """A range starting on a Saturday: the first bucket is the one holding start_ts,
    filled from the last bar before it; nothing is invented after the range's last bar."""
    full = ohlcv_model(rsk["bars"], "1h", fill="prev")
    sat, mon = utc(2024, 2, 3), utc(2024, 2, 5, 5, 59, 59) + 999
    body = http_records(api, kline_path("RSK"), resample="1h", fill="prev",
                        start_ts=sat, end_ts=mon)
    got = project(body["records"], ["ts"] + OHLCV + ["complete"])
    want = [dict(r, complete=True) for r in full if sat <= r["ts"] <= mon]
    assert len(want) == 48 + 6
    assert got == want
    friday_close = in_range(rsk["bars"], None, sat)[-1]["close"]
    assert got[0]["ts"] == sat and got[0]["open"] == got[0]["close"] == friday_close
    assert got[0]["volume"] == 0

    # A range holding no bar at all gives nothing, even with fill.
    body = http_records(api, kline_path("RSK"), resample="1h", fill="prev",
                        start_ts=sat, end_ts=utc(2024, 2, 5) - 1)
    assert body["records"] == [] and body["next_start_ts"] is None


@pytest.mark.parametrize("tf,offset_ms,fill,limit", [
    ("5m", 0, "none", 1000), ("1h", 0, "prev", 97), ("1h", 0, "null", 50),
    ("1d", -7_200_000, "prev", 4), ("1w", 0, "none", 1), ("1M", 0, "none", 1)])
def test_kline_resample_paging_concatenates(api, rsk, need_pandas, tf, offset_ms, fill,
                                            limit):
    whole = http_records(api, kline_path("RSK"), resample=tf, offset_ms=offset_ms, fill=fill,
                         limit=50_000)["records"]
    assert len(whole) > limit
    got, pages = http_all_pages(api, kline_path("RSK"), limit, resample=tf,
                                offset_ms=offset_ms, fill=fill)
    # Full pages, then the rest (one empty page is allowed when it divides evenly).
    assert pages in (-(-len(whole) // limit), len(whole) // limit + 1)
    assert got == whole
    assert project(got, ["ts"] + OHLCV + ["complete"]) == \
        ohlcv_model(rsk["bars"], tf, offset_ms, fill=fill)


# ---------------------------------------------------------------------------
# 2. Resample scalars


SCF_FIRST = utc(2024, 1, 29)
SCF_LAST = utc(2024, 1, 31, 23, 59)
SCF_NAN_HOUR = utc(2024, 1, 30, 10)       # every value NaN for an hour
SCF_HOLE = (utc(2024, 1, 30, 14), utc(2024, 1, 30, 16, 59))  # no rows at all


@pytest.fixture(scope="module")
def scf(api):
    """An f64 scalar series with NaN (written as JSON null), an hour of NaN only and
    three hours without rows; and an i64 series. Values are multiples of 1/16, so
    every sum of them is exact in any order."""
    rng = random.Random(29)
    rows = []
    for t in minutes(SCF_FIRST, SCF_LAST):
        if SCF_HOLE[0] <= t <= SCF_HOLE[1] or rng.random() < 0.02:
            continue
        if SCF_NAN_HOUR <= t < SCF_NAN_HOUR + HOUR_MS or rng.random() < 0.1:
            rows.append({"ts": t, "value": None})
        else:
            rows.append({"ts": t, "value": rng.randint(-1600, 1600) / 16})
    ints = [{"ts": t, "value": rng.randint(-1000, 1000)}
            for t in minutes(SCF_FIRST, SCF_FIRST + DAY_MS - MINUTE_MS)
            if rng.random() > 0.05]
    new_scalar(api, "SCF", "1m", "feature", "z", "f64", rows)
    new_scalar(api, "SCF", "1m", "signal", "n", "i64", ints)
    return {"f64": rows, "i64": ints}


AGGS = ["last", "first", "min", "max", "mean", "sum", "count"]
F64_PATH = scalar_path("SCF", "1m", "feature", "z")
I64_PATH = scalar_path("SCF", "1m", "signal", "n")


def same_values(got: list[dict], want: list[dict], agg: str) -> None:
    """Exact, except means (FastK may sum in another order than pandas' Kahan sum)."""
    assert [g["ts"] for g in got] == [w["ts"] for w in want], agg
    assert [g["complete"] for g in got] == [w["complete"] for w in want], agg
    for g, w in zip(got, want):
        gv, wv = g["value"], w["value"]
        if agg == "mean" and gv is not None and wv is not None and not (
                isinstance(wv, float) and math.isnan(wv)):
            assert math.isclose(gv, wv, rel_tol=1e-12), (agg, g, w)
        else:
            assert nan_safe([{"v": gv}]) == nan_safe([{"v": wv}]), (agg, g, w)


@pytest.mark.parametrize("agg", AGGS)
def test_scalar_resample_aggs_equal_pandas(api, client, scf, need_pandas, agg):
    for tf, offset_ms in (("15m", 0), ("1h", 0), ("1d", -7_200_000)):
        want = scalar_model(scf["f64"], tf, agg, offset_ms=offset_ms)
        # Buckets without rows are left out; the NaN-only hour is not.
        assert SCF_HOLE[0] not in {w["ts"] for w in want}
        if tf == "1h":
            nan_hour = [w for w in want if w["ts"] == SCF_NAN_HOUR]
            assert len(nan_hour) == 1
            expect = 0 if agg in ("sum", "count") else None
            assert json_value(nan_hour[0]["value"]) == expect, (agg, nan_hour)
        body = http_records(api, F64_PATH, resample=tf, offset_ms=offset_ms, agg=agg,
                            limit=50_000)
        got = project(body["records"], ["ts", "value", "complete"])
        same_values(got, [dict(w, value=json_value(w["value"])) for w in want], agg)

        res = {"timeframe": tf, "offset_ms": offset_ms, "agg": agg}
        t = read(client, kind="scalar", symbol="SCF", timeframe="1m", category="feature",
                 name="z", resample=res)
        assert t.schema.names == ["ts", "value", "complete"]
        want_type = pa.int64() if agg == "count" else pa.float64()
        assert t.schema.field("value").type == want_type, (agg, t.schema)
        same_values(rows_of(t), want, agg)


def test_scalar_resample_i64_types_and_default_agg(api, client, scf, need_pandas):
    types = {"last": pa.int64(), "first": pa.int64(), "min": pa.int64(), "max": pa.int64(),
             "sum": pa.int64(), "mean": pa.float64(), "count": pa.int64()}
    for agg, typ in types.items():
        want = scalar_model(scf["i64"], "1h", agg, value_type="i64")
        t = read(client, kind="scalar", symbol="SCF", timeframe="1m", category="signal",
                 name="n", resample={"timeframe": "1h", "agg": agg})
        assert t.schema.field("value").type == typ, (agg, t.schema)
        same_values(rows_of(t), want, agg)
        body = http_records(api, I64_PATH, resample="1h", agg=agg)
        same_values(project(body["records"], ["ts", "value", "complete"]), want, agg)
    # agg defaults to last.
    default = http_records(api, I64_PATH, resample="1h")["records"]
    assert default == http_records(api, I64_PATH, resample="1h", agg="last")["records"]


@pytest.mark.parametrize("agg,fill", [("last", "prev"), ("sum", "prev"), ("count", "prev"),
                                      ("mean", "null"), ("max", "null")])
def test_scalar_resample_fill(api, client, scf, need_pandas, agg, fill):
    want = scalar_model(scf["f64"], "1h", agg, fill=fill)
    hole = [w for w in want if SCF_HOLE[0] <= w["ts"] <= SCF_HOLE[1]]
    assert len(hole) == 3
    if fill == "null":
        assert all(w["value"] is None for w in hole)
    elif agg in ("sum", "count"):
        assert all(w["value"] == 0 for w in hole)
    body = http_records(api, F64_PATH, resample="1h", agg=agg, fill=fill)
    same_values(project(body["records"], ["ts", "value", "complete"]),
                [dict(w, value=json_value(w["value"])) for w in want], agg)
    t = read(client, kind="scalar", symbol="SCF", timeframe="1m", category="feature",
             name="z", resample={"timeframe": "1h", "agg": agg, "fill": fill})
    same_values(rows_of(t), want, agg)


# ---------------------------------------------------------------------------
# 3-5. Many series (Flight and HTTP batch) and the as-of cross section

# Four 15m kline series of different lengths; CHARLIE has another price scale.
GROUP = {
    "ALPHA": (utc(2024, 1, 29), utc(2024, 2, 9, 23, 45), 100),
    "BRAVO": (utc(2024, 2, 1, 6), utc(2024, 2, 12, 12), 100),
    "CHARLIE": (utc(2024, 1, 20), utc(2024, 2, 2, 8, 15), 10_000),
    "DELTA": (utc(2024, 2, 5, 13), utc(2024, 2, 15), 100),
}
SYMS = sorted(GROUP)
TF15 = 15 * MINUTE_MS


@pytest.fixture(scope="module")
def group(api):
    """The 15m kline group and, for ALPHA to CHARLIE, an f64 scalar `factor.mom`."""
    bars, moms = {}, {}
    rng = random.Random(41)
    for k, sym in enumerate(SYMS):
        first, last, ps = GROUP[sym]
        ts = [t for t in minutes(first, last, TF15) if t in (first, last) or rng.random() > 0.05]
        bars[sym] = walk_bars(ts, seed=100 + k, price=1_000_000 * (k + 1))
        new_kline(api, sym, "15m", bars[sym], price_scale=ps, volume_scale=1000)
        if sym != "DELTA":
            moms[sym] = [{"ts": t, "value": rng.randint(-800, 800) / 8} for t in ts[::2]]
            new_scalar(api, sym, "15m", "factor", "mom", "f64", moms[sym])
    return {"bars": bars, "moms": moms}


def by_symbol(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        r = dict(r)
        out.setdefault(r.pop("symbol"), []).append(r)
    return out


def assert_symbol_then_ts(rows: list[dict], order: list[str]) -> None:
    keys = [(order.index(r["symbol"]), r["ts"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_many_series_flight_pyarrow_and_polars(client, group):
    for symbols, expect in ((SYMS, SYMS), ("*", SYMS), (["BRAVO", "DELTA"], ["BRAVO", "DELTA"])):
        t = read(client, kind="kline", symbols=symbols, timeframe="15m")
        assert t.schema.names == ["symbol", "ts"] + OHLCV
        assert t.schema.field("symbol").type == SYMBOL_TYPE
        assert t.schema.field("ts").type == TS_TYPE
        assert t.column("symbol").chunk(0).dictionary.to_pylist() == expect
        rows = rows_of(t)
        assert_symbol_then_ts(rows, expect)
        assert list(by_symbol(rows)) == expect
        for sym, got in by_symbol(rows).items():
            assert got == group["bars"][sym], sym  # every field, exactly
            single = read(client, kind="kline", symbol=sym, timeframe="15m")
            assert got == rows_of(single), sym

        df = pl.from_arrow(t)
        assert df.columns == ["symbol", "ts"] + OHLCV
        assert df.schema["ts"] == pl.Datetime("ms", "UTC")
        assert df.schema["close"] == pl.Int64
        syms = df["symbol"].cast(pl.String).to_list()
        assert syms == [r["symbol"] for r in rows]
        assert df["ts"].dt.epoch("ms").to_list() == [r["ts"] for r in rows]
        counts = df.group_by("symbol").len().sort("symbol")
        assert {s: n for s, n in zip(counts["symbol"].cast(pl.String), counts["len"])} == \
            {s: len(group["bars"][s]) for s in expect}

    # Scales: in the metadata only when every series agrees.
    same = read(client, kind="kline", symbols=["ALPHA", "BRAVO"], timeframe="15m")
    assert same.schema.metadata[b"fastk.price_scale"] == b"100"
    mixed = read(client, kind="kline", symbols="*", timeframe="15m")
    assert b"fastk.price_scale" not in (mixed.schema.metadata or {})
    # price_format float64 applies each series' own scale.
    f64 = read(client, kind="kline", symbols="*", timeframe="15m", price_format="float64",
               columns=["close"])
    assert f64.schema.names == ["symbol", "ts", "close"]
    for sym, got in by_symbol(rows_of(f64)).items():
        ps = GROUP[sym][2]
        assert got == [{"ts": b["ts"], "close": b["close"] / ps} for b in group["bars"][sym]]


def test_many_series_unsorted_list(client, group):
    """A list out of order: each symbol's rows are contiguous and equal its single read
    (whether rows follow the list's order or the names' order is left open)."""
    t = read(client, kind="kline", symbols=["DELTA", "ALPHA"], timeframe="15m")
    rows = rows_of(t)
    runs = [r["symbol"] for i, r in enumerate(rows)
            if i == 0 or rows[i - 1]["symbol"] != r["symbol"]]
    assert sorted(runs) == ["ALPHA", "DELTA"]
    for sym, got in by_symbol(rows).items():
        assert got == group["bars"][sym]


def test_many_series_latest_resample_range(client, group, need_pandas):
    t = read(client, kind="kline", symbols="*", timeframe="15m", latest=1)
    assert by_symbol(rows_of(t)) == {s: group["bars"][s][-1:] for s in SYMS}

    lo, hi = utc(2024, 2, 1), utc(2024, 2, 8, 12)
    t = read(client, kind="kline", symbols="*", timeframe="15m", start_ts=lo, end_ts=hi,
             latest=5)
    want = {s: in_range(group["bars"][s], lo, hi)[-5:] for s in SYMS}
    assert by_symbol(rows_of(t)) == want

    res = {"timeframe": "4h", "fill": "prev"}
    t = read(client, kind="kline", symbols=SYMS, timeframe="15m", resample=res, latest=3)
    assert t.schema.names == ["symbol", "ts"] + OHLCV + ["complete"]
    got = by_symbol(rows_of(t))
    for sym in SYMS:
        assert got[sym] == ohlcv_model(group["bars"][sym], "4h", fill="prev")[-3:], sym

    res = {"timeframe": "1d"}
    t = read(client, kind="kline", symbols=SYMS, timeframe="15m", resample=res, start_ts=lo,
             end_ts=hi)
    got = by_symbol(rows_of(t))
    for sym in SYMS:
        bars = in_range(group["bars"][sym], lo, hi)
        want = ohlcv_model(bars, "1d", series_last_ts=group["bars"][sym][-1]["ts"]) \
            if bars else []
        assert got.get(sym, []) == want, sym


def test_many_series_flight_info_endpoints(client, group):
    for symbols in (SYMS, "*"):
        cmd = {"kind": "kline", "symbols": symbols, "timeframe": "15m",
               "start_ts": utc(2024, 2, 1)}
        desc = flight.FlightDescriptor.for_command(json.dumps(cmd).encode())
        info = client.get_flight_info(desc)
        assert info.schema.names == ["symbol", "ts"] + OHLCV
        assert len(info.endpoints) == len(SYMS)  # one per series, up to 64
        groups = [json.loads(ep.ticket.ticket)["symbols"] for ep in info.endpoints]
        assert groups == [[s] for s in SYMS]
        parts = [client.do_get(ep.ticket).read_all() for ep in info.endpoints]
        whole = client.do_get(flight.Ticket(json.dumps(cmd).encode())).read_all()
        assert rows_of(pa.concat_tables(parts)) == rows_of(whole)
        n = whole.num_rows
        assert n == sum(len(in_range(group["bars"][s], utc(2024, 2, 1))) for s in SYMS)
        assert info.total_records in (-1, n)


@pytest.fixture(scope="module")
def wide(api):
    """70 1h series of three bars each: more series than Flight endpoints (64)."""
    syms = [f"W{k:03d}" for k in range(70)]
    bars = {}
    for k, sym in enumerate(syms):
        bars[sym] = walk_bars(minutes(utc(2024, 3, 1, k % 5), utc(2024, 3, 1, k % 5 + 2),
                                      HOUR_MS), seed=k)
        new_kline(api, sym, "1h", bars[sym])
    return syms, bars


def test_many_series_64_endpoints_pulled_in_parallel(client, wide):
    syms, bars = wide
    cmd = json.dumps({"kind": "kline", "symbols": "*", "timeframe": "1h"}).encode()
    info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd))
    assert len(info.endpoints) == 64
    groups = [json.loads(ep.ticket.ticket)["symbols"] for ep in info.endpoints]
    assert all(groups) and sum(groups, []) == syms  # contiguous groups, in symbol order
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda e: client.do_get(e.ticket).read_all(), info.endpoints))
    for g, part in zip(groups, parts):
        assert list(by_symbol(rows_of(part))) == g
    table = pa.concat_tables(parts)
    assert rows_of(table) == rows_of(client.do_get(flight.Ticket(cmd)).read_all())
    assert by_symbol(rows_of(table)) == bars


def test_many_series_scalars(client, api, group, need_pandas):
    t = read(client, kind="scalar", symbols="*", timeframe="15m", category="factor",
             name="mom")
    assert t.schema.names == ["symbol", "ts", "value"]
    assert t.schema.field("symbol").type == SYMBOL_TYPE
    assert by_symbol(rows_of(t)) == group["moms"]  # DELTA has no such series
    t = read(client, kind="scalar", symbols=["ALPHA", "CHARLIE"], timeframe="15m",
             category="factor", name="mom", resample={"timeframe": "1d", "agg": "sum"})
    assert t.schema.names == ["symbol", "ts", "value", "complete"]
    got = by_symbol(rows_of(t))
    for sym in ("ALPHA", "CHARLIE"):
        same_values(got[sym], scalar_model(group["moms"][sym], "1d", "sum"), "sum")


def last_at_or_before(rows: list[dict], t: int, lo: int | None = None) -> list[dict]:
    before = [r for r in rows if r["ts"] <= t and (lo is None or r["ts"] >= lo)]
    return before[-1:]


def test_as_of_cross_section(client, api, group):
    bars = group["bars"]
    on_bar = bars["BRAVO"][300]["ts"]
    for t in (utc(2024, 1, 25), utc(2024, 2, 3, 12, 7), on_bar, utc(2024, 2, 9, 23, 50),
              utc(2030, 1, 1)):
        want = {s: last_at_or_before(bars[s], t) for s in SYMS}
        want = {s: v for s, v in want.items() if v}
        assert want  # every probe finds some series
        got = by_symbol(rows_of(read(client, kind="kline", symbols="*", timeframe="15m",
                                     as_of=t)))
        assert got == want, t

        body = expect_ok(api.post(api.base + "/v1/kline/batch", timeout=60,
                                  json={"timeframe": "15m", "symbols": SYMS, "as_of": t}))
        listed = {e["symbol"]: e["records"] for e in body["series"]}
        # A series without a record at or before T is left out (an empty entry is
        # accepted too: the spec's "left out" is read as "no record").
        assert {s: r for s, r in listed.items() if r} == want, t
        assert [s for s in listed] == [s for s in SYMS if s in listed]

    # One series, and the scalar read.
    t = utc(2024, 2, 3, 12, 7)
    one = read(client, kind="kline", symbol="DELTA", timeframe="15m", as_of=t)
    assert one.num_rows == 0
    one = read(client, kind="kline", symbol="ALPHA", timeframe="15m", as_of=t)
    assert rows_of(one) == last_at_or_before(bars["ALPHA"], t)
    sc = read(client, kind="scalar", symbols="*", timeframe="15m", category="factor",
              name="mom", as_of=t)
    assert by_symbol(rows_of(sc)) == {s: last_at_or_before(v, t)
                                      for s, v in group["moms"].items()}

    # start_ts bounds staleness: CHARLIE's last bar (Feb 2) is too old.
    lo = utc(2024, 2, 3)
    got = by_symbol(rows_of(read(client, kind="kline", symbols="*", timeframe="15m",
                                 as_of=t, start_ts=lo)))
    assert got == {s: last_at_or_before(bars[s], t, lo) for s in ("ALPHA", "BRAVO")}

    # "now" is the latest bar of each series (all of them are in the past).
    now = rows_of(read(client, kind="kline", symbols="*", timeframe="15m", as_of="now"))
    latest = rows_of(read(client, kind="kline", symbols="*", timeframe="15m", latest=1))
    assert now == latest and len(now) == len(SYMS)


def batch(api, kind: str, **body) -> dict:
    r = api.post(f"{api.base}/v1/{kind}/batch", json=body, timeout=60)
    out = expect_ok(r)
    assert isinstance(out["series"], list), out
    for e in out["series"]:
        assert {"symbol", "records", "next_start_ts"} <= set(e), e
    return out


def test_http_kline_batch(api, group, need_pandas):
    bars = group["bars"]
    body = batch(api, "kline", timeframe="15m", symbols=SYMS)
    assert [e["symbol"] for e in body["series"]] == SYMS
    for e in body["series"]:
        assert e["records"] == bars[e["symbol"]] and e["next_start_ts"] is None
    assert batch(api, "kline", timeframe="15m", symbols="*") == body

    lo, hi = utc(2024, 2, 2), utc(2024, 2, 6)
    body = batch(api, "kline", timeframe="15m", symbols=SYMS, start_ts=lo, end_ts=hi,
                 limit=100)
    for e in body["series"]:
        want = in_range(bars[e["symbol"]], lo, hi)
        assert e["records"] == want[:100], e["symbol"]
        assert e["next_start_ts"] == (want[100]["ts"] if len(want) > 100 else None)
        # Each series pages on from its own next_start_ts.
        got, start = list(e["records"]), e["next_start_ts"]
        while start is not None:
            page = batch(api, "kline", timeframe="15m", symbols=[e["symbol"]],
                         start_ts=start, end_ts=hi, limit=100)["series"]
            assert len(page) == 1
            got += page[0]["records"]
            start = page[0]["next_start_ts"]
        assert got == want, e["symbol"]

    body = batch(api, "kline", timeframe="15m", symbols=SYMS, latest=3)
    assert {e["symbol"]: e["records"] for e in body["series"]} == \
        {s: bars[s][-3:] for s in SYMS}

    body = batch(api, "kline", timeframe="15m", symbols=SYMS, columns=["close", "volume"])
    for e in body["series"]:
        assert e["records"] == [{"ts": b["ts"], "close": b["close"], "volume": b["volume"]}
                                for b in bars[e["symbol"]]]

    res = {"timeframe": "1d", "offset_ms": -7_200_000, "fill": "prev"}
    body = batch(api, "kline", timeframe="15m", symbols=["ALPHA", "DELTA"], resample=res)
    for e in body["series"]:
        want = ohlcv_model(bars[e["symbol"]], "1d", -7_200_000, fill="prev")
        assert project(e["records"], ["ts"] + OHLCV + ["complete"]) == want


def test_http_scalar_batch(api, group, need_pandas):
    moms = group["moms"]
    body = batch(api, "scalar", timeframe="15m", category="factor", name="mom", symbols="*")
    assert [e["symbol"] for e in body["series"]] == sorted(moms)
    assert {e["symbol"]: e["records"] for e in body["series"]} == moms

    # agg inside resample or next to it: the same answer.
    inside = batch(api, "scalar", timeframe="15m", category="factor", name="mom",
                   symbols=["ALPHA", "BRAVO"], resample={"timeframe": "4h", "agg": "max"})
    beside = batch(api, "scalar", timeframe="15m", category="factor", name="mom",
                   symbols=["ALPHA", "BRAVO"], resample={"timeframe": "4h"}, agg="max")
    assert inside == beside
    for e in inside["series"]:
        same_values(project(e["records"], ["ts", "value", "complete"]),
                    scalar_model(moms[e["symbol"]], "4h", "max"), "max")

    t = utc(2024, 2, 1, 17, 3)
    body = batch(api, "scalar", timeframe="15m", category="factor", name="mom",
                 symbols=sorted(moms), as_of=t)
    got = {e["symbol"]: e["records"] for e in body["series"] if e["records"]}
    assert got == {s: last_at_or_before(v, t) for s, v in moms.items()
                   if last_at_or_before(v, t)}


def test_http_batch_limits(start_server):
    """A server allowing 2 series per batch, 40 records by default and 50 per answer,
    and 2 series per Flight ticket."""
    srv = start_server("market-limits", {
        "FASTK__HTTP__MAX_BATCH_SERIES": "2", "FASTK__HTTP__DEFAULT_LIMIT": "40",
        "FASTK__HTTP__MAX_LIMIT": "50", "FASTK__FLIGHT__MAX_SERIES_PER_TICKET": "2",
        "FASTK__STORAGE__LOW_DISK_BYTES": "0"})
    bars = {s: make_klines(60, seed=k) for k, s in enumerate(["LA", "LB", "LC"])}
    with requests.Session() as s:
        s.base = srv.http_url
        for sym, b in bars.items():
            new_kline(s, sym, "1m", b)
        url = srv.http_url + "/v1/kline/batch"
        for symbols in (["LA", "LB", "LC"], "*"):
            msg = check_error(s.post(url, json={"timeframe": "1m", "symbols": symbols},
                                     timeout=30), 400, "invalid_argument")
            assert "flight" in msg.lower(), msg  # points to Flight
        check_error(s.post(url, json={"timeframe": "1m", "symbols": []}, timeout=30),
                    400, "invalid_argument")

        # Two series share the 50-record answer: 25 each (under the default 40).
        body = batch(s, "kline", timeframe="1m", symbols=["LA", "LB"])
        for e in body["series"]:
            assert e["records"] == bars[e["symbol"]][:25]
            assert e["next_start_ts"] == bars[e["symbol"]][25]["ts"]
        body = batch(s, "kline", timeframe="1m", symbols=["LA", "LB"], limit=10)
        assert [len(e["records"]) for e in body["series"]] == [10, 10]
        # One series: the default limit, and a larger limit is capped at 50.
        body = batch(s, "kline", timeframe="1m", symbols=["LC"])
        assert body["series"][0]["records"] == bars["LC"][:40]
        body = batch(s, "kline", timeframe="1m", symbols=["LC"], limit=60)
        assert body["series"][0]["records"] == bars["LC"][:50]
        # Paging each series from its own next_start_ts gives everything.
        body = batch(s, "kline", timeframe="1m", symbols=["LA", "LB"])
        for e in body["series"]:
            got, start = list(e["records"]), e["next_start_ts"]
            while start is not None:
                page = batch(s, "kline", timeframe="1m", symbols=["LA", "LB"],
                             start_ts=start)["series"]
                mine = [p for p in page if p["symbol"] == e["symbol"]][0]
                got += mine["records"]
                start = mine["next_start_ts"]
            assert got == bars[e["symbol"]]

    c = flight.connect(srv.flight_uri)
    try:
        assert read(c, kind="kline", symbols=["LA", "LB"], timeframe="1m").num_rows == 120
        with pytest.raises(pa.ArrowInvalid, match="invalid argument"):
            read(c, kind="kline", symbols="*", timeframe="1m")
    finally:
        c.close()
    srv.assert_alive()


# ---------------------------------------------------------------------------
# 6. Aligned backtest view

ALN_FIRST, ALN_LAST = utc(2024, 2, 5), utc(2024, 2, 6, 23, 59)
SCALARS = [("indicator", "rsi", "f64"), ("signal", "cross", "i64"), ("feature", "z", "f64")]
COLS = [f"{c}.{n}" for c, n, _ in SCALARS]


@pytest.fixture(scope="module")
def aligned(api):
    """A 1m kline with holes and three scalars: `indicator.rsi` on most bars plus a few
    off-bar points, `signal.cross` every 7 minutes from before the first bar, and
    `feature.z` every 2 hours (one of them in a hole of the kline)."""
    rng = random.Random(61)
    hole = (utc(2024, 2, 5, 14), utc(2024, 2, 5, 14, 30))
    ts = [t for t in minutes(ALN_FIRST, ALN_LAST)
          if not hole[0] <= t <= hole[1] and rng.random() > 0.03]
    bars = walk_bars(ts, seed=62)
    new_kline(api, "ALN", "1m", bars)
    rsi = sorted([{"ts": t, "value": rng.randint(0, 1600) / 16} for t in ts
                  if rng.random() > 0.2]
                 + [{"ts": t + 30_000, "value": -1.0} for t in ts[5::97]],
                 key=lambda r: r["ts"])
    cross = [{"ts": t, "value": rng.choice([-1, 0, 1])}
             for t in minutes(ALN_FIRST - 7 * MINUTE_MS, ALN_LAST, 7 * MINUTE_MS)]
    z = [{"ts": t, "value": rng.randint(-64, 64) / 4}
         for t in minutes(ALN_FIRST - 2 * HOUR_MS, ALN_LAST, 2 * HOUR_MS)]
    assert any(hole[0] <= r["ts"] <= hole[1] for r in z)
    for (cat, name, vt), rows in zip(SCALARS, (rsi, cross, z)):
        new_scalar(api, "ALN", "1m", cat, name, vt, rows)
    return {"bars": bars, "scalars": dict(zip(COLS, (rsi, cross, z)))}


def aligned_model(data, lo: int, hi: int, join: str, tolerance_ms: int | None = None):
    """The view as pandas computes it: a left merge on ts (exact) or merge_asof backward
    with an inclusive tolerance (asof), on the whole scalar history."""
    out = pd.DataFrame({"ts": [b["ts"] for b in data["bars"]],
                        **{c: [b[c] for b in data["bars"]] for c in OHLCV}})
    for (col, rows), (_, _, vt) in zip(data["scalars"].items(), SCALARS):
        sc = pd.DataFrame({"ts": [r["ts"] for r in rows], col: [r["value"] for r in rows]})
        if join == "exact":
            out = out.merge(sc, on="ts", how="left")
        else:
            out = pd.merge_asof(out, sc, on="ts", direction="backward",
                                tolerance=tolerance_ms)
    out = out[(out["ts"] >= lo) & (out["ts"] <= hi)]
    records = []
    for row in out.to_dict("records"):
        rec = {"ts": int(row["ts"]), **{c: int(row[c]) for c in OHLCV}}
        for col, (_, _, vt) in zip(COLS, SCALARS):
            v = row[col]
            rec[col] = None if pd.isna(v) else (int(v) if vt == "i64" else float(v))
        records.append(rec)
    return records


def aligned_body(lo, hi, **extra) -> dict:
    return {"scalars": [{"category": c, "name": n} for c, n, _ in SCALARS],
            "start_ts": lo, "end_ts": hi, **extra}


def test_aligned_exact(api, client, aligned, need_pandas):
    lo, hi = utc(2024, 2, 5, 6, 30), utc(2024, 2, 6, 18)
    want = aligned_model(aligned, lo, hi, "exact")
    assert any(w["indicator.rsi"] is None for w in want)
    assert any(w["signal.cross"] is not None for w in want)
    assert any(w["signal.cross"] is None for w in want)

    t = client.do_get(ticket(kind="aligned", symbol="ALN", timeframe="1m",
                             **aligned_body(lo, hi))).read_all()
    assert t.schema.names == ["ts"] + OHLCV + COLS
    assert t.schema.field("indicator.rsi").type == pa.float64()
    assert t.schema.field("signal.cross").type == pa.int64()
    assert all(t.schema.field(c).nullable for c in COLS)
    df = pl.from_arrow(t)
    assert df.schema["ts"] == pl.Datetime("ms", "UTC")
    assert df.schema["signal.cross"] == pl.Int64 and df.schema["feature.z"] == pl.Float64
    assert df["ts"].dt.epoch("ms").to_list() == [w["ts"] for w in want]
    for c in OHLCV + COLS:
        assert df[c].to_list() == [w[c] for w in want], c
    assert df["indicator.rsi"].null_count() == sum(w["indicator.rsi"] is None for w in want)

    # join defaults to exact; HTTP pages through the same rows.
    url = api.base + kline_path("ALN") + "/aligned"
    got, start, pages = [], lo, 0
    while start is not None:
        body = expect_ok(api.post(url, json=aligned_body(start, hi, limit=500), timeout=60))
        got += body["records"]
        start, pages = body["next_start_ts"], pages + 1
        assert pages < 100
    assert pages >= 3
    assert project(got, ["ts"] + OHLCV + COLS) == want

    # float64 prices, as for kline reads.
    t = client.do_get(ticket(kind="aligned", symbol="ALN", timeframe="1m", join="exact",
                             price_format="float64", **aligned_body(lo, hi))).read_all()
    assert t.schema.field("close").type == pa.float64()
    assert rows_of(t) == [scaled(w, 100, 1000) for w in want]


@pytest.mark.parametrize("tolerance_ms", [None, 180_000, 0])
def test_aligned_asof(api, client, aligned, need_pandas, tolerance_ms):
    lo, hi = utc(2024, 2, 5, 6, 30), utc(2024, 2, 6, 18)
    want = aligned_model(aligned, lo, hi, "asof", tolerance_ms)
    extra = {"join": "asof"}
    if tolerance_ms is not None:
        extra["tolerance_ms"] = tolerance_ms
    if tolerance_ms is None:
        # Unlimited: z at 06:00 (before start_ts) carries into the first bars.
        assert all(w["feature.z"] is not None for w in want)
        assert all(w["signal.cross"] is not None for w in want)
    elif tolerance_ms == 180_000:
        assert any(w["signal.cross"] is None for w in want)
        assert any(w["signal.cross"] is not None for w in want)
    else:
        assert want == aligned_model(aligned, lo, hi, "exact")

    t = client.do_get(ticket(kind="aligned", symbol="ALN", timeframe="1m",
                             **aligned_body(lo, hi, **extra))).read_all()
    df = pl.from_arrow(t)
    assert df.columns == ["ts"] + OHLCV + COLS
    assert df["ts"].dt.epoch("ms").to_list() == [w["ts"] for w in want]
    for c in COLS:
        assert df[c].to_list() == [w[c] for w in want], c

    body = expect_ok(api.post(api.base + kline_path("ALN") + "/aligned",
                              json=aligned_body(lo, hi, limit=100_000, **extra), timeout=60))
    assert body["next_start_ts"] is None
    assert project(body["records"], ["ts"] + OHLCV + COLS) == want


# ---------------------------------------------------------------------------
# 7. Coverage

FRI = utc(2024, 2, 2, 20)       # the coverage series' first bar (a Friday)
TUE = utc(2024, 2, 6, 4)        # its last bar
SAT_BAR = utc(2024, 2, 3, 12)   # one bar on Saturday
OFF_GRID = utc(2024, 2, 5, 13, 30, 30)
COV_HOLES = [(utc(2024, 2, 2, 21), 3), (utc(2024, 2, 2, 23, 50), 10),
             (utc(2024, 2, 5), 6), (utc(2024, 2, 5, 12), 60), (utc(2024, 2, 6, 3), 1)]


def coverage_model(stored: list[int], tf: int, start=None, end=None, calendar="24x7",
                   complete_n=1, max_gaps=1000) -> dict:
    """Coverage as docs/market-queries.md defines it, by walking the grid."""
    first = stored[0]
    start = first if start is None else start
    end = stored[-1] if end is None else end
    mask = {"24x7": "1111111", "weekdays": "1111100"}.get(calendar, calendar)
    k0, k1 = -((first - start) // tf), (end - first) // tf
    grid = [first + k * tf for k in range(k0, k1 + 1)
            if mask[weekday(first + k * tf)] == "1"]
    in_range_ts = {t for t in stored if start <= t <= end}
    have = [g in in_range_ts for g in grid]
    present = sum(have)

    def runs(flag: bool) -> list[tuple[int, int]]:
        out, i = [], 0
        while i < len(grid):
            if have[i] == flag:
                j = i
                while j + 1 < len(grid) and have[j + 1] == flag:
                    j += 1
                out.append((i, j))
                i = j + 1
            else:
                i += 1
        return out

    gaps = [{"start_ts": grid[i], "end_ts": grid[j], "missing": j - i + 1}
            for i, j in runs(False)]
    long_runs = [(i, j) for i, j in runs(True) if j - i + 1 >= complete_n]
    last_run = None
    if long_runs:
        i, j = long_runs[-1]
        last_run = {"start_ts": grid[i], "end_ts": grid[j], "bars": j - i + 1}
    return {
        "start_ts": start, "end_ts": end, "calendar": calendar, "timeframe_ms": tf,
        "expected": len(grid), "present": present, "extra": len(in_range_ts) - present,
        "ratio": present / len(grid) if grid else 1.0,
        "gaps": gaps[:max_gaps], "gap_count": len(gaps),
        "gaps_truncated": len(gaps) > max_gaps,
        "last_complete_ts": last_run["end_ts"] if last_run else None, "last_run": last_run,
    }


@pytest.fixture(scope="module")
def cov(api):
    missing = set()
    for first, n in COV_HOLES:
        missing.update(first + k * MINUTE_MS for k in range(n))
    ts = sorted([t for t in minutes(FRI, TUE) if weekday(t) < 5 and t not in missing]
                + [SAT_BAR, OFF_GRID])
    # Irregular: the off-grid bar is part of what coverage must handle; a regular
    # series refuses it (422).
    body = {"symbol": "COV", "timeframe": "1m", "price_scale": 100, "volume_scale": 1000}
    expect_ok(api.post(api.base + "/v1/kline/series", json=body, timeout=30), 201)
    r = api.post(api.base + kline_path("COV") + "/records",
                 json={"records": walk_bars(ts, seed=71)}, timeout=60)
    assert "off the grid" in check_error(r, 422, "unprocessable")
    r = api.post(api.base + "/v1/kline/series", json={**body, "irregular": True}, timeout=30)
    assert expect_ok(r)["irregular"] is True
    write_klines(api, "COV", "1m", walk_bars(ts, seed=71))
    vals = [{"ts": t, "value": k % 5} for k, t in enumerate(ts) if t != OFF_GRID]
    new_scalar(api, "COV", "1m", "metric", "q", "i64", vals[::3])
    return {"ts": ts, "scalar_ts": [v["ts"] for v in vals[::3]]}


def same_coverage(got: dict, want: dict) -> None:
    for key, value in want.items():
        assert key in got, (key, got)
        if key == "ratio":
            assert math.isclose(got[key], value, abs_tol=1e-4), (got[key], value)
        else:
            assert got[key] == value, (key, got[key], value)


def coverage_http(api, path: str, **params) -> dict:
    return expect_ok(api.get(api.base + path + "/coverage", params=params, timeout=60))


def coverage_flight(client, **body) -> dict:
    results = list(client.do_action(flight.Action("coverage", json.dumps(body).encode())))
    assert len(results) == 1
    return json.loads(results[0].body.to_pybytes())


def test_coverage_calendars(api, client, cov):
    stored = cov["ts"]
    weekdays = coverage_model(stored, MINUTE_MS, calendar="weekdays")
    h24 = coverage_model(stored, MINUTE_MS, calendar="24x7")
    # The model itself, spelled out: the weekend is not a gap under `weekdays`, so
    # Friday 23:50-23:59 and Monday 00:00-00:05 are one gap of 16.
    assert [g["missing"] for g in weekdays["gaps"]] == [3, 16, 60, 1]
    assert weekdays["gaps"][1] == {"start_ts": utc(2024, 2, 2, 23, 50),
                                   "end_ts": utc(2024, 2, 5, 0, 5), "missing": 16}
    assert weekdays["extra"] == 2 and h24["extra"] == 1
    # Under 24x7 the weekend is missing too, split by the Saturday bar.
    assert [g["missing"] for g in h24["gaps"]] == [3, 730, 2165, 60, 1]
    assert weekdays["last_run"] == {"start_ts": utc(2024, 2, 6, 3, 1), "end_ts": TUE,
                                    "bars": 60}

    for calendar, want in (("weekdays", weekdays), ("24x7", h24)):
        same_coverage(coverage_http(api, kline_path("COV"), calendar=calendar), want)
        same_coverage(coverage_flight(client, kind="kline", symbol="COV", timeframe="1m",
                                      calendar=calendar), want)
        got = coverage_http(api, kline_path("COV"), calendar=calendar)
        assert got["expected"] == got["present"] + sum(g["missing"] for g in got["gaps"])
        assert got["last_complete_ts"] == TUE
    # 24x7 is the default.
    same_coverage(coverage_http(api, kline_path("COV")), h24)

    # A weekday mask: Monday to Saturday; Sunday does not split the run of gaps.
    mask = coverage_model(stored, MINUTE_MS, calendar="1111110")
    assert [g["missing"] for g in mask["gaps"]] == [3, 730, 725, 60, 1]
    same_coverage(coverage_http(api, kline_path("COV"), calendar="1111110"), mask)


def test_coverage_range_complete_n_and_max_gaps(api, client, cov):
    stored = cov["ts"]
    # A range wider than the data: the grid runs on from the first bar both ways.
    lo, hi = FRI - 5 * MINUTE_MS, TUE + 10 * MINUTE_MS
    want = coverage_model(stored, MINUTE_MS, lo, hi, "weekdays")
    assert want["gaps"][0] == {"start_ts": lo, "end_ts": FRI - MINUTE_MS, "missing": 5}
    assert want["gaps"][-1]["missing"] == 10 and want["last_complete_ts"] == TUE
    same_coverage(coverage_http(api, kline_path("COV"), start_ts=lo, end_ts=hi,
                                calendar="weekdays"), want)
    same_coverage(coverage_flight(client, kind="kline", symbol="COV", timeframe="1m",
                                  start_ts=lo, end_ts=hi, calendar="weekdays"), want)

    # "Are the last n bars complete?": last_complete_ts is the last bar exactly when
    # the last run is long enough.
    for n, last in ((60, TUE), (61, utc(2024, 2, 6, 2, 59)), (841, None)):
        want = coverage_model(stored, MINUTE_MS, calendar="weekdays", complete_n=n)
        assert want["last_complete_ts"] == last, n
        same_coverage(coverage_http(api, kline_path("COV"), calendar="weekdays",
                                    complete_n=n), want)
        same_coverage(coverage_flight(client, kind="kline", symbol="COV", timeframe="1m",
                                      calendar="weekdays", complete_n=n), want)

    # A range the calendar excludes entirely: nothing expected, ratio 1, the Saturday
    # bar is extra.
    sat = utc(2024, 2, 3)
    want = coverage_model(stored, MINUTE_MS, sat, sat + DAY_MS - MINUTE_MS, "weekdays")
    assert (want["expected"], want["present"], want["extra"], want["ratio"]) == (0, 0, 1, 1.0)
    assert want["gaps"] == [] and want["last_complete_ts"] is None
    same_coverage(coverage_http(api, kline_path("COV"), start_ts=sat,
                                end_ts=sat + DAY_MS - MINUTE_MS, calendar="weekdays"), want)

    # max_gaps keeps the earliest gaps and says the list was cut.
    want = coverage_model(stored, MINUTE_MS, calendar="24x7", max_gaps=2)
    assert want["gaps_truncated"] and want["gap_count"] == 5 and len(want["gaps"]) == 2
    same_coverage(coverage_http(api, kline_path("COV"), max_gaps=2), want)
    same_coverage(coverage_flight(client, kind="kline", symbol="COV", timeframe="1m",
                                  max_gaps=2), want)


def test_scalar_coverage(api, client, cov):
    want = coverage_model(cov["scalar_ts"], MINUTE_MS, calendar="weekdays")
    assert want["gap_count"] > 100  # every third bar only
    path = scalar_path("COV", "1m", "metric", "q")
    same_coverage(coverage_http(api, path, calendar="weekdays", max_gaps=100_000), want)
    same_coverage(coverage_flight(client, kind="scalar", symbol="COV", timeframe="1m",
                                  category="metric", name="q", calendar="weekdays",
                                  max_gaps=100_000), want)


# ---------------------------------------------------------------------------
# 8. Errors


@pytest.fixture(scope="module")
def err5(api):
    """A 5m kline series, a series of mixed value types under one name, and an i64
    series whose hourly sum overflows."""
    new_kline(api, "ERR5", "5m", walk_bars(minutes(utc(2024, 2, 1), utc(2024, 2, 1, 5),
                                                   5 * MINUTE_MS), seed=81))
    new_scalar(api, "MIXA", "15m", "factor", "mixed", "f64", [{"ts": utc(2024, 2, 1),
                                                                "value": 1.5}])
    new_scalar(api, "MIXB", "15m", "factor", "mixed", "i64", [{"ts": utc(2024, 2, 1),
                                                                "value": 2}])
    big = 2 ** 62
    new_scalar(api, "OVF", "1m", "metric", "big", "i64",
               [{"ts": utc(2024, 2, 1, 0, k), "value": big} for k in range(2)])
    return "ERR5"


def http_error(r, status: int = 400, code: str = "invalid_argument") -> str:
    return check_error(r, status, code)


def test_errors_http(api, rsk, scf, group, aligned, cov, err5):
    def get(path, **params):
        return api.get(api.base + path + "/records", params=params, timeout=30)

    msg = http_error(get(kline_path("ERR5", "5m"), resample="7m"))
    assert "7m" in msg and ("5m" in msg or "300000" in msg), msg
    http_error(get(kline_path("ERR5", "5m"), resample="1m"))  # finer than stored
    http_error(get(kline_path("RSK"), resample="fortnight"))
    http_error(get(kline_path("RSK"), resample="1h", fill="zero"))
    http_error(get(kline_path("RSK"), resample="1h", agg="mean"))  # agg on a kline
    http_error(get(kline_path("RSK"), resample="1h", offset_ms=HOUR_MS))
    http_error(get(kline_path("RSK"), resample="1h", start_ts=utc(2024, 2, 2),
                   end_ts=utc(2024, 2, 1)))
    http_error(get(F64_PATH, resample="1h", agg="median"))
    msg = http_error(get(scalar_path("OVF", "1m", "metric", "big"), resample="1h",
                         agg="sum"))
    assert msg

    def post(kind, **body):
        return api.post(f"{api.base}/v1/{kind}/batch", json=body, timeout=30)

    http_error(post("kline", timeframe="15m", symbols=[]))
    http_error(post("kline", timeframe="15m", symbols=SYMS, latest=0))
    http_error(post("kline", timeframe="15m", symbols=SYMS, start_ts=utc(2024, 2, 2),
                    end_ts=utc(2024, 2, 1)))
    t = utc(2024, 2, 3)
    http_error(post("kline", timeframe="15m", symbols=SYMS, as_of=t, end_ts=t))
    http_error(post("kline", timeframe="15m", symbols=SYMS, as_of=t, latest=1))
    http_error(post("kline", timeframe="15m", symbols=SYMS, as_of=t,
                    resample={"timeframe": "1h"}))
    http_error(post("kline", timeframe="15m", symbols=SYMS,
                    resample={"timeframe": "1h", "agg": "max"}))
    http_error(post("scalar", timeframe="15m", category="factor", name="mom", symbols=[]))
    http_error(post("scalar", timeframe="15m", category="factor", name="mom", symbols="*",
                    resample={"timeframe": "1h", "agg": "median"}))
    msg = check_error(post("kline", timeframe="15m", symbols=["ALPHA", "NOPE-1"]),
                      404, "not_found")
    assert "NOPE-1" in msg, msg

    url = api.base + kline_path("ALN") + "/aligned"
    lo, hi = utc(2024, 2, 5, 6), utc(2024, 2, 5, 7)
    rsi = {"category": "indicator", "name": "rsi"}
    for scalars in ([], [rsi, rsi], [{"category": "c", "name": f"n{k}"} for k in range(65)]):
        http_error(api.post(url, json={"scalars": scalars, "start_ts": lo, "end_ts": hi},
                            timeout=30))
    # A scalar series that does not exist is a missing series, as everywhere: 404.
    msg = check_error(api.post(url, json={"scalars": [rsi, {"category": "indicator",
                                                              "name": "nope"}]}, timeout=30),
                      404, "not_found")
    assert "nope" in msg, msg
    http_error(api.post(url, json={"scalars": [rsi], "join": "nearest"}, timeout=30))
    http_error(api.post(url, json={"scalars": [rsi], "start_ts": hi, "end_ts": lo},
                        timeout=30))

    cov_url = api.base + kline_path("COV") + "/coverage"
    for params in ({"calendar": "lunar"}, {"calendar": "11111"},
                   {"start_ts": utc(2024, 2, 6), "end_ts": utc(2024, 2, 5)}):
        http_error(api.get(cov_url, params=params, timeout=30))
    check_error(api.get(api.base + kline_path("NOPE-2") + "/coverage", timeout=30), 404,
                "not_found")


def test_errors_flight(client, rsk, scf, group, aligned, cov, err5):
    def invalid(**fields):
        with pytest.raises(pa.ArrowInvalid, match="invalid argument"):
            read(client, **fields)

    k1m = {"kind": "kline", "symbol": "RSK", "timeframe": "1m"}
    invalid(kind="kline", symbol="ERR5", timeframe="5m", resample={"timeframe": "7m"})
    invalid(**k1m, resample={"timeframe": "1h", "fill": "zero"})
    invalid(**k1m, resample={"timeframe": "1h", "agg": "mean"})
    invalid(**k1m, resample={"timeframe": "1h"}, start_ts=utc(2024, 2, 2),
            end_ts=utc(2024, 2, 1))
    invalid(kind="kline", symbols=SYMS, timeframe="15m", latest=0)
    invalid(**k1m, as_of=utc(2024, 2, 3), latest=1)
    invalid(**k1m, as_of=utc(2024, 2, 3), end_ts=utc(2024, 2, 3))
    invalid(**k1m, as_of=utc(2024, 2, 3), resample={"timeframe": "1h"})
    invalid(kind="scalar", symbol="SCF", timeframe="1m", category="feature", name="z",
            resample={"timeframe": "1h", "agg": "median"})
    invalid(kind="scalar", symbol="OVF", timeframe="1m", category="metric", name="big",
            resample={"timeframe": "1h", "agg": "sum"})
    invalid(kind="kline", symbols=[], timeframe="15m")
    invalid(kind="scalar", symbols="*", timeframe="15m", category="factor", name="mixed")
    rsi = {"category": "indicator", "name": "rsi"}
    invalid(kind="aligned", symbol="ALN", timeframe="1m", scalars=[])
    invalid(kind="aligned", symbol="ALN", timeframe="1m", scalars=[rsi, rsi])
    invalid(kind="aligned", symbol="ALN", timeframe="1m", scalars=[rsi], join="nearest")
    with pytest.raises(pa.ArrowInvalid, match="invalid argument"):
        coverage_flight(client, kind="kline", symbol="COV", timeframe="1m", calendar="lunar")

    with pytest.raises(pa.ArrowKeyError, match="not found") as e:
        read(client, kind="kline", symbols=["ALPHA", "NOPE-3", "NOPE-4"], timeframe="15m")
    assert "NOPE-3" in str(e.value)
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        coverage_flight(client, kind="kline", symbol="NOPE-5", timeframe="1m")
