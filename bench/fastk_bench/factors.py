"""The `factors_100k` workload: a factor library of very many tiny series, measured from
outside as an operator would, side by side with DuckDB and SQLite files in the same run.

500 symbols x 200 factors = 100,000 scalar series (f64, 1d) of 3 rows each (quick: 50
symbols). FastK: one `POST /v1/scalar/series/many` of every series (timed), then the
rows by `POST /v1/scalar/records`, one request per factor (every symbol's 3 rows),
then a clean stop (SIGTERM, timed: the log is durable, the restart replays it), files
and bytes on disk (`du`) after the registration and after the stop, the restart until
`/health` answers 200, idle RSS two seconds later, and the rows read back (every
value of 9 series, and `/inventory`'s row count). Then every series folded (a start with
`storage.fold_on_stop = true` and a clean stop, timed; with the defaults, series this
small fold into the store's catalog, `storage.resident_rows_max`) and files and bytes
again: what the store costs once the log is folded. Last, a start with
`storage.dormant_after_s = 2`: a SQL scan of every series (`POST /v1/sql`, the count
and sum of every value, checked; the first builds every series, the second finds
them built), the RSS after it, the time until every series is dormant again
(`/metrics`), the RSS then, and the scan once more. DuckDB and SQLite: the same
300,000 rows in one table `(symbol, factor, ts, value)` with its primary key, loaded
from Arrow (DuckDB, checkpointed) or `executemany` (SQLite, `WITHOUT ROWID`), each in
one file; load time and bytes, and the same count and sum on a new connection (first
and second).
"""

from __future__ import annotations

import math
import os
import pathlib
import re
import shutil
import sqlite3
import time

import pyarrow as pa

from . import checks, procs
from .feeds import Restarted, _files, _vm
from .systems import HttpClient, du
from .workloads import log

WORKLOADS = ("factors_100k",)
FACTORS, ROWS = 200, 3
DAY_MS = 86_400_000
TS0 = 1_704_067_200_000  # 2024-01-01


def params(q: bool) -> dict:
    return dict(fac_symbols=50 if q else 500)


def sym(i: int) -> str:
    return f"S{i:04d}"


def fac(j: int) -> str:
    return f"f{j:03d}"


def value(i: int, j: int, k: int) -> float:
    return float((i * 7919 + j * 104_729 + k * 31) % 100_003) / 7.0


