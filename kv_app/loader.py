"""Load a data file into a dict, or check one: built on kv_app.reader (the one reader
of data files). Every error names path:line. No Flask here.

The fast path turns each clean chunk (every line good) into dict entries with operations
in C: decode, split, update. When a chunk has a bad line, or a key repeats, the file is
read again in the careful path, which records every problem and the first line of every
repeated key.

max_value_bytes limits a value's size (None: no limit; the stores and the CLI pass the
KV_MAX_VALUE_BYTES setting): a longer line is bad, and never held whole.
"""

from __future__ import annotations

import gc
import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from kv_app.keys import KEY_LEN
from kv_app.reader import (  # noqa: F401  (the names this module has always offered)
    BOM,
    SHOWN_PROBLEMS,
    DataIdentity,
    LoadError,
    Problem,
    Progress,
    Reading,
    check_unchanged,
    chunks,
    configured_max_value_bytes,
    error,
    iso_time,
    opened,
    tty_progress,
)


@dataclass
class LoadReport:
    """What a load did and which data it read: pairs kept, seconds taken, lines skipped,
    a byte-order mark, and the data's identity (path, size, mtime, SHA-256)."""

    identity: DataIdentity
    pairs: int = 0
    seconds: float = 0.0
    skipped: list[Problem] = field(default_factory=list)
    bom: bool = False
    loaded_at: float = field(default_factory=time.time)

    @property
    def path(self) -> str:
        return self.identity.path

    @property
    def bytes(self) -> int:
        return self.identity.bytes

    @property
    def sha256(self) -> str:
        return self.identity.sha256

    @property
    def version(self) -> str:
        return self.identity.version

    def describe(self) -> dict:
        """The identity of the data, as /readyz shows it."""
        return {
            "version": self.version,
            "path": os.path.abspath(self.path),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "modified": self.identity.modified,
            "loaded_at": iso_time(self.loaded_at),
            "load_seconds": round(self.seconds, 3),
            "skipped_lines": len(self.skipped),
        }

    def summary(self) -> str:
        text = (
            f"loaded {self.pairs:,} pairs ({self.bytes / 1e6:,.1f} MB) "
            f"from {os.path.abspath(self.path)} in {self.seconds:.2f} s: version "
            f"{self.version}, sha256 {self.sha256}, modified {self.identity.modified}"
        )
        if self.skipped:
            where = ", ".join(str(p.line) for p in self.skipped[:SHOWN_PROBLEMS])
            more = " ..." if len(self.skipped) > SHOWN_PROBLEMS else ""
            text += f"; skipped {len(self.skipped):,} bad lines (lines {where}{more})"
        return text


def finish(
    name: str, reading: Reading, before: os.stat_result, pairs: int, strict: bool, started: float
) -> LoadReport:
    """The report of a text store's load, or the LoadError it ends in: bad lines (strict),
    no good pair, an empty file."""
    problems = sorted(reading.problems, key=lambda p: p.line)
    if problems and strict:
        raise error(name, problems)
    if not pairs:
        raise LoadError(f"{name}: no valid pairs" if problems else f"{name}: file is empty")
    report = LoadReport(reading.identity(name, before), pairs=pairs, skipped=problems)
    report.bom = reading.bom
    report.seconds = time.perf_counter() - started
    return report


def load(
    path: str | os.PathLike[str],
    *,
    strict: bool = True,
    progress: Progress | None = None,
    max_value_bytes: int | None = None,
) -> tuple[dict[str, str], LoadReport]:
    """Read a data file into a dict of canonical (lower-case) key -> value.

    strict: any bad line raises LoadError. Otherwise bad lines are skipped and listed in
    the report; a duplicate key keeps its first value. A file with no good pair always
    raises LoadError, and so does a read error (`path: cannot read: reason`). A value
    longer than max_value_bytes (None: no limit) makes its line bad.
    """
    started = time.perf_counter()
    name = os.fspath(path)
    with _gc_paused():
        for careful in (False, True):
            with opened(name) as (f, before):
                reading = Reading(digest=hashlib.sha256())
                checked = chunks(f, reading, max_value_bytes=max_value_bytes, progress=progress)
                data = _careful(checked, reading.problems) if careful else _fast(checked)
                if data is None:
                    continue
                check_unchanged(name, f, before, reading.bytes)
            return data, finish(name, reading, before, len(data), strict, started)
    raise AssertionError("the careful path always returns")


def _fast(checked) -> dict[str, str] | None:
    """The dict, or None when a chunk has a bad line or a key repeats."""
    data: dict[str, str] = {}
    for chunk in checked:
        if not chunk.clean:
            return None
        # Turn each separator into a line break: one split then gives key, value, key, ...
        # (in the chunk's own bytes: the reader has hashed them and is done with them)
        text = chunk.buf
        np.frombuffer(text, dtype=np.uint8)[chunk.starts + KEY_LEN] = ord("\n")
        parts = text.decode("utf-8").split("\n")
        parts.pop()  # the empty string after the last "\n"
        if chunk.upper:
            parts[0::2] = [key.lower() for key in parts[0::2]]
        expected = len(data) + len(parts) // 2
        pairs = iter(parts)
        data.update(zip(pairs, pairs, strict=True))
        if len(data) != expected:  # a repeated key
            return None
    return data


def _careful(checked, problems: list[Problem]) -> dict[str, str]:
    """The reference: each good line on its own; a repeated key keeps its first value and
    is a problem naming the line it first appeared on."""
    data: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for chunk in checked:
        buf = chunk.buf
        for start, end, number in zip(
            chunk.starts.tolist(), chunk.ends.tolist(), chunk.numbers.tolist(), strict=True
        ):
            key = str(buf[start : start + KEY_LEN], "ascii").lower()
            if key in first_seen:
                reason = f"duplicate key {key} (first on line {first_seen[key]})"
                problems.append(Problem(number, reason))
                continue
            data[key] = str(buf[start + KEY_LEN + 1 : end], "utf-8")
            first_seen[key] = number
    return data


def check(
    path: str | os.PathLike[str], *, max_value_bytes: int | None = None
) -> tuple[int, list[Problem]]:
    """Every problem in a data file, without building a server: (good pairs, problems).

    File-level problems (missing, a directory, unreadable) raise LoadError.
    """
    reading = Reading()
    with opened(path) as (f, _):
        data = _careful(chunks(f, reading, max_value_bytes=max_value_bytes), reading.problems)
    return len(data), sorted(reading.problems, key=lambda p: p.line)


@contextmanager
def _gc_paused():
    """No cyclic garbage collection while millions of strings are made: they form no
    cycles, and the collector's passes over the growing lists cost about 10 %."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
