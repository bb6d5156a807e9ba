"""The Store protocol every kind of store follows, and STORES, the one registry of kinds.

A store is a read-only Mapping from canonical key to value, constructed over what it reads
(a dict, arrays, an open environment) and knowing no path of its own; its kind's factories
in STORES make one: open(path) from a file, from_pairs(pairs) from pairs in code. Config
choices, the API docs, /readyz and the tests' parametrization all derive from STORES:
adding a kind of store touches this file and its own module. Importing this module
imports no store.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class Store(Protocol):
    """What the API needs of a store. Keys are looked up in either case; a key that is
    not a UUID (see kv_app.keys) is simply not there."""

    def get(self, key: str, default: str | None = None) -> str | None: ...

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The value of each key (None where missing): exactly what get answers."""
        ...

    def __len__(self) -> int: ...

    @property
    def version(self) -> str:
        """A short name of the data served (shown in the X-Data-Version header)."""
        ...

    def describe(self) -> dict:
        """The identity of the data served, as /readyz shows it: at least "store" (the
        kind's name), "pairs" and "version"."""
        ...

    def summary(self) -> str:
        """One line for the log: what was loaded or opened, from where, which version."""
        ...

    def warnings(self) -> list[str]:
        """What the log should warn about (lines skipped, a byte-order mark ...)."""
        ...

    def example_key(self) -> str | None:
        """One key that is there (the docs' 'Try it out' example)."""
        ...

    def owns(self, key: str) -> bool:
        """Is a canonical key in this store's range? False only for another shard's keys."""
        ...

    def problem(self) -> str | None:
        """Why this store cannot answer now (one line), found with one real lookup; or
        None when it can (readiness)."""
        ...


class StoreUnavailable(Exception):
    """A lookup cannot be answered from this store any more (str(): one line, why)."""


@dataclass(frozen=True)
class StoreKind:
    """A kind of store: its name, a help line, and its factories ("module:function",
    imported on first use: numpy is not light)."""

    name: str
    help: str
    opener: str  # (path, *, strict, progress, max_value_bytes) -> Store
    maker: str | None = None  # (pairs: Mapping[str, str]) -> Store, for pairs in code
    loads_text: bool = True  # False: serves a directory built beforehand (a snapshot)
    # Peak memory of a load: bytes a pair plus bytes a byte of the text file, measured
    # (scripts/bench_memory.py) with short (10 B) and long (300 B) values, rounded up.
    per_pair: int = 0
    per_byte: float = 0.0

    def open(
        self, path, *, strict: bool = True, progress=None, max_value_bytes: int | None = None
    ) -> Store:
        """The store over what path holds (raises reader.LoadError with one clear line).
        For text: a bad line is an error (strict) or skipped; a value over max_value_bytes
        makes its line bad (None: the KV_MAX_VALUE_BYTES setting)."""
        return _imported(self.opener)(
            path, strict=strict, progress=progress, max_value_bytes=max_value_bytes
        )

    def from_pairs(self, pairs) -> Store:
        """The store over a Mapping of key -> value made in code (keys: UUIDs)."""
        if self.maker is None:
            raise TypeError(f"a {self.name} store is opened from a path, not made from pairs")
        return _imported(self.maker)(pairs)


def _imported(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


STORES: dict[str, StoreKind] = {
    kind.name: kind
    for kind in (
        StoreKind(
            "dict",
            "one Python dict; fastest load per lookup, grows per worker under traffic",
            "kv_app.stores.dict:load",
            "kv_app.stores.dict:from_pairs",
            per_pair=260,
            per_byte=1.25,
        ),
        StoreKind(
            "compact",
            "numpy arrays over the file's bytes; memory flat under traffic",
            "kv_app.stores.compact:load",
            "kv_app.stores.compact:from_pairs",
            per_pair=130,
            per_byte=1.05,
        ),
        StoreKind(
            "snapshot",
            "an LMDB snapshot built by kv-app build, opened not loaded; any size, used "
            "whenever the data path is a directory",
            "kv_app.stores.snapshot:open_store",
            loads_text=False,
        ),
    )
}


class ByGet:
    """[] and `in` for a store whose get() answers None for a missing key."""

    __slots__ = ()

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None


class LoadedFromText(ByGet):
    """Identity for the stores loaded from a text file: their loader.LoadReport."""

    __slots__ = ()
    kind = ""  # its name in STORES
    report = None  # a loader.LoadReport, set by the store's constructor

    @property
    def version(self) -> str:
        """The loaded file's (its sha256's first 16 hex digits); for a store made from
        pairs in code, the first 16 hex digits of a digest of its pairs in key order."""
        if self.report is not None:
            return self.report.version
        digest = hashlib.blake2b(digest_size=8)
        for key in sorted(self):
            digest.update(f"{key} {self.get(key)}\n".encode())
        return digest.hexdigest()

    def describe(self) -> dict:
        if self.report is None:  # made from pairs in code: no file behind it
            return {"store": self.kind, "pairs": len(self), "version": self.version}
        return {"store": self.kind, "pairs": len(self), **self.report.describe()}

    def summary(self) -> str:
        return self.report.summary() if self.report is not None else repr(self)

    def warnings(self) -> list[str]:
        report = self.report
        if report is None:
            return []
        bom = [f"{report.path}: ignored a UTF-8 byte-order mark at the start of the file"]
        skipped = [f"skipped {p.format(report.path)}" for p in report.skipped[:20]]
        return (bom if report.bom else []) + skipped

    def example_key(self) -> str | None:
        return next(iter(self), None)

    def owns(self, key: str) -> bool:
        return True

    def problem(self) -> str | None:
        example = self.example_key()
        if example is not None and self.get(example) is None:
            return f"the first key of the data ({example}) is not found"
        return None
