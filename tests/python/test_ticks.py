"""Trades and quotes as a user reaches them today (docs/ticks.md): registered and
written over HTTP JSON with nanosecond timestamps, read back over HTTP pages and over
Arrow Flight into pyarrow, Polars and pandas, checked value by value against what was
sent (the `seq` the store assigned in arrival order included)."""

from __future__ import annotations

import random

import adbc_driver_flightsql.dbapi as adbc
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


def make_quotes(trades: list[dict], seed: int = 11) -> list[dict]:
    """Quotes ten times as frequent as trades, one of them at a trade's exact ts."""
    rng = random.Random(seed)
    out, ts = [], trades[0]["ts"] - 5_000_000
    end = trades[-1]["ts"]
    step = max(1, (end - ts) // (10 * len(trades)))
    while ts < end:
        ts += rng.randint(1, 2 * step)
        bid = 6_843_200 + rng.randint(-60, 60)
        out.append({"ts": ts, "bid": bid, "ask": bid + rng.randint(0, 3),
                    "bid_size": rng.randint(0, 90), "ask_size": rng.randint(0, 90)})
    mid = trades[len(trades) // 2]["ts"]
    out.append({"ts": mid, "bid": 6_000_000, "ask": 6_000_001, "bid_size": 1, "ask_size": 1})
    return out


def flight_table(server, cmd: str) -> pa.Table:
    client = flight.connect(server.flight_uri)
    try:
        return client.do_get(flight.Ticket(cmd.encode())).read_all()
    finally:
        client.close()


def test_bars_from_trades_match_pandas(server, trades):
    sym, rows = trades
    table = flight_table(server, f'{{"kind":"trade","symbol":"{sym}","resample":{{"timeframe":"1m"}},'
                                 f'"price_format":"float64"}}')
    got = table.to_pandas()
    df = pd.DataFrame(rows)
    df["t"] = pd.to_datetime(df["ts"], unit="ns", utc=True)
    df["price"] = df["price"] / 100
    df["size"] = df["size"] / 1000
    df["notional"] = df["price"] * df["size"]
    g = df.groupby(df["t"].dt.floor("1min"))
    want = pd.DataFrame({
        "open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
        "close": g["price"].last(), "volume": g["size"].sum(),
        "trades": g["price"].count(),
    })
    want["vwap"] = g["notional"].sum() / g["size"].sum()
    assert len(got) == len(want)
    assert [t.value for t in got["ts"]] == [t.value for t in want.index]
    for c in ["open", "high", "low", "close", "trades"]:
        assert got[c].tolist() == want[c].tolist(), c
    assert got["volume"].tolist() == pytest.approx(want["volume"].tolist(), rel=1e-12)
    assert got["vwap"].tolist() == pytest.approx(want["vwap"].tolist(), rel=1e-9)
    assert got["complete"].tolist() == [True] * (len(got) - 1) + [False]


def test_trade_quote_matches_pandas_merge_asof(server, trades):
    sym, rows = trades
    quotes = make_quotes(rows)
    with requests.Session() as s:
        expect_ok(s.post(server.http_url + "/v1/quote/series",
                         json={"symbol": sym, "price_scale": 100, "size_scale": 1000},
                         timeout=30), 201)
        for i in range(0, len(quotes), 5_000):  # http.max_body_bytes
            expect_ok(s.post(server.http_url + f"/v1/quote/{sym}/records",
                             json={"records": quotes[i:i + 5_000]}, timeout=60))
    got = flight_table(server, f'{{"kind":"trade_quote","symbol":"{sym}"}}').to_pandas()
    t = pd.DataFrame(rows)
    q = pd.DataFrame(quotes)
    q["order"] = range(len(q))
    q = q.sort_values(["ts", "order"], kind="stable")
    want = pd.merge_asof(t, q[["ts", "bid", "ask", "bid_size", "ask_size"]], on="ts",
                         direction="backward", allow_exact_matches=True)
    assert len(got) == len(want)
    for c in ["bid", "ask", "bid_size", "ask_size"]:
        g = got[c].astype("Float64").tolist()
        w = want[c].astype("Float64").tolist()
        assert [None if pd.isna(x) else int(x) for x in g] == \
               [None if pd.isna(x) else int(x) for x in w], c


def test_sql_reads_ticks_over_adbc_with_nanoseconds(server, trades):
    """The trade tables over Flight SQL: nanosecond ts, assigned seq, scaled prices,
    a pushed-down nanosecond window, and per-second VWAP checked against pandas."""
    sym, rows = trades
    with adbc.connect(server.flight_uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT ts, seq, price, size, side, trade_id FROM trade_raw "
                    f"WHERE symbol = '{sym}' ORDER BY ts, seq")
        raw = cur.fetch_arrow_table()
        assert raw.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
        assert raw.schema.field("seq").type == pa.uint64()
        assert raw.schema.field("side").type == pa.int8()
        assert raw.num_rows == len(rows)
        assert [t.value for t in raw.column("ts").to_pandas()] == [r["ts"] for r in rows]
        assert raw.column("seq").to_pylist() == expected_seq(rows)
        for col in ("price", "size", "side", "trade_id"):
            assert raw.column(col).to_pylist() == [r[col] for r in rows], col

        # A window with nanosecond edges: exactly the rows inside.
        lo, hi = rows[100]["ts"], rows[2_000]["ts"]
        cur.execute(f"SELECT count(*) AS n FROM trade WHERE symbol = '{sym}' "
                    f"AND ts >= to_timestamp_nanos({lo}) AND ts <= to_timestamp_nanos({hi})")
        n = cur.fetch_arrow_table().column("n")[0].as_py()
        assert n == sum(1 for r in rows if lo <= r["ts"] <= hi)

        # Per-second VWAP in SQL equals pandas over the rows written.
        cur.execute("SELECT date_bin(INTERVAL '1 second', ts) AS bucket, "
                    "sum(price * size) / sum(size) AS vwap, count(*) AS trades "
                    f"FROM trade WHERE symbol = '{sym}' GROUP BY 1 ORDER BY 1")
        got = cur.fetch_arrow_table().to_pandas()
    df = pd.DataFrame(rows)
    df["price"] = df["price"] / 100
    df["size"] = df["size"] / 1000
    df["bucket"] = pd.to_datetime(df["ts"], unit="ns", utc=True).dt.floor("1s")
    df["pv"] = df["price"] * df["size"]
    want = df.groupby("bucket").agg(pv=("pv", "sum"), size=("size", "sum"),
                                    trades=("ts", "size")).reset_index()
    want["vwap"] = want["pv"] / want["size"]
    assert got["trades"].tolist() == want["trades"].tolist()
    assert [b.value for b in got["bucket"]] == [b.value for b in want["bucket"]]
    pd.testing.assert_series_equal(got["vwap"], want["vwap"], check_names=False, rtol=1e-12)


def test_a_feed_of_many_symbols_is_written_whole_and_numbered(server):
    """A feed handler's write: trades of many symbols in one pyarrow DoPut
    `["trade", "*"]` (a dictionary `symbol` column, no `seq`) and in one HTTP
    `POST /v1/trade/records`; each symbol's trades read back into Polars with the
    `seq` the store numbered per symbol and nanosecond; a bad row refuses the whole
    request and leaves every symbol as it was."""
    tag = format(random.getrandbits(32), "x")
    syms = [f"FD{tag}-{i}" for i in range(20)]
    with requests.Session() as s:
        for sym in syms:
            expect_ok(s.post(server.http_url + "/v1/trade/series",
                             json={"symbol": sym, "price_scale": 100, "size_scale": 1}, timeout=30), 201)
    rng = random.Random(5)
    rows = []  # (symbol index, ts, price), in feed order
    ts = DAY0_NS
    for _ in range(4_000):
        ts += rng.choice([0, 0, 1, 1_000])
        rows.append((rng.randrange(len(syms)), ts, rng.randint(1, 10**6)))
    half = len(rows) // 2
    first, second = rows[:half], rows[half:]
    table = pa.table({
        "symbol": pa.DictionaryArray.from_arrays(pa.array([r[0] for r in first], pa.int32()), pa.array(syms)),
        "ts": pa.array([r[1] for r in first], pa.timestamp("ns", tz="UTC")),
        "price": pa.array([r[2] for r in first], pa.int64()),
        "size": pa.array([1] * len(first), pa.int64()),
        "side": pa.array([1] * len(first), pa.int8()),
    })
    client = flight.connect(server.flight_uri)
    try:
        w, r = client.do_put(flight.FlightDescriptor.for_path("trade", "*"), table.schema)
        w.write_table(table, max_chunksize=700)
        w.done_writing()
        ack = r.read()
        w.close()
        assert b'"written":2000' in ack.to_pybytes()
        with requests.Session() as s:
            body = {"records": [{"symbol": syms[i], "ts": t, "price": p, "size": 1, "side": -1}
                                for i, t, p in second]}
            got = expect_ok(s.post(server.http_url + "/v1/trade/records", json=body, timeout=60))
            assert got["written"] == len(second)
            bad = {"records": [{"symbol": syms[0], "ts": ts + 1, "price": 1, "size": 1},
                               {"symbol": syms[1], "ts": ts + 1, "price": 1, "size": -5}]}
            msg = check_error(s.post(server.http_url + "/v1/trade/records", json=bad, timeout=30),
                              422, "unprocessable")
            assert syms[1] in msg
        for i, sym in enumerate(syms):
            t = client.do_get(flight.Ticket(f'{{"kind":"trade","symbol":"{sym}"}}'.encode())).read_all()
            df = pl.from_arrow(t)
            mine = [(ts_, p) for j, ts_, p in rows if j == i]
            assert df["ts"].dt.epoch("ns").to_list() == [m[0] for m in mine], sym
            assert df["price"].to_list() == [m[1] for m in mine], sym
            assert df["seq"].to_list() == expected_seq([{"ts": m[0]} for m in mine]), sym
            assert df["side"].to_list() == [1 if k < half else -1 for k, r in enumerate(rows) if r[0] == i], sym
    finally:
        client.close()
