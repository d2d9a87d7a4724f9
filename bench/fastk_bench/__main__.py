"""`python -m fastk_bench [--quick] [--only resample,asof,coverage,colocated,tls]`: the
comparison benchmark driver.

Normally started by `bash scripts/bench.sh`, which builds FastK, prepares the venv and
PostgreSQL, and runs the Rust harnesses first. Writes `results.json` to `--out`, PNG
charts to `--charts`, and, with `--docs`, fills the result blocks of
docs/benchmarks.md.

Without `--only`, the run holds every group the page reports: the read and SQL
workloads, the market queries, colocated, then (each on stores of its own, after the
shared stores stop) compression, shards, tls and the feed workloads. A group that
fails is recorded with its error under its key. The checksum of every timed answer
is compared with the expected one (checks.py): a mismatch stops the run, is recorded
as `answer_mismatch`, and the exit status is 1. DuckDB runs twice, over Parquet
files and as a database (`DuckDB (table)`, primary keys), and chDB (in-process
ClickHouse) joins the reads and market queries.

`--only` runs just the named workloads: the market queries (`market` names all three),
the feed workloads (`feeds` names all four: `feed`, `feed_many`, `many_series` and
`series_100k`, see feeds.py; each starts FastK stores of its own and runs its peers,
SQLite and DuckDB, in process), `shards` (1, 2 and 3 FastK nodes sharing a shard map
on loopback, see shards.py), `ingest` (workload 1, bulk ingest, against ArcticDB, DuckDB and
Polars, the median of `ingest_loads` loads each) and `colocated` (one year of 1m bars into Polars over FastK's Flight Unix socket,
over loopback TCP Flight and from ArcticDB in process), after loading only what they
need (one symbol of the kline dataset into FastK, ArcticDB, DuckDB and Polars for the
market queries, into FastK and ArcticDB only for `colocated`; PostgreSQL only for
`asof`), and writes `results-only.json`, `tables-only.md` and their charts to `--out`;
it never touches `--docs`. `tls` (tls.py) reads workload 2's year into Polars over
plain Flight and over Flight with TLS from one FastK store (the server started plain,
then with `[tls]`, round after round; certificates made with `openssl` in the work
directory) and reports TLS / plain. For example:

    PYTHONPATH=bench bench/.venv/bin/python -m fastk_bench --quick --only market --out /tmp/fastk-market
    PYTHONPATH=bench bench/.venv/bin/python -m fastk_bench --only colocated --out /tmp/fastk-colocated
    PYTHONPATH=bench bench/.venv/bin/python -m fastk_bench --quick --only feed,feed_many --out /tmp/fastk-feeds
    PYTHONPATH=bench bench/.venv/bin/python -m fastk_bench --only tls --out /tmp/fastk-tls
    PYTHONPATH=bench bench/.venv/bin/python -m fastk_bench --only ticks --out /tmp/fastk-ticks

These need the release binary (`cargo build --release`, as scripts/bench.sh does first)
and the venv of bench/requirements.txt.

`FASTK_BENCH_FEED_MANY_GAP_MS=20` makes every system idle that long before each timed
write of `feed_many`, off the clock: a feed handler writes once a minute, to caches
gone cold meanwhile (0, the default, writes back to back).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from . import (checks, compression, dataset, derived, factors, feeds, market, procs, report, shards, snapshots, systems,
               ticks, timing, tls, workloads)
from .workloads import log

REPO = pathlib.Path(__file__).resolve().parent.parent.parent


def source_commit() -> str:
    """The commit the binary was built from, `-dirty` when a tracked file outside the
    benchmark's own outputs (bench/results/, the charts and the page) differs from it:
    scripts/bench.sh writes the Rust harnesses' results before this driver starts, and
    those are not a change to what is measured."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    changed = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", ".",
                              ":(exclude)bench/results", ":(exclude)docs/benchmarks", ":(exclude)docs/benchmarks.md"],
                             capture_output=True, text=True).stdout.strip()
    return f"{head}-dirty" if changed else (head or "unknown")


def machine() -> dict:
    cpu = "?"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) * 1024
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem / 2**30, 1),
            "kernel": platform.release(), "os": _os_name(), "python": platform.python_version(),
            "loadavg_start": os.getloadavg()}


def _os_name() -> str:
    try:
        for line in pathlib.Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def rust_results(rust_dir: pathlib.Path | None, quick: bool, reps: int) -> dict:
    """The existing Rust harnesses' output (run by scripts/bench.sh), plus their DuckDB peer."""
    out: dict = {"quick": quick}
    if rust_dir is None:
        return out
    st = rust_dir / "rust_storage.txt"
    if st.exists():
        keep = ("ingest", "range", "memcpy", "ratio", "latest", "fastk storage")
        out["storage_lines"] = [ln.rstrip() for ln in st.read_text().splitlines()
                                if any(k in ln for k in keep) and "Running" not in ln]
    pj = rust_dir / "predicate.json"
    raw = REPO / "target/bench-data/scalar.bin"
    if pj.exists():
        pred = json.loads(pj.read_text())
        out["predicate"] = pred
        if raw.exists():
            try:
                duckdb_peer(pred, raw, reps)
            except Exception as e:  # noqa: BLE001
                out["predicate_duckdb_error"] = f"{type(e).__name__}: {e}"
    for name in ("rust_flight.json",):
        if (rust_dir / name).exists():
            out_key = name.removesuffix(".json")
            out[out_key] = json.loads((rust_dir / name).read_text())
    return out


