"""Helpers shared by the Python tests: deterministic data and small HTTP wrappers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
OPENAPI_PATH = REPO_ROOT / "openapi" / "openapi.json"

# The session server's request body limit (conftest), small enough that the 413 test
# does not have to send tens of megabytes.
SESSION_MAX_BODY_BYTES = 2 * 1024 * 1024
# The bearer token of the servers started with auth on.
AUTH_TOKEN = "test-token-5f1c2a9e"

MINUTE_MS = 60_000
# 2024-01-31T00:00:00Z: a run of 1m bars from here crosses into February, so reads
# span two month partitions.
JAN_31_2024_MS = 1_706_659_200_000
JAN_1_2024_MS = 1_704_067_200_000


def make_klines(
    n: int, start_ts: int = JAN_1_2024_MS, step_ms: int = MINUTE_MS, seed: int = 7
) -> list[dict[str, int]]:
    """`n` valid 1m bars (a seeded random walk), ascending by ts."""
    rng = random.Random(seed)
    price = 4_200_000
    out = []
    for i in range(n):
        open_ = price
        close = max(1, open_ + rng.randint(-500, 500))
        high = max(open_, close) + rng.randint(0, 300)
        low = max(0, min(open_, close) - rng.randint(0, 300))
        out.append(
            {
                "ts": start_ts + i * step_ms,
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": rng.randint(0, 10_000_000),
            }
        )
        price = close
    return out


def make_scalars(
    n: int,
    start_ts: int = JAN_1_2024_MS,
    step_ms: int = MINUTE_MS,
    seed: int = 11,
    value_type: str = "f64",
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    if value_type == "f64":
        return [
            {"ts": start_ts + i * step_ms, "value": round(rng.uniform(0, 100), 6)}
            for i in range(n)
        ]
    return [{"ts": start_ts + i * step_ms, "value": rng.choice([-1, 0, 1])} for i in range(n)]


def kline_path(symbol: str, timeframe: str = "1m") -> str:
    return f"/v1/kline/{symbol}/{timeframe}"


def scalar_path(symbol: str, timeframe: str, category: str, name: str) -> str:
    return f"/v1/scalar/{symbol}/{timeframe}/{category}/{name}"


def register_kline(
    s: requests.Session,
    base: str,
    symbol: str,
    timeframe: str = "1m",
    price_scale: int = 100,
    volume_scale: int = 1000,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    body = {
        "symbol": symbol,
        "timeframe": timeframe,
        "price_scale": price_scale,
        "volume_scale": volume_scale,
    }
    return s.post(f"{base}/v1/kline/series", json=body, headers=headers, timeout=30)


def register_scalar(
    s: requests.Session,
    base: str,
    symbol: str,
    category: str,
    name: str,
    value_type: str = "f64",
    timeframe: str = "1m",
) -> requests.Response:
    body = {
        "symbol": symbol,
        "timeframe": timeframe,
        "category": category,
        "name": name,
        "value_type": value_type,
    }
    return s.post(f"{base}/v1/scalar/series", json=body, timeout=30)


def check_error(r: requests.Response, status: int, code: str) -> str:
    """Asserts the contract's error body and returns its message."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message, body
    return message


def expect_ok(r: requests.Response, *statuses: int) -> Any:
    statuses = statuses or (200,)
    assert r.status_code in statuses, (
        f"{r.request.method} {r.request.url}: expected {statuses}, "
        f"got {r.status_code}: {r.text[:500]}"
    )
    return r.json() if r.content else None


def free_port() -> int:
    """A loopback port free now (for a shard map or an S3 server that must be named
    before its server starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flight_read(uri: str, cmd: dict):
    """One DoGet of the JSON ticket `cmd` at `uri`, read whole."""
    import json

    import pyarrow.flight as flight

    c = flight.connect(uri)
    try:
        return c.do_get(flight.Ticket(json.dumps(cmd).encode())).read_all()
    finally:
        c.close()


def series_versions(base: str) -> dict[str, int]:
    """Each series' version, from `/inventory`."""
    inv = requests.get(base + "/inventory?partitions=false", timeout=30).json()
    return {f"{x['kind']}/{x['symbol']}/{x.get('name')}": x["version"] for x in inv["series"]}


def wait_replica_caught_up(primary, replica, timeout_s: float = 60.0) -> dict[str, int]:
    """Until the primary has folded everything and the replica has its versions."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        inv = requests.get(primary.http_url + "/inventory?partitions=false", timeout=30).json()
        folded = all(x.get("unfolded_rows", 0) == 0 for x in inv["series"])
        want = series_versions(primary.http_url)
        if folded and series_versions(replica.http_url) == want:
            return want
        assert time.monotonic() < deadline, (
            f"replica did not catch up: {series_versions(replica.http_url)} vs {want}\n{replica.log_tail(30)}"
        )
        time.sleep(0.3)
