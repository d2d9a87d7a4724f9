"""Many-series writes (one all-or-nothing write of many symbols) and the write-ahead log.

`POST /v1/kline/records` and `POST /v1/scalar/records` carry a `symbol` in every record;
a Flight DoPut with the PATH descriptor `["kline", "*", tf]` or
`["scalar", "*", tf, category, name]` carries a `symbol` column (utf8, large_utf8 from
Polars, or a dictionary). Either way the whole request is one record of the
write-ahead log: every series it names must exist, and any error leaves every series
as it was (checked here by comparing versions, row counts and records before and
after). Rows are read back over HTTP and over Flight DoGet (and Polars), `/inventory`
and `/metrics` report the log, and a server killed with SIGKILL right after
acknowledged many-series writes has every one of them after its restart (the log is
replayed on open, on top of series that were partly folded into chunk files).

Everything runs against this module's own servers, so the log figures are not
disturbed by other modules' writes.

gRPC codes reach pyarrow as in test_flight_pyarrow.py: INVALID_ARGUMENT -> ArrowInvalid
("invalid argument"), NOT_FOUND -> ArrowKeyError ("not found").
"""

from __future__ import annotations

import json
import math
import re
import time

import polars as pl
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
    register_kline,
    register_scalar,
    scalar_path,
)

TS_TYPE = pa.timestamp("ms", tz="UTC")
OHLCV = ["open", "high", "low", "close", "volume"]
KLINE_MANY = flight.FlightDescriptor.for_path("kline", "*", "1m")


# ---------------------------------------------------------------------------
# Servers, clients and helpers


@pytest.fixture(scope="module")
def srv(start_server):
    return start_server("many", {"FASTK__STORAGE__LOW_DISK_BYTES": "0"})


@pytest.fixture(scope="module")
def api(srv):
    with requests.Session() as s:
        s.base = srv.http_url
        yield s


@pytest.fixture(scope="module")
def client(srv):
    c = flight.connect(srv.flight_uri)
    yield c
    c.close()


def bar(symbol: str | None, ts: int, tag: int = 0) -> dict:
    """A valid bar whose prices encode `tag` (so a replacement is visible)."""
    low = 10_000 + tag * 10
    rec = {"ts": ts, "open": low + 3, "high": low + 7 + tag % 5, "low": low,
           "close": low + 4, "volume": 100 + tag}
    return rec if symbol is None else {"symbol": symbol, **rec}


def minute(i: int) -> int:
    return JAN_1_2024_MS + i * MINUTE_MS


def new_klines(s, names: list[str]) -> list[str]:
    for sym in names:
        expect_ok(register_kline(s, s.base, sym), 201)
    return names


def new_scalars(s, specs: list[tuple[str, str]], category: str, name: str) -> None:
    """Registers (symbol, value_type) scalar series of one category and name."""
    for sym, vt in specs:
        expect_ok(register_scalar(s, s.base, sym, category, name, vt), 201)


def post_klines(s, records: list[dict], timeframe: str = "1m") -> requests.Response:
    return s.post(f"{s.base}/v1/kline/records",
                  json={"timeframe": timeframe, "records": records}, timeout=60)


def post_scalars(s, category: str, name: str, records: list[dict],
                 timeframe: str = "1m") -> requests.Response:
    body = {"timeframe": timeframe, "category": category, "name": name, "records": records}
    return s.post(f"{s.base}/v1/scalar/records", json=body, timeout=60)


def meta(s, path: str) -> dict:
    return expect_ok(s.get(s.base + path, timeout=30))


def http_rows(s, path: str) -> list[dict]:
    """Every record of a series over HTTP, following `next_start_ts`."""
    out, start = [], None
    while True:
        params = {"limit": 5000}
        if start is not None:
            params["start_ts"] = start
        body = expect_ok(s.get(f"{s.base}{path}/records", params=params, timeout=60))
        out += body["records"]
        start = body["next_start_ts"]
        if start is None:
            return out


