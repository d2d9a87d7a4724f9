"""results.json -> PNG charts and the Markdown tables of docs/benchmarks.md.

Every ratio is written so that above 1 means FastK is ahead: for times it is
(best peer's time / FastK's time), for rates (FastK's rate / best peer's rate), for
bytes on disk (best peer's bytes / FastK's bytes). "Best peer" is the best of
ArcticDB, DuckDB, Polars, PostgreSQL and ROAPI; FastK's HTTP front end and the
in-memory Flight ceiling are shown beside them but never count as peers.

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
single-bar writes at least 10,000/s with p99 under 10 ms, above SQLite and at least
10x DuckDB; a many-series write of one minute of 2,000 bars under 5 ms (the issue's
figure, read at the median as every other latency target that names no percentile),
with the stricter bar of the p99 under 5 ms too given its own verdict beside it.

The TLS table (`tls`, see `tls.py`) gives the year into Polars over plain Flight and
over Flight with TLS from the same store, with "time vs plain" (above 1, TLS is
slower by that factor), the ratio per round, and what a new connection costs each way.
"""

from __future__ import annotations

import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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


def best_peer(d: dict, key: str, lower_is_better: bool) -> tuple[str | None, float | None]:
    peers = {k: v[key] for k, v in ok(d).items() if k not in NOT_PEERS and v.get(key) is not None}
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
    return f"memcpy (numpy copy of {m.get('bytes', 0) >> 20} MiB): {fmt(m.get('gb_s'))} GB/s."


def t_machine(r: dict) -> str:
    m = r["machine"]
    d = r["dataset"]
    rows = [["CPU", f"{m['cpu']} ({m['nproc']} cores visible)"], ["memory", f"{m['memory_gib']} GiB"],
            ["OS, kernel", f"{m['os']}, Linux {m['kernel']}"], ["Python", m["python"]],
            ["load average at start / end", f"{m['loadavg_start'][0]:.1f} / {m.get('loadavg_end', [0])[0]:.1f}"],
            ["run", f"{r['mode']} mode, {r['started']}, {r.get('wall_s', 0) / 60:.1f} min for the driver"],
            ["dataset", f"{len(d['symbols'])} symbols x {d['bars_per_symbol']:,} 1m bars = {d['kline_rows']:,} bars; "
                        f"{d['scalar_rows']:,} scalar rows; seed {d['seed']}"]]
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
    both = {**d["systems"], **d.get("peers", {})}
    rows = [[k, v["median_ms"], v["best_ms"], v["p99_ms"], v["reps"],
             f"{v['vs_fastk']:.2f}x" if v.get("vs_fastk") else "n/a"] for k, v in ok(both).items()]
    out = table(["way", "median ms", "best ms", "p99 ms", "calls", "time vs FastK HTTP"], rows)
    n = d["notes"]
    out += (f"\n\n{_n(n['years'], 'year')} of 1m bars ({d['expected']:,} grid points, {d['present']:,} bars, "
            f"{d['gap_count']:,} gaps); FastK warm: one checked warm-up, then the median of the calls; the peers' "
            f"gap queries (lag/diff over their Parquet file) are shown for context and checked too.")
    h = ok(d["systems"]).get(HTTP)
    target = d.get("target_ms", 10.0)
    out += (f" FastK HTTP coverage: {fmt(h['median_ms'])} ms median (target under {target:g} ms: "
            f"{_verdict(h['median_ms'] < target)})." if h else f" FastK HTTP coverage: n/a (target under {target:g} ms: n/a).")
    return out + errors_note(both)


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


def _checked(d: dict) -> str:
    got = {k: v["checked"] for k, v in (d.get("systems") or {}).items() if isinstance(v, dict) and v.get("checked")}
    return "".join(f"\n- {k}: {v}" for k, v in got.items())


def _fsync_note(d: dict) -> str:
    f = d.get("fdatasync")
    if not f:
        return ""
    return (f" fdatasync on the work volume (100 B appended, {f['n']} times): p50 {fmt(f['p50_ms'])} ms, "
            f"p99 {fmt(f['p99_ms'])} ms.")


