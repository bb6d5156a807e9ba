"""Building a snapshot (kv_app/stores/snapshot.py) from a text file, in memory that does
not grow with the data: every line checked as the strict load checks it; the good pairs
partitioned by the key's leading hex digits into runs on disk (keys and values), each
partition then sorted alone and appended to LMDB in key order; synced, renamed into
place; optionally split into shards by the id's first hex digit."""

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

from kv_app import __version__, keyspace, lines, loader
from kv_app.keys import KEY_LEN, key_text
from kv_app.loader import Problem, Progress, iso_time
from kv_app.stores.snapshot import (
    DATA_FILE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SnapshotError,
)

# Work on the text file this many bytes at a time (bounds the transient memory).
CHUNK_BYTES = 16 * 1024 * 1024
# Pairs written to LMDB per transaction.
WRITE_BATCH = 200_000
# The most text bytes a partition should hold: what one partition's sort holds in memory
# (its values and 40 bytes a pair) is about this. A partition is a range of leading hex
# digits, 1 or 2 of them (16 or 256 partitions: two files each, all open while the text is
# read), chosen by the text's size: past 256 x PARTITION_BYTES of text (8 GB, about 110M
# pairs) a partition holds more (1B pairs: about 285 MB of text).
PARTITION_BYTES = 32 * 1024 * 1024
MAX_PARTITION_BITS = 8
# One record a pair in the runs: the key's halves, its line, where its value is in the
# run's values, and its length.
RECORD = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("line", "<u8"), ("at", "<i8"), ("len", "<i8")])


@dataclass
class _Found:
    """What a scan found besides the good pairs: the bad lines, a byte-order mark."""

    problems: list[Problem]
    bom: bool = False


def _scan(
    mm: mmap.mmap,
    view: memoryview,
    progress: Progress | None,
    found: _Found,
    max_value_bytes: int | None = None,
):
    """Check every line of a whole file (a read-only mmap) as the strict load does; yield
    the good pairs of each chunk as (hi, lo, start, end, line) arrays (start and end of
    the value in the file), bad lines into found. The file's bytes are never copied whole,
    nor a line longer than a chunk whose value is over max_value_bytes (None: no limit);
    the pages of a chunk leave this process's memory once it is done."""
    size = len(view)
    base = line_base = 0
    while base < size:
        cut = _cut(mm, base, size)
        oversize = None
        if max_value_bytes is not None and cut - base > CHUNK_BYTES:  # one line, that long
            oversize = _oversize(view, base, cut, line_base + 1, max_value_bytes)
        if oversize is not None:
            found.problems.append(oversize)
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
            h, low = keyspace.line_key_halves(chunk, starts)
            number = np.arange(len(starts), dtype=np.uint64) + (line_base + 1)
            yield h, low, starts + (base + KEY_LEN + 1), ends + base, number
            count = len(starts)
        else:  # the reference path, line by line, on this chunk only
            hi, lo, start, end, line = [], [], [], [], []
            count, found_bom = _scan_lines(
                chunk, base, line_base, hi, lo, start, end, line, found.problems, max_value_bytes
            )
            found.bom = found.bom or found_bom
            yield hi[0], lo[0], start[0], end[0], line[0]
        line_base += count
        chunk.release()
        _forget(mm, base, cut)
        base = cut
        if progress is not None:
            progress(base, size)


def _forget(mm: mmap.mmap, start: int, end: int) -> None:
    """Drop the pages of mm[start:end] from this process (they stay in the page cache):
    a scanned file does not grow the build's resident memory."""
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, end // page * page
    if last > first:
        mm.madvise(mmap.MADV_DONTNEED, first, last - first)


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


class _RunsNotWritten(Exception):
    """Writing the runs failed (a full disk: numpy says "N requested and M written")."""


