"""results.json -> PNG charts, the Markdown tables (tables.md) and docs/benchmarks.md.

The page is written whole from one full run's results.json (`write_page`, or
`python -m fastk_bench.report RESULTS.json DOC.md`; see "the page" below); a quick or
--only run's results are refused, so only a full run changes it.

Every ratio is written so that above 1 means FastK is ahead: for times it is
(best peer's time / FastK's time), for rates (FastK's rate / best peer's rate), for
bytes on disk (best peer's bytes / FastK's bytes). "Best peer" is the best system
that is neither FastK (any of its ways: Flight, HTTP, 3 streams, SQL, ...) nor an
in-memory Flight ceiling (`is_peer`): ArcticDB, DuckDB over Parquet and as a database,
chDB, Polars, PostgreSQL, ROAPI, SQLite; FastK's other ways and the ceilings are shown
beside them but never count as peers.

The SQL tables compare FastK's SQL with FastK's native calls and state their own
ratios: SQL throughput as a share of the native DoGet's (sql_year), each system's time
over FastK's (sql_resample: above 1, FastK is faster), SQL time over native time
(sql_predicate: below 1.2 is the target).

The market-query tables (market_resample, market_asof, market_coverage; see
`market.py`) give each way's median and best time and "time vs FastK" (its median /
FastK Flight's; above 1, FastK is faster), and a goal line: FastK first for the
resample and the as-of cross section, under 10 ms warm for coverage. Every way whose
label does not start with "FastK" is a peer there.

The colocated table (`colocated`, workloads.colocated) gives one year of 1m bars into
Polars over FastK's Flight Unix socket, over loopback TCP Flight and from ArcticDB in
process, with "time vs socket" (a way's median / the socket's; above 1, the socket is
faster), the socket's ratios to the other two, and the goal line: FastK over the
socket first.

The feed tables (`feed`, `feed_many`, `many_series`, see `feeds.py`) give each way's
writes/s (or rows/s) and latency percentiles, the load, disk and restart figures of a
store of many series, what was checked, and a goal line per target: FastK's
single-bar writes at least 10,000/s with p99 under 10 ms (a verdict for each FastK row,
naming it: driven by the peers' Python threads, and by wrk), above SQLite and at least
10x DuckDB (from the like-for-like row "FastK HTTP (Python threads)" only, or
`feed.ratios`; the wrk row is never divided by a peer's figure); a many-series write of
one minute of 2,000 bars under 5 ms (the issue's figure, read at the median of the
runs' medians as every other latency target that names no percentile), with the
stricter bar of the p99 (pooled over every run's writes) under 5 ms too given its own
verdict beside it.

The TLS table (`tls`, see `tls.py`) gives the year into Polars over plain Flight and
over Flight with TLS from the same store, with "time vs plain" (above 1, TLS is
slower by that factor), the ratio per round, and what a new connection costs each way.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from dataclasses import dataclass, field


class _Pyplot:
    """matplotlib.pyplot, imported on first use: writing the page needs no plotting
    library (the page's test runs without one), drawing the charts does."""

    def __getattr__(self, name):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot

        return getattr(pyplot, name)


plt = _Pyplot()

FASTK = "FastK Flight"
FASTK_CONCURRENT = "FastK Flight, 3 streams"
HTTP = "FastK HTTP"
CEILINGS = ("Flight ceiling (pyarrow, RAM)", "Flight ceiling (Rust, RAM)")
NOT_PEERS = {FASTK, FASTK_CONCURRENT, HTTP, *CEILINGS}
COLORS = {FASTK: "#d62728", FASTK_CONCURRENT: "#e377c2", HTTP: "#ff9896", CEILINGS[0]: "#7f7f7f", CEILINGS[1]: "#bcbcbc",
          "ArcticDB": "#1f77b4", "DuckDB": "#ff7f0e", "Polars": "#2ca02c", "PostgreSQL": "#9467bd",
          "ROAPI": "#8c564b", "FastK Flight SQL (ADBC)": "#d62728", "FastK Flight (Unix socket)": "#8b0000"}


def ok(d: dict) -> dict:
    """Only the systems that produced a result (no error entry)."""
    return {k: v for k, v in d.items() if isinstance(v, dict) and "error" not in v}


def is_peer(label: str) -> bool:
    """A peer is any system that is not FastK (in any of its ways) nor an in-memory ceiling."""
    return label not in NOT_PEERS and not label.startswith(("FastK", "Flight ceiling"))


def best_peer(d: dict, key: str, lower_is_better: bool) -> tuple[str | None, float | None]:
    peers = {k: v[key] for k, v in ok(d).items() if is_peer(k) and v.get(key) is not None}
    if not peers:
        return None, None
    k = (min if lower_is_better else max)(peers, key=peers.get)
    return k, peers[k]


def ceiling(d: dict) -> dict:
    """The faster of the in-memory Flight servers, as seen by the same client."""
    got = [v for k, v in ok(d).items() if k in CEILINGS]
    return min(got, key=lambda v: v["median_s"]) if got else {}


def ratio(fastk: float | None, peer: float | None, lower_is_better: bool) -> str:
    if not fastk or not peer:
        return "n/a"
    r = peer / fastk if lower_is_better else fastk / peer
    return f"**{r:.2f}x**" if r >= 1 else f"{r:.2f}x"


def fmt(v, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return f"{v:,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if 0 < abs(v) < 1:
        return f"{v:.3g}"
    return f"{v:.{digits}f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def errors_note(d: dict) -> str:
    bad = {k: v["error"] for k, v in d.items() if isinstance(v, dict) and "error" in v}
    return "".join(f"\n\n{k}: failed ({e})" for k, e in bad.items())


# --------------------------------------------------------------------------- tables


def t_ingest(r: dict) -> str:
    d = r["ingest"]
    rows = []
    for k, v in ok(d).items():
        rows.append([k, v["kline_rows_per_s"] / 1e6, v["kline_s"],
                     v.get("scalar_rows_per_s", 0) / 1e6 if v.get("scalar_rows_per_s") else None,
                     v.get("scalar_s"), v.get("prep_s")])
    peer, best = best_peer(d, "kline_rows_per_s", False)
    speer, sbest = best_peer(d, "scalar_rows_per_s", False)
    f = ok(d).get(FASTK, {})
    h = ok(d).get(HTTP, {})
    c = ok(d).get(FASTK_CONCURRENT, {})
    out = table(["system", "kline M rows/s", "kline s", "scalar M rows/s", "scalar s", "untimed prep s"], rows)
    out += (f"\n\nFastK (Flight DoPut) vs best peer: kline {ratio(f.get('kline_rows_per_s'), best, False)} "
            f"(best: {peer}), scalar {ratio(f.get('scalar_rows_per_s'), sbest, False)} (best: {speer}). "
            f"FastK HTTP JSON vs best peer: kline {ratio(h.get('kline_rows_per_s'), best, False)}.")
    if c:
        out += (f" FastK with 3 concurrent DoPut streams (kline only; the scalar data is one series): "
                f"{c['kline_rows_per_s'] / 1e6:.2f} M rows/s, {ratio(c.get('kline_rows_per_s'), best, False)} "
                f"of the best peer.")
    repeated = [k for k, v in ok(d).items() if v.get("loads", 1) > 1]
    once = [k for k in ok(d) if k not in repeated]
    if repeated:
        n = max(ok(d)[k]["loads"] for k in repeated)
        out += (f" Figures for {', '.join(repeated)} are the median of {n} loads, each into a new empty store "
                f"(the first one is the store the read workloads use); {', '.join(once) or 'the rest'} loaded once.")
    if r.get("roapi_startup_s") is not None:
        out += (f" ROAPI has no write path (read-only); it loaded the Polars Parquet files into memory "
                f"at start-up in {r['roapi_startup_s']:.1f} s.")
    return out + errors_note(d)


def t_year(r: dict) -> str:
    d = r["year_to_polars"]
    ceil = ceiling(d).get("median_s")
    rows = [[k, v["median_s"] * 1e3, v["best_s"] * 1e3, v["rows_per_s"] / 1e6, v["gb_s"],
             f"{ceil / v['median_s'] * 100:.0f}%" if ceil else "n/a"] for k, v in ok(d).items()]
    peer, best = best_peer(d, "median_s", True)
    f = ok(d).get(FASTK, {}).get("median_s")
    out = table(["system", "median ms", "best ms", "M rows/s", "GB/s", "of ceiling"], rows)
    out += f"\n\nFastK vs best peer ({peer}): {ratio(f, best, True)}."
    if f and ceil:
        out += (f" FastK reaches {ceil / f * 100:.0f}% of the in-memory Flight ceiling (the faster of the two "
                f"in-memory servers; \"of ceiling\" above uses the same one).")
    return out + errors_note(d)


def t_latency(d: dict) -> str:
    rows = [[k, v["p50_ms"], v["p99_ms"], v["mean_ms"], v["ops_per_s"], f"{v['n']}/{v['planned']}"]
            for k, v in ok(d).items()]
    peer, best = best_peer(d, "p50_ms", True)
    _, best99 = best_peer(d, "p99_ms", True)
    f = ok(d).get(FASTK, {})
    out = table(["system", "p50 ms", "p99 ms", "mean ms", "queries/s", "ran"], rows)
    out += (f"\n\nFastK vs best peer: p50 {ratio(f.get('p50_ms'), best, True)} (best: {peer}), "
            f"p99 {ratio(f.get('p99_ms'), best99, True)}.")
    return out + errors_note(d)


def t_predicate(r: dict) -> str:
    d = r["predicate"]
    sels = list(d)
    labels = []
    for s in sels:
        for k in d[s]["systems"]:
            if k not in labels:
                labels.append(k)
    rows = []
    for k in labels:
        row = [k]
        for s in sels:
            v = d[s]["systems"].get(k)
            row.append(v["median_ms"] if v and "error" not in v else "n/a")
        rows.append(row)
    ratio_row = ["FastK vs best peer"]
    for s in sels:
        peer, best = best_peer(d[s]["systems"], "median_ms", True)
        f = ok(d[s]["systems"]).get(FASTK, {}).get("median_ms")
        ratio_row.append(f"{ratio(f, best, True)} ({peer})")
    rows.append(ratio_row)
    head = ["system"] + [f"{s}%: {d[s]['matches']:,} rows, ms" for s in sels]
    return table(head, rows) + "".join(errors_note(d[s]["systems"]) for s in sels)


def t_disk(r: dict) -> str:
    d = r["disk"]
    rows = [[k, v["kline_bytes_per_row"], v["kline_bytes"] / 1e6, v["scalar_bytes_per_row"],
             v["scalar_bytes"] / 1e6] for k, v in ok(d).items()]
    peer, best = best_peer(d, "kline_bytes_per_row", True)
    speer, sbest = best_peer(d, "scalar_bytes_per_row", True)
    f = ok(d).get(FASTK, {})
    out = table(["system", "kline B/row", "kline MB", "scalar B/row", "scalar MB"], rows)
    out += (f"\n\nRaw data: 48 B per bar, 16 B per scalar row. FastK vs best peer: kline "
            f"{ratio(f.get('kline_bytes_per_row'), best, True)} ({peer}), scalar "
            f"{ratio(f.get('scalar_bytes_per_row'), sbest, True)} ({speer}).")
    return out + errors_note(d)


def t_http(r: dict) -> str:
    d = r.get("http_load") or {}
    rows = [[k, v["connections"], v["requests_per_s"], v["p50_ms"], v["p99_ms"], v["transfer_per_s"], v["non_2xx"]]
            for k, v in d.items()]
    out = table(["request", "connections", "requests/s", "p50 ms", "p99 ms", "transfer/s", "non-2xx"], rows)
    h = ok(r["ingest"]).get(HTTP)
    if h:
        out += (f"\n\nJSON writes, 10,000-record bodies, one connection, sequential: "
                f"{h['kline_rows_per_s'] / 1e6:.2f} M kline rows/s"
                + (f", {h['scalar_rows_per_s'] / 1e6:.2f} M scalar rows/s" if h.get("scalar_rows_per_s") else "")
                + ".")
    return out


def t_flight(r: dict) -> str:
    rows = []
    y = ok(r["year_to_polars"])
    s = ok(r.get("flight_scalar") or {})
    for label, d, ceil in [("1 year of 1m bars (527,040 rows, 25 MB)", y, ceiling(y)),
                           (f"whole scalar series ({r['dataset']['scalar_rows']:,} rows)", s, ceiling(s))]:
        f = d.get(FASTK)
        if f and ceil:
            rows.append([label, "pyarrow read_all + pl.from_arrow", f["median_s"] * 1e3, f["rows_per_s"] / 1e6,
                         f["gb_s"], ceil["gb_s"], f"{ceil['median_s'] / f['median_s'] * 100:.0f}%"])
    for k, v in (r.get("rust_flight") or {}).items():
        if isinstance(v, dict) and "fastk_s" in v:
            rows.append([v.get("label", k), "Rust arrow-flight client", v["fastk_s"] * 1e3, v["rows"] / v["fastk_s"] / 1e6,
                         v["bytes"] / v["fastk_s"] / 1e9, v["bytes"] / v["ceiling_s"] / 1e9,
                         f"{v['ceiling_s'] / v['fastk_s'] * 100:.0f}%"])
    out = table(["DoGet of", "client", "FastK ms", "M rows/s", "FastK GB/s", "ceiling GB/s", "FastK / ceiling"], rows)
    f = ok(r["ingest"]).get(FASTK)
    if f:
        out += (f"\n\nDoPut (pyarrow, one stream per series, 65,536-row batches): "
                f"{f['kline_rows_per_s'] / 1e6:.2f} M kline rows/s, "
                f"{f['scalar_rows_per_s'] / 1e6:.2f} M scalar rows/s.")
    return out


def t_rust(r: dict) -> str:
    rs = r.get("rust") or {}
    out = []
    if rs.get("storage_lines"):
        out.append("`cargo bench --bench storage`" + (" (quick mode)" if rs.get("quick") else "") + ":\n\n```text\n"
                   + "\n".join(rs["storage_lines"]) + "\n```")
    pred = rs.get("predicate")
    if pred:
        rows = [[str(p["selectivity_pct"]), p["matches"], p["scan_ms"], p["zonemap_ms"], p["value_index_ms"], p["auto_ms"],
                 p.get("duckdb_ms"), f"{p['scan_ms'] / p['auto_ms']:.0f}x",
                 f"{p['duckdb_ms'] / p['auto_ms']:.1f}x" if p.get("duckdb_ms") else "n/a"] for p in pred["results"]]
        out.append(f"`cargo bench --bench predicate` ({pred['rows']:,} rows, in process, ts only) with DuckDB over "
                   "Parquet on the same data and predicates:\n\n"
                   + table(["select %", "matches", "scan ms", "zonemap ms", "index ms", "auto ms", "DuckDB ms",
                            "scan/auto", "DuckDB/auto"], rows))
    return "\n\n".join(out) if out else "(not run)"


def t_limits(r: dict) -> str:
    m = r.get("memcpy") or {}
    if not m:  # an --only run of workloads that do not need it
        return "memcpy: not measured in this run."
    return f"memcpy (numpy copy of {m.get('bytes', 0) >> 20} MiB): {fmt(m.get('gb_s'))} GB/s."


def t_machine(r: dict) -> str:
    m = r["machine"]
    d = r.get("dataset")  # absent from an --only run of the feed workloads, which bring their own data
    rows = [["CPU", f"{m['cpu']} ({m['nproc']} cores visible)"], ["memory", f"{m['memory_gib']} GiB"],
            ["OS, kernel", f"{m['os']}, Linux {m['kernel']}"], ["Python", m["python"]],
            ["load average at start / end", f"{m['loadavg_start'][0]:.1f} / {m.get('loadavg_end', [0])[0]:.1f}"],
            ["run", f"{r['mode']} mode, {r['started']}, {r.get('wall_s', 0) / 60:.1f} min for the driver"]]
    if d:
        rows.append(["dataset", f"{len(d['symbols'])} symbols x {d['bars_per_symbol']:,} 1m bars = "
                                f"{d['kline_rows']:,} bars; {d['scalar_rows']:,} scalar rows; seed {d['seed']}"])
    return table(["", ""], rows)


def t_versions(r: dict) -> str:
    rows = [[k, v] for k, v in r.get("versions", {}).items() if k not in (FASTK, HTTP)]
    out = table(["component", "version"], rows)
    if r.get("skipped"):
        out += "\n\nSkipped: " + "; ".join(f"{k}: {v}" for k, v in r["skipped"].items()) + "."
    return out


# --------------------------------------------------------------------------- SQL

SQL_YEAR_TARGET = 0.90  # SQL throughput / native DoGet throughput, at least
SQL_PREDICATE_TARGET = 1.20  # SQL time / native time, at most


def _verdict(ok_: bool | None) -> str:
    return "n/a" if ok_ is None else ("met" if ok_ else "**not met**")


def t_sql_year(r: dict) -> str:
    d = r["sql_year"]
    sysd = d["systems"]
    rows = [[k, v["median_s"] * 1e3, v["best_s"] * 1e3, v["rows_per_s"] / 1e6, v["mb_s"],
             f"{v['of_native'] * 100:.0f}%" if v.get("of_native") else "n/a"] for k, v in ok(sysd).items()]
    out = table(["way", "median ms", "best ms", "M rows/s", "MB/s", "throughput vs native"], rows)
    sql = {k: v for k, v in ok(sysd).items() if "SQL" in k and "Flight" in k and v.get("of_native")}
    if sql:
        parts = [f"{k} {v['of_native'] * 100:.0f}% ({_verdict(v['of_native'] >= SQL_YEAR_TARGET)})"
                 for k, v in sql.items()]
        out += (f"\n\n{d['rows']:,} bars as Arrow tables; throughput of SQL as a share of the native DoGet's "
                f"(native median / SQL median; target at least {SQL_YEAR_TARGET:.0%}): " + "; ".join(parts) + ".")
    unordered = [k for k, v in ok(sysd).items() if v.get("ordered") is False]
    if unordered:
        out += f" Answered out of ts order (no ORDER BY was asked): {', '.join(unordered)}."
    return out + errors_note(sysd)


def t_sql_resample(r: dict) -> str:
    d = r["sql_resample"]
    sysd = d["systems"]
    rows = [[k, v["median_ms"], v["best_ms"], v["input_rows_per_s"] / 1e6,
             f"{v['vs_fastk']:.2f}x" if v.get("vs_fastk") else "n/a"] for k, v in ok(sysd).items()]
    out = table(["system", "median ms", "best ms", "M input bars/s", "time vs FastK"], rows)
    got = {k: v["median_ms"] for k, v in ok(sysd).items()}
    fastk = next((k for k in got if k.startswith("FastK")), None)
    if fastk and len(got) > 1:
        first = min(got, key=got.get)
        others = {k: v for k, v in got.items() if k != fastk}
        peer = min(others, key=others.get)
        out += (f"\n\n{d['bars']:,} 1m bars into {d['buckets']:,} 1h buckets, every answer checked against numpy "
                f"before timing. FastK vs fastest peer ({peer}): {ratio(got[fastk], others[peer], True)}; "
                f"fastest: {first} (target FastK first: {_verdict(first == fastk)}).")
    return out + errors_note(sysd)


def t_sql_predicate(r: dict) -> str:
    d = r["sql_predicate"]
    sels = d["selectivities"]
    labels = []
    for s in sels.values():
        for k in s["systems"]:
            if k not in labels:
                labels.append(k)
    rows = []
    for k in labels:
        row = [k]
        for s in sels.values():
            v = s["systems"].get(k)
            if not v or "error" in v:
                row.append("n/a")
            elif v.get("vs_native") and not k.startswith("FastK DoGet"):
                over = v["vs_native"]
                row.append(f"{fmt(v['median_ms'])} ({over:.2f}x{'' if over <= SQL_PREDICATE_TARGET else ', over'})")
            else:
                row.append(v["median_ms"])
        rows.append(row)
    head = ["way"] + [f"{s}%: {v['matches']:,} rows, ms (SQL / native)" for s, v in sels.items()]
    out = table(head, rows)
    out += (f"\n\nTable `{d['table']}`; in brackets, SQL median time / native median time (target at most "
            f"{SQL_PREDICATE_TARGET:.1f}x; \"over\" marks a miss).")
    return out + "".join(errors_note(s["systems"]) for s in sels.values())


# --------------------------------------------------------------------------- market queries


def _is_fastk(label: str) -> bool:
    return label.startswith("FastK")


def _first_line(sysd: dict, key: str = "median_ms", headline: str = FASTK) -> str:
    """`FastK vs fastest peer (X): ratio; fastest: Y (target FastK first: met)`."""
    got = {k: v[key] for k, v in ok(sysd).items() if v.get(key) is not None}
    peers = {k: v for k, v in got.items() if not _is_fastk(k)}
    if headline not in got or not peers:
        return f"{headline} vs fastest peer: n/a (target FastK first: n/a)."
    peer = min(peers, key=peers.get)
    others = [k for k in got if _is_fastk(k) and k != headline]
    extra = "".join(f"; {k} vs it: {ratio(got[k], peers[peer], True)}" for k in others)
    first = min(got, key=got.get)
    return (f"{headline} vs fastest peer ({peer}): {ratio(got[headline], peers[peer], True)}{extra}; fastest: "
            f"{first} (target FastK first: {_verdict(got[headline] < peers[peer])}).")


def t_market_resample(r: dict) -> str:
    d = r["market_resample"]
    if "error" in d:
        return f"(failed: {d['error']})"
    tfs = list(d["targets"])
    labels: list[str] = []
    for tf in tfs:
        for k in d["targets"][tf]["systems"]:
            if k not in labels:
                labels.append(k)
    rows = []
    for k in labels:
        row = [k]
        for tf in tfs:
            v = d["targets"][tf]["systems"].get(k)
            if v and "error" not in v:
                row += [v["median_ms"], v["best_ms"], f"{v['vs_fastk']:.2f}x" if v.get("vs_fastk") else "n/a"]
            else:
                row += ["n/a", "n/a", "n/a"]
        rows.append(row)
    head = ["system"]
    for tf in tfs:
        n = d["targets"][tf]["buckets"]
        head += [f"{tf} ({n:,} buckets) median ms", f"{tf} best ms", f"{tf} time vs FastK"]
    out = table(head, rows)
    out += (f"\n\n{d['bars']:,} 1m bars of {d['symbol']} (calendar 2024) resampled on read, every answer checked "
            f"against numpy before timing; median of {_reps(d['targets'][tfs[0]]['systems'])} interleaved rounds.")
    for tf in tfs:
        out += f" {tf}: " + _first_line(d["targets"][tf]["systems"])
    failed: dict = {}
    for tf in tfs:
        for k, v in d["targets"][tf]["systems"].items():
            if isinstance(v, dict) and "error" in v:
                failed.setdefault(k, {})[tf] = v["error"]
    for k, per in failed.items():
        errs = set(per.values())
        out += (f"\n\n{k}: failed ({next(iter(errs))})" if len(errs) == 1 and len(per) == len(tfs) else
                "".join(f"\n\n{k}, {tf}: failed ({e})" for tf, e in per.items()))
    return out


def _n(k: int, unit: str) -> str:
    return f"{k:,} {unit}" + ("" if k == 1 else "s")


def _reps(sysd: dict) -> str:
    reps = sorted({v["reps"] for v in ok(sysd).values() if "reps" in v})
    return "/".join(str(x) for x in reps) if reps else "n/a"


def t_market_asof(r: dict) -> str:
    d = r["market_asof"]
    if "error" in d:
        return f"(failed: {d['error']})"
    sysd = d["systems"]
    rows = [[k, v["median_ms"], v["best_ms"], v["p99_ms"], v["reps"],
             f"{v['vs_fastk']:.2f}x" if v.get("vs_fastk") else "n/a", d["setup_s"].get(k.split(" (")[0])]
            for k, v in ok(sysd).items()]
    out = table(["system", "median ms", "best ms", "p99 ms", "rounds", "time vs FastK", "load s (untimed)"], rows)
    n = d["notes"]
    out += (f"\n\n{d['series']:,} series of 1m bars over {_n(n['days'], 'day')} ({d['bars']:,} bars); the last bar at or "
            f"before T = {d['as_of']} of each: {d['answered']:,} answers (series listed after T, left out: "
            f"{n['listed_after']}; stopped hours before T: {n['stopped_before']}; with a hole at T: "
            f"{n['hole_at_as_of']}), "
            f"every answer checked before timing. " + _first_line(sysd))
    return out + errors_note(sysd)


def t_market_coverage(r: dict) -> str:
    d = r["market_coverage"]
    if "error" in d:
        return f"(failed: {d['error']})"
    warm = d.get("warm") or {**d["systems"], **d.get("peers", {})}
    cold = d.get("cold") or {}
    rows = []
    for k, v in ok(warm).items():
        c = ok(cold).get(k) or {}
        rows.append([k, v["median_ms"], v["best_ms"], v["p99_ms"], c.get("median_ms", "n/a"),
                     f"{v['reps']} / {c['reps']}" if c else v["reps"],
                     f"{v['vs_fastk']:.2f}x" if v.get("vs_fastk") else "n/a"])
    out = table(["way", "warm median ms", "warm best ms", "warm p99 ms", "cold median ms", "calls warm / cold",
                 "warm time vs FastK HTTP"], rows)
    n = d["notes"]
    out += (f"\n\n{_n(n['years'], 'year')} of 1m bars ({d['expected']:,} grid points, {d['present']:,} bars, "
            f"{d['gap_count']:,} gaps); every way's answer checked. Warm: the median of the calls after a checked "
            f"warm-up. " + ("Cold: the first call after a restart of FastK's server, a reopened DuckDB or chDB "
                            "database or a new DuckDB connection (page cache warm), as many for every system."
                            if cold else "Cold: not measured in this run."))
    target = d.get("target_ms", 10.0)
    for phase, sysd in (("cold", cold), ("warm", warm)):
        h = ok(sysd).get(HTTP)
        if h:
            out += (f" FastK HTTP coverage {phase}: {fmt(h['median_ms'])} ms median (target under {target:g} ms: "
                    f"{_verdict(h['median_ms'] < target)}).")
    cold_only = {k: v for k, v in cold.items() if "error" not in (warm.get(k) or {})}  # not said twice
    return out + errors_note(warm) + errors_note(cold_only)


# --------------------------------------------------------------------------- colocated

COLOCATED_LOCAL = "FastK local mapping (Unix socket)"
COLOCATED_UNIX = "FastK Flight (Unix socket)"
COLOCATED_TCP = "FastK Flight (loopback TCP)"
COLOCATED_ARCTIC = "ArcticDB"
COLOCATED_PKG_TCP = "FastK package (fastk.read, loopback TCP)"
COLOCATED_PKG_LOCAL = "FastK package (fastk.read local=True, Unix socket)"


def t_colocated(r: dict) -> str:
    d = r["colocated"]
    if "error" in d:
        return f"(failed: {d['error']})"
    sysd = d["systems"]
    rows = [[k, v["median_ms"], v["best_ms"], v["p99_ms"], v["rows_per_s"] / 1e6, v["gb_s"],
             f"{v['vs_socket']:.2f}x" if v.get("vs_socket") else "n/a"] for k, v in ok(sysd).items()]
    out = table(["way", "median ms", "best ms", "p99 ms", "M rows/s", "GB/s", "time vs socket"], rows)
    got = {k: v["median_ms"] for k, v in ok(sysd).items()}
    local, sock = got.get(COLOCATED_LOCAL), got.get(COLOCATED_UNIX)
    tcp, arctic = got.get(COLOCATED_TCP), got.get(COLOCATED_ARCTIC)
    out += (f"\n\n{d['rows']:,} 1m bars of {d['symbol']} (calendar 2024, {d['bytes'] / 1e6:.0f} MB of Arrow data) "
            f"into a Polars DataFrame, every answer checked against the dataset before timing; median of "
            f"{_reps(sysd)} interleaved rounds. FastK local mapping vs ArcticDB (in process): "
            f"{ratio(local, arctic, True)}; vs FastK Flight over the socket: {ratio(local, sock, True)}. "
            f"FastK over the socket vs loopback TCP: {ratio(sock, tcp, True)}; "
            f"vs ArcticDB: {ratio(sock, arctic, True)}; FastK over loopback TCP vs ArcticDB: "
            f"{ratio(tcp, arctic, True)}.")
    pkg_tcp, pkg_local = got.get(COLOCATED_PKG_TCP), got.get(COLOCATED_PKG_LOCAL)
    if pkg_tcp is not None or pkg_local is not None:
        out += (f" The client package over its raw way (target: no cost, within the rounds' noise): "
                f"fastk.read over loopback TCP vs raw pyarrow.flight: {ratio(pkg_tcp, tcp, True)}; "
                f"fastk.read local=True vs fastk_local: {ratio(pkg_local, local, True)}.")
    fastk_local = COLOCATED_LOCAL if local is not None else COLOCATED_UNIX
    if got.get(fastk_local) is not None and len(got) > 1:
        first = min(got, key=got.get)
        out += (f" Fastest: {first} (target a co-located FastK way first: "
                f"{_verdict(first in (COLOCATED_LOCAL, COLOCATED_UNIX))}).")
    else:
        out += " Fastest: n/a (target a co-located FastK way first: n/a)."
    return out + errors_note(sysd)


# --------------------------------------------------------------------------- feeds


def _how(d: dict) -> str:
    how = d.get("how") or {}
    return "".join(f"\n- {k}: {v}" for k, v in how.items())


def _checked_text(v) -> str:
    """A `checked` entry as text: a description, a count of answers checked, or a list."""
    if isinstance(v, bool) or v is None:
        return ""
    if isinstance(v, int):
        return f"{v:,} answers checked"
    if isinstance(v, dict):
        return "".join(f"\n- {k}: {x}" for k, x in v.items())
    return str(v)


def _checked_how(d: dict) -> str:
    """What a workload checked: its description (`checked_how`, or `checked` when that is
    still a description) and the count of answers checked."""
    how, n = d.get("checked_how"), d.get("checked")
    if how is None and not isinstance(n, int):
        how, n = n, None
    text = _checked_text(how)
    if isinstance(n, int):
        text += ("\n- " if text.startswith("\n") else ("; " if text else "")) + _checked_text(n)
    return text


def _checked(d: dict) -> str:
    got = {k: _checked_text(v["checked"]) for k, v in (d.get("systems") or {}).items()
           if isinstance(v, dict) and v.get("checked")}
    return "".join(f"\n- {k}: {v}" for k, v in got.items())


def _fsync_note(d: dict) -> str:
    f = d.get("fdatasync")
    if not f:
        return ""
    return (f" fdatasync on the work volume (100 B appended, {f['n']} times): p50 {fmt(f['p50_ms'])} ms, "
            f"p99 {fmt(f['p99_ms'])} ms.")


FEED_LIKE = "FastK HTTP (Python threads)"  # feeds.py: FastK driven by the peers' own Python threads
FEED_WRK = "FastK HTTP (wrk)"  # feeds.py: FastK driven by wrk, shown beside, never divided by a peer's figure


def _feed_driver(d: dict, label: str) -> str:
    """Which load generator drove a feed row: its `load_generator`, or for runs older
    than that key, wrk when the row has wrk's counters or its setup names wrk."""
    v = d["systems"].get(label) or {}
    if v.get("load_generator"):
        return v["load_generator"]
    return "wrk" if "non_2xx" in v or "wrk" in str((d.get("how") or {}).get(label, "")) else "python-threads"


def _feed_fastk(d: dict, driver: str) -> str | None:
    """The FastK feed row driven by `driver` ("python-threads" or "wrk"), or None."""
    named = FEED_LIKE if driver == "python-threads" else FEED_WRK
    labels = [named] + [k for k in d["systems"] if k.startswith("FastK") and k != named]
    return next((k for k in labels if k in d["systems"] and _feed_driver(d, k) == driver), None)


def _feed_ratios(d: dict, fastk: dict) -> dict:
    """FastK (Python threads) against each peer: writes/s FastK / peer, p99 peer / FastK
    (above 1, FastK ahead): `feed.ratios` when the run wrote it, else from the figures."""
    if isinstance(d.get("ratios"), dict):
        return d["ratios"]
    return {k: {"writes_per_s": _rt(fastk.get("writes_per_s"), v.get("writes_per_s"), False),
                "p99": _rt(fastk.get("p99_ms"), v.get("p99_ms"), True)}
            for k, v in ok(d["systems"]).items() if is_peer(k)}


def _feed_row(d: dict, k: str, v: dict) -> list:
    bad = v.get("non_2xx", 0) + v.get("socket_errors", 0) if "non_2xx" in v else v.get("errors", 0)
    driver = {"python-threads": "Python threads"}.get(_feed_driver(d, k), _feed_driver(d, k))
    return [k + (" (check failed)" if "error" in v else ""), driver, v["writes_per_s"], v.get("p50_ms"),
            v.get("p90_ms"), v.get("p99_ms"), v.get("max_ms"), v.get("writes"), bad]


def _feed_server_targets(d: dict, t: dict) -> str:
    """The server's own targets (writes/s, p99), verdict by verdict on each FastK row
    that ran, each naming its row: wrk shows the server when the client is not the limit."""
    rows = [k for k in (_feed_fastk(d, "python-threads"), _feed_fastk(d, "wrk")) if k and k in ok(d["systems"])]
    if not rows:
        return " Targets of FastK's server: n/a (no FastK row without an error)."
    ws = "; ".join(f"{k} {d['systems'][k]['writes_per_s']:,.0f} "
                   f"({_verdict(d['systems'][k]['writes_per_s'] >= t['writes_per_s'])})" for k in rows)
    p99 = "; ".join(f"{k} {fmt(d['systems'][k].get('p99_ms'))} ms ({_met_p99(d['systems'][k], t)})" for k in rows)
    return (f" Targets of FastK's server: at least {t['writes_per_s']:,} writes/s: {ws}. "
            f"p99 under {t['p99_ms']:g} ms: {p99}.")


def _met_p99(v: dict, t: dict) -> str:
    p99 = v.get("p99_ms")
    return "n/a" if p99 is None else _verdict(p99 < t["p99_ms"])


def _feed_peer_targets(d: dict, t: dict) -> str:
    """Against the peers, like for like only: FastK driven by the same Python threads."""
    k = _feed_fastk(d, "python-threads")
    f = ok(d["systems"]).get(k) if k else None
    if not f:
        return (" Against the peers (like for like, the same Python threads): n/a ("
                + (f"{k} failed" if k else "no FastK row driven by the peers' Python threads in this run") + ").")
    rt = _feed_ratios(d, f)
    sqlite = {p: x["writes_per_s"] for p, x in rt.items() if p.startswith("SQLite") and x.get("writes_per_s")}
    sq = min(sqlite, key=sqlite.get) if sqlite else None  # FastK's smallest lead: the best SQLite
    dk = (rt.get("DuckDB") or {}).get("writes_per_s")
    out = (f" Against the peers, like for like ({k}, the peers' driver): above SQLite: "
           + (f"{sqlite[sq]:.2f}x {sq} ({_verdict(sqlite[sq] > 1)})" if sq else "n/a")
           + f"; at least {t['vs_duckdb']:g}x DuckDB: "
           + (f"{dk:.1f}x ({_verdict(dk >= t['vs_duckdb'])})" if dk else "n/a") + ".")
    each = [f"{p} {_x(x.get('writes_per_s'))} writes/s, {_x(x.get('p99'))} p99" for p, x in rt.items()]
    if each:
        out += (f" {k} vs each peer (writes/s FastK / peer, p99 peer / FastK; above 1, FastK ahead): "
                + "; ".join(each) + ".")
    reg = f.get("registration") or {}
    if reg:
        out += f" Registration of the {reg['series']:,} series: {reg['s']:.2f} s ({reg['method']})."
    return out


def _feed_drivers(r: dict, d: dict) -> str:
    """Who drove which row: like for like only when FastK has a row driven by the
    peers' own Python threads (runs before that drove FastK by wrk alone)."""
    threads, cores = d.get("threads", 8), (r.get("machine") or {}).get("nproc")
    out = ""
    if _feed_fastk(d, "python-threads"):
        out += (f" Like for like, every system is driven by the same {threads} Python threads in one process: "
                f"FastK's HTTP client and its server share the machine's {f'{cores} ' if cores else ''}cores, while "
                f"SQLite and DuckDB run inside the Python process.")
    else:
        out += f" The peers are driven by {threads} Python threads; FastK has no row driven by them in this run."
    if _feed_fastk(d, "wrk"):
        out += (" The wrk row drives FastK alone with a C load generator: shown beside, never divided by a "
                "peer's figure.")
    return out


def t_feed(r: dict) -> str:
    d = r["feed"]
    if "error" in d:
        return f"(failed: {d['error']})"
    sysd = d["systems"]
    # A way whose check failed keeps its row (marked), beside the error note below.
    shown = {k: v for k, v in sysd.items() if isinstance(v, dict) and v.get("writes_per_s") is not None}
    out = table(["system", "load generator", "writes/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "writes",
                 "non-2xx / errors"], [_feed_row(d, k, v) for k, v in shown.items()])
    t = d["targets"]
    out += (f"\n\n{d['series']:,} kline 1m series; every write is one 1m bar of one series, durable before the "
            f"answer; {d['seconds']} s timed after a {d['warmup_s']} s warm-up." + _feed_drivers(r, d))
    out += _fsync_note(d)
    out += _feed_server_targets(d, t) + _feed_peer_targets(d, t)
    for k, why in (d.get("skipped") or {}).items():
        out += f" {k}: skipped ({why})."
    out += "\n\nHow:" + _how(d)
    if _checked(d):
        out += "\n\nChecked:" + _checked(d)
    return out + errors_note(sysd)


def _fm_runs(d: dict, v: dict) -> int:
    """Runs behind a way's figures: its own count of successful runs, else the workload's."""
    return v.get("runs") or d.get("runs") or 1


def _fm_spread(v: dict) -> str:
    """The runs' medians as min / median / max, or n/a for a run older than `spread`."""
    s = (v.get("spread") or {}).get("median_ms") or {}
    if s:
        return " / ".join(fmt(s.get(k)) for k in ("min", "median", "max"))
    return "one run" if (v.get("runs") or 1) == 1 else "n/a"


def _fm_figure(d: dict, v: dict) -> str:
    """A way's headline figure in words: the median of the runs' medians with their
    spread, and the p99 pooled over every run's timed writes."""
    n = _fm_runs(d, v)
    med = (f"median of {n} run medians {fmt(v['median_ms'])} ms (runs min / median / max {_fm_spread(v)} ms)"
           if n > 1 else f"median {fmt(v['median_ms'])} ms (one run)")
    w = v.get("writes")
    pooled = f" ({n} runs x {d['minutes']})" if n > 1 and w == n * d.get("minutes", 0) else ""
    return f"{med}, p99 {fmt(v.get('p99_ms'))} ms over {fmt(w)} writes{pooled}"


def _fm_verdicts(v: dict, target: float) -> str:
    p99 = v.get("p99_ms")
    return (f"target under {target:g} ms at the median: {_verdict(v['median_ms'] < target)}; the p99 under "
            f"{target:g} ms too: {_met(None if p99 is None else v['median_ms'] < target and p99 < target)}")


def _fm_committer(d: dict, k: str, c: dict) -> str:
    out = (f" {k}, the log's committer per write (its debug log, every run's timed writes): apply median "
           f"{fmt(c['apply_median_ms'])} ms, slowest {fmt(c['apply_max_ms'])} ms; waiting for the sync after it: "
           f"median {fmt(c['sync_wait_median_ms'])} ms, longest {fmt(c['sync_wait_max_ms'])} ms.")
    if c.get("blocks"):
        writes = (d["systems"].get(k) or {}).get("writes") or d["minutes"]
        out += (f" The apply helper took {c['helper_blocks_median']:g} of {c['blocks']} blocks at the median; "
                f"{c['uneven_writes']} of {writes:,} writes were split 5 or more blocks from even.")
    return out


def t_feed_many(r: dict) -> str:
    d = r["feed_many"]
    if "error" in d:
        return f"(failed: {d['error']})"
    sysd = d["systems"]
    # A way with a failed run keeps the figures of its other runs, marked, beside the error note.
    shown = {k: v for k, v in sysd.items() if isinstance(v, dict) and v.get("median_ms") is not None}
    rows = [[k + (" (a run failed)" if "error" in v else ""), v["median_ms"], _fm_spread(v), v.get("p99_ms"),
             v.get("best_ms"), v.get("max_ms"), v["rows_per_s"] / 1e6 if v.get("rows_per_s") else None,
             _fm_runs(d, v), v.get("writes")] for k, v in shown.items()]
    out = table(["way", "median of run medians, ms", "runs' medians min / median / max, ms", "p99 ms (all runs)",
                 "best ms", "max ms", "M rows/s", "runs", "writes timed (all runs)"], rows)
    target = d.get("target_ms", 5.0)
    runs = d.get("runs") or 1
    gap = f", each after {d['gap_ms']:g} ms idle (off the clock)" if d.get("gap_ms") else ""
    out += (f"\n\nEach write: one minute of all {d['series']:,} series ({d['rows_per_write']:,} bars) as one "
            f"all-or-nothing write, durable before the answer. "
            + (f"{runs} runs; in each, every way makes " if runs > 1 else "Every way makes ")
            + f"{d['minutes']} timed writes one after the other after {d['warmup_minutes']} untimed ones{gap}"
            + (", on a fresh store, the ways' order rotated by one from run to run." if runs > 1 else "."))
    for k in ("FastK HTTP", "FastK Flight"):
        v = shown.get(k)
        if v and "error" in v:  # the figures of its other runs, but no verdict from a failed way
            out += f" {k}: {_fm_figure(d, v)}; a run failed, so no verdict."
        elif v:
            out += f" {k}: {_fm_figure(d, v)} ({_fm_verdicts(v, target)})."
        else:
            out += f" {k}: n/a (target under {target:g} ms: n/a)."
    fl = ok(sysd).get("FastK Flight") or {}
    if fl.get("server_write_ms") is not None:
        out += (f" FastK's own share of a DoPut (medians from its debug log): receiving {fmt(fl['server_receive_ms'])} "
                f"ms, writing (log record, sync, in-memory chunks of {d['series']:,} series) "
                f"{fmt(fl['server_write_ms'])} ms.")
    for k in ("FastK HTTP", "FastK Flight"):
        c = (ok(sysd).get(k) or {}).get("committer")
        if c:
            out += _fm_committer(d, k, c)
    out += _fsync_note(d)
    if d.get("http_body_bytes"):
        out += f" HTTP body: {d['http_body_bytes'] / 1e3:.0f} kB of JSON per minute."
    reg = d.get("registration") or {}
    if reg:
        out += f" Registration of the {reg['series']:,} series: {reg['s']:.2f} s ({reg['method']})."
    if d.get("method"):
        out += f"\n\nHow the runs are summarised: {d['method']}"
    out += "\n\nHow:" + _how(d)
    if d.get("checked") or _checked(d):
        out += "\n\nChecked:" + (f"\n- FastK: {d['checked']}" if d.get("checked") else "") + _checked(d)
    return out + errors_note(sysd)


def t_many_series(r: dict) -> str:
    d = r["many_series"]
    if "error" in d:
        return f"(failed: {d['error']})"
    sysd = d["systems"]
    rows = []
    shown = {k: v for k, v in sysd.items() if isinstance(v, dict) and v.get("load_s") is not None}
    for k, v in shown.items():
        reg = v.get("registration") or {}
        k = k + (" (failed after loading)" if "error" in v else "")
        rows.append([k, reg.get("s"), v["load_s"], v.get("until_folded_s"), v["rows_per_s"] / 1e6, v.get("files"),
                     v["du_bytes"] / 1e9 if v.get("du_bytes") is not None else None, v.get("inventory_total_files"),
                     v["inventory_total_bytes"] / 1e9 if v.get("inventory_total_bytes") is not None else None,
                     v.get("restart_s")])
    out = table(["way", "register s", "load s", "load + fold s", "M rows/s", "files on disk", "GB on disk (du)",
                 "inventory total_files", "inventory total GB", "restart s"], rows)
    out += (f"\n\n{d['series']:,} series x {d['rows_per_series']:,} 1h bars (one year) = {d['rows']:,} rows "
            f"({d['rows'] * 48 / 1e9:.2f} GB of raw int64 data). Load s: from the first write to the last "
            f"acknowledgement; load + fold s: until the write-ahead log is folded into chunk files (inventory "
            f"log.unfolded_rows 0); restart s: from spawning the server on the loaded store until /health answers "
            f"200 (page cache warm). Generating all the series' tables costs {d['generate_s']:.2f} s and is inside "
            f"every load time.")
    if d.get("note"):
        out += f" Note: {d['note']}."
    for k, v in shown.items():
        pk = v.get("log_peak")
        if pk:
            out += (f" {k}: write-ahead log at most {pk['bytes'] / 1e9:.2f} GB in {pk['segments']} segments, "
                    f"at most {pk['unfolded_rows']:,} rows ({pk['unfolded_bytes'] / 1e9:.2f} GB) waiting in memory "
                    f"to be folded (sampled every 0.5 s)"
                    + (f"; server peak RSS {v['peak_rss_bytes'] / 1e9:.2f} GB" if v.get("peak_rss_bytes") else "")
                    + ".")
    for k, v in shown.items():
        if v.get("du_bytes_compressed") is not None:
            out += (f" {k}, after `POST /v1/admin/compact` ({v['compact_s']:.1f} s; the background pass does the "
                    f"same once a month is `storage.compress_after_s` old): {v['files_compressed']:,} files, "
                    f"{v['du_bytes_compressed'] / 1e9:.2f} GB on disk (du), inventory total_bytes "
                    f"{v['inventory_total_bytes_compressed'] / 1e9:.2f} GB: "
                    f"{v['inventory_total_bytes_compressed'] / d['rows']:.2f} B per bar.")
    regs = {v["registration"]["method"] for v in ok(sysd).values() if v.get("registration")}
    if regs:
        out += " Registration: " + "; ".join(sorted(regs)) + "."
    out += _many_cross(d)
    out += "\n\nHow:" + _how(d)
    if _checked(d):
        out += "\n\nChecked:" + _checked(d)
    return out + errors_note(sysd)


def _many_cross(d: dict) -> str:
    """The cross-section questions of many_series: first call and warm median per way."""
    rows = []
    for way, v in d["systems"].items():
        cross = v.get("cross") if isinstance(v, dict) else None
        if way == "SQLite" and isinstance(v, dict):
            cross = {k: x for k, x in v.items() if isinstance(x, dict) and "first_ms" in x}
        for q, x in (cross or {}).items():
            if isinstance(x, dict) and "first_ms" in x:
                rows.append([way, q, x["first_ms"], x["warm"]["p50_ms"], x["checked_answers"]])
    if not rows:
        return ""
    how = d.get("cross_how") or {}
    return ("\n\nCross sections of the loaded store (" + how.get("questions", "") + "):\n\n"
            + table(["way", "question", "first call ms", "warm p50 ms", "answers checked"], rows))


def feeds_charts(r: dict, out: pathlib.Path) -> list[pathlib.Path]:
    """The feed charts, for whichever of those workloads ran."""
    made = []
    f = (r.get("feed") or {}).get("systems") or {}
    if ok(f):
        out.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
        _barh(axes[0], f, "writes_per_s", 1, "writes/s (higher is better)", "One 1m bar per write, 8 writers",
              log=True)
        _barh(axes[1], f, "p99_ms", 1, "p99 ms (lower is better)", "One 1m bar per write: p99 latency", log=True)
        p = out / "feed.png"
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    m = (r.get("feed_many") or {}).get("systems") or {}
    if ok(m):
        out.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(8, 3))
        _barh(ax, m, "median_ms", 1, "ms, median (lower is better)",
              f"One minute of {r['feed_many']['series']:,} bars as one write", log=True)
        ax.axvline(r["feed_many"].get("target_ms", 5.0), color="#d62728", linestyle="--", linewidth=1)
        p = out / "feed_many.png"
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    return made


# --------------------------------------------------------------------------- compression


def t_compression(r: dict) -> str:
    d = r["compression"]
    if "error" in d:
        return f"(failed: {d['error']})"
    n = d["rows"]
    out = []
    for key, what in (("codecs_kline", f"{n:,} 1m bars of {d['symbol']} (calendar 2024), columns ts, open, high, "
                                        f"low, close, volume as int64"),
                      ("codecs_scalar", f"{d['scalar_rows']:,} rows of the scalar dataset, columns ts, value "
                                        f"(int64)")):
        c = d.get(key)
        if not c:
            continue
        rows = [[k, v["bytes_per_row"], f"{v['ratio']:.1f}x", v["compress_mb_s"], v["decompress_mb_s"]]
                for k, v in c["codecs"].items()]
        out.append(f"Codecs on {what} (sum over columns; speed in MB of raw column bytes/s, best of 3):\n\n"
                   + table(["codec", "bytes/row", "ratio", "compress MB/s", "decompress MB/s"], rows))
    b, a = d["fastk_before"], d["fastk_after"]
    kb, ka = b["per_kind"].get("kline", {}), a["per_kind"].get("kline", {})
    sb, sa = b["per_kind"].get("scalar", {}), a["per_kind"].get("scalar", {})
    fk_k, fk_s = ka.get("bytes"), sa.get("bytes")
    disk_rows = [
        ["FastK before compact (inventory bytes)", kb.get("bytes"), sb.get("bytes")],
        ["FastK raw equivalent (inventory raw_bytes, after)", ka.get("raw_bytes"), sa.get("raw_bytes")],
        ["FastK after compact (inventory bytes)", fk_k, fk_s],
    ]
    suf = a.get("by_kind_suffix") or {}
    if "scalar *.chunk" in suf:
        disk_rows.append(["FastK after compact, .chunk files only (scalar without its .vidx value index)",
                          suf.get("kline *.chunk"), suf.get("scalar *.chunk")])
    peers = d.get("peers") or {}
    for k, v in peers.items():
        if "error" not in v:
            disk_rows.append([k, v["kline_bytes"], v["scalar_bytes"]])
    rows = [[w, kb_ / n if kb_ is not None else None, sb_ / d["scalar_rows"] if sb_ is not None else None,
             f"{fk_k / kb_:.2f}x" if fk_k and kb_ else "n/a"] for w, kb_, sb_ in disk_rows]
    out.append("On disk, bytes per row:\n\n" + table(["store", "kline bytes/bar", "scalar bytes/row",
                                                       "FastK compressed / this (kline)"], rows))
    du_line = (f"Whole compressed store directory (apparent size, like `du -sb`, bars and scalar series plus "
               f"metadata): {b['root_apparent_bytes']:,} B before compact, {a['root_apparent_bytes']:,} B after "
               f"({b['root_apparent_bytes'] / max(a['root_apparent_bytes'], 1):.1f}x); inventory total_bytes "
               f"{fmt(b.get('total_bytes'))} -> {fmt(a.get('total_bytes'))}, total_raw_bytes "
               f"{fmt(a.get('total_raw_bytes'))}. Compact: {d['compact']['seconds']:.2f} s, actions "
               f"{d['compact']['action_kinds']}.")
    sb_, sa_ = b.get("by_kind_suffix") or {}, a.get("by_kind_suffix") or {}
    if sb_:
        du_line += " Series files by kind and suffix (apparent bytes, before -> after): " + ", ".join(
            f"{k} {v:,} -> {sa_.get(k, 0):,}" for k, v in sb_.items()) + "."
    verdicts = []
    for k, v in peers.items():
        if "error" in v:
            verdicts.append(f"{k}: failed ({v['error']})")
        elif fk_k is not None:
            verdicts.append(f"FastK compressed ≤ {k} (bars): {_verdict(fk_k <= v['kline_bytes'])} "
                            f"({fk_k / n:.2f} vs {v['kline_bytes'] / n:.2f} B/bar)"
                            + (f"; scalar: {_verdict(fk_s <= v['scalar_bytes'])} ({fk_s / d['scalar_rows']:.2f} vs "
                               f"{v['scalar_bytes'] / d['scalar_rows']:.2f} B/row)" if fk_s is not None else ""))
    out.append(du_line + "\n\n" + "\n".join(f"- {x}" for x in verdicts))
    reads = d.get("reads") or {}
    rows = [[k, v["reps"], v["median_ms"], v["best_ms"], v["rows_per_s"] / 1e6, v["gb_s"],
             f"{v['vs_uncompressed']:.2f}"] for k, v in reads.items()]
    out.append(f"One year ({n:,} bars, {d.get('arrow_bytes', 0) / 1e6:.0f} MB of Arrow) into Polars over Flight "
               f"(loopback TCP), median of the reps:\n\n"
               + table(["read", "reps", "median ms", "best ms", "M rows/s", "GB/s", "throughput vs uncompressed"],
                       rows))
    warm = reads.get("compressed warm (repeat reads)")
    cold = reads.get("compressed cold (first read: decompress)")
    if warm:
        out.append(f"- Target compressed warm ≥ 80% of uncompressed throughput: "
                   f"{_verdict(warm['vs_uncompressed'] >= 0.8)} ({warm['vs_uncompressed'] * 100:.0f}%)"
                   + (f"; cold (decompressing): {cold['vs_uncompressed'] * 100:.0f}% (no target)" if cold else ""))
    how = [
        "Codecs: python zstandard (level 3), lz4.frame (default), pcodec.standalone.simple_compress (default "
        "ChunkConfig) on each int64 column separately; delta + zstd: ts delta of delta, other columns delta; "
        "best of 3 timings",
        "FastK: two stores loaded alike over Flight DoPut (the bars and the scalar rows): reference with "
        "storage.compression = none, compressed store with compress_after_s = 0 (background pass at 1 day, so "
        "nothing compresses before POST /v1/admin/compact {\"dry_run\": false}); sizes from "
        "/inventory?partitions=false",
        "Parquet: Polars write_parquet(compression='zstd'), default level, file size; ArcticDB: LMDB library "
        "directory allocated bytes (as the disk workload)",
        f"Reads: FastK Flight DoGet of the year into Polars (as workloads.year_to_polars), uncompressed vs "
        f"compressed before compact interleaved; cold = first read right after compact plus the first read after "
        f"each of {d.get('cold_restarts')} server restarts (OS page cache warm, FastK decompressed cache empty); "
        f"warm interleaved with the reference store",
    ]
    out.append("How:\n" + "".join(f"\n- {x}" for x in how))
    if _checked_how(d):
        out.append("Checked:\n" + _checked_how(d))
    return "\n\n".join(out)

MARKET_SECTIONS = ("market_resample", "market_asof", "market_coverage")

def _s100k_rows(d: dict) -> list[list]:
    """The figures of the 100,000-series store that the run measured: a run that failed
    part way keeps those before the failure, so a row whose figures are absent is left out."""
    gb = lambda b: f"{b / 1e9:.2f} GB" if b is not None else "n/a"  # noqa: E731
    mb = lambda b: f"{b / 1e6:.0f} MB" if b is not None else "n/a"  # noqa: E731
    has = lambda *keys: any(d.get(k) is not None for k in keys)  # noqa: E731
    reg = d.get("registration") or {}
    rows = []
    if reg.get("s") is not None:
        rows.append(["register every series (one request)", f"{reg['s']:.2f} s"])
    if d.get("load_s"):
        rows.append(["load (many-series DoPuts)", f"{d['load_s']:.1f} s"
                     + (f" ({d['rows'] / d['load_s'] / 1e6:.2f} M rows/s)" if d.get("rows") else "")])
    if has("stop_fold_s"):
        # Runs before storage.fold_on_stop (default false) folded the log at the stop.
        stop = ("then a clean stop, which folds the log" if d.get("stop_folds", True)
                else "then a clean stop (the log is left to the restart's replay)")
        rows.append([stop, f"{d['stop_fold_s']:.1f} s"])
    if has("files", "du_bytes"):
        rows.append(["files / bytes on disk (du)", f"{fmt(d.get('files'))} / {gb(d.get('du_bytes'))}"])
    if has("restart_s"):
        rows.append(["restart (spawn to /health 200)", f"{d['restart_s']:.2f} s"])
    if has("rss_open_bytes", "rss_before_read_bytes", "rss_after_read_bytes"):
        rows.append(["RSS after the open / before reading / after reading every series once",
                     f"{mb(d.get('rss_open_bytes'))} / {mb(d.get('rss_before_read_bytes'))} / "
                     f"{mb(d.get('rss_after_read_bytes'))}"])
    if has("read_all_s"):
        rows.append(["read every series once (GetFlightInfo endpoints on 4 threads)",
                     f"{d['read_all_s']:.1f} s over {fmt(d.get('read_all_endpoints'))} endpoints"])
    if has("inventory_page_bytes", "inventory_whole_bytes"):
        rows.append(["/inventory page / whole, bytes",
                     f"{fmt(d.get('inventory_page_bytes'))} / {fmt(d.get('inventory_whole_bytes'))}"])
    return rows


def t_series_100k(r: dict) -> str:
    d = r["series_100k"]
    rows = _s100k_rows(d)
    lat = d.get("latency") or {}
    if "error" in d and not rows and not lat:
        return f"(failed: {d['error']})"
    parts = [f"**Failed**: {d['error']}. The figures below were measured before the failure."] if "error" in d else []
    if rows:
        parts.append(table(["what", "figure"], rows))
    if lat:
        parts.append(table(["request", "calls", "p50 ms", "p90 ms", "max ms"],
                           [[k, v.get("n"), v.get("p50_ms"), v.get("p90_ms"), v.get("max_ms")]
                            for k, v in lat.items()]))
    if d.get("series") is not None:
        mapped = f", mapped after the reads {fmt(d['mapped_files'])}" if d.get("mapped_files") is not None else ""
        parts.append(f"{d['series']:,} series x {fmt(d.get('rows_per_series'))} 1h bars = {fmt(d.get('rows'))} rows. "
                     f"Mapping budget fastk_mapped_files_max {fmt(d.get('mapped_files_max'))}{mapped}.")
    goals = d.get("goals") or {}
    if goals:
        parts.append("\n".join(f"- {k}: {'met' if v else '**not met**'}" for k, v in goals.items()))
    if d.get("how"):
        parts.append("How: " + d["how"])
    if _checked_how(d):
        parts.append("Checked: " + _checked_how(d))
    return "\n\n".join(parts)


def t_shards(r: dict) -> str:
    d = r["shards"]
    if "error" in d:
        return f"(failed: {d['error']})"
    rows = []
    for name, by in d["layouts"].items():
        one = by.get("1") or by.get(1)
        for k, v in by.items():
            rows.append([name, k, v["rows"], v["median_ms"], v["best_ms"], v["gb_s"],
                         one["median_ms"] / v["median_ms"] if one else None])
    out = table(["read", "nodes", "rows", "median ms", "best ms", "GB/s", "vs one node"], rows)
    out += "\n\nHow: " + d.get("how", "")
    q = d.get("sql")
    if q:
        one = q["layouts"].get("1") or q["layouts"].get(1)
        srows = []
        for k, v in q["layouts"].items():
            srows.append([f"FastK, {k} node(s)", v["median_ms"], v["best_ms"], v["loopback_bytes"] / 1e3,
                          " / ".join(f"{t:g}" for t in v["worker_tasks_per_query"]),
                          one["median_ms"] / v["median_ms"] if one else None])
        dk = q.get("duckdb")
        if dk:
            srows.append(["DuckDB (one process)", dk["median_ms"], dk["best_ms"], None, "",
                          one["median_ms"] / dk["median_ms"] if one else None])
        out += ("\n\n**Distributed SQL** (`cluster.sql = \"distributed\"` with 2 and 3 nodes), asked of the "
                f"first node: `{q['query']}`\n\n")
        out += table(["system", "median ms", "best ms", "kB on loopback per query", "stages run per node",
                      "rate vs one node"], srows)
        out += ("\n\nAll nodes share one 2-core host here, so the times are not a cluster's. What carries over "
                "to a cluster is each node's share of the scan (its own symbols) and the bytes that cross the "
                "network: partial aggregates, one row per symbol and node, not bars. A gain from more processes "
                "on this host says that one node leaves the cores idle on this query, not how a cluster scales.")
    if _checked_how(d):
        out += "\n\nChecked: " + _checked_how(d)
    return out


def t_tls(r: dict) -> str:
    """The `tls` workload (tls.py): the year into Polars over plain Flight and over TLS."""
    d = r["tls"]
    if "error" in d:
        return f"(failed: {d['error']})"
    sysd = d["systems"]
    rows = []
    for k, v in ok(sysd).items():
        # Each client against its own plain reads: pyarrow's and the Rust client's.
        plain = sysd.get("FastK Flight (plain)" + (", Rust client" if k.endswith("Rust client") else ""), {})
        vs = v["median_s"] / plain["median_s"] if plain.get("median_s") else None
        rows.append([k, v["median_ms"], v["best_ms"], v.get("p99_ms"), v["gb_s"], v.get("connect_ms"),
                     f"{vs:.3f}x" if vs else "n/a"])
    out = table(["way", "median ms", "best ms", "p99 ms", "GB/s", "new connection ms", "time vs plain"], rows)
    out += (f"\n\n{d['rows']:,} 1m bars of {d['symbol']} ({d['bytes'] / 1e6:.0f} MB of Arrow data) into a "
            f"Polars DataFrame; {d['rounds']} rounds of {d['reps']} timed reads per way, every answer checked. "
            f"TLS / plain: {fmt(d.get('tls_vs_plain'), 3)} (medians), {fmt(d.get('tls_vs_plain_best'), 3)} "
            f"(best times); per round: "
            + (", ".join(f"{x:.3f}" for x in d.get("tls_vs_plain_rounds") or []) or "n/a")
            + f". A new connection through its first call, TLS / plain: {fmt(d.get('connect_tls_vs_plain'), 2)}.")
    if d.get("rust_tls_vs_plain") is not None:
        out += (f" The Rust arrow-flight client (rustls, as the server), TLS / plain: "
                f"{fmt(d['rust_tls_vs_plain'], 3)} (medians), {fmt(d.get('rust_tls_vs_plain_best'), 3)} (best "
                "times): TLS with rustls on both ends, apart from pyarrow's gRPC client.")
    out += "\n\nHow:" + _how(d)
    if _checked_how(d):
        out += "\n\nChecked: " + _checked_how(d)
    return out + errors_note(sysd)


def t_snapshots(r: dict) -> str:
    """The `snapshots` workload (snapshots.py): what a snapshot keeps after a year of
    corrections, and a read through it against the live read, FastK and ArcticDB."""
    d = r["snapshots"]
    if "error" in d:
        return f"(failed: {d['error']})"
    rows = []
    fk, ac = d.get("FastK"), d.get("ArcticDB")
    if fk:
        kept = fk["snapshot_only_bytes"]
        rows.append(["FastK", fk["live_bytes"], kept, kept / fk["live_bytes"] if fk["live_bytes"] else None,
                     fk["create_ms"], fk["rewrite_s"], fk["read_ms"]["live"], fk["read_ms"]["snapshot"],
                     fk["read_ms"]["snapshot"] / fk["read_ms"]["live"]])
    if ac:
        kept = ac["disk_after"] - ac["disk_before"]
        rows.append(["ArcticDB " + ac.get("version", ""), ac["disk_before"], kept,
                     kept / ac["disk_before"] if ac["disk_before"] else None, ac["create_ms"], ac["rewrite_s"],
                     ac["read_ms"]["live"], ac["read_ms"]["snapshot"],
                     ac["read_ms"]["snapshot"] / ac["read_ms"]["live"]])
    out = table(["system", "live bytes", "bytes kept for the snapshot", "kept / live", "snapshot ms",
                 "corrections s", "live read ms", "snapshot read ms", "snapshot / live read"], rows)
    if fk and ac:
        out += (f"\n\nSnapshot read, FastK's time / ArcticDB's: "
                f"{fk['read_ms']['snapshot'] / ac['read_ms']['snapshot']:.2f}; bytes kept for the snapshot, "
                f"FastK / ArcticDB: {fk['snapshot_only_bytes'] / max(ac['disk_after'] - ac['disk_before'], 1):.2f}.")
    out += "\n\nHow: " + d.get("how", "")
    out += f"\n\nChecked: {d.get('checked', 0)} answers (row count and sums of ts, open, close, volume)."
    return out


def t_derived(r: dict) -> str:
    """The `derived` workload (derived.py): 1h and 1d bars read from derived series,
    from the resample on read and from DuckDB's precomputed tables; the one-bar feed
    with and without three rules."""
    d = r["derived"]
    if "error" in d:
        return f"(failed: {d['error']})"
    fk, dk = d.get("FastK"), d.get("DuckDB")
    rows = []
    for tf in ("1h", "1d"):
        der = fk["read_ms"][f"derived_{tf}"]
        res = fk["read_ms"][f"resample_{tf}"]
        duck = dk["read_ms"][tf] if dk else None
        rows.append([tf, fk["answers"][tf][0], der, res, res / der, duck, der / duck if duck else None])
    out = table(["timeframe", "bars", "FastK derived ms", "FastK resample on read ms", "resample / derived",
                 "DuckDB precomputed ms", "FastK derived / DuckDB"], rows)
    feed = fk["feed_writes_per_s"]
    out += (f"\n\nOne-bar feed over HTTP: {feed['three_rules']:.0f} writes/s to a symbol three rules "
            f"(5m, 1h, 1d) derive from, {feed['no_rule']:.0f} to one no rule names "
            f"({feed['three_rules'] / feed['no_rule']:.2f}x). Materializing the whole history after the rules "
            f"were made took {fk['materialize_s']:.1f} s.")
    if dk:
        out += (f" DuckDB precomputed its tables in {dk['precompute_s']['1h']:.2f} s (1h) and "
                f"{dk['precompute_s']['1d']:.2f} s (1d), once, by hand.")
    out += "\n\nHow: " + d.get("how", "")
    out += f"\n\nChecked: {d.get('checked', 0)} answers (row count and the sums of every column)."
    return out


def t_factors_100k(r: dict) -> str:
    """The `factors_100k` workload (factors.py): 100,000 scalar series of 3 rows,
    registered, loaded, stopped, restarted and folded, against DuckDB and SQLite files."""
    d = r["factors_100k"]
    if "error" in d:
        return f"(failed: {d['error']})"
    fk, dk, sq = d["FastK"], d.get("DuckDB", {}), d.get("SQLite", {})
    duck = dk.get("bytes")

    def vs(b):
        return f"{b / duck:.2f}x" if duck else None

    rows = [
        ["register every series (one request)", f"{fk['register_s']:.2f} s", None, None],
        ["files / bytes after the registration", f"{fk['files_after_register']:,}",
         f"{fk['du_after_register'] / 1e6:.1f} MB", vs(fk["du_after_register"])],
        ["load (one many-series POST per factor)", f"{fk['load_s']:.2f} s", None, None],
        ["clean stop (the log is left to the restart)", f"{fk['stop_s']:.2f} s", None, None],
        ["files / bytes after the stop", f"{fk['files_after_stop']:,}", f"{fk['du_after_stop'] / 1e6:.1f} MB",
         vs(fk["du_after_stop"])],
        ["restart to /health 200; idle RSS", f"{fk['restart_s']:.2f} s", f"{(fk['idle_rss_bytes'] or 0) / 1e6:.0f} MB",
         None],
        ["a stop that folds every series (small ones into the catalog)", f"{fk['fold_stop_s']:.2f} s", None, None],
        ["files / bytes once folded", f"{fk['files_folded']:,}", f"{fk['du_folded'] / 1e6:.1f} MB",
         vs(fk["du_folded"])],
        ["restart when folded; idle RSS", f"{fk['restart_folded_s']:.2f} s",
         f"{(fk['idle_rss_folded_bytes'] or 0) / 1e6:.0f} MB", None],
        ["DuckDB: load; file", f"{dk.get('load_s', 0):.2f} s", f"{(duck or 0) / 1e6:.1f} MB", "1.00x"],
        ["SQLite: load; file", f"{sq.get('load_s', 0):.2f} s", f"{sq.get('bytes', 0) / 1e6:.1f} MB", vs(sq.get("bytes", 0))],
    ]
    sl = fk.get("scan")
    if sl:
        def ms2(x):
            return f"{x['scan_first_s'] * 1e3:.0f} / {x['scan_second_s'] * 1e3:.0f} ms"

        def mb(b):
            return f"{(b or 0) / 1e6:.0f} MB"

        rows[-2:-2] = [
            [f"SQL count and sum of every value, first / second (a start with storage.dormant_after_s = "
             f"{sl['dormant_after_s']}); RSS before", ms2(sl), mb(sl["rss_before_scan_bytes"]), None],
            ["RSS after the scan", None, mb(sl["rss_after_scan_bytes"]), None],
            [f"every series asleep again {sl['asleep_s']:.1f} s later"
             + ("" if sl["all_asleep"] else " (NOT all)") + "; RSS; the scan again",
             f"{sl['scan_after_sleep_s'] * 1e3:.0f} ms", mb(sl["rss_asleep_bytes"]), None],
        ]
        for name, peer in (("DuckDB", dk), ("SQLite", sq)):
            if "scan_first_s" in peer:
                rows.append([f"{name}: the same count and sum, new connection, first / second", ms2(peer), None,
                             None])
    out = table(["FastK, then the peers", "time / files", "bytes / RSS", "bytes / DuckDB's"], rows)
    out += f"\n\n{d['series']:,} series, {d['rows']:,} rows. How: " + d.get("how", "")
    out += (f"\n\nChecked: {d.get('checked', 0)} answers (every value of 9 series twice, the row counts"
            + (", every scan's count and sum" if sl else "") + ").")
    return out


def t_ticks(r: dict) -> str:
    """The `ticks` workload (ticks.py): bulk ingest of a day of trades, one symbol-day
    into Polars against the Flight ceiling, the tape, bars from trades, trades with the
    quote in force and bytes per trade and quote, against ArcticDB, DuckDB, chDB and
    Polars. Each ratio is FastK's figure over the best peer's (time: below 1 wins)."""
    d = r["ticks"]
    if "error" in d:
        return f"(failed: {d['error']})"
    out = (f"{d['trades']:,} trades of {d['symbols']} symbols in one day "
           f"({d['same_ns_share'] * 100:.0f}% share a nanosecond with the trade before, up to {d['max_per_ns']} in one); "
           f"{d['quotes']:,} quotes of {d['quote_symbol']}.\n\n")
    ing = d.get("ingest", {})
    rows = []
    for name in ("FastK", "ArcticDB", "DuckDB", "chDB"):
        v = ing.get(name, {})
        if "rows_per_s" in v:
            rows.append([name, v["median_s"], v["rows_per_s"] / 1e6])
        elif v:
            rows.append([name, v.get("error", "n/a"), None])
    peers = [ing[k]["rows_per_s"] for k in ("ArcticDB", "DuckDB", "chDB") if "rows_per_s" in ing.get(k, {})]
    if "rows_per_s" in ing.get("FastK", {}) and peers:
        rows.append(["FastK / best peer (rows/s)", None, ing["FastK"]["rows_per_s"] / max(peers)])
    out += "Bulk ingest (median of the loads):\n\n" + table(["system", "seconds", "M trades/s"], rows)
    ro = d.get("read_one")
    if ro:
        out += ("\n\n" + table(["one symbol-day into Polars over Flight", "trades", "FastK ms", "ceiling ms",
                                  "FastK / ceiling (throughput)"],
                                 [[ro["symbol"], ro["rows"], ro["fastk_ms"], ro["ceiling_ms"], ro["of_ceiling"]]]))

    def timed_rows(key: str, systems: tuple) -> str:
        v = d.get(key, {})
        got = [(s, v[s]) for s in systems if s in v]
        peer = [ms for s, ms in got if s != "FastK"]
        rows = [[s, ms, ms / v["FastK"] if "FastK" in v and s != "FastK" else None] for s, ms in got]
        if "FastK" in v and peer:
            rows.append(["FastK / best peer (time)", v["FastK"] / min(peer), None])
        return table(["system", "ms", "peer / FastK"], rows)

    if "tape" in d:
        out += f"\n\nThe tape, every symbol for one hour ({d['tape']['rows']:,} trades):\n\n"
        out += timed_rows("tape", ("FastK", "DuckDB", "Polars"))
    if "bars" in d:
        out += f"\n\n1m bars from trades, every symbol for the day ({d['bars']['bars']:,} bars):\n\n"
        out += timed_rows("bars", ("FastK", "DuckDB", "chDB", "Polars"))
    if "trade_quote" in d:
        tq = d["trade_quote"]
        out += (f"\n\nTrades with the quote in force, {tq['symbol']} ({tq['trades']:,} trades, "
                f"{tq['quotes']:,} quotes):\n\n")
        out += timed_rows("trade_quote", ("FastK", "DuckDB", "chDB", "Polars"))
    b = d.get("bytes")
    if b:
        rows = [[k, v.get("per_trade"), v.get("per_quote"), v.get("file_bytes", v.get("trade_bytes"))]
                for k, v in b.items() if isinstance(v, dict)]
        out += "\n\nBytes once sealed:\n\n" + table(["system", "bytes per trade", "bytes per quote", "bytes"], rows)
    lf = d.get("live_feed")
    if lf:
        out += (f"\n\nThe live feed: {lf['handlers']} handlers, each sending {lf['requests_per_handler']} requests "
                f"of {lf['trades_per_symbol']} trades for each of its {lf['symbols_per_handler']} symbols "
                f"({lf['trades_per_request']:,} trades per request) back to back, each acknowledged durable:\n\n")
        rows = []
        for name in ("FastK", "DuckDB", "chDB"):
            v = lf.get(name, {})
            if "trades_per_s" in v:
                how = "" if v.get("parallel", True) else " (one handler at a time)"
                rows.append([name + how, v["trades_per_s"] / 1e6, v["p50_ms"], v["p99_ms"], v["max_ms"]])
            elif v:
                rows.append([name, v.get("error", "n/a"), None, None, None])
        peers = [lf[k]["trades_per_s"] for k in ("DuckDB", "chDB") if "trades_per_s" in lf.get(k, {})]
        if "trades_per_s" in lf.get("FastK", {}) and peers:
            rows.append(["FastK / best peer (trades/s)", lf["FastK"]["trades_per_s"] / max(peers), None, None, None])
        out += table(["system", "M trades/s", "p50 ms", "p99 ms", "max ms"], rows)
    for k, why in d.get("not_measured", {}).items():
        out += f"\n\nNot measured: {k}: {why}."
    out += f"\n\nChecked: {d.get('checked', 0)} answers (load sums, columns, the tape's order, bars and " \
           "trade_quote value by value against pandas, the live feed's sums and numbered seq)."
    return out


SECTIONS = {
    "machine": t_machine, "versions": t_versions,
    "limits": t_limits, "ingest": t_ingest, "year": t_year,
    "day_ranges": lambda r: t_latency(r["day_ranges"]), "latest": lambda r: t_latency(r["latest"]),
    "predicate": t_predicate, "disk": t_disk, "http": t_http, "flight": t_flight, "rust": t_rust,
    "sql_year": t_sql_year, "sql_resample": t_sql_resample, "sql_predicate": t_sql_predicate,
    "market_resample": t_market_resample, "market_asof": t_market_asof, "market_coverage": t_market_coverage,
    "colocated": t_colocated,
    "feed": t_feed, "feed_many": t_feed_many, "many_series": t_many_series, "series_100k": t_series_100k, "shards": t_shards,
    "compression": t_compression, "tls": t_tls, "snapshots": t_snapshots, "derived": t_derived,
    "factors_100k": t_factors_100k, "ticks": t_ticks,
}


def fill_markdown(text: str, r: dict, names=None) -> str:
    """Replaces each `<!-- bench:NAME -->...<!-- /bench:NAME -->` block with its table
    (only the blocks in `names`, when given). A generated page (docs/benchmarks.md) is
    rewritten whole instead, from a full run only (`write_page` is the better call: it
    knows where the results file is; this assumes scripts/bench.sh's place for it)."""
    if GENERATED in text and names is None:
        if not is_page_run(r):
            return text
        return page(r, PAGE_RESULTS, _rel(REPO / PAGE_RESULTS, REPO / "docs"))
    for name, fn in SECTIONS.items():
        if names is not None and name not in names:
            continue
        begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < 0:
            continue
        try:
            body = fn(r)
        except Exception as e:  # noqa: BLE001 - a missing workload leaves a note, not a crash
            body = f"(no result: {type(e).__name__}: {e})"
        text = text[: i + len(begin)] + "\n" + body + "\n" + text[j:]
    return text


def all_tables(r: dict, names=None) -> str:
    return "\n\n".join(f"## {name}\n\n{fill_markdown(f'<!-- bench:{name} --><!-- /bench:{name} -->', r)}"
                       for name in SECTIONS if names is None or name in names)


# --------------------------------------------------------------------------- charts


def _color(label: str) -> str:
    if label in COLORS:
        return COLORS[label]
    # Variants ("PostgreSQL (LATERAL)", "FastK HTTP (20 batches of 100)") take their system's colour.
    for k in sorted(COLORS, key=len, reverse=True):
        if label.startswith(k + " "):
            return COLORS[k]
    return "#1f77b4"


def _barh(ax, d: dict, key: str, scale: float, xlabel: str, title: str, log: bool = False):
    items = [(k, v[key] * scale) for k, v in ok(d).items() if v.get(key)]
    items.sort(key=lambda kv: kv[1])
    ax.barh([k for k, _ in items], [v for _, v in items], color=[_color(k) for k, _ in items])
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:,.3g}", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)


