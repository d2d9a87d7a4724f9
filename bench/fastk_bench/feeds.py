"""The feed workloads: what a market-data feed handler does to a store, write by write,
and what a store of very many series costs.

- `feed`: 2,000 kline 1m series; each write is ONE 1m bar of one series, durable before
  the answer (FastK: `POST /v1/kline/{symbol}/1m/records`, through the store-wide
  write-ahead log with group commit). The like-for-like run drives every system with
  the same load generator, `_drive`: 8 Python threads in this process, thread t
  cycling through the series i % 8 == t (strictly increasing minutes), each insert
  timed alone. FastK from those threads over http.client (one keep-alive connection
  each); SQLite (one file, journal_mode=WAL, synchronous=FULL, PRIMARY KEY (symbol,
  ts), one transaction per row; one shared connection behind a lock, and 8
  connections with busy_timeout); DuckDB (one file, the same table, one transaction
  per row, a cursor per thread). The ratios (`feed.ratios`) come from this run only.
  Beside it, FastK driven by `wrk -t2 -c8` with `feed.lua` (the same bars): what the
  server takes when the client is not the limit; skipped, with the reason, without
  wrk. One warm-up, then the timed run; writes/s, latency percentiles, errors.
- `feed_many`: the same 2,000 series; each write is one minute of all 2,000 bars as
  ONE many-series write, sequential: `POST /v1/kline/records` (JSON body built before
  the clock) and one Flight DoPut `["kline", "*", "1m"]` with a dictionary `symbol`
  column; SQLite (one transaction of 2,000 rows, executemany), DuckDB (one
  transaction, INSERT .. SELECT from an Arrow table). Several runs (params
  feed_many_runs), each way on a fresh store in each run, the ways' order rotated
  from run to run; per way the median of the runs' medians, the pooled p99 and the
  spread of the runs (target: the median under 5 ms), rows/s, and for FastK the log
  committer's apply and sync wait per write (its debug log).
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
  series, then CHECKPOINT (load time, file size).
- `series_100k`: a store of 100,000 series (see its docstring).

Checked: every answer's counts; after every feed run, every system's store read back
whole, each series' row count and column sums against those of the bars acknowledged
(`_compare_sums`); many_series: every series' rows, three series value by value,
before and after the restart, DuckDB's per-series counts and sum(close); series_100k:
every timed answer. A mismatch fails that measurement ("check failed: ...", listed in
the workload's `check_failures`; `check_failures(results)` gathers them for the run
to fail on); a failing system is recorded with what it measured before, and the run
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
import pyarrow.compute as pac
import pyarrow.flight as flight

from . import checks, procs, timing
from .dataset import MINUTE_MS, TS_TYPE, ms
from .systems import HttpClient, du
from .workloads import _wrk_ms, log

WORKLOADS = ("feed", "feed_many", "many_series", "series_100k")

FASTK_HTTP = "FastK HTTP"
FASTK_THREADS = "FastK HTTP (Python threads)"  # feed: the like-for-like run, driven as the peers are
FASTK_WRK = "FastK HTTP (wrk)"  # feed: the same writes from wrk, beside it
FASTK_FLIGHT = "FastK Flight"
SQLITE_SHARED = "SQLite (shared connection)"
SQLITE_CONNS = "SQLite (8 connections)"
DUCKDB = "DuckDB"
SQLITE = "SQLite"

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
        # 50 timed writes a run: a run's p99 is its slowest. 200 in one store would
        # make it a percentile, but also a different workload: 200 minutes of unfolded
        # rows per series (a live feed folds after storage.fold_age_s, ten minutes), on
        # which SQLite's index grows to four times its cost. The runs below, each on
        # fresh stores, give the pooled p99 its 250 writes instead.
        feed_many_minutes=10 if q else 50,
        feed_many_warmup=2,
        # Runs of feed_many, each way on a fresh store in each, interleaved: the page
        # quotes the median of the runs' medians with their spread, not one run.
        feed_many_runs=3 if q else 5,
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


def _failure(e: BaseException) -> dict:
    """An error entry; an AssertionError (a check) is marked "check failed: "."""
    err = _err(e)
    if isinstance(e, AssertionError):
        err["error"] = "check failed: " + err["error"]
    return err


def _attempt(out: dict, label: str, fn) -> None:
    try:
        out[label] = fn()
    except checks.Mismatch:
        raise
    except Exception as e:  # noqa: BLE001 - one failing system must not sink the workload
        log(f"  {label}: FAILED {type(e).__name__}: {e}")
        out[label] = _failure(e)


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


# --------------------------------------------------------------------------- checks
#
# Every feed run ends with the same check for every system: each series' row count and
# the sums of its ts, open, high, low, close and volume columns as read back from the
# store, against those of the bars the load generator had acknowledged. A bar stored
# twice, lost, written to the wrong series or with a wrong value changes a count or a
# sum; the comparison is exact (int64), and a mismatch fails that system's
# measurement ("check failed: ...") and is listed in the workload's `check_failures`.

SUM_NAMES = ("rows", "ts", "open", "high", "low", "close", "volume")


def _bar_sums(n: int, i: np.ndarray, m: np.ndarray, base: int) -> np.ndarray:
    """Per-series row counts and column sums (an n x 7 int64 array, columns as
    SUM_NAMES) of the bars (series i[k], minute m[k]) at base + m * 1 minute."""
    i = np.asarray(i, dtype=np.int64)
    m = np.asarray(m, dtype=np.int64)
    o, h, lo, c, v = bar(i, m)
    cols = (np.ones_like(i), base + m * MINUTE_MS, o, h, lo, c, v)
    return np.stack([_int_bincount(i, col, n) for col in cols], axis=1)


def _int_bincount(idx: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Exact int64 per-index sums (np.bincount sums in float64, inexact past 2**53)."""
    out = np.zeros(n, dtype=np.int64)
    np.add.at(out, idx, values.astype(np.int64))
    return out


def _arrow_sums(n: int, table: pa.Table, prefix: str = FEED_PREFIX) -> np.ndarray:
    """The same figures of a read-back table (a `symbol` column, plain or dictionary,
    named prefix + number; ts a timestamp or int64; OHLCV int64)."""
    if table.num_rows == 0:
        return np.zeros((n, len(SUM_NAMES)), dtype=np.int64)
    idx = np.concatenate([_series_numbers(ch, prefix) for ch in table.column("symbol").chunks])
    ts = table.column("ts")
    if pa.types.is_timestamp(ts.type):
        ts = ts.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    cols = [ts] + [table.column(c) for c in ("open", "high", "low", "close", "volume")]
    ones = np.ones(len(idx), dtype=np.int64)
    return np.stack([_int_bincount(idx, ones, n)] + [_int_bincount(idx, c.to_numpy(), n) for c in cols], axis=1)


