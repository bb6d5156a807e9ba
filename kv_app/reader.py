"""The one reader of data files: which lines of a file are good `<uuid> <value>` pairs,
and where they are. No Flask here.

chunks() reads a file (or a range of it) once, in pieces of about CHUNK_BYTES that end at a
line end, hashing every byte as it goes. Each piece is checked at once with numpy
(lines.check_lines); a piece that fails is checked line by line (lines.parse_line, the
reference), which names every bad line. The dict and compact stores, the snapshot build and
`kv-app check` are built on it; what they do about a repeated key is theirs
(sorted_unique below finds repeats among sorted keys).

max_value_bytes limits a value's size (None: no limit). A line over it is bad whatever else
it holds, and is never held whole: only its head is kept while the rest is counted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

import numpy as np

from kv_app import config
from kv_app.keys import KEY_LEN, key_text
from kv_app.lines import check_lines, oversize_reason, parse_line

BOM = b"\xef\xbb\xbf"
# Read this much at a time: bounds the transient memory of a reader (a chunk and what its
# consumer makes of it) and paces the progress bar.
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


def error(name: str, problems: list[Problem]) -> LoadError:
    """The LoadError for a file's bad lines: the first SHOWN_PROBLEMS, then a count."""
    lines = [p.format(name) for p in problems[:SHOWN_PROBLEMS]]
    if len(problems) > SHOWN_PROBLEMS:
        lines.append(f"{name}: ... and {len(problems) - SHOWN_PROBLEMS:,} more bad lines")
    return LoadError("\n".join(lines), tuple(problems))


@dataclass(frozen=True)
class DataIdentity:
    """Which data a file held when it was read: its path, size, modification time and
    the SHA-256 of its bytes. version names the content, whatever serves it."""

    path: str
    bytes: int
    sha256: str
    mtime: float

    @property
    def version(self) -> str:
        """A short name of the content: the first 16 hex digits of its SHA-256."""
        return self.sha256[:16]

    @property
    def modified(self) -> str:
        return iso_time(self.mtime)


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


@dataclass
class Chunk:
    """A piece of a file: whole lines, ending with "\n" (one is added to a last line that
    lacks it). buf is only valid until the reader moves on; unless it is a view of the
    caller's buffer (into), it is the chunk's own, for the caller to change.

    starts[i] and ends[i] are where good line i's key starts and where its "\n" is, in
    buf; numbers[i] its line number. problems: its bad lines. clean: every line is good
    and none has a byte-order mark (the fast paths may then work on buf whole)."""

    buf: bytearray | memoryview
    base: int  # where buf starts in the file
    lines: int
    starts: np.ndarray
    ends: np.ndarray
    numbers: np.ndarray
    upper: bool  # some key has upper-case hex digits
    clean: bool
    problems: list[Problem] = field(default_factory=list)
    bom: bool = False


@dataclass
class Reading:
    """What a reader found besides the pairs, filled in as it goes: the bad lines, a
    byte-order mark, the bytes and lines read, and their SHA-256 (when hashing)."""

    problems: list[Problem] = field(default_factory=list)
    bom: bool = False
    bytes: int = 0
    lines: int = 0
    digest: object = None  # a hashlib object, or None: not hashed

    def identity(self, name: str, stat: os.stat_result) -> DataIdentity:
        return DataIdentity(name, self.bytes, self.digest.hexdigest(), stat.st_mtime)


@contextmanager
def opened(path: str | os.PathLike[str]) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """The file open for reading and its stat: one clear LoadError if it cannot be
    opened or read (`path: cannot read: reason`), or runs out of memory."""
    name = os.fspath(path)
    if os.path.isdir(name):
        raise LoadError(f"{name}: is a directory, not a data file")
    try:
        f = open(name, "rb")
    except FileNotFoundError:
        raise LoadError(f"{name}: no such file") from None
    except PermissionError:
        raise LoadError(f"{name}: permission denied (cannot read the file)") from None
    except OSError as e:
        raise LoadError(f"{name}: cannot open: {e.strerror}") from None
    with f, read_errors(name):
        yield f, os.fstat(f.fileno())


@contextmanager
def read_errors(name: str):
    """A read that fails (EIO, ESTALE on a network volume ...) becomes a LoadError."""
    try:
        yield
    except OSError as e:
        raise LoadError(f"{name}: cannot read: {e.strerror or e}") from None
    except MemoryError:
        raise LoadError(f"{name}: out of memory while loading") from None


