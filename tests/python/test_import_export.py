"""`fastk import` / `fastk export` with files made by pyarrow and Polars.

Each test runs the real binary (`target/debug/fastk`, or $FASTK_BIN) against a fresh
data root in a temp dir, or against the session server through Flight, and reads the
exported files back with Polars. The 1 GB streaming check runs only with
FASTK_TEST_LONG=1.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from fastk_testlib import JAN_1_2024_MS, JAN_31_2024_MS, REPO_ROOT, register_kline

BINARY = Path(os.environ.get("FASTK_BIN", REPO_ROOT / "target" / "debug" / "fastk"))


def fastk(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    p = subprocess.run(
        [str(BINARY), *args], capture_output=True, text=True, env=env, timeout=600
    )
    if check:
        assert p.returncode == 0, f"fastk {' '.join(args)} failed:\n{p.stdout}{p.stderr}"
    return p


def bars(n: int, start_ms: int = JAN_31_2024_MS) -> dict[str, list]:
    """`n` valid 1m bars with two-decimal prices and three-decimal volume."""
    ts, o, h, lo, c, v = [], [], [], [], [], []
    price = 4_200_000
    for i in range(n):
        close = price + (i * 7919 % 1001) - 500
        ts.append(start_ms + i * 60_000)
        o.append(price / 100)
        h.append((max(price, close) + i % 37) / 100)
        lo.append((min(price, close) - i % 41) / 100)
        c.append(close / 100)
        v.append((i % 5000 * 1000 + i % 1000) / 1000)
        price = close
    return {"ts": ts, "open": o, "high": h, "low": lo, "close": c, "volume": v}


def import_kline(root: Path, *files: Path, extra: tuple[str, ...] = ()) -> str:
    p = fastk(
        "import", "kline", "--symbol", "BTCUSDT", "--timeframe", "1m",
        "--price-scale", "100", "--volume-scale", "1000", "--quiet",
        "--root", str(root), *extra, *map(str, files),
    )
    return p.stdout


def export_parquet(root: Path, out: Path, *extra: str) -> pl.DataFrame:
    fastk(
        "export", "kline", "--symbol", "BTCUSDT", "--timeframe", "1m", "--quiet",
        "--root", str(root), "--format", "parquet", "-o", str(out), *extra,
    )
    return pl.read_parquet(out)


def epoch_ms(df: pl.DataFrame, col: str = "ts") -> list[int]:
    return df[col].dt.epoch("ms").to_list()


def test_pyarrow_parquet_round_trips(tmp_path: Path) -> None:
    data = bars(20_000)
    table = pa.table(
        {
            "timestamp": pa.array(data["ts"], pa.timestamp("ms", tz="UTC")),
            **{k: pa.array(data[k], pa.float64()) for k in ("open", "high", "low", "close", "volume")},
        }
    )
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)  # pyarrow's default codec: snappy
    out = import_kline(tmp_path / "data", src)
    assert "rows read 20000, written 20000" in out, out
    assert "2024-01, 2024-02" in out, out

    back = export_parquet(tmp_path / "data", tmp_path / "out.parquet")
    assert back.columns == ["ts", "open", "high", "low", "close", "volume"]
    assert back.schema["ts"] == pl.Datetime("ms", "UTC")
    assert epoch_ms(back) == data["ts"]
    for col in ("open", "high", "low", "close", "volume"):
        assert back[col].to_list() == data[col], col

    raw = export_parquet(tmp_path / "data", tmp_path / "raw.parquet", "--prices", "raw")
    assert raw["close"].dtype == pl.Int64
    assert raw["close"].to_list() == [round(x * 100) for x in data["close"]]


def test_polars_parquet_zstd_round_trips(tmp_path: Path) -> None:
    data = bars(5_000, start_ms=JAN_1_2024_MS)
    df = pl.DataFrame(data).with_columns(
        pl.from_epoch("ts", time_unit="ms").dt.cast_time_unit("us").dt.replace_time_zone("UTC").alias("date")
    ).drop("ts").select("date", "open", "high", "low", "close", "volume")
    assert df.schema["date"] == pl.Datetime("us", "UTC")  # Polars' default unit
    src = tmp_path / "polars.parquet"
    df.write_parquet(src)  # Polars' default codec: zstd
    assert pq.ParquetFile(src).metadata.row_group(0).column(1).compression == "ZSTD"
    import_kline(tmp_path / "data", src)

    back = export_parquet(tmp_path / "data", tmp_path / "out.parquet")
    assert epoch_ms(back) == data["ts"]
    expected = df.rename({"date": "ts"}).with_columns(pl.col("ts").dt.cast_time_unit("ms"))
    assert back.equals(expected), (back.head(), expected.head())


def test_polars_scalar_parquet_and_csv(tmp_path: Path) -> None:
    n = 3_000
    values = [((i * 37) % 1000) / 7 for i in range(n)]
    ts = [JAN_1_2024_MS + i * 60_000 for i in range(n)]
    df = pl.DataFrame({"time": ts, "rsi_14": values}).with_columns(
        pl.from_epoch("time", time_unit="ms").dt.replace_time_zone("UTC")
    )
    src = tmp_path / "rsi.parquet"
    df.write_parquet(src)
    # Polars writes tz-aware datetimes to CSV as 2024-01-01T00:00:00.000000+0000.
    csv = tmp_path / "rsi.csv"
    df.with_columns(pl.col("rsi_14") + 1000).with_columns(
        pl.col("time") + pl.duration(days=10)
    ).write_csv(csv)
    root = tmp_path / "data"
    fastk(
        "import", "scalar", "--symbol", "BTCUSDT", "--timeframe", "1m", "--category",
        "indicator", "--name", "rsi_14", "--value-type", "f64", "-q", "--root", str(root),
        str(src), str(csv),
    )
    out = tmp_path / "out.parquet"
    fastk(
        "export", "scalar", "--symbol", "BTCUSDT", "--timeframe", "1m", "--category",
        "indicator", "--name", "rsi_14", "-q", "--root", str(root), "-o", str(out),
    )
    back = pl.read_parquet(out)
    assert back.columns == ["ts", "value"]
    assert epoch_ms(back) == ts + [t + 10 * 86_400_000 for t in ts]
    assert back["value"].to_list() == values + [v + 1000 for v in values]


def test_import_through_flight_while_the_server_runs(server, unique_name, tmp_path: Path) -> None:
    symbol = unique_name("IMP")
    with requests.Session() as s:
        r = register_kline(s, server.http_url, symbol)
        assert r.status_code == 201, r.text
    data = bars(2_000)
    src = tmp_path / "in.csv"
    pl.DataFrame(data).write_csv(src)

    # The server holds the root: a direct import is refused and points to --flight.
    p = fastk(
        "import", "kline", "--symbol", symbol, "--timeframe", "1m", "-q",
        "--root", str(server.root), str(src), check=False,
    )
    assert p.returncode == 2
    assert "--flight" in p.stderr, p.stderr

    p = fastk(
        "import", "kline", "--symbol", symbol, "--timeframe", "1m", "-q", "--json",
        "--flight", server.flight_addr, str(src),
    )
    assert '"rows_written": 2000' in p.stdout, p.stdout
    with requests.Session() as s:
        r = s.get(f"{server.http_url}/v1/kline/{symbol}/1m/records", params={"limit": 5000}, timeout=30)
        assert r.status_code == 200, r.text
        recs = r.json()["records"]
    assert [x["ts"] for x in recs] == data["ts"]
    assert [x["close"] for x in recs] == [round(c * 100) for c in data["close"]]

    out = tmp_path / "out.csv"
    fastk(
        "export", "kline", "--symbol", symbol, "--timeframe", "1m", "-q",
        "--flight", server.flight_addr, "-o", str(out),
    )
    back = pl.read_csv(out)
    assert back["ts"].to_list() == data["ts"]
    assert back["close"].to_list() == data["close"]


def test_server_registration_and_the_http_fallback(server, unique_name, tmp_path: Path) -> None:
    data = bars(500)
    src = tmp_path / "in.csv"
    pl.DataFrame(data).write_csv(src)
    reg = ("--price-scale", "100", "--volume-scale", "1000")

    # Flight alone cannot register a missing series; the error says what to add.
    sym = unique_name("REG")
    p = fastk(
        "import", "kline", "--symbol", sym, "--timeframe", "1m", *reg, "-q",
        "--flight", server.flight_addr, str(src), check=False,
    )
    assert p.returncode == 2 and "--server" in p.stderr, p.stderr
    # With --server the import registers it over HTTP and writes over Flight.
    fastk(
        "import", "kline", "--symbol", sym, "--timeframe", "1m", *reg, "-q",
        "--flight", server.flight_addr, "--server", server.http_url, str(src),
    )
    with requests.Session() as s:
        info = s.get(f"{server.http_url}/v1/kline/{sym}/1m", timeout=30).json()
    assert (info["price_scale"], info["volume_scale"], info["rows"]) == (100, 1000, 500)

    # Without --flight the rows travel as ONE JSON write request.
    sym2 = unique_name("HTTP")
    out = fastk(
        "import", "kline", "--symbol", sym2, "--timeframe", "1m", *reg, "-q", "--json",
        "--server", server.http_url, str(src),
    ).stdout
    assert '"rows_written": 500' in out, out
    with requests.Session() as s:
        recs = s.get(f"{server.http_url}/v1/kline/{sym2}/1m/records", timeout=30).json()["records"]
    assert [r["open"] for r in recs] == [round(o * 100) for o in data["open"]]

    # A body over the server's limit (2 MiB here) is refused whole, not split.
    big = tmp_path / "big.csv"
    pl.DataFrame(bars(40_000)).write_csv(big)
    p = fastk(
        "import", "kline", "--symbol", sym2, "--timeframe", "1m", "-q",
        "--server", server.http_url, str(big), check=False,
    )
    # (The server may answer 413 or reset the connection mid-body; either way the
    # message points to Flight.)
    assert p.returncode == 2 and "--flight" in p.stderr, p.stderr
    with requests.Session() as s:
        assert s.get(f"{server.http_url}/v1/kline/{sym2}/1m", timeout=30).json()["rows"] == 500


def peak_rss_bytes(*args: str) -> tuple[int, subprocess.CompletedProcess]:
    """Runs fastk in a fresh Python whose only child it is; returns its peak RSS."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stdout + p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(p.returncode)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(BINARY), *args], capture_output=True, text=True, timeout=3600
    )
    assert p.returncode == 0, p.stderr
    return int(p.stdout.strip()) * 1024, p


