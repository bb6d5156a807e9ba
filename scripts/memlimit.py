"""Run processes under a memory limit: a child of this process's cgroup v1 memory cgroup.

    with MemoryLimit(64 << 20) as limit:
        subprocess.Popen(cmd, preexec_fn=limit.join)
        ...
        limit.stats()   # {"limit", "max_usage", "failcnt", "oom_kill"}

Needs root and the cgroup v1 memory controller (/sys/fs/cgroup/memory); available()
says whether this machine has them. A page-cache page is charged to the cgroup that first
reads it: evict() the files first, or a limit proves nothing.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup/memory")
_NUMBERS = itertools.count()


def own_cgroup() -> Path | None:
    """This process's memory cgroup directory, or None."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                return ROOT / path.lstrip("/")
    except OSError:
        return None
    return None


def available() -> bool:
    here = own_cgroup()
    return here is not None and os.access(here, os.W_OK) and (here / "cgroup.procs").exists()


def evict(*paths: Path) -> None:
    """Drop the files' pages from the page cache (so the limited process reads them)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class MemoryLimit:
    """A child memory cgroup with limit_in_bytes set; on exit, the processes still in it
    are killed and it is removed."""

    def __init__(self, limit: int, name: str = "kv-app-limit"):
        self.limit = limit
        parent = own_cgroup()
        if parent is None:
            raise RuntimeError("no cgroup v1 memory controller here")
        # Unique per use: a group left by a process that had the same pid, or by an
        # earlier use in this process, must not be reused.
        self.path = parent / f"{name}-{os.getpid()}-{next(_NUMBERS)}-{time.monotonic_ns()}"

    def __enter__(self) -> MemoryLimit:
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(self.limit))
        return self

    def join(self) -> None:
        """Put the calling process in the cgroup (use as Popen's preexec_fn)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def stats(self) -> dict:
        oom = dict(
            line.split() for line in (self.path / "memory.oom_control").read_text().splitlines()
        )
        return {
            "limit": int((self.path / "memory.limit_in_bytes").read_text()),
            "max_usage": int((self.path / "memory.max_usage_in_bytes").read_text()),
            "failcnt": int((self.path / "memory.failcnt").read_text()),
            "oom_kill": int(oom.get("oom_kill", 0)),
        }

    def pids(self) -> list[int]:
        try:
            return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def __exit__(self, *exc) -> None:
        # A test that failed half-way leaves its server here: stop it, or the group
        # cannot be removed.
        deadline = time.monotonic() + 30
        while True:
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.path}: could not be removed: {pids} live on") from e
                time.sleep(0.05)
