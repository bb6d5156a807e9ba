"""Building a snapshot (kv_app/stores/snapshot.py) from a text file, in memory that does
not grow with the data: every line checked as the strict load checks it; the good pairs
partitioned by the key's leading hex digits into runs on disk (keys and values), each
partition then sorted alone and appended to LMDB in key order; synced, renamed into
place; optionally split into shards by the id's first hex digit."""

from __future__ import annotations

import collections
import ctypes
import errno
import hashlib
import json
import multiprocessing
import os
import queue
import resource
import shutil
import signal
import stat
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import lmdb
import numpy as np

from kv_app import __version__, keyspace, reader
from kv_app.keys import KEY_LEN, key_text
from kv_app.reader import Problem, Progress, iso_time
from kv_app.stores.snapshot import (
    DATA_FILE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SnapshotError,
)

# Pairs written to LMDB per transaction.
WRITE_BATCH = 200_000
# The most text bytes a partition should hold: what one partition's sort holds in memory
# (its values and 40 bytes a pair) is about this. A partition is a range of leading hex
# digits, 1, 2 or 3 of them (16, 256 or 4,096 partitions: two files each, all open in each
# scanning process), chosen by the text's size: past 4,096 x PARTITION_BYTES of text
# (128 GB, about 1.8 billion pairs) a partition holds more. Past 256 partitions the
# process's open-file limit is raised to what they need (up to its hard limit; below
# that, fewer and larger partitions).
PARTITION_BYTES = 32 * 1024 * 1024
MAX_PARTITION_BITS = 12
# One record a pair in the runs: the key's halves, its line, where its value is in the
# run's values, and its length.
RECORD = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("line", "<u8"), ("at", "<i8"), ("len", "<i8")])


def _gathered(buf, start: np.ndarray, size: np.ndarray, at: np.ndarray) -> np.ndarray:
    """buf[start[i] : start[i] + size[i]] for each i, one after the other (at[i] is where
    each begins in the result): one numpy gather, twice as fast as slicing each."""
    small = len(buf) < 1 << 31
    kind = np.int32 if small else np.int64
    index = np.repeat((start - at).astype(kind), size.astype(kind))
    index += np.arange(len(index), dtype=kind)
    return np.frombuffer(buf, dtype=np.uint8)[index]


class _RunsNotWritten(Exception):
    """Writing the runs failed (a full disk: numpy says "N requested and M written")."""


