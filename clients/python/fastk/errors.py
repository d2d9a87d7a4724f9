"""Errors of the FastK client: one exception type whose `.code` is the contract's code.

Flight calls fail with pyarrow exceptions that carry the gRPC status in their text
("Flight returned not found error, with message: ...", and the gRPC debug context
"NOT_FOUND:..."); HTTP calls fail with the contract's JSON body
`{"error": {"code", "message"}}`. Both become a `FastKError` (or the subclass for its
code), so callers test `e.code == "not_found"` whatever the transport.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "FastKError",
    "InvalidArgument",
    "NotFound",
    "Conflict",
    "PreconditionFailed",
    "PayloadTooLarge",
    "Unauthorized",
    "Forbidden",
    "Unavailable",
    "Corrupted",
    "InternalError",
    "from_flight_error",
    "from_http_error",
]


class FastKError(Exception):
    """A FastK call failed. `code` is the contract's code string (`invalid_argument`,
    `not_found`, `conflict`, `precondition_failed`, `payload_too_large`,
    `unauthorized`, `forbidden`, `unavailable`, `corrupted`, `internal`, and over HTTP
    `unprocessable`); `message` is the server's (or the client's) explanation."""

    code: str = "internal"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class InvalidArgument(FastKError):
    """`invalid_argument` (and HTTP `unprocessable`): the request is wrong."""


class NotFound(FastKError):
    """`not_found`: the series (or another named thing) does not exist."""


class Conflict(FastKError):
    """`conflict`: the series exists with other fields."""


class PreconditionFailed(FastKError):
    """`precondition_failed`: an expected version did not match, or the call needs
    another transport (a co-located read over TCP)."""


class PayloadTooLarge(FastKError):
    """`payload_too_large`: split the request."""


class Unauthorized(FastKError):
    """`unauthorized`: a missing or wrong token."""


class Forbidden(FastKError):
    """`forbidden`: the token may not do this."""


class Unavailable(FastKError):
    """`unavailable`: retry shortly (nothing was written)."""


class Corrupted(FastKError):
    """`corrupted`: stored data failed its checksum."""


class InternalError(FastKError):
    """`internal`: anything else."""


_CLASSES: dict[str, type[FastKError]] = {
    "invalid_argument": InvalidArgument,
    "unprocessable": InvalidArgument,
    "not_found": NotFound,
    "conflict": Conflict,
    "precondition_failed": PreconditionFailed,
    "payload_too_large": PayloadTooLarge,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "unavailable": Unavailable,
    "corrupted": Corrupted,
    "internal": InternalError,
}

# gRPC status names (as in the gRPC debug context pyarrow appends) -> contract codes.
_GRPC_CODES = {
    "INVALID_ARGUMENT": "invalid_argument",
    "NOT_FOUND": "not_found",
    "ALREADY_EXISTS": "conflict",
    "FAILED_PRECONDITION": "precondition_failed",
    "RESOURCE_EXHAUSTED": "payload_too_large",
    "UNAUTHENTICATED": "unauthorized",
    "PERMISSION_DENIED": "forbidden",
    "UNAVAILABLE": "unavailable",
    "DATA_LOSS": "corrupted",
}

# The phrase of Arrow's "Flight returned <phrase> error" -> contract codes.
_PHRASES = {
    "invalid argument": "invalid_argument",
    "not found": "not_found",
    "already exists": "conflict",
    "precondition failed": "precondition_failed",
    "resource exhausted": "payload_too_large",
    "unauthenticated": "unauthorized",
    "unauthorized": "forbidden",
    "permission denied": "forbidden",
    "unavailable": "unavailable",
    "data loss": "corrupted",
}

_DEBUG_RE = re.compile(r"gRPC client debug context: ([A-Z_]+):")
_PHRASE_RE = re.compile(r"Flight returned ([a-z ]+?) error")
_MESSAGE_RE = re.compile(r"with message: (.*?)(?:\. gRPC client debug context:|\. Detail:|$)", re.S)


def error(code: str, message: str) -> FastKError:
    """The exception of the class for `code`."""
    return _CLASSES.get(code, FastKError)(code, message)


def _code_of(text: str, exc: BaseException) -> str:
    m = _DEBUG_RE.search(text)
    if m and m.group(1) in _GRPC_CODES:
        return _GRPC_CODES[m.group(1)]
    if m:
        return "internal"
    m = _PHRASE_RE.search(text)
    if m and m.group(1) in _PHRASES:
        return _PHRASES[m.group(1)]
    # Without a recognisable text, the exception class pyarrow chose from the status.
    names = {cls.__name__ for cls in type(exc).__mro__}
    for name, code in (
        ("FlightUnauthenticatedError", "unauthorized"),
        ("FlightUnauthorizedError", "forbidden"),
        ("FlightUnavailableError", "unavailable"),
        ("ArrowKeyError", "not_found"),
        ("ArrowInvalid", "invalid_argument"),
    ):
        if name in names:
            return code
    return "internal"


def from_flight_error(exc: BaseException) -> FastKError:
    """The `FastKError` for an exception raised by a pyarrow Flight call."""
    text = str(exc)
    code = _code_of(text, exc)
    m = _MESSAGE_RE.search(text)
    message = m.group(1).strip() if m else text
    return error(code, message or text)


_HTTP_STATUS = {
    400: "invalid_argument",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    422: "unprocessable",
    503: "unavailable",
}


def from_http_error(status: int, body: bytes) -> FastKError:
    """The `FastKError` for an HTTP error answer (the contract's JSON error body)."""
    try:
        parsed: Any = json.loads(body)
        err = parsed["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        code = _HTTP_STATUS.get(status, "internal")
        message = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
    return error(code, message)