def state(s, paths: list[str]) -> dict[str, tuple[int, int, list[dict]]]:
    """(version, rows, records) of each series: what an error must leave unchanged."""
    out = {}
    for p in paths:
        m = meta(s, p)
        out[p] = (m["version"], m["rows"], http_rows(s, p))
    return out


def sorted_rows(records: list[dict]) -> list[dict]:
    """Records without `symbol`, ascending by ts, the last of each ts winning."""
    by_ts = {}
    for r in records:
        by_ts[r["ts"]] = {k: v for k, v in r.items() if k != "symbol"}
    return [by_ts[t] for t in sorted(by_ts)]


def of(records: list[dict], symbol: str) -> list[dict]:
    return sorted_rows([r for r in records if r["symbol"] == symbol])


def check_many_response(body: dict, written: int, inserted: int, replaced: int,
                        symbols: list[str]) -> dict[str, int]:
    """The documented answer; returns symbol -> version."""
    assert set(body) == {"written", "inserted", "replaced", "series"}, body
    assert (body["written"], body["inserted"], body["replaced"]) == \
        (written, inserted, replaced), body
    assert [x["symbol"] for x in body["series"]] == symbols, body
    for x in body["series"]:
        assert set(x) == {"symbol", "version"}, body
        assert isinstance(x["version"], int) and x["version"] >= 1, body
    return {x["symbol"]: x["version"] for x in body["series"]}


def ticket(**fields) -> flight.Ticket:
    return flight.Ticket(json.dumps(fields).encode())


def kline_ticket(sym: str) -> flight.Ticket:
    return ticket(kind="kline", symbol=sym, timeframe="1m")


def scalar_ticket(sym: str, category: str, name: str) -> flight.Ticket:
    return ticket(kind="scalar", symbol=sym, timeframe="1m", category=category, name=name)


def flight_rows(client, t: flight.Ticket) -> list[dict]:
    """A DoGet's rows as dicts, ts as epoch ms."""
    table = client.do_get(t).read_all()
    assert table.schema.field("ts").type == TS_TYPE, table.schema
    cols = {f.name: (table.column(f.name).cast(pa.int64()).to_pylist()
                     if f.name == "ts" else table.column(f.name).to_pylist())
            for f in table.schema}
    return [dict(zip(cols, vals)) for vals in zip(*cols.values())]


def kline_table(records: list[dict], symbol_type: str = "utf8",
                ts_type: pa.DataType = TS_TYPE) -> pa.Table:
    """A many-series kline table; `symbol` goes in the middle (columns are matched by
    name). symbol_type: "utf8", "large_utf8" or "dictionary" (int32 indices)."""
    symbols = [r["symbol"] for r in records]
    if symbol_type == "dictionary":
        sym = pa.array(symbols, type=pa.utf8()).dictionary_encode()
        assert sym.type == pa.dictionary(pa.int32(), pa.utf8())
    else:
        sym = pa.array(symbols, type=pa.large_utf8() if symbol_type == "large_utf8"
                       else pa.utf8())
    ts = pa.array([r["ts"] for r in records], type=pa.int64())
    if ts_type != pa.int64():
        ts = ts.cast(ts_type)
    cols = {c: pa.array([r[c] for r in records], type=pa.int64()) for c in OHLCV}
    return pa.table({"ts": ts, "open": cols["open"], "symbol": sym, "high": cols["high"],
                     "low": cols["low"], "close": cols["close"], "volume": cols["volume"]})


def scalar_table(records: list[dict], value_type: pa.DataType) -> pa.Table:
    return pa.table({
        "symbol": pa.array([r["symbol"] for r in records], type=pa.utf8()),
        "ts": pa.array([r["ts"] for r in records], type=pa.int64()).cast(TS_TYPE),
        "value": pa.array([r["value"] for r in records], type=value_type),
    })


