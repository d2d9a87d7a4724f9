"""The `compression` workload: FastK's per-column pcodec compression of sealed months.

1. Codecs on the same columns: one symbol's calendar 2024 of 1m bars (the kline
   dataset's first symbol, as the market workloads use; ts, open, high, low, close,
   volume as int64) and as many rows of the scalar dataset (one int64 value column).
   Per codec the bytes per bar (sum over the columns) and the compression and
   decompression speed (MB of raw column bytes per second, best of 3): raw, zstd
   level 3 of the raw bytes, zstd-3 after delta encoding (ts delta of delta, the
   other columns delta), lz4 of the raw bytes, pcodec (`pcodec.standalone`, default
   ChunkConfig).
2. FastK end to end: two stores loaded alike over Flight (bars and scalar): one with
   `storage.compression = "none"` (the uncompressed reference), one with
   `storage.compress_after_s = 0` (background pass pushed out to a day, so nothing is
   compressed before `POST /v1/admin/compact`). Bytes from `/inventory` and from the
   series directory (apparent size, like `du -sb`) before and after compact. Peers on
   the same rows: Parquet zstd written by Polars (default level) and ArcticDB (LMDB
   library size, as the `disk` workload measures it).
3. The year into Polars over Flight: uncompressed (the reference store, and the
   compressed store before compact) vs compressed cold (the first read after compact,
   then the first read after each restart of the server: the month is decompressed
   from disk into the cache) vs compressed warm (repeat reads), interleaved with the
   reference store. Every read checked against the rows read before compaction.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import statistics
import time

import numpy as np
import polars as pl
import pyarrow as pa

from . import checks, dataset, procs, systems
from .workloads import log

WORKLOADS = ("compression",)
KLINE_COLS = ("ts", "open", "high", "low", "close", "volume")
WARM_TARGET = 0.80  # compressed warm throughput / uncompressed


# --------------------------------------------------------------------------- codecs


def _delta(a: np.ndarray, order: int) -> np.ndarray:
    d = a.copy()
    for _ in range(order):
        d[1:] = d[1:] - d[:-1].copy()
    return d


def _undelta(d: np.ndarray, order: int) -> np.ndarray:
    a = d
    for _ in range(order):
        a = np.cumsum(a, dtype=np.int64)
    return a


def codecs() -> dict:
    """name -> (compress(np.int64 array, column name) -> bytes, decompress(bytes, n) -> array)."""
    import lz4.frame
    import pcodec
    import zstandard

    zc = zstandard.ZstdCompressor(level=3)
    zd = zstandard.ZstdDecompressor()
    cfg = pcodec.ChunkConfig()

    def order(col: str) -> int:
        return 2 if col == "ts" else 1

    return {
        "raw (int64)": (lambda a, c: a.tobytes(), lambda b, n, c: np.frombuffer(b, dtype=np.int64)),
        "lz4 (frame, default)": (lambda a, c: lz4.frame.compress(a.tobytes()),
                                 lambda b, n, c: np.frombuffer(lz4.frame.decompress(b), dtype=np.int64)),
        "zstd-3": (lambda a, c: zc.compress(a.tobytes()),
                   lambda b, n, c: np.frombuffer(zd.decompress(b), dtype=np.int64)),
        "delta + zstd-3": (lambda a, c: zc.compress(_delta(a, order(c)).tobytes()),
                           lambda b, n, c: _undelta(np.frombuffer(zd.decompress(b), dtype=np.int64), order(c))),
        "pcodec (default config)": (lambda a, c: pcodec.standalone.simple_compress(a, cfg),
                                    lambda b, n, c: pcodec.standalone.simple_decompress(b)),
    }


def codec_table(cols: dict[str, np.ndarray], reps: int = 3) -> dict:
    n = len(next(iter(cols.values())))
    raw = sum(a.nbytes for a in cols.values())
    out: dict = {}
    for name, (comp, decomp) in codecs().items():
        size, per_col, ct, dt = 0, {}, [], []
        for _ in range(reps):
            t = time.perf_counter()
            blobs = {c: comp(a, c) for c, a in cols.items()}
            ct.append(time.perf_counter() - t)
            t = time.perf_counter()
            back = {c: decomp(b, n, c) for c, b in blobs.items()}
            dt.append(time.perf_counter() - t)
        for c, a in cols.items():
            assert np.array_equal(np.asarray(back[c]), a), f"{name}: {c} does not round-trip"
            per_col[c] = len(blobs[c])
            size += len(blobs[c])
        raw_codec = name.startswith("raw")
        out[name] = {"bytes": size, "bytes_per_row": size / n, "ratio": raw / size, "per_column": per_col,
                     "compress_mb_s": None if raw_codec else raw / min(ct) / 1e6,
                     "decompress_mb_s": None if raw_codec else raw / min(dt) / 1e6}
        log(f"  {name}: {size / n:.2f} B/row ({raw / size:.1f}x)")
    return {"rows": n, "raw_bytes": raw, "columns": list(cols), "codecs": out}


# --------------------------------------------------------------------------- FastK


def apparent(path: pathlib.Path) -> int:
    """Sum of file sizes under `path` (like `du -sb`)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def start_fastk(binary, root, log_path, env: dict) -> procs.FastK:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return procs.FastK(binary, root, log_path, unix_socket=False)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fastk_sizes(fk: systems.FastKFlight) -> dict:
    inv = fk.http.json("GET", "/inventory?partitions=false")
    per = {}
    for s in inv["series"]:
        kind = s.get("kind")
        per[kind] = {"bytes": s.get("bytes"), "raw_bytes": s.get("raw_bytes"), "files": s.get("files")}
    root = fk.server.root
    return {"per_kind": per, "total_bytes": inv.get("total_bytes"), "total_raw_bytes": inv.get("total_raw_bytes"),
            "root_apparent_bytes": apparent(root), "root_du_bytes": systems.du(root),
            "dirs": {p.name: apparent(p) for p in sorted(root.iterdir()) if p.is_dir()},
            "by_kind_suffix": by_suffix(root / "series")}


