"""The feed workloads: what a market-data feed handler does to a store, write by write,
and what a store of very many series costs.

- `feed`: 2,000 kline 1m series; each write is ONE 1m bar of one series, POSTed to
  FastK's single-series write (`POST /v1/kline/{symbol}/1m/records`) by `wrk -t2 -c8`
  with a Lua script (`feed.lua`): each wrk thread owns every other series and cycles
  through them, so every series gets strictly increasing minutes. Each answer is
  durable (small writes go through the store-wide write-ahead log with group commit).
  One warm-up run, then the timed run; acknowledged writes/s, p50/p99 latency (wrk
  --latency) and non-2xx answers (must be 0). Peers in process, the same bars in the
  same pattern from 8 threads: SQLite (one file, journal_mode=WAL, synchronous=FULL,
  PRIMARY KEY (symbol, ts), one transaction per row; one shared connection behind a
  lock, and 8 connections with busy_timeout), DuckDB (one file, the same table, one
  transaction per row, a cursor per thread). Target: FastK at least 10,000 writes/s
  with p99 under 10 ms, above SQLite and at least 10x DuckDB. Checked: every series'
  row count against the requests wrk's threads made, and three series read back bar
  by bar; the peers' row counts against their acknowledged inserts.
- `feed_many`: the same 2,000 series; each write is one minute of all 2,000 bars as
  ONE many-series write, sequential: `POST /v1/kline/records` (JSON body built before
  the clock) and one Flight DoPut `["kline", "*", "1m"]` with a dictionary `symbol`
  column. Median and p99 latency (target: the median under 5 ms; the report gives
  the p99 under 5 ms its own verdict beside it), rows/s, and for FastK the log
  committer's apply and sync wait per write (its debug log). Peers: SQLite (one
  transaction of 2,000 rows, executemany), DuckDB (one transaction, INSERT .. SELECT
  from an Arrow table). Checked: every answer's counts, every series' rows, one series
  read back.
- `many_series`: N series (10,000; 1,000 quick; 4,000 when the disk has under 15 GB
  free) of one year of 1h bars each (8,760 rows): registration time (the batch
  endpoint `POST /v1/kline/series/many` when the server has it, else one request per
  series), load time two ways, each into a store of its own: one DoPut per series (the
  year is above `wal_direct_rows`, so it bypasses the log and writes chunk files) on 3
  client threads, and many-series DoPuts of 100 series each on 3 threads (through the
  log; also the time until the log is folded into chunk files). Then files and bytes
  on disk (counted under the data dir, and `/inventory?partitions=false` total_files,
  total_bytes) and the restart time (stop, start, until `/health` answers 200, page
  cache warm). Peer: DuckDB, one table, INSERT .. SELECT from Arrow slices of 500
  series, then CHECKPOINT (load time, file size). Checked: totals, one series' rows
  and values before and after the restart, DuckDB's counts.

Each workload starts its own FastK store (procs.FastK, as the other workloads) and
stops it; a failing system or check is recorded as a failed measurement and the run
goes on (`market.guarded`).
"""

from __future__ import annotations

import http.client
import gc
import json
import os
import pathlib
import re
import shutil
import sqlite3
import ssl
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from . import procs, timing
from .dataset import MINUTE_MS, TS_TYPE, ms
from .systems import HttpClient, du
from .workloads import _wrk_ms, log

WORKLOADS = ("feed", "feed_many", "many_series", "series_100k")

FASTK_HTTP = "FastK HTTP"
FASTK_FLIGHT = "FastK Flight"
SQLITE_SHARED = "SQLite (shared connection)"
SQLITE_CONNS = "SQLite (8 connections)"
DUCKDB = "DuckDB"

FEED_SERIES = 2_000
FEED_PREFIX = "FEED"
FEED_THREADS = 8  # the peers' writer threads, as wrk's connections
WRK_THREADS = 2
WRK_CONNECTIONS = 8
FEED_TARGET_WRITES_S = 10_000
FEED_TARGET_P99_MS = 10.0
FEED_TARGET_VS_DUCKDB = 10.0
FEED_MANY_TARGET_MS = 5.0
HOUR_MS = 3_600_000
YEAR_HOURS = 8_760  # 2023, not a leap year
MANY_PREFIX = "H"
MANY_THREADS = 3
MANY_SLICE = 100  # series per many-series DoPut
DUCK_SLICE = 500  # series per DuckDB INSERT
LUA = pathlib.Path(__file__).resolve().parent / "feed.lua"

BARS_DDL = ("CREATE TABLE bars (symbol VARCHAR NOT NULL, ts BIGINT NOT NULL, open BIGINT NOT NULL, "
            "high BIGINT NOT NULL, low BIGINT NOT NULL, close BIGINT NOT NULL, volume BIGINT NOT NULL, "
            "PRIMARY KEY (symbol, ts))")
INSERT = "INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)"


def params(q: bool) -> dict:
    """The feed workloads' parameters, recorded in results.json."""
    return dict(
        feed_s=2 if q else 10,
        feed_warmup_s=1 if q else 2,
        # 50 timed writes: their p99 is their slowest. 200 would make it a percentile,
        # but also a different workload: 200 minutes of unfolded rows per series (a
        # live feed folds after storage.fold_age_s, ten minutes), on which SQLite's
        # index grows to four times its cost (docs/benchmarks.md, feed_many).
        feed_many_minutes=10 if q else 50,
        feed_many_warmup=2,
        # Idle milliseconds before each write of feed_many, outside the clock (0: back
        # to back). A feed handler writes once a minute, to caches gone cold meanwhile;
        # FASTK_BENCH_FEED_MANY_GAP_MS=20 measures that (docs/benchmarks.md, night of
        # 2026-11-25).
        feed_many_gap_ms=float(os.environ.get("FASTK_BENCH_FEED_MANY_GAP_MS", 0)),
        many_series=1_000 if q else 10_000,
        scale_series=5_000 if q else 100_000,
        scale_hours=int(os.environ.get("FASTK_BENCH_SCALE_HOURS", 744)),
    )


def _err(e: BaseException) -> dict:
    return {"error": f"{type(e).__name__}: {str(e)[:400]}"}


def _attempt(out: dict, label: str, fn) -> None:
    try:
        out[label] = fn()
    except Exception as e:  # noqa: BLE001 - one failing system must not sink the workload
        log(f"  {label}: FAILED {type(e).__name__}: {e}")
        out[label] = _err(e)


def _lat(times: list[float]) -> dict:
    return {"n": len(times), "median_ms": statistics.median(times) * 1e3, "p50_ms": timing.pct(times, 50) * 1e3,
            "p90_ms": timing.pct(times, 90) * 1e3, "p99_ms": timing.pct(times, 99) * 1e3, "best_ms": min(times) * 1e3, "max_ms": max(times) * 1e3}


# --------------------------------------------------------------------------- bars


def feed_symbol(i: int) -> str:
    return f"{FEED_PREFIX}{i:04d}"


def bar(i, m):
    """Series i's bar at minute m: (open, high, low, close, volume), as feed.lua writes
    it; works on ints and on numpy arrays."""
    open_ = 100_000 + i * 10 + m % 100
    close = open_ + m % 7 - 3
    high = np.maximum(open_, close) + 5
    low = np.minimum(open_, close) - 5
    return open_, high, low, close, (i + m) % 1000


def _feed_rows(n: int, base: int, m: int) -> list[tuple]:
    """Every series' bar of minute m, as (symbol, ts, o, h, l, c, v) tuples of ints."""
    return [(feed_symbol(i), base + m * MINUTE_MS, *(int(x) for x in bar(i, m))) for i in range(n)]


def _minute_table(n: int, base: int, m: int, dictionary: bool) -> pa.Table:
    """Every series' bar of minute m as an Arrow table with a `symbol` column
    (a dictionary of utf8 for FastK, plain utf8 for DuckDB) and ts (timestamp[ms, UTC]
    for FastK, int64 for DuckDB)."""
    i = np.arange(n, dtype=np.int64)
    o, h, lo, c, v = bar(i, np.int64(m))
    names = pa.array([feed_symbol(k) for k in range(n)])
    ts = pa.array(np.full(n, base + m * MINUTE_MS, dtype=np.int64))
    if dictionary:
        sym = pa.DictionaryArray.from_arrays(pa.array(np.arange(n, dtype=np.int32)), names)
        ts = ts.cast(TS_TYPE)
    else:
        sym = names
    return pa.table({"symbol": sym, "ts": ts, "open": o, "high": h, "low": lo, "close": c, "volume": v})


