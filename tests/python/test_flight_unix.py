"""Flight on a Unix domain socket (`flight.unix_socket`), as a backtest on the same
host reaches it: pyarrow.flight over `grpc+unix://` reads exactly what TCP reads,
many-series tickets and actions included, and the ADBC Flight SQL driver queries over
it; a stale socket file left by a killed server is replaced at start; a clean stop
removes the socket.

gRPC's C++ core (pyarrow) sends the percent-encoded socket path as the HTTP/2
`:authority`, which the server's HTTP/2 layer refuses as malformed (PROTOCOL_ERROR);
pyarrow clients pass `grpc.default_authority` (docs/flight.md). grpc-go (the ADBC
driver) sends `localhost` and needs nothing.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile

import pyarrow.flight as flight
import requests

from conftest import stop_cleanly
from fastk_testlib import expect_ok, kline_path, make_klines, register_kline


def test_flight_over_a_unix_socket_reads_what_tcp_reads(start_server):
    # AF_UNIX paths are short (108 bytes): keep the socket under a short directory.
    sock_dir = tempfile.mkdtemp(prefix="fk")
    path = os.path.join(sock_dir, "flight.sock")
    # A stale socket file, as a SIGKILLed server leaves it: bound, never unlinked.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    assert os.path.exists(path)

    srv = start_server("unix", {"FASTK__FLIGHT__UNIX_SOCKET": path})
    assert f"flight listening on unix socket {path}" in srv.log_text()
    s = requests.Session()
    for sym in ("AAA", "BBB"):
        expect_ok(register_kline(s, srv.http_url, sym), 201)
        expect_ok(s.post(srv.http_url + kline_path(sym) + "/records",
                         json={"records": make_klines(3000, seed=len(sym) + ord(sym[0]))},
                         timeout=30), 200)

    tcp = flight.connect(srv.flight_uri)
    unix = flight.connect(f"grpc+unix://{path}",
                          generic_options=[("grpc.default_authority", "localhost")])
    for cmd in (
        {"kind": "kline", "symbol": "AAA", "timeframe": "1m"},
        {"kind": "kline", "symbols": "*", "timeframe": "1m", "latest": 5},
        {"kind": "kline", "symbol": "BBB", "timeframe": "1m", "resample": {"timeframe": "1h"}},
    ):
        ticket = flight.Ticket(json.dumps(cmd).encode())
        want = tcp.do_get(ticket).read_all()
        got = unix.do_get(ticket).read_all()
        assert got.num_rows > 0
        assert got.equals(want), cmd
    health = json.loads(next(iter(unix.do_action(flight.Action("health", b"")))).body.to_pybytes())
    assert health["series"] == 2
    unix.close()
    tcp.close()

    import adbc_driver_flightsql.dbapi as adbc
    with adbc.connect(f"grpc+unix://{path}", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT symbol, count(*) AS n FROM kline GROUP BY symbol ORDER BY symbol")
        assert cur.fetchall() == [("AAA", 3000), ("BBB", 3000)]

    stop_cleanly(srv)
    assert not os.path.exists(path), "a clean stop removes the socket file"
    os.rmdir(sock_dir)
