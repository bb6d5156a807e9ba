"""The store: a read-only Mapping from canonical UUID key to value. No Flask here."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping

from kv_app import loader

_KEY = re.compile(loader.KEY_PATTERN)


def canonical_key(text: str) -> str | None:
    """The lower-case form of a UUID written 8-4-4-4-12 in hex digits, or None."""
    if len(text) == loader.KEY_LEN and _KEY.fullmatch(text) is not None:
        return text.lower()
    return None


class DictStore(Mapping[str, str]):
    """Pairs held in one dict, built once and only read afterwards.

    Keys are stored lower-case; lookups accept either case.
    """

    __slots__ = ("_data", "report")

    def __init__(self, data: dict[str, str], report: loader.LoadReport | None = None):
        self._data = data
        self.report = report

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        strict: bool = True,
        progress: loader.Progress | None = None,
    ) -> DictStore:
        """Load a data file; raises loader.LoadError if it cannot be served."""
        data, report = loader.load(path, strict=strict, progress=progress)
        return cls(data, report)

    def __getitem__(self, key: str) -> str:
        try:
            return self._data[key]
        except KeyError:
            lower = key.lower()
            if lower == key:
                raise
            return self._data[lower]

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self._data.get(key)
        if value is None and not key.islower():
            value = self._data.get(key.lower())
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<DictStore {len(self):,} pairs>"