def _series_numbers(sym: pa.Array, prefix: str) -> np.ndarray:
    """The series numbers of a chunk of `symbol` names (prefix + number), plain or a
    dictionary (each chunk may carry a dictionary of its own)."""
    if pa.types.is_dictionary(sym.type):
        lookup = np.array([int(s[len(prefix):]) for s in sym.dictionary.to_pylist()], dtype=np.int64)
        return lookup[sym.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
    return np.array([int(s[len(prefix):]) for s in sym.to_pylist()], dtype=np.int64)


def _sql_sums(n: int, rows, prefix: str = FEED_PREFIX) -> np.ndarray:
    """The same figures from `SELECT symbol, count(*), sum(ts), sum(open), ... GROUP BY symbol`."""
    out = np.zeros((n, len(SUM_NAMES)), dtype=np.int64)
    for r in rows:
        out[int(r[0][len(prefix):])] = [int(x) for x in r[1:]]
    return out


SQL_SUMS = ("SELECT symbol, count(*), sum(ts), sum(open), sum(high), sum(low), sum(close), sum(volume) "
            "FROM bars GROUP BY symbol")


def _compare_sums(want: np.ndarray, got: np.ndarray, prefix: str = FEED_PREFIX) -> None:
    """AssertionError naming the first series (and figure) read back differently."""
    bad = np.nonzero(np.any(want != got, axis=1))[0]
    if len(bad):
        i = int(bad[0])
        k = int(np.nonzero(want[i] != got[i])[0][0])
        raise AssertionError(f"{len(bad)} of {len(want)} series read back differently, e.g. {prefix}{i:04d} "
                             f"{SUM_NAMES[k]}: {int(got[i, k])} read back, {int(want[i, k])} written")


def _checksum(sums: np.ndarray) -> dict:
    """The whole store's figures (rows and column sums), as recorded in results.json."""
    return {name: int(sums[:, k].sum()) for k, name in enumerate(SUM_NAMES)}


def _fastk_read_back(flight_addr: str) -> pa.Table:
    """Every 1m kline row of a FastK store, in one DoGet of the whole-store ticket."""
    fc = flight.connect(f"grpc://{flight_addr}")
    try:
        ticket = {"kind": "kline", "symbols": "*", "timeframe": "1m"}
        return fc.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
    finally:
        fc.close()


def _check_entry(sums: np.ndarray, what: str) -> dict:
    """The keys a checked system's result carries: `checked` (a sentence for the
    report), `checked_rows`, `checked_series` and the `checksum` read back."""
    rows = int(sums[:, 0].sum())
    return {"checked": f"{rows:,} rows in {len(sums):,} series {what}; per-series row counts and sums of ts, "
                       "open, high, low, close and volume read back equal to those of the bars written",
            "checked_rows": rows, "checked_series": len(sums), "checksum": _checksum(sums)}


def _collect_failures(systems: dict) -> list[str]:
    """The systems whose check failed (error starting "check failed"), as "label: error"."""
    return [f"{k}: {v['error']}" for k, v in systems.items()
            if isinstance(v, dict) and str(v.get("error", "")).startswith("check failed")]


# --------------------------------------------------------------------------- feed
#
# Two load generators, never mixed in one comparison:
# - the like-for-like run: FastK and its peers driven by the same `_drive` loop (8
#   Python threads, the same bars in the same order, each insert timed alone by
#   perf_counter, the same latency summary); FastK through http.client, one keep-alive
#   connection per thread; the peers through their own Python drivers. The GIL
#   serialises the clients of every system alike; the ratios come from this run.
# - FastK driven by wrk (C, 2 threads, 8 connections): what the server takes when the
#   client is not the limit; reported beside the like-for-like run, never divided by a
#   peer's figure.


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


def _feed_wrk(binary, root, log_path, n: int, seconds: int, warm_s: int, bases: tuple[int, int]) -> dict:
    server = procs.FastK(binary, root, log_path, unix_socket=False)
    try:
        hc = HttpClient(server.http)
        reg = register_kline(hc, [feed_symbol(i) for i in range(n)], "1m")
        url = f"http://{server.http}"
        log(f"feed: {FASTK_WRK}: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}, warm-up {warm_s} s, then {seconds} s")
        warm = run_wrk(url, n, bases[0], warm_s)
        run = run_wrk(url, n, bases[1], seconds)
        time.sleep(0.5)  # a write still in flight when wrk stopped settles before the count
        log(f"  {FASTK_WRK}: {run['requests_per_s']:,.0f} writes/s, p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, "
            f"non-2xx {run['non_2xx']}, socket errors {run['socket_errors']}")
        inv = _inventory(hc)
        out = {"load_generator": "wrk", "writes_per_s": run["requests_per_s"], "p50_ms": run["p50_ms"],
               "p75_ms": run["p75_ms"], "p90_ms": run["p90_ms"], "p99_ms": run["p99_ms"],
               "mean_ms": run.get("mean_ms"), "max_ms": run.get("max_ms"), "writes": run["requests"],
               "seconds": seconds, "non_2xx": run["non_2xx"] + warm["non_2xx"],
               "socket_errors": run["socket_errors"] + warm["socket_errors"],
               "warmup": {k: warm[k] for k in ("requests", "requests_per_s", "p99_ms", "non_2xx", "generated")},
               "generated": run["generated"], "registration": reg, "log": inv.get("log"),
               "total_files": inv.get("total_files"), "wrk_output": run["text"]}
        try:
            out.update(_wrk_check(server.flight, n, warm, run, bases))
            log(f"  checked: {out['checked']}")
        except AssertionError as e:
            log(f"  {FASTK_WRK}: check FAILED: {e}")
            out["error"] = f"check failed: {e}"
        return out
    finally:
        server.stop()


def _wrk_expected(n: int, got_rows: np.ndarray, first_minute: np.ndarray, base: int) -> np.ndarray:
    """The figures of a wrk run's bars as they must be stored: series i holds the
    minutes first_minute[i] .. + got_rows[i] - 1 (each wrk thread writes a series'
    minutes in order, and its next minute only after the previous one was answered)."""
    i = np.repeat(np.arange(n, dtype=np.int64), got_rows)
    start = np.repeat(np.cumsum(got_rows) - got_rows, got_rows)
    m = np.arange(len(i), dtype=np.int64) - start + first_minute[i]
    return _bar_sums(n, i, m, base)


def _first_minute(table: pa.Table, symbol: str, base: int) -> int:
    """The first minute (after `base`) of `symbol`'s rows in a read-back table."""
    rows = table.filter(pac.equal(table.column("symbol").cast(pa.string()), symbol))
    ts = rows.column("ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    return (int(pac.min(ts).as_py()) - base) // MINUTE_MS


def _wrk_check(flight_addr: str, n: int, warm: dict, run: dict, bases: tuple[int, int]) -> dict:
    """Every series' rows against the requests wrk's threads generated (a request still in
    flight when wrk stopped may or may not have been written: at most one per
    connection and run; and wrk 4.1 generates thread 0's first request, series 0 at
    minute 0, to check the script and never sends it), no non-2xx answer, and every
    series' rows read back with the figures (count, column sums) of exactly the
    minutes it must hold."""
    assert warm["non_2xx"] == 0 and run["non_2xx"] == 0, \
        f"non-2xx answers: warm-up {warm['non_2xx']}, timed {run['non_2xx']}"
    table = _fastk_read_back(flight_addr)
    ts = table.column("ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()
    got_total = np.zeros((n, len(SUM_NAMES)), dtype=np.int64)
    want_total = np.zeros_like(got_total)
    short = 0
    for k, (gen, base, end) in enumerate(((warm, bases[0], bases[1]), (run, bases[1], None))):
        part = table.filter(pa.array((ts >= base) & (ts < end if end else True)))
        got = _arrow_sums(n, part)
        rows = got[:, 0]
        want_rows = np.array([_owned(i, WRK_THREADS, n, gen["generated"]) for i in range(n)], dtype=np.int64)
        slack = np.full(n, 2, dtype=np.int64)
        slack[0] += 2
        bad = np.nonzero((rows > want_rows) | (rows < want_rows - slack))[0]
        assert not len(bad), (f"{feed_symbol(int(bad[0]))}: {int(rows[bad[0]])} rows, wrk's threads generated "
                              f"{int(want_rows[bad[0]])} (run {k})")
        short += int((want_rows - rows).sum())
        # Series 0's first minute is 1 when wrk spent its first request on checking the script.
        first = np.zeros(n, dtype=np.int64)
        if rows[0]:
            first[0] = _first_minute(part, feed_symbol(0), base)
            assert first[0] in (0, 1), f"{feed_symbol(0)}: the run's first minute is {first[0]}"
        want = _wrk_expected(n, rows, first, base)
        _compare_sums(want, got)
        got_total += got
        want_total += want
    assert short <= 2 * WRK_CONNECTIONS + 2, \
        f"{short} generated requests not stored (at most {2 * WRK_CONNECTIONS + 2})"
    total = int(got_total[:, 0].sum())
    acked = warm["requests"] + run["requests"]
    assert total >= acked, f"{total} rows stored, {acked} writes acknowledged"
    assert total == table.num_rows, f"{table.num_rows} rows read back, {total} in the two runs' ranges"
    return _check_entry(got_total, f"= {acked:,} acknowledged writes + {total - acked} written while wrk stopped "
                                   f"({short} requests generated but not stored)")


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

    def sums(self, n: int) -> np.ndarray:
        return _sql_sums(n, self.cons[0].execute(SQL_SUMS).fetchall())

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

    def sums(self, n: int) -> np.ndarray:
        return _sql_sums(n, self.con.execute(SQL_SUMS).fetchall())

    def close(self):
        for c in self.cons:
            c.close()
        self.con.close()


class _FastKFeed:
    """FastK in the like-for-like run: a store of its own with the series registered;
    each of the `threads` threads POSTs one bar per request to the single-series write
    (`POST /v1/kline/{symbol}/1m/records`) on a keep-alive http.client connection of its
    own. An answer other than 200 raises, as a peer's failed INSERT does."""

    def __init__(self, binary, root: pathlib.Path, log_path: pathlib.Path, n: int, threads: int):
        self.server = procs.FastK(binary, root, log_path, unix_socket=False)
        try:
            hc = HttpClient(self.server.http)
            self.registration = register_kline(hc, [feed_symbol(i) for i in range(n)], "1m")
            hc.conn.close()
            self.conns = [HttpClient(self.server.http) for _ in range(threads)]
        except BaseException:
            self.server.stop()
            raise

    def insert(self, t: int, row: tuple) -> None:
        sym, ts, o, h, lo, c, v = row
        body = (f'{{"records":[{{"ts":{ts},"open":{o},"high":{h},"low":{lo},"close":{c},'
                f'"volume":{v}}}]}}').encode()
        status, data = _call(self.conns[t], "POST", f"/v1/kline/{sym}/1m/records", body=body)
        if status != 200:
            raise RuntimeError(f"POST /v1/kline/{sym}/1m/records: {status} {data[:200]!r}")

    def sums(self, n: int) -> np.ndarray:
        return _arrow_sums(n, _fastk_read_back(self.server.flight))

    def close(self):
        for hc in self.conns:
            hc.conn.close()
        self.server.stop()


def _drive(insert, n: int, threads: int, base: int, seconds: float) -> dict:
    """`threads` threads insert bars until `seconds` have passed, thread t cycling through
    the series i with i % threads == t (strictly increasing minutes per series). Each
    thread's count of acknowledged inserts is `per_thread`: its bars are the first that
    many of its cycle (`_driven_sums`)."""
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


def _driven_sums(n: int, threads: int, per_thread: list[int], base: int) -> np.ndarray:
    """The figures of the bars `_drive` had acknowledged: thread t's first per_thread[t]
    inserts of its cycle through the series i % threads == t."""
    idx, minutes = [], []
    for t, k in enumerate(per_thread):
        per = len(range(t, n, threads))
        c = np.arange(k, dtype=np.int64)
        idx.append(t + (c % per) * threads)
        minutes.append(c // per)
    return _bar_sums(n, np.concatenate(idx), np.concatenate(minutes), base)


def _feed_driven(label: str, make, n: int, seconds: int, warm_s: int, bases: tuple[int, int]) -> dict:
    """One system of the like-for-like run: `make()` opens it (an object with insert,
    sums and close), a warm-up and the timed run by `_drive`, then the check."""
    w = make()
    try:
        log(f"feed: {label}, {FEED_THREADS} Python threads, warm-up {warm_s} s, then {seconds} s")
        warm = _drive(w.insert, n, FEED_THREADS, bases[0], warm_s)
        run = _drive(w.insert, n, FEED_THREADS, bases[1], seconds)
        log(f"  {label}: {run['writes_per_s']:,.0f} writes/s, p50 {run.get('p50_ms', 0):.2f} ms, "
            f"p99 {run.get('p99_ms', 0):.2f} ms, errors {run['errors']}")
        run["load_generator"] = "python-threads"
        run["warmup"] = {k: warm[k] for k in ("writes", "writes_per_s", "errors")}
        if getattr(w, "registration", None):
            run["registration"] = w.registration
        bad = []
        if warm["errors"] or run["errors"]:
            bad.append(f"{warm['errors'] + run['errors']} inserts failed: {warm['first_error'] or run['first_error']}")
        want = (_driven_sums(n, FEED_THREADS, warm["per_thread"], bases[0])
                + _driven_sums(n, FEED_THREADS, run["per_thread"], bases[1]))
        got = w.sums(n)
        try:
            _compare_sums(want, got)
        except AssertionError as e:
            bad.append(str(e))
        acked = warm["writes"] + run["writes"]
        if bad:
            run["error"] = "check failed: " + "; ".join(bad)
            log(f"  {label}: {run['error']}")
        else:
            run.update(_check_entry(got, f"= {acked:,} acknowledged inserts"))
            log(f"  checked: {run['checked_rows']:,} rows in {n:,} series")
        return run
    finally:
        w.close()


def _feed_ratios(systems: dict) -> dict:
    """The like-for-like ratios: FastK driven by the Python threads against each peer
    driven by the same threads (writes/s: FastK's over the peer's; p99: the peer's over
    FastK's, so above 1 favours FastK either way). None when either side failed."""
    f = systems.get(FASTK_THREADS) or {}
    out = {}
    for label in (SQLITE_SHARED, SQLITE_CONNS, DUCKDB):
        p = systems.get(label) or {}
        good = "error" not in f and "error" not in p and f.get("writes_per_s") and p.get("writes_per_s")
        out[label] = {"writes_per_s": f["writes_per_s"] / p["writes_per_s"] if good else None,
                      "p99": p["p99_ms"] / f["p99_ms"] if good and f.get("p99_ms") else None}
    return out


def feed(binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, P: dict) -> dict:
    n, seconds, warm_s = FEED_SERIES, P["feed_s"], P["feed_warmup_s"]
    bases = (ms(2024, 1, 1), ms(2024, 2, 1))  # warm-up minutes, then the timed run's
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"series": n, "seconds": seconds, "warmup_s": warm_s, "systems": {}, "how": {}, "skipped": {},
                 "threads": FEED_THREADS,
                 "targets": {"writes_per_s": FEED_TARGET_WRITES_S, "p99_ms": FEED_TARGET_P99_MS,
                             "vs_duckdb": FEED_TARGET_VS_DUCKDB}}
    os.sync()
    out["fdatasync"] = fsync_probe(work)
    log(f"feed: fdatasync on the work volume: p50 {out['fdatasync']['p50_ms']:.3f} ms, "
        f"p99 {out['fdatasync']['p99_ms']:.3f} ms")
    driven = [
        (FASTK_THREADS, lambda: _FastKFeed(binary, work / "fastk-feed-threads", logs / "fastk-feed-threads.log", n,
                                           FEED_THREADS),
         f"{FEED_THREADS} Python threads (the peers' driver), one keep-alive http.client connection each: "
         "POST /v1/kline/{symbol}/1m/records with one record (JSON formatted in the timed call); durable in the "
         "write-ahead log before the answer"),
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
    out["load_generators"] = {
        "python-threads": (f"the like-for-like run: {FEED_THREADS} Python threads (one process, under the GIL), "
                           "thread t cycling through the series i % 8 == t with strictly increasing minutes, each "
                           "insert timed alone (time.perf_counter); the ratios come from this run"),
        "wrk": (f"FastK only: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} (C, event loop) with feed.lua, the same bars; "
                "what the server takes when the client is not the limit; beside the like-for-like run, never "
                "divided by a peer's figure"),
    }
    for label, make, how in driven:
        os.sync()
        out["how"][label] = how
        _attempt(out["systems"], label, lambda make=make, label=label: _feed_driven(label, make, n, seconds, warm_s,
                                                                                    bases))
    if shutil.which("wrk") is None:
        out["skipped"][FASTK_WRK] = "wrk is not installed (scripts/bench.sh installs it with apt-get as root)"
        log(f"feed: {FASTK_WRK}: skipped ({out['skipped'][FASTK_WRK]})")
    else:
        out["how"][FASTK_WRK] = (f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s --latency -s feed.lua: "
                                 "POST /v1/kline/{symbol}/1m/records with one record; each wrk thread cycles "
                                 f"through its own {n // WRK_THREADS:,} series (strictly increasing minutes); "
                                 "durable in the write-ahead log before the answer; latency from wrk's own "
                                 "histogram")
        os.sync()
        _attempt(out["systems"], FASTK_WRK, lambda: _feed_wrk(binary, work / "fastk-feed-wrk",
                                                              logs / "fastk-feed-wrk.log", n, seconds, warm_s, bases))
    out["ratios"] = _feed_ratios(out["systems"])
    out["check_failures"] = _collect_failures(out["systems"])
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


class _ManyInputs:
    """What every way of feed_many writes, built once before any clock: `total` minutes
    of all `n` series' bars, as JSON bodies (HTTP), Arrow tables with a dictionary
    symbol (Flight), row tuples (SQLite) and Arrow tables with a plain symbol (DuckDB),
    and the figures the store must hold afterwards."""

    def __init__(self, n: int, total: int, base: int):
        self.n, self.total, self.base = n, total, base
        self.bodies = []
        for m in range(total):
            recs = [{"symbol": s, "ts": ts, "open": o, "high": h, "low": lo, "close": c, "volume": v}
                    for s, ts, o, h, lo, c, v in _feed_rows(n, base, m)]
            self.bodies.append(json.dumps({"timeframe": "1m", "records": recs}, separators=(",", ":")).encode())
        self.flight_tables = [_minute_table(n, base, m, dictionary=True) for m in range(total)]
        self.rows = [_feed_rows(n, base, m) for m in range(total)]
        self.plain_tables = [_minute_table(n, base, m, dictionary=False) for m in range(total)]
        i = np.tile(np.arange(n, dtype=np.int64), total)
        m = np.repeat(np.arange(total, dtype=np.int64), n)
        self.want = _bar_sums(n, i, m, base)


def _debug_fastk(binary, root: pathlib.Path, log_path: pathlib.Path) -> procs.FastK:
    """A FastK store whose DoPut handler logs each commit's receive and write times and
    whose log committer logs its phases per group (one group per write here): the
    server's own share of each timed write, read from its log afterwards."""
    level = os.environ.get("FASTK_BENCH_LOG", "warn,fastk::server=info")
    saved = os.environ.get("FASTK_BENCH_LOG")
    os.environ["FASTK_BENCH_LOG"] = level + ",fastk::flight::doput=debug,fastk::storage::wal=debug"
    try:
        return procs.FastK(binary, root, log_path, unix_socket=False)
    finally:
        if saved is None:
            os.environ.pop("FASTK_BENCH_LOG", None)
        else:
            os.environ["FASTK_BENCH_LOG"] = saved


def _check_many_answer(raw: bytes, n: int, what: str) -> None:
    a = json.loads(raw)
    assert a["written"] == n and a["inserted"] == n and len(a["series"]) == n, f"{what} answer {str(a)[:200]}"


def _many_fastk_run(way: str, binary, root: pathlib.Path, log_path: pathlib.Path, inp: _ManyInputs,
                    warm: int, gap_s: float) -> dict:
    """One run of a FastK way (FASTK_HTTP or FASTK_FLIGHT) on a fresh store: the timed
    writes, every answer's counts, the whole store read back against what was written,
    then (the server stopped, its log complete) the committer's and DoPut's own times."""
    n, total, minutes = inp.n, inp.total, inp.total - warm
    server = _debug_fastk(binary, root, log_path)
    res: dict = {}
    try:
        hc = HttpClient(server.http)
        res["registration"] = register_kline(hc, [feed_symbol(i) for i in range(n)], "1m")
        answers: list[bytes] = []
        if way == FASTK_HTTP:
            def call(body):
                st, data = _call(hc, "POST", "/v1/kline/records", body=body)
                if st != 200:
                    raise RuntimeError(f"POST /v1/kline/records: {st} {data[:300]!r}")
                answers.append(data)

            times = _timed_minutes(call, inp.bodies, warm, gap_s)
        else:
            fc = flight.connect(f"grpc://{server.flight}")
            try:
                times = _timed_minutes(lambda t: answers.append(_put_raw(fc, ("kline", "*", "1m"), t)),
                                       inp.flight_tables, warm, gap_s)
            finally:
                fc.close()
        res["times"] = times
        for raw in answers:
            _check_many_answer(raw, n, way)
        inv = _inventory(hc)
        res["log"], res["total_files"] = inv.get("log"), inv.get("total_files")
        got = _arrow_sums(n, _fastk_read_back(server.flight))
        _compare_sums(inp.want, got)
        res["sums"] = got
        hc.conn.close()
    finally:
        server.stop()
    # Read once the server has stopped: its log is written behind.
    text = log_path.read_text(errors="replace")
    groups = [{k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
              for line in text.splitlines() if "group committed" in line]
    if len(groups) == total and all(g.get("writes") == 1 for g in groups):
        res["groups"] = groups[warm:]
    split = re.findall(r"DoPut committed rows=(\d+) receive_ms=([\d.]+) write_ms=([\d.]+)", text)
    if way == FASTK_FLIGHT and len(split) >= total:
        res["doput"] = [(float(x[1]), float(x[2])) for x in split[-minutes:]]
    return res


def _many_peer_run(w, inp: _ManyInputs, items: list, call, warm: int, gap_s: float) -> dict:
    """One run of a peer (an open _SqliteFeed or _DuckFeed): the timed writes, then the
    whole table read back against what was written."""
    try:
        times = _timed_minutes(call, items, warm, gap_s)
        got = w.sums(inp.n)
        _compare_sums(inp.want, got)
        return {"times": times, "sums": got}
    finally:
        w.close()


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _per_run(res: dict, position: int, n: int) -> dict:
    """One run's figures as recorded: latency of its timed writes, its place in the run's
    order, the raw times (ms) and what its check read back."""
    times = res["times"]
    out = {**_lat(times), "rows_per_s": n * len(times) / sum(times), "writes": len(times), "position": position,
           "times_ms": [round(t * 1e3, 4) for t in times], "checked_rows": int(res["sums"][:, 0].sum()),
           "checksum": _checksum(res["sums"])}
    for k in ("log", "total_files"):
        if k in res:
            out[k] = res[k]
    return out


def _many_summary(runs: list[dict], raw: list[dict], n: int, minutes: int, warm: int) -> dict:
    """A way over its runs: the median of the runs' medians (the headline), the p99 of
    all its timed writes pooled, the spread (min, median, max) of the runs' medians and
    of their p99s (a run's p99 of 50 writes is its slowest), rows/s over all of them,
    and the checked counts."""
    pooled = [t for r in raw for t in r["times"]]
    lat = _lat(pooled)
    out = {"median_ms": statistics.median(r["median_ms"] for r in runs), "p99_ms": lat["p99_ms"],
           "p90_ms": lat["p90_ms"], "best_ms": lat["best_ms"], "max_ms": lat["max_ms"],
           "pooled_median_ms": lat["median_ms"], "rows_per_s": n * len(pooled) / sum(pooled),
           "writes": len(pooled), "runs": len(runs),
           "spread": {"median_ms": _spread([r["median_ms"] for r in runs]),
                      "p99_ms": _spread([r["p99_ms"] for r in runs])},
           "per_run": runs}
    rows = sum(r["checked_rows"] for r in runs)
    out.update(checked=(f"every run ({len(runs)}) read back whole: {rows:,} rows in all, {n:,} series each with "
                        f"its per-series row count and sums of ts, open, high, low, close and volume equal to "
                        f"those of the {warm} + {minutes} minutes written"),
               checked_rows=rows, checked_runs=len(runs), checked_series=n)
    groups = [g for r in raw for g in r.get("groups") or []]
    if groups and all(r.get("groups") for r in raw):
        out["committer"] = _committer(groups)
    doput = [x for r in raw for x in r.get("doput") or []]
    if doput and all(r.get("doput") for r in raw):
        out["server_receive_ms"] = statistics.median(x[0] for x in doput)
        out["server_write_ms"] = statistics.median(x[1] for x in doput)
    return out


def feed_many(binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, P: dict) -> dict:
    """`runs` runs, each way in each run on a fresh store, the ways' order rotated from
    run to run (interleaved: a slow phase of the machine falls on every way alike)."""
    n, minutes, warm, runs = FEED_SERIES, P["feed_many_minutes"], P["feed_many_warmup"], P["feed_many_runs"]
    gap_s = P.get("feed_many_gap_ms", 0) / 1e3
    total = warm + minutes
    base = ms(2024, 3, 1)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"series": n, "minutes": minutes, "warmup_minutes": warm, "runs": runs, "rows_per_write": n,
                 "target_ms": FEED_MANY_TARGET_MS, "gap_ms": gap_s * 1e3, "systems": {}, "how": {}, "order": []}
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
    out["method"] = (f"{runs} runs; in each, every way writes the same {warm} untimed + {minutes} timed minutes "
                     "into a fresh store of its own, the ways' order rotated by one from run to run. Per way: "
                     "median_ms is the median of the runs' medians, p99_ms the p99 of all its timed writes "
                     "pooled, spread the min / median / max of the runs' medians and of the runs' p99s. Every "
                     "run's store is read back whole and checked against what was written.")
    os.sync()
    out["fdatasync"] = fsync_probe(work)
    log(f"feed_many: {runs} runs interleaved, {warm} + {minutes} minutes of {n:,} bars per way and run")
    inp = _ManyInputs(n, total, base)
    out["http_body_bytes"] = len(inp.bodies[0])

    def way_run(label: str, r: int) -> dict:
        # The stores stay until the workload ends (run() removes them): a FastK store of
        # 2,000 series is 8,000 files, whose removal on a volume mounted with `discard`
        # takes seconds and would still be trimming during the next way's fsyncs.
        d = work / f"{label.replace(' ', '-').lower()}-{r}"
        d.mkdir(parents=True, exist_ok=True)
        if label in (FASTK_HTTP, FASTK_FLIGHT):
            tag = "http" if label == FASTK_HTTP else "flight"
            return _many_fastk_run(label, binary, d / "store", logs / f"fastk-feed-many-{tag}-{r}.log", inp,
                                   warm, gap_s)
        if label == "SQLite":
            w = _SqliteFeed(d / "bars.sqlite", 1, shared=True)
            return _many_peer_run(w, inp, inp.rows, w.insert_many, warm, gap_s)
        w = _DuckFeed(d / "bars.duckdb", 1)
        return _many_peer_run(w, inp, inp.plain_tables, w.insert_arrow, warm, gap_s)

    ways = [FASTK_HTTP, FASTK_FLIGHT, "SQLite", DUCKDB]
    raw: dict = {w: [] for w in ways}
    errors: dict = {}
    for r in range(runs):
        order = ways[r % len(ways):] + ways[:r % len(ways)]
        out["order"].append(order)
        for pos, label in enumerate(order):
            os.sync()
            try:
                res = way_run(label, r)
            except Exception as e:  # noqa: BLE001 - one failing run must not sink the others
                errors.setdefault(label, []).append((isinstance(e, AssertionError),
                                                     f"run {r + 1}: {type(e).__name__}: {str(e)[:300]}"))
                log(f"  run {r + 1}, {label}: FAILED {type(e).__name__}: {e}")
                continue
            res["position"] = pos
            raw[label].append(res)
            lat = _lat(res["times"])
            log(f"  run {r + 1}, {label}: median {lat['median_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms")
            if "registration" in res and "registration" not in out:
                out["registration"] = res["registration"]
    for label in ways:
        done = [_per_run(x, x["position"], n) for x in raw[label]]
        entry = _many_summary(done, raw[label], n, minutes, warm) if done else {"runs": 0, "per_run": []}
        if label in errors:
            # Any failed run fails the way: its figures stay beside the error, unquoted.
            failed = errors[label]
            entry["error"] = ("check failed: " if any(m for m, _ in failed) else "") + "; ".join(x for _, x in failed)
            entry["failed_runs"] = len(failed)
        out["systems"][label] = entry
        if done:
            s = entry["spread"]["median_ms"]
            log(f"  {label}: median of {len(done)} run medians {entry['median_ms']:.2f} ms (runs {s['min']:.2f} .. "
                f"{s['max']:.2f}), pooled p99 {entry['p99_ms']:.2f} ms")
    out["check_failures"] = _collect_failures(out["systems"])
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
    rows = {x["symbol"]: x["rows"] for x in inv["series"]}
    bad = [many_symbol(i) for i in range(n) if rows.get(many_symbol(i)) != YEAR_HOURS]
    assert not bad, f"{len(bad)} series without {YEAR_HOURS} rows, e.g. {bad[0]}: {rows.get(bad[0])}"
    for i in (0, n // 3, n - 1):
        _check_series(fc, tpl, i)
    return (f"{n:,} series, total_rows {inv['total_rows']:,}, every series {YEAR_HOURS:,} rows (inventory); "
            "3 series read back value by value")


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
        res.update(checked_rows=n * YEAR_HOURS, checked_series=n, checked_read_back_series=3)
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
            log("  cross sections after the restart (first call, then warm)")
            res["cross"] = _fastk_cross(again.http, again.flight, again.proc.pid, tpl, n)
            hc2 = HttpClient(again.http)
            fc2 = flight.connect(f"grpc://{again.flight}")
            res["checked"] += "; after the restart: " + _check_store(hc2, fc2, tpl, n)
            res["checked_after_restart"] = True
            fc2.close()
            hc2.conn.close()
        finally:
            again.stop()
        log(f"  checked: {res['checked']}")
        return res
    except Exception as e:  # noqa: BLE001 - what was measured stays beside the error
        log(f"  FastK ({how}): FAILED {type(e).__name__}: {e}")
        return {**res, **_failure(e)}
    finally:
        server.stop()


def _many_duckdb(path: pathlib.Path, tpl: dict, n: int) -> dict:
    """DuckDB's load; a failure (or a failed check) keeps what was measured beside the error."""
    res: dict = {}
    try:
        _many_duckdb_load(path, tpl, n, res)
    except Exception as e:  # noqa: BLE001 - recorded whole, as a failure
        log(f"  DuckDB: FAILED {type(e).__name__}: {e}")
        res.update(_failure(e))
    return res


def _many_duckdb_load(path: pathlib.Path, tpl: dict, n: int, res: dict) -> None:
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    os.sync()
    log(f"many_series: DuckDB, INSERT .. SELECT from Arrow slices of {DUCK_SLICE} series")
    t = time.perf_counter()
    con = duckdb.connect(str(path))
    try:
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
        got = con.execute("SELECT symbol, count(*), sum(close) FROM bars GROUP BY symbol").fetchall()
    finally:
        con.close()
    os.sync()
    files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
    res.update(files=len(files), du_bytes=sum(du(p) for p in files))
    log(f"  on disk: {res['files']} files, {res['du_bytes'] / 1e9:.2f} GB")
    _check_duck_sums(got, tpl, n)
    log("  cross sections on the reopened file (first call, then warm)")
    res["cross"] = _duck_cross(path, tpl, n)
    res.update(checked=(f"{n * YEAR_HOURS:,} rows; every one of the {n:,} series has {YEAR_HOURS:,} rows and the "
                        "sum(close) written"), checked_rows=n * YEAR_HOURS, checked_series=n)


def _check_duck_sums(got: list, tpl: dict, n: int) -> None:
    """Every series' row count and sum(close) (year_table shifts the template's closes by
    a per-series offset) against DuckDB's GROUP BY answer."""
    base = int(np.asarray(tpl["close"]).sum())
    want = {many_symbol(i): (YEAR_HOURS, base + ((i * 7919) % 1_000_000) * YEAR_HOURS) for i in range(n)}
    have = {r[0]: (int(r[1]), int(r[2])) for r in got}
    assert len(have) == n, f"{len(have)} series stored, expected {n}"
    bad = [k for k, v in want.items() if have.get(k) != v]
    assert not bad, f"{len(bad)} series differ, e.g. {bad[0]}: (rows, sum(close)) {have.get(bad[0])} != {want[bad[0]]}"


# ----------------------------------------------------------- many_series: cross sections

# The questions asked of the loaded store, after a restart (FastK) or a reopen (peers):
# the as-of cross section at the year's last hour (every series' last bar, the newest
# partition), and the daily close per symbol over June.
ASOF_AT = ms(2024) - HOUR_MS
DAILY_FROM, DAILY_TO = ms(2023, 6, 1), ms(2023, 7, 1)
DAILY_DAYS = 30
CROSS_REPS = 10
PRICE_SCALE = 100  # register_kline's price_scale
SQL_ASOF = "SELECT symbol, ts, close FROM asof('kline', '1h', TIMESTAMP '2023-12-31 23:00:00')"
SQL_DAILY = ("SELECT symbol, date_bin(INTERVAL '1 day', ts) AS day, last_value(close ORDER BY ts) AS close "
             "FROM kline WHERE timeframe = '1h' AND ts >= TIMESTAMP '2023-06-01 00:00:00' "
             "AND ts < TIMESTAMP '2023-07-01 00:00:00' GROUP BY symbol, day")
DUCK_ASOF = ("SELECT symbol, max(ts) AS ts, arg_max(close, ts) AS close FROM bars "
             "WHERE ts <= TIMESTAMPTZ '2023-12-31 23:00:00+00' GROUP BY symbol")
DUCK_DAILY = ("SELECT symbol, time_bucket(INTERVAL '1 day', ts) AS day, arg_max(close, ts) AS close FROM bars "
              "WHERE ts >= TIMESTAMPTZ '2023-06-01 00:00:00+00' AND ts < TIMESTAMPTZ '2023-07-01 00:00:00+00' "
              "GROUP BY ALL")
SQLITE_ASOF = ("SELECT s.symbol, (SELECT close FROM bars b WHERE b.symbol = s.symbol AND b.ts <= ? "
               "ORDER BY b.ts DESC LIMIT 1) FROM syms s")
# SQLite's bare column: with max(ts) in a GROUP BY, close comes from the row of max(ts).
SQLITE_DAILY = ("SELECT symbol, ts / 86400000 AS day, max(ts), close FROM bars WHERE ts >= ? AND ts < ? "
                "GROUP BY symbol, day")


def _offset(i: int) -> int:
    return (i * 7919) % 1_000_000


def _want_asof(tpl: dict, n: int) -> dict:
    """symbol -> the raw close of its last bar (at ASOF_AT)."""
    last = int(tpl["close"][-1])
    return {many_symbol(i): last + _offset(i) for i in range(n)}


def _want_daily(tpl: dict, n: int) -> tuple[int, int]:
    """(rows, sum of the raw daily closes) of the daily close per symbol over June."""
    first_day = (DAILY_FROM - ms(2023)) // (24 * HOUR_MS)
    closes = [int(tpl["close"][(first_day + d) * 24 + 23]) for d in range(DAILY_DAYS)]
    return n * DAILY_DAYS, n * sum(closes) + DAILY_DAYS * sum(_offset(i) for i in range(n))


def _raw(values, scaled: bool) -> list[int]:
    return [round(v * PRICE_SCALE) for v in values] if scaled else [int(v) for v in values]


def _asof_ok(want: dict, scaled: bool):
    def check(pairs) -> None:
        syms, closes = pairs
        got = dict(zip(syms, _raw(closes, scaled)))
        assert len(got) == len(want) == len(syms), f"as-of: {len(syms)} rows, expected {len(want)}"
        bad = [s for s, c in want.items() if got.get(s) != c]
        assert not bad, f"as-of: {len(bad)} closes differ, e.g. {bad[0]}: {got.get(bad[0])} != {want[bad[0]]}"
    return check


def _daily_ok(want: tuple[int, int], scaled: bool):
    def check(closes) -> None:
        assert len(closes) == want[0], f"daily close: {len(closes)} rows, expected {want[0]}"
        total = sum(_raw(closes, scaled))
        assert total == want[1], f"daily close: sum {total}, expected {want[1]}"
    return check


def _first_then(call, reps: int, check) -> dict:
    """The first call (timed: the cold one) then `reps` timed warm calls; every answer
    checked after its clock stopped."""
    t = time.perf_counter()
    out = call()
    first = time.perf_counter() - t
    check(out)
    times, _ = _timed_calls(call, reps, check)
    return {"first_ms": first * 1e3, "warm": _lat(times), "checked_answers": reps + 1}


def _timed_calls(call, n: int, check) -> tuple[list[float], object]:
    """`n` timed calls, each answer checked after its clock stopped: the times and the
    last answer (None when n is 0)."""
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t)
        check(out)
    return times, out


def _fastk_cross(http: str, flight_addr: str, pid: int, tpl: dict, n: int) -> dict:
    """The cross-section questions of a FastK started on the loaded store, first call
    (the first after the start) and warm: the SQL daily close first, then the as-of
    ticket, then the SQL as-of."""
    from .systems import statement_query

    fc = flight.connect(f"grpc://{flight_addr}")
    try:
        def sql(q: str) -> pa.Table:
            info = fc.get_flight_info(flight.FlightDescriptor.for_command(statement_query(q)))
            parts = [fc.do_get(ep.ticket).read_all() for ep in info.endpoints]
            return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

        def cols(t: pa.Table):
            return t.column("symbol").cast(pa.string()).to_pylist(), t.column("close").to_pylist()

        out: dict = {"rss_before_bytes": _vm(pid, "VmRSS")}
        ticket = {"kind": "kline", "symbols": "*", "timeframe": "1h", "as_of": ASOF_AT}
        out["daily close (SQL)"] = _first_then(lambda: sql(SQL_DAILY).column("close").to_pylist(), CROSS_REPS,
                                               _daily_ok(_want_daily(tpl, n), True))
        out["as-of (DoGet ticket)"] = _first_then(
            lambda: cols(fc.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()), CROSS_REPS,
            _asof_ok(_want_asof(tpl, n), False))
        out["as-of (SQL asof())"] = _first_then(lambda: cols(sql(SQL_ASOF)), CROSS_REPS,
                                                _asof_ok(_want_asof(tpl, n), True))
        out["rss_after_bytes"] = _vm(pid, "VmRSS")
        for k, v in out.items():
            if isinstance(v, dict):
                log(f"  {k}: first {v['first_ms']:.0f} ms, warm p50 {v['warm']['p50_ms']:.1f} ms")
        return out
    finally:
        fc.close()


def _duck_cross(path: pathlib.Path, tpl: dict, n: int) -> dict:
    """The same questions of the DuckDB file, reopened (first call) and warm."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        out: dict = {}
        out["daily close (SQL)"] = _first_then(lambda: [r[2] for r in con.execute(DUCK_DAILY).fetchall()],
                                               CROSS_REPS, _daily_ok(_want_daily(tpl, n), False))

        def asof():
            rows = con.execute(DUCK_ASOF).fetchall()
            return [r[0] for r in rows], [r[2] for r in rows]
        out["as-of (SQL)"] = _first_then(asof, CROSS_REPS, _asof_ok(_want_asof(tpl, n), False))
        for k, v in out.items():
            log(f"  DuckDB {k}: first {v['first_ms']:.0f} ms, warm p50 {v['warm']['p50_ms']:.1f} ms")
        return out
    finally:
        con.close()


def _many_sqlite(path: pathlib.Path, tpl: dict, n: int) -> dict:
    """SQLite: the same rows in one `WITHOUT ROWID` table keyed by (symbol, ts), loaded
    by executemany in one transaction per 100 series; then the cross-section questions
    on a new connection (first call) and warm. A failure keeps what was measured."""
    res: dict = {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        log("many_series: SQLite, executemany into a WITHOUT ROWID table keyed by (symbol, ts)")
        t = time.perf_counter()
        con = sqlite3.connect(str(path))
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = NORMAL")
        con.execute(BARS_DDL + " WITHOUT ROWID")
        con.execute("CREATE TABLE syms (symbol TEXT PRIMARY KEY) WITHOUT ROWID")
        ts = tpl["ts"].cast(pa.int64()).to_numpy().tolist()
        for first in range(0, n, 100):
            with con:
                for i in range(first, min(first + 100, n)):
                    off = _offset(i)
                    s = many_symbol(i)
                    cols = [(tpl[c] + off).tolist() for c in ("open", "high", "low", "close")]
                    vol = (tpl["volume"] + i % 1000).tolist()
                    con.executemany(INSERT, zip([s] * YEAR_HOURS, ts, *cols, vol))
                    con.execute("INSERT INTO syms VALUES (?)", (s,))
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        res["load_s"] = time.perf_counter() - t
        res["rows_per_s"] = n * YEAR_HOURS / res["load_s"]
        os.sync()
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        res.update(files=len(files), du_bytes=sum(du(p) for p in files))
        log(f"  load: {res['load_s']:.1f} s; on disk: {res['files']} files, {res['du_bytes'] / 1e9:.2f} GB")
        con = sqlite3.connect(str(path))
        try:
            def asof():
                rows = con.execute(SQLITE_ASOF, (ASOF_AT,)).fetchall()
                return [r[0] for r in rows], [r[1] for r in rows]
            res["as-of (SQL)"] = _first_then(asof, CROSS_REPS, _asof_ok(_want_asof(tpl, n), False))
            res["daily close (SQL)"] = _first_then(
                lambda: [r[3] for r in con.execute(SQLITE_DAILY, (DAILY_FROM, DAILY_TO)).fetchall()], CROSS_REPS,
                _daily_ok(_want_daily(tpl, n), False))
        finally:
            con.close()
        for k in ("as-of (SQL)", "daily close (SQL)"):
            v = res[k]
            log(f"  SQLite {k}: first {v['first_ms']:.0f} ms, warm p50 {v['warm']['p50_ms']:.1f} ms")
        res["checked"] = "every answer of the cross-section questions (first and warm calls)"
    except Exception as e:  # noqa: BLE001 - recorded whole, as a failure
        log(f"  SQLite: FAILED {type(e).__name__}: {e}")
        res.update(_failure(e))
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
    out["how"][SQLITE] = ("sqlite3, one table (symbol TEXT, ts INTEGER ms, OHLCV INTEGER; PRIMARY KEY (symbol, ts), "
                          "WITHOUT ROWID) and a table of the symbols, WAL mode, synchronous NORMAL; executemany, one "
                          "transaction per 100 series; checkpointed")
    _attempt(out["systems"], SQLITE, lambda: _many_sqlite(work / "sqlite-many" / "bars.sqlite", tpl, n))
    out["cross_how"] = {
        "questions": ("the as-of cross section at 2023-12-31 23:00 UTC (every series' last bar) and the daily close "
                      "per symbol over June 2023 (30 days x every series); first call after a FastK restart or a "
                      f"peer's reopen of its file (page cache warm for all), then {CROSS_REPS} warm calls; every "
                      "answer checked: the as-of close of every symbol, the daily closes' row count and sum"),
        "FastK": ("Flight SQL on one client: " + SQL_DAILY + "; " + SQL_ASOF + "; and the DoGet ticket "
                  + json.dumps({"kind": "kline", "symbols": "*", "timeframe": "1h", "as_of": ASOF_AT})),
        DUCKDB: "duckdb, read-only connection: " + DUCK_DAILY + "; " + DUCK_ASOF,
        SQLITE: "sqlite3, a new connection: " + SQLITE_ASOF + " (through the primary key); " + SQLITE_DAILY,
    }
    out["check_failures"] = _collect_failures(out["systems"])
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


def _timed_n(call, n: int, check) -> tuple[dict, object]:
    """`call` once untimed (warm-up), then `n` timed calls: latency figures and the last
    answer. Every answer, the warm-up's and each timed one's, is passed to `check`
    after its clock stopped (an AssertionError fails the workload)."""
    out = call()
    check(out)
    times, last = _timed_calls(call, n, check)
    out = out if last is None else last
    lat = _lat(times)
    lat["checked_answers"] = n + 1
    return lat, out


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
                         f"on {MANY_THREADS} client threads; then a clean stop (SIGTERM), timed: it finishes the "
                         "queued writes and leaves what the log still holds to the restart's replay "
                         "(storage.fold_on_stop = false, the default). Restart: start, until /health answers 200, page cache warm. Latencies: one warm-up "
                         "call, then timed calls on one keep-alive connection (HTTP) or one Flight client; "
                         "cross section = DoGet {\"kind\": \"kline\", \"symbols\": \"*\", \"timeframe\": \"1h\", "
                         "\"latest\": 1} read into a pyarrow Table; as-of likewise with \"as_of\" at the last "
                         "hour. Every series read once: GetFlightInfo of the whole-store ticket, its endpoints "
                         "pulled on 4 threads, batches counted and dropped. RSS from /proc (VmRSS).")}
    try:
        _series_100k_run(binary, root, logs, tpl, n, hours, out)
    except Exception as e:  # noqa: BLE001 - what was measured stays beside the error
        log(f"series_100k: FAILED {type(e).__name__}: {e}")
        out.update(_failure(e))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["check_failures"] = [f"FastK: {out['error']}"] if str(out.get("error", "")).startswith("check failed") else []
    return out


def _series_100k_run(binary, root: pathlib.Path, logs: pathlib.Path, tpl: dict, n: int, hours: int,
                     out: dict) -> None:
    """series_100k's measurements, written into `out` as they are taken."""
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
        # storage.fold_age_s); a clean stop leaves it to the restart's replay
        # (storage.fold_on_stop = false), and is timed.
        out["log_after_load"] = hc.json("GET", "/inventory?partitions=false&limit=1").get("log")
        log(f"  load {out['load_s']:.1f} s; peak RSS {(out['peak_rss_load_bytes'] or 0) / 1e9:.2f} GB; "
            f"log after the load: {out['log_after_load']}")
        for c in clients:
            c.close()
        hc.conn.close()
        t = time.perf_counter()
        server.proc.terminate()
        server.proc.wait(900)  # with fold_on_stop = true a stop folds first: never killed
        out["stop_fold_s"] = time.perf_counter() - t
        out["stop_folds"] = False
        os.sync()
        out["files"] = _files(root)
        out["du_bytes"] = du(root)
        log(f"  clean stop {out['stop_fold_s']:.1f} s; on disk: {out['files']:,} files, "
            f"{out['du_bytes'] / 1e9:.2f} GB")
        again = Restarted(binary, root, logs / "fastk-100k-restart.log")
        out["restart_s"] = again.ready_s
        out["health_after_restart"] = {k: again.health.get(k) for k in ("status", "series")}
        out["rss_open_bytes"] = _vm(again.proc.pid, "VmRSS")
        log(f"  restart: /health 200 after {again.ready_s:.2f} s; RSS {out['rss_open_bytes'] / 1e6:.0f} MB")
        hc = HttpClient(again.http)
        fc = flight.connect(f"grpc://{again.flight}")
        lat: dict = {}
        out["latency"] = lat  # filled as measured: a failure keeps what came before
        last_ts = ms(2023) + (hours - 1) * HOUR_MS
        want_close = tpl["close"][-1] + (np.arange(n, dtype=np.int64) * 7919) % 1_000_000
        want_sym = [scale_symbol(i) for i in range(n)]

        def health_ok(body: bytes) -> None:
            h = json.loads(body)
            assert h.get("status") == again.health.get("status"), f"/health: {str(h)[:200]}"

        def page_ok(body: bytes) -> None:
            pj = json.loads(body)
            assert len(pj["series"]) == SCALE_PAGE and pj.get("next_after"), "an /inventory page"

        def whole_ok(body: bytes) -> None:
            wj = json.loads(body)
            assert len(wj["series"]) == n and wj["total_rows"] == n * hours, \
                f"/inventory: {len(wj['series'])} series, {wj['total_rows']} rows"

        def flights_ok(infos: list) -> None:
            assert len(infos) == n, f"ListFlights listed {len(infos)} flights, expected {n}"

        def cross_ok(tab: pa.Table) -> None:
            sym = tab.column("symbol").cast(pa.string()).to_pylist()
            assert tab.num_rows == n and sym == want_sym, f"cross section: {tab.num_rows} rows"
            assert np.array_equal(tab.column("close").to_numpy(), want_close), "cross section: close differs"

        lat["/health"], _ = _timed_n(lambda: hc.request("GET", "/health"), 50, health_ok)
        lat[f"/inventory page ({SCALE_PAGE:,} series)"], page = _timed_n(
            lambda: hc.request("GET", f"/inventory?partitions=false&limit={SCALE_PAGE}"), 20, page_ok)
        out["inventory_page_bytes"] = len(page)
        lat["/inventory, every series"], whole = _timed_n(lambda: hc.request("GET", "/inventory?partitions=false"), 3,
                                                          whole_ok)
        out["inventory_whole_bytes"] = len(whole)
        lat["ListFlights, every series"], _ = _timed_n(lambda: list(fc.list_flights()), 3, flights_ok)
        xs = {"kind": "kline", "symbols": "*", "timeframe": "1h", "latest": 1}
        lat["cross section, latest bar of every series (DoGet)"], _ = _timed_n(
            lambda: fc.do_get(flight.Ticket(json.dumps(xs).encode())).read_all(), 10, cross_ok)
        asof = {"kind": "kline", "symbols": "*", "timeframe": "1h", "as_of": last_ts + 30 * MINUTE_MS}
        lat["as-of cross section (DoGet)"], _ = _timed_n(
            lambda: fc.do_get(flight.Ticket(json.dumps(asof).encode())).read_all(), 10, cross_ok)
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
        answers = sum(v["checked_answers"] for v in lat.values())
        out["checked"] = (f"every answer of the timed calls and their warm-ups ({answers}): /inventory: {n:,} series "
                          f"and {n * hours:,} rows; ListFlights: {n:,} flights; the latest-bar and as-of cross "
                          f"sections: {n:,} rows in symbol order with every close as generated; every series read "
                          f"once: {n * hours:,} rows")
        out.update(checked_answers=answers, checked_rows=n * hours, checked_series=n)
        out["goals"] = {
            "restart under 5 s": out["restart_s"] < RESTART_TARGET_S,
            "cross section under 100 ms": lat["cross section, latest bar of every series (DoGet)"]["p50_ms"]
            < CROSS_SECTION_TARGET_MS,
        }
        fc.close()
        hc.conn.close()
    finally:
        if again is not None:
            again.stop()
        server.stop()


# --------------------------------------------------------------------------- driver


def versions() -> dict:
    import duckdb

    wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True) if shutil.which("wrk") else None
    return {"SQLite": sqlite3.sqlite_version, "DuckDB": duckdb.__version__,
            "wrk": (wrk_v.stdout + wrk_v.stderr).split("Copyright")[0].strip() if wrk_v else "not installed"}


def run(which, results: dict, P: dict, *, binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path,
        quick: bool) -> None:
    """Runs the selected feed workloads into `results` (keys `feed`, `feed_many`,
    `many_series`, `series_100k`), each guarded: a failure is recorded and the next one
    runs. A stored answer that differs from what was written is recorded whole under
    the workload's key first, then fails the run (checks.Mismatch, as every workload's
    wrong answer does); the answers checked are tallied in checks.COUNTS."""
    from .market import guarded

    if "feed" in which:
        # Without wrk the like-for-like run still runs; FastK's wrk way is recorded as skipped.
        results["feed"] = guarded("feed", lambda: feed(binary, work / "feed", logs, P))
        for label, why in (results["feed"].get("skipped") or {}).items():
            results.setdefault("skipped", {})[f"feed: {label}"] = why
        shutil.rmtree(work / "feed", ignore_errors=True)
        _settle("feed", results["feed"])
    if "feed_many" in which:
        results["feed_many"] = guarded("feed_many", lambda: feed_many(binary, work / "feed-many", logs, P))
        shutil.rmtree(work / "feed-many", ignore_errors=True)
        _settle("feed_many", results["feed_many"])
    if "many_series" in which:
        results["many_series"] = guarded("many_series", lambda: many_series(binary, work / "many-series", logs, P,
                                                                            quick))
        shutil.rmtree(work / "many-series", ignore_errors=True)
        _settle("many_series", results["many_series"])
    if "series_100k" in which:
        results["series_100k"] = guarded("series_100k", lambda: series_100k(binary, work / "series-100k", logs, P))
        _settle("series_100k", results["series_100k"])


def _checked_count(name: str, d: dict) -> int:
    """The answers of a recorded feed workload that were checked: feed, the single-bar
    writes found stored (one row each); feed_many, the many-series writes (warm-up
    included, every run) whose 2,000 bars were all read back; many_series, the series
    whose rows were checked; series_100k, the timed calls' answers and their warm-ups'."""
    sysd = d.get("systems") or {}
    good = [v for v in sysd.values() if isinstance(v, dict) and "error" not in v]
    if name == "feed":
        return sum(v.get("checked_rows", 0) for v in good)
    if name == "feed_many":
        per = d.get("minutes", 0) + d.get("warmup_minutes", 0)
        return sum(v.get("checked_runs", 0) * per for v in good)
    if name == "many_series":
        return sum(v.get("checked_series", 0) for v in good)
    return d.get("checked_answers", 0) if "error" not in d else 0


def _settle(name: str, d: dict) -> None:
    """Tallies a recorded workload's checked answers; raises checks.Mismatch (the run
    fails) when one of its stored answers differed from what was written."""
    if not isinstance(d, dict):
        return
    n = _checked_count(name, d)
    if n:
        checks.count(name, n)
    fails = d.get("check_failures") or []
    if fails:
        raise checks.Mismatch(f"{name}: " + "; ".join(fails))
