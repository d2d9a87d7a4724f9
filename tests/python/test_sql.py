"""SQL as users reach it: ADBC (Flight SQL), Polars, raw Flight SQL and HTTP /v1/sql.

Data is written over the HTTP JSON write API and read back through SQL, and every
answer is compared with what was written, exactly: kline_raw and scalar_i64 carry the
stored integers, kline carries stored / scale (one IEEE division, as Python's `/` on
an int below 2**53 does), and JSON numbers round-trip doubles. The tables, their
pushdown and limits are described in docs/sql.md.

ADBC's DB-API prepares every statement (CreatePreparedStatement), so the ADBC tests
exercise prepared statements and DoPut parameter binding; the raw tests below send
CommandStatementQuery and the metadata commands by hand. The ADBC driver checks that
each DoGet stream has exactly the schema (nullability included) announced by
GetFlightInfo, so an aggregate query over ADBC also checks that the two agree.
"""

from __future__ import annotations

import json
import math
import random

import adbc_driver_flightsql.dbapi as adbc
import adbc_driver_manager
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from fastk_testlib import (
    AUTH_TOKEN,
    JAN_31_2024_MS,
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

TS_TYPE = pa.timestamp("ms", tz="UTC")
HOUR_MS = 3_600_000
FEB_1_2024_MS = 1_706_745_600_000
ARROW_STREAM = "application/vnd.apache.arrow.stream"
OHLCV = ["open", "high", "low", "close", "volume"]
DATA_TABLES = {"kline", "kline_raw", "scalar", "scalar_i64", "trade", "trade_raw", "quote",
               "quote_raw"}
TABLES = DATA_TABLES | {"series", "datasets", "features", "factors"}
SQL_TYPE_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


# ---------------------------------------------------------------------------
# Data


@pytest.fixture(scope="module")
def data(server):
    """Two 1m kline series (A crosses from January into February) and, for A, two f64
    scalar series and one i64 series, all written over HTTP."""
    tag = format(random.getrandbits(40), "x")
    a, b = f"SQLA-{tag}", f"SQLB-{tag}"
    a_bars = make_klines(3000, start_ts=JAN_31_2024_MS, seed=7)
    b_bars = make_klines(300, start_ts=JAN_31_2024_MS, seed=8)
    rng = random.Random(23)
    momentum = [{"ts": r["ts"], "value": round(rng.uniform(-3, 3), 6)} for r in a_bars]
    rsi = make_scalars(3000, start_ts=JAN_31_2024_MS, value_type="f64")
    cross = make_scalars(3000, start_ts=JAN_31_2024_MS, value_type="i64")
    base = server.http_url
    with requests.Session() as s:
        for sym, bars, ps, vs in ((a, a_bars, 100, 1000), (b, b_bars, 10_000, 1)):
            expect_ok(register_kline(s, base, sym, price_scale=ps, volume_scale=vs), 201)
            expect_ok(s.post(base + kline_path(sym) + "/records", json={"records": bars},
                             timeout=60))
        for cat, name, vt, rows in (("factor", "momentum_20", "f64", momentum),
                                    ("indicator", "rsi_14", "f64", rsi),
                                    ("signal", "cross", "i64", cross)):
            expect_ok(register_scalar(s, base, a, cat, name, vt), 201)
            url = base + scalar_path(a, "1m", cat, name) + "/records"
            expect_ok(s.post(url, json={"records": rows}, timeout=60))
    return {
        "a": a, "b": b, "a_bars": a_bars, "b_bars": b_bars,
        "scales": {a: (100, 1000), b: (10_000, 1)},
        "momentum": momentum, "rsi": rsi, "cross": cross,
    }


def scaled(bar: dict, col: str, price_scale: int, volume_scale: int) -> float:
    return bar[col] / (volume_scale if col == "volume" else price_scale)


def ts_ms(table: pa.Table, col: str = "ts") -> list[int]:
    """Epoch milliseconds of a timestamp column of any unit (date_bin answers in ns)."""
    column = table.column(col)
    return column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()


def hourly(bars: list[dict]) -> list[dict]:
    """1m bars resampled to 1h buckets aligned on the epoch, as the SQL below does."""
    out: dict[int, dict] = {}
    for r in bars:
        bucket = r["ts"] - r["ts"] % HOUR_MS
        o = out.get(bucket)
        if o is None:
            out[bucket] = {"ts": bucket, "open": r["open"], "high": r["high"],
                           "low": r["low"], "close": r["close"], "volume": r["volume"],
                           "bars": 1}
        else:
            o["high"] = max(o["high"], r["high"])
            o["low"] = min(o["low"], r["low"])
            o["close"] = r["close"]
            o["volume"] += r["volume"]
            o["bars"] += 1
    return [out[k] for k in sorted(out)]


# ---------------------------------------------------------------------------
# ADBC (Flight SQL)


@pytest.fixture(scope="module")
def conn(server):
    # FastK has no transactions: autocommit=True keeps the DB-API layer from trying
    # to turn autocommit off (which warns).
    with adbc.connect(server.flight_uri, autocommit=True) as c:
        yield c


def test_adbc_select_equals_http_write(conn, data):
    a, bars = data["a"], data["a_bars"]
    ps, vs = data["scales"][a]
    with conn.cursor() as cur:
        cur.execute(f"SELECT ts, open, high, low, close, volume, price_scale, volume_scale "
                    f"FROM kline_raw WHERE symbol = '{a}' AND timeframe = '1m' ORDER BY ts")
        raw = cur.fetch_arrow_table()
        assert raw.schema.field("ts").type == TS_TYPE
        for c in OHLCV + ["price_scale", "volume_scale"]:
            assert raw.schema.field(c).type == pa.int64(), raw.schema
        assert ts_ms(raw) == [r["ts"] for r in bars]
        for c in OHLCV:
            assert raw.column(c).to_pylist() == [r[c] for r in bars], c
        assert set(raw.column("price_scale").to_pylist()) == {ps}
        assert set(raw.column("volume_scale").to_pylist()) == {vs}

        cur.execute(f"SELECT symbol, timeframe, ts, open, high, low, close, volume FROM kline "
                    f"WHERE symbol = '{a}' AND timeframe = '1m' ORDER BY ts")
        t = cur.fetch_arrow_table()
        assert t.schema.names == ["symbol", "timeframe", "ts"] + OHLCV
        assert t.schema.field("symbol").type == pa.string()
        assert t.schema.field("ts").type == TS_TYPE
        assert t.num_rows == len(bars)
        assert set(t.column("symbol").to_pylist()) == {a}
        for c in OHLCV:
            assert t.schema.field(c).type == pa.float64()
            assert t.column(c).to_pylist() == [scaled(r, c, ps, vs) for r in bars], c

        # DB-API rows: the latest three bars, newest first.
        cur.execute(f"SELECT ts, close FROM kline WHERE symbol = '{a}' AND timeframe = '1m' "
                    f"ORDER BY ts DESC LIMIT 3")
        rows = cur.fetchall()
        want = bars[-3:][::-1]
        assert [round(r[0].timestamp() * 1000) for r in rows] == [w["ts"] for w in want]
        assert [r[1] for r in rows] == [w["close"] / ps for w in want]


def test_adbc_parameters(conn, data):
    a, b = data["a"], data["b"]
    query = "SELECT count(*) AS n, min(ts) AS first, max(ts) AS last FROM kline " \
            "WHERE symbol = $1 AND timeframe = $2"
    with conn.cursor() as cur:
        # The same statement twice with different values: the second execute binds
        # new parameters to the statement prepared by the first.
        for sym, bars in ((a, data["a_bars"]), (b, data["b_bars"])):
            cur.execute(query, parameters=(sym, "1m"))
            t = cur.fetch_arrow_table()
            assert t.column("n").to_pylist() == [len(bars)], sym
            assert ts_ms(t, "first") == [bars[0]["ts"]]
            assert ts_ms(t, "last") == [bars[-1]["ts"]]

        cur.execute("SELECT ts, value FROM scalar WHERE symbol = $1 AND category = $2 "
                    "AND name = $3 AND value > $4 ORDER BY ts",
                    parameters=(a, "factor", "momentum_20", 1.5))
        t = cur.fetch_arrow_table()
        want = [r for r in data["momentum"] if r["value"] > 1.5]
        assert want and len(want) < len(data["momentum"])
        assert ts_ms(t) == [r["ts"] for r in want]
        assert t.column("value").to_pylist() == [r["value"] for r in want]


def test_adbc_qmark_placeholders(conn, data, http, server):
    """ADBC's DB-API style (`paramstyle == "qmark"`): `?` bound in order, over Flight SQL
    and `/v1/sql`; a `?` in a string literal stays text; mixing styles is refused."""
    import adbc_driver_flightsql.dbapi as dbapi
    assert dbapi.paramstyle == "qmark"
    a, bars = data["a"], data["a_bars"]
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n, max(ts) AS last, '?' AS q FROM kline "
                    "WHERE symbol = ? AND timeframe = ?", parameters=(a, "1m"))
        t = cur.fetch_arrow_table()
        assert t.column("n").to_pylist() == [len(bars)]
        assert ts_ms(t, "last") == [bars[-1]["ts"]]
        assert t.column("q").to_pylist() == ["?"]
    r = http.post(f"{server.http_url}/v1/sql", json={
        "query": "SELECT count(*) AS n FROM kline WHERE symbol = ? AND timeframe = ?",
        "params": [a, "1m"]})
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[len(bars)]]
    r = http.post(f"{server.http_url}/v1/sql", json={
        "query": "SELECT count(*) FROM kline WHERE symbol = ? AND timeframe = $2",
        "params": [a, "1m"]})
    assert r.status_code == 400, r.text
    assert "not both" in r.json()["error"]["message"]