class _Runs:
    """Pairs on disk, by partition (the key's first `bits` bits): for each partition a
    file of records and a file of values, appended to chunk after chunk."""

    def __init__(self, where: Path, bits: int):
        self.where, self.bits = where, bits
        self.count = 1 << bits
        self.files: dict[int, tuple] = {}  # partition -> (records file, values file)
        self.value_bytes = np.zeros(self.count, dtype=np.int64)  # in each values file
        self.pairs = 0

    def add(self, mm: mmap.mmap, hi, lo, start, end, line) -> None:
        """One chunk's good pairs, their values read from mm, appended to their partitions."""
        part = (hi >> np.uint64(64 - self.bits)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        part, start, end = part[order], start[order], end[order]
        size = end - start
        records = np.empty(len(order), dtype=RECORD)
        records["hi"], records["lo"], records["line"] = hi[order], lo[order], line[order]
        records["len"] = size
        records["at"] = np.cumsum(size) - size  # in this chunk's values, for now
        values = b"".join([mm[s:e] for s, e in zip(start.tolist(), end.tolist(), strict=True)])
        bounds = np.searchsorted(part, np.arange(self.count + 1))
        for p in np.flatnonzero(bounds[1:] > bounds[:-1]).tolist():
            first, last = int(bounds[p]), int(bounds[p + 1])
            piece = records[first:last]
            at = int(piece["at"][0])
            piece["at"] += self.value_bytes[p] - at  # in the partition's values file
            ends = at + int(piece["len"].sum())
            try:
                keys, blob = self._files(p)
                piece.tofile(keys)
                blob.write(values[at:ends])
            except OSError as e:
                raise _RunsNotWritten(e) from e
            self.value_bytes[p] += ends - at
        self.pairs += len(order)

    def _files(self, p: int) -> tuple:
        if p not in self.files:
            self.files[p] = (
                open(self.where / f"{p}.records", "wb"),  # closed by close()
                open(self.where / f"{p}.values", "wb"),
            )
        return self.files[p]

    def close(self) -> None:
        """Done adding (or abandoned): every file flushed and closed."""
        failed = None
        for keys, blob in self.files.values():
            for f in (keys, blob):
                try:
                    f.close()
                except OSError as e:  # the last buffered bytes did not fit
                    failed = failed or e
        if failed is not None:
            raise _RunsNotWritten(failed) from failed

    def partition(self, p: int) -> tuple[np.ndarray, bytes]:
        """Partition p's records (their `at` into the values returned) and values."""
        if p not in self.files:
            return np.empty(0, dtype=RECORD), b""
        records = np.fromfile(self.where / f"{p}.records", dtype=RECORD)
        values = (self.where / f"{p}.values").read_bytes()
        return records, values


def _sorted_unique(records: np.ndarray, problems: list[Problem]) -> np.ndarray:
    """A partition's records sorted by key, keeping the first line of a repeated key;
    the repeats become problems."""
    order = np.argsort(records["hi"])
    hi = records["hi"][order]
    if (hi[1:] == hi[:-1]).any():  # equal high halves: order by low half, then line
        order = np.lexsort((records["line"], records["lo"], records["hi"]))
    records = records[order]
    hi, lo = records["hi"], records["lo"]
    repeat = np.flatnonzero((hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])) + 1
    if len(repeat):
        first_of = {}
        for i in repeat.tolist():  # i repeats i-1, which is the first or a repeat itself
            j = first_of.get(i - 1, i - 1)
            first_of[i] = j
            key = key_text(int(hi[i]), int(lo[i]))
            first_line = int(records["line"][j])
            problems.append(
                Problem(
                    int(records["line"][i]), f"duplicate key {key} (first on line {first_line})"
                )
            )
        records = np.delete(records, repeat)
    return records


def _partition_bits(text_bytes: int) -> int:
    """Leading bits of the key a partition is named by: whole hex digits (shards are
    ranges of the first one), enough for PARTITION_BYTES of text a partition, at most
    MAX_PARTITION_BITS."""
    bits = 4
    while text_bytes >> bits > PARTITION_BYTES and bits < MAX_PARTITION_BITS:
        bits += 4
    return bits


