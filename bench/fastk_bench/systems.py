"""One adapter per system, all with the same methods, so every workload runs the
same calls everywhere:

- `ingest(ds)` loads the whole dataset through the system's native bulk path and
  returns `{"kline_s", "scalar_s"}` (rows are the dataset's; preparation that only
  exists because the source is Arrow, such as building a pandas frame or JSON bodies,
  happens before the clock starts and is reported separately as `prep_s`);
- `read_range(symbol, start_ms, end_ms)` returns a Polars DataFrame of the bars;
- `latest(symbol, n)` returns a Polars DataFrame of the last n bars, ascending;
- `predicate(lo, hi)` returns the number of matching rows, fetched into the client
  as an Arrow/Polars column of timestamps;
- `disk()` returns bytes held on disk for the kline and the scalar data;
- `stored_rows()` returns the (kline, scalar) rows the system holds, read back after
  every load (the ingest workload's check);
- `sql(query)` runs one SQL statement and returns the answer as an Arrow table
  (the SQL workloads: FastK's SQL front ends, DuckDB, ROAPI);
- the market-query workloads (`market.py`, docs/market-queries.md):
  `resample(symbol, start_ms, end_ms, timeframe)` returns OHLCV buckets (an Arrow
  table or a Polars DataFrame); `asof_load(xs)` stores a `dataset.CrossSection`
  (setup, returns seconds) and `asof(t, variant)` returns the last bar at or before
  `t` of every series, with a `symbol` column; `coverage_load(gs)` stores a
  `dataset.GapSeries` and `gaps(symbol)` answers its coverage with a query.

A method a system cannot serve raises `NotImplementedError` and is reported as n/a.

DuckDB appears twice: over Parquet files (`DuckDB`) and as a database with primary
keys (`DuckDBTable`); chDB (`ChDB`, in-process ClickHouse, MergeTree tables) is a peer
of the reads and market queries. Those three have `reopen()`, the fresh connection of
the cold coverage call.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import subprocess
import time
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa
import pyarrow.flight as flight

from . import procs
from .dataset import Dataset

BATCH_ROWS = 65_536


def dt(ms_: int) -> datetime:
    return datetime.fromtimestamp(ms_ / 1000, tz=timezone.utc)


def tstz(ms_: int) -> str:
    """A DuckDB TIMESTAMPTZ literal for epoch milliseconds."""
    return f"TIMESTAMPTZ '{dt(ms_).isoformat(sep=' ', timespec='milliseconds')}'"


def cargo_lock_versions(names: list[str]) -> str:
    """`name version` of the given crates as Cargo.lock pins them."""
    lock = pathlib.Path(__file__).resolve().parents[2] / "Cargo.lock"
    found = {}
    try:
        for block in lock.read_text().split("[[package]]"):
            m = re.search(r'name = "([^"]+)"\s+version = "([^"]+)"', block)
            if m and m.group(1) in names:
                found[m.group(1)] = m.group(2)
    except OSError:
        pass
    return ", ".join(f"{n} {found.get(n, '?')}" for n in names)


def fsync_files(paths: list[pathlib.Path]) -> None:
    """Makes written files durable, as FastK is before it acknowledges a write."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in {p.parent for p in paths}:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def du(path: pathlib.Path) -> int:
    """Bytes allocated on disk under `path` (like `du -s --block-size=1`)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class System:
    name = "?"
    # The row label in tables and charts.
    label = "?"
    # Peers compete; the FastK HTTP front end and the ceiling are reported beside them.
    peer = True
    # Shown next to the name in tables: how the client reaches the system.
    via = ""

    def version(self) -> str:
        return "?"

    def ingest(self, ds: Dataset) -> dict:
        raise NotImplementedError

    def read_range(self, symbol: str, start: int, end: int) -> pl.DataFrame:
        raise NotImplementedError

    def latest(self, symbol: str, n: int) -> pl.DataFrame:
        raise NotImplementedError

    def predicate(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def scalar_all(self) -> pl.DataFrame:
        raise NotImplementedError

    def disk(self) -> dict:
        raise NotImplementedError

    def stored_rows(self) -> tuple[int, int]:
        """(kline rows, scalar rows) the system holds: the ingest workload's check."""
        raise NotImplementedError

    def sql(self, query: str) -> pa.Table:
        raise NotImplementedError

    def resample(self, symbol: str, start: int, end: int, timeframe: str):
        raise NotImplementedError

    def asof_load(self, xs) -> float:
        raise NotImplementedError

    def asof(self, t: int, variant: str | None = None):
        raise NotImplementedError

    def coverage_load(self, gs) -> float:
        raise NotImplementedError

    def gaps(self, symbol: str) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- FastK


def drop_if_closed(conn: http.client.HTTPConnection) -> None:
    """Closes a keep-alive connection the server has closed meanwhile, so that the next
    request opens a new one (as urllib3 and requests check before reusing a pooled
    connection): FastK closes a connection idle for `http.keep_alive_idle_s` (60 s by
    default), and writing a request into it would end in RemoteDisconnected. A socket
    that is readable while no request is in flight has seen the server's FIN (or
    stray bytes, which would break the next answer as well)."""
    import select

    sock = conn.sock
    if sock is None:
        return
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        readable = [sock]
    if readable:
        conn.close()


class HttpClient:
    """A keep-alive HTTP/1.1 connection (what a tuned Python client would use), that
    checks before each request that the server has not closed it, as pooled clients
    do (`drop_if_closed`)."""

    def __init__(self, addr: str):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        headers = {"content-type": "application/json"} if body is not None else {}
        # A keep-alive connection idle past the server's http.keep_alive_idle_s was
        # closed by the server; an idempotent request on it is sent again once on a
        # fresh connection, as HTTP clients do (RFC 9110, 9.2.2).
        for attempt in (1, 2):
            try:
                drop_if_closed(self.conn)
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt == 2 or method not in ("GET", "HEAD"):
                    raise
            except (http.client.HTTPException, OSError):
                # A dropped or half-read connection must not break the next request
                # (which reconnects): close it, and let the caller record this failure.
                self.conn.close()
                raise
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
        return data

    def json(self, method: str, path: str, obj=None):
        return json.loads(self.request(method, path, None if obj is None else json.dumps(obj).encode()))


def register_fastk(http: HttpClient, ds: Dataset) -> None:
    for s in ds.symbols:
        http.json("POST", "/v1/kline/series",
                  {"symbol": s, "timeframe": "1m", "price_scale": 100, "volume_scale": 1})
    http.json("POST", "/v1/scalar/series",
              {"symbol": "BENCH", "timeframe": "1m", "category": "feature", "name": "uniform",
               "value_type": "i64"})


def fastk_stored_rows(http: HttpClient) -> tuple[int, int]:
    inv = http.json("GET", "/inventory?partitions=false")
    return tuple(sum(x.get("rows", 0) for x in inv["series"] if x["kind"] == k) for k in ("kline", "scalar"))


SCALAR_PATH = ("scalar", "BENCH", "1m", "feature", "uniform")
SCALAR_KEY = {"symbol": "BENCH", "timeframe": "1m", "category": "feature", "name": "uniform"}


