"""Times given by the caller -> epoch milliseconds (the wire's unit)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from .errors import InvalidArgument

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MS = _dt.timedelta(milliseconds=1)


def to_ms(value: Any, field: str = "time") -> int:
    """Epoch milliseconds of `value`: an int (already milliseconds), a `datetime`
    (naive means UTC), a `date` (its midnight, UTC), a pandas `Timestamp`, a numpy
    `datetime64`, or an ISO 8601 string (`2024-01-01`, `2024-01-01T00:00:00Z`, with an
    offset or naive = UTC). Sub-millisecond parts are floored."""
    if isinstance(value, bool):
        raise InvalidArgument("invalid_argument", f"{field}: a bool is not a time")
    if isinstance(value, int):
        return value
    kind = type(value)
    module = kind.__module__ or ""
    if module.startswith("pandas") and kind.__name__ == "Timestamp":
        # .value is nanoseconds since the epoch: UTC for an aware Timestamp, the wall
        # clock read as UTC for a naive one.
        return int(value.value) // 1_000_000
    if module == "numpy":
        if kind.__name__ == "datetime64":
            return int(value.astype("datetime64[ms]").astype("int64"))
        if kind.__name__.startswith(("int", "uint")):
            return int(value)
    if isinstance(value, str):
        return _parse_iso(value, field)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        ms: int = (value - _EPOCH) // _MS
        return ms
    if isinstance(value, _dt.date):
        return to_ms(_dt.datetime(value.year, value.month, value.day), field)
    raise InvalidArgument(
        "invalid_argument",
        f"{field}: {value!r} is not a time (give a datetime, a pandas Timestamp, an ISO "
        "string or integer epoch milliseconds)",
    )


def _parse_iso(text: str, field: str) -> int:
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        parsed = _dt.datetime.fromisoformat(s)
    except ValueError:
        try:
            d = _dt.date.fromisoformat(s)
        except ValueError:
            raise InvalidArgument(
                "invalid_argument", f"{field}: {text!r} is not an ISO 8601 time"
            ) from None
        parsed = _dt.datetime(d.year, d.month, d.day)
    return to_ms(parsed, field)