def _plain_log_ticks(axis) -> None:
    """Log axes labelled 0.1, 1, 10 ... rather than 10^k, without crowded minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def charts(r: dict, out: pathlib.Path) -> list[pathlib.Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = []

    def save(fig, name):
        p = out / name
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    _barh(axes[0], r["ingest"], "kline_rows_per_s", 1e-6, "M rows/s (higher is better)",
          f"1. Bulk ingest, kline ({r['dataset']['kline_rows']:,} rows)", log=True)
    _barh(axes[1], r["ingest"], "scalar_rows_per_s", 1e-6, "M rows/s (higher is better)",
          f"1. Bulk ingest, scalar ({r['dataset']['scalar_rows']:,} rows)", log=True)
    save(fig, "ingest.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    _barh(ax, r["year_to_polars"], "median_s", 1e3, "ms, median (lower is better)",
          "2. One symbol, one year of 1m bars into a Polars DataFrame", log=True)
    save(fig, "year_to_polars.png")

    for key, name, title in [("day_ranges", "day_ranges.png", "3. Random one-day ranges (1,440 bars) into Polars"),
                             ("latest", "latest.png", "4. Latest 100 bars into Polars")]:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        _barh(axes[0], r[key], "p50_ms", 1, "p50 ms (lower is better)", f"{title}: p50", log=True)
        _barh(axes[1], r[key], "p99_ms", 1, "p99 ms (lower is better)", f"{title}: p99", log=True)
        save(fig, name)

    sels = list(r["predicate"])
    labels = []
    for s in sels:
        for k, v in ok(r["predicate"][s]["systems"]).items():
            if k not in labels:
                labels.append(k)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(1, len(labels))
    for i, k in enumerate(labels):
        ys = [ok(r["predicate"][s]["systems"]).get(k, {}).get("median_ms") or 0 for s in sels]
        ax.bar([j + i * width for j in range(len(sels))], ys, width, label=k, color=_color(k))
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(sels))])
    ax.set_xticklabels([f"{s}% ({r['predicate'][s]['matches']:,} rows)" for s in sels])
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_ylabel("ms, median (lower is better)")
    ax.set_title(f"5. Scalar predicate on {r['dataset']['scalar_rows']:,} rows, matching ts into the client", fontsize=10)
    ax.legend(fontsize=8)
    save(fig, "predicate.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    _barh(axes[0], r["disk"], "kline_bytes_per_row", 1, "bytes per bar (lower is better; raw 48)", "6. Disk, kline")
    _barh(axes[1], r["disk"], "scalar_bytes_per_row", 1, "bytes per row (lower is better; raw 16)", "6. Disk, scalar")
    save(fig, "disk.png")

    res = r.get("sql_resample") or {}
    if ok(res.get("systems") or {}):
        fig, ax = plt.subplots(figsize=(8, 3))
        _barh(ax, res["systems"], "median_ms", 1, "ms, median (lower is better)",
              f"SQL: one year of 1m bars to {res['buckets']:,} 1h OHLCV buckets")
        save(fig, "sql_resample.png")
    return made + market_charts(r, out) + colocated_charts(r, out) + feeds_charts(r, out)


def colocated_charts(r: dict, out: pathlib.Path) -> list[pathlib.Path]:
    """The colocated chart, when that workload ran."""
    c = r.get("colocated") or {}
    if not ok(c.get("systems") or {}):
        return []
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3))
    _barh(ax, c["systems"], "median_ms", 1, "ms, median (lower is better)",
          f"One year of 1m bars ({c['rows']:,}) into Polars: local mapping, Unix socket, loopback TCP, in process")
    p = out / "colocated.png"
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return [p]


def market_charts(r: dict, out: pathlib.Path) -> list[pathlib.Path]:
    """The market-query charts, for whichever of those workloads ran."""
    out.mkdir(parents=True, exist_ok=True)
    made = []

    def save(fig, name):
        p = out / name
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    res = r.get("market_resample") or {}
    tfs = list(res.get("targets") or {})
    if tfs and any(ok(res["targets"][tf]["systems"]) for tf in tfs):
        fig, axes = plt.subplots(1, len(tfs), figsize=(6 * len(tfs), 3.5), squeeze=False)
        for ax, tf in zip(axes[0], tfs):
            _barh(ax, res["targets"][tf]["systems"], "median_ms", 1, "ms, median (lower is better)",
                  f"Resample {res['bars']:,} 1m bars to {tf} ({res['targets'][tf]['buckets']:,} buckets)", log=True)
        save(fig, "market_resample.png")
    a = r.get("market_asof") or {}
    if ok(a.get("systems") or {}):
        fig, ax = plt.subplots(figsize=(8, 4))
        _barh(ax, a["systems"], "median_ms", 1, "ms, median (lower is better)",
              f"As-of cross section: last bar at or before T of {a['series']:,} series", log=True)
        save(fig, "market_asof.png")
    c = r.get("market_coverage") or {}
    both = {**(c.get("systems") or {}), **(c.get("peers") or {})}
    if ok(both):
        fig, ax = plt.subplots(figsize=(8, 3))
        _barh(ax, both, "median_ms", 1, "ms, median (lower is better)",
              f"Coverage and gaps of {c['expected']:,} 1m grid points", log=True)
        ax.axvline(c.get("target_ms", 10.0), color="#d62728", linestyle="--", linewidth=1)
        save(fig, "market_coverage.png")
    return made


# --------------------------------------------------------------------------- the page
#
# docs/benchmarks.md is written whole by `write_page` from one full run's results.json:
# the headline, the losses, the machine and every result table come from that file and
# nothing else, so the page is a function of the file (`--check` compares them). The
# hand-written prose is PROSE below: it explains, it never carries a run's figure.

GENERATED = ("<!-- Generated by `python -m fastk_bench.report` from one full run's results.json; do not edit: "
             "the prose is PROSE in bench/fastk_bench/report.py, the figures come from the results file. -->")
PAGE_RESULTS = "bench/results/full/results.json"  # where scripts/bench.sh leaves a full run
PAGE_MAX_LINES = 400
REPO = pathlib.Path(__file__).resolve().parent.parent.parent
DUCKDB_TABLE = "DuckDB (table)"  # systems.DuckDBTable: DuckDB as a database, not a Parquet reader
SQL_FLIGHT_WAYS = ("FastK Flight SQL (ADBC)", "FastK Flight SQL (pyarrow.flight)")


def _way(label: str) -> str:
    """The client of a FastK SQL way: "FastK Flight SQL (ADBC)" -> "ADBC"."""
    return label.rsplit("(", 1)[-1].rstrip(")") if "(" in label else label


class Missing(Exception):
    """A headline figure the run does not have; its text is the table's cell."""