def test_adbc_aggregates_and_resample(conn, data):
    a, bars = data["a"], data["a_bars"]
    ps, vs = data["scales"][a]
    want = hourly(bars)
    assert len(want) == 50
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) AS n FROM kline WHERE symbol = '{a}' AND timeframe = '1m'")
        assert cur.fetchall() == [(len(bars),)]

        # Exact integers from kline_raw.
        cur.execute(
            "SELECT date_bin(INTERVAL '1 hour', ts) AS bucket, "
            "first_value(open ORDER BY ts) AS o, max(high) AS h, min(low) AS l, "
            "last_value(close ORDER BY ts) AS c, sum(volume) AS v, count(*) AS bars "
            f"FROM kline_raw WHERE symbol = '{a}' AND timeframe = '1m' "
            "GROUP BY 1 ORDER BY 1")
        t = cur.fetch_arrow_table()
        assert ts_ms(t, "bucket") == [w["ts"] for w in want]
        for col, key in (("o", "open"), ("h", "high"), ("l", "low"), ("c", "close"),
                         ("v", "volume"), ("bars", "bars")):
            assert t.column(col).to_pylist() == [w[key] for w in want], col

        # The same over the scaled table (the docs' example): selections are exact,
        # the sum of floats is close.
        cur.execute(
            "SELECT date_bin(INTERVAL '1 hour', ts) AS ts, "
            "first_value(open ORDER BY ts) AS open, max(high) AS high, min(low) AS low, "
            "last_value(close ORDER BY ts) AS close, sum(volume) AS volume "
            f"FROM kline WHERE symbol = '{a}' AND timeframe = '1m' "
            "GROUP BY 1 ORDER BY 1")
        t = cur.fetch_arrow_table()
        assert ts_ms(t) == [w["ts"] for w in want]
        for c in ("open", "high", "low", "close"):
            assert t.column(c).to_pylist() == [w[c] / ps for w in want], c
        got = t.column("volume").to_pylist()
        assert len(got) == len(want)
        assert all(math.isclose(g, w["volume"] / vs, rel_tol=1e-12) for g, w in zip(got, want))


