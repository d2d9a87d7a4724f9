"""Named snapshots as a research team uses them (docs/research.md).

A backtest-style loop in pandas reads a series through a snapshot over Flight; more
bars are written, some replaced, a range deleted and the store compacted, the server
is killed and restarted; the same loop on the snapshot gives the same result to the
bit, while the live series has moved on. The HTTP and Flight surfaces (create, list,
show, delete, `snapshot=` on reads) and their refusals are checked on the way.

The module runs its own server: a snapshot holds its series against deletion, which
the shared server's other tests do.
"""

from __future__ import annotations

import json
import signal

import pandas as pd
import pyarrow as pa
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
    make_scalars,
    register_kline,
    register_scalar,
    scalar_path,
)

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def snap_server(start_server):
    # The series here are small; folded into files (not the catalog, as by default),
    # the tests can see the superseded chunk files a snapshot keeps.
    return start_server("snapshots", {"FASTK__STORAGE__RESIDENT_ROWS_MAX": "0"})


def write(s: requests.Session, sym: str, bars: list[dict]) -> None:
    url = s.base + kline_path(sym) + "/records"
    for i in range(0, len(bars), 5000):
        expect_ok(s.post(url, json={"records": bars[i:i + 5000]}, timeout=120))


def read_frame(uri: str, sym: str, snapshot: str | None) -> pd.DataFrame:
    ticket = {"kind": "kline", "symbol": sym, "timeframe": "1m"}
    if snapshot:
        ticket["snapshot"] = snapshot
    with flight.connect(uri) as c:
        return c.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all().to_pandas()


def backtest(frame: pd.DataFrame) -> tuple[float, int]:
    """A moving-average crossover's total return and its number of trades."""
    close = frame["close"].astype("float64")
    fast = close.rolling(15).mean()
    slow = close.rolling(60).mean()
    position = (fast > slow).astype("float64").shift(1).fillna(0.0)
    returns = close.pct_change().fillna(0.0)
    pnl = float((position * returns).sum())
    trades = int(position.diff().abs().fillna(0.0).sum())
    return pnl, trades


def test_a_backtest_on_a_snapshot_gives_the_same_result_after_writes_and_a_restart(
    snap_server, unique_name
):
    srv = snap_server
    sym = unique_name("SNAP")
    with requests.Session() as s:
        s.base = srv.http_url
        expect_ok(register_kline(s, s.base, sym), 201)
        write(s, sym, make_klines(3 * 1440, start_ts=JAN_1_2024_MS, seed=21))
        # A few bars still in the log only: the snapshot holds them too.
        write(s, sym, make_klines(5, start_ts=JAN_1_2024_MS + 3 * DAY_MS, seed=22))
        r = s.post(s.base + "/v1/snapshots", json={
            "name": f"{sym}-fri",
            "series": [{"kind": "kline", "symbol": sym, "timeframe": "1m"}],
            "note": "the data of Friday's backtest",
        }, timeout=60)
        created = expect_ok(r, 201)
        assert created["name"] == f"{sym}-fri" and created["series"] == 1, created
        before = read_frame(srv.flight_uri, sym, f"{sym}-fri")
        assert len(before) == 3 * 1440 + 5
        result = backtest(before)
        assert result == backtest(read_frame(srv.flight_uri, sym, None))

        # The live series moves on: appends, replaced bars, a deleted range, a
        # compaction.
        write(s, sym, make_klines(2 * 1440, start_ts=JAN_1_2024_MS + 4 * DAY_MS, seed=23))
        replaced = make_klines(600, start_ts=JAN_1_2024_MS + DAY_MS, seed=99)
        write(s, sym, replaced)
        expect_ok(s.delete(s.base + kline_path(sym) + "/records", params={
            "start_ts": JAN_1_2024_MS + 2 * DAY_MS,
            "end_ts": JAN_1_2024_MS + 2 * DAY_MS + 120 * MINUTE_MS,
        }, timeout=60))
        expect_ok(s.post(s.base + "/v1/admin/compact", json={}, timeout=300))
        live = read_frame(srv.flight_uri, sym, None)
        assert backtest(live) != result, "the live series changed"

        after = read_frame(srv.flight_uri, sym, f"{sym}-fri")
        pd.testing.assert_frame_equal(after, before)
        assert backtest(after) == result

        # HTTP reads take snapshot= too, and answer the pinned rows.
        page = expect_ok(s.get(s.base + kline_path(sym) + "/records", params={
            "snapshot": f"{sym}-fri", "start_ts": JAN_1_2024_MS + DAY_MS, "limit": 3,
        }, timeout=30))
        first = before[before["ts"] >= pd.Timestamp(JAN_1_2024_MS + DAY_MS, unit="ms", tz="UTC")]
        assert [rec["close"] for rec in page["records"]] == list(first["close"][:3])
        latest = expect_ok(s.get(s.base + kline_path(sym) + "/latest",
                                 params={"snapshot": f"{sym}-fri"}, timeout=30))
        assert latest["records"][0]["ts"] == JAN_1_2024_MS + 3 * DAY_MS + 4 * MINUTE_MS

    # A kill -9 and a restart on the same root: the snapshot is still there, whole.
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(timeout=30)
    srv.start()
    again = read_frame(srv.flight_uri, sym, f"{sym}-fri")
    pd.testing.assert_frame_equal(again, before)
    assert backtest(again) == result


