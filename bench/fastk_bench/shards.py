"""The `shards` workload: the loopback simulation of symbol-sharded nodes
(docs/scale-out.md, section 5), measuring what one machine can.

The same symbols (a year of 1m bars each) are served by one FastK node, and by 2 and
3 nodes sharing a shard map (`cluster.shard_map`, contiguous symbol ranges of equal
size). A client asks one node for the FlightInfo of the many-series read of every
symbol, then pulls every endpoint in parallel (each at its location: the owning
node), as a Flight client of a sharded store does; the same with a cross section
(`latest: 1`). Measured: the wall time of info plus pull (median of the reps,
interleaved across the layouts), rows and GB/s. Checked: each layout's pull equals
the single node's answer (row count and per-column sums) and every endpoint of
another node is located on it.

On this 2-core machine every node and the client share the same cores and loopback,
so more nodes cannot pull faster than one: what this measures is that the fan-out
and the located endpoints cost little (GetFlightInfo's extra round trip per node),
not the scaling, which needs one host per node. docs/benchmarks.md models it from
these figures.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.flight as flight

from . import checks, procs
from .dataset import bars_digest, walk_bars
from .feeds import Restarted
from .systems import HttpClient
from .workloads import log

WORKLOADS = ("shards",)
LAYOUTS = (1, 2, 3)
PULL_THREADS = 6


def params(q: bool) -> dict:
    return dict(shard_symbols=6 if q else 12, shard_bars=(30 if q else 365) * 1440, shard_reps=3 if q else 9)


def _symbols(n: int) -> list[str]:
    return [f"SH{i:03d}" for i in range(n)]


def _table(n_bars: int, i: int) -> pa.Table:
    return walk_bars(n_bars, 1000 + i)


def _load(node: Restarted, syms: list[str], tables: dict) -> None:
    hc = HttpClient(node.http)
    for s in syms:
        hc.request("POST", "/v1/kline/series", json.dumps({"symbol": s, "timeframe": "1m", "price_scale": 100,
                                                           "volume_scale": 1}).encode())
    c = flight.connect(f"grpc://{node.flight}")
    for s in syms:
        t = tables[s]
        w, r = c.do_put(flight.FlightDescriptor.for_path("kline", s, "1m"), t.schema)
        w.write_table(t, max_chunksize=65_536)
        w.done_writing()
        r.read()
        w.close()
    c.close()
    hc.conn.close()


def _pull(asked: str, cmd: dict) -> tuple[float, pa.Table, int]:
    """GetFlightInfo at `asked`, then every endpoint in parallel at its location."""
    t0 = time.perf_counter()
    c = flight.connect(f"grpc://{asked}")
    info = c.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(cmd).encode()))

    def one(e):
        cc = flight.connect(e.locations[0] if e.locations else f"grpc://{asked}")
        try:
            return cc.do_get(e.ticket).read_all()
        finally:
            cc.close()

    with ThreadPoolExecutor(PULL_THREADS) as ex:
        parts = list(ex.map(one, info.endpoints))
    s = time.perf_counter() - t0
    c.close()
    located = sum(1 for e in info.endpoints if e.locations)
    return s, pa.concat_tables([p.cast(parts[0].schema) for p in parts]), located


def run(results: dict, P: dict, *, binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path) -> dict:
    n, bars, reps = P["shard_symbols"], P["shard_bars"], P["shard_reps"]
    syms = _symbols(n)
    tables = {s: _table(bars, i) for i, s in enumerate(syms)}
    out: dict = {"symbols": n, "bars_per_symbol": bars, "rows": n * bars, "reps": reps, "layouts": {},
                 "how": (f"{n} symbols x {bars:,} 1m bars, served by 1, 2 and 3 FastK nodes on loopback "
                         f"(contiguous symbol ranges of equal size in cluster.shard_map). One read: "
                         f"GetFlightInfo of {{\"kind\": \"kline\", \"symbols\": \"*\", \"timeframe\": \"1m\"}} at "
                         f"the first node, then every endpoint pulled on {PULL_THREADS} threads at its location, "
                         f"read into pyarrow Tables; the cross section likewise with \"latest\": 1. Median of "
                         f"{reps} reps, layouts interleaved.")}
    nodes: dict[int, list[Restarted]] = {}
    try:
        for k in LAYOUTS:
            ports = [procs.free_port() for _ in range(k)]
            names = [chr(ord("a") + j) for j in range(k)]
            per = -(-n // k)
            shard = {"nodes": {nm: f"grpc://127.0.0.1:{p}" for nm, p in zip(names, ports)},
                     "ranges": [{"from": "" if j == 0 else syms[j * per], "node": names[j]} for j in range(k)]}
            env = {} if k == 1 else {"FASTK__CLUSTER__SHARD_MAP": json.dumps(shard)}
            nodes[k] = []
            for j in range(k):
                root = work / f"shards-{k}" / names[j]
                e = dict(env)
                if k > 1:
                    e["FASTK__CLUSTER__NODE"] = names[j]
                node = Restarted(binary, root, logs / f"fastk-shards-{k}-{names[j]}.log", 120, ports[j], e)
                nodes[k].append(node)
                _load(node, syms[j * per:(j + 1) * per], tables)
            log(f"shards: {k} node(s) loaded")
        os.sync()
        want = {}
        for name, cmd in (("every symbol, whole year", {"kind": "kline", "symbols": "*", "timeframe": "1m"}),
                          ("cross section (latest: 1)", {"kind": "kline", "symbols": "*", "timeframe": "1m",
                                                         "latest": 1})):
            times = {k: [] for k in LAYOUTS}
            for rep in range(reps + 1):
                for k in LAYOUTS:
                    s, t, located = _pull(nodes[k][0].flight, cmd)
                    d = bars_digest(t)
                    if k == 1 and rep == 0:
                        want[name] = d  # the reference: one node's first answer, its rows as generated
                        checks.expect("shards", f"1 node, {name} (rows)", d[0], n if "latest" in cmd else n * bars)
                    else:
                        checks.expect("shards", f"{k} node(s), {name}", d, want[name])
                    if k > 1 and located == 0:
                        raise AssertionError(f"{k} nodes, {name}: no endpoint located on another node")
                    if rep > 0:  # the first round warms every node
                        times[k].append(s)
                    rows, nbytes = t.num_rows, t.nbytes
            for k in LAYOUTS:
                med = statistics.median(times[k])
                out["layouts"].setdefault(name, {})[k] = {
                    "median_ms": med * 1e3, "best_ms": min(times[k]) * 1e3, "rows": rows,
                    "gb_s": nbytes / med / 1e9}
                log(f"  {name}, {k} node(s): {med * 1e3:.1f} ms ({nbytes / med / 1e9:.2f} GB/s)")
        out["checked"] = checks.COUNTS.get("shards", 0)
        out["checked_how"] = ("every answer of every rep (the untimed first round included) against one node's "
                              "first answer: row count and sums of ts, open, close, volume; with 2 and 3 nodes, "
                              "endpoints must be located on the other nodes")
        return out
    finally:
        for ns in nodes.values():
            for node in ns:
                node.stop()
        shutil.rmtree(work, ignore_errors=True)