def duckdb_peer(pred: dict, raw: pathlib.Path, reps: int) -> None:
    """DuckDB over Parquet on the predicate harness's own data and predicates.

    The same measurement as scripts/bench_predicate_duckdb.py, which calls
    `execute(...).arrow()` and so no longer runs on DuckDB 2 (see docs/benchmarks.md).
    """
    import duckdb
    import pyarrow.parquet as pq

    data = np.fromfile(raw, dtype="<i8").reshape(-1, 2)
    table = pa.table({"ts": pa.array(data[:, 0]).cast(pa.timestamp("ms", tz="UTC")), "value": pa.array(data[:, 1])})
    path = raw.with_suffix(".parquet")
    pq.write_table(table, path)
    con = duckdb.connect()
    for r in pred["results"]:
        q = f"SELECT ts FROM read_parquet('{path}') WHERE value BETWEEN {r['min']} AND {r['max']}"
        n = con.sql(q).to_arrow_table().num_rows
        assert n == r["matches"], f"DuckDB found {n} rows, FastK {r['matches']}"
        times, _ = timing.repeat(lambda q=q: con.sql(q).to_arrow_table(), reps)
        r["duckdb_ms"] = statistics.median(times) * 1e3


def rust_client(binary: pathlib.Path, fastk_addr: str, ceiling_addr: str, ds: dataset.Dataset, reps: int) -> dict:
    """The Rust arrow-flight client (benches/flight_ceiling.rs) against FastK and the Rust ceiling."""
    start, end = ds.spec.year_range
    tickets = {
        "year": {"kind": "kline", "symbol": ds.symbols[0], "timeframe": "1m", "start_ts": start, "end_ts": end},
        "scalar": {"kind": "scalar", **systems.SCALAR_KEY},
    }
    specs = [f"{k}={json.dumps(t)}" for k, t in tickets.items()]
    # Alternate rounds (FastK, ceiling, FastK, ceiling, ...) so load on the shared
    # machine falls on both; per ticket, the median of the round medians and the best time.
    rounds: dict = {"fastk": [], "ceiling": []}
    for _ in range(3):
        for who, addr in (("fastk", fastk_addr), ("ceiling", ceiling_addr)):
            p = subprocess.run([str(binary), "client", addr, str(reps), *specs], capture_output=True, text=True,
                               timeout=600)
            if p.returncode != 0:
                return {"error": p.stderr[-500:]}
            rounds[who].append(json.loads(p.stdout.strip().splitlines()[-1]))
    # Every round's answer: the rows the client received, against the dataset's.
    want_rows = {"year": (end - start) // 60_000 + 1, "scalar": ds.scalar.num_rows}
    for who, rs in rounds.items():
        for r in rs:
            for k in tickets:
                checks.expect("rust_flight", f"{who} {k}", r[k]["rows"], want_rows[k])
    got = {who: {k: {"rows": rs[0][k]["rows"], "bytes": rs[0][k]["bytes"],
                     "median_s": statistics.median(r[k]["median_s"] for r in rs),
                     "best_s": min(r[k]["best_s"] for r in rs)} for k in tickets}
           for who, rs in rounds.items()}
    labels = {"year": "1 year of 1m bars", "scalar": f"whole scalar series ({ds.scalar.num_rows:,} rows)"}
    out = {}
    for k in tickets:
        f, c = got["fastk"][k], got["ceiling"][k]
        assert f["rows"] == c["rows"], (f, c)
        out[k] = {"label": labels[k], "rows": f["rows"], "bytes": f["bytes"], "fastk_s": f["median_s"],
                  "ceiling_s": c["median_s"], "fastk_best_s": f["best_s"], "ceiling_best_s": c["best_s"]}
        log(f"  {k}: FastK {f['median_s'] * 1e3:.1f} ms, ceiling {c['median_s'] * 1e3:.1f} ms")
    return out


def fastk_sql(fk: procs.FastK, fastk_version: str, results: dict) -> list:
    """FastK's SQL clients (ADBC, pyarrow.flight, HTTP Arrow stream); a client that
    cannot connect is recorded as skipped."""
    out = []
    for mode, label in systems.FastKSql.LABELS.items():
        try:
            out.append(systems.FastKSql(fk, fastk_version, mode))
        except Exception as e:  # noqa: BLE001
            results["skipped"][label] = f"could not connect: {type(e).__name__}: {e}"
    return out


def market_params(q: bool) -> dict:
    """The market-query workloads' parameters (market.py), recorded in results.json."""
    return dict(
        market_resample_reps=3 if q else 15,
        asof_series=200 if q else 2_000,
        asof_days=2 if q else 3,
        asof_reps=3 if q else 15,
        asof_budget_s=10 if q else 60,
        coverage_years=2 if q else 10,
        coverage_holes=50 if q else 500,
        # Every system the same repetitions, warm and cold (a cold call follows a FastK
        # restart or a peer's reopen).
        coverage_reps=5 if q else 20,
        coverage_cold_reps=2 if q else 5,
    )


def database_peers(work: pathlib.Path, skip: set[str], results: dict) -> list:
    """DuckDB as a database (native tables with primary keys) and chDB (in-process
    ClickHouse, MergeTree), unless skipped; one that cannot start is recorded as skipped."""
    out = []
    for cls, name in ((systems.DuckDBTable, "duckdb-table"), (systems.ChDB, "chdb")):
        if cls.label in skip:
            continue
        try:
            out.append(cls(work / name))
        except Exception as e:  # noqa: BLE001
            results["skipped"][cls.label] = f"could not start: {type(e).__name__}: {e}"
    return out


def fastk_maker(binary: pathlib.Path, fastk_version: str, root: pathlib.Path, log_path: pathlib.Path):
    """A factory for a market workload's own FastK store (as-of, coverage): (Flight,
    HTTP, stop). Called again after a stop, it restarts a server on the same root."""
    def make():
        server = procs.FastK(binary, root, log_path)
        try:
            return systems.FastKFlight(server, fastk_version), systems.FastKHttp(server, fastk_version), server.stop
        except Exception:
            server.stop()
            raise
    return make


def fresh_makers(args, skip: set[str], fastk_version: str, root: pathlib.Path, fastk_log: pathlib.Path) -> dict:
    """Workload 1's contenders, label -> a callable that makes one on a new empty store
    under `root` and returns it with the function that stops it: FastK over Flight (one
    stream and three), and ArcticDB, DuckDB and Polars unless skipped. Each FastK server
    logs to `fastk_log` with its store's name added (`fastk-ingest-fastk-3.log`)."""
    n_fresh = itertools.count()

    def scratch(name: str) -> pathlib.Path:
        return root / f"{name}-{next(n_fresh)}"

    def fastk_fresh(cls):
        def make():
            # A log of its own per server: the first servers keep running (and
            # logging) while the later loads start theirs, and `procs.FastK` finds a
            # server's addresses in its log.
            root_dir = scratch("fastk")
            log_path = fastk_log.with_name(f"{fastk_log.stem}-{root_dir.name}{fastk_log.suffix}")
            server = procs.FastK(args.fastk_bin, root_dir, log_path)
            return cls(server, fastk_version), server.stop
        return make

    def peer_fresh(cls, name):
        def make():
            return cls(scratch(name)), lambda: None
        return make

    fresh = {systems.FastKFlight.label: fastk_fresh(systems.FastKFlight),
             systems.FastKFlightConcurrent.label: fastk_fresh(systems.FastKFlightConcurrent)}
    for cls, name in ((systems.Arctic, "arcticdb"), (systems.DuckDB, "duckdb"), (systems.Polars, "polars")):
        if cls.label not in skip:
            fresh[cls.label] = peer_fresh(cls, name)
    return fresh


def ingest_only(args, P: dict, results: dict, skip: set[str], fastk_version: str, work: pathlib.Path,
                logs: pathlib.Path) -> dict:
    """`--only ingest`: workload 1 (bulk ingest) alone, the way the full run measures it:
    the full dataset, FastK over Flight (one stream, and three for the bars) against
    ArcticDB, DuckDB and Polars, each loaded `ingest_loads` times into new empty stores
    (the median is reported), every load after an untimed `sync`. The stores are removed
    only after the last load (removing files right before a load taxes the next file
    creations on this volume: see the full run)."""
    spec = dataset.QUICK if args.quick else dataset.FULL
    log(f"ingest: generating dataset ({'quick' if args.quick else 'full'})")
    ds = dataset.generate(spec)
    results["dataset"] = {"symbols": ds.symbols, "kline_rows": ds.kline_rows,
                          "bars_per_symbol": spec.bars_per_symbol, "scalar_rows": ds.scalar.num_rows,
                          "seed": dataset.SEED}
    fresh = fresh_makers(args, skip, fastk_version, work, logs / "fastk-ingest.log")
    first = []
    stops = []
    for label, make in fresh.items():
        system, stop = make()
        first.append(system)
        stops.append(stop)
        results["versions"][label] = system.version()
    try:
        return workloads.ingest(first, ds, fresh, repeats=P["ingest_loads"])
    finally:
        for stop in stops:
            stop()
        shutil.rmtree(work, ignore_errors=True)


class _Done(Exception):
    """Ends run_only's work early (only feed workloads selected) through its finally."""


ONLY_WORKLOADS = (*market.WORKLOADS, "colocated", "ingest", *feeds.WORKLOADS, *compression.WORKLOADS,
                  *shards.WORKLOADS, *tls.WORKLOADS, *snapshots.WORKLOADS, *derived.WORKLOADS, *factors.WORKLOADS,
                  *ticks.WORKLOADS)


def parse_only(text: str) -> set[str]:
    which = set()
    for w in (x.strip() for x in text.split(",")):
        if not w:
            continue
        if w == "market":
            which.update(market.WORKLOADS)
        elif w == "feeds":
            which.update(feeds.WORKLOADS)
        elif w in ONLY_WORKLOADS:
            which.add(w)
        else:
            raise SystemExit(f"--only: unknown workload {w!r} (known: market, feeds, {', '.join(ONLY_WORKLOADS)})")
    return which


def run_only(args, P: dict, which: set[str], skip: set[str]) -> int:
    """`--only`: the selected market, colocated and feed workloads, with only the loads they need."""
    q = args.quick
    spec = dataset.QUICK if q else dataset.FULL
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="fastk-bench-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)  # the postgres user must reach its data directory inside
    logs = args.out
    t_run = time.time()
    results: dict = {"mode": ("quick" if q else "full") + f", only {','.join(sorted(which))}",
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "machine": machine(), "params": P, "skipped": {}}
    fastk_version = subprocess.run([str(args.fastk_bin), "--version"], capture_output=True,
                                   text=True).stdout.strip() if args.fastk_bin.exists() else "?"
    versions: dict = {"fastk": fastk_version, "pyarrow": pa.__version__}
    results["versions"] = versions
    fastk_flight = fastk_http = arctic = duck = polars = pg = fk = None
    extra: list = []
    market_which = which & set(market.WORKLOADS)
    feeds_which = which & set(feeds.WORKLOADS)
    mismatch = None
    try:
        if feeds_which:
            versions.update(feeds.versions())
        if "compression" in which:
            # Its own stores (FastK with and without compression, Parquet, ArcticDB)
            # and its own copy of the first symbol's 2024 bars (compression.py).
            results["compression"] = market.guarded("compression", lambda: compression.run(
                results, P, binary=args.fastk_bin, work=work / "compression", logs=logs, quick=q, spec=spec))
        if "shards" in which:
            results["shards"] = market.guarded("shards", lambda: shards.run(
                results, P, binary=args.fastk_bin, work=work / "shards", logs=logs))
        if "tls" in which:
            # One store of its own, served plain and with TLS in turn (tls.py).
            results["tls"] = market.guarded("tls", lambda: tls.run(
                results, P, binary=args.fastk_bin, work=work / "tls", logs=logs, spec=spec,
                ceiling_bin=args.ceiling_bin))
        if "snapshots" in which:
            # Stores of its own: FastK and ArcticDB (snapshots.py).
            results["snapshots"] = market.guarded("snapshots", lambda: snapshots.run(
                results, P, binary=args.fastk_bin, work=work / "snapshots", logs=logs))
        if "derived" in which:
            # Stores of its own: FastK and DuckDB in memory (derived.py).
            results["derived"] = market.guarded("derived", lambda: derived.run(
                results, P, binary=args.fastk_bin, work=work / "derived", logs=logs))
        if "factors_100k" in which:
            # Stores of its own: FastK, DuckDB and SQLite files (factors.py).
            results["factors_100k"] = market.guarded("factors_100k", lambda: factors.run(
                results, P, binary=args.fastk_bin, work=work / "factors", logs=logs))
        if "ticks" in which:
            # Stores of its own: FastK, ArcticDB, DuckDB and chDB (ticks.py).
            results["ticks"] = market.guarded("ticks", lambda: ticks.run(
                results, P, binary=args.fastk_bin, work=work / "ticks", logs=logs))
        if "ingest" in which:
            results["ingest"] = market.guarded("ingest", lambda: ingest_only(
                args, P, results, skip, fastk_version, work / "ingest", logs))
        if not (market_which or "colocated" in which):
            # Only feed workloads: no market dataset, no shared FastK store (each feed
            # workload starts stores of its own).
            if feeds_which:
                feeds.run(feeds_which, results, P, binary=args.fastk_bin, work=work / "feeds", logs=logs, quick=q)
            raise _Done
        log(f"generating dataset ({'quick' if q else 'full'})")
        ds = dataset.generate(spec)
        s0 = ds.symbols[0]
        results["dataset"] = {"symbols": ds.symbols, "kline_rows": ds.kline_rows,
                              "bars_per_symbol": spec.bars_per_symbol, "scalar_rows": ds.scalar.num_rows,
                              "seed": dataset.SEED}
        # What the resample needs: one symbol's bars (and a token scalar series, which
        # the adapters' ingest writes too) in FastK, ArcticDB, DuckDB and Polars; the
        # colocated read, the same in FastK and ArcticDB.
        one = dataset.Dataset(spec=spec, symbols=[s0], kline={s0: ds.kline[s0]}, scalar=ds.scalar.slice(0, 1440))
        try:
            fk = procs.FastK(args.fastk_bin, work / "fastk-flight", logs / "fastk.log")
            fastk_flight = systems.FastKFlight(fk, fastk_version)
            fastk_http = systems.FastKHttp(fk, fastk_version)
        except Exception as e:  # noqa: BLE001
            results["skipped"]["FastK"] = f"could not start: {type(e).__name__}: {e}"
            log(f"FastK: could not start ({e}); its measurements will be recorded as failed")
        if "ArcticDB" not in skip and (market_which or "colocated" in which):
            arctic = systems.Arctic(work / "arcticdb")
        if "DuckDB" not in skip and market_which:
            duck = systems.DuckDB(work / "duckdb")
        if "Polars" not in skip and market_which:
            polars = systems.Polars(work / "polars")
        if market_which:
            extra = database_peers(work, skip, results)
        if "asof" in which and "PostgreSQL" not in skip:
            bindir = procs.find_pg_bindir()
            if bindir is None:
                results["skipped"]["PostgreSQL"] = "no initdb under /usr/lib/postgresql (apt install postgresql-15)"
            else:
                try:
                    pg = systems.Postgres(procs.Postgres(bindir, work / "pg" / "data", logs / "postgres.log"))
                except Exception as e:  # noqa: BLE001
                    results["skipped"]["PostgreSQL"] = f"could not start: {e}"
        for sy in (fastk_flight, arctic, duck, *extra, polars):
            if sy is None:
                continue
            if sy is not fastk_flight:
                versions[sy.label] = sy.version()
            if "resample" in which or ("colocated" in which and sy in (fastk_flight, arctic)):
                log(f"loading {s0} into {sy.label}")
                r: dict = {}
                workloads.attempt(r, sy.label, lambda sy=sy: sy.ingest(one))
                if "error" in r.get(sy.label, {}):
                    results["skipped"][f"{sy.label} load"] = r[sy.label]["error"]
        if pg is not None:
            versions[pg.label] = pg.version()
        if "colocated" in which:
            results["colocated"] = market.guarded("colocated", lambda: workloads.colocated(
                fk, fastk_flight, arctic, ds, P["colocated_reps"], fastk_version))
        if market_which:
            have = args.fastk_bin.exists()
            market.run(market_which, results, P, ds=ds, fastk_flight=fastk_flight, fastk_http=fastk_http,
                       make_fastk=fastk_maker(args.fastk_bin, fastk_version, work / "fastk-xs",
                                              logs / "fastk-xs.log") if have else None,
                       make_fastk_coverage=fastk_maker(args.fastk_bin, fastk_version, work / "fastk-coverage",
                                                       logs / "fastk-coverage.log") if have else None,
                       arctic=arctic, duck=duck, polars=polars, pg=pg, extra=extra)
        for sy in extra:
            sy.close()
        if pg is not None:
            pg.close()
        if feeds_which:
            feeds.run(feeds_which, results, P, binary=args.fastk_bin, work=work / "feeds", logs=logs, quick=q)
    except _Done:
        pass
    except checks.Mismatch as e:
        mismatch = results["answer_mismatch"] = str(e)
        log(f"ANSWER MISMATCH: {mismatch}")
    finally:
        procs.stop_all()
        t_rm = time.time()
        shutil.rmtree(work, ignore_errors=True)
        log(f"removed the work directory in {time.time() - t_rm:.0f} s")
    results["checked"] = dict(checks.COUNTS)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["wall_s"] = time.time() - t_run
    (args.out / "results-only.json").write_text(json.dumps(results, indent=1, default=str))
    names = [f"market_{w}" for w in market.WORKLOADS if w in which] + (["colocated"] if "colocated" in which else [])
    names += ["ingest"] if "ingest" in which else []
    names += [w for w in feeds.WORKLOADS if w in which]
    names += [w for w in compression.WORKLOADS if w in which]
    names += [w for w in shards.WORKLOADS if w in which]
    names += [w for w in tls.WORKLOADS if w in which]
    names += [w for w in snapshots.WORKLOADS if w in which]
    names += [w for w in derived.WORKLOADS if w in which]
    names += [w for w in factors.WORKLOADS if w in which]
    names += [w for w in ticks.WORKLOADS if w in which]
    if feeds_which:
        names += ["versions"]
    (args.out / "tables-only.md").write_text(report.all_tables(results, names))
    for p in report.market_charts(results, args.charts or args.out) + report.colocated_charts(
            results, args.charts or args.out) + report.feeds_charts(results, args.charts or args.out):
        log(f"chart: {p}")
    log(f"results: {args.out / 'results-only.json'}, tables: {args.out / 'tables-only.md'}")
    log(f"done in {results['wall_s']:.0f} s")
    if mismatch:
        log(f"FAILED: a timed answer was wrong: {mismatch}")
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(prog="fastk_bench")
    ap.add_argument("--quick", action="store_true", help="small data, few repetitions (about 2 minutes)")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="directory for results.json and logs")
    ap.add_argument("--charts", type=pathlib.Path, help="directory for the PNG charts (default: --out)")
    ap.add_argument("--docs", type=pathlib.Path, help="fill the result blocks of this Markdown file")
    ap.add_argument("--fastk-bin", type=pathlib.Path, default=REPO / "target/release/fastk")
    ap.add_argument("--ceiling-bin", type=pathlib.Path,
                    help="the benches/flight_ceiling.rs executable (Rust in-memory server and client)")
    ap.add_argument("--work", type=pathlib.Path, help="scratch directory for the systems' data")
    ap.add_argument("--rust-results", type=pathlib.Path, help="where scripts/bench.sh left the Rust harness output")
    ap.add_argument("--skip", default="", help="comma-separated labels to leave out (e.g. ROAPI,PostgreSQL)")
    ap.add_argument("--only", default="",
                    help="run only these workloads: resample, asof, coverage (or market for all three), colocated, ingest, "
                         "feed, feed_many, many_series (or feeds for all three), compression, shards, tls, snapshots, derived, "
                         "factors_100k, ticks (loads only what "
                         "they need; writes results-only.json and tables-only.md, not --docs)")
    args = ap.parse_args()
    only = parse_only(args.only)
    q = args.quick
    spec = dataset.QUICK if q else dataset.FULL
    P = dict(  # noqa: N806 - the run's parameters, recorded in results.json
        year_reps=3 if q else 25,
        colocated_reps=3 if q else 25,
        ingest_loads=3,  # median of this many loads for the contenders (workloads.ingest)
        day_ranges=300 if q else 10_000,
        day_budget_s=3 if q else 30,
        latest_n=300 if q else 5_000,
        latest_budget_s=2 if q else 10,
        predicate_reps=3 if q else 5,
        selectivities=[0.01, 1.0, 10.0],
        flight_reps=2 if q else 5,
        wrk_s=2 if q else 10,
        sql_year_reps=3 if q else 25,
        sql_resample_reps=3 if q else 10,
        sql_predicate_reps=5 if q else 15,
        **market_params(q),
        **feeds.params(q),
        **shards.params(q),
        **tls.params(q),
        **snapshots.params(q),
        **derived.params(q),
        **factors.params(q),
        **ticks.params(q),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    charts_dir = args.charts or args.out
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if only:
        return run_only(args, P, only, skip)
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="fastk-bench-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)  # the postgres user must reach its data directory inside
    logs = args.out
    t_run = time.time()
    results: dict = {"mode": "quick" if q else "full", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "machine": machine(), "params": P, "skipped": {}}
    mismatch = None
    fastk_version = subprocess.run([str(args.fastk_bin), "--version"], capture_output=True, text=True).stdout.strip()
    commit = source_commit()
    import matplotlib
    import polars as pl

    wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True) if shutil.which("wrk") else None
    versions = {"fastk": f"{fastk_version} ({commit})", "pyarrow": pa.__version__, "polars (client)": pl.__version__,
                "numpy": np.__version__, "matplotlib": matplotlib.__version__,
                "wrk": (wrk_v.stdout + wrk_v.stderr).split("Copyright")[0].strip() if wrk_v else "not installed"}

    try:
        log(f"generating dataset ({'quick' if q else 'full'})")
        gen_s, ds = timing.timed(lambda: dataset.generate(spec))
        results["dataset"] = {"symbols": ds.symbols, "kline_rows": ds.kline_rows,
                              "bars_per_symbol": spec.bars_per_symbol, "scalar_rows": ds.scalar.num_rows,
                              "kline_range_ms": [spec.start_ms, spec.end_ms], "year_range_ms": list(spec.year_range),
                              "seed": dataset.SEED, "generate_s": gen_s}
        log(f"  {ds.kline_rows:,} bars + {ds.scalar.num_rows:,} scalar rows in {gen_s:.1f} s")
        results["memcpy"] = workloads.memcpy(128 if q else 512)
        log(f"memcpy: {results['memcpy']['gb_s']:.2f} GB/s")

        # --- FastK: the Flight-loaded store serves every read workload; the HTTP-loaded
        # store exists only to time JSON ingest, and is stopped right after.
        fk = procs.FastK(args.fastk_bin, work / "fastk-flight", logs / "fastk.log")
        fastk_flight = systems.FastKFlight(fk, fastk_version)
        fastk_http_reads = systems.FastKHttp(fk, fastk_version)
        ingest_systems: list[systems.System] = [fastk_flight]
        fk2 = procs.FastK(args.fastk_bin, work / "fastk-http", logs / "fastk-http.log")
        ingest_systems.append(systems.FastKHttp(fk2, fastk_version))
        # A third, fresh store times the concurrent bulk load (kline only), then stops.
        fk3 = procs.FastK(args.fastk_bin, work / "fastk-concurrent", logs / "fastk-concurrent.log")
        ingest_systems.append(systems.FastKFlightConcurrent(fk3, fastk_version))

        peers: list[systems.System] = []
        if "ArcticDB" not in skip:
            peers.append(systems.Arctic(work / "arcticdb"))
        duck = systems.DuckDB(work / "duckdb") if "DuckDB" not in skip else None
        polars = systems.Polars(work / "polars")
        extra = database_peers(work, skip, results)  # DuckDB (table), chDB
        duck_table = next((p for p in extra if isinstance(p, systems.DuckDBTable)), None)
        peers += [s for s in (duck, duck_table, polars) if s]
        peers += [p for p in extra if p is not duck_table]
        pg = None
        if "PostgreSQL" not in skip:
            bindir = procs.find_pg_bindir()
            if bindir is None:
                results["skipped"]["PostgreSQL"] = "no initdb under /usr/lib/postgresql (apt install postgresql-15)"
            else:
                try:
                    pg = systems.Postgres(procs.Postgres(bindir, work / "pg" / "data", logs / "postgres.log"))
                    peers.append(pg)
                except Exception as e:  # noqa: BLE001
                    results["skipped"]["PostgreSQL"] = f"could not start: {e}"
        ingest_systems += peers
        for s in ingest_systems:
            try:
                versions[s.label] = s.version()
            except Exception as e:  # noqa: BLE001
                versions[s.label] = f"? ({e})"
        # More loads of the contenders, each into a new empty store (all removed after the last).
        fresh = fresh_makers(args, skip, fastk_version, work / "ingest-repeats", logs / "fastk-repeats.log")
        results["ingest"] = workloads.ingest(ingest_systems, ds, fresh, repeats=P["ingest_loads"])
        # The extra stores go only now: deleting one right before the next load would make
        # that load pay for it (ext4 without a journal, as here, skips inodes deleted in
        # the last ~35 s one by one when creating files, which taxes the system that
        # creates the most files) - a cost of the method, not of any system.
        shutil.rmtree(work / "ingest-repeats", ignore_errors=True)
        results["disk_fastk_http"] = workloads.disk([ingest_systems[1]], ds)
        fk2.stop()
        fk3.stop()

        # --- The read-only systems: the RAM Flight ceiling and ROAPI over Polars' Parquet.
        ram = work / "ram"
        (ram / "kline").mkdir(parents=True)
        # Batches of one 31-day month of 1m bars, the largest batch FastK sends here.
        for s in ds.symbols:
            feather.write_feather(ds.kline[s], ram / "kline" / f"{s}.arrow", compression="uncompressed",
                                  chunksize=44_640)
        feather.write_feather(ds.scalar, ram / "scalar.arrow", compression="uncompressed", chunksize=44_640)
        ceilings: list[systems.System] = [systems.FlightCeiling(ram, logs / "ceiling-pyarrow.log", python=sys.executable)]
        if args.ceiling_bin:
            try:
                ceilings.append(systems.FlightCeiling(ram, logs / "ceiling-rust.log", rust_bin=args.ceiling_bin))
            except Exception as e:  # noqa: BLE001
                results["skipped"]["Flight ceiling (Rust, RAM)"] = f"could not start: {e}"
        else:
            results["skipped"]["Flight ceiling (Rust, RAM)"] = "no --ceiling-bin given"
        readers: list[systems.System] = [fastk_flight, fastk_http_reads, *ceilings] + peers
        if "ROAPI" not in skip:
            roapi_bin = shutil.which("roapi") or str(pathlib.Path(sys.executable).parent / "roapi")
            if not pathlib.Path(roapi_bin).exists():
                results["skipped"]["ROAPI"] = "the roapi wheel did not install a roapi binary"
            else:
                try:
                    log("starting ROAPI (loads the Parquet files into memory)")
                    ro = systems.Roapi(roapi_bin, polars.root, ds, logs / "roapi.log")
                    results["roapi_startup_s"] = ro.startup_s
                    versions[ro.label] = ro.version()
                    readers.append(ro)
                except Exception as e:  # noqa: BLE001
                    results["skipped"]["ROAPI"] = f"could not start: {e}"
        for c in ceilings:
            versions[c.label] = c.version()
        results["versions"] = versions

        results["year_to_polars"] = workloads.year_to_polars(readers, ds, P["year_reps"])
        # The same year over FastK's Unix socket, loopback TCP and ArcticDB in process.
        results["colocated"] = market.guarded("colocated", lambda: workloads.colocated(
            fk, fastk_flight, next((p for p in peers if isinstance(p, systems.Arctic)), None), ds,
            P["colocated_reps"], fastk_version))
        results["day_ranges"] = workloads.day_range_latency(readers, ds, P["day_ranges"], P["day_budget_s"])
        results["latest"] = workloads.latest_latency(readers, ds, P["latest_n"], P["latest_budget_s"])
        pred_systems = [s for s in readers if s not in ceilings]
        results["predicate"] = workloads.predicates(pred_systems, ds, P["selectivities"], P["predicate_reps"])
        results["flight_scalar"] = workloads.flight_transport([fastk_flight, *ceilings], ds, P["flight_reps"])
        rust_ceiling = next((c for c in ceilings if "Rust" in c.label), None)
        if rust_ceiling is not None:
            results["rust_flight"] = rust_client(args.ceiling_bin, fk.flight, rust_ceiling.addr, ds, P["flight_reps"])
        sql_ways = fastk_sql(fk, fastk_version, results)
        if sql_ways:
            versions["FastK SQL"] = sql_ways[0].version()
            results["sql_year"] = workloads.sql_year(fastk_flight, sql_ways, ds, P["sql_year_reps"])
            adbc = next((w for w in sql_ways if w.mode == "adbc"), sql_ways[0])
            roapi = next((s for s in readers if isinstance(s, systems.Roapi)), None)
            results["sql_resample"] = workloads.sql_resample(adbc, [duck, duck_table], roapi, ds,
                                                             P["sql_resample_reps"])
            results["sql_predicate"] = workloads.sql_predicate(fastk_flight, sql_ways, ds, P["selectivities"],
                                                               P["sql_predicate_reps"])
        for w in sql_ways:
            w.close()
        results["disk"] = workloads.disk([fastk_flight] + peers, ds)
        results["http_load"] = workloads.http_load(fk.http, ds, P["wrk_s"]) if shutil.which("wrk") else None
        if results["http_load"] is None:
            results["skipped"]["wrk"] = "wrk not installed (apt install wrk): no HTTP load figures"
        # The market queries come last: coverage adds a series to the Flight-loaded
        # store (after its bytes were counted above), and the as-of cross section runs
        # on a FastK store of its own, so `symbols: "*"` is exactly its series.
        try:
            market_http = systems.FastKHttp(fk, fastk_version)  # a fresh connection
        except Exception as e:  # noqa: BLE001
            market_http = None
            results["skipped"]["FastK HTTP (market queries)"] = f"could not connect: {e}"
        market.run(market.WORKLOADS, results, P, ds=ds, fastk_flight=fastk_flight, fastk_http=market_http,
                   make_fastk=fastk_maker(args.fastk_bin, fastk_version, work / "fastk-xs", logs / "fastk-xs.log"),
                   make_fastk_coverage=fastk_maker(args.fastk_bin, fastk_version, work / "fastk-coverage",
                                                   logs / "fastk-coverage.log"),
                   arctic=next((p for p in peers if isinstance(p, systems.Arctic)), None),
                   duck=duck, polars=polars, pg=pg, extra=extra)
        for s in readers:
            s.close()
        # The self-contained groups start stores of their own: the shared stores and
        # servers go first, so that none of them holds memory or a core meanwhile.
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        groups(args, P, results, work, logs, spec)
    except checks.Mismatch as e:
        mismatch = str(e)
        results["answer_mismatch"] = mismatch
        log(f"ANSWER MISMATCH: {mismatch}")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    results["checked"] = dict(checks.COUNTS)

    results["rust"] = rust_results(args.rust_results, q, P["predicate_reps"])
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["wall_s"] = time.time() - t_run
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    log(f"results: {args.out / 'results.json'}")
    for p in report.charts(results, charts_dir):
        log(f"chart: {p}")
    (args.out / "tables.md").write_text(report.all_tables(results))
    if args.docs:
        args.docs.write_text(report.fill_markdown(args.docs.read_text(), results))
        log(f"filled {args.docs}")
    log(f"done in {results['wall_s']:.0f} s")
    if mismatch:
        log(f"FAILED: a timed answer was wrong: {mismatch}")
        return 1
    return 0