def do_put(client, descriptor, table: pa.Table, chunk: int = 65_536,
           metadata: bytes | None = None) -> dict:
    """One DoPut stream of `table` in batches of `chunk` rows; returns the PutResult JSON."""
    writer, reader = client.do_put(descriptor, table.schema)
    try:
        batches = table.to_batches(max_chunksize=chunk)
        for k, b in enumerate(batches):
            if k == 0 and metadata is not None:
                writer.write_with_metadata(b, pa.py_buffer(metadata))
            else:
                writer.write_batch(b)
        writer.done_writing()
        buf = reader.read()
    finally:
        writer.close()
    assert buf is not None, "DoPut returned no PutResult"
    return json.loads(buf.to_pybytes())


def scrape(base: str) -> dict[str, float]:
    """Unlabelled samples of /metrics: name -> value."""
    r = requests.get(f"{base}/metrics", timeout=30)
    assert r.status_code == 200, r.text[:500]
    out = {}
    for line in r.text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\s+(\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


# ---------------------------------------------------------------------------
# HTTP


def test_http_kline_many_write_read_back_order_and_replacements(api, unique_name):
    a, b, c = new_klines(api, [unique_name("MWA"), unique_name("MWB"), unique_name("MWC")])
    # First appearance: c, a, b; ts out of order within a symbol.
    first = [bar(c, minute(2)), bar(a, minute(1)), bar(c, minute(0)), bar(b, minute(5)),
             bar(a, minute(0)), bar(a, minute(3))]
    versions = check_many_response(expect_ok(post_klines(api, first)), 6, 6, 0, [c, a, b])
    for sym in (a, b, c):
        m = meta(api, kline_path(sym))
        assert m["version"] == versions[sym], (sym, m)
        assert m["rows"] == len(of(first, sym))
        assert http_rows(api, kline_path(sym)) == of(first, sym)

    # Two rows of `a` replaced (new values), one new row of `c`; `b` not named.
    second = [bar(a, minute(1), tag=7), bar(c, minute(4), tag=1), bar(a, minute(3), tag=8)]
    again = check_many_response(expect_ok(post_klines(api, second)), 3, 1, 2, [a, c])
    assert again[a] > versions[a] and again[c] > versions[c]
    assert meta(api, kline_path(b))["version"] == versions[b]
    for sym in (a, b, c):
        want = of(first + second, sym)
        assert http_rows(api, kline_path(sym)) == want, sym
        assert meta(api, kline_path(sym))["rows"] == len(want)
    assert http_rows(api, kline_path(a))[1]["volume"] == 107  # tag 7 won


def test_http_scalar_many_write_f64_and_i64_series(api, unique_name):
    p, q = unique_name("MSF"), unique_name("MSI")
    new_scalars(api, [(p, "f64"), (q, "i64")], "indicator", "sig")
    records = [
        {"symbol": q, "ts": minute(0), "value": 3},
        {"symbol": p, "ts": minute(0), "value": 1.5},
        {"symbol": p, "ts": minute(1), "value": None},  # null stores NaN in an f64 series
        {"symbol": q, "ts": minute(1), "value": -7},
        {"symbol": p, "ts": minute(2), "value": 2},  # an integer is a number for f64
    ]
    body = expect_ok(post_scalars(api, "indicator", "sig", records))
    versions = check_many_response(body, 5, 5, 0, [q, p])
    pp, qp = scalar_path(p, "1m", "indicator", "sig"), scalar_path(q, "1m", "indicator", "sig")
    assert http_rows(api, pp) == [{"ts": minute(0), "value": 1.5},
                                  {"ts": minute(1), "value": None},
                                  {"ts": minute(2), "value": 2.0}]
    assert http_rows(api, qp) == [{"ts": minute(0), "value": 3}, {"ts": minute(1), "value": -7}]
    assert meta(api, pp)["version"] == versions[p] and meta(api, qp)["version"] == versions[q]

    replace = [{"symbol": p, "ts": minute(1), "value": 0.25},
               {"symbol": p, "ts": minute(3), "value": 9.5}]
    again = check_many_response(expect_ok(post_scalars(api, "indicator", "sig", replace)),
                                2, 1, 1, [p])
    assert again[p] > versions[p]
    assert [r["value"] for r in http_rows(api, pp)] == [1.5, 0.25, 2.0, 9.5]
    assert meta(api, qp)["version"] == versions[q]


def test_http_many_write_errors_write_nothing(api, unique_name):
    a, b = new_klines(api, [unique_name("MEA"), unique_name("MEB")])
    x, y = unique_name("MEX"), unique_name("MEY")
    new_scalars(api, [(x, "i64"), (y, "f64")], "feature", "e")
    expect_ok(post_klines(api, [bar(a, minute(i)) for i in range(5)]
                          + [bar(b, minute(i)) for i in range(3)]))
    expect_ok(post_scalars(api, "feature", "e", [{"symbol": x, "ts": minute(0), "value": 1},
                                                 {"symbol": y, "ts": minute(0), "value": 0.5}]))
    paths = [kline_path(a), kline_path(b), scalar_path(x, "1m", "feature", "e"),
             scalar_path(y, "1m", "feature", "e")]
    before = state(api, paths)
    missing = unique_name("NOPE")

    # A series that does not exist, after two that do.
    r = post_klines(api, [bar(a, minute(10)), bar(b, minute(10)), bar(missing, minute(10))])
    assert missing in check_error(r, 404, "not_found")
    # Every series exists at 1m, none at 5m.
    r = post_klines(api, [bar(a, minute(10))], timeframe="5m")
    assert a in check_error(r, 404, "not_found")
    # A (symbol, ts) twice.
    r = post_klines(api, [bar(a, minute(10)), bar(b, minute(10)), bar(a, minute(10), tag=1)])
    check_error(r, 422, "unprocessable")
    # An OHLC violation in the second series (high below low); the first is valid.
    broken = dict(bar(b, minute(11)), high=1, low=5)
    r = post_klines(api, [bar(a, minute(11)), broken])
    check_error(r, 422, "unprocessable")
    # A fraction for the i64 series, in record 2.
    r = post_scalars(api, "feature", "e", [{"symbol": y, "ts": minute(10), "value": 1.0},
                                           {"symbol": x, "ts": minute(10), "value": 2},
                                           {"symbol": x, "ts": minute(11), "value": 7.5}])
    assert "record 2" in check_error(r, 400, "invalid_argument")
    # Scalars: a missing series, and a (symbol, ts) twice.
    r = post_scalars(api, "feature", "e", [{"symbol": x, "ts": minute(12), "value": 2},
                                           {"symbol": missing, "ts": minute(12), "value": 1}])
    assert missing in check_error(r, 404, "not_found")
    r = post_scalars(api, "feature", "e", [{"symbol": y, "ts": minute(12), "value": 2.5},
                                           {"symbol": x, "ts": minute(12), "value": 2},
                                           {"symbol": y, "ts": minute(12), "value": 3.5}])
    check_error(r, 422, "unprocessable")

    assert state(api, paths) == before


# ---------------------------------------------------------------------------
# Flight DoPut


def test_do_put_many_klines_utf8_symbol_column(api, client, unique_name):
    a, b, c = new_klines(api, [unique_name("FMA"), unique_name("FMB"), unique_name("FMC")])
    records = []
    for i in range(50):  # round robin, first appearance b, a, c
        records += [bar(b, minute(i), i), bar(a, minute(i), i + 1), bar(c, minute(i), i + 2)]
    table = kline_table(records)
    assert table.schema.field("symbol").type == pa.utf8()
    assert table.schema.names.index("symbol") not in (0, len(table.schema) - 1)
    versions = check_many_response(do_put(client, KLINE_MANY, table), 150, 150, 0, [b, a, c])
    for sym in (a, b, c):
        assert flight_rows(client, kline_ticket(sym)) == of(records, sym), sym
        m = meta(api, kline_path(sym))
        assert m["version"] == versions[sym] and m["rows"] == 50
    # The HTTP read agrees with DoGet.
    assert http_rows(api, kline_path(a)) == of(records, a)


def test_do_put_many_klines_dictionary_symbols_int64_ts_batches(api, client, unique_name):
    a, b = new_klines(api, [unique_name("FDA"), unique_name("FDB")])
    seed = [bar(s, minute(i)) for i in range(20) for s in (a, b)]
    expect_ok(post_klines(api, seed))
    # 40 bars per symbol: the first 20 replace the seeded ones with new values.
    records = [bar(s, minute(i), tag=i + 3) for s in (a, b) for i in range(40)]
    table = kline_table(records, symbol_type="dictionary", ts_type=pa.int64())
    body = do_put(client, KLINE_MANY, table, chunk=16)  # 5 batches, one dictionary
    versions = check_many_response(body, 80, 40, 40, [a, b])
    for sym in (a, b):
        assert flight_rows(client, kline_ticket(sym)) == of(records, sym), sym
        assert meta(api, kline_path(sym))["version"] == versions[sym]


def test_do_put_many_scalars_f64_and_i64(api, client, unique_name):
    f1, f2, i1, i2 = (unique_name(p) for p in ("FSF1", "FSF2", "FSI1", "FSI2"))
    new_scalars(api, [(f1, "f64"), (f2, "f64")], "feature", "zf")
    new_scalars(api, [(i1, "i64"), (i2, "i64")], "feature", "zi")
    floats = [{"symbol": s, "ts": minute(i), "value": v}
              for i, (s, v) in enumerate([(f2, 0.5), (f1, -2.25), (f2, float("nan")),
                                          (f1, 1e300), (f2, 3.0)])]
    ints = [{"symbol": s, "ts": minute(i // 2), "value": v}
            for i, (s, v) in enumerate([(i1, 1), (i2, -1), (i1, 2**62), (i2, 0)])]
    desc_f = flight.FlightDescriptor.for_path("scalar", "*", "1m", "feature", "zf")
    desc_i = flight.FlightDescriptor.for_path("scalar", "*", "1m", "feature", "zi")
    vf = check_many_response(do_put(client, desc_f, scalar_table(floats, pa.float64())),
                             5, 5, 0, [f2, f1])
    vi = check_many_response(do_put(client, desc_i, scalar_table(ints, pa.int64())),
                             4, 4, 0, [i1, i2])

    def nan_safe(rows):
        return [{k: ("NaN" if isinstance(v, float) and math.isnan(v) else v)
                 for k, v in r.items()} for r in rows]

    for sym, rows, typ, name, versions in ((f1, floats, pa.float64(), "zf", vf),
                                            (f2, floats, pa.float64(), "zf", vf),
                                            (i1, ints, pa.int64(), "zi", vi),
                                            (i2, ints, pa.int64(), "zi", vi)):
        t = scalar_ticket(sym, "feature", name)
        assert client.do_get(t).read_all().schema.field("value").type == typ
        assert nan_safe(flight_rows(client, t)) == nan_safe(of(rows, sym)), sym
        assert meta(api, scalar_path(sym, "1m", "feature", name))["version"] == versions[sym]


def test_polars_frame_do_put_and_read_back(api, client, unique_name):
    syms = new_klines(api, [unique_name("PLA"), unique_name("PLB"), unique_name("PLC")])
    n = 30
    df = pl.DataFrame({
        "symbol": [s for i in range(n) for s in syms],
        "ts": [minute(i) for i in range(n) for _ in syms],
        "open": [1000 + i for i in range(n) for _ in syms],
        "high": [1010 + i for i in range(n) for _ in syms],
        "low": [990 + i for i in range(n) for _ in syms],
        "close": [1005 + i for i in range(n) for _ in syms],
        "volume": [k * n + i for i in range(n) for k, _ in enumerate(syms)],
    }).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    table = df.to_arrow()
    assert table.schema.field("symbol").type == pa.large_utf8()
    body = do_put(client, KLINE_MANY, table)
    check_many_response(body, 3 * n, 3 * n, 0, syms)
    for sym in syms:
        back = pl.from_arrow(client.do_get(kline_ticket(sym)).read_all())
        assert back.schema["ts"] == pl.Datetime("ms", "UTC")
        want = df.filter(pl.col("symbol") == sym).drop("symbol").sort("ts")
        assert back.equals(want), (sym, back, want)


def test_do_put_many_errors_write_nothing(api, client, unique_name):
    a, b = new_klines(api, [unique_name("FEA"), unique_name("FEB")])
    x, y = unique_name("FEX"), unique_name("FEY")
    new_scalars(api, [(x, "i64"), (y, "f64")], "feature", "fe")
    good = [bar(a, minute(i)) for i in range(10)] + [bar(b, minute(i)) for i in range(10)]
    do_put(client, KLINE_MANY, kline_table(good))
    desc_s = flight.FlightDescriptor.for_path("scalar", "*", "1m", "feature", "fe")
    do_put(client, desc_s, scalar_table([{"symbol": x, "ts": minute(0), "value": 5}],
                                        pa.int64()))
    do_put(client, desc_s, scalar_table([{"symbol": y, "ts": minute(0), "value": 0.5}],
                                        pa.float64()))
    paths = [kline_path(a), kline_path(b), scalar_path(x, "1m", "feature", "fe"),
             scalar_path(y, "1m", "feature", "fe")]
    before = state(api, paths)
    tickets = [kline_ticket(a), kline_ticket(b), scalar_ticket(x, "feature", "fe"),
               scalar_ticket(y, "feature", "fe")]
    rows_before = [flight_rows(client, t) for t in tickets]
    more = [bar(a, minute(20)), bar(b, minute(20))]

    # No symbol column.
    with pytest.raises(pa.ArrowInvalid, match="invalid argument") as e:
        do_put(client, KLINE_MANY, kline_table(more).drop_columns(["symbol"]))
    assert "symbol" in str(e.value)
    # A symbol whose series does not exist.
    missing = unique_name("NOPE")
    with pytest.raises(pa.ArrowKeyError, match="not found") as e:
        do_put(client, KLINE_MANY, kline_table(more + [bar(missing, minute(20))]))
    assert missing in str(e.value)
    # expected_version applies to one series only.
    version = json.dumps({"expected_version": before[kline_path(a)][0]}).encode()
    with pytest.raises(pa.ArrowInvalid, match="invalid argument") as e:
        do_put(client, KLINE_MANY, kline_table(more), metadata=version)
    assert "expected_version" in str(e.value)
    # The value column's type must be every named series' value type.
    mixed = [{"symbol": y, "ts": minute(5), "value": 1.5},
             {"symbol": x, "ts": minute(5), "value": 2.0}]
    with pytest.raises(pa.ArrowInvalid, match="invalid argument") as e:
        do_put(client, desc_s, scalar_table(mixed, pa.float64()))
    assert x in str(e.value)
    mixed = [{"symbol": x, "ts": minute(5), "value": 1}, {"symbol": y, "ts": minute(5), "value": 2}]
    with pytest.raises(pa.ArrowInvalid, match="invalid argument") as e:
        do_put(client, desc_s, scalar_table(mixed, pa.int64()))
    assert y in str(e.value)
    # A (symbol, ts) twice (unprocessable, which Flight reports as INVALID_ARGUMENT).
    with pytest.raises(pa.ArrowInvalid, match="invalid argument"):
        do_put(client, KLINE_MANY, kline_table(more + [bar(a, minute(20), tag=2)]))

    assert state(api, paths) == before
    assert [flight_rows(client, t) for t in tickets] == rows_before


# ---------------------------------------------------------------------------
# /inventory and /metrics


def test_inventory_and_metrics_report_the_log(srv, api, unique_name):
    a, b = new_klines(api, [unique_name("INA"), unique_name("INB")])
    body = expect_ok(post_klines(api, [bar(s, minute(i)) for i in range(5) for s in (a, b)]))
    assert body["written"] == 10

    for sym in (a, b):
        inv = expect_ok(api.get(f"{api.base}/inventory", params={"symbol": sym}, timeout=30))
        [series] = inv["series"]
        # Small writes stay in the log (fold_rows and fold_age are far off).
        assert series["rows"] == 5 and series["unfolded_rows"] == 5, series
        assert series["files"] == 0, series
        assert inv["total_files"] == 0 and inv["total_rows"] == 5, inv

    inv = expect_ok(api.get(f"{api.base}/inventory", params={"partitions": "false"}, timeout=30))
    log = inv["log"]
    assert set(log) == {"bytes", "segments", "unfolded_series", "unfolded_rows",
                        "unfolded_bytes", "fold_lag_ms"}, log
    assert all(isinstance(v, int) and v >= 0 for v in log.values()), log
    assert log["bytes"] > 0 and log["segments"] >= 1, log
    assert log["unfolded_series"] >= 2 and log["unfolded_rows"] >= 10, log
    assert log["unfolded_bytes"] > 0, log
    assert log["unfolded_rows"] == sum(s["unfolded_rows"] for s in inv["series"])
    assert log["unfolded_series"] == sum(1 for s in inv["series"] if s["unfolded_rows"])
    assert inv["total_files"] == sum(s["files"] for s in inv["series"])

    m = scrape(srv.http_url)
    names = ["fastk_wal_bytes", "fastk_wal_segments", "fastk_wal_unfolded_rows",
             "fastk_wal_unfolded_bytes", "fastk_wal_fold_lag_ms", "fastk_wal_syncs_total",
             "fastk_wal_records_total", "fastk_store_files"]
    assert not [n for n in names if n not in m], sorted(k for k in m if "wal" in k)
    # Nothing else writes to this module's server meanwhile.
    assert m["fastk_wal_bytes"] == log["bytes"]
    assert m["fastk_wal_segments"] == log["segments"]
    assert m["fastk_wal_unfolded_rows"] == log["unfolded_rows"]
    assert m["fastk_wal_unfolded_bytes"] == log["unfolded_bytes"]
    assert m["fastk_store_files"] == inv["total_files"]
    assert 1 <= m["fastk_wal_syncs_total"] <= m["fastk_wal_records_total"], m


# ---------------------------------------------------------------------------
# SIGKILL after acknowledged many-series writes


def test_acknowledged_many_writes_survive_sigkill(start_server, unique_name):
    # A low fold threshold: the busiest series is partly folded when the server dies
    # (80 rows: into the store's catalog, storage.resident_rows_max), the others only
    # in the log.
    server = start_server("many-crash", {"FASTK__STORAGE__FOLD_ROWS": "64",
                                         "FASTK__STORAGE__LOW_DISK_BYTES": "0"})
    s = requests.Session()
    s.base = server.http_url
    ks = new_klines(s, [unique_name(f"CK{i}") for i in range(4)])
    fs = [unique_name("CSF"), unique_name("CSG")]
    new_scalars(s, [(fs[0], "f64"), (fs[1], "f64")], "indicator", "crash")
    kpaths = {k: kline_path(k) for k in ks}
    spaths = {f: scalar_path(f, "1m", "indicator", "crash") for f in fs}
    model: dict[str, dict[int, dict]] = {p: {} for p in [*kpaths.values(), *spaths.values()]}
    acked: dict[str, int] = {}

    def note(records, paths, body):
        for r in records:
            model[paths[r["symbol"]]][r["ts"]] = {k: v for k, v in r.items() if k != "symbol"}
        for x in body["series"]:
            acked[paths[x["symbol"]]] = x["version"]

    c = flight.connect(server.flight_uri)
    try:
        for rnd in range(8):
            recs = [bar(ks[0], minute(rnd * 10 + i), rnd) for i in range(10)]  # busy
            recs += [bar(ks[1], minute(1 + rnd), rnd), bar(ks[1], minute(0), rnd)]  # + replace
            if rnd % 3 == 0:
                recs.append(bar(ks[2], minute(rnd), rnd))
            if rnd == 0:
                recs.append(bar(ks[3], minute(0)))
            if rnd % 2:
                note(recs, kpaths, do_put(c, KLINE_MANY, kline_table(recs)))
            else:
                note(recs, kpaths, expect_ok(post_klines(s, recs)))
            srec = [{"symbol": fs[rnd % 2], "ts": minute(rnd), "value": rnd + 0.5},
                    {"symbol": fs[0], "ts": minute(100 + rnd), "value": -rnd * 1.0}]
            note(srec, spaths, expect_ok(post_scalars(s, "indicator", "crash", srec)))
        # Wait until the busy series has been folded at least once (80 rows > 64).
        deadline = time.monotonic() + 30
        while True:
            inv = expect_ok(s.get(f"{s.base}/inventory", params={"symbol": ks[0]}, timeout=30))
            one = inv["series"][0]
            if one["files"] > 0 or one["unfolded_rows"] < one["rows"]:
                break
            assert time.monotonic() < deadline, f"{ks[0]} was never folded: {inv}"
            time.sleep(0.05)
        # The last acknowledged writes, then SIGKILL at once.
        last = [bar(k, minute(500), 99) for k in ks]
        note(last, kpaths, do_put(c, KLINE_MANY, kline_table(last)))
        slast = [{"symbol": f, "ts": minute(500), "value": 99.5} for f in fs]
        note(slast, spaths, expect_ok(post_scalars(s, "indicator", "crash", slast)))
    finally:
        c.close()
    server.kill()

    server.start()
    s.base = server.http_url
    assert "replayed the write-ahead log" in server.log_text(), server.log_tail()
    for path, rows in model.items():
        want = [rows[t] for t in sorted(rows)]
        assert http_rows(s, path) == want, path
        m = meta(s, path)
        assert (m["version"], m["rows"]) == (acked[path], len(want)), (path, m)
    c = flight.connect(server.flight_uri)
    try:
        assert flight_rows(c, kline_ticket(ks[0])) == [model[kpaths[ks[0]]][t]
                                                      for t in sorted(model[kpaths[ks[0]]])]
    finally:
        c.close()

    # A clean stop folds nothing into files (storage.fold_on_stop is false by
    # default) but writes the logged rows of the small series with no directory into
    # the catalog in one bulk write (storage.fold_small_on_stop, on by default): the
    # start replays only the others' rows, and every acknowledged row is back.
    unfolded = expect_ok(requests.get(f"{server.http_url}/inventory",
                                      params={"partitions": "false"}, timeout=30))["log"]
    assert unfolded["unfolded_rows"] > 0, unfolded
    stop_cleanly(server)
    server.start()
    inv = expect_ok(requests.get(f"{server.http_url}/inventory",
                                 params={"partitions": "false"}, timeout=30))
    assert inv["log"]["unfolded_rows"] < unfolded["unfolded_rows"], (unfolded, inv["log"])
    s.base = server.http_url
    for path, rows in model.items():
        assert http_rows(s, path) == [rows[t] for t in sorted(rows)], path
        assert meta(s, path)["version"] == acked[path]
    stop_cleanly(server)
    s.close()