def test_adbc_last_bar_per_symbol_and_join(conn, data):
    a, b = data["a"], data["b"]
    with conn.cursor() as cur:
        cur.execute(
            "SELECT symbol, ts, close FROM ("
            "  SELECT symbol, ts, close, "
            "         row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) AS rn "
            f"  FROM kline WHERE timeframe = '1m' AND symbol IN ('{a}', '{b}')) t "
            "WHERE rn = 1 ORDER BY symbol")
        t = cur.fetch_arrow_table()
        assert t.column("symbol").to_pylist() == [a, b]
        assert ts_ms(t) == [data["a_bars"][-1]["ts"], data["b_bars"][-1]["ts"]]
        assert t.column("close").to_pylist() == [
            data["a_bars"][-1]["close"] / 100, data["b_bars"][-1]["close"] / 10_000]

        cur.execute(
            "SELECT k.ts, k.close, m.value AS momentum, r.value AS rsi FROM kline k "
            "JOIN scalar m ON m.symbol = k.symbol AND m.timeframe = k.timeframe AND m.ts = k.ts "
            "JOIN scalar r ON r.symbol = k.symbol AND r.timeframe = k.timeframe AND r.ts = k.ts "
            f"WHERE k.symbol = '{a}' AND k.timeframe = '1m' "
            f"AND m.symbol = '{a}' AND m.category = 'factor' AND m.name = 'momentum_20' "
            f"AND r.symbol = '{a}' AND r.category = 'indicator' AND r.name = 'rsi_14' "
            "AND k.ts BETWEEN '2024-02-01T00:00:00Z' AND '2024-02-01T00:59:00Z' "
            "ORDER BY k.ts")
        t = cur.fetch_arrow_table()
        idx = [i for i, r in enumerate(data["a_bars"])
               if FEB_1_2024_MS <= r["ts"] <= FEB_1_2024_MS + 59 * MINUTE_MS]
        assert len(idx) == 60
        assert ts_ms(t) == [data["a_bars"][i]["ts"] for i in idx]
        assert t.column("close").to_pylist() == [data["a_bars"][i]["close"] / 100 for i in idx]
        assert t.column("momentum").to_pylist() == [data["momentum"][i]["value"] for i in idx]
        assert t.column("rsi").to_pylist() == [data["rsi"][i]["value"] for i in idx]


