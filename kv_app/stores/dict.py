"""DictStore: the pairs of a text file in one Python dict."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence

from kv_app import loader
from kv_app.keys import canonical_key, malformed
from kv_app.stores import LoadedFromText


class DictStore(LoadedFromText, Mapping[str, str]):
    """Pairs held in one dict, built once and only read afterwards.

    Keys are stored lower-case; lookups accept either case.
    """

    __slots__ = ("_data", "report")
    kind = "dict"

    def __init__(self, data: dict[str, str], report: loader.LoadReport | None = None):
        self._data = data
        self.report = report

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self._data.get(key)
        # Only keys as the loader stores them are in the dict: lower-case UUIDs. Anything
        # else found there would be a bug; a key in upper case is looked up lower-cased.
        if value is None and isinstance(key, str) and not key.islower():
            value = self._data.get(key.lower())
        return default if value is None else value

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The value of each key, None where missing."""
        values = list(map(self._data.get, keys))  # canonical keys: each found or not, once
        if None in values:  # a key not found may be one in upper case
            get = self.get
            values = [get(k) if v is None else v for k, v in zip(keys, values, strict=True)]
        return values

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<DictStore {len(self):,} pairs>"


def load(
    path: str | os.PathLike[str],
    *,
    strict: bool = True,
    progress: loader.Progress | None = None,
    max_value_bytes: int | None = None,
) -> DictStore:
    """Load a data file; raises loader.LoadError if it cannot be served. A value over
    max_value_bytes makes its line bad (None: the KV_MAX_VALUE_BYTES setting)."""
    if max_value_bytes is None:
        max_value_bytes = loader.configured_max_value_bytes()
    data, report = loader.load(
        path, strict=strict, progress=progress, max_value_bytes=max_value_bytes
    )
    return DictStore(data, report)


def from_pairs(pairs: Mapping[str, str]) -> DictStore:
    """A store over pairs made in code: keys in either case (stored lower-case)."""
    data = {}
    for key, value in pairs.items():
        canonical = canonical_key(key)
        if canonical is None:
            raise ValueError(malformed(key))
        data[canonical] = value
    return DictStore(data)
