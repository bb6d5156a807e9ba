"""scripts/cluster.sh: replicas behind nginx with consistent hashing, on 127.0.0.1
(skipped where nginx is not installed)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import requests
from test_faults import finish, streams

from conftest import KV_APP, ROOT, bench, make_data, wait_for
from kv_app.client import KVClient
from kv_app.stores.build import build

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
REPLICAS = 3


def free_ports(n: int) -> int:
    """A port P such that P..P+n-1 are all free now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


def cluster(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "cluster.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=check,
    )


@pytest.fixture(scope="module")
def front(tmp_path_factory, data_file):
    port = free_ports(REPLICAS + 1)
    state = tmp_path_factory.mktemp("cluster")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    env.update(KV_CLUSTER_DIR=str(state), KV_APP=KV_APP)
    up = cluster("up", str(data_file), "--replicas", str(REPLICAS), "--port", str(port), env=env)
    assert f"front http://127.0.0.1:{port}" in up.stdout
    yield f"http://127.0.0.1:{port}", port, state, env
    down = cluster("down", "--port", str(port), env=env, check=False)
    assert "stopped" in down.stdout


def replica_of(url: str, key: str) -> str:
    return requests.get(f"{url}/items/{key}", timeout=5).headers["X-KV-Replica"]


def test_every_id_exactly_through_the_front(front, data):
    url = front[0]
    with KVClient(url) as kv:
        assert kv.get_many(data) == data
        for key in list(data)[::20]:
            assert kv[key] == data[key]


def test_the_same_id_goes_to_the_same_replica(front, data):
    url = front[0]
    keys = list(data)[:60]
    first = {key: replica_of(url, key) for key in keys}
    assert all(replica_of(url, key) == first[key] for key in keys)
    assert len(set(first.values())) == REPLICAS  # the ids are spread over every replica


def test_status_names_the_front_and_every_replica_and_its_version(front, data_file):
    url, port, state, env = front
    front, *lines = cluster("status", "--port", str(port), env=env).stdout.splitlines()
    version = requests.get(f"{url}/readyz", timeout=5).json()["version"]
    assert front == f"{port} {(state / 'nginx.pid').read_text().strip()} front"
    assert [line.split()[0] for line in lines] == [str(port + i) for i in range(1, REPLICAS + 1)]
    assert all(line.split()[2] == version for line in lines)


