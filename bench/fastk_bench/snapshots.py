"""The `snapshots` workload: what a named snapshot costs after a year of corrections,
and what reading through it costs (docs/research.md), side by side with ArcticDB's
snapshots, which keep versions the same way.

The same symbols (a year of 1m bars each) are loaded into FastK (DoPut; sealed months
are written compressed and packed) and into ArcticDB (LMDB, one symbol each). Both take
a snapshot `start` of everything. Then a year of corrections: for every symbol and
every month, one day of bars is written again with each close moved by one tick
(FastK: a DoPut of the day, then `POST /v1/admin/compact`; ArcticDB: `update` of the
day). Measured: the bytes the snapshot keeps that the live data no longer needs
(FastK: `snapshot_only_bytes` of `/inventory`; ArcticDB: the library's growth on disk
over the corrections, since every version and the snapshot keep their segments), as a
share of the live data; and a whole-year read of every symbol through the snapshot
against the live read (median of the reps). Checked: every timed read of the snapshot
equals the data as loaded, every live read the corrected data (row count and sums of
ts, open, close, volume).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import statistics
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from . import checks
from .dataset import bars_digest, walk_bars
from .feeds import Restarted
from .systems import HttpClient, du
from .workloads import log

WORKLOADS = ("snapshots",)


def params(q: bool) -> dict:
    return dict(snap_symbols=2 if q else 8, snap_days=60 if q else 365, snap_reps=3 if q else 7)


def _corrections(t: pa.Table, days: int) -> list[tuple[int, int]]:
    """Row ranges of the corrected days: the 15th day of every 30-day stretch."""
    return [(d * 1440, (d + 1) * 1440) for d in range(14, days, 30)]


def _corrected(t: pa.Table, ranges: list[tuple[int, int]]) -> pa.Table:
    close = t.column("close").to_numpy().copy()
    for a, b in ranges:
        close[a:b] += 1
    return t.set_column(t.schema.get_field_index("close"), "close", pa.array(close))


def _put(c: flight.FlightClient, sym: str, t: pa.Table) -> None:
    w, r = c.do_put(flight.FlightDescriptor.for_path("kline", sym, "1m"), t.schema)
    w.write_table(t, max_chunksize=65_536)
    w.done_writing()
    r.read()
    w.close()


def _fastk(binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, syms: list[str], tables: dict,
           corrected: dict, ranges: list, reps: int) -> dict:
    node = Restarted(binary, work / "fastk", logs / "fastk-snapshots.log", 300)
    try:
        hc = HttpClient(node.http)
        for s in syms:
            hc.request("POST", "/v1/kline/series", json.dumps({"symbol": s, "timeframe": "1m", "price_scale": 100,
                                                               "volume_scale": 1}).encode())
        c = flight.connect(f"grpc://{node.flight}")
        for s in syms:
            _put(c, s, tables[s])
        hc.request("POST", "/v1/admin/compact", b"{}")
        live_before = json.loads(hc.request("GET", "/inventory?partitions=false"))["total_bytes"]
        t0 = time.perf_counter()
        hc.request("POST", "/v1/snapshots", json.dumps({"name": "start"}).encode())
        create_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        for s in syms:
            for a, b in ranges:
                _put(c, s, corrected[s].slice(a, b - a))
        hc.request("POST", "/v1/admin/compact", b"{}")
        rewrite_s = time.perf_counter() - t0
        inv = json.loads(hc.request("GET", "/inventory?partitions=false"))
        times: dict[str, list[float]] = {"snapshot": [], "live": []}
        want = {"snapshot": bars_digest(pa.concat_tables([tables[s] for s in syms])),
                "live": bars_digest(pa.concat_tables([corrected[s] for s in syms]))}
        for rep in range(reps + 1):
            for which in ("snapshot", "live"):
                cmd = {"kind": "kline", "symbols": "*", "timeframe": "1m"}
                if which == "snapshot":
                    cmd["snapshot"] = "start"
                t0 = time.perf_counter()
                got = c.do_get(flight.Ticket(json.dumps(cmd).encode())).read_all()
                dt = time.perf_counter() - t0
                checks.expect("snapshots", f"FastK {which} read", bars_digest(got.drop_columns(["symbol"])),
                              want[which])
                if rep > 0:
                    times[which].append(dt)
        c.close()
        hc.conn.close()
        return {"live_bytes_before": live_before, "live_bytes": inv["total_bytes"],
                "snapshot_only_bytes": inv["snapshot_only_bytes"], "disk_bytes": du(work / "fastk"),
                "create_ms": create_ms, "rewrite_s": rewrite_s,
                "read_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()}}
    finally:
        node.stop()


def _arctic(work: pathlib.Path, syms: list[str], tables: dict, corrected: dict, ranges: list,
            reps: int) -> dict:
    import arcticdb as adb
    import pandas as pd

    root = work / "arcticdb"
    root.mkdir(parents=True, exist_ok=True)
    lib = adb.Arctic(f"lmdb://{root}?map_size=16GB").get_library("k", create_if_missing=True)

    def frame(t: pa.Table):
        df = t.drop_columns(["ts"]).to_pandas()
        df.index = pd.DatetimeIndex(t.column("ts").cast(pa.int64()).to_numpy().astype("datetime64[ms]")
                                    .astype("datetime64[ns]"), name="ts")
        return df

    for s in syms:
        lib.write(s, frame(tables[s]))
    before = du(root)
    t0 = time.perf_counter()
    lib.snapshot("start")
    create_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    for s in syms:
        for a, b in ranges:
            lib.update(s, frame(corrected[s].slice(a, b - a)))
    rewrite_s = time.perf_counter() - t0
    after = du(root)

    def digest(df) -> tuple:
        ts = df.index.values.astype("datetime64[ms]").astype(np.int64)
        return (len(df), int(ts.sum()), int(df["open"].sum()), int(df["close"].sum()), int(df["volume"].sum()))

    want = {"snapshot": bars_digest(pa.concat_tables([tables[s] for s in syms])),
            "live": bars_digest(pa.concat_tables([corrected[s] for s in syms]))}
    times: dict[str, list[float]] = {"snapshot": [], "live": []}
    for rep in range(reps + 1):
        for which in ("snapshot", "live"):
            t0 = time.perf_counter()
            frames = [lib.read(s, as_of="start" if which == "snapshot" else None).data for s in syms]
            dt = time.perf_counter() - t0
            d = [digest(f) for f in frames]
            checks.expect("snapshots", f"ArcticDB {which} read", tuple(sum(x[i] for x in d) for i in range(5)),
                          want[which])
            if rep > 0:
                times[which].append(dt)
    return {"disk_before": before, "disk_after": after, "create_ms": create_ms, "rewrite_s": rewrite_s,
            "read_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()}, "version": adb.__version__}


def run(results: dict, P: dict, *, binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path) -> dict:
    n, days, reps = P["snap_symbols"], P["snap_days"], P["snap_reps"]
    syms = [f"SN{i:03d}" for i in range(n)]
    bars = days * 1440
    tables = {s: walk_bars(bars, 2000 + i, headroom=1) for i, s in enumerate(syms)}
    ranges = _corrections(tables[syms[0]], days)
    corrected = {s: _corrected(tables[s], ranges) for s in syms}
    out: dict = {"symbols": n, "bars_per_symbol": bars, "corrections_per_symbol": len(ranges), "reps": reps,
                 "how": (f"{n} symbols x {bars:,} 1m bars; a snapshot of everything; then one day in every 30 of "
                         f"each symbol written again with each close one tick higher ({len(ranges)} corrections "
                         f"per symbol; FastK: DoPut of the day, then admin compact; ArcticDB: update of the day). "
                         f"Kept: FastK's snapshot_only_bytes (/inventory), ArcticDB's growth on disk over the "
                         f"corrections. Reads: every symbol's whole year through the snapshot and live, median of "
                         f"{reps} reps after a warm-up, each answer checked.")}
    work.mkdir(parents=True, exist_ok=True)
    try:
        log("snapshots: FastK")
        out["FastK"] = _fastk(binary, work, logs, syms, tables, corrected, ranges, reps)
        log("snapshots: ArcticDB")
        try:
            out["ArcticDB"] = _arctic(work, syms, tables, corrected, ranges, reps)
        except ImportError as e:
            results.setdefault("skipped", {})["ArcticDB snapshots"] = f"arcticdb not installed: {e}"
        out["checked"] = checks.COUNTS.get("snapshots", 0)
        os.sync()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
