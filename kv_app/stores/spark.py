"""The snapshot build as a step of a Spark job (the optional extra `kv-app[spark]`): a
DataFrame of (id, value) written as a snapshot root, published as version-N and
`current` exactly as `kv-app publish` publishes a text file.

    from kv_app.stores.spark import write_snapshot
    number, manifest = write_snapshot(df, "/srv/kv", shards=4)

For a text file of `<uuid> <value>` lines or a Parquet file of (id, value), without a
job of one's own (spark-submit runs the same module as a file):

    python -m kv_app.stores.spark INPUT ROOT [--shards N] [--format text|parquet] [--keep K]

The job: each batch of rows (Arrow batches, mapInArrow) checked as a text file's lines
are (see _row_batch: a row a text file could not hold is refused, so that the rows always
have a text file of their own) and turned into its canonical lines "<lower-case id>
<value>\\n", their keys' 16 bytes and their shard's partition (the shard rule of
kv_app/keyspace.py, one partition a shard); then sorted by key within each partition by
Spark's own sort, which spills to disk when its memory is full. Each task appends its
shard to the SnapshotWriter that `kv-app build --shards N` uses, an Arrow batch at a
time, and writes its lines to a piece of the canonical text. The driver hashes the pieces
in shard order, writes the manifests and publishes, all under the root's lock
(versions.publish_with). The extra brings pandas and pyarrow for mapInArrow.

The data version: there is no source file, so the manifests' source is the canonical
text of the rows, their lines in key order. Its SHA-256 (the version is its first 16 hex
digits) is what `kv-app build` of that text, the rows written sorted by key, gives.

ROOT must be a directory that the driver and every executor see at the same path (in
local mode any directory; on a cluster a shared mount): the tasks write the shards there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np

from kv_app import config, keyspace, lines, loader
from kv_app.keys import KEY_LEN, canonical_key, key_text, malformed, shortened
from kv_app.loader import LoadError, iso_time
from kv_app.stores.build import RECORD, SnapshotWriter, checked_settings, fsync_dir, seal
from kv_app.stores.snapshot import SnapshotError
from kv_app.stores.versions import publish_with

# In the build's work directory: a file for each task that found a bad row (its one
# line: a task that raised would reach the driver as a Java stack trace, and be retried),
# which the other tasks see and stop at; and the pieces of the canonical text.
PROBLEMS = "problems"
TEXT = "text"
# A session that main() starts in local mode: on the loopback only, no web UI.
LOCAL_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}
_LINE = KEY_LEN + 2  # a line's bytes besides its value: the id, the space, the "\n"

Say = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


class _Refused(Exception):
    """A row that cannot be published: str() names it (without the input's name)."""


def write_snapshot(
    df,
    root: str | os.PathLike[str],
    *,
    shards: int = 1,
    keep: int = 3,
    id_col: str = "id",
    value_col: str = "value",
    max_value_bytes: int | None = None,
    name: str | None = None,
    say: Say = _quiet,
) -> tuple[int, dict]:
    """Write a Spark DataFrame's (id_col, value_col) rows as the next version-N of the
    snapshot root `root`, check it and make it current; keep the newest `keep` versions.
    Returns (N, the manifest; for shards > 1, the last shard's with the whole's pairs,
    data_bytes and shards, as build() returns it).

    Ids are UUIDs in either case (served lower-case); values are strings of at most
    max_value_bytes UTF-8 bytes (None: the KV_MAX_VALUE_BYTES setting) that a line of a
    text file can hold. A bad row or a repeated id fails the build with a SnapshotError
    of one line naming it, and nothing is published. name describes the input in the
    manifests and messages (default: the DataFrame's input files). shards > 1 (2, 4, 8
    or 16): version-N holds shard-0 ... as `kv-app build --shards N` makes them.
    """
    name = name or _describe(df)
    columns = {field.name: field.dataType for field in df.schema.fields}
    for column in (id_col, value_col):
        if column not in columns:
            raise SnapshotError(f"{name}: no column {column!r} (it has {', '.join(columns)})")
        if columns[column].typeName() != "string":
            raise SnapshotError(
                f"{name}: column {column!r} holds {columns[column].simpleString()}, "
                "expected strings"
            )
    rows = df.select(id_col, value_col)
    return _publish(rows, root, shards, keep, max_value_bytes, name, say, from_lines=False)


def write_text_snapshot(
    spark,
    path: str,
    root: str | os.PathLike[str],
    *,
    shards: int = 1,
    keep: int = 3,
    max_value_bytes: int | None = None,
    say: Say = _quiet,
) -> tuple[int, dict]:
    """write_snapshot of a text file (or a directory of them) of `<uuid> <value>` lines,
    each line checked as kv_app.lines checks it (a bad line fails the build quoting it)."""
    from pyspark.sql.functions import col

    name = os.path.basename(os.path.normpath(path))
    # Split at "\n" only (by default Hadoop also splits at "\r"), and as bytes: a line
    # that is not UTF-8 is refused here as it is by the text build, not replaced.
    read = _read(path, lambda: spark.read.option("lineSep", "\n").text(path))
    rows = read.select(col("value").cast("binary"))
    return _publish(rows, root, shards, keep, max_value_bytes, name, say, from_lines=True)


def _read(path: str, read: Callable):
    """read(), a DataFrame of path; a path Spark cannot read is one line."""
    from pyspark.errors import PySparkException

    try:
        return read()
    except PySparkException as e:
        raise SnapshotError(f"{path}: cannot read: {_cause(e)}") from None


def _describe(df) -> str:
    """The DataFrame's input files (the first three names), or what it is."""
    try:
        files = df.inputFiles()
    except Exception:  # noqa: BLE001 (only a description: some plans have no files)
        files = []
    names = [os.path.basename(f.rstrip("/")) for f in files[:3]]
    if not names:
        return "a Spark DataFrame"
    return ", ".join(names) + (f" and {len(files) - 3} more files" if len(files) > 3 else "")


def _publish(frame, root, shards, keep, max_value_bytes, name, say, *, from_lines):
    max_value_bytes = checked_settings(shards, max_value_bytes)

    def make(target: Path) -> dict:
        started = time.perf_counter()
        # Named so that a publish killed half-way leaves what the next one removes.
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.spark-", dir=target.parent))
        try:
            job = _run(frame, work, shards, max_value_bytes, name, from_lines)
            return _finish(job, work, target, shards, name, started)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return publish_with(root, make, keep=keep, say=say)


def _run(frame, work: Path, shards: int, max_value_bytes: int, name: str, from_lines: bool):
    """The job: every row checked, its shard's partition, sorted by key there, each shard
    written by the task of its partition. Returns the shards' results, by index."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    (work / PROBLEMS).mkdir()
    (work / TEXT).mkdir()
    check = partial(
        _check_batches,
        work=str(work),
        max_value_bytes=max_value_bytes,
        parts=_spread(frame.sparkSession, shards),
        from_lines=from_lines,
    )
    write = partial(_write_batches, work=str(work), shards=shards)
    try:
        checked = frame.mapInArrow(check, CHECKED)
        ordered = checked.repartition(shards, "part").sortWithinPartitions("key")
        said = ordered.mapInArrow(write, "result string").collect()
    except (PySparkException, Py4JError) as e:
        _refuse_if_problems(work, name)  # a task that failed after another found a bad row
        raise SnapshotError(f"{name}: the Spark job failed: {_cause(e)}") from e
    _refuse_if_problems(work, name)
    results = [json.loads(row.result) for row in said]
    by_shard = {r["index"]: r for r in results}
    if len(by_shard) != len(results):
        raise SnapshotError(f"{name}: the Spark job wrote a shard twice: {results}")
    return by_shard


def _spread(spark, shards: int) -> list[int]:
    """For each shard, a value of the rows' partition column that Spark's hash
    partitioning (pmod of a Murmur3 hash) sends to its own partition: one shard a task.
    Found by asking Spark, whose hash it is. (Were two shards sent to one partition, its
    task would write both in turn: slower, not wrong.)"""
    from pyspark.sql import functions as F

    candidates = spark.range(64 * shards).select(
        "id", F.pmod(F.hash("id"), F.lit(shards)).alias("partition")
    )
    first: dict[int, int] = {}
    for row in candidates.collect():
        first.setdefault(row.partition, row.id)
    return [first.get(p, p) for p in range(shards)]


def _finish(by_shard: dict, work: Path, target: Path, shards: int, name: str, started) -> dict:
    """The shards the job wrote (and the empty ones it did not) sealed with their
    manifests in a directory renamed to target; the manifest."""
    pairs = sum(r["pairs"] for r in by_shard.values())
    if pairs == 0:
        raise SnapshotError(f"{name}: no rows")
    digest, size = hashlib.sha256(), 0
    for index in sorted(by_shard):  # the canonical text, in key order
        piece = work / TEXT / by_shard[index]["piece"]
        with open(piece, "rb") as f:
            size += _hash_into(digest, f)
        piece.unlink()
    built_at = time.time()
    made = work / "snapshot"
    made.mkdir()
    written = []
    for index in range(shards):
        where = made / f"shard-{index}" if shards > 1 else made
        if index in by_shard:
            os.replace(work / by_shard[index]["dir"], where)
            fields = by_shard[index]["fields"]
        else:  # no row fell in this shard: an empty one, as kv-app build makes
            where.mkdir(exist_ok=True)
            fields = SnapshotWriter(where, 0).finish()
        manifest = {
            **fields,
            "source": {
                "name": name,
                "size": size,
                "sha256": digest.hexdigest(),
                "modified": iso_time(built_at),
            },
            "built_at": iso_time(built_at),
            "skipped_lines": 0,
        }
        if shards > 1:
            manifest["shard"] = keyspace.shard_info(index, shards)
            manifest["shard_map"] = [keyspace.shard_info(i, shards) for i in range(shards)]
        written.append((where, manifest))
    seconds = round(time.perf_counter() - started, 3)
    for where, manifest in written:
        manifest["build_seconds"] = seconds
        seal(where, manifest)
    fsync_dir(made)
    os.rename(made, target)
    fsync_dir(target.parent)
    if shards > 1:  # report the whole
        data_bytes = sum(m["data_bytes"] for _, m in written)
        manifest = {**manifest, "pairs": pairs, "data_bytes": data_bytes, "shards": shards}
    return manifest


def _hash_into(digest, f) -> int:
    """Add a file's bytes to digest, a megabyte at a time; its size."""
    size = 0
    while block := f.read(1 << 20):
        digest.update(block)
        size += len(block)
    return size


def _refuse_if_problems(work: Path, name: str) -> None:
    """The bad rows the tasks found, as one line: the first of them (in a stable order)."""
    found = sorted({p.read_text("utf-8") for p in (work / PROBLEMS).iterdir()})
    if found:
        more = f" (and {len(found) - 1} more problems)" if len(found) > 1 else ""
        raise SnapshotError(f"{name}: {found[0]}{more}")


def _cause(e: Exception) -> str:
    """The line of a Spark error that says what went wrong: a Python worker's last
    traceback line, else the first line."""
    said = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not said:
        return type(e).__name__
    line = said[-1] if any(s.startswith("Traceback") for s in said) else said[0]
    return str(shortened(line, 300))


# --- The tasks: module functions, which Spark pickles by name ------------------------------

# What the check gives each row: its partition (see _spread), its key's 16 bytes (the
# sort key: Spark orders binary as unsigned bytes, as LMDB does), its canonical line.
CHECKED = "part long, key binary, line binary"
# The most line bytes in one batch the check gives back (Arrow's binary offsets are
# 32-bit: a batch of large values is cut in pieces).
_BATCH_BYTES = 1 << 28


def _problem(work: str, message: str) -> None:
    """Record a bad row for the driver, which names it; the other tasks see it and stop."""
    path = Path(work) / PROBLEMS / str(_attempt())
    path.write_text(message, "utf-8")


def _stopped(work: str) -> bool:
    """Has some task found a bad row? (Then nothing is published: stop writing.)"""
    with os.scandir(Path(work) / PROBLEMS) as found:
        return any(True for _ in found)


def _attempt() -> int:
    """This task attempt's id, unique in the application (a retried or speculative
    attempt of a task writes a directory of its own)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.taskAttemptId() if context is not None else os.getpid()


def _partition() -> int:
    """The index of this task's partition."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.partitionId() if context is not None else 0


def _check_batches(
    batches: Iterator,
    *,
    work: str,
    max_value_bytes: int,
    parts: list[int],
    from_lines: bool,
):
    """The map side, over Arrow batches of rows (id, value), or of text lines: CHECKED
    batches; at the first bad row, its problem recorded and nothing more from this task."""
    import pyarrow as pa

    first = _partition() == 0
    shards = len(parts)
    table = np.array(parts, dtype=np.int64)
    try:
        for batch in batches:
            if _stopped(work):
                return
            if not batch.num_rows:
                continue
            if from_lines:
                keys, blob, offsets = _line_batch(batch, max_value_bytes, first)
            else:
                keys, blob, offsets = _row_batch(batch, max_value_bytes)
            first = False
            part = table[keyspace.shard_of_hi(keyspace.halves_of(keys)[0], shards)]
            # Cut where the lines would pass _BATCH_BYTES (each piece at least a row).
            cuts = [0]
            while cuts[-1] < len(part):
                limit = offsets[cuts[-1]] + _BATCH_BYTES
                cuts.append(max(cuts[-1] + 1, int(np.searchsorted(offsets, limit, "right")) - 1))
            for a, b in zip(cuts, cuts[1:], strict=False):
                rows = b - a
                line_offsets = (offsets[a : b + 1] - offsets[a]).astype(np.int32)
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(part[a:b]),
                        _binary(
                            rows, np.arange(rows + 1, dtype=np.int32) * 16, keys[16 * a : 16 * b]
                        ),
                        _binary(rows, line_offsets, blob[offsets[a] : offsets[b]]),
                    ],
                    names=["part", "key", "line"],
                )
    except _Refused as e:
        _problem(work, str(e))


