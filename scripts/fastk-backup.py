#!/usr/bin/env python3
"""Consistent backup of a FastK data root, safe while the server is running.

Usage:
    scripts/fastk-backup.py --root DATA_ROOT --dest NEW_DIR [--link] [--throttle-ms N] [--json]

Why the copy is consistent without stopping the server (docs/operations.md has more):

* Every data file (``<YYYY-MM>.g<generation>.chunk`` and its ``.zmap``/``.vidx``
  sidecars) is written under a temp name, fsynced and renamed into place, and never
  modified afterwards; superseded files are only unlinked. Generations only grow, so
  within one series directory a name always means the same bytes.
* A series' ``MANIFEST`` is replaced atomically by rename and is the commit point: the
  set of files it lists as live *is* the committed state of that series.

So, per series, the script reads the MANIFEST bytes once, copies (or hard-links) every
file that manifest lists as live, and writes those same MANIFEST bytes last. If a listed
file vanished meanwhile (a concurrent write or compaction superseded and unlinked it),
that series starts over from its newer MANIFEST, keeping the files already copied that
are still listed. Each series therefore lands exactly at one committed version.
``registry.sqlite`` (SQLite in WAL mode) is copied with SQLite's online backup API,
which yields a transactionally consistent snapshot. Storage is the source of truth for
the series catalog: the server reconciles the registry with storage when it opens, so
a series created or deleted during the backup cannot leave the copy inconsistent.

Different series are captured at slightly different moments (each at a committed
version); a write is all-or-nothing per series, so no write is ever half in the backup.

The backup is assembled in ``NEW_DIR.partial-<pid>`` and renamed to ``NEW_DIR`` only when
complete. Verify it with ``fastk admin validate --deep --root NEW_DIR``.
Standard library only; exit status 0 on success, 1 on failure, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sqlite3
import struct
import sys
import time

MANIFEST_NAME = "MANIFEST"
REGISTRY_FILE = "registry.sqlite"
MANIFEST_MAGIC = b"FASTKMAN"
MANIFEST_FORMAT_VERSION = 1
MANIFEST_HEADER_LEN = 288
MANIFEST_ENTRY_LEN = 128
STATE_LIVE = 0
# Depth of a series directory below <root>/series, by kind (see src/storage/mod.rs).
SERIES_DEPTH = {"kline": 3, "scalar": 5}
# A series whose MANIFEST keeps changing under us is retried this many times.
DEFAULT_MAX_ATTEMPTS = 1000
# A series directory without a MANIFEST for this long is not being registered: it is
# broken (the server reports it as series_unopenable) and is left out with a warning.
NO_MANIFEST_GRACE_S = 2.0


class BackupError(Exception):
    """A problem that makes the backup unusable; the message is for the operator."""


class Superseded(Exception):
    """A file the manifest listed vanished or changed: a newer manifest replaced it."""


class NoManifest(Exception):
    """A series directory that has had no MANIFEST for longer than a registration takes."""


def month_name(month: int) -> str:
    """Months since 1970-01 to ``YYYY-MM`` (as MonthPartition's Display does)."""
    year, m0 = divmod(month, 12)
    return f"{1970 + year:04d}-{m0 + 1:02d}"


def data_file_name(month: int, generation: int, ext: str) -> str:
    """The name src/storage/chunk.rs data_file_name gives a data file."""
    return f"{month_name(month)}.g{generation:016x}.{ext}"


def parse_manifest(data: bytes, where: str) -> tuple[int, int, list[tuple[str, int]]]:
    """Returns (series version, rows, [(file name, expected length)]) of the live entries.

    Layout (src/storage/format.rs Manifest::encode): magic at 0, format version u32 at
    8, entry count u32 at 12, version u64 at 16; entries of 128 bytes from offset 288;
    in an entry: month i32 at +0, generation u64 at +8, rows u64 at +16, chunk file
    length u64 at +40,
    zone-map length u64 at +72, value-index length u64 at +88, state u8 at +96.
    """
    if len(data) < MANIFEST_HEADER_LEN + 8 or data[:8] != MANIFEST_MAGIC:
        raise BackupError(f"{where}: not a FastK manifest (run fastk admin validate)")
    fmt_version, count, version = struct.unpack_from("<IIQ", data, 8)
    if fmt_version != MANIFEST_FORMAT_VERSION:
        raise BackupError(f"{where}: manifest format version {fmt_version} is not supported")
    if len(data) != MANIFEST_HEADER_LEN + count * MANIFEST_ENTRY_LEN + 8:
        raise BackupError(f"{where}: manifest length disagrees with its entry count")
    files = []
    rows = 0
    for i in range(count):
        at = MANIFEST_HEADER_LEN + i * MANIFEST_ENTRY_LEN
        (month,) = struct.unpack_from("<i", data, at)
        (generation,) = struct.unpack_from("<Q", data, at + 8)
        (entry_rows,) = struct.unpack_from("<Q", data, at + 16)
        (chunk_len,) = struct.unpack_from("<Q", data, at + 40)
        (zmap_len,) = struct.unpack_from("<Q", data, at + 72)
        (vidx_len,) = struct.unpack_from("<Q", data, at + 88)
        if data[at + 96] != STATE_LIVE:
            continue
        rows += entry_rows
        files.append((data_file_name(month, generation, "chunk"), chunk_len))
        if zmap_len > 0:
            files.append((data_file_name(month, generation, "zmap"), zmap_len))
        if vidx_len > 0:
            files.append((data_file_name(month, generation, "vidx"), vidx_len))
    return version, rows, files


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durable(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def series_dirs(root: str):
    """Yields (relative path, absolute path) of every series directory, like the server."""
    base = os.path.join(root, "series")
    for kind, depth in SERIES_DEPTH.items():
        top = os.path.join(base, kind)
        stack = [(top, [kind])]
        while stack:
            path, parts = stack.pop()
            if len(parts) == depth:
                yield "/".join(["series"] + parts), path
                continue
            try:
                names = sorted(os.listdir(path), reverse=True)
            except FileNotFoundError:
                continue  # deleted meanwhile, or no series of this kind
            for name in names:
                child = os.path.join(path, name)
                if os.path.isdir(child):
                    stack.append((child, parts + [name]))


class Copier:
    """Copies or hard-links files; remembers what it did for the summary."""

    def __init__(self, link: bool, throttle_s: float):
        self.link = link
        self.throttle_s = throttle_s
        self.files = 0
        self.bytes = 0
        self.linked = 0

    def put(self, src: str, dst: str, expected_len: int) -> None:
        """Places src at dst; raises Superseded when src is gone or not what was listed."""
        if self.throttle_s:
            time.sleep(self.throttle_s)
        try:
            size = os.stat(src).st_size
            if size != expected_len:
                # A published file never changes, so a different length means the name
                # now holds something else (an admin repair rebuilt a sidecar).
                raise Superseded(f"{src}: {size} bytes, the manifest says {expected_len}")
            if self.link:
                try:
                    os.link(src, dst)
                    self.linked += 1
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    self._copy(src, dst)
            else:
                self._copy(src, dst)
        except FileNotFoundError as e:
            raise Superseded(str(e)) from e
        self.files += 1
        self.bytes += expected_len

    @staticmethod
    def _copy(src: str, dst: str) -> None:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())


def backup_series(rel: str, src_dir: str, dst_dir: str, copier: Copier, max_attempts: int):
    """Copies one series at one committed version; returns its summary or None if gone."""
    restarts = 0
    placed: dict[str, int] = {}  # file name -> length, already in dst_dir
    os.makedirs(dst_dir, exist_ok=True)
    first_missing = None
    for _ in range(max_attempts):
        try:
            identity = os.stat(src_dir)
            with open(os.path.join(src_dir, MANIFEST_NAME), "rb") as f:
                manifest = f.read()
        except FileNotFoundError:
            if not os.path.isdir(src_dir):
                shutil.rmtree(dst_dir, ignore_errors=True)
                return None  # deleted while we were running: not part of the backup
            # Registered a moment ago: the directory exists, its MANIFEST not yet.
            first_missing = first_missing or time.monotonic()
            if time.monotonic() - first_missing > NO_MANIFEST_GRACE_S:
                shutil.rmtree(dst_dir, ignore_errors=True)
                raise NoManifest(f"{rel} has no {MANIFEST_NAME}; left out of the backup")
            time.sleep(0.01)
            continue
        version, rows, files = parse_manifest(manifest, f"{rel}/{MANIFEST_NAME}")
        try:
            for name, length in files:
                if placed.get(name) == length:
                    continue  # same name in the same directory: same immutable bytes
                dst = os.path.join(dst_dir, name)
                if os.path.lexists(dst):
                    os.unlink(dst)
                copier.put(os.path.join(src_dir, name), dst, length)
                placed[name] = length
            again = os.stat(src_dir)
            if (again.st_dev, again.st_ino) != (identity.st_dev, identity.st_ino):
                # Deleted and registered again: names may now mean different bytes.
                placed.clear()
                shutil.rmtree(dst_dir, ignore_errors=True)
                os.makedirs(dst_dir, exist_ok=True)
                raise Superseded(f"{rel} was deleted and re-created")
        except Superseded:
            restarts += 1
            continue
        # Files of earlier attempts that this manifest no longer lists.
        listed = {name for name, _ in files}
        for name in list(placed):
            if name not in listed:
                os.unlink(os.path.join(dst_dir, name))
                del placed[name]
        write_file_durable(os.path.join(dst_dir, MANIFEST_NAME), manifest)
        fsync_path(dst_dir)
        return {
            "series": rel,
            "version": version,
            "rows": rows,
            "files": len(files),
            "bytes": sum(length for _, length in files),
            "restarts": restarts,
        }
    raise BackupError(
        f"{rel}: still changing after {max_attempts} attempts; retry when writes are quieter"
    )


def backup_registry(root: str, dest: str) -> bool:
    """Copies registry.sqlite with SQLite's online backup API; False when there is none."""
    src_path = os.path.join(root, REGISTRY_FILE)
    if not os.path.exists(src_path):
        return False
    # Not read-only: reading a WAL database may need to create or update its -shm file.
    src = sqlite3.connect(src_path, timeout=30)
    dst = sqlite3.connect(os.path.join(dest, REGISTRY_FILE))
    try:
        src.backup(dst)
        # A self-contained file: no -wal or -shm has to travel with it.
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.commit()
    finally:
        dst.close()
        src.close()
    fsync_path(os.path.join(dest, REGISTRY_FILE))
    return True


def fsync_tree(path: str) -> None:
    for dirpath, _, _ in os.walk(path, topdown=False):
        fsync_path(dirpath)


def run(args) -> dict:
    root = os.path.abspath(args.root)
    dest = os.path.abspath(args.dest)
    if not os.path.isdir(os.path.join(root, "series")):
        raise BackupError(f"{root} is not a FastK data root (no series/ directory)")
    if os.path.exists(dest):
        raise BackupError(f"{dest} already exists; choose a new directory")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    staging = f"{dest}.partial-{os.getpid()}"
    os.makedirs(os.path.join(staging, "series"))
    started = time.time()
    copier = Copier(args.link, args.throttle_ms / 1000.0)
    try:
        registry = backup_registry(root, staging)
        series = []
        skipped = []
        for rel, src_dir in series_dirs(root):
            try:
                done = backup_series(
                    rel, src_dir, os.path.join(staging, rel), copier, args.max_attempts
                )
            except NoManifest as e:
                print(f"fastk-backup: warning: {e}", file=sys.stderr)
                skipped.append(rel)
                continue
            if done is not None:
                series.append(done)
                if not args.json:
                    print(
                        f"{done['series']}: version {done['version']}, {done['rows']} rows,"
                        f" {done['files']} files"
                        + (f", {done['restarts']} restarts" if done["restarts"] else ""),
                        file=sys.stderr,
                    )
        fsync_tree(staging)
        os.rename(staging, dest)
        fsync_path(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "root": root,
        "dest": dest,
        "registry": registry,
        "series": series,
        "skipped": skipped,
        "files": copier.files,
        "linked": copier.linked,
        "bytes": copier.bytes,
        "restarts": sum(s["restarts"] for s in series),
        "duration_s": round(time.time() - started, 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Consistent backup of a FastK data root, safe while the server runs."
    )
    parser.add_argument("--root", required=True, help="the server's storage.root")
    parser.add_argument("--dest", required=True, help="new directory to create for the backup")
    parser.add_argument(
        "--link",
        action="store_true",
        help="hard-link data files instead of copying (same filesystem only; falls back to"
        " copying). Fast and space-free, but shares the disk with the original.",
    )
    parser.add_argument(
        "--throttle-ms",
        type=float,
        default=0.0,
        help="pause before each file, to limit the I/O a backup takes from a busy server",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        help="give up on a series whose manifest changed this many times while copying",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        summary = run(args)
    except BackupError as e:
        print(f"fastk-backup: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"fastk-backup: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"backup of {summary['root']} in {summary['dest']}: {len(summary['series'])} series,"
            f" {summary['files']} files, {summary['bytes']} bytes,"
            f" registry {'copied' if summary['registry'] else 'absent'},"
            f" {summary['restarts']} restarts, {summary['duration_s']} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
