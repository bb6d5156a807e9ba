"""The snapshot build as a step of a Spark job (the optional extra `kv-app[spark]`): a
DataFrame of (id, value) written as a snapshot root, published as version-N and
`current` exactly as `kv-app publish` publishes a text file.

    from kv_app.stores.spark import write_snapshot
    number, manifest = write_snapshot(df, "/srv/kv", shards=4)

For a text file of `<uuid> <value>` lines or a Parquet file of (id, value), without a
job of one's own (spark-submit runs the same module as a file):

    python -m kv_app.stores.spark INPUT ROOT [--shards N] [--format text|parquet] [--keep K]

The rows are checked as a text file's lines are (see _checked: a row a text file could
not hold is refused, so that the rows always have a text file of their own), each turned
into its canonical line "<lower-case id> <value>\\n" and its key's 16 bytes; partitioned
by the shard rule of kv_app/keyspace.py, one partition a shard, and sorted by key within
each by PySpark's external sort (which spills to disk past spark.python.worker.memory).
Each task then appends its shard, a batch at a time, to the SnapshotWriter that
`kv-app build --shards N` uses, and writes its lines in key order to a piece of the
canonical text. The driver hashes the pieces in shard order, writes the manifests and
publishes, all under the root's lock (versions.publish_with).

The data version: there is no source file, so the manifests' source is the canonical
text of the rows, their lines in key order. Its SHA-256 (the version is its first 16 hex
digits) is what `kv-app build` of that text, the rows written sorted by key, gives.

ROOT must be a directory that the driver and every executor see at the same path (in
local mode any directory; on a cluster a shared mount): the tasks write the shards there.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np

from kv_app import config, keyspace, lines, loader
from kv_app.keys import KEY_LEN, canonical_key, key_text, malformed, shortened
from kv_app.loader import LoadError, iso_time
from kv_app.stores.build import RECORD, SnapshotWriter, _fsync_dir, seal
from kv_app.stores.snapshot import SnapshotError
from kv_app.stores.versions import publish_with

# Rows a task checks, and appends to its shard, at a time (at most about this many rows
# of a task are in its Python memory at once, besides the sort's).
BATCH_ROWS = 65_536
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
    rows = df.select(id_col, value_col).rdd
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
    rows = read.select(col("value").cast("binary")).rdd
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


def _publish(rows, root, shards, keep, max_value_bytes, name, say, *, from_lines):
    try:
        keyspace.check_shards(shards)
    except ValueError as e:
        raise SnapshotError(str(e)) from None
    if max_value_bytes is None:
        max_value_bytes = loader.configured_max_value_bytes()

    def make(target: Path) -> dict:
        started = time.perf_counter()
        # Named so that a publish killed half-way leaves what the next one removes.
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.spark-", dir=target.parent))
        try:
            return _build(rows, work, target, shards, max_value_bytes, name, started, from_lines)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return publish_with(root, make, keep=keep, say=say)


def _build(rows, work: Path, target: Path, shards, max_value_bytes, name, started, from_lines):
    """Run the job into work, then move its shards to target, sealed; the manifest."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    (work / PROBLEMS).mkdir()
    (work / TEXT).mkdir()
    checked = rows.mapPartitionsWithIndex(
        partial(
            _check_task,
            work=str(work),
            max_value_bytes=max_value_bytes,
            from_lines=from_lines,
            batch_rows=BATCH_ROWS,
        )
    )
    ordered = checked.repartitionAndSortWithinPartitions(
        shards, partitionFunc=partial(_shard_of_key, shards=shards)
    )
    try:
        write = partial(_write_task, work=str(work), batch_rows=BATCH_ROWS)
        results = ordered.mapPartitionsWithIndex(write).collect()
    except (PySparkException, Py4JError) as e:
        _refuse_if_problems(work, name)  # a task that failed after another found a bad row
        raise SnapshotError(f"{name}: the Spark job failed: {_cause(e)}") from e
    _refuse_if_problems(work, name)
    results.sort(key=lambda r: r["index"])
    if [r["index"] for r in results] != list(range(shards)):
        raise SnapshotError(f"{name}: the Spark job wrote shards {[r['index'] for r in results]}")
    pairs = sum(r["fields"]["pairs"] for r in results)
    if pairs == 0:
        raise SnapshotError(f"{name}: no rows")
    digest, size = hashlib.sha256(), 0
    for result in results:  # the canonical text, in key order
        piece = work / TEXT / result["piece"]
        with open(piece, "rb") as f:
            size += _hash_into(digest, f)
        piece.unlink()
    built_at = time.time()
    if shards == 1:  # the one shard is the snapshot
        made = work / results[0]["dir"]
        wheres = [made]
    else:
        made = work / "snapshot"
        made.mkdir()
        wheres = [made / f"shard-{r['index']}" for r in results]
        for result, where in zip(results, wheres, strict=True):
            os.rename(work / result["dir"], where)
    written = []
    for result, where in zip(results, wheres, strict=True):
        manifest = {
            **result["fields"],
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
            manifest["shard"] = keyspace.shard_info(result["index"], shards)
            manifest["shard_map"] = [keyspace.shard_info(i, shards) for i in range(shards)]
        written.append((where, manifest))
    seconds = round(time.perf_counter() - started, 3)
    for where, manifest in written:
        manifest["build_seconds"] = seconds
        seal(where, manifest)
    _fsync_dir(made)
    os.rename(made, target)
    _fsync_dir(target.parent)
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


def _batches(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _problem(work: str, index: int, message: str) -> None:
    """Record a bad row for the driver, which names it; the other tasks see it and stop."""
    path = Path(work) / PROBLEMS / f"{index}.{_attempt()}"
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


def _check_task(
    index: int,
    rows: Iterable,
    *,
    work: str,
    max_value_bytes: int,
    from_lines: bool,
    batch_rows: int,
):
    """The map side: (16 key bytes, canonical line) of each row; at the first bad row,
    its problem recorded and nothing more from this task."""
    try:
        pairs = _parsed(rows, index == 0) if from_lines else rows
        for batch in _batches(pairs, batch_rows):
            if _stopped(work):
                return
            yield from _checked(batch, max_value_bytes)
    except _Refused as e:
        _problem(work, index, str(e))


def _parsed(rows: Iterable, first_part: bool) -> Iterator[tuple[str, str]]:
    """(id, value) of each text line (a row holding its bytes), checked by parse_line."""
    for number, (raw,) in enumerate(rows):
        raw = bytes(raw)
        if first_part and number == 0 and raw.startswith(loader.BOM):  # as the text build
            raw = raw[len(loader.BOM) :]
        key, value, reason = lines.parse_line(raw)
        if reason is not None:
            shown = shortened(raw.decode("utf-8", "replace"))
            raise _Refused(f"line {shown!r}: {reason}")
        yield key, value


def _checked(batch: list, max_value_bytes: int) -> list[tuple[bytes, bytes]]:
    """(16 key bytes, canonical line) of each (id, value) row, or _Refused naming the
    first bad row. A row must have a line of a text file of its own that the strict
    load takes back as it is: an id that is a UUID (either case), a value that is a
    string (not null) without "\\n" (it would end the line) or NUL, not ending in "\\r"
    (read as a Windows line ending), of at most max_value_bytes UTF-8 bytes. A value
    may be empty, or hold tabs, spaces and "\\r" elsewhere."""
    ids = [row[0] for row in batch]
    values = [row[1] for row in batch]
    nibbles = keyspace.key_nibbles(ids)
    if nibbles is None:
        raise _Refused(malformed(next(i for i in ids if canonical_key(i) is None)))
    keys = keyspace.key_bytes_many(nibbles)
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
    return [(keys[16 * i : 16 * i + 16], line) for i, line in enumerate(encoded)]


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


def _shard_of_key(key: bytes, *, shards: int) -> int:
    """The partition of a key: its shard."""
    return keyspace.shard_of_digit(key[0] >> 4, shards)


def _write_task(index: int, records: Iterable[tuple[bytes, bytes]], *, work: str, batch_rows: int):
    """The reduce side: shard `index`'s records, sorted by key, appended to a snapshot's
    data file a batch at a time, their lines to a piece of the canonical text. Yields
    one result: where they are, and the manifest's fields about the data file."""
    attempt = _attempt()
    where = Path(work) / f"shard-{index}.{attempt}"
    piece = f"shard-{index}.{attempt}"
    if _stopped(work):  # another task found a bad row: skip the sort too
        yield {"index": index, "stopped": True}
        return
    where.mkdir()
    writer = SnapshotWriter(where, 0)
    mapped = writer.env.info()["map_size"]
    written = count = 0
    last = None
    try:
        with open(Path(work) / TEXT / piece, "wb") as text:
            for batch in _batches(records, batch_rows):
                if _stopped(work):
                    yield {"index": index, "stopped": True}
                    return
                keys = b"".join(key for key, _ in batch)
                halves = np.frombuffer(keys, dtype=">u8").reshape(-1, 2)
                hi, lo = halves[:, 0].astype(np.uint64), halves[:, 1].astype(np.uint64)
                repeat = np.flatnonzero((hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1]))
                if last == keys[:16] or len(repeat):
                    at = 0 if last == keys[:16] else int(repeat[0]) + 1
                    _problem(work, index, f"duplicate id {key_text(int(hi[at]), int(lo[at]))}")
                    yield {"index": index, "stopped": True}
                    return
                last = keys[-16:]
                lines_ = [line for _, line in batch]
                sizes = np.fromiter(map(len, lines_), dtype=np.int64, count=len(lines_))
                blob = b"".join(lines_)
                records_ = np.empty(len(batch), dtype=RECORD)
                records_["hi"], records_["lo"] = hi, lo
                records_["line"] = np.arange(count + 1, count + len(batch) + 1)
                records_["at"] = np.cumsum(sizes) - sizes + KEY_LEN + 1
                records_["len"] = sizes - _LINE
                # The map only reserves address space: grow it ahead of the data (a
                # snapshot takes less than its text), never by more than double.
                need = 2 * (written + len(blob)) + (1 << 26)
                if need > mapped:
                    mapped = max(need, 2 * mapped)
                    writer.env.set_mapsize(mapped)
                writer.append(records_, blob)
                text.write(blob)
                written += len(blob)
                count += len(batch)
        fields = writer.finish()
    finally:
        writer.close()
    yield {"index": index, "dir": where.name, "piece": piece, "fields": fields}


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