def _binary(rows: int, offsets: np.ndarray, data: bytes):
    """An Arrow binary array of rows values: data cut at offsets (rows + 1 of them)."""
    import pyarrow as pa

    return pa.Array.from_buffers(
        pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A") : ord("Z") + 1] += 32


def _line_batch(batch, max_value_bytes: int, first: bool) -> tuple[bytes, bytes, np.ndarray]:
    """(keys, canonical lines, where each line starts and the end) of a batch of text
    lines, checked as the text build checks them (kv_app.lines); _Refused quoting the
    first bad one."""
    raw = batch.column(0).to_pylist()
    if first and raw and raw[0].startswith(loader.BOM):  # the file's first line, as the build
        raw[0] = raw[0][len(loader.BOM) :]
    chunk = b"\n".join(raw) + b"\n"
    checked = lines.check_lines(chunk, max_value_bytes)
    if checked is not None:
        try:
            str(chunk, "utf-8")
        except UnicodeDecodeError:
            checked = None
    if checked is None:  # the reference check, line by line, names the bad one
        for line in raw:
            reason = lines.parse_line(line, max_value_bytes)[2]
            if reason is not None:
                raise _Refused(f"line {shortened(line.decode('utf-8', 'replace'))!r}: {reason}")
        raise AssertionError("check_lines refused a batch that parse_line takes")
    starts, _, upper = checked
    if upper:  # the canonical line has the id in lower case
        buf = np.frombuffer(chunk, dtype=np.uint8).copy()
        columns = starts[:, None] + np.arange(KEY_LEN)
        buf[columns] = _LOWER[buf[columns]]
        chunk = buf.tobytes()
    hi, lo = keyspace.line_key_halves(chunk, starts)
    offsets = np.append(starts, len(chunk)).astype(np.int64)
    return keyspace.halves_bytes(hi, lo), chunk, offsets


def _row_batch(batch, max_value_bytes: int) -> tuple[bytes, bytes, np.ndarray]:
    """(keys, canonical lines, where each line starts and the end) of a batch of (id,
    value) rows, or _Refused naming the first bad row. A row must have a line of a text
    file of its own that the strict load takes back as it is: an id that is a UUID
    (either case), a value that is a string (not null) without "\\n" (it would end the
    line) or NUL, not ending in "\\r" (read as a Windows line ending), of at most
    max_value_bytes UTF-8 bytes. A value may be empty, or hold tabs, spaces and "\\r"
    elsewhere."""
    ids = batch.column(0).to_pylist()
    values = batch.column(1).to_pylist()
    raw_keys = keyspace.keys_bytes(ids)
    if raw_keys is None:
        raise _Refused(malformed(next(i for i in ids if canonical_key(i) is None)))
    canonical = "\n".join(ids).lower().split("\n")  # each id is 36 characters, no "\n"
    if None in values:
        raise _Refused(f"id {canonical[values.index(None)]}: the value is null")
    # (Spark's strings are UTF-8: a Python string from a row always encodes.)
    encoded = [f"{k} {v}\n".encode() for k, v in zip(canonical, values, strict=True)]
    blob = b"".join(encoded)
    sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    if (
        blob.count(b"\n") != len(encoded)
        or b"\x00" in blob
        or b"\r\n" in blob
        or (sizes - _LINE > max_value_bytes).any()
    ):
        raise _Refused(_first_bad(canonical, values, max_value_bytes))
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return raw_keys, blob, offsets


def _first_bad(canonical: list[str], values: list[str], max_value_bytes: int) -> str:
    """What is wrong with the first row of a batch whose value is bad."""
    for key, value in zip(canonical, values, strict=True):
        if "\n" in value:
            return (
                f"id {key}: the value holds a line break (\\n), which a line of the text "
                "format cannot hold: escape or encode it (as JSON, say)"
            )
        if "\x00" in value:
            return f"id {key}: the value holds a NUL byte"
        if value.endswith("\r"):
            return (
                f"id {key}: the value ends with CR (\\r), which the text format reads as a "
                "Windows line ending"
            )
        size = len(value.encode())
        if size > max_value_bytes:
            return f"id {key}: {lines.oversize_reason(f'{key} '.encode(), size, max_value_bytes)}"
    raise AssertionError("no bad value in the batch")  # the caller found one


def _write_batches(batches: Iterator, *, work: str, shards: int):
    """The reduce side, over one partition's CHECKED batches sorted by key: each shard's
    rows appended to a snapshot's data file a batch at a time, their lines to a piece of
    the canonical text. Yields a batch of one result (JSON) for each shard written: where
    its files are, and the manifest's fields about its data file."""
    import pyarrow as pa

    writer: _ShardWriter | None = None
    last = None
    results = []
    try:
        for batch in batches:
            if _stopped(work):
                return
            if not batch.num_rows:
                continue
            keys = _values(batch.column(1))[1]
            hi, lo = keyspace.halves_of(keys)
            if last is not None:
                hi, lo = np.append(last[0], hi), np.append(last[1], lo)
            same = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
            if same.any():
                at = int(np.flatnonzero(same)[0]) + 1
                _problem(work, f"duplicate id {key_text(int(hi[at]), int(lo[at]))}")
                return
            if last is not None:
                hi, lo = hi[1:], lo[1:]
            last = hi[-1:], lo[-1:]
            offsets, blob = _values(batch.column(2))
            of_shard = keyspace.shard_of_hi(hi, shards)
            bounds = np.searchsorted(of_shard, np.arange(shards + 1))
            for s in np.flatnonzero(bounds[1:] > bounds[:-1]).tolist():
                a, b = int(bounds[s]), int(bounds[s + 1])
                if writer is None or writer.index != s:
                    if writer is not None:
                        results.append(writer.finish())
                    writer = _ShardWriter(work, s)
                writer.append(hi[a:b], lo[a:b], offsets[a : b + 1], blob)
        if writer is not None:
            results.append(writer.finish())
    finally:
        if writer is not None:
            writer.close()
    yield pa.RecordBatch.from_arrays(
        [pa.array([json.dumps(r) for r in results], pa.string())], names=["result"]
    )


def _values(array) -> tuple[np.ndarray, memoryview]:
    """The values of an Arrow binary array (no nulls) as where each starts (and the end)
    in the bytes of them all, and those bytes."""
    import pyarrow as pa

    _, offsets, data = array.buffers()
    wide = pa.types.is_large_binary(array.type)
    offsets = np.frombuffer(offsets, dtype=np.int64 if wide else np.int32)
    offsets = offsets[array.offset : array.offset + len(array) + 1].astype(np.int64)
    blob = memoryview(data)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], blob