def test_snapshot_surfaces_and_refusals(snap_server, unique_name):
    srv = snap_server
    sym = unique_name("SNAPR")
    name = f"{sym}-s"
    with requests.Session() as s:
        s.base = srv.http_url
        expect_ok(register_kline(s, s.base, sym), 201)
        write(s, sym, make_klines(100, seed=5))
        expect_ok(s.post(s.base + "/v1/snapshots", json={
            "name": name, "series": [{"kind": "kline", "symbol": sym, "timeframe": "1m"}],
        }, timeout=60), 201)
        # Listed, shown with the pinned version.
        listed = expect_ok(s.get(s.base + "/v1/snapshots", timeout=30))["snapshots"]
        assert name in [x["name"] for x in listed]
        shown = expect_ok(s.get(s.base + f"/v1/snapshots/{name}", timeout=30))
        version = expect_ok(s.get(s.base + kline_path(sym), timeout=30))["version"]
        assert shown["series"] == [{
            "kind": "kline", "symbol": sym, "timeframe": "1m",
            "version": version, "rows": 100,
        }]
        # Refusals, with the contract's codes.
        msg = check_error(s.post(s.base + "/v1/snapshots", json={"name": name}, timeout=30),
                          409, "conflict")
        assert name in msg
        check_error(s.post(s.base + "/v1/snapshots", json={"name": "bad/name"}, timeout=30),
                    400, "invalid_argument")
        msg = check_error(s.post(s.base + "/v1/snapshots", json={
            "name": f"{sym}-x",
            "series": [{"kind": "kline", "symbol": f"{sym}NOPE", "timeframe": "1m"}],
        }, timeout=30), 404, "not_found")
        assert f"{sym}NOPE" in msg
        msg = check_error(s.delete(s.base + kline_path(sym), timeout=30), 409, "conflict")
        assert name in msg, msg
        check_error(s.get(s.base + kline_path(sym) + "/records",
                          params={"snapshot": "nope"}, timeout=30), 404, "not_found")
        check_error(s.get(s.base + "/v1/snapshots/nope", timeout=30), 404, "not_found")

        # The Flight actions answer the same.
        with flight.connect(srv.flight_uri) as c:
            def act(kind: str, body: dict | None = None) -> dict:
                raw = json.dumps(body).encode() if body is not None else b""
                out = list(c.do_action(flight.Action(kind, raw)))
                return json.loads(out[0].body.to_pybytes())

            assert name in [x["name"] for x in act("snapshot-list")["snapshots"]]
            assert act("snapshot-list", {"name": name})["series"][0]["version"] == version
            made = act("snapshot-create", {"name": f"{sym}-f", "series": "*"})
            assert made["name"] == f"{sym}-f" and made["series"] >= 1
            with pytest.raises(pa.ArrowException, match="already exists"):
                act("snapshot-create", {"name": f"{sym}-f"})
            assert act("snapshot-delete", {"name": f"{sym}-f"}) == {"deleted": f"{sym}-f"}
            with pytest.raises(pa.ArrowKeyError, match="does not exist"):
                act("snapshot-delete", {"name": f"{sym}-f"})

        # Once the snapshot goes, the series can be deleted.
        expect_ok(s.delete(s.base + f"/v1/snapshots/{name}", timeout=30), 204)
        expect_ok(s.delete(s.base + kline_path(sym), timeout=30), 204)


