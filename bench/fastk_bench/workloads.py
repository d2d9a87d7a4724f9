"""The workloads. Each takes the systems that can run it and returns plain dicts
(keyed by system label) that go straight into results.json.

Every system answers the same requests in the same order, and results are checked
so that a fast wrong answer cannot win: the untimed warm-up in full, and every timed
answer by its checksum after its clock stopped (checks.py; a mismatch fails the run).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import statistics
import subprocess
import time

import numpy as np
import polars as pl

from . import checks, timing
from .dataset import Dataset, day_ranges, predicate_bounds
from .systems import System

KLINE_ROW_BYTES = 48  # ts + OHLCV, 6 x int64: the Arrow data size of one bar
SCALAR_ROW_BYTES = 16


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def attempt(results: dict, label: str, fn):
    """Runs one system's part of a workload; an error is recorded, not fatal."""
    try:
        results[label] = fn()
    except NotImplementedError:
        pass
    except checks.Mismatch:
        raise  # a wrong answer fails the run
    except Exception as e:  # noqa: BLE001 - one broken peer must not sink the run
        log(f"  {label}: FAILED {type(e).__name__}: {e}")
        results[label] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def memcpy(size_mb: int = 512, reps: int = 5) -> dict:
    """The machine's copy bandwidth: numpy copy of a large array (bytes copied / s)."""
    src = np.ones(size_mb << 20, dtype=np.uint8)
    dst = np.empty_like(src)
    times, _ = timing.repeat(lambda: np.copyto(dst, src), reps)
    return {"bytes": src.nbytes, "best_s": min(times), "gb_s": src.nbytes / min(times) / 1e9}


def ingest(systems: list[System], ds: Dataset, fresh: dict | None = None, repeats: int = 1) -> dict:
    """Times each system's bulk load; with `fresh`, `repeats` loads in all for those systems.

    The first load goes into the store the read workloads then use. For a system in
    `fresh` (label -> callable returning a new instance on an empty store, and a
    function that stops it), `repeats - 1` more loads run round robin over those
    systems, each into a new empty store (the caller removes them all afterwards), and
    the system's figure is the median load. One load on this shared machine moves by up
    to 2x from run to run, which would decide the ranking by chance; the slow loads
    (HTTP, PostgreSQL) run once, after the others. Every load starts after an untimed
    `sync`, so none pays for the writeback of what the loads before it left dirty.
    """
    out: dict = {}
    fresh = fresh or {}

    def load(s: System) -> None:
        log(f"ingest: {s.label}")
        os.sync()  # untimed: every load starts with no dirty pages left by the one before
        attempt(out, s.label, lambda s=s: _stored(s, ds, _rates(s.ingest(ds), ds, s.label)))

    # The contenders' loads all come first; the slow once-only loads (PostgreSQL's is
    # followed by a checkpoint that writes for a minute) must not overlap them.
    for s in systems:
        if s.label in fresh:
            load(s)
    runs = {k: [out[k]] for k in fresh if k in out and "error" not in out[k]}
    for rep in range(1, repeats):
        for label in list(runs):
            def again(label=label):
                system, cleanup = fresh[label]()
                os.sync()
                try:
                    return _stored(system, ds, _rates(system.ingest(ds), ds, f"{label} (load {rep + 1})"))
                finally:
                    cleanup()
            r: dict = {}
            attempt(r, label, again)
            if "error" in r.get(label, {}):
                del runs[label]
            elif label in r:
                runs[label].append(r[label])
    for label, rs in runs.items():
        med = dict(rs[0])
        med["loads"] = len(rs)
        med["checked"] = sum(x.get("checked", 0) for x in rs)
        med["runs"] = [{k: x.get(k) for k in ("kline_s", "scalar_s")} for x in rs]
        for k in ("kline_s", "scalar_s"):
            if rs[0].get(k):
                med[k] = statistics.median(x[k] for x in rs)
        out[label] = _rates(med, ds, f"{label}: median of {len(rs)} loads")
    for s in systems:
        if s.label not in fresh:
            load(s)
    return {s.label: out[s.label] for s in systems if s.label in out}


def _stored(s: System, ds: Dataset, r: dict) -> dict:
    """Checks, off the clock, that a load stored every row it was given (a load of the
    kline only, such as FastK's 3 streams, holds no scalar rows); returns `r`."""
    try:
        got = s.stored_rows()
    except NotImplementedError:
        return r
    want = (ds.kline_rows, ds.scalar.num_rows if r.get("scalar_s") else 0)
    checks.expect("ingest", s.label, tuple(int(x) for x in got), want)
    r["checked"] = r.get("checked", 0) + 1
    return r


def _rates(r: dict, ds: Dataset, label: str) -> dict:
    """Adds row counts and rows/s to one load's timings and logs them under `label`."""
    r["kline_rows"] = ds.kline_rows
    r["scalar_rows"] = ds.scalar.num_rows
    r["kline_rows_per_s"] = ds.kline_rows / r["kline_s"]
    if r.get("scalar_s"):
        r["scalar_rows_per_s"] = ds.scalar.num_rows / r["scalar_s"]
        r["total_rows_per_s"] = (ds.kline_rows + ds.scalar.num_rows) / (r["kline_s"] + r["scalar_s"])
    log(f"  {label}: kline {r['kline_rows_per_s'] / 1e6:.2f} M rows/s"
        + (f", scalar {r['scalar_rows_per_s'] / 1e6:.2f} M rows/s" if r.get("scalar_s") else ""))
    return r


