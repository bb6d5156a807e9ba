"""Snapshots: an immutable on-disk store, built offline from a text file and opened, not
loaded (LMDB through py-lmdb). Also the versions of a snapshot root: publish, rollback.

A snapshot is a directory holding:
- data.mdb: an LMDB file: key = the 16 bytes of the UUID, value = the UTF-8 bytes of
  the value, one entry per pair, written in key order;
- manifest.json: what it is and where it came from (see MANIFEST_FIELDS).

A snapshot root holds version-N snapshots and a symlink `current` to one of them;
publishing builds version-N+1 beside the others and then repoints `current` atomically.

Opening checks what can be checked without reading the data (manifest, format version,
file size, LMDB header, entry count); verify() reads every byte (sha256). An LMDB
environment is never used across fork: SnapshotStore opens one in each process that
looks a key up, on first use; the gunicorn master only checks, then closes.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import lmdb
import numpy as np

from kv_app import __version__, lines, loader
from kv_app.keys import KEY_LEN, canonical_key, key_bytes, key_text
from kv_app.loader import LoadError, Problem, Progress
from kv_app.stores import ByGet, kind_of
from kv_app.stores.compact import _key_halves, key_bytes_many, key_nibbles

FORMAT = "kv_app-snapshot"
FORMAT_VERSION = 1
DATA_FILE = "data.mdb"
MANIFEST = "manifest.json"
CURRENT = "current"
VERSION_DIR = re.compile(r"^version-(\d+)$")
MANIFEST_FIELDS = (
    "format",  # FORMAT
    "format_version",  # FORMAT_VERSION: a reader refuses any other
    "pairs",  # entries in data.mdb
    "data_bytes",  # size of data.mdb: a truncated copy is refused at open
    "data_sha256",  # of data.mdb, for verify() and `kv-app check --deep`
    "source",  # {"name", "size", "sha256", "modified"} of the text file it was built from
    "built_at",  # ISO 8601, UTC
    "build_seconds",
    "skipped_lines",  # bad lines left out (lenient builds)
    "example_key",  # the first key, for the docs' 'Try it out'
    "kv_app_version",
)
# Work on the text file this many bytes at a time (bounds the transient memory).
CHUNK_BYTES = 64 * 1024 * 1024
# How many shards a build can split into: a shard is a range of first hex digits.
SHARD_COUNTS = (1, 2, 4, 8, 16)
# Pairs written to LMDB per transaction.
WRITE_BATCH = 200_000


class SnapshotError(LoadError):
    """A snapshot that cannot be built or served: str() is one line naming its path."""


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


# --- Building ----------------------------------------------------------------------------


@dataclass
class _Pairs:
    """Where every good pair of a text file is: key halves, value span, line number."""

    hi: np.ndarray
    lo: np.ndarray
    start: np.ndarray  # of the value in the file
    end: np.ndarray
    line: np.ndarray
    problems: list[Problem]
    bom: bool


def _scan(mm: mmap.mmap, view: memoryview, progress: Progress | None) -> _Pairs:
    """Check every line of a whole file (a read-only mmap) as the strict load does and
    locate the good pairs; the file's bytes are never copied whole."""
    hi, lo, start, end, line, problems = [], [], [], [], [], []
    bom = False
    size = len(view)
    base = line_base = 0
    while base < size:
        cut = _cut(mm, base, size)
        chunk = view[base:cut]
        tail = cut == size and view[size - 1] != ord("\n")
        if tail:  # the last line lacks its "\n": check a copy that has it
            chunk = memoryview(bytes(chunk) + b"\n")
        checked = None if base == 0 and bytes(chunk[:3]) == loader.BOM else lines.check_lines(chunk)
        if checked is not None:
            try:
                str(chunk, "utf-8")
            except UnicodeDecodeError:
                checked = None
        if checked is not None:
            starts, ends, _ = checked
            h, low = _key_halves(chunk, starts)
            hi.append(h)
            lo.append(low)
            start.append(starts + (base + KEY_LEN + 1))
            end.append(ends + base)
            line.append(np.arange(len(starts), dtype=np.uint64) + (line_base + 1))
            count = len(starts)
        else:  # the reference path, line by line, on this chunk only
            count, found_bom = _scan_lines(
                chunk, base, line_base, hi, lo, start, end, line, problems
            )
            bom = bom or found_bom
        line_base += count
        base = cut
        if progress is not None:
            progress(base, size)

    def joined(parts, dtype):
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    return _Pairs(
        joined(hi, np.uint64),
        joined(lo, np.uint64),
        joined(start, np.int64),
        joined(end, np.int64),
        joined(line, np.uint64),
        problems,
        bom,
    )


