"""The `ticks` workload: trades and quotes (docs/ticks.md) against ArcticDB, DuckDB,
chDB and Polars, the rows of issue [3 of 8] that can be measured today.

The data (synthetic, seeded, documented in docs/benchmarks/journal/*-ticks.md):
one day (2024-03-05, a sealed day: it ended long before `storage.compress_after_s`)
of trades for `tk_symbols` symbols, during the 6.5 hours of a US session. Symbol `i`
gets `tk_top // (i + 1)` trades (a Zipf law: the first has 10M, all together 52M in
the full run). Trades come in bursts: burst starts are uniform over the session, a
burst has a geometric number of trades (mean 6), and inside a burst each trade is
either in the same nanosecond as the one before (half of them) or an exponential
gap of mean 2 us later, so many trades share a millisecond and many a nanosecond.
Prices walk in steps of one cent (price_scale 100); sizes repeat (round lots and a
few odd lots, size_scale 1, every size >= 1); side is buy or sell, 4% unknown;
trade_id counts up. Quotes, ten per trade, for one symbol (`tk_quote_symbol`, 2M
trades and 20M quotes in the full run): distinct, increasing timestamps (so that
every system's as-of join is defined the same way), a bid walking like the trade
price and an ask 1 to 3 cents above it, sizes in round lots.

Measured, side by side in one run:
1. Bulk ingest of the day's trades (every symbol): FastK by DoPut (one stream per
   symbol, two streams at a time, `seq` assigned by the server), ArcticDB (`write` of
   one pandas frame per symbol, LMDB), DuckDB (a native table in a database file,
   `INSERT ... SELECT` from the Arrow table, then `CHECKPOINT`) and chDB (MergeTree
   ORDER BY (symbol, ts, seq), inserted from the Arrow table with
   `fsync_after_insert`). Rows per second, median of `tk_loads` loads into fresh
   directories; registration and CREATE TABLE are off the clock, the conversion of
   the Arrow table to ArcticDB's pandas frames too. Every load is checked (per-symbol
   count and sums).
2. One symbol-day (the first symbol) into Polars over Flight, against the in-memory
   Flight ceiling (ceiling_server.py holding FastK's own answer batches in RAM).
3. The tape: every symbol for one hour, merged by time: FastK's `"order": "ts"`
   ticket, DuckDB `ORDER BY ts, symbol, seq` and Polars `merge_sorted` of the
   per-symbol frames held in memory (a balanced tree of pairwise merges).
4. One day of 1m bars from trades for every symbol (OHLCV, VWAP, count): FastK (one
   `resample` ticket of every symbol; runs before 2026-11-28 sent one ticket per symbol), DuckDB, chDB
   and Polars; every answer checked value by value against pandas.
5. Trades with the quote in force for the quote symbol: FastK `trade_quote`, DuckDB
   and chDB `ASOF LEFT JOIN`, Polars `join_asof`; checked against pandas `merge_asof`.
6. Bytes per trade and per quote once sealed: FastK's series directories, Parquet with
   zstd written by Polars, chDB's MergeTree parts (after OPTIMIZE FINAL), DuckDB's
   file, ArcticDB's LMDB directory.

7. The live feed: small batches of trades of many symbols, back to back, each
   acknowledged durable (tick_feed.py says how).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import shutil
import statistics
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

from . import checks, procs, tick_feed
from .feeds import Restarted
from .systems import HttpClient, du
from .workloads import log

WORKLOADS = ("ticks",)
DAY_NS = 1_709_596_800 * 10**9  # 2024-03-05T00:00:00Z
SESSION_START_NS = DAY_NS + (14 * 3600 + 30 * 60) * 10**9  # 09:30 New York (EST)
SESSION_NS = int(6.5 * 3600) * 10**9
MINUTE_NS = 60 * 10**9
PRICE_SCALE = 100
TRADE_COLS = ("ts", "seq", "price", "size", "side", "trade_id")
QUOTE_COLS = ("ts", "seq", "bid", "ask", "bid_size", "ask_size")
BAR_COLS = ("ts", "open", "high", "low", "close", "volume", "trades")
BAR_NAMES = ["symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trades"]
ROUND_LOTS = np.array([100, 100, 100, 200, 300, 500, 1000, 1, 5, 10, 50], dtype=np.int64)
W = "ticks"


def params(q: bool) -> dict:
    return dict(tk_symbols=10 if q else 100, tk_top=200_000 if q else 10_000_000, tk_quote_symbol=4,
                tk_loads=3, tk_reps=2 if q else 5, **tick_feed.params(q))


# --------------------------------------------------------------------------- data


def _burst_times(rng: np.random.Generator, n: int, start: int, span: int) -> np.ndarray:
    """`n` sorted nanosecond timestamps in [start, start + span): bursts (see the module)."""
    sizes = rng.geometric(1 / 6, size=n // 6 + 16)
    while sizes.sum() < n:
        sizes = np.concatenate([sizes, rng.geometric(1 / 6, size=n // 6 + 16)])
    burst = np.repeat(np.arange(sizes.size), sizes)[:n]
    b = int(burst[-1]) + 1
    starts = np.sort(rng.integers(start, start + span - 10**7, size=b))
    gaps = np.where(rng.random(n) < 0.5, 0, rng.exponential(2_000, size=n).astype(np.int64))
    first = np.r_[True, burst[1:] != burst[:-1]]
    gaps[first] = 0
    cs = np.cumsum(gaps)
    offset = cs - np.maximum.accumulate(np.where(first, cs, 0))
    return np.sort(starts[burst] + offset)


def _seq_of(ts: np.ndarray) -> np.ndarray:
    """The `seq` FastK assigns to appends: 0, 1, 2, ... within each nanosecond."""
    i = np.arange(ts.size, dtype=np.int64)
    new = np.r_[True, ts[1:] != ts[:-1]]
    return (i - np.maximum.accumulate(np.where(new, i, 0))).astype(np.uint64)


def trades_of(i: int, n: int) -> pa.Table:
    rng = np.random.default_rng(9_000 + i)
    ts = _burst_times(rng, n, SESSION_START_NS, SESSION_NS)
    price = np.maximum(1, 2_000 + 500 * i + np.cumsum(rng.choice(np.array([-1, 0, 0, 1]), size=n)))
    side = rng.choice(np.array([-1, 1, 0], dtype=np.int8), size=n, p=[0.48, 0.48, 0.04])
    return pa.table({"ts": pa.array(ts, pa.timestamp("ns", "UTC")), "seq": _seq_of(ts),
                     "price": price.astype(np.int64), "size": rng.choice(ROUND_LOTS, size=n),
                     "side": side, "trade_id": np.arange(1, n + 1, dtype=np.int64) + i * 10**9})


def quotes_of(i: int, n: int) -> pa.Table:
    rng = np.random.default_rng(7_000 + i)
    gaps = rng.exponential(SESSION_NS / n, size=n).astype(np.int64) + 1
    ts = SESSION_START_NS + np.cumsum(gaps)
    ts = ts[ts < SESSION_START_NS + SESSION_NS]
    m = ts.size
    bid = np.maximum(1, 2_000 + 500 * i + np.cumsum(rng.choice(np.array([-1, 0, 0, 1]), size=m)))
    ask = bid + rng.choice(np.array([1, 1, 1, 2, 3]), size=m)
    lots = np.array([100, 200, 300, 500, 1000, 1500], dtype=np.int64)
    return pa.table({"ts": pa.array(ts, pa.timestamp("ns", "UTC")), "seq": np.zeros(m, np.uint64),
                     "bid": bid.astype(np.int64), "ask": ask.astype(np.int64),
                     "bid_size": rng.choice(lots, size=m), "ask_size": rng.choice(lots, size=m)})


def _with_symbol(sym: str, t: pa.Table) -> pa.Table:
    """The table with a `symbol` column first and a zone-less `ts` (the peers' form)."""
    t = t.set_column(0, "ts", t.column("ts").cast(pa.int64()).cast(pa.timestamp("ns")))
    return t.add_column(0, "symbol", pa.array([sym] * t.num_rows, pa.string()))


def _iso(ns: int) -> str:
    """Epoch nanoseconds as an ISO timestamp literal with nine decimals (no zone: UTC)."""
    return str(np.datetime64(ns, "ns")).replace("T", " ")


def _i64(col) -> np.ndarray:
    """A column (Arrow, any integer or timestamp type) as int64 numpy, nulls as -1."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    if pa.types.is_floating(col.type):
        return np.asarray(col.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.float64).astype(np.int64)
    return np.asarray(col.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _digest(t: pa.Table, cols) -> tuple:
    return (t.num_rows, *(int(_i64(t.column(c)).sum()) for c in cols))


def _median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def _timed(reps: int, fn, check) -> float:
    """Median ms of `reps` calls after one warm-up; `check` sees every answer."""
    times = []
    for rep in range(reps + 1):
        t0 = time.perf_counter()
        got = fn()
        dt = time.perf_counter() - t0
        check(got)
        if rep:
            times.append(dt)
    return _median_ms(times)


# --------------------------------------------------------------------------- FastK


def _register(hc: HttpClient, kind: str, sym: str) -> None:
    hc.request("POST", f"/v1/{kind}/series", json.dumps({"symbol": sym, "price_scale": PRICE_SCALE,
                                                        "size_scale": 1, "partition": "day"}).encode())


def _put(addr: str, kind: str, sym: str, t: pa.Table) -> None:
    c = flight.connect(f"grpc://{addr}")
    try:
        t = t.drop_columns(["seq"]) if kind == "trade" else t
        w, r = c.do_put(flight.FlightDescriptor.for_path(kind, sym), t.schema)
        w.write_table(t, max_chunksize=65_536)
        w.done_writing()
        r.read()
        w.close()
    finally:
        c.close()


def _fastk_sums(hc: HttpClient) -> dict:
    """Per symbol: count, sum(seq), sum(price), sum(size), read back by SQL."""
    body = json.dumps({"query": "SELECT symbol, count(*) AS n, sum(CAST(seq AS BIGINT)) AS seq, sum(price) AS price, "
                              "sum(size) AS size FROM trade_raw GROUP BY symbol ORDER BY symbol"}).encode()
    rows = json.loads(hc.request("POST", "/v1/sql", body))["rows"]
    return {r[0]: tuple(int(x) for x in r[1:]) for r in rows}


def _want_sums(trades: dict[str, pa.Table]) -> dict:
    return {s: (t.num_rows, int(_i64(t.column("seq")).sum()), int(_i64(t.column("price")).sum()),
                int(_i64(t.column("size")).sum())) for s, t in trades.items()}


def _fastk_load(binary, root: pathlib.Path, log_path: pathlib.Path, trades: dict[str, pa.Table]):
    node = Restarted(binary, root, log_path, 300)
    hc = HttpClient(node.http)
    for s in trades:
        _register(hc, "trade", s)
    order = sorted(trades, key=lambda s: -trades[s].num_rows)  # the longest streams first
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: _put(node.flight, "trade", s, trades[s]), order))
    return node, hc, time.perf_counter() - t0


# --------------------------------------------------------------------------- peers


def _duck_load(path: pathlib.Path, everything: pa.Table):
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE trades (symbol VARCHAR, ts TIMESTAMP_NS, seq UBIGINT, price BIGINT, size BIGINT, "
                "side TINYINT, trade_id BIGINT)")
    src = everything  # noqa: F841 - read by name by DuckDB's replacement scan
    t0 = time.perf_counter()
    con.execute("INSERT INTO trades SELECT * FROM src")
    con.execute("CHECKPOINT")
    return con, time.perf_counter() - t0


def _duck_sums(con) -> dict:
    rows = con.execute("SELECT symbol, count(*), sum(seq)::BIGINT, sum(price)::BIGINT, sum(size)::BIGINT "
                       "FROM trades GROUP BY symbol").fetchall()
    return {r[0]: tuple(int(x) for x in r[1:]) for r in rows}


class _Ch:
    SETTINGS = "SETTINGS fsync_after_insert = 1, fsync_part_directory = 1"

    def __init__(self, root: pathlib.Path):
        from chdb import session

        self.sess = session.Session(str(root))

    def q(self, sql: str) -> pa.Table:
        return self.sess.query(sql, "ArrowTable")

    def load(self, everything: pa.Table) -> float:
        self.sess.query("CREATE TABLE trades (symbol LowCardinality(String), ts DateTime64(9, 'UTC'), seq UInt64, "
                        "price Int64, size Int64, side Int8, trade_id Int64) ENGINE = MergeTree "
                        f"ORDER BY (symbol, ts, seq) {self.SETTINGS}")
        src = everything.set_column(1, "ts", everything.column("ts").cast(pa.int64()))  # noqa: F841
        t0 = time.perf_counter()
        self.sess.query("INSERT INTO trades SELECT symbol, fromUnixTimestamp64Nano(ts), seq, price, size, side, "
                        "trade_id FROM Python(src)")
        return time.perf_counter() - t0

    def sums(self) -> dict:
        t = self.q("SELECT symbol, count() AS n, toInt64(sum(seq)) AS s, sum(price) AS p, sum(size) AS z "
                   "FROM trades GROUP BY symbol").to_pylist()
        return {r["symbol"]: (int(r["n"]), int(r["s"]), int(r["p"]), int(r["z"])) for r in t}

    def bytes_of(self, table: str) -> int:
        t = self.q("SELECT sum(bytes_on_disk) AS b FROM system.parts WHERE active AND database = currentDatabase() "
                   f"AND table = '{table}'").to_pylist()
        return int(t[0]["b"] or 0)

    def close(self) -> None:
        self.sess.close()


def _arctic_load(root: pathlib.Path, frames: dict):
    import arcticdb as adb

    lib = adb.Arctic(f"lmdb://{root}?map_size=32GB").get_library("trades", create_if_missing=True)
    t0 = time.perf_counter()
    for s, df in frames.items():
        lib.write(s, df)
    return lib, time.perf_counter() - t0


def _arctic_frames(trades: dict[str, pa.Table]) -> dict:
    out = {}
    for s, t in trades.items():
        df = t.drop_columns(["ts"]).to_pandas()
        df.index = t.column("ts").cast(pa.int64()).to_numpy().astype("datetime64[ns]")
        df.index.name = "ts"
        out[s] = df
    return out


def _arctic_sums(lib, syms) -> dict:
    out = {}
    for s in syms:
        df = lib.read(s).data
        out[s] = (len(df), int(df["seq"].astype("int64").sum()), int(df["price"].sum()), int(df["size"].sum()))
    return out


# --------------------------------------------------------------------------- the run


def _ingest(binary, work, logs, trades, everything, loads) -> tuple[dict, dict]:
    """Workload 1: `loads` loads into fresh directories per system; the last ones stay."""
    want = _want_sums(trades)
    n = everything.num_rows
    out: dict = {}
    keep: dict = {}
    secs: dict[str, list[float]] = {k: [] for k in ("FastK", "DuckDB", "chDB", "ArcticDB")}
    frames = None

    def fastk(k, d, _):
        node, hc, s = _fastk_load(binary, d, logs / f"fastk-ticks-{k}.log", trades)
        return (node, hc), _fastk_sums(hc), s

    def duck(k, d, _):
        d.mkdir(parents=True)
        con, s = _duck_load(d / "trades.duckdb", everything)
        return (con, d), _duck_sums(con), s

    def chdb(k, d, _):
        d.mkdir(parents=True)
        ch = _Ch(d)
        s = ch.load(everything)
        return (ch, d), ch.sums(), s

    def arctic(k, d, frames):
        d.mkdir(parents=True)
        lib, s = _arctic_load(d, frames)
        return (lib, d), _arctic_sums(lib, trades), s

    # Each system: load into `d` -> (what the reads keep, the sums read back, seconds).
    loaders = {"FastK": fastk, "DuckDB": duck, "chDB": chdb, "ArcticDB": arctic}
    closers = {"FastK": lambda h: h[0].stop(), "DuckDB": lambda h: h[0].close(), "chDB": lambda h: h[0].close(),
               "ArcticDB": lambda h: None}
    for k in range(loads):
        last = k == loads - 1
        for name in secs:
            d = work / f"{name.lower()}-{k}"
            shutil.rmtree(d, ignore_errors=True)
            os.sync()
            log(f"ticks: load {k + 1} of {loads} into {name}")
            try:
                if name == "ArcticDB" and frames is None:
                    t0 = time.perf_counter()
                    frames = _arctic_frames(trades)
                    out.setdefault("ArcticDB", {})["prep_s"] = time.perf_counter() - t0
                handle, sums, s = loaders[name](k, d, frames)
                checks.expect(W, f"{name} load {k}", sums, want)
                if last:
                    keep[name] = handle
                else:
                    closers[name](handle)
            except ImportError as e:
                out[name] = {"error": f"not installed: {e}"}
                continue
            secs[name].append(s)
            if not last:
                shutil.rmtree(d, ignore_errors=True)
    for name, xs in secs.items():
        if xs:
            med = statistics.median(xs)
            out.setdefault(name, {}).update(seconds=xs, median_s=med, rows_per_s=n / med)
    return out, keep


def _read_one(node, trades, sym, reps, work, logs) -> dict:
    """Workload 2: one symbol-day into Polars over Flight, against the RAM ceiling."""
    import polars as pl

    want = trades[sym]
    wd = _digest(want, TRADE_COLS)
    c = flight.connect(f"grpc://{node.flight}")
    ticket = flight.Ticket(json.dumps({"kind": "trade", "symbol": sym}).encode())
    got = c.do_get(ticket).read_all()
    for col in TRADE_COLS:  # once, column by column, off the clock
        checks.expect(W, f"FastK {sym} column {col}", bool(np.array_equal(_i64(got.column(col)),
                                                                          _i64(want.column(col)))), True)
    d = work / "ceiling"
    (d / "ticks").mkdir(parents=True, exist_ok=True)
    (d / "kline").mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(d / "ticks" / f"{sym}.arrow"), "wb") as f, pa.ipc.new_file(f, got.schema) as wr:
        for b in got.to_batches():  # FastK's own batches, so both send the same messages
            wr.write_batch(b)
    batches = len(got.to_batches())
    del got
    port = procs.free_port()
    py = os.environ.get("FASTK_BENCH_PYTHON") or sys.executable
    proc = procs.start_process([py, "-m", "fastk_bench.ceiling_server", str(port), str(d)], logs / "ceiling-ticks.log",
                               env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parent.parent)})
    procs.wait_port(port, 300, proc)
    cc = flight.connect(f"grpc://127.0.0.1:{port}")

    def check(df) -> None:
        checks.expect(W, f"{sym} into Polars", (df.height, *(int(df[c].cast(pl.Int64).sum()) for c in TRADE_COLS)),
                      wd)

    fk = _timed(reps, lambda: pl.from_arrow(c.do_get(ticket).read_all()), check)
    ceil = _timed(reps, lambda: pl.from_arrow(cc.do_get(ticket).read_all()), check)
    fk2 = _timed(reps, lambda: pl.from_arrow(c.do_get(ticket).read_all()), check)  # interleaved again
    ceil2 = _timed(reps, lambda: pl.from_arrow(cc.do_get(ticket).read_all()), check)
    cc.close()
    c.close()
    procs._terminate(proc)
    fk_ms, ceil_ms = min(fk, fk2), min(ceil, ceil2)
    return {"symbol": sym, "rows": want.num_rows, "batches": batches, "fastk_ms": fk_ms, "ceiling_ms": ceil_ms,
            "fastk_rows_per_s": want.num_rows / fk_ms * 1e3, "ceiling_rows_per_s": want.num_rows / ceil_ms * 1e3,
            "of_ceiling": ceil_ms / fk_ms, "rounds_ms": {"fastk": [fk, fk2], "ceiling": [ceil, ceil2]}}


def _merge_tree(frames: list):
    while len(frames) > 1:
        nxt = [frames[i].merge_sorted(frames[i + 1], key="ts") for i in range(0, len(frames) - 1, 2)]
        if len(frames) % 2:
            nxt.append(frames[-1])
        frames = nxt
    return frames[0]


def _tape(node, duck, pl_frames, trades, reps) -> dict:
    """Workload 3: every symbol for one hour merged by time."""
    import polars as pl

    lo = SESSION_START_NS + 30 * MINUTE_NS  # 10:00 to 11:00 New York
    hi = lo + 60 * MINUTE_NS - 1
    parts = []
    for s, t in trades.items():
        ts = _i64(t.column("ts"))
        a, b = np.searchsorted(ts, lo, "left"), np.searchsorted(ts, hi, "right")
        parts.append(_with_symbol(s, t.slice(a, b - a)))
    want_t = pa.concat_tables(parts)
    cols = ("ts", "seq", "price", "size")
    wd = _digest(want_t, cols)
    key = np.lexsort((_i64(want_t.column("seq")), np.array(want_t.column("symbol").to_pylist()),
                      _i64(want_t.column("ts"))))
    want_order = {c: _i64(want_t.column(c))[key] for c in ("ts", "seq", "price")}
    want_sym = np.array(want_t.column("symbol").to_pylist())[key]

    def ordered(t: pa.Table, who: str) -> None:
        """The exact tape: ascending (ts, symbol, seq), each row equal to the model's."""
        same = all(np.array_equal(_i64(t.column(c)), want_order[c]) for c in ("ts", "seq", "price")) and \
            np.array_equal(np.array(t.column("symbol").to_pylist()), want_sym)
        checks.expect(W, f"{who} tape order", same, True)

    out: dict = {"rows": want_t.num_rows, "start_ns": lo, "end_ns": hi}
    c = flight.connect(f"grpc://{node.flight}")
    ticket = flight.Ticket(json.dumps({"kind": "trade", "symbols": "*", "order": "ts", "start_ns": lo,
                                       "end_ns": hi}).encode())
    ordered(c.do_get(ticket).read_all(), "FastK")
    out["FastK"] = _timed(reps, lambda: pl.from_arrow(c.do_get(ticket).read_all()),
                          lambda df: checks.expect(W, "FastK tape", _digest(df.to_arrow(), cols), wd))
    c.close()
    if duck is not None:
        con = duck[0]
        sql = (f"SELECT symbol, ts, seq, price, size, side, trade_id FROM trades WHERE ts BETWEEN "
               f"'{_iso(lo)}'::TIMESTAMP_NS AND '{_iso(hi)}'::TIMESTAMP_NS ORDER BY ts, symbol, seq")
        ordered(con.sql(sql).to_arrow_table(), "DuckDB")
        out["DuckDB"] = _timed(reps, lambda: pl.from_arrow(con.sql(sql).to_arrow_table()),
                               lambda df: checks.expect(W, "DuckDB tape", _digest(df.to_arrow(), cols), wd))
    if pl_frames is not None:
        def polars_tape():
            return _merge_tree([f.filter(pl.col("ts").is_between(lo, hi)) for f in pl_frames.values()])

        got = polars_tape()
        checks.expect(W, "Polars tape ascending ts", bool(np.all(np.diff(got["ts"].to_numpy()) >= 0)), True)
        out["Polars"] = _timed(reps, polars_tape,
                               lambda df: checks.expect(W, "Polars tape", _digest(df.to_arrow(), cols), wd))
    return out


def _bars_reference(everything: pa.Table) -> pa.Table:
    """1m bars of every symbol by pandas groupby: the answer every system must match."""
    t = everything.select(["symbol", "ts", "price", "size"])
    df = t.set_column(0, "symbol", pc.dictionary_encode(t.column("symbol"))).to_pandas()
    df["ts"] = df["ts"].astype("int64")
    df["bucket"] = df["ts"] // MINUTE_NS * 60_000
    df["pv"] = df["price"].astype("float64") * df["size"].astype("float64")
    g = df.groupby(["symbol", "bucket"], sort=True, observed=True)  # rows are in (ts, seq) order inside a symbol
    out = g.agg(open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
                volume=("size", "sum"), trades=("price", "count"), pv=("pv", "sum")).reset_index()
    out["vwap"] = out["pv"] / out["volume"] / PRICE_SCALE
    out = out.rename(columns={"bucket": "ts"}).drop(columns=["pv"])
    return pa.Table.from_pandas(out, preserve_index=False)


def _bars_match(got: pa.Table, want: pa.Table, who: str) -> None:
    same = got.num_rows == want.num_rows and \
        np.array_equal(np.array(got.column("symbol").to_pylist()), np.array(want.column("symbol").to_pylist()))
    for c in BAR_COLS:
        same = same and np.array_equal(_i64(got.column(c)), _i64(want.column(c)))
    if same:
        g = np.asarray(got.column("vwap").to_numpy(), dtype=np.float64)
        w = np.asarray(want.column("vwap").to_numpy(), dtype=np.float64)
        same = bool(np.allclose(g, w, rtol=1e-12, atol=0))
    checks.expect(W, f"{who} 1m bars value by value", same, True)


def _bars(node, duck, ch, pl_all, trades, want: pa.Table, reps: int) -> dict:
    """Workload 4: one day of 1m bars from trades for every symbol."""
    import polars as pl

    out: dict = {"bars": want.num_rows}
    c = flight.connect(f"grpc://{node.flight}")
    syms = sorted(trades)

    def fastk():
        # One ticket of every symbol: each symbol's bars in turn, led by a symbol column.
        t = c.do_get(flight.Ticket(json.dumps({"kind": "trade", "symbols": syms,
                                               "resample": {"timeframe": "1m"}}).encode())).read_all()
        t = t.select(["symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trades"])
        return t.set_column(1, "ts", t.column("ts").cast(pa.int64()).cast(pa.timestamp("ms")))

    out["FastK"] = _timed(reps, fastk, lambda t: _bars_match(t, want, "FastK"))
    c.close()
    if duck is not None:
        con = duck[0]
        sql = ("SELECT symbol, epoch_ns(ts) // 60000000000 * 60000 AS bucket, first(price ORDER BY ts, seq) AS open, "
               "max(price) AS high, min(price) AS low, last(price ORDER BY ts, seq) AS close, "
               "sum(size)::BIGINT AS volume, sum(price::DOUBLE * size) / sum(size) / 100 AS vwap, "
               "count(*) AS trades FROM trades GROUP BY symbol, bucket ORDER BY symbol, bucket")
        out["DuckDB"] = _timed(reps, lambda: con.sql(sql).to_arrow_table().rename_columns(BAR_NAMES),
                               lambda t: _bars_match(t, want, "DuckDB"))
    if ch is not None:
        sql = ("SELECT toString(symbol) AS symbol, intDiv(toUnixTimestamp64Nano(ts), 60000000000) * 60000 AS bucket, "
               "argMin(price, (ts, seq)) AS open, max(price) AS high, min(price) AS low, "
               "argMax(price, (ts, seq)) AS close, sum(size) AS volume, "
               "sum(toFloat64(price) * size) / sum(size) / 100 AS vwap, count() AS trades FROM trades "
               "GROUP BY symbol, bucket ORDER BY symbol, bucket")
        out["chDB"] = _timed(reps, lambda: ch[0].q(sql).rename_columns(BAR_NAMES), lambda t: _bars_match(t, want, "chDB"))
    if pl_all is not None:
        def polars_bars():
            return (pl_all.with_columns((pl.col("ts").cast(pl.Int64) // MINUTE_NS * 60_000).alias("bucket"))
                    .group_by(["symbol", "bucket"], maintain_order=True)
                    .agg(pl.col("price").first().alias("open"), pl.col("price").max().alias("high"),
                         pl.col("price").min().alias("low"), pl.col("price").last().alias("close"),
                         pl.col("size").sum().alias("volume"),
                         ((pl.col("price").cast(pl.Float64) * pl.col("size")).sum() / pl.col("size").sum()
                          / PRICE_SCALE).alias("vwap"),
                         pl.len().alias("trades"))
                    .rename({"bucket": "ts"}).sort(["symbol", "ts"]).to_arrow())
        out["Polars"] = _timed(reps, polars_bars, lambda t: _bars_match(t, want, "Polars"))
    return out


def _tq_reference(tr: pa.Table, qt: pa.Table) -> pa.Table:
    import pandas as pd

    t = tr.to_pandas()
    q = qt.drop_columns(["seq"]).to_pandas()
    t["ts"], q["ts"] = t["ts"].astype("int64"), q["ts"].astype("int64")
    m = pd.merge_asof(t, q, on="ts", direction="backward", allow_exact_matches=True)
    return pa.Table.from_pandas(m, preserve_index=False)


def _tq_match(got: pa.Table, want: pa.Table, who: str) -> None:
    same = got.num_rows == want.num_rows
    for c in ("ts", "seq", "price", "size", "bid", "ask", "bid_size", "ask_size"):
        same = same and np.array_equal(_i64(got.column(c)), _i64(want.column(c)))
    checks.expect(W, f"{who} trade_quote value by value", same, True)


def _trade_quote(node, duck, ch, sym, tr: pa.Table, qt: pa.Table, reps: int) -> dict:
    """Workload 5: trades with the quote in force for one symbol-day."""
    import polars as pl

    want = _tq_reference(tr, qt)
    out: dict = {"symbol": sym, "trades": tr.num_rows, "quotes": qt.num_rows,
                 "trades_before_first_quote": int(np.sum(_i64(want.column("bid")) < 0))}
    c = flight.connect(f"grpc://{node.flight}")
    ticket = flight.Ticket(json.dumps({"kind": "trade_quote", "symbol": sym}).encode())
    out["FastK"] = _timed(reps, lambda: c.do_get(ticket).read_all(), lambda t: _tq_match(t, want, "FastK"))
    c.close()
    cols = ("t.ts AS ts, t.seq AS seq, t.price AS price, t.size AS size, t.side AS side, t.trade_id AS trade_id, "
            "q.bid AS bid, q.ask AS ask, q.bid_size AS bid_size, q.ask_size AS ask_size")
    if duck is not None:
        con = duck[0]
        sql = (f"SELECT {cols} FROM trades t ASOF LEFT JOIN quotes q ON t.symbol = q.symbol AND t.ts >= q.ts "
               f"WHERE t.symbol = '{sym}' ORDER BY t.ts, t.seq")
        out["DuckDB"] = _timed(reps, lambda: con.sql(sql).to_arrow_table(), lambda t: _tq_match(t, want, "DuckDB"))
    if ch is not None:
        sql = (f"SELECT {cols} FROM (SELECT * FROM trades WHERE symbol = '{sym}') AS t ASOF LEFT JOIN quotes AS q "
               f"ON t.symbol = q.symbol AND t.ts >= q.ts ORDER BY t.ts, t.seq SETTINGS join_use_nulls = 1")
        out["chDB"] = _timed(reps, lambda: ch[0].q(sql), lambda t: _tq_match(t, want, "chDB"))
    tp = pl.from_arrow(tr)
    qp = pl.from_arrow(qt.drop_columns(["seq"]))
    out["Polars"] = _timed(reps, lambda: tp.join_asof(qp, on="ts", strategy="backward").to_arrow(),
                           lambda t: _tq_match(t, want, "Polars"))
    return out


def _versions() -> dict:
    """The peers' versions as installed (bench/requirements.txt pins them)."""
    out = {}
    for mod in ("duckdb", "chdb", "arcticdb", "polars", "pandas", "pyarrow"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def run(results: dict, P: dict, *, binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path) -> dict:
    import polars as pl

    nsym, top, reps, loads = P["tk_symbols"], P["tk_top"], P["tk_reps"], P["tk_loads"]
    qi = min(P["tk_quote_symbol"], nsym - 1)
    work.mkdir(parents=True, exist_ok=True)
    log(f"ticks: generating {nsym} symbols, the first with {top:,} trades")
    syms = [f"T{i:03d}" for i in range(nsym)]
    trades = {s: trades_of(i, top // (i + 1)) for i, s in enumerate(syms)}
    qsym = syms[qi]
    quotes = quotes_of(qi, 10 * trades[qsym].num_rows)
    everything = pa.concat_tables([_with_symbol(s, t) for s, t in trades.items()])
    n = everything.num_rows
    burst = _i64(everything.column("seq"))
    out: dict = {
        "symbols": nsym, "trades": n, "quote_symbol": qsym, "quotes": quotes.num_rows, "reps": reps, "loads": loads,
        "versions": _versions(),
        "same_ns_share": float(np.mean(burst > 0)),
        "max_per_ns": int(burst.max()) + 1,
    }
    busiest = trades[syms[0]]
    per_ms = np.unique(_i64(busiest.column("ts")) // 1_000_000, return_counts=True)[1]
    out["first_symbol_trades_per_busy_ms"] = {"p50": float(np.percentile(per_ms, 50)),
                                              "p99": float(np.percentile(per_ms, 99)), "max": int(per_ms.max())}
    keep: dict = {}
    try:
        log(f"ticks: ingest of {n:,} trades, {loads} loads per system")
        out["ingest"], keep = _ingest(binary, work, logs, trades, everything, loads)
        node, hc = keep["FastK"]
        _register(hc, "quote", qsym)
        _put(node.flight, "quote", qsym, quotes)
        duck = keep.get("DuckDB")
        ch = keep.get("chDB")
        if duck is not None:
            qsrc = _with_symbol(qsym, quotes)  # noqa: F841 - read by name by DuckDB
            duck[0].execute("CREATE TABLE quotes AS SELECT * FROM qsrc")
            duck[0].execute("CHECKPOINT")
        if ch is not None:
            qsrc = _with_symbol(qsym, quotes)
            qsrc = qsrc.set_column(1, "ts", qsrc.column("ts").cast(pa.int64()))  # noqa: F841
            ch[0].sess.query("CREATE TABLE quotes (symbol LowCardinality(String), ts DateTime64(9, 'UTC'), "
                             "seq UInt64, bid Int64, ask Int64, bid_size Int64, ask_size Int64) ENGINE = MergeTree "
                             f"ORDER BY (symbol, ts, seq) {_Ch.SETTINGS}")
            ch[0].sess.query("INSERT INTO quotes SELECT symbol, fromUnixTimestamp64Nano(ts), seq, bid, ask, "
                             "bid_size, ask_size FROM Python(qsrc)")
        log("ticks: one symbol-day into Polars over Flight, and the ceiling")
        out["read_one"] = _read_one(node, trades, syms[0], reps, work, logs)
        pl_frames = {s: pl.from_arrow(_with_symbol(s, t)) for s, t in trades.items()}
        log("ticks: the tape")
        out["tape"] = _tape(node, duck, pl_frames, trades, reps)
        del pl_frames
        log("ticks: bars from trades (pandas reference first)")
        want_bars = _bars_reference(everything)
        out["bars"] = _bars(node, duck, ch, pl.from_arrow(everything), trades, want_bars, reps)
        del want_bars
        log("ticks: trades with the quote in force")
        out["trade_quote"] = _trade_quote(node, duck, ch, qsym, trades[qsym], quotes, reps)
        log("ticks: bytes")
        out["bytes"] = _bytes(node, duck, ch, keep.get("ArcticDB"), everything, quotes, qsym, work)
        log("ticks: the live feed")
        out["live_feed"] = tick_feed.run(P, binary=binary, work=work / "feed", logs=logs,
                                         ch=ch[0] if ch is not None else None)
        out["checked"] = checks.COUNTS.get(W, 0)
        return out
    finally:
        for k, v in keep.items():
            try:
                if k == "FastK":
                    v[0].stop()
                elif k in ("DuckDB", "chDB"):
                    v[0].close()
            except Exception:  # noqa: BLE001 - cleanup
                pass
        shutil.rmtree(work, ignore_errors=True)


def _bytes(node, duck, ch, arctic, everything: pa.Table, quotes: pa.Table, qsym: str, work: pathlib.Path) -> dict:
    """Workload 6: bytes per trade and per quote once sealed."""
    import polars as pl

    n, m = everything.num_rows, quotes.num_rows
    out: dict = {"trades": n, "quotes": m}
    series = node.root / "series"
    out["FastK"] = {"trade_bytes": du(series / "trade"), "quote_bytes": du(series / "quote")}
    pq = work / "parquet"
    pq.mkdir(parents=True, exist_ok=True)
    pl.from_arrow(everything).write_parquet(pq / "trades.parquet", compression="zstd")
    pl.from_arrow(_with_symbol(qsym, quotes)).write_parquet(pq / "quotes.parquet", compression="zstd")
    out["Parquet zstd (Polars)"] = {"trade_bytes": du(pq / "trades.parquet"), "quote_bytes": du(pq / "quotes.parquet")}
    if ch is not None:
        ch[0].sess.query("OPTIMIZE TABLE trades FINAL")
        ch[0].sess.query("OPTIMIZE TABLE quotes FINAL")
        out["chDB MergeTree"] = {"trade_bytes": ch[0].bytes_of("trades"), "quote_bytes": ch[0].bytes_of("quotes")}
    if duck is not None:
        out["DuckDB (trades and quotes, one file)"] = {"file_bytes": du(duck[1])}
    if arctic is not None:
        out["ArcticDB (trades only, LMDB)"] = {"trade_bytes": du(arctic[1])}
    for v in out.values():
        if isinstance(v, dict):
            if "trade_bytes" in v:
                v["per_trade"] = v["trade_bytes"] / n
            if "quote_bytes" in v:
                v["per_quote"] = v["quote_bytes"] / m
    return out
