"""Symbol-sharded nodes on one machine (docs/scale-out.md, "Symbol-sharded nodes"):
two `fastk` servers share a shard map (node a owns symbols from "" to "M", node b
from "M" on), and a third, single-node server holds the same data as the oracle.

- The `shard-map` action gives the map; every series is written to its owner by it.
- GetFlightInfo of a many-series command on either node returns endpoints for both
  parts, the other node's located on it; pulling every endpoint (in parallel, each at
  its location or at the node asked) gives exactly the oracle's DoGet, in symbol
  order, and `total_records` equals the oracle's count. This holds for `"*"`, a list
  of symbols spread over both nodes, a cross section (`latest: 1`) and an as-of read.
- A single-series command asked of the node that does not own it gets one endpoint
  located on the owner.
- A list naming a symbol nobody holds is NotFound, as on one node; a forwarded call
  does not fan out again; a bearer token is forwarded with the call.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from fastk_testlib import expect_ok, free_port, kline_path, make_klines, register_kline

SYMBOLS = ["ADA", "AVAX", "BNB", "BTC", "DOGE", "DOT", "ETH", "LINK", "LTC", "MATIC",
           "NEAR", "OP", "SOL", "SUI", "TON", "TRX", "UNI", "XLM", "XRP", "ZEC"]
TOKEN = "scale-out-token"
TICK_SYMBOLS = ["BTC", "ETH", "SOL", "XRP", "ADA"]
TICK_DAY_NS = 1_710_028_800_000_000_000  # 2024-03-10T00:00:00Z


def ticket_table(client: flight.FlightClient, cmd: dict) -> pa.Table:
    return client.do_get(flight.Ticket(json.dumps(cmd).encode()), options=OPTS).read_all()


OPTS = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {TOKEN}".encode())])


def rows(t: pa.Table) -> list[tuple]:
    sym = t.column("symbol").cast(pa.string()).to_pylist()
    cols = [t.column(c).to_pylist() for c in t.column_names if c != "symbol"]
    return list(zip(sym, *cols))


@pytest.fixture(scope="module")
def cluster(start_server):
    pa_, pb = free_port(), free_port()
    shard_map = {"nodes": {"a": f"grpc://127.0.0.1:{pa_}", "b": f"grpc://127.0.0.1:{pb}"},
                 "ranges": [{"from": "", "node": "a"}, {"from": "M", "node": "b"}]}
    common = {"FASTK__AUTH__TOKEN": TOKEN, "FASTK__AUTH__PROTECT_READS": "true",
              "FASTK__CLUSTER__SHARD_MAP": json.dumps(shard_map)}
    a = start_server("shard-a", {**common, "FASTK__CLUSTER__NODE": "a", "FASTK__FLIGHT__ADDR": f"127.0.0.1:{pa_}"})
    b = start_server("shard-b", {**common, "FASTK__CLUSTER__NODE": "b", "FASTK__FLIGHT__ADDR": f"127.0.0.1:{pb}"})
    oracle = start_server("shard-oracle", {"FASTK__AUTH__TOKEN": TOKEN})
    ca = flight.connect(a.flight_uri)
    got = json.loads(next(iter(ca.do_action(flight.Action("shard-map", b""), options=OPTS))).body.to_pybytes())
    assert got == {"node": "a", **shard_map}
    nodes = {"a": a, "b": b}

    def owner(sym: str) -> str:
        # The map's rule, as a client applies it: the greatest `from` at or below.
        return [r["node"] for r in got["ranges"] if r["from"] <= sym][-1]

    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {TOKEN}"
    for i, sym in enumerate(SYMBOLS):
        bars = make_klines(300 + 37 * i, seed=i)
        for srv in (nodes[owner(sym)], oracle):
            expect_ok(register_kline(s, srv.http_url, sym), 201)
            expect_ok(s.post(srv.http_url + kline_path(sym) + "/records", json={"records": bars}, timeout=30), 200)
    # Trades of some symbols on both sides of the map, bursts sharing nanoseconds.
    for i, sym in enumerate(TICK_SYMBOLS):
        trades = [{"ts": TICK_DAY_NS + (k // 3) * 7_919 * (i + 1), "price": 10_000 + (k * 31 + i) % 200,
                   "size": 1 + k % 9, "side": (k % 3) - 1} for k in range(400 + 50 * i)]
        for srv in (nodes[owner(sym)], oracle):
            expect_ok(s.post(srv.http_url + "/v1/trade/series",
                             json={"symbol": sym, "price_scale": 100, "size_scale": 1}, timeout=30), 201)
            expect_ok(s.post(srv.http_url + f"/v1/trade/{sym}/records", json={"records": trades}, timeout=30))
    held = {n: {x["symbol"] for x in s.get(srv.http_url + "/inventory?partitions=false").json()["series"]}
            for n, srv in nodes.items()}
    assert held["a"] == {x for x in SYMBOLS if x < "M"} and held["b"] == {x for x in SYMBOLS if x >= "M"}
    yield {"a": a, "b": b, "oracle": oracle, "map": shard_map}
    ca.close()


def pull(info: flight.FlightInfo, asked: str) -> pa.Table:
    """Every endpoint, in parallel: at its location, else at the node asked."""
    def one(e: flight.FlightEndpoint) -> pa.Table:
        c = flight.connect(e.locations[0] if e.locations else asked)
        try:
            return c.do_get(e.ticket, options=OPTS).read_all()
        finally:
            c.close()

    with ThreadPoolExecutor(4) as ex:
        parts = list(ex.map(one, info.endpoints))
    return pa.concat_tables([p.cast(parts[0].schema) for p in parts])


@pytest.mark.parametrize("cmd", [
    {"kind": "kline", "symbols": "*", "timeframe": "1m"},
    {"kind": "kline", "symbols": ["ZEC", "BTC", "NEAR", "ADA", "SOL"], "timeframe": "1m", "columns": ["close"]},
    {"kind": "kline", "symbols": "*", "timeframe": "1m", "latest": 1},
    {"kind": "kline", "symbols": "*", "timeframe": "1m", "as_of": 1704067200000 + 400 * 60_000},
])
@pytest.mark.parametrize("asked", ["a", "b"])
def test_many_series_endpoints_on_the_owners_equal_one_node(cluster, cmd, asked):
    node = cluster[asked]
    c = flight.connect(node.flight_uri)
    info = c.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(cmd).encode()), options=OPTS)
    other = cluster["b" if asked == "a" else "a"].flight_uri
    located = {e.locations[0].uri.decode() for e in info.endpoints if e.locations}
    assert located == {other}, "the other node's endpoints carry its location, ours none"
    assert any(not e.locations for e in info.endpoints)
    got = pull(info, node.flight_uri)
    want = ticket_table(flight.connect(cluster["oracle"].flight_uri), cmd)
    assert want.num_rows > 0
    assert rows(got) == rows(want), "the union of the endpoints is the single-node answer, in order"
    assert info.total_records == want.num_rows
    c.close()


def test_one_series_is_located_on_its_owner_and_errors_are_those_of_one_node(cluster):
    a = flight.connect(cluster["a"].flight_uri)
    cmd = {"kind": "kline", "symbol": "XRP", "timeframe": "1m"}
    info = a.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(cmd).encode()), options=OPTS)
    assert [e.locations[0].uri.decode() for e in info.endpoints] == [cluster["b"].flight_uri]
    got = pull(info, cluster["a"].flight_uri)
    want = ticket_table(flight.connect(cluster["oracle"].flight_uri), cmd)
    assert got.equals(want)
    # A PATH descriptor too.
    info = a.get_flight_info(flight.FlightDescriptor.for_path("kline", "XRP", "1m"), options=OPTS)
    assert info.endpoints[0].locations[0].uri.decode() == cluster["b"].flight_uri
    assert info.total_records == want.num_rows

    # A symbol nobody holds: NotFound naming it, whichever node holds its range.
    for missing in ("AAAA", "ZZZZ"):
        bad = {"kind": "kline", "symbols": ["BTC", missing, "XRP"], "timeframe": "1m"}
        with pytest.raises(pa.ArrowKeyError, match="not found") as e:
            a.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(bad).encode()), options=OPTS)
        assert missing in str(e.value)
    # Without the token the forwarded part is refused as the local one is.
    with pytest.raises(flight.FlightUnauthenticatedError):
        a.get_flight_info(flight.FlightDescriptor.for_command(
            json.dumps({"kind": "kline", "symbols": "*", "timeframe": "1m"}).encode()))
    # A call marked as forwarded answers for the node's own series only.
    fwd = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {TOKEN}".encode()),
                                            (b"fastk-forwarded", b"b")])
    info = a.get_flight_info(flight.FlightDescriptor.for_command(
        json.dumps({"kind": "kline", "symbols": "*", "timeframe": "1m"}).encode()), options=fwd)
    assert all(not e.locations for e in info.endpoints)
    t = pull(info, cluster["a"].flight_uri)
    assert set(t.column("symbol").cast(pa.string()).to_pylist()) == {x for x in SYMBOLS if x < "M"}
    a.close()


@pytest.mark.parametrize("cmd", [
    {"kind": "trade", "symbols": "*"},
    {"kind": "trade", "symbols": ["XRP", "BTC", "SOL"], "start_ns": TICK_DAY_NS + 1_000_000},
    {"kind": "trade", "symbols": "*", "resample": {"timeframe": "1s"}, "price_format": "float64"},
])
@pytest.mark.parametrize("asked", ["a", "b"])
def test_many_symbol_tick_tickets_split_across_owners_equal_one_node(cluster, cmd, asked):
    """Trades of many symbols, and bars from them, asked of either node: one endpoint
    per owner, their union in order the single node's answer."""
    node = cluster[asked]
    c = flight.connect(node.flight_uri)
    info = c.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(cmd).encode()), options=OPTS)
    c.close()
    other = cluster["b" if asked == "a" else "a"].flight_uri
    assert {e.locations[0].uri.decode() for e in info.endpoints if e.locations} == {other}
    got = pull(info, node.flight_uri)
    want = ticket_table(flight.connect(cluster["oracle"].flight_uri), cmd)
    assert want.num_rows > 0
    assert rows(got) == rows(want)
    assert info.total_records in (-1, want.num_rows)


def test_the_tape_across_owners_is_one_ordered_stream_per_owner(cluster):
    """The tape of symbols on both nodes: not one stream, so FlightInfo says the
    endpoints are not ordered; each is in (ts) order, and merged by ts they hold the
    single node's tape."""
    cmd = {"kind": "trade", "symbols": "*", "order": "ts"}
    c = flight.connect(cluster["a"].flight_uri)
    info = c.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(cmd).encode()), options=OPTS)
    c.close()
    assert len(info.endpoints) == 2 and not info.ordered
    want = ticket_table(flight.connect(cluster["oracle"].flight_uri), cmd)
    parts = []
    for e in info.endpoints:
        cl = flight.connect(e.locations[0] if e.locations else cluster["a"].flight_uri)
        t = cl.do_get(e.ticket, options=OPTS).read_all()
        cl.close()
        ts = t.column("ts").cast(pa.int64()).to_pylist()
        assert ts == sorted(ts), "each owner's part is a tape"
        parts.append(t)
    got = pa.concat_tables(parts)
    assert sorted(rows(got)) == sorted(rows(want))
    assert got.num_rows == want.num_rows == sum(400 + 50 * i for i in range(len(TICK_SYMBOLS)))
