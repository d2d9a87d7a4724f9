"""The live feed of the `ticks` workload (issue [3 of 8]): small batches of trades of
many symbols, back to back, each acknowledged durable before the next.

The feed: `tf_clients` feed handlers, each for its own `tf_symbols` symbols, send one
request after the other of `tf_per` trades for each of their symbols (100 x 500 =
50,000 trades per request in the full run), every request acknowledged durable before
the handler sends its next. A request covers the next `WINDOW_NS` (100 ms) of every
symbol, from the second the run starts (today: the partition a feed writes is open,
not sealed): bursts of trades in one nanosecond as in the bulk data (`ticks._burst_times`),
the rows of all symbols interleaved by time, as a feed handler's buffer holds them.
The tables are built before the clock starts, so the load generator (pyarrow's C++
Flight client, which releases the GIL while it sends and waits) only sends.

Measured side by side in one run, trades per second acknowledged durable (all trades
over the wall time of the whole feed) and the latency of each request (p50, p99, max):
- FastK: DoPut `["trade", "*"]` per request, `seq` left to the server (one log record,
  one shared sync);
- DuckDB: `INSERT INTO trades SELECT * FROM <the request's Arrow table>` per request in
  autocommit, one cursor per handler on one database file (a commit syncs DuckDB's WAL);
- chDB: `INSERT INTO trades SELECT ... FROM Python(<table>)` per request into a
  MergeTree with `fsync_after_insert`, one handler at a time (one in-process session);
  a part per insert, as a ClickHouse user with synchronous inserts gets.
Every system's stored trades are read back and checked by per-handler count and sums
(and FastK's `seq`, numbered by the server, against the rule of docs/ticks.md).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from . import checks
from .feeds import Restarted
from .systems import HttpClient
from .workloads import log

W = "ticks"
WINDOW_NS = 100 * 10**6
# A live feed writes the current day (an open partition, not a sealed one): the feed
# starts at the whole second of the run's start.
FEED_START_NS = time.time_ns() // 10**9 * 10**9


def params(q: bool) -> dict:
    return dict(tf_clients=int(__import__("os").environ.get("TF_CLIENTS", 2)), tf_symbols=50 if q else 500, tf_per=100, tf_requests=10 if q else 60)


def _symbols(c: int, n: int) -> list[str]:
    return [f"L{c}_{i:03d}" for i in range(n)]


def _request(c: int, r: int, nsym: int, per: int) -> pa.Table:
    """Handler `c`'s request `r`: `per` trades of each of its symbols in the window,
    interleaved by time (ties kept in symbol order: each symbol's rows stay sorted)."""
    from .ticks import _burst_times

    rng = np.random.default_rng(1_000_000 * c + r)
    start = FEED_START_NS + r * WINDOW_NS
    ts = np.concatenate([_burst_times(rng, per, start, WINDOW_NS) for _ in range(nsym)])
    sym = np.repeat(np.arange(nsym, dtype=np.int32), per)
    order = np.lexsort((np.arange(ts.size), ts))
    ts, sym = ts[order], sym[order]
    n = ts.size
    price = 10_000 + rng.integers(-50, 50, size=n)
    size = rng.choice(np.array([100, 100, 200, 300, 500, 1, 5], dtype=np.int64), size=n)
    side = rng.choice(np.array([-1, 1, 0], dtype=np.int8), size=n, p=[0.48, 0.48, 0.04])
    names = pa.array(_symbols(c, nsym), pa.string())
    return pa.table({
        "symbol": pa.DictionaryArray.from_arrays(pa.array(sym, pa.int32()), names),
        "ts": pa.array(ts, pa.timestamp("ns", "UTC")),
        "price": price.astype(np.int64), "size": size, "side": side,
        "trade_id": np.arange(n, dtype=np.int64) + (c * 10**6 + r) * 10**5,
    })


def _want(tables: list[pa.Table]) -> tuple:
    """(count, sum of price, sum of size, sum of the seq FastK numbers) of a handler's
    requests: within a symbol, 0, 1, ... over the trades of one nanosecond."""
    n = price = size = seq = 0
    for t in tables:
        sym = t.column("symbol").combine_chunks().indices.to_numpy()
        ts = t.column("ts").combine_chunks().cast(pa.int64()).to_numpy()
        order = np.lexsort((np.arange(ts.size), ts, sym))
        s, x = sym[order], ts[order]
        i = np.arange(x.size)
        new = np.r_[True, (x[1:] != x[:-1]) | (s[1:] != s[:-1])]
        seq += int((i - np.maximum.accumulate(np.where(new, i, 0))).sum())
        n += t.num_rows
        price += int(np.asarray(t.column("price")).sum())
        size += int(np.asarray(t.column("size")).sum())
    return (n, price, size, seq)


def _lat(times: list[float]) -> dict:
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "requests": len(times)}