def test_asof_table_function_is_the_native_cross_section(conn, client, http, server, data):
    """`asof(...)` over ADBC and /v1/sql answers what the native as-of ticket answers:
    per series, the last bar at or before T (B's bars end before T, so B answers its
    last one); `latest(...)` is the last bar of each."""
    a, b = data["a"], data["b"]
    t = JAN_31_2024_MS + 1000 * MINUTE_MS + 30_000  # between two of A's bars
    want = {a: data["a_bars"][1000], b: data["b_bars"][-1]}
    q = ("SELECT symbol, ts, open, high, low, close, volume, price_scale "
         f"FROM asof('kline_raw', '1m', {t}) WHERE symbol IN ('{a}', '{b}') ORDER BY symbol")
    with conn.cursor() as cur:
        cur.execute(q)
        got = cur.fetch_arrow_table()
    assert got.column("symbol").to_pylist() == [a, b]
    assert ts_ms(got) == [want[a]["ts"], want[b]["ts"]]
    for col in OHLCV:
        assert got.column(col).to_pylist() == [want[a][col], want[b][col]], col
    assert got.column("price_scale").to_pylist() == [100, 10_000]

    ticket = {"kind": "kline", "symbols": [a, b], "timeframe": "1m", "as_of": t}
    native = client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
    assert native.column("symbol").cast(pa.string()).to_pylist() == [a, b]
    assert ts_ms(native) == ts_ms(got)
    assert native.column("close").to_pylist() == got.column("close").to_pylist()

    # Scaled prices, an ISO instant, over HTTP; latest() is the last bar.
    body = {"query": "SELECT symbol, close FROM asof('kline', '1m', '2024-01-31T16:40:30Z') "
                     f"WHERE symbol = '{a}'"}
    r = expect_ok(http.post(server.http_url + "/v1/sql", json=body))
    assert r["rows"] == [[a, want[a]["close"] / 100]]
    body = {"query": f"SELECT symbol, ts FROM latest('kline', '1m') WHERE symbol IN ('{a}', '{b}') "
                     "ORDER BY symbol"}
    r = expect_ok(http.post(server.http_url + "/v1/sql", json=body))
    assert r["rows"] == [[a, data["a_bars"][-1]["ts"]], [b, data["b_bars"][-1]["ts"]]]
    # An argument that is not an instant, and a column: 400 with the reason.
    message = check_error(http.post(server.http_url + "/v1/sql",
                                    json={"query": "SELECT * FROM asof('kline', '1m', 'soon')"}),
                          400, "invalid_argument")
    assert "instant must be a timestamp" in message, message
    message = check_error(http.post(server.http_url + "/v1/sql",
                                    json={"query": "SELECT * FROM asof('kline', '1m', ts)"}),
                          400, "invalid_argument")
    assert "ts" in message, message


def test_adbc_tables_scalar_split_and_catalog(conn, data):
    a = data["a"]
    with conn.cursor() as cur:
        # scalar holds only f64 series, scalar_i64 only i64 ones.
        cur.execute(f"SELECT category, name, count(*) AS n FROM scalar WHERE symbol = '{a}' "
                    "GROUP BY category, name ORDER BY category, name")
        assert cur.fetchall() == [("factor", "momentum_20", 3000), ("indicator", "rsi_14", 3000)]
        cur.execute(f"SELECT ts, value FROM scalar_i64 WHERE symbol = '{a}' "
                    "AND category = 'signal' AND name = 'cross' ORDER BY ts")
        t = cur.fetch_arrow_table()
        assert t.schema.field("value").type == pa.int64()
        assert ts_ms(t) == [r["ts"] for r in data["cross"]]
        assert t.column("value").to_pylist() == [r["value"] for r in data["cross"]]

        cur.execute("SELECT symbol, rows, first_ts, last_ts, price_scale, volume_scale "
                    f"FROM series WHERE kind = 'kline' AND symbol IN ('{a}', '{data['b']}') "
                    "ORDER BY symbol")
        t = cur.fetch_arrow_table()
        assert t.column("symbol").to_pylist() == [a, data["b"]]
        assert t.column("rows").to_pylist() == [3000, 300]
        assert ts_ms(t, "first_ts") == [JAN_31_2024_MS, JAN_31_2024_MS]
        assert ts_ms(t, "last_ts") == [data["a_bars"][-1]["ts"], data["b_bars"][-1]["ts"]]
        assert t.column("price_scale").to_pylist() == [100, 10_000]
        assert t.column("volume_scale").to_pylist() == [1000, 1]

    assert conn.adbc_get_info()["vendor_name"] == "FastK"
    assert set(conn.adbc_get_table_types()) == {"TABLE", "VIEW"}
    schema = conn.adbc_get_table_schema("kline", catalog_filter="fastk",
                                        db_schema_filter="public")
    assert schema.names == ["symbol", "timeframe", "ts"] + OHLCV
    assert schema.field("ts").type == TS_TYPE
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    assert [o["catalog_name"] for o in objects] == ["fastk"]
    schemas = objects[0]["catalog_db_schemas"]
    assert [s["db_schema_name"] for s in schemas] == ["public"]
    assert {t["table_name"] for t in schemas[0]["db_schema_tables"]} == TABLES