def interleaved(systems: list[System], warm, call, reps: int, budget_s: float | None = None,
                min_reps: int = 3, check=None) -> dict:
    """Times `call(s)` for every system, round robin: rep 1 of each, then rep 2 of each...

    The machine is shared, so load comes and goes; interleaving spreads it over all
    systems instead of penalizing whichever ran during a busy minute. `warm(s)` runs
    once per system first (and checks the result). A system that fails is recorded
    with its error and left out of later rounds. With `budget_s`, no round starts once
    the timed rounds have taken that long and `min_reps` rounds are done.

    `check(s, answer)`, when given, runs on every timed answer after its clock stopped
    (checks.expect: a mismatch raises checks.Mismatch, which fails the run).
    """
    out: dict = {}
    live = []
    for s in systems:
        try:
            warm(s)
            live.append(s)
            out[s.label] = []
        except NotImplementedError:
            pass
        except checks.Mismatch:
            raise
        except Exception as e:  # noqa: BLE001
            log(f"  {s.label}: FAILED {type(e).__name__}: {e}")
            out[s.label] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    t_rounds = time.perf_counter()
    for rep in range(reps):
        if budget_s is not None and rep >= min_reps and time.perf_counter() - t_rounds > budget_s:
            log(f"  time budget of {budget_s:.0f} s spent after {rep} rounds")
            break
        for s in list(live):
            try:
                t = time.perf_counter()
                answer = call(s)
                out[s.label].append(time.perf_counter() - t)
                if check is not None:
                    check(s, answer)
            except checks.Mismatch:
                raise
            except Exception as e:  # noqa: BLE001
                log(f"  {s.label}: FAILED {type(e).__name__}: {e}")
                out[s.label] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                live.remove(s)
    return out


def _times_summary(times: list[float]) -> dict:
    med = statistics.median(times)
    return {"reps": len(times), "median_s": med, "best_s": min(times), "p99_ms": timing.pct(times, 99) * 1e3}


def year_to_polars(systems: list[System], ds: Dataset, reps: int) -> dict:
    """Workload 2: one symbol, one year of 1m bars into a Polars DataFrame."""
    symbol = ds.symbols[0]
    start, end = ds.spec.year_range
    expected = (end - start) // 60_000 + 1
    want = checks.kline_digest(ds.kline[symbol], start, end, ("close", "volume"))

    def warm(s):
        df = s.read_range(symbol, start, end)
        assert isinstance(df, pl.DataFrame)
        assert df.height == expected, f"{df.height} rows, expected {expected}"
        check(s, df)

    def check(s, df):
        checks.expect("year_to_polars", s.label, checks.digest(df, ("close", "volume")), want)

    log("year -> polars: all systems, interleaved")
    raw = interleaved(systems, warm, lambda s: s.read_range(symbol, start, end), reps, check=check)
    out: dict = {}
    for label, times in raw.items():
        if isinstance(times, dict):
            out[label] = times
            continue
        r = _times_summary(times)
        r.update(rows=expected, rows_per_s=expected / r["median_s"],
                 gb_s=expected * KLINE_ROW_BYTES / r["median_s"] / 1e9,
                 best_gb_s=expected * KLINE_ROW_BYTES / r["best_s"] / 1e9, checked=len(times))
        log(f"  {label}: median {r['median_s'] * 1e3:.1f} ms ({r['gb_s']:.2f} GB/s), best {r['best_s'] * 1e3:.1f} ms")
        out[label] = r
    return out


COLOCATED_LOCAL = "FastK local mapping (Unix socket)"
COLOCATED_UNIX = "FastK Flight (Unix socket)"
COLOCATED_TCP = "FastK Flight (loopback TCP)"
COLOCATED_ARCTIC = "ArcticDB"
COLOCATED_PKG_TCP = "FastK package (fastk.read, loopback TCP)"
COLOCATED_PKG_LOCAL = "FastK package (fastk.read local=True, Unix socket)"
COLOCATED_ORDER = (COLOCATED_LOCAL, COLOCATED_PKG_LOCAL, COLOCATED_UNIX, COLOCATED_TCP,
                   COLOCATED_PKG_TCP, COLOCATED_ARCTIC)


def _fastk_package():
    """The repository's client package (clients/python/fastk), as a checkout has it."""
    import importlib
    import sys

    path = str(pathlib.Path(__file__).resolve().parents[2] / "clients" / "python")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("fastk")


def _fastk_local():
    """The repository's co-located client (clients/python/fastk_local.py)."""
    import importlib
    import sys

    path = str(pathlib.Path(__file__).resolve().parents[2] / "clients" / "python")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("fastk_local")


