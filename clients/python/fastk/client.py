"""The FastK client: reads, writes, registrations, SQL and market queries.

Everything but registration goes over Arrow Flight (pyarrow.flight): DoGet of JSON
tickets, DoPut of PATH descriptors, the `coverage`/`health`/... actions, and Flight
SQL. Registration has no Flight call, so it goes over the HTTP API (`http_url`).
"""

from __future__ import annotations

import json
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, cast

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.flight as flight  # type: ignore[import-untyped]

from . import _flightsql, local
from ._time import to_ms
from .errors import FastKError, error, from_flight_error, from_http_error

__all__ = ["Client", "connect", "To", "KLINE_COLUMNS"]

To = Literal["arrow", "polars", "pandas"]
KLINE_COLUMNS = ("open", "high", "low", "close", "volume")
_PRICE_COLUMNS = ("open", "high", "low", "close")
_TS = pa.timestamp("ms", tz="UTC")
_ROUNDING = {
    "nearest": "half_to_even",
    "half_to_even": "half_to_even",
    "half_up": "half_up",
    "half_down": "half_down",
    "half_away_from_zero": "half_towards_infinity",
    "down": "down",
    "floor": "down",
    "up": "up",
    "ceil": "up",
    "towards_zero": "towards_zero",
}


def connect(
    url: str,
    token: str | None = None,
    tls_root_certs: str | bytes | None = None,
    *,
    http_url: str | None = None,
    timeout: float | None = None,
    generic_options: Sequence[tuple[str, Any]] = (),
    cert_chain: str | bytes | None = None,
    private_key: str | bytes | None = None,
) -> Client:
    """A client of the FastK server at `url`: `grpc://host:port` (plaintext),
    `grpc+tls://host:port` (with `tls_root_certs`, PEM) or `grpc+unix:///path/to/socket`
    (the server's `flight.unix_socket`, which also allows co-located reads).

    `token` is sent as `authorization: Bearer <token>` on every call. `http_url`
    (`http://host:8080`, or `https://` when the server has TLS on) is only needed for
    registering series, which the server serves over HTTP; its calls trust
    `tls_root_certs` too. `cert_chain` and `private_key` (PEM) are this client's
    certificate for a server with mutual TLS (`tls.client_ca_path`), on both
    protocols. `timeout` (seconds) bounds every Flight call."""
    return Client(url, token, tls_root_certs, http_url=http_url, timeout=timeout,
                  generic_options=generic_options, cert_chain=cert_chain,
                  private_key=private_key)


