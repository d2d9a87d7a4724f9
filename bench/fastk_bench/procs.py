"""The servers this harness owns: started on loopback, stopped by their own pid.

Every process is registered in `OWNED` when it starts and stopped by `stop_all()`
(called from a `finally` and from `atexit`), so an interrupted run leaves nothing.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable

OWNED: list[Callable[[], None]] = []


def stop_all() -> None:
    while OWNED:
        stop = OWNED.pop()
        try:
            stop()
        except Exception as e:  # noqa: BLE001 - stopping must go on for the others
            print(f"  warning: stopping a server failed: {e}", file=sys.stderr)


atexit.register(stop_all)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


def _terminate(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_process(argv: list[str], log: pathlib.Path, env: dict | None = None) -> subprocess.Popen:
    f = open(log, "wb")
    proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    OWNED.append(lambda: (_terminate(proc), f.close()))
    return proc


class FastK:
    """A `fastk` server on free loopback ports over a data root.

    It also serves Flight on a Unix domain socket (`flight.unix_socket`) in a short
    directory of its own under the temp dir (AF_UNIX paths are limited to 108 bytes),
    removed when the server stops; `unix_socket` is that path once the server logged
    it, else None (`unix_error` says why: a fastk binary without the key is started
    again without it, so the other workloads still run).
    """

    def __init__(self, binary: pathlib.Path, root: pathlib.Path, log: pathlib.Path, unix_socket: bool = True):
        self.root = root
        self.unix_socket: str | None = None
        self.unix_error: str | None = None
        sock = _socket_path() if unix_socket else None
        try:
            self._start(binary, log, sock)
        except RuntimeError as e:
            text = log.read_text(errors="replace") if log.exists() else ""
            if sock is None or not ("unix_socket" in text or "unix socket" in text):
                raise
            # An older fastk refuses the unknown key: run it without the socket.
            self.unix_error = f"fastk did not start with flight.unix_socket: {str(e)[-300:]}"
            print(f"  warning: {self.unix_error}; started again without it", file=sys.stderr)
            self._start(binary, log, None)

    def _start(self, binary: pathlib.Path, log: pathlib.Path, sock: str | None) -> None:
        env = dict(os.environ)
        env.update(
            FASTK__STORAGE__ROOT=str(self.root),
            FASTK__HTTP__ADDR="127.0.0.1:0",
            FASTK__FLIGHT__ADDR="127.0.0.1:0",
            FASTK__LOG__LEVEL=os.environ.get("FASTK_BENCH_LOG", "warn,fastk::server=info"),
        )
        if sock is not None:
            env["FASTK__FLIGHT__UNIX_SOCKET"] = sock
        else:
            env.pop("FASTK__FLIGHT__UNIX_SOCKET", None)
        self.proc = start_process([str(binary)], log, env)
        deadline = time.time() + 60
        self.http = self.flight = None
        unix = None
        tcp_at = None
        # The Unix socket is bound and logged right after the TCP listeners; a few
        # seconds after those without it, the server is taken as serving TCP only.
        while time.time() < deadline and not (self.http and self.flight and (sock is None or unix)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastk exited: {log.read_text(errors='replace')[-2000:]}")
            text = log.read_text(errors="replace")
            h = re.search(r"http listening on (\S+)", text)
            g = re.search(r"flight listening on (?!unix socket )(\S+)", text)
            u = re.search(r"flight listening on unix socket (\S+)", text)
            self.http = h.group(1) if h else None
            self.flight = g.group(1) if g else None
            unix = u.group(1) if u else None
            if self.http and self.flight and tcp_at is None:
                tcp_at = time.time()
            if tcp_at is not None and time.time() - tcp_at > 5:
                break
            time.sleep(0.05)
        if not (self.http and self.flight):
            raise RuntimeError("fastk did not log its listeners")
        if sock is not None:
            if unix:
                self.unix_socket = sock
            else:
                self.unix_error = f"fastk did not log a Flight listener on the unix socket {sock}"

    def stop(self) -> None:
        _terminate(self.proc)


def _socket_path() -> str:
    """A fresh, short socket path (`/tmp/fkXXXXXXXX/flight.sock`), its directory
    removed by `stop_all` after the server that uses it has stopped."""
    base = tempfile.gettempdir()
    if len(base) > 40:  # a long TMPDIR could push the path over AF_UNIX's 108 bytes
        base = "/tmp"
    d = tempfile.mkdtemp(prefix="fk", dir=base)
    # Registered before the server, so stop_all (last in, first out) stops the server first.
    OWNED.append(lambda: shutil.rmtree(d, ignore_errors=True))
    return os.path.join(d, "flight.sock")


class Postgres:
    """A throwaway PostgreSQL cluster (initdb in a temp dir, loopback TCP only).

    `datadir` should sit in a fresh directory made by `tempfile.mkdtemp` (mode opened
    to 0755 by the caller) so that the postgres user can reach it.
    """

    def __init__(self, bindir: pathlib.Path, datadir: pathlib.Path, log: pathlib.Path):
        self.bindir, self.datadir, self.log = bindir, datadir, log
        self.port = free_port()
        if datadir.exists():
            shutil.rmtree(datadir)
        datadir.mkdir(parents=True)
        self.sockdir = datadir.parent / "pg-socket"
        self.sockdir.mkdir(exist_ok=True)
        self.runas: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses to run as root: the cluster belongs to the postgres user.
            shutil.chown(datadir, "postgres")
            shutil.chown(self.sockdir, "postgres")
            self.runas = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            self.runas + [str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--no-locale"],
            check=True, stdout=subprocess.DEVNULL,
        )
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.sockdir} "
            "-c shared_buffers=1GB -c max_wal_size=8GB -c maintenance_work_mem=512MB -c work_mem=64MB"
        )
        # pg_ctl's log must be writable by the postgres user: keep it inside the datadir.
        subprocess.run(
            self.runas + [str(bindir / "pg_ctl"), "-D", str(datadir), "-o", opts, "-l",
                          str(datadir / "server.log"), "-w", "start"],
            check=True, stdout=subprocess.DEVNULL,
        )
        OWNED.append(self.stop)
        self.uri = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                self.runas + [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
                check=False, stdout=subprocess.DEVNULL,
            )
            try:
                shutil.copy(self.datadir / "server.log", self.log)
            except OSError:
                pass


def find_pg_bindir() -> pathlib.Path | None:
    base = pathlib.Path("/usr/lib/postgresql")
    if not base.exists():
        return None
    for v in sorted(base.iterdir(), key=lambda p: -int(p.name) if p.name.isdigit() else 0):
        if (v / "bin" / "initdb").exists():
            return v / "bin"
    return None