def test_a_killed_replica_loses_no_request_and_gets_its_ids_back(front, data, data_file):
    url, port, state, _ = front
    keys = list(data)
    owner = {key: replica_of(url, key) for key in keys[:60]}
    victim_port = port + 1
    victim = f"127.0.0.1:{victim_port}"
    its_ids = [k for k, r in owner.items() if r == victim]
    assert its_ids
    clients = streams(url, keys, retries=1)  # see test_two_shards_...
    master = int((state / f"replica-{victim_port}.pid").read_text())
    for pid in [master, *bench.children(master)]:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: sum(1 for c in clients for r in list(c.results) if r[0] > killed_at) > 300)
    results = finish(clients)
    failed = [r for r in results if r[2] != 200 or r[3] != data[r[1]]]
    assert failed == [], failed[:5]
    # The replica comes back on its port: after fail_timeout its ids go back to it.
    # The pid file a killed master leaves behind (gunicorn refuses a live-looking one, and
    # an unreaped zombie looks alive).
    (state / f"replica-{victim_port}.pid").unlink()
    with open(state / f"replica-{victim_port}.log", "a") as log:
        back = subprocess.Popen(
            [KV_APP, "serve", str(data_file), "--port", str(victim_port),
             "--pid-file", str(state / f"replica-{victim_port}.pid")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: _answers(f"http://{victim}"))
        wait_for(lambda: replica_of(url, its_ids[0]) == victim, timeout=15)
        assert all(replica_of(url, key) == victim for key in its_ids)
    finally:
        back.send_signal(signal.SIGTERM)
        back.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/readyz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_a_batch_is_retried_on_another_replica(front, data, tmp_path):
    """POST /items/batch only reads: nginx retries it elsewhere (non_idempotent)."""
    url = front[0]
    keys = list(data)[:100]
    with KVClient(url) as kv:
        for _ in range(20):
            assert kv.get_many(keys) == {k: data[k] for k in keys}


def test_batches_are_spread_over_the_replicas(front, data):
    """Before: batches were hashed by their URI, the same for all: one replica took every
    batch. (20 batches on one of 3 replicas by chance: 3 in a billion.)"""
    url = front[0]
    body = {"ids": list(data)[:10]}
    with requests.Session() as session:
        answered = {
            session.post(f"{url}/items/batch", json=body, timeout=30).headers["X-KV-Replica"]
            for _ in range(20)
        }
    assert len(answered) > 1, answered


@contextmanager
def stopped_process(pid: int):
    """One process SIGSTOPped, always continued afterwards."""
    try:
        os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextmanager
def stopped(pid: int):
    """A gunicorn master and its workers SIGSTOPped (hung: connections still queue in
    their listen backlog, nothing answers), always continued afterwards."""
    pids = [pid, *bench.children(pid)]
    try:
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        yield
    finally:
        for p in pids:
            os.kill(p, signal.SIGCONT)


def test_a_hung_replica_is_retried_on_another(front, data):
    """Issue 14, item 11: a SIGSTOPped replica held each request hashed to it for
    proxy_read_timeout (10 s), then 504, never retried (proxy_next_upstream_timeout, 5 s,
    had run out). Now every such request, GETs and batches sent at once before nginx
    leaves the replica out, is answered 200 by another replica."""
    url, port, state, _ = front
    keys = list(data)
    batch = keys[:50]
    # The victim: any replica (batches are spread by their request id: some meet it).
    victim = requests.post(f"{url}/items/batch", json={"ids": batch}, timeout=5).headers[
        "X-KV-Replica"
    ]
    its_ids = [k for k in keys[:120] if replica_of(url, k) == victim][:6]
    assert len(its_ids) == 6
    master = int((state / f"replica-{victim.rsplit(':', 1)[1]}.pid").read_text())

    def get(key):
        r = requests.get(f"{url}/items/{key}", timeout=60)
        value = r.json()["value"] if r.status_code == 200 else r.text[:40]
        return r.status_code, value, r.headers.get("X-KV-Replica", "")

    def post(_):
        r = requests.post(f"{url}/items/batch", json={"ids": batch}, timeout=60)
        items = r.json()["items"] if r.status_code == 200 else r.text[:40]
        return r.status_code, items, r.headers.get("X-KV-Replica", "")

    with stopped(master), ThreadPoolExecutor(8) as pool:  # all sent at once
        sent = [pool.submit(get, k) for k in its_ids] + [pool.submit(post, n) for n in range(6)]
        gets, posts = [f.result() for f in sent[:6]], [f.result() for f in sent[6:]]
    assert [g[:2] for g in gets] == [(200, data[k]) for k in its_ids]
    assert [p[:2] for p in posts] == [(200, {k: data[k] for k in batch})] * 6
    # Each GET was tried on the hung replica first, then answered by another; no batch was
    # answered by it.
    answered = [r[2].split(", ") for r in gets]
    assert all(len(a) >= 2 and a[0] == victim and a[-1] != victim for a in answered), answered
    assert all(p[2].split(", ")[-1] != victim for p in posts)
    # Continued, it gets its ids back (after fail_timeout), for the tests that follow.
    wait_for(lambda: replica_of(url, its_ids[0]) == victim, timeout=15)


def _tagged(path, tag: str):
    path.write_text("".join(f"{k} {tag}:{v}\n" for k, v in make_data.pairs(300, seed=11)))
    return path


@pytest.fixture
def small_cluster(tmp_path):
    """2 replicas of a 300-pair text file tagged old, and a way to run cluster.sh on it."""
    port = free_ports(5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    env.update(KV_CLUSTER_DIR=str(tmp_path / "state"), KV_APP=KV_APP)

    def run(*args, check=True, **more_env):
        return cluster(*args, "--port", str(port), env={**env, **more_env}, check=check)

    data = _tagged(tmp_path / "current.data", "old")
    try:
        run("up", str(data), "--replicas", "2")
        yield f"http://127.0.0.1:{port}", run, data, port, tmp_path / "state"
    finally:
        cluster("down", "--port", str(port), env=env, check=False)


def _in_order(per_client) -> None:
    for stream in per_client:
        seen = [r[3].split(":", 1)[0] for r in stream]
        assert seen == sorted(seen, key=("old", "new").index) and seen[-1] == "new", seen


def test_all_at_once_switch_loses_nothing_and_never_goes_back(small_cluster, tmp_path):
    """Blue/green: a second set serves the new data; nginx moves to it in one graceful
    reload. Every client sees old, then new, never old again.

    The reload closes idle keep-alive connections; a client that reuses one at that
    instant gets a reset before any answer, and retries the GET once (as urllib3 does
    when asked, and KVClient will): that is the only retry, and no request fails."""
    url, run, *_ = small_cluster
    keys = [k for k, _ in make_data.pairs(300, seed=11)]
    clients = streams(url, keys, retries=1)
    out = run("switch", str(_tagged(tmp_path / "next.data", "new"))).stdout
    wait_for(lambda: all(str(c.results[-1][3]).startswith("new:") for c in clients))
    per_client = [list(c.results) for c in clients]
    results = finish(clients)
    assert [r for r in results if r[2] != 200] == []
    _in_order(per_client)
    new_version = requests.get(f"{url}/readyz", timeout=5).json()["version"]
    front, *replicas = out.splitlines()
    assert front.endswith(" front")
    assert len(replicas) == 2 and all(line.endswith(new_version) for line in replicas)


def test_rolling_reload_brings_every_replica_to_the_new_version(small_cluster, tmp_path):
    """Rolling: each replica reloads in turn (each one swaps with no failed request);
    `cluster.sh reload` returns once every replica reports the new version."""
    url, run, data, *_ = small_cluster
    keys = [k for k, _ in make_data.pairs(300, seed=11)]
    clients = streams(url, keys)
    os.replace(_tagged(tmp_path / "next.data", "new"), data)
    lines = run("reload").stdout.splitlines()[1:]  # the front, then the replicas
    results = finish(clients)
    assert [r for r in results if r[2] != 200] == []
    version = lines[0].split()[2]
    assert len(lines) == 2 and all(line.split()[2] == version for line in lines)
    assert requests.get(f"{url}/items/{keys[0]}", timeout=5).json()["value"].startswith("new:")


def test_two_shards_two_replicas_exact_and_nothing_lost(tmp_path, data_file, data):
    """A split snapshot: ids routed by their first hex digit; batches spanning both shards
    answered whole by KVClient (fanned out by the servers' shard map); one replica of each
    shard killed under load loses nothing."""
    build(data_file, tmp_path / "split", shards=2)
    port = free_ports(5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    state = tmp_path / "state"
    env.update(KV_CLUSTER_DIR=str(state), KV_APP=KV_APP)
    cluster("up", str(tmp_path / "split"), "--replicas", "2", "--port", str(port), env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        with KVClient(url) as kv:
            assert kv.get_many(data) == data  # spans both shards
            for key in list(data)[::25]:
                assert kv[key] == data[key]
        keys = list(data)
        # A replica killed between writing an answer's head and its body leaves nginx
        # with a head already sent: it cannot retry, the client gets a cut body and sends
        # its GET again (once), as HTTP clients do for idempotent requests.
        clients = streams(url, keys, retries=1)
        for p in (port + 1, port + 3):  # one replica of each shard
            master = int((state / f"replica-{p}.pid").read_text())
            for pid in [master, *bench.children(master)]:
                os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: sum(1 for c in clients for r in list(c.results) if r[0] > killed_at) > 300)
        with KVClient(url) as kv:
            assert kv.get_many(data) == data
        results = finish(clients)
        assert [r for r in results if r[2] != 200 or r[3] != data[r[1]]] == []
    finally:
        cluster("down", "--port", str(port), env=env, check=False)


def _refused(port: int) -> bool:
    """Is nothing listening on 127.0.0.1:port?"""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except OSError:
        return False


def test_after_the_front_master_dies_status_switch_down_and_up_cope(small_cluster, tmp_path):
    """Issue 14, item 12: with nginx's master killed (its worker lives on, holding the
    port), `switch` failed half-way leaving both sets running, `down` left the orphan
    worker answering 502, `up` refused. Now `status` shows the front, `switch` checks it
    first and changes nothing, `down` frees the port, `up` starts afresh."""
    url, run, data, port, state = small_cluster
    keys = [k for k, _ in make_data.pairs(300, seed=11)]
    master = int((state / "nginx.pid").read_text())
    workers = bench.children(master)
    assert workers
    old_set = sorted(state.glob("replica-*.pid"))
    os.kill(master, signal.SIGKILL)
    wait_for(lambda: not _alive(master))
    front = run("status").stdout.splitlines()[0]
    assert front.startswith(f"{port} - front down") and str(workers[0]) in front, front
    switch = run("switch", str(_tagged(tmp_path / "next.data", "new")), check=False)
    assert switch.returncode == 1 and "the front" in switch.stderr and "down" in switch.stderr
    assert sorted(state.glob("replica-*.pid")) == old_set  # the old set, only
    assert all(_refused(p) for p in range(port + 3, port + 5))  # no new set started
    run("down")
    assert _refused(port) and not any(_alive(w) for w in workers)
    assert all(_refused(p) for p in range(port + 1, port + 5))
    up = run("up", str(data), "--replicas", "2")
    assert f"front http://127.0.0.1:{port}" in up.stdout
    assert requests.get(f"{url}/items/{keys[0]}", timeout=5).json()["value"].startswith("old:")


def test_a_switch_the_front_does_not_take_is_rolled_back(small_cluster, tmp_path):
    """A front that does not move to the new set (its master hung here: SIGSTOPped, the
    reload signal waits) used to be taken as switched: the old set was stopped under it.
    Now `switch` checks that the front answers from the new set, and otherwise puts the
    old configuration back, stops the new set and fails; the old set keeps serving."""
    url, run, data, port, state = small_cluster
    keys = [k for k, _ in make_data.pairs(300, seed=11)]
    master = int((state / "nginx.pid").read_text())
    old_set = sorted(state.glob("replica-*.pid"))
    with stopped_process(master):
        switch = run(
            "switch",
            str(_tagged(tmp_path / "next.data", "new")),
            check=False,
            KV_CLUSTER_RELOAD_WAIT="3",  # how long it waits for the front (10 s by default)
        )
    assert switch.returncode == 1 and "rolled back" in switch.stderr, switch.stderr
    assert sorted(state.glob("replica-*.pid")) == old_set
    assert all(_refused(p) for p in range(port + 3, port + 5))  # the new set is stopped
    values = [requests.get(f"{url}/items/{k}", timeout=5) for k in keys[:20]]
    assert [v.status_code for v in values] == [200] * 20
    assert all(v.json()["value"].startswith("old:") for v in values)
    assert run("status").stdout.splitlines()[0] == f"{port} {master} front"
