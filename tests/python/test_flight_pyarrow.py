"""Arrow Flight as pyarrow and Polars users reach it, against the real binary.

Data is written over HTTP JSON (or over DoPut) and read back over Flight, so these
tests also check that the two front ends agree.

pyarrow maps gRPC status codes from a non-Arrow server (no x-arrow-status trailers)
like this: INVALID_ARGUMENT -> ArrowInvalid ("invalid argument"), NOT_FOUND ->
ArrowKeyError ("not found"), FAILED_PRECONDITION -> ArrowInvalid ("precondition
failed"), UNAUTHENTICATED -> FlightUnauthenticatedError.
"""

from __future__ import annotations

import json
import math
import random

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
import requests

from fastk_testlib import (
    AUTH_TOKEN,
    JAN_31_2024_MS,
    MINUTE_MS,
    expect_ok,
    kline_path,
    make_klines,
    make_scalars,
    register_kline,
    register_scalar,
    scalar_path,
)

TS_TYPE = pa.timestamp("ms", tz="UTC")
KLINE_COLS = ["open", "high", "low", "close", "volume"]
MAX_BATCH_ROWS = 65_536


@pytest.fixture(scope="module")
def client(server):
    c = flight.connect(server.flight_uri)
    yield c
    c.close()


@pytest.fixture(scope="module")
def kline_series(server):
    """A registered 1m kline series with 3000 bars (Jan 31 into February), via HTTP."""
    sym = "FLK-" + format(random.getrandbits(40), "x")
    with requests.Session() as s:
        expect_ok(register_kline(s, server.http_url, sym, price_scale=100, volume_scale=1000),
                  201)
        records = make_klines(3000, start_ts=JAN_31_2024_MS)
        body = {"records": records[::-1]}  # any order is fine
        expect_ok(s.post(server.http_url + kline_path(sym) + "/records", json=body, timeout=60))
    return sym, records


def kline_ticket(sym: str, **extra) -> flight.Ticket:
    return flight.Ticket(json.dumps(dict(kind="kline", symbol=sym, timeframe="1m", **extra)))


def scalar_ticket(sym: str, category: str, name: str, **extra) -> flight.Ticket:
    t = dict(kind="scalar", symbol=sym, timeframe="1m", category=category, name=name, **extra)
    return flight.Ticket(json.dumps(t))


def ts_ms(table: pa.Table) -> list[int]:
    return table.column("ts").cast(pa.int64()).to_pylist()


def read(client, ticket) -> pa.Table:
    return client.do_get(ticket).read_all()


def assert_kline_table(table: pa.Table, records: list[dict], sym: str) -> None:
    assert table.schema.names == ["ts"] + KLINE_COLS
    ts_field = table.schema.field("ts")
    assert ts_field.type == TS_TYPE and not ts_field.nullable
    for c in KLINE_COLS:
        assert table.schema.field(c).type == pa.int64(), table.schema
    assert ts_ms(table) == [r["ts"] for r in records]
    for c in KLINE_COLS:
        assert table.column(c).to_pylist() == [r[c] for r in records], c
    md = table.schema.metadata
    assert md[b"fastk.kind"] == b"kline"
    assert md[b"fastk.symbol"] == sym.encode()
    assert md[b"fastk.timeframe"] == b"1m"
    assert md[b"fastk.timeframe_ms"] == b"60000"
    assert md[b"fastk.price_scale"] == b"100"
    assert md[b"fastk.volume_scale"] == b"1000"


def test_do_get_kline_full_and_ranges(client, kline_series):
    sym, records = kline_series
    assert_kline_table(read(client, kline_ticket(sym)), records, sym)
    lo, hi = records[1000]["ts"], records[2500]["ts"]
    table = read(client, kline_ticket(sym, start_ts=lo, end_ts=hi))
    assert_kline_table(table, records[1000:2501], sym)  # inclusive at both ends
    table = read(client, kline_ticket(sym, end_ts=records[4]["ts"]))
    assert_kline_table(table, records[:5], sym)


def test_do_get_latest_and_columns(client, kline_series):
    sym, records = kline_series
    assert_kline_table(read(client, kline_ticket(sym, latest=7)), records[-7:], sym)
    hi = records[1999]["ts"]
    table = read(client, kline_ticket(sym, end_ts=hi, latest=3))
    assert_kline_table(table, records[1997:2000], sym)

    table = read(client, kline_ticket(sym, columns=["close", "volume"]))
    assert table.schema.names == ["ts", "close", "volume"]
    assert ts_ms(table) == [r["ts"] for r in records]
    assert table.column("close").to_pylist() == [r["close"] for r in records]