def _cut(mm: mmap.mmap, base: int, size: int) -> int:
    """Where the chunk starting at base ends: after the last "\n" within CHUNK_BYTES."""
    if base + CHUNK_BYTES >= size:
        return size
    at = mm.rfind(b"\n", base, base + CHUNK_BYTES)
    if at < 0:  # one line longer than a chunk
        at = mm.find(b"\n", base + CHUNK_BYTES)
    return size if at < 0 else at + 1


def _scan_lines(chunk, base, line_base, hi, lo, start, end, line, problems) -> tuple[int, bool]:
    """parse_line on each line of a chunk; good pairs appended, bad lines recorded."""
    data = bytes(chunk)
    bom = False
    offset = 0
    number = line_base
    h_, l_, s_, e_, n_ = [], [], [], [], []
    while offset < len(data):
        newline = data.index(b"\n", offset)
        raw = data[offset : newline + 1]
        number += 1
        skip = 0
        if number == 1 and raw.startswith(loader.BOM):
            raw, skip, bom = raw[len(loader.BOM) :], len(loader.BOM), True
        key, _, reason = lines.parse_line(raw)
        if reason is not None:
            problems.append(Problem(number, reason))
        else:
            value = int(key.replace("-", ""), 16)
            h_.append(value >> 64)
            l_.append(value & ((1 << 64) - 1))
            s_.append(base + offset + skip + KEY_LEN + 1)
            e_.append(base + newline)
            n_.append(number)
        offset = newline + 1
    hi.append(np.array(h_, dtype=np.uint64))
    lo.append(np.array(l_, dtype=np.uint64))
    start.append(np.array(s_, dtype=np.int64))
    end.append(np.array(e_, dtype=np.int64))
    line.append(np.array(n_, dtype=np.uint64))
    return number - line_base, bom


def _sorted_unique(pairs: _Pairs, strict: bool, name: str) -> np.ndarray:
    """The order that sorts the pairs by key, keeping the first line of a repeated key;
    repeats become problems (strict: the build fails with all of them, by line)."""
    order = np.argsort(pairs.hi)
    hi = pairs.hi[order]
    if (hi[1:] == hi[:-1]).any():  # equal high halves: order by low half, then line
        order = np.lexsort((pairs.line, pairs.lo, pairs.hi))
        hi = pairs.hi[order]
    lo = pairs.lo[order]
    repeat = np.flatnonzero((hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])) + 1
    if len(repeat):
        first_of = {}
        for i in repeat.tolist():  # i repeats i-1, which is the first or a repeat itself
            j = first_of.get(i - 1, i - 1)
            first_of[i] = j
            key = key_text(int(hi[i]), int(lo[i]))
            first_line = int(pairs.line[order[j]])
            pairs.problems.append(
                Problem(
                    int(pairs.line[order[i]]),
                    f"duplicate key {key} (first on line {first_line})",
                )
            )
        order = np.delete(order, repeat)
    pairs.problems.sort(key=lambda p: p.line)
    if pairs.problems and strict:
        raise loader._error(name, pairs.problems)
    return order


