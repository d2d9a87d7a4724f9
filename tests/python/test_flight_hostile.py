"""Flight against clients that give up half-way, as pyarrow and raw gRPC clients do.

Story: tonic reported a client's RST_STREAM(CANCEL) to the DoPut handler as a normal
end of the stream, so a pyarrow DoPut whose call timed out, or a gRPC client that
cancelled after five batches, got every row it had sent committed. Only a stream the
client ended normally may be written; these tests check that nothing else is.
"""

from __future__ import annotations

import struct
import threading
import time

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
import requests

from fastk_testlib import MINUTE_MS, expect_ok, kline_path, register_kline

TS_TYPE = pa.timestamp("ms", tz="UTC")
DO_PUT = "/arrow.flight.protocol.FlightService/DoPut"
BATCH_ROWS = 10_000


def klines(n: int, start_ts: int = 1_704_067_200_000) -> pa.Table:
    i = pa.array(range(n), type=pa.int64())
    ts = pc.add(pc.multiply(i, MINUTE_MS), start_ts).cast(TS_TYPE)
    open_ = pc.add(pc.bit_wise_and(i, 1023), 1_000_000)
    close = pc.add(open_, 3)
    high = pc.add(close, 2)
    low = pc.subtract(open_, 2)
    volume = pc.multiply(pc.bit_wise_and(i, 4095), 13)
    fields = [pa.field("ts", TS_TYPE, nullable=False)]
    fields += [pa.field(c, pa.int64(), nullable=False)
               for c in ["open", "high", "low", "close", "volume"]]
    return pa.Table.from_arrays([ts, open_, high, low, close, volume], schema=pa.schema(fields))


def series_rows(server, sym: str) -> tuple[int, int]:
    info = expect_ok(requests.get(server.http_url + kline_path(sym), timeout=30))
    return info["rows"], info["version"]


def flight_code_count(server, method: str, code: str) -> int:
    text = requests.get(server.http_url + "/metrics", timeout=30).text
    key = f'fastk_flight_requests_total{{method="{method}",code="{code}"}} '
    for line in text.splitlines():
        if line.startswith(key):
            return int(float(line[len(key):]))
    return 0


def wait_for(pred, what: str, bound_s: float = 60.0) -> None:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_pyarrow_put_that_times_out_writes_nothing(server, unique_name):
    sym = unique_name("TMO")
    with requests.Session() as s:
        expect_ok(register_kline(s, server.http_url, sym), 201)
    before = flight_code_count(server, "DoPut", "Cancelled")
    client = flight.connect(server.flight_uri)
    desc = flight.FlightDescriptor.for_path("kline", sym, "1m")
    options = flight.FlightCallOptions(timeout=1.0)
    table = klines(5 * BATCH_ROWS)
    writer, reader = client.do_put(desc, table.schema, options=options)
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        writer.write_batch(batch)
    # Stall past the deadline without ending the stream.
    time.sleep(2.0)
    with pytest.raises((flight.FlightError, pa.ArrowException)):
        writer.done_writing()
        reader.read()
    try:
        writer.close()
    except (flight.FlightError, pa.ArrowException):
        pass
    client.close()
    # The handler ends (DeadlineExceeded from the server's grpc-timeout, or Cancelled
    # from the client's reset) before anything is checked.
    wait_for(lambda: flight_code_count(server, "DoPut", "Cancelled") > before
             or flight_code_count(server, "DoPut", "DeadlineExceeded") > 0,
             "the DoPut to end")
    assert series_rows(server, sym) == (0, 0)
    # The same rows, ended normally, are the series' first write: version 1. (A write
    # the timed-out call had started would still be landing now and show as version 2.)
    client = flight.connect(server.flight_uri)
    writer, reader = client.do_put(desc, table.schema)
    writer.write_table(table, max_chunksize=BATCH_ROWS)
    writer.done_writing()
    reader.read()
    writer.close()
    client.close()
    assert series_rows(server, sym) == (5 * BATCH_ROWS, 1)


def _flight_data(descriptor_path: list[str] | None, message: pa.Buffer) -> bytes:
    """A FlightData protobuf from one encapsulated IPC message."""
    raw = message.to_pybytes()
    assert raw[:4] == b"\xff\xff\xff\xff"
    (meta_len,) = struct.unpack("<i", raw[4:8])
    header, body = raw[8:8 + meta_len], raw[8 + meta_len:]
    out = b""
    if descriptor_path is not None:
        desc = _field_varint(1, 1)  # type = PATH
        for p in descriptor_path:
            desc += _field_bytes(3, p.encode())
        out += _field_bytes(1, desc)
    out += _field_bytes(2, header)
    if body:
        out += _field_bytes(1000, body)
    return out


def _varint(v: int) -> bytes:
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def _field_varint(field: int, v: int) -> bytes:
    return _varint(field << 3) + _varint(v)


def _field_bytes(field: int, b: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(b)) + b


def test_raw_grpc_put_cancelled_mid_stream_writes_nothing(server, unique_name):
    sym = unique_name("CXL")
    with requests.Session() as s:
        expect_ok(register_kline(s, server.http_url, sym), 201)
    table = klines(5 * BATCH_ROWS)
    messages = [_flight_data(["kline", sym, "1m"], table.schema.serialize())]
    messages += [_flight_data(None, b.serialize())
                 for b in table.to_batches(max_chunksize=BATCH_ROWS)]
    assert len(messages) == 6
    sent = threading.Event()
    release = threading.Event()

    def requests_then_stall():
        yield from messages
        sent.set()
        release.wait(60)  # never half-close while the test runs

    before = flight_code_count(server, "DoPut", "Cancelled")
    host = server.flight_uri.removeprefix("grpc://")
    with grpc.insecure_channel(host) as channel:
        call = channel.stream_stream(DO_PUT)(requests_then_stall())
        assert sent.wait(30)
        time.sleep(0.5)  # let the server take in the last batch
        call.cancel()
        release.set()
        with pytest.raises(grpc.RpcError) as e:
            list(call)
        assert e.value.code() == grpc.StatusCode.CANCELLED
    wait_for(lambda: flight_code_count(server, "DoPut", "Cancelled") > before,
             "the cancelled DoPut to end")
    assert series_rows(server, sym) == (0, 0)

    # The same messages, ended normally, are the series' first write: version 1. (A
    # commit the cancelled call had started may land after the check above; it would
    # show here as version 2.)
    def requests_then_end():
        yield from messages

    with grpc.insecure_channel(host) as channel:
        replies = list(channel.stream_stream(DO_PUT)(requests_then_end()))
    assert len(replies) == 1
    assert series_rows(server, sym) == (5 * BATCH_ROWS, 1)
