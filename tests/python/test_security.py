"""TLS and scoped tokens, end to end, against the real binary.

Two servers serve this module, both with TLS on both TCP listeners, a tokens file
(`auth.tokens_file`, re-read when it changes), `auth.protect_reads = true` and a TLS
reload interval of 1 s:

- `tls_server`: server certificate only (clients check it against the test CA);
- `mtls_server`: mutual TLS (`tls.client_ca_path`): clients without a certificate
  signed by the test CA are refused at the handshake.

Every certificate and key is made here with the `openssl` command, in a temporary
directory: a test CA, a server certificate for 127.0.0.1 / localhost, a second one for
the rotation test (same CA, another serial and CN), a client certificate, and a
client certificate of another CA. No key is committed.

Tokens are written into the tokens file as the design says (`sha256` of the token),
and the `fastk token` command line is checked on its own and while a server runs.

The brute-force throttle (after 5 failed attempts within 60 s from one address, each
further failure is delayed) would slow down the scope matrix, which sends dozens of
requests that must fail: requests expected to fail (401) are therefore sent from
their own loopback source addresses (127.0.x.y; Linux routes all of 127/8 to `lo`),
a few per address: HTTP through a source-bound connection pool, Flight through a tiny
TCP relay (`SourceRelay`) that opens each upstream connection from a fresh address.
127.0.0.1 itself is kept for the brute-force test, which runs last.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import adbc_driver_flightsql.dbapi as adbc
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests
from requests.adapters import HTTPAdapter

from conftest import BINARY, FastkServer, stop_cleanly
from fastk_testlib import (
    AUTH_TOKEN,
    JAN_1_2024_MS,
    MINUTE_MS,
    OPENAPI_PATH,
    check_error,
    expect_ok,
    kline_path,
    make_klines,
)

# The generated OpenAPI client: generated once for this module by the same fixture as
# test_http_client.py (`generated` is a fixture; importing it makes it one here too).
from test_http_client import call, endpoint, generated, to_dict  # noqa: F401

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
CURL = shutil.which("curl")

SERVER_CN = "fastk-server"
ROTATED_CN = "fastk-rotated"
TS_TYPE = pa.timestamp("ms", tz="UTC")
KLINE_COLS = ["open", "high", "low", "close", "volume"]
N_BARS = 120
# auth.session_ttl_s of the mutual-TLS server.
SESSION_TTL_S = 3
TIMEOUT = 30
# How long a change of the tokens file or of the certificate files may take to be
# seen: the server checks every second (tokens) and every reload_interval_s = 1 (TLS).
RELOAD_WAIT_S = 10.0

# The tokens of the fixtures' tokens files: name -> (scopes, symbols or None).
TOKEN_SPECS: dict[str, tuple[list[str], list[str] | None]] = {
    "reader": (["read"], None),
    "writer": (["write"], None),
    "admin": (["admin"], None),
    "full": (["read", "write", "admin"], None),
    "btc-reader": (["read"], ["BTC*"]),
    "btc-writer": (["write"], ["BTC*"]),
}

# Every secret this module makes or receives (tokens, session tokens): none may ever
# appear in a log or in /metrics (checked by the last test).
SECRETS: list[str] = []


# ---------------------------------------------------------------------------
# Certificates (openssl)


@dataclass
class Pki:
    dir: Path
    ca: Path
    ca_key: Path
    server_crt: Path
    server_key: Path
    rotated_crt: Path
    rotated_key: Path
    client_crt: Path
    client_key: Path
    rogue_crt: Path  # a client certificate of another CA
    rogue_key: Path

    @property
    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()


_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
_CLIENT_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:fastk-test-client
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(d: Path, *args: str) -> None:
    proc = subprocess.run([OPENSSL, *args], cwd=d, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args)}:\n{proc.stderr}"


def _make_ca(d: Path, name: str, cn: str) -> None:
    _openssl(d, "req", "-x509", "-new", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3",
             "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash")


def _make_leaf(d: Path, name: str, cn: str, ca: str, serial: int, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl(d, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
    _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt",
             "-CAkey", f"{ca}.key", "-set_serial", str(serial), "-days", "2",
             "-out", f"{name}.crt", "-extfile", f"{name}.ext")
    os.chmod(d / f"{name}.key", 0o600)


def make_pki(d: Path) -> Pki:
    """A test CA, two server certificates and two client certificates (openssl)."""
    d.mkdir(parents=True, exist_ok=True)
    _make_ca(d, "ca", "FastK test CA")
    _make_ca(d, "rogue-ca", "Some other CA")
    _make_leaf(d, "server", SERVER_CN, "ca", 1001, _SERVER_EXT)
    _make_leaf(d, "rotated", ROTATED_CN, "ca", 1002, _SERVER_EXT)
    _make_leaf(d, "client", "fastk-test-client", "ca", 2001, _CLIENT_EXT)
    _make_leaf(d, "rogue", "fastk-test-client", "rogue-ca", 3001, _CLIENT_EXT)
    for leaf in ("server", "rotated", "client"):
        _openssl(d, "verify", "-CAfile", "ca.crt", f"{leaf}.crt")
    return Pki(d, d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key",
               d / "rotated.crt", d / "rotated.key", d / "client.crt", d / "client.key",
               d / "rogue.crt", d / "rogue.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    if not Path(OPENSSL).exists():
        pytest.skip("the openssl command is not installed: the TLS tests need it")
    return make_pki(tmp_path_factory.mktemp("pki"))


def peer_cn(cert: dict) -> str:
    return dict(x[0] for x in cert["subject"])["commonName"]


# ---------------------------------------------------------------------------
# Tokens files


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def write_tokens_file(path: Path, entries: list[dict]) -> None:
    """Writes `[[token]]` entries (name, sha256, scopes, symbols?) atomically."""
    lines = []
    for e in entries:
        lines += ["[[token]]", f"name = {json.dumps(e['name'])}",
                  f"sha256 = {json.dumps(e['sha256'])}",
                  f"scopes = {_toml_list(e['scopes'])}"]
        if e.get("symbols") is not None:
            lines.append(f"symbols = {_toml_list(e['symbols'])}")
        lines.append("")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_tokens_file(path: Path) -> list[dict]:
    return tomllib.loads(path.read_text()).get("token", [])


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    """name -> token for TOKEN_SPECS, plus "wrong": a token no file knows."""
    out = {name: "fk_" + secrets.token_hex(20) for name in TOKEN_SPECS}
    out["wrong"] = "fk_" + secrets.token_hex(20)
    SECRETS.extend(v for k, v in out.items() if k != "wrong")
    return out


def _token_entries(tokens: dict[str, str]) -> list[dict]:
    return [{"name": name, "sha256": sha256_hex(tokens[name]), "scopes": scopes,
             "symbols": symbols} for name, (scopes, symbols) in TOKEN_SPECS.items()]


def fastk_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTK__")}
    env.pop("RUST_LOG", None)
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def cli_create(tokens_file: Path, name: str, scopes: str, symbols: str | None = None) -> str:
    args = ["token", "create", "--name", name, "--scopes", scopes,
            "--tokens-file", str(tokens_file)]
    if symbols is not None:
        args += ["--symbols", symbols]
    proc = fastk_cli(*args)
    assert proc.returncode == 0, f"fastk {' '.join(args)}: {proc.returncode}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be the token alone, got {proc.stdout!r}"
    token = lines[0]
    assert re.fullmatch(r"fk_\S+", token), proc.stdout
    SECRETS.append(token)
    return token


# ---------------------------------------------------------------------------
# Fresh loopback source addresses (see the module docstring)

_source_ips = (f"127.0.{a}.{b}" for a in range(20, 250) for b in range(1, 255))
_source_lock = threading.Lock()


def next_source_ip() -> str:
    with _source_lock:
        return next(_source_ips)


class _SourceAdapter(HTTPAdapter):
    def __init__(self, source_ip: str):
        self._source_ip = source_ip
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self._source_ip, 0)
        super().init_poolmanager(*args, **kwargs)


class SourceRelay:
    """A TCP relay on 127.0.0.1 to `target_port`: every connection it accepts goes
    upstream from a fresh loopback source address. TLS passes through untouched."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                up.bind((next_source_ip(), 0))
                up.connect(("127.0.0.1", self.target_port))
            except OSError:
                down.close()
                continue
            self._socks += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# Servers