def test_adbc_errors_and_read_only(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc.Error) as e:
            cur.execute("SELEC ts FROM kline")
        assert e.value.status_code == adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT
        with pytest.raises(adbc.Error) as e:
            cur.execute("SELECT * FROM no_such_table")
        assert "no_such_table" in str(e.value)
    for stmt in ("INSERT INTO kline SELECT * FROM kline WHERE symbol = 'x'",
                 "CREATE TABLE t AS SELECT 1 AS x",
                 "DROP TABLE kline"):
        with conn.cursor() as cur:
            with pytest.raises(adbc.Error) as e:
                cur.execute(stmt)
            assert "read-only" in str(e.value), (stmt, str(e.value))
    # The connection is still usable after the refusals.
    with conn.cursor() as cur:
        cur.execute("SELECT 1 + 1 AS two")
        assert cur.fetchall() == [(2,)]


def test_adbc_protect_reads(protected_reads_server, unique_name):
    srv = protected_reads_server
    sym = unique_name("SQLPR")
    good = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    with requests.Session() as s:
        expect_ok(register_kline(s, srv.http_url, sym, headers=good), 201)
        url = srv.http_url + kline_path(sym) + "/records"
        expect_ok(s.post(url, json={"records": make_klines(10)}, headers=good, timeout=30))
        query = {"query": f"SELECT count(*) AS n FROM kline WHERE symbol = '{sym}'"}
        check_error(s.post(srv.http_url + "/v1/sql", json=query, timeout=30),
                    401, "unauthorized")
        assert expect_ok(s.post(srv.http_url + "/v1/sql", json=query, headers=good,
                                timeout=30))["rows"] == [[10]]

    # Without the token: refused, whether at connect or at the first statement.
    with pytest.raises(adbc.Error) as e:
        with adbc.connect(srv.flight_uri, autocommit=True) as c, c.cursor() as cur:
            cur.execute(query["query"])
            cur.fetchall()
    assert (e.value.status_code == adbc_driver_manager.AdbcStatusCode.UNAUTHENTICATED
            or "Unauthenticated" in str(e.value)), str(e.value)

    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {AUTH_TOKEN}"}
    with adbc.connect(srv.flight_uri, db_kwargs=kwargs, autocommit=True) as c:
        with c.cursor() as cur:
            cur.execute(query["query"])
            assert cur.fetchall() == [(10,)]
            cur.execute("SELECT count(*) FROM kline WHERE symbol = $1", parameters=(sym,))
            assert cur.fetchall() == [(10,)]


# ---------------------------------------------------------------------------
# Polars


def test_polars_read_database(conn, data):
    a, bars = data["a"], data["a_bars"]
    df = pl.read_database(
        f"SELECT ts, close, volume FROM kline WHERE symbol = '{a}' AND timeframe = '1m' "
        "AND ts >= '2024-02-01T00:00:00Z' ORDER BY ts",
        connection=conn)
    want = [r for r in bars if r["ts"] >= FEB_1_2024_MS]
    assert df.columns == ["ts", "close", "volume"]
    assert df.schema["ts"] == pl.Datetime("ms", "UTC")
    assert df.schema["close"] == pl.Float64
    assert df.height == len(want)
    assert df["ts"].dt.epoch("ms").to_list() == [r["ts"] for r in want]
    assert df["close"].to_list() == [r["close"] / 100 for r in want]
    assert df["volume"].to_list() == [r["volume"] / 1000 for r in want]