@dataclass
class Row:
    """One headline row. Ratios are (label, value): above 1, FastK is ahead."""

    workload: str
    key: str
    fastk: str = ""
    peer: str = ""
    ratios: list = field(default_factory=list)
    goals: list = field(default_factory=list)
    status: str | None = None
    loss: str | None = None


def is_page_run(r: dict) -> bool:
    """Only a full run of every workload may write the page (not --quick, not --only)."""
    return r.get("mode") == "full"


def _cell(text) -> str:
    """Text safe for one Markdown table cell (errors carry pipes and newlines)."""
    s = " ".join(str(text).split()).replace("|", "\\|")
    return s if len(s) <= 180 else s[:177] + "..."


def _why_absent(r: dict, name: str) -> str:
    why = (r.get("skipped") or {}).get(name)
    return f"skipped: {why}" if why else "not in this run"


def _section(r: dict, key: str) -> dict:
    """r[key], or Missing("not in this run" / "skipped: ..." / "failed: ...")."""
    d = r.get(key)
    if d is None:
        raise Missing(_why_absent(r, key))
    if isinstance(d, dict) and "error" in d:
        raise Missing(f"failed: {d['error']}")
    return d


def _entry(r: dict, d: dict, label: str) -> dict:
    """One system's result within a workload, or Missing with why it has none."""
    v = d.get(label)
    if v is None:
        why = (r.get("skipped") or {}).get(label)
        raise Missing(f"skipped: {why}" if why else f"no {label} result in this run")
    if isinstance(v, dict) and "error" in v:
        raise Missing(f"failed: {label}: {v['error']}")
    return v


