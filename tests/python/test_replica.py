"""A read replica through object storage, live (docs/scale-out.md, "Read replicas"):
two `fastk serve` processes on port 0 share a `file://` bucket. The primary publishes
every second (its log folded every second), the replica polls every second.

- After writes through HTTP (klines over two months, a scalar), the replica reaches
  the primary's versions and every Flight read (each series, a many-series ticket, a
  cross section) equals the primary's.
- A range delete and a series delete on the primary reach the replica too.
- The replica refuses writes: HTTP 412 `precondition_failed`, Flight
  FailedPrecondition (the `delete-range` action), naming the read-only replica.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from fastk_testlib import (
    check_error,
    expect_ok,
    flight_read,
    series_versions,
    wait_replica_caught_up,
    kline_path,
    make_klines,
    make_scalars,
    register_kline,
    register_scalar,
    scalar_path,
)

SYMBOLS = ["ADA", "BTC", "ETH", "SOL"]


@pytest.fixture(scope="module")
def pair(start_server, tmp_path_factory):
    bucket = tmp_path_factory.mktemp("bucket")
    url = f"file://{bucket}"
    primary = start_server("primary", {
        "FASTK__REPLICA__PUBLISH_TO": url,
        "FASTK__REPLICA__PUBLISH_INTERVAL_S": "1",
        "FASTK__REPLICA__GC_GRACE_S": "0",
        "FASTK__STORAGE__FOLD_AGE_S": "1",
    })
    replica = start_server("replica", {
        "FASTK__REPLICA__FOLLOW_FROM": url,
        "FASTK__REPLICA__POLL_INTERVAL_S": "1",
    })
    return primary, replica


def same_reads(primary, replica) -> None:
    cmds = [{"kind": "kline", "symbol": s, "timeframe": "1m"} for s in SYMBOLS]
    cmds += [
        {"kind": "kline", "symbols": "*", "timeframe": "1m"},
        {"kind": "kline", "symbols": "*", "timeframe": "1m", "latest": 1},
        {"kind": "scalar", "symbol": "BTC", "timeframe": "1m", "category": "feature", "name": "x"},
    ]
    for cmd in cmds:
        want = flight_read(primary.flight_uri, cmd)
        got = flight_read(replica.flight_uri, cmd)
        assert got.equals(want), f"replica differs for {cmd}"


def test_replica_follows_and_refuses_writes(pair):
    primary, replica = pair
    s = requests.Session()
    for i, sym in enumerate(SYMBOLS):
        expect_ok(register_kline(s, primary.http_url, sym), 201)
        # Two small writes (through the log) across a month boundary.
        for part in range(2):
            bars = make_klines(1500, start_ts=1_706_659_200_000 + part * 1500 * 60_000, seed=i)
            expect_ok(s.post(primary.http_url + kline_path(sym) + "/records", json={"records": bars}, timeout=30))
    expect_ok(register_scalar(s, primary.http_url, "BTC", "feature", "x"), 201)
    expect_ok(s.post(primary.http_url + scalar_path("BTC", "1m", "feature", "x") + "/records",
                     json={"records": make_scalars(3000)}, timeout=30))
    got = wait_replica_caught_up(primary, replica)
    assert len(got) == len(SYMBOLS) + 1
    same_reads(primary, replica)

    # A range delete and a series delete follow.
    expect_ok(s.delete(primary.http_url + kline_path("ETH") + "/records",
                       params={"start_ts": 1_706_659_200_000, "end_ts": 1_706_659_200_000 + 600 * 60_000}, timeout=30))
    expect_ok(s.delete(primary.http_url + kline_path("SOL"), timeout=30), 200, 204)
    got = wait_replica_caught_up(primary, replica)
    assert "kline/SOL/None" not in got
    SYMBOLS.remove("SOL")
    same_reads(primary, replica)

    # Writes to the replica are refused, over HTTP and Flight.
    bars = make_klines(5, start_ts=1_800_000_000_000)
    msg = check_error(s.post(replica.http_url + kline_path("BTC") + "/records", json={"records": bars}, timeout=30),
                      412, "precondition_failed")
    assert "read-only replica" in msg
    check_error(register_kline(s, replica.http_url, "NEW"), 412, "precondition_failed")
    c = flight.connect(replica.flight_uri)
    body = json.dumps({"kind": "kline", "symbol": "BTC", "timeframe": "1m", "end_ts": 1_706_659_200_000}).encode()
    # pyarrow raises gRPC's FAILED_PRECONDITION as ArrowInvalid, naming the code.
    with pytest.raises(pa.ArrowInvalid, match="precondition failed.*read-only replica"):
        list(c.do_action(flight.Action("delete-range", body)))
    c.close()
    same_reads(primary, replica)


def test_health_reports_each_nodes_replication(pair, server):
    primary, replica = pair
    for node, role in ((primary, "publisher"), (replica, "follower")):
        h = requests.get(node.http_url + "/health", timeout=30).json()
        r = h["replica"]
        assert r["role"] == role
        assert r["passes"] >= 1 and r["failed_passes"] == 0 and r["last_error"] is None
        assert r["last_ok_ts"] > 0 and 0 <= r["since_ok_s"] <= 30
        assert not any("replication" in d for d in h["details"]), h["details"]
        text = requests.get(node.http_url + "/metrics", timeout=30).text
        assert "\nfastk_replica_failed_passes 0\n" in text
        assert "\nfastk_replica_failed_series 0\n" in text
        assert "\nfastk_replica_seconds_since_ok " in text
    # A node that neither publishes nor follows has no replica section, nor gauges.
    assert "replica" not in requests.get(server.http_url + "/health", timeout=30).json()
    assert "fastk_replica_" not in requests.get(server.http_url + "/metrics", timeout=30).text


def snapshot_names(base: str) -> list[str]:
    got = expect_ok(requests.get(base + "/v1/snapshots", timeout=30))["snapshots"]
    return sorted(x["name"] for x in got)


def wait_snapshots(primary, replica, timeout_s: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        want = snapshot_names(primary.http_url)
        if snapshot_names(replica.http_url) == want:
            return want
        assert time.monotonic() < deadline, (
            f"replica did not follow the snapshots: {snapshot_names(replica.http_url)} vs {want}\n"
            f"{replica.log_tail(30)}"
        )
        time.sleep(0.3)


def test_replica_follows_named_snapshots(pair):
    """A snapshot made on the primary reaches the replica and reads there what it reads
    on the primary, after the primary rewrote the rows it holds; a delete follows too."""
    primary, replica = pair
    s = requests.Session()
    if not series_versions(primary.http_url):
        expect_ok(register_kline(s, primary.http_url, "BTC"), 201)
    bars = make_klines(600, start_ts=1_706_659_200_000, seed=3)
    expect_ok(s.post(primary.http_url + kline_path("BTC") + "/records", json={"records": bars}, timeout=30))
    wait_replica_caught_up(primary, replica)
    made = expect_ok(s.post(primary.http_url + "/v1/snapshots",
                            json={"name": "friday", "series": "*", "note": "as of friday"}, timeout=30), 201)
    # The rows the snapshot holds are replaced on the primary.
    bars = make_klines(600, start_ts=1_706_659_200_000, seed=11)
    expect_ok(s.post(primary.http_url + kline_path("BTC") + "/records", json={"records": bars}, timeout=30))
    wait_replica_caught_up(primary, replica)
    assert wait_snapshots(primary, replica) == ["friday"]
    shown = expect_ok(requests.get(replica.http_url + "/v1/snapshots/friday", timeout=30))
    assert shown == expect_ok(requests.get(primary.http_url + "/v1/snapshots/friday", timeout=30))
    assert shown["created_ts"] == made["created_ts"] and shown["note"] == "as of friday"
    cmd = {"kind": "kline", "symbol": "BTC", "timeframe": "1m", "snapshot": "friday"}
    want = flight_read(primary.flight_uri, cmd)
    assert want.num_rows > 0
    assert flight_read(replica.flight_uri, cmd).equals(want)
    live = flight_read(replica.flight_uri, {"kind": "kline", "symbol": "BTC", "timeframe": "1m"})
    assert not live.equals(want), "the snapshot reads the replaced rows, the series the new ones"
    # The replica makes and deletes none of its own.
    check_error(s.post(replica.http_url + "/v1/snapshots", json={"name": "mine"}, timeout=30),
                412, "precondition_failed")
    check_error(s.delete(replica.http_url + "/v1/snapshots/friday", timeout=30), 412, "precondition_failed")
    expect_ok(s.delete(primary.http_url + "/v1/snapshots/friday", timeout=30), 200, 204)
    assert wait_snapshots(primary, replica) == []
