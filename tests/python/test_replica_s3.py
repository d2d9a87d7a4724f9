"""Read replicas on S3-compatible storage (docs/scale-out.md, "Read replicas"): two
`fastk serve` processes publish to and follow `s3://fastk/pub` on a real S3 server, the
S3 server of `moto` started by the test on a free loopback port, configured through
the standard `AWS_*` variables.

Publish and follow; a rewrite; a series delete; a named snapshot; a corrupt manifest
object (the replica refuses it, keeps serving the old state and says so in /health,
then recovers when the primary publishes again); the primary killed (SIGKILL) at
moments during its passes, restarted, and the replica converging on it.
"""

from __future__ import annotations

import random
import time

import pytest
import requests

from fastk_testlib import (
    expect_ok,
    flight_read,
    free_port,
    kline_path,
    make_klines,
    make_scalars,
    register_kline,
    register_scalar,
    scalar_path,
    wait_replica_caught_up,
)

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

BUCKET = "fastk"
JAN_31_2024_MS = 1_706_659_200_000


@pytest.fixture(scope="module")
def s3():
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )
    client.create_bucket(Bucket=BUCKET)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }
    yield client, env
    server.stop()


@pytest.fixture(scope="module")
def pair(s3, start_server):
    client, aws = s3
    primary = start_server("s3-primary", {
        **aws,
        "FASTK__REPLICA__PUBLISH_TO": f"s3://{BUCKET}/pub",
        "FASTK__REPLICA__PUBLISH_INTERVAL_S": "1",
        "FASTK__REPLICA__GC_GRACE_S": "0",
        "FASTK__STORAGE__FOLD_AGE_S": "1",
    })
    replica = start_server("s3-replica", {
        **aws,
        "FASTK__REPLICA__FOLLOW_FROM": f"s3://{BUCKET}/pub",
        "FASTK__REPLICA__POLL_INTERVAL_S": "1",
    })
    return client, primary, replica


def same_reads(primary, replica, symbols) -> None:
    cmds = [{"kind": "kline", "symbol": s, "timeframe": "1m"} for s in symbols]
    cmds.append({"kind": "kline", "symbols": "*", "timeframe": "1m", "latest": 1})
    cmds.append({"kind": "scalar", "symbol": "BTC", "timeframe": "1m", "category": "feature", "name": "x"})
    for cmd in cmds:
        assert flight_read(replica.flight_uri, cmd).equals(flight_read(primary.flight_uri, cmd)), f"replica differs for {cmd}"


