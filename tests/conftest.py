"""Shared fixtures: data files, the app and its test client, and a real server."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from kv_app.app import create_app
from kv_app.stores import STORES
from kv_app.stores.build import build as build_snapshot

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DATA = ROOT.parent / "shared" / "data" / "example.data"
KV_APP = str(Path(sys.executable).with_name("kv-app"))


def _load_script(name: str):
    """A module of scripts/ (not a package): the data generator, the benchmark helpers."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_data = _load_script("make_data")
bench = _load_script("bench")

# Values a batch job may really produce, each to come back byte for byte.
TRICKY = {
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a01": "plain words",
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a02": "",
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a03": "  leading and trailing spaces  ",
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a04": "tab\tinside\tvalue",
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a05": "unicode: naïve café ☃ 𝄞 中文",
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a06": '{"json": ["as", "a", "value"], "q": "\\""}',
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a07": "<script>alert(1)</script> & ' \"",
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a08": "carriage\rreturn inside",
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a09": "x" * 5000,
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a0a": "last line without a newline",
}


def write_tricky(path: Path) -> dict[str, str]:
    """Write TRICKY (one key upper-case, no final newline); return what must come back."""
    lines = [f"{k} {v}" for k, v in TRICKY.items()]
    lines[0] = lines[0].upper()[:36] + lines[0][36:]
    path.write_bytes("\n".join(lines).encode("utf-8"))
    return dict(TRICKY)


