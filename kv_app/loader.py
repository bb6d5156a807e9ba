"""Parse a data file of `<uuid> <value>` lines; every error names path:line. No Flask here.

Two paths give the same result. The fast path checks every line of a chunk of the file at
once with numpy (key digits and dashes, the space, no NUL, no CR before the newline), then
decodes and splits the chunk and builds the dict with operations in C. When a chunk has a
bad line, or a key repeats, the whole file is read again line by line: the reference
path, which finds every problem and names its line. load_spans is the fast path without
Python objects per pair, for CompactStore.

max_value_bytes limits a value's size (None: no limit; the stores and the CLI pass the
KV_MAX_VALUE_BYTES setting). Every path reads the file in bounded pieces and gives up on a
line as soon as it is longer than the limit allows: a line of gigabytes is never held whole.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

import numpy as np

from kv_app import config
from kv_app.lines import KEY_LEN, check_lines, oversize_reason, parse_line

BOM = b"\xef\xbb\xbf"
# Read this much at a time: bounds the transient memory of the fast path (a chunk,
# its text and its line list) and paces the progress bar.
CHUNK_BYTES = 8 * 1024 * 1024


# How many problems a LoadError spells out before it only counts the rest.
SHOWN_PROBLEMS = 20

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Problem:
    """One bad line: where it is and what is wrong with it."""

    line: int
    reason: str

    def format(self, path: str) -> str:
        return f"{path}:{self.line}: {self.reason}"


class LoadError(Exception):
    """A data file that cannot be served. str() is `path:line: reason` (or `path: reason`)."""

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()):
        super().__init__(message)
        self.problems = problems


@dataclass
class LoadReport:
    """What a load did and which data it read: pairs kept, bytes read, seconds taken,
    lines skipped, and the file's identity (path, size, mtime, SHA-256 of its bytes)."""

    path: str
    pairs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped: list[Problem] = field(default_factory=list)
    bom: bool = False
    sha256: str = ""
    mtime: float = 0.0
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        """A short name of the content: the first 16 hex digits of its SHA-256."""
        return self.sha256[:16]

    def describe(self) -> dict:
        """The identity of the data, as /readyz shows it."""
        return {
            "version": self.version,
            "path": os.path.abspath(self.path),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "modified": iso_time(self.mtime),
            "loaded_at": iso_time(self.loaded_at),
            "load_seconds": round(self.seconds, 3),
            "skipped_lines": len(self.skipped),
        }

    def summary(self) -> str:
        text = (
            f"loaded {self.pairs:,} pairs ({self.bytes / 1e6:,.1f} MB) "
            f"from {os.path.abspath(self.path)} in {self.seconds:.2f} s: version "
            f"{self.version}, sha256 {self.sha256}, modified {iso_time(self.mtime)}"
        )
        if self.skipped:
            where = ", ".join(str(p.line) for p in self.skipped[:SHOWN_PROBLEMS])
            more = " ..." if len(self.skipped) > SHOWN_PROBLEMS else ""
            text += f"; skipped {len(self.skipped):,} bad lines (lines {where}{more})"
        return text


def iso_time(timestamp: float) -> str:
    """A Unix time as ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def configured_max_value_bytes() -> int:
    """KV_MAX_VALUE_BYTES as the environment sets it, else its default: the limit of a
    store's load or a build whose caller passes none (create_app and publish pass none)."""
    setting = config.BY_NAME["MAX_VALUE_BYTES"]
    raw = os.environ.get(setting.env)
    try:
        return setting.default if raw is None else setting.parse(raw)
    except config.ConfigError as e:
        raise LoadError(str(e)) from None


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
    report = LoadReport(path=name)
    with _open(name) as f, _read_errors(name), _gc_paused():
        before = os.fstat(f.fileno())
        size = before.st_size
        digest = hashlib.sha256()
        data = _load_fast(f, size, progress, digest, max_value_bytes)
        if data is None:
            f.seek(0)
            digest = hashlib.sha256()
            data, problems, report.bom = _load_lines(f, digest, max_value_bytes)
            if problems and strict:
                raise _error(name, problems)
            report.skipped = problems
        report.bytes = _check_unchanged(name, f, before)
        report.sha256, report.mtime = digest.hexdigest(), before.st_mtime
    if not data:
        raise LoadError(f"{name}: no valid pairs" if report.skipped else f"{name}: file is empty")
    report.pairs = len(data)
    report.seconds = time.perf_counter() - started
    return data, report


