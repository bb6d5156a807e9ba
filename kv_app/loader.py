"""Parse a data file of `<uuid> <value>` lines; every error names path:line. No Flask here.

Two paths give the same result. The fast path checks every line of a chunk of the file at
once with numpy (key digits and dashes, the space, no NUL, no CR before the newline), then
decodes and splits the chunk and builds the dict with operations in C. When a chunk has a
bad line, or a key repeats, the whole file is read again line by line: the reference
path, which finds every problem and names its line. load_spans is the fast path without
Python objects per pair, for CompactStore.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

KEY_LEN = 36
BOM = b"\xef\xbb\xbf"
# Read this much at a time: bounds the transient memory of the fast path (a chunk,
# its text and its line list) and paces the progress bar.
CHUNK_BYTES = 8 * 1024 * 1024

KEY_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_KEY = re.compile(KEY_PATTERN)


# The fast path reads the first 37 bytes of every line (the key and its space) as five
# unaligned 8-byte words starting at these columns; the last one overlaps the fourth.
_WORDS = (0, 8, 16, 24, KEY_LEN + 1 - 8)
HEAD_COLUMNS = np.array([start + i for start in _WORDS for i in range(8)])


def _allowed_bytes(digits: bytes) -> np.ndarray:
    """allowed[j, b]: may byte b stand at column HEAD_COLUMNS[j] of a line?"""
    hex_digits = np.zeros(256, dtype=bool)
    hex_digits[list(digits)] = True
    by_column = np.tile(hex_digits, (KEY_LEN + 1, 1))
    for column in (8, 13, 18, 23):
        by_column[column] = False
        by_column[column, ord("-")] = True
    by_column[KEY_LEN] = False
    by_column[KEY_LEN, ord(" ")] = True
    return by_column[HEAD_COLUMNS]


_ALLOWED_LOWER = _allowed_bytes(b"0123456789abcdef")
_ALLOWED_ANY_CASE = _allowed_bytes(b"0123456789abcdefABCDEF")
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
    """What a load did: pairs kept, bytes read, seconds taken, lines skipped."""

    path: str
    pairs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped: list[Problem] = field(default_factory=list)
    bom: bool = False

    def summary(self) -> str:
        text = (
            f"loaded {self.pairs:,} pairs ({self.bytes / 1e6:,.1f} MB) "
            f"from {self.path} in {self.seconds:.2f} s"
        )
        if self.skipped:
            where = ", ".join(str(p.line) for p in self.skipped[:SHOWN_PROBLEMS])
            more = " ..." if len(self.skipped) > SHOWN_PROBLEMS else ""
            text += f"; skipped {len(self.skipped):,} bad lines (lines {where}{more})"
        return text


def load(
    path: str | os.PathLike[str], *, strict: bool = True, progress: Progress | None = None
) -> tuple[dict[str, str], LoadReport]:
    """Read a data file into a dict of canonical (lower-case) key -> value.

    strict: any bad line raises LoadError. Otherwise bad lines are skipped and listed in
    the report; a duplicate key keeps its first value. A file with no good pair always
    raises LoadError.
    """
    started = time.perf_counter()
    name = os.fspath(path)
    report = LoadReport(path=name)
    with _open(name) as f, _gc_paused():
        before = os.fstat(f.fileno())
        size = before.st_size
        data = _load_fast(f, size, progress)
        if data is None:
            f.seek(0)
            data, problems, report.bom = _load_lines(f)
            if problems and strict:
                raise _error(name, problems)
            report.skipped = problems
        report.bytes = _check_unchanged(name, f, before)
    if not data:
        raise LoadError(f"{name}: no valid pairs" if report.skipped else f"{name}: file is empty")
    report.pairs = len(data)
    report.seconds = time.perf_counter() - started
    return data, report


def check(path: str | os.PathLike[str]) -> tuple[int, list[Problem]]:
    """Every problem in a data file, without building a server: (good pairs, problems).

    File-level problems (missing, a directory, unreadable) raise LoadError.
    """
    name = os.fspath(path)
    with _open(name) as f:
        data, problems, _ = _load_lines(f)
    return len(data), problems


@dataclass
class Spans:
    """A whole file in memory and where its lines are: line i is buf[starts[i]:ends[i]],
    its key the first 36 bytes, its value what follows the space. All lines are good
    (duplicate keys not yet checked); upper: some key has upper-case hex digits."""

    buf: bytes
    starts: np.ndarray
    ends: np.ndarray
    upper: bool


def load_spans(
    path: str | os.PathLike[str], *, progress: Progress | None = None
) -> tuple[Spans | None, LoadReport]:
    """The fast path without building Python objects: Spans, or None when some line is
    bad (then use load(), which names it). Raises LoadError for an unusable file."""
    started = time.perf_counter()
    name = os.fspath(path)
    report = LoadReport(path=name)
    with _open(name) as f:
        before = os.fstat(f.fileno())
        buf = f.read()
        report.bytes = _check_unchanged(name, f, before)
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
        checked = _check_chunk(chunk)
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


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    """The file in pieces that end at a line end (the last piece gets one if it lacks it)."""
    rest = b""
    while True:
        block = f.read(CHUNK_BYTES)
        if not block:
            break
        block = rest + block
        cut = block.rfind(b"\n") + 1
        rest = block[cut:]
        if cut:
            yield block[:cut]
    if rest:
        yield rest + b"\n"


def _load_fast(f: BinaryIO, size: int, progress: Progress | None) -> dict[str, str] | None:
    """The dict, or None when any chunk needs the line-by-line path."""
    data: dict[str, str] = {}
    done = 0
    for chunk in _chunks(f):
        checked = _check_chunk(chunk)
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


def _check_chunk(chunk: bytes | memoryview) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """None if some line of the chunk is bad, else (starts, ends, upper) of its lines:
    where each line starts, where its "\n" is, and whether any key has upper-case digits.

    Vectorised: the same checks as parse_line, but on all lines at once (UTF-8 is
    checked by the caller's decode).
    """
    buf = np.frombuffer(chunk, dtype=np.uint8)
    if not buf.all():  # a NUL byte
        return None
    ends = np.flatnonzero(buf == ord("\n"))  # a chunk always ends with "\n"
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    if (ends - starts <= KEY_LEN).any() or (buf[ends - 1] == ord("\r")).any():
        return None
    head = line_heads(chunk, starts)
    columns = np.arange(len(HEAD_COLUMNS))
    if _ALLOWED_LOWER[columns, head].all():  # the usual case: one pass
        return starts, ends, False
    if _ALLOWED_ANY_CASE[columns, head].all():
        return starts, ends, True
    return None


def line_heads(buf: bytes | memoryview, starts: np.ndarray) -> np.ndarray:
    """The first 37 bytes (key and space) of each line, as columns HEAD_COLUMNS: (n, 40)."""
    # An unaligned 8-byte view of the buffer: one gather fetches 8 columns of every line.
    words = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    return np.stack([words[starts + start] for start in _WORDS], axis=1).view(np.uint8)


def _load_lines(f: BinaryIO) -> tuple[dict[str, str], list[Problem], bool]:
    """The reference path: every line checked on its own. Returns (data, problems, bom)."""
    data: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    problems: list[Problem] = []
    bom = False
    for number, raw in enumerate(f, 1):
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
            bom = True
        key, value, reason = parse_line(raw)
        if reason is None and key in first_seen:
            reason = f"duplicate key {key} (first on line {first_seen[key]})"
        if reason is not None:
            problems.append(Problem(number, reason))
            continue
        data[key] = value
        first_seen[key] = number
    return data, problems, bom


def parse_line(raw: bytes) -> tuple[str, str, str | None]:
    """(key, value, None) for a good line, ("", "", reason) for a bad one."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        return "", "", "blank line"
    if raw.endswith(b"\r"):
        return "", "", "line ends with CR (Windows line endings?); convert the file to LF"
    nul = raw.find(b"\x00")
    if nul >= 0:
        return "", "", f"NUL byte at column {nul + 1}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return "", "", f"invalid UTF-8 at byte {e.start + 1} of the line"
    key, space, value = text.partition(" ")
    if not space:
        tab = " (found a tab; the separator is one space)" if "\t" in text else ""
        return "", "", f"no space between key and value{tab}"
    if _KEY.fullmatch(key) is None:
        shown = key if len(key) <= 60 else key[:60] + "..."
        return "", "", f"key is not a UUID (8-4-4-4-12 hex digits): {shown!r}"
    return key.lower(), value, None


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
