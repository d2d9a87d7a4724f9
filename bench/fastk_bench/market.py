"""The market-query workloads (docs/market-queries.md): what market-data users ask
every store for, without SQL.

- `resample`: one year of 1m bars of one symbol (the kline dataset's calendar 2024,
  527,040 bars) resampled on read to 1h and to 1d OHLCV. FastK over Flight (one ticket
  with `resample`, the stream read into an Arrow Table) and over HTTP (`GET
  .../records?resample=..`, JSON into Polars) against ArcticDB (`read` with
  `QueryBuilder().resample(..).agg(..)`), DuckDB (`time_bucket` over its Parquet file)
  and Polars (`group_by_dynamic` over its Parquet file). Target: FastK first.
- `asof`: the as-of cross section. Thousands of series of 1m bars over a few days
  (`dataset.cross_section`), the last bar at or before T of every series. FastK: one
  Flight ticket `{"symbols": "*", "as_of": T}` on a store of its own (so `*` is
  exactly these series); FastK's HTTP batch (100 series a request, its default cap)
  and the same question in SQL (`SELECT ... FROM asof('kline_raw', '1m', T)` through
  one ADBC cursor) are shown beside it. Peers: ArcticDB `read_batch` with a date_range + tail(1)
  QueryBuilder, DuckDB over one Parquet file of every series (`DISTINCT ON` and
  `arg_max`), Polars over its own such file, PostgreSQL with a primary key (symbol,
  ts) (`DISTINCT ON`, and a LATERAL probe per symbol). Target: FastK first.
- `coverage`: coverage and gaps of ten years of 1m bars with holes
  (`dataset.gap_series`): FastK `GET /v1/kline/{symbol}/1m/coverage` (and the Flight
  action) on a store of its own; DuckDB (Parquet and table), Polars and chDB answer
  the same question with a lag/diff query. Cold (the first call after a FastK
  restart, or after a peer reopens its connection) and warm, the same repetitions
  for every system; target under 10 ms warm.

DuckDB as a database (`DuckDBTable`) and chDB join every market query as peers.
Every answer is checked against numpy before it is timed, and every timed answer's
checksum after its clock stopped (checks.py). A FastK call that fails
(a server without these reads, an error status) is recorded as a failed measurement
and the run goes on; so is a failing peer.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np
import pyarrow as pa
import polars as pl

from . import checks, dataset
from .dataset import MINUTE_MS, CrossSection, Dataset, GapSeries
from .workloads import Way, _times_summary, _ts_ms, interleaved, log

FASTK = "FastK Flight"
FASTK_HTTP = "FastK HTTP"
FASTK_SQL_ASOF = "FastK Flight SQL asof() (ADBC)"
OHLCV = ("open", "high", "low", "close", "volume")
COVERAGE_TARGET_MS = 10.0


def _err(e: BaseException) -> dict:
    return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def guarded(name: str, fn) -> dict:
    """One whole workload; a bug or a missing dependency is recorded, not fatal."""
    try:
        return fn()
    except checks.Mismatch:
        raise  # a wrong answer fails the run
    except Exception as e:  # noqa: BLE001 - the rest of the run must go on
        log(f"{name}: FAILED {type(e).__name__}: {e}")
        return _err(e)


def columns(result) -> dict:
    """An answer (Arrow Table, Polars or pandas DataFrame) as numpy columns: timestamps
    (any unit, any zone) as epoch ms, strings and dictionaries as Python strings."""
    if isinstance(result, pl.DataFrame):
        result = result.to_arrow()
    elif not isinstance(result, pa.Table):  # pandas
        result = pa.Table.from_pandas(result)
    out = {}
    for name in result.column_names:
        col = result.column(name)
        if pa.types.is_timestamp(col.type):
            out[name] = np.asarray(_ts_ms(col))
        elif pa.types.is_dictionary(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type) \
                or pa.types.is_string_view(col.type):
            out[name] = np.array(col.to_pylist(), dtype=object)
        else:
            out[name] = col.to_numpy()
    return out


def _bucket_col(c: dict) -> np.ndarray:
    for name in ("ts", "bucket", "time", "index"):
        if name in c:
            return c[name]
    raise AssertionError(f"no bucket timestamp column in {list(c)}")


def check_buckets(result, want: dict) -> None:
    c = columns(result)
    ts = _bucket_col(c)
    n = len(want["ts"])
    assert len(ts) == n, f"{len(ts)} buckets, expected {n}"
    assert np.array_equal(ts, want["ts"]), "bucket timestamps differ"
    for k in OHLCV:
        assert k in c, f"no {k} column in {list(c)}"
        got = np.asarray(c[k], dtype=np.float64)
        assert np.allclose(got, want[k].astype(np.float64), rtol=1e-9, atol=0), f"{k} differs"


def check_asof(result, expected: pa.Table) -> None:
    c = columns(result)
    want = columns(expected)
    assert "symbol" in c, f"no symbol column in {list(c)}"
    n = len(want["symbol"])
    assert len(c["symbol"]) == n, f"{len(c['symbol'])} series answered, expected {n}"
    order = np.argsort(c["symbol"].astype(str), kind="stable")
    assert np.array_equal(c["symbol"][order], want["symbol"]), "symbols differ"
    assert np.array_equal(np.asarray(c["ts"])[order], want["ts"]), "ts differs"
    for k in OHLCV:
        assert np.array_equal(np.asarray(c[k])[order], want[k]), f"{k} differs"


def check_coverage(ans: dict, ref: dict, max_gaps: int = 1000) -> None:
    """FastK's coverage answer against numpy (24x7, default range, complete_n 1)."""
    for k in ("start_ts", "end_ts", "timeframe_ms", "expected", "present", "gap_count", "last_complete_ts",
              "last_run"):
        assert ans.get(k) == ref[k], f"{k}: {ans.get(k)!r}, expected {ref[k]!r}"
    assert ans.get("extra") == 0, f"extra: {ans.get('extra')!r}, expected 0"
    listed = min(ref["gap_count"], max_gaps)
    assert ans.get("gaps_truncated") == (ref["gap_count"] > max_gaps), "gaps_truncated"
    gaps = ans.get("gaps") or []
    assert len(gaps) == listed, f"{len(gaps)} gaps listed, expected {listed}"
    got = np.array([[g["start_ts"], g["end_ts"], g["missing"]] for g in gaps], dtype=np.int64).reshape(-1, 3)
    assert np.array_equal(got, ref["gaps"][:listed]), "gaps differ"


