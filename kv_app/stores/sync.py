"""`kv-app sync`: follow a prefix of object storage (kv_app/stores/remote.py): pull each
new current version into a local root and reload the server on this node; a bad version
is refused once, logged and counted, and the old one keeps serving."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kv_app.stores import versions
from kv_app.stores.remote import Refused, Remote, Say, _quiet, pull
from kv_app.stores.snapshot import SnapshotError


@dataclass
class SyncState:
    """What a sync has done, for its log and its metrics file."""

    pulls: int = 0
    refusals: int = 0
    errors: int = 0
    reloads: int = 0
    unmoved: int = 0  # reloads after which the server did not serve the new version
    local: int | None = None
    remote: int | None = None
    last_check: float = 0.0
    refused: dict[int, str] = field(default_factory=dict)  # version -> files.json ETag

    def metrics(self) -> str:
        """The Prometheus text format (a node_exporter textfile collector reads it)."""
        lines = []
        for metric, kind, value, help_ in (
            ("kv_sync_pulls_total", "counter", self.pulls, "Versions pulled and switched to."),
            (
                "kv_sync_refusals_total",
                "counter",
                self.refusals,
                "Versions refused (checksum, listing, missing files, bad snapshot).",
            ),
            (
                "kv_sync_errors_total",
                "counter",
                self.errors,
                "Checks or pulls that failed for a reason to retry (network, disk space).",
            ),
            ("kv_sync_reloads_total", "counter", self.reloads, "SIGHUPs sent to the server."),
            (
                "kv_sync_reloads_unmoved_total",
                "counter",
                self.unmoved,
                "Reloads after which the server (--port) did not serve the new version.",
            ),
            ("kv_sync_local_version", "gauge", self.local, "The version current points at."),
            ("kv_sync_remote_version", "gauge", self.remote, "The version the bucket names."),
            (
                "kv_sync_last_check_timestamp_seconds",
                "gauge",
                self.last_check,
                "When the bucket was last read.",
            ),
        ):
            lines += [f"# HELP {metric} {help_}", f"# TYPE {metric} {kind}"]
            lines.append(f"{metric} {-1 if value is None else value}")
        return "\n".join(lines) + "\n"


def write_metrics(path: str | os.PathLike[str], state: SyncState) -> None:
    """Replace the metrics file atomically (a reader never sees half of it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(state.metrics())
    os.replace(tmp, path)


def server_pid(pid_file: str | None = None, port: int | None = None) -> int | None:
    """The server's master (kv_app/processes.py, as `kv-app reload` finds it): by the PID
    in pid_file, or the kv-app master listening on port; None if there is none."""
    from kv_app import processes

    try:
        if pid_file:
            return processes.master_from_pid_file(pid_file).pid
        if port is not None:
            return processes.master_on_port(port).pid
    except processes.NotFound:
        return None
    return None


def sync_once(
    url: str,
    root: str | os.PathLike[str],
    state: SyncState,
    *,
    pid_file: str | None = None,
    port: int | None = None,
    keep: int = 3,
    max_bytes_per_second: int | None = None,
    say: Say = _quiet,
    client=None,
) -> None:
    """One look at the bucket: a new version is pulled and the server reloaded; a bad one
    refused and logged (the old one keeps serving) and not tried again until the bucket's
    listing of it changes."""
    state.last_check = time.time()
    try:
        state.local = versions.current_version(root)
    except SnapshotError:
        state.local = None
    try:
        remote = Remote(url, client)
        number = state.remote = remote.current()
        if number == state.local:
            return
        try:
            etag = remote.files(number)[1]
            missing = None
        except Refused as e:  # not there (yet): refused once, until it appears
            etag, missing = "missing", e
        if state.refused.get(number) == etag:
            return  # refused already, and said so then
        try:
            if missing:
                raise missing
            done = pull(
                url,
                root,
                version=number,
                keep=keep,
                max_bytes_per_second=max_bytes_per_second,
                say=say,
                client=remote.s3,
            )
        except Refused:
            state.refused[number] = etag
            raise
    except Refused as e:
        state.refusals += 1
        serving = f"version-{state.local}" if state.local is not None else "nothing"
        say(f"sync: refused: {e}; {serving} keeps serving")
        return
    except SnapshotError as e:
        state.errors += 1
        say(f"sync: {e}; will try again")
        return
    state.pulls += 1
    state.local = done.version
    fetched = f"{done.fetched / 1e6:,.1f} MB in {done.seconds:.1f} s"
    if done.resumed:
        fetched += f", {done.resumed / 1e6:,.1f} MB kept from an earlier pull"
    say(
        f"sync: {url}: pulled version-{done.version} ({fetched}); current -> version-{done.version}"
    )
    pid = server_pid(pid_file, port)
    if pid is None:
        if pid_file or port:
            say("sync: no server to reload (it opens current when it starts)")
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        state.errors += 1
        say(f"sync: cannot reload the server (pid {pid}): {e.strerror or e}")
        return
    state.reloads += 1
    say(f"sync: sent SIGHUP to the server (pid {pid})")
    if port is not None:
        why = _serves(port, done.version, RELOAD_WAIT)
        if why:
            state.unmoved += 1
            say(f"sync: the server on port {port} does not serve version-{done.version}: {why}")
        else:
            say(f"sync: the server on port {port} serves version-{done.version}")


RELOAD_WAIT = 60.0  # seconds a server may take to reload (its old workers drain first)


def _serves(port: int, version: int, wait: float) -> str | None:
    """None once the server on port answers /readyz from version-N; else why not."""
    import urllib.request

    deadline = time.monotonic() + wait
    why = "no answer"
    while True:
        try:
            url = f"http://127.0.0.1:{port}/readyz"
            with urllib.request.urlopen(url, timeout=5) as answer:
                served = json.load(answer).get("snapshot_version")
            if served == version:
                return None
            why = f"it serves version-{served}"
        except (OSError, ValueError) as e:
            why = str(e)
        if time.monotonic() > deadline:
            return f"{why} after {wait:.0f} s"
        time.sleep(0.2)


def sync(
    url: str,
    root: str | os.PathLike[str],
    *,
    interval: float,
    stop: threading.Event,
    metrics_file: str | None = None,
    say: Say = _quiet,
    **kwargs,
) -> SyncState:
    """sync_once every `interval` seconds until stop is set. Anything unexpected is one
    line and an error counted, and the next look comes: the old version keeps serving."""
    state = SyncState()
    while True:
        try:
            sync_once(url, root, state, say=say, **kwargs)
        except Exception as e:  # noqa: BLE001 (a daemon: said, counted, tried again)
            state.errors += 1
            say(f"sync: {type(e).__name__}: {e}; will try again")
        if metrics_file:
            try:
                write_metrics(metrics_file, state)
            except OSError as e:
                say(f"sync: cannot write {metrics_file}: {e.strerror or e}")
        if stop.wait(interval):
            return state
