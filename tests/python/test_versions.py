"""Past versions as a researcher uses them (docs/research.md, "Past versions").

A server keeps superseded versions for an hour (`storage.keep_versions_s`). Each
write, replacement and range delete makes a version; every one of them reads back,
over HTTP and Flight, exactly what the series held then: by `version`, and by
`as_of_commit` (the version current at a wall-clock time), through a clean restart.
After a kill -9 the current version is whole and a past version reads exactly or 410
`gone`, never something else. On a server that keeps no versions a past one is 410
(gRPC NotFound saying `gone`).
"""

from __future__ import annotations

import json
import signal
import time

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from conftest import stop_cleanly
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


@pytest.fixture(scope="module")
def kept_server(start_server):
    return start_server("versions", {"FASTK__STORAGE__KEEP_VERSIONS_S": "3600"})


def write(s: requests.Session, sym: str, bars: list[dict]) -> None:
    expect_ok(s.post(s.base + kline_path(sym) + "/records", json={"records": bars}, timeout=120))


def frame(uri: str, sym: str, **at) -> pd.DataFrame:
    ticket = {"kind": "kline", "symbol": sym, "timeframe": "1m", **at}
    with flight.connect(uri) as c:
        return c.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all().to_pandas()


def http_closes(s: requests.Session, sym: str, **params) -> list[int]:
    page = expect_ok(s.get(s.base + kline_path(sym) + "/records",
                           params={"limit": 100000, **params}, timeout=60))
    return [r["close"] for r in page["records"]]


def versions(s: requests.Session, sym: str) -> dict:
    return expect_ok(s.get(s.base + kline_path(sym) + "/versions", timeout=30))


