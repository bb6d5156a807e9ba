"""CompactStore: the pairs of a text file as sorted 128-bit keys in numpy arrays and
values as slices of the file's bytes."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from kv_app import loader, reader
from kv_app.keys import KEY_LEN, canonical_key, key_text, malformed
from kv_app.keyspace import halves_of, key_halves, keys_bytes, line_key_halves
from kv_app.stores import LoadedFromText


class CompactStore(LoadedFromText, Mapping[str, str]):
    """Pairs held in a few numpy arrays and one bytes buffer: no Python object per pair.

    Keys are 128-bit numbers, sorted (high half, then low half) and found by binary
    search; values are slices of the file's bytes. A lookup only reads these pages, so
    forked workers keep sharing them (a dict lookup writes the reference count of the
    value it returns, which copies that page into the worker).
    """

    __slots__ = ("_hi", "_lo", "_start", "_end", "_buf", "report")
    kind = "compact"

    def __init__(self, hi, lo, start, end, buf: bytes, report: loader.LoadReport | None = None):
        self._hi, self._lo, self._start, self._end, self._buf = hi, lo, start, end, buf
        self.report = report

    def _index(self, key: str) -> int:
        """Position of a key, or -1."""
        halves = key_halves(key)
        if halves is None:
            return -1
        high, low = np.uint64(halves[0]), np.uint64(halves[1])
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
        raw = keys_bytes(keys)
        if raw is None:  # not all UUIDs: one by one
            return [self.get(key) for key in keys]
        high, low = halves_of(raw)
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


def load(
    path: str | os.PathLike[str],
    *,
    strict: bool = True,
    progress: loader.Progress | None = None,
    max_value_bytes: int | None = None,
) -> CompactStore:
    """Load a data file; raises loader.LoadError if it cannot be served. A value over
    max_value_bytes makes its line bad (None: the KV_MAX_VALUE_BYTES setting).

    One read: the good lines' bytes are kept in one buffer (a bad line's are not),
    their keys turned into numbers chunk by chunk, then sorted once."""
    if max_value_bytes is None:
        max_value_bytes = reader.configured_max_value_bytes()
    started = time.perf_counter()
    name = os.fspath(path)
    reading = reader.Reading(digest=hashlib.sha256())
    with reader.opened(name) as (f, before):
        # The lines stay where they are in the file (one more byte: a "\n" the last
        # line may lack). A bad line's bytes are never written: a skipped line of
        # gigabytes costs no memory. The arrays are made for the most lines the file
        # can hold; only the part filled is ever resident.
        buf = bytearray(before.st_size + 1)
        most = before.st_size // (KEY_LEN + 2) + 1
        hi, lo = np.empty(most, np.uint64), np.empty(most, np.uint64)
        start, end = np.empty(most, np.int64), np.empty(most, np.int64)
        pieces = []  # (where, a chunk's line numbers, or its first one if clean)
        n = 0
        for chunk in reader.chunks(
            f, reading, max_value_bytes=max_value_bytes, progress=progress, into=buf
        ):
            k = len(chunk.starts)
            hi[n : n + k], lo[n : n + k] = line_key_halves(chunk.buf, chunk.starts)
            start[n : n + k] = chunk.starts + (chunk.base + KEY_LEN + 1)
            end[n : n + k] = chunk.ends + chunk.base
            pieces.append((n, chunk.numbers if not chunk.clean else int(chunk.numbers[0])))
            n += k
        reader.check_unchanged(name, f, before, reading.bytes)
    hi, lo = hi[:n], lo[:n]

    def lines() -> np.ndarray:  # a clean chunk's lines follow from its first one
        numbers = np.empty(n, dtype=np.int64)
        for (at, first), (to, _) in zip(pieces, [*pieces[1:], (n, None)], strict=True):
            numbers[at:to] = (
                first if not isinstance(first, int) else np.arange(first, first + to - at)
            )
        return numbers

    order, kept = reader.sorted_unique(hi, lo, lines, reading.problems)
    order = order[kept]
    del kept
    start, end = start[order], end[order]
    report = loader.finish(name, reading, before, len(order), strict, started)
    return CompactStore(hi[order], lo[order], start, end, buf, report)


def from_pairs(pairs: Mapping[str, str]) -> CompactStore:
    """A store over pairs made in code: keys UUIDs in either case, each once."""
    keys = list(pairs)
    raw = keys_bytes(keys)
    if raw is None:
        raise ValueError(malformed(next(k for k in keys if canonical_key(k) is None)))
    hi, lo = halves_of(raw)
    values = [pairs[key].encode("utf-8") for key in keys]
    sizes = np.array([len(v) for v in values], dtype=np.int64)
    end = np.cumsum(sizes)
    problems: list[reader.Problem] = []
    order, kept = reader.sorted_unique(hi, lo, lambda: np.arange(1, len(keys) + 1), problems)
    if problems:
        raise ValueError(f"{problems[0].reason.split(' (')[0]}: a key given twice")
    return CompactStore(hi[order], lo[order], (end - sizes)[order], end[order], b"".join(values))
