"""Reads that fail over to a replica (docs/scale-out.md, "Reads that fail over"): node a
owns symbols from "" to "M", node b from "M" on; b publishes to a `file://` bucket and
a third server follows it as b's read replica, listed in the shard map under
`replicas`.

- GetFlightInfo endpoints of b's series list b first and its replica after it (asked
  of a, which forwards, and of b itself); a's endpoints, which have no replica, keep
  no location ("the node asked").
- A client that tries each endpoint's locations in order reads everything; with b
  killed, the same client reads the same table from b's replica, and a's forwarded
  GetFlightInfo goes to the replica instead of failing.
- `/health` of each node says which ranges it owns and, once b is down, a's names b
  as unreachable and is degraded.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from fastk_testlib import expect_ok, free_port, kline_path, make_klines, register_kline

A_SYMBOLS = ["ADA", "BTC", "ETH"]
B_SYMBOLS = ["SOL", "XRP"]


def pull_with_failover(info: flight.FlightInfo, asked: str) -> pa.Table:
    """What docs/scale-out.md shows: each endpoint from its first location that
    answers (no location: the node asked), the parts in endpoint order."""
    parts = []
    for e in info.endpoints:
        uris = [loc.uri.decode() if isinstance(loc.uri, bytes) else str(loc.uri) for loc in e.locations] or [asked]
        last = None
        for uri in uris:
            client = flight.connect(uri)
            try:
                parts.append(client.do_get(e.ticket).read_all())
                break
            except flight.FlightUnavailableError as err:
                last = err
            finally:
                client.close()
        else:
            raise AssertionError(f"no location of {uris} answered: {last}")
    return pa.concat_tables(parts)


def info_of(uri: str, cmd: dict) -> flight.FlightInfo:
    client = flight.connect(uri)
    try:
        return client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(cmd)))
    finally:
        client.close()


def locations(e: flight.FlightEndpoint) -> list[str]:
    return [loc.uri.decode() if isinstance(loc.uri, bytes) else str(loc.uri) for loc in e.locations]


def test_endpoints_list_replicas_and_reads_fail_over(start_server, tmp_path):
    pa_, pb, prb = free_port(), free_port(), free_port()
    a_uri, b_uri, rb_uri = (f"grpc://127.0.0.1:{p}" for p in (pa_, pb, prb))
    shard_map = {"nodes": {"a": a_uri, "b": b_uri},
                 "ranges": [{"from": "", "node": "a"}, {"from": "M", "node": "b"}],
                 "replicas": {"b": [rb_uri]}}
    bucket = f"file://{tmp_path}"
    common = {"FASTK__CLUSTER__SHARD_MAP": json.dumps(shard_map)}
    a = start_server("failover-a", {**common, "FASTK__CLUSTER__NODE": "a", "FASTK__FLIGHT__ADDR": f"127.0.0.1:{pa_}"})
    b = start_server("failover-b", {
        **common, "FASTK__CLUSTER__NODE": "b", "FASTK__FLIGHT__ADDR": f"127.0.0.1:{pb}",
        "FASTK__REPLICA__PUBLISH_TO": bucket, "FASTK__REPLICA__PUBLISH_INTERVAL_S": "1",
        "FASTK__STORAGE__FOLD_AGE_S": "1",
    })
    rb = start_server("failover-rb", {
        "FASTK__FLIGHT__ADDR": f"127.0.0.1:{prb}",
        "FASTK__REPLICA__FOLLOW_FROM": bucket, "FASTK__REPLICA__POLL_INTERVAL_S": "1",
    })
    got = json.loads(next(iter(flight.connect(a_uri).do_action(flight.Action("shard-map", b"")))).body.to_pybytes())
    assert got == {"node": "a", **shard_map}
    s = requests.Session()
    for i, sym in enumerate(A_SYMBOLS + B_SYMBOLS):
        owner = a if sym in A_SYMBOLS else b
        expect_ok(register_kline(s, owner.http_url, sym), 201)
        bars = make_klines(400 + 50 * i, seed=i)
        expect_ok(s.post(owner.http_url + kline_path(sym) + "/records", json={"records": bars}, timeout=30))

    def held(srv) -> dict:
        inv = requests.get(srv.http_url + "/inventory?partitions=false", timeout=30).json()
        return {x["symbol"]: (x["version"], x.get("unfolded_rows", 0)) for x in inv["series"]}

    deadline = time.monotonic() + 60
    while not (held(b) and all(u == 0 for _, u in held(b).values())
               and {k: v for k, (v, _) in held(rb).items()} == {k: v for k, (v, _) in held(b).items()}):
        assert time.monotonic() < deadline, f"the replica did not catch up:\n{rb.log_tail(30)}"
        time.sleep(0.3)

    every = {"kind": "kline", "symbols": "*", "timeframe": "1m"}
    info = info_of(a_uri, every)
    by_owner = {"a": [], "b": []}
    for e in info.endpoints:
        syms = json.loads(e.ticket.ticket)["symbols"]
        owner = "a" if all(x in A_SYMBOLS for x in syms) else "b"
        assert all(x in (A_SYMBOLS if owner == "a" else B_SYMBOLS) for x in syms), syms
        by_owner[owner].append(locations(e))
    assert by_owner["a"] and all(locs == [] for locs in by_owner["a"]), by_owner
    assert by_owner["b"] and all(locs == [b_uri, rb_uri] for locs in by_owner["b"]), by_owner
    # Asked of b itself, its own series are located on it, then on its replica.
    one = info_of(b_uri, {"kind": "kline", "symbol": "SOL", "timeframe": "1m"})
    assert [locations(e) for e in one.endpoints] == [[b_uri, rb_uri]]
    want = pull_with_failover(info, a_uri)
    assert want.num_rows == sum(400 + 50 * i for i in range(5))
    assert sorted(set(want.column("symbol").cast(pa.string()).to_pylist())) == sorted(A_SYMBOLS + B_SYMBOLS)

    # /health says which ranges each node owns, and that every peer answers.
    def cluster_health(srv) -> dict:
        return requests.get(srv.http_url + "/health", timeout=30).json()

    # (a's first probe may have run before b and the replica were up: it probes again
    # every 5 s.)
    deadline = time.monotonic() + 30
    while (h := cluster_health(a))["cluster"].get("checked_ts") is None or h["cluster"]["unreachable"]:
        assert time.monotonic() < deadline, h
        time.sleep(0.3)
    assert h["status"] == "ok", h
    assert h["cluster"]["node"] == "a" and h["cluster"]["owns"] == [""]
    assert h["cluster"]["peers"] == 2 and h["cluster"]["unreachable"] == [], h
    assert cluster_health(b)["cluster"]["owns"] == ["M"]
    assert "cluster" not in cluster_health(rb)

    # b goes down: a's GetFlightInfo forwards to b's replica, and the client's reads
    # of b's endpoints fail over to it. The answer is the same table.
    b.kill()
    info = info_of(a_uri, every)
    assert [locations(e) for e in info.endpoints if locations(e)] == [[b_uri, rb_uri]] * len(by_owner["b"])
    assert pull_with_failover(info, a_uri).equals(want)
    assert "did not answer: its replica did" in a.log_text()
    # a's /health names b as unreachable (within a probe or two) and is degraded.
    deadline = time.monotonic() + 30
    while not cluster_health(a)["cluster"]["unreachable"]:
        assert time.monotonic() < deadline, a.log_tail(30)
        time.sleep(0.5)
    h = cluster_health(a)
    assert h["cluster"]["unreachable"] == [f"b ({b_uri})"], h
    assert h["status"] == "degraded" and any("cluster: peers not reachable" in d for d in h["details"]), h
    # Without a replica that answers either, the error names the node and its replicas.
    rb.kill()
    with pytest.raises(flight.FlightUnavailableError, match=f"shard node b .*nor did its replicas .*{prb}"):
        info_of(a_uri, every)


def test_a_shard_map_file_is_read_again_without_a_restart(start_server, tmp_path):
    """`cluster.shard_map_path`: both nodes read the same file; rewritten to move a
    range from b to a, both serve the new map within a probe or two (GetFlightInfo
    locates the moved symbol on a, the `shard-map` action and `/health` say so); a
    broken file is refused with the map in use kept and `/health` degraded, until it
    is fixed."""
    pa_, pb = free_port(), free_port()
    a_uri, b_uri = f"grpc://127.0.0.1:{pa_}", f"grpc://127.0.0.1:{pb}"
    before = {"nodes": {"a": a_uri, "b": b_uri},
              "ranges": [{"from": "", "node": "a"}, {"from": "M", "node": "b"}]}
    after = {"nodes": {"a": a_uri, "b": b_uri},
             "ranges": [{"from": "", "node": "a"}, {"from": "M", "node": "b"}, {"from": "T", "node": "a"}]}
    path = tmp_path / "shards.json"
    path.write_text(json.dumps(before))
    common = {"FASTK__CLUSTER__SHARD_MAP_PATH": str(path)}
    a = start_server("mapfile-a", {**common, "FASTK__CLUSTER__NODE": "a", "FASTK__FLIGHT__ADDR": f"127.0.0.1:{pa_}"})
    b = start_server("mapfile-b", {**common, "FASTK__CLUSTER__NODE": "b", "FASTK__FLIGHT__ADDR": f"127.0.0.1:{pb}"})
    s = requests.Session()
    for sym, owner in (("ETH", a), ("SOL", b), ("XRP", a)):
        expect_ok(register_kline(s, owner.http_url, sym), 201)
        expect_ok(s.post(owner.http_url + kline_path(sym) + "/records",
                         json={"records": make_klines(100, seed=len(sym))}, timeout=30))

    def shard_map(uri: str) -> dict:
        client = flight.connect(uri)
        try:
            return json.loads(next(iter(client.do_action(flight.Action("shard-map", b"")))).body.to_pybytes())
        finally:
            client.close()

    def health(srv) -> dict:
        return requests.get(srv.http_url + "/health", timeout=30).json()

    def xrp_location(uri: str) -> list[list[str]]:
        info = info_of(uri, {"kind": "kline", "symbols": ["XRP"], "timeframe": "1m"})
        return [locations(e) for e in info.endpoints]

    assert shard_map(b_uri) == {"node": "b", **before}
    assert health(a)["cluster"]["map_from_file"] is True
    # Under the first map b owns XRP, so b answers for it itself: it does not hold it.
    with pytest.raises(KeyError, match="kline/XRP/1m is not registered"):
        xrp_location(b_uri)

    path.write_text(json.dumps(after))
    deadline = time.monotonic() + 30
    while health(a)["cluster"]["owns"] != ["", "T"] or health(b)["cluster"]["owns"] != ["M"] \
            or shard_map(b_uri) != {"node": "b", **after}:
        assert time.monotonic() < deadline, f"the new map was not taken:\n{b.log_tail(20)}"
        time.sleep(0.3)
    assert "the shard map file changed" in b.log_text()
    # b now locates XRP on a, which holds it; the read through the endpoint is a's.
    assert xrp_location(b_uri) == [[a_uri]]
    info = info_of(b_uri, {"kind": "kline", "symbols": ["XRP"], "timeframe": "1m"})
    assert pull_with_failover(info, b_uri).num_rows == 100
    assert health(a)["status"] == "ok"

    # A broken file is refused: the map in use stays, /health says why.
    path.write_text('{"nodes": ')
    deadline = time.monotonic() + 30
    while (h := health(a))["cluster"]["map_refused"] is None:
        assert time.monotonic() < deadline, h
        time.sleep(0.3)
    assert h["status"] == "degraded", h
    assert any("shard map file was refused" in d for d in h["details"]), h
    assert shard_map(a_uri) == {"node": "a", **after}
    assert xrp_location(b_uri) == [[a_uri]]
    # A map that drops this node is refused the same way.
    path.write_text(json.dumps({"nodes": {"b": b_uri}, "ranges": [{"from": "", "node": "b"}]}))
    deadline = time.monotonic() + 30
    while "not a node" not in ((h := health(a))["cluster"]["map_refused"] or ""):
        assert time.monotonic() < deadline, h
        time.sleep(0.3)
    # Fixed, it serves again and the refusal clears.
    path.write_text(json.dumps(after))
    deadline = time.monotonic() + 30
    while (h := health(a))["cluster"]["map_refused"] is not None or h["status"] != "ok":
        assert time.monotonic() < deadline, h
        time.sleep(0.3)


def test_a_peer_that_never_answers_is_unavailable_within_the_timeout(start_server):
    """A shard node that accepts connections and never answers (a hung process) is
    not waited for: after `cluster.forward_timeout_s` the forwarded GetFlightInfo is
    Unavailable and names it, instead of hanging or passing on a bare timeout."""
    import socket
    import threading

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def swallow() -> None:
        hole.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = hole.accept()
            except OSError:
                continue
            held.append(conn)  # read nothing, answer nothing

    t = threading.Thread(target=swallow, daemon=True)
    t.start()
    try:
        pa_ = free_port()
        a_uri = f"grpc://127.0.0.1:{pa_}"
        b_uri = f"grpc://127.0.0.1:{hole.getsockname()[1]}"
        shard_map = {"nodes": {"a": a_uri, "b": b_uri},
                     "ranges": [{"from": "", "node": "a"}, {"from": "M", "node": "b"}]}
        a = start_server("hung-peer-a", {
            "FASTK__CLUSTER__SHARD_MAP": json.dumps(shard_map), "FASTK__CLUSTER__NODE": "a",
            "FASTK__FLIGHT__ADDR": f"127.0.0.1:{pa_}", "FASTK__CLUSTER__FORWARD_TIMEOUT_S": "2",
        })
        client = flight.connect(a_uri)
        desc = flight.FlightDescriptor.for_command(
            json.dumps({"kind": "kline", "symbols": ["SOL"], "timeframe": "1m"}))
        # The client's own deadline is far past the node's: the node's answer comes first.
        with pytest.raises(flight.FlightUnavailableError, match=r"shard node b .*did not answer.*forward_timeout_s 2"):
            client.get_flight_info(desc, flight.FlightCallOptions(timeout=60))
        client.close()
        assert requests.get(a.http_url + "/health", timeout=30).status_code == 200
    finally:
        stop.set()
        t.join(timeout=5)
        for c in held:
            c.close()
        hole.close()