def test_do_get_price_format_float64(client, kline_series):
    sym, records = kline_series
    table = read(client, kline_ticket(sym, price_format="float64"))
    assert table.schema.field("ts").type == TS_TYPE
    for c in KLINE_COLS:
        assert table.schema.field(c).type == pa.float64(), table.schema
    scale = {"open": 100, "high": 100, "low": 100, "close": 100, "volume": 1000}
    for c in KLINE_COLS:
        got = table.column(c).to_pylist()
        want = [r[c] / scale[c] for r in records]
        assert all(math.isclose(g, w, rel_tol=1e-15, abs_tol=0) for g, w in zip(got, want)), c
        assert len(got) == len(want)
    assert table.schema.metadata[b"fastk.price_scale"] == b"100"


def test_polars_from_arrow(client, kline_series):
    sym, records = kline_series
    df = pl.from_arrow(read(client, kline_ticket(sym)))
    assert df.schema["ts"] == pl.Datetime("ms", "UTC")
    assert df.height == len(records)
    assert df["ts"].dt.epoch("ms").to_list() == [r["ts"] for r in records]
    assert df["close"].dtype == pl.Int64
    assert df["close"].to_list() == [r["close"] for r in records]


@pytest.fixture(scope="module")
def scalar_series(server):
    """An f64 and an i64 scalar series written over HTTP."""
    sym = "FLS-" + format(random.getrandbits(40), "x")
    f64 = make_scalars(2500, start_ts=JAN_31_2024_MS, value_type="f64")
    i64 = make_scalars(2500, start_ts=JAN_31_2024_MS, value_type="i64")
    with requests.Session() as s:
        for name, vt, rows in (("rsi_14", "f64", f64), ("cross", "i64", i64)):
            expect_ok(register_scalar(s, server.http_url, sym, "indicator", name, vt), 201)
            url = server.http_url + scalar_path(sym, "1m", "indicator", name) + "/records"
            expect_ok(s.post(url, json={"records": rows}, timeout=60))
    return sym, f64, i64


def test_do_get_scalar(client, scalar_series):
    sym, f64, i64 = scalar_series
    for name, rows, typ, vt in (("rsi_14", f64, pa.float64(), b"f64"),
                                ("cross", i64, pa.int64(), b"i64")):
        table = read(client, scalar_ticket(sym, "indicator", name))
        assert table.schema.names == ["ts", "value"]
        assert table.schema.field("ts").type == TS_TYPE
        assert not table.schema.field("ts").nullable
        assert table.schema.field("value").type == typ
        assert ts_ms(table) == [r["ts"] for r in rows]
        assert table.column("value").to_pylist() == [r["value"] for r in rows]
        md = table.schema.metadata
        assert md[b"fastk.kind"] == b"scalar"
        assert md[b"fastk.symbol"] == sym.encode()
        assert md[b"fastk.timeframe"] == b"1m" and md[b"fastk.timeframe_ms"] == b"60000"

    lo, hi = f64[10]["ts"], f64[20]["ts"]
    table = read(client, scalar_ticket(sym, "indicator", "rsi_14", start_ts=lo, end_ts=hi))
    assert table.column("value").to_pylist() == [r["value"] for r in f64[10:21]]
    table = read(client, scalar_ticket(sym, "indicator", "rsi_14", latest=4))
    assert table.column("value").to_pylist() == [r["value"] for r in f64[-4:]]


def test_predicate_ticket_equals_python_filter(client, scalar_series):
    sym, f64, i64 = scalar_series
    cases = [
        ("rsi_14", f64, {"op": "gt", "value": 70}, lambda v: v > 70),
        ("rsi_14", f64, {"op": "between", "min": 20.5, "max": 30.25, "inclusive": True},
         lambda v: 20.5 <= v <= 30.25),
        ("rsi_14", f64, {"op": "lte", "value": 1.5}, lambda v: v <= 1.5),
        ("cross", i64, {"op": "eq", "value": -1}, lambda v: v == -1),
        ("cross", i64, {"op": "not_in", "values": [0, 1]}, lambda v: v not in (0, 1)),
        ("cross", i64, {"op": "in", "values": [1]}, lambda v: v == 1),
    ]
    for name, rows, pred, keep in cases:
        table = read(client, scalar_ticket(sym, "indicator", name, predicate=pred))
        want = [r for r in rows if keep(r["value"])]
        assert want, pred
        assert ts_ms(table) == [r["ts"] for r in want], pred
        if "value" in table.schema.names:
            assert table.column("value").to_pylist() == [r["value"] for r in want], pred
    # A predicate within a range.
    lo, hi = f64[100]["ts"], f64[900]["ts"]
    table = read(client, scalar_ticket(sym, "indicator", "rsi_14", start_ts=lo, end_ts=hi,
                                       predicate={"op": "gte", "value": 50}))
    assert ts_ms(table) == [r["ts"] for r in f64[100:901] if r["value"] >= 50]