@pytest.fixture
def tricky_file(tmp_path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "tricky.data"
    return path, write_tricky(path)


@pytest.fixture(scope="session")
def data_file(tmp_path_factory) -> Path:
    """A generated file of 2,000 pairs."""
    path = tmp_path_factory.mktemp("data") / "gen.data"
    make_data.write(2000, str(path), seed=7)
    return path


@pytest.fixture(scope="session")
def data(data_file) -> dict[str, str]:
    return dict(make_data.pairs(2000, seed=7))


@pytest.fixture(scope="session", params=sorted(STORES))
def store_kind(request) -> str:
    """Every test that uses it runs against both stores."""
    return request.param


@pytest.fixture(scope="session", params=[k for k, kind in STORES.items() if kind.loads_text])
def text_store_kind(request) -> str:
    """The kinds of store that load a text file themselves."""
    return request.param


@pytest.fixture(scope="session")
def servable(tmp_path_factory):
    """servable(text_file, kind): what a store of kind serves for that file: the file
    itself, or a snapshot built from it (once per session)."""
    built: dict[Path, Path] = {}
    where = tmp_path_factory.mktemp("snapshots")

    def servable(path: Path, kind: str) -> Path:
        if STORES[kind].loads_text:
            return Path(path)
        path = Path(path)
        if path not in built:
            built[path] = where / f"{len(built)}-{path.name}.snapshot"
            build_snapshot(path, built[path])
        return built[path]

    return servable


@pytest.fixture(scope="session")
def app(data_file, store_kind, servable):
    return create_app({"DATA_PATH": str(servable(data_file, store_kind)), "STORE": store_kind})


@pytest.fixture
def client(app):
    return app.test_client()


def wait_for(condition, timeout: float = 30.0) -> None:
    """Return once condition() is true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int | str) -> tuple[str, int, int] | None:
    """(state, parent PID, process group) of a process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
    return state, int(ppid), int(pgrp)


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def _running(group: int | None = None, under: int | None = None) -> list[int]:
    """Live processes (zombies count as gone) of a process group, or descending from a PID."""
    stats = {int(p): _stat(p) for p in os.listdir("/proc") if p.isdigit()}
    stats = {p: s for p, s in stats.items() if s is not None and s[0] != "Z"}
    if group is not None:
        return [p for p, s in stats.items() if s[2] == group]
    found, parents = [], {under}
    while True:
        more = [p for p, s in stats.items() if s[1] in parents and p not in found]
        if not more:
            return found
        found += more
        parents = set(more)


def _kill_group(group: int) -> None:
    """SIGKILL what is left of a process group: the workers of a gunicorn master that died
    (they are orphans in the master's group, and would serve on until they notice)."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while left := _running(group=group):
        if time.monotonic() > deadline:
            raise RuntimeError(f"SIGKILL did not end {[_command(p) for p in left]}")
        time.sleep(0.05)


def run_in_group(
    command: list[str], timeout: float, stderr=subprocess.PIPE
) -> subprocess.CompletedProcess:
    """Run command to its end in a process group of its own, with every process it
    started (a JVM, Chromium's renderers, servers) killed however it ends."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=stderr, text=True, process_group=0
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        proc.wait()
        _kill_group(proc.pid)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


_CLOSE = {"Connection": "close"}

# Every server started and not yet stopped: checked at the end of the session.
_STARTED: list[Server] = []


class Server:
    """A real `kv-app serve` process on a free port of 127.0.0.1, in a process group of
    its own: stop() ends the master and every process it left."""

    def __init__(
        self,
        data_path: Path | str | None,
        *args: str,
        env: dict[str, str] | None = None,
        serve: tuple[str, ...] = (KV_APP, "serve"),
        cwd: Path | None = None,
    ):
        """serve: the command that takes [DATA_FILE] and kv-app serve's flags."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            *serve,
            *([str(data_path)] if data_path is not None else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
        full_env.update(env or {})
        # Output goes to a file, not a pipe: a full pipe would block a chatty server.
        self.output = tempfile.TemporaryFile("w+", encoding="utf-8")
        # Its own process group (not pytest's): stop() can find and kill every process of
        # the server, even workers whose master was killed.
        self.proc = subprocess.Popen(
            self.command,
            env=full_env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            process_group=0,
        )
        _STARTED.append(self)

    def log(self) -> str:
        """Everything the server printed so far (stdout and stderr); after stop(), all it
        printed."""
        if self.output.closed:
            return self._log
        self.output.seek(0)
        return self.output.read()

    def wait_ready(self, timeout: float = 60.0) -> Server:
        """Return once /readyz answers 200. Any error (refused, reset, a slow answer, a
        503) is retried until the deadline: on a busy machine start-up takes a while.
        If the server exits, the deadline passes or anything else goes wrong (even
        KeyboardInterrupt), the server is stopped and the error raised."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()}")
                try:
                    # Connection: close, or an idle keep-alive connection would hold a
                    # worker's graceful stop (a reload's, the test's) for keepalive (5 s).
                    r = requests.get(self.url + "/readyz", timeout=5, headers=_CLOSE)
                    if r.status_code == 200:
                        return self
                    last = f"/readyz answered {r.status_code}"
                except requests.RequestException as e:
                    last = repr(e)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready in {timeout} s ({last}): {self.log()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> int:
        """SIGTERM, wait (SIGKILL if it takes a minute), then kill whatever is left of the
        process group; return the master's exit status."""
        # Responses a test held may sit in reference cycles with their open keep-alive
        # connections; a gevent worker stopping gracefully waits up to keepalive (5 s) for
        # an idle connection. Collecting them first closes those connections.
        gc.collect()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _kill_group(self.proc.pid)
        if not self.output.closed:
            self._log = self.log()
            self.output.close()
        if self in _STARTED:
            _STARTED.remove(self)
        return self.proc.returncode


@pytest.fixture
def start_server():
    """Start servers with start_server(path, *flags); all are stopped after the test,
    however it ends (a failed start included)."""
    servers: list[Server] = []

    def start(data_path, *args, wait=True, **kwargs) -> Server:
        server = Server(data_path, *args, **kwargs)
        servers.append(server)
        return server.wait_ready() if wait else server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def server(data_file, store_kind, servable):
    """One real server over data_file for a whole test module."""
    s = Server(servable(data_file, store_kind), "--store", store_kind)
    try:
        yield s.wait_ready()
    finally:
        s.stop()


@pytest.fixture(scope="session", autouse=True)
def _no_process_left():
    """Fail the run if a process a test started outlives the session: a server not
    stopped (or the workers of its killed master), any other subprocess, or any process
    still descending from pytest (nginx workers, a cluster replica ...). Each is killed,
    and named in the error."""
    yield
    left = []
    for server in list(_STARTED):
        running = _running(group=server.proc.pid)
        if running:
            left.append(f"{' '.join(server.command)}: PIDs {running}")
        try:
            server.stop()
        except Exception as e:  # noqa: BLE001 (reported with the rest)
            left.append(f"{' '.join(server.command)}: stop failed: {e!r}")
    # Any other process still descending from pytest, listed before any is killed (an
    # orphan would leave the tree). Children started with subprocess are killed and
    # reaped, which also spares the ResourceWarning their Popen would give at exit.
    strays = _running(under=os.getpid())
    popens = [o for o in gc.get_objects() if isinstance(o, subprocess.Popen)]
    for proc in popens:
        if proc.poll() is None:
            left.append(f"{proc.pid}: {proc.args}")
            proc.kill()
            proc.wait()
    for pid in set(strays) - {proc.pid for proc in popens}:
        left.append(f"{pid}: {_command(pid)}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not set(strays) & set(_running(under=os.getpid())))
    if left:
        pytest.fail("processes left running after the tests (now killed):\n" + "\n".join(left))


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    """SIGTERM (a CI timeout, `kill`) ends the run as Ctrl-C does: fixtures are torn down
    and the servers they started are stopped (they are in process groups of their own, so
    a signal to pytest's group no longer reaches them)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def tricky_file_once(tmp_path_factory, servable) -> dict:
    """A store of each kind over TRICKY, for property tests (one file per session)."""
    path = tmp_path_factory.mktemp("tricky") / "tricky.data"
    write_tricky(path)
    return {name: kind.open(servable(path, name)) for name, kind in STORES.items()}