def _drive(clients: int, send_of, tables: list[list[pa.Table]], parallel: bool = True) -> dict:
    """Runs the handlers (threads when `parallel`, else one after the other), each
    sending its requests back to back through `send_of(c)`; returns rates and latency."""
    times: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def handler(c: int) -> None:
        try:
            send = send_of(c)
            for t in tables[c]:
                t0 = time.perf_counter()
                send(t)
                times[c].append(time.perf_counter() - t0)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t0 = time.perf_counter()
    if parallel:
        threads = [threading.Thread(target=handler, args=(c,)) for c in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    else:
        for c in range(clients):
            handler(c)
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    trades = sum(t.num_rows for ts in tables for t in ts)
    every = [x for ts in times for x in ts]
    return {"trades": trades, "wall_s": wall, "trades_per_s": trades / wall,
            "handlers": clients, "parallel": parallel, **_lat(every)}


def _fastk(binary, work: pathlib.Path, logs: pathlib.Path, tables, nsym: int) -> dict:
    node = Restarted(binary, work / "fastk-feed", logs / "fastk-ticks-feed.log", 300)
    try:
        hc = HttpClient(node.http)
        for c in range(len(tables)):
            for s in _symbols(c, nsym):
                hc.request("POST", "/v1/trade/series", json.dumps(
                    {"symbol": s, "price_scale": 100, "size_scale": 1}).encode())

        def send_of(c: int):
            client = flight.connect(f"grpc://{node.flight}")
            desc = flight.FlightDescriptor.for_path("trade", "*")

            def send(t: pa.Table) -> None:
                w, r = client.do_put(desc, t.schema)
                w.write_table(t)
                w.done_writing()
                ack = json.loads(r.read().to_pybytes())
                w.close()
                if ack["written"] != t.num_rows:
                    raise RuntimeError(f"FastK acknowledged {ack['written']} of {t.num_rows} trades")
            return send

        out = _drive(len(tables), send_of, tables)
        for c, ts in enumerate(tables):
            q = ("SELECT count(*), sum(price), sum(size), sum(CAST(seq AS BIGINT)) FROM trade_raw "
                 f"WHERE symbol LIKE 'L{c}\\_%' ESCAPE '\\'")
            row = json.loads(hc.request("POST", "/v1/sql", json.dumps({"query": q}).encode()))["rows"][0]
            checks.expect(W, f"FastK live feed handler {c}", tuple(int(x) for x in row), _want(ts))
        return out
    finally:
        node.stop()


def _duck(work: pathlib.Path, tables) -> dict:
    import duckdb

    d = work / "duck-feed"
    d.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(d / "feed.duckdb"))
    try:
        con.execute("CREATE TABLE trades (symbol VARCHAR, ts TIMESTAMP_NS, price BIGINT, size BIGINT, "
                    "side TINYINT, trade_id BIGINT)")

        def send_of(c: int):
            cur = con.cursor()

            def send(t: pa.Table) -> None:
                src = t  # noqa: F841 - read by name by DuckDB's replacement scan
                cur.execute("INSERT INTO trades SELECT symbol::VARCHAR, ts::TIMESTAMP_NS, price, size, side, "
                            "trade_id FROM src")
            return send

        out = _drive(len(tables), send_of, tables)
        for c, ts in enumerate(tables):
            row = con.execute("SELECT count(*), sum(price), sum(size) FROM trades WHERE starts_with(symbol, ?)",
                              [f"L{c}_"]).fetchone()
            checks.expect(W, f"DuckDB live feed handler {c}", tuple(int(x) for x in row), _want(ts)[:3])
        return out
    finally:
        con.close()


def _chdb(work: pathlib.Path, tables, ch=None) -> dict:
    """`ch`: the workload's open chDB session, when it has one (chDB's embedded server
    takes one directory per process, so the feed's table goes beside the others)."""
    from .ticks import _Ch

    own = ch is None
    if own:
        d = work / "chdb-feed"
        d.mkdir(parents=True, exist_ok=True)
        ch = _Ch(d)
    try:
        ch.sess.query("CREATE TABLE feed (symbol LowCardinality(String), ts DateTime64(9, 'UTC'), price Int64, "
                      f"size Int64, side Int8, trade_id Int64) ENGINE = MergeTree ORDER BY (symbol, ts) {_Ch.SETTINGS}")

        def send_of(c: int):
            def send(t: pa.Table) -> None:
                src = t.set_column(0, "symbol", t.column("symbol").cast(pa.string()))
                src = src.set_column(1, "ts", src.column("ts").cast(pa.int64()))  # noqa: F841
                ch.sess.query("INSERT INTO feed SELECT symbol, fromUnixTimestamp64Nano(ts), price, size, side, "
                              "trade_id FROM Python(src)")
            return send

        out = _drive(len(tables), send_of, tables, parallel=False)
        for c, ts in enumerate(tables):
            got = ch.q(f"SELECT count(), sum(price), sum(size) FROM feed WHERE startsWith(symbol, 'L{c}_')")
            row = tuple(int(got.column(i)[0].as_py()) for i in range(3))
            checks.expect(W, f"chDB live feed handler {c}", row, _want(ts)[:3])
        return out
    finally:
        ch.sess.query("DROP TABLE IF EXISTS feed")
        if own:
            ch.close()


def run(P: dict, *, binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, ch=None) -> dict:
    """Every system in turn; one that fails to run is reported with its error (a wrong
    answer, `checks.Mismatch`, still stops the run)."""
    clients, nsym, per, reqs = P["tf_clients"], P["tf_symbols"], P["tf_per"], P["tf_requests"]
    log(f"ticks: live feed: building {clients} x {reqs} requests of {per} x {nsym} trades")
    tables = [[_request(c, r, nsym, per) for r in range(reqs)] for c in range(clients)]
    out: dict = {"handlers": clients, "symbols_per_handler": nsym, "trades_per_symbol": per,
                 "requests_per_handler": reqs, "trades_per_request": nsym * per}
    for name, fn in (("FastK", lambda: _fastk(binary, work, logs, tables, nsym)),
                     ("DuckDB", lambda: _duck(work, tables)),
                     ("chDB", lambda: _chdb(work, tables, ch))):
        log(f"ticks: live feed into {name}")
        try:
            out[name] = fn()
        except ImportError as e:
            out[name] = {"error": f"not installed: {e}"}
        except checks.Mismatch:
            raise
        except Exception as e:  # noqa: BLE001 - reported in the results and the table
            log(f"ticks: live feed into {name} failed: {e!r}")
            out[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        finally:
            for d in ("fastk-feed", "duck-feed", "chdb-feed"):
                shutil.rmtree(work / d, ignore_errors=True)
    return out
