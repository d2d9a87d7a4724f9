"""The live-backup procedure (scripts/fastk-backup.py, docs/operations.md).

A backup taken while writers keep committing must land every series on exactly one
committed version: `fastk admin validate --deep` finds nothing wrong with it, each
series' row count is the count some acknowledged write left behind (never less than
what was acknowledged before the backup started), and a server opened on the backup
returns exactly the records of that version. A naive recursive copy fails these checks
as soon as a write supersedes a file mid-copy; the script restarts such a series from
its newer MANIFEST instead.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import BINARY, stop_cleanly
from fastk_testlib import REPO_ROOT, expect_ok, register_kline, register_scalar

BACKUP_SCRIPT = REPO_ROOT / "scripts" / "fastk-backup.py"
JAN_1_2024_MS = 1_704_067_200_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000
# Months the writers touch; each write hits one of them, so the others stay put.
MONTHS = 3
# Writes acknowledged before the backup starts.
WRITES_BEFORE = 12


def kline_record(ts: int, write_no: int) -> dict[str, int]:
    """A valid bar whose fields encode which write stored it (so upserts are visible)."""
    low = 1_000 + write_no
    return {
        "ts": ts,
        "open": low + 1,
        "high": low + 2 + ts % 7,
        "low": low,
        "close": low + 2,
        "volume": write_no,
    }


class Writer(threading.Thread):
    """Keeps writing to one series over HTTP; logs every acknowledged write.

    Every write picks one month and a random set of minutes in it, so about a third of
    its rows replace rows already stored (upserts rewrite the month copy-on-write and
    supersede its files) and the rest extend it.
    """

    def __init__(self, base: str, path: str, kind: str, seed: int):
        super().__init__(daemon=True)
        self.base, self.path, self.kind = base, path, kind
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # (version, ts list, write number, time acknowledged)
        self.log: list[tuple[int, list[int], int, float]] = []
        self.error: str | None = None
        self.session = requests.Session()

    def write_once(self) -> None:
        write_no = len(self.log) + 1
        month = self.rng.randrange(MONTHS)
        start = JAN_1_2024_MS + month * 31 * DAY_MS
        ts = sorted({start + self.rng.randrange(0, 2_000) * MINUTE_MS for _ in range(60)})
        if self.kind == "kline":
            records = [kline_record(t, write_no) for t in ts]
        else:
            records = [{"ts": t, "value": float(write_no)} for t in ts]
        r = self.session.post(
            f"{self.base}{self.path}/records", json={"records": records}, timeout=60
        )
        body = expect_ok(r, 200)
        with self.lock:
            self.log.append((body["version"], ts, write_no, time.monotonic()))

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.write_once()
                # Short random pauses leave the backup windows to finish a series in;
                # without them a series could change faster than it can be copied.
                self.stop.wait(self.rng.uniform(0, 0.03))
        except Exception as e:  # reported by the test, not lost in the thread
            self.error = repr(e)

    def rows_by_version(self) -> dict[int, int]:
        seen: set[int] = set()
        out = {0: 0}
        for version, ts, _, _ in self.log:
            seen.update(ts)
            out[version] = len(seen)
        return out

    def content_at(self, version: int) -> dict[int, int]:
        """ts -> number of the last write at or before `version` that stored it."""
        out: dict[int, int] = {}
        for v, ts, write_no, _ in self.log:
            if v <= version:
                for t in ts:
                    out[t] = write_no
        return out


def run_fastk(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=timeout)


def inventory(root: Path) -> dict[str, dict]:
    r = run_fastk("admin", "inventory", "--root", str(root))
    assert r.returncode == 0, f"fastk admin inventory failed:\n{r.stdout}\n{r.stderr}"
    body = json.loads(r.stdout)
    series = body["series"] if isinstance(body, dict) else body
    out = {}
    for s in series:
        key = [s["kind"], s["symbol"], s["timeframe"]]
        if s["kind"] == "scalar":
            key += [s["category"], s["name"]]
        out["/".join(key)] = s
    return out


def read_all(base: str, path: str) -> list[dict]:
    records, start = [], None
    while True:
        params = {"limit": 5000}
        if start is not None:
            params["start_ts"] = start
        body = expect_ok(requests.get(f"{base}{path}/records", params=params, timeout=60))
        records += body["records"]
        start = body.get("next_start_ts")
        if start is None:
            return records


def run_backup(root: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BACKUP_SCRIPT), "--root", str(root), "--dest", str(dest), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )


def check_backup(dest: Path, summary: dict, writers: dict[str, Writer], rows_before: dict):
    """The backup validates clean and holds one acknowledged version of every series."""
    check = run_fastk("admin", "validate", "--deep", "--json", "--root", str(dest))
    assert check.returncode == 0, f"validate found problems in the backup:\n{check.stdout}"
    assert json.loads(check.stdout)["findings"] == []
    inv = inventory(dest)
    assert set(inv) == set(writers), inv.keys()
    for name, w in writers.items():
        got = inv[name]
        by_version = w.rows_by_version()
        assert got["version"] in by_version, (
            f"{name}: the backup holds version {got['version']}, which no write acknowledged"
        )
        assert got["rows"] == by_version[got["version"]], (
            f"{name}: {got['rows']} rows at version {got['version']}, "
            f"but that write left {by_version[got['version']]}"
        )
        assert got["rows"] >= rows_before[name], (name, got["rows"], rows_before[name])
        entry = next(s for s in summary["series"] if s["series"] == f"series/{name}")
        assert (entry["version"], entry["rows"]) == (got["version"], got["rows"])
    return inv


@pytest.mark.parametrize("mode", ["copy", "link"])
def test_backup_of_a_live_store_is_consistent(start_server, unique_name, tmp_path, mode):
    # Two chunks per month at most: nearly every write rewrites its month and unlinks
    # the files it superseded, which is exactly what a naive copy trips over.
    server = start_server(f"backup-{mode}", {"FASTK__STORAGE__MAX_CHUNKS_PER_MONTH": "2"})
    http = requests.Session()
    symbol = unique_name("BK")
    expect_ok(register_kline(http, server.http_url, symbol), 200, 201)
    expect_ok(register_scalar(http, server.http_url, symbol, "indicator", "rsi"), 200, 201)
    kline = Writer(server.http_url, f"/v1/kline/{symbol}/1m", "kline", seed=1)
    scalar = Writer(server.http_url, f"/v1/scalar/{symbol}/1m/indicator/rsi", "scalar", seed=2)
    writers = {f"kline/{symbol}/1m": kline, f"scalar/{symbol}/1m/indicator/rsi": scalar}
    for w in writers.values():
        for _ in range(WRITES_BEFORE):
            w.write_once()
    rows_before = {k: w.rows_by_version()[w.log[-1][0]] for k, w in writers.items()}

    # Up to three backups while the writers run, until one had to start a series over
    # because a write superseded a file under it (almost always the first).
    backups = []
    for w in writers.values():
        w.start()
    try:
        for i in range(3):
            dest = tmp_path / f"backup-{i}"
            started = time.monotonic()
            # The pause before each file widens the window in which writes supersede
            # files the backup has not copied yet.
            extra = ["--json", "--throttle-ms", "20"] + (["--link"] if mode == "link" else [])
            result = run_backup(server.root, dest, *extra)
            assert result.returncode == 0, f"backup failed:\n{result.stdout}\n{result.stderr}"
            summary = json.loads(result.stdout)
            backups.append((dest, summary, started, time.monotonic()))
            if summary["restarts"] > 0:
                break
    finally:
        for w in writers.values():
            w.stop.set()
        for w in writers.values():
            w.join(timeout=120)
    for name, w in writers.items():
        assert w.error is None, f"writer of {name} failed: {w.error}"
    assert any(s["restarts"] > 0 for _, s, _, _ in backups), (
        "no backup ever had to start a series over: the concurrent path went untested"
    )
    for dest, summary, started, finished in backups:
        for name, w in writers.items():
            during = [v for v, _, _, at in w.log if started <= at <= finished]
            assert during, f"no write to {name} was acknowledged while {dest.name} ran"
        assert summary["registry"] is True
        assert {s["series"] for s in summary["series"]} == {f"series/{k}" for k in writers}
        if mode == "link":
            assert summary["linked"] > 0, summary
        inv = check_backup(dest, summary, writers, rows_before)

    # Restore: a server opened on the backup serves exactly the records of that version.
    dest = backups[-1][0]
    restored = start_server(f"restored-{mode}", {"FASTK__STORAGE__ROOT": str(dest)})
    version = inv[f"kline/{symbol}/1m"]["version"]
    want = kline.content_at(version)
    records = read_all(restored.http_url, f"/v1/kline/{symbol}/1m")
    assert [r["ts"] for r in records] == sorted(want)
    assert all(r == kline_record(r["ts"], want[r["ts"]]) for r in records)
    stop_cleanly(restored)
    stop_cleanly(server)


def test_backup_refuses_an_existing_destination_and_a_non_store(tmp_path, start_server):
    server = start_server("backup-refusals")
    existing = tmp_path / "exists"
    existing.mkdir()
    r = run_backup(server.root, existing)
    assert r.returncode == 1 and "already exists" in r.stderr, r.stderr
    r = run_backup(tmp_path / "nowhere", tmp_path / "b1")
    assert r.returncode == 1 and "not a FastK data root" in r.stderr, r.stderr
    assert not (tmp_path / "b1").exists()
    # An empty store backs up to an empty store that validates clean.
    r = run_backup(server.root, tmp_path / "empty")
    assert r.returncode == 0, r.stderr
    check = run_fastk("admin", "validate", "--root", str(tmp_path / "empty"))
    assert check.returncode == 0, check.stdout + check.stderr
