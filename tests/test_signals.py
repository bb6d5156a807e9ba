"""Signals and memory limits never take the server down (issue 14, items 5-7): stop
signals go before queued reloads, a SIGHUP during the first load is honoured, a load
that cannot fit under the memory limit is refused with one line, workers are the OOM
killer's first choice."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import requests
from test_faults import children
from test_faults import workers as both_workers

from conftest import KV_APP, _load_script, make_data, wait_for
from kv_app import memory

memlimit = _load_script("memlimit")


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """250,000 pairs: a dict load of a few tenths of a second, about 90 MB."""
    path = tmp_path_factory.mktemp("big") / "big.data"
    make_data.write(250_000, str(path), seed=11)
    return path


def caught(pid: int, sig: int) -> bool:
    """Has process pid installed a handler for sig (SigCgt in /proc)?"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


def test_sigterm_is_handled_before_queued_reloads(start_server, big_file):
    """Before: gunicorn handled queued signals in order, so a SIGTERM behind SIGHUPs waited
    for every reload (20 SIGHUPs then a SIGTERM: 67 s for 1M pairs). The master is stopped
    while they arrive, so both are queued when it looks: the stop alone is handled."""
    server = start_server(big_file)
    server.proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(20):
            server.proc.send_signal(signal.SIGHUP)
        server.proc.send_signal(signal.SIGTERM)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert server.proc.wait(timeout=120) == 0
    log = server.log()
    assert "Handling signal: term" in log
    assert "Hang up: " not in log, log


def test_a_burst_of_sighups_is_one_reload(start_server, big_file):
    server = start_server(big_file)
    pids = children(server.proc.pid)
    for _ in range(10):
        server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload done" in server.log() and not children(server.proc.pid) & pids)
    # The master may have seen the first before the rest were sent: one or two reloads.
    time.sleep(1)  # room for any further (wrong) reload to start and show in the log
    assert 1 <= server.log().count("Hang up: ") <= 2
    assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 200


def test_a_sighup_during_the_first_load_is_honoured_once_up(start_server, big_file):
    """Before: the default action of SIGHUP killed the loading server, with an empty log."""
    for _ in range(3):  # the server is caught still loading (stopped there) nearly always
        server = start_server(big_file, wait=False)
        wait_for(lambda s=server: s.proc.poll() is not None or caught(s.proc.pid, signal.SIGHUP))
        server.proc.send_signal(signal.SIGSTOP)
        if "Starting gunicorn" not in server.log():  # logged as the load ends
            break
        server.proc.send_signal(signal.SIGCONT)
        server.stop()
    else:
        pytest.fail("never caught the server while it was loading")
    server.proc.send_signal(signal.SIGHUP)
    server.proc.send_signal(signal.SIGCONT)
    server.wait_ready()
    wait_for(lambda: "reload done" in server.log())
    assert "SIGHUP arrived while the data was loading: reloading now" in server.log()


def test_workers_are_the_oom_killers_first_choice(start_server, data_file):
    server = start_server(data_file)
    wait_for(lambda: len(children(server.proc.pid)) == 2)
    assert Path(f"/proc/{server.proc.pid}/oom_score_adj").read_text().strip() == "0"
    for worker in children(server.proc.pid):
        assert Path(f"/proc/{worker}/oom_score_adj").read_text().strip() == "1000"


def crash_workers(server, times: int, workers: int) -> None:
    """SIGKILL a worker of server `times` times, each once its replacement is there."""
    for _ in range(times):
        wait_for(lambda: len(children(server.proc.pid)) == workers)
        worker = min(children(server.proc.pid))
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda w=worker: w not in children(server.proc.pid))