class _Runs:
    """Pairs on disk, by partition (the key's first `bits` bits): for each partition a
    file of records and a file of values, appended to chunk after chunk."""

    def __init__(self, where: Path, bits: int):
        where.mkdir(exist_ok=True)
        self.where, self.bits = where, bits
        self.count = 1 << bits
        self.files: dict[int, tuple] = {}  # partition -> (records file, values file)
        self.value_bytes = np.zeros(self.count, dtype=np.int64)  # in each values file
        self.pairs = 0

    def add(self, buf, hi, lo, start, end, line) -> None:
        """One chunk's good pairs, their values buf[start:end], appended to their partitions."""
        part = (hi >> np.uint64(64 - self.bits)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        part, start, end = part[order], start[order], end[order]
        size = end - start
        records = np.empty(len(order), dtype=RECORD)
        records["hi"], records["lo"], records["line"] = hi[order], lo[order], line[order]
        records["len"] = size
        records["at"] = np.cumsum(size) - size  # in this chunk's values, for now
        values = _gathered(buf, start, size, records["at"])
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


# A record's line, while the text is read in pieces (each numbered from 1), is its
# piece's index << PIECE_SHIFT plus its line in the piece: the same order as the file's.
PIECE_SHIFT = 36
# A piece of the text a process checks and partitions at a time, with jobs > 1.
PIECE_BYTES = 64 * 1024 * 1024


def usable_cores() -> int:
    """The cores this process may run on (its affinity), at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def _pieces(f, size: int, jobs: int) -> list[tuple[int, int]]:
    """(start, stop) of each piece of the file, cut at line starts: one piece for one
    job, else pieces of about PIECE_BYTES (at least 4 per job, for an even load)."""
    if jobs <= 1:
        return [(0, size)]
    step = max(reader.CHUNK_BYTES, min(PIECE_BYTES, size // (4 * jobs) + 1))
    cuts = [0]
    at = step
    while at < size:
        f.seek(at - 1)
        skipped = 0
        while True:  # the line start at or after `at`
            block = f.read(65536)
            newline = block.find(b"\n")
            if newline >= 0 or not block:
                break
            skipped += len(block)
        if newline < 0:
            break
        cut = at + skipped + newline
        if cut >= size:
            break
        if cut > cuts[-1]:
            cuts.append(cut)
        at = cut + step
    cuts.append(size)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _scan(f, piece, index, runs, max_value_bytes, reading, progress=None) -> int:
    """Check and partition one piece of the file (its lines numbered from 1) into runs;
    returns its lines."""
    start, stop = piece
    first = reading.lines
    for chunk in reader.chunks(
        f, reading, max_value_bytes=max_value_bytes, progress=progress, start=start, stop=stop
    ):
        if len(chunk.starts):
            hi, lo = keyspace.line_key_halves(chunk.buf, chunk.starts)
            line = chunk.numbers + (index << PIECE_SHIFT)
            runs.add(chunk.buf, hi, lo, chunk.starts + (KEY_LEN + 1), chunk.ends, line)
    return reading.lines - first


def _scan_worker(name, fd, pieces, tasks, results, where, bits, max_value_bytes) -> None:
    """A process of a parallel scan: the pieces tasks names, into its own runs. It reads
    the file its parent opened (fd), even if a new one was renamed over its name since,
    with an offset of its own."""
    _quiet_child()
    try:
        runs = _Runs(where, bits)
        try:
            with open(f"/proc/self/fd/{fd}", "rb") as f:
                for index in iter(tasks.get, None):
                    reading = reader.Reading()
                    lines = _scan(f, pieces[index], index, runs, max_value_bytes, reading)
                    results.put((index, lines, reading.problems, reading.bom))
        finally:
            runs.close()  # flushed: a full disk shows here at the latest
        results.put(("done", None, None, None))
    except _RunsNotWritten as e:
        results.put(("runs", e.__cause__, None, None))
    except reader.LoadError as e:  # a read error: `path: cannot read: reason`
        results.put(("failed", str(e), None, None))
    except BaseException as e:  # said by the parent, which stops the others
        results.put(
            ("failed", f"{name}: a build process failed: {type(e).__name__}: {e}", None, None)
        )


def _scan_in_parallel(name, f, pieces, dirs, bits, max_value_bytes, found, progress) -> list[int]:
    """The pieces checked and partitioned by len(dirs) processes while this one hashes
    the file; the problems renumbered from the file's first line. Returns each piece's
    lines."""
    context = multiprocessing.get_context("fork")
    tasks, results = context.Queue(), context.Queue()
    for index in range(len(pieces)):
        tasks.put(index)
    workers = []
    for where in dirs:
        tasks.put(None)
        workers.append(
            context.Process(
                target=_scan_worker,
                args=(name, f.fileno(), pieces, tasks, results, where, bits, max_value_bytes),
                daemon=True,
            )
        )
    lines = [0] * len(pieces)
    problems: list[list[Problem]] = [[] for _ in pieces]
    try:
        for worker in workers:
            worker.start()
        f.seek(0)
        found.digest = hashlib.file_digest(f, "sha256")
        found.bytes = f.tell()
        done = scanned = 0
        while done < len(workers):
            try:
                index, count, piece_problems, bom = results.get(timeout=1)
            except queue.Empty:
                if any(w.exitcode not in (None, 0) for w in workers):
                    raise SnapshotError(f"{name}: a build process died (out of memory?)") from None
                continue
            if index == "done":
                done += 1
            elif index == "runs":
                raise _RunsNotWritten(count)
            elif index == "failed":
                raise SnapshotError(count)
            else:
                lines[index], problems[index] = count, piece_problems
                found.bom = found.bom or bom
                scanned += pieces[index][1] - pieces[index][0]
                if progress is not None:
                    progress(scanned, pieces[-1][1])
    except BaseException:
        for worker in workers:
            if worker.is_alive():
                worker.kill()  # their runs are removed with the build's
        raise
    finally:
        for worker in workers:
            if worker.pid is not None:
                worker.join()
    first = 0
    for count, piece_problems in zip(lines, problems, strict=True):
        found.problems += [Problem(first + p.line, p.reason) for p in piece_problems]
        first += count
    found.lines = first
    return lines


def _quiet_child() -> None:
    """A build's child process ends when its parent says (kill) or dies, not on the
    signals a terminal or a test runner sends the parent's group."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:  # Linux: SIGKILL when the parent dies, whatever kills it
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


_PR_SET_PDEATHSIG = 1


class _Partitions:
    """The runs of every scanning process, read a partition at a time."""

    def __init__(self, dirs: list[Path], bits: int, first_lines: np.ndarray):
        self.dirs, self.bits, self.count = dirs, bits, 1 << bits
        self.first_lines = first_lines.astype(np.int64)  # of each piece, less 1

    def records(self, p: int) -> np.ndarray:
        """Partition p's records, their lines the file's, their `at` into values(p)."""
        parts, at = [], 0
        for where in self.dirs:
            path = where / f"{p}.records"
            if path.exists():
                records = np.fromfile(path, dtype=RECORD)
                records["at"] += at
                at += (where / f"{p}.values").stat().st_size
                parts.append(records)
        records = np.concatenate(parts) if parts else np.empty(0, dtype=RECORD)
        line = records["line"]
        records["line"] = self.first_lines[line >> PIECE_SHIFT] + (line & ((1 << PIECE_SHIFT) - 1))
        return records

    def values(self, p: int) -> bytearray:
        paths = [w / f"{p}.values" for w in self.dirs if (w / f"{p}.values").exists()]
        values = bytearray(sum(path.stat().st_size for path in paths))
        at = 0
        for path in paths:
            with open(path, "rb") as f:
                at += f.readinto(memoryview(values)[at:])
        return values


def _sorted(runs: _Partitions, p: int) -> tuple[np.ndarray, list[Problem]]:
    """Partition p's records sorted by key, the repeats of a key left out (problems)."""
    problems: list[Problem] = []
    return _sorted_unique(runs.records(p), problems), problems


def _sorted_unique(records: np.ndarray, problems: list[Problem]) -> np.ndarray:
    """A partition's records sorted by key, keeping the first line of a repeated key;
    the repeats become problems."""
    order, kept = reader.sorted_unique(
        records["hi"], records["lo"], lambda: records["line"], problems
    )
    return records[order[kept]]


def _partition_bits(text_bytes: int) -> int:
    """Leading bits of the key a partition is named by: whole hex digits (shards are
    ranges of the first one), enough for PARTITION_BYTES of text a partition, at most
    MAX_PARTITION_BITS and what the open-file limit allows (raised if it can be)."""
    bits = 4
    while text_bytes >> bits > PARTITION_BYTES and bits < MAX_PARTITION_BITS:
        bits += 4
    while bits > 8 and not _may_open(2 * (1 << bits) + 256):
        bits -= 4
    return bits


def _may_open(files: int) -> bool:
    """Can this process (and the processes it forks) hold this many files open?"""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= files:
        return True
    if hard != resource.RLIM_INFINITY and hard < files:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, hard))
    except (ValueError, OSError):
        return False
    return True