def build(
    data_file: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    strict: bool = True,
    progress: Progress | None = None,
    shards: int = 1,
    max_value_bytes: int | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
    say=None,
) -> dict:
    """Build a snapshot of data_file at target (which must not exist); return its manifest.

    Every line is checked as the strict load checks it (same `path:line: reason`
    messages); strict=False leaves bad lines out. A value over max_value_bytes makes its
    line bad (None: the KV_MAX_VALUE_BYTES setting). The good pairs go to temporary runs
    in tmp_dir (default: beside target; about the text's size, said through say() first,
    removed however the build ends), partitioned by the key's leading hex digits; each
    partition is then sorted alone and appended to LMDB. Memory does not grow with the
    data: about PARTITION_BYTES and a chunk of the text at a time. The snapshot is written
    into a temporary directory beside target, synced, and renamed into place: a reader
    never sees half of one.

    shards > 1 (2, 4, 8 or 16): target holds shard-0 ... shard-N-1, each a snapshot of
    the keys whose first hex digit falls in its range, with the shard map in its manifest.
    """
    try:
        keyspace.check_shards(shards)
    except ValueError as e:
        raise SnapshotError(str(e)) from None
    if max_value_bytes is None:
        max_value_bytes = loader.configured_max_value_bytes()
    started = time.perf_counter()
    name = os.fspath(data_file)
    target = Path(target)
    runs_parent = Path(tmp_dir) if tmp_dir is not None else target.parent
    if target.exists() or target.is_symlink():
        raise SnapshotError(f"{target}: already exists (a snapshot is never overwritten)")
    tmp = runs_dir = runs = None
    writers: list[SnapshotWriter] = []
    found = _Found([])
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
            source_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
            _make_room(target.parent, runs_parent, before.st_size)
            runs_dir = Path(tempfile.mkdtemp(prefix=".kv-app-build-", dir=runs_parent))
            if say is not None and before.st_size >= SAY_SPACE_FROM:
                say(
                    f"building: temporary runs of about {before.st_size / 1e6:,.0f} MB in "
                    f"{runs_dir}, removed at the end"
                )
            runs = _Runs(runs_dir, _partition_bits(before.st_size))
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            mm.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mm)
            try:
                for hi, lo, start, end, line in _scan(mm, view, progress, found, max_value_bytes):
                    if len(hi):
                        runs.add(mm, hi, lo, start, end, line)
                runs.close()  # flushed: a full disk shows here at the latest
            except _RunsNotWritten as e:
                cause = e.__cause__
                raise SnapshotError(
                    _write_failed(runs_parent, cause, "its temporary runs")
                ) from None
            finally:
                view.release()
                mm.close()
            after = os.fstat(f.fileno())
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise SnapshotError(
                    f"{name}: file changed while it was being read; publish it by rename"
                )
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        wheres = [tmp / f"shard-{index}" if shards > 1 else tmp for index in range(shards)]
        try:
            for where in wheres:
                where.mkdir(exist_ok=True)
                writers.append(SnapshotWriter(where, before.st_size))
            pairs = _sort_and_append(runs, writers, found, strict, shards)
        except (lmdb.Error, OSError) as e:
            raise SnapshotError(_write_failed(target.parent, e)) from None
        found.problems.sort(key=lambda p: p.line)
        if found.problems and strict:
            raise loader._error(name, found.problems)
        if pairs == 0:
            raise SnapshotError(f"{name}: no valid pairs")
        written = []
        for index, (where, writer) in enumerate(zip(wheres, writers, strict=True)):
            try:
                manifest = writer.finish()
            except (lmdb.Error, OSError) as e:
                raise SnapshotError(_write_failed(target.parent, e)) from None
            if shards > 1:
                manifest["shard"] = keyspace.shard_info(index, shards)
                manifest["shard_map"] = [keyspace.shard_info(i, shards) for i in range(shards)]
            written.append((where, manifest))
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
                skipped_lines=len(found.problems),
            )
            seal(where, manifest)
        _fsync_dir(tmp)
        if shards > 1:  # report the whole
            total = sum(m["data_bytes"] for _, m in written)
            manifest = {**manifest, "pairs": pairs, "data_bytes": total, "shards": shards}
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for writer in writers:
            writer.close()
        if runs is not None:
            try:
                runs.close()
            except _RunsNotWritten:
                pass  # the build has failed already: its runs are removed next
        if runs_dir is not None:
            shutil.rmtree(runs_dir, ignore_errors=True)
    return {**manifest, "problems": found.problems, "bom": found.bom}  # for the caller


def _sort_and_append(
    runs: _Runs, writers: list[SnapshotWriter], found: _Found, strict: bool, shards: int
) -> int:
    """Each partition in key order: sorted, repeats found, appended to its shard's
    writer (not once a strict build has failed: its repeats are still all found).
    Returns the pairs kept."""
    kept = 0
    to_digit = runs.bits - 4
    for p in range(runs.count):
        records, values = runs.partition(p)
        if not len(records):
            continue
        records = _sorted_unique(records, found.problems)
        kept += len(records)
        if not (strict and found.problems):
            writers[keyspace.shard_of_digit(p >> to_digit, shards)].append(records, values)
    return kept


# A snapshot takes about 0.85 times its text (62 bytes a pair for 73 of text, measured),
# its temporary runs about 1.1 times (the values and 40 bytes a pair): a build refuses to
# start where less is free.
SPACE_PER_TEXT_BYTE = 1.0
RUNS_PER_TEXT_BYTE = 1.1
# A build of a text this large says first where its temporary runs go, and their size.
SAY_SPACE_FROM = 64 * 1024 * 1024