def colocated(server, fastk_tcp: System | None, arctic: System | None, ds: Dataset, reps: int,
              fastk_version: str) -> dict:
    """Colocated: workload 2's year of 1m bars of one symbol into Polars, six ways.

    The two ways of the client package (clients/python, `fastk.read(..., to="polars")`
    over loopback TCP, and with `local=True` over the Unix socket) sit beside the raw
    ways they wrap, in the same interleaved rounds: the package must cost nothing over
    raw `pyarrow.flight` and `fastk_local`.

    FastK's local mapping (the `local-read` action on the Unix socket, then
    clients/python/fastk_local.py maps the planned chunk files: no byte copied
    between the page cache and the table), FastK over its Flight Unix domain socket (`grpc+unix://`, pyarrow.flight with
    `grpc.default_authority=localhost`), FastK over loopback TCP Flight (the same
    server, store and ticket, `fastk_tcp`'s connection) and ArcticDB read in process
    (`read(date_range=..., output_format="polars")`), interleaved round by round.
    `server` is the `procs.FastK` that `fastk_tcp` talks to (None when it did not
    start). Every way's timed call is the read plus `touch`, which reads every value
    returned (sums of the OHLCV columns, min and max of ts): a mapped file is paid for
    as a decompressed one is; the touch's result is checked on every repetition. The warm-up checks every way's row count and every OHLCV column against
    the dataset (and `ts`, where the answer has such a column). `vs_socket` is a
    way's median / the socket's median: above 1, FastK over the socket is faster.
    A way that cannot connect or fails is recorded with its error; the rest run.
    """
    import pyarrow as pa

    from . import systems as sysmod

    symbol = ds.symbols[0]
    start, end = ds.spec.year_range  # inclusive
    src = ds.kline[symbol]
    ts_all = src.column("ts").cast(pa.int64()).to_numpy()
    lo, hi = np.searchsorted(ts_all, start), np.searchsorted(ts_all, end, side="right")
    want = {c: src.column(c).to_numpy()[lo:hi] for c in ("open", "high", "low", "close", "volume")}
    want_ts = ts_all[lo:hi]
    expected = int(hi - lo)
    out: dict = {"symbol": symbol, "start_ts": start, "end_ts": end, "rows": expected,
                 "bytes": expected * KLINE_ROW_BYTES, "socket": None, "how": {}, "systems": {}}
    ticket = {"kind": "kline", "symbol": symbol, "timeframe": "1m", "start_ts": start, "end_ts": end}
    ways: list[Way] = []
    failed: dict = {}
    unix = None
    local = None
    if server is None or fastk_tcp is None:
        failed[COLOCATED_LOCAL] = failed[COLOCATED_UNIX] = failed[COLOCATED_TCP] = {
            "error": "FastK is not running (see skipped)"}
    else:
        try:
            if not server.unix_socket:
                raise RuntimeError(server.unix_error or "fastk serves no Flight unix socket")
            fk_local = _fastk_local()
            local = fk_local.connect(server.unix_socket)
            ways.append(Way(COLOCATED_LOCAL, lambda: fk_local.read_polars(local, ticket)))
            out["how"][COLOCATED_LOCAL] = ("fastk_local.read_polars(fastk_local.connect(socket), "
                                           + json.dumps(ticket) + "): DoAction local-read, pa.memory_map "
                                           "of each planned file once (the year, written in one DoPut, is "
                                           "one pack file), pa.Array.from_buffers, "
                                           "pl.from_arrow(rechunk=False)")
        except Exception as e:  # noqa: BLE001 - a failed row, not a failed run
            log(f"  {COLOCATED_LOCAL}: FAILED {type(e).__name__}: {e}")
            failed[COLOCATED_LOCAL] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        try:
            unix = sysmod.FastKFlightUnix(server, fastk_version)
            out["socket"] = server.unix_socket
            ways.append(Way(COLOCATED_UNIX, lambda: unix.read_range(symbol, start, end)))
            out["how"][COLOCATED_UNIX] = (f"pyarrow.flight.connect('grpc+unix://{server.unix_socket}', "
                                          "generic_options=[('grpc.default_authority', 'localhost')]); DoGet "
                                          + json.dumps(ticket) + ", read_all(), pl.from_arrow")
        except Exception as e:  # noqa: BLE001 - a failed row, not a failed run
            log(f"  {COLOCATED_UNIX}: FAILED {type(e).__name__}: {e}")
            failed[COLOCATED_UNIX] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        ways.append(Way(COLOCATED_TCP, lambda: fastk_tcp.read_range(symbol, start, end)))
        out["how"][COLOCATED_TCP] = (f"pyarrow.flight.connect('grpc://{server.flight}'); DoGet "
                                     + json.dumps(ticket) + ", read_all(), pl.from_arrow")
        try:
            pkg = _fastk_package()
            pkg_tcp = pkg.connect(f"grpc://{server.flight}")
            ways.append(Way(COLOCATED_PKG_TCP, lambda: pkg_tcp.read(
                "kline", symbol, "1m", start=start, end=end, to="polars")))
            out["how"][COLOCATED_PKG_TCP] = (f"fastk.connect('grpc://{server.flight}').read('kline', "
                                             f"{symbol!r}, '1m', start={start}, end={end}, to='polars')")
            if server.unix_socket:
                pkg_unix = pkg.connect(f"grpc+unix://{server.unix_socket}")
                ways.append(Way(COLOCATED_PKG_LOCAL, lambda: pkg_unix.read(
                    "kline", symbol, "1m", start=start, end=end, to="polars", local=True)))
                out["how"][COLOCATED_PKG_LOCAL] = (f"fastk.connect('grpc+unix://{server.unix_socket}')"
                                                   f".read('kline', {symbol!r}, '1m', start={start}, "
                                                   f"end={end}, to='polars', local=True)")
        except Exception as e:  # noqa: BLE001 - a failed row, not a failed run
            log(f"  FastK package: FAILED {type(e).__name__}: {e}")
            failed[COLOCATED_PKG_TCP] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    if arctic is None:
        failed[COLOCATED_ARCTIC] = {"error": "ArcticDB is not loaded (skipped)"}
    else:
        ways.append(Way(COLOCATED_ARCTIC, lambda: arctic.read_range(symbol, start, end)))
        out["how"][COLOCATED_ARCTIC] = ("in process: Library.read(symbol, date_range=(start, end), "
                                        "output_format='polars') from LMDB")

    want_touch = {"rows": expected, **{c: int(v.sum(dtype=np.int64)) for c, v in want.items()},
                  "ts_min": int(want_ts[0]), "ts_max": int(want_ts[-1])}

    def check(w, got: dict):
        # A way whose frame has no ts column (ArcticDB's index) has no ts figures to compare.
        checks.expect("colocated", w.label, got, {k: want_touch[k] for k in got})

    def warm(w):
        df = w.run()
        assert isinstance(df, pl.DataFrame), f"{type(df).__name__}, not a Polars DataFrame"
        assert df.height == expected, f"{df.height} rows, expected {expected}"
        for c, v in want.items():
            assert c in df.columns, f"no {c} column in {df.columns}"
            assert np.array_equal(df[c].to_numpy(), v), f"{c} differs"
        if "ts" in df.columns:
            assert np.array_equal(_ts_ms(df["ts"].to_arrow()), want_ts), "ts differs"
        check(w, touch(df))

    log(f"colocated: {expected:,} bars into Polars by local mapping, over the Unix socket, loopback TCP and in process, interleaved")
    try:
        # Timed: the read and `touch`, which reads every value returned, so a way that
        # only maps files pays for the pages it never faulted in, as a decompressing
        # reader (ArcticDB) pays for every byte.
        raw = interleaved(ways, warm, lambda w: touch(w.run()), reps, check=check)
    finally:
        for c in (unix, local):
            if c is not None:
                try:
                    c.close()
                except Exception:  # noqa: BLE001
                    pass
    raw = {**failed, **raw}
    if server is not None and server.unix_socket:
        # No machine path in results.json: the socket lives in a fresh temp directory.
        shown = "<tmp>/flight.sock"
        out["socket"] = shown if out["socket"] else None
        out["how"] = {k: v.replace(server.unix_socket, shown) for k, v in out["how"].items()}
    sock = raw.get(COLOCATED_UNIX)
    sock_s = statistics.median(sock) if isinstance(sock, list) and sock else None
    for label in COLOCATED_ORDER:
        times = raw.get(label)
        if times is None:
            continue
        if isinstance(times, dict) or not times:
            out["systems"][label] = times if isinstance(times, dict) else {"error": "no timed call"}
            continue
        r = _times_summary(times)
        r.update(median_ms=r["median_s"] * 1e3, best_ms=r["best_s"] * 1e3, rows=expected, checked=len(times),
                 rows_per_s=expected / r["median_s"], gb_s=expected * KLINE_ROW_BYTES / r["median_s"] / 1e9,
                 best_gb_s=expected * KLINE_ROW_BYTES / r["best_s"] / 1e9,
                 vs_socket=r["median_s"] / sock_s if sock_s else None)
        log(f"  {label}: median {r['median_ms']:.1f} ms ({r['gb_s']:.2f} GB/s), best {r['best_ms']:.1f} ms")
        out["systems"][label] = r
    return out