def build(
    data_file: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    strict: bool = True,
    progress: Progress | None = None,
    shards: int = 1,
) -> dict:
    """Build a snapshot of data_file at target (which must not exist); return its manifest.

    Every line is checked as the strict load checks it (same `path:line: reason`
    messages); strict=False leaves bad lines out. The snapshot is written into a
    temporary directory beside target, synced, and renamed into place: a reader never
    sees half of one. Memory: about 70 bytes per pair at the peak, plus the page cache.

    shards > 1 (2, 4, 8 or 16): target holds shard-0 ... shard-N-1, each a snapshot of
    the keys whose first hex digit falls in its range, with the shard map in its manifest.
    """
    if shards not in SHARD_COUNTS:
        raise SnapshotError(
            f"--shards {shards}: expected one of {', '.join(map(str, SHARD_COUNTS))}"
        )
    started = time.perf_counter()
    name = os.fspath(data_file)
    target = Path(target)
    if target.exists() or target.is_symlink():
        raise SnapshotError(f"{target}: already exists (a snapshot is never overwritten)")
    tmp = None
    try:
        with loader._open(name) as f, loader._read_errors(name):
            before = os.fstat(f.fileno())
            if before.st_size == 0:
                raise SnapshotError(f"{name}: file is empty")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            mm.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mm)
            source_sha256 = _sha256(view)
            pairs = _scan(mm, view, progress)
            view.release()
            order = _sorted_unique(pairs, strict, name)
            if len(order) == 0:
                raise SnapshotError(f"{name}: no valid pairs")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            written = []
            # Sorted keys: each shard is one run of the order (by the first hex digit).
            shard_of = (pairs.hi[order] >> np.uint64(60)).astype(np.int64) * shards // 16
            bounds = np.searchsorted(shard_of, np.arange(shards + 1))
            for index in range(shards):
                where = tmp / f"shard-{index}" if shards > 1 else tmp
                where.mkdir(exist_ok=True)
                part = order[bounds[index] : bounds[index + 1]]
                manifest = _write(where, mm, pairs, part, before.st_size)
                if shards > 1:
                    manifest["shard"] = shard_info(index, shards)
                    manifest["shard_map"] = [shard_info(i, shards) for i in range(shards)]
                written.append((where, manifest))
            mm.close()
            after = os.fstat(f.fileno())
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise SnapshotError(
                    f"{name}: file changed while it was being read; publish it by rename"
                )
        umask = os.umask(0)
        os.umask(umask)
        for where, manifest in written:
            manifest.update(
                source={
                    "name": os.path.basename(name),
                    "size": before.st_size,
                    "sha256": source_sha256,
                    "modified": _iso(before.st_mtime),
                },
                built_at=_iso(time.time()),
                build_seconds=round(time.perf_counter() - started, 3),
                skipped_lines=len(pairs.problems),
            )
            _write_json(where / MANIFEST, manifest)
            where.chmod(0o777 & ~umask)  # mkdtemp made it private; snapshots are shared
            _fsync_dir(where)
        _fsync_dir(tmp)
        if shards > 1:  # report the whole
            total = sum(m["data_bytes"] for _, m in written)
            manifest = {**manifest, "pairs": len(order), "data_bytes": total, "shards": shards}
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**manifest, "problems": pairs.problems, "bom": pairs.bom}  # for the caller


def shard_info(index: int, count: int) -> dict:
    """Shard index of count: the first hex digits of the keys it holds."""
    per = 16 // count
    digits = "".join(f"{d:x}" for d in range(index * per, (index + 1) * per))
    return {"index": index, "count": count, "digits": digits}


def _sha256(view: memoryview) -> str:
    digest = hashlib.sha256()
    for at in range(0, len(view), CHUNK_BYTES):
        digest.update(view[at : at + CHUNK_BYTES])
    return digest.hexdigest()


def _write(tmp: Path, mm: mmap.mmap, pairs: _Pairs, order: np.ndarray, size: int) -> dict:
    path = tmp / DATA_FILE
    # The map only reserves address space; the file grows as pages are written.
    env = lmdb.open(
        str(path), map_size=max(1 << 26, 3 * size), subdir=False, lock=False, sync=False
    )
    try:
        for first in range(0, len(order), WRITE_BATCH):
            # One transaction per batch: LMDB keeps a transaction's dirty pages in
            # memory until it commits, so one for everything held a copy of the data.
            # (Nobody sees the file before the rename, so partial commits are harmless.)
            with env.begin(write=True) as txn:
                cursor = txn.cursor()
                part = order[first : first + WRITE_BATCH]
                halves = np.empty((len(part), 2), dtype=">u8")
                halves[:, 0], halves[:, 1] = pairs.hi[part], pairs.lo[part]
                keys = halves.tobytes()
                items = (
                    (keys[16 * i : 16 * i + 16], mm[s:e])
                    for i, (s, e) in enumerate(
                        zip(pairs.start[part].tolist(), pairs.end[part].tolist(), strict=True)
                    )
                )
                consumed, added = cursor.putmulti(items, append=True)
                if added != len(part):
                    raise SnapshotError(f"{path}: wrote {added} of {len(part)} pairs")
        env.sync(True)
        example = key_text(int(pairs.hi[order[0]]), int(pairs.lo[order[0]])) if len(order) else None
    finally:
        env.close()
    with open(path, "rb") as f:
        data_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        os.fsync(f.fileno())
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pairs": len(order),
        "data_bytes": path.stat().st_size,
        "data_sha256": data_sha256,
        "example_key": example,
        "kv_app_version": __version__,
    }


