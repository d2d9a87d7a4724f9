"""Fixtures for the Python suite: real `fastk` processes on free ports.

Every test here talks to the real debug binary (`target/debug/fastk`, built by
`scripts/test.sh` before pytest runs) over real sockets, with a fresh data root per
server. A server is started with port 0 for both listeners; the addresses it actually
bound are read from the lines it logs (`http listening on ...`, `flight listening on
...`). On teardown each server gets SIGTERM and must exit cleanly (status 0, no panic).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from fastk_testlib import AUTH_TOKEN, REPO_ROOT, SESSION_MAX_BODY_BYTES

BINARY = Path(os.environ.get("FASTK_BIN", REPO_ROOT / "target" / "debug" / "fastk"))

# Upper bounds for a server to come up or go down. They only stop a hung run; no
# test asserts on how long anything took.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0

_HTTP_RE = re.compile(r"\bhttp listening on (\d+\.\d+\.\d+\.\d+:\d+)")
_FLIGHT_RE = re.compile(r"\bflight listening on (\d+\.\d+\.\d+\.\d+:\d+)")


class FastkServer:
    """One `fastk serve` process with its own data root and log file."""

    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None):
        self.workdir = workdir
        self.root = workdir / "data"
        self.log_path = workdir / "fastk.log"
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen | None = None
        self.http_addr: str | None = None
        self.flight_addr: str | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.http_addr}"

    @property
    def flight_uri(self) -> str:
        return f"grpc://{self.flight_addr}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def start(self) -> None:
        if not BINARY.exists():
            pytest.fail(
                f"{BINARY} does not exist: build it first with `cargo build` "
                "(scripts/test.sh does this before running pytest)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASTK__")}
        # RUST_LOG would override the configured level and could hide the
        # "listening on" lines this fixture waits for.
        env.pop("RUST_LOG", None)
        env.update(
            {
                "FASTK__STORAGE__ROOT": str(self.root),
                "FASTK__HTTP__ADDR": "127.0.0.1:0",
                "FASTK__FLIGHT__ADDR": "127.0.0.1:0",
                "FASTK__LOG__LEVEL": "info",
            }
        )
        env.update(self.extra_env)
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [str(BINARY), "serve"],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self._wait_for_addresses()
        self._wait_for_health()

    def _wait_for_addresses(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.log_text()
            http = _HTTP_RE.search(text)
            flight = _FLIGHT_RE.search(text)
            if http and flight:
                self.http_addr, self.flight_addr = http.group(1), flight.group(1)
                return
            if self.proc.poll() is not None:
                pytest.fail(
                    f"fastk exited with status {self.proc.returncode} before it "
                    f"logged both listeners:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"fastk did not log both listening addresses:\n{self.log_tail()}")

    def _wait_for_health(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            try:
                r = self._get_health()
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:  # not accepting yet
                last = repr(e)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"/health never answered 200 (last: {last}):\n{self.log_tail()}")

    def _get_health(self) -> requests.Response:
        """One GET /health for the start-up wait (a TLS server overrides it)."""
        return requests.get(f"{self.http_url}/health", timeout=5)

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit status (kills on timeout)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"fastk did not stop within {STOP_TIMEOUT_S}s of SIGTERM")
        return -1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"fastk died (status {self.proc.returncode}):\n{self.log_tail()}"
        )


def stop_cleanly(server: FastkServer) -> None:
    """Stops `server` and asserts a graceful exit with no panic in its log."""
    alive = server.proc is not None and server.proc.poll() is None
    status = server.stop()
    log = server.log_text()
    assert alive, f"fastk had already exited (status {status}):\n{server.log_tail()}"
    assert status == 0, f"fastk exited with {status} after SIGTERM:\n{server.log_tail()}"
    assert "panicked" not in log, f"fastk panicked:\n{server.log_tail(80)}"


@pytest.fixture(scope="session")
def start_server(tmp_path_factory) -> Iterator[Callable[..., FastkServer]]:
    """Factory: `start_server(name, **env)` starts another server with its own root.

    Every server it started is stopped (and checked for a clean exit) at the end of
    the session, unless the test stopped it itself with `stop_cleanly`.
    """
    started: list[FastkServer] = []

    def start(name: str = "extra", env: dict[str, str] | None = None) -> FastkServer:
        server = FastkServer(tmp_path_factory.mktemp(name), env)
        started.append(server)
        server.start()
        return server

    yield start
    failures = []
    for server in started:
        if server.proc is None or server.proc.returncode is not None:
            continue
        try:
            stop_cleanly(server)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n\n".join(failures)


@pytest.fixture(scope="session")
def server(start_server) -> FastkServer:
    """The shared server for most tests: fresh data root, ports 0, 2 MiB body limit.

    The low-disk threshold is off so that /health says "ok" on a nearly full test
    machine too (the tests check health's fields, not the machine's disk).
    """
    return start_server(
        "main",
        {
            "FASTK__HTTP__MAX_BODY_BYTES": str(SESSION_MAX_BODY_BYTES),
            "FASTK__STORAGE__LOW_DISK_BYTES": "0",
        },
    )


@pytest.fixture(scope="session")
def auth_server(start_server) -> FastkServer:
    """A server with a bearer token configured (reads stay open)."""
    return start_server("auth", {"FASTK__AUTH__TOKEN": AUTH_TOKEN})


@pytest.fixture(scope="session")
def protected_reads_server(start_server) -> FastkServer:
    """A server with a bearer token that also protects reads."""
    return start_server(
        "authreads",
        {"FASTK__AUTH__TOKEN": AUTH_TOKEN, "FASTK__AUTH__PROTECT_READS": "true"},
    )


@pytest.fixture
def unique_name(request) -> Callable[[str], str]:
    """Makes series names no other test uses: `unique_name("BTC")` -> `BTC-1a2b3c4d5e6f`."""

    def make(prefix: str = "S") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name), name
        return name

    return make


@pytest.fixture
def http(server) -> Iterator[requests.Session]:
    """A requests session; `http.base` is the shared server's base URL."""
    with requests.Session() as s:
        s.base = server.http_url
        yield s
