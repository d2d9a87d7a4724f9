#!/usr/bin/env python3
"""Consistent backup of a FastK data root, safe while the server is running.

Usage:
    scripts/fastk-backup.py --root DATA_ROOT --dest NEW_DIR [--link] [--throttle-ms N] [--json]

Why the copy is consistent without stopping the server (docs/operations.md has more):

* Every data file (``<YYYY-MM>.g<generation>.chunk`` and its ``.zmap``/``.vidx``
  sidecars) is written under a temp name, fsynced and renamed into place, and never
  modified afterwards; superseded files are only unlinked. Generations only grow, so
  within one series directory a name always means the same bytes.
* A series' ``MANIFEST`` is replaced atomically by rename and is the commit point for
  the rows in chunk files: the set of files it lists as live *is* the folded state of
  that series, and its ``wal_lsn`` (manifest format version 2) says which records of
  the write-ahead log are already folded into those files.
* Small writes are durable first in the store-wide write-ahead log
  (``wal/<first lsn, 16 hex digits>.wal`` segments, records with consecutive lsns) and
  folded into chunk files later. On open the server replays, for each series, the
  records with an lsn above its manifest's ``wal_lsn``. Segments are only appended to,
  a segment is deleted only once every series has folded all of its records (and every
  older segment goes with it or before it), and folding only moves a manifest's
  ``wal_lsn`` forward.

So the script copies the log FIRST: every ``wal/*.wal`` segment, in lsn order, with
the bytes present at that moment (the open segment may be growing; a record cut off
at its end is a torn tail, which the server cuts off when it opens the backup). The
log is always copied, never hard-linked: the open segment keeps changing. A segment
that vanishes before it is copied was folded by every series, as were the segments
before it, so those are dropped from the copy and the copy goes on with the next one.
Then, per series, the script reads the MANIFEST bytes once, copies (or hard-links)
every file that manifest lists as live, and writes those same MANIFEST bytes last. If
a listed file vanished meanwhile (a concurrent write, fold or compaction superseded and
unlinked it), that series starts over from its newer MANIFEST, keeping the files
already copied that are still listed. Because the manifest is read after the log was
copied, any record the copied manifest does not hold yet (lsn above its ``wal_lsn``)
was either in the log when it was copied, or committed after that copy (then it is
simply not in the backup): each series therefore lands exactly at one committed
version, its folded rows plus the log records replayed on open. Last, if a copied
manifest's ``wal_lsn`` is at or past the copied log's last record (a fold or a
registration after the log was copied), the last copied segment is copied again whole,
with any newer ones: the restored server starts its log after the highest lsn it sees,
and a log that stopped short of that would show a gap in lsns at its next open. Adding
an unbroken stretch of later records keeps every series at one committed version.
Named snapshots (``snapshots/<name>.snap``, docs/research.md) are copied after the log
and before the series, each with the chunk files it reads: those files are immutable
and at most as new as the manifest of their series copied next, so the restored store
pins them as the original did. A snapshot deleted while the backup runs is left out.
The series catalog (``CATALOG``: series registered that have no directory yet) is
copied after the series (``backup_catalog``).
``registry.sqlite`` (SQLite in WAL mode) is copied with SQLite's online backup API,
which yields a transactionally consistent snapshot. Storage is the source of truth for
the series catalog: the server reconciles the registry with storage when it opens, so
a series created or deleted during the backup cannot leave the copy inconsistent.

Different series are captured at slightly different moments (each at a committed
version); a write is all-or-nothing per series, so no write is ever half in one
series. A many-series write (``POST /v1/kline/records``, a Flight DoPut with symbol
``*``) is one log record for all of its series, but it is not all-or-nothing across
the backup: if it commits while the backup runs, after the log was copied, the series
whose manifests were copied after a fold of that record hold it and the others do not.
A many-series write acknowledged before the backup started is in every series.

The summary's per-series ``version`` and ``rows`` are those of the copied MANIFEST
(the folded state); the rows still only in the copied log come on top when the backup
is opened (``fastk admin inventory --root NEW_DIR`` shows the replayed state).

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
# The derive rules (docs/derived.md): JSON, replaced whole by rename on every change.
DERIVE_FILE = "DERIVE.json"
CATALOG_FILE = "CATALOG"
FORMAT_FILE = "FORMAT"
MANIFEST_MAGIC = b"FASTKMAN"
# Manifest format version -> length of its fixed part (the entries follow). Version 2
# (the write-ahead log) appended wal_lsn u64 at 288 and 8 reserved bytes.
# Version 3 is version 2's layout with packed entries (see parse_manifest).
MANIFEST_HEADER_LENS = {1: 288, 2: 304, 3: 304}
MANIFEST_WAL_LSN_OFFSET = 288
MANIFEST_ENTRY_LEN = 128
MANIFEST_TRAILER_LEN = 8
STATE_LIVE = 0
# The write-ahead log (src/storage/wal.rs): <root>/wal/<first lsn, 16 hex digits>.wal.
WAL_DIR = "wal"
WAL_SEGMENT_EXT = ".wal"
# A log record's header: magic "FKWR", payload length u32, lsn u64, xxh3 u64.
WAL_RECORD_MAGIC = b"FKWR"
WAL_RECORD_HEADER_LEN = 24
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


def pack_file_name(generation: int) -> str:
    """The name src/storage/pack.rs pack_file_name gives a pack file."""
    return f"pack.g{generation:016x}.pack"


def parse_manifest(data: bytes, where: str) -> tuple[int, int, list[tuple[str, int]], int]:
    """Returns (series version, rows, [(file name, expected length)], wal_lsn) of the
    live entries.

    Layout (src/storage/format.rs Manifest::encode): magic at 0, format version u32 at
    8, entry count u32 at 12, version u64 at 16; the fixed part is 288 bytes in format
    version 1 and 304 in version 2, which adds wal_lsn u64 at 288 (the last log record
    folded into the listed chunks; 0 for version 1) and 8 reserved bytes; entries of
    128 bytes follow the fixed part, then an 8-byte xxh3-64 trailer over everything
    before it. In an entry: month i32 at +0, generation u64 at +8, rows u64 at +16,
    chunk file length u64 at +40, zone-map length u64 at +72, value-index length u64
    at +88, state u8 at +96. Version 3 (packs, src/storage/pack.rs) adds the pack
    generation u64 at +97 (0: the chunk is its own file) and the pack's length u64 at
    +113: a packed entry's chunk and sidecars are all in that one pack file.
    """
    if len(data) < 16 or data[:8] != MANIFEST_MAGIC:
        raise BackupError(f"{where}: not a FastK manifest (run fastk admin validate)")
    fmt_version, count, version = struct.unpack_from("<IIQ", data, 8)
    header_len = MANIFEST_HEADER_LENS.get(fmt_version)
    if header_len is None:
        supported = ", ".join(str(v) for v in sorted(MANIFEST_HEADER_LENS))
        raise BackupError(
            f"{where}: manifest format version {fmt_version} is not supported"
            f" (this script reads versions {supported}; use the script of the server's release)"
        )
    if len(data) != header_len + count * MANIFEST_ENTRY_LEN + MANIFEST_TRAILER_LEN:
        raise BackupError(f"{where}: manifest length disagrees with its entry count")
    wal_lsn = 0
    if fmt_version >= 2:
        (wal_lsn,) = struct.unpack_from("<Q", data, MANIFEST_WAL_LSN_OFFSET)
    files = []
    rows = 0
    for i in range(count):
        at = header_len + i * MANIFEST_ENTRY_LEN
        (month,) = struct.unpack_from("<i", data, at)
        (generation,) = struct.unpack_from("<Q", data, at + 8)
        (entry_rows,) = struct.unpack_from("<Q", data, at + 16)
        (chunk_len,) = struct.unpack_from("<Q", data, at + 40)
        (zmap_len,) = struct.unpack_from("<Q", data, at + 72)
        (vidx_len,) = struct.unpack_from("<Q", data, at + 88)
        if data[at + 96] != STATE_LIVE:
            continue
        rows += entry_rows
        pack = struct.unpack_from("<Q", data, at + 97)[0] if fmt_version >= 3 else 0
        if pack:
            (pack_len,) = struct.unpack_from("<Q", data, at + 113)
            if (pack_file_name(pack), pack_len) not in files:
                files.append((pack_file_name(pack), pack_len))
            continue
        files.append((data_file_name(month, generation, "chunk"), chunk_len))
        if zmap_len > 0:
            files.append((data_file_name(month, generation, "zmap"), zmap_len))
        if vidx_len > 0:
            files.append((data_file_name(month, generation, "vidx"), vidx_len))
    return version, rows, files, wal_lsn


# Named snapshots (docs/research.md, docs/storage-format.md "Snapshot file"):
# <root>/snapshots/<name>.snap, written once by rename and deleted whole.
SNAPSHOTS_DIR = "snapshots"
SNAPSHOT_MAGIC = b"FASTKSNP"
SNAPSHOT_SUFFIX = ".snap"


def parse_snapshot(data: bytes, where: str) -> tuple[str, list[tuple[str, list[tuple[str, int]]]]]:
    """Returns (name, [(series directory, [(file name, length)])]) of a snapshot file:
    the chunk files it reads, by series. The layout: magic, u32 version, i64
    created_ts, name and note (u64 length, bytes), u32 series count; per series its
    directory (u64 length, bytes), a manifest (u64 length, bytes) of the files it reads
    and u32 count of in-memory chunk images (u64 length, bytes each); an xxh3-64
    trailer, which the server checks when it opens the backup."""
    at = 0

    def take(n: int) -> bytes:
        nonlocal at
        if at + n > len(data) - 8:
            raise BackupError(f"{where}: truncated snapshot file")
        out = data[at:at + n]
        at += n
        return out

    def blob() -> bytes:
        (n,) = struct.unpack("<Q", take(8))
        return take(n)

    if take(8) != SNAPSHOT_MAGIC:
        raise BackupError(f"{where}: not a FastK snapshot file")
    (version,) = struct.unpack("<I", take(4))
    if version != 1:
        raise BackupError(f"{where}: snapshot file version {version} is not supported")
    take(8)  # created_ts
    name = blob().decode()
    blob()  # note
    (count,) = struct.unpack("<I", take(4))
    series = []
    for _ in range(count):
        rel = blob().decode()
        if rel.startswith("/") or ".." in rel.split("/") or not rel.startswith("series/"):
            raise BackupError(f"{where}: bad series directory {rel!r}")
        _, _, files, _ = parse_manifest(blob(), f"{where} ({rel})")
        (images,) = struct.unpack("<I", take(4))
        for _ in range(images):
            blob()
        series.append((rel, files))
    return name, series


def backup_snapshots(root: str, staging: str, copier: Copier) -> list[str]:
    """Copies every snapshot file and the chunk files it reads. Run before the series:
    a snapshot's files are at most as new as its series' manifest copied after, so the
    restored store never sees a pinned file at or past a manifest's next generation. A
    snapshot deleted meanwhile (its file gone) is left out."""
    src = os.path.join(root, SNAPSHOTS_DIR)
    if not os.path.isdir(src):
        return []
    dst = os.path.join(staging, SNAPSHOTS_DIR)
    os.makedirs(dst, exist_ok=True)
    done = []
    for file in sorted(os.listdir(src)):
        if not file.endswith(SNAPSHOT_SUFFIX) or file.startswith("."):
            continue
        try:
            with open(os.path.join(src, file), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        name, series = parse_snapshot(data, f"{SNAPSHOTS_DIR}/{file}")
        try:
            for rel, files in series:
                os.makedirs(os.path.join(staging, rel), exist_ok=True)
                for fname, length in files:
                    out = os.path.join(staging, rel, fname)
                    if not os.path.lexists(out):
                        copier.put(os.path.join(root, rel, fname), out, length)
        except Superseded:
            if os.path.exists(os.path.join(src, file)):
                raise BackupError(f"{SNAPSHOTS_DIR}/{file}: a file it reads is missing"
                                  " (run fastk admin validate)") from None
            continue  # deleted while we copied it: not part of the backup
        write_file_durable(os.path.join(dst, file), data)
        done.append(name)
    fsync_path(dst)
    return done


def prune_snapshots(staging: str, names: list[str]) -> list[str]:
    """Drops a copied snapshot whose files a series copy removed (a series deleted and
    registered again while the backup ran, which only happens once the snapshot was
    deleted): the backup keeps only snapshots it holds whole."""
    kept = []
    for name in names:
        path = os.path.join(staging, SNAPSHOTS_DIR, name + SNAPSHOT_SUFFIX)
        with open(path, "rb") as f:
            _, series = parse_snapshot(f.read(), path)
        if all(os.path.exists(os.path.join(staging, rel, fname)) for rel, files in series
               for fname, _ in files):
            kept.append(name)
        else:
            print(f"fastk-backup: warning: snapshot {name} was deleted during the backup;"
                  " left out", file=sys.stderr)
            os.unlink(path)
    return kept


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
        version, rows, files, wal_lsn = parse_manifest(manifest, f"{rel}/{MANIFEST_NAME}")
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
            "wal_lsn": wal_lsn,
            "files": len(files),
            "bytes": sum(length for _, length in files),
            "restarts": restarts,
        }
    raise BackupError(
        f"{rel}: still changing after {max_attempts} attempts; retry when writes are quieter"
    )


def wal_segments(wal_dir: str) -> list[str]:
    """Names of the log's segment files, ascending by first lsn (the fixed-width hex
    name sorts as the number does); anything else in the directory is left out."""
    try:
        names = os.listdir(wal_dir)
    except FileNotFoundError:
        return []  # a store written before the log existed, or that never logged
    out = []
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext != WAL_SEGMENT_EXT or len(stem) != 16:
            continue
        try:
            int(stem, 16)
        except ValueError:
            continue
        out.append(name)
    return sorted(out)


def copy_growing(src: str, dst: str) -> int:
    """Copies the bytes `src` holds now (it may be growing) and syncs; returns how many.
    Raises FileNotFoundError when `src` is gone."""
    copied = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while True:
            block = fin.read(1 << 20)
            if not block:
                break
            fout.write(block)
            copied += len(block)
        fout.flush()
        os.fsync(fout.fileno())
    return copied


def backup_wal(root: str, dest: str, copier: Copier) -> dict:
    """Copies every write-ahead log segment into dest/wal, in lsn order; returns what
    was copied. Must run before any series is copied (see the module docstring)."""
    src_dir = os.path.join(root, WAL_DIR)
    dst_dir = os.path.join(dest, WAL_DIR)
    names = wal_segments(src_dir)
    copied: list[tuple[str, int]] = []
    dropped = 0
    if names:
        os.makedirs(dst_dir, exist_ok=True)
    for name in names:
        if copier.throttle_s:
            time.sleep(copier.throttle_s)
        dst = os.path.join(dst_dir, name)
        try:
            n = copy_growing(os.path.join(src_dir, name), dst)
        except FileNotFoundError:
            # Removed meanwhile: every series folded its records, and the segments
            # before it are removed with it or earlier, so their copies are not needed
            # either (keeping them would leave a gap in the copied log's lsns).
            if os.path.lexists(dst):
                os.unlink(dst)
            for old, _ in copied:
                os.unlink(os.path.join(dst_dir, old))
            dropped += len(copied) + 1
            copied.clear()
            continue
        copied.append((name, n))
    if names:
        fsync_path(dst_dir)
    copier.files += len(copied)
    copier.bytes += sum(n for _, n in copied)
    return {
        "segments": len(copied),
        "bytes": sum(n for _, n in copied),
        "first": copied[0][0] if copied else None,
        "last": copied[-1][0] if copied else None,
        "last_bytes": copied[-1][1] if copied else 0,
        "dropped": dropped,
        "topped_up": False,
    }


def last_whole_lsn(wal_dir: str) -> int | None:
    """The lsn of the last record whose header and payload are all present in the
    segments of `wal_dir` (checksums are not checked: the server does that when it
    opens the copy); None when there is no record."""
    last = None
    for name in wal_segments(wal_dir):
        with open(os.path.join(wal_dir, name), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            at = 0
            while at + WAL_RECORD_HEADER_LEN <= size:
                f.seek(at)
                head = f.read(WAL_RECORD_HEADER_LEN)
                if len(head) < WAL_RECORD_HEADER_LEN or head[:4] != WAL_RECORD_MAGIC:
                    break
                payload_len, lsn = struct.unpack_from("<IQ", head, 4)
                end = at + WAL_RECORD_HEADER_LEN + payload_len
                if end > size:
                    break
                last = lsn
                at = end
    return last


def top_up_wal(root: str, dest: str, copier: Copier, wal: dict) -> bool:
    """Copies the last copied segment again, whole, and every newer one, so that the
    copied log reaches past every copied manifest's wal_lsn. False (nothing changed)
    when the last copied segment or a newer one vanished meanwhile.

    Why: the server starts its new segment after the highest lsn any manifest or record
    holds. A copied manifest that folded records newer than the copied log (or a series
    registered after the log was copied) would leave a gap in lsns between the copied
    segments and the one the restored server starts, which its next open reads as a
    corrupt log until those segments are folded away. Records added here keep every
    series consistent: each series gets its copied manifest plus the later records of
    an unbroken stretch of the log, i.e. one committed version.
    """
    src_dir = os.path.join(root, WAL_DIR)
    dst_dir = os.path.join(dest, WAL_DIR)
    have = wal_segments(dst_dir)
    if not have:
        return False
    last = have[-1]
    names = [n for n in wal_segments(src_dir) if n >= last]
    if not names or names[0] != last:
        return False
    copied: list[tuple[str, int]] = []
    try:
        for name in names:
            n = copy_growing(os.path.join(src_dir, name), os.path.join(dst_dir, name + ".topup"))
            copied.append((name, n))
    except FileNotFoundError:
        for name, _ in copied:
            os.unlink(os.path.join(dst_dir, name + ".topup"))
        tmp = os.path.join(dst_dir, names[len(copied)] + ".topup")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        return False
    for name, _ in copied:
        os.replace(os.path.join(dst_dir, name + ".topup"), os.path.join(dst_dir, name))
    fsync_path(dst_dir)
    copier.files += len(copied) - 1
    copier.bytes += sum(n for _, n in copied) - wal["last_bytes"]
    wal["segments"] += len(copied) - 1
    wal["bytes"] += sum(n for _, n in copied) - wal["last_bytes"]
    wal["last"] = copied[-1][0]
    wal["last_bytes"] = copied[-1][1]
    return True


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


def backup_derive_rules(root: str, dest: str) -> bool:
    """Copies the derive rules; False when the store has none. The file is replaced
    whole by rename, so a plain copy is one version of it. The derived series are
    copied with the other series; the restored server checks their stored bars
    against their bases at its first pass (docs/derived.md)."""
    return copy_root_file(root, dest, DERIVE_FILE) is not None


def copy_root_file(root: str, dest: str, name: str) -> bytes | None:
    """Copies `name` from the data root whole (read once, written and fsynced);
    returns its bytes, or None when the store has no such file."""
    try:
        with open(os.path.join(root, name), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    with open(os.path.join(dest, name), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return data


def catalog_summary(data: bytes) -> dict:
    """The series a catalog registers (its last record per key is a put or a state
    record, which also holds the series' rows) and the highest log position its
    entries hold; a record cut short ends the reading (the server drops it too)."""
    live: dict[tuple, int] = {}
    at = 16
    if len(data) < at or data[:8] != b"FASTKCAT":
        return {"bytes": len(data), "series": 0, "highest_wal_lsn": 0}
    while at + 4 <= len(data):
        (length,) = struct.unpack_from("<I", data, at)
        if at + 4 + length + 8 > len(data):
            break
        body = data[at + 4 : at + 4 + length]
        op, count = body[0], struct.unpack_from("<I", body, 4)[0]
        pos = 8
        for _ in range(count):
            nparts = body[pos + 2]
            (wal_lsn,) = struct.unpack_from("<Q", body, pos + 36)
            pos += 44
            key = []
            for _ in range(nparts):
                n = body[pos]
                key.append(bytes(body[pos + 1 : pos + 1 + n]))
                pos += 1 + n
            if op == 3:
                # version, next generation, partitions; each partition its id, its
                # rows and the layout's columns (2 for a scalar series, 6 otherwise).
                ncols = 2 if key[0] == b"scalar" else 6
                (months,) = struct.unpack_from("<I", body, pos + 16)
                pos += 20
                for _ in range(months):
                    (rows,) = struct.unpack_from("<I", body, pos + 4)
                    pos += 8 + ncols * rows * 8
            if op in (1, 3):
                live[tuple(key)] = wal_lsn
            else:
                live.pop(tuple(key), None)
        at += 4 + length + 8
    return {
        "bytes": len(data),
        "series": len(live),
        "highest_wal_lsn": max(live.values(), default=0),
    }


def backup_catalog(root: str, dest: str) -> dict | None:
    """Copies the series catalog (``CATALOG``, docs/storage-format.md), the register of
    series that have no directory yet (and the rows of the small ones, state records);
    None when the store has none. It is appended to, or replaced whole by a rename
    when the server sheds its garbage, so a plain copy is a prefix of one of its
    versions (a record cut off at its end is a torn tail, which the server drops on
    open). Copied after the series: a series
    registered during the backup is then listed (empty, or with the rows the copied
    log holds for it), and one deleted during the backup is dropped unless its copied
    directory says otherwise (a directory wins over the catalog). Returns what
    ``catalog_summary`` says of the copy."""
    data = copy_root_file(root, dest, CATALOG_FILE)
    return None if data is None else catalog_summary(data)


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
        # The store's format version (docs/storage-format.md, "Store format"): written
        # once, at the open that upgraded the store, so any copy is the one.
        fmt = copy_root_file(root, staging, FORMAT_FILE)
        format_version = struct.unpack_from("<I", fmt, 8)[0] if fmt and len(fmt) >= 12 else 2
        registry = backup_registry(root, staging)
        derive_rules = backup_derive_rules(root, staging)
        # The log before any manifest: a record a copied manifest does not hold yet is
        # then in the copied log, or committed after it (module docstring).
        wal = backup_wal(root, staging, copier)
        # Snapshots before the series (backup_snapshots).
        snapshots = backup_snapshots(root, staging, copier)
        if not args.json and wal["segments"]:
            print(
                f"{WAL_DIR}: {wal['segments']} segments, {wal['bytes']} bytes"
                f" ({wal['first']} .. {wal['last']})",
                file=sys.stderr,
            )
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
                        f"{done['series']}: folded version {done['version']},"
                        f" {done['rows']} rows, {done['files']} files, wal_lsn {done['wal_lsn']}"
                        + (f", {done['restarts']} restarts" if done["restarts"] else ""),
                        file=sys.stderr,
                    )
        catalog = backup_catalog(root, staging)
        snapshots = prune_snapshots(staging, snapshots)
        if not args.json and snapshots:
            print(f"{SNAPSHOTS_DIR}: {len(snapshots)} ({', '.join(snapshots)})", file=sys.stderr)
        # Every copied manifest's wal_lsn must be within the copied log (top_up_wal).
        wal_dst = os.path.join(staging, WAL_DIR)
        highest = max((s["wal_lsn"] for s in series), default=0)
        if catalog is not None:
            # A registration after the log was copied holds a later position too.
            highest = max(highest, catalog["highest_wal_lsn"])
        if wal["segments"]:
            last = last_whole_lsn(wal_dst)
            # `>=`: the last whole-looking record may still fail its checksum (copied
            # mid-append), and then the server cuts it.
            if last is None or highest >= last:
                wal["topped_up"] = top_up_wal(root, staging, copier, wal)
                last = last_whole_lsn(wal_dst)
            if last is None or highest > last:
                print(
                    f"fastk-backup: warning: a copied manifest folded log record {highest},"
                    f" past the copied log (last record {last}); open the backup once with"
                    " `fastk admin validate --deep --root DEST` before relying on it",
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
        "format_version": format_version,
        "registry": registry,
        "derive_rules": derive_rules,
        "catalog": catalog,
        "wal": wal,
        "series": series,
        "snapshots": snapshots,
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
            f" log {summary['wal']['segments']} segments ({summary['wal']['bytes']} bytes),"
            f" {summary['restarts']} restarts, {summary['duration_s']} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
