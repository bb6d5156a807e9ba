"""Snapshots: an immutable on-disk store, built offline from a text file and opened, not
loaded (LMDB through py-lmdb): the format, opening, checking and serving. Building one
is kv_app/stores/build.py; the versions of a snapshot root (publish, rollback) are
kv_app/stores/versions.py.

A snapshot is a directory holding:
- data.mdb: an LMDB file: key = the 16 bytes of the UUID, value = the UTF-8 bytes of
  the value, one entry per pair, written in key order;
- manifest.json: what it is and where it came from (see MANIFEST_FIELDS).

A snapshot root holds version-N snapshots and a symlink `current` to one of them;
publishing builds version-N+1 beside the others and then repoints `current` atomically.

Opening checks what can be checked without reading the data (manifest, format version,
file size, LMDB header, entry count); verify() reads every byte (sha256). An LMDB
environment is never used across fork: SnapshotStore opens one in each process that
looks a key up (a gunicorn worker when it starts); the gunicorn master only checks,
then closes.

A snapshot never changes once built (its files are written read-only). An open store
holds a lease on its data file (a shared flock on an open descriptor, which forked
workers inherit), so `kv-app publish` never prunes a version a live process serves; and
it records the file's identity (device, inode, size, mtime) when opened: a file changed
or replaced in place is refused (not ready, 503) and never served under the old version.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lmdb

from kv_app import __version__, keyspace
from kv_app.keys import canonical_key, key_bytes, key_text
from kv_app.loader import LoadError, iso_time
from kv_app.stores import ByGet, StoreUnavailable

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


class SnapshotError(LoadError):
    """A snapshot that cannot be built or served: str() is one line naming its path."""


class SnapshotChanged(SnapshotError, StoreUnavailable):
    """The data file of an open snapshot changed or was replaced: it is not served."""


# Every lookup checks that the data file it reads was not written to since it was opened
# (an fstat of the open file: about half a microsecond); every CHECK_EVERY seconds it
# also checks that the path still names that file (what a new worker would open).
CHECK_EVERY = 1.0


@dataclass(frozen=True)
class FileIdentity:
    """What a file was when it was opened: a snapshot's files never change after."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def change(self, now: os.stat_result) -> str | None:
        """How the file now differs from this identity (one phrase), or None."""
        if (now.st_dev, now.st_ino) != (self.dev, self.ino):
            return "replaced by another file"
        if now.st_size != self.size:
            return f"now {now.st_size:,} bytes, {self.size:,} when opened"
        if now.st_mtime_ns != self.mtime_ns:
            return f"modified at {iso_time(now.st_mtime_ns / 1e9)} after it was opened"
        return None


