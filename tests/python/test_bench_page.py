"""docs/benchmarks.md is generated from one committed full run (issue [8 of 8]).

The page must be exactly what `python -m fastk_bench.report` writes from the results
file it cites, stay under 400 lines, change when a figure changes (no figure is typed
by hand), and never be written from a quick or --only run.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "full" / "results.json"
PAGE = ROOT / "docs" / "benchmarks.md"


def report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastk_bench.report", *args],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "bench"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_page_is_what_the_committed_run_generates():
    done = report(str(RESULTS.relative_to(ROOT)), str(PAGE.relative_to(ROOT)), "--check")
    assert done.returncode == 0, done.stderr


def test_the_page_is_a_reference_under_400_lines_citing_its_run():
    text = PAGE.read_text()
    assert len(text.splitlines()) < 400
    started = json.loads(RESULTS.read_text())["started"]
    assert "bench/results/full/results.json" in text
    assert started in text, f"the page does not cite its run's start {started}"


def test_a_changed_figure_changes_the_page(tmp_path):
    r = json.loads(RESULTS.read_text())
    r["started"] = "2001-02-03T04:05:06Z"
    changed = tmp_path / "results.json"
    changed.write_text(json.dumps(r))
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE.read_text())
    # The committed page is not what the changed run gives...
    assert report(str(changed), str(page), "--check").returncode == 1
    # ...and writing it puts the changed run in.
    done = report(str(changed), str(page))
    assert done.returncode == 0, done.stderr
    assert "2001-02-03T04:05:06Z" in page.read_text()


def test_a_quick_or_only_run_never_writes_the_page(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("untouched\n")
    for mode in ("quick", "full, only feed"):
        r = json.loads(RESULTS.read_text())
        r["mode"] = mode
        results = tmp_path / "results.json"
        results.write_text(json.dumps(r))
        done = report(str(results), str(page))
        assert done.returncode == 2, (mode, done.stderr)
        assert page.read_text() == "untouched\n"


def test_the_ticks_journal_states_its_committed_run():
    """The tick journal's figures are those of bench/results/only/ticks.json, and the
    report renders that run's table (every section it names)."""
    raw = json.loads((ROOT / "bench" / "results" / "only" / "ticks.json").read_text())
    t = raw["ticks"]
    journal = (ROOT / "docs" / "benchmarks" / "journal" / "2026-11-26-ticks.md").read_text()
    assert raw["started"] in journal
    figures = [
        f"{t['trades']:,}",
        f"{t['ingest']['FastK']['rows_per_s'] / 1e6:.2f} M trades/s",
        f"{t['read_one']['of_ceiling'] * 100:.1f}% of the ceiling",
        f"{t['bars']['FastK']:,.0f} ms",
        f"{t['tape']['FastK']:,.0f} ms",
        f"{t['bytes']['FastK']['per_trade']:.2f}",
        f"{t['bytes']['FastK']['per_quote']:.2f}",
        f"{t['checked']} of them",
        f"{t['live_feed']['FastK']['trades_per_s'] / 1e6:.2f} M trades/s acknowledged durable",
        f"p99 {t['live_feed']['FastK']['p99_ms']:.1f} ms",
    ]
    for f in figures:
        assert f in journal, f"the journal does not state {f!r} from its run"
    sys.path.insert(0, str(ROOT / "bench"))
    from fastk_bench import report as rep  # noqa: E402 - the bench package, not installed

    table = rep.t_ticks(raw)
    for part in ("Bulk ingest", "The tape", "1m bars from trades", "Trades with the quote in force",
                 "Bytes once sealed", "The live feed"):
        assert part in table