def test_every_version_reads_what_the_series_held_then(kept_server, unique_name):
    srv = kept_server
    sym, other = unique_name("VER"), unique_name("VEO")
    held: dict[int, pd.DataFrame] = {}
    with requests.Session() as s:
        s.base = srv.http_url
        for x in (sym, other):
            expect_ok(register_kline(s, s.base, x), 201)
        held[0] = frame(srv.flight_uri, sym)
        steps = [
            lambda: write(s, sym, make_klines(2 * 1440, start_ts=JAN_1_2024_MS, seed=1)),
            lambda: write(s, sym, make_klines(30, start_ts=JAN_1_2024_MS + 2 * DAY_MS, seed=2)),
            # Replaces 300 bars of the first day.
            lambda: write(s, sym, make_klines(300, start_ts=JAN_1_2024_MS + 60 * MINUTE_MS, seed=3)),
            lambda: expect_ok(s.delete(s.base + kline_path(sym) + "/records", params={
                "start_ts": JAN_1_2024_MS + DAY_MS,
                "end_ts": JAN_1_2024_MS + DAY_MS + 90 * MINUTE_MS}, timeout=60)),
        ]
        commit_gaps = []
        for i, step in enumerate(steps, start=1):
            # Apart in wall-clock time, so as_of_commit can tell the versions apart.
            time.sleep(0.02)
            commit_gaps.append(int(time.time() * 1000))
            time.sleep(0.02)
            step()
            if i == 2:
                write(s, other, make_klines(10, start_ts=JAN_1_2024_MS, seed=9))
            held[i] = frame(srv.flight_uri, sym)
        for i in range(1, 5):
            assert not held[i].equals(held[i - 1]), f"step {i} changed the series"
        expect_ok(s.post(s.base + "/v1/admin/compact", json={}, timeout=300))

        listed = versions(s, sym)
        assert listed["keep_versions_s"] == 3600
        vs = listed["versions"]
        assert [v["version"] for v in vs] == [0, 1, 2, 3, 4], vs
        assert [v["rows"] for v in vs] == [len(held[i]) for i in range(5)]
        assert "superseded_ts" not in vs[-1] and all("superseded_ts" in v for v in vs[:-1])
        assert all(v["committed_ts_exact"] for v in vs)
        assert all(a["committed_ts"] <= b["committed_ts"] for a, b in zip(vs, vs[1:]))

        def check_all(tag: str) -> None:
            for v, want in held.items():
                got = frame(srv.flight_uri, sym, version=v)
                pd.testing.assert_frame_equal(got, want, obj=f"{tag}: version {v}")
                assert http_closes(s, sym, version=v) == list(want["close"]), f"{tag}: {v}"
            # The version current just before each step began is the one before it.
            for i, t in enumerate(commit_gaps):
                got = frame(srv.flight_uri, sym, as_of_commit=t)
                pd.testing.assert_frame_equal(got, held[i], obj=f"{tag}: as_of_commit {t}")
            now = int(time.time() * 1000)
            pd.testing.assert_frame_equal(frame(srv.flight_uri, sym, as_of_commit=now), held[4])
            # Latest and coverage take the version too.
            last = expect_ok(s.get(s.base + kline_path(sym) + "/latest",
                                   params={"version": 1}, timeout=30))["records"][0]
            assert last["close"] == held[1]["close"].iloc[-1]
            cov = expect_ok(s.get(s.base + kline_path(sym) + "/coverage",
                                  params={"version": 2}, timeout=30))
            assert cov["present"] == len(held[2]), cov

        check_all("live")

        # Many series at one commit time: `other` was written after step 2's time.
        batch = expect_ok(s.post(s.base + "/v1/kline/batch", json={
            "timeframe": "1m", "symbols": [sym, other], "as_of_commit": commit_gaps[1],
            "limit": 100000}, timeout=60))
        by_sym = {x["symbol"]: x["records"] for x in batch["series"]}
        assert [r["close"] for r in by_sym[sym]] == list(held[1]["close"])
        assert by_sym[other] == []

        # Refusals: a version not yet made, two moments at once, a version of many.
        r = s.get(s.base + kline_path(sym) + "/records", params={"version": 99}, timeout=30)
        assert "version 99 does not exist" in check_error(r, 404, "not_found")
        r = s.get(s.base + kline_path(sym) + "/records",
                  params={"version": 1, "as_of_commit": commit_gaps[0]}, timeout=30)
        assert "at most one" in check_error(r, 400, "invalid_argument")
        with flight.connect(srv.flight_uri) as c:
            with pytest.raises(pa.ArrowInvalid, match="one version of one series"):
                c.do_get(flight.Ticket(json.dumps({
                    "kind": "kline", "symbols": [sym, other], "timeframe": "1m",
                    "version": 1}).encode())).read_all()
        r = s.get(s.base + kline_path(sym, "1m").replace(sym, "NOPE-" + sym) + "/versions",
                  timeout=30)
        check_error(r, 404, "not_found")

    # A clean stop and start: every version reads the same.
    stop_cleanly(srv)
    srv.start()
    with requests.Session() as s:
        s.base = srv.http_url
        assert [v["version"] for v in versions(s, sym)["versions"]] == [0, 1, 2, 3, 4]
        check_all("after a restart")

        # One more write, then kill -9: the current version is whole; a past one reads
        # exactly or is gone (written since the last checkpoint), never different.
        write(s, sym, make_klines(5, start_ts=JAN_1_2024_MS + 3 * DAY_MS, seed=5))
        held[5] = frame(srv.flight_uri, sym)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(timeout=30)
    srv.start()
    with requests.Session() as s:
        s.base = srv.http_url
        listed = [v["version"] for v in versions(s, sym)["versions"]]
        assert listed[-1] == 5
        pd.testing.assert_frame_equal(frame(srv.flight_uri, sym), held[5])
        for v, want in held.items():
            r = s.get(s.base + kline_path(sym) + "/records",
                      params={"version": v, "limit": 100000}, timeout=60)
            if v in listed:
                assert [x["close"] for x in expect_ok(r)["records"]] == list(want["close"])
            else:
                assert "gone" in check_error(r, 410, "gone")


def test_a_server_that_keeps_no_versions_says_gone(server, unique_name):
    sym = unique_name("VNK")
    with requests.Session() as s:
        s.base = server.http_url
        expect_ok(register_kline(s, s.base, sym), 201)
        write(s, sym, make_klines(10, start_ts=JAN_1_2024_MS, seed=1))
        write(s, sym, make_klines(10, start_ts=JAN_1_2024_MS + DAY_MS, seed=2))
        listed = versions(s, sym)
        assert listed["keep_versions_s"] == 0
        assert [v["version"] for v in listed["versions"]] == [2]
        r = s.get(s.base + kline_path(sym) + "/records", params={"version": 1}, timeout=30)
        msg = check_error(r, 410, "gone")
        assert "keep_versions_s" in msg and "current one is 2" in msg
        assert len(http_closes(s, sym, version=2)) == 20
    with flight.connect(server.flight_uri) as c:
        ticket = {"kind": "kline", "symbol": sym, "timeframe": "1m", "version": 1}
        # gRPC NotFound (pyarrow's ArrowKeyError), the message saying gone.
        with pytest.raises(pa.ArrowKeyError, match="gone"):
            c.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