def check(
    path: str | os.PathLike[str], *, max_value_bytes: int | None = None
) -> tuple[int, list[Problem]]:
    """Every problem in a data file, without building a server: (good pairs, problems).

    File-level problems (missing, a directory, unreadable) raise LoadError.
    """
    name = os.fspath(path)
    with _open(name) as f, _read_errors(name):
        data, problems, _ = _load_lines(f, hashlib.sha256(), max_value_bytes)
    return len(data), problems


@dataclass
class Spans:
    """A whole file in memory and where its lines are: line i is buf[starts[i]:ends[i]],
    its key the first 36 bytes, its value what follows the space. All lines are good
    (duplicate keys not yet checked); upper: some key has upper-case hex digits."""

    buf: bytes | bytearray  # a bytearray when read under a value limit (grown in place)
    starts: np.ndarray
    ends: np.ndarray
    upper: bool


def load_spans(
    path: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    max_value_bytes: int | None = None,
) -> tuple[Spans | None, LoadReport]:
    """The fast path without building Python objects: Spans, or None when some line is
    bad (then use load(), which names it). Raises LoadError for an unusable file."""
    started = time.perf_counter()
    name = os.fspath(path)
    report = LoadReport(path=name)
    max_line = None if max_value_bytes is None else KEY_LEN + 1 + max_value_bytes + len(BOM)
    with _open(name) as f, _read_errors(name):
        before = os.fstat(f.fileno())
        buf = _read_whole(f, max_line)
        if buf is None:  # a line over the limit: read no further
            return None, report
        report.bytes = _check_unchanged(name, f, before)
    report.sha256, report.mtime = hashlib.sha256(buf).hexdigest(), before.st_mtime
    if not buf:
        raise LoadError(f"{name}: file is empty")
    if not buf.endswith(b"\n"):
        buf += b"\n"
    view = memoryview(buf)
    starts, ends, upper = [], [], False
    base = 0
    while base < len(buf):
        cut = buf.rfind(b"\n", base, base + CHUNK_BYTES) + 1 or buf.index(b"\n", base) + 1
        chunk = view[base:cut]
        checked = check_lines(chunk, max_value_bytes)
        if checked is None:
            return None, report
        try:
            str(chunk, "utf-8")
        except UnicodeDecodeError:
            return None, report
        starts.append(checked[0] + base)
        ends.append(checked[1] + base)
        upper = upper or checked[2]
        base = cut
        if progress is not None:
            progress(min(base, report.bytes), report.bytes)
    spans = Spans(buf, np.concatenate(starts), np.concatenate(ends), upper)
    report.pairs = len(spans.starts)
    report.seconds = time.perf_counter() - started
    return spans, report


def _read_whole(f: BinaryIO, max_line: int | None) -> bytes | bytearray | None:
    """The rest of f, or None as soon as a line (without its "\n") is longer than max_line
    bytes. Read in pieces and grown in place (no second copy of the file), so a line of
    gigabytes is given up after about max_line + CHUNK_BYTES bytes."""
    if max_line is None:
        return f.read()
    buf = bytearray()
    line_start = 0  # where the line being read starts
    while piece := f.read(CHUNK_BYTES):
        at = len(buf)
        buf += piece
        # Lines within the piece are checked later (check_lines); here only the one that
        # runs into it and the one it leaves open, which may span many pieces.
        first = piece.find(b"\n")
        if first < 0:
            if len(buf) - line_start > max_line:
                return None
            continue
        if at + first - line_start > max_line:
            return None
        line_start = at + piece.rfind(b"\n") + 1
    return buf


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


@contextmanager
def _read_errors(name: str):
    """A read that fails (EIO, ESTALE on a network volume ...) becomes a LoadError."""
    try:
        yield
    except OSError as e:
        raise LoadError(f"{name}: cannot read: {e.strerror or e}") from None
    except MemoryError:
        raise LoadError(f"{name}: out of memory while loading") from None


def _open(name: str) -> BinaryIO:
    if os.path.isdir(name):
        raise LoadError(f"{name}: is a directory, not a data file")
    try:
        return open(name, "rb")
    except FileNotFoundError:
        raise LoadError(f"{name}: no such file") from None
    except PermissionError:
        raise LoadError(f"{name}: permission denied (cannot read the file)") from None
    except OSError as e:
        raise LoadError(f"{name}: cannot open: {e.strerror}") from None


def _check_unchanged(name: str, f: BinaryIO, before: os.stat_result) -> int:
    """Bytes read; refuse a file that was written to while it was read.

    A file replaced by rename (the safe way to publish) is fine: the open file is the
    old one, read whole.
    """
    read = f.tell()
    after = os.fstat(f.fileno())
    if (read, after.st_size, after.st_mtime_ns) != (
        before.st_size,
        before.st_size,
        before.st_mtime_ns,
    ):
        raise LoadError(f"{name}: file changed while it was being loaded; publish it by rename")
    return read