def by_suffix(path: pathlib.Path) -> dict:
    """Apparent bytes of the files under `path` by series kind (the first directory
    level) and file suffix: which files compression shrank, which it left alone."""
    out: dict = {}
    if not path.is_dir():
        return out
    for f in path.rglob("*"):
        if f.is_file():
            rel = f.relative_to(path).parts
            key = f"{rel[0]} *{f.suffix or f.name}"
            out[key] = out.get(key, 0) + f.stat().st_size
    return dict(sorted(out.items()))


def _checksums(t: pa.Table) -> dict:
    out = {}
    for c in t.column_names:
        a = t.column(c).combine_chunks()
        if pa.types.is_timestamp(a.type):
            a = a.cast(pa.int64())
        v = np.asarray(a.to_numpy(zero_copy_only=False), dtype=np.int64)
        out[c] = [int(len(v)), int(v.sum(dtype=np.int64)), int((v * np.arange(1, len(v) + 1)).sum(dtype=np.int64))]
    return out


def run(results: dict, P: dict, *, binary: pathlib.Path, work: pathlib.Path, logs: pathlib.Path, quick: bool,
        spec: dataset.Spec) -> dict:
    reps = P.get("compression_reps", 5 if quick else 15)
    cold_restarts = P.get("compression_cold_restarts", 3 if quick else 5)
    start, end = spec.year_range
    s0 = dataset.SYMBOLS[0]
    full = dataset.kline_table(spec, 0)
    ts_all = full.column("ts").cast(pa.int64()).to_numpy()
    i0, i1 = int(np.searchsorted(ts_all, start)), int(np.searchsorted(ts_all, end, side="right"))
    year = full.slice(i0, i1 - i0)
    n = year.num_rows
    scalar = dataset.scalar_table(dataclasses.replace(spec, scalar_rows=n))
    ds = dataset.Dataset(spec=spec, symbols=[s0], kline={s0: year}, scalar=scalar)
    try:
        import importlib.metadata as md

        results.setdefault("versions", {}).update(
            {k: md.version(k) for k in ("pcodec", "zstandard", "lz4", "polars", "arcticdb")})
    except Exception:  # noqa: BLE001
        pass
    out: dict = {"symbol": s0, "rows": n, "scalar_rows": n, "reps": reps, "cold_restarts": cold_restarts}

    # 1. codecs
    log(f"compression: codecs on {n:,} bars of {s0}")
    kcols = {c: np.ascontiguousarray(year.column(c).cast(pa.int64()).to_numpy()) for c in KLINE_COLS}
    out["codecs_kline"] = codec_table(kcols)
    log(f"compression: codecs on {n:,} scalar rows")
    out["codecs_scalar"] = codec_table({"ts": np.ascontiguousarray(scalar.column("ts").cast(pa.int64()).to_numpy()),
                                        "value": np.ascontiguousarray(scalar.column("value").to_numpy())})

    # 2. peers
    peers: dict = {}
    pq_dir = work / "parquet"
    pq_dir.mkdir(parents=True, exist_ok=True)
    pl.from_arrow(year).write_parquet(pq_dir / "kline.parquet", compression="zstd")
    pl.from_arrow(scalar).write_parquet(pq_dir / "scalar.parquet", compression="zstd")
    peers["Parquet zstd (Polars)"] = {"kline_bytes": (pq_dir / "kline.parquet").stat().st_size,
                                      "scalar_bytes": (pq_dir / "scalar.parquet").stat().st_size,
                                      "how": "pl.DataFrame.write_parquet(compression='zstd'), file size"}
    try:
        arctic = systems.Arctic(work / "arcticdb")
        arctic.ingest(ds)
        d = arctic.disk()
        peers["ArcticDB"] = {**d, "how": "LMDB library directory, allocated bytes (the disk workload's measure)",
                             "version": arctic.version()}
    except Exception as e:  # noqa: BLE001
        peers["ArcticDB"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    out["peers"] = peers

    # 3. FastK: a reference store (no compression) and the compressed store
    ref_srv = start_fastk(binary, work / "fastk-none", logs / "fastk-compression-none.log",
                          {"FASTK__STORAGE__COMPRESSION": "none"})
    pco_env = {"FASTK__STORAGE__COMPRESS_AFTER_S": "0", "FASTK__STORAGE__COMPRESS_INTERVAL_S": "86400"}
    pco_srv = start_fastk(binary, work / "fastk-pco", logs / "fastk-compression.log", pco_env)
    ref = systems.FastKFlight(ref_srv, "")
    pco = systems.FastKFlight(pco_srv, "")
    ref.label, pco.label = "uncompressed store", "compressed store"
    try:
        for s in (ref, pco):
            s.ingest(ds)
        ticket = {"kind": "kline", "symbol": s0, "timeframe": "1m", "start_ts": start, "end_ts": end}
        sticket = {"kind": "scalar", **systems.SCALAR_KEY}
        before_tbl = pco._get(ticket)
        before_scalar = pco._get(sticket)
        assert before_tbl.num_rows == n, (before_tbl.num_rows, n)
        assert ref._get(ticket).equals(before_tbl), "the two stores answer different rows"
        out["fastk_before"] = fastk_sizes(pco)
        out["fastk_reference"] = fastk_sizes(ref)
        sums_before = _checksums(before_tbl)

        def read(s):
            return s.read_range(s0, start, end)

        want = checks.kline_digest(year, start, end, ("close", "volume"))

        def check(label, answer):
            """Every timed answer, after its clock stopped: rows, sums of close and volume."""
            checks.expect("compression", label, checks.digest(answer, ("close", "volume")), want)

        times: dict = {"uncompressed (reference store)": [], "compressed store, before compact": []}
        for _ in range(2):
            read(ref), read(pco)
        for _ in range(reps):
            for label, s in (("uncompressed (reference store)", ref), ("compressed store, before compact", pco)):
                t = time.perf_counter()
                df = read(s)
                times[label].append(time.perf_counter() - t)
                check(label, df)

        log("compression: POST /v1/admin/compact")
        t = time.perf_counter()
        rep = pco.http.json("POST", "/v1/admin/compact", {"dry_run": False})
        compact_s = time.perf_counter() - t
        actions = rep.get("actions") or []
        kinds: dict = {}
        for a in actions:
            k = (a.get("action") or a.get("kind")) if isinstance(a, dict) else str(a)
            kinds[k] = kinds.get(k, 0) + 1
        out["compact"] = {"seconds": compact_s, "action_kinds": kinds,
                          "report_keys": sorted(rep) if isinstance(rep, dict) else None}
        out["fastk_after"] = fastk_sizes(pco)

        # cold: the first read after compact, then the first read after each restart
        cold = []
        t = time.perf_counter()
        got = pco._get(ticket)
        cold.append(time.perf_counter() - t)
        check("compressed cold (first read after compact)", got)
        assert got.equals(before_tbl), "rows after compact differ from rows before"
        assert pco._get(sticket).equals(before_scalar), "scalar rows after compact differ"
        assert _checksums(got) == sums_before
        for _ in range(cold_restarts):
            pco.client.close()
            pco_srv.stop()
            pco_srv = start_fastk(binary, work / "fastk-pco", logs / "fastk-compression.log", pco_env)
            pco = systems.FastKFlight(pco_srv, "")
            pco.label = "compressed store"
            t = time.perf_counter()
            got = pco._get(ticket)
            cold.append(time.perf_counter() - t)
            check("compressed cold (first read after a restart)", got)
            assert got.equals(before_tbl), "rows after restart differ from rows before"
        times["compressed cold (first read: decompress)"] = cold
        out["fastk_after_restart"] = fastk_sizes(pco)

        warm_label = "compressed warm (repeat reads)"
        ref_label2 = "uncompressed (reference store, interleaved with warm)"
        times[warm_label], times[ref_label2] = [], []
        read(pco), read(ref)
        for _ in range(reps):
            for label, s in ((ref_label2, ref), (warm_label, pco)):
                t = time.perf_counter()
                df = read(s)
                times[label].append(time.perf_counter() - t)
                check(label, df)
        got = pco._get(ticket)
        assert got.equals(before_tbl), "warm rows differ"
        out["checked"] = checks.COUNTS.get("compression", 0)
        out["checked_how"] = {
            "timed": "every timed read (warm, cold, both stores): row count and the sums of close and volume "
                     "against the dataset, after its clock stopped",
            "rows": f"the year read back after compact (cold, after {cold_restarts} restarts and warm) equals the "
                    f"Arrow table read before compact ({n:,} rows, {before_tbl.num_columns} columns; per-column "
                    f"count/sum/weighted-sum checksums equal too); the scalar series equals too",
            "stores": "the uncompressed reference store and the compressed store answered the same table before "
                      "compact",
            "codecs": "every codec round-trips every column exactly (numpy array_equal)",
        }
        bytes_ = before_tbl.nbytes
        reads = {}
        for label, ts in times.items():
            med = statistics.median(ts)
            reads[label] = {"reps": len(ts), "median_ms": med * 1e3, "best_ms": min(ts) * 1e3,
                            "rows_per_s": n / med, "gb_s": bytes_ / med / 1e9}
        base = reads[ref_label2]["rows_per_s"]
        for v in reads.values():
            v["vs_uncompressed"] = v["rows_per_s"] / base
        out["reads"] = reads
        out["arrow_bytes"] = bytes_
    finally:
        for s in (ref, pco):
            try:
                s.client.close()
            except Exception:  # noqa: BLE001
                pass
        ref_srv.stop()
        pco_srv.stop()
    return out