def _rt(fastk: float | None, peer: float | None, lower_is_better: bool) -> float | None:
    """FastK's advantage over a peer: above 1, FastK is ahead."""
    if not fastk or not peer:
        return None
    return peer / fastk if lower_is_better else fastk / peer


def _met(ok_: bool | None) -> str:
    return "n/a" if ok_ is None else ("met" if ok_ else "**not met**")


def _x(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"**{v:.2f}x**" if v >= 1 else f"{v:.2f}x"


def _peer(name: str | None, figure: str) -> str:
    return f"{name} {figure}" if name else "no peer result"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else fmt(v)


def _mrows(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1e6:.1f}"


# --------------------------------------------------------------------------- headline rows


def h_ingest(r: dict, kind: str) -> Row:
    d = _section(r, "ingest")
    f = _entry(r, d, FASTK)
    key = f"{kind}_rows_per_s"
    peer, best = best_peer(d, key, False)
    fig = f"{_mrows(f.get(key))} M rows/s"
    c = ok(d).get(FASTK_CONCURRENT) or {}
    if kind == "kline" and c.get(key):
        fig += f"; {_mrows(c[key])} with 3 streams"
    if f.get("loads", 1) > 1:
        fig += f" (median of {f['loads']} loads)"
    row = Row("", "ingest", fig, _peer(peer, f"{_mrows(best)} M rows/s"), [("", _rt(f.get(key), best, False))])
    if kind == "kline":
        row.goals = [("at least the best peer", None if best is None else f[key] >= best)]
    else:
        arctic = (ok(d).get("ArcticDB") or {}).get(key)
        row.goals = [("at least ArcticDB", None if not arctic else f[key] >= arctic)]
    row.loss = "loss-ingest"
    return row


def h_year(r: dict) -> Row:
    d = _section(r, "year_to_polars")
    f = _entry(r, d, FASTK)
    peer, best = best_peer(d, "median_s", True)
    ceil = ceiling(d).get("median_s")
    share = ceil / f["median_s"] if ceil else None
    fig = f"{_ms(f['median_s'] * 1e3)} ms" + (f", {share:.0%} of the in-memory Flight ceiling" if share else "")
    rt = _rt(f["median_s"], best, True)
    return Row("", "year_to_polars", fig, _peer(peer, f"{_ms(best and best * 1e3)} ms"), [("", rt)],
               [("first", None if rt is None else rt > 1),
                ("90% of the ceiling", None if share is None else share >= 0.9)], loss="loss-year")


def _peers_cell(named: list[tuple[str | None, str]], unit: str) -> str:
    """`PostgreSQL 2.58 / 4.91 ms`, or `A 1.0 / B 2.0 ms` when the best peer differs."""
    names = {n for n, _ in named}
    if len(names) == 1 and None not in names:
        return f"{named[0][0]} {' / '.join(v for _, v in named)} {unit}".rstrip()
    return " / ".join(_peer(n, v) for n, v in named) + (f" {unit}" if unit else "")


def h_latency(r: dict, key: str) -> Row:
    d = _section(r, key)
    f = _entry(r, d, FASTK)
    named, ratios = [], []
    for q in ("p50_ms", "p99_ms"):
        peer, best = best_peer(d, q, True)
        named.append((peer, _ms(best)))
        ratios.append((q[:3], _rt(f[q], best, True)))
    firsts = [x for _, x in ratios]
    return Row("", key, f"{_ms(f['p50_ms'])} / {_ms(f['p99_ms'])} ms", _peers_cell(named, "ms"), ratios,
               [("first at p50 and p99", None if None in firsts else all(x > 1 for x in firsts))], loss="loss-latency")


def h_predicate(r: dict) -> Row:
    d = _section(r, "predicate")
    figs, named, ratios = [], [], []
    for sel, s in d.items():
        f = _entry(r, s["systems"], FASTK)
        peer, best = best_peer(s["systems"], "median_ms", True)
        figs.append(_ms(f["median_ms"]))
        named.append((peer, _ms(best)))
        ratios.append((f"{sel}%", _rt(f["median_ms"], best, True)))
    firsts = [x for _, x in ratios]
    return Row("", "predicate", " / ".join(figs) + " ms", _peers_cell(named, "ms"), ratios,
               [("first at every selectivity", None if None in firsts else all(x > 1 for x in firsts))],
               loss="loss-latency")


def h_disk(r: dict) -> Row:
    d = _section(r, "disk")
    f = _entry(r, d, FASTK)
    figs, named, ratios = [], [], []
    for kind in ("kline", "scalar"):
        key = f"{kind}_bytes_per_row"
        peer, best = best_peer(d, key, True)
        figs.append(fmt(f[key]))
        named.append((peer, _ms(best)))
        ratios.append((kind, _rt(f[key], best, True)))
    return Row("", "disk", " / ".join(figs) + " B per row (raw hot months)", _peers_cell(named, "B"), ratios,
               [("none here: sealed months are compressed, see the compression row", None)], loss="loss-disk")


def h_sql_year(r: dict) -> Row:
    d = _section(r, "sql_year")
    sysd = d["systems"]
    ways = [k for k in SQL_FLIGHT_WAYS if k in sysd]
    if not ways:
        raise Missing("no Flight SQL result in this run")
    shares = [(k, _entry(r, sysd, k).get("of_native")) for k in ways]
    fig = "; ".join(f"{_way(k)} {v:.0%} of native" for k, v in shares if v)
    native = next((v for k, v in ok(sysd).items() if "native" in k), {})
    return Row("", "sql_year", fig, f"FastK native DoGet {_ms(native.get('median_s', 0) * 1e3)} ms",
               [(_way(k), v) for k, v in shares],
               [(f"90% of native, {_way(k)}", None if v is None else v >= SQL_YEAR_TARGET)
                for k, v in shares], loss="loss-sql")


def h_sql_resample(r: dict) -> Row:
    d = _section(r, "sql_resample")
    sysd = d["systems"]
    f = _entry(r, sysd, "FastK Flight SQL (ADBC)")
    peer, best = best_peer(sysd, "median_ms", True)
    rt = _rt(f["median_ms"], best, True)
    return Row("", "sql_resample", f"{_ms(f['median_ms'])} ms (Flight SQL, ADBC)", _peer(peer, f"{_ms(best)} ms"),
               [("", rt)], [("first", None if rt is None else rt > 1)], loss="loss-sql")


def h_sql_predicate(r: dict) -> Row:
    d = _section(r, "sql_predicate")
    figs, ratios = [], []
    for sel, s in d["selectivities"].items():
        v = _entry(r, s["systems"], "FastK Flight SQL (ADBC)")
        figs.append(_ms(v["median_ms"]))
        ratios.append((f"{sel}%", 1 / v["vs_native"] if v.get("vs_native") else None))
    worst = [1 / x for _, x in ratios if x]
    return Row("", "sql_predicate", " / ".join(figs) + " ms (ADBC)", "FastK native predicate DoGet", ratios,
               [(f"within {SQL_PREDICATE_TARGET:g}x of native",
                 None if not worst else max(worst) <= SQL_PREDICATE_TARGET)],
               loss="loss-sql")


def _first_row(r: dict, key: str, sysd: dict, label: str = FASTK, note: str = "") -> Row:
    """FastK `label` against the fastest non-FastK way (median ms), goal: first."""
    f = _entry(r, sysd, label)
    peer, best = best_peer(sysd, "median_ms", True)
    rt = _rt(f["median_ms"], best, True)
    return Row("", key, f"{_ms(f['median_ms'])} ms{note}", _peer(peer, f"{_ms(best)} ms"), [("", rt)],
               [("first", None if rt is None else rt > 1)])


def h_market_resample(r: dict) -> Row:
    d = _section(r, "market_resample")
    tfs = list(d["targets"])
    figs, named, ratios = [], [], []
    for tf in tfs:
        sysd = d["targets"][tf]["systems"]
        f = _entry(r, sysd, FASTK)
        peer, best = best_peer(sysd, "median_ms", True)
        figs.append(_ms(f["median_ms"]))
        named.append((peer, _ms(best)))
        ratios.append((tf, _rt(f["median_ms"], best, True)))
    firsts = [None if x is None else x > 1 for _, x in ratios]
    return Row("", "market_resample", " / ".join(figs) + " ms", _peers_cell(named, "ms"), ratios,
               [("first", None if None in firsts else all(firsts))])


def h_market_asof(r: dict) -> Row:
    d = _section(r, "market_asof")
    return _first_row(r, "market_asof", d["systems"], note=f" for {d['series']:,} series")


def h_market_coverage(r: dict) -> Row:
    """Coverage: FastK HTTP against the peers' gap queries, cold (the first call after a
    restart) and warm when the run has both (`cold` / `warm`: label -> result), else
    warm only (`systems` and `peers`, as runs before the cold call), each with its goal."""
    d = _section(r, "market_coverage")
    target = d.get("target_ms", 10.0)
    phases = {"cold": d.get("cold"), "warm": d.get("warm") or {**(d.get("systems") or {}), **(d.get("peers") or {})}}
    figs, names, ratios, goals = [], [], [], []
    for phase, sysd in phases.items():
        if not sysd:
            continue
        f = _entry(r, sysd, HTTP)
        peer, best = best_peer(sysd, "median_ms", True)
        figs.append(f"{phase} {_ms(f['median_ms'])}")
        names.append(_peer(peer, f"{_ms(best)}"))
        ratios.append((phase, _rt(f["median_ms"], best, True)))
        goals.append((f"{phase} under {target:g} ms", f["median_ms"] < target))
    return Row("", "market_coverage", " / ".join(figs) + " ms (HTTP)", " / ".join(names) + " ms", ratios, goals)


def h_colocated(r: dict) -> Row:
    d = _section(r, "colocated")
    sysd = d["systems"]
    label = COLOCATED_LOCAL if COLOCATED_LOCAL in ok(sysd) else COLOCATED_UNIX
    row = _first_row(r, "colocated", sysd, label, note=f", {label.removeprefix('FastK ')}")
    row.goals = [("a co-located FastK way first", row.goals[0][1])]
    return row


def _feed_goals(ws: float, p99: float | None, t: dict) -> list:
    """The server's own targets, for any FastK feed row."""
    return [(f"{t.get('writes_per_s', 10_000):,}/s", ws >= t.get("writes_per_s", 10_000)),
            (f"p99 under {t.get('p99_ms', 10):g} ms", None if p99 is None else p99 < t.get("p99_ms", 10))]


def _h_feed_like(r: dict, d: dict, k: str) -> Row:
    """FastK driven by the peers' own Python threads: the row the ratios and the
    verdicts against SQLite and DuckDB come from."""
    t = d.get("targets") or {}
    f = _entry(r, d["systems"], k)
    ws, p99 = f["writes_per_s"], f.get("p99_ms")
    rt = _feed_ratios(d, f)
    leads = {p: x["writes_per_s"] for p, x in rt.items() if x and x.get("writes_per_s")}
    best = min(leads, key=leads.get) if leads else None  # the peer FastK leads least on writes/s: the best peer
    pv = ok(d["systems"]).get(best) or {}
    sqlite = [x["writes_per_s"] for p, x in rt.items() if p.startswith("SQLite") and x.get("writes_per_s")]
    duck = (rt.get("DuckDB") or {}).get("writes_per_s")
    ratios = [("writes/s", (rt.get(best) or {}).get("writes_per_s")), ("p99", (rt.get(best) or {}).get("p99"))]
    goals = _feed_goals(ws, p99, t) + [
        ("above SQLite", None if not sqlite else min(sqlite) > 1),
        (f"{t.get('vs_duckdb', 10):g}x DuckDB", None if not duck else duck >= t.get("vs_duckdb", 10))]
    peer = _peer(best, f"{pv['writes_per_s']:,.0f}/s, p99 {_ms(pv.get('p99_ms'))} ms" if pv else "")
    return Row(f"feed, {k.removeprefix('FastK ')}, like for like", "feed",
               f"{ws:,.0f} writes/s, p99 {_ms(p99)} ms", peer, ratios if best else [], goals, loss="loss-feed")


def _h_feed_wrk(r: dict, d: dict, k: str) -> Row:
    """FastK driven by wrk: the server's own targets only; no ratio, the peers ran
    under another load generator."""
    f = _entry(r, d["systems"], k)
    ws, p99 = f["writes_per_s"], f.get("p99_ms")
    way = k.removeprefix("FastK ") + ("" if "wrk" in k else " (wrk)")  # runs before the label named wrk
    return Row(f"feed, {way}", "feed", f"{ws:,.0f} writes/s, p99 {_ms(p99)} ms",
               "none: driven by wrk, the peers by Python threads", [], _feed_goals(ws, p99, d.get("targets") or {}),
               loss="loss-feed")


def h_feed(r: dict) -> list[Row]:
    """The one-bar feed: FastK driven by the peers' Python threads (ratios and every
    verdict), then FastK driven by wrk beside it (the server's targets, no ratio)."""
    d = _section(r, "feed")
    rows = []
    for driver, build in (("python-threads", _h_feed_like), ("wrk", _h_feed_wrk)):
        k = _feed_fastk(d, driver)
        if k is None:
            why = (d.get("skipped") or {}).get(FEED_WRK if driver == "wrk" else FEED_LIKE)
            way = "HTTP (wrk)" if driver == "wrk" else "HTTP (Python threads), like for like"
            rows.append(Row(f"feed, {way}", "feed",
                            status=f"skipped: {why}" if why else f"no FastK row driven by {driver} in this run"))
            continue
        try:
            rows.append(build(r, d, k))
        except Missing as e:
            way = k.removeprefix("FastK ") + (", like for like" if driver == "python-threads" else "")
            rows.append(Row(f"feed, {way}", "feed", status=str(e)))
    return rows


def h_feed_many(r: dict) -> Row:
    """A minute of every series as one write: each FastK way's median of its runs'
    medians (with their min..max) and p99 pooled over every run, against the peer whose
    median of run medians is lowest."""
    d = _section(r, "feed_many")
    sysd = d["systems"]
    target = d.get("target_ms", 5.0)
    ways = [k for k in ("FastK HTTP", "FastK Flight") if k in sysd]
    if not ways:
        raise Missing("no FastK result in this run")
    peers = {k: v["median_ms"] for k, v in ok(sysd).items() if is_peer(k) and v.get("median_ms") is not None}
    peer = min(peers, key=peers.get) if peers else None
    figs, ratios, goals = [], [], []
    for k in ways:
        v, way = sysd[k], k.removeprefix("FastK ")
        if "error" in v:  # one way failing leaves the other's figures in the row
            figs.append(f"{way} failed ({v['error']})")
            continue
        med, p99 = v["median_ms"], v.get("p99_ms")
        spread = _fm_spread(v)
        figs.append(f"{way} {_ms(med)} ms (runs {spread}{' ms' if '/' in spread else ''}; p99 {_ms(p99)} ms over "
                    f"{fmt(v.get('writes'))} writes)")
        ratios.append((way, _rt(med, peers.get(peer), True)))
        goals.append((f"{way} median under {target:g} ms", med < target))
        goals.append(("p99 too", None if p99 is None else med < target and p99 < target))
    if not ratios:
        raise Missing("failed: " + "; ".join(figs))
    n = max((_fm_runs(d, sysd[k]) for k in ways), default=1)
    note = f"; median of {n} run medians (min / median / max)" if n > 1 else "; one run"
    return Row("", "feed_many", " / ".join(figs) + note, _peer(peer, f"{_ms(peers.get(peer))} ms"),
               ratios, goals, loss="loss-feed_many")


def h_many_series(r: dict) -> list[Row]:
    """Issue [2 of 8]'s goals for 10,000 series of a year: the load (bytes right after it,
    no compaction, and its time) against DuckDB, then the cross sections of the loaded
    store against DuckDB and SQLite."""
    d = _section(r, "many_series")
    sysd = ok(d["systems"])
    fk = {k: v for k, v in sysd.items() if k.startswith("FastK") and v.get("load_s") is not None}
    if not fk:
        raise Missing("no FastK load in this run")
    duck, sq = sysd.get("DuckDB") or {}, sysd.get("SQLite") or {}
    k = min(fk, key=lambda x: fk[x]["load_s"])
    f = fk[k]
    load_rt = _rt(f["load_s"], duck.get("load_s"), True)
    bytes_rt = _rt(f.get("du_bytes"), duck.get("du_bytes"), True)
    load = Row("", "many_series",
               f"{k}: load {f['load_s']:.1f} s; {f['du_bytes'] / 1e9:.2f} GB in {f['files']:,} files right after it",
               f"DuckDB {duck['load_s']:.1f} s; {duck['du_bytes'] / 1e9:.2f} GB" if duck.get("load_s") else "no peer result",
               [("load", load_rt), ("bytes", bytes_rt)],
               [("load time at most DuckDB's", None if load_rt is None else load_rt >= 1),
                ("bytes after the load at most DuckDB's", None if bytes_rt is None else bytes_rt >= 1)],
               loss="loss-many_series")
    rows = [load]
    cross = f.get("cross") or {}
    native, sql_asof = cross.get("as-of (DoGet ticket)"), cross.get("as-of (SQL asof())")
    daily = cross.get("daily close (SQL)")
    duck_daily = (duck.get("cross") or {}).get("daily close (SQL)")
    sq_asof = sq.get("as-of (SQL)")
    if native and daily:
        cold_rt = _rt(native["first_ms"], (sq_asof or {}).get("first_ms"), True)
        warm_peers = [(n, x["warm"]["p50_ms"]) for n, x in (("SQLite", sq_asof),
                                                            ("DuckDB", (duck.get("cross") or {}).get("as-of (SQL)")))
                      if x]
        best_warm = min(warm_peers, key=lambda t: t[1]) if warm_peers else (None, None)
        warm_rt = _rt(native["warm"]["p50_ms"], best_warm[1], True)
        daily_rt = _rt(daily["warm"]["p50_ms"], (duck_daily or {}).get("warm", {}).get("p50_ms"), True)
        sql_vs_native = sql_asof["warm"]["p50_ms"] / native["warm"]["p50_ms"] if sql_asof else None
        rows.append(Row(
            "many_series: cross sections of the 10,000 series", "many_series",
            f"as-of cold {_ms(native['first_ms'])} / warm {_ms(native['warm']['p50_ms'])} ms (ticket), "
            f"{_ms(sql_asof['warm']['p50_ms']) if sql_asof else 'n/a'} ms (SQL `asof()`); "
            f"daily close (SQL) {_ms(daily['warm']['p50_ms'])} ms",
            f"SQLite as-of cold {_ms((sq_asof or {}).get('first_ms'))} ms; {_peer(best_warm[0], _ms(best_warm[1]))} "
            f"ms warm; DuckDB daily close {_ms((duck_daily or {}).get('warm', {}).get('p50_ms'))} ms",
            [("as-of cold", cold_rt), ("warm", warm_rt), ("daily close", daily_rt)],
            [("cold as-of under SQLite's", None if cold_rt is None else cold_rt > 1),
             ("warm as-of first", None if warm_rt is None else warm_rt > 1),
             ("daily close at least DuckDB's speed", None if daily_rt is None else daily_rt >= 1),
             ("SQL as-of within 2x the ticket", None if sql_vs_native is None else sql_vs_native <= 2)],
            loss="loss-many_series"))
    return rows


def h_factors_100k(r: dict) -> Row:
    """Issue [2 of 8]'s goals for 100,000 scalar series of 3 rows. Files, bytes, start
    and memory are the worse of the two states the workload measures: the log left to
    the restart, and every series folded."""
    d = _section(r, "factors_100k")
    f, duck = d["FastK"], (d.get("DuckDB") or {}).get("bytes")
    files = max(f["files_after_stop"], f["files_folded"])
    du = max(f["du_after_stop"], f["du_folded"])
    start = max(f["restart_s"], f["restart_folded_s"])
    # An RSS the run could not read leaves the goal without a verdict, never "met".
    rsses = (f["idle_rss_bytes"], f["idle_rss_folded_bytes"])
    rss = None if None in rsses else max(rsses)
    vs_duck = du / duck if duck else None
    return Row("", "factors_100k",
               f"register {f['register_s']:.2f} s; {files:,} files, {du / 1e6:.1f} MB; stop {f['stop_s']:.2f} s; "
               f"start {start:.2f} s; idle RSS " + (f"{rss / 1e6:.0f} MB" if rss is not None else "n/a"),
               f"DuckDB {duck / 1e6:.1f} MB in 1 file" if duck else "no peer result",
               [("bytes", 1 / vs_duck if vs_duck else None)],
               [("register under 5 s", f["register_s"] < 5), ("at most 1,000 files", files <= 1000),
                ("at most 2x DuckDB's bytes", None if vs_duck is None else vs_duck <= 2),
                ("stop under 5 s", f["stop_s"] < 5), ("start under 1 s", start < 1),
                ("idle RSS under 150 MB", None if rss is None else rss < 150e6)],
               loss="loss-factors_100k")


def h_series_100k(r: dict) -> Row:
    d = _section(r, "series_100k")
    lat = d.get("latency") or {}
    xs = next((v for k, v in lat.items() if k.startswith("cross section")), {})
    goals = [(k, v) for k, v in (d.get("goals") or {}).items()]
    return Row("", "series_100k", f"restart {d['restart_s']:.2f} s; cross section p50 {_ms(xs.get('p50_ms'))} ms",
               "no peer", [], goals)


def _tick_timed(d: dict, key: str, peers: tuple) -> tuple[float, str, float] | None:
    """(FastK's ms, the best peer's name, its ms) of one timed tick answer, or None."""
    v = d.get(key) or {}
    got = [(p, v[p]) for p in peers if isinstance(v.get(p), (int, float))]
    if not isinstance(v.get("FastK"), (int, float)) or not got:
        return None
    name, ms = min(got, key=lambda x: x[1])
    return v["FastK"], name, ms


def h_ticks(r: dict) -> list[Row]:
    """Issue [3 of 8]'s goals for trades and quotes (ticks.py, tick_feed.py), one row a
    goal: a ratio above 1 is FastK ahead (rate over the peer's, or the peer's time over
    FastK's)."""
    d = _section(r, "ticks")
    rows: list[Row] = []
    ing = d.get("ingest") or {}
    f = (ing.get("FastK") or {}).get("rows_per_s")
    peers = {k: v["rows_per_s"] for k, v in ing.items() if k != "FastK" and "rows_per_s" in (v or {})}
    if f and peers:
        best = max(peers, key=peers.get)
        rows.append(Row(f"ticks: bulk ingest, {d['trades'] / 1e6:.1f}M trades of {d['symbols']} symbols", "ticks",
                        f"{f / 1e6:.1f} M trades/s (median of {d.get('loads', 3)} loads)",
                        f"{best} {peers[best] / 1e6:.1f} M trades/s",
                        [(best, f / peers[best])] + [(k, f / v) for k, v in peers.items() if k != best],
                        [("first against ArcticDB, DuckDB and chDB", f > peers[best])], loss="loss-ticks-ingest"))
    ro = d.get("read_one")
    if ro:
        rows.append(Row(f"ticks: one symbol-day ({ro['rows'] / 1e6:.0f}M trades) into Polars", "ticks",
                        f"{_ms(ro['fastk_ms'])} ms, {ro['of_ceiling'] * 100:.0f}% of the in-memory Flight ceiling",
                        f"ceiling {_ms(ro['ceiling_ms'])} ms", [("of the ceiling", ro["of_ceiling"])],
                        [("90% of the ceiling", ro["of_ceiling"] >= 0.9)]))
    for key, label, peer_names, loss in (
            ("tape", "ticks: the tape, every symbol for one hour", ("DuckDB", "Polars"), "loss-tape"),
            ("bars", "ticks: 1m bars from trades, every symbol for the day", ("DuckDB", "chDB", "Polars"), None),
            ("trade_quote", "ticks: trades with the quote in force, one symbol-day", ("DuckDB", "chDB", "Polars"),
             "loss-trade_quote")):
        t = _tick_timed(d, key, peer_names)
        if t is None:
            continue
        ms, name, peer_ms = t
        rows.append(Row(label, "ticks", f"{_ms(ms)} ms", f"{name} {_ms(peer_ms)} ms", [(name, peer_ms / ms)],
                        [("first", ms < peer_ms)], loss=loss))
    b = d.get("bytes") or {}
    fb = b.get("FastK") or {}
    bounds = [(k, b[k]) for k in ("Parquet zstd (Polars)", "chDB MergeTree") if isinstance(b.get(k), dict)]
    if "per_trade" in fb and bounds:
        rows.append(Row("ticks: bytes per trade / per quote, sealed", "ticks",
                        f"{fb['per_trade']:.2f} / {fb['per_quote']:.2f} B",
                        "; ".join(f"{k} {v['per_trade']:.2f} / {v['per_quote']:.2f}" for k, v in bounds),
                        [(f"{k} trades", v["per_trade"] / fb["per_trade"]) for k, v in bounds]
                        + [(f"{k} quotes", v["per_quote"] / fb["per_quote"]) for k, v in bounds],
                        [(f"at most {k}", fb["per_trade"] <= v["per_trade"] and fb["per_quote"] <= v["per_quote"])
                         for k, v in bounds]))
    lf = d.get("live_feed") or {}
    fl = lf.get("FastK") or {}
    if "trades_per_s" in fl:
        feed_peers = {k: v for k, v in lf.items() if k in ("DuckDB", "chDB") and "trades_per_s" in (v or {})}
        best = max(feed_peers, key=lambda k: feed_peers[k]["trades_per_s"]) if feed_peers else None
        rows.append(Row(f"ticks: live feed, {lf['trades_per_request']:,} trades a request", "ticks",
                        f"{fl['trades_per_s'] / 1e6:.2f} M trades/s durable, p99 {_ms(fl['p99_ms'])} ms",
                        f"{best} {feed_peers[best]['trades_per_s'] / 1e6:.2f} M/s, p99 "
                        f"{_ms(feed_peers[best]['p99_ms'])} ms" if best else "no peer result",
                        [("trades/s", fl["trades_per_s"] / feed_peers[best]["trades_per_s"])] if best else [],
                        [("at least 1M trades/s", fl["trades_per_s"] >= 1e6), ("p99 under 10 ms", fl["p99_ms"] < 10)],
                        loss="loss-tick-feed"))
    if not rows:
        raise Missing("no tick figures in this run")
    return rows


def h_shards(r: dict) -> Row:
    d = _section(r, "shards")
    by = next(iter(d["layouts"].values()))
    one = by.get("1") or by.get(1)
    parts = [(f"{n} nodes", one["median_ms"] / v["median_ms"]) for n, v in by.items() if str(n) != "1"]
    return Row("", "shards", " / ".join(f"{x:.2f}x" for _, x in parts) + " of one node's rate", "one node",
               parts, [("none: a loopback simulation", None)])


def h_tls(r: dict) -> Row:
    d = _section(r, "tls")
    x, rx = d.get("tls_vs_plain"), d.get("rust_tls_vs_plain")
    ratios = [("plain / TLS", 1 / x if x else None)]
    goals = [("TLS under 1.3x plain", None if x is None else x <= 1.3)]
    text = f"TLS {_ms(x)}x the plain time"
    if rx is not None:
        ratios.append(("plain / TLS, Rust client", 1 / rx))
        goals.append(("Rust client: TLS under 1.3x plain", rx <= 1.3))
        text += f" (Rust client {_ms(rx)}x)"
    return Row("", "tls", text, "FastK plain Flight", ratios, goals, loss="loss-tls")


def h_compression(r: dict) -> Row:
    d = _section(r, "compression")
    a = d["fastk_after"]["per_kind"]
    fk_k, fk_s = a.get("kline", {}).get("bytes"), a.get("scalar", {}).get("bytes")
    n, ns = d["rows"], d["scalar_rows"]
    peers = {k: v for k, v in (d.get("peers") or {}).items() if "error" not in v}
    ratios, goals = [], []
    for k, v in peers.items():
        ratios.append((f"{k} bars", _rt(fk_k, v["kline_bytes"], True)))
        ok_ = fk_k is not None and fk_k <= v["kline_bytes"] and (fk_s is None or fk_s <= v["scalar_bytes"])
        goals.append((f"at most {k}", ok_))
    warm = (d.get("reads") or {}).get("compressed warm (repeat reads)")
    if warm:
        goals.append(("warm read 80% of uncompressed", warm["vs_uncompressed"] >= 0.8))
    best = min(peers, key=lambda k: peers[k]["kline_bytes"]) if peers else None
    return Row("", "compression", f"{fk_k / n:.2f} / {fk_s / ns:.2f} B per bar / scalar row (sealed, compressed)"
               if fk_k and fk_s else "n/a", _peer(best, f"{peers[best]['kline_bytes'] / n:.2f} / "
                                               f"{peers[best]['scalar_bytes'] / ns:.2f}" if best else ""),
               ratios, goals, loss="loss-disk")


# (label, results.json key, builder): the headline, in page order.
HEADLINE = [
    ("1. ingest, bars (Flight DoPut)", "ingest", lambda r: h_ingest(r, "kline")),
    ("1. ingest, scalar series", "ingest", lambda r: h_ingest(r, "scalar")),
    ("2. one year of 1m bars into Polars", "year_to_polars", h_year),
    ("co-located: the year into Polars on the same host", "colocated", h_colocated),
    ("3. random one-day ranges, p50 / p99", "day_ranges", lambda r: h_latency(r, "day_ranges")),
    ("4. latest 100 bars, p50 / p99", "latest", lambda r: h_latency(r, "latest")),
    ("5. scalar predicate, by selectivity", "predicate", h_predicate),
    ("6. bytes on disk, bars / scalar", "disk", h_disk),
    ("compressed sealed months", "compression", h_compression),
    ("SQL: a year through Flight SQL", "sql_year", h_sql_year),
    ("SQL: resample to 1h", "sql_resample", h_sql_resample),
    ("SQL: scalar predicate, by selectivity", "sql_predicate", h_sql_predicate),
    ("market: resample a year to 1h / 1d", "market_resample", h_market_resample),
    ("market: as-of cross section", "market_asof", h_market_asof),
    ("market: coverage and gaps", "market_coverage", h_market_coverage),
    ("feed: one bar per write", "feed", h_feed),
    ("feed_many: a minute of every series as one write", "feed_many", h_feed_many),
    ("many_series: 10,000 series of a year of 1h bars", "many_series", h_many_series),
    ("factors_100k: 100,000 scalar series of 3 rows", "factors_100k", h_factors_100k),
    ("series_100k: 100,000 series", "series_100k", h_series_100k),
    ("ticks: trades and quotes", "ticks", h_ticks),
    ("TLS: the year over Flight with TLS", "tls", h_tls),
    ("shards: every symbol from 2 / 3 nodes", "shards", h_shards),
]


def headline_rows(r: dict) -> list[Row]:
    """Every headline row; a figure the run lacks becomes a row with its status."""
    rows = []
    for label, key, build in HEADLINE:
        try:
            got = build(r)
        except Missing as e:
            got = Row(label, key, status=str(e))
        except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as e:
            got = Row(label, key, status=f"failed: the report could not read it ({type(e).__name__}: {e})")
        for row in got if isinstance(got, list) else [got]:
            row.workload = row.workload or label
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- page parts


def _run_cell(r: dict, src: str, link: str, key: str) -> str:
    n = (r.get("checked") or {}).get(key)
    return f"[`{src}`]({link}) `{key}`, {r.get('started', '?')}" + (f"; {n:,} answers checked" if n else "")


def headline_table(r: dict, rows: list[Row], src: str, link: str) -> str:
    lines = ["| workload | FastK | best peer | FastK vs best peer | goal | run |", "|---|---|---|---|---|---|"]
    for x in rows:
        run = _run_cell(r, src, link, x.key)
        if x.status:
            lines.append(f"| {x.workload} | {_cell(x.status)} | | | | {run} |")
            continue
        ratio = "; ".join(f"{k} {_x(v)}".strip() for k, v in x.ratios) or "n/a"
        goal = "; ".join(f"{g}: {_met(v)}" if v is not None else g for g, v in x.goals) or "none"
        lines.append(f"| {x.workload} | {_cell(x.fastk)} | {_cell(x.peer)} | {ratio} | {_cell(goal)} | {run} |")
    return "\n".join(lines)


def _indent(text: str) -> str:
    """Text as a paragraph inside a list item."""
    return "\n".join("  " + line if line else "" for line in text.splitlines())


def failures(r: dict) -> list[str]:
    """Every system or workload of the run that recorded an error, as `workload: label: error`."""
    out = []

    def walk(path: str, d) -> None:
        if not isinstance(d, dict):
            return
        if isinstance(d.get("error"), str):
            out.append(f"{path}: {_cell(d['error'])}")
            return
        for k, v in d.items():
            walk(f"{path}: {k}" if k not in ("systems", "targets", "selectivities", "peers") else path, v)

    for key, d in r.items():
        if key not in ("machine", "params", "versions", "skipped", "dataset", "rust"):
            walk(f"`{key}`", d)
    return out


def losses(r: dict, rows: list[Row]) -> str:
    """Every row with a ratio below 1 or a goal not met, grouped under its explanation
    from PROSE, then every figure the run lacks: the list is written from the figures."""
    groups: dict[str | None, list[str]] = {}
    for x in rows:
        if x.status:
            continue
        low = [f"{k + ' ' if k else ''}{v:.2f}x" for k, v in x.ratios if v is not None and v < 1]
        miss = [g for g, v in x.goals if v is False]
        if low or miss:
            parts = ([f"behind {x.peer} ({', '.join(low)})"] if low else []) + [f"{g}: not met" for g in miss]
            groups.setdefault(x.loss, []).append(f"- **{x.workload}**: {'; '.join(parts)}.")
    out = []
    for loss, items in groups.items():
        out.append("\n".join(items) + (f"\n\n{_indent('*Why:* ' + unwrap(PROSE[loss]))}" if loss in PROSE else ""))
    text = "\n".join(out) if out else "- none: FastK is ahead on every row with a peer, and meets every goal."
    gone = failures(r) + [f"`{k}`: skipped: {_cell(v)}" for k, v in (r.get("skipped") or {}).items()]
    if gone:
        text += "\n\nFailed or skipped in this run (no figure, so no verdict):\n\n" + "\n".join(f"- {g}" for g in gone)
    notes = failure_notes(r)
    return text + (f"\n\n{notes}" if notes else "")


# Result sections: (heading, results.json key, SECTIONS name, chart file or None). The
# SQL year and predicate, feed_many, TLS, shard and tick tables are in tables.md only
# (the page stays under 400 lines; their headline rows are on it).
PAGE_SECTIONS = [
    ("1. Bulk ingest", "ingest", "ingest", "ingest.png"),
    ("2. One year of 1m bars into Polars", "year_to_polars", "year", "year_to_polars.png"),
    ("Co-located reads", "colocated", "colocated", "colocated.png"),
    ("3. Random one-day ranges", "day_ranges", "day_ranges", "day_ranges.png"),
    ("4. Latest 100 bars", "latest", "latest", "latest.png"),
    ("5. Scalar predicate", "predicate", "predicate", "predicate.png"),
    ("6. Bytes on disk", "disk", "disk", "disk.png"),
    ("Compressed sealed months", "compression", "compression", None),
    ("SQL: resample to 1h", "sql_resample", "sql_resample", "sql_resample.png"),
    ("Market: resample on read", "market_resample", "market_resample", "market_resample.png"),
    ("Market: as-of cross section", "market_asof", "market_asof", "market_asof.png"),
    ("Market: coverage and gaps", "market_coverage", "market_coverage", "market_coverage.png"),
    ("Feed: one bar per write", "feed", "feed", "feed.png"),
    ("Many series", "many_series", "many_series", None),
    ("100,000 series", "series_100k", "series_100k", None),
]

# Paragraphs of the workload tables that belong to tables.md, not to the page: the
# setups ("How") and checks are the method's (the page counts the checked answers),
# the codec tables, the compressed reads and the 100,000 series' request latencies are
# detail, and "FastK vs best peer" lines repeat the headline.
_DETAIL = ("How", "Checked", "Codecs on", "Whole compressed", "| request | calls |", "One year (", "FastK vs best peer")


def compact(text: str) -> str:
    """A workload's tables for the page, without the setups, the checks and the detail
    tables (a detail heading's table or code goes with it, and its list when it is a
    setup or a check list)."""
    out, skip = [], ()
    for p in text.split("\n\n"):
        s = p.lstrip()
        if s.startswith(_DETAIL):
            skip = ("|", "```", "- ") if s.startswith(("How", "Checked")) else ("|", "```")
            continue
        if skip and s.startswith(skip):
            continue
        skip = ()
        out.append(p)
    return "\n\n".join(out)


def result_sections(r: dict, charts_rel: str) -> str:
    out, absent, charts_ = [], [], []
    for heading, key, name, chart in PAGE_SECTIONS:
        if r.get(key) is None:
            absent.append(f"{heading} (`{key}`: {_why_absent(r, key)})")
            continue
        try:
            body = compact(SECTIONS[name](r))
        except Exception as e:  # noqa: BLE001 - a malformed workload leaves a note, not a crash
            body = f"failed: the report could not read it ({type(e).__name__}: {e})"
        if chart:
            charts_.append(f"[{key}]({charts_rel}/{chart})")
        out.append(f"### {heading}\n\n{body}")
    head = f"Charts of this run: {', '.join(charts_)}." if charts_ else ""
    if absent:
        out.append("Not in this run: " + "; ".join(absent) + ".")
    return "\n\n".join([head, *out] if head else out)


def checked_line(r: dict) -> str:
    """How many timed answers the run checked, per workload (results["checked"])."""
    c = {k: v for k, v in (r.get("checked") or {}).items() if isinstance(v, int)}
    if not c:
        return ("This run recorded no count of checked answers: it predates the checksum of every timed answer, "
                "and most workloads checked their untimed warm-up answer only.")
    bad = [f for f in failures(r) if "Mismatch" in f]
    verdict = f"{len(bad)} mismatched (see the failures above)" if bad else "none mismatched"
    return (f"This run checked {sum(c.values()):,} answers (every timed one, and the warm-ups) against their "
            f"expected checksums, {verdict} (a mismatch fails the run): "
            + ", ".join(f"`{k}` {v:,}" for k, v in c.items()) + ".")


def _labels(r: dict) -> set[str]:
    """Every key of the run's workloads that names a dict (the system labels among them)."""
    got: set[str] = set()

    def walk(d: dict, depth: int) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                got.add(str(k))  # a driver's in-memory results may key by number (JSON makes it text)
                if depth < 4:
                    walk(v, depth + 1)

    walk({k: v for k, v in r.items() if k not in ("machine", "params", "versions", "skipped", "dataset")}, 0)
    return got


def method_in_this_run(r: dict) -> str:
    """Which points of the method this run's results show, read from its keys: a run
    older than the method says so here instead of being described by it."""
    labels = _labels(r)
    cov = r.get("market_coverage") or {}
    feed = (r.get("feed") or {}).get("systems") or {}
    many = (r.get("feed_many") or {}).get("systems") or {}
    points = {
        "every timed answer checked": bool(r.get("checked")),
        "DuckDB as a database": any(k.startswith(DUCKDB_TABLE) for k in labels),
        "chDB": any(k.lower().startswith("chdb") for k in labels),
        "coverage cold and warm": bool(cov.get("cold")),
        "the feed by Python threads for every system": any(k.startswith("FastK") and "thread" in k.lower()
                                                            for k in feed),
        "feed_many over several runs": any(isinstance(v, dict) and (v.get("runs") or 1) > 1 and "spread" in v
                                            for v in many.values()),
    }
    shown = [k for k, v in points.items() if v]
    lacks = [k for k, v in points.items() if not v]
    out = checked_line(r)
    if lacks:
        out += (" This run's results do not show: " + "; ".join(lacks) + " (the run predates them or left those "
                "workloads out; their rows say so)." + (f" They show: {'; '.join(shown)}." if shown else ""))
    return out


# --------------------------------------------------------------------------- prose
#
# Defaults of the hand-written blocks. The page's own copy of a block wins (edit it
# there or here); these fill a block only where the page has none. No figure of a run
# lives here: the run's figures are all generated above.

PROSE_TITLES = {
    "loss-ingest": "Bulk ingest",
    "loss-year": "One year into Polars over a socket",
    "loss-latency": "Small answers: latest 100 bars and the selective predicate",
    "loss-disk": "Bytes on disk: the hot month is raw",
    "loss-sql": "SQL against FastK's native calls",
    "loss-tls": "TLS on a bulk read",
    "loss-feed": "One bar per write",
    "loss-feed_many": "A minute of every series as one write",
    "loss-many_series": "A year of 10,000 series",
    "loss-factors_100k": "Bytes of many small series",
    "loss-ticks-ingest": "Bulk ingest of trades",
    "loss-tape": "The tape",
    "loss-trade_quote": "Trades with the quote in force",
    "loss-tick-feed": "The live tick feed",
}

PROSE = {
    "intro": """\
FastK measured side by side with what a user would pick instead, on the same data, on the
same machine, in the same run. Losses are reported as they came out. Dated investigations
and earlier runs are in the [journal](benchmarks/journal/README.md); this page is the
reference, and every figure on it comes from the one run cited in the table below.""",
    "loss-ingest": """\
A FastK DoPut ships every byte through gRPC over loopback into another process, checks
every row, splits it by month and fsyncs before it answers; ArcticDB, DuckDB and Polars
write from inside the client. On this 2-core microVM a load's fresh memory costs
bimodally for every system, so single loads swing either way from run to run
(journal: [ingest in place](benchmarks/journal/2026-11-23-ingest-in-place.md)). The lever
left on FastK's side is a DoPut that writes finished months while the stream arrives.
HTTP JSON ingest is bounded by parsing the text; Flight is the bulk path.""",
    "loss-year": """\
The in-process peers pay no transport: ArcticDB decodes into Arrow memory in the caller.
FastK and both in-memory Flight servers rise and fall together, because nearly all of the
time is the gRPC transfer over loopback and the client's copies of it; FastK's own share
(building the batches) is a small fraction of a memcpy (Rust harness). A reader on the
same host uses the co-located way instead (`local-read`, see the co-located row).""",
    "loss-latency": """\
These answers are a few KB; what they cost is one round trip. PostgreSQL over a keep-alive
ADBC connection is close to FastK's pyarrow Flight client, whose per-call cost is higher
than a keep-alive HTTP request (FastK HTTP is the quicker way to the latest bars from
Python). Systems take turns, so each call finds the CPU caches cold.""",
    "loss-disk": """\
The month being written holds raw fixed-width int64 columns (48 B per bar), which is what
lets a read hand out slices of the mapped file as Arrow buffers with no decoding. A month
sealed for `storage.compress_after_s` is rewritten with pcodec; the compression row
measures that state. Uniform random scalar values are the worst case for every
compressor, and the value index is kept uncompressed so predicates use it as is.""",
    "loss-sql": """\
The ADBC Flight SQL driver prepares every statement: one query is three round trips
(CreatePreparedStatement, GetFlightInfo, DoGet) where a native ticket is one, which is all
of the time of a small answer; the pyarrow.flight row (two round trips) separates that
from the engine's own cost.""",
    "loss-tls": """\
The plain DoGet hands the kernel the mapped chunk bytes without a copy; under TLS every
byte is copied into rustls's record buffer and sealed with AES-128-GCM (the server's
choice), then opened by the client, on the same two cores. Most of the extra time is the
client's: pyarrow's gRPC core opens the records on one thread through 8 KB staging
buffers (profiles of both processes are in the journal, 2026-11-28-tls-split). Clients on
the server's host can keep the plain path through the Unix socket, guarded by its file
permissions.""",
    "loss-feed": """\
Like for like, FastK's server and its Python client share the 2 cores, with the
client's 8 threads under one GIL formatting JSON and parsing HTTP answers; SQLite and
DuckDB run inside that Python process with no transport at all. The wrk row shows the
server when the client is not the limit; it is never divided by a peer's figure.""",
    "loss-feed_many": """\
A FastK write is two processes and four busy threads on two cores (client, handler, the
log's committer and its apply helper), and a whole run moves with how the VM schedules
them; DuckDB and SQLite run inside the client. The headline is the median of several
runs' medians, never one chosen run; the p99, pooled over every run's writes, has its
own verdict. Written
once a minute after an idle gap, every system is slower (journal:
[feed_many, 2026-11-25](benchmarks/journal/2026-11-25-feed-many.md)).""",
    "loss-many_series": """\
Each load is one DoPut per series (8,760 rows) on three client streams: a gRPC stream set
up over loopback into another process, every row checked, the twelve months compressed
with pcodec's fast level in the same pass into one pack file, the pack and the manifest
fsynced before the answer. DuckDB appends 500 series per `INSERT` from inside the client
and checkpoints once. The many-series DoPut (100 series a write) goes through the log and
writes each row twice (the log, then the fold). A series is two files (its manifest and
one pack) in two directories of its own, so its first commit makes four inodes and six
fsyncs: in a profile of this load most of the server's time was in the kernel, and the
same load on tmpfs took about 40% less (journal:
[many small DoPuts](benchmarks/journal/2026-11-29-many-series-syscalls.md)). A series
stays the unit of a commit, a delete and a backup.""",
    "loss-factors_100k": """\
Most of FastK's bytes here are the series, not their rows: each of the 100,000 series has
an entry in the store's catalog (its key, settings and manifest fields, a few hundred
bytes), so the registration alone takes about as many bytes as DuckDB's whole table (the
table's first rows). The rows of these small series go into a few state records of the
same catalog at the stop. A start reads the catalog and builds no series' state until the
series is asked for (dormant series), which is what keeps the start and the idle memory
under their goals (journal:
[dormant series](benchmarks/journal/2026-11-29-dormant-series.md)).""",
    "loss-ticks-ingest": """\
ArcticDB writes each symbol's frame into LMDB as it is (14.2 bytes a trade in this run);
FastK checks every row, numbers the trades within each nanosecond (`seq`), compresses
each sealed day with pcodec's thorough settings (2.4 bytes a trade) and fsyncs before it
answers, and every byte crosses loopback into another process where the peers write from
inside the client. The compression is the trade-off: with pcodec's fast settings a load
ran about 1.4x faster and stored 6.4 bytes a trade (journal:
[ticks](benchmarks/journal/2026-11-26-ticks.md)).""",
    "loss-tape": """\
FastK merges the symbols' cursors through a heap on one core of the server, then sends
every row over loopback with its symbol as a string (the contract's `Utf8` column);
DuckDB sorts the hour's rows in process on both cores. Polars' `merge_sorted` is about
4x slower than both.""",
    "loss-trade_quote": """\
Polars joins two frames it already holds in memory. FastK reads both sealed days from its
store (2M trades, 20M quotes, decompressed on read), joins them and sends the 2M joined
rows over loopback into pyarrow. Both SQL engines' `ASOF JOIN`s, which also start from
their stored tables, are slower than FastK by more than an order of magnitude (the
`trade_quote` table below).""",
    "loss-tick-feed": """\
A request is 50,000 trades for 500 symbols, acknowledged only once it is durable and
applied: the stream decoded and split by symbol, one log record written and synced
(shared with the other handler's request), and 500 series applied so that a read after
the answer sees them. The log's committer takes one request at a time: about 8 ms to
apply the 500 series and a few ms of sync, partly overlapped. The other handler's
request waits for it, and the handlers decode and split on the same two cores as the
load generator. No one step dominates (journal:
[the tick feed's profile](benchmarks/journal/2026-11-28-tick-feed-profile.md)). The
slowest requests vary much more from run to run than the median does, for the peers
too (every system's p50, p99 and max are in `bench/results/full/tables.md`). The throughput goal is met; the p99 goal needs
less work per row in every step.""",
    "one_command": """\
```sh
bash scripts/bench.sh            # full run: builds, runs every workload, writes this page
bash scripts/bench.sh --quick    # smoke run: small data; never touches this page
# this page again from a committed full run, running nothing (--check: only compare)
PYTHONPATH=bench bench/.venv/bin/python -m fastk_bench.report bench/results/full/results.json docs/benchmarks.md
```

It builds `fastk` (`cargo build --release`), creates `bench/.venv` with the pinned peers of
`bench/requirements.txt`, installs PostgreSQL and `wrk` from apt when missing (as root),
runs the Rust harnesses (`cargo bench --bench storage`, `--bench predicate`), then the
Python driver (`python -m fastk_bench`), which generates the dataset, loads it into every
system, runs every workload and writes `bench/results/full/results.json` (committed, with
`tables.md`: every table in full, with each workload's setup). From that file alone it
writes the charts in `docs/benchmarks/` and this page. A quick run writes to
`bench/results/quick/`, an `--only` run to its `--out`; neither writes this page (the
generator refuses any results file that is not a full run's). Every server the run
starts binds 127.0.0.1 only and is stopped before it exits. `BENCH_SKIP=ROAPI,PostgreSQL`
leaves systems out; a skipped or failed workload shows as such in the table.""",
    "method": """\
**Dataset** (`bench/fastk_bench/dataset.py`, fixed seed): 10 symbols x 2 years of 1m bars
(10,526,400 bars: a random walk of int64 prices, `ts` as `timestamp[ms, UTC]`) and one
scalar series of 20,000,000 rows of uniform int64 values (zone maps cannot prune them; a
value index must). `--quick`: 2 symbols x 1 year and 2,000,000 scalar rows.

**Systems**, each set up the way its documentation recommends for the job:

| system | load | read |
|---|---|---|
| FastK, Flight | `pyarrow.flight` DoPut, one stream per series | DoGet of a JSON ticket, `read_all()`, `pl.from_arrow`; own process, loopback |
| FastK, HTTP | pre-encoded JSON bodies, one keep-alive connection | `GET .../records`, `.../latest`, JSON into Polars |
| ArcticDB | `Library.write` per symbol, LMDB | `read`/`tail`/`QueryBuilder`, `output_format` polars or pyarrow; in process |
| DuckDB (Parquet) | `COPY ... TO 'x.parquet'`, one file per symbol | `read_parquet(...)` with `WHERE`, `.pl()`; in process |
| DuckDB (table) | one database file: `kline` PRIMARY KEY (symbol, ts) (ART), `scalar` PRIMARY KEY (ts), `INSERT` from Arrow, `CHECKPOINT` | SQL on the tables; in process |
| chDB | in-process ClickHouse: MergeTree ORDER BY (symbol, ts), inserts fsync their parts | SQL, Arrow out; in process |
| Polars | `write_parquet`, one file per symbol | `scan_parquet(...).filter(...).collect()` |
| PostgreSQL 15 | ADBC `adbc_ingest` (binary COPY), primary key `(symbol, ts)`, B-tree on `value` | ADBC `fetch_arrow_table`; own process, `shared_buffers=1GB`, fsync on |
| ROAPI | read-only: loads Polars' Parquet files at start | Flight SQL via ADBC; own process |
| Flight ceilings | none | pyarrow and Rust Flight servers answering FastK's tickets from RAM batches |

Ingest is timed until the data is durable where the system offers it (FastK and
PostgreSQL fsync before they answer; Parquet files are fsynced inside the timing; ArcticDB
commits with its defaults). The in-process peers pay no transport; the ceilings show
what any Flight server could do on this machine, and are never counted as peers.

- **Fair in both directions.** Every co-located read touches every value it returns,
inside the timing (the sums of the OHLCV columns, the first and last `ts`), for FastK's
ways and ArcticDB alike (journal entries before 2026-11-25 timed the local mapping
without reading a value). Coverage is timed cold (the first call after a restart of
FastK's server, a reopened DuckDB or chDB database, a new DuckDB connection) and warm,
with the same repetitions for every system. The one-bar feed drives every system with
the same Python threads, and FastK also with `wrk` (shown beside it, never instead, and
never divided by a peer's figure); the ratios and the verdicts against SQLite and DuckDB
come from the like-for-like row only. In that like-for-like feed the Python client and
the FastK server share the 2 cores, while SQLite and DuckDB run inside the Python
process. The feed_many headline is the median of several runs' medians (their min and
max beside it), its p99 pooled over every run's writes. DuckDB is measured as a
database ("DuckDB (table)") besides as a Parquet reader ("DuckDB"), and chDB (in-process
ClickHouse) joins where it applies.
- **Repetitions.** Systems take turns round by round wherever a measurement repeats, so
load on this shared machine falls on all of them alike; tables give the median and the
best time. Ingest is the median of three loads per contender, each into a new empty store
after an untimed `sync`. Latency workloads give each system a time budget, so slower
systems answer fewer requests of the same sequence (the "ran" column).
- **Checked.** Every timed answer, not only the warm-up, is compared with the expected
one (`bench/fastk_bench/checks.py`): a cheap checksum taken after the clock stops (the
row count and the sums of one or two value columns, or a match count), expected from the
dataset; every load's stored row counts are read back. A mismatch stops the run and
fails it, so a fast wrong answer cannot win.
- **Ratios** are written so that **above 1 means FastK is ahead** (best peer's time / FastK's,
FastK's rate / best peer's, best peer's bytes / FastK's), bold when FastK wins. "Best
peer" is the best system that is not FastK (in any of its ways) nor a ceiling.""",
    "machine": """\
The machine is **shared**: other work runs on the same two cores during a run (the load
averages above count it), so treat differences under about 20% as ties.""",
    "reproduce": """\
Run `bash scripts/bench.sh` on an idle machine for steadier figures: single runs move by
20-70% on this shared machine, which is why systems take turns and medians are reported.
The run's raw figures, its parameters and anything skipped are in the results file cited
above, committed with the page; earlier runs are in its history and in the
[journal](benchmarks/journal/README.md).""",
}


def unwrap(text: str) -> str:
    """Prose as one line per paragraph or list item (tables and code kept as they are):
    PROSE is wrapped for its editors, the page for its readers' line count."""
    out = []
    for p in text.split("\n\n"):
        lines = p.split("\n")
        if lines[0].startswith(("|", "```")):
            out.append(p)
            continue
        items: list[str] = []
        for line in lines:
            if not items or line.startswith("- "):
                items.append(line)
            else:
                items[-1] += " " + line.strip()
        out.append("\n".join(items))
    return "\n\n".join(out)


def machine_line(r: dict) -> str:
    m, d = r.get("machine") or {}, r.get("dataset") or {}
    load = f"{(m.get('loadavg_start') or [0])[0]:.1f} at the start, {(m.get('loadavg_end') or [0])[0]:.1f} at the end"
    return (f"Machine: {m.get('cpu', '?')}, {m.get('nproc', '?')} cores visible, {m.get('memory_gib', '?')} GiB; "
            f"{m.get('os', '?')}, Linux {m.get('kernel', '?')}; Python {m.get('python', '?')}. Load average "
            f"{load}. Run: {r.get('mode')} mode, started {r.get('started')}, {(r.get('wall_s') or 0) / 60:.1f} min "
            f"for the driver. Dataset: {len(d.get('symbols') or [])} symbols x {d.get('bars_per_symbol', 0):,} 1m "
            f"bars = {d.get('kline_rows', 0):,} bars; {d.get('scalar_rows', 0):,} scalar rows; seed {d.get('seed')}.")


def versions_line(r: dict) -> str:
    v = {k: x for k, x in (r.get("versions") or {}).items() if not k.startswith("FastK")}
    return "Versions: " + "; ".join(_cell(x) if str(x).lower().startswith(k.lower()) else f"{k} {_cell(x)}"
                                    for k, x in v.items()) + "."


# Why a known failure happened, by a string its error contains: explanation only, the
# failure itself is listed from the results.
FAILURE_NOTES = {
    "RemoteDisconnected": (
        "`RemoteDisconnected`: the FastK of that run closed an HTTP/1 keep-alive connection that waited for its "
        "next request longer than `http.header_read_timeout_s` (10 s; hyper's header-read timer ran while a "
        "kept-alive connection was idle), and the harness reused such a connection after other systems' turns; "
        "Python's `http.client` wrote into the closed socket. Fixed in the server since: an idle connection now "
        "lives `http.keep_alive_idle_s` (60 s) from its last response "
        "(`tests/http_api/hostile.rs::a_kept_alive_connection_outlives_the_header_timeout`); the harness's "
        "client also drops a connection the server closed and retries an idempotent request once, as urllib3 "
        "does."),
}


def failure_notes(r: dict) -> str:
    text = " ".join(failures(r))
    return "\n\n".join(note for key, note in FAILURE_NOTES.items() if key in text)


def mismatch_banner(r: dict) -> str:
    """A run stopped by a wrong answer says so before anything else."""
    m = r.get("answer_mismatch")
    return (f"**This run stopped at a wrong answer**: {_cell(m)}. The workloads after it did not run; no figure "
            f"of a system that answered wrongly counts.") if m else ""


def _run_line(r: dict, src: str, link: str) -> str:
    v = r.get("versions") or {}
    return (f"Every figure on this page comes from one full run: [`{src}`]({link}), started {r.get('started', '?')} "
            f"({fmt((r.get('wall_s') or 0) / 60)} min for the driver), {v.get('fastk', 'fastk ?')}.")


def page(r: dict, src: str, link: str, charts_rel: str = "benchmarks") -> str:
    """The whole of docs/benchmarks.md from one full run's results."""
    rows = headline_rows(r)
    parts = [
        "# Benchmarks", GENERATED, unwrap(PROSE["intro"]),
        "## Summary", *([mismatch_banner(r)] if mismatch_banner(r) else []), _run_line(r, src, link)
        + " Ratios above 1 mean FastK is ahead of the best peer; each goal's verdict is computed from the figures.",
        headline_table(r, rows, src, link),
        "## Where FastK loses", "Every row above where FastK is behind its best peer or misses its goal "
        "(listed from the figures), with why:", losses(r, rows),
        "## The one command", unwrap(PROSE["one_command"]),
        "## Method", unwrap(PROSE["method"]), method_in_this_run(r),
        "## The machine and the versions", machine_line(r), versions_line(r), unwrap(PROSE["machine"]),
        "## Results by workload", "The workloads of the table above, from the same file. `tables.md` beside it "
        "holds every table in full, with each workload's setup and checks, and the run's other tables: HTTP under "
        "load (wrk), Flight against the in-memory ceilings, the Rust harnesses. The machine's own limit: "
        + t_limits(r),
        result_sections(r, charts_rel),
        "## Reproducing", unwrap(PROSE["reproduce"]),
    ]
    return "\n\n".join(parts) + "\n"


def _rel(path: pathlib.Path, base: pathlib.Path) -> str:
    return pathlib.Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def render_page(results_path: pathlib.Path, doc_path: pathlib.Path, r: dict | None = None) -> str:
    """The page `doc_path` should hold for the results file `results_path`."""
    r = r if r is not None else json.loads(results_path.read_text())
    try:
        src = results_path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        src = results_path.name  # outside the repository: no machine path on the page
    return page(r, src, _rel(results_path, doc_path.parent))


def write_page(results_path: pathlib.Path, doc_path: pathlib.Path, r: dict | None = None) -> bool:
    """Writes docs/benchmarks.md from a full run's results.json; refuses (returns False)
    any other run, so a quick or --only run never changes the page."""
    r = r if r is not None else json.loads(results_path.read_text())
    if not is_page_run(r):
        return False
    text = render_page(results_path, doc_path, r)
    if text.count("\n") >= PAGE_MAX_LINES:  # the issue's bound for a page read at a glance
        print(f"warning: {doc_path} has {text.count(chr(10))} lines (at most {PAGE_MAX_LINES - 1} wanted)",
              file=sys.stderr)
    doc_path.write_text(text)
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m fastk_bench.report RESULTS.json [DOC.md] [--check]`: without DOC.md, print
    every table in full; with it, write the page from RESULTS.json (a full run's only),
    or with --check exit 1 when DOC.md is not what RESULTS.json gives. Runs nothing."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fastk_bench.report")
    ap.add_argument("results", type=pathlib.Path)
    ap.add_argument("doc", type=pathlib.Path, nargs="?")
    ap.add_argument("--check", action="store_true", help="compare DOC with what RESULTS gives; write nothing")
    ap.add_argument("--charts", type=pathlib.Path, help="also redraw the charts into this directory")
    a = ap.parse_args(argv)
    r = json.loads(a.results.read_text())
    if a.doc is None:
        print(all_tables(r))
        return 0
    if not is_page_run(r):
        print(f"{a.results}: a {r.get('mode')!r} run; only a full run writes the page", file=sys.stderr)
        return 2
    if a.check:
        same = a.doc.exists() and a.doc.read_text() == render_page(a.results, a.doc, r)
        print(f"{a.doc}: {'up to date' if same else 'differs from ' + str(a.results)}", file=sys.stderr)
        return 0 if same else 1
    if a.charts:
        charts(r, a.charts)
    write_page(a.results, a.doc, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