def _pem(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _ssl_context(
    roots: str | bytes | None, chain: str | bytes | None, key: str | bytes | None
) -> ssl.SSLContext | None:
    """The TLS context of HTTP calls: the given roots (else the system's) and, for
    mutual TLS, the client certificate (written to a private temporary file only for
    as long as `ssl` takes to load it)."""
    if roots is None and chain is None:
        return None
    ctx = ssl.create_default_context(cadata=_pem(roots) if roots is not None else None)
    if chain is not None:
        if key is None:
            raise error("invalid_argument", "cert_chain needs private_key")
        fd, path = tempfile.mkstemp(suffix=".pem")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(_pem(chain).rstrip() + "\n" + _pem(key))
            ctx.load_cert_chain(path)
        finally:
            os.unlink(path)
    return ctx


def _unwrap(exc: BaseException) -> FastKError:
    return exc if isinstance(exc, FastKError) else from_flight_error(exc)


class Client:
    """A connection to one FastK server. Thread-safe as pyarrow's FlightClient is;
    close it (or use `with`) when done."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        tls_root_certs: str | bytes | None = None,
        *,
        http_url: str | None = None,
        timeout: float | None = None,
        generic_options: Sequence[tuple[str, Any]] = (),
        cert_chain: str | bytes | None = None,
        private_key: str | bytes | None = None,
    ) -> None:
        self.url = url
        self.is_unix = url.startswith("grpc+unix://")
        self.http_url = http_url.rstrip("/") if http_url else None
        self._token = token
        self._timeout = timeout
        options = list(generic_options)
        if self.is_unix and not any(k == "grpc.default_authority" for k, _ in options):
            # gRPC's C++ core sends the socket path as :authority, which the server's
            # HTTP/2 layer refuses (docs/flight.md, "Unix domain socket").
            options.append(("grpc.default_authority", "localhost"))
        kwargs: dict[str, Any] = {"generic_options": options}
        if tls_root_certs is not None:
            kwargs["tls_root_certs"] = tls_root_certs
        if cert_chain is not None or private_key is not None:
            if cert_chain is None or private_key is None:
                raise error("invalid_argument", "give cert_chain and private_key together")
            kwargs["cert_chain"] = cert_chain
            kwargs["private_key"] = private_key
        self._ssl = _ssl_context(tls_root_certs, cert_chain, private_key)
        try:
            self._flight = flight.connect(url, **kwargs)
        except Exception as e:
            raise _unwrap(e) from e
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        self._options = flight.FlightCallOptions(headers=headers, timeout=timeout)

    # -- plumbing ---------------------------------------------------------------

    @property
    def flight(self) -> Any:
        """The underlying `pyarrow.flight.FlightClient`, for calls this class lacks."""
        return self._flight

    @property
    def call_options(self) -> Any:
        """The `FlightCallOptions` (token, timeout) every call of this client uses."""
        return self._options

    def close(self) -> None:
        self._flight.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args, options=self._options)
        except FastKError:
            raise
        except local.PlanChanged as e:
            raise error("unavailable", f"the co-located plan kept changing: {e}") from e
        except Exception as e:  # pyarrow raises ArrowException / FlightError subclasses
            raise from_flight_error(e) from e

    def action(self, name: str, body: Mapping[str, Any] | None = None) -> Any:
        """Runs the Flight action `name` with a JSON body; its JSON answer (the first
        Result's)."""
        payload = json.dumps(dict(body or {})).encode()

        def run(options: Any) -> list[Any]:
            return list(self._flight.do_action(flight.Action(name, payload), options=options))

        results = self._call(lambda options: run(options))
        if not results:
            return None
        return json.loads(results[0].body.to_pybytes() or b"null")

    def health(self) -> Any:
        return self.action("health")

    def inventory(self, **params: Any) -> Any:
        """The `/inventory` JSON (`kind`, `symbol`, `partitions`, `limit`, `after`)."""
        return self.action("inventory", params)

    def _http(self, method: str, path: str, body: Any = None) -> Any:
        if self.http_url is None:
            raise error(
                "invalid_argument",
                f"{method} {path} is served over HTTP only: pass http_url=... (the "
                "server's http.addr, e.g. http://127.0.0.1:8080) to fastk.connect",
            )
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http_url + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        if self._token:
            req.add_header("authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(
                req, timeout=self._timeout or 60, context=self._ssl
            ) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise from_http_error(e.code, e.read()) from None
        except (urllib.error.URLError, OSError) as e:
            raise error("unavailable", f"{method} {self.http_url}{path}: {e}") from e
        return json.loads(raw) if raw else None

    # -- registration -------------------------------------------------------------

    def register_kline(
        self,
        symbol: str,
        timeframe: str,
        price_scale: int,
        volume_scale: int,
        *,
        irregular: bool | None = None,
        retention_ms: int | None = None,
    ) -> dict[str, Any]:
        """Registers a kline series (`POST /v1/kline/series`); registering the same
        fields again is fine, other fields are `conflict`. Returns the series info."""
        body = _drop_none({"symbol": symbol, "timeframe": timeframe,
                           "price_scale": price_scale, "volume_scale": volume_scale,
                           "irregular": irregular, "retention_ms": retention_ms})
        return cast("dict[str, Any]", self._http("POST", "/v1/kline/series", body))

    def register_scalar(
        self,
        symbol: str,
        timeframe: str,
        category: str,
        name: str,
        value_type: Literal["f64", "i64"] = "f64",
        *,
        retention_ms: int | None = None,
    ) -> dict[str, Any]:
        """Registers a scalar series (`POST /v1/scalar/series`)."""
        body = _drop_none({"symbol": symbol, "timeframe": timeframe, "category": category,
                           "name": name, "value_type": value_type,
                           "retention_ms": retention_ms})
        return cast("dict[str, Any]", self._http("POST", "/v1/scalar/series", body))

    def register_many(self, kind: Literal["kline", "scalar"],
                      series: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Many registrations in one all-or-nothing request
        (`POST /v1/{kind}/series/many`); answers `{"created", "existing"}`."""
        body = {"series": [dict(s) for s in series]}
        return cast("dict[str, Any]", self._http("POST", f"/v1/{kind}/series/many", body))

    # -- reads --------------------------------------------------------------------

    def ticket(
        self,
        kind: str,
        symbol: str | Sequence[str] | None,
        timeframe: str | None = None,
        *,
        category: str | None = None,
        name: str | None = None,
        start: Any = None,
        end: Any = None,
        **options: Any,
    ) -> dict[str, Any]:
        """The JSON ticket `read` sends (docs/flight.md, "Tickets and descriptors")."""
        t: dict[str, Any] = {"kind": kind}
        if isinstance(symbol, str) and symbol != "*":
            t["symbol"] = symbol
        elif symbol is not None:
            t["symbols"] = "*" if symbol == "*" else list(symbol)
        t.update(_drop_none({"timeframe": timeframe, "category": category, "name": name}))
        if start is not None:
            t["start_ts"] = to_ms(start, "start")
        if end is not None:
            t["end_ts"] = to_ms(end, "end")
        for key, value in options.items():
            if value is None:
                continue
            if key in ("start_ts", "end_ts"):
                value = to_ms(value, key)
            elif key == "as_of" and value != "now":
                value = to_ms(value, key)
            elif key == "resample" and isinstance(value, str):
                value = {"timeframe": value}
            elif key == "columns" and not isinstance(value, str):
                value = [c for c in value if c != "ts"]
            t[key] = value
        return t

    def read(
        self,
        kind: str,
        symbol: str | Sequence[str] | None,
        timeframe: str | None = None,
        *,
        category: str | None = None,
        name: str | None = None,
        start: Any = None,
        end: Any = None,
        to: To = "arrow",
        local: bool = False,
        **options: Any,
    ) -> Any:
        """Rows of one series (or many: a list of symbols, or `"*"`) as a
        `pyarrow.Table` (`to="arrow"`), `polars.DataFrame` or `pandas.DataFrame`.

        `start`/`end` (inclusive) take a datetime (naive = UTC), a pandas Timestamp,
        an ISO string or epoch milliseconds. Other ticket fields pass through:
        `latest=n`, `columns=[...]`, `price_format="float64"`, `as_of=t`,
        `resample="1h"` or `{"timeframe", "offset_ms", "fill", "agg"}`,
        `predicate={...}`, `scalars=[...]` (`kind="aligned"`), ...

        `local=True` (a `grpc+unix://` client on the server's host) maps the chunk
        files instead of receiving them (`fastk.local`); same table, no copy."""
        _check_to(to)
        ticket = self.ticket(kind, symbol, timeframe, category=category, name=name,
                             start=start, end=end, **options)
        if local:
            table = self.read_local(ticket)
        else:
            table = self.read_ticket(ticket)
        return convert(table, to)

    def read_ticket(self, ticket: Mapping[str, Any]) -> Any:
        """DoGet of a JSON ticket, as a `pyarrow.Table`."""
        raw = flight.Ticket(json.dumps(dict(ticket)).encode())
        return self._call(lambda options: self._flight.do_get(raw, options=options).read_all())

    def read_local(self, ticket: Mapping[str, Any], *, retries: int = local.DEFAULT_RETRIES) -> Any:
        """The co-located read of a single-series ticket (docs/flight.md, "Co-located
        reads"): only on a `grpc+unix://` client."""
        if not self.is_unix:
            raise error("precondition_failed",
                        "local reads need the server's Unix socket: connect with "
                        "grpc+unix:///path/to/flight.sock on the server's host")
        return self._call(lambda options: local.read_table(
            self._flight, dict(ticket), options=options, retries=retries))

    def latest(self, kind: str, symbol: str | Sequence[str], timeframe: str, n: int = 1,
               **kwargs: Any) -> Any:
        """The last `n` rows (of each series, for many)."""
        return self.read(kind, symbol, timeframe, latest=n, **kwargs)

    def resample(self, kind: str, symbol: str | Sequence[str], timeframe: str, to_timeframe: str,
                 *, offset_ms: int | None = None, fill: str | None = None,
                 agg: str | None = None, **kwargs: Any) -> Any:
        """A read resampled into `to_timeframe` buckets (docs/market-queries.md); the
        result has a `complete` column."""
        spec = _drop_none({"timeframe": to_timeframe, "offset_ms": offset_ms, "fill": fill,
                           "agg": agg})
        return self.read(kind, symbol, timeframe, resample=spec, **kwargs)

    def as_of(self, kind: str, symbols: str | Sequence[str], timeframe: str, at: Any = "now",
              **kwargs: Any) -> Any:
        """The cross section: per series, the last row at or before `at`."""
        return self.read(kind, symbols, timeframe, as_of=at, **kwargs)

    def aligned(self, symbol: str, timeframe: str, scalars: Iterable[tuple[str, str] | Mapping[str, str]],
                *, join: str | None = None, tolerance_ms: int | None = None, **kwargs: Any) -> Any:
        """The aligned view: the kline's columns, then one column per scalar
        `(category, name)` named `category.name`."""
        specs = [dict(s) if isinstance(s, Mapping) else {"category": s[0], "name": s[1]}
                 for s in scalars]
        return self.read("aligned", symbol, timeframe, scalars=specs, join=join,
                         tolerance_ms=tolerance_ms, **kwargs)

    def coverage(self, kind: str, symbol: str, timeframe: str, *, category: str | None = None,
                 name: str | None = None, start: Any = None, end: Any = None,
                 calendar: str | None = None, complete_n: int | None = None,
                 max_gaps: int | None = None) -> dict[str, Any]:
        """Expected and present bars, gaps and the last complete run (the `coverage`
        action)."""
        body = _drop_none({"kind": kind, "symbol": symbol, "timeframe": timeframe,
                           "category": category, "name": name, "calendar": calendar,
                           "complete_n": complete_n, "max_gaps": max_gaps,
                           "start_ts": None if start is None else to_ms(start, "start"),
                           "end_ts": None if end is None else to_ms(end, "end")})
        return cast("dict[str, Any]", self.action("coverage", body))

    def delete_range(self, kind: str, symbol: str, timeframe: str, *,
                     category: str | None = None, name: str | None = None,
                     start: Any = None, end: Any = None,
                     expected_version: int | None = None) -> dict[str, Any]:
        """Deletes the rows of `[start, end]` (at least one bound); `{"deleted",
        "months", "version"}`."""
        body = _drop_none({"kind": kind, "symbol": symbol, "timeframe": timeframe,
                           "category": category, "name": name,
                           "expected_version": expected_version,
                           "start_ts": None if start is None else to_ms(start, "start"),
                           "end_ts": None if end is None else to_ms(end, "end")})
        return cast("dict[str, Any]", self.action("delete-range", body))

    def schema(self, kind: str, symbol: str, timeframe: str, *, category: str | None = None,
               name: str | None = None) -> Any:
        """The Arrow schema of a series (GetSchema of its PATH); its metadata holds
        `fastk.price_scale`, `fastk.volume_scale`, `fastk.value_type`, ..."""
        desc = flight.FlightDescriptor.for_path(*_path(kind, symbol, timeframe, category, name))
        return self._call(lambda options: self._flight.get_schema(desc, options=options)).schema

    def series_info(self, kind: str, symbol: str, timeframe: str, *,
                    category: str | None = None, name: str | None = None) -> dict[str, str]:
        """The series' `fastk.*` schema metadata without the prefix (`price_scale`,
        `volume_scale`, `timeframe_ms`, `value_type`, ...), as strings."""
        meta = self.schema(kind, symbol, timeframe, category=category, name=name).metadata or {}
        return {k.decode().removeprefix("fastk."): v.decode() for k, v in meta.items()}

    # -- writes -------------------------------------------------------------------

    def write(
        self,
        kind: str,
        symbol: str | Sequence[str] | None,
        data: Any,
        timeframe: str | None = None,
        *,
        category: str | None = None,
        name: str | None = None,
        expected_version: int | None = None,
        rounding: str | None = None,
        batch_rows: int = 65_536,
    ) -> dict[str, Any]:
        """Writes `data` (a pyarrow Table or RecordBatch, a Polars or pandas DataFrame)
        by one DoPut stream: one all-or-nothing write (upsert by `ts`).

        `ts` may be a timestamp column of any unit that holds whole milliseconds, a
        date, or int64 epoch milliseconds (a pandas frame may carry it as its index).
        Kline prices and volumes may be integers (the stored fixed-point values) or
        floats, which are multiplied by the series' `price_scale` / `volume_scale`;
        a float that is not exactly a multiple of 1/scale is `invalid_argument` unless
        `rounding` is given (`"nearest"` (half to even), `"half_up"`, `"down"`, `"up"`,
        `"towards_zero"`, ...), which rounds `value * scale`.

        `symbol="*"` (or `None`, or a list) with a `symbol` column in `data` writes many
        series of `timeframe` in one stream (no `expected_version`). Returns the
        server's write response (`written`, `inserted`, `replaced`, `version` or
        `series`)."""
        if kind not in ("kline", "scalar"):
            raise error("invalid_argument", f"kind must be 'kline' or 'scalar', not {kind!r}")
        if timeframe is None:
            raise error("invalid_argument", "write needs a timeframe")
        table = to_arrow(data)
        many = symbol is None or symbol == "*" or not isinstance(symbol, str)
        if many and "symbol" not in table.column_names:
            raise error("invalid_argument",
                        "a many-series write needs a `symbol` column in the data")
        if not many and "symbol" in table.column_names:
            table = table.drop_columns(["symbol"])
        if rounding is not None and rounding not in _ROUNDING:
            raise error("invalid_argument",
                        f"rounding must be one of {sorted(_ROUNDING)}, not {rounding!r}")
        table = table.replace_schema_metadata(None)
        columns: dict[str, Any] = {}
        for field in table.schema:
            col = table.column(field.name)
            if field.name == "ts":
                col = _ts_column(col)
            elif field.name == "symbol":
                if pa.types.is_dictionary(field.type):
                    col = col.cast(field.type.value_type)
            columns[field.name] = col
        symbols = (
            [s for s in pc.unique(columns["symbol"]).to_pylist()] if many else [cast(str, symbol)]
        )
        infos = {s: self.series_info(kind, s, timeframe, category=category, name=name)
                 for s in symbols}
        if kind == "kline":
            for col_name in KLINE_COLUMNS:
                if col_name in columns:
                    scale_key = "price_scale" if col_name in _PRICE_COLUMNS else "volume_scale"
                    scales = {s: int(info[scale_key]) for s, info in infos.items()}
                    columns[col_name] = _fixed_point(col_name, columns[col_name], scales,
                                                     columns.get("symbol"), rounding)
        elif "value" in columns:
            types = {info.get("value_type", "f64") for info in infos.values()}
            if len(types) > 1:
                raise error("invalid_argument",
                            "a many-series scalar write mixes i64 and f64 series: write "
                            "them separately")
            columns["value"] = _scalar_values(columns["value"], types.pop() if types else "f64")
        table = pa.table(columns)
        path = _path(kind, "*" if many else cast(str, symbol), timeframe, category, name)
        return self._put(path, table, expected_version, batch_rows)

    def _put(self, path: list[str], table: Any, expected_version: int | None,
             batch_rows: int) -> dict[str, Any]:
        desc = flight.FlightDescriptor.for_path(*path)

        def run(options: Any) -> dict[str, Any]:
            writer, reader = self._flight.do_put(desc, table.schema, options=options)
            try:
                batches = table.to_batches(max_chunksize=batch_rows)
                if expected_version is not None:
                    meta = pa.py_buffer(json.dumps({"expected_version": expected_version}).encode())
                    first = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)
                    writer.write_with_metadata(first, meta)
                    batches = batches[1:]
                for batch in batches:
                    writer.write_batch(batch)
                writer.done_writing()
                buf = reader.read()
            finally:
                writer.close()
            if buf is None:
                return {}
            return cast("dict[str, Any]", json.loads(buf.to_pybytes()))

        return cast("dict[str, Any]", self._call(run))

    # -- SQL ----------------------------------------------------------------------

    def sql(self, query: str, parameters: Sequence[Any] | None = None, to: To = "arrow") -> Any:
        """Runs a read-only SQL query through Flight SQL (docs/sql.md) and returns its
        result as Arrow, Polars or pandas. `parameters` are the values of `$1`, `$2`,
        ... (a prepared statement is made, bound, run and closed)."""
        _check_to(to)
        if parameters is None:
            desc = flight.FlightDescriptor.for_command(_flightsql.statement_query(query))
            return convert(self._fetch_info(desc), to)
        handle, param_schema = self._prepare(query)
        try:
            if len(parameters) > 0:
                handle = self._bind(handle, parameters, param_schema)
            desc = flight.FlightDescriptor.for_command(_flightsql.prepared_query(handle))
            table = self._fetch_info(desc)
        finally:
            try:
                self._call(lambda options: list(self._flight.do_action(
                    flight.Action("ClosePreparedStatement", _flightsql.close_prepared(handle)),
                    options=options)))
            except FastKError:
                pass  # the server closes idle statements itself
        return convert(table, to)

    def _fetch_info(self, desc: Any) -> Any:
        info = self._call(lambda options: self._flight.get_flight_info(desc, options=options))
        tables = [self._call(lambda options, e=endpoint: self._flight.do_get(
            e.ticket, options=options).read_all()) for endpoint in info.endpoints]
        if not tables:
            return info.schema.empty_table()
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def _prepare(self, query: str) -> tuple[bytes, Any]:
        action = flight.Action("CreatePreparedStatement", _flightsql.create_prepared(query))
        results = self._call(lambda options: list(self._flight.do_action(action, options=options)))
        if not results:
            raise error("internal", "CreatePreparedStatement answered no result")
        _, body = _flightsql.unpack_any(results[0].body.to_pybytes())
        fields = _flightsql.decode(body)
        param_schema = pa.ipc.read_schema(pa.py_buffer(fields[3])) if fields.get(3) else None
        return fields.get(1, b""), param_schema

    def _bind(self, handle: bytes, parameters: Sequence[Any], schema: Any) -> bytes:
        arrays = []
        for i, value in enumerate(parameters):
            if hasattr(value, "isoformat") or type(value).__name__ in ("Timestamp", "datetime64"):
                arrays.append(pa.array([to_ms(value, f"${i + 1}")], _TS))
            else:
                arrays.append(pa.array([value]))
        names = (list(schema.names) if schema is not None and len(schema) == len(arrays)
                 else [f"${i + 1}" for i in range(len(arrays))])
        batch = pa.RecordBatch.from_arrays(arrays, names=names)
        desc = flight.FlightDescriptor.for_command(_flightsql.prepared_query(handle))

        def run(options: Any) -> bytes:
            writer, reader = self._flight.do_put(desc, batch.schema, options=options)
            try:
                writer.write_batch(batch)
                writer.done_writing()
                buf = reader.read()
            finally:
                writer.close()
            if buf is not None and buf.size:
                # DoPutPreparedStatementResult: the server may hand back a new handle.
                _, body = _flightsql.unpack_any(buf.to_pybytes())
                new = _flightsql.decode(body).get(1)
                if new:
                    return new
            return handle

        return cast(bytes, self._call(run))

    # -- listing ------------------------------------------------------------------

    def list_series(self, kind: str | None = None, symbol: str | None = None) -> Iterator[dict[str, Any]]:
        """Every series (ListFlights): `{"kind", "symbol", "timeframe", ..., "rows"}`."""
        criteria = json.dumps(_drop_none({"kind": kind, "symbol": symbol})).encode()
        infos = self._call(lambda options: list(self._flight.list_flights(criteria, options=options)))
        for info in infos:
            path = [p.decode() if isinstance(p, bytes) else p for p in info.descriptor.path]
            meta = {k.decode().removeprefix("fastk."): v.decode()
                    for k, v in (info.schema.metadata or {}).items()}
            item: dict[str, Any] = {"kind": path[0], "symbol": path[1], "timeframe": path[2]}
            if len(path) == 5:
                item["category"], item["name"] = path[3], path[4]
            item["rows"] = info.total_records
            item.update({k: v for k, v in meta.items() if k not in item})
            yield item


# -- conversions ---------------------------------------------------------------------


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _path(kind: str, symbol: str, timeframe: str, category: str | None,
          name: str | None) -> list[str]:
    if kind == "kline":
        return ["kline", symbol, timeframe]
    if kind == "scalar":
        if category is None or name is None:
            raise error("invalid_argument", "a scalar series needs category and name")
        return ["scalar", symbol, timeframe, category, name]
    raise error("invalid_argument", f"kind must be 'kline' or 'scalar', not {kind!r}")


def _check_to(to: str) -> None:
    if to not in ("arrow", "polars", "pandas"):
        raise error("invalid_argument",
                    f"to must be 'arrow', 'polars' or 'pandas', not {to!r}")


def convert(table: Any, to: str) -> Any:
    """A pyarrow Table as `to`: `"arrow"` (itself), `"polars"` (`pl.from_arrow`, chunks
    kept) or `"pandas"` (`Table.to_pandas()`: ts is `datetime64[ms, UTC]`)."""
    if to == "arrow":
        return table
    if to == "polars":
        import polars as pl

        return pl.from_arrow(table, rechunk=False)
    if to == "pandas":
        return table.to_pandas()
    raise error("invalid_argument", f"to must be 'arrow', 'polars' or 'pandas', not {to!r}")


def to_arrow(data: Any) -> Any:
    """`data` as a pyarrow Table: a Table, RecordBatch, Polars DataFrame, pandas
    DataFrame (a `ts` index becomes the `ts` column), or a mapping of columns."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__ or ""
    if module.startswith("polars"):
        return data.to_arrow()
    if module.startswith("pandas"):
        keep_index = "ts" not in data.columns and data.index.name == "ts"
        return pa.Table.from_pandas(data, preserve_index=keep_index)
    if isinstance(data, Mapping):
        return pa.table(dict(data))
    raise error("invalid_argument",
                f"cannot write a {type(data).__name__}: give a pyarrow Table, a Polars or "
                "pandas DataFrame")


def _ts_column(col: Any) -> Any:
    t = col.type
    if pa.types.is_timestamp(t):
        if t.unit == "ms":
            return col.cast(_TS)
        try:
            return col.cast(_TS, safe=True)
        except pa.ArrowInvalid as e:
            raise error("invalid_argument",
                        f"ts holds times that are not whole milliseconds ({e})") from e
    if pa.types.is_date(t):
        return col.cast(pa.timestamp("ms")).cast(_TS)
    if pa.types.is_integer(t):
        return col.cast(pa.int64())
    raise error("invalid_argument", f"ts must be a timestamp or int64 milliseconds, not {t}")


def _fixed_point(name: str, col: Any, scales: Mapping[str, int], symbols: Any,
                 rounding: str | None) -> Any:
    t = col.type
    if pa.types.is_integer(t):
        return col.cast(pa.int64())
    if not (pa.types.is_floating(t) or pa.types.is_decimal(t)):
        raise error("invalid_argument", f"{name} must be integers or floats, not {t}")
    values = col.cast(pa.float64())
    if symbols is None:
        scale: Any = float(next(iter(scales.values())))
    else:
        keys = list(scales)
        index = pc.index_in(symbols, value_set=pa.array(keys, symbols.type))
        scale = pc.take(pa.array([float(scales[k]) for k in keys]), index)
    if pc.any(pc.invert(pc.is_finite(values))).as_py():
        raise error("invalid_argument", f"{name} holds NaN or an infinity")
    scaled = pc.multiply(values, scale)
    mode = _ROUNDING[rounding] if rounding is not None else "half_to_even"
    rounded = pc.round(scaled, 0, round_mode=mode)
    if rounding is None:
        # Exact when the integer's value over the scale is the very float given: 1.1 at
        # scale 100 is 110 (110 / 100 == 1.1), 1.005 is not a whole number of cents.
        back = pc.divide(rounded, scale)
        bad = pc.not_equal(back, values)
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            flat = values.combine_chunks() if hasattr(values, "combine_chunks") else values
            s = (int(scale) if isinstance(scale, float)
                 else int(pc.take(scale, [i])[0].as_py()))
            raise error(
                "invalid_argument",
                f"{name} of row {i} ({flat[i].as_py()!r}) does not fit the series' scale "
                f"{s} exactly: round it, or pass rounding='nearest' (or another mode)",
            )
    limit = float(2 ** 63)
    if pc.any(pc.greater_equal(pc.abs(rounded), limit)).as_py():
        raise error("invalid_argument", f"{name} times its scale does not fit in int64")
    return rounded.cast(pa.int64())


def _scalar_values(col: Any, value_type: str) -> Any:
    t = col.type
    if value_type == "f64":
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return col.cast(pa.float64())
        raise error("invalid_argument", f"value must be numbers, not {t}")
    if pa.types.is_integer(t):
        return col.cast(pa.int64())
    if pa.types.is_floating(t):
        try:
            return col.cast(pa.int64(), safe=True)
        except pa.ArrowInvalid as e:
            raise error("invalid_argument",
                        f"an i64 series takes whole numbers: value holds fractions ({e})") from e
    raise error("invalid_argument", f"value must be integers for an i64 series, not {t}")