def objects(client, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def post_bars(s, base: str, sym: str, n: int, start: int, seed: int) -> None:
    bars = make_klines(n, start_ts=start, seed=seed)
    expect_ok(s.post(base + kline_path(sym) + "/records", json={"records": bars}, timeout=30))


def test_replica_follows_a_primary_through_s3(pair):
    client, primary, replica = pair
    s = requests.Session()
    symbols = ["BTC", "ETH", "SOL"]
    for i, sym in enumerate(symbols):
        expect_ok(register_kline(s, primary.http_url, sym), 201)
        post_bars(s, primary.http_url, sym, 3000, JAN_31_2024_MS, i)
    expect_ok(register_scalar(s, primary.http_url, "BTC", "feature", "x"), 201)
    expect_ok(s.post(primary.http_url + scalar_path("BTC", "1m", "feature", "x") + "/records",
                     json={"records": make_scalars(3000)}, timeout=30))
    wait_replica_caught_up(primary, replica)
    same_reads(primary, replica, symbols)
    published = objects(client, "pub/")
    assert "pub/FASTK-PUBLICATION" in published
    assert "pub/manifests/kline/BTC/1m/MANIFEST" in published
    assert any(k.startswith("pub/data/kline/BTC/1m/") for k in published)

    # A rewrite of rows the replica holds, and a series delete.
    post_bars(s, primary.http_url, "BTC", 600, JAN_31_2024_MS, 17)
    expect_ok(s.delete(primary.http_url + kline_path("SOL"), timeout=30), 200, 204)
    got = wait_replica_caught_up(primary, replica)
    assert "kline/SOL/None" not in got
    symbols.remove("SOL")
    same_reads(primary, replica, symbols)
    assert not any(k.startswith("pub/manifests/kline/SOL/") for k in objects(client, "pub/"))

    # A named snapshot travels too, and reads there what it reads on the primary.
    expect_ok(s.post(primary.http_url + "/v1/snapshots", json={"name": "s3-snap"}, timeout=30), 201)
    post_bars(s, primary.http_url, "BTC", 600, JAN_31_2024_MS, 23)
    wait_replica_caught_up(primary, replica)
    deadline = time.monotonic() + 60
    while "s3-snap" not in [x["name"] for x in requests.get(replica.http_url + "/v1/snapshots", timeout=30).json()["snapshots"]]:
        assert time.monotonic() < deadline, replica.log_tail(30)
        time.sleep(0.3)
    cmd = {"kind": "kline", "symbol": "BTC", "timeframe": "1m", "snapshot": "s3-snap"}
    assert flight_read(replica.flight_uri, cmd).equals(flight_read(primary.flight_uri, cmd))
    assert "pub/snapshots/s3-snap.snap" in objects(client, "pub/")


def test_a_corrupt_manifest_object_is_refused_and_the_old_state_served(pair):
    client, primary, replica = pair
    s = requests.Session()
    wait_replica_caught_up(primary, replica)
    before = flight_read(replica.flight_uri, {"kind": "kline", "symbol": "ETH", "timeframe": "1m"})
    client.put_object(Bucket=BUCKET, Key="pub/manifests/kline/ETH/1m/MANIFEST", Body=b"not a manifest")
    deadline = time.monotonic() + 60
    while True:
        h = requests.get(replica.http_url + "/health", timeout=30).json()
        err = (h.get("replica") or {}).get("last_error") or ""
        if h["status"] == "degraded" and "ETH" in err:
            break
        assert time.monotonic() < deadline, f"{h}\n{replica.log_tail(30)}"
        time.sleep(0.3)
    assert "manifest" in err
    assert flight_read(replica.flight_uri, {"kind": "kline", "symbol": "ETH", "timeframe": "1m"}).equals(before)
    # The primary's next change to ETH puts a good manifest: the replica recovers.
    post_bars(s, primary.http_url, "ETH", 100, JAN_31_2024_MS + 5000 * 60_000, 5)
    wait_replica_caught_up(primary, replica)
    same_reads(primary, replica, ["BTC", "ETH"])
    deadline = time.monotonic() + 60
    while requests.get(replica.http_url + "/health", timeout=30).json()["status"] != "ok":
        assert time.monotonic() < deadline, replica.log_tail(30)
        time.sleep(0.3)


def test_the_primary_killed_during_its_passes_then_restarted(pair):
    """SIGKILL at random moments after writes (the log is folded and published every
    second, so the kills land in folds and publication passes); after each restart the
    replica converges on the primary, which lost no acknowledged row."""
    _, primary, replica = pair
    s = requests.Session()
    rng = random.Random(7)
    for round_ in range(3):
        for sym in ("BTC", "ETH"):
            post_bars(s, primary.http_url, sym, 2000, JAN_31_2024_MS + (10_000 + round_ * 2000) * 60_000, round_)
        want = {sym: flight_read(primary.flight_uri, {"kind": "kline", "symbol": sym, "timeframe": "1m"})
                for sym in ("BTC", "ETH")}
        time.sleep(rng.uniform(0.5, 2.0))
        primary.kill()
        primary.start()
        for sym, table in want.items():
            got = flight_read(primary.flight_uri, {"kind": "kline", "symbol": sym, "timeframe": "1m"})
            assert got.equals(table), f"round {round_}: the primary lost acknowledged rows of {sym}"
        wait_replica_caught_up(primary, replica)
        same_reads(primary, replica, ["BTC", "ETH"])
