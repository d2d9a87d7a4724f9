"""Small series folded into the store's catalog, through a real server.

A factor library (many series of a few rows) registered in one request and written
by many-series POSTs: `POST /v1/admin/compact` folds them, and the store then has no
directory per series (`fastk_store_resident_series` counts them), yet a clean stop,
more rows and a SIGKILL, and a restart give back every row acknowledged. A SQL scan
of every series builds them all; once idle (`storage.dormant_after_s`) they go back to
sleep, and come back with the same rows.
"""

from __future__ import annotations

import re
import time

import pyarrow.flight as flight
import requests

from fastk_testlib import expect_ok

SYMBOLS = 40
FACTORS = 10
DAY_MS = 86_400_000
TS0 = 1_704_067_200_000  # 2024-01-01


def sym(i: int) -> str:
    return f"R{i:03d}"


def fac(j: int) -> str:
    return f"f{j}"


def value(i: int, j: int, k: int) -> float:
    return i * 1000.0 + j + k / 8


def metrics(base: str) -> dict[str, float]:
    text = requests.get(f"{base}/metrics", timeout=30).text
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(fastk_[a-z_]+) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def write_days(base: str, days: range) -> None:
    for j in range(FACTORS):
        recs = [{"symbol": sym(i), "ts": TS0 + k * DAY_MS, "value": value(i, j, k)}
                for i in range(SYMBOLS) for k in days]
        r = expect_ok(requests.post(f"{base}/v1/scalar/records", json={
            "timeframe": "1d", "category": "factor", "name": fac(j), "records": recs}, timeout=60))
        assert r["written"] == SYMBOLS * len(days), r


def check(base: str, days: list[int]) -> None:
    for i in range(0, SYMBOLS, 7):
        for j in range(FACTORS):
            r = expect_ok(requests.get(
                f"{base}/v1/scalar/{sym(i)}/1d/factor/{fac(j)}/records", timeout=30))
            got = [(x["ts"], x["value"]) for x in r["records"]]
            assert got == [(TS0 + k * DAY_MS, value(i, j, k)) for k in days], (sym(i), fac(j))


def manifests(root) -> int:
    return sum(1 for _ in (root / "series").rglob("MANIFEST"))


def test_a_factor_library_folds_into_the_catalog_and_survives_a_stop_and_a_kill(start_server):
    server = start_server("resident", {"FASTK__STORAGE__LOW_DISK_BYTES": "0"})
    base = server.http_url
    series = [{"symbol": sym(i), "timeframe": "1d", "category": "factor", "name": fac(j),
               "value_type": "f64"} for i in range(SYMBOLS) for j in range(FACTORS)]
    reply = expect_ok(requests.post(f"{base}/v1/scalar/series/many", json={"series": series},
                                    timeout=60))
    assert reply["created"] == SYMBOLS * FACTORS, reply
    write_days(base, range(0, 3))
    expect_ok(requests.post(f"{base}/v1/admin/compact", json={}, timeout=300))
    m = metrics(base)
    assert m["fastk_store_resident_series"] == SYMBOLS * FACTORS, m
    assert m["fastk_store_resident_bytes"] > 0, m
    assert m["fastk_wal_unfolded_rows"] == 0, m
    assert manifests(server.root) == 0, "no directory per small series"
    check(base, [0, 1, 2])

    # A clean stop and a start: the rows come from the catalog, and the start builds
    # none of the series; neither do /metrics, /health, ListFlights or the totals of
    # /inventory: a page of one series builds that one.
    server.stop()
    server.start()
    base = server.http_url
    assert metrics(base)["fastk_store_dormant_series"] == SYMBOLS * FACTORS
    expect_ok(requests.get(f"{base}/health", timeout=30))
    inv = expect_ok(requests.get(f"{base}/inventory", params={"partitions": "false", "limit": 1},
                                 timeout=30))
    assert inv["total_rows"] == SYMBOLS * FACTORS * 3 and len(inv["series"]) == 1, inv
    assert inv["series"][0]["rows"] == 3, inv["series"][0]
    c = flight.connect(server.flight_uri)
    try:
        infos = list(c.list_flights())
    finally:
        c.close()
    assert len(infos) == SYMBOLS * FACTORS and all(i.total_records == 3 for i in infos)
    assert metrics(base)["fastk_store_dormant_series"] == SYMBOLS * FACTORS - 1
    check(base, [0, 1, 2])
    # More rows, only in the log, then SIGKILL.
    write_days(base, range(3, 5))
    server.kill()
    server.start()
    base = server.http_url
    check(base, [0, 1, 2, 3, 4])
    inv = expect_ok(requests.get(f"{base}/inventory", params={"partitions": "false"}, timeout=30))
    assert inv["total_rows"] == SYMBOLS * FACTORS * 5, inv["total_rows"]
    assert manifests(server.root) == 0


def test_series_a_scan_built_go_back_to_sleep_once_idle(start_server):
    n = SYMBOLS * FACTORS
    server = start_server("resident-sleep", {"FASTK__STORAGE__LOW_DISK_BYTES": "0",
                                             "FASTK__STORAGE__DORMANT_AFTER_S": "1"})
    base = server.http_url
    series = [{"symbol": sym(i), "timeframe": "1d", "category": "factor", "name": fac(j),
               "value_type": "f64"} for i in range(SYMBOLS) for j in range(FACTORS)]
    expect_ok(requests.post(f"{base}/v1/scalar/series/many", json={"series": series}, timeout=60))
    write_days(base, range(0, 3))
    server.stop()
    server.start()
    base = server.http_url
    assert metrics(base)["fastk_store_dormant_series"] == n

    query = "SELECT count(*) AS n, sum(value) AS s FROM scalar WHERE category = 'factor'"
    want_sum = sum(value(i, j, k) for i in range(SYMBOLS) for j in range(FACTORS) for k in range(3))

    def scan() -> None:
        rows = expect_ok(requests.post(f"{base}/v1/sql", json={"query": query}, timeout=60))["rows"]
        assert rows[0][0] == n * 3, rows
        assert abs(rows[0][1] - want_sum) < 1e-6 * want_sum, rows

    scan()
    built = n - metrics(base)["fastk_store_dormant_series"]
    assert built > 0, "the scan built the series it read"
    # Idle for one to two sweeps of a second each: every one of them sleeps again.
    deadline = time.monotonic() + 30
    m = metrics(base)
    while m["fastk_store_dormant_series"] < n and time.monotonic() < deadline:
        time.sleep(0.25)
        m = metrics(base)
    assert m["fastk_store_dormant_series"] == n, m["fastk_store_dormant_series"]
    assert m["fastk_store_series_slept_total"] >= n, m["fastk_store_series_slept_total"]
    assert m["fastk_store_resident_series"] == n, m["fastk_store_resident_series"]
    # They come back the same, and take writes as before.
    scan()
    check(base, [0, 1, 2])
    write_days(base, range(3, 4))
    check(base, [0, 1, 2, 3])
    server.kill()
    server.start()
    check(server.http_url, [0, 1, 2, 3])
