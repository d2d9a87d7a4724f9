"""The `tls` workload: what TLS costs the bulk read of workload 2, one year of 1m
klines of one symbol into a Polars DataFrame over Arrow Flight.

One FastK store, one server at a time (a store is locked by the process that serves
it, so two servers cannot share the data): the first symbol's bars (the whole
series, one DoPut, as the other workloads load it) are written once through a plain
server, which is then stopped. Each round then starts the server on that same root
twice, once plain (`grpc://`) and once with `[tls]` (`grpc+tls://`, a P-256
certificate), in alternating order from round to round, so the load of the shared
machine falls on both. In each start: one untimed read (the first read of a process
maps and verifies the chunks), `tls_reps` timed reads of the same ticket on one
connection (the steady state: the handshake is paid once per connection), then
`tls_connects` fresh connections, each timed through its first call (the `health`
action: connection set-up, and for TLS the handshake). The client is the one of
workload 2: `pyarrow.flight`, DoGet of the JSON ticket, `read_all()`,
`pl.from_arrow`.

Reported per way: median, best and p99 of every timed read of every round, GB/s of
Arrow data, the median per round, and the median new connection; `tls_vs_plain` is
the TLS median over the plain one (above 1: TLS is slower by that factor), with the
same ratio of the best times and of each round's medians.

With `--ceiling-bin` (the Rust arrow-flight client of benches/flight_ceiling.rs, whose
tonic uses rustls as the server does), each start also runs that client for
`tls_reps` reads of the same ticket on one connection (`client --ca=CA` on a TLS
start); `rust_tls_vs_plain` is its TLS median over its plain one. The two ratios
split the cost: the Rust client's is mostly the server's encryption, pyarrow's adds
its gRPC core's decryption (one thread, 8 KB staging buffers). The Rust client's
answers are checked by row count.

Checked: every answer, the untimed ones and every timed one (after its clock
stopped): the row count, the sum of `close` and the first and last `ts` against the
dataset; the untimed read of each start compares every column. On a TLS start the
server is taken as ready only once `/health` answers over HTTPS verified with the
run's CA, and a plain `grpc://` client must be refused, so a TLS figure can never be
a plaintext one.

The certificates are made with the `openssl` command (OpenSSL 3) in the run's work
directory and removed with it; nothing is committed. Run it alone (after
`cargo build --release`):

    PYTHONPATH=bench bench/.venv/bin/python -m fastk_bench --only tls --out /tmp/fastk-tls
    PYTHONPATH=bench bench/.venv/bin/python -m fastk_bench --quick --only tls --out /tmp/fastk-tls-quick
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import ssl
import statistics
import subprocess
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight

from . import checks, dataset, systems
from .feeds import Restarted
from .workloads import KLINE_ROW_BYTES, _times_summary, log

WORKLOADS = ("tls",)
PLAIN = "FastK Flight (plain)"
TLS = "FastK Flight (TLS)"
ORDER = (PLAIN, TLS)
# The same reads by the Rust arrow-flight client (benches/flight_ceiling.rs, tonic with
# rustls): what TLS costs the server, apart from what it costs pyarrow's gRPC client.
RUST = {PLAIN: "FastK Flight (plain), Rust client", TLS: "FastK Flight (TLS), Rust client"}
# The server certificate names what the client dials; the servers bind loopback only.
SERVER_SAN = "DNS:localhost, IP:127.0.0.1"
START_TIMEOUT_S = 120


def params(q: bool) -> dict:
    return dict(tls_rounds=2 if q else 4, tls_reps=3 if q else 10, tls_connects=3 if q else 20)


# --------------------------------------------------------------------------- certificates


def openssl_version() -> str:
    openssl = shutil.which("openssl")
    if openssl is None:
        return "not installed"
    p = subprocess.run([openssl, "version"], capture_output=True, text=True)
    return p.stdout.strip() or p.stderr.strip()


def _openssl(d: pathlib.Path, *args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is not installed (apt install openssl): no certificates")
    p = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed ({p.returncode}): {p.stderr.strip()[-500:]}")


@dataclasses.dataclass
class Certs:
    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path


def make_certs(d: pathlib.Path) -> Certs:
    """A throwaway CA and a server certificate signed by it, ECDSA P-256 keys (PKCS#8),
    the commands of docs/operations.md ("Certificates")."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(d, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=FastK bench CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    (d / "server.ext").write_text("basicConstraints = critical, CA:FALSE\n"
                                  "keyUsage = critical, digitalSignature\n"
                                  "extendedKeyUsage = serverAuth\n"
                                  f"subjectAltName = {SERVER_SAN}\n")
    _openssl(d, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    _openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", "server.pem", "-extfile", "server.ext")
    _openssl(d, "verify", "-CAfile", "ca.pem", "server.pem")
    for k in ("ca.key", "server.key"):
        os.chmod(d / k, 0o600)
    return Certs(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")


# --------------------------------------------------------------------------- answers


@dataclasses.dataclass
class Expected:
    rows: int
    close_sum: int
    first_ts: int
    last_ts: int
    columns: dict  # name -> numpy array, `ts` as epoch ms


def expected(table: pa.Table, start: int, end: int) -> Expected:
    """What a read of [start, end] must answer, from the dataset itself."""
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    lo, hi = int(np.searchsorted(ts, start)), int(np.searchsorted(ts, end, side="right"))
    cols = {c: table.column(c).to_numpy()[lo:hi] for c in dataset.KLINE_COLUMNS}
    cols["ts"] = ts[lo:hi]
    return Expected(rows=hi - lo, close_sum=int(cols["close"].sum()), first_ts=int(ts[lo]),
                    last_ts=int(ts[hi - 1]), columns=cols)


def _ts_ms(df: pl.DataFrame) -> np.ndarray:
    return df["ts"].dt.epoch("ms").to_numpy()


def check(df: pl.DataFrame, want: Expected, every_column: bool = False) -> None:
    """Raises unless `df` is the expected answer (row count, sum of close, first and
    last ts; with `every_column`, every column compared value by value)."""
    assert isinstance(df, pl.DataFrame), f"{type(df).__name__}, not a Polars DataFrame"
    assert df.height == want.rows, f"{df.height} rows, expected {want.rows}"
    close_sum = int(df["close"].sum())
    assert close_sum == want.close_sum, f"sum of close {close_sum}, expected {want.close_sum}"
    ts = _ts_ms(df)
    assert (int(ts[0]), int(ts[-1])) == (want.first_ts, want.last_ts), (
        f"ts from {ts[0]} to {ts[-1]}, expected {want.first_ts} to {want.last_ts}")
    if every_column:
        assert np.array_equal(ts, want.columns["ts"]), "ts differs"
        for c in dataset.KLINE_COLUMNS:
            assert np.array_equal(df[c].to_numpy(), want.columns[c]), f"{c} differs"


# --------------------------------------------------------------------------- one start


def _env(certs: Certs | None) -> dict:
    """The server's [tls] keys: the run's certificate, or none (an inherited
    FASTK__TLS__* variable is blanked so the plain server is plain)."""
    if certs is None:
        return {k: "" for k in os.environ if k.startswith("FASTK__TLS__")}
    return {"FASTK__TLS__CERT_PATH": str(certs.cert), "FASTK__TLS__KEY_PATH": str(certs.key),
            "FASTK__TLS__CLIENT_CA_PATH": ""}


def _refuses_plaintext(addr: str) -> bool:
    """True when a plain gRPC call to `addr` fails (as it must on a TLS port)."""
    c = flight.connect(f"grpc://{addr}")
    try:
        list(c.do_action(flight.Action("health", b""), flight.FlightCallOptions(timeout=10)))
        return False
    except Exception:  # noqa: BLE001 - any failure is a refusal here
        return True
    finally:
        c.close()


def _rust_reads(ceiling_bin: pathlib.Path, label: str, server: Restarted, certs: Certs, ticket: bytes,
                want: Expected, reps: int) -> dict:
    """`reps` reads of `ticket` by the Rust client on one connection (after one warm-up):
    its median and best, and the rows it received, checked against `want`."""
    ca = [f"--ca={certs.ca}"] if label == TLS else []
    p = subprocess.run([str(ceiling_bin), "client", server.flight, str(reps), f"year={ticket.decode()}", *ca],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"Rust client failed ({p.returncode}): {p.stderr.strip()[-300:]}")
    got = json.loads(p.stdout.strip().splitlines()[-1])["year"]
    checks.expect("tls", f"{RUST[label]} rows", got["rows"], want.rows)
    return got


def _phase(label: str, server: Restarted, certs: Certs, ticket: bytes, want: Expected, reps: int,
           connects: int, ceiling_bin: pathlib.Path | None = None) -> dict:
    """The timed reads and fresh connections of one server start."""
    if label == TLS:
        if not _refuses_plaintext(server.flight):
            raise AssertionError("the TLS server answered a plain grpc:// call: TLS is not on")
        uri, kwargs = f"grpc+tls://{server.flight}", {"tls_root_certs": certs.ca.read_bytes()}
    else:
        uri, kwargs = f"grpc://{server.flight}", {}
    client = flight.connect(uri, **kwargs)
    try:
        def read() -> pl.DataFrame:
            return pl.from_arrow(client.do_get(flight.Ticket(ticket)).read_all())

        check(read(), want, every_column=True)  # untimed: the first read maps and verifies
        checks.count("tls")
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            df = read()
            times.append(time.perf_counter() - t)
            try:
                check(df, want)  # every timed answer, off the clock
            except AssertionError as e:
                raise checks.Mismatch(f"tls: {label}: {e}") from e
            checks.count("tls")
    finally:
        client.close()
    # A subchannel pool of its own per channel, so no new channel can ride on a
    # connection (and a TLS session) that another one opened.
    fresh = {**kwargs, "generic_options": [("grpc.use_local_subchannel_pool", 1)]}
    conn_times = []
    for _ in range(connects):
        t = time.perf_counter()
        c = flight.connect(uri, **fresh)
        try:
            list(c.do_action(flight.Action("health", b"")))
            conn_times.append(time.perf_counter() - t)
        finally:
            c.close()
    rust = None
    if ceiling_bin:
        try:
            rust = _rust_reads(ceiling_bin, label, server, certs, ticket, want, reps)
        except checks.Mismatch:
            raise
        except Exception as e:  # noqa: BLE001 - a failed Rust way, not a failed pyarrow one
            rust = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            log(f"  {RUST[label]}: FAILED {rust['error']}")
    return {"times": times, "connect_times": conn_times, "rust": rust}


# --------------------------------------------------------------------------- the workload


def run(results: dict, P: dict, *, binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path,
        spec: dataset.Spec, ceiling_bin: pathlib.Path | None = None) -> dict:
    rounds, reps, connects = P["tls_rounds"], P["tls_reps"], P["tls_connects"]
    results.setdefault("versions", {})["openssl"] = openssl_version()
    symbol = dataset.SYMBOLS[0]
    start, end = spec.year_range
    table = dataset.kline_table(spec, 0)
    want = expected(table, start, end)
    ticket = json.dumps({"kind": "kline", "symbol": symbol, "timeframe": "1m", "start_ts": start,
                         "end_ts": end}).encode()
    out: dict = {"symbol": symbol, "start_ts": start, "end_ts": end, "rows": want.rows,
                 "bytes": want.rows * KLINE_ROW_BYTES, "rounds": rounds, "reps": reps, "connects": connects,
                 "systems": {}}
    out["how"] = {
        PLAIN: (f"pyarrow.flight.connect('grpc://127.0.0.1:PORT'); DoGet {ticket.decode()}, read_all(), "
                "pl.from_arrow; one connection per server start"),
        TLS: ("the same over pyarrow.flight.connect('grpc+tls://127.0.0.1:PORT', tls_root_certs=<the CA's PEM>), "
              "the server started with FASTK__TLS__CERT_PATH / FASTK__TLS__KEY_PATH (no client certificate)"),
        "certificates": (f"openssl: a P-256 CA and a P-256 server certificate ({SERVER_SAN}), PKCS#8 keys, "
                         "made in the run's work directory and removed with it"),
        "rounds": (f"{symbol}'s bars loaded once (one DoPut) through a plain server on the store's root; then "
                   f"{rounds} rounds, each starting the server on that root plain and with TLS, in alternating "
                   f"order; per start one untimed read, {reps} timed reads on one connection, and {connects} "
                   "new connections timed through their first call (the health action)"),
    }
    certs = make_certs(work / "certs")
    root = work / "store"
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    raw: dict = {label: {"times": [], "connect_times": [], "round_ms": [], "ready_ms": [], "rust_ms": [],
                         "rust_best_ms": []} for label in ORDER}
    if ceiling_bin:
        out["how"]["rust"] = (f"{RUST[PLAIN]} / {RUST[TLS]}: benches/flight_ceiling.rs `client ADDR {reps} "
                              "year=TICKET` (arrow-flight over tonic; `--ca=<the CA's PEM>` for TLS, rustls with "
                              "the ring provider), run in each start after the pyarrow reads; its median per start")
    failed: dict = {}
    try:
        log(f"tls: loading {symbol} ({table.num_rows:,} bars) through a plain server")
        server = Restarted(binary, root, logs / "fastk-tls-load.log", START_TIMEOUT_S, env_extra=_env(None))
        try:
            loader = systems.FastKFlight(server, "?")
            one = dataset.Dataset(spec=spec, symbols=[symbol], kline={symbol: table},
                                  scalar=dataset.scalar_table(dataclasses.replace(spec, scalar_rows=1_440)))
            loader.ingest(one)
            loader.client.close()
            loader.http.conn.close()
        finally:
            server.stop()
        os.sync()  # untimed: no writeback of the load during the reads
        for r in range(rounds):
            for label in ORDER if r % 2 == 0 else ORDER[::-1]:
                if label in failed:
                    continue
                tls_on = label == TLS
                try:
                    server = Restarted(binary, root, logs / f"fastk-tls-{'tls' if tls_on else 'plain'}-{r}.log",
                                       START_TIMEOUT_S, env_extra=_env(certs if tls_on else None),
                                       ssl_context=ctx if tls_on else None)
                except Exception as e:  # noqa: BLE001 - a failed way, not a failed run
                    failed[label] = {"error": f"could not start: {type(e).__name__}: {str(e)[-300:]}"}
                    log(f"  {label}: FAILED to start: {e}")
                    continue
                try:
                    got = _phase(label, server, certs, ticket, want, reps, connects, ceiling_bin)
                except checks.Mismatch:
                    raise
                except Exception as e:  # noqa: BLE001
                    failed[label] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                    log(f"  {label}: FAILED {type(e).__name__}: {e}")
                    continue
                finally:
                    server.stop()
                d = raw[label]
                d["times"] += got["times"]
                d["connect_times"] += got["connect_times"]
                d["round_ms"].append(statistics.median(got["times"]) * 1e3)
                d["ready_ms"].append(server.ready_s * 1e3)
                if got["rust"] is not None and "error" in got["rust"]:
                    d["rust_error"] = got["rust"]["error"]
                elif got["rust"] is not None:
                    d["rust_ms"].append(got["rust"]["median_s"] * 1e3)
                    d["rust_best_ms"].append(got["rust"]["best_s"] * 1e3)
                    log(f"  round {r + 1}, {RUST[label]}: median {d['rust_ms'][-1]:.1f} ms")
                log(f"  round {r + 1}, {label}: median {d['round_ms'][-1]:.1f} ms, new connection "
                    f"{statistics.median(got['connect_times']) * 1e3:.2f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the keys go with the store
    for label in ORDER:
        if label in failed:
            out["systems"][label] = failed[label]
            continue
        d = raw[label]
        if not d["times"]:
            out["systems"][label] = {"error": "no timed read"}
            continue
        s = _times_summary(d["times"])
        s.update(median_ms=s["median_s"] * 1e3, best_ms=s["best_s"] * 1e3, rows=want.rows,
                 rows_per_s=want.rows / s["median_s"], gb_s=want.rows * KLINE_ROW_BYTES / s["median_s"] / 1e9,
                 round_median_ms=d["round_ms"], ready_ms=d["ready_ms"],
                 connect_ms=statistics.median(d["connect_times"]) * 1e3 if d["connect_times"] else None,
                 connects=len(d["connect_times"]))
        out["systems"][label] = s
        if d.get("rust_error"):
            out["systems"][RUST[label]] = {"error": d["rust_error"]}
        elif d["rust_ms"]:
            med = statistics.median(d["rust_ms"])
            out["systems"][RUST[label]] = {
                "median_ms": med, "median_s": med / 1e3, "best_ms": min(d["rust_best_ms"]),
                "best_s": min(d["rust_best_ms"]) / 1e3, "round_median_ms": d["rust_ms"], "rows": want.rows,
                "gb_s": want.rows * KLINE_ROW_BYTES / (med / 1e3) / 1e9}
        log(f"  {label}: median {s['median_ms']:.1f} ms ({s['gb_s']:.2f} GB/s), best {s['best_ms']:.1f} ms")
    p, t = out["systems"].get(PLAIN, {}), out["systems"].get(TLS, {})
    if "median_s" in p and "median_s" in t:
        out["tls_vs_plain"] = t["median_s"] / p["median_s"]
        out["tls_vs_plain_best"] = t["best_s"] / p["best_s"]
        out["tls_vs_plain_rounds"] = [b / a for a, b in zip(p["round_median_ms"], t["round_median_ms"], strict=True)]
        if p.get("connect_ms") and t.get("connect_ms"):
            out["connect_tls_vs_plain"] = t["connect_ms"] / p["connect_ms"]
        log(f"tls: TLS / plain {out['tls_vs_plain']:.3f} (best {out['tls_vs_plain_best']:.3f})")
    rp, rt = out["systems"].get(RUST[PLAIN], {}), out["systems"].get(RUST[TLS], {})
    if "median_s" in rp and "median_s" in rt:
        out["rust_tls_vs_plain"] = rt["median_s"] / rp["median_s"]
        out["rust_tls_vs_plain_best"] = rt["best_s"] / rp["best_s"]
        out["rust_tls_vs_plain_rounds"] = [b / a for a, b in zip(rp["round_median_ms"], rt["round_median_ms"],
                                                                   strict=True)]
        log(f"tls: Rust client, TLS / plain {out['rust_tls_vs_plain']:.3f}")
    out["checked"] = checks.COUNTS.get("tls", 0)
    out["checked_how"] = (f"every answer, untimed and timed: {want.rows:,} rows, sum of close {want.close_sum:,}, "
                      "first and last ts as in the dataset; the untimed read of each start every column; on "
                      "each TLS start /health over HTTPS verified with the run's CA, and a plain grpc:// call "
                      "refused"
                      + ("; the Rust client's reads by the rows it received" if ceiling_bin else ""))
    return out