def check_gaps(ans: dict, ref: dict) -> None:
    """A peer's gap query against numpy: counts, range and every gap."""
    for k in ("start_ts", "end_ts", "expected", "present"):
        assert int(ans[k]) == ref[k], f"{k}: {ans[k]!r}, expected {ref[k]!r}"
    c = columns(ans["gaps"])
    got = np.stack([np.asarray(c[k], dtype=np.int64) for k in ("start_ts", "end_ts", "missing")], axis=1) \
        if len(c["start_ts"]) else np.empty((0, 3), dtype=np.int64)
    assert np.array_equal(got, ref["gaps"]), f"{len(got)} gaps, expected {ref['gap_count']} (or they differ)"


def summarize(raw: dict, headline: str = FASTK, per_s: int | None = None) -> dict:
    """Per way: median, best, p99 (ms), and `vs_fastk` = its median / the headline
    FastK way's (above 1: FastK is faster)."""
    out: dict = {}
    head = raw.get(headline)
    head_s = statistics.median(head) if isinstance(head, list) and head else None
    for label, times in raw.items():
        if isinstance(times, dict) or not times:
            out[label] = times if isinstance(times, dict) else {"error": "no timed call"}
            continue
        r = _times_summary(times)
        r.update(median_ms=r["median_s"] * 1e3, best_ms=r["best_s"] * 1e3, checked=len(times),
                 vs_fastk=r["median_s"] / head_s if head_s else None)
        if per_s:
            r["input_rows_per_s"] = per_s / r["median_s"]
        log(f"  {label}: median {r['median_ms']:.2f} ms, best {r['best_ms']:.2f} ms")
        out[label] = r
    return out


# --------------------------------------------------------------------------- resample


