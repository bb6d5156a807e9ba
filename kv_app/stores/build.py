"""Building a snapshot (kv_app/stores/snapshot.py) from a text file: every line checked
as the strict load checks it, keys sorted, written to LMDB in key order, synced, renamed
into place; optionally split into shards by the id's first hex digit."""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

from kv_app import __version__, lines, loader
from kv_app.keys import KEY_LEN, key_text
from kv_app.loader import Problem, Progress, iso_time
from kv_app.stores.compact import _key_halves
from kv_app.stores.snapshot import (
    DATA_FILE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SnapshotError,
)

# Work on the text file this many bytes at a time (bounds the transient memory).
CHUNK_BYTES = 64 * 1024 * 1024
# How many shards a build can split into: a shard is a range of first hex digits.
SHARD_COUNTS = (1, 2, 4, 8, 16)
# Pairs written to LMDB per transaction.
WRITE_BATCH = 200_000


@dataclass
class _Pairs:
    """Where every good pair of a text file is: key halves, value span, line number."""

    hi: np.ndarray
    lo: np.ndarray
    start: np.ndarray  # of the value in the file
    end: np.ndarray
    line: np.ndarray
    problems: list[Problem]
    bom: bool


def _scan(
    mm: mmap.mmap,
    view: memoryview,
    progress: Progress | None,
    max_value_bytes: int | None = None,
) -> _Pairs:
    """Check every line of a whole file (a read-only mmap) as the strict load does and
    locate the good pairs; the file's bytes are never copied whole, nor a line longer
    than a chunk whose value is over max_value_bytes (None: no limit)."""
    hi, lo, start, end, line, problems = [], [], [], [], [], []
    bom = False
    size = len(view)
    base = line_base = 0
    while base < size:
        cut = _cut(mm, base, size)
        oversize = None
        if max_value_bytes is not None and cut - base > CHUNK_BYTES:  # one line, that long
            oversize = _oversize(view, base, cut, line_base + 1, max_value_bytes)
        if oversize is not None:
            problems.append(oversize)
            line_base += 1
            base = cut
            if progress is not None:
                progress(base, size)
            continue
        chunk = view[base:cut]
        tail = cut == size and view[size - 1] != ord("\n")
        if tail:  # the last line lacks its "\n": check a copy that has it
            chunk = memoryview(bytes(chunk) + b"\n")
        checked = (
            None
            if base == 0 and bytes(chunk[:3]) == loader.BOM
            else lines.check_lines(chunk, max_value_bytes)
        )
        if checked is not None:
            try:
                str(chunk, "utf-8")
            except UnicodeDecodeError:
                checked = None
        if checked is not None:
            starts, ends, _ = checked
            h, low = _key_halves(chunk, starts)
            hi.append(h)
            lo.append(low)
            start.append(starts + (base + KEY_LEN + 1))
            end.append(ends + base)
            line.append(np.arange(len(starts), dtype=np.uint64) + (line_base + 1))
            count = len(starts)
        else:  # the reference path, line by line, on this chunk only
            count, found_bom = _scan_lines(
                chunk, base, line_base, hi, lo, start, end, line, problems, max_value_bytes
            )
            bom = bom or found_bom
        line_base += count
        base = cut
        if progress is not None:
            progress(base, size)

    def joined(parts, dtype):
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    return _Pairs(
        joined(hi, np.uint64),
        joined(lo, np.uint64),
        joined(start, np.int64),
        joined(end, np.int64),
        joined(line, np.uint64),
        problems,
        bom,
    )


def _cut(mm: mmap.mmap, base: int, size: int) -> int:
    """Where the chunk starting at base ends: after the last "\n" within CHUNK_BYTES."""
    if base + CHUNK_BYTES >= size:
        return size
    at = mm.rfind(b"\n", base, base + CHUNK_BYTES)
    if at < 0:  # one line longer than a chunk
        at = mm.find(b"\n", base + CHUNK_BYTES)
    return size if at < 0 else at + 1


