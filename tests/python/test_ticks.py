"""Trades and quotes as a user reaches them today (docs/ticks.md): registered and
written over HTTP JSON with nanosecond timestamps, read back over HTTP pages and over
Arrow Flight into pyarrow, Polars and pandas, checked value by value against what was
sent (the `seq` the store assigned in arrival order included)."""

from __future__ import annotations

import random

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from fastk_testlib import check_error, expect_ok

# 2024-03-10T00:00:00Z in nanoseconds.
DAY0_NS = 1_710_028_800_000_000_000


def make_trades(n: int, seed: int = 7) -> list[dict]:
    """Bursts: several trades share a nanosecond, as on a busy venue."""
    rng = random.Random(seed)
    out, ts = [], DAY0_NS
    for _ in range(n):
        ts += rng.choice([0, 0, 0, 1, 250, 1_000_000])
        out.append({
            "ts": ts,
            "price": 6_843_200 + rng.randint(-50, 50),
            "size": rng.randint(1, 5_000),
            "side": rng.choice([-1, 0, 1]),
            "trade_id": rng.randint(1, 2**40),
        })
    return out


def expected_seq(trades: list[dict]) -> list[int]:
    seen: dict[int, int] = {}
    out = []
    for t in trades:
        out.append(seen.get(t["ts"], 0))
        seen[t["ts"]] = out[-1] + 1
    return out


@pytest.fixture(scope="module")
def trades(server):
    sym = "TCK-" + format(random.getrandbits(40), "x")
    rows = make_trades(3_000)
    with requests.Session() as s:
        expect_ok(s.post(server.http_url + "/v1/trade/series",
                         json={"symbol": sym, "price_scale": 100, "size_scale": 1000},
                         timeout=30), 201)
        expect_ok(s.post(server.http_url + f"/v1/trade/{sym}/records",
                         json={"records": rows}, timeout=60))
    return sym, rows


def test_pages_carry_the_assigned_seq(server, trades):
    sym, rows = trades
    got, after = [], None
    with requests.Session() as s:
        while True:
            q = "?limit=700" + (f"&after_ts={after['ts']}&after_seq={after['seq']}" if after else "")
            page = expect_ok(s.get(server.http_url + f"/v1/trade/{sym}/records{q}", timeout=30))
            got.extend(page["records"])
            after = page["next"]
            if after is None:
                break
    assert [r["ts"] for r in got] == [r["ts"] for r in rows]
    assert [r["seq"] for r in got] == expected_seq(rows)
    assert [r["price"] for r in got] == [r["price"] for r in rows]
    assert [r["trade_id"] for r in got] == [r["trade_id"] for r in rows]


def test_flight_reads_into_pyarrow_polars_and_pandas(server, trades):
    sym, rows = trades
    client = flight.connect(server.flight_uri)
    try:
        table = client.do_get(flight.Ticket(
            f'{{"kind":"trade","symbol":"{sym}","price_format":"float64"}}'.encode())).read_all()
    finally:
        client.close()
    assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("seq").type == pa.uint64()
    assert table.schema.field("side").type == pa.int8()
    assert table.num_rows == len(rows)
    df = pl.from_arrow(table)
    assert df["ts"].dt.epoch("ns").to_list() == [r["ts"] for r in rows]
    assert df["seq"].to_list() == expected_seq(rows)
    assert df["price"].to_list() == [r["price"] / 100 for r in rows]
    pdf = table.to_pandas()
    want = pd.DataFrame({"size": [r["size"] / 1000 for r in rows],
                         "side": [r["side"] for r in rows]})
    pd.testing.assert_series_equal(pdf["size"], want["size"])
    assert pdf["side"].tolist() == want["side"].tolist()
    # Nanosecond precision survives into pandas.
    assert pdf["ts"].iloc[0] == pd.Timestamp(rows[0]["ts"], unit="ns", tz="UTC")


def test_bad_ticks_are_refused_whole(server, trades):
    sym, rows = trades
    base = server.http_url + f"/v1/trade/{sym}/records"
    with requests.Session() as s:
        msg = check_error(s.post(base, json={"records": [
            {"ts": DAY0_NS, "price": 1, "size": 1},
            {"ts": DAY0_NS, "price": 1, "size": 1, "side": 3}]}, timeout=30), 422, "unprocessable")
        assert "record 1" in msg
        check_error(s.post(base, json={"records": [{"ts": -1, "price": 1, "size": 1}]},
                           timeout=30), 400, "invalid_argument")
        latest = expect_ok(s.get(server.http_url + f"/v1/trade/{sym}/latest?n=1", timeout=30))
    assert latest["records"][0]["ts"] == rows[-1]["ts"], "nothing of a refused write stayed"