def _epoch_ms(x) -> int:
    """A Polars datetime scalar (naive is UTC) as epoch milliseconds."""
    import datetime as _dt

    if isinstance(x, int):  # a ts column of plain epoch milliseconds
        return x
    if x.tzinfo is None:
        x = x.replace(tzinfo=_dt.timezone.utc)
    return int(x.timestamp()) * 1000 + x.microsecond // 1000


def touch(df: pl.DataFrame) -> dict:
    """Reads every value of a bar frame: the row count, the sum of each OHLCV column
    and the first and last ts (min and max, which read every ts). Timed with the read
    in the colocated workload; its result is the answer's checksum."""
    aggs = [pl.len().alias("rows"), *(pl.col(c).sum() for c in ("open", "high", "low", "close", "volume"))]
    has_ts = "ts" in df.columns
    if has_ts:
        aggs += [pl.col("ts").min().alias("ts_min"), pl.col("ts").max().alias("ts_max")]
    row = df.select(aggs).row(0, named=True)
    out = {k: int(v) for k, v in row.items() if not k.startswith("ts_")}
    if has_ts:
        out["ts_min"], out["ts_max"] = _epoch_ms(row["ts_min"]), _epoch_ms(row["ts_max"])
    return out


def day_range_latency(systems: list[System], ds: Dataset, n: int, budget_s: float) -> dict:
    """Workload 3: random one-day ranges (1440 bars), one request at a time."""
    ranges = day_ranges(ds, n)
    prefix = checks.Prefix(ds.kline)
    out: dict = {}
    for s in systems:
        log(f"day ranges: {s.label}")

        def run(s=s):
            def check(q, df):
                checks.expect("day_ranges", s.label, checks.digest(df), prefix.window(*q))

            sym, a, b = ranges[0]
            assert s.read_range(sym, a, b).height == 1440
            for q in ranges[:20]:  # warm-up: open files, fill caches
                check(q, s.read_range(*q))
            r = timing.latency_loop(lambda q: s.read_range(*q), ranges, budget_s, check)
            log(f"  {s.label}: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms ({r['n']}/{n})")
            return r

        attempt(out, s.label, run)
    return out