class TlsServer(FastkServer):
    """A `fastk serve` with TLS on: https:// and grpc+tls://, checked against the
    test CA (and, for mutual TLS, presenting the test client certificate)."""

    def __init__(self, workdir: Path, pki: Pki, tokens_file: Path, mutual: bool):
        self.pki = pki
        self.mutual = mutual
        self.cert_path = workdir / "tls" / "server.crt"
        self.key_path = workdir / "tls" / "server.key"
        self.tokens_file = tokens_file
        env = {
            "FASTK__TLS__CERT_PATH": str(self.cert_path),
            "FASTK__TLS__KEY_PATH": str(self.key_path),
            "FASTK__TLS__RELOAD_INTERVAL_S": "1",
            "FASTK__AUTH__TOKENS_FILE": str(tokens_file),
            "FASTK__AUTH__PROTECT_READS": "true",
            "FASTK__STORAGE__LOW_DISK_BYTES": "0",
        }
        if mutual:
            env["FASTK__TLS__CLIENT_CA_PATH"] = str(pki.ca)
            # Short Handshake sessions, for test_session_tokens_expire.
            env["FASTK__AUTH__SESSION_TTL_S"] = str(SESSION_TTL_S)
        super().__init__(workdir, env)
        self.relay: SourceRelay | None = None

    def install_cert(self, crt: Path, key: Path) -> None:
        """Puts a certificate and its key where the server reads them (atomically)."""
        self.cert_path.parent.mkdir(parents=True, exist_ok=True)
        for src, dst in ((key, self.key_path), (crt, self.cert_path)):
            tmp = dst.with_name(dst.name + ".new")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)

    @property
    def http_url(self) -> str:
        return f"https://{self.http_addr}"

    @property
    def flight_uri(self) -> str:
        return f"grpc+tls://{self.flight_addr}"

    @property
    def http_port(self) -> int:
        return int(self.http_addr.rsplit(":", 1)[1])

    @property
    def flight_port(self) -> int:
        return int(self.flight_addr.rsplit(":", 1)[1])

    @property
    def client_cert(self) -> tuple[str, str] | None:
        return (str(self.pki.client_crt), str(self.pki.client_key)) if self.mutual else None

    def session(self, token: str | None = None, fresh_source: bool = False) -> requests.Session:
        s = requests.Session()
        # Not from the environment: REQUESTS_CA_BUNDLE would replace the session's
        # `verify`, and a proxy would hide the source address.
        s.trust_env = False
        s.verify = str(self.pki.ca)
        s.cert = self.client_cert
        if fresh_source:
            adapter = _SourceAdapter(next_source_ip())
            s.mount("https://", adapter)
            s.mount("http://", adapter)
        if token is not None:
            s.headers["Authorization"] = f"Bearer {token}"
        return s

    def flight_client(self, fresh_source: bool = False, client_cert: bool = True
                      ) -> flight.FlightClient:
        """A Flight client over TLS; `fresh_source`: through the relay, so its
        connections come from fresh source addresses."""
        kwargs = {"tls_root_certs": self.pki.ca_pem}
        if self.mutual and client_cert:
            kwargs["cert_chain"] = self.pki.client_crt.read_bytes()
            kwargs["private_key"] = self.pki.client_key.read_bytes()
        return flight.connect(self.relay_uri() if fresh_source else self.flight_uri, **kwargs)

    def relay_uri(self) -> str:
        """grpc+tls:// to the Flight port through a `SourceRelay`."""
        if self.relay is None:
            self.relay = SourceRelay(self.flight_port)
        return f"grpc+tls://127.0.0.1:{self.relay.port}"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        if self.mutual:
            ctx.load_cert_chain(str(self.pki.client_crt), str(self.pki.client_key))
        return ctx

    def _get_health(self) -> requests.Response:
        return requests.get(f"{self.http_url}/health", verify=str(self.pki.ca),
                            cert=self.client_cert, timeout=5)