def kline_schema() -> pa.Schema:
    fields = [pa.field("ts", TS_TYPE, nullable=False)]
    fields += [pa.field(c, pa.int64(), nullable=False) for c in KLINE_COLS]
    return pa.schema(fields)


def synthetic_klines(n: int, start_ts: int) -> pa.Table:
    """`n` valid 1m bars built with pyarrow compute (no Python loop per row)."""
    i = pa.array(range(n), type=pa.int64())
    ts = pc.add(pc.multiply(i, MINUTE_MS), start_ts).cast(TS_TYPE)
    open_ = pc.add(pc.add(pc.multiply(pc.bit_wise_and(i, 1023), 7), 1_000_000), 0)
    close = pc.add(open_, pc.subtract(pc.bit_wise_and(i, 15), 7))
    high = pc.add(pc.max_element_wise(open_, close), pc.bit_wise_and(i, 3))
    low = pc.subtract(pc.min_element_wise(open_, close), pc.bit_wise_and(i, 7))
    volume = pc.multiply(pc.bit_wise_and(i, 4095), 13)
    return pa.Table.from_arrays([ts, open_, high, low, close, volume], schema=kline_schema())


def do_put(client, descriptor, table: pa.Table, options=None, metadata: bytes | None = None):
    writer, reader = client.do_put(descriptor, table.schema, options=options)
    try:
        if metadata is None:
            writer.write_table(table, max_chunksize=MAX_BATCH_ROWS)
        else:
            batches = table.to_batches(max_chunksize=MAX_BATCH_ROWS)
            writer.write_with_metadata(batches[0], pa.py_buffer(metadata))
            for b in batches[1:]:
                writer.write_batch(b)
        writer.done_writing()
        buf = reader.read()
    finally:
        writer.close()
    assert buf is not None, "DoPut returned no PutResult"
    return json.loads(buf.to_pybytes())


def test_do_put_one_million_rows_round_trip(client, server, unique_name):
    sym = unique_name("PUT")
    with requests.Session() as s:
        expect_ok(register_kline(s, server.http_url, sym), 201)
    n = 1_000_000
    table = synthetic_klines(n, start_ts=1_577_836_800_000)  # 2020-01-01, ~23 months
    desc = flight.FlightDescriptor.for_path("kline", sym, "1m")
    result = do_put(client, desc, table)
    assert result["written"] == n and result["inserted"] == n and result["replaced"] == 0
    assert len(result["months"]) == 23 and result["version"] >= 1

    back = read(client, kline_ticket(sym))
    assert back.num_rows == n
    assert all(b.num_rows <= MAX_BATCH_ROWS for b in back.to_batches())
    assert back.schema.field("ts").type == TS_TYPE
    assert back.schema.names == table.schema.names
    for name in table.schema.names:
        assert back.column(name).equals(table.column(name)), f"{name} differs after DoPut"

    with requests.Session() as s:
        meta = expect_ok(s.get(server.http_url + kline_path(sym), timeout=30))
    assert meta["rows"] == n and meta["version"] == result["version"]


def test_do_put_with_int64_ts_and_scalar_nan(client, server, unique_name):
    sym = unique_name("PUTS")
    with requests.Session() as s:
        expect_ok(register_scalar(s, server.http_url, sym, "feature", "z", "f64"), 201)
    values = [0.5, float("nan"), -2.0, 3.25, 0.5, float("inf")]
    ts = [JAN_31_2024_MS + k * MINUTE_MS for k in range(len(values))]
    schema = pa.schema([pa.field("ts", pa.int64(), nullable=False),
                        pa.field("value", pa.float64(), nullable=False)])
    table = pa.table({"ts": ts, "value": values}, schema=schema)
    desc = flight.FlightDescriptor.for_path("scalar", sym, "1m", "feature", "z")
    result = do_put(client, desc, table)
    assert result["written"] == len(values)

    back = read(client, scalar_ticket(sym, "feature", "z"))
    assert ts_ms(back) == ts
    got = back.column("value").to_pylist()
    assert math.isnan(got[1]) and [g for k, g in enumerate(got) if k != 1] == \
        [v for k, v in enumerate(values) if k != 1]
    # NaN never matches a comparison, not even `ne`.
    t = read(client, scalar_ticket(sym, "feature", "z", predicate={"op": "ne", "value": 0.5}))
    assert ts_ms(t) == [ts[2], ts[3], ts[5]]


