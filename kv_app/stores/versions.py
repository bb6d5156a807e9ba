"""The versions of a snapshot root: version-N snapshots and a `current` symlink to one of
them. publish builds the next version beside the others, checks it and repoints `current`
atomically; rollback points it back."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kv_app.loader import Progress
from kv_app.stores.build import _fsync_dir, build
from kv_app.stores.snapshot import CURRENT, VERSION_DIR, SnapshotError, verify


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
