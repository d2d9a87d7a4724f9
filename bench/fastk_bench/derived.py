"""The `derived` workload: what derived series (docs/derived.md) save a reader and cost
a writer, side by side with DuckDB tables of precomputed bars.

Years of 1m bars of one symbol are loaded into FastK (DoPut) and into DuckDB (one
table). FastK gets three derive rules (1m to 5m, 1h and 1d) and waits until the
background pass has materialized them; DuckDB gets `bars_1h` and `bars_1d` made with
`CREATE TABLE ... AS SELECT` (arg_min open, max high, min low, arg_max close, sum
volume per bucket), as a practitioner would precompute them. Timed (median of the
reps after a warm-up, one connection each): the whole 1h and 1d series read from the
derived series (Flight), from the resample on read of the base (Flight `resample`), and
from DuckDB's tables (`SELECT * ... ORDER BY ts` into Arrow). Checked: the three answers
of each timeframe are the same bars (count and the sums of every column; FastK's two
answers compared column by column).

The one-bar feed: single-bar HTTP writes to a symbol that three rules derive from and to
one that no rule names, in alternating blocks; writes per second of each.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import statistics
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

from . import checks
from .dataset import walk_bars
from .feeds import Restarted
from .systems import HttpClient
from .workloads import log

WORKLOADS = ("derived",)
COLS = ("ts", "open", "high", "low", "close", "volume")
BUCKET_MS = {"1h": 3_600_000, "1d": 86_400_000}


def params(q: bool) -> dict:
    return dict(der_days=90 if q else 3650, der_reps=3 if q else 7, der_feed_blocks=4 if q else 10,
                der_feed_block=50 if q else 200)


def digest(t: pa.Table) -> tuple:
    """Row count and the sums of every column: what each timed answer must match."""
    return (t.num_rows, *(int(pc.sum(t.column(c).cast(pa.int64())).as_py() or 0) for c in COLS))


def _bars_only(t: pa.Table) -> pa.Table:
    return t.select(list(COLS))


def _put(c: flight.FlightClient, sym: str, t: pa.Table) -> None:
    w, r = c.do_put(flight.FlightDescriptor.for_path("kline", sym, "1m"), t.schema)
    w.write_table(t, max_chunksize=65_536)
    w.done_writing()
    r.read()
    w.close()


def _register(hc: HttpClient, sym: str) -> None:
    hc.request("POST", "/v1/kline/series", json.dumps({"symbol": sym, "timeframe": "1m", "price_scale": 100,
                                                       "volume_scale": 1}).encode())


def _feed(hc: HttpClient, syms: dict[str, int], blocks: int, block: int) -> dict[str, float]:
    """Single-bar writes, `block` at a time to each symbol in turn; writes per second."""
    spent = {s: 0.0 for s in syms}
    done = {s: 0 for s in syms}
    for _ in range(blocks):
        for s in syms:
            t0 = time.perf_counter()
            for _ in range(block):
                ts = syms[s]
                syms[s] += 60_000
                bar = {"ts": ts, "open": 100, "high": 110, "low": 90, "close": 105, "volume": 3}
                hc.request("POST", f"/v1/kline/{s}/1m/records", json.dumps({"records": [bar]}).encode())
            spent[s] += time.perf_counter() - t0
            done[s] += block
    return {s: done[s] / spent[s] for s in syms}


def _fastk(binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, t: pa.Table, reps: int,
           blocks: int, block: int) -> dict:
    node = Restarted(binary, work / "fastk", logs / "fastk-derived.log", 300)
    try:
        hc = HttpClient(node.http)
        for s in ("DV000", "FEEDR", "FEEDP"):
            _register(hc, s)
        c = flight.connect(f"grpc://{node.flight}")
        t0 = time.perf_counter()
        _put(c, "DV000", t)
        load_s = time.perf_counter() - t0
        for tf in ("5m", "1h", "1d"):
            hc.request("POST", "/v1/kline/derive", json.dumps({"from_timeframe": "1m", "timeframe": tf,
                                                               "symbols": ["DV000", "FEEDR"]}).encode())
        last = int(pc.max(t.column("ts").cast(pa.int64())).as_py())
        t0 = time.perf_counter()
        for tf in ("1h", "1d"):
            want = last - last % BUCKET_MS[tf]
            while True:
                meta = json.loads(hc.request("GET", f"/v1/kline/DV000/{tf}"))
                if meta.get("materialized_through_ts") == want:
                    break
                if time.perf_counter() - t0 > 600:
                    raise RuntimeError(f"derived {tf} not materialized after 600 s: {meta}")
                time.sleep(0.1)
        materialize_s = time.perf_counter() - t0
        times: dict[str, list[float]] = {}
        answers: dict[str, tuple] = {}
        for tf in ("1h", "1d"):
            tickets = {"derived": {"kind": "kline", "symbol": "DV000", "timeframe": tf},
                       "resample": {"kind": "kline", "symbol": "DV000", "timeframe": "1m",
                                    "resample": {"timeframe": tf}}}
            got: dict[str, pa.Table] = {}
            for rep in range(reps + 1):
                for how, ticket in tickets.items():
                    t0 = time.perf_counter()
                    table = c.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
                    dt = time.perf_counter() - t0
                    got[how] = _bars_only(table)
                    if rep > 0:
                        times.setdefault(f"{how}_{tf}", []).append(dt)
            checks.expect("derived", f"FastK derived {tf} vs resample on read", got["derived"].equals(
                got["resample"]), True)
            answers[tf] = digest(got["derived"])
        rates = _feed(hc, {"FEEDR": 1_704_067_200_000, "FEEDP": 1_704_067_200_000}, blocks, block)
        c.close()
        hc.conn.close()
        return {"load_s": load_s, "materialize_s": materialize_s, "answers": answers,
                "read_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
                "feed_writes_per_s": {"three_rules": rates["FEEDR"], "no_rule": rates["FEEDP"]}}
    finally:
        node.stop()


def _duckdb(t: pa.Table, reps: int, answers: dict) -> dict:
    import duckdb

    con = duckdb.connect()
    con.register("src", t.set_column(0, "ts", t.column("ts").cast(pa.int64())))
    con.execute("CREATE TABLE bars AS SELECT * FROM src")
    made = {}
    for tf, ms in BUCKET_MS.items():
        t0 = time.perf_counter()
        con.execute(f"CREATE TABLE bars_{tf} AS SELECT ts - ts % {ms} AS ts, arg_min(open, ts) AS open, "
                    f"max(high) AS high, min(low) AS low, arg_max(close, ts) AS close, sum(volume)::BIGINT AS volume "
                    f"FROM bars GROUP BY 1")
        made[tf] = time.perf_counter() - t0
    times: dict[str, list[float]] = {}
    for tf in BUCKET_MS:
        for rep in range(reps + 1):
            t0 = time.perf_counter()
            got = con.sql(f"SELECT * FROM bars_{tf} ORDER BY ts").to_arrow_table()
            dt = time.perf_counter() - t0
            checks.expect("derived", f"DuckDB bars_{tf}", digest(got), answers[tf])
            if rep > 0:
                times.setdefault(tf, []).append(dt)
    return {"precompute_s": made, "read_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
            "version": duckdb.__version__}


def run(results: dict, P: dict, *, binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path) -> dict:
    days, reps = P["der_days"], P["der_reps"]
    t = walk_bars(days * 1440, 4242)
    out: dict = {"days": days, "bars": t.num_rows, "reps": reps,
                 "how": (f"one symbol x {t.num_rows:,} 1m bars ({days} days); FastK: rules 1m to 5m, 1h and 1d, "
                         f"read once materialized, against Flight resample on read of the base; DuckDB: tables "
                         f"bars_1h and bars_1d precomputed by CREATE TABLE AS SELECT, read with SELECT * ORDER BY "
                         f"ts into Arrow. Median of {reps} reps after a warm-up; every answer checked. Feed: "
                         f"{P['der_feed_blocks']} x {P['der_feed_block']} single-bar HTTP writes to a symbol the "
                         f"three rules derive from and to one no rule names, alternating.")}
    work.mkdir(parents=True, exist_ok=True)
    try:
        log("derived: FastK")
        out["FastK"] = _fastk(binary, work, logs, t, reps, P["der_feed_blocks"], P["der_feed_block"])
        log("derived: DuckDB")
        try:
            out["DuckDB"] = _duckdb(t, reps, out["FastK"]["answers"])
        except ImportError as e:
            results.setdefault("skipped", {})["DuckDB derived"] = f"duckdb not installed: {e}"
        out["checked"] = checks.COUNTS.get("derived", 0)
        os.sync()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
