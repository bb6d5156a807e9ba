"""What makes a data line good: parse_line checks one line (the loader's reference path),
check_lines all lines of a chunk at once with numpy (its fast path). No Flask here.

A value may be limited in size (max_value_bytes, the KV_MAX_VALUE_BYTES setting); None is no
limit. A line over it is bad whatever else it holds: oversize_reason names it, from its
first bytes and its length only, so a reader never needs such a line whole.
"""

from __future__ import annotations

import numpy as np

from kv_app.keys import DASH_COLUMNS, KEY_LEN, canonical_key, shortened

# The fast path reads the first 37 bytes of every line (the key and its space) as five
# unaligned 8-byte words starting at these columns; the last one overlaps the fourth.
_WORDS = (0, 8, 16, 24, KEY_LEN + 1 - 8)
HEAD_COLUMNS = np.array([start + i for start in _WORDS for i in range(8)])


def _allowed_bytes(digits: bytes) -> np.ndarray:
    """allowed[j, b]: may byte b stand at column HEAD_COLUMNS[j] of a line?"""
    hex_digits = np.zeros(256, dtype=bool)
    hex_digits[list(digits)] = True
    by_column = np.tile(hex_digits, (KEY_LEN + 1, 1))
    for column in DASH_COLUMNS:
        by_column[column] = False
        by_column[column, ord("-")] = True
    by_column[KEY_LEN] = False
    by_column[KEY_LEN, ord(" ")] = True
    return by_column[HEAD_COLUMNS]


_ALLOWED_LOWER = _allowed_bytes(b"0123456789abcdef")
_ALLOWED_ANY_CASE = _allowed_bytes(b"0123456789abcdefABCDEF")


def check_lines(
    chunk: bytes | memoryview, max_value_bytes: int | None = None
) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """None if some line of the chunk is bad, else (starts, ends, upper) of its lines:
    where each line starts, where its "\n" is, and whether any key has upper-case digits.

    The same checks as parse_line, on all lines at once (except UTF-8, which the
    caller checks by decoding the chunk).
    """
    buf = np.frombuffer(chunk, dtype=np.uint8)
    if not buf.all():  # a NUL byte
        return None
    starts, ends = line_spans(chunk)
    lengths = ends - starts
    if (lengths <= KEY_LEN).any() or (buf[ends - 1] == ord("\r")).any():
        return None
    if max_value_bytes is not None and (lengths > KEY_LEN + 1 + max_value_bytes).any():
        return None
    head = line_heads(chunk, starts)
    columns = np.arange(len(HEAD_COLUMNS))
    if _ALLOWED_LOWER[columns, head].all():  # the usual case: one pass
        return starts, ends, False
    if _ALLOWED_ANY_CASE[columns, head].all():
        return starts, ends, True
    return None


def line_spans(buf: bytes | memoryview) -> tuple[np.ndarray, np.ndarray]:
    """Where each line of buf starts and where its "\n" is (buf ends with "\n")."""
    ends = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == ord("\n"))
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    return starts, ends


def line_heads(buf: bytes | memoryview, starts: np.ndarray) -> np.ndarray:
    """The first 37 bytes (key and space) of each line, as columns HEAD_COLUMNS: (n, 40)."""
    # An unaligned 8-byte view of the buffer: one gather fetches 8 columns of every line.
    words = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    return np.stack([words[starts + start] for start in _WORDS], axis=1).view(np.uint8)


def parse_line(raw: bytes, max_value_bytes: int | None = None) -> tuple[str, str, str | None]:
    """(key, value, None) for a good line, ("", "", reason) for a bad one."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        return "", "", "blank line"
    if max_value_bytes is not None and len(raw) - (KEY_LEN + 1) > max_value_bytes:
        return "", "", oversize_reason(raw, len(raw) - (KEY_LEN + 1), max_value_bytes)
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
    canonical = canonical_key(key)
    if canonical is None:
        return "", "", f"key is not a UUID (8-4-4-4-12 hex digits): {shortened(key)!r}"
    return canonical, value, None


def oversize_reason(head: bytes, value_bytes: int, max_value_bytes: int) -> str:
    """Why a line whose value (all after the key and its space, without the "\n") is over
    the limit is bad, from its first KEY_LEN + 1 bytes: its key, if that is not a UUID
    and a space, else its size. A reader that met a line of gigabytes passes its head."""
    key, space, _ = head[: KEY_LEN + 1].decode("utf-8", "replace").partition(" ")
    if not space or canonical_key(key) is None:
        return f"key is not a UUID (8-4-4-4-12 hex digits): {shortened(key)!r}"
    return f"value of {value_bytes:,} bytes, over KV_MAX_VALUE_BYTES ({max_value_bytes:,})"