def _check_rows(hc: HttpClient, symbols: int, label: str) -> None:
    """Every value of 9 series spread over the store, and the store's row count."""
    for i in (0, symbols // 2, symbols - 1):
        for j in (0, FACTORS // 3, FACTORS - 1):
            body = hc.json("GET", f"/v1/scalar/{sym(i)}/1d/factor/{fac(j)}/records")
            got = [r["value"] for r in body["records"]]
            checks.expect("factors_100k", f"FastK {label} {sym(i)}/{fac(j)}", got,
                          [value(i, j, k) for k in range(ROWS)])
    inv = hc.json("GET", "/inventory?partitions=false&limit=1")
    checks.expect("factors_100k", f"FastK {label} total_rows", inv["total_rows"], symbols * FACTORS * ROWS)


def _restart_and_check(binary: pathlib.Path, root: pathlib.Path, log_path: pathlib.Path, symbols: int,
                       label: str) -> tuple[float, int | None]:
    """A start until /health answers 200 (timed), its RSS two idle seconds later, the
    rows checked, a stop."""
    server = Restarted(binary, root, log_path)
    try:
        time.sleep(2)
        rss = _vm(server.proc.pid, "VmRSS")
        hc = HttpClient(server.http)
        _check_rows(hc, symbols, label)
        hc.conn.close()
        return server.ready_s, rss
    finally:
        server.stop()


# Seconds an idle series stays built in the scan-and-sleep start (the default is 300:
# a benchmark cannot wait that long; docs/operations.md, `storage.dormant_after_s`).
SLEEP_AFTER_S = 2
SCAN_SQL = "SELECT count(*) AS n, sum(value) AS s FROM {table}"


def _scan_ok(label: str, n, total, want_rows: int, want_sum: float) -> None:
    checks.expect("factors_100k", f"{label} scan count", int(n), want_rows)
    checks.expect("factors_100k", f"{label} scan sum", abs(float(total) - want_sum) <= 1e-9 * abs(want_sum), True)


def _dormant(hc: HttpClient) -> int:
    text = hc.request("GET", "/metrics").decode()
    m = re.search(r"^fastk_store_dormant_series (\d+)$", text, re.M)
    assert m, "/metrics has no fastk_store_dormant_series"
    return int(m.group(1))


def _scan_and_sleep(binary: pathlib.Path, root: pathlib.Path, log_path: pathlib.Path, symbols: int,
                    want_sum: float) -> dict:
    """A start with idle series sleeping after SLEEP_AFTER_S: a SQL scan of every series
    (timed twice), the RSS after it, the wait until every series is dormant again, the
    RSS then and the scan again."""
    n = symbols * FACTORS
    server = Restarted(binary, root, log_path, env_extra={"FASTK__STORAGE__DORMANT_AFTER_S": str(SLEEP_AFTER_S)})
    out: dict = {"dormant_after_s": SLEEP_AFTER_S}
    try:
        hc = HttpClient(server.http)
        pid = server.proc.pid
        time.sleep(2)
        out["rss_before_scan_bytes"] = _vm(pid, "VmRSS")

        def scan(label: str) -> float:
            t = time.perf_counter()
            body = hc.json("POST", "/v1/sql", {"query": SCAN_SQL.format(table="scalar")})
            dt = time.perf_counter() - t
            _scan_ok(f"FastK {label}", body["rows"][0][0], body["rows"][0][1], n * ROWS, want_sum)
            return dt

        out["scan_first_s"] = scan("first")
        out["built_by_scan"] = n - _dormant(hc)
        out["scan_second_s"] = scan("second")
        out["rss_after_scan_bytes"] = _vm(pid, "VmRSS")
        t = time.perf_counter()
        deadline = t + 60
        while _dormant(hc) < n and time.perf_counter() < deadline:
            time.sleep(0.1)
        out["asleep_s"] = time.perf_counter() - t
        out["all_asleep"] = _dormant(hc) == n
        time.sleep(1)
        out["rss_asleep_bytes"] = _vm(pid, "VmRSS")
        out["scan_after_sleep_s"] = scan("after sleeping")
        hc.conn.close()
    finally:
        server.stop()
    return out


def _fastk(binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, symbols: int,
           want_sum: float) -> dict:
    root = work / "fastk"
    out: dict = {}
    server = procs.FastK(binary, root, logs / "fastk-factors.log", unix_socket=False)
    try:
        hc = HttpClient(server.http)
        series = [{"symbol": sym(i), "timeframe": "1d", "category": "factor", "name": fac(j), "value_type": "f64"}
                  for i in range(symbols) for j in range(FACTORS)]
        t = time.perf_counter()
        reply = hc.json("POST", "/v1/scalar/series/many", {"series": series})
        out["register_s"] = time.perf_counter() - t
        assert reply["created"] == symbols * FACTORS, reply
        os.sync()
        out["files_after_register"] = _files(root)
        out["du_after_register"] = du(root)
        log(f"  registered {symbols * FACTORS:,} series in {out['register_s']:.2f} s; "
            f"{out['files_after_register']:,} files, {out['du_after_register'] / 1e6:.1f} MB")
        t = time.perf_counter()
        for j in range(FACTORS):
            recs = [{"symbol": sym(i), "ts": TS0 + k * DAY_MS, "value": value(i, j, k)}
                    for i in range(symbols) for k in range(ROWS)]
            r = hc.json("POST", "/v1/scalar/records",
                        {"timeframe": "1d", "category": "factor", "name": fac(j), "records": recs})
            assert r["written"] == symbols * ROWS, r
        out["load_s"] = time.perf_counter() - t
        hc.conn.close()
        t = time.perf_counter()
        server.proc.terminate()
        server.proc.wait(900)
        out["stop_s"] = time.perf_counter() - t
    finally:
        procs._terminate(server.proc)
    os.sync()
    out["files_after_stop"] = _files(root)
    out["du_after_stop"] = du(root)
    log(f"  load {out['load_s']:.1f} s; clean stop {out['stop_s']:.2f} s; "
        f"{out['files_after_stop']:,} files, {out['du_after_stop'] / 1e6:.1f} MB")
    out["restart_s"], out["idle_rss_bytes"] = _restart_and_check(
        binary, root, logs / "fastk-factors-restart.log", symbols, "after the restart")
    log(f"  restart {out['restart_s']:.2f} s; idle RSS {(out['idle_rss_bytes'] or 0) / 1e6:.0f} MB")
    # Every series folded into files: a start that folds on its stop.
    folding = Restarted(binary, root, logs / "fastk-factors-fold.log",
                        env_extra={"FASTK__STORAGE__FOLD_ON_STOP": "true"})
    t = time.perf_counter()
    folding.proc.terminate()
    code = folding.proc.wait(900)  # a stop that folds is never killed
    out["fold_stop_s"] = time.perf_counter() - t
    assert code == 0, f"the folding stop exited {code}"
    os.sync()
    out["files_folded"] = _files(root)
    out["du_folded"] = du(root)
    out["restart_folded_s"], out["idle_rss_folded_bytes"] = _restart_and_check(
        binary, root, logs / "fastk-factors-folded.log", symbols, "folded")
    log(f"  folded: stop {out['fold_stop_s']:.1f} s; {out['files_folded']:,} files, "
        f"{out['du_folded'] / 1e6:.1f} MB; restart {out['restart_folded_s']:.2f} s")
    sl = _scan_and_sleep(binary, root, logs / "fastk-factors-sleep.log", symbols, want_sum)
    out["scan"] = sl
    log(f"  SQL scan of every series: {sl['scan_first_s'] * 1e3:.0f} ms first, {sl['scan_second_s'] * 1e3:.0f} ms "
        f"second; RSS {(sl['rss_before_scan_bytes'] or 0) / 1e6:.0f} MB before, "
        f"{(sl['rss_after_scan_bytes'] or 0) / 1e6:.0f} MB after, {(sl['rss_asleep_bytes'] or 0) / 1e6:.0f} MB "
        f"once asleep ({sl['asleep_s']:.1f} s later; all asleep: {sl['all_asleep']})")
    return out


def table(symbols: int) -> pa.Table:
    s, f, ts, v = [], [], [], []
    for i in range(symbols):
        for j in range(FACTORS):
            for k in range(ROWS):
                s.append(sym(i))
                f.append(fac(j))
                ts.append(TS0 + k * DAY_MS)
                v.append(value(i, j, k))
    return pa.table({"symbol": s, "factor": f, "ts": pa.array(ts, pa.int64()), "value": v})


def _duckdb(work: pathlib.Path, t: pa.Table) -> dict:
    import duckdb

    path = work / "factors.duckdb"
    tt = time.perf_counter()
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE factors (symbol VARCHAR, factor VARCHAR, ts BIGINT, value DOUBLE, "
                "PRIMARY KEY (symbol, factor, ts))")
    con.register("t", t)
    con.execute("INSERT INTO factors SELECT * FROM t")
    con.execute("CHECKPOINT")
    load = time.perf_counter() - tt
    n = con.execute("SELECT count(*) FROM factors").fetchone()[0]
    con.close()
    checks.expect("factors_100k", "DuckDB count", n, t.num_rows)
    scans = _peer_scans("DuckDB", lambda: duckdb.connect(str(path), read_only=True), t)
    return {"load_s": load, "bytes": du(path), "files": 1,
            "version": duckdb.__version__, **scans}


def _sqlite(work: pathlib.Path, t: pa.Table) -> dict:
    path = work / "factors.sqlite"
    tt = time.perf_counter()
    con = sqlite3.connect(str(path))
    con.execute("CREATE TABLE factors (symbol TEXT, factor TEXT, ts INTEGER, value REAL, "
                "PRIMARY KEY (symbol, factor, ts)) WITHOUT ROWID")
    con.executemany("INSERT INTO factors VALUES (?, ?, ?, ?)", zip(*(c.to_pylist() for c in t.columns)))
    con.commit()
    load = time.perf_counter() - tt
    n = con.execute("SELECT count(*) FROM factors").fetchone()[0]
    con.close()
    checks.expect("factors_100k", "SQLite count", n, t.num_rows)
    scans = _peer_scans("SQLite", lambda: sqlite3.connect(str(path)), t)
    return {"load_s": load, "bytes": du(path), "files": 1, "version": sqlite3.sqlite_version, **scans}


def _peer_scans(label: str, connect, t: pa.Table) -> dict:
    """The count and sum of every value on a new connection to the file: first, second."""
    want_sum = _want_sum(t)
    con = connect()
    try:
        out = {}
        for k in ("scan_first_s", "scan_second_s"):
            tt = time.perf_counter()
            n, total = con.execute(SCAN_SQL.format(table="factors")).fetchone()
            out[k] = time.perf_counter() - tt
            _scan_ok(label, n, total, t.num_rows, want_sum)
        return out
    finally:
        con.close()


def _want_sum(t: pa.Table) -> float:
    return math.fsum(t.column("value").to_pylist())


def run(results: dict, P: dict, *, binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path) -> dict:
    symbols = P["fac_symbols"]
    t = table(symbols)
    out: dict = {"series": symbols * FACTORS, "rows": t.num_rows, "how": __doc__.split("\n\n", 1)[1].strip()}
    work.mkdir(parents=True, exist_ok=True)
    try:
        log(f"factors_100k: FastK, {symbols * FACTORS:,} series of {ROWS} rows")
        out["FastK"] = _fastk(binary, work, logs, symbols, _want_sum(t))
        log("factors_100k: DuckDB and SQLite")
        out["DuckDB"] = _duckdb(work, t)
        out["SQLite"] = _sqlite(work, t)
        out["checked"] = checks.COUNTS.get("factors_100k", 0)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
