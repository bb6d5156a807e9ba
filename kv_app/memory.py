"""Room for a load: the memory limit this process lives under (a cgroup, v1 or v2, as
Docker and Kubernetes set it) against what loading a data file into a store will take.

A load that cannot fit is refused before it starts, with one line naming both figures:
the kernel's OOM killer would otherwise end the server (at start: exit 137 and an empty
log; at a reload: the master, and with it every worker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kv_app.loader import LoadError

CGROUP_FS = Path("/sys/fs/cgroup")
# Left free beyond the estimate: the loader's own transient buffers, the workers' growth.
MARGIN = 32 << 20
# A limit at or above this is "no limit" (cgroup v1 writes 2**63 rounded to a page).
_UNLIMITED = 1 << 60
_COUNT_CHUNK = 16 << 20


@dataclass(frozen=True)
class Limit:
    """A memory limit and what is charged against it now (less reclaimable cache)."""

    where: str  # the limit's file, for the message
    limit: int
    used: int

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)


def _stat(path: Path) -> dict[str, int]:
    values = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[name] = int(value)
    return values


def _own(controller: str | None) -> str | None:
    """This process's cgroup path for a v1 controller, or the v2 path (controller None)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (
            controller is not None and controller in controllers.split(",")
        ):
            return path
    return None


def _candidates(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory and its parents up to the mount (inside a container the
    path seen in /proc/self/cgroup may not exist under the mount: then the mount)."""
    directory = mount / path.lstrip("/")
    found = []
    while directory != mount.parent and str(directory).startswith(str(mount)):
        if directory.is_dir():
            found.append(directory)
        directory = directory.parent
    return found or [mount]


def cgroup_limit() -> Limit | None:
    """The tightest memory limit on this process, or None when there is none (or no
    cgroup file system to read)."""
    try:
        return _v2() or _v1()
    except (OSError, ValueError):
        return None


def _v1() -> Limit | None:
    path = _own("memory")
    mount = CGROUP_FS / "memory"
    if path is None or not mount.is_dir():
        return None
    directory = _candidates(mount, path)[0]
    stat = _stat(directory / "memory.stat")
    # hierarchical_memory_limit: the lowest limit of this group and its parents.
    limit = stat.get("hierarchical_memory_limit") or int(
        (directory / "memory.limit_in_bytes").read_text()
    )
    if limit >= _UNLIMITED:
        return None
    usage = int((directory / "memory.usage_in_bytes").read_text())
    used = usage - stat.get("total_inactive_file", stat.get("inactive_file", 0))
    return Limit(str(directory / "memory.limit_in_bytes"), limit, max(0, used))


def _v2() -> Limit | None:
    path = _own(None)
    if path is None or not (CGROUP_FS / "cgroup.controllers").exists():
        return None
    tightest = None
    for directory in _candidates(CGROUP_FS, path):
        raw = (
            (directory / "memory.max").read_text().strip()
            if (directory / "memory.max").exists()
            else "max"
        )
        if raw == "max":
            continue
        limit = int(raw)
        if tightest is None or limit - _used_v2(directory) < tightest.free:
            tightest = Limit(str(directory / "memory.max"), limit, _used_v2(directory))
    return tightest


def _used_v2(directory: Path) -> int:
    current = int((directory / "memory.current").read_text())
    return max(0, current - _stat(directory / "memory.stat").get("inactive_file", 0))


def count_lines(path: str | os.PathLike[str]) -> int:
    """Lines in a file (a last line without its newline counts), read in chunks."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_COUNT_CHUNK):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def need(per_pair: int, per_byte: float, path: str | os.PathLike[str]) -> tuple[int, int]:
    """(bytes, pairs): the memory a store that takes per_pair bytes a pair plus per_byte
    bytes a byte of the file needs at its peak to load path."""
    pairs = count_lines(path)
    return int(per_pair * pairs + per_byte * os.path.getsize(path)), pairs


def check_room(kind: str, per_pair: int, per_byte: float, path: str) -> None:
    """Refuse (LoadError, one line) a load that cannot fit under this process's memory
    limit beside what it already holds (at a reload: the data served now)."""
    if not per_pair and not per_byte:
        return
    limit = cgroup_limit()
    if limit is None:
        return
    try:
        wanted, pairs = need(per_pair, per_byte, path)
    except OSError:
        return  # the load itself names the file's problem
    if wanted + MARGIN > limit.free:
        raise LoadError(
            f"{path}: a {kind} store of {pairs:,} lines needs about {_mb(wanted)} MB, but "
            f"the memory limit is {_mb(limit.limit)} MB with {_mb(limit.used)} MB in use "
            f"({limit.where}): raise the limit, or serve a snapshot (kv-app build), which "
            "loads nothing"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f}"
