"""Clocks and summaries. Benchmarks report; nothing here asserts on time."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (0..100) by nearest rank, of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summarize(lat_s: list[float], wall_s: float) -> dict:
    """Latency percentiles in ms and throughput for a run of `len(lat_s)` calls."""
    return {
        "n": len(lat_s),
        "p50_ms": pct(lat_s, 50) * 1e3,
        "p99_ms": pct(lat_s, 99) * 1e3,
        "mean_ms": statistics.fmean(lat_s) * 1e3,
        "ops_per_s": len(lat_s) / wall_s if wall_s > 0 else None,
    }


def latency_loop(call: Callable[[object], object], args: list, budget_s: float,
                 check: Callable[[object, object], None] | None = None) -> dict:
    """Calls `call(a)` for each `a` in order until done or `budget_s` has passed.

    Slow systems therefore answer fewer queries; the count actually run is reported
    with the percentiles, so a truncated run is visible rather than hidden.
    `check(a, answer)` runs on every answer after its clock stopped; the time it
    takes is left out of the budget too, so checking does not cut a system's calls.
    """
    lat = []
    spent = 0.0
    for a in args:
        t = time.perf_counter()
        answer = call(a)
        dt = time.perf_counter() - t
        lat.append(dt)
        spent += dt
        if check is not None:
            check(a, answer)
        if spent > budget_s:
            break
    out = summarize(lat, spent)
    out["planned"] = len(args)
    if check is not None:
        out["checked"] = len(lat)
    return out


def repeat(call: Callable[[], object], reps: int, budget_s: float = 60.0) -> tuple[list[float], object]:
    """Runs `call` `reps` times (fewer if over budget, at least once): times and last result."""
    times = []
    result = None
    t0 = time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - t0 > budget_s:
            break
    return times, result


def timed(call: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    r = call()
    return time.perf_counter() - t, r
