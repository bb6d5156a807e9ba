"""CompactStore: the pairs of a text file as sorted 128-bit keys in numpy arrays and
values as slices of the file's bytes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from kv_app import lines, loader
from kv_app.keys import KEY_LEN, key_text
from kv_app.keyspace import key_halves, key_nibbles, line_key_halves, pack_halves
from kv_app.stores import LoadedFromText


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
        hi, lo = line_key_halves(spans.buf, spans.starts)
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
        nibbles = key_nibbles(keys)
        if nibbles is None:  # not all UUIDs: one by one
            return [self.get(key) for key in keys]
        high, low = pack_halves(nibbles)
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