class FastKFlight(System):
    name = "FastK"
    label = "FastK Flight"
    peer = False
    via = "Arrow Flight"

    def __init__(self, server: procs.FastK, fastk_version: str):
        self.server = server
        self._version = fastk_version
        self.client = flight.connect(f"grpc://{server.flight}")
        self.http = HttpClient(server.http)

    def version(self) -> str:
        return self._version

    def _put(self, path: tuple, table: pa.Table, client: flight.FlightClient | None = None) -> dict:
        writer, reader = (client or self.client).do_put(flight.FlightDescriptor.for_path(*path), table.schema)
        writer.write_table(table, max_chunksize=BATCH_ROWS)
        writer.done_writing()
        reply = json.loads(reader.read().to_pybytes())
        writer.close()
        return reply

    def ingest(self, ds: Dataset) -> dict:
        register_fastk(self.http, ds)
        t = time.perf_counter()
        for s in ds.symbols:
            r = self._put(("kline", s, "1m"), ds.kline[s])
            assert r["written"] == ds.kline[s].num_rows, r
        kline_s = time.perf_counter() - t
        t = time.perf_counter()
        r = self._put(SCALAR_PATH, ds.scalar)
        assert r["written"] == ds.scalar.num_rows, r
        return {"kline_s": kline_s, "scalar_s": time.perf_counter() - t, "prep_s": 0.0}

    def _get(self, ticket: dict) -> pa.Table:
        return self.client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()

    def read_range(self, symbol, start, end):
        return pl.from_arrow(self._get({"kind": "kline", "symbol": symbol, "timeframe": "1m",
                                        "start_ts": start, "end_ts": end}))

    def latest(self, symbol, n):
        return pl.from_arrow(self._get({"kind": "kline", "symbol": symbol, "timeframe": "1m", "latest": n}))

    def predicate(self, lo, hi):
        t = self._get({"kind": "scalar", "timeframe": "1m", **SCALAR_KEY,
                       "predicate": {"op": "between", "min": lo, "max": hi}, "return_values": False})
        return t.num_rows

    def scalar_all(self):
        return pl.from_arrow(self._get({"kind": "scalar", **SCALAR_KEY}))

    def stored_rows(self):
        return fastk_stored_rows(self.http)

    def disk(self):
        inv = self.http.json("GET", "/inventory")
        k = sum(s["bytes"] for s in inv["series"] if s["kind"] == "kline")
        sc = sum(s["bytes"] for s in inv["series"] if s["kind"] == "scalar")
        return {"kline_bytes": k, "scalar_bytes": sc, "root_du_bytes": du(self.server.root),
                "inventory_total_bytes": inv.get("total_bytes")}

    # --- market queries (docs/market-queries.md)

    # A deadline, so that a server stuck on one of these reads fails the measurement
    # instead of stalling the run.
    MARKET_CALL = flight.FlightCallOptions(timeout=120)

    def _get_market(self, ticket: dict) -> pa.Table:
        return self.client.do_get(flight.Ticket(json.dumps(ticket).encode()), self.MARKET_CALL).read_all()

    def resample(self, symbol: str, start: int, end: int, timeframe: str) -> pa.Table:
        """1m bars of [start, end] resampled on read: one ticket, the stream into a Table."""
        return self._get_market({"kind": "kline", "symbol": symbol, "timeframe": "1m", "start_ts": start,
                                 "end_ts": end, "resample": {"timeframe": timeframe}})

    def asof_all(self, t: int) -> pa.Table:
        """The last bar at or before `t` of every 1m series: one ticket, `symbols: "*"`."""
        return self._get_market({"kind": "kline", "symbols": "*", "timeframe": "1m", "as_of": t})

    def coverage(self, symbol: str) -> dict:
        """Flight action `coverage` (JSON body and JSON answer)."""
        body = json.dumps({"kind": "kline", "symbol": symbol, "timeframe": "1m"}).encode()
        results = list(self.client.do_action(flight.Action("coverage", body), self.MARKET_CALL))
        if not results:
            raise RuntimeError("action coverage returned no result")
        return json.loads(results[0].body.to_pybytes())

    def load_series(self, series, streams: int = 3) -> float:
        """Registers and writes extra 1m kline series (`(symbol, table)` pairs) through
        the harness's write path: `POST /v1/kline/series`, then one DoPut each, on
        `streams` connections at once. Setup, not a measurement; returns seconds."""
        from concurrent.futures import ThreadPoolExecutor

        series = list(series)
        streams = max(1, min(streams, len(series)))
        t = time.perf_counter()
        clients = [(flight.connect(f"grpc://{self.server.flight}"), HttpClient(self.server.http))
                   for _ in range(streams)]

        def work(k: int) -> None:
            # Worker k owns its connections (http.client is not thread-safe) and every
            # streams-th series.
            fc, hc = clients[k]
            for symbol, table in series[k::streams]:
                hc.json("POST", "/v1/kline/series",
                        {"symbol": symbol, "timeframe": "1m", "price_scale": 100, "volume_scale": 1})
                reply = self._put(("kline", symbol, "1m"), table, fc)
                assert reply["written"] == table.num_rows, reply

        try:
            with ThreadPoolExecutor(streams) as ex:
                list(ex.map(work, range(streams)))
        finally:
            for fc, hc in clients:
                fc.close()
                hc.conn.close()
        return time.perf_counter() - t


class FastKFlightConcurrent(FastKFlight):
    """FastK's recommended bulk load: several DoPut streams at once, one per series.

    One stream is one all-or-nothing write and runs receive-then-commit; with several
    in flight the server receives one while it writes another, which a single
    client-server pair cannot do. Not a peer; shown beside the sequential figure.
    """

    label = "FastK Flight, 3 streams"
    streams = 3

    def ingest(self, ds: Dataset) -> dict:
        from concurrent.futures import ThreadPoolExecutor

        register_fastk(self.http, ds)
        clients = [flight.connect(f"grpc://{self.server.flight}") for _ in range(self.streams)]

        def put(item):
            i, s = item
            reply = self._put(("kline", s, "1m"), ds.kline[s], clients[i % self.streams])
            assert reply["written"] == ds.kline[s].num_rows, reply

        t = time.perf_counter()
        with ThreadPoolExecutor(self.streams) as ex:
            list(ex.map(put, enumerate(ds.symbols)))
        kline_s = time.perf_counter() - t
        for c in clients:
            c.close()
        # The scalar dataset is one series, so one stream: the sequential figure applies.
        return {"kline_s": kline_s, "prep_s": 0.0}


# gRPC's C++ core (pyarrow) sends the percent-encoded socket path as the HTTP/2
# :authority, which FastK's HTTP/2 layer refuses; naming an authority avoids it.
UNIX_OPTIONS = [("grpc.default_authority", "localhost")]


class FastKFlightUnix(FastKFlight):
    """The same pyarrow Flight client and JSON tickets as `FastKFlight`, over the
    server's Unix domain socket (`flight.unix_socket`) instead of loopback TCP.

    Reads only (the colocated workload): the store is the one loaded over TCP.
    Connecting is lazy in gRPC, so a socket that does not answer fails at the first
    call, which the workloads record as a failed measurement.
    """

    label = "FastK Flight (Unix socket)"
    via = "Arrow Flight, grpc+unix"

    def __init__(self, server: procs.FastK, fastk_version: str):
        if not server.unix_socket:
            raise RuntimeError(server.unix_error or "fastk serves no Flight unix socket")
        self.server = server
        self._version = fastk_version
        self.location = f"grpc+unix://{server.unix_socket}"
        self.client = flight.connect(self.location, generic_options=UNIX_OPTIONS)
        self.http = HttpClient(server.http)

    def close(self):
        self.client.close()
        self.http.conn.close()


def json_bodies(table: pa.Table, rows_per_body: int) -> list[bytes]:
    """`{"records": [...]}` bodies of `rows_per_body` records, ts as epoch ms."""
    df = pl.from_arrow(table).with_columns(pl.col("ts").dt.epoch("ms"))
    lines = df.write_ndjson().encode().splitlines()
    return [b'{"records":[' + b",".join(lines[i:i + rows_per_body]) + b"]}"
            for i in range(0, len(lines), rows_per_body)]


