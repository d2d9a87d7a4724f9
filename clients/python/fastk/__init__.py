"""FastK's Python client: market time series over Arrow Flight into pyarrow, Polars
or pandas, and back.

    import fastk
    client = fastk.connect("grpc://127.0.0.1:8815", http_url="http://127.0.0.1:8080")
    client.register_kline("BTCUSDT", "1m", price_scale=100, volume_scale=1000)
    client.write("kline", "BTCUSDT", df, "1m")              # float prices are scaled
    df = client.read("kline", "BTCUSDT", "1m", start="2024-01-01", to="polars")
    hourly = client.resample("kline", "BTCUSDT", "1m", "1h", to="pandas")
    t = client.sql("SELECT count(*) FROM kline WHERE symbol = $1", ["BTCUSDT"])

Errors are `fastk.FastKError` (or a subclass) with the contract's `.code`.
The guide is docs/python.md.
"""

from __future__ import annotations

from . import local
from .client import KLINE_COLUMNS, Client, To, connect, convert, to_arrow
from .errors import (
    Conflict,
    Corrupted,
    FastKError,
    Forbidden,
    InternalError,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    Unauthorized,
    Unavailable,
)
from ._time import to_ms

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Conflict",
    "Corrupted",
    "FastKError",
    "Forbidden",
    "InternalError",
    "InvalidArgument",
    "KLINE_COLUMNS",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "To",
    "Unauthorized",
    "Unavailable",
    "connect",
    "convert",
    "local",
    "to_arrow",
    "to_ms",
]
