"""Co-located reads (`local-read`, docs/flight.md): a client on the server's Unix socket
maps the raw chunk files itself (clients/python/fastk_local.py), compressed months
through the raw copies the server keeps in `<root>/local/`, and fetches only the rows
it cannot map (rows still in the write-ahead log, months whose copy does not fit)
through DoGet. Whatever the mix, the table must equal DoGet's, schema and metadata included,
f64 bits included; TCP clients are refused; a plan whose file was unlinked before
the client opened it is asked again.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from fastk_testlib import JAN_1_2024_MS, MINUTE_MS, expect_ok, register_kline, register_scalar

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
import fastk_local  # noqa: E402

YEAR_ROWS = 366 * 1440  # 2024, a leap year, of 1m bars
TS = pa.timestamp("ms", tz="UTC")


def local_server(start_server, name: str, env: dict[str, str]):
    """A server with a Unix socket of its own: (server, Unix client, TCP client)."""
    path = os.path.join(tempfile.mkdtemp(prefix="fk"), "flight.sock")
    srv = start_server(name, {"FASTK__FLIGHT__UNIX_SOCKET": path,
                              "FASTK__STORAGE__LOW_DISK_BYTES": "0", **env})
    return srv, fastk_local.connect(path), flight.connect(srv.flight_uri)


@pytest.fixture(scope="module")
def local(start_server):
    # Sealed months stay raw as written, so the pack files of a bulk load are mapped
    # themselves (compressed months are mapped through their raw copies, tested below).
    srv, unix, tcp = local_server(start_server, "local",
                                  {"FASTK__STORAGE__COMPRESS_ON_WRITE": "false"})
    yield srv, unix, tcp
    unix.close()
    tcp.close()


def klines(n: int, start_ts: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    close = 4_200_000 + np.cumsum(rng.integers(-500, 501, n))
    open_ = np.concatenate([[4_200_000], close[:-1]])
    high = np.maximum(open_, close) + rng.integers(0, 300, n)
    low = np.minimum(open_, close) - rng.integers(0, 300, n)
    return pa.table({
        "ts": pa.array(start_ts + np.arange(n, dtype=np.int64) * MINUTE_MS, TS),
        "open": open_, "high": high, "low": low, "close": close,
        "volume": rng.integers(0, 10_000_000, n),
    })


def put(client, path: list[str], table: pa.Table) -> None:
    desc = flight.FlightDescriptor.for_path(*path)
    writer, reader = client.do_put(desc, table.schema)
    writer.write_table(table, max_chunksize=65_536)
    writer.done_writing()
    reader.read()
    writer.close()


def doget(client, ticket: dict) -> pa.Table:
    return client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()


def same(got: pa.Table, want: pa.Table) -> None:
    """Equal schemas (metadata too) and bit-equal values (f64 NaN payloads too)."""
    assert got.schema.equals(want.schema, check_metadata=True), (got.schema, want.schema)
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        g, w = got.column(name), want.column(name)
        if pa.types.is_floating(w.type):
            g = pa.chunked_array([c.view(pa.int64()) for c in g.chunks], pa.int64())
            w = pa.chunked_array([c.view(pa.int64()) for c in w.chunks], pa.int64())
        assert g.equals(w), name


def kinds(client, ticket: dict) -> list[str]:
    plan, _ = fastk_local.plan(client, ticket)
    return [p["type"] for p in plan["parts"]]


def test_a_year_of_raw_files_is_mapped_without_a_copy(local):
    srv, unix, tcp = local
    with requests.Session() as s:
        expect_ok(register_kline(s, srv.http_url, "LOCA"), 201)
    put(tcp, ["kline", "LOCA", "1m"], klines(YEAR_ROWS, JAN_1_2024_MS, seed=1))
    base = {"kind": "kline", "symbol": "LOCA", "timeframe": "1m"}
    feb_15, apr_10 = JAN_1_2024_MS + 45 * 86_400_000 + 7 * MINUTE_MS, \
        JAN_1_2024_MS + 100 * 86_400_000 + 3 * MINUTE_MS
    for ticket in (
        base,
        {**base, "start_ts": feb_15, "end_ts": apr_10},
        {**base, "start_ts": feb_15, "end_ts": apr_10, "columns": ["close", "volume"]},
        {**base, "latest": 50_000},
        {**base, "as_of": feb_15},
        {**base, "start_ts": 0, "end_ts": 1000},
    ):
        want = doget(unix, ticket)
        before = pa.total_allocated_bytes()
        got = fastk_local.read_table(unix, ticket)
        # The columns are the mapped files themselves: nothing of the table's size
        # was allocated by Arrow (a copy would have been, 25 MB for the year).
        assert pa.total_allocated_bytes() - before < 1 << 20, ticket
        same(got, want)
        assert set(kinds(unix, ticket)) <= {"file"}, ticket
    plan, _ = fastk_local.plan(unix, base)
    assert plan["rows"] == YEAR_ROWS and len(plan["parts"]) == 12
    assert plan["columns"] == ["ts", "open", "high", "low", "close", "volume"]
    # The year came in one write, so its months were written into one pack file:
    # every part maps the pack, at its month's image.
    part = plan["parts"][1]
    assert os.path.isabs(part["path"]) and part["path"].endswith(".pack")
    assert {p["path"] for p in plan["parts"]} == {part["path"]}
    assert part["image_offset"] > 0 and part["file_len"] == os.path.getsize(part["path"])
    with open(part["path"], "rb") as f:
        f.seek(part["image_offset"] + 96)
        assert int.from_bytes(f.read(8), "little") == part["checksum"]
    # ts of the first selected row of the cut range is at the planned offset.
    cut, _ = fastk_local.plan(unix, {**base, "start_ts": feb_15, "end_ts": apr_10})
    with open(cut["parts"][0]["path"], "rb") as f:
        f.seek(cut["parts"][0]["offsets"][0])
        assert int.from_bytes(f.read(8), "little") == feb_15
    df = fastk_local.read_polars(unix, base)
    assert df.height == YEAR_ROWS and df.schema["ts"] == pl.Datetime("ms", "UTC")
    assert df["ts"].n_chunks() == 12, "rechunk=False keeps the mapped chunks"
    assert df.equals(pl.from_arrow(doget(unix, base)))


def test_compressed_months_and_logged_rows_come_through_doget(local):
    srv, unix, tcp = local
    with requests.Session() as s:
        expect_ok(register_kline(s, srv.http_url, "LOCB"), 201)
        put(tcp, ["kline", "LOCB", "1m"], klines(3 * 31 * 1440, JAN_1_2024_MS, seed=2))
        report = json.loads(next(iter(tcp.do_action(flight.Action(
            "compact", json.dumps({"series": {"symbol": "LOCB"}}).encode())))).body.to_pybytes())
        assert report is not None
        # A raw delta after the compressed months (a direct write of 10,000 rows), then
        # rows that stay in the log's memory (a small write, not yet folded).
        last = doget(unix, {"kind": "kline", "symbol": "LOCB", "timeframe": "1m",
                            "latest": 1})["ts"][0].value
        put(tcp, ["kline", "LOCB", "1m"], klines(10_000, last + MINUTE_MS, seed=3))
        last += 10_000 * MINUTE_MS
        small = klines(100, last + MINUTE_MS, seed=4).to_pylist()
        recs = [{**r, "ts": int(r["ts"].timestamp() * 1000)} for r in small]
        expect_ok(s.post(srv.http_url + "/v1/kline/LOCB/1m/records", json={"records": recs},
                         timeout=30), 200)
    base = {"kind": "kline", "symbol": "LOCB", "timeframe": "1m"}
    # The compressed months (January to the first days of April) are mapped from
    # their raw copies, the raw delta from its own file; the logged rows come by DoGet.
    plan, _ = fastk_local.plan(unix, base)
    local_dir = (srv.root / "local").resolve()
    copies = [p for p in plan["parts"]
              if p["type"] == "file" and Path(p["path"]).parent.resolve() == local_dir]
    assert kinds(unix, base) == ["file"] * (len(copies) + 1) + ["rows"]
    assert len(copies) == 4 and sum(p["rows"] for p in copies) == 3 * 31 * 1440
    for ticket in (base, {**base, "columns": ["open"]}, {**base, "latest": 10_050},
                   {**base, "start_ts": JAN_1_2024_MS + 40 * 86_400_000}):
        before = pa.total_allocated_bytes()
        got = fastk_local.read_table(unix, ticket)
        # Only the logged rows (and DoGet's small batches) were allocated: the months
        # are the mapped copies (a copy would be 14 MB for the three months).
        assert pa.total_allocated_bytes() - before < 1 << 20, ticket
        same(got, doget(unix, ticket))
    metrics = requests.get(srv.http_url + "/metrics", timeout=10).text
    held = [int(line.split()[1]) for line in metrics.splitlines()
            if line.startswith("fastk_local_copy_bytes ")]
    assert held == [sum(p["file_len"] for p in copies)], held


def test_without_room_for_copies_compressed_months_come_through_doget(start_server):
    """`storage.local_copy_bytes = 0`: no copy is made, the months are a rows part."""
    srv, unix, tcp = local_server(start_server, "nocopy",
                                  {"FASTK__STORAGE__LOCAL_COPY_BYTES": "0"})
    try:
        with requests.Session() as s:
            expect_ok(register_kline(s, srv.http_url, "LOCN"), 201)
        # Sealed months of one write are written compressed (and packed).
        put(tcp, ["kline", "LOCN", "1m"], klines(2 * 31 * 1440, JAN_1_2024_MS, seed=6))
        base = {"kind": "kline", "symbol": "LOCN", "timeframe": "1m"}
        assert kinds(unix, base) == ["rows"]
        same(fastk_local.read_table(unix, base), doget(unix, base))
        assert not (srv.root / "local").exists()
    finally:
        unix.close()
        tcp.close()


@pytest.mark.parametrize("value_type", ["f64", "i64"])
def test_scalar_series(local, value_type):
    srv, unix, tcp = local
    sym = "LOCS" + value_type.upper()
    with requests.Session() as s:
        expect_ok(register_scalar(s, srv.http_url, sym, "sig", "x", value_type=value_type), 201)
    n = 70_000
    rng = np.random.default_rng(5)
    if value_type == "f64":
        values = rng.normal(size=n)
        values[::1000] = np.nan
        values[1::1000] = np.inf
        values = pa.array(values, pa.float64())
    else:
        values = pa.array(rng.integers(-(1 << 62), 1 << 62, n), pa.int64())
    table = pa.table({"ts": pa.array(JAN_1_2024_MS + np.arange(n) * MINUTE_MS, TS),
                      "value": values})
    put(tcp, ["scalar", sym, "1m", "sig", "x"], table)
    base = {"kind": "scalar", "symbol": sym, "timeframe": "1m", "category": "sig", "name": "x"}
    for ticket in (base, {**base, "start_ts": JAN_1_2024_MS + 12_345 * MINUTE_MS,
                          "end_ts": JAN_1_2024_MS + 50_000 * MINUTE_MS}):
        same(fastk_local.read_table(unix, ticket), doget(unix, ticket))
        assert set(kinds(unix, ticket)) == {"file"}


def test_tcp_and_what_cannot_be_mapped_are_refused(local):
    srv, unix, tcp = local
    ticket = {"kind": "kline", "symbol": "LOCA", "timeframe": "1m"}
    # pyarrow raises gRPC's FAILED_PRECONDITION as ArrowInvalid, naming the code.
    with pytest.raises(pa.ArrowInvalid, match="precondition failed.*Unix socket"):
        fastk_local.plan(tcp, ticket)
    for extra, field in (
        ({"resample": {"timeframe": "1h"}}, "resample"),
        ({"price_format": "float64"}, "price_format"),
    ):
        with pytest.raises(pa.ArrowInvalid, match=field):
            fastk_local.plan(unix, {**ticket, **extra})
    with pytest.raises(pa.ArrowInvalid, match="symbols"):
        fastk_local.plan(unix, {"kind": "kline", "symbols": "*", "timeframe": "1m"})
    scalar = {"kind": "scalar", "symbol": "LOCSF64", "timeframe": "1m", "category": "sig",
              "name": "x"}
    with pytest.raises(pa.ArrowInvalid, match="predicate"):
        fastk_local.plan(unix, {**scalar, "predicate": {"op": "gt", "value": 1}})
    with pytest.raises(pa.ArrowException, match="(?i)not found|not registered"):
        fastk_local.plan(unix, {**ticket, "symbol": "NOPE"})


def test_a_file_unlinked_after_the_plan_is_planned_again(local, monkeypatch):
    srv, unix, tcp = local
    with requests.Session() as s:
        expect_ok(register_kline(s, srv.http_url, "LOCR"), 201)
    # January and February in two writes: a chunk file each (one write of both
    # months would pack them, and the pack outlives a rewrite of one month).
    rows = klines(2 * 29 * 1440, JAN_1_2024_MS, seed=6)
    put(tcp, ["kline", "LOCR", "1m"], rows.slice(0, 31 * 1440))
    put(tcp, ["kline", "LOCR", "1m"], rows.slice(31 * 1440))
    ticket = {"kind": "kline", "symbol": "LOCR", "timeframe": "1m"}
    held = fastk_local.read_table(unix, ticket)
    held_want = doget(unix, ticket)
    stale = fastk_local.plan(unix, ticket)
    # Rewrite January (a direct write replacing its first 10,000 bars): its chunk file
    # is replaced by a new generation and the old one unlinked.
    put(tcp, ["kline", "LOCR", "1m"], klines(10_000, JAN_1_2024_MS, seed=7))
    old = stale[0]["parts"][0]["path"]
    deadline = time.monotonic() + 10
    while os.path.exists(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(old)
    # A table already mapped still reads its rows after the unlink.
    same(held, held_want)

    real = fastk_local.plan
    calls = []

    def plan_stale_first(client, t, options=None):
        calls.append(t)
        return stale if len(calls) == 1 else real(client, t, options)

    monkeypatch.setattr(fastk_local, "plan", plan_stale_first)
    got = fastk_local.read_table(unix, ticket)
    assert len(calls) == 2, "the stale plan was asked again"
    want = doget(unix, ticket)
    same(got, want)
    assert not got.column("close").equals(held_want.column("close"))
    with pytest.raises(fastk_local.PlanChanged):
        calls.clear()
        monkeypatch.setattr(fastk_local, "plan", lambda c, t, options=None: stale)
        fastk_local.read_table(unix, ticket, retries=2)
