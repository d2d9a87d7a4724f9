"""The contract's HTTP behaviours, over real sockets against the real binary."""

from __future__ import annotations

import http.client
import json
import random
import re
import select
from urllib.parse import urlsplit

import pytest
import requests

from fastk_testlib import (
    AUTH_TOKEN,
    SESSION_MAX_BODY_BYTES,
    JAN_1_2024_MS,
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


def read_all_pages(s, url: str, limit: int, page_rows: int | None = None,
                   **params) -> tuple[list[dict], int]:
    """Follows `next_start_ts` until it is null; returns the records and page count.

    Every page but the last must hold `page_rows` records (`limit` unless the server
    caps it lower)."""
    page_rows = page_rows or limit
    out, pages, start = [], 0, params.pop("start_ts", None)
    while True:
        q = dict(params, limit=limit)
        if start is not None:
            q["start_ts"] = start
        body = expect_ok(s.get(url, params=q, timeout=30))
        assert set(body) >= {"records", "next_start_ts"}, body
        pages += 1
        assert len(body["records"]) <= page_rows
        out.extend(body["records"])
        start = body["next_start_ts"]
        if start is None:
            return out, pages
        # A page that says there is more must be full, and paging must move forward.
        assert len(body["records"]) == page_rows, body
        assert start > body["records"][-1]["ts"], body
        assert pages < 10_000, "paging does not terminate"


def test_register_kline_201_200_409(http, unique_name):
    sym = unique_name("REG")
    r = register_kline(http, http.base, sym)
    info = expect_ok(r, 201)
    assert info["symbol"] == sym and info["timeframe"] == "1m"
    assert info["timeframe_ms"] == 60_000  # implied by the standard name
    assert info["price_scale"] == 100 and info["volume_scale"] == 1000
    assert info["rows"] == 0

    again = expect_ok(register_kline(http, http.base, sym), 200)
    assert again["symbol"] == sym and again["price_scale"] == 100

    msg = check_error(register_kline(http, http.base, sym, price_scale=10_000), 409, "conflict")
    assert msg
    # The conflicting registration changed nothing.
    meta = expect_ok(http.get(http.base + kline_path(sym), timeout=30))
    assert meta["price_scale"] == 100


def test_register_scalar_and_custom_timeframe(http, unique_name):
    sym = unique_name("SCL")
    r = register_scalar(http, http.base, sym, "indicator", "rsi_14", "f64")
    info = expect_ok(r, 201)
    assert info["category"] == "indicator" and info["name"] == "rsi_14"
    assert info["value_type"] == "f64" and info["timeframe_ms"] == 60_000

    # A non-standard timeframe needs timeframe_ms.
    body = {"symbol": sym, "timeframe": "7m", "price_scale": 1, "volume_scale": 1}
    check_error(http.post(http.base + "/v1/kline/series", json=body, timeout=30), 400,
                "invalid_argument")
    body["timeframe_ms"] = 7 * MINUTE_MS
    info = expect_ok(http.post(http.base + "/v1/kline/series", json=body, timeout=30), 201)
    assert info["timeframe_ms"] == 7 * MINUTE_MS

    listed = expect_ok(http.get(http.base + "/v1/scalar/series", timeout=30))
    items = listed if isinstance(listed, list) else listed.get("series", listed)
    assert any(i["symbol"] == sym and i["name"] == "rsi_14" for i in items), listed


def test_write_read_round_trip_with_paging(http, unique_name):
    sym = unique_name("RT")
    expect_ok(register_kline(http, http.base, sym), 201)
    # 3000 bars from Jan 31: they cross into February (two month partitions).
    records = make_klines(3000, start_ts=JAN_31_2024_MS)
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)  # writes accept any order
    url = http.base + kline_path(sym) + "/records"
    w = expect_ok(http.post(url, json={"records": shuffled}, timeout=60))
    assert w["written"] == 3000 and w["inserted"] == 3000 and w["replaced"] == 0
    assert sorted(w["months"]) == ["2024-01", "2024-02"]
    assert isinstance(w["version"], int) and w["version"] >= 1

    got, pages = read_all_pages(http, url, limit=700)
    assert pages == 5  # 700 * 4 + 200
    assert got == records  # ascending, every field exact

    # Large JSON answers are gzipped for clients that accept it.
    r = http.get(url, headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert r.headers.get("content-encoding") == "gzip", r.headers
    assert r.json()["records"] == records

    # Inclusive at both ends.
    lo, hi = records[100]["ts"], records[199]["ts"]
    body = expect_ok(http.get(url, params={"start_ts": lo, "end_ts": hi}, timeout=30))
    assert body["records"] == records[100:200] and body["next_start_ts"] is None
    # Open start.
    body = expect_ok(http.get(url, params={"end_ts": records[9]["ts"]}, timeout=30))
    assert body["records"] == records[:10]

    latest = expect_ok(http.get(http.base + kline_path(sym) + "/latest", params={"n": 5},
                                timeout=30))
    assert latest["records"] == records[-5:]

    meta = expect_ok(http.get(http.base + kline_path(sym), timeout=30))
    assert meta["rows"] == 3000
    assert meta["first_ts"] == records[0]["ts"] and meta["last_ts"] == records[-1]["ts"]
    assert meta["version"] == w["version"]


def test_upsert_replaces_and_bumps_version(http, unique_name):
    sym = unique_name("UP")
    expect_ok(register_kline(http, http.base, sym), 201)
    url = http.base + kline_path(sym) + "/records"
    records = make_klines(10)
    v1 = expect_ok(http.post(url, json={"records": records}, timeout=30))["version"]
    changed = dict(records[4], close=records[4]["close"] + 1, high=records[4]["high"] + 1)
    new = make_klines(1, start_ts=records[-1]["ts"] + MINUTE_MS, seed=99)[0]
    w = expect_ok(http.post(url, json={"records": [new, changed]}, timeout=30))
    assert (w["written"], w["inserted"], w["replaced"]) == (2, 1, 1)
    assert w["version"] > v1
    got = expect_ok(http.get(url, timeout=30))["records"]
    assert got == records[:4] + [changed] + records[5:] + [new]


def test_if_match_412_changes_nothing(http, unique_name):
    sym = unique_name("IFM")
    expect_ok(register_kline(http, http.base, sym), 201)
    url = http.base + kline_path(sym) + "/records"
    records = make_klines(4)
    version = expect_ok(http.post(url, json={"records": records[:2]}, timeout=30))["version"]

    stale = {"If-Match": f'"{version - 1}"'}
    r = http.post(url, json={"records": records[2:]}, headers=stale, timeout=30)
    check_error(r, 412, "precondition_failed")
    meta = expect_ok(http.get(http.base + kline_path(sym), timeout=30))
    assert meta["version"] == version and meta["rows"] == 2

    current = {"If-Match": f'"{version}"'}
    w = expect_ok(http.post(url, json={"records": records[2:]}, headers=current, timeout=30))
    assert w["version"] > version
    assert expect_ok(http.get(url, timeout=30))["records"] == records


def test_422_names_the_offending_index_and_writes_nothing(http, unique_name):
    sym = unique_name("BAD")
    expect_ok(register_kline(http, http.base, sym), 201)
    url = http.base + kline_path(sym) + "/records"
    records = make_klines(5)

    dup = records[:3] + [dict(records[1])]  # index 3 repeats the ts of index 1
    msg = check_error(http.post(url, json={"records": dup}, timeout=30), 422, "unprocessable")
    assert re.search(r"\b3\b", msg), f"message does not name index 3: {msg}"

    bad = [dict(r) for r in records]
    bad[2]["high"] = min(bad[2]["open"], bad[2]["close"]) - 1  # high below the body
    msg = check_error(http.post(url, json={"records": bad}, timeout=30), 422, "unprocessable")
    assert re.search(r"\b2\b", msg), f"message does not name index 2: {msg}"

    bad = [dict(r) for r in records]
    bad[4]["volume"] = -1
    msg = check_error(http.post(url, json={"records": bad}, timeout=30), 422, "unprocessable")
    assert re.search(r"\b4\b", msg), f"message does not name index 4: {msg}"

    # All-or-nothing: none of the rejected requests left a row behind.
    meta = expect_ok(http.get(http.base + kline_path(sym), timeout=30))
    assert meta["rows"] == 0
    assert expect_ok(http.get(url, timeout=30))["records"] == []


def test_400_for_malformed_requests(http, unique_name):
    base = http.base
    sym = unique_name("M")
    expect_ok(register_kline(http, base, sym), 201)
    url = base + kline_path(sym) + "/records"
    headers = {"Content-Type": "application/json"}
    check_error(http.post(url, data=b"{not json", headers=headers, timeout=30), 400,
                "invalid_argument")
    rec = make_klines(1)[0]
    check_error(http.post(url, json={"records": [dict(rec, open="1")]}, timeout=30), 400,
                "invalid_argument")
    check_error(http.post(url, json={"records": [dict(rec, extra=1)]}, timeout=30), 400,
                "invalid_argument")
    body = {"symbol": "bad sym!", "timeframe": "1m", "price_scale": 1, "volume_scale": 1}
    check_error(http.post(base + "/v1/kline/series", json=body, timeout=30), 400,
                "invalid_argument")
    body = {"symbol": sym + "x", "timeframe": "1m", "price_scale": 0, "volume_scale": 1}
    check_error(http.post(base + "/v1/kline/series", json=body, timeout=30), 400,
                "invalid_argument")
    check_error(http.get(url, params={"start_ts": "yesterday"}, timeout=30), 400,
                "invalid_argument")
    # An i64 scalar series refuses a fractional value (wrong type, not a rounding).
    expect_ok(register_scalar(http, base, sym, "signal", "side", "i64"), 201)
    surl = base + scalar_path(sym, "1m", "signal", "side") + "/records"
    check_error(http.post(surl, json={"records": [{"ts": rec["ts"], "value": 1.5}]},
                          timeout=30), 400, "invalid_argument")
    check_error(http.get(base + kline_path(sym) + "/latest", params={"n": -1}, timeout=30),
                400, "invalid_argument")
    # "1M" is a valid timeframe name but not a standard one: it needs timeframe_ms.
    body = {"symbol": sym, "timeframe": "1M", "price_scale": 1, "volume_scale": 1}
    check_error(http.post(base + "/v1/kline/series", json=body, timeout=30), 400,
                "invalid_argument")
    # Unknown routes get the contract's error body too.
    check_error(http.get(base + "/v1/nothing-here", timeout=30), 404, "not_found")


def test_404_for_unknown_series_and_after_delete(http, unique_name):
    sym = unique_name("GONE")
    check_error(http.get(http.base + kline_path(sym), timeout=30), 404, "not_found")
    check_error(http.get(http.base + kline_path(sym) + "/records", timeout=30), 404,
                "not_found")
    rec = make_klines(1)
    check_error(http.post(http.base + kline_path(sym) + "/records", json={"records": rec},
                          timeout=30), 404, "not_found")

    expect_ok(register_kline(http, http.base, sym), 201)
    expect_ok(http.post(http.base + kline_path(sym) + "/records", json={"records": rec},
                        timeout=30))
    r = http.delete(http.base + kline_path(sym), timeout=30)
    assert r.status_code in (200, 204), r.text
    check_error(http.get(http.base + kline_path(sym), timeout=30), 404, "not_found")
    inv = expect_ok(http.get(http.base + "/inventory", timeout=30))
    assert not any(s["symbol"] == sym for s in inv["series"])

    # The key is free again, with nothing left of the old series' data.
    info = expect_ok(register_kline(http, http.base, sym, price_scale=10), 201)
    assert info["rows"] == 0 and info["price_scale"] == 10
    url = http.base + kline_path(sym) + "/records"
    assert expect_ok(http.get(url, timeout=30))["records"] == []


def test_scalar_round_trip_and_predicate_query(http, unique_name):
    sym = unique_name("Q")
    expect_ok(register_scalar(http, http.base, sym, "signal", "cross", "i64"), 201)
    path = http.base + scalar_path(sym, "1m", "signal", "cross")
    values = make_scalars(2000, value_type="i64")
    w = expect_ok(http.post(path + "/records", json={"records": values}, timeout=30))
    assert w["written"] == 2000
    got, _ = read_all_pages(http, path + "/records", limit=600)
    assert got == values

    def query(pred, **extra):
        body = dict(extra, predicate=pred, return_values=True, limit=100_000)
        return expect_ok(http.post(path + "/query", json=body, timeout=30))

    res = query({"op": "eq", "value": -1})
    want = [v for v in values if v["value"] == -1]
    assert res["timestamps"] == [v["ts"] for v in want]
    assert res["values"] == [-1] * len(want)
    stats = res["stats"]
    assert stats["rows_matched"] == len(want)
    assert set(stats) >= {"chunks_total", "chunks_pruned", "blocks_total", "blocks_pruned",
                          "rows_checked", "rows_matched", "index_used"}

    lo, hi = values[500]["ts"], values[1499]["ts"]
    res = query({"op": "in", "values": [0, 1]}, start_ts=lo, end_ts=hi)
    assert res["timestamps"] == [v["ts"] for v in values[500:1500] if v["value"] in (0, 1)]
    res = query({"op": "between", "min": 0, "max": 1, "inclusive": False})
    assert res["timestamps"] == []
    res = query({"op": "ne", "value": 0})
    assert res["timestamps"] == [v["ts"] for v in values if v["value"] != 0]


def test_scalar_f64_values_exact(http, unique_name):
    sym = unique_name("F")
    expect_ok(register_scalar(http, http.base, sym, "feature", "ret_1", "f64"), 201)
    path = http.base + scalar_path(sym, "1m", "feature", "ret_1")
    values = make_scalars(300, value_type="f64")
    values[7]["value"] = -0.1
    values[8]["value"] = 1e-300
    expect_ok(http.post(path + "/records", json={"records": values}, timeout=30))
    got = expect_ok(http.get(path + "/records", timeout=30))["records"]
    assert got == values
    latest = expect_ok(http.get(path + "/latest", params={"n": 3}, timeout=30))["records"]
    assert latest == values[-3:]


def _post_oversize(url: str, size: int) -> tuple[int, bytes]:
    """POSTs a `size`-byte JSON body, stopping early if the server answers first.

    A server may reject on Content-Length alone and close the socket; a client that
    kept pushing the body would then see a reset instead of the 413.
    """
    record = json.dumps(make_klines(1)[0]).encode()
    n = size // (len(record) + 1) + 1
    body = b'{"records": [' + b",".join([record] * n) + b"]}"
    assert len(body) > size
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.putrequest("POST", u.path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    sock, view, sent = conn.sock, memoryview(body), 0
    try:
        readable, _, _ = select.select([sock], [], [], 2.0)
        while not readable and sent < len(body):
            readable, writable, _ = select.select([sock], [sock], [], 30.0)
            if readable:
                break
            if writable:
                sent += sock.send(view[sent:sent + 65536])
    except (BrokenPipeError, ConnectionResetError):
        pass
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_413_on_oversize_body(http, unique_name, server):
    sym = unique_name("BIG")
    expect_ok(register_kline(http, http.base, sym), 201)
    url = http.base + kline_path(sym) + "/records"
    status, data = _post_oversize(url, SESSION_MAX_BODY_BYTES + 512 * 1024)
    assert status == 413, data[:300]
    body = json.loads(data)
    assert body["error"]["code"] == "payload_too_large", body
    meta = expect_ok(http.get(http.base + kline_path(sym), timeout=30))
    assert meta["rows"] == 0
    server.assert_alive()


def test_401_when_a_token_is_configured(auth_server, unique_name):
    base = auth_server.http_url
    good = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    wrong = {"Authorization": f"Bearer {AUTH_TOKEN}x"}
    sym = unique_name("AUTH")
    with requests.Session() as s:
        # One connection per request: connection reuse after a rejection has its own
        # test below, so a failure there does not hide what this one checks.
        s.headers["Connection"] = "close"
        check_error(register_kline(s, base, sym), 401, "unauthorized")
        check_error(register_kline(s, base, sym, headers=wrong), 401, "unauthorized")
        check_error(register_kline(s, base, sym, headers={"Authorization": AUTH_TOKEN}), 401,
                    "unauthorized")
        expect_ok(register_kline(s, base, sym, headers=good), 201)

        url = base + kline_path(sym) + "/records"
        records = {"records": make_klines(3)}
        check_error(s.post(url, json=records, timeout=30), 401, "unauthorized")
        expect_ok(s.post(url, json=records, headers=good, timeout=30))
        check_error(s.delete(base + kline_path(sym), timeout=30), 401, "unauthorized")
        check_error(s.post(base + "/v1/admin/validate", json={}, timeout=30), 401,
                    "unauthorized")

        # Reads stay open unless auth.protect_reads is set.
        assert expect_ok(s.get(url, timeout=30))["records"] == records["records"]
        # These never need the token.
        for path in ("/health", "/metrics", "/openapi.json", "/docs"):
            assert s.get(base + path, timeout=30).status_code == 200, path
        expect_ok(s.post(base + "/v1/admin/validate", json={}, headers=good, timeout=30))


def _next_request_on_same_connection(conn: http.client.HTTPConnection, first) -> None:
    """After `first` (a response read in full), the connection must either be marked
    `Connection: close` or serve another request."""
    if (first.getheader("connection") or "").lower() == "close":
        return
    try:
        conn.request("GET", "/health")
        second = conn.getresponse()
        second.read()
    except (ConnectionError, http.client.HTTPException) as e:
        raise AssertionError(
            f"after a {first.status} the server closed the keep-alive connection without "
            f"`Connection: close`; the client's next request failed: {e!r}") from e
    assert second.status == 200


@pytest.mark.parametrize("case", ["401", "405", "unknown-route"])
def test_connection_survives_early_rejection(case, server, auth_server):
    """A rejection sent before the request body was read must not leave the client a
    dead keep-alive connection.

    The bug: 401, 405 and unknown-route responses went out before the body was read,
    and the server then closed the connection without saying `Connection: close`. With
    requests, the next POST on the pooled connection failed with "Remote end closed
    connection without response", now and then for small bodies, every time for large
    ones. The server now drains the body (or says `Connection: close`)."""
    target = auth_server if case == "401" else server
    method, path = {"401": ("POST", "/v1/kline/series"),
                    "405": ("PUT", "/v1/kline/series"),
                    "unknown-route": ("POST", "/v1/nothing-here")}[case]
    u = urlsplit(target.http_url)
    body = json.dumps({"symbol": "KA", "timeframe": "1m", "price_scale": 1,
                       "volume_scale": 1}) + " " * (256 * 1024)
    for _ in range(3):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            first = conn.getresponse()
            first.read()
            assert first.status == int(case) if case.isdigit() else first.status == 404
            _next_request_on_same_connection(conn, first)
        finally:
            conn.close()


def test_protect_reads(protected_reads_server, unique_name):
    base = protected_reads_server.http_url
    good = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    sym = unique_name("PR")
    with requests.Session() as s:
        expect_ok(register_kline(s, base, sym, headers=good), 201)
        check_error(s.get(base + kline_path(sym), timeout=30), 401, "unauthorized")
        check_error(s.get(base + "/v1/kline/series", timeout=30), 401, "unauthorized")
        expect_ok(s.get(base + kline_path(sym), headers=good, timeout=30))
        assert s.get(base + "/health", timeout=30).status_code == 200


def _metric_samples(text: str, name: str) -> list[tuple[str, float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            out.append((labels, float(value)))
    return out


def test_metrics_count_requests(http, unique_name):
    sym = unique_name("MET")
    expect_ok(register_kline(http, http.base, sym), 201)
    url = http.base + kline_path(sym) + "/records"
    expect_ok(http.post(url, json={"records": make_klines(50)}, timeout=30))
    for _ in range(3):
        expect_ok(http.get(url, timeout=30))
    r = http.get(http.base + "/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    text = r.text
    samples = _metric_samples(text, "fastk_http_requests_total")
    assert samples, text[:2000]
    # Routes are labelled by their template, not by the concrete symbol.
    assert not any(sym in labels for labels, _ in samples), samples
    total = sum(v for _, v in samples)
    assert total >= 5, samples
    reads = [v for labels, v in samples if 'method="GET"' in labels and "records" in labels]
    assert reads and max(reads) >= 3, samples
    written = _metric_samples(text, "fastk_rows_written_total")
    assert written and sum(v for _, v in written) >= 50, written
    assert "fastk_http_request_duration_seconds_bucket" in text


def test_inventory_and_health_fields(http, unique_name):
    sym = unique_name("INV")
    expect_ok(register_kline(http, http.base, sym), 201)
    records = make_klines(100, start_ts=JAN_31_2024_MS + 1430 * MINUTE_MS)  # crosses Feb 1
    expect_ok(http.post(http.base + kline_path(sym) + "/records", json={"records": records},
                        timeout=30))
    inv = expect_ok(http.get(http.base + "/inventory", timeout=30))
    mine = [s for s in inv["series"] if s["symbol"] == sym]
    assert len(mine) == 1, inv
    s = mine[0]
    assert s["kind"] == "kline" and s["timeframe"] == "1m"
    assert s["rows"] == 100
    assert s["first_ts"] == records[0]["ts"] and s["last_ts"] == records[-1]["ts"]
    assert s["version"] >= 1
    # A small write goes through the write-ahead log: its rows are readable at once and
    # counted in rows, and reach chunk files (bytes on disk) when the log is folded.
    assert s["bytes"] > 0 or s["unfolded_rows"] == 100, s
    assert s["raw_bytes"] >= s["bytes"]
    months = {p["month"]: p for p in s["partitions"]}
    assert set(months) == {"2024-01", "2024-02"}
    assert months["2024-01"]["rows"] == 10 and months["2024-02"]["rows"] == 90
    for p in s["partitions"]:
        assert p["chunks"] >= 1 and p["bytes"] > 0
        assert p["first_ts"] <= p["last_ts"]
    assert months["2024-02"]["first_ts"] == JAN_1_2024_MS + 31 * 1440 * MINUTE_MS
    assert sum(p["rows"] for p in s["partitions"]) == s["rows"]

    health = expect_ok(http.get(http.base + "/health", timeout=30))
    assert health["status"] == "ok", health
    assert isinstance(health["version"], str) and health["version"]
    assert health["series"] >= len(inv["series"]) >= 1
    assert health["uptime_s"] >= 0 and health["issues"] == 0


def test_limit_defaults_and_cap(start_server, unique_name):
    """`limit` defaults to http.default_limit and is capped by http.max_limit; a
    capped page says where the next one starts."""
    srv = start_server("limits", {"FASTK__HTTP__DEFAULT_LIMIT": "20",
                                  "FASTK__HTTP__MAX_LIMIT": "50"})
    sym = unique_name("LIM")
    records = make_klines(120)
    with requests.Session() as s:
        expect_ok(register_kline(s, srv.http_url, sym), 201)
        url = srv.http_url + kline_path(sym) + "/records"
        expect_ok(s.post(url, json={"records": records}, timeout=30))
        page = expect_ok(s.get(url, timeout=30))
        assert page["records"] == records[:20]
        assert page["next_start_ts"] is not None
        page = expect_ok(s.get(url, params={"limit": 1_000_000}, timeout=30))
        assert page["records"] == records[:50]
        got, pages = read_all_pages(s, url, limit=1_000_000, page_rows=50)
        assert got == records and pages == 3