def _make_room(where: Path, runs: Path, text_bytes: int) -> None:
    """Create where (a snapshot's parent directory) and runs (its temporary runs'), and
    check they have room for a build."""
    need: dict[int, list] = {}
    for path, per_byte, what in (
        (where, SPACE_PER_TEXT_BYTE, "the snapshot"),
        (runs, RUNS_PER_TEXT_BYTE, "its temporary runs"),
    ):
        try:
            path.mkdir(parents=True, exist_ok=True)
            stats = os.statvfs(path)
            device = path.stat().st_dev
        except FileExistsError:
            raise SnapshotError(f"{path}: not a directory") from None
        except OSError as e:
            raise SnapshotError(f"{e.filename or path}: cannot write: {e.strerror or e}") from None
        if not os.access(path, os.W_OK):
            raise SnapshotError(f"{path}: cannot write: permission denied or read-only")
        entry = need.setdefault(device, [path, stats.f_bavail * stats.f_frsize, 0, []])
        entry[2] += int(text_bytes * per_byte)
        entry[3].append(what)
    for path, free, wanted, what in need.values():
        if free < wanted:
            raise SnapshotError(
                f"{path}: {free / 1e6:,.1f} MB free, this build needs about "
                f"{wanted / 1e6:,.1f} MB there for {' and '.join(what)} (each about the "
                "size of the text; --tmp-dir puts the runs elsewhere)"
            )


def _write_failed(where: Path, e: Exception, what: str = "the snapshot") -> str:
    """One line for a write that failed: a full disk is said as such (LMDB reports one
    as an Input/output error)."""
    try:
        stats = os.statvfs(where)
        full = stats.f_bavail * stats.f_frsize < (1 << 20)
    except OSError:
        full = False
    if full or getattr(e, "errno", None) == errno.ENOSPC:
        return f"{where}: no space left on device while writing {what} (nothing kept)"
    if isinstance(e, OSError):
        return f"{e.filename or where}: cannot write: {e.strerror or e}"
    return f"{where}: cannot write {what}: {e}"


class SnapshotWriter:
    """One snapshot's data.mdb, written in key order, a partition at a time."""

    def __init__(self, where: Path, text_bytes: int):
        self.path = where / DATA_FILE
        # The map only reserves address space; the file grows as pages are written.
        self.env = lmdb.open(
            str(self.path),
            map_size=max(1 << 26, 3 * text_bytes),
            subdir=False,
            lock=False,
            sync=False,
        )
        self.pairs = 0
        self.example: str | None = None

    def append(self, records: np.ndarray, values: bytes) -> None:
        """Sorted records (keys above any written so far) and the values they point into."""
        for first in range(0, len(records), WRITE_BATCH):
            part = records[first : first + WRITE_BATCH]
            keys = keyspace.halves_bytes(part["hi"], part["lo"])
            items = (
                (keys[16 * i : 16 * i + 16], values[at : at + size])
                for i, (at, size) in enumerate(
                    zip(part["at"].tolist(), part["len"].tolist(), strict=True)
                )
            )
            # One transaction per batch: LMDB keeps a transaction's dirty pages in memory
            # until it commits. (Nobody sees the file before the rename.)
            with self.env.begin(write=True) as txn:
                consumed, added = txn.cursor().putmulti(items, append=True)
            if added != len(part):
                raise SnapshotError(f"{self.path}: wrote {added} of {len(part)} pairs")
        if self.example is None and len(records):
            self.example = key_text(int(records["hi"][0]), int(records["lo"][0]))
        self.pairs += len(records)

    def finish(self) -> dict:
        """Sync and close; the manifest's fields about the data file."""
        self.env.sync(True)
        self.close()
        with open(self.path, "rb") as f:
            data_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
            os.fsync(f.fileno())
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "pairs": self.pairs,
            "data_bytes": self.path.stat().st_size,
            "data_sha256": data_sha256,
            "example_key": self.example,
            "kv_app_version": __version__,
        }

    def close(self) -> None:
        self.env.close()  # a second close does nothing


def seal(where: Path, manifest: dict) -> None:
    """Finish a snapshot directory whose data file a SnapshotWriter wrote: its manifest
    written, both files read-only (servers refuse a snapshot that changed), all synced."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        _write_json(where / MANIFEST, manifest)
    except OSError as e:
        raise SnapshotError(_write_failed(where.parent, e)) from None
    for made in (where / DATA_FILE, where / MANIFEST):
        made.chmod(0o444 & ~umask)
    where.chmod(0o777 & ~umask)  # mkdtemp made it private; snapshots are shared
    _fsync_dir(where)


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
