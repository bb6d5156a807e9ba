"""The versions of a snapshot root: version-N snapshots and a `current` symlink to one of
them. publish builds the next version beside the others, checks it and repoints `current`
atomically; rollback points it back.

One lock per root (ROOT/.lock, an exclusive flock) is held around everything that
changes the root: choosing the next number, the build, its checks, the switch and the
prune (and a rollback). So two publishes never take one number, and `current` only
moves to a newer version, except by rollback. A version that a live server holds (see
snapshot.lease) is never pruned.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kv_app.stores.build import build, fsync_dir
from kv_app.stores.snapshot import (
    CURRENT,
    VERSION_DIR,
    SnapshotError,
    current_target,
    lock_now,
    unless_in_use,
    verify,
)

LOCK = ".lock"
# What a publish killed half-way leaves: build's temporary directories and runs, prune's
# renames.
_LEFTOVER = re.compile(r"^\.(version-\d+\..+|kv-app-build-.+)$")

Say = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@contextmanager
def locked(root: Path, say: Say = _quiet) -> Iterator[None]:
    """Hold ROOT's lock; say so in one line when another holder makes this one wait."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise SnapshotError(f"{root}: not a directory") from None
    except OSError as e:
        where = e.filename or root
        raise SnapshotError(f"{where}: cannot write: {e.strerror or e}") from None
    try:
        if not lock_now(fd):
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            say(f"{root}: waiting for another publish or rollback (pid {holder}) to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_leftovers(root: Path) -> list[str]:
    """Remove what publishes killed half-way left in root (under its lock)."""
    removed = []
    for entry in root.iterdir():
        if _LEFTOVER.match(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def versions(root: str | os.PathLike[str]) -> list[int]:
    """The version numbers under a snapshot root, in order."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = (VERSION_DIR.match(entry.name) for entry in root.iterdir() if entry.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def current_version(root: str | os.PathLike[str]) -> int | None:
    """The version `current` points at, or None when there is no `current` link;
    SnapshotError when there is one that is not a link to a version-N of root."""
    link = Path(root) / CURRENT
    if not link.is_symlink() and not link.exists():
        return None
    return int(VERSION_DIR.match(current_target(Path(root))).group(1))


def point_current(root: Path, version: int) -> None:
    """Repoint ROOT/current at version-N atomically (a new link renamed over the old)."""
    tmp = root / f".{CURRENT}.{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(f"version-{version}", tmp)  # relative: the root can be moved or mounted
    os.replace(tmp, root / CURRENT)
    fsync_dir(root)


def publish(
    data_file: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    keep: int = 3,
    say: Say = _quiet,
    **build_options,
) -> tuple[int, dict]:
    """Build data_file as the next version under root, check it (every byte), then make
    it current; keep the newest `keep` versions (the current one always, and any that a
    live server holds). A version that fails its build or its checks is removed and never
    made current. All of it under root's lock; say() gets a line for each thing worth
    telling (a wait for the lock, leftovers removed, versions kept because in use).
    build_options: build's (strict, progress, max_value_bytes, tmp_dir, jobs)."""
    return publish_with(
        root, lambda target: build(data_file, target, say=say, **build_options), keep=keep, say=say
    )


def publish_with(
    root: str | os.PathLike[str],
    make: Callable[[Path], dict],
    *,
    keep: int = 3,
    say: Say = _quiet,
) -> tuple[int, dict]:
    """The locked publish step that publish and the Spark build share: make(target) writes
    the next version-N (a snapshot, or shard-0 ... of one) and returns its manifest; each
    snapshot there is then checked (every byte), `current` repointed and the versions
    pruned to `keep`. A version that fails is removed and never made current; a
    temporary directory named .version-N.* that make() leaves is removed by the next
    publish."""
    root = Path(root)
    with locked(root, say):
        current_version(root)  # a bad `current` is refused before a long build
        for name in remove_leftovers(root):
            say(f"{root}: removed {name}, left by a publish that did not finish")
        number = max(versions(root), default=0) + 1
        target = root / f"version-{number}"
        manifest = make(target)
        try:
            for snapshot in sorted(target.glob("shard-*")) or [target]:
                verify(snapshot)
        except SnapshotError:
            shutil.rmtree(target, ignore_errors=True)
            raise
        point_current(root, number)
        prune(root, keep, say)
    return number, manifest


def rollback(root: str | os.PathLike[str], to: int | None = None, say: Say = _quiet) -> int:
    """Point `current` at version `to`, or at the newest version before the current one
    that passes its checks (under root's lock). Returns the version now current."""
    root = Path(root)
    if not root.is_dir():
        raise SnapshotError(f"{root}: no such directory")
    with locked(root, say):
        return _rollback(root, to)


def _rollback(root: Path, to: int | None) -> int:
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
        point_current(root, version)
        return version
    raise SnapshotError(f"{root}: no good version before version {now} to roll back to")


def prune(root: Path, keep: int, say: Say = _quiet) -> list[int]:
    """Remove all but the newest `keep` versions, counting the current one, which stays,
    and keeping any that a live server holds (said). Returns the versions removed."""
    now = current_version(root)
    others = [v for v in versions(root) if v != now]
    removed = []
    for version in others[: max(0, len(others) - (keep - 1))]:
        directory = root / f"version-{version}"
        doomed = root / f".version-{version}.removing"
        with unless_in_use(directory) as free:
            if not free:
                say(f"{root}: kept version-{version}: a running server still serves it")
                continue
            # Renamed while locked: a server opening it now finds it gone, never half
            # removed (snapshot.lease checks the path after its lock).
            try:
                os.rename(directory, doomed)
            except OSError as e:
                say(f"{root}: could not remove version-{version}: {e.strerror or e}")
                continue
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(version)
    return removed