def latest_latency(systems: list[System], ds: Dataset, n: int, budget_s: float) -> dict:
    """Workload 4: the latest 100 bars of a symbol, round robin over the symbols."""
    symbols = [ds.symbols[i % len(ds.symbols)] for i in range(n)]
    last_ts = ds.spec.end_ms
    prefix = checks.Prefix(ds.kline)
    out: dict = {}
    for s in systems:
        log(f"latest 100: {s.label}")

        def run(s=s):
            def check(sym, df):
                checks.expect("latest", s.label, checks.digest(df), prefix.last(sym, 100))

            df = s.latest(symbols[0], 100)
            assert df.height == 100
            last = df[-1, 0]
            last_ms = last if isinstance(last, int) else int(last.timestamp() * 1000)
            assert last_ms == last_ts, f"last bar {last} is not the series' last"
            for sym in symbols[:20]:
                check(sym, s.latest(sym, 100))
            r = timing.latency_loop(lambda sym: s.latest(sym, 100), symbols, budget_s, check)
            log(f"  {s.label}: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms ({r['n']}/{n})")
            return r

        attempt(out, s.label, run)
    return out


def predicates(systems: list[System], ds: Dataset, selectivities: list[float], reps: int) -> dict:
    """Workload 5: `value BETWEEN lo AND hi` on the scalar series, ts fetched to the client."""
    out: dict = {}
    rows = ds.scalar.num_rows
    values = ds.scalar.column("value").to_numpy()
    for sel in selectivities:
        lo, hi = predicate_bounds(sel)
        expected = int(np.count_nonzero((values >= lo) & (values <= hi)))

        def warm(s, lo=lo, hi=hi, expected=expected):
            got = s.predicate(lo, hi)
            assert got == expected, f"{got} matches, expected {expected}"

        def check(s, got, expected=expected):
            checks.expect("predicate", s.label, got, expected)

        log(f"predicate {sel}%: all systems, interleaved")
        raw = interleaved(systems, warm, lambda s, lo=lo, hi=hi: s.predicate(lo, hi), reps, check=check)
        per: dict = {}
        for label, times in raw.items():
            if isinstance(times, dict):
                per[label] = times
                continue
            r = _times_summary(times)
            per[label] = {"reps": r["reps"], "median_ms": r["median_s"] * 1e3, "best_ms": r["best_s"] * 1e3,
                          "p99_ms": r["p99_ms"], "rows_scanned_per_s": rows / r["median_s"], "checked": len(times)}
            log(f"  {label}: median {r['median_s'] * 1e3:.2f} ms")
        out[str(sel)] = {"min": lo, "max": hi, "matches": expected, "systems": per}
    return out


def flight_transport(systems: list[System], ds: Dataset, reps: int) -> dict:
    """Issue 4: the whole scalar series over DoGet into Polars, FastK vs the ceilings."""
    n = ds.scalar.num_rows
    want = (n, checks.window(ds.scalar.column("value").to_numpy(), 0, n))

    def check(s, df):
        checks.expect("flight_scalar", s.label, checks.digest(df, ("value",)), want)

    def warm(s):
        df = s.scalar_all()
        assert df.height == n
        check(s, df)

    log("DoGet whole scalar series: interleaved")
    raw = interleaved(systems, warm, lambda s: s.scalar_all(), reps, check=check)
    out: dict = {}
    for label, times in raw.items():
        if isinstance(times, dict):
            out[label] = times
            continue
        r = _times_summary(times)
        r.update(rows=n, rows_per_s=n / r["median_s"], gb_s=n * SCALAR_ROW_BYTES / r["median_s"] / 1e9,
                 best_gb_s=n * SCALAR_ROW_BYTES / r["best_s"] / 1e9, checked=len(times))
        log(f"  {label}: median {r['median_s'] * 1e3:.1f} ms, best {r['best_s'] * 1e3:.1f} ms")
        out[label] = r
    return out