def test_do_put_expected_version(client, server, unique_name):
    sym = unique_name("PUTV")
    with requests.Session() as s:
        expect_ok(register_kline(s, server.http_url, sym), 201)
    desc = flight.FlightDescriptor.for_path("kline", sym, "1m")
    first = do_put(client, desc, synthetic_klines(100, JAN_31_2024_MS))
    version = first["version"]
    later = synthetic_klines(200, JAN_31_2024_MS).slice(100)
    stale = json.dumps({"expected_version": version - 1}).encode()
    with pytest.raises(pa.ArrowInvalid, match="precondition"):
        do_put(client, desc, later, metadata=stale)
    assert read(client, kline_ticket(sym)).num_rows == 100
    ok = json.dumps({"expected_version": version}).encode()
    second = do_put(client, desc, later, metadata=ok)
    assert second["version"] > version and second["inserted"] == 100


def test_list_flights_and_flight_info_agree_with_inventory(client, server, kline_series,
                                                           scalar_series):
    with requests.Session() as s:
        inv = expect_ok(s.get(server.http_url + "/inventory", timeout=30))

    def path_of(item) -> tuple:
        if item["kind"] == "kline":
            return ("kline", item["symbol"], item["timeframe"])
        if item["kind"] in ("trade", "quote"):  # another module's ticks on the shared server
            return (item["kind"], item["symbol"])
        return ("scalar", item["symbol"], item["timeframe"], item["category"], item["name"])

    want = {path_of(i): i["rows"] for i in inv["series"]}
    infos = list(client.list_flights())
    got = {tuple(p.decode() for p in fi.descriptor.path): fi.total_records for fi in infos}
    assert len(infos) == len(got)  # one FlightInfo per series
    assert got == want

    klines = list(client.list_flights(b'{"kind": "kline"}'))
    assert klines and all(fi.descriptor.path[0] == b"kline" for fi in klines)
    assert len(klines) == sum(1 for p in want if p[0] == "kline")
    sym, records = kline_series
    only = list(client.list_flights(json.dumps({"symbol": sym}).encode()))
    assert [tuple(fi.descriptor.path) for fi in only] == [(b"kline", sym.encode(), b"1m")]

    cmd = {"kind": "kline", "symbol": sym, "timeframe": "1m",
           "start_ts": records[10]["ts"], "end_ts": records[109]["ts"]}
    info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(cmd)))
    assert info.total_records == 100
    assert info.schema.field("ts").type == TS_TYPE
    assert info.schema.names == ["ts"] + KLINE_COLS
    assert len(info.endpoints) >= 1
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert ts_ms(table) == [r["ts"] for r in records[10:110]]
    assert table.schema.equals(info.schema, check_metadata=True)

    full = client.get_flight_info(flight.FlightDescriptor.for_command(
        json.dumps({"kind": "kline", "symbol": sym, "timeframe": "1m"})))
    assert full.total_records == want[("kline", sym, "1m")] == len(records)

    schema = client.get_schema(flight.FlightDescriptor.for_command(
        json.dumps({"kind": "kline", "symbol": sym, "timeframe": "1m",
                    "price_format": "float64"}))).schema
    assert schema.field("close").type == pa.float64()
    assert schema.metadata[b"fastk.symbol"] == sym.encode()


def test_actions(client, server):
    names = {a.type for a in client.list_actions()}
    assert {"health", "inventory", "validate", "scrub", "repair", "rebuild-manifest",
            "compact"} <= names
    results = list(client.do_action(flight.Action("health", b"")))
    assert len(results) == 1
    health = json.loads(results[0].body.to_pybytes())
    assert health["status"] == "ok"
    inv = json.loads(list(client.do_action(flight.Action("inventory", b"")))[0]
                     .body.to_pybytes())
    with requests.Session() as s:
        http_inv = expect_ok(s.get(server.http_url + "/inventory", timeout=30))
    assert {(i["kind"], i["symbol"], i["rows"]) for i in inv["series"]} == \
        {(i["kind"], i["symbol"], i["rows"]) for i in http_inv["series"]}
    report = json.loads(list(client.do_action(flight.Action("validate", b"{}")))[0]
                        .body.to_pybytes())
    assert report["clean"] is True and report["findings"] == []