def checked_settings(shards: int, max_value_bytes: int | None) -> int:
    """A build's shard count checked (SnapshotError), and its value limit (None: the
    KV_MAX_VALUE_BYTES setting)."""
    try:
        keyspace.check_shards(shards)
    except ValueError as e:
        raise SnapshotError(str(e)) from None
    return reader.configured_max_value_bytes() if max_value_bytes is None else max_value_bytes


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
    jobs: int | None = None,
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

    jobs > 1: that many processes check and partition pieces of the text, then sort the
    partitions while this one appends them (0 or None: one per usable core). A text
    under PIECE_BYTES is built by this process alone.
    """
    jobs = jobs or usable_cores()
    max_value_bytes = checked_settings(shards, max_value_bytes)
    started = time.perf_counter()
    name = os.fspath(data_file)
    target = Path(target)
    runs_parent = Path(tmp_dir) if tmp_dir is not None else target.parent
    if target.exists() or target.is_symlink():
        raise SnapshotError(f"{target}: already exists (a snapshot is never overwritten)")
    tmp = runs_dir = None
    writers: list[SnapshotWriter] = []
    found = reader.Reading(digest=hashlib.sha256())
    try:
        with reader.opened(name) as (f, before):
            if not stat.S_ISREG(before.st_mode):
                raise SnapshotError(
                    f"{name}: not a regular file (a pipe or a device): a build reads it in "
                    "pieces, in parallel; write it to a file first"
                )
            if before.st_size == 0:
                raise SnapshotError(f"{name}: file is empty")
            _make_room(target.parent, runs_parent, before.st_size)
            runs_dir = Path(tempfile.mkdtemp(prefix=".kv-app-build-", dir=runs_parent))
            if say is not None and before.st_size >= SAY_SPACE_FROM:
                say(
                    f"building: temporary runs of about {before.st_size / 1e6:,.0f} MB in "
                    f"{runs_dir}, removed at the end"
                )
            bits = _partition_bits(before.st_size)
            if before.st_size < PIECE_BYTES:
                jobs = 1
            pieces = _pieces(f, before.st_size, jobs)
            try:
                if len(pieces) == 1:  # one process: the hash in the same pass
                    dirs = [runs_dir / "0"]
                    runs = _Runs(dirs[0], bits)
                    try:
                        lines = [_scan(f, pieces[0], 0, runs, max_value_bytes, found, progress)]
                    finally:
                        runs.close()
                else:
                    dirs = [runs_dir / str(w) for w in range(jobs)]
                    lines = _scan_in_parallel(
                        name, f, pieces, dirs, bits, max_value_bytes, found, progress
                    )
            except _RunsNotWritten as e:
                raise SnapshotError(
                    _write_failed(runs_parent, e.__cause__ or e.args[0], "its temporary runs")
                ) from None
            reader.check_unchanged(name, f, before, found.bytes, what="read")
        source_sha256 = found.digest.hexdigest()
        runs = _Partitions(dirs, bits, np.cumsum([0, *lines[:-1]]))
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        wheres = [tmp / f"shard-{index}" if shards > 1 else tmp for index in range(shards)]
        try:
            for where in wheres:
                where.mkdir(exist_ok=True)
                writers.append(SnapshotWriter(where, before.st_size))
            pairs = _sort_and_append(runs, writers, found, strict, shards, jobs)
        except (lmdb.Error, OSError) as e:
            raise SnapshotError(_write_failed(target.parent, e)) from None
        found.problems.sort(key=lambda p: p.line)
        if found.problems and strict:
            raise reader.error(name, found.problems)
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
        fsync_dir(tmp)
        if shards > 1:  # report the whole
            total = sum(m["data_bytes"] for _, m in written)
            manifest = {**manifest, "pairs": pairs, "data_bytes": total, "shards": shards}
        os.rename(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for writer in writers:
            writer.close()
        if runs_dir is not None:
            shutil.rmtree(runs_dir, ignore_errors=True)
    return {**manifest, "problems": found.problems, "bom": found.bom}  # for the caller


def _sort_and_append(
    runs: _Partitions,
    writers: list[SnapshotWriter],
    found: reader.Reading,
    strict: bool,
    shards: int,
    jobs: int,
) -> int:
    """Each partition in key order: sorted, repeats found, appended to its shard's
    writer (not once a strict build has failed: its repeats are still all found).
    With jobs > 1, that many processes sort the next partitions while this one appends.
    Returns the pairs kept."""
    kept = 0
    to_digit = runs.bits - 4
    for p, records, problems in _sorted_partitions(runs, jobs):
        found.problems += problems
        kept += len(records)
        if len(records) and not (strict and found.problems):
            writer = writers[keyspace.shard_of_digit(p >> to_digit, shards)]
            writer.append(records, runs.values(p))
    return kept


def _sorted_partitions(runs: _Partitions, jobs: int):
    """(p, its sorted records, the repeats found) for each partition p in order."""
    if jobs <= 1:
        for p in range(runs.count):
            yield p, *_sorted(runs, p)
        return
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_quiet_child) as pool:
            pending: collections.deque = collections.deque()
            for p in range(runs.count):
                pending.append((p, pool.submit(_sorted, runs, p)))
                if len(pending) > 2 * jobs:  # sorted ahead, not all at once: memory is flat
                    q, result = pending.popleft()
                    yield q, *result.result()
            while pending:
                q, result = pending.popleft()
                yield q, *result.result()
    except BrokenProcessPool:
        raise SnapshotError("a build process died (out of memory?)") from None


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
            # Made by numpy and list comprehensions, not a generator: half the time.
            keys = keyspace.halves_array(part["hi"], part["lo"]).view("V16").ravel().tolist()
            at = part["at"].tolist()
            ends = (part["at"] + part["len"]).tolist()
            items = zip(keys, [values[a:e] for a, e in zip(at, ends, strict=True)], strict=True)
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
    fsync_dir(where)


def _write_json(path: Path, payload: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