class FastKHttp(System):
    name = "FastK"
    label = "FastK HTTP"
    peer = False
    via = "HTTP JSON"

    def __init__(self, server: procs.FastK, fastk_version: str, rows_per_body: int = 10_000):
        self.server = server
        self._version = fastk_version
        self.http = HttpClient(server.http)
        self.rows_per_body = rows_per_body

    def version(self) -> str:
        return self._version

    def ingest(self, ds: Dataset, scalar: bool = True) -> dict:
        """Sequential POSTs of pre-encoded 10,000-record bodies on one connection."""
        register_fastk(self.http, ds)
        prep = 0.0
        kline_s = 0.0
        for s in ds.symbols:
            t = time.perf_counter()
            bodies = json_bodies(ds.kline[s], self.rows_per_body)
            prep += time.perf_counter() - t
            t = time.perf_counter()
            for b in bodies:
                self.http.request("POST", f"/v1/kline/{s}/1m/records", b)
            kline_s += time.perf_counter() - t
            body_bytes = sum(len(b) for b in bodies)
        out = {"kline_s": kline_s, "prep_s": prep, "body_bytes_last_symbol": body_bytes}
        if scalar:
            t = time.perf_counter()
            bodies = json_bodies(ds.scalar, self.rows_per_body)
            out["prep_s"] += time.perf_counter() - t
            path = "/v1/scalar/BENCH/1m/feature/uniform/records"
            t = time.perf_counter()
            for b in bodies:
                self.http.request("POST", path, b)
            out["scalar_s"] = time.perf_counter() - t
        return out

    def stored_rows(self):
        return fastk_stored_rows(self.http)

    def read_range(self, symbol, start, end):
        frames = []
        cursor = start
        while cursor is not None:
            r = self.http.json("GET", f"/v1/kline/{symbol}/1m/records?start_ts={cursor}&end_ts={end}&limit=100000")
            frames.append(pl.DataFrame(r["records"]))
            cursor = r["next_start_ts"]
        return pl.concat(frames)

    def latest(self, symbol, n):
        return pl.DataFrame(self.http.json("GET", f"/v1/kline/{symbol}/1m/latest?n={n}")["records"])

    def predicate(self, lo, hi):
        path = "/v1/scalar/BENCH/1m/feature/uniform/query"
        body = {"predicate": {"op": "between", "min": lo, "max": hi}, "limit": 100_000}
        n = 0
        while True:
            r = self.http.json("POST", path, body)
            n += len(pl.Series("ts", r["timestamps"], dtype=pl.Int64))
            if r["next_start_ts"] is None:
                return n
            body["start_ts"] = r["next_start_ts"]

    # --- market queries (docs/market-queries.md)

    def resample(self, symbol: str, start: int, end: int, timeframe: str) -> pl.DataFrame:
        """`GET .../records?resample=..&limit=100000`, paged by `next_start_ts`, into Polars."""
        frames = []
        cursor = start
        while cursor is not None:
            r = self.http.json("GET", f"/v1/kline/{symbol}/1m/records?start_ts={cursor}&end_ts={end}"
                                      f"&resample={timeframe}&limit=100000")
            frames.append(pl.DataFrame(r["records"]))
            cursor = r["next_start_ts"]
        return pl.concat(frames) if len(frames) > 1 else frames[0]

    def coverage(self, symbol: str) -> dict:
        return self.http.json("GET", f"/v1/kline/{symbol}/1m/coverage")

    def asof_batches(self, symbols: list[str], t: int, per: int = 100) -> pl.DataFrame:
        """`POST /v1/kline/batch` with `as_of`, `per` symbols a request (the default cap
        `http.max_batch_series`), one request after the other, into one DataFrame."""
        rows = []
        for i in range(0, len(symbols), per):
            r = self.http.json("POST", "/v1/kline/batch",
                               {"timeframe": "1m", "symbols": symbols[i:i + per], "as_of": t})
            for s in r["series"]:
                for rec in s["records"]:  # one at most per series; none when it has no bar by t
                    rec["symbol"] = s["symbol"]
                    rows.append(rec)
        return pl.DataFrame(rows)


# --------------------------------------------------------------------------- FastK SQL


