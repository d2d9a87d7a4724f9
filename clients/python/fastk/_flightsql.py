"""The few Flight SQL messages the client needs, encoded by hand.

A Flight SQL command is a protobuf `google.protobuf.Any` wrapping one message of
`arrow.flight.protocol.sql` (FlightSql.proto). The client sends statements
(`CommandStatementQuery`) and, for parameters, prepared statements (the
`CreatePreparedStatement` / `ClosePreparedStatement` actions, a DoPut binding one row,
then `CommandPreparedStatementQuery`). Every field used is a string or bytes (wire
type 2), so a length-delimited encoder and a small decoder are enough, and the package
needs neither protobuf nor the ADBC driver.
"""

from __future__ import annotations

_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, value: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(value)) + value


def decode(buf: bytes) -> dict[int, bytes]:
    """The length-delimited fields of a message (the last value of each number);
    varint and fixed-width fields are skipped."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _read_varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _read_varint(buf, i)
            out[number] = buf[i:i + n]
            i += n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated protobuf varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def any_of(message: str, body: bytes) -> bytes:
    """`Any{type_url, value}` of a Flight SQL message."""
    return _field(1, (_PREFIX + message).encode()) + _field(2, body)


def unpack_any(buf: bytes) -> tuple[str, bytes]:
    fields = decode(buf)
    return fields.get(1, b"").decode(), fields.get(2, b"")


def statement_query(query: str) -> bytes:
    return any_of("CommandStatementQuery", _field(1, query.encode()))


def create_prepared(query: str) -> bytes:
    return any_of("ActionCreatePreparedStatementRequest", _field(1, query.encode()))


def prepared_query(handle: bytes) -> bytes:
    return any_of("CommandPreparedStatementQuery", _field(1, handle))


def close_prepared(handle: bytes) -> bytes:
    return any_of("ActionClosePreparedStatementRequest", _field(1, handle))
