"""CompactStore: the pairs of a text file as sorted 128-bit keys in numpy arrays and
values as slices of the file's bytes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from kv_app import lines, loader
from kv_app.keys import DASH_COLUMNS, DIGIT_COLUMNS, KEY_LEN, canonical_key, key_text
from kv_app.stores import LoadedFromText

_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _HEX_VALUE[ord(chr(_c).upper())] = _i
# Where each of the 32 hex digits of a key sits among the 40 bytes lines.line_heads reads.
_DIGIT_SLOTS = np.array([list(lines.HEAD_COLUMNS).index(c) for c in DIGIT_COLUMNS])
_LOW64 = (1 << 64) - 1
_KEYS_AT_ONCE = 1 << 20  # bounds the temporary arrays of _key_halves (about 100 MB)


def _key_halves(buf: bytes, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 128-bit keys of the lines at starts, as high and low 64-bit halves."""
    hi = np.empty(len(starts), dtype=np.uint64)
    lo = np.empty(len(starts), dtype=np.uint64)
    for first in range(0, len(starts), _KEYS_AT_ONCE):
        part = slice(first, first + _KEYS_AT_ONCE)
        nibbles = _HEX_VALUE[lines.line_heads(buf, starts[part])[:, _DIGIT_SLOTS]]
        hi[part], lo[part] = _pack_halves(nibbles)
    return hi, lo


def key_nibbles(keys: Sequence[str]) -> np.ndarray | None:
    """The (n, 32) hex digit values of keys that are all UUIDs (either case), else None:
    the vectorised form of canonical_key, for batches."""
    if not keys or not all(isinstance(k, str) and len(k) == KEY_LEN for k in keys):
        return None
    # Every key is 36 characters long (checked one by one: two keys of 35 and 37
    # characters must not pass as two of 36), so each is one row here; "replace" keeps
    # one byte per character.
    rows = np.frombuffer("".join(keys).encode("ascii", "replace"), dtype=np.uint8)
    rows = rows.reshape(-1, KEY_LEN)
    nibbles = _HEX_VALUE[rows[:, DIGIT_COLUMNS]]
    if (nibbles == 255).any() or (rows[:, DASH_COLUMNS] != ord("-")).any():
        return None
    return nibbles


def key_bytes_many(nibbles: np.ndarray) -> bytes:
    """The 16 bytes of each key (as key_nibbles gives them), one after the other."""
    return np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).tobytes()


def _pack_halves(nibbles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32) hex digit values -> the keys' high and low 64-bit halves."""
    packed = np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2])
    halves = packed.view(">u8")  # 16 bytes a key, read as two big-endian numbers
    return halves[:, 0].astype(np.uint64), halves[:, 1].astype(np.uint64)