# --------------------------------------------------------------------------- FastK helpers


def _call(hc: HttpClient, method: str, path: str, obj=None, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on `hc`'s keep-alive connection: (status, body), whatever the status."""
    if obj is not None:
        body = json.dumps(obj).encode()
    headers = {"content-type": "application/json"} if body is not None else {}
    try:
        hc.conn.request(method, path, body=body, headers=headers)
        r = hc.conn.getresponse()
        return r.status, r.read()
    except (http.client.HTTPException, OSError):
        hc.conn.close()
        raise


def register_kline(hc: HttpClient, symbols: list[str], timeframe: str, chunk: int = 100_000) -> dict:
    """Registers kline series (price_scale 100, volume_scale 1): `POST
    /v1/kline/series/many` (at most 100,000 series a request) in chunks of `chunk`
    series when the server has it (a 404 or 405 means it does not: then one `POST
    /v1/kline/series` per series, sequential on one keep-alive connection). Returns the
    method, seconds and counts."""
    entries = [{"symbol": s, "timeframe": timeframe, "price_scale": 100, "volume_scale": 1} for s in symbols]
    t = time.perf_counter()
    created = existing = 0
    # A probe of one series first: a server without the endpoint answers 404 or 405
    # (and may close the connection rather than drain a large body it refused).
    status, data = _call(hc, "POST", "/v1/kline/series/many", {"series": entries[:1]})
    if status in (404, 405):
        hc.conn.close()
        method = (f"one POST /v1/kline/series per series, sequential, one keep-alive connection "
                  f"(POST /v1/kline/series/many answered {status})")
        t = time.perf_counter()
        for e in entries:
            st, data = _call(hc, "POST", "/v1/kline/series", e)
            if st == 201:
                created += 1
            elif st == 200:
                existing += 1
            else:
                raise RuntimeError(f"POST /v1/kline/series {e['symbol']}: {st} {data[:300]!r}")
    else:
        i = 1
        while True:
            if status != 200:
                raise RuntimeError(f"POST /v1/kline/series/many: {status} {data[:300]!r}")
            ans = json.loads(data)
            created += ans.get("created", 0)
            existing += ans.get("existing", 0)
            if i >= len(entries):
                break
            part = entries[i:i + chunk]
            status, data = _call(hc, "POST", "/v1/kline/series/many", {"series": part})
            if status in (400, 413, 422) and chunk > 100:
                log(f"  /v1/kline/series/many refused {len(part)} series ({status} {data[:200]!r}); chunks of 100")
                hc.conn.close()
                chunk = 100
                status, data = _call(hc, "POST", "/v1/kline/series/many", {"series": entries[i:i + chunk]})
                part = entries[i:i + chunk]
            i += len(part)
        method = f"POST /v1/kline/series/many, {chunk:,} series a request (after a probe of one)"
    s = time.perf_counter() - t
    if created + existing != len(entries):
        raise AssertionError(f"registration answered created {created} + existing {existing}, "
                             f"expected {len(entries)} series")
    log(f"  registered {len(entries):,} {timeframe} series in {s:.2f} s ({method})")
    return {"method": method, "s": s, "series": len(entries), "created": created, "existing": existing,
            "batch": method.startswith("POST /v1/kline/series/many")}


def _inventory(hc: HttpClient, kind: str = "kline") -> dict:
    return hc.json("GET", f"/inventory?partitions=false&kind={kind}")


def _put(client: flight.FlightClient, path: tuple, table: pa.Table) -> dict:
    return json.loads(_put_raw(client, path, table))


def _put_raw(client: flight.FlightClient, path: tuple, table: pa.Table) -> bytes:
    """A DoPut up to its PutResult's bytes (parsed by the caller after the clock, as
    the HTTP way's answer is)."""
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(*path), table.schema)
    writer.write_table(table, max_chunksize=65_536)
    writer.done_writing()
    reply = reader.read().to_pybytes()
    writer.close()
    return reply


def _records(hc: HttpClient, symbol: str, timeframe: str, start: int, end: int) -> list[dict]:
    out = []
    cursor = start
    while cursor is not None:
        r = hc.json("GET", f"/v1/kline/{symbol}/{timeframe}/records?start_ts={cursor}&end_ts={end}&limit=100000")
        out += r["records"]
        cursor = r["next_start_ts"]
    return out


class Restarted:
    """A fastk started on a root (again, or new), on fixed free loopback ports (the same
    environment as procs.FastK, without the Unix socket; `flight_port` and `env_extra`
    when given, as a node of a shard map needs), timed from the spawn until `GET
    /health` answers 200 (polled every 5 ms on a fresh connection). With `ssl_context`
    (a server started with `[tls]`, as the `tls` workload does) `/health` is asked over
    HTTPS with that context, so a server that is up but not serving that certificate
    is never taken as ready."""

    def __init__(self, binary: pathlib.Path, root: pathlib.Path, log_path: pathlib.Path, timeout_s: float = 900,
                 flight_port: int | None = None, env_extra: dict | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        self.root = root
        fp = flight_port or procs.free_port()
        hp = procs.free_port()
        while hp == fp:
            hp = procs.free_port()
        self.http, self.flight = f"127.0.0.1:{hp}", f"127.0.0.1:{fp}"
        env = dict(os.environ)
        env.update(FASTK__STORAGE__ROOT=str(root), FASTK__HTTP__ADDR=self.http, FASTK__FLIGHT__ADDR=self.flight,
                   FASTK__LOG__LEVEL=os.environ.get("FASTK_BENCH_LOG", "warn,fastk::server=info"))
        env.pop("FASTK__FLIGHT__UNIX_SOCKET", None)
        env.update(env_extra or {})
        t = time.perf_counter()
        self.proc = procs.start_process([str(binary)], log_path, env)
        deadline = t + timeout_s
        self.health = None
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastk exited with {self.proc.returncode} on restart: "
                                   f"{log_path.read_text(errors='replace')[-1000:]}")
            try:
                if ssl_context is None:
                    c = http.client.HTTPConnection("127.0.0.1", hp, timeout=5)
                else:
                    c = http.client.HTTPSConnection("127.0.0.1", hp, timeout=5, context=ssl_context)
                c.request("GET", "/health")
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200:
                    self.health = json.loads(body)
                    break
            except OSError:
                pass
            time.sleep(0.005)
        self.ready_s = time.perf_counter() - t
        if self.health is None:
            raise RuntimeError(f"/health did not answer 200 within {timeout_s:.0f} s of the restart")

    def stop(self) -> None:
        procs._terminate(self.proc)


def fsync_probe(d: pathlib.Path, n: int = 300) -> dict:
    """The work volume's fdatasync latency (append 100 B, fdatasync; `n` times): what one
    durable commit costs at least here, for every system alike."""
    d.mkdir(parents=True, exist_ok=True)
    path = d / "fsync-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 100)
            t = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return {"n": n, "p50_ms": timing.pct(times, 50) * 1e3, "p99_ms": timing.pct(times, 99) * 1e3}


def _files(root: pathlib.Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


# --------------------------------------------------------------------------- feed


def run_wrk(url: str, n: int, base: int, seconds: int) -> dict:
    """wrk with feed.lua: one 1m bar per request, each wrk thread on its own series."""
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "10s",
            "-s", str(LUA), url, "--", str(n), str(base), str(WRK_THREADS), FEED_PREFIX]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    text = p.stdout
    if p.returncode != 0 or "requests in" not in text:
        raise RuntimeError(f"wrk failed ({p.returncode}): {(p.stderr or text)[-500:]}")
    out: dict = {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS, "seconds": seconds}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["requests_per_s"] = float(m.group(1)) if m else None
    for pc in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pc}%\s+(\S+)", text, re.M)
        out[f"p{pc}_ms"] = _wrk_ms(m.group(1)) if m else None
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        out["mean_ms"], out["max_ms"] = _wrk_ms(m.group(1)), _wrk_ms(m.group(3))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    out["requests"] = int(m.group(1)) if m else None
    out["generated"] = {int(t): int(c) for t, c in re.findall(r"^FEED_THREAD (\d+) (\d+)", text, re.M)}
    if len(out["generated"]) != WRK_THREADS:
        raise RuntimeError(f"wrk's done() did not report every thread's counter: {text[-500:]}")
    out["text"] = text
    return out