def _oversize(
    view: memoryview, base: int, cut: int, number: int, max_value_bytes: int
) -> Problem | None:
    """The problem of line `number`, view[base:cut], if its value is over the limit; only
    its first bytes are read."""
    skip = len(loader.BOM) if base == 0 and bytes(view[:3]) == loader.BOM else 0
    value_bytes = cut - base - skip - (view[cut - 1] == ord("\n")) - (KEY_LEN + 1)
    if value_bytes <= max_value_bytes:
        return None
    head = bytes(view[base + skip : base + skip + KEY_LEN + 1])
    return Problem(number, lines.oversize_reason(head, value_bytes, max_value_bytes))


def _scan_lines(
    chunk, base, line_base, hi, lo, start, end, line, problems, max_value_bytes=None
) -> tuple[int, bool]:
    """parse_line on each line of a chunk; good pairs appended, bad lines recorded."""
    data = bytes(chunk)
    bom = False
    offset = 0
    number = line_base
    h_, l_, s_, e_, n_ = [], [], [], [], []
    while offset < len(data):
        newline = data.index(b"\n", offset)
        raw = data[offset : newline + 1]
        number += 1
        skip = 0
        if number == 1 and raw.startswith(loader.BOM):
            raw, skip, bom = raw[len(loader.BOM) :], len(loader.BOM), True
        key, _, reason = lines.parse_line(raw, max_value_bytes)
        if reason is not None:
            problems.append(Problem(number, reason))
        else:
            value = int(key.replace("-", ""), 16)
            h_.append(value >> 64)
            l_.append(value & ((1 << 64) - 1))
            s_.append(base + offset + skip + KEY_LEN + 1)
            e_.append(base + newline)
            n_.append(number)
        offset = newline + 1
    hi.append(np.array(h_, dtype=np.uint64))
    lo.append(np.array(l_, dtype=np.uint64))
    start.append(np.array(s_, dtype=np.int64))
    end.append(np.array(e_, dtype=np.int64))
    line.append(np.array(n_, dtype=np.uint64))
    return number - line_base, bom


def _sorted_unique(pairs: _Pairs, strict: bool, name: str) -> np.ndarray:
    """The order that sorts the pairs by key, keeping the first line of a repeated key;
    repeats become problems (strict: the build fails with all of them, by line)."""
    order = np.argsort(pairs.hi)
    hi = pairs.hi[order]
    if (hi[1:] == hi[:-1]).any():  # equal high halves: order by low half, then line
        order = np.lexsort((pairs.line, pairs.lo, pairs.hi))
        hi = pairs.hi[order]
    lo = pairs.lo[order]
    repeat = np.flatnonzero((hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])) + 1
    if len(repeat):
        first_of = {}
        for i in repeat.tolist():  # i repeats i-1, which is the first or a repeat itself
            j = first_of.get(i - 1, i - 1)
            first_of[i] = j
            key = key_text(int(hi[i]), int(lo[i]))
            first_line = int(pairs.line[order[j]])
            pairs.problems.append(
                Problem(
                    int(pairs.line[order[i]]),
                    f"duplicate key {key} (first on line {first_line})",
                )
            )
        order = np.delete(order, repeat)
    pairs.problems.sort(key=lambda p: p.line)
    if pairs.problems and strict:
        raise loader._error(name, pairs.problems)
    return order


