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

The same layouts answer distributed SQL (`cluster.sql = "distributed"` with 2 and 3
nodes): an aggregate per symbol over every symbol, asked of the first node, and the
same query on one DuckDB process holding the same bars in a native table. Measured:
the median time, the bytes received on the loopback interface per query (every
process of the host: the client's answer and the nodes' exchanges), and the stages
each node's worker ran; every answer is checked against one node's, value by value.

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
# The distributed SQL question of the shards workload: an aggregate per symbol over every
# symbol, asked of the first node (with 2 and 3 nodes, cluster.sql = "distributed").
SQL_AGG = ("SELECT symbol, count(*) AS n, sum(volume) AS v, min(low) AS lo, max(high) AS hi, "
           "avg(close) AS c FROM kline GROUP BY symbol ORDER BY symbol")
LAYOUTS = (1, 2, 3)
PULL_THREADS = 6


def params(q: bool) -> dict:
    return dict(shard_symbols=6 if q else 100, shard_bars=(30 if q else 365) * 1440, shard_reps=3 if q else 5)


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
            env = {} if k == 1 else {"FASTK__CLUSTER__SHARD_MAP": json.dumps(shard),
                                     "FASTK__CLUSTER__SQL": "distributed"}
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
        out["sql"] = _sql(nodes, tables, reps)
        out["checked"] = checks.COUNTS.get("shards", 0)
        out["checked_how"] = ("every answer of every rep (the untimed first round included) against one node's "
                              "first answer: row count and sums of ts, open, close, volume; with 2 and 3 nodes, "
                              "endpoints must be located on the other nodes; the SQL aggregate of every layout and "
                              "DuckDB's against one node's, value by value (floats to 1e-9 relative)")
        return out
    finally:
        for ns in nodes.values():
            for node in ns:
                node.stop()
        shutil.rmtree(work, ignore_errors=True)


def _lo_bytes() -> int:
    """Bytes received on the loopback interface so far (every process of the host)."""
    for line in pathlib.Path("/proc/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[0])
    return 0


def _worker_tasks(node: Restarted) -> int:
    hc = HttpClient(node.http)
    try:
        body = hc.request("GET", "/metrics")
    finally:
        hc.conn.close()
    for line in body.decode().splitlines():
        if line.startswith("fastk_sql_worker_tasks_total "):
            return int(line.split()[1])
    return 0


def _sql_rows(node: Restarted) -> list:
    hc = HttpClient(node.http)
    try:
        return hc.json("POST", "/v1/sql", {"query": SQL_AGG})["rows"]
    finally:
        hc.conn.close()


def _same(got: list, want: list) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            if isinstance(a, float) or isinstance(b, float):
                if abs(float(a) - float(b)) > 1e-9 * max(1.0, abs(float(b))):
                    return False
            elif a != b:
                return False
    return True


def _sql(nodes: dict, tables: dict, reps: int) -> dict:
    """The aggregate per symbol on 1, 2 and 3 nodes (asked of the first), and on one
    DuckDB process holding the same bars in a native table: median time, loopback
    bytes per query, and the stages each node's worker ran."""
    import duckdb

    out: dict = {"query": SQL_AGG, "layouts": {}}
    want = _sql_rows(nodes[1][0])
    checks.expect("shards", "SQL aggregate, 1 node (groups)", len(want), len(tables))
    for k in LAYOUTS:
        times, lo = [], []
        tasks0 = [_worker_tasks(n) for n in nodes[k]]
        for rep in range(reps + 1):
            b0, t0 = _lo_bytes(), time.perf_counter()
            got = _sql_rows(nodes[k][0])
            dt, db = time.perf_counter() - t0, _lo_bytes() - b0
            checks.expect("shards", f"SQL aggregate, {k} node(s)", _same(got, want), True)
            if rep > 0:
                times.append(dt)
                lo.append(db)
        tasks = [_worker_tasks(n) - t for n, t in zip(nodes[k], tasks0)]
        out["layouts"][k] = {"median_ms": statistics.median(times) * 1e3, "best_ms": min(times) * 1e3,
                             "loopback_bytes": statistics.median(lo),
                             "worker_tasks_per_query": [t / (reps + 1) for t in tasks]}
        log(f"  SQL aggregate, {k} node(s): {statistics.median(times) * 1e3:.1f} ms, "
            f"{statistics.median(lo) / 1e3:.1f} kB on loopback, stages per node {tasks}")
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    for i, (sym, t) in enumerate(tables.items()):
        tt = t.append_column("symbol", pa.array([sym] * t.num_rows))
        con.register("src", tt)
        # FastK's `kline` table divides by the scales the bars were registered with
        # (price_scale 100, volume_scale 1): DuckDB holds the same values.
        scaled = ("SELECT symbol, ts, open / 100.0 AS open, high / 100.0 AS high, low / 100.0 AS low, "
                  "close / 100.0 AS close, volume::DOUBLE AS volume FROM src")
        if i == 0:
            con.execute(f"CREATE TABLE kline AS {scaled}")
        else:
            con.execute(f"INSERT INTO kline {scaled}")
        con.unregister("src")
    times = []
    for rep in range(reps + 1):
        t0 = time.perf_counter()
        got = [list(r) for r in con.execute(SQL_AGG).fetchall()]
        dt = time.perf_counter() - t0
        checks.expect("shards", "SQL aggregate, DuckDB", _same(got, want), True)
        if rep > 0:
            times.append(dt)
    out["duckdb"] = {"median_ms": statistics.median(times) * 1e3, "best_ms": min(times) * 1e3}
    log(f"  SQL aggregate, DuckDB: {statistics.median(times) * 1e3:.1f} ms")
    con.close()
    return out