@pytest.mark.long
def test_a_1gb_csv_streams_with_flat_memory(tmp_path: Path) -> None:
    if os.environ.get("FASTK_TEST_LONG") != "1":
        pytest.skip("the 1 GB import runs only with FASTK_TEST_LONG=1")
    rows = 17_500_000  # about 1 GB of 1m bars
    src = tmp_path / "big.csv"
    i = pl.int_range(0, rows, eager=True)
    price = 42_000 + (i % 1000) / 100
    pl.DataFrame(
        {
            "ts": JAN_1_2024_MS + i * 60_000,
            "open": price,
            "high": price + 1.25,
            "low": price - 1.25,
            "close": price + 0.5,
            "volume": (i % 5000) / 1000,
        }
    ).write_csv(src, float_precision=3)
    size = src.stat().st_size
    assert size > 950_000_000, size
    common = (
        "import", "kline", "--symbol", "BIG", "--timeframe", "1m", "--price-scale", "100",
        "--volume-scale", "1000", "-q", "--root", str(tmp_path / "data"), str(src),
    )
    # Reading and checking holds the rows (48 B each) but never the text: a reader
    # that loaded the file would need its size on top.
    dry_rss, _ = peak_rss_bytes(*common, "--dry-run")
    assert dry_rss < rows * 48 * 1.1 + 128 * 2**20, (dry_rss, size)
    # The write copies the rows once more per month on its way into chunk files.
    rss, p = peak_rss_bytes(*common)
    assert f"written {rows}" in p.stderr, p.stderr
    assert rss < rows * 48 * 2.2 + 256 * 2**20, (rss, size)
    print(f"1 GB import: file {size / 1e6:.0f} MB, peak RSS dry run {dry_rss / 1e6:.0f} MB, "
          f"import {rss / 1e6:.0f} MB")


