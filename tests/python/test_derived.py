"""Derived series as a dashboard uses them (docs/derived.md).

Rules keep 1h and 1d bars next to the stored 1m bars. Over HTTP and Flight, a derived
series reads exactly what `resample=` on the base answers: right after a write, after
a backfill that rewrites old bars, once the background pass has materialized them,
and after a kill -9 and a restart. Writes to a derived series are refused (409), bad
rules too (400, 409), and a series registered later gets its derived series.

The module runs its own server: a rule over `"*"` reaches every 1m kline series.
"""

from __future__ import annotations

import json
import signal
import time

import pandas as pd
import pyarrow.flight as flight
import pytest
import requests

from fastk_testlib import (
    JAN_1_2024_MS,
    MINUTE_MS,
    check_error,
    expect_ok,
    kline_path,
    make_klines,
    register_kline,
)

DAY_MS = 86_400_000
OHLCV = ["ts", "open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def derived_server(start_server):
    return start_server("derived")


def write(s: requests.Session, sym: str, bars: list[dict]) -> None:
    url = s.base + kline_path(sym) + "/records"
    for i in range(0, len(bars), 5000):
        expect_ok(s.post(url, json={"records": bars[i:i + 5000]}, timeout=120))


def records(s: requests.Session, path: str, **params) -> list[list[int]]:
    page = expect_ok(s.get(s.base + path + "/records", params={"limit": 100000, **params},
                           timeout=60))
    return [[r[c] for c in OHLCV] for r in page["records"]]


def flight_frame(uri: str, sym: str, tf: str, **extra) -> pd.DataFrame:
    ticket = {"kind": "kline", "symbol": sym, "timeframe": tf, **extra}
    with flight.connect(uri) as c:
        t = c.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all().to_pandas()
    return t[OHLCV].reset_index(drop=True)


def same_as_resample(srv, s: requests.Session, sym: str, tf: str, offset_ms: int = 0) -> int:
    """The derived series equals the base's resample, over HTTP and Flight."""
    params = {"resample": tf} | ({"offset_ms": offset_ms} if offset_ms else {})
    want = records(s, kline_path(sym), **params)
    got = records(s, kline_path(sym, tf))
    assert got == want, f"{sym} {tf}: {len(got)} bars, the resample has {len(want)}"
    by_flight = flight_frame(srv.flight_uri, sym, tf)
    resampled = flight_frame(srv.flight_uri, sym, "1m",
                             resample={"timeframe": tf, "offset_ms": offset_ms})
    pd.testing.assert_frame_equal(by_flight, resampled)
    return len(got)


def test_derived_series_read_what_resample_reads(derived_server, unique_name):
    srv = derived_server
    sym = unique_name("DRV")
    with requests.Session() as s:
        s.base = srv.http_url
        expect_ok(register_kline(s, s.base, sym), 201)
        write(s, sym, make_klines(3 * 1440, start_ts=JAN_1_2024_MS, seed=31))
        hourly = expect_ok(s.post(s.base + "/v1/kline/derive", json={
            "from_timeframe": "1m", "timeframe": "1h", "symbols": [sym]}, timeout=60), 201)
        assert hourly["series"] == 1
        daily = expect_ok(s.post(s.base + "/v1/kline/derive", json={
            "from_timeframe": "1m", "timeframe": "1d", "symbols": "*",
            "offset_ms": -7_200_000}, timeout=60), 201)
        assert daily["series"] >= 1
        rules = expect_ok(s.get(s.base + "/v1/kline/derive", timeout=30))["rules"]
        assert {(r["from_timeframe"], r["timeframe"]) for r in rules} == {("1m", "1h"), ("1m", "1d")}

        # At once, before any pass has run.
        assert same_as_resample(srv, s, sym, "1h") == 72
        assert same_as_resample(srv, s, sym, "1d", -7_200_000) == 4
        # Once the pass has materialized them: stored bars, same answers.
        deadline = time.time() + 30
        while time.time() < deadline:
            meta = expect_ok(s.get(s.base + kline_path(sym, "1h"), timeout=30))
            if meta.get("materialized_through_ts"):
                break
            time.sleep(0.2)
        assert meta["derived_from"] == f"kline/{sym}/1m"
        assert meta["materialized_through_ts"] == JAN_1_2024_MS + 3 * DAY_MS - 3_600_000
        assert meta["rows"] == 71, meta
        same_as_resample(srv, s, sym, "1h")

        # A backfill that rewrites bars of the first day, read before the next pass.
        write(s, sym, make_klines(300, start_ts=JAN_1_2024_MS + 60 * MINUTE_MS, seed=77))
        same_as_resample(srv, s, sym, "1h")
        same_as_resample(srv, s, sym, "1d", -7_200_000)
        expect_ok(s.delete(s.base + kline_path(sym) + "/records", params={
            "start_ts": JAN_1_2024_MS + DAY_MS, "end_ts": JAN_1_2024_MS + DAY_MS + 7200_000},
            timeout=60))
        same_as_resample(srv, s, sym, "1h")

        # Writes to a derived series are refused, naming the base.
        r = s.post(s.base + kline_path(sym, "1h") + "/records",
                   json={"records": make_klines(1, start_ts=JAN_1_2024_MS, seed=1)}, timeout=30)
        assert f"derived from kline/{sym}/1m" in check_error(r, 409, "conflict")
        r = s.delete(s.base + kline_path(sym, "1h"), timeout=30)
        check_error(r, 409, "conflict")

        # Bad rules.
        r = s.post(s.base + "/v1/kline/derive", json={
            "from_timeframe": "1m", "timeframe": "7m", "symbols": "*"}, timeout=30)
        check_error(r, 400, "invalid_argument")
        r = s.post(s.base + "/v1/kline/derive", json={
            "from_timeframe": "3m", "timeframe": "5m", "symbols": "*"}, timeout=30)
        assert "multiple" in check_error(r, 400, "invalid_argument")
        r = s.post(s.base + "/v1/kline/derive", json={
            "from_timeframe": "1m", "timeframe": "1h", "symbols": "*"}, timeout=30)
        check_error(r, 409, "conflict")

        # A series registered later gets the "*" rule's derived series.
        later = unique_name("DRL")
        expect_ok(register_kline(s, s.base, later), 201)
        write(s, later, make_klines(2 * 1440, start_ts=JAN_1_2024_MS, seed=5))
        same_as_resample(srv, s, later, "1d", -7_200_000)
        r = s.get(s.base + kline_path(later, "1h"), timeout=30)
        check_error(r, 404, "not_found")

    # kill -9 in the middle of it all: after the restart, the derived series still
    # read what the resample reads.
    with requests.Session() as s:
        s.base = srv.http_url
        write(s, sym, make_klines(90, start_ts=JAN_1_2024_MS + 3 * DAY_MS, seed=8))
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(timeout=30)
    srv.start()
    with requests.Session() as s:
        s.base = srv.http_url
        same_as_resample(srv, s, sym, "1h")
        same_as_resample(srv, s, sym, "1d", -7_200_000)
        same_as_resample(srv, s, later, "1d", -7_200_000)
        # Dropping a rule with its series.
        expect_ok(s.delete(s.base + "/v1/kline/derive/1h",
                           params={"from_timeframe": "1m", "drop": "true"}, timeout=60), 204)
        check_error(s.get(s.base + kline_path(sym, "1h"), timeout=30), 404, "not_found")
        r = s.delete(s.base + "/v1/kline/derive/1h", params={"from_timeframe": "1m"}, timeout=30)
        check_error(r, 404, "not_found")