def test_sql_coverage_aligned_and_inventory_read_a_snapshot(snap_server, unique_name):
    """A snapshot is a schema of catalog fastk (ADBC), and the aligned view, coverage
    and the inventory see it too."""
    import adbc_driver_flightsql.dbapi as adbc

    srv = snap_server
    sym = unique_name("SNAPQ")
    name = f"{sym}-sql"
    bars = make_klines(200, seed=31)
    with requests.Session() as s:
        s.base = srv.http_url
        expect_ok(register_kline(s, s.base, sym), 201)
        write(s, sym, bars)
        expect_ok(register_scalar(s, s.base, sym, "feature", "x"), 201)
        values = make_scalars(200, seed=34)
        expect_ok(s.post(s.base + scalar_path(sym, "1m", "feature", "x") + "/records",
                         json={"records": values}, timeout=60))
        # Folded into chunk files first, so the rewrites below supersede files.
        expect_ok(s.post(s.base + "/v1/admin/compact", json={}, timeout=300))
        expect_ok(s.post(s.base + "/v1/snapshots", json={"name": name, "series": [
            {"kind": "kline", "symbol": sym, "timeframe": "1m"},
            {"kind": "scalar", "symbol": sym, "timeframe": "1m", "category": "feature",
             "name": "x"},
        ]}, timeout=60), 201)
        # The live series changes: 50 bars replaced, 100 appended, 20 deleted.
        write(s, sym, make_klines(50, seed=32))
        write(s, sym, make_klines(100, start_ts=JAN_1_2024_MS + 200 * MINUTE_MS, seed=33))
        expect_ok(s.delete(s.base + kline_path(sym) + "/records", params={
            "start_ts": JAN_1_2024_MS + 100 * MINUTE_MS,
            "end_ts": JAN_1_2024_MS + 119 * MINUTE_MS,
        }, timeout=60))

        query = (f'SELECT count(*) AS n, sum(close) AS s FROM "{name}".kline_raw '
                 f"WHERE symbol = '{sym}'")
        live_query = f"SELECT count(*) AS n FROM kline_raw WHERE symbol = '{sym}'"
        with adbc.connect(srv.flight_uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(query)
            n, total = cur.fetchone()
            assert (n, total) == (200, sum(b["close"] for b in bars))
            cur.execute(live_query)
            assert cur.fetchone()[0] == 280
            with pytest.raises(adbc.Error):
                cur.execute('SELECT count(*) FROM "no-such-snapshot".kline_raw')
                cur.fetchall()

        # Coverage counts the pinned bars (the deleted ones are not a gap there).
        cov = expect_ok(s.get(s.base + kline_path(sym) + "/coverage",
                              params={"snapshot": name}, timeout=30))
        assert cov["present"] == 200 and cov["gap_count"] == 0, cov
        live_cov = expect_ok(s.get(s.base + kline_path(sym) + "/coverage", timeout=30))
        assert live_cov["gap_count"] == 1, live_cov

        # The aligned view joins the pinned kline with the pinned scalar.
        body = {"scalars": [{"category": "feature", "name": "x"}], "snapshot": name,
                "limit": 1000}
        aligned = expect_ok(s.post(s.base + kline_path(sym) + "/aligned", json=body,
                                   timeout=30))
        assert len(aligned["records"]) == 200
        assert [r["close"] for r in aligned["records"]] == [b["close"] for b in bars]
        del body["snapshot"]
        live = expect_ok(s.post(s.base + kline_path(sym) + "/aligned", json=body, timeout=30))
        assert len(live["records"]) == 280

        inv = expect_ok(s.get(s.base + "/inventory", params={"partitions": "false"},
                              timeout=30))
        assert inv["snapshots"] >= 1
        # The 50 replaced bars' month was rewritten: its old file is kept for the snapshot.
        assert inv["snapshot_only_bytes"] > 0, inv
        metrics = s.get(s.base + "/metrics", timeout=30).text
        assert "fastk_snapshot_only_bytes " in metrics
        expect_ok(s.delete(s.base + f"/v1/snapshots/{name}", timeout=30), 204)