def check_unchanged(
    name: str, f: BinaryIO, before: os.stat_result, read: int, what: str = "loaded"
) -> None:
    """Refuse a file that was written to while it was read (read: the bytes read).

    A file replaced by rename (the safe way to publish) is fine: the open file is the
    old one, read whole."""
    after = os.fstat(f.fileno())
    if (read, after.st_size, after.st_mtime_ns) != (
        before.st_size,
        before.st_size,
        before.st_mtime_ns,
    ):
        raise LoadError(f"{name}: file changed while it was being {what}; publish it by rename")


def chunks(
    f: BinaryIO,
    reading: Reading,
    *,
    max_value_bytes: int | None = None,
    progress: Progress | None = None,
    start: int = 0,
    stop: int | None = None,
    first_line: int = 1,
    into: bytearray | None = None,
) -> Iterator[Chunk]:
    """The checked chunks of f from byte start (a line start) to stop (a line start, or
    None: the end), its first line numbered first_line. Bad lines go to reading.problems
    (and each chunk's), every byte read to reading.digest.

    into: read the file into this buffer (the file's size and one byte more), each byte
    at its offset, and give chunks as views of it; the bytes of a line skipped for its
    length are never written there. Otherwise a chunk's bytes are its own."""
    # Read to stop, else to the end (a read past the size fstat gave finds either the
    # end, or an error such as EIO, or a file that grew: the caller's check_unchanged).
    size = os.fstat(f.fileno()).st_size  # for the progress bar
    if stop is None and into is not None:
        stop = len(into) - 1
    limit = stop if stop is not None else sys.maxsize
    max_line = None if max_value_bytes is None else KEY_LEN + 1 + max_value_bytes + len(BOM)
    f.seek(start)
    # data holds the file's bytes from offset origin; pos is where the next chunk starts
    # (line `number`) and end where the bytes read so far end.
    data, origin = (bytearray(), start) if into is None else (into, 0)
    pos = end = start
    unbroken = start  # data[pos:unbroken] holds no "\n": a long line is not searched again
    number = first_line
    while True:
        block = _read(f, data, end - origin, min(CHUNK_BYTES, limit - end), into is not None)
        if reading.digest is not None:
            reading.digest.update(block)
        reading.bytes += len(block)
        end += len(block)
        if len(block):
            cut = data.rfind(b"\n", max(pos, unbroken) - origin, end - origin) + 1
            if not cut:  # a line longer than a chunk: read on, unless it is too long
                unbroken = end
                if max_line is not None and end - pos > max_line:
                    head = bytes(data[pos - origin : pos - origin + KEY_LEN + 1 + len(BOM)])
                    rest, pos = _skip_long_line(
                        f, head, end - pos, pos, limit, number, max_value_bytes, reading
                    )
                    number += 1
                    reading.lines += 1
                    if into is None:
                        data, origin = bytearray(rest), pos
                    else:
                        data[pos : pos + len(rest)] = rest
                    end = pos + len(rest)
                    if progress is not None:
                        progress(min(pos, size), size)
                continue
        elif pos == end:
            return
        else:  # the end: what is left (its last line may lack its "\n")
            if data[end - origin - 1] != ord("\n"):
                if into is None:
                    data += b"\n"
                else:
                    data[end] = ord("\n")
                end += 1
            cut = end - origin
        if into is None:
            buf, data = data, data[cut:]
            del buf[cut:]
        else:
            buf = memoryview(data)[pos:cut]
        chunk = _check(buf, pos, number, max_value_bytes)
        reading.problems += chunk.problems
        reading.bom = reading.bom or chunk.bom
        reading.lines += chunk.lines
        yield chunk
        number += chunk.lines
        pos = origin + cut
        if into is None:
            origin = pos
        if progress is not None:
            progress(min(pos, size), size)


def _read(f: BinaryIO, data: bytearray, at: int, most: int, in_place: bool):
    """Up to most bytes of f, appended to data (or written at data[at:] in place)."""
    if most <= 0:
        return b""
    if not in_place:
        block = f.read(most)
        data += block
        return block
    view = memoryview(data)[at : at + most]
    return view[: f.readinto(view)]