def resample(ways_systems: list, ds: Dataset, reps: int, targets=("1h", "1d")) -> dict:
    """One year of 1m bars of one symbol to each target, every system interleaved."""
    symbol = ds.symbols[0]
    start, end = ds.spec.year_range  # inclusive
    bars = (end - start) // MINUTE_MS + 1
    out: dict = {"symbol": symbol, "start_ts": start, "end_ts": end, "bars": bars, "targets": {}, "how": {}}
    sysl = [s for s in ways_systems if s is not None]
    for s in sysl:
        out["how"][s.label] = _resample_how(s, symbol, start, end)
    for tf in targets:
        want = dataset.ohlcv_buckets(ds.kline[symbol], start, end + MINUTE_MS, dataset.bucket_width_ms(tf))
        ways = [Way(s.label, lambda s=s, tf=tf: s.resample(symbol, start, end, tf)) for s in sysl]
        want_digest = (len(want["ts"]), int(want["close"].sum()), int(want["volume"].sum()))

        def check(w, answer, want_digest=want_digest):
            checks.expect("market_resample", w.label, checks.digest(answer, ("close", "volume")), want_digest)

        def warm(w, want=want, check=check):
            answer = w.run()
            check_buckets(answer, want)
            check(w, answer)

        log(f"market resample 1m -> {tf}: {bars:,} bars into {len(want['ts']):,} buckets, interleaved")
        raw = interleaved(ways, warm, lambda w: w.run(), reps, check=check)
        out["targets"][tf] = {"buckets": int(len(want["ts"])), "systems": summarize(raw, per_s=bars)}
    return out


def _resample_how(s, symbol: str, start: int, end: int) -> str:
    from . import systems

    if isinstance(s, systems.FastKFlight):
        return ("DoGet " + json.dumps({"kind": "kline", "symbol": symbol, "timeframe": "1m", "start_ts": start,
                                       "end_ts": end, "resample": {"timeframe": "<tf>"}}) + ", read_all() to a Table")
    if isinstance(s, systems.FastKHttp):
        return (f"GET /v1/kline/{symbol}/1m/records?start_ts=..&end_ts=..&resample=<tf>&limit=100000 "
                "(paged by next_start_ts), JSON records into Polars")
    if isinstance(s, systems.Arctic):
        return ("read(symbol, date_range=.., query_builder=QueryBuilder().resample('<tf>').agg({open: first, "
                "high: max, low: min, close: last, volume: sum}), output_format='pyarrow')")
    if isinstance(s, systems.DuckDB):
        return systems.DuckDB.RESAMPLE.format(interval="<tf>", src=_duck_src(s, "<symbol>"), start="..",
                                              end="..") + "; to_arrow_table()"
    return getattr(s, "RESAMPLE_HOW", "?")


def _duck_src(p, name: str) -> str:
    """A DuckDB adapter's FROM clause for `name`, with the file name only (no machine path)."""
    from . import systems

    if isinstance(p, systems.DuckDBTable):
        return p.src(name)
    return f"read_parquet('{name}.parquet')"


def _duck_market_src(p, name: str) -> str:
    from . import systems

    if isinstance(p, systems.DuckDBTable):
        return p.market_src(name)
    return f"read_parquet('{name}.parquet')"


# --------------------------------------------------------------------------- as-of