class _ShardWriter:
    """One shard's data file (a SnapshotWriter) and its piece of the canonical text."""

    def __init__(self, work: str, index: int):
        attempt = _attempt()
        self.index = index
        self.name = f"shard-{index}.{attempt}"
        self.where = Path(work) / self.name
        self.where.mkdir()
        self.writer = SnapshotWriter(self.where, 0)
        self.mapped = self.writer.env.info()["map_size"]
        self.text = open(Path(work) / TEXT / self.name, "wb")  # closed by close()
        self.written = self.pairs = 0

    def append(self, hi, lo, offsets: np.ndarray, blob: memoryview) -> None:
        """Rows (keys above any before) whose lines are blob[offsets[i]:offsets[i + 1]]."""
        lines_ = bytes(blob[offsets[0] : offsets[-1]])
        sizes = np.diff(offsets)
        records = np.empty(len(hi), dtype=RECORD)
        records["hi"], records["lo"] = hi, lo
        records["line"] = np.arange(self.pairs + 1, self.pairs + len(hi) + 1)
        records["at"] = offsets[:-1] - offsets[0] + KEY_LEN + 1
        records["len"] = sizes - _LINE
        # The map only reserves address space: grow it ahead of the data (a snapshot
        # takes less than its text), never by less than double.
        need = 2 * (self.written + len(lines_)) + (1 << 26)
        if need > self.mapped:
            self.mapped = max(need, 2 * self.mapped)
            self.writer.env.set_mapsize(self.mapped)
        self.writer.append(records, lines_)
        self.text.write(lines_)
        self.written += len(lines_)
        self.pairs += len(hi)

    def finish(self) -> dict:
        """Synced and closed: the shard's result for the driver."""
        fields = self.writer.finish()
        self.text.close()
        return {
            "index": self.index,
            "dir": self.name,
            "piece": self.name,
            "pairs": self.pairs,
            "fields": fields,
        }

    def close(self) -> None:
        self.writer.close()
        self.text.close()