def build(
    data_file: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    strict: bool = True,
    progress: Progress | None = None,
    shards: int = 1,
    max_value_bytes: int | None = None,
) -> dict:
    """Build a snapshot of data_file at target (which must not exist); return its manifest.

    Every line is checked as the strict load checks it (same `path:line: reason`
    messages); strict=False leaves bad lines out. A value over max_value_bytes makes its
    line bad (None: the KV_MAX_VALUE_BYTES setting; publish passes none). The snapshot is
    written into a temporary directory beside target, synced, and renamed into place: a
    reader never sees half of one. Memory: about 70 bytes per pair at the peak, plus the
    page cache.

    shards > 1 (2, 4, 8 or 16): target holds shard-0 ... shard-N-1, each a snapshot of
    the keys whose first hex digit falls in its range, with the shard map in its manifest.
    """
    if shards not in SHARD_COUNTS:
        raise SnapshotError(
            f"--shards {shards}: expected one of {', '.join(map(str, SHARD_COUNTS))}"
        )
    if max_value_bytes is None:
        max_value_bytes = loader.configured_max_value_bytes()
    started = time.perf_counter()
    name = os.fspath(data_file)
    target = Path(target)
    if target.exists() or target.is_symlink():
        raise SnapshotError(f"{target}: already exists (a snapshot is never overwritten)")
    tmp = None
    try:
        with loader._open(name) as f, loader._read_errors(name):
            before = os.fstat(f.fileno())
            if not stat.S_ISREG(before.st_mode):
                raise SnapshotError(
                    f"{name}: not a regular file (a pipe or a device): a build reads its "
                    "input twice; write it to a file first"
                )
            if before.st_size == 0:
                raise SnapshotError(f"{name}: file is empty")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            mm.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mm)
            source_sha256 = _sha256(view)
            pairs = _scan(mm, view, progress, max_value_bytes)
            view.release()
            order = _sorted_unique(pairs, strict, name)
            if len(order) == 0:
                raise SnapshotError(f"{name}: no valid pairs")
            _make_room(target.parent, before.st_size)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            written = []
            # Sorted keys: each shard is one run of the order (by the first hex digit).
            shard_of = (pairs.hi[order] >> np.uint64(60)).astype(np.int64) * shards // 16
            bounds = np.searchsorted(shard_of, np.arange(shards + 1))
            for index in range(shards):
                where = tmp / f"shard-{index}" if shards > 1 else tmp
                where.mkdir(exist_ok=True)
                part = order[bounds[index] : bounds[index + 1]]
                try:
                    manifest = _write(where, mm, pairs, part, before.st_size)
                except (lmdb.Error, OSError) as e:
                    raise SnapshotError(_write_failed(target.parent, e)) from None
                if shards > 1:
                    manifest["shard"] = shard_info(index, shards)
                    manifest["shard_map"] = [shard_info(i, shards) for i in range(shards)]
                written.append((where, manifest))
            mm.close()
            after = os.fstat(f.fileno())
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise SnapshotError(
                    f"{name}: file changed while it was being read; publish it by rename"
                )
        umask = os.umask(0)
        os.umask(umask)
        for where, manifest in written:
            manifest.update(
                source={
                    "name": os.path.basename(name),
                    "size": before.st_size,
                    "sha256": source_sha256,
                    "modified": iso_time(before.st_mtime),
                },
                built_at=iso_time(time.time()),
                build_seconds=round(time.perf_counter() - started, 3),
                skipped_lines=len(pairs.problems),
            )
            try:
                _write_json(where / MANIFEST, manifest)
            except OSError as e:
                raise SnapshotError(_write_failed(target.parent, e)) from None
            # Read-only: a snapshot never changes (servers refuse one that did).
            for made in (where / DATA_FILE, where / MANIFEST):
                made.chmod(0o444 & ~umask)
            where.chmod(0o777 & ~umask)  # mkdtemp made it private; snapshots are shared
            _fsync_dir(where)
        _fsync_dir(tmp)
        if shards > 1:  # report the whole
            total = sum(m["data_bytes"] for _, m in written)
            manifest = {**manifest, "pairs": len(order), "data_bytes": total, "shards": shards}
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**manifest, "problems": pairs.problems, "bom": pairs.bom}  # for the caller


# A snapshot takes about 0.85 times its text (62 bytes a pair for 73 of text, measured):
# a build refuses to start where less than the text's size is free.
SPACE_PER_TEXT_BYTE = 1.0


