"""The live-backup procedure (scripts/fastk-backup.py, docs/operations.md).

A backup taken while writers keep committing must land every series on exactly one
committed version: `fastk admin validate --deep` finds nothing wrong with it, each
series' row count is the count some acknowledged write left behind (never less than
what was acknowledged before the backup started), and a server opened on the backup
returns exactly the records of that version. A naive recursive copy fails these checks
as soon as a write supersedes a file mid-copy; the script restarts such a series from
its newer MANIFEST instead.

Small writes are durable in the write-ahead log (`wal/*.wal`) first and folded into
chunk files later, so the script copies the log before any manifest. Checked here: a
backup of a store whose rows are all still in the log restores every row (the server
replays the copied log); a log copied before a fold or a registration it then sees in
a manifest is topped up, so the restored store reopens after a crash; manifests of
format version 1 (the committed fixture store) and version 2 are both read.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import struct
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
# A store written before the write-ahead log: every manifest is format version 1.
STORE_V1 = REPO_ROOT / "tests" / "fixtures" / "store_v1"
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


def read_all(base: str, path: str, snapshot: str | None = None) -> list[dict]:
    records, start = [], None
    while True:
        params: dict = {"limit": 5000}
        if snapshot is not None:
            params["snapshot"] = snapshot
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
        # The summary reports the copied MANIFEST (the folded state); the copied log
        # adds the rows not folded yet when the backup is opened.
        assert entry["version"] <= got["version"], (name, entry, got["version"])
        assert entry["rows"] <= got["rows"], (name, entry, got["rows"])
    return inv


@pytest.mark.parametrize("mode", ["copy", "link"])
def test_backup_of_a_live_store_is_consistent(start_server, unique_name, tmp_path, mode):
    # Two chunks per month at most: nearly every fold rewrites its month and unlinks
    # the files it superseded, which is exactly what a naive copy trips over. Writes of
    # 60 rows go to the log; a fold every 100 rows keeps the chunk files changing, and
    # leaves up to 100 rows per series only in the log when the backup copies it.
    server = start_server(
        f"backup-{mode}",
        {"FASTK__STORAGE__MAX_CHUNKS_PER_MONTH": "2", "FASTK__STORAGE__FOLD_ROWS": "100"},
    )
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
        assert summary["wal"]["segments"] >= 1, summary["wal"]
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


# ---------------------------------------------------------------------------
# The write-ahead log and the manifest formats


def load_backup_module():
    """scripts/fastk-backup.py as a module (its file name is not an identifier)."""
    spec = importlib.util.spec_from_file_location("fastk_backup", BACKUP_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifest_format(path: Path) -> tuple[int, int]:
    """(format version, wal_lsn) of a MANIFEST file, checking its length by the version's
    fixed part (288 bytes in version 1, 304 in version 2), 128-byte entries and the
    8-byte trailer."""
    data = path.read_bytes()
    assert data[:8] == b"FASTKMAN", path
    fmt, count = struct.unpack_from("<II", data, 8)
    header = {1: 288, 2: 304}[fmt]
    assert len(data) == header + count * 128 + 8, (path, fmt, count, len(data))
    wal_lsn = struct.unpack_from("<Q", data, 288)[0] if fmt == 2 else 0
    return fmt, wal_lsn


def bars(start: int, n: int, tag: int) -> list[dict[str, int]]:
    return [kline_record(JAN_1_2024_MS + (start + i) * MINUTE_MS, tag) for i in range(n)]


def series_state(base: str, paths: list[str]) -> dict[str, tuple[int, list[dict]]]:
    out = {}
    for p in paths:
        meta = expect_ok(requests.get(f"{base}{p}", timeout=30))
        out[p] = (meta["version"], read_all(base, p))
    return out


def test_backup_keeps_snapshots_and_the_files_they_read(start_server, unique_name, tmp_path):
    """A snapshot whose chunk files the live series no longer serves (rewritten and
    compacted after it) and which holds rows only in the log: the backup copies the
    snapshot file and those files, and a server on the restored copy reads the
    snapshot and the series exactly as the original did."""
    server = start_server("backup-snap")
    http = requests.Session()
    sym = unique_name("BSN")
    path = f"/v1/kline/{sym}/1m"
    expect_ok(register_kline(http, server.http_url, sym), 201)
    expect_ok(http.post(f"{server.http_url}{path}/records",
                        json={"records": bars(0, 3000, 1)}, timeout=60))
    expect_ok(http.post(f"{server.http_url}/v1/admin/compact", json={}, timeout=120))
    expect_ok(http.post(f"{server.http_url}{path}/records",
                        json={"records": bars(3000, 5, 2)}, timeout=60))  # log only
    expect_ok(http.post(f"{server.http_url}/v1/snapshots", json={"name": "bk"}, timeout=60), 201)
    # A derive rule: copied with the backup, and its series read alike after the restore.
    expect_ok(http.post(f"{server.http_url}/v1/kline/derive", json={
        "from_timeframe": "1m", "timeframe": "1h", "symbols": [sym]}, timeout=60), 201)
    # The month is rewritten and compacted: its old file is kept for the snapshot only.
    expect_ok(http.post(f"{server.http_url}{path}/records",
                        json={"records": bars(100, 50, 3)}, timeout=60))
    expect_ok(http.post(f"{server.http_url}/v1/admin/compact", json={}, timeout=120))
    inv = expect_ok(http.get(f"{server.http_url}/inventory", timeout=30))
    assert inv["snapshot_only_bytes"] > 0, inv
    want_snap = read_all(server.http_url, path, "bk")
    want_live = read_all(server.http_url, path)
    assert len(want_snap) == 3005 and want_snap != want_live

    dest = tmp_path / "backup"
    result = run_backup(server.root, dest, "--json")
    assert result.returncode == 0, f"backup failed:\n{result.stdout}\n{result.stderr}"
    summary = json.loads(result.stdout)
    assert summary["snapshots"] == ["bk"]
    assert summary["derive_rules"] is True
    check = run_fastk("admin", "validate", "--deep", "--json", "--root", str(dest))
    assert check.returncode == 0, f"validate found problems in the backup:\n{check.stdout}"

    root = tmp_path / "restored-root"
    shutil.copytree(dest, root)
    restored = start_server("backup-snap-restored", {"FASTK__STORAGE__ROOT": str(root)})
    assert read_all(restored.http_url, path, "bk") == want_snap
    assert read_all(restored.http_url, path) == want_live
    rules = expect_ok(requests.get(f"{restored.http_url}/v1/kline/derive", timeout=30))["rules"]
    assert [(r["from_timeframe"], r["timeframe"]) for r in rules] == [("1m", "1h")]
    hourly = expect_ok(requests.get(f"{restored.http_url}{path}/records",
                                    params={"resample": "1h", "limit": 100000}, timeout=30))
    derived = expect_ok(requests.get(f"{restored.http_url}/v1/kline/{sym}/1h/records",
                                     params={"limit": 100000}, timeout=30))
    assert [r["close"] for r in derived["records"]] == [r["close"] for r in hourly["records"]]
    assert len(derived["records"]) > 0
    stop_cleanly(restored)
    stop_cleanly(server)


def test_backup_holds_rows_only_in_the_log(start_server, unique_name, tmp_path):
    """Nothing is folded when the backup runs (default fold thresholds): every row is in
    the copied log only, and a server opened on a restored copy replays it."""
    server = start_server("backup-wal")
    http = requests.Session()
    k1, k2, sc = unique_name("BW1"), unique_name("BW2"), unique_name("BWS")
    expect_ok(register_kline(http, server.http_url, k1), 201)
    expect_ok(register_kline(http, server.http_url, k2), 201)
    expect_ok(register_scalar(http, server.http_url, sc, "indicator", "rsi"), 201)
    paths = [f"/v1/kline/{k1}/1m", f"/v1/kline/{k2}/1m", f"/v1/scalar/{sc}/1m/indicator/rsi"]
    for i in range(3):  # single-series writes
        expect_ok(http.post(f"{server.http_url}{paths[0]}/records",
                            json={"records": bars(i * 5, 5, i)}, timeout=30))
    expect_ok(http.post(f"{server.http_url}{paths[2]}/records",
                        json={"records": [{"ts": JAN_1_2024_MS, "value": 0.5}]}, timeout=30))
    many = [dict(r, symbol=sym) for sym in (k2, k1) for r in bars(12, 6, 9)]  # replaces 3 of k1
    body = expect_ok(http.post(f"{server.http_url}/v1/kline/records",
                               json={"timeframe": "1m", "records": many}, timeout=30))
    assert (body["inserted"], body["replaced"]) == (9, 3), body
    inv = expect_ok(http.get(f"{server.http_url}/inventory", timeout=30))
    assert inv["log"]["unfolded_rows"] == 18 + 6 + 1, inv["log"]
    assert inv["total_files"] == 0 and all(s["files"] == 0 for s in inv["series"]), inv
    want = series_state(server.http_url, paths)

    dest = tmp_path / "backup"
    result = run_backup(server.root, dest, "--json")
    assert result.returncode == 0, f"backup failed:\n{result.stdout}\n{result.stderr}"
    summary = json.loads(result.stdout)
    assert summary["wal"]["segments"] >= 1 and summary["wal"]["bytes"] > 0, summary["wal"]
    assert sorted(p.name for p in (dest / "wal").glob("*.wal")), "no log segment copied"
    # Nothing folded: no series has a directory yet; the catalog registers them and
    # their rows are in the copied log.
    assert summary["series"] == [], summary["series"]
    assert summary["catalog"]["series"] == 3, summary["catalog"]
    assert (dest / "CATALOG").read_bytes() == (server.root / "CATALOG").read_bytes()
    assert not any((dest / "series").rglob("MANIFEST"))
    # The store's format version file goes with it.
    assert summary["format_version"] == 3, summary
    assert (dest / "FORMAT").read_bytes() == (server.root / "FORMAT").read_bytes()

    # Restore into a new root: copy the backup into place and start a server on it.
    root = tmp_path / "restored-root"
    shutil.copytree(dest, root)
    restored = start_server("backup-wal-restored", {"FASTK__STORAGE__ROOT": str(root)})
    assert "replayed the write-ahead log" in restored.log_text(), restored.log_tail()
    assert series_state(restored.http_url, paths) == want
    stop_cleanly(restored)
    stop_cleanly(server)
    # The backup itself validates clean too (the offline open replays its log).
    check = run_fastk("admin", "validate", "--deep", "--json", "--root", str(dest))
    assert check.returncode == 0, f"validate found problems in the backup:\n{check.stdout}"


def test_backup_tops_up_a_log_that_manifests_passed(start_server, unique_name, tmp_path,
                                                     monkeypatch, capsys):
    """Writes and a registration between the log copy and the manifest copy (made
    deterministic by running the script in-process with a hook after its log copy): the
    new series' manifest holds a log position past the copied log. The script copies
    the log again; the restored server then reopens after a SIGKILL."""
    server = start_server("backup-topup")
    http = requests.Session()
    s1, s2 = unique_name("TU1"), unique_name("TU2")
    expect_ok(register_kline(http, server.http_url, s1), 201)
    p1, p2 = f"/v1/kline/{s1}/1m", f"/v1/kline/{s2}/1m"
    for i in range(3):
        expect_ok(http.post(f"{server.http_url}{p1}/records",
                            json={"records": bars(i, 1, i)}, timeout=30))

    backup = load_backup_module()
    copy_log = backup.backup_wal

    def log_then_writes(root, dest, copier):
        out = copy_log(root, dest, copier)
        for i in range(3, 5):
            expect_ok(http.post(f"{server.http_url}{p1}/records",
                                json={"records": bars(i, 1, i)}, timeout=30))
        expect_ok(register_kline(http, server.http_url, s2), 201)
        return out

    monkeypatch.setattr(backup, "backup_wal", log_then_writes)
    dest = tmp_path / "backup"
    assert backup.main(["--root", str(server.root), "--dest", str(dest), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "warning" not in captured.err, captured.err
    assert summary["wal"]["topped_up"] is True, summary["wal"]
    # s2 has no directory yet: the catalog copied after the series holds its position.
    assert [e["series"] for e in summary["series"]] == [], summary["series"]
    assert summary["catalog"]["series"] == 2, summary["catalog"]
    assert summary["catalog"]["highest_wal_lsn"] > 0, summary["catalog"]
    want = series_state(server.http_url, [p1])
    stop_cleanly(server)

    restored = start_server("backup-topup-restored", {"FASTK__STORAGE__ROOT": str(dest)})
    # s1 has every write: its manifest (nothing folded) plus the topped-up log.
    assert series_state(restored.http_url, [p1]) == want
    assert len(want[p1][1]) == 5
    row = bars(100, 1, 7)
    expect_ok(http.post(f"{restored.http_url}{p2}/records", json={"records": row}, timeout=30))
    restored.kill()  # SIGKILL: the next open reads the whole log again
    restored.start()
    assert series_state(restored.http_url, [p1]) == want
    assert read_all(restored.http_url, p2) == row
    stop_cleanly(restored)


def test_backup_reads_manifest_format_1_and_2(start_server, tmp_path):
    """The committed fixture store (format version 1 manifests) backs up and restores;
    a write then makes one manifest version 2 (with wal_lsn), and the next backup reads
    the mixed store. The parser refuses an unknown version and a wrong length."""
    assert STORE_V1.is_dir(), f"{STORE_V1} is missing"
    root = tmp_path / "v1"
    shutil.copytree(STORE_V1, root, ignore=shutil.ignore_patterns("LOCK"))
    manifests = sorted(root.glob("series/**/MANIFEST"))
    assert len(manifests) == 3 and {manifest_format(m)[0] for m in manifests} == {1}

    dest = tmp_path / "backup-v1"
    result = run_backup(root, dest, "--json")
    assert result.returncode == 0, f"backup failed:\n{result.stdout}\n{result.stderr}"
    summary = json.loads(result.stdout)
    assert summary["wal"]["segments"] == 0
    rows = {e["series"]: e["rows"] for e in summary["series"]}
    kline = "series/kline/BTCUSDT/1h"
    assert rows == {kline: 1000, "series/scalar/ETHUSDT/1h/feature/f": 900,
                    "series/scalar/ETHUSDT/1h/feature/n": 100}, rows
    for m in manifests:
        assert (dest / m.relative_to(root)).read_bytes() == m.read_bytes()

    # The stop below folds the log, so a manifest is rewritten in format 2.
    server = start_server("backup-v1-restored", {"FASTK__STORAGE__ROOT": str(dest),
                                                 "FASTK__STORAGE__FOLD_ON_STOP": "true"})
    http = requests.Session()
    versions = {e["series"]: e["version"] for e in summary["series"]}
    meta = expect_ok(http.get(f"{server.http_url}/v1/kline/BTCUSDT/1h", timeout=30))
    assert (meta["rows"], meta["version"]) == (1000, versions[kline]), meta
    meta = expect_ok(http.get(f"{server.http_url}/v1/scalar/ETHUSDT/1h/feature/f", timeout=30))
    assert meta["rows"] == 900, meta
    last = read_all(server.http_url, "/v1/kline/BTCUSDT/1h")[-1]
    new = dict(last, ts=last["ts"] + 3_600_000)
    expect_ok(http.post(f"{server.http_url}/v1/kline/BTCUSDT/1h/records",
                        json={"records": [new]}, timeout=30))
    stop_cleanly(server)  # a clean stop folds the log: that manifest is rewritten
    fmt, wal_lsn = manifest_format(dest / kline / "MANIFEST")
    assert fmt == 2 and wal_lsn > 0, (fmt, wal_lsn)

    again = tmp_path / "backup-v2"
    result = run_backup(dest, again, "--json")
    assert result.returncode == 0, f"backup failed:\n{result.stdout}\n{result.stderr}"
    entries = {e["series"]: e for e in json.loads(result.stdout)["series"]}
    assert entries[kline]["rows"] == 1001 and entries[kline]["wal_lsn"] == wal_lsn
    assert entries[kline]["version"] > versions[kline]
    assert entries["series/scalar/ETHUSDT/1h/feature/n"]["wal_lsn"] == 0
    inv = inventory(again)
    assert inv["kline/BTCUSDT/1h"]["rows"] == 1001

    backup = load_backup_module()
    data = (again / kline / "MANIFEST").read_bytes()
    version, nrows, files, lsn = backup.parse_manifest(data, "v2")
    assert (version, nrows, lsn) == (entries[kline]["version"], 1001, wal_lsn)
    assert files and all((again / kline / name).stat().st_size == n for name, n in files)
    v1 = (again / "series/scalar/ETHUSDT/1h/feature/n/MANIFEST").read_bytes()
    assert backup.parse_manifest(v1, "v1")[1] == 100 and backup.parse_manifest(v1, "v1")[3] == 0
    with pytest.raises(backup.BackupError, match="format version 4 is not supported"):
        backup.parse_manifest(data[:8] + struct.pack("<I", 4) + data[12:], "v4")
    # A version 2 manifest cut to the version 1 length (or the other way round).
    with pytest.raises(backup.BackupError, match="length disagrees"):
        backup.parse_manifest(data[:288] + data[304:], "short")
    with pytest.raises(backup.BackupError, match="length disagrees"):
        backup.parse_manifest(v1[:8] + struct.pack("<I", 2) + v1[12:], "v1 as v2")