def test_workers_that_keep_dying_are_replaced_after_a_growing_wait(start_server, data_file):
    """Before: a worker that died (a snapshot truncated under it: SIGBUS) was replaced at
    once, in a loop (390 worker deaths in 40 s)."""
    server = start_server(data_file)
    crash_workers(server, 3, workers=2)
    wait_for(lambda: "waits 1.0 s before serving: 3 workers died" in server.log())
    assert "waits 0.5 s before serving: 2 workers died" in server.log()
    # Workers the master retires (a reload) are not crashes.
    log_before = server.log()
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload done" in server.log())

    def counted() -> list[str]:  # what the new workers said (two workers: true before too)
        return re.findall(r"(\d+) workers died", server.log()[len(log_before) :])

    wait_for(lambda: len(counted()) == 2)
    assert set(counted()) == {"3"}  # still the three crashes, not the two retired
    assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 200


def test_a_quick_stop_does_not_wait_for_a_worker_in_its_crash_backoff(start_server, data_file):
    """Before: a worker waiting out its backoff ran the master's handlers, which swallowed
    SIGQUIT: a quick stop (SIGINT) waited graceful_timeout and then SIGKILLed it."""
    server = start_server(data_file, "--workers", "1")
    crash_workers(server, 5, workers=1)
    wait_for(lambda: "waits 4.0 s before serving" in server.log())
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=60) == 0
    # The five SIGKILLs of this test, and none from the master's stop.
    assert server.log().count("was sent SIGKILL") == 5, server.log()


needs_cgroup = pytest.mark.skipif(
    not memlimit.available(), reason="no writable cgroup v1 memory controller"
)


def in_cgroup(cgroup) -> tuple[str, ...]:
    """A serve command that first moves itself into cgroup."""
    script = f'echo $$ > {cgroup.path}/cgroup.procs && exec {KV_APP} serve "$@"'
    return ("sh", "-c", script, "sh")


@needs_cgroup
def test_a_start_over_the_memory_limit_is_refused_with_one_line(start_server, big_file):
    """Before: exit 137 (the OOM killer) and an empty log."""
    wanted, _ = memory.need(260, 1.25, big_file)
    limit = (96 << 20) + wanted // 3  # the bare server (about 60 MB) fits; the data does not
    with memlimit.MemoryLimit(limit) as cgroup:
        server = start_server(big_file, serve=in_cgroup(cgroup), wait=False)
        assert server.proc.wait(timeout=120) == 1
        lines = server.log().strip().splitlines()
        assert lines[-1].startswith(f"kv-app: {big_file}: a dict store of 250,000 lines needs")
        assert f"the memory limit is {limit / 1e6:,.0f} MB" in lines[-1]
        assert cgroup.stats()["oom_kill"] == 0


@needs_cgroup
def test_a_reload_over_the_memory_limit_is_refused_and_the_old_data_served(
    start_server, big_file, tmp_path
):
    """Before: the master was OOM-killed by the reload, with nothing logged. Then: the
    master lived, but gunicorn forked a second set of workers after the refused reload,
    and under the limit the kernel killed them (oom_kill 2), failing their requests."""
    data = tmp_path / "served.data"
    data.write_bytes(big_file.read_bytes())
    key = next(make_data.pairs(1, seed=11))[0]
    with memlimit.MemoryLimit(2 << 30) as cgroup:
        server = start_server(data, serve=in_cgroup(cgroup))
        value = requests.get(f"{server.url}/items/{key}", timeout=30).json()["value"]
        workers = both_workers(server)  # the first answers alone while the second boots
        time.sleep(1)  # and both have settled in memory
        # Room for what is loaded now, not for a second copy beside it.
        usage = int((cgroup.path / "memory.usage_in_bytes").read_text())
        wanted, _ = memory.need(260, 1.25, data)
        (cgroup.path / "memory.limit_in_bytes").write_text(str(usage + wanted * 3 // 4))
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in server.log())
        assert "the memory limit is" in server.log()
        time.sleep(1)  # gunicorn used to fork the second set of workers here
        assert requests.get(f"{server.url}/items/{key}", timeout=30).json()["value"] == value
        assert children(server.proc.pid) == workers  # the same workers serve on
        assert cgroup.stats()["oom_kill"] == 0
        assert server.proc.poll() is None
        server.stop()