def _make_room(where: Path, text_bytes: int) -> None:
    """Create where (a snapshot's parent directory) and check it has room for a build."""
    try:
        where.mkdir(parents=True, exist_ok=True)
        stats = os.statvfs(where)
    except FileExistsError:
        raise SnapshotError(f"{where}: not a directory") from None
    except OSError as e:
        raise SnapshotError(f"{e.filename or where}: cannot write: {e.strerror or e}") from None
    if not os.access(where, os.W_OK):
        raise SnapshotError(f"{where}: cannot write: permission denied or read-only")
    free = stats.f_bavail * stats.f_frsize
    wanted = int(text_bytes * SPACE_PER_TEXT_BYTE)
    if free < wanted:
        raise SnapshotError(
            f"{where}: {free / 1e6:,.1f} MB free, a snapshot of this file needs about "
            f"{wanted / 1e6:,.1f} MB (about the size of the text)"
        )


def _write_failed(where: Path, e: Exception) -> str:
    """One line for a write that failed: a full disk is said as such (LMDB reports one
    as an Input/output error)."""
    try:
        stats = os.statvfs(where)
        full = stats.f_bavail * stats.f_frsize < (1 << 20)
    except OSError:
        full = False
    if full or getattr(e, "errno", None) == errno.ENOSPC:
        return f"{where}: no space left on device while writing the snapshot (nothing kept)"
    if isinstance(e, OSError):
        return f"{e.filename or where}: cannot write: {e.strerror or e}"
    return f"{where}: cannot write the snapshot: {e}"


def shard_info(index: int, count: int) -> dict:
    """Shard index of count: the first hex digits of the keys it holds."""
    per = 16 // count
    digits = "".join(f"{d:x}" for d in range(index * per, (index + 1) * per))
    return {"index": index, "count": count, "digits": digits}


def _sha256(view: memoryview) -> str:
    digest = hashlib.sha256()
    for at in range(0, len(view), CHUNK_BYTES):
        digest.update(view[at : at + CHUNK_BYTES])
    return digest.hexdigest()


def _write(tmp: Path, mm: mmap.mmap, pairs: _Pairs, order: np.ndarray, size: int) -> dict:
    path = tmp / DATA_FILE
    # The map only reserves address space; the file grows as pages are written.
    env = lmdb.open(
        str(path), map_size=max(1 << 26, 3 * size), subdir=False, lock=False, sync=False
    )
    try:
        for first in range(0, len(order), WRITE_BATCH):
            # One transaction per batch: LMDB keeps a transaction's dirty pages in
            # memory until it commits, so one for everything held a copy of the data.
            # (Nobody sees the file before the rename, so partial commits are harmless.)
            with env.begin(write=True) as txn:
                cursor = txn.cursor()
                part = order[first : first + WRITE_BATCH]
                halves = np.empty((len(part), 2), dtype=">u8")
                halves[:, 0], halves[:, 1] = pairs.hi[part], pairs.lo[part]
                keys = halves.tobytes()
                items = (
                    (keys[16 * i : 16 * i + 16], mm[s:e])
                    for i, (s, e) in enumerate(
                        zip(pairs.start[part].tolist(), pairs.end[part].tolist(), strict=True)
                    )
                )
                consumed, added = cursor.putmulti(items, append=True)
                if added != len(part):
                    raise SnapshotError(f"{path}: wrote {added} of {len(part)} pairs")
        env.sync(True)
        example = key_text(int(pairs.hi[order[0]]), int(pairs.lo[order[0]])) if len(order) else None
    finally:
        env.close()
    with open(path, "rb") as f:
        data_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        os.fsync(f.fileno())
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pairs": len(order),
        "data_bytes": path.stat().st_size,
        "data_sha256": data_sha256,
        "example_key": example,
        "kv_app_version": __version__,
    }


def _write_json(path: Path, payload: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