def disk(systems: list[System], ds: Dataset) -> dict:
    out: dict = {}
    for s in systems:
        def run(s=s):
            d = s.disk()
            d["kline_bytes_per_row"] = d["kline_bytes"] / ds.kline_rows
            d["scalar_bytes_per_row"] = d["scalar_bytes"] / ds.scalar.num_rows
            return d

        attempt(out, s.label, run)
    return out


# --------------------------------------------------------------------------- wrk


def _wrk_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def wrk(url: str, threads: int, connections: int, seconds: int) -> dict:
    """`wrk --latency` against one URL; requests/s and the latency percentiles."""
    p = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                       capture_output=True, text=True, timeout=seconds + 60)
    text = p.stdout
    out = {"threads": threads, "connections": connections, "seconds": seconds}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["requests_per_s"] = float(m.group(1)) if m else None
    for pc in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pc}%\s+(\S+)", text, re.M)
        out[f"p{pc}_ms"] = _wrk_ms(m.group(1)) if m else None
    m = re.search(r"Transfer/sec:\s+(\S+)", text)
    out["transfer_per_s"] = m.group(1) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else None
    return out


def http_load(http_addr: str, ds: Dataset, seconds: int) -> dict:
    sym = ds.symbols[0]
    start = ds.spec.year_range[0]
    end = start + 9_999 * 60_000
    base = f"http://{http_addr}/v1/kline/{sym}/1m"
    out = {}
    for name, url in [("latest_100", f"{base}/latest?n=100"),
                      ("range_10000", f"{base}/records?start_ts={start}&end_ts={end}&limit=10000")]:
        for conns in (1, 16):
            log(f"wrk {name} c={conns}")
            r = wrk(url, threads=min(2, conns), connections=conns, seconds=seconds)
            log(f"  {r['requests_per_s']} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
            out[f"{name}_c{conns}"] = r
    return out


# --------------------------------------------------------------------------- SQL


class Way:
    """One way of asking a question (a system and a client path), for `interleaved`."""

    def __init__(self, label: str, run):
        self.label = label
        self.run = run


def iso(ms_: int) -> str:
    """A UTC timestamp literal ('2024-01-01T00:00:00.000Z') that FastK's SQL pushes into the scan."""
    return "'" + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms_ // 1000)) + f".{ms_ % 1000:03d}Z'"


def _ts_ms(col) -> list[int]:
    """A timestamp column of any unit as epoch milliseconds."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(col.type):
        col = pc.cast(col, pa.timestamp("ms", tz=col.type.tz)).cast(pa.int64())
    return col.to_numpy()


def _ordered(ts) -> bool:
    return bool(np.all(np.diff(ts) > 0))


def sql_year(fastk, sql_ways: list[System], ds: Dataset, reps: int) -> dict:
    """SQL 1: one symbol, one year of 1m bars through SQL vs FastK's native DoGet.

    Every way returns an Arrow table in the client (no Polars conversion): the native
    JSON ticket over DoGet, then `SELECT ts, open, ... FROM kline_raw WHERE symbol = ..
    AND timeframe = '1m' AND ts >= .. AND ts < ..` through each SQL client. The warm-up
    checks every column against the dataset. Throughput is rows (and 48 B of Arrow data
    per bar) per second of the median; `of_native` is native time / SQL time, i.e. the
    SQL path's throughput as a fraction of the native DoGet's (target: at least 0.9).
    """
    import pyarrow as pa

    symbol = ds.symbols[0]
    start, end = ds.spec.year_range  # inclusive
    src = ds.kline[symbol]
    ts_all = src.column("ts").cast(pa.int64()).to_numpy()
    lo, hi = np.searchsorted(ts_all, start), np.searchsorted(ts_all, end, side="right")
    want = src.slice(lo, hi - lo)
    expected = want.num_rows
    ticket = {"kind": "kline", "symbol": symbol, "timeframe": "1m", "start_ts": start, "end_ts": end}
    query = (f"SELECT ts, open, high, low, close, volume FROM kline_raw WHERE symbol = '{symbol}' "
             f"AND timeframe = '1m' AND ts >= {iso(start)} AND ts < {iso(end + 60_000)}")
    ways = [Way("FastK DoGet (native ticket)", lambda: fastk._get(ticket))]
    ways += [Way(s.label, lambda s=s: s.sql(query)) for s in sql_ways]
    ordered: dict = {}

    def warm(w):
        t = w.run()
        assert t.num_rows == expected, f"{t.num_rows} rows, expected {expected}"
        ts = _ts_ms(t.column(0))
        ordered[w.label] = _ordered(ts)
        if not ordered[w.label]:  # no ORDER BY in the query: compare as a set of rows
            t = t.take(np.argsort(ts, kind="stable"))
            ts = _ts_ms(t.column(0))
        assert np.array_equal(ts, ts_all[lo:hi]), "timestamps differ"
        for i, c in enumerate(("open", "high", "low", "close", "volume"), start=1):
            assert np.array_equal(t.column(i).to_numpy(), want.column(c).to_numpy()), f"{c} differs"

    want_digest = checks.kline_digest(src, start, end, ("close", "volume"))

    def check(w, t):
        checks.expect("sql_year", w.label, checks.digest(t, ("close", "volume")), want_digest)

    log(f"SQL year: {expected:,} bars, native DoGet vs SQL, interleaved")
    raw = interleaved(ways, warm, lambda w: w.run(), reps, check=check)
    out: dict = {"query": query, "rows": expected, "systems": {}}
    native = raw.get(ways[0].label)
    native_s = statistics.median(native) if isinstance(native, list) and native else None
    for label, times in raw.items():
        if isinstance(times, dict):
            out["systems"][label] = times
            continue
        r = _times_summary(times)
        r.update(rows=expected, rows_per_s=expected / r["median_s"],
                 mb_s=expected * KLINE_ROW_BYTES / r["median_s"] / 1e6,
                 best_mb_s=expected * KLINE_ROW_BYTES / r["best_s"] / 1e6,
                 ordered=ordered.get(label), checked=len(times),
                 of_native=native_s / r["median_s"] if native_s else None)
        log(f"  {label}: median {r['median_s'] * 1e3:.1f} ms ({r['mb_s']:.0f} MB/s)"
            + (f", {r['of_native'] * 100:.0f}% of native" if r["of_native"] else ""))
        out["systems"][label] = r
    return out


HOUR_MS = 3_600_000


def resample_queries(symbol: str, start: int, end_excl: int, duck_srcs: dict | None = None) -> dict:
    """The 1m -> 1h OHLCV resample in each dialect: bucket, first open, max high, min low,
    last close, sum volume, on the stored int64 values, `ts` in [start, end_excl).
    `duck_srcs` maps a key of the answer (`duckdb`, `duckdb_table`) to the FROM clause
    of a DuckDB adapter (its Parquet file, or its table)."""
    datafusion = ("SELECT date_bin(INTERVAL '1 hour', ts) AS bucket, first_value(open ORDER BY ts) AS open, "
                  "max(high) AS high, min(low) AS low, last_value(close ORDER BY ts) AS close, "
                  "sum(volume) AS volume FROM {table} WHERE {where} GROUP BY 1 ORDER BY 1")
    q = {
        "fastk": datafusion.format(table="kline_raw", where=(
            f"symbol = '{symbol}' AND timeframe = '1m' AND ts >= {iso(start)} AND ts < {iso(end_excl)}")),
        "roapi": datafusion.format(table=symbol.lower(), where=(
            f"ts >= to_timestamp_millis({start}) AND ts < to_timestamp_millis({end_excl})")),
    }
    from .systems import tstz

    for key, src in (duck_srcs or {}).items():
        # DuckDB: time_bucket is date_bin; arg_min/arg_max(x, ts) are first/last by ts;
        # sum(BIGINT) is HUGEINT in DuckDB, cast back to BIGINT like the others.
        q[key] = ("SELECT time_bucket(INTERVAL 1 hour, ts) AS bucket, arg_min(open, ts) AS open, "
                  "max(high) AS high, min(low) AS low, arg_max(close, ts) AS close, "
                  f"sum(volume)::BIGINT AS volume FROM {src} "
                  f"WHERE ts >= {tstz(start)} AND ts < {tstz(end_excl)} GROUP BY 1 ORDER BY 1")
    return q


def _hourly(table, start: int, end_excl: int) -> dict:
    """The expected 1h OHLCV of 1m bars in [start, end_excl), computed in numpy."""
    import pyarrow as pa

    ts = table.column("ts").cast(pa.int64()).to_numpy()
    keep = (ts >= start) & (ts < end_excl)
    ts = ts[keep]
    cols = {c: table.column(c).to_numpy()[keep] for c in ("open", "high", "low", "close", "volume")}
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    cols = {c: v[order] for c, v in cols.items()}
    bucket = ts - ts % HOUR_MS
    first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    last = np.r_[first[1:] - 1, len(ts) - 1]
    return {"bucket": bucket[first], "open": cols["open"][first], "high": np.maximum.reduceat(cols["high"], first),
            "low": np.minimum.reduceat(cols["low"], first), "close": cols["close"][last],
            "volume": np.add.reduceat(cols["volume"], first)}


def sql_resample(fastk_sql: System, ducks: list, roapi: System | None, ds: Dataset, reps: int) -> dict:
    """SQL 2: one year of 1m bars of one symbol resampled to 1h OHLCV by SQL.

    FastK (Flight SQL via ADBC, table kline_raw), DuckDB over its own Parquet file of the
    symbol and DuckDB over its native table (`ducks`: the adapters present), ROAPI (Flight SQL via ADBC, its in-memory copy of Polars' Parquet file), the
    same semantics in each dialect (see `resample_queries`), answers as Arrow tables.
    The warm-up checks every system's buckets and values against numpy's (the values
    are int64 everywhere, so they must match exactly; compared with a 1e-9 relative
    tolerance in case a system answers floats). `vs_fastk` is system time / FastK time:
    above 1, FastK is faster (target: FastK first).
    """
    symbol = ds.symbols[0]
    start, end = ds.spec.year_range
    end_excl = end + 60_000
    want = _hourly(ds.kline[symbol], start, end_excl)
    from .systems import DuckDBTable

    ducks = {("duckdb_table" if isinstance(d, DuckDBTable) else "duckdb"): d for d in ducks if d is not None}
    queries = resample_queries(symbol, start, end_excl, {k: d.src(symbol) for k, d in ducks.items()})
    ways = [Way(fastk_sql.label, lambda: fastk_sql.sql(queries["fastk"]))]
    for key, d in ducks.items():
        ways.append(Way(d.label, lambda d=d, key=key: d.sql(queries[key])))
    if roapi is not None:
        ways.append(Way(roapi.label, lambda: roapi.sql(queries["roapi"])))

    def warm(w):
        t = w.run()
        n = len(want["bucket"])
        assert t.num_rows == n, f"{t.num_rows} buckets, expected {n}"
        assert np.array_equal(_ts_ms(t.column(0)), want["bucket"]), "bucket timestamps differ"
        for i, c in enumerate(("open", "high", "low", "close", "volume"), start=1):
            got = np.asarray(t.column(i).to_numpy(), dtype=np.float64)
            assert np.allclose(got, want[c].astype(np.float64), rtol=1e-9, atol=0), f"{c} differs"

    want_digest = (len(want["bucket"]), int(want["close"].sum()), int(want["volume"].sum()))

    def check(w, t):
        checks.expect("sql_resample", w.label, checks.digest(t, ("close", "volume")), want_digest)

    log(f"SQL resample 1m -> 1h ({len(want['bucket']):,} buckets): interleaved")
    raw = interleaved(ways, warm, lambda w: w.run(), reps, check=check)
    out: dict = {"buckets": int(len(want["bucket"])), "bars": (end_excl - start) // 60_000,
                 "queries": {k: _no_paths(q, ducks.values()) for k, q in queries.items()}, "systems": {}}
    fk = raw.get(fastk_sql.label)
    fk_s = statistics.median(fk) if isinstance(fk, list) and fk else None
    for label, times in raw.items():
        if isinstance(times, dict):
            out["systems"][label] = times
            continue
        r = _times_summary(times)
        r.update(median_ms=r["median_s"] * 1e3, best_ms=r["best_s"] * 1e3,
                 input_rows_per_s=out["bars"] / r["median_s"], checked=len(times),
                 vs_fastk=r["median_s"] / fk_s if fk_s else None)
        log(f"  {label}: median {r['median_ms']:.1f} ms, best {r['best_ms']:.1f} ms")
        out["systems"][label] = r
    return out


def _no_paths(query: str, ducks) -> str:
    """A query as recorded in results.json: no machine path (a Parquet file by its name)."""
    for d in ducks:
        query = query.replace(f"{d.root}/", "")
    return query


def sql_predicate(fastk, sql_ways: list[System], ds: Dataset, selectivities: list[float], reps: int) -> dict:
    """SQL 3: workload 5's value range on the scalar series through SQL vs native.

    Native: FastK's DoGet predicate ticket exactly as workload 5 calls it (matching ts
    only). SQL: `SELECT ts FROM scalar_i64 (or scalar, by the series' value type) WHERE
    symbol = .. AND timeframe = .. AND category = .. AND name = .. AND value BETWEEN lo
    AND hi`. `vs_native` is SQL time / native time (target: at most 1.2).
    """
    import pyarrow as pa

    from .systems import SCALAR_KEY

    table = "scalar_i64" if pa.types.is_integer(ds.scalar.schema.field("value").type) else "scalar"
    keys = " AND ".join(f"{k} = '{v}'" for k, v in {"timeframe": "1m", **SCALAR_KEY}.items())
    values = ds.scalar.column("value").to_numpy()
    out: dict = {"table": table, "selectivities": {}}
    for sel in selectivities:
        lo, hi = predicate_bounds(sel)
        expected = int(np.count_nonzero((values >= lo) & (values <= hi)))
        query = f"SELECT ts FROM {table} WHERE {keys} AND value BETWEEN {lo} AND {hi}"
        ways = [Way("FastK DoGet (native predicate)", lambda lo=lo, hi=hi: fastk.predicate(lo, hi))]
        ways += [Way(s.label, lambda s=s, q=query: s.sql(q).num_rows) for s in sql_ways]

        def warm(w, expected=expected):
            got = w.run()
            assert got == expected, f"{got} matches, expected {expected}"

        def check(w, got, expected=expected):
            checks.expect("sql_predicate", w.label, got, expected)

        log(f"SQL predicate {sel}%: native vs SQL, interleaved")
        raw = interleaved(ways, warm, lambda w: w.run(), reps, check=check)
        native = raw.get(ways[0].label)
        native_s = statistics.median(native) if isinstance(native, list) and native else None
        per: dict = {}
        for label, times in raw.items():
            if isinstance(times, dict):
                per[label] = times
                continue
            r = _times_summary(times)
            per[label] = {"reps": r["reps"], "median_ms": r["median_s"] * 1e3, "best_ms": r["best_s"] * 1e3,
                          "p99_ms": r["p99_ms"], "vs_native": r["median_s"] / native_s if native_s else None,
                          "checked": len(times)}
            log(f"  {label}: median {r['median_s'] * 1e3:.2f} ms")
        out["selectivities"][str(sel)] = {"min": lo, "max": hi, "matches": expected, "query": query,
                                          "systems": per}
    return out