# --- The command -------------------------------------------------------------------------


def local_session(master: str = "local[*]", conf: dict[str, str] | None = None):
    """A SparkSession in local mode on the loopback only, without the web UI; its Python
    workers run this Python (PYSPARK_PYTHON, unless set). Logs: errors only."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName("kv-app build")
    for key, value in {**LOCAL_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def main(argv: list[str] | None = None) -> int:
    """`python -m kv_app.stores.spark INPUT ROOT ...` (or spark-submit of this file)."""
    parser = argparse.ArgumentParser(
        prog="python -m kv_app.stores.spark",
        description="Publish a text file of `<uuid> <value>` lines, or a Parquet file of "
        "(id, value), as the next version of a kv_app snapshot root, with Spark.",
    )
    parser.add_argument("input", help="a text file, a Parquet file, or a directory of them")
    parser.add_argument("root", help="the snapshot root (version-N directories, `current`)")
    parser.add_argument("--shards", type=int, default=1, choices=keyspace.SHARD_COUNTS)
    parser.add_argument("--format", choices=("text", "parquet"), default="text")
    parser.add_argument(
        "--keep",
        type=int,
        default=config.DEFAULTS["KEEP_VERSIONS"],
        help="versions to keep, the current one included (default %(default)s)",
    )
    parser.add_argument(
        "--max-value-bytes", type=int, help="default: KV_MAX_VALUE_BYTES, or its default"
    )
    parser.add_argument("--id-column", default="id", help="Parquet: the ids' column")
    parser.add_argument("--value-column", default="value", help="Parquet: the values' column")
    parser.add_argument(
        "--master",
        help="default: spark-submit's --master; run with python, local[*] (on 127.0.0.1, "
        "no web UI)",
    )
    args = parser.parse_args(argv)
    from pyspark.sql import SparkSession

    ours = SparkSession.getActiveSession() is None
    if "PYSPARK_GATEWAY_PORT" in os.environ and not args.master:  # spark-submit's settings
        spark = SparkSession.builder.appName("kv-app build").getOrCreate()
    else:
        spark = local_session(args.master or "local[*]")
    say = partial(print, file=sys.stderr)
    try:
        if args.format == "parquet":
            df = _read(args.input, lambda: spark.read.parquet(args.input))
            number, manifest = write_snapshot(
                df,
                args.root,
                shards=args.shards,
                keep=args.keep,
                id_col=args.id_column,
                value_col=args.value_column,
                max_value_bytes=args.max_value_bytes,
                name=os.path.basename(os.path.normpath(args.input)),
                say=say,
            )
        else:
            number, manifest = write_text_snapshot(
                spark,
                args.input,
                args.root,
                shards=args.shards,
                keep=args.keep,
                max_value_bytes=args.max_value_bytes,
                say=say,
            )
    except LoadError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    finally:
        if ours:
            spark.stop()
    print(
        f"{manifest['pairs']:,} pairs from {args.input} in {manifest['build_seconds']:.2f} s: "
        f"{manifest['data_bytes'] / 1e6:,.1f} MB, version {manifest['source']['sha256'][:16]}"
    )
    print(f"published {args.root}/version-{number}; current -> version-{number}")
    return 0


if __name__ == "__main__":
    # spark-submit runs this file as a script, with its directory first on sys.path:
    # drop it (its build.py, dict.py ... would shadow top-level modules), and run main
    # from the module by its name, whose functions Spark's tasks import by that name.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    from kv_app.stores.spark import main as _main

    sys.exit(_main())