def _start_tls_server(tmp_path_factory, name: str, pki: Pki, tokens: dict[str, str],
                      mutual: bool) -> Iterator[TlsServer]:
    workdir = tmp_path_factory.mktemp(name)
    tokens_file = workdir / "tokens.toml"
    write_tokens_file(tokens_file, _token_entries(tokens))
    server = TlsServer(workdir, pki, tokens_file, mutual)
    server.install_cert(pki.server_crt, pki.server_key)
    try:
        server.start()
        yield server
    finally:
        if server.relay is not None:
            server.relay.close()
        if server.proc is not None and server.proc.poll() is None:
            stop_cleanly(server)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki, tokens) -> Iterator[TlsServer]:
    yield from _start_tls_server(tmp_path_factory, "tls", pki, tokens, mutual=False)


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, pki, tokens) -> Iterator[TlsServer]:
    yield from _start_tls_server(tmp_path_factory, "mtls", pki, tokens, mutual=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def flight_opts(token: str | None = None, timeout: float = TIMEOUT) -> flight.FlightCallOptions:
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    return flight.FlightCallOptions(headers=headers, timeout=timeout)


def kline_ticket(sym: str, timeframe: str = "1m", **extra) -> flight.Ticket:
    return flight.Ticket(json.dumps(dict(kind="kline", symbol=sym, timeframe=timeframe,
                                         **extra)))


def kline_table(records: list[dict]) -> pa.Table:
    schema = pa.schema([pa.field("ts", TS_TYPE, nullable=False)]
                       + [pa.field(c, pa.int64(), nullable=False) for c in KLINE_COLS])
    cols = [pa.array([r["ts"] for r in records], pa.int64()).cast(TS_TYPE)]
    cols += [pa.array([r[c] for r in records], pa.int64()) for c in KLINE_COLS]
    return pa.Table.from_arrays(cols, schema=schema)


def table_records(table: pa.Table) -> list[dict]:
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    cols = {c: table.column(c).to_pylist() for c in KLINE_COLS}
    return [{"ts": t, **{c: cols[c][i] for c in KLINE_COLS}} for i, t in enumerate(ts)]


def do_put(client: flight.FlightClient, desc: flight.FlightDescriptor, table: pa.Table,
           options: flight.FlightCallOptions) -> dict | None:
    writer, reader = client.do_put(desc, table.schema, options=options)
    try:
        writer.write_table(table)
        writer.done_writing()
        buf = reader.read()
    except BaseException:
        try:
            writer.close()
        except Exception:
            pass
        raise
    writer.close()
    return None if buf is None else json.loads(buf.to_pybytes())


def register(s: requests.Session, base: str, sym: str, token: str) -> None:
    body = {"symbol": sym, "timeframe": "1m", "price_scale": 100, "volume_scale": 1000}
    expect_ok(s.post(f"{base}/v1/kline/series", json=body, headers=bearer(token),
                     timeout=TIMEOUT), 201)


@pytest.fixture(scope="module")
def market(tls_server, tokens) -> dict[str, list[dict]]:
    """BTCUSDT, ETHUSDT, BTCEUR and BTCGBP 1m klines on `tls_server` (written over HTTPS with
    the write-only token, registered with it too)."""
    data = {"BTCUSDT": make_klines(N_BARS, seed=1), "ETHUSDT": make_klines(N_BARS, seed=2),
            "BTCEUR": make_klines(N_BARS, seed=3), "BTCGBP": make_klines(N_BARS, seed=6)}
    with tls_server.session() as s:
        for sym, records in data.items():
            register(s, tls_server.http_url, sym, tokens["writer"])
            url = tls_server.http_url + kline_path(sym) + "/records"
            w = expect_ok(s.post(url, json={"records": records},
                                 headers=bearer(tokens["writer"]), timeout=TIMEOUT))
            assert w["written"] == N_BARS, w
    return data


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


# ---------------------------------------------------------------------------
# The token command line


def test_token_cli_create_list_and_refusals(tmp_path):
    f = tmp_path / "sub" / "tokens.toml"
    f.parent.mkdir()
    t1 = cli_create(f, "dashboard", "read", "BTC*,ETHUSDT")
    t2 = cli_create(f, "loader", "read,write")
    t3 = cli_create(f, "ops", "admin")
    assert len({t1, t2, t3}) == 3
    # Created with mode 0600: only the owner can read the hashes.
    assert stat.S_IMODE(f.stat().st_mode) == 0o600, oct(f.stat().st_mode)

    entries = {e["name"]: e for e in read_tokens_file(f)}
    assert set(entries) == {"dashboard", "loader", "ops"}
    assert entries["dashboard"]["sha256"] == sha256_hex(t1)
    assert entries["loader"]["sha256"] == sha256_hex(t2)
    assert entries["ops"]["sha256"] == sha256_hex(t3)
    assert entries["dashboard"]["scopes"] == ["read"]
    assert entries["dashboard"]["symbols"] == ["BTC*", "ETHUSDT"]
    assert sorted(entries["loader"]["scopes"]) == ["read", "write"]
    assert "symbols" not in entries["ops"] or entries["ops"]["symbols"] in ([], None)
    text = f.read_text()
    for t in (t1, t2, t3):
        assert t not in text, "the tokens file must hold only hashes"

    proc = fastk_cli("token", "list", "--tokens-file", str(f))
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert all(len(r) == 3 for r in rows), proc.stdout
    listed = {r[0]: (set(r[1].split(",")), r[2]) for r in rows}
    assert listed == {"dashboard": ({"read"}, "BTC*,ETHUSDT"),
                      "loader": ({"read", "write"}, "*"),
                      "ops": ({"admin"}, "*")}, proc.stdout
    for t in (t1, t2, t3):
        for secret in (t, sha256_hex(t)):
            assert secret not in proc.stdout and secret not in proc.stderr

    # A duplicate name is refused and changes nothing.
    before = f.read_text()
    dup = fastk_cli("token", "create", "--name", "ops", "--scopes", "read",
                    "--tokens-file", str(f))
    assert dup.returncode != 0, dup.stdout
    assert not re.search(r"fk_\S+", dup.stdout), dup.stdout
    assert f.read_text() == before
    # Names are 1-64 characters of [A-Za-z0-9_.-].
    for bad in ("bad name", "x" * 65, "tab\there", ""):
        proc = fastk_cli("token", "create", "--name", bad, "--scopes", "read",
                         "--tokens-file", str(f))
        assert proc.returncode != 0, (bad, proc.stdout)
    # An unknown scope is refused.
    proc = fastk_cli("token", "create", "--name", "weird", "--scopes", "read,root",
                     "--tokens-file", str(f))
    assert proc.returncode != 0, proc.stdout
    assert f.read_text() == before


# ---------------------------------------------------------------------------
# HTTPS


def test_https_with_requests(tls_server, market, tokens):
    base = tls_server.http_url
    with tls_server.session() as s:
        r = s.get(base + "/health", timeout=TIMEOUT)
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
        page = expect_ok(s.get(base + kline_path("BTCUSDT") + "/records",
                               headers=bearer(tokens["reader"]), timeout=TIMEOUT))
        assert page["records"] == market["BTCUSDT"]
    # A client that does not trust the test CA refuses the server.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(base + "/health", timeout=TIMEOUT)
    # The server names in its certificate: 127.0.0.1 and localhost.
    r = requests.get(f"https://localhost:{tls_server.http_port}/health",
                     verify=str(tls_server.pki.ca), timeout=TIMEOUT)
    assert r.status_code == 200


def test_alpn_on_both_listeners(tls_server):
    """HTTP offers h2 and http/1.1; Flight h2."""
    def negotiated(port: int, offer: list[str]) -> str | None:
        ctx = tls_server.ssl_context()
        ctx.set_alpn_protocols(offer)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as ss:
                return ss.selected_alpn_protocol()

    assert negotiated(tls_server.http_port, ["h2", "http/1.1"]) == "h2"
    assert negotiated(tls_server.http_port, ["http/1.1"]) == "http/1.1"
    assert negotiated(tls_server.flight_port, ["h2"]) == "h2"


def test_server_chooses_aes_128_gcm(tls_server):
    """The listeners pick the suite by their own order, AES-128-GCM first, even when
    the client (Python's OpenSSL: AES-256-GCM first) would rather have another; a
    client that offers only AES-256-GCM or ChaCha20 still gets it."""
    def negotiated(port: int, suites: str | None, version: ssl.TLSVersion) -> str:
        ctx = tls_server.ssl_context()
        ctx.minimum_version = ctx.maximum_version = version
        if suites is not None:
            ctx.set_ciphers(suites)  # TLS 1.2 only: OpenSSL offers its 1.3 suites in its own order
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as ss:
                return ss.cipher()[0]

    tls13 = ssl.TLSVersion.TLSv1_3
    assert ssl.create_default_context().get_ciphers()[0]["name"] == "TLS_AES_256_GCM_SHA384", (
        "this OpenSSL does not prefer AES-256-GCM: the test would not show the server's choice")
    for port in (tls_server.http_port, tls_server.flight_port):
        assert negotiated(port, None, tls13) == "TLS_AES_128_GCM_SHA256"
    tls12 = ssl.TLSVersion.TLSv1_2
    assert negotiated(tls_server.http_port, "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
                      tls12) == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert negotiated(tls_server.http_port, "ECDHE-ECDSA-CHACHA20-POLY1305", tls12) == "ECDHE-ECDSA-CHACHA20-POLY1305"


def test_plain_http_to_the_https_port_is_refused(tls_server, tokens):
    # Raw: the server answers a plain-text 400 that says it speaks HTTPS, then closes.
    with socket.create_connection(("127.0.0.1", tls_server.http_port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /v1/kline/series HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  + f"Authorization: Bearer {tokens['reader']}\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break  # the server closed the connection
            data += chunk
        else:
            pytest.fail(f"the server did not close the plain-HTTP connection: {data[:300]!r}")
    assert data.startswith(b"HTTP/1.1 400"), data[:300]
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"https" in body.lower(), data[:500]
    assert b"BTCUSDT" not in data and b'"series"' not in data, data[:500]

    # And as a user sees it with requests: a clear 400 or a connection error, never data.
    try:
        r = requests.get(f"http://127.0.0.1:{tls_server.http_port}/v1/kline/series",
                         headers=bearer(tokens["reader"]), timeout=TIMEOUT)
    except requests.ConnectionError:
        return
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert "https" in r.text.lower(), r.text[:300]
    assert "BTCUSDT" not in r.text


def test_curl_https(tls_server):
    if CURL is None:
        pytest.skip("curl is not installed")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")}
    url = f"{tls_server.http_url}/health"
    ok = subprocess.run([CURL, "-sS", "--max-time", "20", "--cacert", str(tls_server.pki.ca),
                         url], capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "ok", ok.stdout
    bad = subprocess.run([CURL, "-sS", "--max-time", "20", url], capture_output=True,
                         text=True, env=env, timeout=60)
    assert bad.returncode != 0, bad.stdout
    assert '"status"' not in bad.stdout


def test_plain_grpc_to_the_tls_flight_port_fails(tls_server):
    c = flight.connect(f"grpc://{tls_server.flight_addr}")
    try:
        with pytest.raises(pa.ArrowException) as e:
            list(c.do_action(flight.Action("health", b""), flight_opts(timeout=10)))
        # A transport failure, not an answer of the service.
        assert not isinstance(e.value, (flight.FlightUnauthenticatedError,
                                        flight.FlightUnauthorizedError)), e.value
    finally:
        c.close()


# ---------------------------------------------------------------------------
# Flight over TLS


def test_flight_tls_do_put_and_do_get(tls_server, tokens):
    sym, other = "BTCFLIGHT", "ETHFLIGHT"
    with tls_server.session() as s:
        register(s, tls_server.http_url, sym, tokens["writer"])
        register(s, tls_server.http_url, other, tokens["writer"])
    records = make_klines(300, seed=5)
    table = kline_table(records)
    c = tls_server.flight_client()
    try:
        desc = flight.FlightDescriptor.for_path("kline", sym, "1m")
        result = do_put(c, desc, table, flight_opts(tokens["writer"]))
        assert result is not None and result["written"] == 300, result
        back = c.do_get(kline_ticket(sym), flight_opts(tokens["reader"])).read_all()
        assert table_records(back) == records
        assert back.schema.metadata[b"fastk.symbol"] == sym.encode()
        # The write token has no read scope; the read token no write scope.
        with pytest.raises(flight.FlightUnauthorizedError):
            c.do_get(kline_ticket(sym), flight_opts(tokens["writer"])).read_all()
        with pytest.raises(flight.FlightUnauthorizedError):
            do_put(c, desc, table, flight_opts(tokens["reader"]))

        # A many-series stream (descriptor symbol "*", a symbol column) with the write
        # token.
        later = make_klines(4, start_ts=JAN_1_2024_MS + 1000 * MINUTE_MS, seed=14)
        many = kline_table(later + later).append_column(
            "symbol", pa.array([sym] * 4 + [other] * 4))
        result = do_put(c, flight.FlightDescriptor.for_path("kline", "*", "1m"), many,
                        flight_opts(tokens["writer"]))
        assert result is not None and result["written"] == 8, result
        back = c.do_get(kline_ticket(other), flight_opts(tokens["reader"])).read_all()
        assert table_records(back) == later
        back = c.do_get(kline_ticket(sym), flight_opts(tokens["reader"])).read_all()
        assert table_records(back) == records + later
    finally:
        c.close()


def test_mutual_tls(mtls_server, tokens):
    srv = mtls_server
    sym = "BTCMTLS"
    records = make_klines(50, seed=9)
    # HTTPS with the client certificate works...
    with srv.session() as s:
        assert s.get(srv.http_url + "/health", timeout=TIMEOUT).status_code == 200
        register(s, srv.http_url, sym, tokens["writer"])
    # ...without one, or with one of another CA, the handshake is refused.
    for cert in (None, (str(srv.pki.rogue_crt), str(srv.pki.rogue_key))):
        with pytest.raises(requests.RequestException):
            requests.get(srv.http_url + "/health", verify=str(srv.pki.ca), cert=cert,
                         timeout=TIMEOUT)

    c = srv.flight_client()
    try:
        desc = flight.FlightDescriptor.for_path("kline", sym, "1m")
        result = do_put(c, desc, kline_table(records), flight_opts(tokens["writer"]))
        assert result is not None and result["written"] == 50
        back = c.do_get(kline_ticket(sym), flight_opts(tokens["reader"])).read_all()
        assert table_records(back) == records
    finally:
        c.close()

    bare = srv.flight_client(client_cert=False)
    rogue = flight.connect(srv.flight_uri, tls_root_certs=srv.pki.ca_pem,
                           cert_chain=srv.pki.rogue_crt.read_bytes(),
                           private_key=srv.pki.rogue_key.read_bytes())
    try:
        for client in (bare, rogue):
            got = None
            with pytest.raises(pa.ArrowException) as e:
                got = client.do_get(kline_ticket(sym),
                                    flight_opts(tokens["reader"], timeout=10)).read_all()
            assert got is None
            # Refused at the handshake, not by the token check (the token is valid).
            assert not isinstance(e.value, (flight.FlightUnauthenticatedError,
                                            flight.FlightUnauthorizedError)), e.value
    finally:
        bare.close()
        rogue.close()

    if CURL is not None:
        base = [CURL, "-sS", "--max-time", "20", "--cacert", str(srv.pki.ca)]
        ok = subprocess.run(base + ["--cert", str(srv.pki.client_crt), "--key",
                                    str(srv.pki.client_key), srv.http_url + "/health"],
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "ok", ok.stderr
        bad = subprocess.run(base + [srv.http_url + "/health"], capture_output=True,
                             text=True, timeout=60)
        assert bad.returncode != 0 and '"status"' not in bad.stdout, bad.stdout

    # ADBC with the client certificate and a name and token.
    kwargs = {"username": "reader", "password": tokens["reader"],
              "adbc.flight.sql.client_option.tls_root_certs": srv.pki.ca_pem.decode(),
              "adbc.flight.sql.client_option.mtls_cert_chain": srv.pki.client_crt.read_text(),
              "adbc.flight.sql.client_option.mtls_private_key": srv.pki.client_key.read_text()}
    with adbc.connect(srv.flight_uri, db_kwargs=kwargs, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM kline WHERE symbol = '{sym}'")
            assert cur.fetchall() == [(50,)]


# ---------------------------------------------------------------------------
# ADBC Flight SQL over TLS (Handshake with name and token)


def _adbc_kwargs(srv: TlsServer, name: str, password: str) -> dict[str, str]:
    return {"username": name, "password": password,
            "adbc.flight.sql.client_option.tls_root_certs": srv.pki.ca_pem.decode()}


def _adbc_rows(uri: str, kwargs: dict, query: str) -> list[tuple]:
    with adbc.connect(uri, db_kwargs=kwargs, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()


def test_adbc_flight_sql_over_tls(tls_server, market, tokens):
    want = market["BTCUSDT"]
    rows = _adbc_rows(tls_server.flight_uri, _adbc_kwargs(tls_server, "reader", tokens["reader"]),
                      "SELECT ts, close, volume FROM kline "
                      "WHERE symbol = 'BTCUSDT' AND timeframe = '1m' ORDER BY ts")
    assert len(rows) == N_BARS
    assert [r[1] for r in rows] == [b["close"] / 100 for b in want]
    assert [r[2] for r in rows] == [b["volume"] / 1000 for b in want]
    assert [int(r[0].timestamp() * 1000) for r in rows] == [b["ts"] for b in want]

    # A wrong password (and an unknown name) is refused. Sent through the relay so that
    # the failures do not count against 127.0.0.1.
    relay_uri = tls_server.relay_uri()
    for name, password in (("reader", tokens["wrong"]), ("nobody", tokens["reader"]),
                           ("reader", tokens["writer"])):
        with pytest.raises(adbc.Error) as e:
            _adbc_rows(relay_uri, _adbc_kwargs(tls_server, name, password), "SELECT 1")
        assert (e.value.status_code == adbc_driver_manager.AdbcStatusCode.UNAUTHENTICATED
                or "nauthenticated" in str(e.value)), str(e.value)


# ---------------------------------------------------------------------------
# The generated OpenAPI client over HTTPS


@pytest.mark.filterwarnings("ignore:`verify=<str>` is deprecated:DeprecationWarning")
def test_generated_client_over_https(generated, tls_server, market, tokens):
    read = endpoint(generated, "get", "/v1/kline/{symbol}/{timeframe}/records")
    ctx = ssl.create_default_context(cafile=str(tls_server.pki.ca))
    with generated.AuthenticatedClient(base_url=tls_server.http_url, token=tokens["reader"],
                                       verify_ssl=ctx, raise_on_unexpected_status=False) as c:
        r = call(read, c, symbol="BTCUSDT", timeframe="1m")
        assert r.status_code == 200, r.content
        assert to_dict(r.parsed)["records"] == market["BTCUSDT"]
    # The path of the CA works as verify_ssl too (httpx warns that it prefers a context).
    with generated.AuthenticatedClient(base_url=tls_server.http_url, token=tokens["reader"],
                                       verify_ssl=str(tls_server.pki.ca),
                                       raise_on_unexpected_status=False) as c:
        r = call(read, c, symbol="ETHUSDT", timeframe="1m", limit=3)
        assert r.status_code == 200, r.content
        assert to_dict(r.parsed)["records"] == market["ETHUSDT"][:3]
    with generated.AuthenticatedClient(base_url=tls_server.http_url, token=tokens["writer"],
                                       verify_ssl=ctx, raise_on_unexpected_status=False) as c:
        r = call(read, c, symbol="BTCUSDT", timeframe="1m")
        assert r.status_code == 403, r.content
        assert json.loads(r.content)["error"]["code"] == "forbidden"
    with generated.Client(base_url=tls_server.http_url, verify_ssl=ctx,
                          raise_on_unexpected_status=False) as c:
        r = call(read, c, symbol="BTCUSDT", timeframe="1m")
        assert r.status_code == 401, r.content
        assert json.loads(r.content)["error"]["code"] == "unauthorized"


# ---------------------------------------------------------------------------
# Flight Handshake


def test_flight_handshake(tls_server, market, tokens):
    c = tls_server.flight_client()
    try:
        pair = c.authenticate_basic_token("reader", tokens["reader"])
        assert isinstance(pair, tuple) and len(pair) == 2, pair
        key, value = pair
        assert key == b"authorization", pair
        assert value.startswith(b"Bearer ") and len(value) > len(b"Bearer ") + 8, pair
        session = value[len(b"Bearer "):].decode()
        SECRETS.append(session)
        opts = flight.FlightCallOptions(headers=[pair], timeout=TIMEOUT)
        table = c.do_get(kline_ticket("BTCUSDT"), opts).read_all()
        assert table_records(table) == market["BTCUSDT"]
        # The session carries the token's scopes: no write with a read token's session.
        with pytest.raises(flight.FlightUnauthorizedError):
            do_put(c, flight.FlightDescriptor.for_path("kline", "BTCUSDT", "1m"),
                   kline_table(market["BTCUSDT"][:2]), opts)
        # And works on HTTP routes too.
        with tls_server.session() as s:
            page = expect_ok(s.get(tls_server.http_url + kline_path("BTCUSDT") + "/latest",
                                   params={"n": 2}, headers=bearer(session), timeout=TIMEOUT))
            assert page["records"] == market["BTCUSDT"][-2:]

        # A pattern-limited token's session keeps its patterns.
        pair = c.authenticate_basic_token("btc-reader", tokens["btc-reader"])
        SECRETS.append(pair[1][len(b"Bearer "):].decode())
        opts = flight.FlightCallOptions(headers=[pair], timeout=TIMEOUT)
        assert c.do_get(kline_ticket("BTCUSDT"), opts).read_all().num_rows == N_BARS
        with pytest.raises(flight.FlightUnauthorizedError):
            c.do_get(kline_ticket("ETHUSDT"), opts).read_all()
    finally:
        c.close()

    # Wrong password, unknown name: Unauthenticated (through the relay, see above).
    bad = tls_server.flight_client(fresh_source=True)
    try:
        for name, password in (("reader", tokens["wrong"]), ("nobody", tokens["reader"]),
                               ("writer", tokens["reader"])):
            with pytest.raises(flight.FlightUnauthenticatedError):
                bad.authenticate_basic_token(name, password, flight_opts())
    finally:
        bad.close()


def test_session_tokens_expire(mtls_server, tokens):
    srv = mtls_server
    c = srv.flight_client()
    try:
        pair = c.authenticate_basic_token("reader", tokens["reader"])
        t0 = time.monotonic()
        session = pair[1][len(b"Bearer "):].decode()
        SECRETS.append(session)
        opts = flight.FlightCallOptions(headers=[pair], timeout=TIMEOUT)
        list(c.list_flights(b"", opts))
        with srv.session(token=session) as s:
            expect_ok(s.get(srv.http_url + "/v1/kline/series", timeout=TIMEOUT))
            time.sleep(max(0.0, SESSION_TTL_S + 1.0 - (time.monotonic() - t0)))
            check_error(s.get(srv.http_url + "/v1/kline/series", timeout=TIMEOUT),
                        401, "unauthorized")
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(c.list_flights(b"", opts))
        # The token itself still works, and a new Handshake gives a new session.
        list(c.list_flights(b"", flight_opts(tokens["reader"])))
        again = c.authenticate_basic_token("reader", tokens["reader"])
        SECRETS.append(again[1][len(b"Bearer "):].decode())
        list(c.list_flights(b"", flight.FlightCallOptions(headers=[again], timeout=TIMEOUT)))
    finally:
        c.close()


def test_legacy_token_handshake_is_user_default(protected_reads_server):
    """`auth.token` (no tokens file): Handshake user `default`, every scope."""
    srv = protected_reads_server
    c = flight.connect(srv.flight_uri)
    try:
        pair = c.authenticate_basic_token("default", AUTH_TOKEN)
        assert pair[0] == b"authorization" and pair[1].startswith(b"Bearer "), pair
        opts = flight.FlightCallOptions(headers=[pair], timeout=TIMEOUT)
        assert isinstance(list(c.list_flights(b"", opts)), list)
        report = json.loads(list(c.do_action(flight.Action("validate", b"{}"), opts))[0]
                            .body.to_pybytes())
        assert "clean" in report, report
        with pytest.raises(flight.FlightUnauthenticatedError):
            c.authenticate_basic_token("reader", AUTH_TOKEN)
    finally:
        c.close()


def test_reads_stay_open_without_protect_reads(start_server, tmp_path, tokens):
    """A tokens file with auth.protect_reads = false: reads need no token, writes do,
    and a known token is still held to its scopes and symbols."""
    tokens_file = tmp_path / "tokens.toml"
    write_tokens_file(tokens_file, _token_entries(tokens))
    srv = start_server("openreads", {"FASTK__AUTH__TOKENS_FILE": str(tokens_file)})
    base = srv.http_url
    sym = "BTCOPEN"
    with requests.Session() as s:
        s.trust_env = False
        body = {"symbol": sym, "timeframe": "1m", "price_scale": 100, "volume_scale": 1000}
        check_error(s.post(base + "/v1/kline/series", json=body, timeout=TIMEOUT),
                    401, "unauthorized")
        check_error(s.post(base + "/v1/kline/series", json=body,
                           headers=bearer(tokens["reader"]), timeout=TIMEOUT),
                    403, "forbidden")
        expect_ok(s.post(base + "/v1/kline/series", json=body,
                         headers=bearer(tokens["writer"]), timeout=TIMEOUT), 201)
        records = make_klines(5)
        expect_ok(s.post(base + kline_path(sym) + "/records", json={"records": records},
                         headers=bearer(tokens["writer"]), timeout=TIMEOUT))
        page = expect_ok(s.get(base + kline_path(sym) + "/records", timeout=TIMEOUT))
        assert page["records"] == records
        expect_ok(s.get(base + "/inventory", timeout=TIMEOUT))
        check_error(s.post(base + "/v1/admin/validate", json={},
                           headers=bearer(tokens["writer"]), timeout=TIMEOUT),
                    403, "forbidden")
        expect_ok(s.post(base + "/v1/admin/validate", json={},
                         headers=bearer(tokens["admin"]), timeout=TIMEOUT))
    c = flight.connect(srv.flight_uri)
    try:
        assert c.do_get(kline_ticket(sym)).read_all().num_rows == 5
    finally:
        c.close()
    stop_cleanly(srv)


# ---------------------------------------------------------------------------
# Symbol patterns


def test_symbol_patterns_http(tls_server, market, tokens):
    base = tls_server.http_url
    reader, writer = bearer(tokens["btc-reader"]), bearer(tokens["btc-writer"])
    with tls_server.session() as s:
        page = expect_ok(s.get(base + kline_path("BTCUSDT") + "/records", headers=reader,
                               timeout=TIMEOUT))
        assert page["records"] == market["BTCUSDT"]
        expect_ok(s.get(base + kline_path("BTCEUR"), headers=reader, timeout=TIMEOUT))
        check_error(s.get(base + kline_path("ETHUSDT") + "/records", headers=reader,
                          timeout=TIMEOUT), 403, "forbidden")
        check_error(s.get(base + kline_path("ETHUSDT") + "/latest", headers=reader,
                          timeout=TIMEOUT), 403, "forbidden")
        # Routes that name no symbol refuse a pattern-limited token.
        check_error(s.get(base + "/inventory", headers=reader, timeout=TIMEOUT),
                    403, "forbidden")
        check_error(s.get(base + "/v1/kline/series", headers=reader, timeout=TIMEOUT),
                    403, "forbidden")
        # Batch reads: every named symbol must match.
        body = {"timeframe": "1m", "symbols": ["BTCUSDT", "BTCEUR"], "latest": 1}
        got = expect_ok(s.post(base + "/v1/kline/batch", json=body, headers=reader,
                               timeout=TIMEOUT))
        assert {x["symbol"] for x in got["series"]} == {"BTCUSDT", "BTCEUR"}
        for symbols in (["BTCUSDT", "ETHUSDT"], "*"):
            check_error(s.post(base + "/v1/kline/batch", headers=reader, timeout=TIMEOUT,
                               json=dict(body, symbols=symbols)), 403, "forbidden")

        # SQL: a query that reads only matching series works, one that would read
        # others is refused (not filtered).
        sql = base + "/v1/sql"
        q = "SELECT count(*) AS n FROM kline WHERE symbol = 'BTCUSDT'"
        assert expect_ok(s.post(sql, json={"query": q}, headers=reader,
                                timeout=TIMEOUT))["rows"] == [[N_BARS]]
        for q in ("SELECT count(*) AS n FROM kline",
                  "SELECT count(*) AS n FROM kline WHERE symbol = 'ETHUSDT'",
                  "SELECT symbol FROM kline WHERE symbol IN ('BTCUSDT', 'ETHUSDT')",
                  "SELECT count(*) AS n FROM latest('kline', '1m')",
                  "SELECT count(*) AS n FROM asof('kline', '1m', now())"):
            check_error(s.post(sql, json={"query": q}, headers=reader, timeout=TIMEOUT),
                        403, "forbidden")

        # Writes: a BTC* write token writes BTCEUR, not ETHUSDT (nothing written).
        extra = make_klines(3, start_ts=JAN_1_2024_MS + N_BARS * MINUTE_MS, seed=4)
        w = expect_ok(s.post(base + kline_path("BTCEUR") + "/records",
                             json={"records": extra}, headers=writer, timeout=TIMEOUT))
        assert w["written"] == 3
        check_error(s.post(base + kline_path("ETHUSDT") + "/records",
                           json={"records": extra}, headers=writer, timeout=TIMEOUT),
                    403, "forbidden")
        check_error(s.delete(base + kline_path("ETHUSDT"), headers=writer, timeout=TIMEOUT),
                    403, "forbidden")
        many = {"timeframe": "1m",
                "records": [dict(extra[0], symbol="BTCEUR"), dict(extra[0], symbol="ETHUSDT")]}
        check_error(s.post(base + "/v1/kline/records", json=many, headers=writer,
                           timeout=TIMEOUT), 403, "forbidden")
        # A many-series body whose symbols all match is accepted.
        ok = {"timeframe": "1m",
              "records": [dict(extra[1], symbol="BTCEUR"), dict(extra[1], symbol="BTCGBP")]}
        w = expect_ok(s.post(base + "/v1/kline/records", json=ok, headers=writer,
                             timeout=TIMEOUT))
        assert w["written"] == 2, w
        meta = expect_ok(s.get(base + kline_path("ETHUSDT"), headers=bearer(tokens["reader"]),
                               timeout=TIMEOUT))
        assert meta["rows"] == N_BARS, meta


def test_symbol_patterns_flight(tls_server, market, tokens):
    c = tls_server.flight_client()
    reader, writer = flight_opts(tokens["btc-reader"]), flight_opts(tokens["btc-writer"])
    try:
        assert table_records(c.do_get(kline_ticket("BTCUSDT"), reader).read_all()) == \
            market["BTCUSDT"]
        with pytest.raises(flight.FlightUnauthorizedError):
            c.do_get(kline_ticket("ETHUSDT"), reader).read_all()
        with pytest.raises(flight.FlightUnauthorizedError):
            c.get_flight_info(flight.FlightDescriptor.for_command(
                json.dumps({"kind": "kline", "symbol": "ETHUSDT", "timeframe": "1m"})), reader)
        many = flight.Ticket(json.dumps({"kind": "kline", "symbols": ["BTCUSDT", "BTCEUR"],
                                         "timeframe": "1m", "latest": 1}))
        assert c.do_get(many, reader).read_all().num_rows == 2
        for symbols in (["BTCUSDT", "ETHUSDT"], "*"):
            t = flight.Ticket(json.dumps({"kind": "kline", "symbols": symbols,
                                          "timeframe": "1m", "latest": 1}))
            with pytest.raises(flight.FlightUnauthorizedError):
                c.do_get(t, reader).read_all()
        with pytest.raises(flight.FlightUnauthorizedError):
            list(c.list_flights(b"", reader))

        rows = make_klines(2, start_ts=JAN_1_2024_MS + 500 * MINUTE_MS, seed=8)
        many_desc = flight.FlightDescriptor.for_path("kline", "*", "1m")

        def many(symbols: list[str]) -> pa.Table:
            t = kline_table([r for _ in symbols for r in rows])
            return t.append_column("symbol", pa.array([s for s in symbols for _ in rows]))

        with pytest.raises(flight.FlightUnauthorizedError):
            do_put(c, flight.FlightDescriptor.for_path("kline", "ETHUSDT", "1m"),
                   kline_table(rows), writer)
        # A many-series stream with one row of another symbol is refused whole.
        with pytest.raises(flight.FlightUnauthorizedError):
            do_put(c, many_desc, many(["BTCEUR", "ETHUSDT"]), writer)
        eth = c.do_get(kline_ticket("ETHUSDT"), flight_opts(tokens["reader"])).read_all()
        assert eth.num_rows == N_BARS
        res = do_put(c, flight.FlightDescriptor.for_path("kline", "BTCEUR", "1m"),
                     kline_table(rows), writer)
        assert res is not None and res["written"] == 2
        # A many-series stream whose rows all match is accepted: the rows' symbols are
        # checked, not the descriptor's "*" (docs/flight.md: "tickets, descriptors and
        # DoPut rows"; the design only says "many-series bodies").
        res = do_put(c, many_desc, many(["BTCEUR", "BTCGBP"]), writer)
        assert res is not None and res["written"] == 4, res
        eth = c.do_get(kline_ticket("ETHUSDT"), flight_opts(tokens["reader"])).read_all()
        assert eth.num_rows == N_BARS
    finally:
        c.close()

    # Flight SQL (ADBC) with the pattern-limited token.
    kwargs = _adbc_kwargs(tls_server, "btc-reader", tokens["btc-reader"])
    assert _adbc_rows(tls_server.flight_uri, kwargs,
                      "SELECT count(*) FROM kline WHERE symbol = 'BTCUSDT'") == [(N_BARS,)]
    with pytest.raises(adbc.Error) as e:
        _adbc_rows(tls_server.flight_uri, kwargs, "SELECT count(*) FROM kline")
    assert (e.value.status_code == adbc_driver_manager.AdbcStatusCode.UNAUTHORIZED
            or "ermission" in str(e.value)), str(e.value)


# ---------------------------------------------------------------------------
# The scope matrix: every operation of openapi.json, every kind of token

OPEN_PATHS = {"/health", "/metrics", "/openapi.json"}
# Routes outside the document that must stay open.
OPEN_EXTRA = ["/docs", "/docs/", "/console"]
# POST operations that are reads (everything else that is not GET is a write, unless
# under /v1/admin/). Listed by hand after reading openapi.json; the operationId check
# in the test makes sure a new POST named like a read is not forgotten here.
READ_POSTS = {
    "/v1/sql",  # read-only SQL
    "/v1/kline/batch",  # many-series reads
    "/v1/scalar/batch",
    "/v1/kline/{symbol}/{timeframe}/aligned",  # the aligned backtest view
    "/v1/scalar/{symbol}/{timeframe}/{category}/{name}/query",  # predicate query
}
PATH_VALUES = {"symbol": "BTCUSDT", "timeframe": "1h", "category": "indicator",
               "name": "rsi", "kind": "trade"}
TOKEN_KINDS = ["none", "wrong", "reader", "writer", "admin"]
SCOPE_OF_KIND = {"reader": "read", "writer": "write", "admin": "admin"}


def _http_scope(method: str, path: str, op: dict) -> str | None:
    if method == "get" and path in OPEN_PATHS:
        return None
    if path.startswith("/v1/admin/"):
        return "admin"
    # Snapshots are created and deleted with the admin scope, listed with read.
    if path.startswith("/v1/snapshots") and method in ("post", "delete"):
        return "admin"
    # Derive rules likewise.
    if path.startswith("/v1/kline/derive") and method in ("post", "delete"):
        return "admin"
    if method == "get":
        return "read"
    if method == "post" and path in READ_POSTS:
        return "read"
    return "write"


def _http_operations() -> list[tuple[str, str, str | None]]:
    """(method, concrete path, needed scope) for every operation of the document."""
    doc = json.loads(OPENAPI_PATH.read_text())
    ops = []
    for template, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            scope = _http_scope(method, template, op)
            op_id = op.get("operationId", "")
            if method == "post" and re.match(r"(read|query|sql|list|get)_", op_id):
                assert scope == "read", (
                    f"POST {template} ({op_id}) looks like a read: add it to READ_POSTS")
            values: dict[str, list[str]] = {}
            for p in op.get("parameters", []) + item.get("parameters", []):
                if p.get("in") != "path":
                    continue
                name = p["name"]
                enum = p.get("schema", {}).get("enum")
                if enum:
                    values[name] = list(enum)
                elif name == "action":
                    values[name] = ["validate"]
                else:
                    assert name in PATH_VALUES, (
                        f"{method.upper()} {template}: no test value for path parameter "
                        f"{name!r}; add one to PATH_VALUES")
                    values[name] = [PATH_VALUES[name]]
            names = re.findall(r"\{(\w+)\}", template)
            assert set(names) == set(values), (template, names, values)
            for combo in itertools.product(*(values[n] for n in names)):
                path = template
                for n, v in zip(names, combo, strict=True):
                    path = path.replace("{" + n + "}", v)
                ops.append((method, path, scope))
    return ops


def test_scope_matrix_http(tls_server, market, tokens):
    ops = _http_operations()
    assert len(ops) >= 40, f"openapi.json lists only {len(ops)} operations"
    # Not operations of the document, same rules: any other admin action name.
    ops.append(("post", "/v1/admin/no-such-action", "admin"))
    ops += [("get", p, None) for p in OPEN_EXTRA]
    secrets_sent = [tokens[k] for k in TOKEN_KINDS if k != "none"]
    failures = []
    for method, path, scope in ops:
        # Each operation from its own source address: at most 4 failures each.
        with tls_server.session(fresh_source=True) as s:
            for kind in TOKEN_KINDS:
                headers = {} if kind == "none" else bearer(tokens[kind])
                kwargs = {}
                if method in ("post", "put", "patch"):
                    kwargs["json"] = {"dry_run": True} if path.startswith("/v1/admin/") else {}
                r = s.request(method.upper(), tls_server.http_url + path, headers=headers,
                              timeout=TIMEOUT, **kwargs)
                what = f"{method.upper()} {path} [{kind}, needs {scope or 'nothing'}]"
                if scope is None:
                    want = "not 401/403"
                elif kind in ("none", "wrong"):
                    want = 401
                elif SCOPE_OF_KIND[kind] == scope:
                    want = "not 401/403"
                else:
                    want = 403
                if want == "not 401/403":
                    if r.status_code in (401, 403):
                        failures.append(f"{what}: got {r.status_code} {r.text[:200]}")
                    continue
                if r.status_code != want:
                    failures.append(f"{what}: want {want}, got {r.status_code} {r.text[:200]}")
                    continue
                code = {401: "unauthorized", 403: "forbidden"}[want]
                try:
                    body = r.json()
                    ok = set(body) == {"error"} and body["error"]["code"] == code \
                        and body["error"].get("message")
                except (ValueError, KeyError, TypeError):
                    ok = False
                if not ok:
                    failures.append(f"{what}: body is not the {code} error: {r.text[:200]}")
                if any(t in r.text for t in secrets_sent):
                    failures.append(f"{what}: the error echoes a token: {r.text[:200]}")
    assert not failures, f"{len(failures)} of {len(ops) * len(TOKEN_KINDS)} answers wrong:\n" \
        + "\n".join(failures)


# Every Flight action and the scope it needs (None: open). A new action must be added
# here, or the test fails.
FLIGHT_ACTION_SCOPES: dict[str, str | None] = {
    "health": None,
    "inventory": "read",
    "coverage": "read",
    "shard-map": "read",
    "local-read": "read",
    "CreatePreparedStatement": "read",  # Flight SQL
    "ClosePreparedStatement": "read",  # Flight SQL
    "delete-range": "write",
    "snapshot-list": "read",
    "snapshot-create": "admin",
    "snapshot-delete": "admin",
    "validate": "admin",
    "scrub": "admin",
    "repair": "admin",
    "rebuild-manifest": "admin",
    "compact": "admin",
}
ADMIN_BODY = json.dumps({"dry_run": True}).encode()


def _flight_outcome(fn: Callable[..., object], *args: object) -> str:
    try:
        fn(*args)
    except flight.FlightUnauthenticatedError:
        return "unauthenticated"
    except flight.FlightUnauthorizedError:
        return "permission_denied"
    except (pa.ArrowException, OSError) as e:
        # Some calls (GetSchema) raise a plain OSError for every gRPC status; the
        # message names the Flight status.
        msg = str(e)
        if msg.startswith("Flight returned unauthenticated error"):
            return "unauthenticated"
        if msg.startswith("Flight returned unauthorized error"):
            return "permission_denied"
        return f"other error {type(e).__name__}: {msg[:120]}"
    return "ok"


def test_scope_matrix_flight(tls_server, market, tokens):
    c = tls_server.flight_client()
    try:
        listed = [a.type for a in c.list_actions(flight_opts())]
    finally:
        c.close()
    assert sorted(listed) == sorted(FLIGHT_ACTION_SCOPES), (
        f"ListActions gives {listed}: classify every action in FLIGHT_ACTION_SCOPES")

    ticket = kline_ticket("BTCUSDT")
    cmd = flight.FlightDescriptor.for_command(
        json.dumps({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m"}))
    put_desc = flight.FlightDescriptor.for_path("kline", "BTCUSDT", "1h")  # not registered
    put_table = kline_table(make_klines(2, seed=12))

    calls: list[tuple[str, str | None, Callable]] = [
        ("ListActions", None, lambda cl, o: list(cl.list_actions(o))),
        ("DoGet", "read", lambda cl, o: cl.do_get(ticket, o).read_all()),
        ("GetFlightInfo", "read", lambda cl, o: cl.get_flight_info(cmd, o)),
        ("GetSchema", "read", lambda cl, o: cl.get_schema(cmd, o)),
        ("ListFlights", "read", lambda cl, o: list(cl.list_flights(b"", o))),
        ("DoPut", "write", lambda cl, o: do_put(cl, put_desc, put_table, o)),
    ]
    for name, scope in FLIGHT_ACTION_SCOPES.items():
        body = ADMIN_BODY if scope == "admin" else b""
        calls.append((f"DoAction {name}", scope,
                      lambda cl, o, n=name, b=body: list(cl.do_action(flight.Action(n, b), o))))

    failures = []
    for what, scope, fn in calls:
        cl = tls_server.flight_client(fresh_source=True)
        try:
            for kind in TOKEN_KINDS:
                opts = flight_opts(None if kind == "none" else tokens[kind])
                got = _flight_outcome(fn, cl, opts)
                if scope is None or (kind in SCOPE_OF_KIND and SCOPE_OF_KIND[kind] == scope):
                    ok = got not in ("unauthenticated", "permission_denied")
                    want = "neither Unauthenticated nor PermissionDenied"
                elif kind in ("none", "wrong"):
                    ok, want = got == "unauthenticated", "Unauthenticated"
                else:
                    ok, want = got == "permission_denied", "PermissionDenied"
                if not ok:
                    failures.append(f"{what} [{kind}, needs {scope or 'nothing'}]: "
                                    f"want {want}, got {got}")
        finally:
            cl.close()
    assert not failures, "\n".join(failures)

    # The open calls answer for real, whatever token comes with them.
    cl = tls_server.flight_client(fresh_source=True)
    try:
        for kind in ("none", "wrong"):
            opts = flight_opts(None if kind == "none" else tokens[kind])
            assert {a.type for a in cl.list_actions(opts)} == set(FLIGHT_ACTION_SCOPES)
            res = list(cl.do_action(flight.Action("health", b""), opts))
            assert json.loads(res[0].body.to_pybytes())["status"] == "ok"
    finally:
        cl.close()


# ---------------------------------------------------------------------------
# The tokens file, edited while the server runs


def _status_with(srv: TlsServer, token: str) -> int:
    """Status of a read with `token`, from a fresh source address (it may be a 401)."""
    with srv.session(fresh_source=True) as s:
        return s.get(srv.http_url + "/v1/kline/series", headers=bearer(token),
                     timeout=TIMEOUT).status_code


def _wait_status(srv: TlsServer, token: str, want: int, what: str) -> None:
    deadline = time.monotonic() + RELOAD_WAIT_S
    got = None
    while time.monotonic() < deadline:
        got = _status_with(srv, token)
        if got == want:
            return
        time.sleep(0.25)
    pytest.fail(f"{what}: after {RELOAD_WAIT_S}s still {got}, want {want}")


def test_tokens_file_reloaded_while_running(tls_server, market, tokens):
    srv = tls_server
    f = srv.tokens_file
    late1 = cli_create(f, "late-1", "read")
    _wait_status(srv, late1, 200, "a token added with `fastk token create`")
    late2 = cli_create(f, "late-2", "read", "BTC*")
    _wait_status(srv, late2, 403, "a second added token (BTC* only: the listing is 403)")
    with srv.session(token=late2) as s:
        expect_ok(s.get(srv.http_url + kline_path("BTCUSDT"), timeout=TIMEOUT))

    listed = fastk_cli("token", "list", "--tokens-file", str(f))
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()}
    assert set(rows) == set(TOKEN_SPECS) | {"late-1", "late-2"}, listed.stdout
    assert rows["late-2"][1:] == ["read", "BTC*"], rows["late-2"]
    assert rows["btc-writer"][1:] == ["write", "BTC*"], rows["btc-writer"]
    assert set(rows["full"][1].split(",")) == {"read", "write", "admin"}
    for t in [late1, late2, *tokens.values()]:
        assert t not in listed.stdout and sha256_hex(t) not in listed.stdout

    # Remove late-1 by rewriting the file without it: it becomes 401.
    entries = [e for e in read_tokens_file(f) if e["name"] != "late-1"]
    assert len(entries) == len(TOKEN_SPECS) + 1
    write_tokens_file(f, entries)
    _wait_status(srv, late1, 401, "a token removed from the file")
    with srv.session(fresh_source=True) as s:
        r = s.get(srv.http_url + "/v1/kline/series", headers=bearer(late1), timeout=TIMEOUT)
        check_error(r, 401, "unauthorized")
    assert _status_with(srv, tokens["reader"]) == 200
    with srv.session(token=late2) as s:
        expect_ok(s.get(srv.http_url + kline_path("BTCUSDT"), timeout=TIMEOUT))


# ---------------------------------------------------------------------------
# Certificate rotation


def _new_connection_cn(srv: TlsServer) -> str:
    ctx = srv.ssl_context()
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=TIMEOUT) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as ss:
            return peer_cn(ss.getpeercert())


def test_certificate_rotation(tls_server, market, tokens):
    srv = tls_server
    assert _new_connection_cn(srv) == SERVER_CN
    # An open keep-alive connection (http.client: one socket we can watch) and a
    # requests session.
    conn = http.client.HTTPSConnection("127.0.0.1", srv.http_port, timeout=TIMEOUT,
                                       context=srv.ssl_context())
    s = srv.session(token=tokens["reader"])
    try:
        conn.request("GET", "/health")
        r = conn.getresponse()
        assert r.status == 200, r.read()
        r.read()
        sock = conn.sock
        assert peer_cn(sock.getpeercert()) == SERVER_CN
        expect_ok(s.get(srv.http_url + kline_path("BTCUSDT"), timeout=TIMEOUT))

        srv.install_cert(srv.pki.rotated_crt, srv.pki.rotated_key)
        deadline = time.monotonic() + RELOAD_WAIT_S
        seen = None
        while time.monotonic() < deadline:
            # The old connection keeps working, on the same socket and session.
            conn.request("GET", "/health")
            r = conn.getresponse()
            assert r.status == 200
            r.read()
            assert conn.sock is sock, "the keep-alive connection was dropped"
            expect_ok(s.get(srv.http_url + kline_path("BTCUSDT"), timeout=TIMEOUT))
            seen = _new_connection_cn(srv)
            if seen == ROTATED_CN:
                break
            time.sleep(0.25)
        assert seen == ROTATED_CN, f"new connections still get CN={seen} after {RELOAD_WAIT_S}s"
        assert peer_cn(conn.sock.getpeercert()) == SERVER_CN
        conn.request("GET", "/health")
        r = conn.getresponse()
        assert r.status == 200 and conn.sock is sock
        r.read()
    finally:
        conn.close()
        s.close()

    # New clients of every kind accept the new certificate.
    with srv.session(token=tokens["reader"]) as fresh:
        page = expect_ok(fresh.get(srv.http_url + kline_path("BTCUSDT") + "/records",
                                   timeout=TIMEOUT))
        assert page["records"] == market["BTCUSDT"]
    c = srv.flight_client()
    try:
        assert c.do_get(kline_ticket("BTCUSDT"), flight_opts(tokens["reader"])) \
            .read_all().num_rows == N_BARS
    finally:
        c.close()


def test_bad_certificate_file_keeps_the_old_config(tls_server, tokens):
    srv = tls_server
    before = _new_connection_cn(srv)
    log_len = len(srv.log_text())
    tmp = srv.cert_path.with_name("garbage.new")
    tmp.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    os.replace(tmp, srv.cert_path)
    try:
        deadline = time.monotonic() + RELOAD_WAIT_S
        complaint = None
        while time.monotonic() < deadline and complaint is None:
            new_lines = srv.log_text()[log_len:].splitlines()
            complaint = next((line for line in new_lines
                              if re.search(r"\b(WARN|ERROR)\b", line)
                              and re.search(r"(?i)tls|cert", line)), None)
            time.sleep(0.25)
        assert complaint is not None, (
            f"no warning logged for a bad certificate file:\n{srv.log_tail()}")
        # Still served with the previous certificate.
        assert _new_connection_cn(srv) == before
        with srv.session() as s:
            assert s.get(srv.http_url + "/health", timeout=TIMEOUT).status_code == 200
        srv.assert_alive()
    finally:
        srv.install_cert(srv.pki.rotated_crt, srv.pki.rotated_key)
    time.sleep(1.5)
    assert _new_connection_cn(srv) == ROTATED_CN


# ---------------------------------------------------------------------------
# Audit of refused requests


def test_refused_writes_leave_no_accepted_audit_line(tls_server, market, tokens):
    """A write refused 403 (outside the token's symbols or scopes) is not an accepted
    write: no `fastk::audit` "accepted" line may claim it, and each refusal has a
    "refused" audit line naming the token."""
    srv = tls_server
    row = make_klines(1, start_ts=JAN_1_2024_MS + 2000 * MINUTE_MS, seed=15)[0]
    mark = len(srv.log_text())
    with srv.session() as s:
        many = {"timeframe": "1m", "records": [dict(row, symbol="BTCEUR"),
                                               dict(row, symbol="ETHUSDT")]}
        check_error(s.post(srv.http_url + "/v1/kline/records", json=many,
                           headers=bearer(tokens["btc-writer"]), timeout=TIMEOUT),
                    403, "forbidden")
        check_error(s.post(srv.http_url + kline_path("ETHUSDT") + "/records",
                           json={"records": [row]}, headers=bearer(tokens["btc-writer"]),
                           timeout=TIMEOUT), 403, "forbidden")
        check_error(s.post(srv.http_url + "/v1/admin/validate", json={},
                           headers=bearer(tokens["writer"]), timeout=TIMEOUT),
                    403, "forbidden")
    c = srv.flight_client()
    try:
        mixed = kline_table([row, row]).append_column("symbol", pa.array(["BTCEUR", "ETHUSDT"]))
        with pytest.raises(flight.FlightUnauthorizedError):
            do_put(c, flight.FlightDescriptor.for_path("kline", "*", "1m"), mixed,
                   flight_opts(tokens["btc-writer"]))
        with pytest.raises(flight.FlightUnauthorizedError):
            do_put(c, flight.FlightDescriptor.for_path("kline", "ETHUSDT", "1m"),
                   kline_table([row]), flight_opts(tokens["btc-writer"]))
    finally:
        c.close()
    time.sleep(0.5)  # the log is written by the server asynchronously
    lines = [ln for ln in srv.log_text()[mark:].splitlines() if "fastk::audit" in ln]
    audit = [ln for ln in lines if "accepted" in ln]
    assert not audit, "refused requests were audited as accepted:\n" + "\n".join(audit)
    refused = [ln for ln in lines if "refused" in ln]
    assert len(refused) >= 5, "every refusal is audited:\n" + "\n".join(lines)
    assert sum('btc-writer' in ln for ln in refused) >= 4, "\n".join(refused)
    assert any('"writer"' in ln and "admin" in ln for ln in refused), "\n".join(refused)


# ---------------------------------------------------------------------------
# Shards over mutual TLS


_NODE_EXT = _SERVER_EXT.replace("extendedKeyUsage = serverAuth",
                                "extendedKeyUsage = serverAuth, clientAuth")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shards_forward_over_mutual_tls(tmp_path_factory, pki, tokens):
    """Two nodes of a shard map under mutual TLS: a many-series GetFlightInfo asked of
    node a is forwarded to node b over TLS (b refuses any client without a certificate
    of the CA, so the forward presents a's), and the endpoints are located on b."""
    d = pki.dir
    _make_leaf(d, "node", "fastk-node", "ca", 4001, _NODE_EXT)
    ports = {"a": _free_port(), "b": _free_port()}
    shard_map = {"nodes": {n: f"grpc+tls://127.0.0.1:{p}" for n, p in ports.items()},
                 "ranges": [{"from": "", "node": "a"}, {"from": "M", "node": "b"}]}
    nodes: dict[str, TlsServer] = {}
    try:
        for name, port in ports.items():
            workdir = tmp_path_factory.mktemp(f"shard-tls-{name}")
            tokens_file = workdir / "tokens.toml"
            write_tokens_file(tokens_file, _token_entries(tokens))
            srv = TlsServer(workdir, pki, tokens_file, mutual=True)
            srv.extra_env.update({"FASTK__CLUSTER__NODE": name,
                                  "FASTK__CLUSTER__SHARD_MAP": json.dumps(shard_map),
                                  "FASTK__FLIGHT__ADDR": f"127.0.0.1:{port}"})
            srv.install_cert(d / "node.crt", d / "node.key")
            srv.start()
            nodes[name] = srv
        bars = make_klines(20, seed=31)
        for sym, owner in (("ADA", "a"), ("XRP", "b")):
            srv = nodes[owner]
            with srv.session(tokens["full"]) as s:
                register(s, srv.http_url, sym, tokens["full"])
                w = expect_ok(s.post(srv.http_url + kline_path(sym) + "/records",
                                     json={"records": bars}, timeout=TIMEOUT))
                assert w["written"] == len(bars)
        c = nodes["a"].flight_client()
        try:
            cmd = {"kind": "kline", "symbols": "*", "timeframe": "1m"}
            info = c.get_flight_info(
                flight.FlightDescriptor.for_command(json.dumps(cmd).encode()),
                flight_opts(tokens["full"]))
        finally:
            c.close()
        located = {e.locations[0].uri.decode() for e in info.endpoints if e.locations}
        assert located == {shard_map["nodes"]["b"]}, info.endpoints
        assert info.total_records == 2 * len(bars)
        # The forward was TLS with a's certificate: b logged no failed handshake and
        # answered; a plain client is refused by b.
        plain = flight.connect(f"grpc://127.0.0.1:{ports['b']}")
        with pytest.raises(flight.FlightError):
            list(plain.list_actions())
        plain.close()
    finally:
        for srv in nodes.values():
            if srv.proc is not None and srv.proc.poll() is None:
                stop_cleanly(srv)


# ---------------------------------------------------------------------------
# fastk import / export against a TLS server


def test_import_and_export_cli_over_mutual_tls(mtls_server, tokens, tmp_path):
    """`fastk import` registers over HTTPS and writes over grpc+tls with the CA and a
    client certificate; `fastk export` reads it back; without --ca-cert the command
    says what is missing."""
    srv = mtls_server
    rows = make_klines(30, seed=41)
    src = tmp_path / "in.csv"
    cols = ["ts", *KLINE_COLS]
    src.write_text(",".join(cols) + "\n" + "".join(
        ",".join(str(r[c]) for c in cols) + "\n" for r in rows))
    tls_args = ["--ca-cert", str(srv.pki.ca), "--client-cert", str(srv.pki.client_crt),
                "--client-key", str(srv.pki.client_key), "--token", tokens["full"]]
    sym = "BTCCLI"
    p = fastk_cli("import", "kline", "--symbol", sym, "--timeframe", "1m",
                  "--price-scale", "100", "--volume-scale", "1000", "--prices", "raw", "-q",
                  "--flight", srv.flight_uri, "--server", srv.http_url, *tls_args, str(src))
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out.csv"
    p = fastk_cli("export", "kline", "--symbol", sym, "--timeframe", "1m", "-q",
                  "--flight", srv.flight_uri, *tls_args, "-o", str(out))
    assert p.returncode == 0, p.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == len(rows) + 1, lines[:3]
    p = fastk_cli("export", "kline", "--symbol", sym, "--timeframe", "1m", "-q",
                  "--flight", srv.flight_uri, "--token", tokens["full"], "-o", str(out))
    assert p.returncode != 0 and "--ca-cert" in p.stderr, p.stderr


# ---------------------------------------------------------------------------
# The client package over TLS


def _package():
    try:
        import fastk
    except ImportError:  # not installed: the checkout's copy
        import sys
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
        import fastk
    return fastk


def test_client_package_over_tls_and_mutual_tls(tls_server, mtls_server, market, tokens):
    """`fastk.connect` with `tls_root_certs` (and, under mutual TLS, `cert_chain` and
    `private_key`) reaches both protocols: registration over HTTPS, a write and a read
    over Flight, SQL; without the client certificate the mutual-TLS server refuses."""
    fastk = _package()
    srv = tls_server
    with fastk.connect(srv.flight_uri, token=tokens["full"], tls_root_certs=srv.pki.ca_pem,
                       http_url=srv.http_url) as c:
        t = c.read("kline", "BTCUSDT", "1m", to="arrow")
        assert t.num_rows == len(market["BTCUSDT"])
        assert t.column("close").to_pylist() == [r["close"] for r in market["BTCUSDT"]]
        n = c.sql("SELECT count(*) AS n FROM kline WHERE symbol = 'ETHUSDT'").column("n")[0]
        assert n.as_py() == len(market["ETHUSDT"])
    m = mtls_server
    pem = dict(tls_root_certs=m.pki.ca_pem, cert_chain=m.pki.client_crt.read_bytes(),
               private_key=m.pki.client_key.read_bytes())
    sym = "BTCPKG"
    with fastk.connect(m.flight_uri, token=tokens["full"], http_url=m.http_url, **pem) as c:
        info = c.register_kline(sym, "1m", 2, 3)  # HTTPS with the client certificate
        assert info["symbol"] == sym
        rows = make_klines(5, seed=21)
        c.write("kline", sym, kline_table(rows), timeframe="1m")
        back = c.read("kline", sym, "1m", to="arrow")
        assert back.column("close").to_pylist() == [r["close"] for r in rows]
    with pytest.raises(Exception) as refused:
        with fastk.connect(m.flight_uri, token=tokens["full"],
                           tls_root_certs=m.pki.ca_pem) as c:
            c.read("kline", sym, "1m", to="arrow")
    assert not isinstance(refused.value, AssertionError)


# ---------------------------------------------------------------------------
# Brute force, secrets, audit (last: it throttles 127.0.0.1 on tls_server)


def test_brute_force_metrics_secrets_and_audit(tls_server, mtls_server, market, tokens):
    srv = tls_server
    url = srv.http_url
    with srv.session() as s:
        before = s.get(url + "/metrics", timeout=TIMEOUT).text
        # One 403, counted apart from the 401s.
        check_error(s.get(url + "/inventory", headers=bearer(tokens["writer"]),
                          timeout=TIMEOUT), 403, "forbidden")
        n = 8
        t0 = time.monotonic()
        for _ in range(n):
            r = s.get(url + "/v1/kline/series", headers=bearer(tokens["wrong"]),
                      timeout=TIMEOUT)
            check_error(r, 401, "unauthorized")
        elapsed = time.monotonic() - t0
        after = s.get(url + "/metrics", timeout=TIMEOUT)
        assert after.status_code == 200
        after = after.text
        # The right token still works from the throttled address.
        expect_ok(s.get(url + "/v1/kline/series", headers=bearer(tokens["reader"]),
                        timeout=TIMEOUT))

    name = "fastk_auth_failures_total"
    grown = metric_sum(after, name, reason="unauthorized") - \
        metric_sum(before, name, reason="unauthorized")
    assert grown >= n, (grown, [ln for ln in after.splitlines() if "fastk_auth" in ln])
    assert metric_sum(after, name, reason="forbidden") >= \
        metric_sum(before, name, reason="forbidden") + 1
    assert metric_sum(after, "fastk_auth_throttled_total") > 0, \
        [ln for ln in after.splitlines() if "fastk_auth" in ln]
    # At least the 6th, 7th and 8th failures waited (100 + 200 + 400 ms).
    assert elapsed >= 0.6, f"{n} failed attempts took {elapsed:.2f}s: no delay"

    # Audit: an accepted write and an accepted admin request name their tokens.
    with srv.session() as s:
        expect_ok(s.post(url + "/v1/admin/validate", json={}, headers=bearer(tokens["admin"]),
                         timeout=TIMEOUT))
        extra = make_klines(1, start_ts=JAN_1_2024_MS + 900 * MINUTE_MS, seed=13)
        expect_ok(s.post(url + kline_path("BTCEUR") + "/records", json={"records": extra},
                         headers=bearer(tokens["writer"]), timeout=TIMEOUT))
    mark = len(srv.log_text())
    c = srv.flight_client()
    try:
        list(c.do_action(flight.Action("validate", b"{}"), flight_opts(tokens["admin"])))
    finally:
        c.close()
    time.sleep(0.5)  # the log is written by the server asynchronously
    log = srv.log_text()
    flight_audit = [ln for ln in log[mark:].splitlines() if "fastk::audit" in ln]
    assert any(re.search(r'\btoken="?admin"?(\s|$)', ln) and "validate" in ln
               for ln in flight_audit), \
        "no audit line for the Flight admin action:\n" + log[mark:]
    audit = [ln for ln in log.splitlines() if "fastk::audit" in ln]
    assert any(re.search(r'\btoken="?writer"?(\s|$)', ln)
               and re.search(r'\bscope="?write"?(\s|$)', ln)
               and "/v1/kline/BTCEUR/1m/records" in ln for ln in audit), \
        "no audit line (token, scope, route) for the write:\n" + "\n".join(audit[-20:])
    assert any(re.search(r'\btoken="?admin"?(\s|$)', ln) for ln in audit), \
        "no audit line for the admin token:\n" + "\n".join(audit[:20])

    # No secret anywhere: tokens, session tokens, or their hashes.
    with mtls_server.session() as s:
        mtls_metrics = s.get(mtls_server.http_url + "/metrics", timeout=TIMEOUT).text
    assert SECRETS, "no secrets were collected"
    for where, text in (("tls log", log), ("mtls log", mtls_server.log_text()),
                        ("tls /metrics", after), ("mtls /metrics", mtls_metrics)):
        for secret in SECRETS:
            assert secret not in text, f"a token appears in the {where}"
            assert sha256_hex(secret) not in text, f"a token's sha256 appears in the {where}"
        assert tokens["wrong"] not in text, f"a presented token appears in the {where}"
        for basic in (base64.b64encode(f"reader:{tokens['reader']}".encode()).decode(),):
            assert basic not in text