def t_feed(r: dict) -> str:
    d = r["feed"]
    if "error" in d:
        return f"(failed: {d['error']})"
    sysd = d["systems"]
    rows = []
    # A way whose check failed keeps its row (marked), beside the error note below.
    shown = {k: v for k, v in sysd.items() if isinstance(v, dict) and v.get("writes_per_s") is not None}
    for k, v in shown.items():
        bad = v.get("non_2xx", 0) + v.get("socket_errors", 0) if "non_2xx" in v else v.get("errors", 0)
        k = k + (" (check failed)" if "error" in v else "")
        rows.append([k, v["writes_per_s"], v.get("p50_ms"), v.get("p90_ms"), v.get("p99_ms"), v.get("max_ms"),
                     v.get("writes"), bad])
    out = table(["system", "writes/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "writes", "non-2xx / errors"], rows)
    f = ok(sysd).get("FastK HTTP")
    t = d["targets"]
    sqlite = {k: v for k, v in ok(sysd).items() if k.startswith("SQLite")}
    best_sqlite = max(sqlite, key=lambda k: sqlite[k]["writes_per_s"]) if sqlite else None
    duck = ok(sysd).get("DuckDB")
    out += (f"\n\n{d['series']:,} kline 1m series; every write is one 1m bar of one series, durable before the "
            f"answer; {d['seconds']} s timed after a {d['warmup_s']} s warm-up.")
    out += _fsync_note(d)
    if f:
        ws, p99 = f["writes_per_s"], f["p99_ms"]
        vs_sq = ws / sqlite[best_sqlite]["writes_per_s"] if best_sqlite else None
        vs_dk = ws / duck["writes_per_s"] if duck else None
        out += (f" Targets: FastK at least {t['writes_per_s']:,} writes/s: {ws:,.0f} "
                f"({_verdict(ws >= t['writes_per_s'])}); p99 under {t['p99_ms']:g} ms: {fmt(p99)} ms "
                f"({_verdict(p99 is not None and p99 < t['p99_ms'])}); above SQLite: "
                + (f"{vs_sq:.2f}x {best_sqlite} ({_verdict(vs_sq > 1)})" if vs_sq else "n/a")
                + f"; at least {t['vs_duckdb']:g}x DuckDB: "
                + (f"{vs_dk:.1f}x ({_verdict(vs_dk >= t['vs_duckdb'])})" if vs_dk else "n/a") + ".")
        reg = f.get("registration") or {}
        if reg:
            out += f" Registration of the {reg['series']:,} series: {reg['s']:.2f} s ({reg['method']})."
    else:
        out += " Targets: n/a (FastK failed)."
    out += "\n\nHow:" + _how(d)
    if _checked(d):
        out += "\n\nChecked:" + _checked(d)
    return out + errors_note(sysd)


def t_feed_many(r: dict) -> str:
    d = r["feed_many"]
    if "error" in d:
        return f"(failed: {d['error']})"
    sysd = d["systems"]
    rows = [[k, v["median_ms"], v["p99_ms"], v["best_ms"], v["max_ms"], v["rows_per_s"] / 1e6, v["writes"]]
            for k, v in ok(sysd).items()]
    out = table(["way", "median ms", "p99 ms", "best ms", "max ms", "M rows/s", "writes timed"], rows)
    target = d.get("target_ms", 5.0)
    gap = f", each after {d['gap_ms']:g} ms idle (off the clock)" if d.get("gap_ms") else ""
    out += (f"\n\nEach write: one minute of all {d['series']:,} series ({d['rows_per_write']:,} bars) as one "
            f"all-or-nothing write, durable before the answer; {d['minutes']} timed writes one after the other "
            f"after {d['warmup_minutes']} untimed ones{gap}.")
    for k in ("FastK HTTP", "FastK Flight"):
        v = ok(sysd).get(k)
        if v:
            out += (f" {k}: median {fmt(v['median_ms'])} ms, p99 {fmt(v['p99_ms'])} ms (target under {target:g} ms "
                    f"at the median: {_verdict(v['median_ms'] < target)}; the p99 under {target:g} ms too: "
                    f"{_verdict(v['median_ms'] < target and v['p99_ms'] < target)}).")
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
            out += (f" {k}, the log's committer per write (its debug log): apply median {fmt(c['apply_median_ms'])} "
                    f"ms, slowest {fmt(c['apply_max_ms'])} ms; waiting for the sync after it: median "
                    f"{fmt(c['sync_wait_median_ms'])} ms, longest {fmt(c['sync_wait_max_ms'])} ms.")
            if c.get("blocks"):
                out += (f" The apply helper took {c['helper_blocks_median']:g} of {c['blocks']} blocks at the median; "
                        f"{c['uneven_writes']} of {d['minutes']} writes were split 5 or more blocks from even.")
    out += _fsync_note(d)
    if d.get("http_body_bytes"):
        out += f" HTTP body: {d['http_body_bytes'] / 1e3:.0f} kB of JSON per minute."
    reg = d.get("registration") or {}
    if reg:
        out += f" Registration of the {reg['series']:,} series: {reg['s']:.2f} s ({reg['method']})."
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
    out += "\n\nHow:" + _how(d)
    if _checked(d):
        out += "\n\nChecked:" + _checked(d)
    return out + errors_note(sysd)


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
    chk = d.get("checked") or {}
    out.append("Checked:\n" + "".join(f"\n- {k}: {v}" for k, v in chk.items()))
    return "\n\n".join(out)

MARKET_SECTIONS = ("market_resample", "market_asof", "market_coverage")

def t_series_100k(r: dict) -> str:
    d = r["series_100k"]
    if "error" in d:
        return f"(failed: {d['error']})"
    gb = lambda b: f"{b / 1e9:.2f} GB" if b is not None else "n/a"  # noqa: E731
    mb = lambda b: f"{b / 1e6:.0f} MB" if b is not None else "n/a"  # noqa: E731
    reg = d.get("registration") or {}
    rows = [
        ["register every series (one request)", f"{reg.get('s', 0):.2f} s"],
        ["load (many-series DoPuts)", f"{d['load_s']:.1f} s ({d['rows'] / d['load_s'] / 1e6:.2f} M rows/s)"],
        ["then a clean stop, which folds the log", f"{d['stop_fold_s']:.1f} s"],
        ["files / bytes on disk (du)", f"{d['files']:,} / {gb(d['du_bytes'])}"],
        ["restart (spawn to /health 200)", f"{d['restart_s']:.2f} s"],
        ["RSS after the open / before reading / after reading every series once",
         f"{mb(d.get('rss_open_bytes'))} / {mb(d.get('rss_before_read_bytes'))} / "
         f"{mb(d.get('rss_after_read_bytes'))}"],
        ["read every series once (GetFlightInfo endpoints on 4 threads)",
         f"{d['read_all_s']:.1f} s over {d['read_all_endpoints']} endpoints"],
        ["/inventory page / whole, bytes", f"{d['inventory_page_bytes']:,} / {d['inventory_whole_bytes']:,}"],
    ]
    out = table(["what", "figure"], rows)
    lat = d.get("latency") or {}
    out += "\n\n" + table(["request", "calls", "p50 ms", "p90 ms", "max ms"],
                          [[k, v["n"], v["p50_ms"], v["p90_ms"], v["max_ms"]] for k, v in lat.items()])
    out += (f"\n\n{d['series']:,} series x {d['rows_per_series']:,} 1h bars = {d['rows']:,} rows. "
            f"Mapping budget fastk_mapped_files_max {d.get('mapped_files_max')}, mapped after the reads "
            f"{d.get('mapped_files')}.")
    goals = d.get("goals") or {}
    if goals:
        out += "\n\n" + "\n".join(f"- {k}: {'met' if v else '**not met**'}" for k, v in goals.items())
    out += "\n\nHow: " + d.get("how", "")
    if d.get("checked"):
        out += "\n\nChecked: " + d["checked"]
    return out


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
    if d.get("checked"):
        out += "\n\nChecked: " + d["checked"]
    return out


def t_tls(r: dict) -> str:
    """The `tls` workload (tls.py): the year into Polars over plain Flight and over TLS."""
    d = r["tls"]
    if "error" in d:
        return f"(failed: {d['error']})"
    sysd = d["systems"]
    plain = sysd.get("FastK Flight (plain)", {})
    rows = []
    for k, v in ok(sysd).items():
        vs = v["median_s"] / plain["median_s"] if plain.get("median_s") else None
        rows.append([k, v["median_ms"], v["best_ms"], v["p99_ms"], v["gb_s"], v.get("connect_ms"),
                     f"{vs:.3f}x" if vs else "n/a"])
    out = table(["way", "median ms", "best ms", "p99 ms", "GB/s", "new connection ms", "time vs plain"], rows)
    out += (f"\n\n{d['rows']:,} 1m bars of {d['symbol']} ({d['bytes'] / 1e6:.0f} MB of Arrow data) into a "
            f"Polars DataFrame; {d['rounds']} rounds of {d['reps']} timed reads per way, every answer checked. "
            f"TLS / plain: {fmt(d.get('tls_vs_plain'), 3)} (medians), {fmt(d.get('tls_vs_plain_best'), 3)} "
            f"(best times); per round: "
            + (", ".join(f"{x:.3f}" for x in d.get("tls_vs_plain_rounds") or []) or "n/a")
            + f". A new connection through its first call, TLS / plain: {fmt(d.get('connect_tls_vs_plain'), 2)}.")
    out += "\n\nHow:" + _how(d)
    if d.get("checked"):
        out += "\n\nChecked: " + d["checked"]
    return out + errors_note(sysd)


SECTIONS = {
    "machine": t_machine, "versions": t_versions,
    "limits": t_limits, "ingest": t_ingest, "year": t_year,
    "day_ranges": lambda r: t_latency(r["day_ranges"]), "latest": lambda r: t_latency(r["latest"]),
    "predicate": t_predicate, "disk": t_disk, "http": t_http, "flight": t_flight, "rust": t_rust,
    "sql_year": t_sql_year, "sql_resample": t_sql_resample, "sql_predicate": t_sql_predicate,
    "market_resample": t_market_resample, "market_asof": t_market_asof, "market_coverage": t_market_coverage,
    "colocated": t_colocated,
    "feed": t_feed, "feed_many": t_feed_many, "many_series": t_many_series, "series_100k": t_series_100k, "shards": t_shards,
    "compression": t_compression, "tls": t_tls,
}


def fill_markdown(text: str, r: dict, names=None) -> str:
    """Replaces each `<!-- bench:NAME -->...<!-- /bench:NAME -->` block with its table
    (only the blocks in `names`, when given)."""
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
    return made + market_charts(r, out) + colocated_charts(r, out)


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


def main() -> int:
    """`python -m fastk_bench.report RESULTS.json [DOC.md]`: print the tables, or fill DOC.md."""
    import sys

    r = json.loads(pathlib.Path(sys.argv[1]).read_text())
    if len(sys.argv) > 2:
        doc = pathlib.Path(sys.argv[2])
        doc.write_text(fill_markdown(doc.read_text(), r))
    else:
        print(all_tables(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
