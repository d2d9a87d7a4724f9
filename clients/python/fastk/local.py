"""Zero-copy reads for a client on the same host as a FastK server.

The server's `local-read` Flight action (docs/flight.md, "Co-located reads"), asked on
its Unix socket, answers with a plan: the raw chunk files holding the rows (path, byte
offset of each column's first row, row count; a compressed month is named by the raw
copy the server keeps of it) and DoGet tickets for the rows that cannot be mapped
(rows still in the write-ahead log, compressed months with no copy). This module
maps those files itself (`pa.memory_map`) and wraps their bytes as Arrow arrays
(`pa.Array.from_buffers`), so no byte is copied between the page cache and the
table; the ticket parts come through an ordinary DoGet. The result is one Table of
chunked columns with exactly DoGet's schema and values.

    from fastk import local
    client = local.connect("/run/fastk/flight.sock")
    t = local.read_table(client, {"kind": "kline", "symbol": "BTCUSDT",
                                  "timeframe": "1m", "start_ts": 1704067200000})
    df = local.read_polars(client, {...})     # pl.from_arrow(t, rechunk=False)

`fastk.connect("grpc+unix:///run/fastk/flight.sock").read(..., local=True)` uses it.
The module `fastk_local` (clients/python/fastk_local.py) is this module under its
former name.

A chunk file named in a plan may be unlinked before it is opened (a rewrite of its
month, a compaction, a delete): the open fails, or the file found is another one, and
the read asks for a new plan, at most `retries` times. A file already mapped stays
readable after it is unlinked. Needs pyarrow; Polars for `read_polars` only.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.flight as flight  # type: ignore[import-untyped]

ACTION = "local-read"
# Chunk header bytes 96..104: the body checksum (docs/storage-format.md).
_CHECKSUM_AT = 96
_U64 = 8
# Bytes of one stored value: every column is int64, or float64 bits.
_VALUE_BYTES = 8
DEFAULT_RETRIES = 8


class PlanChanged(Exception):
    """A part of a plan no longer exists as planned: ask for a new plan."""


def connect(socket_path: str, **kwargs: Any) -> flight.FlightClient:
    """A Flight client on the server's Unix socket (`flight.unix_socket`). gRPC's C++
    core needs an authority the server's HTTP/2 layer accepts (docs/flight.md)."""
    opts = list(kwargs.pop("generic_options", []))
    opts.append(("grpc.default_authority", "localhost"))
    return flight.connect(f"grpc+unix://{socket_path}", generic_options=opts, **kwargs)


def plan(client: flight.FlightClient, ticket: dict[str, Any],
         options: Any = None) -> tuple[dict[str, Any], pa.Schema]:
    """The server's plan for `ticket` (a single-series kline or scalar DoGet ticket)
    and the schema DoGet would send."""
    action = flight.Action(ACTION, json.dumps(ticket).encode())
    results = list(client.do_action(action, options=options))
    if len(results) != 2:
        raise ValueError(f"local-read answered {len(results)} results, expected 2")
    p: dict[str, Any] = json.loads(results[0].body.to_pybytes())
    schema = pa.ipc.read_schema(results[1].body)
    return p, schema


def _mapped(path: str, maps: dict[str, pa.Buffer]) -> pa.Buffer:
    """The whole file at `path` mapped read-only, once per read: the months of a bulk
    write share one pack file, and its parts share its mapping."""
    whole = maps.get(path)
    if whole is None:
        try:
            mm = pa.memory_map(path, "r")
        except FileNotFoundError as e:
            raise PlanChanged(str(e)) from e
        try:
            whole = mm.read_buffer()
        finally:
            # The buffers keep the mapping alive after the file is closed.
            mm.close()
        maps[path] = whole
    return whole


def _file_columns(part: dict[str, Any], schema: pa.Schema,
                  maps: dict[str, pa.Buffer]) -> list[pa.Array]:
    """The columns of a file part, as arrays over the mapped file (no copy)."""
    whole = _mapped(part["path"], maps)
    if whole.size != part["file_len"]:
        raise PlanChanged(f"{part['path']}: {whole.size} bytes, planned {part['file_len']}")
    # A chunk in a pack: its header starts at `image_offset` (0 for a chunk file).
    at = part.get("image_offset", 0) + _CHECKSUM_AT
    checksum: int = int.from_bytes(whole.slice(at, _U64).to_pybytes(), "little")
    if checksum != part["checksum"]:
        raise PlanChanged(f"{part['path']}: not the file planned")
    rows: int = part["rows"]
    return [
        pa.Array.from_buffers(field.type, rows,
                              [None, whole.slice(offset, rows * _VALUE_BYTES)])
        for field, offset in zip(schema, part["offsets"])
    ]


def _ticket_columns(client: flight.FlightClient, part: dict[str, Any], schema: pa.Schema,
                    options: Any) -> list[list[pa.Array]]:
    """The columns of a ticket part, as the chunks DoGet sent."""
    t = client.do_get(flight.Ticket(part["ticket"].encode()), options=options).read_all()
    if t.num_rows != part["rows"]:
        raise PlanChanged(f"DoGet of a part gave {t.num_rows} rows, planned {part['rows']}")
    return [t.column(i).chunks for i in range(len(schema))]


def _read_once(client: flight.FlightClient, ticket: dict[str, Any], options: Any) -> pa.Table:
    p, schema = plan(client, ticket, options)
    chunks: list[list[pa.Array]] = [[] for _ in schema]
    maps: dict[str, pa.Buffer] = {}
    for part in p["parts"]:
        if part["type"] == "file":
            for col, arr in zip(chunks, _file_columns(part, schema, maps)):
                col.append(arr)
        else:
            for col, arrs in zip(chunks, _ticket_columns(client, part, schema, options)):
                col.extend(arrs)
    columns = [pa.chunked_array(c, type=f.type) for c, f in zip(chunks, schema)]
    return pa.Table.from_arrays(columns, schema=schema)


def read_table(client: flight.FlightClient, ticket: dict[str, Any], *, options: Any = None,
               retries: int = DEFAULT_RETRIES) -> pa.Table:
    """The rows of `ticket` as DoGet would give them, mapping the chunk files the
    server maps. A plan whose files changed before they were opened is asked again,
    at most `retries` more times."""
    for attempt in range(retries + 1):
        try:
            return _read_once(client, ticket, options)
        except PlanChanged:
            if attempt == retries:
                raise
    raise AssertionError("unreachable")


def read_polars(client: flight.FlightClient, ticket: dict[str, Any], **kwargs: Any) -> Any:
    """`read_table` as a Polars DataFrame, keeping the chunks (no copy)."""
    import polars as pl

    return pl.from_arrow(read_table(client, ticket, **kwargs), rechunk=False)