FLIGHT_SQL_TYPE = "type.googleapis.com/arrow.flight.protocol.sql."
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _pb_bytes(field: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (strings, bytes, messages)."""
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def statement_query(query: str) -> bytes:
    """A Flight SQL CommandStatementQuery as google.protobuf.Any (what every Flight SQL
    client sends; built by hand, as pyarrow ships no Flight SQL client)."""
    body = _pb_bytes(1, query.encode())
    return _pb_bytes(1, (FLIGHT_SQL_TYPE + "CommandStatementQuery").encode()) + _pb_bytes(2, body)


class FastKSql(System):
    """FastK's SQL front ends (DataFusion over the store), one client per instance.

    - `adbc`: `adbc_driver_flightsql` DB-API, `execute` + `fetch_arrow_table` (the
      driver prepares every statement: CreatePreparedStatement, GetFlightInfo, DoGet);
    - `flight`: plain `pyarrow.flight`, CommandStatementQuery by hand: GetFlightInfo,
      then DoGet of each endpoint, `read_all()`;
    - `http`: `POST /v1/sql` on a keep-alive connection with
      `Accept: application/vnd.apache.arrow.stream`, read with `pa.ipc.open_stream`.

    Not peers: the SQL workloads compare them with FastK's own native DoGet.
    """

    name = "FastK"
    peer = False
    LABELS = {"adbc": "FastK Flight SQL (ADBC)", "flight": "FastK Flight SQL (pyarrow.flight)",
              "http": "FastK HTTP /v1/sql (Arrow stream)"}
    VIA = {"adbc": "Flight SQL, adbc-driver-flightsql", "flight": "Flight SQL, pyarrow.flight",
           "http": "HTTP, Arrow IPC stream"}

    def __init__(self, server: procs.FastK, fastk_version: str, mode: str):
        self.server = server
        self.mode = mode
        self.label = self.LABELS[mode]
        self.via = self.VIA[mode]
        self._version = fastk_version
        if mode == "adbc":
            import adbc_driver_flightsql
            import adbc_driver_flightsql.dbapi as fsql

            self.driver_version = adbc_driver_flightsql.__version__
            # FastK has no transactions; autocommit=True keeps DB-API from asking.
            self.conn = fsql.connect(f"grpc://{server.flight}", autocommit=True)
            self.cur = self.conn.cursor()
        elif mode == "flight":
            self.client = flight.connect(f"grpc://{server.flight}")
        else:
            host, port = server.http.rsplit(":", 1)
            self.http = http.client.HTTPConnection(host, int(port), timeout=600)

    def version(self) -> str:
        extra = f" (adbc-driver-flightsql {self.driver_version})" if self.mode == "adbc" else ""
        return f"{cargo_lock_versions(['datafusion'])}{extra}"

    def sql(self, query):
        if self.mode == "adbc":
            self.cur.execute(query)
            return self.cur.fetch_arrow_table()
        if self.mode == "flight":
            info = self.client.get_flight_info(flight.FlightDescriptor.for_command(statement_query(query)))
            parts = [self.client.do_get(ep.ticket).read_all() for ep in info.endpoints]
            return parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        drop_if_closed(self.http)
        self.http.request("POST", "/v1/sql", body=json.dumps({"query": query}).encode(),
                          headers={"content-type": "application/json", "accept": ARROW_STREAM})
        r = self.http.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"POST /v1/sql: {r.status} {data[:300]!r}")
        return pa.ipc.open_stream(data).read_all()

    def close(self):
        if self.mode == "adbc":
            self.cur.close()
            self.conn.close()
        elif self.mode == "flight":
            self.client.close()
        else:
            self.http.close()


# --------------------------------------------------------------------------- ceiling


class FlightCeiling(System):
    """The same pyarrow client against a server that only hands out RAM batches.

    Two servers play this part: `ceiling_server.py` (pyarrow.flight, C++) and
    `benches/flight_ceiling.rs` (the Rust crates FastK itself uses, with FastK's
    HTTP/2 windows and message limits). The faster of the two is the ceiling.
    """

    name = "Flight ceiling"
    label = "Flight ceiling (pyarrow, RAM)"
    peer = False

    def __init__(self, data: pathlib.Path, log: pathlib.Path, python: str | None = None,
                 rust_bin: pathlib.Path | None = None):
        if rust_bin is not None:
            self.label = "Flight ceiling (Rust, RAM)"
            self._version = cargo_lock_versions(["arrow-flight", "tonic"])
            proc = procs.start_process([str(rust_bin), "serve", str(data)], log)
            deadline = time.time() + 300
            self.addr = None
            while self.addr is None and time.time() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"flight_ceiling exited: {log.read_text()[-1000:]}")
                m = re.search(r"ceiling listening on (\S+)", log.read_text(errors="replace"))
                self.addr = m.group(1) if m else None
                time.sleep(0.05)
            if self.addr is None:
                raise RuntimeError("flight_ceiling did not log its address")
        else:
            self._version = f"pyarrow {pa.__version__}"
            port = procs.free_port()
            proc = procs.start_process([python, "-m", "fastk_bench.ceiling_server", str(port), str(data)], log,
                                       env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parent.parent)})
            procs.wait_port(port, 300, proc)
            self.addr = f"127.0.0.1:{port}"
        self.client = flight.connect(f"grpc://{self.addr}")

    def version(self) -> str:
        return self._version

    def _get(self, ticket: dict) -> pa.Table:
        return self.client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()

    def read_range(self, symbol, start, end):
        return pl.from_arrow(self._get({"kind": "kline", "symbol": symbol, "start_ts": start, "end_ts": end}))

    def latest(self, symbol, n):
        return pl.from_arrow(self._get({"kind": "kline", "symbol": symbol, "latest": n}))

    def scalar_all(self):
        return pl.from_arrow(self._get({"kind": "scalar"}))


# --------------------------------------------------------------------------- ArcticDB


class Arctic(System):
    name = "ArcticDB"
    label = "ArcticDB"
    via = "LMDB, Polars output"

    def __init__(self, root: pathlib.Path):
        import arcticdb as adb

        self.adb = adb
        self.root = root
        (root / "kline").mkdir(parents=True, exist_ok=True)
        (root / "scalar").mkdir(parents=True, exist_ok=True)
        self.kline_lib = adb.Arctic(f"lmdb://{root / 'kline'}?map_size=16GB").get_library("kline", create_if_missing=True)
        self.scalar_lib = adb.Arctic(f"lmdb://{root / 'scalar'}?map_size=16GB").get_library("scalar", create_if_missing=True)

    def version(self) -> str:
        return self.adb.__version__

    @staticmethod
    def _frame(table: pa.Table):
        import pandas as pd

        df = table.drop_columns(["ts"]).to_pandas()
        df.index = pd.DatetimeIndex(table.column("ts").cast(pa.int64()).to_numpy().astype("datetime64[ms]")
                                    .astype("datetime64[ns]"), name="ts")
        return df

    def ingest(self, ds):
        t = time.perf_counter()
        frames = {s: self._frame(ds.kline[s]) for s in ds.symbols}
        scalar = self._frame(ds.scalar)
        prep = time.perf_counter() - t
        t = time.perf_counter()
        for s, df in frames.items():
            self.kline_lib.write(s, df)
        kline_s = time.perf_counter() - t
        t = time.perf_counter()
        self.scalar_lib.write("uniform", scalar)
        return {"kline_s": kline_s, "scalar_s": time.perf_counter() - t, "prep_s": prep}

    @staticmethod
    def _naive(ms_: int):
        import pandas as pd

        return pd.Timestamp(ms_, unit="ms")

    def read_range(self, symbol, start, end):
        return self.kline_lib.read(symbol, date_range=(self._naive(start), self._naive(end)),
                                   output_format="polars").data

    def latest(self, symbol, n):
        return self.kline_lib.tail(symbol, n, output_format="polars").data

    def predicate(self, lo, hi):
        q = self.adb.QueryBuilder()
        q = q[(q["value"] >= lo) & (q["value"] <= hi)]
        return len(self.scalar_lib.read("uniform", query_builder=q, columns=[], output_format="pyarrow").data)

    def disk(self):
        return {"kline_bytes": du(self.root / "kline"), "scalar_bytes": du(self.root / "scalar")}

    def stored_rows(self):
        k = sum(self.kline_lib.get_description(s).row_count for s in self.kline_lib.list_symbols())
        return k, self.scalar_lib.get_description("uniform").row_count

    # --- market queries

    # pandas offset aliases, which ArcticDB's resample takes
    RULES = {"s": "s", "m": "min", "h": "h", "d": "D"}
    OHLCV_AGG = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    ASOF_HOW = ("read_batch of every symbol with one QueryBuilder().date_range((None, T)).tail(1), "
                "pyarrow output, the one-row tables concatenated with a symbol column")

    def resample(self, symbol, start, end, timeframe):
        q = self.adb.QueryBuilder().resample(timeframe[:-1] + self.RULES[timeframe[-1]]).agg(self.OHLCV_AGG)
        return self.kline_lib.read(symbol, date_range=(self._naive(start), self._naive(end)), query_builder=q,
                                   output_format="pyarrow").data

    def asof_load(self, xs):
        from arcticdb.version_store.library import WritePayload

        (self.root / "xs").mkdir(parents=True, exist_ok=True)
        self.xs_lib = self.adb.Arctic(f"lmdb://{self.root / 'xs'}?map_size=8GB").get_library(
            "xs", create_if_missing=True)
        self.xs_symbols = list(xs.symbols)
        t = time.perf_counter()
        payloads = [WritePayload(s, self._frame(xs.series(i))) for i, s in enumerate(xs.symbols)]
        for r in self.xs_lib.write_batch(payloads):
            if not hasattr(r, "version"):
                raise RuntimeError(f"write_batch: {r}")
        return time.perf_counter() - t

    def asof(self, t, variant=None):
        # lib.tail(symbol, 1) cannot stop at T; the QueryBuilder's date_range then tail
        # clauses can, and read_batch runs them for every symbol in one call.
        q = self.adb.QueryBuilder().date_range((None, self._naive(t))).tail(1)
        items = self.xs_lib.read_batch(self.xs_symbols, query_builder=q, output_format="pyarrow")
        parts, names = [], []
        for s, it in zip(self.xs_symbols, items):
            data = getattr(it, "data", None)
            if data is None:
                raise RuntimeError(f"read_batch {s}: {it}")
            if data.num_rows:
                parts.append(data)
                names.append(s)
        return pa.concat_tables(parts).add_column(0, "symbol", pa.array(names, pa.string()))


# --------------------------------------------------------------------------- Parquet peers


class DuckDB(System):
    name = "DuckDB"
    label = "DuckDB"
    via = "Parquet files"

    def __init__(self, root: pathlib.Path):
        import duckdb

        self.duckdb = duckdb
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        # Cache Parquet footers between queries, as a long-lived DuckDB process would.
        self.con.execute("SET parquet_metadata_cache = true")

    def version(self) -> str:
        return self.duckdb.__version__

    def path(self, name: str) -> str:
        return str(self.root / f"{name}.parquet")

    def src(self, name: str) -> str:
        """What a query reads a symbol's bars (or `scalar`) from: its Parquet file."""
        return f"read_parquet('{self.path(name)}')"

    def market_src(self, name: str) -> str:
        """What a market query reads the cross section (`xs`) or a coverage series from."""
        return f"read_parquet('{self.market_path(name)}')"

    def reopen(self) -> None:
        """A fresh connection (the cold coverage call): no cached Parquet footers."""
        self.con.close()
        self.con = self.duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET parquet_metadata_cache = true")

    def ingest(self, ds):
        t = time.perf_counter()
        for s in ds.symbols:
            self.con.register("src", ds.kline[s])
            self.con.execute(f"COPY src TO '{self.path(s)}' (FORMAT parquet)")
        fsync_files([pathlib.Path(self.path(s)) for s in ds.symbols])
        kline_s = time.perf_counter() - t
        t = time.perf_counter()
        self.con.register("src", ds.scalar)
        self.con.execute(f"COPY src TO '{self.path('scalar')}' (FORMAT parquet)")
        self.con.unregister("src")
        fsync_files([pathlib.Path(self.path("scalar"))])
        return {"kline_s": kline_s, "scalar_s": time.perf_counter() - t, "prep_s": 0.0}

    def read_range(self, symbol, start, end):
        # con.sql(...) rather than execute(...): DuckDB 2 copies DB-API results once more.
        return self.con.sql(f"SELECT * FROM {self.src(symbol)} "
                            f"WHERE ts BETWEEN {tstz(start)} AND {tstz(end)}").pl()

    def latest(self, symbol, n):
        return self.con.sql(
            f"SELECT * FROM (SELECT * FROM {self.src(symbol)} ORDER BY ts DESC LIMIT {n}) ORDER BY ts"
        ).pl()

    def predicate(self, lo, hi):
        return self.con.sql(
            f"SELECT ts FROM {self.src('scalar')} WHERE value BETWEEN {lo} AND {hi}"
        ).to_arrow_table().num_rows

    def disk(self):
        k = sum(du(p) for p in self.root.glob("*.parquet") if p.stem != "scalar")
        return {"kline_bytes": k, "scalar_bytes": du(pathlib.Path(self.path("scalar")))}

    def stored_rows(self):
        files = [str(p) for p in self.root.glob("*.parquet") if p.stem != "scalar"]
        k = self.con.sql(f"SELECT count(*) FROM read_parquet({files!r})").fetchall()[0][0]
        return k, self.con.sql(f"SELECT count(*) FROM {self.src('scalar')}").fetchall()[0][0]

    def sql(self, query):
        return self.con.sql(query).to_arrow_table()

    # --- market queries

    INTERVALS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
    # ts::TIMESTAMP (UTC wall time, as the session's TimeZone is UTC): time_bucket of a
    # TIMESTAMPTZ by days goes through the time-zone calendar, about 3x slower for 1d
    # here, with the same buckets.
    RESAMPLE = ("SELECT time_bucket(INTERVAL '{interval}', ts::TIMESTAMP) AS bucket, arg_min(open, ts) AS open, "
                "max(high) AS high, min(low) AS low, arg_max(close, ts) AS close, sum(volume)::BIGINT AS volume "
                "FROM {src} WHERE ts BETWEEN {start} AND {end} GROUP BY 1 ORDER BY 1")
    ASOF = {
        "distinct_on": ("SELECT DISTINCT ON (symbol) symbol, ts, open, high, low, close, volume "
                        "FROM {src} WHERE ts <= {t} ORDER BY symbol, ts DESC"),
        "arg_max": ("SELECT symbol, max(ts) AS ts, arg_max(open, ts) AS open, arg_max(high, ts) AS high, "
                    "arg_max(low, ts) AS low, arg_max(close, ts) AS close, arg_max(volume, ts) AS volume "
                    "FROM {src} WHERE ts <= {t} GROUP BY symbol ORDER BY symbol"),
    }
    GAPS = ("SELECT p + {tf} AS start_ts, t - {tf} AS end_ts, (t - p) // {tf} - 1 AS missing FROM "
            "(SELECT epoch_ms(ts) AS t, lag(epoch_ms(ts)) OVER (ORDER BY ts) AS p FROM {src}) "
            "WHERE t - p > {tf} ORDER BY start_ts")
    GAP_STATS = "SELECT count(*), epoch_ms(min(ts)), epoch_ms(max(ts)) FROM {src}"

    def market_path(self, name: str) -> str:
        (self.root / "market").mkdir(parents=True, exist_ok=True)
        return str(self.root / "market" / f"{name}.parquet")

    def _copy(self, table: pa.Table, path: str) -> float:
        t = time.perf_counter()
        self.con.register("src", table)
        self.con.execute(f"COPY src TO '{path}' (FORMAT parquet)")
        self.con.unregister("src")
        return time.perf_counter() - t

    def resample(self, symbol, start, end, timeframe):
        interval = f"{timeframe[:-1]} {self.INTERVALS[timeframe[-1]]}"
        return self.con.sql(self.RESAMPLE.format(interval=interval, src=self.src(symbol), start=tstz(start),
                                                 end=tstz(end))).to_arrow_table()

    def asof_load(self, xs):
        # One file with every series, sorted by symbol then ts, as DuckDB writes it.
        return self._copy(xs.table, self.market_path("xs"))

    def asof(self, t, variant=None):
        q = self.ASOF[variant or "distinct_on"].format(src=self.market_src("xs"), t=tstz(t))
        return self.con.sql(q).to_arrow_table()

    def coverage_load(self, gs):
        return self._copy(gs.table, self.market_path(gs.symbol))

    def gaps(self, symbol, timeframe_ms: int = 60_000):
        src = self.market_src(symbol)
        # DuckDB 2 relations have no fetchone() (nothing is kept between calls).
        n, first, last = self.con.sql(self.GAP_STATS.format(src=src)).fetchall()[0]
        g = self.con.sql(self.GAPS.format(src=src, tf=timeframe_ms)).to_arrow_table()
        return {"present": n, "start_ts": first, "end_ts": last, "expected": (last - first) // timeframe_ms + 1,
                "gaps": g}


class DuckDBTable(DuckDB):
    """DuckDB as a database: native tables in one database file, loaded from the
    dataset's Arrow tables, with the keys a practitioner would declare: `kline`
    PRIMARY KEY (symbol, ts) (an ART index; rows inserted in key order, so the zone
    maps of `symbol` and `ts` prune a symbol's and a range's row groups), `scalar`
    PRIMARY KEY (ts). No index on `scalar.value`: DuckDB's ART serves point lookups,
    not the wide value ranges of the predicate workload, which scan the column. The
    market tables likewise: `xs` PRIMARY KEY (symbol, ts), a coverage series PRIMARY
    KEY (ts). Every load ends with a CHECKPOINT (durable in the file)."""

    label = "DuckDB (table)"
    via = "native table, PRIMARY KEY (symbol, ts)"
    KLINE_DDL = ("CREATE TABLE kline (symbol VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, open BIGINT NOT NULL, "
                 "high BIGINT NOT NULL, low BIGINT NOT NULL, close BIGINT NOT NULL, volume BIGINT NOT NULL, "
                 "PRIMARY KEY (symbol, ts))")
    SCALAR_DDL = "CREATE TABLE scalar (ts TIMESTAMPTZ NOT NULL PRIMARY KEY, value BIGINT NOT NULL)"

    def __init__(self, root: pathlib.Path):
        import duckdb

        self.duckdb = duckdb
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.db = root / "bench.duckdb"
        self.sizes: dict = {}
        self._connect()

    def _connect(self) -> None:
        self.con = self.duckdb.connect(str(self.db))
        self.con.execute("SET TimeZone = 'UTC'")

    def reopen(self) -> None:
        """Closes the database and opens it again (the cold coverage call)."""
        self.con.close()
        self._connect()

    def src(self, name: str) -> str:
        if name == "scalar":
            return "scalar"
        return f"(SELECT ts, open, high, low, close, volume FROM kline WHERE symbol = '{name}')"

    def market_src(self, name: str) -> str:
        return "xs" if name == "xs" else f'"cov_{name}"'

    def path(self, name: str) -> str:
        raise NotImplementedError("a DuckDB table has no file per symbol")

    def ingest(self, ds):
        t = time.perf_counter()
        self.con.execute(self.KLINE_DDL)
        for s in ds.symbols:
            self.con.register("src", ds.kline[s])
            self.con.execute(f"INSERT INTO kline SELECT '{s}', ts, open, high, low, close, volume FROM src")
            self.con.unregister("src")
        self.con.execute("CHECKPOINT")
        kline_s = time.perf_counter() - t
        self.sizes["kline_bytes"] = du(self.db)
        t = time.perf_counter()
        self.con.execute(self.SCALAR_DDL)
        self.con.register("src", ds.scalar)
        self.con.execute("INSERT INTO scalar SELECT ts, value FROM src")
        self.con.unregister("src")
        self.con.execute("CHECKPOINT")
        scalar_s = time.perf_counter() - t
        self.sizes["scalar_bytes"] = du(self.db) - self.sizes["kline_bytes"]
        return {"kline_s": kline_s, "scalar_s": scalar_s, "prep_s": 0.0}

    def disk(self):
        """The database file after the kline load's CHECKPOINT, and what the scalar
        load added to it (one file holds both tables)."""
        return dict(self.sizes, file_bytes=du(self.db))

    def stored_rows(self):
        return tuple(self.con.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("kline", "scalar"))

    def _table(self, name: str, table: pa.Table, key: str) -> float:
        cols = ", ".join(f'"{f.name}"' for f in table.schema)
        t = time.perf_counter()
        self.con.register("src", table)
        # The Arrow schema's types, a dictionary-encoded symbol (an ENUM here) as VARCHAR.
        types = {r[0]: ("VARCHAR" if r[1].startswith("ENUM") else r[1])
                 for r in self.con.execute("DESCRIBE SELECT * FROM src").fetchall()}
        ddl = ", ".join(f'"{c}" {types[c]} NOT NULL' for c in table.column_names)
        self.con.execute(f"CREATE TABLE {name} ({ddl}, PRIMARY KEY ({key}))")
        self.con.execute(f"INSERT INTO {name} SELECT {cols} FROM src ORDER BY {key}")
        self.con.unregister("src")
        self.con.execute("CHECKPOINT")
        return time.perf_counter() - t

    def asof_load(self, xs):
        return self._table("xs", xs.table, "symbol, ts")

    def coverage_load(self, gs):
        return self._table(self.market_src(gs.symbol), gs.table, "ts")


class Polars(System):
    name = "Polars"
    label = "Polars"
    via = "scan_parquet"

    def __init__(self, root: pathlib.Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def version(self) -> str:
        return pl.__version__

    def path(self, name: str) -> pathlib.Path:
        return self.root / f"{name}.parquet"

    def ingest(self, ds):
        t = time.perf_counter()
        for s in ds.symbols:
            pl.from_arrow(ds.kline[s]).write_parquet(self.path(s))
        fsync_files([self.path(s) for s in ds.symbols])
        kline_s = time.perf_counter() - t
        t = time.perf_counter()
        pl.from_arrow(ds.scalar).write_parquet(self.path("scalar"))
        fsync_files([self.path("scalar")])
        return {"kline_s": kline_s, "scalar_s": time.perf_counter() - t, "prep_s": 0.0}

    def read_range(self, symbol, start, end):
        return pl.scan_parquet(self.path(symbol)).filter(pl.col("ts").is_between(dt(start), dt(end))).collect()

    def latest(self, symbol, n):
        # The file is sorted by ts, so its tail is the latest bars.
        return pl.scan_parquet(self.path(symbol)).tail(n).collect()

    def predicate(self, lo, hi):
        return pl.scan_parquet(self.path("scalar")).filter(pl.col("value").is_between(lo, hi)).select("ts").collect().height

    def disk(self):
        k = sum(du(p) for p in self.root.glob("*.parquet") if p.stem != "scalar")
        return {"kline_bytes": k, "scalar_bytes": du(self.path("scalar"))}

    def stored_rows(self):
        k = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in self.root.glob("*.parquet")
                if p.stem != "scalar")
        return k, pl.scan_parquet(self.path("scalar")).select(pl.len()).collect().item()

    # --- market queries

    RESAMPLE_HOW = ("scan_parquet(...).filter(ts in range).group_by_dynamic('ts', every=..).agg(first open, "
                    "max high, min low, last close, sum volume).collect()")
    ASOF_HOW = ("scan_parquet(one file).filter(ts <= T).group_by('symbol', maintain_order=True).last().collect() "
                "(the file is sorted by symbol, then ts)")
    GAPS_HOW = ("scan_parquet(...): ts.dt.epoch('ms'), diff against shift(1) > 1 minute (the file is sorted by ts), "
                "plus len/min/max, one collect_all")

    def market_path(self, name: str) -> pathlib.Path:
        (self.root / "market").mkdir(parents=True, exist_ok=True)
        return self.root / "market" / f"{name}.parquet"

    def resample(self, symbol, start, end, timeframe):
        every = timeframe[:-1] + ("mo" if timeframe[-1] == "M" else timeframe[-1])  # Polars: 1m is a minute
        return (pl.scan_parquet(self.path(symbol)).filter(pl.col("ts").is_between(dt(start), dt(end)))
                .group_by_dynamic("ts", every=every)
                .agg(pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("close").last(),
                     pl.col("volume").sum())
                .collect())

    def asof_load(self, xs):
        t = time.perf_counter()
        pl.from_arrow(xs.table).write_parquet(self.market_path("xs"))
        return time.perf_counter() - t

    def asof(self, t, variant=None):
        return (pl.scan_parquet(self.market_path("xs")).filter(pl.col("ts") <= dt(t))
                .group_by("symbol", maintain_order=True).last().collect())

    def coverage_load(self, gs):
        t = time.perf_counter()
        pl.from_arrow(gs.table).write_parquet(self.market_path(gs.symbol))
        return time.perf_counter() - t

    def gaps(self, symbol, timeframe_ms: int = 60_000):
        lf = pl.scan_parquet(self.market_path(symbol)).select(pl.col("ts").dt.epoch("ms").alias("t"))
        t, p = pl.col("t"), pl.col("p")
        g = (lf.with_columns(p=t.shift(1)).filter((t - p) > timeframe_ms)
             .select(start_ts=p + timeframe_ms, end_ts=t - timeframe_ms, missing=(t - p) // timeframe_ms - 1))
        s = lf.select(n=pl.len(), first=t.min(), last=t.max())
        gaps, stats = pl.collect_all([g, s])
        first, last = stats["first"][0], stats["last"][0]
        return {"present": stats["n"][0], "start_ts": first, "end_ts": last,
                "expected": (last - first) // timeframe_ms + 1, "gaps": gaps}



# --------------------------------------------------------------------------- chDB


def ch_ms(ms_: int) -> str:
    """A ClickHouse DateTime64(3, 'UTC') literal for epoch milliseconds."""
    return f"fromUnixTimestamp64Milli(toInt64({ms_}), 'UTC')"


class ChDB(System):
    """chDB: ClickHouse in process, a session (a database directory) of its own.

    Tables are MergeTree, sorted by their key, loaded from the dataset's Arrow tables
    through the `Python()` table function; every read returns Arrow (`ArrowTable`).
    `kline` ORDER BY (symbol, ts), `scalar` ORDER BY ts, the cross section ORDER BY
    (symbol, ts), a coverage series ORDER BY ts. Inserts fsync their parts
    (`fsync_after_insert`, `fsync_part_directory`), as every other system's load is
    durable before its clock stops.
    """

    name = "chDB"
    label = "chDB"
    via = "in-process ClickHouse, MergeTree ORDER BY (symbol, ts)"
    SETTINGS = "SETTINGS fsync_after_insert = 1, fsync_part_directory = 1"
    OHLCV = ("open Int64, high Int64, low Int64, close Int64, volume Int64")
    # toStartOfInterval answers DateTime (seconds), which Arrow output turns into uint32.
    RESAMPLE = ("SELECT toDateTime64(toStartOfInterval(ts, INTERVAL {interval}), 3, 'UTC') AS bucket, "
                "argMin(open, ts) AS open, "
                "max(high) AS high, min(low) AS low, argMax(close, ts) AS close, sum(volume) AS volume "
                "FROM kline WHERE symbol = '{symbol}' AND ts BETWEEN {start} AND {end} GROUP BY bucket "
                "ORDER BY bucket")
    ASOF = ("SELECT symbol, max(ts) AS ts, argMax(open, ts) AS open, argMax(high, ts) AS high, "
            "argMax(low, ts) AS low, argMax(close, ts) AS close, argMax(volume, ts) AS volume "
            "FROM xs WHERE ts <= {t} GROUP BY symbol ORDER BY symbol "
            # `ts` in WHERE and argMax is the column, not the alias of max(ts).
            "SETTINGS prefer_column_name_to_alias = 1")
    GAPS = ("SELECT p + {tf} AS start_ts, t - {tf} AS end_ts, intDiv(t - p, {tf}) - 1 AS missing FROM "
            "(SELECT toUnixTimestamp64Milli(ts) AS t, lagInFrame(toUnixTimestamp64Milli(ts), 1, toInt64(-1)) "
            "OVER (ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS p FROM {table}) "
            "WHERE p >= 0 AND t - p > {tf} ORDER BY start_ts")
    GAP_STATS = "SELECT count(), toUnixTimestamp64Milli(min(ts)), toUnixTimestamp64Milli(max(ts)) FROM {table}"
    INTERVALS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}

    def __init__(self, root: pathlib.Path):
        import chdb
        from chdb import session

        self.chdb = chdb
        self.session_mod = session
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.sess = session.Session(str(root / "chdb"))

    def version(self) -> str:
        engine = self._q("SELECT version() AS v").column(0)[0].as_py()
        return f"{self.chdb.__version__} (ClickHouse {engine})"

    def reopen(self) -> None:
        """Closes the session and opens its directory again (the cold coverage call)."""
        self.sess.close()
        self.sess = self.session_mod.Session(str(self.root / "chdb"))

    def _q(self, sql: str) -> pa.Table:
        return self.sess.query(sql, "ArrowTable")

    def _create(self, name: str, columns: str, order: str) -> None:
        self.sess.query(f"DROP TABLE IF EXISTS {name}")
        self.sess.query(f"CREATE TABLE {name} ({columns}) ENGINE = MergeTree ORDER BY ({order}) {self.SETTINGS}")

    def ingest(self, ds):
        t = time.perf_counter()
        self._create("kline", f"symbol LowCardinality(String), ts DateTime64(3, 'UTC'), {self.OHLCV}", "symbol, ts")
        for s in ds.symbols:
            src = ds.kline[s]  # noqa: F841 - read by the Python() table function
            self.sess.query(f"INSERT INTO kline SELECT '{s}', ts, open, high, low, close, volume FROM Python(src)")
        kline_s = time.perf_counter() - t
        t = time.perf_counter()
        self._create("scalar", "ts DateTime64(3, 'UTC'), value Int64", "ts")
        src = ds.scalar  # noqa: F841
        self.sess.query("INSERT INTO scalar SELECT ts, value FROM Python(src)")
        return {"kline_s": kline_s, "scalar_s": time.perf_counter() - t, "prep_s": 0.0}

    def read_range(self, symbol, start, end):
        return pl.from_arrow(self._q(
            f"SELECT ts, open, high, low, close, volume FROM kline WHERE symbol = '{symbol}' "
            f"AND ts BETWEEN {ch_ms(start)} AND {ch_ms(end)} ORDER BY ts"))

    def latest(self, symbol, n):
        return pl.from_arrow(self._q(
            f"SELECT * FROM (SELECT ts, open, high, low, close, volume FROM kline WHERE symbol = '{symbol}' "
            f"ORDER BY ts DESC LIMIT {n}) ORDER BY ts"))

    def predicate(self, lo, hi):
        return self._q(f"SELECT ts FROM scalar WHERE value BETWEEN {lo} AND {hi}").num_rows

    def stored_rows(self):
        return tuple(int(self._q(f"SELECT count() AS n FROM {t}").column(0)[0].as_py()) for t in ("kline", "scalar"))

    def disk(self):
        t = self._q("SELECT table, sum(bytes_on_disk) AS b FROM system.parts WHERE active "
                    "AND database = currentDatabase() GROUP BY table").to_pylist()
        by = {r["table"]: int(r["b"]) for r in t}
        return {"kline_bytes": by.get("kline", 0), "scalar_bytes": by.get("scalar", 0),
                "root_du_bytes": du(self.root)}

    # --- market queries

    RESAMPLE_HOW = RESAMPLE.format(interval="<tf>", symbol="<symbol>", start="..", end="..") + " (ArrowTable)"
    ASOF_HOW = ASOF.format(t="T") + " (ArrowTable)"
    GAPS_HOW = GAP_STATS.format(table="<series>") + "; " + GAPS.format(table="<series>", tf=60_000)

    def resample(self, symbol, start, end, timeframe):
        interval = f"{timeframe[:-1]} {self.INTERVALS[timeframe[-1]]}"
        return self._q(self.RESAMPLE.format(interval=interval, symbol=symbol, start=ch_ms(start), end=ch_ms(end)))

    def _load(self, name: str, table: pa.Table, columns: str, order: str) -> float:
        t = time.perf_counter()
        self._create(name, columns, order)
        src = table  # noqa: F841 - read by the Python() table function
        self.sess.query(f"INSERT INTO {name} SELECT * FROM Python(src)")
        return time.perf_counter() - t

    def asof_load(self, xs):
        return self._load("xs", xs.table, f"symbol LowCardinality(String), ts DateTime64(3, 'UTC'), {self.OHLCV}",
                          "symbol, ts")

    def asof(self, t, variant=None):
        return self._q(self.ASOF.format(t=ch_ms(t)))

    def coverage_load(self, gs):
        return self._load(f"cov_{gs.symbol}", gs.table, f"ts DateTime64(3, 'UTC'), {self.OHLCV}", "ts")

    def gaps(self, symbol, timeframe_ms: int = 60_000):
        table = f"cov_{symbol}"
        n, first, last = self._q(self.GAP_STATS.format(table=table)).to_pylist()[0].values()
        g = self._q(self.GAPS.format(table=table, tf=timeframe_ms))
        return {"present": n, "start_ts": first, "end_ts": last, "expected": (last - first) // timeframe_ms + 1,
                "gaps": g}

    def close(self):
        try:
            self.sess.close()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------- PostgreSQL


class Postgres(System):
    name = "PostgreSQL"
    label = "PostgreSQL"
    via = "ADBC (COPY in, Arrow out)"

    def __init__(self, server: procs.Postgres):
        import adbc_driver_postgresql
        import adbc_driver_postgresql.dbapi as pg

        self.server = server
        self.driver_version = adbc_driver_postgresql.__version__
        self.conn = pg.connect(server.uri, autocommit=True)
        self.cur = self.conn.cursor()

    def version(self) -> str:
        self.cur.execute("SELECT current_setting('server_version')")
        return f"{self.cur.fetchone()[0]} (adbc-driver-postgresql {self.driver_version})"

    def ingest(self, ds):
        t = time.perf_counter()
        frames = []
        for s in ds.symbols:
            k = ds.kline[s]
            frames.append(k.set_column(0, "ts", k.column("ts").cast(pa.int64()))
                          .add_column(0, "symbol", pa.array([s] * k.num_rows, pa.string())))
        scalar = ds.scalar.set_column(0, "ts", ds.scalar.column("ts").cast(pa.int64()))
        prep = time.perf_counter() - t
        t = time.perf_counter()
        # adbc_ingest is the driver's COPY ... FROM STDIN (binary) bulk path.
        for i, f in enumerate(frames):
            self.cur.adbc_ingest("kline", f, mode="create" if i == 0 else "append")
        self.cur.execute("ALTER TABLE kline ADD PRIMARY KEY (symbol, ts)")
        self.cur.execute("VACUUM ANALYZE kline")
        kline_s = time.perf_counter() - t
        t = time.perf_counter()
        self.cur.adbc_ingest("scalar", scalar, mode="create")
        self.cur.execute("ALTER TABLE scalar ADD PRIMARY KEY (ts)")
        self.cur.execute("CREATE INDEX scalar_value ON scalar (value)")
        self.cur.execute("VACUUM ANALYZE scalar")
        return {"kline_s": kline_s, "scalar_s": time.perf_counter() - t, "prep_s": prep}

    def read_range(self, symbol, start, end):
        self.cur.execute("SELECT ts, open, high, low, close, volume FROM kline "
                         "WHERE symbol = $1 AND ts BETWEEN $2 AND $3 ORDER BY ts", (symbol, start, end))
        return pl.from_arrow(self.cur.fetch_arrow_table())

    def latest(self, symbol, n):
        self.cur.execute("SELECT * FROM (SELECT ts, open, high, low, close, volume FROM kline WHERE symbol = $1 "
                         "ORDER BY ts DESC LIMIT $2) s ORDER BY ts", (symbol, n))
        return pl.from_arrow(self.cur.fetch_arrow_table())

    def predicate(self, lo, hi):
        self.cur.execute("SELECT ts FROM scalar WHERE value BETWEEN $1 AND $2", (lo, hi))
        return self.cur.fetch_arrow_table().num_rows

    def stored_rows(self):
        self.cur.execute("SELECT (SELECT count(*) FROM kline), (SELECT count(*) FROM scalar)")
        return tuple(int(x) for x in self.cur.fetchone())

    def disk(self):
        self.cur.execute("SELECT pg_total_relation_size('kline'), pg_total_relation_size('scalar')")
        k, s = self.cur.fetchone()
        return {"kline_bytes": int(k), "scalar_bytes": int(s)}

    # --- market queries

    ASOF = {
        "distinct_on": ("SELECT DISTINCT ON (symbol) symbol, ts, open, high, low, close, volume FROM kline_xs "
                        "WHERE ts <= $1 ORDER BY symbol, ts DESC"),
        # One index probe per symbol (a loose index scan), from a table of the symbols.
        "lateral": ("SELECT s.symbol, k.ts, k.open, k.high, k.low, k.close, k.volume FROM kline_xs_symbols s "
                    "CROSS JOIN LATERAL (SELECT ts, open, high, low, close, volume FROM kline_xs "
                    "WHERE symbol = s.symbol AND ts <= $1 ORDER BY ts DESC LIMIT 1) k ORDER BY s.symbol"),
    }

    def asof_load(self, xs):
        """Table `kline_xs(symbol, ts bigint, ...)` with primary key (symbol, ts), and
        `kline_xs_symbols` (the listing a LATERAL query walks); then a CHECKPOINT, so
        the load's writes do not land in the timed queries."""
        tab = xs.table.set_column(1, "ts", xs.table.column("ts").cast(pa.int64()))
        t = time.perf_counter()
        self.cur.execute("DROP TABLE IF EXISTS kline_xs")
        self.cur.execute("DROP TABLE IF EXISTS kline_xs_symbols")
        self.cur.adbc_ingest("kline_xs", tab, mode="create")
        self.cur.execute("ALTER TABLE kline_xs ADD PRIMARY KEY (symbol, ts)")
        self.cur.execute("CREATE TABLE kline_xs_symbols AS SELECT DISTINCT symbol FROM kline_xs")
        self.cur.execute("ALTER TABLE kline_xs_symbols ADD PRIMARY KEY (symbol)")
        self.cur.execute("VACUUM ANALYZE kline_xs")
        self.cur.execute("VACUUM ANALYZE kline_xs_symbols")
        self.cur.execute("CHECKPOINT")
        return time.perf_counter() - t

    def asof(self, t, variant=None):
        self.cur.execute(self.ASOF[variant or "distinct_on"], (t,))
        return self.cur.fetch_arrow_table()

    def close(self):
        self.cur.close()
        self.conn.close()


# --------------------------------------------------------------------------- ROAPI


class Roapi(System):
    name = "ROAPI"
    label = "ROAPI"
    via = "Flight SQL (ADBC)"

    def __init__(self, binary: str, parquet_dir: pathlib.Path, ds: Dataset, log: pathlib.Path):
        import adbc_driver_flightsql
        import adbc_driver_flightsql.dbapi as fsql

        self.binary = binary
        self.driver_version = adbc_driver_flightsql.__version__
        self.port = procs.free_port()
        tables = [f"{s.lower()}={parquet_dir / (s + '.parquet')}" for s in ds.symbols]
        tables.append(f"scalar={parquet_dir / 'scalar.parquet'}")
        argv = [binary, "--addr-http", f"127.0.0.1:{procs.free_port()}",
                "--addr-postgres", f"127.0.0.1:{procs.free_port()}",
                "--addr-flight-sql", f"127.0.0.1:{self.port}"]
        for t in tables:
            argv += ["-t", t]
        t0 = time.perf_counter()
        proc = procs.start_process(argv, log)
        procs.wait_port(self.port, 600, proc)
        self.startup_s = time.perf_counter() - t0
        self.conn = fsql.connect(f"grpc://127.0.0.1:{self.port}")
        self.cur = self.conn.cursor()

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout.strip()
        return f"{out.split()[-1] if out else '?'} (adbc-driver-flightsql {self.driver_version})"

    def _sql(self, q: str) -> pa.Table:
        self.cur.execute(q)
        return self.cur.fetch_arrow_table()

    def read_range(self, symbol, start, end):
        return pl.from_arrow(self._sql(
            f"SELECT * FROM {symbol.lower()} WHERE ts BETWEEN to_timestamp_millis({start}) "
            f"AND to_timestamp_millis({end})"))

    def latest(self, symbol, n):
        return pl.from_arrow(self._sql(
            f"SELECT * FROM (SELECT * FROM {symbol.lower()} ORDER BY ts DESC LIMIT {n}) ORDER BY ts"))

    def predicate(self, lo, hi):
        return self._sql(f"SELECT ts FROM scalar WHERE value BETWEEN {lo} AND {hi}").num_rows

    def sql(self, query):
        return self._sql(query)

    def close(self):
        self.cur.close()
        self.conn.close()