# ---------------------------------------------------------------------------
# Raw Flight SQL through pyarrow.flight


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _pb_bytes(field: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (strings, bytes, messages)."""
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _pb_bool(field: int, value: bool) -> bytes:
    return _varint(field << 3 | 0) + _varint(int(value))


def sql_command(message: str, body: bytes = b"") -> bytes:
    """A Flight SQL command: google.protobuf.Any{type_url = 1, value = 2}."""
    return _pb_bytes(1, (SQL_TYPE_PREFIX + message).encode()) + _pb_bytes(2, body)


def get_tables(catalog=None, schema_pattern=None, table_pattern=None, table_types=(),
               include_schema=False) -> bytes:
    body = b""
    if catalog is not None:
        body += _pb_bytes(1, catalog.encode())
    if schema_pattern is not None:
        body += _pb_bytes(2, schema_pattern.encode())
    if table_pattern is not None:
        body += _pb_bytes(3, table_pattern.encode())
    for t in table_types:
        body += _pb_bytes(4, t.encode())
    if include_schema:
        body += _pb_bool(5, True)
    return sql_command("CommandGetTables", body)


def fetch(client, command: bytes) -> tuple[flight.FlightInfo, pa.Table]:
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    assert len(info.endpoints) >= 1
    parts = [client.do_get(ep.ticket).read_all() for ep in info.endpoints]
    table = pa.concat_tables(parts)
    # Flight SQL clients (ADBC among them) require every stream to have the schema
    # GetFlightInfo announced, nullability included.
    assert table.schema.remove_metadata().equals(info.schema.remove_metadata()), (
        f"GetFlightInfo announced {info.schema}, DoGet sent {table.schema}")
    return info, table


@pytest.fixture(scope="module")
def client(server):
    c = flight.connect(server.flight_uri)
    yield c
    c.close()


def test_flight_sql_get_tables_by_hand(client):
    _, t = fetch(client, get_tables(include_schema=True))
    assert t.schema.names == ["catalog_name", "db_schema_name", "table_name", "table_type",
                              "table_schema"]
    rows = t.to_pylist()
    assert {r["table_name"] for r in rows} == TABLES and len(rows) == len(TABLES)
    assert {r["catalog_name"] for r in rows} == {"fastk"}
    assert {r["db_schema_name"] for r in rows} == {"public"}
    kinds = {r["table_name"]: r["table_type"] for r in rows}
    assert {n for n, k in kinds.items() if k == "TABLE"} == DATA_TABLES
    assert {n for n, k in kinds.items() if k == "VIEW"} == TABLES - DATA_TABLES

    by_name = {r["table_name"]: r["table_schema"] for r in rows}
    kline = pa.ipc.read_schema(pa.py_buffer(by_name["kline"]))
    assert kline.names == ["symbol", "timeframe", "ts"] + OHLCV
    assert kline.field("symbol").type == pa.string()
    assert kline.field("ts").type == TS_TYPE
    assert all(kline.field(c).type == pa.float64() for c in OHLCV)
    raw = pa.ipc.read_schema(pa.py_buffer(by_name["kline_raw"]))
    assert raw.names == ["symbol", "timeframe", "ts"] + OHLCV + ["price_scale", "volume_scale"]
    assert all(raw.field(c).type == pa.int64() for c in OHLCV)
    scalar = pa.ipc.read_schema(pa.py_buffer(by_name["scalar"]))
    assert scalar.names == ["symbol", "timeframe", "category", "name", "ts", "value"]
    assert scalar.field("value").type == pa.float64()
    scalar_i64 = pa.ipc.read_schema(pa.py_buffer(by_name["scalar_i64"]))
    assert scalar_i64.field("value").type == pa.int64()

    # Filters: a LIKE pattern on the name, a type list, another catalog; no schemas.
    _, t = fetch(client, get_tables(catalog="fastk", schema_pattern="pub%",
                                    table_pattern="kline%"))
    assert "table_schema" not in t.schema.names
    assert sorted(t.column("table_name").to_pylist()) == ["kline", "kline_raw"]
    _, t = fetch(client, get_tables(table_types=["TABLE"]))
    assert set(t.column("table_name").to_pylist()) == DATA_TABLES
    _, t = fetch(client, get_tables(catalog="other"))
    assert t.num_rows == 0

    _, t = fetch(client, sql_command("CommandGetCatalogs"))
    assert t.column("catalog_name").to_pylist() == ["fastk"]
    _, t = fetch(client, sql_command("CommandGetDbSchemas"))
    assert t.to_pylist() == [{"catalog_name": "fastk", "db_schema_name": "public"}]
    _, t = fetch(client, sql_command("CommandGetTableTypes"))
    assert sorted(t.column("table_type").to_pylist()) == ["TABLE", "VIEW"]


def test_flight_sql_statement_then_json_ticket(client, data):
    a, bars = data["a"], data["a_bars"]
    query = ("SELECT date_bin(INTERVAL '1 hour', ts) AS bucket, "
             "first_value(open ORDER BY ts) AS o, last_value(close ORDER BY ts) AS c, "
             f"count(*) AS n FROM kline_raw WHERE symbol = '{a}' AND timeframe = '1m' "
             "GROUP BY 1 ORDER BY 1")
    _, t = fetch(client, sql_command("CommandStatementQuery", _pb_bytes(1, query.encode())))
    want = hourly(bars)
    assert ts_ms(t, "bucket") == [w["ts"] for w in want]
    assert t.column("o").to_pylist() == [w["open"] for w in want]
    assert t.column("c").to_pylist() == [w["close"] for w in want]
    assert t.column("n").to_pylist() == [w["bars"] for w in want]

    # Updates are refused with a message naming the write API.
    update = sql_command("CommandStatementUpdate",
                         _pb_bytes(1, b"DELETE FROM kline WHERE symbol = 'x'"))
    with pytest.raises(pa.ArrowInvalid, match="read-only"):
        client.get_flight_info(flight.FlightDescriptor.for_command(update))

    # The JSON tickets keep working on the same port and the same connection.
    ticket = flight.Ticket(json.dumps({"kind": "kline", "symbol": a, "timeframe": "1m"}))
    table = client.do_get(ticket).read_all()
    assert ts_ms(table) == [r["ts"] for r in bars]
    assert table.column("close").to_pylist() == [r["close"] for r in bars]
    desc = flight.FlightDescriptor.for_command(
        json.dumps({"kind": "kline", "symbol": a, "timeframe": "1m", "latest": 2}))
    info = client.get_flight_info(desc)
    got = client.do_get(info.endpoints[0].ticket).read_all()
    assert ts_ms(got) == [r["ts"] for r in bars[-2:]]


# ---------------------------------------------------------------------------
# HTTP /v1/sql


def sql(http, query: str, params=None, **kw) -> requests.Response:
    body = {"query": query}
    if params is not None:
        body["params"] = params
    return http.post(http.base + "/v1/sql", json=body, timeout=60, **kw)


def physical_plan(http, query: str, params=None) -> str:
    body = expect_ok(sql(http, "EXPLAIN " + query, params))
    plans = {row[0]: row[1] for row in body["rows"]}
    assert "physical_plan" in plans, plans
    return plans["physical_plan"]


def test_http_sql_json_shape_and_arrow_stream(http, data):
    a, bars = data["a"], data["a_bars"]
    query = ("SELECT symbol, ts, close, volume FROM kline WHERE symbol = $1 "
             "AND timeframe = '1m' ORDER BY ts")
    body = expect_ok(sql(http, query, [a]))
    assert set(body) == {"columns", "rows", "stats"}
    assert [c["name"] for c in body["columns"]] == ["symbol", "ts", "close", "volume"]
    types = [c["type"] for c in body["columns"]]
    assert types[0] == "Utf8" and types[1].startswith("Timestamp") and "UTC" in types[1]
    assert types[2:] == ["Float64", "Float64"]
    assert body["rows"] == [[a, r["ts"], r["close"] / 100, r["volume"] / 1000] for r in bars]
    stats = body["stats"]
    assert stats["series_selected"] == 1 and stats["series_total"] >= 2
    assert stats["rows_out"] == len(bars)
    assert 0 <= stats["chunks_pruned"] <= stats["chunks_total"]
    assert stats["index_used"] == "none"

    r = sql(http, query, [a], headers={"Accept": ARROW_STREAM})
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith(ARROW_STREAM)
    t = pa.ipc.open_stream(r.content).read_all()
    assert t.schema.names == [c["name"] for c in body["columns"]]
    assert t.schema.field("ts").type == TS_TYPE
    as_json = [[row[0], row[1], row[2], row[3]] for row in zip(
        t.column("symbol").to_pylist(), ts_ms(t), t.column("close").to_pylist(),
        t.column("volume").to_pylist())]
    assert as_json == body["rows"]


def test_http_sql_pushdown_visible(http, data):
    a, bars = data["a"], data["a_bars"]
    where = f"symbol = '{a}' AND timeframe = '1m'"

    # ts bounds prune January's month: the answer starts on February 1.
    q = f"SELECT min(ts), max(ts), count(*) FROM kline WHERE {where} " \
        "AND ts >= '2024-02-01T00:00:00Z'"
    body = expect_ok(sql(http, q))
    feb = [r for r in bars if r["ts"] >= FEB_1_2024_MS]
    assert body["rows"] == [[feb[0]["ts"], feb[-1]["ts"], len(feb)]]
    assert body["stats"]["chunks_pruned"] >= 1, body["stats"]
    plan = physical_plan(http, q)
    assert "FastkScan: table=kline" in plan, plan
    assert f'symbol in {{"{a}"}}' in plan, plan
    assert f"ts=[{FEB_1_2024_MS}, " in plan, plan

    q = f"SELECT ts FROM kline WHERE {where} " \
        "AND ts BETWEEN '2024-02-01T00:00:00Z' AND '2024-02-01T00:09:00Z' ORDER BY ts"
    body = expect_ok(sql(http, q))
    assert [row[0] for row in body["rows"]] == [FEB_1_2024_MS + i * MINUTE_MS for i in range(10)]
    assert f"ts=[{FEB_1_2024_MS}, {FEB_1_2024_MS + 9 * MINUTE_MS}]" in physical_plan(http, q)

    # ORDER BY ts DESC LIMIT n on one series is the latest-N read.
    q = f"SELECT ts, close FROM kline WHERE {where} ORDER BY ts DESC LIMIT 5"
    body = expect_ok(sql(http, q))
    assert body["rows"] == [[r["ts"], r["close"] / 100] for r in bars[-5:][::-1]]
    plan = physical_plan(http, q)
    assert "order=ts desc (latest)" in plan and "limit=5" in plan, plan
    assert body["stats"]["rows_out"] == 5, body["stats"]

    # A scalar value comparison goes to the predicate engine.
    q = (f"SELECT ts, value FROM scalar WHERE symbol = '{a}' AND category = 'factor' "
         "AND name = 'momentum_20' AND value BETWEEN -0.5 AND 0.25 ORDER BY ts")
    body = expect_ok(sql(http, q))
    want = [r for r in data["momentum"] if -0.5 <= r["value"] <= 0.25]
    assert want and body["rows"] == [[r["ts"], r["value"]] for r in want]
    assert body["stats"]["index_used"] != "none", body["stats"]
    assert "value:" in physical_plan(http, q)

    # EXPLAIN ANALYZE shows what the scan did.
    body = expect_ok(sql(http, "EXPLAIN ANALYZE " + q))
    text = "\n".join(str(v) for row in body["rows"] for v in row)
    assert "FastkScan:" in text and "rows_scanned=" in text, text


def test_http_sql_errors(http, data):
    msg = check_error(sql(http, "SELEC 1"), 400, "invalid_argument")
    assert "SELEC" in msg or "syntax" in msg.lower() or "expected" in msg.lower(), msg
    check_error(sql(http, "SELECT * FROM no_such_table"), 400, "invalid_argument")
    check_error(sql(http, ""), 400, "invalid_argument")
    check_error(sql(http, "SELECT $1", [{"a": 1}]), 400, "invalid_argument")
    for stmt in ("INSERT INTO kline SELECT * FROM kline WHERE symbol = 'x'",
                 "CREATE TABLE t AS SELECT 1 AS x",
                 "DELETE FROM kline"):
        msg = check_error(sql(http, stmt), 400, "invalid_argument")
        assert "read-only" in msg, (stmt, msg)
    # Nothing was written.
    body = expect_ok(sql(http, "SELECT count(*) FROM kline WHERE symbol = $1", [data["a"]]))
    assert body["rows"] == [[3000]]


def test_http_sql_json_row_cap(start_server, unique_name):
    srv = start_server("sqllimits", {"FASTK__HTTP__DEFAULT_LIMIT": "20",
                                     "FASTK__HTTP__MAX_LIMIT": "50"})
    sym = unique_name("SQLCAP")
    bars = make_klines(120)
    with requests.Session() as s:
        s.base = srv.http_url
        expect_ok(register_kline(s, srv.http_url, sym), 201)
        expect_ok(s.post(srv.http_url + kline_path(sym) + "/records",
                         json={"records": bars}, timeout=30))
        q = f"SELECT ts, close FROM kline WHERE symbol = '{sym}' ORDER BY ts"
        msg = check_error(sql(s, q), 413, "payload_too_large")
        assert "Arrow" in msg and "Flight SQL" in msg, msg
        body = expect_ok(sql(s, q + " LIMIT 50"))
        assert [row[0] for row in body["rows"]] == [r["ts"] for r in bars[:50]]
        r = sql(s, q, headers={"Accept": ARROW_STREAM})
        assert r.status_code == 200, r.text[:300]
        t = pa.ipc.open_stream(r.content).read_all()
        assert ts_ms(t) == [r["ts"] for r in bars]
        assert t.column("close").to_pylist() == [r["close"] / 100 for r in bars]
    srv.assert_alive()