def _write_json(path: Path, payload: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- Opening and serving -----------------------------------------------------------------


def resolve(path: str | os.PathLike[str]) -> Path:
    """The snapshot directory path names: itself, or what a root's `current` points at now."""
    path = Path(path)
    if (path / CURRENT).is_symlink() and not (path / MANIFEST).exists():
        target = (path / CURRENT).resolve()
        if not target.is_dir():
            raise SnapshotError(f"{path / CURRENT}: points at {target}, which is not there")
        return target
    return path


def read_manifest(snapshot: Path) -> dict:
    """The manifest of a snapshot directory, checked; SnapshotError naming what is wrong."""
    path = snapshot / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise SnapshotError(f"{snapshot}: not a kv_app snapshot (no {MANIFEST})") from None
    except OSError as e:
        raise SnapshotError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise SnapshotError(f"{path}: not JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError(f"{path}: not a kv_app snapshot manifest (format is not {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(
            f"{path}: snapshot format version {manifest.get('format_version')!r}; this "
            f"kv_app ({__version__}) reads version {FORMAT_VERSION}: rebuild it with kv-app build"
        )
    missing = [f for f in MANIFEST_FIELDS if f not in manifest]
    if missing:
        raise SnapshotError(f"{path}: manifest lacks {', '.join(missing)}")
    return manifest


# This process's open environments, by data file: LMDB allows one per file per process.
_ENVS: dict[tuple[int, str], tuple[lmdb.Environment, lmdb.Transaction]] = {}


def _reader(data: Path, size: int) -> lmdb.Transaction:
    """This process's read transaction on a snapshot's data file (opened on first use:
    an environment is never used across fork). It lives as long as the process or until
    release(): the file never changes, so one transaction sees all of it."""
    key = (os.getpid(), str(data))
    if key not in _ENVS:
        # Read-only, no lock file (the file never changes; the reader table leaked slots
        # when workers were killed), no read-ahead (beyond RAM it made lookups 100x slower).
        env = lmdb.open(
            str(data),
            subdir=False,
            readonly=True,
            lock=False,
            readahead=False,
            map_size=size,
            max_readers=1,
        )
        _ENVS[key] = (env, env.begin(buffers=False))
    return _ENVS[key][1]


def release(data: Path) -> None:
    """Close this process's environment on data, if open."""
    opened = _ENVS.pop((os.getpid(), str(data)), None)
    if opened is not None:
        env, txn = opened
        txn.abort()
        env.close()


def open_snapshot(path: str | os.PathLike[str]) -> SnapshotStore:
    """Open the snapshot path names (a snapshot directory or a root's `current`) after
    the checks that need no full read: manifest, format version, data file size, LMDB
    header, entry count, first key. Raises SnapshotError with one line."""
    started = time.perf_counter()
    named = Path(path)
    if not named.is_dir():
        raise SnapshotError(
            f"{named}: not a snapshot directory (build one: kv-app build DATA_FILE SNAPSHOT_DIR)"
        )
    snapshot = resolve(named)
    manifest = read_manifest(snapshot)
    data = snapshot / DATA_FILE
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        raise SnapshotError(f"{snapshot}: {DATA_FILE} is missing") from None
    if size != manifest["data_bytes"]:
        raise SnapshotError(
            f"{data}: {size:,} bytes, the manifest says {manifest['data_bytes']:,} "
            "(truncated or replaced?)"
        )
    was_open = (os.getpid(), str(data)) in _ENVS
    try:
        txn = _reader(data, size)
        entries = txn.stat()["entries"]
        cursor = txn.cursor()
        first = cursor.key() if cursor.first() else None
        example = key_bytes(manifest["example_key"]) if manifest["example_key"] else None
        found = txn.get(example) if example else b"" if manifest["pairs"] == 0 else None
    except lmdb.Error as e:
        release(data)
        raise SnapshotError(f"{data}: not a readable LMDB file: {e}") from None
    finally:
        if not was_open:  # the checks leave nothing open (the master forks after them)
            release(data)
    if entries != manifest["pairs"]:
        raise SnapshotError(f"{data}: {entries:,} entries, the manifest says {manifest['pairs']:,}")
    if found is None or first != example:
        raise SnapshotError(f"{data}: does not hold the manifest's first key")
    store = SnapshotStore(snapshot, manifest, named)
    store.open_seconds = time.perf_counter() - started
    return store


def verify(path: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> dict:
    """Read every byte: the data file against the manifest's sha256, and optionally a
    text file against the source sha256. Returns the manifest; SnapshotError otherwise."""
    store = open_snapshot(path)
    snapshot, manifest = store.directory, store.manifest
    with open(snapshot / DATA_FILE, "rb") as f:
        if hashlib.file_digest(f, "sha256").hexdigest() != manifest["data_sha256"]:
            raise SnapshotError(f"{snapshot / DATA_FILE}: sha256 differs from the manifest's")
    if source is not None:
        try:
            with open(source, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            raise SnapshotError(f"{source}: cannot read: {e.strerror or e}") from None
        if digest != manifest["source"]["sha256"]:
            raise SnapshotError(
                f"{source}: sha256 {digest[:16]}... is not the source of {snapshot} "
                f"({manifest['source']['sha256'][:16]}...)"
            )
    return manifest


class SnapshotStore(ByGet, Mapping[str, str]):
    """The pairs of a snapshot, read through the page cache: nothing is loaded.

    Each process opens its own LMDB environment on its first lookup (never one across
    fork) and keeps one read transaction (the file never changes).
    """

    @classmethod
    def from_file(cls, path, *, strict: bool = True, progress=None) -> SnapshotStore:
        """Open a snapshot (strict and progress are for text files: nothing is loaded)."""
        return open_snapshot(path)

    def __init__(self, directory: Path, manifest: dict, named: Path | None = None):
        self.directory = directory
        self.manifest = manifest
        self.named = named or directory
        self.opened_at = time.time()
        self.open_seconds = 0.0
        self._data = directory / DATA_FILE

    def _reader(self) -> lmdb.Transaction:
        return _reader(self._data, self.manifest["data_bytes"])

    def close(self) -> None:
        """Close this process's environment on the snapshot, if open."""
        release(self._data)

    def get(self, key: str, default: str | None = None) -> str | None:
        canonical = canonical_key(key)
        if canonical is None:
            return default
        value = self._reader().get(key_bytes(canonical))
        return default if value is None else value.decode("utf-8")

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The value of each key, None where missing: one C call for all of them, in key
        order (keys checked with numpy); keys that are not all UUIDs one by one."""
        nibbles = key_nibbles(keys)
        if nibbles is None:
            return [self.get(key) for key in keys]
        raw = key_bytes_many(nibbles)
        wanted = [raw[i : i + 16] for i in range(0, len(raw), 16)]
        found = dict(self._reader().cursor().getmulti(sorted(set(wanted))))
        return [None if (v := found.get(k)) is None else v.decode("utf-8") for k in wanted]

    def __iter__(self) -> Iterator[str]:
        cursor = self._reader().cursor()
        for raw in cursor.iternext(keys=True, values=False):
            yield key_text(int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big"))

    def __len__(self) -> int:
        return self.manifest["pairs"]

    @property
    def version(self) -> str:
        """The source file's content (as for the text stores: the same data, the same
        version, whichever store serves it)."""
        return self.manifest["source"]["sha256"][:16]

    def example_key(self) -> str | None:
        return self.manifest["example_key"]

    def owns(self, key: str) -> bool:
        """Is key (canonical) in this snapshot's range? (Always, unless it is a shard.)"""
        shard = self.manifest.get("shard")
        return shard is None or key[0] in shard["digits"]

    def warnings(self) -> list[str]:
        return []

    def describe(self) -> dict:
        m = self.manifest
        described = {
            "store": kind_of(self),
            "pairs": m["pairs"],
            "version": self.version,
            "path": str(self.named.absolute()),
            "snapshot": str(self.directory.absolute()),
            "bytes": m["data_bytes"],
            "sha256": m["source"]["sha256"],
            "modified": m["source"]["modified"],
            "loaded_at": _iso(self.opened_at),
            "built_at": m["built_at"],
            "source": m["source"]["name"],
            "skipped_lines": m["skipped_lines"],
            "format_version": m["format_version"],
        }
        number = VERSION_DIR.match(self.directory.name)
        if number:
            described["snapshot_version"] = int(number.group(1))
        if m.get("shard"):
            described["shard"], described["shard_map"] = m["shard"], m["shard_map"]
        return described

    def summary(self) -> str:
        """The load log line."""
        d = self.describe()
        where = f"version-{d['snapshot_version']} of " if "snapshot_version" in d else ""
        return (
            f"opened snapshot {where}{self.named} ({d['pairs']:,} pairs, "
            f"{d['bytes'] / 1e6:,.1f} MB, built {d['built_at']} from {d['source']}) in "
            f"{self.open_seconds * 1000:.2f} ms: version {d['version']}, sha256 {d['sha256']}"
        )

    def __repr__(self) -> str:
        return f"<SnapshotStore {self.directory} {len(self):,} pairs>"


# --- Versions: publish and roll back ------------------------------------------------------


def versions(root: str | os.PathLike[str]) -> list[int]:
    """The version numbers under a snapshot root, in order."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = (VERSION_DIR.match(entry.name) for entry in root.iterdir() if entry.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def current_version(root: str | os.PathLike[str]) -> int | None:
    """The version `current` points at, or None."""
    link = Path(root) / CURRENT
    if not link.is_symlink():
        return None
    match = VERSION_DIR.match(Path(os.readlink(link)).name)
    return int(match.group(1)) if match else None


def _point_current(root: Path, version: int) -> None:
    """Repoint ROOT/current at version-N atomically (a new link renamed over the old)."""
    tmp = root / f".{CURRENT}.{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(f"version-{version}", tmp)  # relative: the root can be moved or mounted
    os.replace(tmp, root / CURRENT)
    _fsync_dir(root)


def publish(
    data_file: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    keep: int = 3,
    strict: bool = True,
    progress: Progress | None = None,
) -> tuple[int, dict]:
    """Build data_file as the next version under root, check it (every byte), then make
    it current; keep the newest `keep` versions (the current one always). A version that
    fails its build or its checks is removed and never made current."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    number = max(versions(root), default=0) + 1
    target = root / f"version-{number}"
    manifest = build(data_file, target, strict=strict, progress=progress)
    try:
        verify(target)
    except SnapshotError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    _point_current(root, number)
    prune(root, keep)
    return number, manifest


def rollback(root: str | os.PathLike[str], to: int | None = None) -> int:
    """Point `current` at version `to`, or at the newest version before the current one
    that passes its checks. Returns the version now current."""
    root = Path(root)
    now = current_version(root)
    if now is None:
        raise SnapshotError(f"{root}: no {CURRENT} link: nothing published there")
    candidates = [to] if to is not None else [v for v in reversed(versions(root)) if v < now]
    for version in candidates:
        try:
            verify(root / f"version-{version}")
        except SnapshotError as e:
            if to is not None:
                raise SnapshotError(f"{root}: cannot roll back to version {version}: {e}") from None
            continue
        _point_current(root, version)
        return version
    raise SnapshotError(f"{root}: no good version before version {now} to roll back to")


def prune(root: Path, keep: int) -> list[int]:
    """Remove all but the newest `keep` versions, counting the current one, which stays."""
    now = current_version(root)
    others = [v for v in versions(root) if v != now]
    old = others[: max(0, len(others) - (keep - 1))]
    for version in old:
        shutil.rmtree(root / f"version-{version}", ignore_errors=True)
    return old