def test_trades_from_polars_import_with_nanoseconds_and_sides(server, unique_name, tmp_path: Path) -> None:
    """A trades frame as Polars holds it (Datetime[ns, UTC], float prices, `buy`/`sell`
    sides, no seq) goes in through a running server and comes back by DoGet, pyarrow
    and a Polars read of the export, every nanosecond and side intact."""
    import pyarrow.flight as flight

    sym = unique_name("TICK")
    n = 3_000
    base = 1_709_303_400_000_000_000  # 2024-03-01T14:30:00Z
    ts = [base + (i // 3) * 1_001 + 7 for i in range(n)]  # three trades per nanosecond
    frame = pl.DataFrame({
        "timestamp": pl.Series(ts, dtype=pl.Int64).cast(pl.Datetime("ns", "UTC")),
        "price": [100 + (i % 50) / 100 for i in range(n)],
        "qty": [float(i % 7 + 1) for i in range(n)],
        "side": ["buy" if i % 2 else "sell" for i in range(n)],
    })
    src = tmp_path / "trades.parquet"
    frame.write_parquet(src)
    out = fastk(
        "import", "trade", "--symbol", sym, "--price-scale", "100", "--size-scale", "1",
        "--flight", server.flight_addr, "--server", server.http_url, str(src),
    ).stdout
    assert f"written {n}" in out, out
    assert 'side mapped: "sell" -> -1 (seller-initiated) x1500' in out, out
    assert "a timestamp[ns] column, stored as nanoseconds" in out, out

    client = flight.connect(server.flight_uri)
    try:
        cmd = f'{{"kind": "trade", "symbol": "{sym}", "price_format": "float64"}}'
        table = client.do_get(flight.Ticket(cmd.encode())).read_all()
    finally:
        client.close()
    assert table.num_rows == n
    assert table.column("ts").cast(pa.int64()).to_pylist() == ts
    assert table.column("seq").to_pylist() == [i % 3 for i in range(n)]
    assert table.column("side").to_pylist() == [1 if i % 2 else -1 for i in range(n)]
    assert table.column("price").to_pylist() == frame["price"].to_list()

    exported = tmp_path / "back.parquet"
    fastk("export", "trade", "--symbol", sym, "-q", "--flight", server.flight_addr, "-o", str(exported))
    back = pl.read_parquet(exported)
    assert back["ts"].dtype == pl.Datetime("ns", "UTC")
    assert back["ts"].cast(pl.Int64).to_list() == ts
    assert back["size"].to_list() == frame["qty"].to_list()
