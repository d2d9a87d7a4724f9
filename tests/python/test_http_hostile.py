"""Hostile HTTP clients against the real binary: unauthenticated uploads that stream
large bodies, and slowloris connections that fill the connection cap.

Raw sockets, so the test decides which bytes are sent and when. Timeouts here only stop
a hung run; nothing asserts how fast the server was. `FASTK_TEST_LONG=1` runs the
larger counts of the original report.
"""

from __future__ import annotations

import os
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

from fastk_testlib import AUTH_TOKEN

LONG = os.environ.get("FASTK_TEST_LONG") == "1"
# Upper bound for any one wait; it only stops a hung run.
BOUND_S = 60.0
MIB = 1024 * 1024


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def _addr(server) -> tuple[str, int]:
    u = urlsplit(server.http_url)
    return u.hostname, u.port


def _push(sock: socket.socket, data: memoryview) -> int:
    """Sends as much of `data` as the socket takes without blocking; returns bytes sent."""
    sent = 0
    sock.setblocking(False)
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + 65536])
    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
        pass
    return sent


def _status_of(sock: socket.socket) -> int | None:
    """Waits for a response head on `sock`; its status, or None if none came."""
    deadline = time.monotonic() + BOUND_S
    buf = b""
    while b"\r\n" not in buf and time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 1.0)
        if not readable:
            continue
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    if not buf.startswith(b"HTTP/1.1 "):
        return None
    return int(buf.split(b" ", 2)[1])


def test_unauthenticated_uploads_get_401_without_the_body_being_read(start_server):
    """The story: with a token set, a POST without one that streamed a large body got
    its 401 only after about 8 MiB had arrived, because the server drained unread bodies
    to keep connections reusable; 250 such connections held 2 GB, and the memory stayed
    after they closed. Here each client declares 32 MiB, pushes what the socket takes
    (a couple of MiB) and then waits: before the fix the server read on and never
    answered; now each gets its 401 on the request head, and the server's memory grows
    by much less than the bytes pushed at it and is back near its start afterwards."""
    server = start_server("hostile-upload", {"FASTK__AUTH__TOKEN": AUTH_TOKEN})
    pid = server.proc.pid
    requests.get(server.http_url + "/health", timeout=BOUND_S).raise_for_status()
    before = _rss_bytes(pid)
    n = 250 if LONG else 100
    declared = 32 * MIB
    head = (f"POST /v1/kline/series HTTP/1.1\r\nHost: fastk\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n").encode()
    body = memoryview(b"[" + b" " * (2 * MIB))
    socks, pushed, statuses = [], 0, []
    try:
        for _ in range(n):
            s = socket.create_connection(_addr(server), timeout=BOUND_S)
            s.sendall(head)
            pushed += _push(s, body)
            socks.append(s)
        for s in socks:
            s.setblocking(True)
            statuses.append(_status_of(s))
        during = _rss_bytes(pid)
    finally:
        for s in socks:
            s.close()
    assert statuses == [401] * n, f"statuses other than 401: {set(statuses)}"
    grown = during - before
    print(f"{n} uploads: {pushed / MIB:.1f} MiB pushed, RSS {before / MIB:.1f} MiB before, "
          f"{during / MIB:.1f} MiB with the connections open")
    assert pushed > 20 * MIB, f"only {pushed} bytes pushed: the test did not load the server"
    assert grown < pushed / 4, (
        f"server RSS grew by {grown / MIB:.1f} MiB while {pushed / MIB:.1f} MiB were "
        f"pushed at it: it read the unauthenticated bodies")
    # Memory is handed back once the connections are gone.
    deadline = time.monotonic() + BOUND_S
    after = _rss_bytes(pid)
    while after - before > 16 * MIB and time.monotonic() < deadline:
        requests.get(server.http_url + "/health", timeout=BOUND_S)
        time.sleep(0.2)
        after = _rss_bytes(pid)
    assert after - before <= 16 * MIB, (
        f"RSS {before / MIB:.1f} MiB before, {after / MIB:.1f} MiB after the clients left")
    server.assert_alive()


def test_health_answers_with_the_connection_cap_full_of_slowloris(start_server):
    """The story: partial request heads were held forever; 19,990 of them used every
    file descriptor, and /health, writes and DoGet all timed out. Now at most
    http.max_connections are held, the longest-idle one gives way to a new client, and
    each is closed after http.header_read_timeout_s."""
    cap = 64 if LONG else 16
    server = start_server("hostile-loris", {
        "FASTK__HTTP__MAX_CONNECTIONS": str(cap),
        "FASTK__HTTP__HEADER_READ_TIMEOUT_S": "2",
    })
    socks = []
    try:
        for _ in range(2 * cap):
            s = socket.create_connection(_addr(server), timeout=BOUND_S)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: fa")
            socks.append(s)
        r = requests.get(server.http_url + "/health", timeout=BOUND_S)
        assert r.status_code == 200, r.text
        # Every slowloris connection is closed by the server: displaced at the cap,
        # or cut off at the header timeout.
        for s in socks:
            s.settimeout(BOUND_S)
            try:
                rest = s.recv(4096)
            except ConnectionResetError:
                rest = b""
            assert rest == b"" or rest.startswith(b"HTTP/1.1 408"), rest[:200]
    finally:
        for s in socks:
            s.close()
    server.assert_alive()