def _owned(i: int, nt: int, n: int, generated: dict) -> int:
    """How many requests of the wrk run with per-thread counters `generated` wrote
    series i (thread i % nt, position i // nt in its cycle)."""
    t, j = i % nt, i // nt
    per = len(range(t, n, nt))
    c = generated[t]
    return max(0, (c - j + per - 1) // per)


def _feed_fastk(binary, root, log_path, n: int, seconds: int, warm_s: int, bases: tuple[int, int]) -> dict:
    server = procs.FastK(binary, root, log_path, unix_socket=False)
    try:
        hc = HttpClient(server.http)
        reg = register_kline(hc, [feed_symbol(i) for i in range(n)], "1m")
        url = f"http://{server.http}"
        log(f"feed: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}, warm-up {warm_s} s")
        warm = run_wrk(url, n, bases[0], warm_s)
        log(f"  warm-up: {warm['requests_per_s']:,.0f} writes/s, non-2xx {warm['non_2xx']}")
        log(f"feed: timed run, {seconds} s")
        run = run_wrk(url, n, bases[1], seconds)
        time.sleep(0.5)  # a write still in flight when wrk stopped settles before the count
        log(f"  FastK HTTP: {run['requests_per_s']:,.0f} writes/s, p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, "
            f"non-2xx {run['non_2xx']}, socket errors {run['socket_errors']}")
        inv = _inventory(hc)
        out = {"writes_per_s": run["requests_per_s"], "p50_ms": run["p50_ms"], "p75_ms": run["p75_ms"],
               "p90_ms": run["p90_ms"], "p99_ms": run["p99_ms"], "mean_ms": run.get("mean_ms"),
               "max_ms": run.get("max_ms"), "writes": run["requests"], "seconds": seconds,
               "non_2xx": run["non_2xx"] + warm["non_2xx"], "socket_errors": run["socket_errors"] + warm["socket_errors"],
               "warmup": {k: warm[k] for k in ("requests", "requests_per_s", "p99_ms", "non_2xx", "generated")},
               "generated": run["generated"], "registration": reg, "log": inv.get("log"),
               "total_files": inv.get("total_files"), "wrk_output": run["text"]}
        try:
            out["checked"] = _feed_check(hc, inv, n, warm, run, bases)
            log(f"  checked: {out['checked']}")
        except AssertionError as e:
            log(f"  FastK feed check FAILED: {e}")
            out["error"] = f"check failed: {e}"
        return out
    finally:
        server.stop()


def _feed_check(hc: HttpClient, inv: dict, n: int, warm: dict, run: dict, bases: tuple[int, int]) -> str:
    """Every series' rows against the requests wrk's threads generated (a request still in
    flight when wrk stopped may or may not have been written: at most one per
    connection and run; and wrk 4.1 generates thread 0's first request, series 0 at
    minute 0, to check the script and never sends it), three series read back bar by
    bar, no non-2xx answer."""
    assert warm["non_2xx"] == 0 and run["non_2xx"] == 0, \
        f"non-2xx answers: warm-up {warm['non_2xx']}, timed {run['non_2xx']}"
    rows = {s["symbol"]: s["rows"] for s in inv["series"] if s["timeframe"] == "1m"}
    assert len(rows) == n, f"{len(rows)} series in the inventory, expected {n}"
    short = 0
    total = 0
    for i in range(n):
        want = _owned(i, WRK_THREADS, n, warm["generated"]) + _owned(i, WRK_THREADS, n, run["generated"])
        got = rows[feed_symbol(i)]
        slack = 2 + (2 if i == 0 else 0)
        assert want - slack <= got <= want, f"{feed_symbol(i)}: {got} rows, wrk's threads generated {want}"
        short += want - got
        total += got
    assert short <= 2 * WRK_CONNECTIONS + 2, \
        f"{short} generated requests not stored (at most {2 * WRK_CONNECTIONS + 2})"
    acked = warm["requests"] + run["requests"]
    assert total >= acked, f"{total} rows stored, {acked} writes acknowledged"
    for i in (0, n // 2 + 1, n - 1):
        s = feed_symbol(i)
        recs = _records(hc, s, "1m", bases[0], bases[1] + 40 * 86_400_000)
        got_ts = np.array([r["ts"] for r in recs], dtype=np.int64)
        assert len(recs) == rows[s], f"{s}: read {len(recs)} bars, inventory says {rows[s]}"
        assert np.all(np.diff(got_ts) > 0), f"{s}: ts not strictly increasing"
        for r in recs:
            base = bases[1] if r["ts"] >= bases[1] else bases[0]
            m = (r["ts"] - base) // MINUTE_MS
            want = tuple(int(x) for x in bar(i, m))
            assert (r["ts"] - base) % MINUTE_MS == 0 and (r["open"], r["high"], r["low"], r["close"],
                                                          r["volume"]) == want, f"{s} at {r['ts']}: {r} != {want}"
        nw = int(np.count_nonzero(got_ts < bases[1]))
        for part, base in ((got_ts[:nw], bases[0]), (got_ts[nw:], bases[1])):
            m0 = int(part[0] - base) // MINUTE_MS if len(part) else 0
            assert m0 == 0 or (i == 0 and m0 == 1), f"{s}: the run's first minute is {m0}"
            assert np.array_equal(part, base + (m0 + np.arange(len(part))) * MINUTE_MS), f"{s}: a minute is missing"
    return (f"{total:,} rows in {n:,} series = {acked:,} acknowledged writes + {total - acked} written while wrk "
            f"stopped ({short} requests generated but not stored); 3 series read back bar by bar")


class _SqliteFeed:
    """SQLite, one file in WAL mode with synchronous=FULL, one transaction per insert
    (BEGIN IMMEDIATE .. COMMIT). `shared`: one connection for all threads behind a lock;
    else one connection per thread with busy_timeout 30 s."""

    def __init__(self, path: pathlib.Path, threads: int, shared: bool):
        self.path, self.shared = path, shared
        con = self._connect()
        con.execute(BARS_DDL)
        con.close()
        self.lock = threading.Lock()
        self.cons = [self._connect()] * threads if shared else [self._connect() for _ in range(threads)]

    def _connect(self):
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    def insert(self, t: int, row: tuple) -> None:
        con = self.cons[t]
        if self.shared:
            with self.lock:
                self._txn(con, row)
        else:
            self._txn(con, row)

    @staticmethod
    def _txn(con, row):
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(INSERT, row)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def insert_many(self, rows: list[tuple]) -> None:
        con = self.cons[0]
        con.execute("BEGIN IMMEDIATE")
        con.executemany(INSERT, rows)
        con.execute("COMMIT")

    def count(self) -> int:
        return self.cons[0].execute("SELECT count(*) FROM bars").fetchone()[0]

    def select(self, symbol: str) -> list[tuple]:
        return self.cons[0].execute("SELECT ts, open, high, low, close, volume FROM bars WHERE symbol = ? "
                                    "ORDER BY ts", (symbol,)).fetchall()

    def close(self):
        for c in set(self.cons):
            c.close()


class _DuckFeed:
    """DuckDB, one database file, the same table; one transaction per insert (autocommit),
    a cursor (connection) per thread."""

    def __init__(self, path: pathlib.Path, threads: int):
        import duckdb

        self.con = duckdb.connect(str(path))
        self.con.execute(BARS_DDL)
        self.cons = [self.con.cursor() for _ in range(threads)]

    def insert(self, t: int, row: tuple) -> None:
        self.cons[t].execute(INSERT, row)

    def insert_arrow(self, table: pa.Table) -> None:
        con = self.con
        con.register("minute", table)
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO bars SELECT * FROM minute")
        con.execute("COMMIT")
        con.unregister("minute")

    def count(self) -> int:
        return self.con.execute("SELECT count(*) FROM bars").fetchone()[0]

    def select(self, symbol: str) -> list[tuple]:
        return [tuple(r) for r in self.con.execute("SELECT ts, open, high, low, close, volume FROM bars "
                                                   "WHERE symbol = ? ORDER BY ts", [symbol]).fetchall()]

    def close(self):
        for c in self.cons:
            c.close()
        self.con.close()


def _drive(insert, n: int, threads: int, base: int, seconds: float) -> dict:
    """`threads` threads insert bars until `seconds` have passed, thread t cycling through
    the series i with i % threads == t (strictly increasing minutes per series)."""
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    start = threading.Barrier(threads + 1)
    clock = {}

    def work(t: int) -> None:
        mine = list(range(t, n, threads))
        per = len(mine)
        mine_sym = [feed_symbol(i) for i in mine]
        out = lat[t]
        c = 0
        start.wait()
        deadline = clock["deadline"]
        pc = time.perf_counter
        try:
            while pc() < deadline:
                j, m = c % per, c // per
                i = mine[j]
                row = (mine_sym[j], base + m * MINUTE_MS, *(int(x) for x in bar(i, m)))
                t0 = pc()
                insert(t, row)
                out.append(pc() - t0)
                c += 1
        except Exception as e:  # noqa: BLE001 - reported with the figures
            errors.append(f"{type(e).__name__}: {e}")

    ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    t0 = time.perf_counter()
    clock["deadline"] = t0 + seconds
    start.wait()
    for th in ths:
        th.join()
    wall = time.perf_counter() - t0
    times = [x for l in lat for x in l]
    out = {"writes": len(times), "seconds": wall, "writes_per_s": len(times) / wall, "errors": len(errors),
           "first_error": errors[0] if errors else None, "per_thread": [len(l) for l in lat]}
    if times:
        out.update({k: v for k, v in _lat(times).items() if k != "n"})
    return out


def _feed_peer(label: str, make, n: int, seconds: int, warm_s: int, bases: tuple[int, int]) -> dict:
    w = make()
    try:
        log(f"feed: {label}, {FEED_THREADS} threads, warm-up {warm_s} s, then {seconds} s")
        warm = _drive(w.insert, n, FEED_THREADS, bases[0], warm_s)
        run = _drive(w.insert, n, FEED_THREADS, bases[1], seconds)
        log(f"  {label}: {run['writes_per_s']:,.0f} writes/s, p50 {run.get('p50_ms', 0):.2f} ms, "
            f"p99 {run.get('p99_ms', 0):.2f} ms, errors {run['errors']}")
        run["warmup"] = {k: warm[k] for k in ("writes", "writes_per_s", "errors")}
        stored = w.count()
        want = warm["writes"] + run["writes"]
        bad = []
        if warm["errors"] or run["errors"]:
            bad.append(f"{warm['errors'] + run['errors']} inserts failed: {warm['first_error'] or run['first_error']}")
        if stored != want:
            bad.append(f"{stored} rows stored, {want} inserts acknowledged")
        got = w.select(feed_symbol(1))
        if not got or got[0][1:] != tuple(int(x) for x in bar(1, 0)):
            bad.append(f"{feed_symbol(1)} read back wrong: {got[:1]}")
        run["checked"] = f"{stored:,} rows = {want:,} acknowledged inserts" if not bad else None
        if bad:
            run["error"] = "check failed: " + "; ".join(bad)
        return run
    finally:
        w.close()


def feed(binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, P: dict) -> dict:
    n, seconds, warm_s = FEED_SERIES, P["feed_s"], P["feed_warmup_s"]
    bases = (ms(2024, 1, 1), ms(2024, 2, 1))  # warm-up minutes, then the timed run's
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"series": n, "seconds": seconds, "warmup_s": warm_s, "systems": {}, "how": {},
                 "targets": {"writes_per_s": FEED_TARGET_WRITES_S, "p99_ms": FEED_TARGET_P99_MS,
                             "vs_duckdb": FEED_TARGET_VS_DUCKDB}}
    out["how"][FASTK_HTTP] = (f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s --latency -s feed.lua: "
                              "POST /v1/kline/{symbol}/1m/records with one record; each wrk thread cycles "
                              f"through its own {n // WRK_THREADS:,} series (strictly increasing minutes); "
                              "durable in the write-ahead log before the answer")
    os.sync()
    out["fdatasync"] = fsync_probe(work)
    log(f"feed: fdatasync on the work volume: p50 {out['fdatasync']['p50_ms']:.3f} ms, "
        f"p99 {out['fdatasync']['p99_ms']:.3f} ms")
    _attempt(out["systems"], FASTK_HTTP, lambda: _feed_fastk(binary, work / "fastk-feed", logs / "fastk-feed.log",
                                                              n, seconds, warm_s, bases))
    peers = [
        (SQLITE_SHARED, lambda: _SqliteFeed(work / "feed-shared.sqlite", FEED_THREADS, shared=True),
         f"sqlite3, {FEED_THREADS} threads sharing ONE connection behind a lock; WAL, synchronous=FULL, "
         "PRIMARY KEY (symbol, ts); BEGIN IMMEDIATE, INSERT one row, COMMIT"),
        (SQLITE_CONNS, lambda: _SqliteFeed(work / "feed-conns.sqlite", FEED_THREADS, shared=False),
         f"sqlite3, {FEED_THREADS} threads, one connection each with busy_timeout 30 s; WAL, synchronous=FULL, "
         "PRIMARY KEY (symbol, ts); BEGIN IMMEDIATE, INSERT one row, COMMIT"),
        (DUCKDB, lambda: _DuckFeed(work / "feed.duckdb", FEED_THREADS),
         f"duckdb, one database file, {FEED_THREADS} threads with a cursor each; the same table and PRIMARY KEY; "
         "one INSERT of one row per transaction (autocommit)"),
    ]
    for label, make, how in peers:
        os.sync()
        out["how"][label] = how
        _attempt(out["systems"], label, lambda make=make, label=label: _feed_peer(label, make, n, seconds, warm_s,
                                                                                  bases))
    return out


# --------------------------------------------------------------------------- feed_many


def _timed_minutes(call, items: list, warm: int, gap_s: float = 0.0) -> list[float]:
    """Times `call` on each item after `warm` untimed ones, with the harness's own
    garbage collector collected first and paused meanwhile (as `timeit` does), so a
    pause of the Python client is not counted against the system it drives. With
    `gap_s`, every timed call follows that long an idle sleep (off the clock)."""
    for it in items[:warm]:
        call(it)
    times = []
    gc.collect()
    gc.disable()
    try:
        for it in items[warm:]:
            if gap_s > 0:
                time.sleep(gap_s)
            t = time.perf_counter()
            call(it)
            times.append(time.perf_counter() - t)
    finally:
        gc.enable()
    return times


def _committer(groups: list[dict[str, int]]) -> dict:
    """The committer's apply (the 2,000 series' new states, on two threads) and the
    wait for the log's sync after it (0 when the sync, overlapped with the apply, was
    done first), over the timed writes: medians and maxima in ms. With the blocks the
    apply helper took of each write (a server that logs them): their median, and the
    writes whose split was 5 or more blocks from even, where two fixed halves would
    have waited for the slower thread."""
    apply = [g["apply_us"] / 1e3 for g in groups]
    sync = [g["sync_us"] / 1e3 for g in groups]
    out = {"apply_median_ms": statistics.median(apply), "apply_max_ms": max(apply),
           "sync_wait_median_ms": statistics.median(sync), "sync_wait_max_ms": max(sync)}
    split = [(g["helper_blocks"], g["blocks"]) for g in groups if g.get("blocks")]
    if split:
        out["helper_blocks_median"] = statistics.median(h for h, _ in split)
        out["blocks"] = split[0][1]
        out["uneven_writes"] = sum(1 for h, b in split if abs(2 * h - b) >= 10)
    return out


def feed_many(binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, P: dict) -> dict:
    n, minutes, warm = FEED_SERIES, P["feed_many_minutes"], P["feed_many_warmup"]
    gap_s = P.get("feed_many_gap_ms", 0) / 1e3
    total = warm + minutes
    http_base, flight_base = ms(2024, 3, 1), ms(2024, 4, 1)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"series": n, "minutes": minutes, "warmup_minutes": warm, "rows_per_write": n,
                 "target_ms": FEED_MANY_TARGET_MS, "gap_ms": gap_s * 1e3, "systems": {}, "how": {}}
    out["how"] = {
        FASTK_HTTP: (f'POST /v1/kline/records {{"timeframe": "1m", "records": [{n:,} x {{symbol, ts, open, high, '
                     'low, close, volume}]} (JSON encoded before the clock), one request per minute on one '
                     'keep-alive connection, sequential; timed to the end of the answer'),
        FASTK_FLIGHT: (f'one DoPut ["kline", "*", "1m"] per minute: one batch of {n:,} rows, symbol a dictionary '
                       'of utf8 (int32 indices), ts timestamp[ms, UTC], OHLCV int64; timed to the PutResult\'s '
                       'bytes (its JSON parsed after the clock, as the HTTP answer is)'),
        "SQLite": (f"sqlite3, one connection; WAL, synchronous=FULL, PRIMARY KEY (symbol, ts); "
                                       f"BEGIN IMMEDIATE, executemany of {n:,} row tuples, COMMIT per minute"),
        DUCKDB: (f"duckdb, one database file, the same table and PRIMARY KEY; per minute: register an Arrow table "
                 f"of {n:,} rows, BEGIN, INSERT INTO bars SELECT * FROM it, COMMIT"),
    }
    os.sync()

    out["fdatasync"] = fsync_probe(work)

    def fastk() -> dict:
        # The DoPut handler logs each commit's receive and write times at debug level:
        # the server's own share of each timed DoPut (read from the log afterwards); the
        # log's committer logs its phases per group (one group per write here), which
        # say where a slow write spent its time.
        level = os.environ.get("FASTK_BENCH_LOG", "warn,fastk::server=info")
        saved = os.environ.get("FASTK_BENCH_LOG")
        os.environ["FASTK_BENCH_LOG"] = level + ",fastk::flight::doput=debug,fastk::storage::wal=debug"
        log_path = logs / "fastk-feed-many.log"
        try:
            server = procs.FastK(binary, work / "fastk-feed-many", log_path, unix_socket=False)
        finally:
            if saved is None:
                os.environ.pop("FASTK_BENCH_LOG", None)
            else:
                os.environ["FASTK_BENCH_LOG"] = saved
        res: dict = {}
        try:
            hc = HttpClient(server.http)
            reg = register_kline(hc, [feed_symbol(i) for i in range(n)], "1m")
            out["registration"] = reg
            bodies = []
            for m in range(total):
                recs = [{"symbol": s, "ts": ts, "open": o, "high": h, "low": lo, "close": c, "volume": v}
                        for s, ts, o, h, lo, c, v in _feed_rows(n, http_base, m)]
                bodies.append(json.dumps({"timeframe": "1m", "records": recs}, separators=(",", ":")).encode())
            out["http_body_bytes"] = len(bodies[0])
            answers = []

            def post(body):
                st, data = _call(hc, "POST", "/v1/kline/records", body=body)
                if st != 200:
                    raise RuntimeError(f"POST /v1/kline/records: {st} {data[:300]!r}")
                answers.append(data)

            log(f"feed_many: FastK HTTP, {warm} + {minutes} minutes of {n:,} bars, one request each")
            times = _timed_minutes(post, bodies, warm, gap_s)
            r = _lat(times)
            r.update(rows_per_s=n * len(times) / sum(times), writes=len(times))
            res[FASTK_HTTP] = r
            log(f"  FastK HTTP: median {r['median_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                f"{r['rows_per_s'] / 1e6:.2f} M rows/s")
            for data in answers:
                a = json.loads(data)
                assert a["written"] == n and a["inserted"] == n and len(a["series"]) == n, \
                    f"HTTP answer {str(a)[:200]}"
            tables = [_minute_table(n, flight_base, m, dictionary=True) for m in range(total)]
            fc = flight.connect(f"grpc://{server.flight}")
            replies = []
            log(f"feed_many: FastK Flight, {warm} + {minutes} DoPuts of {n:,} rows")
            try:
                times = _timed_minutes(lambda t: replies.append(_put_raw(fc, ("kline", "*", "1m"), t)), tables, warm,
                                       gap_s)
            finally:
                fc.close()
            r = _lat(times)
            r.update(rows_per_s=n * len(times) / sum(times), writes=len(times))
            split = re.findall(r"DoPut committed rows=(\d+) receive_ms=([\d.]+) write_ms=([\d.]+)",
                               log_path.read_text(errors="replace"))
            if len(split) >= total:
                timed = split[-minutes:]
                r["server_receive_ms"] = statistics.median(float(x[1]) for x in timed)
                r["server_write_ms"] = statistics.median(float(x[2]) for x in timed)
            res[FASTK_FLIGHT] = r
            log(f"  FastK Flight: median {r['median_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                f"{r['rows_per_s'] / 1e6:.2f} M rows/s; server: receive {r.get('server_receive_ms', 0):.2f} ms, "
                f"write {r.get('server_write_ms', 0):.2f} ms (medians, from its debug log)")
            for raw in replies:
                a = json.loads(raw)
                assert a["written"] == n and a["inserted"] == n and len(a["series"]) == n, \
                    f"DoPut answer {str(a)[:200]}"
            inv = _inventory(hc)
            out["log"] = inv.get("log")
            out["total_files"] = inv.get("total_files")
            rows = {s["symbol"]: s["rows"] for s in inv["series"]}
            bad = [s for s in (feed_symbol(i) for i in range(n)) if rows.get(s) != 2 * total]
            assert not bad, f"{len(bad)} series without {2 * total} rows, e.g. {bad[0]}: {rows.get(bad[0])}"
            i = 777
            recs = _records(hc, feed_symbol(i), "1m", http_base, flight_base + total * MINUTE_MS)
            want = [(http_base + m * MINUTE_MS, *(int(x) for x in bar(i, m))) for m in range(total)] + \
                   [(flight_base + m * MINUTE_MS, *(int(x) for x in bar(i, m))) for m in range(total)]
            got = [(r_["ts"], r_["open"], r_["high"], r_["low"], r_["close"], r_["volume"]) for r_ in recs]
            assert got == want, f"{feed_symbol(i)} read back differs"
            out["checked"] = (f"every answer: written = inserted = {n:,}, {n:,} series; every series {2 * total} rows; "
                              f"{feed_symbol(i)} read back bar by bar")
            log(f"  checked: {out['checked']}")
        except Exception as e:  # noqa: BLE001
            log(f"  FastK: FAILED {type(e).__name__}: {e}")
            for label in (FASTK_HTTP, FASTK_FLIGHT):
                res[label] = {**res.get(label, {}), **_err(e)}
        finally:
            server.stop()
        # Read once the server has stopped: its log is written behind, and the last
        # groups may not be in the file while it runs.
        groups = [{k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
                  for line in log_path.read_text(errors="replace").splitlines()
                  if "group committed" in line]
        if len(groups) == 2 * total and all(g.get("writes") == 1 for g in groups):
            for label, part in ((FASTK_HTTP, groups[warm:total]), (FASTK_FLIGHT, groups[total + warm:])):
                if label in res and "error" not in res[label]:
                    res[label]["committer"] = _committer(part)
        return res

    out["systems"].update(fastk())

    def peer(label, w, rows_or_tables, call) -> dict:
        try:
            log(f"feed_many: {label}, {warm} + {minutes} minutes of {n:,} rows, one transaction each")
            times = _timed_minutes(call, rows_or_tables, warm, gap_s)
            r = _lat(times)
            r.update(rows_per_s=n * len(times) / sum(times), writes=len(times))
            log(f"  {label}: median {r['median_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                f"{r['rows_per_s'] / 1e6:.2f} M rows/s")
            stored = w.count()
            assert stored == n * total, f"{stored} rows stored, expected {n * total}"
            got = w.select(feed_symbol(777))
            assert got == [(m * MINUTE_MS + ms(2024, 3, 1), *(int(x) for x in bar(777, m))) for m in range(total)], \
                "read back differs"
            r["checked"] = f"{stored:,} rows, one series read back"
            return r
        finally:
            w.close()

    os.sync()
    rows = [_feed_rows(n, http_base, m) for m in range(total)]
    _attempt(out["systems"], "SQLite", lambda: (lambda w: peer("SQLite", w, rows, w.insert_many))(
        _SqliteFeed(work / "feed-many.sqlite", 1, shared=True)))
    del rows
    os.sync()
    tables = [_minute_table(n, http_base, m, dictionary=False) for m in range(total)]
    _attempt(out["systems"], DUCKDB, lambda: (lambda w: peer(DUCKDB, w, tables, w.insert_arrow))(
        _DuckFeed(work / "feed-many.duckdb", 1)))
    return out


# --------------------------------------------------------------------------- many_series


def _year_template():
    rng = np.random.default_rng(20230101)
    steps = rng.integers(-100, 101, YEAR_HOURS, dtype=np.int64)
    close = 100_000 + np.cumsum(steps)
    open_ = np.empty_like(close)
    open_[0] = 100_000
    open_[1:] = close[:-1]
    spread = rng.integers(0, 50, YEAR_HOURS, dtype=np.int64)
    volume = rng.integers(0, 100_000, YEAR_HOURS, dtype=np.int64)
    ts = pa.array(ms(2023) + np.arange(YEAR_HOURS, dtype=np.int64) * HOUR_MS).cast(TS_TYPE)
    return {"ts": ts, "open": open_, "close": close, "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread, "volume": volume}


def many_symbol(i: int) -> str:
    return f"{MANY_PREFIX}{i:05d}"


def year_table(tpl: dict, i: int) -> pa.Table:
    """Series i's year of 1h bars: the template walk shifted by a per-series offset."""
    off = (i * 7919) % 1_000_000
    return pa.table({"ts": tpl["ts"], "open": tpl["open"] + off, "high": tpl["high"] + off,
                     "low": tpl["low"] + off, "close": tpl["close"] + off, "volume": tpl["volume"] + i % 1000})


def slice_table(tpl: dict, first: int, count: int, dictionary: bool = True, name=None) -> pa.Table:
    """Series first .. first+count-1, one after the other, with a symbol column (named
    by `name`, many_symbol by default)."""
    name = name or many_symbol
    parts = [year_table(tpl, i) for i in range(first, first + count)]
    t = pa.concat_tables(parts)
    names = pa.array([name(i) for i in range(first, first + count)])
    idx = pa.array(np.repeat(np.arange(count, dtype=np.int32), len(tpl["close"])))
    sym = pa.DictionaryArray.from_arrays(idx, names) if dictionary else names.take(idx)
    return t.add_column(0, "symbol", sym)


def _check_series(fc: flight.FlightClient, tpl: dict, i: int) -> None:
    t = fc.do_get(flight.Ticket(json.dumps({"kind": "kline", "symbol": many_symbol(i), "timeframe": "1h",
                                            "start_ts": ms(2023), "end_ts": ms(2024) - HOUR_MS}).encode())).read_all()
    want = year_table(tpl, i)
    assert t.num_rows == YEAR_HOURS, f"{many_symbol(i)}: {t.num_rows} rows read, expected {YEAR_HOURS}"
    assert np.array_equal(t.column("ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy(),
                          want.column("ts").cast(pa.int64()).to_numpy()), f"{many_symbol(i)}: ts differs"
    for c in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(t.column(c).to_numpy(), want.column(c).to_numpy()), f"{many_symbol(i)}: {c} differs"


def _check_store(hc: HttpClient, fc: flight.FlightClient, tpl: dict, n: int) -> str:
    inv = hc.json("GET", "/inventory?partitions=false&kind=kline")
    assert len(inv["series"]) == n, f"{len(inv['series'])} series, expected {n}"
    assert inv["total_rows"] == n * YEAR_HOURS, f"total_rows {inv['total_rows']}, expected {n * YEAR_HOURS}"
    one = hc.json("GET", f"/inventory?partitions=false&kind=kline&symbol={many_symbol(n // 3)}")["series"]
    assert len(one) == 1 and one[0]["rows"] == YEAR_HOURS, f"{many_symbol(n // 3)}: {one}"
    for i in (0, n // 3, n - 1):
        _check_series(fc, tpl, i)
    return f"{n:,} series, total_rows {inv['total_rows']:,}; {many_symbol(n // 3)} has {YEAR_HOURS:,} rows; 3 series read back"


def _wait_folded(hc: HttpClient, limit_s: float = 900) -> tuple[float | None, dict]:
    t = time.perf_counter()
    while True:
        lg = hc.json("GET", "/inventory?partitions=false&kind=kline&limit=1").get("log") or {}
        if lg.get("unfolded_rows", 0) == 0:
            return time.perf_counter() - t, lg
        if time.perf_counter() - t > limit_s:
            return None, lg
        time.sleep(0.2)


class _LogWatch:
    """Samples the store's write-ahead log (`/inventory?limit=1`, on a connection of its
    own) every 0.5 s while a load and its fold run: the peaks of its bytes, segments and
    unfolded rows and bytes."""

    KEYS = ("bytes", "segments", "unfolded_rows", "unfolded_bytes")

    def __init__(self, addr: str):
        self.hc = HttpClient(addr)
        self.peak = {k: 0 for k in self.KEYS}
        self.samples = 0
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop_ev.wait(0.5):
            try:
                lg = self.hc.json("GET", "/inventory?partitions=false&kind=kline&limit=1").get("log") or {}
            except Exception:  # noqa: BLE001 - a missed sample, not a failure
                continue
            self.samples += 1
            for k in self.KEYS:
                self.peak[k] = max(self.peak[k], lg.get(k, 0))

    def stop(self) -> dict:
        self.stop_ev.set()
        self.th.join()
        self.hc.conn.close()
        return {**self.peak, "samples": self.samples}


def _vm(pid: int, key: str) -> int | None:
    """A `/proc/<pid>/status` figure (VmRSS, VmHWM), in bytes."""
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _many_fastk(binary, root: pathlib.Path, logs: pathlib.Path, name: str, tpl: dict, n: int, how: str) -> dict:
    server = procs.FastK(binary, root, logs / f"fastk-{name}.log", unix_socket=False)
    res: dict = {"how": how}
    try:
        hc = HttpClient(server.http)
        res["registration"] = register_kline(hc, [many_symbol(i) for i in range(n)], "1h")
        clients = [flight.connect(f"grpc://{server.flight}") for _ in range(MANY_THREADS)]
        os.sync()
        log(f"many_series: FastK, {how}")

        if how == "per-series":
            def work(k: int) -> int:
                rows = 0
                for i in range(k, n, MANY_THREADS):
                    reply = _put(clients[k], ("kline", many_symbol(i), "1h"), year_table(tpl, i))
                    assert reply["written"] == YEAR_HOURS, reply
                    rows += reply["written"]
                return rows
        else:
            def work(k: int) -> int:
                rows = 0
                for first in range(k * MANY_SLICE, n, MANY_THREADS * MANY_SLICE):
                    cnt = min(MANY_SLICE, n - first)
                    reply = _put(clients[k], ("kline", "*", "1h"), slice_table(tpl, first, cnt))
                    assert reply["written"] == cnt * YEAR_HOURS and len(reply["series"]) == cnt, str(reply)[:300]
                    rows += reply["written"]
                return rows

        watch = _LogWatch(server.http)
        t = time.perf_counter()
        try:
            with ThreadPoolExecutor(MANY_THREADS) as ex:
                rows = sum(ex.map(work, range(MANY_THREADS)))
        except BaseException:
            watch.stop()
            raise
        res["load_s"] = time.perf_counter() - t
        assert rows == n * YEAR_HOURS, f"{rows} rows acknowledged, expected {n * YEAR_HOURS}"
        res["rows_per_s"] = rows / res["load_s"]
        log(f"  load: {res['load_s']:.1f} s ({res['rows_per_s'] / 1e6:.2f} M rows/s)")
        # Past 120 s the rows left are below every fold threshold but age (they fold
        # storage.fold_age_s after their write); the clean stop below folds them.
        fold_s, lg = _wait_folded(hc, limit_s=120)
        res["log_peak"] = watch.stop()
        res["peak_rss_bytes"] = _vm(server.proc.pid, "VmHWM")
        log(f"  log peak: {res['log_peak']['bytes'] / 1e9:.2f} GB in {res['log_peak']['segments']} segments, "
            f"{res['log_peak']['unfolded_rows']:,} unfolded rows ({res['log_peak']['unfolded_bytes'] / 1e9:.2f} GB "
            f"in memory); server peak RSS {(res['peak_rss_bytes'] or 0) / 1e9:.2f} GB")
        res["fold_wait_s"] = fold_s
        res["until_folded_s"] = res["load_s"] + fold_s if fold_s is not None else None
        res["log_after"] = lg
        if fold_s is None:
            log(f"  the log was not folded within 120 s (rows below every threshold but age): {lg}")
        elif fold_s > 0.5:
            log(f"  folded {fold_s:.1f} s after the last acknowledgement")
        for c in clients:
            c.close()
        os.sync()  # untimed: the bytes counted below are on disk
        inv = hc.json("GET", "/inventory?partitions=false&kind=kline")
        res.update(files=_files(root), du_bytes=du(root), inventory_total_files=inv.get("total_files"),
                   inventory_total_bytes=inv.get("total_bytes"), log=inv.get("log"),
                   series_files=statistics.median(s.get("files", 0) for s in inv["series"]))
        log(f"  on disk: {res['files']:,} files, {res['du_bytes'] / 1e9:.2f} GB (inventory: "
            f"{res['inventory_total_files']} files, {res['inventory_total_bytes'] / 1e9:.2f} GB)")
        if how == "per-series":
            # The sealed months compressed now (the background pass would do it an
            # interval after the start): what the same store costs once compressed.
            t = time.perf_counter()
            hc.request("POST", "/v1/admin/compact", json.dumps({"dry_run": False}).encode())
            res["compact_s"] = time.perf_counter() - t
            os.sync()
            inv2 = hc.json("GET", "/inventory?partitions=false&kind=kline")
            res.update(files_compressed=_files(root), du_bytes_compressed=du(root),
                       inventory_total_bytes_compressed=inv2.get("total_bytes"))
            log(f"  after admin compact ({res['compact_s']:.1f} s): {res['files_compressed']:,} files, "
                f"{res['du_bytes_compressed'] / 1e9:.2f} GB (inventory {inv2.get('total_bytes', 0) / 1e9:.2f} GB)")
        fc = flight.connect(f"grpc://{server.flight}")
        res["checked"] = _check_store(hc, fc, tpl, n)
        fc.close()
        hc.conn.close()
        t = time.perf_counter()
        server.proc.terminate()
        server.proc.wait(900)  # a clean stop folds what the log holds: no kill after 15 s
        res["stop_s"] = time.perf_counter() - t
        log(f"  stopped in {res['stop_s']:.2f} s; restarting")
        again = Restarted(binary, root, logs / f"fastk-{name}-restart.log")
        try:
            res["restart_s"] = again.ready_s
            res["health_after_restart"] = {k: again.health.get(k) for k in ("status", "series", "issues")}
            log(f"  restart: /health 200 after {again.ready_s:.2f} s ({res['health_after_restart']})")
            hc2 = HttpClient(again.http)
            fc2 = flight.connect(f"grpc://{again.flight}")
            res["checked"] += "; after the restart: " + _check_store(hc2, fc2, tpl, n)
            fc2.close()
            hc2.conn.close()
        finally:
            again.stop()
        log(f"  checked: {res['checked']}")
        return res
    except Exception as e:  # noqa: BLE001
        log(f"  FastK ({how}): FAILED {type(e).__name__}: {e}")
        return {**res, **_err(e)}
    finally:
        server.stop()


def _many_duckdb(path: pathlib.Path, tpl: dict, n: int) -> dict:
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    res: dict = {}
    os.sync()
    log(f"many_series: DuckDB, INSERT .. SELECT from Arrow slices of {DUCK_SLICE} series")
    t = time.perf_counter()
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE bars (symbol VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, open BIGINT NOT NULL, "
                "high BIGINT NOT NULL, low BIGINT NOT NULL, close BIGINT NOT NULL, volume BIGINT NOT NULL)")
    for first in range(0, n, DUCK_SLICE):
        part = slice_table(tpl, first, min(DUCK_SLICE, n - first), dictionary=False)
        con.register("part", part)
        con.execute("INSERT INTO bars SELECT * FROM part")
        con.unregister("part")
    con.execute("CHECKPOINT")
    res["load_s"] = time.perf_counter() - t
    res["rows_per_s"] = n * YEAR_HOURS / res["load_s"]
    log(f"  load: {res['load_s']:.1f} s ({res['rows_per_s'] / 1e6:.2f} M rows/s)")
    total = con.execute("SELECT count(*) FROM bars").fetchone()[0]
    one = con.execute("SELECT count(*), sum(close) FROM bars WHERE symbol = ?", [many_symbol(n // 3)]).fetchone()
    con.close()
    os.sync()
    files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
    res.update(files=len(files), du_bytes=sum(du(p) for p in files))
    log(f"  on disk: {res['files']} files, {res['du_bytes'] / 1e9:.2f} GB")
    want_close = int(year_table(tpl, n // 3).column("close").to_numpy().sum())
    assert total == n * YEAR_HOURS, f"{total} rows, expected {n * YEAR_HOURS}"
    assert one[0] == YEAR_HOURS and one[1] == want_close, f"{many_symbol(n // 3)}: {one}"
    res["checked"] = f"{total:,} rows; {many_symbol(n // 3)} has {YEAR_HOURS:,} rows and the expected sum(close)"
    return res


def many_series(binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, P: dict, quick: bool) -> dict:
    n = P["many_series"]
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    note = None
    if not quick and free < 15e9:
        n = 4_000
        note = f"{free / 1e9:.1f} GB free on the work volume (under 15 GB): {n:,} series instead of 10,000"
        log(f"many_series: {note}")
    tpl = _year_template()
    t = time.perf_counter()
    for i in range(n):
        year_table(tpl, i)
    gen_s = time.perf_counter() - t
    out: dict = {"series": n, "rows_per_series": YEAR_HOURS, "rows": n * YEAR_HOURS, "note": note,
                 "free_bytes_before": free, "generate_s": gen_s, "systems": {}, "how": {}}
    ways = [
        ("FastK, DoPut per series", "per-series",
         f"register, then one DoPut [\"kline\", symbol, \"1h\"] of the year ({YEAR_HOURS:,} rows, above "
         f"wal_direct_rows: written as chunk files, not logged) per series, {MANY_THREADS} client threads"),
        ("FastK, many-series DoPut", "many",
         f"register, then DoPut [\"kline\", \"*\", \"1h\"] of {MANY_SLICE} series x {YEAR_HOURS:,} rows each "
         f"(a dictionary symbol column; one log record per DoPut), {MANY_THREADS} client threads; then wait "
         "until the log is folded (inventory log.unfolded_rows 0)"),
    ]
    for label, how, text in ways:
        out["how"][label] = text
        _attempt(out["systems"], label, lambda how=how: _many_fastk(binary, work / f"fastk-many-{how}", logs,
                                                                    f"many-{how}", tpl, n, how))
    out["how"][DUCKDB] = (f"duckdb, one table (symbol VARCHAR, ts TIMESTAMPTZ, OHLCV BIGINT; no primary key), "
                          f"INSERT INTO bars SELECT * FROM an Arrow table of {DUCK_SLICE} series at a time "
                          "(autocommit), then CHECKPOINT; the load time includes building the slices")
    _attempt(out["systems"], DUCKDB, lambda: _many_duckdb(work / "duckdb-many" / "bars.duckdb", tpl, n))
    return out


# --------------------------------------------------------------------------- series_100k

SCALE_PREFIX = "S"
SCALE_SLICE = 1_000  # series per many-series DoPut
SCALE_PAGE = 1_000  # series per /inventory page
CROSS_SECTION_TARGET_MS = 100.0
RESTART_TARGET_S = 5.0


def scale_symbol(i: int) -> str:
    return f"{SCALE_PREFIX}{i:06d}"


def _metric(hc: HttpClient, name: str) -> float | None:
    for line in hc.request("GET", "/metrics").decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _timed_n(call, n: int) -> tuple[dict, object]:
    """`call` once untimed (warm-up), then `n` timed calls: latency figures and the last answer."""
    out = call()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t)
    return _lat(times), out


def series_100k(binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, P: dict) -> dict:
    """A store of very many series: registration and load the fastest documented way
    (one `POST /v1/kline/series/many`, many-series DoPuts through the log), files and
    bytes, restart time, RSS after the open and after reading every series once, and
    the latency of what an operator or a cross-sectional strategy asks of the whole
    store: /health, an /inventory page and the whole /inventory, ListFlights, the
    latest bar of every series in one Flight ticket and the as-of cross section."""
    n, hours = P["scale_series"], P["scale_hours"]
    root = work / "fastk-100k"
    work.mkdir(parents=True, exist_ok=True)
    full = _year_template()
    if hours > YEAR_HOURS:
        raise ValueError(f"scale_hours {hours} is more than a year ({YEAR_HOURS})")
    tpl = {k: v[:hours] for k, v in full.items()}
    out: dict = {"series": n, "rows_per_series": hours, "rows": n * hours,
                 "how": (f"{n:,} kline 1h series of {hours:,} bars each (from 2023-01-01). Registration: "
                         f"POST /v1/kline/series/many (all series in one request). Load: many-series DoPut "
                         f"[\"kline\", \"*\", \"1h\"] of {SCALE_SLICE:,} series each (dictionary symbol column) "
                         f"on {MANY_THREADS} client threads; then a clean stop (SIGTERM), which folds what the log "
                         "still holds, timed. Restart: start, until /health answers 200, page cache warm. Latencies: one warm-up "
                         "call, then timed calls on one keep-alive connection (HTTP) or one Flight client; "
                         "cross section = DoGet {\"kind\": \"kline\", \"symbols\": \"*\", \"timeframe\": \"1h\", "
                         "\"latest\": 1} read into a pyarrow Table; as-of likewise with \"as_of\" at the last "
                         "hour. Every series read once: GetFlightInfo of the whole-store ticket, its endpoints "
                         "pulled on 4 threads, batches counted and dropped. RSS from /proc (VmRSS).")}
    server = procs.FastK(binary, root, logs / "fastk-100k.log", unix_socket=False)
    again = None
    try:
        hc = HttpClient(server.http)
        out["registration"] = register_kline(hc, [scale_symbol(i) for i in range(n)], "1h", chunk=n)
        clients = [flight.connect(f"grpc://{server.flight}") for _ in range(MANY_THREADS)]
        os.sync()
        log(f"series_100k: loading {n:,} series x {hours:,} bars")

        def work_(k: int) -> int:
            rows = 0
            for first in range(k * SCALE_SLICE, n, MANY_THREADS * SCALE_SLICE):
                cnt = min(SCALE_SLICE, n - first)
                reply = _put(clients[k], ("kline", "*", "1h"), slice_table(tpl, first, cnt, name=scale_symbol))
                assert reply["written"] == cnt * hours, str(reply)[:300]
                rows += reply["written"]
            return rows

        t = time.perf_counter()
        with ThreadPoolExecutor(MANY_THREADS) as ex:
            rows = sum(ex.map(work_, range(MANY_THREADS)))
        out["load_s"] = time.perf_counter() - t
        assert rows == n * hours, f"{rows} rows acknowledged, expected {n * hours}"
        out["peak_rss_load_bytes"] = _vm(server.proc.pid, "VmHWM")
        # What the log still holds (rows below the fold thresholds wait up to
        # storage.fold_age_s); a clean stop folds it, and is timed.
        out["log_after_load"] = hc.json("GET", "/inventory?partitions=false&limit=1").get("log")
        log(f"  load {out['load_s']:.1f} s; peak RSS {(out['peak_rss_load_bytes'] or 0) / 1e9:.2f} GB; "
            f"log after the load: {out['log_after_load']}")
        for c in clients:
            c.close()
        hc.conn.close()
        t = time.perf_counter()
        server.proc.terminate()
        server.proc.wait(900)  # a clean stop folds everything first: no kill after 15 s
        out["stop_fold_s"] = time.perf_counter() - t
        os.sync()
        out["files"] = _files(root)
        out["du_bytes"] = du(root)
        log(f"  clean stop (folds the log) {out['stop_fold_s']:.1f} s; on disk: {out['files']:,} files, "
            f"{out['du_bytes'] / 1e9:.2f} GB")
        again = Restarted(binary, root, logs / "fastk-100k-restart.log")
        out["restart_s"] = again.ready_s
        out["health_after_restart"] = {k: again.health.get(k) for k in ("status", "series")}
        out["rss_open_bytes"] = _vm(again.proc.pid, "VmRSS")
        log(f"  restart: /health 200 after {again.ready_s:.2f} s; RSS {out['rss_open_bytes'] / 1e6:.0f} MB")
        hc = HttpClient(again.http)
        fc = flight.connect(f"grpc://{again.flight}")
        lat: dict = {}
        lat["/health"], _ = _timed_n(lambda: hc.request("GET", "/health"), 50)
        lat[f"/inventory page ({SCALE_PAGE:,} series)"], page = _timed_n(
            lambda: hc.request("GET", f"/inventory?partitions=false&limit={SCALE_PAGE}"), 20)
        out["inventory_page_bytes"] = len(page)
        pj = json.loads(page)
        assert len(pj["series"]) == SCALE_PAGE and pj.get("next_after"), "an /inventory page"
        lat["/inventory, every series"], whole = _timed_n(lambda: hc.request("GET", "/inventory?partitions=false"), 3)
        out["inventory_whole_bytes"] = len(whole)
        wj = json.loads(whole)
        assert len(wj["series"]) == n and wj["total_rows"] == n * hours, \
            f"/inventory: {len(wj['series'])} series, {wj['total_rows']} rows"
        lat["ListFlights, every series"], infos = _timed_n(lambda: list(fc.list_flights()), 3)
        assert len(infos) == n, f"ListFlights listed {len(infos)} flights, expected {n}"
        last_ts = ms(2023) + (hours - 1) * HOUR_MS
        xs = {"kind": "kline", "symbols": "*", "timeframe": "1h", "latest": 1}
        lat["cross section, latest bar of every series (DoGet)"], tab = _timed_n(
            lambda: fc.do_get(flight.Ticket(json.dumps(xs).encode())).read_all(), 10)
        want_close = tpl["close"][-1] + (np.arange(n, dtype=np.int64) * 7919) % 1_000_000
        sym = tab.column("symbol").cast(pa.string()).to_pylist()
        assert tab.num_rows == n and sym == [scale_symbol(i) for i in range(n)], f"cross section: {tab.num_rows} rows"
        assert np.array_equal(tab.column("close").to_numpy(), want_close), "cross section: close differs"
        asof = {"kind": "kline", "symbols": "*", "timeframe": "1h", "as_of": last_ts + 30 * MINUTE_MS}
        lat["as-of cross section (DoGet)"], tab2 = _timed_n(
            lambda: fc.do_get(flight.Ticket(json.dumps(asof).encode())).read_all(), 10)
        assert tab2.num_rows == n and np.array_equal(tab2.column("close").to_numpy(), want_close), "as-of"
        out["latency"] = lat
        out["rss_before_read_bytes"] = _vm(again.proc.pid, "VmRSS")
        whole_ticket = {"kind": "kline", "symbols": "*", "timeframe": "1h"}
        t = time.perf_counter()
        info = fc.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(whole_ticket).encode()))

        def pull(ep) -> int:
            c = flight.connect(f"grpc://{again.flight}")
            try:
                rd = c.do_get(ep.ticket)
                cnt = 0
                while True:
                    try:
                        b = rd.read_chunk().data
                    except StopIteration:
                        return cnt
                    cnt += b.num_rows
            finally:
                c.close()

        with ThreadPoolExecutor(4) as ex:
            read_rows = sum(ex.map(pull, info.endpoints))
        out["read_all_s"] = time.perf_counter() - t
        out["read_all_endpoints"] = len(info.endpoints)
        assert read_rows == n * hours, f"read {read_rows} rows of every series, expected {n * hours}"
        out["rss_after_read_bytes"] = _vm(again.proc.pid, "VmRSS")
        out["peak_rss_serving_bytes"] = _vm(again.proc.pid, "VmHWM")
        out["mapped_files_max"] = _metric(hc, "fastk_mapped_files_max")
        out["mapped_files"] = _metric(hc, "fastk_mapped_files")
        log(f"  every series read once in {out['read_all_s']:.1f} s over {len(info.endpoints)} endpoints; "
            f"RSS {out['rss_after_read_bytes'] / 1e6:.0f} MB")
        for k, v in lat.items():
            log(f"  {k}: p50 {v['p50_ms']:.2f} ms, max {v['max_ms']:.2f} ms")
        out["checked"] = (f"/inventory: {n:,} series and {n * hours:,} rows; ListFlights: {n:,} flights; the "
                          f"latest-bar and as-of cross sections: {n:,} rows in symbol order with every close "
                          f"as generated; every series read once: {n * hours:,} rows")
        out["goals"] = {
            "restart under 5 s": out["restart_s"] < RESTART_TARGET_S,
            "cross section under 100 ms": lat["cross section, latest bar of every series (DoGet)"]["p50_ms"]
            < CROSS_SECTION_TARGET_MS,
        }
        fc.close()
        hc.conn.close()
        return out
    finally:
        if again is not None:
            again.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- driver


def versions() -> dict:
    import duckdb

    wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True) if shutil.which("wrk") else None
    return {"SQLite": sqlite3.sqlite_version, "DuckDB": duckdb.__version__,
            "wrk": (wrk_v.stdout + wrk_v.stderr).split("Copyright")[0].strip() if wrk_v else "not installed"}


def run(which, results: dict, P: dict, *, binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path,
        quick: bool) -> None:
    """Runs the selected feed workloads into `results` (keys `feed`, `feed_many`,
    `many_series`), each guarded: a failure is recorded and the next one runs."""
    from .market import guarded

    if "feed" in which:
        if shutil.which("wrk") is None:
            results["feed"] = {"error": "wrk is not installed (apt install wrk)"}
        else:
            results["feed"] = guarded("feed", lambda: feed(binary, work / "feed", logs, P))
        shutil.rmtree(work / "feed", ignore_errors=True)
    if "feed_many" in which:
        results["feed_many"] = guarded("feed_many", lambda: feed_many(binary, work / "feed-many", logs, P))
        shutil.rmtree(work / "feed-many", ignore_errors=True)
    if "many_series" in which:
        results["many_series"] = guarded("many_series", lambda: many_series(binary, work / "many-series", logs, P,
                                                                            quick))
        shutil.rmtree(work / "many-series", ignore_errors=True)
    if "series_100k" in which:
        results["series_100k"] = guarded("series_100k", lambda: series_100k(binary, work / "series-100k", logs, P))