def groups(args, P: dict, results: dict, work: pathlib.Path, logs: pathlib.Path, spec: dataset.Spec) -> None:
    """The full run's self-contained groups, each on stores of its own, in the order
    of `--only`: compression, shards, tls, snapshots, derived, factors_100k, ticks, then the feed workloads (feeds.py). Each
    is guarded: a group that fails is recorded with its error under its key (and the
    group's wall time under `group_wall_s`), and the next one runs."""
    q = args.quick
    walls = results.setdefault("group_wall_s", {})

    def timed(key: str, fn) -> None:
        t = time.time()
        results[key] = market.guarded(key, fn)
        walls[key] = time.time() - t
        procs.stop_all()  # whatever the group left running

    timed("compression", lambda: compression.run(results, P, binary=args.fastk_bin, work=work / "compression",
                                                 logs=logs, quick=q, spec=spec))
    timed("shards", lambda: shards.run(results, P, binary=args.fastk_bin, work=work / "shards", logs=logs))
    timed("tls", lambda: tls.run(results, P, binary=args.fastk_bin, work=work / "tls", logs=logs, spec=spec,
                                 ceiling_bin=args.ceiling_bin))
    timed("snapshots", lambda: snapshots.run(results, P, binary=args.fastk_bin, work=work / "snapshots",
                                             logs=logs))
    timed("derived", lambda: derived.run(results, P, binary=args.fastk_bin, work=work / "derived", logs=logs))
    timed("factors_100k", lambda: factors.run(results, P, binary=args.fastk_bin, work=work / "factors", logs=logs))
    timed("ticks", lambda: ticks.run(results, P, binary=args.fastk_bin, work=work / "ticks", logs=logs))
    results.setdefault("versions", {}).update(feeds.versions())
    t = time.time()
    try:
        feeds.run(set(feeds.WORKLOADS), results, P, binary=args.fastk_bin, work=work / "feeds", logs=logs, quick=q)
    except checks.Mismatch:
        raise
    except Exception as e:  # noqa: BLE001 - feeds.run guards each workload; this is a bug in it
        for w in feeds.WORKLOADS:
            results.setdefault(w, {"error": f"{type(e).__name__}: {str(e)[:300]}"})
    walls["feeds"] = time.time() - t
    for w in feeds.WORKLOADS:  # a workload feeds.run did not record is a failure, not a gap
        results.setdefault(w, {"error": "not run (see the log)"})


if __name__ == "__main__":
    sys.exit(main())