def test_bad_tickets_are_invalid_argument(client, kline_series):
    sym, _ = kline_series
    bad = [
        b"{not json",
        b"[]",
        json.dumps({"kind": "candle", "symbol": sym, "timeframe": "1m"}).encode(),
        json.dumps({"kind": "kline", "symbol": "../etc", "timeframe": "1m"}).encode(),
        json.dumps({"kind": "kline", "symbol": sym, "timeframe": "1m",
                    "price_format": "decimal"}).encode(),
        json.dumps({"kind": "kline", "symbol": sym, "timeframe": "1m",
                    "columns": ["nope"]}).encode(),
    ]
    for raw in bad:
        with pytest.raises(pa.ArrowInvalid, match="invalid argument"):
            client.do_get(flight.Ticket(raw)).read_all()
    with pytest.raises(pa.ArrowInvalid, match="invalid argument"):
        client.get_flight_info(flight.FlightDescriptor.for_command(b"{not json"))


def test_unknown_series_is_not_found(client, unique_name):
    missing = unique_name("NOPE")
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        client.do_get(kline_ticket(missing)).read_all()
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        client.get_flight_info(flight.FlightDescriptor.for_command(
            json.dumps({"kind": "scalar", "symbol": missing, "timeframe": "1m",
                        "category": "x", "name": "y"})))
    desc = flight.FlightDescriptor.for_path("kline", missing, "1m")
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        do_put(client, desc, synthetic_klines(10, JAN_31_2024_MS))


def test_do_put_bad_schema_is_invalid_argument(client, server, unique_name):
    sym = unique_name("PUTB")
    with requests.Session() as s:
        expect_ok(register_kline(s, server.http_url, sym), 201)
    desc = flight.FlightDescriptor.for_path("kline", sym, "1m")
    good = synthetic_klines(10, JAN_31_2024_MS)

    as_float = good.set_column(1, pa.field("open", pa.float64()),
                               good.column("open").cast(pa.float64()))
    with pytest.raises(pa.ArrowInvalid, match="open"):
        do_put(client, desc, as_float)
    missing = good.drop_columns(["volume"])
    with pytest.raises(pa.ArrowInvalid, match="volume"):
        do_put(client, desc, missing)
    # An OHLC violation is refused too, and nothing is written.
    broken = good.set_column(2, pa.field("high", pa.int64(), nullable=False),
                             pa.array([0] * 10, type=pa.int64()))
    with pytest.raises(pa.ArrowException):
        do_put(client, desc, broken)
    assert read(client, kline_ticket(sym)).num_rows == 0


def test_flight_auth(auth_server, unique_name):
    sym = unique_name("FAUTH")
    with requests.Session() as s:
        headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
        expect_ok(register_kline(s, auth_server.http_url, sym, headers=headers), 201)
    c = flight.connect(auth_server.flight_uri)
    try:
        desc = flight.FlightDescriptor.for_path("kline", sym, "1m")
        table = synthetic_klines(10, JAN_31_2024_MS)
        with pytest.raises(flight.FlightUnauthenticatedError):
            do_put(c, desc, table)
        wrong = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer nope")])
        with pytest.raises(flight.FlightUnauthenticatedError):
            do_put(c, desc, table, options=wrong)
        good = flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {AUTH_TOKEN}".encode())])
        assert do_put(c, desc, table, options=good)["written"] == 10
        # Reads stay open without protect_reads.
        assert c.do_get(kline_ticket(sym)).read_all().num_rows == 10
    finally:
        c.close()


def test_flight_protect_reads(protected_reads_server, unique_name):
    sym = unique_name("FPR")
    token = [(b"authorization", f"Bearer {AUTH_TOKEN}".encode())]
    with requests.Session() as s:
        headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
        expect_ok(register_kline(s, protected_reads_server.http_url, sym, headers=headers),
                  201)
    c = flight.connect(protected_reads_server.flight_uri)
    try:
        with pytest.raises(flight.FlightUnauthenticatedError):
            c.do_get(kline_ticket(sym)).read_all()
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(c.list_flights())
        opts = flight.FlightCallOptions(headers=token)
        assert c.do_get(kline_ticket(sym), options=opts).read_all().num_rows == 0
        paths = [tuple(fi.descriptor.path) for fi in c.list_flights(options=opts)]
        assert (b"kline", sym.encode(), b"1m") in paths
    finally:
        c.close()