def lease(data: Path) -> int:
    """Open data (a snapshot's data file) and hold a shared lock on it: a version that any
    live process holds is never pruned (versions.prune takes an exclusive lock first).
    Forked processes inherit the descriptor, and the lock with it. Returns the fd."""
    try:
        fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SnapshotError(f"{data.parent}: {DATA_FILE} is missing") from None
    except OSError as e:
        raise SnapshotError(f"{data}: cannot read: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        # A prune may have locked, renamed and removed it between our open and our lock.
        st = os.fstat(fd)
        if (st.st_ino, st.st_dev) != _ino_dev(data):
            raise SnapshotError(f"{data.parent}: removed while it was being opened")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _ino_dev(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_dev


@contextmanager
def unless_in_use(snapshot: Path) -> Iterator[bool]:
    """Yields True while holding an exclusive lock on a snapshot's data files (its own, or
    each of its shards': no live process holds a lease on any, and none can take one
    until the block ends), or False when some process holds one. A snapshot without a
    data file yields True."""
    fds = []
    try:
        for data in [snapshot / DATA_FILE, *sorted(snapshot.glob(f"shard-*/{DATA_FILE}"))]:
            try:
                fds.append(os.open(data, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                continue
        yield all(lock_now(fd) for fd in fds)
    finally:
        for fd in fds:
            os.close(fd)  # releases the locks


def lock_now(fd: int) -> bool:
    """Take an exclusive flock on fd if no one holds a lock on it; False if one does."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return False
    return True


# --- Opening and serving -----------------------------------------------------------------


def resolve(path: str | os.PathLike[str]) -> Path:
    """The snapshot directory path names: itself, or what a root's `current` points at now
    (a version-N directory of that root, nothing else)."""
    path = Path(path)
    link = path / CURRENT
    if (link.is_symlink() or link.exists()) and not (path / MANIFEST).exists():
        return path / current_target(path)
    return path


def current_target(root: Path) -> str:
    """The version-N name ROOT/current points at; SnapshotError naming what is wrong."""
    link = root / CURRENT
    try:
        named = os.readlink(link)
    except FileNotFoundError:
        raise SnapshotError(f"{root}: no {CURRENT} link: nothing published there") from None
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise SnapshotError(f"{link}: not a symbolic link (kv-app publish makes it)") from None
        raise SnapshotError(f"{link}: cannot read: {e.strerror or e}") from None
    # A link anywhere else (another directory, a loop, a chain of links) is not one that
    # publish made: serving it could serve anything, and pruning could not see it.
    if not VERSION_DIR.match(named):
        raise SnapshotError(
            f"{link}: points at {named!r}, not at a version-N directory of {root} "
            "(kv-app publish and rollback write it; do not repoint it by hand)"
        )
    target = root / named
    if target.is_symlink() or not target.is_dir():
        what = "a link" if target.is_symlink() else "not there"
        raise SnapshotError(f"{link}: points at {named}, which is {what}")
    return named


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
# Each holds a read transaction per OS thread that reads it (LMDB: a transaction belongs
# to one thread). Greenlets share their thread's: gevent patches threading's idents, not
# the native one.
_ENVS: dict[tuple[int, str], tuple[lmdb.Environment, dict[int, lmdb.Transaction]]] = {}
_ENVS_LOCK = threading.Lock()


def _reader(data: Path, size: int) -> lmdb.Transaction:
    """This thread's read transaction on a snapshot's data file (opened on first use:
    an environment is never used across fork). It lives as long as the process or until
    release(): the file never changes, so one transaction sees all of it."""
    key = (os.getpid(), str(data))
    opened = _ENVS.get(key)
    thread = threading.get_native_id()
    if opened is not None:
        txn = opened[1].get(thread)
        if txn is not None:
            return txn
    with _ENVS_LOCK:
        if key not in _ENVS:
            # Read-only, no lock file (the file never changes; the reader table leaked
            # slots when workers were killed), no read-ahead (beyond RAM it made lookups
            # 100x slower).
            env = lmdb.open(
                str(data),
                subdir=False,
                readonly=True,
                lock=False,
                readahead=False,
                map_size=size,
                max_readers=1,
            )
            _ENVS[key] = (env, {})
        env, txns = _ENVS[key]
        txn = txns[thread] = env.begin(buffers=False)
        return txn


def release(data: Path) -> None:
    """Close this process's environment on data, if open."""
    with _ENVS_LOCK:
        opened = _ENVS.pop((os.getpid(), str(data)), None)
    if opened is not None:
        env, txns = opened
        for txn in txns.values():
            txn.abort()
        env.close()


def open_store(path, *, strict: bool = True, progress=None, max_value_bytes=None):
    """STORES["snapshot"]'s factory: open_snapshot (the text settings load nothing)."""
    return open_snapshot(path)


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
    try:
        snapshot = resolve(named)
    except PermissionError as e:
        raise SnapshotError(f"{named}: cannot read: {e.strerror}") from None
    manifest = read_manifest(snapshot)
    data = snapshot / DATA_FILE
    fd = lease(data)
    try:
        identity = FileIdentity.of(os.fstat(fd))
        _check(data, manifest, identity.size)
        store = SnapshotStore(snapshot, manifest, named, identity=identity, lease_fd=fd)
    except BaseException:
        os.close(fd)
        raise
    store.open_seconds = time.perf_counter() - started
    return store


def _check(data: Path, manifest: dict, size: int) -> None:
    """The checks that need no full read: size, LMDB header, entry count, first key."""
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


def verify(path: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> dict:
    """Read every byte: the data file against the manifest's sha256, and optionally a
    text file against the source sha256. Returns the manifest; SnapshotError otherwise."""
    store = open_snapshot(path)
    snapshot, manifest = store.directory, store.manifest
    try:
        with open(snapshot / DATA_FILE, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != manifest["data_sha256"]:
                raise SnapshotError(f"{snapshot / DATA_FILE}: sha256 differs from the manifest's")
    except OSError as e:
        raise SnapshotError(f"{snapshot / DATA_FILE}: cannot read: {e.strerror or e}") from None
    finally:
        store.close()
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

    Each process opens its own LMDB environment (open(); else on its first lookup; never
    one across fork) and keeps a read transaction per thread (the file never changes). Every
    lookup first checks that the data file was not written to since it was opened, and
    every CHECK_EVERY seconds that its path still names it: once either fails, every
    lookup raises SnapshotChanged (the API answers 503).
    """

    kind = "snapshot"

    def __init__(
        self,
        directory: Path,
        manifest: dict,
        named: Path | None = None,
        *,
        identity: FileIdentity | None = None,
        lease_fd: int | None = None,
    ):
        self.directory = directory
        self.manifest = manifest
        self.named = named or directory
        self.opened_at = time.time()
        self.open_seconds = 0.0
        self._data = directory / DATA_FILE
        self.identity = identity
        self._lease = lease_fd
        self._changed: str | None = None
        self._next_check = 0.0
        if lease_fd is not None:  # the lease ends with the store (or at close())
            self._finalizer = weakref.finalize(self, os.close, lease_fd)

    def _reader(self) -> lmdb.Transaction:
        if self._lease is not None and self._changed is None:
            now = os.fstat(self._lease)
            if (now.st_size, now.st_mtime_ns) != (self.identity.size, self.identity.mtime_ns):
                self._next_check = 0.0
        if self._changed is not None or time.monotonic() >= self._next_check:
            self._check_unchanged()
        try:
            return _reader(self._data, self.manifest["data_bytes"])
        except lmdb.Error as e:
            raise self._unreadable(e) from None

    def _unreadable(self, e: lmdb.Error) -> SnapshotChanged:
        """LMDB cannot open or read a file whose identity did not change (damaged in place
        with its size and time kept): it is never read again, as a changed one."""
        release(self._data)
        self._changed = f"{self._data}: cannot be read: {e}; publish a new version and reload"
        return SnapshotChanged(self._changed)

    def _check_unchanged(self) -> None:
        self._next_check = time.monotonic() + CHECK_EVERY
        problem = self.changed()
        if problem:
            release(self._data)  # never read the changed file again (a truncation: SIGBUS)
            raise SnapshotChanged(problem)

    def changed(self) -> str | None:
        """Why this snapshot can no longer be served (its data file changed or was
        replaced since it was opened), or None. Once changed, always changed."""
        if self._changed is None and self.identity is not None:
            try:
                by_path = os.stat(self._data)
                by_fd = os.fstat(self._lease) if self._lease is not None else by_path
            except OSError as e:
                change = f"cannot be read: {e.strerror or e}"
            else:
                change = self.identity.change(by_fd) or self.identity.change(by_path)
            if change:
                self._changed = (
                    f"{self._data}: {change}; a snapshot must never change: publish a new "
                    "version (kv-app publish) and reload"
                )
        return self._changed

    def open(self) -> None:
        """Open this process's environment now (a worker, as it starts), after checking
        the data file is the one the master opened; SnapshotChanged if not."""
        self._check_unchanged()
        self._reader()

    def problem(self) -> str | None:
        """Why lookups cannot be answered now (readiness), checked with one real lookup."""
        try:
            self._check_unchanged()
            example = self.manifest["example_key"]
            if example and self.get(example) is None:
                return f"{self._data}: the manifest's first key is not found"
        except (SnapshotError, lmdb.Error) as e:
            return str(e)
        return None

    def close(self) -> None:
        """Close this process's environment on the snapshot and its lease, if open."""
        release(self._data)
        if self._lease is not None:
            self._finalizer()
            self._lease = None

    def get(self, key: str, default: str | None = None) -> str | None:
        canonical = canonical_key(key)
        if canonical is None:
            return default
        txn = self._reader()
        try:
            value = txn.get(key_bytes(canonical))
        except lmdb.Error as e:
            raise self._unreadable(e) from None
        return default if value is None else value.decode("utf-8")

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The value of each key, None where missing (keys checked all at once); keys that
        are not all UUIDs one by one. One get each: faster than a cursor's getmulti of the
        sorted keys (1000 random keys of 1M: 1.0 ms against 1.35)."""
        raw = keyspace.keys_bytes(keys)
        if raw is None:
            return [self.get(key) for key in keys]
        get = self._reader().get
        try:
            values = [get(raw[i : i + 16]) for i in range(0, len(raw), 16)]
        except lmdb.Error as e:
            raise self._unreadable(e) from None
        if None in values:
            return [None if v is None else v.decode("utf-8") for v in values]
        return list(map(bytes.decode, values))  # UTF-8, the default

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
        return keyspace.owns(self.manifest.get("shard"), key)

    def warnings(self) -> list[str]:
        return []

    def describe(self) -> dict:
        m = self.manifest
        described = {
            "store": self.kind,
            "pairs": m["pairs"],
            "version": self.version,
            "path": str(self.named.absolute()),
            "snapshot": str(self.directory.absolute()),
            "bytes": m["data_bytes"],
            "sha256": m["source"]["sha256"],
            "modified": m["source"]["modified"],
            "loaded_at": iso_time(self.opened_at),
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
