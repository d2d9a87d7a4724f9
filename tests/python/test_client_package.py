"""The Python client package (`clients/python`, `import fastk`) against a real server.

Everything here goes through the package only: registration, writes from pandas,
Polars and Arrow (float prices scaled to the series' integers, exactly or refused),
reads back into Arrow, Polars and pandas with times given every way the package takes
them, latest, many symbols, resample, as-of, coverage, SQL with and without
parameters, the error codes, and the Unix socket URL with the co-located read.

scripts/test.sh installs the package into the venv (`pip install ./clients/python`);
run from a checkout without it, the package is imported from `clients/python`.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

try:
    import fastk
except ImportError:  # not installed: the checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
    import fastk

from fastk_testlib import JAN_1_2024_MS, MINUTE_MS

TS = pa.timestamp("ms", tz="UTC")


@pytest.fixture(scope="module")
def unix_server(start_server):
    sock_dir = tempfile.mkdtemp(prefix="fkc")
    path = os.path.join(sock_dir, "flight.sock")
    srv = start_server("client", {"FASTK__FLIGHT__UNIX_SOCKET": path,
                                  "FASTK__STORAGE__LOW_DISK_BYTES": "0"})
    return srv, path


@pytest.fixture(scope="module")
def client(unix_server):
    srv, _ = unix_server
    c = fastk.connect(srv.flight_uri, http_url=srv.http_url)
    yield c
    c.close()


def bars_pandas(n: int, start_ms: int = JAN_1_2024_MS) -> pd.DataFrame:
    """`n` 1m bars with float prices in cents and volumes in thousandths."""
    i = pd.RangeIndex(n)
    open_ = 100.0 + (i % 7) * 0.25
    close = open_ + 0.5
    return pd.DataFrame({
        "ts": pd.to_datetime(start_ms + i * MINUTE_MS, unit="ms", utc=True),
        "open": open_, "high": close + 0.01, "low": open_ - 0.1, "close": close,
        "volume": (1500 + i) / 1000,
    })


def raw_of(df: pd.DataFrame) -> dict[str, list[int]]:
    """The integers the server must store for `bars_pandas` at scales 100 / 1000."""
    return {
        "open": [round(v * 100) for v in df["open"]],
        "high": [round(v * 100) for v in df["high"]],
        "low": [round(v * 100) for v in df["low"]],
        "close": [round(v * 100) for v in df["close"]],
        "volume": [round(v * 1000) for v in df["volume"]],
    }


def test_register_write_pandas_and_read_back_every_way(client, unique_name):
    sym = unique_name("PD")
    info = client.register_kline(sym, "1m", price_scale=100, volume_scale=1000)
    assert info["price_scale"] == 100 and info["volume_scale"] == 1000 and info["rows"] == 0
    # Registering the same fields again is fine; other scales are a conflict.
    assert client.register_kline(sym, "1m", 100, 1000)["symbol"] == sym
    with pytest.raises(fastk.FastKError) as e:
        client.register_kline(sym, "1m", 10, 1000)
    assert e.value.code == "conflict" and isinstance(e.value, fastk.Conflict)

    df = bars_pandas(300)
    reply = client.write("kline", sym, df, "1m")
    assert reply["written"] == 300 and reply["inserted"] == 300 and reply["version"] == 1

    t = client.read("kline", sym, "1m")
    assert isinstance(t, pa.Table)
    assert t.schema.field("ts").type == TS
    assert t.num_rows == 300
    assert t.column("ts").to_pylist()[0] == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    for col, want in raw_of(df).items():
        assert t.column(col).to_pylist() == want, col

    # float64 reads give back the floats written.
    back = client.read("kline", sym, "1m", price_format="float64", to="pandas")
    assert isinstance(back, pd.DataFrame)
    assert back["close"].tolist() == df["close"].tolist()
    assert back["volume"].tolist() == df["volume"].tolist()
    assert (back["ts"] == df["ts"]).all()

    pl_df = client.read("kline", sym, "1m", to="polars")
    assert isinstance(pl_df, pl.DataFrame)
    assert pl_df.schema["ts"] == pl.Datetime("ms", "UTC")
    assert pl_df["open"].to_list() == raw_of(df)["open"]

    # The same range [00:10, 00:20] given as every kind of time the package takes.
    lo, hi = JAN_1_2024_MS + 10 * MINUTE_MS, JAN_1_2024_MS + 20 * MINUTE_MS
    ways = [
        (lo, hi),
        (dt.datetime(2024, 1, 1, 0, 10), dt.datetime(2024, 1, 1, 0, 20)),  # naive = UTC
        (dt.datetime(2024, 1, 1, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=1))),
         dt.datetime(2024, 1, 1, 0, 20, tzinfo=dt.timezone.utc)),
        (pd.Timestamp("2024-01-01 00:10", tz="UTC"), pd.Timestamp("2024-01-01 00:20")),
        ("2024-01-01T00:10:00Z", "2024-01-01T00:20:00+00:00"),
        ("2024-01-01 00:10", "2024-01-01T01:20:00+01:00"),
    ]
    for start, end in ways:
        got = client.read("kline", sym, "1m", start=start, end=end)
        ts = got.column("ts").cast(pa.int64()).to_pylist()
        assert ts == list(range(lo, hi + 1, MINUTE_MS)), (start, end)

    last = client.read("kline", sym, "1m", latest=3, columns=["close"])
    assert last.column_names == ["ts", "close"]
    assert last.column("close").to_pylist() == raw_of(df)["close"][-3:]
    assert client.latest("kline", sym, "1m").num_rows == 1

    with pytest.raises(fastk.FastKError) as e:
        client.read("kline", sym, "1m", start="yesterday-ish")
    assert e.value.code == "invalid_argument"


def test_write_polars_and_arrow_ints_and_floats(client, unique_name):
    sym = unique_name("PL")
    client.register_kline(sym, "1m", price_scale=10, volume_scale=1)
    df = pl.DataFrame({
        "ts": [dt.datetime(2024, 2, 1, 0, m) for m in range(4)],      # naive: UTC
        "open": [10.0, 10.5, 11.0, 11.5], "high": [10.5, 11.0, 11.5, 12.0],
        "low": [9.5, 10.0, 10.5, 11.0], "close": [10.5, 11.0, 11.5, 12.0],
        "volume": [1, 2, 3, 4],                                        # integers: raw
    })
    assert client.write("kline", sym, df, "1m")["written"] == 4
    t = client.read("kline", sym, "1m", to="polars")
    assert t["open"].to_list() == [100, 105, 110, 115]
    assert t["volume"].to_list() == [1, 2, 3, 4]
    assert t["ts"][0] == dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)

    # An Arrow table of raw integers with int64 ts replaces a row (upsert).
    ms = int(dt.datetime(2024, 2, 1, 0, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    raw = pa.table({"ts": pa.array([ms], pa.int64()), "open": [200], "high": [210],
                    "low": [190], "close": [205], "volume": [9]})
    reply = client.write("kline", sym, raw, "1m", expected_version=1)
    assert reply["replaced"] == 1 and reply["version"] == 2
    assert client.read("kline", sym, "1m", start=ms, end=ms).column("close").to_pylist() == [205]
    with pytest.raises(fastk.FastKError) as e:
        client.write("kline", sym, raw, "1m", expected_version=1)
    assert e.value.code == "precondition_failed"


def test_a_value_that_does_not_fit_the_scale(client, unique_name):
    sym = unique_name("SC")
    client.register_kline(sym, "1m", price_scale=100, volume_scale=1000)
    df = bars_pandas(3)
    df.loc[1, "close"] = 100.505           # not a whole number of cents
    with pytest.raises(fastk.FastKError) as e:
        client.write("kline", sym, df, "1m")
    assert e.value.code == "invalid_argument" and isinstance(e.value, fastk.InvalidArgument)
    assert "close" in e.value.message and "scale 100" in e.value.message
    assert client.read("kline", sym, "1m").num_rows == 0, "nothing was written"
    # 1.005 at price_scale 100: the contract's example.
    one = pd.DataFrame({"ts": [pd.Timestamp("2024-01-01", tz="UTC")], "open": [1.005],
                        "high": [1.01], "low": [1.0], "close": [1.01], "volume": [1.0]})
    with pytest.raises(fastk.FastKError) as e:
        client.write("kline", sym, one, "1m")
    assert e.value.code == "invalid_argument"
    # With a rounding mode it is written, rounded.
    assert client.write("kline", sym, df, "1m", rounding="half_up")["written"] == 3
    closes = client.read("kline", sym, "1m").column("close").to_pylist()
    # 100.505 * 100 is 10050.5 as a double: half_up makes it 10051 (nearest, half to
    # even, would make it 10050).
    assert closes == [10050, 10051, round(df["close"][2] * 100)]


def test_many_symbols_write_read_as_of_and_resample(client, unique_name):
    syms = sorted(unique_name("MS") for _ in range(3))
    for s in syms:
        client.register_kline(s, "1m", price_scale=100, volume_scale=1000)
    frames = []
    for k, s in enumerate(syms):
        d = bars_pandas(120 + k)
        d.insert(0, "symbol", s)
        frames.append(d)
    everything = pd.concat(frames, ignore_index=True)
    reply = client.write("kline", "*", pl.from_pandas(everything), "1m")
    assert reply["written"] == len(everything)
    assert [x["symbol"] for x in reply["series"]] == syms

    t = client.read("kline", syms, "1m")
    assert t.column_names[0] == "symbol"
    counts = t.group_by("symbol").aggregate([("ts", "count")]).to_pydict()
    assert dict(zip(counts["symbol"], counts["ts_count"])) == {
        s: 120 + k for k, s in enumerate(syms)}

    latest = client.read("kline", syms, "1m", latest=1, to="pandas")
    assert latest["symbol"].astype(str).tolist() == syms
    assert latest["ts"].tolist() == [
        pd.Timestamp(JAN_1_2024_MS + (119 + k) * MINUTE_MS, unit="ms", tz="UTC")
        for k in range(3)]

    at = dt.datetime(2024, 1, 1, 0, 30)
    cross = client.as_of("kline", syms, "1m", at)
    assert cross.column("ts").cast(pa.int64()).to_pylist() == [JAN_1_2024_MS + 30 * MINUTE_MS] * 3

    # Resample: one hour of 1m bars makes one bucket with their open, high, low,
    # close and summed volume.
    hourly = client.resample("kline", syms[0], "1m", "1h", to="polars")
    first = frames[0].iloc[:60]
    raw = raw_of(first)
    assert hourly.height == 2 and "complete" in hourly.columns
    assert hourly["open"][0] == raw["open"][0]
    assert hourly["high"][0] == max(raw["high"]) and hourly["low"][0] == min(raw["low"])
    assert hourly["close"][0] == raw["close"][-1]
    assert hourly["volume"][0] == sum(raw["volume"])
    assert hourly["complete"].to_list() == [True, False]

    cov = client.coverage("kline", syms[1], "1m")
    assert cov["expected"] == 121 and cov["present"] == 121 and cov["gaps"] == []


def test_scalars_and_the_aligned_view(client, unique_name):
    sym = unique_name("SV")
    client.register_kline(sym, "1m", price_scale=100, volume_scale=1000)
    client.register_scalar(sym, "1m", "ind", "rsi", "f64")
    client.register_scalar(sym, "1m", "ind", "side", value_type="i64")
    client.write("kline", sym, bars_pandas(10), "1m")
    ts = pa.array([JAN_1_2024_MS + i * MINUTE_MS for i in range(0, 10, 2)], TS)
    client.write("scalar", sym, pa.table({"ts": ts, "value": [1.5, 2.5, 3.5, 4.5, 5.5]}),
                 "1m", category="ind", name="rsi")
    client.write("scalar", sym, pd.DataFrame({"ts": ts.to_pandas(), "value": [1.0, -1.0, 0.0, 1.0, 1.0]}),
                 "1m", category="ind", name="side")
    with pytest.raises(fastk.FastKError) as e:
        client.write("scalar", sym, pa.table({"ts": ts, "value": [0.5] * 5}), "1m",
                     category="ind", name="side")
    assert e.value.code == "invalid_argument"

    rsi = client.read("scalar", sym, "1m", category="ind", name="rsi",
                      predicate={"op": "gt", "value": 3})
    assert rsi.column("value").to_pylist() == [3.5, 4.5, 5.5]
    side = client.read("scalar", sym, "1m", category="ind", name="side")
    assert side.schema.field("value").type == pa.int64()
    assert side.column("value").to_pylist() == [1, -1, 0, 1, 1]

    view = client.aligned(sym, "1m", [("ind", "rsi")], join="asof", to="pandas")
    assert view.columns.tolist() == ["ts", "open", "high", "low", "close", "volume", "ind.rsi"]
    assert view["ind.rsi"].tolist() == [1.5, 1.5, 2.5, 2.5, 3.5, 3.5, 4.5, 4.5, 5.5, 5.5]


def test_sql(client, unique_name):
    sym = unique_name("SQ")
    client.register_kline(sym, "1m", price_scale=100, volume_scale=1000)
    df = bars_pandas(50)
    client.write("kline", sym, df, "1m")
    t = client.sql(f"SELECT count(*) AS n, max(high) AS h FROM kline WHERE symbol = '{sym}'")
    assert t.to_pylist() == [{"n": 50, "h": max(df["high"])}]
    got = client.sql(
        "SELECT ts, close FROM kline WHERE symbol = $1 AND timeframe = $2 AND ts >= $3 "
        "ORDER BY ts", [sym, "1m", dt.datetime(2024, 1, 1, 0, 45)], to="polars")
    assert isinstance(got, pl.DataFrame)
    assert got["close"].to_list() == df["close"].tolist()[45:]
    assert got["ts"][0] == dt.datetime(2024, 1, 1, 0, 45, tzinfo=dt.timezone.utc)
    empty = client.sql("SELECT symbol FROM kline WHERE symbol = $1", ["NOPE-" + sym],
                       to="pandas")
    assert isinstance(empty, pd.DataFrame) and len(empty) == 0
    with pytest.raises(fastk.FastKError) as e:
        client.sql("DELETE FROM kline")
    assert e.value.code == "invalid_argument"


def test_error_codes(client, unique_name):
    missing = unique_name("NO")
    with pytest.raises(fastk.FastKError) as e:
        client.read("kline", missing, "1m")
    assert e.value.code == "not_found" and isinstance(e.value, fastk.NotFound)
    assert missing in e.value.message
    with pytest.raises(fastk.NotFound):
        client.write("kline", missing, bars_pandas(1), "1m")
    with pytest.raises(fastk.FastKError) as e:
        client.read("kline", "BTC", "1m", bogus=1)
    assert e.value.code == "invalid_argument" and "bogus" in e.value.message
    with pytest.raises(fastk.FastKError) as e:
        client.read("kline", "BTC", "1m", to="numpy")
    assert e.value.code == "invalid_argument"
    # Registration needs the HTTP address.
    with fastk.connect(client.url) as bare:
        with pytest.raises(fastk.FastKError) as e:
            bare.register_kline("X", "1m", 1, 1)
        assert e.value.code == "invalid_argument" and "http_url" in e.value.message


def test_unix_socket_url_and_the_co_located_read(client, unix_server, unique_name):
    _, path = unix_server
    sym = unique_name("UX")
    client.register_kline(sym, "1m", price_scale=100, volume_scale=1000)
    client.write("kline", sym, bars_pandas(2000), "1m")
    with fastk.connect(f"grpc+unix://{path}") as unix:
        assert unix.health()["status"] in ("ok", "degraded")
        want = client.read("kline", sym, "1m")
        over_socket = unix.read("kline", sym, "1m")
        assert over_socket.equals(want) and want.num_rows == 2000
        mapped = unix.read("kline", sym, "1m", local=True)
        assert mapped.equals(want)
        assert mapped.schema.equals(want.schema, check_metadata=True)
        df = unix.read("kline", sym, "1m", start="2024-01-01T00:10:00Z", latest=5,
                       local=True, to="polars")
        assert df.height == 5 and df["ts"][-1] == want.column("ts")[-1].as_py()
        n = unix.sql("SELECT count(*) AS n FROM kline WHERE symbol = $1", [sym])
        assert n.column("n").to_pylist() == [2000]
        with pytest.raises(fastk.FastKError) as e:
            unix.read("kline", unique_name("NO"), "1m", local=True)
        assert e.value.code == "not_found"
    # Over TCP the co-located read is refused before anything is sent.
    with pytest.raises(fastk.FastKError) as e:
        client.read("kline", sym, "1m", local=True)
    assert e.value.code == "precondition_failed"