def asof(xs: CrossSection, make_fastk, peers: list, reps: int, budget_s: float) -> dict:
    """The last bar at or before T of every series, every way interleaved.

    `make_fastk()` starts a FastK store of its own and returns (FastKFlight, FastKHttp,
    stop); each peer stores the cross section with `asof_load` (setup, timed and
    reported, not part of the measurement).
    """
    from . import systems

    t_as_of = xs.as_of
    out: dict = {"as_of": t_as_of, "series": len(xs.symbols), "bars": xs.rows, "answered": xs.expected.num_rows,
                 "notes": xs.notes, "setup_s": {}, "how": {}, "queries": {}, "systems": {}}
    ways: list[Way] = []
    stop = None
    closers: list = []
    try:
        # FastK first: its 2,000 DoPuts keep both cores busy; the peers load after it.
        log(f"as-of: loading {len(xs.symbols):,} series ({xs.rows:,} bars) into a FastK store of its own")
        try:
            if make_fastk is None:
                raise RuntimeError("no FastK binary to start")
            fl, http, stop = make_fastk()
            out["setup_s"][FASTK] = fl.load_series(((s, xs.series(i)) for i, s in enumerate(xs.symbols)), streams=3)
            log(f"  FastK: {out['setup_s'][FASTK]:.1f} s")
            ways.append(Way(FASTK, lambda: fl.asof_all(t_as_of)))
            out["how"][FASTK] = "DoGet " + json.dumps({"kind": "kline", "symbols": "*", "timeframe": "1m",
                                                       "as_of": t_as_of}) + ", read_all() to a Table"
            batches = -(-len(xs.symbols) // 100)
            http_label = f"{FASTK_HTTP} ({batches} batches of 100)"
            ways.append(Way(http_label, lambda: http.asof_batches(xs.symbols, t_as_of)))
            out["how"][http_label] = ("POST /v1/kline/batch {timeframe, symbols: [100 names], as_of}, one request "
                                      "after the other on one keep-alive connection, records into one Polars "
                                      "DataFrame (http.max_batch_series is 100 by default)")
            # The same question in SQL: the asof() table function over one ADBC cursor.
            sql = systems.FastKSql(fl.server, "", "adbc")
            closers.append(sql.close)
            q = ("SELECT symbol, ts, open, high, low, close, volume "
                 f"FROM asof('kline_raw', '1m', {t_as_of})")
            ways.append(Way(FASTK_SQL_ASOF, lambda: sql.sql(q)))
            out["queries"][FASTK_SQL_ASOF] = q
        except Exception as e:  # noqa: BLE001
            log(f"  FastK: FAILED {type(e).__name__}: {e}")
            out["systems"][FASTK] = _err(e)
        for p in peers:
            if p is None:
                continue
            log(f"as-of: loading into {p.label}")
            try:
                out["setup_s"][p.label] = p.asof_load(xs)
                log(f"  {p.label}: {out['setup_s'][p.label]:.1f} s")
            except Exception as e:  # noqa: BLE001
                log(f"  {p.label}: FAILED {type(e).__name__}: {e}")
                out["systems"][p.label] = _err(e)
                continue
            if isinstance(p, systems.Arctic):
                ways.append(Way(p.label, lambda p=p: p.asof(t_as_of)))
                out["how"][p.label] = systems.Arctic.ASOF_HOW
            elif isinstance(p, systems.DuckDB):
                for variant, label in (("distinct_on", p.label), ("arg_max", f"{p.label} (arg_max)")):
                    ways.append(Way(label, lambda p=p, v=variant: p.asof(t_as_of, v)))
                    out["queries"][label] = systems.DuckDB.ASOF[variant].format(src=_duck_market_src(p, "xs"),
                                                                               t=systems.tstz(t_as_of))
            elif isinstance(p, systems.Polars):
                ways.append(Way(p.label, lambda p=p: p.asof(t_as_of)))
                out["how"][p.label] = systems.Polars.ASOF_HOW
            elif isinstance(p, systems.Postgres):
                for variant, label in (("distinct_on", p.label), ("lateral", f"{p.label} (LATERAL)")):
                    ways.append(Way(label, lambda p=p, v=variant: p.asof(t_as_of, v)))
                    out["queries"][label] = systems.Postgres.ASOF[variant]
            else:
                ways.append(Way(p.label, lambda p=p: p.asof(t_as_of)))
                out["how"][p.label] = getattr(p, "ASOF_HOW", "?")
        os.sync()  # untimed: the loads' dirty pages are written before the first timed call
        log(f"as-of cross section at {t_as_of} over {len(xs.symbols):,} series: interleaved")
        want_digest = checks.digest(xs.expected, ("close", "volume"))

        def check(w, answer):
            checks.expect("market_asof", w.label, checks.digest(answer, ("close", "volume")), want_digest)

        def warm(w):
            answer = w.run()
            check_asof(answer, xs.expected)
            check(w, answer)

        raw = interleaved(ways, warm, lambda w: w.run(), reps, budget_s=budget_s, check=check)
        out["systems"].update(summarize(raw))
    finally:
        for close in closers:
            try:
                close()
            except Exception as e:  # noqa: BLE001
                log(f"  closing a client of the as-of FastK store failed: {e}")
        if stop is not None:
            try:
                stop()
            except Exception as e:  # noqa: BLE001
                log(f"  stopping the as-of FastK store failed: {e}")
    return out


# --------------------------------------------------------------------------- coverage


def coverage(gs: GapSeries, make_fastk, peers: list, reps: int, cold_reps: int) -> dict:
    """Coverage and gaps of one long series, cold and warm, every way alike.

    FastK answers from a store of its own holding only this series (`make_fastk()`
    starts a server on it and returns (FastKFlight, FastKHttp, stop); called again, it
    restarts the server on the same root): `GET .../coverage` and the Flight action.
    The peers (DuckDB over Parquet and as a table, Polars, chDB) answer the same
    question with a lag/diff query.

    Warm: one checked warm-up per way, then `reps` timed calls of every way,
    interleaved round by round. Cold: `cold_reps` rounds; in each, every FastK way's
    call is the first after a restart of its server (a new server on the same store,
    fresh connections), and every peer's call the first after `reopen()` (a fresh
    connection, database or session: no cached footers, catalog or parts; Polars keeps
    no state between calls, so its cold call is a plain call). The page cache stays
    warm for everyone. Every timed answer is checked (present bars and gap count for
    FastK, present bars and gaps listed for the peers)."""
    ref = gs.coverage
    out: dict = {"symbol": gs.symbol, "notes": gs.notes, "expected": ref["expected"], "present": ref["present"],
                 "gap_count": ref["gap_count"], "target_ms": COVERAGE_TARGET_MS, "reps": reps, "cold_reps": cold_reps,
                 "setup_s": {}, "how": {}, "warm": {}, "cold": {}, "systems": {}, "peers": {}}
    want = (ref["present"], ref["gap_count"])

    def fastk_digest(ans: dict) -> tuple:
        return ans.get("present"), ans.get("gap_count")

    def peer_digest(ans: dict) -> tuple:
        return int(ans["present"]), checks.rows(ans["gaps"])

    fastk_ways: dict = {}  # label -> (how to call it on (flight, http))
    label_action = f"{FASTK} (action coverage)"
    fk = None
    if make_fastk is None:
        out["warm"][FASTK_HTTP] = out["cold"][FASTK_HTTP] = {"error": "no FastK binary to start"}
    else:
        log(f"coverage: loading {gs.table.num_rows:,} bars of {gs.symbol} into a FastK store of its own")
        try:
            fk = make_fastk()
            out["setup_s"]["FastK"] = fk[0].load_series([(gs.symbol, gs.table)], streams=1)
            fastk_ways = {FASTK_HTTP: lambda fl, http: http.coverage(gs.symbol),
                          label_action: lambda fl, http: fl.coverage(gs.symbol)}
            out["how"][FASTK_HTTP] = (f"GET /v1/kline/{gs.symbol}/1m/coverage on a keep-alive connection, "
                                      "JSON parsed")
            out["how"][label_action] = "DoAction coverage {kind, symbol, timeframe}, JSON result parsed"
        except Exception as e:  # noqa: BLE001
            log(f"  FastK: FAILED {type(e).__name__}: {e}")
            out["warm"][FASTK_HTTP] = out["cold"][FASTK_HTTP] = _err(e)
    live_peers = []
    for p in peers:
        if p is None:
            continue
        try:
            out["setup_s"][p.label] = p.coverage_load(gs)
            live_peers.append(p)
            out["how"][p.label] = _gaps_how(p)
        except Exception as e:  # noqa: BLE001
            out["warm"][p.label] = out["cold"][p.label] = _err(e)
    os.sync()

    def check(label: str, ans) -> None:
        got = fastk_digest(ans) if label in fastk_ways else peer_digest(ans)
        checks.expect("market_coverage", label, got, want)

    def full_check(label: str, ans) -> None:
        (check_coverage if label in fastk_ways else check_gaps)(ans, ref)
        check(label, ans)

    # Warm: FastK's running server and the peers' open connections.
    ways = [Way(label, lambda f=f: f(fk[0], fk[1])) for label, f in fastk_ways.items()]
    ways += [Way(p.label, lambda p=p: p.gaps(gs.symbol)) for p in live_peers]
    log(f"coverage of {ref['expected']:,} grid points, {ref['gap_count']:,} gaps: warm, every way interleaved")
    raw = interleaved(ways, lambda w: full_check(w.label, w.run()), lambda w: w.run(), reps,
                      check=lambda w, ans: check(w.label, ans))
    out["warm"].update(summarize(raw, headline=FASTK_HTTP))
    if fk is not None:
        fk[2]()
    # Cold: the first call after a restart (FastK) or a reopen (peers), round by round.
    log(f"coverage: cold, {cold_reps} rounds (a FastK restart per FastK way, a reopen per peer)")
    cold: dict = {w.label: [] for w in ways}
    for _ in range(cold_reps):
        for label, f in fastk_ways.items():
            if isinstance(cold.get(label), dict):
                continue
            try:
                fl, http, stop = make_fastk()
            except Exception as e:  # noqa: BLE001
                cold[label] = _err(e)
                continue
            try:
                t = time.perf_counter()
                ans = f(fl, http)
                cold[label].append(time.perf_counter() - t)
                check(label, ans)
            except checks.Mismatch:
                raise
            except Exception as e:  # noqa: BLE001
                cold[label] = _err(e)
            finally:
                stop()
        for p in live_peers:
            if isinstance(cold.get(p.label), dict):
                continue
            try:
                if hasattr(p, "reopen"):
                    p.reopen()
                t = time.perf_counter()
                ans = p.gaps(gs.symbol)
                cold[p.label].append(time.perf_counter() - t)
                check(p.label, ans)
            except checks.Mismatch:
                raise
            except Exception as e:  # noqa: BLE001
                cold[p.label] = _err(e)
    out["cold"].update(summarize(cold, headline=FASTK_HTTP))
    # The earlier layout: FastK's warm ways under "systems", the peers' under "peers".
    out["systems"] = {k: v for k, v in out["warm"].items() if k in fastk_ways or k == FASTK_HTTP}
    out["peers"] = {k: v for k, v in out["warm"].items() if k not in out["systems"]}
    return out


def _gaps_how(p) -> str:
    from . import systems

    if isinstance(p, systems.DuckDB):
        return (systems.DuckDB.GAP_STATS + "; " + systems.DuckDB.GAPS).format(src=_duck_market_src(p, "<symbol>"),
                                                                             tf=MINUTE_MS)
    return getattr(p, "GAPS_HOW", "?")


# --------------------------------------------------------------------------- driver


WORKLOADS = ("resample", "asof", "coverage")


def run(which, results: dict, P: dict, *, ds: Dataset, fastk_flight, fastk_http, make_fastk, arctic, duck,
        polars, pg, extra=(), make_fastk_coverage=None) -> None:
    """Runs the selected market workloads into `results` (keys `market_resample`,
    `market_asof`, `market_coverage`). `extra` are more peers (DuckDB as a table,
    chDB) that join every market query; `make_fastk` and `make_fastk_coverage` start
    (and restart) the FastK stores of the as-of and the coverage workloads."""
    extra = [p for p in extra if p is not None]
    if "resample" in which:
        results["market_resample"] = guarded("market resample", lambda: resample(
            [fastk_flight, fastk_http, arctic, duck, *[p for p in extra if hasattr(p, "resample")], polars], ds,
            P["market_resample_reps"]))
        for tf in (results["market_resample"].get("targets") or {}).values():
            for label, sy in ((FASTK, fastk_flight), (FASTK_HTTP, fastk_http)):
                if sy is None:  # FastK did not start: a failed measurement, not a missing row
                    tf["systems"][label] = {"error": "FastK is not running (see skipped)"}
    if "asof" in which:
        def run_asof():
            t = time.perf_counter()
            xs = dataset.cross_section(P["asof_series"], P["asof_days"])
            log(f"as-of dataset: {xs.notes} in {time.perf_counter() - t:.1f} s")
            return asof(xs, make_fastk, [arctic, duck, *extra, polars, pg], P["asof_reps"], P["asof_budget_s"])

        results["market_asof"] = guarded("market as-of", run_asof)
    if "coverage" in which:
        def run_coverage():
            gs = dataset.gap_series(P["coverage_years"], P["coverage_holes"])
            log(f"coverage dataset: {gs.notes}")
            return coverage(gs, make_fastk_coverage, [duck, *extra, polars], P["coverage_reps"],
                            P["coverage_cold_reps"])

        results["market_coverage"] = guarded("market coverage", run_coverage)