def _skip_long_line(f, head, length, pos, limit, number, max_value_bytes, reading):
    """A line of at least length bytes without its "\n" (its first bytes: head) over
    the limit: read the rest of it in pieces, counted and hashed, never held; its problem
    recorded. Returns the bytes after its "\n" (read, and hashed, already) and where
    they start."""
    rest = b""
    ended = False  # at its "\n"
    while pos + length < limit:
        piece = f.read(min(CHUNK_BYTES, limit - pos - length))
        if not piece:
            break
        if reading.digest is not None:
            reading.digest.update(piece)
        reading.bytes += len(piece)
        newline = piece.find(b"\n")
        if newline >= 0:
            length += newline
            rest = piece[newline + 1 :]
            ended = True
            break
        length += len(piece)
    skip = len(BOM) if pos == 0 and head.startswith(BOM) else 0
    value_bytes = length - skip - (KEY_LEN + 1)
    head = head[skip : skip + KEY_LEN + 1]
    reading.problems.append(Problem(number, oversize_reason(head, value_bytes, max_value_bytes)))
    return rest, pos + length + ended


def _check(
    buf: bytearray | memoryview, base: int, number: int, max_value_bytes: int | None
) -> Chunk:
    """The chunk's good lines: all at once with numpy, else line by line (the reference)."""
    bom = base == 0 and bytes(buf[: len(BOM)]) == BOM  # only the file's first line has one
    checked = None if bom else check_lines(buf, max_value_bytes)
    if checked is not None:
        try:
            str(buf, "utf-8")
        except UnicodeDecodeError:
            checked = None
    if checked is not None:
        starts, ends, upper = checked
        numbers = np.arange(number, number + len(starts), dtype=np.int64)
        return Chunk(buf, base, len(starts), starts, ends, numbers, upper, clean=True)
    starts, ends, numbers, problems = [], [], [], []
    upper = bom = False
    offset, line = 0, number
    text = bytes(buf)  # a chunk with a bad line: not the usual case
    while offset < len(text):
        newline = text.index(b"\n", offset)
        raw = text[offset : newline + 1]
        skip = 0
        if base + offset == 0 and raw.startswith(BOM):
            raw, skip, bom = raw[len(BOM) :], len(BOM), True
        key, _, reason = parse_line(raw, max_value_bytes)
        if reason is not None:
            problems.append(Problem(line, reason))
        else:
            starts.append(offset + skip)
            ends.append(newline)
            numbers.append(line)
            upper = upper or not raw[:KEY_LEN].islower()
        offset = newline + 1
        line += 1
    return Chunk(
        buf,
        base,
        line - number,
        np.array(starts, dtype=np.int64),
        np.array(ends, dtype=np.int64),
        np.array(numbers, dtype=np.int64),
        upper,
        clean=False,
        problems=problems,
        bom=bom,
    )


def sorted_unique(
    hi: np.ndarray, lo: np.ndarray, numbers: Callable[[], np.ndarray], problems: list[Problem]
) -> tuple[np.ndarray, np.ndarray]:
    """(order, kept): order sorts the keys (hi, lo halves) with a repeated key's lines in
    file order; kept masks out the repeats, each recorded as a problem naming the line
    of its first occurrence. numbers() gives each key's line, asked for only when some
    high halves are equal."""
    order = np.argsort(hi)  # 4x faster than lexsort; enough unless high halves repeat
    sorted_hi = hi[order]
    if not (sorted_hi[1:] == sorted_hi[:-1]).any():
        return order, np.ones(len(order), dtype=bool)
    numbers = numbers()
    order = np.lexsort((numbers, lo, hi))  # equal high halves: by low half, then line
    sorted_hi, sorted_lo = hi[order], lo[order]
    repeat = np.flatnonzero((sorted_hi[1:] == sorted_hi[:-1]) & (sorted_lo[1:] == sorted_lo[:-1]))
    kept = np.ones(len(order), dtype=bool)
    if len(repeat):
        repeat += 1
        kept[repeat] = False
        lines = numbers[order]
        first_of: dict[int, int] = {}
        for i in repeat.tolist():  # i repeats i-1, which is the first or a repeat itself
            j = first_of.get(i - 1, i - 1)
            first_of[i] = j
            key = key_text(int(sorted_hi[i]), int(sorted_lo[i]))
            problems.append(
                Problem(int(lines[i]), f"duplicate key {key} (first on line {int(lines[j])})")
            )
    return order, kept


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