def _error(name: str, problems: list[Problem]) -> LoadError:
    lines = [p.format(name) for p in problems[:SHOWN_PROBLEMS]]
    if len(problems) > SHOWN_PROBLEMS:
        lines.append(f"{name}: ... and {len(problems) - SHOWN_PROBLEMS:,} more bad lines")
    return LoadError("\n".join(lines), tuple(problems))


def _chunks(f: BinaryIO, digest, max_line: int | None = None) -> Iterator[bytes | None]:
    """The file in pieces that end at a line end (the last piece gets one if it lacks it);
    digest is updated with every byte read. None, and no more, once a line (without its
    "\n") is longer than max_line bytes: it is never held whole."""
    rest = b""
    while True:
        block = f.read(CHUNK_BYTES)
        if not block:
            break
        digest.update(block)
        block = rest + block
        cut = block.rfind(b"\n") + 1
        rest = block[cut:]
        if max_line is not None and len(rest) > max_line:
            yield None
            return
        if cut:
            yield block[:cut]
    if rest:
        yield rest + b"\n"


def _load_fast(
    f: BinaryIO, size: int, progress: Progress | None, digest, max_value_bytes: int | None = None
) -> dict[str, str] | None:
    """The dict, or None when any chunk needs the line-by-line path."""
    data: dict[str, str] = {}
    done = 0
    # A first line may carry a byte-order mark too; the line-by-line path counts exactly.
    max_line = None if max_value_bytes is None else KEY_LEN + 1 + max_value_bytes + len(BOM)
    for chunk in _chunks(f, digest, max_line):
        if chunk is None:
            return None
        checked = check_lines(chunk, max_value_bytes)
        if checked is None:
            return None
        starts, _, upper = checked
        # Turn each separator into a line break: one split then gives key, value, key, ...
        text = bytearray(chunk)
        np.frombuffer(text, dtype=np.uint8)[starts + KEY_LEN] = ord("\n")
        try:
            parts = text.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            return None
        parts.pop()  # the empty string after the last "\n"
        if upper:
            parts[0::2] = [key.lower() for key in parts[0::2]]
        expected = len(data) + len(parts) // 2
        pairs = iter(parts)
        data.update(zip(pairs, pairs, strict=True))
        if len(data) != expected:  # a duplicate key
            return None
        done += len(chunk)
        if progress is not None:
            progress(min(done, size), size)
    return data


def _load_lines(
    f: BinaryIO, digest, max_value_bytes: int | None = None
) -> tuple[dict[str, str], list[Problem], bool]:
    """The reference path: every line checked on its own. Returns (data, problems, bom);
    digest is updated with every byte read."""
    data: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    problems: list[Problem] = []
    bom = False
    max_line = None if max_value_bytes is None else KEY_LEN + 1 + max_value_bytes + len(BOM)
    for number, (raw, length) in enumerate(_lines(f, digest, max_line), 1):
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
            length -= len(BOM)
            bom = True
        if length > len(raw):  # only its head was kept: over the limit, whatever the rest
            key, value = "", ""
            reason = oversize_reason(raw, length - (KEY_LEN + 1), max_value_bytes)
        else:
            key, value, reason = parse_line(raw, max_value_bytes)
        if reason is None and key in first_seen:
            reason = f"duplicate key {key} (first on line {first_seen[key]})"
        if reason is not None:
            problems.append(Problem(number, reason))
            continue
        data[key] = value
        first_seen[key] = number
    return data, problems, bom


def _lines(f: BinaryIO, digest, max_line: int | None) -> Iterator[tuple[bytes, int]]:
    """Each line of f (with its "\n") and its length without the "\n"; of a line longer
    than max_line bytes only the first max_line + 1, the rest read in pieces and counted,
    never held. digest is updated with every byte read."""
    if max_line is None:
        for raw in f:
            digest.update(raw)
            yield raw, len(raw) - raw.endswith(b"\n")
        return
    while raw := f.readline(max_line + 1):
        digest.update(raw)
        length = len(raw) - raw.endswith(b"\n")
        if length > max_line:
            while piece := f.readline(CHUNK_BYTES):
                digest.update(piece)
                length += len(piece) - piece.endswith(b"\n")
                if piece.endswith(b"\n"):
                    break
        yield raw, length


def tty_progress(stream=sys.stderr, min_bytes: int = 64 * 1024 * 1024) -> Progress | None:
    """A progress bar for long loads, or None when the stream is not a terminal."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        if total < min_bytes:
            return
        filled = 30 * done // total
        stream.write(f"\rloading [{'#' * filled}{'.' * (30 - filled)}] {100 * done // total:3d}%")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show
