"""Process titles, `kv-app reload` and a SIGHUP sent to a worker, with the real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import KV_APP, free_port, wait_for
from kv_app import processes


def _children(pid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and processes.parent(int(p)) == pid]


def _reload(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    return subprocess.run(
        [KV_APP, "reload", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def served(start_server, data_file, tmp_path):
    pid_file = tmp_path / "kv.pid"
    server = start_server(data_file, "--pid-file", str(pid_file))
    server.pid_file = pid_file
    return server


def _reloads(server) -> int:
    return server.log().count("reload done: serving version")


def test_titles_say_master_and_worker_with_port_and_data(served, data_file):
    master = served.proc.pid  # kv-app serve execs the server: the same process
    assert processes.title(master) == f"kv-app master 127.0.0.1:{served.port} {data_file}"
    worker_title = f"kv-app worker 127.0.0.1:{served.port}"

    def two_titled_workers() -> bool:
        # A worker takes its title just after the fork: until then it shows the master's.
        titles = [processes.title(pid) for pid in _children(master)]
        return titles == [worker_title] * 2

    wait_for(two_titled_workers, timeout=60)
    assert f"API docs: http://127.0.0.1:{served.port}/docs (Swagger UI)" in served.log()


def test_reload_by_port_and_by_pid_file(served):
    master = served.proc.pid
    assert processes.master_on_port(served.port).pid == master
    r = _reload("--port", str(served.port))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"reloading the kv-app master, pid {master} (port {served.port})\n"
    wait_for(lambda: _reloads(served) == 1)
    r = _reload("--pid-file", str(served.pid_file))
    assert r.returncode == 0
    assert r.stdout == f"reloading the kv-app master, pid {master} (pid file {served.pid_file})\n"
    wait_for(lambda: _reloads(served) == 2)
    assert served.proc.poll() is None


def test_reload_refuses_clearly_when_no_master_is_found(tmp_path):
    port = free_port()
    r = _reload("--port", str(port))
    assert r.returncode == 1
    assert r.stderr == f"Error: no kv-app master to reload: nothing is listening on port {port}\n"
    with socket.socket() as sock:  # a port held by another program (this test)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        r = _reload("--port", str(port))
    assert r.returncode == 1
    assert r.stderr.startswith(
        f"Error: no kv-app master to reload: port {port} is not a kv-app server's: "
        f"it is held by pid {os.getpid()} ("
    )
    stale = tmp_path / "stale.pid"
    stale.write_text("4194303\n")  # above any PID this machine has given
    if Path("/proc/4194303").exists():
        pytest.skip("PID 4194303 exists here")
    r = _reload("--pid-file", str(stale))
    assert r.returncode == 1 and r.stderr == (
        f"Error: no kv-app master to reload: no process 4194303 (the pid file {stale} is "
        "stale: is the server running?)\n"
    )
    r = _reload("--pid-file", str(tmp_path / "none.pid"))
    assert r.returncode == 1 and "cannot read the pid file" in r.stderr
    r = _reload("--port", "1", "--pid-file", str(stale))
    assert r.returncode == 2 and "give --port or --pid-file, not both" in r.stderr


def test_a_sighup_sent_to_a_worker_is_logged_and_changes_nothing(served):
    master = served.proc.pid
    worker = _children(master)[0]
    line = (
        f"worker {worker} got SIGHUP and ignored it: to reload, send SIGHUP to the master, "
        f"pid {master} (kv-app reload --port {served.port})"
    )

    def hup_said() -> bool:
        # A worker just forked, before post_fork, still has the master's handler, which
        # swallows a SIGHUP: send it again until the worker says it ignored one.
        os.kill(worker, signal.SIGHUP)
        return line in served.log()

    wait_for(hup_said)
    # Not killed (SIGHUP's default action, before), nothing reloaded.
    assert processes.parent(worker) == master and worker in _children(master)
    assert "Hang up" not in served.log() and _reloads(served) == 0
    r = _reload("--port", str(served.port))
    assert r.returncode == 0 and f"pid {master} " in r.stdout
    wait_for(lambda: _reloads(served) == 1)