class CompactStore(LoadedFromText, Mapping[str, str]):
    """Pairs held in a few numpy arrays and one bytes buffer: no Python object per pair.

    Keys are 128-bit numbers, sorted (high half, then low half) and found by binary
    search; values are slices of the file's bytes. A lookup only reads these pages, so
    forked workers keep sharing them (a dict lookup writes the reference count of the
    value it returns, which copies that page into the worker).
    """

    __slots__ = ("_hi", "_lo", "_start", "_end", "_buf", "report")

    def __init__(self, hi, lo, start, end, buf: bytes, report: loader.LoadReport | None = None):
        self._hi, self._lo, self._start, self._end, self._buf = hi, lo, start, end, buf
        self.report = report

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        strict: bool = True,
        progress: loader.Progress | None = None,
        max_value_bytes: int | None = None,
    ) -> CompactStore:
        """Load a data file; raises loader.LoadError if it cannot be served. A value over
        max_value_bytes makes its line bad (None: the KV_MAX_VALUE_BYTES setting)."""
        if max_value_bytes is None:
            max_value_bytes = loader.configured_max_value_bytes()
        started = time.perf_counter()
        spans, report = loader.load_spans(path, progress=progress, max_value_bytes=max_value_bytes)
        store = cls.from_spans(spans, report) if spans is not None else None
        if store is None:  # a bad line or a duplicate key: the reference path names it
            data, report = loader.load(
                path, strict=strict, progress=progress, max_value_bytes=max_value_bytes
            )
            store = cls.from_dict(data, report)
        report.pairs = len(store)
        report.seconds = time.perf_counter() - started
        return store

    @classmethod
    def from_spans(cls, spans: loader.Spans, report: loader.LoadReport) -> CompactStore | None:
        """The store over checked lines, or None if two lines have the same key."""
        hi, lo = _key_halves(spans.buf, spans.starts)
        order = np.argsort(hi)  # 4x faster than lexsort; enough unless high halves repeat
        hi, lo = hi[order], lo[order]
        same_high = hi[1:] == hi[:-1]
        if same_high.any():  # e.g. time-based UUIDs: order those by the low half too
            resort = np.lexsort((lo, hi))
            order, hi, lo = order[resort], hi[resort], lo[resort]
            same_high = hi[1:] == hi[:-1]
        if (same_high & (lo[1:] == lo[:-1])).any():
            return None
        start = spans.starts[order] + (KEY_LEN + 1)
        return cls(hi, lo, start, spans.ends[order], spans.buf, report)

    @classmethod
    def from_dict(cls, data: Mapping[str, str], report: loader.LoadReport | None = None):
        """The store over canonical key -> value pairs."""
        text = "".join(f"{key} {value}\n" for key, value in data.items()).encode("utf-8")
        spans = loader.Spans(text, *lines.line_spans(text), upper=False)
        return cls.from_spans(spans, report)

    def _index(self, key: str) -> int:
        """Position of a key, or -1."""
        # Checked first: int() would also take spaces, underscores and "0x" prefixes.
        if canonical_key(key) is None:
            return -1
        number = int(key.replace("-", ""), 16)
        high, low = np.uint64(number >> 64), np.uint64(number & _LOW64)
        hi = self._hi
        i = int(hi.searchsorted(high))
        if i == len(hi) or hi[i] != high:
            return -1
        if self._lo[i] != low:  # keys sharing their high half: search the low halves
            j = int(hi.searchsorted(high, "right"))
            i += int(self._lo[i:j].searchsorted(low))
            if i == j or self._lo[i] != low:
                return -1
        return i

    def _value(self, i: int) -> str:
        return self._buf[self._start[i] : self._end[i]].decode("utf-8")

    def __getitem__(self, key: str) -> str:
        i = self._index(key)
        if i < 0:
            raise KeyError(key)
        return self._value(i)

    def get(self, key: str, default: str | None = None) -> str | None:
        i = self._index(key)
        return default if i < 0 else self._value(i)

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The value of each key, None where missing.

        Canonical keys (see canonical_key) get one vectorised binary search for all: a
        batch of 1000 costs about as much as a few single lookups. Others are looked up
        one by one.
        """
        nibbles = key_nibbles(keys)
        if nibbles is None:  # not all UUIDs: one by one
            return [self.get(key) for key in keys]
        high, low = _pack_halves(nibbles)
        at = np.minimum(self._hi.searchsorted(high), len(self._hi) - 1)
        same_high = self._hi[at] == high
        found = same_high & (self._lo[at] == low)
        starts, ends = self._start[at].tolist(), self._end[at].tolist()
        buf = self._buf
        values = [
            buf[s:e].decode("utf-8") if hit else None
            for s, e, hit in zip(starts, ends, found.tolist(), strict=True)
        ]
        for i in np.flatnonzero(same_high & ~found).tolist():  # keys sharing a high half
            values[i] = self.get(keys[i])
        return values

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._index(key) >= 0

    def __iter__(self) -> Iterator[str]:
        for high, low in zip(self._hi.tolist(), self._lo.tolist(), strict=True):
            yield key_text(high, low)

    def __len__(self) -> int:
        return len(self._hi)

    def __repr__(self) -> str:
        return f"<CompactStore {len(self):,} pairs>"
